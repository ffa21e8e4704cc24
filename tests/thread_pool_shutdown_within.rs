//! `shutdown_within` and raced submits on a thread pool, after review:
//! `shutdown_within` says `TimedOut` while a retired worker's thread
//! still runs its thread-locals' destructors, and a later
//! `shutdown(wait = true)` waits for that thread (PP8, S3); a submit that
//! races a `cancel_futures` shutdown does not wait for that shutdown's
//! sweep, whose callbacks may wait for it (S3, S5); concurrent callers of
//! `shutdown(wait = true)` all wait for the worker threads. No test asserts a
//! duration; every wait has a hang guard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use concurrent_futures::{ShutdownOutcome, ThreadPoolExecutor};

mod common;
use common::{HANG, wait_for};

/// A thread-local value whose destructor takes a while (a flush, a
/// connection close) and records that it finished.
struct SlowDrop {
    held: mpsc::Receiver<()>,
    finished: Arc<AtomicBool>,
}

impl Drop for SlowDrop {
    fn drop(&mut self) {
        // Held until the test lets it go (or 3 s pass).
        let _ = self.held.recv_timeout(Duration::from_secs(3));
        self.finished.store(true, Ordering::SeqCst);
    }
}

thread_local! {
    static SLOW: std::cell::RefCell<Option<SlowDrop>> = const { std::cell::RefCell::new(None) };
}

/// A one-worker pool whose worker holds a slow thread-local destructor;
/// the sender releases it, the flag says it finished.
fn pool_with_a_slow_thread_local() -> (Arc<ThreadPoolExecutor>, mpsc::Sender<()>, Arc<AtomicBool>) {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (release, held) = mpsc::channel::<()>();
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    pool.spawn(move || SLOW.with(|s| *s.borrow_mut() = Some(SlowDrop { held, finished: f })))
        .result(Some(HANG))
        .unwrap();
    (pool, release, finished)
}

/// Calls `shutdown(wait = true)` on a thread of its own, which then says
/// whether the worker thread's destructor had `finished` when it returned.
fn shutdown_wait_on_a_thread(
    pool: &Arc<ThreadPoolExecutor>,
    finished: &Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, mpsc::Receiver<bool>) {
    let (p, f) = (pool.clone(), finished.clone());
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        p.shutdown(true, false);
        let _ = tx.send(f.load(Ordering::SeqCst));
    });
    (waiter, rx)
}

/// S3: "`shutdown(wait=True)` blocks until ... the workers have exited".
/// After a `shutdown_within` whose joins it left to the "cf-thread-joiner"
/// thread (ce0bedc), the handles are gone from the registry, so a later
/// `shutdown(wait = true)` joins nothing and returns while the worker
/// thread still runs (its thread-local destructor, still holding what it
/// flushes). Before ce0bedc, `shutdown_within` had joined it.
#[test]
fn s3_shutdown_wait_after_a_shutdown_within_waits_for_the_worker_threads() {
    let (pool, release, finished) = pool_with_a_slow_thread_local();
    let _ = pool.shutdown_within(Duration::from_millis(100), false);
    let (waiter, rx) = shutdown_wait_on_a_thread(&pool, &finished);
    // The destructor is let go a moment later (ordering only).
    std::thread::sleep(Duration::from_millis(200));
    drop(release);
    let at_return = rx.recv_timeout(HANG);
    waiter.join().unwrap();
    assert_eq!(
        at_return,
        Ok(true),
        "shutdown(wait = true) returned while the worker thread still ran its \
         thread-local destructor"
    );
}

/// `ShutdownOutcome::Finished`: "Every task ended and every worker exited
/// before the deadline." `join_by` does not report whether the joins
/// finished in time, so `shutdown_within` says `Finished` while the worker
/// thread is still running (its destructor is held well past the deadline).
#[test]
fn pp8_shutdown_within_does_not_say_finished_while_a_worker_thread_still_runs() {
    let (pool, release, finished) = pool_with_a_slow_thread_local();
    let outcome = pool.shutdown_within(Duration::from_millis(100), false);
    let still_running = !finished.load(Ordering::SeqCst);
    drop(release);
    assert!(
        !(outcome == ShutdownOutcome::Finished && still_running),
        "shutdown_within returned {outcome:?} while the worker thread had not exited"
    );
}

static STALL: AtomicBool = AtomicBool::new(false);
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

/// SIGUSR1 handler: holds the thread it interrupts (wherever it was) until
/// `STALL` is cleared. Atomics and `nanosleep` only (async-signal-safe).
extern "C" fn stall_here(_: libc::c_int) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    while STALL.load(Ordering::SeqCst) {
        let t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000,
        };
        // SAFETY: a valid timespec; no remainder wanted.
        unsafe { libc::nanosleep(&t, std::ptr::null_mut()) };
    }
    IN_HANDLER.store(false, Ordering::SeqCst);
}

fn install_stall_handler() {
    // SAFETY: installs a handler that only touches atomics and sleeps.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = stall_here as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// One round: S submits in a loop to a one-worker pool whose worker is
/// held by B; C, queued first, has a done-callback that hands a token to S
/// (a rendezvous channel S drains between submits: a bounded pipeline).
/// S is stopped by a signal at a random point of its loop; Z calls
/// `shutdown(cancel_futures = true)`, whose sweep takes C and blocks in its
/// callback until S drains; B is released, the worker cancels the rest and
/// retires; S is let go. Returns whether S's `spawn` stayed blocked.
fn one_round_of_a_raced_submit_waiting_for_a_sweep_that_waits_for_it() -> Option<bool> {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (b_go, b_wait) = mpsc::channel::<()>();
    let b = pool.spawn(move || {
        let _ = b_wait.recv_timeout(HANG);
    });
    if !wait_for(HANG, || b.running()) {
        return None;
    }
    let (cb_tx, cb_rx) = mpsc::sync_channel::<()>(0);
    let cb_rx = Arc::new(Mutex::new(cb_rx));
    let (entered, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let c = pool.spawn(|| ());
    {
        let (entered, done) = (entered.clone(), done.clone());
        c.add_done_callback(move |_| {
            entered.store(true, Ordering::SeqCst);
            let _ = cb_tx.send(());
            done.store(true, Ordering::SeqCst);
        });
    }
    let (tid_tx, tid_rx) = mpsc::channel();
    let (p, rx, d) = (pool.clone(), cb_rx.clone(), done.clone());
    let s = std::thread::spawn(move || {
        // SAFETY: no arguments.
        let _ = tid_tx.send(unsafe { libc::pthread_self() } as usize);
        loop {
            let f = p.spawn(|| ());
            while rx.lock().unwrap().try_recv().is_ok() {}
            if f.done() {
                break;
            }
        }
        // Lets C's callback through, if it still waits.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while !d.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            let _ = rx.lock().unwrap().try_recv();
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    let tid = tid_rx.recv_timeout(HANG).unwrap();
    std::thread::sleep(Duration::from_micros(300));
    STALL.store(true, Ordering::SeqCst);
    // SAFETY: `tid` is S's pthread_t; S is alive (it loops until refused,
    // and nothing refuses before the shutdown below).
    unsafe { libc::pthread_kill(tid as libc::pthread_t, libc::SIGUSR1) };
    let mut result = None;
    if wait_for(HANG, || IN_HANDLER.load(Ordering::SeqCst)) {
        let p = pool.clone();
        let z = std::thread::spawn(move || p.shutdown(false, true));
        // (Not within 100 ms: S was stopped inside malloc holding its
        // arena's lock, which Z needs; the round is void.)
        if wait_for(Duration::from_millis(100), || {
            entered.load(Ordering::SeqCst)
        }) {
            let _ = b_go.send(());
            if wait_for(HANG, || pool.live_workers() == 0) {
                STALL.store(false, Ordering::SeqCst);
                let stuck = !wait_for(Duration::from_secs(3), || s.is_finished());
                result = Some(stuck);
            }
        }
        STALL.store(false, Ordering::SeqCst);
        let _ = b_go.send(());
        // Unblocks C's callback (and with it the sweep, and S).
        let until = std::time::Instant::now() + HANG;
        while !done.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            let _ = cb_rx.lock().unwrap().try_recv();
            std::thread::sleep(Duration::from_micros(100));
        }
        z.join().unwrap();
    }
    STALL.store(false, Ordering::SeqCst);
    s.join().unwrap();
    result
}

/// S3, S5: a submit that races `shutdown(cancel_futures = true)` on
/// another thread, whose sweep runs the done-callbacks of what it
/// cancelled, returns: it does not wait for that sweep, and so does not
/// deadlock with a callback that waits for the submitting thread (here, a
/// bounded hand-over the submitter drains between submits). A first fix
/// of raced submits (waiting for every sweep) deadlocked within seconds;
/// found by review. Racy by nature (the submit must straddle the shutdown
/// flag): a signal stops the submitter at random points of its loop to
/// widen that window. Rounds run for 10 s or until one sticks.
#[test]
fn s3_a_raced_submit_does_not_wait_for_a_cancelling_sweep_whose_callback_waits_for_it() {
    install_stall_handler();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let (mut rounds, mut stuck) = (0, 0);
    while std::time::Instant::now() < end && stuck == 0 {
        if let Some(s) = one_round_of_a_raced_submit_waiting_for_a_sweep_that_waits_for_it() {
            rounds += 1;
            stuck += s as usize;
        }
    }
    assert_eq!(
        stuck, 0,
        "round {rounds}: a spawn that raced shutdown(cancel_futures = true) stayed \
         blocked (3 s) waiting for that shutdown's sweep, whose done-callback waited \
         for the spawning thread"
    );
}

/// A thread-local whose destructor waits for `go`, then (optionally)
/// shuts its own pool down with `wait = true`, then records it finished.
struct Dtor {
    go: mpsc::Receiver<()>,
    pool: Option<Arc<ThreadPoolExecutor>>,
    finished: Arc<AtomicBool>,
}

impl Drop for Dtor {
    fn drop(&mut self) {
        let _ = self.go.recv_timeout(Duration::from_secs(3));
        if let Some(p) = self.pool.take() {
            p.shutdown(true, false);
        }
        self.finished.store(true, Ordering::SeqCst);
    }
}

thread_local! {
    static D: std::cell::RefCell<Option<Dtor>> = const { std::cell::RefCell::new(None) };
}

fn pool_with_a_shutting_thread_local(
    shut_self: bool,
) -> (Arc<ThreadPoolExecutor>, mpsc::Sender<()>, Arc<AtomicBool>) {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (go_tx, go) = mpsc::channel::<()>();
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let me = shut_self.then(|| pool.clone());
    pool.spawn(move || {
        D.with(|d| {
            *d.borrow_mut() = Some(Dtor {
                go,
                pool: me,
                finished: f,
            })
        })
    })
    .result(Some(HANG))
    .unwrap();
    (pool, go_tx, finished)
}

/// S3: after a `shutdown_within` timed out (its joiner still joins the
/// worker's thread), a worker whose thread-local destructor calls
/// `shutdown(wait = true)` on its own pool returns: it does not join the
/// joiner that joins itself (it did, a deadlock; found by review).
#[test]
fn s3_a_worker_dtor_shutdown_wait_after_a_timed_out_shutdown_within_does_not_deadlock() {
    let (pool, go, finished) = pool_with_a_shutting_thread_local(true);
    let _ = pool.shutdown_within(Duration::from_millis(100), false);
    go.send(()).unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if finished.load(Ordering::SeqCst) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ok,
        "the worker's thread-local destructor never returned from shutdown(wait = true): \
         it joins the cf-thread-joiner that joins it"
    );
}

/// Starts a `shutdown(wait = true)` on a thread of its own and returns
/// once it is joining the (retired) worker, as far as ordering by a pause
/// can tell: the worker's destructor holds that join.
fn a_caller_joining_the_worker(pool: &Arc<ThreadPoolExecutor>) -> std::thread::JoinHandle<()> {
    let p = pool.clone();
    let caller = std::thread::spawn(move || p.shutdown(true, false));
    assert!(wait_for(HANG, || pool.live_workers() == 0));
    std::thread::sleep(Duration::from_millis(100));
    caller
}

/// S3: of two threads calling `shutdown(wait = true)` at once, the second
/// also returns only once the worker thread has exited: it waits for the
/// first caller's join. It found the handles taken and returned while the
/// worker's thread-local destructor still ran (found by review).
#[test]
fn s3_a_second_concurrent_shutdown_wait_waits_for_the_worker_threads_too() {
    let (pool, release, finished) = pool_with_a_slow_thread_local();
    let first = a_caller_joining_the_worker(&pool);
    let (second, rx) = shutdown_wait_on_a_thread(&pool, &finished);
    std::thread::sleep(Duration::from_millis(200));
    drop(release);
    let at_return = rx.recv_timeout(HANG);
    second.join().unwrap();
    first.join().unwrap();
    assert_eq!(
        at_return,
        Ok(true),
        "the second shutdown(wait = true) returned while the worker thread still ran \
         its thread-local destructor"
    );
}

/// S3: a `shutdown_within` that arrives while another thread's
/// `shutdown(wait = true)` joins a worker held in its destructor keeps its
/// deadline and says `TimedOut`: the worker thread has not exited.
#[test]
fn pp8_shutdown_within_during_another_callers_join_times_out_while_the_worker_runs() {
    let (pool, release, finished) = pool_with_a_slow_thread_local();
    let first = a_caller_joining_the_worker(&pool);
    let outcome = pool.shutdown_within(Duration::from_millis(100), false);
    let still_running = !finished.load(Ordering::SeqCst);
    drop(release);
    first.join().unwrap();
    assert!(
        still_running,
        "ordering of the test: the destructor ended early"
    );
    assert_eq!(outcome, ShutdownOutcome::TimedOut);
}

/// S3: a worker whose thread-local destructor calls `shutdown(wait =
/// true)` on its own pool while another thread's `shutdown(wait = true)`
/// joins that very worker returns (it cannot wait for a join of itself),
/// and so does the other caller.
#[test]
fn s3_a_worker_dtor_shutdown_wait_during_another_callers_join_of_it_returns() {
    let (pool, go, finished) = pool_with_a_shutting_thread_local(true);
    let outside = a_caller_joining_the_worker(&pool);
    go.send(()).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || finished.load(Ordering::SeqCst)),
        "the worker's thread-local destructor never returned from shutdown(wait = true): \
         it waits for the join of itself"
    );
    assert!(wait_for(HANG, || outside.is_finished()));
    outside.join().unwrap();
}
