//! One process pool for the whole program, rebuilt when it can no longer
//! serve (loky's `get_reusable_executor`, CONFORMANCE.md L1).
//!
//! Library code that wants a process pool without having one passed in
//! asks for the reusable one: the first call builds it, later calls with
//! the same configuration get the same pool, and a pool that was shut down
//! (or broken: its initializer failed, its workers cannot start) is
//! replaced by a fresh one instead of refusing every task. A call with a
//! different configuration replaces the pool too; the old one is shut down
//! without waiting, so its queued and running tasks still finish.
//!
//! A crashed worker never makes the pool unusable here (it fails one task
//! and is replaced), so, unlike loky's, the pool is rebuilt only after a
//! shutdown, `kill_workers` or a broken start.

use std::sync::{Arc, Mutex};

use super::builder::ProcessPoolBuilder;
use super::pool::ProcessPoolExecutor;
use crate::Error;

/// The pool handed out, and the configuration it was built from.
struct Reusable {
    builder: ProcessPoolBuilder,
    pool: Arc<ProcessPoolExecutor>,
}

static REUSABLE: Mutex<Option<Reusable>> = Mutex::new(None);

/// See [`ProcessPoolBuilder::build_reusable`].
pub(crate) fn get(builder: ProcessPoolBuilder) -> Result<Arc<ProcessPoolExecutor>, Error> {
    // std's Mutex even under loom (a static needs a `const` constructor);
    // poisoning is ignored as everywhere in this crate.
    let mut slot = REUSABLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(current) = slot.as_ref() {
        if current.builder == builder && current.pool.accepts_tasks() {
            return Ok(current.pool.clone());
        }
    }
    let pool = Arc::new(builder.clone().build()?);
    if let Some(old) = slot.replace(Reusable {
        builder,
        pool: pool.clone(),
    }) {
        // Its tasks still run to completion; whoever holds it may still
        // wait for them.
        old.pool.shutdown(false, false);
    }
    Ok(pool)
}
