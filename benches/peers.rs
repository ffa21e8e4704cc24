//! `cargo bench --bench peers`: our executors against rayon, threadpool,
//! futures' ThreadPool, tokio and (when `python3` is on the PATH) Python's
//! `concurrent.futures` and `multiprocessing.Pool`, workload by workload, in
//! one run. See BENCHMARKS.md for what each workload measures.
//!
//! Options (after `--`): `--quick` (or `BENCH_QUICK=1`) for small sizes
//! (the whole run in well under 30 s). Environment: `BENCH_WORKERS` (worker
//! count for everyone, default 2), `BENCH_REPS` (repetitions, default 5,
//! at least 5 is recommended), `BENCH_NO_PYTHON=1` (skip the Python peers),
//! `BENCH_ONLY=tiny,latency,...` (run only these workloads),
//! `BENCH_LIBS=ours,rayon,...` (run only these thread-pool libraries; for
//! profiling one alone).
//!
//! Every library runs each workload in this process, interleaved
//! (A B C, B A C, C A B, A C B, ...: each repetition starts from the next
//! library and runs forwards or, every other one, backwards; a sequential
//! baseline opens each repetition), and the table shows medians over the
//! repetitions.
//! The memory workload runs each library in a fresh child process (this
//! binary re-executed with `--child-memory LIB`), so that each gets a clean
//! peak RSS. The Python peers run afterwards, from benches/python_peers.py.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use concurrent_futures::{
    Executor, ExecutorExt, MapOptions, ProcessPoolExecutor, ThreadPoolExecutor,
};

#[path = "support/pipe_floor.rs"]
mod pipe_floor;
use pipe_floor::PipeWorkers;

// ---------------------------------------------------------------------------
// Task bodies (fn items: portable, zero-sized, the same for every library)

fn noop(i: u64) -> u64 {
    i
}

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

fn fib_task(n: u64) -> u64 {
    fib(black_box(n))
}

// ---------------------------------------------------------------------------
// Configuration

#[derive(Clone)]
struct Cfg {
    quick: bool,
    workers: usize,
    reps: usize,
    only: Option<Vec<String>>,
}

impl Cfg {
    fn wants(&self, workload: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|w| w == workload))
    }
    fn pick(&self, full: u64, quick: u64) -> u64 {
        if self.quick { quick } else { full }
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// A oneshot for the peers that have no handle of their own: one allocation,
// no syscall unless the receiver is actually asleep. The same for every peer.

struct Oneshot<T> {
    slot: Mutex<(Option<T>, bool)>,
    cv: Condvar,
}

struct Tx<T>(Arc<Oneshot<T>>);
struct Rx<T>(Arc<Oneshot<T>>);

fn oneshot<T>() -> (Tx<T>, Rx<T>) {
    let s = Arc::new(Oneshot {
        slot: Mutex::new((None, false)),
        cv: Condvar::new(),
    });
    (Tx(s.clone()), Rx(s))
}

impl<T> Tx<T> {
    fn send(self, v: T) {
        let mut g = self.0.slot.lock().unwrap();
        g.0 = Some(v);
        let waiting = g.1;
        drop(g);
        if waiting {
            self.0.cv.notify_one();
        }
    }
}

impl<T> Rx<T> {
    fn recv(self) -> T {
        let mut g = self.0.slot.lock().unwrap();
        loop {
            if let Some(v) = g.0.take() {
                return v;
            }
            g.1 = true;
            g = self.0.cv.wait(g).unwrap();
        }
    }
}

/// A gate that blocked tasks wait on (memory workload).
#[derive(Clone, Default)]
struct Gate {
    inner: Arc<(Mutex<bool>, Condvar, AtomicUsize)>,
}

impl Gate {
    fn wait(&self) {
        self.inner.2.fetch_add(1, Ordering::SeqCst);
        let mut open = self.inner.0.lock().unwrap();
        while !*open {
            open = self.inner.1.wait(open).unwrap();
        }
    }
    fn entered(&self) -> usize {
        self.inner.2.load(Ordering::SeqCst)
    }
    fn open(&self) {
        *self.inner.0.lock().unwrap() = true;
        self.inner.1.notify_all();
    }
}

// ---------------------------------------------------------------------------
// The thread-pool libraries, behind one generic interface (no boxing of
// handles: each library's own handle type).

trait Lib {
    type H: Send;
    fn name(&self) -> &'static str;
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static;
    fn wait(&self, h: Self::H) -> u64;
    /// Runs `job` on the pool with no result (used to block workers).
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>);
}

struct Ours(ThreadPoolExecutor);
impl Lib for Ours {
    type H = concurrent_futures::Future<u64>;
    fn name(&self) -> &'static str {
        "ours"
    }
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static,
    {
        self.0.submit(f, i)
    }
    fn wait(&self, h: Self::H) -> u64 {
        h.into_result().expect("task failed")
    }
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>) {
        drop(self.0.spawn(job));
    }
}

struct Rayon(rayon::ThreadPool);
impl Lib for Rayon {
    type H = Rx<u64>;
    fn name(&self) -> &'static str {
        "rayon"
    }
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot();
        self.0.spawn(move || tx.send(f(i)));
        rx
    }
    fn wait(&self, h: Self::H) -> u64 {
        h.recv()
    }
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>) {
        self.0.spawn(job);
    }
}

struct TP(threadpool::ThreadPool);
impl Lib for TP {
    type H = Rx<u64>;
    fn name(&self) -> &'static str {
        "threadpool"
    }
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot();
        self.0.execute(move || tx.send(f(i)));
        rx
    }
    fn wait(&self, h: Self::H) -> u64 {
        h.recv()
    }
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>) {
        self.0.execute(job);
    }
}

struct FuturesTP(futures::executor::ThreadPool);
impl Lib for FuturesTP {
    type H = futures::future::RemoteHandle<u64>;
    fn name(&self) -> &'static str {
        "futures"
    }
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static,
    {
        use futures::task::SpawnExt;
        self.0
            .spawn_with_handle(async move { f(i) })
            .expect("spawn")
    }
    fn wait(&self, h: Self::H) -> u64 {
        futures::executor::block_on(h)
    }
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>) {
        self.0.spawn_ok(async move { job() });
    }
}

struct TokioBlocking(tokio::runtime::Runtime);
impl Lib for TokioBlocking {
    type H = tokio::task::JoinHandle<u64>;
    fn name(&self) -> &'static str {
        "tokio-blocking"
    }
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static,
    {
        self.0.spawn_blocking(move || f(i))
    }
    fn wait(&self, h: Self::H) -> u64 {
        self.0.block_on(h).expect("join")
    }
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>) {
        drop(self.0.spawn_blocking(job));
    }
}

struct TokioSpawn(tokio::runtime::Runtime);
impl Lib for TokioSpawn {
    type H = tokio::task::JoinHandle<u64>;
    fn name(&self) -> &'static str {
        "tokio-spawn"
    }
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static,
    {
        self.0.spawn(async move { f(i) })
    }
    fn wait(&self, h: Self::H) -> u64 {
        self.0.block_on(h).expect("join")
    }
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>) {
        drop(self.0.spawn(async move { job() }));
    }
}

fn ours(n: usize) -> Ours {
    Ours(ThreadPoolExecutor::new(n).unwrap())
}
fn rayon_pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}
fn rayon(n: usize) -> Rayon {
    Rayon(rayon_pool(n))
}
fn tp(n: usize) -> TP {
    TP(threadpool::ThreadPool::new(n))
}
fn futures_tp(n: usize) -> FuturesTP {
    FuturesTP(
        futures::executor::ThreadPool::builder()
            .pool_size(n)
            .create()
            .unwrap(),
    )
}
fn tokio_blocking(n: usize) -> TokioBlocking {
    TokioBlocking(
        tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(n)
            .build()
            .unwrap(),
    )
}
fn tokio_spawn(n: usize) -> TokioSpawn {
    TokioSpawn(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .build()
            .unwrap(),
    )
}

/// Whether `BENCH_LIBS` (a comma-separated list; default: all) names `lib`.
/// Meant for profiling one library alone, e.g. `BENCH_LIBS=ours`.
fn lib_wanted(lib: &str) -> bool {
    std::env::var("BENCH_LIBS")
        .map(|v| v.split(',').any(|x| x.trim() == lib))
        .unwrap_or(true)
}

/// Applies `$body` (a generic fn taking `&impl Lib`) to every library, in a
/// fixed order. Builds the pools once; returns one runner per library.
macro_rules! for_each_lib {
    ($n:expr, |$lib:ident| $body:expr) => {{
        let n = $n;
        let mut runners: Vec<Runner<'static>> = Vec::new();
        if lib_wanted("ours") {
            let $lib = ours(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if lib_wanted("rayon") {
            let $lib = rayon(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if lib_wanted("threadpool") {
            let $lib = tp(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if lib_wanted("futures") {
            let $lib = futures_tp(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if lib_wanted("tokio-blocking") {
            let $lib = tokio_blocking(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if lib_wanted("tokio-spawn") {
            let $lib = tokio_spawn(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        runners
    }};
}

// ---------------------------------------------------------------------------
// Results

/// A library's run of one workload: its name and one repetition.
type Runner<'a> = (&'static str, Box<dyn FnMut() -> Vec<f64> + 'a>);

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// One workload's medians: lib → metric values (in `metrics` order).
struct Workload {
    key: &'static str,
    title: String,
    metrics: Vec<(&'static str, Better)>,
    rows: Vec<(String, Vec<f64>)>,
    notes: Vec<String>,
    /// CPU snapshot when the workload started (see [`Workload::done`]).
    probe: Option<(Instant, u64, Duration)>,
    /// Cores' worth of CPU that other processes used during our runs.
    other_load: f64,
}

impl Workload {
    fn new(key: &'static str, title: String, metrics: Vec<(&'static str, Better)>) -> Self {
        Workload {
            key,
            title,
            metrics,
            rows: Vec::new(),
            notes: Vec::new(),
            probe: Some(cpu_snapshot()),
            other_load: f64::NAN,
        }
    }
    /// Ends the workload's own runs: records how busy the rest of the
    /// machine was meanwhile (all CPUs' busy time from /proc/stat, minus
    /// this process's and its children's CPU time), in cores.
    fn done(mut self) -> Self {
        if let Some((t0, busy0, ours0)) = self.probe.take() {
            let (_, busy1, ours1) = cpu_snapshot();
            let wall = t0.elapsed().as_secs_f64();
            let busy = busy1.saturating_sub(busy0) as f64 / clock_ticks();
            let ours = ours1.saturating_sub(ours0).as_secs_f64();
            self.other_load = ((busy - ours) / wall).max(0.0);
        }
        self
    }
    fn get(&self, lib: &str) -> Option<&Vec<f64>> {
        self.rows.iter().find(|(l, _)| l == lib).map(|(_, v)| v)
    }
    fn print(&self) {
        println!("\n## {} — {}", self.key, self.title);
        let ours = self.get("ours").cloned();
        let mut header = format!("| {:<28} |", "library");
        for (m, b) in &self.metrics {
            let arrow = if *b == Better::Higher { "↑" } else { "↓" };
            header += &format!(" {:>16} |", format!("{m} {arrow}"));
        }
        header += &format!(" {:>12} |", "ours/peer");
        println!("{header}");
        let mut sep = "|---|".to_string();
        for _ in &self.metrics {
            sep += "---:|";
        }
        sep += "---:|";
        println!("{sep}");
        for (lib, vals) in &self.rows {
            let mut line = format!("| {lib:<28} |");
            for v in vals {
                line += &format!(" {:>16} |", fmt_num(*v));
            }
            let ratio = match &ours {
                Some(o) if lib != "ours" && vals[0] != 0.0 => format!("{:.2}", o[0] / vals[0]),
                _ => "-".into(),
            };
            line += &format!(" {ratio:>12} |");
            println!("{line}");
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
        if !self.other_load.is_nan() {
            println!(
                "  other processes on this machine used {:.2} cores on average during these runs",
                self.other_load
            );
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 1e6 {
        format!("{:.3e}", v)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs every runner `reps` times, interleaved in a rotating order, and
/// returns the per-metric medians of each.
///
/// The sequential baseline runs in every repetition, so that it shares
/// the host's drift with the pools (run apart, it once gave a process-fib
/// speedup of 2.30 on 2 cores: the host sped up after it). But it burns
/// one CPU for milliseconds, and a pool sampled right after that started
/// its second worker late in about half the samples on this VM (1-4.6 ms,
/// rayon's as much as ours: `rayon::join` of `fib(32)` in 2.4 ms back to
/// back, 4.8-5.0 ms after a sequential `fib(32)`), which decided medians.
/// So every sequential sample is followed by [`busy_every_cpu`], untimed:
/// late starts after it fell to about a sixth of the samples, the rate
/// after any idle pause.
fn interleave(reps: usize, mut runners: Vec<Runner<'_>>) -> Vec<(String, Vec<f64>)> {
    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); runners.len()];
    // One warm-up round, not recorded.
    for (name, r) in runners.iter_mut() {
        r();
        if *name == SEQUENTIAL {
            busy_every_cpu();
        }
    }
    // A library that runs right after another inherits that one's idle
    // threads, which may still be spinning (rayon's yield for a while
    // before they sleep, ours for up to 20 µs) or just parking: on 2 cores
    // that costs whoever runs next. So the order changes each repetition:
    // it starts from the next library each time and runs forwards, then
    // backwards (see below), so that no library always follows the same
    // neighbour (rotation alone keeps the cyclic order, hence the same
    // predecessor). There is no
    // pause between samples: an idle pause lets this VM's vCPUs halt, and
    // waking a halted vCPU (20-50 µs) then dominates the libraries whose
    // workers block, which is a property of the VM, not of them.
    //
    // The baseline opens each repetition, and the libraries rotate after
    // it, so that each follows it equally often (in the rotation, a
    // baseline at a fixed place would precede the same library in every
    // other repetition).
    let (baselines, pools): (Vec<usize>, Vec<usize>) =
        (0..runners.len()).partition(|&k| runners[k].0 == SEQUENTIAL);
    let n = pools.len();
    for rep in 0..reps {
        for &k in &baselines {
            samples[k].push((runners[k].1)());
            busy_every_cpu();
        }
        // Starting from a different library each time, forwards, then
        // backwards (A B C, B A C, C A B, A C B, ...).
        for j in 0..n {
            let step = if rep % 2 == 1 { n - j } else { j };
            let k = pools[(rep + step) % n];
            samples[k].push((runners[k].1)());
        }
    }
    runners
        .iter()
        .zip(samples)
        .map(|((name, _), s)| {
            let m = s[0].len();
            let meds = (0..m)
                .map(|j| median(&mut s.iter().map(|x| x[j]).collect::<Vec<_>>()))
                .collect();
            (name.to_string(), meds)
        })
        .collect()
}

/// (now, busy ticks of all CPUs from /proc/stat, CPU time of this process
/// plus its children: reaped ones and live direct children such as
/// process-pool workers).
fn cpu_snapshot() -> (Instant, u64, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy = stat
        .lines()
        .next()
        .map(|l| {
            // cpu user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            v.iter()
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
                .map(|(_, x)| *x)
                .sum()
        })
        .unwrap_or(0);
    (Instant::now(), busy, cpu_time() + children_cpu())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU time of reaped children plus live direct children.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let reaped = tv(ru.ru_utime) + tv(ru.ru_stime);
    let me = std::process::id().to_string();
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ... utime(14) stime(15)
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.get(1) == Some(&me.as_str()) {
                let u: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
                let s: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
                ticks += u + s;
            }
        }
    }
    reaped + Duration::from_secs_f64(ticks as f64 / clock_ticks())
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn proc_status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Thread workloads, generic over the library

fn run_tiny<L: Lib>(lib: &L, n: u64) -> Vec<f64> {
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

fn run_latency<L: Lib>(lib: &L, n: u64) -> Vec<f64> {
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
const PACING_ONLY: &str = "pacing only";

fn run_lowrate<L: Lib>(lib: &L, millis: u64) -> Vec<f64> {
    let cpu = cpu_used_by(|| {
        let mut handles = Vec::with_capacity(millis as usize);
        pace(millis, |k| handles.push(lib.submit(noop, k)));
        for h in handles {
            black_box(lib.wait(h));
        }
    });
    vec![cpu.as_secs_f64() * 1e3]
}

/// Keeps every CPU busy for 2 ms on fresh threads (which the kernel
/// spreads over idle CPUs), so that the next sample starts as it would
/// after a parallel one, not after one CPU's long burn.
fn busy_every_cpu() {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..cpus {
            s.spawn(|| {
                let end = Instant::now() + Duration::from_millis(2);
                while Instant::now() < end {
                    black_box(fib(black_box(15)));
                }
            });
        }
    });
}

/// The row of the fib, fork-join and process-fib workloads that runs the
/// same work on the calling thread: the baseline, not a library.
const SEQUENTIAL: &str = "sequential";

/// The row of the process-fib workload that runs the same tasks on our
/// thread pool: the host's ceiling for that run, with no transport.
const THREADS_REFERENCE: &str = "ours on threads";

/// The row of the low-rate workload that hands each tick to a bare parked
/// thread: the floor for any pool that runs a task on another thread.
const WAKEUP_FLOOR: &str = "wake-up floor";

/// The low-rate loop handing each tick to one parked thread with
/// `Thread::unpark`: no queue, no handle, no result, just the one wake-up
/// and one park per task that an idle pool cannot avoid. What a pool costs
/// beyond this row is its own doing.
fn run_wakeup_floor(millis: u64) -> Vec<f64> {
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
fn run_pacing_only(millis: u64) -> Vec<f64> {
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

fn run_fib<L: Lib>(lib: &L, tasks: u64, n: u64) -> Vec<f64> {
    let t = Instant::now();
    let handles: Vec<L::H> = (0..tasks).map(|_| lib.submit(fib_task, n)).collect();
    for h in handles {
        black_box(lib.wait(h));
    }
    vec![t.elapsed().as_secs_f64() * 1e3]
}

fn run_fib_sequential(tasks: u64, n: u64) -> Vec<f64> {
    let t = Instant::now();
    for _ in 0..tasks {
        black_box(fib_task(n));
    }
    vec![t.elapsed().as_secs_f64() * 1e3]
}

// ---------------------------------------------------------------------------
// Fork-join

const FJ_CUTOFF: u64 = 20;

fn fj_ours(pool: &Arc<ThreadPoolExecutor>, n: u64) -> u64 {
    if n < FJ_CUTOFF {
        return fib(black_box(n));
    }
    let p2 = pool.clone();
    let a = pool.spawn(move || fj_ours(&p2, n - 1));
    let b = fj_ours(pool, n - 2);
    a.into_result().expect("fork-join task") + b
}

fn fj_rayon(n: u64) -> u64 {
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

fn memory_child(lib: &str, n: u64, workers: usize) -> f64 {
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
    // Reset the peak (VmHWM) to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
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

fn workload_memory(cfg: &Cfg) -> Workload {
    let n = cfg.pick(1_000_000, 100_000);
    let mut w = Workload::new(
        "memory",
        format!("{n} tasks queued behind a blocked pool: peak RSS over baseline per task"),
        vec![("B/task", Better::Lower)],
    );
    let exe = std::env::current_exe().expect("current exe");
    // Three children per library, interleaved; the median.
    let reps = if cfg.quick { 1 } else { 3 };
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..reps {
        for lib in LIBS.iter().filter(|l| lib_wanted(l)) {
            let out = Command::new(&exe)
                .args(["--child-memory", lib, &n.to_string()])
                .env("BENCH_WORKERS", cfg.workers.to_string())
                .output()
                .expect("run memory child");
            let text = String::from_utf8_lossy(&out.stdout);
            let v: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("BYTES_PER_TASK "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN);
            samples.entry(lib).or_default().push(v);
        }
    }
    for lib in LIBS.iter().filter(|l| lib_wanted(l)) {
        let v = median(samples.get_mut(lib).unwrap());
        w.rows.push((lib.to_string(), vec![v]));
    }
    w.notes.push(
        "each library in a fresh child process; includes the handle kept per task \
         (ours: the Future's allocation; peers: task + oneshot), excludes the \
         caller's handle Vec"
            .into(),
    );
    w
}

// ---------------------------------------------------------------------------
// Process workloads (ours only; Python's pools come from python_peers.py)

fn process_pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("process pool")
}

fn process_workloads(cfg: &Cfg, out: &mut Vec<Workload>) {
    let reps = cfg.reps;
    let any = [
        "process-tiny",
        "process-map",
        "process-latency",
        "process-fib",
    ]
    .iter()
    .any(|w| cfg.wants(w));
    if any {
        let pool = process_pool(cfg.workers);
        // Warm up: both workers started and serving.
        let warm: Vec<_> = (0..100).map(|i| pool.submit(noop, i)).collect();
        for f in warm {
            f.into_result().unwrap();
        }

        if cfg.wants("process-tiny") {
            let n = cfg.pick(20_000, 2_000);
            let mut w = Workload::new(
                "process-tiny",
                format!("{n} no-op submits to a process pool, one handle each"),
                vec![("tasks/s", Better::Higher), ("ms", Better::Lower)],
            );
            let runners: Vec<Runner<'_>> = vec![(
                "ours",
                Box::new(|| {
                    let t = Instant::now();
                    let fs: Vec<_> = (0..n).map(|i| pool.submit(noop, i)).collect();
                    for f in fs {
                        black_box(f.into_result().unwrap());
                    }
                    let s = t.elapsed().as_secs_f64();
                    vec![n as f64 / s, s * 1e3]
                }),
            )];
            w.rows = interleave(reps, runners);
            out.push(w.done());
        }

        if cfg.wants("process-map") {
            let n = cfg.pick(200_000, 20_000);
            let mut w = Workload::new(
                "process-map",
                format!("map over {n} items, chunksize 1000"),
                vec![("items/s", Better::Higher), ("ms", Better::Lower)],
            );
            let runners: Vec<Runner<'_>> = vec![(
                "ours",
                Box::new(|| {
                    let t = Instant::now();
                    let mut sum = 0u64;
                    for r in pool.map_with(noop, 0..n, MapOptions::new().chunksize(1000)) {
                        sum = sum.wrapping_add(r.unwrap());
                    }
                    assert_eq!(sum, n * (n - 1) / 2);
                    let s = t.elapsed().as_secs_f64();
                    vec![n as f64 / s, s * 1e3]
                }),
            )];
            w.rows = interleave(reps, runners);
            out.push(w.done());
        }

        if cfg.wants("process-latency") {
            let n = cfg.pick(2_000, 300);
            let mut w = Workload::new(
                "process-latency",
                format!("{n} sequential submit-then-wait round trips to a process pool"),
                vec![("median µs", Better::Lower), ("p99 µs", Better::Lower)],
            );
            let runners: Vec<Runner<'_>> = vec![(
                "ours",
                Box::new(|| {
                    let mut lat = Vec::with_capacity(n as usize);
                    for i in 0..n {
                        let t = Instant::now();
                        black_box(pool.submit(noop, i).into_result().unwrap());
                        lat.push(t.elapsed().as_nanos() as f64 / 1e3);
                    }
                    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
                    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
                    vec![p(0.5), p(0.99)]
                }),
            )];
            w.rows = interleave(reps, runners);
            out.push(w.done());
        }

        if cfg.wants("process-fib") {
            let (tasks, k) = if cfg.quick { (32, 27) } else { (64, 27) };
            let mut w = Workload::new(
                "process-fib",
                format!("{tasks} × fib({k}) on a process pool vs sequential"),
                vec![("speedup", Better::Higher), ("ms", Better::Lower)],
            );
            // The same tasks on our thread pool: no transport at all, so its
            // speedup is the most this host gives any pool in this run.
            let threads = ThreadPoolExecutor::new(cfg.workers).unwrap();
            let fib_on = |pool: &dyn Executor| {
                let t = Instant::now();
                let fs: Vec<_> = (0..tasks).map(|_| pool.submit(fib_task, k)).collect();
                for f in fs {
                    black_box(f.into_result().unwrap());
                }
                vec![t.elapsed().as_secs_f64() * 1e3]
            };
            // The barest transport between processes, both ways of
            // receiving: what any process pool pays on this host.
            let floor = std::cell::RefCell::new(PipeWorkers::start(cfg.workers, k));
            let expected = fib(k);
            let runners: Vec<Runner<'_>> = vec![
                (SEQUENTIAL, Box::new(move || run_fib_sequential(tasks, k))),
                ("ours", Box::new(|| fib_on(&pool))),
                (THREADS_REFERENCE, Box::new(|| fib_on(&threads))),
                (
                    pipe_floor::READER_PER_WORKER,
                    Box::new(|| {
                        pipe_floor::timed(
                            floor.borrow_mut().run_with_readers(tasks as usize),
                            expected,
                        )
                    }),
                ),
                (
                    pipe_floor::CALLER_READS,
                    Box::new(|| {
                        pipe_floor::timed(
                            floor.borrow_mut().run_caller_reads(tasks as usize),
                            expected,
                        )
                    }),
                ),
            ];
            let rows = interleave(reps.max(15), runners);
            w.rows = speedups(rows);
            w.notes.push(format!(
                "{THREADS_REFERENCE}: the same tasks on our thread pool, interleaved with \
                 the rest: what this host gives a pool with no transport in this run"
            ));
            w.notes.push(format!(
                "{}: the same tasks over raw pipes to bare worker processes (no framing, \
                 futures or supervision), a parent thread per worker receiving, as in our \
                 design; {}: the same, the caller polling the pipes itself (no parent thread \
                 between a worker and the caller). See benches/support/pipe_floor.rs",
                pipe_floor::READER_PER_WORKER,
                pipe_floor::CALLER_READS
            ));
            out.push(w.done());
        }
        Executor::shutdown(&pool, true, false);
    }

    if cfg.wants("process-startup") {
        let mut w = Workload::new(
            "process-startup",
            "build a 2-worker process pool → first result of a no-op".into(),
            vec![("ms", Better::Lower)],
        );
        let runners: Vec<Runner<'_>> = vec![(
            "ours",
            Box::new(|| {
                let t = Instant::now();
                let pool = process_pool(2);
                black_box(pool.submit(noop, 1).into_result().unwrap());
                let ms = t.elapsed().as_secs_f64() * 1e3;
                Executor::shutdown(&pool, true, false);
                vec![ms]
            }),
        )];
        w.rows = interleave(reps, runners);
        w.notes.push(format!(
            "this process: {} MiB resident, {} threads (ours starts workers with posix_spawn: no page-table copy; Python's fork copies them)",
            proc_status_kb("VmRSS:") / 1024,
            proc_status_kb("Threads:")
        ));
        out.push(w.done());
    }
}

/// Turns `[("sequential", [ms]), (lib, [ms]) ...]` into
/// `(lib, [speedup, ms])` rows (sequential gets speedup 1).
fn speedups(rows: Vec<(String, Vec<f64>)>) -> Vec<(String, Vec<f64>)> {
    let seq = rows
        .iter()
        .find(|(l, _)| l == SEQUENTIAL)
        .map(|(_, v)| v[0])
        .unwrap_or(f64::NAN);
    rows.into_iter()
        .map(|(l, v)| (l, vec![seq / v[0], v[0]]))
        .collect()
}

// ---------------------------------------------------------------------------
// Python peers

fn python_peers(cfg: &Cfg, out: &mut [Workload]) -> Option<String> {
    if std::env::var_os("BENCH_NO_PYTHON").is_some() {
        return Some("Python peers skipped (BENCH_NO_PYTHON is set)".into());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_peers.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg("--workers")
        .arg(cfg.workers.to_string())
        .arg("--reps")
        .arg(cfg.reps.to_string());
    if cfg.quick {
        cmd.arg("--quick");
    }
    if let Some(only) = &cfg.only {
        cmd.arg("--only").arg(only.join(","));
    }
    eprintln!("running the Python peers: {cmd:?}");
    let output = match cmd.stderr(std::process::Stdio::inherit()).output() {
        Ok(o) => o,
        Err(e) => {
            return Some(format!(
                "Python peers skipped: python3 is not on the PATH ({e})"
            ));
        }
    };
    if !output.status.success() {
        return Some(format!(
            "Python peers failed ({}); their rows are missing",
            output.status
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut version = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(ver) = v.get("python").and_then(|x| x.as_str()) {
            version = Some(ver.to_string());
            continue;
        }
        let (Some(wk), Some(lib), Some(vals)) = (
            v.get("workload").and_then(|x| x.as_str()),
            v.get("lib").and_then(|x| x.as_str()),
            v.get("values").and_then(|x| x.as_array()),
        ) else {
            continue;
        };
        if let Some(w) = out.iter_mut().find(|w| w.key == wk) {
            let vals: Vec<f64> = vals
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect();
            w.rows.push((format!("py:{lib}"), vals));
            if let Some(note) = v.get("note").and_then(|x| x.as_str()) {
                w.notes.push(format!("py:{lib}: {note}"));
            }
        }
    }
    version.map(|v| format!("Python peers: {v}"))
}

// ---------------------------------------------------------------------------
// The summary

struct Verdict {
    workload: String,
    ours: String,
    best: String,
    ratio: String,
    target: &'static str,
    met: String,
    load: f64,
}

fn best_peer(w: &Workload, metric: usize, filter: impl Fn(&str) -> bool) -> Option<(String, f64)> {
    let better = w.metrics[metric].1;
    w.rows
        .iter()
        .filter(|(l, _)| {
            ![
                "ours",
                SEQUENTIAL,
                PACING_ONLY,
                WAKEUP_FLOOR,
                THREADS_REFERENCE,
                pipe_floor::READER_PER_WORKER,
                pipe_floor::CALLER_READS,
            ]
            .contains(&l.as_str())
                && filter(l)
        })
        .filter(|(_, v)| !v[metric].is_nan())
        .map(|(l, v)| (l.clone(), v[metric]))
        .reduce(|a, b| {
            let b_better = match better {
                Better::Higher => b.1 > a.1,
                Better::Lower => b.1 < a.1,
            };
            if b_better { b } else { a }
        })
}

fn yes(b: bool) -> String {
    if b { "yes".into() } else { "NO".into() }
}

fn summarize(ws: &[Workload]) -> Vec<Verdict> {
    let mut out = Vec::new();
    let find = |k: &str| ws.iter().find(|w| w.key == k);
    let ours = |w: &Workload, m: usize| w.get("ours").map(|v| v[m]).unwrap_or(f64::NAN);
    let rust_peer = |l: &str| !l.starts_with("py:");

    if let Some(w) = find("tiny") {
        let o = ours(w, 0);
        let (bn, bv) = best_peer(w, 0, rust_peer).unwrap_or_default();
        out.push(Verdict {
            load: w.other_load,
            workload: "tiny (tasks/s)".into(),
            ours: fmt_num(o),
            best: format!("{} ({bn})", fmt_num(bv)),
            ratio: format!("{:.2}", o / bv),
            target: "≥ 1.5× best peer",
            met: yes(o >= 1.5 * bv),
        });
    }
    if let Some(w) = find("latency") {
        let (om, op) = (ours(w, 0), ours(w, 1));
        let r = w.get("rayon").map(|v| v[0]).unwrap_or(f64::NAN);
        let (bn, bv) = best_peer(w, 0, rust_peer).unwrap_or_default();
        out.push(Verdict {
            load: w.other_load,
            workload: "latency (median µs / p99 µs)".into(),
            ours: format!("{} / {}", fmt_num(om), fmt_num(op)),
            best: format!("{} ({bn}); rayon {}", fmt_num(bv), fmt_num(r)),
            ratio: format!("{:.2} vs rayon", om / r),
            target: "median ≤ rayon's, p99 ≤ 20 µs",
            met: yes(om <= r && op <= 20.0),
        });
    }
    if let Some(w) = find("low-rate-cpu") {
        let o = ours(w, 0);
        let r = w.get("rayon").map(|v| v[0]).unwrap_or(f64::NAN);
        let pacing = w.get(PACING_ONLY).map(|v| v[0]).unwrap_or(f64::NAN);
        let floor = w.get(WAKEUP_FLOOR).map(|v| v[0]).unwrap_or(f64::NAN);
        let (bn, bv) = best_peer(w, 0, rust_peer).unwrap_or_default();
        out.push(Verdict {
            load: w.other_load,
            workload: "low-rate CPU (ms CPU)".into(),
            ours: fmt_num(o),
            best: format!("{} ({bn}); rayon {}", fmt_num(bv), fmt_num(r)),
            ratio: format!(
                "{:.2} vs rayon ({:.2} net of the loop's own {} ms; the bare wake-up floor is {:.2})",
                o / r,
                (o - pacing) / (r - pacing),
                fmt_num(pacing),
                floor / r
            ),
            target: "≤ ¼ of rayon's",
            met: yes(o <= 0.25 * r),
        });
    }
    if let Some(w) = find("fib") {
        let o = ours(w, 0);
        let (bn, bv) = best_peer(w, 0, rust_peer).unwrap_or_default();
        out.push(Verdict {
            load: w.other_load,
            workload: "fib (speedup)".into(),
            ours: fmt_num(o),
            best: format!("{} ({bn})", fmt_num(bv)),
            ratio: format!("{:.2}", o / bv),
            target: "≥ 1.9 and ≥ best peer",
            met: yes(o >= 1.9 && o >= bv),
        });
    }
    if let Some(w) = find("fork-join") {
        let o = ours(w, 0);
        let r = w.get("rayon::join").map(|v| v[0]).unwrap_or(f64::NAN);
        out.push(Verdict {
            load: w.other_load,
            workload: "fork-join (ms)".into(),
            ours: fmt_num(o),
            best: format!("{} (rayon::join)", fmt_num(r)),
            ratio: format!("{:.2}", o / r),
            target: "≤ 1.5× rayon::join",
            met: yes(o <= 1.5 * r),
        });
    }
    if let Some(w) = find("memory") {
        let o = ours(w, 0);
        let (bn, bv) = best_peer(w, 0, rust_peer).unwrap_or_default();
        out.push(Verdict {
            load: w.other_load,
            workload: "memory (B/task)".into(),
            ours: fmt_num(o),
            best: format!("{} ({bn})", fmt_num(bv)),
            ratio: format!("{:.2}", o / bv),
            target: "≤ 128 B/task + closure",
            // The closure captures one u64 (8 bytes).
            met: yes(o <= 128.0 + 8.0),
        });
    }
    if let Some(w) = find("process-tiny") {
        let o = ours(w, 0);
        let mp = w.get("py:mp.Pool.apply_async").map(|v| v[0]);
        let ppe = w.get("py:ProcessPoolExecutor").map(|v| v[0]);
        let (ratio, met, best) = match (mp, ppe) {
            (Some(mp), Some(ppe)) => (
                format!("{:.1}× mp, {:.1}× PPE", o / mp, o / ppe),
                yes(o >= 5.0 * mp && o >= 20.0 * ppe),
                format!(
                    "{} (mp.Pool.apply_async); PPE {}",
                    fmt_num(mp),
                    fmt_num(ppe)
                ),
            ),
            _ => ("-".into(), "n/a (no Python)".into(), "-".into()),
        };
        out.push(Verdict {
            load: w.other_load,
            workload: "process tiny (tasks/s)".into(),
            ours: fmt_num(o),
            best,
            ratio,
            target: "≥ 5× mp apply_async, ≥ 20× PPE",
            met,
        });
    }
    if let Some(w) = find("process-map") {
        let o = ours(w, 0);
        let mp = w.get("py:mp.Pool.map").map(|v| v[0]);
        let (ratio, met, best) = match mp {
            Some(mp) => (
                format!("{:.2}", o / mp),
                yes(o >= 2.0 * mp),
                format!("{} (mp.Pool.map)", fmt_num(mp)),
            ),
            None => ("-".into(), "n/a (no Python)".into(), "-".into()),
        };
        out.push(Verdict {
            load: w.other_load,
            workload: "process map (items/s)".into(),
            ours: fmt_num(o),
            best,
            ratio,
            target: "≥ 2× mp.Pool.map",
            met,
        });
    }
    if let Some(w) = find("process-latency") {
        let o = ours(w, 0);
        let best = best_peer(w, 0, |_| true);
        out.push(Verdict {
            load: w.other_load,
            workload: "process latency (median µs)".into(),
            ours: fmt_num(o),
            best: best
                .as_ref()
                .map(|(n, v)| format!("{} ({n})", fmt_num(*v)))
                .unwrap_or("-".into()),
            ratio: best
                .map(|(_, v)| format!("{:.3}", o / v))
                .unwrap_or("-".into()),
            target: "median ≤ 30 µs",
            met: yes(o <= 30.0),
        });
    }
    if let Some(w) = find("process-startup") {
        let o = ours(w, 0);
        let best = best_peer(w, 0, |_| true);
        out.push(Verdict {
            load: w.other_load,
            workload: "process startup (ms)".into(),
            ours: fmt_num(o),
            best: best
                .as_ref()
                .map(|(n, v)| format!("{} ({n})", fmt_num(*v)))
                .unwrap_or("-".into()),
            ratio: best
                .map(|(_, v)| format!("{:.3}", o / v))
                .unwrap_or("-".into()),
            target: "≤ 5 ms",
            met: yes(o <= 5.0),
        });
    }
    if let Some(w) = find("process-fib") {
        let o = ours(w, 0);
        let best = best_peer(w, 0, |_| true);
        let row = |name: &str| fmt_num(w.get(name).map(|v| v[0]).unwrap_or(f64::NAN));
        out.push(Verdict {
            load: w.other_load,
            workload: "process fib (speedup)".into(),
            ours: fmt_num(o),
            best: format!(
                "{}; {THREADS_REFERENCE} {}; bare pipes: reader threads {}, caller reads {}",
                best.as_ref()
                    .map(|(n, v)| format!("{} ({n})", fmt_num(*v)))
                    .unwrap_or("-".into()),
                row(THREADS_REFERENCE),
                row(pipe_floor::READER_PER_WORKER),
                row(pipe_floor::CALLER_READS),
            ),
            ratio: best
                .map(|(_, v)| format!("{:.2}", o / v))
                .unwrap_or("-".into()),
            target: "speedup ≥ 1.9",
            met: yes(o >= 1.9),
        });
    }
    out
}

// ---------------------------------------------------------------------------

fn smoke_lib<L: Lib>(lib: &L) {
    let handles: Vec<L::H> = (0..100).map(|i| lib.submit(noop, i)).collect();
    let got: Vec<u64> = handles.into_iter().map(|h| lib.wait(h)).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "{}", lib.name());
    assert_eq!(lib.wait(lib.submit(fib_task, 10)), 55, "{}", lib.name());
}

/// What `cargo test --all-targets` runs: every library and workload body
/// once, small, untimed.
fn smoke(workers: usize) {
    smoke_lib(&ours(workers));
    smoke_lib(&rayon(workers));
    smoke_lib(&tp(workers));
    smoke_lib(&futures_tp(workers));
    smoke_lib(&tokio_blocking(workers));
    smoke_lib(&tokio_spawn(workers));
    let pool = Arc::new(ThreadPoolExecutor::new(workers).unwrap());
    let p2 = pool.clone();
    assert_eq!(
        pool.spawn(move || fj_ours(&p2, 22)).into_result(),
        Ok(fib(22))
    );
    assert_eq!(rayon_pool(workers).install(|| fj_rayon(22)), fib(22));
    let pp = process_pool(workers);
    assert_eq!(pp.submit(noop, 7).into_result(), Ok(7));
    let mapped: Vec<u64> = pp
        .map_with(noop, 0..2500u64, MapOptions::new().chunksize(1000))
        .map(Result::unwrap)
        .collect();
    assert_eq!(mapped, (0..2500).collect::<Vec<_>>());
    Executor::shutdown(&pp, true, false);
    let mut floor = PipeWorkers::start(workers, 10);
    assert_eq!(floor.run_with_readers(5).0, vec![55; 5]);
    assert_eq!(floor.run_caller_reads(5).0, vec![55; 5]);
    drop(floor);
    println!("peers: smoke check passed (no timing; run `cargo bench --bench peers` to benchmark)");
}

fn main() {
    concurrent_futures::init();

    let args: Vec<String> = std::env::args().collect();
    let workers = env_usize("BENCH_WORKERS", 2).max(1);
    if let Some(pos) = args.iter().position(|a| a == pipe_floor::CHILD_FLAG) {
        pipe_floor::serve(args[pos + 1].parse().expect("fib argument"), fib);
    }
    if let Some(pos) = args.iter().position(|a| a == "--child-memory") {
        let lib = &args[pos + 1];
        let n: u64 = args[pos + 2].parse().expect("task count");
        let v = memory_child(lib, n, workers);
        println!("BYTES_PER_TASK {v}");
        std::process::exit(0);
    }

    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it. Then only check that every library and pool works,
    // timing nothing (timings never go into tests).
    if !args.iter().any(|a| a == "--bench") {
        smoke(workers);
        return;
    }

    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let cfg = Cfg {
        quick,
        workers,
        reps: env_usize("BENCH_REPS", 5).max(1),
        only: std::env::var("BENCH_ONLY")
            .ok()
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect()),
    };
    let started = Instant::now();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# concurrent-futures vs peers: {} workers, {} repetitions (interleaved), {} mode; \
         load average at start: {}",
        cfg.workers,
        cfg.reps,
        if cfg.quick { "quick" } else { "full" },
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let n = cfg.workers;
    let reps = cfg.reps;
    let mut ws: Vec<Workload> = Vec::new();

    if cfg.wants("tiny") {
        let tasks = cfg.pick(200_000, 20_000);
        let mut w = Workload::new(
            "tiny",
            format!(
                "{tasks} no-op tasks returning their index, one handle each, collected in order"
            ),
            vec![("tasks/s", Better::Higher), ("ms", Better::Lower)],
        );
        w.rows = interleave(reps, for_each_lib!(n, |lib| run_tiny(&lib, tasks)));
        let w = w.done();
        w.print();
        ws.push(w);
    }
    if cfg.wants("latency") {
        let k = cfg.pick(20_000, 2_000);
        let mut w = Workload::new(
            "latency",
            format!("{k} sequential submit-then-wait round trips"),
            vec![("median µs", Better::Lower), ("p99 µs", Better::Lower)],
        );
        w.rows = interleave(reps, for_each_lib!(n, |lib| run_latency(&lib, k)));
        let w = w.done();
        w.print();
        ws.push(w);
    }
    if cfg.wants("low-rate-cpu") {
        let ms = cfg.pick(1000, 200);
        let mut w = Workload::new(
            "low-rate-cpu",
            format!("one submit per ms for {ms} ms: CPU time of the whole process"),
            vec![("CPU ms", Better::Lower)],
        );
        let mut runners = for_each_lib!(n, |lib| run_lowrate(&lib, ms));
        runners.insert(0, (PACING_ONLY, Box::new(move || run_pacing_only(ms))));
        runners.insert(1, (WAKEUP_FLOOR, Box::new(move || run_wakeup_floor(ms))));
        w.rows = interleave(reps, runners);
        w.notes.push(format!(
            "{PACING_ONLY}: the same loop of 1 ms sleeps with no pool; every row includes its cost"
        ));
        w.notes.push(format!(
            "{WAKEUP_FLOOR}: the same loop unparking one parked thread per tick (no queue, \
             no handle): the least a pool that runs tasks on its own threads can cost"
        ));
        let w = w.done();
        w.print();
        ws.push(w);
    }
    if cfg.wants("fib") {
        let (tasks, k) = if cfg.quick { (32, 27) } else { (64, 27) };
        let mut w = Workload::new(
            "fib",
            format!("{tasks} × naive fib({k}) vs the same calls sequentially on one thread"),
            vec![("speedup", Better::Higher), ("ms", Better::Lower)],
        );
        let mut runners = for_each_lib!(n, |lib| run_fib(&lib, tasks, k));
        runners.insert(
            0,
            (SEQUENTIAL, Box::new(move || run_fib_sequential(tasks, k))),
        );
        // Each repetition is short (tens of ms): more of them for a stable median.
        w.rows = speedups(interleave(reps.max(15), runners));
        let w = w.done();
        w.print();
        ws.push(w);
    }
    if cfg.wants("fork-join") {
        let k = cfg.pick(32, 30);
        let mut w = Workload::new(
            "fork-join",
            format!(
                "recursive fib({k}) by nested submit, sequential below {FJ_CUTOFF}, \
                 vs rayon::join on the same recursion"
            ),
            vec![("ms", Better::Lower)],
        );
        let expected = fib(k);
        let pool = Arc::new(ThreadPoolExecutor::new(n).unwrap());
        let rp = rayon_pool(n);
        let runners: Vec<Runner<'_>> = vec![
            (
                "ours",
                Box::new(move || {
                    let t = Instant::now();
                    let p2 = pool.clone();
                    let v = pool.spawn(move || fj_ours(&p2, k)).into_result().unwrap();
                    assert_eq!(v, expected);
                    vec![t.elapsed().as_secs_f64() * 1e3]
                }),
            ),
            (
                "rayon::join",
                Box::new(move || {
                    let t = Instant::now();
                    let v = rp.install(|| fj_rayon(k));
                    assert_eq!(v, expected);
                    vec![t.elapsed().as_secs_f64() * 1e3]
                }),
            ),
        ];
        // The target compares ours with rayon::join only, so the
        // sequential time is measured apart, before them: a one-CPU burn
        // right before a sample starts that pool's second worker late (see
        // `interleave`), and for a few-ms run that decides it.
        let mut sequential: Vec<f64> = (0..reps.max(5))
            .map(|_| {
                let t = Instant::now();
                assert_eq!(fib(black_box(k)), expected);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        busy_every_cpu();
        // Each repetition takes a few ms, and a second worker that starts
        // late can double one: 25 repetitions keep the median off such
        // outliers.
        w.rows = interleave(reps.max(25), runners);
        w.rows
            .push((SEQUENTIAL.into(), vec![median(&mut sequential)]));
        w.notes.push(format!(
            "{SEQUENTIAL}: measured before the libraries, not between them (it is not compared)"
        ));
        let w = w.done();
        w.print();
        ws.push(w);
    }
    if cfg.wants("memory") {
        let w = workload_memory(&cfg);
        let w = w.done();
        w.print();
        ws.push(w);
    }
    let first_process = ws.len();
    process_workloads(&cfg, &mut ws);
    for w in &ws[first_process..] {
        w.print();
    }

    let python_note = python_peers(&cfg, &mut ws);
    if let Some(note) = &python_note {
        println!("\n{note}");
    }
    println!("\n# All workloads with the Python peers\n");
    for w in &ws {
        w.print();
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n# Summary ({} workers, medians of {} interleaved repetitions (fib and process fib \
         at least 15, fork-join at least 25), {} mode, {:.0} s; load average at end: {})\n",
        cfg.workers,
        cfg.reps,
        if cfg.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "| workload | ours | best peer (name) | ratio ours/peer | target | met? | other load (cores) |"
    );
    println!("|---|---:|---|---:|---|---|---:|");
    for v in summarize(&ws) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} |",
            v.workload, v.ours, v.best, v.ratio, v.target, v.met, v.load
        );
    }
    println!(
        "\n\"other load\": CPU that other processes on the machine used while our \
         and the Rust peers' runs of that workload went on (not during the Python \
         peers' runs). Above ~0.3 of a core the parallel workloads (fib above all) \
         are unreliable on a 2-core machine."
    );
}
