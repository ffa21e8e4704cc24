//! Decision 10 for the process pool: an idle pool uses no CPU, neither in
//! its worker processes nor in its threads in the parent (readers blocked
//! on their pipes, writers and the supervisor on condition variables).
//!
//! The only test of its binary, so the `cf-process-*` threads counted are
//! this pool's.

use std::time::Duration;

use concurrent_futures::{ExecutorExt, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{wait, wait_until};

fn identity(x: u64) -> u64 {
    x
}

/// utime + stime, in clock ticks, from a `/proc/.../stat` line.
fn ticks(stat: &str) -> u64 {
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The CPU ticks of the worker processes and of this process's pool
/// threads, and how many pool threads there are.
fn pool_ticks(workers: &[u32]) -> (u64, usize) {
    let mut total = 0;
    for pid in workers {
        total += ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    }
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("cf-process") {
            threads += 1;
            total += ticks(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
        }
    }
    (total, threads)
}

#[test]
fn decision10_an_idle_process_pool_uses_no_cpu() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .test_harness()
        .build()
        .expect("a pool builds");
    // Some work first, so that every thread has been awake.
    let futures: Vec<_> = (0..200).map(|i| pool.submit(identity, i)).collect();
    for f in futures {
        wait(f).unwrap();
    }
    wait_until("both workers serve", || pool.worker_pids().len() == 2);
    let workers = pool.worker_pids();
    std::thread::sleep(Duration::from_millis(50));
    let (before, threads) = pool_ticks(&workers);
    assert!(threads >= 5, "supervisor, 2 readers, 2 writers: {threads}");
    std::thread::sleep(Duration::from_secs(1));
    let (after, _) = pool_ticks(&workers);
    // A few ticks charged just before the first read can show up after it
    // (accounting is per tick); anything polling would gain ~100 a second.
    assert!(
        after - before <= 3,
        "the idle pool used {} ticks of CPU in 1 s",
        after - before
    );
    pool.shutdown(true, false);
}
