//! How worker processes end: a worker the pool shuts down runs its exit
//! handlers to the end (and one stuck in them, or in a flush of stdout
//! whose lock a task's thread holds, is killed after `terminate_grace`),
//! and a worker dies with a SIGKILLed parent even after its initializer
//! or a task dropped privileges (which makes the kernel forget
//! `PR_SET_PDEATHSIG`). Found by review (L6, DESIGN "no child process
//! outlives its pool, nor its parent if the parent is killed"). Nothing
//! is timed but the hang guards.

use std::sync::OnceLock;
use std::time::Duration;

use concurrent_futures::ExecutorExt;

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{guarded, wait};

/// Where the worker's exit handler leaves its marks (set by the task).
static EXIT_MARKS: OnceLock<String> = OnceLock::new();

/// A C exit handler, as a C library (or LLVM's profile runtime writing
/// `.profraw` coverage files) registers: it runs inside `exit()`, after
/// the worker closed its pipes.
extern "C" fn slow_exit_handler() {
    if let Some(base) = EXIT_MARKS.get() {
        let _ = std::fs::write(format!("{base}.begin"), b"");
        // Some work at exit (flushing a buffer, writing a file).
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::write(format!("{base}.end"), b"");
    }
}

/// Registers [`slow_exit_handler`] in the worker; returns its pid.
fn register_exit_handler(base: String) -> u32 {
    EXIT_MARKS.set(base).expect("one registration per worker");
    // SAFETY: atexit takes a plain `extern "C" fn()` that lives for the
    // whole process.
    let r = unsafe { libc::atexit(slow_exit_handler) };
    assert_eq!(r, 0, "atexit");
    std::process::id()
}

/// A worker told to shut down exits through `exit()`, which runs the
/// process's exit handlers (C `atexit`, stdio flushes, coverage files);
/// the parent lets it finish, for up to `terminate_grace`, instead of
/// SIGKILLing it as soon as its result pipe closes. After
/// `shutdown(wait = true)` the worker is reaped, so either its handler ran
/// to its end or it was killed in the middle: no timing involved.
#[test]
fn a_worker_shut_down_cleanly_runs_its_exit_handlers_to_the_end() {
    let base = std::env::temp_dir()
        .join(format!("cf-test-atexit-{}", std::process::id()))
        .to_str()
        .unwrap()
        .to_owned();
    let (begin, end) = (format!("{base}.begin"), format!("{base}.end"));
    let _ = std::fs::remove_file(&begin);
    let _ = std::fs::remove_file(&end);
    // A grace far longer than the handler: only a kill that does not wait
    // for it can cut the handler short.
    let pool = concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .terminate_grace(common::HANG)
        .test_harness()
        .build()
        .unwrap();
    let pid = wait(pool.submit(register_exit_handler, base.clone())).expect("task runs");
    guarded("shutdown(wait = true)", move || pool.shutdown(true, false));
    assert!(
        common::reaped(pid),
        "worker {pid} not reaped after shutdown"
    );
    let began = std::path::Path::new(&begin).exists();
    let ended = std::path::Path::new(&end).exists();
    let _ = std::fs::remove_file(&begin);
    let _ = std::fs::remove_file(&end);
    assert!(began, "the worker's exit handler never began");
    assert!(
        ended,
        "worker {pid} was killed in the middle of its exit handler \
         (began, never ended): a clean shutdown SIGKILLs an exiting worker"
    );
}

// ------------------------------------------------------------------------
// A worker whose initializer drops privileges outlives a SIGKILLed parent.

/// Marks this binary, started again by a test, as a helper.
const HELPER_ENV: &str = "CF_TEST_WORKER_EXIT_HELPER";

/// A common initializer for workers that must not run as root: drop to
/// `nobody`. The kernel clears the parent-death signal
/// (`PR_SET_PDEATHSIG`) on a change of credentials.
fn drop_privileges() {
    // SAFETY: setgid/setuid take integers and touch no memory of ours.
    unsafe {
        assert_eq!(libc::setgid(65534), 0, "setgid");
        assert_eq!(libc::setuid(65534), 0, "setuid");
    }
}

fn long_task(secs: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(secs));
    secs
}

/// Helper side: hands the test the pids of `pool`'s workers (through the
/// file the test named), then waits to be killed.
fn hand_over_worker_pids(pids: &[u32]) {
    let out = std::env::var(HELPER_ENV).expect("a helper");
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, pids.join(" ")).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    std::thread::sleep(Duration::from_secs(120)); // killed long before
}

#[test]
#[ignore = "helper, run by a_worker_that_dropped_privileges_dies_with_its_sigkilled_parent"]
fn helper_unprivileged_workers_then_sleep() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let pool = concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(drop_privileges)
        .test_harness()
        .build()
        .expect("pool");
    let busy = pool.submit(long_task, 90);
    common::wait_until("the long task to start", || busy.running());
    hand_over_worker_pids(&pool.worker_pids());
}

fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// A quick task that ends by dropping to `nobody` (a task that needs root
/// for one step, then gives it up).
fn drop_privileges_task(_: ()) -> u32 {
    drop_privileges();
    std::process::id()
}

#[test]
#[ignore = "helper, run by a_worker_whose_quick_task_dropped_privileges_dies_with_its_sigkilled_parent"]
fn helper_quick_privilege_drop_then_long_task() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let pool = common::pool(1);
    // Long enough that a worker looking now and then between tasks looks
    // right after it, and so not again for a while.
    let warm = pool.submit(sleep_ms, 50);
    let drop = pool.submit(drop_privileges_task, ());
    let _long = pool.submit(long_task, 90);
    let pid = wait(warm).expect("warm-up task");
    assert_eq!(wait(drop), Ok(pid), "same worker");
    hand_over_worker_pids(&[pid]);
}

/// Runs the helper `name` (as root only: its workers drop privileges),
/// SIGKILLs it once it handed over its workers' pids, and checks that
/// every one of those workers dies within a hang guard. A worker killed
/// with its parent is gone at once; one that is not runs its 90 s task.
fn workers_die_with_their_sigkilled_parent(name: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    let out = std::env::temp_dir().join(format!("cf-test-pdeath-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut helper = common::helper_command(name, HELPER_ENV)
        .env(HELPER_ENV, &out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the helper");
    let mut text = String::new();
    common::wait_until("the helper's worker pids", || {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        !text.is_empty() || matches!(helper.try_wait(), Ok(Some(_)))
    });
    let _ = std::fs::remove_file(&out);
    let pids: Vec<u32> = text.split(' ').filter_map(|p| p.parse().ok()).collect();
    let _cleanup = common::KillOnDrop(pids.clone());
    assert!(!pids.is_empty(), "the helper ended without a worker");
    helper.kill().expect("SIGKILL the helper");
    helper.wait().expect("reap the helper");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| common::is_alive(p))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "20 s after SIGKILL of their parent, workers that dropped privileges \
             live on: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// DESIGN: "no child process outlives its pool (nor its parent, if the
/// parent is killed)", for workers whose initializer dropped privileges.
#[test]
fn a_worker_that_dropped_privileges_dies_with_its_sigkilled_parent() {
    workers_die_with_their_sigkilled_parent("helper_unprivileged_workers_then_sleep");
}

/// The same for a worker whose quick task dropped privileges right after
/// another task, then ran a long one: a look between tasks now and then
/// missed it (found by review); the worker's watcher of its parent does
/// not.
#[test]
fn a_worker_whose_quick_task_dropped_privileges_dies_with_its_sigkilled_parent() {
    workers_die_with_their_sigkilled_parent("helper_quick_privilege_drop_then_long_task");
}

static STUCK_AT_EXIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An exit handler that does not end (for 60 s, so that a failing run
/// leaves nothing behind for long): a C library joining a thread that
/// never ends, say.
extern "C" fn stuck_exit_handler() {
    if STUCK_AT_EXIT.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn register_stuck_exit_handler(_: ()) -> u32 {
    STUCK_AT_EXIT.store(true, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: atexit takes a plain `extern "C" fn()` living for the whole
    // process.
    assert_eq!(unsafe { libc::atexit(stuck_exit_handler) }, 0);
    std::process::id()
}

/// A worker told to exit gets up to `terminate_grace` to end on its own,
/// then it is SIGKILLed: one stuck in its exit handlers does not keep
/// `shutdown(wait = true)` waiting (for 60 s here). (A parent-watch
/// thread, tried first, polled the result pipe's write end and so kept the
/// stream open until the process died; found by review.)
#[test]
fn a_worker_stuck_in_its_exit_handlers_is_killed_after_terminate_grace() {
    let pool = concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .terminate_grace(Duration::from_millis(500))
        .test_harness()
        .build()
        .unwrap();
    let pid = pool
        .submit(register_stuck_exit_handler, ())
        .result(Some(common::HANG))
        .cloned()
        .expect("task runs");
    let returned = common::ended_within_hang_guard(move || pool.shutdown(true, false)).is_some();
    if !returned {
        // Clean up the stuck worker.
        // SAFETY: kill takes integers.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    println!("shutdown(wait = true) returned within the hang guard: {returned}");
    assert!(
        returned,
        "worker {pid}, stuck at exit, was never killed: shutdown hangs"
    );
}

/// Leaves a thread that holds this process's stdout lock for `secs` (a
/// progress printer that keeps `stdout().lock()` for its whole loop, say);
/// returns the worker's pid once the lock is held.
fn leave_a_thread_holding_stdout(secs: u64) -> u32 {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _out = std::io::stdout().lock();
        let _ = held_tx.send(());
        std::thread::sleep(Duration::from_secs(secs));
    });
    held_rx.recv().expect("the thread took the lock");
    std::process::id()
}

/// S3, L6: a worker told to exit whose stdout lock a thread of its task
/// holds does not keep `shutdown(wait = true)` waiting: it waits a moment
/// for the flush with its pipes open, then closes them, and the parent's
/// `terminate_grace` applies (it flushed with its pipes open, for as long
/// as the lock was held: 90 s here; found by review).
#[test]
fn s3_shutdown_wait_returns_when_a_tasks_thread_holds_the_workers_stdout_lock() {
    let pool = concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .terminate_grace(Duration::from_millis(500))
        .test_harness()
        .build()
        .unwrap();
    let pid = wait(pool.submit(leave_a_thread_holding_stdout, 90)).expect("task runs");
    let _cleanup = common::KillOnDrop(vec![pid]);
    let returned = common::ended_within_hang_guard(move || pool.shutdown(true, false)).is_some();
    assert!(
        returned,
        "shutdown(wait = true) still waits after the hang guard: worker {pid} \
         is stuck flushing stdout (its lock held by a thread its task left)"
    );
}

/// P4: the same stuck exit with `max_tasks_per_child(1)`: the worker
/// retired after its task is replaced, and the next task runs.
#[test]
fn p4_a_retired_worker_whose_stdout_lock_is_held_does_not_stall_the_pool() {
    let pool = concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .terminate_grace(Duration::from_millis(500))
        .test_harness()
        .build()
        .unwrap();
    let pid = wait(pool.submit(leave_a_thread_holding_stdout, 90)).expect("task runs");
    let _cleanup = common::KillOnDrop(vec![pid]);
    let next = pool.submit(sleep_ms, 0);
    match next.result(Some(common::HANG)) {
        Ok(&p) => assert_ne!(p, pid, "a retired worker ran a second task"),
        Err(e) => panic!(
            "the task after a retired worker (pid {pid}, its stdout lock held) \
             did not run within the hang guard: {e:?}"
        ),
    }
}
