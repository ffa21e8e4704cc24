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
//! and hands a worker its next task when a result comes back.
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

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

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
    let mut output = std::io::stdout().lock();
    let mut task = [0u8; 8];
    while input.read_exact(&mut task).is_ok() {
        let value = fib(black_box(k));
        let mut reply = [0u8; 16];
        reply[..8].copy_from_slice(&task);
        reply[8..].copy_from_slice(&value.to_le_bytes());
        if output
            .write_all(&reply)
            .and_then(|()| output.flush())
            .is_err()
        {
            break;
        }
    }
    std::process::exit(0)
}

struct Worker {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
}

impl Worker {
    fn send(&mut self, task: usize) {
        self.to
            .write_all(&(task as u64).to_le_bytes())
            .expect("a floor worker takes its task");
    }

    /// The next result: its task number and value.
    fn receive(&mut self) -> (usize, u64) {
        let mut reply = [0u8; 16];
        self.from
            .read_exact(&mut reply)
            .expect("a floor worker answers");
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
        (word(&reply[..8]) as usize, word(&reply[8..]))
    }
}

/// A set of floor workers, started once and used for every repetition.
pub struct PipeWorkers {
    workers: Vec<Worker>,
}

impl PipeWorkers {
    /// Starts `n` workers that each run `fib(k)` per task.
    pub fn start(n: usize, k: u64) -> Self {
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let workers = (0..n)
            .map(|_| {
                let mut child = Command::new(&exe)
                    .args([CHILD_FLAG, &k.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start a floor worker");
                let to = child.stdin.take().unwrap();
                let from = child.stdout.take().unwrap();
                Worker { child, to, from }
            })
            .collect();
        PipeWorkers { workers }
    }

    /// Gives each worker its first tasks; returns the next task number.
    fn prime(&mut self, tasks: usize) -> usize {
        let mut next = 0;
        for _ in 0..PREFETCH {
            for w in &mut self.workers {
                if next < tasks {
                    w.send(next);
                    next += 1;
                }
            }
        }
        next
    }

    /// Runs `tasks` tasks with a reader thread per worker; returns the
    /// values in task order.
    pub fn run_with_readers(&mut self, tasks: usize) -> Vec<u64> {
        let next = AtomicUsize::new(self.prime(tasks));
        let slots = Mutex::new(vec![None; tasks]);
        let filled = Condvar::new();
        let mut values = Vec::with_capacity(tasks);
        std::thread::scope(|s| {
            for w in &mut self.workers {
                let (next, slots, filled) = (&next, &slots, &filled);
                s.spawn(move || {
                    let mut held = PREFETCH.min(tasks);
                    while held > 0 {
                        let (task, value) = w.receive();
                        held -= 1;
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        if t < tasks {
                            w.send(t);
                            held += 1;
                        }
                        slots.lock().unwrap()[task] = Some(value);
                        filled.notify_all();
                    }
                });
            }
            // The caller waits for each result in order, as the workload's
            // caller does with its futures.
            for task in 0..tasks {
                let mut g = slots.lock().unwrap();
                loop {
                    if let Some(v) = g[task] {
                        values.push(v);
                        break;
                    }
                    g = filled.wait(g).unwrap();
                }
            }
        });
        values
    }

    /// Runs `tasks` tasks with the caller polling every worker's pipe;
    /// returns the values in task order.
    pub fn run_caller_reads(&mut self, tasks: usize) -> Vec<u64> {
        let mut next = self.prime(tasks);
        let mut slots = vec![None; tasks];
        let mut fds: Vec<libc::pollfd> = self
            .workers
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
            for (w, fd) in self.workers.iter_mut().zip(&mut fds) {
                if fd.revents & libc::POLLIN != 0 {
                    let (task, value) = w.receive();
                    slots[task] = Some(value);
                    received += 1;
                    if next < tasks {
                        w.send(next);
                        next += 1;
                    }
                }
                fd.revents = 0;
            }
        }
        slots
            .into_iter()
            .map(|v| v.expect("every task answered"))
            .collect()
    }
}

impl Drop for PipeWorkers {
    fn drop(&mut self) {
        for w in self.workers.drain(..) {
            let Worker {
                mut child,
                to,
                from,
            } = w;
            // End of input ends the worker.
            drop(to);
            drop(from);
            let _ = child.wait();
        }
    }
}

/// Times one run: milliseconds, after checking every value.
pub fn timed(run: impl FnOnce() -> Vec<u64>, expected: u64) -> Vec<f64> {
    let t = Instant::now();
    let values = run();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(
        values.iter().all(|&v| v == expected),
        "a floor worker miscounted"
    );
    vec![ms]
}
