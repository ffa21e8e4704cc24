//! The `Future` handle: states and methods (F1-F9), done-callbacks (C1-C8),
//! `cancel` (X1-X6), `result`/`exception` and their timeouts (R1-R5), and
//! `.await` — plus the "Decisions already taken" of CONFORMANCE.md that
//! concern futures and thread pools (decisions 1, 6, 7, 8, 10).
//!
//! No test depends on timing to pass: "not yet done" futures are tasks held
//! on a channel that the test releases, and every timeout is either a hang
//! guard (`HANG`) or a short wait that must *expire* on a held task.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, ExecutorExt, Future, Promise, ReturnWhen, ThreadPoolExecutor, as_completed, wait,
};

mod common;
use common::{HANG, Manual, SHORT, block_on, counting_waker, gated, started};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A single-worker pool whose worker is held, so that anything submitted
/// next stays PENDING until the returned sender is dropped.
fn busy_pool() -> (ThreadPoolExecutor, Future<()>, Sender<()>) {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (blocker, release) = started(&pool, ());
    (pool, blocker, release)
}

fn seven(_: ()) -> i32 {
    7
}

fn ident(x: i32) -> i32 {
    x
}

fn unit(_: ()) {}

fn boom(_: ()) -> i32 {
    panic!("boom")
}

fn hash_of<T: Hash>(x: &T) -> u64 {
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

// ---------------------------------------------------------------------------
// Decisions already taken
// ---------------------------------------------------------------------------

/// Decision 1 (X5, W6, PP7): `cancel()` of a pending future notifies at
/// once: `wait()` puts it in `done` right away, and `done()` agrees.
#[test]
fn decision1_cancelled_future_is_in_wait_done_at_once() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    assert!(fut.cancel());
    let sets = wait([&fut], Some(HANG), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 1);
    assert!(sets.not_done.is_empty());
    assert!(fut.done());
}

/// Decision 1: `as_completed` yields a cancelled pending future at once,
/// even with a zero deadline.
#[test]
fn decision1_cancelled_future_is_yielded_by_as_completed_at_once() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    assert!(fut.cancel());
    let mut it = as_completed([&fut], Some(Duration::ZERO));
    let first = it.next().expect("one item").expect("not a timeout");
    assert_eq!(first, &fut);
    assert!(it.next().is_none());
}

/// Decision 1: a cancel notifies an `as_completed` iterator that was
/// registered before it (the iterator registers when it is built).
#[test]
fn decision1_cancel_notifies_registered_as_completed() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    let mut it = as_completed([&fut], Some(HANG));
    assert!(fut.cancel());
    assert_eq!(it.next(), Some(Ok(&fut)));
    assert_eq!(it.next(), None);
}

/// Decision 1 (X4): a cancel wakes a thread already blocked in `wait()`
/// with no timeout (the channel's timeout is only a hang guard). Linux:
/// the waiter's state comes from `/proc`.
#[test]
fn decision1_cancel_wakes_blocked_wait() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = Arc::new(pool.spawn(|| 1));
    let (tx, rx) = mpsc::channel();
    let f2 = fut.clone();
    let (tid_tx, tid_rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let sets = wait([&*f2], None, ReturnWhen::AllCompleted);
        tx.send((sets.done.len(), sets.not_done.len())).unwrap();
    });
    // Cancel only once the waiter sleeps (blocked, past any spinning), so
    // that the cancel has to wake it.
    let tid = tid_rx.recv_timeout(HANG).unwrap();
    let stat = format!("/proc/self/task/{tid}/stat");
    let asleep = || {
        std::fs::read_to_string(&stat)
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('S')))
            .unwrap_or(false)
    };
    let began = Instant::now();
    while !asleep() {
        assert!(began.elapsed() < HANG, "the waiter never blocked");
        thread::sleep(Duration::from_millis(1));
    }
    assert!(fut.cancel());
    assert_eq!(rx.recv_timeout(HANG), Ok((1, 0)), "wait() was not woken");
}

/// Decision 6 (S9): dropping a pool never blocks; queued work still
/// completes and its futures stay valid.
#[test]
fn decision6_drop_never_blocks_and_queued_work_completes() {
    let (pool, _blocker, release) = busy_pool();
    let queued = pool.spawn(|| 42);
    let (dropped_tx, dropped_rx) = mpsc::channel();
    thread::spawn(move || {
        drop(pool);
        dropped_tx.send(()).unwrap();
    });
    dropped_rx
        .recv_timeout(HANG)
        .expect("dropping the pool blocked on a held task");
    assert!(!queued.done());
    drop(release);
    assert_eq!(queued.result(Some(HANG)), Ok(&42));
}

/// Decision 7 (C5, C6): a panicking callback is caught; the callbacks after
/// it still run and the future keeps its value.
#[test]
fn decision7_panicking_callback_is_caught_and_later_callbacks_run() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 5);
    let ran = Arc::new(AtomicUsize::new(0));
    fut.add_done_callback(|_| panic!("callback boom"));
    let r = ran.clone();
    fut.add_done_callback(move |f| {
        assert_eq!(f.result(Some(Duration::ZERO)), Ok(&5));
        r.fetch_add(1, Ordering::SeqCst);
    });
    drop(release);
    assert_eq!(fut.result(Some(HANG)), Ok(&5));
    assert_eq!(fut.into_result(), Ok(5)); // waits for the callbacks to settle
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// Decision 7 (C6, PP13): a callback panicking on a worker thread does not
/// lose the worker: the single-worker pool keeps running tasks.
#[test]
fn decision7_panicking_callback_on_worker_does_not_lose_the_worker() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, ());
    fut.add_done_callback(|_| panic!("callback boom on a worker"));
    drop(release);
    assert_eq!(fut.result(Some(HANG)), Ok(&()));
    let next = pool.spawn(|| 9);
    assert_eq!(next.result(Some(HANG)), Ok(&9));
    assert_eq!(pool.live_workers(), 1);
}

/// Decision 7 (PP15): a panicking task does not lose its worker either.
#[test]
fn decision7_panicking_task_does_not_lose_the_worker() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let bad = pool.submit(boom, ());
    assert!(matches!(
        bad.result(Some(HANG)),
        Err(Error::Panicked { .. })
    ));
    let good = pool.submit(seven, ());
    assert_eq!(good.result(Some(HANG)), Ok(&7));
    assert_eq!(pool.live_workers(), 1);
}

/// A panic payload whose own `Drop` panics (`panic_any` takes any type).
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("the payload's Drop panicked");
    }
}

/// Decision 7 (PP15): a task panicking with a payload whose `Drop` panics
/// fails with Panicked, and its worker lives on.
#[test]
fn decision7_a_task_panic_payload_that_panics_when_dropped_does_not_lose_the_worker() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let bad = pool.spawn(|| -> u32 { std::panic::panic_any(PanicsWhenDropped) });
    assert!(matches!(
        bad.result(Some(HANG)),
        Err(Error::Panicked { .. })
    ));
    assert_eq!(pool.spawn(|| 9).result(Some(HANG)), Ok(&9));
    assert_eq!(pool.live_workers(), 1);
}

/// Decision 7 (C5, C6): a callback panicking with a payload whose `Drop`
/// panics is caught like any other; later callbacks run and the value can
/// be taken.
#[test]
fn decision7_a_callback_panic_payload_that_panics_when_dropped_is_caught() {
    let (promise, fut) = Promise::<u32>::new();
    fut.add_done_callback(|_| std::panic::panic_any(PanicsWhenDropped));
    let later = Arc::new(AtomicBool::new(false));
    let l = later.clone();
    fut.add_done_callback(move |_| l.store(true, Ordering::SeqCst));
    promise.set_result(7).unwrap();
    assert!(later.load(Ordering::SeqCst), "a later callback did not run");
    assert_eq!(fut.into_result(), Ok(7));
}

/// Decision 8 (R3, PP5, P8): one immutable error per future, carrying the
/// panic message; every call gives the same error (an owned value, never
/// one object shared between futures).
#[test]
fn decision8_same_error_each_call() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(boom, ());
    let first = fut.result(Some(HANG)).unwrap_err();
    assert!(matches!(&first, Error::Panicked { message, .. } if message == "boom"));
    assert_eq!(fut.result(None).unwrap_err(), first);
    assert_eq!(fut.exception(None), Ok(Some(first.clone())));
    assert_eq!(fut.exception(Some(Duration::ZERO)), Ok(Some(first.clone())));
    assert_eq!(fut.into_result(), Err(first));
}

/// Decision 10: idle workers park (use no CPU).
#[test]
fn decision10_idle_workers_park() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    assert_eq!(pool.submit(seven, ()).result(Some(HANG)), Ok(&7));
    let deadline = Instant::now() + HANG;
    while pool.parked_workers() < 2 {
        assert!(Instant::now() < deadline, "idle workers never parked");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pool.parked_workers(), 2);
}

static D10_NOW: AtomicUsize = AtomicUsize::new(0);
static D10_MAX: AtomicUsize = AtomicUsize::new(0);

fn d10_task(x: u32) -> u32 {
    let now = D10_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    D10_MAX.fetch_max(now, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(1));
    D10_NOW.fetch_sub(1, Ordering::SeqCst);
    x
}

/// Decision 10: a saturated pool never runs more than `max_workers` tasks
/// at once, nor has more live workers.
#[test]
fn decision10_saturated_pool_never_exceeds_max_workers() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let futs: Vec<_> = (0..40).map(|i| pool.submit(d10_task, i)).collect();
    for (i, f) in futs.iter().enumerate() {
        assert_eq!(f.result(Some(HANG)), Ok(&(i as u32)));
        assert!(pool.live_workers() <= 2);
    }
    assert!(D10_MAX.load(Ordering::SeqCst) <= 2);
    assert!(D10_MAX.load(Ordering::SeqCst) >= 1);
}

// ---------------------------------------------------------------------------
// 1.1 Future states and methods
// ---------------------------------------------------------------------------

/// F1: `done()` is false while pending or running, true once finished or
/// cancelled.
#[test]
fn f1_done_is_true_for_finished_and_cancelled_only() {
    let (pool, blocker, release) = busy_pool();
    assert!(!blocker.done()); // running
    let pending = pool.spawn(|| 1);
    assert!(!pending.done());
    let cancelled = pool.spawn(|| 2);
    assert!(cancelled.cancel());
    assert!(cancelled.done());
    drop(release);
    assert_eq!(pending.result(Some(HANG)), Ok(&1));
    assert!(pending.done());
    assert!(blocker.done());
}

/// F2: `running()` is true only while a worker runs the task.
#[test]
fn f2_running_only_while_running() {
    let (pool, running, release) = busy_pool();
    let pending = pool.spawn(|| 1);
    assert!(running.running());
    assert!(!running.done());
    assert!(!running.cancelled());
    assert!(!pending.running());
    drop(release);
    assert_eq!(pending.result(Some(HANG)), Ok(&1));
    assert!(!running.running());
    assert!(!pending.running());
}

/// F2: `cancelled()` is true after a cancel and false after finishing.
#[test]
fn f2_cancelled_true_after_cancel_false_after_finish() {
    let (pool, _blocker, release) = busy_pool();
    let a = pool.spawn(|| 1);
    let b = pool.spawn(|| 2);
    assert!(!a.cancelled());
    assert!(a.cancel());
    assert!(a.cancelled());
    assert!(!a.running());
    drop(release);
    assert_eq!(b.result(Some(HANG)), Ok(&2));
    assert!(!b.cancelled());
}

/// F3: a future cancelled while queued is never run (the worker's
/// `set_running` sees the cancel), and the worker moves on.
#[test]
fn f3_cancelled_while_queued_is_never_run() {
    let (pool, _blocker, release) = busy_pool();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let victim = pool.spawn(move || r.store(true, Ordering::SeqCst));
    let after = pool.spawn(|| 3);
    assert!(victim.cancel());
    drop(release);
    assert_eq!(after.result(Some(HANG)), Ok(&3));
    pool.shutdown(true, false);
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(victim.result(None), Err(Error::Cancelled));
}

/// F3: `Task::run` on a cancelled task does nothing; the future stays
/// cancelled.
#[test]
fn f3_running_a_cancelled_task_does_nothing() {
    let ex = Manual::default();
    let fut = ex.submit(seven, ());
    assert!(fut.cancel());
    ex.take().run();
    assert!(fut.cancelled());
    assert_eq!(fut.result(None), Err(Error::Cancelled));
}

/// F4: the first outcome is kept: failing a cancelled task leaves it
/// cancelled.
#[test]
fn f4_first_outcome_kept_fail_after_cancel() {
    let ex = Manual::default();
    let fut = ex.submit(seven, ());
    assert!(fut.cancel());
    ex.take().fail(Error::Shutdown);
    assert!(fut.cancelled());
    assert_eq!(fut.result(None), Err(Error::Cancelled));
}

/// F4: the first outcome is kept: a finished future cannot be cancelled
/// (nor changed by `shutdown(cancel_futures)`).
#[test]
fn f4_first_outcome_kept_after_finish() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(seven, ());
    assert_eq!(fut.result(Some(HANG)), Ok(&7));
    assert!(!fut.cancel());
    pool.shutdown(true, true);
    assert_eq!(fut.result(None), Ok(&7));
    assert!(!fut.cancelled());
}

/// F5: an executor may fail a queued future directly from PENDING, without
/// running it.
#[test]
fn f5_fail_from_pending_without_running() {
    let ex = Manual::default();
    let fut = ex.submit(seven, ());
    assert!(!fut.running());
    ex.take().fail(Error::Shutdown);
    assert!(fut.done());
    assert!(!fut.running());
    assert!(!fut.cancelled());
    assert_eq!(fut.result(None), Err(Error::Shutdown));
    assert_eq!(fut.exception(None), Ok(Some(Error::Shutdown)));
}

/// F6: completion wakes `result()` waiters and `wait()` watchers and runs
/// the callbacks.
#[test]
fn f6_completion_wakes_waiters_watchers_and_runs_callbacks() {
    let ex = Manual::default();
    let fut = ex.submit(ident, 11);
    let (cb_tx, cb_rx) = mpsc::channel();
    fut.add_done_callback(move |f| cb_tx.send(*f.result(None).unwrap()).unwrap());
    thread::scope(|s| {
        let waiter = s.spawn(|| *fut.result(Some(HANG)).unwrap());
        let watcher = s.spawn(|| {
            wait([&fut], Some(HANG), ReturnWhen::AllCompleted)
                .done
                .len()
        });
        let stream = s.spawn(|| {
            as_completed([&fut], Some(HANG))
                .filter(Result::is_ok)
                .count()
        });
        ex.take().run();
        assert_eq!(waiter.join().unwrap(), 11);
        assert_eq!(watcher.join().unwrap(), 1);
        assert_eq!(stream.join().unwrap(), 1);
    });
    assert_eq!(cb_rx.recv_timeout(HANG), Ok(11));
}

/// F7: any error fails the future (an enum, not a sentinel): an empty
/// panic message is still a failure, and a unit value is still a success.
/// PP16: a "falsy" error (here an empty message) never counts as success.
#[test]
fn f7_empty_panic_message_still_fails_and_unit_value_succeeds() {
    fn empty_panic(_: ()) {
        panic!("")
    }
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let bad = pool.submit(empty_panic, ());
    let err = bad.result(Some(HANG)).unwrap_err();
    assert!(matches!(&err, Error::Panicked { message, .. } if message.is_empty()));
    assert_eq!(bad.exception(None), Ok(Some(err)));
    let good = pool.submit(unit, ());
    assert_eq!(good.result(Some(HANG)), Ok(&()));
    assert_eq!(good.exception(None), Ok(None));
}

/// F8: `Debug` shows the state, and once finished the value's type or the
/// error.
#[test]
fn f8_debug_shows_state_and_outcome() {
    let (pool, running, release) = busy_pool();
    let pending = pool.spawn(|| 1i32);
    let cancelled = pool.spawn(|| 2i32);
    assert!(cancelled.cancel());
    assert!(format!("{running:?}").contains("running"));
    assert!(format!("{pending:?}").contains("pending"));
    assert!(format!("{cancelled:?}").contains("cancelled"));
    drop(release);
    assert_eq!(pending.result(Some(HANG)), Ok(&1));
    let finished = format!("{pending:?}");
    assert!(finished.contains("finished"), "{finished}");
    assert!(finished.contains("i32"), "{finished}");
    let failed = pool.submit(boom, ());
    assert!(failed.result(Some(HANG)).is_err());
    let raised = format!("{failed:?}");
    assert!(raised.contains("finished"), "{raised}");
    assert!(raised.contains("boom"), "{raised}");
}

/// F9: futures compare and hash by identity, not by value.
#[test]
fn f9_identity_eq_and_hash() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let a = pool.submit(seven, ());
    let b = pool.submit(seven, ());
    assert_eq!(a.result(Some(HANG)), b.result(Some(HANG)));
    assert_ne!(a, b);
    assert_eq!(a, a);
    let set: HashSet<&Future<i32>> = [&a, &b, &a, &b].into_iter().collect();
    assert_eq!(set.len(), 2);
}

/// F9: futures from different executors mix in `wait`.
#[test]
fn f9_futures_from_different_executors_mix() {
    let p1 = ThreadPoolExecutor::new(1).unwrap();
    let p2 = ThreadPoolExecutor::new(1).unwrap();
    let ex = Manual::default();
    let a = p1.submit(seven, ());
    let b = p2.submit(seven, ());
    let c = ex.submit(seven, ());
    ex.take().run();
    let sets = wait([&a, &b, &c], Some(HANG), ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 3);
    assert!(sets.not_done.is_empty());
}

// ---------------------------------------------------------------------------
// 1.2 add_done_callback
// ---------------------------------------------------------------------------

/// C1: a callback receives its own future and is called exactly once, on a
/// value.
#[test]
fn c1_callback_called_once_with_the_future_on_result() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 3);
    let (tx, rx) = mpsc::channel();
    fut.add_done_callback(move |f| tx.send((hash_of(f), f.result(None).copied())).unwrap());
    drop(release);
    assert_eq!(rx.recv_timeout(HANG), Ok((hash_of(&fut), Ok(3))));
    assert!(rx.recv_timeout(SHORT).is_err(), "called twice");
}

/// C1: a callback is called exactly once on a failure.
#[test]
fn c1_callback_called_once_on_exception() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let fut = pool.spawn(move || -> i32 {
        let _ = gate.recv_timeout(HANG);
        panic!("c1 failure")
    });
    let (tx, rx) = mpsc::channel();
    fut.add_done_callback(move |f| tx.send(f.exception(None)).unwrap());
    drop(release);
    let got = rx.recv_timeout(HANG).unwrap();
    assert!(
        matches!(got, Ok(Some(Error::Panicked { ref message, .. })) if message == "c1 failure")
    );
    assert!(rx.recv_timeout(SHORT).is_err(), "called twice");
}

/// C1: a callback is called exactly once on a cancel.
#[test]
fn c1_callback_called_once_on_cancel() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    fut.add_done_callback(move |f| {
        assert!(f.cancelled());
        c.fetch_add(1, Ordering::SeqCst);
    });
    assert!(fut.cancel());
    assert!(fut.cancel());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// C2: a callback added after success runs at once, on the adding thread.
#[test]
fn c2_callback_after_success_runs_at_once_on_adding_thread() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(seven, ());
    assert_eq!(fut.result(Some(HANG)), Ok(&7));
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    fut.add_done_callback(move |f| {
        *s.lock().unwrap() = Some((thread::current().id(), f.result(None).copied()));
    });
    assert_eq!(*seen.lock().unwrap(), Some((thread::current().id(), Ok(7))));
}

/// C2: a callback added after a failure runs at once, on the adding thread.
#[test]
fn c2_callback_after_failure_runs_at_once_on_adding_thread() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(boom, ());
    assert!(fut.result(Some(HANG)).is_err());
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    fut.add_done_callback(move |f| {
        *s.lock().unwrap() = Some((thread::current().id(), f.result(None).is_err()));
    });
    assert_eq!(*seen.lock().unwrap(), Some((thread::current().id(), true)));
}

/// C2: a callback added after a cancel runs at once, on the adding thread.
#[test]
fn c2_callback_after_cancel_runs_at_once_on_adding_thread() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    assert!(fut.cancel());
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    fut.add_done_callback(move |f| {
        *s.lock().unwrap() = Some((thread::current().id(), f.cancelled()));
    });
    assert_eq!(*seen.lock().unwrap(), Some((thread::current().id(), true)));
}

/// C3: a callback added before completion runs on the worker that completes
/// the future.
#[test]
fn c3_callback_added_before_runs_on_completing_worker() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("c3pool")
        .build()
        .unwrap();
    let (fut, release) = gated(&pool, ());
    let (tx, rx) = mpsc::channel();
    fut.add_done_callback(move |_| {
        tx.send(thread::current().name().map(str::to_owned))
            .unwrap()
    });
    drop(release);
    let name = rx
        .recv_timeout(HANG)
        .unwrap()
        .expect("worker threads are named");
    assert!(name.starts_with("c3pool_"), "{name}");
}

/// C3: a callback added before a cancel runs on the cancelling thread,
/// before `cancel()` returns.
#[test]
fn c3_callback_runs_on_cancelling_thread() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    fut.add_done_callback(move |_| *s.lock().unwrap() = Some(thread::current().id()));
    let me = thread::current().id();
    thread::scope(|sc| {
        let canceller = sc.spawn(|| {
            assert!(fut.cancel());
            (thread::current().id(), *seen.lock().unwrap())
        });
        let (cid, got) = canceller.join().unwrap();
        assert_ne!(cid, me);
        assert_eq!(got, Some(cid));
    });
}

/// C4: callbacks run in registration order.
#[test]
fn c4_callbacks_run_in_registration_order() {
    let ex = Manual::default();
    let fut = ex.submit(seven, ());
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let o = order.clone();
        fut.add_done_callback(move |_| o.lock().unwrap().push(i));
    }
    ex.take().run();
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

/// C2 before C4, as in CPython: a callback added once the future has
/// ended runs at once on the adding thread, even while the completing
/// thread is still running the callbacks registered before the end
/// (those keep their order among themselves). Waiting for them instead
/// would make `add_done_callback` block on other threads' callbacks, a
/// deadlock for a caller holding what one of them needs.
#[test]
fn c2_a_callback_added_after_the_end_runs_at_once_even_while_earlier_ones_still_run() {
    let (promise, fut) = concurrent_futures::Promise::<u32>::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let (in_first_tx, in_first_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let o = order.clone();
    fut.add_done_callback(move |_| {
        in_first_tx.send(()).unwrap();
        let _ = go_rx.recv_timeout(HANG);
        o.lock().unwrap().push(1);
    });
    let o = order.clone();
    fut.add_done_callback(move |_| o.lock().unwrap().push(2));
    let completer = std::thread::spawn(move || promise.set_result(1).unwrap());
    in_first_rx
        .recv_timeout(HANG)
        .expect("the first callback runs");
    let o = order.clone();
    fut.add_done_callback(move |_| o.lock().unwrap().push(3));
    assert_eq!(*order.lock().unwrap(), [3], "the late callback ran at once");
    drop(go_tx);
    completer.join().unwrap();
    assert_eq!(*order.lock().unwrap(), [3, 1, 2]);
}

/// C5: a callback panicking on an already-finished future does not
/// propagate into `add_done_callback`.
#[test]
fn c5_panicking_callback_on_finished_future_does_not_propagate() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(seven, ());
    assert_eq!(fut.result(Some(HANG)), Ok(&7));
    fut.add_done_callback(|_| panic!("late callback boom"));
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    fut.add_done_callback(move |_| r.store(true, Ordering::SeqCst));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(fut.result(None), Ok(&7));
}

/// C5: a callback panicking during `cancel()` does not propagate into
/// `cancel()`, and later callbacks run.
#[test]
fn c5_panicking_callback_during_cancel_does_not_propagate() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    fut.add_done_callback(|_| panic!("cancel callback boom"));
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    fut.add_done_callback(move |_| r.store(true, Ordering::SeqCst));
    assert!(fut.cancel());
    assert!(ran.load(Ordering::SeqCst));
    assert!(fut.cancelled());
}

/// C7: a callback may call `result()` and `add_done_callback()` on its own
/// future (callbacks run outside the lock).
#[test]
fn c7_callback_may_reenter_its_future() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 4);
    let (tx, rx) = mpsc::channel();
    fut.add_done_callback(move |f| {
        let v = *f.result(None).unwrap();
        let tx2 = tx.clone();
        f.add_done_callback(move |g| tx2.send(("inner", *g.result(None).unwrap())).unwrap());
        tx.send(("outer", v)).unwrap();
    });
    drop(release);
    let mut got = vec![
        rx.recv_timeout(HANG).unwrap(),
        rx.recv_timeout(HANG).unwrap(),
    ];
    got.sort();
    assert_eq!(got, [("inner", 4), ("outer", 4)]);
}

/// C8: a callback's captures are released once it has run.
#[test]
fn c8_callback_captures_released_after_running() {
    let ex = Manual::default();
    let fut = ex.submit(seven, ());
    let captured = Arc::new(AtomicBool::new(false));
    let c = captured.clone();
    fut.add_done_callback(move |_| c.store(true, Ordering::SeqCst));
    assert_eq!(Arc::strong_count(&captured), 2);
    ex.take().run();
    assert_eq!(fut.result(None), Ok(&7));
    assert!(captured.load(Ordering::SeqCst), "the callback ran");
    assert_eq!(Arc::strong_count(&captured), 1);
}

/// C8: the captures of callbacks of a cancelled future are released too.
#[test]
fn c8_callback_captures_released_after_cancel() {
    let ex = Manual::default();
    let fut = ex.submit(seven, ());
    let captured = Arc::new(AtomicBool::new(false));
    let c = captured.clone();
    fut.add_done_callback(move |_| c.store(true, Ordering::SeqCst));
    assert!(fut.cancel());
    assert!(captured.load(Ordering::SeqCst), "the callback ran");
    assert_eq!(Arc::strong_count(&captured), 1);
}

// ---------------------------------------------------------------------------
// 1.3 cancel()
// ---------------------------------------------------------------------------

/// X1: `cancel()` on a pending future returns true, makes it cancelled and
/// done, and `result()` gives `Cancelled`.
#[test]
fn x1_cancel_pending_returns_true_and_cancels() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    assert!(fut.cancel());
    assert!(fut.cancelled());
    assert!(fut.done());
    assert!(!fut.running());
    assert_eq!(fut.result(Some(HANG)), Err(Error::Cancelled));
}

/// X2 (decision 4): `cancel()` on a running future returns false and changes nothing;
/// the task still delivers its value.
/// X8: cancelling never stops a running thread-pool task (the opt-in
/// "cancel running" of pebble L9 exists only for process pools,
/// `ProcessPoolBuilder::kill_on_cancel`).
#[test]
fn x2_cancel_running_returns_false() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = started(&pool, 8);
    assert!(!fut.cancel());
    assert!(fut.running());
    assert!(!fut.cancelled());
    drop(release);
    assert_eq!(fut.result(Some(HANG)), Ok(&8));
}

/// X2: `cancel()` on a finished future returns false and changes nothing.
#[test]
fn x2_cancel_finished_returns_false() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(seven, ());
    assert_eq!(fut.result(Some(HANG)), Ok(&7));
    assert!(!fut.cancel());
    assert!(!fut.cancelled());
    assert_eq!(fut.result(None), Ok(&7));
}

/// X3: cancelling twice returns true both times and runs callbacks once.
#[test]
fn x3_cancel_twice_returns_true_and_does_not_rerun_callbacks() {
    let ex = Manual::default();
    let fut = ex.submit(seven, ());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    fut.add_done_callback(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    assert!(fut.cancel());
    assert!(fut.cancel());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// X4: a thread blocked in `result()` wakes with `Cancelled` when the
/// future is cancelled.
#[test]
fn x4_result_waiter_wakes_with_cancelled_when_cancelled() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    thread::scope(|s| {
        let waiter = s.spawn(|| fut.result(Some(HANG)).copied());
        let exc = s.spawn(|| fut.exception(Some(HANG)));
        // Lets the waiters block first; the test passes either way.
        thread::sleep(SHORT);
        assert!(fut.cancel());
        assert_eq!(waiter.join().unwrap(), Err(Error::Cancelled));
        assert_eq!(exc.join().unwrap(), Err(Error::Cancelled));
    });
}

/// X4: an `.await` registered before the cancel is woken, once, and then
/// gives `Cancelled`.
#[test]
fn x4_await_woken_with_cancelled_when_cancelled() {
    let ex = Manual::default();
    let mut fut = ex.submit(seven, ());
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut lend = std::pin::pin!((&fut).into_future());
        assert!(lend.as_mut().poll(&mut cx).is_pending());
    }
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    assert!(fut.cancel());
    assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(
        Pin::new(&mut fut).poll(&mut cx),
        Poll::Ready(Err(Error::Cancelled))
    );
    assert_eq!(block_on((&fut).into_future()), Err(Error::Cancelled));
}

/// X6: in a thread pool a future stays cancellable while queued, and stops
/// being cancellable once a worker takes it.
#[test]
fn x6_queued_future_is_cancellable_until_a_worker_takes_it() {
    let (pool, blocker, release) = busy_pool();
    let (up_tx, up_rx) = mpsc::channel();
    let (rel2, gate2) = mpsc::channel::<()>();
    let queued = pool.spawn(move || {
        up_tx.send(()).unwrap();
        let _ = gate2.recv_timeout(HANG);
        5
    });
    assert!(!queued.running());
    assert!(!blocker.cancel());
    drop(release);
    up_rx.recv_timeout(HANG).unwrap();
    assert!(queued.running());
    assert!(!queued.cancel());
    drop(rel2);
    assert_eq!(queued.result(Some(HANG)), Ok(&5));
}

// ---------------------------------------------------------------------------
// 1.4 result() / exception() and timeouts
// ---------------------------------------------------------------------------

/// R1: `result(Some(t))` on an unfinished future gives `Error::Timeout`
/// naming the wait.
#[test]
fn r1_result_timeout_on_pending_gives_timeout_error() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, _release) = gated(&pool, 1);
    let err = fut.result(Some(SHORT)).unwrap_err();
    assert_eq!(err, Error::Timeout { waited: SHORT });
    assert!(err.is_timeout());
    assert!(!err.is_cancelled());
    assert!(!fut.done());
}

/// R1: `exception(Some(t))` on an unfinished future gives `Error::Timeout`.
#[test]
fn r1_exception_timeout_on_pending_gives_timeout_error() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, _release) = gated(&pool, 1);
    assert_eq!(
        fut.exception(Some(SHORT)),
        Err(Error::Timeout { waited: SHORT })
    );
}

/// R1: `result(None)` blocks until the task ends.
#[test]
fn r1_result_none_blocks_until_done() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 6);
    thread::scope(|s| {
        let waiter = s.spawn(|| fut.result(None).copied());
        drop(release);
        assert_eq!(waiter.join().unwrap(), Ok(6));
    });
}

/// R2: a zero timeout on a pending or running future times out at once
/// (it never blocks).
#[test]
fn r2_zero_timeout_on_pending_and_running() {
    let (pool, running, _release) = busy_pool();
    let pending = pool.spawn(|| 1);
    assert_eq!(
        pending.result(Some(Duration::ZERO)),
        Err(Error::Timeout {
            waited: Duration::ZERO
        })
    );
    assert!(matches!(
        running.result(Some(Duration::ZERO)),
        Err(Error::Timeout { .. })
    ));
    assert!(matches!(
        running.exception(Some(Duration::ZERO)),
        Err(Error::Timeout { .. })
    ));
}

/// R2: a zero timeout on a done future returns its outcome.
#[test]
fn r2_zero_timeout_on_done_returns_outcome() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ok = pool.submit(seven, ());
    let bad = pool.submit(boom, ());
    assert!(
        wait([&ok, &bad], Some(HANG), ReturnWhen::AllCompleted)
            .not_done
            .is_empty()
    );
    assert_eq!(ok.result(Some(Duration::ZERO)), Ok(&7));
    assert_eq!(ok.exception(Some(Duration::ZERO)), Ok(None));
    assert!(bad.result(Some(Duration::ZERO)).unwrap_err().is_panic());
    assert!(
        bad.exception(Some(Duration::ZERO))
            .unwrap()
            .unwrap()
            .is_panic()
    );
}

/// R3: `exception()` returns `None` on success, without erroring.
#[test]
fn r3_exception_none_on_success() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(seven, ());
    assert_eq!(fut.exception(Some(HANG)), Ok(None));
    assert_eq!(fut.result(None), Ok(&7));
}

/// R3: `exception()` returns the task's error; `result()` gives the same
/// one.
#[test]
fn r3_exception_returns_error_and_result_raises_it() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(boom, ());
    let exc = fut.exception(Some(HANG)).unwrap().expect("it failed");
    assert!(exc.is_panic());
    assert_eq!(fut.result(None), Err(exc));
}

/// R4: on a cancelled future both calls give `Cancelled`, whatever the
/// timeout.
#[test]
fn r4_cancelled_gives_cancelled_whatever_the_timeout() {
    let (pool, _blocker, _release) = busy_pool();
    let fut = pool.spawn(|| 1);
    assert!(fut.cancel());
    for t in [None, Some(Duration::ZERO), Some(SHORT), Some(HANG)] {
        assert_eq!(fut.result(t), Err(Error::Cancelled));
        assert_eq!(fut.exception(t), Err(Error::Cancelled));
    }
    assert_eq!(fut.into_result(), Err(Error::Cancelled));
}

/// R5: a `result()` timeout never cancels or stops the task.
#[test]
fn r5_result_timeout_does_not_cancel_the_task() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = started(&pool, 10);
    assert!(fut.result(Some(SHORT)).unwrap_err().is_timeout());
    assert!(fut.running());
    assert!(!fut.cancelled());
    drop(release);
    assert_eq!(fut.result(Some(HANG)), Ok(&10));
}

/// R5: a timed-out wait on a *queued* future leaves it queued and
/// cancellable-or-runnable: it later runs normally.
#[test]
fn r5_result_timeout_on_queued_future_leaves_it_queued() {
    let (pool, _blocker, release) = busy_pool();
    let fut = pool.spawn(|| 12);
    assert!(fut.result(Some(SHORT)).unwrap_err().is_timeout());
    assert!(!fut.done());
    assert!(!fut.cancelled());
    drop(release);
    assert_eq!(fut.result(Some(HANG)), Ok(&12));
}

/// R6: CPython's exception hierarchy is one flat `Error` enum here, so one
/// `match`, or `?` into a boxed `std::error::Error`, handles every case:
/// `CancelledError` and `InvalidStateError` (the `concurrent.futures.Error`
/// subclasses) are `Error::Cancelled` and `Error::InvalidState`, and
/// `BrokenThreadPool` (a `BrokenExecutor`) is `Error::Broken` naming the
/// thread pool, distinct from `Error::Shutdown` (CPython's plain
/// `RuntimeError`).
#[test]
fn r6_cancelled_invalid_state_and_broken_pool_are_variants_of_the_one_error_type() {
    let (promise, fut) = Promise::<i32>::new();
    assert!(fut.cancel());
    let cancelled = fut.result(None).unwrap_err();
    assert_eq!(cancelled, Error::Cancelled);
    assert!(cancelled.is_cancelled());
    let invalid = promise.set_result(1).unwrap_err();
    assert!(matches!(invalid, Error::InvalidState(_)), "{invalid:?}");

    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(|| panic!("initializer broken on purpose"))
        .build()
        .unwrap();
    let deadline = Instant::now() + HANG;
    let broken = loop {
        match pool.try_submit(seven, ()) {
            Err(e) => break e,
            // Submitted before the initializer ran: it fails as broken.
            Ok(f) => assert!(matches!(f.result(Some(HANG)), Err(Error::Broken { .. }))),
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: the pool never broke"
        );
    };
    assert!(
        matches!(&broken, Error::Broken { executor: "thread pool", reason }
            if reason.contains("initializer broken on purpose")),
        "{broken:?}"
    );
    assert_ne!(broken, Error::Shutdown);

    let boxed: Vec<Box<dyn std::error::Error + Send + Sync>> =
        vec![cancelled.into(), invalid.into(), broken.into()];
    assert!(boxed.iter().all(|e| e.is::<Error>()));
}

// ---------------------------------------------------------------------------
// Values: into_result, .await, panic payloads
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct NotClone(String);

/// `into_result` moves a non-`Clone` value out.
#[test]
fn into_result_moves_non_clone_value_out() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.spawn(|| NotClone("owned".into()));
    assert_eq!(fut.result(Some(HANG)), Ok(&NotClone("owned".into())));
    assert_eq!(fut.into_result(), Ok(NotClone("owned".into())));
}

/// `into_result` waits without limit for an unfinished future.
#[test]
fn into_result_waits_for_the_task() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, NotClone("later".into()));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(fut.into_result()).unwrap());
    drop(release);
    assert_eq!(rx.recv_timeout(HANG).unwrap(), Ok(NotClone("later".into())));
}

/// `fut.await` (owned) gives the owned value.
#[test]
fn await_owned_gives_the_value() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, NotClone("awaited".into()));
    drop(release);
    let got = block_on(async move { fut.await.map(|v| v.0) });
    assert_eq!(got, Ok("awaited".to_owned()));
}

/// `(&fut).await` lends the value; the future keeps it afterwards.
#[test]
fn await_by_reference_lends_the_value() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, NotClone("lent".into()));
    drop(release);
    let got = block_on(async { (&fut).await.map(|v| v.0.clone()) });
    assert_eq!(got, Ok("lent".to_owned()));
    assert_eq!(fut.result(None), Ok(&NotClone("lent".into())));
    assert_eq!(fut.into_result(), Ok(NotClone("lent".into())));
}

/// `.await` of a failed future gives its error.
#[test]
fn await_failed_future_gives_its_error() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(boom, ());
    let err = block_on((&fut).into_future()).unwrap_err();
    assert!(matches!(&err, Error::Panicked { message, .. } if message == "boom"));
    assert_eq!(block_on(fut), Err(err));
}

/// Awaiting through `&mut` moves the value out; afterwards `result()` says
/// it was taken.
#[test]
fn await_by_mut_ref_takes_the_value_then_result_is_already_taken() {
    let ex = Manual::default();
    let mut fut = ex.submit(seven, ());
    ex.take().run();
    assert_eq!(block_on(&mut fut), Ok(7));
    assert_eq!(fut.result(None), Err(Error::AlreadyTaken));
    assert_eq!(fut.exception(None), Err(Error::AlreadyTaken));
    assert!(fut.done());
}

/// A waker registered before completion is woken exactly once, and the
/// next poll is ready.
#[test]
fn await_waker_registered_before_completion_is_woken_exactly_once() {
    let ex = Manual::default();
    let mut fut = ex.submit(ident, 21);
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    // Polling again with the same waker must not register it twice.
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    assert_eq!(count.wakes.load(Ordering::SeqCst), 0);
    let task = ex.take();
    thread::spawn(move || task.run()).join().unwrap();
    assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(21)));
    assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
}

/// A waker registered by `(&fut).await` before completion is woken exactly
/// once too.
#[test]
fn await_ref_waker_registered_before_completion_is_woken_exactly_once() {
    let ex = Manual::default();
    let fut = ex.submit(ident, 22);
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut lend = std::pin::pin!((&fut).into_future());
    assert!(lend.as_mut().poll(&mut cx).is_pending());
    assert!(lend.as_mut().poll(&mut cx).is_pending());
    ex.take().run();
    assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(lend.as_mut().poll(&mut cx), Poll::Ready(Ok(&22)));
    assert_eq!(count.wakes.load(Ordering::SeqCst), 1);
}

/// A panic with a `String` payload gives its message.
#[test]
fn panic_with_string_payload_gives_its_message() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.spawn(|| -> i32 { panic!("formatted {}", 42) });
    let err = fut.into_result().unwrap_err();
    assert_eq!(
        err,
        Error::Panicked {
            message: "formatted 42".into(),
            backtrace: None
        }
    );
    assert!(err.to_string().contains("formatted 42"));
}

/// A panic with a `&'static str` payload gives its message.
#[test]
fn panic_with_str_payload_gives_its_message() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.spawn(|| -> i32 { std::panic::panic_any("static str payload") });
    assert_eq!(
        fut.into_result(),
        Err(Error::Panicked {
            message: "static str payload".into(),
            backtrace: None
        })
    );
}

/// A panic with a `String` payload through `panic_any` gives its message.
#[test]
fn panic_any_with_string_payload_gives_its_message() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.spawn(|| -> i32 { std::panic::panic_any(String::from("owned payload")) });
    assert!(matches!(
        fut.into_result(),
        Err(Error::Panicked { message, .. }) if message == "owned payload"
    ));
}

/// A panic payload of another type gives a typed `Panicked` error (no
/// crash), and the worker survives.
#[test]
fn panic_with_other_payload_gives_panicked_error() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.spawn(|| -> i32 { std::panic::panic_any(42u64) });
    let err = fut.into_result().unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    assert!(matches!(&err, Error::Panicked { message, .. } if !message.is_empty()));
    assert_eq!(pool.spawn(|| 1).into_result(), Ok(1));
}

// ---------------------------------------------------------------------------
// Races and settling
// ---------------------------------------------------------------------------

/// X3 under a race: many threads cancelling one pending future all get
/// true, and its callback runs once.
#[test]
fn x3_concurrent_cancels_all_true_and_callback_runs_once() {
    for _ in 0..50 {
        let ex = Manual::default();
        let fut = ex.submit(seven, ());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        fut.add_done_callback(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let barrier = std::sync::Barrier::new(4);
        thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        fut.cancel()
                    })
                })
                .collect();
            for h in hs {
                assert!(h.join().unwrap());
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

/// X1/X2 under a race: `cancel()` racing the task's start gives exactly one
/// outcome — cancelled (and the task never ran) or finished (and cancel
/// returned false) — and the callback runs once.
#[test]
fn x1_cancel_racing_run_gives_one_outcome_and_one_callback() {
    for _ in 0..100 {
        let ex = Manual::default();
        let fut = ex.submit(seven, ());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        fut.add_done_callback(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let task = ex.take();
        let barrier = std::sync::Barrier::new(2);
        let cancelled = thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                task.run();
            });
            barrier.wait();
            fut.cancel()
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        if cancelled {
            assert!(fut.cancelled());
            assert_eq!(fut.result(None), Err(Error::Cancelled));
        } else {
            assert_eq!(fut.result(None), Ok(&7));
        }
    }
}

/// C1/C2 under a race: callbacks added while the future completes on
/// another thread each run exactly once.
#[test]
fn c1_callbacks_added_during_completion_each_run_once() {
    for _ in 0..50 {
        let ex = Manual::default();
        let fut = ex.submit(seven, ());
        let calls = Arc::new(AtomicUsize::new(0));
        let task = ex.take();
        let barrier = std::sync::Barrier::new(2);
        thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                task.run();
            });
            barrier.wait();
            for _ in 0..20 {
                let c = calls.clone();
                fut.add_done_callback(move |_| {
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 20);
    }
}

/// Owned `.await` hands the value over only after the callbacks finished
/// (they borrow it), and is woken when they do.
#[test]
fn await_owned_waits_for_running_callbacks() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, NotClone("after callbacks".into()));
    let (in_cb_tx, in_cb_rx) = mpsc::channel();
    let (cb_release, cb_gate) = mpsc::channel::<()>();
    fut.add_done_callback(move |f| {
        assert!(f.result(None).is_ok());
        in_cb_tx.send(()).unwrap();
        let _ = cb_gate.recv_timeout(HANG);
    });
    let (got_tx, got_rx) = mpsc::channel();
    thread::spawn(move || got_tx.send(block_on(fut)).unwrap());
    drop(release);
    in_cb_rx.recv_timeout(HANG).expect("the callback never ran");
    assert!(
        got_rx.recv_timeout(SHORT).is_err(),
        "value taken while a callback runs"
    );
    drop(cb_release);
    assert_eq!(
        got_rx.recv_timeout(HANG).unwrap(),
        Ok(NotClone("after callbacks".into()))
    );
}

/// `into_result` also waits for running callbacks before moving the value.
#[test]
fn into_result_waits_for_running_callbacks() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, NotClone("settled".into()));
    let (in_cb_tx, in_cb_rx) = mpsc::channel();
    let (cb_release, cb_gate) = mpsc::channel::<()>();
    fut.add_done_callback(move |_| {
        in_cb_tx.send(()).unwrap();
        let _ = cb_gate.recv_timeout(HANG);
    });
    drop(release);
    in_cb_rx.recv_timeout(HANG).unwrap();
    assert!(fut.done());
    let (got_tx, got_rx) = mpsc::channel();
    thread::spawn(move || got_tx.send(fut.into_result()).unwrap());
    assert!(
        got_rx.recv_timeout(SHORT).is_err(),
        "value taken while a callback runs"
    );
    drop(cb_release);
    assert_eq!(
        got_rx.recv_timeout(HANG).unwrap(),
        Ok(NotClone("settled".into()))
    );
}

/// R1: a timeout too large for the clock means "no limit", not a panic.
#[test]
fn r1_huge_timeout_means_no_limit() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 3);
    thread::scope(|s| {
        let waiter = s.spawn(|| fut.result(Some(Duration::MAX)).copied());
        drop(release);
        assert_eq!(waiter.join().unwrap(), Ok(3));
    });
    assert_eq!(fut.exception(Some(Duration::MAX)), Ok(None));
}

struct PanickingWaker;
impl std::task::Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics");
    }
}

/// A `Waker` is runtime code: one that panics when the future ends must not
/// kill the pool worker completing it, nor keep callbacks from running or
/// the value from being taken.
#[test]
fn a_panicking_waker_loses_no_worker_callback_or_value() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (fut, release) = gated(&pool, 5u32);
    let ran = Arc::new(AtomicBool::new(false));
    let r2 = ran.clone();
    fut.add_done_callback(move |_| r2.store(true, Ordering::SeqCst));
    let waker = std::task::Waker::from(Arc::new(PanickingWaker));
    let mut cx = Context::from_waker(&waker);
    let mut f = fut;
    assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
    drop(release);
    assert_eq!(f.result(Some(HANG)), Ok(&5));
    assert_eq!(f.into_result(), Ok(5));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(pool.submit(ident, 9).result(Some(HANG)), Ok(&9));
    assert_eq!(pool.live_workers(), 1);
}

/// C7: a done-callback that reaches the owned handle through shared state
/// and calls `into_result()` on it gets an error at once: the value moves
/// out only after the callbacks have run, so the call would wait for
/// itself (it used to block the completing thread forever).
#[test]
fn into_result_inside_the_futures_own_callback_is_an_error_not_a_hang() {
    let (promise, fut) = concurrent_futures::Promise::<u8>::new();
    let stash: Arc<Mutex<Option<concurrent_futures::Future<u8>>>> = Arc::new(Mutex::new(None));
    let (s, got) = (stash.clone(), Arc::new(Mutex::new(None)));
    let g = got.clone();
    fut.add_done_callback(move |f| {
        assert_eq!(f.result(None), Ok(&5), "borrowing works in a callback");
        let owned = s.lock().unwrap().take().expect("the handle is stashed");
        *g.lock().unwrap() = Some(owned.into_result());
    });
    *stash.lock().unwrap() = Some(fut);
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        promise.set_result(5).unwrap();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("set_result hung in the callback's into_result()");
    let got = got.lock().unwrap().take().expect("the callback ran");
    assert!(
        matches!(&got, Err(concurrent_futures::Error::InvalidCall(m)) if m.contains("own done-callbacks")),
        "{got:?}"
    );
}

/// The same, with the future's callbacks run 40 deep on the completing
/// thread: each future of a chain of promises completes the next from its
/// callback, and the last one's callback moves its own value out. Past 8
/// nested runs the check used to be skipped, and the thread waited for
/// itself. Found by review.
#[test]
fn into_result_inside_an_own_callback_40_callback_runs_deep_is_an_error_not_a_hang() {
    const DEPTH: usize = 40;
    let mut chain: Vec<(
        concurrent_futures::Promise<u8>,
        concurrent_futures::Future<u8>,
    )> = (0..DEPTH)
        .map(|_| concurrent_futures::Promise::new())
        .collect();
    let got = Arc::new(Mutex::new(None));
    let (last_promise, last) = chain.pop().unwrap();
    let stash = Arc::new(Mutex::new(Some(last)));
    {
        let (s, g) = (stash.clone(), got.clone());
        let guard = stash.lock().unwrap();
        guard.as_ref().unwrap().add_done_callback(move |_| {
            let owned = s.lock().unwrap().take().expect("the handle is stashed");
            *g.lock().unwrap() = Some(owned.into_result());
        });
    }
    // Each future's callback completes the next promise of the chain.
    let mut next = Some(last_promise);
    let mut futures = Vec::new();
    for (promise, fut) in chain.into_iter().rev() {
        let p = next.take().unwrap();
        fut.add_done_callback(move |_| p.set_result(1).unwrap());
        futures.push(fut);
        next = Some(promise);
    }
    let first = next.unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        first.set_result(1).unwrap();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("set_result hung in the callback's into_result()");
    let got = got.lock().unwrap().take().expect("the callback ran");
    assert!(
        matches!(&got, Err(concurrent_futures::Error::InvalidCall(m)) if m.contains("own done-callbacks")),
        "{got:?}"
    );
    drop(futures);
}

thread_local! {
    /// A promise that lives until its thread exits.
    static HELD_PROMISE: std::cell::RefCell<Option<concurrent_futures::Promise<u8>>> =
        const { std::cell::RefCell::new(None) };
}

/// A `Promise` held in a thread-local is dropped while the thread's
/// thread-locals are torn down, and fails its future then, running its
/// callbacks: the crate's own thread-locals must still work at that point
/// (a callback-tracking thread-local with a destructor, torn down first,
/// aborted the process).
#[test]
fn a_promise_dropped_during_thread_exit_fails_its_future_and_runs_callbacks() {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let (promise, fut) = concurrent_futures::Promise::<u8>::new();
        fut.add_done_callback(move |f| {
            let _ = tx.send(f.result(None).is_err());
        });
        HELD_PROMISE.with(|p| *p.borrow_mut() = Some(promise));
        // Runs callbacks now, so the crate's callback tracking is set up
        // after HELD_PROMISE, and torn down before it.
        let (other, other_fut) = concurrent_futures::Promise::<u8>::new();
        other_fut.add_done_callback(|_| {});
        other.set_result(1).unwrap();
        fut
    });
    let fut = handle.join().expect("the thread exited cleanly");
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true));
    assert!(fut.result(None).is_err(), "the dropped promise failed it");
}

/// Marker of the helper below (it does nothing without it).
const TLS_WAIT_HELPER_ENV: &str = "CF_TEST_TLS_WAIT_HELPER";

/// Helper for the test below, run in a child process because the bug it
/// shows aborted the process. A thread that has submitted to a thread pool
/// later waits on futures, and submits, from a thread-local destructor
/// that runs after the pool's own thread-locals are gone.
#[test]
#[ignore = "helper, run by waiting_and_submitting_in_a_thread_local_destructor_works"]
fn helper_wait_and_submit_in_a_thread_local_destructor() {
    use std::cell::RefCell;

    use concurrent_futures::{Future, Promise, ThreadPoolExecutor};

    if std::env::var_os(TLS_WAIT_HELPER_ENV).is_none() {
        return;
    }
    struct OnDrop(Future<u32>, Arc<ThreadPoolExecutor>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let waited = self.0.result(Some(Duration::from_millis(10)));
            eprintln!("result() of an unfinished future: {waited:?}");
            let submitted = self.1.spawn(|| 7u32).into_result();
            eprintln!("a task submitted and waited for: {submitted:?}");
        }
    }
    thread_local! {
        static HOLD: RefCell<Option<OnDrop>> = const { RefCell::new(None) };
    }
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (promise, fut) = Promise::<u32>::new();
    let p2 = pool.clone();
    thread::spawn(move || {
        // Registered first, so destroyed after the crate's thread-locals.
        HOLD.with(|h| *h.borrow_mut() = Some(OnDrop(fut, p2)));
        pool.spawn(|| ()).result(Some(HANG)).unwrap();
    })
    .join()
    .unwrap();
    drop(promise);
    eprintln!("the helper ended normally");
}

/// A user's thread-local destructor may wait on a future (with a timeout)
/// and submit to a thread pool, also on a thread that has submitted
/// before: the crate's own thread-locals may be gone by then, and touching
/// one with `with` panicked there, which aborts the process (found by
/// review).
#[test]
fn waiting_and_submitting_in_a_thread_local_destructor_works() {
    let out = common::run_helper(
        common::helper_command(
            "helper_wait_and_submit_in_a_thread_local_destructor",
            TLS_WAIT_HELPER_ENV,
        ),
        HANG,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the helper ended normally"), "{stderr}");
    assert!(stderr.contains("Err(Timeout"), "{stderr}");
    assert!(
        stderr.contains("a task submitted and waited for: Ok(7)"),
        "{stderr}"
    );
}
