//! Parking idle workers without lost wake-ups.
//!
//! Modelled on rayon-core's `sleep` module and tokio's idle tracking, cut
//! down to what this pool needs. Two counters in one atomic tell submitters
//! what the workers are doing:
//!
//! * **searching**: awake, holding no task, looking for one;
//! * **sleepy**: announced they are about to park (or are parked).
//!
//! A submitter pushes its task and then reads the counters. If a worker is
//! searching, that worker will find the task, so nobody is woken (this is
//! what keeps a burst of submits from waking every worker). Otherwise, if
//! someone is sleepy, one worker is woken.
//!
//! The lost wake-up this must rule out: a worker finds the queues empty,
//! a task is pushed, the submitter sees no sleeper, and the worker parks
//! forever. The handshake (a Dekker pattern, both sides `SeqCst`):
//!
//! ```text
//! worker                                 submitter
//! counters += SLEEPY        (SeqCst)     push task
//! re-check the queues                    fence(SeqCst)
//! lock; tokens? woken? else park         read counters   (SeqCst)
//!                                        if sleepy > 0: lock; wake one or
//!                                                       leave a token
//! ```
//!
//! Either the worker's re-check sees the task, or the submitter sees the
//! sleepy worker. The token covers the gap between announcing and actually
//! parking: a wake that finds nobody parked yet is left for the next worker
//! that is about to park, which then does not park.
//!
//! When a searching worker finds a task it stops searching; if it was the
//! last searcher and more tasks are queued, it wakes one more worker, so a
//! burst that nobody was woken for still spreads over the pool (tokio's
//! "transition from searching").
//! Parked workers wait on their own condition variable with no timeout:
//! an idle pool uses no CPU.

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering, lock};

const SEARCHING: usize = 1;
const SLEEPY: usize = 1 << 16;
const MASK: usize = SLEEPY - 1;

struct Parked {
    /// Wake-ups delivered before anyone parked (see the module docs).
    tokens: usize,
    asleep: Vec<bool>,
    woken: Vec<bool>,
}

/// The sleep state of one pool.
pub(crate) struct Sleep {
    counters: AtomicUsize,
    parked: Mutex<Parked>,
    conds: Vec<Condvar>,
}

impl Sleep {
    pub(crate) fn new(workers: usize) -> Self {
        Sleep {
            counters: AtomicUsize::new(0),
            parked: Mutex::new(Parked {
                tokens: 0,
                asleep: vec![false; workers],
                woken: vec![false; workers],
            }),
            conds: (0..workers).map(|_| Condvar::new()).collect(),
        }
    }

    /// A worker starts (or resumes) looking for work.
    pub(crate) fn start_searching(&self) {
        self.counters.fetch_add(SEARCHING, Ordering::SeqCst);
    }

    /// A searching worker found a task. If it was the last searcher and
    /// `more_work()` says tasks are still queued, another worker is woken to
    /// take them (see the module docs). Waking one only when there is work
    /// for it keeps a lone task from bouncing the whole pool awake.
    ///
    /// No task is lost by not waking: the check runs after this worker
    /// stopped counting as searching (`SeqCst`), so a task pushed after the
    /// check sees no searcher, and its submitter wakes someone itself.
    pub(crate) fn found_work(&self, more_work: impl FnOnce() -> bool) {
        let before = self.counters.fetch_sub(SEARCHING, Ordering::SeqCst);
        if before & MASK == 1 && before >= SLEEPY {
            crate::sync::fence_seqcst();
            if more_work() {
                self.wake_one();
            }
        }
    }

    /// A searching worker stops searching without having found a task.
    pub(crate) fn stop_searching(&self) {
        self.counters.fetch_sub(SEARCHING, Ordering::SeqCst);
    }

    /// Called after new work was pushed.
    pub(crate) fn new_work(&self) {
        crate::sync::fence_seqcst();
        let c = self.counters.load(Ordering::SeqCst);
        if c & MASK == 0 && c >= SLEEPY {
            self.wake_one();
        }
    }

    /// Parks worker `index` (which is searching and found nothing) until new
    /// work or a targeted wake arrives. `recheck` is evaluated after the
    /// announcement: if it finds work (or a reason to stay awake), the worker
    /// does not park. Returns with the worker searching again.
    pub(crate) fn sleep(&self, index: usize, recheck: impl Fn() -> bool) {
        self.counters
            .fetch_add(SLEEPY - SEARCHING, Ordering::SeqCst);
        crate::sync::fence_seqcst();
        if !recheck() {
            let mut p = lock(&self.parked);
            if p.woken[index] {
                p.woken[index] = false;
            } else if p.tokens > 0 {
                p.tokens -= 1;
            } else {
                p.asleep[index] = true;
                while !p.woken[index] {
                    p = crate::sync::wait(&self.conds[index], p);
                }
                p.asleep[index] = false;
                p.woken[index] = false;
            }
        }
        self.counters
            .fetch_sub(SLEEPY - SEARCHING, Ordering::SeqCst);
    }

    /// Wakes one parked worker, or leaves a token for one about to park.
    pub(crate) fn wake_one(&self) {
        let mut p = lock(&self.parked);
        if let Some(i) = (0..p.asleep.len()).find(|&i| p.asleep[i] && !p.woken[i]) {
            p.woken[i] = true;
            drop(p);
            self.conds[i].notify_one();
        } else if p.tokens < p.asleep.len() {
            p.tokens += 1;
        }
    }

    /// Wakes worker `index` specifically (its awaited future ended), or makes
    /// its next attempt to park return at once.
    pub(crate) fn wake_worker(&self, index: usize) {
        let mut p = lock(&self.parked);
        p.woken[index] = true;
        let asleep = p.asleep[index];
        drop(p);
        if asleep {
            self.conds[index].notify_one();
        }
    }

    /// Wakes every worker (shutdown).
    pub(crate) fn wake_all(&self) {
        let mut p = lock(&self.parked);
        for i in 0..p.woken.len() {
            p.woken[i] = true;
        }
        drop(p);
        for c in &self.conds {
            c.notify_one();
        }
    }

    /// Workers currently parked (for tests and `Debug`).
    pub(crate) fn parked(&self) -> usize {
        lock(&self.parked).asleep.iter().filter(|&&a| a).count()
    }
}

#[cfg(all(test, cf_loom))]
mod loom_tests {
    //! The park/notify handshake under every interleaving: a submit racing a
    //! worker going to sleep never loses the wake-up (loom reports a deadlock
    //! if a worker parks forever).

    use super::Sleep;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use loom::thread;
    use std::sync::Arc;

    /// A one-slot "queue" standing in for the deques.
    fn worker(sleep: &Sleep, index: usize, queue: &AtomicUsize) {
        sleep.start_searching();
        loop {
            let n = queue.load(Ordering::SeqCst);
            if n > 0
                && queue
                    .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                sleep.found_work(|| queue.load(Ordering::SeqCst) > 0);
                return;
            }
            sleep.sleep(index, || queue.load(Ordering::SeqCst) > 0);
        }
    }

    #[test]
    fn loom_submit_racing_sleep_never_loses_the_wakeup() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new(1));
            let queue = Arc::new(AtomicUsize::new(0));
            let (s2, q2) = (sleep.clone(), queue.clone());
            let w = thread::spawn(move || worker(&s2, 0, &q2));
            queue.fetch_add(1, Ordering::SeqCst);
            sleep.new_work();
            w.join().unwrap();
        });
    }

    #[test]
    fn loom_two_submits_two_workers_both_run() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let sleep = Arc::new(Sleep::new(2));
            let queue = Arc::new(AtomicUsize::new(0));
            let ws: Vec<_> = (0..2)
                .map(|i| {
                    let (s, q) = (sleep.clone(), queue.clone());
                    thread::spawn(move || worker(&s, i, &q))
                })
                .collect();
            for _ in 0..2 {
                queue.fetch_add(1, Ordering::SeqCst);
                sleep.new_work();
            }
            for w in ws {
                w.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_targeted_wake_reaches_a_worker_about_to_park() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new(1));
            let done = Arc::new(AtomicBool::new(false));
            let (s2, d2) = (sleep.clone(), done.clone());
            let w = thread::spawn(move || {
                s2.start_searching();
                while !d2.load(Ordering::SeqCst) {
                    s2.sleep(0, || d2.load(Ordering::SeqCst));
                }
                s2.stop_searching();
            });
            done.store(true, Ordering::SeqCst);
            sleep.wake_worker(0);
            w.join().unwrap();
        });
    }
}
