//! One job, any executor: the pool is chosen by configuration, the code
//! that uses it never changes.
//!
//! ```text
//! cargo run --release --example swap_by_config                 # CF_EXECUTOR, else thread
//! cargo run --release --example swap_by_config -- process:4
//! cargo run --release --example swap_by_config -- --executor thread:2
//! CF_EXECUTOR=process cargo run --release --example swap_by_config
//! ```
//!
//! The executor is an [`ExecutorConfig`] (`thread`, `thread:8`, `process`,
//! `process:4`) from the command line or, when none is given, from the
//! `CF_EXECUTOR` variable, built into an `Arc<dyn Executor>`. [`run_job`]
//! sees only `&dyn Executor`: the same `map`, `submit` and `result` calls
//! run on threads or on worker processes.
//!
//! The results go to stdout and everything that depends on the executor
//! (which one, the pids that ran the tasks, timings, panic messages) to
//! stderr, so the two runs can be compared directly; this prints nothing:
//!
//! ```text
//! diff <(cargo run -q --release --example swap_by_config -- thread 2>/dev/null) \
//!      <(cargo run -q --release --example swap_by_config -- process:4 2>/dev/null)
//! ```
//!
//! The tasks are plain `fn` items with serde arguments and results: that is
//! what can cross to a worker process. A closure that captures something is
//! a compile error in `submit`/`map` (use `ThreadPoolExecutor::spawn` for
//! those, on threads only).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concurrent_futures::{EXECUTOR_ENV, Error, Executor, ExecutorConfig, ExecutorExt, MapOptions};

/// Naive Fibonacci: CPU-bound, exponential in `n`.
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

/// Iterative Fibonacci that refuses inputs whose result would overflow a
/// `u64`: the panic becomes this item's error, the other items are fine.
fn checked_fib(n: u64) -> u64 {
    assert!(n <= 93, "fib({n}) does not fit in a u64");
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

/// The process a task ran in: this one for a thread pool, a worker's for a
/// process pool.
fn task_pid(_: u32) -> u32 {
    std::process::id()
}

const USAGE: &str = "usage: swap_by_config [thread|process|thread:N|process:N]\n\
                     \x20      swap_by_config --executor thread|process|thread:N|process:N\n\
                     (without one: the CF_EXECUTOR variable, else thread)";

/// The executor named on the command line (positional or `--executor`),
/// else by `CF_EXECUTOR`, else `thread`; and where the choice came from.
fn choose() -> Result<(ExecutorConfig, String), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let given = match args.as_slice() {
        [] => None,
        [flag] if flag == "-h" || flag == "--help" => return Err(USAGE.to_owned()),
        [flag, value] if flag == "--executor" => Some(value.as_str()),
        [one] => Some(one.strip_prefix("--executor=").unwrap_or(one)),
        _ => return Err(USAGE.to_owned()),
    };
    match given {
        Some(text) => {
            let config = text.parse().map_err(|e| format!("{e}\n{USAGE}"))?;
            Ok((config, "the command line".to_owned()))
        }
        None => {
            let config = ExecutorConfig::from_env_or("thread").map_err(|e| e.to_string())?;
            let from = match std::env::var(EXECUTOR_ENV) {
                Ok(v) if !v.trim().is_empty() => format!("{EXECUTOR_ENV}={v}"),
                _ => format!("the default ({EXECUTOR_ENV} unset)"),
            };
            Ok((config, from))
        }
    }
}

/// The job. It gets a `&dyn Executor` and does not know which kind it is.
fn run_job(ex: &dyn Executor) -> Result<(), Error> {
    // 1. An ordered map of a CPU-bound function.
    let t = Instant::now();
    let inputs = 20..=32u64;
    let values: Vec<u64> = ex.map(fib, inputs.clone()).collect::<Result<_, _>>()?;
    println!("map(fib, 20..=32):");
    for (n, v) in inputs.zip(&values) {
        println!("  fib({n}) = {v}");
    }
    eprintln!("  [map: {:.3} s]", t.elapsed().as_secs_f64());

    // 2. Many tiny tasks, chunked: 64 items per task (one frame to a worker
    //    process instead of 64).
    let t = Instant::now();
    let total: u64 = ex
        .map_with(
            fib,
            (0..10_000u64).map(|i| i % 25),
            MapOptions::new().chunksize(64),
        )
        .sum::<Result<u64, Error>>()?;
    println!("sum of fib(i % 25) for i in 0..10000, chunksize 64: {total}");
    eprintln!("  [chunked map: {:.3} s]", t.elapsed().as_secs_f64());

    // 3. One submit, waited on with a timeout. A `result` timeout does not
    //    stop the task (as in Python); asking again waits longer.
    let t = Instant::now();
    let slow = ex.submit(fib, 38);
    match slow.result(Some(Duration::from_millis(1))) {
        Err(e @ Error::Timeout { .. }) => println!("submit(fib, 38).result(1 ms): {e}"),
        other => println!("submit(fib, 38).result(1 ms): finished early: {other:?}"),
    }
    let v = slow.result(Some(Duration::from_secs(60)))?;
    println!("submit(fib, 38).result(60 s): {v}");
    eprintln!("  [submit: {:.3} s]", t.elapsed().as_secs_f64());

    // 4. An item that fails: its error sits at its own position, the
    //    others still have their values.
    println!("map(checked_fib, [10, 50, 100, 90]):");
    for (n, r) in [10, 50, 100, 90]
        .into_iter()
        .zip(ex.map(checked_fib, [10, 50, 100, 90]))
    {
        match r {
            Ok(v) => println!("  checked_fib({n}) = {v}"),
            Err(Error::Panicked { message, .. }) => {
                println!("  checked_fib({n}) failed: {message}")
            }
            Err(e) => println!("  checked_fib({n}) failed: {e}"),
        }
    }

    // 5. Where the tasks ran.
    let me = std::process::id();
    let mut pids: Vec<u32> = ex.map(task_pid, 0..16).collect::<Result<_, _>>()?;
    pids.sort_unstable();
    pids.dedup();
    if pids == [me] {
        eprintln!("  [tasks ran in this process, pid {me}]");
    } else {
        eprintln!("  [tasks ran in worker processes {pids:?}; this process is {me}]");
    }
    Ok(())
}

fn main() -> ExitCode {
    concurrent_futures::init(); // first: in a process-pool worker this serves tasks and exits
    let (config, from) = match choose() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let t = Instant::now();
    let ex: Arc<dyn Executor> = match config.build() {
        Ok(ex) => ex,
        Err(e) => {
            eprintln!("swap_by_config: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "executor: {config} ({} workers), chosen by {from}",
        ex.max_workers()
    );
    let outcome = run_job(ex.as_ref());
    ex.shutdown(true, false);
    eprintln!("  [total: {:.3} s]", t.elapsed().as_secs_f64());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swap_by_config: {e}");
            ExitCode::FAILURE
        }
    }
}
