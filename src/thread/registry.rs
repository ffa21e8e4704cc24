//! The shared state of one thread pool: its queues, its sleep state and its
//! lifecycle.
//!
//! Tasks from outside the pool go to the pool's [`Inbox`], in FIFO order,
//! and workers take them one at a time (T9: external submissions start in
//! submission order). Taking a batch into a worker's own deque would set
//! the rest of the batch aside behind a task that may block: three tasks
//! A, B, C, where A and C wait for B, then started A and C on two workers
//! while B sat unstarted behind A, where CPython starts A and B. Tasks
//! submitted from inside a task go to that
//! worker's own deque, where they are cheap to push and pop and where idle
//! workers steal them, oldest first.
//!
//! The owner pops its own deque newest first (LIFO), as rayon does. That is
//! what bounds the stack in fork-join code: a task waiting on the subtask it
//! just submitted pops exactly that subtask and runs it inline. With FIFO
//! popping, the waiting worker would run the *oldest* queued subtask, which
//! waits in turn, and so on, one stack frame per level across the whole
//! recursion: recursive `fib(38)` (cutoff 20) overflowed a worker's stack
//! that way. A worker looks for work in the order the
//! crossbeam-deque docs give: its own deque, then the inbox, then its
//! peers (see `WorkerThread::find_task`).
//!
//! Shutdown must not strand a task that a racing submit is pushing, and the
//! submit path must not write to anything the workers read, or every submit
//! pays a cache-line transfer (issue 4: two read-modify-writes of a shared
//! counter were a tenth of a 200k-task stream). So a submit only *reads* the
//! shut-down flag, before and after its push, and the two sides meet in a
//! Dekker handshake (both with `SeqCst` fences):
//!
//! ```text
//! submitter                          retiring worker
//! if shut down: refuse               sees shut down
//! push task                          fence(SeqCst)
//! fence(SeqCst)                      lock live; queues empty?
//! shut down now? ──no──▶ done          yes: live -= 1, exit
//!      │yes
//!      ▼
//! lock live; live > 0? ──yes──▶ wake them all: a worker still alive
//!      │no                      rechecks the queues under the lock
//!      ▼                        before it may exit, so it runs the task
//! nobody is left: fail what the queues still hold
//! ```
//!
//! If the submitter's second look finds the pool still running, every
//! worker that retires later sees the task. If it finds it shut down, the
//! `live` lock orders it against each retirement: either some worker is
//! still alive and will see the task, or all are gone and the submitter
//! fails the task itself (its future ends with the shutdown error, as a
//! refused submit's does). Only the last case ever touches the task again,
//! and only tasks that raced shutdown can be in the queues by then.
//!
//! `shutdown(cancel_futures = true)` adds one more case: a task pushed
//! after its sweep cancelled the queues, by a submit that had looked
//! before the shutdown, was accepted before the shutdown and must end
//! cancelled, not run. Such a submit sees the shutdown on its second look
//! and sweeps again; and a worker cancels, instead of running, any task it
//! takes from a queue once the pool cancels queued work ([`Fate`]), which
//! also covers a task a worker took just before the sweeps looked.

use crossbeam_deque::{Steal, Stealer, Worker};
use crossbeam_utils::CachePadded;

use super::inbox::Inbox;
use super::sleep::Sleep;
use crate::Error;
use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering, fence_seqcst, lock};

/// A queued task: one word per queue slot (see `executor::thin`).
pub(crate) type JobRef = crate::executor::thin::ThinJob;

/// What a worker does with a task it takes from a queue, by how far the
/// pool has stopped; ordered, since it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Fate {
    /// Runs it.
    Run = 0,
    /// Cancels it: the pool was shut down with `cancel_futures` (S5).
    Cancel = 1,
    /// Fails it with the reason: the pool is broken (T8).
    Fail = 2,
}

/// Ids for [`Registry::id`]; 0 means "no pool" in a task's status.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) struct Registry {
    /// This pool's id, unique in the process: a queued task records it, so
    /// that a worker waiting for the task knows it may run it itself.
    pub(crate) id: u64,
    pub(crate) inbox: Inbox,
    pub(crate) stealers: Vec<Stealer<JobRef>>,
    /// What each worker runs at the bottom of its stack (see `roots`).
    pub(crate) roots: super::roots::Roots,
    pub(crate) sleep: Sleep,
    /// Set once, by shutdown or `mark_broken`; never cleared. Read twice by
    /// every submit: kept off the lines that others write.
    shut_down: CachePadded<AtomicBool>,
    /// Why the pool is broken (an initializer panicked), if it is.
    broken: Mutex<Option<String>>,
    /// What a worker does with a task it takes from a queue (a [`Fate`]),
    /// read without a lock on every task. Only ever raised.
    fate: std::sync::atomic::AtomicU8,
    /// Workers that have not retired yet (see the module docs), and the
    /// threads sweeping the queues.
    live: Mutex<Live>,
    /// Workers blocked in `shutdown(wait = true)` of this very pool, from
    /// a task: each waits for every worker but these (see
    /// [`Registry::wait_for_exit`]). Changed only under the `live` lock.
    waiting_in_shutdown: std::sync::atomic::AtomicUsize,
    exited: Condvar,
    /// The worker threads, joined by `shutdown(wait = true)`.
    pub(crate) joins: super::joins::Joins,
}

/// A new id for an executor whose tasks record it (see
/// `Executor::__thread_pool_id`): unique in the process, never 0.
pub(crate) fn new_executor_id() -> u64 {
    std::iter::repeat_with(|| NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        .find(|&id| crate::future::core::pool_id_fits(id))
        .expect("an endless supply of ids")
}

impl Registry {
    /// A registry for `n` workers and the local deques they will own.
    pub(crate) fn new(n: usize) -> (Arc<Registry>, Vec<Worker<JobRef>>) {
        let locals: Vec<Worker<JobRef>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let registry = Arc::new(Registry {
            id: new_executor_id(),
            inbox: Inbox::new(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            roots: (0..n).map(|_| Default::default()).collect(),
            sleep: Sleep::new(n),
            shut_down: CachePadded::new(AtomicBool::new(false)),
            broken: Mutex::new(None),
            fate: std::sync::atomic::AtomicU8::new(Fate::Run as u8),
            live: Mutex::new(Live {
                workers: n,
                sweepers: Vec::new(),
                raced_sweepers: Vec::new(),
            }),
            waiting_in_shutdown: std::sync::atomic::AtomicUsize::new(0),
            exited: Condvar::new(),
            joins: Default::default(),
        });
        (registry, locals)
    }

    /// Queues a job: on the current worker's own deque when called from a
    /// task of this pool, otherwise in the inbox. Refused once the pool is
    /// shut down; a push that races shutdown is settled as the module docs
    /// describe.
    pub(crate) fn inject(
        self: &Arc<Self>,
        job: JobRef,
        local: Option<&Worker<JobRef>>,
    ) -> Result<(), (JobRef, Error)> {
        if self.is_shutdown() {
            return Err((job, self.refusal()));
        }
        let external = local.is_none();
        match local {
            // A running worker cannot retire while its own deque holds a
            // task; a push that races the pool breaking is failed below.
            Some(w) => w.push(job),
            None => self.inbox.push(job),
        }
        // One fence for both handshakes that follow: the shutdown re-check
        // (module docs) and the sleep counters (sleep module).
        fence_seqcst();
        if self.is_shutdown() {
            match self.fate() {
                Fate::Cancel => self.cancel_queued(),
                // A push to a task's own deque: the break's sweep may have
                // passed it already, and the waiting task cannot run a task
                // the pool fails (T10): left there, it waited for ever
                // (found by review). Only this deque, this worker's own
                // charge: failing every queued task here (a first version)
                // also ran other submitters' callbacks in this `submit`,
                // and from an outside submitter, unseen by shutdown's wait
                // for sweepers, let `shutdown(wait = true)` return before
                // they had run (found by review of that fix). An outside
                // push goes to the inbox, settled below.
                Fate::Fail => {
                    if let Some(own) = local {
                        let error = self.refusal();
                        while let Some(job) = own.pop() {
                            job.fail(error.clone());
                        }
                    }
                }
                Fate::Run => {}
            }
            if external {
                self.settle_raced_submit();
                return Ok(());
            }
        }
        self.sleep.new_work_fenced();
        Ok(())
    }

    /// Puts back in the inbox a task a waiting worker stole and may not
    /// run (see `roots`). It was accepted before, so a shutdown does not
    /// refuse it; the worker putting it back is alive, so it cannot be
    /// stranded.
    pub(crate) fn requeue(&self, job: JobRef) {
        self.inbox.push(job);
        fence_seqcst();
        self.sleep.new_work_fenced();
    }

    /// A submit pushed its task and then saw the pool shut down: make sure
    /// someone ends the task before the submit returns. With no worker
    /// left, it fails what is queued. Another raced submit doing the same
    /// may have taken its task meanwhile, so it then waits until no such
    /// sweep is left (`Live::raced_sweepers`): a future `submit` returned
    /// after `shutdown(wait = true)` returned was still pending (found by
    /// review). Not for the sweeps of a `cancel_futures` shutdown, whose
    /// callbacks may wait for this very submitter (a deadlock, found by
    /// review of the first fix); their tasks are cancelled before that
    /// shutdown returns. A thread whose own sweep runs this (a callback
    /// submitting) does not wait for itself.
    #[cold]
    fn settle_raced_submit(&self) {
        let me = crate::sync::current_thread_id();
        let mut live = lock(&self.live);
        if live.workers > 0 {
            drop(live);
            self.sleep.wake_all();
            return;
        }
        let nested = live.raced_sweepers.contains(&me);
        live.raced_sweepers.push(me);
        drop(live);
        {
            let _done = RacedSweep(self);
            self.fail_queued();
        }
        if nested {
            return;
        }
        let mut live = lock(&self.live);
        while !live.raced_sweepers.is_empty() {
            live = crate::sync::wait(&self.exited, live);
        }
    }

    /// Fails every queued task with the refusal error (nothing will run
    /// them: the pool is broken, or every worker has gone).
    fn fail_queued(&self) {
        let error = self.refusal();
        while let Some(job) = self.steal_any() {
            job.fail(error.clone());
        }
    }

    /// The error a refused submit gets: broken beats shut down.
    pub(crate) fn refusal(&self) -> Error {
        match lock(&self.broken).as_ref() {
            Some(reason) => Error::Broken {
                executor: "thread pool",
                reason: reason.clone(),
            },
            None => Error::Shutdown,
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.fate() == Fate::Fail
    }

    /// What a worker does with a task it takes from a queue now.
    pub(crate) fn fate(&self) -> Fate {
        match self.fate.load(std::sync::atomic::Ordering::Acquire) {
            0 => Fate::Run,
            1 => Fate::Cancel,
            _ => Fate::Fail,
        }
    }

    fn raise_fate(&self, fate: Fate) {
        self.fate
            .fetch_max(fate as u8, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// Whether any queue holds a task.
    pub(crate) fn has_work(&self) -> bool {
        !self.inbox.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Called by a worker with nothing to do: if the pool is shut down and
    /// no task is left anywhere, counts the worker out (it must exit now,
    /// and must not call [`worker_exited`](Self::worker_exited)) and
    /// returns true. The check and the count happen under the `live` lock;
    /// see the module docs for why.
    pub(crate) fn try_retire(&self) -> bool {
        if !self.is_shutdown() {
            return false;
        }
        fence_seqcst();
        let mut live = lock(&self.live);
        if self.has_work() {
            return false;
        }
        // Marked before the count drops, under the lock: whoever sees the
        // count sees the mark (see `joins`).
        self.joins.retire();
        live.workers -= 1;
        drop(live);
        self.exited.notify_all();
        true
    }

    /// Steals one task from the inbox or any worker's deque (used by
    /// shutdown to cancel, where there is no local deque to steal into).
    fn steal_any(&self) -> Option<JobRef> {
        loop {
            let mut retry = false;
            for s in
                std::iter::once(self.inbox.steal()).chain(self.stealers.iter().map(Stealer::steal))
            {
                match s {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    /// Sets the shutdown bit; with `cancel_futures`, cancels every queued
    /// task (S5). Wakes every worker so idle ones can exit.
    pub(crate) fn shutdown(&self, cancel_futures: bool) {
        if cancel_futures {
            // Before the flag: a submit that sees the pool shut down sees
            // this too (see the module docs).
            self.raise_fate(Fate::Cancel);
        }
        self.shut_down.store(true, Ordering::SeqCst);
        if cancel_futures {
            // The sweep's half of the handshake with a racing submit
            // (module docs): flag, fence, then look at the queues. Either
            // the sweep sees the task, or the submit sees the flag and
            // sweeps itself.
            fence_seqcst();
            self.cancel_queued();
        }
        self.sleep.wake_all();
    }

    /// Cancels every task the queues hold (S5). A thread that is not one
    /// of the workers counts as a sweeper meanwhile (see `Live::sweepers`),
    /// and as the pool's own: a callback run here that shuts the pool down
    /// and waits must not wait for the sweep it is part of.
    fn cancel_queued(&self) {
        let own =
            self.sweeping() || super::worker::current().is_some_and(|w| w.registry.id == self.id);
        let _sweep = (!own).then(|| Sweep::enter(self));
        while let Some(job) = self.steal_any() {
            job.cancel();
        }
    }

    /// Whether the calling thread is one of this pool's own: a worker, or
    /// a thread cancelling its queued tasks.
    pub(crate) fn is_own_thread(&self, on_worker: bool) -> bool {
        on_worker || self.sweeping()
    }

    /// Whether the calling thread is cancelling this pool's queued tasks.
    fn sweeping(&self) -> bool {
        lock(&self.live)
            .sweepers
            .contains(&crate::sync::current_thread_id())
    }

    /// Marks the pool broken (T8): refuses later submits, and workers fail
    /// every queued task with the reason instead of running it.
    pub(crate) fn mark_broken(&self, reason: String) {
        lock(&self.broken).get_or_insert(reason);
        self.raise_fate(Fate::Fail);
        self.shut_down.store(true, Ordering::SeqCst);
        // The queued tasks are failed by the workers' loops, as the pool's
        // own threads: failed here, on a worker not yet in its loop, a
        // done-callback calling `shutdown(wait = true)` waited for its own
        // thread (found by review).
        self.sleep.wake_all();
    }

    /// Counts out a worker that exits without retiring (it never started,
    /// or its thread is unwinding).
    pub(crate) fn worker_exited(&self) {
        let mut live = lock(&self.live);
        live.workers -= 1;
        drop(live);
        self.exited.notify_all();
    }

    /// Blocks until every worker has exited and no thread is still
    /// cancelling queued tasks (see `Live::sweepers`). Gives up at `deadline`
    /// (`None`: never); returns whether that happened.
    ///
    /// One of the pool's `own` threads (a worker whose task calls
    /// `shutdown(wait = true)`, or a sweeping thread whose callback does)
    /// cannot wait for itself: it waits for everything but the own threads
    /// blocked here the same way, and two such must not wait for each
    /// other. Any other thread waits for everything, those included: their
    /// work goes on once their wait returns.
    pub(crate) fn wait_for_exit(&self, own: bool, deadline: Option<std::time::Instant>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut live = lock(&self.live);
        if own {
            self.waiting_in_shutdown.fetch_add(1, Relaxed);
            self.exited.notify_all();
        }
        let exited = loop {
            let others = live.workers + live.sweepers.len();
            let allowed = if own {
                self.waiting_in_shutdown.load(Relaxed)
            } else {
                0
            };
            if others <= allowed {
                break true;
            }
            match crate::sync::wait_deadline(&self.exited, live, deadline) {
                Ok(g) => live = g,
                Err(g) => {
                    live = g;
                    break false;
                }
            }
        };
        if own {
            self.waiting_in_shutdown.fetch_sub(1, Relaxed);
        }
        drop(live);
        exited
    }

    pub(crate) fn live_workers(&self) -> usize {
        lock(&self.live).workers
    }
}

/// What the registry's `live` lock guards: `shutdown(wait = true)` waits
/// on it for both to empty (see [`Registry::wait_for_exit`]).
struct Live {
    /// Workers that have not retired yet.
    workers: usize,
    /// Threads other than the workers cancelling queued tasks (a
    /// `shutdown(cancel_futures = true)`): `shutdown(wait = true)` waits
    /// for them as for workers, since the callbacks of what they took from
    /// the queues run there; and such a thread is the pool's own while it
    /// sweeps (see [`Registry::is_own_thread`]). A list, not a
    /// thread-local, so that one thread can sweep several pools nested in
    /// each other's callbacks.
    sweepers: Vec<crate::sync::ThreadId>,
    /// The threads whose submit raced shutdown failing what is queued
    /// (see `Registry::settle_raced_submit`), once per sweep.
    raced_sweepers: Vec<crate::sync::ThreadId>,
}

/// Ends one raced submit's sweep (see `Live::raced_sweepers`) when dropped,
/// even by an unwinding task drop.
struct RacedSweep<'a>(&'a Registry);

impl Drop for RacedSweep<'_> {
    fn drop(&mut self) {
        let me = crate::sync::current_thread_id();
        let mut live = lock(&self.0.live);
        if let Some(i) = live.raced_sweepers.iter().rposition(|&t| t == me) {
            live.raced_sweepers.swap_remove(i);
        }
        drop(live);
        self.0.exited.notify_all();
    }
}

/// The calling thread counted among the sweepers (see `Live::sweepers`)
/// until dropped, even by an unwinding task drop.
struct Sweep<'a>(&'a Registry);

impl<'a> Sweep<'a> {
    fn enter(registry: &'a Registry) -> Sweep<'a> {
        lock(&registry.live)
            .sweepers
            .push(crate::sync::current_thread_id());
        Sweep(registry)
    }
}

impl Drop for Sweep<'_> {
    fn drop(&mut self) {
        let me = crate::sync::current_thread_id();
        let mut live = lock(&self.0.live);
        if let Some(i) = live.sweepers.iter().position(|&t| t == me) {
            live.sweepers.swap_remove(i);
        }
        drop(live);
        self.0.exited.notify_all();
    }
}

#[cfg(all(test, cf_loom))]
#[path = "registry_loom_tests.rs"]
mod loom_tests;
