//! Stress tests (issue 5, part 2).
//!
//! Sizes are scaled so that a plain `cargo test` stays fast; set
//! `CF_STRESS=1` for the full sizes of the issue:
//!
//! | test | default | `CF_STRESS=1` |
//! |---|---|---|
//! | tiny tasks | 100,000 | 1,000,000 |
//! | 8 submitters racing `shutdown(false, true)` | 3 rounds × 8 × 2,000 | 20 rounds × 8 × 20,000 |
//! | callbacks that submit (roots × depth 3) | 2,000 | 20,000 |
//! | `as_completed` over | 10,000 futures | 100,000 futures |
//! | thread pool created and dropped | 100 times | 1,000 times |
//! | process pool created and dropped | 20 times | 100 times |
//!
//! ```text
//! CF_STRESS=1 cargo test --release --test stress
//! ```
//!
//! Nothing here measures time: every timeout is a hang guard. The
//! create-and-drop tests count `/proc/self/task` and `/proc/self/fd`, which
//! other tests running in the same process would disturb, so they run in a
//! helper process (this test binary again, selecting one `#[ignore]`d
//! helper test with `--exact --ignored`; helpers do nothing unless
//! [`HELPER_ENV`] is set, so `cargo test -- --ignored` stays harmless).

use std::collections::HashSet;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, ExecutorExt, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed,
};

concurrent_futures::process_pool_test_worker!();

/// Longest any single wait may take before the test calls it a hang.
mod common;
use common::stat_of;

const HANG: Duration = Duration::from_secs(60);

/// Set in helper processes; helpers do nothing without it.
const HELPER_ENV: &str = "CF_STRESS_HELPER";

/// Whether the full sizes were asked for.
fn full() -> bool {
    std::env::var_os("CF_STRESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `big` under `CF_STRESS=1`, `small` otherwise.
fn size(small: usize, big: usize) -> usize {
    if full() { big } else { small }
}

/// The value of a future, failing the test instead of hanging.
fn get<T: Clone>(f: &Future<T>) -> Result<T, Error> {
    match f.result(Some(HANG)) {
        Err(Error::Timeout { .. }) => panic!("hang guard: a future did not resolve in {HANG:?}"),
        other => other.cloned(),
    }
}

fn identity(x: u64) -> u64 {
    x
}

fn plus_one(x: u64) -> u64 {
    x + 1
}

/// Polls `cond` until it holds; panics after the hang guard.
fn settle(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "hang guard: never saw {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ------------------------------------------------------------ tiny tasks --

/// 1M tasks under `CF_STRESS=1` (100k by default), half through `submit`
/// and half through `spawn`, resolved in batches so at most 10k futures are
/// alive at once: every one resolves, with its own value.
#[test]
fn many_tiny_tasks_all_resolve_with_the_right_sum() {
    let n = size(100_000, 1_000_000) as u64;
    const BATCH: u64 = 10_000;
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (mut sum, mut resolved) = (0u64, 0u64);
    for start in (0..n).step_by(BATCH as usize) {
        let batch: Vec<_> = (start..(start + BATCH).min(n))
            .map(|i| {
                if i % 2 == 0 {
                    pool.submit(identity, i)
                } else {
                    pool.spawn(move || i)
                }
            })
            .collect();
        for f in &batch {
            sum += get(f).unwrap();
            resolved += 1;
        }
    }
    assert_eq!(resolved, n);
    assert_eq!(sum, n * (n - 1) / 2);
    pool.shutdown(true, false);
    assert_eq!(pool.live_workers(), 0);
}

// ------------------------------------------- submits racing a shutdown --

/// What became of one submitted task.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    submitted: usize,
    finished: usize,
    cancelled: usize,
    refused: usize,
}

/// 8 threads submit while another calls `shutdown(wait = false,
/// cancel_futures = true)` part-way through. Every future resolves, each as
/// exactly one of finished (with its own value), cancelled, or refused with
/// `Error::Shutdown`, and the three add up to what was submitted. After the
/// shutdown each submitter submits a few more, which must all be refused.
#[test]
fn submits_from_8_threads_racing_shutdown_cancel_resolve_every_future() {
    let rounds = size(3, 20);
    let per_thread = size(2_000, 20_000);
    const THREADS: usize = 8;
    const AFTER: usize = 10;
    let mut total = Tally::default();
    for round in 0..rounds {
        let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
        let submitted = Arc::new(AtomicUsize::new(0));
        let shut = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(THREADS + 1));
        let submitters: Vec<_> = (0..THREADS)
            .map(|t| {
                let (pool, submitted, shut, start) =
                    (pool.clone(), submitted.clone(), shut.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    let mut futures = Vec::with_capacity(per_thread + AFTER);
                    for i in 0..per_thread {
                        let x = (t * per_thread + i) as u64;
                        let f = if i % 3 == 0 {
                            pool.spawn(move || x + 1)
                        } else {
                            pool.submit(plus_one, x)
                        };
                        futures.push((x, f));
                        submitted.fetch_add(1, Ordering::Relaxed);
                    }
                    // After the shutdown has certainly happened: refused.
                    settle("the shutdown", || shut.load(Ordering::SeqCst));
                    let mut late = Vec::new();
                    for i in 0..AFTER {
                        let x = (1_000_000_000 + t * AFTER + i) as u64;
                        late.push(pool.submit(plus_one, x));
                    }
                    (futures, late)
                })
            })
            .collect();
        let shutter = {
            let (pool, submitted, shut, start) =
                (pool.clone(), submitted.clone(), shut.clone(), start.clone());
            let threshold = THREADS * per_thread / 4;
            thread::spawn(move || {
                start.wait();
                // Part-way through the submits (best effort: they may all be
                // in before this thread runs, which is still a valid case).
                while submitted.load(Ordering::Relaxed) < threshold {
                    thread::yield_now();
                }
                pool.shutdown(false, true);
                shut.store(true, Ordering::SeqCst);
            })
        };
        let mut tally = Tally::default();
        for s in submitters {
            let (futures, late) = s.join().expect("a submitter panicked");
            for (x, f) in &futures {
                tally.submitted += 1;
                match get(f) {
                    Ok(v) => {
                        assert_eq!(v, x + 1, "round {round}: a task returned another's value");
                        tally.finished += 1;
                    }
                    Err(Error::Cancelled) => {
                        assert!(f.cancelled());
                        tally.cancelled += 1;
                    }
                    Err(Error::Shutdown) => tally.refused += 1,
                    Err(e) => panic!("round {round}: unexpected outcome {e:?}"),
                }
                assert!(f.done());
            }
            for f in &late {
                tally.submitted += 1;
                assert_eq!(get(f), Err(Error::Shutdown), "round {round}");
                tally.refused += 1;
            }
        }
        shutter.join().expect("the shutdown thread panicked");
        assert_eq!(tally.submitted, THREADS * (per_thread + AFTER));
        assert_eq!(
            tally.finished + tally.cancelled + tally.refused,
            tally.submitted,
            "round {round}: {tally:?}"
        );
        // The workers exit on their own once the queue is drained.
        let p = pool.clone();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            p.shutdown(true, false);
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(HANG).is_ok(),
            "hang guard: shutdown(wait = true) after the race: {pool:?}"
        );
        assert_eq!(pool.live_workers(), 0);
        total.submitted += tally.submitted;
        total.finished += tally.finished;
        total.cancelled += tally.cancelled;
        total.refused += tally.refused;
    }
    println!("{rounds} rounds: {total:?}");
}

// ------------------------------------------------ callbacks that submit --

const DEPTH: u64 = 3;

/// Task `(root, level)`: returns `root * 10 + level`.
fn node(arg: (u64, u64)) -> (u64, u64) {
    arg
}

/// Adds to `f` a callback that submits the next level of `f`'s chain to
/// `pool` and sends the new future over `tx`.
fn chain(
    pool: &Arc<ThreadPoolExecutor>,
    f: &Future<(u64, u64)>,
    tx: mpsc::Sender<Future<(u64, u64)>>,
) {
    let pool2 = pool.clone();
    f.add_done_callback(move |done| {
        let Ok(&(root, level)) = done.result(Some(Duration::ZERO)) else {
            panic!("a chain task failed: {done:?}");
        };
        if level == DEPTH {
            return;
        }
        let next = pool2.submit(node, (root, level + 1));
        chain(&pool2, &next, tx.clone());
        let _ = tx.send(next);
    });
}

/// Done-callbacks (run on worker threads, or on the adding thread when the
/// future is already done) submit new tasks to the same pool, to a depth of
/// 3; every one of those completes and none is lost or run twice.
#[test]
fn callbacks_that_submit_to_the_same_pool_all_complete() {
    let roots = size(2_000, 20_000) as u64;
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let (tx, rx) = mpsc::channel();
    let mut root_futures = Vec::new();
    for r in 0..roots {
        let f = pool.submit(node, (r, 0));
        chain(&pool, &f, tx.clone());
        root_futures.push(f);
    }
    drop(tx);
    let mut seen = HashSet::new();
    for f in &root_futures {
        assert!(seen.insert(get(f).unwrap()));
    }
    let want = (roots * (DEPTH + 1)) as usize;
    while seen.len() < want {
        let f = rx
            .recv_timeout(HANG)
            .expect("hang guard: a callback never submitted its task");
        let v = get(&f).unwrap();
        assert!(seen.insert(v), "task {v:?} ran twice");
    }
    // Once every callback has run, every sender is gone.
    match rx.recv_timeout(HANG) {
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hang guard: a callback never ran"),
        Ok(f) => panic!("more tasks than the chains allow: {f:?}"),
    }
    for r in 0..roots {
        for level in 0..=DEPTH {
            assert!(seen.contains(&(r, level)), "({r}, {level}) never ran");
        }
    }
    pool.shutdown(true, false);
}

// ---------------------------------------------------------- as_completed --

/// `as_completed` over 100k futures (10k by default) — some done before the
/// call, the rest finishing during it — yields each exactly once.
#[test]
fn as_completed_over_many_futures_yields_each_exactly_once() {
    let n = size(10_000, 100_000) as u64;
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut futures: Vec<_> = (0..n / 4).map(|i| pool.submit(identity, i)).collect();
    for f in &futures {
        get(f).unwrap();
    }
    futures.extend((n / 4..n).map(|i| pool.submit(identity, i)));
    let mut seen = vec![false; n as usize];
    let mut count = 0;
    for item in as_completed(&futures, Some(HANG * 4)) {
        let f = item.expect("hang guard: as_completed deadline passed");
        let v = get(f).unwrap() as usize;
        assert!(!seen[v], "future {v} yielded twice");
        seen[v] = true;
        count += 1;
    }
    assert_eq!(count, n as usize);
    pool.shutdown(true, false);
}

// ----------------------------------------------- create and drop, in a helper --

fn is_helper() -> bool {
    std::env::var_os(HELPER_ENV).is_some()
}

/// Runs this test binary again, selecting only the ignored test `helper`,
/// and fails if it fails or hangs.
fn run_helper(helper: &str) -> Output {
    let out = common::run_helper(common::helper_command(helper, HELPER_ENV), HANG * 4);
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "helper {helper} failed ({})\n{text}",
        out.status
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("HELPER DONE"),
        "helper {helper} did not run\n{text}"
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.contains("HELPER DONE") || line.contains("threads and fds") {
            println!("{helper}: {line}");
        }
    }
    out
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).expect(path).count()
}

/// Threads and open descriptors of this process.
fn threads_and_fds() -> (usize, usize) {
    (count_dir("/proc/self/task"), count_dir("/proc/self/fd"))
}

/// What the open descriptors point to, for a failure message.
fn fd_listing() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    v.sort();
    v
}

/// Waits (hang guard) for the thread and fd counts to come back to
/// `before`: drop does not join, so the workers exit a little later.
fn settle_back_to(before: (usize, usize)) {
    let deadline = Instant::now() + HANG;
    loop {
        let now = threads_and_fds();
        if now.0 <= before.0 && now.1 <= before.1 {
            println!("threads and fds: before {before:?}, after {now:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "threads and fds grew from {before:?} to {now:?}; fds: {:#?}",
            fd_listing()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "helper, run by thread_pool_created_and_dropped_many_times_leaks_no_thread_or_fd"]
fn helper_thread_pool_churn() {
    if !is_helper() {
        return;
    }
    let times = size(100, 1_000);
    let before = threads_and_fds();
    for i in 0..times as u64 {
        let pool = ThreadPoolExecutor::new(2).unwrap();
        let f = pool.submit(identity, i);
        let g = pool.spawn(move || i + 1);
        assert_eq!(get(&f), Ok(i));
        assert_eq!(get(&g), Ok(i + 1));
        // Some pools are dropped with work still queued.
        let _queued: Vec<_> = (0..4).map(|_| pool.submit(identity, i)).collect();
        drop(pool);
    }
    settle_back_to(before);
    println!("HELPER DONE: {times} thread pools");
}

/// A thread pool created and dropped 1,000 times (100 by default) leaves
/// no thread and no descriptor behind (drop does not join, so the counts
/// are polled until they settle).
#[test]
fn thread_pool_created_and_dropped_many_times_leaks_no_thread_or_fd() {
    run_helper("helper_thread_pool_churn");
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

#[test]
#[ignore = "helper, run by process_pool_created_and_dropped_many_times_leaks_no_fd_or_child"]
fn helper_process_pool_churn() {
    if !is_helper() {
        return;
    }
    let times = size(20, 100);
    let before = threads_and_fds();
    let mut pids = HashSet::new();
    for i in 0..times {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(2)
            .test_harness()
            .build()
            .unwrap();
        let futures: Vec<_> = (0..4).map(|_| pool.submit(getpid, ())).collect();
        for f in &futures {
            pids.insert(get(f).unwrap());
        }
        pids.extend(pool.worker_pids());
        if i % 2 == 0 {
            drop(pool);
        } else {
            pool.shutdown(true, false);
        }
    }
    assert!(!pids.is_empty());
    let me = std::process::id();
    settle("every worker gone (not even a zombie child)", || {
        pids.iter()
            .all(|&pid| !matches!(stat_of(pid), Some((_, ppid)) if ppid == me))
    });
    settle_back_to(before);
    println!("HELPER DONE: {times} process pools, {} workers", pids.len());
}

/// A process pool created and dropped 20 times (100 under `CF_STRESS=1`)
/// leaves no descriptor, no thread and no child process (not even a
/// zombie) behind.
#[test]
fn process_pool_created_and_dropped_many_times_leaks_no_fd_or_child() {
    run_helper("helper_process_pool_churn");
}
