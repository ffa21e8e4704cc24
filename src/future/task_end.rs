//! [`TaskEnd`]: the end of one task, its value type erased.
//!
//! Some handles become ready only after the tasks behind them end, and
//! through another thread: the [`Pool`](crate::Pool) facade's
//! `AsyncResult` is a promise its result-handling thread keeps once the
//! task (or every chunk of a `map_async`) has ended and its callbacks have
//! run. A thread-pool worker waiting on such a handle cannot run the task
//! in place, as it does for the task's own future (T10): the promise is
//! queued nowhere. So the handle keeps its tasks' ends, and a worker of
//! their pool waits on those first: each wait runs a task still queued in
//! the pool on the waiting worker, or helps with its subtasks, exactly as
//! [`Future::result`] does.

use std::time::Instant;

use super::{Completion, Future};
use crate::sync::Arc;

/// The end of one task; cloning it clones a reference to the task.
#[derive(Clone)]
pub(crate) struct TaskEnd(Arc<dyn EndOf>);

impl TaskEnd {
    /// Whether the task has ended (value, error, or cancel).
    pub(crate) fn ended(&self) -> bool {
        self.0.ended()
    }

    /// Waits until the task has ended or `deadline` passes; on a worker of
    /// the task's thread pool, runs it here if it is still queued, or helps
    /// with its subtasks meanwhile. Returns whether it ended.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.0.wait_until(deadline)
    }
}

impl<T: Send + Sync + 'static> Future<T> {
    /// This task's end, to wait on without the handle (see the module).
    pub(crate) fn task_end(&self) -> TaskEnd {
        TaskEnd(Arc::new(Shared(self.shared.clone())))
    }
}

trait EndOf: Send + Sync {
    fn ended(&self) -> bool;
    fn wait_until(&self, deadline: Option<Instant>) -> bool;
}

/// What a [`Future`] shares with its task, without the handle: dropping
/// it never touches the waiters the handle registered (see
/// `cancel_shared`).
struct Shared<T>(Arc<dyn Completion<T>>);

impl<T: Send + Sync + 'static> EndOf for Shared<T> {
    fn ended(&self) -> bool {
        self.0.core().is_terminal()
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.0
            .core()
            .wait_until(deadline, false, &|| Arc::clone(&self.0).run_here())
    }
}
