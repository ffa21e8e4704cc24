//! ProcessPoolExecutor: arguments and results that will not cross the
//! pipe (CONFORMANCE.md 1.11 D1-D4, D8-D12, D14; loky L3; pebble L14): a value
//! that fails to encode, fails or panics while decoding, or kills its
//! worker (exit, segfault) while the worker decodes the argument or encodes
//! the result. Each fails only its own task; the pool serves on.
//!
//! Every wait has a generous hang guard; no test asserts a duration.

use std::fmt::Debug;

use concurrent_futures::{Error, ExecutorExt, Future, ProcessPoolExecutor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{assert_worker_exited_with, assert_worker_killed_by, guarded, pool, segfault, wait};

// ---------------------------------------------------------------- tasks --

fn double(x: u64) -> u64 {
    x * 2
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

// ------------------------------------------------ encode and decode --

/// An argument whose `Serialize` always fails.
#[derive(Debug, Deserialize)]
struct UnencodableArg;

impl Serialize for UnencodableArg {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

fn take_unencodable(_: UnencodableArg) -> u32 {
    1
}

/// D1 / P10: only that future fails, with Encode naming the type.
/// L14 (pebble `test_process_pool_pickling_error_task`): the same worker
/// serves on.
#[test]
fn d1_argument_that_fails_to_encode_fails_only_its_future() {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    let before = pool.submit(double, 1);
    let bad = pool.submit(take_unencodable, UnencodableArg);
    let after = pool.submit(double, 2);
    match wait(bad) {
        Err(Error::Encode { type_name, .. }) => {
            assert!(type_name.contains("UnencodableArg"), "{type_name}")
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(wait(before), Ok(2));
    assert_eq!(wait(after), Ok(4));
    assert_eq!(wait(pool.submit(getpid, ())), Ok(pid));
}

/// A result that encodes in the worker but never decodes in the parent.
#[derive(Debug)]
struct UndecodableResult;

impl Serialize for UndecodableResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for UndecodableResult {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("refuses to be decoded"))
    }
}

fn make_undecodable(_: u32) -> UndecodableResult {
    UndecodableResult
}

/// D11: Decode for that task only; the worker is not replaced.
#[test]
fn d11_result_that_fails_to_decode_in_the_parent_fails_only_its_future() {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    match wait(pool.submit(make_undecodable, 1)) {
        Err(Error::Decode { type_name, .. }) => {
            assert!(type_name.contains("UndecodableResult"), "{type_name}")
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert_eq!(wait(pool.submit(double, 3)), Ok(6));
    assert_eq!(wait(pool.submit(getpid, ())), Ok(pid), "nothing broke");
}

/// A result whose `Deserialize` panics. Only the parent decodes results,
/// so the worker encodes it without trouble.
#[derive(Debug)]
struct PanicsWhenDecoded;

impl Serialize for PanicsWhenDecoded {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for PanicsWhenDecoded {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("decoding PanicsWhenDecoded");
    }
}

fn make_panicking_result(_: u32) -> PanicsWhenDecoded {
    PanicsWhenDecoded
}

/// D12 / decision 7: a panic while the parent decodes a result fails only
/// that future, with Decode carrying the panic's message; the pool keeps
/// serving from the same worker and shuts down normally.
#[test]
fn d12_result_whose_decode_panics_in_the_parent_fails_only_its_future() {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    match wait(pool.submit(make_panicking_result, 1)) {
        Err(Error::Decode { type_name, message }) => {
            assert!(type_name.contains("PanicsWhenDecoded"), "{type_name}");
            assert!(message.contains("decoding PanicsWhenDecoded"), "{message}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert_eq!(wait(pool.submit(double, 3)), Ok(6));
    assert_eq!(wait(pool.submit(getpid, ())), Ok(pid), "nothing broke");
    pool.shutdown(true, false);
}

/// An argument that encodes in the parent but never decodes in the worker.
#[derive(Debug)]
struct UndecodableArg;

impl Serialize for UndecodableArg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for UndecodableArg {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("refuses to be decoded"))
    }
}

fn take_panicking_arg(_: PanicsWhenDecoded) -> u32 {
    1
}

/// D12 for arguments (D2, D3): a panic while the worker decodes an
/// argument fails only that future, with Decode naming the argument's type
/// and carrying the panic's message, as a chunk's item and a result decoded
/// in the parent do; the worker lives on.
#[test]
fn d12_an_argument_whose_decode_panics_in_the_worker_fails_only_its_future() {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    match wait(pool.submit(take_panicking_arg, PanicsWhenDecoded)) {
        Err(Error::Decode { type_name, message }) => {
            assert!(type_name.contains("PanicsWhenDecoded"), "{type_name}");
            assert!(message.contains("decoding PanicsWhenDecoded"), "{message}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert_eq!(
        wait(pool.submit(getpid, ())),
        Ok(pid),
        "the worker lives on"
    );
    pool.shutdown(true, false);
}

fn take_undecodable(_: UndecodableArg) -> u32 {
    1
}

/// L3 (loky tells "a task has failed to un-serialize" from "a result has
/// failed to un-serialize") / D3: an argument that does not decode in the
/// worker fails its task with Decode naming the argument's type, and the
/// worker survives; a result that does not decode in the parent is Decode
/// naming the result's type. Neither costs the worker.
#[test]
fn l3_decode_failures_of_the_argument_and_of_the_result_name_their_types() {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    match wait(pool.submit(take_undecodable, UndecodableArg)) {
        Err(Error::Decode { type_name, .. }) => {
            assert!(type_name.contains("UndecodableArg"), "{type_name}")
        }
        other => panic!("expected Decode of the argument, got {other:?}"),
    }
    match wait(pool.submit(make_undecodable, 1)) {
        Err(Error::Decode { type_name, .. }) => {
            assert!(type_name.contains("UndecodableResult"), "{type_name}")
        }
        other => panic!("expected Decode of the result, got {other:?}"),
    }
    assert_eq!(wait(pool.submit(getpid, ())), Ok(pid), "nothing broke");
}

// ------------------------------- crashes while encoding or decoding --

/// On a one-worker pool, submits `crash` with normal tasks behind it;
/// checks that those succeed and that a new worker process serves
/// afterwards, and returns the error of `crash`.
fn crash_on_the_only_worker<T: Debug>(
    crash: impl FnOnce(&ProcessPoolExecutor) -> Future<T>,
) -> Error {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    let crashed = crash(&pool);
    let behind: Vec<_> = (0..10u64).map(|i| pool.submit(double, i)).collect();
    let error = wait(crashed).expect_err("the crashing task must fail");
    for (i, f) in (0..10u64).zip(behind) {
        assert_eq!(wait(f), Ok(i * 2), "task {i} behind the crash");
    }
    let next = wait(pool.submit(getpid, ())).unwrap();
    assert_ne!(next, pid, "a new worker must serve after the crash");
    error
}

/// An argument whose decoding exits with the code it carries. Only the
/// worker decodes arguments.
#[derive(Debug, Serialize)]
struct ExitsWhenDecoded(i32);

impl<'de> Deserialize<'de> for ExitsWhenDecoded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        std::process::exit(i32::deserialize(d)?)
    }
}

fn take_exits_when_decoded(_: ExitsWhenDecoded) -> u32 {
    1
}

/// D2 (CPython `test_exit_at_task_unpickle`): an argument that exits while
/// the worker decodes it fails only its task, with WorkerDied and the exit
/// code; a new worker serves the next tasks.
#[test]
fn d2_exit_while_the_worker_decodes_the_argument_is_worker_died_with_its_code() {
    let e = crash_on_the_only_worker(|p| p.submit(take_exits_when_decoded, ExitsWhenDecoded(5)));
    assert_worker_exited_with(&e, 5);
}

/// An argument whose decoding segfaults. Only the worker decodes arguments.
#[derive(Debug, Serialize)]
struct SegfaultsWhenDecoded(u8);

impl<'de> Deserialize<'de> for SegfaultsWhenDecoded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d)?;
        segfault()
    }
}

fn take_segfaults_when_decoded(_: SegfaultsWhenDecoded) -> u32 {
    1
}

/// D4 (CPython `test_crash_at_task_unpickle`): a segfault while the worker
/// decodes the argument fails only that task, with WorkerDied and SIGSEGV;
/// a new worker serves the next tasks.
#[test]
fn d4_segfault_while_the_worker_decodes_the_argument_is_worker_died_with_sigsegv() {
    let e = crash_on_the_only_worker(|p| {
        p.submit(take_segfaults_when_decoded, SegfaultsWhenDecoded(1))
    });
    assert_worker_killed_by(&e, libc::SIGSEGV);
}

/// A result whose encoding segfaults. Only the worker encodes results.
#[derive(Debug, Deserialize)]
struct SegfaultsWhenEncoded;

impl Serialize for SegfaultsWhenEncoded {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        segfault()
    }
}

fn make_segfaults_when_encoded(_: ()) -> SegfaultsWhenEncoded {
    SegfaultsWhenEncoded
}

/// D8 (CPython `test_crash_during_result_pickle_on_worker`): a segfault
/// while the worker encodes the result fails only that task, with
/// WorkerDied and SIGSEGV; a new worker serves the next tasks.
#[test]
fn d8_segfault_while_the_worker_encodes_the_result_is_worker_died_with_sigsegv() {
    let e = crash_on_the_only_worker(|p| p.submit(make_segfaults_when_encoded, ()));
    assert_worker_killed_by(&e, libc::SIGSEGV);
}

/// A result whose encoding exits with the code it carries. Only the worker
/// encodes results.
#[derive(Debug, Deserialize)]
struct ExitsWhenEncoded(i32);

impl Serialize for ExitsWhenEncoded {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        std::process::exit(self.0)
    }
}

fn make_exits_when_encoded(code: i32) -> ExitsWhenEncoded {
    ExitsWhenEncoded(code)
}

/// D9 (CPython `test_exit_during_result_pickle_on_worker`): an exit while
/// the worker encodes the result fails only that task, with WorkerDied and
/// the exit code; a new worker serves the next tasks.
#[test]
fn d9_exit_while_the_worker_encodes_the_result_is_worker_died_with_its_code() {
    let e = crash_on_the_only_worker(|p| p.submit(make_exits_when_encoded, 4));
    assert_worker_exited_with(&e, 4);
}

/// D14 (CPython `test_shutdown_deadlock_pickle`, bpo-39104): an argument
/// that fails to encode, submitted behind a task in flight and followed at
/// once by `shutdown(wait = false)`, fails only its own future with Encode.
/// The task before it still runs, and the pool still stops: a later
/// `shutdown(wait = true)` returns and leaves no worker behind.
#[test]
fn d14_encode_failure_then_shutdown_without_wait_fails_its_future_and_the_pool_stops() {
    let pool = std::sync::Arc::new(pool(1));
    let in_flight = pool.submit(double, 1);
    let bad = pool.submit(take_unencodable, UnencodableArg);
    pool.shutdown(false, false);
    match wait(bad) {
        Err(Error::Encode { type_name, .. }) => {
            assert!(type_name.contains("UnencodableArg"), "{type_name}")
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(wait(in_flight), Ok(2));
    let stopping = pool.clone();
    guarded("shutdown(wait = true) after an encode failure", move || {
        stopping.shutdown(true, false)
    });
    assert_eq!(
        pool.worker_pids(),
        Vec::<u32>::new(),
        "a worker outlived shutdown"
    );
}

/// Panics with a message of `n` bytes (an `assert_eq!` on two big values
/// says that much).
fn panic_at_length(n: usize) -> u32 {
    panic!("{}", "x".repeat(n))
}

fn small_frames() -> concurrent_futures::ProcessPoolBuilder {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_frame_bytes(4096)
        .test_harness()
}

/// Decision 7 across the pipe: a panic message longer than a frame is cut
/// to fit, and the task fails with `Panicked`, not with the worker. Only
/// arguments were checked against `max_frame_bytes`; a worker that could
/// not send its task's error exited, and the task failed `WorkerDied`.
#[test]
fn d7_a_panic_message_longer_than_max_frame_bytes_is_cut_and_the_worker_lives_on() {
    let pool = small_frames().build().unwrap();
    let before = wait(pool.submit(getpid, ())).unwrap();
    match wait(pool.submit(panic_at_length, 5_000)) {
        Err(Error::Panicked { message, .. }) => {
            assert!(message.starts_with("xxx"), "{message}");
            assert!(
                message.ends_with("(cut to fit max_frame_bytes)"),
                "{message}"
            );
            assert!(message.len() < 4096, "{} bytes", message.len());
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(
        wait(pool.submit(getpid, ())).unwrap(),
        before,
        "the worker was replaced"
    );
    pool.shutdown(true, false);
}

fn initializer_with_a_long_panic() {
    panic!("{}", "i".repeat(5_000));
}

/// The same for an initializer's panic: the pool breaks, naming the
/// initializer (it used to say "expected Initialized, got None").
#[test]
fn an_initializer_panic_longer_than_max_frame_bytes_still_names_the_initializer() {
    let pool = small_frames()
        .initializer(initializer_with_a_long_panic)
        .build()
        .unwrap();
    match wait(pool.submit(getpid, ())) {
        Err(Error::Broken { reason, .. }) => {
            assert!(reason.contains("initializer"), "{reason}");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    pool.shutdown(true, false);
}

fn byte_len(v: Vec<u8>) -> usize {
    v.len()
}

/// D1 in a map: an argument that does not fit (or does not encode) fails
/// its own item with `Encode`, and the map goes on with the next inputs,
/// ordered or not (decision 2). The map used to take the error for a
/// refusal and end there, dropping the rest of the input without a word.
#[test]
fn d1_an_argument_that_fails_to_encode_fails_only_its_item_in_a_map() {
    let pool = small_frames().build().unwrap();
    let inputs = || [10, 20, 10_000, 30, 40].map(|n| vec![0u8; n]);
    let ordered: Vec<Result<usize, Error>> = pool.map(byte_len, inputs()).collect();
    assert_eq!(ordered.len(), 5, "{ordered:?}");
    assert!(
        matches!(ordered[2], Err(Error::Encode { .. })),
        "{ordered:?}"
    );
    assert_eq!(ordered[4], Ok(40));
    let mut unordered: Vec<(usize, Result<usize, Error>)> =
        pool.map_unordered(byte_len, inputs()).collect();
    unordered.sort_by_key(|(i, _)| *i);
    assert_eq!(unordered.len(), 5, "{unordered:?}");
    assert!(matches!(unordered[2].1, Err(Error::Encode { .. })));
    pool.shutdown(true, false);
}
