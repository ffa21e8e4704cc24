//! A chunk of map items: many inputs in one task, one result per item.
//!
//! With `chunksize > 1`, [`map_with`](crate::ExecutorExt::map_with) and the
//! [`Pool`](crate::Pool) maps send each run of items as one task: one frame
//! to a process worker instead of one per item. CPython's
//! `ProcessPoolExecutor` then fails the whole chunk when one item fails
//! (M10). Here every item keeps its own result (decision 2), wherever it
//! fails:
//!
//! * **running**: [`run_items`] runs each item under `catch_unwind`; a
//!   panic is that item's [`ItemError::Panicked`], with the worker's
//!   backtrace when one was captured (decision 8);
//! * **its result coming back from a process worker**: [`ChunkResult`]
//!   serializes each value on its own, so a value that does not serialize
//!   (or panics doing so) in the worker, or does not deserialize in the
//!   parent, fails only its item (D10);
//! * **its argument going to a process worker**: a chunk whose argument
//!   does not encode (an item does not serialize, or the chunk is larger
//!   than a frame) comes back from
//!   [`Feed::submit_chunk`](crate::executor::Feed::submit_chunk) as its
//!   items, which the caller then sends one by one, so that only the item
//!   at fault fails (D1), naming the item's type;
//! * **its argument arriving in the worker**: [`ChunkArgs`] are sent item
//!   by item too, so an argument whose `Deserialize` rejects it (or
//!   panics) fails only its item, as `Error::Decode` naming the item's
//!   type.
//!
//! A chunk whose worker dies, or whose results together exceed
//! `max_frame_bytes`, fails each of its items with that error.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize};

use crate::error::take_panic_message;
use crate::executor::Feed;
use crate::process::entry::{forget_last_backtrace, take_last_backtrace};
use crate::{Error, Executor, Future, Portable};

/// Why one item of a chunk has no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ItemError {
    /// The item's call panicked (or its result's `Serialize` did).
    Panicked {
        message: String,
        /// The worker's backtrace text, when one was captured.
        backtrace: Option<String>,
    },
    /// Its result did not serialize in the worker.
    Encode { message: String },
    /// Its result did not deserialize in the parent.
    Decode { message: String },
    /// Its argument did not deserialize in the worker.
    ArgDecode { message: String },
}

impl ItemError {
    /// The crate's error for an item whose result type is `R`, and whose
    /// argument's type is named `arg_type`.
    pub(crate) fn into_error<R>(self, arg_type: &'static str) -> Error {
        let type_name = std::any::type_name::<R>();
        match self {
            ItemError::Panicked { message, backtrace } => Error::Panicked { message, backtrace },
            ItemError::Encode { message } => Error::Encode { type_name, message },
            ItemError::Decode { message } => Error::Decode { type_name, message },
            ItemError::ArgDecode { message } => Error::Decode {
                type_name: arg_type,
                message,
            },
        }
    }
}

/// A chunk task's argument: its items, in input order.
///
/// Sent in the same wire form as [`ChunkResult`], each item encoded on its
/// own, so that in the worker an item whose `Deserialize` rejects it (or
/// panics) becomes that item's [`ItemError::ArgDecode`] and the others
/// run. An item that does not serialize in the parent fails the encoding
/// of the whole chunk, which is then sent item by item (D1).
#[derive(Debug)]
pub(crate) enum ChunkArgs<A> {
    /// Every item present: as the caller gave them (the parent, a thread
    /// pool), or as a worker decoded them when every one decoded.
    Items(Vec<A>),
    /// As a worker decoded them, when one did not decode.
    Decoded(Vec<Result<A, ItemError>>),
}

impl<A> ChunkArgs<A> {
    /// The items, for sending one by one. Only the parent sends items,
    /// and its chunks are `Items`; a `Decoded` one (a worker's) keeps the
    /// items that decoded.
    pub(crate) fn into_items(self) -> Vec<A> {
        match self {
            ChunkArgs::Items(items) => items,
            ChunkArgs::Decoded(items) => {
                debug_assert!(items.iter().all(Result::is_ok), "a worker's chunk re-sent");
                items.into_iter().filter_map(Result::ok).collect()
            }
        }
    }
}

/// What a chunk task returns: one result per item, in input order.
///
/// Serialized item by item (see the module docs): its `Serialize` never
/// fails because of one item, and its `Deserialize` turns an item that does
/// not decode into that item's [`ItemError::Decode`].
#[derive(Debug)]
pub(crate) enum ChunkResult<R> {
    /// Every item a value: how a chunk whose items all succeeded decodes,
    /// in one pass.
    Values(Vec<R>),
    /// Each item's value or error.
    Items(Vec<Result<R, ItemError>>),
}

impl<R> ChunkResult<R> {
    /// Each item's result, as the crate's `Result`; `arg_type` names the
    /// items' argument type (for one that did not decode in the worker).
    pub(crate) fn into_results(
        self,
        arg_type: &'static str,
    ) -> impl Iterator<Item = Result<R, Error>> {
        let (values, items) = match self {
            ChunkResult::Values(values) => (values, Vec::new()),
            ChunkResult::Items(items) => (Vec::new(), items),
        };
        values.into_iter().map(Ok).chain(
            items
                .into_iter()
                .map(move |r| r.map_err(|e| e.into_error::<R>(arg_type))),
        )
    }
}

/// Runs `func` on each item, each under `catch_unwind`: a panic fails only
/// its own item, as does an argument that did not decode.
pub(crate) fn run_items<F, A, R>(func: F, args: ChunkArgs<A>) -> ChunkResult<R>
where
    F: Fn(A) -> R,
{
    // The worker's panic hook records the backtrace of every panic (when
    // backtraces are on), so what is taken after an item's panic is that
    // panic's; one that was never taken is dropped here, once.
    forget_last_backtrace();
    let run = |a: A| {
        catch_unwind(AssertUnwindSafe(|| func(a))).map_err(|payload| ItemError::Panicked {
            message: take_panic_message(payload),
            backtrace: take_last_backtrace(),
        })
    };
    ChunkResult::Items(match args {
        ChunkArgs::Items(items) => items.into_iter().map(run).collect(),
        ChunkArgs::Decoded(items) => items.into_iter().map(|a| a.and_then(run)).collect(),
    })
}

/// The most items a chunk reserves room for before they come.
const RESERVE_AT_MOST: usize = 4096;

/// Pulls chunks of up to `size` items from `inputs` and submits each as one
/// task. A chunk whose argument does not encode is sent again item by item,
/// one item per pull, so that a map's window still bounds the tasks in
/// flight. Stops after the executor refuses a chunk (M15). An input that
/// panics part-way through a chunk loses none of the items it gave before
/// (MP15): they begin the next chunk.
pub(crate) struct ChunkFeed<'a, E: ?Sized, I: Iterator, C> {
    feed: Feed<'a, E>,
    inputs: I,
    size: usize,
    run_chunk: C,
    /// Items of a chunk that did not encode as a whole, still to be sent.
    split: VecDeque<I::Item>,
    /// Items pulled for a chunk when the input panicked: the next chunk's
    /// first items.
    carried: Vec<I::Item>,
}

impl<'a, E, I, C, A, R> ChunkFeed<'a, E, I, C>
where
    E: Executor + ?Sized,
    I: Iterator<Item = A>,
    C: Fn(ChunkArgs<A>) -> ChunkResult<R> + Copy + Send + Sync + 'static,
    A: Portable,
    R: Portable + Sync,
{
    pub(crate) fn new(executor: &'a E, run_chunk: C, inputs: I, size: usize) -> Self {
        ChunkFeed {
            feed: Feed::new(executor),
            inputs,
            size: size.max(1),
            run_chunk,
            split: VecDeque::new(),
            carried: Vec::new(),
        }
    }

    /// Up to `size` items from the input. If the input panics part-way,
    /// the items it gave are kept for the next chunk before the panic goes
    /// on to the caller, as an unchunked map loses no item the input gave.
    fn pull_chunk(&mut self) -> Vec<A> {
        let mut items = std::mem::take(&mut self.carried);
        let (size, inputs) = (self.size, &mut self.inputs);
        // Reserved for at most the input's hint and `RESERVE_AT_MOST`:
        // `size` and the hint can both be huge (`chunksize(usize::MAX)`
        // over `0..u64::MAX`), and a chunk that really is that large grows
        // as its items come.
        let wanted = size.min(inputs.size_hint().0).min(RESERVE_AT_MOST);
        items.reserve(wanted.saturating_sub(items.len()));
        let pulled = catch_unwind(AssertUnwindSafe(|| {
            while items.len() < size {
                match inputs.next() {
                    Some(item) => items.push(item),
                    None => break,
                }
            }
        }));
        if let Err(payload) = pulled {
            self.carried = items;
            std::panic::resume_unwind(payload);
        }
        items
    }

    /// Whether the executor refused a chunk (no more are sent).
    pub(crate) fn refused(&self) -> bool {
        self.feed.refused
    }

    /// Submits the next chunk: its future and how many items it holds.
    /// `None` once the input is used up, or after a refusal.
    pub(crate) fn next(&mut self) -> Option<(Future<ChunkResult<R>>, usize)> {
        loop {
            if self.feed.refused {
                return None;
            }
            let items: Vec<A> = match self.split.pop_front() {
                Some(item) => vec![item],
                None => self.pull_chunk(),
            };
            let n = items.len();
            if n == 0 {
                return None;
            }
            match self.feed.submit_chunk(self.run_chunk, items) {
                Ok(future) => return Some((future, n)),
                Err(items) => self.split.extend(items),
            }
        }
    }
}

// How a chunk's arguments and results cross between processes.
mod wire;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Named;

    #[test]
    fn m10_run_items_fails_only_the_item_that_panics() {
        let c = run_items(
            |x: u32| {
                assert!(x != 2, "two is bad");
                x * 10
            },
            ChunkArgs::Items(vec![1, 2, 3]),
        );
        let out: Vec<_> = c.into_results("u32").collect();
        assert_eq!(out[0], Ok(10));
        assert!(
            matches!(&out[1], Err(Error::Panicked { message, .. }) if message.contains("two is bad")),
            "{:?}",
            out[1]
        );
        assert_eq!(out[2], Ok(30));
    }

    #[test]
    fn item_errors_name_the_items_result_type() {
        let e = ItemError::Encode {
            message: "m".into(),
        }
        .into_error::<Named>("u32");
        assert!(
            matches!(e, Error::Encode { type_name, .. } if type_name.ends_with("Named")),
            "{e:?}"
        );
    }
}
