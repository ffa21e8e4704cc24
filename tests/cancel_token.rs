//! `CancelToken` and `ThreadPoolExecutor::spawn_cancellable`: cooperative
//! cancellation of thread-pool tasks (CONFORMANCE.md PP3: "running tasks
//! can't be cancelled … Thread pools get a cooperative CancellationToken").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use concurrent_futures::{CancelToken, Error, ThreadPoolExecutor};

mod common;
use common::{HANG, started, wait};

#[test]
fn pp3_cancel_tells_a_running_task_to_stop() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let token = CancelToken::new();
    let (up, is_up) = mpsc::channel();
    let f = pool.spawn_cancellable(&token, move |token| {
        up.send(()).unwrap();
        let mut spins = 0u64;
        while !token.is_cancelled() {
            spins += 1;
            std::hint::spin_loop();
        }
        spins
    });
    is_up.recv_timeout(HANG).unwrap();
    assert!(!f.done());
    token.cancel();
    assert!(wait(f).is_ok(), "the task ran to its own end");
}

/// One `cancel()` ends a group: its queued tasks are cancelled and never
/// run, whatever else the pool is doing.
#[test]
fn pp3_cancel_cancels_the_queued_tasks_of_the_token() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (blocker, release) = started(&pool, ());
    let token = CancelToken::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let queued: Vec<_> = (0..3)
        .map(|_| {
            let ran = ran.clone();
            pool.spawn_cancellable(&token, move |_| ran.fetch_add(1, Ordering::SeqCst))
        })
        .collect();
    token.cancel();
    for f in &queued {
        assert!(f.cancelled());
        assert_eq!(f.result(None), Err(Error::Cancelled));
    }
    release.send(()).unwrap();
    wait(blocker).unwrap();
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn pp3_a_task_spawned_with_a_cancelled_token_never_runs() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let token = CancelToken::new();
    token.cancel();
    let f = pool.spawn_cancellable(&token, |_| panic!("must not run"));
    assert!(f.cancelled());
    pool.shutdown(true, false);
}

#[test]
fn pp3_wait_cancelled_is_a_sleep_that_cancel_cuts_short() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let token = CancelToken::new();
    let (up, is_up) = mpsc::channel();
    let f = pool.spawn_cancellable(&token, move |token| {
        up.send(()).unwrap();
        token.wait_cancelled(Some(HANG))
    });
    is_up.recv_timeout(HANG).unwrap();
    token.cancel();
    assert_eq!(wait(f), Ok(true));
    assert!(!CancelToken::new().wait_cancelled(Some(std::time::Duration::ZERO)));
}

#[test]
fn pp3_check_is_err_cancelled_once_cancelled_and_clones_share_the_flag() {
    let token = CancelToken::new();
    let clone = token.clone();
    assert_eq!(clone.check(), Ok(()));
    token.cancel();
    token.cancel(); // idempotent
    assert_eq!(clone.check(), Err(Error::Cancelled));
    assert!(clone.is_cancelled());
}

/// `Future::cancel` keeps CPython's meaning on a running task (`false`,
/// the task runs on) and does not cancel the token.
#[test]
fn pp3_future_cancel_of_a_running_task_does_not_touch_its_token() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let token = CancelToken::new();
    let (up, is_up) = mpsc::channel();
    let (go, gone) = mpsc::channel::<()>();
    let f = pool.spawn_cancellable(&token, move |token| {
        up.send(()).unwrap();
        let _ = gone.recv_timeout(HANG);
        token.is_cancelled()
    });
    is_up.recv_timeout(HANG).unwrap();
    assert!(!f.cancel());
    go.send(()).unwrap();
    assert_eq!(wait(f), Ok(false));
    assert!(!token.is_cancelled());
}

/// A waker that reports each wake on a channel.
struct ChannelWaker(mpsc::Sender<()>);

impl std::task::Wake for ChannelWaker {
    fn wake(self: Arc<Self>) {
        let _ = self.0.send(());
    }
}

/// PP3 with an owner that `.await`s: the token's cancel of the running
/// task fails (X2), and when the task ends the owner's waker is woken.
/// The cancel used to go through a throwaway handle whose drop, on the
/// still-running future, took the owner's waker out of the list: the
/// awaiting task slept for ever (found by review; the loom model
/// `loom_a_failed_executor_cancel_keeps_the_owners_waker` checks every
/// interleaving).
#[test]
fn pp3_cancel_of_a_running_task_keeps_the_awaiting_owners_waker() {
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    let pool = ThreadPoolExecutor::new(1).unwrap();
    let token = CancelToken::new();
    let (up, is_up) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let mut fut = pool.spawn_cancellable(&token, move |_| {
        up.send(()).unwrap();
        let _ = released.recv_timeout(HANG);
        5u32
    });
    is_up.recv_timeout(HANG).expect("the task starts");
    let (woke, wakes) = mpsc::channel();
    let waker = Waker::from(Arc::new(ChannelWaker(woke)));
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());

    token.cancel();
    assert!(!fut.done(), "a running task is only told to stop");

    release.send(()).unwrap();
    assert!(
        wakes.recv_timeout(HANG).is_ok(),
        "the task ended and the awaiting owner was never woken"
    );
    assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(5)));
}
