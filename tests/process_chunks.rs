//! Chunked maps on a process pool: many items in one task, and still one
//! `Result` per item (decision 2, M10), wherever an item fails: its
//! argument does not encode or fit a frame (D1) or does not decode in the
//! worker, its call panics (with the
//! worker's backtrace, decision 8 / MP17), its result does not encode in
//! the worker (D10) or decode in the parent (D11). CPython's
//! `ProcessPoolExecutor` fails the whole chunk in each case.
//!
//! Every wait has a hang guard (the pools' maps collect within `guarded`);
//! no test asserts a duration.

use std::sync::Arc;

use concurrent_futures::{Error, ExecutorExt, MapOptions, Pool, ProcessPoolExecutor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::guarded;

fn byte_len(v: Vec<u8>) -> usize {
    v.len()
}

fn small_frames() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_frame_bytes(4096)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

fn chunks_of(n: usize) -> MapOptions {
    MapOptions::new().chunksize(n)
}

/// D1, M10 at the limit: an item that fits a frame alone (`submit` and the
/// unchunked map run it) runs in a chunked map too, when its chunk did
/// not fit and it is sent again alone. Sent as a one-item chunk, its few
/// bytes of chunk header pushed it over the limit (found by review); a
/// chunk of one now goes out as a plain task of its item.
#[test]
fn d1_m10_an_item_that_fits_a_frame_alone_runs_in_a_chunked_map() {
    let pool = small_frames();
    let (plain, submitted, chunked) = guarded("the maps", move || {
        let inputs = || [vec![0u8; 4028], vec![0u8; 5]];
        let plain: Vec<_> = pool.map(byte_len, inputs()).collect();
        let submitted = pool.submit(byte_len, vec![0u8; 4028]).into_result();
        let chunked: Vec<_> = pool.map_with(byte_len, inputs(), chunks_of(2)).collect();
        (plain, submitted, chunked)
    });
    assert_eq!(
        plain,
        vec![Ok(4028), Ok(5)],
        "control: the item fits a frame"
    );
    assert_eq!(submitted, Ok(4028), "control: the item fits a frame");
    assert_eq!(chunked, vec![Ok(4028), Ok(5)], "chunked");
}

#[test]
fn d1_m10_an_argument_larger_than_a_frame_fails_only_its_item_in_a_chunk() {
    let pool = small_frames();
    let got: Vec<Result<usize, Error>> = guarded("the map", move || {
        let inputs = [10, 20, 10_000, 30, 40, 50].map(|n| vec![0u8; n]);
        pool.map_with(byte_len, inputs, chunks_of(3)).collect()
    });
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(&got[..2], &[Ok(10), Ok(20)], "its neighbours in the chunk");
    match &got[2] {
        Err(Error::Encode { type_name, message }) => {
            assert_eq!(
                *type_name,
                std::any::type_name::<Vec<u8>>(),
                "the item's type"
            );
            assert!(message.contains("max_frame_bytes"), "{message}");
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(&got[3..], &[Ok(30), Ok(40), Ok(50)]);
}

#[test]
fn a_chunk_larger_than_a_frame_whose_items_each_fit_is_sent_item_by_item() {
    let pool = small_frames();
    let got: Vec<Result<usize, Error>> = guarded("the map", move || {
        let inputs = [3000, 3000, 3000, 5].map(|n| vec![0u8; n]);
        pool.map_with(byte_len, inputs, chunks_of(4)).collect()
    });
    assert_eq!(got, vec![Ok(3000), Ok(3000), Ok(3000), Ok(5)]);
}

/// Serializes like a `u32`, except 13, which it refuses, and 66, on which
/// it panics.
#[derive(Debug, PartialEq)]
struct NotThirteen(u32);

impl Serialize for NotThirteen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            13 => return Err(serde::ser::Error::custom("13 refuses")),
            66 => panic!("66 panics"),
            _ => {}
        }
        s.serialize_u32(self.0)
    }
}

/// Deserializes like a `u32`, except 7, which it rejects, and 99, on
/// which it panics.
impl<'de> Deserialize<'de> for NotThirteen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            7 => Err(serde::de::Error::custom("7 is rejected")),
            99 => panic!("99 panics"),
            n => Ok(NotThirteen(n)),
        }
    }
}

fn wrap(n: u32) -> NotThirteen {
    NotThirteen(n)
}

fn unwrap(n: NotThirteen) -> u32 {
    n.0
}

#[test]
fn d1_m10_an_argument_that_does_not_serialize_fails_only_its_item_and_names_its_type() {
    let pool = small_frames();
    let got: Vec<Result<u32, Error>> = guarded("the map", move || {
        pool.map_with(unwrap, (11..16).map(NotThirteen), chunks_of(5))
            .collect()
    });
    assert_eq!(&got[..2], &[Ok(11), Ok(12)]);
    assert!(
        matches!(&got[2], Err(Error::Encode { type_name, .. }) if type_name.ends_with("NotThirteen")),
        "{:?}",
        got[2]
    );
    assert_eq!(&got[3..], &[Ok(14), Ok(15)]);
}

/// Whether `r` is the `Encode` error of `NotThirteen(66)`, whose
/// `Serialize` panicked.
fn is_serialize_panic_of_66(r: &Result<u32, Error>) -> bool {
    matches!(r, Err(Error::Encode { type_name, message })
        if type_name.ends_with("NotThirteen") && message.contains("66 panics"))
}

/// D1: an argument whose `Serialize` panics (in the submitting thread)
/// fails only its own future, as one whose `Serialize` returns an error
/// does; the panic does not reach the caller of `submit`.
#[test]
fn d1_an_argument_whose_serialize_panics_fails_only_its_future() {
    let pool = small_frames();
    let (bad, good) = guarded("the tasks", move || {
        let bad = pool.submit(unwrap, NotThirteen(66)).into_result();
        (bad, pool.submit(unwrap, NotThirteen(67)).into_result())
    });
    assert!(is_serialize_panic_of_66(&bad), "{bad:?}");
    assert_eq!(good, Ok(67), "the pool goes on");
}

fn wrap_plus_one(n: u32) -> NotThirteen {
    NotThirteen(n + 1)
}

/// D9: a result whose `Serialize` panics in the worker fails its task with
/// `Encode` naming the type (as `Error::Encode` documents, and as an
/// argument's does), not as the task's panic; the worker goes on. Found
/// by review.
#[test]
fn d9_a_result_whose_serialize_panics_in_the_worker_is_an_encode_error() {
    let pool = small_frames();
    let (bad, good) = guarded("the tasks", move || {
        let bad = pool.submit(wrap_plus_one, 65).into_result().map(|n| n.0);
        (
            bad,
            pool.submit(wrap_plus_one, 66).into_result().map(|n| n.0),
        )
    });
    assert!(is_serialize_panic_of_66(&bad), "{bad:?}");
    assert_eq!(good, Ok(67), "the worker goes on");
}

/// D1, M10: the same in a map, unchunked and chunked: only the item at
/// fault fails, at its own position, and its chunk's other items run (the
/// chunk is sent item by item).
#[test]
fn d1_m10_an_argument_whose_serialize_panics_fails_only_its_item_in_a_map() {
    let pool = small_frames();
    let got = guarded("the maps", move || {
        [1, 5].map(|chunksize| {
            pool.map_with(unwrap, (64..69).map(NotThirteen), chunks_of(chunksize))
                .collect::<Vec<Result<u32, Error>>>()
        })
    });
    for (chunksize, got) in [1, 5].iter().zip(got) {
        assert_eq!(&got[..2], &[Ok(64), Ok(65)], "chunksize {chunksize}");
        assert!(
            is_serialize_panic_of_66(&got[2]),
            "chunksize {chunksize}: {:?}",
            got[2]
        );
        assert_eq!(&got[3..], &[Ok(67), Ok(68)], "chunksize {chunksize}");
    }
}

#[test]
fn d10_m10_a_result_that_does_not_serialize_fails_only_its_item_in_a_chunk() {
    let pool = small_frames();
    let got: Vec<Result<NotThirteen, Error>> = guarded("the map", move || {
        pool.map_with(wrap, 11..16, chunks_of(5)).collect()
    });
    assert_eq!(got[..2], [Ok(NotThirteen(11)), Ok(NotThirteen(12))]);
    assert!(
        matches!(&got[2], Err(Error::Encode { type_name, .. }) if type_name.ends_with("NotThirteen")),
        "{:?}",
        got[2]
    );
    assert_eq!(got[3..], [Ok(NotThirteen(14)), Ok(NotThirteen(15))]);
}

#[test]
fn d11_m10_a_result_that_does_not_decode_fails_only_its_item_in_a_chunk() {
    let pool = small_frames();
    let got: Vec<Result<NotThirteen, Error>> = guarded("the map", move || {
        pool.map_with(wrap, 6..9, chunks_of(3)).collect()
    });
    assert_eq!(got[0], Ok(NotThirteen(6)));
    assert!(
        matches!(&got[1], Err(Error::Decode { type_name, .. }) if type_name.ends_with("NotThirteen")),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2], Ok(NotThirteen(8)));
}

/// `unwrap` mapped over `NotThirteen(n)` for `n` in `ns`, as one chunk.
fn unwrapped_in_one_chunk(ns: std::ops::Range<u32>) -> Vec<Result<u32, Error>> {
    let pool = small_frames();
    let size = ns.len();
    guarded("the map", move || {
        pool.map_with(unwrap, ns.map(NotThirteen), chunks_of(size))
            .collect()
    })
}

fn is_decode_of_not_thirteen(r: &Result<u32, Error>) -> bool {
    matches!(r, Err(Error::Decode { type_name, .. }) if type_name.ends_with("NotThirteen"))
}

/// Its argument serializes in the parent, but the worker's `Deserialize`
/// rejects it: that item fails, naming the argument's type; the items
/// around it run (found as a known issue: the chunk's arguments were
/// decoded as one value, and the whole chunk failed).
#[test]
fn m10_an_argument_the_worker_does_not_decode_fails_only_its_item_in_a_chunk() {
    let got = unwrapped_in_one_chunk(6..9);
    assert_eq!(got[0], Ok(6));
    assert!(is_decode_of_not_thirteen(&got[1]), "{:?}", got[1]);
    assert_eq!(got[2], Ok(8));
}

/// D12 for arguments: a `Deserialize` that panics in the worker fails
/// only its item; the worker and the items around it go on.
#[test]
fn an_argument_whose_deserialize_panics_in_the_worker_fails_only_its_item() {
    let got = unwrapped_in_one_chunk(98..101);
    assert_eq!(got[0], Ok(98));
    assert!(
        matches!(&got[1], Err(Error::Decode { type_name, message }) if type_name.ends_with("NotThirteen") && message.contains("99 panics")),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2], Ok(100));
}

#[test]
fn pool_imap_unordered_fails_only_the_item_whose_argument_the_worker_does_not_decode() {
    let procs = Pool::from_executor(Arc::new(small_frames())).expect("a pool");
    let mut got: Vec<Result<u32, Error>> = guarded("the map", move || {
        procs
            .imap_unordered_with(unwrap, (6..9).map(NotThirteen), chunks_of(3))
            .expect("a running pool")
            .collect()
    });
    assert_eq!(got.len(), 3);
    let failed = got.iter().position(is_decode_of_not_thirteen);
    let failed = failed.unwrap_or_else(|| panic!("no decode error: {got:?}"));
    let _decode_error = got.remove(failed);
    assert_eq!(got, vec![Ok(6), Ok(8)]);
}

#[test]
fn pool_map_fails_with_the_argument_the_worker_does_not_decode_naming_its_type() {
    let procs = Pool::from_executor(Arc::new(small_frames())).expect("a pool");
    let got = guarded("the map", move || {
        procs.map_chunked(unwrap, (6..9).map(NotThirteen), Some(3))
    });
    let first_error = got.as_ref().map(|v| v.len() as u32).map_err(Clone::clone);
    assert!(is_decode_of_not_thirteen(&first_error), "{got:?}");
}

// Not inlined: the tests look for its name in the worker's backtrace,
// which an optimized build would otherwise fold into its caller's frame.
#[inline(never)]
fn odd_panics(n: u32) -> u32 {
    assert!(n.is_multiple_of(2), "odd {n}");
    n
}

fn backtraces_on() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_env("RUST_LIB_BACKTRACE", "1")
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

#[test]
fn decision8_an_item_panic_in_a_chunk_keeps_its_message_and_the_workers_backtrace() {
    let pool = backtraces_on();
    let got: Vec<Result<u32, Error>> = guarded("the map", move || {
        pool.map_with(odd_panics, 0..4, chunks_of(4)).collect()
    });
    assert_eq!((&got[0], &got[2]), (&Ok(0), &Ok(2)));
    for (i, r) in [(1, &got[1]), (3, &got[3])] {
        match r {
            Err(Error::Panicked { message, backtrace }) => {
                assert!(message.contains(&format!("odd {i}")), "{message}");
                let bt = backtrace.as_deref().expect("the worker's backtrace");
                assert!(bt.contains("odd_panics"), "{bt}");
            }
            other => panic!("item {i}: expected Panicked, got {other:?}"),
        }
    }
}

#[test]
fn mp17_pool_map_and_imap_unordered_keep_the_workers_backtrace() {
    let procs = Pool::builder()
        .processes(1)
        .worker_env("RUST_LIB_BACKTRACE", "1")
        .test_harness()
        .build()
        .expect("a pool builds");
    let (mapped, unordered) = guarded("the maps", move || {
        let mapped = procs.map(odd_panics, 0..8u32);
        let unordered: Vec<Result<u32, Error>> = procs
            .imap_unordered_with(odd_panics, 0..8u32, chunks_of(4))
            .expect("the pool runs")
            .collect();
        (mapped, unordered)
    });
    assert!(
        matches!(&mapped, Err(Error::Panicked { backtrace: Some(bt), .. }) if bt.contains("odd_panics")),
        "{mapped:?}"
    );
    let failed: Vec<&Error> = unordered.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 4, "{unordered:?}");
    assert!(
        failed.iter().all(|e| matches!(
            e,
            Error::Panicked {
                backtrace: Some(_),
                ..
            }
        )),
        "{failed:?}"
    );
}

#[test]
fn pool_map_async_sends_a_chunk_that_does_not_fit_a_frame_item_by_item() {
    let procs = Pool::from_executor(Arc::new(small_frames())).expect("a pool");
    let got = guarded("the map", move || {
        procs.map_chunked(
            byte_len,
            [3000, 3000, 3000, 5].map(|n| vec![0u8; n]),
            Some(4),
        )
    });
    assert_eq!(got, Ok(vec![3000, 3000, 3000, 5]));
}

#[test]
fn pool_map_fails_with_the_item_that_does_not_fit_naming_its_type() {
    let procs = Pool::from_executor(Arc::new(small_frames())).expect("a pool");
    let got = guarded("the map", move || {
        procs.map_chunked(byte_len, [10, 10_000, 20].map(|n| vec![0u8; n]), Some(3))
    });
    assert!(
        matches!(&got, Err(Error::Encode { type_name, .. }) if *type_name == std::any::type_name::<Vec<u8>>()),
        "{got:?}"
    );
}

fn same(x: u64) -> u64 {
    x
}

/// MP15 on a process pool: an input that panics part-way through a chunk
/// loses none of the items it gave before (they begin the next chunk, and
/// reach a worker), where CPython's `imap` loses the whole chunk.
#[test]
fn mp15_a_panicking_input_loses_no_item_of_its_chunk_on_a_process_pool() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .test_harness()
        .build()
        .expect("a test-harness pool builds");
    let (got, panics) = guarded("the map", move || {
        let inputs = (0..40u64).inspect(|&x| assert!(x != 21, "input 21 is bad"));
        let mut m = pool.map_with(same, inputs, chunks_of(4));
        let (mut got, mut panics) = (Vec::new(), 0);
        while panics < 2 {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.next())) {
                Ok(Some(r)) => got.push(r),
                Ok(None) => break,
                Err(_) => panics += 1,
            }
        }
        (got, panics)
    });
    assert_eq!(panics, 1, "the bad input's panic reaches the caller once");
    let expected: Vec<Result<u64, Error>> = (0..40).filter(|&x| x != 21).map(Ok).collect();
    assert_eq!(got, expected);
}

/// Task: `n` bytes.
fn bytes_of(n: usize) -> Vec<u8> {
    vec![7; n]
}

/// A chunk's results travel back in one frame. When together they pass
/// `max_frame_bytes`, each item of the chunk fails with `Encode` naming the
/// item's result type and the remedy (the error named the crate's private
/// `ChunkResult` and gave no reason; found by review).
#[test]
fn a_chunks_results_too_large_together_fail_each_item_naming_its_type_and_the_remedy() {
    let pool = small_frames();
    let got: Vec<_> = guarded("the map", move || {
        pool.map_with(bytes_of, [1500, 1500, 1500], chunks_of(3))
            .collect()
    });
    assert_eq!(got.len(), 3);
    for r in got {
        match r {
            Err(Error::Encode { type_name, message }) => {
                assert_eq!(type_name, std::any::type_name::<Vec<u8>>());
                assert!(message.contains("smaller chunksize"), "{message}");
            }
            other => panic!("expected Encode, got {other:?}"),
        }
    }
}

/// L3: a result larger than a frame fails with `Encode` naming its type,
/// and nothing in the message claims the worker named another type (it
/// ended "(the worker named the type task result)"; found by review).
#[test]
fn l3_an_oversized_result_error_names_its_type_without_a_false_mismatch() {
    let pool = small_frames();
    let e = guarded("the task", move || {
        pool.submit(bytes_of, 10_000).into_result()
    })
    .expect_err("a 10 000-byte result over a 4096-byte frame");
    match &e {
        Error::Encode { type_name, message } => {
            assert_eq!(*type_name, std::any::type_name::<Vec<u8>>());
            assert!(!message.contains("the worker named"), "{message}");
        }
        other => panic!("expected Encode, got {other:?}"),
    }
}

fn small_frames_pool() -> Pool {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_frame_bytes(4096)
        .test_harness()
        .build()
        .expect("a test-harness pool builds");
    Pool::from_executor(Arc::new(ex)).expect("the facade builds")
}

fn assert_names_the_item_type(r: &Result<Vec<u8>, Error>) {
    match r {
        Err(Error::Encode { type_name, message }) => {
            assert!(
                !type_name.contains("ChunkResult"),
                "the error names the crate's private chunk type: {type_name}: {message}"
            );
            assert_eq!(*type_name, std::any::type_name::<Vec<u8>>(), "{message}");
            assert!(message.contains("smaller chunksize"), "{message}");
        }
        other => panic!("expected Encode, got {other:?}"),
    }
}

/// L3 with a chunk, on the `Pool` facade: a chunk whose results together pass
/// `max_frame_bytes` fails each item naming the item's result type and the
/// remedy. `ExecutorExt::map_with` and `Pool::imap` do it (`map::
/// unpack_chunk`); `Pool::imap_unordered` unpacks its chunks itself
/// (`pool/iter.rs` `ImapUnordered::unpack`) and still names the private
/// `concurrent_futures::chunk::ChunkResult<...>`, with no reason.
#[test]
fn imap_unordered_chunk_too_large_together_names_the_item_type_and_the_remedy() {
    let pool = small_frames_pool();
    let got: Vec<_> = guarded("the map", move || {
        pool.imap_unordered_with(bytes_of, [1500, 1500, 1500], MapOptions::new().chunksize(3))
            .expect("a running pool")
            .collect()
    });
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_names_the_item_type(r);
    }
}

/// The same for `Pool::map_chunked` / `map_async` (`pool/entries.rs`
/// `ChunkEntry::deliver`): the job's error is the chunk's, naming
/// `ChunkResult`.
#[test]
fn pool_map_chunked_chunk_too_large_together_names_the_item_type_and_the_remedy() {
    let pool = small_frames_pool();
    let got = guarded("the map", move || {
        pool.map_chunked(bytes_of, [1500, 1500, 1500], Some(3))
    });
    assert_names_the_item_type(&got.map(|_| Vec::new()));
}

/// A result whose `Serialize` panics on 66.
#[derive(Debug)]
struct PanicsOn66(u32);

impl serde::Serialize for PanicsOn66 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 66 {
            panic!("66 panics");
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for PanicsOn66 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(PanicsOn66)
    }
}

fn plus_one(n: u32) -> PanicsOn66 {
    PanicsOn66(n + 1)
}

/// D9, M10: in a chunked map, a result whose `Serialize` panics in the
/// worker fails only its item, with the `Encode` error it gets unchunked
/// (the control), not as the task's panic (found by review).
#[test]
fn d9_a_chunked_maps_result_whose_serialize_panics_is_an_encode_error_as_unchunked() {
    let pool = Arc::new(common::pool(1));
    let map_in_chunks_of = |n: usize| -> Vec<Result<u32, concurrent_futures::Error>> {
        let pool = pool.clone();
        common::guarded("map", move || {
            concurrent_futures::ExecutorExt::map_with(
                &pool,
                plus_one,
                64..67u32,
                concurrent_futures::MapOptions::new().chunksize(n),
            )
            .map(|r| r.map(|v| v.0))
            .collect()
        })
    };
    let unchunked = map_in_chunks_of(1);
    let chunked = map_in_chunks_of(3);
    pool.shutdown(true, false);
    let is_encode = |r: &Result<u32, concurrent_futures::Error>| {
        matches!(r, Err(concurrent_futures::Error::Encode { type_name, message })
            if type_name.ends_with("PanicsOn66") && message.contains("66 panics"))
    };
    assert!(
        is_encode(&unchunked[1]),
        "control, unchunked: {unchunked:?}"
    );
    assert_eq!((&chunked[0], &chunked[2]), (&Ok(65), &Ok(67)));
    assert!(
        is_encode(&chunked[1]),
        "a chunked item whose result's Serialize panicked: {:?}",
        chunked[1]
    );
}
