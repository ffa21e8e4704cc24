//! Loom models of the future state machine: every interleaving of the
//! operations that race on one future. Run with
//! `RUSTFLAGS="--cfg cf_loom" cargo test --release --lib loom`.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use std::sync::Arc;
use std::task::{Wake, Waker};

use super::Future;
use super::core::{Core, Start};
use crate::Error;

fn new_future() -> (Arc<Core<u32>>, Future<u32>) {
    let core = Arc::new(Core::new());
    let fut = Future::from_shared(core.clone());
    (core, fut)
}

fn handle(core: &Arc<Core<u32>>) -> Future<u32> {
    Future::from_shared(core.clone())
}

/// Completes `core` with `value` the way a worker does (returns whether
/// this call completed it).
fn finish(core: &Arc<Core<u32>>, value: u32) -> bool {
    let h = handle(core);
    core.complete(Ok(value), || h)
}

#[test]
fn loom_complete_races_cancel_exactly_one_wins() {
    loom::model(|| {
        let (core, fut) = new_future();
        let fired = Arc::new(AtomicUsize::new(0));
        let f2 = fired.clone();
        fut.add_done_callback(move |_| {
            f2.fetch_add(1, Ordering::SeqCst);
        });
        let c2 = core.clone();
        let t = thread::spawn(move || finish(&c2, 7));
        let cancelled = fut.cancel();
        let completed = t.join().unwrap();
        assert!(
            cancelled != completed,
            "exactly one of cancel and complete wins"
        );
        assert_eq!(
            fired.load(Ordering::SeqCst),
            1,
            "the callback runs exactly once"
        );
        if cancelled {
            assert_eq!(fut.result(None), Err(Error::Cancelled));
        } else {
            assert_eq!(fut.result(None), Ok(&7));
        }
    });
}

#[test]
fn loom_cancel_races_set_running() {
    loom::model(|| {
        let (core, fut) = new_future();
        let c2 = core.clone();
        let t = thread::spawn(move || c2.set_running());
        let cancelled = fut.cancel();
        let start = t.join().unwrap();
        assert_eq!(cancelled, start == Start::Skip);
        assert_eq!(fut.running(), start == Start::Run);
    });
}

/// Decision 4: a stoppable task (a `kill_on_cancel` process pool's) is
/// cancelled while it runs, racing the worker's result. Exactly one wins,
/// the callback runs once, and the future shows the winner.
#[test]
fn loom_cancel_of_a_stoppable_running_task_races_complete() {
    loom::model(|| {
        let (core, fut) = new_future();
        core.allow_cancel_while_running();
        assert_eq!(core.set_running(), Start::Run);
        let fired = Arc::new(AtomicUsize::new(0));
        let f2 = fired.clone();
        fut.add_done_callback(move |_| {
            f2.fetch_add(1, Ordering::SeqCst);
        });
        let c2 = core.clone();
        let t = thread::spawn(move || finish(&c2, 7));
        let cancelled = fut.cancel();
        let completed = t.join().unwrap();
        assert!(
            cancelled != completed,
            "exactly one of cancel and complete wins"
        );
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert_eq!(fut.cancelled(), cancelled);
        if cancelled {
            assert_eq!(fut.result(None), Err(Error::Cancelled));
        } else {
            assert_eq!(fut.result(None), Ok(&7));
        }
    });
}

/// X2 stays the rule for tasks that are not stoppable: a running task is
/// never cancelled, whatever the interleaving with its completion.
#[test]
fn loom_cancel_of_a_running_task_that_is_not_stoppable_always_fails() {
    loom::model(|| {
        let (core, fut) = new_future();
        assert_eq!(core.set_running(), Start::Run);
        let c2 = core.clone();
        let t = thread::spawn(move || finish(&c2, 7));
        assert!(!fut.cancel());
        assert!(t.join().unwrap());
        assert_eq!(fut.result(None), Ok(&7));
    });
}

#[test]
fn loom_callback_added_while_completing_runs_exactly_once() {
    loom::model(|| {
        let (core, fut) = new_future();
        let fired = Arc::new(AtomicUsize::new(0));
        let c2 = core.clone();
        let t = thread::spawn(move || {
            finish(&c2, 1);
        });
        let f2 = fired.clone();
        fut.add_done_callback(move |f| {
            assert_eq!(f.result(None), Ok(&1));
            f2.fetch_add(1, Ordering::SeqCst);
        });
        t.join().unwrap();
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    });
}

/// The waiter also sets the AWAITED hint, possibly while the task is still
/// queued: the worker's PENDING → RUNNING step must still succeed (with
/// the old single compare-exchange it failed, the task was skipped, and
/// loom reported the waiter parked forever).
#[test]
fn loom_blocked_result_waiter_is_woken_by_complete() {
    loom::model(|| {
        let (core, fut) = new_future();
        let c2 = core.clone();
        let t = thread::spawn(move || {
            assert_eq!(c2.set_running(), Start::Run);
            finish(&c2, 3);
        });
        assert_eq!(fut.result(None), Ok(&3));
        t.join().unwrap();
    });
}

#[test]
fn loom_into_result_waits_for_callbacks_then_moves_value_out() {
    loom::model(|| {
        let (core, fut) = new_future();
        fut.add_done_callback(|f| {
            // Borrows the value on the completing thread while the owner may
            // be in `into_result`: the owner must wait for this to finish.
            assert_eq!(f.result(None), Ok(&5));
        });
        let c2 = core.clone();
        let t = thread::spawn(move || {
            finish(&c2, 5);
        });
        assert_eq!(fut.into_result(), Ok(5));
        t.join().unwrap();
    });
}

struct CountWake(AtomicUsize);
impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn loom_waker_registered_before_completion_is_woken_exactly_once() {
    loom::model(|| {
        let (core, _fut) = new_future();
        let count = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let c2 = core.clone();
        let t = thread::spawn(move || {
            finish(&c2, 9);
        });
        let ready_at_once = core.register_waker(&waker, true, 0);
        t.join().unwrap();
        let wakes = count.0.load(Ordering::SeqCst);
        if ready_at_once {
            assert_eq!(wakes, 0, "nothing registered, nothing woken");
        } else {
            assert_eq!(wakes, 1, "a registered waker is woken exactly once");
        }
    });
}

/// Cancel racing the worker's start while a third thread waits (and sets
/// the AWAITED hint meanwhile): exactly one of cancel and start wins, and
/// the waiter always wakes with the winner's outcome.
#[test]
fn loom_cancel_races_set_running_while_a_waiter_sets_the_awaited_hint() {
    loom::model(|| {
        let (core, fut) = new_future();
        let (c2, c3) = (core.clone(), core.clone());
        let worker = thread::spawn(move || {
            let start = c2.set_running();
            if start == Start::Run {
                finish(&c2, 1);
            }
            start
        });
        let waiter = thread::spawn(move || handle(&c3).result(None).is_ok());
        let cancelled = fut.cancel();
        let start = worker.join().unwrap();
        let got_value = waiter.join().unwrap();
        assert_eq!(cancelled, start == Start::Skip);
        assert_eq!(got_value, start == Start::Run);
    });
}

/// An executor's cancel of a running task (a `CancelToken`, a shutdown's
/// sweep) fails, racing the task's end; the owner that polled its future
/// is woken all the same. A throwaway handle made for that cancel and
/// dropped on the running future took the owner's waker with it (found by
/// review): no handle is made unless the cancel ends the future.
#[test]
fn loom_a_failed_executor_cancel_keeps_the_owners_waker() {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    loom::model(|| {
        let (core, mut fut) = new_future();
        assert_eq!(core.set_running(), Start::Run);
        let count = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        let c2 = core.clone();
        let canceller = thread::spawn(move || super::cancel_shared::<u32>(c2));
        let c3 = core.clone();
        let worker = thread::spawn(move || finish(&c3, 3));
        assert!(
            !canceller.join().unwrap(),
            "a running task is not cancelled"
        );
        assert!(worker.join().unwrap());
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the owner is woken once");
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(3)));
    });
}

/// The owner's `.await` of a future with a done-callback is woken exactly
/// once, after the callback, also when it polls again while the callback
/// runs (it was woken at the end, polled `Pending` during the callbacks,
/// and woken again after them; found by review).
#[test]
fn loom_the_owners_waker_is_woken_once_after_the_callbacks() {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    loom::model(|| {
        let (core, mut fut) = new_future();
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        fut.add_done_callback(move |_| {
            r2.fetch_add(1, Ordering::SeqCst);
        });
        let count = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        let c2 = core.clone();
        let t = thread::spawn(move || finish(&c2, 5));
        // A poll racing the completion and its callback.
        let second = Pin::new(&mut fut).poll(&mut cx);
        t.join().unwrap();
        let wakes = count.0.load(Ordering::SeqCst);
        assert_eq!(wakes, 1, "woken exactly once for one end");
        if second.is_pending() {
            assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(5)));
        } else {
            assert_eq!(second, Poll::Ready(Ok(5)));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    });
}

/// A task sent ahead (RUNNING) and taken back unstarted from a dead worker
/// goes PENDING again, racing a user's `cancel()` and a waiter setting the
/// AWAITED hint. The cancel fails only if it came first (X2: running, not
/// stoppable); then the task is pending again, and the next cancel (a
/// shutdown's sweep) ends it. A waiter wakes with the cancellation.
#[test]
fn loom_pending_again_races_cancel_and_a_waiter() {
    loom::model(|| {
        let (core, fut) = new_future();
        assert_eq!(core.set_running(), Start::Run);
        let (c2, c3) = (core.clone(), core.clone());
        let taker = thread::spawn(move || c2.set_pending_again());
        let waiter = thread::spawn(move || handle(&c3).result(None).cloned());
        let first = fut.cancel();
        let back = taker.join().unwrap();
        assert!(back, "a running task that is not stoppable goes back");
        assert!(!fut.running());
        let second = fut.cancel();
        assert!(first || second, "pending again, it cancels");
        assert_eq!(waiter.join().unwrap(), Err(Error::Cancelled));
        assert!(!core.set_pending_again(), "a cancelled task stays so");
    });
}

/// A stoppable task (a `kill_on_cancel` pool's) goes back too, keeping
/// the flag, racing a `cancel()` that succeeds either way: running and
/// stoppable, or pending again.
#[test]
fn loom_a_stoppable_task_goes_pending_again_racing_cancel() {
    loom::model(|| {
        let (core, fut) = new_future();
        core.allow_cancel_while_running();
        assert_eq!(core.set_running(), Start::Run);
        let c2 = core.clone();
        let taker = thread::spawn(move || c2.set_pending_again());
        let cancelled = fut.cancel();
        taker.join().unwrap();
        assert!(cancelled, "a stoppable or pending task cancels");
        assert!(fut.cancelled() && !fut.running());
        assert!(!core.set_pending_again(), "a cancelled task stays so");
    });
}
