//! [`AsyncResult`] and [`Callbacks`]: what `apply_async` and `map_async`
//! hand back, and what they run when the result arrives.

use std::fmt;
use std::time::{Duration, Instant};

use crate::future::TaskEnd;
use crate::sync::{Mutex, lock};
use crate::{Error, Future, Promise};

/// The result of [`Pool::apply_async`](crate::Pool::apply_async) and
/// [`Pool::map_async`](crate::Pool::map_async), as
/// `multiprocessing.pool.AsyncResult` (MP5).
///
/// It becomes ready on the pool's result-handling thread *after* the
/// callback or error callback has returned (MP6): once [`get`](Self::get)
/// returns, the callback has run.
///
/// Unlike CPython (MP24), a result never stays pending forever: if the pool
/// is terminated (or dropped) first, it fails (see
/// [`Pool::terminate`](crate::Pool::terminate)).
pub struct AsyncResult<T> {
    fut: Future<T>,
    /// The id of the executor that runs the tasks.
    pool: u64,
    /// The ends of the tasks behind the result, not yet seen ended: a
    /// worker of their thread pool helps with these first, and so runs a
    /// task still queued there itself (T10; see [`TaskEnd`]).
    tasks: Mutex<Vec<TaskEnd>>,
}

impl<T: Send + Sync + 'static> AsyncResult<T> {
    /// `pool`: the id of the executor that runs the task
    /// (`Executor::__thread_pool_id`).
    pub(crate) fn new(pool: u64) -> (Promise<T>, AsyncResult<T>) {
        // A plain promise, whose wait helps with nothing: the help a wait on
        // the result owes (T10) is `help_with_tasks`', through the tasks;
        // a wait on a task's result that helped after the task had ended
        // ran the waiting task's other subtasks on top of it (a consumer
        // on its producer; found by review).
        let (promise, fut) = Promise::new();
        let result = AsyncResult {
            fut,
            pool,
            tasks: Mutex::new(Vec::new()),
        };
        (promise, result)
    }

    /// Adds a task whose end the result waits for.
    pub(crate) fn behind<R: Send + Sync + 'static>(&mut self, task: &Future<R>) {
        lock(&self.tasks).push(task.task_end());
    }

    /// Waits at most `timeout` (`None`: forever) and lends the value, or
    /// gives the task's error. [`Error::Timeout`] if it is still not ready
    /// (`multiprocessing.TimeoutError`); the task keeps running and `get`
    /// may be called again. Callable any number of times.
    ///
    /// On a worker of a thread pool, waiting on a result of the same pool
    /// runs its task there if it is still queued, as
    /// [`Future::result`] does (T10): tasks that wait on each other's
    /// results do not deadlock a pool whose every worker waits.
    ///
    /// Don't call it from a pool callback for a result of the same pool:
    /// callbacks run on the thread that makes results ready.
    pub fn get(&self, timeout: Option<Duration>) -> Result<&T, Error> {
        let deadline = crate::sync::deadline(timeout);
        self.help_with_tasks(deadline);
        match self.fut.result(left_until(deadline)) {
            Err(Error::Timeout { .. }) => Err(Error::Timeout {
                waited: timeout.unwrap_or_default(),
            }),
            other => other,
        }
    }

    /// Waits without limit and moves the value out (`get(None)` by value).
    pub fn into_result(self) -> Result<T, Error> {
        self.help_with_tasks(None);
        self.fut.into_result()
    }

    /// Waits at most `timeout` (`None`: forever) for the result to be
    /// ready. Never fails (MP5); returns [`ready`](Self::ready).
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = crate::sync::deadline(timeout);
        self.help_with_tasks(deadline);
        !matches!(
            self.fut.exception(left_until(deadline)),
            Err(Error::Timeout { .. })
        )
    }

    /// On a worker of the tasks' thread pool: helps with every task behind
    /// the result that has not ended (see [`TaskEnd`]), running those still
    /// queued here, for as long as one runs on another worker that may
    /// queue more of its subtasks, as a wait on a `Future` does (found by
    /// review: one round of help missed the subtasks queued later). In
    /// between it waits on the result itself, backing off, which may be
    /// made ready without its tasks ending (`terminate` fails it). Returns
    /// when nothing is left to help with, the result is ready or the
    /// deadline passed; the caller then waits on the result. Elsewhere, and
    /// once the result is ready, nothing to do (the ends are dropped).
    fn help_with_tasks(&self, deadline: Option<Instant>) {
        if !crate::thread::is_worker_of(self.pool) {
            self.drop_ends_if_ready();
            return;
        }
        let mut again = HELP_AGAIN_FIRST;
        while !self.fut.done() {
            let ends: Vec<TaskEnd> = {
                let mut tasks = lock(&self.tasks);
                tasks.retain(|end| !end.ended());
                tasks.iter().cloned().collect()
            };
            let mut look_again = false;
            for end in ends {
                if self.fut.done() {
                    break;
                }
                look_again |= end.help(deadline);
            }
            if !look_again {
                break;
            }
            let until = Instant::now() + again;
            let until = deadline.map_or(until, |d| d.min(until));
            let _ = self.fut.exception(left_until(Some(until)));
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            again = (again * 2).min(HELP_AGAIN_MAX);
        }
        self.drop_ends_if_ready();
    }

    /// Drops the tasks' ends once the result is ready: nothing waits on
    /// them any more.
    fn drop_ends_if_ready(&self) {
        if self.fut.done() {
            lock(&self.tasks).clear();
        }
    }

    /// True once the result (value or error) is available.
    pub fn ready(&self) -> bool {
        self.fut.done()
    }

    /// Whether the call completed without error. Like CPython's
    /// `ValueError("... not ready")`, asking before it is ready is an error:
    /// [`Error::InvalidCall`] whose message says the result is not ready.
    pub fn successful(&self) -> Result<bool, Error> {
        if !self.ready() {
            return Err(Error::InvalidCall(
                "AsyncResult.successful(): the result is not ready".into(),
            ));
        }
        Ok(matches!(self.fut.exception(Some(Duration::ZERO)), Ok(None)))
    }
}

/// How long a worker waiting on a result whose task runs on another worker
/// waits before it helps with that task's subtasks again, doubling each
/// time up to [`HELP_AGAIN_MAX`] (as `Core::wait_until` does for a
/// `Future`).
const HELP_AGAIN_FIRST: Duration = Duration::from_micros(50);
const HELP_AGAIN_MAX: Duration = Duration::from_millis(10);

/// What is left of the time until `deadline` (`None`: no deadline).
fn left_until(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("future", &self.fut)
            .finish()
    }
}

type OnValue<T> = Box<dyn FnOnce(&T) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;

/// The `callback` and `error_callback` of `apply_async` and `map_async`.
///
/// Both run in the parent, on the pool's one result-handling thread (MP6),
/// one at a time, before the [`AsyncResult`] becomes ready; they may capture
/// anything `Send`. A slow callback delays every later result (MP7), so
/// keep them short.
///
/// A panicking `callback` does not kill that thread (as it does in CPython,
/// gh-83371): the panic becomes the job's error, an [`Error::Panicked`]
/// whose message starts with `callback panicked: `. A panicking
/// `error_callback` is logged (target `concurrent_futures`) and the job
/// keeps its original error.
///
/// ```
/// use concurrent_futures::Callbacks;
/// let cbs = Callbacks::<u64>::new()
///     .callback(|v| println!("got {v}"))
///     .error_callback(|e| eprintln!("failed: {e}"));
/// # drop(cbs);
/// ```
pub struct Callbacks<T> {
    pub(crate) on_value: Option<OnValue<T>>,
    pub(crate) on_error: Option<OnError>,
}

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Callbacks {
            on_value: None,
            on_error: None,
        }
    }
}

impl<T> Callbacks<T> {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with the value when the job succeeds (`callback=`).
    pub fn callback(mut self, f: impl FnOnce(&T) + Send + 'static) -> Self {
        self.on_value = Some(Box::new(f));
        self
    }

    /// Runs `f` with the error when the job fails (`error_callback=`): a
    /// task panic arrives as [`Error::Panicked`] with the panic message.
    pub fn error_callback(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }
}

impl<T> fmt::Debug for Callbacks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("callback", &self.on_value.is_some())
            .field("error_callback", &self.on_error.is_some())
            .finish()
    }
}

/// Runs the callbacks for `outcome` (catching panics), then makes the
/// result ready: the callback has finished when `get` returns (MP6).
pub(crate) fn settle<T: Send + Sync + 'static>(
    outcome: Result<T, Error>,
    callbacks: Callbacks<T>,
    promise: Promise<T>,
) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let outcome = match outcome {
        Ok(value) => match callbacks.on_value {
            Some(cb) => match catch_unwind(AssertUnwindSafe(|| cb(&value))) {
                Ok(()) => Ok(value),
                Err(payload) => {
                    let message = crate::error::take_panic_message(payload);
                    crate::error::report!(error, "a pool callback panicked: {message}");
                    Err(Error::Panicked {
                        message: format!("callback panicked: {message}"),
                        backtrace: None,
                    })
                }
            },
            None => Ok(value),
        },
        Err(error) => {
            if let Some(cb) = callbacks.on_error {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| cb(&error))) {
                    let message = crate::error::take_panic_message(payload);
                    crate::error::report!(
                        error,
                        "a pool error_callback panicked: {message} (the job keeps its error: {error})"
                    );
                }
            }
            Err(error)
        }
    };
    let _ = match outcome {
        Ok(v) => promise.set_result(v),
        Err(e) => promise.set_exception(e),
    };
}
