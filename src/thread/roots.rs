//! Which task each worker runs at the bottom of its stack, for waiting
//! workers that help the worker running the task they wait for.
//!
//! A worker blocked in `result()` on task `a` may run only work that `a`
//! depends on (see `worker::help_while_waiting`). When `a` is already
//! running on another worker W, the work `a` depends on is what `a` and
//! the tasks it waits for pushed onto W's deque: the waiting worker steals
//! it from there ("leapfrogging", as Java's ForkJoinPool does), and
//! fork-join keeps both workers busy.
//!
//! That is only sound when nothing else is on W's deque. So W publishes a
//! task here only when it starts it from its main loop with an empty deque
//! (it stole it, or took the last one); everything W pushes while that
//! task runs then descends from it, or from tasks it waits for. A thief
//! reads the generation, checks that W runs `a`, steals one task, and reads
//! the generation again:
//!
//! ```text
//! W (publisher)                      thief
//! start a: task = a; gen += 1        g1 = gen; task == a?
//! ... pushes x ...                   steal x
//! end a:   task = 0; gen += 1        g2 = gen; keep x only if g1 == g2
//! start b: task = b; gen += 1
//! ... pushes y ...
//! ```
//!
//! A task `y` pushed after `a` ended was pushed after the `gen += 1` of
//! "end a", and stealing it synchronizes with that push, so the thief's
//! `g2` sees the bump: `g1 != g2` (or `g1` already saw it, and then the
//! `task == a` check, made after `g1` in the single order of `SeqCst`
//! operations, saw `task` reset). So a task kept was pushed while `a` ran.
//! One that fails the check goes back to the pool's inbox, untouched.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, Ordering};

/// One worker's published root task.
#[derive(Debug, Default)]
pub(crate) struct Root {
    /// The address of the root task's future `Core`, or 0.
    task: AtomicUsize,
    /// Bumped after every change of `task`.
    generation: AtomicUsize,
}

impl Root {
    /// Publishes `task` (0: none) as this worker's root.
    pub(crate) fn publish(&self, task: usize) {
        self.task.store(task, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The generation now, if this worker's root is `task`.
    pub(crate) fn runs(&self, task: usize) -> Option<usize> {
        let generation = self.generation.load(Ordering::SeqCst);
        (self.task.load(Ordering::SeqCst) == task).then_some(generation)
    }

    /// Whether the root is still the one seen at `generation`.
    pub(crate) fn unchanged_since(&self, generation: usize) -> bool {
        self.generation.load(Ordering::SeqCst) == generation
    }
}

/// Every worker's [`Root`], each on its own cache line: written twice per
/// root task by its worker, read by waiting workers.
pub(crate) type Roots = Vec<CachePadded<Root>>;
