//! The parent's bookkeeping of a process pool, and the one rule that moves
//! tasks: [`State::dispatch`].
//!
//! Everything here is plain data under the pool's lock; the threads in
//! `pool.rs` (one supervisor, and a reader and a writer per worker) only
//! ever change it through these methods, then act outside the lock (write
//! to a pipe, complete a future, start a process).

use crate::sync::{Arc, Mutex};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::child::WorkerChild;
use super::outbox::Outbox;
use super::protocol::ToWorker;
use crate::Error;
use crate::executor::PortableJob;

/// A task the parent has accepted and not yet seen finish.
pub(crate) struct Pending {
    pub(crate) task_id: u64,
    pub(crate) job: Arc<dyn PortableJob>,
    /// The encoded argument until it is sent; re-encoded from the task if a
    /// dead worker's queued tasks must be sent again.
    pub(crate) arg: Option<Vec<u8>>,
    pub(crate) timeout: Option<Duration>,
    /// Marked running already (when sent; cleared if taken back unstarted
    /// from a dead worker, see `Link`'s requeue in `link::worker_gone`).
    pub(crate) started: bool,
    /// Watched by the pool's `CancelStopper` (a `kill_on_cancel` pool), once
    /// for its life: a task sent again is not registered twice.
    pub(crate) watched: bool,
    /// Cancelled while it waited in its worker's pipe, in a pool that
    /// stops cancelled tasks: the worker is killed when it starts it (see
    /// `cancel`).
    pub(crate) stop_when_started: bool,
}

/// A worker that finished its handshake.
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    /// Messages to the worker; dropping it closes the worker's command
    /// pipe.
    pub(crate) outbox: Outbox,
    /// Sent and not yet answered, in order; the head is running.
    pub(crate) in_flight: VecDeque<Pending>,
    /// When the head task started (when the previous one finished or the
    /// head was sent to an idle worker).
    pub(crate) head_since: Instant,
    /// Tasks sent to this worker over its life (`max_tasks_per_child`).
    pub(crate) sent: usize,
    /// How many tasks may be in flight to this worker now: `prefetch`, or
    /// more while its tasks are short (see [`Link::task_done`]).
    pub(crate) depth: usize,
    /// Told to exit (`Shutdown` sent); it gets no more tasks.
    pub(crate) stopping: bool,
    /// Over `max_memory_per_child`: it gets no more tasks, and is told to
    /// exit once those it holds are done (L5).
    pub(crate) retiring: bool,
    /// Why the supervisor killed it, if it did: the task that timed out
    /// and its error. Applies only if that task is still the head when the
    /// worker's end is seen (it may have finished just in time).
    pub(crate) kill_reason: Option<(u64, Error)>,
    /// Frozen (`SIGSTOP`) for a stop whose verdict is being reached (see
    /// [`super::freeze`]).
    pub(crate) frozen: bool,
    /// A stop of the head (its task id, why) left to the reader, which
    /// was behind when it was decided (see [`super::freeze`]).
    pub(crate) deferred_stop: Option<(u64, Error)>,
    /// A stop whose worker did not stop in time, for the supervisor to try
    /// again (see [`super::freeze`]).
    pub(crate) stop_retry: Option<super::freeze::StopRetry>,
    /// The head task a verdict found finished, its result waiting unread
    /// in the pipe: no stop of it is due while it is still the head (see
    /// [`super::freeze`]).
    pub(crate) spared: Option<u64>,
    /// Whether the reader has handled every result it has read from the
    /// pipe: with the worker frozen and the pipe empty, the head is then
    /// what the worker runs (see [`super::freeze`]).
    pub(crate) reader_mark: Arc<super::freeze::ReaderMark>,
    /// The reader's end of the result pipe, open while this link is in the
    /// state (the reader takes the link out before it closes the pipe).
    pub(crate) results_fd: std::os::fd::RawFd,
    pub(crate) child: Arc<Mutex<WorkerChild>>,
}

/// Tasks shorter than this count as tiny: the round trip, not the work,
/// is what limits them.
const SHORT_TASK: Duration = Duration::from_micros(200);
/// The deepest a worker's pipeline grows for tiny tasks.
const MAX_DEPTH: usize = 64;

impl Link {
    /// Adapts the pipeline depth to the task that just took `ran`: tiny
    /// tasks double it (up to [`MAX_DEPTH`]), so a stream of them is sent
    /// and answered in batches instead of one round trip each; any longer
    /// task brings it back to `prefetch`, so long tasks are not stacked
    /// behind each other on one worker while another idles. So does the
    /// worker running dry (see [`State::dispatch`]).
    pub(crate) fn task_done(&mut self, ran: Duration, limits: &Limits) {
        self.depth = if ran < SHORT_TASK {
            (self.depth.saturating_mul(2)).clamp(limits.prefetch, MAX_DEPTH.max(limits.prefetch))
        } else {
            limits.prefetch
        };
    }

    /// Sends `Shutdown`: the worker exits after what it holds, and gets no
    /// more tasks. (A pipe already closed means it is exiting anyway.)
    fn tell_to_exit(&mut self) {
        self.stopping = true;
        let _ = self.outbox.send(ToWorker::Shutdown, true);
    }

    /// The depth to fill to now: while the running task has already taken
    /// longer than a short one, only `prefetch`, whatever earlier tiny tasks
    /// taught, so a worker busy with a long task is not handed a deep
    /// pipeline that another worker could be running.
    fn depth_now(&self, now: Instant, limits: &Limits) -> usize {
        if !self.in_flight.is_empty()
            && now.saturating_duration_since(self.head_since) >= SHORT_TASK
        {
            limits.prefetch
        } else {
            self.depth
        }
    }
}

/// A worker process started and not yet through its handshake.
pub(crate) struct Starting {
    pub(crate) id: u64,
    pub(crate) since: Instant,
    pub(crate) child: Arc<Mutex<WorkerChild>>,
    /// It has started and runs the pool's initializer, which takes as long
    /// as it takes (P5): `startup_timeout` no longer applies.
    pub(crate) initializing: bool,
}

/// Why the pool stopped its own workers with a signal; it names the cause in
/// the error of every task those workers held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HardStop {
    /// `kill_workers()`: SIGKILL.
    Kill,
    /// `terminate_workers()`: SIGTERM.
    Terminate,
    /// `shutdown_within()`: its deadline passed (SIGTERM, then SIGKILL).
    Deadline,
}

impl HardStop {
    /// The error of a task whose worker was stopped this way.
    pub(crate) fn error(self) -> Error {
        let reason = match self {
            HardStop::Kill => "kill_workers() stopped its worker while the task was running",
            HardStop::Terminate => {
                "terminate_workers() stopped its worker while the task was running"
            }
            HardStop::Deadline => {
                "the shutdown_within() deadline passed while the task was running, \
                 and its worker was stopped"
            }
        };
        Error::Broken {
            executor: "process pool",
            reason: reason.into(),
        }
    }

    /// The signal for a worker that was still being spawned when the stop
    /// came, and so was in no list the stop signalled. It holds no task:
    /// nothing is lost by killing it outright, except where the user asked
    /// for SIGTERM only (`terminate_workers`).
    pub(crate) fn late_signal(self) -> libc::c_int {
        match self {
            HardStop::Kill | HardStop::Deadline => libc::SIGKILL,
            HardStop::Terminate => libc::SIGTERM,
        }
    }
}

/// Limits that `dispatch` obeys.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_workers: usize,
    pub(crate) max_frame_bytes: usize,
    pub(crate) prefetch: usize,
    pub(crate) max_tasks_per_child: Option<usize>,
    /// Workers idle this long exit, and workers start only for queued work
    /// (loky L4); `None`: the pool keeps `max_workers` running.
    pub(crate) idle_timeout: Option<Duration>,
    /// A worker whose resident memory passes this many bytes is replaced
    /// after its task (loky L5).
    pub(crate) max_memory_per_child: Option<u64>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) queue: VecDeque<Pending>,
    pub(crate) links: Vec<Link>,
    pub(crate) starting: Vec<Starting>,
    /// Worker processes started and not yet reaped.
    pub(crate) live: usize,
    /// Workers the supervisor should start.
    pub(crate) want: usize,
    pub(crate) shutdown: bool,
    pub(crate) broken: Option<String>,
    /// Set when the pool stopped its workers with a signal (`kill_workers`,
    /// `terminate_workers`, a `shutdown_within` deadline): nothing is
    /// re-sent or replaced, and every task a worker held fails.
    pub(crate) hard_stop: Option<HardStop>,
    /// Failed starts in a row; three make the pool broken.
    pub(crate) start_failures: usize,
    /// Workers in a row that ended on their own after their handshake and
    /// before they were sent a task, with no result from any worker in
    /// between; three make the pool broken, as failed starts do.
    pub(crate) idle_deaths: usize,
    /// Workers counted out of `live` whose tasks are still being failed
    /// (outside the lock): `shutdown(wait = true)` waits for these too, so
    /// it never returns before a dead worker's futures have ended (S3).
    pub(crate) finishing: usize,
    /// The pool's own threads blocked in `shutdown(wait = true)` (from a
    /// done-callback), each holding back one unit of `live + finishing`,
    /// and whether the supervisor is one of them (see `own_thread`).
    pub(crate) own_waiters: usize,
    pub(crate) supervisor_waits: bool,
    /// Threads ending tasks a shutdown took from the queue, each holding
    /// one unit of `finishing` meanwhile (see `own_thread::end_released`).
    pub(crate) enders: Vec<crate::sync::ThreadId>,
    /// Set in a `kill_on_cancel` pool: watches every task sent, and stops
    /// the ones cancelled while they run (see `cancel`).
    pub(crate) stop_on_cancel: Option<Arc<dyn crate::future::core::Watcher>>,
    pub(crate) next_task: u64,
    pub(crate) next_worker: u64,
}

/// Whether `limit` has passed since `since` at `now`. A limit too large to
/// add (`Duration::MAX`, a common "no limit") never passes.
pub(crate) fn passed(since: Instant, limit: Duration, now: Instant) -> bool {
    since.checked_add(limit).is_some_and(|end| now >= end)
}

/// Encodes a task's argument, running the user's `Serialize`: a panic
/// there fails only this task, with [`Error::Encode`] (D1), as an error it
/// returns does. It runs at submit, on the submitting thread (a chunk that
/// fails so is then sent item by item, and only the item at fault fails),
/// and again for a task sent again after its worker died (its bytes went
/// with the first send), under the pool's lock on a reader or submitting
/// thread, where a panic would unwind through the pool's bookkeeping and
/// strand the thread's worker. `when` says which, for the message.
pub(crate) fn encode_arg_caught(job: &dyn PortableJob, when: &str) -> Result<Vec<u8>, Error> {
    super::codec::serialize_caught(job.arg_type_name(), when, || job.encode_arg())
}

/// Tasks to fail once the lock is released.
pub(crate) type Failures = Vec<(Arc<dyn PortableJob>, Error)>;

impl State {
    /// The error a refused submit gets, if submits are refused.
    pub(crate) fn refusal(&self) -> Option<Error> {
        if let Some(reason) = &self.broken {
            Some(Error::Broken {
                executor: "process pool",
                reason: reason.clone(),
            })
        } else if self.shutdown {
            Some(Error::Shutdown)
        } else {
            None
        }
    }

    /// Whether a worker that went away should be replaced: not when broken,
    /// and after shutdown only while queued work remains (S4).
    pub(crate) fn should_replace(&self) -> bool {
        self.broken.is_none()
            && self.hard_stop.is_none()
            && (!self.shutdown || !self.queue.is_empty())
    }

    /// Keeps the number of workers (live or requested) at `max_workers`
    /// while workers are wanted; in a pool whose idle workers exit, only
    /// while there are more tasks (queued or in flight) than workers
    /// serving, starting or wanted: one worker per task, up to
    /// `max_workers`.
    pub(crate) fn top_up(&mut self, limits: &Limits) {
        if !self.should_replace() {
            return;
        }
        let missing = limits.max_workers.saturating_sub(self.live + self.want);
        self.want += match limits.idle_timeout {
            None => missing,
            Some(_) => {
                let serving = self.links.iter().filter(|l| !l.stopping).count() + self.coming();
                missing.min(self.outstanding().saturating_sub(serving))
            }
        };
    }

    /// Workers on their way: wanted, being spawned, or starting (every
    /// live worker not linked yet; `live` counts one from the moment the
    /// supervisor takes it off `want`).
    fn coming(&self) -> usize {
        self.live.saturating_sub(self.links.len()) + self.want
    }

    /// Tasks queued or in flight to a worker that is still taking tasks.
    fn outstanding(&self) -> usize {
        let in_flight: usize = self
            .links
            .iter()
            .filter(|l| !l.stopping)
            .map(|l| l.in_flight.len())
            .sum();
        self.queue.len() + in_flight
    }

    /// Tells workers idle for `idle_timeout` to exit (L4). Their readers
    /// see them go; `top_up` starts workers again when work comes.
    pub(crate) fn retire_idle(&mut self, limits: &Limits, now: Instant) {
        let Some(idle) = limits.idle_timeout else {
            return;
        };
        for link in &mut self.links {
            if !link.stopping && link.in_flight.is_empty() && passed(link.head_since, idle, now) {
                link.tell_to_exit();
            }
        }
    }

    /// Sends queued tasks to workers with room (at most `depth` in
    /// flight each, and never past `max_tasks_per_child`), and tells idle
    /// workers to exit when nothing is left for them.
    ///
    /// No worker gets more than its fair share of the outstanding tasks
    /// (queued plus in flight, over the workers taking tasks or starting), beyond
    /// `prefetch`: a pipeline deepened by earlier tiny tasks must not pull a
    /// whole batch of long tasks onto one worker while another idles.
    pub(crate) fn dispatch(&mut self, limits: &Limits, failures: &mut Failures) {
        self.dispatch_from(limits, failures, true);
    }

    /// [`State::dispatch`]; `write_through` false sends every task through
    /// the workers' writer threads, as a submitting thread must (see
    /// [`super::outbox`]).
    pub(crate) fn dispatch_from(
        &mut self,
        limits: &Limits,
        failures: &mut Failures,
        write_through: bool,
    ) {
        self.top_up(limits);
        // Workers still starting (or about to) count: they will take their
        // share soon. Until they do, a worker gets no task sent ahead that
        // one of them could run: two long tasks submitted to a pool whose
        // second worker is still starting must not queue on the first (P3).
        let coming = self.coming();
        let taking = (self.links.iter().filter(|l| !l.stopping).count() + coming).max(1);
        let outstanding = self.outstanding();
        let floor = if coming > 0 { 1 } else { limits.prefetch };
        let fair_share = outstanding.div_ceil(taking).max(floor);
        let now = Instant::now();
        // A worker that ran dry starts again at `prefetch`: its depth was
        // earned by the stream it finished, and tasks sent ahead report
        // `running()` and cannot be cancelled (X7, S5). A new stream of
        // tiny tasks deepens it again within a few results.
        for link in &mut self.links {
            if link.in_flight.is_empty() {
                link.depth = limits.prefetch;
            }
        }
        while !self.queue.is_empty() {
            let Some(link) = self
                .links
                .iter_mut()
                .filter(|l| {
                    !l.stopping
                        && l.in_flight.len() < l.depth_now(now, limits).min(fair_share)
                        && !l.retiring
                        && limits.max_tasks_per_child.is_none_or(|m| l.sent < m)
                })
                .min_by_key(|l| l.in_flight.len())
            else {
                break;
            };
            let mut p = self.queue.pop_front().expect("queue is not empty");
            if !p.started {
                // Watched before it can run, so that a cancel is never
                // missed (see `cancel`).
                if let (Some(stopper), false) = (&self.stop_on_cancel, p.watched) {
                    if !p.job.stop_on_cancel(stopper, p.task_id as usize) {
                        continue; // cancelled while queued
                    }
                    p.watched = true;
                }
                if !p.job.mark_running() {
                    continue; // cancelled while queued
                }
                p.started = true;
            } else if p.job.is_done() {
                continue; // cancelled while it ran, then sent back here
            }
            let arg = match p.arg.take() {
                Some(a) => a,
                None => {
                    match encode_arg_caught(&*p.job, " again, sending the task to a new worker") {
                        Ok(a) => a,
                        Err(e) => {
                            failures.push((p.job, e));
                            continue;
                        }
                    }
                }
            };
            let arg = match super::pool::check_frame_size(
                &arg,
                limits.max_frame_bytes,
                p.job.arg_type_name(),
            ) {
                Ok(()) => arg,
                Err(e) => {
                    failures.push((p.job, e));
                    continue;
                }
            };
            let msg = ToWorker::Run {
                task_id: p.task_id,
                entry: p.job.entry(),
                arg,
            };
            // Write through (no hop to the writer thread) while the worker
            // would otherwise run dry; a deeper pipeline is sent in batches
            // (see `super::outbox` for both rules).
            let write_through = write_through && link.in_flight.len() < limits.prefetch;
            if link.outbox.send(msg, write_through).is_err() {
                // The pipe is closed, so the worker is dying; its reader
                // will requeue what it holds. Keep this task queued, and
                // pending again (see `link::worker_gone`).
                if p.job.mark_pending_again() {
                    p.started = false;
                }
                self.queue.push_front(p);
                link.stopping = true;
                continue;
            }
            if link.in_flight.is_empty() {
                link.head_since = Instant::now();
            }
            link.sent += 1;
            link.in_flight.push_back(p);
        }
        self.fail_stranded(failures);
        let nothing_left = self.queue.is_empty() && (self.shutdown || self.broken.is_some());
        for link in &mut self.links {
            let retired =
                link.retiring || limits.max_tasks_per_child.is_some_and(|m| link.sent >= m);
            if !link.stopping && link.in_flight.is_empty() && (retired || nothing_left) {
                link.tell_to_exit();
            }
        }
        self.top_up(limits);
    }

    /// Fails the queued tasks no worker will ever take: the pool broke or
    /// stopped its workers (so it starts none), and no worker is left that
    /// takes tasks or is on its way. Every path that queues a task again
    /// (a dead worker's tasks sent ahead, a send to a closing pipe) ends in
    /// a dispatch, so none is stranded.
    fn fail_stranded(&mut self, failures: &mut Failures) {
        if self.queue.is_empty()
            || self.should_replace()
            || self.coming() > 0
            || self.links.iter().any(|l| !l.stopping)
        {
            return;
        }
        let error = match (&self.hard_stop, self.refusal()) {
            (Some(stop), _) => stop.error(),
            (None, Some(refusal)) => refusal,
            (None, None) => return, // shut down with queued work: replaced
        };
        self.fail_queue(&error, failures);
    }

    /// Fails every queued task with `error` (a broken pool).
    pub(crate) fn fail_queue(&mut self, error: &Error, failures: &mut Failures) {
        for p in self.queue.drain(..) {
            failures.push((p.job, error.clone()));
        }
    }

    /// The earliest moment the supervisor must act: a running task's
    /// timeout, a start that takes too long, a worker's idle timeout, or a
    /// stop to try again.
    /// A worker with a stop decided or under way has no deadline left
    /// (`Link::stop_pending`): its reader cleans up or settles the stop,
    /// and the supervisor must not wake every millisecond for its passed
    /// one until then.
    pub(crate) fn next_deadline(
        &self,
        startup_timeout: Duration,
        limits: &Limits,
    ) -> Option<Instant> {
        let tasks = self
            .links
            .iter()
            .filter(|l| !l.stop_pending())
            .filter_map(|l| {
                let limit = match l.in_flight.front() {
                    Some(head) => head.timeout?,
                    None if l.stopping => return None,
                    None => limits.idle_timeout?,
                };
                l.head_since.checked_add(limit)
            });
        let retries = self
            .links
            .iter()
            .filter_map(|l| l.stop_retry.as_ref().map(|r| r.at));
        let starts = self
            .starting
            .iter()
            .filter(|s| !s.initializing)
            .filter_map(|s| s.since.checked_add(startup_timeout));
        tasks.chain(retries).chain(starts).min()
    }
}
