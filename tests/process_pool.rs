//! ProcessPoolExecutor behaviour: results, crash isolation (CONFORMANCE.md
//! 1.11 D1-D16, decision 3), timeouts (L8), max_tasks_per_child (P4),
//! initializers (P5, L16), large and oversized values; values that will not
//! cross the pipe are in tests/process_codec.rs. Shutdown and
//! lifecycle tests (some with a helper process) are in
//! tests/process_lifecycle.rs.
//!
//! Every wait has a generous hang guard; no test asserts a duration.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, Executor, ExecutorExt, Future, MapOptions, ProcessPoolExecutor, ThreadPoolExecutor,
};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{
    FileGate, HANG, assert_worker_exited_with, assert_worker_killed_by, await_file, guarded,
    pid_after_gate, pool, segfault, wait, wait_at_most, wait_until,
};

// ---------------------------------------------------------------- tasks --

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

fn double(x: u64) -> u64 {
    x * 2
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn boom(n: u32) -> u32 {
    panic!("boom {n}")
}

fn abort_task(_: ()) -> u32 {
    std::process::abort()
}

fn segfault_task(_: ()) -> u32 {
    segfault()
}

fn exit_task(code: i32) -> u32 {
    std::process::exit(code)
}

// --------------------------------------------------------- file gates --

/// Aborts its worker once the test opens the gate at `gate`.
fn abort_when_opened(gate: String) -> u32 {
    await_file(&gate);
    std::process::abort()
}

/// Opens `started`, then returns its worker's pid once the test opens
/// `release`.
fn started_then_held((started, release): (String, String)) -> u32 {
    std::fs::write(&started, b"").expect("create the started file");
    await_file(&release);
    std::process::id()
}

// ------------------------------------------------------------- results --

#[test]
fn map_fib_through_dyn_executor_matches_the_thread_pool() {
    let procs: Arc<dyn Executor> = Arc::new(pool(2));
    let threads: Arc<dyn Executor> = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let opts = || MapOptions::new().timeout(Duration::from_secs(60));
    let from_procs: Vec<Result<u64, Error>> = procs.map_with(fib, 0..30u64, opts()).collect();
    let from_threads: Vec<Result<u64, Error>> = threads.map_with(fib, 0..30u64, opts()).collect();
    assert_eq!(from_procs.len(), 30);
    assert!(from_procs.iter().all(Result::is_ok), "{from_procs:?}");
    assert_eq!(from_procs, from_threads);
    assert_eq!(from_procs[29], Ok(514_229));
    procs.shutdown(true, false);
    threads.shutdown(true, false);
}

// ----------------------------------------------------- crash isolation --

/// D7 / decision 7: a panic is the task's error, with its message, and the
/// worker process survives it.
/// The parent's writer threads must not preempt the thread that submits
/// (see `outbox`): on Linux they run as `SCHED_BATCH`.
#[cfg(target_os = "linux")]
#[test]
fn writer_threads_do_not_preempt_the_submitting_thread() {
    let pool = pool(2);
    assert_eq!(pool.submit(double, 21).into_result(), Ok(42));
    // Each worker's writer thread starts after its handshake.
    let deadline = Instant::now() + HANG;
    while writer_thread_policies().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the writer threads never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A writer sets its own policy first thing, but it may not have run
    // yet when its name appears.
    while writer_thread_policies()
        .iter()
        .any(|&(_, p)| p != libc::SCHED_BATCH)
    {
        assert!(
            Instant::now() < deadline,
            "writer threads not SCHED_BATCH: {:?}",
            writer_thread_policies()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Executor::shutdown(&pool, true, false);
}

/// (thread id, scheduling policy) of this process's pool writer threads.
#[cfg(target_os = "linux")]
fn writer_thread_policies() -> Vec<(i32, i32)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap();
        // Threads come and go (other tests' pools) while we look.
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if name.starts_with("cf-process-writ") {
            // SAFETY: sched_getscheduler takes a plain thread id.
            let policy = unsafe { libc::sched_getscheduler(tid) };
            if policy >= 0 {
                found.push((tid, policy));
            }
        }
    }
    found
}

#[test]
fn d7_panicking_task_fails_with_its_message_and_the_worker_survives() {
    let pool = pool(1);
    let before = wait(pool.submit(getpid, ())).unwrap();
    match wait(pool.submit(boom, 3)) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "boom 3"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(wait(pool.submit(double, 21)), Ok(42));
    let after = wait(pool.submit(getpid, ())).unwrap();
    assert_eq!(before, after, "a panic must not cost the worker process");
}

/// P6 (CPython `test_traceback`: the remote exception with a
/// `_RemoteTraceback` cause): a task's panic reaches the parent with its
/// message intact and with the worker's backtrace text, captured when the
/// worker has backtraces enabled (here `RUST_LIB_BACKTRACE=1`, which does
/// not make the panic hook print it).
#[test]
fn p6_a_remote_panic_carries_its_message_and_the_workers_backtrace() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_env("RUST_LIB_BACKTRACE", "1")
        .test_harness()
        .build()
        .unwrap();
    match wait(pool.submit(boom, 6)) {
        Err(Error::Panicked {
            message,
            backtrace: Some(backtrace),
        }) => {
            assert_eq!(message, "boom 6");
            assert!(
                backtrace.contains("boom"),
                "the worker's backtrace should show the task: {backtrace}"
            );
        }
        other => panic!("expected Panicked with a backtrace, got {other:?}"),
    }
}

/// Submits `crash` among normal tasks; checks only `crash` fails (returning
/// its error) and that the next 100 tasks succeed.
fn only_the_crashing_task_fails(crash: impl FnOnce(&ProcessPoolExecutor) -> Future<u32>) -> Error {
    let pool = pool(2);
    let before: Vec<_> = (0..20u64).map(|i| pool.submit(double, i)).collect();
    let crashed = crash(&pool);
    let behind: Vec<_> = (20..40u64).map(|i| pool.submit(double, i)).collect();
    for (i, f) in (0..20u64).zip(before).chain((20..40u64).zip(behind)) {
        assert_eq!(wait(f), Ok(i * 2), "task {i} next to the crash");
    }
    let error = wait(crashed).expect_err("the crashing task must fail");
    let next: Vec<_> = (0..100u64).map(|i| pool.submit(double, i)).collect();
    for (i, f) in (0..100u64).zip(next) {
        assert_eq!(wait(f), Ok(i * 2), "task {i} after the crash");
    }
    error
}

#[test]
fn d5_abort_in_task_fails_only_that_task_with_sigabrt() {
    let e = only_the_crashing_task_fails(|p| p.submit(abort_task, ()));
    assert_worker_killed_by(&e, libc::SIGABRT);
}

#[test]
fn d5_segfault_in_task_fails_only_that_task_with_sigsegv() {
    let e = only_the_crashing_task_fails(|p| p.submit(segfault_task, ()));
    assert_worker_killed_by(&e, libc::SIGSEGV);
}

/// D6: `process::exit` in the task (CPython: SystemExit on the future) is
/// WorkerDied with the code.
/// P11: that exit is delivered to the task's own future and the pool stays
/// usable (the 100 tasks after it succeed).
#[test]
fn d6_exit_in_task_fails_only_that_task_with_its_exit_code() {
    let e = only_the_crashing_task_fails(|p| p.submit(exit_task, 3));
    assert_worker_exited_with(&e, 3);
    assert!(e.to_string().contains("exit code 3"), "{e}");
}

/// Decision 3 / P7 (CPython breaks the whole pool here): SIGKILL from
/// outside fails only the task the worker was running.
/// L10 / PP4: only that task fails, with WorkerDied carrying the worker's
/// pid and signal; a new worker is started and serves the next tasks.
#[test]
fn p7_sigkill_from_outside_fails_only_the_running_task() {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    let victim = pool.submit(sleep_ms, 120_000);
    let deadline = Instant::now() + HANG;
    while !victim.running() {
        assert!(Instant::now() < deadline, "the long task never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The only worker holds `victim` (it is running, i.e. sent to it).
    // SAFETY: kill() takes plain integers; `pid` is our own child (the
    // pool's worker), not yet reaped since it is still serving.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    match wait(victim) {
        Err(Error::WorkerDied {
            pid: died,
            signal,
            code,
            status,
        }) => {
            assert_eq!(died, pid);
            assert_eq!(signal, Some(libc::SIGKILL), "{status}");
            assert_eq!(code, None);
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    let next: Vec<_> = (0..100u64).map(|i| pool.submit(double, i)).collect();
    for (i, f) in (0..100u64).zip(next) {
        assert_eq!(wait(f), Ok(i * 2), "task {i} after the kill");
    }
    assert_ne!(wait(pool.submit(getpid, ())).unwrap(), pid);
}

/// L2 (loky `TerminatedWorkerError` names `SIGSEGV`, `EXIT(0)`): the
/// message of a dead worker's error says how it ended, the signal by number
/// and name or the exit code (even a clean 0), and names the worker's pid.
#[test]
fn l2_worker_died_error_names_the_signal() {
    let pool = pool(1);
    let cases = [
        (
            pool.submit(segfault_task, ()),
            format!("signal {} (SIGSEGV)", libc::SIGSEGV),
        ),
        (
            pool.submit(abort_task, ()),
            format!("signal {} (SIGABRT)", libc::SIGABRT),
        ),
        (pool.submit(exit_task, 0), "exit code 0".to_owned()),
    ];
    for (fut, how) in cases {
        let e = wait(fut).expect_err("the worker died under this task");
        let Error::WorkerDied { pid, .. } = &e else {
            panic!("expected WorkerDied, got {e:?}");
        };
        let text = e.to_string();
        assert!(text.contains(&how), "{how:?} missing from {text:?}");
        assert!(text.contains(&pid.to_string()), "pid missing from {text:?}");
    }
}

/// Any `prefetch` is taken: one larger than half of `usize::MAX` used to
/// overflow when a tiny task deepened the pipeline, killing the thread that
/// reads the worker's results (its task never resolved, and shutdown(wait)
/// waited for that reader forever). Found by review.
#[test]
fn a_prefetch_of_usize_max_serves_tiny_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .prefetch(usize::MAX)
        .test_harness()
        .build()
        .unwrap();
    let results: Vec<_> = (0..4).map(|i| pool.submit(double, i)).collect();
    for (i, f) in results.into_iter().enumerate() {
        assert_eq!(wait(f), Ok(2 * i as u64));
    }
    pool.shutdown(true, false);
}

/// Decision 3: tasks already sent to a worker behind the task that kills it
/// are sent again to its replacement, not failed.
#[test]
fn tasks_queued_behind_a_crash_on_the_same_worker_are_resent() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .prefetch(8)
        .test_harness()
        .build()
        .unwrap();
    let crash = pool.submit(exit_task, 3);
    let behind: Vec<_> = (0..7).map(|_| pool.submit(getpid, ())).collect();
    let died = match wait(crash) {
        Err(Error::WorkerDied {
            pid, code: Some(3), ..
        }) => pid,
        other => panic!("expected WorkerDied with code 3, got {other:?}"),
    };
    for f in behind {
        let pid = wait(f).expect("a task queued behind the crash must run");
        assert_ne!(pid, died, "it ran after the crash, so in a new worker");
    }
}

/// D13 (CPython `test_shutdown_deadlock`): a worker that crashes while
/// `shutdown(wait = true)` is in progress does not hang the shutdown, and
/// its task fails with WorkerDied.
#[test]
fn d13_worker_crash_during_shutdown_wait_fails_its_task_and_shutdown_returns() {
    let pool = Arc::new(pool(2));
    let go = FileGate::new("d13");
    let crash = pool.submit(abort_when_opened, go.arg());
    wait_until("the crashing task to be sent to a worker", || {
        crash.running()
    });
    let (returned_tx, returned_rx) = mpsc::channel();
    let shutting_down = pool.clone();
    std::thread::spawn(move || {
        shutting_down.shutdown(true, false);
        let _ = returned_tx.send(());
    });
    // Shutdown has begun once submits are refused (those that win the race
    // just run).
    wait_until("shutdown(wait = true) to begin", || {
        matches!(pool.try_submit(double, 1), Err(Error::Shutdown))
    });
    assert_eq!(
        returned_rx.try_recv(),
        Err(mpsc::TryRecvError::Empty),
        "shutdown(wait = true) returned with a task still running"
    );
    go.open(); // the worker aborts now, during the shutdown
    returned_rx
        .recv_timeout(HANG)
        .expect("shutdown(wait = true) hung after a worker crashed");
    assert!(
        crash.done(),
        "shutdown(wait) returned before the task ended"
    );
    match wait(crash) {
        Err(Error::WorkerDied {
            signal: Some(libc::SIGABRT),
            ..
        }) => {}
        other => panic!("expected WorkerDied with SIGABRT, got {other:?}"),
    }
}

/// D15 (CPython `test_crash_big_data`, gh-94777): a worker that crashes
/// while a 32 MiB argument is on its way to it (sent behind the crashing
/// task, default prefetch) hangs nothing: the crashing task fails and the
/// big one is sent again, to the replacement, and succeeds.
#[test]
fn d15_crash_with_a_big_argument_in_flight_to_the_worker_resends_it() {
    const LEN: usize = 32 << 20;
    let pool = pool(1);
    let go = FileGate::new("d15");
    let crash = pool.submit(abort_when_opened, go.arg());
    let big = pool.submit(blob_len, vec![7u8; LEN]);
    wait_until("the big task to be sent to the worker", || big.running());
    go.open();
    match wait(crash) {
        Err(Error::WorkerDied {
            signal: Some(libc::SIGABRT),
            ..
        }) => {}
        other => panic!("expected WorkerDied with SIGABRT, got {other:?}"),
    }
    // A debug build encodes a Vec<u8> byte by byte: a longer guard.
    assert_eq!(wait_at_most(big, Duration::from_secs(180)), Ok(LEN));
    assert_eq!(wait(pool.submit(double, 4)), Ok(8));
}

/// P13 / D16 (CPython gh-105829: `submit` must not block when a pipe is
/// full): with the only worker held inside a task (so it reads nothing),
/// eight 256 KiB arguments (far more than the 64 KiB a pipe holds) and 100
/// small tasks are all submitted before the worker is released; then every
/// one of them completes.
#[test]
fn p13_submit_does_not_block_while_the_busy_workers_pipe_is_full() {
    const LEN: usize = 256 << 10;
    let pool = Arc::new(
        ProcessPoolExecutor::builder()
            .max_workers(1)
            .prefetch(8)
            .test_harness()
            .build()
            .unwrap(),
    );
    let started = FileGate::new("p13-started");
    let release = FileGate::new("p13-release");
    let held = pool.submit(started_then_held, (started.arg(), release.arg()));
    wait_until("the worker to start the holding task", || started.is_open());
    let (submitted_tx, submitted_rx) = mpsc::channel();
    let submitter = pool.clone();
    std::thread::spawn(move || {
        let big: Vec<_> = (0..8)
            .map(|_| submitter.submit(blob_len, vec![1u8; LEN]))
            .collect();
        let small: Vec<_> = (0..100u64).map(|i| submitter.submit(double, i)).collect();
        let _ = submitted_tx.send((big, small));
    });
    let (big, small) = submitted_rx
        .recv_timeout(HANG)
        .expect("submit blocked on the busy worker's full pipe");
    assert!(
        !held.done(),
        "the submits returned while the worker was held"
    );
    release.open();
    let pid = wait(held).unwrap();
    for f in big {
        assert_eq!(wait(f), Ok(LEN));
    }
    for (i, f) in (0..100u64).zip(small) {
        assert_eq!(wait(f), Ok(i * 2));
    }
    assert_eq!(wait(pool.submit(getpid, ())), Ok(pid), "nothing broke");
}

/// L12 / PP10: workers ignore SIGINT (Ctrl-C reaches the whole process
/// group; the parent decides what happens to its tasks): a SIGINT sent to a
/// worker busy with a task neither kills it nor stops the task.
#[test]
fn l12_sigint_to_a_busy_worker_does_not_stop_its_task() {
    let pool = pool(1);
    let pid = wait(pool.submit(getpid, ())).unwrap();
    let started = FileGate::new("l12-started");
    let release = FileGate::new("l12-release");
    let busy = pool.submit(started_then_held, (started.arg(), release.arg()));
    wait_until("the task to start in the worker", || started.is_open());
    // SAFETY: kill() takes plain integers; `pid` is the pool's only worker,
    // alive (not reaped) since it is running `busy`.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    release.open();
    assert_eq!(wait(busy), Ok(pid), "the task must end in the same worker");
}

// ------------------------------------------------------------ timeouts --

/// L8: past its limit the task fails with TaskTimeout, its worker is killed,
/// and the next task runs in a new process.
/// PP3: a per-task deadline that stops the running task (CPython's
/// `timeout=` only bounds the caller's wait).
#[test]
fn l8_submit_with_timeout_kills_and_replaces_the_worker() {
    let pool = pool(1);
    let first = wait(pool.submit(getpid, ())).unwrap();
    let limit = Duration::from_millis(300);
    let slow = pool.submit_with_timeout(sleep_ms, 120_000, limit);
    assert_eq!(wait(slow), Err(Error::TaskTimeout { limit }));
    assert_eq!(wait(pool.submit(double, 5)), Ok(10));
    let next = wait(pool.submit(getpid, ())).unwrap();
    assert_ne!(first, next, "the timed-out worker must have been replaced");
}

/// A one-worker pool whose every task has the time limit `limit`.
fn one_worker_with_task_timeout(limit: Duration) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .task_timeout(limit)
        .test_harness()
        .build()
        .unwrap()
}

#[test]
fn l8_builder_task_timeout_applies_to_every_task() {
    let limit = Duration::from_secs(2);
    let pool = one_worker_with_task_timeout(limit);
    let first = wait(pool.submit(getpid, ())).unwrap();
    assert_eq!(
        wait(pool.submit(sleep_ms, 120_000)),
        Err(Error::TaskTimeout { limit })
    );
    let next = wait(pool.submit(getpid, ())).unwrap();
    assert_ne!(first, next, "the timed-out worker must have been replaced");
    assert_eq!(wait(pool.submit(double, 7)), Ok(14));
}

/// Decision 4 / L8: the limit counts from the task's start, not from its
/// submit: a timed task that waits in the queue, behind a long untimed task,
/// for longer than its limit still runs to its end (in the same worker).
#[test]
fn l8_decision4_the_limit_counts_from_the_start_not_from_the_submit() {
    let pool = pool(1);
    let limit = Duration::from_secs(1);
    let first = pool.submit(sleep_ms, 1_500);
    let timed = pool.submit_with_timeout(sleep_ms, 50, limit);
    let pid = wait(first).unwrap();
    assert_eq!(
        wait(timed),
        Ok(pid),
        "timed out while queued: the limit counted from the submit"
    );
}

/// L11 (pebble `test_process_pool_map_timeout_chunks`, `_map_error`): with
/// a per-task limit, a chunked `map` applies it to each chunk: the chunk
/// that runs too long fails each of its items with TaskTimeout at their own
/// positions, the iteration goes on, and the chunks after it run in the
/// replacement worker. (The map's own timeout here is only a hang guard.)
#[test]
fn l11_task_timeout_applies_to_each_map_chunk_and_the_map_goes_on() {
    let limit = Duration::from_secs(3);
    let pool = one_worker_with_task_timeout(limit);
    let inputs = vec![1u64, 1, 120_000, 1, 1, 1];
    let options = MapOptions::new().chunksize(2).timeout(HANG);
    let out: Vec<Result<u32, Error>> = pool.map_with(sleep_ms, inputs, options).collect();
    assert_eq!(out.len(), 6, "{out:?}");
    assert_eq!(out[2], Err(Error::TaskTimeout { limit }), "{out:?}");
    assert_eq!(out[3], Err(Error::TaskTimeout { limit }), "{out:?}");
    let first = out[0].clone().expect("chunk 0 runs within the limit");
    assert_eq!(out[1], Ok(first), "{out:?}");
    let after = out[4].clone().expect("chunk 2 runs after the timeout");
    assert_eq!(out[5], Ok(after), "{out:?}");
    assert_ne!(first, after, "the timed-out worker was replaced");
}

// ------------------------------------------------- workers and init --

/// P4 / L15 (pebble `max_tasks`, `test_process_pool_future_limit`): with
/// `max_tasks_per_child(2)` no worker runs more than 2 tasks, and workers
/// are replaced to run the rest.
#[test]
fn p4_max_tasks_per_child_replaces_workers() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .max_tasks_per_child(2)
        .test_harness()
        .build()
        .unwrap();
    let futures: Vec<_> = (0..10).map(|_| pool.submit(getpid, ())).collect();
    let mut tasks_per_pid = HashMap::<u32, usize>::new();
    for f in futures {
        *tasks_per_pid.entry(wait(f).unwrap()).or_default() += 1;
    }
    assert!(
        tasks_per_pid.values().all(|&n| n <= 2),
        "a worker ran more than 2 tasks: {tasks_per_pid:?}"
    );
    assert!(
        tasks_per_pid.len() >= 5,
        "10 tasks, 2 per child: {tasks_per_pid:?}"
    );
}

/// P4: with `max_tasks_per_child(2)` and one worker, tasks 1 and 2 share a
/// pid and task 3 runs in a new one (CPython `test_max_tasks_per_child`);
/// so on for every pair, even with all six submitted at once.
#[test]
fn p4_a_worker_runs_n_tasks_and_task_n_plus_1_gets_a_new_pid() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(2)
        .test_harness()
        .build()
        .unwrap();
    let futures: Vec<_> = (0..6).map(|_| pool.submit(getpid, ())).collect();
    let pids: Vec<u32> = futures.into_iter().map(|f| wait(f).unwrap()).collect();
    for pair in pids.chunks(2) {
        assert_eq!(pair[0], pair[1], "two tasks per worker: {pids:?}");
    }
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        3,
        "task 3 and task 5 start new workers: {pids:?}"
    );
}

/// P3 (CPython `test_idle_process_reuse_one`, `test_saturation`): all
/// `max_workers` workers start when the pool is built (before any submit,
/// like CPython's fork start and `multiprocessing.Pool`, not on demand as
/// with spawn), idle workers are reused (sequential tasks start no new
/// process), and a saturating burst runs on exactly `max_workers` of them.
#[test]
fn p3_workers_start_at_build_and_idle_ones_are_reused() {
    let pool = pool(2);
    wait_until("both workers to start with nothing submitted", || {
        pool.worker_pids().len() == 2
    });
    let workers: HashSet<u32> = pool.worker_pids().into_iter().collect();
    for _ in 0..20 {
        let pid = wait(pool.submit(getpid, ())).unwrap();
        assert!(workers.contains(&pid), "{pid} is not one of {workers:?}");
    }
    let burst: Vec<_> = (0..20).map(|_| pool.submit(sleep_ms, 5)).collect();
    let used: HashSet<u32> = burst.into_iter().map(|f| wait(f).unwrap()).collect();
    assert_eq!(used, workers, "a burst of 20 uses both workers, no others");
    let now: HashSet<u32> = pool.worker_pids().into_iter().collect();
    assert_eq!(now, workers, "no worker was added or replaced");
}

/// P3: two long tasks submitted while the workers are still starting run on
/// two workers. The first worker up must not take the second task ahead
/// (its pipeline) while the other worker, which could run it, starts.
#[test]
fn p3_tasks_submitted_while_workers_start_spread_over_them() {
    for _ in 0..3 {
        let pool = pool(2);
        let gate = FileGate::new("spread");
        let held: Vec<Future<u32>> = (0..2)
            .map(|_| pool.submit(pid_after_gate, gate.arg()))
            .collect();
        wait_until("both workers up", || pool.worker_pids().len() == 2);
        gate.open();
        let pids: HashSet<u32> = held.into_iter().map(|f| wait(f).unwrap()).collect();
        assert_eq!(pids.len(), 2, "both tasks ran on one worker");
    }
}

static SET_IN_THE_PARENT: AtomicBool = AtomicBool::new(false);

/// What a worker sees: the parent-only flag, and its own command line.
fn worker_view(_: ()) -> (bool, Vec<String>) {
    (
        SET_IN_THE_PARENT.load(Ordering::SeqCst),
        std::env::args().collect(),
    )
}

/// PP19 / decision 9: workers are this program started again (exec), never
/// a `fork()` of the threaded parent: a worker does not see memory the
/// parent changed before building the pool, and runs with the worker
/// command line, not the parent's.
#[test]
fn pp19_workers_are_re_executed_not_forked_from_the_parent() {
    SET_IN_THE_PARENT.store(true, Ordering::SeqCst);
    let pool = pool(1);
    let (seen, args) = wait(pool.submit(worker_view, ())).unwrap();
    assert!(
        !seen,
        "the worker shares the parent's memory, as a fork would"
    );
    assert!(
        args.iter().any(|a| a == "__concurrent_futures_worker"),
        "not started with the worker command line: {args:?}"
    );
}

static INITIALIZED: AtomicBool = AtomicBool::new(false);

fn set_initialized() {
    INITIALIZED.store(true, Ordering::SeqCst);
}

fn read_initialized(_: ()) -> (u32, bool) {
    (std::process::id(), INITIALIZED.load(Ordering::SeqCst))
}

/// P5 (first half): the initializer runs in every worker before its tasks.
#[test]
fn p5_initializer_effect_is_visible_in_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .max_tasks_per_child(3)
        .initializer(set_initialized)
        .test_harness()
        .build()
        .unwrap();
    let futures: Vec<_> = (0..12).map(|_| pool.submit(read_initialized, ())).collect();
    let mut pids = HashSet::new();
    for f in futures {
        let (pid, initialized) = wait(f).unwrap();
        assert!(
            initialized,
            "worker {pid} ran a task before its initializer"
        );
        pids.insert(pid);
    }
    assert!(pids.len() >= 4, "replacement workers ran it too: {pids:?}");
    assert!(
        !INITIALIZED.load(Ordering::SeqCst),
        "the initializer runs in workers, not in the parent"
    );
}

fn failing_initializer() {
    panic!("initializer fails on purpose")
}

/// P5 (second half), L16: a panicking initializer breaks the pool; queued
/// futures fail with Broken and later submits are refused.
#[test]
fn p5_l16_panicking_initializer_breaks_the_pool() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(failing_initializer)
        .test_harness()
        .build()
        .unwrap();
    let queued: Vec<_> = (0..5u64).map(|i| pool.submit(double, i)).collect();
    for f in queued {
        match wait(f) {
            Err(Error::Broken { reason, .. }) => {
                assert!(reason.contains("initializer fails on purpose"), "{reason}")
            }
            other => panic!("expected Broken, got {other:?}"),
        }
    }
    match pool.try_submit(double, 1) {
        Err(Error::Broken { .. }) => {}
        other => panic!("expected the submit to be refused as Broken, got {other:?}"),
    }
    assert!(matches!(
        wait(pool.submit(double, 1)),
        Err(Error::Broken { .. })
    ));
}

/// An initializer that works but takes a while (loading a model, warming a
/// cache).
fn loads_a_model() {
    std::thread::sleep(Duration::from_millis(1500));
}

/// P5: the pool breaks when an initializer fails, not when it is slow; as
/// in CPython it has no time limit. `startup_timeout` covered it: a working
/// initializer slower than that was killed three times and the pool broke,
/// with "expected Initialized, got None (signal 9 (SIGKILL))" (found by
/// review).
#[test]
fn p5_an_initializer_slower_than_startup_timeout_does_not_break_the_pool() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(loads_a_model)
        .startup_timeout(Duration::from_millis(300))
        .test_harness()
        .build()
        .unwrap();
    assert_eq!(wait(pool.submit(double, 3)), Ok(6));
}

fn exiting_initializer() {
    std::process::exit(3)
}

/// P5: a worker that exits in its initializer is a failed start; three
/// break the pool, and the reason says where it ended (it read "protocol
/// error: expected Initialized, got None").
#[test]
fn p5_workers_exiting_in_the_initializer_break_the_pool_saying_so() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(exiting_initializer)
        .test_harness()
        .build()
        .unwrap();
    match wait(pool.submit(double, 1)) {
        Err(Error::Broken { reason, .. }) => {
            assert!(reason.contains("initializer"), "{reason}");
            assert!(reason.contains("exit code 3"), "{reason}");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
}

/// An initializer that does not return in any test's lifetime (the worker
/// dies with the test binary if the test fails).
fn never_returns() {
    std::thread::sleep(Duration::from_secs(600));
}

fn hung_in_initializer() -> (ProcessPoolExecutor, concurrent_futures::Future<u64>) {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(never_returns)
        .startup_timeout(Duration::from_millis(200))
        .test_harness()
        .build()
        .unwrap();
    let f = pool.submit(double, 21);
    // Past startup_timeout (the old code killed the worker here): the
    // worker is still in its initializer and the task still queued.
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !f.done(),
        "the initializer has no time limit: {:?}",
        f.result(Some(Duration::ZERO))
    );
    (pool, f)
}

/// P5 (the initializer's docs: "one that never returns holds its worker
/// until `kill_workers` or a shutdown with a deadline"): both reach a
/// worker hung in its initializer, its queued task ends, and
/// `shutdown(wait = true)` then returns (found untested by review).
#[test]
fn p5_kill_workers_and_shutdown_within_reach_a_worker_hung_in_its_initializer() {
    let (pool, f) = hung_in_initializer();
    let pool = guarded("kill_workers, then shutdown(wait)", move || {
        pool.kill_workers();
        pool.shutdown(true, false);
        pool
    });
    assert!(f.result(Some(HANG)).is_err(), "{:?}", f.result(Some(HANG)));
    drop(pool);

    let (pool, f) = hung_in_initializer();
    let outcome = guarded("shutdown_within", move || {
        pool.shutdown_within(Duration::from_millis(100), false)
    });
    assert_ne!(outcome, concurrent_futures::ShutdownOutcome::Finished);
    assert!(f.result(Some(HANG)).is_err(), "{:?}", f.result(Some(HANG)));
}

// ------------------------------------------------------ large values --

fn checksum(data: &[u8]) -> u64 {
    // FNV-1a over 8-byte words (fast enough in debug, order-sensitive).
    data.chunks(8).fold(0xcbf2_9ce4_8422_2325, |h, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn reverse_blob(mut data: Vec<u8>) -> Vec<u8> {
    data.reverse();
    data
}

#[test]
fn hundred_megabyte_argument_and_result_round_trip() {
    const LEN: usize = 100 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let mut expected = data.clone();
    expected.reverse();
    let expected_sum = checksum(&expected);
    drop(expected);
    let pool = pool(1);
    // A debug build encodes a Vec<u8> byte by byte (a serde sequence): the
    // round trip takes seconds, so this wait gets a longer guard.
    let out = wait_at_most(pool.submit(reverse_blob, data), Duration::from_secs(180))
        .expect("100 MB round trip");
    assert_eq!(out.len(), LEN);
    assert_eq!(checksum(&out), expected_sum);
    drop(out);
    assert_eq!(wait(pool.submit(double, 4)), Ok(8));
}

fn blob(len: usize) -> Vec<u8> {
    vec![7; len]
}

fn blob_len(data: Vec<u8>) -> usize {
    data.len()
}

/// L14 (pebble `test_process_pool_pickling_error_result`): a result the
/// worker cannot send (over `max_frame_bytes`) fails only its own task,
/// with an error naming the limit; the pool serves on.
#[test]
fn result_over_max_frame_bytes_fails_only_that_task() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_frame_bytes(1 << 20)
        .test_harness()
        .build()
        .unwrap();
    let e = wait(pool.submit(blob, 2 << 20)).expect_err("a 2 MiB result over a 1 MiB limit");
    assert!(
        matches!(e, Error::Encode { .. } | Error::Protocol(_)),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_frame_bytes"), "{e}");
    assert_eq!(wait(pool.submit(blob, 1000)).map(|v| v.len()), Ok(1000));
    assert_eq!(wait(pool.submit(double, 2)), Ok(4));
}

#[test]
fn argument_over_max_frame_bytes_fails_only_that_task() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_frame_bytes(1 << 20)
        .test_harness()
        .build()
        .unwrap();
    let pid = wait(pool.submit(getpid, ())).unwrap();
    let e = wait(pool.submit(blob_len, vec![1; 2 << 20]))
        .expect_err("a 2 MiB argument over a 1 MiB limit");
    assert!(
        matches!(e, Error::Encode { .. } | Error::Protocol(_)),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_frame_bytes"), "{e}");
    assert_eq!(wait(pool.submit(blob_len, vec![1; 1000])), Ok(1000));
    assert_eq!(
        wait(pool.submit(getpid, ())),
        Ok(pid),
        "an argument refused in the parent need not cost the worker"
    );
}

// ------------------------------------------------------ load balance --

/// A pipeline deepened by a stream of tiny tasks must not pull a following
/// batch of long tasks onto one worker while the other idles: each worker
/// gets at most its fair share of what is outstanding (issue 4, fib on a
/// process pool).
#[test]
fn long_tasks_after_tiny_ones_are_shared_between_the_workers() {
    let pool = pool(2);
    // One worker is busy with a long task while a stream of tiny tasks
    // deepens the other's pipeline (up to 64 in flight): their depths differ.
    let long = pool.submit(sleep_ms, 300);
    let tiny: Vec<_> = (0..2_000u64).map(|i| pool.submit(double, i)).collect();
    for f in tiny {
        wait(f).unwrap();
    }
    wait(long).unwrap();
    let batch: Vec<_> = (0..16).map(|_| pool.submit(sleep_ms, 20)).collect();
    let mut per_worker = std::collections::HashMap::<u32, usize>::new();
    for f in batch {
        *per_worker.entry(wait(f).unwrap()).or_default() += 1;
    }
    assert_eq!(per_worker.len(), 2, "one worker ran all: {per_worker:?}");
    assert!(
        per_worker.values().all(|&n| n >= 6),
        "unfair split of 16 equal tasks: {per_worker:?}"
    );
}

fn describe_config(c: concurrent_futures::ExecutorConfig) -> String {
    c.to_string()
}

fn parse_config(s: String) -> concurrent_futures::ExecutorConfig {
    s.parse().unwrap()
}

/// `ExecutorConfig` is `Serialize + Deserialize`, so a task may take or
/// return one, on a process pool as on a thread pool (the same call site
/// for both). Its `Deserialize` read an untagged string-or-table, which
/// postcard, the wire format, cannot: both failed to decode there (found
/// by review).
#[test]
fn an_executor_config_crosses_to_a_worker_and_back() {
    use concurrent_futures::{ExecutorConfig, ExecutorKind};
    let config = ExecutorConfig {
        kind: ExecutorKind::Process,
        workers: Some(4),
    };
    let threads = ThreadPoolExecutor::new(1).unwrap();
    assert_eq!(
        threads.submit(describe_config, config).into_result(),
        Ok("process:4".to_string())
    );
    let pool = pool(1);
    assert_eq!(
        wait(pool.submit(describe_config, config)),
        Ok("process:4".to_string()),
        "as an argument"
    );
    assert_eq!(
        wait(pool.submit(parse_config, "thread:2".to_string())),
        Ok(ExecutorConfig {
            kind: ExecutorKind::Thread,
            workers: Some(2)
        }),
        "as a result"
    );
}
