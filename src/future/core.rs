//! The completion state machine behind every [`Future`].
//!
//! ```text
//! PENDING ──set_running───────▶ RUNNING ──complete──▶ FINISHED
//!    │ ◀──set_pending_again (taken back unstarted)─┤     ▲
//!    ├──complete (fail queued work, F5)──────────────────┘
//!    └──cancel──▶ CANCELLED ◀──────────────────────┘ cancel, only if STOPPABLE
//! ```
//!
//! A running task cannot be cancelled (X2), unless its executor can stop it
//! and was asked to: a process pool built with `kill_on_cancel` marks the
//! tasks it sends `STOPPABLE` and watches them; `cancel()` then ends the
//! future at once, and the pool kills the worker running the task
//! (CONFORMANCE.md decision 4).
//!
//! The status lives in an atomic so `done()`, `running()` and the
//! `PENDING → RUNNING` step need no lock. Reaching a terminal state
//! (`FINISHED` or `CANCELLED`) happens under the lock, because it must hand
//! over, atomically with the status change, everything that waits for it:
//! callbacks, `wait`/`as_completed` watchers, async wakers and threads blocked
//! in `result()` (F6). Everything it hands over runs after the lock is
//! released, so a callback may call back into the same future (C7).
//!
//! A blocked thread is one more entry of that waiter list, woken with
//! `unpark`, rather than a condition variable in every future: the future
//! stays small (issue 4's memory budget), and completing a future nobody
//! blocks on makes no system call.
//!
//! Beside the state, the status word carries one hint, `AWAITED`: somebody
//! started waiting for the future before it ended. Completing swaps it out
//! and tells the completing thread, so an idle pool worker knows whether a
//! caller is waiting on results right now (see the `spin` module).
//!
//! Cancellation is terminal and notifies at once: there is no CPython-style
//! `CANCELLED` vs `CANCELLED_AND_NOTIFIED` split, so `done()` and `wait()`
//! always agree (CONFORMANCE.md decision 1, PP7).

use std::borrow::Borrow;
use std::task::Waker;

use super::slot::Slot;
use crate::Error;
use crate::sync::{Arc, Mutex, Ordering, Thread, lock};

pub(crate) const PENDING: usize = 0;
pub(crate) const RUNNING: usize = 1;
pub(crate) const FINISHED: usize = 2;
pub(crate) const CANCELLED: usize = 3;
/// The low bits of `status` hold one of the four states above.
const STATE: usize = 3;
/// Set with FINISHED or CANCELLED while the completing thread still runs
/// done-callbacks (which borrow the value through a temporary handle); the
/// owner may move the value out only once it is clear.
const CALLBACKS_RUNNING: usize = 4;
/// A hint, set when some thread, async task, callback or `wait`/
/// `as_completed` started waiting for the future before it ended: whoever
/// runs the task learns that a caller is waiting on results right now, so
/// its next idle moment should watch for work closely (see `spin`). It may
/// be set in any state; every reader of the state masks it off, and
/// completing the future clears it.
const AWAITED: usize = 8;
/// Set by an executor that stops a running task when its future is
/// cancelled (see the module docs): `cancel()` succeeds in RUNNING too.
const STOPPABLE: usize = 16;
/// Set at creation on a future that a task's end completes: a task's own
/// future, or a result a pool makes ready when its task ends (`Pool`'s
/// `AsyncResult`). A pool worker waiting on such a future may run the
/// waiting task's subtasks meanwhile (fork-join); on any other (a user's
/// `Promise`, fed from who knows where) it must not (see
/// `thread::worker::help_while_waiting`).
const TASK_RESULT: usize = 32;

/// `SUBMIT_HINTS` bit: this thread's last dealing with futures was a wait
/// (see [`Core::new`]).
#[cfg(not(cf_loom))]
const JUST_WAITED: u8 = 1;
/// `SUBMIT_HINTS` bit: this thread is a thread-pool worker, so a task it
/// submits is presumed awaited (fork-join waits for its subtasks).
#[cfg(not(cf_loom))]
const IN_POOL_WORKER: u8 = 2;

#[cfg(not(cf_loom))]
thread_local! {
    /// Why a future this thread makes should start out AWAITED, as bits:
    /// one thread-local read per submitted task.
    static SUBMIT_HINTS: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as a pool worker (see `IN_POOL_WORKER`).
#[cfg(not(cf_loom))]
pub(crate) fn presume_nested_submits_awaited() {
    SUBMIT_HINTS.with(|h| h.set(h.get() | IN_POOL_WORKER));
}

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

/// One party waiting for the future to end. Kept in one list (most futures
/// have none, a few have one): a `ThinVec`, one word that allocates only on
/// the first push, which keeps a task small (issue 4's memory budget).
enum Waiter<T> {
    Callback(Callback<T>),
    Watcher(Arc<dyn Watcher>, usize),
    /// An async task, under the key of the handle that registered it (see
    /// [`Core::register_waker`]).
    Waker(usize, Waker),
    /// A thread blocked in `wait_until`, parked until unparked.
    Thread(Thread),
}

type Waiters<T> = thin_vec::ThinVec<Waiter<T>>;

/// The shared completion state of one future.
pub(crate) struct Core<T> {
    status: crate::sync::AtomicUsize,
    waiters: Mutex<Waiters<T>>,
    /// The error is boxed: it is rare, and a 56-byte `Error` inline would
    /// make every task bigger.
    outcome: Slot<Result<T, Box<Error>>>,
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
    /// A pending future. It starts out marked AWAITED when the creating
    /// thread's last dealing with futures was a wait (a thread in a
    /// submit-then-wait loop is presumed to wait for this one too, even if
    /// the task ends before the caller gets to `result()`), or when it is a
    /// pool worker (a task submitting subtasks waits for them: fork-join).
    pub(crate) fn new() -> Self {
        Self::with_bits(0)
    }

    /// A pending future whose task is for the thread pool with id `pool`
    /// (0: none; see [`is_queued_in`](Self::is_queued_in)). Recorded here,
    /// at creation, where it costs nothing: once the task is shared, writing
    /// it would take an atomic read-modify-write per submitted task.
    pub(crate) fn for_pool(pool: u64) -> Self {
        Self::with_bits(pool_tag(pool) | TASK_RESULT)
    }

    fn with_bits(bits: usize) -> Self {
        #[cfg(not(cf_loom))]
        let hint = if SUBMIT_HINTS.with(|h| h.replace(h.get() & !JUST_WAITED)) != 0 {
            AWAITED
        } else {
            0
        };
        #[cfg(cf_loom)]
        let hint = 0;
        Core {
            status: crate::sync::AtomicUsize::new(PENDING | hint | bits),
            waiters: Mutex::new(thin_vec::ThinVec::new()),
            outcome: Slot::new(),
        }
    }

    pub(crate) fn status(&self) -> usize {
        self.status.load(Ordering::Acquire) & STATE
    }

    /// Terminal, and no callback is running any more.
    fn settled(&self) -> bool {
        let s = self.status.load(Ordering::Acquire);
        s & STATE >= FINISHED && s & CALLBACKS_RUNNING == 0
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.status() >= FINISHED
    }

    /// PENDING → RUNNING, lock-free. Executors call it when a worker takes
    /// the task (X6) or, for process pools, when the task is sent (X7).
    pub(crate) fn set_running(&self) -> Start {
        let mut s = self.status.load(Ordering::Acquire);
        loop {
            if s & STATE != PENDING {
                return Start::Skip;
            }
            match self.status.compare_exchange(
                s,
                (s & !STATE) | RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Start::Run,
                // Only the AWAITED hint can have changed under us, or the
                // state left PENDING (then the next round skips).
                Err(now) => s = now,
            }
        }
    }

    /// RUNNING → PENDING for a task sent ahead to a worker (X7) and taken
    /// back unstarted (its worker died), so that it reports not running and
    /// a cancel of queued work (a dropped map's) ends it. A `STOPPABLE` one
    /// keeps the flag. False if it did not go back (it ended).
    pub(crate) fn set_pending_again(&self) -> bool {
        let mut s = self.status.load(Ordering::Acquire);
        loop {
            if s & STATE != RUNNING {
                return false;
            }
            match self.status.compare_exchange(
                s,
                (s & !STATE) | PENDING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                // Only the AWAITED hint can have changed under us, or the
                // state left RUNNING (then the next round says so).
                Err(now) => s = now,
            }
        }
    }

    /// Lets `cancel()` end the future while it runs: the executor stops
    /// the task itself, told by a watcher (see `STOPPABLE`). Set before the
    /// task starts.
    pub(crate) fn allow_cancel_while_running(&self) {
        self.status.fetch_or(STOPPABLE, Ordering::AcqRel);
    }

    /// Registers `watcher` to be told when the future ends, under `key`,
    /// without the AWAITED hint [`watch`](Self::watch) sets (an executor
    /// watching its own task is no caller waiting). False if it has ended
    /// already.
    pub(crate) fn on_end(&self, watcher: &Arc<dyn Watcher>, key: usize) -> bool {
        let mut w = lock(&self.waiters);
        if self.is_terminal() {
            return false;
        }
        w.push(Waiter::Watcher(Arc::clone(watcher), key));
        true
    }

    /// Whether the future is still pending or running and somebody may
    /// have waited for it (the `AWAITED` hint: set by every wait and
    /// waker registration, and presumed for some new futures): only then
    /// can its list hold a waker of the owning handle.
    pub(crate) fn may_hold_waiters(&self) -> bool {
        let s = self.status.load(Ordering::Acquire);
        s & AWAITED != 0 && !matches!(s & STATE, FINISHED | CANCELLED)
    }

    /// Records that a caller is about to wait for this unfinished future.
    fn mark_awaited(&self) {
        if self.status.load(Ordering::Relaxed) & AWAITED == 0 {
            self.status.fetch_or(AWAITED, Ordering::Relaxed);
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
        let w = lock(&self.waiters);
        if self.is_terminal() {
            return false;
        }
        let ending = if outcome.is_err() {
            Ending::Failed
        } else {
            Ending::Value
        };
        // SAFETY: we hold the lock and the status is not yet FINISHED, so no
        // reader or other writer exists (slot rule 1).
        unsafe { self.outcome.write(outcome.map_err(Box::new)) };
        // A swap, not a store: a waiter may be setting the AWAITED hint
        // outside the lock, and the hint is dropped here with the rest.
        let before = self
            .status
            .swap(FINISHED | callbacks_flag(&w), Ordering::AcqRel);
        crate::spin::note_task_awaited(before & AWAITED != 0);
        self.finish(w, ending, |cbs| {
            let h = handle();
            run_callbacks(&h, cbs);
        });
        true
    }

    /// PENDING → CANCELLED, or RUNNING → CANCELLED when `STOPPABLE`.
    /// Returns true if the future is (now or already) cancelled, false if it
    /// is running (and not stoppable) or finished (X1-X3). `handle` gives
    /// the handle passed to callbacks; it is called only once this cancel
    /// has ended the future, so that a handle made for them is never
    /// dropped on a future still running (see [`super::cancel_shared`]).
    pub(crate) fn cancel<H: Borrow<super::Future<T>>>(&self, handle: impl FnOnce() -> H) -> bool {
        self.cancel_if(handle, true)
    }

    /// [`cancel`](Self::cancel) of a future that has not started only,
    /// whatever its executor could stop: a map dropped or past its deadline
    /// leaves running tasks to finish (M4, M7), also on a process pool that
    /// kills running tasks on `cancel()`.
    pub(crate) fn cancel_pending<H: Borrow<super::Future<T>>>(
        &self,
        handle: impl FnOnce() -> H,
    ) -> bool {
        self.cancel_if(handle, false)
    }

    fn cancel_if<H: Borrow<super::Future<T>>>(
        &self,
        handle: impl FnOnce() -> H,
        running_too: bool,
    ) -> bool {
        let w = lock(&self.waiters);
        let to = CANCELLED | callbacks_flag(&w);
        let mut s = self.status.load(Ordering::Acquire);
        loop {
            let cancellable =
                s & STATE == PENDING || (running_too && s & STATE == RUNNING && s & STOPPABLE != 0);
            if !cancellable {
                return s & STATE == CANCELLED;
            }
            // The AWAITED hint is dropped: the future has ended.
            match self
                .status
                .compare_exchange(s, to, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        self.finish(w, Ending::Cancelled, |cbs| {
            run_callbacks(handle().borrow(), cbs)
        });
        true
    }

    /// Hands the terminal state to everyone waiting, after releasing the lock.
    /// The caller set the status (with `CALLBACKS_RUNNING` if there are
    /// callbacks) under the lock.
    fn finish(
        &self,
        mut w: crate::sync::MutexGuard<'_, Waiters<T>>,
        ending: Ending,
        run: impl FnOnce(Vec<Callback<T>>),
    ) {
        let list = std::mem::take(&mut *w);
        drop(w);
        let mut callbacks = Vec::new();
        // The owner's `.await` takes the value only once the callbacks have
        // run: woken before them, it would poll `Pending` and be woken again
        // after them (found by review). It is woken once, after them.
        let mut owner = None;
        for waiter in list {
            match waiter {
                Waiter::Thread(thread) => thread.unpark(),
                Waiter::Watcher(watcher, key) => watcher.notify(key, ending),
                Waiter::Waker(super::OWNER_KEY, waker) => owner = Some(waker),
                Waiter::Waker(_, waker) => wake_caught(waker),
                Waiter::Callback(cb) => callbacks.push(cb),
            }
        }
        if callbacks.is_empty() {
            if let Some(waker) = owner {
                wake_caught(waker);
            }
        } else {
            let running = RunningCallbacks::enter(self.addr());
            crate::thread::as_callbacks(|| run(callbacks));
            drop(running);
            let mut w = lock(&self.waiters);
            self.status.fetch_and(!CALLBACKS_RUNNING, Ordering::Release);
            let list = std::mem::take(&mut *w);
            drop(w);
            // Only threads and wakers can have been added meanwhile
            // (callbacks and watchers added after the end are run or
            // answered at once); an owner's waker registered again
            // replaces the one held back.
            for waiter in list {
                match waiter {
                    Waiter::Thread(thread) => thread.unpark(),
                    Waiter::Waker(key, waker) => {
                        if key == super::OWNER_KEY {
                            owner = None;
                        }
                        wake_caught(waker)
                    }
                    _ => {}
                }
            }
            if let Some(waker) = owner {
                wake_caught(waker);
            }
        }
    }

    /// This core's address: its task's identity while it lives.
    pub(crate) fn addr(&self) -> usize {
        self as *const Self as usize
    }

    /// Whether this thread is running this future's done-callbacks right
    /// now: moving the value out here would wait for them, that is, for
    /// itself.
    pub(crate) fn runs_callbacks_here(&self) -> bool {
        callbacks::running_those_of(self.addr())
    }

    /// Queues `cb` to run at completion, or returns it if the future already
    /// ended, in which case the caller runs it at once on its own thread (C2).
    pub(crate) fn add_callback(&self, cb: Callback<T>) -> Option<Callback<T>> {
        let mut w = lock(&self.waiters);
        if self.is_terminal() {
            return Some(cb);
        }
        self.mark_awaited();
        w.push(Waiter::Callback(cb));
        None
    }

    /// Registers a watcher; returns the ending instead if already ended.
    pub(crate) fn watch(&self, watcher: &Arc<dyn Watcher>, key: usize) -> Option<Ending> {
        let mut w = lock(&self.waiters);
        if let Some(e) = self.ending() {
            return Some(e);
        }
        self.mark_awaited();
        w.push(Waiter::Watcher(Arc::clone(watcher), key));
        None
    }

    /// Removes a watcher registered with [`watch`](Self::watch) (A6).
    pub(crate) fn unwatch(&self, watcher: &Arc<dyn Watcher>) {
        let mut w = lock(&self.waiters);
        w.retain(|x| match x {
            Waiter::Watcher(x, _) => !std::ptr::addr_eq(Arc::as_ptr(x), Arc::as_ptr(watcher)),
            _ => true,
        });
    }

    /// Watchers registered now (tests of A6).
    #[cfg(all(test, not(cf_loom)))]
    pub(crate) fn watchers(&self) -> usize {
        lock(&self.waiters)
            .iter()
            .filter(|w| matches!(w, Waiter::Watcher(..)))
            .count()
    }

    /// The ending, if ended. Callers hold a `&Future` borrow (slot rule 2).
    fn ending(&self) -> Option<Ending> {
        match self.status() {
            // SAFETY: FINISHED was observed with Acquire and we hold a
            // borrow of a handle (the caller's), so no take can run (slot
            // rules 2 and 3).
            FINISHED => match unsafe { self.outcome.get() } {
                Some(Err(_)) => Some(Ending::Failed),
                _ => Some(Ending::Value),
            },
            CANCELLED => Some(Ending::Cancelled),
            _ => None,
        }
    }

    /// The outcome, borrowed. `None` if cancelled; `Some(None)` if the value
    /// was taken.
    ///
    /// Call only after the status is terminal; the borrow must be tied to a
    /// `&Future` handle (slot rule 2).
    pub(crate) fn outcome(&self) -> Option<Option<&Result<T, Box<Error>>>> {
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
            FINISHED => match unsafe { self.outcome.take() } {
                Some(outcome) => outcome.map_err(|e| *e),
                None => Err(Error::AlreadyTaken),
            },
            _ => Err(Error::Cancelled),
        }
    }
}

/// Wakes an async task. A `Waker` is user code (the runtime's): one that
/// panics must not unwind out of the completing thread, which may be a pool
/// worker, and must not keep the callbacks from running.
pub(crate) fn wake_caught(waker: Waker) {
    // A runtime's wake is user code: on a process pool's thread it sees
    // SIGPIPE as the program set it (see `process::sigpipe`).
    #[cfg(all(unix, not(cf_loom)))]
    let wake = || crate::process::sigpipe::as_user_code(|| waker.wake());
    #[cfg(not(all(unix, not(cf_loom))))]
    let wake = || waker.wake();
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(wake)) {
        let message = crate::error::take_panic_message(payload);
        crate::error::report!(error, "a Waker panicked when its future ended: {message}");
    }
}

/// `CALLBACKS_RUNNING` if callbacks are queued (so the owner waits for them
/// before moving the value out), else 0.
fn callbacks_flag<T>(w: &Waiters<T>) -> usize {
    if w.iter().any(|x| matches!(x, Waiter::Callback(_))) {
        CALLBACKS_RUNNING
    } else {
        0
    }
}

#[path = "core_callbacks.rs"]
mod callbacks;
use callbacks::RunningCallbacks;
pub(crate) use callbacks::{in_callbacks, run_callbacks};

#[path = "core_waiting.rs"]
mod waiting;

#[path = "core_pools.rs"]
mod pools;
pub(crate) use pools::pool_id_fits;
use pools::pool_tag;

#[cfg(all(test, not(cf_loom)))]
#[path = "core_tests.rs"]
mod tests;
