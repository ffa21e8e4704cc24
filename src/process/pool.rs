//! [`ProcessPoolExecutor`]: workers that are real subprocesses.

use crate::sync::{Arc, Condvar, Mutex};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::own_thread;
use super::state::{Failures, HardStop, Limits, Pending, State};
use super::tree::{ProcessTable, Tree};
use crate::executor::task::Job;
use crate::executor::task::PortableTask;
use crate::executor::{Portable, Task};
use crate::sync::lock;
use crate::{Error, Executor, Future, ShutdownOutcome};

/// What every thread of one pool shares.
pub(crate) struct Shared {
    /// What this pool's tasks record in their futures (see
    /// `Executor::__thread_pool_id`): not a thread pool's, so that a
    /// thread-pool worker waiting on one knows it is no task of its own.
    pub(crate) id: u64,
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    /// Signalled on every change a waiter may care about: the supervisor
    /// (workers wanted, deadlines), and `shutdown(wait = true)`.
    pub(crate) cond: Condvar,
    /// Whether the pool may stop a running task: it was built with
    /// `kill_on_cancel` or a `task_timeout`, or a task came with a time
    /// limit. Only then do readers keep their mark exact for a stop's
    /// verdict, which costs a `poll` per wait (see `super::freeze`).
    pub(crate) stops_possible: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Fails tasks collected under the lock, after it was released.
    pub(crate) fn finish(&self, failures: Failures) {
        for (job, error) in failures {
            job.fail(error);
        }
    }

    /// [`Shared::finish`] for a worker counted out of `live` in the same
    /// critical section that counted it into `finishing`: fails its tasks,
    /// then counts it out of `finishing` and tells `shutdown(wait = true)`.
    pub(crate) fn finish_worker(&self, failures: Failures) {
        self.cond.notify_all();
        self.finish(failures);
        lock(&self.state).finishing -= 1;
        self.cond.notify_all();
    }
}

pub(crate) struct Config {
    pub(crate) limits: Limits,
    pub(crate) initializer: Option<u64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) startup_timeout: Duration,
    pub(crate) terminate_grace: Duration,
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    /// Test-harness mode: drop what the harness prints before `init()`.
    pub(super) hold_stdout: bool,
    pub(super) env: Vec<(OsString, OsString)>,
}

/// A pool of worker processes, like Python's
/// `concurrent.futures.ProcessPoolExecutor`, that survives its workers'
/// crashes.
///
/// Workers are this executable started again; `main` must begin with
/// [`concurrent_futures::init()`](crate::init). Tasks are portable: a `fn`
/// item and a serde argument, through [`ExecutorExt`](crate::ExecutorExt).
/// What the task prints reaches the parent's stdout and stderr.
///
/// A worker that dies (panic=abort, segfault, `exit`, SIGKILL) fails only
/// the task it was running, with [`Error::WorkerDied`] carrying the exit
/// code or signal; tasks queued behind it go to other workers and a new
/// worker starts (CPython breaks the whole pool here).
///
/// ```no_run
/// use concurrent_futures::{ExecutorExt, ProcessPoolExecutor};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> Result<(), concurrent_futures::Error> {
///     concurrent_futures::init();
///     let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
///     assert_eq!(pool.submit(square, 12).into_result()?, 144);
///     Ok(())
/// }
/// ```
pub struct ProcessPoolExecutor {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.shared.config.limits.max_workers)
            .field("workers", &st.links.len())
            .field("queued", &st.queue.len())
            .field("shutdown", &st.shutdown)
            .field("broken", &st.broken)
            .finish()
    }
}

impl ProcessPoolExecutor {
    /// A pool of `max_workers` processes with default settings.
    pub fn new(max_workers: usize) -> Result<Self, Error> {
        Self::builder().max_workers(max_workers).build()
    }

    /// Submits `func(arg)` with a time limit counted from when a worker
    /// starts it: past it, the worker is killed and replaced and the future
    /// fails with [`Error::TaskTimeout`] (pebble L8).
    pub fn submit_with_timeout<F, A, R>(&self, func: F, arg: A, limit: Duration) -> Future<R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable + Serialize + DeserializeOwned,
        R: Portable + Sync,
    {
        let (task, future) = PortableTask::create(func, arg);
        let job: Arc<dyn Job> = task;
        if let Err((task, e)) = self.enqueue(Task { job }, Some(limit)) {
            task.fail(e);
        }
        future
    }

    /// [`Executor::shutdown`], callable without importing the trait.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        Executor::shutdown(self, wait, cancel_futures)
    }

    /// [`Executor::max_workers`], callable without importing the trait.
    pub fn max_workers(&self) -> usize {
        self.shared.config.limits.max_workers
    }

    /// Stops the pool now (CPython 3.14's `kill_workers`, S14): shuts it
    /// down, cancels every queued task, and SIGKILLs every worker (and the
    /// processes its task started: see
    /// [`task_timeout`](crate::ProcessPoolBuilder::task_timeout)). Tasks the
    /// workers held fail with [`Error::Broken`]; nothing is re-sent and no
    /// worker is replaced. Later submits are refused with
    /// [`Error::Shutdown`]. Returns at once; the workers are reaped in the
    /// background (`shutdown(true, _)` waits for that). Harmless on a pool
    /// that is already stopped or has no workers yet.
    pub fn kill_workers(&self) {
        self.stop_workers(HardStop::Kill, libc::SIGKILL);
    }

    /// [`kill_workers`](Self::kill_workers) with SIGTERM instead of SIGKILL
    /// (CPython 3.14's `terminate_workers`), for tasks that clean up in a
    /// SIGTERM handler; the processes the tasks started get SIGTERM too. A
    /// worker that survives the signal finishes its task normally, and the
    /// tasks already sent ahead to it (see
    /// [`prefetch`](crate::ProcessPoolBuilder::prefetch)), then exits: their
    /// futures get their results. Nothing is escalated to SIGKILL; for
    /// that, use [`shutdown_within`](Self::shutdown_within).
    pub fn terminate_workers(&self) {
        self.stop_workers(HardStop::Terminate, libc::SIGTERM);
    }

    /// [`Executor::shutdown_within`], callable without importing the trait:
    /// shuts down and waits at most `deadline` for the work to end; then
    /// sends SIGTERM to the workers, waits at most
    /// [`terminate_grace`](crate::ProcessPoolBuilder::terminate_grace), and
    /// sends SIGKILL to those still alive (PP8).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use concurrent_futures::{ProcessPoolExecutor, ShutdownOutcome};
    ///
    /// fn main() -> Result<(), concurrent_futures::Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::new(2)?;
    ///     // ... on SIGTERM from the service manager, 25 s before it kills us:
    ///     match pool.shutdown_within(Duration::from_secs(20), true) {
    ///         ShutdownOutcome::Finished => {}
    ///         other => eprintln!("workers stopped at the deadline: {other:?}"),
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn shutdown_within(&self, deadline: Duration, cancel_futures: bool) -> ShutdownOutcome {
        Executor::shutdown_within(self, deadline, cancel_futures)
    }

    /// Shuts the pool down, cancels what is queued, and sends `signal` to
    /// every worker, serving or starting, and to the processes the serving
    /// ones' tasks started. What the workers held fails with `why`'s error
    /// once they are gone (see `link::worker_gone`).
    fn stop_workers(&self, why: HardStop, signal: libc::c_int) -> Stopped {
        let mut st = lock(&self.shared.state);
        st.shutdown = true;
        st.hard_stop = Some(why);
        st.want = 0;
        let cancelled: Vec<_> = st.queue.drain(..).collect();
        let held = st.links.iter().any(|l| !l.in_flight.is_empty());
        let serving: Vec<_> = st.links.iter().map(|l| l.child.clone()).collect();
        let starting: Vec<_> = st.starting.iter().map(|s| s.child.clone()).collect();
        // With nothing queued, this tells idle workers to exit, and the
        // others as soon as their task ends: a worker that survives SIGTERM
        // (a task ignored it) must not linger.
        let mut failures = Failures::new();
        st.dispatch(&self.shared.config.limits, &mut failures);
        let cancelled_was_empty = cancelled.is_empty();
        own_thread::end_released(&self.shared, st, || {
            self.shared.finish(failures);
            for p in cancelled {
                if !p.job.clone().cancel() {
                    p.job.fail(why.error());
                }
            }
        });
        // Signalled with the lock released: finding the process trees reads
        // all of `/proc`, once for every worker.
        let table = if serving.is_empty() {
            ProcessTable::default()
        } else {
            ProcessTable::read()
        };
        let mut stopped = Stopped {
            work_stopped: held || !cancelled_was_empty,
            ..Stopped::default()
        };
        for child in &serving {
            let mut c = lock(child);
            stopped.running += usize::from(c.is_running());
            stopped.trees.push(c.signal_tree(&table, signal));
        }
        for child in &starting {
            let mut c = lock(child);
            stopped.running += usize::from(c.is_running());
            let _ = c.signal(signal);
        }
        stopped
    }

    /// Waits until every worker has exited and every task it held has
    /// ended, or `deadline` passes (`None`: no deadline). Returns whether
    /// everything ended.
    ///
    /// On one of the pool's own threads (a done-callback), it waits for
    /// everything but what such waiting threads hold (see [`own_thread`]).
    fn wait_for_workers(&self, deadline: Option<Instant>) -> bool {
        if own_thread::role_in(&self.shared).is_some() {
            return own_thread::wait_for_the_others(&self.shared, deadline);
        }
        let mut st = lock(&self.shared.state);
        while st.live > 0 || st.want > 0 || st.finishing > 0 {
            st = match crate::sync::wait_deadline(&self.shared.cond, st, deadline) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
        true
    }

    /// Whether a submit would be accepted now: not shut down, not broken.
    pub(crate) fn accepts_tasks(&self) -> bool {
        lock(&self.shared.state).refusal().is_none()
    }

    /// The pids of the workers currently serving (for diagnostics and tests).
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.shared.state)
            .links
            .iter()
            .map(|l| l.pid)
            .collect()
    }

    /// Queues `task`, tagged with this pool's id: a thread-pool worker
    /// that waits on its future then knows no work of its own pool
    /// completes it, and does not help (`Core::helps_in`), however the task
    /// got here (`submit`, `submit_with_timeout`, a user's executor that
    /// forwards to this pool).
    fn enqueue(&self, task: Task, timeout: Option<Duration>) -> Result<(), (Task, Error)> {
        let adopted = task.job.pool_view().adopt_pool(self.shared.id);
        self.enqueue_tagged(task, timeout).map_err(|(task, e)| {
            if adopted {
                task.job.pool_view().disown_pool();
            }
            (task, e)
        })
    }

    fn enqueue_tagged(&self, task: Task, timeout: Option<Duration>) -> Result<(), (Task, Error)> {
        let Some(job) = task.job.clone().into_portable() else {
            return Err((
                task,
                Error::InvalidConfig(
                    "a process pool runs only portable tasks (a fn item and a serde \
                     argument, via ExecutorExt::submit); closures that capture can \
                     only run on a ThreadPoolExecutor"
                        .into(),
                ),
            ));
        };
        if let Some(e) = lock(&self.shared.state).refusal() {
            return Err((task, e));
        }
        // Encoded here, on the submitting thread: an argument that will not
        // encode, or whose `Serialize` panics, fails only its own future
        // (D1, P10).
        let arg = match super::state::encode_arg_caught(&*job, "") {
            Ok(a) => a,
            Err(e) => return Err((task, e)),
        };
        if let Err(e) = check_frame_size(
            &arg,
            self.shared.config.limits.max_frame_bytes,
            job.arg_type_name(),
        ) {
            return Err((task, e));
        }
        if timeout.is_some() {
            self.shared
                .stops_possible
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let mut failures = Failures::new();
        let mut st = lock(&self.shared.state);
        if let Some(e) = st.refusal() {
            return Err((task, e));
        }
        let task_id = st.next_task;
        st.next_task += 1;
        st.queue.push_back(Pending {
            task_id,
            job,
            arg: Some(arg),
            timeout: timeout.or(self.shared.config.task_timeout),
            started: false,
            watched: false,
            stop_when_started: false,
        });
        // Through the writer threads: a pipe write from this thread would
        // wake the worker onto this thread's busy core (see `outbox`).
        st.dispatch_from(&self.shared.config.limits, &mut failures, false);
        // The supervisor must hear of a timed task, and of workers wanted
        // (a pool whose idle workers exited starts them for this task).
        let wake_supervisor = st.want > 0;
        drop(st);
        if wake_supervisor || timeout.is_some() || self.shared.config.task_timeout.is_some() {
            self.shared.cond.notify_all();
        }
        self.shared.finish(failures);
        Ok(())
    }
}

impl Executor for ProcessPoolExecutor {
    fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
        self.enqueue(task, None)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let mut st = lock(&self.shared.state);
        st.shutdown = true;
        let cancelled: VecDeque<_> = if cancel_futures {
            st.queue.drain(..).collect()
        } else {
            VecDeque::new()
        };
        let mut failures = Failures::new();
        st.dispatch(&self.shared.config.limits, &mut failures);
        own_thread::end_released(&self.shared, st, || {
            self.shared.finish(failures);
            for p in cancelled {
                if !p.job.clone().cancel() {
                    // A task taken back from a dead worker is pending again
                    // (`link::worker_gone`) and cancels above; one that
                    // could not go back can't run any more: it fails
                    // rather than hangs.
                    p.job.fail(Error::Cancelled);
                }
            }
        });
        if wait {
            self.wait_for_workers(None);
        }
    }

    fn __wait_ended(&self, deadline: Option<Instant>) -> bool {
        self.wait_for_workers(deadline)
    }

    fn shutdown_within(&self, deadline: Duration, cancel_futures: bool) -> ShutdownOutcome {
        let until = crate::sync::deadline(Some(deadline));
        Executor::shutdown(self, false, cancel_futures);
        if self.wait_for_workers(until) {
            return ShutdownOutcome::Finished;
        }
        let term = self.stop_workers(HardStop::Deadline, libc::SIGTERM);
        let grace = crate::sync::deadline(Some(self.shared.config.terminate_grace));
        // The trees found now are kept: a process that outlives SIGTERM
        // after its worker died belongs to init, and no later scan would
        // find it.
        let ended = self.wait_for_workers(grace);
        if ended && term.trees.iter().all(|t| t.wait_exited(grace)) {
            return if term.running == 0 && !term.work_stopped {
                ShutdownOutcome::Finished // it all ended just before the signal
            } else {
                ShutdownOutcome::Terminated
            };
        }
        let survivors = term
            .trees
            .iter()
            .any(|t| !t.wait_exited(Some(Instant::now())));
        term.trees.iter().for_each(|t| t.signal(libc::SIGKILL));
        let kill = self.stop_workers(HardStop::Deadline, libc::SIGKILL);
        // A killed process ends at once unless the kernel holds it (an
        // uninterruptible wait): give the readers a moment to reap, but
        // never hang here on such a process.
        self.wait_for_workers(crate::sync::deadline(Some(REAP_WAIT)));
        if survivors || kill.running > 0 {
            ShutdownOutcome::Killed
        } else {
            // Every process was gone; only futures were still being failed.
            ShutdownOutcome::Terminated
        }
    }

    fn max_workers(&self) -> usize {
        self.shared.config.limits.max_workers
    }

    fn __thread_pool_id(&self) -> u64 {
        self.shared.id
    }
}

/// What [`ProcessPoolExecutor::stop_workers`] signalled.
#[derive(Default)]
struct Stopped {
    /// Worker processes that were still running.
    running: usize,
    /// Whether any task was cancelled from the queue or held by a worker
    /// (it fails, or ends when a worker that survives the signal does).
    work_stopped: bool,
    /// The process trees of the serving workers, as found then.
    trees: Vec<Tree>,
}

/// How long `shutdown_within` waits for SIGKILLed workers to be reaped
/// before it returns anyway.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// An argument must fit in one frame with the message around it; checked
/// when it is submitted, so it fails only its own task (with the limit in
/// the message) instead of a worker's pipe.
pub(crate) fn check_frame_size(
    arg: &[u8],
    max_frame_bytes: usize,
    type_name: &'static str,
) -> Result<(), Error> {
    const ENVELOPE: usize = 64;
    if arg.len().saturating_add(ENVELOPE) > max_frame_bytes {
        return Err(Error::Encode {
            type_name,
            message: format!(
                "the encoded argument is {} bytes, more than the {} an argument may take \
                 (max_frame_bytes {max_frame_bytes}, less {ENVELOPE} for the message around it)",
                arg.len(),
                max_frame_bytes.saturating_sub(ENVELOPE)
            ),
        });
    }
    Ok(())
}

/// Never blocks: queued work still runs, then the workers exit (decision 6).
impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(false, false);
    }
}
