//! Environment and input (issue 5, part 6): every odd input gets a typed
//! error or a documented behaviour, never a crash or a hang.
//!
//! Covered elsewhere, not repeated here:
//! * the worker marker set in a program that never calls `init()`:
//!   `tests/process_lifecycle.rs::worker_marker_without_init_refuses_to_build_a_pool`;
//! * a per-build identifier mismatch:
//!   `src/process/entry_tests.rs::a_different_build_is_refused_with_the_reason`.
//!
//! Documented differences between the pools, checked here:
//! * a result type whose `Serialize` fails is `Error::Encode` on a process
//!   pool (the result must cross the pipe) but works on a thread pool, which
//!   never serializes;
//! * a marker naming a parent that is not this process's parent makes the
//!   would-be worker exit quietly with code 0 (its parent is gone; nobody is
//!   waiting for it), while a malformed marker, or one started without the
//!   protocol descriptors, exits with a message on stderr and code 86.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use concurrent_futures::{
    Error, Executor, ExecutorConfig, ExecutorExt, Future, MapOptions, ProcessPoolBuilder,
    ProcessPoolExecutor, ReturnWhen, ThreadPoolExecutor, WORKER_ENV, as_completed, wait,
};
use serde::{Deserialize, Serialize, Serializer};

concurrent_futures::process_pool_test_worker!();

/// Longest any single wait may take before the test calls it a hang.
mod common;
use common::{FileGate, await_file};

const HANG: Duration = Duration::from_secs(60);

/// Set in helper processes; helpers do nothing without it.
const HELPER_ENV: &str = "CF_ENV_INPUT_HELPER";

fn process_pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .test_harness()
        .build()
        .expect("a test-harness pool builds")
}

/// The outcome of a future, failing the test instead of hanging.
fn get<T: Clone>(f: &Future<T>) -> Result<T, Error> {
    match f.result(Some(HANG)) {
        Err(Error::Timeout { .. }) => panic!("hang guard: a future did not resolve in {HANG:?}"),
        other => other.cloned(),
    }
}

/// Runs `cmd` with captured output; kills it and fails after the hang guard.
fn run_with_guard(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HANG) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            // SAFETY: kill() takes plain integers; `pid` is our unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("hang guard: the child process ran over {HANG:?} (it served or hung)");
        }
    }
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// This test binary started the way a test-harness pool starts a worker,
/// with `marker` as the worker-mode marker (and no protocol descriptors).
fn fake_worker(marker: &str) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(["__concurrent_futures_worker", "--nocapture"])
        .env(WORKER_ENV, marker);
    run_with_guard(cmd)
}

// --------------------------------------------------------- the marker --

/// A malformed marker value: the process exits at once with a message on
/// stderr naming the variable, and a nonzero code (86). It never serves.
#[test]
fn malformed_worker_marker_exits_with_a_message_and_a_nonzero_code() {
    for marker in [
        "garbage",
        "",
        "v1:",
        "v1:abc",
        "v2:1",
        "v1:-3",
        "v1:1:fd:fd",
    ] {
        let out = fake_worker(marker);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(86),
            "{marker:?}: {}",
            describe(&out)
        );
        assert!(
            stderr.contains(&format!("malformed {WORKER_ENV}=")),
            "{marker:?}: no clear message\n{}",
            describe(&out)
        );
    }
}

/// A well-formed marker naming this process as the parent, but started
/// without the protocol pipes on fds 3 and 4 (a user copying the variable
/// into a shell): a message naming the descriptor, and code 86.
#[test]
fn marker_without_protocol_descriptors_exits_with_a_message_and_a_nonzero_code() {
    for suffix in ["", ":fd"] {
        let marker = format!("v1:{}{suffix}", std::process::id());
        let out = fake_worker(&marker);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(86),
            "{marker:?}: {}",
            describe(&out)
        );
        assert!(
            stderr.contains("concurrent-futures worker") && stderr.contains("descriptor"),
            "{marker:?}: no clear message\n{}",
            describe(&out)
        );
    }
}

/// A well-formed marker naming a process that is not the parent: the
/// would-be worker concludes its parent is gone and exits quietly with
/// code 0 (documented behaviour), without serving or hanging.
#[test]
fn marker_naming_another_parent_exits_quietly() {
    let out = fake_worker("v1:1");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

// -------------------------------------------------------- the env var --

fn is_helper() -> bool {
    std::env::var_os(HELPER_ENV).is_some()
}

#[test]
#[ignore = "helper, run by cf_executor_variable_invalid_is_an_error_and_empty_is_the_default"]
fn helper_executor_env() {
    if !is_helper() {
        return;
    }
    let got = ExecutorConfig::from_env_or("thread:2");
    println!("FROM ENV: {got:?}");
}

fn executor_env_helper(value: impl AsRef<std::ffi::OsStr>) -> String {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([
        "helper_executor_env",
        "--exact",
        "--nocapture",
        "--ignored",
        "--test-threads=1",
    ])
    .env(HELPER_ENV, "1")
    .env_remove(WORKER_ENV)
    .env(concurrent_futures::EXECUTOR_ENV, value);
    let out = run_with_guard(cmd);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.split_once("FROM ENV: ").map(|(_, v)| v.to_owned()))
        .unwrap_or_else(|| panic!("the helper did not run: {}", describe(&out)))
}

/// `CF_EXECUTOR` set to garbage or to a zero count is an `InvalidConfig`
/// error, not a silent fallback; empty means "use the default".
#[test]
fn cf_executor_variable_invalid_is_an_error_and_empty_is_the_default() {
    for bad in ["garbage", "thread:0", "process:x"] {
        let got = executor_env_helper(bad);
        assert!(got.starts_with("Err(InvalidConfig("), "{bad:?}: {got}");
        // Named, so that it is not taken for the program's default, whose
        // error would read the same (found by review).
        assert!(
            got.contains(concurrent_futures::EXECUTOR_ENV),
            "{bad:?}: {got}"
        );
    }
    let got = executor_env_helper("");
    assert!(got.contains("Thread") && got.contains("Some(2)"), "{got}");
    let got = executor_env_helper("process:3");
    assert!(got.contains("Process") && got.contains("Some(3)"), "{got}");
}

/// A `CF_EXECUTOR` that is not UTF-8 is set and invalid: an error too. It
/// used to be taken for unset, and the default was used.
#[test]
fn cf_executor_variable_not_utf8_is_an_error() {
    use std::os::unix::ffi::OsStrExt;
    let got = executor_env_helper(std::ffi::OsStr::from_bytes(b"process:\xff"));
    assert!(got.starts_with("Err(InvalidConfig("), "{got}");
}

// ------------------------------------------------------ configuration --

/// `max_workers(0)` is `Error::InvalidConfig` for both pools (and through
/// `ExecutorConfig`); so is `max_tasks_per_child(0)`.
#[test]
fn zero_max_workers_is_invalid_config_for_both_pools() {
    let invalid = |r: Result<(), Error>, what: &str| match r {
        Err(Error::InvalidConfig(msg)) => assert!(!msg.is_empty(), "{what}"),
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    };
    invalid(
        ThreadPoolExecutor::builder()
            .max_workers(0)
            .build()
            .map(drop),
        "thread builder",
    );
    invalid(
        ThreadPoolExecutor::new(0).map(drop),
        "ThreadPoolExecutor::new(0)",
    );
    invalid(
        ProcessPoolExecutor::builder()
            .max_workers(0)
            .test_harness()
            .build()
            .map(drop),
        "process builder",
    );
    invalid(
        ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(0)
            .test_harness()
            .build()
            .map(drop),
        "max_tasks_per_child(0)",
    );
    invalid(
        "thread:0".parse::<ExecutorConfig>().map(drop),
        "\"thread:0\"",
    );
    invalid(
        "process:0".parse::<ExecutorConfig>().map(drop),
        "\"process:0\"",
    );
}

/// A worker count above `MAX_WORKERS` (say `usize::MAX` from a config
/// file) is `InvalidConfig` for both pools. The thread pool used to
/// allocate for it first: `usize::MAX` panicked, 2^40 aborted the process.
#[test]
fn worker_counts_above_max_workers_are_invalid_config_for_both_pools() {
    use concurrent_futures::MAX_WORKERS;
    let invalid = |r: Result<(), Error>, what: &str| match r {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("max_workers"), "{what}: {msg}"),
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    };
    for n in [MAX_WORKERS + 1, 1 << 40, usize::MAX] {
        invalid(
            ThreadPoolExecutor::new(n).map(drop),
            &format!("threads {n}"),
        );
        invalid(
            ProcessPoolExecutor::builder()
                .max_workers(n)
                .test_harness()
                .build()
                .map(drop),
            &format!("processes {n}"),
        );
        let config: ExecutorConfig = format!("thread:{n}").parse().unwrap();
        invalid(config.build().map(drop), &format!("\"thread:{n}\""));
    }
}

/// `max_frame_bytes` must leave room for the handshake and a task's error
/// (1 KiB at least) and fit a frame's 32-bit length. Below, the pool used
/// to build and then fail every task (or lose its worker); above 4 GiB, a
/// result between 4 GiB and the limit killed the worker.
#[test]
fn max_frame_bytes_outside_1_kib_to_4_gib_is_invalid_config() {
    let build = |n: usize| {
        ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_frame_bytes(n)
            .test_harness()
            .build()
    };
    for n in [0, 64, 1023, u32::MAX as usize + 1, usize::MAX] {
        match build(n) {
            Err(Error::InvalidConfig(msg)) => assert!(msg.contains("max_frame_bytes"), "{msg}"),
            other => panic!("max_frame_bytes({n}): expected InvalidConfig, got {other:?}"),
        }
    }
    let pool = build(1024).expect("1 KiB is enough");
    assert_eq!(get(&pool.submit(double, 21)), Ok(42));
    pool.shutdown(true, false);
}

// ------------------------------------------------------------ empty map --

fn double(x: u64) -> u64 {
    x * 2
}

fn empty_map_on(ex: &dyn Executor) {
    let mut m = ex.map(double, Vec::<u64>::new());
    assert_eq!(m.in_flight(), 0);
    assert!(m.next().is_none());
    assert!(m.next().is_none(), "a finished map stays finished");
    let opts = MapOptions::new()
        .chunksize(4)
        .window(3)
        .timeout(Duration::ZERO);
    assert!(
        ex.map_with(double, std::iter::empty(), opts)
            .next()
            .is_none()
    );
    let mut u = ex.map_unordered(double, std::iter::empty::<u64>());
    assert_eq!(u.in_flight(), 0);
    assert!(u.next().is_none());
    // The executor still works afterwards.
    let out: Vec<u64> = ex.map(double, 0..3u64).map(Result::unwrap).collect();
    assert_eq!(out, [0, 2, 4]);
}

/// `map`, `map_with` (chunked, with a deadline) and `map_unordered` over an
/// empty iterator yield nothing and submit nothing, on both pools.
#[test]
fn map_over_an_empty_iterator_yields_nothing_on_both_pools() {
    let threads = ThreadPoolExecutor::new(2).unwrap();
    empty_map_on(&threads);
    let processes = process_pool(1);
    empty_map_on(&processes);
    processes.shutdown(true, false);
}

// ------------------------------------------------------------ timeouts --

/// Waits (hang guard) for the gate file, then returns `x`.
fn gated((path, x): (String, u64)) -> u64 {
    await_file(&path);
    x
}

/// Zero and `Duration::MAX` timeouts on every call that takes one.
///
/// Zero never blocks: `result`/`exception` give `Error::Timeout` on an
/// unfinished future (and the value on a finished one), `wait` returns the
/// partial sets, `as_completed` yields what is done and then
/// `Error::AsCompletedTimeout`, `map` yields `Error::MapDeadline` and ends.
/// `Duration::MAX` (which overflows `Instant`) means "no limit": each call
/// waits for the outcome.
fn zero_and_max_timeouts_on(ex: &dyn Executor) {
    const MAX: Option<Duration> = Some(Duration::MAX);
    const ZERO: Option<Duration> = Some(Duration::ZERO);
    let gate = FileGate::new("env-input");
    let done = ex.submit(double, 21);
    assert_eq!(get(&done), Ok(42));
    let held = ex.submit(gated, (gate.arg(), 7));

    // Zero on an unfinished future: Timeout, and the task is untouched.
    assert!(matches!(held.result(ZERO), Err(Error::Timeout { waited }) if waited.is_zero()));
    assert!(matches!(held.exception(ZERO), Err(Error::Timeout { .. })));
    assert!(!held.done() && !held.cancelled());
    // Zero on a finished one: the outcome.
    assert_eq!(done.result(ZERO), Ok(&42));
    assert_eq!(done.exception(ZERO), Ok(None));

    let both = [&done, &held];
    let sets = wait(both, ZERO, ReturnWhen::AllCompleted);
    assert_eq!((sets.done.len(), sets.not_done.len()), (1, 1));
    let items: Vec<_> = as_completed(both, ZERO).collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(matches!(items[0], Ok(f) if *f == done));
    assert!(
        matches!(
            items[1],
            Err(Error::AsCompletedTimeout {
                unfinished: 1,
                total: 2
            })
        ),
        "{:?}",
        items[1]
    );

    // A map with a zero deadline whose first task is held: MapDeadline,
    // then the end; the rest are cancelled.
    let map_gate = FileGate::new("env-input-map");
    let mut m = ex.map_with(
        gated,
        (0..4).map(|i| (map_gate.arg(), i)),
        MapOptions::new().timeout(Duration::ZERO),
    );
    assert!(matches!(m.next(), Some(Err(Error::MapDeadline { timeout })) if timeout.is_zero()));
    assert!(m.next().is_none());
    drop(m);
    map_gate.open();

    // Duration::MAX: no limit, no overflow panic. Open the gate from
    // another thread while the calls below wait.
    let opener = {
        let path = gate.arg();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::write(path, b"open").unwrap();
        })
    };
    let sets = wait(both, MAX, ReturnWhen::AllCompleted);
    assert_eq!((sets.done.len(), sets.not_done.len()), (2, 0));
    opener.join().unwrap();
    assert_eq!(held.result(MAX), Ok(&7));
    assert_eq!(held.exception(MAX), Ok(None));
    let yielded: Vec<_> = as_completed(both, MAX).collect();
    assert_eq!(yielded.len(), 2);
    assert!(yielded.iter().all(Result::is_ok), "{yielded:?}");
    let out: Vec<u64> = ex
        .map_with(double, 0..5u64, MapOptions::new().timeout(Duration::MAX))
        .map(Result::unwrap)
        .collect();
    assert_eq!(out, [0, 2, 4, 6, 8]);
    drop(gate);
}

#[test]
fn zero_and_max_timeouts_on_a_thread_pool() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    zero_and_max_timeouts_on(&pool);
    pool.shutdown(true, false);
}

#[test]
fn zero_and_max_timeouts_on_a_process_pool() {
    let pool = process_pool(2);
    zero_and_max_timeouts_on(&pool);
    pool.shutdown(true, false);
}

/// `Duration::MAX` as a process pool's task, idle, startup or terminate
/// limit means "no limit": the pool serves and shuts down normally (an
/// `Instant + Duration::MAX` used to panic the pool's supervisor thread).
#[test]
fn max_durations_as_process_pool_limits_mean_no_limit() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .task_timeout(Duration::MAX)
        .startup_timeout(Duration::MAX)
        .idle_timeout(Duration::MAX)
        .terminate_grace(Duration::MAX)
        .test_harness()
        .build()
        .unwrap();
    assert_eq!(pool.submit(getpid, ()).into_result().map(|_| ()), Ok(()));
    let f = pool.submit_with_timeout(getpid, (), Duration::MAX);
    assert_eq!(f.into_result().map(|_| ()), Ok(()));
    // The supervisor is alive: it replaces a worker that exits.
    assert!(pool.submit(exit_worker, ()).into_result().is_err());
    assert_eq!(pool.submit(getpid, ()).into_result().map(|_| ()), Ok(()));
    assert_eq!(
        pool.shutdown_within(Duration::MAX, false),
        concurrent_futures::ShutdownOutcome::Finished
    );
}

// ------------------------------------------------------ panic payloads --

fn panic_with_a_u8(_: ()) -> u32 {
    std::panic::panic_any(42u8)
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn exit_worker(_: ()) -> u32 {
    std::process::exit(3)
}

fn assert_non_string_panic(r: Result<u32, Error>, what: &str) {
    match r {
        Err(Error::Panicked { message, .. }) => {
            assert!(message.contains("non-string"), "{what}: {message}")
        }
        other => panic!("{what}: expected Panicked, got {other:?}"),
    }
}

/// `std::panic::panic_any(42u8)`: a payload that is neither `&str` nor
/// `String` is still `Error::Panicked` (with a message saying the payload
/// was not a string), on both pools, and the worker lives on.
#[test]
fn panic_payload_of_another_type_is_a_panicked_error_on_both_pools() {
    let threads = ThreadPoolExecutor::new(1).unwrap();
    assert_non_string_panic(get(&threads.submit(panic_with_a_u8, ())), "thread submit");
    assert_non_string_panic(
        get(&threads.spawn(|| -> u32 { std::panic::panic_any(42u8) })),
        "thread spawn",
    );
    assert_eq!(get(&threads.submit(double, 4)), Ok(8));

    let processes = process_pool(1);
    let pid = get(&processes.submit(getpid, ())).unwrap();
    assert_non_string_panic(
        get(&processes.submit(panic_with_a_u8, ())),
        "process submit",
    );
    assert_eq!(
        get(&processes.submit(getpid, ())),
        Ok(pid),
        "the worker did not survive the panic"
    );
    processes.shutdown(true, false);
}

// ------------------------------------------------ unserializable result --

/// A result type whose `Serialize` always fails.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Unserializable(u32);

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "Unserializable refuses to serialize",
        ))
    }
}

fn make_unserializable(x: u32) -> Unserializable {
    Unserializable(x)
}

/// D10 (CPython `test_error_during_result_pickle_on_worker`): a task whose
/// result fails to serialize: on a process pool the future
/// fails with `Error::Encode` naming the type (and the worker lives on); on
/// a thread pool the same task just works, since nothing is serialized.
#[test]
fn result_that_fails_to_serialize_is_encode_on_processes_and_fine_on_threads() {
    let processes = process_pool(1);
    let pid = get(&processes.submit(getpid, ())).unwrap();
    match get(&processes.submit(make_unserializable, 7)) {
        Err(Error::Encode { type_name, message }) => {
            assert!(
                type_name.contains("Unserializable"),
                "{type_name}: {message}"
            );
            // postcard does not keep the Serialize impl's own message.
            assert!(!message.is_empty(), "{type_name}");
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    let items: Vec<_> = processes.map(make_unserializable, 0..3u32).collect();
    assert_eq!(items.len(), 3);
    assert!(
        items.iter().all(|r| matches!(r, Err(Error::Encode { .. }))),
        "{items:?}"
    );
    assert_eq!(get(&processes.submit(getpid, ())), Ok(pid));
    processes.shutdown(true, false);

    let threads = ThreadPoolExecutor::new(1).unwrap();
    assert_eq!(
        get(&threads.submit(make_unserializable, 7)),
        Ok(Unserializable(7))
    );
    let items: Vec<_> = threads
        .map(make_unserializable, 0..3u32)
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        items,
        [Unserializable(0), Unserializable(1), Unserializable(2)]
    );
}

/// The largest thread pool allowed starts every worker, runs tasks and
/// shuts down: `MAX_WORKERS` stays under what the OS lets a process start
/// (at 32 768 it aborted on stock Linux, past `vm.max_map_count`).
#[test]
fn a_thread_pool_of_max_workers_starts_runs_and_shuts_down() {
    use concurrent_futures::MAX_WORKERS;
    let pool = ThreadPoolExecutor::new(MAX_WORKERS).expect("MAX_WORKERS threads start");
    assert_eq!(pool.live_workers(), MAX_WORKERS);
    let futures: Vec<_> = (0..64u64).map(|i| pool.spawn(move || i * 2)).collect();
    for (i, f) in (0..64u64).zip(futures) {
        assert_eq!(f.into_result(), Ok(i * 2));
    }
    pool.shutdown(true, false);
}

/// Worker arguments and environment variables that no process can be
/// given are `InvalidConfig` at `build`, before any worker starts (found by
/// review: an argument with a NUL byte reached workers as a placeholder,
/// and a variable with one broke the pool at its first task); so is a zero
/// `startup_timeout`, in which no worker could start.
#[test]
fn impossible_worker_commands_and_a_zero_startup_timeout_are_refused_at_build() {
    let refused = |b: ProcessPoolBuilder, what: &str, mention: &str| match b.test_harness().build()
    {
        Err(Error::InvalidConfig(m)) => assert!(m.contains(mention), "{what}: {m}"),
        other => panic!("{what}: expected InvalidConfig, got {:?}", other.map(drop)),
    };
    let builder = ProcessPoolExecutor::builder;
    refused(builder().worker_args(["a\0b"]), "NUL in an argument", "NUL");
    refused(builder().worker_env("", "v"), "empty name", "environment");
    refused(
        builder().worker_env("A=B", "v"),
        "'=' in a name",
        "environment",
    );
    refused(
        builder().worker_env("A\0B", "v"),
        "NUL in a name",
        "environment",
    );
    refused(builder().worker_env("A", "v\0w"), "NUL in a value", "NUL");
    refused(
        builder().startup_timeout(Duration::ZERO),
        "zero startup_timeout",
        "startup_timeout",
    );
}
