//! [`ShutdownGuard`]: Python's `with ThreadPoolExecutor() as ex:` block.
//!
//! Dropping a pool never blocks (CONFORMANCE.md decision 6): queued work
//! still runs, in the background, and nothing waits for it, not even the
//! end of `main` (S10: a Rust program ends when `main` returns, whatever its
//! threads are doing, and a process pool's workers die with it). Code that
//! wants CPython's "the block ends when the work ends" wraps the pool in a
//! guard, which calls `shutdown(wait = true)` when it goes out of scope
//! (S8), and so makes `main` wait too when the guard lives there (S11).
//!
//! One thing differs from CPython on purpose (PP9, gh-130975): when the
//! scope is left by a panic, the guard first cancels the tasks that have
//! not started, then waits only for the running ones. A failed scope does
//! not sit through hours of queued work nobody will read.
//! [`ShutdownGuard::cancel_on_unwind`] turns that off.

use std::fmt;
use std::ops::Deref;

use super::Executor;

/// Shuts its executor down when dropped, waiting for its work: the scope of
/// Python's `with ThreadPoolExecutor() as ex:` (or `ProcessPoolExecutor`).
///
/// Dereferences to the executor, so `submit`, `map`, `spawn` and the rest
/// are called on the guard as on the pool. When the guard is dropped it
/// calls [`Executor::shutdown`]`(wait = true, cancel_futures)`: every task
/// submitted through it has ended (and a process pool's workers have
/// exited) when the scope that owns it ends. `cancel_futures` is false,
/// unless the scope is unwinding from a panic: then the tasks that have not
/// started are cancelled first (see [`cancel_on_unwind`](Self::cancel_on_unwind)).
///
/// Dropping the guard from inside a task of its own pool waits for every
/// other worker, as `shutdown(wait = true)` does there.
///
/// ```
/// use concurrent_futures::{ExecutorExt, ShutdownGuard, ThreadPoolExecutor};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let futures = {
///     let pool = ShutdownGuard::new(ThreadPoolExecutor::new(2)?);
///     (0..8).map(|x| pool.submit(square, x)).collect::<Vec<_>>()
/// }; // the pool is shut down here, once every task has run
/// assert!(futures.iter().all(|f| f.done()));
/// assert_eq!(futures[3].result(None)?, &9);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub struct ShutdownGuard<E: Executor> {
    executor: E,
    cancel_on_unwind: bool,
}

impl<E: Executor> ShutdownGuard<E> {
    /// Guards `executor`: it is shut down, waiting, when the guard drops.
    /// Any executor works: a pool, an `Arc<dyn Executor>`, a `&pool`.
    pub fn new(executor: E) -> Self {
        ShutdownGuard {
            executor,
            cancel_on_unwind: true,
        }
    }

    /// Whether a drop during a panic cancels the tasks that have not
    /// started before it waits (default true, PP9). With false, the guard
    /// waits for all the work even then, as CPython's `with` block does.
    pub fn cancel_on_unwind(mut self, cancel: bool) -> Self {
        self.cancel_on_unwind = cancel;
        self
    }
}

impl<E: Executor> Deref for ShutdownGuard<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.executor
    }
}

impl<E: Executor> Drop for ShutdownGuard<E> {
    fn drop(&mut self) {
        let cancel = self.cancel_on_unwind && std::thread::panicking();
        self.executor.shutdown(true, cancel);
    }
}

impl<E: Executor> fmt::Debug for ShutdownGuard<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownGuard")
            .field("executor", &self.executor)
            .field("cancel_on_unwind", &self.cancel_on_unwind)
            .finish()
    }
}
