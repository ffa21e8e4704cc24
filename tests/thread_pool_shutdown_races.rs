//! Thread-pool shutdowns racing what they wait for (no test asserts a
//! duration; every wait has a hang guard): a slow thread-local destructor
//! of a retired worker does not hold `shutdown_within` past its deadline
//! (PP8), and no future is pending once `shutdown(wait = true)` returned,
//! even one whose submit raced it (S3). Found by review.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concurrent_futures::ThreadPoolExecutor;

mod common;
use common::HANG;

/// A thread-local value whose destructor takes a while (a flush, a
/// connection close): here it waits until the test lets it go, 10 s at most.
struct SlowDrop(mpsc::Receiver<()>);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        let _ = self.0.recv_timeout(Duration::from_secs(10));
    }
}

thread_local! {
    static SLOW: std::cell::RefCell<Option<SlowDrop>> = const { std::cell::RefCell::new(None) };
}

/// PP8: `shutdown_within(deadline)` waits at most `deadline`, also when a
/// task left a thread-local whose destructor is slow: the retired workers'
/// threads are joined within the deadline only (a join waits for the
/// thread's thread-local destructors, and held `shutdown_within(100 ms)`
/// for as long as this one ran; found by review). The same join is behind
/// `Pool::join_timeout` and `ShutdownGuard::deadline`.
#[test]
fn pp8_shutdown_within_keeps_its_deadline_when_a_workers_thread_local_destructor_is_slow() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (release, held) = mpsc::channel::<()>();
    pool.spawn(move || SLOW.with(|s| *s.borrow_mut() = Some(SlowDrop(held))))
        .result(Some(HANG))
        .unwrap();
    let p = pool.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(p.shutdown_within(Duration::from_millis(100), false));
    });
    // A hang guard, 50 times the deadline: not a timing measurement.
    let outcome = rx.recv_timeout(Duration::from_secs(5));
    drop(release);
    assert!(
        outcome.is_ok(),
        "shutdown_within(100 ms) still blocked after 5 s, joining a worker \
         whose thread-local destructor runs"
    );
}

/// Writes the name of the thread that drops it.
struct DroppedOn(Arc<std::sync::Mutex<Option<String>>>);

impl Drop for DroppedOn {
    fn drop(&mut self) {
        let me = std::thread::current().name().unwrap_or("?").to_owned();
        *self.0.lock().unwrap() = Some(me);
    }
}

/// S3: once `shutdown(wait = true)` has returned, no future of the pool is
/// pending, not even one whose submit raced the shutdown. A submit that
/// pushes its task after the last worker retired fails what is queued,
/// other racing submitters' tasks included; a racing submitter whose task
/// was taken so waits until that sweep is done before it returns. (It
/// returned with the task taken and not yet failed; found by review,
/// within the first hundred rounds.)
///
/// Racy: six submitters loop on a one-worker pool while it shuts down;
/// each checks, right after its `spawn` returned, whether shutdown had
/// already returned and the future is still pending. Rounds run for 3 s.
#[test]
fn s3_no_future_is_pending_after_shutdown_wait_returned_even_one_whose_submit_raced() {
    let end = Instant::now() + Duration::from_secs(3);
    let (mut rounds, mut pending) = (0usize, Vec::new());
    while Instant::now() < end && pending.is_empty() {
        rounds += 1;
        let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
        let returned = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let racers: Vec<_> = (0..6)
            .map(|i| {
                let (p, r, g) = (pool.clone(), returned.clone(), go.clone());
                let racer = std::thread::Builder::new().name(format!("racer{i}"));
                racer
                    .spawn(move || {
                        while !g.load(Ordering::SeqCst) {
                            std::hint::spin_loop();
                        }
                        let deadline = Instant::now() + HANG;
                        loop {
                            // Records the thread that drops the task unrun:
                            // the one that fails it.
                            let dropped_on = Arc::new(std::sync::Mutex::new(None));
                            let probe = DroppedOn(dropped_on.clone());
                            let f = p.spawn(move || {
                                let _probe = probe;
                                0u8
                            });
                            let after = r.load(Ordering::SeqCst);
                            if after && !f.done() {
                                // Pending after shutdown(wait) returned: how
                                // it ends (it does end, a moment later), and on
                                // which thread.
                                let outcome = f.result(Some(HANG)).map(|_| ());
                                let by = dropped_on.lock().unwrap().clone();
                                let me = std::thread::current().name().unwrap_or("?").to_owned();
                                return Some(format!(
                                    "{outcome:?}, failed on {by:?}, submitted on {me}"
                                ));
                            }
                            // A zero-timeout look between submits (it widens
                            // the race window on a loaded machine).
                            let _ = f.result(Some(Duration::ZERO));
                            if after || Instant::now() > deadline {
                                return None;
                            }
                        }
                    })
                    .unwrap()
            })
            .collect();
        go.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_micros(100));
        let p = pool.clone();
        common::guarded("shutdown(wait = true)", move || p.shutdown(true, false));
        returned.store(true, Ordering::SeqCst);
        for r in racers {
            pending.extend(r.join().unwrap());
        }
    }
    assert!(
        pending.is_empty(),
        "round {rounds}: a future returned by spawn was still pending after \
         shutdown(wait = true) had returned (it later ended with {pending:?})"
    );
}
