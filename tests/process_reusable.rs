//! `ProcessPoolBuilder::build_reusable`: one pool for the whole program,
//! rebuilt when it can no longer serve (CONFORMANCE.md L1, loky's
//! `get_reusable_executor`; its `test_deadlock_kill`: after SIGKILL, a new
//! working instance).
//!
//! The reusable pool is one per process, so these tests take turns
//! (`TURN`): each would otherwise see the others' pools.

use std::sync::{Arc, Mutex, MutexGuard};

use concurrent_futures::{Error, ExecutorExt, ProcessPoolBuilder, ProcessPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{FileGate, guarded, pid_after_gate, wait};

static TURN: Mutex<()> = Mutex::new(());

fn my_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn builder(workers: usize) -> ProcessPoolBuilder {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .test_harness()
}

fn reusable(workers: usize) -> Arc<ProcessPoolExecutor> {
    builder(workers).build_reusable().expect("the pool builds")
}

fn triple(x: u64) -> u64 {
    x * 3
}

#[test]
fn l1_an_equal_builder_gets_the_same_pool() {
    let _turn = my_turn();
    let a = reusable(2);
    let b = reusable(2);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(wait(b.submit(triple, 2)), Ok(6));
}

#[test]
fn l1_a_shut_down_pool_is_replaced_by_a_working_one() {
    let _turn = my_turn();
    let old = reusable(2);
    old.shutdown(true, false);
    let new = reusable(2);
    assert!(!Arc::ptr_eq(&old, &new));
    assert_eq!(wait(new.submit(triple, 3)), Ok(9));
}

/// loky's `test_deadlock_kill`: once the workers were killed, the next call
/// hands out a new, working pool.
#[test]
fn l1_after_kill_workers_the_next_call_builds_a_working_pool() {
    let _turn = my_turn();
    let old = reusable(2);
    old.kill_workers();
    assert_eq!(old.submit(triple, 1).into_result(), Err(Error::Shutdown));
    let new = reusable(2);
    assert!(!Arc::ptr_eq(&old, &new));
    assert_eq!(wait(new.submit(triple, 4)), Ok(12));
}

/// Asked for with another configuration, the pool is replaced; the old one
/// is shut down without waiting, so what it was running still finishes.
#[test]
fn l1_another_configuration_replaces_the_pool_and_the_old_one_finishes_its_work() {
    let _turn = my_turn();
    let old = reusable(1);
    let gate = FileGate::new("old");
    let running = old.submit(pid_after_gate, gate.arg());
    let new = reusable(2);
    assert!(!Arc::ptr_eq(&old, &new));
    assert_eq!(old.submit(triple, 1).into_result(), Err(Error::Shutdown));
    gate.open();
    assert!(wait(running).is_ok());
    assert_eq!(wait(new.submit(triple, 5)), Ok(15));
    guarded("the old pool's shutdown", move || old.shutdown(true, false));
}
