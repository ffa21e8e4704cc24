//! The one error type of the crate.
//!
//! Every way a task can fail to deliver its value is a variant of [`Error`]:
//! the task panicked, it was cancelled, a deadline passed, the executor was
//! shut down or broken, a process worker died, or a value would not cross the
//! process boundary. An `Error` is immutable and cheap to clone, so every
//! call to [`Future::result`](crate::Future::result) on a failed future gives
//! the same error (CONFORMANCE.md decision 8, PP5).

use std::time::Duration;

/// Why a future did not produce a value, or why an executor refused work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task panicked. The panic message is kept; a process worker also
    /// sends its backtrace text when one was captured (`RUST_BACKTRACE=1`).
    #[error("task panicked: {message}")]
    Panicked {
        /// The panic payload as text (`&str` and `String` payloads verbatim).
        message: String,
        /// The backtrace captured in a process worker, when there was one.
        backtrace: Option<String>,
    },

    /// The future was cancelled: before it started (by `cancel()`, by
    /// `shutdown(cancel_futures = true)`, or by a `map` whose deadline
    /// passed), or while it ran on a process pool built with
    /// `kill_on_cancel`.
    #[error("the task was cancelled")]
    Cancelled,

    /// A wait with a timeout gave up: `result(timeout)`, `exception(timeout)`,
    /// and the other waits that take one (`next_timeout`, `Queue::get`,
    /// `Receiver::recv`, ...). Nothing is cancelled: a task keeps running,
    /// a value still to come still comes; call again to wait longer.
    #[error("timed out after {waited:?}; nothing was cancelled, and waiting again may succeed")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },

    /// `as_completed` reached its deadline with futures still unfinished.
    #[error("{unfinished} (of {total}) futures unfinished when the as_completed deadline passed")]
    AsCompletedTimeout {
        /// Futures not yet done when the deadline passed.
        unfinished: usize,
        /// Distinct futures given to `as_completed`.
        total: usize,
    },

    /// A `map` deadline (counted from the `map` call) passed before this item
    /// was done; the map ends here, and the items not yet started were
    /// cancelled (one already running goes on in the background, as a task
    /// past `result`'s timeout does). Distinct from a task's own failure
    /// (PP12).
    #[error(
        "the map deadline of {timeout:?} passed before this item finished; the items not yet started were cancelled"
    )]
    MapDeadline {
        /// The timeout given to `map`.
        timeout: Duration,
    },

    /// The per-task time limit passed while the task ran; its process worker
    /// was killed and replaced.
    #[error("the task ran longer than its limit of {limit:?}; its worker was killed and replaced")]
    TaskTimeout {
        /// The limit the task exceeded.
        limit: Duration,
    },

    /// A [`Promise`](crate::Promise) was completed twice, or after its
    /// future was cancelled; the first outcome is kept (F4).
    #[error("the future is already {0}; the first outcome is kept")]
    InvalidState(&'static str),

    /// The value was already moved out of this future by
    /// [`Future::into_result`](crate::Future::into_result) or `.await`.
    #[error("the result was already moved out of this future (by into_result or .await)")]
    AlreadyTaken,

    /// The executor was shut down before this task could be accepted.
    #[error("cannot schedule new futures after shutdown")]
    Shutdown,

    /// The executor can no longer run tasks (a worker initializer
    /// panicked, workers cannot start), or it was stopped by force while it
    /// held this task (`kill_workers`, `terminate_workers`, a
    /// `shutdown_within` deadline, `Pool::terminate`). Build a new executor.
    #[error("{}", broken_message(executor, reason))]
    Broken {
        /// Which executor: `"thread pool"`, `"process pool"`,
        /// `"multiprocessing-style pool"` (a [`Pool`](crate::Pool) stopped
        /// by `terminate()`), or `"promise"` (a `Promise` dropped
        /// unfulfilled).
        executor: &'static str,
        /// What broke it.
        reason: String,
    },

    /// The process worker running this task died. Only this task fails; the
    /// pool starts a new worker and keeps serving.
    #[error("the worker process {pid} died while running this task ({status})")]
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// How it ended, e.g. `exit code 3` or `signal 9 (SIGKILL)`.
        status: String,
        /// The exit code, when it exited.
        code: Option<i32>,
        /// The signal number, when a signal killed it.
        signal: Option<i32>,
    },

    /// An argument or result could not be encoded to cross the process
    /// boundary: its `Serialize` returned an error or panicked, or it does
    /// not fit in a frame.
    #[error("could not serialize {type_name}: {message}")]
    Encode {
        /// The Rust type that failed to encode.
        type_name: &'static str,
        /// The codec's message.
        message: String,
    },

    /// An argument or result could not be decoded on the other side.
    #[error("could not deserialize {type_name}: {message}")]
    Decode {
        /// The Rust type that failed to decode.
        type_name: &'static str,
        /// The codec's message.
        message: String,
    },

    /// A worker broke the task protocol (a malformed, truncated or oversized
    /// frame). The worker is replaced; the task it was running fails.
    #[error("process worker protocol error: {0}")]
    Protocol(String),

    /// Every sender of a [`pipe`](crate::pipe) or [`Queue`](crate::Queue)
    /// was dropped and everything sent was received (Python's `EOFError`).
    #[error("end of stream: every sender of this channel was dropped")]
    EndOfStream,

    /// Starting or talking to a worker process failed at the OS level.
    #[error("process worker I/O error: {0}")]
    Io(String),

    /// The executor configuration or an argument is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A call that the object's state does not allow, with what to do
    /// instead: `Pool::join` before `close`, `AsyncResult::successful`
    /// before the result is ready, a wait that would wait for itself (from
    /// a pool callback, or a future's own done-callback), a bounded
    /// semaphore released past its bound, a second `Process::start`.
    /// Python raises `ValueError`, `RuntimeError` or `AssertionError` for
    /// these.
    #[error("invalid call: {0}")]
    InvalidCall(String),
}

impl Error {
    /// Whether this error is the task's own failure (a panic), as opposed to
    /// cancellation, a deadline or an executor problem.
    pub fn is_panic(&self) -> bool {
        matches!(self, Error::Panicked { .. })
    }

    /// Whether this error means the future was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    /// Whether this error is a caller-side timeout (`result(timeout)`,
    /// `as_completed` or `map` deadline), after which the task may still run.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::AsCompletedTimeout { .. } | Error::MapDeadline { .. }
        )
    }

    /// Builds [`Error::Panicked`] from a payload caught by `catch_unwind`.
    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Error {
        Error::Panicked {
            message: take_panic_message(payload),
            backtrace: None,
        }
    }
}

/// Logs through the `log` facade, target `concurrent_futures`, where a
/// panic must not get out: `report!(error, "...", args)`. The logger is
/// the user's, and one that panics would otherwise take down the pool
/// thread that was reporting (decision 7: a worker that runs no more
/// tasks, a process reader whose futures never end). Its panic is dropped
/// unreported: the only channel to report it on is the one that panicked.
macro_rules! report {
    ($level:ident, $($arg:tt)+) => {
        $crate::error::logged_caught(|| ::log::$level!(target: "concurrent_futures", $($arg)+))
    };
}
pub(crate) use report;

/// Runs `log`, a call of the user's logger (see [`report!`]), dropping a
/// panic it raises.
pub(crate) fn logged_caught(log: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(log)) {
        drop_panic_payload(payload);
    }
}

/// Drops `value`, a user's value whose `Drop` may panic, where a panic
/// must not get out (a pool thread, a `cancel()` caller, a shutdown half
/// way through its sweep): the panic is logged as "dropping `what`
/// panicked".
pub(crate) fn drop_caught<T>(value: T, what: &str) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(value)));
    if let Err(payload) = dropped {
        let message = take_panic_message(payload);
        crate::error::report!(error, "dropping {what} panicked: {message}");
    }
}

/// The text of a panic payload, which is then dropped with
/// [`drop_panic_payload`]: what every thread of ours that catches a panic
/// uses.
pub(crate) fn take_panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = panic_message(payload.as_ref());
    drop_panic_payload(payload);
    message
}

/// Drops a caught panic payload without letting its `Drop` unwind. The
/// payload is the user's (`std::panic::panic_any` takes any type), and a
/// panic from its `Drop` would otherwise escape the `catch_unwind` that
/// caught it and take down the pool thread that was handling it (decision
/// 7). Such a panic brings a payload of its own (usually a string), which
/// is dropped the same way; a chain of payloads that keep panicking when
/// dropped is cut after [`MAX_PAYLOAD_DROPS`] and its last payload leaked,
/// so the loop always ends.
pub(crate) fn drop_panic_payload(payload: Box<dyn std::any::Any + Send>) {
    let mut payload = payload;
    for _ in 0..MAX_PAYLOAD_DROPS {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(next) => payload = next,
        }
    }
    std::mem::forget(payload);
}

/// How many payloads in a row [`drop_panic_payload`] drops before it leaks
/// the next one.
const MAX_PAYLOAD_DROPS: usize = 8;

/// The text of a panic payload: `&str` and `String` payloads verbatim, other
/// payload types named as such.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic payload of a non-string type (use panic!(\"...\") or std::panic::panic_any(String))"
            .to_owned()
    }
}

/// [`Error::Broken`]'s text. A dropped `Promise` is no executor to build
/// anew (found by review: it read "the promise is broken and will not run
/// tasks: ...; build a new one").
fn broken_message(executor: &str, reason: &str) -> String {
    if executor == "promise" {
        format!("broken promise: {reason}")
    } else {
        format!("the {executor} is broken and will not run tasks: {reason}; build a new one")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_dropped_promise_reads_as_a_broken_promise_not_an_executor_to_rebuild() {
        let promise = Error::Broken {
            executor: "promise",
            reason: "the Promise was dropped without completing its future".into(),
        };
        assert_eq!(
            promise.to_string(),
            "broken promise: the Promise was dropped without completing its future"
        );
        let pool = Error::Broken {
            executor: "process pool",
            reason: "workers cannot start".into(),
        };
        assert!(pool.to_string().ends_with("; build a new one"), "{pool}");
    }

    static COUNTED_DROPS: AtomicUsize = AtomicUsize::new(0);

    /// Counts its drops.
    struct Counted;

    impl Drop for Counted {
        fn drop(&mut self) {
            COUNTED_DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Panics with a [`Counted`] payload when dropped.
    struct PanicsWithCounted;

    impl Drop for PanicsWithCounted {
        fn drop(&mut self) {
            std::panic::panic_any(Counted);
        }
    }

    /// Decision 7: the payload of a panic raised by a payload's `Drop` is
    /// dropped too (not leaked), and nothing unwinds out of the drop.
    #[test]
    fn the_payload_of_a_panic_in_a_payloads_drop_is_dropped_too() {
        drop_panic_payload(Box::new(PanicsWithCounted));
        assert_eq!(COUNTED_DROPS.load(Ordering::SeqCst), 1);
    }

    static CHAIN_DROPS: AtomicUsize = AtomicUsize::new(0);

    /// Panics with another of its kind whenever it is dropped.
    struct PanicsForever;

    impl Drop for PanicsForever {
        fn drop(&mut self) {
            CHAIN_DROPS.fetch_add(1, Ordering::SeqCst);
            std::panic::panic_any(PanicsForever);
        }
    }

    /// A chain of payloads that panic whenever they are dropped ends: after
    /// `MAX_PAYLOAD_DROPS` drops the last payload is leaked.
    #[test]
    fn a_chain_of_payloads_that_always_panic_when_dropped_ends() {
        drop_panic_payload(Box::new(PanicsForever));
        assert_eq!(CHAIN_DROPS.load(Ordering::SeqCst), MAX_PAYLOAD_DROPS);
    }

    #[test]
    fn take_panic_message_reads_str_and_string_payloads() {
        assert_eq!(take_panic_message(Box::new("boom")), "boom");
        assert_eq!(take_panic_message(Box::new(String::from("bang"))), "bang");
        assert!(take_panic_message(Box::new(3u8)).contains("non-string"));
    }
}
