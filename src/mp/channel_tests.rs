//! Unit tests of the channel framing: chunk reassembly, timeouts, broken
//! pipes and the serialization rules for channel ends.

use super::*;

#[test]
fn values_larger_than_a_chunk_round_trip() {
    let (tx, rx) = pipe::<Vec<u8>>().unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let t = std::thread::spawn(move || {
        tx.send(big).unwrap();
        tx.send(Vec::new()).unwrap();
    });
    let got = rx.recv(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(got.len(), 20_000);
    assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert_eq!(
        rx.recv(Some(Duration::from_secs(30))).unwrap(),
        Vec::<u8>::new()
    );
    t.join().unwrap();
    assert!(matches!(rx.recv(None), Err(Error::EndOfStream)));
}

#[test]
fn interleaved_chunks_of_two_senders_reassemble() {
    let (tx, rx) = pipe::<Vec<u8>>().unwrap();
    // Two senders of this process, each with its own writer number,
    // on two threads: their chunks interleave on the pipe.
    let (a, b) = (
        tx.clone(),
        Sender::<Vec<u8>>::from_fd(tx.inner.pipe.as_fd().try_clone_to_owned().unwrap()),
    );
    drop(tx);
    let ta = std::thread::spawn(move || {
        for _ in 0..20 {
            a.send(vec![1; 10_000]).unwrap();
        }
    });
    let tb = std::thread::spawn(move || {
        for _ in 0..20 {
            b.send(vec![2; 10_000]).unwrap();
        }
    });
    let mut counts = [0; 3];
    loop {
        match rx.recv(Some(Duration::from_secs(30))) {
            Ok(v) => {
                assert_eq!(v.len(), 10_000);
                assert!(v.iter().all(|&x| x == v[0]));
                counts[v[0] as usize] += 1;
            }
            Err(Error::EndOfStream) => break,
            Err(e) => panic!("{e}"),
        }
    }
    ta.join().unwrap();
    tb.join().unwrap();
    assert_eq!(counts, [0, 20, 20]);
}

#[test]
fn timeout_then_value() {
    let (tx, rx) = pipe::<u8>().unwrap();
    assert!(matches!(
        rx.recv(Some(Duration::from_millis(10))),
        Err(Error::Timeout { .. })
    ));
    tx.send(7).unwrap();
    assert_eq!(rx.recv(Some(Duration::from_secs(30))).unwrap(), 7);
}

#[test]
fn send_after_the_receiver_is_gone_is_broken_pipe() {
    let (tx, rx) = pipe::<u8>().unwrap();
    drop(rx);
    assert!(matches!(tx.send(1), Err(Error::Io(m)) if m.contains("broken pipe")));
}

#[test]
fn an_end_outside_a_process_argument_does_not_serialize() {
    let (tx, _rx) = pipe::<u8>().unwrap();
    assert!(matches!(codec::encode(&tx), Err(Error::Encode { .. })));
    let (encoded, fds) = encode_passing(&(1u8, tx.clone(), tx));
    assert!(encoded.is_ok());
    assert_eq!(fds.len(), 2);
}

/// A value larger than a receiver takes is refused before anything is
/// written: sent, it cost the receiver an error for every chunk past the
/// limit (found by review). The bytes are never touched, so the test
/// allocates only address space.
#[test]
fn a_value_larger_than_a_receiver_takes_is_refused_and_nothing_is_sent() {
    let (tx, rx) = pipe::<u8>().unwrap();
    let huge = vec![0u8; MAX_VALUE_BYTES + 1];
    let refused = tx.inner.send_encoded(&huge);
    assert!(
        matches!(&refused, Err(Error::Encode { message, .. }) if message.contains("more than a receiver takes")),
        "{refused:?}"
    );
    drop(huge);
    tx.send(7).unwrap();
    assert_eq!(
        rx.recv(Some(Duration::from_secs(30))),
        Ok(7),
        "the pipe holds only the later value"
    );
}
