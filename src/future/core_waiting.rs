//! Waiting for a [`Core`] to end: blocked threads (with the thread pool's
//! help while they wait, T10) and async wakers. A child module of `core`,
//! so it reaches the waiter list directly.

use std::task::Waker;
use std::time::Instant;

use super::{Core, Waiter};
#[cfg(not(cf_loom))]
use super::{JUST_WAITED, SUBMIT_HINTS};
use crate::sync::lock;

/// How long a pool worker waiting for a task that another worker runs
/// parks before it looks for that task's subtasks again (doubling each
/// time up to [`LOOK_AGAIN_MAX`]; see `Core::wait_until`).
#[cfg(not(cf_loom))]
const LOOK_AGAIN_FIRST: std::time::Duration = std::time::Duration::from_micros(50);
#[cfg(not(cf_loom))]
const LOOK_AGAIN_MAX: std::time::Duration = std::time::Duration::from_millis(10);

impl<T> Core<T> {
    /// Blocks until the future ends (and, with `settled`, until its
    /// callbacks have run too) or the deadline passes. Returns whether it
    /// ended. A pool worker helps while it waits (T10): `run_here` runs (or,
    /// in a broken pool, fails) the task on this thread if nobody has
    /// started it yet (see
    /// `thread::help_while_waiting`).
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        settled: bool,
        run_here: &dyn Fn(crate::future::InPlace),
    ) -> bool {
        let ready = || {
            if settled {
                self.settled()
            } else {
                self.is_terminal()
            }
        };
        #[cfg(not(cf_loom))]
        SUBMIT_HINTS.with(|h| h.set(h.get() | JUST_WAITED));
        if ready() {
            return true;
        }
        self.mark_awaited();
        // Under loom there is no pool to help (the models check the future
        // alone).
        #[cfg(cf_loom)]
        let _ = run_here;
        #[cfg(not(cf_loom))]
        {
            // A pool worker first runs what it may of the work the task
            // depends on. While the task runs at the bottom of another
            // worker's stack, that worker may push more of it, so the wait
            // looks again now and then (backing off) as well as when the
            // future ends.
            let mut again = LOOK_AGAIN_FIRST;
            while crate::thread::help_while_waiting(self, deadline, run_here) {
                let until = Instant::now() + again;
                if self.park_until_ready(Some(deadline.map_or(until, |d| d.min(until))), &ready) {
                    return true;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
                again = (again * 2).min(LOOK_AGAIN_MAX);
            }
            // Most short tasks end within the spin: no park, and the
            // completing thread needs no system call to wake us.
            let limit = Instant::now() + crate::spin::WAIT_SPIN_LIMIT;
            let limit = deadline.map_or(limit, |d| d.min(limit));
            if crate::spin::spin_until(limit, ready) {
                return true;
            }
        }
        self.park_until_ready(deadline, &ready)
    }

    /// Parks as an entry of the waiter list until `ready()` or `until`
    /// passes; returns whether it is ready. Whoever ends the future (or,
    /// with `settled`, finishes its callbacks) takes the list and unparks
    /// us; a park may also return spuriously, so it re-checks.
    fn park_until_ready(&self, until: Option<Instant>, ready: &dyn Fn() -> bool) -> bool {
        let me = crate::sync::current_thread();
        let mut w = lock(&self.waiters);
        let mut listed = false;
        let ok = loop {
            if ready() {
                break true;
            }
            let listed_now = w
                .iter()
                .any(|x| matches!(x, Waiter::Thread(t) if t.id() == me.id()));
            if !listed_now {
                w.push(Waiter::Thread(me.clone()));
            }
            listed = true;
            drop(w);
            let timed_out = !crate::sync::park_until(until);
            w = lock(&self.waiters);
            if timed_out && !ready() {
                break false;
            }
        };
        if listed {
            // Still listed if we timed out, or if we saw the end while the
            // callbacks still ran (`settled = false`).
            w.retain(|x| !matches!(x, Waiter::Thread(t) if t.id() == me.id()));
        }
        ok
    }

    /// Registers `waker` to be woken when the future ends (or, with
    /// `settled`, when its callbacks are done), under `key`: one entry per
    /// key, whose waker a later call replaces, so a handle polled again and
    /// again (with a new waker each time, as a task that moves does) keeps
    /// one entry. Key 0 is the owning [`Future`](crate::Future)'s; each
    /// borrowed handle ([`Ref`](crate::future::Ref)) takes a key of its own and
    /// removes its entry when dropped ([`unregister_waker`](Self::unregister_waker)).
    /// Returns true if the future already ended, in which case nothing is
    /// registered.
    pub(crate) fn register_waker(&self, waker: &Waker, settled: bool, key: usize) -> bool {
        let mut w = lock(&self.waiters);
        if if settled {
            self.settled()
        } else {
            self.is_terminal()
        } {
            return true;
        }
        self.mark_awaited();
        let mine = w.iter_mut().find_map(|x| match x {
            Waiter::Waker(k, registered) if *k == key => Some(registered),
            _ => None,
        });
        match mine {
            Some(registered) => {
                if !registered.will_wake(waker) {
                    registered.clone_from(waker);
                }
            }
            None => w.push(Waiter::Waker(key, waker.clone())),
        }
        false
    }

    /// Removes the waker registered under `key`, if it is still there (a
    /// borrowed handle dropped before the future ended).
    pub(crate) fn unregister_waker(&self, key: usize) {
        lock(&self.waiters).retain(|x| !matches!(x, Waiter::Waker(k, _) if *k == key));
    }
}
