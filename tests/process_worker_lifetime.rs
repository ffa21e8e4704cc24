//! How long a process-pool worker lives: `idle_timeout` (CONFORMANCE.md
//! L4, loky: "Idle workers exit after `timeout` s and are respawned on
//! demand") and `max_memory_per_child` (L5: a worker whose memory grew past
//! a limit is replaced).
//!
//! No test measures time: each waits for a state (workers gone, a result)
//! under the hang guard. The idle timeouts are short so that the tests
//! are quick, and the tasks that must outlive one are held by a gate.

use std::collections::HashSet;
use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, Future, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{FileGate, HANG, pid_after_gate, reaped, stat_of, wait, wait_until};

const IDLE: Duration = Duration::from_millis(100);

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn idle_pool(workers: usize, idle: Duration) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .idle_timeout(idle)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

fn pids_of(futures: Vec<Future<u32>>) -> HashSet<u32> {
    futures.into_iter().map(|f| wait(f).unwrap()).collect()
}

#[test]
fn l4_idle_workers_exit_after_the_idle_timeout_and_are_not_replaced() {
    let pool = idle_pool(2, IDLE);
    let used = pids_of((0..20).map(|_| pool.submit(getpid, ())).collect());
    wait_until("the idle workers exiting", || pool.worker_pids().is_empty());
    // Nothing is queued, so nothing is started again: a few idle periods
    // later there are still no workers.
    std::thread::sleep(IDLE * 3);
    assert!(pool.worker_pids().is_empty(), "{:?}", pool.worker_pids());
    for pid in used {
        assert!(
            reaped(pid),
            "worker {pid} was not reaped: {:?}",
            stat_of(pid)
        );
    }
}

#[test]
fn l4_workers_come_back_on_demand_after_idling_out() {
    let pool = idle_pool(2, IDLE);
    let before = pids_of(vec![pool.submit(getpid, ())]);
    wait_until("the idle workers exiting", || pool.worker_pids().is_empty());
    let after = pids_of((0..10).map(|_| pool.submit(getpid, ())).collect());
    assert!(before.is_disjoint(&after), "{before:?} {after:?}");
    pool.shutdown(true, false);
}

/// Workers start for queued work only: none at `build`, one for one task.
#[test]
fn l4_a_pool_with_an_idle_timeout_starts_one_worker_per_task_waiting() {
    let pool = idle_pool(4, HANG);
    std::thread::sleep(Duration::from_millis(200));
    assert!(pool.worker_pids().is_empty(), "{:?}", pool.worker_pids());
    assert_eq!(wait(pool.submit(getpid, ())).map(|_| ()), Ok(()));
    assert_eq!(pool.worker_pids().len(), 1);
    // Two tasks held at once need a second worker, and no more.
    let gate = FileGate::new("two");
    let held: Vec<Future<u32>> = (0..2)
        .map(|_| pool.submit(pid_after_gate, gate.arg()))
        .collect();
    wait_until("both tasks running", || held.iter().all(Future::running));
    gate.open();
    assert_eq!(pids_of(held).len(), 2);
    assert_eq!(pool.worker_pids().len(), 2);
}

/// The idle clock runs only while a worker has no task: a task longer than
/// the idle timeout is not cut short.
#[test]
fn l4_a_task_longer_than_the_idle_timeout_runs_to_the_end() {
    let pool = idle_pool(1, IDLE);
    let gate = FileGate::new("long");
    let f = pool.submit(pid_after_gate, gate.arg());
    wait_until("the task running", || f.running());
    std::thread::sleep(IDLE * 3);
    let pid = pool.worker_pids();
    gate.open();
    assert_eq!(wait(f).map(|p| vec![p]), Ok(pid));
}

#[test]
fn l4_a_zero_idle_timeout_is_refused() {
    let e = ProcessPoolExecutor::builder()
        .idle_timeout(Duration::ZERO)
        .test_harness()
        .build()
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig(ref m) if m.contains("idle_timeout")),
        "{e}"
    );
}

// ------------------------------------------------------------------ L5 --

const MIB: u64 = 1 << 20;

/// Leaks `mib` MiB, every page touched (so resident), and returns the pid.
fn leak_mib(mib: u64) -> u32 {
    let bytes = vec![1u8; (mib * MIB) as usize];
    std::mem::forget(std::hint::black_box(bytes));
    std::process::id()
}

fn memory_capped_pool(limit: u64) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_memory_per_child(limit)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

#[test]
fn l5_a_worker_over_max_memory_per_child_is_replaced_after_its_task() {
    let pool = memory_capped_pool(96 * MIB);
    // The first result is always checked: this worker is over at once.
    let bloated = wait(pool.submit(leak_mib, 160)).unwrap();
    let next = wait(pool.submit(getpid, ())).unwrap();
    assert_ne!(bloated, next, "the bloated worker still serves");
    wait_until("the bloated worker reaped", || reaped(bloated));
}

#[test]
fn l5_a_worker_under_max_memory_per_child_keeps_serving() {
    let pool = memory_capped_pool(512 * MIB);
    let pids = pids_of((0..20).map(|_| pool.submit(leak_mib, 1)).collect());
    assert_eq!(pids.len(), 1, "{pids:?}");
}

#[test]
fn l5_a_zero_max_memory_per_child_is_refused() {
    let e = ProcessPoolExecutor::builder()
        .max_memory_per_child(0)
        .test_harness()
        .build()
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig(ref m) if m.contains("max_memory_per_child")),
        "{e}"
    );
}
