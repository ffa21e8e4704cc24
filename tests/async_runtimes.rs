//! The async surface of `Future` and `as_completed` under real runtimes
//! (tokio current_thread and multi_thread, `futures::executor`): dropped
//! pending awaits, wake-ups counted, and the doc claims a review checked
//! against the code (two were false, and are fixed: a second wake of an
//! owner with callbacks, and `.await` inside a pool task not running a
//! queued sibling).
//!
//! No test measures time: every timeout is a hang guard.

use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, Executor, ExecutorConfig, ExecutorExt, Future, Promise, ThreadPoolExecutor, as_completed,
};
use futures::StreamExt;

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{HANG, counting_waker, gated, guarded};

fn ident(x: u32) -> u32 {
    x
}

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn multi_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Runtimes
// ---------------------------------------------------------------------------

/// tokio current_thread: owned and borrowed awaits of futures a pool
/// completes on its own threads, released after the awaits are pending.
#[test]
fn tokio_current_thread_awaits_owned_and_borrowed() {
    let got = guarded("tokio current_thread await", || {
        let pool = ThreadPoolExecutor::new(2).unwrap();
        let (a, release_a) = gated(&pool, 5u32);
        let (b, release_b) = gated(&pool, 6u32);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(release_a);
            drop(release_b);
        });
        current_thread_rt().block_on(async move {
            let lent = *(&a).await.unwrap();
            let owned = b.await.unwrap();
            let again = a.await.unwrap();
            (lent, owned, again)
        })
    });
    assert_eq!(got, (5, 6, 5));
}

/// tokio multi_thread: many tasks awaiting pool futures, owned and
/// borrowed, across runtime worker threads.
#[test]
fn tokio_multi_thread_many_tasks_await_pool_futures() {
    let sum = guarded("tokio multi_thread awaits", || {
        let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
        let rt = multi_thread_rt();
        rt.block_on(async move {
            let mut handles = Vec::new();
            for i in 0..400u32 {
                let pool = pool.clone();
                handles.push(tokio::spawn(async move {
                    let fut = pool.submit(ident, i);
                    tokio::task::yield_now().await;
                    if i % 2 == 0 {
                        let v = *(&fut).await.unwrap();
                        assert_eq!(fut.await.unwrap(), v);
                        v
                    } else {
                        fut.await.unwrap()
                    }
                }));
            }
            let mut sum = 0u64;
            for h in handles {
                sum += u64::from(h.await.unwrap());
            }
            sum
        })
    });
    assert_eq!(sum, (0..400u64).sum::<u64>());
}

/// `futures::executor::block_on` of an owned and a borrowed await.
#[test]
fn futures_block_on_owned_and_borrowed() {
    let got = guarded("futures block_on", || {
        let pool = ThreadPoolExecutor::new(1).unwrap();
        let (fut, release) = gated(&pool, String::from("v"));
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(release);
        });
        let lent = futures::executor::block_on((&fut).into_future())
            .unwrap()
            .clone();
        let owned = futures::executor::block_on(fut).unwrap();
        (lent, owned)
    });
    assert_eq!(got, ("v".to_string(), "v".to_string()));
}

/// `as_completed(..).into_stream()` driven by tokio multi_thread, with
/// futures completed by pool threads after the stream went pending.
#[test]
fn as_completed_stream_under_tokio_multi_thread_yields_every_future() {
    let n = guarded("as_completed stream under tokio", || {
        let pool = ThreadPoolExecutor::new(2).unwrap();
        let mut futs = Vec::new();
        let mut releases = Vec::new();
        for i in 0..8u32 {
            let (f, r) = gated(&pool, i);
            futs.push(f);
            releases.push(r);
        }
        thread::spawn(move || {
            for r in releases {
                thread::sleep(Duration::from_millis(2));
                drop(r);
            }
        });
        let rt = multi_thread_rt();
        let futs = Arc::new(futs);
        let futs2 = futs.clone();
        rt.block_on(async move {
            tokio::spawn(async move {
                let stream = as_completed(futs2.iter(), None).into_stream();
                let items: Vec<_> = stream.collect().await;
                items.into_iter().filter(|r| r.is_ok()).count()
            })
            .await
            .unwrap()
        })
    });
    assert_eq!(n, 8);
}

// ---------------------------------------------------------------------------
// Dropped pending awaits (select!, timeouts)
// ---------------------------------------------------------------------------

/// A `select` that loses with an owned `Future` pending drops it: the waker
/// it registered must be released (not kept, and never woken later).
#[test]
fn a_lost_select_releases_the_owned_futures_waker() {
    let (promise, fut) = Promise::<u32>::new();
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let before = Arc::strong_count(&count);
    {
        let mut sel = futures::future::select(fut, futures::future::ready(1u8));
        match Pin::new(&mut sel).poll(&mut cx) {
            Poll::Ready(futures::future::Either::Right((1, pending))) => drop(pending),
            _ => panic!("the ready branch should win"),
        }
    }
    assert_eq!(Arc::strong_count(&count), before, "the waker is still held");
    promise.set_result(3).unwrap();
    assert_eq!(count.wakes.load(Ordering::SeqCst), 0);
}

/// The same with `(&fut).await` in the losing branch.
#[test]
fn a_lost_select_releases_the_borrowed_awaits_waker() {
    let (promise, fut) = Promise::<u32>::new();
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let before = Arc::strong_count(&count);
    {
        let mut sel = futures::future::select((&fut).into_future(), futures::future::ready(1u8));
        assert!(matches!(
            Pin::new(&mut sel).poll(&mut cx),
            Poll::Ready(futures::future::Either::Right(_))
        ));
    }
    assert_eq!(Arc::strong_count(&count), before, "the waker is still held");
    promise.set_result(3).unwrap();
    assert_eq!(count.wakes.load(Ordering::SeqCst), 0);
    assert_eq!(fut.result(None), Ok(&3));
}

// ---------------------------------------------------------------------------
// Wake-ups
// ---------------------------------------------------------------------------

/// No lost wake-up when completion races the first poll: whatever the
/// interleaving, the poll is Ready or the waker is woken.
#[test]
fn completion_racing_the_first_poll_loses_no_wake_up() {
    guarded("racing first polls", || {
        for round in 0..3000 {
            let (promise, mut fut) = Promise::<u32>::new();
            let (_count, waker) = counting_waker();
            let mut cx = Context::from_waker(&waker);
            let barrier = Arc::new(Barrier::new(2));
            let b = barrier.clone();
            let t = thread::spawn(move || {
                b.wait();
                promise.set_result(round).unwrap();
            });
            barrier.wait();
            let deadline = Instant::now() + HANG;
            let got = loop {
                if let Poll::Ready(v) = Pin::new(&mut fut).poll(&mut cx) {
                    break v;
                }
                // Pending: only a wake (an unpark) may bring us back in
                // time; park spuriously returning is harmless.
                assert!(Instant::now() < deadline, "round {round}: never woken");
                thread::park_timeout(Duration::from_millis(100));
            };
            assert_eq!(got, Ok(round));
            t.join().unwrap();
        }
    });
}

/// `impl Future for Future<T>`: "The waker is woken exactly once when the
/// future ends", also with a done-callback still running when it ends: the
/// owner's waker is woken after the callbacks. It was woken at the end,
/// polled `Pending`, and woken again after them (found by review).
#[test]
fn owned_await_waker_is_woken_once_when_the_future_ends_with_a_callback() {
    let (promise, mut fut) = Promise::<u32>::new();
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (in_cb_tx, in_cb_rx) = mpsc::channel();
    let (cb_release, cb_gate) = mpsc::channel::<()>();
    fut.add_done_callback(move |_| {
        in_cb_tx.send(()).unwrap();
        let _ = cb_gate.recv_timeout(HANG);
    });
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    let t = thread::spawn(move || promise.set_result(9).unwrap());
    in_cb_rx.recv_timeout(HANG).expect("the callback never ran");
    let woken_while_callback_runs = count.wakes.load(Ordering::SeqCst);
    // The task runs on its wake, as any executor would.
    let poll_then = Pin::new(&mut fut).poll(&mut cx);
    drop(cb_release);
    t.join().unwrap();
    let after = count.wakes.load(Ordering::SeqCst);
    println!(
        "wakes while the callback ran: {woken_while_callback_runs}; poll then: {poll_then:?}; \
         wakes in all: {after}"
    );
    let ready = if poll_then.is_ready() {
        poll_then
    } else {
        Pin::new(&mut fut).poll(&mut cx)
    };
    assert_eq!(ready, Poll::Ready(Ok(9)));
    assert_eq!(
        after,
        1,
        "woken {after} times for one end (a wake whose poll was Pending: {})",
        woken_while_callback_runs == 1
    );
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Sanity: `.await` of a cancelled future gives `Cancelled` on both forms.
#[test]
fn await_of_a_cancelled_future_is_cancelled_under_tokio() {
    let (_promise, fut) = Promise::<u32>::new();
    assert!(fut.cancel());
    let rt = current_thread_rt();
    assert_eq!(rt.block_on((&fut).into_future()), Err(Error::Cancelled));
    assert_eq!(rt.block_on(fut), Err(Error::Cancelled));
}

// ---------------------------------------------------------------------------
// Doc claims
// ---------------------------------------------------------------------------

/// A two-worker pool whose second worker is held busy until `release` is
/// sent: a subtask pushed by a task on the first worker stays queued in
/// that worker's deque (no thief takes it before the test says so).
fn pool_with_one_free_worker() -> (Arc<ThreadPoolExecutor>, mpsc::Sender<()>) {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let _busy = pool.spawn(move || {
        started_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(HANG);
    });
    started_rx
        .recv_timeout(HANG)
        .expect("the busy task never started");
    (pool, release_tx)
}

/// A poll never runs the task (the `Future` docs; T10 helping is for the
/// blocking waits). A task that starts a consumer subtask and then, with
/// `block_on`, awaits it *joined* with the branch that feeds it: the
/// feeding branch gets its turn. (A poll that ran a queued task in place,
/// tried in this session, ran the consumer before the branch that feeds
/// it; found by review.)
#[test]
fn a_poll_of_a_queued_subtask_does_not_block_the_branches_beside_it() {
    let got = common::ended_within_hang_guard(|| {
        let (pool, release) = pool_with_one_free_worker();
        let p = pool.clone();
        let outer = pool.spawn(move || {
            let (tx, rx) = mpsc::channel::<u32>();
            // Its own guard (it gives up after 10 s): the worker is not
            // lost for ever if the bug is there.
            let consumer = p.spawn(move || rx.recv_timeout(Duration::from_secs(10)).ok());
            let feed = async move {
                let _ = tx.send(5);
                let _ = release.send(()); // the other worker may now take it
            };
            let (r, ()) = futures::executor::block_on(futures::future::join(consumer, feed));
            r
        });
        outer.into_result()
    });
    println!("consumer got {got:?}");
    assert_eq!(
        got,
        Some(Ok(Ok(Some(5)))),
        "the consumer ran in place inside the poll, before the branch that feeds it"
    );
}

/// The same with a non-blocking check (`now_or_never`), the async form of
/// `result(Some(Duration::ZERO))`, which never blocks: it does not run the
/// task.
#[test]
fn now_or_never_of_a_queued_subtask_does_not_run_it() {
    use futures::FutureExt;
    let got = common::ended_within_hang_guard(|| {
        let (pool, release) = pool_with_one_free_worker();
        let p = pool.clone();
        let outer = pool.spawn(move || {
            let (tx, rx) = mpsc::channel::<u32>();
            let mut consumer = p.spawn(move || rx.recv_timeout(Duration::from_secs(10)).ok());
            let early = (&mut consumer).now_or_never();
            let _ = tx.send(5);
            let _ = release.send(());
            (early, consumer.into_result())
        });
        outer.into_result()
    });
    println!("got {got:?}");
    let (early, r) = got.expect("hang guard").expect("outer");
    assert!(early.is_none(), "now_or_never ran the task: {early:?}");
    assert_eq!(r, Ok(Some(5)));
}

// ------------------------------------------ both pools, chosen by config --

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn by_config(text: &str) -> Arc<dyn Executor> {
    let config: ExecutorConfig = text.parse().expect("a valid config");
    config
        .build_with(|b| b.test_harness())
        .expect("the executor builds")
}

/// `fut.await` and `(&fut).await` of process-pool futures (woken from a
/// worker's reader thread) under tokio, through a config-chosen
/// `Arc<dyn Executor>`, as of thread-pool ones (a gap found by review:
/// no test awaited a process-pool future).
#[test]
fn process_pool_futures_await_under_tokio_like_thread_pool_ones() {
    for kind in ["thread:2", "process:2"] {
        let ex = by_config(kind);
        let f = ex.submit(square, 9);
        let g = ex.submit(sleep_ms, 10);
        let got = common::ended_within_hang_guard(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            rt.block_on(async { (f.await, (&g).await.copied()) })
        });
        assert_eq!(got.expect("hang guard"), (Ok(81), Ok(10)), "{kind}");
        ex.shutdown(true, false);
    }
}

/// `as_completed(..).into_stream()` and `join_all` over process-pool
/// futures, as over thread-pool ones.
#[test]
fn as_completed_stream_and_join_all_over_process_pool_futures() {
    for kind in ["thread:2", "process:2"] {
        let ex = by_config(kind);
        let futs: Vec<Future<u64>> = (0..5).map(|i| ex.submit(square, i)).collect();
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut sum = 0;
                    let mut stream = as_completed(&futs, Some(HANG)).into_stream();
                    while let Some(f) = stream.next().await {
                        sum += f.expect("no deadline passed").result(None).unwrap();
                    }
                    sum
                })
            })
            .join()
            .unwrap()
        });
        assert_eq!(got, 30, "{kind}");
        let futs: Vec<Future<u64>> = (0..5).map(|i| ex.submit(square, i)).collect();
        let all = common::ended_within_hang_guard(move || {
            futures::executor::block_on(futures::future::join_all(futs))
        })
        .expect("hang guard");
        assert_eq!(all, [Ok(0), Ok(1), Ok(4), Ok(9), Ok(16)], "{kind}");
        ex.shutdown(true, false);
    }
}
