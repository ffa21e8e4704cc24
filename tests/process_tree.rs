//! Stopping a worker stops the processes its task started (CONFORMANCE.md
//! L6: loky kills the workers' process trees). A worker that exits on its
//! own leaves them alone.
//!
//! Each task starts `sh -c 'sleep 1000; true'`: a child of the worker (the
//! shell) and a grandchild (the sleep). The tests find both through
//! `/proc` and wait, under the hang guard, for both to be gone.

use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{FileGate, HANG, await_file, wait, wait_until};

/// Starts the shell, writes its pid to `ready`, then waits for `gate`.
fn start_tree_then_hold((ready, gate): (String, String)) -> u32 {
    let shell = start_tree();
    std::fs::write(&ready, shell.to_string()).expect("write the ready file");
    await_file(&gate);
    shell
}

/// Starts the shell and returns its pid at once.
fn start_tree_and_return(_: ()) -> u32 {
    start_tree()
}

fn start_tree() -> u32 {
    std::process::Command::new("sh")
        .args(["-c", "sleep 1000; true"])
        // Nothing of the test's: a shell left behind by a failing test must
        // not hold the harness's output open.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sh runs")
        .id()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// The shell's pid (from the ready file) and its sleep's.
fn the_tree(ready: &FileGate) -> (u32, u32) {
    // The file appears (empty) before its pid is written: wait for both.
    let read = || -> Option<u32> {
        std::fs::read_to_string(ready.arg())
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    wait_until("the task's shell", || read().is_some());
    let shell = read().unwrap();
    (shell, child_of(shell))
}

/// The one child of `parent` (waiting for it to appear).
fn child_of(parent: u32) -> u32 {
    let mut child = None;
    wait_until("the shell's sleep", || {
        child = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|&p| parent_of(p) == Some(parent));
        child.is_some()
    });
    child.unwrap()
}

/// Kills the processes still alive when dropped, so that a failing test
/// leaves no `sleep` behind.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|&&p| alive(p)) {
            // SAFETY: kill() takes two integers and touches no memory.
            // `pid` was alive a moment ago, a process this test's task
            // started (it sleeps 1000 s: it has not exited and been
            // replaced since).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn assert_stopped(pids: &[u32]) {
    for &pid in pids {
        wait_until(&format!("process {pid} stopped"), || !alive(pid));
    }
}

fn one_worker() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

#[test]
fn l6_kill_workers_stops_the_processes_a_task_started() {
    let pool = one_worker();
    let (ready, never) = (FileGate::new("ready"), FileGate::new("never"));
    let f = pool.submit(start_tree_then_hold, (ready.arg(), never.arg()));
    let (shell, sleep) = the_tree(&ready);
    let _cleanup = KillOnDrop(vec![sleep, shell]);
    pool.kill_workers();
    assert!(matches!(wait(f), Err(Error::Broken { .. })));
    assert_stopped(&[shell, sleep]);
}

#[test]
fn l6_a_task_timeout_stops_the_processes_the_task_started() {
    let pool = one_worker();
    let (ready, never) = (FileGate::new("ready"), FileGate::new("never"));
    let f = pool.submit_with_timeout(
        start_tree_then_hold,
        (ready.arg(), never.arg()),
        Duration::from_millis(300),
    );
    let (shell, sleep) = the_tree(&ready);
    let _cleanup = KillOnDrop(vec![sleep, shell]);
    assert!(matches!(wait(f), Err(Error::TaskTimeout { .. })));
    assert_stopped(&[shell, sleep]);
}

#[test]
fn l6_terminate_workers_sends_sigterm_to_the_processes_a_task_started() {
    let pool = one_worker();
    let (ready, never) = (FileGate::new("ready"), FileGate::new("never"));
    let f = pool.submit(start_tree_then_hold, (ready.arg(), never.arg()));
    let (shell, sleep) = the_tree(&ready);
    let _cleanup = KillOnDrop(vec![sleep, shell]);
    pool.terminate_workers();
    assert!(matches!(f.result(Some(HANG)), Err(Error::Broken { .. })));
    assert_stopped(&[shell, sleep]);
}

/// Only a stop the pool decides on reaches the tree: a worker that exits
/// at shutdown leaves running what its task started (a daemon, say).
#[test]
fn l6_a_worker_that_exits_on_its_own_leaves_its_task_s_processes_alone() {
    let pool = one_worker();
    let shell = wait(pool.submit(start_tree_and_return, ())).unwrap();
    let sleep = child_of(shell);
    let _cleanup = KillOnDrop(vec![sleep, shell]);
    pool.shutdown(true, false);
    assert!(
        alive(shell) && alive(sleep),
        "the task's processes died with its worker"
    );
}
