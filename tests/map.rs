//! `ExecutorExt::map` / `map_with` / `map_unordered` (M1-M16) and the
//! decisions about map (decision 2: keep going after an item error;
//! decision 5: bounded by default, never `window + 1` in flight).
//!
//! Portable tasks are `fn` items, so the tasks here talk to the test through
//! statics: each test has its own gate (a latch the test opens) and its own
//! counters, so tests running in parallel do not interfere. Long timeouts
//! are hang guards only; short ones must expire on a task held at a gate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, Executor, ExecutorExt, MapOptions, ThreadPoolExecutor};

mod common;
use common::Manual;

/// Hang guard: long enough never to expire on a working library.
const HANG: Duration = Duration::from_secs(10);
/// A deadline that must expire, because the item it waits for is held.
const SHORT: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A latch: tasks wait at it until the test opens it (or the hang guard
/// passes).
struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    const fn new() -> Self {
        Gate {
            open: Mutex::new(false),
            cond: Condvar::new(),
        }
    }

    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let _ = self.cond.wait_timeout_while(open, HANG, |o| !*o).unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cond.notify_all();
    }
}

/// Opens the gate when dropped, so a failing test never leaves workers
/// held for the whole hang guard.
struct OpenOnDrop(&'static Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Waits (with a hang guard) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

fn ident(x: u64) -> u64 {
    x
}

fn double(x: u64) -> u64 {
    2 * x
}

fn square(x: u64) -> u64 {
    x * x
}

/// Later inputs finish first.
fn reverse_sleepy_square(x: u64) -> u64 {
    thread::sleep(Duration::from_millis(8u64.saturating_sub(x % 8)));
    x * x
}

fn fails_on_3(x: u64) -> u64 {
    if x == 3 {
        panic!("three");
    }
    x
}

fn add(pair: (u64, u64)) -> u64 {
    pair.0 + pair.1
}

// ---------------------------------------------------------------------------
// M1: ordered results
// ---------------------------------------------------------------------------

/// M1: results come in input order whatever the completion order.
#[test]
fn m1_results_in_input_order() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let got: Vec<u64> = pool
        .map(reverse_sleepy_square, 0..24)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (0..24).map(|x| x * x).collect::<Vec<_>>());
}

/// M1: in input order with a one-task window too.
#[test]
fn m1_results_in_input_order_window_one() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let got: Vec<u64> = pool
        .map_with(square, 0..10, MapOptions::new().window(1))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
}

/// M1: several inputs are zipped (stopping at the shortest) into one tuple
/// argument.
#[test]
fn m1_zipped_inputs_stop_at_the_shortest() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let got: Vec<u64> = pool
        .map(add, (0..5).zip(10..100))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [10, 12, 14, 16, 18]);
}

/// M14: a map over an empty iterator yields nothing.
#[test]
fn m14_map_over_empty_iterator() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut m = pool.map(ident, Vec::<u64>::new());
    assert_eq!(m.in_flight(), 0);
    assert!(m.next().is_none());
    assert!(m.next().is_none());
    assert!(
        pool.map_unordered(ident, std::iter::empty())
            .next()
            .is_none()
    );
}

/// M14: a map over an infinite iterator is lazy: it pulls inputs as results
/// are consumed.
#[test]
fn m14_lazy_consumption_of_infinite_iterator() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let inputs = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let window = 3;
    let got: Vec<u64> = pool
        .map_with(double, inputs, MapOptions::new().window(window))
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 2, 4, 6, 8]);
    assert!(pulled.load(Ordering::SeqCst) <= 5 + window);
}

// ---------------------------------------------------------------------------
// Decision 2 / M5 / M6: an item error stays at its position
// ---------------------------------------------------------------------------

/// Decision 2 (M5, M6): a task's failure is yielded at its own position and
/// the iteration continues.
#[test]
fn decision2_m5_error_at_its_position_and_iteration_continues() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let got: Vec<Result<u64, Error>> = pool.map(fails_on_3, 0..7).collect();
    assert_eq!(got.len(), 7);
    for (i, r) in got.iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(r, Err(Error::Panicked { message, .. }) if message == "three"),
                "{r:?}"
            );
        } else {
            assert_eq!(r, &Ok(i as u64));
        }
    }
}

/// Decision 2: a task's failure and the map deadline are different error
/// variants; a task failure is not a timeout.
#[test]
fn decision2_task_failure_is_not_the_map_deadline() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let err = pool
        .map_with(fails_on_3, 3..4, MapOptions::new().timeout(HANG))
        .next()
        .unwrap()
        .unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_timeout());
    assert!(!matches!(err, Error::MapDeadline { .. }));
}

/// Decision 2 for `map_unordered`: the failure comes with its own index and
/// the others still arrive.
#[test]
fn decision2_map_unordered_error_at_its_index() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut got: Vec<(usize, Result<u64, Error>)> = pool.map_unordered(fails_on_3, 0..7).collect();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got.len(), 7);
    for (i, r) in &got {
        if *i == 3 {
            assert!(r.as_ref().unwrap_err().is_panic());
        } else {
            assert_eq!(r, &Ok(*i as u64));
        }
    }
}

// ---------------------------------------------------------------------------
// M3 / M4: the map deadline
// ---------------------------------------------------------------------------

static M3_GATE: Gate = Gate::new();
static M3_LATER_RAN: AtomicUsize = AtomicUsize::new(0);

fn m3_task(x: u64) -> u64 {
    if x == 0 {
        M3_GATE.wait();
    } else {
        M3_LATER_RAN.fetch_add(1, Ordering::SeqCst);
    }
    x
}

/// M3/M4: when the deadline passes while the item waited for is unfinished,
/// that item yields `MapDeadline`, the iterator then ends, and the later
/// items are cancelled (never run).
#[test]
fn m3_m4_deadline_gives_map_deadline_then_ends_and_cancels_later() {
    let _open = OpenOnDrop(&M3_GATE);
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let mut m = pool.map_with(m3_task, 0..10, MapOptions::new().window(4).timeout(SHORT));
    let err = m.next().unwrap().unwrap_err();
    assert_eq!(err, Error::MapDeadline { timeout: SHORT });
    assert!(err.is_timeout());
    assert!(m.next().is_none());
    assert!(m.next().is_none());
    assert_eq!(m.in_flight(), 0);
    M3_GATE.open();
    pool.shutdown(true, false);
    assert_eq!(M3_LATER_RAN.load(Ordering::SeqCst), 0);
}

static M3B_GATE: Gate = Gate::new();

fn m3b_task(x: u64) -> u64 {
    if x == 2 {
        M3B_GATE.wait();
    }
    x
}

/// M3: results before the held item are yielded in order; the deadline
/// error comes at the held item (never after it) and ends the iteration.
#[test]
fn m3_results_before_the_deadline_are_yielded_first() {
    let _open = OpenOnDrop(&M3B_GATE);
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let timeout = Duration::from_millis(500);
    let got: Vec<Result<u64, Error>> = pool
        .map_with(m3b_task, 0..6, MapOptions::new().window(3).timeout(timeout))
        .collect();
    // Items 0 and 1 are instant, so normally got == [Ok(0), Ok(1), Err(..)];
    // a very slow machine may hit the deadline earlier, never later.
    let (last, oks) = got.split_last().unwrap();
    assert!(oks.len() <= 2, "{got:?}");
    for (i, r) in oks.iter().enumerate() {
        assert_eq!(r, &Ok(i as u64));
    }
    assert_eq!(last, &Err(Error::MapDeadline { timeout }));
}

static M3C_GATE: Gate = Gate::new();

fn m3c_task(x: u64) -> u64 {
    if x == 0 {
        M3C_GATE.wait();
    }
    x
}

/// M3: the deadline counts from the `map()` call, not from the first
/// `next()`. Item 0 is held; once the deadline has passed, the first
/// `next()` gives `MapDeadline` at once. Were the deadline counted from
/// `next()`, it would wait `timeout` more, during which the opener below
/// releases item 0, and it would yield `Ok(0)` instead. (A correct library
/// passes unless this thread stalls for a whole second between starting the
/// opener and the check in `next()`.)
#[test]
fn m3_deadline_counts_from_the_map_call_not_from_next() {
    let _open = OpenOnDrop(&M3C_GATE);
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let timeout = Duration::from_secs(2);
    let mut m = pool.map_with(m3c_task, 0..3, MapOptions::new().timeout(timeout));
    thread::sleep(timeout); // the deadline has passed, item 0 is still held
    let opener = thread::spawn(|| {
        thread::sleep(Duration::from_secs(1));
        M3C_GATE.open();
    });
    assert_eq!(m.next(), Some(Err(Error::MapDeadline { timeout })));
    opener.join().unwrap();
}

/// M3: a deadline that does not pass changes nothing.
#[test]
fn m3_deadline_not_reached_yields_everything() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let got: Vec<u64> = pool
        .map_with(square, 0..10, MapOptions::new().timeout(HANG))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..10).map(|x| x * x).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Decision 5 / M13: bounded window
// ---------------------------------------------------------------------------

static M13_GATE: Gate = Gate::new();
static M13_STARTED: AtomicUsize = AtomicUsize::new(0);
static M13_NOW: AtomicUsize = AtomicUsize::new(0);
static M13_MAX: AtomicUsize = AtomicUsize::new(0);

fn m13_task(x: u64) -> u64 {
    M13_STARTED.fetch_add(1, Ordering::SeqCst);
    let now = M13_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    M13_MAX.fetch_max(now, Ordering::SeqCst);
    M13_GATE.wait();
    thread::sleep(Duration::from_millis(1));
    M13_NOW.fetch_sub(1, Ordering::SeqCst);
    x
}

/// M13 / decision 5: with a window of `w` and more idle workers than `w`,
/// at most `w` tasks are ever in flight — not `w + 1`, even while `next()`
/// blocks on the oldest result.
#[test]
fn m13_window_never_exceeded_not_even_while_next_blocks() {
    let _open = OpenOnDrop(&M13_GATE);
    let window = 3;
    let pool = ThreadPoolExecutor::new(8).unwrap();
    let mut m = pool.map_with(m13_task, 0..30, MapOptions::new().window(window));
    assert_eq!(m.in_flight(), window);
    eventually("the window's tasks start", || {
        M13_STARTED.load(Ordering::SeqCst) == window
    });
    let first = thread::scope(|s| {
        let h = s.spawn(|| m.next());
        // While `next()` blocks on item 0, no fourth task may start (CPython
        // submits one more before waiting: gh-131466).
        thread::sleep(SHORT);
        assert_eq!(M13_STARTED.load(Ordering::SeqCst), window);
        M13_GATE.open();
        h.join().unwrap()
    });
    assert_eq!(first, Some(Ok(0)));
    let mut expected = 1;
    while let Some(r) = m.next() {
        assert_eq!(r, Ok(expected));
        assert!(m.in_flight() <= window);
        expected += 1;
    }
    assert_eq!(expected, 30);
    assert!(M13_MAX.load(Ordering::SeqCst) <= window);
    assert_eq!(M13_STARTED.load(Ordering::SeqCst), 30);
}

static M13B_NOW: AtomicUsize = AtomicUsize::new(0);
static M13B_MAX: AtomicUsize = AtomicUsize::new(0);

fn m13b_task(x: u64) -> u64 {
    let now = M13B_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    M13B_MAX.fetch_max(now, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(2));
    M13B_NOW.fetch_sub(1, Ordering::SeqCst);
    x
}

/// M13: `map_unordered` keeps at most its default window (2 × workers) in
/// flight, and no more than `max_workers` of them run at once.
#[test]
fn m13_map_unordered_in_flight_bounded_by_default_window() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut m = pool.map_unordered(m13b_task, 0..40);
    assert!(m.in_flight() <= 4);
    let mut n = 0;
    while let Some((i, r)) = m.next() {
        assert_eq!(r, Ok(i as u64));
        assert!(m.in_flight() <= 4);
        n += 1;
    }
    assert_eq!(n, 40);
    assert!(M13B_MAX.load(Ordering::SeqCst) <= 2);
}

/// Decision 5: map is bounded by default, with a window of
/// `2 × max_workers`, pulling exactly that many inputs at the call.
#[test]
fn decision5_default_window_is_twice_max_workers() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let inputs = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let mut m = pool.map(ident, inputs);
    assert_eq!(m.in_flight(), 4);
    assert_eq!(pulled.load(Ordering::SeqCst), 4);
    assert_eq!(m.next(), Some(Ok(0)));
    assert!(m.in_flight() <= 4);
    assert!(pulled.load(Ordering::SeqCst) <= 5);
}

/// M12: with a window of `b`, exactly `b` inputs are pulled at the call.
#[test]
fn m12_window_pulls_exactly_window_inputs_at_the_call() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for window in [1, 2, 5] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let p = pulled.clone();
        let inputs = (0u64..100).inspect(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
        });
        let m = pool.map_with(ident, inputs, MapOptions::new().window(window));
        assert_eq!(m.in_flight(), window);
        assert_eq!(pulled.load(Ordering::SeqCst), window);
    }
}

/// `MapOptions::window(0)` is treated as one.
/// M11 (deliberate deviation): CPython's `buffersize` raises `TypeError` for
/// a non-integer and `ValueError` below 1; here the window is a `usize` (a
/// non-integer does not compile) and zero means one, as `MapOptions` says.
#[test]
fn window_zero_is_treated_as_one() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut m = pool.map_with(ident, 0..5, MapOptions::new().window(0));
    assert_eq!(m.in_flight(), 1);
    let got: Vec<u64> = m.by_ref().map(Result::unwrap).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

// ---------------------------------------------------------------------------
// M7: dropping the iterator cancels what was not yielded
// ---------------------------------------------------------------------------

static M7_GATE: Gate = Gate::new();
static M7_FIRST_STARTED: AtomicBool = AtomicBool::new(false);
static M7_LATER_RAN: AtomicUsize = AtomicUsize::new(0);

fn m7_task(x: u64) -> u64 {
    if x == 0 {
        M7_FIRST_STARTED.store(true, Ordering::SeqCst);
        M7_GATE.wait();
    } else {
        M7_LATER_RAN.fetch_add(1, Ordering::SeqCst);
    }
    x
}

/// M7: dropping the map cancels the queued tasks; the running one finishes
/// on its own.
#[test]
fn m7_dropping_the_map_cancels_queued_tasks() {
    let _open = OpenOnDrop(&M7_GATE);
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let m = pool.map_with(m7_task, 0..10, MapOptions::new().window(4));
    eventually("item 0 starts", || M7_FIRST_STARTED.load(Ordering::SeqCst));
    drop(m);
    M7_GATE.open();
    pool.shutdown(true, false);
    assert_eq!(M7_LATER_RAN.load(Ordering::SeqCst), 0);
}

static M7U_GATE: Gate = Gate::new();
static M7U_FIRST_STARTED: AtomicBool = AtomicBool::new(false);
static M7U_LATER_RAN: AtomicUsize = AtomicUsize::new(0);

fn m7u_task(x: u64) -> u64 {
    if x == 0 {
        M7U_FIRST_STARTED.store(true, Ordering::SeqCst);
        M7U_GATE.wait();
    } else {
        M7U_LATER_RAN.fetch_add(1, Ordering::SeqCst);
    }
    x
}

/// M7 for `map_unordered`: dropping it cancels the queued tasks.
#[test]
fn m7_dropping_map_unordered_cancels_queued_tasks() {
    let _open = OpenOnDrop(&M7U_GATE);
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let m = pool.map_unordered(m7u_task, 0..10);
    eventually("item 0 starts", || M7U_FIRST_STARTED.load(Ordering::SeqCst));
    drop(m);
    M7U_GATE.open();
    pool.shutdown(true, false);
    assert_eq!(M7U_LATER_RAN.load(Ordering::SeqCst), 0);
}

static M7P_GATE: Gate = Gate::new();
static M7P_LATER_RAN: AtomicUsize = AtomicUsize::new(0);

fn m7p_task(x: u64) -> u64 {
    if x == 2 {
        M7P_GATE.wait();
    } else if x > 2 {
        M7P_LATER_RAN.fetch_add(1, Ordering::SeqCst);
    }
    x
}

/// M7: dropping a partly consumed map cancels the rest.
#[test]
fn m7_dropping_partly_consumed_map_cancels_the_rest() {
    let _open = OpenOnDrop(&M7P_GATE);
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let mut m = pool.map_with(m7p_task, 0..10, MapOptions::new().window(3));
    assert_eq!(m.next(), Some(Ok(0)));
    assert_eq!(m.next(), Some(Ok(1)));
    // Item 2 holds the only worker; 3 and 4 are queued.
    drop(m);
    M7P_GATE.open();
    pool.shutdown(true, false);
    assert_eq!(M7P_LATER_RAN.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------
// M8: the iterator keeps nothing it has yielded
// ---------------------------------------------------------------------------

/// Live `M8Value`s: made by `m8_make`, counted out when dropped.
static M8_LIVE: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct M8Value(u64);

impl Drop for M8Value {
    fn drop(&mut self) {
        M8_LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn m8_make(x: u64) -> M8Value {
    M8_LIVE.fetch_add(1, Ordering::SeqCst);
    M8Value(x)
}

/// M8 (CPython `test_free_reference`): the map iterator keeps no reference
/// to a result it has yielded. The test runs each task by hand (`Manual`
/// executor, window 1), so exactly one value exists when the item is
/// yielded; once the caller drops it, none is left although the map lives
/// on (and has already submitted the next item).
#[test]
fn m8_the_iterator_holds_no_reference_to_yielded_results() {
    let ex = Manual::default();
    let mut m = ex.map_with(m8_make, 0..3, MapOptions::new().window(1));
    for i in 0..3 {
        ex.take().run();
        assert_eq!(M8_LIVE.load(Ordering::SeqCst), 1, "item {i} was made");
        let value = m.next().unwrap().unwrap();
        assert_eq!(value.0, i);
        drop(value);
        assert_eq!(
            M8_LIVE.load(Ordering::SeqCst),
            0,
            "the map still holds yielded item {i}"
        );
    }
    assert!(m.next().is_none());
    assert!(ex.take_all().is_empty());
}

// ---------------------------------------------------------------------------
// map_unordered
// ---------------------------------------------------------------------------

/// `map_unordered` yields every `(index, result)` pair exactly once.
#[test]
fn map_unordered_yields_every_pair_exactly_once() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let mut got: Vec<(usize, u64)> = pool
        .map_unordered(reverse_sleepy_square, 0..50)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    got.sort();
    let expected: Vec<(usize, u64)> = (0..50).map(|i| (i, (i * i) as u64)).collect();
    assert_eq!(got, expected);
}

/// `map_unordered` over an infinite iterator is lazy too.
#[test]
fn map_unordered_infinite_iterator_is_lazy() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut got: Vec<(usize, u64)> = pool
        .map_unordered(double, 0u64..)
        .take(10)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    got.sort();
    for (i, v) in &got {
        assert_eq!(*v, 2 * *i as u64);
    }
    assert_eq!(got.len(), 10);
}

// ---------------------------------------------------------------------------
// Through dyn Executor, and after shutdown
// ---------------------------------------------------------------------------

/// map through `Arc<dyn Executor>`.
#[test]
fn map_through_arc_dyn_executor() {
    let ex: Arc<dyn Executor> = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let got: Vec<u64> = ex.map(square, 0..6).map(Result::unwrap).collect();
    assert_eq!(got, [0, 1, 4, 9, 16, 25]);
    let mut un: Vec<usize> = ex.map_unordered(square, 0..6).map(|(i, _)| i).collect();
    un.sort();
    assert_eq!(un, [0, 1, 2, 3, 4, 5]);
    ex.shutdown(true, false);
}

/// map through `Box<dyn Executor>`.
#[test]
fn map_through_box_dyn_executor() {
    let ex: Box<dyn Executor> = Box::new(ThreadPoolExecutor::new(2).unwrap());
    let got: Vec<u64> = ex
        .map_with(double, 0..6, MapOptions::new().window(2).timeout(HANG))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 2, 4, 6, 8, 10]);
    ex.shutdown(true, false);
}

/// M15: mapping on a shut-down executor yields one `Error::Shutdown` and
/// ends, without pulling more input (CPython's map raises at once).
#[test]
fn m15_map_after_shutdown_yields_one_shutdown_error_and_ends() {
    static PULLED: AtomicUsize = AtomicUsize::new(0);
    let pool = ThreadPoolExecutor::new(2).unwrap();
    pool.shutdown(true, false);
    let inputs = (0u64..).inspect(|_| {
        PULLED.fetch_add(1, Ordering::SeqCst);
    });
    let got: Vec<Result<u64, Error>> = pool.map(ident, inputs).collect();
    assert_eq!(got, [Err(Error::Shutdown)]);
    assert_eq!(PULLED.load(Ordering::SeqCst), 1);
}

/// M15: a shutdown in the middle of a map over an endless input. The
/// tasks already submitted finish and are yielded in order; the next
/// refill is refused, its item fails with `Error::Shutdown`, and the map
/// ends there.
#[test]
fn m15_shutdown_during_a_map_over_an_endless_input_ends_the_map() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut m = pool.map_with(ident, 0u64.., MapOptions::new().window(4));
    assert_eq!(m.next(), Some(Ok(0)));
    pool.shutdown(true, false);
    let rest: Vec<Result<u64, Error>> = m.collect();
    assert_eq!(rest, [Ok(1), Ok(2), Ok(3), Ok(4), Err(Error::Shutdown)]);
}

/// M15 with chunks: the refused chunk fails each of its items, and the map
/// ends after it.
#[test]
fn m15_shutdown_during_a_chunked_map_ends_after_the_refused_chunk() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let options = MapOptions::new().window(2).chunksize(2);
    let mut m = pool.map_with(ident, 0u64.., options);
    assert_eq!(m.next(), Some(Ok(0)));
    pool.shutdown(true, false);
    let rest: Vec<Result<u64, Error>> = m.collect();
    // Taking chunk [0, 1] refilled the window with [4, 5] before the
    // shutdown; taking [2, 3] after it tried [6, 7], which was refused.
    assert_eq!(
        rest,
        [
            Ok(1),
            Ok(2),
            Ok(3),
            Ok(4),
            Ok(5),
            Err(Error::Shutdown),
            Err(Error::Shutdown)
        ]
    );
}

/// M15 for `map_unordered`: after the shutdown, what was in flight is
/// yielded, then one refused item, and the iteration ends.
#[test]
fn m15_shutdown_during_map_unordered_ends_it() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut m = pool.map_unordered(ident, 0u64..);
    let (i, first) = m.next().expect("a first result");
    assert_eq!(first, Ok(i as u64));
    pool.shutdown(true, false);
    let rest: Vec<(usize, Result<u64, Error>)> = m.collect();
    let refused: Vec<usize> = rest
        .iter()
        .filter(|(_, r)| r == &Err(Error::Shutdown))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(refused.len(), 1, "{rest:?}");
    for (i, r) in &rest {
        if !refused.contains(i) {
            assert_eq!(r, &Ok(*i as u64));
        }
    }
}

/// M16: a map over `workers + 1` items followed by `shutdown(wait)` does not
/// hang, and the results are all there.
#[test]
fn m16_map_then_shutdown_does_not_hang() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let m = pool.map_with(square, 0..3, MapOptions::new().window(3));
    pool.shutdown(true, false);
    let got: Vec<u64> = m.map(Result::unwrap).collect();
    assert_eq!(got, [0, 1, 4]);
}

/// M3: a deadline too large for the clock means "no limit", not a panic.
#[test]
fn m3_huge_timeout_means_no_limit() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let got: Vec<u64> = pool
        .map_with(double, 0..4, MapOptions::new().timeout(Duration::MAX))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 2, 4, 6]);
}

fn identity(x: u64) -> u64 {
    x
}

/// M13/decision 5: the window is a bound, not a size. `usize::MAX` (the
/// natural way to ask for CPython's eager map) used to panic with
/// "capacity overflow", and 2^40 aborted the process trying to allocate
/// 24 TiB up front, for a map over three items.
#[test]
fn m13_a_huge_window_is_a_bound_and_allocates_nothing_up_front() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    for window in [usize::MAX, 1 << 40] {
        let got: Vec<u64> = pool
            .map_with(identity, 0..3u64, MapOptions::new().window(window))
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, [0, 1, 2], "window {window}");
    }
}

fn slow_identity(x: u64) -> u64 {
    thread::sleep(Duration::from_millis(200));
    x
}

/// `size_hint`'s lower bound never exceeds what the map yields: with a
/// deadline, one `MapDeadline` item may stand for everything in flight.
#[test]
fn size_hint_of_a_map_with_a_deadline_counts_at_most_one_item_as_certain() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let m = pool.map_with(
        slow_identity,
        0..3u64,
        MapOptions::new()
            .window(3)
            .timeout(Duration::from_millis(20)),
    );
    let (lower, upper) = m.size_hint();
    let items: Vec<_> = m.collect();
    assert!(matches!(items.last(), Some(Err(Error::MapDeadline { .. }))));
    assert!(
        lower <= items.len(),
        "size_hint ({lower}, {upper:?}), {items:?}"
    );
    assert!(upper.is_none_or(|u| u >= items.len()));
}

/// A user's executor that has been closed: as `Executor::execute`'s docs
/// say ("On error (the executor is shut down or broken) the task is
/// handed back"), it refuses every task. It names the refusal with an
/// error of its own choosing (`Pool` uses `Error::Shutdown`, as the
/// executors do).
#[derive(Debug, Default)]
struct Closed {
    calls: std::sync::atomic::AtomicUsize,
}

impl Executor for Closed {
    fn execute(
        &self,
        task: concurrent_futures::Task,
    ) -> Result<(), (concurrent_futures::Task, Error)> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err((task, Error::InvalidConfig("executor not running".into())))
    }
    fn shutdown(&self, _wait: bool, _cancel_futures: bool) {}
    fn max_workers(&self) -> usize {
        2
    }
}

/// M15 with a user's executor that refuses with an error of its own: the
/// map ends after that item, whatever the error (only a process pool's
/// `Encode` fails one item and goes on). Mapping over an endless input
/// must not call `execute` forever.
#[test]
fn m15_a_map_over_an_endless_input_ends_when_a_user_executor_refuses() {
    let ex = Closed::default();
    let yielded = ex.map(double_it, 0u64..).take(10_000).count();
    let unordered = ex.map_unordered(double_it, 0u64..).take(10_000).count();
    let chunked = ex
        .map_with(double_it, 0u64.., MapOptions::new().chunksize(4))
        .take(10_000)
        .count();
    assert_eq!(
        (yielded, unordered, chunked),
        (1, 1, 4),
        "the map did not end at the refusal: execute was called {} times",
        ex.calls.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn double_it(x: u64) -> u64 {
    x * 2
}
