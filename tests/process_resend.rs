//! Tasks sent ahead to a process-pool worker that dies before starting
//! them: they never ran, so the pool sends them again (P7, "a crash fails
//! only the task that ran"), unless it can no longer run them. Each test
//! holds a running task on a worker with a second task sent ahead behind
//! it, then makes the running task end its worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{FileGate, HANG, await_file, guarded, wait_at_most, wait_until};

/// Names (through `worker_env`) the directory [`first_ok_then_fail`] uses.
const INIT_DIR: &str = "CF_RESEND_INIT_DIR";

/// A pool of `workers` whose workers run `initializer`, told `dir` through
/// [`INIT_DIR`] (a `fn` item: the pool refuses fn pointers).
fn pool_with_initializer(
    workers: usize,
    dir: &TempDir,
    initializer: impl Fn() + Copy + Send + Sync + 'static,
) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .test_harness()
        .worker_env(INIT_DIR, &dir.0)
        .initializer(initializer)
        .build()
        .unwrap()
}

/// Whether this worker is the first of the test's pool to ask: the one
/// that creates `<dir>/first`.
fn is_first_worker(dir: &str) -> bool {
    let first = std::path::Path::new(dir).join("first");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(first)
        .is_ok()
}

/// Initializer: the first worker to run it succeeds; every later one waits
/// until `<dir>/break` exists, then panics, which breaks the pool.
fn first_ok_then_fail() {
    let dir = std::env::var(INIT_DIR).expect("INIT_DIR is set");
    if is_first_worker(&dir) {
        return;
    }
    await_file(&format!("{dir}/break"));
    panic!("a later initializer fails on purpose");
}

/// Task: waits for the gate, then ends its worker without a result.
fn exit_after_gate(gate: String) -> u32 {
    await_file(&gate);
    std::process::exit(7);
}

fn double(x: u64) -> u64 {
    x * 2
}

/// Removes the test's directory when the test ends, however it ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("cf-resend-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broken pool starts no worker, so a task sent ahead to a worker that
/// dies after the pool broke cannot be sent again: it fails with the
/// reason the pool broke, as the tasks queued at that moment did. (It used
/// to go back on the queue, where nothing ever took or failed it: a future
/// that never resolved, even after `shutdown(wait = true)` returned.)
#[test]
fn p7_a_task_sent_ahead_to_a_worker_dying_after_the_pool_broke_fails_as_broken() {
    let dir = TempDir::new("broken");
    let pool = pool_with_initializer(2, &dir, first_ok_then_fail);
    // Worker A serves; worker B waits in its initializer.
    wait_until("worker A serves", || pool.worker_pids().len() == 1);
    let crash = FileGate::new("resend-broken");
    let head = pool.submit(exit_after_gate, crash.arg());
    let behind = pool.submit(double, 21);
    let queued = pool.submit(double, 1);
    // A holds `head` and `behind`; `queued` waits for B.
    wait_until("`behind` is sent to A", || behind.running());
    std::fs::write(dir.0.join("break"), b"").unwrap();
    let e = wait_at_most(queued, HANG).unwrap_err();
    assert!(matches!(e, Error::Broken { .. }), "queued: {e:?}");
    crash.open();
    common::assert_worker_exited_with(&wait_at_most(head, HANG).unwrap_err(), 7);
    match wait_at_most(behind, HANG) {
        Err(Error::Broken { reason, .. }) => {
            assert!(reason.contains("initializer"), "{reason}");
        }
        other => panic!("expected the pool's Broken error, got {other:?}"),
    }
    let pool = std::sync::Arc::new(pool);
    guarded("shutdown(wait = true)", move || pool.shutdown(true, false));
}

/// An argument whose `Serialize` works once (at submit) and panics after.
/// A task's encoded argument goes with its first send, so sending it again
/// encodes it again.
#[derive(Debug)]
struct SerializesOnce(u64);

static ENCODES: AtomicUsize = AtomicUsize::new(0);

impl serde::Serialize for SerializesOnce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if ENCODES.fetch_add(1, Ordering::SeqCst) > 0 {
            panic!("SerializesOnce serialized twice");
        }
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SerializesOnce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(SerializesOnce)
    }
}

fn take(x: SerializesOnce) -> u64 {
    x.0
}

/// The second encoding runs the user's `Serialize` on a pool thread, under
/// the pool's lock: a panic there fails only that task, with
/// `Error::Encode`, and the pool goes on. (It used to kill the reader
/// thread of the new worker: the task never resolved, the worker was never
/// reaped and `shutdown(wait = true)` hung.)
#[test]
fn p7_a_serialize_panicking_when_a_task_is_sent_again_fails_only_that_task() {
    let pool = std::sync::Arc::new(common::pool(1));
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    let crash = FileGate::new("resend-encode");
    let head = pool.submit(exit_after_gate, crash.arg());
    let behind = pool.submit(take, SerializesOnce(5));
    wait_until("`behind` is sent ahead", || behind.running());
    crash.open();
    common::assert_worker_exited_with(&wait_at_most(head, HANG).unwrap_err(), 7);
    match wait_at_most(behind, HANG) {
        Err(Error::Encode { message, .. }) => {
            assert!(message.contains("serialized twice"), "{message}");
        }
        other => panic!("expected Error::Encode, got {other:?}"),
    }
    assert_eq!(wait_at_most(pool.submit(double, 4), HANG).unwrap(), 8);
    guarded("shutdown(wait = true)", move || pool.shutdown(true, false));
}

/// What the pool sends again is the task's own argument: a task sent ahead
/// to a worker that crashes runs on the replacement with the same input.
#[test]
fn p7_a_task_sent_ahead_to_a_crashed_worker_runs_on_its_replacement() {
    let pool = common::pool(1);
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    let crash = FileGate::new("resend-ok");
    let head = pool.submit(exit_after_gate, crash.arg());
    let behind = pool.submit(double, 21);
    wait_until("`behind` is sent ahead", || behind.running());
    crash.open();
    common::assert_worker_exited_with(&wait_at_most(head, HANG).unwrap_err(), 7);
    assert_eq!(wait_at_most(behind, Duration::from_secs(30)).unwrap(), 42);
}

/// Initializer: the first worker to run it goes on; every later one waits
/// until `<dir>/go` exists (a replacement held in its start).
fn first_ok_then_wait() {
    let dir = std::env::var(INIT_DIR).expect("INIT_DIR is set");
    if is_first_worker(&dir) {
        return;
    }
    await_file(&format!("{dir}/go"));
}

/// A one-worker pool whose replacement worker waits in its initializer
/// until `<dir>/go` exists; `head` (ending its worker when `crash` opens)
/// runs, and `behind` is sent ahead to the same worker. Returns once the
/// worker died and `behind` is back in the pool's queue, waiting for the
/// held replacement.
fn behind_a_crash(dir: &TempDir) -> (ProcessPoolExecutor, concurrent_futures::Future<u64>) {
    let pool = pool_with_initializer(1, dir, first_ok_then_wait);
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    let crash = FileGate::new("resend-pending");
    let head = pool.submit(exit_after_gate, crash.arg());
    let behind = pool.submit(double, 21);
    wait_until("`behind` is sent ahead", || behind.running());
    crash.open();
    common::assert_worker_exited_with(&wait_at_most(head, HANG).unwrap_err(), 7);
    (pool, behind)
}

/// X7 holds while a task sits in a worker's pipe: it reports `running()`
/// and `cancel()` refuses it. Taken back unstarted when that worker died,
/// it is a queued task again: not running, and `cancel()` cancels it
/// (it kept RUNNING, and could be neither cancelled nor told apart from a
/// task that had started; found by review).
#[test]
fn x7_a_task_taken_back_from_a_dead_worker_is_pending_again_and_cancels() {
    let dir = TempDir::new("pending-again");
    let (pool, behind) = behind_a_crash(&dir);
    assert!(!behind.running(), "taken back, it has not started");
    assert!(behind.cancel(), "a queued task cancels (X1)");
    assert!(behind.cancelled());
    assert_eq!(behind.result(Some(HANG)), Err(Error::Cancelled));
    std::fs::write(dir.0.join("go"), b"").unwrap();
    assert_eq!(wait_at_most(pool.submit(double, 4), HANG).unwrap(), 8);
    let pool = std::sync::Arc::new(pool);
    guarded("shutdown(wait = true)", move || pool.shutdown(true, false));
}

/// S5, W3: `shutdown(cancel_futures = true)` cancels exactly what had not
/// started, a task taken back from a dead worker included. It failed with
/// `Error::Cancelled` as if it had run: `cancelled()` was false, and
/// `wait(FirstException)` took it for a failure (found by review).
#[test]
fn s5_cancel_futures_cancels_a_task_taken_back_from_a_dead_worker() {
    let dir = TempDir::new("sweep");
    let (pool, behind) = behind_a_crash(&dir);
    pool.shutdown(false, true);
    assert!(
        behind.cancelled(),
        "a task that never started is cancelled (S5)"
    );
    let sets = concurrent_futures::wait(
        [&behind],
        Some(HANG),
        concurrent_futures::ReturnWhen::FirstException,
    );
    assert_eq!(sets.done.len(), 1);
    assert_eq!(behind.exception(Some(HANG)), Err(Error::Cancelled), "R4");
    std::fs::write(dir.0.join("go"), b"").unwrap();
    let pool = std::sync::Arc::new(pool);
    guarded("shutdown(wait = true)", move || pool.shutdown(true, false));
}

/// Appends "pid id" to `path`, then returns `id`, or exits the worker with
/// code 3 for ids divisible by 9.
fn logged(args: (String, u64)) -> u64 {
    use std::io::Write;
    let (path, id) = args;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap();
    // One write, so lines of two workers never interleave.
    f.write_all(format!("{} {id}\n", std::process::id()).as_bytes())
        .unwrap();
    drop(f);
    if id % 9 == 0 {
        std::process::exit(3);
    }
    id
}

/// Decision 3, P4, L4 together (each is tested alone elsewhere; this one
/// counts the runs of every task, found missing by review): submits from four threads while workers
/// die (every ninth task exits), are recycled (`max_tasks_per_child(3)`
/// with a deep `prefetch`) and retire when idle. Every task runs at most
/// once, a task that exits fails with `WorkerDied`, every other one ends
/// with its value, and no worker runs more than its 3 tasks.
#[test]
fn decision3_p4_submits_from_many_threads_while_workers_die_and_recycle() {
    let dir = std::env::temp_dir().join(format!("cf-review-dispatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log").to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&path);
    let pool = std::sync::Arc::new(
        ProcessPoolExecutor::builder()
            .max_workers(2)
            .max_tasks_per_child(3)
            .prefetch(4)
            .idle_timeout(std::time::Duration::from_millis(5))
            .test_harness()
            .build()
            .unwrap(),
    );
    let per_thread = 30u64;
    let results = guarded("the submits", {
        let pool = pool.clone();
        let path = path.clone();
        move || {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let pool = pool.clone();
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let futures: Vec<_> = (0..per_thread)
                            .map(|i| {
                                let id = 1 + t * per_thread + i;
                                (id, pool.submit(logged, (path.clone(), id)))
                            })
                            .collect();
                        futures
                            .into_iter()
                            .map(|(id, f)| (id, f.into_result()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        }
    });
    pool.shutdown(true, false);
    let log = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut runs = std::collections::HashMap::<u64, usize>::new();
    let mut per_pid = std::collections::HashMap::<u64, usize>::new();
    for line in log.lines() {
        let (pid, id) = line.split_once(' ').unwrap();
        *runs.entry(id.parse().unwrap()).or_default() += 1;
        *per_pid.entry(pid.parse().unwrap()).or_default() += 1;
    }
    for (id, r) in &results {
        assert_eq!(
            runs.get(id).copied(),
            Some(1),
            "task {id} ran {:?} times ({r:?})",
            runs.get(id)
        );
        if id % 9 == 0 {
            assert!(
                matches!(r, Err(Error::WorkerDied { code: Some(3), .. })),
                "task {id}: {r:?}"
            );
        } else {
            assert_eq!(r, &Ok(*id), "task {id}");
        }
    }
    for (pid, n) in per_pid {
        assert!(
            n <= 3,
            "worker {pid} ran {n} tasks, more than max_tasks_per_child(3)"
        );
    }
}

/// Map task: item `(0, gate)` ends its worker once `gate` opens; item
/// `(1, marker)` creates `marker` (it ran) and returns.
fn crash_or_mark((kind, path): (u8, String)) -> u32 {
    if kind == 0 {
        await_file(&path);
        std::process::exit(7);
    }
    std::fs::write(&path, b"").unwrap();
    1
}

/// A one-worker `kill_on_cancel` pool whose replacement worker waits in
/// its initializer until `<dir>/go` exists.
fn kill_on_cancel_pool(dir: &TempDir) -> ProcessPoolExecutor {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .prefetch(2)
        .kill_on_cancel(true)
        .test_harness()
        .worker_env(INIT_DIR, &dir.0)
        .initializer(first_ok_then_wait)
        .build()
        .unwrap();
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    pool
}

/// M7 (and M4) on a `kill_on_cancel` pool: a task taken back unstarted
/// from a dead worker is pending again, stoppable or not, so a dropped map
/// cancels it; it stayed RUNNING on such a pool and ran afterwards on the
/// replacement (found by review of the pending-again fix).
#[test]
fn m7_a_dropped_map_cancels_its_task_taken_back_from_a_dead_worker_on_a_kill_on_cancel_pool() {
    let dir = TempDir::new("map-kill-on-cancel");
    let pool = kill_on_cancel_pool(&dir);
    let crash = FileGate::new("review-fix-map-crash");
    let marker = dir.0.join("behind-ran");
    let marker_arg = marker.to_str().unwrap().to_owned();
    {
        // Window 2 (2 × 1 worker): both items are submitted now, and both
        // go to the one worker (the second sent ahead, X7).
        let mut map = pool.map(crash_or_mark, vec![(0u8, crash.arg()), (1u8, marker_arg)]);
        crash.open();
        // The first item fails with its worker's exit; by then the second
        // is back in the pool's queue, waiting for the held replacement.
        let first = map.next().expect("a first item");
        common::assert_worker_exited_with(&first.unwrap_err(), 7);
        // Dropped here: M7 cancels what it has not yielded.
    }
    std::fs::write(dir.0.join("go"), b"").unwrap();
    // One worker, tasks in order: once this one ran, the map's second
    // item has run too unless it was cancelled.
    assert_eq!(wait_at_most(pool.submit(double, 4), HANG).unwrap(), 8);
    let ran = marker.exists();
    let pool = std::sync::Arc::new(pool);
    guarded("shutdown(wait = true)", move || pool.shutdown(true, false));
    assert!(
        !ran,
        "a map dropped after its task was taken back unstarted from a dead \
         worker did not cancel it: it ran afterwards (M7)"
    );
}

/// X7, F2 on a `kill_on_cancel` pool: a task taken back unstarted from a
/// dead worker reports not running while it waits for the replacement
/// (found by review of the pending-again fix).
#[test]
fn x7_a_task_taken_back_from_a_dead_worker_is_not_running_on_a_kill_on_cancel_pool() {
    let dir = TempDir::new("running-kill-on-cancel");
    let pool = kill_on_cancel_pool(&dir);
    let crash = FileGate::new("review-fix-running-crash");
    let head = pool.submit(exit_after_gate, crash.arg());
    let behind = pool.submit(double, 21);
    wait_until("`behind` is sent ahead", || behind.running());
    crash.open();
    common::assert_worker_exited_with(&wait_at_most(head, HANG).unwrap_err(), 7);
    let running = behind.running();
    std::fs::write(dir.0.join("go"), b"").unwrap();
    assert_eq!(wait_at_most(behind, HANG).unwrap(), 42);
    let pool = std::sync::Arc::new(pool);
    guarded("shutdown(wait = true)", move || pool.shutdown(true, false));
    assert!(
        !running,
        "taken back unstarted, waiting for a replacement worker, it reported running()"
    );
}

fn pid_after(gate: String) -> u32 {
    await_file(&gate);
    std::process::id()
}

/// Creates the file at `path`, returns the worker's pid.
fn touch(path: String) -> u32 {
    std::fs::write(&path, b"").unwrap();
    std::process::id()
}

fn pid_of_worker(_: ()) -> u32 {
    std::process::id()
}

/// Decision 3 ("a dead process worker fails only the task it was
/// running"): a task that the reader of a worker already dead dispatches
/// to it (straight from the reader thread, once it handles the worker's
/// last result) never reached that worker: the write fails (EPIPE) and
/// the task is queued again, and runs on the replacement. (A parent that
/// kept its own copy of the pipe's read end, to keep writes from raising
/// SIGPIPE, wrote it into the dead worker's pipe and failed it there;
/// found by review.)
#[test]
fn a_task_dispatched_by_the_reader_to_its_already_dead_worker_runs_on_the_replacement() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .prefetch(1)
        .test_harness()
        .build()
        .unwrap();
    let go = FileGate::new("resend-dead-go");
    let in_callback = FileGate::new("resend-dead-in-callback");
    let release = FileGate::new("resend-dead-release");
    let t1_ran = FileGate::new("resend-dead-t1-ran");
    // T0 holds until its done-callback is registered; the callback then
    // holds the worker's reader.
    let t0 = pool.submit(pid_after, go.arg());
    let (entered, gate) = (in_callback.arg(), release.arg());
    t0.add_done_callback(move |_| {
        std::fs::write(&entered, b"").unwrap();
        await_file(&gate);
    });
    go.open();
    let pid = *t0.result(Some(HANG)).expect("T0 runs");
    wait_until("the reader runs T0's callback", || in_callback.is_open());
    // T1 runs on the worker; its result waits in the pipe, unread.
    let t1 = pool.submit(touch, t1_ran.arg());
    wait_until("T1 ran", || t1_ran.is_open());
    // Let the worker write T1's result and go back to reading commands
    // (ordering only, not a measurement).
    std::thread::sleep(Duration::from_millis(300));
    // Y: the worker holds T1 (prefetch 1), so Y stays queued.
    let y = pool.submit(pid_of_worker, ());
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !y.running(),
        "Y was sent at once (the setup assumes it queues)"
    );
    // The worker dies idle, its reader still in the callback.
    // SAFETY: kill takes integers; `pid` is this pool's worker.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    common::wait_for_exit_of_every_thread(pid);
    // The reader reads T1's result and dispatches Y to the dead worker.
    release.open();
    assert_eq!(
        t1.result(Some(HANG)).cloned(),
        Ok(pid),
        "T1 ran before the kill"
    );
    let y = y.result(Some(HANG)).cloned();
    assert!(
        matches!(y, Ok(p) if p != pid),
        "Y never ran on the dead worker {pid}, yet it got {y:?} (expected it to run on the \
         replacement)"
    );
    common::guarded("shutdown(wait)", move || pool.shutdown(true, false));
}
