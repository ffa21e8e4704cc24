//! The thread pool's own behaviour: CONFORMANCE.md section 1.9 (T1-T10) and
//! decisions 7 and 10, plus the stress cases of issue 2 (a million tiny
//! tasks, callbacks on 10,000 futures, recursive fork-join, panic messages,
//! idle workers parked).
//!
//! No test asserts timing. Tasks are held with gates; every blocking wait
//! has a generous hang guard so a bug fails the test instead of hanging CI.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use concurrent_futures::{Error, ExecutorExt, Future, ThreadPoolExecutor};

mod common;
use common::{Gate, HANG as GUARD, wait_until};

/// Waits for `f` with the hang guard and returns a copy of its value.
fn get<T: Clone>(f: &Future<T>) -> Result<T, Error> {
    match f.result(Some(GUARD)) {
        Err(Error::Timeout { .. }) => panic!("hang guard: future not done after {GUARD:?}"),
        r => r.cloned(),
    }
}

fn current_thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned()
}

fn identity(x: u64) -> u64 {
    x
}

// ---------------------------------------------------------------- T1, T2

/// T1 / L7: the default worker count is the CPU count `num_cpus` reports,
/// which honours the affinity mask and the cgroup CPU quota (the process
/// pool uses the same default).
#[test]
fn t1_default_max_workers_is_the_number_of_cpus() {
    // The crate documents num_cpus::get() as its default (it departs from
    // CPython's min(32, cpus + 4), which suits I/O-bound work). num_cpus is
    // not a dev-dependency, so compare with std's count: both read the
    // affinity mask / cgroup quota on Linux.
    let pool = ThreadPoolExecutor::builder().build().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(pool.max_workers(), cpus);
    assert_eq!(
        ThreadPoolExecutor::builder().build().unwrap().max_workers(),
        cpus
    );
    pool.shutdown(true, false);
}

#[test]
fn t2_zero_max_workers_is_invalid_config() {
    match ThreadPoolExecutor::builder().max_workers(0).build() {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("max_workers"), "{msg}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert!(matches!(
        ThreadPoolExecutor::new(0),
        Err(Error::InvalidConfig(_))
    ));
}

// ---------------------------------------------------------------- T4 / decision 10

#[test]
fn t4_saturated_pool_never_runs_more_than_max_workers_tasks_at_once() {
    const MAX: usize = 3;
    let pool = ThreadPoolExecutor::new(MAX).unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let gate = Gate::new();
    let futures: Vec<_> = (0..15 * MAX)
        .map(|i| {
            let (running, peak, threads, gate) =
                (running.clone(), peak.clone(), threads.clone(), gate.clone());
            pool.spawn(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                threads.lock().unwrap().insert(std::thread::current().id());
                gate.wait();
                running.fetch_sub(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    // Saturated: every worker holds a gated task and 42 more are queued.
    wait_until("max_workers tasks running", || {
        running.load(Ordering::SeqCst) == MAX
    });
    assert_eq!(peak.load(Ordering::SeqCst), MAX);
    assert_eq!(futures.iter().filter(|f| f.done()).count(), 0);
    assert_eq!(pool.live_workers(), MAX);
    gate.open();
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(get(f), Ok(i));
    }
    assert!(peak.load(Ordering::SeqCst) <= MAX, "peak {peak:?}");
    assert_eq!(threads.lock().unwrap().len(), MAX);
    assert_eq!(pool.live_workers(), MAX);
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------- T5

/// Runs `n` tasks that all wait for one another, so each runs on its own
/// worker, and returns the names of the threads they ran on.
fn names_of_all_workers(pool: &ThreadPoolExecutor, n: usize) -> HashSet<String> {
    let arrived = Arc::new(AtomicUsize::new(0));
    let futures: Vec<_> = (0..n)
        .map(|_| {
            let arrived = arrived.clone();
            pool.spawn(move || {
                arrived.fetch_add(1, Ordering::SeqCst);
                wait_until("every worker holding a task", || {
                    arrived.load(Ordering::SeqCst) == n
                });
                current_thread_name()
            })
        })
        .collect();
    futures.iter().map(|f| get(f).unwrap()).collect()
}

#[test]
fn t5_thread_names_are_prefix_underscore_index() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(5)
        .thread_name_prefix("SpecialPool")
        .build()
        .unwrap();
    assert_eq!(pool.thread_name_prefix(), "SpecialPool");
    let expected: HashSet<String> = (0..5).map(|i| format!("SpecialPool_{i}")).collect();
    assert_eq!(names_of_all_workers(&pool, 5), expected);
    pool.shutdown(true, false);
}

/// T5: CPython's `thread_name_prefix or "ThreadPoolExecutor-%d"`: an
/// empty prefix gets the default names (it named the threads `_0`, `_1`).
/// Found by review.
#[test]
fn t5_an_empty_prefix_gets_the_default_names() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("")
        .build()
        .unwrap();
    assert!(
        pool.thread_name_prefix().starts_with("ThreadPoolExecutor-"),
        "{:?}",
        pool.thread_name_prefix()
    );
    pool.shutdown(true, false);
}

/// A prefix no thread name can hold is an error from `build`, not a panic
/// of the thread spawn. Found by review.
#[test]
fn a_prefix_with_a_nul_byte_is_invalid_config() {
    let built = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("bad\0name")
        .build();
    assert!(
        matches!(&built, Err(Error::InvalidConfig(m)) if m.contains("NUL")),
        "{built:?}"
    );
}

#[test]
fn t5_default_thread_names_are_threadpoolexecutor_counter_index() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let prefix = pool.thread_name_prefix().to_owned();
    let counter = prefix
        .strip_prefix("ThreadPoolExecutor-")
        .unwrap_or_else(|| panic!("default prefix {prefix:?}"));
    assert!(
        !counter.is_empty() && counter.bytes().all(|b| b.is_ascii_digit()),
        "default prefix {prefix:?} is not ThreadPoolExecutor-<number>"
    );
    let expected: HashSet<String> = (0..3).map(|i| format!("{prefix}_{i}")).collect();
    assert_eq!(names_of_all_workers(&pool, 3), expected);

    // The counter is global: another pool gets another prefix.
    let other = ThreadPoolExecutor::new(1).unwrap();
    assert_ne!(other.thread_name_prefix(), prefix);
    assert!(
        other
            .thread_name_prefix()
            .starts_with("ThreadPoolExecutor-")
    );
    pool.shutdown(true, false);
    other.shutdown(true, false);
}

// ---------------------------------------------------------------- T6 / decision 7

fn fail_if_odd(x: u64) -> u64 {
    if x % 2 == 1 {
        panic!("odd input {x}");
    }
    x
}

#[test]
fn t6_panicking_task_is_its_own_error_and_the_worker_lives_on() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let futures: Vec<_> = (0..40).map(|i| pool.submit(fail_if_odd, i)).collect();
    for (i, f) in (0u64..).zip(&futures) {
        match get(f) {
            Ok(v) => {
                assert_eq!(i % 2, 0);
                assert_eq!(v, i);
            }
            Err(Error::Panicked { message, .. }) => {
                assert_eq!(i % 2, 1);
                assert_eq!(message, format!("odd input {i}"));
            }
            Err(e) => panic!("task {i}: unexpected error {e:?}"),
        }
    }
    // Every worker is still there and still runs tasks (the pool has only 2
    // workers and 20 of its tasks panicked).
    assert_eq!(pool.live_workers(), 2);
    let names = names_of_all_workers(&pool, 2);
    assert_eq!(names.len(), 2);
    let later: Vec<_> = (0..10).map(|i| pool.submit(identity, i)).collect();
    for (i, f) in (0u64..).zip(&later) {
        assert_eq!(get(f), Ok(i));
    }
    assert_eq!(pool.live_workers(), 2);
    pool.shutdown(true, false);
}

/// Two tasks of one pool each calling `shutdown(wait = true)` on it: each
/// waits for every worker but the ones blocked there the same way, so both
/// return (they used to wait for each other forever).
#[test]
fn two_tasks_shutting_down_their_own_pool_with_wait_both_return() {
    use concurrent_futures::Executor;
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let futures: Vec<_> = (0..2)
        .map(|_| {
            let (p, b) = (pool.clone(), barrier.clone());
            pool.spawn(move || {
                b.wait();
                Executor::shutdown(&*p, true, false);
            })
        })
        .collect();
    for f in &futures {
        assert_eq!(f.result(Some(GUARD)), Ok(&()));
    }
    pool.shutdown(true, false);
    assert_eq!(pool.live_workers(), 0);
}

#[test]
fn t6_panic_with_str_and_with_string_both_give_their_message() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let with_str = pool.spawn(|| -> u8 { panic!("a static str payload") });
    let n = 42;
    let with_string = pool.spawn(move || -> u8 { panic!("a formatted String payload: {n}") });
    let with_any_string =
        pool.spawn(|| -> u8 { std::panic::panic_any(String::from("panic_any with a String")) });
    let with_any_str = pool.spawn(|| -> u8 { std::panic::panic_any("panic_any with a &str") });
    let message = |f: &Future<u8>| match get(f) {
        Err(Error::Panicked { message, .. }) => message,
        other => panic!("expected a panic error, got {other:?}"),
    };
    assert_eq!(message(&with_str), "a static str payload");
    assert_eq!(message(&with_string), "a formatted String payload: 42");
    assert_eq!(message(&with_any_string), "panic_any with a String");
    assert_eq!(message(&with_any_str), "panic_any with a &str");
    // The error is also what exception() returns, and its Display says it.
    let e = with_string.exception(Some(GUARD)).unwrap().unwrap();
    assert!(e.is_panic());
    assert!(
        e.to_string().contains("a formatted String payload: 42"),
        "{e}"
    );
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------- T7

thread_local! {
    static INIT_RUNS: Cell<usize> = const { Cell::new(0) };
}

#[test]
fn t7_initializer_runs_once_per_worker_before_its_first_task() {
    const N: usize = 3;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let calls2 = calls.clone();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(N)
        .thread_name_prefix("init")
        .initializer(move || {
            INIT_RUNS.with(|c| c.set(c.get() + 1));
            calls2.lock().unwrap().push(current_thread_name());
        })
        .build()
        .unwrap();
    // Every task sees that its thread ran the initializer exactly once.
    let seen = |_: ()| (INIT_RUNS.with(Cell::get), current_thread_name());
    let futures: Vec<_> = (0..200).map(|_| pool.spawn(move || seen(()))).collect();
    for f in &futures {
        let (runs, name) = get(f).unwrap();
        assert_eq!(runs, 1, "task on {name} saw {runs} initializer runs");
    }
    // Make every worker run a task, then count initializer calls: one per
    // worker, on that worker.
    let names = names_of_all_workers(&pool, N);
    let mut called = calls.lock().unwrap().clone();
    called.sort();
    let mut expected: Vec<_> = names.into_iter().collect();
    expected.sort();
    assert_eq!(called, expected);
    pool.shutdown(true, false);
    assert_eq!(calls.lock().unwrap().len(), N);
}

// ---------------------------------------------------------------- T8

#[test]
fn t8_initializer_panic_breaks_the_pool() {
    let gate = Gate::new();
    let gate2 = gate.clone();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(move || {
            gate2.wait();
            panic!("initializer failed on purpose");
        })
        .build()
        .unwrap();
    // Queued while the only worker is still in its initializer.
    let ran = Arc::new(AtomicUsize::new(0));
    let queued: Vec<_> = (0..5)
        .map(|i| {
            let ran = ran.clone();
            pool.spawn(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    let queued_portable = pool.submit(identity, 7);
    gate.open();
    let is_broken = |e: &Error| matches!(e, Error::Broken { reason, .. } if reason.contains("initializer failed on purpose"));
    for f in &queued {
        let e = get(f).unwrap_err();
        assert!(is_broken(&e), "queued future: {e:?}");
    }
    let e = get(&queued_portable).unwrap_err();
    assert!(is_broken(&e), "queued portable future: {e:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a task ran on a broken pool");

    // Later submits are refused with the same error, in every form.
    let e = pool.try_submit(identity, 1).unwrap_err();
    assert!(is_broken(&e), "try_submit: {e:?}");
    let e = get(&pool.submit(identity, 1)).unwrap_err();
    assert!(is_broken(&e), "submit: {e:?}");
    let e = get(&pool.spawn(|| 1)).unwrap_err();
    assert!(is_broken(&e), "spawn: {e:?}");
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------- T9

#[test]
fn t9_external_submissions_on_one_worker_start_in_fifo_order() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let blocker = pool.spawn(move || g.wait());
    let order = Arc::new(Mutex::new(Vec::new()));
    let futures: Vec<_> = (0..500)
        .map(|i| {
            let order = order.clone();
            pool.spawn(move || order.lock().unwrap().push(i))
        })
        .collect();
    gate.open();
    get(&blocker).unwrap();
    for f in &futures {
        get(f).unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..500).collect::<Vec<_>>());
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------- T10 / PP20

static FIB_POOL: OnceLock<ThreadPoolExecutor> = OnceLock::new();

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

/// Every call with n >= 2 submits both halves to the same 2-worker pool and
/// blocks on them: CPython deadlocks here as soon as both workers wait.
fn nested_fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let pool = FIB_POOL.get().unwrap();
    let a = pool.submit(nested_fib, n - 1);
    let b = nested_fib(n - 2);
    a.into_result().unwrap() + b
}

#[test]
fn t10_pp20_recursive_fib_by_nested_submit_completes_on_two_workers() {
    // fib(20) by nested submit: 21,890 tasks, recursion depth 20. Today the
    // worker's stack overflows (SIGABRT): a worker waiting in `result` runs
    // the *oldest* task of its FIFO deque, which waits and helps in turn, so
    // helped tasks nest thousands deep (4,000-6,700 measured with
    // RUST_MIN_STACK=1GB) instead of about 20.
    let pool = FIB_POOL.get_or_init(|| ThreadPoolExecutor::new(2).unwrap());
    let f = pool.submit(nested_fib, 20);
    assert_eq!(get(&f), Ok(fib(20)));
}

static SMALL_FIB_POOL: OnceLock<ThreadPoolExecutor> = OnceLock::new();

/// `nested_fib` on its own pool with both halves submitted: a second shape
/// of fork-join (T10), where every level waits on two futures.
fn small_nested_fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let pool = SMALL_FIB_POOL.get().unwrap();
    let a = pool.submit(small_nested_fib, n - 1);
    let b = pool.submit(small_nested_fib, n - 2);
    let b = *b.result(None).unwrap();
    a.into_result().unwrap() + b
}

#[test]
fn t10_pp20_recursive_fib_10_by_nested_submit_completes_on_two_workers() {
    let pool = SMALL_FIB_POOL.get_or_init(|| ThreadPoolExecutor::new(2).unwrap());
    let f = pool.submit(small_nested_fib, 10);
    assert_eq!(get(&f), Ok(fib(10)));
}

static DOCS_POOL: OnceLock<ThreadPoolExecutor> = OnceLock::new();

fn pow(args: (u64, u32)) -> u64 {
    args.0.pow(args.1)
}

/// The CPython docs' deadlock: "This will never complete because there is
/// only one worker thread and it is executing this function."
fn wait_on_future(_: ()) -> u64 {
    let f = DOCS_POOL.get().unwrap().submit(pow, (5, 2));
    *f.result(None).unwrap()
}

#[test]
fn t10_docs_deadlock_example_completes_on_one_worker() {
    let pool = DOCS_POOL.get_or_init(|| ThreadPoolExecutor::new(1).unwrap());
    let f = pool.submit(wait_on_future, ());
    assert_eq!(get(&f), Ok(25));
}

#[test]
fn t10_task_waiting_on_a_later_external_submit_completes_on_one_worker() {
    // Task a, already running on the only worker, waits on task b, which
    // was submitted from outside after a (so b sits in the injector).
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let slot: Arc<Mutex<Option<Future<u64>>>> = Arc::new(Mutex::new(None));
    let started = Arc::new(AtomicUsize::new(0));
    let (s, st) = (slot.clone(), started.clone());
    let a = pool.spawn(move || {
        st.store(1, Ordering::SeqCst);
        wait_until("b submitted", || s.lock().unwrap().is_some());
        let b = s.lock().unwrap().take().unwrap();
        b.into_result().unwrap() + 1
    });
    wait_until("a running", || started.load(Ordering::SeqCst) == 1);
    *slot.lock().unwrap() = Some(pool.submit(identity, 41));
    assert_eq!(get(&a), Ok(42));
    pool.shutdown(true, false);
}

thread_local! {
    /// Tasks running at once on this thread: more than one when a worker
    /// waiting in `result()` runs others on top of its task (T10).
    static STACKED: Cell<usize> = const { Cell::new(0) };
}

/// T10's helping takes only what the waiting task depends on: 20,000 queued
/// tasks that all wait for one slow future (a shared initialisation) do not
/// run on top of each other while they wait (they stacked up until a
/// worker's stack overflowed and the process aborted, at about 5,000);
/// every task gets the value once it is there.
#[test]
fn t10_tasks_waiting_on_one_slow_future_do_not_stack_up_and_all_complete() {
    const TASKS: usize = 20_000;
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (init, ready) = concurrent_futures::Promise::<u64>::new();
    let ready = Arc::new(ready);
    let started = Arc::new(AtomicUsize::new(0));
    let deepest = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<Future<u64>> = (0..TASKS)
        .map(|_| {
            let (ready, started, deepest) = (ready.clone(), started.clone(), deepest.clone());
            pool.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                let depth = STACKED.with(|s| s.replace(s.get() + 1)) + 1;
                deepest.fetch_max(depth, Ordering::SeqCst);
                let v = *ready.result(None).unwrap();
                STACKED.with(|s| s.set(s.get() - 1));
                v
            })
        })
        .collect();
    wait_until("both workers to wait", || {
        started.load(Ordering::SeqCst) >= 2
    });
    init.set_result(7).unwrap();
    for t in tasks {
        assert_eq!(t.result(Some(GUARD)), Ok(&7));
    }
    let deepest = deepest.load(Ordering::SeqCst);
    assert_eq!(deepest, 1, "{deepest} tasks stacked on one worker");
    pool.shutdown(true, false);
}

/// Submits, from a task, its subtask Y, which returns 1 once `z_started`
/// is set or after 300 ms, and waits until the pool's other worker has
/// taken it (or already ran it, on a very slow machine).
fn subtask_y_taken_by_the_other_worker(
    pool: &ThreadPoolExecutor,
    z_started: Arc<AtomicUsize>,
) -> Future<u64> {
    let y = pool.spawn(move || {
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while z_started.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        1u64
    });
    wait_until("the other worker to take Y", || y.running() || y.done());
    y
}

/// T10 without a deadlock of its own: task X waits on its subtask Y, which
/// the other worker runs; task Z, submitted meanwhile, waits on X. A
/// waiting worker that took Z would run it on top of X, where Z waits for
/// X forever; X's worker must not take Z. (Y gives Z up to 300 ms to start,
/// which it did at once when waiting workers took any queued task.)
#[test]
fn t10_a_waiting_task_does_not_take_a_queued_task_that_waits_on_it() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let x_waits = Arc::new(AtomicUsize::new(0));
    let z_started = Arc::new(AtomicUsize::new(0));
    let (p, xw, zs) = (pool.clone(), x_waits.clone(), z_started.clone());
    let x = Arc::new(pool.spawn(move || {
        let y = subtask_y_taken_by_the_other_worker(&p, zs.clone());
        xw.store(1, Ordering::SeqCst);
        *y.result(None).unwrap() + 1
    }));
    wait_until("X to wait on Y", || x_waits.load(Ordering::SeqCst) == 1);
    let (xz, zs) = (x.clone(), z_started.clone());
    let z = pool.spawn(move || {
        zs.store(1, Ordering::SeqCst);
        *xz.result(None).unwrap() + 1
    });
    assert_eq!(z.result(Some(GUARD)), Ok(&3), "X and Z deadlocked");
    assert_eq!(x.result(Some(GUARD)), Ok(&2));
    pool.shutdown(true, false);
}

/// T10 with a stolen branch: task T waits on its subtask A, which the other
/// worker stole and runs; A pushes a subtask S and, without helping, waits
/// for S to have run. T's worker, waiting on A, takes S from the thief's
/// deque (everything there descends from A) and runs it: fork-join keeps
/// both workers busy. A worker that only blocked would leave S unrun.
#[test]
fn t10_a_waiting_worker_runs_the_subtasks_of_its_stolen_subtask() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let s_pushed = Arc::new(AtomicUsize::new(0));
    let s_ran_on = Arc::new(Mutex::new(None));
    let (p, sp, sro) = (pool.clone(), s_pushed.clone(), s_ran_on.clone());
    let t = pool.spawn(move || {
        let (p2, sp2, sro2) = (p.clone(), sp.clone(), sro.clone());
        let a = p.spawn(move || {
            let sro3 = sro2.clone();
            let _s = p2.spawn(move || {
                *sro3.lock().unwrap() = Some(std::thread::current().id());
            });
            sp2.store(1, Ordering::SeqCst);
            // Waits for S without helping: only another worker can run it.
            wait_until("S to run on another worker", || {
                sro2.lock().unwrap().is_some()
            });
            std::thread::current().id()
        });
        wait_until("A to be stolen and S pushed", || {
            a.running() && sp.load(Ordering::SeqCst) == 1
        });
        (*a.result(None).unwrap(), std::thread::current().id())
    });
    let (a_ran_on, t_ran_on) = *t.result(Some(GUARD)).unwrap();
    assert_ne!(a_ran_on, t_ran_on, "A was not stolen");
    assert_eq!(*s_ran_on.lock().unwrap(), Some(t_ran_on), "S ran elsewhere");
    pool.shutdown(true, false);
}

/// T10: what a done-callback submits does not descend from the task whose
/// completion ran the callback, so it goes to the pool's inbox, not onto
/// the running worker's deque among that task's subtasks. Here task X
/// completes a promise whose callback submits Z, which waits on X; X then
/// waits on its subtask Y. Had Z gone onto X's worker's deque, X would run
/// it on top of itself, and Z would wait for X forever. (Y gives Z up to
/// 300 ms to start.)
#[test]
fn t10_a_task_submitted_by_a_callback_is_not_run_on_top_of_the_task_that_completed() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let (promise, done) = concurrent_futures::Promise::<u8>::new();
    let x_slot: Arc<OnceLock<Future<u64>>> = Arc::new(OnceLock::new());
    let z_slot: Arc<OnceLock<Future<u64>>> = Arc::new(OnceLock::new());
    let z_started = Arc::new(AtomicUsize::new(0));
    let (p, xs, zs, zst) = (
        pool.clone(),
        x_slot.clone(),
        z_slot.clone(),
        z_started.clone(),
    );
    done.add_done_callback(move |_| {
        let (xs, zst) = (xs.clone(), zst.clone());
        let z = p.spawn(move || {
            zst.store(1, Ordering::SeqCst);
            *xs.get().unwrap().result(None).unwrap() + 1
        });
        let _ = zs.set(z);
    });
    let (p, zst) = (pool.clone(), z_started.clone());
    let x = pool.spawn(move || {
        let y = subtask_y_taken_by_the_other_worker(&p, zst.clone());
        promise.set_result(0).unwrap(); // runs the callback here, in X
        *y.result(None).unwrap() + 1
    });
    let _ = x_slot.set(x);
    let z = z_slot.wait();
    assert_eq!(z.result(Some(GUARD)), Ok(&3), "X and Z deadlocked");
    pool.shutdown(true, false);
}

static CHAIN: OnceLock<Vec<Future<u64>>> = OnceLock::new();
static CHAIN_DEEPEST: AtomicUsize = AtomicUsize::new(0);

/// Task `i` of a chain in which each waits (at most 200 ms) on the next.
/// It records how many links run nested on its thread, and stops the chain
/// past 250, where a worker without a bound would go on towards a stack
/// overflow.
fn link(i: usize) -> u64 {
    let depth = STACKED.with(|s| s.replace(s.get() + 1)) + 1;
    CHAIN_DEEPEST.fetch_max(depth, Ordering::SeqCst);
    let chain = CHAIN.get().unwrap();
    let v = match chain.get(i + 1) {
        Some(next) if depth < 250 => next
            .result(Some(Duration::from_millis(200)))
            .map_or(0, |v| v + 1),
        _ => 0,
    };
    STACKED.with(|s| s.set(s.get() - 1));
    v
}

/// T10's runs in place are bounded: on one worker, a chain of queued tasks,
/// each waiting on the next, is not run ever deeper on the worker's stack
/// (1,000 links overflowed it and aborted the process); past a bounded
/// depth the worker waits without helping, as it would without T10.
#[test]
fn t10_a_long_chain_of_waiting_tasks_is_not_run_in_place_without_bound() {
    const LINKS: usize = 300;
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (gate, release) = common::gated(&pool, 0u8);
    let chain = CHAIN.get_or_init(|| (0..LINKS).map(|i| pool.submit(link, i)).collect());
    release.send(()).unwrap();
    assert_eq!(gate.result(Some(GUARD)), Ok(&0));
    for f in chain {
        assert!(f.result(Some(GUARD)).is_ok());
    }
    let deepest = CHAIN_DEEPEST.load(Ordering::SeqCst);
    assert!(deepest <= 200, "{deepest} links ran nested on one thread");
    pool.shutdown(true, false);
}

// ---------------------------------------------------------------- stress

#[test]
fn one_million_tiny_tasks_all_resolve_with_the_right_sum() {
    // Futures are collected and resolved in batches so at most BATCH are
    // alive at once. (A million takes about 2 s in a debug build on 2 cores.)
    const N: u64 = 1_000_000;
    const BATCH: u64 = 10_000;
    let n = N;
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut sum = 0u64;
    let mut resolved = 0u64;
    for start in (0..n).step_by(BATCH as usize) {
        let batch: Vec<_> = (start..start + BATCH)
            .map(|i| {
                if i % 2 == 0 {
                    pool.spawn(move || i)
                } else {
                    pool.submit(identity, i)
                }
            })
            .collect();
        for f in &batch {
            sum += get(f).unwrap();
            resolved += 1;
        }
    }
    assert_eq!(resolved, n);
    assert_eq!(sum, n * (n - 1) / 2);
    pool.shutdown(true, false);
}

#[test]
fn ten_thousand_futures_with_three_callbacks_each_run_every_callback_once() {
    const N: usize = 10_000;
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..3 * N).map(|_| AtomicUsize::new(0)).collect());
    // Hold both workers so the first half gets its callbacks while pending;
    // the second half races completion; the rest are added after it.
    let gate = Gate::new();
    let blockers: Vec<_> = (0..2)
        .map(|_| {
            let g = gate.clone();
            pool.spawn(move || g.wait())
        })
        .collect();
    let futures: Vec<_> = (0..N as u64).map(|i| pool.submit(identity, i)).collect();
    let add_callbacks = |i: usize, f: &Future<u64>, which: std::ops::Range<usize>| {
        for k in which {
            let counts = counts.clone();
            f.add_done_callback(move |fut| {
                assert_eq!(fut.result(Some(Duration::ZERO)), Ok(&(i as u64)));
                counts[3 * i + k].fetch_add(1, Ordering::SeqCst);
            });
        }
    };
    for (i, f) in futures.iter().enumerate().take(N / 2) {
        add_callbacks(i, f, 0..3);
    }
    gate.open();
    for (i, f) in futures.iter().enumerate().skip(N / 2) {
        add_callbacks(i, f, 0..2);
    }
    for f in blockers.iter() {
        get(f).unwrap();
    }
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(get(f), Ok(i as u64));
    }
    for (i, f) in futures.iter().enumerate().skip(N / 2) {
        add_callbacks(i, f, 2..3);
    }
    // Callbacks run on the completing worker after the future is done;
    // joining the workers makes sure all of them have returned.
    pool.shutdown(true, false);
    let wrong: Vec<_> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.load(Ordering::SeqCst) != 1)
        .map(|(j, c)| (j / 3, j % 3, c.load(Ordering::SeqCst)))
        .take(10)
        .collect();
    assert!(wrong.is_empty(), "(future, callback, runs): {wrong:?}");
}

// ---------------------------------------------------------------- parked

/// utime + stime, in clock ticks, of this process's threads whose name
/// starts with `prefix`, and how many there are.
fn cpu_ticks_of_threads(prefix: &str) -> (u64, usize) {
    let mut ticks = 0;
    let mut threads = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread exited meanwhile
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // "pid (comm) state ..." : comm may contain spaces, so split after
        // the last ')'. The next field is field 3; utime and stime are
        // fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields[14 - 3].parse().unwrap();
        let stime: u64 = fields[15 - 3].parse().unwrap();
        ticks += utime + stime;
        threads += 1;
    }
    (ticks, threads)
}

#[test]
fn decision10_idle_workers_are_parked_and_use_no_cpu() {
    const N: usize = 2;
    // comm holds at most 15 bytes: "idlpark_1" fits whole, and no other
    // thread of this test binary starts with it.
    let prefix = "idlpark";
    let pool = ThreadPoolExecutor::builder()
        .max_workers(N)
        .thread_name_prefix(prefix)
        .build()
        .unwrap();
    // Some work first, so the workers have been awake and gone idle again.
    let futures: Vec<_> = (0..1000).map(|i| pool.submit(identity, i)).collect();
    for f in &futures {
        get(f).unwrap();
    }
    wait_until("every worker parked", || pool.parked_workers() == N);
    let (before, threads) = cpu_ticks_of_threads(prefix);
    assert_eq!(threads, N, "worker threads named {prefix}_*");
    std::thread::sleep(Duration::from_millis(200));
    let (after, threads) = cpu_ticks_of_threads(prefix);
    assert_eq!(threads, N);
    // Parked threads accrue no ticks. Allow 2: a tick that was charged for
    // the instructions just before parking can show up only after the
    // first read (accounting is per tick, and one per thread can be in
    // flight), but a spinning or polling worker would gain ~20 per 200 ms.
    assert!(
        after - before <= 2,
        "idle workers used {} ticks of CPU in 200 ms",
        after - before
    );
    assert_eq!(pool.parked_workers(), N);
    pool.shutdown(true, false);
}

/// A result whose `Drop` panics (for the tests below).
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("PanicsOnDrop dropped");
        }
    }
}

/// Decision 7: a task's result is dropped by whoever holds its last
/// reference; when the user dropped the future before the task ended, that
/// is the worker. A `Drop` that panics there is logged; it used to kill the
/// worker, which was not replaced: with one worker, every later task hung.
#[test]
fn d7_a_result_whose_drop_panics_dropped_on_a_worker_does_not_kill_it() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let held = pool.spawn(move || g.wait());
    drop(pool.spawn(|| PanicsOnDrop)); // the worker will hold the last reference
    gate.open();
    held.result(Some(GUARD)).unwrap();
    assert_eq!(pool.spawn(|| 1u32).result(Some(GUARD)), Ok(&1));
    assert_eq!(pool.live_workers(), 1);
}

/// Decision 7, while helping: a waiting task's worker runs its subtask in
/// place (T10) and drops the subtask's last reference there. The subtask's
/// result panicking in `Drop` used to unwind into the waiting task, which
/// failed with another task's panic.
#[test]
fn d7_a_result_whose_drop_panics_dropped_while_helping_does_not_fail_the_waiting_task() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (promise, awaited) = concurrent_futures::Promise::<u32>::new();
    let p2 = pool.clone();
    let waiter = pool.spawn(move || {
        drop(p2.spawn(|| PanicsOnDrop)); // above the waiting task's boundary
        awaited.result(Some(GUARD)).cloned()
    });
    std::thread::sleep(Duration::from_millis(50));
    promise.set_result(7).unwrap();
    assert_eq!(waiter.result(Some(GUARD)), Ok(&Ok(7)));
    // The worker's nesting budget was given back: it still helps.
    let p3 = pool.clone();
    let nested = pool.spawn(move || p3.spawn(|| 2u32).into_result());
    assert_eq!(nested.result(Some(GUARD)), Ok(&Ok(2)));
}

/// T10 and a subtask fed by its parent: T starts a consumer S, then waits
/// for a value from outside the pool (a `Promise`) before feeding S. A
/// waiting worker used to run T's queued subtasks on top of T whatever T
/// waited for, so S ran there and waited for a feed that T, stuck under
/// it, could never send. Plain blocking (CPython) finishes; so does this
/// pool now, since it helps only while the awaited future is one of its
/// own tasks.
#[test]
fn t10_a_consumer_subtask_is_not_run_on_top_of_its_producer_waiting_on_a_promise() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (promise, value) = concurrent_futures::Promise::<u8>::new();
    let p = pool.clone();
    let (s_tx, s_rx) = std::sync::mpsc::channel();
    let t = pool.spawn(move || {
        let (feed, fed) = std::sync::mpsc::channel::<u8>();
        let s = p.spawn(move || fed.recv_timeout(Duration::from_secs(5)).ok());
        s_tx.send(s).unwrap();
        let v = *value.result(None).unwrap();
        let _ = feed.send(v);
    });
    let s = s_rx.recv_timeout(GUARD).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // T waits on the promise
    promise.set_result(9).unwrap();
    assert_eq!(s.result(Some(GUARD)), Ok(&Some(9)), "the consumer starved");
    t.result(Some(GUARD)).unwrap();
}

/// T10, the same with a subtask that waits for its parent's own result (a
/// continuation), while the parent waits on a `Promise`.
#[test]
fn t10_a_subtask_waiting_on_its_parent_is_not_run_on_top_of_it() {
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let parent: Arc<OnceLock<Future<u8>>> = Arc::default();
    let (promise, value) = concurrent_futures::Promise::<u8>::new();
    let (p, slot) = (pool.clone(), parent.clone());
    let (s_tx, s_rx) = std::sync::mpsc::channel();
    let t = pool.spawn(move || {
        let s = p.spawn(move || slot.wait().result(Some(Duration::from_secs(5))).cloned());
        s_tx.send(s).unwrap();
        *value.result(None).unwrap()
    });
    let _ = parent.set(t);
    let s = s_rx.recv_timeout(GUARD).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    promise.set_result(5).unwrap();
    assert_eq!(
        s.result(Some(GUARD)),
        Ok(&Ok(5)),
        "the continuation ran under its parent"
    );
}

/// A one-shot event with a timed wait (plain std: the pool cannot help).
#[derive(Default)]
struct Event {
    set: Mutex<bool>,
    cond: std::sync::Condvar,
}

impl Event {
    fn set(&self) {
        *self.set.lock().unwrap() = true;
        self.cond.notify_all();
    }
    /// Whether it was set within `t`.
    fn wait(&self, t: Duration) -> bool {
        let g = self.set.lock().unwrap();
        *self.cond.wait_timeout_while(g, t, |s| !*s).unwrap().0
    }
}

/// T9: external submissions start in submission order. On two workers, A
/// (waits for an event), B (sets it) and C (waits for it) finish at once,
/// as in CPython, where A and B start first. A worker used to take A and,
/// in the same steal, set B aside in its own deque, behind A; the other
/// worker took C, and B waited until A and C gave up. Repeated, from an
/// idle pool each time (most rounds failed before).
#[test]
fn t9_a_b_c_where_b_releases_a_and_c_all_finish_on_two_workers() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(2)); // the workers park
        let ev = Arc::new(Event::default());
        let (e1, e2, e3) = (ev.clone(), ev.clone(), ev.clone());
        let a = pool.spawn(move || e1.wait(Duration::from_secs(2)));
        let b = pool.spawn(move || e2.set());
        let c = pool.spawn(move || e3.wait(Duration::from_secs(2)));
        assert_eq!(
            a.result(Some(GUARD)),
            Ok(&true),
            "round {round}: A timed out"
        );
        assert_eq!(
            c.result(Some(GUARD)),
            Ok(&true),
            "round {round}: C timed out"
        );
        b.result(Some(GUARD)).unwrap();
    }
}

static TP1: OnceLock<concurrent_futures::ThreadPool> = OnceLock::new();

fn leaf(x: u64) -> u64 {
    x + 1
}

fn nested_apply(x: u64) -> u64 {
    TP1.get().unwrap().apply(leaf, x).unwrap()
}

/// T10 through the `multiprocessing` facade: `ThreadPool::apply` from a
/// task of the same one-thread pool. Its result is a `Pool` result (a
/// promise the pool fulfils when the task ends), and the waiting worker
/// runs the task it just queued. A first version of "help only on task
/// futures" did not count `Pool` results and hung here.
#[test]
fn t10_nested_apply_on_a_one_thread_thread_pool_completes() {
    TP1.get_or_init(|| concurrent_futures::ThreadPool::new(1).unwrap());
    let r = common::guarded("nested ThreadPool::apply", || {
        TP1.get().unwrap().apply(nested_apply, 41)
    });
    assert_eq!(r.unwrap(), 42);
}

#[derive(Debug)]
struct Instrumented {
    inner: ThreadPoolExecutor,
    count: std::sync::atomic::AtomicUsize,
}

impl concurrent_futures::Executor for Instrumented {
    fn execute(
        &self,
        task: concurrent_futures::Task,
    ) -> Result<(), (concurrent_futures::Task, Error)> {
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(self.inner.spawn(move || task.run())); // the user's future is the task's own
        Ok(())
    }
    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.inner.shutdown(wait, cancel_futures)
    }
    fn max_workers(&self) -> usize {
        self.inner.max_workers()
    }
}

static WRAPPED: OnceLock<Instrumented> = OnceLock::new();

fn wrapped_fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let ex = WRAPPED.get().unwrap();
    let a = ex.submit(wrapped_fib, n - 1);
    let b = wrapped_fib(n - 2);
    a.into_result().unwrap() + b
}

/// T10 through a user's executor that wraps each task in a closure of its
/// own (instrumentation, a span, a counter) before handing it to the pool:
/// the user's futures are task futures, though not the pool's, and
/// recursive fork-join still completes. A first version of "help only on
/// task futures" asked for the pool's own and deadlocked here.
#[test]
fn t10_fork_join_through_a_wrapping_user_executor_on_two_workers_completes() {
    WRAPPED.get_or_init(|| Instrumented {
        inner: ThreadPoolExecutor::new(2).unwrap(),
        count: Default::default(),
    });
    let r = common::guarded("fork-join through a wrapping executor", || {
        WRAPPED.get().unwrap().submit(wrapped_fib, 12).into_result()
    });
    assert_eq!(r.unwrap(), 144);
}

fn slow9(x: u8) -> u8 {
    std::thread::sleep(Duration::from_millis(300));
    x
}

/// T10 helping and another pool: consumer S queued under producer T; T
/// waits on a task of ANOTHER thread
/// pool (B) before feeding S. T blocks plainly, as before 99c7fb1, which helped on any task's
/// future and ran S on top.
#[test]
fn t10_a_consumer_is_not_run_on_top_of_its_producer_waiting_on_another_pools_task() {
    let a = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let b = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let (pa, pb) = (a.clone(), b.clone());
    let (s_tx, s_rx) = std::sync::mpsc::channel();
    let t = a.spawn(move || {
        let (feed, fed) = std::sync::mpsc::channel::<u8>();
        let s = pa.spawn(move || fed.recv_timeout(Duration::from_secs(2)).ok());
        s_tx.send(s).unwrap();
        let v = *pb.submit(slow9, 9).result(None).unwrap();
        let _ = feed.send(v);
    });
    let s: Future<Option<u8>> = s_rx.recv_timeout(GUARD).unwrap();
    assert_eq!(s.result(Some(GUARD)), Ok(&Some(9)), "the consumer starved");
    t.result(Some(GUARD)).unwrap();
}

static OTHER_POOL: OnceLock<concurrent_futures::ThreadPool> = OnceLock::new();

/// The same, T waiting on a `Pool` result (AsyncResult) of another pool.
#[test]
fn t10_a_consumer_is_not_run_on_top_of_its_producer_waiting_on_another_pools_result() {
    OTHER_POOL.get_or_init(|| concurrent_futures::ThreadPool::new(1).unwrap());
    let a = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let pa = a.clone();
    let (s_tx, s_rx) = std::sync::mpsc::channel();
    let t = a.spawn(move || {
        let (feed, fed) = std::sync::mpsc::channel::<u8>();
        let s = pa.spawn(move || fed.recv_timeout(Duration::from_secs(2)).ok());
        s_tx.send(s).unwrap();
        let r = OTHER_POOL.get().unwrap().apply_async(slow9, 9).unwrap();
        let v = *r.get(None).unwrap();
        let _ = feed.send(v);
    });
    let s: Future<Option<u8>> = s_rx.recv_timeout(GUARD).unwrap();
    assert_eq!(s.result(Some(GUARD)), Ok(&Some(9)), "the consumer starved");
    t.result(Some(GUARD)).unwrap();
}

/// T10 in a done-callback. Task A starts a fire-and-forget subtask S (a
/// consumer that waits for a value on a channel) and returns; A's
/// done-callback, run on A's worker, waits on task F of the pool (running
/// on the other worker) and then sends F's value to S. With plain blocking
/// (CPython), the other worker takes S once F ends and S gets the value.
/// The callback's wait helped with S, which lay on the worker's deque above
/// A's boundary, and so ran S on top of itself, where S waited for a value
/// the callback under it could only send once S returned (found by
/// review). Callbacks now have a boundary of their own. S gives up after
/// 3 s, so the bug shows as `None`, not a hang.
#[test]
fn t10_a_callback_waiting_on_a_pool_task_does_not_run_the_completed_tasks_leftover_subtask() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    // F: holds the other worker until released.
    let (f_started_tx, f_started_rx) = std::sync::mpsc::channel::<()>();
    let (f_release_tx, f_release_rx) = std::sync::mpsc::channel::<()>();
    let f = Arc::new(pool.spawn(move || {
        f_started_tx.send(()).unwrap();
        let _ = f_release_rx.recv_timeout(GUARD);
        7u32
    }));
    f_started_rx.recv_timeout(GUARD).expect("F never started");

    let (feed_tx, feed_rx) = std::sync::mpsc::channel::<u32>();
    let (s_tx, s_rx) = std::sync::mpsc::channel::<Future<Option<u32>>>();
    let (a_go_tx, a_go_rx) = std::sync::mpsc::channel::<()>();
    let p = pool.clone();
    let a = pool.spawn(move || {
        // Fire and forget: a consumer of what A's callback will produce.
        let s = p.spawn(move || feed_rx.recv_timeout(Duration::from_secs(3)).ok());
        s_tx.send(s).unwrap();
        let _ = a_go_rx.recv_timeout(GUARD); // until the callback is added
    });
    let s = s_rx.recv_timeout(GUARD).expect("A never ran");
    let callback_waits = Arc::new(AtomicUsize::new(0));
    let (f2, cw) = (f.clone(), callback_waits.clone());
    a.add_done_callback(move |_| {
        cw.store(1, Ordering::SeqCst);
        let v = *f2.result(None).unwrap();
        let _ = feed_tx.send(v);
    });
    a_go_tx.send(()).unwrap();
    wait_until("the callback to wait on F", || {
        callback_waits.load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(100)); // let the callback block on F
    f_release_tx.send(()).unwrap();
    let got = match s.result(Some(GUARD)) {
        Err(Error::Timeout { .. }) => panic!("hang guard: S never ended"),
        r => r.cloned(),
    };
    println!("S received {got:?}");
    assert_eq!(
        got,
        Ok(Some(7)),
        "S ran on top of the callback waiting to feed it, and starved"
    );
    pool.shutdown(true, false);
}

static BIG_CHAIN: std::sync::OnceLock<Vec<Future<u64>>> = std::sync::OnceLock::new();

/// A link of a chain that waits (at most 200 ms) on the next link, with a
/// 32 KiB buffer on its stack (a formatting or I/O buffer, say).
fn big_link(i: usize) -> u64 {
    let mut buf = [0u8; 32 * 1024];
    buf[i % buf.len()] = i as u8;
    let buf = std::hint::black_box(buf);
    let chain = BIG_CHAIN.get().unwrap();
    let next = match chain.get(i + 1) {
        Some(next) => next
            .result(Some(Duration::from_millis(200)))
            .map_or(0, |v| v + 1),
        None => 0,
    };
    next + u64::from(std::hint::black_box(buf)[0])
}

const STACK_MARKER: &str = "CF_TEST_T10_STACK_HELPER";

/// The helper of the next test, run in a child process (an overflow
/// aborts it): on one worker, a chain of 40 queued tasks, each waiting on
/// the next with 32 KiB of stack of its own.
#[test]
#[ignore = "helper: run by t10_tasks_with_large_frames_run_nested_do_not_overflow_a_workers_stack"]
fn helper_t10_chain_of_tasks_with_32k_frames() {
    if std::env::var_os(STACK_MARKER).is_none() {
        return;
    }
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (gate, release) = common::gated(&pool, 0u8);
    let chain = BIG_CHAIN.get_or_init(|| (0..40).map(|i| pool.submit(big_link, i)).collect());
    release.send(()).unwrap();
    gate.result(Some(GUARD)).unwrap();
    for f in chain {
        f.result(Some(GUARD)).unwrap();
    }
    println!("chain done");
}

/// T10: a waiting worker runs the queued task it waits for on its own
/// stack, and stops doing so, and just blocks, before the stack runs out.
/// The bound was a count of nested runs (128) alone: tasks with large
/// frames, each waiting on the next, overflowed the default 2 MiB stack,
/// and a stack overflow aborts the whole process (found by review). Nesting
/// now also stops 256 KiB short of the stack's end. Past it a link blocks
/// and its wait times out.
#[test]
fn t10_tasks_with_large_frames_run_nested_do_not_overflow_a_workers_stack() {
    let mut cmd = common::helper_command("helper_t10_chain_of_tasks_with_32k_frames", STACK_MARKER);
    cmd.env_remove("RUST_MIN_STACK");
    // It fails unless the helper exits 0: an overflow aborts it.
    let out = common::run_helper(cmd, GUARD);
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain done"));
}

type Chain = Arc<std::sync::OnceLock<Vec<concurrent_futures::Future<Result<usize, String>>>>>;

/// Link `i` of `chain`: a 32 KiB buffer on its stack, then a wait on the
/// next link (10 s at most: a hang guard). Returns where its buffer was.
fn stack_link<const K: usize>(chain: &Chain, i: usize) -> Result<usize, String> {
    let mut buf = [0u8; K];
    buf[i % K] = i as u8;
    let buf = std::hint::black_box(buf);
    let at = std::hint::black_box(&buf) as *const _ as usize;
    let links = chain.get().unwrap();
    if let Some(next) = links.get(i + 1) {
        match next.result(Some(Duration::from_secs(10))) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.clone()),
            Err(e) => return Err(format!("link {} waiting on link {}: {e}", i, i + 1)),
        }
    }
    Ok(at)
}

/// Runs a chain of `n` links on a one-worker pool; each link's outcome.
fn run_chain<const K: usize>(n: usize) -> Vec<Result<usize, String>> {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let gate = pool.spawn(move || {
        let _ = go_rx.recv_timeout(GUARD);
    });
    let chain: Chain = Arc::default();
    let futs = (0..n)
        .map(|i| {
            let c = chain.clone();
            pool.spawn(move || stack_link::<K>(&c, i))
        })
        .collect();
    let _ = chain.set(futs);
    go_tx.send(()).unwrap();
    gate.into_result().unwrap();
    chain
        .get()
        .unwrap()
        .iter()
        .map(|f| match f.result(Some(GUARD)) {
            Ok(r) => r.clone(),
            Err(e) => Err(format!("outer wait: {e}")),
        })
        .collect()
}

/// T10 on a one-worker pool: a chain of tasks, each waiting on the next,
/// that uses three quarters of the worker's stack still runs nested. (A
/// stack budget of half the stack, tried first, stopped it there, and the
/// link at the limit waited for a task queued behind it on the only
/// worker: for ever with `into_result`; found by review.)
#[test]
fn t10_a_chain_using_three_quarters_of_the_stack_still_runs_on_one_worker() {
    let got = common::ended_within_hang_guard(|| {
        // Calibrate: how much stack one nesting level takes in this build.
        let probe = run_chain::<{ 32 * 1024 }>(4);
        let at: Vec<usize> = probe.iter().map(|r| *r.as_ref().unwrap()).collect();
        let per_level = at[0] - at[1];
        let stack = std::env::var("RUST_MIN_STACK")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(2 << 20);
        let n = stack * 3 / 4 / per_level;
        println!("{per_level} bytes per level; a chain of {n} links");
        let outcome = run_chain::<{ 32 * 1024 }>(n);
        let failed: Vec<_> = outcome.iter().filter(|r| r.is_err()).collect();
        println!(
            "{} of {n} links failed; first: {:?}",
            failed.len(),
            failed.first()
        );
        failed.is_empty()
    });
    assert_eq!(
        got,
        Some(true),
        "a link could not run the next, queued on its own worker"
    );
}
