//! [`PoolBuilder`] (process pools) and [`ThreadPool`].

use std::sync::Arc;

use super::{Pool, check_processes};
use crate::{Error, ThreadPoolExecutor};

/// Builds a process-backed [`Pool`]: `multiprocessing.Pool(processes,
/// initializer, maxtasksperchild)`.
#[cfg(unix)]
#[must_use]
#[derive(Debug)]
pub struct PoolBuilder {
    inner: crate::ProcessPoolBuilder,
    processes: Option<usize>,
    maxtasksperchild: Option<usize>,
}

#[cfg(unix)]
impl PoolBuilder {
    pub(super) fn new() -> Self {
        PoolBuilder {
            inner: crate::ProcessPoolExecutor::builder(),
            processes: None,
            maxtasksperchild: None,
        }
    }

    /// Worker processes. Default: the number of CPUs (MP1). Zero is refused
    /// by [`build`](Self::build).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Replaces a worker after it has run `n` tasks (MP22). Zero is refused
    /// by [`build`](Self::build) (MP2). A map chunk counts as one task.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasksperchild = Some(n);
        self
    }

    /// Runs `init` once in every worker process before its first task. A
    /// `fn` item (or a closure capturing nothing); there is no `initargs`:
    /// pass data through [`worker_env`](Self::worker_env) or constants. If
    /// it panics, the pool is broken and its tasks fail with
    /// [`Error::Broken`].
    pub fn initializer<F>(mut self, init: F) -> Self
    where
        F: Fn() + Copy + Send + Sync + 'static,
    {
        self.inner = self.inner.initializer(init);
        self
    }

    /// An environment variable for the workers.
    pub fn worker_env(
        mut self,
        key: impl Into<std::ffi::OsString>,
        value: impl Into<std::ffi::OsString>,
    ) -> Self {
        self.inner = self.inner.worker_env(key, value);
        self
    }

    /// For pools built inside `cargo test`: see
    /// [`ProcessPoolBuilder::test_harness`](crate::ProcessPoolBuilder::test_harness).
    pub fn test_harness(mut self) -> Self {
        self.inner = self.inner.test_harness();
        self
    }

    /// Validates (MP1, MP2) and starts the pool.
    pub fn build(self) -> Result<Pool, Error> {
        let mut inner = self.inner;
        if let Some(n) = self.processes {
            check_processes(n)?;
            inner = inner.max_workers(n);
        }
        if let Some(n) = self.maxtasksperchild {
            if n == 0 {
                return Err(Error::InvalidConfig(
                    "maxtasksperchild must be a positive int or None".into(),
                ));
            }
            inner = inner.max_tasks_per_child(n);
        }
        let procs = Arc::new(inner.build()?);
        Pool::with_parts(procs.clone(), Some(procs))
    }
}

/// [`Pool`] over threads, as `multiprocessing.pool.ThreadPool`: the same
/// methods (it dereferences to [`Pool`]), for tasks that release no GIL to
/// begin with and need no process isolation.
///
/// ```
/// use concurrent_futures::ThreadPool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = ThreadPool::new(2)?;
/// assert_eq!(pool.map(square, 1..4)?, [1, 4, 9]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
///
/// Dropping it terminates it, as for [`Pool`]; threads cannot be killed,
/// so tasks already running finish in the background.
#[derive(Debug)]
pub struct ThreadPool {
    pool: Pool,
}

impl ThreadPool {
    /// A pool of `processes` threads (`ThreadPool(processes)`). Zero is
    /// refused (MP1).
    pub fn new(processes: usize) -> Result<ThreadPool, Error> {
        check_processes(processes)?;
        Self::from_executor(ThreadPoolExecutor::new(processes)?)
    }

    /// The facade over a configured [`ThreadPoolExecutor`] (thread names,
    /// an `initializer` closure, which may capture its `initargs`).
    pub fn from_executor(ex: ThreadPoolExecutor) -> Result<ThreadPool, Error> {
        Ok(ThreadPool {
            pool: Pool::from_executor(Arc::new(ex))?,
        })
    }

    /// The [`Pool`] itself.
    pub fn into_pool(self) -> Pool {
        self.pool
    }
}

impl std::ops::Deref for ThreadPool {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}
