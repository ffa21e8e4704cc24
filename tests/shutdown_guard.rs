//! `ShutdownGuard`: the scope of Python's `with ThreadPoolExecutor() as
//! ex:` (CONFORMANCE.md S8, S10), which cancels what has not started when
//! the scope unwinds from a panic (PP9).
//!
//! No test asserts timing. The running task is held until the guard's
//! shutdown has visibly begun, so what the drop waited for is certain; every
//! blocking drop runs on a helper thread under a hang guard.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use concurrent_futures::{Error, Executor, ExecutorExt, Future, ShutdownGuard, ThreadPoolExecutor};

mod common;
use common::{HANG, guarded, started, wait_until};

fn identity(x: u64) -> u64 {
    x
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
    assert!(running.done(), "the running task had not ended");
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
    assert!(running.done(), "the running task had not ended");
    assert_eq!(running.result(None), Ok(&100));
    for (i, f) in (0..5u64).zip(&queued) {
        assert!(f.done(), "queued task {i} not done when the scope ended");
        assert_eq!(f.result(None), Ok(&i));
    }
}

/// A guard made while its thread is already unwinding (in a destructor
/// that runs during a panic) lives in a scope that did not panic: its drop
/// waits for the queued tasks instead of cancelling them.
#[test]
fn pp9_a_guard_made_during_unwinding_does_not_cancel() {
    struct ScopeInDrop(Arc<Mutex<Vec<Future<u64>>>>);

    impl Drop for ScopeInDrop {
        fn drop(&mut self) {
            let (pool, running, release, mut futures) = busy_pool();
            futures.push(running);
            *self.0.lock().unwrap() = futures;
            // Released only once the guard's shutdown has begun: a guard
            // that cancelled would have cancelled the queue by then.
            let p = pool.clone();
            release_when(release, move || refuses(&p));
            drop(ShutdownGuard::new(pool));
        }
    }

    let futures = Arc::new(Mutex::new(Vec::new()));
    let f = futures.clone();
    let unwound = guarded(
        "a guard dropped inside a destructor run by a panic",
        move || {
            catch_unwind(AssertUnwindSafe(move || {
                let _scope = ScopeInDrop(f);
                panic!("the outer scope failed on purpose");
            }))
            .is_err()
        },
    );
    assert!(unwound);
    let futures = futures.lock().unwrap();
    assert_eq!(futures.len(), 6);
    for (i, f) in futures.iter().enumerate() {
        assert!(
            f.result(None).is_ok(),
            "task {i}: {:?} (cancelled by a guard whose scope did not panic)",
            f.result(None)
        );
    }
}

/// Dropped inside a task of its own pool, the guard shuts the pool down and
/// waits for the other workers' tasks (as `shutdown(wait = true)` from a
/// task does), without waiting for itself.
#[test]
fn a_guard_dropped_inside_a_task_of_its_own_pool_waits_for_the_other_workers() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let (other, release) = started(&pool, 7u64);
    let p = pool.clone();
    let p2 = pool.clone();
    release_when(release, move || refuses(&p2));
    let dropper = pool.spawn(move || {
        drop(ShutdownGuard::new(p));
        "dropped"
    });
    assert_eq!(
        guarded("the task that drops the guard", move || dropper
            .result(Some(HANG))
            .cloned()),
        Ok("dropped")
    );
    assert!(other.done(), "the other worker's task had not ended");
    assert_eq!(other.result(None), Ok(&7));
    assert!(refuses(&pool));
}

fn takes_any_executor<X: Executor + ?Sized>(ex: &X) -> usize {
    ex.max_workers()
}

/// The guard dereferences to its pool (the thread pool's own `spawn`
/// included), is an `Executor` itself for generic code, and guards an
/// owned pool, an `Arc<dyn Executor>` or a `&pool` alike.
#[test]
fn the_guard_is_its_executor_whatever_form_the_executor_takes() {
    let pool = ShutdownGuard::new(ThreadPoolExecutor::new(2).unwrap());
    assert_eq!(takes_any_executor(&pool), 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let spawned = pool.spawn(move || s.lock().unwrap().push(1));
    assert_eq!(pool.submit(identity, 7).result(Some(HANG)), Ok(&7));
    guarded("dropping a guard over a pool", move || drop(pool));
    assert!(spawned.done());
    assert_eq!(*seen.lock().unwrap(), [1]);

    let dynamic: Arc<dyn Executor> = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let guard = ShutdownGuard::new(dynamic.clone());
    let f = guard.submit(identity, 3);
    guarded("dropping a guard over an Arc<dyn Executor>", move || {
        drop(guard)
    });
    assert!(f.done());
    assert_eq!(
        dynamic.try_submit(identity, 1).unwrap_err(),
        Error::Shutdown
    );

    let owned = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let o = owned.clone();
    let f = guarded("a guard over a &pool", move || {
        let guard = ShutdownGuard::new(&*o);
        guard.submit(identity, 4)
    });
    assert!(f.done());
    assert_eq!(f.result(None), Ok(&4));
    assert!(refuses(&owned));
}

/// PP8: a guard with a deadline waits at most that long when it drops. The
/// running task is held past the deadline; the drop returns anyway, the
/// pool is shut down, and the task still ends once released.
#[test]
fn pp8_a_guard_with_a_deadline_stops_waiting_at_the_deadline() {
    let (pool, running, release, queued) = busy_pool();
    let guard = ShutdownGuard::new(pool.clone()).deadline(std::time::Duration::from_millis(50));
    guarded("dropping the guard with a deadline", move || drop(guard));
    assert!(!running.done(), "the drop waited for the held task");
    assert!(refuses(&pool), "the pool was not shut down");
    drop(release);
    assert_eq!(running.result(Some(HANG)), Ok(&100));
    for (i, f) in (0..5u64).zip(&queued) {
        assert_eq!(f.result(Some(HANG)), Ok(&i));
    }
}
