//! [`Promise`]: the completing side of a [`Future`], for code that is not
//! an executor of this crate (your own executor, an event loop, tests).
//!
//! It is CPython's `Future()` constructor plus the methods its docs reserve
//! for "executor implementations and tests": `set_running_or_notify_cancel`,
//! `set_result`, `set_exception`.

use std::fmt;

use super::Future;
use super::core::{CANCELLED, Core, RUNNING, Start};
use crate::Error;
use crate::sync::Arc;

/// The completing side of a [`Future`] made by [`Promise::new`].
///
/// Dropping a `Promise` without completing it fails its future with
/// [`Error::Broken`], so the future still resolves.
///
/// ```
/// use concurrent_futures::{Error, Promise};
///
/// let (promise, future) = Promise::new();
/// assert_eq!(promise.set_running_or_notify_cancel(), Ok(true));
/// assert!(future.running());
/// promise.set_result(42).unwrap();
/// assert_eq!(future.result(None), Ok(&42));
/// // The first outcome wins (F4).
/// assert_eq!(promise.set_result(7), Err(Error::InvalidState("finished")));
/// ```
pub struct Promise<T: Send + Sync + 'static> {
    core: Arc<Core<T>>,
}

impl<T: Send + Sync + 'static> Promise<T> {
    /// A pending future and the promise that completes it.
    pub fn new() -> (Promise<T>, Future<T>) {
        Self::from_core(Core::new())
    }

    fn from_core(core: Core<T>) -> (Promise<T>, Future<T>) {
        let core = Arc::new(core);
        (Promise { core: core.clone() }, Future::from_shared(core))
    }

    /// Call before running the work, as CPython's executors do (F3):
    ///
    /// * PENDING → RUNNING: `Ok(true)`; run the work. The future can no
    ///   longer be cancelled.
    /// * Cancelled: `Ok(false)`; drop the work. Its waiters were notified
    ///   when it was cancelled (decision 1), so there is no separate
    ///   "cancelled and notified" state: a later call answers `Ok(false)`
    ///   again, where CPython raises.
    /// * Already running or finished: [`Error::InvalidState`] (`"running"`
    ///   or `"finished"`), where CPython raises `RuntimeError('Future in
    ///   unexpected state')`: a second call is a bug in the caller, not a
    ///   cancel, so it is not answered like one.
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// assert_eq!(promise.set_running_or_notify_cancel(), Ok(true));
    /// assert_eq!(
    ///     promise.set_running_or_notify_cancel(),
    ///     Err(Error::InvalidState("running"))
    /// );
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// assert!(future.cancel());
    /// assert_eq!(promise.set_running_or_notify_cancel(), Ok(false));
    /// ```
    pub fn set_running_or_notify_cancel(&self) -> Result<bool, Error> {
        match self.core.set_running() {
            Start::Run => Ok(true),
            Start::Skip => match self.core.status() {
                CANCELLED => Ok(false),
                RUNNING => Err(Error::InvalidState("running")),
                _ => Err(Error::InvalidState("finished")),
            },
        }
    }

    /// Completes the future with `value` (F5: allowed from PENDING too).
    /// [`Error::InvalidState`] if it already finished or was cancelled; the
    /// first outcome is kept (F4).
    pub fn set_result(&self, value: T) -> Result<(), Error> {
        self.complete(Ok(value))
    }

    /// Fails the future with `error` (F5). [`Error::InvalidState`] if it
    /// already finished or was cancelled (F4).
    pub fn set_exception(&self, error: Error) -> Result<(), Error> {
        self.complete(Err(error))
    }

    fn complete(&self, outcome: Result<T, Error>) -> Result<(), Error> {
        let core = self.core.clone();
        if self
            .core
            .complete(outcome, move || Future::from_shared(core))
        {
            Ok(())
        } else {
            Err(Error::InvalidState(match self.core.status() {
                CANCELLED => "cancelled",
                _ => "finished",
            }))
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("done", &self.core.is_terminal())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Drop for Promise<T> {
    fn drop(&mut self) {
        if !self.core.is_terminal() {
            let _ = self.set_exception(Error::Broken {
                executor: "promise",
                reason: "the Promise was dropped without completing its future".into(),
            });
        }
    }
}
