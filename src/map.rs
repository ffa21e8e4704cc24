//! `Executor.map`, bounded: [`Map`] (input order) and [`MapUnordered`]
//! (completion order).
//!
//! CPython's `map` submits every input before yielding anything (M2, PP1),
//! so mapping a huge or endless iterator exhausts memory. Ours keeps a
//! window of at most `window` tasks in flight (never `window + 1`: M13,
//! decision 5) and pulls the next input only once the front task has
//! ended, as it hands that result out (never ahead of the window). Each
//! item is a `Result` at its own position, so one failure does not end the
//! iteration (decision 2), and the map deadline is its own error variant,
//! distinct from a task's failure (PP12).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::chunk::ChunkResult;
use crate::future::Future;
use crate::wait::Inbox;
use crate::{Error, sync::Arc};

/// Pulls the next input and submits it; `None` when the inputs are done.
pub(crate) type Submitter<'a, R> = Box<dyn FnMut() -> Option<Future<R>> + Send + 'a>;

/// Options for [`ExecutorExt::map_with`](crate::ExecutorExt::map_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapOptions {
    /// The most tasks in flight at once; `None`: twice the executor's
    /// `max_workers`. Zero is treated as one. The map fills its window
    /// before it yields: a window far larger than the input costs nothing,
    /// but over an endless input `usize::MAX` never yields (as CPython's
    /// `imap`, which reads all its input, MP16).
    pub window: Option<usize>,
    /// One deadline for the whole map, counted from the call (M3). When it
    /// passes, the item being waited for yields [`Error::MapDeadline`], the
    /// rest are cancelled and the iteration ends (M4).
    pub timeout: Option<Duration>,
    /// Items per task (M9): worth it for process pools, where a chunk is one
    /// frame each way. `None`, 0 or 1: one item per task.
    pub chunksize: Option<usize>,
}

impl MapOptions {
    /// Default options: a window of `2 × max_workers`, no deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the in-flight window (see [`window`](Self::window)).
    pub fn window(mut self, window: usize) -> Self {
        self.window = Some(window);
        self
    }

    /// Sets the deadline, counted from the `map` call (M3): past it the
    /// map yields [`Error::MapDeadline`] and ends, cancelling the tasks not
    /// yet started. To hold it, the map's waits run no task on the waiting
    /// thread (a map without a deadline, iterated on a thread-pool worker,
    /// helps run its own tasks there, T10), so inside a task of a
    /// one-worker pool a map with a deadline waits for it to pass.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the chunk size (process pools).
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize);
        self
    }

    pub(crate) fn window_for(&self, max_workers: usize) -> usize {
        self.window
            .unwrap_or_else(|| max_workers.saturating_mul(2))
            .max(1)
    }
}

/// Pulls the next chunk and submits it; also says how many items it holds.
pub(crate) type ChunkSubmitter<'a, R> =
    Box<dyn FnMut() -> Option<(Future<ChunkResult<R>>, usize)> + Send + 'a>;

/// The ordered results of [`ExecutorExt::map`](crate::ExecutorExt::map).
///
/// Dropping it cancels every task not yet yielded (M7); tasks already
/// running finish on their own.
pub struct Map<'a, R> {
    inner: Inner<'a, R>,
}

enum Inner<'a, R> {
    One(Window<'a, R>),
    Chunks {
        window: Window<'a, ChunkResult<R>>,
        ready: VecDeque<Result<R, Error>>,
        /// The items' argument type, for one that did not decode in a
        /// worker.
        arg_type: &'static str,
    },
}

impl<R> fmt::Debug for Map<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, chunked) = match &self.inner {
            Inner::One(w) => (w.in_flight.len(), false),
            Inner::Chunks { window, .. } => (window.in_flight.len(), true),
        };
        f.debug_struct("Map")
            .field("in_flight", &w)
            .field("chunked", &chunked)
            .finish()
    }
}

impl<'a, R: 'a> Map<'a, R> {
    pub(crate) fn new(submit: Submitter<'a, R>, window: usize, timeout: Option<Duration>) -> Self {
        let mut submit = submit;
        let submit: CountedSubmitter<'a, R> = Box::new(move || submit().map(|f| (f, 1)));
        Map {
            inner: Inner::One(Window::new(submit, window, timeout)),
        }
    }

    pub(crate) fn chunked(
        submit: ChunkSubmitter<'a, R>,
        window: usize,
        timeout: Option<Duration>,
        arg_type: &'static str,
    ) -> Self {
        Map {
            inner: Inner::Chunks {
                window: Window::new(submit, window, timeout),
                ready: VecDeque::new(),
                arg_type,
            },
        }
    }

    /// Tasks submitted and not yet yielded; never more than the window. (A
    /// chunk counts as one task.)
    pub fn in_flight(&self) -> usize {
        match &self.inner {
            Inner::One(w) => w.in_flight.len(),
            Inner::Chunks { window, .. } => window.in_flight.len(),
        }
    }

    /// [`next`](Iterator::next), waiting at most `timeout` for the next
    /// result (`IMapIterator.next(timeout)`, MP12): `Err(Error::Timeout)`
    /// if it is not ready by then. Nothing is lost: that result stays next,
    /// and the map goes on (call again, or use the iterator). `Ok(None)`
    /// once every result was yielded. A map deadline
    /// ([`MapOptions::timeout`]) that passes first ends the map as in
    /// `next`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{Error, ExecutorExt, ThreadPoolExecutor};
    ///
    /// fn slow(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// let pool = ThreadPoolExecutor::new(1).unwrap();
    /// let mut results = pool.map(slow, [300, 1]);
    /// assert!(matches!(
    ///     results.next_timeout(Duration::from_millis(1)),
    ///     Err(Error::Timeout { .. })
    /// ));
    /// assert_eq!(results.next_timeout(Duration::from_secs(30)), Ok(Some(Ok(300))));
    /// assert_eq!(results.next(), Some(Ok(1)));
    /// assert_eq!(results.next_timeout(Duration::ZERO), Ok(None));
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Result<R, Error>>, Error> {
        match &mut self.inner {
            Inner::One(w) => Ok(w.next_within(timeout)?.map(|(r, _)| r)),
            Inner::Chunks {
                window,
                ready,
                arg_type,
            } => loop {
                if let Some(r) = ready.pop_front() {
                    return Ok(Some(r));
                }
                let Some(got) = window.next_within(timeout)? else {
                    return Ok(None);
                };
                if let Some(r) = unpack_chunk(ready, arg_type, got) {
                    return Ok(Some(r));
                }
            },
        }
    }
}

/// The error of a chunk that failed as a whole, for each of its `n`
/// items: a chunk's results that did not encode or fit a frame *together*
/// are named as the item's result type, with the remedy (found by review:
/// the error named the crate's private `ChunkResult` and not why).
pub(crate) fn chunk_error<R>(e: Error, n: usize) -> Error {
    match e {
        Error::Encode { type_name, message } if type_name.contains("::chunk::ChunkResult<") => {
            let message = if n > 1 {
                format!(
                    "{message}: the results of a chunk ({n} items, this one among them) \
                     travel back together; a smaller chunksize sends fewer at once"
                )
            } else {
                message
            };
            Error::Encode {
                type_name: std::any::type_name::<R>(),
                message,
            }
        }
        e => e,
    }
}

/// Queues the items of a chunk's outcome in `ready`; returns the one
/// result that must come out at once instead (a map deadline ends the
/// iteration after one error).
fn unpack_chunk<R>(
    ready: &mut VecDeque<Result<R, Error>>,
    arg_type: &'static str,
    (outcome, n): (Result<ChunkResult<R>, Error>, usize),
) -> Option<Result<R, Error>> {
    match outcome {
        Ok(items) => ready.extend(items.into_results(arg_type)),
        Err(e @ Error::MapDeadline { .. }) => return Some(Err(e)),
        // A chunk that failed as a whole (its worker died, ...) fails each
        // of its items, each at its own position.
        Err(e) => ready.extend(std::iter::repeat_n(chunk_error::<R>(e, n), n).map(Err)),
    }
    None
}

impl<R> Iterator for Map<'_, R> {
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::One(w) => w.next().map(|(r, _)| r),
            Inner::Chunks {
                window,
                ready,
                arg_type,
            } => loop {
                if let Some(r) = ready.pop_front() {
                    return Some(r);
                }
                if let Some(r) = unpack_chunk(ready, arg_type, window.next()?) {
                    return Some(r);
                }
            },
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            Inner::One(w) => w.size_hint(),
            Inner::Chunks { ready, .. } => (ready.len(), None),
        }
    }
}

/// Waits until `fut` ends or `until` passes (`None`: no limit). A bounded
/// wait runs nothing here: it needs no help to end (it cannot deadlock a
/// small pool), and a task run here, in place or nested, would overrun the
/// bound by its whole length (M3, MP12). An unbounded one helps as
/// `result` does (T10).
fn wait_bounded<T>(fut: &Future<T>, until: Option<Instant>) {
    match until {
        Some(until) => {
            let left = until.saturating_duration_since(Instant::now());
            let _ = crate::wait::wait([fut], Some(left), crate::wait::ReturnWhen::FirstCompleted);
        }
        None => {
            let _ = fut.result(None);
        }
    }
}

/// Room reserved up front for the in-flight futures of a map: a window is
/// a bound, not a size (`usize::MAX` asks for CPython's eager map), and a
/// map over a few items must not allocate for the whole bound.
const PREALLOCATED: usize = 64;

/// A result of a [`Window`], with the number of items it stands for.
type Counted<T> = (Result<T, Error>, usize);

type CountedSubmitter<'a, T> = Box<dyn FnMut() -> Option<(Future<T>, usize)> + Send + 'a>;

/// The bounded, ordered window of futures behind [`Map`].
struct Window<'a, T> {
    submit: CountedSubmitter<'a, T>,
    in_flight: VecDeque<(Future<T>, usize)>,
    window: usize,
    deadline: Option<(Instant, Duration)>,
    exhausted: bool,
}

impl<'a, T> Window<'a, T> {
    fn new(submit: CountedSubmitter<'a, T>, window: usize, timeout: Option<Duration>) -> Self {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t).map(|d| (d, t)));
        let mut w = Window {
            submit,
            in_flight: VecDeque::with_capacity(window.min(PREALLOCATED)),
            window,
            deadline,
            exhausted: false,
        };
        w.fill();
        w
    }

    fn fill(&mut self) {
        self.fill_with_ended(0);
    }

    /// Submits until `window` tasks are in flight, not counting the first
    /// `ended` futures of the queue, which have ended.
    fn fill_with_ended(&mut self, ended: usize) {
        while !self.exhausted && self.in_flight.len() < self.window + ended {
            match (self.submit)() {
                Some(f) => self.in_flight.push_back(f),
                None => self.exhausted = true,
            }
        }
    }

    /// Cancels what has not started; running tasks finish on their own
    /// (M4, M7), also on a process pool that kills on `cancel()`.
    fn cancel_all(&mut self) {
        for (f, _) in self.in_flight.drain(..) {
            f.cancel_pending();
        }
        self.exhausted = true;
    }

    /// The next result in order, with the number of items it stands for.
    fn next(&mut self) -> Option<Counted<T>> {
        let (front, n) = self.in_flight.front()?;
        let n = *n;
        match self.deadline {
            Some((deadline, timeout)) => {
                wait_bounded(front, Some(deadline));
                // Not the front's own outcome: a task may fail with
                // `Timeout` itself, and that is its item's error
                // (decision 2).
                if !front.done() {
                    self.cancel_all();
                    return Some((Err(Error::MapDeadline { timeout }), n));
                }
            }
            None => wait_bounded(front, None),
        }
        // The front has ended, so its slot is free: refill it (at most
        // `window` unfinished) before taking the front out, so that an
        // input iterator that panics here loses no finished result; it
        // stays first for the next call.
        self.fill_with_ended(1);
        let (fut, _) = self.in_flight.pop_front()?;
        Some((fut.into_result(), n))
    }

    /// [`next`](Self::next), waiting at most `patience` for the front
    /// future to end: `Err(Timeout)` leaves it in front. When the map's
    /// deadline passes first, `next` ends the map as usual.
    fn next_within(&mut self, patience: Duration) -> Result<Option<Counted<T>>, Error> {
        let Some((front, _)) = self.in_flight.front() else {
            return Ok(None);
        };
        let started = Instant::now();
        // A patience too long for the clock is no limit, as everywhere.
        let until = match (started.checked_add(patience), self.deadline) {
            (Some(p), Some((d, _))) => Some(p.min(d)),
            (p, d) => p.or(d.map(|(d, _)| d)),
        };
        // Only to wait: the outcome is read by `next`.
        wait_bounded(front, until);
        let deadline_passed = self.deadline.is_some_and(|(d, _)| Instant::now() >= d);
        if !front.done() && !deadline_passed {
            return Err(Error::Timeout { waited: patience });
        }
        Ok(self.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.in_flight.len();
        // A deadline may end the map early: one `MapDeadline` item then
        // stands for everything still in flight.
        let at_least = if self.deadline.is_some() { n.min(1) } else { n };
        (at_least, self.exhausted.then_some(n))
    }
}

impl<T> Drop for Window<'_, T> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// The results of [`ExecutorExt::map_unordered`](crate::ExecutorExt::map_unordered):
/// `(input index, result)` in completion order.
pub struct MapUnordered<'a, R> {
    submit: Submitter<'a, R>,
    /// Slot `key` holds the future registered under that key.
    slots: Vec<Option<(usize, Future<R>)>>,
    free: Vec<usize>,
    inbox: Arc<Inbox>,
    window: usize,
    next_index: usize,
    in_flight: usize,
    exhausted: bool,
}

impl<R> fmt::Debug for MapUnordered<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("in_flight", &self.in_flight)
            .field("window", &self.window)
            .finish()
    }
}

impl<'a, R> MapUnordered<'a, R> {
    pub(crate) fn new(submit: Submitter<'a, R>, window: usize) -> Self {
        let mut m = MapUnordered {
            submit,
            slots: Vec::with_capacity(window.min(PREALLOCATED)),
            free: Vec::new(),
            inbox: Inbox::new(),
            window,
            next_index: 0,
            in_flight: 0,
            exhausted: false,
        };
        m.fill();
        m
    }

    /// Tasks submitted and not yet yielded; never more than the window.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// [`next`](Iterator::next), waiting at most `timeout` for a result
    /// (MP12, as [`Map::next_timeout`]): `Err(Error::Timeout)` if none
    /// ended by then; the map goes on. `Ok(None)` once every result was
    /// yielded.
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<<Self as Iterator>::Item>, Error> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let deadline = Instant::now().checked_add(timeout);
        match self.inbox.recv(deadline) {
            Some((key, _)) => Ok(self.take(key)),
            None => Err(Error::Timeout { waited: timeout }),
        }
    }

    /// Yields the future registered under `key` (it has ended), and
    /// submits the next input first: its slot stays taken meanwhile, so if
    /// the input iterator panics, the key goes back to the inbox and the
    /// result comes out at the next call instead of being lost.
    fn take(&mut self, key: usize) -> Option<(usize, Result<R, Error>)> {
        self.slots[key].as_ref()?;
        self.in_flight -= 1;
        let filled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fill()));
        if let Err(payload) = filled {
            self.in_flight += 1;
            crate::future::core::Watcher::notify(
                &*self.inbox,
                key,
                crate::future::core::Ending::Value,
            );
            std::panic::resume_unwind(payload);
        }
        let (index, fut) = self.slots[key].take()?;
        self.free.push(key);
        Some((index, fut.into_result()))
    }

    fn fill(&mut self) {
        while !self.exhausted && self.in_flight < self.window {
            let Some(fut) = (self.submit)() else {
                self.exhausted = true;
                break;
            };
            let key = self.free.pop().unwrap_or_else(|| {
                self.slots.push(None);
                self.slots.len() - 1
            });
            let watcher = self.inbox.as_watcher();
            if fut.core().watch(&watcher, key).is_some() {
                // Already ended: queue it as if it had notified.
                crate::future::core::Watcher::notify(
                    &*self.inbox,
                    key,
                    crate::future::core::Ending::Value,
                );
            }
            self.slots[key] = Some((self.next_index, fut));
            self.next_index += 1;
            self.in_flight += 1;
        }
    }
}

impl<R> Iterator for MapUnordered<'_, R> {
    type Item = (usize, Result<R, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.in_flight == 0 {
            return None;
        }
        let (key, _) = self.inbox.recv(None)?;
        self.take(key)
    }
}

impl<R> Drop for MapUnordered<'_, R> {
    fn drop(&mut self) {
        let watcher = self.inbox.as_watcher();
        for (_, f) in self.slots.iter().flatten() {
            f.core().unwatch(&watcher);
            f.cancel_pending();
        }
    }
}
