//! `Pool::join_timeout` (pebble's `join(timeout)`, L13): `Error::Timeout`
//! while the pool's work is not over, and the work goes on; otherwise what
//! `join` does, with `join`'s errors (MP23).
//!
//! Thread-pool tasks are held at a gate the test opens. Short timeouts
//! expire only on held tasks; long ones are hang guards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use concurrent_futures::{Error, Pool, ThreadPool};

concurrent_futures::process_pool_test_worker!();

const HANG: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(20);

/// A latch for one test's tasks.
struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    const fn new() -> Gate {
        Gate {
            open: Mutex::new(false),
            cond: Condvar::new(),
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cond.notify_all();
    }

    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let _ = self.cond.wait_timeout_while(open, HANG, |open| !*open);
    }
}

static CLOSED_GATE: Gate = Gate::new();
static TERMINATED_GATE: Gate = Gate::new();

fn held_until_closed_gate_opens(x: u64) -> u64 {
    CLOSED_GATE.wait();
    x
}

static TERMINATED_TASK_STARTED: AtomicBool = AtomicBool::new(false);

fn held_until_terminated_gate_opens(x: u64) -> u64 {
    TERMINATED_TASK_STARTED.store(true, Ordering::SeqCst);
    TERMINATED_GATE.wait();
    x
}

fn double(x: u64) -> u64 {
    x * 2
}

fn threads() -> Pool {
    ThreadPool::new(2).unwrap().into_pool()
}

#[test]
fn l13_mp23_join_timeout_on_a_running_pool_is_refused_like_join() {
    let pool = threads();
    let refused = pool.join_timeout(HANG);
    assert!(
        matches!(&refused, Err(Error::InvalidCall(m)) if m.contains("still running")),
        "{refused:?}"
    );
}

#[test]
fn l13_join_timeout_of_a_closed_pool_with_work_left_is_timeout_and_the_work_goes_on() {
    let pool = threads();
    let held = pool.apply_async(held_until_closed_gate_opens, 7).unwrap();
    pool.close();
    assert_eq!(
        pool.join_timeout(SHORT),
        Err(Error::Timeout { waited: SHORT })
    );
    assert!(!held.ready(), "the work goes on");
    CLOSED_GATE.open();
    assert_eq!(pool.join_timeout(HANG), Ok(()));
    assert_eq!(held.get(Some(Duration::ZERO)), Ok(&7));
}

#[test]
fn l13_join_timeout_after_terminate_waits_for_tasks_still_running_on_threads() {
    let pool = threads();
    let running = pool
        .apply_async(held_until_terminated_gate_opens, 1)
        .unwrap();
    // Started: a terminate cannot stop it, only fail its result.
    let started = std::time::Instant::now();
    while !TERMINATED_TASK_STARTED.load(Ordering::SeqCst) {
        assert!(started.elapsed() < HANG, "the task never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    pool.terminate();
    assert!(
        running.get(Some(HANG)).is_err(),
        "terminate failed its result"
    );
    assert_eq!(
        pool.join_timeout(SHORT),
        Err(Error::Timeout { waited: SHORT }),
        "the task still runs on its thread"
    );
    TERMINATED_GATE.open();
    assert_eq!(pool.join_timeout(HANG), Ok(()));
}

#[test]
fn l13_join_timeout_of_a_finished_process_pool_returns_ok() {
    let pool = Pool::builder()
        .processes(2)
        .test_harness()
        .build()
        .expect("a pool builds");
    let results = pool.map(double, 0..10u64).unwrap();
    assert_eq!(results, (0..10).map(|x| x * 2).collect::<Vec<_>>());
    pool.close();
    assert_eq!(pool.join_timeout(HANG), Ok(()));
}

/// `(gate file, x)` → `x`, once the gate file exists (a gate a process
/// worker sees as well as a thread).
fn held_until_file_exists((gate, x): (String, u64)) -> u64 {
    let began = std::time::Instant::now();
    while !std::path::Path::new(&gate).exists() && began.elapsed() < HANG {
        std::thread::sleep(Duration::from_millis(2));
    }
    x
}

/// `join_timeout` stops nothing: the tasks of an `imap` still running on
/// a closed process pool go on and deliver (it used to shut the pool down
/// with `shutdown_within`, whose deadline stopped the workers, and to
/// answer `Ok`). Found by review.
#[test]
fn l13_join_timeout_with_imap_tasks_running_on_processes_is_timeout_and_they_finish() {
    let gate = std::env::temp_dir().join(format!("cf-join-timeout-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let pool = Pool::builder()
        .processes(2)
        .test_harness()
        .build()
        .expect("a pool builds");
    let path = gate.to_string_lossy().into_owned();
    let inputs: Vec<(String, u64)> = (0..2).map(|x| (path.clone(), x)).collect();
    let mut results = pool.imap(held_until_file_exists, inputs).unwrap();
    pool.close();
    assert_eq!(
        pool.join_timeout(SHORT),
        Err(Error::Timeout { waited: SHORT }),
        "the imap's tasks still run"
    );
    std::fs::write(&gate, b"open").unwrap();
    assert_eq!(results.next_timeout(HANG), Ok(Some(Ok(0))));
    assert_eq!(results.next_timeout(HANG), Ok(Some(Ok(1))));
    assert_eq!(pool.join_timeout(HANG), Ok(()));
    let _ = std::fs::remove_file(&gate);
}
