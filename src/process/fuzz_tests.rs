//! Property-based fuzzing (proptest) of the two decoders a worker can reach:
//! [`read_frame`] and [`read_message`] for both message sets (issue 5,
//! part 5).
//!
//! The deterministic tests beside the code (frame.rs, protocol_tests.rs)
//! cover fixed cases, one-byte reads and codec-level garbage. These add
//! arbitrary bytes, structured near-miss frames and mutated valid messages,
//! each delivered in arbitrary read sizes with `Interrupted` errors mixed
//! in, and check:
//!
//! * no panic, and every error is typed: a frame error is exactly what a
//!   one-shot model of the format predicts, a bad message is
//!   [`Error::Protocol`];
//! * the reader never consumes past the frame (the next frame stays intact),
//!   and never reads the payload of an over-limit frame;
//! * allocation is bounded by the frame, never by an announced length: a
//!   tracking allocator records the largest single allocation made on the
//!   test's thread while it decodes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};

use proptest::collection::vec;
use proptest::prelude::*;

use crate::Error;
use crate::process::codec;
use crate::process::frame::{FrameError, HEADER_BYTES, read_frame, write_frame};
use crate::process::protocol::{FromWorker, RemoteError, ToWorker, read_message};

// ------------------------------------------------ allocation tracking --

/// The system allocator, noting the largest single request made on a
/// thread while that thread is inside [`largest_allocation`].
struct Tracking;

thread_local! {
    /// `Some(largest request so far)` while this thread is tracking.
    static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // `try_with`: never panic inside the allocator (thread teardown). The
    // const-initialised `Cell` itself never allocates.
    let _ = LARGEST.try_with(|l| {
        if let Some(m) = l.get() {
            l.set(Some(m.max(size)));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; `note` only updates a
// thread-local `Cell` and does not allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s
        // contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its value with the largest single allocation it
/// made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(Some(0)));
    let out = f();
    let largest = LARGEST.with(|l| l.replace(None)).unwrap_or(0);
    (out, largest)
}

// ------------------------------------------------------------ readers --

/// Hands out `data` in the read sizes of `plan` (cycled; 0 stands for an
/// `Interrupted` error), like a pipe under load. Remembers how far it was
/// read.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    plan: &'a [usize],
    step: usize,
}

impl<'a> Chunked<'a> {
    fn new(data: &'a [u8], plan: &'a [usize]) -> Self {
        assert!(plan.iter().any(|&n| n > 0), "a plan must make progress");
        Chunked {
            data,
            pos: 0,
            plan,
            step: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.plan[self.step % self.plan.len()];
        self.step += 1;
        if size == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = size.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// -------------------------------------------------------------- model --

/// What reading one frame from `data` must give, decided in one piece.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Eof,
    Frame(Vec<u8>),
    TruncatedHeader(usize),
    TruncatedPayload { expected: usize, got: usize },
    TooLarge(u64),
}

/// The frame format, restated: the outcome and how many bytes a correct
/// reader consumes for it.
fn model(data: &[u8], max: usize) -> (Expected, usize) {
    if data.is_empty() {
        return (Expected::Eof, 0);
    }
    if data.len() < HEADER_BYTES {
        return (Expected::TruncatedHeader(data.len()), data.len());
    }
    let announced = u32::from_le_bytes(data[..HEADER_BYTES].try_into().unwrap());
    if announced as usize > max {
        // Refused on the header alone: not one payload byte read.
        return (Expected::TooLarge(u64::from(announced)), HEADER_BYTES);
    }
    let len = announced as usize;
    let body = &data[HEADER_BYTES..];
    if body.len() < len {
        let got = body.len();
        return (
            Expected::TruncatedPayload { expected: len, got },
            HEADER_BYTES + got,
        );
    }
    (Expected::Frame(body[..len].to_vec()), HEADER_BYTES + len)
}

fn observed(r: Result<Option<Vec<u8>>, FrameError>, max: usize) -> Expected {
    match r {
        Ok(None) => Expected::Eof,
        Ok(Some(p)) => Expected::Frame(p),
        Err(FrameError::TruncatedHeader { got }) => Expected::TruncatedHeader(got),
        Err(FrameError::TruncatedPayload { expected, got }) => {
            Expected::TruncatedPayload { expected, got }
        }
        Err(FrameError::TooLarge { len, max: m }) => {
            assert_eq!(m, max as u64, "TooLarge must name the caller's limit");
            Expected::TooLarge(len)
        }
        Err(FrameError::Io(e)) => panic!("an in-memory reader gave an I/O error: {e}"),
    }
}

/// The most a decode of `frame_len` payload bytes may allocate at once.
///
/// The payload itself (at most `frame_len`), or a sequence of the message
/// (`RunChunk`'s arguments, `ChunkDone`'s outcomes): each element takes at
/// least one byte of the frame and at most `ELEMENT` bytes in memory, and a
/// growing `Vec` at most doubles. serde's preallocation from postcard's
/// length hint stays within the same bound (postcard gives a hint only when
/// that many bytes are left; serde caps it at 1 MiB). Error messages are
/// small change.
fn decode_allocation_bound(frame_len: usize) -> usize {
    const ELEMENT: usize = size_of::<Result<Vec<u8>, RemoteError>>();
    const SLACK: usize = 1024;
    frame_len.max(frame_len.saturating_mul(2 * ELEMENT)) + SLACK
}

#[path = "fuzz_strategies.rs"]
mod strategies;
use strategies::*;

// -------------------------------------------------------------- checks --

/// Reads one message of type `M` from `data` under `max`, delivered by
/// `plan`, and checks it against the frame model: the outcome is typed, the
/// reader stops at the frame's end, and allocation is bounded by the frame.
/// Returns the decoded message, if any.
fn check_read_message<M>(data: &[u8], plan: &[usize], max: usize) -> Option<M>
where
    M: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let (expected, consumed) = model(data, max);
    let mut r = Chunked::new(data, plan);
    let (got, largest) = largest_allocation(|| read_message::<_, M>(&mut r, max));
    assert_eq!(r.pos, consumed, "read past the frame, or short of it");
    let frame_len = match &expected {
        Expected::Frame(p) => p.len(),
        Expected::TruncatedPayload { expected, .. } => *expected,
        _ => 0,
    };
    assert!(
        largest <= decode_allocation_bound(frame_len),
        "allocated {largest} bytes at once for a frame of {frame_len} ({expected:?})"
    );
    match (expected, got) {
        (Expected::Eof, Ok(None)) => None,
        (Expected::Frame(_), Ok(Some(m))) => {
            // Whatever decoded is a real message: it survives a round trip.
            let again: M = codec::decode(&codec::encode(&m).unwrap()).unwrap();
            assert_eq!(again, m);
            Some(m)
        }
        (Expected::Frame(_), Err(Error::Protocol(s))) => {
            assert!(s.contains("undecodable"), "{s}");
            None
        }
        (Expected::TooLarge(_), Err(Error::Protocol(s))) => {
            assert!(s.contains("exceeds the limit"), "{s}");
            None
        }
        (
            Expected::TruncatedHeader(_) | Expected::TruncatedPayload { .. },
            Err(Error::Protocol(s)),
        ) => {
            assert!(s.contains("stream ended inside a frame"), "{s}");
            None
        }
        (expected, got) => panic!("expected {expected:?}, got {got:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        // Failures print their minimal input; nothing is written into src/.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any bytes, any read sizes, any limit: `read_frame` gives exactly what
    /// the one-shot model says, consumes exactly the frame, never reads an
    /// over-limit payload and allocates at most the frame's length.
    #[test]
    fn fuzz_read_frame_matches_the_model((max, data) in limit_and_stream(), plan in plan()) {
        let (expected, consumed) = model(&data, max);
        let mut r = Chunked::new(&data, &plan);
        let (got, largest) = largest_allocation(|| read_frame(&mut r, max));
        let allowed = match &expected {
            Expected::Frame(p) => p.len(),
            Expected::TruncatedPayload { expected, .. } => *expected,
            _ => 0,
        };
        prop_assert_eq!(observed(got, max), expected);
        prop_assert_eq!(r.pos, consumed);
        prop_assert!(largest <= allowed, "allocated {} bytes for a frame of {}", largest, allowed);
    }

    /// Whole frames split at arbitrary points come back intact and in
    /// order, then a clean end of stream.
    #[test]
    fn fuzz_frames_survive_any_split(payloads in vec(vec(any::<u8>(), 0..100), 0..8), plan in plan()) {
        let mut stream = Vec::new();
        for p in &payloads {
            write_frame(&mut stream, p).unwrap();
        }
        let mut r = Chunked::new(&stream, &plan);
        for p in &payloads {
            let got = read_frame(&mut r, 100).unwrap();
            prop_assert_eq!(got.as_ref(), Some(p));
        }
        prop_assert!(read_frame(&mut r, 100).unwrap().is_none());
        prop_assert_eq!(r.pos, stream.len());
    }

    /// Arbitrary streams as messages from a worker (what the parent reads).
    #[test]
    fn fuzz_read_message_from_worker((max, data) in limit_and_stream(), plan in plan()) {
        check_read_message::<FromWorker>(&data, &plan, max);
    }

    /// Arbitrary streams as messages from the parent (what a worker reads).
    #[test]
    fn fuzz_read_message_to_worker((max, data) in limit_and_stream(), plan in plan()) {
        check_read_message::<ToWorker>(&data, &plan, max);
    }

    /// Arbitrary payloads in well-formed frames: every one reaches the
    /// message decoder (the paths past the frame layer).
    #[test]
    fn fuzz_framed_garbage_reaches_the_decoder(payload in payload(), plan in plan()) {
        let mut stream = Vec::new();
        write_frame(&mut stream, &payload).unwrap();
        check_read_message::<FromWorker>(&stream, &plan, 1 << 20);
        check_read_message::<ToWorker>(&stream, &plan, 1 << 20);
    }

    /// Valid messages from a worker, mutated, framed and split: decode to
    /// themselves when untouched, and otherwise to a message or a
    /// `Protocol` error, never a panic.
    #[test]
    fn fuzz_mutated_messages_from_worker(msg in from_worker(), m in mutation(), plan in plan()) {
        let payload = apply(&m, codec::encode(&msg).unwrap());
        let mut stream = Vec::new();
        write_frame(&mut stream, &payload).unwrap();
        let got = check_read_message::<FromWorker>(&stream, &plan, 1 << 20);
        if matches!(m, Mutation::None) {
            prop_assert_eq!(got, Some(msg));
        }
    }

    /// The same for messages to a worker.
    #[test]
    fn fuzz_mutated_messages_to_worker(msg in to_worker(), m in mutation(), plan in plan()) {
        let payload = apply(&m, codec::encode(&msg).unwrap());
        let mut stream = Vec::new();
        write_frame(&mut stream, &payload).unwrap();
        let got = check_read_message::<ToWorker>(&stream, &plan, 1 << 20);
        if matches!(m, Mutation::None) {
            prop_assert_eq!(got, Some(msg));
        }
    }
}

/// The tracking allocator sees allocations on this thread (else the
/// bounds above would hold vacuously).
#[test]
fn fuzz_tracking_allocator_sees_this_threads_allocations() {
    let (v, largest) = largest_allocation(|| Vec::<u8>::with_capacity(5000));
    assert!(largest >= 5000, "saw {largest}");
    drop(v);
    let (_, largest) = largest_allocation(|| 1 + 1);
    assert_eq!(largest, 0);
}

/// A message announcing `n` sequence elements, followed by `tail` bytes
/// on which the first element already fails (0xFF starts a varint that
/// never ends): whatever is allocated is preallocation.
fn sequence_message(prefix: &[u8], n: usize, tail: usize) -> Vec<u8> {
    let mut payload = prefix.to_vec();
    payload.extend(varint(n));
    payload.extend(std::iter::repeat_n(0xFFu8, tail));
    let mut stream = Vec::new();
    write_frame(&mut stream, &payload).unwrap();
    stream
}

/// What holds today: an announced sequence length costs nothing when the
/// frame could not hold that many elements, and otherwise at most one
/// element's size per frame byte, capped by serde at 1 MiB.
#[test]
fn fuzz_sequence_preallocation_is_bounded() {
    let cases = [
        (10, 10),
        (1000, 1000),
        (1 << 20, 1 << 20),
        (usize::MAX, 100),
        (1 << 40, 1 << 16),
    ];
    for (n, tail) in cases {
        for prefix in [&[4u8, 0][..], &[2, 0, 0]] {
            let stream = sequence_message(prefix, n, tail);
            let frame_len = stream.len() - HEADER_BYTES;
            let (errors, largest) = largest_allocation(|| {
                (
                    read_message::<_, FromWorker>(&mut &stream[..], 1 << 30).is_err(),
                    read_message::<_, ToWorker>(&mut &stream[..], 1 << 30).is_err(),
                )
            });
            assert_eq!(errors, (true, true), "garbage elements must not decode");
            let announced_fits = n <= tail;
            let bound = if announced_fits {
                frame_len.max(1 << 20) + 1024
            } else {
                frame_len + 1024
            };
            assert!(
                largest <= bound,
                "{n} announced in {frame_len} bytes: {largest} allocated at once"
            );
        }
    }
}

/// The promise, taken literally: decoding a frame allocates no
/// more than the frame (plus small change), even under a small
/// `max_frame_bytes`: a 1 KiB `ChunkDone` announcing 1000 outcomes must not
/// make the decoder preallocate 1000 × 56 bytes before the first one fails
/// (serde's own `Vec` impl did, until `bytes::capped_seq`).
#[test]
fn fuzz_sequence_preallocation_stays_within_the_frame() {
    const LIMIT: usize = 1024;
    for prefix in [&[4u8, 0][..], &[2, 0, 0]] {
        let stream = sequence_message(prefix, 1000, 1000);
        let frame_len = stream.len() - HEADER_BYTES;
        assert!(frame_len <= LIMIT);
        let (_, largest) = largest_allocation(|| {
            let _ = read_message::<_, FromWorker>(&mut &stream[..], LIMIT);
            let _ = read_message::<_, ToWorker>(&mut &stream[..], LIMIT);
        });
        assert!(
            largest <= frame_len + 256,
            "decoding a {frame_len}-byte frame (limit {LIMIT}) allocated {largest} bytes at once"
        );
    }
}
