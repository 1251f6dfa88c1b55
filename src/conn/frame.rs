//! The frame format of a [`Connection`](super::Connection), which is
//! Python's (`multiprocessing.connection.Connection.send_bytes`): a message
//! is a 4-byte big-endian signed length and that many bytes; a message over
//! `0x7fffffff` bytes has the length `-1` (`ff ff ff ff`) followed by its
//! real length as an 8-byte big-endian unsigned integer. `Connection` reads
//! and writes it, the manager server queues its answers in it, and a peer
//! that is not a `Connection` (a Python program, a program in another
//! language, a fuzzer) can speak it with these functions.
//!
//! A reader accepts the long form for any length (as Python does); a 4-byte
//! length below zero other than `-1` is not a valid header.
//!
//! # Example
//! ```
//! use multiproc::conn::frame;
//! let mut stream = Vec::new();
//! frame::push(&mut stream, b"hello")?;
//! frame::push(&mut stream, b"")?;
//! assert_eq!(stream[..frame::HEADER_LEN], [0, 0, 0, 5]);
//! let messages: Vec<&[u8]> = frame::frames(&stream).collect();
//! assert_eq!(messages, [&b"hello"[..], b""]);
//! # Ok::<(), multiproc::Error>(())
//! ```

use std::ops::Deref;

use crate::error::{Error, Result};

/// The length of a frame's short header (a message of at most
/// [`SHORT_MAX`] bytes); every header starts with this many bytes.
pub const HEADER_LEN: usize = 4;
/// The length of a long header: `ff ff ff ff` and an 8-byte length.
pub const LONG_HEADER_LEN: usize = 12;
/// The largest message a short header announces (`0x7fffffff` bytes).
pub const SHORT_MAX: usize = 0x7fff_ffff;
/// The first four bytes of a long header (`-1`).
const LONG: [u8; HEADER_LEN] = [0xff; HEADER_LEN];

/// A frame's header: [`HEADER_LEN`] or [`LONG_HEADER_LEN`] bytes (it
/// dereferences to them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; LONG_HEADER_LEN],
    len: u8,
}

impl Deref for Header {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The header of a message of `len` bytes.
///
/// # Errors
/// [`Error::MessageTooLarge`] if `len` does not fit 64 bits (never on the
/// platforms the crate supports).
pub fn header(len: usize) -> Result<Header> {
    let mut bytes = [0; LONG_HEADER_LEN];
    if len <= SHORT_MAX {
        // `len` fits 31 bits: a non-negative i32.
        bytes[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        return Ok(Header {
            bytes,
            len: HEADER_LEN as u8,
        });
    }
    let long = u64::try_from(len).map_err(|_| Error::MessageTooLarge {
        size: u64::MAX,
        limit: usize::MAX,
    })?;
    bytes[..HEADER_LEN].copy_from_slice(&LONG);
    bytes[HEADER_LEN..].copy_from_slice(&long.to_be_bytes());
    Ok(Header {
        bytes,
        len: LONG_HEADER_LEN as u8,
    })
}

/// Reads the header that `stream` starts with: `Ok(Some((header_len,
/// message_len)))`, or `Ok(None)` if the header has not arrived whole.
/// The message length is not checked against any limit: that is the
/// caller's business, before it allocates anything for the message.
///
/// # Errors
/// [`Error::Deserialize`] if the first four bytes are a negative length
/// other than `-1` (no Python peer sends that).
pub fn parse_header(stream: &[u8]) -> Result<Option<(usize, u64)>> {
    let Some(short) = stream.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(*short);
    if len >= 0 {
        return Ok(Some((HEADER_LEN, len as u64)));
    }
    if *short != LONG {
        return Err(Error::Deserialize(format!(
            "invalid frame header {short:02x?}: a negative length"
        )));
    }
    Ok(stream[HEADER_LEN..]
        .first_chunk::<8>()
        .map(|long| (LONG_HEADER_LEN, u64::from_be_bytes(*long))))
}

/// Appends `message` to `out` as one frame.
///
/// # Errors
/// As [`header`]; `out` is then unchanged.
pub fn push(out: &mut Vec<u8>, message: &[u8]) -> Result<()> {
    out.extend_from_slice(&header(message.len())?);
    out.extend_from_slice(message);
    Ok(())
}

/// The message of the whole frame that `stream` starts with, and the rest
/// of `stream` after it; `None` if `stream` does not start with a whole
/// frame (its header or part of its message has not arrived, or its
/// header is not valid).
pub fn split(stream: &[u8]) -> Option<(&[u8], &[u8])> {
    let (at, len) = parse_header(stream).ok()??;
    let rest = &stream[at..];
    let len = usize::try_from(len).ok().filter(|&len| len <= rest.len())?;
    Some(rest.split_at(len))
}

/// The messages of the whole frames at the start of `stream`, in order
/// (up to the first frame that is not whole or not valid).
pub fn frames(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        let (message, after) = split(rest)?;
        rest = after;
        Some(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_partial_frame_is_not_read() {
        let mut stream = Vec::new();
        for m in [&b"a"[..], b"", &[7; 300]] {
            push(&mut stream, m).unwrap();
        }
        assert_eq!(frames(&stream).count(), 3);
        assert_eq!(split(&stream).unwrap().0, b"a");
        for cut in 0..stream.len() {
            let whole: usize = frames(&stream[..cut]).count();
            assert!(whole < 3, "{cut}");
        }
        assert!(split(&[0x7f, 255, 255, 255, 0]).is_none());
        assert_eq!(
            parse_header(&header(0x0102_0304).unwrap()).unwrap(),
            Some((4, 0x0102_0304))
        );
    }

    #[test]
    fn headers_are_pythons() {
        // Python: struct.pack("!i", 300).
        assert_eq!(&*header(300).unwrap(), [0, 0, 1, 0x2c]);
        assert_eq!(&*header(0).unwrap(), [0, 0, 0, 0]);
        assert_eq!(&*header(SHORT_MAX).unwrap(), [0x7f, 0xff, 0xff, 0xff]);
        // A 2**31-byte message: `ff ff ff ff 00 00 00 00 80 00 00 00`.
        assert_eq!(
            &*header(1 << 31).unwrap(),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
        assert_eq!(
            parse_header(&header(1 << 31).unwrap()).unwrap(),
            Some((LONG_HEADER_LEN, 1 << 31))
        );
        // The long form of a short length is read (Python reads it too).
        let long_short = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'];
        assert_eq!(split(&long_short).unwrap().0, b"hi");
    }

    #[test]
    fn incomplete_and_invalid_headers() {
        for cut in 0..HEADER_LEN {
            assert_eq!(parse_header(&[0; HEADER_LEN][..cut]).unwrap(), None);
        }
        for cut in HEADER_LEN..LONG_HEADER_LEN {
            assert_eq!(parse_header(&[0xff; LONG_HEADER_LEN][..cut]).unwrap(), None);
        }
        assert_eq!(
            parse_header(&[0xff; LONG_HEADER_LEN]).unwrap(),
            Some((LONG_HEADER_LEN, u64::MAX))
        );
        assert!(parse_header(&[0x80, 0, 0, 0]).is_err());
        assert!(parse_header(&[0xff, 0xff, 0xff, 0xfe]).is_err());
        assert!(split(&[0x80, 0, 0, 0]).is_none());
        assert_eq!(frames(&[0xfe, 0xff, 0xff, 0xff, 1]).count(), 0);
    }
}
