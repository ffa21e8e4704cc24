//! [`ThreadPoolExecutor`]: a work-stealing pool of threads.
//!
//! Workers start when the pool is built and park when idle (no CPU). Each
//! has its own deque for tasks submitted from inside a task; tasks from
//! outside go to the pool's inbox, a FIFO queue. Idle workers steal. A task that blocks on
//! another future of the same pool runs that task itself if it is still
//! queued, and its own subtasks while it waits, so recursive divide and
//! conquer cannot deadlock a small pool; it never picks up unrelated work,
//! which could wait on the very task under it (see
//! `worker::help_while_waiting`).

mod inbox;
mod joins;
mod registry;
mod roots;
mod sleep;
mod stack;
mod worker;

use std::fmt;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::time::{Duration, Instant};

use crossbeam_deque::Worker;

use self::registry::{JobRef, Registry};
use self::worker::WorkerThread;
// Under loom, `Core::wait_until` does not help (the models check the
// future alone), so this is unused there.
#[cfg_attr(cf_loom, allow(unused_imports))]
pub(crate) use self::registry::new_executor_id;
#[cfg(not(cf_loom))]
pub(crate) use self::worker::help_while_waiting;
pub(crate) use self::worker::{as_callbacks, is_worker_of};
use crate::executor::{ClosureTask, Task};
use crate::sync::{Arc, Ordering};
use crate::{CancelToken, Error, Executor, Future, ShutdownOutcome};

/// Numbers pools for their default thread names (T5).
static POOL_COUNTER: StdAtomicUsize = StdAtomicUsize::new(0);

type Initializer = Arc<dyn Fn() + Send + Sync>;

/// A pool of threads that runs tasks, like Python's
/// `concurrent.futures.ThreadPoolExecutor`, with work stealing.
///
/// It runs portable tasks through [`ExecutorExt`](crate::ExecutorExt)
/// (`submit`, `map`) like every executor, and any `Send` closure through
/// [`spawn`](Self::spawn).
///
/// Dropping the pool never blocks: queued tasks still run, then the workers
/// exit (decision 6). Call [`Executor::shutdown`] with `wait = true` to join.
///
/// ```
/// use concurrent_futures::{ExecutorExt, ThreadPoolExecutor};
///
/// fn fib(n: u64) -> u64 { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }
///
/// let pool = ThreadPoolExecutor::builder()
///     .max_workers(2)
///     .thread_name_prefix("calc")
///     .build()
///     .unwrap();
/// let f = pool.submit(fib, 20);
/// let data = vec![1, 2, 3];
/// let g = pool.spawn(move || data.len());
/// assert_eq!(f.result(None), Ok(&6765));
/// assert_eq!(g.into_result(), Ok(3));
/// ```
pub struct ThreadPoolExecutor {
    registry: Arc<Registry>,
    max_workers: usize,
    name: String,
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolExecutor")
            .field("name", &self.name)
            .field("max_workers", &self.max_workers)
            .field("shutdown", &self.registry.is_shutdown())
            .field("broken", &self.registry.is_broken())
            .field("parked", &self.registry.sleep.parked())
            .finish()
    }
}

/// Configures a [`ThreadPoolExecutor`].
#[must_use]
pub struct ThreadPoolBuilder {
    max_workers: Option<usize>,
    prefix: Option<String>,
    initializer: Option<Initializer>,
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("thread_name_prefix", &self.prefix)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}

impl ThreadPoolBuilder {
    /// The number of worker threads. Default: the number of CPUs
    /// (`num_cpus::get()`), since this pool is meant for CPU-bound work;
    /// CPython's default, `min(32, cpus + 4)`, suits I/O-bound work. Zero is
    /// refused by [`build`](Self::build) (T2).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Names the threads `{prefix}_{i}` (T5). Default:
    /// `ThreadPoolExecutor-{pool number}_{i}`.
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Runs `init` once on each worker thread before its first task (T7).
    /// If it panics, the pool is broken: queued futures fail with
    /// [`Error::Broken`] and later submits are refused (T8). Something
    /// that is not callable is refused when the program is compiled, where
    /// CPython raises `TypeError` at construction (T3):
    ///
    /// ```compile_fail
    /// use concurrent_futures::ThreadPoolExecutor;
    /// let pool = ThreadPoolExecutor::builder().initializer(42).build();
    /// ```
    pub fn initializer(mut self, init: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<ThreadPoolExecutor, Error> {
        let n = crate::config::check_worker_count(self.max_workers.unwrap_or_else(num_cpus::get))?;
        if self.prefix.as_deref().is_some_and(|p| p.contains('\0')) {
            return Err(Error::InvalidConfig(
                "thread_name_prefix contains a NUL byte, which a thread name cannot hold".into(),
            ));
        }
        // An empty prefix gets the default names, as CPython's
        // `thread_name_prefix or "ThreadPoolExecutor-%d"` (T5).
        let name = self.prefix.filter(|p| !p.is_empty()).unwrap_or_else(|| {
            format!(
                "ThreadPoolExecutor-{}",
                POOL_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        let (registry, locals) = Registry::new(n);
        let pool = ThreadPoolExecutor {
            registry: registry.clone(),
            max_workers: n,
            name: name.clone(),
        };
        for (index, local) in locals.into_iter().enumerate() {
            let spawned = spawn_worker(&registry, index, local, &name, self.initializer.clone());
            if let Err(e) = spawned {
                // Workers not started never decrement `live`; account for
                // them so shutdown(wait) does not wait for ghosts.
                for _ in index..n {
                    registry.worker_exited();
                }
                registry.shutdown(true);
                return Err(Error::Io(format!("could not start worker thread: {e}")));
            }
        }
        Ok(pool)
    }
}

fn spawn_worker(
    registry: &Arc<Registry>,
    index: usize,
    local: Worker<JobRef>,
    prefix: &str,
    init: Option<Initializer>,
) -> std::io::Result<()> {
    let registry2 = registry.clone();
    let handle = std::thread::Builder::new()
        .name(format!("{prefix}_{index}"))
        .spawn(move || {
            let registry = registry2;
            if let Some(init) = init {
                if let Err(payload) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init()))
                {
                    let msg = crate::error::take_panic_message(payload);
                    crate::error::report!(error, "Exception in initializer: {msg}");
                    registry.mark_broken(format!("a thread initializer panicked ({msg})"));
                }
            }
            // A worker leaving its loop normally has retired (counted
            // itself out, see the registry docs); one unwinding out of it
            // is counted out here, so `shutdown(wait = true)` never waits
            // for a dead thread.
            struct Exited(Arc<Registry>);
            impl Drop for Exited {
                fn drop(&mut self) {
                    if std::thread::panicking() {
                        self.0.joins.retire();
                        self.0.worker_exited();
                    }
                }
            }
            let _exited = Exited(registry.clone());
            let worker = Rc::new(WorkerThread {
                registry: registry.clone(),
                index,
                local,
            });
            worker.main_loop();
        })?;
    registry.joins.add_worker(handle);
    Ok(())
}

impl ThreadPoolExecutor {
    /// A pool of `max_workers` threads with default settings.
    pub fn new(max_workers: usize) -> Result<Self, Error> {
        Self::builder().max_workers(max_workers).build()
    }

    /// A builder with the defaults.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder {
            max_workers: None,
            prefix: None,
            initializer: None,
        }
    }

    /// Runs any `Send` closure on the pool (threads only: no serde bounds,
    /// captures allowed); its result must be `Send + Sync`, since
    /// [`Future::result`] lends it to any thread. If the pool is shut down
    /// or broken, the future has already failed with that error.
    pub fn spawn<F, R>(&self, f: F) -> Future<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + Sync + 'static,
    {
        let (job, future) = ClosureTask::create_for(f, self.registry.id);
        if let Err((job, e)) = self.inject(job.into_thin()) {
            job.fail(e);
        }
        future
    }

    /// [`spawn`](Self::spawn) for a task that can be told to stop (PP3):
    /// `f` is handed `token`, and [`CancelToken::cancel`] cancels the task
    /// if it is still queued, or lets it see
    /// [`is_cancelled`](CancelToken::is_cancelled) if it runs. One token
    /// may serve many tasks: one `cancel()` stops the group.
    /// ([`Future::cancel`] keeps CPython's meaning: it cancels a queued
    /// task only.)
    pub fn spawn_cancellable<F, R>(&self, token: &CancelToken, f: F) -> Future<R>
    where
        F: FnOnce(&CancelToken) -> R + Send + 'static,
        R: Send + Sync + 'static,
    {
        let handed = token.clone();
        let (job, future) = ClosureTask::create_for(move || f(&handed), self.registry.id);
        token.register(&job);
        if let Err((job, e)) = self.inject(job.into_thin()) {
            job.fail(e);
        }
        future
    }

    fn inject(&self, job: JobRef) -> Result<(), (JobRef, Error)> {
        match worker::current() {
            // Not from a done-callback: a callback runs inside whatever task
            // completed its future, and what it submits does not descend
            // from that task, so it must not sit on the worker's deque among
            // that task's subtasks (see `worker::help_while_waiting`).
            Some(w)
                if Arc::ptr_eq(&w.registry, &self.registry)
                    && !crate::future::core::in_callbacks() =>
            {
                self.registry.inject(job, Some(&w.local))
            }
            _ => self.registry.inject(job, None),
        }
    }

    /// [`Executor::shutdown`], callable without importing the trait.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        Executor::shutdown(self, wait, cancel_futures)
    }

    /// [`Executor::shutdown_within`], callable without importing the trait:
    /// shuts down and waits at most `deadline`; tasks still running then go
    /// on in the background ([`ShutdownOutcome::TimedOut`]).
    pub fn shutdown_within(&self, deadline: Duration, cancel_futures: bool) -> ShutdownOutcome {
        Executor::shutdown_within(self, deadline, cancel_futures)
    }

    /// [`Executor::max_workers`], callable without importing the trait.
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// Waits until `deadline` for the workers to exit (see
    /// [`Registry::wait_for_exit`]), then for their threads to end (see
    /// [`joins`]). Returns whether all of that ended in time.
    fn wait_for_workers(&self, deadline: Option<Instant>) -> bool {
        let joins = &self.registry.joins;
        if joins.is_retired_worker() {
            return self.wait_in_a_retired_workers_destructor(deadline);
        }
        let me = worker::current().filter(|w| Arc::ptr_eq(&w.registry, &self.registry));
        let own = self.registry.is_own_thread(me.is_some());
        self.registry.wait_for_exit(own, deadline) && joins.join_retired(own, deadline)
    }

    /// [`wait_for_workers`](Self::wait_for_workers) from a retired worker's
    /// thread-local destructor: it waits for the other workers to retire
    /// unless its own thread is being joined, and never for their threads
    /// (see [`joins`]).
    fn wait_in_a_retired_workers_destructor(&self, deadline: Option<Instant>) -> bool {
        let joins = &self.registry.joins;
        // Sweeping the queue itself (a `cancel_futures` shutdown from the
        // destructor, whose callback shuts down and waits), it must not
        // wait for its own sweep.
        let own = self.registry.is_own_thread(false);
        let retired = if joins.enter_destructor_wait() {
            let retired = self.registry.wait_for_exit(own, deadline);
            joins.leave_destructor_wait();
            retired
        } else {
            self.registry.wait_for_exit(own, Some(Instant::now()))
        };
        retired && joins.others_ended()
    }

    /// The thread-name prefix.
    pub fn thread_name_prefix(&self) -> &str {
        &self.name
    }

    /// Workers that have not retired yet (a retired worker has left its
    /// loop for good; its thread may still run thread-local destructors).
    pub fn live_workers(&self) -> usize {
        self.registry.live_workers()
    }

    /// Worker threads currently parked (idle, using no CPU).
    pub fn parked_workers(&self) -> usize {
        self.registry.sleep.parked()
    }
}

impl Executor for ThreadPoolExecutor {
    fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
        let adopted = task.job.pool_view().adopt_pool(self.registry.id);
        self.inject(task.job.into_thin()).map_err(|(job, e)| {
            let job = job.into_arc();
            if adopted {
                job.pool_view().disown_pool();
            }
            (Task { job }, e)
        })
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.registry.shutdown(cancel_futures);
        if wait {
            self.wait_for_workers(None);
        }
    }

    fn shutdown_within(&self, deadline: Duration, cancel_futures: bool) -> ShutdownOutcome {
        let until = crate::sync::deadline(Some(deadline));
        self.registry.shutdown(cancel_futures);
        if self.__wait_ended(until) {
            ShutdownOutcome::Finished
        } else {
            ShutdownOutcome::TimedOut
        }
    }

    fn __wait_ended(&self, deadline: Option<Instant>) -> bool {
        let from_own_worker =
            worker::current().is_some_and(|w| Arc::ptr_eq(&w.registry, &self.registry));
        // From a task, the other workers may all be gone while tasks it
        // queued wait for its own worker, which runs them only once the
        // caller returns: that is not ended.
        self.wait_for_workers(deadline) && !(from_own_worker && self.registry.has_work())
    }

    fn max_workers(&self) -> usize {
        self.max_workers
    }

    fn __thread_pool_id(&self) -> u64 {
        self.registry.id
    }
}

/// Never blocks: queued work still runs, then the workers exit (decision 6).
impl Drop for ThreadPoolExecutor {
    fn drop(&mut self) {
        self.registry.shutdown(false);
    }
}
