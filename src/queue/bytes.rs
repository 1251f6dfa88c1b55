//! `Queue<Bytes>`: raw byte frames written straight into the ring and read
//! in place, with no encoding and no copy in between.

use std::time::Duration;

use super::{put_outcome, PutError, Queue};
use crate::error::{Error, Result};
use crate::sys::Deadline;

/// The item type of a queue of raw byte frames: [`Queue<Bytes>`](Queue).
///
/// A `Queue<Bytes>` has no `put`/`get` (a `Bytes` is not a serde item, and
/// no value of it exists), and a `Queue<T>` of serde items has none of the
/// byte methods; a named queue records its item type, so opening a byte
/// queue as a `Queue<T>` is an error. A byte frame is therefore never
/// decoded as a `T` by mistake.
///
/// | write | read |
/// |---|---|
/// | [`put_with(len, \|buf\| …)`](Queue::put_with): fill the frame in the ring | [`get_with(\|bytes\| …)`](Queue::get_with): look at the frame in the ring |
/// | [`put_bytes(&[u8])`](Queue::put_bytes): one copy in | [`get_bytes()`](Queue::get_bytes): one copy out, a `Vec<u8>` |
///
/// Each has `try_` and `_timeout` forms, as `put`/`get` do. A frame holds
/// 0 bytes up to [`max_item_size`](Queue::max_item_size) (the ring's size
/// less 4). A frame that straddles the ring's end goes through a
/// per-thread buffer (one copy); with a ring that is a multiple of the
/// frame size plus 4 bytes, none ever does.
///
/// What holds, with processes killed at any moment:
/// - a producer killed inside `put_with`'s closure, or a closure that
///   panics, leaves nothing visible: the frame is published after the
///   closure returns, in one store;
/// - a consumer killed inside `get_with`'s closure, or a closure that
///   panics, leaves the frame whole for the next consumer (it is consumed
///   only after the closure returns);
/// - `get_with`'s closure holds the consumers' lock: other consumers wait
///   for it, producers never do (they write only to the free part of the
///   ring). If the ring is full, a producer waits for room exactly as long
///   as the read takes;
/// - a copy of the process forked inside either closure (a bare
///   `fork(2)`) that returns from it takes or adds nothing: its call
///   fails with [`Error::NotOwner`], the frame being its parent's;
/// - a closure that would wait on its own queue (a `get` inside
///   `put_with`'s closure while the queue is empty, a `put` inside
///   `get_with`'s while it is full) gets [`Error::Deadlock`] instead of
///   hanging: its thread holds the lock of the end it waits for.
///
/// # Example
/// ```
/// use multiproc::queue::{Bytes, Queue};
/// let q = Queue::<Bytes>::new()?;
/// q.put_with(5, |buf| buf.copy_from_slice(b"hello"))?;
/// q.put_bytes(b"world")?;
/// let n = q.get_with(|frame| frame.iter().filter(|&&b| b == b'l').count())?;
/// assert_eq!(n, 2);
/// assert_eq!(q.get_bytes()?, b"world");
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// The frame's bytes are lent for the closure only: neither the bytes of
/// `get_with` (which producers reuse once the frame is consumed) nor those
/// of `put_with` (which consumers read once the frame is published) can
/// be kept past it,
/// ```compile_fail
/// let q = multiproc::queue::Queue::<multiproc::queue::Bytes>::new()?;
/// q.put_bytes(b"hello")?;
/// let kept: &[u8] = q.get_with(|frame| frame)?;
/// # Ok::<(), multiproc::Error>(())
/// ```
/// ```compile_fail,E0521
/// let q = multiproc::queue::Queue::<multiproc::queue::Bytes>::new()?;
/// let mut kept: Option<&mut [u8]> = None;
/// q.put_with(5, |buf| kept = Some(buf))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
/// and the two kinds of queue keep to their own methods:
/// ```compile_fail,E0599
/// let q = multiproc::queue::Queue::<u32>::new()?;
/// q.put_bytes(b"\x05")?;
/// # Ok::<(), multiproc::Error>(())
/// ```
/// ```compile_fail,E0599
/// let q = multiproc::queue::Queue::<multiproc::queue::Bytes>::new()?;
/// let item = q.get()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum Bytes {}

impl Queue<Bytes> {
    fn push_with(
        &self,
        len: usize,
        deadline: Deadline,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        if self.closed_here() {
            return Err(Error::Closed);
        }
        let max = self.ring.max_item();
        if len > max {
            return Err(Error::MessageTooLarge {
                size: len as u64,
                limit: max,
            });
        }
        put_outcome((), self.ring.push_with(len, deadline, fill))
            .map_err(|e: PutError<()>| e.into())
    }

    /// Adds a frame of `len` bytes, written by `fill` straight into the
    /// ring, waiting for room. `fill` gets exactly `len` bytes (their old
    /// content is unspecified) and runs with the producers' lock held:
    /// other producers wait for it. The frame becomes visible only once
    /// `fill` has returned; if it panics, nothing is added (and the panic
    /// goes on).
    ///
    /// # Errors
    /// [`Error::Closed`], and [`Error::MessageTooLarge`] for a `len` over
    /// [`max_item_size`](Queue::max_item_size) (`fill` is not called).
    pub fn put_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.push_with(len, Deadline::Never, fill)
    }

    /// As [`put_with`](Queue::put_with), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] (`fill` is not called), and those of
    /// [`put_with`](Queue::put_with).
    pub fn put_with_timeout(
        &self,
        len: usize,
        timeout: Duration,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        self.push_with(len, Deadline::after(timeout), fill)
    }

    /// As [`put_with`](Queue::put_with), if there is room now.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] (`fill` is not called), and those of
    /// [`put_with`](Queue::put_with).
    pub fn try_put_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.push_with(len, Deadline::Now, fill)
    }

    /// Adds a copy of `bytes` as one frame, waiting for room.
    ///
    /// # Errors
    /// As for [`put_with`](Queue::put_with).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.put_with(bytes.len(), |buf| buf.copy_from_slice(bytes))
    }

    /// As [`put_bytes`](Queue::put_bytes), waiting at most `timeout`.
    ///
    /// # Errors
    /// As for [`put_with_timeout`](Queue::put_with_timeout).
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.put_with_timeout(bytes.len(), timeout, |buf| buf.copy_from_slice(bytes))
    }

    /// As [`put_bytes`](Queue::put_bytes), if there is room now.
    ///
    /// # Errors
    /// As for [`try_put_with`](Queue::try_put_with).
    pub fn try_put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.try_put_with(bytes.len(), |buf| buf.copy_from_slice(bytes))
    }

    /// Takes the oldest frame, waiting for one, and returns what `read`
    /// makes of its bytes, read in place in the ring. `read` runs with the
    /// consumers' lock held (other consumers wait for it; producers do not,
    /// but a full ring gains no room until it returns). The frame is
    /// consumed once `read` returns; if `read` panics, or the process is
    /// killed meanwhile, it stays whole for the next consumer.
    ///
    /// The bytes are the ring's own, which a process that ignores the lock
    /// (any that can open a named queue can write it) may change while
    /// `read` runs: where bytes are checked and then used (as UTF-8, say),
    /// check a copy ([`get_bytes`](Queue::get_bytes)).
    ///
    /// # Errors
    /// [`Error::Closed`] once the queue is closed for all and empty;
    /// [`Error::Corrupt`] if the ring's memory was damaged.
    pub fn get_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.ring.pop_with(Deadline::Never, read)
    }

    /// As [`get_with`](Queue::get_with), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] (`read` is not called), and those of
    /// [`get_with`](Queue::get_with).
    pub fn get_with_timeout<R>(
        &self,
        timeout: Duration,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.ring.pop_with(Deadline::after(timeout), read)
    }

    /// As [`get_with`](Queue::get_with), without waiting.
    ///
    /// # Errors
    /// [`Error::Empty`] (`read` is not called), and those of
    /// [`get_with`](Queue::get_with).
    pub fn try_get_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.ring.pop_with(Deadline::Now, read)
    }

    /// Takes the oldest frame as a `Vec<u8>`, waiting for one.
    ///
    /// # Errors
    /// As for [`get_with`](Queue::get_with).
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        self.get_with(<[u8]>::to_vec)
    }

    /// As [`get_bytes`](Queue::get_bytes), waiting at most `timeout`.
    ///
    /// # Errors
    /// As for [`get_with_timeout`](Queue::get_with_timeout).
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.get_with_timeout(timeout, <[u8]>::to_vec)
    }

    /// As [`get_bytes`](Queue::get_bytes), without waiting.
    ///
    /// # Errors
    /// As for [`try_get_with`](Queue::try_get_with).
    pub fn try_get_bytes(&self) -> Result<Vec<u8>> {
        self.try_get_with(<[u8]>::to_vec)
    }
}
