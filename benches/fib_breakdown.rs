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
//! Environment: `BENCH_REPS` (repetitions, default 21), `BENCH_WORKERS`
//! (default 2). Linux only (it reads the thread's context switches).
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
/// that ran it, and the involuntary context switches while it ran.
type Record = (u64, u64, u64, u64);

/// The task: `fib(n)`, timed where it runs.
fn timed_fib(n: u64) -> Record {
    let preempted = involuntary_switches();
    let start = monotonic_ns();
    black_box(fib(black_box(n)));
    let end = monotonic_ns();
    (start, end, thread_id(), involuntary_switches() - preempted)
}

#[cfg(target_os = "linux")]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
fn monotonic_ns() -> u64 {
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
}

/// What is measured: `tasks` × `fib(n)`.
#[derive(Clone, Copy)]
struct Size {
    tasks: u64,
    n: u64,
}

/// Runs the tasks on `pool` and takes the run apart against `seq_task_ns`,
/// the sequential time per task, and `seq_ns`, the sequential run's time.
fn run(
    pool: &dyn Executor,
    workers: usize,
    size: Size,
    seq_task_ns: f64,
    seq_ns: f64,
) -> Breakdown {
    let Size { tasks, n } = size;
    let t0 = monotonic_ns();
    let clock = Instant::now();
    let futures: Vec<_> = (0..tasks).map(|_| pool.submit(timed_fib, n)).collect();
    let records: Vec<Record> = futures
        .into_iter()
        .map(|f| f.into_result().expect("fib task"))
        .collect();
    let wall_ns = clock.elapsed().as_nanos() as f64;
    let t1 = monotonic_ns();

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
    }
}

/// The sequential baseline: (whole run ns, mean ns per task).
fn sequential(size: Size) -> (f64, f64) {
    let clock = Instant::now();
    let mut tasks = 0.0;
    for _ in 0..size.tasks {
        let (s, e, _, _) = timed_fib(size.n);
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
        "| {name} | {:.3} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.0} |",
        m(|b| b.speedup),
        pct(|b| b.start + b.slowdown + b.gap + b.tail),
        pct(|b| b.start),
        pct(|b| b.slowdown),
        pct(|b| b.gap),
        pct(|b| b.tail),
        m(|b| b.gap_us),
        m(|b| b.preemptions),
        m(|b| b.late_start_us),
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
    // Warm up: workers started, code paged in.
    for (_, pool) in pools {
        for f in (0..8)
            .map(|_| pool.submit(timed_fib, FIB_N))
            .collect::<Vec<_>>()
        {
            f.into_result().expect("fib task");
        }
    }
    let mut runs: [Vec<Breakdown>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        let (seq_ns, seq_task_ns) = sequential(size);
        busy_every_cpu();
        // Alternate which pool follows the baseline.
        for i in [rep % 2, 1 - rep % 2] {
            runs[i].push(run(pools[i].1, workers, size, seq_task_ns, seq_ns));
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
         preemptions per task | latest first start µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in pools.iter().enumerate() {
        print_row(name, &runs[i]);
    }
    println!(
        "\nloss = start + slowdown + gaps + tail (each a share of workers × wall, \
         medians taken apart, so they need not add up); a speedup of 1.9 on 2 workers \
         is a loss of 5%."
    );
}
