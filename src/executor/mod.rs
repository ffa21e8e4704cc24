//! The [`Executor`] trait, object-safe, and [`ExecutorExt`], its generic
//! conveniences.
//!
//! The split follows `futures::task::{Spawn, SpawnExt}`: `Executor` has only
//! non-generic methods, so `Box<dyn Executor>` and `Arc<dyn Executor>` work
//! and a service can choose threads or processes from its configuration at
//! run time. `ExecutorExt` is implemented for every `Executor + ?Sized` and
//! adds the typed calls users make: [`submit`](ExecutorExt::submit),
//! [`map`](ExecutorExt::map), [`map_unordered`](ExecutorExt::map_unordered).
//!
//! # The portable task
//!
//! What crosses [`ExecutorExt::submit`] is a *portable task*: a `fn` item (or
//! a closure that captures nothing) and one argument, both of whose types are
//! serde-serializable. A thread pool calls it directly, with no
//! serialization; a process pool sends the argument to a worker process that
//! runs the very same `fn`. A closure that captures its environment cannot be
//! sent to another process, so it is rejected at compile time:
//!
//! ```compile_fail
//! use concurrent_futures::{ExecutorExt, ThreadPoolExecutor};
//! let pool = ThreadPoolExecutor::new(1).unwrap();
//! let offset = 10u64;
//! // error: a portable task must be a fn item or a closure that captures nothing
//! let f = pool.submit(move |x: u64| x + offset, 1);
//! ```
//!
//! Use [`ThreadPoolExecutor::spawn`](crate::ThreadPoolExecutor::spawn) for
//! closures that capture.
//!
//! A closure that captures only zero-sized values is accepted: a worker
//! re-creates it from nothing, as it does a `fn` item. Do not capture a
//! zero-sized *proof token* (a `Copy` marker with a private constructor,
//! whose existence promises that something was done in this process): the
//! worker gets a token although nothing was done there. That is the one
//! case in which this design, like `mitosis`' and `procspawn`'s, lets safe
//! code break another crate's invariant.

mod guard;
pub(crate) mod task;
pub(crate) mod thin;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::guard::ShutdownGuard;

pub use self::task::Task;
use self::task::{Job, PortableTask};
use crate::chunk::{ChunkArgs, ChunkFeed, ChunkResult, run_items};
use crate::map::{Map, MapOptions, MapUnordered};
use crate::{Error, Future};

/// A value that can be a portable task's argument or result: serde both
/// ways, `Send`, and owning its data. Implemented for every such type. A
/// result must also be `Sync` (`submit` asks for it), since
/// [`Future::result`] lends it to any thread.
pub trait Portable: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Portable for T {}

/// An executor: something that runs [`Task`]s and completes their futures.
///
/// Object-safe: hold one as `Arc<dyn Executor>` and call the
/// [`ExecutorExt`] methods on it exactly as on a concrete pool.
///
/// ```
/// use std::sync::Arc;
/// use concurrent_futures::{Executor, ExecutorExt, ThreadPoolExecutor};
///
/// fn double(x: i32) -> i32 { x * 2 }
///
/// let ex: Arc<dyn Executor> = Arc::new(ThreadPoolExecutor::new(2).unwrap());
/// let results: Vec<i32> = ex.map(double, 0..5).map(Result::unwrap).collect();
/// assert_eq!(results, [0, 2, 4, 6, 8]);
/// ex.shutdown(true, false);
/// ```
pub trait Executor: Send + Sync + fmt::Debug {
    /// Queues `task`. On error (the executor is shut down or broken) the
    /// task is handed back untouched inside the error's context; callers use
    /// [`ExecutorExt::submit`], which fails the task's future with it.
    fn execute(&self, task: Task) -> Result<(), (Task, Error)>;

    /// Stops accepting tasks (S1, S2: idempotent).
    ///
    /// With `cancel_futures`, every task not yet started is cancelled (S5).
    /// With `wait`, blocks until every queued and running task has ended and
    /// the workers have exited (S3); otherwise returns at once while queued
    /// work still runs to completion (S4). Every future resolves either way.
    ///
    /// `wait = true` from a thread the pool itself needs waits for
    /// everything but that thread's own share, which could not end while it
    /// waits: a thread-pool task waits for every worker but its own; a
    /// done-callback of a process pool, which runs on the reader thread of
    /// the worker that finished the task, waits for every worker but that
    /// one (it exits once the callback returns). Two such threads do not
    /// wait for each other. A thread-pool worker's thread-local destructor,
    /// which runs after the worker retired, waits for the other workers to
    /// retire but not for their threads to end (it cannot join them: they
    /// may be joining it), and not at all if its own thread is being
    /// joined already. Any number of threads may wait at once: each
    /// returns only once all it waits for has ended.
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// Shuts down, then waits at most `deadline` for every task to end and
    /// every worker to exit (PP8: a service's stop has a time budget).
    /// With `cancel_futures`, tasks not yet started are cancelled first.
    ///
    /// What happens at the deadline depends on the executor, and the
    /// [`ShutdownOutcome`] says which: a thread pool returns
    /// [`TimedOut`](ShutdownOutcome::TimedOut), leaving its running tasks
    /// to finish in the background (a thread cannot be stopped from
    /// outside); a process pool sends its workers SIGTERM, then SIGKILL
    /// after its [`terminate_grace`](crate::ProcessPoolBuilder::terminate_grace),
    /// and the tasks they held fail with [`Error::Broken`]. Every future
    /// resolves either way.
    ///
    /// The provided implementation, for executors that cannot wait with a
    /// deadline, calls `shutdown(false, cancel_futures)` and returns
    /// [`TimedOut`](ShutdownOutcome::TimedOut) at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{Executor, ShutdownOutcome, ThreadPoolExecutor};
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// pool.spawn(|| 1 + 1);
    /// let outcome = pool.shutdown_within(Duration::from_secs(10), false);
    /// assert_eq!(outcome, ShutdownOutcome::Finished);
    /// ```
    fn shutdown_within(
        &self,
        deadline: std::time::Duration,
        cancel_futures: bool,
    ) -> ShutdownOutcome {
        let _ = deadline;
        self.shutdown(false, cancel_futures);
        ShutdownOutcome::TimedOut
    }

    /// How many tasks this executor runs at once.
    fn max_workers(&self) -> usize;

    /// The id a task made for this executor records: that of the
    /// [`ThreadPoolExecutor`](crate::ThreadPoolExecutor) behind it, so that
    /// a worker of that pool waiting for the task may run it itself (T10);
    /// a process pool's own id, so that a thread-pool worker waiting on it
    /// knows it is no task of its pool; 0 for any other. For this crate's
    /// executors and forwarders only; other executors keep the default.
    #[doc(hidden)]
    fn __thread_pool_id(&self) -> u64 {
        0
    }

    /// Waits, stopping nothing, until this executor (already shut down)
    /// has no work left and its workers have exited, or `deadline` passes;
    /// true if it got there. [`Pool::join_timeout`](crate::Pool::join_timeout)
    /// waits with it. For this crate's executors and forwarders only; the
    /// default cannot tell, and answers false.
    #[doc(hidden)]
    fn __wait_ended(&self, deadline: Option<std::time::Instant>) -> bool {
        let _ = deadline;
        false
    }
}

/// How [`Executor::shutdown_within`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShutdownOutcome {
    /// Every task ended and every worker exited before the deadline.
    Finished,
    /// The deadline passed first. The tasks still running go on in the
    /// background and their futures resolve when they end; the workers exit
    /// after them.
    TimedOut,
    /// The deadline passed first; a process pool sent SIGTERM to its
    /// workers (and to the processes their tasks started), and each exited
    /// within the grace period. The tasks they held failed with
    /// [`Error::Broken`] (unless a worker that survived the signal finished
    /// them), and queued ones were cancelled.
    Terminated,
    /// As [`Terminated`](ShutdownOutcome::Terminated), but some process (a
    /// worker, or a process its task started) was still alive when the
    /// grace period ended, and got SIGKILL.
    Killed,
}

/// The process-pool view of a portable task: its entry point, its encoded
/// argument, and completion from encoded bytes.
pub(crate) trait PortableJob: Job {
    /// The trampoline's entry id (see `process::entry`).
    fn entry(&self) -> u64;
    /// The argument, encoded; an error fails only this task (D1).
    fn encode_arg(&self) -> Result<Vec<u8>, Error>;
    /// The argument's type name, for error messages.
    fn arg_type_name(&self) -> &'static str;
    /// PENDING → RUNNING when the task is sent to a worker (X7); false if it
    /// was cancelled meanwhile.
    fn mark_running(&self) -> bool;
    /// RUNNING → PENDING for a task sent to a worker and taken back before
    /// it started (its worker died); false if it stays as it is (a
    /// stoppable task, or one that ended).
    fn mark_pending_again(&self) -> bool;
    /// Makes the task stoppable while it runs (`cancel()` then succeeds
    /// in RUNNING) and tells `watcher`, under `key`, when its future ends;
    /// false if it has ended already. For `kill_on_cancel` process pools.
    fn stop_on_cancel(
        &self,
        watcher: &crate::sync::Arc<dyn crate::future::core::Watcher>,
        key: usize,
    ) -> bool;
    /// Whether the future has ended (finished or cancelled).
    fn is_done(&self) -> bool;
    /// Completes the future from a worker's reply.
    fn complete_encoded(
        self: std::sync::Arc<Self>,
        outcome: Result<Vec<u8>, crate::process::protocol::RemoteError>,
    );
}

impl<F, A, R> PortableJob for PortableTask<F, A, R>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: Portable,
    R: Portable + Sync,
{
    fn entry(&self) -> u64 {
        crate::process::entry::entry_of::<F, A, R>()
    }

    fn encode_arg(&self) -> Result<Vec<u8>, Error> {
        self.encode_arg_inner()
    }

    fn arg_type_name(&self) -> &'static str {
        std::any::type_name::<A>()
    }

    fn mark_running(&self) -> bool {
        self.mark_running_inner()
    }

    fn mark_pending_again(&self) -> bool {
        self.mark_pending_again_inner()
    }

    fn stop_on_cancel(
        &self,
        watcher: &crate::sync::Arc<dyn crate::future::core::Watcher>,
        key: usize,
    ) -> bool {
        self.stop_on_cancel_inner(watcher, key)
    }

    fn is_done(&self) -> bool {
        self.is_done_inner()
    }

    fn complete_encoded(
        self: std::sync::Arc<Self>,
        outcome: Result<Vec<u8>, crate::process::protocol::RemoteError>,
    ) {
        let outcome = match outcome {
            Ok(bytes) => crate::process::codec::decode_caught::<R>(&bytes),
            Err(remote) => {
                Err(remote.into_error(crate::process::protocol::TaskTypes::of::<A, R>()))
            }
        };
        self.complete_inner(outcome);
    }
}

/// The typed conveniences over any [`Executor`], including `dyn Executor`.
pub trait ExecutorExt: Executor {
    /// Submits `func(arg)` and returns its future at once.
    ///
    /// `func` is a `fn` item or a closure capturing nothing (see the module
    /// docs). If the executor refuses the task (shut down, broken), the
    /// returned future has already failed with that error; use
    /// [`try_submit`](Self::try_submit) to get the error at the call.
    fn submit<F, A, R>(&self, func: F, arg: A) -> Future<R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
    {
        let (task, future) = PortableTask::create_for(func, arg, self.__thread_pool_id());
        if let Err((task, error)) = self.execute(Task { job: task }) {
            task.fail(error);
        }
        future
    }

    /// Like [`submit`](Self::submit), but a refused task is an error here
    /// (CPython's `RuntimeError('cannot schedule new futures after
    /// shutdown')`, S1).
    fn try_submit<F, A, R>(&self, func: F, arg: A) -> Result<Future<R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
    {
        let (task, future) = PortableTask::create_for(func, arg, self.__thread_pool_id());
        match self.execute(Task { job: task }) {
            Ok(()) => Ok(future),
            Err((task, error)) => {
                task.fail(error.clone());
                Err(error)
            }
        }
    }

    /// Maps `func` over `inputs`, yielding each result in input order as a
    /// `Result` at its own position: an error does not end the iteration
    /// (decision 2), except a refusal: once the executor is shut down or
    /// broken, that item carries the error and the map ends (M15). At most
    /// `2 × max_workers` tasks are in flight (M13, decision 5); see
    /// [`map_with`](Self::map_with) for the window, a
    /// deadline and chunking. Dropping the iterator cancels the tasks not
    /// yet yielded (M7).
    ///
    /// The input is read on the calling thread, in this call for the first
    /// window and then as results are taken. An input iterator that panics
    /// passes its panic to that call, and loses nothing it gave: a finished
    /// result comes out at the next call, and the items of a chunk it was
    /// filling begin the next chunk (MP15, where CPython drops the chunk).
    fn map<'a, F, A, R, I>(&'a self, func: F, inputs: I) -> Map<'a, R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        self.map_with(func, inputs, MapOptions::default())
    }

    /// [`map`](Self::map) with options: the in-flight window, a deadline
    /// counted from this call (M3), and a chunk size (M9): with
    /// `chunksize > 1`, each task carries that many items (one frame to a
    /// process worker instead of one per item), and each item still gets
    /// its own `Result`: a panic, an argument that does not encode or fit
    /// a frame, a result that does not serialize or decode each fail only
    /// their item (M10, D1, D10). A chunk's results travel back in one
    /// frame: if together they pass `max_frame_bytes`, every item of that
    /// chunk fails with [`Error::Encode`] saying so (a smaller `chunksize`
    /// is the remedy). The window then counts chunks.
    fn map_with<'a, F, A, R, I>(&'a self, func: F, inputs: I, options: MapOptions) -> Map<'a, R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let window = options.window_for(self.max_workers());
        let mut inputs = inputs.into_iter();
        match options.chunksize {
            Some(size) if size > 1 => {
                // One task per chunk; each item keeps its own result. The
                // closure captures only the zero-sized `func`, so it is
                // itself a portable task.
                let run_chunk = move |items: ChunkArgs<A>| run_items(func, items);
                let mut chunks = ChunkFeed::new(self, run_chunk, inputs, size);
                let submit = move || chunks.next();
                let arg_type = std::any::type_name::<A>();
                Map::chunked(Box::new(submit), window, options.timeout, arg_type)
            }
            _ => {
                let mut feed = Feed::new(self);
                let submit = move || {
                    if feed.refused {
                        return None;
                    }
                    inputs.next().map(|a| feed.submit(func, a))
                };
                Map::new(Box::new(submit), window, options.timeout)
            }
        }
    }

    /// Maps `func` over `inputs`, yielding `(index, result)` pairs in
    /// completion order, with the same bounded window as [`map`](Self::map).
    /// Like [`wait`](fn@crate::wait), it blocks without running other tasks:
    /// inside a task of the same thread pool, prefer [`map`](Self::map),
    /// whose waits help run queued work.
    fn map_unordered<'a, F, A, R, I>(&'a self, func: F, inputs: I) -> MapUnordered<'a, R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let window = MapOptions::default().window_for(self.max_workers());
        let mut inputs = inputs.into_iter();
        let mut feed = Feed::new(self);
        let submit = move || {
            if feed.refused {
                return None;
            }
            inputs.next().map(|a| feed.submit(func, a))
        };
        MapUnordered::new(Box::new(submit), window)
    }
}

/// How a map submits its inputs. Once the executor refuses a task (it was
/// shut down or is broken), that item's future carries the refusal and the
/// map pulls no more input: it ends after that item, as CPython's does
/// (M15), instead of failing every remaining item of a long or endless
/// input. The one exception is [`Error::Encode`]: a process pool reports
/// an argument that does not encode (or does not fit a frame) that way, and
/// it fails only its own item (D1; a chunk is sent again item by item, see
/// [`submit_chunk`](Self::submit_chunk)) while the map goes on with the
/// next input. Any other error, from this crate's
/// executors or a user's, is a refusal.
pub(crate) struct Feed<'a, E: ?Sized> {
    executor: &'a E,
    pub(crate) refused: bool,
}

impl<'a, E: Executor + ?Sized> Feed<'a, E> {
    pub(crate) fn new(executor: &'a E) -> Self {
        Feed {
            executor,
            refused: false,
        }
    }

    pub(crate) fn submit<F, A, R>(&mut self, func: F, arg: A) -> Future<R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
    {
        let pool = self.executor.__thread_pool_id();
        let (task, future) = PortableTask::create_for(func, arg, pool);
        if let Err((task, error)) = self.executor.execute(Task { job: task }) {
            self.refused = !matches!(error, Error::Encode { .. });
            task.fail(error);
        }
        future
    }

    /// Submits `items` as one chunk task (see the `chunk` module). When
    /// the chunk's argument does not encode (an item does not serialize,
    /// or the chunk does not fit in a frame), nothing is submitted and the
    /// items come back, to be sent one by one; for a chunk of one item,
    /// its future carries the error, naming the item's type (D1).
    pub(crate) fn submit_chunk<C, A, R>(
        &mut self,
        run_chunk: C,
        items: Vec<A>,
    ) -> Result<Future<ChunkResult<R>>, Vec<A>>
    where
        C: Fn(ChunkArgs<A>) -> ChunkResult<R> + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
    {
        let pool = self.executor.__thread_pool_id();
        if items.len() == 1 {
            // A chunk of one is sent as a plain task of its item, which
            // gives its result in a chunk's form: its argument is then
            // the item's own encoding, which fits a frame exactly when
            // `submit` of the item would (wrapped, the chunk's few bytes of
            // header failed an item that fits; found by review). The
            // closure captures only `run_chunk`, a zero-sized `fn`, so a
            // process pool can conjure it as it does `run_chunk`.
            let run_one = move |item: A| run_chunk(ChunkArgs::Items(vec![item]));
            let item = items.into_iter().next().expect("one item");
            let (task, future) = PortableTask::create_for(run_one, item, pool);
            if let Err((task, error)) = self.executor.execute(Task { job: task }) {
                self.refused = !matches!(error, Error::Encode { .. });
                task.fail(error);
            }
            return Ok(future);
        }
        let (task, future) = PortableTask::create_for(run_chunk, ChunkArgs::Items(items), pool);
        let kept = task.clone();
        let Err((task, error)) = self.executor.execute(Task { job: task }) else {
            return Ok(future);
        };
        let error = match error {
            Error::Encode { .. } => match kept.take_arg() {
                // Not submitted: the task and its future go unused.
                Some(args) => return Err(args.into_items()),
                None => error,
            },
            other => {
                self.refused = true;
                other
            }
        };
        task.fail(error);
        Ok(future)
    }
}

impl<E: Executor + ?Sized> ExecutorExt for E {}

/// `Arc<E>`, `Box<E>` and `&E` are executors when `E` is, `dyn Executor`
/// included, so generic code can take any of them.
macro_rules! forward_executor {
    ($($ty:ty),*) => {$(
        impl<E: Executor + ?Sized> Executor for $ty {
            fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
                (**self).execute(task)
            }
            fn shutdown(&self, wait: bool, cancel_futures: bool) {
                (**self).shutdown(wait, cancel_futures)
            }
            fn shutdown_within(
                &self,
                deadline: std::time::Duration,
                cancel_futures: bool,
            ) -> ShutdownOutcome {
                (**self).shutdown_within(deadline, cancel_futures)
            }
            fn max_workers(&self) -> usize {
                (**self).max_workers()
            }
            fn __thread_pool_id(&self) -> u64 {
                (**self).__thread_pool_id()
            }
            fn __wait_ended(&self, deadline: Option<std::time::Instant>) -> bool {
                (**self).__wait_ended(deadline)
            }
        }
    )*};
}
forward_executor!(std::sync::Arc<E>, Box<E>, &E);

#[allow(dead_code)]
fn _assert_object_safe(_: &dyn Executor) {}

pub(crate) use task::ClosureTask;
#[allow(unused_imports)]
pub(crate) use task::Job as JobTrait;
