//! A pool worker waiting for a task still queued in its pool when the pool
//! no longer runs queued tasks (T10): it fails it in place in a pool
//! broken by an initializer's panic, even one a submit racing the break
//! queued (T8), and cancels it in place during a `cancel_futures`
//! shutdown whose sweep a done-callback holds up (S3, S5), also past the
//! limits on tasks run in place (nesting depth, stack). Every wait has a
//! hang guard; no test asserts a duration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use concurrent_futures::{Error, ThreadPoolExecutor};

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

/// How long the waits that a hang would turn into timeouts are given:
/// far more than ending a queued task takes.
const GUARD: Duration = Duration::from_secs(10);

/// T10 with S5: a task of a one-worker pool shuts it down with
/// `cancel_futures`; the sweep (on the worker) cancels queued task A, whose
/// done-callback (on the worker) waits for queued task B: the wait cancels
/// B in place. It did nothing, trusting the sweep to cancel B, but the
/// sweep was the very thread waiting: B stayed queued until the wait gave
/// up (for ever with `result(None)`; found by review).
#[test]
fn s5_a_sweeps_callback_waiting_on_another_queued_task_of_the_pool_gets_it_cancelled() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (sweeper, a, b, got) =
        a_task_sweeping_while_a_waits_on_b(&pool, |p| p.shutdown(false, true));
    sweeper.result(Some(HANG)).unwrap();
    pool.shutdown(true, false);
    assert!(a.cancelled());
    assert_eq!(
        got,
        Err(Error::Cancelled),
        "a worker waiting (in a sweep's callback) on a task still queued in its pool being \
         shut down with cancel_futures neither ran nor cancelled it: it stayed queued behind \
         the stalled sweep (Timeout = waited the whole {GUARD:?})"
    );
    assert!(b.cancelled());
}

/// S3/S5 with T10: a task of a one-worker pool waits on task B, queued
/// behind task A in the inbox, after an outside
/// `shutdown(cancel_futures = true)` has begun. The sweep cancelled A
/// first, and A's callback, on the sweeping thread, calls
/// `shutdown(wait = true)`, which waits for the worker to retire. The
/// worker cancels B in place and goes on. It did nothing with B, which
/// waited for the sweep: a deadlock (found by review).
#[test]
fn s3_a_sweeps_callback_shutting_down_and_waiting_does_not_deadlock_with_a_task_awaiting_a_queued_task()
 {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (started_tx, started) = mpsc::channel::<()>();
    let (b_tx, b_rx) = mpsc::channel::<concurrent_futures::Future<u8>>();
    let waiter = pool.spawn(move || {
        let _ = started_tx.send(());
        let b = b_rx.recv_timeout(HANG).expect("B never came");
        b.result(Some(GUARD)).copied()
    });
    started.recv_timeout(HANG).expect("the task never started");
    // Both in the inbox behind the busy worker, A first: the sweep takes
    // A first.
    let a = pool.spawn(|| 1u8);
    let b = pool.spawn(|| 2u8);
    let (in_cb_tx, in_cb) = mpsc::channel::<()>();
    let (cb_done_tx, cb_done) = mpsc::channel::<()>();
    {
        let p = pool.clone();
        let in_cb_tx = Mutex::new(in_cb_tx);
        let cb_done_tx = Mutex::new(cb_done_tx);
        a.add_done_callback(move |_| {
            let _ = in_cb_tx.lock().unwrap().send(());
            p.shutdown(true, false);
            let _ = cb_done_tx.lock().unwrap().send(());
        });
    }
    let p = pool.clone();
    let sweeper = std::thread::spawn(move || p.shutdown(false, true));
    in_cb.recv_timeout(HANG).expect("A's callback never ran");
    // The callback is in its shutdown wait by then (ordering only).
    std::thread::sleep(Duration::from_millis(200));
    b_tx.send(b).unwrap();
    let got = waiter.result(Some(HANG)).cloned();
    cb_done
        .recv_timeout(HANG)
        .expect("the callback's shutdown(wait = true) never returned");
    sweeper.join().unwrap();
    pool.shutdown(true, false);
    assert_eq!(
        got,
        Ok(Err(Error::Cancelled)),
        "a task waiting on a queued task during a cancel_futures shutdown whose sweep is held \
         by a callback in shutdown(wait = true) deadlocked (Timeout = waited the whole \
         {GUARD:?})"
    );
}

/// The depth at which a waiting worker stops helping
/// (`thread::worker::MAX_NESTED_RUNS`).
const NESTED: usize = 128;

/// Spawns the next level and waits for it (the wait runs it in place,
/// one nested run deeper), `left` levels down; the last level runs
/// `bottom`.
fn level(
    pool: Arc<ThreadPoolExecutor>,
    left: usize,
    bottom: Arc<dyn Fn() + Send + Sync>,
) -> Result<(), String> {
    if left == 0 {
        bottom();
        return Ok(());
    }
    let p = pool.clone();
    let b = bottom.clone();
    let next = pool.spawn(move || level(p, left - 1, b));
    match next.result(Some(HANG)) {
        Ok(r) => r.clone(),
        Err(e) => Err(format!("{left} levels from the bottom: {e:?}")),
    }
}

/// S5 with T10, at fork-join depth: the sweeping task is 128 nested runs
/// deep (a recursion of tasks each waiting on the next, run in place: the
/// limit on tasks run in place). The sweep cancels queued task A, whose
/// done-callback waits on queued task B: the wait still cancels B in
/// place, which runs no task on top of it. Past the limit, the wait just
/// blocked, with B queued behind the sweep this very thread held up
/// (found by review).
#[test]
fn s5_a_deeply_nested_sweeps_callback_waiting_on_a_queued_task_gets_it_cancelled() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (root, a, b, got) = a_task_sweeping_while_a_waits_on_b(&pool, |p| {
        let sweep = p.clone();
        let bottom: Arc<dyn Fn() + Send + Sync> = Arc::new(move || sweep.shutdown(false, true));
        level(p, NESTED, bottom)
    });
    let chain = root.result(Some(HANG)).cloned();
    pool.shutdown(true, false);
    assert_eq!(
        chain,
        Ok(Ok(())),
        "the chain of nested tasks did not complete"
    );
    assert!(a.cancelled());
    assert_eq!(
        got,
        Err(Error::Cancelled),
        "a worker {NESTED} nested runs deep, waiting (in its own sweep's callback) on a task \
         still queued in its pool being shut down with cancel_futures, did not cancel it in \
         place: it stayed queued behind the stalled sweep (Timeout = waited the whole {GUARD:?})"
    );
    assert!(b.cancelled());
}

/// The lowest address of the calling thread's stack (Linux).
fn stack_low_end() -> usize {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is initialized by pthread_getattr_np on success, and
    // only then read and destroyed.
    unsafe {
        assert_eq!(
            libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()),
            0
        );
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        assert_eq!(
            libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size),
            0
        );
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        addr as usize
    }
}

/// Recurses, 8 KiB a frame, until fewer than `left` bytes of the stack
/// remain, then runs `f` there.
#[inline(never)]
fn dig(low: usize, left: usize, f: &dyn Fn()) {
    let frame = [0u8; 8 << 10];
    let here = std::hint::black_box(&frame) as *const _ as usize;
    if here.saturating_sub(low) > left {
        dig(low, left, f);
    } else {
        f();
    }
    std::hint::black_box(&frame);
}

/// The same without nested tasks: a task deep in its own recursion (past
/// the 256 KiB of stack a waiting worker keeps for a task it runs in
/// place) shuts its one-worker pool down with `cancel_futures`; the
/// sweep's callback of queued A waits on queued B, and cancels B in place,
/// which needs stack only for B's callbacks. The stack check came first:
/// B was left queued behind the sweep this thread held up (found by
/// review).
#[test]
fn s5_a_sweeps_callback_deep_in_a_tasks_stack_waiting_on_a_queued_task_gets_it_cancelled() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (root, a, b, got) = a_task_sweeping_while_a_waits_on_b(&pool, |p| {
        // 192 KiB left: below the 256 KiB reserve, ample for the sweep.
        dig(stack_low_end(), 192 << 10, &|| p.shutdown(false, true));
    });
    root.result(Some(HANG))
        .expect("the root task did not complete");
    pool.shutdown(true, false);
    assert!(a.cancelled());
    assert_eq!(
        got,
        Err(Error::Cancelled),
        "a worker deep in a task's stack, waiting (in its own sweep's callback) on a task \
         still queued in its pool being shut down with cancel_futures, did not cancel it in \
         place (Timeout = waited the whole {GUARD:?})"
    );
    assert!(b.cancelled());
}

type Task = concurrent_futures::Future<u8>;
/// What A's done-callback got from B.
type Seen = mpsc::Receiver<Result<u8, Error>>;

/// Queues task A, then task B (both in the inbox behind a busy worker),
/// and gives A a done-callback that waits on B (at most [`GUARD`]) and
/// sends what it got.
fn a_waiting_on_b_in_its_callback(pool: &ThreadPoolExecutor) -> (Task, Arc<Task>, Seen) {
    let a = pool.spawn(|| 1u8);
    let b = Arc::new(pool.spawn(|| 2u8));
    let (seen_tx, seen) = mpsc::channel();
    let seen_tx = Mutex::new(seen_tx);
    let awaited = b.clone();
    a.add_done_callback(move |_| {
        let got = awaited.result(Some(GUARD)).copied();
        let _ = seen_tx.lock().unwrap().send(got);
    });
    (a, b, seen)
}

/// Runs `sweeping_task` as a task of `pool` (one worker), held until A
/// and B are queued behind it (see [`a_waiting_on_b_in_its_callback`]):
/// the task shuts the pool down with `cancel_futures` somehow, and the
/// sweep, on the worker, reaches A's callback. Returns the task's future,
/// A, B and what A's callback got from B.
fn a_task_sweeping_while_a_waits_on_b<R: Send + Sync + 'static>(
    pool: &Arc<ThreadPoolExecutor>,
    sweeping_task: impl FnOnce(Arc<ThreadPoolExecutor>) -> R + Send + 'static,
) -> (
    concurrent_futures::Future<R>,
    Task,
    Arc<Task>,
    Result<u8, Error>,
) {
    let (started_tx, started) = mpsc::channel::<()>();
    let (go_tx, go) = mpsc::channel::<()>();
    let p = pool.clone();
    let root = pool.spawn(move || {
        let _ = started_tx.send(());
        let _ = go.recv_timeout(HANG);
        sweeping_task(p)
    });
    started
        .recv_timeout(HANG)
        .expect("the sweeping task never started");
    // Both queued in the inbox behind the busy worker, A first: the sweep
    // takes A first.
    let (a, b, seen) = a_waiting_on_b_in_its_callback(pool);
    go_tx.send(()).unwrap();
    let got = seen.recv_timeout(HANG).expect("A's callback never ran");
    (root, a, b, got)
}
