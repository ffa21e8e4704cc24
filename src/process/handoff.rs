//! Who reads a worker's results: its reader thread, or a caller waiting for
//! one of them.
//!
//! # Why
//!
//! Each worker has a reader thread in the parent (see [`super::link`]).
//! When the reader did all the reading, a result that a caller was blocked
//! on cost two wake-ups in the parent: the worker's write woke the reader,
//! and the reader, completing the future, woke the caller. On a machine
//! whose cores are all busy running workers, both take a worker's CPU.
//! Measured with `cargo bench --bench fib_breakdown` (64 × `fib(27)` on 2
//! workers), the reader threads used 12–18 µs of CPU per task, half of the
//! process pool's overhead over the thread pool's.
//!
//! So a caller that blocks on a future whose task a worker holds reads
//! that worker's results itself while it waits, and the worker's reader
//! thread stands by: the worker's write wakes the caller directly, and
//! nobody else. A worker's death, and whatever comes while no caller
//! waits, are still the reader's. The caller reads at once when the
//! pool's tasks are long, and after its usual short spin otherwise (see
//! [`read_while_waiting`]): a short task's result is cheapest caught by
//! the spin while the reader reads it, with nobody asleep.
//!
//! # How the right thread wakes
//!
//! Nothing has to be told when a caller comes or goes; the kernel picks
//! the thread. The worker's result pipe is watched by two epoll sets, both
//! with `EPOLLEXCLUSIVE`: the caller set, registered first, and the reader
//! set. Linux wakes exclusive waiters in the order they were registered,
//! and passes over a set with no thread waiting in it. So a write (or the
//! end of the pipe) wakes the caller if one waits in the caller set, and
//! the reader thread only if none does.
//!
//! A lock, [`Handoff::side`], says who reads: the reader thread takes it
//! after each wake-up; a caller tries to take it before it waits, and
//! waits in the ordinary way if it cannot (the reader or another caller is
//! reading). A wake-up that reaches the reader while a caller holds the
//! lock (the caller was between two waits) finds the results read when the
//! lock comes free. A caller that sees the pipe end leaves the winding-up
//! to the reader thread and wakes it with [`Handoff::kick_reader`].
//!
//! Nobody blocks in `read` on the pipe: it is non-blocking, and the rest of
//! a frame that is only partly written is waited for with `poll`
//! ([`PatientPipe`]). Pipe readers blocked in `read` wait as exclusive
//! waiters queued behind the two sets, and a write that finds a thread
//! waiting in a set wakes that set instead (found by the 100 MB round trip
//! test: the caller blocked reading the rest of a frame, the reader thread
//! woken in its place, waiting for the caller's lock). `poll` waits as an
//! ordinary waiter, which every write wakes.
//!
//! The reader's mark for the stops of [`super::freeze`] is kept by
//! whoever holds the lock, in the same way: lowered before reading,
//! raised once everything read is handled, a deferred stop settled then.
//!
//! Elsewhere than Linux there is no exclusive wake-up, and the reader
//! thread does all the reading, as before.

use std::io;
use std::os::fd::{AsFd, RawFd};
use std::sync::Weak;
use std::time::Instant;

use super::freeze::ReaderMark;
use super::link::ReadSide;
use super::pool::Shared;
use crate::sync::{Arc, Mutex, lock};

/// One worker's results: who reads them, and the waits that decide it.
pub(crate) struct Handoff {
    /// Whoever holds this reads the pipe (see the module docs).
    pub(crate) side: Mutex<ReadSide>,
    waits: Waits,
}

impl Handoff {
    /// Sets up the waits on `fd`, the read end of the worker's result pipe
    /// (which `side` reads).
    pub(crate) fn new(side: ReadSide, fd: RawFd) -> io::Result<Self> {
        Ok(Handoff {
            side: Mutex::new(side),
            waits: Waits::new(fd)?,
        })
    }

    /// The reader thread: blocks until the pipe has something for it (no
    /// caller waits for it) or a caller kicked it. Returns whether the
    /// pipe said it has something (not only a kick).
    pub(crate) fn reader_wait(&self) -> bool {
        self.waits.reader_wait()
    }

    /// A caller holding [`side`](Self::side): blocks until the pipe has
    /// something (`true`), or until `deadline`.
    pub(crate) fn caller_wait(&self, deadline: Option<Instant>) -> bool {
        self.waits.caller_wait(deadline)
    }

    /// Wakes the reader thread (a caller saw the pipe end).
    pub(crate) fn kick_reader(&self) {
        self.waits.kick();
    }
}

/// The read end of a worker's result pipe, non-blocking, read as if it
/// were blocking: a read that finds the pipe empty waits for it with
/// `poll` (see the module docs), so a frame that has begun is read to its
/// end.
pub(crate) struct PatientPipe(std::fs::File);

impl PatientPipe {
    pub(crate) fn new(file: std::fs::File) -> io::Result<Self> {
        super::os::set_nonblocking(file.as_fd())?;
        Ok(PatientPipe(file))
    }

    pub(crate) fn get_ref(&self) -> &std::fs::File {
        &self.0
    }
}

impl io::Read for PatientPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    super::os::poll_readable(self.0.as_fd(), None)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

#[cfg(target_os = "linux")]
use linux::Waits;

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::Instant;

    /// The tag of the pipe's events.
    const PIPE: u64 = 0;
    /// The tag of the kick eventfd's events in the reader set.
    const KICK: u64 = 1;

    pub(crate) struct Waits {
        caller: OwnedFd,
        reader: OwnedFd,
        kick: OwnedFd,
    }

    impl Waits {
        pub(crate) fn new(fd: RawFd) -> io::Result<Self> {
            // The caller set first: exclusive waiters wake in the order
            // their sets were added to the pipe.
            let caller = epoll()?;
            add(&caller, fd, libc::EPOLLEXCLUSIVE, PIPE)?;
            let reader = epoll()?;
            add(&reader, fd, libc::EPOLLEXCLUSIVE, PIPE)?;
            // SAFETY: no pointers; the result is checked before use.
            let kick = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if kick < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `kick` was just opened and belongs to nobody else.
            let kick = unsafe { OwnedFd::from_raw_fd(kick) };
            add(&reader, kick.as_raw_fd(), 0, KICK)?;
            Ok(Waits {
                caller,
                reader,
                kick,
            })
        }

        pub(crate) fn reader_wait(&self) -> bool {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
            let n = wait(&self.reader, None, &mut events);
            let ready = &events[..n];
            if ready.iter().any(|e| e.u64 == KICK) {
                let mut count = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
                // The eventfd is non-blocking; a failed read means another
                // wake-up already cleared it.
                unsafe { libc::read(self.kick.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            }
            ready.iter().any(|e| e.u64 == PIPE)
        }

        pub(crate) fn caller_wait(&self, deadline: Option<Instant>) -> bool {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
            wait(&self.caller, deadline, &mut events) > 0
        }

        pub(crate) fn kick(&self) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live 8-byte buffer. It fails only
            // if the counter is about to overflow, when the reader is
            // certainly awake already.
            unsafe { libc::write(self.kick.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }

    fn epoll() -> io::Result<OwnedFd> {
        // SAFETY: no pointers; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and belongs to nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn add(set: &OwnedFd, fd: RawFd, flags: libc::c_int, tag: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | flags) as u32,
            u64: tag,
        };
        // SAFETY: `event` is a live epoll_event for the call; both fds are
        // open (the pipe is owned by the `ReadSide` beside these sets).
        let r = unsafe { libc::epoll_ctl(set.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits in `set` until something is ready or `deadline` passes;
    /// returns how many `events` it filled.
    fn wait<const N: usize>(
        set: &OwnedFd,
        deadline: Option<Instant>,
        events: &mut [libc::epoll_event; N],
    ) -> usize {
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Rounded up, so that a short wait does not spin.
                    libc::c_int::try_from(left.as_nanos().div_ceil(1_000_000))
                        .unwrap_or(libc::c_int::MAX)
                }
            };
            // SAFETY: `events` is a live array of N epoll_event structs.
            let n = unsafe { libc::epoll_wait(set.as_raw_fd(), events.as_mut_ptr(), N as i32, ms) };
            if n >= 0 {
                return n as usize;
            }
            // EINTR: wait again. Nothing else can fail on a valid set and
            // buffer; if it did, returning lets the caller look again.
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return 0;
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
use other::Waits;

#[cfg(not(target_os = "linux"))]
mod other {
    use std::io;
    use std::os::fd::{BorrowedFd, RawFd};
    use std::time::Instant;

    /// Only the reader thread reads (no pool is registered for callers):
    /// it waits on the pipe itself.
    pub(crate) struct Waits {
        fd: RawFd,
    }

    impl Waits {
        pub(crate) fn new(fd: RawFd) -> io::Result<Self> {
            Ok(Waits { fd })
        }

        pub(crate) fn reader_wait(&self) -> bool {
            // SAFETY: the pipe stays open as long as the `ReadSide` beside
            // these waits, which outlives every wait.
            let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
            crate::process::os::poll_readable(fd, None).unwrap_or(false)
        }

        pub(crate) fn caller_wait(&self, _deadline: Option<Instant>) -> bool {
            false
        }

        pub(crate) fn kick(&self) {}
    }
}

/// The process pools, by id, for [`read_while_waiting`]: a future records
/// only its pool's id.
static POOLS: std::sync::RwLock<Vec<(u64, Weak<Shared>)>> = std::sync::RwLock::new(Vec::new());

/// Whether a process pool was ever registered: until then, a wait on any
/// future skips the registry.
static ANY_POOL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes `shared`'s tasks readable by their waiting callers (on Linux; see
/// the module docs).
pub(crate) fn register(shared: &Arc<Shared>) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let mut pools = POOLS.write().unwrap_or_else(|e| e.into_inner());
    pools.retain(|(_, pool)| pool.strong_count() > 0);
    pools.push((shared.id, Arc::downgrade(shared)));
    ANY_POOL.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// What a caller needs to read one worker's results.
pub(crate) struct LinkReading {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) handoff: Arc<Handoff>,
    pub(crate) mark: Arc<ReaderMark>,
}

/// A thread about to block on the future whose core is at `core`, of the
/// executor with id `pool`: if that is a process pool and one of its
/// workers holds the task, reads that worker's results until the future
/// is `ready` or `deadline` passes (see the module docs). Returns whether
/// it is ready, or `None` if this thread did not read (not a process
/// pool's task, not sent to a worker yet, or somebody else reads there):
/// it then waits in the ordinary way.
///
/// `before_spin`: the caller has not spun yet. It reads then only if the
/// pool's last task to finish was long: a short task's result is best caught by
/// the spin while the reader thread reads it, with nobody asleep (a
/// caller reading at once sleeps in `epoll_wait` and must be woken:
/// process latency went from 15–19 to 51 µs). A spin, for its part,
/// yields to the busy workers and rarely ends before a long task does.
pub(crate) fn read_while_waiting(
    pool: u64,
    core: usize,
    before_spin: bool,
    deadline: Option<Instant>,
    ready: &dyn Fn() -> bool,
) -> Option<bool> {
    if !ANY_POOL.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let shared = {
        let pools = POOLS.read().unwrap_or_else(|e| e.into_inner());
        pools.iter().find(|(id, _)| *id == pool)?.1.upgrade()?
    };
    if before_spin && !shared.long_tasks.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let link = {
        let st = lock(&shared.state);
        // A `kill_on_cancel` pool's future may end with no word from its
        // worker (cancelled while it runs), which would not wake a caller
        // waiting on the pipe.
        if st.stop_on_cancel.is_some() || !super::own_thread::may_stand_in(&st) {
            return None;
        }
        let link = st
            .links
            .iter()
            .find(|l| l.in_flight.iter().any(|p| p.job.core_addr() == core))?;
        LinkReading {
            id: link.id,
            pid: link.pid,
            handoff: link.handoff.clone(),
            mark: link.reader_mark.clone(),
        }
    };
    super::link::read_for_caller(&shared, &link, deadline, ready)
}
