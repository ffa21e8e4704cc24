//! The Python peers: `concurrent.futures` and `multiprocessing.Pool`, run
//! by benches/python_peers.py in one long-lived `python3 --serve` child.
//!
//! Each Python pool is one more runner in its workload's [`interleave`]
//! (ours, py, rayon, py, ...: the same repetitions and rotation as the
//! Rust peers), so that ours and Python's are measured over the same
//! stretch of time and share the host's drift. For a workload the harness
//! sends `setup` before its runs (the script builds and warms that
//! workload's pools, as the harness builds ours before it times them), one
//! `run` per repetition and pool (one JSON line back: that repetition's
//! values), and `end` after them. Rows join the workload as `py:` rows.
//!
//! A failure costs only what it touches. A command that raises in the
//! script answers with an error: that sample is missing, and the rows
//! keep the samples that came back (a note says how many). A command that
//! gets no answer within `BENCH_PY_TIMEOUT` seconds (default 60), or a
//! script that exits, stops the Python peers for the rest of the run (the
//! child's process group is killed, so that its pools' workers go too),
//! and every row received before stays. No `python3` on the PATH, or
//! `BENCH_NO_PYTHON`, skips them with a note.
//!
//! [`interleave`]: crate::table::interleave

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Cfg;
use crate::table::{Runner, Workload};

/// The prefix of every Python row's name.
pub(crate) const PY: &str = "py:";

/// The workloads that have a Python counterpart (the keys of `WORKLOADS`
/// in the script).
const PY_WORKLOADS: &[&str] = &[
    "tiny",
    "latency",
    "low-rate-cpu",
    "fib",
    "process-tiny",
    "process-map",
    "process-latency",
    "process-fib",
    "process-startup",
];

/// The Python peers of a run: the child, or why there is none.
pub(crate) struct PyPeers {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    /// The running script; `None` once it has stopped (or never ran).
    child: Option<Script>,
    /// Why the Python peers are missing, once they are (to follow
    /// "Python peers").
    stopped: Option<String>,
    version: Option<String>,
    timeout: Duration,
    /// Per workload, per library: (runs so far, samples taken, samples
    /// that failed). The first run is `interleave`'s warm-up round, which
    /// is not recorded, so it counts in neither.
    counts: BTreeMap<(String, String), (usize, usize, usize)>,
    /// Per workload: the script's notes on its rows.
    notes: BTreeMap<String, Vec<String>>,
    /// Per workload: the first error a command of it met.
    errors: BTreeMap<String, String>,
}

struct Script {
    child: Child,
    stdin: ChildStdin,
    /// The script's stdout, line by line, from a reader thread: a channel
    /// so that a wait for an answer can time out.
    lines: Receiver<String>,
}

impl PyPeers {
    /// Starts the script if the run has a workload with a Python
    /// counterpart (and Python is wanted and found).
    pub(crate) fn start(cfg: &Cfg) -> PyPeers {
        let timeout = std::env::var("BENCH_PY_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map_or(Duration::from_secs(60), Duration::from_secs_f64);
        let mut inner = Inner {
            child: None,
            stopped: None,
            version: None,
            timeout,
            counts: BTreeMap::new(),
            notes: BTreeMap::new(),
            errors: BTreeMap::new(),
        };
        if std::env::var_os("BENCH_NO_PYTHON").is_some() {
            inner.stopped = Some("skipped (BENCH_NO_PYTHON is set)".into());
        } else if PY_WORKLOADS.iter().any(|w| cfg.wants(w)) {
            inner.spawn(cfg);
        } else {
            inner.stopped = Some("not started: no workload of this run has one".into());
        }
        PyPeers {
            inner: Rc::new(RefCell::new(inner)),
        }
    }

    /// Builds the script's pools for workload `key` and returns one runner
    /// per Python pool, named `py:<pool>`, to join the workload's
    /// [`interleave`](crate::table::interleave). A runner returns no
    /// values when its sample could not be taken. None if the Python peers
    /// are not running, or `key` has no counterpart.
    pub(crate) fn runners<'a>(&self, key: &'static str) -> Vec<Runner<'a>> {
        if !PY_WORKLOADS.contains(&key) {
            return Vec::new();
        }
        let answer = self
            .inner
            .borrow_mut()
            .command(key, json!({"cmd": "setup", "workload": key}));
        let Some(answer) = answer else {
            return Vec::new();
        };
        let mut runners: Vec<Runner<'a>> = Vec::new();
        let libs = answer.get("libs").and_then(Value::as_array);
        for lib in libs.into_iter().flatten().filter_map(Value::as_str) {
            // The table's runner names are `&'static str`: a handful of
            // short names for the whole run.
            let name: &'static str = Box::leak(format!("{PY}{lib}").into_boxed_str());
            let (inner, lib) = (self.inner.clone(), lib.to_string());
            runners.push((name, Box::new(move || inner.borrow_mut().run(key, &lib))));
        }
        let notes = answer.get("notes").and_then(Value::as_object);
        let notes: Vec<String> = notes
            .into_iter()
            .flatten()
            .filter_map(|(lib, note)| Some(format!("{PY}{lib}: {}", note.as_str()?)))
            .collect();
        self.inner.borrow_mut().notes.insert(key.to_string(), notes);
        runners
    }

    /// Ends workload `key` in the script (its pools shut down) and adds the
    /// Python notes to `w`: the script's own notes on its rows, the samples
    /// that failed, and whether the Python peers stopped.
    pub(crate) fn finish(&self, key: &str, w: &mut Workload) {
        let mut inner = self.inner.borrow_mut();
        if !PY_WORKLOADS.contains(&key) {
            return;
        }
        if inner.child.is_some() {
            inner.command(key, json!({"cmd": "end", "workload": key}));
        }
        if let Some(notes) = inner.notes.remove(key) {
            w.notes.extend(notes);
        }
        for ((k, lib), &(_, ok, failed)) in &inner.counts {
            if k != key || failed == 0 {
                continue;
            }
            w.notes.push(if ok == 0 {
                format!("{PY}{lib}: no repetition could be taken, so no row")
            } else {
                format!(
                    "{PY}{lib}: {failed} of {} repetitions could not be taken (the median is \
                     of the other {ok})",
                    ok + failed
                )
            });
        }
        if let Some(e) = inner.errors.get(key) {
            w.notes.push(format!("Python peers: {e}"));
        } else if let Some(why) = &inner.stopped {
            if inner.version.is_some() {
                w.notes.push(format!("Python peers {why}"));
            }
        }
    }

    /// What the run's output says of the Python peers: their version, or
    /// why they are missing.
    pub(crate) fn summary(&self) -> String {
        let inner = self.inner.borrow();
        match (&inner.version, &inner.stopped) {
            (Some(v), None) => format!("Python peers: Python {v}"),
            (Some(v), Some(why)) => format!("Python peers (Python {v}) {why}"),
            (None, Some(why)) => format!("Python peers {why}"),
            (None, None) => "Python peers: no answer".into(),
        }
    }
}

impl Inner {
    fn spawn(&mut self, cfg: &Cfg) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_peers.py");
        let mut cmd = Command::new("python3");
        // The spawned workers import the script: no `__pycache__` in `benches/`.
        cmd.env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(script)
            .arg("--serve")
            .arg("--workers")
            .arg(cfg.workers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, so that a hung script can be killed
            // with its pools' worker processes.
            .process_group(0);
        if cfg.quick {
            cmd.arg("--quick");
        }
        eprintln!("starting the Python peers: {cmd:?}");
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.stopped = Some(format!("skipped: python3 is not on the PATH ({e})"));
                return;
            }
        };
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(Script {
            child,
            stdin,
            lines,
        });
        // The script's first line: its version.
        match self.answer(|v| v.get("python").is_some()) {
            Ok(v) => self.version = v.get("python").and_then(Value::as_str).map(String::from),
            Err(e) => self.stop(format!("stopped at start: {e}")),
        }
    }

    /// One repetition of `lib` in workload `key`: its values, or none if
    /// the sample could not be taken.
    fn run(&mut self, key: &str, lib: &str) -> Vec<f64> {
        let answer = self.command(key, json!({"cmd": "run", "workload": key, "lib": lib}));
        let values: Option<Vec<f64>> = answer
            .as_ref()
            .and_then(|a| a.get("values"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect());
        let (runs, ok, failed) = self
            .counts
            .entry((key.to_string(), lib.to_string()))
            .or_default();
        *runs += 1;
        let warm_up = *runs == 1;
        match values {
            Some(v) if !v.is_empty() => {
                *ok += usize::from(!warm_up);
                v
            }
            _ => {
                *failed += usize::from(!warm_up);
                Vec::new()
            }
        }
    }

    /// Sends one command and waits for its answer. `None` if the Python
    /// peers are not running, if the command failed in the script
    /// (recorded under `key`), or if the script did not answer in time or
    /// exited (the Python peers then stop).
    fn command(&mut self, key: &str, cmd: Value) -> Option<Value> {
        let script = self.child.as_mut()?;
        if let Err(e) = writeln!(script.stdin, "{cmd}").and_then(|()| script.stdin.flush()) {
            self.stop(format!("stopped: cannot write to the script ({e})"));
            return None;
        }
        match self.answer(|v| v.get("reply").is_some()) {
            Ok(v) => match v.get("error").and_then(Value::as_str) {
                Some(e) => {
                    let what = format!("{} failed in the script: {e}", cmd["cmd"]);
                    self.errors.entry(key.to_string()).or_insert(what);
                    None
                }
                None => Some(v),
            },
            Err(e) => {
                let why = format!("stopped during {key}, at its {} command: {e}", cmd["cmd"]);
                self.errors.entry(key.to_string()).or_insert(why.clone());
                self.stop(why);
                None
            }
        }
    }

    /// The script's next JSON line that `is_answer` accepts (other lines
    /// are skipped), within the timeout.
    fn answer(&mut self, is_answer: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let script = self.child.as_mut().ok_or("not running")?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match script.lines.recv_timeout(left) {
                Ok(line) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) if is_answer(&v) => return Ok(v),
                    _ => {}
                },
                Err(RecvTimeoutError::Timeout) => {
                    // Its pools' workers may hold its output open after
                    // it died.
                    if let Ok(Some(status)) = script.child.try_wait() {
                        return Err(format!("the script exited ({status})"));
                    }
                    return Err(format!(
                        "got no answer within {} s (BENCH_PY_TIMEOUT)",
                        self.timeout.as_secs_f64()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Its output closed: it has exited, or is about to.
                    let until = Instant::now() + Duration::from_secs(2);
                    let status = loop {
                        match script.child.try_wait() {
                            Ok(Some(status)) => break status.to_string(),
                            Ok(None) if Instant::now() < until => {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Ok(None) => break "its output closed".into(),
                            Err(e) => break e.to_string(),
                        }
                    };
                    return Err(format!("the script exited ({status})"));
                }
            }
        }
    }

    /// Stops the Python peers for the rest of the run: kills the script's
    /// process group (it and its pools' workers) and records why.
    fn stop(&mut self, why: String) {
        eprintln!("Python peers {why}; the rows received so far stay");
        if let Some(mut script) = self.child.take() {
            kill_group(&mut script.child);
        }
        self.stopped.get_or_insert(why);
    }
}

/// Kills the process group that `child` leads (made by `process_group(0)`
/// at spawn) and reaps `child`. The whole group, even if `child` itself
/// has exited: its pools' workers outlive it, holding our stdout and
/// stderr (a pipe to `grep` would then never end).
fn kill_group(child: &mut Child) {
    // SAFETY: no pointers. The id is our child's, which led the group: the
    // kernel does not reuse it while any member of the group lives.
    unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
}

impl Drop for Inner {
    /// Asks the script to quit (it shuts its pools down) and waits for it
    /// a while; then kills what is left of it.
    fn drop(&mut self) {
        let Some(mut script) = self.child.take() else {
            return;
        };
        let _ = writeln!(script.stdin, "{}", json!({"cmd": "quit"}));
        drop(script.stdin);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = script.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group(&mut script.child);
    }
}
