//! [`TaskEnd`]: the end of one task, its value type erased.
//!
//! Some handles become ready only after the tasks behind them end, and
//! through another thread: the [`Pool`](crate::Pool) facade's
//! `AsyncResult` is a promise its result-handling thread keeps once the
//! task (or every chunk of a `map_async`) has ended and its callbacks have
//! run. A thread-pool worker waiting on such a handle cannot run the task
//! in place, as it does for the task's own future (T10): the promise is
//! queued nowhere. So the handle keeps its tasks' ends, and a worker of
//! their pool helps with those first ([`TaskEnd::help`]): it runs a task
//! still queued in the pool, or helps with its subtasks, exactly as
//! [`Future::result`] does, and then waits on the handle itself, which
//! may become ready without its task ending (a `terminate` fails it).

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

    /// On a worker of the task's thread pool: runs the task here if it is
    /// still queued, and helps with its subtasks that are queued now (one
    /// round, never blocking; see `thread::help_while_waiting`). Elsewhere,
    /// nothing. True when the task runs on another worker, which may queue
    /// more of its subtasks: worth helping again a little later.
    pub(crate) fn help(&self, deadline: Option<Instant>) -> bool {
        self.0.help(deadline)
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
    fn help(&self, deadline: Option<Instant>) -> bool;
}

/// What a [`Future`] shares with its task, without the handle: dropping
/// it never touches the waiters the handle registered (see
/// `cancel_shared`).
struct Shared<T>(Arc<dyn Completion<T>>);

impl<T: Send + Sync + 'static> EndOf for Shared<T> {
    fn ended(&self) -> bool {
        self.0.core().is_terminal()
    }

    fn help(&self, deadline: Option<Instant>) -> bool {
        let run_here = |how| Arc::clone(&self.0).run_here(how);
        #[cfg(not(cf_loom))]
        return crate::thread::help_while_waiting(self.0.core(), deadline, &run_here);
        // Under loom there is no pool to help.
        #[cfg(cf_loom)]
        {
            let _ = (deadline, run_here);
            false
        }
    }
}
