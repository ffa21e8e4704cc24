//! Edge cases of the map iterators and the executor wrappers, found by
//! review: the window bound under load and chunking (M13), what a dropped
//! map or a passed deadline cancels (M4, M7: never a running task, also on
//! a process pool that kills on `cancel()`), a deadline that holds inside a
//! pool task (M3), a task's own `Timeout` error kept as its item's error
//! (decision 2), `next_timeout` losing nothing (MP12), a finished result
//! kept when the input iterator panics (MP15), and `Pool::join_timeout` over a
//! `ShutdownGuard`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, Executor, ExecutorExt, MapOptions, Pool, ShutdownGuard, Task, ThreadPool,
    ThreadPoolExecutor,
};

// ---------------------------------------------------------------------------
// M13: never more than `window` tasks running, ordered / unordered / chunked
// ---------------------------------------------------------------------------

static M13_NOW: AtomicUsize = AtomicUsize::new(0);
static M13_MAX: AtomicUsize = AtomicUsize::new(0);

fn m13_task(x: u64) -> u64 {
    let now = M13_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    M13_MAX.fetch_max(now, Ordering::SeqCst);
    thread::sleep(Duration::from_micros(200 + (x * 37 % 5) * 100));
    M13_NOW.fetch_sub(1, Ordering::SeqCst);
    x * 3
}

#[test]
fn m13_window_bound_and_order_under_load() {
    let pool = ThreadPoolExecutor::new(8).unwrap();
    for window in [1usize, 2, 3, 5] {
        M13_MAX.store(0, Ordering::SeqCst);
        let mut m = pool.map_with(m13_task, 0..300u64, MapOptions::new().window(window));
        let mut out = Vec::new();
        while let Some(r) = m.next() {
            assert!(m.in_flight() <= window);
            out.push(r.unwrap());
        }
        assert_eq!(out, (0..300u64).map(|x| x * 3).collect::<Vec<_>>());
        let max = M13_MAX.load(Ordering::SeqCst);
        assert!(max <= window, "window {window}: {max} ran at once");
    }
    pool.shutdown(true, false);
}

static M13C_NOW: AtomicUsize = AtomicUsize::new(0);
static M13C_MAX: AtomicUsize = AtomicUsize::new(0);

fn m13c_task(x: u64) -> u64 {
    let now = M13C_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    M13C_MAX.fetch_max(now, Ordering::SeqCst);
    thread::sleep(Duration::from_micros(300));
    M13C_NOW.fetch_sub(1, Ordering::SeqCst);
    x + 1
}

#[test]
fn m13_chunked_and_unordered() {
    let pool = ThreadPoolExecutor::new(8).unwrap();
    // chunked: each chunk is one task; items of a chunk run one after another.
    let got: Vec<u64> = pool
        .map_with(
            m13c_task,
            0..301u64,
            MapOptions::new().window(2).chunksize(7),
        )
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (1..302u64).collect::<Vec<_>>());
    assert!(M13C_MAX.load(Ordering::SeqCst) <= 2);
    // unordered: default window 16 on 8 workers: at most 8 run anyway; check indices.
    let mut seen: Vec<(usize, u64)> = pool
        .map_unordered(m13c_task, 0..500u64)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 500);
    for (i, (idx, v)) in seen.iter().enumerate() {
        assert_eq!((*idx, *v), (i, i as u64 + 1));
    }
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------------------
// M7: a dropped map cancels what was not yielded, and only that
// ---------------------------------------------------------------------------

static M7_RAN: AtomicUsize = AtomicUsize::new(0);
static M7_PULLED: AtomicUsize = AtomicUsize::new(0);

fn m7_task(x: u64) -> u64 {
    M7_RAN.fetch_add(1, Ordering::SeqCst);
    thread::sleep(Duration::from_micros(100 * (x % 3)));
    x
}

#[test]
fn m7_dropping_a_map_runs_at_most_yielded_plus_window() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for round in 0..200u64 {
        M7_RAN.store(0, Ordering::SeqCst);
        M7_PULLED.store(0, Ordering::SeqCst);
        let window = 1 + (round % 4) as usize;
        let take = (round % 7) as usize;
        let inputs = (0..1000u64).inspect(|_| {
            M7_PULLED.fetch_add(1, Ordering::SeqCst);
        });
        let mut m = pool.map_with(m7_task, inputs, MapOptions::new().window(window));
        for i in 0..take {
            assert_eq!(m.next(), Some(Ok(i as u64)));
        }
        drop(m);
        // Wait for the pool to be idle: a task submitted after all others
        // and waited for.
        let f = pool.submit(m7_task, 0);
        f.result(Some(Duration::from_secs(10))).unwrap();
        let ran = M7_RAN.load(Ordering::SeqCst) - 1;
        let pulled = M7_PULLED.load(Ordering::SeqCst);
        assert!(pulled <= take + window, "round {round}: pulled {pulled}");
        assert!(ran <= take + window, "round {round}: ran {ran}");
        assert!(ran >= take, "round {round}: ran {ran} < yielded {take}");
    }
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------------------
// M3: a map deadline holds and the map ends after it
// ---------------------------------------------------------------------------

fn sleep_ms(ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn m3_deadline_from_call_and_next_timeout_interplay() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let t0 = Instant::now();
    let mut m = pool.map_with(
        sleep_ms,
        [10u64, 2000, 10, 10],
        MapOptions::new().timeout(Duration::from_millis(300)),
    );
    assert_eq!(m.next_timeout(Duration::from_secs(5)), Ok(Some(Ok(10))));
    // patience shorter than the deadline: Timeout, nothing lost
    assert!(matches!(
        m.next_timeout(Duration::from_millis(20)),
        Err(Error::Timeout { .. })
    ));
    // patience longer than the deadline: the deadline ends the map
    let r = m.next_timeout(Duration::from_secs(5));
    assert!(
        matches!(r, Ok(Some(Err(Error::MapDeadline { .. })))),
        "{r:?}"
    );
    let el = t0.elapsed();
    assert!(el < Duration::from_millis(1000), "deadline held? {el:?}");
    assert_eq!(m.next(), None);
    assert_eq!(m.next_timeout(Duration::ZERO), Ok(None));
    pool.shutdown(false, true);
}

// ---------------------------------------------------------------------------
// Decision 2 / PP12: a task's own `Error::Timeout` is not the map deadline
// ---------------------------------------------------------------------------

/// A user's executor that runs tasks on a thread pool but fails every
/// second task with its own `Error::Timeout` (e.g. it enforces a budget).
#[derive(Debug)]
struct BudgetExecutor {
    inner: ThreadPoolExecutor,
    n: AtomicUsize,
}

impl Executor for BudgetExecutor {
    fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
        if self.n.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            task.fail(Error::Timeout {
                waited: Duration::from_millis(1),
            });
            return Ok(());
        }
        self.inner.execute(task)
    }
    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.inner.shutdown(wait, cancel_futures)
    }
    fn max_workers(&self) -> usize {
        2
    }
}

fn ident(x: u64) -> u64 {
    x
}

#[test]
fn decision2_a_tasks_own_timeout_error_is_not_the_map_deadline() {
    let ex = BudgetExecutor {
        inner: ThreadPoolExecutor::new(2).unwrap(),
        n: AtomicUsize::new(0),
    };
    // Without a map deadline: each item at its own position.
    let plain: Vec<_> = ex.map(ident, 0..4u64).collect();
    eprintln!("no deadline: {plain:?}");
    assert_eq!(plain.len(), 4);
    ex.n.store(0, Ordering::SeqCst);
    // With a (generous) map deadline: the same should come out.
    let with_deadline: Vec<_> = ex
        .map_with(
            ident,
            0..4u64,
            MapOptions::new().timeout(Duration::from_secs(60)),
        )
        .collect();
    eprintln!("60 s deadline: {with_deadline:?}");
    assert_eq!(
        with_deadline.len(),
        4,
        "a task's own Timeout error was taken for the map deadline: {with_deadline:?}"
    );
}

// ---------------------------------------------------------------------------
// ShutdownGuard forwards everything a forwarder must
// ---------------------------------------------------------------------------

fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn guard_pool_join_timeout_over_a_guarded_executor() {
    // Control: the bare thread pool.
    let bare = Pool::from_executor(Arc::new(ThreadPoolExecutor::new(2).unwrap())).unwrap();
    let r = bare.apply_async(double, 21).unwrap();
    bare.close();
    assert_eq!(bare.join_timeout(Duration::from_secs(10)), Ok(()));
    assert_eq!(r.get(None), Ok(&42));

    // The same pool behind a ShutdownGuard (a forwarder of this crate).
    let guarded = Pool::from_executor(Arc::new(ShutdownGuard::new(
        ThreadPoolExecutor::new(2).unwrap(),
    )))
    .unwrap();
    let r = guarded.apply_async(double, 21).unwrap();
    assert_eq!(r.get(None), Ok(&42));
    guarded.close();
    let t0 = Instant::now();
    let got = guarded.join_timeout(Duration::from_secs(2));
    eprintln!("guarded join_timeout: {got:?} after {:?}", t0.elapsed());
    assert_eq!(
        got,
        Ok(()),
        "join_timeout over a ShutdownGuard never succeeds"
    );
}

// ---------------------------------------------------------------------------
// A panicking input iterator (MP15): the panic reaches the caller, and no
// finished result is lost
// ---------------------------------------------------------------------------

/// The message of a caught panic.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(not a string)".into(), |s| s.to_string()),
    }
}

/// MP15: CPython's `imap` yields the results before a failing input, then
/// raises at its position. Here the panic reaches the caller at the
/// `next()` that pulls the bad input (a call pulls the next input before
/// it yields, to keep the window full), and the map goes on: the result
/// that call had finished comes out at the next one, in order, and the
/// inputs after the bad one are pulled as usual.
#[test]
fn mp15_a_panicking_input_reaches_the_caller_and_map_loses_no_result() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let inputs = (0..5u64).inspect(|&x| assert!(x != 2, "input 2 is bad"));
    let mut m = pool.map_with(ident, inputs, MapOptions::new().window(2));
    let panic =
        catch_unwind(AssertUnwindSafe(|| m.next())).expect_err("the first next() pulls input 2");
    assert_eq!(panic_text(panic), "input 2 is bad");
    assert_eq!(m.collect::<Vec<_>>(), vec![Ok(0), Ok(1), Ok(3), Ok(4)]);
    pool.shutdown(true, false);
}

/// The same for `map_unordered`: every finished result still comes out,
/// each with its index among the items the input yielded (the bad one
/// never was, so the input after it takes its index).
#[test]
fn mp15_a_panicking_input_reaches_the_caller_and_map_unordered_loses_no_result() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    // The window is 4 (2 × workers): the first yield pulls input 4.
    let inputs = (0..7u64).inspect(|&x| assert!(x != 4, "input 4 is bad"));
    let mut m = pool.map_unordered(ident, inputs);
    let panic =
        catch_unwind(AssertUnwindSafe(|| m.next())).expect_err("the first next() pulls input 4");
    assert_eq!(panic_text(panic), "input 4 is bad");
    let mut rest: Vec<_> = m.collect();
    rest.sort_by_key(|(i, _)| *i);
    assert_eq!(
        rest,
        vec![
            (0, Ok(0)),
            (1, Ok(1)),
            (2, Ok(2)),
            (3, Ok(3)),
            (4, Ok(5)),
            (5, Ok(6))
        ]
    );
    pool.shutdown(true, false);
}

/// Iterates `next` to the end, catching panics; returns the values and the
/// panics' messages (at most two: an input that keeps panicking ends it).
fn drain_catching<T, E: std::fmt::Debug>(
    mut next: impl FnMut() -> Option<Result<T, E>>,
) -> (Vec<T>, Vec<String>) {
    let (mut values, mut panics) = (Vec::new(), Vec::new());
    while panics.len() < 2 {
        match catch_unwind(AssertUnwindSafe(&mut next)) {
            Ok(Some(r)) => values.push(r.expect("every item succeeds")),
            Ok(None) => break,
            Err(payload) => panics.push(panic_text(payload)),
        }
    }
    (values, panics)
}

/// With `chunksize`, CPython's `imap` loses the whole chunk of a failing
/// input (MP15: the error at item 7 with chunksize 2 gives 6 results, so
/// item 6 is never run). Here the items the input gave before it panicked
/// begin the next chunk: only the bad input, which the input never gave,
/// is missing.
#[test]
fn mp15_a_panicking_input_loses_no_item_of_its_chunk() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for chunksize in [2, 4, 5] {
        let inputs = (0..40u64).inspect(|&x| assert!(x != 21, "input 21 is bad"));
        let mut m = pool.map_with(ident, inputs, MapOptions::new().chunksize(chunksize));
        let (got, panics) = drain_catching(|| m.next());
        assert_eq!(panics, ["input 21 is bad"], "chunksize {chunksize}");
        let expected: Vec<u64> = (0..40).filter(|&x| x != 21).collect();
        assert_eq!(got, expected, "chunksize {chunksize}");
    }
    pool.shutdown(true, false);
}

/// The same through `imap_unordered` with chunks, on the thread-backed
/// `Pool`.
#[test]
fn mp15_a_panicking_input_loses_no_item_of_its_chunk_in_pool_imap_unordered() {
    let pool = ThreadPool::new(2).unwrap();
    let inputs = (0..40u64).inspect(|&x| assert!(x != 21, "input 21 is bad"));
    let mut m = pool
        .imap_unordered_with(ident, inputs, MapOptions::new().chunksize(4))
        .unwrap();
    let (mut got, panics) = drain_catching(|| m.next());
    assert_eq!(panics, ["input 21 is bad"]);
    got.sort_unstable();
    let expected: Vec<u64> = (0..40).filter(|&x| x != 21).collect();
    assert_eq!(got, expected);
    pool.terminate();
}

// ---------------------------------------------------------------------------
// Map inside a pool task: the deadline still holds (T10 helping)
// ---------------------------------------------------------------------------

#[test]
fn m3_deadline_of_a_map_iterated_inside_a_pool_task() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let p2 = pool.clone();
    let f = pool.spawn(move || {
        let t0 = Instant::now();
        let mut m = p2.map_with(
            sleep_ms,
            [600u64, 600, 600, 600, 600, 600],
            MapOptions::new()
                .window(6)
                .timeout(Duration::from_millis(100)),
        );
        let first = m.next();
        (format!("{first:?}"), t0.elapsed())
    });
    let (first, el) = f.into_result().unwrap();
    eprintln!("inside a task: {first} after {el:?}");
    assert!(first.contains("MapDeadline"), "{first}");
    assert!(el < Duration::from_millis(1500), "deadline overran: {el:?}");
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------------------
// MapUnordered next_timeout / drop races
// ---------------------------------------------------------------------------

fn tiny(x: u64) -> u64 {
    if x.is_multiple_of(5) {
        thread::sleep(Duration::from_micros(50));
    }
    x
}

#[test]
fn map_unordered_next_timeout_loses_nothing() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for _ in 0..50 {
        let mut m = pool.map_unordered(tiny, 0..200u64);
        let mut seen = [false; 200];
        let mut count = 0;
        loop {
            match m.next_timeout(Duration::from_micros(10)) {
                Ok(Some((i, r))) => {
                    assert_eq!(r, Ok(i as u64));
                    assert!(!seen[i]);
                    seen[i] = true;
                    count += 1;
                }
                Ok(None) => break,
                Err(Error::Timeout { .. }) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(count, 200);
    }
    pool.shutdown(true, false);
}

#[test]
fn ordered_next_timeout_loses_nothing() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for _ in 0..30 {
        for chunk in [1usize, 3] {
            let mut m = pool.map_with(
                tiny,
                0..200u64,
                MapOptions::new().chunksize(chunk).window(3),
            );
            let mut got = Vec::new();
            loop {
                match m.next_timeout(Duration::from_micros(10)) {
                    Ok(Some(r)) => got.push(r.unwrap()),
                    Ok(None) => break,
                    Err(Error::Timeout { .. }) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(got, (0..200u64).collect::<Vec<_>>());
        }
    }
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------------------
// A user executor that runs inline (inside execute)
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Inline;

impl Executor for Inline {
    fn execute(&self, task: Task) -> Result<(), (Task, Error)> {
        task.run();
        Ok(())
    }
    fn shutdown(&self, _: bool, _: bool) {}
    fn max_workers(&self) -> usize {
        1
    }
}

#[test]
fn inline_executor_map_and_unordered() {
    let got: Vec<_> = Inline.map(double, 0..10u64).map(Result::unwrap).collect();
    assert_eq!(got, (0..10).map(|x| x * 2).collect::<Vec<_>>());
    let mut un: Vec<_> = Inline
        .map_unordered(double, 0..10u64)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    un.sort();
    assert_eq!(un, (0..10).map(|x| (x as usize, x * 2)).collect::<Vec<_>>());
    let ch: Vec<_> = Inline
        .map_with(double, 0..10u64, MapOptions::new().chunksize(3))
        .map(Result::unwrap)
        .collect();
    assert_eq!(ch, (0..10).map(|x| x * 2).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// M7 / M4 on a kill_on_cancel process pool: "tasks already running finish
// on their own" (Map docs), "running ones continue" (M4)
// ---------------------------------------------------------------------------

concurrent_futures::process_pool_test_worker!();

fn write_after((path, ms): (String, u64)) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    std::fs::write(&path, b"done").unwrap();
    ms
}

fn killing_pool() -> concurrent_futures::ProcessPoolExecutor {
    pool_with(true)
}

fn pool_with(kill: bool) -> concurrent_futures::ProcessPoolExecutor {
    concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(1)
        .kill_on_cancel(kill)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

fn marker(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("review_map_exec_{}_{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

#[test]
fn m7_dropping_a_map_on_a_kill_on_cancel_pool_leaves_the_running_task() {
    let pool = killing_pool();
    let path = marker("drop");
    let m = pool.map(
        write_after,
        [(path.clone(), 600u64), (marker("drop2"), 600)],
    );
    thread::sleep(Duration::from_millis(300)); // the first is running now
    drop(m);
    thread::sleep(Duration::from_millis(1200));
    let finished = std::path::Path::new(&path).exists();
    pool.shutdown(true, false);
    assert!(
        finished,
        "the running task was killed by dropping the map (docs: running tasks finish on their own)"
    );
}

#[test]
fn m4_map_deadline_on_a_kill_on_cancel_pool_leaves_the_running_task() {
    let pool = killing_pool();
    let path = marker("deadline");
    let mut m = pool.map_with(
        write_after,
        [(path.clone(), 800u64)],
        MapOptions::new().timeout(Duration::from_millis(300)),
    );
    let r = m.next();
    assert!(matches!(r, Some(Err(Error::MapDeadline { .. }))), "{r:?}");
    thread::sleep(Duration::from_millis(1200));
    let finished = std::path::Path::new(&path).exists();
    pool.shutdown(true, false);
    assert!(
        finished,
        "the running task was killed at the map deadline (M4: running ones continue)"
    );
}

/// Control: the same drop on a default pool lets the running task finish.
#[test]
fn control_dropping_a_map_on_a_default_process_pool_leaves_the_running_task() {
    let pool = pool_with(false);
    let path = marker("control");
    let m = pool.map(
        write_after,
        [(path.clone(), 600u64), (marker("control2"), 600)],
    );
    thread::sleep(Duration::from_millis(300));
    drop(m);
    thread::sleep(Duration::from_millis(1200));
    let finished = std::path::Path::new(&path).exists();
    pool.shutdown(true, false);
    assert!(finished, "control failed: the harness did not run the task");
}

/// Three items behind a size hint that claims `usize::MAX` (a hint may
/// overstate; only unsafe code must not trust it).
struct Boastful(std::ops::Range<u64>);

impl Iterator for Boastful {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// M9: a chunk reserves room for at most a few thousand items before they
/// come, whatever `chunksize` and the input's size hint say; both at
/// `usize::MAX` used to panic with "capacity overflow" (and `1 << 40`
/// aborted the process). Found by review.
#[test]
fn m9_a_huge_chunksize_over_a_huge_size_hint_reserves_no_more_than_it_needs() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for chunksize in [usize::MAX, 1 << 40] {
        let got: Vec<_> = pool
            .map_with(
                ident,
                Boastful(0..3),
                MapOptions::new().chunksize(chunksize),
            )
            .collect();
        assert_eq!(got, vec![Ok(0), Ok(1), Ok(2)], "chunksize {chunksize}");
    }
    pool.shutdown(true, false);
}
