//! The shared state of one thread pool: its queues, its sleep state and its
//! lifecycle.
//!
//! Tasks from outside the pool go to the global [`Injector`], in FIFO order
//! (T9: external submissions start in submission order, give or take the
//! batches a worker steals). Tasks submitted from inside a task go to that
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
//! crossbeam-deque docs give: its own deque, then a batch from the
//! injector, then its peers (see [`Registry::find_task`]).
//!
//! Shutdown must not strand a task that a racing submit is pushing. The
//! `state` word holds a "shut down" bit and a count of submits in progress:
//! a submit first increments the count, then checks the bit, so a worker may
//! only exit once the bit is set, no submit is in progress and the queues are
//! empty, at which point no task can arrive any more.

use std::thread::JoinHandle;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::sleep::Sleep;
use crate::Error;
use crate::sync::{Arc, AtomicUsize, Condvar, Mutex, Ordering, lock};

/// A queued task: one word per queue slot (see `executor::thin`).
pub(crate) type JobRef = crate::executor::thin::ThinJob;

const SHUTDOWN: usize = 1;
const ONE_SUBMIT: usize = 2;

pub(crate) struct Registry {
    pub(crate) injector: Injector<JobRef>,
    pub(crate) stealers: Vec<Stealer<JobRef>>,
    pub(crate) sleep: Sleep,
    state: AtomicUsize,
    /// Why the pool is broken (an initializer panicked), if it is.
    broken: Mutex<Option<String>>,
    /// `broken.is_some()`, readable without the lock on every task.
    is_broken: std::sync::atomic::AtomicBool,
    /// Workers that have not exited yet.
    live: Mutex<usize>,
    exited: Condvar,
    pub(crate) handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Registry {
    /// A registry for `n` workers and the local deques they will own.
    pub(crate) fn new(n: usize) -> (Arc<Registry>, Vec<Worker<JobRef>>) {
        let locals: Vec<Worker<JobRef>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let registry = Arc::new(Registry {
            injector: Injector::new(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleep: Sleep::new(n),
            state: AtomicUsize::new(0),
            broken: Mutex::new(None),
            is_broken: std::sync::atomic::AtomicBool::new(false),
            live: Mutex::new(n),
            exited: Condvar::new(),
            handles: Mutex::new(Vec::with_capacity(n)),
        });
        (registry, locals)
    }

    /// Queues a job: on the current worker's own deque when called from a
    /// task of this pool, otherwise on the injector.
    pub(crate) fn inject(
        self: &Arc<Self>,
        job: JobRef,
        local: Option<&Worker<JobRef>>,
    ) -> Result<(), (JobRef, Error)> {
        let before = self.state.fetch_add(ONE_SUBMIT, Ordering::SeqCst);
        if before & SHUTDOWN != 0 {
            self.end_submit();
            return Err((job, self.refusal()));
        }
        match local {
            Some(w) => w.push(job),
            None => self.injector.push(job),
        }
        self.end_submit();
        self.sleep.new_work();
        Ok(())
    }

    /// Ends a submit. While submits are in progress after shutdown, idle
    /// workers cannot tell whether a task is still coming, so they park; the
    /// last submit out wakes them all to re-check.
    fn end_submit(&self) {
        let before = self.state.fetch_sub(ONE_SUBMIT, Ordering::SeqCst);
        if before == SHUTDOWN | ONE_SUBMIT {
            self.sleep.wake_all();
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
        self.is_broken.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.state.load(Ordering::SeqCst) & SHUTDOWN != 0
    }

    /// Whether any queue holds a task.
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Whether a worker with nothing to do may exit: shut down, no submit in
    /// progress, and no task anywhere.
    pub(crate) fn terminating(&self) -> bool {
        self.state.load(Ordering::SeqCst) == SHUTDOWN && !self.has_work()
    }

    /// Steals one task from the injector or any worker's deque (used by
    /// shutdown to cancel, where there is no local deque to steal into).
    fn steal_any(&self) -> Option<JobRef> {
        loop {
            let mut retry = false;
            for s in std::iter::once(self.injector.steal())
                .chain(self.stealers.iter().map(Stealer::steal))
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
        self.state.fetch_or(SHUTDOWN, Ordering::SeqCst);
        if cancel_futures {
            while let Some(job) = self.steal_any() {
                job.cancel();
            }
        }
        self.sleep.wake_all();
    }

    /// Marks the pool broken (T8): refuses later submits, and workers fail
    /// every queued task with the reason instead of running it.
    pub(crate) fn mark_broken(&self, reason: String) {
        lock(&self.broken).get_or_insert(reason);
        self.is_broken
            .store(true, std::sync::atomic::Ordering::Release);
        self.state.fetch_or(SHUTDOWN, Ordering::SeqCst);
        let error = self.refusal();
        while let Some(job) = self.steal_any() {
            job.fail(error.clone());
        }
        self.sleep.wake_all();
    }

    pub(crate) fn worker_exited(&self) {
        let mut live = lock(&self.live);
        *live -= 1;
        drop(live);
        self.exited.notify_all();
    }

    /// Blocks until at most `allowed` workers are alive (1 when the caller is
    /// itself a worker of this pool, which cannot wait for its own exit).
    pub(crate) fn wait_for_exit(&self, allowed: usize) {
        let mut live = lock(&self.live);
        while *live > allowed {
            live = crate::sync::wait(&self.exited, live);
        }
    }

    pub(crate) fn live_workers(&self) -> usize {
        *lock(&self.live)
    }
}

#[cfg(all(test, cf_loom))]
mod loom_tests {
    //! Shutdown racing a submit: a worker may only see "terminating" when no
    //! accepted task can still arrive.

    use super::Registry;
    use crate::executor::ClosureTask;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;
    use std::sync::Arc;

    #[test]
    fn loom_shutdown_racing_submit_never_strands_an_accepted_task() {
        loom::model(|| {
            let (registry, _locals) = Registry::new(1);
            let exited = Arc::new(AtomicBool::new(false));
            let (r1, r2) = (registry.clone(), registry.clone());
            let submitter = thread::spawn(move || {
                let (job, _fut) = ClosureTask::create(|| 1u8);
                r1.inject(job.into_thin(), None).is_ok()
            });
            let stopper = thread::spawn(move || r2.shutdown(false));
            let e2 = exited.clone();
            let r3 = registry.clone();
            let worker = thread::spawn(move || {
                if r3.terminating() {
                    e2.store(true, Ordering::SeqCst);
                }
            });
            let accepted = submitter.join().unwrap();
            stopper.join().unwrap();
            worker.join().unwrap();
            let stranded = accepted && exited.load(Ordering::SeqCst) && registry.has_work();
            assert!(
                !stranded,
                "a worker exited while an accepted task was queued"
            );
        });
    }

    /// An idle worker that sees no work and no "terminating" parks; a
    /// submit racing shutdown must not leave it parked forever (loom
    /// reports the deadlock if it does).
    #[test]
    fn loom_idle_worker_parked_during_a_racing_submit_is_woken_to_exit() {
        loom::model(|| {
            let (registry, _locals) = Registry::new(1);
            let (r1, r2, r3) = (registry.clone(), registry.clone(), registry.clone());
            // Created before any thread starts: the deque hands it over with
            // std atomics, which loom cannot see, so its creation must
            // happen-before every thread by construction.
            let (job, _fut) = ClosureTask::create(|| 1u8);
            let job = job.into_thin();
            let worker = thread::spawn(move || {
                let sleep = &r3.sleep;
                loop {
                    if let Some(job) = r3.steal_any() {
                        job.cancel();
                        continue;
                    }
                    if r3.terminating() {
                        return;
                    }
                    sleep.start_searching();
                    sleep.sleep(0, || r3.has_work() || r3.terminating());
                    sleep.stop_searching();
                }
            });
            let submitter = thread::spawn(move || {
                let _ = r1.inject(job, None);
            });
            r2.shutdown(false);
            submitter.join().unwrap();
            worker.join().unwrap();
        });
    }
}
