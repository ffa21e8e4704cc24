//! The write-once, read-many, take-once cell that holds a future's outcome.
//!
//! A future's value is written once by the thread that completes it, then
//! read by reference from any number of threads (`Future::result` returns
//! `&T`, so `T` need not be `Clone`), and finally may be *moved out* by the
//! one owner of the handle (`Future::into_result`, `.await`). No safe std
//! type does all three without a lock held across the borrow, so this is the
//! one `UnsafeCell` of the future. The rules that make it sound are enforced
//! by [`Core`](super::core::Core), which is the only user:
//!
//! 1. **write** happens once, while the core's lock is held and before the
//!    status becomes `FINISHED` (a `Release` store). No reader exists before
//!    that store, because readers wait for `FINISHED`.
//! 2. **get** happens only after observing `FINISHED` (an `Acquire` load or
//!    under the lock), and returns a borrow tied to a `&Future` handle.
//! 3. **take** happens only from the handle's owner, by value (so no borrow of
//!    that handle is alive), after the completing thread has finished running
//!    done-callbacks (the only other place a temporary handle, and so a
//!    borrow, can exist). `Future` is not `Clone`; other handles exist only as
//!    temporaries lent by reference to done-callbacks (while
//!    `CALLBACKS_RUNNING` is set), and none reaches user code owned.

#[cfg(cf_loom)]
use loom::cell::UnsafeCell;
#[cfg(not(cf_loom))]
use std::cell::UnsafeCell;

/// See the module docs for the protocol every caller follows.
pub(crate) struct Slot<T> {
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the slot moves a `T` between threads (written by the completing
// thread, taken by the owner), which needs `T: Send`.
unsafe impl<T: Send> Send for Slot<T> {}
// SAFETY: shared references to the `T` are handed to several threads at once
// (`result()` from many threads), which needs `T: Sync`; moving it needs
// `T: Send`. Mutation follows the protocol in the module docs.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot {
            value: UnsafeCell::new(None),
        }
    }

    /// Stores the outcome.
    ///
    /// # Safety
    /// Called at most once, before the status is published as `FINISHED`,
    /// with no concurrent `get` or `take` (rule 1).
    pub(crate) unsafe fn write(&self, v: T) {
        #[cfg(cf_loom)]
        // SAFETY: exclusive by the caller's contract (rule 1).
        self.value.with_mut(|p| unsafe { *p = Some(v) });
        #[cfg(not(cf_loom))]
        // SAFETY: exclusive by the caller's contract (rule 1).
        unsafe {
            *self.value.get() = Some(v)
        };
    }

    /// Borrows the outcome; `None` once it has been taken.
    ///
    /// # Safety
    /// The status was observed `FINISHED` with acquire ordering, and no
    /// `take` can run while the returned borrow lives (rules 2 and 3).
    pub(crate) unsafe fn get(&self) -> Option<&T> {
        #[cfg(cf_loom)]
        // SAFETY: no writer exists after publication (rules 1-3). The
        // borrow escapes `with`, so loom checks only this access; rule 3
        // orders every later read through it before any `take`.
        return self.value.with(|p| unsafe { (*p).as_ref() });
        #[cfg(not(cf_loom))]
        // SAFETY: no writer exists after publication (rules 1-3).
        unsafe {
            (*self.value.get()).as_ref()
        }
    }

    /// Moves the outcome out.
    ///
    /// # Safety
    /// The status was observed `FINISHED` with acquire ordering, callbacks
    /// have finished, and the caller owns the only handle (rule 3).
    pub(crate) unsafe fn take(&self) -> Option<T> {
        #[cfg(cf_loom)]
        // SAFETY: no other access can exist (rule 3).
        return self.value.with_mut(|p| unsafe { (*p).take() });
        #[cfg(not(cf_loom))]
        // SAFETY: no other access can exist (rule 3).
        unsafe {
            (*self.value.get()).take()
        }
    }
}

/// The outcome is dropped by whoever releases the future's last reference:
/// often a pool thread (a worker, a waiting worker running the task in
/// place, a process pool's reader), when the user dropped the handle before
/// the task ended. A value whose `Drop` panics must not take that thread
/// down (decision 7) nor fail the unrelated task it runs on top of, so the
/// panic is logged, as for a task's captures dropped unrun.
impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        // SAFETY: `&mut self`: no borrow of the value and no other access
        // can exist any more (rule 3 at its strongest).
        let value = unsafe { self.take() };
        crate::error::drop_caught(value, "a future's result");
    }
}
