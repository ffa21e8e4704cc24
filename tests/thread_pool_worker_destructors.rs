//! A thread-pool worker's thread-local destructors, which run after the
//! worker retired, calling `shutdown(wait = true)` or `shutdown_within` on
//! their own pool (S3, PP8; `src/thread/joins.rs`): such a destructor
//! waits for the other workers to retire, unless its thread is being
//! joined already, and never for their threads; a task of the pool does
//! not join a destructor that waits that way (each would wait for the
//! other); an outside caller waits for it, then joins it. Also the
//! callbacks of tasks failed by an initializer panic (T8). A task or a
//! sweep's callback that passes over a waiting destructor says `TimedOut`
//! from `shutdown_within`. Every wait has
//! a hang guard; no test asserts a duration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use concurrent_futures::{ShutdownOutcome, ThreadPoolExecutor};

mod common;
use common::{HANG, wait_for};

/// What a worker's thread runs in a thread-local destructor (set by one of
/// its tasks).
type OnExit = Box<dyn FnOnce() + Send>;

struct RunsOnExit(Option<OnExit>);

impl Drop for RunsOnExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<RunsOnExit>> = const { std::cell::RefCell::new(None) };
}

/// A two-worker pool whose workers run `first` and `second` as tasks, one
/// each (the two tasks meet, so each has a worker of its own). Returns the
/// pool and the two tasks' futures.
fn two_workers_running(
    first: impl FnOnce(&Arc<ThreadPoolExecutor>) + Send + 'static,
    second: impl FnOnce(&Arc<ThreadPoolExecutor>) + Send + 'static,
) -> (
    Arc<ThreadPoolExecutor>,
    concurrent_futures::Future<()>,
    concurrent_futures::Future<()>,
) {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let met = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let meet = |met: &std::sync::atomic::AtomicUsize| {
        met.fetch_add(1, Ordering::SeqCst);
        assert!(wait_for(HANG, || met.load(Ordering::SeqCst) == 2));
    };
    let (p, m) = (pool.clone(), met.clone());
    let a = pool.spawn(move || {
        meet(&m);
        first(&p);
    });
    let p = pool.clone();
    let b = pool.spawn(move || {
        meet(&met);
        second(&p);
    });
    (pool, a, b)
}

/// Sets what this worker thread runs in its thread-local destructor.
fn on_exit(f: impl FnOnce() + Send + 'static) {
    ON_EXIT.with(|e| *e.borrow_mut() = Some(RunsOnExit(Some(Box::new(f)))));
}

/// S3: a worker's thread-local destructor calling `shutdown(wait = true)`
/// on its own pool returns only once the other worker's running task has
/// ended and that worker retired (it returned at once for a while: the
/// other workers' waits may join its thread, see the next tests).
#[test]
fn s3_a_worker_dtor_shutdown_wait_waits_for_the_other_workers_running_task() {
    let (release, held) = mpsc::channel::<()>();
    let task_ended = Arc::new(AtomicBool::new(false));
    let (report, reported) = mpsc::channel();
    let ended = task_ended.clone();
    let (pool, a, b) = two_workers_running(
        move |_| {
            let _ = held.recv_timeout(HANG);
            ended.store(true, Ordering::SeqCst);
        },
        move |p| {
            let (p, ended) = (p.clone(), task_ended);
            on_exit(move || {
                p.shutdown(true, false);
                let _ = report.send(ended.load(Ordering::SeqCst));
            });
        },
    );
    b.result(Some(HANG)).unwrap();
    pool.shutdown(false, false);
    // The second worker retires and its destructor waits; the first task
    // is let go a moment later (ordering only).
    assert!(wait_for(HANG, || pool.live_workers() == 1));
    std::thread::sleep(Duration::from_millis(100));
    release.send(()).unwrap();
    a.result(Some(HANG)).unwrap();
    assert_eq!(
        reported.recv_timeout(HANG),
        Ok(true),
        "the destructor's shutdown(wait = true) returned while the other worker's task ran"
    );
}

/// S3: a task of the pool calling `shutdown(wait = true)` while the other
/// worker's destructor waits in its own `shutdown(wait = true)` (for this
/// very task's worker to retire): both return. The task does not join the
/// waiting destructor's thread.
#[test]
fn s3_a_task_shutdown_wait_and_a_worker_dtor_shutdown_wait_do_not_wait_for_each_other() {
    let (in_dtor, dtor_entered) = mpsc::channel::<()>();
    let (report, reported) = mpsc::channel();
    let (pool, a, b) = two_workers_running(
        move |p| {
            // Once the other worker's destructor waits (ordering only).
            let _ = dtor_entered.recv_timeout(HANG);
            std::thread::sleep(Duration::from_millis(100));
            p.shutdown(true, false);
        },
        move |p| {
            let p = p.clone();
            on_exit(move || {
                let _ = in_dtor.send(());
                p.shutdown(true, false);
                let _ = report.send(());
            });
        },
    );
    b.result(Some(HANG)).unwrap();
    pool.shutdown(false, false);
    assert!(
        a.result(Some(Duration::from_secs(10))).is_ok(),
        "the task's shutdown(wait = true) never returned: it joins a destructor that waits \
         for the task's worker"
    );
    assert!(
        reported.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the destructor's shutdown(wait = true) never returned"
    );
}

/// S3: the other order: a task's `shutdown(wait = true)` is joining the
/// retired worker when that worker's destructor calls `shutdown(wait =
/// true)`: the destructor returns at once (its thread is being joined),
/// and so the task's join ends.
#[test]
fn s3_a_worker_dtor_shutdown_wait_while_a_task_joins_its_thread_returns() {
    let (go, wait_go) = mpsc::channel::<()>();
    let (report, reported) = mpsc::channel();
    let (pool, a, b) = two_workers_running(
        move |p| {
            // Once the other worker retired (its destructor waits for `go`).
            assert!(wait_for(HANG, || p.live_workers() == 1));
            p.shutdown(true, false);
        },
        move |p| {
            let p = p.clone();
            on_exit(move || {
                let _ = wait_go.recv_timeout(HANG);
                p.shutdown(true, false);
                let _ = report.send(());
            });
        },
    );
    b.result(Some(HANG)).unwrap();
    pool.shutdown(false, false);
    // The task is joining the destructor's thread by then (ordering only).
    std::thread::sleep(Duration::from_millis(200));
    go.send(()).unwrap();
    assert!(
        reported.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the destructor's shutdown(wait = true) never returned: it waits for the task \
         that joins its thread"
    );
    assert!(a.result(Some(HANG)).is_ok());
}

/// S3: an outside `shutdown(wait = true)` waits for a worker's destructor
/// that waits in its own `shutdown(wait = true)`, and returns only once
/// that thread has ended.
#[test]
fn s3_an_outside_shutdown_wait_joins_a_worker_whose_dtor_waits_in_shutdown() {
    let (release, held) = mpsc::channel::<()>();
    let dtor_done = Arc::new(AtomicBool::new(false));
    let done = dtor_done.clone();
    let (pool, a, b) = two_workers_running(
        move |_| {
            let _ = held.recv_timeout(HANG);
        },
        move |p| {
            let p = p.clone();
            on_exit(move || {
                p.shutdown(true, false);
                // Still in the destructor after its wait (a flush).
                std::thread::sleep(Duration::from_millis(200));
                done.store(true, Ordering::SeqCst);
            });
        },
    );
    b.result(Some(HANG)).unwrap();
    pool.shutdown(false, false);
    assert!(wait_for(HANG, || pool.live_workers() == 1));
    std::thread::sleep(Duration::from_millis(100));
    let p = pool.clone();
    let outside = std::thread::spawn(move || p.shutdown(true, false));
    release.send(()).unwrap();
    assert!(wait_for(HANG, || outside.is_finished()));
    outside.join().unwrap();
    a.result(Some(HANG)).unwrap();
    assert!(
        dtor_done.load(Ordering::SeqCst),
        "the outside shutdown(wait = true) returned while the destructor still ran"
    );
}

/// PP8 (`ShutdownOutcome::Finished`: "every worker exited"): a worker's
/// destructor calling `shutdown_within` says `TimedOut` while the other
/// worker's thread still runs its own destructor (it cannot join it, so it
/// cannot know it ended). It said `Finished` (found by review).
#[test]
fn pp8_shutdown_within_from_a_worker_dtor_says_timed_out_while_another_worker_thread_runs() {
    let (release, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let (report, reported) = mpsc::channel();
    let (pool, a, b) = two_workers_running(
        move |_| {
            on_exit(move || {
                let _ = held.lock().unwrap().recv_timeout(HANG);
            });
        },
        move |p| {
            let p = p.clone();
            on_exit(move || {
                wait_for(HANG, || p.live_workers() == 0);
                let _ = report.send(p.shutdown_within(Duration::from_millis(300), false));
            });
        },
    );
    a.result(Some(HANG)).unwrap();
    b.result(Some(HANG)).unwrap();
    pool.shutdown(false, false);
    let outcome = reported.recv_timeout(HANG);
    drop(release);
    assert_eq!(outcome, Ok(ShutdownOutcome::TimedOut));
}

/// S3, T8: when a worker's initializer panics, the tasks queued behind it
/// fail (Broken), and a done-callback of one calling `shutdown(wait =
/// true)` returns. They were failed on the worker's thread before its loop
/// had set it up as a worker, so the callback was taken for an outside
/// thread and waited for its own thread to end (found by review).
#[test]
fn s3_a_callback_failed_by_an_initializer_panic_shutting_down_and_waiting_returns() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let pool = Arc::new(
        ThreadPoolExecutor::builder()
            .max_workers(1)
            .initializer(move || {
                let _ = go_rx.lock().unwrap().recv_timeout(HANG);
                panic!("initializer fails (on purpose)");
            })
            .build()
            .unwrap(),
    );
    // Queued while the worker is still in its initializer.
    let queued = pool.spawn(|| 1u8);
    let (done_tx, done_rx) = mpsc::channel();
    {
        let p = pool.clone();
        queued.add_done_callback(move |_| {
            p.shutdown(true, false);
            let _ = done_tx.send(());
        });
    }
    go_tx.send(()).unwrap();
    assert!(
        queued.result(Some(HANG)).is_err(),
        "the queued task should fail with Broken"
    );
    assert!(
        done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the done-callback's shutdown(wait = true), run on the worker whose initializer \
         panicked, never returned: it waits for its own thread"
    );
}

/// PP8 (`ShutdownOutcome::Finished`: "every worker exited"): a task
/// calling `shutdown_within` while the other worker's destructor waits in
/// `shutdown(wait = true)` (for this task's worker) passes over that
/// destructor, rightly, and says `TimedOut`: that thread still runs. It
/// said `Finished` (found by review).
#[test]
fn pp8_shutdown_within_from_a_task_says_timed_out_while_a_waiting_dtor_thread_runs() {
    let (in_dtor, dtor_entered) = mpsc::channel::<()>();
    let (release, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let dtor_done = Arc::new(AtomicBool::new(false));
    let (report, reported) = mpsc::channel();
    let done = dtor_done.clone();
    let (pool, a, b) = two_workers_running(
        move |p| {
            let _ = dtor_entered.recv_timeout(HANG);
            // The destructor is in its wait by then (ordering only).
            std::thread::sleep(Duration::from_millis(200));
            let outcome = p.shutdown_within(Duration::from_millis(300), false);
            let _ = report.send((outcome, done.load(Ordering::SeqCst)));
        },
        move |p| {
            let p = p.clone();
            on_exit(move || {
                let _ = in_dtor.send(());
                p.shutdown(true, false);
                // A flush after the wait, held by the test.
                let _ = held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .recv_timeout(HANG);
                dtor_done.store(true, Ordering::SeqCst);
            });
        },
    );
    b.result(Some(HANG)).unwrap();
    pool.shutdown(false, false);
    let got = reported.recv_timeout(HANG);
    a.result(Some(HANG)).unwrap();
    drop(release);
    pool.shutdown(true, false);
    let (outcome, dtor_done_then) = got.expect("the task never reported");
    assert!(
        outcome != ShutdownOutcome::Finished || dtor_done_then,
        "shutdown_within from a task said Finished while the other worker's thread was \
         still alive in its thread-local destructor (waiting in shutdown for this task's \
         worker, then held)"
    );
}

/// PP8, the other kind of own caller: a done-callback run by an outside
/// thread's `shutdown(cancel_futures = true)` sweep calls `shutdown_within`
/// while a retired worker's destructor waits in `shutdown(wait = true)`
/// (for the sweep, among others): it passes over that destructor and says
/// `TimedOut`. It said `Finished` (found by review).
#[test]
fn pp8_shutdown_within_from_a_sweepers_callback_says_timed_out_while_a_waiting_dtor_thread_runs() {
    let (in_dtor, dtor_entered) = mpsc::channel::<()>();
    let dtor_entered = Mutex::new(dtor_entered);
    let (release_dtor, dtor_held) = mpsc::channel::<()>();
    let dtor_held = Mutex::new(dtor_held);
    let (release_a, a_held) = mpsc::channel::<()>();
    let (release_b, b_held) = mpsc::channel::<()>();
    let dtor_done = Arc::new(AtomicBool::new(false));
    let done = dtor_done.clone();
    let (pool, a, b) = two_workers_running(
        move |_| {
            let _ = a_held.recv_timeout(HANG);
        },
        move |p| {
            let p = p.clone();
            on_exit(move || {
                let _ = in_dtor.send(());
                p.shutdown(true, false);
                let _ = dtor_held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .recv_timeout(HANG);
                done.store(true, Ordering::SeqCst);
            });
            let _ = b_held.recv_timeout(HANG);
        },
    );
    // Both workers busy: this one stays queued, for the sweep.
    assert!(wait_for(HANG, || a.running() && b.running()));
    let queued = pool.spawn(|| ());
    let (report, reported) = mpsc::channel();
    {
        let p = pool.clone();
        let done = dtor_done.clone();
        queued.add_done_callback(move |_| {
            // On the sweeping thread: once the destructor waits.
            let _ = dtor_entered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(HANG);
            std::thread::sleep(Duration::from_millis(100));
            let outcome = p.shutdown_within(Duration::from_secs(5), false);
            let _ = report.send((outcome, done.load(Ordering::SeqCst)));
        });
    }
    let p = pool.clone();
    let sweeper = std::thread::spawn(move || p.shutdown(false, true));
    // The sweep has taken the queued task (its callback waits for the
    // destructor); worker b retires, its destructor waits.
    assert!(wait_for(HANG, || queued.done()));
    release_b.send(()).unwrap();
    b.result(Some(HANG)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    release_a.send(()).unwrap();
    a.result(Some(HANG)).unwrap();
    let got = reported.recv_timeout(HANG);
    drop(release_dtor);
    assert!(wait_for(HANG, || sweeper.is_finished()));
    sweeper.join().unwrap();
    pool.shutdown(true, false);
    let (outcome, dtor_done_then) = got.expect("the callback never reported");
    assert!(
        outcome != ShutdownOutcome::Finished || dtor_done_then,
        "shutdown_within from a sweeper's callback said Finished while a retired worker's \
         thread was still alive in its thread-local destructor"
    );
}
