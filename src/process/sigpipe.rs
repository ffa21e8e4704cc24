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
//! That costs two system calls a write, too much for a pool's task
//! messages, which the worker's reader thread writes after each result.
//! So the pool's own threads that write to workers (readers, writers,
//! the supervisor) block SIGPIPE for their whole life
//! ([`block_for_this_thread`]), and their writes only take a SIGPIPE they
//! raised off the pending set. Those threads also run user code, the
//! done-callbacks of the futures they complete: that runs with SIGPIPE
//! unblocked ([`as_user_code`]), so that a callback's write to a broken
//! pipe does what the program asked for (found by review). Any other
//! thread (a user's thread calling `shutdown`, say) holds SIGPIPE off
//! around the write.

use std::cell::Cell;
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

thread_local! {
    /// This thread is one of the pool's and blocks SIGPIPE (outside user
    /// code).
    static BLOCKED_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `write` with SIGPIPE held off this thread (see the module): a
/// write that finds the pipe's reader gone fails with EPIPE
/// ([`std::io::ErrorKind::BrokenPipe`]) and raises nothing.
pub(crate) fn held_off<T, E>(write: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    if BLOCKED_HERE.get() {
        let result = write();
        if result.is_err() {
            discard_pending();
        }
        return result;
    }
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

/// Blocks SIGPIPE on this thread for the rest of its life, but in user
/// code: for a thread of the pool's own that writes to workers (see the
/// module).
pub(crate) fn block_for_this_thread() {
    mask(libc::SIG_BLOCK);
    BLOCKED_HERE.set(true);
}

/// Runs `run`, user code, with SIGPIPE as the program has it, on a thread
/// that blocks it otherwise (see the module); elsewhere just runs it. A
/// SIGPIPE pending here was raised by one of the pool's writes: it is
/// discarded first, not delivered to the program.
pub(crate) fn as_user_code<R>(run: impl FnOnce() -> R) -> R {
    if !BLOCKED_HERE.get() {
        return run();
    }
    /// Blocks SIGPIPE again, also if `run` unwinds.
    struct Reblock;
    impl Drop for Reblock {
        fn drop(&mut self) {
            mask(libc::SIG_BLOCK);
            BLOCKED_HERE.set(true);
        }
    }
    discard_pending();
    BLOCKED_HERE.set(false);
    mask(libc::SIG_UNBLOCK);
    let _reblock = Reblock;
    run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
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

    /// Whether SIGPIPE is blocked on this thread.
    fn blocked() -> bool {
        let was = mask(libc::SIG_BLOCK);
        if !was {
            mask(libc::SIG_UNBLOCK);
        }
        was
    }

    /// A closed pipe's write end: a write to it fails with EPIPE.
    fn broken_pipe() -> std::fs::File {
        let (r, w) = io::pipe().unwrap();
        drop(r);
        std::fs::File::from(std::os::fd::OwnedFd::from(w))
    }

    /// On a pool thread: a write's SIGPIPE is taken off the pending set
    /// even with SIGPIPE blocked for good, user code runs with it
    /// unblocked and nothing pending, and the block is back after it, also
    /// when user code panics.
    #[test]
    fn a_pool_thread_blocks_sigpipe_except_in_user_code() {
        use std::io::Write;
        std::thread::spawn(|| {
            block_for_this_thread();
            let w = broken_pipe();
            let r = held_off(|| (&w).write(b"x"));
            assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::BrokenPipe));
            assert!(!pending(), "held_off left a SIGPIPE pending");
            // A write outside held_off leaves one pending: user code must
            // not get it.
            let _ = (&w).write(b"x");
            assert!(pending());
            let inside = as_user_code(|| (blocked(), pending()));
            assert_eq!(inside, (false, false));
            assert!(blocked(), "blocked again after user code");
            let unwound = std::panic::catch_unwind(|| as_user_code(|| panic!("user code")));
            assert!(unwound.is_err());
            assert!(blocked(), "blocked again after user code that panicked");
        })
        .join()
        .unwrap();
    }
}
