//! Unit tests of the stall count and the results pipe (`super`).

use super::*;

#[test]
fn a_stall_counts_tries_in_a_row_without_a_byte_read() {
    let stall = Stall::default().waiting(100).waiting(100).waiting(100);
    assert_eq!(stall.seen, 3);
}

#[test]
fn a_byte_read_between_tries_starts_the_stall_count_again() {
    // A large result crossing the pipe: each try finds the reader
    // waiting for more (the frozen worker's pipe drained), but bytes
    // came between the tries.
    let mut stall = Stall::default();
    for progress in (0..3 * MAX_STALLS as u64).map(|i| i * 65_536) {
        stall = stall.waiting(progress);
        assert_eq!(stall.seen, 1);
    }
    assert_eq!(stall.waiting(stall.progress).seen, 2);
}

#[test]
fn the_results_pipe_counts_bytes_and_marks_a_blocked_read() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let mark = Arc::new(ReaderMark::default());
    let mut pipe = ResultsPipe::new(File::from(std::os::fd::OwnedFd::from(reader)), mark.clone());
    let blocked = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let n = pipe.read(&mut buf).unwrap();
        (n, pipe)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mark.reading.load(SeqCst) {
        assert!(Instant::now() < deadline, "the read never started");
        std::thread::yield_now();
    }
    assert_eq!(mark.progress.load(SeqCst), 0);
    std::io::Write::write_all(&mut writer, b"hello").unwrap();
    let (n, _pipe) = blocked.join().unwrap();
    assert_eq!(n, 5);
    assert!(!mark.reading.load(SeqCst));
    assert_eq!(mark.progress.load(SeqCst), 5);
}
