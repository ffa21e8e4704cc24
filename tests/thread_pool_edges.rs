//! Thread-pool edges a review of `src/thread` found untested (no test
//! asserts a duration; every wait has a hang guard):
//!
//! * bugs it found, fixed: a subtask pushed as the pool breaks left to a
//!   waiter that could not run it (T8 with T10), `shutdown(wait = true)`
//!   from a worker's thread-local destructor aborting the process, and
//!   nested helping overflowing a stack that static TLS had made smaller;
//! * coverage the suite lacked: submit-then-wait round trips from several
//!   threads on 1 and 2 workers, `shutdown(wait)` racing submits from
//!   done-callbacks, an initializer that panics on one worker of several,
//!   a panicking task with subtasks queued on its deque, a map inside a
//!   task of a one-worker pool.

mod common;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{HANG, ended_within_hang_guard, guarded, wait, wait_until};
use concurrent_futures::{Error, Executor, ExecutorExt, Future, ThreadPoolExecutor};

const ROUND_GUARD: Duration = Duration::from_secs(10);

/// Runs `round` until `budget` passes (at most `max` rounds); panics if
/// one round's wait times out.
fn for_a_while(budget: Duration, max: usize, mut round: impl FnMut(usize)) -> usize {
    let end = Instant::now() + budget;
    let mut n = 0;
    while n < max && Instant::now() < end {
        round(n);
        n += 1;
    }
    n
}

fn submit_then_wait_rounds(workers: usize, threads: usize) {
    let pool = Arc::new(ThreadPoolExecutor::new(workers).unwrap());
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for_a_while(Duration::from_millis(1000), 50_000, |i| {
                    // Alternate: sometimes let the worker go idle long
                    // enough to park between rounds.
                    if i % 64 == 63 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    let f = pool.spawn(move || i * 2 + t);
                    match f.result(Some(ROUND_GUARD)) {
                        Ok(v) => assert_eq!(*v, i * 2 + t),
                        Err(e) => panic!("lost wake-up? round {i} of thread {t}: {e:?}"),
                    }
                })
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

/// Decision 10 / promise 8: no lost wake-up when a submit races the last
/// worker going to sleep (1 worker, 3 submitting threads).
#[test]
fn stress_submit_one_then_wait_from_three_threads_on_one_worker_never_loses_a_wakeup() {
    submit_then_wait_rounds(1, 3);
}

/// Same with 2 workers.
#[test]
fn stress_submit_one_then_wait_from_three_threads_on_two_workers_never_loses_a_wakeup() {
    submit_then_wait_rounds(2, 3);
}

/// S3: done-callbacks that submit to the same pool race shutdown(wait =
/// true) from another thread: when shutdown returns, every accepted task
/// has ended.
#[test]
fn s3_shutdown_wait_racing_submits_from_done_callbacks_leaves_nothing_unended() {
    for_a_while(Duration::from_millis(1500), 200, |_| {
        let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
        let spawned: Arc<Mutex<Vec<Future<usize>>>> = Arc::default();
        let mut firsts = Vec::new();
        for i in 0..20usize {
            let f = pool.spawn(move || i);
            let (p, s) = (pool.clone(), spawned.clone());
            f.add_done_callback(move |_| {
                let g = p.spawn(move || i + 100);
                s.lock().unwrap().push(g);
            });
            firsts.push(f);
        }
        pool.shutdown(true, false);
        for f in &firsts {
            assert!(f.done(), "a queued task was not ended by shutdown(wait)");
        }
        let v = std::mem::take(&mut *spawned.lock().unwrap());
        for g in v {
            assert!(
                g.done(),
                "a task accepted from a done-callback before shutdown(wait) returned is still pending"
            );
        }
    });
}

/// T8 for one worker only: its initializer panics, the others' do not.
/// Every future resolves (value or Broken), later submits are refused with
/// Broken, and shutdown(wait) returns.
#[test]
fn t8_an_initializer_panicking_on_one_worker_only_breaks_the_pool_and_everything_resolves() {
    for_a_while(Duration::from_millis(1500), 50, |_| {
        let pool = ThreadPoolExecutor::builder()
            .max_workers(4)
            .thread_name_prefix("initp")
            .initializer(|| {
                if std::thread::current().name() == Some("initp_2") {
                    panic!("init of worker 2");
                }
            })
            .build()
            .unwrap();
        let futs: Vec<_> = (0..200usize).map(|i| pool.spawn(move || i)).collect();
        for f in futs {
            match f.result(Some(ROUND_GUARD)) {
                Ok(_) | Err(Error::Broken { .. }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        wait_until("the pool is broken", || {
            format!("{pool:?}").contains("broken: true")
        });
        let late = pool.spawn(|| 1u8);
        assert!(matches!(
            late.result(Some(ROUND_GUARD)),
            Err(Error::Broken { .. })
        ));
        let p = Arc::new(pool);
        let p2 = p.clone();
        assert!(
            ended_within_hang_guard(move || p2.shutdown(true, false)).is_some(),
            "shutdown(wait) of a broken pool hung"
        );
    });
}

/// A task that pushed subtasks to its own deque and then panics: its
/// subtasks still run, the panic is its error, the worker lives.
#[test]
fn t6_a_task_panicking_with_subtasks_queued_on_its_deque_loses_none_of_them() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let subs: Arc<Mutex<Vec<Future<usize>>>> = Arc::default();
    let (p, s) = (pool.clone(), subs.clone());
    let parent = pool.spawn(move || {
        for i in 0..50usize {
            s.lock().unwrap().push(p.spawn(move || i));
        }
        panic!("parent fails with its subtasks queued");
    });
    assert!(matches!(
        parent.result(Some(HANG)),
        Err(Error::Panicked { .. })
    ));
    let v = std::mem::take(&mut *subs.lock().unwrap());
    for (i, f) in v.into_iter().enumerate() {
        assert_eq!(wait(f), Ok(i));
    }
    assert_eq!(wait(pool.spawn(|| 7u8)), Ok(7));
}

fn double(x: u64) -> u64 {
    x * 2
}

/// T10: an ordered map run inside a task of a one-worker pool completes
/// (its items are queued behind the task that waits on them).
#[test]
fn t10_a_map_inside_a_task_of_a_one_worker_pool_completes() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let p = pool.clone();
    let f = pool.spawn(move || p.map(double, 0..300u64).map(|r| r.unwrap()).sum::<u64>());
    assert_eq!(wait(f), Ok((0..300u64).map(|x| x * 2).sum()));
}

const TLS_MARKER: &str = "CF_REVIEW_THREAD_POOL_TLS_HELPER";

/// Calls `shutdown(wait = true)` on its pool when dropped.
struct ShutsDownOnDrop(Arc<ThreadPoolExecutor>);

impl Drop for ShutsDownOnDrop {
    fn drop(&mut self) {
        self.0.shutdown(true, false);
        println!("shutdown from the thread-local destructor returned");
    }
}

thread_local! {
    static HELD: std::cell::RefCell<Option<ShutsDownOnDrop>> = const { std::cell::RefCell::new(None) };
}

/// The helper of the next test (run in a child process: the bug aborts it).
#[test]
#[ignore = "helper: run by shutdown_wait_from_a_workers_thread_local_destructor_does_not_abort"]
fn helper_shutdown_wait_from_a_workers_thread_local_destructor() {
    if std::env::var_os(TLS_MARKER).is_none() {
        return;
    }
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let p = pool.clone();
    wait(pool.spawn(move || HELD.with(|h| *h.borrow_mut() = Some(ShutsDownOnDrop(p))))).unwrap();
    // The worker retires, then its thread-locals are destroyed: the
    // holder's drop waits for the pool's workers from that very worker.
    pool.shutdown(false, false);
    wait_until("the worker has exited", || pool.live_workers() == 0);
    // Give the worker thread's thread-local destructors time to run.
    std::thread::sleep(Duration::from_millis(300));
    println!("helper done");
}

/// Promise 1 / 7 ("waiting ... from a user's thread-local destructor
/// neither panics nor aborts"): a worker's thread-local whose destructor
/// calls `shutdown(wait = true)` on the worker's own pool (a per-thread
/// guard of the pool) must not abort the process. Once its loop has
/// ended the worker no longer counts as the pool's own thread, so the
/// shutdown joins every worker handle, its own included: `pthread_join`
/// on itself fails with EDEADLK, std's `join` panics, and a panic in a
/// thread-local destructor aborts.
#[test]
fn shutdown_wait_from_a_workers_thread_local_destructor_does_not_abort() {
    let cmd = common::helper_command(
        "helper_shutdown_wait_from_a_workers_thread_local_destructor",
        TLS_MARKER,
    );
    let out = common::run_helper(cmd, HANG);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("helper done"), "{stdout}");
}

const TLS_STACK_MARKER: &str = "CF_REVIEW_THREAD_POOL_TLS_STACK_HELPER";

thread_local! {
    /// A per-thread scratch buffer with a constant initializer: it lives
    /// in the program's static TLS block, which glibc carves out of the
    /// top of every thread's stack (here half a MiB of the 2 MiB).
    static SCRATCH: std::cell::RefCell<[u8; 512 << 10]> =
        const { std::cell::RefCell::new([0; 512 << 10]) };
}

type Links = Arc<std::sync::OnceLock<Vec<Future<usize>>>>;

/// Link `i`: 32 KiB of locals, then a wait on link `i + 1` (hang guard).
fn scratch_link(links: &Links, i: usize) -> usize {
    let mut buf = [0u8; 32 << 10];
    buf[i % buf.len()] = i as u8;
    let buf = std::hint::black_box(buf);
    if let Some(next) = links.get().unwrap().get(i + 1) {
        let _ = next.result(Some(Duration::from_secs(1)));
    }
    std::hint::black_box(&buf)[i % buf.len()] as usize
}

/// The helper of the next test (a stack overflow aborts it).
#[test]
#[ignore = "helper: run by t10_nesting_stops_before_the_stack_ends_when_static_tls_takes_part_of_it"]
fn helper_t10_chain_with_a_program_using_static_tls() {
    if std::env::var_os(TLS_STACK_MARKER).is_none() {
        return;
    }
    SCRATCH.with(|s| s.borrow_mut()[1] = 1);
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let gate = pool.spawn(move || {
        let _ = rx.recv_timeout(HANG);
        SCRATCH.with(|s| s.borrow()[1])
    });
    let links: Links = Arc::default();
    let futs: Vec<_> = (0..48usize)
        .map(|i| {
            let l = links.clone();
            pool.spawn(move || scratch_link(&l, i))
        })
        .collect();
    links.set(futs).ok().unwrap();
    tx.send(()).unwrap();
    wait(gate).unwrap();
    for f in links.get().unwrap() {
        // Links past the nesting budget time out: that is fine.
        let _ = f.result(Some(Duration::from_secs(20)));
    }
    println!("chain done");
}

/// T10 (RELIABILITY: "nesting now also stops 256 KiB short of the stack's
/// end"): a waiting worker must stop running tasks nested on its stack
/// before the stack runs out, also in a program whose static TLS (a
/// `thread_local!` with a const initializer holding an array) takes part
/// of every thread's stack. The budget assumes the whole 2 MiB is stack
/// (`worker.rs` `NESTING_STACK_BUDGET`), so with 512 KiB of TLS the chain
/// of 32 KiB-frame tasks overflows the worker's stack and aborts the
/// process.
#[test]
fn t10_nesting_stops_before_the_stack_ends_when_static_tls_takes_part_of_it() {
    let mut cmd = common::helper_command(
        "helper_t10_chain_with_a_program_using_static_tls",
        TLS_STACK_MARKER,
    );
    cmd.env_remove("RUST_MIN_STACK");
    let out = common::run_helper(cmd, Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain done"));
}

/// Pins the calling thread to CPU 0.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// T8 with T10: a task's subtask whose submit passed the pool's
/// shut-down check just before another worker's initializer broke the
/// pool, and whose push landed after that worker failed the queues and
/// retired, must end (failed with `Broken`), not stay queued on the
/// waiting task's own deque forever.
///
/// The waiting worker cannot run it (a broken pool's `Fate::Fail` skips
/// T10's step 1), its deque boundary hides it from step 2 once the failing
/// sweep stole the older entries below the boundary, no other worker is
/// left to take it, and the waiting task waits forever (so does
/// `shutdown(wait = true)`). A submit that races a `cancel_futures`
/// shutdown the same way sweeps again after its push (registry.rs
/// `inject`); one that races a break does nothing.
///
/// The race needs the waiting worker preempted between the check and the
/// push: worker 0 and worker 1 (whose initializer breaks the pool) share
/// CPU 0, so worker 1 runs its whole break while worker 0 is preempted at
/// a random point of a tight spawn-and-wait loop.
#[test]
fn t8_a_subtask_pushed_as_the_pool_breaks_is_failed_not_left_to_a_waiter_that_cannot_run_it() {
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(5) && rounds < 1000 {
        rounds += 1;
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let g = gate.clone();
        let pool = ThreadPoolExecutor::builder()
            .max_workers(2)
            .thread_name_prefix("brk")
            .initializer(move || {
                if std::thread::current().name() == Some("brk_1") {
                    pin_to_cpu0();
                    let until = Instant::now() + HANG;
                    while !g.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::yield_now();
                    }
                    panic!("worker 1's initializer breaks the pool");
                }
            })
            .build()
            .unwrap();
        let pool = Arc::new(pool);
        let p = pool.clone();
        let root = pool.spawn(move || -> Result<usize, String> {
            pin_to_cpu0();
            // Stays queued below the boundary of every task run in place
            // here (worker 1 is still in its initializer).
            let _filler = p.spawn(|| 0u8);
            for i in 0..1_000_000usize {
                let p2 = p.clone();
                let t = p.spawn(move || {
                    let s = p2.spawn(|| 0u8);
                    match s.result(Some(Duration::from_secs(3))) {
                        Err(Error::Timeout { .. }) => Err(format!(
                            "live workers {}, {:?}",
                            p2.live_workers(),
                            p2
                        )),
                        _ => Ok(()),
                    }
                });
                if i == 0 {
                    gate.store(true, Ordering::SeqCst);
                }
                match t.result(Some(HANG)) {
                    Ok(Ok(())) => {}
                    Ok(Err(state)) => {
                        return Err(format!(
                            "iteration {i}: a subtask accepted as the pool broke never ended ({state})"
                        ))
                    }
                    Err(Error::Broken { .. }) => return Ok(i),
                    Err(e) => return Err(format!("iteration {i}: {e:?}")),
                }
            }
            Ok(usize::MAX)
        });
        match root.result(Some(HANG)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("round {rounds}: {e}"),
            Err(e) => panic!("round {rounds}: root {e:?}"),
        }
        let p3 = pool.clone();
        assert!(
            ended_within_hang_guard(move || p3.shutdown(true, false)).is_some(),
            "round {rounds}: shutdown(wait) hung"
        );
    }
    println!("{rounds} rounds");
}

/// More submitting threads than cores: one is often descheduled between
/// its two looks at the shut-down flag, which is what the race needs.
const RACERS: usize = 6;

/// S3 ("`shutdown(wait=True)` blocks until every queued and running
/// future has finished"), and the registry's own rule that a thread ending
/// queued tasks outside the workers counts as one while it does, since
/// their done-callbacks run there (`Live::sweepers`).
///
/// A first fix of the subtask stranded as the pool breaks (above) made
/// `Registry::inject` call `fail_queued()` whenever a push saw the pool
/// broken, also on a submitting thread that is no worker (`external`). That thread then takes *every* queued task of the pool,
/// other threads' tasks submitted long before among them, and fails them,
/// running their done-callbacks, without being counted (`cancel_queued`
/// enters a `Sweep`; `fail_queued` does not). The workers find the queues
/// empty and retire, and `shutdown(wait = true)` on a third thread returns
/// while a queued task's callback is still running (or before the task is
/// even failed: it is stolen, not yet failed).
///
/// Racy by nature (a submit must be between its two looks at the
/// shut-down flag as the initializer's panic breaks the pool), so it runs
/// rounds until a submitter fails a queued task (on the current code: in
/// the first round or two). The break's own sweep takes 200 µs per
/// callback, so a submitter that joins it gets some of the 200 tasks.
/// Without the bug, no round ever runs a queued task's callback on a
/// submitter and the test passes after its time budget.
#[test]
fn s3_shutdown_wait_waits_for_callbacks_of_queued_tasks_a_racing_submit_fails_on_a_broken_pool() {
    let end = Instant::now() + Duration::from_secs(3);
    let (mut rounds, mut on_submitter, mut early) = (0, 0, 0);
    while Instant::now() < end && rounds < 2000 && early == 0 {
        rounds += 1;
        let init_gate = common::Gate::new();
        let g = init_gate.clone();
        let pool = Arc::new(
            ThreadPoolExecutor::builder()
                .max_workers(1)
                .thread_name_prefix("brk")
                .initializer(move || {
                    g.wait();
                    panic!("the initializer fails");
                })
                .build()
                .unwrap(),
        );
        // Queued long before the race: ordinary tasks of the pool, each
        // with a done-callback that takes a while (logs, I/O) when it runs
        // on a submitting thread.
        let in_cb_on_racer = Arc::new(AtomicUsize::new(0));
        let cbs_finished_on_racer = Arc::new(AtomicUsize::new(0));
        let queued: Vec<_> = (0..200)
            .map(|_| {
                let f = pool.spawn(|| 0usize);
                let (inn, fin) = (in_cb_on_racer.clone(), cbs_finished_on_racer.clone());
                f.add_done_callback(move |_| {
                    let name = std::thread::current().name().unwrap_or("").to_string();
                    if name.starts_with("racer") {
                        inn.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                        fin.fetch_add(1, Ordering::SeqCst);
                    } else {
                        // The break's own sweep takes a moment per task,
                        // as real callbacks do.
                        std::thread::sleep(Duration::from_micros(200));
                    }
                });
                f
            })
            .collect();
        let spawned = Arc::new(AtomicUsize::new(0));
        let racers_done = Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = (0..RACERS)
            .map(|r| {
                let (p, s, d) = (pool.clone(), spawned.clone(), racers_done.clone());
                std::thread::Builder::new()
                    .name(format!("racer{r}"))
                    .spawn(move || {
                        let deadline = Instant::now() + HANG;
                        loop {
                            let f = p.spawn(|| 0usize);
                            s.fetch_add(1, Ordering::SeqCst);
                            if f.done() || Instant::now() > deadline {
                                break;
                            }
                        }
                        d.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
            })
            .collect();
        wait_until("the racers submit", || spawned.load(Ordering::SeqCst) >= 20);
        init_gate.open();
        wait_until("the racers end or run a queued task's callback", || {
            racers_done.load(Ordering::SeqCst) == RACERS
                || in_cb_on_racer.load(Ordering::SeqCst) > 0
        });
        if in_cb_on_racer.load(Ordering::SeqCst) > 0 {
            on_submitter += 1;
            let p = pool.clone();
            guarded("shutdown(wait)", move || p.shutdown(true, false));
            if cbs_finished_on_racer.load(Ordering::SeqCst) < in_cb_on_racer.load(Ordering::SeqCst)
            {
                early += 1;
            }
        }
        for r in racers {
            guarded("a racer", move || r.join().unwrap());
        }
        for f in queued {
            assert!(matches!(f.result(Some(HANG)), Err(Error::Broken { .. })));
        }
    }
    eprintln!(
        "{rounds} rounds; a submitter failed queued tasks in {on_submitter}; \
         shutdown(wait) returned during their callbacks in {early}"
    );
    assert_eq!(
        early, 0,
        "shutdown(wait = true) returned while a queued task's done-callback still ran \
         on a submitting thread that failed it (Registry::inject -> fail_queued, no Sweep)"
    );
}
