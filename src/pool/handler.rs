//! The pool's result-handling thread (CPython's `_handle_results`, MP6).
//!
//! Every job of `apply_async` / `map_async` is registered here as an
//! [`Entry`] under an id, and its executor future gets a done-callback that
//! only sends that id down a channel. The handler thread receives ids in
//! completion order, takes the entry and delivers it: runs the user's
//! callbacks (under `catch_unwind`, MP7) and then makes the `AsyncResult`
//! ready. So every callback of a pool runs on this one thread, one at a
//! time, and never on a worker or on the thread that submitted.
//!
//! `terminate()` sends a marker through the same channel: the handler fails
//! every entry still registered, after the ids already queued before it
//! (the tasks `terminate` cancelled) were delivered as cancelled.

use crate::sync::{Condvar, Mutex};
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::ThreadId;
use std::time::Instant;

use crate::Error;
use crate::sync::lock;

/// A registered job, delivered exactly once on the handler thread.
pub(crate) trait Entry: Send {
    /// Delivers the job: with `forced`, fail it with that error without
    /// waiting for its task; otherwise its task has ended.
    fn deliver(self: Box<Self>, forced: Option<Error>);
    /// Whether its task has ended, finished or cancelled (its `Ready`
    /// message may still be on its way).
    fn ended(&self) -> bool;
}

/// What the handler thread receives.
pub(crate) enum Msg {
    /// The task of entry `id` ended.
    Ready(u64),
    /// Fail every registered entry, then acknowledge.
    Terminate(Sender<()>),
}

#[derive(Default)]
pub(crate) struct Book {
    entries: HashMap<u64, Box<dyn Entry>>,
    /// Registered and not yet completely delivered.
    undelivered: usize,
    next_id: u64,
}

/// The registry shared by the pool and its handler thread.
pub(crate) struct Handler {
    book: Mutex<Book>,
    /// Signalled when `undelivered` drops to zero.
    idle: Condvar,
    pub(crate) thread: Mutex<Option<ThreadId>>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("undelivered", &lock(&self.book).undelivered)
            .finish()
    }
}

impl Handler {
    pub(crate) fn new() -> Self {
        Handler {
            book: Mutex::new(Book::default()),
            idle: Condvar::new(),
            thread: Mutex::new(None),
        }
    }

    /// Whether the caller is the handler thread (where waiting on a result
    /// of this pool would deadlock).
    pub(crate) fn on_handler_thread(&self) -> bool {
        *lock(&self.thread) == Some(std::thread::current().id())
    }

    /// Registers an entry. `arm` is called with the new id while the
    /// registry is locked, so the handler cannot see that id before the
    /// entry exists; it must only arrange for `Msg::Ready(id)` to be sent
    /// (it may send it at once) and build the entry.
    pub(crate) fn register(&self, arm: impl FnOnce(u64) -> Box<dyn Entry>) {
        let mut book = lock(&self.book);
        let id = book.next_id;
        book.next_id += 1;
        let entry = arm(id);
        book.entries.insert(id, entry);
        book.undelivered += 1;
    }

    /// Blocks until every registered entry has been delivered, or
    /// `deadline` passes (`None`: no limit); returns whether they were.
    pub(crate) fn wait_idle_until(&self, deadline: Option<Instant>) -> bool {
        let mut book = lock(&self.book);
        while book.undelivered > 0 {
            book = match crate::sync::wait_deadline(&self.idle, book, deadline) {
                Ok(book) => book,
                Err(book) => return book.undelivered == 0,
            };
        }
        true
    }

    fn delivered(&self, n: usize) {
        let mut book = lock(&self.book);
        book.undelivered -= n;
        if book.undelivered == 0 {
            self.idle.notify_all();
        }
    }

    fn deliver_one(&self, id: u64) {
        let entry = lock(&self.book).entries.remove(&id);
        if let Some(entry) = entry {
            run_entry(entry, None);
            self.delivered(1);
        }
    }

    /// Fails every registered entry with `error` (the terminate path),
    /// except one whose task has ended (finished, or cancelled by the
    /// terminate) before its `Ready` message was read, as when `terminate`
    /// is called from a callback on this very thread: that one is delivered
    /// with its own outcome, as it is when the message comes first, and
    /// its message then finds nothing. (A value already there was thrown
    /// away for an error that said the task was stopped before it
    /// finished; found by review.)
    pub(crate) fn fail_all(&self, error: &Error) {
        let mut entries: Vec<(u64, Box<dyn Entry>)> = lock(&self.book).entries.drain().collect();
        // Submission order, so a map's chunks and callbacks stay in order.
        entries.sort_by_key(|(id, _)| *id);
        let n = entries.len();
        for (_, entry) in entries {
            let forced = (!entry.ended()).then(|| error.clone());
            run_entry(entry, forced);
        }
        self.delivered(n);
    }
}

fn run_entry(entry: Box<dyn Entry>, forced: Option<Error>) {
    // Entries catch user panics themselves; this is the last line of
    // defence, so the handler thread never dies (MP7).
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| entry.deliver(forced))) {
        // Outside `log!`, which skips its arguments when logging is off.
        let message = crate::error::take_panic_message(payload);
        crate::error::report!(error, "delivering a pool result panicked: {message}");
    }
}

/// The error of every job still pending when the pool is terminated.
pub(crate) fn terminated_error() -> Error {
    Error::Broken {
        executor: "multiprocessing-style pool",
        reason: "terminate() (or dropping the pool) stopped it before this task finished".into(),
    }
}

/// The handler thread's loop; it ends when every sender is gone (the pool
/// and the done-callbacks of all its tasks).
pub(crate) fn run(handler: std::sync::Arc<Handler>, rx: Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Ready(id) => handler.deliver_one(id),
            Msg::Terminate(ack) => {
                handler.fail_all(&terminated_error());
                let _ = ack.send(());
            }
        }
    }
}
