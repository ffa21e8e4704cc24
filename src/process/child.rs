//! Starting a child process cheaply, with chosen descriptors and nothing
//! else of the parent's, and the handle that waits for it
//! ([`WorkerChild`]).
//!
//! # Why not just `Command::spawn` with a `pre_exec` hook
//!
//! A worker needs its protocol pipes on fixed descriptor numbers and must
//! inherit no other descriptor of the parent's, even one somebody left
//! without close-on-exec. Done in a `pre_exec` hook (dup2 the pipes into
//! place, close everything above them), that is easy, but any `pre_exec`
//! hook makes std start the child with a real `fork()`: the kernel copies
//! the parent's page tables and marks every writable page copy-on-write,
//! and the parent then takes a page fault on the first write to each of
//! them. That costs time in proportion to the parent's resident memory: a
//! 2-worker pool took ~1.4 ms to its first result from a 2 MiB process,
//! ~3–5.7 ms from a 67 MiB one and ~20–23 ms from a 512 MiB one; with
//! `posix_spawn`, ~1 ms from all three (2-core Linux machine).
//!
//! `posix_spawn` needs none of that. glibc (2.24 and later) implements it
//! with `clone(CLONE_VM | CLONE_VFORK)`: the child runs on the parent's
//! memory, on a small stack of its own, only until it calls `execve`, and
//! the calling thread sleeps until then, so nothing is copied and the cost
//! no longer depends on the parent's size. What the hook did becomes a list
//! of *file actions* that glibc performs in the child: open `/dev/null` on
//! stdin, `dup2` each pipe onto its number, close any unmapped number below
//! the last one and every descriptor above it
//! (`posix_spawn_file_actions_addclosefrom_np`, glibc 2.34+).
//! glibc also reports a failed `execve` as the return value of
//! `posix_spawn`, so a missing program is an error of the spawn, as with
//! std.
//!
//! Two details make the file actions correct whatever numbers the parent's
//! descriptors have:
//!
//! * every source descriptor is first copied (close-on-exec) to a number
//!   above the target range, so no `dup2` overwrites a source that a later
//!   one still needs, and no source is itself a target: `dup2(fd, fd)`
//!   would keep the close-on-exec flag (and the copies are closed in the
//!   child by the final "close from" action);
//! * SIGPIPE goes back to its default action in the child, as std does for
//!   its children (Rust programs ignore SIGPIPE, and an ignored signal stays
//!   ignored across `execve`); and the child starts with no signal blocked,
//!   which std does not do: the mask would otherwise come from whichever
//!   thread built the pool (a program that blocks SIGTERM in its threads
//!   to handle it on one would get workers that `terminate()` cannot stop).
//!
//! `posix_spawn_file_actions_addclosefrom_np` is looked up at run time
//! (`dlsym`), so that a program built here still runs on a glibc older
//! than 2.34. Where it is missing, on other C libraries and Unixes, and for
//! what the fast path does not cover (a working directory, a program name
//! without a `/`, which std looks up in `PATH`), the child is started the
//! old way: std's `Command::spawn` with a `pre_exec` hook doing the same
//! steps, i.e. a `fork`. (The pool's workers always run an absolute path
//! with no working directory.)
//!
//! All the `unsafe` of starting and reaping children is in this module.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use super::tree::{ProcessTable, Tree};

/// A child process this process started, by pid.
///
/// Unlike `std::process::Child`, it can be built from a pid (the fast
/// path of [`spawn`] has no `Child`). It reaps the child at most once and
/// never signals a pid it has reaped, which could by then name an unrelated
/// process. Like `Child`, dropping it neither kills nor reaps the child.
///
/// Signals go through a pidfd where there is one (Linux 5.3+), taken right
/// after the start: it names this process and no other, even if somebody
/// else reaps the child (a program that ignores `SIGCHLD`, or calls
/// `waitpid(-1)`) and the pid is reused.
#[derive(Debug)]
pub(crate) struct WorkerChild {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    /// Set once the child is reaped: its exit status, or the `errno` of a
    /// wait that found it was no longer our child (reaped by someone else).
    reaped: Option<Result<ExitStatus, i32>>,
}

/// A pidfd for `pid` (Linux), or `None`.
pub(crate) fn open_pidfd(pid: libc::pid_t) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pidfd_open takes a pid and a flags word and returns a new
        // descriptor or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = std::os::fd::RawFd::try_from(fd)
            .ok()
            .filter(|&fd| fd >= 0)?;
        // SAFETY: the kernel just returned `fd`, open (close-on-exec) and
        // owned by nobody else.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// A worker the pool has decided to kill for its running task (a timeout,
/// a cancel; see [`super::freeze`], which froze it first): killed with its
/// process tree when dropped, which the pool does once its lock is
/// released (finding the tree reads all of `/proc`). Killing in `Drop`
/// means a panic between the verdict and the kill cannot leave the worker
/// stopped forever.
pub(crate) struct Doomed(crate::sync::Arc<crate::sync::Mutex<WorkerChild>>);

impl Doomed {
    pub(crate) fn new(child: crate::sync::Arc<crate::sync::Mutex<WorkerChild>>) -> Doomed {
        Doomed(child)
    }

    /// SIGKILLs the worker's descendants, then the worker (as dropping it
    /// does; this names the moment).
    pub(crate) fn kill(self) {
        drop(self);
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        let table = ProcessTable::read();
        let _ = crate::sync::lock(&self.0).signal_tree(&table, libc::SIGKILL);
    }
}

/// Whether the process `pidfd` names has exited by `deadline` (`None`: waits
/// however long that takes): a pidfd polls readable once its process has
/// exited. A failed poll answers "not exited", the answer that makes a
/// caller escalate, which is harmless for a process that is gone.
pub(crate) fn exited_by(pidfd: &OwnedFd, deadline: Option<Instant>) -> bool {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    super::os::poll_readable(pidfd.as_fd(), left).unwrap_or(false)
}

/// Sends `sig` to the process `pidfd` names (signal 0: only checks that it
/// still exists, if only as a zombie). `ESRCH` once it has exited.
pub(crate) fn send_via_pidfd(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pidfd_send_signal takes a descriptor we own, a signal
        // number, a null siginfo (allowed: "as if by kill") and flags; it
        // touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pidfd, sig);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

impl WorkerChild {
    fn new(pid: libc::pid_t) -> WorkerChild {
        WorkerChild {
            pid,
            pidfd: open_pidfd(pid),
            reaped: None,
        }
    }

    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// SIGKILLs the child. Nothing (and no error) if it was already reaped;
    /// a child that exited but was not reaped yet is a zombie, which the
    /// signal does not hurt.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends `sig` to the processes the child started, and theirs (found in
    /// `table`), then to the child; returns that tree, which a stop that
    /// escalates signals again later (see [`super::tree`]). Nothing if the
    /// child was already reaped. For stops the pool decides on: a timeout,
    /// a kill, a terminate.
    pub(crate) fn signal_tree(&mut self, table: &ProcessTable, sig: i32) -> Tree {
        let tree = match (&self.reaped, &self.pidfd) {
            (None, Some(pidfd)) => table.descendants(self.pid as u32, pidfd),
            _ => Tree::default(),
        };
        tree.signal(sig);
        let _ = self.signal(sig);
        tree
    }

    /// A duplicate of the child's pidfd, to wait on without this handle's
    /// lock (see [`exited_by`]); `None` where there are no pidfds or once
    /// it is reaped.
    pub(crate) fn pidfd_for_waiting(&self) -> Option<OwnedFd> {
        match (&self.reaped, &self.pidfd) {
            (None, Some(fd)) => fd.try_clone().ok(),
            _ => None,
        }
    }

    /// Whether the child is neither reaped nor known to have exited.
    pub(crate) fn is_running(&self) -> bool {
        let now = Some(Instant::now());
        self.reaped.is_none() && self.pidfd.as_ref().is_none_or(|fd| !exited_by(fd, now))
    }

    /// Whether the child has stopped (job control: `SIGSTOP`) or exited,
    /// without waiting and without reaping it (its reader does that).
    pub(crate) fn stopped_or_gone(&self) -> bool {
        if self.reaped.is_some() {
            return true;
        }
        let by_pidfd = self
            .pidfd
            .as_ref()
            .map(|fd| (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t));
        // SAFETY: an all-zero `siginfo_t` is a valid value of this plain C
        // struct; waitid overwrites it or leaves `si_pid` zero.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT | libc::WNOHANG;
        for (idtype, id) in by_pidfd
            .into_iter()
            .chain([(libc::P_PID, self.pid as libc::id_t)])
        {
            // SAFETY: waitid writes one `siginfo_t`, which we own and
            // which lives across the call. WNOWAIT leaves the child's
            // state to be waited for again (by its reaper); WNOHANG
            // returns at once.
            if unsafe { libc::waitid(idtype, id, &mut info, flags) } == 0 {
                break;
            }
            match io::Error::last_os_error().raw_os_error() {
                // Reaped by someone else: gone.
                Some(libc::ECHILD) => return true,
                // A kernel with pidfds but without `P_PIDFD` (5.3): by pid.
                Some(libc::EINVAL) if idtype == libc::P_PIDFD => continue,
                _ => return false,
            }
        }
        // SAFETY: waitid succeeded, so `info` holds either nothing (all
        // zero: no state change yet) or a child's stop or exit, whose
        // `si_pid` field is the one set.
        unsafe { info.si_pid() != 0 }
    }

    /// Sends `sig` to the child, unless it was already reaped.
    pub(crate) fn signal(&mut self, sig: i32) -> io::Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        if let Some(pidfd) = &self.pidfd {
            return match send_via_pidfd(pidfd, sig) {
                // The child has exited (a zombie, or reaped by someone
                // else): there is nothing left to signal.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                other => other,
            };
        }
        // SAFETY: kill() takes two integers and touches no memory of ours.
        // `pid` is our child and we have not reaped it (checked above;
        // reaping takes `&mut self`). Only a reaper other than us (a
        // program that ignores SIGCHLD) could have freed the pid for
        // reuse; where there are pidfds that case takes the branch above.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the child to exit and reaps it (once: later calls return
    /// the same status).
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(r) = self.reaped {
                return r.map_err(io::Error::from_raw_os_error);
            }
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes one int into `status`, which we own
            // and which lives across the call.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                self.reaped = Some(Ok(ExitStatus::from_raw(status)));
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not our child (any more): someone else reaped it, so its
                // pid may be reused; never signal it again.
                Some(libc::ECHILD) => {
                    self.reaped = Some(Err(libc::ECHILD));
                    continue;
                }
                _ => return Err(e),
            }
        }
    }
}

/// Starts `cmd` (its program, arguments, environment changes and working
/// directory; `cmd` must use none of `env_clear`, `arg0`, `stdin`/`stdout`/
/// `stderr`, user or group changes, `process_group` or `pre_exec`) with:
/// stdin from `/dev/null`; stdout `/dev/null` if `stdout_null`, else
/// inherited; stderr inherited; each `(fd, n)` of `map` on descriptor `n`
/// (all `n` > 2 and distinct); and no other descriptor: the unmapped
/// numbers between 3 and the highest `n`, and everything above it, are
/// closed in the child. The parent's descriptors are left as they are.
pub(crate) fn spawn(
    cmd: &mut Command,
    stdout_null: bool,
    map: &[(BorrowedFd<'_>, RawFd)],
) -> io::Result<WorkerChild> {
    spawn_how(cmd, stdout_null, map, How::Fastest)
}

/// Which way [`spawn_how`] starts the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// `posix_spawn` when it can, else `fork`.
    Fastest,
    /// Always `Command::spawn` with a `pre_exec` hook (tests of the
    /// fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Fork,
}

fn spawn_how(
    cmd: &mut Command,
    stdout_null: bool,
    map: &[(BorrowedFd<'_>, RawFd)],
    how: How,
) -> io::Result<WorkerChild> {
    let last = map.iter().map(|&(_, n)| n).max().unwrap_or(2);
    for (i, &(_, n)) in map.iter().enumerate() {
        if n <= 2 || map[..i].iter().any(|&(_, m)| m == n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {n} cannot be mapped (stdio, or mapped twice)"),
            ));
        }
    }
    // Sources above the target range (see the module docs); closed here
    // when this function returns, and in the child by the final close.
    let copies = map
        .iter()
        .map(|&(fd, _)| dup_above(fd, last))
        .collect::<io::Result<Vec<OwnedFd>>>()?;
    let moves: Vec<(RawFd, RawFd)> = copies
        .iter()
        .zip(map)
        .map(|(c, &(_, n))| (c.as_raw_fd(), n))
        .collect();
    let holes: Vec<RawFd> = (3..last)
        .filter(|n| !map.iter().any(|&(_, m)| m == *n))
        .collect();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if how == How::Fastest {
        if let Some(result) = posix::spawn(cmd, stdout_null, &moves, &holes, last) {
            return result;
        }
    }
    let _ = how;
    fork_exec(cmd, stdout_null, moves, holes, last)
}

/// A close-on-exec copy of `fd` numbered above `last`.
fn dup_above(fd: BorrowedFd<'_>, last: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor that `fd` keeps open for the
    // call; it touches no memory of ours.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, last + 1) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The fallback: std's `fork` + `execve`, with the file actions done by a
/// `pre_exec` hook.
///
/// The hook does not close the descriptors the child must not keep: it
/// marks them close-on-exec, so that `execve` closes them. std reports an
/// `execve` failure to the parent through a close-on-exec pipe of its own,
/// which closing everything above `last` would close too, turning a
/// missing program into a child that silently exits. (That pipe can still
/// be lost when it happens to sit on a number in `3..=last` that is a
/// mapping target; then the failed child exits with status 1 and the
/// caller sees it end before its handshake.)
fn fork_exec(
    cmd: &mut Command,
    stdout_null: bool,
    moves: Vec<(RawFd, RawFd)>,
    holes: Vec<RawFd>,
    last: RawFd,
) -> io::Result<WorkerChild> {
    cmd.stdin(Stdio::null());
    if stdout_null {
        cmd.stdout(Stdio::null());
    }
    let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set, which we own.
    if unsafe { libc::sigemptyset(empty.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised just above.
    let empty = unsafe { empty.assume_init() };
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes `dup2`, `fcntl`,
    // `close_range` and `sigprocmask` calls on integers and on `empty`, and
    // reads `moves` and `holes`, which were allocated before the fork and
    // are not freed in the child; it takes no lock and does not allocate.
    // std has set up stdio before the hook runs, and the sources are all
    // above `last`, so no `dup2` overwrites a descriptor still needed.
    unsafe {
        cmd.pre_exec(move || {
            for &(from, to) in &moves {
                if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for &n in &holes {
                libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            cloexec_above(last);
            // std keeps the parent thread's signal mask; a worker starts
            // with none blocked (as with `posix_spawn` above).
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // `Child` has no descriptors of ours (no piped stdio) and dropping it
    // neither waits nor kills: the pid is all we keep.
    let pid =
        libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    Ok(WorkerChild::new(pid))
}

/// In the child before exec (fallback path): marks every descriptor above
/// `last` close-on-exec, so the program inherits nothing but what was
/// mapped, even from a parent (or a library, or a job runner) that left
/// descriptors without close-on-exec (Python's `close_fds=True`).
fn cloexec_above(last: RawFd) {
    let first = (last + 1) as libc::c_uint;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range on a range of integers; async-signal-safe.
        // CLOSE_RANGE_CLOEXEC (Linux 5.11+) only sets the flag.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            return;
        }
    }
    // Older kernels (and other Unixes): one by one up to a bound that
    // covers ordinary descriptor limits.
    for fd in first..65_536 {
        // SAFETY: fcntl on an integer; EBADF for unused ones is harmless.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[path = "child_posix.rs"]
mod posix;

#[cfg(all(test, target_os = "linux"))]
#[path = "child_tests.rs"]
mod tests;
