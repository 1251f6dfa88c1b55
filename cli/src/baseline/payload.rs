//! Large messages from one process to another: [`Connection::send_bytes`]
//! and `recv_bytes` (and `send`/`recv` of a `Vec<u8>`, through serde)
//! beside a raw Unix socket moving the same bytes with no framing.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, PoisonError};

use anyhow::Result;
use multiproc::conn::{Connection, Pipe};

/// The size of one payload in the 1 MiB rows.
pub const PAYLOAD_LEN: usize = 1 << 20;

/// Whole messages of bytes from one process to another.
pub trait BenchPayload: Sync {
    /// Sends one message (producer side).
    fn send_payload(&self, msg: &[u8]);
    /// Receives one message and passes it to `check` (consumer side);
    /// `None` if nothing arrived (the peer failed).
    fn recv_payload(&self, check: &mut dyn FnMut(&[u8])) -> Option<()>;
}

/// Marks `msg` as message `seq` for [`check_payload`]: its first and last
/// bytes (a producer does not pay for writing every byte of every message).
pub fn mark_payload(msg: &mut [u8], seq: u64) {
    if let Some(first) = msg.first_mut() {
        *first = seq as u8;
    }
    if let Some(last) = msg.last_mut() {
        *last = seq as u8;
    }
}

/// Whether `msg` is message `seq` of `len` bytes as [`mark_payload`]
/// marked it, looking at its first and last bytes only (a reader that
/// touches every byte says so itself).
pub fn check_payload(msg: &[u8], seq: u64, len: usize) -> bool {
    msg.len() == len && msg.first() == Some(&(seq as u8)) && msg.last() == Some(&(seq as u8))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A duplex [`Pipe()`]: `send_bytes` and `recv_bytes` (a fresh `Vec` per
/// message, as a caller gets it).
pub struct PipeBytes {
    tx: Mutex<Connection>,
    rx: Mutex<Connection>,
}

impl PipeBytes {
    /// A new duplex pipe.
    ///
    /// # Errors
    /// If the pipe cannot be made.
    pub fn new() -> Result<Self> {
        let (rx, tx) = Pipe::duplex()?;
        Ok(PipeBytes {
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
        })
    }
}

impl BenchPayload for PipeBytes {
    fn send_payload(&self, msg: &[u8]) {
        let _ = lock(&self.tx).send_bytes(msg);
    }
    fn recv_payload(&self, check: &mut dyn FnMut(&[u8])) -> Option<()> {
        let msg = lock(&self.rx).recv_bytes().ok()?;
        check(&msg);
        Some(())
    }
}

/// The same pipe carrying a `Vec<u8>` through `send` and `recv` (serde,
/// postcard): what a caller who does not know of `send_bytes` gets.
pub struct PipeSerdeVec(PipeBytes);

impl PipeSerdeVec {
    /// A new duplex pipe.
    ///
    /// # Errors
    /// If the pipe cannot be made.
    pub fn new() -> Result<Self> {
        PipeBytes::new().map(PipeSerdeVec)
    }
}

impl BenchPayload for PipeSerdeVec {
    fn send_payload(&self, msg: &[u8]) {
        // serde encodes a `[u8]` as it does a `Vec<u8>` (a sequence, one
        // element at a time), so the caller's buffer is sent as it is.
        let _ = lock(&self.0.tx).send(msg);
    }
    fn recv_payload(&self, check: &mut dyn FnMut(&[u8])) -> Option<()> {
        let msg: Vec<u8> = lock(&self.0.rx).recv().ok()?;
        check(&msg);
        Some(())
    }
}

/// A Unix socket pair carrying the bytes of each message and nothing else,
/// read into one reused buffer of the known size: what the kernel does.
pub struct RawSocketPayload {
    tx: UnixStream,
    rx: UnixStream,
    buf: Mutex<Vec<u8>>,
}

impl RawSocketPayload {
    /// A new socket pair for messages of `len` bytes.
    ///
    /// # Errors
    /// If `socketpair` fails.
    pub fn new(len: usize) -> io::Result<Self> {
        let (tx, rx) = UnixStream::pair()?;
        Ok(RawSocketPayload {
            tx,
            rx,
            buf: Mutex::new(vec![0; len]),
        })
    }
}

impl BenchPayload for RawSocketPayload {
    fn send_payload(&self, msg: &[u8]) {
        let _ = (&self.tx).write_all(msg);
    }
    fn recv_payload(&self, check: &mut dyn FnMut(&[u8])) -> Option<()> {
        let mut buf = lock(&self.buf);
        (&self.rx).read_exact(&mut buf).ok()?;
        check(&buf);
        Some(())
    }
}
