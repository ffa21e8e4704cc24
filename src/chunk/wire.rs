//! The wire form of a chunk's results, and of its arguments, as the
//! `Serialize` and `Deserialize` impls of [`ChunkResult`] and
//! [`ChunkArgs`]: one serde byte string, a header (the item count, then
//! per item a tag byte, [`VALUE`] or [`FAILED`], and a LEB128 length)
//! followed by the items' bodies (the value, or its [`ItemError`]), each
//! encoded on its own. One serializer writes every
//! body ([`codec::SeqWriter`]), and the header is parsed by hand: per item
//! no serde enum is built and moved, so a large chunk of small values costs
//! little more than encoding them in one sequence.
//!
//! A value that does not decode fails only its item; see [`parse`].

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{ChunkArgs, ChunkResult, ItemError};
use crate::Error;
use crate::error::take_panic_message;
use crate::process::codec;
use crate::process::entry::take_last_backtrace;

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
/// (whatever it wrote is dropped): a result that does not serialize, or
/// whose `Serialize` panics, fails only its item, with an encode error.
fn write_value<R: Serialize>(w: &mut codec::SeqWriter, value: &R) -> Result<usize, ItemError> {
    let start = w.bytes().len();
    match catch_unwind(AssertUnwindSafe(|| w.push(value))) {
        Ok(Ok(len)) => Ok(len),
        Ok(Err(e)) => Err(ItemError::Encode {
            message: codec_message(e),
        }),
        // As for a task's own result (`Error::Encode` says so): not the
        // task's panic (found by review).
        Err(payload) => {
            w.truncate(start);
            let _ = take_last_backtrace();
            Err(ItemError::Encode {
                message: format!("its Serialize panicked: {}", take_panic_message(payload)),
            })
        }
    }
}

/// The wire form of `items`, each a value (`Ok`) or an item's error.
/// `write` encodes a value as the next body and returns its length, or
/// the item's error to send instead, or fails the whole form.
fn wire_form<'a, T: 'a>(
    items: impl ExactSizeIterator<Item = Result<&'a T, &'a ItemError>>,
    write: impl Fn(&mut codec::SeqWriter, &T) -> Result<Result<usize, ItemError>, Error>,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    put_len(&mut out, items.len());
    let mut bodies = codec::SeqWriter::new();
    for item in items {
        let written = match item {
            Ok(value) => write(&mut bodies, value)?,
            Err(e) => Err(e.clone()),
        };
        let (tag, len) = match written {
            Ok(len) => (VALUE, len),
            Err(e) => (FAILED, bodies.push(&e)?),
        };
        out.push(tag);
        put_len(&mut out, len);
    }
    out.extend_from_slice(bodies.bytes());
    Ok(out)
}

impl<R: Serialize> Serialize for ChunkResult<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let write = |w: &mut codec::SeqWriter, value: &R| Ok(write_value(w, value));
        let bytes = match self {
            ChunkResult::Values(values) => wire_form(values.iter().map(Ok), write),
            ChunkResult::Items(items) => wire_form(items.iter().map(Result::as_ref), write),
        };
        s.serialize_bytes(&bytes.map_err(serde::ser::Error::custom)?)
    }
}

impl<A: Serialize> Serialize for ChunkArgs<A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // An argument that does not serialize fails the whole chunk, which
        // is then sent item by item (see the module docs).
        let strict = |w: &mut codec::SeqWriter, a: &A| w.push(a).map(Ok);
        let bytes = match self {
            ChunkArgs::Items(items) => wire_form(items.iter().map(Ok), strict),
            ChunkArgs::Decoded(items) => wire_form(items.iter().map(Result::as_ref), strict),
        };
        s.serialize_bytes(&bytes.map_err(|e| serde::ser::Error::custom(codec_message(e)))?)
    }
}

/// Deserializes the wire form as a byte string, with `parse`.
fn deserialize_wire<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &'static str,
    parse: fn(&[u8]) -> Option<T>,
) -> Result<T, D::Error> {
    struct V<T> {
        what: &'static str,
        parse: fn(&[u8]) -> Option<T>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<T, E> {
            (self.parse)(bytes).ok_or_else(|| E::custom(format!("malformed {}", self.what)))
        }
    }
    d.deserialize_bytes(V { what, parse })
}

impl<'de, R: serde::de::DeserializeOwned> Deserialize<'de> for ChunkResult<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_wire(d, "a chunk's results", |bytes| {
            Some(
                match parse::<R>(bytes, |message| ItemError::Decode { message })? {
                    Parsed::Values(values) => ChunkResult::Values(values),
                    Parsed::Items(items) => ChunkResult::Items(items),
                },
            )
        })
    }
}

impl<'de, A: serde::de::DeserializeOwned> Deserialize<'de> for ChunkArgs<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_wire(d, "a chunk's arguments", |bytes| {
            Some(
                match parse::<A>(bytes, |message| ItemError::ArgDecode { message })? {
                    Parsed::Values(items) => ChunkArgs::Items(items),
                    Parsed::Items(items) => ChunkArgs::Decoded(items),
                },
            )
        })
    }
}

/// A parsed wire form.
#[derive(Debug)]
enum Parsed<T> {
    /// Every item a value that decoded: the usual case, kept as a plain
    /// `Vec` (a `Result` per item would be several times its size).
    Values(Vec<T>),
    /// Each item's value or error, once one item was not a decoded value.
    Items(Vec<Result<T, ItemError>>),
}

/// A wire form's header and bodies, read an item at a time.
struct Cursor<'a> {
    header: &'a [u8],
    bodies: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// The next item's tag and body; `None` if the form is malformed.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (tag, len, rest) = take_entry(self.header)?;
        self.header = rest;
        let body = self.bodies.get(..len)?;
        self.bodies = &self.bodies[len..];
        Some((tag, body))
    }
}

/// Decodes a body of tag `tag`: a value, or the item's error from the
/// other side. `None` if the tag or an error body is malformed.
fn decode_body<T: serde::de::DeserializeOwned>(
    tag: u8,
    body: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, ItemError>,
) -> Option<Result<T, ItemError>> {
    match tag {
        VALUE => Some(decode(body)),
        FAILED => Some(Err(codec::decode::<ItemError>(body).ok()?)),
        _ => None,
    }
}

/// Parses the wire form, decoding each value once; `None` if it is
/// malformed (the whole chunk then fails with a decode error). A value
/// that does not decode, or whose `Deserialize` panics, fails only its
/// item, with `failed(message)`.
///
/// Values are decoded one after another under a single `catch_unwind`
/// while every item is a value that decodes (nearly always); after the
/// first item that is not, each item is decoded under its own. So no
/// item pays for a `catch_unwind` of its own unless one has failed, and
/// the items before a failure are kept.
fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    failed: fn(String) -> ItemError,
) -> Option<Parsed<T>> {
    let (count, entries) = take_len(bytes)?;
    // Where the bodies start: past `count` header entries.
    let mut bodies = entries;
    for _ in 0..count {
        bodies = take_entry(bodies)?.2;
    }
    let mut cursor = Cursor {
        header: entries,
        bodies,
    };
    // The count comes from the peer: reserve no more than the bytes could
    // hold, in bytes, not items (a header of empty bodies would otherwise
    // reserve `count` large values before any is checked).
    let capacity = count.min(bytes.len() / std::mem::size_of::<T>().max(1));
    let mut values = Vec::with_capacity(capacity);
    let mut taken = 0;
    let plain = |body: &[u8]| codec::decode::<T>(body).map_err(|e| failed(codec_message(e)));
    // The single pass. Its outcome: `Ok(Some(None))` when every item was
    // a decoded value; `Ok(Some(Some(result)))` with the result of the
    // first item that was not; `Ok(None)` if the form is malformed;
    // `Err(payload)` if item `taken - 1`'s `Deserialize` panicked. Only
    // that call can unwind, after the cursor has moved past its item and
    // before anything is pushed, so the state stays consistent.
    let first_other = catch_unwind(AssertUnwindSafe(|| -> Option<Option<_>> {
        while taken < count {
            let (tag, body) = cursor.next()?;
            taken += 1;
            match decode_body(tag, body, plain)? {
                Ok(value) => values.push(value),
                other => return Some(Some(other)),
            }
        }
        Some(None)
    }));
    let other = match first_other {
        Ok(None) => return None,
        Ok(Some(None)) => {
            return cursor.bodies.is_empty().then_some(Parsed::Values(values));
        }
        Ok(Some(Some(other))) => other,
        Err(payload) => Err(failed(format!(
            "its Deserialize panicked: {}",
            take_panic_message(payload)
        ))),
    };
    let mut items = Vec::with_capacity(capacity);
    items.extend(values.into_iter().map(Ok));
    items.push(other);
    let caught =
        |body: &[u8]| codec::decode_caught::<T>(body).map_err(|e| failed(codec_message(e)));
    while taken < count {
        let (tag, body) = cursor.next()?;
        taken += 1;
        items.push(decode_body(tag, body, caught)?);
    }
    cursor.bodies.is_empty().then_some(Parsed::Items(items))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
