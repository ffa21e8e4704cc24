//! Joining a thread pool's worker threads (`src/thread/joins.rs`): every
//! kind of caller of `shutdown(wait = true)` and `shutdown_within` waits
//! for the worker threads to end, thread-local destructors included (S3,
//! PP8). Found by review of the first `joins` module: a task of the pool
//! did not join the other workers; a `shutdown_within` that could not
//! start its joiner thread said `Finished` and dropped the handles; each
//! timed-out `shutdown_within` left one more joiner thread alive. Every
//! wait has a hang guard; no test asserts a duration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use concurrent_futures::{ShutdownOutcome, ThreadPoolExecutor};

mod common;
use common::{HANG, wait_for};

/// A gate that thread-local destructors wait on (never panics: a panic in
/// a thread-local destructor aborts). Gives up after 5 s.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .cond
            .wait_timeout_while(open, Duration::from_secs(5), |o| !*o);
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cond.notify_all();
    }
}

/// A thread-local whose destructor (a flush, a connection close) waits for
/// the gate, then counts itself done.
struct SlowDtor {
    gate: Arc<Gate>,
    done: Arc<AtomicUsize>,
}

impl Drop for SlowDtor {
    fn drop(&mut self) {
        self.gate.wait();
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static SLOW: std::cell::RefCell<Option<SlowDtor>> = const { std::cell::RefCell::new(None) };
}

/// A pool of `n` workers, each holding a [`SlowDtor`] (the tasks setting
/// them meet, so each runs on its own worker).
fn pool_with_slow_dtors(n: usize) -> (Arc<ThreadPoolExecutor>, Arc<Gate>, Arc<AtomicUsize>) {
    let pool = Arc::new(ThreadPoolExecutor::new(n).unwrap());
    let gate = Arc::new(Gate::default());
    let done = Arc::new(AtomicUsize::new(0));
    let met = Arc::new(AtomicUsize::new(0));
    let futs: Vec<_> = (0..n)
        .map(|_| {
            let (gate, done, met) = (gate.clone(), done.clone(), met.clone());
            pool.spawn(move || {
                SLOW.with(|s| *s.borrow_mut() = Some(SlowDtor { gate, done }));
                met.fetch_add(1, Ordering::SeqCst);
                assert!(wait_for(HANG, || met.load(Ordering::SeqCst) == n));
            })
        })
        .collect();
    for f in futs {
        f.result(Some(HANG)).unwrap();
    }
    (pool, gate, done)
}

/// S3 (`Executor::shutdown`: "a thread-pool task waits for every worker
/// but its own"): a task calling `shutdown(wait = true)` on its own
/// two-worker pool returns only once the other worker's thread has ended,
/// its thread-local destructor included. It returned as soon as that
/// worker retired (an own thread joined nothing).
#[test]
fn s3_shutdown_wait_from_a_task_waits_for_the_other_worker_thread_to_end() {
    let (pool, gate, done) = pool_with_slow_dtors(2);
    let (p, d) = (pool.clone(), done.clone());
    let task = pool.spawn(move || {
        p.shutdown(true, false);
        d.load(Ordering::SeqCst)
    });
    // The other worker retires (only the task's worker is left), then its
    // destructor is held a while before the gate opens (ordering only).
    assert!(wait_for(HANG, || pool.live_workers() <= 1));
    std::thread::sleep(Duration::from_millis(300));
    gate.open();
    let other_dtors_done_at_return = *task.result(Some(HANG)).unwrap();
    assert_eq!(
        other_dtors_done_at_return, 1,
        "shutdown(wait = true) from a task returned while the other worker's thread \
         still ran its thread-local destructor"
    );
}

/// PP8 (`ShutdownOutcome::Finished`: "every worker exited before the
/// deadline"): `shutdown_within` from a task of its own two-worker pool
/// says `TimedOut` while the other worker's thread is held in its
/// thread-local destructor past the deadline. It said `Finished`.
#[test]
fn pp8_shutdown_within_from_a_task_says_timed_out_while_the_other_worker_thread_runs() {
    let (pool, gate, done) = pool_with_slow_dtors(2);
    let (p, d) = (pool.clone(), done.clone());
    let task = pool.spawn(move || {
        let outcome = p.shutdown_within(Duration::from_millis(300), false);
        (outcome, d.load(Ordering::SeqCst))
    });
    let (outcome, dtors_done) = *task.result(Some(HANG)).unwrap();
    gate.open();
    assert!(
        !(outcome == ShutdownOutcome::Finished && dtors_done == 0),
        "shutdown_within from a task said Finished while the other worker's thread \
         still ran its thread-local destructor (gate held past the deadline)"
    );
}

const NO_THREADS_MARKER: &str = "CF_JOINS_NO_THREADS_HELPER";

/// The helper of the next test, in a child process: it lowers the address
/// space limit so that no new thread stack can be mapped.
#[test]
#[ignore = "helper: run by pp8_shutdown_within_without_a_joiner_thread_says_timed_out_and_a_later_wait_still_joins"]
fn helper_shutdown_within_without_a_joiner_thread() {
    if std::env::var_os(NO_THREADS_MARKER).is_none() {
        return;
    }
    let (pool, gate, done) = pool_with_slow_dtors(1);
    pool.shutdown(false, false);
    assert!(wait_for(HANG, || pool.live_workers() == 0));
    // The worker has retired; its thread is held in its destructor.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on valid structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut old), 0);
        let low = libc::rlimit {
            rlim_cur: (vm_kb + 512) * 1024,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &low), 0);
    }
    let probe = std::thread::Builder::new().spawn(|| ());
    let outcome = pool.shutdown_within(Duration::from_millis(300), false);
    let dtors_done = done.load(Ordering::SeqCst);
    // SAFETY: as above; the soft limit goes back up to what it was.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &old), 0) };
    if let Ok(h) = probe {
        let _ = h.join();
        println!("VOID: a thread could still start");
        gate.open();
        return;
    }
    // A later shutdown(wait = true) must still wait for the worker thread.
    let g = gate.clone();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        g.open();
    });
    pool.shutdown(true, false);
    let dtors_done_after_wait = done.load(Ordering::SeqCst);
    opener.join().unwrap();
    println!(
        "RESULT outcome={outcome:?} dtors_done={dtors_done} after_wait={dtors_done_after_wait}"
    );
}

/// PP8 and S3: when `shutdown_within` cannot start its "cf-thread-joiner"
/// thread (no memory for a stack, a thread limit), it says `TimedOut`
/// (the worker thread still runs its thread-local destructor), and a
/// later `shutdown(wait = true)` still joins that thread. The handles
/// were dropped with the joiner that did not start, and `Finished` said.
#[test]
fn pp8_shutdown_within_without_a_joiner_thread_says_timed_out_and_a_later_wait_still_joins() {
    let cmd = common::helper_command(
        "helper_shutdown_within_without_a_joiner_thread",
        NO_THREADS_MARKER,
    );
    let out = common::run_helper(cmd, HANG);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESULT").or_else(|| l.find("VOID")).map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no result from the helper:\n{stdout}"));
    assert!(
        !line.starts_with("VOID"),
        "the helper could not block thread starts: {line}"
    );
    assert_eq!(
        line, "RESULT outcome=TimedOut dtors_done=0 after_wait=1",
        "shutdown_within said Finished / shutdown(wait = true) returned while the worker \
         thread still ran its thread-local destructor (the joiner thread could not start)"
    );
}

/// Threads of this process named "cf-thread-joiner" (the kernel keeps 15
/// bytes of a name).
fn joiner_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "cf-thread-joine")
        .count()
}

/// PP8, no thread leaks: a caller retrying `shutdown_within` (or
/// `Pool::join_timeout`, "call it again to wait longer") while a retired
/// worker's thread-local destructor runs keeps at most one
/// "cf-thread-joiner" thread alive. Each timed-out call started one more,
/// which joined the previous one, alive as long as the destructor ran.
#[test]
fn pp8_retried_shutdown_within_keeps_at_most_one_joiner_thread() {
    let (pool, gate, _done) = pool_with_slow_dtors(1);
    pool.shutdown(false, false);
    assert!(wait_for(HANG, || pool.live_workers() == 0));
    let before = joiner_threads();
    for _ in 0..40 {
        assert_eq!(
            pool.shutdown_within(Duration::from_millis(5), false),
            ShutdownOutcome::TimedOut
        );
    }
    let alive = joiner_threads().saturating_sub(before);
    gate.open();
    pool.shutdown(true, false);
    assert!(
        // One for this pool; another test of this binary, running
        // alongside, may hold one more.
        alive <= 2,
        "{alive} cf-thread-joiner threads alive after 40 timed-out shutdown_within calls \
         on one pool (one worker)"
    );
}
