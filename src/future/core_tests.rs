//! Unit tests of `Core`: its thread-local hints (the `AWAITED` flag) and
//! its waker registrations.

use super::*;
use std::sync::Arc;

fn noop_waker() -> Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Noop))
}

fn hint(core: &Core<u8>) -> bool {
    core.status.load(Ordering::SeqCst) & AWAITED != 0
}

/// Runs `f` on a fresh thread: the hints live in thread-locals.
fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().unwrap();
}

#[test]
fn waiting_for_an_unfinished_future_sets_the_awaited_hint_and_completion_reports_it() {
    on_fresh_thread(|| {
        let core = Core::<u8>::new();
        assert!(!hint(&core));
        assert!(!core.register_waker(&noop_waker(), false, 0));
        assert!(hint(&core));
        assert_eq!(core.status(), PENDING, "the hint leaves the state alone");
        assert_eq!(core.set_running(), Start::Run);
        core.complete(Ok(1), || unreachable!("no callbacks"));
        assert!(crate::spin::last_task_awaited());
        assert!(!hint(&core), "completing drops the hint");
    });
}

#[test]
fn a_future_nobody_waited_for_reports_not_awaited() {
    on_fresh_thread(|| {
        let core = Core::<u8>::new();
        assert_eq!(core.set_running(), Start::Run);
        core.complete(Ok(1), || unreachable!("no callbacks"));
        assert!(!crate::spin::last_task_awaited());
    });
}

#[test]
fn a_future_made_right_after_a_wait_starts_awaited_and_only_that_one() {
    on_fresh_thread(|| {
        let done = Core::<u8>::new();
        done.complete(Ok(1), || unreachable!("no callbacks"));
        assert!(done.wait_until(None, false, &|_| {}));
        let next = Core::<u8>::new();
        assert!(hint(&next), "a submit right after a wait");
        let after = Core::<u8>::new();
        assert!(!hint(&after), "a submit after a submit");
    });
}

#[test]
fn a_future_made_on_a_pool_worker_starts_awaited() {
    on_fresh_thread(|| {
        assert!(!hint(&Core::<u8>::new()));
        presume_nested_submits_awaited();
        assert!(hint(&Core::<u8>::new()));
        assert!(hint(&Core::<u8>::new()), "every one of them");
    });
}

#[test]
fn cancel_works_on_an_awaited_queued_future() {
    let core = Arc::new(Core::<u8>::new());
    let fut = super::super::Future::from_shared(core.clone());
    assert!(!core.register_waker(&noop_waker(), false, 0));
    assert!(fut.cancel());
    assert!(fut.cancelled());
    assert_eq!(core.set_running(), Start::Skip);
}

fn wakers(core: &Core<u8>) -> usize {
    lock(&core.waiters)
        .iter()
        .filter(|w| matches!(w, Waiter::Waker(..)))
        .count()
}

/// Polls `fut` once with a fresh waker; it must be pending.
fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) {
    let waker = noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(fut.poll(&mut cx).is_pending());
}

#[test]
fn a_dropped_pending_owned_future_takes_its_waker_out_of_the_list() {
    let core = Arc::new(Core::<u8>::new());
    for _ in 0..100 {
        let mut fut = super::super::Future::from_shared(core.clone());
        poll_once(std::pin::Pin::new(&mut fut));
        assert_eq!(wakers(&core), 1);
        drop(fut);
        assert_eq!(wakers(&core), 0, "a dropped Future left its waker behind");
    }
}

#[test]
fn dropped_borrowed_handles_take_their_wakers_out_of_the_list() {
    let core = Arc::new(Core::<u8>::new());
    let fut = super::super::Future::from_shared(core.clone());
    for _ in 0..1000 {
        let mut r = std::future::IntoFuture::into_future(&fut);
        poll_once(std::pin::Pin::new(&mut r));
        assert_eq!(wakers(&core), 1);
    }
    assert_eq!(wakers(&core), 0, "a dropped Ref left its waker behind");
}

#[test]
fn a_handle_polled_with_new_wakers_keeps_one_entry() {
    let core = Arc::new(Core::<u8>::new());
    let mut fut = super::super::Future::from_shared(core.clone());
    let mut r = std::future::IntoFuture::into_future(&fut);
    for _ in 0..100 {
        poll_once(std::pin::Pin::new(&mut r));
    }
    assert_eq!(wakers(&core), 1);
    drop(r);
    for _ in 0..100 {
        poll_once(std::pin::Pin::new(&mut fut));
    }
    assert_eq!(wakers(&core), 1, "the owner keeps one entry too");
}
