//! Streams of small items from one process to another: one write per item
//! on a Unix socket beside [`Queue`] (blocking and awaited).

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;

use multiproc::queue::Queue;

use super::ping_pong::block_on;

/// A stream of small items from one process to another.
pub trait BenchStream: Sync {
    /// Sends item `i` (producer side).
    fn produce(&self, i: u64);
    /// Receives one item (consumer side).
    fn consume(&self) -> u64;
}

impl BenchStream for Queue<u64> {
    fn produce(&self, i: u64) {
        let _ = self.put(i);
    }
    fn consume(&self) -> u64 {
        self.get().unwrap_or(u64::MAX)
    }
}

/// A [`Queue`] used through `put_async` and `get_async`, each call a task
/// on a minimal executor ([`block_on`]) that parks its thread while the
/// waiter thread watches the ring.
pub struct AsyncQueue(pub Queue<u64>);

impl BenchStream for AsyncQueue {
    fn produce(&self, i: u64) {
        let _ = block_on(self.0.put_async(i));
    }
    fn consume(&self) -> u64 {
        block_on(self.0.get_async()).unwrap_or(u64::MAX)
    }
}

/// A Unix socket pair carrying one 8-byte write per item: what the kernel
/// does for a message without any framing or batching.
pub struct RawSocketStream {
    tx: UnixStream,
    rx: UnixStream,
}

impl RawSocketStream {
    /// A new socket pair.
    ///
    /// # Errors
    /// If `socketpair` fails.
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = UnixStream::pair()?;
        Ok(RawSocketStream { tx, rx })
    }
}

/// Writes one 8-byte word to a socket.
pub(super) fn write8(mut socket: &UnixStream, v: u64) {
    let _ = socket.write_all(&v.to_le_bytes());
}

/// Reads one 8-byte word from a socket (`u64::MAX` at end of file).
pub(super) fn read8(mut socket: &UnixStream) -> u64 {
    let mut b = [0; 8];
    match socket.read_exact(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => u64::MAX,
    }
}

impl BenchStream for RawSocketStream {
    fn produce(&self, i: u64) {
        write8(&self.tx, i);
    }
    fn consume(&self) -> u64 {
        read8(&self.rx)
    }
}
