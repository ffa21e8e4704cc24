//! Criterion micro-benchmarks of single operations: `cargo bench --bench micro`.
//!
//! submit, complete (submit + result), `result` on a done future,
//! `add_done_callback` on a done future, `as_completed` over 10k done
//! futures, and a process-pool round trip. The binary is its own process
//! pool worker, so `main` calls `concurrent_futures::init()` first.

use std::hint::black_box;
use std::time::Duration;

use concurrent_futures::{
    Executor, ExecutorExt, ProcessPoolExecutor, ThreadPoolExecutor, as_completed,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};

fn noop(i: u64) -> u64 {
    i
}

fn workers() -> usize {
    std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn thread_ops(c: &mut Criterion) {
    let pool = ThreadPoolExecutor::new(workers()).unwrap();
    // Submitting only: the futures are dropped outside the timed loop, in
    // batches of 1000, so the queue never grows without bound. Reported
    // per submit (throughput: elements).
    let mut g = c.benchmark_group("thread-submit");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("submit (per element)", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(1000),
            |v: &mut Vec<_>| {
                for i in 0..1000u64 {
                    v.push(pool.submit(noop, black_box(i)));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("thread");
    g.bench_function("complete (submit + result)", |b| {
        b.iter(|| pool.submit(noop, black_box(1)).into_result().unwrap())
    });

    let done = pool.submit(noop, 7);
    done.result(None).unwrap();
    g.bench_function("result on a done future", |b| {
        b.iter(|| *black_box(&done).result(None).unwrap())
    });
    g.bench_function("add_done_callback on a done future", |b| {
        b.iter(|| {
            black_box(&done).add_done_callback(|f| {
                black_box(f);
            })
        })
    });

    let futs: Vec<_> = (0..10_000u64).map(|i| pool.submit(noop, i)).collect();
    for f in &futs {
        f.result(None).unwrap();
    }
    g.bench_function("as_completed over 10k done futures", |b| {
        b.iter(|| as_completed(black_box(&futs), None).count())
    });
    g.finish();
    Executor::shutdown(&pool, true, false);
}

fn process_ops(c: &mut Criterion) {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(workers())
        .build()
        .unwrap();
    // Workers started and serving before timing.
    for f in (0..100u64)
        .map(|i| pool.submit(noop, i))
        .collect::<Vec<_>>()
    {
        f.into_result().unwrap();
    }
    let mut g = c.benchmark_group("process");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("round trip (submit + result)", |b| {
        b.iter(|| pool.submit(noop, black_box(1)).into_result().unwrap())
    });
    g.finish();
    Executor::shutdown(&pool, true, false);
}

criterion_group!(benches, thread_ops, process_ops);

fn main() {
    // Workers re-run this binary: init() serves them and never returns there.
    concurrent_futures::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
