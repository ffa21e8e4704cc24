//! The completion state machine behind every [`Future`].
//!
//! ```text
//! PENDING ──set_running──▶ RUNNING ──complete──▶ FINISHED
//!    │                                              ▲
//!    ├──complete (fail queued work, F5)─────────────┘
//!    └──cancel──▶ CANCELLED
//! ```
//!
//! The status lives in an atomic so `done()`, `running()` and the
//! `PENDING → RUNNING` step need no lock. Reaching a terminal state
//! (`FINISHED` or `CANCELLED`) happens under the lock, because it must hand
//! over, atomically with the status change, everything that waits for it:
//! callbacks, `wait`/`as_completed` watchers, async wakers and threads blocked
//! in `result()` (F6). Everything it hands over runs after the lock is
//! released, so a callback may call back into the same future (C7).
//!
//! Cancellation is terminal and notifies at once: there is no CPython-style
//! `CANCELLED` vs `CANCELLED_AND_NOTIFIED` split, so `done()` and `wait()`
//! always agree (CONFORMANCE.md decision 1, PP7).

use std::task::Waker;
use std::time::Instant;

use super::slot::Slot;
use crate::Error;
use crate::sync::{Arc, Condvar, Mutex, Ordering, lock};

pub(crate) const PENDING: usize = 0;
pub(crate) const RUNNING: usize = 1;
pub(crate) const FINISHED: usize = 2;
pub(crate) const CANCELLED: usize = 3;

/// How a future ended, as told to watchers (`wait` needs to tell an
/// exception from a value for `FirstException`, W3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Value,
    Failed,
    Cancelled,
}

/// Something that waits for several futures at once (`wait`, `as_completed`,
/// a pool worker blocked in `result()`), told when one of them ends.
pub(crate) trait Watcher: Send + Sync {
    /// `key` is the number the watcher registered the future under.
    fn notify(&self, key: usize, ending: Ending);
}

/// A done-callback, boxed. It receives a handle to its future.
pub(crate) type Callback<T> = Box<dyn FnOnce(&super::Future<T>) + Send>;

struct Waiters<T> {
    callbacks: Vec<Callback<T>>,
    watchers: Vec<(Arc<dyn Watcher>, usize)>,
    wakers: Vec<Waker>,
    /// Threads blocked on `cond`; `notify_all` is a syscall, skipped when 0.
    blocked: usize,
    /// The completing thread is running callbacks with a temporary handle.
    callbacks_running: bool,
    /// Whether the finished outcome is an error (for `exception()` fast paths
    /// and watchers).
    failed: bool,
}

/// The shared completion state of one future.
pub(crate) struct Core<T> {
    status: crate::sync::AtomicUsize,
    waiters: Mutex<Waiters<T>>,
    cond: Condvar,
    outcome: Slot<Result<T, Error>>,
}

/// What `set_running` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// The future is now RUNNING; run the task.
    Run,
    /// It was cancelled (or already failed) while queued; drop the task.
    Skip,
}

impl<T> Default for Core<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Core<T> {
    pub(crate) fn new() -> Self {
        Core {
            status: crate::sync::AtomicUsize::new(PENDING),
            waiters: Mutex::new(Waiters {
                callbacks: Vec::new(),
                watchers: Vec::new(),
                wakers: Vec::new(),
                blocked: 0,
                callbacks_running: false,
                failed: false,
            }),
            cond: Condvar::new(),
            outcome: Slot::new(),
        }
    }

    pub(crate) fn status(&self) -> usize {
        self.status.load(Ordering::Acquire)
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.status() >= FINISHED
    }

    /// PENDING → RUNNING, lock-free. Executors call it when a worker takes
    /// the task (X6) or, for process pools, when the task is sent (X7).
    pub(crate) fn set_running(&self) -> Start {
        match self
            .status
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Start::Run,
            Err(_) => Start::Skip,
        }
    }

    /// Completes the future with `outcome` unless it already ended (F4: the
    /// first outcome wins). Allowed from PENDING too, to fail queued work
    /// (F5). `handle` makes a temporary handle for the callbacks, and is only
    /// called when there are callbacks. Returns whether this call completed it.
    pub(crate) fn complete(
        &self,
        outcome: Result<T, Error>,
        handle: impl FnOnce() -> super::Future<T>,
    ) -> bool {
        let mut w = lock(&self.waiters);
        if self.is_terminal() {
            return false;
        }
        w.failed = outcome.is_err();
        let ending = if w.failed {
            Ending::Failed
        } else {
            Ending::Value
        };
        // SAFETY: we hold the lock and the status is not yet FINISHED, so no
        // reader or other writer exists (slot rule 1).
        unsafe { self.outcome.write(outcome) };
        self.status.store(FINISHED, Ordering::Release);
        self.finish(w, ending, |cbs| {
            let h = handle();
            run_callbacks(&h, cbs);
        });
        true
    }

    /// PENDING → CANCELLED. Returns true if the future is (now or already)
    /// cancelled, false if it is running or finished (X1-X3). `handle` is the
    /// caller's own handle, passed to callbacks.
    pub(crate) fn cancel(&self, handle: &super::Future<T>) -> bool {
        let w = lock(&self.waiters);
        match self
            .status
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(now) => return now == CANCELLED,
        }
        self.finish(w, Ending::Cancelled, |cbs| run_callbacks(handle, cbs));
        true
    }

    /// Hands the terminal state to everyone waiting, after releasing the lock.
    fn finish(
        &self,
        mut w: crate::sync::MutexGuard<'_, Waiters<T>>,
        ending: Ending,
        run: impl FnOnce(Vec<Callback<T>>),
    ) {
        let callbacks = std::mem::take(&mut w.callbacks);
        let watchers = std::mem::take(&mut w.watchers);
        let wakers = std::mem::take(&mut w.wakers);
        let blocked = w.blocked > 0;
        w.callbacks_running = !callbacks.is_empty();
        drop(w);
        if blocked {
            self.cond.notify_all();
        }
        for (watcher, key) in watchers {
            watcher.notify(key, ending);
        }
        for waker in wakers {
            waker.wake();
        }
        if !callbacks.is_empty() {
            run(callbacks);
            let mut w = lock(&self.waiters);
            w.callbacks_running = false;
            let wakers = std::mem::take(&mut w.wakers);
            let blocked = w.blocked > 0;
            drop(w);
            if blocked {
                self.cond.notify_all();
            }
            for waker in wakers {
                waker.wake();
            }
        }
    }

    /// Queues `cb` to run at completion, or returns it if the future already
    /// ended, in which case the caller runs it at once on its own thread (C2).
    pub(crate) fn add_callback(&self, cb: Callback<T>) -> Option<Callback<T>> {
        let mut w = lock(&self.waiters);
        if self.is_terminal() {
            return Some(cb);
        }
        w.callbacks.push(cb);
        None
    }

    /// Registers a watcher; returns the ending instead if already ended.
    pub(crate) fn watch(&self, watcher: &Arc<dyn Watcher>, key: usize) -> Option<Ending> {
        let mut w = lock(&self.waiters);
        if let Some(e) = self.ending_locked(&w) {
            return Some(e);
        }
        w.watchers.push((Arc::clone(watcher), key));
        None
    }

    /// Removes a watcher registered with [`watch`](Self::watch) (A6).
    pub(crate) fn unwatch(&self, watcher: &Arc<dyn Watcher>) {
        let mut w = lock(&self.waiters);
        w.watchers
            .retain(|(x, _)| !std::ptr::addr_eq(Arc::as_ptr(x), Arc::as_ptr(watcher)));
    }

    fn ending_locked(&self, w: &Waiters<T>) -> Option<Ending> {
        match self.status() {
            FINISHED if w.failed => Some(Ending::Failed),
            FINISHED => Some(Ending::Value),
            CANCELLED => Some(Ending::Cancelled),
            _ => None,
        }
    }

    /// Blocks until the future ends (and, with `settled`, until its
    /// callbacks have run too) or the deadline passes. Returns whether it
    /// ended. A pool worker helps run queued tasks while it waits (T10).
    pub(crate) fn wait_until(&self, deadline: Option<Instant>, settled: bool) -> bool {
        let ready = |w: &Waiters<T>| self.is_terminal() && !(settled && w.callbacks_running);
        if self.is_terminal() && !settled {
            return true;
        }
        #[cfg(not(cf_loom))]
        if !self.is_terminal() {
            crate::thread::help_while_waiting(self, deadline);
        }
        let mut w = lock(&self.waiters);
        w.blocked += 1;
        let ok = loop {
            if ready(&w) {
                break true;
            }
            match crate::sync::wait_deadline(&self.cond, w, deadline) {
                Ok(g) => w = g,
                Err(g) => {
                    w = g;
                    break false;
                }
            }
        };
        w.blocked -= 1;
        ok
    }

    /// Registers `waker` to be woken when the future ends (or, with
    /// `settled`, when its callbacks are done). Returns true if that already
    /// happened, in which case nothing is registered.
    pub(crate) fn register_waker(&self, waker: &Waker, settled: bool) -> bool {
        let mut w = lock(&self.waiters);
        if self.is_terminal() && !(settled && w.callbacks_running) {
            return true;
        }
        if !w.wakers.iter().any(|x| x.will_wake(waker)) {
            w.wakers.push(waker.clone());
        }
        false
    }

    /// The outcome, borrowed. `None` if cancelled; `Some(None)` if the value
    /// was taken.
    ///
    /// Call only after the status is terminal; the borrow must be tied to a
    /// `&Future` handle (slot rule 2).
    pub(crate) fn outcome(&self) -> Option<Option<&Result<T, Error>>> {
        match self.status() {
            // SAFETY: FINISHED was observed with Acquire; the borrow is tied
            // to the caller's `&Future`, so `take` (which needs the handle by
            // value) cannot run while it lives (slot rules 2 and 3).
            FINISHED => Some(unsafe { self.outcome.get() }),
            _ => None,
        }
    }

    /// Moves the outcome out. Call only from the owner of the only handle,
    /// by value, after `wait_until(_, settled = true)` returned true.
    pub(crate) fn take_outcome(&self) -> Result<T, Error> {
        match self.status() {
            // SAFETY: FINISHED was observed with Acquire, callbacks are done
            // (the caller waited with `settled`), and the caller owns the
            // only handle by value, so no borrow exists (slot rule 3).
            FINISHED => unsafe { self.outcome.take() }.unwrap_or(Err(Error::AlreadyTaken)),
            _ => Err(Error::Cancelled),
        }
    }
}

/// Runs callbacks in the order they were added (C4), each under
/// `catch_unwind`: a panicking callback is logged and the rest still run
/// (C5, C6, decision 7). Each callback is dropped right after it runs, so its
/// captures are released (C8).
pub(crate) fn run_callbacks<T>(fut: &super::Future<T>, callbacks: Vec<Callback<T>>) {
    for cb in callbacks {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(fut)));
        if let Err(payload) = r {
            log::error!(
                target: "concurrent_futures",
                "exception calling callback for {:?}: {}",
                fut,
                crate::error::panic_message(payload.as_ref())
            );
        }
    }
}
