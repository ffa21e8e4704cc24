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
//!    for more results. A head found finished is marked spared
//!    (`Link::spared`): no stop of it is due while it stays the head.
//! 3. **A reader behind is checked on** ([`BEHIND_RECHECK`]): it may
//!    never catch up. A worker can stall in the middle of a result frame
//!    (its task wrote to the protocol's pipe, or the worker was stopped
//!    from outside), and the reader then waits inside the frame for ever.
//!    So a stop left to the reader is also tried again by the supervisor.
//!    The reader publishes whether it is inside a read of the pipe and how
//!    many bytes it has read in all ([`ResultsPipe`]). A reader found in a
//!    read, with the pipe empty and no byte read since the last try, at
//!    [`MAX_STALLS`] tries in a row (a second of a worker let go on
//!    without writing a byte), waits on a stall: the worker is killed.
//!    A large result still crossing the pipe moves between tries and is
//!    never taken for a stall (found by review: a verdict without the
//!    progress count killed a task whose 128 MiB result was in transfer).
//!    A spared head is checked again the same way once its reader reads
//!    on (what waited in the pipe may have been the start of a stalled
//!    frame, not a whole result). While the reader reads nothing (a
//!    done-callback holds it), a check freezes nothing ([`Quiet`]). A
//!    worker that did not stop is never counted as stalled: it may yet
//!    write.
//!
//! A worker that does not stop within [`STOP_WAIT`] (a thread of it stuck
//! in the kernel, where a stop cannot reach it) is let go on, and the
//! supervisor tries again [`RETRY_AFTER`] later; after [`MAX_TRIES`] it is
//! killed on the parent's view, as before this module existed, so that a
//! time limit always holds in the end. Only a kill waits for the stop: a
//! reader behind, or the head's result waiting in the pipe, is known
//! whether the worker stopped or not. A stop asked for while the worker
//! is frozen for another one is kept, and settled right after it.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::child::{Doomed, WorkerChild};
use super::pool::Shared;
use super::state::Link;
use crate::Error;
use crate::sync::{Arc, Mutex, lock};

/// How long a verdict waits for frozen workers to stop.
const STOP_WAIT: Duration = Duration::from_millis(100);
/// How soon the supervisor freezes again a worker that did not stop.
const RETRY_AFTER: Duration = Duration::from_millis(10);
/// Freezes of one stop before it is decided on the parent's view.
const MAX_TRIES: u32 = 10;
/// How soon the supervisor tries again a stop left to a reader that was
/// behind, in case the reader never catches up (a stall mid-frame).
const BEHIND_RECHECK: Duration = Duration::from_millis(100);
/// Tries in a row that find the reader waiting inside a read of an empty
/// pipe, no byte read since the try before, before the worker counts as
/// stalled and is killed: about a second at [`BEHIND_RECHECK`].
const MAX_STALLS: u32 = 10;

/// A stop whose worker did not stop in time, to be tried again by the
/// supervisor (`Link::take_due_retry`).
#[derive(Debug)]
pub(crate) struct StopRetry {
    task_id: u64,
    reason: Error,
    tries: u32,
    stall: Stall,
    /// While the reader stays as it was when the check was armed, nothing
    /// can have changed, and the check freezes nothing.
    quiet: Option<Quiet>,
    pub(crate) at: Instant,
}

/// How the reader was when a check was armed, by its byte count then.
#[derive(Debug, Clone, Copy)]
enum Quiet {
    /// A verdict spared the head: its result seemed to wait in the pipe
    /// while the reader, current, was busy (a done-callback). The head is
    /// looked at again (past the spare) once the reader reads on or stops
    /// being current.
    Spared(u64),
    /// The reader was behind but not in a read: busy handling what it had
    /// read. It settles the stop itself when it catches up; only if it
    /// reads on and then waits inside a read may it be stalled.
    Busy(u64),
}

impl Quiet {
    fn holds(self, mark: &ReaderMark) -> bool {
        match self {
            Quiet::Spared(at) => mark.current.load(SeqCst) && mark.progress.load(SeqCst) == at,
            Quiet::Busy(at) => !mark.reading.load(SeqCst) && mark.progress.load(SeqCst) == at,
        }
    }
}

/// How long, in tries, the reader has waited inside a read of an empty
/// pipe without reading a byte.
#[derive(Debug, Clone, Copy, Default)]
struct Stall {
    /// Tries in a row that found it so.
    seen: u32,
    /// The reader's byte count at the first of them.
    progress: u64,
}

impl Stall {
    /// This try found the reader waiting in a read of an empty pipe with
    /// `progress` bytes read in all: one more stalled try if no byte came
    /// since the last, else the first of a new count.
    fn waiting(self, progress: u64) -> Stall {
        if self.seen > 0 && self.progress == progress {
            Stall {
                seen: self.seen + 1,
                progress,
            }
        } else {
            Stall { seen: 1, progress }
        }
    }
}

/// A worker frozen to stop its head task, awaiting the verdict. Dropped
/// before [`settle`] reached one (a panic on the way), it kills the
/// worker: a worker must never be left stopped.
pub(crate) struct Freeze {
    link: u64,
    task_id: u64,
    tries: u32,
    stall: Stall,
    /// A check on a spared head: it looks past the spare.
    past_spare: bool,
    /// Taken by the verdict.
    armed: Option<(Error, Arc<Mutex<WorkerChild>>)>,
}

impl Drop for Freeze {
    fn drop(&mut self) {
        if let Some((_, child)) = self.armed.take() {
            let _ = lock(&child).signal(libc::SIGKILL);
        }
    }
}

/// What a worker's reader tells the stops about itself, without the
/// pool's lock (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ReaderMark {
    /// Everything read from the pipe has been handled.
    current: AtomicBool,
    /// A stop was left to the reader (`Link::deferred_stop`).
    deferred: AtomicBool,
    /// The reader is inside a read of the pipe ([`ResultsPipe`]).
    reading: AtomicBool,
    /// Bytes the reader has read from the pipe in all ([`ResultsPipe`]).
    progress: AtomicU64,
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

/// The reader's end of a worker's result pipe, which tells the worker's
/// [`ReaderMark`] when the reader is inside a read and how many bytes it
/// has read: what tells a stall in the middle of a frame from a result
/// still crossing the pipe (see the module docs). Two stores and an add
/// per read, against a system call.
pub(crate) struct ResultsPipe {
    file: File,
    mark: Arc<ReaderMark>,
}

impl ResultsPipe {
    pub(crate) fn new(file: File, mark: Arc<ReaderMark>) -> Self {
        ResultsPipe { file, mark }
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Read for ResultsPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.mark.reading.store(true, SeqCst);
        let read = self.file.read(buf);
        if let Ok(n @ 1..) = read {
            self.mark.progress.fetch_add(n as u64, SeqCst);
            // It has read what it has not handled. A reader that waits in
            // `poll` lowered the mark before this read; one that reads at
            // once (a pool before its first time limit) lowers it here,
            // or a whole frame crossing the pipe would pass for nothing
            // unread (found by test: the first timed task of a pool, its
            // large result in transfer as its limit passed, was killed).
            self.mark.current.store(false, SeqCst);
        }
        self.mark.reading.store(false, SeqCst);
        read
    }
}

/// What a verdict decides.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The worker runs the task: kill it.
    Kill,
    /// The task has finished: let the worker go on.
    Spare,
    /// The reader is behind: let the worker go on; the reader decides,
    /// or the supervisor soon, if it is still behind then. `waiting` holds
    /// its byte count if it waits inside a read of an empty pipe.
    Defer { waiting: Option<u64> },
    /// The worker did not stop in time: let it go on; try again soon.
    Retry,
}

impl Link {
    /// Freezes this worker to stop its head task for `reason`. A stop
    /// already decided wins; one under way keeps this one for after it.
    /// The [`Freeze`] goes to [`settle`] once the lock is released.
    pub(crate) fn freeze_head(&mut self, reason: Error) -> Option<Freeze> {
        // A stop of the same task asked for again during its retries (a
        // cancel during a timeout's) goes on counting them.
        let head = self.in_flight.front()?.task_id;
        let (tries, stall) = self
            .stop_retry
            .as_ref()
            .filter(|r| r.task_id == head)
            .map_or((0, Stall::default()), |r| (r.tries, r.stall));
        self.freeze_head_try(reason, tries, stall, false)
    }

    fn freeze_head_try(
        &mut self,
        reason: Error,
        tries: u32,
        stall: Stall,
        past_spare: bool,
    ) -> Option<Freeze> {
        let task_id = self.in_flight.front()?.task_id;
        if self.kill_reason.is_some() || (self.head_spared() && !past_spare) {
            return None;
        }
        if self.frozen {
            // Settled right after the stop under way (see `settle`).
            self.deferred_stop = Some((task_id, reason));
            return None;
        }
        self.frozen = true;
        self.deferred_stop = None;
        self.stop_retry = None;
        let _ = lock(&self.child).signal(libc::SIGSTOP);
        Some(Freeze {
            link: self.id,
            task_id,
            tries,
            stall,
            past_spare,
            armed: Some((reason, self.child.clone())),
        })
    }

    /// Leaves the stop of the head `task_id` to the reader, which settles
    /// it once it has handled what it has read.
    /// The supervisor checks on it too (see [`BEHIND_RECHECK`]), unless a
    /// check of this task is already due: a reader that never catches up
    /// (stalled in a frame) would otherwise hold the stop for ever (found
    /// by review; so did a check left over from the task before, which the
    /// supervisor drops).
    pub(crate) fn leave_stop_to_reader(&mut self, task_id: u64, reason: Error) {
        if self
            .stop_retry
            .as_ref()
            .is_none_or(|r| r.task_id != task_id)
        {
            self.stop_retry = Some(StopRetry {
                task_id,
                reason: reason.clone(),
                tries: 0,
                stall: Stall::default(),
                quiet: None,
                at: Instant::now() + BEHIND_RECHECK,
            });
        }
        self.deferred_stop = Some((task_id, reason));
        self.reader_mark.deferred.store(true, SeqCst);
    }

    /// Whether a stop of this worker is decided or under way: the
    /// supervisor then keeps no deadline of its tasks.
    pub(crate) fn stop_pending(&self) -> bool {
        let head = self.in_flight.front().map(|p| p.task_id);
        self.kill_reason.is_some()
            || self.frozen
            // One left over from a task that has finished since (the reader
            // drops it once it has caught up) does not hold the deadline of
            // the head (found by review: the head stalled mid-frame and
            // its limit was never kept).
            || self
                .deferred_stop
                .as_ref()
                .is_some_and(|(id, _)| Some(*id) == head)
            || self.stop_retry.is_some()
            || self.head_spared()
    }

    /// Whether a verdict found the head finished, its result waiting in the
    /// pipe for the reader (busy with a callback, say): it is past any stop.
    /// Without this the supervisor froze and spared it again at once, and
    /// again, thousands of times, stopping the task after it each time,
    /// until the reader took the result (found by review).
    fn head_spared(&self) -> bool {
        self.spared
            .is_some_and(|id| self.in_flight.front().is_some_and(|h| h.task_id == id))
    }

    /// The stop left to the reader, frozen now that it has caught up;
    /// dropped if its task has finished meanwhile. Kept while the worker
    /// is frozen for another stop, which settles it next.
    pub(crate) fn take_deferred_stop(&mut self) -> Option<Freeze> {
        if self.frozen {
            return None;
        }
        self.reader_mark.deferred.store(false, SeqCst);
        let (task_id, reason) = self.deferred_stop.take()?;
        if self.in_flight.front()?.task_id != task_id {
            return None;
        }
        self.freeze_head(reason)
    }

    /// The stop whose worker did not stop in time, frozen again if it is
    /// due and its task is still the head.
    pub(crate) fn take_due_retry(&mut self, now: Instant) -> Option<Freeze> {
        if self.stop_retry.as_ref().is_none_or(|r| r.at > now) {
            return None;
        }
        let retry = self.stop_retry.take()?;
        if self.in_flight.front()?.task_id != retry.task_id {
            return None;
        }
        if retry.quiet.is_some_and(|q| q.holds(&self.reader_mark)) {
            // The reader has read nothing since (a callback holds it, say):
            // nothing to decide yet. Checked again later.
            self.stop_retry = Some(StopRetry {
                at: now + BEHIND_RECHECK,
                ..retry
            });
            return None;
        }
        let past_spare = matches!(retry.quiet, Some(Quiet::Spared(_)));
        self.freeze_head_try(retry.reason, retry.tries, retry.stall, past_spare)
    }

    fn verdict(&self) -> Verdict {
        // Announced before the mark is read, as the reader raises the mark
        // before it looks for a stop left to it: either the reader sees
        // this, or this sees the reader current. Withdrawn below if the
        // verdict is reached here.
        self.reader_mark.deferred.store(true, SeqCst);
        // The pipe first, then the mark: if the mark is still raised, the
        // reader took nothing out since it last handled all it had read
        // (it lowers the mark before it reads), and the frozen worker adds
        // nothing, so the pipe as seen is what the reader has yet to see.
        let unread = super::os::unread_bytes(self.results_fd);
        let mark = &self.reader_mark;
        if !mark.current.load(SeqCst) {
            // Waiting inside a read with nothing to read: for the rest of
            // a message (a reader that is current waits in `poll`, outside
            // any). Its byte count tells a stall from a slow transfer.
            let waiting = (matches!(unread, Ok(0)) && mark.reading.load(SeqCst))
                .then(|| mark.progress.load(SeqCst));
            return Verdict::Defer { waiting };
        }
        self.reader_mark
            .deferred
            .store(self.deferred_stop.is_some(), SeqCst);
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
/// the lock released. Stops asked for meanwhile are settled next.
pub(crate) fn settle(shared: &Shared, mut freezes: Vec<Freeze>) {
    while !freezes.is_empty() {
        let stopped = wait_stopped(&freezes);
        let mut doomed = Vec::new();
        let mut next = Vec::new();
        let now = Instant::now();
        let mut st = lock(&shared.state);
        for (mut f, stopped) in freezes.into_iter().zip(stopped) {
            let (reason, child) = f.armed.take().expect("armed until its verdict");
            let Some(link) = st.links.iter_mut().find(|l| l.id == f.link) else {
                continue; // it ended meanwhile, and its reader cleaned up
            };
            link.frozen = false;
            // Its result was read meanwhile, or an earlier verdict found
            // it finished.
            let mut stall = Stall::default();
            let mut tries = f.tries;
            let verdict = if link.in_flight.front().map(|p| p.task_id) != Some(f.task_id)
                || (link.head_spared() && !f.past_spare)
            {
                Verdict::Spare
            } else {
                // Only a kill needs the worker stopped: a reader behind, or
                // the head's result waiting in the pipe, holds either way.
                // Out of tries, the parent's view it is.
                let verdict = match link.verdict() {
                    Verdict::Kill if !stopped && f.tries + 1 < MAX_TRIES => Verdict::Retry,
                    Verdict::Spare => {
                        link.spared = Some(f.task_id);
                        // What waits in the pipe may be the start of a frame
                        // the head stalled in, not its whole result (found by
                        // review): checked again once the reader reads on.
                        link.stop_retry = Some(StopRetry {
                            task_id: f.task_id,
                            reason: reason.clone(),
                            tries: f.tries,
                            stall: Stall::default(),
                            quiet: Some(Quiet::Spared(link.reader_mark.progress.load(SeqCst))),
                            at: now + BEHIND_RECHECK,
                        });
                        Verdict::Spare
                    }
                    Verdict::Defer {
                        waiting: Some(progress),
                    } => {
                        // Counted while the worker is stopped: one that
                        // would not stop may yet write, and a kill must not
                        // land in the task after. As for `Kill`, a worker
                        // that will not stop uses up tries, and out of them
                        // the parent's view it is: counted anyway, so that
                        // the limit holds in the end (found by review).
                        if !stopped {
                            tries = f.tries + 1;
                        }
                        let counted = stopped || tries >= MAX_TRIES;
                        stall = if counted {
                            f.stall.waiting(progress)
                        } else {
                            f.stall
                        };
                        if counted && stall.seen >= MAX_STALLS {
                            // Withdrawn from the reader, which would
                            // settle it again once the kill ends the frame.
                            link.reader_mark
                                .deferred
                                .store(link.deferred_stop.is_some(), SeqCst);
                            Verdict::Kill
                        } else {
                            Verdict::Defer {
                                waiting: Some(progress),
                            }
                        }
                    }
                    v => v,
                };
                // A spare this verdict overrules: no longer known finished.
                if verdict != Verdict::Spare && link.spared == Some(f.task_id) {
                    link.spared = None;
                }
                verdict
            };
            if verdict != Verdict::Kill {
                let _ = lock(&child).signal(libc::SIGCONT);
            }
            match verdict {
                Verdict::Kill => {
                    link.kill_reason = Some((f.task_id, reason));
                    // No more tasks for a worker about to die.
                    link.stopping = true;
                    doomed.push(Doomed::new(child));
                }
                // The reader takes it from here once it has caught up, or
                // the supervisor in a while if it has not: taken back at
                // once, it would freeze the worker again and again until
                // the reader caught up (found by review), and left to the
                // reader alone, it waited for ever on a reader stalled in
                // the middle of a frame (found by review).
                Verdict::Defer { waiting } => {
                    // A reader busy with what it read settles the stop
                    // itself; the check freezes nothing until it reads on.
                    let quiet = match waiting {
                        None => Some(Quiet::Busy(link.reader_mark.progress.load(SeqCst))),
                        Some(_) => None,
                    };
                    link.stop_retry = Some(StopRetry {
                        task_id: f.task_id,
                        reason: reason.clone(),
                        tries,
                        stall,
                        quiet,
                        at: now + BEHIND_RECHECK,
                    });
                    link.leave_stop_to_reader(f.task_id, reason);
                }
                Verdict::Retry => {
                    link.stop_retry = Some(StopRetry {
                        task_id: f.task_id,
                        reason,
                        tries: f.tries + 1,
                        stall,
                        quiet: None,
                        at: now + RETRY_AFTER,
                    });
                }
                // A stop asked for during the freeze, of the task after the
                // one that finished, is settled next.
                Verdict::Spare => next.extend(link.take_deferred_stop()),
            }
        }
        drop(st);
        // The supervisor skips deadlines while a stop is pending; a spared
        // worker's next head may have one, and a retry is one.
        shared.cond.notify_all();
        doomed.into_iter().for_each(Doomed::kill);
        freezes = next;
    }
}

/// Waits up to [`STOP_WAIT`] in all for workers sent `SIGSTOP` to stop (or
/// to end); whether each did. Polls without holding a child's lock between
/// looks: its reader may need it to reap.
fn wait_stopped(freezes: &[Freeze]) -> Vec<bool> {
    let deadline = Instant::now() + STOP_WAIT;
    let mut pause = Duration::from_micros(20);
    let mut stopped = vec![false; freezes.len()];
    loop {
        for (f, done) in freezes.iter().zip(&mut stopped) {
            if let (false, Some((_, child))) = (*done, &f.armed) {
                *done = lock(child).stopped_or_gone();
            }
        }
        if stopped.iter().all(|&s| s) || Instant::now() >= deadline {
            return stopped;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
#[path = "freeze_tests.rs"]
mod tests;
