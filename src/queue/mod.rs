//! Queues in shared memory: [`Queue`], [`JoinableQueue`] and [`SimpleQueue`]
//! (Python's `multiprocessing` queues), with serde items and no feeder thread.
//!
//! Items are encoded (postcard) by the caller's process before any lock is
//! taken and copied into a ring of length-prefixed frames under the
//! producers' robust mutex. The receiving process copies each frame out
//! of the ring (a process that can open the queue may write the ring at
//! any time, and a decoder must not check bytes that change before it
//! uses them), decodes a small item (up to 4 KiB encoded) under the
//! consumers' mutex, and a larger one after that mutex is released. A
//! frame becomes visible only once written whole, and is consumed only
//! once read, so a producer killed half way through a put leaves nothing
//! behind, and a consumer killed half way through a get leaves the item for
//! the next one: no torn item is ever delivered, and the queue stays usable
//! for everyone else.
//!
//! [`put_many`](Queue::put_many) and [`get_many`](Queue::get_many) move a
//! batch of items per hold of each lock, with the same guarantees for the
//! batch: a run of items is published, or consumed, by one store.
//!
//! Byte payloads have their own item type, [`Bytes`]: a `Queue<Bytes>`
//! carries raw frames, written straight into the ring
//! ([`put_with`](Queue::put_with)) and read in place
//! ([`get_with`](Queue::get_with)), with no encoding and no copy in between.
//! It has no `put`/`get` and a `Queue<T>` of serde items has no byte
//! methods, and a named queue records its item type, so a byte frame is
//! never decoded as a `T` by mistake.

mod bytes;
mod ring;

pub use bytes::Bytes;

use std::alloc::Layout;
use std::borrow::Borrow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::segment::{shared_constructors, ElemType, ObjectKind, Region, SharedObject};
use crate::sys::Deadline;
use crate::waiter::ProcessKey;
use ring::{PushFailure, Ring, Take};

thread_local! {
    /// Encoding and decoding buffers, reused so that a put or a get
    /// allocates nothing once warm.
    static BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A buffer a thread keeps between calls: this thread's `spare`, taken out
/// of its cell while in use (its content is left over), or a new one if
/// the cell is gone. A thread-local value's destructor may put and get
/// after the cells of its thread were destroyed; `with` would panic there,
/// which in a destructor aborts the process.
fn take_spare(spare: &'static LocalKey<Cell<Vec<u8>>>) -> Vec<u8> {
    spare.try_with(Cell::take).unwrap_or_default()
}

/// The largest buffer a thread keeps between calls: one that grew past it
/// (a put or get of a larger item) is freed, not held for the thread's
/// life.
const SPARE_MAX: usize = 16 << 20;

/// Puts a buffer taken by [`take_spare`] back for the next call; drops it
/// if the cell is gone, or if it is larger than [`SPARE_MAX`].
fn keep_spare(spare: &'static LocalKey<Cell<Vec<u8>>>, buf: Vec<u8>) {
    if buf.capacity() <= SPARE_MAX {
        let _ = spare.try_with(|cell| cell.set(buf));
    }
}

/// Runs `f` with this thread's scratch buffer (empty on entry).
fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = take_spare(&BUFFER);
    buf.clear();
    let r = f(&mut buf);
    keep_spare(&BUFFER, buf);
    r
}

/// Encoded items up to this size are encoded on the stack.
const SMALL_ITEM: usize = 64;

/// Frames up to this size are decoded under the consumers' lock (from a
/// copy: see [`decode_copy_caught`]).
const DECODE_UNDER_LOCK: usize = 4096;

/// What a get took from the ring: a small item decoded (or the
/// panic its decoding raised, raised again once the frame is consumed, as
/// when it was decoded after the lock), or a large one's bytes.
enum Popped<T> {
    Decoded(std::thread::Result<Result<T>>),
    Copied(Vec<u8>),
}

/// Decodes one item (another process put it: its nesting is bounded).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    crate::decode::from_bytes(bytes).map_err(|e| Error::Deserialize(e.to_string()))
}

/// Decodes one item, catching a panic of its `Deserialize`: a frame whose
/// decoding panics is consumed all the same (else every consumer would
/// take it again and panic in turn).
fn decode_caught<T: DeserializeOwned>(bytes: &[u8]) -> std::thread::Result<Result<T>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(bytes)))
}

/// [`decode_caught`] on a copy of a frame in the ring. Never the ring
/// itself: any process that can open the queue may write it, lock or no
/// lock, and a decoder that checks bytes and then copies them (a
/// `String`'s UTF-8) would make an invalid value of bytes that changed in
/// between.
fn decode_copy_caught<T: DeserializeOwned>(frame: &[u8]) -> std::thread::Result<Result<T>> {
    with_buffer(|buf| {
        buf.extend_from_slice(frame);
        decode_caught(buf)
    })
}

/// How many bytes of frames a [`Queue::put_many`] encodes before handing
/// them to the ring, and how many a [`Queue::get_many`] takes at most in
/// one hold of the consumers' lock (it always takes at least one item).
const BATCH_BYTES: usize = 64 * 1024;

/// A `Vec` that postcard appends to (it takes its writer by value).
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// The ring size of queues made without one: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Why a put failed; the item is handed back.
pub enum PutError<T> {
    /// `try_put` found no room.
    Full(T),
    /// `put_timeout` found no room in time.
    Timeout(T),
    /// The queue was closed.
    Closed(T),
    /// The encoded item can never fit the ring.
    TooLarge {
        /// The item.
        item: T,
        /// Its encoded size.
        size: usize,
        /// The largest item the ring holds.
        max: usize,
    },
    /// The item could not be encoded.
    Serialize(T, String),
    /// The queue's memory or lock failed.
    Other(T, Error),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Timeout(t)
            | PutError::Closed(t)
            | PutError::TooLarge { item: t, .. }
            | PutError::Serialize(t, _)
            | PutError::Other(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Timeout(_) => f.write_str("timed out waiting for room in the queue"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::TooLarge { size, max, .. } => {
                write!(
                    f,
                    "an item of {size} bytes can never fit the queue (at most {max})"
                )
            }
            PutError::Serialize(_, e) => write!(f, "cannot serialize the item: {e}"),
            PutError::Other(_, e) => e.fmt(f),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Converting drops the item.
impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        match e {
            PutError::Full(_) => Error::WouldBlock,
            PutError::Timeout(_) => Error::Timeout,
            PutError::Closed(_) => Error::Closed,
            PutError::TooLarge { size, max, .. } => Error::MessageTooLarge {
                size: size as u64,
                limit: max,
            },
            PutError::Serialize(_, e) => Error::Serialize(e),
            PutError::Other(_, e) => e,
        }
    }
}

/// Why a [`put_many`](Queue::put_many) (or its `try_`/`_timeout` form)
/// stopped: the first [`put`](PutManyError::put) items of the batch are in
/// the queue, in order, and the others are not.
///
/// To keep the items that were not put, pass the batch by reference
/// (`q.put_many(&items)`): the first one not put is `items[e.put]`.
#[derive(Debug)]
pub struct PutManyError {
    /// How many items, from the start of the batch, were put.
    pub put: usize,
    /// Why the next one was not.
    pub error: PutError<()>,
}

impl fmt::Display for PutManyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (after {} items of the batch)", self.error, self.put)
    }
}

impl std::error::Error for PutManyError {}

/// Converting forgets how many items were put.
impl From<PutManyError> for Error {
    fn from(e: PutManyError) -> Error {
        e.error.into()
    }
}

/// A multi-producer, multi-consumer FIFO queue between processes (Python's
/// `multiprocessing.Queue`).
///
/// Bounded by the bytes of its ring and, optionally, by a number of items
/// (Python's `maxsize`). Unlike Python's, a put of an item that cannot be
/// encoded or can never fit is an error at once, not a message from a
/// background thread. [`close`](Queue::close) ends this handle's puts (as
/// Python's `close`); [`close_all`](Queue::close_all) closes the queue for
/// every process (puts fail, gets drain what is left and then fail).
///
/// # Byte payloads
/// For bytes, use [`Queue<Bytes>`](Bytes) (frames written and read in
/// place, no encoding), or wrap the bytes in a type that serializes them as
/// one byte string (`serde_bytes::ByteBuf`). A `Queue<Vec<u8>>` works but
/// is slow for large payloads: serde walks a `Vec<u8>` element by element,
/// so each byte is one encoder call on the way in and one decoder call on
/// the way out: with 1 MiB payloads, `multiproc bench` measured about
/// 1 GB/s here, against 10 GB/s for a `ByteBuf` and 40 GB/s for
/// `Queue<Bytes>` (the `queue_bytes_1mib` row and its "also" lines). Rust has no way to warn at compile time
/// about one instantiation of a generic type, hence this note.
///
/// # Example
/// ```
/// use multiproc::{queue::Queue, Process};
/// let q = Queue::<String>::new()?;
/// let theirs = q.clone(); // another handle on the same queue
/// let mut child = Process::new(move || theirs.put(format!("from {}", std::process::id())).expect("put"));
/// child.start()?;
/// println!("{}", q.get()?);
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    ring: Ring,
    /// The process that closed this handle and its clones with
    /// [`close`](Queue::close) ([`ProcessKey::to_word`]); 0 if none did. A
    /// forked child is another process, so it may put again, as in Python
    /// (even one that gets the pid of the closer once that has died).
    closed_here: Arc<AtomicUsize>,
    _items: PhantomData<fn(T) -> T>,
}

#[cfg(fuzzing)]
impl<T> Queue<T> {
    /// For the fuzzer only (built with `--cfg fuzzing`): overwrites the
    /// ring's offsets and data with `bytes`.
    #[doc(hidden)]
    pub fn fuzz_scribble(&self, bytes: &[u8]) {
        self.ring.scribble(bytes);
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: self.ring.clone(),
            closed_here: Arc::clone(&self.closed_here),
            _items: PhantomData,
        }
    }
}

/// A queue's creator gives its item limit (`maxsize`, 0 for none) and its
/// ring size in bytes.
type QueueArgs = (usize, usize);

impl<T> SharedObject for Queue<T> {
    type Args<'a>
        = QueueArgs
    where
        T: 'a;
    const KIND: ObjectKind = ObjectKind::Queue;

    fn elem() -> ElemType {
        ElemType::of::<T>()
    }

    fn len(&(_, bytes): &QueueArgs) -> Result<u64> {
        Ring::check(bytes)
    }

    fn layout(bytes: u64) -> Result<Layout> {
        Ring::layout(bytes)
    }

    unsafe fn init(at: NonNull<u8>, (maxsize, bytes): QueueArgs) -> Result<()> {
        // SAFETY: forwarded from the caller; `len` checked the size.
        unsafe { Ring::init(at, bytes as u64, maxsize as u64) }
    }

    unsafe fn from_region(region: Region, bytes: u64) -> std::result::Result<Self, String> {
        Ok(Queue {
            // SAFETY: forwarded from the caller.
            ring: unsafe { Ring::from_region(region, bytes) }?,
            closed_here: Arc::new(AtomicUsize::new(0)),
            _items: PhantomData,
        })
    }
}

mod sealed {
    /// Only this crate says what a queue carries.
    pub trait Sealed {}
}

/// What a [`Queue`] carries: any serde item (encoded with postcard), or
/// [`Bytes`] frames. Sealed: implemented for every
/// `T: Serialize + DeserializeOwned` and for [`Bytes`], nothing else.
///
/// An item is received as a value of its own: one that would borrow from
/// the bytes it was decoded from (which stay in the ring, or in a buffer
/// reused at once) is refused.
/// ```compile_fail,E0599
/// let q = multiproc::queue::Queue::<&'static str>::new()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Item: sealed::Sealed {}

impl<T: Serialize + DeserializeOwned> sealed::Sealed for T {}
impl<T: Serialize + DeserializeOwned> Item for T {}
impl sealed::Sealed for Bytes {}
impl Item for Bytes {}

shared_constructors! {
    impl[T: Item] Queue<T> as "queue" {
        args(maxsize: usize, bytes: usize) => (maxsize, bytes),
        made: " of at most `maxsize` items (0: no limit) in a ring of `bytes` bytes (64 bytes to 1 GiB)",
        errors: "[`Error::InvalidArgument`](crate::Error::InvalidArgument) for a ring under 64 bytes or over 1 GiB. ",
        kept: " An existing queue keeps its own ring size and item limit. Its items must be of the same type `T`.",
        anonymous: with_capacity,
    }
}

impl<T: Item> Queue<T> {
    /// An anonymous queue with a 1 MiB ring and no item limit.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        Self::with_capacity(0, DEFAULT_CAPACITY)
    }

    /// An anonymous queue of at most `maxsize` items (0: no limit), 1 MiB ring.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn bounded(maxsize: usize) -> Result<Self> {
        Self::with_capacity(maxsize, DEFAULT_CAPACITY)
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn push(&self, item: T, deadline: Deadline) -> std::result::Result<(), PutError<T>> {
        if self.closed_here() {
            return Err(PutError::Closed(item));
        }
        // A small item is encoded on the stack: no buffer to fetch, grow
        // or put back. One that does not fit is encoded again below.
        let mut small = [0u8; SMALL_ITEM];
        match postcard::to_slice(&item, &mut small) {
            Ok(bytes) => {
                let bytes = &*bytes;
                let item = self.fits(item, bytes.len())?;
                return put_outcome(item, self.ring.push(bytes, deadline));
            }
            Err(postcard::Error::SerializeBufferFull) => {}
            Err(e) => return Err(PutError::Serialize(item, e.to_string())),
        }
        with_buffer(|buf| {
            let bytes = match postcard::to_extend(&item, std::mem::take(buf)) {
                Ok(b) => {
                    *buf = b;
                    &buf[..]
                }
                Err(e) => return Err(PutError::Serialize(item, e.to_string())),
            };
            let item = self.fits(item, bytes.len())?;
            put_outcome(item, self.ring.push(bytes, deadline))
        })
    }

    async fn push_async(
        &self,
        item: T,
        deadline: Deadline,
    ) -> std::result::Result<(), PutError<T>> {
        if self.closed_here() {
            return Err(PutError::Closed(item));
        }
        let bytes = match postcard::to_allocvec(&item) {
            Ok(b) => b,
            Err(e) => return Err(PutError::Serialize(item, e.to_string())),
        };
        let item = self.fits(item, bytes.len())?;
        put_outcome(item, self.ring.push_async(&bytes, deadline).await)
    }

    /// The item back, if its encoding of `size` bytes fits the ring.
    fn fits(&self, item: T, size: usize) -> std::result::Result<T, PutError<T>> {
        let max = self.ring.max_item();
        if size > max {
            Err(PutError::TooLarge { item, size, max })
        } else {
            Ok(item)
        }
    }

    /// Adds `item` without blocking the thread (for a task on an async
    /// runtime; any runtime will do), waiting for room.
    ///
    /// Cancellation: a future dropped before it finishes did not add the
    /// item (it is dropped with the future); one that returned `Ok` did.
    ///
    /// # Errors
    /// As for [`put`](Queue::put), and [`PutError::Other`] if this
    /// process's waiter thread cannot be started.
    pub async fn put_async(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.push_async(item, Deadline::Never).await
    }

    /// As [`put_async`](Queue::put_async), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PutError::Timeout`], and those of [`put_async`](Queue::put_async).
    pub async fn put_timeout_async(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutError<T>> {
        self.push_async(item, Deadline::after(timeout)).await
    }

    /// Removes and returns the oldest item without blocking the thread
    /// (for a task on an async runtime; any runtime will do).
    ///
    /// Cancellation: a future dropped before it finishes has taken
    /// nothing; the item stays for the next getter.
    ///
    /// # Errors
    /// As for [`get`](Queue::get), and if this process's waiter thread
    /// cannot be started.
    ///
    /// # Example
    /// ```
    /// # async fn demo(q: &multiproc::Queue<u32>) -> multiproc::Result<()> {
    /// let job = q.get_async().await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_async(&self) -> Result<T> {
        self.pop_async(Deadline::Never).await
    }

    /// As [`get_async`](Queue::get_async), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get_async`](Queue::get_async).
    pub async fn get_timeout_async(&self, timeout: Duration) -> Result<T> {
        self.pop_async(Deadline::after(timeout)).await
    }

    async fn pop_async(&self, deadline: Deadline) -> Result<T> {
        let mut buf = Vec::new();
        self.ring.pop_async(&mut buf, deadline).await?;
        decode(&buf)
    }

    /// Adds `item`, waiting for room.
    ///
    /// # Errors
    /// [`PutError::Closed`], [`PutError::TooLarge`], [`PutError::Serialize`].
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.push(item, Deadline::Never)
    }

    /// Adds `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutError::Timeout`], and those of [`put`](Queue::put).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.push(item, Deadline::after(timeout))
    }

    /// Adds `item` if there is room now.
    ///
    /// # Errors
    /// [`PutError::Full`], and those of [`put`](Queue::put).
    pub fn try_put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.push(item, Deadline::Now)
    }

    fn pop(&self, deadline: Deadline) -> Result<T> {
        // A small frame is decoded under the consumers' lock; a large one
        // is kept and decoded after the lock is released, so that other
        // consumers do not wait for it.
        let got = self.ring.pop_with(deadline, |bytes| {
            if bytes.len() <= DECODE_UNDER_LOCK {
                Popped::Decoded(decode_copy_caught(bytes))
            } else {
                let mut buf = take_spare(&BUFFER);
                buf.clear();
                buf.extend_from_slice(bytes);
                Popped::Copied(buf)
            }
        })?;
        match got {
            Popped::Decoded(decoded) => decoded.unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Popped::Copied(buf) => {
                let decoded = decode(&buf);
                keep_spare(&BUFFER, buf);
                decoded
            }
        }
    }

    /// Adds every item of `items`, in order, taking the producers' lock
    /// once for as many as fit (far cheaper per item than [`put`](Queue::put)
    /// for small items), and waiting for room as needed. Items are encoded
    /// before any lock is taken, about 64 KiB of them at a time.
    ///
    /// Each hold of the lock publishes a run of whole items with one store:
    /// a producer killed at any point leaves a prefix of the batch in the
    /// queue (possibly none of it), never a torn item. A batch of up to
    /// 64 KiB encoded becomes visible at once when it fits the free room;
    /// a larger one, or one that does not fit, goes in in runs, as
    /// consumers make room. Getters see the
    /// items in order, and items of other producers never come between
    /// the items of one run (they may between runs). An empty batch puts
    /// nothing and succeeds. If the iterator, or an item's `Serialize`,
    /// panics, the items before it are put (as by a loop of
    /// [`put`](Queue::put)s), then the panic goes on. An iterator that
    /// waits for an item of this queue (a `get`) while the batch holds
    /// back items it gave, encoded but not yet published, would wait for
    /// itself: the `get` fails with [`Error::Deadlock`]. A copy of the
    /// process that the iterator forks (a bare `fork(2)`) puts the items
    /// it is given after the fork, as a loop of `put`s would: those given
    /// before are its parent's.
    ///
    /// `items` may yield `T` or `&T`: pass `&vec` (or `vec.iter()`) to
    /// keep the items the error says were not put.
    ///
    /// # Errors
    /// As for [`put`](Queue::put), in a [`PutManyError`] that says how
    /// many items were put before the one that failed. An item that can
    /// never fit ([`PutError::TooLarge`]) or cannot be encoded stops the
    /// batch there; the items before it are put.
    ///
    /// # Example
    /// ```
    /// let q = multiproc::Queue::<u64>::new()?;
    /// q.put_many(0..100u64).expect("room for 100 items");
    /// assert_eq!(q.get_many(1000)?, (0..100).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many<I>(&self, items: I) -> std::result::Result<(), PutManyError>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.push_many(items, Deadline::Never)
    }

    /// As [`put_many`](Queue::put_many), waiting at most `timeout` in all.
    ///
    /// # Errors
    /// [`PutError::Timeout`] (with the count of items put before the
    /// time ran out), and those of [`put_many`](Queue::put_many).
    pub fn put_many_timeout<I>(
        &self,
        items: I,
        timeout: Duration,
    ) -> std::result::Result<(), PutManyError>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.push_many(items, Deadline::after(timeout))
    }

    /// As [`put_many`](Queue::put_many), without waiting: puts the items
    /// (from the start) that fit now.
    ///
    /// # Errors
    /// [`PutError::Full`] with the count of items put, and those of
    /// [`put_many`](Queue::put_many).
    pub fn try_put_many<I>(&self, items: I) -> std::result::Result<(), PutManyError>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.push_many(items, Deadline::Now)
    }

    fn push_many<I>(&self, items: I, deadline: Deadline) -> std::result::Result<(), PutManyError>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let mut put = 0;
        if self.closed_here() {
            return Err(PutManyError {
                put,
                error: PutError::Closed(()),
            });
        }
        let max = self.ring.max_item();
        let mut items = items.into_iter();
        // Taken out of its cell while in use: an iterator that puts on
        // queues itself finds the cell empty and uses a buffer of its own.
        let mut frames = take_spare(&BUFFER);
        let mut panicked = None;
        // The process whose items the frames are (see below).
        let mut process = ProcessKey::current();
        let outcome = loop {
            frames.clear();
            // Frames encoded whole, and their bytes: what a panic of the
            // iterator or of a `Serialize` leaves to put, as a loop of
            // `put`s that panicked there would have put them.
            let (mut count, mut whole) = (0, 0);
            let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // Once an item is encoded, the iterator may not wait for
                // one of this queue: it would wait for itself.
                let mut holding = None;
                while frames.len() < BATCH_BYTES {
                    let Some(item) = items.next() else {
                        return Ok(true);
                    };
                    if !process.is_current() {
                        // A copy of the process that the iterator forked
                        // (a bare `fork(2)`): the items it gave before are
                        // its parent's, which puts them. The copy puts what
                        // a loop of `put`s forked there would: the rest.
                        frames.clear();
                        (count, whole) = (0, 0);
                        holding = None;
                        process = ProcessKey::current();
                    }
                    // Closed by the iterator or another thread: as for a
                    // loop of `put`s, the items given after it are refused.
                    if self.closed_here() {
                        return Err(PutError::Closed(()));
                    }
                    let start = frames.len();
                    frames.extend_from_slice(&[0; 4]);
                    if let Err(e) = postcard::to_extend(item.borrow(), Append(&mut frames)) {
                        return Err(PutError::Serialize((), e.to_string()));
                    }
                    let size = frames.len() - start - 4;
                    if size > max {
                        return Err(PutError::TooLarge {
                            item: (),
                            size,
                            max,
                        });
                    }
                    frames[start..start + 4].copy_from_slice(&(size as u32).to_le_bytes());
                    count += 1;
                    whole = frames.len();
                    if holding.is_none() {
                        holding = Some(self.ring.holding_back());
                    }
                }
                Ok(false)
            }));
            frames.truncate(whole);
            let (mut stop, done) = match encoded {
                Ok(Ok(done)) => (None, done),
                Ok(Err(e)) => (Some(e), false),
                Err(panic) => {
                    panicked = Some(panic);
                    (None, true)
                }
            };
            let mut at = 0;
            while count > 0 {
                match self.ring.push_frames(&frames[at..], count, deadline) {
                    Ok(Ok((n, bytes))) => {
                        put += n;
                        count -= n;
                        at += bytes;
                    }
                    Ok(Err(f)) => {
                        stop = Some(match f {
                            PushFailure::Full => PutError::Full(()),
                            PushFailure::Timeout => PutError::Timeout(()),
                            PushFailure::Closed => PutError::Closed(()),
                        });
                        break;
                    }
                    Err(e) => {
                        stop = Some(PutError::Other((), e));
                        break;
                    }
                }
            }
            match stop {
                Some(error) => break Err(error),
                None if done => break Ok(()),
                None => {}
            }
        };
        frames.clear();
        keep_spare(&BUFFER, frames);
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        outcome.map_err(|error| PutManyError { put, error })
    }

    /// Removes and returns up to `max` of the oldest items (at least one),
    /// waiting for the first: all the items there are, up to `max`, taken
    /// in one hold of the consumers' lock (far cheaper per item than
    /// [`get`](Queue::get) for small items). One hold takes at most about
    /// 64 KiB of encoded items, whatever `max`. `max == 0` returns no items
    /// at once.
    ///
    /// Small items (up to 4 KiB encoded) are decoded under the consumers'
    /// lock, and consumed together after the last one is: a consumer
    /// killed before that leaves all of them in the queue, and once they
    /// are consumed they are all in the returned `Vec` — each item is got
    /// exactly once. A larger item is got as by [`get`](Queue::get):
    /// alone (it ends a batch of small ones before it), copied out and
    /// decoded after the lock is released, so that a slow `Deserialize`
    /// of it keeps no other consumer waiting. A `Deserialize`
    /// that panics ends the batch before its item, as one that fails
    /// does: the items before it are returned, and the next call starts
    /// with it and panics again, consuming that item only (else every
    /// consumer would take it and panic in turn). A `Deserialize` that would wait on this
    /// queue (a `put` on it while it is full, a `get`) gets
    /// [`Error::Deadlock`] instead: it holds the consumers' lock.
    ///
    /// # Errors
    /// As for [`get`](Queue::get): [`Error::Closed`] once the queue is
    /// closed and empty. An item that is not a `T` ends the batch before
    /// it; it is the first one next time, and then consumed with
    /// [`Error::Deserialize`].
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        self.pop_many(max, Deadline::Never)
    }

    /// As [`get_many`](Queue::get_many), waiting at most `timeout` for the
    /// first item.
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get_many`](Queue::get_many).
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
        self.pop_many(max, Deadline::after(timeout))
    }

    /// As [`get_many`](Queue::get_many), without waiting.
    ///
    /// # Errors
    /// [`Error::Empty`], and those of [`get_many`](Queue::get_many).
    pub fn try_get_many(&self, max: usize) -> Result<Vec<T>> {
        self.pop_many(max, Deadline::Now)
    }

    fn pop_many(&self, max: usize, deadline: Deadline) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let mut failed = None;
        let mut panicked = None;
        let mut large = None;
        self.ring.pop_many(deadline, max, BATCH_BYTES, |bytes| {
            if bytes.len() > DECODE_UNDER_LOCK {
                // As for `get`: copied out, decoded once the lock is
                // released; so it ends a batch, or is one alone.
                if !out.is_empty() {
                    return Take::Leave;
                }
                let mut buf = take_spare(&BUFFER);
                buf.clear();
                buf.extend_from_slice(bytes);
                large = Some(buf);
                return Take::Last;
            }
            if out.capacity() == 0 {
                out.reserve(max.min(256));
            }
            match decode_copy_caught(bytes) {
                Ok(Ok(item)) => {
                    out.push(item);
                    Take::More
                }
                Ok(Err(e)) if out.is_empty() => {
                    failed = Some(e);
                    Take::Last
                }
                Ok(Err(_)) => Take::Leave,
                Err(panic) if out.is_empty() => {
                    panicked = Some(panic);
                    Take::Last
                }
                Err(_) => Take::Leave,
            }
        })?;
        if let Some(buf) = large {
            let decoded = decode(&buf);
            keep_spare(&BUFFER, buf);
            return decoded.map(|item| vec![item]);
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Removes and returns the oldest item, waiting for one.
    ///
    /// # Errors
    /// [`Error::Closed`] once the queue is closed and empty;
    /// [`Error::Deserialize`] if the item is not a `T` (it is consumed).
    pub fn get(&self) -> Result<T> {
        self.pop(Deadline::Never)
    }

    /// As [`get`](Queue::get), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get`](Queue::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.pop(Deadline::after(timeout))
    }

    /// As [`get`](Queue::get), without waiting.
    ///
    /// # Errors
    /// [`Error::Empty`], and those of [`get`](Queue::get).
    pub fn try_get(&self) -> Result<T> {
        self.pop(Deadline::Now)
    }
}

/// What every queue has, whatever its items.
impl<T> Queue<T> {
    /// The number of items (approximate, as Python's `qsize`: it may change at once).
    ///
    /// Read without a lock and without blocking, from both ends of the ring
    /// as they were at one instant (a reading that others disturbed is
    /// taken again). 0 if the queue's memory is corrupt.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the queue holds no items (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether even the smallest item would have to wait (a snapshot, read
    /// as [`len`](Queue::len) is; `true` if the queue's memory is corrupt).
    pub fn is_full(&self) -> bool {
        // The smallest item, the test a put of it makes: no bytes for
        // `Bytes` (an empty frame) or any zero-sized type, one byte for
        // any other (the least postcard writes for a value with data).
        let smallest = usize::from(std::mem::size_of::<T>() != 0);
        self.ring.is_full(smallest)
    }

    /// Closes the queue for every process: puts fail with
    /// [`PutError::Closed`]; gets return the remaining items, then
    /// [`Error::Closed`] instead of waiting. Waiters are woken. There is
    /// no way back (Python has no such call; its `close` is
    /// [`close`](Queue::close)).
    ///
    /// # Errors
    /// Only if the queue's lock fails.
    pub fn close_all(&self) -> Result<()> {
        self.ring.close()
    }

    /// Python's `close()`: this process puts nothing more through this
    /// handle or its clones. Their later puts fail with
    /// [`PutError::Closed`]; gets still work (Python 3.8+ also refuses
    /// `get` on a closed queue object), other processes and other handles
    /// opened by name are unaffected, and a child forked afterwards may put
    /// again. To close the queue for everyone, so that waiting getters
    /// wake up with [`Error::Closed`] once it is drained, use
    /// [`close_all`](Queue::close_all).
    pub fn close(&self) {
        self.closed_here
            .store(ProcessKey::current().to_word(), Ordering::Relaxed);
    }

    /// Whether this process closed this handle (or a clone) with
    /// [`close`](Queue::close).
    fn closed_here(&self) -> bool {
        ProcessKey::from_word(self.closed_here.load(Ordering::Relaxed))
            .is_some_and(ProcessKey::is_current)
    }

    /// The largest encoded item this queue holds.
    pub fn max_item_size(&self) -> usize {
        self.ring.max_item()
    }
}

/// What a push's outcome means to the caller, who gets the item back
/// unless it was added.
fn put_outcome<T>(
    item: T,
    pushed: Result<std::result::Result<(), PushFailure>>,
) -> std::result::Result<(), PutError<T>> {
    match pushed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(PushFailure::Full)) => Err(PutError::Full(item)),
        Ok(Err(PushFailure::Timeout)) => Err(PutError::Timeout(item)),
        Ok(Err(PushFailure::Closed)) => Err(PutError::Closed(item)),
        Err(e) => Err(PutError::Other(item, e)),
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.ring.len())
            .finish()
    }
}

/// A [`Queue`] whose consumers confirm each item with
/// [`task_done`](JoinableQueue::task_done), so that a producer can
/// [`join`](JoinableQueue::join) until all are processed (Python's
/// `multiprocessing.JoinableQueue`). Derefs to [`Queue`].
pub struct JoinableQueue<T>(Queue<T>);

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T> SharedObject for JoinableQueue<T> {
    type Args<'a>
        = QueueArgs
    where
        T: 'a;
    const KIND: ObjectKind = ObjectKind::JoinableQueue;

    fn elem() -> ElemType {
        ElemType::of::<T>()
    }

    fn len(&(_, bytes): &QueueArgs) -> Result<u64> {
        Ring::check(bytes)
    }

    fn layout(bytes: u64) -> Result<Layout> {
        Ring::layout(bytes)
    }

    unsafe fn init(at: NonNull<u8>, (maxsize, bytes): QueueArgs) -> Result<()> {
        // SAFETY: forwarded from the caller; `len` checked the size.
        unsafe { Ring::init(at, bytes as u64, maxsize as u64) }
    }

    unsafe fn from_region(region: Region, bytes: u64) -> std::result::Result<Self, String> {
        // SAFETY: forwarded from the caller.
        let mut queue = unsafe { Queue::<T>::from_region(region, bytes) }?;
        queue.ring.count_tasks();
        Ok(JoinableQueue(queue))
    }
}

shared_constructors! {
    impl[T: Serialize + DeserializeOwned] JoinableQueue<T> as "joinable queue" {
        args(maxsize: usize, bytes: usize) => (maxsize, bytes),
        made: " of at most `maxsize` items (0: no limit) in a ring of `bytes` bytes (64 bytes to 1 GiB)",
        errors: "[`Error::InvalidArgument`](crate::Error::InvalidArgument) for a ring under 64 bytes or over 1 GiB. ",
        kept: " An existing queue keeps its own ring size and item limit. Its items must be of the same type `T`.",
        anonymous: with_capacity,
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An anonymous joinable queue with a 1 MiB ring and no item limit.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        Self::with_capacity(0, DEFAULT_CAPACITY)
    }

    /// Marks one item got from the queue as processed.
    ///
    /// # Errors
    /// [`Error::TooManyTaskDone`] if called more times than items were put.
    pub fn task_done(&self) -> Result<()> {
        self.0.ring.task_done()
    }

    /// Waits until every item put has been marked done: it returns once
    /// no task is unfinished, or once the last one was marked done after it
    /// began, even if another item was put at once (as Python's, which the
    /// last `task_done` notifies).
    ///
    /// # Errors
    /// Only if the queue's lock fails.
    pub fn join(&self) -> Result<()> {
        self.0.ring.join(Deadline::Never)
    }

    /// As [`join`](JoinableQueue::join), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.0.ring.join(Deadline::after(timeout))
    }

    /// As [`join`](JoinableQueue::join), without blocking the thread.
    ///
    /// # Errors
    /// As for [`join`](JoinableQueue::join), and if this process's waiter
    /// thread cannot be started.
    pub async fn join_async(&self) -> Result<()> {
        self.0.ring.join_async(Deadline::Never).await
    }

    /// As [`join_timeout`](JoinableQueue::join_timeout), without blocking
    /// the thread.
    ///
    /// # Errors
    /// As for [`join_timeout`](JoinableQueue::join_timeout) and
    /// [`join_async`](JoinableQueue::join_async).
    pub async fn join_timeout_async(&self, timeout: Duration) -> Result<()> {
        self.0.ring.join_async(Deadline::after(timeout)).await
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.0).finish()
    }
}

/// The plain queue of Python's `multiprocessing.SimpleQueue`: `put`, `get`,
/// `is_empty`, `close` (and `close_all`), with a 1 MiB ring and no item limit.
pub struct SimpleQueue<T>(Queue<T>);

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue(self.0.clone())
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new anonymous simple queue.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        Queue::<T>::new().map(Self)
    }

    /// Adds `item`, waiting for room.
    ///
    /// # Errors
    /// As for [`Queue::put`].
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.0.put(item)
    }

    /// Removes and returns the oldest item, waiting for one.
    ///
    /// # Errors
    /// As for [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.0.get()
    }

    /// As [`Queue::put_async`].
    ///
    /// # Errors
    /// As for [`Queue::put_async`].
    pub async fn put_async(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.0.put_async(item).await
    }

    /// As [`Queue::get_async`].
    ///
    /// # Errors
    /// As for [`Queue::get_async`].
    pub async fn get_async(&self) -> Result<T> {
        self.0.get_async().await
    }

    /// Whether the queue is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Python's `close()`: this handle and its clones put nothing more in
    /// this process, as [`Queue::close`].
    pub fn close(&self) {
        self.0.close()
    }

    /// Closes the queue for every process, as [`Queue::close_all`].
    ///
    /// # Errors
    /// As for [`Queue::close_all`].
    pub fn close_all(&self) -> Result<()> {
        self.0.close_all()
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.0).finish()
    }
}
