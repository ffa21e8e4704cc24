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

    /// The future was cancelled before it started (by `cancel()`, by
    /// `shutdown(cancel_futures = true)`, or by a `map` whose deadline passed).
    #[error("the task was cancelled before it ran")]
    Cancelled,

    /// `result(timeout)` or `exception(timeout)` gave up waiting. The task is
    /// not cancelled and keeps running; call again to wait longer.
    #[error("timed out after {waited:?} waiting for the result; the task keeps running")]
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
    /// was done; this item and every later one were cancelled. Distinct from a
    /// task's own failure (PP12).
    #[error(
        "the map deadline of {timeout:?} passed before this item finished; it and later items were cancelled"
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

    /// The executor can no longer run tasks (for example, a worker
    /// initializer panicked). Build a new executor.
    #[error("the {executor} is broken and will not run tasks: {reason}; build a new one")]
    Broken {
        /// Which executor (`"thread pool"`, `"process pool"`).
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

    /// An argument or result could not be encoded to cross the process boundary.
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
/// 7). The payload of such a second panic is leaked, not dropped.
pub(crate) fn drop_panic_payload(payload: Box<dyn std::any::Any + Send>) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)));
    if let Err(second) = dropped {
        std::mem::forget(second);
    }
}

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
