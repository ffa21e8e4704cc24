//! Waiting for many futures at once: [`wait`] and [`as_completed`].
//!
//! Both register one watcher (an [`Inbox`]) on every future they are given;
//! a future that ends pushes its key into the inbox and wakes the waiting
//! thread (or task, for the `Stream` form). No polling, no thread per future.
//! Futures are told apart by identity, so a future given twice counts once
//! (A2, W1), and futures of different result types can be mixed through
//! `&dyn Waitable`.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::Error;
use crate::future::Future;
use crate::future::core::{Ending, Watcher};
use crate::sync::{Arc, Condvar, Mutex, lock};

/// A future that [`wait`] and [`as_completed`] can watch, whatever its
/// result type. Implemented by [`Future<T>`]; pass `&dyn Waitable` to mix
/// result types in one call. Sealed: only this crate implements it.
pub trait Waitable: Sync {
    /// Whether the future has ended (finished or cancelled).
    fn is_done(&self) -> bool;
    #[doc(hidden)]
    fn watch_handle(&self) -> WatchHandle<'_>;
}

/// The type-erased completion state of a future (internal).
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct WatchHandle<'a>(&'a dyn AnyCore);

impl fmt::Debug for WatchHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatchHandle")
    }
}

/// What `wait` needs of a future's core, whatever `T` is.
pub(crate) trait AnyCore {
    fn watch(&self, watcher: &Arc<dyn Watcher>, key: usize) -> Option<Ending>;
    fn unwatch(&self, watcher: &Arc<dyn Watcher>);
}

impl<T> AnyCore for crate::future::core::Core<T> {
    fn watch(&self, watcher: &Arc<dyn Watcher>, key: usize) -> Option<Ending> {
        crate::future::core::Core::watch(self, watcher, key)
    }
    fn unwatch(&self, watcher: &Arc<dyn Watcher>) {
        crate::future::core::Core::unwatch(self, watcher)
    }
}

impl<T> Waitable for Future<T> {
    fn is_done(&self) -> bool {
        self.done()
    }
    fn watch_handle(&self) -> WatchHandle<'_> {
        WatchHandle(self.core())
    }
}

impl WatchHandle<'_> {
    fn watch(self, watcher: &Arc<dyn Watcher>, key: usize) -> Option<Ending> {
        self.0.watch(watcher, key)
    }
    fn unwatch(self, watcher: &Arc<dyn Watcher>) {
        self.0.unwatch(watcher)
    }
    fn identity(self) -> *const () {
        self.0 as *const dyn AnyCore as *const ()
    }
}

/// A mailbox that futures drop their key into when they end.
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    cond: Condvar,
}

struct InboxState {
    ready: VecDeque<(usize, Ending)>,
    waker: Option<Waker>,
}

impl Watcher for Inbox {
    fn notify(&self, key: usize, ending: Ending) {
        let mut s = lock(&self.state);
        s.ready.push_back((key, ending));
        let waker = s.waker.take();
        drop(s);
        self.cond.notify_one();
        if let Some(w) = waker {
            // The runtime's code, on the completing thread: see `wake_caught`.
            crate::future::core::wake_caught(w);
        }
    }
}

impl Inbox {
    pub(crate) fn new() -> Arc<Inbox> {
        Arc::new(Inbox {
            state: Mutex::new(InboxState {
                ready: VecDeque::new(),
                waker: None,
            }),
            cond: Condvar::new(),
        })
    }

    /// Takes the next ended key, waiting until `deadline` (`None`: forever).
    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Option<(usize, Ending)> {
        let mut s = lock(&self.state);
        loop {
            if let Some(x) = s.ready.pop_front() {
                return Some(x);
            }
            s = crate::sync::wait_deadline(&self.cond, s, deadline).ok()?;
        }
    }

    /// Takes the next ended key, or registers `waker` for the next one.
    pub(crate) fn poll_recv(&self, waker: &Waker) -> Option<(usize, Ending)> {
        let mut s = lock(&self.state);
        let x = s.ready.pop_front();
        if x.is_none() {
            s.waker = Some(waker.clone());
        }
        x
    }

    pub(crate) fn as_watcher(self: &Arc<Self>) -> Arc<dyn Watcher> {
        self.clone()
    }
}

/// Distinct futures, in first-seen order (identity, not value: A2, W1).
fn distinct<'a, W: Waitable + ?Sized + 'a>(futures: impl IntoIterator<Item = &'a W>) -> Vec<&'a W> {
    let mut seen = HashSet::new();
    futures
        .into_iter()
        .filter(|f| seen.insert(f.watch_handle().identity()))
        .collect()
}

/// When [`wait`] returns (W2-W4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnWhen {
    /// As soon as any future ends (W2).
    FirstCompleted,
    /// As soon as any future fails; a cancellation is not a failure. With no
    /// failure, like `AllCompleted` (W3).
    FirstException,
    /// When every future has ended (W4).
    #[default]
    AllCompleted,
}

/// The two sets [`wait`] returns (W1).
pub struct DoneAndNotDone<'a, W: ?Sized> {
    /// Futures that ended (finished or cancelled).
    pub done: Vec<&'a W>,
    /// Futures still pending or running.
    pub not_done: Vec<&'a W>,
}

impl<W: ?Sized> fmt::Debug for DoneAndNotDone<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoneAndNotDone")
            .field("done", &self.done.len())
            .field("not_done", &self.not_done.len())
            .finish()
    }
}

/// Waits until the futures meet `return_when`, or `timeout` passes, and
/// returns the done and not-done sets.
///
/// Unlike [`Future::result`], `wait` and [`as_completed`] do not run other
/// tasks while they block: called from a task of a thread pool on futures
/// of that same pool, they can starve it, as in CPython. Inside a task,
/// wait on the futures one by one with `result`/`into_result`, which help. A timeout never errors: it returns
/// the partial sets (W5). Duplicates count once (W1).
///
/// ```
/// use concurrent_futures::{wait, ExecutorExt, ReturnWhen, ThreadPoolExecutor};
///
/// fn id(x: u32) -> u32 { x }
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let futs: Vec<_> = (0..4).map(|i| pool.submit(id, i)).collect();
/// let sets = wait(&futs, None, ReturnWhen::AllCompleted);
/// assert_eq!((sets.done.len(), sets.not_done.len()), (4, 0));
/// ```
///
/// `return_when` is an enum, so the invalid values CPython checks only
/// when it has to block (W7) do not compile:
///
/// ```compile_fail
/// use concurrent_futures::{wait, Future};
/// let futs: Vec<Future<u32>> = Vec::new();
/// wait(&futs, None, "FIRST_COMPLETED"); // error: expected `ReturnWhen`
/// ```
pub fn wait<'a, W, I>(
    futures: I,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> DoneAndNotDone<'a, W>
where
    W: Waitable + ?Sized + 'a,
    I: IntoIterator<Item = &'a W>,
{
    let deadline = crate::sync::deadline(timeout);
    let futures = distinct(futures);
    let inbox = Inbox::new();
    let watcher = inbox.as_watcher();
    let mut done = vec![false; futures.len()];
    let mut remaining = futures.len();
    let mut met = false;
    for (key, f) in futures.iter().enumerate() {
        if let Some(ending) = f.watch_handle().watch(&watcher, key) {
            done[key] = true;
            remaining -= 1;
            met |= ending_meets(ending, return_when);
        }
    }
    // Already-done inputs satisfy FirstCompleted/FirstException at once (W2, W3).
    while remaining > 0 && !met {
        let Some((key, ending)) = inbox.recv(deadline) else {
            break;
        };
        if !done[key] {
            done[key] = true;
            remaining -= 1;
            met = ending_meets(ending, return_when);
        }
    }
    let mut sets = DoneAndNotDone {
        done: Vec::new(),
        not_done: Vec::new(),
    };
    for (key, f) in futures.into_iter().enumerate() {
        if !done[key] {
            f.watch_handle().unwatch(&watcher);
        }
        // A future that ended after its notification was counted is done too.
        if done[key] || f.is_done() {
            sets.done.push(f);
        } else {
            sets.not_done.push(f);
        }
    }
    sets
}

fn ending_meets(ending: Ending, when: ReturnWhen) -> bool {
    match when {
        ReturnWhen::FirstCompleted => true,
        ReturnWhen::FirstException => ending == Ending::Failed,
        ReturnWhen::AllCompleted => false,
    }
}

/// Yields the futures as they end: those already ended first, then in
/// completion order (A1). A future given twice is yielded once (A2).
///
/// `timeout` is one deadline for the whole iteration, counted from this
/// call (A3): when it passes with futures unfinished, the iterator yields
/// one [`Error::AsCompletedTimeout`] naming how many, and ends. The
/// unfinished futures keep running (A5). For async code,
/// [`into_stream`](AsCompleted::into_stream) gives the same sequence as a
/// [`futures::Stream`]; its deadline is checked when it is polled, and
/// does not wake the task itself (pair it with your runtime's timer).
///
/// ```
/// use concurrent_futures::{as_completed, ExecutorExt, ThreadPoolExecutor};
///
/// fn id(x: u32) -> u32 { x }
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let futs: Vec<_> = (0..10).map(|i| pool.submit(id, i)).collect();
/// let mut sum = 0;
/// for fut in as_completed(&futs, None) {
///     sum += fut.unwrap().result(None).unwrap();
/// }
/// assert_eq!(sum, 45);
/// ```
pub fn as_completed<'a, W, I>(futures: I, timeout: Option<Duration>) -> AsCompleted<'a, W>
where
    W: Waitable + ?Sized + 'a,
    I: IntoIterator<Item = &'a W>,
{
    let deadline = crate::sync::deadline(timeout);
    let futures: Vec<Option<&'a W>> = distinct(futures).into_iter().map(Some).collect();
    let inbox = Inbox::new();
    let watcher = inbox.as_watcher();
    let mut first = VecDeque::new();
    for (key, f) in futures.iter().enumerate() {
        let f = f.expect("just built");
        if f.watch_handle().watch(&watcher, key).is_some() {
            first.push_back(key);
        }
    }
    AsCompleted {
        total: futures.len(),
        pending: futures.len() - first.len(),
        futures,
        first,
        inbox,
        watcher,
        deadline,
        timed_out: false,
    }
}

/// The iterator (and `Stream`) returned by [`as_completed`].
pub struct AsCompleted<'a, W: Waitable + ?Sized> {
    /// `None` once yielded: the iterator keeps no reference to yielded
    /// futures (A6).
    futures: Vec<Option<&'a W>>,
    first: VecDeque<usize>,
    inbox: Arc<Inbox>,
    watcher: Arc<dyn Watcher>,
    deadline: Option<Instant>,
    total: usize,
    /// Futures registered and not yet reported by the inbox.
    pending: usize,
    timed_out: bool,
}

impl<W: Waitable + ?Sized> fmt::Debug for AsCompleted<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("total", &self.total)
            .field("unfinished", &self.pending)
            .finish()
    }
}

impl<'a, W: Waitable + ?Sized> AsCompleted<'a, W> {
    fn yield_key(&mut self, key: usize) -> Option<Result<&'a W, Error>> {
        self.futures[key].take().map(Ok)
    }

    fn timeout_error(&mut self) -> Option<Result<&'a W, Error>> {
        self.timed_out = true;
        Some(Err(Error::AsCompletedTimeout {
            unfinished: self.pending,
            total: self.total,
        }))
    }
}

impl<'a, W: Waitable + ?Sized> Iterator for AsCompleted<'a, W> {
    type Item = Result<&'a W, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(key) = self.first.pop_front() {
            return self.yield_key(key);
        }
        if self.pending == 0 || self.timed_out {
            return None;
        }
        match self.inbox.recv(self.deadline) {
            Some((key, _)) => {
                self.pending -= 1;
                self.yield_key(key)
            }
            None => self.timeout_error(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let extra = usize::from(self.pending > 0 && self.deadline.is_some());
        (
            self.first.len(),
            Some(self.first.len() + self.pending + extra),
        )
    }
}

impl<'a, W: Waitable + ?Sized> AsCompleted<'a, W> {
    /// The same sequence as a [`futures::Stream`], for async code. (A
    /// separate type, so `StreamExt` and `Iterator` methods never clash.)
    /// The deadline is checked when the stream is polled and does not wake
    /// the task itself: with a timeout, poll it beside a runtime timer.
    pub fn into_stream(self) -> AsCompletedStream<'a, W> {
        AsCompletedStream { inner: self }
    }
}

/// [`as_completed`] as a [`futures::Stream`]: see
/// [`AsCompleted::into_stream`]. The deadline is checked each time the
/// stream is polled but does not itself wake the task; combine the stream
/// with your runtime's timer if nothing else will poll it.
pub struct AsCompletedStream<'a, W: Waitable + ?Sized> {
    inner: AsCompleted<'a, W>,
}

impl<W: Waitable + ?Sized> fmt::Debug for AsCompletedStream<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<'a, W: Waitable + ?Sized> futures::Stream for AsCompletedStream<'a, W> {
    type Item = Result<&'a W, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut self.get_mut().inner;
        if let Some(key) = this.first.pop_front() {
            return Poll::Ready(this.yield_key(key));
        }
        if this.pending == 0 || this.timed_out {
            return Poll::Ready(None);
        }
        if let Some((key, _)) = this.inbox.poll_recv(cx.waker()) {
            this.pending -= 1;
            return Poll::Ready(this.yield_key(key));
        }
        if this.deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(this.timeout_error());
        }
        Poll::Pending
    }
}

impl<W: Waitable + ?Sized> Drop for AsCompleted<'_, W> {
    /// Unregisters from every future not yet yielded (A6).
    fn drop(&mut self) {
        for f in self.futures.iter().flatten() {
            f.watch_handle().unwatch(&self.watcher);
        }
    }
}

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;
    use crate::Promise;

    /// A6: an iterator dropped before it yielded every future takes its
    /// watcher out of each future it still watched, whether it waited or
    /// not; the futures' lists do not grow with every iterator made.
    #[test]
    fn a6_a_dropped_iterator_leaves_no_watcher_behind() {
        let (_keep_a, a) = Promise::<u8>::new();
        let (pb, b) = Promise::<u8>::new();
        {
            let it = as_completed([&a, &b], None);
            assert_eq!((a.core().watchers(), b.core().watchers()), (1, 1));
            drop(it);
            assert_eq!((a.core().watchers(), b.core().watchers()), (0, 0));
        }
        pb.set_result(1).unwrap();
        for _ in 0..100 {
            let mut it = as_completed([&a, &b], Some(Duration::from_secs(30)));
            assert_eq!(it.next().map(|r| r.map(|f| f.done())), Some(Ok(true)));
            assert_eq!(a.core().watchers(), 1, "still watched: not yet yielded");
            drop(it);
        }
        assert_eq!(
            a.core().watchers(),
            0,
            "a dropped iterator left its watcher"
        );
    }
}
