//! Stopping a worker stops the processes its task started (CONFORMANCE.md
//! L6: loky kills the workers' process trees). A worker that exits on its
//! own leaves them alone.
//!
//! Each task starts a shell running `sleep 1000; true`: a child of the
//! worker (the shell) and a grandchild (the sleep), and writes both pids to
//! a file before it waits. The tests wait, under the hang guard, for both
//! to be gone.

use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{FileGate, HANG, KillOnDrop, await_file, is_alive, stat_of, wait, wait_until};

const SLEEP: &str = "sleep 1000; true";
/// Ignores SIGTERM, and so does its sleep (an ignored signal stays ignored
/// across `exec`).
const SLEEP_IGNORING_SIGTERM: &str = "trap '' TERM; sleep 1000; true";

/// Starts `sh -c script`, waits for the shell's child, writes "shell sleep"
/// to `ready` (whole, by a rename), then waits for `gate`.
fn start_tree_then_hold((script, ready, gate): (String, String, String)) -> u32 {
    let shell = start_tree(&script);
    let sleep = child_of(shell);
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("{shell} {sleep}")).expect("write the pids");
    std::fs::rename(&tmp, &ready).expect("publish the pids");
    await_file(&gate);
    shell
}

/// Starts the shell and returns its pid at once.
fn start_tree_and_return(_: ()) -> u32 {
    start_tree(SLEEP)
}

fn start_tree(script: &str) -> u32 {
    std::process::Command::new("sh")
        .args(["-c", script])
        // Nothing of the test's: a shell left behind by a failing test must
        // not hold the harness's output open.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sh runs")
        .id()
}

/// The one child of `parent` (waiting for it to appear).
fn child_of(parent: u32) -> u32 {
    let mut child = None;
    wait_until("the shell's child", || {
        child = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|&p| stat_of(p).is_some_and(|(_, ppid)| ppid == parent));
        child.is_some()
    });
    child.unwrap()
}

/// Submits a task that starts `script` and holds; returns its future, the
/// pids of its shell and sleep, and a guard that kills both if the test
/// fails.
fn task_with_a_tree(
    submit: impl FnOnce((String, String, String)) -> concurrent_futures::Future<u32>,
    script: &str,
) -> (
    concurrent_futures::Future<u32>,
    [u32; 2],
    KillOnDrop,
    FileGate,
) {
    let (ready, never) = (FileGate::new("ready"), FileGate::new("never"));
    let f = submit((script.to_owned(), ready.arg(), never.arg()));
    wait_until("the task's pids", || ready.is_open() || f.done());
    assert!(!f.done(), "the task ended before its tree was up: {f:?}");
    let pids: Vec<u32> = std::fs::read_to_string(ready.arg())
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let pids = [pids[0], pids[1]];
    (f, pids, KillOnDrop(pids.to_vec()), never)
}

fn assert_stopped(pids: &[u32]) {
    for &pid in pids {
        wait_until(&format!("process {pid} stopped"), || !is_alive(pid));
    }
}

fn one_worker() -> concurrent_futures::ProcessPoolBuilder {
    ProcessPoolExecutor::builder().max_workers(1).test_harness()
}

#[test]
fn l6_kill_workers_stops_the_processes_a_task_started() {
    let pool = one_worker().build().unwrap();
    let (f, pids, _cleanup, _gate) =
        task_with_a_tree(|arg| pool.submit(start_tree_then_hold, arg), SLEEP);
    pool.kill_workers();
    assert!(matches!(wait(f), Err(Error::Broken { .. })));
    assert_stopped(&pids);
}

#[test]
fn l6_a_task_timeout_stops_the_processes_the_task_started() {
    let pool = one_worker().build().unwrap();
    // Long enough for the task to start its tree on a loaded machine; the
    // test waits for the timeout rather than racing it.
    let (f, pids, _cleanup, _gate) = task_with_a_tree(
        |arg| pool.submit_with_timeout(start_tree_then_hold, arg, Duration::from_secs(3)),
        SLEEP,
    );
    assert!(matches!(wait(f), Err(Error::TaskTimeout { .. })));
    assert_stopped(&pids);
}

#[test]
fn l6_cancel_in_a_kill_on_cancel_pool_stops_the_processes_the_task_started() {
    let pool = one_worker().kill_on_cancel(true).build().unwrap();
    let (f, pids, _cleanup, _gate) =
        task_with_a_tree(|arg| pool.submit(start_tree_then_hold, arg), SLEEP);
    assert!(f.cancel());
    assert_stopped(&pids);
}

#[test]
fn l6_terminate_workers_sends_sigterm_to_the_processes_a_task_started() {
    let pool = one_worker().build().unwrap();
    let (f, pids, _cleanup, _gate) =
        task_with_a_tree(|arg| pool.submit(start_tree_then_hold, arg), SLEEP);
    pool.terminate_workers();
    assert!(matches!(f.result(Some(HANG)), Err(Error::Broken { .. })));
    assert_stopped(&pids);
}

/// The worker dies of SIGTERM at once, but its shell and sleep ignore it:
/// they belong to init by the time the grace period ends, and only the tree
/// found at SIGTERM time can still reach them with SIGKILL.
#[test]
fn l6_shutdown_within_kills_descendants_that_outlive_sigterm_after_their_worker_died() {
    let pool = one_worker()
        .terminate_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let (f, pids, _cleanup, _gate) = task_with_a_tree(
        |arg| pool.submit(start_tree_then_hold, arg),
        SLEEP_IGNORING_SIGTERM,
    );
    assert_eq!(
        pool.shutdown_within(Duration::from_millis(100), false),
        concurrent_futures::ShutdownOutcome::Killed
    );
    assert!(matches!(f.result(Some(HANG)), Err(Error::Broken { .. })));
    assert_stopped(&pids);
}

/// Only a stop the pool decides on reaches the tree: a worker that exits
/// at shutdown leaves running what its task started (a daemon, say).
#[test]
fn l6_a_worker_that_exits_on_its_own_leaves_its_task_s_processes_alone() {
    let pool = one_worker().build().unwrap();
    let shell = wait(pool.submit(start_tree_and_return, ())).unwrap();
    let sleep = child_of(shell);
    let _cleanup = KillOnDrop(vec![sleep, shell]);
    pool.shutdown(true, false);
    assert!(
        is_alive(shell) && is_alive(sleep),
        "the task's processes died with its worker"
    );
}
