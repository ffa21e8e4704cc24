//! The process pool's stop path (`src/process/freeze.rs`) checked against
//! its invariants rather than scenario by scenario: a time limit holds in
//! the end even for a worker stalled mid-frame that will not stop (found
//! by a review by invariants; it was never killed), a healthy pool with
//! time limits freezes no worker, and the supervisor does not busy-loop
//! while a stop is pending. No test asserts a duration: every wait has a
//! hang guard, and the busy-loop check counts wake-ups with a margin of
//! a hundred.

use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::stop::{hold_stop, kill_and_reap, sigconts_while_sleeping, write_partial_frame};
use common::{FileGate, HANG, wait_at_most, wait_until};

/// Held while a test of this file builds a pool, so that the supervisor
/// test can tell its pool's supervisor thread from the others.
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn build(builder: concurrent_futures::ProcessPoolBuilder) -> ProcessPoolExecutor {
    build_seeing_supervisor(builder).0
}

/// Builds a pool; returns it with its supervisor thread's id, once that
/// thread bears its name.
fn build_seeing_supervisor(
    builder: concurrent_futures::ProcessPoolBuilder,
) -> (ProcessPoolExecutor, u32) {
    let _g = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let before = supervisor_tids();
    let pool = builder.test_harness().build().unwrap();
    let mut mine = Vec::new();
    wait_until("the pool's supervisor thread", || {
        // Threads another pool's supervisor starts bear its name until
        // they name themselves: only a name that stays counts.
        let new: Vec<u32> = supervisor_tids()
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let still = supervisor_tids();
        mine = new.into_iter().filter(|t| still.contains(t)).collect();
        !mine.is_empty()
    });
    assert_eq!(mine.len(), 1, "this pool's supervisor: {mine:?}");
    (pool, mine.into_iter().min().unwrap())
}

/// Task: leaves a thread held in the kernel for `hold` ms (the worker will
/// not stop meanwhile), writes the start of a frame (announcing 1,000
/// bytes, giving 10) to its worker's result pipe, then sleeps `secs`.
fn unstoppable_stall_mid_frame((hold, secs): (u64, u64)) -> u32 {
    hold_stop(hold);
    write_partial_frame();
    std::thread::sleep(Duration::from_secs(secs));
    std::process::id()
}

/// L8 / decision 4, and `freeze.rs`'s own promise: "A worker that does
/// not stop within STOP_WAIT ... is let go on, and the supervisor tries
/// again ...; after MAX_TRIES it is killed on the parent's view ..., so
/// that a time limit always holds in the end". Two cases the module
/// handles one by one (a worker stalled mid-frame: killed after ten
/// stalled checks; a worker that will not stop: killed after ten tries)
/// never end when they come together: the verdict finds the reader
/// waiting inside the frame (`Verdict::Defer`), counts no stall because
/// the worker did not stop, and keeps the tries where they were, so the
/// supervisor checks every 100 ms for ever and the task runs on.
#[test]
fn l8_a_task_stalled_mid_frame_whose_worker_will_not_stop_is_still_stopped_at_its_limit() {
    let pool = build(ProcessPoolExecutor::builder().max_workers(1));
    let limit = Duration::from_millis(200);
    // Held for a minute, the task sleeps 40 s: both past the guard below.
    let f = pool.submit_with_timeout(unstoppable_stall_mid_frame, (60_000u64, 40u64), limit);
    let outcome = f.result(Some(Duration::from_secs(15))).cloned();
    kill_and_reap(pool);
    assert_eq!(
        outcome,
        Err(Error::TaskTimeout { limit }),
        "a task past its limit, stalled mid-frame in a worker that will not \
         stop, was never stopped (checked 100 ms apart for ever)"
    );
}

/// Task (as in tests/process_stop_edges.rs): counts the SIGCONTs its
/// worker gets (each one ends a freeze by the pool) while it sleeps `ms`.
fn count_freezes(ms: u64) -> u64 {
    sigconts_while_sleeping(ms)
}

/// A healthy pool with time limits (every task well within its limit:
/// tiny ones that deepen the pipelines, short ones, a few long ones, from
/// two submitting threads, with and without `kill_on_cancel`) never
/// freezes a worker: a stop is only ever tried for a head whose limit has
/// passed on the parent's view. Kept as a guard: the stop path's checks
/// (spares, checks on a reader behind, stall counts) must never reach a
/// pool in which nothing is late.
#[test]
fn l8_a_healthy_pool_with_time_limits_never_freezes_a_worker() {
    for kill_on_cancel in [false, true] {
        let pool = std::sync::Arc::new(build(
            ProcessPoolExecutor::builder()
                .max_workers(2)
                .prefetch(2)
                .kill_on_cancel(kill_on_cancel),
        ));
        let limit = Duration::from_secs(10);
        let submitters: Vec<_> = (0..2u64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut futures = Vec::new();
                    for i in 0..60u64 {
                        let ms = match (i + t) % 10 {
                            0 => 300,
                            1..=3 => 20,
                            _ => 0,
                        };
                        futures.push(pool.submit_with_timeout(count_freezes, ms, limit));
                    }
                    futures
                        .into_iter()
                        .map(|f| wait_at_most(f, HANG))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let outcomes: Vec<_> = submitters
            .into_iter()
            .flat_map(|h| h.join().expect("a submitter"))
            .collect();
        let frozen: u64 = outcomes
            .iter()
            .map(|o| *o.as_ref().expect("every task within its limit"))
            .sum();
        pool.shutdown(true, false);
        assert_eq!(
            frozen, 0,
            "kill_on_cancel {kill_on_cancel}: workers of a pool in which no task \
             passed its limit were frozen {frozen} times"
        );
    }
}

/// The supervisor threads of this process (their ids).
fn supervisor_tids() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.trim()
                .starts_with("cf-process-sup")
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// How often thread `tid` has slept and woken (voluntary context
/// switches): a supervisor that loops on a deadline in the past wakes
/// every millisecond.
fn wakeups(tid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// The supervisor never busy-loops while a stop is pending: a head spared
/// while a done-callback holds the reader (its check re-armed every
/// 100 ms), then a stop left to a reader busy with what it read. Each
/// phase holds the reader for 1.5 s; a deadline stuck in the past would
/// wake the supervisor every millisecond (about 1,500 times a phase).
#[test]
fn l8_the_supervisor_does_not_busy_loop_while_a_stop_is_pending() {
    let (pool, tid) =
        build_seeing_supervisor(ProcessPoolExecutor::builder().max_workers(1).prefetch(4));
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    // Phase 1: A's result handled; B finishes at once, its result waits
    // unread while A's callback holds the reader past B's limit: spared.
    let a_gate = FileGate::new("r4-busy-a");
    let b_gate = FileGate::new("r4-busy-b");
    let a = pool.submit(common::pid_after_gate, a_gate.arg());
    let b = pool.submit_with_timeout(
        common::pid_after_gate,
        b_gate.arg(),
        Duration::from_millis(100),
    );
    let b_path = b_gate.arg();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let tx1 = tx.clone();
    a.add_done_callback(move |_| {
        std::fs::write(&b_path, b"").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let w0 = wakeups(tid);
        std::thread::sleep(Duration::from_millis(1500));
        let _ = tx1.send(wakeups(tid) - w0);
    });
    a_gate.open();
    assert!(wait_at_most(b, HANG).is_ok(), "B finished within its limit");
    let spared_phase = rx.recv_timeout(HANG).expect("hang guard");
    // Phase 2: Y's callback lets Z and A' finish (their results wait
    // together); Z's callback then holds a reader that is behind (A''s
    // result read, not handled) past A''s limit: left to the reader.
    let y_gate = FileGate::new("r4-busy-y");
    let za_gate = FileGate::new("r4-busy-za");
    let y = pool.submit(common::pid_after_gate, y_gate.arg());
    let z = pool.submit(common::pid_after_gate, za_gate.arg());
    let a2 = pool.submit_with_timeout(
        common::pid_after_gate,
        za_gate.arg(),
        Duration::from_millis(100),
    );
    let za_path = za_gate.arg();
    y.add_done_callback(move |_| {
        std::fs::write(&za_path, b"").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    z.add_done_callback(move |_| {
        std::thread::sleep(Duration::from_millis(200));
        let w0 = wakeups(tid);
        std::thread::sleep(Duration::from_millis(1500));
        let _ = tx.send(wakeups(tid) - w0);
    });
    y_gate.open();
    assert!(
        wait_at_most(a2, HANG).is_ok(),
        "A' finished within its limit"
    );
    let busy_phase = rx.recv_timeout(HANG).expect("hang guard");
    pool.kill_workers();
    println!("supervisor wakeups: spared {spared_phase}, busy {busy_phase}");
    assert!(
        spared_phase < 200 && busy_phase < 200,
        "the supervisor woke {spared_phase} and {busy_phase} times in 1.5 s"
    );
}
