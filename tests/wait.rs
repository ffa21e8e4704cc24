//! `wait()` (W1-W8) and `as_completed` (A1-A7), including its `Stream`
//! form.
//!
//! "Not yet done" futures are tasks held on a channel that the test
//! releases; every long timeout is a hang guard and every short one must
//! expire on a held task, so no test depends on timing to pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, ExecutorExt, Future, ReturnWhen, Task, ThreadPoolExecutor, Waitable, as_completed, wait,
};
// The `Stream` form is `as_completed(..).into_stream()`; its methods are
// called by path (`futures::StreamExt::next(&mut s)`) to keep `StreamExt`
// out of scope for the `Iterator` tests.

mod common;
use common::{HANG, Manual, SHORT, block_on, gated};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A task on `pool` that panics with `msg` once the returned sender is used
/// or dropped.
fn gated_panic(pool: &ThreadPoolExecutor, msg: &'static str) -> (Future<i32>, Sender<()>) {
    let (release, rx) = mpsc::channel::<()>();
    let fut = pool.spawn(move || -> i32 {
        let _ = rx.recv_timeout(HANG);
        panic!("{msg}")
    });
    (fut, release)
}

/// A finished future with `value`.
fn ready(pool: &ThreadPoolExecutor, value: i32) -> Future<i32> {
    let fut = pool.submit(ident, value);
    assert_eq!(fut.result(Some(HANG)), Ok(&value));
    fut
}

/// A pending (queued, never started) future: a single-worker pool whose
/// worker is held until the returned sender is dropped.
fn pending_pool() -> (ThreadPoolExecutor, Sender<()>) {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (up_tx, up_rx) = mpsc::channel();
    let (release, rx) = mpsc::channel::<()>();
    let _blocker = pool.spawn(move || {
        up_tx.send(()).unwrap();
        let _ = rx.recv_timeout(HANG);
    });
    up_rx.recv_timeout(HANG).unwrap();
    (pool, release)
}

/// Drops `release` after a short while, from another thread. Used only where
/// a correct library passes whenever the release happens.
fn release_later(release: Sender<()>) {
    thread::spawn(move || {
        thread::sleep(SHORT);
        drop(release);
    });
}

/// The calling thread's id, for [`until_blocked_or_returned`].
#[cfg(target_os = "linux")]
fn thread_id() -> i32 {
    // SAFETY: gettid() takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(not(target_os = "linux"))]
fn thread_id() -> i32 {
    0
}

/// Returns once the thread `tid` of this process is asleep, i.e. blocked
/// (Linux: state `S` in /proc), or once `returned()` holds. A thread that
/// just called `wait` and has not returned sleeps only where `wait` blocks.
/// Elsewhere the state cannot be read, so it gives the thread a short while.
fn until_blocked_or_returned(tid: i32, returned: impl Fn() -> bool) {
    if cfg!(target_os = "linux") {
        let path = format!("/proc/self/task/{tid}/stat");
        common::wait_until("the waiter to block or return", || {
            returned()
                || std::fs::read_to_string(&path).is_ok_and(|stat| {
                    // "tid (comm) S ...": comm may contain spaces and ')'.
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
                })
        });
    } else {
        thread::sleep(SHORT);
    }
}

fn ident(x: i32) -> i32 {
    x
}

fn boom(_: ()) -> i32 {
    panic!("boom")
}

/// A waker that records that it was woken.
struct FlagWaker(AtomicBool);

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst)
    }
}

fn flag_waker() -> (Arc<FlagWaker>, Waker) {
    let w = Arc::new(FlagWaker(AtomicBool::new(false)));
    (w.clone(), Waker::from(w))
}

/// Whether `set` holds `fut` (by identity).
fn holds<T>(set: &[&Future<T>], fut: &Future<T>) -> bool {
    set.contains(&fut)
}

// ---------------------------------------------------------------------------
// 1.6 wait()
// ---------------------------------------------------------------------------

/// W1: `wait` returns the done and not-done sets.
#[test]
fn w1_returns_done_and_not_done_sets() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let (b, _release) = gated(&pool, 2);
    let sets = wait([&a, &b], Some(SHORT), ReturnWhen::AllCompleted);
    assert_eq!(sets.done, [&a]);
    assert_eq!(sets.not_done, [&b]);
}

/// W1: a future given several times appears once.
#[test]
fn w1_duplicates_collapsed() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let b = ready(&pool, 2);
    let (c, _release) = gated(&pool, 3);
    let sets = wait(
        [&a, &b, &a, &c, &a, &c],
        Some(SHORT),
        ReturnWhen::AllCompleted,
    );
    assert_eq!(sets.done.len(), 2);
    assert!(holds(&sets.done, &a) && holds(&sets.done, &b));
    assert_eq!(sets.not_done, [&c]);
}

/// W1: an empty input returns empty sets at once, whatever `return_when`.
#[test]
fn w1_empty_input_returns_empty_sets() {
    let none: Vec<&Future<i32>> = Vec::new();
    for when in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
    ] {
        let sets = wait(none.iter().copied(), None, when);
        assert!(sets.done.is_empty() && sets.not_done.is_empty());
    }
}

/// W2: `FirstCompleted` returns as soon as one future is done.
#[test]
fn w2_first_completed_returns_when_one_is_done() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (a, release_a) = gated(&pool, 1);
    let (b, _release_b) = gated(&pool, 2);
    drop(release_a);
    let sets = wait([&a, &b], Some(HANG), ReturnWhen::FirstCompleted);
    assert_eq!(sets.done, [&a]);
    assert_eq!(sets.not_done, [&b]);
}

/// W2: `FirstCompleted` returns as soon as one future is done, for a waiter
/// already blocked when it completes.
#[test]
fn w2_first_completed_wakes_a_blocked_waiter() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (a, release_a) = gated(&pool, 1);
    let (b, _release_b) = gated(&pool, 2);
    thread::scope(|s| {
        let w = s.spawn(|| {
            let sets = wait([&a, &b], Some(HANG), ReturnWhen::FirstCompleted);
            (sets.done.len(), sets.not_done.len())
        });
        drop(release_a);
        assert_eq!(w.join().unwrap(), (1, 1));
    });
}

/// W2: with some futures already done, `FirstCompleted` returns at once
/// with all of them.
#[test]
fn w2_first_completed_some_already_done_returns_them_all() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let b = ready(&pool, 2);
    let (c, _release) = gated(&pool, 3);
    let sets = wait([&c, &a, &b], Some(HANG), ReturnWhen::FirstCompleted);
    assert_eq!(sets.done.len(), 2);
    assert!(holds(&sets.done, &a) && holds(&sets.done, &b));
    assert_eq!(sets.not_done, [&c]);
}

/// W3: `FirstException` returns when a future fails.
#[test]
fn w3_first_exception_returns_on_a_failure() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (bad, release_bad) = gated_panic(&pool, "w3 failure");
    let (slow, _release_slow) = gated(&pool, 2);
    drop(release_bad);
    let sets = wait([&slow, &bad], Some(HANG), ReturnWhen::FirstException);
    assert_eq!(sets.done, [&bad]);
    assert_eq!(sets.not_done, [&slow]);
    assert!(bad.exception(None).unwrap().unwrap().is_panic());
}

/// W3: an input that has already failed makes `FirstException` return at
/// once.
#[test]
fn w3_first_exception_one_already_failed_returns_at_once() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let bad = pool.submit(boom, ());
    assert!(bad.result(Some(HANG)).is_err());
    let ok = ready(&pool, 1);
    let (slow, _release) = gated(&pool, 2);
    let sets = wait([&ok, &slow, &bad], Some(HANG), ReturnWhen::FirstException);
    assert_eq!(sets.done.len(), 2);
    assert!(holds(&sets.done, &bad) && holds(&sets.done, &ok));
    assert_eq!(sets.not_done, [&slow]);
}

/// W3: successes do not satisfy `FirstException`: an already-done success
/// does not make it return while another future is still running. The
/// running one is released only once the waiter has blocked (or returned).
#[test]
fn w3_first_exception_ignores_successes() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let ok = ready(&pool, 1);
    let (slow, release) = gated(&pool, 2);
    let (tid_tx, tid_rx) = mpsc::channel();
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            tid_tx.send(thread_id()).unwrap();
            let sets = wait([&ok, &slow], Some(HANG), ReturnWhen::FirstException);
            (sets.done.len(), sets.not_done.len())
        });
        let tid = tid_rx.recv_timeout(HANG).unwrap();
        until_blocked_or_returned(tid, || waiter.is_finished());
        assert!(
            !waiter.is_finished(),
            "returned on a success while a future was still running"
        );
        drop(release);
        assert_eq!(waiter.join().unwrap(), (2, 0));
    });
}

/// W3: a cancellation is not an exception: `FirstException` keeps waiting.
/// The queued future is released only once the waiter has blocked (or
/// returned).
#[test]
fn w3_first_exception_cancellation_is_not_an_exception() {
    let (pool, release) = pending_pool();
    let cancelled = pool.spawn(|| 1);
    let queued = pool.spawn(|| 2);
    assert!(cancelled.cancel());
    let (tid_tx, tid_rx) = mpsc::channel();
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            tid_tx.send(thread_id()).unwrap();
            let sets = wait(
                [&cancelled, &queued],
                Some(HANG),
                ReturnWhen::FirstException,
            );
            (sets.done.len(), sets.not_done.len())
        });
        let tid = tid_rx.recv_timeout(HANG).unwrap();
        until_blocked_or_returned(tid, || waiter.is_finished());
        assert!(!waiter.is_finished(), "returned on a cancellation");
        drop(release);
        assert_eq!(waiter.join().unwrap(), (2, 0));
    });
    assert_eq!(queued.result(None), Ok(&2));
}

/// W3: with no exception, `FirstException` behaves like `AllCompleted`.
#[test]
fn w3_first_exception_without_failure_is_all_completed() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let futs: Vec<_> = (0..10).map(|i| pool.submit(ident, i)).collect();
    let sets = wait(&futs, Some(HANG), ReturnWhen::FirstException);
    assert_eq!(sets.done.len(), 10);
    assert!(sets.not_done.is_empty());
}

/// W4: `AllCompleted` (the default) waits for every future, failures and
/// cancellations included.
#[test]
fn w4_all_completed_waits_for_every_future() {
    assert_eq!(ReturnWhen::default(), ReturnWhen::AllCompleted);
    let (pool, release) = pending_pool();
    let cancelled = pool.spawn(|| 0);
    assert!(cancelled.cancel());
    let (bad, release_bad) = gated_panic(&pool, "w4 failure");
    let (good, release_good) = gated(&pool, 2);
    thread::scope(|s| {
        let w = s.spawn(|| {
            let sets = wait([&good, &bad, &cancelled], Some(HANG), ReturnWhen::default());
            (sets.done.len(), sets.not_done.len())
        });
        drop(release_bad);
        drop(release_good);
        drop(release);
        assert_eq!(w.join().unwrap(), (3, 0));
    });
    assert_eq!(good.result(None), Ok(&2));
}

/// W5: a timeout never errors: `wait` returns the partial sets.
#[test]
fn w5_timeout_returns_partial_sets() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let done: Vec<_> = (0..3).map(|i| ready(&pool, i)).collect();
    let (slow, _release) = gated(&pool, 9);
    let all: Vec<&Future<i32>> = done.iter().chain([&slow]).collect();
    let sets = wait(all, Some(SHORT), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 3);
    for f in &done {
        assert!(holds(&sets.done, f));
    }
    assert_eq!(sets.not_done, [&slow]);
    assert!(!slow.cancelled(), "a wait timeout must not cancel");
}

/// W5: a zero timeout returns at once with the partial sets.
#[test]
fn w5_zero_timeout_returns_partial_sets() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let (b, _release) = gated(&pool, 2);
    for when in [
        ReturnWhen::AllCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::FirstCompleted,
    ] {
        let sets = wait([&a, &b], Some(Duration::ZERO), when);
        assert_eq!(sets.done, [&a]);
        assert_eq!(sets.not_done, [&b]);
    }
}

/// W6 / decision 1: a cancelled future is in `done` (we notify at cancel
/// time; CPython puts it in `not_done` until dequeued).
#[test]
fn w6_cancelled_future_is_in_done() {
    let (pool, _release) = pending_pool();
    let cancelled = pool.spawn(|| 1);
    let queued = pool.spawn(|| 2);
    assert!(cancelled.cancel());
    let sets = wait(
        [&cancelled, &queued],
        Some(HANG),
        ReturnWhen::FirstCompleted,
    );
    assert_eq!(sets.done, [&cancelled]);
    assert_eq!(sets.not_done, [&queued]);
}

/// W8: 100 futures completing concurrently on many threads are all counted.
#[test]
fn w8_pending_calls_race_all_counted() {
    let ex = Manual::default();
    let futs: Vec<_> = (0..100).map(|i| ex.submit(ident, i)).collect();
    let mut tasks = ex.take_all();
    let barrier = Barrier::new(11);
    thread::scope(|s| {
        for _ in 0..10 {
            let batch: Vec<Task> = tasks.drain(..10).collect();
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                batch.into_iter().for_each(Task::run);
            });
        }
        barrier.wait();
        let sets = wait(&futs, Some(HANG), ReturnWhen::AllCompleted);
        assert_eq!(sets.done.len(), 100);
        assert!(sets.not_done.is_empty());
    });
}

/// W8: a thread pool's 100 futures completing while `wait` runs are all
/// counted.
#[test]
fn w8_thread_pool_futures_all_counted() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let futs: Vec<_> = (0..100).map(|i| pool.submit(ident, i)).collect();
    let sets = wait(&futs, Some(HANG), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 100);
    for (i, f) in futs.iter().enumerate() {
        assert_eq!(f.result(Some(Duration::ZERO)), Ok(&(i as i32)));
    }
}

/// W1/F9: futures of different result types mix through `&dyn Waitable`.
#[test]
fn w1_mixed_result_types_through_dyn_waitable() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let n = pool.submit(ident, 1);
    let s = pool.spawn(|| String::from("text"));
    let (u, release) = gated(&pool, ());
    let all: [&dyn Waitable; 3] = [&n, &s, &u];
    let sets = wait(all, Some(HANG), ReturnWhen::FirstCompleted);
    assert!(!sets.done.is_empty());
    assert!(sets.done.iter().all(|f| f.is_done()));
    drop(release);
    let sets = wait(all, Some(HANG), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 3);
    assert!(sets.not_done.is_empty());
}

/// W1/F9: duplicates are collapsed through `&dyn Waitable` too.
#[test]
fn w1_duplicates_collapsed_through_dyn_waitable() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let n = ready(&pool, 1);
    let s = pool.spawn(|| String::from("text"));
    assert!(s.result(Some(HANG)).is_ok());
    let all: [&dyn Waitable; 4] = [&n, &s, &n, &s];
    let sets = wait(all, Some(HANG), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 2);
}

// ---------------------------------------------------------------------------
// 1.5 as_completed
// ---------------------------------------------------------------------------

/// A1: already-finished futures come first, then the rest in completion
/// order.
#[test]
fn a1_already_done_first_then_completion_order() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let done1 = ready(&pool, 1);
    let done2 = ready(&pool, 2);
    let (late1, release1) = gated(&pool, 10);
    let (late2, release2) = gated(&pool, 20);
    let mut it = as_completed([&late2, &late1, &done1, &done2], Some(HANG));
    let mut first: Vec<i32> = (0..2)
        .map(|_| *it.next().unwrap().unwrap().result(None).unwrap())
        .collect();
    first.sort();
    assert_eq!(first, [1, 2]);
    drop(release1);
    assert_eq!(it.next().unwrap().unwrap(), &late1);
    drop(release2);
    assert_eq!(it.next().unwrap().unwrap(), &late2);
    assert!(it.next().is_none());
}

/// A2: a future given several times is yielded once, from any iterable.
#[test]
fn a2_duplicates_yielded_once() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let f = ready(&pool, 1);
    let items: Vec<_> = as_completed(std::iter::repeat_n(&f, 3), Some(HANG)).collect();
    assert_eq!(items, [Ok(&f)]);
}

/// A2: duplicates of a not-yet-done future are yielded once too.
#[test]
fn a2_duplicates_of_pending_future_yielded_once() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (f, release) = gated(&pool, 1);
    let g = ready(&pool, 2);
    let it = as_completed([&f, &g, &f, &f], Some(HANG));
    drop(release);
    let items: Vec<_> = it.map(Result::unwrap).collect();
    assert_eq!(items, [&g, &f]);
}

/// A3: one deadline for the whole iteration; on expiry one
/// `AsCompletedTimeout { unfinished, total }` counting distinct futures, then
/// the end.
#[test]
fn a3_deadline_gives_as_completed_timeout_then_ends() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let b = ready(&pool, 2);
    let (c, _rc) = gated(&pool, 3);
    let (d, _rd) = gated(&pool, 4);
    let mut it = as_completed([&a, &b, &c, &d, &c, &a], Some(SHORT));
    assert!(it.next().unwrap().is_ok());
    assert!(it.next().unwrap().is_ok());
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(
        err,
        Error::AsCompletedTimeout {
            unfinished: 2,
            total: 4
        }
    );
    assert!(err.is_timeout());
    assert!(err.to_string().contains("2 (of 4)"), "{err}");
    assert!(it.next().is_none());
    assert!(it.next().is_none());
}

/// A4: with a zero timeout, already-done futures are still yielded before
/// the timeout error.
#[test]
fn a4_zero_timeout_still_yields_done_futures_first() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let (b, _release) = gated(&pool, 2);
    let items: Vec<_> = as_completed([&b, &a], Some(Duration::ZERO)).collect();
    assert_eq!(
        items,
        [
            Ok(&a),
            Err(Error::AsCompletedTimeout {
                unfinished: 1,
                total: 2
            })
        ]
    );
}

/// A4: with a zero timeout and everything done, there is no error.
#[test]
fn a4_zero_timeout_all_done_has_no_error() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let futs: Vec<_> = (0..3).map(|i| ready(&pool, i)).collect();
    let items: Vec<_> = as_completed(&futs, Some(Duration::ZERO)).collect();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(Result::is_ok));
}

/// A5: the deadline cancels nothing; the unfinished futures keep running.
/// PP11: `as_completed`'s timeout is one global deadline (see A3), not a
/// per-future limit, and it never cancels the slow task.
#[test]
fn a5_timeout_does_not_cancel_unfinished_futures() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (a, release) = gated(&pool, 5);
    let items: Vec<_> = as_completed([&a], Some(SHORT)).collect();
    assert!(matches!(items[..], [Err(Error::AsCompletedTimeout { .. })]));
    assert!(!a.cancelled());
    drop(release);
    assert_eq!(a.result(Some(HANG)), Ok(&5));
}

/// A6: dropping the iterator early unregisters it: the futures still
/// complete normally, nothing panics, and later waits work.
#[test]
fn a6_dropping_the_iterator_unregisters() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let done = ready(&pool, 0);
    let (a, ra) = gated(&pool, 1);
    let (b, rb) = gated(&pool, 2);
    {
        let mut it = as_completed([&a, &done, &b], Some(HANG));
        assert_eq!(it.next().unwrap().unwrap(), &done);
        // Dropped with two futures still registered.
    }
    {
        let it = as_completed([&a, &b], None);
        drop(it); // never polled
    }
    drop(ra);
    drop(rb);
    assert_eq!(a.result(Some(HANG)), Ok(&1));
    assert_eq!(b.result(Some(HANG)), Ok(&2));
    let sets = wait([&a, &b, &done], Some(HANG), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 3);
    let again: Vec<_> = as_completed([&a, &b], Some(HANG)).collect();
    assert_eq!(again.len(), 2);
    assert_eq!(pool.spawn(|| 7).result(Some(HANG)), Ok(&7));
}

/// A6: an iterator dropped while the futures complete concurrently does not
/// race with their completion.
#[test]
fn a6_drop_racing_completion_is_safe() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    for _ in 0..20 {
        let futs: Vec<_> = (0..8).map(|i| pool.submit(ident, i)).collect();
        let mut it = as_completed(&futs, Some(HANG));
        let _ = it.next();
        drop(it);
        let sets = wait(&futs, Some(HANG), ReturnWhen::AllCompleted);
        assert_eq!(sets.done.len(), 8);
    }
}

/// A7: an empty input gives an empty iterator, with or without a deadline.
#[test]
fn a7_empty_input_gives_empty_iterator() {
    let none: Vec<Future<i32>> = Vec::new();
    assert!(as_completed(&none, None).next().is_none());
    assert!(as_completed(&none, Some(Duration::ZERO)).next().is_none());
    let dyns: Vec<&dyn Waitable> = Vec::new();
    assert_eq!(as_completed(dyns, Some(HANG)).count(), 0);
}

/// A7: futures from different executors and of different result types mix.
#[test]
fn a7_mixed_executors_and_types() {
    let p1 = ThreadPoolExecutor::new(1).unwrap();
    let p2 = ThreadPoolExecutor::new(1).unwrap();
    let ex = Manual::default();
    let a = p1.submit(ident, 1);
    let b = p2.spawn(|| "two");
    let c = ex.submit(ident, 3);
    let all: [&dyn Waitable; 3] = [&a, &b, &c];
    let mut it = as_completed(all, Some(HANG));
    ex.take_all().into_iter().for_each(Task::run);
    let n = it
        .by_ref()
        .filter(|r| r.as_ref().is_ok_and(|f| f.is_done()))
        .count();
    assert_eq!(n, 3);
}

/// W8-style race for `as_completed`: 100 futures completing concurrently on
/// many threads are each yielded exactly once.
#[test]
fn a_pending_calls_race_each_yielded_once() {
    let ex = Manual::default();
    let futs: Vec<_> = (0..100).map(|i| ex.submit(ident, i)).collect();
    let mut tasks = ex.take_all();
    let barrier = Barrier::new(11);
    thread::scope(|s| {
        for _ in 0..10 {
            let batch: Vec<Task> = tasks.drain(..10).collect();
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                batch.into_iter().for_each(Task::run);
            });
        }
        let it = as_completed(&futs, Some(HANG));
        barrier.wait();
        let mut seen: Vec<i32> = it.map(|r| *r.unwrap().result(None).unwrap()).collect();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    });
}

/// The `Stream` form yields every future, waking as they complete.
#[test]
fn a_stream_yields_every_future() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (slow, release) = gated(&pool, 100);
    let mut futs: Vec<_> = (0..10).map(|i| pool.submit(ident, i)).collect();
    futs.push(slow);
    let stream = as_completed(&futs, None).into_stream();
    release_later(release);
    let items: Vec<_> = block_on(futures::StreamExt::collect::<Vec<_>>(stream));
    let mut values: Vec<i32> = items
        .into_iter()
        .map(|r| *r.unwrap().result(None).unwrap())
        .collect();
    values.sort();
    let mut expected: Vec<i32> = (0..10).collect();
    expected.push(100);
    assert_eq!(values, expected);
}

/// Decision 7: the `Waker` of an `as_completed` stream is the runtime's
/// code; one that panics is caught on the completing thread, so the
/// future's callbacks still run and the pool keeps its worker.
#[test]
fn decision7_a_panicking_waker_of_a_stream_does_not_stop_the_completing_thread() {
    struct PanickingWaker;
    impl Wake for PanickingWaker {
        fn wake(self: Arc<Self>) {
            panic!("waker panicked");
        }
    }
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 42);
    let futs = [fut];
    let mut stream = as_completed(&futs, None).into_stream();
    let waker = Waker::from(Arc::new(PanickingWaker));
    let mut cx = Context::from_waker(&waker);
    assert!(futures::Stream::poll_next(std::pin::Pin::new(&mut stream), &mut cx).is_pending());
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    futs[0].add_done_callback(move |_| r.store(true, Ordering::SeqCst));
    drop(release);
    assert_eq!(futs[0].result(Some(HANG)), Ok(&42));
    assert_eq!(pool.spawn(|| 1).result(Some(HANG)), Ok(&1));
    assert_eq!(pool.live_workers(), 1);
    drop(stream);
    let [fut] = futs;
    assert_eq!(fut.into_result(), Ok(42));
    assert!(ran.load(Ordering::SeqCst), "the done-callback did not run");
}

/// The `Stream` form yields done futures first, then one timeout error when
/// the deadline has passed, then ends.
#[test]
fn a_stream_zero_timeout_yields_done_then_error() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let (b, _release) = gated(&pool, 2);
    let mut stream = as_completed([&a, &b, &a], Some(Duration::ZERO)).into_stream();
    assert_eq!(
        block_on(futures::StreamExt::next(&mut stream)),
        Some(Ok(&a))
    );
    assert_eq!(
        block_on(futures::StreamExt::next(&mut stream)),
        Some(Err(Error::AsCompletedTimeout {
            unfinished: 1,
            total: 2
        }))
    );
    assert_eq!(block_on(futures::StreamExt::next(&mut stream)), None);
}

/// The `Stream` form wakes the task when a future is cancelled (decision 1),
/// and then yields it.
#[test]
fn a_stream_wakes_on_cancel() {
    let (pool, _release) = pending_pool();
    let fut = pool.spawn(|| 1);
    let mut stream = as_completed([&fut], None).into_stream();
    let (woken, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let polled = futures::Stream::poll_next(std::pin::Pin::new(&mut stream), &mut cx);
    assert!(polled.is_pending());
    assert!(fut.cancel());
    assert!(woken.0.load(Ordering::SeqCst), "not woken by the cancel");
    let polled = futures::Stream::poll_next(std::pin::Pin::new(&mut stream), &mut cx);
    assert_eq!(polled, Poll::Ready(Some(Ok(&fut))));
    assert_eq!(block_on(futures::StreamExt::next(&mut stream)), None);
}

/// The `Stream` form wakes the task when a future completes.
#[test]
fn a_stream_wakes_on_completion() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 1);
    let mut stream = as_completed([&fut], None).into_stream();
    let (woken, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let polled = futures::Stream::poll_next(std::pin::Pin::new(&mut stream), &mut cx);
    assert!(polled.is_pending());
    drop(release);
    let deadline = Instant::now() + HANG;
    while !woken.0.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "not woken by the completion");
        thread::sleep(Duration::from_millis(1));
    }
    let polled = futures::Stream::poll_next(std::pin::Pin::new(&mut stream), &mut cx);
    assert_eq!(polled, Poll::Ready(Some(Ok(&fut))));
}

/// The `Stream` form's empty input ends at once.
#[test]
fn a_stream_empty_input_ends_at_once() {
    let none: Vec<Future<i32>> = Vec::new();
    let mut stream = as_completed(&none, Some(HANG)).into_stream();
    assert!(block_on(futures::StreamExt::next(&mut stream)).is_none());
}

/// W5/A3: a timeout too large for the clock means "no limit", not a panic.
#[test]
fn w5_a3_huge_timeout_means_no_limit() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (a, release) = gated(&pool, 1);
    let b = ready(&pool, 2);
    release_later(release);
    let sets = wait([&a, &b], Some(Duration::MAX), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 2);
    let items: Vec<_> = as_completed([&a, &b], Some(Duration::MAX)).collect();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_ok));
}

/// A1: `size_hint` counts the already-done futures as certain and never
/// understates the total.
#[test]
fn a1_size_hint_bounds_the_items() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = ready(&pool, 1);
    let (b, release) = gated(&pool, 2);
    let it = as_completed([&a, &b], None);
    let (lo, hi) = it.size_hint();
    assert_eq!(lo, 1);
    assert_eq!(hi, Some(2));
    drop(release);
    assert_eq!(it.count(), 2);
}

/// F10/W8: several threads waiting at once on the same futures, given in
/// different orders, while those futures complete, all see every future
/// done (no lock-order deadlock, no lost notification).
#[test]
fn f10_concurrent_waits_sharing_futures_all_return() {
    let ex = Manual::default();
    let futs: Vec<_> = (0..50).map(|i| ex.submit(ident, i)).collect();
    let tasks = ex.take_all();
    let barrier = Barrier::new(5);
    thread::scope(|s| {
        let waiters: Vec<_> = (0..4)
            .map(|k| {
                let futs = &futs;
                let barrier = &barrier;
                s.spawn(move || {
                    let mut order: Vec<&Future<i32>> = futs.iter().collect();
                    if k % 2 == 1 {
                        order.reverse();
                    }
                    order.rotate_left(k * 7);
                    barrier.wait();
                    if k < 2 {
                        wait(order, Some(HANG), ReturnWhen::AllCompleted).done.len()
                    } else {
                        as_completed(order, Some(HANG))
                            .filter(Result::is_ok)
                            .count()
                    }
                })
            })
            .collect();
        barrier.wait();
        tasks.into_iter().for_each(Task::run);
        for w in waiters {
            assert_eq!(w.join().unwrap(), 50);
        }
    });
}
