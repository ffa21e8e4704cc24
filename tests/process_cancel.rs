//! `cancel()` of a running process-pool task (CONFORMANCE.md decision 4,
//! pebble L9): refused by default, as in CPython (X2); with
//! `ProcessPoolBuilder::kill_on_cancel(true)` the future ends cancelled at
//! once and the worker running the task is killed and replaced.
//!
//! The long tasks here would run for a minute: a test that finishes in
//! well under its hang guard shows the task was stopped, not waited for.

use std::time::{Duration, Instant};

use concurrent_futures::{Error, ExecutorExt, Future, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{HANG, is_alive, wait};

fn getpid(_: ()) -> u32 {
    std::process::id()
}

/// Sleeps `ms`, then returns the worker's pid.
fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// A 1-worker pool that kills on cancel.
fn killing_pool() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .kill_on_cancel(true)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

fn wait_running<T>(f: &Future<T>) {
    let deadline = Instant::now() + HANG;
    while !f.running() {
        assert!(Instant::now() < deadline, "the task was never sent");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// X2 / decision 4, default: a running task is not cancelled and runs on.
#[test]
fn decision4_by_default_cancel_of_a_running_task_returns_false() {
    let pool = common::pool(1);
    let running = pool.submit(sleep_ms, 200);
    wait_running(&running);
    assert!(!running.cancel());
    assert!(!running.cancelled());
    assert!(wait(running).is_ok());
}

/// Decision 4 with kill_on_cancel: cancel() of the running task returns
/// true, its future ends cancelled at once, the worker is killed, and the
/// pool goes on with a new worker.
/// PP3: a running process-pool task can be cancelled (CPython's `cancel()`
/// returns False once it runs).
#[test]
fn decision4_kill_on_cancel_stops_a_running_task_by_killing_its_worker() {
    let pool = killing_pool();
    let worker = wait(pool.submit(getpid, ())).unwrap();
    let running = pool.submit(sleep_ms, 60_000);
    wait_running(&running);
    assert!(running.cancel());
    assert!(running.cancelled());
    assert_eq!(running.result(Some(Duration::ZERO)), Err(Error::Cancelled));
    let next = wait(pool.submit(getpid, ())).unwrap();
    assert_ne!(
        next, worker,
        "the worker that ran the task was not replaced"
    );
    assert!(
        !is_alive(worker),
        "worker {worker} still runs the cancelled task"
    );
}

/// Decision 3 with kill_on_cancel: the task queued behind the cancelled one
/// on the same worker did not start; it is sent again and runs.
#[test]
fn decision4_tasks_behind_a_stopped_task_are_sent_again() {
    let pool = killing_pool();
    let running = pool.submit(sleep_ms, 60_000);
    let behind = pool.submit(sleep_ms, 1);
    wait_running(&running);
    wait_running(&behind); // prefetch: it waits in the same worker's pipe
    assert!(running.cancel());
    let pid = wait(behind).expect("the task behind it runs elsewhere");
    assert_eq!(wait(pool.submit(getpid, ())), Ok(pid));
}

/// Decision 4 with kill_on_cancel: a task cancelled while it waits in its
/// worker's pipe, behind a task that goes on, is stopped once it starts;
/// the task ahead of it finishes normally.
#[test]
fn decision4_a_task_cancelled_in_the_pipe_is_stopped_when_it_starts() {
    let pool = killing_pool();
    let ahead = pool.submit(sleep_ms, 300);
    let waiting = pool.submit(sleep_ms, 60_000);
    wait_running(&waiting);
    assert!(waiting.cancel());
    assert_eq!(waiting.result(Some(Duration::ZERO)), Err(Error::Cancelled));
    let worker = wait(ahead).expect("the task ahead is not stopped");
    // The worker is killed as it starts the cancelled task; the next task
    // runs on its replacement.
    let next = wait(pool.submit(getpid, ())).unwrap();
    assert_ne!(next, worker);
    let deadline = Instant::now() + HANG;
    while is_alive(worker) {
        assert!(
            Instant::now() < deadline,
            "worker {worker} was never stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Decision 4 with kill_on_cancel: cancelling a queued task still just
/// removes it (no worker is killed), and cancelling a finished one fails.
#[test]
fn decision4_kill_on_cancel_leaves_queued_and_finished_tasks_as_before() {
    let pool = killing_pool();
    let worker = wait(pool.submit(getpid, ())).unwrap();
    let first = pool.submit(sleep_ms, 200);
    let second = pool.submit(sleep_ms, 1);
    let queued = pool.submit(sleep_ms, 1);
    wait_running(&second);
    assert!(!queued.running());
    assert!(queued.cancel());
    assert_eq!(wait(first), Ok(worker));
    assert_eq!(wait(second), Ok(worker));
    let done = pool.submit(getpid, ());
    assert_eq!(wait_ref(&done), Ok(worker));
    assert!(!done.cancel(), "a finished task cannot be cancelled");
}

fn wait_ref<T: Clone>(f: &Future<T>) -> Result<T, Error> {
    f.result(Some(HANG)).cloned()
}
