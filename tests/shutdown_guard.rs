//! `ShutdownGuard`: the scope of Python's `with ThreadPoolExecutor() as
//! ex:` (CONFORMANCE.md S8, S10, S11), which cancels what has not started
//! when the scope unwinds from a panic (PP9).
//!
//! No test asserts timing. The running task is held until the guard's
//! shutdown has visibly begun, so what the drop waited for is certain; every
//! blocking drop runs on a helper thread under a hang guard.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use concurrent_futures::{Error, Executor, ExecutorExt, Future, ShutdownGuard, ThreadPoolExecutor};

mod common;
use common::{HANG, started, wait_until};

fn identity(x: u64) -> u64 {
    x
}

/// Runs `f` on a helper thread and waits for it with the hang guard.
fn guarded<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("hang guard: {what} still blocked (or panicked)"))
}

/// A one-worker pool whose worker runs a task held until the returned
/// sender is used, with five more tasks queued behind it.
fn busy_pool() -> (
    Arc<ThreadPoolExecutor>,
    Future<u64>,
    Sender<()>,
    Vec<Future<u64>>,
) {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (running, release) = started(&pool, 100u64);
    let queued = (0..5).map(|i| pool.submit(identity, i)).collect();
    (pool, running, release, queued)
}

/// Releases the running task once `ready()` holds, from another thread.
fn release_when(release: Sender<()>, ready: impl Fn() -> bool + Send + 'static) {
    std::thread::spawn(move || {
        wait_until("the guard's shutdown to begin", ready);
        drop(release);
    });
}

/// True once `pool` refuses new work, i.e. its shutdown has begun (a probe
/// accepted before that just runs, like any other task).
fn refuses(pool: &ThreadPoolExecutor) -> bool {
    matches!(pool.try_submit(identity, 0), Err(Error::Shutdown))
}

/// S8 (CPython `test_context_manager_shutdown`): when the guard's scope
/// ends, the pool is shut down and every task, queued or running, has
/// ended: the futures are done the moment the scope is left.
#[test]
fn s8_dropping_the_guard_waits_for_running_and_queued_tasks() {
    let (pool, running, release, queued) = busy_pool();
    let p = pool.clone();
    release_when(release, move || refuses(&p));
    let guard = ShutdownGuard::new(pool.clone());
    guarded("dropping the guard", move || drop(guard));
    assert_eq!(running.result(None), Ok(&100));
    for (i, f) in (0..5u64).zip(&queued) {
        assert!(f.done(), "queued task {i} not done when the scope ended");
        assert_eq!(f.result(None), Ok(&i));
    }
    assert!(refuses(&pool), "the pool was not shut down");
    assert_eq!(pool.live_workers(), 0, "the guard did not join the workers");
}

/// PP9 (gh-130975): a scope left by a panic cancels the tasks that have not
/// started, then waits for the running one, which keeps its value.
#[test]
fn pp9_a_guard_dropped_by_a_panic_cancels_queued_tasks_and_waits_for_running_ones() {
    let (pool, running, release, queued) = busy_pool();
    // The running task may end only once the queue has been cancelled, so
    // no queued task can start before the cancel.
    let queued = Arc::new(queued);
    let watched = queued.clone();
    release_when(release, move || watched.iter().all(Future::cancelled));
    let guard = ShutdownGuard::new(pool.clone());
    let unwound = guarded("unwinding through the guard", move || {
        catch_unwind(AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("the scope failed on purpose");
        }))
        .is_err()
    });
    assert!(unwound);
    assert!(running.done(), "the running task had not ended");
    assert_eq!(running.result(None), Ok(&100));
    for (i, f) in queued.iter().enumerate() {
        assert_eq!(f.result(None), Err(Error::Cancelled), "queued task {i}");
    }
    assert_eq!(pool.live_workers(), 0);
}

/// PP9 off (`cancel_on_unwind(false)`): a scope left by a panic waits for
/// all the work, queued tasks included, as CPython's `with` block does.
#[test]
fn pp9_cancel_on_unwind_false_runs_queued_tasks_even_when_unwinding() {
    let (pool, running, release, queued) = busy_pool();
    let p = pool.clone();
    release_when(release, move || refuses(&p));
    let guard = ShutdownGuard::new(pool.clone()).cancel_on_unwind(false);
    guarded("unwinding through the guard", move || {
        catch_unwind(AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("the scope failed on purpose");
        }))
        .is_err()
    });
    assert_eq!(running.result(None), Ok(&100));
    for (i, f) in (0..5u64).zip(&queued) {
        assert!(f.done(), "queued task {i} not done when the scope ended");
        assert_eq!(f.result(None), Ok(&i));
    }
}

/// The guard dereferences to its pool (the thread pool's own `spawn`
/// included) and guards an `Arc<dyn Executor>` as well as a pool.
#[test]
fn the_guard_dereferences_to_its_executor_of_any_kind() {
    let pool = ShutdownGuard::new(ThreadPoolExecutor::new(2).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let spawned = pool.spawn(move || s.lock().unwrap().push(1));
    assert_eq!(pool.submit(identity, 7).result(Some(HANG)), Ok(&7));
    drop(pool);
    assert!(spawned.done());
    assert_eq!(*seen.lock().unwrap(), [1]);

    let dynamic: Arc<dyn Executor> = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let guard = ShutdownGuard::new(dynamic.clone());
    let f = guard.submit(identity, 3);
    drop(guard);
    assert!(f.done());
    assert_eq!(
        dynamic.try_submit(identity, 1).unwrap_err(),
        Error::Shutdown
    );
}
