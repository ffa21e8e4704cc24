//! A worker thread: its loop, and helping while a task waits (fork-join).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use crossbeam_deque::{Steal, Worker};

use super::registry::{Fate, JobRef, Registry};
use crate::future::InPlace;
use crate::future::core::Core;
use crate::spin::IdleSpin;
use crate::sync::Arc;

/// The state a worker thread keeps for itself.
pub(crate) struct WorkerThread {
    pub(crate) registry: Arc<Registry>,
    pub(crate) index: usize,
    pub(crate) local: Worker<JobRef>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<WorkerThread>>> = const { RefCell::new(None) };
}

/// The worker running on this thread, if this is a pool worker.
///
/// `None` also once this thread's thread-locals are being destroyed: a
/// user's thread-local destructor may submit or wait on a future, and
/// `with` would panic there, which aborts the process (found by review).
pub(crate) fn current() -> Option<Rc<WorkerThread>> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// Whether this thread is a worker of the thread pool whose id is `id`
/// (an id of any other executor is never a thread pool's).
pub(crate) fn is_worker_of(id: u64) -> bool {
    current().is_some_and(|w| w.registry.id == id)
}

impl WorkerThread {
    /// The find-task loop of the crossbeam-deque docs: our own deque, then
    /// the oldest task of the inbox (one: see `registry` on why not a
    /// batch), then one task from each peer in turn
    /// (starting after ourselves, so peers are not all robbed in the same
    /// order), repeating while any source asked us to retry.
    pub(crate) fn find_task(&self) -> Option<JobRef> {
        if let Some(job) = self.local.pop() {
            return Some(job);
        }
        let r = &*self.registry;
        let n = r.stealers.len();
        std::iter::repeat_with(|| {
            r.inbox.steal().or_else(|| {
                (1..n)
                    .map(|k| r.stealers[(self.index + k) % n].steal())
                    .collect::<Steal<JobRef>>()
            })
        })
        .find(|s| !s.is_retry())
        .and_then(Steal::success)
    }

    /// Runs a job taken from a queue; or cancels it if the pool was shut
    /// down with `cancel_futures` (S5), or fails it if the pool is broken
    /// (T8).
    fn execute(&self, job: JobRef) {
        match self.registry.fate() {
            Fate::Run => as_innermost_task(&self.local, || job.run()),
            Fate::Cancel => {
                job.cancel();
            }
            Fate::Fail => job.fail(self.registry.refusal()),
        }
    }

    /// [`execute`](Self::execute) for a job the main loop found: with the
    /// deque empty, it is published as this worker's root while it runs, so
    /// that workers waiting for it may take what it pushes (see `roots`).
    fn execute_root(&self, job: JobRef) {
        if self.registry.fate() != Fate::Run || !self.local.is_empty() {
            return self.execute(job);
        }
        let job = job.into_arc();
        // Held until the root is withdrawn: the run may drop the last other
        // reference, and a task freed while still published could have its
        // address reused by a task that a waiter then mistakes for it.
        let keep = job.clone();
        let _published = Published::new(&self.registry.roots[self.index], keep.pool_view().addr());
        as_innermost_task(&self.local, || job.run());
    }

    /// The worker's main loop. Returns when the pool shuts down and no work
    /// is left.
    pub(crate) fn main_loop(self: Rc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        STACK_BASE.with(|b| b.set(stack_position()));
        STACK_FLOOR.with(|f| {
            f.set(super::stack::low_end().map_or(0, |low| low.saturating_add(STACK_RESERVE)))
        });
        #[cfg(not(cf_loom))]
        crate::future::core::presume_nested_submits_awaited();
        let sleep = &self.registry.sleep;
        // A busy worker goes from task to task without touching the shared
        // counters; it only counts as searching once its queues look empty,
        // and then looks once more before parking (see the sleep module).
        // Before parking, it watches the queues for a moment while that has
        // been paying off (see the spin module): a searching worker is one
        // a submitter need not wake.
        let mut searching = false;
        let mut idle = IdleSpin::new();
        loop {
            if let Some(job) = self.find_task() {
                if searching {
                    sleep.found_work(|| self.registry.has_work());
                    searching = false;
                    idle.idle_ended();
                }
                self.execute_root(job);
                continue;
            }
            if !searching {
                sleep.start_searching();
                searching = true;
                idle.idle_started();
                continue;
            }
            if self.registry.try_retire() {
                break;
            }
            if idle.spin(|| self.registry.has_work()) {
                continue;
            }
            sleep.sleep(self.index, || {
                self.registry.has_work() || self.registry.is_shutdown()
            });
        }
        sleep.stop_searching();
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// A root task published while it runs (see `roots`), withdrawn when this
/// is dropped, also on unwind.
struct Published<'a>(&'a super::roots::Root);

impl<'a> Published<'a> {
    fn new(root: &'a super::roots::Root, task: usize) -> Self {
        root.publish(task);
        Published(root)
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        self.0.publish(0);
    }
}

/// How many tasks a waiting worker may run nested on its stack, each on
/// top of a waiting one, before it just blocks: chains of tasks each
/// waiting on the next would otherwise overflow the stack and abort the
/// process. Fork-join nests as deep as its recursion, far less than this.
const MAX_NESTED_RUNS: usize = 128;

/// How much of its stack a waiting worker may fill before it stops running
/// tasks nested on it and just blocks: all of what a spawned thread gets
/// (2 MiB, or `RUST_MIN_STACK` as std reads it) but [`STACK_RESERVE`],
/// left for the last task run. A count of nested runs alone let tasks with
/// large frames (64 KiB of locals, 128 deep) overflow the stack, which
/// aborts the process (found by review). Past the budget the wait blocks:
/// on a one-worker pool, a task waiting on one queued behind it then waits
/// for ever, as in CPython.
static NESTING_STACK_BUDGET: once_cell::sync::Lazy<usize> = once_cell::sync::Lazy::new(|| {
    let size = std::env::var("RUST_MIN_STACK")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(2 << 20);
    size.saturating_sub(STACK_RESERVE)
});

/// The stack kept free for the task a waiting worker runs last (a whole
/// half, tried first, made chains that fit the stack hang; found by
/// review).
const STACK_RESERVE: usize = 256 << 10;

/// Where this thread's stack is now (it grows down on every target std
/// supports threads on but wasm, which has no threads here).
fn stack_position() -> usize {
    let here = 0u8;
    std::hint::black_box(&here) as *const u8 as usize
}

thread_local! {
    /// Tasks this thread runs while waiting, nested on its stack.
    static NESTED_RUNS: Cell<usize> = const { Cell::new(0) };
    /// [`stack_position`] where this worker's loop began.
    static STACK_BASE: Cell<usize> = const { Cell::new(0) };
    /// [`STACK_RESERVE`] above the low end of this worker's stack, where
    /// the thread library tells it (0: it does not; see `super::stack`).
    static STACK_FLOOR: Cell<usize> = const { Cell::new(0) };
    /// The length of this worker's deque when the innermost task on this
    /// thread started: what lies above it in the (LIFO) deque that task and
    /// the tasks it ran pushed, so it all descends from that task.
    static BOUNDARY: Cell<usize> = const { Cell::new(0) };
}

/// Runs `run` as the innermost task on this thread, with its own deque
/// boundary (see [`BOUNDARY`]).
fn as_innermost_task(local: &Worker<JobRef>, run: impl FnOnce()) {
    let _outer = Restore(&BOUNDARY, BOUNDARY.with(|b| b.replace(local.len())));
    run();
}

/// Runs a future's done-callbacks with a deque boundary of their own. On a
/// worker they run inside the task whose end completed the future, and
/// what that task left in the deque (subtasks it started and did not wait
/// for) is not theirs: a callback waiting on a task of the pool would
/// otherwise run those on top of itself, one of them perhaps waiting for
/// what the callback sends once its wait is over (found by review).
pub(crate) fn as_callbacks(run: impl FnOnce()) {
    // On a process pool's thread, callbacks see SIGPIPE as the program
    // set it (see `process::sigpipe`).
    #[cfg(unix)]
    let run = || crate::process::sigpipe::as_user_code(run);
    match current() {
        Some(w) => as_innermost_task(&w.local, run),
        None => run(),
    }
}

/// Sets a thread-local counter back to the value it had, when dropped
/// (also on unwind, which nothing a worker runs should let out).
struct Restore(&'static std::thread::LocalKey<Cell<usize>>, usize);

impl Drop for Restore {
    fn drop(&mut self) {
        self.0.with(|c| c.set(self.1));
    }
}

/// Called by a thread about to block on `core`. On a pool worker, it runs
/// on this thread, before the caller blocks, the work the waiting task
/// depends on (T10, PP20), and nothing else:
///
/// 1. the awaited task itself, if it is still queued in this worker's pool
///    (`run_here` runs it unless a worker takes it first). A task waiting
///    on a later task of a one-worker pool (CPython's deadlock) completes;
/// 2. then, while the awaited task runs elsewhere, tasks the waiting task
///    submitted itself (or the tasks it ran did), newest first: they are
///    in this worker's deque above the waiting task's [`BOUNDARY`]. A
///    fork-join task that spawned many subtasks works through them while
///    a thief runs the one it waits for;
/// 3. then, if the awaited task runs at the bottom of another worker's
///    stack, the tasks it pushed there, stolen from that worker's deque
///    (see `roots`): the thief of a fork-join branch gets help with it.
///
/// Steps 2 and 3 only when the awaited future is completed by the end of a
/// task of this pool (directly, through a user's executor, or as a `Pool`
/// result: the fork-join case they serve; see `Core::helps_in`). Waiting
/// on a user's `Promise`, a value fed from outside, or a task of another
/// pool is often how a task hands work to a subtask it started (a consumer
/// it feeds once the value arrives): run on top of it, that subtask would
/// wait for it forever.
/// The case left is a subtask that waits on its parent while the parent
/// waits on a task of the pool (or a subtask of the awaited task waiting
/// on the waiter): helping can then stack the two; CPython's plain
/// blocking would not (RELIABILITY.md, "Known issues").
///
/// It takes nothing else: not the inbox, not other workers' deques beyond
/// what the awaited task pushed. A task run here runs on top of the waiting one, on the same
/// stack, and cannot let the waiting one resume until it returns; an
/// unrelated task could be waiting for the very task under it (a pipeline
/// stage waiting on the stage below: a deadlock that plain blocking would
/// not have), and thousands of tasks waiting for one slow future would
/// stack up until the stack overflowed. With only dependencies and
/// descendants, the stack grows as deep as the program's own recursion.
/// The cost: a worker that finds none of that (its awaited task runs on
/// another worker, not at the bottom of its stack, and it has no subtasks
/// of its own left) blocks instead of taking other work.
///
/// With a deadline it stops starting tasks once the deadline has passed (a
/// task it started is not interrupted). Elsewhere than on a pool worker
/// it returns at once.
///
/// Returns true when it stopped only because the awaited task, running at
/// the bottom of another worker's stack, has pushed nothing more for now:
/// worth looking again later.
#[cfg_attr(cf_loom, allow(dead_code))]
pub(crate) fn help_while_waiting<T>(
    core: &Core<T>,
    deadline: Option<Instant>,
    run_here: &dyn Fn(InPlace),
) -> bool {
    let Some(w) = current() else { return false };
    let here = stack_position();
    if core.is_terminal() {
        return false;
    }
    let floor = match STACK_FLOOR.with(Cell::get) {
        // Where the thread library does not say where the stack ends: as
        // far below where the loop began as tasks run in place may go
        // (found by review: ending tasks in place had no limit there).
        0 => STACK_BASE
            .with(Cell::get)
            .saturating_sub(*NESTING_STACK_BUDGET),
        known => known,
    };
    // Ending a task in place runs its done-callbacks, not the task: they
    // get a quarter of the reserve a task run in place gets (found by
    // review: a wait deep in a task's recursion left the task queued,
    // behind a sweep this very thread held up).
    if here >= floor.saturating_sub(STACK_RESERVE / 4 * 3) {
        end_unrunnable(&w, core, deadline, run_here);
    }
    let stack_used = STACK_BASE.with(Cell::get).saturating_sub(here);
    if core.is_terminal()
        || NESTED_RUNS.with(Cell::get) >= MAX_NESTED_RUNS
        || stack_used > *NESTING_STACK_BUDGET
        || here < floor
    {
        return false;
    }
    let _nested = Restore(&NESTED_RUNS, NESTED_RUNS.with(|n| n.replace(n.get() + 1)));
    help(&w, core, deadline, run_here)
}

/// Ends the awaited task in place, without running it, if it is still
/// queued in a pool that no longer runs queued tasks. Only its callbacks
/// run here, so the nesting limits of tasks run in place do not apply
/// (found by review: a wait past those limits left the task queued,
/// behind a sweep this very thread held up).
fn end_unrunnable<T>(
    w: &WorkerThread,
    core: &Core<T>,
    deadline: Option<Instant>,
    run_here: &dyn Fn(InPlace),
) {
    // The fate first: one load, and a healthy pool (fork-join's every
    // wait) goes no further.
    let fate = w.registry.fate();
    if fate == Fate::Run
        || !core.is_queued_in(w.registry.id)
        || deadline.is_some_and(|d| Instant::now() >= d)
    {
        return;
    }
    match fate {
        Fate::Run => {}
        // Its queue entry fails it too, if a worker is left to take it: one
        // that waits for it, as here, does not take it (found by review: a
        // submit racing the break left its task to a worker waiting for
        // that very task).
        Fate::Fail => run_here(InPlace::Fail(w.registry.refusal())),
        // A cancelling shutdown's sweep would cancel it, but may be held up
        // by a callback waiting for this worker (found by review).
        Fate::Cancel => run_here(InPlace::Cancel),
    }
}

/// [`help_while_waiting`] once it knows it is on a worker.
fn help<T>(
    w: &WorkerThread,
    core: &Core<T>,
    deadline: Option<Instant>,
    run_here: &dyn Fn(InPlace),
) -> bool {
    let in_time = || deadline.is_none_or(|d| Instant::now() < d);
    if core.is_queued_in(w.registry.id) && w.registry.fate() == Fate::Run && in_time() {
        as_innermost_task(&w.local, || run_here(InPlace::Run));
    }
    if !core.helps_in(w.registry.id) {
        return false;
    }
    let boundary = BOUNDARY.with(Cell::get);
    while !core.is_terminal() && w.local.len() > boundary && in_time() {
        // Above the boundary the newest task is always one of ours: thieves
        // take from the other end, so whatever they took first was older.
        match w.local.pop() {
            Some(job) => w.execute(job),
            None => break,
        }
    }
    let r = &*w.registry;
    let target = core.addr();
    let Some(owner) =
        (0..r.roots.len()).find(|&i| i != w.index && r.roots[i].runs(target).is_some())
    else {
        return false;
    };
    while !core.is_terminal() && in_time() {
        let Some(generation) = r.roots[owner].runs(target) else {
            return false;
        };
        match r.stealers[owner].steal() {
            Steal::Success(job) if r.roots[owner].unchanged_since(generation) => w.execute(job),
            Steal::Success(job) => {
                r.requeue(job);
                return false;
            }
            Steal::Retry => continue,
            Steal::Empty => return !core.is_terminal() && in_time(),
        }
    }
    false
}
