//! The [`Future`] handle: the result of one task, as in
//! `concurrent.futures.Future`.
//!
//! A `Future<T>` is created by an executor when a task is submitted and
//! completed by the executor when the task ends. Its owner can block for the
//! result with a timeout, ask its state, cancel it while it is still queued,
//! add done-callbacks, or `.await` it from any async runtime.
//!
//! The handle is not `Clone`: share it by reference (it is `Sync`), or wrap
//! it in an `Arc`. That single ownership is what lets
//! [`into_result`](Future::into_result) and `.await` move the value out
//! without requiring `T: Clone`, while [`result`](Future::result) lends it
//! to any number of threads.

pub(crate) mod core;
mod promise;
mod slot;
mod task_end;

pub use promise::Promise;
pub(crate) use task_end::TaskEnd;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use self::core::{CANCELLED, Core, FINISHED, PENDING, RUNNING};
use crate::Error;
use crate::sync::Arc;

/// Gives access to the [`Core`] inside whatever allocation holds it (a
/// thread-pool task, a portable task, or a bare core), so a task and its
/// future share one allocation.
pub(crate) trait Completion<T>: Send + Sync {
    fn core(&self) -> &Core<T>;
    /// Drops the task's work (closure, argument) once it can no longer run,
    /// so a cancelled task releases its captures at once (C8, S13). Returns
    /// whether the work was still there: not taken by a run, nor released
    /// before.
    fn release(&self) -> bool {
        true
    }
    /// Runs the task on this thread and completes the future (or, for
    /// [`InPlace::Fail`] and [`InPlace::Cancel`], ends it without running
    /// it), unless a worker
    /// already took it: a thread-pool worker waiting for this future does
    /// this while the task is still queued in its pool (T10).
    fn run_here(self: Arc<Self>, how: InPlace) {
        let _ = how;
    }
}

/// What a pool worker waiting for a task still queued in its pool does
/// with it (see [`Completion::run_here`]).
pub(crate) enum InPlace {
    /// Runs it: the pool is healthy.
    Run,
    /// Fails it with this error: the pool is broken, and its queued tasks
    /// fail (T8) — also this one, which a worker waiting for it would
    /// otherwise wait for while no other worker may be left to take it.
    Fail(Error),
    /// Cancels it: a `cancel_futures` shutdown cancels the queued tasks,
    /// but its sweep may be held up by a done-callback that waits for this
    /// very worker (found by review).
    Cancel,
}

impl<T: Send + Sync> Completion<T> for Core<T> {
    fn core(&self) -> &Core<T> {
        self
    }
}

/// [`Future::cancel`] for an executor that holds the task but no handle
/// (a [`CancelToken`](crate::CancelToken), a shutdown's sweep of the
/// queue). The handle passed to callbacks is made only if the cancel ended
/// the future: a throwaway handle dropped while the task still runs would
/// take the owner's `.await` waker out of the list with it (its `Drop`
/// cannot tell itself from the owner), and the owner would sleep for ever
/// (found by review).
pub(crate) fn cancel_shared<T>(shared: Arc<dyn Completion<T>>) -> bool {
    let cancelled = shared.core().cancel(|| Future::from_shared(shared.clone()));
    if cancelled {
        shared.release();
    }
    cancelled
}

/// The handle of one task's result.
///
/// ```
/// use concurrent_futures::{ExecutorExt, ThreadPoolExecutor};
/// use std::time::Duration;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let fut = pool.submit(square, 7);
/// assert_eq!(fut.result(Some(Duration::from_secs(5))), Ok(&49));
/// assert!(fut.done());
/// assert_eq!(fut.into_result(), Ok(49));
/// ```
pub struct Future<T> {
    shared: Arc<dyn Completion<T>>,
}

impl<T> Future<T> {
    pub(crate) fn from_shared(shared: Arc<dyn Completion<T>>) -> Self {
        Future { shared }
    }

    pub(crate) fn core(&self) -> &Core<T> {
        self.shared.core()
    }

    /// True once the future finished (value or error) or was cancelled (F1).
    pub fn done(&self) -> bool {
        self.core().is_terminal()
    }

    /// True while a worker is running the task (F2). A process pool marks a
    /// task running when it sends it to a worker.
    pub fn running(&self) -> bool {
        self.core().status() == RUNNING
    }

    /// True if the future was cancelled (F2).
    pub fn cancelled(&self) -> bool {
        self.core().status() == CANCELLED
    }

    /// Cancels the task if it has not started. Returns true if the future is
    /// now cancelled (including when it already was), false if it is running
    /// or finished (X1-X3). Waiters in `result`, `wait`, `as_completed` and
    /// `.await` are woken at once and callbacks run on this thread.
    ///
    /// A process pool built with
    /// [`kill_on_cancel(true)`](crate::ProcessPoolBuilder::kill_on_cancel)
    /// also cancels a running task, by killing the worker that runs it.
    pub fn cancel(&self) -> bool {
        self.released_if(self.core().cancel(|| self))
    }

    /// [`cancel`](Self::cancel) of a task that has not started only, on
    /// any executor (see `Core::cancel_pending`).
    pub(crate) fn cancel_pending(&self) -> bool {
        self.released_if(self.core().cancel_pending(|| self))
    }

    /// After a cancel: drops the task's unrun work if it was cancelled.
    fn released_if(&self, cancelled: bool) -> bool {
        if cancelled {
            self.shared.release();
        }
        cancelled
    }

    /// Waits at most `timeout` (`None`: forever) for the task and lends its
    /// value.
    ///
    /// Errors: the task's own failure ([`Error::Panicked`], or an executor
    /// error such as [`Error::WorkerDied`]), [`Error::Cancelled`], or
    /// [`Error::Timeout`] if it is still not done (the task keeps running;
    /// R1, R2, R5). A zero timeout never blocks. May be called any number of
    /// times from any number of threads; a failed future gives the same
    /// error each time (R3). On a thread-pool worker, the wait first runs
    /// the task itself if it is still queued in that pool, then, while it
    /// runs elsewhere, the subtasks the waiting task submitted and those the
    /// awaited task pushed, so fork-join code cannot deadlock a small pool
    /// (T10); it takes no other work. A
    /// task it runs is not interrupted at the timeout, so there the wait
    /// may end later than `timeout`, by up to the length of that task.
    pub fn result(&self, timeout: Option<Duration>) -> Result<&T, Error> {
        self.wait_for(timeout, false)?;
        match self.core().outcome() {
            Some(Some(Ok(v))) => Ok(v),
            Some(Some(Err(e))) => Err((**e).clone()),
            Some(None) => Err(Error::AlreadyTaken),
            None => Err(Error::Cancelled),
        }
    }

    /// Waits like [`result`](Self::result) and returns the task's error, or
    /// `None` if it produced a value (R3). Cancellation and the timeout are
    /// the `Err` side (R4).
    pub fn exception(&self, timeout: Option<Duration>) -> Result<Option<Error>, Error> {
        self.wait_for(timeout, false)?;
        match self.core().outcome() {
            Some(Some(Ok(_))) => Ok(None),
            Some(Some(Err(e))) => Ok(Some((**e).clone())),
            Some(None) => Err(Error::AlreadyTaken),
            None => Err(Error::Cancelled),
        }
    }

    /// Waits for the task without limit and moves its value out.
    ///
    /// To wait with a limit first, call [`result`](Self::result) with a
    /// timeout, then this. Called inside one of this future's own
    /// done-callbacks (with the handle reached through shared state), it
    /// fails with [`Error::InvalidCall`] instead of waiting for itself
    /// (up to 64 callback runs nested on one thread: a callback completing
    /// a future whose callback completes the next, and so on); borrow the
    /// value with `result` there.
    pub fn into_result(self) -> Result<T, Error> {
        if self.core().runs_callbacks_here() {
            return Err(moved_out_in_own_callback());
        }
        self.core()
            .wait_until(None, true, &|how| self.run_here(how));
        self.core().take_outcome()
    }

    /// Adds a callback that receives this future when it ends (C1).
    ///
    /// If the future has already ended, the callback runs at once on this
    /// thread (C2), even while the thread that ended it may still be
    /// running the callbacks added before the end (as in CPython: waiting
    /// for them could deadlock); otherwise it runs on the thread that ends
    /// it, after the callbacks added before it (C3, C4). A panicking callback is caught and logged
    /// through `log` (target `concurrent_futures`); later callbacks still run
    /// and the future is unaffected (C5, C6).
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(&Future<T>) + Send + 'static,
    {
        if let Some(cb) = self.core().add_callback(Box::new(callback)) {
            core::run_callbacks(self, vec![cb]);
        }
    }

    fn wait_for(&self, timeout: Option<Duration>, settled: bool) -> Result<(), Error> {
        let deadline = crate::sync::deadline(timeout);
        if self
            .core()
            .wait_until(deadline, settled, &|how| self.run_here(how))
        {
            Ok(())
        } else {
            Err(Error::Timeout {
                waited: timeout.unwrap_or_default(),
            })
        }
    }

    /// Runs (or fails) the task here if nobody has started it (see
    /// `Completion`).
    fn run_here(&self, how: InPlace) {
        Arc::clone(&self.shared).run_here(how)
    }

    /// The address identifying this future (F9).
    fn addr(&self) -> *const () {
        Arc::as_ptr(&self.shared) as *const ()
    }
}

/// Futures compare by identity, like Python's (F9).
impl<T> PartialEq for Future<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr() == other.addr()
    }
}
impl<T> Eq for Future<T> {}
impl<T> Hash for Future<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr().hash(state)
    }
}

/// Shows the state and, once finished, the value's type or the error (F8).
impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Future");
        d.field("at", &self.addr());
        match self.core().status() {
            PENDING => d.field("state", &"pending"),
            RUNNING => d.field("state", &"running"),
            CANCELLED => d.field("state", &"cancelled"),
            FINISHED => match self.core().outcome() {
                Some(Some(Ok(_))) => d
                    .field("state", &"finished")
                    .field("returned", &std::any::type_name::<T>()),
                Some(Some(Err(e))) => d.field("state", &"finished").field("raised", e),
                _ => d.field("state", &"finished").field("returned", &"<taken>"),
            },
            _ => unreachable!("a future status is one of four values"),
        };
        d.finish()
    }
}

/// `fut.await` gives the owned value, from any async runtime. The waker is
/// woken exactly once when the future ends (after its done-callbacks, if it
/// has any).
///
/// A poll never runs the task: it answers `Pending` and leaves the caller
/// free to do other work (the other branches of a `join!`, say). So inside
/// a thread-pool task, wait on a future of the same pool with
/// [`result`](Future::result) or [`into_result`](Future::into_result),
/// which run it there if it is still queued (T10); `block_on(fut)` of a
/// task queued behind the waiting one on a one-worker pool waits for ever,
/// as CPython's `result()` does.
impl<T> std::future::Future for Future<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.core().runs_callbacks_here() {
            return Poll::Ready(Err(moved_out_in_own_callback()));
        }
        if self.core().register_waker(cx.waker(), true, OWNER_KEY) {
            Poll::Ready(self.core().take_outcome())
        } else {
            Poll::Pending
        }
    }
}

/// `(&fut).await` lends the value, like [`Future::result`].
impl<'a, T> std::future::IntoFuture for &'a Future<T> {
    type Output = Result<&'a T, Error>;
    type IntoFuture = Ref<'a, T>;

    fn into_future(self) -> Ref<'a, T> {
        Ref { fut: self, key: 0 }
    }
}

/// `into_result()` or `.await` of a future inside one of its own
/// done-callbacks: the value can be moved out only once they have all run,
/// so it would wait for itself.
fn moved_out_in_own_callback() -> Error {
    Error::InvalidCall(
        "into_result() or .await of a future inside one of its own done-callbacks \
         would wait forever: the value moves out only after they have run; \
         borrow it with result() there"
            .into(),
    )
}

/// The waker key of the owning [`Future`] (see `Core::register_waker`).
pub(crate) const OWNER_KEY: usize = 0;

/// Waker keys for [`Ref`]s, never [`OWNER_KEY`]. A `usize` counter does not
/// wrap in practice (one per `Ref` that ever waited).
static NEXT_REF_KEY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The std future that `(&fut).await` polls: it lends the value.
#[derive(Debug)]
pub struct Ref<'a, T> {
    fut: &'a Future<T>,
    /// Its waker's key in the future's list once it has polled `Pending`
    /// (0 before): dropping the `Ref` (a `select!` that lost, a timeout
    /// that fired) takes its waker out again.
    key: usize,
}

impl<'a, T> std::future::Future for Ref<'a, T> {
    type Output = Result<&'a T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.key == 0 {
            self.key = NEXT_REF_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }

        if self.fut.core().register_waker(cx.waker(), false, self.key) {
            Poll::Ready(self.fut.result(Some(Duration::ZERO)))
        } else {
            Poll::Pending
        }
    }
}

/// A future dropped while pending (the branch of a `select!` that lost, a
/// timeout that fired) takes the waker it registered out of the list, as
/// a [`Ref`] does: it would keep the waiting task alive until the future
/// ends, or for ever.
impl<T> Drop for Future<T> {
    fn drop(&mut self) {
        if self.core().may_hold_waiters() {
            self.core().unregister_waker(OWNER_KEY);
        }
    }
}

impl<T> Drop for Ref<'_, T> {
    fn drop(&mut self) {
        if self.key != 0 && !self.fut.done() {
            self.fut.core().unregister_waker(self.key);
        }
    }
}

#[cfg(all(test, cf_loom))]
mod loom_tests;
