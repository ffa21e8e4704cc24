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
//! last searcher it wakes one more worker, so a burst that nobody was woken
//! for still spreads over the pool (tokio's "transition from searching").
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

    /// A searching worker found a task. If it was the last searcher, another
    /// worker is woken to look for more (see the module docs).
    pub(crate) fn found_work(&self) {
        let before = self.counters.fetch_sub(SEARCHING, Ordering::SeqCst);
        if before & MASK == 1 && before >= SLEEPY {
            self.wake_one();
        }
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
        self.counters.fetch_add(SLEEPY - SEARCHING, Ordering::SeqCst);
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
        self.counters.fetch_sub(SLEEPY - SEARCHING, Ordering::SeqCst);
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
