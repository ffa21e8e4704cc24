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
        let t = thread::spawn(move || {
            let h = handle(&c2);
            c2.complete(Ok(7), || h)
        });
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

#[test]
fn loom_callback_added_while_completing_runs_exactly_once() {
    loom::model(|| {
        let (core, fut) = new_future();
        let fired = Arc::new(AtomicUsize::new(0));
        let c2 = core.clone();
        let t = thread::spawn(move || {
            let h = handle(&c2);
            c2.complete(Ok(1), || h);
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

#[test]
fn loom_blocked_result_waiter_is_woken_by_complete() {
    loom::model(|| {
        let (core, fut) = new_future();
        let c2 = core.clone();
        let t = thread::spawn(move || {
            let h = handle(&c2);
            c2.complete(Ok(3), || h);
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
            let h = handle(&c2);
            c2.complete(Ok(5), || h);
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
            let h = handle(&c2);
            c2.complete(Ok(9), || h);
        });
        let ready_at_once = core.register_waker(&waker, true);
        t.join().unwrap();
        let wakes = count.0.load(Ordering::SeqCst);
        if ready_at_once {
            assert_eq!(wakes, 0, "nothing registered, nothing woken");
        } else {
            assert_eq!(wakes, 1, "a registered waker is woken exactly once");
        }
    });
}

/// A waiter sets the AWAITED hint while the task is still queued; the
/// worker's PENDING → RUNNING step must still succeed, or the task would be
/// skipped and the waiter would wait forever (loom reports the deadlock).
#[test]
fn loom_awaited_hint_set_while_queued_never_stops_the_task_from_starting() {
    loom::model(|| {
        let (core, fut) = new_future();
        let c2 = core.clone();
        let t = thread::spawn(move || {
            if c2.set_running() == Start::Run {
                let h = handle(&c2);
                c2.complete(Ok(7), || h);
            }
        });
        assert_eq!(fut.result(None), Ok(&7));
        t.join().unwrap();
    });
}

/// Cancel racing a waiter that sets the AWAITED hint: the cancel still
/// takes effect exactly when the task has not started.
#[test]
fn loom_awaited_hint_does_not_confuse_cancel() {
    loom::model(|| {
        let (core, fut) = new_future();
        let c2 = core.clone();
        let t = thread::spawn(move || c2.set_running());
        let cancelled = fut.cancel();
        let start = t.join().unwrap();
        assert_eq!(cancelled, start == Start::Skip);
        if start == Start::Run {
            let h = handle(&core);
            core.complete(Ok(1), || h);
        }
        assert!(fut.done());
    });
}
