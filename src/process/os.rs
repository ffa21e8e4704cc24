//! The operating-system side of process workers (Unix): starting one with
//! its protocol pipes on fixed descriptors, and the worker's own setup.
//!
//! The protocol never uses the worker's stdin, stdout or stderr: those stay
//! the user's, so `println!` in a task reaches the parent's terminal as in
//! Python. Instead the parent creates two pipes and maps the child's ends
//! onto descriptors [`CMD_FD`] (parent → worker) and [`RES_FD`]
//! (worker → parent), and every other descriptor is closed in the child
//! before exec, so the worker inherits nothing else of the parent's, even
//! descriptors someone left without close-on-exec. How the child is started
//! (`posix_spawn`, so that a large parent starts workers as fast as a small
//! one) is [`super::child`]'s business.
//!
//! A worker must not outlive its parent, even one killed by SIGKILL: see
//! [`super::parent_death`].

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::child::{self, WorkerChild};

/// The worker reads commands from this descriptor.
pub(crate) const CMD_FD: i32 = 3;
/// The worker writes results to this descriptor.
pub(crate) const RES_FD: i32 = 4;
/// In test-harness mode, the parent's stdout waits here until `init()`.
pub(crate) const STDOUT_FD: i32 = 5;
/// Channel ends passed to a [`Process`](crate::Process) child are mapped
/// onto descriptors from this one up, in order.
pub(crate) const PASS_FD_BASE: i32 = 6;

/// The executable children run: this very program. On Linux
/// `/proc/self/exe`, which names the running image even if its file was
/// replaced on disk since (a rebuild), so a child is always the same build.
pub(crate) fn own_executable() -> Result<std::path::PathBuf, crate::Error> {
    if cfg!(target_os = "linux") {
        Ok(std::path::PathBuf::from("/proc/self/exe"))
    } else {
        std::env::current_exe().map_err(|e| crate::Error::Io(e.to_string()))
    }
}

/// A started worker process and the parent's ends of its pipes.
pub(crate) struct Spawned {
    pub(crate) child: WorkerChild,
    pub(crate) to_worker: File,
    pub(crate) from_worker: File,
}

/// Starts `cmd` as a worker: stdin from /dev/null, stdout and stderr
/// inherited, the protocol pipes on [`CMD_FD`] and [`RES_FD`].
///
/// With `hold_stdout`, the worker's stdout is /dev/null and the parent's
/// stdout is passed on [`STDOUT_FD`], for the worker to take back in
/// `init()`: whatever the program prints before `init()` (a test harness's
/// banner) is dropped, what tasks print still reaches the parent's stdout.
pub(crate) fn spawn_worker(cmd: Command, hold_stdout: bool) -> io::Result<Spawned> {
    spawn_worker_with(cmd, hold_stdout, Vec::new())
}

/// [`spawn_worker`], also mapping each of `passed` onto
/// [`PASS_FD_BASE`]` + i` in the child (the channel ends a
/// [`Process`](crate::Process) argument carries). No other descriptor
/// reaches the child. `passed` is consumed: the parent's copies are closed
/// once the child has started.
pub(crate) fn spawn_worker_with(
    mut cmd: Command,
    hold_stdout: bool,
    passed: Vec<OwnedFd>,
) -> io::Result<Spawned> {
    if i32::try_from(passed.len()).is_err() {
        return Err(io::Error::other("too many descriptors to pass"));
    }
    let (cmd_read, cmd_write) = io::pipe()?;
    let (res_read, res_write) = io::pipe()?;
    let stdout = io::stdout();
    let mut map: Vec<(BorrowedFd<'_>, RawFd)> =
        vec![(cmd_read.as_fd(), CMD_FD), (res_write.as_fd(), RES_FD)];
    if hold_stdout {
        map.push((stdout.as_fd(), STDOUT_FD));
    }
    map.extend(passed.iter().map(|fd| fd.as_fd()).zip(PASS_FD_BASE..));
    let child = child::spawn(&mut cmd, hold_stdout, &map)?;
    // Close the parent's copies of the child's ends (and of the passed
    // descriptors), so that end-of-file on `res_read` means the worker is
    // gone.
    drop(map);
    drop((cmd_read, res_write, passed));
    Ok(Spawned {
        child,
        to_worker: File::from(OwnedFd::from(cmd_write)),
        from_worker: File::from(OwnedFd::from(res_read)),
    })
}

/// Worker side: Ctrl-C goes to the whole foreground process group; the
/// parent decides what happens to its tasks, so workers let SIGINT pass
/// (pebble L12, PP10). Not with `SIG_IGN`, which programs a task starts
/// would inherit through `exec` (they then outlived a Ctrl-C that stopped
/// the same programs started anywhere else; found by review), but with a
/// handler that does nothing: `exec` puts a handled signal back to its
/// default action. `SA_RESTART` restarts the calls a signal interrupts
/// where the kernel can; a few (`nanosleep`, `poll`) return `EINTR`,
/// which `std` retries.
pub(crate) fn let_sigint_pass() {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: `action` is zeroed (a valid sigaction: empty mask, no
    // flags) and then given a handler that runs no code at all, which is
    // async-signal-safe; sigaction reads it and writes nothing back (null
    // old action).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

/// Worker side: takes ownership of the two protocol descriptors and marks
/// them close-on-exec, so programs a task starts do not inherit them (and
/// cannot keep the parent from seeing this worker's end-of-file).
pub(crate) fn take_protocol_fds() -> io::Result<(File, File)> {
    for fd in [CMD_FD, RES_FD] {
        // SAFETY: F_GETFD on any integer is harmless; an fd that is not open
        // gives EBADF, which we report.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::other(format!(
                "descriptor {fd} is not open: this process was not started by a \
                 concurrent-futures process pool"
            )));
        }
    }
    // SAFETY: both descriptors are open (checked above) and, in a worker,
    // were placed there for us by the parent and are used by nothing else in
    // this process; this is the one place that takes ownership of them.
    let (cmd, res) = unsafe { (File::from_raw_fd(CMD_FD), File::from_raw_fd(RES_FD)) };
    for f in [&cmd, &res] {
        // SAFETY: F_SETFD with FD_CLOEXEC on a descriptor we own.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    keep_protocol_fds_from_forked_children([&cmd, &res])?;
    Ok((cmd, res))
}

/// Close-on-exec keeps the protocol pipes from programs a task *execs*, but
/// a task that forks without exec (a daemonizing library, `nix::fork`)
/// hands the grandchild copies of them. The parent learns that a worker
/// died from the end-of-file of its result pipe, and a grandchild holding
/// a copy would hide the death until it exits too: the dead worker's task
/// would never fail, and a `Process`'s `join()` would wait for the
/// grandchild. So a fork handler points the forked child's copies at
/// `/dev/null` (or closes them if that cannot be opened) before `fork()`
/// returns there.
///
/// Only copies of *the pipes*: a descriptor number is reused once closed
/// (a `Process` child closes its command pipe before it runs the
/// function, whose first file then gets that number), so the handler
/// checks each descriptor's device and inode against the pipe's, recorded
/// here, and leaves any other file alone.
///
/// The grandchild loses nothing it could use: the pipes belong to the
/// worker's conversation with its parent, and a grandchild that wandered
/// back into the worker's loop now reads end-of-file and exits instead of
/// interleaving frames with the worker's. `posix_spawn` and raw `clone`
/// skip fork handlers, but what they start either execs (close-on-exec
/// applies) or is no `fork()` a library would issue.
fn keep_protocol_fds_from_forked_children(pipes: [&File; 2]) -> io::Result<()> {
    for (file, id) in pipes.into_iter().zip(&PROTOCOL_PIPES) {
        let meta = file.metadata()?;
        id.0.store(meta.dev(), Ordering::Relaxed);
        id.1.store(meta.ino(), Ordering::Relaxed);
    }
    static REGISTERED: once_cell::sync::OnceCell<i32> = once_cell::sync::OnceCell::new();
    // SAFETY: registers a handler with no captured state (a plain function
    // that reads two statics and touches only the two fixed descriptors);
    // it stays valid for the life of the process, as pthread_atfork
    // requires.
    let r = *REGISTERED
        .get_or_init(|| unsafe { libc::pthread_atfork(None, None, Some(detach_protocol_fds)) });
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// (device, inode) of the pipes on [`CMD_FD`] and [`RES_FD`]; zero until
/// recorded (no pipe has inode 0).
static PROTOCOL_PIPES: [(AtomicU64, AtomicU64); 2] = [
    (AtomicU64::new(0), AtomicU64::new(0)),
    (AtomicU64::new(0), AtomicU64::new(0)),
];

/// The fork handler (see [`keep_protocol_fds_from_forked_children`]).
extern "C" fn detach_protocol_fds() {
    for (fd, id) in [CMD_FD, RES_FD].into_iter().zip(&PROTOCOL_PIPES) {
        let (dev, ino) = (id.0.load(Ordering::Relaxed), id.1.load(Ordering::Relaxed));
        // SAFETY: `stat` is plain old data, all zeroes a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: runs in the child of a fork, where only async-signal-safe
        // calls are allowed: fstat, open, dup3 and close are. fstat writes
        // into `st`, which lives across the call; the rest take a static C
        // string and plain integers.
        unsafe {
            if ino == 0
                || libc::fstat(fd, &mut st) != 0
                || st.st_dev as u64 != dev
                || st.st_ino as u64 != ino
            {
                continue; // not (any more) the pipe: someone else's file
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null < 0 || libc::dup3(null, fd, libc::O_CLOEXEC) < 0 {
                libc::close(fd);
            }
            if null >= 0 {
                libc::close(null);
            }
        }
    }
}

/// `Process` child side: takes ownership of the `n` channel ends the parent
/// mapped onto [`PASS_FD_BASE`].. and marks them close-on-exec. Succeeds at
/// most once per process (a second call is an error), so no descriptor is
/// ever owned twice.
pub(crate) fn take_passed_fds(n: usize) -> io::Result<Vec<OwnedFd>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other(
            "the passed descriptors were already taken",
        ));
    }
    let mut fds = Vec::with_capacity(n);
    for fd in (PASS_FD_BASE..).take(n) {
        // SAFETY: F_GETFD on any integer is harmless; EBADF is reported.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::other(format!(
                "passed descriptor {fd} is not open"
            )));
        }
        // SAFETY: `fd` is open (checked above) and was placed for this
        // process by the parent that started it as a `Process` child
        // (`spawn_worker_with`); the `TAKEN` flag makes this the one place,
        // once, that takes ownership of it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD with FD_CLOEXEC on a descriptor we own.
        if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        fds.push(owned);
    }
    Ok(fds)
}

/// Blocks until child `pid` has exited, **without reaping it** (`waitid`
/// with `WNOWAIT`): the caller reaps it later, under its own lock, so that
/// nobody signals a reused pid in between.
pub(crate) fn wait_exited(pid: u32) -> io::Result<()> {
    let id = libc::id_t::from(pid);
    loop {
        // SAFETY: siginfo_t is plain old data; all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into `info`, which we own and which lives
        // across the call; the other arguments are integers.
        let r = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether no process `pid` exists any more (exited and reaped). A process
/// of another user, or a zombie not yet reaped, still exists.
pub(crate) fn process_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 sends nothing and touches no memory; kill only
    // checks that `pid` exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// How many bytes wait unread in the pipe `fd` (`FIONREAD`).
pub(crate) fn unread_bytes(fd: std::os::fd::RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one `c_int`, which we own and which lives
    // across the call; a bad descriptor is an error, not undefined
    // behaviour.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Waits until `fd` is readable (or at end of file / hung up), for at most
/// `timeout` (`None`: no limit). Returns whether it is.
pub(crate) fn poll_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    let deadline = crate::sync::deadline(timeout);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Round up, so a short wait is not a busy zero-timeout poll.
                let ms = left.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes exactly one `pollfd`, which we own
        // and which lives across the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 {
            if deadline.is_none_or(|d| std::time::Instant::now() >= d) {
                return Ok(false);
            }
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until `fd` can take a write (or its reader is gone, which the
/// next write reports as `EPIPE`). No time limit.
pub(crate) fn poll_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll reads and writes exactly one `pollfd`, which we own
        // and which lives across the call.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Asks the scheduler not to let the calling thread's wake-ups preempt
/// the thread already running on the CPU it wakes on (Linux:
/// `SCHED_BATCH`, same nice value, same share of the CPU). The thread then
/// runs when that CPU's current thread blocks or its time slice ends, or at
/// once on an idle CPU. Best effort: where the policy is missing or refused
/// nothing changes. Returns whether it took effect.
///
/// For the parent's writer threads (see [`super::outbox`]): a submitting
/// thread wakes one, and a writer that preempted it in the middle of a burst
/// of submits held the submitter off its CPU while the woken worker ran a
/// whole task, with the other CPU idle and the other workers unfed.
pub(crate) fn defer_wakeups_to_running_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid
        // `sched_param` that outlives the call, which only reads it.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Sets `O_NONBLOCK` on `fd`'s open file description.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL) on a descriptor we borrow touches no memory.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above; F_SETFL takes an integer.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Worker side (test-harness mode): makes the parent's stdout, passed on
/// [`STDOUT_FD`], this process's stdout again.
pub(crate) fn restore_stdout() -> io::Result<()> {
    use std::io::Write;
    let _ = io::stdout().flush();
    // SAFETY: dup2 and close on plain integers; STDOUT_FD was placed by the
    // parent for exactly this, and nothing else in this process uses it.
    unsafe {
        if libc::dup2(STDOUT_FD, libc::STDOUT_FILENO) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(STDOUT_FD);
    }
    Ok(())
}

/// Worker side: removes the worker-mode marker from this process's
/// environment, so programs a task starts (even this same executable) run
/// normally instead of as workers.
pub(crate) fn forget_worker_marker(name: &str) {
    // SAFETY: called from `init()`, which the documentation requires to be
    // the first statement of `main`, before the program starts threads that
    // could read the environment concurrently. (Under a test harness, the
    // harness's other threads are idle while the one selected test runs.)
    unsafe { std::env::remove_var(name) };
}

/// The resident memory of process `pid`, from `/proc/<pid>/statm`
/// (Linux); `None` elsewhere, or if the process is gone.
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages.checked_mul(u64::try_from(page).ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// How a worker process ended, in words, with the code or signal.
pub(crate) fn describe_exit(
    status: std::process::ExitStatus,
) -> (String, Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        (format!("exit code {code}"), Some(code), None)
    } else if let Some(sig) = status.signal() {
        (
            format!("signal {sig} ({})", signal_name(sig)),
            None,
            Some(sig),
        )
    } else {
        (format!("{status}"), None, None)
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy_of_this_thread() -> i32 {
        // SAFETY: pid 0 is the calling thread; the call touches no memory.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn deferring_wakeups_makes_only_the_calling_thread_a_batch_thread() {
        let before = policy_of_this_thread();
        let inside = std::thread::spawn(|| {
            let applied = defer_wakeups_to_running_thread();
            (applied, policy_of_this_thread())
        })
        .join()
        .unwrap();
        assert_eq!(inside, (true, libc::SCHED_BATCH));
        assert_eq!(policy_of_this_thread(), before);
    }
}
