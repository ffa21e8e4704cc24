//! Thread pools broken by an initializer's panic (T8) while submits race
//! the break. Every wait has a hang guard; no test asserts a duration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use concurrent_futures::ThreadPoolExecutor;

mod common;
use common::HANG;

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One round: returns Some(description) if a task accepted by an outside
/// submit as the pool broke stayed queued while a task of the pool waited
/// for it.
fn one_round_of_an_outside_submit_racing_a_break() -> Option<String> {
    use concurrent_futures::Error;
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let pool = Arc::new(
        ThreadPoolExecutor::builder()
            .max_workers(2)
            .thread_name_prefix("rbx")
            .initializer(move || {
                if std::thread::current().name() == Some("rbx_1") {
                    pin_to_cpu0();
                    let until = Instant::now() + HANG;
                    while !g.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::yield_now();
                    }
                    panic!("worker 1's initializer breaks the pool (on purpose)");
                }
            })
            .build()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel::<concurrent_futures::Future<u8>>();
    let pw = pool.clone();
    let (started_tx, started) = mpsc::channel::<()>();
    let waiter = pool.spawn(move || -> Result<usize, String> {
        let _ = started_tx.send(());
        let mut n = 0;
        while let Ok(b) = rx.recv_timeout(HANG) {
            n += 1;
            let t0 = Instant::now();
            if let Err(Error::Timeout { .. }) = b.result(Some(Duration::from_secs(5))) {
                return Err(format!(
                    "task {n} accepted by an outside submit never ended (waited {:?}, done {}; \
                     live workers {}, {:?})",
                    t0.elapsed(),
                    b.done(),
                    pw.live_workers(),
                    pw
                ));
            }
        }
        Ok(n)
    });
    let p = pool.clone();
    // The waiting task runs on worker 0 before the pool can break.
    started
        .recv_timeout(HANG)
        .expect("the waiting task never started");
    let submitter = std::thread::spawn(move || {
        pin_to_cpu0();
        for i in 0..2_000_000usize {
            let b = p.spawn(|| 0u8);
            if i == 0 {
                gate.store(true, Ordering::SeqCst);
            }
            let refused = b.done() && p.live_workers() < 2;
            if tx.send(b).is_err() || refused {
                break;
            }
        }
    });
    submitter.join().unwrap();
    let out = match waiter.result(Some(HANG)) {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.clone()),
        Err(e) => Some(format!("waiter: {e:?}")),
    };
    pool.shutdown(true, false);
    out
}

/// T8 ("every queued future fails with Broken"), with T10: an outside
/// submit whose push lands after the worker whose initializer broke the
/// pool has retired, while the pool's other worker is in a task waiting
/// for that very task, fails the task itself. It left it to the live
/// worker, which waits for it and, the pool being broken, does not run
/// it: the task stayed queued while its waiter waited (for ever with
/// `result(None)`; found by review). Racy by nature: both the submitter
/// and the breaking worker are pinned to CPU 0 to widen the window;
/// rounds run for 10 s or until one fails.
#[test]
fn t8_an_outside_submit_racing_a_break_is_failed_not_left_to_a_waiter_that_cannot_run_it() {
    let start = Instant::now();
    let mut rounds = 0;
    let mut failures = Vec::new();
    while start.elapsed() < Duration::from_secs(10) && rounds < 1000 && failures.is_empty() {
        rounds += 1;
        if let Some(f) = one_round_of_an_outside_submit_racing_a_break() {
            failures.push(format!("round {rounds}: {f}"));
        }
    }
    println!("{rounds} rounds");
    assert!(failures.is_empty(), "{failures:?}");
}
