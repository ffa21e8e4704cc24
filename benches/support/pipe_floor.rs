//! The process-fib workload's floors: the same tasks over the barest
//! transport a process pool can have, so that a run shows how much of
//! the process pool's gap to the thread pool is ours and how much is the
//! host's price for moving each result between processes.
//!
//! The workers are this benchmark binary re-executed with
//! `--child-fib-pipe K`: each reads a task number (8 bytes) from its
//! stdin, runs `fib(K)` and writes the number and the value (16 bytes)
//! to its stdout. No framing, no codec, no futures, no callbacks, no
//! supervision: nothing a real pool could do without. The parent keeps
//! `PREFETCH` tasks in each worker's pipe, as our pool does by default,
//! and hands a worker its next task when a result comes back. A worker
//! that dies makes the run panic, never hang.
//!
//! Two ways to receive the results, one row each:
//!
//! * [`READER_PER_WORKER`]: one parent thread per worker blocks reading
//!   its pipe, records the result and wakes the caller, which waits for
//!   the results in order. This is our process pool's design (and
//!   CPython's, which has one result thread for all workers): a parent
//!   thread wakes for every result, on a machine whose cores are all busy
//!   running workers.
//! * [`CALLER_READS`]: no parent threads at all; the caller `poll`s every
//!   worker's pipe itself. The best case of any design that does without
//!   a parent thread between a worker and a waiting caller (a leader /
//!   follower reader, results in shared memory): one wake-up per result,
//!   the caller's own.
//! * [`STANDBY_READERS`]: a reader thread per worker stands by, and the
//!   caller, while it waits, reads every pipe itself. Each pipe is watched
//!   by two epoll sets, both `EPOLLEXCLUSIVE`: the caller's, registered
//!   first, and its reader's. A write wakes only the first set that has a
//!   thread waiting in it, so the reader wakes only when the caller is not
//!   waiting; a lock per pipe says who may read it. This is the design
//!   that would take the parent thread out from between a worker and a
//!   waiting caller while keeping a reader for everything else (results
//!   nobody waits for, a worker's death).

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The row whose results each reach the caller through a parent thread.
pub const READER_PER_WORKER: &str = "bare pipes, a reader thread each";
/// The row whose caller reads the workers' pipes itself.
pub const CALLER_READS: &str = "bare pipes, the caller reads";
/// The row whose waiting caller reads, reader threads standing by.
pub const STANDBY_READERS: &str = "bare pipes, standby readers";
/// The argument that makes this binary a floor worker.
pub const CHILD_FLAG: &str = "--child-fib-pipe";

/// Tasks kept in each worker's pipe: our process pool's default prefetch.
const PREFETCH: usize = 2;

/// Serves tasks on stdin/stdout until the parent closes stdin.
pub fn serve(k: u64, fib: fn(u64) -> u64) -> ! {
    let mut input = std::io::stdin().lock();
    // Rust's stdout is line-buffered: a reply holding the byte 0x0a would
    // go out in two writes. A `File` on the same pipe writes each at once.
    let mut output = File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .expect("a floor worker's stdout"),
    );
    let mut task = [0u8; 8];
    while input.read_exact(&mut task).is_ok() {
        let value = fib(black_box(k));
        let mut reply = [0u8; 16];
        reply[..8].copy_from_slice(&task);
        reply[8..].copy_from_slice(&value.to_le_bytes());
        if output.write_all(&reply).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

/// The parent's ends of one worker's pipes.
struct Pipes {
    to: ChildStdin,
    from: ChildStdout,
}

impl Pipes {
    fn send(&mut self, task: usize) {
        send(&self.to, task);
    }

    /// The next result (task number, value), or `None` if the worker is
    /// gone.
    fn receive(&mut self) -> Option<(usize, u64)> {
        receive(&mut self.from)
    }
}

/// Writes task number `task` to a worker. Through a shared reference: in
/// [`PipeWorkers::run_with_readers`] the caller and the worker's reader
/// both send to it. Each write is 8 bytes, under `PIPE_BUF`, so two never
/// interleave.
fn send(mut to: &ChildStdin, task: usize) {
    to.write_all(&(task as u64).to_le_bytes())
        .expect("a floor worker takes its task");
}

/// The next result (task number, value) from a worker, or `None` if the
/// worker is gone.
fn receive(from: &mut ChildStdout) -> Option<(usize, u64)> {
    let mut reply = [0u8; 16];
    from.read_exact(&mut reply).ok()?;
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
    Some((word(&reply[..8]) as usize, word(&reply[8..])))
}

/// A set of floor workers, started once and used for every repetition.
pub struct PipeWorkers {
    children: Vec<Child>,
    pipes: Vec<Pipes>,
}

impl PipeWorkers {
    /// Starts `n` workers that each run `fib(k)` per task.
    pub fn start(n: usize, k: u64) -> Self {
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let mut children = Vec::new();
        let mut pipes = Vec::new();
        for _ in 0..n {
            let mut child = Command::new(&exe)
                .args([CHILD_FLAG, &k.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a floor worker");
            pipes.push(Pipes {
                to: child.stdin.take().unwrap(),
                from: child.stdout.take().unwrap(),
            });
            children.push(child);
        }
        PipeWorkers { children, pipes }
    }

    /// Runs `tasks` tasks with a reader thread per worker, the caller
    /// waiting for the results in task order (as the workload's caller
    /// does with its futures); returns them and the time from the start of
    /// the first send to the last result taken. The reader threads are
    /// started and waiting before the clock starts, as a pool's readers
    /// are. The caller sends every worker's first tasks itself, right after
    /// the clock starts, as our pool's `submit` does and as the other two
    /// floors do: had the readers sent them, the clock would also count
    /// their wake-up from the start barrier, which no pool pays. Each
    /// reader then sends its worker's next task when a result comes back.
    pub fn run_with_readers(&mut self, tasks: usize) -> (Vec<u64>, Duration) {
        let workers = self.pipes.len();
        // The first tasks, numbered in advance (task `t` to worker
        // `t % workers`), so that each reader knows how many its worker
        // holds before any result comes back; the readers number the rest.
        let first = tasks.min(PREFETCH * workers);
        let go = Barrier::new(workers + 1);
        let next = AtomicUsize::new(first);
        let slots = Mutex::new(vec![None; tasks]);
        let filled = Condvar::new();
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            let mut senders: Vec<&ChildStdin> = Vec::with_capacity(workers);
            for (w, pipes) in self.pipes.iter_mut().enumerate() {
                let Pipes { to, from } = pipes;
                let to: &ChildStdin = to;
                senders.push(to);
                let mut held = (w..first).step_by(workers).count();
                let (go, next, slots, filled, failed) = (&go, &next, &slots, &filled, &failed);
                s.spawn(move || {
                    go.wait();
                    while held > 0 {
                        let Some((task, value)) = receive(from) else {
                            // Set under the lock, so that the caller cannot
                            // miss it between its look and its wait.
                            let _g = slots.lock().unwrap();
                            failed.store(true, Ordering::Relaxed);
                            filled.notify_all();
                            return;
                        };
                        held -= 1;
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        if t < tasks {
                            send(to, t);
                            held += 1;
                        }
                        slots.lock().unwrap()[task] = Some(value);
                        filled.notify_all();
                    }
                });
            }
            go.wait();
            let t = Instant::now();
            for task in 0..first {
                send(senders[task % workers], task);
            }
            let mut values = Vec::with_capacity(tasks);
            for task in 0..tasks {
                let mut g = slots.lock().unwrap();
                loop {
                    if let Some(v) = g[task] {
                        values.push(v);
                        break;
                    }
                    assert!(!failed.load(Ordering::Relaxed), "a floor worker died");
                    g = filled.wait(g).unwrap();
                }
            }
            (values, t.elapsed())
        })
    }

    /// Runs `tasks` tasks with the caller polling every worker's pipe;
    /// returns the values in task order and the time taken.
    pub fn run_caller_reads(&mut self, tasks: usize) -> (Vec<u64>, Duration) {
        let t = Instant::now();
        let mut next = 0;
        for _ in 0..PREFETCH {
            for w in &mut self.pipes {
                if next < tasks {
                    w.send(next);
                    next += 1;
                }
            }
        }
        let mut slots = vec![None; tasks];
        let mut fds: Vec<libc::pollfd> = self
            .pipes
            .iter()
            .map(|w| libc::pollfd {
                fd: w.from.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut received = 0;
        while received < tasks {
            // SAFETY: `fds` is a live, initialised array of `fds.len()`
            // pollfd structs, each naming a pipe this set owns.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            assert!(ready > 0, "poll: {}", std::io::Error::last_os_error());
            for (w, fd) in self.pipes.iter_mut().zip(&mut fds) {
                let events = std::mem::take(&mut fd.revents);
                if events & libc::POLLIN != 0 {
                    let (task, value) = w.receive().expect("a floor worker died");
                    slots[task] = Some(value);
                    received += 1;
                    if next < tasks {
                        w.send(next);
                        next += 1;
                    }
                } else if events & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    panic!("a floor worker died");
                }
            }
        }
        let elapsed = t.elapsed();
        let values = slots
            .into_iter()
            .map(|v| v.expect("every task answered"))
            .collect();
        (values, elapsed)
    }
}

impl PipeWorkers {
    /// Runs `tasks` tasks with a reader thread per worker standing by and
    /// the caller reading every pipe itself while it waits (see
    /// [`STANDBY_READERS`]); returns the values in task order and the time
    /// taken.
    pub fn run_standby_readers(&mut self, tasks: usize) -> (Vec<u64>, Duration) {
        let fds: Vec<RawFd> = self.pipes.iter().map(|p| p.from.as_raw_fd()).collect();
        // The caller's set is registered on every pipe before any reader's:
        // exclusive waiters are woken in the order they were added.
        let caller_set = Epoll::new();
        for &fd in &fds {
            caller_set.add(fd, libc::EPOLLEXCLUSIVE);
        }
        let quit = EventFd::new();
        let reader_sets: Vec<Epoll> = fds
            .iter()
            .map(|&fd| {
                let set = Epoll::new();
                set.add(fd, libc::EPOLLEXCLUSIVE);
                set.add(quit.0.as_raw_fd(), 0);
                set
            })
            .collect();
        let sides: Vec<Mutex<Side<'_>>> = self
            .pipes
            .iter_mut()
            .map(|pipes| Mutex::new(Side { pipes, held: 0 }))
            .collect();
        let go = Barrier::new(sides.len() + 1);
        let next = AtomicUsize::new(0);
        let all_in = AtomicBool::new(false);
        let slots = Mutex::new(vec![None; tasks]);
        let filled = Condvar::new();
        let shared = Standby {
            tasks,
            next: &next,
            slots: &slots,
            filled: &filled,
        };
        std::thread::scope(|s| {
            for (side, set) in sides.iter().zip(&reader_sets) {
                let (go, all_in, shared) = (&go, &all_in, &shared);
                s.spawn(move || {
                    go.wait();
                    while !all_in.load(Ordering::Acquire) {
                        set.wait();
                        shared.drain(&mut side.lock().unwrap(), true);
                    }
                });
            }
            go.wait();
            let t = Instant::now();
            for _ in 0..PREFETCH {
                for side in &sides {
                    shared.send_next(&mut side.lock().unwrap());
                }
            }
            let mut values = Vec::with_capacity(tasks);
            for task in 0..tasks {
                loop {
                    if let Some(v) = slots.lock().unwrap()[task] {
                        values.push(v);
                        break;
                    }
                    let held: Vec<_> = sides.iter().filter_map(|s| s.try_lock().ok()).collect();
                    if held.len() == sides.len() {
                        let mut held = held;
                        loop {
                            for side in &mut held {
                                shared.drain(side, false);
                            }
                            if slots.lock().unwrap()[task].is_some() {
                                break;
                            }
                            caller_set.wait();
                        }
                    } else {
                        // A reader is reading: it fills the slot and wakes us.
                        drop(held);
                        let g = slots.lock().unwrap();
                        if g[task].is_none() {
                            drop(filled.wait(g).unwrap());
                        }
                    }
                }
            }
            let elapsed = t.elapsed();
            all_in.store(true, Ordering::Release);
            quit.signal();
            (values, elapsed)
        })
    }
}

/// One worker's pipes and how many tasks it holds, under the lock that
/// says who may read its results.
struct Side<'a> {
    pipes: &'a mut Pipes,
    held: usize,
}

/// What the standby run's threads share.
struct Standby<'a> {
    tasks: usize,
    next: &'a AtomicUsize,
    slots: &'a Mutex<Vec<Option<u64>>>,
    filled: &'a Condvar,
}

impl Standby<'_> {
    fn send_next(&self, side: &mut Side<'_>) {
        let t = self.next.fetch_add(1, Ordering::Relaxed);
        if t < self.tasks {
            side.pipes.send(t);
            side.held += 1;
        }
    }

    /// Takes every result waiting in `side`'s pipe; a reader (`notify`)
    /// wakes the caller for each.
    fn drain(&self, side: &mut Side<'_>, notify: bool) {
        while side.held > 0 && readable(side.pipes.from.as_raw_fd()) {
            let (task, value) = side.pipes.receive().expect("a floor worker died");
            side.held -= 1;
            self.send_next(side);
            self.slots.lock().unwrap()[task] = Some(value);
            if notify {
                self.filled.notify_all();
            }
        }
    }
}

/// Whether `fd` can be read without blocking (or has hung up).
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live, initialised pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    n > 0
}

/// An epoll set.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> Self {
        // SAFETY: no pointers; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(
            fd >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Epoll(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn add(&self, fd: RawFd, flags: libc::c_int) {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | flags) as u32,
            u64: fd as u64,
        };
        // SAFETY: `event` is a live epoll_event; both fds are open.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        assert_eq!(r, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }

    /// Blocks until something in the set is ready.
    fn wait(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: `events` is a live array of 4 epoll_event structs.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), 4, -1) };
            if n >= 0 {
                return;
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "epoll_wait: {e}");
        }
    }
}

/// An eventfd that, once signalled, stays readable.
struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> Self {
        // SAFETY: no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just opened and is owned by nobody else.
        EventFd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live 8-byte buffer.
        let n = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) };
        assert_eq!(n, 8, "eventfd write: {}", std::io::Error::last_os_error());
    }
}

impl Drop for PipeWorkers {
    fn drop(&mut self) {
        // End of input ends each worker.
        self.pipes.clear();
        for mut child in self.children.drain(..) {
            let _ = child.wait();
        }
    }
}

/// One run's time in milliseconds, after checking every value.
pub fn timed((values, elapsed): (Vec<u64>, Duration), expected: u64) -> Vec<f64> {
    assert!(
        values.iter().all(|&v| v == expected),
        "a floor worker miscounted"
    );
    vec![elapsed.as_secs_f64() * 1e3]
}
