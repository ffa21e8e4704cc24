//! Joining a thread pool's worker threads once they have retired.
//!
//! A worker that leaves its loop has retired, but its thread still runs its
//! thread-locals' destructors, which take as long as user code makes them (a
//! flush, a connection close). `shutdown(wait = true)` promises the workers
//! have *exited*, so it joins their threads; this module decides who joins
//! what, whatever the number of callers:
//!
//! * The first caller takes every handle and joins them. A caller that
//!   arrives meanwhile finds the handles gone, and waits for the joins in
//!   progress to end instead of returning at once (found by review: the
//!   second of two concurrent `shutdown(wait = true)` returned while a
//!   worker's destructor still ran).
//! * A caller with a deadline (`shutdown_within`) joins on a thread of its
//!   own (see [`join_by`]); past the deadline that joiner's handle is kept
//!   here, and a later caller joins it in turn.
//! * A worker thread of the pool itself never joins nor waits for a join:
//!   it calls `shutdown(wait = true)` only from a thread-local destructor,
//!   after its loop, and waiting for its siblings' threads there could wait
//!   for a sibling's destructor that waits for it, or for a join of itself.
//!   It returns once every worker has retired.
//!
//! Joins involve only OS threads (no task runs here), so this module uses
//! std's primitives even under the loom models.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;

/// The worker threads of one pool, and who is joining them.
#[derive(Default)]
pub(crate) struct Joins {
    state: Mutex<State>,
    /// Notified when a join in progress ends.
    ended: Condvar,
}

#[derive(Default)]
struct State {
    /// Every worker thread's id, for [`Joins::is_worker`].
    workers: Vec<ThreadId>,
    /// Threads nobody has started joining: workers, and joiners left
    /// running past a deadline.
    unjoined: Vec<JoinHandle<()>>,
    /// Callers joining now.
    in_progress: usize,
}

impl Joins {
    /// Records a worker thread just started.
    pub(crate) fn add_worker(&self, handle: JoinHandle<()>) {
        let mut state = self.lock();
        state.workers.push(handle.thread().id());
        state.unjoined.push(handle);
    }

    /// Whether the calling thread is one of the pool's workers.
    fn is_worker(&self) -> bool {
        let me = std::thread::current().id();
        self.lock().workers.contains(&me)
    }

    /// Joins every worker thread, or waits for the callers already joining
    /// them, until `deadline` (`None`: without limit). Call it once every
    /// worker has retired. Returns whether all of them had exited by then;
    /// from a worker thread, at once and `true` (see the module docs).
    pub(crate) fn join_all(&self, deadline: Option<Instant>) -> bool {
        if self.is_worker() {
            return true;
        }
        let mut state = self.lock();
        loop {
            if !state.unjoined.is_empty() {
                let handles = std::mem::take(&mut state.unjoined);
                state.in_progress += 1;
                drop(state);
                let joined = join_by(handles, deadline);
                state = self.lock();
                state.in_progress -= 1;
                self.ended.notify_all();
                match joined {
                    Ok(()) => continue,
                    Err(joiner) => {
                        state.unjoined.push(joiner);
                        return false;
                    }
                }
            }
            if state.in_progress == 0 {
                return true;
            }
            state = match deadline {
                None => self.ended.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.ended
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Locks the state, ignoring poisoning: nothing panics while holding
    /// it, and it only moves handles and counts.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Joins `handles`, waiting at most until `deadline` (`None`: without
/// limit). With a deadline the joins run on a thread of their own, so that
/// a slow thread-local destructor cannot hold `shutdown_within` past it
/// (found by review); if they are not done by then, that thread's handle
/// comes back, to be joined in turn.
fn join_by(handles: Vec<JoinHandle<()>>, deadline: Option<Instant>) -> Result<(), JoinHandle<()>> {
    let Some(deadline) = deadline else {
        for h in handles {
            let _ = h.join();
        }
        return Ok(());
    };
    let (joined, all_joined) = std::sync::mpsc::channel();
    let joiner = std::thread::Builder::new()
        .name("cf-thread-joiner".into())
        .spawn(move || {
            for h in handles {
                let _ = h.join();
            }
            let _ = joined.send(());
        });
    // Without a thread, the handles were dropped with its closure: the
    // workers end on their own, detached.
    let Ok(joiner) = joiner else {
        return Ok(());
    };
    match all_joined.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(()) => {
            let _ = joiner.join();
            Ok(())
        }
        Err(_) => Err(joiner),
    }
}
