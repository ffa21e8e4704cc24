//! The operating-system side of process workers (Unix): starting one with
//! its protocol pipes on fixed descriptors, and the worker's own setup.
//!
//! The protocol never uses the worker's stdin, stdout or stderr: those stay
//! the user's, so `println!` in a task reaches the parent's terminal as in
//! Python. Instead the parent creates two pipes and maps the child's ends
//! onto descriptors [`CMD_FD`] (parent → worker) and [`RES_FD`]
//! (worker → parent) with `command-fds`, then closes every descriptor above
//! them in the child before exec, so the worker inherits nothing else of the
//! parent's, even descriptors someone left without close-on-exec.
//!
//! A worker must not outlive its parent, even one killed by SIGKILL. It asks
//! the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`, Linux),
//! then checks that the parent is still the one that started it (closing the
//! race where the parent died before the request). On every Unix it also
//! exits on end-of-file of its command pipe, which the kernel closes when
//! the parent dies. Note that on Linux "parent" means the parent *thread*:
//! the pool starts its workers from its supervisor thread, which outlives
//! them.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use command_fds::{CommandFdExt, FdMapping};

/// The worker reads commands from this descriptor.
pub(crate) const CMD_FD: i32 = 3;
/// The worker writes results to this descriptor.
pub(crate) const RES_FD: i32 = 4;
/// In test-harness mode, the parent's stdout waits here until `init()`.
pub(crate) const STDOUT_FD: i32 = 5;

/// A started worker process and the parent's ends of its pipes.
pub(crate) struct Spawned {
    pub(crate) child: Child,
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
pub(crate) fn spawn_worker(mut cmd: Command, hold_stdout: bool) -> io::Result<Spawned> {
    use std::os::fd::AsFd;
    let (cmd_read, cmd_write) = io::pipe()?;
    let (res_read, res_write) = io::pipe()?;
    let mut mappings = vec![
        FdMapping {
            parent_fd: OwnedFd::from(cmd_read),
            child_fd: CMD_FD,
        },
        FdMapping {
            parent_fd: OwnedFd::from(res_write),
            child_fd: RES_FD,
        },
    ];
    if hold_stdout {
        mappings.push(FdMapping {
            parent_fd: io::stdout().as_fd().try_clone_to_owned()?,
            child_fd: STDOUT_FD,
        });
        cmd.stdout(Stdio::null());
    }
    cmd.stdin(Stdio::null())
        .fd_mappings(mappings)
        .map_err(|e| io::Error::other(format!("descriptor mapping: {e}")))?;
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed: it makes raw `close_range`
        // / `close` system calls and touches no memory, lock or allocator.
        // Registered after the mappings above, so 3/4/5 are already in place.
        unsafe {
            cmd.pre_exec(|| {
                close_inherited_above(STDOUT_FD);
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    // `cmd` still owns the child's pipe ends; dropping it closes them here,
    // so end-of-file on `res_read` means the worker is gone.
    drop(cmd);
    Ok(Spawned {
        child,
        to_worker: File::from(OwnedFd::from(cmd_write)),
        from_worker: File::from(OwnedFd::from(res_read)),
    })
}

/// In the child before exec: closes every descriptor above `last`, so the
/// worker inherits nothing but stdio and its pipes even from a parent (or a
/// library, or a job runner) that left descriptors without close-on-exec
/// (Python's `close_fds=True`).
fn close_inherited_above(last: i32) {
    let first = (last + 1) as libc::c_uint;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range on a range of integers; async-signal-safe.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
        if r == 0 {
            return;
        }
    }
    // Older kernels (and other Unixes): close one by one up to a bound
    // that covers ordinary descriptor limits.
    for fd in first..65_536 {
        // SAFETY: close on an integer; EBADF for unused ones is harmless.
        unsafe { libc::close(fd as i32) };
    }
}

/// Worker side: asks to be killed when the parent dies, and checks the
/// parent is still `expected_parent`. Returns false if it is already gone.
pub(crate) fn die_with_parent(expected_parent: u32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes two integer arguments and
    // touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    parent as u32 == expected_parent
}

/// Worker side: Ctrl-C goes to the whole foreground process group; the
/// parent decides what happens to its tasks, so workers ignore SIGINT
/// (pebble L12, PP10).
pub(crate) fn ignore_sigint() {
    // SAFETY: installing SIG_IGN for SIGINT runs no code of ours in a
    // signal context.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
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
    Ok((cmd, res))
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
