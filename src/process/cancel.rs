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
//!   taken back, so it is marked, and the worker is killed once the task
//!   ahead of it has finished, if the cancelled one still runs then;
//! * the task has finished, or was never sent: nothing to do.
//!
//! Killing is abrupt: what the task was doing stops wherever it was, as
//! with a task timeout. The worker is killed only once the pool has made
//! sure the task it means is the one running (see [`super::freeze`]): a
//! task that has just finished is let be, and the next one is never hit.

use std::sync::Weak;

use super::freeze::Freeze;
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
            let freeze = lock(&shared.state).stop_cancelled(task_id);
            super::freeze::settle(&shared, freeze.into_iter().collect());
        }
    }
}

impl State {
    /// Stops the task watched under `key` (its id, as a `usize`), whose
    /// future was cancelled, if a worker holds it (see the module docs).
    /// Returns the worker frozen to stop it, to settle once the lock is
    /// released.
    pub(crate) fn stop_cancelled(&mut self, key: usize) -> Option<Freeze> {
        for link in &mut self.links {
            if let Some(at) = link
                .in_flight
                .iter()
                .position(|p| p.task_id as usize == key)
            {
                if at == 0 {
                    return link.freeze_head(Error::Cancelled);
                }
                link.in_flight[at].stop_when_started = true;
                return None;
            }
        }
        None
    }
}

impl Link {
    /// Called when the head has finished: a task cancelled while it waited
    /// behind it is stopped now that it has started. Left to the reader,
    /// which calls this: it settles the stop once it has handled what it
    /// has read (the task may already have finished too).
    pub(crate) fn defer_stop_if_cancelled(&mut self) {
        if let Some(head) = self.in_flight.front().filter(|p| p.stop_when_started) {
            let task_id = head.task_id;
            self.leave_stop_to_reader(task_id, Error::Cancelled);
        }
    }
}
