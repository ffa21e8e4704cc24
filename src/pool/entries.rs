//! What the result handler delivers: one `apply_async` job, or one chunk
//! of a `map_async` job; and the task that runs a chunk.

use crate::sync::{Arc, Mutex};

use super::async_result::{self, Callbacks};
use super::handler::Entry;
use crate::chunk::{ChunkArgs, ChunkResult, run_items};
use crate::error::drop_caught;
use crate::sync::lock;
use crate::{Error, Future, Portable, Promise};

/// The task that runs one chunk of a map: each item under `catch_unwind`,
/// so a panic fails only its own item. It captures only the zero-sized
/// `func`, so it is itself a portable task.
pub(super) fn chunk_task<F, A, R>(
    func: F,
) -> impl Fn(ChunkArgs<A>) -> ChunkResult<R> + Copy + Send + Sync + 'static
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: Portable,
    R: Portable + Sync,
{
    move |items: ChunkArgs<A>| run_items(func, items)
}

/// One `apply_async` job.
pub(super) struct ApplyEntry<R: Send + Sync + 'static> {
    pub(super) fut: Future<R>,
    pub(super) callbacks: Callbacks<R>,
    pub(super) promise: Promise<R>,
}

impl<R: Send + Sync + 'static> Entry for ApplyEntry<R> {
    fn deliver(self: Box<Self>, forced: Option<Error>) {
        let outcome = match forced {
            Some(e) => Err(e),
            None => self.fut.into_result(),
        };
        async_result::settle(outcome, self.callbacks, self.promise);
    }

    fn ended(&self) -> bool {
        self.fut.done()
    }
}

/// What settles a `map_async` job: its callbacks and its promise.
pub(super) type Finish<R> = (Callbacks<Vec<R>>, Promise<Vec<R>>);

/// The shared state of one `map_async` job.
pub(super) struct MapAgg<R: Send + Sync + 'static> {
    pub(super) slots: Vec<Option<R>>,
    /// Items not yet delivered.
    pub(super) left: usize,
    pub(super) first_error: Option<Error>,
    pub(super) finish: Option<Finish<R>>,
}

/// One chunk of a `map_async` job; the last one to arrive settles the job.
pub(super) struct ChunkEntry<R: Send + Sync + 'static> {
    pub(super) fut: Future<ChunkResult<R>>,
    /// The position of its first item in the input.
    pub(super) start: usize,
    /// How many items it delivers.
    pub(super) items: usize,
    /// The items' argument type, for one that did not decode in a worker.
    pub(super) arg_type: &'static str,
    pub(super) agg: Arc<Mutex<MapAgg<R>>>,
}

impl<R: Send + Sync + 'static> Entry for ChunkEntry<R> {
    fn ended(&self) -> bool {
        self.fut.done()
    }

    fn deliver(self: Box<Self>, forced: Option<Error>) {
        let outcome = match forced {
            Some(e) => Err(e),
            None => self.fut.into_result(),
        };
        let mut agg = lock(&self.agg);
        // The user's values dropped here (the job has failed, so nothing
        // will use them: MP27) are dropped one by one under
        // `drop_caught`: a `Drop` that panics must not stop this delivery,
        // or the job would never settle and its callbacks never run.
        match outcome {
            Ok(items) => {
                for (i, item) in items.into_results(self.arg_type).enumerate() {
                    match item {
                        Ok(v) if agg.first_error.is_none() => agg.slots[self.start + i] = Some(v),
                        Ok(v) => drop_caught(v, "a result of a failed map_async"),
                        Err(e) => {
                            agg.first_error.get_or_insert(e);
                        }
                    }
                }
            }
            Err(e) => {
                agg.first_error
                    .get_or_insert(crate::map::chunk_error::<R>(e, self.items));
            }
        }
        if agg.first_error.is_some() {
            for v in std::mem::take(&mut agg.slots).into_iter().flatten() {
                drop_caught(v, "a result of a failed map_async");
            }
        }
        agg.left = agg.left.saturating_sub(self.items);
        if agg.left > 0 {
            return;
        }
        let Some((callbacks, promise)) = agg.finish.take() else {
            return;
        };
        let outcome = match agg.first_error.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut agg.slots)
                .into_iter()
                .map(|v| v.expect("every slot is filled once every chunk succeeded"))
                .collect()),
        };
        drop(agg);
        async_result::settle(outcome, callbacks, promise);
    }
}
