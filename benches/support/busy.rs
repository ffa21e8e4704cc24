//! Untimed work on every CPU between a one-CPU sample and the next.
//!
//! After one CPU has burned alone for a few ms (a sequential baseline),
//! the kernel often starts the next woken worker late, on a busy CPU,
//! until a balance moves it: 1–4.6 ms late for any pool, rayon's too (see
//! BENCHMARKS-LOG.md, runs T–Y). A short burst on every CPU in between makes
//! the next sample start as it would after a parallel one.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Keeps every CPU busy for 2 ms on fresh threads (which the kernel
/// spreads over idle CPUs).
pub(crate) fn busy_every_cpu() {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..cpus {
            s.spawn(|| {
                let end = Instant::now() + Duration::from_millis(2);
                while Instant::now() < end {
                    // A few µs of arithmetic between two looks at the clock.
                    black_box((0..1000u64).fold(black_box(1u64), |a, b| a.rotate_left(5) ^ b));
                }
            });
        }
    });
}
