//! What the crate logs (through the `log` facade, target
//! `concurrent_futures`) where CPython logs to its `concurrent.futures`
//! logger: a done-callback that raises (C5) and an initializer that raises
//! (T8). Nothing propagates to the caller; the log is the only trace.
//!
//! One logger per process (`log::set_logger`), so these tests share one
//! that records every record, and each looks for its own message.

use std::sync::Mutex;
use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, ThreadPoolExecutor};

struct Recorder(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push((
            record.level(),
            record.target().to_owned(),
            record.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

fn install() {
    // Only the first call installs it; the others find it in place.
    let _ = log::set_logger(&RECORDER);
    log::set_max_level(log::LevelFilter::Trace);
}

/// The records at `level` from the crate whose message contains `needle`.
fn logged(level: log::Level, needle: &str) -> Vec<String> {
    RECORDER
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, target, msg)| {
            *l == level && target == "concurrent_futures" && msg.contains(needle)
        })
        .map(|(_, _, msg)| msg.clone())
        .collect()
}

fn seven(_: ()) -> u32 {
    7
}

#[test]
fn c5_a_panicking_done_callback_is_logged_as_an_error_and_later_callbacks_run() {
    install();
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(seven, ());
    let (tx, rx) = std::sync::mpsc::channel();
    fut.add_done_callback(|_| panic!("callback c5 exploded"));
    fut.add_done_callback(move |f| tx.send(*f.result(None).unwrap()).unwrap());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)),
        Ok(7),
        "the later callback ran"
    );
    assert_eq!(fut.result(None), Ok(&7), "nothing propagated to the future");
    let records = logged(log::Level::Error, "callback c5 exploded");
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("exception calling callback"),
        "{records:?}"
    );
}

#[test]
fn t8_a_panicking_initializer_is_logged_as_an_error_and_breaks_the_pool() {
    install();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(|| panic!("initializer t8 exploded"))
        .build()
        .unwrap();
    let outcome = pool.submit(seven, ()).into_result();
    assert!(matches!(outcome, Err(Error::Broken { .. })), "{outcome:?}");
    let records = logged(log::Level::Error, "initializer t8 exploded");
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(
        records[0].contains("Exception in initializer"),
        "{records:?}"
    );
}
