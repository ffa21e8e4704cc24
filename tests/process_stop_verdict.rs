//! A process pool's stops (a task timeout, a `kill_on_cancel` cancel)
//! kill only the task they mean, also when asked for while the worker is
//! frozen for another stop, and when the worker is slow to stop
//! (`src/process/freeze.rs`; decision 4, L8). Found by review.
//!
//! The tool: `start_holding_stop(ms)` (tests/common/stop.rs) leaves a thread in the worker blocked in a
//! vfork-style clone (CLONE_VFORK: the parent thread waits, killably but
//! not interruptibly, until the child exits) for `ms`. A SIGSTOP of the
//! worker then stops its main thread at once, but the group stop (what
//! `waitid(WSTOPPED)` reports) completes only once that thread is out:
//! a worker that is slow to stop, on demand. A multi-threaded task whose
//! thread sits in D state, in a killable kernel wait, or in a throttled
//! cgroup does the same in real life.

use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::stop::start_holding_stop;
use common::{FileGate, pid_after_gate, wait};

/// A task that (optionally) leaves a thread holding up a stop for
/// `hold` ms, then returns after `ms` ms.
fn finish_leaving_stop_held((hold, ms): (u64, u64)) -> u32 {
    if hold > 0 {
        let _ = start_holding_stop(hold);
    }
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Sleeps `ms`, then creates the file `path`: it ran to its end.
fn sleep_then_touch((ms, path): (u64, String)) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(&path, b"ran to the end").unwrap();
    std::process::id()
}

fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// One worker with four tasks sent ahead, so that a test can line up
/// results behind a slow callback.
fn deep_pool() -> ProcessPoolExecutor {
    deep_builder().build().unwrap()
}

/// [`deep_pool`], stopping cancelled tasks.
fn killing_pool() -> ProcessPoolExecutor {
    deep_builder().kill_on_cancel(true).build().unwrap()
}

fn deep_builder() -> concurrent_futures::ProcessPoolBuilder {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .prefetch(4)
        .test_harness()
}

/// Z holds the reader in its done-callback (100 ms, nothing unread), while
/// the worker finishes H and starts B. B was cancelled while sent ahead
/// (`stop_when_started`); then H, the parent's head, is cancelled: H is
/// frozen (`freeze_head`), and while `settle` waits for the stop the reader
/// handles H's result, pops H and finds B to stop while the worker is
/// still frozen for H. The verdict on H spares the worker (H is no longer
/// the head), and B's stop must follow (it was dropped: B ran to its end
/// though its future was cancelled).
fn cancelled_sent_ahead_task(hold: u64) -> bool {
    let pool = killing_pool();
    let gate = FileGate::new("freeze-lost");
    let done = FileGate::new("freeze-lost-b-ran");
    let z = pool.submit(pid_after_gate, gate.arg());
    // H: Done(H) is written ~30 ms in; with `hold`, a thread keeps the
    // worker from completing a stop until ~130 ms.
    let h = pool.submit(finish_leaving_stop_held, (hold, 30));
    let b = pool.submit(sleep_then_touch, (1500, done.arg()));
    common::wait_until("B sent ahead", || b.running());
    z.add_done_callback(|_| std::thread::sleep(Duration::from_millis(100)));
    gate.open();
    common::wait_until("Z done", || z.done());
    std::thread::sleep(Duration::from_millis(60));
    assert!(b.cancel(), "B (sent ahead) is stoppable");
    assert!(h.cancel(), "H (the parent's head) is stoppable");
    std::thread::sleep(Duration::from_millis(2500));
    !done.is_open()
}

#[test]
fn decision4_a_cancelled_task_sent_ahead_is_stopped_when_it_starts() {
    assert!(
        cancelled_sent_ahead_task(0),
        "control: B, cancelled, ran to its end"
    );
}

/// The same with a worker slow to stop, so that the reader finds B's stop
/// while the worker is still frozen for H's: B's stop is kept and settled
/// after H's.
#[test]
fn a_stop_found_while_the_worker_is_frozen_for_another_task_is_not_lost() {
    assert!(
        cancelled_sent_ahead_task(130),
        "B, cancelled in a kill_on_cancel pool, ran to its end: its stop, \
         found by the reader while H's freeze awaited its verdict, was dropped"
    );
}

/// The other way in: H (60 ms limit) is frozen by the supervisor; while
/// the verdict waits for the stop, the reader pops H and B becomes the
/// head; B is then cancelled. The verdict on H spares the worker, and
/// B's stop must follow (it was dropped).
fn cancel_during_a_timeout_freeze(hold: u64) -> bool {
    let pool = killing_pool();
    let gate = FileGate::new("freeze-lost-2");
    let done = FileGate::new("freeze-lost-2-b-ran");
    let z = pool.submit(pid_after_gate, gate.arg());
    let h = pool.submit_with_timeout(
        finish_leaving_stop_held,
        (hold, 20),
        Duration::from_millis(60),
    );
    let b = pool.submit(sleep_then_touch, (1500, done.arg()));
    common::wait_until("B sent ahead", || b.running());
    z.add_done_callback(|_| std::thread::sleep(Duration::from_millis(100)));
    gate.open();
    common::wait_until("H done", || h.done());
    assert!(wait(h).is_ok());
    assert!(b.cancel(), "B (now the head) is stoppable");
    std::thread::sleep(Duration::from_millis(2500));
    !done.is_open()
}

#[test]
fn decision4_a_cancel_of_the_head_after_a_spared_timeout_stops_it() {
    assert!(
        cancel_during_a_timeout_freeze(0),
        "control: B ran to its end"
    );
}

/// The same with a worker slow to stop: B's cancel comes while H's
/// timeout freeze awaits its verdict, is kept, and is settled after it.
#[test]
fn a_cancel_while_the_worker_is_frozen_for_the_previous_head_is_not_lost() {
    assert!(
        cancel_during_a_timeout_freeze(130),
        "B, cancelled in a kill_on_cancel pool, ran to its end: the cancel \
         came while H's timeout freeze awaited its verdict and was dropped"
    );
}

/// The commit's own scenario (a slow callback; H, with a 60 ms limit, has
/// in fact finished, and the worker runs C, untimed), with a worker slow
/// to stop: `wait_stopped` gives up after STOP_WAIT (100 ms) and settle
/// must not kill on the parent's view, which is H: C would die instead.
fn untimed_task_behind_a_timed_one(hold: u64) -> Result<u32, Error> {
    let pool = deep_pool();
    let gate = FileGate::new("freeze-slow-stop");
    let z = pool.submit(pid_after_gate, gate.arg());
    let h = pool.submit_with_timeout(
        finish_leaving_stop_held,
        (hold, 20),
        Duration::from_millis(60),
    );
    let c = pool.submit(sleep_ms, 1500);
    z.add_done_callback(|_| std::thread::sleep(Duration::from_millis(400)));
    gate.open();
    let _ = wait(z);
    let h = wait(h);
    assert!(h.is_ok(), "H finished in 20 ms: {h:?}");
    wait(c)
}

#[test]
fn l8_an_untimed_task_is_not_hit_by_a_timeout_of_the_task_before() {
    let c = untimed_task_behind_a_timed_one(0);
    assert!(c.is_ok(), "control: C failed: {c:?}");
}

/// The same with a worker slow to stop: the stop is tried again rather
/// than decided on the parent's stale view, which would hit C.
#[test]
fn a_worker_slow_to_stop_is_not_killed_on_the_parents_stale_view() {
    let c = untimed_task_behind_a_timed_one(300);
    assert!(
        c.is_ok(),
        "C has no limit and was never cancelled, yet: {c:?}"
    );
}

/// L8: a worker that will not stop (a thread of it held in the kernel for
/// a minute, longer than the test's hang guard) still has its task's limit
/// enforced: after the retries the stop is decided on the parent's view,
/// which is right here. Its process tree goes with it (L6).
#[test]
fn l8_a_task_past_its_limit_whose_worker_will_not_stop_is_still_stopped() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .test_harness()
        .build()
        .unwrap();
    let f = pool.submit_with_timeout(
        finish_leaving_stop_held,
        (60_000, 20_000),
        Duration::from_millis(100),
    );
    assert_eq!(
        wait(f),
        Err(Error::TaskTimeout {
            limit: Duration::from_millis(100)
        })
    );
}

fn quick(_: ()) -> u32 {
    std::process::id()
}

/// Decision 4 with the reader behind: it read Z's and H's results in one
/// read and runs Z's done-callback, which waits for the test to go on
/// after `cancel()`. H, the parent's head, is cancelled: the verdict must
/// leave the stop to the reader and return, not freeze the worker again
/// and again until the reader catches up (found by review: `cancel()`
/// spun until the callback gave up waiting for it). H had finished, so B,
/// which the worker runs, is untouched.
#[test]
fn decision4_a_cancel_while_the_reader_is_behind_returns_and_kills_nothing() {
    let pool = killing_pool();
    let gate = FileGate::new("stop-behind");
    let a = pool.submit(pid_after_gate, gate.arg());
    let z = pool.submit(quick, ());
    let h = pool.submit(quick, ());
    let b = pool.submit(sleep_ms, 500);
    common::wait_until("B sent ahead", || b.running());
    // A's callback holds the reader, with nothing else read, while the
    // worker writes Z's and H's results: one read then takes both.
    a.add_done_callback(|_| std::thread::sleep(Duration::from_millis(300)));
    let (in_z, in_z_rx) = std::sync::mpsc::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let (released, released_rx) = std::sync::mpsc::channel::<bool>();
    z.add_done_callback(move |_| {
        let _ = in_z.send(());
        let _ = released.send(release_rx.recv_timeout(common::HANG).is_ok());
    });
    gate.open();
    in_z_rx
        .recv_timeout(common::HANG)
        .expect("Z's callback runs");
    assert!(h.cancel(), "H (the parent's head) is stoppable");
    release.send(()).unwrap();
    assert_eq!(
        released_rx.recv_timeout(common::HANG * 2),
        Ok(true),
        "cancel() returned only once Z's callback gave up waiting for it"
    );
    assert!(wait(b).is_ok(), "B was hit by H's stop");
}

/// L8, the slow-to-stop case with a worker held longer than all the
/// tries: H (60 ms limit) finished in 20 ms and its result waits in the
/// pipe while the reader, current, runs Z's callback. Only a kill needs
/// the worker stopped; the pipe shows H finished, so C, untimed, is spared
/// (found by review: out of tries, it was killed on the parent's view).
#[test]
fn l8_out_of_tries_a_head_whose_result_waits_in_the_pipe_is_still_spared() {
    let pool = deep_pool();
    let gate = FileGate::new("stop-out-of-tries");
    let z = pool.submit(pid_after_gate, gate.arg());
    let h = pool.submit_with_timeout(
        finish_leaving_stop_held,
        (1500, 20),
        Duration::from_millis(60),
    );
    let c = pool.submit(sleep_ms, 2500);
    z.add_done_callback(|_| std::thread::sleep(Duration::from_millis(2000)));
    gate.open();
    let _ = wait(z);
    let h = wait(h);
    assert!(h.is_ok(), "H finished in 20 ms: {h:?}");
    let c = wait(c);
    assert!(c.is_ok(), "C, untimed, was killed for H's timeout: {c:?}");
}

/// Decision 4: B, sent ahead behind A, is cancelled; it is to be stopped
/// once it starts. But the worker runs on: it finishes B (a no-op) and
/// starts C before the parent's reader has handled A's result (here the
/// reader is held up by Z's done-callback; without it the window is the
/// reader's wake-up against B's run time). C, never cancelled, must not be
/// hit (found by review: it failed with `WorkerDied`).
#[test]
fn decision4_a_cancelled_task_sent_ahead_that_finished_unseen_kills_nothing() {
    let pool = killing_pool();
    let gate = FileGate::new("cancel-unseen");
    let z = pool.submit(pid_after_gate, gate.arg());
    let a = pool.submit(sleep_ms, 0);
    let b = pool.submit(sleep_ms, 0);
    let c = pool.submit(sleep_ms, 1500);
    common::wait_until("B sent ahead", || b.running());
    z.add_done_callback(|_| std::thread::sleep(Duration::from_millis(1000)));
    assert!(b.cancel(), "B is stoppable");
    gate.open();
    let _ = wait(z);
    assert!(wait(a).is_ok());
    let c = wait(c);
    assert!(c.is_ok(), "C was never cancelled, yet: {c:?}");
}

/// Decision 4, the same without any slow callback: a tiny sent-ahead task
/// cancelled on a `kill_on_cancel` pool. The worker usually finishes it and
/// starts the next task before the reader handles the result before, and
/// the kill meant for the cancelled task hit the next one in 18 of 20
/// rounds (found by review).
#[test]
fn decision4_a_tiny_cancelled_task_sent_ahead_spares_the_next_task() {
    let pool = killing_pool();
    let mut failed = Vec::new();
    for _ in 0..10 {
        let gate = FileGate::new("cancel-tiny");
        let z = pool.submit(pid_after_gate, gate.arg());
        let b = pool.submit(sleep_ms, 0);
        let c = pool.submit(sleep_ms, 50);
        common::wait_until("B sent ahead", || b.running());
        assert!(b.cancel(), "B is stoppable");
        gate.open();
        let _ = wait(z);
        if let Err(e) = wait(c) {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "uncancelled tasks failed: {failed:?}");
}
