//! Which futures' done-callbacks this thread is running right now.
//!
//! A callback may call `into_result()` on its own future, which would wait
//! for the callbacks to finish, that is, for itself: `Core` checks
//! [`running_those_of`] and refuses instead. And what a callback submits to
//! a thread pool goes to the pool's inbox, not to the running worker's own
//! deque ([`in_callbacks`]): it does not descend from the task whose
//! completion ran the callback.

/// How many nested callback runs [`CALLBACKS_OF`] remembers: a callback
/// completing a future whose callback completes the next, and so on, runs
/// them nested on one thread. 8 was reached by a chain of 9 promises (found
/// by review); 64 words of thread-local space cover chains far deeper than
/// any seen, and a deeper one only loses the check (its `into_result` in
/// an own callback waits for itself, as before).
#[cfg(not(cf_loom))]
const TRACKED_CALLBACK_RUNS: usize = 64;

#[cfg(not(cf_loom))]
thread_local! {
    /// How many futures' done-callbacks this thread is running right now
    /// (a callback may complete another future, whose callbacks then run
    /// inside it).
    static CALLBACK_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The addresses of those futures' cores, outermost first (the first
    /// [`TRACKED_CALLBACK_RUNS`] of them). Plain cells, with no destructor,
    /// so they still work while the thread's other thread-locals are torn
    /// down (a `Promise` dropped then completes its future).
    static CALLBACKS_OF: [std::cell::Cell<usize>; TRACKED_CALLBACK_RUNS] =
        const { [const { std::cell::Cell::new(0) }; TRACKED_CALLBACK_RUNS] };
}

/// Whether this thread is running some future's done-callbacks: a thread
/// pool then queues what they submit in its inbox, not on the running
/// worker's own deque (see `thread::help_while_waiting`).
pub(crate) fn in_callbacks() -> bool {
    #[cfg(not(cf_loom))]
    return CALLBACK_DEPTH.with(std::cell::Cell::get) > 0;
    #[cfg(cf_loom)]
    false
}

/// Marks, until dropped (also on unwind), that this thread runs the
/// done-callbacks of the core at `addr`.
pub(super) struct RunningCallbacks;

impl RunningCallbacks {
    pub(super) fn enter(addr: usize) -> Self {
        #[cfg(not(cf_loom))]
        {
            let depth = CALLBACK_DEPTH.with(|d| d.replace(d.get() + 1));
            if depth < TRACKED_CALLBACK_RUNS {
                CALLBACKS_OF.with(|c| c[depth].set(addr));
            }
        }
        #[cfg(cf_loom)]
        let _ = addr;
        RunningCallbacks
    }
}

impl Drop for RunningCallbacks {
    fn drop(&mut self) {
        #[cfg(not(cf_loom))]
        CALLBACK_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Whether this thread is running the done-callbacks of the core at
/// `addr` (one of the [`TRACKED_CALLBACK_RUNS`] outermost runs).
pub(super) fn running_those_of(addr: usize) -> bool {
    #[cfg(not(cf_loom))]
    return CALLBACKS_OF.with(|c| {
        let depth = CALLBACK_DEPTH.with(std::cell::Cell::get);
        c[..depth.min(TRACKED_CALLBACK_RUNS)]
            .iter()
            .any(|a| a.get() == addr)
    });
    #[cfg(cf_loom)]
    {
        let _ = addr;
        false
    }
}

/// Runs callbacks in the order they were added (C4), each under
/// `catch_unwind`: a panicking callback is logged and the rest still run
/// (C5, C6, decision 7). Each callback is dropped right after it runs, so its
/// captures are released (C8).
pub(crate) fn run_callbacks<T>(fut: &crate::future::Future<T>, callbacks: Vec<super::Callback<T>>) {
    for cb in callbacks {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(fut)));
        if let Err(payload) = r {
            // Outside `log!`, which skips its arguments when logging is off:
            // the payload must be dropped with care either way.
            let message = crate::error::take_panic_message(payload);
            crate::error::report!(error, "exception calling callback for {fut:?}: {message}");
        }
    }
}
