//! [`Semaphore`] and [`Event`]: Python's `threading.Semaphore`,
//! `threading.BoundedSemaphore` and `threading.Event`, for threads.
//!
//! The standard library has `Mutex`, `Condvar` and `Barrier`, but not these
//! two, and they are the ones Python code reaches for most often:
//!
//! * a **semaphore** holds a number of permits. [`acquire`] takes one,
//!   waiting while there are none; [`release`] gives one back and wakes one
//!   waiting thread. Use it to bound how many threads do something at once
//!   (open connections, requests in flight, memory-heavy steps), with
//!   [`acquire_guard`] so that the permit comes back even when the holder
//!   returns early or panics.
//! * an **event** is a flag that threads wait on. [`set`] raises it and wakes
//!   every waiter; while it is set, [`wait`] returns at once; [`clear`]
//!   lowers it again. Use it for "go", "stop" or "ready" signals that any
//!   number of threads watch.
//!
//! ```
//! use concurrent_futures::{Event, Semaphore};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! let downloads = Semaphore::new(2); // at most two at a time
//! let start = Event::new();
//! let busy = AtomicUsize::new(0);
//!
//! std::thread::scope(|s| {
//!     for _ in 0..6 {
//!         s.spawn(|| {
//!             start.wait(None); // every worker waits for the signal
//!             let _permit = downloads.acquire_guard(None).unwrap();
//!             let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
//!             assert!(now <= 2, "never more than two at once");
//!             busy.fetch_sub(1, Ordering::SeqCst);
//!             // `_permit` is dropped here: the permit goes back
//!         });
//!     }
//!     start.set(); // wakes all six
//! });
//! assert_eq!(downloads.available_permits(), 2);
//! ```
//!
//! # From Python
//!
//! | Python `threading` | Rust |
//! |---|---|
//! | `Semaphore(value=1)` | [`Semaphore::new(value)`](Semaphore::new), [`Semaphore::default()`](Semaphore::default) |
//! | `BoundedSemaphore(value=1)` | [`Semaphore::bounded(value)`](Semaphore::bounded) |
//! | `sem.acquire()` | `sem.acquire(None) -> bool` (always `true`) |
//! | `sem.acquire(timeout=t)` | `sem.acquire(Some(t)) -> bool` |
//! | `sem.acquire(blocking=False)` | [`sem.try_acquire()`](Semaphore::try_acquire), or `acquire(Some(Duration::ZERO))` |
//! | `with sem:` | `let _permit = sem.acquire_guard(None);` (an `Option`, `None` only on timeout) |
//! | `sem.release()`, `sem.release(n)` | [`sem.release()`](Semaphore::release), [`sem.release_n(n)`](Semaphore::release_n) `-> Result<(), Error>` |
//! | `ValueError: Semaphore released too many times` | `Err(Error::InvalidCall(..))` from a bounded semaphore; the count is left unchanged |
//! | `sem._value` | [`sem.available_permits()`](Semaphore::available_permits) |
//! | `Event()`, `ev.set()`, `ev.clear()`, `ev.is_set()` | [`Event::new()`](Event::new), [`set`], [`clear`], [`is_set`](Event::is_set) |
//! | `ev.wait(timeout=None) -> bool` | [`ev.wait(timeout) -> bool`](Event::wait), same meaning |
//!
//! The module is private; [`Semaphore`] and [`Event`] are re-exported at
//! the crate root, and their documentation carries the rest: fairness,
//! timeouts and panics, and what to use across processes.
//!
//! [`acquire`]: Semaphore::acquire
//! [`try_acquire`]: Semaphore::try_acquire
//! [`release`]: Semaphore::release
//! [`acquire_guard`]: Semaphore::acquire_guard
//! [`set`]: Event::set
//! [`clear`]: Event::clear
//! [`wait`]: Event::wait

mod cancel_token;
mod event;
mod semaphore;

pub use cancel_token::CancelToken;
pub use event::Event;
pub use semaphore::{Semaphore, SemaphoreGuard};

#[cfg(test)]
use crate::sync::lock;

use crate::sync::deadline;

#[cfg(all(test, not(cf_loom)))]
mod tests;

#[cfg(all(test, cf_loom))]
mod loom_tests;
