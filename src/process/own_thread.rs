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
//! `finishing`. So a waiter on an own thread waits for everything but that
//! one unit (CPython raises `RuntimeError` here instead: it cannot join
//! its own thread).

use std::cell::Cell;

use super::pool::Shared;

/// What an own thread does for its pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    /// Serves one worker: reads its results, reaps it.
    Reader,
    /// Starts wanted workers and enforces deadlines.
    Supervisor,
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
    let (pool, role) = OWN.with(Cell::get);
    if pool == address(shared) { role } else { None }
}

fn address(shared: &Shared) -> usize {
    shared as *const Shared as usize
}
