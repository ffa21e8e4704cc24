//! `multiprocessing.Pool` and `multiprocessing.pool.ThreadPool`: [`Pool`]
//! and [`ThreadPool`], one facade over any [`Executor`].
//!
//! The facade adds what `multiprocessing` has and `concurrent.futures`
//! lacks: blocking `apply` and `map`, [`AsyncResult`]s with callbacks that
//! run on one result-handling thread in the parent, `imap` and
//! `imap_unordered`, `starmap`, and the `close` / `join` / `terminate`
//! lifecycle. The work itself runs on the executor underneath, a
//! [`ProcessPoolExecutor`](crate::ProcessPoolExecutor) for [`Pool::new`] or
//! a [`ThreadPoolExecutor`](crate::ThreadPoolExecutor) for [`ThreadPool::new`]; tasks are portable
//! tasks (a `fn` item and one serde argument), as for
//! [`ExecutorExt::submit`].
//!
//! Semantics follow CPython's `multiprocessing.pool` (CONFORMANCE.md
//! section 2, MP1-MP27) except where CPython hangs or loses a task: a
//! panicking callback becomes the job's error instead of killing the
//! result handler (MP7), and `terminate()` fails every pending result
//! instead of leaving it pending forever (MP24).

mod async_result;
mod builder;
mod entries;
mod handler;
mod iter;
mod maps;
mod star;

use crate::sync::{Arc, Mutex};
use std::fmt;
use std::sync::RwLock;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

pub use self::async_result::{AsyncResult, Callbacks};
#[cfg(unix)]
pub use self::builder::PoolBuilder;
pub use self::builder::ThreadPool;
use self::entries::{ApplyEntry, ChunkEntry, MapAgg, chunk_task};
use self::handler::{Entry, Handler, Msg};
pub use self::iter::ImapUnordered;
pub use self::star::StarFn;
use crate::chunk::{ChunkFeed, ChunkResult};
use crate::sync::lock;
use crate::{Error, Executor, ExecutorExt, Future, Map, MapOptions, Portable, Promise};

/// Where a pool is in its life (MP23-MP25).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Running,
    Closed,
    Terminated,
}

/// A pool of workers with the API of Python's `multiprocessing.Pool`.
///
/// [`Pool::new`] and [`Pool::builder`] run tasks in worker *processes*
/// (a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor); `main` must
/// call [`init()`](crate::init) first). [`ThreadPool`] is the same facade
/// over threads, and [`Pool::from_executor`] puts it over any executor.
///
/// ```no_run
/// use concurrent_futures::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> Result<(), concurrent_futures::Error> {
///     concurrent_futures::init();
///     let pool = Pool::new(4)?;
///     assert_eq!(pool.apply(square, 7)?, 49);
///     assert_eq!(pool.map(square, 0..5)?, [0, 1, 4, 9, 16]);
///     let r = pool.apply_async(square, 9)?;
///     assert_eq!(r.get(None)?, &81);
///     pool.close();
///     pool.join()?;
///     Ok(())
/// }
/// ```
///
/// # Lifecycle
///
/// [`close`](Self::close) refuses new work and lets queued work finish;
/// [`join`](Self::join) (only after `close` or `terminate`, MP23) waits for
/// it; [`terminate`](Self::terminate) stops at once. **Dropping a pool
/// terminates it**, like leaving Python's `with Pool() as p:` block (MP25):
/// call `close()` and `join()` first to wait for outstanding work.
pub struct Pool {
    ex: Arc<dyn Executor>,
    #[cfg(unix)]
    procs: Option<Arc<crate::ProcessPoolExecutor>>,
    handler: Arc<Handler>,
    tx: Sender<Msg>,
    state: RwLock<Lifecycle>,
    /// Serialises `terminate` (and the drop) with itself.
    terminating: Mutex<()>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field(
                "state",
                &*self.state.read().unwrap_or_else(|e| e.into_inner()),
            )
            .field("executor", &self.ex)
            .field("handler", &self.handler)
            .finish()
    }
}

/// The checks of `Pool(processes=0)` (MP1).
fn check_processes(n: usize) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::InvalidConfig(
            "Number of processes must be at least 1".into(),
        ));
    }
    Ok(())
}

/// CPython's default map chunk size: `ceil(len / (4 * workers))` (MP8).
fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(workers.max(1).saturating_mul(4)).max(1)
}

impl Pool {
    /// A pool of `processes` worker processes (`multiprocessing.Pool(n)`).
    /// Zero is refused: `Number of processes must be at least 1` (MP1).
    /// `main` must call [`init()`](crate::init) first; in `cargo test`, use
    /// [`Pool::builder`] with [`PoolBuilder::test_harness`].
    #[cfg(unix)]
    pub fn new(processes: usize) -> Result<Pool, Error> {
        Self::builder().processes(processes).build()
    }

    /// A builder for a process pool: `processes`, `maxtasksperchild`,
    /// `initializer`.
    #[cfg(unix)]
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// The facade over any executor (one picked from configuration, your
    /// own). The pool owns it from now on: `terminate`, `join` and the drop
    /// shut it down. [`terminate`](Self::terminate) cannot kill tasks
    /// running on it; only a pool made by [`Pool::new`] or
    /// [`Pool::builder`] kills its worker processes.
    pub fn from_executor(ex: Arc<dyn Executor>) -> Result<Pool, Error> {
        Self::with_parts(
            ex,
            #[cfg(unix)]
            None,
        )
    }

    fn with_parts(
        ex: Arc<dyn Executor>,
        #[cfg(unix)] procs: Option<Arc<crate::ProcessPoolExecutor>>,
    ) -> Result<Pool, Error> {
        let handler = Arc::new(Handler::new());
        let (tx, rx) = mpsc::channel();
        let h2 = handler.clone();
        let thread = std::thread::Builder::new()
            .name("cf-pool-results".into())
            .spawn(move || handler::run(h2, rx))
            .map_err(|e| Error::Io(format!("could not start the result-handler thread: {e}")))?;
        *lock(&handler.thread) = Some(thread.thread().id());
        Ok(Pool {
            ex,
            #[cfg(unix)]
            procs,
            handler,
            tx,
            state: RwLock::new(Lifecycle::Running),
            terminating: Mutex::new(()),
        })
    }

    /// The executor underneath.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.ex
    }

    /// How many workers run tasks at once (`processes`).
    pub fn processes(&self) -> usize {
        self.ex.max_workers()
    }

    fn state(&self) -> Lifecycle {
        *self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the lifecycle (read) lock while `f` submits, so `terminate`
    /// cannot slip between the check and the registration. Refuses once the
    /// pool is closed or terminated (MP23).
    fn running<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if *state != Lifecycle::Running {
            return Err(Error::Shutdown);
        }
        Ok(f())
    }

    /// Refuses a blocking call on the result-handling thread, where it
    /// could never finish.
    fn not_in_callback(&self, what: &str) -> Result<(), Error> {
        if self.handler.on_handler_thread() {
            return Err(Error::InvalidCall(format!(
                "{what} from a pool callback would deadlock: callbacks run on the \
                 thread that makes this pool's results ready"
            )));
        }
        Ok(())
    }

    /// Registers `fut` (already submitted) with the result handler.
    fn track<T: Send + Sync + 'static>(
        &self,
        fut: Future<T>,
        make: impl FnOnce(Future<T>) -> Box<dyn Entry>,
    ) {
        self.handler.register(|id| {
            let tx = self.tx.clone();
            fut.add_done_callback(move |_| {
                let _ = tx.send(Msg::Ready(id));
            });
            make(fut)
        });
    }

    // ------------------------------------------------------------ apply --

    /// Runs `func(arg)` on a worker and waits for it (`apply`, MP4). A
    /// tuple argument is one argument: `fn add((a, b): (i32, i32))`.
    pub fn apply<F, A, R>(&self, func: F, arg: A) -> Result<R, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
    {
        self.not_in_callback("apply()")?;
        self.apply_async(func, arg)?.into_result()
    }

    /// Submits `func(arg)` and returns its [`AsyncResult`] at once
    /// (`apply_async`). `Err` only if the pool is not running (MP23).
    pub fn apply_async<F, A, R>(&self, func: F, arg: A) -> Result<AsyncResult<R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
    {
        self.apply_async_with(func, arg, Callbacks::new())
    }

    /// [`apply_async`](Self::apply_async) with a `callback` and an
    /// `error_callback`, which run on the pool's result-handling thread
    /// before the result becomes ready (MP6). A task panic reaches the
    /// error callback as [`Error::Panicked`] with the panic message.
    pub fn apply_async_with<F, A, R>(
        &self,
        func: F,
        arg: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
    {
        self.running(|| {
            let (promise, mut result) = AsyncResult::new(self.ex.__thread_pool_id());
            let fut = self.ex.submit(func, arg);
            result.behind(&fut);
            self.track(fut, |fut| {
                Box::new(ApplyEntry {
                    fut,
                    callbacks,
                    promise,
                })
            });
            result
        })
    }

    // -------------------------------------------------------- lifecycle --

    /// Stops accepting work; queued and running tasks still finish (MP23).
    /// Calling it again, or after `terminate`, does nothing. Every submit
    /// method then fails with [`Error::Shutdown`] (CPython: `Pool not running`).
    pub fn close(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if *state == Lifecycle::Running {
            *state = Lifecycle::Closed;
        }
    }

    /// Waits for the work of a closed pool to finish: every `AsyncResult`
    /// is ready and its callbacks have run, and the workers have exited.
    /// After `terminate`, waits for the workers to exit.
    ///
    /// Errors ([`Error::InvalidCall`]): `Pool is still running` if neither
    /// `close` nor `terminate` was called (MP23); a call from a pool
    /// callback, or from a task running on this pool's thread pool, which
    /// would wait for itself (CPython's `join()` hangs there).
    pub fn join(&self) -> Result<(), Error> {
        let state = self.joinable("join()")?;
        self.handler.wait_idle_until(None);
        self.ex.shutdown(true, state == Lifecycle::Terminated);
        Ok(())
    }

    /// [`join`](Self::join), waiting at most `timeout` (pebble's
    /// `join(timeout)`, L13): [`Error::Timeout`] if the pool's work is not
    /// over by then (results not all ready, tasks of an `imap` still
    /// running, or, after `terminate`, tasks still running on threads,
    /// which cannot be stopped). It stops nothing: the work goes on; call
    /// it again to wait longer. The same errors as `join` otherwise.
    ///
    /// As with `join`, once every result the pool tracks is ready the
    /// executor is shut down: an `imap` iterator still being consumed then
    /// gets no new tasks and ends with [`Error::Shutdown`] (M15).
    ///
    /// Over a [`from_executor`](Self::from_executor) executor of your own,
    /// it cannot see the workers exit and answers `Timeout` once the
    /// results are ready.
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::ThreadPool;
    ///
    /// fn double(x: u64) -> u64 { x * 2 }
    ///
    /// let pool = ThreadPool::new(2).unwrap().into_pool();
    /// let result = pool.apply_async(double, 21).unwrap();
    /// pool.close();
    /// pool.join_timeout(Duration::from_secs(30)).unwrap();
    /// assert_eq!(result.get(None), Ok(&42));
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), Error> {
        let state = self.joinable("join_timeout()")?;
        let deadline = Instant::now().checked_add(timeout);
        let timed_out = Err(Error::Timeout { waited: timeout });
        if !self.handler.wait_idle_until(deadline) {
            return timed_out;
        }
        // Not `shutdown_within`: past its deadline a process pool stops its
        // workers, and the tasks an `imap` still runs with them.
        self.ex.shutdown(false, state == Lifecycle::Terminated);
        if self.ex.__wait_ended(deadline) {
            Ok(())
        } else {
            timed_out
        }
    }

    /// The checks before a join: the pool was closed or terminated (MP23),
    /// and the caller is neither a pool callback nor a task on the pool's
    /// threads, which the join would wait for (found by review: a task
    /// joining its own pool waited for ever for its own result). Returns
    /// the pool's state.
    fn joinable(&self, what: &str) -> Result<Lifecycle, Error> {
        let state = self.state();
        if state == Lifecycle::Running {
            return Err(Error::InvalidCall(format!(
                "Pool is still running: call close() or terminate() before {what}"
            )));
        }
        self.not_in_callback(what)?;
        let id = self.ex.__thread_pool_id();
        if id != 0 && crate::thread::is_worker_of(id) {
            return Err(Error::InvalidCall(format!(
                "{what} from a task of this pool would deadlock: it waits for \
                 every result, this task's own among them"
            )));
        }
        Ok(state)
    }

    /// Stops the pool at once (MP24), and returns without waiting for
    /// running tasks:
    ///
    /// * queued tasks are cancelled: their results fail with
    ///   [`Error::Cancelled`];
    /// * every other pending result fails with [`Error::Broken`] (`terminate()
    ///   ... stopped it before this task finished`), and its error callback
    ///   runs; when `terminate` returns, every `AsyncResult` of the pool is
    ///   ready (CPython leaves them pending forever);
    /// * a process pool ([`Pool::new`], [`Pool::builder`]) kills its worker
    ///   processes (SIGKILL), so running tasks stop mid-way. Threads cannot
    ///   be killed: on a [`ThreadPool`], running tasks run to the end and
    ///   their values are dropped.
    ///
    /// Idempotent. Dropping the pool calls it (MP25).
    pub fn terminate(&self) {
        if self.handler.on_handler_thread() {
            // From a callback. The handler thread cannot wait for itself, and
            // must not wait for `terminating` either: a `terminate` on another
            // thread may hold it while it waits for this very thread. Every
            // step is idempotent, so it does them all here, at once.
            self.set_terminated();
            self.ex.shutdown(false, true);
            self.handler.fail_all(&handler::terminated_error());
            self.kill_workers();
            return;
        }
        // Serializes callers on other threads: the second returns only once
        // the first has ended every result.
        let _one = lock(&self.terminating);
        let first = self.set_terminated();
        if first {
            // Queued tasks are cancelled here, on this thread: their
            // `Ready` messages reach the handler before the marker below.
            self.ex.shutdown(false, true);
        }
        // Sent by every call, the first or not: a terminate from a callback
        // takes no lock and may still be failing results on the handler
        // thread; the marker is handled only after it (found by review: a
        // second terminate returned before every result was ready).
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Terminate(ack)).is_ok() {
            let _ = done.recv();
        }
        if first {
            self.kill_workers();
        }
    }

    /// Moves the pool to `Terminated`; false if it already was.
    fn set_terminated(&self) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *state, Lifecycle::Terminated) != Lifecycle::Terminated
    }

    /// A process pool SIGKILLs its workers: the tasks they held fail, none
    /// is re-sent and no worker is replaced. Threads cannot be killed.
    fn kill_workers(&self) {
        #[cfg(unix)]
        if let Some(procs) = &self.procs {
            procs.kill_workers();
        }
    }
}

/// Dropping a pool terminates it, like leaving `with Pool() as p:` (MP25).
impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}
