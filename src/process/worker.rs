//! The worker side: [`init`] and the loop a worker process runs.
//!
//! A worker is this same executable started again with the
//! [`WORKER_ENV`] marker in its environment. Its `main` runs as usual up to
//! `concurrent_futures::init()`, which notices the marker, serves tasks
//! until told to stop (or until its parent goes away), and exits without
//! returning. That is why `init()` must come first in `main`: everything
//! before it runs in every worker too, exactly like module-level code in a
//! Python program without an `if __name__ == "__main__":` guard.

use std::io::{BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use super::entry::{self, BuildId};
use super::protocol::{FromWorker, RemoteError, ToWorker, read_message, write_message};
use super::{os, parent_death};

/// The environment variable that starts a process in worker mode. Its value
/// is `v1:<parent pid>` for a pool worker, `v1:<parent pid>:proc` or
/// `v1:<parent pid>:daemon` for a [`Process`](crate::Process) child (with
/// `:fd` appended in test-harness mode).
pub const WORKER_ENV: &str = "CONCURRENT_FUTURES_WORKER";

/// Exit code of a worker that could not start (bad marker, no pipes, wrong
/// build). The parent reports it as a failed start.
pub(crate) const EXIT_BAD_START: i32 = 86;

static INIT_CALLED: AtomicBool = AtomicBool::new(false);

/// Whether this process called [`init`].
pub(crate) fn init_called() -> bool {
    INIT_CALLED.load(Ordering::SeqCst)
}

/// Refuses to start children (`what`: "building a ProcessPoolExecutor",
/// "starting a Process") from a program that could not serve as one: a
/// worker that skipped `init()` (it would start workers recursively), or a
/// parent without `init()` outside test-harness mode (its children would run
/// `main` instead of serving).
pub(crate) fn check_can_start_children(what: &str, test_harness: bool) -> Result<(), crate::Error> {
    if marker_present() && !init_called() {
        return Err(crate::Error::InvalidConfig(format!(
            "this process was started as a concurrent-futures worker ({WORKER_ENV} is set) \
             but never called concurrent_futures::init(); call it as the first line of main"
        )));
    }
    if !test_harness && !init_called() {
        return Err(crate::Error::InvalidConfig(format!(
            "call concurrent_futures::init() as the first line of main before {what} \
             (children re-run this program, and init() is where they start serving); \
             in tests, use test_harness() and process_pool_test_worker!()"
        )));
    }
    Ok(())
}

/// Whether this process was started as a worker (the marker is set).
pub(crate) fn marker_present() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// Makes this program usable with [`ProcessPoolExecutor`](crate::ProcessPoolExecutor):
/// call it as the **first line of `main`**.
///
/// In a normal run it returns at once. In a process the pool started as a
/// worker, it serves tasks and then exits the process: it never returns.
/// It plays the part of Python's `if __name__ == "__main__":` guard, with
/// the same rule: code before `init()` runs in every worker too.
///
/// Call it before the program starts threads: in a worker it removes its
/// marker from the environment (so programs a task starts run normally),
/// and changing the environment while another thread may read it is a
/// data race. With `#[tokio::main]` and the like, whose runtime threads
/// exist before the body runs, write a plain `fn main` that calls `init()`
/// and then builds the runtime.
///
/// ```no_run
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     concurrent_futures::init();
///     // ... build a ProcessPoolExecutor and submit `square` ...
/// }
/// ```
pub fn init() {
    INIT_CALLED.store(true, Ordering::SeqCst);
    serve_if_worker();
}

/// The body of the hidden test that
/// [`process_pool_test_worker!`](crate::process_pool_test_worker) adds:
/// serves tasks in a worker, and does nothing at all in a normal test run
/// (in particular it does not count as calling `init()`, so whether another
/// test's pool needs `test_harness()` never depends on test order).
#[doc(hidden)]
pub fn __test_harness_worker() {
    if marker_present() {
        INIT_CALLED.store(true, Ordering::SeqCst);
        serve_if_worker();
    }
}

fn serve_if_worker() {
    // Fixes the build fingerprint while the executable is certainly ours.
    let _ = BuildId::current();
    if let Some(marker) = std::env::var_os(WORKER_ENV) {
        let code = match run_worker(&marker.to_string_lossy()) {
            Ok(code) => code,
            Err(message) => {
                report_failure(&message);
                EXIT_BAD_START
            }
        };
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
}

/// Which kind of child the marker starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A process-pool worker: serves tasks until told to stop.
    Pool,
    /// A [`Process`](crate::Process) child: runs one function and exits.
    /// A daemon one dies with its parent.
    Process {
        /// Whether it dies with its parent (`PR_SET_PDEATHSIG`).
        daemon: bool,
    },
}

/// What the marker tells a worker.
#[derive(Debug, PartialEq, Eq)]
struct Marker {
    parent: u32,
    mode: Mode,
    /// The parent kept the real stdout on [`os::STDOUT_FD`] and gave the
    /// worker /dev/null until `init()` (test harness mode: the harness's own
    /// banner would otherwise reach the parent's stdout).
    stdout_on_fd: bool,
}

/// Parses `v1:<parent pid>[:proc|:daemon][:fd]`.
fn parse_marker(marker: &str) -> Result<Marker, String> {
    let bad = || {
        format!(
            "malformed {WORKER_ENV}={marker:?} (expected v1:<parent pid>); \
             this variable is set by the process pool for its workers only"
        )
    };
    let rest = marker.strip_prefix("v1:").ok_or_else(bad)?;
    let (rest, stdout_on_fd) = match rest.strip_suffix(":fd") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (pid, mode) = if let Some(pid) = rest.strip_suffix(":proc") {
        (pid, Mode::Process { daemon: false })
    } else if let Some(pid) = rest.strip_suffix(":daemon") {
        (pid, Mode::Process { daemon: true })
    } else {
        (rest, Mode::Pool)
    };
    let parent = pid.parse().map_err(|_| bad())?;
    Ok(Marker {
        parent,
        mode,
        stdout_on_fd,
    })
}

/// Runs the worker the marker asks for; the process exit code on success.
fn run_worker(marker: &str) -> Result<i32, String> {
    let marker = parse_marker(marker)?;
    os::forget_worker_marker(WORKER_ENV);
    // A non-daemon `Process` child outlives a parent that dies, as in
    // Python; pool workers and daemon children do not.
    let dies_with_parent = marker.mode != Mode::Process { daemon: false };
    if dies_with_parent && !parent_death::die_with_parent(marker.parent) {
        // The parent exited while this worker was starting: nobody is
        // waiting for it, so it leaves quietly.
        return Ok(0);
    }
    let watched = dies_with_parent && parent_death::watch_parent(marker.parent);
    if marker.stdout_on_fd {
        os::restore_stdout().map_err(|e| e.to_string())?;
    }
    if marker.mode == Mode::Pool {
        os::let_sigint_pass();
    }
    entry::install_worker_panic_hook();
    let (cmd, res) = os::take_protocol_fds().map_err(|e| e.to_string())?;
    if let Mode::Process { .. } = marker.mode {
        return crate::mp::serve_child(cmd, res);
    }
    Ok(serve_pool(cmd, res, marker.parent, watched))
}

/// Tells the worker's stderr why it is giving up.
fn report_failure(message: &str) {
    eprintln!(
        "concurrent-futures worker {}: {message}",
        std::process::id()
    );
}

/// Serves as a pool worker; returns the exit code. What the worker still
/// has to say goes out while the pipes are open, where it can: the parent
/// kills a worker that ends holding tasks as soon as its result pipe
/// closes, which would lose what a task printed without a final newline
/// (stdout is line-buffered). But not at any price: see
/// [`flush_stdout_unless_locked`].
fn serve_pool(cmd: std::fs::File, res: std::fs::File, parent: u32, watched: bool) -> i32 {
    let mut input = BufReader::with_capacity(64 * 1024, cmd);
    let mut output = BufWriter::with_capacity(64 * 1024, res);
    let code = match serve_tasks(&mut input, &mut output, parent, watched) {
        Ok(()) => 0,
        Err(message) => {
            report_failure(&message);
            EXIT_BAD_START
        }
    };
    flush_stdout_unless_locked();
    code
}

/// How long a worker about to exit waits, its pipes still open, for
/// stdout's lock, to flush what its tasks printed.
const STDOUT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Flushes stdout with the pipes open, for as long as the write takes (a
/// slow reader of stdout, a paused terminal: closed pipes would let the
/// parent kill the worker after `terminate_grace`, and lose the output;
/// found by review), but waits at most [`STDOUT_LOCK_WAIT`] for stdout's
/// lock: a thread a task left behind holding it held the flush, and so the
/// worker, for ever with its pipes open, where the parent could not see it
/// go (`shutdown(wait = true)` never returned, a retired worker was never
/// replaced; found by review). Past that wait the pipes close; the flush
/// waits on in its thread, and the exit's own flush after it, within the
/// `terminate_grace` the parent gives a worker that closed its pipes.
fn flush_stdout_unless_locked() {
    let (locked, has_lock) = std::sync::mpsc::channel();
    let (done, flushed) = std::sync::mpsc::channel();
    let flusher = std::thread::Builder::new()
        .name("cf-stdout-flush".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut out = std::io::stdout().lock();
            let _ = locked.send(());
            let _ = out.flush();
            let _ = done.send(());
        });
    match flusher {
        Ok(_) => {
            if has_lock.recv_timeout(STDOUT_LOCK_WAIT).is_ok() {
                let _ = flushed.recv();
            }
        }
        Err(_) => {
            let _ = std::io::stdout().flush();
        }
    }
}

/// The pool worker's loop: handshake, then tasks until `Shutdown` or end
/// of stream. `watched`: a watcher ends the worker with its parent (see
/// `parent_death`); if not, the worker looks between tasks.
fn serve_tasks(
    input: &mut impl std::io::BufRead,
    output: &mut impl Write,
    parent: u32,
    watched: bool,
) -> Result<(), String> {
    // Until the parent says otherwise, the handshake messages are small.
    let mut max_frame = 1 << 20;
    let hello = FromWorker::Ready {
        pid: std::process::id(),
        build: BuildId::current(),
    };
    send(output, &hello, max_frame)?;
    let mut last_look = std::time::Instant::now();
    loop {
        let msg: Option<ToWorker> = read_message(input, max_frame).map_err(|e| e.to_string())?;
        match msg {
            None | Some(ToWorker::Shutdown) => return Ok(()),
            Some(ToWorker::Welcome {
                build,
                max_frame_bytes,
                initializer,
            }) => {
                BuildId::current()
                    .check_peer(&build)
                    .map_err(|e| e.to_string())?;
                max_frame = usize::try_from(max_frame_bytes).unwrap_or(usize::MAX);
                let outcome = match initializer {
                    Some(entry) => {
                        // SAFETY: the parent's build was just checked equal
                        // to ours, and `entry` came from `entry_of` there.
                        let init = unsafe { entry::resolve(entry) };
                        init(&[]).map(drop)
                    }
                    None => Ok(()),
                };
                let failed = outcome.is_err();
                let outcome = outcome.map_err(|e| fit_error(e, max_frame));
                send(output, &FromWorker::Initialized { outcome }, max_frame)?;
                // An initializer that dropped privileges made the kernel
                // forget that this worker dies with its parent.
                if failed || !parent_death::still_dies_with_parent(parent) {
                    return Ok(());
                }
            }
            Some(ToWorker::Run {
                task_id,
                entry,
                arg,
            }) => {
                // SAFETY: a `Run` only follows a `Welcome` whose build was
                // checked equal to ours (the parent sends nothing else
                // first), and `entry` came from `entry_of` in the parent.
                let tramp = unsafe { entry::resolve(entry) };
                let outcome = fit(tramp(&arg), max_frame);
                drop(arg);
                send(output, &FromWorker::Done { task_id, outcome }, max_frame)?;
                // So may a task. Without a watcher, looked at every few
                // ms, not after every task (a system call per task cost
                // tiny tasks 5-10% of their rate): a quick task changing
                // credentials and then a long one outlive a killed parent
                // until the long one ends.
                if !watched && last_look.elapsed() >= PARENT_LOOK_INTERVAL {
                    last_look = std::time::Instant::now();
                    if !parent_death::still_dies_with_parent(parent) {
                        return Ok(());
                    }
                }
            }
            Some(other) => return Err(format!("unexpected message {other:?}")),
        }
    }
}

/// How often, at most, a worker checks after a task that it still dies
/// with its parent, where no watcher does (see `parent_death`).
const PARENT_LOOK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// A result too large for one frame becomes that task's error instead of a
/// frame the parent would refuse; an error too large (a long panic message
/// or backtrace) is cut to fit. Either way the task gets an answer and the
/// worker lives on: a frame it cannot send would end it.
fn fit(outcome: Result<Vec<u8>, RemoteError>, max_frame: usize) -> Result<Vec<u8>, RemoteError> {
    match outcome {
        Ok(bytes) if bytes.len() + ENVELOPE > max_frame => Err(RemoteError::Encode {
            // The parent names the type (see `RemoteError::into_error`).
            type_name: String::new(),
            message: format!(
                "the encoded result is {} bytes, more than the {} a result may take \
                 (max_frame_bytes {max_frame}, less {ENVELOPE} for the message around it)",
                bytes.len(),
                max_frame.saturating_sub(ENVELOPE)
            ),
        }),
        Err(e) => Err(fit_error(e, max_frame)),
        ok => ok,
    }
}

/// Room a `Done` or `Initialized` message takes around its payload.
const ENVELOPE: usize = 64;

/// Cuts an error's texts so that the message carrying it fits `max_frame`.
/// The room goes to the texts in order of use, so what is cut is the last:
/// a panic's message before its backtrace (which is dropped if nothing is
/// left), a codec error's type name before its message. The pool refuses a
/// `max_frame_bytes` under 1 KiB, so the first text keeps most of that.
fn fit_error(e: RemoteError, max_frame: usize) -> RemoteError {
    // Each string is encoded with a length prefix of at most 8 bytes.
    let mut room = max_frame.saturating_sub(ENVELOPE + 3 * 8);
    let mut take = |s: String| {
        let s = cut_to(s, room);
        room -= s.len();
        s
    };
    match e {
        RemoteError::Panicked { message, backtrace } => {
            let message = take(message);
            let backtrace = backtrace.map(&mut take).filter(|b| !b.is_empty());
            RemoteError::Panicked { message, backtrace }
        }
        RemoteError::Decode { type_name, message } => {
            let type_name = take(type_name);
            RemoteError::Decode {
                type_name,
                message: take(message),
            }
        }
        RemoteError::Encode { type_name, message } => {
            let type_name = take(type_name);
            RemoteError::Encode {
                type_name,
                message: take(message),
            }
        }
    }
}

/// `s` if it is at most `max` bytes; otherwise its start, cut at a
/// character boundary, and a note saying so, in at most `max` bytes.
fn cut_to(s: String, max: usize) -> String {
    const NOTE: &str = "… (cut to fit max_frame_bytes)";
    if s.len() <= max {
        return s;
    }
    let Some(keep) = max.checked_sub(NOTE.len()) else {
        return String::new();
    };
    let end = (0..=keep)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    let mut out = s;
    out.truncate(end);
    out.push_str(NOTE);
    out
}

fn send(out: &mut impl Write, msg: &FromWorker, max_frame: usize) -> Result<(), String> {
    write_message(out, msg, max_frame).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_over_its_room_is_cut_at_a_char_boundary_with_a_note() {
        assert_eq!(cut_to("short".into(), 100), "short");
        let cut = cut_to("é".repeat(100), 60);
        assert!(cut.len() <= 60, "{} bytes", cut.len());
        assert!(
            cut.starts_with('é') && cut.ends_with("max_frame_bytes)"),
            "{cut}"
        );
        assert_eq!(cut_to("x".repeat(100), 5), "", "no room even for the note");
    }

    #[test]
    fn an_error_too_long_for_its_frame_is_cut_until_its_message_fits() {
        let max_frame = 1024;
        let e = RemoteError::Panicked {
            message: "m".repeat(5_000),
            backtrace: Some("b".repeat(5_000)),
        };
        let fitted = fit(Err(e), max_frame).unwrap_err();
        let msg = FromWorker::Done {
            task_id: 1,
            outcome: Err(fitted.clone()),
        };
        let mut frame = Vec::new();
        write_message(&mut frame, &msg, max_frame).expect("fits one frame");
        match fitted {
            RemoteError::Panicked { message, backtrace } => {
                assert!(message.starts_with("mmm"));
                assert!(backtrace.is_none_or(|b| b.starts_with('b')));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn marker_parses_version_and_parent_pid() {
        assert_eq!(
            parse_marker("v1:1234"),
            Ok(Marker {
                parent: 1234,
                mode: Mode::Pool,
                stdout_on_fd: false
            })
        );
        assert_eq!(
            parse_marker("v1:99:fd"),
            Ok(Marker {
                parent: 99,
                mode: Mode::Pool,
                stdout_on_fd: true
            })
        );
        assert_eq!(
            parse_marker("v1:7:proc"),
            Ok(Marker {
                parent: 7,
                mode: Mode::Process { daemon: false },
                stdout_on_fd: false
            })
        );
        assert_eq!(
            parse_marker("v1:8:daemon:fd"),
            Ok(Marker {
                parent: 8,
                mode: Mode::Process { daemon: true },
                stdout_on_fd: true
            })
        );
    }

    #[test]
    fn malformed_marker_is_an_error_naming_the_variable() {
        for bad in [
            "",
            "1234",
            "v2:1",
            "v1:",
            "v1:abc",
            "v1:-3",
            "v1:1:fd:fd",
            "v1::fd",
            "v1:proc",
            "v1:1:fd:proc",
            "v1:1:proc:daemon",
            "v1:1:proc:proc",
        ] {
            let e = parse_marker(bad).unwrap_err();
            assert!(e.contains(WORKER_ENV), "{e}");
        }
    }

    #[test]
    fn oversized_result_becomes_an_encode_error() {
        let e = fit(Ok(vec![0; 1000]), 512).unwrap_err();
        assert!(matches!(e, RemoteError::Encode { .. }));
        assert_eq!(fit(Ok(vec![1; 10]), 512), Ok(vec![1; 10]));
    }
}
