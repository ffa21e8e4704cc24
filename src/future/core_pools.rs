//! Which thread pool holds a task, kept in the high bits of its future's
//! status word: what lets a pool worker waiting on a future run the task
//! itself, or the waiting task's subtasks (fork-join), and nothing else.

use super::{Core, Ordering, PENDING, STATE, TASK_RESULT};

/// The bits of `status` from here up hold the id of the thread pool whose
/// queue holds the task (0: none), set when it is made for that pool. A
/// worker of that pool waiting for the future may then run the task itself
/// (see [`Core::is_queued_in`]). Ids are kept modulo the bits there are:
/// 2^56 on 64-bit targets, so they never repeat; 2^24 on 32-bit ones, where
/// two live pools could share an id only after 16 million pools were made.
const POOL_SHIFT: u32 = 8;

/// `pool`'s id as it sits in `status`.
pub(super) fn pool_tag(pool: u64) -> usize {
    (pool as usize) << POOL_SHIFT
}

/// Whether tasks can record thread pool id `pool` (its tag is not 0,
/// which means "no pool").
pub(crate) fn pool_id_fits(pool: u64) -> bool {
    pool_tag(pool) != 0
}

impl<T> Core<T> {
    /// Records that the thread pool with id `pool` queued the task, unless
    /// it was made for a pool already (see [`for_pool`](Self::for_pool)):
    /// a task that reached the pool through an executor of the user's. The
    /// read-modify-write happens only then.
    /// Returns whether it recorded it (see [`disown_pool`](Self::disown_pool)).
    pub(crate) fn adopt_pool(&self, pool: u64) -> bool {
        let untagged = self.status.load(Ordering::Relaxed) & pool_tag(u64::MAX) == 0;
        if untagged {
            self.status.fetch_or(pool_tag(pool), Ordering::Relaxed);
        }
        untagged
    }

    /// Undoes [`adopt_pool`](Self::adopt_pool): the pool refused the task,
    /// which may go on to another executor.
    pub(crate) fn disown_pool(&self) {
        self.status
            .fetch_and(!pool_tag(u64::MAX), Ordering::Relaxed);
    }

    /// Whether the task is still waiting in the queue of the thread pool
    /// with id `pool`: nobody has started it, and it was queued there.
    pub(crate) fn is_queued_in(&self, pool: u64) -> bool {
        let s = self.status.load(Ordering::Acquire);
        let tag = pool_tag(pool);
        tag != 0 && s & STATE == PENDING && s & pool_tag(u64::MAX) == tag
    }

    /// Whether a worker of the thread pool with id `pool`, waiting on this
    /// future, may help with the waiting task's subtasks: a task's end
    /// completes it (see [`TASK_RESULT`]), and that task runs in this pool
    /// or in an executor that records no id (a user's executor, which may
    /// well hand its tasks to this pool). Not a task of another thread pool
    /// or of a process pool: its end does not depend on this pool's work.
    pub(crate) fn helps_in(&self, pool: u64) -> bool {
        let s = self.status.load(Ordering::Relaxed);
        let tag = s & pool_tag(u64::MAX);
        s & TASK_RESULT != 0 && (tag == 0 || tag == pool_tag(pool))
    }
}
