//! A caller blocked on a process-pool future whose task a worker holds
//! reads that worker's results itself, while the worker's reader thread
//! stands by (`src/process/handoff.rs`, Linux). What a user can see of it:
//! a done-callback then runs on the caller's thread, the thread that ends
//! the future (C3); and everything the reader thread used to handle still
//! comes out the same when the caller reads: a worker's death, a timeout,
//! a result larger than the pipe, two callers on one worker, and a
//! callback that shuts the pool down and waits.

#![cfg(target_os = "linux")]

use std::sync::{Arc, mpsc};
use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{HANG, pool, wait, wait_until};

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn abort_after_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::abort()
}

fn blob(len: usize) -> Vec<u8> {
    vec![7; len]
}

/// A one-worker pool whose worker has started and answered once, and whose
/// reader has had time to go back to waiting (so that a caller finds the
/// worker's results free to read).
fn warm_pool() -> ProcessPoolExecutor {
    let pool = pool(1);
    assert_eq!(wait(pool.submit(sleep_ms, 0)), Ok(0));
    std::thread::sleep(Duration::from_millis(100));
    pool
}

#[test]
fn c3_a_callback_runs_on_the_caller_that_reads_the_result_while_blocked_in_result() {
    let pool = warm_pool();
    let f = pool.submit(sleep_ms, 300);
    wait_until("the task sent to the worker", || f.running());
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |_| {
        let _ = tx.send(std::thread::current().id());
    });
    assert_eq!(f.result(Some(HANG)), Ok(&300));
    assert_eq!(
        rx.recv_timeout(HANG).expect("the callback ran"),
        std::thread::current().id()
    );
}

#[test]
fn a_worker_that_dies_under_a_reading_caller_fails_its_task_and_is_replaced() {
    let pool = warm_pool();
    let f = pool.submit(abort_after_ms, 100);
    match f.result(Some(HANG)) {
        Err(Error::WorkerDied { .. }) => {}
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(wait(pool.submit(sleep_ms, 1)), Ok(1));
}

#[test]
fn r1_a_reading_callers_timeout_expires_and_a_later_wait_gets_the_value() {
    let pool = warm_pool();
    let f = pool.submit(sleep_ms, 300);
    assert!(matches!(
        f.result(Some(Duration::from_millis(50))),
        Err(Error::Timeout { .. })
    ));
    assert_eq!(f.result(Some(HANG)), Ok(&300));
}

#[test]
fn a_result_larger_than_the_pipe_reaches_a_reading_caller_whole() {
    let pool = warm_pool();
    let f = pool.submit(blob, 8 << 20);
    let value = f.result(Some(HANG)).expect("the blob");
    assert_eq!(value.len(), 8 << 20);
    assert!(value.iter().all(|&b| b == 7));
    assert_eq!(wait(pool.submit(sleep_ms, 1)), Ok(1));
}

#[test]
fn two_callers_waiting_on_tasks_of_one_worker_both_get_their_values() {
    let pool = warm_pool();
    // Both sent to the one worker (prefetch 2): one caller reads, the
    // other waits for it.
    let a = pool.submit(sleep_ms, 150);
    let b = pool.submit(sleep_ms, 151);
    let other = std::thread::spawn(move || b.result(Some(HANG)).copied());
    assert_eq!(a.result(Some(HANG)), Ok(&150));
    assert_eq!(other.join().expect("the other caller"), Ok(151));
}

/// The reading caller stands in for the worker's reader thread: a
/// callback it runs that shuts the pool down and waits must not wait for
/// that worker's end, which only the caller can now see.
#[test]
fn s5_shutdown_and_wait_in_a_callback_the_reading_caller_runs_returns() {
    let pool = Arc::new(warm_pool());
    let f = pool.submit(sleep_ms, 200);
    let (tx, rx) = mpsc::channel();
    {
        let pool = pool.clone();
        f.add_done_callback(move |_| {
            pool.shutdown(true, false);
            let _ = tx.send(());
        });
    }
    let caller = std::thread::spawn(move || f.result(Some(HANG)).copied());
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "shutdown(wait) in the reading caller's callback waits for itself"
    );
    assert_eq!(caller.join().expect("the caller"), Ok(200));
}
