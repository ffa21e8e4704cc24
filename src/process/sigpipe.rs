//! Writes to a pipe whose reader may be gone, without SIGPIPE.
//!
//! A write to a pipe that has no reader left fails with EPIPE and also
//! raises SIGPIPE at the thread that wrote. Rust programs ignore SIGPIPE
//! from the start, but a program may set it back to its default action
//! (command-line tools do, to end quietly under `| head`); then a worker
//! that dies while the parent writes to it, or a channel whose receivers
//! are gone, would kill the whole parent. Pipes have no `MSG_NOSIGNAL`,
//! so the signal is held off instead: blocked on the writing thread while
//! it writes, and a SIGPIPE the write raised taken off the thread's
//! pending set before the block is lifted. A signal raised by a write is
//! directed at the writing thread alone: no other thread is touched.
//!
//! That costs two system calls a write: fine for a channel or a
//! `Process`'s start, too much for a pool's task messages, whose pipes
//! never lack a reader instead (see `outbox`). A pool's writer threads
//! block SIGPIPE for their whole life ([`block_for_this_thread`]): a
//! signal still pending on a thread when it exits is discarded with it.

use std::io;
use std::mem::MaybeUninit;

/// The signal set holding SIGPIPE alone.
fn sigpipe_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set it is given, and sigaddset
    // adds a valid signal number to that initialized set; neither can fail
    // with these arguments.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}

/// Changes this thread's signal mask by `how` for SIGPIPE; whether
/// SIGPIPE was blocked before.
fn mask(how: libc::c_int) -> bool {
    let set = sigpipe_set();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is an initialized set, and `old` is initialized (empty)
    // before pthread_sigmask writes the previous mask into it; `how` is one
    // of SIG_BLOCK and SIG_UNBLOCK, so the call cannot fail.
    unsafe {
        libc::sigemptyset(old.as_mut_ptr());
        libc::pthread_sigmask(how, &set, old.as_mut_ptr());
        libc::sigismember(old.as_ptr(), libc::SIGPIPE) == 1
    }
}

/// Takes a SIGPIPE pending on this thread (or the process) off the
/// pending set, if there is one; never waits.
fn discard_pending() {
    let set = sigpipe_set();
    let none = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid set, no info wanted (null is allowed), and a zero
    // timeout: it returns at once, with the signal or EAGAIN.
    unsafe {
        libc::sigtimedwait(&set, std::ptr::null_mut(), &none);
    }
}

/// Runs `write` with SIGPIPE held off this thread (see the module): a
/// write that finds the pipe's reader gone fails with EPIPE
/// ([`io::ErrorKind::BrokenPipe`]) and raises nothing.
pub(crate) fn held_off<T>(write: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let was_blocked = mask(libc::SIG_BLOCK);
    let result = write();
    // Any error, not just EPIPE: a caller may have wrapped it.
    if result.is_err() {
        discard_pending();
    }
    if !was_blocked {
        mask(libc::SIG_UNBLOCK);
    }
    result
}

/// Blocks SIGPIPE on this thread for the rest of its life: for a thread of
/// the pool's own that writes to a worker (see the module).
pub(crate) fn block_for_this_thread() {
    mask(libc::SIG_BLOCK);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Whether SIGPIPE is pending on this thread.
    fn pending() -> bool {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given.
        unsafe {
            libc::sigpending(set.as_mut_ptr());
            libc::sigismember(set.as_ptr(), libc::SIGPIPE) == 1
        }
    }

    /// A write to a pipe whose reader is gone, held off: EPIPE, no
    /// SIGPIPE left pending, and the thread's mask as it was. (This test
    /// process ignores SIGPIPE, as Rust programs do; a blocked signal is
    /// queued even so, which is what the check of the pending set sees.)
    #[test]
    fn a_held_off_write_to_a_closed_pipe_fails_with_epipe_and_leaves_no_sigpipe() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned here.
        let (r, w) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        drop(r);
        let outcome = std::thread::spawn(move || {
            let result = held_off(|| (&w).write(b"x"));
            let kind = result.map_err(|e| e.kind());
            // Blocked now: a SIGPIPE raised by a write would stay pending.
            let was_blocked = mask(libc::SIG_BLOCK);
            let left = pending();
            (kind, was_blocked, left)
        })
        .join()
        .unwrap();
        assert_eq!(outcome, (Err(io::ErrorKind::BrokenPipe), false, false));
    }
}
