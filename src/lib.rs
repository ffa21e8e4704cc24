//! Python's `concurrent.futures` and `multiprocessing.Pool`, for Rust.
//!
//! * [`Future`]: the handle of one task — `result`, `exception`, `done`,
//!   `cancel`, `add_done_callback`, and `.await`.
//! * [`Executor`]: one object-safe trait for every pool, with the typed calls
//!   in [`ExecutorExt`]: `submit`, `map`, `map_unordered`.
//! * [`ThreadPoolExecutor`]: a work-stealing thread pool.
//! * `ProcessPoolExecutor` (Unix): workers that are this program started
//!   again; a crashed worker fails only its task. `init()` must be the
//!   first line of `main`. Per-task timeouts, idle workers that exit,
//!   workers replaced when their memory grows, one reusable pool for the
//!   program, and stops that take a task's subprocesses with them.
//! * [`wait`](fn@wait) and [`as_completed`]: waiting on many futures at once.
//! * [`ShutdownGuard`]: the scope of Python's `with ... as ex:` block;
//!   [`Executor::shutdown_within`]: a shutdown with a deadline.
//! * [`CancelToken`]: cooperative cancellation of running thread-pool
//!   tasks.
//! * [`ExecutorConfig`]: threads or processes, picked from configuration.
//! * `Pool` and [`ThreadPool`]: `multiprocessing.Pool`'s shape over any
//!   executor; `Process`, `Queue` and `pipe` (Unix) for the rest of
//!   `multiprocessing`; [`Semaphore`] and [`Event`] as in `threading`.
//!
//! ```
//! use concurrent_futures::{as_completed, ExecutorExt, ThreadPoolExecutor};
//!
//! fn fib(n: u64) -> u64 { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }
//!
//! let pool = ThreadPoolExecutor::new(2)?;
//! let futures: Vec<_> = (20..25).map(|n| pool.submit(fib, n)).collect();
//! for fut in as_completed(&futures, None) {
//!     println!("{:?}", fut?.result(None));
//! }
//! let ordered: Vec<u64> = pool.map(fib, 0..10).collect::<Result<_, _>>()?;
//! assert_eq!(ordered, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
//! # Ok::<(), concurrent_futures::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod chunk;
mod config;
mod error;
mod executor;
mod future;
mod map;
#[cfg(unix)]
mod mp;
mod pool;
#[cfg(unix)]
mod process;
mod spin;
pub(crate) mod sync;
mod sync_prims;
mod thread;
mod wait;

pub use config::{EXECUTOR_ENV, ExecutorConfig, ExecutorKind, MAX_WORKERS};
pub use error::Error;
pub use executor::{Executor, ExecutorExt, Portable, ShutdownGuard, ShutdownOutcome, Task};
pub use future::{Future, Promise, Ref};
pub use map::{Map, MapOptions, MapUnordered};
#[cfg(unix)]
pub use mp::{Process, Queue, Receiver, Sender, pipe};
pub use pool::*; // Pool, PoolBuilder (unix), ThreadPool, AsyncResult, Callbacks, ImapUnordered, StarFn
#[cfg(unix)]
#[doc(hidden)]
pub use process::__test_harness_worker;
#[cfg(unix)]
pub use process::{ProcessPoolBuilder, ProcessPoolExecutor, WORKER_ENV, init};
pub use sync_prims::{CancelToken, Event, Semaphore, SemaphoreGuard};
pub use thread::{ThreadPoolBuilder, ThreadPoolExecutor};
pub use wait::{
    AsCompleted, AsCompletedStream, DoneAndNotDone, ReturnWhen, Waitable, as_completed, wait,
};
