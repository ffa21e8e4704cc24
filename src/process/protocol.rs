//! The messages a parent and a worker exchange, one per frame.
//!
//! Every message is a serde enum encoded with the [codec]
//! and carried in one [frame](super::frame). The conversation:
//!
//! ```text
//! worker                                   parent
//!   | -- Ready { pid, build } -------------> |  parent checks the build
//!   | <------------ Welcome { build, .. } -- |  worker checks it too
//!   | -- Initialized { outcome } ----------> |  initializer ran (or none)
//!   | <-- Run { task_id, entry, arg } ------ |  any number in flight
//!   | -- Started { task_id } --------------> |  per-task timeout starts
//!   | -- Done { task_id, outcome } --------> |
//!   | <-- RunChunk { task_id, entry, args }  |  chunked map: many items
//!   | -- ChunkDone { task_id, outcomes } --> |  one outcome per item
//!   | <-- Shutdown ------------------------- |  or end of stream
//! ```
//!
//! A task's argument and result travel as opaque bytes (already encoded
//! with the codec by the side that knows the type); only the
//! [trampoline](super::entry) knows their types. They are written as serde
//! *bytes*, one length and one copy, not one serde call per byte.
//!
//! Failures of a single task ([`RemoteError`]) are values inside `Done`;
//! failures of the stream itself (a bad frame, an undecodable message) are
//! [`Error::Protocol`] and end the conversation with that worker.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::codec;
use super::entry::BuildId;
use super::frame::{read_frame, write_frame};
use crate::Error;

/// Version of this message set; part of [`BuildId`].
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Parent to worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Reply to [`FromWorker::Ready`] once the parent accepted the build.
    Welcome {
        /// The parent's build; the worker refuses to run tasks if it differs.
        build: BuildId,
        /// Largest frame either side may send.
        max_frame_bytes: u64,
        /// Entry of an initializer to run once before any task (an entry of
        /// a task taking `()` and returning `()`), if the pool has one.
        initializer: Option<u64>,
    },
    /// Run one task.
    Run {
        /// The parent's id for this task, echoed in the replies.
        task_id: u64,
        /// The task's entry, from [`entry_of`](super::entry::entry_of).
        entry: u64,
        /// The encoded argument.
        #[serde(with = "bytes")]
        arg: Vec<u8>,
    },
    /// Run one task over many arguments (chunked `map`); each item gets
    /// its own outcome.
    RunChunk {
        /// The parent's id for this chunk.
        task_id: u64,
        /// The task's entry, shared by all items.
        entry: u64,
        /// The encoded arguments, in order.
        #[serde(with = "bytes::seq")]
        args: Vec<Vec<u8>>,
    },
    /// Finish the task in hand and exit.
    Shutdown,
}

/// Worker to parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// First message of a worker: who it is and what build it runs.
    Ready {
        /// The worker's process id.
        pid: u32,
        /// The worker's build, checked by the parent.
        build: BuildId,
    },
    /// The initializer from [`ToWorker::Welcome`] ran (or there was none).
    Initialized {
        /// Its outcome; on `Err` the worker exits.
        outcome: Result<(), RemoteError>,
    },
    /// A task (or chunk) began running.
    Started {
        /// Which task.
        task_id: u64,
    },
    /// A task finished.
    Done {
        /// Which task.
        task_id: u64,
        /// The encoded result, or why there is none.
        #[serde(with = "bytes::result")]
        outcome: Result<Vec<u8>, RemoteError>,
    },
    /// A chunk finished; one outcome per item, in order.
    ChunkDone {
        /// Which chunk.
        task_id: u64,
        /// The items' outcomes.
        #[serde(with = "bytes::results")]
        outcomes: Vec<Result<Vec<u8>, RemoteError>>,
    },
}

/// Why one task failed in the worker (the worker itself is fine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RemoteError {
    /// The task panicked.
    Panicked {
        /// The panic message.
        message: String,
        /// The worker's backtrace text, when backtraces were enabled.
        backtrace: Option<String>,
    },
    /// The argument did not decode in the worker.
    Decode {
        /// The argument's Rust type.
        type_name: String,
        /// The codec's message.
        message: String,
    },
    /// The result did not encode in the worker.
    Encode {
        /// The result's Rust type.
        type_name: String,
        /// The codec's message.
        message: String,
    },
}

impl From<Error> for RemoteError {
    /// Carries a codec error across; other variants (not produced in a
    /// worker's trampoline) travel as their text in `Panicked`.
    fn from(e: Error) -> Self {
        match e {
            Error::Decode { type_name, message } => RemoteError::Decode {
                type_name: type_name.to_owned(),
                message,
            },
            Error::Encode { type_name, message } => RemoteError::Encode {
                type_name: type_name.to_owned(),
                message,
            },
            other => RemoteError::Panicked {
                message: other.to_string(),
                backtrace: None,
            },
        }
    }
}

/// The static type names of a task's argument and result, known to the
/// parent; used to rebuild [`Error`]'s `&'static str` fields losslessly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskTypes {
    /// `type_name::<A>()`.
    pub(crate) arg: &'static str,
    /// `type_name::<R>()`.
    pub(crate) result: &'static str,
}

impl TaskTypes {
    /// The names for a task `fn(A) -> R`.
    pub(crate) fn of<A, R>() -> TaskTypes {
        TaskTypes {
            arg: std::any::type_name::<A>(),
            result: std::any::type_name::<R>(),
        }
    }
}

impl RemoteError {
    /// The [`Error`] the task's future fails with.
    ///
    /// `Error::Decode`/`Encode` hold `&'static str` type names, which a
    /// `String` from the wire cannot become without leaking; the parent
    /// supplies its own static names instead (the same text, as both sides
    /// are one build). A name that does not match is kept in the message.
    pub(crate) fn into_error(self, types: TaskTypes) -> Error {
        let name = |wire: String, ours: &'static str, message: String| {
            // An empty name leaves the naming to us (a worker that refused
            // a result for its size; found by review: its error ended "the
            // worker named the type task result").
            if wire == ours || wire.is_empty() {
                (ours, message)
            } else {
                (
                    ours,
                    format!("{message} (the worker named the type {wire})"),
                )
            }
        };
        match self {
            RemoteError::Panicked { message, backtrace } => Error::Panicked { message, backtrace },
            RemoteError::Decode { type_name, message } => {
                let (type_name, message) = name(type_name, types.arg, message);
                Error::Decode { type_name, message }
            }
            RemoteError::Encode { type_name, message } => {
                let (type_name, message) = name(type_name, types.result, message);
                Error::Encode { type_name, message }
            }
        }
    }
}

/// Encodes `msg` and writes it as one frame, unless the frame would exceed
/// `max_frame_bytes`: then nothing is written and the error is
/// [`Error::Protocol`] (the caller turns it into that task's error).
pub(crate) fn write_message<W, M>(w: &mut W, msg: &M, max_frame_bytes: usize) -> Result<(), Error>
where
    W: Write + ?Sized,
    M: Serialize,
{
    Ok(write_frame(w, &encode_message(msg, max_frame_bytes)?)?)
}

/// A message's payload, refused if it would not fit a frame (what
/// [`write_message`] sends, for a caller that must know before it writes).
pub(crate) fn encode_message<M: Serialize>(
    msg: &M,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, Error> {
    let payload = codec::encode(msg)?;
    if payload.len() > max_frame_bytes {
        return Err(Error::Protocol(format!(
            "a message of {} bytes exceeds max_frame_bytes ({max_frame_bytes}); not sent",
            payload.len()
        )));
    }
    Ok(payload)
}

/// Reads one frame and decodes it as `M`. `Ok(None)` on a clean end of
/// stream; a bad frame or undecodable message is an error.
pub(crate) fn read_message<R, M>(r: &mut R, max_frame_bytes: usize) -> Result<Option<M>, Error>
where
    R: Read + ?Sized,
    M: serde::de::DeserializeOwned,
{
    match read_frame(r, max_frame_bytes)? {
        None => Ok(None),
        Some(payload) => codec::decode(&payload)
            .map(Some)
            .map_err(|e| Error::Protocol(format!("undecodable message from the other side: {e}"))),
    }
}

/// Serde helpers that write `Vec<u8>` as serde bytes (one length, one
/// copy) rather than as a sequence of `u8` values; ~2-3x faster for large
/// payloads with postcard.
mod bytes {
    use serde::de::{Deserializer, Visitor};
    use serde::ser::Serializer;
    use serde::{Deserialize, Serialize};
    use std::fmt;

    /// Borrowed bytes for serializing.
    #[derive(Serialize)]
    #[serde(transparent)]
    struct Ref<'a>(#[serde(serialize_with = "serialize")] &'a [u8]);

    /// Owned bytes for deserializing.
    struct Buf(Vec<u8>);

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<S: serde::de::SeqAccess<'de>>(
                    self,
                    mut s: S,
                ) -> Result<Buf, S::Error> {
                    let mut v = Vec::with_capacity(s.size_hint().unwrap_or(0).min(4096));
                    while let Some(b) = s.next_element()? {
                        v.push(b);
                    }
                    Ok(Buf(v))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    /// `#[serde(with = "bytes")]` for `Vec<u8>` (serializing half).
    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// `#[serde(with = "bytes")]` for `Vec<u8>` (deserializing half).
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Buf::deserialize(d).map(|b| b.0)
    }

    /// Deserializes a sequence without trusting its announced length for
    /// the initial allocation: serde's own `Vec` impl preallocates from the
    /// size hint (up to 1 MiB), many times a small frame, before the first
    /// element is even read. Growth is paid for by bytes that really came.
    fn capped_seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut s: S) -> Result<Vec<T>, S::Error> {
                let mut v = Vec::with_capacity(s.size_hint().unwrap_or(0).min(16));
                while let Some(x) = s.next_element()? {
                    v.push(x);
                }
                Ok(v)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }

    /// `#[serde(with = "bytes::seq")]` for `Vec<Vec<u8>>`.
    pub(super) mod seq {
        use super::*;

        /// Serializes each item as bytes.
        pub(crate) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|b| Ref(b)))
        }

        /// Deserializes a sequence of byte strings.
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<Vec<u8>>, D::Error> {
            Ok(super::capped_seq::<D, Buf>(d)?
                .into_iter()
                .map(|b| b.0)
                .collect())
        }
    }

    /// `#[serde(with = "bytes::result")]` for `Result<Vec<u8>, RemoteError>`.
    pub(super) mod result {
        use super::super::RemoteError;
        use super::*;

        /// Serializes `Ok` bytes as bytes.
        pub(crate) fn serialize<S: Serializer>(
            v: &Result<Vec<u8>, RemoteError>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.as_ref().map(|b| Ref(b)).serialize(s)
        }

        /// Deserializes `Ok` bytes or a [`RemoteError`].
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Result<Vec<u8>, RemoteError>, D::Error> {
            Ok(Result::<Buf, RemoteError>::deserialize(d)?.map(|b| b.0))
        }
    }

    /// `#[serde(with = "bytes::results")]` for `Vec<Result<Vec<u8>, RemoteError>>`.
    pub(super) mod results {
        use super::super::RemoteError;
        use super::*;

        /// Serializes each outcome, `Ok` bytes as bytes.
        pub(crate) fn serialize<S: Serializer>(
            v: &[Result<Vec<u8>, RemoteError>],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|r| r.as_ref().map(|b| Ref(b))))
        }

        /// Deserializes a sequence of outcomes.
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<Result<Vec<u8>, RemoteError>>, D::Error> {
            let v = super::capped_seq::<D, Result<Buf, RemoteError>>(d)?;
            Ok(v.into_iter().map(|r| r.map(|b| b.0)).collect())
        }
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "fuzz_tests.rs"]
mod fuzz_tests;
