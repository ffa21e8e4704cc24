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
//!   at fault fails (D1), naming the item's type.
//!
//! One case still fails a whole chunk: an argument whose `Deserialize`
//! rejects it in the worker (the chunk's argument is decoded as one value).
//! A chunk whose worker dies, or whose results together exceed
//! `max_frame_bytes`, fails each of its items with that error.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::error::take_panic_message;
use crate::executor::Feed;
use crate::process::codec;
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
}

impl ItemError {
    /// The crate's error for an item whose result type is `R`.
    pub(crate) fn into_error<R>(self) -> Error {
        let type_name = std::any::type_name::<R>();
        match self {
            ItemError::Panicked { message, backtrace } => Error::Panicked { message, backtrace },
            ItemError::Encode { message } => Error::Encode { type_name, message },
            ItemError::Decode { message } => Error::Decode { type_name, message },
        }
    }
}

/// What a chunk task returns: one result per item, in input order.
///
/// Serialized item by item (see the module docs): its `Serialize` never
/// fails because of one item, and its `Deserialize` turns an item that does
/// not decode into that item's [`ItemError::Decode`].
#[derive(Debug)]
pub(crate) struct ChunkResult<R>(pub(crate) Vec<Result<R, ItemError>>);

impl<R> ChunkResult<R> {
    /// Each item's result, as the crate's `Result`.
    pub(crate) fn into_results(self) -> impl Iterator<Item = Result<R, Error>> {
        self.0
            .into_iter()
            .map(|r| r.map_err(ItemError::into_error::<R>))
    }
}

/// Runs `func` on each item, each under `catch_unwind`: a panic fails only
/// its own item.
pub(crate) fn run_items<F, A, R>(func: F, items: Vec<A>) -> ChunkResult<R>
where
    F: Fn(A) -> R,
{
    // The worker's panic hook records the backtrace of every panic (when
    // backtraces are on), so what is taken after an item's panic is that
    // panic's; one that was never taken is dropped here, once.
    forget_last_backtrace();
    ChunkResult(
        items
            .into_iter()
            .map(|a| {
                catch_unwind(AssertUnwindSafe(|| func(a))).map_err(|payload| ItemError::Panicked {
                    message: take_panic_message(payload),
                    backtrace: take_last_backtrace(),
                })
            })
            .collect(),
    )
}

/// Pulls chunks of up to `size` items from `inputs` and submits each as one
/// task. A chunk whose argument does not encode is sent again item by item,
/// one item per pull, so that a map's window still bounds the tasks in
/// flight. Stops after the executor refuses a chunk (M15).
pub(crate) struct ChunkFeed<'a, E: ?Sized, I: Iterator, C> {
    feed: Feed<'a, E>,
    inputs: I,
    size: usize,
    run_chunk: C,
    /// Items of a chunk that did not encode as a whole, still to be sent.
    split: VecDeque<I::Item>,
}

impl<'a, E, I, C, A, R> ChunkFeed<'a, E, I, C>
where
    E: Executor + ?Sized,
    I: Iterator<Item = A>,
    C: Fn(Vec<A>) -> ChunkResult<R> + Copy + Send + Sync + 'static,
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
        }
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
                None => self.inputs.by_ref().take(self.size).collect(),
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

// The wire form of a chunk's results, one serde byte string: a header
// (the item count, then per item a tag byte, [`VALUE`] or [`FAILED`], and
// a LEB128 length) followed by the items' bodies (the value, or its
// [`ItemError`]), each encoded on its own. One serializer writes every
// body ([`codec::SeqWriter`]), and the header is parsed by hand: per item
// no serde enum is built and moved, so a large chunk of small values costs
// little more than encoding them in one sequence.

const VALUE: u8 = 0;
const FAILED: u8 = 1;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 length at the front of `bytes`; `None` if it is cut or
/// longer than a `usize`.
fn take_len(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let bits = usize::from(b & 0x7f);
        let part = bits.checked_shl(7 * i as u32)?;
        if part >> (7 * i) != bits {
            return None;
        }
        n |= part;
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// The codec's own message of an encode or decode error (the item's type
/// is named again on the parent's side, by `ItemError::into_error`).
fn codec_message(e: Error) -> String {
    match e {
        Error::Encode { message, .. } | Error::Decode { message, .. } => message,
        other => other.to_string(),
    }
}

/// Reads one header entry: a tag and a length.
fn take_entry(bytes: &[u8]) -> Option<(u8, usize, &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (len, rest) = take_len(rest)?;
    Some((tag, len, rest))
}

/// Writes `value` as the next body, catching a panic of its `Serialize`
/// (whatever it wrote is dropped).
fn write_value<R: Serialize>(w: &mut codec::SeqWriter, value: &R) -> Result<usize, ItemError> {
    let start = w.bytes().len();
    match catch_unwind(AssertUnwindSafe(|| w.push(value))) {
        Ok(Ok(len)) => Ok(len),
        Ok(Err(e)) => Err(ItemError::Encode {
            message: codec_message(e),
        }),
        Err(payload) => {
            w.truncate(start);
            Err(ItemError::Panicked {
                message: format!(
                    "serializing the result panicked: {}",
                    take_panic_message(payload)
                ),
                backtrace: take_last_backtrace(),
            })
        }
    }
}

impl<R: Serialize> Serialize for ChunkResult<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        put_len(&mut out, self.0.len());
        let mut bodies = codec::SeqWriter::new();
        for item in &self.0 {
            let written = match item {
                Ok(value) => write_value(&mut bodies, value),
                Err(e) => Err(e.clone()),
            };
            let (tag, len) = match written {
                Ok(len) => (VALUE, len),
                Err(e) => (FAILED, bodies.push(&e).map_err(serde::ser::Error::custom)?),
            };
            out.push(tag);
            put_len(&mut out, len);
        }
        out.extend_from_slice(bodies.bytes());
        s.serialize_bytes(&out)
    }
}

impl<'de, R: serde::de::DeserializeOwned> Deserialize<'de> for ChunkResult<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<R>(PhantomData<R>);
        impl<R: serde::de::DeserializeOwned> Visitor<'_> for V<R> {
            type Value = ChunkResult<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chunk's results")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                parse::<R>(bytes).ok_or_else(|| E::custom("a malformed chunk result"))
            }
        }
        d.deserialize_bytes(V(PhantomData))
    }
}

/// Parses the wire form; `None` if it is malformed (the whole chunk then
/// fails with a decode error). A value that does not decode, or whose
/// `Deserialize` panics, fails only its item.
fn parse<R: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<ChunkResult<R>> {
    let (count, entries) = take_len(bytes)?;
    // Where the bodies start: past `count` header entries.
    let mut bodies = entries;
    for _ in 0..count {
        bodies = take_entry(bodies)?.2;
    }
    // The count comes from the peer: trust it only as far as the bytes go.
    let mut items = Vec::with_capacity(count.min(bytes.len()));
    let mut header = entries;
    for _ in 0..count {
        let (tag, len, rest) = take_entry(header)?;
        header = rest;
        let body = bodies.get(..len)?;
        bodies = &bodies[len..];
        items.push(match tag {
            VALUE => codec::decode_caught::<R>(body).map_err(|e| ItemError::Decode {
                message: codec_message(e),
            }),
            FAILED => Err(codec::decode::<ItemError>(body).ok()?),
            _ => return None,
        });
    }
    bodies.is_empty().then_some(ChunkResult(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// Serializes like a `u32`, except 13, which it refuses.
    #[derive(Debug, PartialEq)]
    struct NotThirteen(u32);

    impl Serialize for NotThirteen {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0 == 13 {
                return Err(serde::ser::Error::custom("13 refuses"));
            }
            s.serialize_u32(self.0)
        }
    }

    impl<'de> Deserialize<'de> for NotThirteen {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match u32::deserialize(d)? {
                7 => Err(de::Error::custom("7 refuses")),
                99 => panic!("99 panics"),
                n => Ok(NotThirteen(n)),
            }
        }
    }

    fn round_trip<R: Serialize + DeserializeOwned>(c: &ChunkResult<R>) -> ChunkResult<R> {
        let bytes = codec::encode(c).expect("a chunk's result always encodes");
        codec::decode(&bytes).expect("and decodes")
    }

    #[test]
    fn m10_values_and_item_errors_round_trip_in_order() {
        let panic = ItemError::Panicked {
            message: "boom".into(),
            backtrace: Some("at f".into()),
        };
        let c = ChunkResult(vec![Ok(1u64), Err(panic.clone()), Ok(3)]);
        assert_eq!(round_trip(&c).0, vec![Ok(1), Err(panic), Ok(3)]);
    }

    #[test]
    fn d10_a_result_that_does_not_serialize_fails_only_its_item() {
        let c = ChunkResult(vec![
            Ok(NotThirteen(12)),
            Ok(NotThirteen(13)),
            Ok(NotThirteen(14)),
        ]);
        let back = round_trip(&c).0;
        assert_eq!(back[0], Ok(NotThirteen(12)));
        assert!(
            matches!(&back[1], Err(ItemError::Encode { message }) if message.contains("Serialize")),
            "{:?}",
            back[1]
        );
        assert_eq!(back[2], Ok(NotThirteen(14)));
    }

    #[test]
    fn d11_a_result_that_does_not_deserialize_fails_only_its_item() {
        let c = ChunkResult(vec![
            Ok(NotThirteen(6)),
            Ok(NotThirteen(7)),
            Ok(NotThirteen(8)),
        ]);
        let back = round_trip(&c).0;
        assert_eq!(back[0], Ok(NotThirteen(6)));
        assert!(
            matches!(&back[1], Err(ItemError::Decode { .. })),
            "{:?}",
            back[1]
        );
        assert_eq!(back[2], Ok(NotThirteen(8)));
    }

    #[test]
    fn d12_a_deserialize_that_panics_fails_only_its_item() {
        let c = ChunkResult(vec![Ok(NotThirteen(99)), Ok(NotThirteen(100))]);
        let back = round_trip(&c).0;
        assert!(
            matches!(&back[0], Err(ItemError::Decode { message }) if message.contains("99 panics")),
            "{:?}",
            back[0]
        );
        assert_eq!(back[1], Ok(NotThirteen(100)));
    }

    #[test]
    fn a_serialize_that_panics_fails_only_its_item() {
        struct Explodes(bool);
        impl Serialize for Explodes {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                assert!(!self.0, "serialize exploded");
                s.serialize_bool(self.0)
            }
        }
        let c = ChunkResult(vec![Ok(Explodes(true)), Ok(Explodes(false))]);
        let bytes = codec::encode(&c).expect("the chunk still encodes");
        let back: ChunkResult<bool> = codec::decode(&bytes).expect("and decodes");
        assert!(
            matches!(&back.0[0], Err(ItemError::Panicked { message, .. }) if message.contains("serialize exploded")),
            "{:?}",
            back.0[0]
        );
        assert_eq!(back.0[1], Ok(false));
    }

    #[test]
    fn m10_run_items_fails_only_the_item_that_panics() {
        let c = run_items(
            |x: u32| {
                assert!(x != 2, "two is bad");
                x * 10
            },
            vec![1, 2, 3],
        );
        let out: Vec<_> = c.into_results().collect();
        assert_eq!(out[0], Ok(10));
        assert!(
            matches!(&out[1], Err(Error::Panicked { message, .. }) if message.contains("two is bad")),
            "{:?}",
            out[1]
        );
        assert_eq!(out[2], Ok(30));
    }

    /// The parent parses bytes a worker sent: cut or corrupted, they are
    /// refused (the chunk fails as a whole), never a panic or a hang.
    #[test]
    fn a_cut_or_corrupted_chunk_result_is_refused_without_panicking() {
        let c = ChunkResult(vec![
            Ok(300u64),
            Err(ItemError::Encode {
                message: "m".into(),
            }),
            Ok(7),
        ]);
        let wire = codec::encode(&c).unwrap();
        let inner = &wire[1..]; // past the byte string's own length
        assert_eq!(parse::<u64>(inner).map(|c| c.0.len()), Some(3));
        for cut in 0..inner.len() {
            assert!(parse::<u64>(&inner[..cut]).is_none(), "cut at {cut}");
        }
        for at in 0..inner.len() {
            for byte in [0x00, 0x02, 0x7f, 0x80, 0xff] {
                let mut bad = inner.to_vec();
                bad[at] = byte;
                let _ = parse::<u64>(&bad);
            }
        }
        assert!(parse::<u64>(&[0xff; 11]).is_none(), "a length past usize");
    }

    #[test]
    fn item_errors_name_the_items_result_type() {
        let e = ItemError::Encode {
            message: "m".into(),
        }
        .into_error::<NotThirteen>();
        assert!(
            matches!(e, Error::Encode { type_name, .. } if type_name.ends_with("NotThirteen")),
            "{e:?}"
        );
    }
}
