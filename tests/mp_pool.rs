//! `Pool` and `ThreadPool`: the `multiprocessing.Pool` facade, each test
//! named after the CPython behaviour it mirrors (CONFORMANCE.md section 2,
//! MP1-MP27). Process pools use the test harness; thread pools use gates
//! (statics, since tasks are `fn` items).
//!
//! No test asserts a duration: every timeout is a hang guard.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concurrent_futures::{
    AsyncResult, Callbacks, Error, MapOptions, Pool, ThreadPool, ThreadPoolExecutor,
};
use serde::{Deserialize, Serialize, Serializer};

concurrent_futures::process_pool_test_worker!();

mod common;
use common::HANG;
use common::keyed::{gated, open_gate, started};

fn procs(n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

fn threads(n: usize) -> ThreadPool {
    ThreadPool::new(n).expect("a thread pool builds")
}

/// Waits for `r` with the hang guard.
fn ready<T: Send + Sync + 'static>(r: &AsyncResult<T>) {
    assert!(
        r.wait(Some(HANG)),
        "hang guard: the result never became ready"
    );
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "hang guard: never saw {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn panic_message(e: &Error) -> &str {
    match e {
        Error::Panicked { message, .. } => message,
        other => panic!("expected Error::Panicked, got {other:?}"),
    }
}

// ---------------------------------------------------------------- tasks --

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn add_pair((a, b): (u64, u64)) -> u64 {
    a + b
}

fn fail_on_3(x: u64) -> u64 {
    if x == 3 {
        panic!("item {x} failed")
    }
    x
}

fn boom(x: u64) -> u64 {
    panic!("boom {x}")
}

fn getpid(_: u64) -> u32 {
    std::process::id()
}

/// A process-pool task that writes its pid into `dir/<n>` and then holds
/// until the file `dir/go` exists (or the hang guard passes).
fn pid_then_hold((dir, n): (String, u64)) -> u64 {
    let dir = PathBuf::from(dir);
    std::fs::write(dir.join(n.to_string()), std::process::id().to_string()).unwrap();
    let deadline = Instant::now() + HANG;
    while !dir.join("go").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    n
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cf-mp-pool-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

// ------------------------------------------------------- construction --

#[test]
fn mp1_zero_processes_is_refused() {
    for err in [
        ThreadPool::new(0).map(drop).unwrap_err(),
        Pool::builder()
            .processes(0)
            .test_harness()
            .build()
            .map(drop)
            .unwrap_err(),
    ] {
        assert_eq!(
            err,
            Error::InvalidConfig("Number of processes must be at least 1".into())
        );
    }
    assert_eq!(threads(3).processes(), 3);
    assert_eq!(procs(3).processes(), 3);
}

#[test]
fn mp2_zero_maxtasksperchild_is_refused() {
    let err = Pool::builder()
        .maxtasksperchild(0)
        .test_harness()
        .build()
        .map(drop)
        .unwrap_err();
    assert_eq!(
        err,
        Error::InvalidConfig("maxtasksperchild must be a positive int or None".into())
    );
}

/// The variable naming the directory where [`mark_started`] records
/// worker pids.
const MP3_DIR: &str = "CF_TEST_MP3_DIR";

/// Initializer: records this worker's pid as a file in `$CF_TEST_MP3_DIR`.
fn mark_started() {
    if let Some(dir) = std::env::var_os(MP3_DIR) {
        let _ = std::fs::write(Path::new(&dir).join(std::process::id().to_string()), b"");
    }
}

/// MP3 (`Pool.__init__` calls `_repopulate_pool()`): every one of the
/// `processes` workers starts when the pool is built, before any task is
/// submitted (each records its pid from the initializer), and the tasks
/// then run in those workers.
#[test]
fn mp3_every_worker_starts_when_the_pool_is_built() {
    let dir = temp_dir("mp3");
    let pool = Pool::builder()
        .processes(2)
        .initializer(mark_started)
        .worker_env(MP3_DIR, &dir)
        .test_harness()
        .build()
        .unwrap();
    let started = || -> HashSet<u32> {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    };
    wait_until("both workers to start with nothing submitted", || {
        started().len() == 2
    });
    let workers = started();
    let used: HashSet<u32> = pool.map(getpid, 0..20u64).unwrap().into_iter().collect();
    assert!(used.is_subset(&workers), "{used:?} not within {workers:?}");
    pool.close();
    pool.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// -------------------------------------------------- apply, apply_async --

#[test]
fn mp4_apply_blocks_for_the_value_threads_and_processes() {
    let t = threads(2);
    assert_eq!(t.apply(square, 12), Ok(144));
    assert_eq!(t.apply(add_pair, (2, 3)), Ok(5));
    let p = procs(2);
    assert_eq!(p.apply(square, 12), Ok(144));
    assert_ne!(p.apply(getpid, 0), Ok(std::process::id()));
    let err = p.apply(boom, 4).unwrap_err();
    assert_eq!(panic_message(&err), "boom 4");
}

#[test]
fn mp5_async_result_get_wait_ready_successful() {
    let pool = threads(2);
    let r = pool.apply_async(gated, 501).unwrap();
    assert!(!r.ready());
    // successful() before ready is an error, as CPython's ValueError.
    let err = r.successful().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidCall(m) if m.contains("not ready")),
        "{err}"
    );
    // get(timeout) times out (multiprocessing.TimeoutError); wait never errors.
    assert!(matches!(
        r.get(Some(Duration::from_millis(20))),
        Err(Error::Timeout { .. })
    ));
    assert!(!r.wait(Some(Duration::from_millis(20))));
    open_gate(501);
    ready(&r);
    assert!(r.ready());
    assert_eq!(r.successful(), Ok(true));
    assert_eq!(r.get(None), Ok(&501));
    assert_eq!(r.get(None), Ok(&501), "get is repeatable");
    assert_eq!(r.into_result(), Ok(501));

    let bad = pool.apply_async(boom, 1).unwrap();
    ready(&bad);
    assert_eq!(bad.successful(), Ok(false));
    assert_eq!(panic_message(&bad.get(None).unwrap_err()), "boom 1");
}

#[test]
fn mp5_successful_before_ready_errors_on_a_process_pool() {
    let dir = temp_dir("mp5");
    let pool = procs(1);
    let r = pool
        .apply_async(pid_then_hold, (dir.to_string_lossy().into_owned(), 1))
        .unwrap();
    wait_until("the task to start", || dir.join("1").exists());
    assert!(!r.ready());
    assert!(r.successful().is_err());
    std::fs::write(dir.join("go"), "").unwrap();
    ready(&r);
    assert_eq!(r.successful(), Ok(true));
    assert_eq!(r.get(None), Ok(&1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mp6_callbacks_run_on_one_result_thread_before_the_result_is_ready() {
    for pool in [threads(2).into_pool(), procs(2)] {
        let names = Arc::new(Mutex::new(HashSet::new()));
        let called = Arc::new(AtomicUsize::new(0));
        let mut results = Vec::new();
        for i in 0..20u64 {
            let (names, called) = (names.clone(), called.clone());
            let cbs = Callbacks::new().callback(move |v: &u64| {
                assert_eq!(*v, i * i);
                let me = std::thread::current();
                names
                    .lock()
                    .unwrap()
                    .insert(me.name().unwrap_or("?").to_owned());
                called.fetch_add(1, Ordering::SeqCst);
            });
            results.push((pool.apply_async_with(square, i, cbs).unwrap(), i));
        }
        for (r, i) in &results {
            assert_eq!(r.get(Some(HANG)), Ok(&(i * i)));
        }
        // Every get() returned, so every callback had already finished.
        assert_eq!(called.load(Ordering::SeqCst), 20);
        let names = names.lock().unwrap();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names.contains("cf-pool-results"), "{names:?}");
    }
}

#[test]
fn mp6_error_callback_receives_the_panic_message() {
    for pool in [threads(2).into_pool(), procs(2)] {
        let seen = Arc::new(Mutex::new(None));
        let s2 = seen.clone();
        let cbs = Callbacks::new()
            .callback(|_: &u64| panic!("the value callback must not run"))
            .error_callback(move |e| *s2.lock().unwrap() = Some(e.clone()));
        let r = pool.apply_async_with(boom, 7, cbs).unwrap();
        ready(&r);
        let seen = seen.lock().unwrap().clone().expect("error_callback ran");
        assert_eq!(panic_message(&seen), "boom 7");
        assert_eq!(r.get(None).unwrap_err(), seen);
    }
}

#[test]
fn mp7_a_panicking_callback_fails_its_job_and_the_handler_lives_on() {
    let pool = threads(2);
    let cbs = Callbacks::new().callback(|_: &u64| panic!("callback exploded"));
    let r = pool.apply_async_with(square, 3, cbs).unwrap();
    ready(&r);
    let err = r.get(None).unwrap_err();
    assert_eq!(panic_message(&err), "callback panicked: callback exploded");
    // A panicking error_callback: the job keeps its own error.
    let cbs = Callbacks::new().error_callback(|_| panic!("error callback exploded"));
    let r = pool.apply_async_with(boom, 5, cbs).unwrap();
    ready(&r);
    assert_eq!(panic_message(&r.get(None).unwrap_err()), "boom 5");
    // The handler still delivers, and join() does not hang (CPython's would).
    let ok = Arc::new(AtomicBool::new(false));
    let ok2 = ok.clone();
    let cbs = Callbacks::new().callback(move |_: &u64| ok2.store(true, Ordering::SeqCst));
    let r = pool.apply_async_with(square, 4, cbs).unwrap();
    assert_eq!(r.get(Some(HANG)), Ok(&16));
    assert!(ok.load(Ordering::SeqCst));
    pool.close();
    pool.join().unwrap();
}

#[test]
fn blocking_calls_from_a_callback_are_refused_instead_of_deadlocking() {
    let pool = Arc::new(threads(2));
    let got = Arc::new(Mutex::new(None));
    let (p2, g2) = (pool.clone(), got.clone());
    let cbs = Callbacks::new().callback(move |_: &u64| {
        *g2.lock().unwrap() = Some((p2.apply(square, 2), p2.map(square, [1, 2])));
    });
    let r = pool.apply_async_with(square, 1, cbs).unwrap();
    ready(&r);
    let (apply, map) = got.lock().unwrap().take().unwrap();
    assert!(matches!(apply, Err(Error::InvalidCall(m)) if m.contains("deadlock")));
    assert!(matches!(map, Err(Error::InvalidCall(m)) if m.contains("deadlock")));
}

// ------------------------------------------------- map, map_async, star --

#[test]
fn mp8_map_returns_the_list_in_input_order() {
    for pool in [threads(3).into_pool(), procs(2)] {
        let expected: Vec<u64> = (0..100u64).map(|x| x * x).collect();
        assert_eq!(pool.map(square, 0..100u64), Ok(expected.clone()));
        for chunksize in [1, 3, 7, 100, 1000] {
            assert_eq!(
                pool.map_chunked(square, 0..100u64, Some(chunksize)),
                Ok(expected.clone())
            );
        }
    }
}

static NO_FAILFAST_RAN: AtomicUsize = AtomicUsize::new(0);

fn count_and_fail_on_3(x: u64) -> u64 {
    NO_FAILFAST_RAN.fetch_add(1, Ordering::SeqCst);
    fail_on_3(x)
}

#[test]
fn mp8_map_has_no_failfast_and_raises_the_error_after_all_items_ran() {
    let pool = threads(2);
    let err = pool
        .map_chunked(count_and_fail_on_3, 0..50u64, Some(2))
        .unwrap_err();
    assert_eq!(panic_message(&err), "item 3 failed");
    // Every item ran before map reported the error.
    assert_eq!(NO_FAILFAST_RAN.load(Ordering::SeqCst), 50);
    // The per-item view: imap gives each item its own Result.
    let each: Vec<Result<u64, Error>> = pool.imap(fail_on_3, 0..5u64).unwrap().collect();
    assert_eq!(each.iter().filter(|r| r.is_err()).count(), 1);
    assert!(each[3].is_err());
    assert_eq!(each[4], Ok(4));
    // On a process pool, too.
    let p = procs(2);
    let err = p.map(fail_on_3, 0..10u64).unwrap_err();
    assert_eq!(panic_message(&err), "item 3 failed");
}

#[test]
fn mp9_map_async_callback_gets_the_whole_list_in_order_once() {
    for pool in [threads(3).into_pool(), procs(2)] {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = got.clone();
        let cbs = Callbacks::new()
            .callback(move |v: &Vec<u64>| g2.lock().unwrap().push(v.clone()))
            .error_callback(|e| panic!("no error expected, got {e}"));
        let r = pool.map_async_with(square, 0..40u64, Some(3), cbs).unwrap();
        let expected: Vec<u64> = (0..40u64).map(|x| x * x).collect();
        assert_eq!(r.get(Some(HANG)), Ok(&expected));
        assert_eq!(*got.lock().unwrap(), vec![expected]);
        assert_eq!(
            pool.map_async(square, [5u64]).unwrap().into_result(),
            Ok(vec![25])
        );
    }
}

#[test]
fn mp9_map_async_error_callback_gets_the_first_error_once() {
    for pool in [threads(2).into_pool(), procs(2)] {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let e2 = errors.clone();
        let cbs = Callbacks::new()
            .callback(|_: &Vec<u64>| panic!("the value callback must not run"))
            .error_callback(move |e| e2.lock().unwrap().push(e.clone()));
        let r = pool
            .map_async_with(fail_on_3, 0..10u64, Some(1), cbs)
            .unwrap();
        ready(&r);
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(panic_message(&errors[0]), "item 3 failed");
        assert_eq!(r.successful(), Ok(false));
    }
}

/// A result whose `Drop` panics, wherever it is dropped.
#[derive(Debug, Serialize, Deserialize)]
struct Bomb(u64);

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("bomb {} went off", self.0);
    }
}

fn bomb_unless_3(x: u64) -> Bomb {
    assert!(x != 3, "no bomb for 3");
    Bomb(x)
}

/// MP9: when a job fails, the results of its other items are dropped (no
/// one will use them, MP27). One whose `Drop` panics, dropped after the
/// error (in the same chunk) or before it (an earlier chunk), is logged:
/// the job still ends with its task's error, and `error_callback` runs
/// once.
#[test]
fn mp9_a_result_whose_drop_panics_does_not_change_a_failed_jobs_error() {
    let pool = threads(1).into_pool();
    for (inputs, chunksize) in [([3u64, 4], 2), ([4, 3], 1)] {
        assert_eq!(
            panic_message(
                &pool
                    .map_chunked(bomb_unless_3, inputs, Some(chunksize))
                    .unwrap_err()
            ),
            "no bomb for 3",
            "map, inputs {inputs:?}"
        );
        let errors = Arc::new(Mutex::new(Vec::new()));
        let e2 = errors.clone();
        let cbs = Callbacks::new().error_callback(move |e| e2.lock().unwrap().push(e.clone()));
        let r = pool
            .map_async_with(bomb_unless_3, inputs, Some(chunksize), cbs)
            .unwrap();
        ready(&r);
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1, "inputs {inputs:?}: {errors:?}");
        assert_eq!(panic_message(&errors[0]), "no bomb for 3");
        assert_eq!(r.successful(), Ok(false));
    }
}

#[test]
fn mp10_starmap_unpacks_each_tuple() {
    for pool in [threads(2).into_pool(), procs(2)] {
        let pairs: Vec<(u64, u64)> = (0..20).map(|i| (i, 10 * i)).collect();
        let expected: Vec<u64> = pairs.iter().map(|(a, b)| a + b).collect();
        assert_eq!(pool.starmap(add, pairs.clone()), Ok(expected.clone()));
        let r = pool.starmap_async(add, pairs.clone()).unwrap();
        assert_eq!(r.get(Some(HANG)), Ok(&expected));
        // A fn taking the tuple itself works with plain map and apply.
        assert_eq!(pool.map(add_pair, pairs), Ok(expected));
        assert_eq!(pool.apply(add_pair, (1, 2)), Ok(3));
    }
}

#[test]
fn mp11_empty_inputs_give_empty_results_without_stalling() {
    for pool in [threads(2).into_pool(), procs(1)] {
        let none = Vec::<u64>::new;
        assert_eq!(pool.map(square, none()), Ok(vec![]));
        assert_eq!(pool.starmap(add, Vec::<(u64, u64)>::new()), Ok(vec![]));
        let called = Arc::new(AtomicBool::new(false));
        let c2 = called.clone();
        let cbs = Callbacks::new().callback(move |v: &Vec<u64>| {
            assert!(v.is_empty());
            c2.store(true, Ordering::SeqCst);
        });
        let r = pool.map_async_with(square, none(), None, cbs).unwrap();
        assert_eq!(r.get(Some(HANG)), Ok(&vec![]));
        assert!(called.load(Ordering::SeqCst));
        assert_eq!(pool.imap(square, none()).unwrap().count(), 0);
        assert_eq!(pool.imap_unordered(square, none()).unwrap().count(), 0);
    }
}

// ----------------------------------------------- imap, imap_unordered --

#[test]
fn mp12_imap_yields_in_input_order() {
    for pool in [threads(3).into_pool(), procs(2)] {
        let expected: Vec<Result<u64, Error>> = (0..200u64).map(|x| Ok(x * x)).collect();
        let got: Vec<_> = pool.imap(square, 0..200u64).unwrap().collect();
        assert_eq!(got, expected);
        let opts = MapOptions::new().chunksize(7);
        let got: Vec<_> = pool.imap_with(square, 0..200u64, opts).unwrap().collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn mp14_imap_unordered_yields_every_result_once() {
    for pool in [threads(3).into_pool(), procs(2)] {
        for chunksize in [1, 4] {
            let opts = MapOptions::new().chunksize(chunksize);
            let mut got: Vec<u64> = pool
                .imap_unordered_with(square, 0..100u64, opts)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            got.sort_unstable();
            assert_eq!(got, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
        }
        let errors = pool
            .imap_unordered(fail_on_3, 0..10u64)
            .unwrap()
            .filter(Result::is_err)
            .count();
        assert_eq!(errors, 1);
    }
}

#[test]
fn mp14_imap_unordered_yields_in_completion_order() {
    let pool = threads(2);
    let mut it = pool.imap_unordered(gated, [601u64, 602]).unwrap();
    open_gate(602);
    assert_eq!(
        it.next().unwrap(),
        Ok(602),
        "the first to finish comes first"
    );
    open_gate(601);
    assert_eq!(it.next().unwrap(), Ok(601));
    assert!(it.next().is_none());
}

static PULLED: AtomicUsize = AtomicUsize::new(0);
static CONSUMED: AtomicUsize = AtomicUsize::new(0);
static MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A cheap task that records how many items are pulled from the input and
/// not yet handed to the consumer.
fn note_in_flight(x: u64) -> u64 {
    let in_flight = PULLED.load(Ordering::SeqCst) - CONSUMED.load(Ordering::SeqCst);
    MAX_IN_FLIGHT.fetch_max(in_flight, Ordering::SeqCst);
    x
}

/// MP16 / PP2, done better: CPython's imap reads the whole input up front;
/// ours keeps a window. 10M items in release or with `CF_STRESS` set; 1M in a
/// debug build (10M one-item tasks take minutes unoptimised).
#[test]
fn mp16_imap_over_millions_of_items_holds_a_bounded_window() {
    let n: u64 = if cfg!(debug_assertions) && std::env::var_os("CF_STRESS").is_none() {
        1_000_000
    } else {
        10_000_000
    };
    let pool = threads(2);
    let window = 8;
    let inputs = (0..n).inspect(|_| {
        PULLED.fetch_add(1, Ordering::SeqCst);
    });
    let opts = MapOptions::new().window(window);
    let mut it = pool.imap_with(note_in_flight, inputs, opts).unwrap();
    let mut expected = 0u64;
    while let Some(r) = it.next() {
        assert_eq!(r, Ok(expected));
        expected += 1;
        CONSUMED.fetch_add(1, Ordering::SeqCst);
        // Pulled and not yet consumed is exactly what the window holds.
        let held = PULLED.load(Ordering::SeqCst) - CONSUMED.load(Ordering::SeqCst);
        assert!(held <= window, "{held} items held, window {window}");
        assert!(it.in_flight() <= window);
    }
    assert_eq!(expected, n);
    // Seen from inside a task, at most the window plus the one result being
    // handed to the consumer (already out of the window, not yet counted).
    let max = MAX_IN_FLIGHT.load(Ordering::SeqCst);
    assert!(max <= window + 1, "max in flight {max}, window {window}");
}

// ----------------------------------------------------------- lifecycle --

/// MP23 / L13 (pebble `join` on a RUNNING pool raises): `join()` before
/// `close()` or `terminate()` is an error, and the pool still works.
#[test]
fn mp23_join_before_close_is_an_error() {
    for pool in [threads(1).into_pool(), procs(1)] {
        let err = pool.join().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidCall(m) if m.contains("Pool is still running")),
            "{err}"
        );
        // The pool still works.
        assert_eq!(pool.apply(square, 3), Ok(9));
    }
}

/// MP23 / L13 (pebble `close()` then `join()`): close refuses new work and
/// lets queued work finish; join returns once every result is ready and
/// every callback has run.
#[test]
fn mp23_close_then_join_waits_for_queued_work_and_callbacks() {
    for pool in [threads(2).into_pool(), procs(2)] {
        let delivered = Arc::new(AtomicUsize::new(0));
        let results: Vec<_> = (0..30u64)
            .map(|i| {
                let d = delivered.clone();
                let cbs = Callbacks::new().callback(move |_: &u64| {
                    std::thread::sleep(Duration::from_millis(1));
                    d.fetch_add(1, Ordering::SeqCst);
                });
                pool.apply_async_with(square, i, cbs).unwrap()
            })
            .collect();
        pool.close();
        pool.close(); // harmless
        // Every submit method now refuses.
        let not_running = Error::Shutdown;
        assert_eq!(pool.apply_async(square, 1).unwrap_err(), not_running);
        assert_eq!(pool.apply(square, 1).unwrap_err(), not_running);
        assert_eq!(pool.map(square, [1u64]).unwrap_err(), not_running);
        assert_eq!(pool.map_async(square, [1u64]).unwrap_err(), not_running);
        assert_eq!(pool.starmap(add, [(1u64, 2u64)]).unwrap_err(), not_running);
        assert!(pool.imap(square, [1u64]).is_err());
        assert!(pool.imap_unordered(square, [1u64]).is_err());
        pool.join().unwrap();
        // join returned: every result is ready and every callback has run.
        assert_eq!(delivered.load(Ordering::SeqCst), 30);
        for (i, r) in results.iter().enumerate() {
            assert!(r.ready());
            assert_eq!(r.get(Some(Duration::ZERO)), Ok(&((i * i) as u64)));
        }
        pool.join().unwrap(); // again: nothing left to wait for
    }
}

#[test]
fn mp24_terminate_kills_the_workers_and_fails_running_and_queued_results() {
    let dir = temp_dir("mp24");
    let pool = procs(2);
    let d = dir.to_string_lossy().into_owned();
    let errors = Arc::new(AtomicUsize::new(0));
    let results: Vec<_> = (0..6u64)
        .map(|i| {
            let e = errors.clone();
            let cbs = Callbacks::new().error_callback(move |_| {
                e.fetch_add(1, Ordering::SeqCst);
            });
            pool.apply_async_with(pid_then_hold, (d.clone(), i), cbs)
                .unwrap()
        })
        .collect();
    // Two tasks are running (one per worker) and hold.
    let mut pids = Vec::new();
    wait_until("two tasks running", || {
        pids = (0..6)
            .filter_map(|i| read_pid(&dir.join(i.to_string())))
            .collect();
        pids.len() >= 2
    });
    pool.terminate();
    // Every result is ready, and failed; every error callback ran.
    for r in &results {
        assert!(r.ready());
        assert_eq!(r.successful(), Ok(false));
    }
    assert_eq!(errors.load(Ordering::SeqCst), 6);
    // The workers that ran them were killed.
    for pid in &pids {
        wait_until("the worker to be gone", || !process_alive(*pid));
    }
    pool.terminate(); // idempotent
    pool.join().unwrap();
    assert_eq!(pool.apply_async(square, 1).unwrap_err(), Error::Shutdown);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mp24_terminate_a_thread_pool_cancels_queued_and_fails_running() {
    let pool = threads(1);
    let running = pool.apply_async(gated, 701).unwrap();
    wait_until("the gated task to run", || started(701));
    let queued: Vec<_> = (0..100u64)
        .map(|i| pool.apply_async(square, i).unwrap())
        .collect();
    pool.terminate();
    for r in &queued {
        assert!(r.ready());
    }
    assert!(
        queued.iter().all(|r| r.get(None) == Err(Error::Cancelled)),
        "queued tasks are cancelled"
    );
    assert!(running.ready());
    assert!(matches!(running.get(None), Err(Error::Broken { .. })));
    open_gate(701); // the running thread cannot be killed; let it end
    pool.join().unwrap();
}

#[test]
fn mp25_dropping_a_pool_terminates_it() {
    let dir = temp_dir("mp25");
    let pool = procs(1);
    let r = pool
        .apply_async(pid_then_hold, (dir.to_string_lossy().into_owned(), 0))
        .unwrap();
    wait_until("the task to run", || read_pid(&dir.join("0")).is_some());
    let pid = read_pid(&dir.join("0")).unwrap();
    drop(pool);
    assert!(r.ready());
    assert!(r.get(None).is_err());
    wait_until("the worker to be gone", || !process_alive(pid));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mp22_maxtasksperchild_replaces_workers() {
    let pool = Pool::builder()
        .processes(1)
        .maxtasksperchild(2)
        .test_harness()
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..6).map(|i| pool.apply(getpid, i).unwrap()).collect();
    let distinct: HashSet<_> = pids.iter().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    pool.close();
    pool.join().unwrap();
}

static INITIALIZED: AtomicBool = AtomicBool::new(false);

fn init_worker() {
    INITIALIZED.store(true, Ordering::SeqCst);
}

fn was_initialized(_: u64) -> bool {
    INITIALIZED.load(Ordering::SeqCst)
}

#[test]
fn initializer_runs_in_every_worker_before_its_tasks() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_worker)
        .test_harness()
        .build()
        .unwrap();
    assert_eq!(pool.map(was_initialized, 0..8u64), Ok(vec![true; 8]));
    // The parent never ran it.
    assert!(!INITIALIZED.load(Ordering::SeqCst));

    // ThreadPool: a configured executor, whose initializer captures.
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let ex = ThreadPoolExecutor::builder()
        .max_workers(2)
        .initializer(move || {
            s2.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let tp = ThreadPool::from_executor(ex).unwrap();
    assert_eq!(tp.apply(square, 2), Ok(4));
    tp.close();
    tp.join().unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

fn exit_task(code: i32) -> u32 {
    std::process::exit(code)
}

/// MP21, done better: CPython's `get()` hangs when the worker dies; ours
/// fails that task with `WorkerDied` and the pool keeps serving.
/// MP18 / PP6: a task that exits its worker (`process::exit`, Rust's
/// `SystemExit`) still delivers a result, `WorkerDied` with the exit code,
/// to `get()` and to the error callback, instead of never arriving.
#[test]
fn mp21_a_worker_that_dies_fails_its_task_and_the_pool_serves_on() {
    let pool = procs(1);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e2 = errors.clone();
    let cbs = Callbacks::new().error_callback(move |e| e2.lock().unwrap().push(e.clone()));
    let r = pool.apply_async_with(exit_task, 7, cbs).unwrap();
    ready(&r);
    assert!(
        matches!(r.get(None), Err(Error::WorkerDied { code: Some(7), .. })),
        "{:?}",
        r.get(None)
    );
    assert_eq!(errors.lock().unwrap().len(), 1);
    assert_eq!(pool.apply(square, 5), Ok(25));
    pool.close();
    pool.join().unwrap();
}

/// MP17 (CPython wraps a process pool's error in a `RemoteTraceback`
/// cause, a `ThreadPool`'s not): a task's panic reaches `get()` with its
/// message from either pool; from a process `Pool` it also carries the
/// worker's backtrace text (captured with `RUST_LIB_BACKTRACE=1`), from a
/// `ThreadPool` none, as nothing crossed a process boundary.
#[test]
fn mp17_a_process_pools_errors_carry_the_workers_backtrace_a_thread_pools_do_not() {
    let procs = Pool::builder()
        .processes(1)
        .worker_env("RUST_LIB_BACKTRACE", "1")
        .test_harness()
        .build()
        .unwrap();
    match procs.apply(boom, 1) {
        Err(Error::Panicked {
            message,
            backtrace: Some(backtrace),
        }) => {
            assert_eq!(message, "boom 1");
            assert!(!backtrace.trim().is_empty());
        }
        other => panic!("expected Panicked with a backtrace, got {other:?}"),
    }
    match threads(1).apply(boom, 2) {
        Err(Error::Panicked {
            message,
            backtrace: None,
        }) => assert_eq!(message, "boom 2"),
        other => panic!("expected Panicked without a backtrace, got {other:?}"),
    }
}

/// A value whose `Serialize` always fails.
#[derive(Debug, Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

fn make_unencodable(_: u64) -> Unencodable {
    Unencodable
}

fn take_unencodable(_: Unencodable) -> u64 {
    1
}

/// MP19 (CPython `test_unpickleable_result`, `MaybeEncodingError`): a
/// result the worker cannot encode fails its job with `Encode` naming the
/// type, for `get()` and for the error callback; 20 times over, and the
/// same worker serves on (none is lost).
#[test]
fn mp19_a_result_that_fails_to_encode_fails_its_job_and_no_worker_is_lost() {
    let pool = procs(1);
    let pid = pool.apply(getpid, 0).unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    for i in 0..20u64 {
        let e2 = errors.clone();
        let cbs = Callbacks::new().error_callback(move |e| e2.lock().unwrap().push(e.clone()));
        let r = pool.apply_async_with(make_unencodable, i, cbs).unwrap();
        ready(&r);
        match r.get(None) {
            Err(Error::Encode { type_name, .. }) => {
                assert!(type_name.contains("Unencodable"), "{type_name}")
            }
            other => panic!("expected Encode, got {other:?}"),
        }
    }
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 20, "{errors:?}");
    assert!(
        errors.iter().all(|e| matches!(e, Error::Encode { .. })),
        "{errors:?}"
    );
    assert_eq!(pool.apply(getpid, 0), Ok(pid), "no worker was lost");
    pool.close();
    pool.join().unwrap();
}

/// MP20 (CPython `test_map_unplicklable`, #19425): a `map` whose arguments
/// cannot be encoded ends with the `Encode` error naming their type instead
/// of hanging, and the pool serves on.
#[test]
fn mp20_map_over_arguments_that_fail_to_encode_returns_the_encode_error() {
    let pool = procs(1);
    let r = pool
        .map_async(take_unencodable, (0..10).map(|_| Unencodable))
        .unwrap();
    ready(&r);
    match r.get(None) {
        Err(Error::Encode { type_name, .. }) => {
            assert!(type_name.contains("Unencodable"), "{type_name}")
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(pool.map(square, 0..4u64), Ok(vec![0, 1, 4, 9]));
    pool.close();
    pool.join().unwrap();
}

/// PP14 (a `SystemExit` in a CPython `Pool` worker leaves its job pending
/// forever): every exit of a worker is reported to the job it held, even a
/// clean `exit(0)` in the middle of a task (`WorkerDied` with code 0), and
/// the pool serves on.
#[test]
fn pp14_a_worker_that_exits_cleanly_mid_task_fails_that_task() {
    let pool = procs(1);
    let r = pool.apply_async(exit_task, 0).unwrap();
    ready(&r);
    assert!(
        matches!(
            r.get(None),
            Err(Error::WorkerDied {
                code: Some(0),
                signal: None,
                ..
            })
        ),
        "{:?}",
        r.get(None)
    );
    assert_eq!(pool.apply(square, 6), Ok(36));
    pool.close();
    pool.join().unwrap();
}

/// MP24: `terminate()` from a callback while another thread's `terminate()`
/// waits for the callbacks' thread does not deadlock (the callback used to
/// wait for the other call's lock, and the other call for the callback).
#[test]
fn mp24_terminate_from_a_callback_during_another_threads_terminate_returns() {
    let pool = Arc::new(threads(2));
    let entered = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let (p, e, g) = (pool.clone(), entered.clone(), go.clone());
    let r = pool
        .apply_async_with(
            square,
            3,
            Callbacks::new().callback(move |_| {
                e.store(true, Ordering::SeqCst);
                wait_until("the go signal", || g.load(Ordering::SeqCst));
                p.terminate();
            }),
        )
        .unwrap();
    wait_until("the callback to run", || entered.load(Ordering::SeqCst));
    let (returned_tx, returned_rx) = std::sync::mpsc::channel();
    let other = pool.clone();
    std::thread::spawn(move || {
        other.terminate();
        let _ = returned_tx.send(());
    });
    // The other thread's terminate() has begun once submits are refused; it
    // now waits for the callbacks' thread, which is in our callback.
    wait_until("terminate() to begin", || {
        pool.apply_async(square, 1).is_err()
    });
    go.store(true, Ordering::SeqCst);
    returned_rx
        .recv_timeout(HANG)
        .expect("terminate() deadlocked with a terminate() in a callback");
    ready(&r);
    pool.join().unwrap();
}

/// M15 for `imap_unordered`, as for `imap`: after `terminate()` an endless
/// input is not fed to the stopped pool forever; the first refused chunk
/// yields `Shutdown` and the iteration ends.
#[test]
fn m15_imap_unordered_over_an_endless_input_ends_after_terminate() {
    let pool = threads(1);
    let mut it = pool.imap_unordered(square, 0u64..).unwrap();
    assert!(it.next().unwrap().is_ok());
    pool.terminate();
    let rest: Vec<_> = it.by_ref().take(10_000).collect();
    assert!(rest.len() < 10_000, "kept feeding a terminated pool");
    assert!(
        rest.iter().any(|r| r == &Err(Error::Shutdown)),
        "no Shutdown item: {rest:?}"
    );
    assert!(it.next().is_none());
}

/// MP24 from a callback: `terminate()` called by a pool callback cancels
/// the queued tasks (`Error::Cancelled`, as from any other thread; it used
/// to fail them with `Broken`) and fails the running one with `Broken`.
#[test]
fn mp24_terminate_from_a_callback_cancels_queued_and_fails_running() {
    let pool = Arc::new(threads(1));
    let p = pool.clone();
    let a = pool
        .apply_async_with(
            square,
            2,
            Callbacks::new().callback(move |_| {
                wait_until("B to run", || started(703));
                p.terminate();
            }),
        )
        .unwrap();
    let b = pool.apply_async(gated, 703).unwrap();
    let c = pool.apply_async(square, 3).unwrap();
    ready(&a);
    ready(&b);
    ready(&c);
    assert_eq!(c.get(None), Err(Error::Cancelled), "the queued task");
    assert!(
        matches!(b.get(None), Err(Error::Broken { .. })),
        "the running task: {:?}",
        b.get(None)
    );
    open_gate(703); // the running thread cannot be killed; let it end
    pool.join().unwrap();
}

/// Keys of the [`record_return`] tasks whose function has returned.
static RETURNED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn record_return(x: u64) -> u64 {
    RETURNED.lock().unwrap().push(x);
    x * 10
}

/// MP24 from a callback: a task that had already finished when a callback
/// called `terminate()` keeps its value, as it does when `terminate()`
/// comes from any other thread. Its `Ready` message waited behind the
/// callback on the handler thread, and the terminate failed it with
/// `Broken` ("stopped it before this task finished"), throwing the value
/// away (found by review).
#[test]
fn mp24_terminate_from_a_callback_keeps_the_value_of_a_task_that_finished() {
    let pool = Arc::new(threads(2));
    let p = pool.clone();
    let a = pool
        .apply_async_with(
            square,
            2,
            Callbacks::new().callback(move |_| {
                wait_until("B to return", || RETURNED.lock().unwrap().contains(&77));
                // B's future completes just after its function returns: a
                // margin for that (a precondition, not a timing assertion).
                std::thread::sleep(Duration::from_millis(200));
                p.terminate();
            }),
        )
        .unwrap();
    let b = pool.apply_async(record_return, 77).unwrap();
    ready(&a);
    ready(&b);
    assert_eq!(a.get(None), Ok(&4));
    assert_eq!(b.get(None), Ok(&770));
    pool.join().unwrap();
}
