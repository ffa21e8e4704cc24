//! Joining a thread pool's worker threads once they have retired.
//!
//! A worker that leaves its loop has retired, but its thread still runs its
//! thread-locals' destructors, which take as long as user code makes them (a
//! flush, a connection close). `shutdown(wait = true)` promises the workers
//! have *exited*, so it joins their threads. Who joins what, whatever the
//! number and kind of callers:
//!
//! * Only retired threads are joined: a worker marks itself retired
//!   ([`Joins::retire`]) at the moment the registry counts it out. So a
//!   caller that waits inside a task of the pool (an *own* thread, which
//!   waits for every worker but those waiting the same way) joins the
//!   workers that retired, never one still blocked in a task, which could
//!   be waiting for it.
//! * The first caller takes the retired threads' handles and joins them;
//!   a caller that arrives meanwhile waits for those joins to end instead
//!   of returning at once (found by review: the second of two concurrent
//!   `shutdown(wait = true)` returned while a worker's destructor still
//!   ran).
//! * A caller with a deadline (`shutdown_within`) leaves the joins to a
//!   joiner thread and waits for it until the deadline; the joiner goes on
//!   past it, and later callers wait for that same thread. There is at
//!   most one joiner per pool at a time (one per timed-out call piled up
//!   while a destructor ran; found by review), and a joiner that cannot
//!   start leaves the handles where they were.
//! * A retired worker itself (its thread-local destructor shutting the
//!   pool down) joins nothing: two destructors joining each other would
//!   wait for ever. It may wait for the other workers to retire, but only
//!   if nobody joins its thread yet, and while it waits nobody does
//!   ([`Joins::enter_destructor_wait`]): a task of the pool joining it
//!   would wait for it while it waits for that task. Outside callers wait
//!   for such a destructor to stop waiting, then join it.
//!
//! Joins involve only OS threads (no task runs here), so this module uses
//! std's primitives even under the loom models.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;

/// The worker threads of one pool, and who is joining them.
#[derive(Default)]
pub(crate) struct Joins(Arc<Shared>);

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Notified when a worker retires and when a join ends.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Worker threads nobody has started joining.
    unjoined: Vec<JoinHandle<()>>,
    /// Workers that have left their loop (for good).
    retired: Vec<ThreadId>,
    /// Joins under way: callers joining on their own thread, and the
    /// joiner thread while it runs.
    in_progress: usize,
    /// Retired workers whose thread-local destructor waits for the other
    /// workers to retire: not to be joined meanwhile (see the module docs).
    waiting_in_destructor: Vec<ThreadId>,
    /// The joiner thread, once one has started; at most one runs.
    joiner: Option<JoinHandle<()>>,
    joiner_running: bool,
}

impl State {
    /// Whether the thread of `h` can be joined now: its worker retired, and
    /// its destructor does not wait for the other workers.
    fn joinable(&self, h: &JoinHandle<()>) -> bool {
        let id = h.thread().id();
        self.retired.contains(&id) && !self.waiting_in_destructor.contains(&id)
    }

    /// Takes the handles that can be joined now.
    fn take_joinable(&mut self) -> Vec<JoinHandle<()>> {
        let (joinable, others) = std::mem::take(&mut self.unjoined)
            .into_iter()
            .partition(|h| self.joinable(h));
        self.unjoined = others;
        joinable
    }

    fn any_joinable(&self) -> bool {
        self.unjoined.iter().any(|h| self.joinable(h))
    }
}

impl Joins {
    /// Records a worker thread just started.
    pub(crate) fn add_worker(&self, handle: JoinHandle<()>) {
        self.0.lock().unjoined.push(handle);
    }

    /// Marks the calling worker thread retired: it runs no more tasks, and
    /// may be joined. Called when the registry counts it out, before that
    /// count is visible, so a caller that saw the count sees the mark.
    pub(crate) fn retire(&self) {
        self.0.lock().retired.push(std::thread::current().id());
        self.0.changed.notify_all();
    }

    /// Whether the calling thread is a worker that has retired (it runs its
    /// thread-locals' destructors).
    pub(crate) fn is_retired_worker(&self) -> bool {
        let me = std::thread::current().id();
        self.0.lock().retired.contains(&me)
    }

    /// Called by a retired worker's thread-local destructor before it
    /// waits for the other workers to retire: returns false if its thread
    /// is being joined already (it must not wait then), otherwise keeps it
    /// from being joined until [`leave_destructor_wait`](Self::leave_destructor_wait).
    pub(crate) fn enter_destructor_wait(&self) -> bool {
        let me = std::thread::current().id();
        let mut state = self.0.lock();
        let mine_unjoined = state.unjoined.iter().any(|h| h.thread().id() == me);
        if mine_unjoined {
            state.waiting_in_destructor.push(me);
        }
        mine_unjoined
    }

    /// Ends what [`enter_destructor_wait`](Self::enter_destructor_wait)
    /// began: the thread may be joined again.
    pub(crate) fn leave_destructor_wait(&self) {
        let me = std::thread::current().id();
        let mut state = self.0.lock();
        state.waiting_in_destructor.retain(|&id| id != me);
        drop(state);
        self.0.changed.notify_all();
    }

    /// Whether every worker thread but the caller's is known to have
    /// ended, that is, has been joined: for a retired worker's destructor,
    /// which cannot wait for them. (`JoinHandle::is_finished` cannot tell:
    /// it is true while the thread still runs its thread-locals'
    /// destructors.)
    pub(crate) fn others_ended(&self) -> bool {
        let me = std::thread::current().id();
        let state = self.0.lock();
        state.in_progress == 0 && state.unjoined.iter().all(|h| h.thread().id() == me)
    }

    /// Joins the threads of the workers that have retired, or waits for
    /// the joins of them already under way, until `deadline` (`None`:
    /// without limit). Returns whether they had all ended by then (never,
    /// for an own caller that passed over a waiting destructor). Not for
    /// a retired worker (see the module docs). An `own` caller (a task of
    /// the pool, a sweeper's callback) does not wait for a destructor that
    /// waits for the workers to retire: that may be waiting for the
    /// caller.
    pub(crate) fn join_retired(&self, own: bool, deadline: Option<Instant>) -> bool {
        let shared = &self.0;
        let mut state = shared.lock();
        loop {
            if state.any_joinable() {
                if deadline.is_none() {
                    let handles = state.take_joinable();
                    state.in_progress += 1;
                    drop(state);
                    for h in handles {
                        let _ = h.join();
                    }
                    state = shared.lock();
                    state.in_progress -= 1;
                    shared.changed.notify_all();
                    continue;
                }
                if !state.joiner_running && !self.start_joiner(&mut state) {
                    return false;
                }
            } else if state.in_progress == 0 && (own || state.waiting_in_destructor.is_empty()) {
                // A joiner that has ended its joins is only returning.
                if let Some(joiner) = state.joiner.take() {
                    let _ = joiner.join();
                }
                // An own caller passed over the waiting destructors: their
                // threads still run (found by review).
                return state.waiting_in_destructor.is_empty();
            }
            state = match shared.wait(state, deadline) {
                Some(state) => state,
                None => return false,
            };
        }
    }

    /// Starts the joiner thread, which joins retired workers until none is
    /// left to join. Returns false if no thread could start: the handles
    /// stay, for a later caller.
    fn start_joiner(&self, state: &mut State) -> bool {
        // The previous joiner has ended its joins; it is only returning.
        if let Some(old) = state.joiner.take() {
            let _ = old.join();
        }
        let shared = self.0.clone();
        let spawned = std::thread::Builder::new()
            .name("cf-thread-joiner".into())
            .spawn(move || {
                loop {
                    let handles = shared.lock().take_joinable();
                    if handles.is_empty() {
                        break;
                    }
                    for h in handles {
                        let _ = h.join();
                    }
                }
                // A worker that retires after that last look is left to
                // the callers, which start another joiner if need be.
                let mut state = shared.lock();
                state.joiner_running = false;
                state.in_progress -= 1;
                shared.changed.notify_all();
            });
        match spawned {
            Ok(joiner) => {
                state.joiner = Some(joiner);
                state.joiner_running = true;
                state.in_progress += 1;
                true
            }
            Err(_) => false,
        }
    }
}

impl Shared {
    /// Locks the state, ignoring poisoning: nothing panics while holding
    /// it, and it only moves handles, ids and counts.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change until `deadline`; `None` once it has passed.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, State>> {
        let Some(deadline) = deadline else {
            return Some(self.changed.wait(state).unwrap_or_else(|e| e.into_inner()));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let (state, _) = self
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(|e| e.into_inner());
        Some(state)
    }
}
