//! A user's logger that panics (decision 7: a pool thread survives
//! whatever user code it runs). The crate reports through the `log` facade
//! from its own threads what it caught there (a done-callback that
//! panicked, a `Pool` callback that panicked): the logger is user code too,
//! and its panic must not take the reporting thread down.
//!
//! The logger is global to the process, so these tests have a binary of
//! their own. Every wait has a hang guard; no test asserts a duration.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use concurrent_futures::{Callbacks, Error, ExecutorExt, ThreadPool, ThreadPoolExecutor};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::{HANG, guarded, pool, wait};

/// Panics on every record, after counting it.
struct PanickingLogger;

static RECORDS: AtomicUsize = AtomicUsize::new(0);

impl log::Log for PanickingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        RECORDS.fetch_add(1, Ordering::SeqCst);
        panic!("the logger panics on: {}", record.args());
    }

    fn flush(&self) {}
}

fn install_panicking_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&PanickingLogger).expect("no other logger in this binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

fn double(x: u64) -> u64 {
    x * 2
}

/// C6 / PP15: the worker that ran a panicking done-callback, and reported
/// it to the panicking logger, still runs tasks; so the one worker of the
/// pool takes the next task.
#[test]
fn c6_a_thread_worker_survives_a_logger_that_panics_on_a_callbacks_report() {
    install_panicking_logger();
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let before = RECORDS.load(Ordering::SeqCst);
    let f = pool.submit(double, 1);
    f.add_done_callback(|_| panic!("the callback panics"));
    assert_eq!(wait(f), Ok(2));
    common::wait_until("the report reaching the logger", || {
        RECORDS.load(Ordering::SeqCst) > before
    });
    assert_eq!(wait(pool.submit(double, 21)), Ok(42), "the worker lives on");
    assert_eq!(pool.live_workers(), 1);
}

/// The same on a two-worker pool, where the caller takes the value of the
/// future whose callback panicked: `into_result`, which waits for the
/// callbacks to end, returns (their end is recorded though the report
/// panicked).
#[test]
fn into_result_returns_after_a_callback_whose_report_panics() {
    install_panicking_logger();
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let gate = common::Gate::new();
    let g2 = gate.clone();
    let f = pool.spawn(move || {
        g2.wait();
        7u64
    });
    f.add_done_callback(|_| panic!("the callback panics"));
    gate.open();
    assert_eq!(guarded("into_result", move || f.into_result()), Ok(7));
    assert_eq!(wait(pool.submit(double, 4)), Ok(8));
}

/// On a process pool the callback runs on the reader thread of its task's
/// worker: it survives the report's panic, and the worker's later results
/// still arrive.
#[test]
fn a_process_pools_reader_survives_a_logger_that_panics_on_a_callbacks_report() {
    install_panicking_logger();
    let pool = pool(1);
    let f = pool.submit(double, 1);
    f.add_done_callback(|_| panic!("the callback panics"));
    assert_eq!(wait(f), Ok(2));
    for i in 0..5 {
        assert_eq!(wait(pool.submit(double, i)), Ok(2 * i), "task {i}");
    }
    pool.shutdown(true, false);
}

/// MP7: a `Pool` callback that panics fails its job with "callback
/// panicked", also when reporting it panics, and the result handler goes on.
#[test]
fn mp7_a_panicking_pool_callback_fails_its_job_though_its_report_panics() {
    install_panicking_logger();
    let pool = ThreadPool::new(1).unwrap();
    let cbs = Callbacks::new().callback(|_: &u64| panic!("the pool callback panics"));
    let r = pool.apply_async_with(double, 5, cbs).unwrap();
    match r.get(Some(HANG)) {
        Err(Error::Panicked { message, .. }) => {
            assert!(message.starts_with("callback panicked: "), "{message}")
        }
        other => panic!("expected the callback's panic, got {other:?}"),
    }
    assert_eq!(pool.apply(double, 6), Ok(12), "the handler goes on");
}
