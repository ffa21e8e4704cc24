//! Done-callbacks that report each task's error or result.
//!
//! ```text
//! cargo run --example error_callback
//! cargo run --example error_callback -- --executor thread --workers 4
//! cargo run --example error_callback -- --executor process
//! CF_EXECUTOR=process:2 cargo run --example error_callback
//! ```
//!
//! The executor comes from an [`ExecutorConfig`]: `--executor` (`thread`,
//! `process`, `process:4`, ...) and `--workers N`, or the `CF_EXECUTOR`
//! variable when no `--executor` is given. The results are the same on
//! threads and on processes; only the order in which callbacks print varies
//! from run to run.
//!
//! The Python original:
//!
//! ```python
//! def test(n):
//!     if n % 2 == 0:
//!         raise ValueError(f"{n} is even")
//!     return n
//!
//! def report(fut):
//!     if fut.exception() is not None:
//!         print("error:", fut.exception())
//!     else:
//!         print("result:", fut.result())
//!
//! with ThreadPoolExecutor() as ex:
//!     for n in range(20):
//!         ex.submit(test, n).add_done_callback(report)
//! ```
//!
//! A panic in a task becomes that task's [`Error::Panicked`], carrying the
//! panic message; the worker thread lives on. Rust's default panic hook
//! still prints each panic to stderr ("thread 'error_callback_0' panicked
//! at ...") when it happens: that is std behaviour, not the pool's. Install
//! your own hook with `std::panic::set_hook` to silence or redirect it.
//! On a process pool the message comes from the worker process (its stderr
//! is the parent's), and the error crosses back with the same text.

use std::process::ExitCode;

use concurrent_futures::{Error, Executor, ExecutorConfig, ExecutorExt, Future, wait};

/// Fails for even `n`, like the Python original's `raise`.
fn test(n: u64) -> u64 {
    if n.is_multiple_of(2) {
        panic!("{n} is even");
    }
    n
}

/// Runs on the thread that completes the future (a worker), or at once on
/// this thread if the future had already ended when the callback was added.
fn report(n: u64, fut: &Future<u64>) {
    match fut.exception(None) {
        Ok(None) => println!(
            "test({n:2}) result: {}",
            fut.result(None).expect("has a value")
        ),
        Ok(Some(Error::Panicked { message, .. })) => println!("test({n:2}) error:  {message}"),
        Ok(Some(other)) => println!("test({n:2}) error:  {other}"),
        Err(e) => println!("test({n:2}) did not run: {e}"),
    }
}

const USAGE: &str = "usage: error_callback [--executor thread|process|thread:N|process:N] [--workers N]\n\
     (without --executor: the CF_EXECUTOR variable, else thread)";

/// `--executor thread|process`, `--workers N`, also as `--flag=value`.
/// Without `--executor`: `CF_EXECUTOR`, else a thread pool. `--workers`
/// overrides the count either way.
fn parse_args() -> Result<ExecutorConfig, String> {
    let (mut executor, mut workers) = (None, None);
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
                let config: ExecutorConfig =
                    value()?.parse().map_err(|e| format!("{e}\n{USAGE}"))?;
                executor = Some(config);
            }
            "--workers" => {
                let v = value()?;
                workers = Some(
                    v.parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or_else(|| format!("--workers wants a positive integer, got {v:?}"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut config = match executor {
        Some(c) => c,
        None => ExecutorConfig::from_env_or("thread").map_err(|e| e.to_string())?,
    };
    if workers.is_some() {
        config.workers = workers;
    }
    Ok(config)
}

fn main() -> ExitCode {
    concurrent_futures::init(); // first: in a process-pool worker this serves tasks and exits
    let config = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let executor = match config.build() {
        Ok(ex) => ex,
        Err(msg) => {
            eprintln!("error_callback: {msg}");
            return ExitCode::from(2);
        }
    };

    println!("executor: {config} ({} workers)", executor.max_workers());
    let futures: Vec<Future<u64>> = (0..20)
        .map(|n| {
            let fut = executor.submit(test, n);
            fut.add_done_callback(move |f| report(n, f));
            fut
        })
        .collect();

    let sets = wait(&futures, None, Default::default());
    executor.shutdown(true, false);

    let failed = futures
        .iter()
        .filter(|f| f.exception(None).is_ok_and(|e| e.is_some()));
    println!(
        "{} tasks done, {} failed (the even ones), {} not done",
        sets.done.len(),
        failed.count(),
        sets.not_done.len()
    );
    ExitCode::SUCCESS
}
