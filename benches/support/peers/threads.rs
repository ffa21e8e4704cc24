//! The thread-pool workloads, generic over [`Lib`] so that every library
//! runs the same code: tiny tasks' throughput, round-trip latency, CPU at a
//! low submit rate (beside its two floors: the pacing loop alone and one
//! bare wake-up per tick), fib's parallel speedup, fork-join recursion
//! (ours against `rayon::join`, which no other peer has) and memory per
//! queued task. Memory is measured in a child process per library, so
//! that each starts from a clean peak RSS.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concurrent_futures::ThreadPoolExecutor;

use crate::libs::{
    Gate, Lib, futures_tp, lib_wanted, ours, rayon, tokio_blocking, tokio_spawn, tp,
};
use crate::table::{Better, Workload, cpu_time, median, proc_status_kb};
use crate::{Cfg, fib, fib_task, noop};

// ---------------------------------------------------------------------------
// Thread workloads, generic over the library

pub(crate) fn run_tiny<L: Lib>(lib: &L, n: u64) -> Vec<f64> {
    let t = Instant::now();
    let handles: Vec<L::H> = (0..n).map(|i| lib.submit(noop, i)).collect();
    let mut check = 0u64;
    for (i, h) in handles.into_iter().enumerate() {
        let v = lib.wait(h);
        debug_assert_eq!(v, i as u64);
        check = check.wrapping_add(v);
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(check, n * (n - 1) / 2);
    vec![n as f64 / secs, secs * 1e3]
}

pub(crate) fn run_latency<L: Lib>(lib: &L, n: u64) -> Vec<f64> {
    let mut lat: Vec<f64> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        let h = lib.submit(noop, i);
        let v = lib.wait(h);
        lat.push(t.elapsed().as_nanos() as f64 / 1e3);
        black_box(v);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    vec![p(0.5), p(0.99)]
}

/// The row of the low-rate workload that runs its loop with no pool.
pub(crate) const PACING_ONLY: &str = "pacing only";

pub(crate) fn run_lowrate<L: Lib>(lib: &L, millis: u64) -> Vec<f64> {
    let cpu = cpu_used_by(|| {
        let mut handles = Vec::with_capacity(millis as usize);
        pace(millis, |k| handles.push(lib.submit(noop, k)));
        for h in handles {
            black_box(lib.wait(h));
        }
    });
    vec![cpu.as_secs_f64() * 1e3]
}

/// The row of the low-rate workload that hands each tick to a bare parked
/// thread: the floor for any pool that runs a task on another thread.
pub(crate) const WAKEUP_FLOOR: &str = "wake-up floor";

/// The low-rate loop handing each tick to one parked thread with
/// `Thread::unpark`: no queue, no handle, no result, just the one wake-up
/// and one park per task that an idle pool cannot avoid. What a pool costs
/// beyond this row is its own doing.
pub(crate) fn run_wakeup_floor(millis: u64) -> Vec<f64> {
    const STOP: u64 = u64::MAX;
    let slot = Arc::new(AtomicU64::new(0));
    let taker = {
        let slot = slot.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::park();
                match slot.swap(0, Ordering::AcqRel) {
                    STOP => break,
                    v => black_box(v),
                };
            }
        })
    };
    let cpu = cpu_used_by(|| {
        pace(millis, |k| {
            slot.store(k + 1, Ordering::Release);
            taker.thread().unpark();
        })
    });
    slot.store(STOP, Ordering::Release);
    taker.thread().unpark();
    taker.join().expect("the parked thread does not panic");
    vec![cpu.as_secs_f64() * 1e3]
}

/// The low-rate loop with no pool: what its own sleeps cost. Every
/// library's figure includes this; on a virtual machine, where each
/// wake-up from a 1 ms sleep costs tens of µs, it is most of ours.
pub(crate) fn run_pacing_only(millis: u64) -> Vec<f64> {
    let cpu = cpu_used_by(|| {
        pace(millis, |k| {
            black_box(k);
        })
    });
    vec![cpu.as_secs_f64() * 1e3]
}

/// The CPU time the whole process uses while `f` runs, once the previous
/// library's threads have had time to fall asleep.
fn cpu_used_by(f: impl FnOnce()) -> Duration {
    std::thread::sleep(Duration::from_millis(100));
    let cpu0 = cpu_time();
    f();
    cpu_time() - cpu0
}

/// Calls `each(k)` at `k` ms for `k` in `0..millis`, sleeping in between.
fn pace(millis: u64, mut each: impl FnMut(u64)) {
    let start = Instant::now();
    for k in 0..millis {
        let due = start + Duration::from_millis(k);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        each(k);
    }
}

pub(crate) fn run_fib<L: Lib>(lib: &L, tasks: u64, n: u64) -> Vec<f64> {
    let t = Instant::now();
    let handles: Vec<L::H> = (0..tasks).map(|_| lib.submit(fib_task, n)).collect();
    for h in handles {
        black_box(lib.wait(h));
    }
    vec![t.elapsed().as_secs_f64() * 1e3]
}

pub(crate) fn run_fib_sequential(tasks: u64, n: u64) -> Vec<f64> {
    let t = Instant::now();
    for _ in 0..tasks {
        black_box(fib_task(n));
    }
    vec![t.elapsed().as_secs_f64() * 1e3]
}

// ---------------------------------------------------------------------------
// Fork-join

pub(crate) const FJ_CUTOFF: u64 = 20;

pub(crate) fn fj_ours(pool: &Arc<ThreadPoolExecutor>, n: u64) -> u64 {
    if n < FJ_CUTOFF {
        return fib(black_box(n));
    }
    let p2 = pool.clone();
    let a = pool.spawn(move || fj_ours(&p2, n - 1));
    let b = fj_ours(pool, n - 2);
    a.into_result().expect("fork-join task") + b
}

pub(crate) fn fj_rayon(n: u64) -> u64 {
    if n < FJ_CUTOFF {
        return fib(black_box(n));
    }
    let (a, b) = rayon::join(|| fj_rayon(n - 1), || fj_rayon(n - 2));
    a + b
}

// ---------------------------------------------------------------------------
// Memory: one library per child process

const LIBS: &[&str] = &[
    "ours",
    "rayon",
    "threadpool",
    "futures",
    "tokio-blocking",
    "tokio-spawn",
];

pub(crate) fn memory_child(lib: &str, n: u64, workers: usize) -> f64 {
    match lib {
        "ours" => memory_in(&ours(workers), n, workers),
        "rayon" => memory_in(&rayon(workers), n, workers),
        "threadpool" => memory_in(&tp(workers), n, workers),
        "futures" => memory_in(&futures_tp(workers), n, workers),
        "tokio-blocking" => memory_in(&tokio_blocking(workers), n, workers),
        "tokio-spawn" => memory_in(&tokio_spawn(workers), n, workers),
        other => panic!("unknown library {other}"),
    }
}

fn memory_in<L: Lib>(lib: &L, n: u64, workers: usize) -> f64 {
    // Warm the pool up (threads started, allocator arenas made).
    for h in (0..1000).map(|i| lib.submit(noop, i)).collect::<Vec<_>>() {
        lib.wait(h);
    }
    let gate = Gate::default();
    for _ in 0..workers {
        let g = gate.clone();
        lib.run_detached(Box::new(move || g.wait()));
    }
    while gate.entered() < workers {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The handle vector is the caller's, not the pool's: allocate and touch
    // it before the baseline.
    let mut handles: Vec<L::H> = Vec::with_capacity(n as usize);
    for slot in handles.spare_capacity_mut() {
        *slot = MaybeUninit::zeroed();
    }
    // Reset the peak (VmHWM) to the current RSS. Without the reset the
    // peak would be the warm-up's, and the figure silently wrong: fail.
    std::fs::write("/proc/self/clear_refs", "5")
        .expect("reset the peak RSS through /proc/self/clear_refs");
    let base = proc_status_kb("VmRSS:");
    for i in 0..n {
        handles.push(lib.submit(noop, i));
    }
    let queued = proc_status_kb("VmHWM:");
    gate.open();
    for h in handles {
        black_box(lib.wait(h));
    }
    let peak = proc_status_kb("VmHWM:").max(queued);
    (peak.saturating_sub(base) * 1024) as f64 / n as f64
}

pub(crate) fn workload_memory(cfg: &Cfg) -> Workload {
    let n = cfg.pick(1_000_000, 100_000);
    let mut w = Workload::new(
        "memory",
        format!("{n} tasks queued behind a blocked pool: peak RSS over baseline per task"),
        vec![("B/task", Better::Lower)],
    );
    let exe = std::env::current_exe().expect("current exe");
    // `BENCH_REPS` children per library, the libraries in turn; the
    // median. A child that fails (its stderr is shown) counts as no sample.
    let libs: Vec<&str> = LIBS.iter().copied().filter(|l| lib_wanted(l)).collect();
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..cfg.reps {
        for &lib in &libs {
            let out = Command::new(&exe)
                .args(["--child-memory", lib, &n.to_string()])
                .env("BENCH_WORKERS", cfg.workers.to_string())
                .output()
                .expect("run memory child");
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Option<f64> = text
                .lines()
                .find_map(|l| l.strip_prefix("BYTES_PER_TASK "))
                .and_then(|v| v.trim().parse().ok());
            match v {
                Some(v) if out.status.success() => samples.entry(lib).or_default().push(v),
                _ => {
                    eprintln!(
                        "memory: the child for {lib} failed ({}):\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    *failures.entry(lib).or_default() += 1;
                }
            }
        }
    }
    for &lib in &libs {
        let v = median(samples.get(lib).map_or(&[][..], Vec::as_slice));
        w.rows.push((lib.to_string(), vec![v]));
        if let Some(f) = failures.get(lib) {
            w.notes
                .push(format!("{lib}: {f} of {} children failed", cfg.reps));
        }
    }
    w.notes.push(
        "each library in a fresh child process; includes the handle kept per task \
         (ours: the Future's allocation; peers: task + oneshot), excludes the \
         caller's handle Vec"
            .into(),
    );
    w
}
