//! Tasks: a unit of work and the completing side of its [`Future`], in one
//! allocation.
//!
//! A submitted task is an `Arc` holding both the work (a closure, or a
//! portable `fn` item and its argument) and the future's [`Core`]. The
//! executor keeps it as an `Arc<dyn Job>`; the user's [`Future`] keeps it as
//! an `Arc<dyn Completion<R>>`. One allocation per task, no channel.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::thin::{Header, Thin, ThinJob};
use crate::Error;
use crate::future::core::{Core, Start};
use crate::future::{Completion, Future, InPlace};
use crate::sync::{Arc, Mutex, lock};

/// The executor's side of a task.
pub(crate) trait Job: Send + Sync {
    /// Runs the task on this thread, unless it was cancelled while queued,
    /// and completes its future. A panic becomes the future's error.
    fn run(self: Arc<Self>);
    /// Fails the future with `error` unless it already ended (queued work
    /// of a broken or shut-down executor).
    fn fail(self: Arc<Self>, error: Error);
    /// Cancels the task if it has not started; true if it is now cancelled.
    fn cancel(self: Arc<Self>) -> bool;
    /// The process-pool view of a portable task (`None` for closures).
    fn into_portable(self: Arc<Self>) -> Option<Arc<dyn crate::executor::PortableJob>> {
        None
    }
    /// Whether [`into_portable`](Self::into_portable) gives `Some`.
    fn is_portable(&self) -> bool {
        false
    }
    /// The same task as one word, for the thread pool's queues.
    fn into_thin(self: Arc<Self>) -> ThinJob;
    /// Its future's state, as far as a thread pool needs it whatever the
    /// result type: the task's identity and the pool it is queued in.
    fn pool_view(&self) -> &dyn PoolView;
}

/// What a thread pool reads and writes of a task's future whatever its
/// result type (implemented by `Core`).
pub(crate) trait PoolView {
    /// The address of the future's `Core`: the task's identity while it
    /// lives (see `thread::roots`).
    fn addr(&self) -> usize;
    /// Records that the thread pool with id `pool` queues the task, if it
    /// was not made for a pool (see `Core::adopt_pool`); returns whether it
    /// did.
    fn adopt_pool(&self, pool: u64) -> bool;
    /// Undoes a successful [`adopt_pool`](Self::adopt_pool).
    fn disown_pool(&self);
}

impl<T> PoolView for Core<T> {
    fn addr(&self) -> usize {
        Core::addr(self)
    }
    fn adopt_pool(&self, pool: u64) -> bool {
        Core::adopt_pool(self, pool)
    }
    fn disown_pool(&self) {
        Core::disown_pool(self)
    }
}

/// A task an [`Executor`](crate::Executor) has been asked to run.
///
/// Executors receive tasks through [`Executor::execute`](crate::Executor::execute).
/// An executor of your own runs one with [`Task::run`] (on whatever thread
/// it likes), or fails it with [`Task::fail`]. Dropping a `Task` without
/// doing either leaves its future pending forever, so don't.
pub struct Task {
    pub(crate) job: Arc<dyn Job>,
}

impl Task {
    /// Runs the task here and completes its future (unless it was
    /// cancelled while queued). A panic in the task becomes the future's
    /// [`Error::Panicked`]; it never unwinds into the caller.
    pub fn run(self) {
        self.job.run()
    }

    /// Completes the task's future with `error` without running it.
    pub fn fail(self, error: Error) {
        self.job.fail(error)
    }

    /// Cancels the task if it has not started; true if it is now cancelled.
    pub fn cancel(self) -> bool {
        self.job.cancel()
    }

    /// Whether this task is a portable `fn`-item task (which a process pool
    /// can run), rather than a thread-only closure.
    pub fn is_portable(&self) -> bool {
        self.job.is_portable()
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("portable", &self.is_portable())
            .finish()
    }
}

/// Takes a task's work out of `slot` and drops it ([`drop_unrun`]);
/// returns whether it was still there.
fn release_slot<W>(slot: &Mutex<Option<W>>) -> bool {
    let work = lock(slot).take();
    let there = work.is_some();
    drop_unrun(work);
    there
}

/// Drops a task's work (closure, argument) that will not run. Its
/// captures are user values whose `Drop` may panic; the panic is logged
/// rather than let out into whoever drops it: a pool worker (which would
/// die), a `cancel()` caller, or a shutdown cancelling queued work (which
/// would stop half-way).
fn drop_unrun<W>(work: W) {
    crate::error::drop_caught(work, "a task that did not run");
}

/// Runs `work` under `catch_unwind` and completes `this` with its outcome.
fn run_and_complete<R, S, W>(this: &Arc<S>, core: &Core<R>, work: W)
where
    S: Completion<R> + 'static,
    W: FnOnce() -> R,
{
    if core.set_running() == Start::Skip {
        drop_unrun(work);
        return;
    }
    let outcome = catch_unwind(AssertUnwindSafe(work)).map_err(Error::from_panic);
    core.complete(outcome, || Future::from_shared(this.clone()));
}

/// Fails a task's future without running it, dropping its work first.
/// Does nothing if the work is gone: whoever took it (a run, a cancel)
/// ends the future. That matters for a task a waiting worker ran in place
/// (T10), whose queue entry a worker may still find and fail.
fn fail_task<R, S: Completion<R> + 'static>(this: Arc<S>, error: Error) {
    if !this.release() {
        return;
    }
    let handle = this.clone();
    this.core()
        .complete(Err(error), move || Future::from_shared(handle));
}

/// [`Completion::run_here`] of a task: runs, fails or cancels it on this
/// thread (each does nothing if a worker took the work already).
fn run_in_place<R, S: Completion<R> + Job + 'static>(this: Arc<S>, how: InPlace) {
    match how {
        InPlace::Run => Job::run(this),
        InPlace::Fail(error) => fail_task(this, error),
        InPlace::Cancel => {
            crate::future::cancel_shared(this);
        }
    }
}

/// A thread-only task: any `FnOnce() -> R + Send` closure.
pub(crate) struct ClosureTask<F, R> {
    header: Header,
    core: Core<R>,
    work: Mutex<Option<F>>,
}

impl<F, R> ClosureTask<F, R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + Sync + 'static,
{
    /// The job for the executor and the future for the user (for no pool
    /// in particular: the unit tests' tasks).
    #[cfg(test)]
    pub(crate) fn create(work: F) -> (Arc<dyn Job>, Future<R>) {
        Self::create_for(work, 0)
    }

    /// The job for the executor and the future for the user, for the
    /// thread pool with id `pool` (see `Core::for_pool`).
    pub(crate) fn create_for(work: F, pool: u64) -> (Arc<dyn Job>, Future<R>) {
        let task = Arc::new(ClosureTask {
            header: Header::of::<Self>(),
            core: Core::for_pool(pool),
            work: Mutex::new(Some(work)),
        });
        (task.clone(), Future::from_shared(task))
    }
}

impl<F, R> Completion<R> for ClosureTask<F, R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + Sync + 'static,
{
    fn core(&self) -> &Core<R> {
        &self.core
    }
    fn release(&self) -> bool {
        release_slot(&self.work)
    }
    fn run_here(self: Arc<Self>, how: InPlace) {
        run_in_place(self, how)
    }
}

impl<F, R> Job for ClosureTask<F, R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + Sync + 'static,
{
    fn run(self: Arc<Self>) {
        // Taken before running so the closure's captures are dropped as soon
        // as it returns (C8, S13), even though the Arc lives on.
        let work = lock(&self.work).take();
        if let Some(work) = work {
            run_and_complete(&self, &self.core, work);
        }
    }

    fn fail(self: Arc<Self>, error: Error) {
        fail_task(self, error)
    }

    fn cancel(self: Arc<Self>) -> bool {
        crate::future::cancel_shared(self)
    }

    fn into_thin(self: Arc<Self>) -> ThinJob {
        ThinJob::new(self)
    }

    fn pool_view(&self) -> &dyn PoolView {
        &self.core
    }
}

// SAFETY: `HEADER_OFFSET` is the `offset_of!` of the private `header`
// field, which the only struct literal (in `create_for`) sets to
// `Header::of::<Self>()`; no `&mut Self` is formed once the value is in
// its `Arc`, so it never changes.
unsafe impl<F, R> Thin for ClosureTask<F, R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + Sync + 'static,
{
    const HEADER_OFFSET: usize = std::mem::offset_of!(Self, header);
}

/// A portable task: a zero-sized `fn` item (or non-capturing closure) and
/// its serde argument. Threads call it directly; a process pool sends the
/// argument to a worker that calls the same `fn`.
pub(crate) struct PortableTask<F, A, R> {
    header: Header,
    core: Core<R>,
    func: F,
    arg: Mutex<Option<A>>,
}

impl<F, A, R> PortableTask<F, A, R>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: crate::Portable,
    R: crate::Portable + Sync,
{
    pub(crate) fn create(func: F, arg: A) -> (Arc<PortableTask<F, A, R>>, Future<R>) {
        Self::create_for(func, arg, 0)
    }

    /// [`create`](Self::create) for the thread pool with id `pool` (see
    /// `Core::for_pool`); 0 for any other executor.
    pub(crate) fn create_for(
        func: F,
        arg: A,
        pool: u64,
    ) -> (Arc<PortableTask<F, A, R>>, Future<R>) {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "a portable task must be a fn item or a closure that captures nothing \
                 (use ThreadPoolExecutor::spawn for closures that capture)"
            )
        };
        let task = Arc::new(PortableTask {
            header: Header::of::<Self>(),
            core: Core::for_pool(pool),
            func,
            arg: Mutex::new(Some(arg)),
        });
        (task.clone(), Future::from_shared(task))
    }
}

impl<F, A, R> PortableTask<F, A, R>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: crate::Portable,
    R: crate::Portable + Sync,
{
    pub(crate) fn encode_arg_inner(&self) -> Result<Vec<u8>, Error> {
        match lock(&self.arg).as_ref() {
            Some(arg) => crate::process::codec::encode(arg),
            None => Err(Error::Cancelled),
        }
    }

    /// Takes back the argument of a task that no executor accepted (a
    /// chunk whose argument did not encode, to be sent again item by item).
    pub(crate) fn take_arg(&self) -> Option<A> {
        lock(&self.arg).take()
    }

    pub(crate) fn mark_running_inner(&self) -> bool {
        self.core.set_running() == Start::Run
    }

    pub(crate) fn mark_pending_again_inner(&self) -> bool {
        self.core.set_pending_again()
    }

    pub(crate) fn stop_on_cancel_inner(
        &self,
        watcher: &Arc<dyn crate::future::core::Watcher>,
        key: usize,
    ) -> bool {
        self.core.allow_cancel_while_running();
        self.core.on_end(watcher, key)
    }

    pub(crate) fn is_done_inner(&self) -> bool {
        self.core.is_terminal()
    }

    pub(crate) fn complete_inner(self: Arc<Self>, outcome: Result<R, Error>) {
        release_slot(&self.arg);
        self.core
            .complete(outcome, || Future::from_shared(self.clone()));
    }
}

impl<F, A, R> Completion<R> for PortableTask<F, A, R>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: crate::Portable,
    R: crate::Portable + Sync,
{
    fn core(&self) -> &Core<R> {
        &self.core
    }
    fn release(&self) -> bool {
        release_slot(&self.arg)
    }
    fn run_here(self: Arc<Self>, how: InPlace) {
        run_in_place(self, how)
    }
}

impl<F, A, R> Job for PortableTask<F, A, R>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: crate::Portable,
    R: crate::Portable + Sync,
{
    fn run(self: Arc<Self>) {
        let arg = lock(&self.arg).take();
        if let Some(arg) = arg {
            let func = self.func;
            run_and_complete(&self, &self.core, move || func(arg));
        }
    }

    fn fail(self: Arc<Self>, error: Error) {
        fail_task(self, error)
    }

    fn cancel(self: Arc<Self>) -> bool {
        crate::future::cancel_shared(self)
    }

    fn into_portable(self: Arc<Self>) -> Option<Arc<dyn crate::executor::PortableJob>> {
        Some(self)
    }

    fn is_portable(&self) -> bool {
        true
    }

    fn into_thin(self: Arc<Self>) -> ThinJob {
        ThinJob::new(self)
    }

    fn pool_view(&self) -> &dyn PoolView {
        &self.core
    }
}

// SAFETY: `HEADER_OFFSET` is the `offset_of!` of the private `header`
// field, which the only struct literal (in `create_for`) sets to
// `Header::of::<Self>()`; no `&mut Self` is formed once the value is in
// its `Arc`, so it never changes.
unsafe impl<F, A, R> Thin for PortableTask<F, A, R>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: crate::Portable,
    R: crate::Portable + Sync,
{
    const HEADER_OFFSET: usize = std::mem::offset_of!(Self, header);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(i: u64) -> u64 {
        i
    }

    /// Issue 4's memory budget: a queued `u64 -> u64` task is one allocation
    /// of at most 88 bytes including the `Arc`'s two counts, which glibc
    /// serves from its 96-byte size class; with the 8-byte slot of the
    /// pool's inbox, 104 bytes a queued task.
    #[test]
    fn a_portable_u64_task_fits_the_96_byte_malloc_class() {
        let (task, _fut) = PortableTask::create(noop, 1u64);
        let arc_counts = 2 * size_of::<usize>();
        assert!(
            size_of_val(&*task) + arc_counts <= 88,
            "PortableTask<noop, u64, u64> is {} bytes",
            size_of_val(&*task)
        );
    }

    /// A task a waiting worker runs in place (T10) keeps an entry in its
    /// pool's queue; a worker that later fails that entry (a broken pool)
    /// must not end the future the run in place will end.
    #[test]
    fn failing_a_task_that_runs_elsewhere_leaves_its_future_to_that_run() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (job, fut) = ClosureTask::create(move || {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            5u8
        });
        let in_place = job.clone();
        let runner = std::thread::spawn(move || in_place.run());
        started_rx.recv().unwrap();
        job.fail(Error::Shutdown);
        assert!(
            !fut.done(),
            "the stale entry ended the running task's future"
        );
        go_tx.send(()).unwrap();
        runner.join().unwrap();
        assert_eq!(fut.into_result(), Ok(5));
    }

    #[test]
    fn a_future_core_is_five_words() {
        assert!(size_of::<Core<u64>>() <= 5 * size_of::<usize>());
    }
}

/// Loom models of a task run in place by a waiting worker (T10): the
/// worker that finds the task's queue entry, the waiting worker that runs
/// it in place, and a cancel, all racing. Run with
/// `RUSTFLAGS="--cfg cf_loom" cargo test --release --lib loom`.
#[cfg(all(test, cf_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    /// A task returning 7 that counts its runs.
    fn counted_task() -> (Arc<AtomicUsize>, Arc<dyn Job>, Future<u32>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let (job, fut) = ClosureTask::create(move || {
            r.fetch_add(1, Ordering::SeqCst);
            7u32
        });
        (runs, job, fut)
    }

    #[test]
    fn loom_a_task_run_in_place_racing_its_queue_entry_and_a_cancel_runs_at_most_once() {
        loom::model(|| {
            let (runs, job, fut) = counted_task();
            let queued = job.clone();
            let worker = thread::spawn(move || queued.run());
            let waiter = thread::spawn(move || job.run());
            let cancelled = fut.cancel();
            worker.join().unwrap();
            waiter.join().unwrap();
            let ran = runs.load(Ordering::SeqCst);
            match fut.into_result() {
                Ok(7) => assert_eq!((ran, cancelled), (1, false)),
                Err(Error::Cancelled) => assert_eq!((ran, cancelled), (0, true)),
                other => panic!("unexpected outcome {other:?} after {ran} runs"),
            }
        });
    }

    /// The queue entry of a task being run in place is failed (a broken
    /// pool) while the run goes on: the run's outcome stands.
    #[test]
    fn loom_failing_the_queue_entry_of_a_task_run_in_place_leaves_the_run_its_outcome() {
        loom::model(|| {
            let (runs, job, fut) = counted_task();
            let queued = job.clone();
            let worker = thread::spawn(move || queued.fail(Error::Shutdown));
            job.run();
            worker.join().unwrap();
            let ran = runs.load(Ordering::SeqCst);
            match fut.into_result() {
                Ok(7) => assert_eq!(ran, 1),
                Err(Error::Shutdown) => assert_eq!(ran, 0, "failed while it ran"),
                other => panic!("unexpected outcome {other:?} after {ran} runs"),
            }
        });
    }
}
