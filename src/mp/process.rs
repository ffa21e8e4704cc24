//! [`Process`]: one function in one fresh child process.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use once_cell::sync::OnceCell;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::channel;
use super::lock;
use crate::Error;
use crate::process::child::WorkerChild;
use crate::process::entry::{self, BuildId};
use crate::process::os::{self, Spawned};
use crate::process::protocol::{
    RemoteError, TaskTypes, encode_message, read_message, write_message,
};
use crate::process::worker;

/// Largest frame either side sends (as the pool's default).
const MAX_FRAME: usize = 1 << 30;

/// The arguments that make a libtest binary run only the hidden test of
/// [`process_pool_test_worker!`](crate::process_pool_test_worker) (as the
/// pool's `test_harness()`).
const TEST_HARNESS_ARGS: &[&str] = &[
    "__concurrent_futures_worker",
    "--nocapture",
    "--test-threads=1",
    "--quiet",
];

/// Parent to child: the one message a `Process` child reads.
#[derive(Debug, Serialize, Deserialize)]
struct Start {
    /// The parent's build; the child refuses to resolve `entry` otherwise.
    build: BuildId,
    /// The function's trampoline, from [`entry::entry_of`].
    entry: u64,
    /// The encoded argument.
    arg: Vec<u8>,
    /// How many channel ends the parent mapped onto descriptors 6.. .
    passed: u32,
}

/// Child to parent: the one message a `Process` child writes.
#[derive(Debug, Serialize, Deserialize)]
struct Done {
    /// The encoded return value, or why there is none.
    outcome: Result<Vec<u8>, RemoteError>,
}

/// The child side, called from `init()` in a process started with the
/// `:proc` / `:daemon` marker: reads [`Start`], runs the function, writes
/// [`Done`]. Returns the exit code: 0, or 1 if the function panicked (or its
/// argument or result would not cross), as Python's exit code 1 for an
/// uncaught exception.
pub(crate) fn serve_child(cmd: File, res: File) -> Result<i32, String> {
    let mut input = BufReader::new(cmd);
    let start: Option<Start> = read_message(&mut input, MAX_FRAME).map_err(|e| e.to_string())?;
    drop(input);
    let Some(start) = start else {
        // The parent went away before sending the function.
        return Ok(0);
    };
    BuildId::current()
        .check_peer(&start.build)
        .map_err(|e| e.to_string())?;
    channel::receive_passed(start.passed)?;
    // SAFETY: the parent's build was just checked equal to ours, and
    // `entry` came from `entry_of` there (`Process::new`).
    let trampoline = unsafe { entry::resolve(start.entry) };
    let outcome = trampoline(&start.arg);
    drop(start.arg);
    let outcome = match outcome {
        Ok(bytes) if bytes.len() + 64 > MAX_FRAME => Err(RemoteError::Encode {
            type_name: "process result".into(),
            message: format!(
                "the encoded result is {} bytes, more than the frame limit ({MAX_FRAME})",
                bytes.len()
            ),
        }),
        other => other,
    };
    // After the size check: a result that would not cross is exit code 1.
    let code = i32::from(outcome.is_err());
    let mut output = BufWriter::new(res);
    // A parent that went away cannot be told; the exit code stands.
    let _ = write_message(&mut output, &Done { outcome }, MAX_FRAME);
    let _ = output.flush();
    Ok(code)
}

/// Python's `multiprocessing.Process`: runs `f(arg)` in a fresh child
/// process and keeps its exit code and return value.
///
/// `f` is a portable task, as for [`ExecutorExt::submit`](crate::ExecutorExt::submit)
/// on a process pool: a `fn` item (or a closure capturing nothing) whose
/// argument and result are serde values. The child is this same program
/// started again; **call [`init`](crate::init) first in `main`** (in
/// `cargo test`, use [`test_harness`](Process::test_harness) and
/// [`process_pool_test_worker!`](crate::process_pool_test_worker)).
///
/// The argument may carry channel ends ([`Sender`](crate::Sender),
/// [`Receiver`](crate::Receiver), [`Queue`](crate::Queue)): they are
/// recorded when `new` serializes it, and handed to the child at `start`.
///
/// Dropping the handle of a started process: a **daemon** child is killed
/// (SIGKILL) and reaped; a **non-daemon** child is joined — the drop
/// blocks until it exits, as Python joins non-daemon children at exit.
/// Daemon children also die with the parent process (`PR_SET_PDEATHSIG` on
/// Linux, even when the parent is killed); non-daemon ones outlive a parent
/// that dies without dropping them, as in Python.
///
/// ```no_run
/// use concurrent_futures::Process;
///
/// fn greet(name: String) -> usize {
///     println!("hello {name} from {}", std::process::id());
///     name.len()
/// }
///
/// fn main() -> Result<(), concurrent_futures::Error> {
///     concurrent_futures::init();
///     let mut p = Process::new(greet, "bob".to_string()).named("greeter");
///     p.start()?;
///     p.join(None);
///     assert_eq!(p.exitcode(), Some(0));
///     assert_eq!(p.result(), Some(Ok(3)));
///     Ok(())
/// }
/// ```
pub struct Process<R> {
    name: String,
    daemon: bool,
    test_harness: bool,
    entry: u64,
    types: TaskTypes,
    /// The encoded argument until `start` takes it (an encode failure is
    /// reported by `start`).
    arg: Option<Result<Vec<u8>, Error>>,
    /// Duplicates of the channel ends the argument carries.
    passed: Vec<OwnedFd>,
    started: Option<Started>,
    _result: PhantomData<fn() -> R>,
}

/// A started child: its pid and what its watcher thread records.
struct Started {
    pid: u32,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Run>,
    cond: Condvar,
}

struct Run {
    child: WorkerChild,
    /// Set, under this lock, when the child is reaped: from then on its
    /// pid may belong to another process and is never signalled.
    status: Option<ExitStatus>,
    /// What the child sent (nothing if it died first).
    outcome: Option<Result<Vec<u8>, RemoteError>>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("pid", &self.pid())
            .field("exitcode", &self.exitcode())
            .finish_non_exhaustive()
    }
}

impl<R> Process<R>
where
    R: Serialize + DeserializeOwned,
{
    /// A process that will run `f(arg)` (Python's `Process(target=f,
    /// args=(arg,))`). Nothing starts until [`start`](Process::start). The
    /// argument is serialized now, which is when the channel ends it
    /// carries are recorded.
    pub fn new<F, A>(f: F, arg: A) -> Self
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned,
    {
        let _ = f;
        static COUNTER: AtomicUsize = AtomicUsize::new(1);
        let (arg, passed) = channel::encode_passing(&arg);
        Process {
            name: format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed)),
            daemon: false,
            test_harness: false,
            entry: entry::entry_of::<F, A, R>(),
            types: TaskTypes::of::<A, R>(),
            arg: Some(arg),
            passed,
            started: None,
            _result: PhantomData,
        }
    }
}

impl<R> Process<R> {
    /// Sets the process name (default `Process-<n>`, as Python's); only
    /// the parent knows it. Read it with [`name`](Process::name).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Makes the child a daemon (default false): killed when this handle
    /// is dropped, and when the parent process dies.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// For processes started inside `cargo test`: the child runs the
    /// hidden test that [`process_pool_test_worker!`](crate::process_pool_test_worker)
    /// adds, and the parent needs no `init()` call (as
    /// [`ProcessPoolBuilder::test_harness`](crate::ProcessPoolBuilder::test_harness)).
    pub fn test_harness(mut self) -> Self {
        self.test_harness = true;
        self
    }

    /// Starts the child and hands it the function and argument (blocking
    /// while a large argument fills the pipe, until the child reads it).
    /// A second call is an error
    /// ([`Error::InvalidCall`]; Python raises `AssertionError`), as is
    /// an argument that did not serialize or is larger than a frame (1 GiB;
    /// [`Error::Encode`]) or a child
    /// that could not be started ([`Error::Io`]).
    pub fn start(&mut self) -> Result<(), Error> {
        let Some(arg) = self.arg.take() else {
            return Err(Error::InvalidCall(
                "a process can only be started once".into(),
            ));
        };
        // Taken first, so that every failure below closes the copies of
        // the channel ends the argument carries: this process can never
        // start again, and a copy kept would hide the end of stream from
        // the other side for as long as it lives (found by review).
        let passed = std::mem::take(&mut self.passed);
        let arg = arg?;
        // Refused here, before a child exists: sent, it would be dropped,
        // and the child would exit 0 without running the function.
        crate::process::check_frame_size(&arg, MAX_FRAME, self.types.arg)?;
        worker::check_can_start_children("starting a Process", self.test_harness)?;
        let program = crate::process::os::own_executable()?;
        let mut cmd = Command::new(program);
        if self.test_harness {
            cmd.args(TEST_HARNESS_ARGS.iter().map(OsString::from));
        }
        cmd.env(
            worker::WORKER_ENV,
            format!(
                "v1:{}:{}{}",
                std::process::id(),
                if self.daemon { "daemon" } else { "proc" },
                if self.test_harness { ":fd" } else { "" }
            ),
        );
        let start = Start {
            build: BuildId::current(),
            entry: self.entry,
            arg,
            passed: u32::try_from(passed.len())
                .map_err(|_| Error::InvalidConfig("too many channel ends".into()))?,
        };
        // The message itself must fit a frame, not only the argument with
        // a margin for what wraps it: a message not sent would leave the
        // child to exit 0 without running the function.
        let message = encode_message(&start, MAX_FRAME).map_err(|e| match e {
            Error::Protocol(message) => Error::Encode {
                type_name: self.types.arg,
                message,
            },
            other => other,
        })?;
        drop(start);
        let spawned = spawn(cmd, self.test_harness, passed)
            .map_err(|e| Error::Io(format!("could not start the process: {e}")))?;
        let pid = spawned.child.id();
        // Hand the function over before returning, as Python's `start()`
        // does: a parent that exits right after still leaves a non-daemon
        // child that runs it. A child that died before reading gives a
        // broken pipe here; its exit status tells what happened.
        // A child gone must not raise SIGPIPE (see `sigpipe`). The frame
        // is written whole, at once: a buffered writer's leftover, written
        // again when dropped, raised it outside the hold (found by review).
        let mut frame = Vec::with_capacity(message.len() + 4);
        let _ = crate::process::frame::write_frame(&mut frame, &message);
        let _ = crate::process::sigpipe::held_off(|| (&spawned.to_worker).write_all(&frame));
        drop(spawned.to_worker);
        drop(message);
        let shared = Arc::new(Shared {
            state: Mutex::new(Run {
                child: spawned.child,
                status: None,
                outcome: None,
            }),
            cond: Condvar::new(),
        });
        let s2 = shared.clone();
        let from = spawned.from_worker;
        let watcher = std::thread::Builder::new()
            .name(format!("cf-mp-process-{pid}"))
            .spawn(move || watch(&s2, pid, from));
        if let Err(e) = watcher {
            let mut st = lock(&shared.state);
            let _ = st.child.kill();
            let _ = st.child.wait();
            return Err(Error::Io(format!("could not start a watcher thread: {e}")));
        }
        self.started = Some(Started { pid, shared });
        Ok(())
    }

    /// Waits until the child exits, for at most `timeout` (`None`: no
    /// limit). Returns whether it has exited; `false` also when it was
    /// never started (Python raises instead).
    pub fn join(&self, timeout: Option<Duration>) -> bool {
        let Some(s) = &self.started else {
            return false;
        };
        let deadline = crate::sync::deadline(timeout);
        let mut st = lock(&s.shared.state);
        while st.status.is_none() {
            match deadline {
                None => st = s.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    st = s
                        .shared
                        .cond
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }

    /// Whether the child was started and has not been reaped yet.
    pub fn is_alive(&self) -> bool {
        self.started
            .as_ref()
            .is_some_and(|s| lock(&s.shared.state).status.is_none())
    }

    /// The child's process id, once started.
    pub fn pid(&self) -> Option<u32> {
        self.started.as_ref().map(|s| s.pid)
    }

    /// The process name (Python's `name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child is (or will be) a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Python's `exitcode`: `None` until the child has exited, then its
    /// exit code, or minus the signal number that killed it (`-9` for
    /// SIGKILL, `-15` for SIGTERM). A function that returns gives 0, one
    /// that panics 1.
    pub fn exitcode(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let s = self.started.as_ref()?;
        let status = lock(&s.shared.state).status?;
        status.code().or_else(|| status.signal().map(|sig| -sig))
    }

    /// Sends SIGTERM to the child (Python's `terminate()`); nothing if it
    /// was not started or has exited.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGKILL to the child (Python's `kill()`); nothing if it was
    /// not started or has exited.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&self, sig: i32) {
        if let Some(s) = &self.started {
            // Nothing if the child was reaped (its pid may have been
            // reused): `WorkerChild` knows, and reaping takes this lock.
            let _ = lock(&s.shared.state).child.signal(sig);
        }
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// The function's return value, once the child has exited (`None`
    /// before): `Ok(value)`, or why there is none — [`Error::Panicked`]
    /// with the message, [`Error::Encode`] / [`Error::Decode`], or
    /// [`Error::WorkerDied`] when the child ended without delivering one
    /// (killed, `exit()` called, or no `init()` in its `main`). Decoded
    /// afresh on every call.
    pub fn result(&self) -> Option<Result<R, Error>> {
        let s = self.started.as_ref()?;
        let st = lock(&s.shared.state);
        let status = st.status?;
        Some(match &st.outcome {
            Some(Ok(bytes)) => crate::process::codec::decode_caught(bytes),
            Some(Err(e)) => Err(e.clone().into_error(self.types)),
            None => {
                let (status, code, signal) = os::describe_exit(status);
                Err(Error::WorkerDied {
                    pid: s.pid,
                    status,
                    code,
                    signal,
                })
            }
        })
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        let Some(s) = &self.started else {
            return;
        };
        let mut st = lock(&s.shared.state);
        if self.daemon {
            // Nothing if it was reaped already.
            let _ = st.child.kill();
        }
        while st.status.is_none() {
            st = s.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The watcher thread of one child: reads [`Done`] (or end of stream),
/// waits for the exit and reaps the child under the lock.
fn watch(shared: &Shared, pid: u32, from: File) {
    let mut input = BufReader::new(from);
    let outcome = match read_message::<_, Done>(&mut input, MAX_FRAME) {
        Ok(Some(done)) => Some(done.outcome),
        _ => None,
    };
    drop(input);
    let _ = os::wait_exited(pid);
    let mut st = lock(&shared.state);
    st.outcome = outcome;
    let status = st.child.wait();
    st.status = Some(match status {
        Ok(s) => s,
        Err(_) => {
            // Not reapable (someone else reaped it): report a failure.
            use std::os::unix::process::ExitStatusExt;
            ExitStatus::from_raw(255 << 8)
        }
    });
    drop(st);
    shared.cond.notify_all();
}

/// A spawn request for the spawner thread.
struct SpawnJob {
    cmd: Command,
    hold_stdout: bool,
    passed: Vec<OwnedFd>,
    reply: mpsc::Sender<io::Result<Spawned>>,
}

/// Starts a child from one long-lived thread: on Linux a child's
/// parent-death signal fires when the *thread* that forked it exits, and a
/// daemon child must live as long as the parent process, not as the thread
/// that happened to call `start()`.
fn spawn(cmd: Command, hold_stdout: bool, passed: Vec<OwnedFd>) -> io::Result<Spawned> {
    static SPAWNER: OnceCell<Option<mpsc::Sender<SpawnJob>>> = OnceCell::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("cf-mp-spawner".into())
            .spawn(move || {
                for job in rx {
                    let _ =
                        job.reply
                            .send(os::spawn_worker_with(job.cmd, job.hold_stdout, job.passed));
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        return Err(io::Error::other("could not start the spawner thread"));
    };
    let (reply, answer) = mpsc::channel();
    spawner
        .send(SpawnJob {
            cmd,
            hold_stdout,
            passed,
            reply,
        })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
