//! The mapping half of [`Pool`]'s API: `map`, `starmap` and `imap` in
//! their blocking, async and chunked forms (MP8-MP16). The pool's state and
//! lifecycle live in the parent module.

use super::*;

impl Pool {
    // -------------------------------------------------------------- map --

    /// Maps `func` over `inputs` and waits for every result (`map`, MP8).
    ///
    /// Eager like CPython: the inputs are collected and every chunk is
    /// submitted at once (use [`imap`](Self::imap) for bounded memory). The
    /// chunk size is `ceil(len / (4 × processes))`. There is no fail-fast:
    /// every chunk runs, then the values come back in input order, or the
    /// first error *in arrival order* (as CPython's `map`). For each item's
    /// own `Result`, collect [`imap`](Self::imap) instead.
    pub fn map<F, A, R, I>(&self, func: F, inputs: I) -> Result<Vec<R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
    {
        self.map_chunked(func, inputs, None)
    }

    /// [`map`](Self::map) with an explicit chunk size (`None`: the default
    /// formula; zero counts as one).
    pub fn map_chunked<F, A, R, I>(
        &self,
        func: F,
        inputs: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
    {
        self.not_in_callback("map()")?;
        self.map_async_with(func, inputs, chunksize, Callbacks::new())?
            .into_result()
    }

    /// Like [`map`](Self::map), but returns an [`AsyncResult`] of the whole
    /// ordered list at once (`map_async`).
    pub fn map_async<F, A, R, I>(&self, func: F, inputs: I) -> Result<AsyncResult<Vec<R>>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(func, inputs, None, Callbacks::new())
    }

    /// [`map_async`](Self::map_async) with a chunk size and callbacks
    /// (MP9): once every chunk has finished, `callback` gets the whole list
    /// in input order, or `error_callback` the first error in arrival
    /// order, exactly once. An empty input gives `[]` at once, and still
    /// calls `callback` (CPython calls nothing then).
    pub fn map_async_with<F, A, R, I>(
        &self,
        func: F,
        inputs: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
    {
        // Outside the lifecycle lock: the inputs are user code.
        if self.state() != Lifecycle::Running {
            return Err(Error::Shutdown);
        }
        let items: Vec<A> = inputs.into_iter().collect();
        let len = items.len();
        let size = chunksize
            .unwrap_or_else(|| default_chunksize(len, self.ex.max_workers()))
            .max(1);
        self.running(move || {
            let (promise, mut result) = AsyncResult::new(self.ex.__thread_pool_id());
            let agg = Arc::new(Mutex::new(MapAgg {
                slots: std::iter::repeat_with(|| None).take(len).collect(),
                left: len,
                first_error: None,
                finish: Some((callbacks, promise)),
            }));
            if len == 0 {
                // Delivered on the handler thread like any other result.
                let (p, done) = Promise::<ChunkResult<R>>::new();
                let _ = p.set_result(ChunkResult::Values(Vec::new()));
                let agg = agg.clone();
                self.track(done, move |fut| {
                    Box::new(ChunkEntry {
                        fut,
                        start: 0,
                        items: 0,
                        arg_type: std::any::type_name::<A>(),
                        agg,
                    })
                });
                return result;
            }
            let run_chunk = chunk_task(func);
            let mut chunks = ChunkFeed::new(&*self.ex, run_chunk, items.into_iter(), size);
            let mut start = 0;
            while let Some((fut, n)) = chunks.next() {
                // No input is sent after a refusal; the refused chunk,
                // which fails the job, stands for the items after it too,
                // so that the job settles.
                let n = if chunks.refused() { len - start } else { n };
                result.behind(&fut);
                let agg = agg.clone();
                self.track(fut, move |fut| {
                    Box::new(ChunkEntry {
                        fut,
                        start,
                        items: n,
                        arg_type: std::any::type_name::<A>(),
                        agg,
                    })
                });
                start += n;
            }
            result
        })
    }

    /// `starmap`: `func` takes several arguments, each input is their tuple
    /// (MP10): `pool.starmap(add, [(1, 2), (3, 4)])` with
    /// `fn add(a: i32, b: i32) -> i32`. Otherwise [`map`](Self::map).
    pub fn starmap<F, Args, R, I>(&self, func: F, inputs: I) -> Result<Vec<R>, Error>
    where
        F: StarFn<Args, R> + Copy + Send + Sync + 'static,
        Args: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = Args>,
    {
        self.map(move |args: Args| func.call(args), inputs)
    }

    /// `starmap_async`: [`starmap`](Self::starmap) returning an
    /// [`AsyncResult`].
    pub fn starmap_async<F, Args, R, I>(
        &self,
        func: F,
        inputs: I,
    ) -> Result<AsyncResult<Vec<R>>, Error>
    where
        F: StarFn<Args, R> + Copy + Send + Sync + 'static,
        Args: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = Args>,
    {
        self.starmap_async_with(func, inputs, None, Callbacks::new())
    }

    /// [`starmap_async`](Self::starmap_async) with a chunk size and
    /// callbacks, as [`map_async_with`](Self::map_async_with).
    pub fn starmap_async_with<F, Args, R, I>(
        &self,
        func: F,
        inputs: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>, Error>
    where
        F: StarFn<Args, R> + Copy + Send + Sync + 'static,
        Args: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = Args>,
    {
        self.map_async_with(
            move |args: Args| func.call(args),
            inputs,
            chunksize,
            callbacks,
        )
    }

    // ------------------------------------------------------------- imap --

    /// Maps lazily, yielding each item's `Result` in input order (`imap`,
    /// MP12), with at most `2 × processes` tasks in flight: unlike CPython
    /// (MP16), a huge or endless input is read only as results are
    /// consumed. Dropping the iterator cancels what it has not yielded.
    ///
    /// The iterator keeps submitting after [`close`](Self::close), as
    /// CPython's does; after [`join`](Self::join) or
    /// [`terminate`](Self::terminate), the first item it then submits
    /// yields [`Error::Shutdown`] and the iteration ends there (M15): the
    /// rest of the input is not read. [`imap_unordered`](Self::imap_unordered)
    /// does the same.
    pub fn imap<'a, F, A, R, I>(&'a self, func: F, inputs: I) -> Result<Map<'a, R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        self.imap_with(func, inputs, MapOptions::new())
    }

    /// [`imap`](Self::imap) with [`MapOptions`]: `chunksize` (default 1,
    /// as CPython's `imap`; the window then counts chunks), the in-flight
    /// `window` and a deadline.
    pub fn imap_with<'a, F, A, R, I>(
        &'a self,
        func: F,
        inputs: I,
        options: MapOptions,
    ) -> Result<Map<'a, R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        self.running(|| ())?;
        Ok(self.ex.map_with(func, inputs, options))
    }

    /// Like [`imap`](Self::imap), but yields in completion order
    /// (`imap_unordered`, MP14), with the same bounded window. Like
    /// [`ExecutorExt::map_unordered`], it
    /// blocks without running other tasks: inside a task of the same
    /// thread-backed pool, prefer [`imap`](Self::imap), whose waits help
    /// run queued work (on a one-thread pool this one waits forever).
    pub fn imap_unordered<'a, F, A, R, I>(
        &'a self,
        func: F,
        inputs: I,
    ) -> Result<ImapUnordered<'a, R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        self.imap_unordered_with(func, inputs, MapOptions::new())
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` and
    /// `window` from [`MapOptions`]. A `timeout` is refused
    /// ([`Error::InvalidConfig`]): completion order has no position at
    /// which to report it.
    pub fn imap_unordered_with<'a, F, A, R, I>(
        &'a self,
        func: F,
        inputs: I,
        options: MapOptions,
    ) -> Result<ImapUnordered<'a, R>, Error>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Portable,
        R: Portable + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        if options.timeout.is_some() {
            return Err(Error::InvalidConfig(
                "imap_unordered takes no timeout (use imap_with)".into(),
            ));
        }
        self.running(|| ())?;
        Ok(ImapUnordered::new(
            &self.ex,
            chunk_task(func),
            inputs,
            &options,
        ))
    }
}
