//! Loom models of `Semaphore` and `Event`: no lost wake-up under any
//! interleaving (loom reports a deadlock if a waiter is never woken).

//! Every interleaving of releases and sets racing waiters: loom reports
//! a deadlock if a waiter sleeps forever, i.e. if a wake-up is lost.
//! Waits are untimed (`None`): loom has no clock.

use super::{Event, Semaphore, lock};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use std::sync::Arc;

#[test]
fn loom_sync_prims_release_racing_acquire_never_loses_the_wakeup() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let s2 = sem.clone();
        let t = thread::spawn(move || s2.release().unwrap());
        assert!(sem.acquire(None));
        t.join().unwrap();
        assert_eq!(sem.available_permits(), 0);
    });
}

#[test]
fn loom_sync_prims_two_releases_wake_two_acquirers() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                thread::spawn(move || s.acquire(None))
            })
            .collect();
        sem.release().unwrap();
        sem.release().unwrap();
        for t in ts {
            assert!(t.join().unwrap());
        }
        assert_eq!(sem.available_permits(), 0);
    });
}

#[test]
fn loom_sync_prims_bounded_guard_excludes() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::bounded(1));
        let holders = Arc::new(AtomicUsize::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (s, h) = (sem.clone(), holders.clone());
                thread::spawn(move || {
                    let _g = s.acquire_guard(None).unwrap();
                    assert_eq!(h.fetch_add(1, Ordering::SeqCst), 0, "one holder");
                    h.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(sem.available_permits(), 1);
    });
}

#[test]
fn loom_sync_prims_event_set_racing_wait_never_loses_the_wakeup() {
    loom::model(|| {
        let ev = Arc::new(Event::new());
        let e2 = ev.clone();
        let t = thread::spawn(move || e2.set());
        assert!(ev.wait(None));
        t.join().unwrap();
        assert!(ev.is_set());
    });
}

#[test]
fn loom_sync_prims_event_one_set_wakes_two_waiters() {
    loom::model(|| {
        let ev = Arc::new(Event::new());
        let ws: Vec<_> = (0..2)
            .map(|_| {
                let e = ev.clone();
                thread::spawn(move || e.wait(None))
            })
            .collect();
        ev.set();
        for w in ws {
            assert!(w.join().unwrap());
        }
    });
}

#[test]
fn loom_sync_prims_event_set_then_clear_still_wakes_an_earlier_waiter() {
    loom::model(|| {
        let ev = Arc::new(Event::new());
        // The waiter's arrival (generation snapshot) precedes the set;
        // its sleeping may interleave anywhere with set and clear.
        let seen = ev.generation();
        let e2 = ev.clone();
        let w = thread::spawn(move || {
            let state = lock(&e2.state);
            e2.wait_since(state, seen, None)
        });
        ev.set();
        ev.clear();
        assert!(w.join().unwrap());
        assert!(!ev.is_set());
    });
}
