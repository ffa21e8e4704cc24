//! The queue that tasks from outside the pool arrive in.
//!
//! A FIFO ring buffer (a crossbeam-deque [`Worker`] in FIFO mode) whose push
//! end sits behind a mutex and whose other end workers steal from, lock-free,
//! through its [`Stealer`], one task at a time (see `registry` for why not
//! in batches; a 200k-task stream was no slower for it, and steadier: 10.8–
//! 11.8 M tasks/s against 5.4–16.7 M with batches, BENCHMARKS-LOG.md). Only
//! submitters ever take the lock, and only for one push.
//!
//! Why not crossbeam's lock-free `Injector`, the textbook choice? It is a
//! linked list of 63-slot blocks: the submitter allocates a block every 63
//! pushes and whichever worker empties it frees it. With glibc's allocator
//! that free lands in the submitter's arena and takes the arena lock that
//! the submitter's next `malloc` (of the next task) needs, so a thread
//! streaming small tasks and the workers eating them fought over that lock:
//! every futex call of issue 4's "tiny" workload was glibc's arena lock
//! (perf tracepoints), and a 200k-task stream took 80–100 ms against 24 ms
//! with this queue, in the same process (BENCHMARKS-LOG.md). A ring buffer
//! allocates only when it grows, doubling, so a steady stream allocates
//! nothing but the tasks themselves. Its slot is also one word instead of
//! two, which shows in the memory workload.
//!
//! The costs, measured: with 4–16 threads submitting at once on 2 cores the
//! lock makes a stream 10–20% slower than the `Injector`; and the buffer
//! keeps its largest size for the life of the pool (8 bytes a slot: 8 MB
//! after a burst of a million queued tasks), as a `Vec` does.

use crossbeam_deque::{Steal, Stealer, Worker};
use crossbeam_utils::CachePadded;

use super::registry::JobRef;
use crate::sync::{Mutex, lock};

/// The pool's queue for external submissions (see the module docs).
pub(crate) struct Inbox {
    /// The push end. `Worker` is `Send` but not `Sync`: the mutex is what
    /// lets several submitting threads share it.
    ///
    /// Each end has a cache line of its own: the submitter writes the lock
    /// word on every push and the workers read the stealer on every look
    /// at the queue; on one line, each push would invalidate every idle
    /// worker's copy and each look would pull the line back.
    tail: CachePadded<Mutex<Worker<JobRef>>>,
    /// The steal end, shared by every worker.
    head: CachePadded<Stealer<JobRef>>,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        let tail = Worker::new_fifo();
        let head = tail.stealer();
        Inbox {
            tail: CachePadded::new(Mutex::new(tail)),
            head: CachePadded::new(head),
        }
    }

    /// Queues `job` behind every job pushed before it.
    pub(crate) fn push(&self, job: JobRef) {
        lock(&self.tail).push(job);
    }

    /// Takes the oldest job.
    pub(crate) fn steal(&self) -> Steal<JobRef> {
        self.head.steal()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_empty()
    }
}

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;
    use crate::Future;
    use crate::executor::ClosureTask;

    /// A queued job whose future ends with `i`.
    fn job(i: u64) -> (JobRef, Future<u64>) {
        let (task, fut) = ClosureTask::create(move || i);
        (task.into_thin(), fut)
    }

    #[test]
    fn jobs_come_out_in_the_order_they_went_in() {
        let inbox = Inbox::new();
        let futs: Vec<_> = (0..100)
            .map(|i| {
                let (j, f) = job(i);
                inbox.push(j);
                f
            })
            .collect();
        while let Steal::Success(j) = inbox.steal() {
            j.run();
        }
        // Run one at a time in queue order: each future holds its own index.
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.into_result(), Ok(i as u64));
        }
    }

    #[test]
    fn is_empty_tracks_pushes_and_steals() {
        let inbox = Inbox::new();
        assert!(inbox.is_empty());
        let (j, _f) = job(1);
        inbox.push(j);
        assert!(!inbox.is_empty());
        drop(inbox.steal().success());
        assert!(inbox.is_empty());
    }

    #[test]
    fn dropping_the_inbox_releases_the_jobs_still_queued() {
        let inbox = Inbox::new();
        let (j, f) = job(1);
        inbox.push(j);
        drop(inbox);
        // Only the future's reference is left; the task is still pending
        // (never run, never failed).
        assert!(!f.done());
    }

    #[test]
    fn concurrent_submitters_lose_no_job() {
        let inbox = std::sync::Arc::new(Inbox::new());
        let futs: Vec<Future<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let inbox = &inbox;
                    s.spawn(move || {
                        (0..1000)
                            .map(|i| {
                                let (j, f) = job(t * 1000 + i);
                                inbox.push(j);
                                f
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut ran = 0;
        while let Steal::Success(j) = inbox.steal() {
            j.run();
            ran += 1;
        }
        assert_eq!(ran, 4000);
        assert!(futs.iter().all(Future::done));
    }
}
