//! `shutdown_within`: a shutdown with a time budget, and the process pool's
//! hard stops (CONFORMANCE.md PP8: "`shutdown(wait, cancel_pending,
//! deadline)` that escalates term→kill"; CPython 3.14's `terminate_workers`
//! and `kill_workers`, S14).
//!
//! No test measures time. A task that must still be running at a deadline
//! is held by a gate the test never opens, and every wait that must end is
//! bounded by the hang guard.

use std::sync::Arc;
use std::time::Duration;

use concurrent_futures::{
    Error, Executor, ExecutorExt, Future, ProcessPoolExecutor, ShutdownGuard, ShutdownOutcome,
    ThreadPoolExecutor,
};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{
    FileGate, HANG, Manual, await_file, guarded, reaped, started, stat_of, wait, wait_until,
};

/// A deadline the tests expect to pass: the work is held by a gate.
const PASSES: Duration = Duration::from_millis(100);

fn triple(x: u64) -> u64 {
    x * 3
}

/// Returns once the gate file exists.
fn hold(gate: String) -> u64 {
    await_file(&gate);
    7
}

/// Ignores SIGTERM, says so by creating `ready`, then waits for `gate`.
fn ignore_sigterm_then_hold((ready, gate): (String, String)) -> u64 {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code and touches no memory of ours.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    std::fs::write(&ready, b"").expect("create the ready file");
    await_file(&gate);
    7
}

fn process_pool(grace: Duration) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .prefetch(1)
        .terminate_grace(grace)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

fn wait_running<T>(f: &Future<T>) {
    wait_until("the task running", || f.running());
}

/// The worker has been reaped.
fn assert_gone(pid: u32) {
    assert!(reaped(pid), "worker {pid} not reaped: {:?}", stat_of(pid));
}

/// On a one-worker pool: a task held running (by a gate that is never
/// opened) and one queued behind it, the worker's pid, and the gate.
fn one_running_one_queued(
    pool: &ProcessPoolExecutor,
) -> (Future<u64>, Future<u64>, Vec<u32>, FileGate) {
    let never = FileGate::new("never");
    let running = pool.submit(hold, never.arg());
    let queued = pool.submit(triple, 1);
    wait_running(&running);
    (running, queued, pool.worker_pids(), never)
}

/// What a hard stop leaves: the running task failed naming `why`, the
/// queued one cancelled, and the pool refusing work.
fn assert_stopped(
    pool: &ProcessPoolExecutor,
    running: &Future<u64>,
    queued: &Future<u64>,
    why: &str,
) {
    assert_stopped_because(running, why);
    assert_eq!(queued.result(Some(HANG)), Err(Error::Cancelled));
    assert_eq!(pool.submit(triple, 1).into_result(), Err(Error::Shutdown));
}

/// `shutdown(wait = true)` returns (under the hang guard) and every worker
/// in `pids` has been reaped.
fn shut_down_and_reaped(pool: ProcessPoolExecutor, pids: Vec<u32>, what: &str) {
    guarded(what, move || pool.shutdown(true, false));
    pids.into_iter().for_each(assert_gone);
}

fn assert_stopped_because(f: &Future<u64>, what: &str) {
    match f.result(Some(HANG)) {
        Err(Error::Broken { reason, .. }) => assert!(reason.contains(what), "{reason}"),
        other => panic!("expected Broken naming {what}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Thread pool

#[test]
fn pp8_thread_pool_shutdown_within_finishes_when_the_work_ends_in_time() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let futures: Vec<Future<u64>> = (0..20).map(|i| pool.submit(triple, i)).collect();
    assert_eq!(pool.shutdown_within(HANG, false), ShutdownOutcome::Finished);
    assert_eq!(pool.live_workers(), 0);
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result(Some(Duration::ZERO)), Ok(&(i as u64 * 3)));
    }
}

/// Threads cannot be stopped from outside: at the deadline the running task
/// goes on in the background and its future still resolves; with
/// `cancel_futures` the queued one is cancelled at once.
#[test]
fn pp8_thread_pool_shutdown_within_times_out_and_the_running_task_still_resolves() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (running, release) = started(&pool, 5u64);
    let queued = pool.spawn(|| 6u64);
    assert_eq!(
        pool.shutdown_within(PASSES, true),
        ShutdownOutcome::TimedOut
    );
    assert!(queued.cancelled());
    assert!(!running.done());
    assert_eq!(pool.submit(triple, 1).into_result(), Err(Error::Shutdown));
    release.send(()).unwrap();
    assert_eq!(wait(running), Ok(5));
    let p = pool.clone();
    guarded("shutdown(wait) after the deadline", move || {
        p.shutdown(true, false)
    });
    assert_eq!(pool.live_workers(), 0);
}

/// A task that calls `shutdown_within` on its own pool waits for every
/// worker but its own, as `shutdown(wait = true)` does, instead of waiting
/// out its deadline for itself.
#[test]
fn pp8_shutdown_within_from_a_task_of_the_pool_does_not_wait_for_itself() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let p = pool.clone();
    let f = pool.spawn(move || p.shutdown_within(HANG, false));
    assert_eq!(wait(f), Ok(ShutdownOutcome::Finished));
}

/// Through `Arc<dyn Executor>` and a `ShutdownGuard`, the pool's own
/// implementation runs (it waits), not the trait's default (which cannot).
#[test]
fn pp8_shutdown_within_through_dyn_executor_and_guard_is_the_pool_s_own() {
    let ex: Arc<dyn Executor> = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let f = ex.submit(triple, 2);
    assert_eq!(ex.shutdown_within(HANG, false), ShutdownOutcome::Finished);
    assert_eq!(f.result(Some(Duration::ZERO)), Ok(&6));

    let guard = ShutdownGuard::new(ThreadPoolExecutor::new(1).unwrap());
    let g = guard.submit(triple, 3);
    assert_eq!(
        Executor::shutdown_within(&guard, HANG, false),
        ShutdownOutcome::Finished
    );
    assert_eq!(g.result(Some(Duration::ZERO)), Ok(&9));
}

/// The trait's provided method, for executors that cannot wait with a
/// deadline: it shuts down and says it did not see the work end.
#[test]
fn pp8_default_shutdown_within_returns_timed_out_without_waiting() {
    let manual = Manual::default();
    assert_eq!(
        manual.shutdown_within(HANG, false),
        ShutdownOutcome::TimedOut
    );
}

// ---------------------------------------------------------------------------
// Process pool

#[test]
fn pp8_process_pool_shutdown_within_finishes_when_the_work_ends_in_time() {
    let pool = process_pool(HANG);
    let futures: Vec<Future<u64>> = (0..20).map(|i| pool.submit(triple, i)).collect();
    assert_eq!(pool.shutdown_within(HANG, false), ShutdownOutcome::Finished);
    assert!(pool.worker_pids().is_empty());
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result(Some(Duration::ZERO)), Ok(&(i as u64 * 3)));
    }
}

/// At the deadline the workers get SIGTERM: the running task fails with
/// `Broken` naming the deadline, the queued one is cancelled, and no worker
/// is left.
#[test]
fn pp8_process_pool_terminates_its_workers_at_the_deadline() {
    let pool = process_pool(HANG);
    let (running, queued, pids, _never) = one_running_one_queued(&pool);
    assert_eq!(
        pool.shutdown_within(PASSES, false),
        ShutdownOutcome::Terminated
    );
    assert_stopped(&pool, &running, &queued, "shutdown_within() deadline");
    assert!(pool.worker_pids().is_empty());
    pids.into_iter().for_each(assert_gone);
}

/// A worker whose task ignores SIGTERM is SIGKILLed once the grace period
/// ends (the escalation PP8 asks for).
#[test]
fn pp8_process_pool_kills_a_worker_that_outlives_the_terminate_grace() {
    let pool = process_pool(PASSES);
    let ready = FileGate::new("ready");
    let never = FileGate::new("never");
    let running = pool.submit(ignore_sigterm_then_hold, (ready.arg(), never.arg()));
    wait_until("the task ignoring SIGTERM", || ready.is_open());
    let pids = pool.worker_pids();
    assert_eq!(pool.shutdown_within(PASSES, false), ShutdownOutcome::Killed);
    assert_stopped_because(&running, "shutdown_within() deadline");
    shut_down_and_reaped(pool, pids, "shutdown(wait) after the kill");
}

/// CPython 3.14's `terminate_workers` (S14 with SIGTERM): running tasks fail
/// with `Broken`, queued ones are cancelled, submits are refused, and the
/// workers are reaped.
#[test]
fn s14_terminate_workers_fails_running_cancels_queued_and_stops_the_pool() {
    let pool = process_pool(HANG);
    let (running, queued, pids, _never) = one_running_one_queued(&pool);
    pool.terminate_workers();
    assert_stopped(&pool, &running, &queued, "terminate_workers()");
    shut_down_and_reaped(pool, pids, "shutdown(wait) after terminate");
}

/// SIGTERM is a request: a task that handles it and finishes delivers its
/// result, and its worker then exits like any other at shutdown.
#[test]
fn s14_a_task_that_survives_terminate_workers_delivers_its_result() {
    let pool = process_pool(HANG);
    let ready = FileGate::new("ready");
    let gate = FileGate::new("gate");
    let running = pool.submit(ignore_sigterm_then_hold, (ready.arg(), gate.arg()));
    wait_until("the task ignoring SIGTERM", || ready.is_open());
    let pids = pool.worker_pids();
    pool.terminate_workers();
    gate.open();
    assert_eq!(running.result(Some(HANG)), Ok(&7));
    shut_down_and_reaped(pool, pids, "shutdown(wait) after terminate");
}
