//! A thread-pool `Pool`'s tasks that wait on each other's `AsyncResult`s
//! (T10, PP20): a worker waiting on a result of its own pool runs the
//! task itself if it is still queued, as it does for the executor's own
//! futures, so a pool whose every worker waits does not deadlock. An
//! `AsyncResult` is a promise the result-handling thread keeps after the
//! task ends; the wait goes through the task first (found by review: a
//! one-thread pool deadlocked). Every wait has a hang guard; no test
//! asserts a duration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use concurrent_futures::{AsyncResult, Callbacks, Error, ThreadPool, ThreadPoolExecutor};

mod common;
use common::{HANG, wait_until};

fn square(x: u64) -> u64 {
    x * x
}

/// The pools and the hand-overs of the tests below, one set per test
/// (tasks are `fn` items: what they share is static).
static OUTSIDE: OnceLock<ThreadPool> = OnceLock::new();
static LATER: Mutex<Option<AsyncResult<u64>>> = Mutex::new(None);
static LATER_MAP: Mutex<Option<AsyncResult<Vec<u64>>>> = Mutex::new(None);
static WAITER_RUNS: AtomicBool = AtomicBool::new(false);

/// Task: waits until a result of its pool is handed over, then on it.
fn wait_on_later(_: u64) -> u64 {
    WAITER_RUNS.store(true, Ordering::SeqCst);
    wait_until("the later task is submitted", || {
        LATER.lock().unwrap().is_some()
    });
    let later = LATER.lock().unwrap().take().unwrap();
    later.get(Some(HANG)).map(|v| v + 1).unwrap()
}

/// T10, PP20: A runs on the only thread and waits on the `AsyncResult` of
/// B, submitted from outside after it (queued behind A). The wait runs B
/// on A's thread.
#[test]
fn t10_a_task_waiting_on_a_later_apply_async_of_a_one_thread_pool_runs_it() {
    let pool = OUTSIDE.get_or_init(|| ThreadPool::new(1).unwrap());
    let a = pool.apply_async(wait_on_later, 0).unwrap();
    wait_until("A runs", || WAITER_RUNS.load(Ordering::SeqCst));
    *LATER.lock().unwrap() = Some(pool.apply_async(square, 6).unwrap());
    assert_eq!(a.get(Some(HANG)), Ok(&37));
}

static MAP_POOL: OnceLock<ThreadPool> = OnceLock::new();
static MAP_WAITER_RUNS: AtomicBool = AtomicBool::new(false);

/// Task: waits until a `map_async` of its pool is handed over, then on it.
fn wait_on_later_map(_: u64) -> u64 {
    MAP_WAITER_RUNS.store(true, Ordering::SeqCst);
    wait_until("the later map is submitted", || {
        LATER_MAP.lock().unwrap().is_some()
    });
    let later = LATER_MAP.lock().unwrap().take().unwrap();
    later.get(Some(HANG)).unwrap().iter().sum()
}

/// T10, PP20 for `map_async`: its chunks, queued behind the waiting task
/// on the only thread, are run by the wait, one by one.
#[test]
fn t10_a_task_waiting_on_a_later_map_async_of_a_one_thread_pool_runs_its_chunks() {
    let pool = MAP_POOL.get_or_init(|| ThreadPool::new(1).unwrap());
    let a = pool.apply_async(wait_on_later_map, 0).unwrap();
    wait_until("A runs", || MAP_WAITER_RUNS.load(Ordering::SeqCst));
    let map = pool
        .map_async_with(square, 1..=10u64, Some(3), Callbacks::new())
        .unwrap();
    *LATER_MAP.lock().unwrap() = Some(map);
    assert_eq!(a.get(Some(HANG)), Ok(&385));
}

static SIBLINGS: OnceLock<ThreadPool> = OnceLock::new();
static PRODUCED: Mutex<Option<AsyncResult<u64>>> = Mutex::new(None);

fn producer(x: u64) -> u64 {
    x * 10
}

fn consumer(_: u64) -> u64 {
    let produced = PRODUCED.lock().unwrap().take().unwrap();
    produced.get(Some(HANG)).map(|v| v + 1).unwrap()
}

/// Submits a producer, then a consumer that waits on the producer's
/// result, and waits on the consumer.
fn producer_then_consumer(x: u64) -> u64 {
    let pool = SIBLINGS.get().unwrap();
    *PRODUCED.lock().unwrap() = Some(pool.apply_async(producer, x).unwrap());
    let consumer = pool.apply_async(consumer, 0).unwrap();
    consumer.into_result().unwrap()
}

/// T10, PP20 fork-join with siblings: the waiting task runs the consumer
/// (its newest subtask) nested; the consumer waits on the producer, which
/// sits below the nested task's boundary, where only a wait on the
/// producer's own task may take it. As on the executor's futures (the
/// control), a one-thread pool completes.
#[test]
fn t10_sibling_tasks_waiting_on_each_others_async_results_complete_on_one_thread() {
    let ex = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let ex2 = ex.clone();
    let control = ex.spawn(move || {
        let p = Arc::new(ex2.spawn(|| 40u64));
        let c = ex2.spawn(move || p.result(Some(HANG)).map(|v| v + 1));
        c.into_result().unwrap()
    });
    assert_eq!(control.result(Some(HANG)).cloned(), Ok(Ok(41)));

    let pool = SIBLINGS.get_or_init(|| ThreadPool::new(1).unwrap());
    let r = pool.apply_async(producer_then_consumer, 4).unwrap();
    assert_eq!(r.get(Some(HANG)), Ok(&41));
}

static TIMED: OnceLock<ThreadPool> = OnceLock::new();
static HELD: Mutex<Option<AsyncResult<u64>>> = Mutex::new(None);
static RELEASE: AtomicBool = AtomicBool::new(false);
static HELD_RUNS: AtomicBool = AtomicBool::new(false);

/// Task: runs until `RELEASE`.
fn held(x: u64) -> u64 {
    HELD_RUNS.store(true, Ordering::SeqCst);
    wait_until("the test releases the held task", || {
        RELEASE.load(Ordering::SeqCst)
    });
    x
}

/// Task: waits 50 ms on a result whose task another worker is running;
/// gives what `get` and `wait` said.
fn short_wait_on_held(_: u64) -> (String, bool) {
    let held = HELD.lock().unwrap().take().unwrap();
    let got = format!("{:?}", held.get(Some(Duration::from_millis(50))));
    let ready = held.wait(Some(Duration::from_millis(50)));
    *HELD.lock().unwrap() = Some(held);
    (got, ready)
}

/// MP5 on a worker: a `get` with a timeout whose task runs on another
/// worker times out with the timeout asked for, and `wait` says not
/// ready; the result stays good for a later `get`.
#[test]
fn mp5_a_workers_timed_wait_on_a_result_running_elsewhere_times_out() {
    let pool = TIMED.get_or_init(|| ThreadPool::new(2).unwrap());
    *HELD.lock().unwrap() = Some(pool.apply_async(held, 7).unwrap());
    wait_until("the held task runs", || HELD_RUNS.load(Ordering::SeqCst));
    let waiter = pool.apply_async(short_wait_on_held, 0).unwrap();
    let (got, ready) = waiter.get(Some(HANG)).unwrap().clone();
    let timeout = Error::Timeout {
        waited: Duration::from_millis(50),
    };
    assert_eq!(got, format!("{:?}", Err::<&u64, _>(timeout)));
    assert!(!ready);
    RELEASE.store(true, Ordering::SeqCst);
    let held = HELD.lock().unwrap().take().unwrap();
    assert_eq!(held.get(Some(HANG)), Ok(&7));
}

static TERM_RESULT: OnceLock<AsyncResult<u64>> = OnceLock::new();
static TERM_LONG_RUNS: AtomicBool = AtomicBool::new(false);
static TERM_RELEASE: AtomicBool = AtomicBool::new(false);
static TERM_WAITER_IN_GET: AtomicBool = AtomicBool::new(false);
static TERM_WAITER_SAW: Mutex<Option<String>> = Mutex::new(None);

/// Task: runs until the test releases it (or the hang guard passes).
fn long_task(x: u64) -> u64 {
    TERM_LONG_RUNS.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + HANG;
    while !TERM_RELEASE.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    x
}

/// Task: waits (on its worker) on the long task's result, and records
/// what `get` said.
fn wait_on_long_result(_: u64) -> u64 {
    common::wait_until("the long task's result is handed over", || {
        TERM_RESULT.get().is_some()
    });
    let r = TERM_RESULT.get().unwrap();
    TERM_WAITER_IN_GET.store(true, Ordering::SeqCst);
    let saw = format!("{:?}", r.get(Some(HANG)));
    *TERM_WAITER_SAW.lock().unwrap() = Some(saw);
    0
}

/// MP24: `Pool::terminate` on a `ThreadPool` makes every pending
/// `AsyncResult` ready (`Error::Broken`), also one whose task still runs
/// (threads cannot be killed). A `get` already waiting on that result on
/// another worker of the pool returns that error, as one off the pool
/// does (the control). A wait on the task's end first, tried for T10,
/// stayed blocked until the task ended by itself (found by review).
#[test]
fn mp24_a_workers_get_on_a_result_that_terminate_made_ready_returns() {
    let pool = ThreadPool::new(2).unwrap();
    let a = pool.apply_async(long_task, 7).unwrap();
    wait_until("the long task runs", || {
        TERM_LONG_RUNS.load(Ordering::SeqCst)
    });
    let _waiter = pool.apply_async(wait_on_long_result, 0).unwrap();
    assert!(TERM_RESULT.set(a).is_ok());
    wait_until("the waiter is in get", || {
        TERM_WAITER_IN_GET.load(Ordering::SeqCst)
    });
    // Let it settle into its wait (not a measurement).
    std::thread::sleep(Duration::from_millis(200));
    pool.terminate();
    let r = TERM_RESULT.get().unwrap();
    assert!(r.ready(), "terminate() returned with the result not ready");
    // The control: off the pool, `get` of the ready result answers at once.
    let here = format!("{:?}", r.get(Some(HANG)));
    assert!(here.contains("Broken"), "{here}");
    // The worker's `get`, waiting since before the terminate.
    let deadline = Instant::now() + Duration::from_secs(10);
    let saw = loop {
        if let Some(s) = TERM_WAITER_SAW.lock().unwrap().clone() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    TERM_RELEASE.store(true, Ordering::SeqCst);
    assert!(
        saw.is_some(),
        "a worker's AsyncResult::get was still blocked 10 s after terminate() made the \
         result ready (Broken; the main thread's get returned {here}): it waits on the \
         still-running task, not on the result"
    );
    let saw = saw.unwrap();
    assert!(saw.contains("Broken"), "the worker's get said {saw}");
}

static FJ_POOL: OnceLock<ThreadPool> = OnceLock::new();
static FJ_B_STARTED: AtomicBool = AtomicBool::new(false);
static FJ_A_IN_GET: AtomicBool = AtomicBool::new(false);
static FJ_C_RAN: AtomicBool = AtomicBool::new(false);

fn fj_c(_: u64) -> u64 {
    FJ_C_RAN.store(true, Ordering::SeqCst);
    0
}

/// B, on the other worker: once A waits on it, pushes C onto its own
/// deque and watches for C to run, without waiting on the pool (at most
/// 10 s). 1 if C ran.
fn fj_b(_: u64) -> u64 {
    FJ_B_STARTED.store(true, Ordering::SeqCst);
    wait_until("A waits on B", || FJ_A_IN_GET.load(Ordering::SeqCst));
    // Let A settle into its wait (ordering only).
    std::thread::sleep(Duration::from_millis(300));
    let _c = FJ_POOL.get().unwrap().apply_async(fj_c, 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !FJ_C_RAN.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    u64::from(FJ_C_RAN.load(Ordering::SeqCst))
}

/// A: submits B, lets the other worker take it, and waits on its result.
fn fj_a(_: u64) -> u64 {
    let pool = FJ_POOL.get().unwrap();
    let b = pool.apply_async(fj_b, 0).unwrap();
    wait_until("the other worker takes B", || {
        FJ_B_STARTED.load(Ordering::SeqCst)
    });
    FJ_A_IN_GET.store(true, Ordering::SeqCst);
    *b.get(Some(HANG)).unwrap()
}

/// T10 (RELIABILITY: the subtasks the awaited task pushes while it runs
/// on another worker are helped with, through the `Pool` facade too): a
/// worker waiting on a result whose task runs at the bottom of another
/// worker's stack keeps looking for the subtasks that task pushes, as a
/// wait on the executor's `Future` does (the control). (A wait that
/// looked once, then blocked on the result, left C in B's deque while both
/// workers waited; found by review.)
#[test]
fn t10_a_workers_async_result_wait_keeps_helping_the_thief_as_a_future_wait_does() {
    // The control: the executor's futures.
    static B_STARTED: AtomicBool = AtomicBool::new(false);
    static A_WAITS: AtomicBool = AtomicBool::new(false);
    static C_RAN: AtomicBool = AtomicBool::new(false);
    let ex = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let ex2 = ex.clone();
    let control = ex.spawn(move || {
        let ex3 = ex2.clone();
        let b = ex2.spawn(move || {
            B_STARTED.store(true, Ordering::SeqCst);
            wait_until("A waits on B", || A_WAITS.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(300));
            let _c = ex3.spawn(|| C_RAN.store(true, Ordering::SeqCst));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !C_RAN.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            C_RAN.load(Ordering::SeqCst)
        });
        wait_until("the other worker takes B", || {
            B_STARTED.load(Ordering::SeqCst)
        });
        A_WAITS.store(true, Ordering::SeqCst);
        *b.result(Some(HANG)).unwrap()
    });
    assert_eq!(
        control.result(Some(HANG)).cloned(),
        Ok(true),
        "control: a Future wait helps the thief"
    );

    let pool = FJ_POOL.get_or_init(|| ThreadPool::new(2).unwrap());
    let a = pool.apply_async(fj_a, 0).unwrap();
    assert_eq!(
        a.get(Some(HANG)),
        Ok(&1),
        "C, pushed by B while A waited on B's AsyncResult, did not run within 10 s: \
         A's wait no longer helps the worker running B"
    );
}

static FEED_POOL: OnceLock<ThreadPool> = OnceLock::new();
/// What the producer feeds its consumer (0: nothing yet).
static FEED: AtomicU64 = AtomicU64::new(0);
static FED_CONSUMER_THREAD: Mutex<Option<String>> = Mutex::new(None);
static FEEDING_PRODUCER_THREAD: Mutex<Option<String>> = Mutex::new(None);

fn thread_tag() -> String {
    format!("{:?}", std::thread::current().id())
}

/// Consumer: waits (2 s at most) for the producer to feed it.
fn fed_consumer(_: u64) -> u64 {
    *FED_CONSUMER_THREAD.lock().unwrap() = Some(thread_tag());
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        let v = FEED.load(Ordering::SeqCst);
        if v != 0 {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    0
}

fn square_it(x: u64) -> u64 {
    x * x
}

/// Producer: starts its consumer, computes a value by a subtask it waits
/// on through an `AsyncResult`, then feeds the consumer.
fn feeding_producer(x: u64) -> u64 {
    *FEEDING_PRODUCER_THREAD.lock().unwrap() = Some(thread_tag());
    let pool = FEED_POOL.get().unwrap();
    let consumer = pool.apply_async(fed_consumer, 0).unwrap();
    // A callback that takes a moment (logs the value, say): the result is
    // ready only once it returned (MP6). Without it the bug shows as well
    // (10 runs of 10 alone; 2 of 3 among the other tests), unless the
    // handler thread is quicker than the wait.
    let logged = Callbacks::new().callback(|_: &u64| std::thread::sleep(Duration::from_millis(50)));
    let v = *pool
        .apply_async_with(square_it, x, logged)
        .unwrap()
        .get(Some(HANG))
        .unwrap();
    FEED.store(v, Ordering::SeqCst);
    consumer.into_result().unwrap()
}

/// T10 through an `AsyncResult`: producer P starts consumer S, then
/// waits on its subtask X's `AsyncResult`. The wait runs X in place; once
/// X has ended it waits on the result (which the handler thread makes
/// ready a moment later) without helping, so S stays queued and gets the
/// value, as with the executor's own futures (the control). (A wait on
/// the result that helped popped S and ran it on top of P, where it
/// starved; found by review.)
#[test]
fn t10_a_consumer_is_not_run_on_top_of_its_producer_waiting_on_an_async_result() {
    // Control: the same shape on the executor's own futures completes.
    let ex = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let ex2 = ex.clone();
    let control = ex.spawn(move || {
        let (feed, fed) = mpsc::channel::<u64>();
        let s = ex2.spawn(move || fed.recv_timeout(Duration::from_secs(2)).unwrap_or(0));
        let v = *ex2.spawn(|| 9u64).result(Some(HANG)).unwrap();
        let _ = feed.send(v);
        s.into_result().unwrap()
    });
    assert_eq!(control.result(Some(HANG)).cloned(), Ok(9), "control");

    let pool = FEED_POOL.get_or_init(|| ThreadPool::new(1).unwrap());
    let r = pool.apply_async(feeding_producer, 3).unwrap();
    let got = r.get(Some(HANG)).cloned();
    let (c, p) = (
        FED_CONSUMER_THREAD.lock().unwrap().clone(),
        FEEDING_PRODUCER_THREAD.lock().unwrap().clone(),
    );
    assert_eq!(
        got,
        Ok(9),
        "the consumer starved: it ran on top of its producer (consumer on {c:?}, producer on {p:?})"
    );
}
