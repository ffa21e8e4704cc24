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
}

/// Marks the calling thread as `shared`'s, in `role`, for the rest of its
/// life (the pool's `Shared` outlives its threads: each holds an `Arc`).
pub(crate) fn enter(shared: &Shared, role: Role) {
    OWN.with(|c| c.set((address(shared), Some(role))));
}

/// The calling thread's role in `shared`'s pool, if it is one of its own.
pub(crate) fn role_in(shared: &Shared) -> Option<Role> {
    lasting_role_in(shared).or_else(|| ending_in(&lock(&shared.state)))
}

/// [`role_in`] but for [`Role::Ender`]: the roles a thread keeps for life.
fn lasting_role_in(shared: &Shared) -> Option<Role> {
    let (pool, role) = OWN.with(Cell::get);
    if pool == address(shared) { role } else { None }
}

/// [`Role::Ender`] if the calling thread is ending tasks of the pool whose
/// state is `st`. Kept in the pool's state, not in a thread-local, so that
/// one thread can end the tasks of several pools, each inside a callback
/// of the other's, and be each one's own meanwhile.
fn ending_in(st: &State) -> Option<Role> {
    let me = crate::sync::current_thread_id();
    st.enders.contains(&me).then_some(Role::Ender)
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
    if lasting_role_in(shared).or_else(|| ending_in(&st)).is_some() {
        drop(st);
        shared.cond.notify_all();
        end();
        return;
    }
    st.finishing += 1;
    st.enders.push(crate::sync::current_thread_id());
    drop(st);
    shared.cond.notify_all();
    // Gives the unit and the role back even if `end` unwinds (callbacks'
    // panics are caught, but a `Drop` of a task may not be).
    struct Done<'a>(&'a Shared);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            let me = crate::sync::current_thread_id();
            let mut st = lock(&self.0.state);
            st.finishing -= 1;
            if let Some(i) = st.enders.iter().position(|&t| t == me) {
                st.enders.swap_remove(i);
            }
            drop(st);
            self.0.cond.notify_all();
        }
    }
    let _done = Done(shared);
    end();
}

/// `shutdown(wait = true)`'s wait, on one of `shared`'s own threads:
/// until everything has ended but the units the own threads waiting here
/// hold, or `deadline` passes. Returns whether it got there.
pub(crate) fn wait_for_the_others(shared: &Shared, deadline: Option<Instant>) -> bool {
    let supervisor = lasting_role_in(shared) == Some(Role::Supervisor);
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
