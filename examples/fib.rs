//! Naive Fibonacci on an executor: the main example.
//!
//! ```text
//! cargo run --release --example fib
//! cargo run --release --example fib -- --executor thread --workers 4
//! cargo run --release --example fib -- --executor process
//! CF_EXECUTOR=process:2 cargo run --release --example fib
//! ```
//!
//! Part 1 maps `fib` over a range of inputs on the pool and times it against
//! the same loop run sequentially. The executor is held as
//! `Arc<dyn Executor>` built from an [`ExecutorConfig`]: `--executor`
//! (`thread`, `process`, or with a count, `process:4`) and `--workers N`
//! choose it, or the `CF_EXECUTOR` variable when no `--executor` is given.
//! Every call after that is the same for a thread pool and a process pool,
//! and so are the results.
//!
//! Part 2 is recursive fork-join: a task computing `pfib(n)` submits
//! `pfib(n - 1)` to the *same* two-worker pool, computes `pfib(n - 2)` itself,
//! then blocks on the submitted future. With CPython's `ThreadPoolExecutor`
//! this deadlocks: both workers end up blocked in `future.result()` waiting
//! for tasks that sit in the queue behind them, and nobody is left to run
//! those. Here a worker that blocks on a future of its own pool runs that
//! task itself if it is still queued, and the subtasks its own task
//! submitted, while it waits, so the recursion completes. Part 2
//! always uses a thread pool, whatever `--executor` says: a process worker
//! is a separate program and cannot reach this process's static pool, and
//! only a thread-pool worker can run the tasks it is waiting for.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use concurrent_futures::{Executor, ExecutorConfig, ExecutorExt, ExecutorKind, ThreadPoolExecutor};

/// Deliberately naive: exponential work, a pure CPU-bound task.
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

/// Inputs of part 1, largest first so that the biggest tasks start early and
/// the two workers end at about the same time (the results are still
/// reported in input order, since `map` keeps it).
const RANGE: std::ops::RangeInclusive<u64> = 30..=40;

/// The input of part 2.
const FORK_JOIN_N: u64 = 40;

/// Below this, `pfib` computes sequentially: a task per call would cost more
/// in scheduling than the call itself.
const CUTOFF: u64 = 20;

/// The pool of part 2. A portable task is a plain `fn`, which cannot capture
/// the pool, so the recursion finds it here.
static POOL: OnceLock<ThreadPoolExecutor> = OnceLock::new();

/// Parallel fork-join Fibonacci on [`POOL`].
///
/// Python's version of this (`pool.submit(pfib, n - 1)` inside a task, then
/// `.result()`) deadlocks a `ThreadPoolExecutor(max_workers=2)` as soon as
/// the recursion is deeper than the pool is wide.
fn pfib(n: u64) -> u64 {
    if n < CUTOFF {
        return fib(n);
    }
    let pool = POOL.get().expect("POOL is set before the first pfib task");
    let left = pool.submit(pfib, n - 1);
    let right = pfib(n - 2);
    // Blocking here is fine: this worker runs `left` itself if no other
    // worker took it, and this task's other subtasks while it waits.
    let left = left
        .into_result()
        .unwrap_or_else(|e| panic!("pfib({}) failed: {e}", n - 1));
    left + right
}

#[derive(Debug)]
struct Args {
    /// `--executor`; `None`: `CF_EXECUTOR`, else `thread`.
    executor: Option<ExecutorConfig>,
    workers: Option<usize>,
}

const USAGE: &str = "usage: fib [--executor thread|process|thread:N|process:N] [--workers N]\n\
                     (without --executor: the CF_EXECUTOR variable, else thread)";

/// `--executor thread|process`, `--workers N`, also as `--flag=value`.
fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        executor: None,
        workers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--executor" => {
                let config = value()?.parse().map_err(|e| format!("{e}\n{USAGE}"))?;
                args.executor = Some(config);
            }
            "--workers" => {
                let v = value()?;
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--workers wants a positive integer, got {v:?}"))?;
                args.workers = Some(n);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The one place that depends on `--executor`: flag, else `CF_EXECUTOR`,
/// else a thread pool; `--workers` overrides the count.
fn executor_config(args: &Args) -> Result<ExecutorConfig, String> {
    let mut config = match args.executor {
        Some(c) => c,
        None => ExecutorConfig::from_env_or("thread").map_err(|e| e.to_string())?,
    };
    if args.workers.is_some() {
        config.workers = args.workers;
    }
    Ok(config)
}

fn kind_name(config: &ExecutorConfig) -> &'static str {
    match config.kind {
        ExecutorKind::Thread => "thread",
        ExecutorKind::Process => "process",
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() -> ExitCode {
    concurrent_futures::init(); // first: in a process-pool worker this serves tasks and exits
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let config = match executor_config(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("fib: {msg}");
            return ExitCode::from(2);
        }
    };
    let executor = match config.build() {
        Ok(ex) => ex,
        Err(msg) => {
            eprintln!("fib: {msg}");
            return ExitCode::from(2);
        }
    };

    // --- Part 1: fib over a range, pool vs sequential -----------------------
    let inputs: Vec<u64> = RANGE.rev().collect();
    println!(
        "part 1: fib(n) for n in {}..={} on a {} pool of {} workers",
        RANGE.start(),
        RANGE.end(),
        kind_name(&config),
        executor.max_workers()
    );

    let t = Instant::now();
    let sequential: Vec<u64> = inputs.iter().map(|&n| fib(black_box(n))).collect();
    let seq_time = t.elapsed();

    let t = Instant::now();
    let parallel: Vec<u64> = match executor.map(fib, inputs.iter().copied()).collect() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fib: a task failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pool_time = t.elapsed();

    assert_eq!(parallel, sequential, "pool and sequential results differ");
    for (n, v) in inputs.iter().zip(&parallel).rev() {
        println!("  fib({n}) = {v}");
    }
    println!("  sequential: {}", secs(seq_time));
    println!(
        "  pool:       {}  (speedup {:.2}x on {} workers)",
        secs(pool_time),
        seq_time.as_secs_f64() / pool_time.as_secs_f64(),
        executor.max_workers()
    );
    executor.shutdown(true, false);

    // --- Part 2: recursive fork-join on a 2-worker pool ---------------------
    // Always a thread pool, even with `--executor process`: a process worker
    // cannot reach this process's static `POOL`, and only a thread-pool
    // worker can help run the tasks it waits for, which is what this shows.
    let pool = POOL.get_or_init(|| {
        ThreadPoolExecutor::builder()
            .max_workers(2)
            .thread_name_prefix("forkjoin")
            .build()
            .expect("a 2-worker thread pool")
    });
    println!(
        "\npart 2: recursive fork-join pfib({FORK_JOIN_N}) on a 2-worker thread pool, \
         whatever --executor says (each task submits pfib(n-1) to the same pool and waits \
         for it; cutoff {CUTOFF})"
    );
    let t = Instant::now();
    let expected = fib(black_box(FORK_JOIN_N));
    let seq_time = t.elapsed();

    let t = Instant::now();
    let got = match pool.submit(pfib, FORK_JOIN_N).into_result() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fib: pfib failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pool_time = t.elapsed();
    assert_eq!(got, expected, "pfib and fib disagree");
    println!("  pfib({FORK_JOIN_N}) = {got}");
    println!("  sequential fib: {}", secs(seq_time));
    println!(
        "  fork-join pool: {}  (speedup {:.2}x on 2 workers)",
        secs(pool_time),
        seq_time.as_secs_f64() / pool_time.as_secs_f64()
    );
    println!(
        "  finished: CPython's ThreadPoolExecutor(max_workers=2) deadlocks on this recursion \
         (both workers block in result() on tasks queued behind them); here a waiting worker \
         runs the task it waits for instead."
    );
    pool.shutdown(true, false);
    ExitCode::SUCCESS
}
