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
//! A wake-up is also an accounting step: [`Sleep::wake_one`] moves the
//! worker it wakes from sleepy to searching itself, before that worker has
//! even been scheduled (tokio's "transition from idle"). Otherwise every
//! submit made while the woken worker waits for a CPU would still see "no
//! searcher, someone sleepy" and take the lock to wake somebody again: on
//! 2 cores, where the woken worker often waits behind the submitter, that
//! was up to 34k pointless wake-ups (and lock round trips) in a 200k-task
//! stream.
//!
//! When a searching worker finds a task it stops searching; if it was the
//! last searcher and more tasks are queued, it wakes one more worker, so a
//! burst that nobody was woken for still spreads over the pool (tokio's
//! "transition from searching").
//! Parked workers wait on their own condition variable with no timeout:
//! an idle pool uses no CPU.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering, lock};

const SEARCHING: usize = 1;
const SLEEPY: usize = 1 << 16;
const MASK: usize = SLEEPY - 1;

/// Why a parked (or about-to-park) worker is to wake up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    None,
    /// Woken for a reason of its own (shutdown):
    /// it still counts as sleepy and takes itself off that count.
    Targeted,
    /// Woken by [`Sleep::wake_one`] for new work, which already moved it
    /// from sleepy to searching on its behalf.
    Transferred,
}

struct Parked {
    /// Wake-ups delivered to a worker that had announced itself sleepy but
    /// not yet parked. Each one already moved one worker from sleepy to
    /// searching; the next worker to reach the lock takes it and goes on
    /// searching instead of parking.
    tokens: usize,
    asleep: Vec<bool>,
    wake: Vec<Wake>,
}

/// The sleep state of one pool.
pub(crate) struct Sleep {
    /// Written by workers whenever they start or stop searching and read
    /// by every submit, so it gets a cache line to itself.
    counters: CachePadded<AtomicUsize>,
    parked: Mutex<Parked>,
    conds: Vec<Condvar>,
}

impl Sleep {
    pub(crate) fn new(workers: usize) -> Self {
        Sleep {
            counters: CachePadded::new(AtomicUsize::new(0)),
            parked: Mutex::new(Parked {
                tokens: 0,
                asleep: vec![false; workers],
                wake: vec![Wake::None; workers],
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

    /// Called after new work was pushed (the loom models' submit; the pool
    /// itself uses [`new_work_fenced`](Self::new_work_fenced)).
    #[cfg(test)]
    pub(crate) fn new_work(&self) {
        crate::sync::fence_seqcst();
        self.new_work_fenced();
    }

    /// `new_work` (the loom models' submit) for a caller that has issued a `SeqCst`
    /// fence since its push (a submit shares one fence between this
    /// handshake and its shutdown check: a fence drains the store buffer,
    /// which the task's freshly written allocation fills).
    pub(crate) fn new_work_fenced(&self) {
        let c = self.counters.load(Ordering::SeqCst);
        if c & MASK == 0 && c >= SLEEPY {
            self.wake_one();
        }
    }

    /// Parks worker `index` (which is searching and found nothing) until new
    /// work or a targeted wake arrives. `recheck` is evaluated after the
    /// announcement: if it finds work (or a reason to stay awake), the worker
    /// does not park. Returns with the worker searching again.
    ///
    /// Every way out goes through the `parked` lock, and a worker that
    /// leaves on its own account takes itself off the sleepy count before
    /// releasing it: so, under the lock, the sleepy count is exactly the
    /// workers nobody has woken yet, which is what [`wake_one`] hands out.
    ///
    /// [`wake_one`]: Sleep::wake_one
    pub(crate) fn sleep(&self, index: usize, recheck: impl Fn() -> bool) {
        self.counters
            .fetch_add(SLEEPY - SEARCHING, Ordering::SeqCst);
        crate::sync::fence_seqcst();
        let mut p = lock(&self.parked);
        if p.tokens > 0 {
            // A waker already counted us as searching.
            p.tokens -= 1;
            return;
        }
        let transferred = if p.wake[index] != Wake::None || recheck() {
            // Stays awake on its own account (a targeted wake is consumed
            // here, so it cannot make a later sleep return at once).
            p.wake[index] = Wake::None;
            false
        } else {
            p.asleep[index] = true;
            while p.wake[index] == Wake::None {
                p = crate::sync::wait(&self.conds[index], p);
            }
            p.asleep[index] = false;
            std::mem::replace(&mut p.wake[index], Wake::None) == Wake::Transferred
        };
        if !transferred {
            self.counters
                .fetch_sub(SLEEPY - SEARCHING, Ordering::SeqCst);
        }
        drop(p);
    }

    /// Wakes one worker for new work: a parked one, or one that announced
    /// it is about to park (it gets a token instead). Either way the worker
    /// is moved from sleepy to searching right here, so the submits that
    /// follow see a searcher and do not wake anyone else while it is on its
    /// way (tokio's "transition from idle"). Does nothing if no worker is
    /// left that nobody has woken.
    pub(crate) fn wake_one(&self) {
        let mut p = lock(&self.parked);
        if self.counters.load(Ordering::SeqCst) < SLEEPY {
            return;
        }
        self.counters
            .fetch_add(SEARCHING.wrapping_sub(SLEEPY), Ordering::SeqCst);
        let parked = (0..p.asleep.len()).find(|&i| p.asleep[i] && p.wake[i] != Wake::Transferred);
        match parked {
            Some(i) => {
                p.wake[i] = Wake::Transferred;
                drop(p);
                self.conds[i].notify_one();
            }
            None => p.tokens += 1,
        }
    }

    /// Wakes every worker (shutdown).
    pub(crate) fn wake_all(&self) {
        let mut p = lock(&self.parked);
        for w in p.wake.iter_mut() {
            if *w == Wake::None {
                *w = Wake::Targeted;
            }
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

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_woken_worker_counts_as_searching_at_once_so_the_next_submit_wakes_nobody() {
        let sleep = Arc::new(Sleep::new(1));
        let (go_on, hold) = std::sync::mpsc::channel::<()>();
        let s2 = sleep.clone();
        let worker = std::thread::spawn(move || {
            s2.start_searching();
            s2.sleep(0, || false);
            // Searching now, whether or not it has run yet: stay so until
            // the test has looked.
            hold.recv().unwrap();
            s2.stop_searching();
        });
        wait_until("the worker parks", || sleep.parked() == 1);
        sleep.new_work();
        let c = sleep.counters.load(Ordering::SeqCst);
        assert_eq!((c & MASK, c / SLEEPY), (1, 0), "searching 1, sleepy 0");
        sleep.new_work();
        assert_eq!(
            lock(&sleep.parked).tokens,
            0,
            "the second submit woke nobody"
        );
        go_on.send(()).unwrap();
        worker.join().unwrap();
        assert_eq!(sleep.counters.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_wake_for_a_worker_not_yet_parked_leaves_a_token_and_counts_it_searching() {
        let sleep = Sleep::new(1);
        sleep.start_searching();
        // What `sleep` does before it takes the lock: announce.
        sleep
            .counters
            .fetch_add(SLEEPY - SEARCHING, Ordering::SeqCst);
        sleep.wake_one();
        assert_eq!(lock(&sleep.parked).tokens, 1);
        assert_eq!(sleep.counters.load(Ordering::SeqCst), SEARCHING);
        // Nobody else is left to wake: a second wake changes nothing.
        sleep.wake_one();
        assert_eq!(lock(&sleep.parked).tokens, 1);
        assert_eq!(sleep.counters.load(Ordering::SeqCst), SEARCHING);
    }

    #[test]
    fn a_targeted_wake_is_consumed_by_the_next_sleep_only() {
        let sleep = Sleep::new(1);
        sleep.wake_all();
        sleep.start_searching();
        sleep.sleep(0, || false); // returns at once: the wake was pending
        assert_eq!(lock(&sleep.parked).wake[0], Wake::None);
        sleep.stop_searching();
        assert_eq!(sleep.counters.load(Ordering::SeqCst), 0);
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
            sleep.wake_all();
            w.join().unwrap();
        });
    }
}
