//! Tests of [`super`]: every message round-trips, garbage never panics.

use super::*;
use std::io::Cursor;

/// A small deterministic PRNG (xorshift64*), so fuzz-style loops are
/// reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn panicked() -> RemoteError {
    RemoteError::Panicked {
        message: "boom".into(),
        backtrace: Some("0: main".into()),
    }
}

fn to_worker_samples() -> Vec<ToWorker> {
    vec![
        ToWorker::Welcome {
            build: BuildId::current(),
            max_frame_bytes: 64 << 20,
            initializer: Some(0xFFFF_FFFF_FFFF_FF00),
        },
        ToWorker::Welcome {
            build: BuildId::current(),
            max_frame_bytes: 0,
            initializer: None,
        },
        ToWorker::Run {
            task_id: 0,
            entry: 12345,
            arg: vec![],
        },
        ToWorker::Run {
            task_id: u64::MAX,
            entry: u64::MAX,
            arg: (0..=255).collect(),
        },
        ToWorker::RunChunk {
            task_id: 7,
            entry: 8,
            args: vec![vec![], vec![1], vec![2; 300]],
        },
        ToWorker::RunChunk {
            task_id: 7,
            entry: 8,
            args: vec![],
        },
        ToWorker::Shutdown,
    ]
}

fn from_worker_samples() -> Vec<FromWorker> {
    vec![
        FromWorker::Ready {
            pid: 4242,
            build: BuildId::current(),
        },
        FromWorker::Initialized { outcome: Ok(()) },
        FromWorker::Initialized {
            outcome: Err(panicked()),
        },
        FromWorker::Started { task_id: 3 },
        FromWorker::Done {
            task_id: 3,
            outcome: Ok(vec![9; 1000]),
        },
        FromWorker::Done {
            task_id: 4,
            outcome: Err(RemoteError::Decode {
                type_name: "u64".into(),
                message: "unexpected end".into(),
            }),
        },
        FromWorker::ChunkDone {
            task_id: 5,
            outcomes: vec![
                Ok(vec![]),
                Err(RemoteError::Encode {
                    type_name: "my::T".into(),
                    message: "nope".into(),
                }),
                Ok(vec![1, 2, 3]),
                Err(panicked()),
            ],
        },
    ]
}

#[test]
fn every_message_round_trips_through_codec_and_frames() {
    let mut stream = Vec::new();
    for m in to_worker_samples() {
        assert_eq!(
            codec::decode::<ToWorker>(&codec::encode(&m).unwrap()).unwrap(),
            m
        );
        write_message(&mut stream, &m, 1 << 20).unwrap();
    }
    let mut r = Cursor::new(stream);
    for m in to_worker_samples() {
        assert_eq!(
            read_message::<_, ToWorker>(&mut r, 1 << 20).unwrap(),
            Some(m)
        );
    }
    assert_eq!(read_message::<_, ToWorker>(&mut r, 1 << 20).unwrap(), None);

    let mut stream = Vec::new();
    for m in from_worker_samples() {
        assert_eq!(
            codec::decode::<FromWorker>(&codec::encode(&m).unwrap()).unwrap(),
            m
        );
        write_message(&mut stream, &m, 1 << 20).unwrap();
    }
    let mut r = Cursor::new(stream);
    for m in from_worker_samples() {
        assert_eq!(
            read_message::<_, FromWorker>(&mut r, 1 << 20).unwrap(),
            Some(m)
        );
    }
    assert_eq!(
        read_message::<_, FromWorker>(&mut r, 1 << 20).unwrap(),
        None
    );
}

#[test]
fn payload_bytes_are_written_as_one_byte_string() {
    // Variant tag, task_id and entry (one varint byte each), the length
    // (a two-byte varint for 1000), then the raw bytes in one piece.
    let arg = vec![0xFFu8; 1000];
    let m = ToWorker::Run {
        task_id: 1,
        entry: 2,
        arg: arg.clone(),
    };
    let bytes = codec::encode(&m).unwrap();
    assert_eq!(bytes.len(), 1 + 1 + 1 + 2 + 1000);
    assert!(bytes.ends_with(&arg));
}

#[test]
fn oversized_message_is_not_sent() {
    let m = ToWorker::Run {
        task_id: 1,
        entry: 2,
        arg: vec![0; 100],
    };
    let mut out = Vec::new();
    let err = write_message(&mut out, &m, 50).unwrap_err();
    assert!(matches!(err, Error::Protocol(ref s) if s.contains("exceeds max_frame_bytes")));
    assert!(out.is_empty(), "nothing written");
}

#[test]
fn garbage_frames_give_protocol_errors() {
    // A frame holding an unknown enum tag.
    let mut stream = Vec::new();
    write_frame(&mut stream, &[0x7F, 1, 2]).unwrap();
    let err = read_message::<_, FromWorker>(&mut Cursor::new(stream), 64).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ref s) if s.contains("undecodable")),
        "{err}"
    );
    // An oversized length prefix.
    let err = read_message::<_, FromWorker>(&mut Cursor::new([0xFF; 8]), 64).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ref s) if s.contains("exceeds the limit")),
        "{err}"
    );
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut err) = (0u32, 0u32);
    for _ in 0..20_000 {
        let bytes = rng.bytes(64);
        match codec::decode::<FromWorker>(&bytes) {
            Ok(_) => ok += 1,
            Err(Error::Decode { type_name, .. }) => {
                assert!(type_name.ends_with("FromWorker"));
                err += 1;
            }
            Err(other) => panic!("unexpected error kind {other:?}"),
        }
        let _ = codec::decode::<ToWorker>(&bytes);
    }
    assert!(err > 0 && ok + err == 20_000);
}

#[test]
fn mutated_valid_messages_never_panic_the_decoder() {
    let mut rng = Rng(42);
    let samples: Vec<Vec<u8>> = from_worker_samples()
        .iter()
        .map(|m| codec::encode(m).unwrap())
        .collect();
    for i in 0..20_000 {
        let mut bytes = samples[i % samples.len()].clone();
        match rng.next() % 3 {
            0 if !bytes.is_empty() => {
                let at = (rng.next() as usize) % bytes.len();
                bytes[at] ^= 1 << (rng.next() % 8);
            }
            1 => bytes.truncate((rng.next() as usize) % (bytes.len() + 1)),
            _ => bytes.extend(rng.bytes(4)),
        }
        // Any outcome but a panic is fine; errors must be typed.
        if let Err(e) = codec::decode::<FromWorker>(&bytes) {
            assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        }
    }
}

#[test]
fn huge_announced_lengths_inside_a_message_do_not_allocate() {
    // Done { task_id: 0, outcome: Ok(bytes of length 2^63) }: postcard
    // must refuse the length against the input, not preallocate it.
    let mut bytes = vec![4, 0, 0];
    bytes.extend([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert!(matches!(
        codec::decode::<FromWorker>(&bytes),
        Err(Error::Decode { .. })
    ));
    // The same for a chunk of 2^63 outcomes.
    let mut bytes = vec![5, 0];
    bytes.extend([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert!(matches!(
        codec::decode::<FromWorker>(&bytes),
        Err(Error::Decode { .. })
    ));
}

#[test]
fn remote_errors_become_crate_errors() {
    let types = TaskTypes::of::<u64, String>();
    assert_eq!(
        panicked().into_error(types),
        Error::Panicked {
            message: "boom".into(),
            backtrace: Some("0: main".into())
        }
    );
    let decode = RemoteError::Decode {
        type_name: "u64".into(),
        message: "eof".into(),
    };
    assert_eq!(
        decode.into_error(types),
        Error::Decode {
            type_name: "u64",
            message: "eof".into()
        }
    );
    let encode = RemoteError::Encode {
        type_name: "something::Else".into(),
        message: "bad".into(),
    };
    match encode.into_error(types) {
        Error::Encode { type_name, message } => {
            assert_eq!(type_name, "alloc::string::String");
            assert!(message.contains("something::Else"), "{message}");
        }
        other => panic!("expected Encode, got {other:?}"),
    }
}

#[test]
fn codec_errors_become_remote_errors() {
    let e = codec::decode::<u32>(&[]).unwrap_err();
    assert!(matches!(
        RemoteError::from(e),
        RemoteError::Decode { ref type_name, .. } if type_name == "u32"
    ));
}
