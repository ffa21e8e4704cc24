//! The process-fib workload's lowest floor: worker processes that share
//! memory with the parent, so that no task and no result crosses a pipe
//! and no parent thread stands between a worker and the waiting caller.
//!
//! The workers are this benchmark binary re-executed with
//! `--child-fib-shm K`, their stdin a memfd that every process maps. A run
//! writes the task count into the shared [`Board`] and bumps its epoch;
//! each worker claims task numbers with a `fetch_add`, runs `fib(K)` and
//! stores the value in the task's slot. The caller takes the values in
//! task order and sleeps on a futex only when the one it needs is not
//! there yet; a worker makes the `futex` wake call only when the caller
//! said it sleeps. So a task costs a worker four atomic operations and no
//! system call, and a result the caller already waits for costs one
//! wake-up: the caller's own, as in a thread pool. No real process pool can do with less: it would
//! still frame its tasks, keep futures, run callbacks and notice a dead
//! worker.
//!
//! A worker that dies makes the run panic (the caller's sleeps time out
//! and look at the children), never hang. A worker whose parent dies gets
//! `SIGKILL` (`PR_SET_PDEATHSIG`, which Linux sends when the *thread* that
//! started the worker ends: here the bench's main thread), and one whose
//! parent died before it asked exits when it sees a new parent pid.

use std::fs::File;
use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The row of this floor.
pub const SHARED_MEMORY: &str = "bare shared memory";
/// The argument that makes this binary a shared-memory floor worker.
pub const CHILD_FLAG: &str = "--child-fib-shm";

/// The most tasks one run can hold.
const MAX_TASKS: usize = 1024;
/// Marks a slot's value as written (fib values stay far below it).
const DONE: u64 = 1 << 63;

/// The memory the parent and its workers share.
#[repr(C)]
struct Board {
    /// Bumped to start a run; the workers sleep on it between runs.
    epoch: AtomicU32,
    /// Set (before the epoch is bumped) to make the workers exit.
    quit: AtomicU32,
    /// How many tasks this run has.
    tasks: AtomicU32,
    /// The next task number to claim.
    next: AtomicU32,
    /// Workers that have claimed past the end of this run.
    finished: AtomicU32,
    /// Bumped after each value is stored; the caller sleeps on it.
    results: AtomicU32,
    /// 1 while the caller sleeps, or is about to.
    caller_sleeps: AtomicU32,
    /// Each task's value, `DONE | value` once written.
    slots: [AtomicU64; MAX_TASKS],
}

/// The board, mapped.
struct Mapping(*const Board);

impl Mapping {
    /// Maps the board in `fd` (a memfd at least a `Board` long).
    fn map(fd: &File) -> Self {
        // SAFETY: a fresh shared mapping of an open descriptor; the result
        // is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Board>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping(p.cast())
    }

    fn board(&self) -> &Board {
        // SAFETY: the mapping is a `Board` long, page-aligned, lives until
        // `self` drops, and holds only atomics (all zero bits, a valid
        // value, when the memfd was made), which every process touches
        // through atomic operations alone.
        unsafe { &*self.0 }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no reference to it
        // outlives `self`.
        unsafe { libc::munmap(self.0 as *mut _, std::mem::size_of::<Board>()) };
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout`; returns whether
/// the time ran out.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 in shared memory, `ts` a live
    // timespec; a shared (not private) futex, as the waker is another
    // process. Spurious returns are harmless: every caller re-checks.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

/// Wakes every process sleeping on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE reads no memory.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Exits if the process that started this worker is gone.
fn exit_if_orphaned(parent: u32) {
    // SAFETY: getppid has no preconditions and cannot fail.
    if unsafe { libc::getppid() } as u32 != parent {
        std::process::exit(1);
    }
}

/// Serves runs on the board in stdin until the parent (pid `parent`) says
/// quit or dies.
pub fn serve(k: u64, parent: u32, fib: fn(u64) -> u64) -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes two integers and touches
    // no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    assert_eq!(r, 0, "prctl: {}", std::io::Error::last_os_error());
    // The parent may have died before the request.
    exit_if_orphaned(parent);
    // SAFETY: fd 0 is the memfd the parent gave as stdin, owned by nobody
    // else in this process from here on.
    let memfd = unsafe { File::from_raw_fd(0) };
    let mapping = Mapping::map(&memfd);
    let board = mapping.board();
    let mut seen = 0;
    loop {
        let epoch = board.epoch.load(Ordering::Acquire);
        if epoch == seen {
            if futex_wait(&board.epoch, epoch, Duration::from_secs(1)) {
                exit_if_orphaned(parent);
            }
            continue;
        }
        seen = epoch;
        if board.quit.load(Ordering::Acquire) != 0 {
            std::process::exit(0);
        }
        let tasks = board.tasks.load(Ordering::Acquire);
        loop {
            let t = board.next.fetch_add(1, Ordering::AcqRel);
            if t >= tasks {
                break;
            }
            let value = fib(black_box(k));
            // Published by the `results` bump that follows (a release).
            board.slots[t as usize].store(DONE | value, Ordering::Release);
            board.results.fetch_add(1, Ordering::SeqCst);
            // Pairs with the caller's store of `caller_sleeps` and load of
            // `results` before its last look at the slot: either that load
            // sees our bump (and the look sees the value), or we see that
            // it sleeps, and the bumped `results` stops its sleep from
            // starting on a stale count.
            if board.caller_sleeps.load(Ordering::SeqCst) != 0 {
                futex_wake(&board.results);
            }
        }
        board.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// A set of shared-memory floor workers, started once and used for every
/// repetition.
pub struct ShmWorkers {
    children: Vec<Child>,
    mapping: Mapping,
}

impl ShmWorkers {
    /// Starts `n` workers that each run `fib(k)` per task.
    pub fn start(n: usize, k: u64) -> Self {
        // SAFETY: a NUL-terminated name; the result is checked before use.
        let fd = unsafe { libc::memfd_create(c"cf-fib-board".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let memfd = unsafe { File::from_raw_fd(fd) };
        memfd
            .set_len(std::mem::size_of::<Board>() as u64)
            .expect("size the board");
        let mapping = Mapping::map(&memfd);
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let children = (0..n)
            .map(|_| {
                Command::new(&exe)
                    .args([CHILD_FLAG, &k.to_string(), &std::process::id().to_string()])
                    .stdin(Stdio::from(memfd.try_clone().expect("share the board")))
                    // Not the parent's stdout: a script reading it to its end
                    // must not wait for a worker.
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("start a shared-memory floor worker")
            })
            .collect();
        ShmWorkers { children, mapping }
    }

    /// Runs `tasks` tasks, the caller taking the values in task order;
    /// returns them and the time from the start to the last value taken.
    pub fn run(&mut self, tasks: usize) -> (Vec<u64>, Duration) {
        assert!(tasks <= MAX_TASKS, "at most {MAX_TASKS} tasks a run");
        let board = self.mapping.board();
        for slot in &board.slots[..tasks] {
            slot.store(0, Ordering::Relaxed);
        }
        board.next.store(0, Ordering::Relaxed);
        board.finished.store(0, Ordering::Relaxed);
        board.tasks.store(tasks as u32, Ordering::Relaxed);
        let t = Instant::now();
        board.epoch.fetch_add(1, Ordering::Release);
        futex_wake(&board.epoch);
        let mut values = Vec::with_capacity(tasks);
        for slot in &board.slots[..tasks] {
            loop {
                let v = slot.load(Ordering::Acquire);
                if v & DONE != 0 {
                    values.push(v & !DONE);
                    break;
                }
                board.caller_sleeps.store(1, Ordering::SeqCst);
                let seen = board.results.load(Ordering::SeqCst);
                if slot.load(Ordering::SeqCst) & DONE == 0
                    && futex_wait(&board.results, seen, Duration::from_millis(200))
                {
                    check_alive(&mut self.children);
                }
                board.caller_sleeps.store(0, Ordering::Relaxed);
            }
        }
        let elapsed = t.elapsed();
        // Every worker claims past the end before the next run resets the
        // board (outside the timing).
        let mut spins = 0u32;
        while board.finished.load(Ordering::Acquire) < self.children.len() as u32 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                check_alive(&mut self.children);
            }
            std::thread::yield_now();
        }
        (values, elapsed)
    }
}

/// Panics if a worker has exited.
fn check_alive(children: &mut [Child]) {
    for child in children {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("a shared-memory floor worker died: {status}");
        }
    }
}

impl Drop for ShmWorkers {
    fn drop(&mut self) {
        let board = self.mapping.board();
        board.quit.store(1, Ordering::Release);
        board.epoch.fetch_add(1, Ordering::Release);
        futex_wake(&board.epoch);
        for mut child in self.children.drain(..) {
            let _ = child.wait();
        }
    }
}
