//! The parent's way of sending messages to one worker: write-through when
//! the pipe is idle, a writer thread when it is not.
//!
//! # Why
//!
//! The parent must never block on a worker's command pipe from a thread
//! that has other duties: the reader thread dispatches the next task when a
//! result comes in, and if it blocked writing a large argument to a full
//! pipe while the worker blocked writing a large result to the reader, both
//! would wait forever. So each worker has a writer thread in the parent that
//! may block on the pipe. But handing *every* message to that thread costs
//! a thread hop per task: the writer must be woken and scheduled, and on a
//! machine whose cores are all busy running workers the scheduler may delay
//! that wake-up by milliseconds (a worker's next task then starts that much
//! late), and in steady state every task costs an extra context switch.
//!
//! An [`Outbox`] therefore writes **through** when it can: if nothing is
//! queued and the writer is not in the middle of a write, [`Outbox::send`]
//! encodes the frame and writes it at once, from the calling thread, on a
//! pipe set to `O_NONBLOCK`. When the pipe takes it all (the usual case: a
//! pipe holds 64 KiB, a task message is a few dozen bytes), the message is
//! on its way with no thread hop. Only what the pipe would not take (the
//! rest of a partial write, or everything once it says `EAGAIN`) is queued
//! for the [`Writer`] thread, which may wait on the pipe with `poll`. Once
//! anything is queued, later messages queue behind it, so order is kept.
//! `send` never blocks on the pipe, only on the outbox's own short lock.
//!
//! Writing through is for a worker that would otherwise wait, and only
//! from the reader thread (which dispatches the next task when a result
//! comes in); the caller decides with `send`'s `write_through`:
//!
//! * A worker with a deep pipeline of tiny tasks is sent to through the
//!   writer thread: one write per task from the dispatching thread would
//!   cost far more than the hop, since each write wakes the worker for a
//!   single task, each result wakes the reader, and the batching that keeps
//!   tiny tasks cheap is gone (measured: no-op submits at a third of the
//!   rate). `dispatch` writes through only while the worker holds fewer than
//!   `prefetch` tasks.
//! * A submitting thread sends through the writer thread too. A pipe write
//!   is a *sync* wake-up: Linux places the woken worker on the writer's
//!   core, expecting the writer to sleep at once. The writer thread does; a
//!   submitter does not (it goes on submitting, or spins in `result()`), so
//!   a worker woken by it waits for that core (measured: a submit-then-wait
//!   round trip 18 → 26 µs). The reader thread goes back to reading right
//!   after it dispatches, like the writer thread.
//!
//! The writer thread never preempts the thread that woke it
//! ([`super::os::defer_wakeups_to_running_thread`], `SCHED_BATCH` on Linux):
//! it runs when that thread blocks, when its time slice ends, or at once
//! on an idle CPU. A thread submitting a burst of tasks used to lose its
//! CPU to the first writer it woke, and then to that writer's worker, for
//! a whole task; meanwhile the other workers got nothing and their CPUs
//! idled (measured: one worker of two started 0.6–1.8 ms late in about half
//! the runs of 64 × `fib(27)`, speedup 1.84 → 1.91; 20k no-op submits
//! 0.58–0.68M → 0.87–0.99M tasks/s). The reader threads stay ordinary:
//! deferred, a reader waits up to a scheduler tick (4 ms here) before it
//! hands its worker the next task, and the worker runs dry.
//!
//! The price is paid by a thread that submits and then keeps its CPU busy
//! instead of waiting: when the kernel queues the writer behind it (it
//! does so on a small machine whose cores look busy, even with a core
//! idle), the task starts when that thread's slice ends or the idle core
//! pulls the writer over, within a scheduler tick. Measured on 2 vCPUs at
//! `CONFIG_HZ=250`, one submit followed by 5 ms of computing, 200 times:
//! start delay p50 60–95 µs either way, p99 0.15 ms before and 1–3.3 ms
//! after (max 4 ms). Preempting is no better, only moved: the submitter
//! then loses its CPU, for up to a tick, to the writer and the worker it
//! wakes, while every other worker waits for the submits it has not made.
//!
//! Messages larger than [`DIRECT_MAX`] always go to the writer thread:
//! the pipe would take only its first 64 KiB anyway, and encoding (copying)
//! a 100 MB argument would otherwise happen under the pool's lock.
//!
//! # Closing
//!
//! The pipe closes, and the worker sees end of file, when the [`Outbox`] is
//! dropped (once whatever is queued has been written), after
//! [`ToWorker::Shutdown`] has been written, or when a write fails (the worker
//! is gone: `EPIPE`; its reader reports how it ended). After that, `send`
//! returns [`Closed`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;

use super::os::{poll_writable, set_nonblocking};
use super::protocol::{ToWorker, write_message};
use crate::Error;
use crate::sync::{Arc, Condvar, Mutex, MutexGuard, lock, wait};

/// Messages whose payload is larger than this always go through the writer
/// thread (see the module docs).
const DIRECT_MAX: usize = 64 * 1024;

/// The writer gathers what was queued into writes of about this size.
const BATCH: usize = 64 * 1024;

/// The worker's pipe is closed (the worker is gone, or was told to exit):
/// the message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The sending side, held by the pool's record of the worker. Dropping it
/// closes the pipe once everything queued is written.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

/// The writer thread's side; [`Writer::run`] returns when the pipe closes.
pub(crate) struct Writer {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Signalled when something is queued or the outbox is dropped.
    wake: Condvar,
    max_frame_bytes: usize,
}

enum Item {
    /// Encoded bytes (a frame, or what is left of one after a partial
    /// write).
    Bytes(Vec<u8>),
    /// A message the writer encodes itself (a large one).
    Message(ToWorker),
}

struct Inner {
    /// The parent's end of the command pipe, non-blocking. `None` while the
    /// writer thread has it (`busy`) and once closed.
    file: Option<File>,
    /// Waiting for the writer thread, in order.
    queue: VecDeque<Item>,
    /// The writer thread is writing (it holds `file`).
    busy: bool,
    /// The writer thread waits on `wake`.
    waiting: bool,
    /// `Shutdown` was sent: nothing more is accepted, and the pipe closes
    /// once it is written.
    shut: bool,
    /// The [`Outbox`] was dropped: close once the queue is written.
    dropped: bool,
    /// The pipe is closed (or broken); sends fail.
    closed: bool,
    /// Reused for encoding on the direct path.
    scratch: Vec<u8>,
}

impl Inner {
    fn close(&mut self) {
        self.file = None;
        self.closed = true;
        self.queue.clear();
    }
}

/// Writes to a non-blocking pipe as if it blocked: waits with `poll` when
/// the pipe is full. Only the writer thread uses it.
struct Blocking<'a>(&'a File);

impl Write for Blocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match (&*self.0).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => poll_writable(self.0.as_fd())?,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How many bytes of argument a message carries, roughly its size.
fn payload_len(msg: &ToWorker) -> usize {
    match msg {
        ToWorker::Run { arg, .. } => arg.len(),
        ToWorker::RunChunk { args, .. } => args
            .iter()
            .fold(0usize, |n, a| n.saturating_add(a.len()).saturating_add(8)),
        ToWorker::Welcome { .. } | ToWorker::Shutdown => 0,
    }
}

impl Outbox {
    /// Takes over `file`, the parent's end of a worker's command pipe, and
    /// makes it non-blocking. The [`Writer`] must be run on a thread of its
    /// own.
    pub(crate) fn new(file: File, max_frame_bytes: usize) -> io::Result<(Outbox, Writer)> {
        set_nonblocking(file.as_fd())?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                file: Some(file),
                queue: VecDeque::new(),
                busy: false,
                waiting: false,
                shut: false,
                dropped: false,
                closed: false,
                scratch: Vec::new(),
            }),
            wake: Condvar::new(),
            max_frame_bytes,
        });
        Ok((
            Outbox {
                shared: shared.clone(),
            },
            Writer { shared },
        ))
    }

    /// Sends `msg`, writing it from this thread if the pipe is idle and
    /// takes it, queueing it (or its rest) for the writer thread otherwise.
    /// Never blocks on the pipe. `Err(Closed)`: the pipe is closed or broke
    /// (the worker is gone or was told to exit); the message was not sent.
    ///
    /// A message that will not encode (larger than `max_frame_bytes`; sizes
    /// are checked when tasks are submitted, so this does not happen) ends
    /// the conversation as a failed write does: the pipe is closed and the
    /// worker's reader reports its end.
    ///
    /// With `write_through` false the message always goes through the
    /// writer thread: for a worker with tasks enough in hand, that lets the
    /// writer gather many messages into one write (see the module docs).
    pub(crate) fn send(&self, msg: ToWorker, write_through: bool) -> Result<(), Closed> {
        let sh = &*self.shared;
        let mut g = lock(&sh.inner);
        if g.closed || g.shut {
            return Err(Closed);
        }
        let last = matches!(msg, ToWorker::Shutdown);
        g.shut = last;
        if !write_through || g.busy || !g.queue.is_empty() || payload_len(&msg) > DIRECT_MAX {
            g.queue.push_back(Item::Message(msg));
            self.wake(g);
            return Ok(());
        }
        let mut frame = std::mem::take(&mut g.scratch);
        frame.clear();
        if let Err(e) = write_message(&mut frame, &msg, sh.max_frame_bytes) {
            crate::error::report!(debug, "a message for a worker would not encode: {e}");
            g.close();
            self.wake(g);
            return Ok(());
        }
        let file = g.file.as_ref().expect("open while sends are accepted");
        let mut written = 0;
        // A worker gone must not raise SIGPIPE (see `super::sigpipe`); on
        // the pool's own threads this costs nothing.
        let result = super::sigpipe::held_off(|| {
            loop {
                match (&*file).write(&frame[written..]) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        written += n;
                        if written == frame.len() {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        });
        match result {
            Ok(()) if written == frame.len() => {
                if last {
                    // The worker reads Shutdown, then end of file.
                    g.close();
                    self.wake(g);
                } else {
                    g.scratch = frame;
                }
                Ok(())
            }
            Ok(()) => {
                // The pipe is full: the writer thread finishes the frame.
                frame.drain(..written);
                g.queue.push_back(Item::Bytes(frame));
                self.wake(g);
                Ok(())
            }
            Err(e) => {
                // Sizes are checked at submit, so this is a closed pipe:
                // the worker is gone, and its reader reports how it ended.
                crate::error::report!(debug, "writing to a worker failed: {e}");
                g.close();
                self.wake(g);
                Err(Closed)
            }
        }
    }

    /// Wakes the writer thread if it waits; releases the lock first.
    fn wake(&self, g: MutexGuard<'_, Inner>) {
        let waiting = g.waiting;
        drop(g);
        if waiting {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut g = lock(&self.shared.inner);
        g.dropped = true;
        if !g.busy && g.queue.is_empty() {
            // Nothing left to write: close now rather than when the writer
            // thread gets to run.
            g.file = None;
            g.closed = true;
        }
        self.wake(g);
    }
}

impl Writer {
    /// Writes what [`Outbox::send`] queues until the pipe closes: the
    /// outbox is dropped, `Shutdown` is written, or a write fails.
    pub(crate) fn run(self) {
        super::sigpipe::block_for_this_thread();
        let sh = &*self.shared;
        let mut batch = VecDeque::new();
        let mut g = lock(&sh.inner);
        loop {
            while g.queue.is_empty() && g.file.is_some() && !g.dropped && !g.shut {
                g.waiting = true;
                g = wait(&sh.wake, g);
                g.waiting = false;
            }
            if g.queue.is_empty() {
                // Dropped, shut down (Shutdown written) or broken: close
                // the pipe, so the worker sees end of file.
                g.close();
                return;
            }
            // Take everything queued: under load, one write for many tasks.
            std::mem::swap(&mut g.queue, &mut batch);
            let file = g.file.take().expect("open while something is queued");
            g.busy = true;
            drop(g);
            let result = write_items(&file, &mut batch, sh.max_frame_bytes);
            batch.clear();
            g = lock(&sh.inner);
            g.busy = false;
            match result {
                Ok(()) => g.file = Some(file),
                Err(e) => {
                    // Sizes are checked at submit, so this is a closed
                    // pipe: the worker is gone, and its reader reports how
                    // it ended.
                    crate::error::report!(debug, "writing to a worker failed: {e}");
                    g.close();
                    return;
                }
            }
        }
    }
}

fn write_items(file: &File, items: &mut VecDeque<Item>, max: usize) -> Result<(), Error> {
    let mut out = BufWriter::with_capacity(BATCH, Blocking(file));
    for item in items.drain(..) {
        match item {
            Item::Bytes(b) => out.write_all(&b).map_err(|e| Error::Io(e.to_string()))?,
            Item::Message(m) => write_message(&mut out, &m, max)?,
        }
    }
    out.flush().map_err(|e| Error::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::protocol::read_message;
    use std::io::{BufReader, PipeReader, Read};
    use std::time::{Duration, Instant};

    const MAX: usize = 256 * 1024 * 1024;

    fn pipe() -> (PipeReader, Outbox, Writer) {
        let (r, w) = io::pipe().unwrap();
        let (outbox, writer) = Outbox::new(File::from(std::os::fd::OwnedFd::from(w)), MAX).unwrap();
        (r, outbox, writer)
    }

    fn run(task_id: u64, len: usize) -> ToWorker {
        ToWorker::Run {
            task_id,
            entry: 7,
            arg: vec![(task_id % 251) as u8; len],
        }
    }

    /// Reads messages until end of file.
    fn read_all(r: PipeReader) -> Vec<ToWorker> {
        let mut r = BufReader::new(r);
        let mut out = Vec::new();
        while let Some(m) = read_message::<_, ToWorker>(&mut r, MAX).unwrap() {
            out.push(m);
        }
        out
    }

    fn ids(msgs: &[ToWorker]) -> Vec<u64> {
        msgs.iter()
            .map(|m| match m {
                ToWorker::Run { task_id, .. } => *task_id,
                ToWorker::Shutdown => u64::MAX,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_small_message_is_written_directly() {
        let (r, outbox, writer) = pipe();
        // No writer thread runs: the message must arrive anyway.
        outbox.send(run(1, 100), true).unwrap();
        assert!(lock(&outbox.shared.inner).queue.is_empty());
        let mut r = BufReader::new(r);
        let got = read_message::<_, ToWorker>(&mut r, MAX).unwrap().unwrap();
        assert_eq!(got, run(1, 100));
        drop(outbox);
        // Dropped with nothing queued: closed at once, before the writer runs.
        assert!(read_message::<_, ToWorker>(&mut r, MAX).unwrap().is_none());
        writer.run(); // returns at once: closed
    }

    #[test]
    fn order_is_kept_when_direct_and_queued_sends_mix() {
        let (r, outbox, writer) = pipe();
        let reader = std::thread::spawn(move || read_all(r));
        let writer = std::thread::spawn(move || writer.run());
        let mut expected = Vec::new();
        for i in 0..300u64 {
            // Every 50th is large and goes through the writer thread; the
            // small ones behind it queue until it is written.
            let len = if i % 50 == 0 { 300 * 1024 } else { 40 };
            // Some are sent through the writer on purpose, too.
            outbox.send(run(i, len), i % 7 != 0).unwrap();
            expected.push(i);
            if i % 25 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        outbox.send(ToWorker::Shutdown, true).unwrap();
        expected.push(u64::MAX);
        assert_eq!(outbox.send(run(999, 1), true), Err(Closed));
        let got = reader.join().unwrap();
        assert_eq!(ids(&got), expected);
        assert_eq!(got[50], run(50, 300 * 1024));
        writer.join().unwrap();
    }

    #[test]
    fn a_full_pipe_never_blocks_send() {
        let (r, outbox, writer) = pipe();
        let writer = std::thread::spawn(move || writer.run());
        // 4 MiB, far more than a pipe holds, and nobody reads yet.
        let t = Instant::now();
        for i in 0..4096u64 {
            outbox.send(run(i, 1024), true).unwrap();
        }
        outbox.send(run(4096, 1 << 20), true).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "send blocked");
        {
            let g = lock(&outbox.shared.inner);
            assert!(!g.queue.is_empty() || g.busy);
        }
        drop(outbox);
        // Everything arrives, in order, then end of file.
        let got = read_all(r);
        assert_eq!(ids(&got), (0..=4096).collect::<Vec<_>>());
        assert_eq!(got[4096], run(4096, 1 << 20));
        writer.join().unwrap();
    }

    #[test]
    fn dropping_the_outbox_gives_the_reader_end_of_file() {
        let (r, outbox, writer) = pipe();
        let writer = std::thread::spawn(move || writer.run());
        outbox.send(run(1, 10), true).unwrap();
        outbox.send(run(2, 200 * 1024), true).unwrap(); // queued for the writer
        drop(outbox);
        let got = read_all(r);
        assert_eq!(ids(&got), [1, 2]);
        writer.join().unwrap();
    }

    #[test]
    fn shutdown_then_end_of_file() {
        let (mut r, outbox, writer) = pipe();
        outbox.send(ToWorker::Shutdown, true).unwrap();
        assert_eq!(outbox.send(run(1, 1), true), Err(Closed));
        let mut bytes = Vec::new();
        // Written directly and the pipe closed, with no writer running.
        r.read_to_end(&mut bytes).unwrap();
        let got = read_message::<_, ToWorker>(&mut &bytes[..], MAX).unwrap();
        assert_eq!(got, Some(ToWorker::Shutdown));
        writer.run();
    }

    #[test]
    fn a_closed_reader_makes_sends_fail() {
        let (r, outbox, writer) = pipe();
        drop(r);
        // The direct path sees EPIPE.
        assert_eq!(outbox.send(run(1, 10), true), Err(Closed));
        assert_eq!(outbox.send(run(2, 10), true), Err(Closed));
        writer.run(); // returns at once

        // The writer thread sees it.
        let (r, outbox, writer) = pipe();
        let writer = std::thread::spawn(move || writer.run());
        outbox.send(run(1, 1 << 20), true).unwrap(); // queued, pipe fills
        std::thread::sleep(Duration::from_millis(20));
        drop(r);
        writer.join().unwrap();
        assert_eq!(outbox.send(run(2, 10), true), Err(Closed));
    }
}
