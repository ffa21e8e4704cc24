//! `Promise`: CPython's `Future()` plus `set_running_or_notify_cancel`,
//! `set_result` and `set_exception` (F3-F5), for custom executors and tests.

use concurrent_futures::{Error, Promise, ReturnWhen, wait};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn f3_set_running_moves_pending_to_running_once() {
    let (p, f) = Promise::<u32>::new();
    assert_eq!(p.set_running_or_notify_cancel(), Ok(true));
    assert!(f.running());
    assert!(!f.cancel(), "X2: a running future cannot be cancelled");
}

#[test]
fn f3_set_running_on_a_cancelled_future_returns_false() {
    let (p, f) = Promise::<u32>::new();
    assert!(f.cancel());
    assert_eq!(p.set_running_or_notify_cancel(), Ok(false));
    assert!(f.cancelled());
}

#[test]
fn f3_set_running_on_a_running_future_is_invalid_state_not_a_cancel() {
    let (p, f) = Promise::<u32>::new();
    assert_eq!(p.set_running_or_notify_cancel(), Ok(true));
    assert_eq!(
        p.set_running_or_notify_cancel(),
        Err(Error::InvalidState("running"))
    );
    assert!(f.running(), "the future is left running");
}

#[test]
fn f3_set_running_on_a_finished_future_is_invalid_state_not_a_cancel() {
    let (p, f) = Promise::<u32>::new();
    p.set_result(1).unwrap();
    assert_eq!(
        p.set_running_or_notify_cancel(),
        Err(Error::InvalidState("finished"))
    );
    assert!(!f.cancelled());
    assert_eq!(f.result(None), Ok(&1));
}

#[test]
fn f4_second_set_result_is_invalid_state_and_first_value_is_kept() {
    let (p, f) = Promise::new();
    p.set_result(1u32).unwrap();
    assert_eq!(p.set_result(2), Err(Error::InvalidState("finished")));
    assert_eq!(
        p.set_exception(Error::Cancelled),
        Err(Error::InvalidState("finished"))
    );
    assert_eq!(f.result(None), Ok(&1));
}

#[test]
fn f4_set_result_after_cancel_is_invalid_state() {
    let (p, f) = Promise::<u32>::new();
    assert!(f.cancel());
    assert_eq!(p.set_result(5), Err(Error::InvalidState("cancelled")));
    assert_eq!(f.result(None), Err(Error::Cancelled));
}

#[test]
fn f5_set_exception_is_allowed_straight_from_pending() {
    let (p, f) = Promise::<u32>::new();
    let e = Error::Panicked {
        message: "no".into(),
        backtrace: None,
    };
    p.set_exception(e.clone()).unwrap();
    assert_eq!(f.exception(None), Ok(Some(e)));
}

#[test]
fn f6_set_result_wakes_waiters_and_runs_callbacks_on_the_completing_thread() {
    let (p, f) = Promise::<u32>::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    let main = std::thread::current().id();
    f.add_done_callback(move |fut| {
        assert_ne!(std::thread::current().id(), main, "C3");
        assert_eq!(
            fut.result(None),
            Ok(&9),
            "C7: a callback may read its future"
        );
        r2.fetch_add(1, Ordering::SeqCst);
    });
    std::thread::scope(|s| {
        s.spawn(|| p.set_result(9).unwrap());
        let sets = wait(
            [&f],
            Some(Duration::from_secs(10)),
            ReturnWhen::AllCompleted,
        );
        assert_eq!(sets.done.len(), 1);
    });
    assert_eq!(f.into_result(), Ok(9));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_an_unfinished_promise_fails_its_future_instead_of_hanging() {
    let (p, f) = Promise::<u32>::new();
    drop(p);
    assert!(matches!(
        f.result(Some(Duration::from_secs(10))),
        Err(Error::Broken { .. })
    ));
}
