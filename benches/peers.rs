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
//! peak RSS. The Python peers (benches/python_peers.py, one long-lived
//! `python3` child taking commands) take their turns in the same
//! rotation, one repetition per command, so that every row of a table
//! comes from the same stretch of time. `BENCH_PY_TIMEOUT` (seconds,
//! default 60) bounds each command: a hung script stops the Python peers,
//! not the run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use concurrent_futures::{Executor, ExecutorExt, MapOptions, ThreadPoolExecutor};

#[path = "support/busy.rs"]
mod busy;
#[path = "support/peers/libs.rs"]
mod libs;
#[path = "support/pipe_floor.rs"]
mod pipe_floor;
#[path = "support/peers/processes.rs"]
mod processes;
#[path = "support/peers/python.rs"]
mod python;
#[path = "support/shm_floor.rs"]
mod shm_floor;
#[path = "support/peers/summary.rs"]
mod summary;
#[path = "support/peers/table.rs"]
mod table;
#[path = "support/peers/threads.rs"]
mod threads;

use libs::{
    Lib, for_each_lib, futures_tp, ours, rayon, rayon_pool, tokio_blocking, tokio_spawn, tp,
};
use pipe_floor::PipeWorkers;
use processes::{process_pool, process_workloads, speedups};
use python::PyPeers;
use shm_floor::ShmWorkers;
use summary::summarize;
use table::{Better, Runner, SEQUENTIAL, Workload, busy_every_cpu, interleave, median};
use threads::{
    FJ_CUTOFF, PACING_ONLY, WAKEUP_FLOOR, fj_ours, fj_rayon, memory_child, run_fib,
    run_fib_sequential, run_latency, run_lowrate, run_pacing_only, run_tiny, run_wakeup_floor,
    workload_memory,
};

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
    let mut shm = ShmWorkers::start(workers, 10);
    assert_eq!(shm.run(5).0, vec![55; 5]);
    assert_eq!(shm.run(7).0, vec![55; 7]);
    drop(shm);
    println!("peers: smoke check passed (no timing; run `cargo bench --bench peers` to benchmark)");
}

fn main() {
    concurrent_futures::init();

    let args: Vec<String> = std::env::args().collect();
    let workers = env_usize("BENCH_WORKERS", 2).max(1);
    if let Some(pos) = args.iter().position(|a| a == pipe_floor::CHILD_FLAG) {
        pipe_floor::serve(args[pos + 1].parse().expect("fib argument"), fib);
    }
    if let Some(pos) = args.iter().position(|a| a == shm_floor::CHILD_FLAG) {
        let k = args[pos + 1].parse().expect("fib argument");
        shm_floor::serve(k, args[pos + 2].parse().expect("parent pid"), fib);
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
    // Started before the first workload, so that its start-up is in none.
    let py = PyPeers::start(&cfg);

    if cfg.wants("tiny") {
        let tasks = cfg.pick(200_000, 20_000);
        let mut w = Workload::new(
            "tiny",
            format!(
                "{tasks} no-op tasks returning their index, one handle each, collected in order"
            ),
            vec![("tasks/s", Better::Higher), ("ms", Better::Lower)],
        );
        let mut runners = for_each_lib!(n, |lib| run_tiny(&lib, tasks));
        runners.extend(py.runners("tiny"));
        w.rows = interleave(reps, runners);
        py.finish("tiny", &mut w);
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
        let mut runners = for_each_lib!(n, |lib| run_latency(&lib, k));
        runners.extend(py.runners("latency"));
        w.rows = interleave(reps, runners);
        py.finish("latency", &mut w);
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
        runners.extend(py.runners("low-rate-cpu"));
        w.rows = interleave(reps, runners);
        py.finish("low-rate-cpu", &mut w);
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
        runners.extend(py.runners("fib"));
        // Each repetition is short (tens of ms): more of them for a stable median.
        w.rows = speedups(interleave(reps.max(15), runners));
        py.finish("fib", &mut w);
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
        let sequential: Vec<f64> = (0..reps.max(5))
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
        w.rows.push((SEQUENTIAL.into(), vec![median(&sequential)]));
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
    process_workloads(&cfg, &mut ws, &py);
    for w in &ws[first_process..] {
        w.print();
    }
    println!("\n{}", py.summary());
    // The script quits (its pools shut down) before the summary.
    drop(py);

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
        "\n\"other load\": CPU that other processes on the machine used while that \
         workload's runs went on (ours, the Rust peers' and the Python peers', whose \
         processes and pool workers count as this run's, not as other load). Above \
         ~0.3 of a core the parallel workloads (fib above all) are unreliable on a \
         2-core machine."
    );
}
