//! A queued task as one machine word.
//!
//! The thread pool's queues hold every queued task, so their slot size is
//! paid once per task: a million tasks queued behind a busy pool are a
//! million slots. An `Arc<dyn Job>` is two words (data and vtable);
//! [`ThinJob`] is the data pointer alone, so a slot of the pool's ring
//! buffers (its inbox and the workers' deques) is 8 bytes a task.
//!
//! The vtable has to live somewhere, so it moves into the task's own
//! allocation as a [`Header`]: one function pointer, `revive`, that turns
//! the thin pointer back into the `Arc<dyn Job>` it came from. Each task
//! type knows where its header sits inside it ([`Thin::HEADER_OFFSET`]),
//! so `revive::<S>` steps back from the header to the start of the `S` and
//! rebuilds the `Arc<S>`. The extra word fits in the task's malloc size
//! class, so the net saving is the full 8 bytes (issue 4's memory budget;
//! see the size tests in `task.rs`).
//!
//! This is the `async-task`/`tokio` "raw task" pattern cut down to what a
//! queue needs: no state in the header, no hand-written reference count;
//! the `Arc` still does all the counting.

use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use super::task::Job;
use crate::sync::Arc;

/// The word a task keeps for its thin pointer: how to get its
/// `Arc<dyn Job>` back.
pub(crate) struct Header {
    revive: unsafe fn(NonNull<Header>) -> Arc<dyn Job>,
}

impl Header {
    /// The header of an `S`. An `S` stores exactly this value at
    /// [`S::HEADER_OFFSET`](Thin::HEADER_OFFSET).
    pub(crate) const fn of<S: Thin>() -> Header {
        Header {
            revive: revive::<S>,
        }
    }
}

/// A task type that can travel as a [`ThinJob`].
///
/// # Safety
///
/// `HEADER_OFFSET` is the byte offset (`offset_of!`) of a field of `Self`
/// of type [`Header`] whose value is `Header::of::<Self>()`, set when the
/// value is created and never changed.
pub(crate) unsafe trait Thin: Job + Sized + 'static {
    const HEADER_OFFSET: usize;
}

/// One strong reference to a task, as a pointer to its [`Header`].
pub(crate) struct ThinJob(NonNull<Header>);

// SAFETY: a `ThinJob` is an `Arc<dyn Job>` in another shape: it owns one
// strong count and gives access to nothing but what that `Arc` gives, and
// `Job: Send + Sync`, so `Arc<dyn Job>` is `Send + Sync`.
unsafe impl Send for ThinJob {}
// SAFETY: as for `Send`; `&ThinJob` gives no access to the task at all.
unsafe impl Sync for ThinJob {}

impl ThinJob {
    /// Takes over `job`'s strong count.
    pub(crate) fn new<S: Thin>(job: Arc<S>) -> ThinJob {
        let start = Arc::into_raw(job).cast::<u8>();
        // SAFETY: by the `Thin` contract `HEADER_OFFSET` is the offset of a
        // field inside the `S` that `start` points to, so the result stays
        // inside the same allocation.
        let header = unsafe { start.add(S::HEADER_OFFSET) }.cast::<Header>();
        ThinJob(NonNull::new(header.cast_mut()).expect("an Arc's pointer is never null"))
    }

    /// The `Arc<dyn Job>` this came from, with its strong count.
    pub(crate) fn into_arc(self) -> Arc<dyn Job> {
        let this = ManuallyDrop::new(self);
        // SAFETY: the header was built by `ThinJob::new` from a live `Arc<S>`
        // whose count we own (so the header is alive and readable), and its
        // value is `Header::of::<S>()`, whose `revive` is `revive::<S>`. The
        // count passes to the returned `Arc`; `ManuallyDrop` keeps us from
        // releasing it a second time.
        unsafe { (this.0.as_ref().revive)(this.0) }
    }

    /// Runs the task (see [`Job::run`]).
    pub(crate) fn run(self) {
        self.into_arc().run()
    }

    /// Fails the task (see [`Job::fail`]).
    pub(crate) fn fail(self, error: crate::Error) {
        self.into_arc().fail(error)
    }

    /// Cancels the task if it has not started (see [`Job::cancel`]).
    pub(crate) fn cancel(self) -> bool {
        self.into_arc().cancel()
    }
}

impl Drop for ThinJob {
    fn drop(&mut self) {
        // SAFETY: as in `into_arc`; `self` is never used again.
        drop(unsafe { (self.0.as_ref().revive)(self.0) });
    }
}

impl std::fmt::Debug for ThinJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ThinJob").field(&self.0).finish()
    }
}

/// Rebuilds the `Arc<S>` whose header `header` points to.
///
/// # Safety
///
/// `header` came from [`ThinJob::new::<S>`] and its strong count is handed
/// over to the returned `Arc`.
unsafe fn revive<S: Thin>(header: NonNull<Header>) -> Arc<dyn Job> {
    // SAFETY: `header` is `S::HEADER_OFFSET` bytes into an `S` (see
    // `ThinJob::new`), with the provenance of the whole allocation, so
    // stepping back gives the pointer `Arc::into_raw` returned; the caller
    // hands over the count that `into_raw` kept.
    unsafe {
        let start = header
            .as_ptr()
            .cast::<u8>()
            .sub(S::HEADER_OFFSET)
            .cast::<S>();
        Arc::from_raw(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::task::{ClosureTask, PortableTask};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn double(x: u64) -> u64 {
        x * 2
    }

    #[test]
    fn a_thin_job_is_one_word() {
        assert_eq!(size_of::<ThinJob>(), size_of::<usize>());
        assert_eq!(size_of::<Option<ThinJob>>(), size_of::<usize>());
    }

    #[test]
    fn a_thin_job_runs_its_task() {
        let (task, fut) = PortableTask::create(double, 21);
        task.into_thin().run();
        assert_eq!(fut.into_result(), Ok(42));
    }

    #[test]
    fn into_arc_gives_back_the_same_task() {
        let (task, fut) = ClosureTask::create(|| 7u8);
        let before = Arc::as_ptr(&task).cast::<u8>();
        let back = task.into_thin().into_arc();
        assert_eq!(Arc::as_ptr(&back).cast::<u8>(), before);
        back.run();
        assert_eq!(fut.into_result(), Ok(7));
    }

    #[test]
    fn dropping_a_thin_job_releases_its_task_once() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = Counted(drops.clone());
        let (task, fut) = ClosureTask::create(move || drop(counted));
        let thin = task.into_thin();
        drop(fut);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(thin);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_thin_job_fails_and_cancels_like_its_task() {
        let (task, fut) = PortableTask::create(double, 1);
        task.into_thin().fail(crate::Error::Shutdown);
        assert_eq!(fut.into_result(), Err(crate::Error::Shutdown));
        let (task, fut) = PortableTask::create(double, 1);
        assert!(task.into_thin().cancel());
        assert!(fut.cancelled());
    }
}
