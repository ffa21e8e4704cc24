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

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The row whose results each reach the caller through a parent thread.
pub const READER_PER_WORKER: &str = "bare pipes, a reader thread each";
/// The row whose caller reads the workers' pipes itself.
pub const CALLER_READS: &str = "bare pipes, the caller reads";
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
        self.to
            .write_all(&(task as u64).to_le_bytes())
            .expect("a floor worker takes its task");
    }

    /// The next result (task number, value), or `None` if the worker is
    /// gone.
    fn receive(&mut self) -> Option<(usize, u64)> {
        let mut reply = [0u8; 16];
        self.from.read_exact(&mut reply).ok()?;
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
        Some((word(&reply[..8]) as usize, word(&reply[8..])))
    }
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
    /// are; each sends its worker's first tasks.
    pub fn run_with_readers(&mut self, tasks: usize) -> (Vec<u64>, Duration) {
        let go = Barrier::new(self.pipes.len() + 1);
        let next = AtomicUsize::new(0);
        let slots = Mutex::new(vec![None; tasks]);
        let filled = Condvar::new();
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for w in &mut self.pipes {
                let (go, next, slots, filled, failed) = (&go, &next, &slots, &filled, &failed);
                s.spawn(move || {
                    go.wait();
                    let mut held = 0;
                    let send_next = |w: &mut Pipes, held: &mut usize| {
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        if t < tasks {
                            w.send(t);
                            *held += 1;
                        }
                    };
                    for _ in 0..PREFETCH {
                        send_next(w, &mut held);
                    }
                    while held > 0 {
                        let Some((task, value)) = w.receive() else {
                            // Set under the lock, so that the caller cannot
                            // miss it between its look and its wait.
                            let _g = slots.lock().unwrap();
                            failed.store(true, Ordering::Relaxed);
                            filled.notify_all();
                            return;
                        };
                        held -= 1;
                        send_next(w, &mut held);
                        slots.lock().unwrap()[task] = Some(value);
                        filled.notify_all();
                    }
                });
            }
            go.wait();
            let t = Instant::now();
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
