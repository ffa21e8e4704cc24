//! Stopping a running task when its future is cancelled (opt-in).
//!
//! `cancel()` cannot stop a task that runs, in CPython and by default here
//! (X2): a task starts when it is sent to a worker, and from then on it
//! runs to its end. A process pool built with
//! [`kill_on_cancel(true)`](super::ProcessPoolBuilder::kill_on_cancel) can
//! do better, because a worker is a process that can be killed and replaced
//! (CONFORMANCE.md decision 4, pebble's `cancel`). Each task it sends is
//! marked stoppable, so `cancel()` succeeds while it runs and ends the
//! future at once ([`Error::Cancelled`]), and is watched by the pool's
//! [`CancelStopper`], which then stops it:
//!
//! * the task is running (the head of its worker's pipeline): the worker is
//!   killed. Its reader sees the pipe end, sends the tasks queued behind it
//!   to other workers and starts a replacement, as for a task timeout;
//! * the task waits in the worker's pipe behind another one: it cannot be
//!   taken back, so it is marked, and the worker is killed as soon as the
//!   task ahead of it has finished (a few microseconds into the cancelled
//!   one);
//! * the task has finished, or was never sent: nothing to do.
//!
//! Killing is abrupt: what the task was doing stops wherever it was, as
//! with a task timeout.

use std::sync::Weak;

use super::child::Doomed;
use super::pool::Shared;
use super::state::{Link, State};
use crate::Error;
use crate::future::core::{Ending, Watcher};
use crate::sync::lock;

/// Watches the tasks a `kill_on_cancel` pool sends, under their task ids,
/// and stops the ones cancelled while they run.
pub(crate) struct CancelStopper {
    pub(crate) shared: Weak<Shared>,
}

impl Watcher for CancelStopper {
    fn notify(&self, task_id: usize, ending: Ending) {
        if ending != Ending::Cancelled {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            let doomed = lock(&shared.state).stop_cancelled(task_id);
            if let Some(worker) = doomed {
                worker.kill();
            }
        }
    }
}

impl State {
    /// Stops the task watched under `key` (its id, as a `usize`), whose
    /// future was cancelled, if a worker holds it (see the module docs).
    /// Returns the worker to kill once the lock is released.
    pub(crate) fn stop_cancelled(&mut self, key: usize) -> Option<Doomed> {
        for link in &mut self.links {
            if let Some(at) = link
                .in_flight
                .iter()
                .position(|p| p.task_id as usize == key)
            {
                if at == 0 {
                    return link.stop_head();
                }
                link.in_flight[at].stop_when_started = true;
                return None;
            }
        }
        None
    }
}

impl Link {
    /// Dooms this worker for its head task, cancelled while it ran; its
    /// reader cleans up when the pipe ends.
    fn stop_head(&mut self) -> Option<Doomed> {
        let head = self.in_flight.front()?;
        if self.kill_reason.is_some() {
            return None;
        }
        self.kill_reason = Some((head.task_id, Error::Cancelled));
        // No more tasks for a worker about to die.
        self.stopping = true;
        Some(Doomed::halt(&self.child))
    }

    /// Called when the head has finished: a task cancelled while it waited
    /// behind it is stopped now that it has started.
    pub(crate) fn stop_head_if_cancelled(&mut self) -> Option<Doomed> {
        if self.in_flight.front().is_some_and(|p| p.stop_when_started) {
            self.stop_head()
        } else {
            None
        }
    }
}
