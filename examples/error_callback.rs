//! Done-callbacks that report each task's error or result.
//!
//! ```text
//! cargo run --example error_callback
//! cargo run --example error_callback -- --executor thread --workers 4
//! ```
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

use std::process::ExitCode;
use std::sync::Arc;

use concurrent_futures::{Error, Executor, ExecutorExt, Future, ThreadPoolExecutor, wait};

/// Fails for even `n`, like the Python original's `raise`.
fn test(n: u64) -> u64 {
    if n % 2 == 0 {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Thread,
    Process,
}

const USAGE: &str = "usage: error_callback [--executor thread|process] [--workers N]";

/// `--executor thread|process`, `--workers N`, also as `--flag=value`.
fn parse_args() -> Result<(Kind, Option<usize>), String> {
    let (mut kind, mut workers) = (Kind::Thread, None);
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
                kind = match value()?.as_str() {
                    "thread" => Kind::Thread,
                    "process" => Kind::Process,
                    other => return Err(format!("unknown executor {other:?}\n{USAGE}")),
                }
            }
            "--workers" => {
                let v = value()?;
                workers = Some(
                    v.parse()
                        .map_err(|_| format!("--workers wants a positive integer, got {v:?}"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok((kind, workers))
}

/// The one place that depends on `--executor`.
fn build_executor(kind: Kind, workers: Option<usize>) -> Result<Arc<dyn Executor>, String> {
    match kind {
        Kind::Thread => {
            let mut builder = ThreadPoolExecutor::builder().thread_name_prefix("error_callback");
            if let Some(n) = workers {
                builder = builder.max_workers(n);
            }
            Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
        }
        // The process pool will plug in here.
        Kind::Process => Err("the process pool is not available yet; use --executor thread".into()),
    }
}

fn main() -> ExitCode {
    let (kind, workers) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let executor = match build_executor(kind, workers) {
        Ok(ex) => ex,
        Err(msg) => {
            eprintln!("error_callback: {msg}");
            return ExitCode::from(2);
        }
    };

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
