//! [`Semaphore`] and its RAII [`SemaphoreGuard`] (see the parent module for
//! the tour and the Python names).

use std::fmt;
use std::time::Duration;

use super::deadline;
use crate::Error;
use crate::sync::{Condvar, Mutex, lock, wait_deadline};

/// A counting semaphore for threads: Python's `threading.Semaphore`, and
/// with [`Semaphore::bounded`] its `BoundedSemaphore`.
///
/// Share it by reference (scoped threads) or in an `Arc`.
///
/// ```
/// use concurrent_futures::Semaphore;
/// use std::sync::Arc;
///
/// let sem = Arc::new(Semaphore::new(0));
/// let sem2 = Arc::clone(&sem);
/// let t = std::thread::spawn(move || sem2.acquire(None)); // waits
/// sem.release()?;                                        // wakes it
/// assert!(t.join().unwrap());
/// assert_eq!(sem.available_permits(), 0);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
///
/// # Fairness, timeouts, panics
///
/// These notes hold for [`Event`](super::Event) too.
///
/// * **Not FIFO-fair.** A released permit goes to whichever thread takes the
///   lock first: a thread calling [`acquire`] or [`try_acquire`] right then
///   may take it before the longest waiter (as CPython's, which also makes
///   no ordering promise). Under steady contention a waiter can lose several
///   races in a row; if you need strict arrival order, hand out work through
///   a queue instead.
/// * **No lost wake-ups.** Each [`release`] wakes one waiter, [`set`] wakes
///   all of them, and every waiter re-checks the count or flag under the lock
///   before it sleeps and after it wakes, so a release or set racing a
///   waiter is never missed (checked with loom over every interleaving).
/// * **Timeouts** are `Option<Duration>`: `None` waits as long as it takes,
///   `Some(Duration::ZERO)` only looks. A timeout too large to represent as a
///   deadline waits forever. A waiter whose time runs out just as a permit or
///   the flag arrives still takes it and returns `true`.
/// * **Panics**: no user code runs inside `Semaphore` or [`Event`](super::Event), so a panicking thread
///   never leaves one inconsistent, and there is no poisoning. A
///   [`SemaphoreGuard`] gives its permit back during unwinding too.
///
/// # Across processes
///
/// `Semaphore` and [`Event`](super::Event) work between the threads of one process only. Worker processes and
/// [`Process`] children do not share memory with the parent: they are fresh
/// executions of this program (re-exec'd, never forked), so a semaphore or
/// event in the parent is simply not there in a child. Between processes,
/// communicate instead of sharing:
///
/// * to signal a child (an event), pass it a [`Receiver`] from [`pipe()`] in
///   its argument; its `recv(timeout)` is the `wait`, and the parent's
///   `send` is the `set`;
/// * to collect from children, or to let them report "ready", give them
///   [`Queue::producer`] ends and `get` in the parent;
/// * to bound how many processes work at once (a semaphore), let a
///   [`Pool`] or [`ProcessPoolExecutor`] with that many workers run the
///   work, and wait on its results.
///
/// Shared-memory locks (Python's `multiprocessing.Semaphore`, `Lock`,
/// `Event`) are not offered yet: since our processes share no memory, a
/// cross-process semaphore would need a named POSIX semaphore (`sem_open`)
/// or a futex in a shared mapping set up for both sides, plus an answer for
/// a process that dies while holding a permit. We do not provide that yet.
///
/// [`acquire`]: Semaphore::acquire
/// [`try_acquire`]: Semaphore::try_acquire
/// [`release`]: Semaphore::release
/// [`set`]: super::Event::set
/// [`Process`]: crate::Process
/// [`Receiver`]: crate::Receiver
/// [`pipe()`]: crate::pipe
/// [`Queue::producer`]: crate::Queue::producer
/// [`Pool`]: crate::Pool
/// [`ProcessPoolExecutor`]: crate::ProcessPoolExecutor
pub struct Semaphore {
    /// The number of available permits.
    permits: Mutex<usize>,
    /// Signalled once per released permit.
    available: Condvar,
    /// The permit count a release may not exceed ([`Semaphore::bounded`]).
    bound: Option<usize>,
}

impl Semaphore {
    /// A semaphore with `permits` available permits (Python's
    /// `Semaphore(value)`). Zero is allowed: every `acquire` then waits for
    /// a `release`.
    ///
    /// Releasing more than was acquired is allowed and raises the count, as
    /// in Python; use [`Semaphore::bounded`] to catch it as an error.
    ///
    /// ```
    /// use concurrent_futures::Semaphore;
    ///
    /// let sem = Semaphore::new(3);
    /// assert_eq!(sem.available_permits(), 3);
    /// ```
    pub fn new(permits: usize) -> Semaphore {
        Semaphore {
            permits: Mutex::new(permits),
            available: Condvar::new(),
            bound: None,
        }
    }

    /// A bounded semaphore (Python's `BoundedSemaphore(value)`): starts with
    /// `permits` permits, and a release that would raise the count above
    /// `permits` fails with [`Error::InvalidCall`] and changes nothing.
    /// It catches the bug of releasing a permit twice.
    ///
    /// ```
    /// use concurrent_futures::{Error, Semaphore};
    ///
    /// let sem = Semaphore::bounded(1);
    /// assert!(sem.try_acquire());
    /// sem.release()?;
    /// assert!(matches!(sem.release(), Err(Error::InvalidCall(_))));
    /// assert_eq!(sem.available_permits(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn bounded(permits: usize) -> Semaphore {
        Semaphore {
            bound: Some(permits),
            ..Semaphore::new(permits)
        }
    }

    /// Takes one permit, waiting up to `timeout` (`None`: as long as it
    /// takes) for one to be released. Returns whether a permit was taken,
    /// as Python's `acquire(timeout=...)`; with `None` it always returns
    /// `true`.
    ///
    /// The permit is yours to give back with [`release`](Self::release);
    /// prefer [`acquire_guard`](Self::acquire_guard), which gives it back
    /// on drop.
    ///
    /// ```
    /// use concurrent_futures::Semaphore;
    /// use std::time::Duration;
    ///
    /// let sem = Semaphore::new(1);
    /// assert!(sem.acquire(None));
    /// // Nobody will release: the timeout runs out.
    /// assert!(!sem.acquire(Some(Duration::from_millis(10))));
    /// sem.release()?;
    /// assert!(sem.acquire(Some(Duration::from_millis(10))));
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn acquire(&self, timeout: Option<Duration>) -> bool {
        let deadline = deadline(timeout);
        let mut permits = lock(&self.permits);
        loop {
            if *permits > 0 {
                *permits -= 1;
                return true;
            }
            permits = match wait_deadline(&self.available, permits, deadline) {
                Ok(g) => g,
                // The deadline passed and the count, checked under this same
                // lock just above, is zero.
                Err(_) => return false,
            };
        }
    }

    /// Takes one permit if one is available, without waiting (Python's
    /// `acquire(blocking=False)`).
    ///
    /// ```
    /// use concurrent_futures::Semaphore;
    ///
    /// let sem = Semaphore::new(1);
    /// assert!(sem.try_acquire());
    /// assert!(!sem.try_acquire());
    /// ```
    pub fn try_acquire(&self) -> bool {
        let mut permits = lock(&self.permits);
        if *permits > 0 {
            *permits -= 1;
            true
        } else {
            false
        }
    }

    /// Takes one permit as [`acquire`](Self::acquire) does and returns a
    /// guard that gives it back when dropped (Python's `with sem:`), or
    /// `None` if `timeout` ran out first.
    ///
    /// ```
    /// use concurrent_futures::Semaphore;
    /// use std::time::Duration;
    ///
    /// let sem = Semaphore::new(1);
    /// {
    ///     let _permit = sem.acquire_guard(None).expect("no timeout");
    ///     assert_eq!(sem.available_permits(), 0);
    ///     assert!(sem.acquire_guard(Some(Duration::ZERO)).is_none());
    /// } // dropped: released
    /// assert_eq!(sem.available_permits(), 1);
    /// ```
    pub fn acquire_guard(&self, timeout: Option<Duration>) -> Option<SemaphoreGuard<'_>> {
        // Not `then_some`: a guard built eagerly would be dropped on timeout
        // and release a permit that was never taken.
        self.acquire(timeout)
            .then(|| SemaphoreGuard { semaphore: self })
    }

    /// Gives one permit back and wakes one waiting thread, if any (Python's
    /// `release()`).
    ///
    /// Fails with [`Error::InvalidCall`], changing nothing, when a
    /// [bounded](Self::bounded) semaphore would go above its bound
    /// (Python's `ValueError: Semaphore released too many times`), or when
    /// the count would overflow `usize`. On a semaphore made by
    /// [`new`](Self::new) it otherwise always succeeds, also without a
    /// matching `acquire` (raising the count, as in Python).
    ///
    /// ```
    /// use concurrent_futures::Semaphore;
    ///
    /// let sem = Semaphore::new(0);
    /// sem.release()?;
    /// sem.release()?;
    /// assert_eq!(sem.available_permits(), 2);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn release(&self) -> Result<(), Error> {
        self.release_n(1)
    }

    /// Gives `n` permits back at once and wakes up to `n` waiting threads
    /// (Python's `release(n)`). All or nothing: when the bound (or `usize`)
    /// would be exceeded, no permit is released and the error is
    /// [`Error::InvalidCall`]; `n == 0` is [`Error::InvalidConfig`], as
    /// Python's `ValueError: n must be one or more`.
    ///
    /// ```
    /// use concurrent_futures::Semaphore;
    ///
    /// let sem = Semaphore::bounded(3);
    /// for _ in 0..3 {
    ///     assert!(sem.try_acquire());
    /// }
    /// assert!(sem.release_n(4).is_err()); // would make 4 > 3
    /// assert_eq!(sem.available_permits(), 0);
    /// sem.release_n(3)?;
    /// assert_eq!(sem.available_permits(), 3);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn release_n(&self, n: usize) -> Result<(), Error> {
        if n == 0 {
            return Err(Error::InvalidConfig(
                "Semaphore::release_n: n must be one or more".to_owned(),
            ));
        }
        let mut permits = lock(&self.permits);
        let raised = permits.checked_add(n).filter(|&v| match self.bound {
            Some(bound) => v <= bound,
            None => true,
        });
        let Some(raised) = raised else {
            return Err(Error::InvalidCall(match self.bound {
                Some(bound) => format!(
                    "Semaphore released too many times: {} available + {n} released > bound {bound}",
                    *permits
                ),
                None => format!(
                    "Semaphore released too many times: {} available + {n} overflows usize",
                    *permits
                ),
            }));
        };
        *permits = raised;
        drop(permits);
        // Woken waiters re-check the count under the lock, so notifying after
        // unlocking cannot lose a permit; it only spares them waking into a
        // held lock.
        if n == 1 {
            self.available.notify_one();
        } else {
            self.available.notify_all();
        }
        Ok(())
    }

    /// The number of permits available right now (Python's `_value`). Only
    /// a snapshot: other threads may take or release permits the moment
    /// after.
    ///
    /// ```
    /// use concurrent_futures::Semaphore;
    ///
    /// let sem = Semaphore::new(2);
    /// let _a = sem.acquire_guard(None);
    /// assert_eq!(sem.available_permits(), 1);
    /// ```
    pub fn available_permits(&self) -> usize {
        *lock(&self.permits)
    }
}

impl Default for Semaphore {
    /// A semaphore with one permit, as Python's `Semaphore()`.
    fn default() -> Semaphore {
        Semaphore::new(1)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available_permits", &self.available_permits())
            .field("bound", &self.bound)
            .finish()
    }
}

/// One permit of a [`Semaphore`], given back when dropped (also while
/// unwinding from a panic). Made by [`Semaphore::acquire_guard`].
///
/// The drop cannot fail: on a [bounded](Semaphore::bounded) semaphore that
/// someone else already released above its bound, the guard's release is
/// refused like any other over-release and the count stays at the bound.
///
/// ```
/// use concurrent_futures::Semaphore;
///
/// let sem = Semaphore::new(1);
/// let result = std::panic::catch_unwind(|| {
///     let _permit = sem.acquire_guard(None);
///     panic!("the holder fails");
/// });
/// assert!(result.is_err());
/// assert_eq!(sem.available_permits(), 1, "given back while unwinding");
/// ```
#[must_use = "dropping the guard releases the permit at once"]
pub struct SemaphoreGuard<'a> {
    semaphore: &'a Semaphore,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Only a bounded semaphore over-released by someone else refuses
        // this; the count is then already at its bound.
        let _ = self.semaphore.release();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard")
            .field("semaphore", self.semaphore)
            .finish()
    }
}
