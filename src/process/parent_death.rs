//! A worker must not outlive its parent, even one killed by SIGKILL.
//!
//! Three guards, from the cheapest:
//!
//! * The kernel's: the worker asks for SIGKILL when its parent dies
//!   (`PR_SET_PDEATHSIG`, Linux), then checks that the parent is still the
//!   one that started it, closing the race where the parent died before
//!   the request. On Linux "parent" means the parent *thread*: the pool
//!   starts its workers from its supervisor thread, which outlives them.
//! * A watcher: the kernel forgets the request when the process changes
//!   its credentials, which a task may do at any moment (a quick task
//!   dropping privileges, then a long one, outlived a parent killed with
//!   SIGKILL; found by review). A thread of the worker waits on a pidfd of
//!   the parent, which costs no CPU and nothing per task, and kills the
//!   worker when the parent exits. Where there is no pidfd (Linux before
//!   5.3, other Unixes) the worker looks again now and then between tasks
//!   ([`still_dies_with_parent`]) instead.
//! * On every Unix a pool worker also exits on end-of-file of its command
//!   pipe, which the kernel closes when the parent dies: enough for a
//!   worker between tasks, not for one running a long task.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Asks to be killed when the parent dies, and checks the parent is still
/// `expected_parent`. Returns false if it is already gone.
pub(crate) fn die_with_parent(expected_parent: u32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes two integer arguments and
    // touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    parent_is(expected_parent)
}

/// Whether this process is still the child of `expected_parent`.
fn parent_is(expected_parent: u32) -> bool {
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    parent as u32 == expected_parent
}

/// Asks again to be killed when the parent dies if the kernel has
/// forgotten the request (see the module). One `prctl` when the request
/// holds. Returns false if the parent is gone already.
pub(crate) fn still_dies_with_parent(expected_parent: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut sig: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer,
        // which points at `sig`, alive across the call.
        let r = unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
        if r == 0 && sig != 0 {
            return true;
        }
    }
    die_with_parent(expected_parent)
}

/// Starts the watcher (see the module): a thread that SIGKILLs this
/// process once `parent` has exited. Returns false if there is none (no
/// pidfd here, or no thread could start): then the caller looks again
/// between tasks.
pub(crate) fn watch_parent(parent: u32) -> bool {
    let Some(pidfd) = open_pidfd(parent) else {
        return false;
    };
    // A pid names the parent only while we are its child: opened after the
    // parent died, `pidfd` might name another process with the same pid.
    if !parent_is(parent) {
        kill_self();
    }
    std::thread::Builder::new()
        .name("cf-parent-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            if wait_readable(&pidfd) {
                kill_self();
            }
        })
        .is_ok()
}

#[cfg(target_os = "linux")]
fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new
    // descriptor (close-on-exec) or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: on success `fd` is a descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(not(target_os = "linux"))]
fn open_pidfd(_: u32) -> Option<OwnedFd> {
    None
}

/// Waits until `fd` is readable (for a pidfd: its process exited); false
/// if `poll` failed otherwise, which leaves the watch to the other guards
/// rather than kill a worker whose parent lives.
fn wait_readable(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid pollfd, alive across the call; no
        // timeout.
        if unsafe { libc::poll(&mut p, 1, -1) } > 0 {
            return p.revents & libc::POLLIN != 0;
        }
        // Interrupted (a signal, a freeze of the worker): wait again.
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Ends this process as the kernel's parent-death signal would.
fn kill_self() -> ! {
    // SAFETY: kill with our own pid and SIGKILL; it does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}
