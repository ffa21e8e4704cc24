//! Tests of the chunk wire form (`chunk::wire`).

use super::*;
use crate::chunk::run_items;
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

impl<R> ChunkResult<R> {
    /// Each item's value or error, whichever way it decoded.
    fn items(self) -> Vec<Result<R, ItemError>> {
        match self {
            ChunkResult::Values(values) => values.into_iter().map(Ok).collect(),
            ChunkResult::Items(items) => items,
        }
    }
}

fn result_failed(message: String) -> ItemError {
    ItemError::Decode { message }
}

/// A chunk's arguments as a worker gets them.
fn sent<A: Serialize + DeserializeOwned>(items: Vec<A>) -> Vec<Result<A, ItemError>> {
    let bytes = codec::encode(&ChunkArgs::Items(items)).expect("the arguments encode");
    match codec::decode(&bytes).expect("and decode") {
        ChunkArgs::Items(items) => items.into_iter().map(Ok).collect(),
        ChunkArgs::Decoded(items) => items,
    }
}

#[test]
fn arguments_round_trip_in_order() {
    assert_eq!(sent(vec![1u64, 300, 7]), vec![Ok(1), Ok(300), Ok(7)]);
    assert_eq!(sent(Vec::<u64>::new()), vec![]);
}

/// The fast path: when every argument decodes, the worker gets a plain
/// `Vec`; only a chunk with one that does not pays for per-item errors.
#[test]
fn a_chunk_whose_arguments_all_decode_arrives_as_plain_items() {
    let decode = |items: Vec<NotThirteen>| -> ChunkArgs<NotThirteen> {
        codec::decode(&codec::encode(&ChunkArgs::Items(items)).unwrap()).unwrap()
    };
    assert!(matches!(
        decode(vec![NotThirteen(6), NotThirteen(8)]),
        ChunkArgs::Items(items) if items == [NotThirteen(6), NotThirteen(8)]
    ));
    assert!(matches!(
        decode(vec![NotThirteen(6), NotThirteen(7)]),
        ChunkArgs::Decoded(items) if items.len() == 2
    ));
}

#[test]
fn an_argument_that_does_not_deserialize_fails_only_its_item() {
    let got = sent(vec![NotThirteen(6), NotThirteen(7), NotThirteen(8)]);
    assert_eq!(got[0], Ok(NotThirteen(6)));
    assert!(
        matches!(&got[1], Err(ItemError::ArgDecode { .. })),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2], Ok(NotThirteen(8)));
}

#[test]
fn an_argument_whose_deserialize_panics_fails_only_its_item() {
    let got = sent(vec![NotThirteen(99), NotThirteen(100)]);
    assert!(
        matches!(&got[0], Err(ItemError::ArgDecode { message }) if message.contains("99 panics")),
        "{:?}",
        got[0]
    );
    assert_eq!(got[1], Ok(NotThirteen(100)));
}

/// D1: the parent sends such a chunk again item by item, so that the
/// item at fault is named.
#[test]
fn an_argument_that_does_not_serialize_fails_the_whole_chunk() {
    let args = ChunkArgs::Items(vec![NotThirteen(12), NotThirteen(13)]);
    assert!(matches!(codec::encode(&args), Err(Error::Encode { .. })));
}

/// In the worker, an argument that did not decode skips its call and
/// comes back to the parent as a decode error naming the argument's
/// type, after the items around it ran.
#[test]
fn an_argument_that_did_not_decode_is_its_items_decode_error_naming_its_type() {
    let args = ChunkArgs::Decoded(sent(vec![NotThirteen(6), NotThirteen(7), NotThirteen(8)]));
    let c = run_items(|x: NotThirteen| x.0 * 10, args);
    let out: Vec<_> = round_trip(&c).into_results("the::Argument").collect();
    assert_eq!(out[0], Ok(60));
    assert!(
        matches!(&out[1], Err(Error::Decode { type_name: "the::Argument", message }) if message.contains("Deserialize")),
        "{:?}",
        out[1]
    );
    assert_eq!(out[2], Ok(80));
}

/// A chunk of these values, sent and received: each item's result.
fn values_round_trip(values: &[u32]) -> Vec<Result<NotThirteen, ItemError>> {
    let c = ChunkResult::Items(values.iter().map(|&n| Ok(NotThirteen(n))).collect());
    round_trip(&c).items()
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
    let c = ChunkResult::Items(vec![Ok(1u64), Err(panic.clone()), Ok(3)]);
    assert_eq!(round_trip(&c).items(), vec![Ok(1), Err(panic), Ok(3)]);
}

/// The fast path: when every result decodes, the parent gets a plain
/// `Vec` of values.
#[test]
fn a_chunk_whose_results_all_decode_arrives_as_plain_values() {
    let c = ChunkResult::Items(vec![Ok(NotThirteen(6)), Ok(NotThirteen(8))]);
    assert!(matches!(
        round_trip(&c),
        ChunkResult::Values(values) if values == [NotThirteen(6), NotThirteen(8)]
    ));
    let c = ChunkResult::Items(vec![Ok(NotThirteen(6)), Ok(NotThirteen(7))]);
    assert!(matches!(round_trip(&c), ChunkResult::Items(items) if items.len() == 2));
}

#[test]
fn d10_a_result_that_does_not_serialize_fails_only_its_item() {
    let back = values_round_trip(&[12, 13, 14]);
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
    let back = values_round_trip(&[6, 7, 8]);
    assert_eq!(back[0], Ok(NotThirteen(6)));
    assert!(
        matches!(&back[1], Err(ItemError::Decode { .. })),
        "{:?}",
        back[1]
    );
    assert_eq!(back[2], Ok(NotThirteen(8)));
}

/// The items before a panicking `Deserialize` are kept from the one
/// pass, and the ones after it decoded on their own.
#[test]
fn d12_a_deserialize_that_panics_mid_chunk_keeps_the_items_around_it() {
    let back = values_round_trip(&[6, 99, 8, 7]);
    assert_eq!(back[0], Ok(NotThirteen(6)));
    assert!(
        matches!(&back[1], Err(ItemError::Decode { message }) if message.contains("99 panics")),
        "{:?}",
        back[1]
    );
    assert_eq!(back[2], Ok(NotThirteen(8)));
    assert!(
        matches!(&back[3], Err(ItemError::Decode { .. })),
        "{:?}",
        back[3]
    );
}

thread_local! {
    static DECODES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts its decodes (on this thread), and rejects 7.
#[derive(Debug, PartialEq, Serialize)]
struct Counted(u32);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.with(|n| n.set(n.get() + 1));
        match u32::deserialize(d)? {
            7 => Err(de::Error::custom("7 refuses")),
            n => Ok(Counted(n)),
        }
    }
}

/// A `Deserialize` may have effects: a chunk with an item that does
/// not decode still decodes every item exactly once.
#[test]
fn each_item_is_decoded_once_also_when_one_fails() {
    for chunk in [vec![5, 6, 8], vec![5, 7, 8], vec![7, 5, 6]] {
        let c = ChunkResult::Items(chunk.iter().map(|&n| Ok(Counted(n))).collect());
        let bytes = codec::encode(&c).unwrap();
        DECODES.with(|n| n.set(0));
        let back: ChunkResult<Counted> = codec::decode(&bytes).unwrap();
        assert_eq!(DECODES.with(|n| n.get()), 3, "{chunk:?}");
        assert_eq!(
            back.items().iter().filter(|r| r.is_ok()).count(),
            chunk.iter().filter(|&&n| n != 7).count()
        );
    }
}

/// Bytes from the other side, cut or corrupted, through the
/// `Deserialize` of both wire forms: an error or some value, never a
/// panic.
#[test]
fn cut_or_corrupted_chunks_fail_to_decode_without_panicking() {
    let results = codec::encode(&ChunkResult::Items(vec![
        Ok(300u64),
        Err(ItemError::Encode {
            message: "m".into(),
        }),
        Ok(7),
    ]))
    .unwrap();
    let args = codec::encode(&ChunkArgs::Items(vec![300u64, 1, 7])).unwrap();
    for wire in [results, args] {
        for cut in 0..wire.len() {
            assert!(
                codec::decode::<ChunkResult<u64>>(&wire[..cut]).is_err(),
                "cut at {cut}"
            );
            assert!(
                codec::decode::<ChunkArgs<u64>>(&wire[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for at in 0..wire.len() {
            for byte in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff] {
                let mut bad = wire.clone();
                bad[at] = byte;
                let _ = codec::decode::<ChunkResult<u64>>(&bad);
                let _ = codec::decode::<ChunkArgs<u64>>(&bad);
            }
        }
    }
}

#[test]
fn d12_a_deserialize_that_panics_fails_only_its_item() {
    let c = ChunkResult::Items(vec![Ok(NotThirteen(99)), Ok(NotThirteen(100))]);
    let back = round_trip(&c).items();
    assert!(
        matches!(&back[0], Err(ItemError::Decode { message }) if message.contains("99 panics")),
        "{:?}",
        back[0]
    );
    assert_eq!(back[1], Ok(NotThirteen(100)));
}

#[test]
fn a_serialize_that_panics_fails_only_its_item_with_an_encode_error() {
    struct Explodes(bool);
    impl Serialize for Explodes {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            assert!(!self.0, "serialize exploded");
            s.serialize_bool(self.0)
        }
    }
    let c = ChunkResult::Items(vec![Ok(Explodes(true)), Ok(Explodes(false))]);
    let bytes = codec::encode(&c).expect("the chunk still encodes");
    let back: ChunkResult<bool> = codec::decode(&bytes).expect("and decodes");
    let back = back.items();
    assert!(
        matches!(&back[0], Err(ItemError::Encode { message }) if message.contains("serialize exploded")),
        "{:?}",
        back[0]
    );
    assert_eq!(back[1], Ok(false));
}

/// The parent parses bytes a worker sent: cut or corrupted, they are
/// refused (the chunk fails as a whole), never a panic or a hang.
#[test]
fn a_cut_or_corrupted_chunk_result_is_refused_without_panicking() {
    let c = ChunkResult::Items(vec![
        Ok(300u64),
        Err(ItemError::Encode {
            message: "m".into(),
        }),
        Ok(7),
    ]);
    let wire = codec::encode(&c).unwrap();
    let inner = &wire[1..]; // past the byte string's own length
    assert_eq!(
        parse::<u64>(inner, result_failed).map(|p| match p {
            Parsed::Values(v) => v.len(),
            Parsed::Items(i) => i.len(),
        }),
        Some(3)
    );
    for cut in 0..inner.len() {
        assert!(
            parse::<u64>(&inner[..cut], result_failed).is_none(),
            "cut at {cut}"
        );
    }
    for at in 0..inner.len() {
        for byte in [0x00, 0x02, 0x7f, 0x80, 0xff] {
            let mut bad = inner.to_vec();
            bad[at] = byte;
            let _ = parse::<u64>(&bad, result_failed);
        }
    }
    assert!(
        parse::<u64>(&[0xff; 11], result_failed).is_none(),
        "a length past usize"
    );
}
