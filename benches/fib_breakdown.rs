//! `cargo bench --bench fib_breakdown`: where the process-fib workload's
//! time goes, on our process pool and on our thread pool side by side.
//!
//! `cargo bench --bench peers` gives process fib's speedup (the target is
//! 1.9 on 2 cores). This bench says why it is what it is. Each task records,
//! on the worker that runs it, when it started and ended (`CLOCK_MONOTONIC`,
//! one clock for every process on the machine), which thread ran it, and
//! how often that thread was preempted while it ran. Over one run, each
//! worker's time from the first submit to the last result is then exactly:
//!
//! ```text
//! wall = start + Σ task + Σ gap + tail
//! ```
//!
//! * **start**: from the first submit to the worker's first task;
//! * **task**: the task's own time, which is the sequential time per task
//!   plus a **slowdown** (the worker preempted, by the parent's threads
//!   above all);
//! * **gap**: from one task's end to the worker's next task's start (the
//!   result going out and the next task coming in);
//! * **tail**: from the worker's last task to the caller holding every
//!   result.
//!
//! Summed over the workers, everything but the sequential time is time a
//! worker did not spend on fib: the loss. The table splits the loss into
//! those four parts, as shares of `workers × wall`, medians over the
//! repetitions; a speedup of 1.9 on 2 workers is a loss of 5%.
//!
//! Wall-clock shares move with the host's noise. So the bench also counts
//! CPU time, which moves far less: the **overhead CPU per task** is all the
//! CPU time the run took, in every process (the parent by its process CPU
//! clock, each worker process by its `/proc/<pid>/schedstat`), less the
//! tasks' own (each task reads its thread's CPU clock), divided by the
//! number of tasks. The parent's part is shown apart, and of it the
//! calling thread's and the process pool's reader threads'. With every
//! core busy, each µs of it per task costs about 0.2% of the speedup (a
//! `fib(27)` task takes ~0.5 ms here).
//!
//! **Mind the instruments.** Counting a task's preemptions and CPU time
//! takes three system calls at each end of the task, in the worker, and a
//! system call is where the kernel runs a thread it has just woken on
//! that CPU. That changes where the parent's wake-ups land, and with them
//! the result: a design that woke the caller straight from the worker's
//! write measured better than the reader threads here (29 pairs) and
//! worse in `peers` and here with `BENCH_PLAIN=1` (see BENCHMARKS-LOG.md,
//! 2026-12-04 18:00). `BENCH_PLAIN=1` makes the tasks read only
//! `CLOCK_MONOTONIC` (no system call): the preemption column is then 0,
//! and a task's CPU time is taken to be its wall time, so the overhead
//! CPU leaves out the time tasks spent preempted. Compare designs with it
//! on, and with `peers`.
//!
//! Environment: `BENCH_REPS` (repetitions, default 21), `BENCH_WORKERS`
//! (default 2), `BENCH_PLAIN` (see above). Linux only (it reads the
//! thread's context switches).
//! Without `--bench` (as `cargo test --all-targets` runs it) it only checks,
//! on a few small tasks, that the breakdown adds up.

use std::hint::black_box;
use std::time::Instant;

#[path = "support/busy.rs"]
mod busy;
use busy::busy_every_cpu;

use concurrent_futures::{Executor, ExecutorExt, ProcessPoolExecutor, ThreadPoolExecutor};

const TASKS: u64 = 64;
const FIB_N: u64 = 27;

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

/// One task's record: start and end (ns, `CLOCK_MONOTONIC`), the thread
/// that ran it, the involuntary context switches while it ran, and the CPU
/// time it took (ns, its thread's CPU clock).
type Record = (u64, u64, u64, u64, u64);

/// Whether tasks make no system call (`BENCH_PLAIN=1`, see the module
/// docs); read once per process, workers included.
fn plain() -> bool {
    static PLAIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PLAIN.get_or_init(|| std::env::var_os("BENCH_PLAIN").is_some_and(|v| v == "1"))
}

/// The task: `fib(n)`, timed where it runs.
fn timed_fib(n: u64) -> Record {
    if plain() {
        // `CLOCK_MONOTONIC` is read without a system call (vDSO); the
        // task's CPU time is taken to be its wall time.
        let start = monotonic_ns();
        black_box(fib(black_box(n)));
        let end = monotonic_ns();
        return (start, end, thread_id(), 0, end - start);
    }
    let preempted = involuntary_switches();
    let cpu = clock_ns(CLOCK_THREAD);
    let start = monotonic_ns();
    black_box(fib(black_box(n)));
    let end = monotonic_ns();
    let cpu = clock_ns(CLOCK_THREAD) - cpu;
    (
        start,
        end,
        thread_id(),
        involuntary_switches() - preempted,
        cpu,
    )
}

#[cfg(target_os = "linux")]
const CLOCK_THREAD: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
#[cfg(not(target_os = "linux"))]
const CLOCK_THREAD: i32 = 0;

#[cfg(target_os = "linux")]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec`, which we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(target_os = "linux")]
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time of this whole process so far (every thread), ns.
#[cfg(target_os = "linux")]
fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time so far of this process's threads named like the process
/// pool's reader threads (`cf-process-reader-<pid>`, cut to 15 bytes by
/// the kernel), ns. Threads that ended are not counted: readers live as
/// long as their workers.
#[cfg(target_os = "linux")]
fn reader_threads_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with("cf-process-read"))
        })
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time of thread or process `tid` so far, ns (the first field of
/// `/proc/<tid>/schedstat`): a process-pool worker runs its tasks on its
/// main thread, whose id is the process's.
#[cfg(target_os = "linux")]
fn task_cpu_ns(tid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("a worker's /proc/<pid>/schedstat")
}

#[cfg(target_os = "linux")]
fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u64 }
}

#[cfg(target_os = "linux")]
fn involuntary_switches() -> u64 {
    // SAFETY: an all-zero `rusage` is a valid value; getrusage writes one,
    // which we own.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage.ru_nivcsw as u64
    }
}

#[cfg(not(target_os = "linux"))]
fn clock_ns(_: i32) -> u64 {
    0
}
#[cfg(not(target_os = "linux"))]
fn monotonic_ns() -> u64 {
    0
}
#[cfg(not(target_os = "linux"))]
fn process_cpu_ns() -> u64 {
    0
}
#[cfg(not(target_os = "linux"))]
fn task_cpu_ns(_: u64) -> u64 {
    0
}
#[cfg(not(target_os = "linux"))]
fn reader_threads_cpu_ns() -> u64 {
    0
}
#[cfg(not(target_os = "linux"))]
fn thread_id() -> u64 {
    0
}
#[cfg(not(target_os = "linux"))]
fn involuntary_switches() -> u64 {
    0
}

/// One run of one pool, taken apart.
struct Breakdown {
    speedup: f64,
    /// Shares of `workers × wall`.
    start: f64,
    slowdown: f64,
    gap: f64,
    tail: f64,
    /// Per task, averaged over the run.
    gap_us: f64,
    preemptions: f64,
    /// The latest worker's first start, µs after the first submit.
    late_start_us: f64,
    /// CPU time beyond the tasks' own, per task, in every process and in
    /// this (the parent) one.
    overhead_cpu_us: f64,
    parent_cpu_us: f64,
    /// Of that, the calling thread's (submits and waits), and the process
    /// pool's reader threads'.
    caller_cpu_us: f64,
    readers_cpu_us: f64,
}

/// What is measured: `tasks` × `fib(n)`.
#[derive(Clone, Copy)]
struct Size {
    tasks: u64,
    n: u64,
}

/// Runs the tasks on `pool` and takes the run apart against `seq_task_ns`,
/// the sequential time per task, and `seq_ns`, the sequential run's time.
/// `worker_tids`: the worker processes' ids, for a process pool (empty for
/// a thread pool, whose workers are this process's threads).
fn run(
    pool: &dyn Executor,
    worker_tids: &[u64],
    workers: usize,
    size: Size,
    seq_task_ns: f64,
    seq_ns: f64,
) -> Breakdown {
    let Size { tasks, n } = size;
    let workers_cpu = || worker_tids.iter().map(|&t| task_cpu_ns(t)).sum::<u64>();
    let (parent_cpu0, workers_cpu0) = (process_cpu_ns(), workers_cpu());
    let caller_cpu0 = clock_ns(CLOCK_THREAD);
    let readers_cpu0 = reader_threads_cpu_ns();
    let t0 = monotonic_ns();
    let clock = Instant::now();
    let futures: Vec<_> = (0..tasks).map(|_| pool.submit(timed_fib, n)).collect();
    let records: Vec<Record> = futures
        .into_iter()
        .map(|f| f.into_result().expect("fib task"))
        .collect();
    let wall_ns = clock.elapsed().as_nanos() as f64;
    let t1 = monotonic_ns();
    let caller_cpu = (clock_ns(CLOCK_THREAD) - caller_cpu0) as f64;
    let readers_cpu = (reader_threads_cpu_ns() - readers_cpu0) as f64;
    let parent_cpu = (process_cpu_ns() - parent_cpu0) as f64;
    let all_cpu = parent_cpu + (workers_cpu() - workers_cpu0) as f64;
    let tasks_cpu = records.iter().map(|r| r.4 as f64).sum::<f64>();
    let in_parent = if worker_tids.is_empty() {
        tasks_cpu
    } else {
        0.0
    };

    let mut threads: Vec<u64> = records.iter().map(|r| r.2).collect();
    threads.sort_unstable();
    threads.dedup();
    let (mut start, mut busy, mut gap, mut tail, mut late) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
    for thread in &threads {
        let mut own: Vec<&Record> = records.iter().filter(|r| r.2 == *thread).collect();
        own.sort_unstable_by_key(|r| r.0);
        let first = own[0].0.saturating_sub(t0) as f64;
        start += first;
        late = late.max(first);
        busy += own.iter().map(|r| (r.1 - r.0) as f64).sum::<f64>();
        gap += own
            .windows(2)
            .map(|w| w[1].0.saturating_sub(w[0].1) as f64)
            .sum::<f64>();
        tail += t1.saturating_sub(own[own.len() - 1].1) as f64;
    }
    // A worker that ran nothing idled the whole run.
    let idle_workers = workers.saturating_sub(threads.len()) as f64;
    let span = (t1 - t0) as f64;
    tail += idle_workers * span;
    let total = workers as f64 * span;
    let slowdown = busy - tasks as f64 * seq_task_ns;
    assert!(
        threads.len() <= workers,
        "more threads ran tasks than the pool has workers"
    );
    let loss = start + slowdown + gap + tail;
    let expected = total - tasks as f64 * seq_task_ns;
    assert!(
        (loss - expected).abs() <= 1e-9 * total.max(1.0),
        "the parts of the loss add up to {loss} ns, not {expected}"
    );
    Breakdown {
        speedup: seq_ns / wall_ns,
        start: start / total,
        slowdown: slowdown / total,
        gap: gap / total,
        tail: tail / total,
        gap_us: gap / tasks as f64 / 1e3,
        preemptions: records.iter().map(|r| r.3 as f64).sum::<f64>() / tasks as f64,
        late_start_us: late / 1e3,
        overhead_cpu_us: (all_cpu - tasks_cpu) / tasks as f64 / 1e3,
        parent_cpu_us: (parent_cpu - in_parent) / tasks as f64 / 1e3,
        caller_cpu_us: caller_cpu / tasks as f64 / 1e3,
        readers_cpu_us: readers_cpu / tasks as f64 / 1e3,
    }
}

/// The sequential baseline: (whole run ns, mean ns per task).
fn sequential(size: Size) -> (f64, f64) {
    let clock = Instant::now();
    let mut tasks = 0.0;
    for _ in 0..size.tasks {
        let (s, e, ..) = timed_fib(size.n);
        tasks += (e - s) as f64;
    }
    (clock.elapsed().as_nanos() as f64, tasks / size.tasks as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn print_row(name: &str, runs: &[Breakdown]) {
    let m = |f: fn(&Breakdown) -> f64| median(runs.iter().map(f).collect());
    let pct = |f: fn(&Breakdown) -> f64| format!("{:.1}%", 100.0 * m(f));
    println!(
        "| {name} | {:.3} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
        m(|b| b.speedup),
        pct(|b| b.start + b.slowdown + b.gap + b.tail),
        pct(|b| b.start),
        pct(|b| b.slowdown),
        pct(|b| b.gap),
        pct(|b| b.tail),
        m(|b| b.gap_us),
        m(|b| b.preemptions),
        m(|b| b.late_start_us),
        m(|b| b.overhead_cpu_us),
        m(|b| b.parent_cpu_us),
        m(|b| b.caller_cpu_us),
        m(|b| b.readers_cpu_us),
    );
}

fn main() {
    concurrent_futures::init();
    if !cfg!(target_os = "linux") {
        println!("fib_breakdown: Linux only");
        return;
    }
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let (reps, size) = if benchmarking {
        let size = Size {
            tasks: TASKS,
            n: FIB_N,
        };
        (env_usize("BENCH_REPS", 21).max(1), size)
    } else {
        (1, Size { tasks: 6, n: 15 })
    };
    let workers = env_usize("BENCH_WORKERS", 2).max(1);
    let processes = ProcessPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("process pool");
    let threads = ThreadPoolExecutor::new(workers).expect("thread pool");
    let pools: [(&str, &dyn Executor); 2] = [("processes", &processes), ("threads", &threads)];
    // Warm up: workers started, code paged in. The process pool's workers
    // are the threads that ran its tasks.
    let mut tids: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for (i, (_, pool)) in pools.iter().enumerate() {
        for f in (0..8 * workers)
            .map(|_| pool.submit(timed_fib, FIB_N))
            .collect::<Vec<_>>()
        {
            tids[i].push(f.into_result().expect("fib task").2);
        }
        tids[i].sort_unstable();
        tids[i].dedup();
    }
    let worker_tids: [&[u64]; 2] = [&tids[0], &[]];
    let mut runs: [Vec<Breakdown>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        let (seq_ns, seq_task_ns) = sequential(size);
        busy_every_cpu();
        // Alternate which pool follows the baseline.
        for i in [rep % 2, 1 - rep % 2] {
            runs[i].push(run(
                pools[i].1,
                worker_tids[i],
                workers,
                size,
                seq_task_ns,
                seq_ns,
            ));
        }
    }
    if !benchmarking {
        println!(
            "fib_breakdown: smoke check passed (no timing; run `cargo bench --bench \
             fib_breakdown` to measure)"
        );
        return;
    }
    println!(
        "# process fib, taken apart: {TASKS} × fib({FIB_N}) on {workers} workers, \
         medians of {reps} repetitions\n"
    );
    println!(
        "| pool | speedup | loss | start | slowdown | gaps | tail | gap per task µs | \
         preemptions per task | latest first start µs | overhead CPU per task µs | \
         of which parent µs | of which caller µs | of which readers µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in pools.iter().enumerate() {
        print_row(name, &runs[i]);
    }
    println!(
        "\nloss = start + slowdown + gaps + tail (each a share of workers × wall, \
         medians taken apart, so they need not add up); a speedup of 1.9 on 2 workers \
         is a loss of 5%. Overhead CPU: all CPU time of the run, in every process, less \
         the tasks' own, per task; of which parent: the part in this process (for \
         threads, the caller's and the workers' outside tasks); of which caller: the \
         thread that submits and waits; of which readers: the process pool's reader \
         threads."
    );
}
