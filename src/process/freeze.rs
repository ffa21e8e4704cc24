//! Stopping the task a worker runs, and no other: a freeze, then a verdict.
//!
//! The pool stops a running task by killing its worker: when the task
//! passes its time limit (the supervisor) and when its future is cancelled
//! in a `kill_on_cancel` pool (see [`super::cancel`]). The task it means is
//! the head of the worker's pipeline *as the parent sees it*, and that view
//! lags behind the worker. The worker finishes a task, writes its result
//! and starts the next one it was sent ahead, while the parent's reader
//! thread has not yet read that result: it may be running the user's code
//! for the result before (a `Deserialize`, a done-callback, a waker) or may
//! simply not have been scheduled yet. A kill decided on the head then
//! lands in the next task, which fails with `WorkerDied` though nothing was
//! wrong with it (found by review: a cancelled no-op sent ahead killed the
//! task behind it nine times in ten).
//!
//! So a stop is decided in two steps:
//!
//! 1. **Freeze** ([`Link::freeze_head`], under the pool's lock): the worker
//!    gets `SIGSTOP`, so that it can no longer finish tasks or write.
//! 2. **Verdict** ([`settle`], with the lock released until the worker has
//!    really stopped, then under it again): the parent's view is current
//!    when its reader has handled every result it has read and the pipe
//!    holds no unread byte. The reader says the first in a [`ReaderMark`]
//!    without the lock: it raises `current` once it has handled all it
//!    read, and lowers it before it reads more (it waits with `poll`,
//!    which consumes nothing). The verdict looks at the pipe first, then
//!    at the mark: a raised mark then means nothing was taken out of the
//!    frozen worker's pipe unseen. Then the
//!    head is what the frozen worker runs, and it is killed. If the reader
//!    is current but the pipe is not empty, what waits there is the head's
//!    own result (a worker answers in order): the head has finished, and
//!    the worker is let go on (`SIGCONT`). If the reader is behind, nobody
//!    can tell yet: the worker goes on, and the reader settles the stop
//!    itself (`Link::deferred_stop`) once it has caught up, before it waits
//!    for more results.
//!
//! A worker that does not stop within [`STOP_WAIT`] (stuck in the kernel)
//! is killed on the parent's view, as before this module existed.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::child::{Doomed, WorkerChild};
use super::pool::Shared;
use super::state::Link;
use crate::Error;
use crate::sync::{Arc, Mutex, lock};

/// How long a verdict waits for a frozen worker to stop.
const STOP_WAIT: Duration = Duration::from_millis(100);

/// A worker frozen to stop its head task, awaiting the verdict.
pub(crate) struct Freeze {
    link: u64,
    task_id: u64,
    reason: Error,
    child: Arc<Mutex<WorkerChild>>,
}

/// What a worker's reader tells the stops about itself, without the
/// pool's lock (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ReaderMark {
    /// Everything read from the pipe has been handled.
    current: AtomicBool,
    /// A stop was left to the reader (`Link::deferred_stop`).
    deferred: AtomicBool,
}

impl ReaderMark {
    /// The reader has handled everything it read (or not, `false`: it is
    /// about to read more). Returns whether a stop was left to it, which it
    /// must then settle (`Link::take_deferred_stop`) before it waits.
    pub(crate) fn set_current(&self, current: bool) -> bool {
        self.current.store(current, SeqCst);
        // Store, then load, against the verdict's load, then store: one
        // of the two sees the other (see `Link::verdict`).
        current && self.deferred.load(SeqCst)
    }
}

/// What a verdict decides.
enum Verdict {
    /// The worker runs the task: kill it.
    Kill,
    /// The task has finished: let the worker go on.
    Spare,
    /// The reader is behind: let the worker go on; the reader decides.
    Defer,
}

impl Link {
    /// Freezes this worker to stop its head task for `reason`, unless a
    /// stop is already under way. The [`Freeze`] goes to [`settle`] once
    /// the lock is released.
    pub(crate) fn freeze_head(&mut self, reason: Error) -> Option<Freeze> {
        let head = self.in_flight.front()?;
        if self.kill_reason.is_some() || self.frozen {
            return None;
        }
        self.frozen = true;
        self.deferred_stop = None;
        let _ = lock(&self.child).signal(libc::SIGSTOP);
        Some(Freeze {
            link: self.id,
            task_id: head.task_id,
            reason,
            child: self.child.clone(),
        })
    }

    /// Leaves the stop of the head `task_id` to the reader, which settles
    /// it once it has handled what it has read.
    pub(crate) fn leave_stop_to_reader(&mut self, task_id: u64, reason: Error) {
        self.deferred_stop = Some((task_id, reason));
        self.reader_mark.deferred.store(true, SeqCst);
    }

    /// Whether a stop of this worker is decided or under way: the
    /// supervisor then has no deadline to keep for it.
    pub(crate) fn stop_pending(&self) -> bool {
        self.kill_reason.is_some() || self.frozen || self.deferred_stop.is_some()
    }

    /// The stop left to the reader, frozen now that it has caught up;
    /// dropped if its task has finished meanwhile.
    pub(crate) fn take_deferred_stop(&mut self) -> Option<Freeze> {
        self.reader_mark.deferred.store(false, SeqCst);
        let (task_id, reason) = self.deferred_stop.take()?;
        if self.in_flight.front()?.task_id != task_id {
            return None;
        }
        self.freeze_head(reason)
    }

    fn verdict(&self, task_id: u64) -> Verdict {
        if self.in_flight.front().map(|p| p.task_id) != Some(task_id) {
            return Verdict::Spare; // its result was read meanwhile
        }
        // Announced before the mark is read, as the reader raises the mark
        // before it looks for a stop left to it: either the reader sees
        // this, or this sees the reader current. Withdrawn below if the
        // verdict is reached here (a frozen link has no deferred stop).
        self.reader_mark.deferred.store(true, SeqCst);
        // The pipe first, then the mark: if the mark is still raised, the
        // reader took nothing out since it last handled all it had read
        // (it lowers the mark before it reads), and the frozen worker adds
        // nothing, so the pipe as seen is what the reader has yet to see.
        let unread = super::os::unread_bytes(self.results_fd);
        if !self.reader_mark.current.load(SeqCst) {
            return Verdict::Defer;
        }
        self.reader_mark.deferred.store(false, SeqCst);
        match unread {
            Ok(0) => Verdict::Kill,
            Ok(_) => Verdict::Spare,
            // Cannot look: trust the view, as without a freeze.
            Err(_) => Verdict::Kill,
        }
    }
}

/// Waits (without the lock) until each frozen worker has stopped, then
/// gives each its verdict under the lock, and kills the condemned with
/// the lock released.
pub(crate) fn settle(shared: &Shared, freezes: Vec<Freeze>) {
    if freezes.is_empty() {
        return;
    }
    let stopped: Vec<bool> = freezes.iter().map(|f| wait_stopped(&f.child)).collect();
    let mut doomed = Vec::new();
    let mut st = lock(&shared.state);
    for (f, stopped) in freezes.into_iter().zip(stopped) {
        let Some(link) = st.links.iter_mut().find(|l| l.id == f.link) else {
            continue; // it ended meanwhile, and its reader cleaned up
        };
        link.frozen = false;
        let verdict = if stopped {
            link.verdict(f.task_id)
        } else {
            Verdict::Kill
        };
        match verdict {
            Verdict::Kill => {
                link.kill_reason = Some((f.task_id, f.reason));
                // No more tasks for a worker about to die.
                link.stopping = true;
                doomed.push(Doomed::new(f.child));
            }
            Verdict::Spare => {
                let _ = lock(&f.child).signal(libc::SIGCONT);
            }
            Verdict::Defer => {
                link.leave_stop_to_reader(f.task_id, f.reason);
                let _ = lock(&f.child).signal(libc::SIGCONT);
            }
        }
    }
    drop(st);
    // The supervisor skips deadlines while a stop is pending; a spared
    // worker's next head may have one.
    shared.cond.notify_all();
    doomed.into_iter().for_each(Doomed::kill);
}

/// Waits up to [`STOP_WAIT`] for a worker sent `SIGSTOP` to stop (or to
/// end). Polls without holding the child's lock between looks: its reader
/// may need it to reap.
fn wait_stopped(child: &Mutex<WorkerChild>) -> bool {
    let deadline = Instant::now() + STOP_WAIT;
    let mut pause = Duration::from_micros(20);
    loop {
        if lock(child).stopped_or_gone() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
