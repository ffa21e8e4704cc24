//! How a workload's numbers are taken and shown. [`interleave`] runs
//! every library's repetitions in a rotating order and keeps the medians,
//! so that no library always inherits the same neighbour's idle threads;
//! a [`Workload`] holds those medians and prints them as one Markdown
//! table. The baseline row ([`SEQUENTIAL`]) and [`busy_every_cpu`] live
//! here because the interleaving treats the baseline specially.
//!
//! The CPU and RSS probes are here too: each table says how much CPU
//! other processes took while it ran, since on a small host that, more
//! than the libraries, can decide a parallel result.

use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Results

/// A library's run of one workload: its name and one repetition.
pub(crate) type Runner<'a> = (&'static str, Box<dyn FnMut() -> Vec<f64> + 'a>);

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// One workload's medians: lib → metric values (in `metrics` order).
pub(crate) struct Workload {
    pub(crate) key: &'static str,
    title: String,
    pub(crate) metrics: Vec<(&'static str, Better)>,
    pub(crate) rows: Vec<(String, Vec<f64>)>,
    pub(crate) notes: Vec<String>,
    /// CPU snapshot when the workload started (see [`Workload::done`]).
    probe: Option<(Instant, u64, Duration)>,
    /// Cores' worth of CPU that other processes used during our runs.
    pub(crate) other_load: f64,
}

impl Workload {
    pub(crate) fn new(
        key: &'static str,
        title: String,
        metrics: Vec<(&'static str, Better)>,
    ) -> Self {
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
    pub(crate) fn done(mut self) -> Self {
        if let Some((t0, busy0, ours0)) = self.probe.take() {
            let (_, busy1, ours1) = cpu_snapshot();
            let wall = t0.elapsed().as_secs_f64();
            let busy = busy1.saturating_sub(busy0) as f64 / clock_ticks();
            let ours = ours1.saturating_sub(ours0).as_secs_f64();
            self.other_load = ((busy - ours) / wall).max(0.0);
        }
        self
    }
    pub(crate) fn get(&self, lib: &str) -> Option<&Vec<f64>> {
        self.rows.iter().find(|(l, _)| l == lib).map(|(_, v)| v)
    }
    pub(crate) fn print(&self) {
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

pub(crate) fn fmt_num(v: f64) -> String {
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

/// The median of the values that are numbers (`NaN` if none is): a sample
/// that could not be taken is no sample, not a reason to fail the run.
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
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
pub(crate) fn interleave(reps: usize, mut runners: Vec<Runner<'_>>) -> Vec<(String, Vec<f64>)> {
    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); runners.len()];
    // One warm-up round, not recorded.
    for (name, r) in runners.iter_mut() {
        r();
        if is_baseline(name) {
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
        (0..runners.len()).partition(|&k| is_baseline(runners[k].0));
    let n = pools.len();
    // A runner that could not take its sample (a Python command that
    // failed) returns no values: that sample is left out.
    let mut take = |k: usize| {
        let v = (runners[k].1)();
        if !v.is_empty() {
            samples[k].push(v);
        }
    };
    for rep in 0..reps {
        for &k in &baselines {
            take(k);
            busy_every_cpu();
        }
        // Starting from a different library each time, forwards, then
        // backwards (A B C, B A C, C A B, A C B, ...).
        for j in 0..n {
            let step = if rep % 2 == 1 { n - j } else { j };
            take(pools[(rep + step) % n]);
        }
    }
    // A runner with no sample at all has no row.
    runners
        .iter()
        .zip(samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|((name, _), s)| {
            let m = s.iter().map(Vec::len).min().unwrap_or(0);
            let meds = (0..m)
                .map(|j| median(&s.iter().map(|x| x[j]).collect::<Vec<_>>()))
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

/// CPU time of this process's descendants: the reaped children (with
/// whatever they reaped), plus every live descendant's own time and what
/// it reaped. Descendants, not just children: the Python peers' pool
/// workers are the Python script's children, and their CPU is Python's,
/// not other load.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let reaped = tv(ru.ru_utime) + tv(ru.ru_stime);
    // Every process: (pid, parent, ticks of its own and of its reaped
    // children).
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ... utime(14) stime(15) cutime(16)
            // cstime(17)
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| -> u64 { f.get(i).and_then(|x| x.parse().ok()).unwrap_or(0) };
            let ppid = field(1) as u32;
            procs.push((pid, ppid, field(11) + field(12) + field(13) + field(14)));
        }
    }
    let mut family = vec![std::process::id()];
    let mut ticks = 0u64;
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        for &(pid, ppid, t) in &procs {
            if ppid == parent {
                family.push(pid);
                ticks += t;
            }
        }
        i += 1;
    }
    reaped + Duration::from_secs_f64(ticks as f64 / clock_ticks())
}

pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub(crate) fn proc_status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) use crate::busy::busy_every_cpu;

/// The row of the fib, fork-join and process-fib workloads that runs the
/// same work on the calling thread: the baseline, not a library.
pub(crate) const SEQUENTIAL: &str = "sequential";

/// The Python script's own baseline in the fib workloads (Python's fib
/// is far slower than Rust's: its pools' speedups are over this row).
pub(crate) const PY_SEQUENTIAL: &str = "py:sequential";

/// Whether a row is a sequential baseline rather than a pool.
pub(crate) fn is_baseline(name: &str) -> bool {
    name == SEQUENTIAL || name == PY_SEQUENTIAL
}
