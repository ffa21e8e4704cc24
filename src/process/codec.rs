//! How values become bytes: serde, with postcard as the wire format.
//!
//! Everything that crosses the process boundary (task arguments, results
//! and the protocol messages themselves) goes through [`encode`] and
//! [`decode`]. They sit behind the small [`Codec`] trait so that the
//! format is chosen in one place ([`DefaultCodec`]); postcard is compact,
//! fast, maintained and `serde`-native (bincode is unmaintained,
//! RUSTSEC-2025-0141).
//!
//! Failures carry the Rust type's name, so "could not serialize
//! `my_app::Job`: ..." tells the user which value was at fault. (postcard
//! keeps no text from a type's own `Error::custom`; the message says so.) A value
//! that fails to encode or decode fails only its own task; the stream
//! itself stays in step, because a frame is always whole.
//!
//! [`decode`] is strict: bytes left over after the value are an error,
//! so a payload that belongs to another type is less likely to be
//! silently accepted.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// A serde binary format the process pool can speak.
///
/// Both methods report the type name in their error
/// ([`Error::Encode`] / [`Error::Decode`]).
pub(crate) trait Codec {
    /// Encodes `value` into a fresh buffer.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error>;

    /// Decodes a whole `T` from `bytes`; trailing bytes are an error.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error>;
}

/// The [postcard](https://docs.rs/postcard) format: varint integers, no
/// field names, no padding.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Postcard;

/// The codec the process pool uses.
pub(crate) type DefaultCodec = Postcard;

/// postcard's error text, with a hint where postcard drops the message a
/// type's own `Serialize`/`Deserialize` impl gave (`Error::custom`).
fn postcard_message(e: &postcard::Error) -> String {
    match e {
        postcard::Error::SerdeSerCustom => "the type's Serialize impl returned an error \
             (postcard does not keep its message)"
            .to_owned(),
        postcard::Error::SerdeDeCustom => "the type's Deserialize impl rejected the input \
             (postcard does not keep its message)"
            .to_owned(),
        other => other.to_string(),
    }
}

impl Codec for Postcard {
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
        postcard::to_stdvec(value).map_err(|e| Error::Encode {
            type_name: std::any::type_name::<T>(),
            message: postcard_message(&e),
        })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        let decode_error = |message: String| Error::Decode {
            type_name: std::any::type_name::<T>(),
            message,
        };
        let (value, rest) = postcard::take_from_bytes::<T>(bytes)
            .map_err(|e| decode_error(postcard_message(&e)))?;
        if rest.is_empty() {
            Ok(value)
        } else {
            Err(decode_error(format!(
                "{} trailing bytes after the value ({} bytes in all)",
                rest.len(),
                bytes.len()
            )))
        }
    }
}

/// Encodes `value` with the [`DefaultCodec`]; fails with [`Error::Encode`].
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    DefaultCodec::encode(value)
}

/// [`encode`], where the caller must not see a panic of `T`'s `Serialize`
/// (the user's code): it becomes this value's [`Error::Encode`], as an
/// error it returns does.
pub(crate) fn encode_caught<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serialize_caught(std::any::type_name::<T>(), "", || encode(value))
}

/// Runs `serialize`, which runs the `Serialize` of a value of type
/// `type_name`, turning a panic into that value's [`Error::Encode`]; the
/// message says `its Serialize panicked{when}`.
pub(crate) fn serialize_caught(
    type_name: &'static str,
    when: &str,
    serialize: impl FnOnce() -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(serialize)).unwrap_or_else(|payload| {
        Err(Error::Encode {
            type_name,
            message: format!(
                "its Serialize panicked{when}: {}",
                crate::error::take_panic_message(payload)
            ),
        })
    })
}

/// Encodes many values one after another into one buffer, each on its own
/// (its bytes decode alone with [`decode`]): one serializer for all of them,
/// no allocation or setup per value. A value that fails to encode leaves
/// nothing behind. (postcard, the [`DefaultCodec`].)
pub(crate) struct SeqWriter {
    ser: postcard::Serializer<Growing>,
}

/// A postcard output that appends to a `Vec` whose length can be read
/// between values.
struct Growing(Vec<u8>);

impl postcard::ser_flavors::Flavor for Growing {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

impl SeqWriter {
    pub(crate) fn new() -> Self {
        SeqWriter {
            ser: postcard::Serializer {
                output: Growing(Vec::new()),
            },
        }
    }

    /// Appends `value`'s encoding; returns how many bytes it took.
    pub(crate) fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<usize, Error> {
        let start = self.ser.output.0.len();
        match value.serialize(&mut self.ser) {
            Ok(()) => Ok(self.ser.output.0.len() - start),
            Err(e) => {
                self.ser.output.0.truncate(start);
                Err(Error::Encode {
                    type_name: std::any::type_name::<T>(),
                    message: postcard_message(&e),
                })
            }
        }
    }

    /// Everything written so far, in order.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.ser.output.0
    }

    /// Drops what was written after the first `len` bytes (a value that
    /// panicked half-way).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.ser.output.0.truncate(len);
    }
}

/// Decodes a `T` with the [`DefaultCodec`]; fails with [`Error::Decode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    DefaultCodec::decode(bytes)
}

/// [`decode`], on a thread of the pool's own that must survive whatever
/// `T`'s `Deserialize` does: a panic in it becomes this value's
/// [`Error::Decode`] (decision 7, D12). The parent's reader thread decodes
/// results with it; a reader lost to a panic would leave that future, and
/// every later task of its worker, waiting forever.
pub(crate) fn decode_caught<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    std::panic::catch_unwind(|| decode::<T>(bytes)).unwrap_or_else(|payload| {
        Err(Error::Decode {
            type_name: std::any::type_name::<T>(),
            message: format!(
                "its Deserialize panicked: {}",
                crate::error::take_panic_message(payload)
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serializer};

    /// A type whose `Serialize` always fails, as a `Mutex` poisoned mid-way
    /// or a map with non-string keys would in other formats.
    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "this value refuses to be encoded",
            ))
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Job {
        id: u64,
        name: String,
        weights: Vec<f64>,
        parent: Option<Box<Job>>,
    }

    #[test]
    fn round_trip_of_a_nested_value() {
        let job = Job {
            id: u64::MAX,
            name: "fib".into(),
            weights: vec![0.5, -1.0, f64::INFINITY],
            parent: Some(Box::new(Job {
                id: 0,
                name: String::new(),
                weights: vec![],
                parent: None,
            })),
        };
        let bytes = encode(&job).unwrap();
        assert_eq!(decode::<Job>(&bytes).unwrap(), job);
    }

    #[test]
    fn unit_and_unsized_values() {
        assert!(encode(&()).unwrap().is_empty());
        decode::<()>(&[]).unwrap();
        let s: &str = "unsized";
        assert_eq!(decode::<String>(&encode(s).unwrap()).unwrap(), s);
    }

    #[test]
    fn encode_failure_names_the_type_and_keeps_the_message() {
        match encode(&Unserializable) {
            Err(Error::Encode { type_name, message }) => {
                assert!(type_name.ends_with("Unserializable"), "{type_name}");
                // postcard drops custom messages; we say so.
                assert!(
                    message.contains("Serialize impl returned an error"),
                    "{message}"
                );
            }
            other => panic!("expected Encode, got {other:?}"),
        }
        // Inside a container, the outer type is named.
        match encode(&vec![Unserializable]) {
            Err(Error::Encode { type_name, .. }) => {
                assert!(type_name.starts_with("alloc::vec::Vec<"))
            }
            other => panic!("expected Encode, got {other:?}"),
        }
    }

    #[test]
    fn garbage_gives_a_typed_decode_error() {
        for garbage in [&[][..], &[0xFF; 11], &[0x05, b'a'], &[0x80; 3]] {
            match decode::<Job>(garbage) {
                Err(Error::Decode { type_name, message }) => {
                    assert!(type_name.ends_with("Job"), "{type_name}");
                    assert!(!message.is_empty());
                }
                other => panic!("{garbage:?}: expected Decode, got {other:?}"),
            }
        }
        // Invalid UTF-8 in a String.
        assert!(matches!(
            decode::<String>(&[2, 0xC3, 0x28]),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.push(0);
        match decode::<u32>(&bytes) {
            Err(Error::Decode { type_name, message }) => {
                assert_eq!(type_name, "u32");
                assert!(message.contains("1 trailing byte"), "{message}");
            }
            other => panic!("expected Decode, got {other:?}"),
        }
    }
}
