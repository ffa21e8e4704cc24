//! `Process`, `pipe` and `Queue` (issue 6, parts 2 and 3), each against the
//! CPython `multiprocessing` behaviour it mirrors. The children run this
//! test binary again through the hidden test of
//! `process_pool_test_worker!()`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, Process, Queue, Receiver, Sender, pipe};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{KillOnDrop, is_alive};

/// Longest any single wait may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

fn joined<R>(p: &Process<R>) {
    assert!(p.join(Some(HANG)), "hang guard: {p:?} still running");
}

fn double(x: u64) -> u64 {
    x * 2
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn exit_with(code: i32) {
    std::process::exit(code);
}

fn sleep_s(s: u64) {
    std::thread::sleep(Duration::from_secs(s));
}

fn panics(message: String) -> u8 {
    panic!("{message}");
}

#[test]
fn start_join_and_the_return_value() {
    let mut p = Process::new(double, 21).test_harness();
    assert_eq!(p.pid(), None);
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.result(), None);
    p.start().unwrap();
    joined(&p);
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(p.result(), Some(Ok(42)));
    // Decoded afresh: asking twice gives the same.
    assert_eq!(p.result(), Some(Ok(42)));
}

#[test]
fn pid_name_and_is_alive() {
    let mut p = Process::new(getpid, ()).test_harness();
    assert!(p.name().starts_with("Process-"), "{}", p.name());
    let mut named = Process::new(sleep_s, 30).named("sleeper").test_harness();
    assert_eq!(named.name(), "sleeper");
    named.start().unwrap();
    assert!(named.is_alive());
    assert!(named.pid().is_some_and(is_alive));
    named.kill();
    joined(&named);
    assert!(!named.is_alive());

    p.start().unwrap();
    joined(&p);
    assert_eq!(p.result(), Some(Ok(p.pid().unwrap())));
    assert_ne!(p.pid(), Some(std::process::id()));
}

#[test]
fn exitcode_of_exit_7_is_7() {
    let mut p = Process::new(exit_with, 7).test_harness();
    p.start().unwrap();
    joined(&p);
    assert_eq!(p.exitcode(), Some(7));
    // No return value was delivered.
    match p.result() {
        Some(Err(Error::WorkerDied { code: Some(7), .. })) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn exitcode_of_sigkill_is_minus_9_and_of_terminate_minus_15() {
    let mut k = Process::new(sleep_s, 30).test_harness();
    let mut t = Process::new(sleep_s, 30).test_harness();
    k.start().unwrap();
    t.start().unwrap();
    k.kill();
    t.terminate();
    joined(&k);
    joined(&t);
    assert_eq!(k.exitcode(), Some(-9));
    assert_eq!(t.exitcode(), Some(-15));
    match k.result() {
        Some(Err(Error::WorkerDied {
            signal: Some(9), ..
        })) => {}
        other => panic!("{other:?}"),
    }
    // Signalling an exited process does nothing.
    k.kill();
    t.terminate();
    assert_eq!(k.exitcode(), Some(-9));
}

#[test]
fn a_panic_gives_exitcode_1_and_the_message() {
    let mut p = Process::new(panics, "boom".to_string()).test_harness();
    p.start().unwrap();
    joined(&p);
    assert_eq!(p.exitcode(), Some(1));
    match p.result() {
        Some(Err(Error::Panicked { message, .. })) => assert_eq!(message, "boom"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn join_with_a_timeout_returns_false_while_running() {
    let mut p = Process::new(sleep_s, 30).test_harness();
    assert!(!p.join(Some(Duration::ZERO)), "not started");
    p.start().unwrap();
    assert!(!p.join(Some(Duration::from_millis(50))));
    assert!(p.is_alive());
    p.terminate();
    joined(&p);
}

#[test]
fn starting_twice_is_an_error() {
    let mut p = Process::new(double, 1).test_harness();
    p.start().unwrap();
    assert!(matches!(p.start(), Err(Error::InvalidCall(_))));
    joined(&p);
    assert_eq!(p.result(), Some(Ok(2)));
}

#[test]
fn a_daemon_is_killed_when_its_handle_is_dropped() {
    let mut p = Process::new(sleep_s, 60).daemon(true).test_harness();
    assert!(p.is_daemon());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert!(is_alive(pid));
    let t0 = Instant::now();
    drop(p);
    // Dropping killed and reaped it: no such process (or a new one with a
    // reused pid, which would not be our sleeping child; not checked).
    assert!(!is_alive(pid));
    assert!(t0.elapsed() < HANG);
}

#[test]
fn a_non_daemon_is_joined_on_drop() {
    let (tx, rx) = pipe::<u32>().unwrap();
    let mut p = Process::new(send_pid_after_a_while, tx).test_harness();
    p.start().unwrap();
    drop(p); // blocks until the child exits
    // The child finished its work (sent its pid) before the drop returned.
    let got = rx.recv(Some(Duration::ZERO)).unwrap();
    assert_ne!(got, std::process::id());
    assert!(matches!(rx.recv(Some(HANG)), Err(Error::EndOfStream)));
}

fn send_pid_after_a_while(tx: Sender<u32>) {
    std::thread::sleep(Duration::from_millis(200));
    tx.send(std::process::id()).unwrap();
}

// ------------------------------------------------------------ channels --

fn produce((q, producer, n): (Queue<(u32, u32)>, u32, u32)) {
    for i in 0..n {
        q.put((producer, i)).unwrap();
    }
    // A queue in a child is a producer only.
    assert!(matches!(
        q.get(Some(Duration::ZERO)),
        Err(Error::InvalidCall(_))
    ));
}

#[test]
fn a_queue_with_three_producer_processes_delivers_every_item_once() {
    const N: u32 = 2000;
    let q = Queue::<(u32, u32)>::new().unwrap();
    let mut producers: Vec<_> = (0..3)
        .map(|id| Process::new(produce, (q.producer(), id, N)).test_harness())
        .collect();
    // The parent produces too, before the children: `put` blocks while the
    // pipe is full, and here the parent is also the one that drains it.
    for i in 0..10 {
        q.put((99, i)).unwrap();
    }
    for p in &mut producers {
        p.start().unwrap();
    }
    let mut seen: HashMap<u32, Vec<u32>> = HashMap::new();
    for _ in 0..(3 * N + 10) {
        let (producer, i) = q.get(Some(HANG)).expect("an item within the hang guard");
        seen.entry(producer).or_default().push(i);
    }
    for p in &producers {
        joined(p);
        assert_eq!(p.exitcode(), Some(0));
    }
    assert!(matches!(
        q.get(Some(Duration::from_millis(50))),
        Err(Error::Timeout { .. })
    ));
    for id in 0..3 {
        // Every item exactly once, in each producer's order.
        assert_eq!(seen[&id], (0..N).collect::<Vec<_>>(), "producer {id}");
    }
    assert_eq!(seen[&99], (0..10).collect::<Vec<_>>());
}

fn send_big(tx: Sender<Vec<u64>>) {
    for k in 0..5u64 {
        tx.send((0..10_000).map(|i| i * k).collect()).unwrap();
    }
}

#[test]
fn values_larger_than_pipe_buf_from_several_processes_arrive_whole() {
    let (tx, rx) = pipe::<Vec<u64>>().unwrap();
    let mut ps: Vec<_> = (0..3)
        .map(|_| Process::new(send_big, tx.clone()).test_harness())
        .collect();
    drop(tx);
    for p in &mut ps {
        p.start().unwrap();
    }
    let mut n = 0;
    loop {
        match rx.recv(Some(HANG)) {
            Ok(v) => {
                assert_eq!(v.len(), 10_000);
                let k = v[1];
                assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * k));
                n += 1;
            }
            Err(Error::EndOfStream) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, 15);
}

fn write_then_drop((tx, id): (Sender<u32>, u32)) {
    tx.send(id).unwrap();
}

#[test]
fn dropping_the_sender_in_every_writer_gives_the_reader_end_of_stream() {
    let (tx, rx) = pipe::<u32>().unwrap();
    let mut ps: Vec<_> = (0..3)
        .map(|id| Process::new(write_then_drop, (tx.clone(), id)).test_harness())
        .collect();
    // The parent's own sender (and the clones the processes hold until they
    // start) must go too, as in Python.
    drop(tx);
    for p in &mut ps {
        p.start().unwrap();
    }
    let mut got: Vec<u32> = (0..3).map(|_| rx.recv(Some(HANG)).unwrap()).collect();
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    match rx.recv(Some(HANG)) {
        Err(Error::EndOfStream) => {}
        other => panic!("expected end of stream, got {other:?}"),
    }
    // It stays at end of stream.
    assert!(rx.recv(Some(Duration::ZERO)).is_err());
}

fn echo_doubled((rx, tx): (Receiver<String>, Sender<String>)) -> usize {
    let mut n = 0;
    while let Ok(s) = rx.recv(None) {
        tx.send(format!("{s}{s}")).unwrap();
        n += 1;
    }
    n
}

#[test]
fn send_and_recv_round_trip_between_parent_and_child() {
    let (to_child, child_rx) = pipe::<String>().unwrap();
    let (child_tx, from_child) = pipe::<String>().unwrap();
    let mut p = Process::new(echo_doubled, (child_rx, child_tx)).test_harness();
    p.start().unwrap();
    for word in ["a", "bc", "def"] {
        to_child.send(word.to_string()).unwrap();
        assert_eq!(
            from_child.recv(Some(HANG)).unwrap(),
            format!("{word}{word}")
        );
    }
    drop(to_child); // the child's recv sees end of stream and returns
    joined(&p);
    assert_eq!(p.result(), Some(Ok(3)));
    assert!(from_child.recv(Some(HANG)).is_err());
}

#[test]
fn a_channel_end_in_a_result_is_an_encode_error() {
    let mut p = Process::new(make_pipe_end, ()).test_harness();
    p.start().unwrap();
    joined(&p);
    assert_eq!(p.exitcode(), Some(1));
    assert!(matches!(p.result(), Some(Err(Error::Encode { .. }))));
}

fn make_pipe_end(_: ()) -> Sender<u8> {
    pipe::<u8>().unwrap().0
}

// ------------------------------------------------- dies with the parent --

/// Set in the helper process of the test below.
const HELPER_ENV: &str = "CF_MP_PROCESS_HELPER";

/// Helper: starts a daemon child and a non-daemon one that sleep, prints
/// their pids, and exits without dropping the handles.
#[test]
#[ignore = "helper process of a_daemon_dies_with_its_parent_process"]
fn helper_leaves_a_daemon_behind() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let mut d = Process::new(sleep_s, 60).daemon(true).test_harness();
    d.start().unwrap();
    let mut n = Process::new(sleep_s, 60).test_harness();
    n.start().unwrap();
    println!("pids {} {}", d.pid().unwrap(), n.pid().unwrap());
    std::mem::forget(d);
    std::mem::forget(n);
    // Exit without running destructors: nobody kills or joins them.
    std::process::exit(0);
}

/// Python: daemon children do not outlive the parent; non-daemon ones do
/// (when the parent is not there to join them).
#[test]
fn a_daemon_dies_with_its_parent_process() {
    use std::io::BufRead;
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_leaves_a_daemon_behind",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .env_remove(concurrent_futures::WORKER_ENV)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The children hold the helper's stdout: read the one line, not to EOF.
    let mut stdout = std::io::BufReader::new(helper.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("pids ") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no pids line");
    }
    let pids: Vec<u32> = line
        .split_once("pids ")
        .unwrap()
        .1
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (daemon, non_daemon) = (pids[0], pids[1]);
    assert!(helper.wait().unwrap().success());
    // The parent is gone. The non-daemon child (sleeping 60 s) is still
    // there; the daemon goes.
    let survived = is_alive(non_daemon);
    // SAFETY: kill() takes two integers; `non_daemon` was the helper's
    // child a moment ago and is not reaped while it runs.
    unsafe { libc::kill(non_daemon as libc::pid_t, libc::SIGKILL) };
    assert!(survived, "the non-daemon child died with its parent");
    let deadline = Instant::now() + HANG;
    while is_alive(daemon) {
        assert!(
            Instant::now() < deadline,
            "the daemon child outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The consumer's own `put` never blocks on the pipe it alone drains (a
/// feeder thread writes, as in Python): a megabyte put before any `get`
/// would otherwise fill the 64 KiB pipe and wait forever.
#[test]
fn queue_consumer_puts_more_than_the_pipe_holds_before_getting() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    for i in 0..1000u32 {
        q.put(vec![(i % 251) as u8; 1024]).unwrap();
    }
    for i in 0..1000u32 {
        let v = q.get(Some(HANG)).unwrap();
        assert_eq!(v, vec![(i % 251) as u8; 1024], "item {i} out of order");
    }
}

/// A timeout too large to add to the clock (`Duration::MAX`, a common "no
/// limit") waits without limit in `recv`, `Queue::get` and `join`, as
/// everywhere else in the crate; it used to panic (`Instant` overflow).
#[test]
fn max_durations_as_timeouts_mean_no_limit() {
    let (tx, rx) = pipe::<u32>().unwrap();
    tx.send(5).unwrap();
    assert_eq!(rx.recv(Some(Duration::MAX)), Ok(5));
    let q = Queue::<u32>::new().unwrap();
    q.put(6).unwrap();
    assert_eq!(q.get(Some(Duration::MAX)), Ok(6));
    let mut p = Process::new(double, 4).test_harness();
    p.start().unwrap();
    joined(&p); // with the hang guard first, so a bug fails instead of hanging
    assert!(p.join(Some(Duration::MAX)));
    assert_eq!(p.result(), Some(Ok(8)));
}

// -------------------------------------------------- fork without exec --

/// Child: forks a grandchild that sleeps 30 s (no exec, so it inherits
/// every descriptor the child has), sends its pid, and exits with 3 without
/// returning a result.
fn fork_a_sleeper_then_exit(tx: Sender<u32>) {
    // SAFETY: fork() in a process whose other threads the grandchild never
    // needs: the grandchild only sleeps and `_exit`s, both async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; `_exit` skips the destructors and atexit
        // handlers that belong to the parent.
        unsafe {
            libc::sleep(30);
            libc::_exit(0);
        }
    }
    tx.send(pid as u32).unwrap();
    std::process::exit(3);
}

/// A grandchild forked without exec inherits the child's result pipe; it
/// must not keep `join()` from seeing the child's exit (multiprocessing's
/// `join` waits on the pid, not on a pipe).
#[test]
fn a_grandchild_forked_without_exec_does_not_delay_join() {
    let (tx, rx) = pipe::<u32>().unwrap();
    let mut p = Process::new(fork_a_sleeper_then_exit, tx).test_harness();
    p.start().unwrap();
    let grandchild = rx.recv(Some(HANG)).unwrap();
    let _cleanup = KillOnDrop(vec![grandchild]);
    assert!(is_alive(grandchild));
    assert!(
        p.join(Some(Duration::from_secs(10))),
        "join waited for the grandchild"
    );
    assert_eq!(p.exitcode(), Some(3));
    assert!(matches!(p.result(), Some(Err(Error::WorkerDied { .. }))));
    assert!(
        is_alive(grandchild),
        "the grandchild is not the child's to end"
    );
}

// ------------------------------------------- channels shared by threads --

/// A `Queue::get` with a timeout gives up at its timeout even while
/// another thread of the consumer waits in `get(None)` (Python's
/// `get(timeout=t)` takes the reader lock within `t` too). It used to wait
/// for that thread's lock without limit, until a value arrived.
#[test]
fn a_timed_get_times_out_while_another_thread_waits_in_get_none() {
    let q = std::sync::Arc::new(Queue::<u32>::new().unwrap());
    let q2 = q.clone();
    let blocker = std::thread::spawn(move || q2.get(None));
    std::thread::sleep(Duration::from_millis(100)); // it takes the turn
    let (took_tx, took) = std::sync::mpsc::channel();
    let q3 = q.clone();
    let timed = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = q3.get(Some(Duration::from_millis(100)));
        let _ = took_tx.send(t0.elapsed());
        r
    });
    let waited = took.recv_timeout(Duration::from_secs(10));
    q.put(1).unwrap(); // releases the blocker (and a hung timed get)
    q.put(2).unwrap();
    assert_eq!(blocker.join().unwrap(), Ok(1));
    let waited = waited.expect("the timed get returned within 10 s");
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    assert!(matches!(timed.join().unwrap(), Err(Error::Timeout { .. })));
    assert_eq!(q.get(Some(HANG)), Ok(2));
}

fn put_marker(q: Queue<Vec<u8>>) {
    q.put(vec![7u8; 8]).unwrap();
}

/// The consumer's feeder thread blocked on a full pipe (more put than the
/// pipe holds) does not keep the consumer from passing a producer to a
/// child: `Process::new` only duplicates the descriptor. It used to take
/// the lock the blocked feeder held, and wait for a drain that only the
/// blocked caller could do.
#[test]
fn process_new_with_a_producer_does_not_wait_for_a_feeder_blocked_on_a_full_pipe() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    for _ in 0..64 {
        q.put(vec![1u8; 4000]).unwrap(); // 256 KB, four times the pipe
    }
    std::thread::sleep(Duration::from_millis(200)); // the feeder fills the pipe
    let producer = q.producer();
    let (made_tx, made) = std::sync::mpsc::channel();
    let maker = std::thread::spawn(move || {
        let p = Process::new(put_marker, producer).test_harness();
        let _ = made_tx.send(());
        p
    });
    let made = made.recv_timeout(Duration::from_secs(10));
    let mut drained = 0; // lets a hung `Process::new` return, so the test ends
    while drained < 64 {
        q.get(Some(HANG)).unwrap();
        drained += 1;
    }
    let mut p = maker.join().unwrap();
    assert!(made.is_ok(), "Process::new waited for the pipe to drain");
    p.start().unwrap();
    assert_eq!(q.get(Some(HANG)).unwrap(), vec![7u8; 8]);
    joined(&p);
}

/// A value whose `Serialize` panics.
#[derive(Debug, serde::Deserialize)]
struct PanicsOnSerialize;

impl serde::Serialize for PanicsOnSerialize {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("PanicsOnSerialize serialized")
    }
}

fn take_end_and_panicker(_: (Sender<u8>, PanicsOnSerialize)) {}

/// A `Process` argument whose `Serialize` panics is `start()`'s `Encode`
/// error, and leaves the thread as it was: a channel end serialized
/// outside a `Process` argument is still refused, and no duplicate of it
/// is kept. The thread used to stay in "passing ends" mode, accepting such
/// ends and keeping a descriptor for each.
#[test]
fn a_panicking_serialize_in_process_new_leaves_the_thread_refusing_stray_ends() {
    let (tx, _rx) = pipe::<u8>().unwrap();
    let (ends_tx, _ends_rx) = pipe::<Sender<u8>>().unwrap();
    let mut p = Process::new(take_end_and_panicker, (tx.clone(), PanicsOnSerialize)).test_harness();
    assert!(
        matches!(p.start(), Err(Error::Encode { ref message, .. }) if message.contains("PanicsOnSerialize serialized")),
        "the panic is the argument's Encode error"
    );
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = open_fds();
    for _ in 0..20 {
        assert!(matches!(
            ends_tx.send(tx.clone()),
            Err(Error::Encode { .. })
        ));
    }
    assert_eq!(open_fds(), before, "descriptors kept for refused ends");
}

/// Child: opens a file (the child closed its command pipe, so the file
/// gets descriptor 3, that pipe's old number) and runs `cat` on it through
/// a `fork()` (a `pre_exec` hook makes std fork); returns the descriptor
/// and what `cat` read.
fn cat_a_file_through_a_forked_child(path: String) -> (i32, String) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::open(&path).expect("open the file");
    let fd = file.as_raw_fd();
    let mut cmd = std::process::Command::new("cat");
    cmd.stdin(std::process::Stdio::from(file));
    // SAFETY: the hook does nothing; it only makes std use fork().
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    let out = cmd.output().expect("run cat");
    (fd, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The fork handler that hides the protocol pipes from forked children
/// touches only the pipes: a file of the function's that reuses a pipe's
/// old descriptor number reaches a forked child intact. (The handler's
/// first version pointed descriptors 3 and 4 at /dev/null whatever they
/// held.)
#[test]
fn a_file_on_a_closed_pipes_descriptor_number_reaches_a_forked_child_intact() {
    let dir = std::env::temp_dir().join(format!("cf-fd-reuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("input.txt");
    std::fs::write(&path, "hello from the file\n").unwrap();
    let mut p = Process::new(
        cat_a_file_through_a_forked_child,
        path.to_string_lossy().into_owned(),
    )
    .test_harness();
    p.start().unwrap();
    joined(&p);
    let _ = std::fs::remove_dir_all(&dir);
    let (fd, text) = p.result().expect("a result").expect("the function ran");
    assert_eq!(fd, 3, "the test no longer reuses the pipe's number");
    assert_eq!(
        text, "hello from the file\n",
        "cat read something else on fd {fd}"
    );
}

/// Bytes that serialize as one serde byte string: a length and a copy, so
/// that encoding a gigabyte takes a memcpy, not a loop per byte.
#[derive(Debug)]
struct Blob(Vec<u8>);

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

fn blob_len(b: Blob) -> usize {
    b.0.len()
}

/// An argument larger than a frame (1 GiB) is refused by `start()`, before
/// a child exists. It used to be dropped on the way, and the child exited
/// 0 without running the function. Found by review.
#[test]
fn an_argument_larger_than_a_frame_is_refused_by_start_before_any_child_starts() {
    let mut p = Process::new(blob_len, Blob(vec![0u8; (1 << 30) + 1])).test_harness();
    match p.start() {
        Err(Error::Encode { message, .. }) => {
            assert!(message.contains("max_frame_bytes"), "{message}")
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(p.pid(), None, "no child was started");
}

fn make_blob(len: usize) -> Blob {
    Blob(vec![0u8; len])
}

/// A result larger than a frame cannot be sent back: the child exits 1
/// (as Python's for an exception), and the result says why. It exited 0.
/// Found by review.
#[test]
fn a_result_larger_than_a_frame_is_exit_code_1_and_an_encode_error() {
    let mut p = Process::new(make_blob, (1usize << 30) + 1).test_harness();
    p.start().unwrap();
    joined(&p);
    assert_eq!(p.exitcode(), Some(1));
    let result = p.result();
    assert!(
        matches!(&result, Some(Err(Error::Encode { message, .. })) if message.contains("frame limit")),
        "{result:?}"
    );
}

/// Serializes and deserializes like a `u32`, except that 13 panics when
/// serialized and 7 when deserialized.
#[derive(Debug, PartialEq)]
struct Touchy(u32);

impl serde::Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(self.0 != 13, "13 panics when serialized");
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = <u32 as serde::Deserialize>::deserialize(d)?;
        assert!(n != 7, "7 panics when deserialized");
        Ok(Touchy(n))
    }
}

fn touchy_plus_one(t: Touchy) -> Touchy {
    Touchy(t.0 + 1)
}

/// An argument whose `Serialize` panics is `start()`'s `Encode` error, and
/// a result whose `Deserialize` panics in the parent is `result()`'s
/// `Decode` error, as on a process pool: neither panic reaches the caller.
/// Found by review.
#[test]
fn serialize_and_deserialize_panics_are_encode_and_decode_errors() {
    let mut p = Process::new(touchy_plus_one, Touchy(13)).test_harness();
    match p.start() {
        Err(Error::Encode { message, .. }) => assert!(message.contains("13 panics"), "{message}"),
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(p.pid(), None, "no child was started");

    let mut p = Process::new(touchy_plus_one, Touchy(6)).test_harness();
    p.start().unwrap();
    joined(&p);
    assert_eq!(p.exitcode(), Some(0));
    let result = p.result();
    assert!(
        matches!(&result, Some(Err(Error::Decode { message, .. })) if message.contains("7 panics")),
        "{result:?}"
    );
}

/// A result whose `Serialize` panics in the child is `result()`'s
/// `Encode` error (as `Error::Encode` documents), not the function's
/// panic, and the child exits with code 1. Found by review.
#[test]
fn a_result_whose_serialize_panics_is_an_encode_error() {
    let mut p = Process::new(touchy_plus_one, Touchy(12)).test_harness();
    p.start().unwrap();
    joined(&p);
    assert_eq!(p.exitcode(), Some(1));
    let result = p.result();
    assert!(
        matches!(&result, Some(Err(Error::Encode { message, .. })) if message.contains("13 panics")),
        "{result:?}"
    );
}

/// Marker of the helper below (it does nothing without it).
const TLS_PROCESS_HELPER_ENV: &str = "CF_TEST_TLS_PROCESS_HELPER";

/// Helper for the test below, run in a child process because the bug it
/// guards against aborts the process: a thread that has started a
/// `Process` starts another from a thread-local destructor that runs after
/// the crate's own thread-locals are gone.
#[test]
#[ignore = "helper, run by a_process_started_in_a_thread_local_destructor_runs"]
fn helper_start_a_process_in_a_thread_local_destructor() {
    use std::cell::RefCell;

    if std::env::var_os(TLS_PROCESS_HELPER_ENV).is_none() {
        return;
    }
    struct StartOnDrop;
    impl Drop for StartOnDrop {
        fn drop(&mut self) {
            let mut p = Process::new(double, 4).test_harness();
            p.start().unwrap();
            joined(&p);
            eprintln!("started in a destructor: {:?}", p.result());
        }
    }
    thread_local! {
        static HOLD: RefCell<Option<StartOnDrop>> = const { RefCell::new(None) };
    }
    std::thread::spawn(|| {
        // Registered first, so destroyed after the crate's thread-locals.
        HOLD.with(|h| *h.borrow_mut() = Some(StartOnDrop));
        let mut p = Process::new(double, 1).test_harness();
        p.start().unwrap();
        joined(&p);
    })
    .join()
    .unwrap();
    eprintln!("the helper ended normally");
}

/// `Process::new(..).start()` works in a user's thread-local destructor,
/// also on a thread that started one before (the crate's thread-local for
/// passing channel ends is gone by then; touching it with `with` would
/// abort the process).
#[test]
fn a_process_started_in_a_thread_local_destructor_runs() {
    let out = common::run_helper(
        common::helper_command(
            "helper_start_a_process_in_a_thread_local_destructor",
            TLS_PROCESS_HELPER_ENV,
        ),
        HANG,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("started in a destructor: Some(Ok(8))"),
        "{stderr}"
    );
    assert!(stderr.contains("the helper ended normally"), "{stderr}");
}

fn keep_sender(_: Sender<u8>) {}

/// A `start()` that fails before any child exists (here: no `init()` and
/// no `test_harness()`) closes its copies of the channel ends the argument
/// carried: the process can never start, and the receiving side sees the
/// end of the stream instead of waiting for as long as the handle lives
/// (found by review).
#[test]
fn a_failed_start_releases_the_channel_ends_it_carried() {
    let (tx, rx) = pipe::<u8>().unwrap();
    let mut p = Process::new(keep_sender, tx); // no test_harness(): refused
    let refused = p.start();
    assert!(
        matches!(refused, Err(Error::InvalidConfig(_))),
        "{refused:?}"
    );
    let got = rx.recv(Some(HANG));
    assert!(matches!(got, Err(Error::EndOfStream)), "{got:?}");
    drop(p);
}
