//! Helpers shared by the integration tests: hang guards, gates that hold
//! tasks until the test releases them, an executor the test drives by hand,
//! and a minimal `block_on`. Nothing here measures time: every timeout is a
//! hang guard that turns a bug into a failure instead of a stuck CI run.

#![allow(dead_code)] // each test file uses its own subset

pub mod stop;

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, Executor, Future, ProcessPoolExecutor, Task, ThreadPoolExecutor};

/// Hang guard: long enough never to expire on a working library.
pub const HANG: Duration = Duration::from_secs(30);
/// A wait that must *expire*, because what it waits on is held.
pub const SHORT: Duration = Duration::from_millis(50);

/// A gate that tasks wait on until the test opens it (giving up after the
/// hang guard, so a failing test cannot leave workers blocked forever).
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    pub fn wait(&self) {
        let open = self.open.lock().unwrap();
        let (open, _) = self
            .cond
            .wait_timeout_while(open, HANG, |open| !*open)
            .unwrap();
        assert!(*open, "hang guard: the gate was never opened");
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cond.notify_all();
    }
}

/// Polls `cond` until it holds; panics after the hang guard. Waits for a
/// state (workers started, parked...), never measures time.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "hang guard: never saw {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A task on `pool` that returns `value` once the returned sender is used or
/// dropped. It may be queued or running; see [`started`].
pub fn gated<T: Send + Sync + 'static>(
    pool: &ThreadPoolExecutor,
    value: T,
) -> (Future<T>, Sender<()>) {
    let (release, rx) = mpsc::channel::<()>();
    let fut = pool.spawn(move || {
        let _ = rx.recv_timeout(HANG);
        value
    });
    (fut, release)
}

/// Like [`gated`], but returns only once a worker is running the task.
pub fn started<T: Send + Sync + 'static>(
    pool: &ThreadPoolExecutor,
    value: T,
) -> (Future<T>, Sender<()>) {
    let (release, rx) = mpsc::channel::<()>();
    let (up_tx, up_rx) = mpsc::channel::<()>();
    let fut = pool.spawn(move || {
        up_tx.send(()).unwrap();
        let _ = rx.recv_timeout(HANG);
        value
    });
    up_rx.recv_timeout(HANG).expect("the task never started");
    (fut, release)
}

/// An executor that only stores its tasks: the test decides when (and on
/// which thread) each one runs, fails or is cancelled.
#[derive(Debug, Default)]
pub struct Manual {
    tasks: Mutex<Vec<Task>>,
}

impl Executor for Manual {
    fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
        self.tasks.lock().unwrap().push(task);
        Ok(())
    }
    fn shutdown(&self, _wait: bool, _cancel_futures: bool) {}
    fn max_workers(&self) -> usize {
        1
    }
}

impl Manual {
    /// The oldest task not yet taken.
    pub fn take(&self) -> Task {
        self.tasks.lock().unwrap().remove(0)
    }

    /// Every task not yet taken, oldest first.
    pub fn take_all(&self) -> Vec<Task> {
        std::mem::take(&mut *self.tasks.lock().unwrap())
    }
}

struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark()
    }
}

/// A minimal executor for one std future, independent of any runtime.
/// Panics instead of hanging.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + HANG;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let now = Instant::now();
        assert!(now < deadline, "block_on: the future never completed");
        thread::park_timeout(deadline - now);
    }
}

/// A process pool of `workers` for a test binary (the file must also use
/// `concurrent_futures::process_pool_test_worker!()`).
pub fn pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

/// The future's outcome, failing the test if it does not resolve within
/// `guard`.
pub fn wait_at_most<T>(f: Future<T>, guard: Duration) -> Result<T, Error> {
    if let Err(Error::Timeout { .. }) = f.result(Some(guard)) {
        panic!("the future did not resolve within {guard:?}");
    }
    f.into_result()
}

/// [`wait_at_most`] with the hang guard.
pub fn wait<T>(f: Future<T>) -> Result<T, Error> {
    wait_at_most(f, HANG)
}

/// This test binary again, set to run only the ignored test `helper`, with
/// `marker` set in its environment (helpers do nothing without their
/// marker, so `cargo test -- --ignored` stays harmless) and no worker-mode
/// variable inherited.
pub fn helper_command(helper: &str, marker: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([
        helper,
        "--exact",
        "--nocapture",
        "--ignored",
        "--test-threads=1",
    ])
    .env(marker, "1")
    .env_remove(concurrent_futures::WORKER_ENV)
    .stdin(std::process::Stdio::null());
    cmd
}

/// Runs `cmd` to its end with captured output and fails the test if it
/// fails, or if it (or a worker holding its stdout) is still there after
/// `guard`, which kills it.
pub fn run_helper(mut cmd: std::process::Command, guard: Duration) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the helper");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(guard) else {
        // SAFETY: kill() takes plain integers; `pid` is our unreaped child
        // (its waiting thread has not returned).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        panic!("hang guard: the helper (or a worker holding its stdout) ran over {guard:?}");
    };
    let out = out.expect("wait for the helper");
    assert!(
        out.status.success(),
        "helper failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Kills this (worker) process with SIGSEGV, as a real segfault would.
pub fn segfault() -> ! {
    // Rust's runtime installs a SIGSEGV handler (stack-overflow detection)
    // which, for a fault outside a guard page, restores the default action
    // and returns; for a *raised* signal that return would resume the task.
    // Restoring the default action first makes the raise fatal, as a real
    // segfault is.
    // SAFETY: signal() and raise() take plain integers and touch no memory
    // of ours; killing this (worker) process is the point.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    unreachable!("SIGSEGV with the default action kills the process")
}

/// Asserts that `e` is a worker's death by `signal` (no exit code).
pub fn assert_worker_killed_by(e: &Error, signal: i32) {
    assert!(
        matches!(e, Error::WorkerDied { signal: Some(s), code: None, .. } if *s == signal),
        "expected WorkerDied by signal {signal}, got {e:?}"
    );
}

/// Asserts that `e` is a worker's exit with `code` (no signal).
pub fn assert_worker_exited_with(e: &Error, code: i32) {
    assert!(
        matches!(e, Error::WorkerDied { code: Some(c), signal: None, .. } if *c == code),
        "expected WorkerDied with exit code {code}, got {e:?}"
    );
}

/// Runs `f` on a thread: its result, or `None` if it has not ended within
/// the hang guard (the test then reports what it saw instead of hanging).
pub fn ended_within_hang_guard<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG).ok()
}

/// Runs `f` (a call that may block: `shutdown(wait = true)`, a drop) on a
/// helper thread and waits for it with the hang guard, so that a call that
/// never returns fails the test instead of hanging it.
pub fn guarded<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hang guard: {what} still blocked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// A gate between the test and a task in a worker process: a fresh path in
/// the temporary directory that the task waits for and the test creates
/// (or the other way round). Removed when dropped.
pub struct FileGate(std::path::PathBuf);

impl FileGate {
    pub fn new(name: &str) -> FileGate {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let file = format!("cf-test-gate-{}-{name}-{n}", std::process::id());
        FileGate(std::env::temp_dir().join(file))
    }

    /// The path, as a task argument.
    pub fn arg(&self) -> String {
        self.0.to_str().expect("a UTF-8 temporary path").to_owned()
    }

    pub fn open(&self) {
        std::fs::write(&self.0, b"").expect("create the gate file");
    }

    pub fn is_open(&self) -> bool {
        self.0.exists()
    }
}

impl Drop for FileGate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Task side of a [`FileGate`]: returns once the file exists (panics after
/// the hang guard, so a failing test cannot leave a worker held forever).
pub fn await_file(path: &str) {
    let deadline = Instant::now() + HANG;
    while !std::path::Path::new(path).exists() {
        assert!(
            Instant::now() < deadline,
            "hang guard: {path} never appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A process-pool task: returns its worker's pid once the [`FileGate`] at
/// `gate` is open.
pub fn pid_after_gate(gate: String) -> u32 {
    await_file(&gate);
    std::process::id()
}

/// (state, parent pid) from `/proc/<pid>/stat`, or `None` if there is no
/// such process.
pub fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is running (a zombie or a dead process is not).
pub fn is_alive(pid: u32) -> bool {
    matches!(stat_of(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Kills the listed processes still alive when dropped, so that a test
/// that fails leaves none of the processes it started behind.
pub struct KillOnDrop(pub Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|&&p| is_alive(p)) {
            // SAFETY: kill() takes two integers and touches no memory.
            // `pid` was alive a moment ago and is a process the test
            // started (they all sleep far longer than any test runs, so it
            // has not exited and had its pid reused since).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Whether our child `pid` has been reaped: no process has that pid now,
/// or one that is not our child does (the pid was reused since).
pub fn reaped(pid: u32) -> bool {
    stat_of(pid).is_none_or(|(_, ppid)| ppid != std::process::id())
}

/// Gates by key for tasks that must be `fn` items (a `Pool`'s tasks): a
/// task [`keyed::gated`] on a key holds until the test opens that key.
pub mod keyed {
    use std::sync::{Condvar, Mutex};

    use super::HANG;

    static OPEN: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    static OPENED: Condvar = Condvar::new();
    static STARTED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    /// Lets the tasks gated on `key` go on.
    pub fn open_gate(key: u64) {
        OPEN.lock().unwrap().push(key);
        OPENED.notify_all();
    }

    /// Whether a task gated on `key` has started.
    pub fn started(key: u64) -> bool {
        STARTED.lock().unwrap().contains(&key)
    }

    /// A task that holds until `key` is opened (or the hang guard passes),
    /// then returns it.
    pub fn gated(key: u64) -> u64 {
        STARTED.lock().unwrap().push(key);
        let open = OPEN.lock().unwrap();
        let (open, _) = OPENED
            .wait_timeout_while(open, HANG, |open| !open.contains(&key))
            .unwrap();
        assert!(open.contains(&key), "hang guard: gate {key} never opened");
        key
    }
}

/// A waker that counts its wakes and unparks the thread that made it.
pub struct CountingWaker {
    pub thread: thread::Thread,
    pub wakes: std::sync::atomic::AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// A [`CountingWaker`] for this thread, and the `Waker` made of it.
pub fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let w = Arc::new(CountingWaker {
        thread: thread::current(),
        wakes: std::sync::atomic::AtomicUsize::new(0),
    });
    (w.clone(), Waker::from(w))
}

/// Waits until every thread of process `pid` has exited (its pidfd says
/// so), so that its descriptors are closed. (Its main thread shows as a
/// zombie in `/proc` before its other threads are gone.)
pub fn wait_for_exit_of_every_thread(pid: u32) {
    // SAFETY: pidfd_open takes a pid and flags, returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the hang guard as the timeout.
    let n = unsafe { libc::poll(&mut p, 1, HANG.as_millis() as i32) };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    assert_eq!(n, 1, "hang guard: worker {pid} never exited");
}

/// Polls `cond` until it holds (true) or `limit` passes (false). Never
/// panics, so thread-local destructors may use it too; waits for a state,
/// never measures time.
pub fn wait_for(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while !cond() {
        if Instant::now() > until {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}
