//! Which pool's own thread the caller is, so that `shutdown(wait = true)`
//! from a done-callback does not wait for itself.
//!
//! A process pool runs user code on its own threads: the done-callbacks of
//! the futures a worker's reader thread completes or fails, and of the
//! tasks the supervisor fails when a worker cannot start. Such a callback
//! may shut the pool down and wait. Waiting for every worker to be reaped
//! would then wait for the very thread it blocks: a reader reaps its
//! worker only after the callback returns, and only the supervisor turns
//! wanted workers into started (or abandoned) ones.
//!
//! Each of those threads accounts for exactly one unit of the pool's
//! `live + finishing` count while it runs a callback: a reader's worker is
//! counted in `live` while served and in `finishing` while its tasks are
//! failed; the supervisor fails tasks only for a start counted in
//! `finishing`. So own threads waiting in shutdown wait for everything but
//! one unit each: several callbacks may shut the pool down at once (each
//! on its own reader: "on the first error, shut down"), and each must
//! discount the others' units too, or none would ever return. While the
//! supervisor is one of them, nobody waits for wanted workers either: it is
//! the one that starts them. (CPython raises `RuntimeError` here instead:
//! it cannot join its own thread.)
//!
//! A shutdown that cancels the queued tasks (or a stop that fails them)
//! ends them on the caller's thread, after releasing the lock, and their
//! callbacks run there. That batch counts as one unit of `finishing`, so
//! that a `shutdown(wait = true)` elsewhere does not return before those
//! futures have ended, and the caller's thread is the pool's own for as
//! long as it runs them ([`end_released`]).

use std::cell::Cell;
use std::time::Instant;

use super::pool::Shared;
use super::state::State;
use super::supervisor::{Kept, keep_deadlines};
use crate::sync::MutexGuard;
use crate::sync::lock;

/// What an own thread does for its pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    /// Serves one worker: reads its results, reaps it.
    Reader,
    /// Starts wanted workers and enforces deadlines.
    Supervisor,
    /// Any thread, while it ends tasks a shutdown took from the queue.
    Ender,
}

thread_local! {
    /// The pool this thread belongs to (the address of its [`Shared`], 0
    /// for none) and its role there. Destructor-free, like every
    /// thread-local a callback may reach.
    static OWN: Cell<(usize, Option<Role>)> = const { Cell::new((0, None)) };
    /// The pool whose queued tasks this thread is ending, 0 for none. Apart
    /// from `OWN`, so that a reader of one pool stays that pool's own while
    /// it cancels another's tasks. One pool at a time: a callback that
    /// cancels a second pool's queue inside the first one's loop takes the
    /// cell over until it is done.
    static ENDING: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as `shared`'s, in `role`, for the rest of its
/// life (the pool's `Shared` outlives its threads: each holds an `Arc`).
pub(crate) fn enter(shared: &Shared, role: Role) {
    OWN.with(|c| c.set((address(shared), Some(role))));
}

/// The calling thread's role in `shared`'s pool, if it is one of its own.
pub(crate) fn role_in(shared: &Shared) -> Option<Role> {
    let (pool, role) = OWN.with(Cell::get);
    if pool == address(shared) && role.is_some() {
        role
    } else if ENDING.with(Cell::get) == address(shared) {
        Some(Role::Ender)
    } else {
        None
    }
}

/// Ends tasks taken out of `st` (its queue, a dispatch's failures) with the
/// lock released: `end` cancels or fails them, and runs their callbacks.
///
/// Meanwhile the batch counts as one unit of `finishing`, so a
/// `shutdown(wait = true)` on another thread does not return before those
/// futures have ended, and the calling thread is the pool's own: a
/// callback `end` runs that shuts the pool down and waits, waits for all
/// but that unit. A thread that is the pool's own already holds a unit
/// that covers the batch (its worker is `live` or `finishing` until it
/// returns), so it takes no second one.
pub(crate) fn end_released(shared: &Shared, mut st: MutexGuard<'_, State>, end: impl FnOnce()) {
    if role_in(shared).is_some() {
        drop(st);
        shared.cond.notify_all();
        end();
        return;
    }
    st.finishing += 1;
    drop(st);
    shared.cond.notify_all();
    let before = ENDING.with(|c| c.replace(address(shared)));
    // Restores the cell and gives the unit back even if `end` unwinds
    // (callbacks' panics are caught, but a `Drop` of a task may not be).
    struct Done<'a>(&'a Shared, usize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            ENDING.with(|c| c.set(self.1));
            lock(&self.0.state).finishing -= 1;
            self.0.cond.notify_all();
        }
    }
    let _done = Done(shared, before);
    end();
}

/// `shutdown(wait = true)`'s wait, on one of `shared`'s own threads:
/// until everything has ended but the units the own threads waiting here
/// hold, or `deadline` passes. Returns whether it got there.
pub(crate) fn wait_for_the_others(shared: &Shared, deadline: Option<Instant>) -> bool {
    let supervisor = role_in(shared) == Some(Role::Supervisor);
    let mut st = lock(&shared.state);
    st.own_waiters += 1;
    st.supervisor_waits |= supervisor;
    // The others may be waiting for this one's unit.
    shared.cond.notify_all();
    let ended = loop {
        let others = st.live + st.finishing > st.own_waiters;
        if !others && (st.want == 0 || st.supervisor_waits) {
            break true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break false;
        }
        // The supervisor alone keeps the deadlines, and the tasks waited
        // for may need theirs kept to end (a task past its limit, a start
        // that hangs): it keeps them while it waits here too.
        let mut wake = deadline;
        if supervisor {
            match keep_deadlines(shared, st) {
                Kept::Killed(g) => {
                    st = g;
                    continue;
                }
                Kept::Next(g, next) => {
                    st = g;
                    wake = earliest(deadline, next);
                }
            }
        }
        st = match crate::sync::wait_deadline(&shared.cond, st, wake) {
            Ok(g) | Err(g) => g,
        };
    };
    st.own_waiters -= 1;
    if supervisor {
        st.supervisor_waits = false;
    }
    ended
}

/// The earlier of two optional instants (`None`: never).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn address(shared: &Shared) -> usize {
    shared as *const Shared as usize
}
