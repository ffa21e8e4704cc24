//! One worker, seen from the parent: its start, handshake, reader and writer.
//!
//! Each worker has two threads in the parent. The **writer** writes to the
//! worker's pipe what `dispatch` could not write at once (see
//! [`super::outbox`]: a message is written straight from the dispatching
//! thread when the pipe is idle and takes it), so a large argument never
//! blocks the thread that submitted it nor the reader. The
//! **reader** owns the pipe from the worker: it does the handshake, then
//! reads results and completes futures; when the pipe ends (the worker
//! exited, crashed or was killed) it reaps the process and decides the fate
//! of the tasks the worker held: the running one fails with the exit status
//! or signal, the ones queued behind it go back to the pool's queue
//! (CONFORMANCE.md decision 3), and the supervisor starts a replacement.
//! Reading and writing on separate threads is what keeps 100 MB arguments
//! and results from deadlocking on full pipes.

use crate::sync::{Arc, Mutex};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use super::child::WorkerChild;
use super::entry::BuildId;
use super::freeze::{ReaderMark, ResultsPipe};
use super::os::describe_exit;
use super::outbox::Outbox;
use super::pool::Shared;
use super::protocol::{FromWorker, ToWorker, read_message, write_message};
use super::state::{Failures, Link};
use crate::Error;
use crate::sync::lock;

/// What ended a worker, as the reader saw it.
enum End {
    /// End of file: the worker exited (or was killed).
    Eof,
    /// The worker broke the protocol; it is killed.
    Protocol(Error),
}

/// Runs on the reader thread of a freshly started worker.
pub(crate) fn run(
    shared: Arc<Shared>,
    id: u64,
    child: Arc<Mutex<WorkerChild>>,
    to_worker: File,
    from_worker: File,
) {
    super::own_thread::enter(&shared, super::own_thread::Role::Reader);
    // It writes to the worker, which may die meanwhile (see
    // `super::sigpipe`).
    super::sigpipe::block_for_this_thread();
    let mark = Arc::new(ReaderMark::default());
    let results = ResultsPipe::new(from_worker, mark.clone());
    let mut input = BufReader::with_capacity(64 * 1024, results);
    let mut output = BufWriter::with_capacity(64 * 1024, to_worker);
    match handshake(&shared, id, &mut input, &mut output) {
        Ok(pid) => serve(shared, id, pid, child, mark, input, output),
        Err(e) => start_failed(&shared, id, &child, e),
    }
}

/// Ready → Welcome → Initialized. Returns the worker's pid.
fn handshake(
    shared: &Shared,
    id: u64,
    input: &mut BufReader<ResultsPipe>,
    output: &mut BufWriter<File>,
) -> Result<u32, Error> {
    let max = shared.config.limits.max_frame_bytes;
    let pid = match read_message::<_, FromWorker>(input, max)? {
        Some(FromWorker::Ready { pid, build }) => {
            BuildId::current().check_peer(&build)?;
            pid
        }
        Some(other) => return Err(Error::Protocol(format!("expected Ready, got {other:?}"))),
        None => {
            return Err(Error::Io(
                "the worker exited before its handshake (does main call \
                 concurrent_futures::init() first?)"
                    .into(),
            ));
        }
    };
    // Started: the initializer, if any, runs now, for as long as it takes
    // (P5; CPython has no limit on it either). A slow one (loading a model)
    // was killed at `startup_timeout`, and three such broke the pool (found
    // by review). `kill_workers` and shutdowns still reach it.
    if shared.config.initializer.is_some() {
        let mut st = lock(&shared.state);
        if let Some(s) = st.starting.iter_mut().find(|s| s.id == id) {
            s.initializing = true;
        }
    }
    let welcome = ToWorker::Welcome {
        build: BuildId::current(),
        max_frame_bytes: max as u64,
        initializer: shared.config.initializer,
    };
    super::sigpipe::held_off(|| {
        write_message(output, &welcome, max)?;
        output.flush().map_err(|e| Error::Io(e.to_string()))
    })?;
    match read_message::<_, FromWorker>(input, max)? {
        Some(FromWorker::Initialized { outcome: Ok(()) }) => Ok(pid),
        Some(FromWorker::Initialized { outcome: Err(e) }) => {
            let error = e.into_error(super::protocol::TaskTypes::of::<(), ()>());
            let reason = format!("a worker initializer failed ({error})");
            let mut failures = Failures::new();
            let mut st = lock(&shared.state);
            st.broken.get_or_insert(reason);
            let refusal = st.refusal().expect("broken");
            st.fail_queue(&refusal, &mut failures);
            st.dispatch(&shared.config.limits, &mut failures);
            drop(st);
            shared.finish(failures);
            Err(refusal)
        }
        None if shared.config.initializer.is_some() => Err(Error::Io(
            "the worker ended while it ran the pool's initializer".into(),
        )),
        None => Err(Error::Io("the worker ended during its handshake".into())),
        other => Err(Error::Protocol(format!(
            "expected Initialized, got {other:?}"
        ))),
    }
}

pub(crate) fn start_failed(shared: &Shared, id: u64, child: &Mutex<WorkerChild>, error: Error) {
    let status = reap(child);
    let mut st = lock(&shared.state);
    st.starting.retain(|s| s.id != id);
    st.live -= 1;
    st.finishing += 1;
    let mut failures = Failures::new();
    // A start that the pool stopped itself (kill_workers() and the like)
    // is no sign that workers cannot start. After shutdown a failed start
    // counts as before: queued work still wants workers then (S4), and
    // uncounted failures would respawn workers forever.
    if st.broken.is_none() && st.hard_stop.is_none() {
        st.start_failures += 1;
        if st.start_failures >= 3 {
            let reason = format!("worker processes fail to start: {error} ({status})");
            st.broken = Some(reason);
            let refusal = st.refusal().expect("broken");
            st.fail_queue(&refusal, &mut failures);
        }
    }
    crate::error::report!(
        error,
        "a process-pool worker failed to start: {error} ({status})"
    );
    st.dispatch(&shared.config.limits, &mut failures);
    drop(st);
    shared.finish_worker(failures);
}

/// Kills (if still running) and reaps a worker; describes how it ended.
fn reap(child: &Mutex<WorkerChild>) -> String {
    let mut c = lock(child);
    let _ = c.kill();
    match c.wait() {
        Ok(status) => describe_exit(status).0,
        Err(e) => format!("could not be reaped: {e}"),
    }
}

fn serve(
    shared: Arc<Shared>,
    id: u64,
    pid: u32,
    child: Arc<Mutex<WorkerChild>>,
    mark: Arc<ReaderMark>,
    mut input: BufReader<ResultsPipe>,
    output: BufWriter<File>,
) {
    let max = shared.config.limits.max_frame_bytes;
    let started = output
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| Outbox::new(file, max))
        .map_err(|e| Error::Io(format!("could not set up the pipe to a worker: {e}")))
        .and_then(|(outbox, writer)| {
            std::thread::Builder::new()
                .name(format!("cf-process-writer-{pid}"))
                .spawn(move || {
                    super::os::defer_wakeups_to_running_thread();
                    writer.run()
                })
                .map(|_| outbox)
                .map_err(|_| Error::Io("could not start a writer thread".into()))
        });
    let outbox = match started {
        Ok(outbox) => outbox,
        Err(e) => {
            start_failed(&shared, id, &child, e);
            return;
        }
    };
    {
        let mut failures = Failures::new();
        let mut st = lock(&shared.state);
        st.starting.retain(|s| s.id != id);
        st.start_failures = 0;
        st.links.push(Link {
            id,
            pid,
            outbox,
            in_flight: VecDeque::new(),
            head_since: Instant::now(),
            depth: shared.config.limits.prefetch,
            sent: 0,
            stopping: false,
            retiring: false,
            kill_reason: None,
            frozen: false,
            deferred_stop: None,
            stop_retry: None,
            spared: None,
            reader_mark: mark.clone(),
            results_fd: input.get_ref().as_raw_fd(),
            child: child.clone(),
        });
        st.dispatch(&shared.config.limits, &mut failures);
        drop(st);
        shared.cond.notify_all();
        shared.finish(failures);
    }
    let mut memory = MemoryCheck::new(shared.config.limits.max_memory_per_child);
    let end = loop {
        if input.buffer().is_empty() {
            await_results(&shared, id, &mark, &input);
        }
        match read_message::<_, FromWorker>(&mut input, max) {
            Ok(Some(FromWorker::Done { task_id, outcome })) => {
                // Lowered before the read if a stop may come (see
                // `await_results`).
                mark.set_current(false);
                // Everything read so far is handled once this result is.
                let drained = input.buffer().is_empty();
                // Read outside the lock: it is a file read.
                let over_memory = memory.over_limit(pid);
                let mut failures = Failures::new();
                let mut st = lock(&shared.state);
                // A worker has served: workers do start (see `worker_gone`).
                st.idle_deaths = 0;
                let limits = &shared.config.limits;
                let link = st.links.iter_mut().find(|l| l.id == id).expect("own link");
                if over_memory && !link.retiring {
                    link.retiring = true;
                    crate::error::report!(
                        info,
                        "process-pool worker {pid} passed max_memory_per_child; replacing it"
                    );
                }
                let head = link.in_flight.pop_front();
                let now = Instant::now();
                link.task_done(now.saturating_duration_since(link.head_since), limits);
                link.head_since = now;
                link.reader_mark.set_current(drained);
                match head {
                    Some(p) if p.task_id == task_id => {
                        link.defer_stop_if_cancelled();
                        // Settled before the user's code below runs, if the
                        // reader is current; otherwise once it is
                        // (`await_results`).
                        let stop = if drained {
                            link.take_deferred_stop()
                        } else {
                            None
                        };
                        st.dispatch(&shared.config.limits, &mut failures);
                        // The supervisor watches the deadlines of running
                        // (head) tasks and of idle workers: wake it when
                        // one starts.
                        let idle_timed = limits.idle_timeout.is_some()
                            && st
                                .links
                                .iter()
                                .any(|l| l.id == id && l.in_flight.is_empty());
                        let timed = idle_timed
                            || st.links.iter().any(|l| {
                                l.in_flight.front().is_some_and(|p| p.timeout.is_some())
                                    // A check on a stop left to a reader
                                    // (`defer_stop_if_cancelled`).
                                    || l.stop_retry.is_some()
                            });
                        drop(st);
                        super::freeze::settle(&shared, stop.into_iter().collect());
                        if timed {
                            shared.cond.notify_all();
                        }
                        if !failures.is_empty() {
                            shared.finish(failures);
                        }
                        // The user's code runs in here (`R`'s
                        // `Deserialize`, done-callbacks, wakers), each
                        // caught where it runs; this is the last line of
                        // defence for the one thread that notices when
                        // this worker ends (decision 7).
                        let completed =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                p.job.complete_encoded(outcome)
                            }));
                        if let Err(payload) = completed {
                            // Outside `log!`, which skips its arguments when
                            // logging is off: the payload must be dropped
                            // with care either way.
                            let message = crate::error::take_panic_message(payload);
                            crate::error::report!(
                                error,
                                "completing a process-pool task panicked: {message}"
                            );
                        }
                    }
                    other => {
                        if let Some(p) = other {
                            link.in_flight.push_front(p);
                        }
                        drop(st);
                        break End::Protocol(Error::Protocol(format!(
                            "worker {pid} answered task {task_id}, which it was not running"
                        )));
                    }
                }
            }
            Ok(Some(other)) => {
                break End::Protocol(Error::Protocol(format!(
                    "unexpected message from worker {pid}: {other:?}"
                )));
            }
            Ok(None) => break End::Eof,
            Err(e @ Error::Io(_)) => break End::Protocol(e),
            Err(e) => break End::Protocol(e),
        }
    };
    worker_gone(&shared, id, pid, &child, end);
}

/// Before the reader waits for the worker to write more, having handled
/// everything it read: it says so in its mark (which lets a stop be
/// settled at once, see [`super::freeze`]), and first settles a stop left
/// to it. In a pool that may stop tasks it then waits with `poll`, which
/// consumes nothing, and lowers the mark before it reads. Elsewhere it
/// reads at once, and lowers the mark when the read returns: a stop only
/// comes to such a pool with the first task that has a time limit, and a
/// verdict then could take a result the reader is just reading for one
/// not yet written (a window of the read's return, once per reader).
fn await_results(shared: &Shared, id: u64, mark: &ReaderMark, input: &BufReader<ResultsPipe>) {
    if mark.set_current(true) {
        let stop = {
            let mut st = lock(&shared.state);
            let link = st.links.iter_mut().find(|l| l.id == id).expect("own link");
            link.take_deferred_stop()
        };
        super::freeze::settle(shared, stop.into_iter().collect());
    }
    if shared
        .stops_possible
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        // An error here shows again in the read that follows.
        let _ = super::os::poll_readable(input.get_ref().as_fd(), None);
        mark.set_current(false);
    }
}

/// How often, at most, a reader reads its worker's memory (L5): a file
/// read per task would cost a stream of tiny tasks more than the tasks.
const MEMORY_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// When a reader last read its worker's memory, against which limit.
struct MemoryCheck {
    limit: Option<u64>,
    last: Option<Instant>,
}

impl MemoryCheck {
    fn new(limit: Option<u64>) -> Self {
        MemoryCheck { limit, last: None }
    }

    /// Whether worker `pid` is now over the limit, read if the last
    /// reading is older than [`MEMORY_CHECK_INTERVAL`].
    fn over_limit(&mut self, pid: u32) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < MEMORY_CHECK_INTERVAL)
        {
            return false;
        }
        self.last = Some(now);
        super::os::resident_bytes(pid).is_some_and(|rss| rss > limit)
    }
}

/// The worker's pipe ended: reap it, fail the task it was running, requeue
/// the rest, and ask for a replacement.
fn worker_gone(shared: &Shared, id: u64, pid: u32, child: &Mutex<WorkerChild>, end: End) {
    // A worker the pool told to exit (shutdown, retirement), or one that
    // ended holding no task, closes its pipes and then runs its exit
    // handlers (C `atexit`, stdio flushes, coverage files): it gets up to
    // `terminate_grace` to end on its own before the SIGKILL below (found by
    // review: a clean shutdown killed workers in the middle of `exit()`, and
    // a C library's last output was lost). Its status then also says how
    // it ended, not that it was killed (see `ended_by_itself`).
    let exiting = matches!(end, End::Eof) && {
        let st = lock(&shared.state);
        st.hard_stop.is_none()
            && st.links.iter().any(|l| {
                l.id == id
                    && l.kill_reason.is_none()
                    && (l.stopping || l.retiring || l.in_flight.is_empty())
            })
    };
    if exiting {
        // Not under the child's lock, which a kill may need meanwhile.
        let pidfd = lock(child).pidfd_for_waiting();
        if let Some(pidfd) = pidfd {
            let grace = crate::sync::deadline(Some(shared.config.terminate_grace));
            super::child::exited_by(&pidfd, grace);
        }
    }
    let (status, code, signal) = {
        let mut c = lock(child);
        let _ = c.kill();
        match c.wait() {
            Ok(s) => describe_exit(s),
            Err(e) => (format!("could not be reaped: {e}"), None, None),
        }
    };
    let mut failures = Failures::new();
    let mut st = lock(&shared.state);
    let index = st.links.iter().position(|l| l.id == id).expect("own link");
    let mut link = st.links.swap_remove(index);
    st.live -= 1;
    st.finishing += 1;
    if let Some(stop) = st.hard_stop {
        // The pool stopped its workers: every task this worker held fails;
        // none is re-sent. A head killed for its own reason (a time limit
        // passed after a `terminate_workers` it survived) fails with that
        // reason (found by review: it said `Broken`).
        let mut kill_reason = link.kill_reason.take();
        for p in link.in_flight.drain(..) {
            let error = match kill_reason.take() {
                Some((task_id, reason)) if task_id == p.task_id => reason,
                _ => stop.error(),
            };
            failures.push((p.job, error));
        }
    } else if let Some(head) = link.in_flight.pop_front() {
        // The head fails with why its worker ended. If the worker was
        // killed for a task that finished just in time (a timeout or a
        // `kill_on_cancel` racing its end), the head had most likely begun
        // when the kill landed: it fails like any task whose worker died
        // under it, rather than running a second time elsewhere (a task
        // runs at most once).
        let error = match (link.kill_reason.take(), end) {
            (Some((task_id, reason)), _) if task_id == head.task_id => reason,
            (_, End::Protocol(e)) => e,
            (_, End::Eof) => Error::WorkerDied {
                pid,
                status: status.clone(),
                code,
                signal,
            },
        };
        failures.push((head.job, error));
        // Tasks sent behind the running one never started: send them again,
        // unless the pool broke, which starts no worker for them; they fail
        // with the reason it broke, like the tasks queued when it did.
        if let Some(refusal) = st.broken.is_some().then(|| st.refusal()).flatten() {
            for p in link.in_flight.drain(..) {
                failures.push((p.job, refusal.clone()));
            }
        }
        for mut p in link.in_flight.drain(..).rev() {
            // Pending again, so a cancel (a shutdown's `cancel_futures`, a
            // dropped map) cancels it rather than failing it as if it had
            // run (found by review).
            if p.job.mark_pending_again() {
                p.started = false;
            }
            st.queue.push_front(p);
        }
        crate::error::report!(
            warn,
            "process-pool worker {pid} died ({status}); replacing it"
        );
    } else if link.sent == 0 && !link.stopping && !link.retiring && ended_by_itself(code, signal) {
        // It ended on its own after its handshake, before it was sent a
        // task (a thread its initializer left behind exited the process,
        // say). Replaced without a count, it would be replaced for ever, an
        // idle pool starting processes in a loop (found by review): three
        // in a row with no result in between break the pool, as three
        // failed starts do. One sent a task is not counted: its task fails
        // with it, and it may well be that task's doing (decision 3). Nor
        // is one killed from outside (an operator, the OOM killer): such a
        // worker is replaced, however often (found by review).
        st.idle_deaths += 1;
        crate::error::report!(
            warn,
            "process-pool worker {pid} ended before its first task ({status})"
        );
        if st.idle_deaths >= 3 && st.broken.is_none() {
            st.broken = Some(format!(
                "worker processes end on their own before their first task \
                 (three in a row; the last {status})"
            ));
            let refusal = st.refusal().expect("broken");
            st.fail_queue(&refusal, &mut failures);
        }
    }
    st.dispatch(&shared.config.limits, &mut failures);
    drop(st);
    shared.finish_worker(failures);
}

/// Whether a worker's end was its own doing: an exit, or a crash signal it
/// raised itself (an abort, a bad memory access, a bad instruction), not
/// a signal sent from outside (SIGKILL, SIGTERM, SIGHUP, SIGINT...).
fn ended_by_itself(code: Option<i32>, signal: Option<i32>) -> bool {
    code.is_some()
        || signal.is_some_and(|s| {
            [
                libc::SIGABRT,
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGSYS,
                libc::SIGTRAP,
            ]
            .contains(&s)
        })
}
