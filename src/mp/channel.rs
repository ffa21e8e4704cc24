//! Typed channels between a parent and its [`Process`](crate::Process)
//! children: [`pipe`] ([`Sender`] / [`Receiver`]) and [`Queue`].

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::lock;
use crate::Error;
use crate::process::{codec, os};

/// Bytes of a chunk written with one `write` call: `PIPE_BUF`, the size up
/// to which POSIX makes a pipe write atomic.
const CHUNK_BYTES: usize = libc::PIPE_BUF;
/// Chunk header: length of the rest (`u32`), writer pid (`u32`), writer
/// number (`u32`), flags (`u8`). All little-endian.
const HEADER_BYTES: usize = 13;
/// Payload bytes per chunk.
const CHUNK_PAYLOAD: usize = CHUNK_BYTES - HEADER_BYTES;
/// The chunk starts a value.
const FIRST: u8 = 1;
/// The chunk ends a value.
const LAST: u8 = 2;
/// Largest value a receiver reassembles (as the pool's default frame
/// limit).
const MAX_VALUE_BYTES: usize = 1 << 30;

/// How long a receive waits on an empty pipe, while some value is
/// unfinished, before it looks whether that value's writer is gone.
const GONE_WRITER_CHECK: Duration = Duration::from_millis(100);

/// The error of a receive on a channel whose every sender was dropped
/// (Python's `EOFError`).
fn end_of_stream() -> Error {
    Error::EndOfStream
}

/// A one-way typed channel over an OS pipe (Python's `Pipe(duplex=False)`,
/// whose two ends come in the other order: `(reader, writer)`).
///
/// Either end may be passed to [`Process`](crate::Process) children in
/// their argument; several processes may send on one pipe. Once every
/// sender is dropped — the parent's included, and each child's, which
/// happens when it exits — [`Receiver::recv`] fails with end of stream.
///
/// ```
/// let (tx, rx) = concurrent_futures::pipe::<String>()?;
/// tx.send("hello".to_string())?;
/// drop(tx);
/// assert_eq!(rx.recv(None)?, "hello");
/// assert!(rx.recv(None).is_err()); // end of stream
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub fn pipe<T>() -> Result<(Sender<T>, Receiver<T>), Error> {
    let (r, w) = io::pipe().map_err(|e| Error::Io(format!("could not create a pipe: {e}")))?;
    Ok((
        Sender::from_fd(OwnedFd::from(w)),
        Receiver::from_fd(OwnedFd::from(r)),
    ))
}

/// The sending end of a [`pipe`] (Python's `Connection.send`).
///
/// Clones share one descriptor. A value is written as chunks of at most
/// `PIPE_BUF` bytes, each one atomic `write`, so senders in several
/// processes never tear each other's values. `send` blocks while the pipe
/// is full (64 KiB unread on Linux) until the receiver reads.
///
/// Serializable only inside a [`Process`](crate::Process) argument.
pub struct Sender<T> {
    inner: Arc<SenderInner>,
    _type: PhantomData<fn(T)>,
}

struct SenderInner {
    /// Written through `&File`, under `writing`; outside that lock only
    /// duplicated (to pass this end to a child), which must not wait for
    /// a send blocked on a full pipe.
    pipe: File,
    /// Held across all the chunks of one value.
    writing: Mutex<()>,
    /// Tells this sender's chunks from those of other senders of this
    /// process on the same pipe.
    writer: u32,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            inner: self.inner.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("writer", &self.inner.writer)
            .finish_non_exhaustive()
    }
}

impl<T> Sender<T> {
    fn from_fd(fd: OwnedFd) -> Self {
        static WRITERS: AtomicU32 = AtomicU32::new(0);
        Sender {
            inner: Arc::new(SenderInner {
                pipe: File::from(fd),
                writing: Mutex::new(()),
                writer: WRITERS.fetch_add(1, Ordering::Relaxed),
            }),
            _type: PhantomData,
        }
    }
}

impl<T: Serialize> Sender<T> {
    /// Sends `value`. Fails with [`Error::Encode`] if it does not
    /// serialize (its `Serialize` returns an error or panics) or is larger
    /// than a receiver takes (1 GiB encoded; nothing is sent), and with
    /// [`Error::Io`] if every receiver is gone (Python's `BrokenPipeError`).
    pub fn send(&self, value: T) -> Result<(), Error> {
        self.inner.send_encoded(&codec::encode_caught(&value)?)
    }
}

/// Refuses an encoded value larger than a receiver takes.
fn check_value_size(payload: &[u8]) -> Result<(), Error> {
    if payload.len() > MAX_VALUE_BYTES {
        return Err(Error::Encode {
            type_name: "a value sent on a pipe or queue",
            message: format!(
                "the encoded value is {} bytes, more than a receiver takes ({MAX_VALUE_BYTES})",
                payload.len()
            ),
        });
    }
    Ok(())
}

impl SenderInner {
    /// Writes one encoded value as tagged chunks (see the module docs).
    /// A value no receiver would take is refused before anything is
    /// written: sent, it would cost the receiver an error per chunk.
    fn send_encoded(&self, payload: &[u8]) -> Result<(), Error> {
        check_value_size(payload)?;
        let pid = std::process::id();
        let _writing = lock(&self.writing);
        let mut pipe = &self.pipe;
        let mut chunks = payload.chunks(CHUNK_PAYLOAD).peekable();
        let mut flags = FIRST;
        let mut buf = Vec::with_capacity(CHUNK_BYTES);
        loop {
            let piece = chunks.next().unwrap_or(&[]);
            if chunks.peek().is_none() {
                flags |= LAST;
            }
            buf.clear();
            let rest = (HEADER_BYTES - 4 + piece.len()) as u32;
            buf.extend_from_slice(&rest.to_le_bytes());
            buf.extend_from_slice(&pid.to_le_bytes());
            buf.extend_from_slice(&self.writer.to_le_bytes());
            buf.push(flags);
            buf.extend_from_slice(piece);
            write_atomic(&mut pipe, &buf)?;
            if flags & LAST != 0 {
                return Ok(());
            }
            flags = 0;
        }
    }
}

/// Writes `buf` (at most `PIPE_BUF` bytes) with one `write` call.
fn write_atomic(pipe: &mut &File, buf: &[u8]) -> Result<(), Error> {
    loop {
        // Every receiver gone must not raise SIGPIPE on the sender's thread.
        match crate::process::sigpipe::held_off(|| pipe.write(buf)) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => {
                return Err(Error::Io(format!(
                    "short pipe write ({n} of {} bytes)",
                    buf.len()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Err(Error::Io(
                    "broken pipe: every receiver of this channel was dropped".into(),
                ));
            }
            Err(e) => return Err(Error::Io(format!("pipe write failed: {e}"))),
        }
    }
}

/// The receiving end of a [`pipe`] (Python's `Connection.recv`).
///
/// Use one receiver per pipe: two processes reading one pipe split its
/// chunks between them (Python's `Connection` has the same rule).
///
/// Serializable only inside a [`Process`](crate::Process) argument.
pub struct Receiver<T> {
    /// Read through `&File` by the thread whose turn it is; outside a
    /// turn only duplicated (to pass this end to a child).
    pipe: File,
    /// Whether a thread is reading: one at a time, since the chunks of a
    /// value must all reach the one reassembling it. A thread waits for
    /// its turn on `turn` within its own timeout.
    reading: Mutex<bool>,
    turn: Condvar,
    /// Locked only by the thread whose turn it is.
    inner: Mutex<ReceiverState>,
    _type: PhantomData<fn() -> T>,
}

struct ReceiverState {
    /// Values being reassembled, by (writer pid, writer number).
    partial: HashMap<(u32, u32), Vec<u8>>,
    ended: bool,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    fn from_fd(fd: OwnedFd) -> Self {
        Receiver {
            pipe: File::from(fd),
            reading: Mutex::new(false),
            turn: Condvar::new(),
            inner: Mutex::new(ReceiverState {
                partial: HashMap::new(),
                ended: false,
            }),
            _type: PhantomData,
        }
    }

    /// Waits, until `deadline`, for this thread's turn to read; the turn
    /// passes on when the returned guard drops.
    fn take_turn(&self, deadline: Option<Instant>) -> Option<Turn<'_>> {
        let mut reading = lock(&self.reading);
        while *reading {
            reading = match deadline {
                None => self.turn.wait(reading).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.turn
                        .wait_timeout(reading, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        *reading = true;
        Some(Turn(&self.reading, &self.turn))
    }
}

/// A thread's turn to read a [`Receiver`]; passed on when dropped.
struct Turn<'a>(&'a Mutex<bool>, &'a Condvar);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *lock(self.0) = false;
        self.1.notify_one();
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    /// Receives the next value, waiting at most `timeout` (`None`: no
    /// limit).
    ///
    /// Fails with [`Error::Timeout`] when the time is up (call again;
    /// nothing is lost), with [`Error::EndOfStream`] once
    /// every sender is dropped and the pipe is drained (Python's
    /// `EOFError`; it stays that way), with [`Error::Decode`] for a value
    /// that does not decode as `T` (the next one is still readable).
    pub fn recv(&self, timeout: Option<Duration>) -> Result<T, Error> {
        let deadline = crate::sync::deadline(timeout);
        let timed_out = || Error::Timeout {
            waited: timeout.unwrap_or_default(),
        };
        // Another thread's `recv(None)` may hold the turn indefinitely;
        // this one waits for it only within its own timeout.
        let _turn = self.take_turn(deadline).ok_or_else(timed_out)?;
        let mut st = lock(&self.inner);
        loop {
            if st.ended {
                return Err(end_of_stream());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // While some value is unfinished, wait in slices, so that one
            // whose writer is gone is forgotten by a receive without a
            // timeout too (`Queue::get(None)`); otherwise block as asked.
            let wait = match (st.partial.is_empty(), left) {
                (true, left) => left,
                (false, None) => Some(GONE_WRITER_CHECK),
                (false, Some(left)) => Some(left.min(GONE_WRITER_CHECK)),
            };
            let ready = os::poll_readable(self.pipe.as_fd(), wait)
                .map_err(|e| Error::Io(format!("pipe poll failed: {e}")))?;
            if !ready {
                st.forget_values_of_gone_writers(&self.pipe);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(timed_out());
                }
                continue;
            }
            if let Some(value) = st.read_chunk(&self.pipe)? {
                return codec::decode_caught(&value);
            }
        }
    }
}

impl ReceiverState {
    /// Drops the values that writers whose process is gone left unfinished
    /// (killed mid-send): they can never complete, and a queue, which has
    /// no end of stream, would otherwise keep each for its whole life (up
    /// to a 1 GiB value apiece; found by review). Called when a wait found
    /// the pipe empty for a while ([`GONE_WRITER_CHECK`] at most). A writer
    /// found gone, and the pipe then found still empty, has nothing left in
    /// it: everything it wrote came before it was gone, and has been read.
    fn forget_values_of_gone_writers(&mut self, pipe: &File) {
        let me = std::process::id();
        let gone: Vec<(u32, u32)> = self
            .partial
            .keys()
            .filter(|(pid, _)| *pid != me && os::process_gone(*pid))
            .copied()
            .collect();
        if gone.is_empty() {
            return;
        }
        if matches!(
            os::poll_readable(pipe.as_fd(), Some(Duration::ZERO)),
            Ok(false)
        ) {
            for key in gone {
                self.partial.remove(&key);
            }
        }
    }

    /// Reads one chunk (present whole once any of it is, as it was written
    /// atomically). Returns a value when the chunk completes one.
    fn read_chunk(&mut self, mut pipe: &File) -> Result<Option<Vec<u8>>, Error> {
        let mut len = [0u8; 4];
        match read_full(&mut pipe, &mut len)? {
            0 => {
                // Every writer is gone; a value some writer left unfinished
                // (it died mid-send) will never complete.
                self.ended = true;
                self.partial.clear();
                return Err(end_of_stream());
            }
            4 => {}
            n => return Err(truncated(n, 4)),
        }
        let rest = u32::from_le_bytes(len) as usize;
        if !(HEADER_BYTES - 4..=CHUNK_BYTES - 4).contains(&rest) {
            return Err(Error::Protocol(format!(
                "a pipe chunk announces {rest} bytes; the stream is corrupt \
                 (was the pipe written to by something other than a Sender?)"
            )));
        }
        let mut chunk = vec![0u8; rest];
        let n = read_full(&mut pipe, &mut chunk)?;
        if n != rest {
            return Err(truncated(n, rest));
        }
        let word = |i: usize| u32::from_le_bytes(chunk[i..i + 4].try_into().expect("4 bytes"));
        let key = (word(0), word(4));
        let flags = chunk[8];
        let piece = &chunk[9..];
        let value = if flags & FIRST != 0 {
            self.partial.entry(key).or_default().clear();
            self.partial.get_mut(&key).expect("just inserted")
        } else {
            match self.partial.get_mut(&key) {
                Some(v) => v,
                None => {
                    return Err(Error::Protocol(
                        "a pipe chunk continues a value whose start was not seen \
                         (two receivers on one pipe?)"
                            .into(),
                    ));
                }
            }
        };
        if value.len() + piece.len() > MAX_VALUE_BYTES {
            self.partial.remove(&key);
            return Err(Error::Protocol(format!(
                "a value on the pipe exceeds {MAX_VALUE_BYTES} bytes"
            )));
        }
        value.extend_from_slice(piece);
        if flags & LAST != 0 {
            Ok(self.partial.remove(&key))
        } else {
            Ok(None)
        }
    }
}

fn truncated(got: usize, expected: usize) -> Error {
    Error::Protocol(format!(
        "the pipe ended inside a chunk ({got} of {expected} bytes)"
    ))
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn read_full(pipe: &mut &File, buf: &mut [u8]) -> Result<usize, Error> {
    let mut got = 0;
    while got < buf.len() {
        match pipe.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(format!("pipe read failed: {e}"))),
        }
    }
    Ok(got)
}

/// Python's `multiprocessing.Queue`, for many producers and one consumer:
/// any number of [`Process`](crate::Process) children (and the parent)
/// [`put`](Queue::put); the process that made the queue
/// [`get`](Queue::get)s.
///
/// Pass [`producer`](Queue::producer) handles to children (a queue always
/// arrives in a child as a producer only: its `get` fails there).
///
/// In the consumer process, `put` hands the value to a feeder thread (as
/// Python's does) and returns at once, so the consumer never blocks on a
/// pipe that only it can drain. A producer handle in a child writes to the
/// pipe directly and blocks while it is full (64 KiB unread on Linux)
/// until the consumer reads: join producers only after draining what they
/// put, as CPython's "joining processes that use queues" warns.
/// A queue has no end of stream: the consumer holds a sender too (use
/// [`pipe`] for that).
///
/// ```
/// let q = concurrent_futures::Queue::<u32>::new()?;
/// q.put(1)?;
/// q.put(2)?;
/// assert_eq!(q.get(None)?, 1);
/// assert_eq!(q.get(None)?, 2);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub struct Queue<T> {
    tx: Sender<T>,
    rx: Option<Receiver<T>>,
    /// The consumer's feeder thread, started by its first `put`.
    feeder: OnceLock<mpsc::Sender<Vec<u8>>>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("consumer", &self.rx.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Queue<T> {
    /// A new, empty queue.
    pub fn new() -> Result<Self, Error> {
        let (tx, rx) = pipe()?;
        Ok(Queue {
            tx,
            rx: Some(rx),
            feeder: OnceLock::new(),
        })
    }

    /// A sender that puts into this queue.
    pub fn sender(&self) -> Sender<T> {
        self.tx.clone()
    }

    /// A producer-only handle of this queue (its `get` fails): the form to
    /// pass to a child, `Process::new(f, q.producer())`, where Python
    /// passes `q` itself.
    ///
    /// In the process that made the queue, put through the queue itself:
    /// its puts go through a feeder thread and never block on the pipe,
    /// while a producer handle (or a [`sender`](Self::sender)) used there
    /// writes the pipe directly, so it blocks once the pipe is full (a
    /// thread that also consumes would wait for itself), and its values are
    /// not ordered with the queue's own puts.
    pub fn producer(&self) -> Queue<T> {
        Queue {
            tx: self.tx.clone(),
            rx: None,
            feeder: OnceLock::new(),
        }
    }
}

impl<T: Serialize> Queue<T> {
    /// Puts `value` (Python's `put`; see the type docs for when it
    /// blocks). Fails with [`Error::Encode`] if it does not serialize (its
    /// `Serialize` returns an error or panics) or is larger than a
    /// receiver takes (1 GiB encoded); nothing is put then.
    pub fn put(&self, value: T) -> Result<(), Error> {
        if self.rx.is_none() {
            return self.tx.send(value);
        }
        // Checked here, where the caller gets the error: the feeder thread
        // can only log it.
        let payload = codec::encode_caught(&value)?;
        check_value_size(&payload)?;
        let feeder = self.feeder.get_or_init(|| {
            let (feed, items) = mpsc::channel::<Vec<u8>>();
            let inner = self.tx.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("cf-queue-feeder".into())
                .spawn(move || {
                    // Ends when the queue is dropped, after writing what
                    // was put. The consumer holds the read end, so the pipe
                    // cannot break while it runs.
                    for payload in items {
                        if let Err(e) = inner.send_encoded(&payload) {
                            crate::error::report!(error, "queue feeder: {e}");
                        }
                    }
                });
            if let Err(e) = spawned {
                crate::error::report!(error, "could not start a queue feeder: {e}");
            }
            feed
        });
        feeder
            .send(payload)
            .map_err(|_| Error::Io("the queue's feeder thread is gone".into()))
    }
}

impl<T: DeserializeOwned> Queue<T> {
    /// Takes the next value, waiting at most `timeout` (`None`: no limit);
    /// [`Error::Timeout`] when the time is up (Python's `queue.Empty`).
    /// Values from one producer (a handle and the thread that puts through
    /// it) come in the order it put them. Only in the
    /// process that made the queue: elsewhere [`Error::InvalidCall`].
    pub fn get(&self, timeout: Option<Duration>) -> Result<T, Error> {
        match &self.rx {
            Some(rx) => rx.recv(timeout),
            None => Err(Error::InvalidCall(
                "Queue::get works only in the process that created the queue; \
                 a queue passed to a child is a producer"
                    .into(),
            )),
        }
    }
}

#[path = "passing.rs"]
mod passing;
pub(crate) use passing::{encode_passing, receive_passed};

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
