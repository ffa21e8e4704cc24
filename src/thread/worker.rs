//! A worker thread: its loop, and helping while a task waits (fork-join).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use crossbeam_deque::{Steal, Worker};

use super::registry::{JobRef, Registry};
use crate::future::core::{Core, Ending, Watcher};
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
pub(crate) fn current() -> Option<Rc<WorkerThread>> {
    CURRENT.with(|c| c.borrow().clone())
}

impl WorkerThread {
    /// The find-task loop of the crossbeam-deque docs: our own deque, then a
    /// batch from the inbox, then one task from each peer in turn
    /// (starting after ourselves, so peers are not all robbed in the same
    /// order), repeating while any source asked us to retry.
    pub(crate) fn find_task(&self) -> Option<JobRef> {
        if let Some(job) = self.local.pop() {
            return Some(job);
        }
        let r = &*self.registry;
        let n = r.stealers.len();
        std::iter::repeat_with(|| {
            r.inbox.steal_batch_and_pop(&self.local).or_else(|| {
                (1..n)
                    .map(|k| r.stealers[(self.index + k) % n].steal())
                    .collect::<Steal<JobRef>>()
            })
        })
        .find(|s| !s.is_retry())
        .and_then(Steal::success)
    }

    /// Runs a job, or fails it if the pool is broken (T8).
    fn execute(&self, job: JobRef) {
        if self.registry.is_broken() {
            job.fail(self.registry.refusal());
        } else {
            job.run();
        }
    }

    /// The worker's main loop. Returns when the pool shuts down and no work
    /// is left.
    pub(crate) fn main_loop(self: Rc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
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
                self.execute(job);
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

/// Wakes a parked worker when the future it waits on ends.
#[cfg_attr(cf_loom, allow(dead_code))]
struct WakeWorker {
    registry: Arc<Registry>,
    index: usize,
}

impl Watcher for WakeWorker {
    fn notify(&self, _key: usize, _ending: Ending) {
        self.registry.sleep.wake_worker(self.index);
    }
}

/// How many tasks a worker may stack up by helping while it waits, before
/// it helps only with its own deque (see [`help_while_waiting`]).
pub(crate) const MAX_HELP_DEPTH: usize = 128;

thread_local! {
    /// Calls of [`help_while_waiting`] under way on this thread: each one
    /// runs its tasks on top of the task that waits.
    static HELP_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One level of [`HELP_DEPTH`], given back when dropped (also on unwind).
struct Helping;

impl Helping {
    fn enter() -> (Helping, usize) {
        let depth = HELP_DEPTH.with(|d| d.replace(d.get() + 1));
        (Helping, depth)
    }
}

impl Drop for Helping {
    fn drop(&mut self) {
        HELP_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Called by a thread about to block on `core`. On a pool worker, runs queued
/// tasks of its pool until `core` ends (T10, PP20): with no deadline it parks
/// between tasks and is woken by new work or by `core` ending; with a
/// deadline it helps while there is work and then leaves the timed wait to
/// the caller. Elsewhere it returns at once.
///
/// A task run here runs on top of the waiting one, on the same stack, and
/// may wait and help in turn. Left alone, tasks that all wait for one slow
/// future (a shared initialisation) would stack up thousands deep and
/// overflow the worker's stack. So past [`MAX_HELP_DEPTH`] nested waits a
/// worker takes only tasks from its own deque, newest first: those are
/// what the waiting tasks on this stack submitted themselves, so the stack
/// then grows only as deep as the program's own recursion, as it would
/// without a pool.
#[cfg_attr(cf_loom, allow(dead_code))]
pub(crate) fn help_while_waiting<T>(core: &Core<T>, deadline: Option<Instant>) {
    let Some(w) = current() else { return };
    let (_level, depth) = Helping::enter();
    if depth >= MAX_HELP_DEPTH {
        while !core.is_terminal() && deadline.is_none_or(|d| Instant::now() < d) {
            match w.local.pop() {
                Some(job) => w.execute(job),
                None => return,
            }
        }
        return;
    }
    if deadline.is_some() {
        while !core.is_terminal() && deadline.is_some_and(|d| Instant::now() < d) {
            match w.find_task() {
                Some(job) => w.execute(job),
                None => return,
            }
        }
        return;
    }
    let watcher: Arc<dyn Watcher> = Arc::new(WakeWorker {
        registry: w.registry.clone(),
        index: w.index,
    });
    if core.watch(&watcher, 0).is_some() {
        return;
    }
    let sleep = &w.registry.sleep;
    while !core.is_terminal() {
        if let Some(job) = w.find_task() {
            w.execute(job);
            continue;
        }
        sleep.start_searching();
        sleep.sleep(w.index, || core.is_terminal() || w.registry.has_work());
        sleep.found_work(|| w.registry.has_work());
    }
    core.unwatch(&watcher);
}
