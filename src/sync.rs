//! The synchronisation primitives the modelled code uses.
//!
//! Under `--cfg cf_loom` these are loom's checked doubles, so the loom
//! models (the `loom_tests` modules beside the code they check) explore
//! every interleaving of the real [`Future`] state machine, the worker sleep
//! handshake and shutdown racing submit; otherwise they are std's.
//!
//! The cfg is named `cf_loom`, not the customary `loom`, because
//! `RUSTFLAGS` reaches every crate in the build, and some dev-dependencies
//! (tokio, a benchmark peer) do not build with their own `loom` code paths
//! switched on.
//!
//! [`Future`]: crate::Future

#[cfg(cf_loom)]
pub(crate) use loom::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};
#[cfg(cf_loom)]
pub(crate) use loom::thread::Thread;
#[cfg(cf_loom)]
pub(crate) use loom::thread::ThreadId;
/// Always std's: loom's `Arc` cannot be coerced to `Arc<dyn Trait>` on
/// stable Rust, and reference counting is not what the models check.
pub(crate) use std::sync::Arc;
#[cfg(not(cf_loom))]
pub(crate) use std::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};
#[cfg(not(cf_loom))]
pub(crate) use std::thread::Thread;
#[cfg(not(cf_loom))]
pub(crate) use std::thread::ThreadId;

/// The calling thread's id: loom's under the models, whose threads may
/// share one OS thread.
pub(crate) fn current_thread_id() -> ThreadId {
    #[cfg(cf_loom)]
    return loom::thread::current().id();
    #[cfg(not(cf_loom))]
    return std::thread::current().id();
}

/// Locks a mutex, ignoring poisoning.
///
/// Every critical section in this crate only moves plain data in and out and
/// never runs user code while holding the lock, so a poisoned lock still
/// guards consistent state.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on a condition variable, ignoring poisoning (see [`lock`]).
pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

/// The deadline `timeout` from now; `None` (wait forever) when there is no
/// timeout or it is too large to represent (`Duration::MAX`).
pub(crate) fn deadline(timeout: Option<std::time::Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|t| std::time::Instant::now().checked_add(t))
}

/// Waits on a condition variable until notified or `deadline` (`None`:
/// no deadline), ignoring poisoning. `Err` hands the guard back when the
/// deadline has already passed, without waiting.
///
/// Under loom there is no clock: a timed wait is an untimed wait, which the
/// models account for by always completing what they wait on.
pub(crate) fn wait_deadline<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    deadline: Option<std::time::Instant>,
) -> Result<MutexGuard<'a, T>, MutexGuard<'a, T>> {
    let Some(deadline) = deadline else {
        return Ok(wait(cv, g));
    };
    let now = std::time::Instant::now();
    if now >= deadline {
        return Err(g);
    }
    #[cfg(cf_loom)]
    {
        let _ = now;
        Ok(wait(cv, g))
    }
    #[cfg(not(cf_loom))]
    {
        Ok(cv
            .wait_timeout(g, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0)
    }
}

/// The current thread's handle, for [`park_until`] and `unpark`.
pub(crate) fn current_thread() -> Thread {
    #[cfg(cf_loom)]
    return loom::thread::current();
    #[cfg(not(cf_loom))]
    std::thread::current()
}

/// Parks the current thread until unparked, spuriously, or `deadline`
/// (`None`: no deadline). Returns false if the deadline had passed when
/// it returned.
///
/// Under loom there is no clock: a timed park is an untimed one, as for
/// [`wait_deadline`].
pub(crate) fn park_until(deadline: Option<std::time::Instant>) -> bool {
    #[cfg(cf_loom)]
    {
        let _ = deadline;
        loom::thread::park();
        true
    }
    #[cfg(not(cf_loom))]
    {
        match deadline {
            None => {
                std::thread::park();
                true
            }
            Some(d) => {
                let now = std::time::Instant::now();
                if now >= d {
                    return false;
                }
                std::thread::park_timeout(d - now);
                std::time::Instant::now() < d
            }
        }
    }
}

/// A sequentially consistent fence (loom's under `--cfg loom`).
pub(crate) fn fence_seqcst() {
    #[cfg(cf_loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(not(cf_loom))]
    std::sync::atomic::fence(Ordering::SeqCst);
}
