//! A progress bar fed by `as_completed`.
//!
//! ```text
//! cargo run --release --example as_completed_progress
//! ```
//!
//! Submits 200 CPU-bound tasks of uneven size, then advances an `indicatif`
//! progress bar each time one finishes, in completion order, keeping a
//! running total. The Python equivalent is the usual
//! `for fut in tqdm(as_completed(futures), total=len(futures))`.

use std::time::Instant;

use concurrent_futures::{ExecutorExt, ThreadPoolExecutor, as_completed};
use indicatif::{ProgressBar, ProgressStyle};

const TASKS: u64 = 200;

/// Naive Fibonacci: the work grows by about 1.6x per step of `n`.
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

/// Task `i`: a Fibonacci number between fib(26) and fib(37), so tasks finish
/// out of submission order.
fn task(i: u64) -> u64 {
    fib(26 + (i * 7) % 12)
}

fn main() -> Result<(), concurrent_futures::Error> {
    let pool = ThreadPoolExecutor::builder()
        .thread_name_prefix("progress")
        .build()?;
    let start = Instant::now();
    let futures: Vec<_> = (0..TASKS).map(|i| pool.submit(task, i)).collect();

    let bar = ProgressBar::new(TASKS);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );

    let mut total = 0u64;
    // `?` on a task error: this example's tasks do not fail. Were they to,
    // the loop would stop at the first failure and the others keep running.
    // `as_completed` yields `Err` only if its own timeout (here: none) passes;
    // each task's own failure is in `fut.result(..)`.
    for fut in as_completed(&futures, None) {
        let value = fut?.result(None)?;
        total += value;
        bar.set_message(format!("sum {total}"));
        bar.inc(1);
    }
    bar.finish_with_message(format!("sum {total}"));
    if !bar.is_hidden() {
        // indicatif leaves the cursor at the end of the finished bar.
        eprintln!();
    }

    println!(
        "{TASKS} tasks on {} workers in {:.2?}; sum {total}",
        pool.max_workers(),
        start.elapsed()
    );
    Ok(())
}
