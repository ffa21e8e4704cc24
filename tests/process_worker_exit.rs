//! How worker processes end: a worker the pool shuts down runs its exit
//! handlers to the end (and one stuck in them, or in a flush of stdout
//! whose lock a task's thread holds, is killed after `terminate_grace`),
//! and a worker dies with a SIGKILLed parent even after its initializer
//! or a task dropped privileges (which makes the kernel forget
//! `PR_SET_PDEATHSIG`). Found by review (L6, DESIGN "no child process
//! outlives its pool, nor its parent if the parent is killed"). Nothing
//! is timed but the hang guards.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(20);
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
            Instant::now() < deadline,
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

/// One worker, told to exit, SIGKILLed half a second after it closed its
/// pipes if it has not ended by then.
fn one_worker_with_a_short_grace() -> concurrent_futures::ProcessPoolBuilder {
    concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .terminate_grace(Duration::from_millis(500))
        .test_harness()
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
    let pool = one_worker_with_a_short_grace().build().unwrap();
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
    let pool = one_worker_with_a_short_grace().build().unwrap();
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
    let pool = one_worker_with_a_short_grace()
        .max_tasks_per_child(1)
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

const SLOW_STDOUT_HELPER: &str = "CF_TEST_WORKER_EXIT_SLOW_STDOUT_HELPER";

/// Task: prints `text` without a newline (it stays in the worker's
/// line-buffered stdout until a flush).
fn print_tail(text: String) -> usize {
    print!("{text}");
    text.len()
}

#[test]
#[ignore = "helper, run by a_tasks_unterminated_output_survives_a_slow_stdout_on_shutdown_and_retirement"]
fn helper_slow_stdout() {
    if std::env::var_os(SLOW_STDOUT_HELPER).is_none() {
        return;
    }
    // The reader of our stdout (a pager, a paused terminal, a slow
    // consumer) is behind: the pipe is full, as a burst of output leaves it.
    static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::thread::spawn(|| {
        let buf = [b'.'; 4096];
        for _ in 0..32 {
            // SAFETY: writes from a live buffer to fd 1.
            let n = unsafe { libc::write(1, buf.as_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            WRITTEN.fetch_add(n as usize, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // Full once the writes stop going through.
    let mut last = usize::MAX;
    common::wait_until("stdout's pipe is full", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = WRITTEN.load(std::sync::atomic::Ordering::SeqCst);
        let full = now == last && now >= 32 * 1024;
        last = now;
        full
    });
    eprintln!("helper: the pipe is full");
    let retiring = concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .test_harness()
        .build()
        .unwrap();
    let plain = common::pool(1);
    use concurrent_futures::ExecutorExt;
    let r = retiring.submit(print_tail, "<RETIRE-TAIL>".to_string());
    assert_eq!(common::wait(r), Ok(13));
    let s = plain.submit(print_tail, "<SHUTDOWN-TAIL>".to_string());
    assert_eq!(common::wait(s), Ok(15));
    eprintln!("helper: shutting down");
    plain.shutdown(true, false);
    retiring.shutdown(true, false);
    eprintln!("helper: shut down");
}

/// L6: what a task printed without a final newline reaches the parent's
/// stdout when the worker exits, on `shutdown(wait = true)` and on
/// retirement (`max_tasks_per_child`), also when stdout's reader is a few
/// seconds behind (a pager, a terminal paused with Ctrl-S, a slow
/// pipeline stage): the worker flushes with its pipes open for as long as
/// the write takes; only the wait for stdout's lock is bounded. (A first
/// fix of the held lock bounded the whole flush, and the parent then
/// killed the worker after `terminate_grace`, losing the text; found by
/// review.)
#[test]
fn a_tasks_unterminated_output_survives_a_slow_stdout_on_shutdown_and_retirement() {
    use std::io::{BufRead, Read};
    let mut cmd = common::helper_command("helper_slow_stdout", SLOW_STDOUT_HELPER);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the helper");
    let pid = child.id() as i32;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut err = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let go = line.contains("helper: shutting down");
                err.push(line);
                if go {
                    break;
                }
            }
            Err(_) => {
                // SAFETY: kill() takes integers; `pid` is our unreaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = child.wait();
                panic!("hang guard: the helper never shut down; stderr: {err:?}");
            }
        }
    }
    // The consumer is three seconds behind (not a measurement: what a
    // slow reader does).
    std::thread::sleep(Duration::from_secs(3));
    let mut stdout = child.stdout.take().unwrap();
    let (otx, orx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = otx.send(out);
    });
    let Ok(out) = orx.recv_timeout(Duration::from_secs(60)) else {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
        panic!("hang guard: the helper's stdout never ended");
    };
    let status = child.wait().unwrap();
    err.extend(rx.try_iter());
    let out = String::from_utf8_lossy(&out);
    let lost: Vec<_> = ["<RETIRE-TAIL>", "<SHUTDOWN-TAIL>"]
        .into_iter()
        .filter(|m| !out.contains(m))
        .collect();
    assert!(
        status.success(),
        "helper failed ({status}); stderr: {err:?}"
    );
    assert!(
        lost.is_empty(),
        "lost from stdout: {lost:?} (a worker printed it without a newline and exited \
         while stdout's reader was behind); helper stderr: {err:?}"
    );
}
