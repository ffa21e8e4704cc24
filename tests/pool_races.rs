//! The `Pool` facade (src/pool) under races: its lifecycle (`close`,
//! `join`, `terminate`, drop) against submits on other threads, callbacks
//! and `AsyncResult`s while it ends, `imap` after `terminate`, and the two
//! bugs a review found (a second `terminate` returning early, a task
//! joining its own pool). Every timeout is a hang guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concurrent_futures::{AsyncResult, Callbacks, Error, MapOptions, Pool, ThreadPool};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::keyed::{gated, open_gate, started};
use common::{HANG, guarded, wait_until};

/// Accepted results, each with the count of its callbacks that ran.
type Tracked<T> = Arc<Mutex<Vec<(AsyncResult<T>, Arc<AtomicUsize>)>>>;

fn procs(n: usize) -> Pool {
    Pool::builder().processes(n).test_harness().build().unwrap()
}

fn threads(n: usize) -> ThreadPool {
    ThreadPool::new(n).unwrap()
}

fn square(x: u64) -> u64 {
    x * x
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Callbacks that count how many of them ran, and the count.
fn counting<T: 'static>() -> (Callbacks<T>, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let (a, b) = (n.clone(), n.clone());
    let cbs = Callbacks::new()
        .callback(move |_: &T| {
            a.fetch_add(1, Ordering::SeqCst);
        })
        .error_callback(move |_| {
            b.fetch_add(1, Ordering::SeqCst);
        });
    (cbs, n)
}

/// How a submitter thread submits its `i`th job (thread `t`).
type Submit<T> = fn(&Pool, u64, u64, Callbacks<T>) -> Result<AsyncResult<T>, Error>;

/// MP24 under a race, 30 rounds: `submitters` threads submit with `submit`
/// until the pool refuses, and `terminate` races them. When it returns,
/// every accepted result is ready, exactly one of its callbacks ran, and
/// `successful` agrees with `get`; `join` then returns.
fn terminate_racing_submits<T: Send + Sync + 'static>(submitters: u64, submit: Submit<T>) {
    for round in 0..30 {
        let pool = Arc::new(threads(2).into_pool());
        let results: Tracked<T> = Arc::new(Mutex::new(Vec::new()));
        let hs: Vec<_> = (0..submitters)
            .map(|t| {
                let (pool, results) = (pool.clone(), results.clone());
                std::thread::spawn(move || {
                    for i in 0u64.. {
                        let (cbs, n) = counting();
                        match submit(&pool, t, i, cbs) {
                            Ok(r) => results.lock().unwrap().push((r, n)),
                            Err(Error::Shutdown) => break,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + round % 5));
        pool.terminate();
        for h in hs {
            h.join().unwrap();
        }
        for (i, (r, n)) in results.lock().unwrap().iter().enumerate() {
            assert!(
                r.ready(),
                "round {round}: job {i} not ready after terminate"
            );
            assert_eq!(
                n.load(Ordering::SeqCst),
                1,
                "round {round}: job {i} callbacks"
            );
            assert_eq!(
                r.successful(),
                Ok(r.get(None).is_ok()),
                "round {round}: job {i}"
            );
        }
        let p = pool.clone();
        guarded("join after terminate", move || p.join()).unwrap();
    }
}

#[test]
fn mp24_terminate_racing_apply_async_leaves_every_result_ready_with_one_callback() {
    terminate_racing_submits(3, |pool, t, i, cbs| {
        if i % 7 == 0 {
            pool.apply_async_with(sleepy, 1, cbs)
        } else {
            pool.apply_async_with(square, i + t, cbs)
        }
    });
}

#[test]
fn mp24_terminate_racing_map_async_leaves_every_result_ready_with_one_callback() {
    terminate_racing_submits(2, |pool, _, i, cbs| {
        pool.map_async_with(square, 0..(i % 20), Some(3), cbs)
    });
}

/// close()/join() racing submitters: after join every accepted job is
/// ready and succeeded.
#[test]
fn mp23_close_and_join_racing_submits_leave_every_accepted_result_done() {
    for round in 0..30 {
        let pool = Arc::new(threads(2).into_pool());
        let results: Arc<Mutex<Vec<AsyncResult<u64>>>> = Arc::new(Mutex::new(Vec::new()));
        let mut hs = Vec::new();
        for _ in 0..3 {
            let pool = pool.clone();
            let results = results.clone();
            hs.push(std::thread::spawn(move || {
                for i in 0u64.. {
                    match pool.apply_async(square, i) {
                        Ok(r) => results.lock().unwrap().push(r),
                        Err(Error::Shutdown) => break,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(2 + round % 5));
        pool.close();
        guarded("join", {
            let pool = pool.clone();
            move || pool.join()
        })
        .unwrap();
        for h in hs {
            h.join().unwrap();
        }
        for r in results.lock().unwrap().iter() {
            assert!(r.ready());
            assert!(r.get(None).is_ok(), "{:?}", r.get(None));
        }
    }
}

/// A process pool's imap with tasks in flight, terminated from another
/// thread, ends (no hang), each item exactly once or failed.
#[test]
fn mp24_a_process_pools_imap_ends_after_terminate() {
    for chunks in [None, Some(3)] {
        let pool = Arc::new(procs(2));
        let p = pool.clone();
        let out = guarded("imap after terminate", move || {
            let mut opts = MapOptions::new().window(6);
            if let Some(c) = chunks {
                opts = opts.chunksize(c);
            }
            let mut it = p
                .imap_with(sleepy, std::iter::repeat_n(20u64, 200), opts)
                .unwrap();
            let mut got = vec![it.next().unwrap()];
            p.terminate();
            got.extend(it);
            got
        });
        assert!(out.len() < 200, "{}", out.len());
        guarded("join", move || pool.join()).unwrap();
    }
}

/// maxtasksperchild = 1 with close() before the work is done, then join
/// (MP22 early close).
#[test]
fn mp22_close_before_the_work_is_done_then_join_returns_with_every_result() {
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .maxtasksperchild(1)
            .test_harness()
            .build()
            .unwrap(),
    );
    let rs: Vec<_> = (0..8u64)
        .map(|i| pool.apply_async(square, i).unwrap())
        .collect();
    let m = pool.map_async(square, 0..20u64).unwrap();
    pool.close();
    let p = pool.clone();
    guarded("join", move || p.join()).unwrap();
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.get(None), Ok(&((i * i) as u64)));
    }
    assert_eq!(m.get(None).unwrap().len(), 20);
}

/// `terminate()` promises that "when terminate returns, every AsyncResult
/// of the pool is ready", and that a second caller "returns only once the
/// first has ended every result". When the first terminate() runs in a pool
/// callback (the handler-thread path, which takes no `terminating` lock),
/// a terminate() on another thread sees the state already `Terminated` and
/// returns at once, while the callback's terminate is still failing the
/// results one by one: results are still pending after it returned.
#[test]
fn mp24_a_second_terminate_waits_for_a_callbacks_terminate_to_end_every_result() {
    let pool = Arc::new(threads(1).into_pool());
    let (in_ecb_tx, in_ecb_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let p = pool.clone();
    // A: its callback terminates the pool once B runs.
    let a = pool
        .apply_async_with(
            square,
            2,
            Callbacks::new().callback(move |_| {
                wait_until("B to run", || started(9101));
                p.terminate();
            }),
        )
        .unwrap();
    // B: running when A's callback terminates; its error callback is slow.
    let b = pool
        .apply_async_with(
            gated,
            9101,
            Callbacks::new().error_callback(move |_| {
                let _ = in_ecb_tx.send(());
                let _ = release_rx.recv_timeout(HANG);
            }),
        )
        .unwrap();
    // C: queued behind B, so cancelled by the terminate; delivered after B.
    let c = pool.apply_async(square, 3).unwrap();
    in_ecb_rx
        .recv_timeout(HANG)
        .expect("hang guard: B's error callback never ran");
    // The callback's terminate() is now under way on the handler thread.
    let (report_tx, report_rx) = mpsc::channel();
    let other = pool.clone();
    let c_ready = {
        // Hand C's readiness check to the thread that calls terminate.
        let c = Arc::new(c);
        let c2 = c.clone();
        std::thread::spawn(move || {
            other.terminate();
            let _ = report_tx.send(c2.ready());
        });
        // A correct terminate() waits for B's error callback; release it
        // after a while so that such a wait ends.
        let early = report_rx.recv_timeout(Duration::from_secs(2)).ok();
        let _ = release_tx.send(());
        let reported = early.or_else(|| report_rx.recv_timeout(HANG).ok());
        let reported = reported.expect("hang guard: terminate() never returned");
        open_gate(9101);
        assert!(a.wait(Some(HANG)) && b.wait(Some(HANG)) && c.wait(Some(HANG)));
        reported
    };
    guarded("join", move || pool.join()).unwrap();
    assert!(
        c_ready,
        "terminate() returned while a pending result (C) was not ready yet"
    );
}

/// Process pool: terminate racing apply_async/map_async/imap_unordered on
/// other threads; every accepted job settles once, the iterators end.
#[test]
fn mp24_terminate_racing_a_process_pools_maps_settles_everything_once() {
    for round in 0..6 {
        let pool = Arc::new(procs(2));
        let counts: Tracked<Vec<u64>> = Arc::new(Mutex::new(Vec::new()));
        let mut hs = Vec::new();
        {
            let pool = pool.clone();
            let counts = counts.clone();
            hs.push(std::thread::spawn(move || {
                for i in 0u64.. {
                    let (cbs, n) = counting();
                    match pool.map_async_with(sleepy, (0..(i % 9)).map(|_| 1), Some(2), cbs) {
                        Ok(r) => counts.lock().unwrap().push((r, n)),
                        Err(Error::Shutdown) => break,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }));
        }
        {
            let pool = pool.clone();
            hs.push(std::thread::spawn(move || {
                let opts = MapOptions::new().chunksize(2).window(4);
                let Ok(it) = pool.imap_unordered_with(sleepy, std::iter::repeat(2u64), opts) else {
                    return;
                };
                let n = it.take(100_000).count();
                assert!(n < 100_000);
            }));
        }
        {
            let pool = pool.clone();
            hs.push(std::thread::spawn(move || {
                let Ok(it) = pool.imap(square, 0u64..) else {
                    return;
                };
                for (i, r) in it.take(1_000_000).enumerate() {
                    if let Ok(v) = r {
                        assert_eq!(v, (i * i) as u64, "imap out of order");
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(50 + 10 * round));
        let p = pool.clone();
        guarded("terminate", move || p.terminate());
        for h in hs {
            guarded("a racing thread", move || h.join().unwrap());
        }
        for (i, (r, n)) in counts.lock().unwrap().iter().enumerate() {
            assert!(r.ready(), "round {round}: job {i} not ready");
            assert_eq!(n.load(Ordering::SeqCst), 1, "round {round}: job {i}");
        }
        let p = pool.clone();
        guarded("join", move || p.join()).unwrap();
    }
}

static JOIN_POOL: std::sync::OnceLock<Arc<Pool>> = std::sync::OnceLock::new();
static JOIN_POOL_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A task of the pool that joins its own pool once it is closed: what
/// `join` answers.
fn join_own_pool(_: u64) -> String {
    wait_until("the pool closed", || {
        JOIN_POOL_CLOSED.load(Ordering::SeqCst)
    });
    match JOIN_POOL.get().unwrap().join() {
        Ok(()) => "Ok".to_owned(),
        Err(e) => format!("{e:?}"),
    }
}

/// MP23: `join()` from a task of the same (closed) thread pool would wait
/// for that task's own result: it is refused with `InvalidCall`, as from a
/// pool callback, instead of never returning (CPython's `ThreadPool.join()`
/// from a worker hangs; found by review).
#[test]
fn mp23_join_from_a_task_of_its_own_pool_is_an_error_not_a_hang() {
    let pool = JOIN_POOL.get_or_init(|| Arc::new(threads(2).into_pool()));
    let r = pool.apply_async(join_own_pool, 0).unwrap();
    pool.close();
    JOIN_POOL_CLOSED.store(true, Ordering::SeqCst);
    let finished = r.wait(Some(HANG));
    // Unblock the suite if it hung: terminate fails the stuck result.
    pool.terminate();
    assert!(
        finished,
        "join() inside a task of its own pool never returned"
    );
    let answer = r.get(None).unwrap();
    assert!(
        answer.contains("InvalidCall") && answer.contains("from a task of this pool"),
        "{answer}"
    );
    guarded("join from outside", || JOIN_POOL.get().unwrap().join()).unwrap();
}

/// The last handle of a pool dropped inside one of its callbacks (the
/// drop terminates from the handler thread): the other results settle,
/// nothing hangs.
#[test]
fn mp25_the_last_handle_dropped_in_a_callback_settles_the_rest() {
    let pool = Arc::new(threads(1).into_pool());
    let slot: Arc<Mutex<Option<Arc<Pool>>>> = Arc::new(Mutex::new(Some(pool.clone())));
    let s = slot.clone();
    let a = pool
        .apply_async_with(
            square,
            2,
            Callbacks::new().callback(move |_| {
                wait_until("D to run", || started(9201));
                // The last handle goes here, on the handler thread.
                drop(s.lock().unwrap().take());
            }),
        )
        .unwrap();
    let d = pool.apply_async(gated, 9201).unwrap();
    let e = pool.apply_async(square, 5).unwrap();
    drop(pool);
    assert!(a.wait(Some(HANG)), "hang guard: a");
    assert!(d.wait(Some(HANG)), "hang guard: d");
    assert!(e.wait(Some(HANG)), "hang guard: e");
    assert_eq!(e.get(None), Err(Error::Cancelled));
    assert!(
        matches!(d.get(None), Err(Error::Broken { .. })),
        "{:?}",
        d.get(None)
    );
    assert_eq!(a.get(None), Ok(&4));
    open_gate(9201);
}

/// Process pool recycling a worker after every task, terminated while
/// jobs run: every job settles once; join returns.
#[test]
fn mp22_terminate_while_workers_are_replaced_settles_every_job_once() {
    for round in 0..4 {
        let pool = Arc::new(
            Pool::builder()
                .processes(2)
                .maxtasksperchild(1)
                .test_harness()
                .build()
                .unwrap(),
        );
        let mut jobs = Vec::new();
        for i in 0..40u64 {
            let (cbs, n) = counting();
            jobs.push((pool.apply_async_with(sleepy, i % 3, cbs).unwrap(), n));
        }
        std::thread::sleep(Duration::from_millis(20 * round));
        let p = pool.clone();
        guarded("terminate", move || p.terminate());
        for (i, (r, n)) in jobs.iter().enumerate() {
            assert!(r.ready(), "round {round}: job {i}");
            assert_eq!(n.load(Ordering::SeqCst), 1, "round {round}: job {i}");
        }
        let p = pool.clone();
        guarded("join", move || p.join()).unwrap();
    }
}
