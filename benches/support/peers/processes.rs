//! The process-pool workloads. Ours is the only Rust process pool: the
//! peers are Python's pools, whose runs (benches/python_peers.py, see
//! [`crate::python`]) are interleaved with ours, one repetition each in
//! turn. The process-fib workload also runs rows that are not
//! pools (the sequential baseline, the same tasks on our thread pool, and
//! the bare floors of benches/support/pipe_floor.rs and shm_floor.rs), so that its
//! speedup reads against what the host allows in the same run.

use std::hint::black_box;
use std::time::Instant;

use concurrent_futures::{
    Executor, ExecutorExt, MapOptions, ProcessPoolExecutor, ThreadPoolExecutor,
};

use crate::pipe_floor::{self, PipeWorkers};
use crate::python::{PY, PyPeers};
use crate::shm_floor::{self, ShmWorkers};
use crate::table::{
    Better, PY_SEQUENTIAL, Runner, SEQUENTIAL, Workload, interleave, proc_status_kb,
};
use crate::threads::run_fib_sequential;
use crate::{Cfg, fib, fib_task, noop};

/// The row of the process-fib workload that runs the same tasks on our
/// thread pool: the host's ceiling for that run, with no transport.
pub(crate) const THREADS_REFERENCE: &str = "ours on threads";

// ---------------------------------------------------------------------------
// Process workloads (ours and, interleaved, Python's pools)

pub(crate) fn process_pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("process pool")
}

pub(crate) fn process_workloads(cfg: &Cfg, out: &mut Vec<Workload>, py: &PyPeers) {
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
            let mut runners: Vec<Runner<'_>> = vec![(
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
            runners.extend(py.runners("process-tiny"));
            w.rows = interleave(reps, runners);
            py.finish("process-tiny", &mut w);
            out.push(w.done());
        }

        if cfg.wants("process-map") {
            let n = cfg.pick(200_000, 20_000);
            let mut w = Workload::new(
                "process-map",
                format!("map over {n} items, chunksize 1000"),
                vec![("items/s", Better::Higher), ("ms", Better::Lower)],
            );
            let mut runners: Vec<Runner<'_>> = vec![(
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
            runners.extend(py.runners("process-map"));
            w.rows = interleave(reps, runners);
            py.finish("process-map", &mut w);
            out.push(w.done());
        }

        if cfg.wants("process-latency") {
            let n = cfg.pick(2_000, 300);
            let mut w = Workload::new(
                "process-latency",
                format!("{n} sequential submit-then-wait round trips to a process pool"),
                vec![("median µs", Better::Lower), ("p99 µs", Better::Lower)],
            );
            let mut runners: Vec<Runner<'_>> = vec![(
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
            runners.extend(py.runners("process-latency"));
            w.rows = interleave(reps, runners);
            py.finish("process-latency", &mut w);
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
            // Bare worker processes over the barest transports (pipes,
            // received three ways, and shared memory): what any process
            // pool pays on this host.
            let floor = std::cell::RefCell::new(PipeWorkers::start(cfg.workers, k));
            let shm = std::cell::RefCell::new(ShmWorkers::start(cfg.workers, k));
            let expected = fib(k);
            let mut runners: Vec<Runner<'_>> = vec![
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
                    pipe_floor::STANDBY_READERS,
                    Box::new(|| {
                        pipe_floor::timed(
                            floor.borrow_mut().run_standby_readers(tasks as usize),
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
                (
                    shm_floor::SHARED_MEMORY,
                    Box::new(|| pipe_floor::timed(shm.borrow_mut().run(tasks as usize), expected)),
                ),
            ];
            runners.extend(py.runners("process-fib"));
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
                 between a worker and the caller); {}: reader threads standing by while the \
                 waiting caller reads. See benches/support/pipe_floor.rs",
                pipe_floor::READER_PER_WORKER,
                pipe_floor::CALLER_READS,
                pipe_floor::STANDBY_READERS
            ));
            w.notes.push(format!(
                "{}: bare worker processes that claim tasks and store results in memory \
                 shared with the parent, a futex waking the caller only when it sleeps: no \
                 pipe, no parent thread, no system call a task. The least any process \
                 pool can cost. See benches/support/shm_floor.rs",
                shm_floor::SHARED_MEMORY
            ));
            py.finish("process-fib", &mut w);
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
        let mut runners: Vec<Runner<'_>> = vec![(
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
        runners.extend(py.runners("process-startup"));
        w.rows = interleave(reps, runners);
        w.notes.push(format!(
            "this process: {} MiB resident, {} threads (ours starts workers with posix_spawn: no page-table copy; Python's fork copies them)",
            proc_status_kb("VmRSS:") / 1024,
            proc_status_kb("Threads:")
        ));
        py.finish("process-startup", &mut w);
        out.push(w.done());
    }
}

/// Turns `[("sequential", [ms]), (lib, [ms]) ...]` into
/// `(lib, [speedup, ms])` rows (sequential gets speedup 1). The Python
/// rows (`py:`) are over the script's own baseline, [`PY_SEQUENTIAL`]:
/// they run a smaller fib in Python.
pub(crate) fn speedups(rows: Vec<(String, Vec<f64>)>) -> Vec<(String, Vec<f64>)> {
    let baseline = |name: &str| {
        rows.iter()
            .find(|(l, _)| l == name)
            .map(|(_, v)| v[0])
            .unwrap_or(f64::NAN)
    };
    let (seq, py_seq) = (baseline(SEQUENTIAL), baseline(PY_SEQUENTIAL));
    rows.into_iter()
        .map(|(l, v)| {
            let base = if l.starts_with(PY) { py_seq } else { seq };
            (l, vec![base / v[0], v[0]])
        })
        .collect()
}
