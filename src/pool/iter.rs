//! [`ImapUnordered`]: `imap_unordered`'s iterator, chunked and bounded.

use crate::sync::{Arc, Mutex};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::chunk::{ChunkArgs, ChunkFeed, ChunkResult};
use crate::map::MapUnordered;
use crate::sync::lock;
use crate::{Error, Executor, MapOptions, Portable};

/// The results of [`Pool::imap_unordered`](crate::Pool::imap_unordered):
/// each item's `Result` in completion order (MP14).
///
/// At most `window` tasks (chunks, with a `chunksize`) are in flight; the
/// input is read only as results are consumed. Items of one chunk come out
/// together, in their input order. Dropping the iterator cancels the tasks
/// not yet yielded. For the input index of each result, use
/// [`ExecutorExt::map_unordered`](crate::ExecutorExt::map_unordered) on [`Pool::executor`](crate::Pool::executor).
pub struct ImapUnordered<'a, R> {
    inner: MapUnordered<'a, ChunkResult<R>>,
    /// Items per chunk, by chunk index, until the chunk is yielded (a chunk
    /// that fails as a whole fails each of its items).
    lens: Arc<Mutex<HashMap<usize, usize>>>,
    ready: VecDeque<Result<R, Error>>,
    /// The items' argument type, for one that did not decode in a worker.
    arg_type: &'static str,
}

impl<R> fmt::Debug for ImapUnordered<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("in_flight", &self.inner.in_flight())
            .field("ready", &self.ready.len())
            .finish()
    }
}

impl<'a, R: Portable + Sync> ImapUnordered<'a, R> {
    pub(crate) fn new<C, A, I>(
        ex: &'a Arc<dyn Executor>,
        run_chunk: C,
        inputs: I,
        options: &MapOptions,
    ) -> Self
    where
        C: Fn(ChunkArgs<A>) -> ChunkResult<R> + Copy + Send + Sync + 'static,
        A: Portable,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let size = options.chunksize.unwrap_or(1).max(1);
        let window = options.window_for(ex.max_workers());
        let lens = Arc::new(Mutex::new(HashMap::new()));
        let lens2 = lens.clone();
        let mut index = 0usize;
        // Stops pulling input after a refused chunk, as `imap` does (M15):
        // an endless input must not be fed to a terminated pool forever.
        let mut chunks = ChunkFeed::new(&**ex, run_chunk, inputs.into_iter(), size);
        let submit = move || {
            let (future, n) = chunks.next()?;
            lock(&lens2).insert(index, n);
            index += 1;
            Some(future)
        };
        ImapUnordered {
            inner: MapUnordered::new(Box::new(submit), window),
            lens,
            ready: VecDeque::new(),
            arg_type: std::any::type_name::<A>(),
        }
    }

    /// Tasks (chunks) submitted and not yet yielded; never more than the
    /// window.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// [`next`](Iterator::next), waiting at most `timeout` for a result
    /// (`IMapIterator.next(timeout)`, MP12): `Err(Error::Timeout)` if none
    /// is ready by then; the iteration goes on. `Ok(None)` once every
    /// result was yielded.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Result<R, Error>>, Error> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            let Some((index, outcome)) = self.inner.next_timeout(timeout)? else {
                return Ok(None);
            };
            self.unpack(index, outcome);
        }
    }

    /// Queues the results of the chunk with index `index`, each at its
    /// own position; a chunk that failed as a whole fails each item.
    fn unpack(&mut self, index: usize, outcome: Result<ChunkResult<R>, Error>) {
        let n = lock(&self.lens).remove(&index).unwrap_or(1);
        match outcome {
            Ok(items) => self.ready.extend(items.into_results(self.arg_type)),
            Err(e) => {
                let e = crate::map::chunk_error::<R>(e, n);
                self.ready.extend(std::iter::repeat_n(e, n).map(Err))
            }
        }
    }
}

impl<R: Portable + Sync> Iterator for ImapUnordered<'_, R> {
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            let (index, outcome) = self.inner.next()?;
            self.unpack(index, outcome);
        }
    }
}
