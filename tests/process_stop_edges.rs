//! Edges of the process pool's stop path (freeze, verdict, time limits,
//! hard stops; `src/process/freeze.rs`), one test for each of three bugs a
//! review found: a spared head frozen again and again, a timeout after a
//! survived `terminate_workers` reported as `Broken`, and a time limit that
//! never ended a worker stalled in the middle of a result frame; and one
//! that a large result crossing the pipe is not taken for such a stall.

use std::sync::mpsc;
use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::stop::{
    RESULT_FD, kill_and_reap, one_worker, sigconts_while_sleeping, write_partial_frame,
};
use common::{FileGate, HANG, await_file, pid_after_gate, wait_at_most, wait_until};

/// Task: counts the SIGCONTs its worker gets (each one ends a freeze of
/// the worker by the pool) while it sleeps `ms`, then opens the gate
/// `done` and returns the count.
fn count_freezes((ms, done): (u64, String)) -> u64 {
    let n = sigconts_while_sleeping(ms);
    std::fs::write(&done, b"").unwrap();
    n
}

/// A (gated) runs; B (gated, 100 ms limit) and then C are
/// sent behind it. A's done-callback (user code on the reader thread)
/// releases B, then holds the reader until C has run. The worker finishes
/// B at once, well within its limit; B's `Done` waits in the pipe, unread,
/// and the worker runs C. The supervisor sees B, still the head, past its limit: it freezes the
/// worker, the verdict finds the reader current and the pipe not empty,
/// and spares it (right). Nothing recorded that B was known finished, so
/// the supervisor froze the worker again at once, and again, for as long
/// as the callback ran: a busy loop that stopped the worker running C (an
/// innocent task) thousands of times. A spared head is now past any stop.
#[test]
fn l8_a_spared_head_whose_result_waits_is_not_frozen_again_and_again() {
    let pool = one_worker().prefetch(2).build().unwrap();
    let gate = FileGate::new("review-spare-loop");
    let b_gate = FileGate::new("review-spare-loop-b");
    let c_done = FileGate::new("review-spare-loop-c");
    let a = pool.submit(pid_after_gate, gate.arg());
    // B ends once A's callback runs: its `Done` then reaches a reader that
    // has handled all it read (its mark is current in the callback).
    let b = pool.submit_with_timeout(pid_after_gate, b_gate.arg(), Duration::from_millis(100));
    let c = pool.submit(count_freezes, (1000u64, c_done.arg()));
    let (b_path, c_path) = (b_gate.arg(), c_done.arg());
    a.add_done_callback(move |_| {
        std::fs::write(&b_path, b"").unwrap();
        await_file(&c_path);
    });
    gate.open();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send((
            b.result(Some(common::HANG)).cloned(),
            c.result(Some(common::HANG)).cloned(),
        ));
    });
    let (b, c) = rx.recv_timeout(common::HANG * 2).expect("hang guard");
    pool.kill_workers();
    assert!(b.is_ok(), "B finished within its limit: {b:?}");
    let freezes = c.expect("C has no limit and runs to its end");
    println!("the worker was frozen {freezes} times while it ran C");
    assert!(
        freezes <= 2,
        "the supervisor froze the worker running C {freezes} times: it \
         re-freezes a spared head whose result waits unread, in a loop"
    );
}

/// Task: ignores SIGTERM, says so by opening the gate `ready`, then
/// sleeps `ms`.
fn ignore_term_then_sleep((ms, ready): (u64, String)) -> u32 {
    // SAFETY: SIG_IGN installs no handler.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    std::fs::write(&ready, b"").unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// `terminate_workers()` documents that a worker that survives SIGTERM
/// finishes its task normally. Its task still has its time limit, which
/// the supervisor keeps: it kills the worker for it, and the task fails
/// with that `TaskTimeout` (it failed as if `terminate_workers()` had
/// stopped it, `Error::Broken`).
#[test]
fn l8_a_timeout_after_a_survived_terminate_workers_is_a_task_timeout() {
    let pool = one_worker().build().unwrap();
    let limit = Duration::from_millis(1500);
    let ready = FileGate::new("review-term-survivor");
    let f = pool.submit_with_timeout(ignore_term_then_sleep, (20_000, ready.arg()), limit);
    common::wait_until("the task ignores SIGTERM", || ready.is_open());
    pool.terminate_workers();
    let outcome = f.result(Some(common::HANG)).cloned();
    pool.kill_workers();
    println!("{outcome:?}");
    assert_eq!(outcome, Err(Error::TaskTimeout { limit }));
}

/// Task: writes the start of a frame (announcing 1,000 bytes, giving 10)
/// to its worker's result pipe, then stalls for `secs`.
fn stall_mid_frame(secs: u64) -> u32 {
    write_partial_frame();
    std::thread::sleep(Duration::from_secs(secs));
    std::process::id()
}

/// L8: a task past its limit is stopped even when its worker stalls in
/// the middle of a frame. The reader waits inside the frame and never
/// catches up, so a stop left to it waited for ever (RELIABILITY.md listed
/// it as a known issue). The supervisor now checks on a reader that is
/// behind, and a reader waiting in a read of an empty pipe, no byte read
/// for about a second, is a stall: the worker is killed.
#[test]
fn l8_a_task_past_its_limit_is_stopped_while_the_reader_waits_inside_a_stalled_frame() {
    let pool = one_worker().build().unwrap();
    let limit = Duration::from_millis(200);
    let f = pool.submit_with_timeout(stall_mid_frame, 30, limit);
    let outcome = f.result(Some(Duration::from_secs(15))).cloned();
    pool.kill_workers();
    pool.shutdown(true, false);
    assert_eq!(
        outcome,
        Err(Error::TaskTimeout { limit }),
        "a task stalled mid-frame past its limit was not stopped"
    );
}

/// Task: a result of `n` bytes.
fn text_of(n: usize) -> String {
    "x".repeat(n)
}

/// Task: a result of `n` bytes, which crosses a result pipe shrunk to a
/// page first: a round trip between worker and reader every 4 KiB, so that
/// it takes a while to cross.
fn slow_text_of(n: usize) -> String {
    // SAFETY: F_SETPIPE_SZ takes an integer and touches no memory.
    let r = unsafe { libc::fcntl(RESULT_FD, libc::F_SETPIPE_SZ, 4096) };
    assert!(
        r >= 4096,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    "x".repeat(n)
}

/// A result far larger than the pipe, whose time limit passes while it
/// crosses the pipe (shrunk to a page, so that the crossing takes a
/// while), is delivered: its task had finished in time. Checked for the
/// first timed task of a pool (its reader reads at once) and for the next
/// one (its reader waits in `poll` first). The supervisor checks on the
/// reader, which is behind, every tenth of a second; it finds it waiting
/// inside the frame, but with bytes read since the last check, so not
/// stalled (a stall verdict without a byte count killed such a task, found
/// by review). The first was killed as soon as its limit passed: its
/// reader, reading at once, looked current for the whole frame.
#[test]
fn l8_a_large_result_still_crossing_the_pipe_when_its_limit_passes_is_delivered() {
    let pool = one_worker().build().unwrap();
    // Long enough to cross that a count of checks alone would call it a
    // stall: more than a second here.
    let size = 160 << 20;
    // The limit counts the result's encoding in the worker (L8), which
    // must not pass it: twice what the whole round trip takes through a
    // pipe of the usual size, which crosses many times faster.
    let quick = std::time::Instant::now();
    let warm = pool
        .submit(text_of, size)
        .result(Some(common::HANG))
        .map(|s| s.len());
    assert_eq!(warm, Ok(size));
    let limit = quick.elapsed() * 2 + Duration::from_millis(100);
    for which in ["the first timed task", "a later timed task"] {
        let started = std::time::Instant::now();
        let b = pool.submit_with_timeout(slow_text_of, size, limit);
        let outcome = b.result(Some(common::HANG)).map(|s| s.len());
        println!(
            "{which}: limit {limit:?}, delivered in {:?}",
            started.elapsed()
        );
        assert_eq!(outcome, Ok(size), "{which}");
    }
    pool.shutdown(true, false);
}

/// Task: once `gate` opens, writes the start of a frame (announcing 1,000
/// bytes, giving 10) to its worker's result pipe, opens `written`, then
/// stalls for `secs`.
fn stall_mid_frame_after_gate((gate, written, secs): (String, String, u64)) -> u32 {
    await_file(&gate);
    write_partial_frame();
    std::fs::write(&written, b"").unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    std::process::id()
}

/// L8: B, sent behind A, writes the start of a frame and stalls while A's
/// callback holds the reader; its limit passes then. The verdict finds the
/// reader current and the pipe not empty, and spares B as a head whose
/// result waits. A spared head was never checked again, and the reader
/// then waited inside B's frame for ever (found by review of the stall
/// fix). A spare is now checked again once the reader reads on.
#[test]
fn l8_a_task_stalled_mid_frame_while_the_reader_ran_a_callback_is_stopped_at_its_limit() {
    let pool = one_worker().prefetch(2).build().unwrap();
    let a_gate = FileGate::new("review-fix-spared-stall-a");
    let b_gate = FileGate::new("review-fix-spared-stall-b");
    let written = FileGate::new("review-fix-spared-stall-written");
    let limit = Duration::from_millis(300);
    let a = pool.submit(pid_after_gate, a_gate.arg());
    let b = pool.submit_with_timeout(
        stall_mid_frame_after_gate,
        (b_gate.arg(), written.arg(), 30),
        limit,
    );
    let (b_path, written_path) = (b_gate.arg(), written.arg());
    // On the reader thread, once A's result is handled (the reader's mark
    // is current): lets B write its partial frame, then holds the reader
    // well past B's limit (a precondition, not a timing assertion).
    a.add_done_callback(move |_| {
        std::fs::write(&b_path, b"").unwrap();
        await_file(&written_path);
        std::thread::sleep(Duration::from_millis(1500));
    });
    a_gate.open();
    let outcome = b.result(Some(Duration::from_secs(15))).cloned();
    kill_and_reap(pool);
    assert_eq!(
        outcome,
        Err(Error::TaskTimeout { limit }),
        "a task stalled mid-frame past its limit was not stopped (spared \
         while the reader ran a callback, never checked again)"
    );
}

/// Task: writes the start of a frame (announcing 1,000 bytes, giving 10)
/// to its worker's result pipe at once, opens `written`, then stalls for
/// `secs`.
fn stall_mid_frame_at_once((written, secs): (String, u64)) -> u32 {
    write_partial_frame();
    std::fs::write(&written, b"").unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    std::process::id()
}

/// `kill_on_cancel` with the worker stalled mid-frame: B, cancelled while
/// it waits in the pipe behind A, starts, writes the start of a frame and
/// stalls. A's result and B's bytes reach the reader in one read, so the
/// stop of B is left to the reader (`Link::defer_stop_if_cancelled`),
/// which then waits inside B's frame. That stop was the one left to a
/// reader that the supervisor did not check on: the worker was never
/// stopped and C, behind B, never ran (found by review of the stall fix).
#[test]
fn kill_on_cancel_stops_a_cancelled_task_stalled_mid_frame_behind_a_reader_that_is_behind() {
    let pool = one_worker()
        .prefetch(3)
        .kill_on_cancel(true)
        .build()
        .unwrap();
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    let z_gate = FileGate::new("review-fix-deferred-z");
    let a_gate = FileGate::new("review-fix-deferred-a");
    let written = FileGate::new("review-fix-deferred-written");
    let z = pool.submit(pid_after_gate, z_gate.arg());
    let a = pool.submit(pid_after_gate, a_gate.arg());
    let b = pool.submit(stall_mid_frame_at_once, (written.arg(), 30));
    wait_until("B is sent ahead", || b.running());
    assert!(b.cancel(), "kill_on_cancel cancels a task sent ahead");
    let (a_path, written_path) = (a_gate.arg(), written.arg());
    // On the reader thread: lets A finish and B write its partial frame
    // while the reader is held here, so that both wait in the pipe.
    z.add_done_callback(move |_| {
        std::fs::write(&a_path, b"").unwrap();
        await_file(&written_path);
        std::thread::sleep(Duration::from_millis(200));
    });
    z_gate.open();
    assert!(wait_at_most(a, HANG).is_ok());
    let c = pool.submit(double, 4);
    let outcome = c.result(Some(Duration::from_secs(15))).cloned();
    kill_and_reap(pool);
    assert_eq!(
        outcome,
        Ok(8),
        "the worker running cancelled B, stalled mid-frame, was never stopped"
    );
}

fn double(x: u64) -> u64 {
    x * 2
}

/// The scenario of
/// `process_stop_edges::kill_on_cancel_stops_a_cancelled_task_stalled_mid_frame_behind_a_reader_that_is_behind`
/// (B, cancelled while sent ahead, starts, writes the start of a frame and
/// stalls; A's result and B's bytes reach the reader in one read, so B's
/// stop is left to the reader, which then waits inside B's frame), with
/// one change: A, the task ahead of B, has a time limit that passes while
/// Z's done-callback holds the reader with A's result waiting in the pipe.
/// The verdict spares A and arms a check of the spare (`stop_retry`, task
/// A). When the reader then hands B's stop to itself
/// (`Link::leave_stop_to_reader`), it arms no supervisor check, because a
/// check is "already due" -- but that one is A's, and `take_due_retry`
/// drops it as soon as it sees that A is no longer the head. Nothing checks
/// on B's stop again: the worker is never stopped and C never runs.
#[test]
fn kill_on_cancel_stops_a_cancelled_task_stalled_mid_frame_after_a_spared_head_with_a_time_limit() {
    let pool = one_worker()
        .prefetch(3)
        .kill_on_cancel(true)
        .build()
        .unwrap();
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    let z_gate = FileGate::new("review2-stale-retry-z");
    let a_gate = FileGate::new("review2-stale-retry-a");
    let written = FileGate::new("review2-stale-retry-written");
    let z = pool.submit(pid_after_gate, z_gate.arg());
    // A finishes at once when its gate opens, well within its limit in
    // the worker; only the parent's view of it passes the limit.
    let a = pool.submit_with_timeout(pid_after_gate, a_gate.arg(), Duration::from_millis(100));
    let b = pool.submit(stall_mid_frame_at_once, (written.arg(), 30));
    wait_until("B is sent ahead", || b.running());
    assert!(b.cancel(), "kill_on_cancel cancels a task sent ahead");
    let (a_path, written_path) = (a_gate.arg(), written.arg());
    // On the reader thread, with Z's result handled: lets A finish and B
    // write its partial frame, then holds the reader well past A's limit
    // (a precondition, not a timing assertion), so that the supervisor
    // finds A past its limit with its result waiting, and spares it.
    z.add_done_callback(move |_| {
        std::fs::write(&a_path, b"").unwrap();
        await_file(&written_path);
        std::thread::sleep(Duration::from_millis(700));
    });
    z_gate.open();
    assert!(
        wait_at_most(a, HANG).is_ok(),
        "A finished in time in its worker"
    );
    let c = pool.submit(double, 4);
    let outcome = c.result(Some(Duration::from_secs(15))).cloned();
    kill_and_reap(pool);
    assert_eq!(
        outcome,
        Ok(8),
        "the worker running cancelled B, stalled mid-frame, was never \
         stopped: its stop was left to the reader with A's stale check as \
         the only supervisor check"
    );
}

/// L8 with time limits alone: a task past its limit is stopped even when
/// its worker stalls mid-frame right behind a task whose stop was left to
/// the reader. Y's callback holds the reader while Z and A finish and B
/// writes the start of a frame and stalls, so that the reader takes Z's
/// result, A's result and B's partial frame in one read. Z's callback then
/// holds a reader that is behind (A's result read, not handled) past A's
/// limit: A's stop is left to the reader (`Verdict::Defer`:
/// `deferred_stop` = A, and a supervisor check of A). The reader handles
/// A's result from its buffer, which still holds B's bytes, so it does not
/// settle (and clear) the deferred stop (`link.rs`: only `if drained`),
/// and it then waits inside B's frame for ever. The supervisor drops A's
/// check (A is no longer the head), and `Link::stop_pending` stays true
/// for the stale `deferred_stop` of A: B's own limit is never looked at
/// again, and B is never stopped.
#[test]
fn l8_a_task_stalled_mid_frame_behind_a_finished_task_whose_stop_was_left_to_the_reader_is_stopped()
{
    let pool = one_worker().prefetch(4).build().unwrap();
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    let y_gate = FileGate::new("review2-stale-deferred-y");
    let za_gate = FileGate::new("review2-stale-deferred-za");
    let written = FileGate::new("review2-stale-deferred-written");
    let y = pool.submit(pid_after_gate, y_gate.arg());
    let z = pool.submit(pid_after_gate, za_gate.arg());
    // A finishes at once when its gate opens; only the parent's view of
    // it passes its limit, while Z's callback holds the reader.
    let a = pool.submit_with_timeout(pid_after_gate, za_gate.arg(), Duration::from_millis(100));
    let limit = Duration::from_millis(300);
    let b = pool.submit_with_timeout(stall_mid_frame_at_once, (written.arg(), 30), limit);
    wait_until("B is sent ahead", || b.running());
    let (za_path, written_path) = (za_gate.arg(), written.arg());
    // On the reader thread, with Y's result handled: Z and A finish and B
    // writes its partial frame, all waiting in the pipe when this returns.
    y.add_done_callback(move |_| {
        std::fs::write(&za_path, b"").unwrap();
        await_file(&written_path);
        std::thread::sleep(Duration::from_millis(100));
    });
    // With A's result read and not handled: holds the reader well past
    // A's limit (a precondition, not a timing assertion).
    z.add_done_callback(|_| std::thread::sleep(Duration::from_millis(700)));
    y_gate.open();
    assert!(
        wait_at_most(a, HANG).is_ok(),
        "A finished in time in its worker"
    );
    let outcome = b.result(Some(Duration::from_secs(15))).cloned();
    kill_and_reap(pool);
    assert_eq!(
        outcome,
        Err(concurrent_futures::Error::TaskTimeout { limit }),
        "B, stalled mid-frame past its limit, was never stopped: a stale \
         deferred stop of A keeps the supervisor off B's limit"
    );
}

/// A reader behind, busy in a done-callback with a result read and not
/// handled, while the head's limit passes: the stop is left to the reader,
/// and the supervisor's checks on it freeze nothing while the reader reads
/// nothing (each froze the worker, running an innocent task, every 100 ms;
/// found by review).
#[test]
fn l8_a_stop_left_to_a_busy_reader_does_not_freeze_the_worker_again_and_again() {
    let pool = one_worker().prefetch(4).build().unwrap();
    wait_until("the worker serves", || pool.worker_pids().len() == 1);
    let y_gate = FileGate::new("busy-reader-y");
    let za_gate = FileGate::new("busy-reader-za");
    let c_done = FileGate::new("busy-reader-c");
    let y = pool.submit(pid_after_gate, y_gate.arg());
    let z = pool.submit(pid_after_gate, za_gate.arg());
    let a = pool.submit_with_timeout(pid_after_gate, za_gate.arg(), Duration::from_millis(100));
    let c = pool.submit(count_freezes, (1500u64, c_done.arg()));
    let za_path = za_gate.arg();
    // With Y's result handled: Z and A finish, their results wait in the
    // pipe together (a margin for that, not a timing assertion).
    y.add_done_callback(move |_| {
        std::fs::write(&za_path, b"").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    // With A's result read and not handled: holds the reader past A's
    // limit.
    z.add_done_callback(|_| std::thread::sleep(Duration::from_millis(1000)));
    y_gate.open();
    assert!(
        wait_at_most(a, HANG).is_ok(),
        "A finished in its worker in time"
    );
    let freezes = wait_at_most(c, HANG).expect("C has no limit and runs to its end");
    pool.kill_workers();
    println!("the worker was frozen {freezes} times while it ran C");
    assert!(
        freezes <= 2,
        "a stop left to a busy reader froze the worker running C {freezes} times"
    );
}
