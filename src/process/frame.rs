//! Length-prefixed frames: the unit the parent and a worker exchange.
//!
//! A pipe is a byte stream; it has no idea where one message ends and the
//! next begins. A *frame* puts that boundary back: four bytes of length
//! (a `u32`, little-endian), then exactly that many bytes of payload.
//!
//! ```text
//! +----------------+---------------------------+
//! | len: u32 (LE)  | payload: len bytes        |
//! +----------------+---------------------------+
//! ```
//!
//! The reader is written for a peer that may be broken or hostile (a worker
//! that crashed mid-write, a program that is not a worker at all):
//!
//! * end of stream *between* frames is a clean end ([`read_frame`] gives
//!   `Ok(None)`), end of stream *inside* a frame is
//!   [`FrameError::TruncatedHeader`] or [`FrameError::TruncatedPayload`];
//! * a length over the caller's limit is [`FrameError::TooLarge`], reported
//!   *before* anything is allocated, so a garbage prefix such as
//!   `0xFFFF_FFFF` costs nothing;
//! * short reads (one byte per `read` call, `Interrupted`) are handled.
//!
//! After a frame error the stream is out of step and cannot be trusted
//! again: the pool replaces the worker. That is why frame errors become
//! [`Error::Protocol`] (or [`Error::Io`]) and not a per-value decode error.

use std::fmt;
use std::io::{self, Read, Write};

use crate::Error;

/// Bytes in a frame header (the `u32` length).
pub(crate) const HEADER_BYTES: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream ended after `got` of the 4 header bytes.
    TruncatedHeader {
        /// Header bytes received before end of stream (1 to 3).
        got: usize,
    },
    /// The stream ended after `got` of the `expected` payload bytes.
    TruncatedPayload {
        /// The length the header announced.
        expected: usize,
        /// Payload bytes received before end of stream.
        got: usize,
    },
    /// The frame is longer than the limit. Nothing was allocated for it.
    TooLarge {
        /// The length announced by the header (or of the payload to write).
        len: u64,
        /// The limit it exceeds.
        max: u64,
    },
    /// The underlying reader or writer failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TruncatedHeader { got } => write!(
                f,
                "stream ended inside a frame header ({got} of {HEADER_BYTES} bytes)"
            ),
            FrameError::TruncatedPayload { expected, got } => write!(
                f,
                "stream ended inside a frame payload ({got} of {expected} bytes)"
            ),
            FrameError::TooLarge { len, max } => write!(
                f,
                "frame of {len} bytes exceeds the limit of {max} bytes (max_frame_bytes)"
            ),
            FrameError::Io(e) => write!(f, "frame I/O failed: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl From<FrameError> for Error {
    /// Truncation and oversize are the peer breaking the protocol
    /// ([`Error::Protocol`]); an OS-level failure is [`Error::Io`].
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(_) => Error::Io(e.to_string()),
            _ => Error::Protocol(e.to_string()),
        }
    }
}

/// Writes one frame (header, then `payload`) to `w`.
///
/// Fails with [`FrameError::TooLarge`] without writing anything when the
/// payload does not fit the `u32` length. It does not flush: a writer that
/// has several frames to send flushes once after the last (through a
/// `BufWriter`, that is one pipe write for all of them).
pub(crate) fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len() as u64,
        max: u64::from(u32::MAX),
    })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)?;
    Ok(())
}

/// Reads one frame whose payload is at most `max_frame_bytes` long.
///
/// * `Ok(Some(payload))`: a whole frame;
/// * `Ok(None)`: the stream ended cleanly, at a frame boundary;
/// * `Err(_)`: see [`FrameError`]. An over-limit length is refused before
///   any allocation; a within-limit one allocates at most its own length.
pub(crate) fn read_frame<R: Read + ?Sized>(
    r: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    match read_full(r, &mut header)? {
        0 => return Ok(None),
        HEADER_BYTES => {}
        got => return Err(FrameError::TruncatedHeader { got }),
    }
    let announced = u32::from_le_bytes(header);
    let len = match usize::try_from(announced) {
        Ok(len) if len <= max_frame_bytes => len,
        _ => {
            return Err(FrameError::TooLarge {
                len: u64::from(announced),
                max: max_frame_bytes as u64,
            });
        }
    };
    // Reserve what has arrived, not what was announced: a lying header
    // must not make the parent commit a gigabyte up front. Capacity grows
    // geometrically (so copying stays linear) but never past `len`.
    let mut payload: Vec<u8> = Vec::with_capacity(len.min(1 << 16));
    let mut limited = r.take(len as u64);
    loop {
        // Fill exactly the capacity we have (`read_to_end` retries on
        // `Interrupted` and stops at end of stream), then grow.
        let want = payload.capacity() - payload.len();
        let got = (&mut limited).take(want as u64).read_to_end(&mut payload)?;
        if payload.len() >= len || got < want {
            break;
        }
        let target = (payload.capacity() * 2).clamp(1 << 16, len);
        payload.reserve_exact(target - payload.len());
    }
    if payload.len() < len {
        return Err(FrameError::TruncatedPayload {
            expected: len,
            got: payload.len(),
        });
    }
    Ok(Some(payload))
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read
/// (less than `buf.len()` only at end of stream). Retries `Interrupted`.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Encodes `payloads` as consecutive frames.
    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            write_frame(&mut out, p).unwrap();
        }
        out
    }

    /// A reader that hands out one byte per `read` call, with an
    /// `Interrupted` error before every byte, like a slow pipe.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        interrupt_next: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt_next = !self.interrupt_next;
            if self.interrupt_next {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.pos == self.data.len() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.data[self.pos];
            self.pos += 1;
            Ok(1)
        }
    }

    /// A reader that must never be asked for payload bytes.
    struct HeaderOnly(Cursor<Vec<u8>>);

    impl Read for HeaderOnly {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(self.0.position() < HEADER_BYTES as u64, "payload was read");
            self.0.read(buf)
        }
    }

    #[test]
    fn round_trip_of_several_frames_then_clean_eof() {
        let data = frames(&[b"hello", b"", &[0xAB; 1000]]);
        let mut r = Cursor::new(data);
        assert_eq!(read_frame(&mut r, 1 << 20).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 1 << 20).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r, 1 << 20).unwrap().unwrap(), [0xAB; 1000]);
        assert!(read_frame(&mut r, 1 << 20).unwrap().is_none());
        assert!(
            read_frame(&mut r, 1 << 20).unwrap().is_none(),
            "EOF stays EOF"
        );
    }

    #[test]
    fn header_is_u32_little_endian() {
        assert_eq!(frames(&[b"ab"]), [2, 0, 0, 0, b'a', b'b']);
    }

    #[test]
    fn empty_frame_with_zero_limit() {
        let mut r = Cursor::new(frames(&[b""]));
        assert_eq!(read_frame(&mut r, 0).unwrap().unwrap(), b"");
    }

    #[test]
    fn exact_limit_is_accepted_and_one_more_is_refused() {
        let payload = vec![7u8; 64];
        let data = frames(&[&payload]);
        assert_eq!(
            read_frame(&mut Cursor::new(&data), 64).unwrap().unwrap(),
            payload
        );
        match read_frame(&mut Cursor::new(&data), 63) {
            Err(FrameError::TooLarge { len: 64, max: 63 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn huge_prefix_is_refused_without_reading_or_allocating() {
        // A 4 GiB announcement followed by nothing: if the reader tried to
        // allocate or read it, `HeaderOnly` would panic or the test would
        // abort on allocation.
        let mut r = HeaderOnly(Cursor::new(vec![0xFF; 4]));
        let err = read_frame(&mut r, 1 << 20).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 0xFFFF_FFFF,
                max: 1_048_576
            }
        ));
        let msg = Error::from(err).to_string();
        assert!(
            msg.contains("4294967295") && msg.contains("1048576"),
            "{msg}"
        );
    }

    #[test]
    fn truncation_at_every_offset_is_typed() {
        let data = frames(&[b"payload!"]);
        for cut in 0..data.len() {
            let got = read_frame(&mut Cursor::new(&data[..cut]), 1 << 20);
            match (cut, got) {
                (0, Ok(None)) => {}
                (1..=3, Err(FrameError::TruncatedHeader { got })) => assert_eq!(got, cut),
                (_, Err(FrameError::TruncatedPayload { expected: 8, got })) => {
                    assert_eq!(got, cut - HEADER_BYTES)
                }
                (cut, other) => panic!("cut at {cut}: unexpected {other:?}"),
            }
        }
        // A truncated second frame after a whole first one.
        let two = frames(&[b"one", b"two"]);
        let mut r = Cursor::new(&two[..two.len() - 1]);
        assert_eq!(read_frame(&mut r, 16).unwrap().unwrap(), b"one");
        assert!(matches!(
            read_frame(&mut r, 16),
            Err(FrameError::TruncatedPayload {
                expected: 3,
                got: 2
            })
        ));
    }

    #[test]
    fn one_byte_at_a_time_reader_with_interrupts() {
        let data = frames(&[b"abc", b"", b"defgh"]);
        let mut r = Trickle {
            data,
            pos: 0,
            interrupt_next: false,
        };
        assert_eq!(read_frame(&mut r, 8).unwrap().unwrap(), b"abc");
        assert_eq!(read_frame(&mut r, 8).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r, 8).unwrap().unwrap(), b"defgh");
        assert!(read_frame(&mut r, 8).unwrap().is_none());
    }

    #[test]
    fn io_errors_are_io_not_protocol() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("pipe on fire"))
            }
        }
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = read_frame(&mut Broken, 8).unwrap_err();
        assert!(matches!(Error::from(err), Error::Io(m) if m.contains("pipe on fire")));
        let err = write_frame(&mut Broken, b"x").unwrap_err();
        assert!(matches!(err, FrameError::Io(ref e) if e.kind() == io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn truncation_converts_to_protocol_error() {
        let err = read_frame(&mut Cursor::new([1u8, 0]), 8).unwrap_err();
        assert_eq!(
            Error::from(err),
            Error::Protocol("stream ended inside a frame header (2 of 4 bytes)".into())
        );
    }
}
