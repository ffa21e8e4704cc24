//! [`ShutdownGuard`]: Python's `with ThreadPoolExecutor() as ex:` block.
//!
//! Dropping a pool never blocks (CONFORMANCE.md decision 6): queued work
//! still runs, in the background, and nothing waits for it, not even the
//! end of `main` (S10: a Rust program ends when `main` returns, whatever its
//! threads are doing, and a process pool's workers die with it). Code that
//! wants CPython's "the block ends when the work ends" wraps the pool in a
//! guard, which calls `shutdown(wait = true)` when it goes out of scope
//! (S8). A guard held in `main` makes `main` wait for its pool: the job
//! S11's `shutdown_all()` would do, one pool at a time and in plain sight.
//!
//! One thing differs from CPython on purpose (PP9, gh-130975): when the
//! scope is left by a panic, the guard first cancels the tasks that have not
//! started, then waits only for the running ones. A failed scope does not
//! sit through hours of queued work nobody will read.
//! [`ShutdownGuard::cancel_on_unwind`] turns that off. With
//! `panic = "abort"` no destructor runs, the guard's neither.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use super::{Executor, ShutdownOutcome, Task};
use crate::Error;

/// Shuts its executor down when dropped, waiting for its work: the scope of
/// Python's `with ThreadPoolExecutor() as ex:` (or `ProcessPoolExecutor`).
///
/// Dereferences to the executor, so `submit`, `map`, `spawn` and the rest
/// are called on the guard as on the pool, and is an [`Executor`] itself,
/// for generic code. When the guard is dropped it calls
/// [`Executor::shutdown`]`(wait = true, cancel_futures)`: every task of the
/// executor has ended (and a process pool's workers have exited) when the
/// scope that owns the guard ends. `cancel_futures` is false, unless the
/// guard is dropped by a panic unwinding through its scope: then the tasks
/// that have not started are cancelled first (see
/// [`cancel_on_unwind`](Self::cancel_on_unwind)).
///
/// The guard shuts down the executor itself, not one handle to it: guarding
/// an `Arc<dyn Executor>` or a `&pool` that others share shuts the pool
/// down for them too (their submits then fail with
/// [`Error::Shutdown`]), and a panicking scope
/// cancels their queued tasks as well.
///
/// Where it is dropped matters as for `shutdown(wait = true)`:
///
/// * inside a task of its own thread pool, it waits for the other workers;
///   tasks queued behind it on its own worker have not run yet when the
///   drop returns;
/// * inside a done-callback of its own process pool (which runs on the
///   reader thread of the worker that finished the task), it waits for
///   every other worker; that worker exits once the callback returns.
///
/// Bind it to a name: `ShutdownGuard::new(pool);` alone, or
/// `let _ = ShutdownGuard::new(pool);`, drops it, and so shuts the pool
/// down, at once.
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
#[must_use = "the executor is shut down when the guard is dropped: bind it, `let pool = ShutdownGuard::new(..)`"]
pub struct ShutdownGuard<E: Executor> {
    executor: E,
    cancel_on_unwind: bool,
    /// Whether the guard was made while its thread was already unwinding
    /// (inside a destructor that runs during a panic): such a guard's own
    /// scope did not panic, so it does not cancel (the rule std's `Mutex`
    /// poisoning follows).
    made_while_panicking: bool,
    /// Set by [`ShutdownGuard::deadline`]: the drop waits at most this
    /// long, through [`Executor::shutdown_within`].
    deadline: Option<Duration>,
}

impl<E: Executor> ShutdownGuard<E> {
    /// Guards `executor`: it is shut down, waiting, when the guard drops.
    /// Any executor works: a pool, an `Arc<dyn Executor>`, a `&pool`; a
    /// shared one is shut down for every holder (see the type's docs).
    pub fn new(executor: E) -> Self {
        ShutdownGuard {
            executor,
            cancel_on_unwind: true,
            made_while_panicking: std::thread::panicking(),
            deadline: None,
        }
    }

    /// Whether a drop by a panic unwinding through the guard's scope cancels
    /// the tasks that have not started before it waits (default true,
    /// PP9). With false, the guard waits for all the work even then, as
    /// CPython's `with` block does.
    pub fn cancel_on_unwind(mut self, cancel: bool) -> Self {
        self.cancel_on_unwind = cancel;
        self
    }
}

impl<E: Executor> ShutdownGuard<E> {
    /// Bounds the wait when the guard drops (PP8): the drop calls
    /// [`Executor::shutdown_within`]`(deadline, ..)` instead of
    /// `shutdown(wait = true, ..)`, so a service's stop keeps its time
    /// budget. Past the deadline a process pool stops its workers (SIGTERM,
    /// then SIGKILL); a thread pool's running tasks go on in the background.
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{ShutdownGuard, ThreadPoolExecutor};
    ///
    /// let pool = ShutdownGuard::new(ThreadPoolExecutor::new(2)?)
    ///     .deadline(Duration::from_secs(20));
    /// let answer = pool.spawn(|| 6 * 7);
    /// drop(pool); // waits at most 20 s
    /// assert_eq!(answer.result(None)?, &42);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

impl<E: Executor> Deref for ShutdownGuard<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.executor
    }
}

/// The guard is the executor it guards, for generic code
/// (`fn run(ex: &impl Executor)` takes `&guard`).
impl<E: Executor> Executor for ShutdownGuard<E> {
    fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
        self.executor.execute(task)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.executor.shutdown(wait, cancel_futures)
    }

    fn shutdown_within(&self, deadline: Duration, cancel_futures: bool) -> ShutdownOutcome {
        self.executor.shutdown_within(deadline, cancel_futures)
    }

    fn max_workers(&self) -> usize {
        self.executor.max_workers()
    }

    fn __thread_pool_id(&self) -> u64 {
        self.executor.__thread_pool_id()
    }

    fn __wait_ended(&self, deadline: Option<std::time::Instant>) -> bool {
        self.executor.__wait_ended(deadline)
    }
}

impl<E: Executor> Drop for ShutdownGuard<E> {
    fn drop(&mut self) {
        let unwinding = std::thread::panicking() && !self.made_while_panicking;
        let cancel = self.cancel_on_unwind && unwinding;
        match self.deadline {
            None => self.executor.shutdown(true, cancel),
            Some(deadline) => {
                let _ = self.executor.shutdown_within(deadline, cancel);
            }
        }
    }
}

impl<E: Executor> fmt::Debug for ShutdownGuard<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownGuard")
            .field("executor", &self.executor)
            .field("cancel_on_unwind", &self.cancel_on_unwind)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
