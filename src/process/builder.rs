//! [`ProcessPoolBuilder`]: how a process pool is configured and built.

use crate::sync::{Arc, Condvar, Mutex};
use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use super::pool::{Config, ProcessPoolExecutor, Shared};
use super::state::{Limits, State};
use super::supervisor::supervise;
use super::{entry, worker};
use crate::Error;
use crate::sync::lock;

/// The smallest `max_frame_bytes` a pool accepts: room for the handshake
/// and for a task's error, cut to fit, with some words of its message.
const MIN_FRAME_BYTES: usize = 1024;
/// The largest: a frame's length travels as 32 bits.
const MAX_FRAME_BYTES: usize = u32::MAX as usize;

/// Configures a [`ProcessPoolExecutor`]. Two builders are equal when they
/// would build pools configured alike (see
/// [`build_reusable`](Self::build_reusable)).
#[must_use]
#[derive(Clone, PartialEq, Eq)]
pub struct ProcessPoolBuilder {
    max_workers: Option<usize>,
    max_tasks_per_child: Option<usize>,
    max_frame_bytes: usize,
    prefetch: usize,
    initializer: Option<u64>,
    task_timeout: Option<Duration>,
    startup_timeout: Duration,
    terminate_grace: Duration,
    idle_timeout: Option<Duration>,
    max_memory_per_child: Option<u64>,
    args: Option<Vec<OsString>>,
    env: Vec<(OsString, OsString)>,
    test_harness: bool,
    kill_on_cancel: bool,
}

impl fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("max_memory_per_child", &self.max_memory_per_child)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("task_timeout", &self.task_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// The worker arguments that make a libtest binary run only the hidden test
/// that [`process_pool_test_worker!`](crate::process_pool_test_worker) adds.
///
/// No `--exact`: the filter also matches the test when the macro was used
/// inside a module (`tests::__concurrent_futures_worker`).
const TEST_HARNESS_ARGS: &[&str] = &[
    "__concurrent_futures_worker",
    "--nocapture",
    "--test-threads=1",
    "--quiet",
];

impl ProcessPoolBuilder {
    /// Worker processes. Default: the number of CPUs (P1). Zero is refused.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Replaces a worker after it has run `n` tasks (P4). Zero is refused.
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// The largest message either side may send (default 1 GiB). A result
    /// over it fails its task with [`Error::Encode`]; a worker announcing a
    /// larger frame is treated as broken, and replaced. A task's panic
    /// message and backtrace are cut to fit. A chunked map's chunk sends
    /// its items' results, and their panics, back in one frame: over it,
    /// each item of the chunk fails with `Encode` (see
    /// [`map_with`](crate::ExecutorExt::map_with)). [`build`](Self::build)
    /// refuses values under 1 KiB or over 4 GiB − 1 (a frame's length is
    /// 32 bits).
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }

    /// Replaces a worker whose resident memory (RSS) has grown past `bytes`,
    /// once the task it was running when that was seen has finished: a
    /// task that leaks, or a library that caches without bound, cannot
    /// grow a worker forever (loky L5; Celery's
    /// `worker_max_memory_per_child`). The parent reads each worker's RSS
    /// from `/proc` (Linux; elsewhere this does nothing) after a task ends,
    /// at most every 100 ms per worker. Zero is refused.
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory_per_child = Some(bytes);
        self
    }

    /// Tasks sent ahead to each worker (default 2: one running, one
    /// waiting in the pipe, which hides the round trip). While a worker's
    /// tasks take under 200 µs the pipeline deepens, up to 64, so tiny tasks
    /// travel in batches; a longer task, or the worker running out of
    /// tasks, brings it back to this value. Queued-ahead tasks report
    /// `running()` and cannot be cancelled (X7).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Lets `cancel()` stop a task that is already running, by killing the
    /// worker process that runs it (default: off, as in CPython, where
    /// `cancel()` of a running task returns `false` and the task runs on).
    ///
    /// When on, `cancel()` of a task sent to a worker returns `true` and
    /// ends its future at once with [`Error::Cancelled`]; the worker is
    /// killed and replaced, and the tasks queued behind it go to other
    /// workers (decision 4). A task cancelled while it waits in a worker's
    /// pipe behind another one is stopped as soon as it starts. Killing is
    /// abrupt, as for a [`task_timeout`](Self::task_timeout): whatever the
    /// task was doing stops where it was, and so do the processes it
    /// started (L6, best effort: see [`task_timeout`](Self::task_timeout)).
    /// The kill happens in the `cancel()` call, on the cancelling thread:
    /// finding the task's processes reads every `/proc/<pid>/stat` once, so
    /// such a `cancel()` takes about as long as listing the machine's
    /// processes, and grows with their number (about 1 ms for 70 processes
    /// on the 2-vCPU CI machine). Before it, the worker is stopped
    /// (`SIGSTOP`) and the pool makes sure the task still runs there, so
    /// that a task which has just finished is let be and the next one is
    /// never hit (up to 100 ms more for a worker slow to stop). Readers of
    /// such a pool `poll` before each read, 2–5 µs of a round trip.
    ///
    /// ```no_run
    /// use concurrent_futures::{ExecutorExt, ProcessPoolExecutor};
    ///
    /// fn crunch(n: u64) -> u64 {
    ///     (0..n).fold(0, |a, i| a ^ i.wrapping_mul(0x9E37_79B9))
    /// }
    ///
    /// fn main() {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::builder()
    ///         .kill_on_cancel(true)
    ///         .build()
    ///         .unwrap();
    ///     let f = pool.submit(crunch, u64::MAX);
    ///     while !f.running() {
    ///         std::thread::yield_now();
    ///     }
    ///     assert!(f.cancel()); // the worker running it is killed
    ///     assert!(f.cancelled());
    /// }
    /// ```
    pub fn kill_on_cancel(mut self, yes: bool) -> Self {
        self.kill_on_cancel = yes;
        self
    }

    /// Runs `init` once in every worker before its first task (P5). If it
    /// panics, the pool is broken: queued futures fail with
    /// [`Error::Broken`] and later submits are refused. It has no time
    /// limit, as in CPython (a slow one, loading a model, is fine; one that
    /// never returns holds its worker until `kill_workers` or a shutdown
    /// with a deadline). A worker that exits or crashes in it counts as a
    /// failed start. `init` is a `fn` item or a closure capturing nothing.
    pub fn initializer<F>(mut self, init: F) -> Self
    where
        F: Fn() + Copy + Send + Sync + 'static,
    {
        fn entry_of_unit<G: Fn(()) + Copy + Send + 'static>(_: G) -> u64 {
            entry::entry_of::<G, (), ()>()
        }
        self.initializer = Some(entry_of_unit(move |()| init()));
        self
    }

    /// A time limit for every task, counted from when the worker starts it
    /// (pebble L8). On expiry the worker is killed and replaced and the task
    /// fails with [`Error::TaskTimeout`]. See also
    /// [`ProcessPoolExecutor::submit_with_timeout`]. "Starts" as the parent
    /// sees it: when the result before it has been read, or, for a task
    /// sent to an idle worker, when it is sent, so that the limit covers
    /// the argument's transfer and decoding in the worker, and the result's
    /// encoding (tens of milliseconds for tens of megabytes).
    ///
    /// The limit is a floor, not an exact time: the parent's supervisor
    /// thread enforces it, and on busy CPUs it runs a few milliseconds late
    /// (on 2 busy cores, a 2 ms limit landed 1.3 ms late at the median and
    /// up to 7.5 ms late). A task that ends in between keeps its result, so
    /// a limit of a few ms can let a task that overran it succeed.
    ///
    /// The processes the task started, and theirs, are killed with it
    /// (loky L6): a timed-out task leaves no `ffmpeg` running. They are
    /// found through `/proc` (Linux) just before the kill, so this is best
    /// effort: one started in that instant, or one that left the tree
    /// (a daemon), is not reached; without pidfds (Linux before 5.3) none
    /// is. The same holds whenever the pool stops a worker itself
    /// (`kill_on_cancel`, `kill_workers`, `shutdown_within`; with
    /// `terminate_workers` they get SIGTERM, as the worker does, and
    /// nothing more). A worker that exits on its own leaves its task's
    /// processes running.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// How long a new worker may take to start and answer the pool's
    /// handshake (default 30 s) before it is killed and counted as a failed
    /// start. Three failed starts in a row break the pool. Zero is
    /// refused. The [`initializer`](Self::initializer) runs after that, as
    /// long as it takes.
    pub fn startup_timeout(mut self, limit: Duration) -> Self {
        self.startup_timeout = limit;
        self
    }

    /// How long [`shutdown_within`](ProcessPoolExecutor::shutdown_within)
    /// lets a worker that got SIGTERM at the deadline take to exit before
    /// it sends SIGKILL (default 1 s): time for a task's own SIGTERM
    /// handler to clean up (PP8).
    pub fn terminate_grace(mut self, grace: Duration) -> Self {
        self.terminate_grace = grace;
        self
    }

    /// Lets a worker that has had no task for `timeout` exit, and starts
    /// workers only when tasks wait that the running ones cannot take (loky
    /// L4), up to `max_workers`. A pool that is busy now and then holds no
    /// processes (and no memory) in between, at the price of a worker start
    /// (a few ms) when work comes back. The pool then starts no worker
    /// until the first task. Default: none; the pool keeps `max_workers`
    /// workers from `build` on. Zero is refused.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use concurrent_futures::{ExecutorExt, ProcessPoolExecutor};
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() -> Result<(), concurrent_futures::Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::builder()
    ///         .idle_timeout(Duration::from_secs(60))
    ///         .build()?;
    ///     assert!(pool.worker_pids().is_empty()); // none until there is work
    ///     assert_eq!(pool.submit(square, 3).into_result()?, 9);
    ///     Ok(())
    /// }
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Command-line arguments for workers (default: none; with
    /// [`test_harness`](Self::test_harness), the harness filter that runs
    /// the hidden worker test, which these replace). An argument with a NUL
    /// byte is refused by `build`.
    pub fn worker_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// An environment variable for workers (they inherit the parent's
    /// environment otherwise). `build` refuses an empty name, a name with
    /// `=`, and a NUL byte in either, which no environment can hold.
    pub fn worker_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// For pools built inside `cargo test`: workers run the hidden test
    /// that [`process_pool_test_worker!`](crate::process_pool_test_worker)
    /// adds to the test binary, and the parent needs no `init()` call.
    pub fn test_harness(mut self) -> Self {
        self.test_harness = true;
        self
    }

    /// The program's reusable pool (loky's `get_reusable_executor`, L1):
    /// the pool an earlier call built from an equal builder, if it still
    /// accepts tasks; otherwise a new pool built from this builder, which
    /// becomes the reusable one. A pool replaced because it was asked for
    /// with a different configuration is shut down without waiting: its
    /// tasks still finish. So library code can share one pool, and one
    /// that was shut down or broke is replaced instead of refusing work.
    ///
    /// Pair it with [`idle_timeout`](Self::idle_timeout) for a pool that
    /// holds no processes while nobody uses it.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use concurrent_futures::{ExecutorExt, ProcessPoolExecutor};
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn shared() -> Arc<ProcessPoolExecutor> {
    ///     ProcessPoolExecutor::builder()
    ///         .idle_timeout(Duration::from_secs(10))
    ///         .build_reusable()
    ///         .expect("workers start")
    /// }
    ///
    /// fn main() {
    ///     concurrent_futures::init();
    ///     assert!(Arc::ptr_eq(&shared(), &shared()));
    ///     shared().shutdown(true, false);
    ///     // Shut down: the next call builds a fresh pool.
    ///     assert_eq!(shared().submit(square, 7).into_result(), Ok(49));
    /// }
    /// ```
    pub fn build_reusable(self) -> Result<std::sync::Arc<ProcessPoolExecutor>, Error> {
        super::reusable::get(self)
    }

    /// Starts the pool; its workers start in the background.
    pub fn build(self) -> Result<ProcessPoolExecutor, Error> {
        worker::check_can_start_children("building a ProcessPoolExecutor", self.test_harness)?;
        let max_workers =
            crate::config::check_worker_count(self.max_workers.unwrap_or_else(num_cpus::get))?;
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return Err(Error::InvalidConfig(format!(
                "max_frame_bytes is {}; it must be between {MIN_FRAME_BYTES} and \
                 {MAX_FRAME_BYTES} (a frame's length is 32 bits)",
                self.max_frame_bytes
            )));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidConfig(
                "max_tasks_per_child must be >= 1".into(),
            ));
        }
        if self.max_memory_per_child == Some(0) {
            return Err(Error::InvalidConfig(
                "max_memory_per_child must be greater than 0".into(),
            ));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidConfig(
                "idle_timeout must be greater than 0".into(),
            ));
        }
        if self.startup_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "startup_timeout must be greater than 0 (no worker starts in no time)".into(),
            ));
        }
        check_worker_command(self.args.as_deref().unwrap_or_default(), &self.env)?;
        let program = super::os::own_executable()?;
        let args = match (self.args, self.test_harness) {
            (Some(a), _) => a,
            (None, true) => TEST_HARNESS_ARGS.iter().map(OsString::from).collect(),
            (None, false) => Vec::new(),
        };
        let config = Config {
            limits: Limits {
                max_workers,
                max_frame_bytes: self.max_frame_bytes,
                prefetch: self.prefetch,
                max_tasks_per_child: self.max_tasks_per_child,
                idle_timeout: self.idle_timeout,
                max_memory_per_child: self.max_memory_per_child,
            },
            initializer: self.initializer,
            task_timeout: self.task_timeout,
            startup_timeout: self.startup_timeout,
            terminate_grace: self.terminate_grace,
            program,
            args,
            hold_stdout: self.test_harness,
            env: self.env,
        };
        let kill_on_cancel = self.kill_on_cancel;
        let stops_possible = kill_on_cancel || config.task_timeout.is_some();
        let shared = Arc::new_cyclic(|shared| {
            let stopper = super::cancel::CancelStopper {
                shared: shared.clone(),
            };
            Shared {
                id: crate::thread::new_executor_id(),
                config,
                state: Mutex::new(State {
                    stop_on_cancel: kill_on_cancel
                        .then(|| Arc::new(stopper) as Arc<dyn crate::future::core::Watcher>),
                    ..State::default()
                }),
                cond: Condvar::new(),
                stops_possible: stops_possible.into(),
            }
        });
        lock(&shared.state).top_up(&shared.config.limits);
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("cf-process-supervisor".into())
            .spawn(move || {
                // It writes to workers (see `super::sigpipe`).
                super::sigpipe::block_for_this_thread();
                supervise(s2)
            })
            .map_err(|e| Error::Io(format!("could not start the supervisor thread: {e}")))?;
        Ok(ProcessPoolExecutor { shared })
    }
}

impl ProcessPoolExecutor {
    /// A builder with the defaults.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            max_workers: None,
            max_tasks_per_child: None,
            max_frame_bytes: 1 << 30,
            prefetch: 2,
            initializer: None,
            task_timeout: None,
            startup_timeout: Duration::from_secs(30),
            terminate_grace: Duration::from_secs(1),
            idle_timeout: None,
            max_memory_per_child: None,
            args: None,
            env: Vec::new(),
            test_harness: false,
            kill_on_cancel: false,
        }
    }
}

/// Refuses worker arguments and environment variables that no process can
/// be given, at `build` rather than at the first worker's start (an
/// argument with a NUL byte reached workers as a placeholder; a bad
/// variable broke the pool at its first task).
fn check_worker_command(args: &[OsString], env: &[(OsString, OsString)]) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    let has_nul = |s: &OsString| s.as_bytes().contains(&0);
    if let Some(arg) = args.iter().find(|a| has_nul(a)) {
        return Err(Error::InvalidConfig(format!(
            "a worker argument holds a NUL byte: {arg:?}"
        )));
    }
    for (key, value) in env {
        if key.is_empty() || key.as_bytes().contains(&b'=') || has_nul(key) {
            return Err(Error::InvalidConfig(format!(
                "{key:?} cannot name a worker's environment variable (empty, or holds '=' or a NUL byte)"
            )));
        }
        if has_nul(value) {
            return Err(Error::InvalidConfig(format!(
                "the worker environment variable {key:?} has a NUL byte in its value"
            )));
        }
    }
    Ok(())
}
