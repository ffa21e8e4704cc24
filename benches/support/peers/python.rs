//! The Python peers: `concurrent.futures` and `multiprocessing.Pool`, run
//! by benches/python_peers.py in a `python3` child after the Rust runs.
//! The script prints one JSON line per row, which joins the workload of
//! the same key as a `py:` row; a missing or failing `python3` costs only
//! those rows, and says so in a note.

use std::process::Command;

use crate::Cfg;
use crate::table::Workload;

// ---------------------------------------------------------------------------
// Python peers

pub(crate) fn python_peers(cfg: &Cfg, out: &mut [Workload]) -> Option<String> {
    if std::env::var_os("BENCH_NO_PYTHON").is_some() {
        return Some("Python peers skipped (BENCH_NO_PYTHON is set)".into());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_peers.py");
    let mut cmd = Command::new("python3");
    // The spawned workers import the script: no `__pycache__` in `benches/`.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
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
