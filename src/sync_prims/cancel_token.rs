//! [`CancelToken`]: cooperative cancellation for thread-pool tasks (PP3).
//!
//! A thread cannot be stopped from outside, so CPython's `cancel()` of a
//! running task returns `False` and the task runs on, for hours if it is
//! long (CONFORMANCE.md PP3). A token is the cooperative answer, as in
//! .NET and tokio-util: the task is handed the token and checks it between
//! steps; whoever holds a clone cancels it. One call also cancels the
//! tasks of the token that have not started yet, so a whole group of tasks
//! ends with one `cancel()`, queued or running.

use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use super::Event;
use crate::Error;
use crate::executor::JobTrait as Job;
use crate::sync::{Arc, Mutex, lock};

/// A cancellation flag shared by a group of thread-pool tasks (PP3).
///
/// [`ThreadPoolExecutor::spawn_cancellable`](crate::ThreadPoolExecutor::spawn_cancellable)
/// runs a task that is handed the token; [`cancel`](Self::cancel) then
/// cancels the tasks of the token still queued (their futures end
/// cancelled and they never run) and tells the running ones to stop, which
/// they do by checking [`is_cancelled`](Self::is_cancelled) or
/// [`check`](Self::check), or by sleeping in
/// [`wait_cancelled`](Self::wait_cancelled). Clones share the flag.
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{CancelToken, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let token = CancelToken::new();
/// let job = pool.spawn_cancellable(&token, |token| {
///     let mut steps = 0;
///     // One step a millisecond, until told to stop.
///     while !token.wait_cancelled(Some(Duration::from_millis(1))) {
///         steps += 1;
///     }
///     steps
/// });
/// std::thread::sleep(Duration::from_millis(20));
/// token.cancel();
/// assert!(*job.result(None).unwrap() > 0);
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: Event,
    /// The tasks spawned with this token, to cancel those still queued.
    jobs: Mutex<Jobs>,
}

/// The token's tasks. Each `Weak` keeps its task's allocation (closure and
/// result slot), so finished ones are dropped, in one sweep, whenever the
/// list has doubled since the last sweep: amortized O(1) a task, and a
/// long-lived token holds about twice its live tasks at most.
#[derive(Default)]
struct Jobs {
    list: Vec<Weak<dyn Job>>,
    sweep_at: usize,
}

impl Jobs {
    fn push(&mut self, job: Weak<dyn Job>) {
        if self.list.len() >= self.sweep_at {
            self.list.retain(|j| j.strong_count() > 0);
            self.list.shrink_to(self.list.len() * 2);
            self.sweep_at = (self.list.len() * 2).max(16);
        }
        self.list.push(job);
    }
}

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: every task of this token still queued is cancelled (its
    /// future ends with [`Error::Cancelled`] and it never runs), and the
    /// running ones see [`is_cancelled`](Self::is_cancelled). Idempotent.
    pub fn cancel(&self) {
        self.inner.cancelled.set();
        let jobs = std::mem::take(&mut lock(&self.inner.jobs).list);
        for job in jobs.iter().filter_map(Weak::upgrade) {
            job.cancel();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.is_set()
    }

    /// `Err(Error::Cancelled)` once cancelled, for `token.check()?` in a
    /// task that returns a `Result`.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Blocks until the token is cancelled (true) or `timeout` passes
    /// (false; `None`: no limit): a sleep that a cancel cuts short.
    pub fn wait_cancelled(&self, timeout: Option<Duration>) -> bool {
        self.inner.cancelled.wait(timeout)
    }

    /// Adds a task to the group; cancels it at once if the token already
    /// is cancelled.
    pub(crate) fn register(&self, job: &Arc<dyn Job>) {
        let mut jobs = lock(&self.inner.jobs);
        if self.is_cancelled() {
            drop(jobs);
            job.clone().cancel();
            return;
        }
        jobs.push(Arc::downgrade(job));
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;
    use crate::ThreadPoolExecutor;

    /// A token that outlives many tasks holds on to the live ones only.
    #[test]
    fn a_long_lived_token_forgets_finished_tasks() {
        let pool = ThreadPoolExecutor::new(1).unwrap();
        let token = CancelToken::new();
        for i in 0..1000u32 {
            let f = pool.spawn_cancellable(&token, move |_| i);
            assert_eq!(f.into_result(), Ok(i));
        }
        let held = lock(&token.inner.jobs).list.len();
        assert!(held <= 16, "{held} of 1000 finished tasks still listed");
    }
}
