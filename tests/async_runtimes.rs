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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, ExecutorExt, Future, Promise, ThreadPoolExecutor, as_completed};
use futures::StreamExt;

mod common;
use common::{HANG, gated, guarded};

fn ident(x: u32) -> u32 {
    x
}

/// Counts its wakes and unparks the thread that made it.
struct CountingWaker {
    thread: thread::Thread,
    wakes: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let w = Arc::new(CountingWaker {
        thread: thread::current(),
        wakes: AtomicUsize::new(0),
    });
    (w.clone(), Waker::from(w))
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

/// T10, README "Where we differ": "Fork-join: a task that waits on another
/// future of its own pool runs that task itself if it is still queued ...
/// so recursive submit-and-wait does not deadlock a small pool", with
/// `.await` (through `futures::executor::block_on`, as code calling an
/// async API from a task does) as with `into_result`. On a one-worker pool
/// the `.await` waited for ever (found by review). If it hangs, the test
/// cancels the sibling to free the worker and reports it.
#[test]
fn t10_a_pool_task_awaiting_a_queued_sibling_runs_it_as_into_result_does() {
    fn run(by_await: bool) -> Result<u32, Error> {
        let pool = ThreadPoolExecutor::new(1).unwrap();
        let (tx, rx) = mpsc::channel::<Future<u32>>();
        let outer = pool.spawn(move || {
            let inner = rx.recv().unwrap();
            if by_await {
                futures::executor::block_on(inner)
            } else {
                inner.into_result()
            }
        });
        // Queued behind `outer` on the only worker, which runs `outer` now.
        tx.send(pool.submit(ident, 41)).unwrap();
        match outer.result(Some(Duration::from_secs(3))) {
            Err(Error::Timeout { .. }) => {
                // Free the worker: cancel the queued sibling.
                pool.shutdown(false, true);
                let after = outer.result(Some(HANG)).cloned();
                Err(Error::InvalidCall(format!(
                    "still waiting after 3 s; after shutdown(cancel_futures) the task gave {after:?}"
                )))
            }
            Err(e) => Err(e),
            Ok(r) => r.clone(),
        }
    }
    let helped = run(false);
    let awaited = run(true);
    println!("into_result in the task: {helped:?}; .await in the task: {awaited:?}");
    assert_eq!(helped, Ok(41));
    assert_eq!(awaited, Ok(41), "the awaiting task was not helped");
}
