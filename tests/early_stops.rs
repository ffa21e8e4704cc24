//! Stopping pools before their work is done: a close or shutdown while
//! workers are being recycled (MP22, P4), a terminate with 10 000 tasks
//! pending (MP24), and forced stops of a pool that is already broken
//! (S14). Each must return, and every result must be right or failed, never
//! lost. Long timeouts are hang guards only; no test asserts a duration.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, Pool, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{guarded, wait};

const HANG: Duration = Duration::from_secs(30);

fn square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x * x
}

/// MP22 (CPython `test_pool_worker_lifetime_early_close`, #10332): with
/// `maxtasksperchild`, `close()` before the tasks are done, then `join()`,
/// does not hang, and every result arrives.
#[test]
fn mp22_close_then_join_before_the_tasks_are_done_with_maxtasksperchild() {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(1)
        .test_harness()
        .build()
        .expect("a pool builds");
    let results = guarded("close and join", move || {
        let results: Vec<_> = (0..8u64)
            .map(|x| pool.apply_async(square, x).unwrap())
            .collect();
        pool.close();
        pool.join().unwrap();
        results
    });
    for (x, r) in results.into_iter().enumerate() {
        let x = x as u64;
        assert_eq!(r.get(Some(Duration::ZERO)), Ok(&(x * x)));
    }
}

/// P4 (CPython `test_max_tasks_early_shutdown`): 3 workers that each run
/// one task, 6 tasks, then `shutdown(wait = true)`: every result is right.
#[test]
fn p4_max_tasks_per_child_then_shutdown_wait_gives_every_result() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(3)
        .max_tasks_per_child(1)
        .test_harness()
        .build()
        .expect("a pool builds");
    let futures: Vec<_> = (0..6u64).map(|x| pool.submit(square, x)).collect();
    guarded("shutdown(wait)", move || pool.shutdown(true, false));
    for (x, f) in futures.into_iter().enumerate() {
        let x = x as u64;
        assert_eq!(wait(f), Ok(x * x));
    }
}

/// MP24: `terminate()` returns even with 10 000 tasks pending, and none of
/// their results ever holds a value.
#[test]
fn mp24_terminate_with_10000_pending_returns_and_fails_them() {
    let pool = Pool::builder()
        .processes(2)
        .test_harness()
        .build()
        .expect("a pool builds");
    let results = guarded("terminate", move || {
        let results: Vec<_> = (0..10_000u64)
            .map(|x| pool.apply_async(square, x).unwrap())
            .collect();
        pool.terminate();
        results
    });
    // Those done before the terminate keep their values; the second half
    // could not have started by then (5 ms each on 2 workers: 25 s).
    for r in &results[5_000..] {
        let outcome = r.get(Some(HANG));
        assert!(outcome.is_err(), "a pending task ran: {outcome:?}");
    }
}

/// A task of no consequence; the initializer below breaks the pool.
fn double(x: u64) -> u64 {
    x * 2
}

fn initializer_panics() {
    panic!("this pool's initializer fails");
}

/// S14: `kill_workers()` and `terminate_workers()` do not raise on a pool
/// that is already broken; later submits are still refused as broken.
#[test]
fn s14_forced_stops_of_a_broken_pool_are_quiet() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(initializer_panics)
        .test_harness()
        .build()
        .expect("a pool builds");
    let first = wait(pool.submit(double, 1));
    assert!(matches!(first, Err(Error::Broken { .. })), "{first:?}");
    let pool = guarded("forced stops", move || {
        pool.terminate_workers();
        pool.kill_workers();
        pool
    });
    let later = wait(pool.submit(double, 2));
    assert!(
        matches!(later, Err(Error::Broken { .. }) | Err(Error::Shutdown)),
        "{later:?}"
    );
}

/// An initializer that does not return in any test's lifetime: its worker
/// ends only by a signal.
fn initializer_never_returns() {
    std::thread::sleep(Duration::from_secs(120));
}

/// Runs `shutdown(wait = true)` on another thread and says whether it
/// returned within `guard`. If not, a second `kill_workers` (which finds
/// every worker by then) rescues the pool so the test can go on.
fn shutdown_wait_returns_within(pool: &Arc<ProcessPoolExecutor>, guard: Duration) -> bool {
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    std::thread::spawn(move || {
        p.shutdown(true, false);
        let _ = tx.send(());
    });
    let returned = rx.recv_timeout(guard).is_ok();
    if !returned {
        pool.kill_workers();
        rx.recv_timeout(HANG)
            .expect("shutdown(wait) returned after a second kill_workers");
    }
    returned
}

/// S14, P5: `kill_workers` reaches every worker, serving or starting,
/// including one the supervisor is spawning at that moment (taken off the
/// wanted count, not yet listed as starting). Such a worker, missed, would
/// run its never-ending initializer for ever and hold `shutdown(wait)`.
/// The kills are spread over the supervisor's starts by small sleeps; no
/// timing is asserted (the 10 s guard is a hang guard).
#[test]
fn s14_kill_workers_reaches_a_worker_the_supervisor_is_spawning() {
    let rounds = 12;
    let mut hung = 0;
    for round in 0..rounds {
        let pool = Arc::new(
            ProcessPoolExecutor::builder()
                .max_workers(4)
                .initializer(initializer_never_returns)
                .test_harness()
                .build()
                .expect("a pool builds"),
        );
        let queued = pool.submit(double, 21);
        std::thread::sleep(Duration::from_millis(1 + round));
        pool.kill_workers();
        if !shutdown_wait_returns_within(&pool, Duration::from_secs(10)) {
            hung += 1;
        }
        assert!(queued.result(Some(HANG)).is_err());
    }
    assert_eq!(
        hung, 0,
        "shutdown(wait) after kill_workers() hung in {hung} of {rounds} rounds: \
         a worker being spawned when kill_workers() ran was never signalled"
    );
}
