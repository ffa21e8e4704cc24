//! MP12: `next(timeout)` on the map iterators (`Map::next_timeout`,
//! `MapUnordered::next_timeout`, and `Pool::imap` / `imap_unordered`'s),
//! on threads and processes. A timeout yields `Err(Error::Timeout)`, loses
//! nothing, and the iteration goes on.
//!
//! Tasks are held at a gate the test opens: a file the test creates, which
//! a process worker can see as well as a thread. Short timeouts expire only
//! on held tasks; long ones are hang guards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use concurrent_futures::{Error, ExecutorExt, MapOptions, Pool, ThreadPool, ThreadPoolExecutor};

concurrent_futures::process_pool_test_worker!();

/// Hang guard: long enough never to expire on a working library.
const HANG: Duration = Duration::from_secs(30);
/// A wait that must expire, because the item it waits for is held.
const SHORT: Duration = Duration::from_millis(20);

/// A gate: a path that does not exist until the test opens it.
struct Gate(PathBuf);

impl Gate {
    fn new(name: &str) -> Gate {
        let path =
            std::env::temp_dir().join(format!("cf-next-timeout-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Gate(path)
    }

    fn open(&self) {
        std::fs::write(&self.0, b"open").expect("create the gate file");
    }

    /// `(gate, x)` for each input: the argument of [`held_at_zero`].
    fn inputs(&self, n: u64) -> Vec<(String, u64)> {
        let path = self.0.to_string_lossy().into_owned();
        (0..n).map(|x| (path.clone(), x)).collect()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `x * 10`; input 0 first waits for its gate to open (or the hang guard).
fn held_at_zero((gate, x): (String, u64)) -> u64 {
    if x == 0 {
        let began = Instant::now();
        while !Path::new(&gate).exists() && began.elapsed() < HANG {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    x * 10
}

fn threads() -> ThreadPoolExecutor {
    ThreadPoolExecutor::new(2).unwrap()
}

fn processes() -> Pool {
    Pool::builder()
        .processes(2)
        .test_harness()
        .build()
        .expect("a pool builds")
}

fn expected(n: u64) -> Vec<Result<u64, Error>> {
    (0..n).map(|x| Ok(x * 10)).collect()
}

#[test]
fn mp12_map_next_timeout_on_a_held_item_is_timeout_and_the_item_stays_next() {
    for chunksize in [1, 2] {
        let gate = Gate::new(&format!("map-{chunksize}"));
        let pool = threads();
        let options = MapOptions::new().chunksize(chunksize);
        let mut results = pool.map_with(held_at_zero, gate.inputs(4), options);
        for _ in 0..3 {
            assert_eq!(
                results.next_timeout(SHORT),
                Err(Error::Timeout { waited: SHORT }),
                "chunksize {chunksize}"
            );
        }
        gate.open();
        let mut got = Vec::new();
        while let Some(r) = results.next_timeout(HANG).expect("within the hang guard") {
            got.push(r);
        }
        assert_eq!(got, expected(4), "chunksize {chunksize}");
        assert_eq!(results.next_timeout(Duration::ZERO), Ok(None));
    }
}

#[test]
fn mp12_m3_a_map_deadline_that_passes_first_ends_the_map() {
    let gate = Gate::new("deadline");
    let pool = threads();
    let options = MapOptions::new().timeout(SHORT);
    let mut results = pool.map_with(held_at_zero, gate.inputs(3), options);
    assert_eq!(
        results.next_timeout(HANG),
        Ok(Some(Err(Error::MapDeadline { timeout: SHORT })))
    );
    assert_eq!(results.next_timeout(HANG), Ok(None));
    gate.open();
}

#[test]
fn mp12_map_unordered_next_timeout_yields_what_is_ready_then_times_out_on_the_held_item() {
    let gate = Gate::new("unordered");
    let pool = threads();
    let mut results = pool.map_unordered(held_at_zero, gate.inputs(4));
    let mut got = Vec::new();
    for _ in 0..3 {
        let (i, r) = results
            .next_timeout(HANG)
            .expect("an item not held is ready")
            .expect("three are left");
        got.push((i, r));
    }
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got, vec![(1, Ok(10)), (2, Ok(20)), (3, Ok(30))]);
    assert_eq!(
        results.next_timeout(SHORT),
        Err(Error::Timeout { waited: SHORT })
    );
    gate.open();
    assert_eq!(results.next_timeout(HANG), Ok(Some((0, Ok(0)))));
    assert_eq!(results.next_timeout(HANG), Ok(None));
}

#[test]
fn mp12_pool_imap_next_timeout_on_threads_and_processes() {
    for (name, pool) in [
        ("threads", ThreadPool::new(2).unwrap().into_pool()),
        ("processes", processes()),
    ] {
        let gate = Gate::new(&format!("imap-{name}"));
        let mut results = pool.imap(held_at_zero, gate.inputs(4)).unwrap();
        assert_eq!(
            results.next_timeout(SHORT),
            Err(Error::Timeout { waited: SHORT }),
            "{name}"
        );
        gate.open();
        let mut got = Vec::new();
        while let Some(r) = results.next_timeout(HANG).expect("within the hang guard") {
            got.push(r);
        }
        assert_eq!(got, expected(4), "{name}");
    }
}

#[test]
fn mp12_pool_imap_unordered_next_timeout_on_threads_and_processes() {
    for (name, pool) in [
        ("threads", ThreadPool::new(2).unwrap().into_pool()),
        ("processes", processes()),
    ] {
        let gate = Gate::new(&format!("imap-unordered-{name}"));
        let mut results = pool
            .imap_unordered_with(held_at_zero, gate.inputs(4), MapOptions::new().chunksize(2))
            .unwrap();
        // The chunk of items 2 and 3 is not held.
        let mut got: Vec<u64> = (0..2)
            .map(|_| results.next_timeout(HANG).unwrap().unwrap().unwrap())
            .collect();
        assert_eq!(
            results.next_timeout(SHORT),
            Err(Error::Timeout { waited: SHORT }),
            "{name}: items 0 and 1 are held"
        );
        gate.open();
        while let Some(r) = results.next_timeout(HANG).expect("within the hang guard") {
            got.push(r.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 10, 20, 30], "{name}");
    }
}

fn slow(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A timeout too long for the clock is no limit, as everywhere in the
/// crate: it waits for the result (it returned `Timeout` at once, so a
/// caller looping on `Timeout` spun). Found by review.
#[test]
fn mp12_next_timeout_with_duration_max_waits_for_the_result() {
    let pool = threads();
    for chunksize in [1, 2] {
        let options = MapOptions::new().chunksize(chunksize);
        let mut results = pool.map_with(slow, [50, 1], options);
        assert_eq!(results.next_timeout(Duration::MAX), Ok(Some(Ok(50))));
        assert_eq!(results.next_timeout(Duration::MAX), Ok(Some(Ok(1))));
        assert_eq!(results.next_timeout(Duration::MAX), Ok(None));
    }
    let mut unordered = pool.map_unordered(slow, [50]);
    assert_eq!(unordered.next_timeout(Duration::MAX), Ok(Some((0, Ok(50)))));
}
