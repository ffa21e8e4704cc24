//! The thread-pool libraries under test behind one generic interface,
//! [`Lib`]: ours, rayon, threadpool, futures' `ThreadPool`, and tokio's
//! blocking pool and task spawner. Each keeps its own handle type (no
//! boxing), so a workload pays what that library's own callers pay; the
//! peers with no handle of their own all get the same [`oneshot`], so none
//! is favoured by its stand-in. [`for_each_lib!`] builds every wanted pool
//! once, in a fixed order, as one table runner per library.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

use concurrent_futures::{ExecutorExt, ThreadPoolExecutor};

// ---------------------------------------------------------------------------
// A oneshot for the peers that have no handle of their own: one allocation,
// no syscall unless the receiver is actually asleep. The same for every peer.
//
// Its receiver waits as our `Future::result()` does (src/spin.rs,
// `WAIT_SPIN_LIMIT`): it watches the slot for up to 60 µs, busy at first
// and then yielding the core on each look (`crossbeam_utils::Backoff`, as
// ours), and only then sleeps on the condvar. A receiver that slept at once
// would pay a park and a wake-up (20-50 µs on this VM when its vCPU halts)
// on every short round trip, and the latency workload would compare wait
// policies instead of pools. The watch is bounded, so a long wait (fib)
// costs the receiver at most 60 µs of looking per handle, as ours; a
// handle that is already filled (the low-rate workload collects its
// handles only at the end) returns at the first look.

/// How long a receiver watches its slot before it sleeps: our
/// `Future`'s `WAIT_SPIN_LIMIT` (src/spin.rs), which is not public.
const WAIT_SPIN_LIMIT: Duration = Duration::from_micros(60);

struct Oneshot<T> {
    /// The value, and whether the receiver sleeps on `cv`.
    slot: Mutex<(Option<T>, bool)>,
    /// Set (after the value is stored) so that the receiver's watch looks
    /// at one atomic instead of taking the lock the sender needs.
    full: AtomicBool,
    cv: Condvar,
}

struct Tx<T>(Arc<Oneshot<T>>);
pub(crate) struct Rx<T>(Arc<Oneshot<T>>);

fn oneshot<T>() -> (Tx<T>, Rx<T>) {
    let s = Arc::new(Oneshot {
        slot: Mutex::new((None, false)),
        full: AtomicBool::new(false),
        cv: Condvar::new(),
    });
    (Tx(s.clone()), Rx(s))
}

impl<T> Tx<T> {
    fn send(self, v: T) {
        let mut g = self.0.slot.lock().unwrap();
        g.0 = Some(v);
        self.0.full.store(true, Ordering::Release);
        let waiting = g.1;
        drop(g);
        if waiting {
            self.0.cv.notify_one();
        }
    }
}

impl<T> Rx<T> {
    fn recv(self) -> T {
        let until = Instant::now() + WAIT_SPIN_LIMIT;
        let backoff = Backoff::new();
        while !self.0.full.load(Ordering::Acquire) && Instant::now() < until {
            backoff.snooze();
        }
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
pub(crate) struct Gate {
    inner: Arc<(Mutex<bool>, Condvar, AtomicUsize)>,
}

impl Gate {
    pub(crate) fn wait(&self) {
        self.inner.2.fetch_add(1, Ordering::SeqCst);
        let mut open = self.inner.0.lock().unwrap();
        while !*open {
            open = self.inner.1.wait(open).unwrap();
        }
    }
    pub(crate) fn entered(&self) -> usize {
        self.inner.2.load(Ordering::SeqCst)
    }
    pub(crate) fn open(&self) {
        *self.inner.0.lock().unwrap() = true;
        self.inner.1.notify_all();
    }
}

// ---------------------------------------------------------------------------
// The thread-pool libraries, behind one generic interface (no boxing of
// handles: each library's own handle type).

pub(crate) trait Lib {
    type H: Send;
    fn name(&self) -> &'static str;
    fn submit<F>(&self, f: F, i: u64) -> Self::H
    where
        F: Fn(u64) -> u64 + Copy + Send + Sync + 'static;
    fn wait(&self, h: Self::H) -> u64;
    /// Runs `job` on the pool with no result (used to block workers).
    fn run_detached(&self, job: Box<dyn FnOnce() + Send>);
}

pub(crate) struct Ours(ThreadPoolExecutor);
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

pub(crate) struct Rayon(rayon::ThreadPool);
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

pub(crate) struct TP(threadpool::ThreadPool);
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

pub(crate) struct FuturesTP(futures::executor::ThreadPool);
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

pub(crate) struct TokioBlocking(tokio::runtime::Runtime);
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

pub(crate) struct TokioSpawn(tokio::runtime::Runtime);
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

pub(crate) fn ours(n: usize) -> Ours {
    Ours(ThreadPoolExecutor::new(n).unwrap())
}
pub(crate) fn rayon_pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}
pub(crate) fn rayon(n: usize) -> Rayon {
    Rayon(rayon_pool(n))
}
pub(crate) fn tp(n: usize) -> TP {
    TP(threadpool::ThreadPool::new(n))
}
pub(crate) fn futures_tp(n: usize) -> FuturesTP {
    FuturesTP(
        futures::executor::ThreadPool::builder()
            .pool_size(n)
            .create()
            .unwrap(),
    )
}
pub(crate) fn tokio_blocking(n: usize) -> TokioBlocking {
    TokioBlocking(
        tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(n)
            .build()
            .unwrap(),
    )
}
pub(crate) fn tokio_spawn(n: usize) -> TokioSpawn {
    TokioSpawn(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .build()
            .unwrap(),
    )
}

/// Whether `BENCH_LIBS` (a comma-separated list; default: all) names `lib`.
/// Meant for profiling one library alone, e.g. `BENCH_LIBS=ours`.
pub(crate) fn lib_wanted(lib: &str) -> bool {
    std::env::var("BENCH_LIBS")
        .map(|v| v.split(',').any(|x| x.trim() == lib))
        .unwrap_or(true)
}

/// Applies `$body` (a generic fn taking `&impl Lib`) to every library, in a
/// fixed order. Builds the pools once; returns one runner per library.
/// Its paths are `$crate::` ones, so that it expands anywhere in the bench;
/// the caller needs [`Lib`] in scope for `name`.
macro_rules! for_each_lib {
    ($n:expr, |$lib:ident| $body:expr) => {{
        let n = $n;
        let mut runners: Vec<$crate::table::Runner<'static>> = Vec::new();
        if $crate::libs::lib_wanted("ours") {
            let $lib = $crate::libs::ours(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if $crate::libs::lib_wanted("rayon") {
            let $lib = $crate::libs::rayon(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if $crate::libs::lib_wanted("threadpool") {
            let $lib = $crate::libs::tp(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if $crate::libs::lib_wanted("futures") {
            let $lib = $crate::libs::futures_tp(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if $crate::libs::lib_wanted("tokio-blocking") {
            let $lib = $crate::libs::tokio_blocking(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        if $crate::libs::lib_wanted("tokio-spawn") {
            let $lib = $crate::libs::tokio_spawn(n);
            runners.push(($lib.name(), Box::new(move || $body)));
        }
        runners
    }};
}
pub(crate) use for_each_lib;
