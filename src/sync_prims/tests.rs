//! Unit tests of `Semaphore` and `Event` (std mode).

use super::*;
use crate::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

#[test]
fn semaphore_counts_permits() {
    let sem = Semaphore::new(2);
    assert_eq!(sem.available_permits(), 2);
    assert!(sem.try_acquire());
    assert!(sem.acquire(None));
    assert_eq!(sem.available_permits(), 0);
    assert!(!sem.try_acquire());
    sem.release().unwrap();
    assert_eq!(sem.available_permits(), 1);
    assert!(sem.acquire(Some(Duration::ZERO)));
    assert_eq!(sem.available_permits(), 0);
    sem.release_n(3).unwrap();
    assert_eq!(
        sem.available_permits(),
        3,
        "unbounded: may exceed the start"
    );
    assert_eq!(Semaphore::default().available_permits(), 1);
}

#[test]
fn zero_timeout_on_an_empty_semaphore_returns_false() {
    let sem = Semaphore::new(0);
    assert!(!sem.acquire(Some(Duration::ZERO)));
    assert!(!sem.acquire(Some(Duration::from_millis(5))));
    assert!(sem.acquire_guard(Some(Duration::ZERO)).is_none());
    assert_eq!(sem.available_permits(), 0);
}

#[test]
fn huge_timeout_is_no_deadline() {
    let sem = Semaphore::new(1);
    assert!(sem.acquire(Some(Duration::MAX)));
}

#[test]
fn guard_releases_on_drop() {
    let sem = Semaphore::new(1);
    let g = sem.acquire_guard(None).unwrap();
    assert_eq!(sem.available_permits(), 0);
    assert!(!sem.try_acquire());
    drop(g);
    assert_eq!(sem.available_permits(), 1);
    let r = std::panic::catch_unwind(|| {
        let _g = sem.acquire_guard(None);
        panic!("holder panics");
    });
    assert!(r.is_err());
    assert_eq!(sem.available_permits(), 1, "released while unwinding");
}

#[test]
fn bounded_over_release_is_an_error_and_changes_nothing() {
    let sem = Semaphore::bounded(2);
    assert!(matches!(sem.release(), Err(Error::InvalidCall(_))));
    assert_eq!(sem.available_permits(), 2);
    assert!(sem.try_acquire());
    assert!(sem.try_acquire());
    assert!(sem.release_n(3).is_err(), "all or nothing");
    assert_eq!(sem.available_permits(), 0);
    sem.release_n(2).unwrap();
    assert_eq!(sem.available_permits(), 2);
    // A guard whose permit someone else already gave back: its drop is
    // refused quietly and the count stays at the bound.
    let g = sem.acquire_guard(None).unwrap();
    sem.release().unwrap();
    drop(g);
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn release_n_zero_and_overflow_are_errors() {
    let sem = Semaphore::new(usize::MAX);
    assert!(matches!(sem.release_n(0), Err(Error::InvalidConfig(_))));
    assert!(matches!(sem.release(), Err(Error::InvalidCall(_))));
    assert_eq!(sem.available_permits(), usize::MAX);
}

#[test]
fn release_wakes_a_blocked_acquirer() {
    let sem = Arc::new(Semaphore::new(0));
    let s2 = sem.clone();
    let t = thread::spawn(move || s2.acquire(None));
    sem.release().unwrap();
    assert!(t.join().unwrap());
    assert_eq!(sem.available_permits(), 0);
}

#[test]
fn release_n_wakes_that_many_waiters() {
    let sem = Semaphore::new(0);
    thread::scope(|s| {
        let ts: Vec<_> = (0..3).map(|_| s.spawn(|| sem.acquire(None))).collect();
        sem.release_n(3).unwrap();
        for t in ts {
            assert!(t.join().unwrap());
        }
    });
    assert_eq!(sem.available_permits(), 0);
}

#[test]
fn many_threads_never_exceed_the_permit_count() {
    const PERMITS: usize = 3;
    const THREADS: usize = 8;
    const ROUNDS: usize = 2_000;
    let sem = Semaphore::bounded(PERMITS);
    let holders = AtomicUsize::new(0);
    let max_seen = AtomicUsize::new(0);
    let timed_out = AtomicUsize::new(0);
    thread::scope(|s| {
        for i in 0..THREADS {
            let (sem, holders, max_seen, timed_out) = (&sem, &holders, &max_seen, &timed_out);
            s.spawn(move || {
                let hold = || {
                    let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                    max_seen.fetch_max(now, Ordering::SeqCst);
                    assert!(now <= PERMITS, "{now} holders of {PERMITS} permits");
                    if now % 2 == 0 {
                        thread::yield_now();
                    }
                    holders.fetch_sub(1, Ordering::SeqCst);
                };
                for r in 0..ROUNDS {
                    match (i + r) % 3 {
                        0 => {
                            let _g = sem.acquire_guard(None).unwrap();
                            hold();
                        }
                        1 => {
                            if sem.acquire(Some(Duration::from_micros(50))) {
                                hold();
                                sem.release().unwrap();
                            } else {
                                timed_out.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            if sem.try_acquire() {
                                hold();
                                sem.release().unwrap();
                            }
                        }
                    }
                }
            });
        }
    });
    assert!(max_seen.load(Ordering::SeqCst) <= PERMITS);
    assert_eq!(holders.load(Ordering::SeqCst), 0);
    assert_eq!(sem.available_permits(), PERMITS, "every permit came back");
}

#[test]
fn event_set_clear_is_set() {
    let ev = Event::new();
    assert!(!ev.is_set());
    ev.set();
    assert!(ev.is_set());
    ev.set();
    assert!(ev.is_set(), "set twice is still set");
    ev.clear();
    assert!(!ev.is_set());
    ev.clear();
    assert!(!ev.is_set());
    assert!(!Event::default().is_set());
}

#[test]
fn wait_returns_true_when_set_from_another_thread() {
    let ev = Arc::new(Event::new());
    let e2 = ev.clone();
    let t = thread::spawn(move || e2.set());
    assert!(ev.wait(None));
    t.join().unwrap();
    let e3 = ev.clone();
    ev.clear();
    let t = thread::spawn(move || e3.set());
    assert!(ev.wait(Some(Duration::from_secs(600))));
    t.join().unwrap();
}

#[test]
fn zero_timeout_on_an_unset_event_returns_false() {
    let ev = Event::new();
    assert!(!ev.wait(Some(Duration::ZERO)));
    assert!(!ev.wait(Some(Duration::from_millis(5))));
    ev.set();
    assert!(ev.wait(Some(Duration::ZERO)), "set: true at once");
    assert!(ev.wait(None));
}

#[test]
fn all_waiters_wake_on_set() {
    let ev = Event::new();
    let started = AtomicUsize::new(0);
    thread::scope(|s| {
        let ws: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    started.fetch_add(1, Ordering::SeqCst);
                    ev.wait(None)
                })
            })
            .collect();
        while started.load(Ordering::SeqCst) < 6 {
            thread::yield_now();
        }
        ev.set();
        for w in ws {
            assert!(w.join().unwrap());
        }
    });
}

#[test]
fn a_set_during_the_wait_counts_even_if_cleared_again() {
    let ev = Event::new();
    // A waiter that arrived before the set and clear (its generation
    // snapshot is taken now), as Python's `wait` returning True.
    let seen = ev.generation();
    ev.set();
    ev.clear();
    let state = lock(&ev.state);
    assert!(ev.wait_since(state, seen, deadline(Some(Duration::ZERO))));
    // A waiter arriving after the clear waits for the next set.
    assert!(!ev.wait(Some(Duration::ZERO)));
}

#[test]
fn debug_output() {
    let sem = Semaphore::bounded(2);
    let g = sem.acquire_guard(None).unwrap();
    assert_eq!(
        format!("{g:?}"),
        "SemaphoreGuard { semaphore: Semaphore { available_permits: 1, bound: Some(2) } }"
    );
    drop(g);
    assert_eq!(format!("{:?}", Event::new()), "Event { is_set: false }");
}
