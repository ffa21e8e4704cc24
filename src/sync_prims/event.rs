//! [`Event`] (see the parent module for the tour and the Python names).

use std::fmt;
use std::time::{Duration, Instant};

use super::deadline;
use crate::sync::{Condvar, Mutex, lock, wait_deadline};

/// What an [`Event`] guards.
#[derive(Debug)]
pub(super) struct EventState {
    /// The flag.
    set: bool,
    /// Counts `set` calls that raised the flag, so that a waiter woken by
    /// one returns `true` even when the flag was cleared again before it
    /// ran (Python's semantics).
    generation: u64,
}

/// A flag that threads wait on: Python's `threading.Event`.
///
/// [`set`](Self::set) raises it and wakes every waiter; while it is set,
/// [`wait`](Self::wait) returns `true` at once; [`clear`](Self::clear)
/// lowers it again. Share it by reference (scoped threads) or in an `Arc`.
///
/// Like [`Semaphore`](super::Semaphore): no lost wake-ups, no poisoning, and threads of one
/// process only; see [`Semaphore`'s notes](super::Semaphore#fairness-timeouts-panics)
/// and [what to use across processes](super::Semaphore#across-processes) (to
/// signal a child process, send on a [`pipe()`](crate::pipe) whose
/// receiving end is in the child's argument).
///
/// ```
/// use concurrent_futures::Event;
/// use std::sync::Arc;
///
/// let ready = Arc::new(Event::new());
/// let r = Arc::clone(&ready);
/// let worker = std::thread::spawn(move || {
///     // ... set up ...
///     r.set();
/// });
/// assert!(ready.wait(None));
/// worker.join().unwrap();
/// ```
pub struct Event {
    pub(super) state: Mutex<EventState>,
    /// Notified (all waiters) when the flag is raised.
    raised: Condvar,
}

impl Event {
    /// A new event, not set.
    ///
    /// ```
    /// use concurrent_futures::Event;
    ///
    /// assert!(!Event::new().is_set());
    /// ```
    pub fn new() -> Event {
        Event {
            state: Mutex::new(EventState {
                set: false,
                generation: 0,
            }),
            raised: Condvar::new(),
        }
    }

    /// Raises the flag and wakes every thread waiting in
    /// [`wait`](Self::wait). Setting a set event does nothing.
    ///
    /// ```
    /// use concurrent_futures::Event;
    ///
    /// let ev = Event::new();
    /// std::thread::scope(|s| {
    ///     let waiters: Vec<_> = (0..3).map(|_| s.spawn(|| ev.wait(None))).collect();
    ///     ev.set(); // one set wakes all three
    ///     for w in waiters {
    ///         assert!(w.join().unwrap());
    ///     }
    /// });
    /// ```
    pub fn set(&self) {
        let mut state = lock(&self.state);
        if state.set {
            // No thread sleeps while the flag is up.
            return;
        }
        state.set = true;
        state.generation = state.generation.wrapping_add(1);
        drop(state);
        self.raised.notify_all();
    }

    /// Lowers the flag: later [`wait`](Self::wait) calls wait again until
    /// the next [`set`](Self::set). Threads already woken by a `set` still
    /// return `true`.
    ///
    /// ```
    /// use concurrent_futures::Event;
    /// use std::time::Duration;
    ///
    /// let ev = Event::new();
    /// ev.set();
    /// ev.clear();
    /// assert!(!ev.is_set());
    /// assert!(!ev.wait(Some(Duration::ZERO)));
    /// ```
    pub fn clear(&self) {
        lock(&self.state).set = false;
    }

    /// Whether the flag is up right now (a snapshot).
    ///
    /// ```
    /// use concurrent_futures::Event;
    ///
    /// let ev = Event::new();
    /// ev.set();
    /// assert!(ev.is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        lock(&self.state).set
    }

    /// Waits until the flag is set, at most `timeout` (`None`: as long as it
    /// takes), and returns the flag as Python's `Event.wait` does: `true` at
    /// once if it is already set, `true` if a [`set`](Self::set) happened
    /// during the wait (even if the flag was [cleared](Self::clear) again
    /// before this thread ran), `false` only when the timeout ran out with
    /// the flag down. With `None` it always returns `true`.
    ///
    /// ```
    /// use concurrent_futures::Event;
    /// use std::time::Duration;
    ///
    /// let ev = Event::new();
    /// assert!(!ev.wait(Some(Duration::from_millis(10)))); // nobody sets it
    /// ev.set();
    /// assert!(ev.wait(Some(Duration::ZERO)));
    /// assert!(ev.wait(None));
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = deadline(timeout);
        let state = lock(&self.state);
        let seen = state.generation;
        self.wait_since(state, seen, deadline)
    }

    /// The waiting part of [`wait`](Self::wait): returns `true` as soon as
    /// the flag is up or a `set` after generation `seen` happened.
    pub(super) fn wait_since(
        &self,
        mut state: crate::sync::MutexGuard<'_, EventState>,
        seen: u64,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            if state.set || state.generation != seen {
                return true;
            }
            state = match wait_deadline(&self.raised, state, deadline) {
                Ok(g) => g,
                // The deadline passed with the flag down and no set since
                // `seen`, checked under this same lock just above.
                Err(_) => return false,
            };
        }
    }

    /// The current generation, for tests that start a wait "before" a set.
    #[cfg(test)]
    pub(super) fn generation(&self) -> u64 {
        lock(&self.state).generation
    }
}

impl Default for Event {
    /// A new event, not set.
    fn default() -> Event {
        Event::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}
