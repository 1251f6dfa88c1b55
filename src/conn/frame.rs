//! The frame format of a [`Connection`](super::Connection): a message is a
//! 4-byte little-endian length and that many bytes. `Connection` reads and
//! writes it, the manager server queues its answers in it, and a peer that
//! is not a `Connection` (a program in another language, a fuzzer) can
//! speak it with these functions.
//!
//! # Example
//! ```
//! use multiproc::conn::frame;
//! let mut stream = Vec::new();
//! frame::push(&mut stream, b"hello")?;
//! frame::push(&mut stream, b"")?;
//! assert_eq!(stream[..frame::HEADER_LEN], [5, 0, 0, 0]);
//! let messages: Vec<&[u8]> = frame::frames(&stream).collect();
//! assert_eq!(messages, [&b"hello"[..], b""]);
//! # Ok::<(), multiproc::Error>(())
//! ```

use crate::error::{Error, Result};

/// The length of a frame's header.
pub const HEADER_LEN: usize = 4;

/// The header of a message of `len` bytes.
///
/// # Errors
/// [`Error::MessageTooLarge`] above `u32::MAX` bytes (4 GiB).
pub fn header(len: usize) -> Result<[u8; HEADER_LEN]> {
    let len = u32::try_from(len).map_err(|_| Error::MessageTooLarge {
        size: len as u64,
        limit: u32::MAX as usize,
    })?;
    Ok(len.to_le_bytes())
}

/// The length of the message that `header` announces.
pub fn message_len(header: [u8; HEADER_LEN]) -> usize {
    // A u32 always fits a usize on the platforms the crate supports.
    u32::from_le_bytes(header) as usize
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
/// frame (its header or part of its message has not arrived).
pub fn split(stream: &[u8]) -> Option<(&[u8], &[u8])> {
    let (header, rest) = stream.split_first_chunk::<HEADER_LEN>()?;
    let len = message_len(*header);
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The messages of the whole frames at the start of `stream`, in order
/// (up to the first frame that is not whole).
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
        assert!(split(&[255, 255, 255, 255, 0]).is_none());
        assert_eq!(message_len(header(0x0102_0304).unwrap()), 0x0102_0304);
    }
}
