//! The closing summary: one [`Verdict`] per workload, ours against the
//! best peer and against that workload's target (issue 4's, listed in
//! BENCHMARKS.md). Rows that are baselines or floors rather than libraries
//! (the sequential runs, Rust's and Python's, the pacing loop, the wake-up
//! floor, ours on threads, the bare pipes) never count as the best peer. A
//! target that compares ours with a peer that did not run (`BENCH_LIBS`)
//! says so rather than "yes".

use crate::pipe_floor;
use crate::processes::THREADS_REFERENCE;
use crate::shm_floor;
use crate::table::{Better, PY_SEQUENTIAL, SEQUENTIAL, Workload, fmt_num};
use crate::threads::{PACING_ONLY, WAKEUP_FLOOR};

// ---------------------------------------------------------------------------
// The summary

pub(crate) struct Verdict {
    pub(crate) workload: String,
    pub(crate) ours: String,
    pub(crate) best: String,
    pub(crate) ratio: String,
    pub(crate) target: &'static str,
    pub(crate) met: String,
    pub(crate) load: f64,
}

fn best_peer(w: &Workload, metric: usize, filter: impl Fn(&str) -> bool) -> Option<(String, f64)> {
    let better = w.metrics[metric].1;
    w.rows
        .iter()
        .filter(|(l, _)| {
            ![
                "ours",
                SEQUENTIAL,
                PY_SEQUENTIAL,
                PACING_ONLY,
                WAKEUP_FLOOR,
                THREADS_REFERENCE,
                pipe_floor::READER_PER_WORKER,
                pipe_floor::STANDBY_READERS,
                pipe_floor::CALLER_READS,
                shm_floor::SHARED_MEMORY,
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

/// What the "met?" column says of a target that compares ours with a peer
/// that did not run (`BENCH_LIBS` left it out): nothing was compared, so
/// neither "yes" nor "NO".
const NO_PEER: &str = "no peer ran";

/// `yes(met())`, or [`NO_PEER`] when the peer's figure is missing.
fn yes_against(peer: f64, met: impl FnOnce() -> bool) -> String {
    if peer.is_nan() {
        NO_PEER.into()
    } else {
        yes(met())
    }
}

/// The Rust peers: Python's pools are compared in the process workloads.
fn rust_peer(library: &str) -> bool {
    !library.starts_with("py:")
}

/// The verdict of a workload whose target compares ours (its first
/// metric) with the best Rust peer's.
fn against_best_rust_peer(
    w: &Workload,
    workload: &str,
    target: &'static str,
    met: impl Fn(f64, f64) -> bool,
) -> Verdict {
    let o = w.get("ours").map(|v| v[0]).unwrap_or(f64::NAN);
    let Some((bn, bv)) = best_peer(w, 0, rust_peer) else {
        return Verdict {
            load: w.other_load,
            workload: workload.into(),
            ours: fmt_num(o),
            best: "-".into(),
            ratio: "-".into(),
            target,
            met: NO_PEER.into(),
        };
    };
    Verdict {
        load: w.other_load,
        workload: workload.into(),
        ours: fmt_num(o),
        best: format!("{} ({bn})", fmt_num(bv)),
        ratio: format!("{:.2}", o / bv),
        target,
        met: yes(met(o, bv)),
    }
}

/// The best Rust peer's figure and name, as the summary shows it, or "-".
fn best_rust_peer(w: &Workload) -> String {
    best_peer(w, 0, rust_peer)
        .map(|(n, v)| format!("{} ({n})", fmt_num(v)))
        .unwrap_or("-".into())
}

/// The verdict of a workload whose target bounds ours alone (its first
/// metric); the best peer is there for scale.
fn against_bound(
    w: &Workload,
    workload: &str,
    target: &'static str,
    met: impl Fn(f64) -> bool,
) -> Verdict {
    let o = w.get("ours").map(|v| v[0]).unwrap_or(f64::NAN);
    let best = best_peer(w, 0, |_| true);
    Verdict {
        load: w.other_load,
        workload: workload.into(),
        ours: fmt_num(o),
        best: best
            .as_ref()
            .map(|(n, v)| format!("{} ({n})", fmt_num(*v)))
            .unwrap_or("-".into()),
        ratio: best
            .map(|(_, v)| format!("{:.3}", o / v))
            .unwrap_or("-".into()),
        target,
        met: yes(met(o)),
    }
}

pub(crate) fn summarize(ws: &[Workload]) -> Vec<Verdict> {
    let mut out = Vec::new();
    let find = |k: &str| ws.iter().find(|w| w.key == k);
    let ours = |w: &Workload, m: usize| w.get("ours").map(|v| v[m]).unwrap_or(f64::NAN);

    if let Some(w) = find("tiny") {
        out.push(against_best_rust_peer(
            w,
            "tiny (tasks/s)",
            "≥ 1.5× best peer",
            |o, best| o >= 1.5 * best,
        ));
    }
    if let Some(w) = find("latency") {
        let (om, op) = (ours(w, 0), ours(w, 1));
        let r = w.get("rayon").map(|v| v[0]).unwrap_or(f64::NAN);
        out.push(Verdict {
            load: w.other_load,
            workload: "latency (median µs / p99 µs)".into(),
            ours: format!("{} / {}", fmt_num(om), fmt_num(op)),
            best: format!("{}; rayon {}", best_rust_peer(w), fmt_num(r)),
            ratio: if r.is_nan() {
                "-".into()
            } else {
                format!("{:.2} vs rayon", om / r)
            },
            target: "median ≤ rayon's, p99 ≤ 20 µs",
            met: yes_against(r, || om <= r && op <= 20.0),
        });
    }
    if let Some(w) = find("low-rate-cpu") {
        let o = ours(w, 0);
        let r = w.get("rayon").map(|v| v[0]).unwrap_or(f64::NAN);
        let pacing = w.get(PACING_ONLY).map(|v| v[0]).unwrap_or(f64::NAN);
        let floor = w.get(WAKEUP_FLOOR).map(|v| v[0]).unwrap_or(f64::NAN);
        out.push(Verdict {
            load: w.other_load,
            workload: "low-rate CPU (ms CPU)".into(),
            ours: fmt_num(o),
            best: format!("{}; rayon {}", best_rust_peer(w), fmt_num(r)),
            ratio: if r.is_nan() {
                "-".into()
            } else {
                format!(
                    "{:.2} vs rayon ({:.2} net of the loop's own {} ms; the bare wake-up floor \
                     is {:.2})",
                    o / r,
                    (o - pacing) / (r - pacing),
                    fmt_num(pacing),
                    floor / r
                )
            },
            target: "≤ ¼ of rayon's",
            met: yes_against(r, || o <= 0.25 * r),
        });
    }
    if let Some(w) = find("fib") {
        out.push(against_best_rust_peer(
            w,
            "fib (speedup)",
            "≥ 1.9 and ≥ best peer",
            |o, best| o >= 1.9 && o >= best,
        ));
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
        // The closure captures one u64 (8 bytes).
        // The target bounds ours alone: it holds or not without a peer.
        out.push(against_bound(
            w,
            "memory (B/task)",
            "≤ 128 B/task + closure",
            |o| o <= 128.0 + 8.0,
        ));
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
        out.push(against_bound(
            w,
            "process latency (median µs)",
            "median ≤ 30 µs",
            |o| o <= 30.0,
        ));
    }
    if let Some(w) = find("process-startup") {
        out.push(against_bound(w, "process startup (ms)", "≤ 5 ms", |o| {
            o <= 5.0
        }));
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
                "{}; {THREADS_REFERENCE} {}; bare pipes: reader threads {}, standby readers {}, caller reads {}; bare shared memory {}",
                best.as_ref()
                    .map(|(n, v)| format!("{} ({n})", fmt_num(*v)))
                    .unwrap_or("-".into()),
                row(THREADS_REFERENCE),
                row(pipe_floor::READER_PER_WORKER),
                row(pipe_floor::STANDBY_READERS),
                row(pipe_floor::CALLER_READS),
                row(shm_floor::SHARED_MEMORY),
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
