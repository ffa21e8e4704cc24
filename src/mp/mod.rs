//! Python's `multiprocessing.Process`, `Pipe` and `Queue`, on the process
//! pool's machinery.
//!
//! * [`Process`] runs one portable function (a `fn` item with a serde
//!   argument and result, as [`ExecutorExt::submit`](crate::ExecutorExt::submit)
//!   takes) in a fresh child: this same executable started again, which
//!   serves it from [`init`](crate::init) (the [`WORKER_ENV`](crate::WORKER_ENV)
//!   marker says `v1:<parent pid>:proc` or `:daemon`), reads one frame
//!   `{build, entry, argument, number of passed descriptors}`, runs the
//!   function and writes one frame with its outcome, then exits.
//! * [`pipe`] gives a one-way typed channel (a [`Sender`] and a
//!   [`Receiver`] over an OS pipe); [`Queue`] is a many-producer queue read
//!   in the process that made it. Their ends travel to a child **inside a
//!   [`Process`] argument**: [`Process::new`] serializes the argument, and
//!   each end met on the way is duplicated and recorded; at
//!   [`start`](Process::start) the duplicates are mapped onto descriptors 6,
//!   7, ... of the child (as the pool maps its pipes onto 3 and 4), and the
//!   serialized end is only that index. The child claims them, once, when it
//!   decodes its argument. An end serialized anywhere else (a `Process`
//!   result, a pool task) is an encode error: descriptors cannot cross an
//!   existing pipe.
//!
//! What goes through a channel is framed in *chunks* of at most `PIPE_BUF`
//! bytes (4096 on Linux), each written with one `write` call, which POSIX
//! makes atomic on a pipe: several processes may write to one pipe and no
//! chunk is ever torn. A chunk carries its writer (process id and a
//! per-process writer number), so a value larger than one chunk is
//! reassembled by the reader even when chunks of several writers
//! interleave.

mod channel;
mod process;

pub use channel::{Queue, Receiver, Sender, pipe};
pub use process::Process;
pub(crate) use process::serve_child;

/// Locks a std mutex, ignoring poisoning (every critical section here only
/// moves plain data).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
