//! The process pool's transport: how a task gets to a worker process and
//! its result comes back.
//!
//! A process worker is this same executable started again in worker mode.
//! Parent and worker talk over a dedicated pipe pair (never the worker's
//! stdout/stderr, which stay the user's), in four layers, each its own
//! module and each usable and testable alone:
//!
//! | layer | module | what it does |
//! |---|---|---|
//! | bytes on a stream | [`frame`] | `u32` little-endian length + payload; clean EOF vs truncation; a length over `max_frame_bytes` refused before any allocation |
//! | values as bytes | [`codec`] | serde + postcard behind a small trait; errors name the Rust type |
//! | what is said | [`protocol`] | `Ready`/`Welcome` handshake, `Run`/`RunChunk`/`Shutdown`, `Started`/`Done`/`ChunkDone`; per-task failures as [`protocol::RemoteError`] values |
//! | which function runs | [`entry`] | a task `F` (zero-sized: a `fn` item or non-capturing closure) becomes a monomorphised *trampoline* sent as an offset from an anchor function; a [`entry::BuildId`] handshake makes sure both sides are the same build |
//!
//! A submit, end to end:
//!
//! 1. parent: `codec::encode(&arg)`; an argument that will not encode fails
//!    only its own future (`Error::Encode`, with the type's name);
//! 2. parent: `protocol::write_message(pipe, &ToWorker::Run { task_id,
//!    entry: entry::entry_of::<F, A, R>(), arg }, max_frame_bytes)`;
//! 3. worker: `protocol::read_message`, then `unsafe { entry::resolve(entry) }`
//!    (sound because the handshake compared `BuildId`s) and calls the
//!    trampoline, which decodes `A`, runs `F` under `catch_unwind` and
//!    encodes `R`;
//! 4. worker: `FromWorker::Done { task_id, outcome }`; a panic, a decode or
//!    an encode failure is a `RemoteError` in `outcome` and the worker lives
//!    on;
//! 5. parent: decodes `R` from the bytes, or turns the `RemoteError` into
//!    the crate's `Error` with `RemoteError::into_error(TaskTypes::of::<A, R>())`.
//!
//! A broken stream (truncated or oversized frame, undecodable message) is
//! `Error::Protocol`: the pool kills and replaces that worker, failing only
//! the task it was running. The `unsafe` of the process pool is in
//! [`entry`] (resolving a task, called where a worker runs one:
//! `worker.rs` and `mp/process.rs`), [`os`] (the worker's own setup) and
//! [`child`] (starting and reaping worker processes).

mod builder;
mod cancel;
pub(crate) mod child;
pub(crate) mod codec;
pub(crate) mod entry;
pub(crate) mod frame;
mod freeze;
mod link;
pub(crate) mod os;
mod outbox;
mod own_thread;
mod parent_death;
mod pool;
pub(crate) mod protocol;
mod reusable;
pub(crate) mod sigpipe;
mod state;
mod supervisor;
mod tree;
pub(crate) mod worker;

pub use builder::ProcessPoolBuilder;
pub use pool::ProcessPoolExecutor;
pub(crate) use pool::check_frame_size;
#[doc(hidden)]
pub use worker::__test_harness_worker;
pub use worker::{WORKER_ENV, init};

/// Adds the hidden test that workers of a
/// [`ProcessPoolBuilder::test_harness`] pool run, to a `cargo test` binary.
///
/// Put it once at the top level of each integration-test file (or unit-test
/// module tree) that builds process pools:
///
/// ```ignore
/// concurrent_futures::process_pool_test_worker!();
///
/// fn square(x: u64) -> u64 { x * x }
///
/// #[test]
/// fn squares_in_a_worker_process() {
///     let pool = concurrent_futures::ProcessPoolExecutor::builder()
///         .test_harness()
///         .build()
///         .unwrap();
///     use concurrent_futures::ExecutorExt;
///     assert_eq!(pool.submit(square, 4).into_result(), Ok(16));
/// }
/// ```
///
/// Workers re-run the test binary as
/// `<binary> __concurrent_futures_worker --nocapture --test-threads=1 --quiet`
/// (a name filter, so
/// the macro may also sit inside a module); the hidden
/// test calls [`init`], which serves tasks and exits. In a normal test run
/// the hidden test passes at once.
#[macro_export]
macro_rules! process_pool_test_worker {
    () => {
        #[test]
        fn __concurrent_futures_worker() {
            $crate::__test_harness_worker();
        }
    };
}
