//! The proptest strategies of the decoder fuzzing (see `fuzz_tests`):
//! read plans, frame limits, near-miss frames, valid messages of both
//! message sets, and mutations of their encodings.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::process::entry::BuildId;
use crate::process::protocol::{FromWorker, RemoteError, ToWorker};

/// Read sizes: mostly short reads, sometimes `Interrupted` (0), always
/// some progress.
pub(super) fn plan() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![1 => Just(0usize), 6 => 1usize..=8, 2 => 9usize..=4096],
        1..16,
    )
    .prop_map(|mut p| {
        if p.iter().all(|&n| n == 0) {
            p.push(1);
        }
        p
    })
}

/// Frame limits: none at all, tiny ones, and a roomy one.
pub(super) fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 1usize..=80, Just(1 << 20)]
}

/// Bytes that start like a frame header, with the length drawn to hit the
/// interesting cases: small, around the limit, huge, `u32::MAX`.
pub(super) fn header_then_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let near = max.saturating_sub(2)..=max.saturating_add(2);
    let announced = prop_oneof![
        0u32..100,
        near.prop_map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        any::<u32>(),
        Just(u32::MAX),
    ];
    (announced, vec(any::<u8>(), 0..200)).prop_map(|(len, rest)| {
        let mut out = len.to_le_bytes().to_vec();
        out.extend(rest);
        out
    })
}

/// A limit and a stream to read under it: arbitrary bytes, or a header
/// aimed at the limit followed by arbitrary bytes.
pub(super) fn limit_and_stream() -> impl Strategy<Value = (usize, Vec<u8>)> {
    limit().prop_flat_map(|max| {
        let stream = prop_oneof![vec(any::<u8>(), 0..300), header_then_bytes(max)];
        (Just(max), stream)
    })
}

/// `n` as a postcard varint.
pub(super) fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Message payloads: arbitrary bytes, or the start of a message holding a
/// sequence (`ChunkDone`'s outcomes, `RunChunk`'s arguments) whose
/// announced length is near, below or far above what follows, then
/// arbitrary bytes.
pub(super) fn payload() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(vec![4u8, 0]),    // FromWorker::ChunkDone { task_id: 0, outcomes: [..] }
        Just(vec![2u8, 0, 0]), // ToWorker::RunChunk { task_id: 0, entry: 0, args: [..] }
    ];
    let count = prop_oneof![0usize..200, any::<usize>()];
    prop_oneof![
        vec(any::<u8>(), 0..120),
        (prefix, count, vec(any::<u8>(), 0..200)).prop_map(|(mut p, n, tail)| {
            p.extend(varint(n));
            p.extend(tail);
            p
        }),
    ]
}

pub(super) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..48)
}

pub(super) fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("(.|\n){0,24}").unwrap()
}

pub(super) fn remote_error() -> impl Strategy<Value = RemoteError> {
    prop_oneof![
        (text(), proptest::option::of(text()))
            .prop_map(|(message, backtrace)| RemoteError::Panicked { message, backtrace }),
        (text(), text())
            .prop_map(|(type_name, message)| RemoteError::Decode { type_name, message }),
        (text(), text())
            .prop_map(|(type_name, message)| RemoteError::Encode { type_name, message }),
    ]
}

pub(super) fn outcome() -> impl Strategy<Value = Result<Vec<u8>, RemoteError>> {
    prop_oneof![bytes().prop_map(Ok), remote_error().prop_map(Err)]
}

pub(super) fn from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        any::<u32>().prop_map(|pid| FromWorker::Ready {
            pid,
            build: BuildId::current()
        }),
        proptest::option::of(remote_error()).prop_map(|e| FromWorker::Initialized {
            outcome: e.map_or(Ok(()), Err)
        }),
        any::<u64>().prop_map(|task_id| FromWorker::Started { task_id }),
        (any::<u64>(), outcome())
            .prop_map(|(task_id, outcome)| FromWorker::Done { task_id, outcome }),
        (any::<u64>(), vec(outcome(), 0..5))
            .prop_map(|(task_id, outcomes)| FromWorker::ChunkDone { task_id, outcomes }),
    ]
}

pub(super) fn to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
            |(max_frame_bytes, initializer)| ToWorker::Welcome {
                build: BuildId::current(),
                max_frame_bytes,
                initializer,
            }
        ),
        (any::<u64>(), any::<u64>(), bytes()).prop_map(|(task_id, entry, arg)| ToWorker::Run {
            task_id,
            entry,
            arg
        }),
        (any::<u64>(), any::<u64>(), vec(bytes(), 0..5)).prop_map(|(task_id, entry, args)| {
            ToWorker::RunChunk {
                task_id,
                entry,
                args,
            }
        }),
        Just(ToWorker::Shutdown),
    ]
}

/// A change to an encoded message: none, a flipped bit, an overwritten
/// byte, a truncation, or bytes appended.
#[derive(Debug, Clone)]
pub(super) enum Mutation {
    None,
    Flip(usize, u8),
    Overwrite(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
}

pub(super) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => Just(Mutation::None),
        3 => (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Overwrite(i, v)),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        2 => vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
    ]
}

pub(super) fn apply(m: &Mutation, mut payload: Vec<u8>) -> Vec<u8> {
    let n = payload.len();
    match m {
        Mutation::None => {}
        Mutation::Flip(i, bit) if n > 0 => payload[i % n] ^= 1 << bit,
        Mutation::Overwrite(i, v) if n > 0 => payload[i % n] = *v,
        Mutation::Truncate(i) => payload.truncate(i % (n + 1)),
        Mutation::Append(extra) => payload.extend(extra),
        Mutation::Flip(..) | Mutation::Overwrite(..) => {}
    }
    payload
}
