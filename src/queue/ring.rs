//! The shared part of a queue: a ring of length-prefixed frames with a
//! robust mutex for the producers and another for the consumers, and futex
//! words to sleep on. Items are bytes here; the typed queues encode and
//! decode them outside the locks.
//!
//! Each end of the ring is one 64-bit word that packs a byte offset and an
//! item count, so that a frame is published (or consumed) by one atomic
//! store: the number of items and the bytes they take can never disagree,
//! and a process killed at any point leaves either the whole frame or
//! nothing. With one lock per end, a producer and a consumer never wait for
//! each other: they only read the word the other one moves.

use std::alloc::Layout;
use std::ops::ControlFlow;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, RecoverableLockError, Result};
use crate::segment::Region;
use crate::sync::{spin, wait_for_change, Asleep, RobustMutex, RECHECK};
use crate::sys::{self, Deadline, MutexKind};
use crate::waiter::{self, ProcessKey};

use super::{keep_spare, take_spare};

/// The length prefix of a frame.
const LEN: usize = 4;
/// Attempts to take a lock before blocking on it.
const LOCK_SPIN: u32 = 1000;
/// Attempts at a contended lock by a caller with a deadline before it
/// waits for it until that deadline (or, for a `try_` call, gives up).
const LOCK_TRIES: u32 = 4;
/// The bits of an end's word that hold the byte offset; the rest count items.
const OFFSET_BITS: u32 = 36;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Items are counted modulo 2^28: a ring holds at most `capacity / LEN`.
const COUNT_MASK: u64 = (1 << (64 - OFFSET_BITS)) - 1;
/// The largest ring.
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;
/// Most frames a ring holds at once, whatever its free bytes: the count of
/// items between the ends is kept modulo `COUNT_MASK + 1`, so a ring that
/// held that many (a 1 GiB ring of empty frames: 2^30 / 4 = 2^28) would
/// count 0 items in its bytes and fail the consistency check. A put that
/// would reach it waits as for a full ring.
const MAX_ITEMS: u64 = COUNT_MASK;
// The limit costs at most one frame of the largest ring, and offsets fit.
const _: () = assert!(MAX_CAPACITY / LEN as u64 <= MAX_ITEMS + 1);
const _: () = assert!(MAX_ITEMS <= COUNT_MASK);
const _: () = assert!(2 * MAX_CAPACITY <= OFFSET_MASK + 1);
/// Attempts at reading both ends at one instant (see [`Ring::snapshot`]).
const SNAPSHOT_TRIES: u32 = 64;
/// Times a waiter gives its CPU away (`sched_yield`) before it sleeps,
/// after its spin found nothing. A peer on the same CPU then runs for the
/// rest of its time slice (thousands of items) instead of being woken and
/// preempted item by item; one on another CPU loses nothing.
const YIELDS: u32 = 16;

thread_local! {
    /// Where a frame that straddles the ring's end is put together (or
    /// taken apart) for a caller who needs it in one piece.
    static STRADDLE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// The ring (its identity) of which this thread holds back items:
    /// encoded by a `put_many`, not yet published; 0 for none. With the
    /// process that holds them: a child forked meanwhile
    /// (by the batch's iterator) has a copy of the mark, but holds nothing
    /// back, nor does a descendant of it that gets the pid of the process
    /// that does, once that one has died.
    static HELD_BACK: std::cell::Cell<(Option<ProcessKey>, u64)> = const { std::cell::Cell::new((None, 0)) };
}

/// One end of the ring, on a cache line of its own: the word its side moves
/// and the futex word that side bumps after moving it.
#[repr(C, align(64))]
struct End {
    /// Byte offset (low 36 bits) and items that passed this end (the rest).
    at: AtomicU64,
    /// Bumped after every move; the other side sleeps on it.
    moved: AtomicU32,
    /// Processes of the other side asleep on `moved`. One that dies asleep
    /// leaves it too high, which costs extra wake-ups only.
    sleepers: AtomicU32,
    /// The other end as this side last read it (under this side's lock).
    /// The other end only moves forward, so this is a conservative view:
    /// less room for a producer, fewer items for a consumer. A side reads
    /// the other one's line only when this view says it must wait, so a
    /// producer and a consumer running apart do not pass the two lines
    /// back and forth on every item (it lies in what was padding: the
    /// layout is unchanged).
    cached: AtomicU64,
}

impl End {
    fn new() -> End {
        End {
            at: AtomicU64::new(0),
            moved: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            cached: AtomicU64::new(0),
        }
    }
}

/// The state after the two mutexes.
#[repr(C)]
struct RingState {
    /// Ring size in bytes (fixed at creation).
    capacity: u64,
    /// Most items at once, 0 for no limit (Python's `maxsize`).
    maxsize: u64,
    /// Items put but not yet marked done (`JoinableQueue`).
    unfinished: AtomicU64,
    closed: AtomicU32,
    /// Bumped when the last task is done; joiners sleep on it.
    done: AtomicU32,
    joiners: AtomicU32,
    /// Moved by producers (under the producer lock): getters sleep on it.
    tail: End,
    /// Moved by consumers (under the consumer lock): putters sleep on it.
    head: End,
}

/// Which lock, and which end of the ring it guards.
#[derive(Clone, Copy)]
enum Side {
    Producer,
    Consumer,
}

/// A process-local handle on a shared ring.
///
/// Everything read from shared memory may have been written by a broken or
/// hostile process, so the fixed sizes are copied here once validated, and
/// arithmetic on the moving ends never trusts them: a ring whose ends make
/// no sense is an [`Error::Corrupt`], never a panic.
#[derive(Clone)]
pub(crate) struct Ring {
    producers: RobustMutex,
    consumers: RobustMutex,
    state: Region,
    data: Region,
    capacity: u64,
    maxsize: u64,
    /// Offsets run modulo `span`, twice the capacity: the ring index of
    /// an offset is at most one subtraction away, never a division, and
    /// the bytes between two ends (at most the capacity) are told apart
    /// from their complement.
    span: u64,
    /// Whether puts count unfinished tasks (a `JoinableQueue`): a plain
    /// queue leaves that word, on the line the consumers read, alone.
    counts_tasks: bool,
    /// The ring's identity in this process, the same through every handle
    /// on it (see [`Ring::holding_back`]).
    id: u64,
}

/// Why a push did not happen.
pub(crate) enum PushFailure {
    Full,
    Timeout,
    Closed,
}

/// What is between the two ends.
struct Extent {
    bytes: u64,
    items: u64,
}

impl Ring {
    /// The memory of a ring of `capacity` bytes: the two mutexes on lines
    /// of their own, then the state and the data, which start at the
    /// offsets returned after the consumers' mutex.
    fn parts(capacity: u64) -> Result<(Layout, usize, usize, usize)> {
        let bad = || Error::InvalidArgument(format!("a {capacity}-byte queue"));
        let bytes = usize::try_from(capacity)
            .ok()
            .and_then(|n| Layout::array::<u8>(n).ok())
            .ok_or_else(bad)?;
        let lock = RobustMutex::layout()
            .align_to(64)
            .expect("64 is a power of two")
            .pad_to_align();
        let (l, consumers) = lock.extend(lock).expect("small");
        let (l, state) = l.extend(Layout::new::<RingState>()).expect("small");
        let (l, data) = l
            .extend(bytes.align_to(8).expect("8 is a power of two"))
            .map_err(|_| bad())?;
        Ok((l, consumers, state, data))
    }

    /// The memory of a ring of `capacity` bytes.
    pub(crate) fn layout(capacity: u64) -> Result<Layout> {
        Self::parts(capacity).map(|(l, ..)| l)
    }

    /// Checks a ring size asked for; the length a queue's header records.
    pub(crate) fn check(capacity: usize) -> Result<u64> {
        let capacity = capacity as u64;
        if !(64..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::InvalidArgument(format!(
                "a {capacity}-byte queue (64 bytes to 1 GiB)"
            )));
        }
        Ok(capacity)
    }

    /// Fills a new ring of `capacity` bytes (checked) and at most `maxsize`
    /// items.
    ///
    /// # Safety
    /// `at` points to fresh zeroed memory of `layout(capacity)`, not yet
    /// shared.
    pub(crate) unsafe fn init(at: NonNull<u8>, capacity: u64, maxsize: u64) -> Result<()> {
        let (_, consumers, state, _) = Self::parts(capacity)?;
        let at = at.as_ptr();
        // Per the caller, `at` is fresh zeroed memory laid out as
        // `parts(capacity)`, not yet shared.
        // SAFETY: the producers' mutex is at offset 0 of that memory.
        unsafe { RobustMutex::init(at, MutexKind::ErrorCheck)? };
        // SAFETY: `consumers` is an offset inside that memory.
        let consumers = unsafe { at.add(consumers) };
        // SAFETY: the consumers' mutex, in memory nothing else uses yet.
        unsafe { RobustMutex::init(consumers, MutexKind::ErrorCheck)? };
        // SAFETY: `state` is an offset inside that memory.
        let state = unsafe { at.add(state) }.cast::<RingState>();
        // SAFETY: `state` is aligned for `RingState` (its layout) and
        // writable, and holds nothing that needs dropping.
        unsafe {
            state.write(RingState {
                capacity,
                maxsize,
                unfinished: AtomicU64::new(0),
                closed: AtomicU32::new(0),
                done: AtomicU32::new(0),
                joiners: AtomicU32::new(0),
                tail: End::new(),
                head: End::new(),
            })
        };
        Ok(())
    }

    /// The handle on a ring of `len` bytes; `Err` says what is wrong with
    /// an opened one.
    ///
    /// # Safety
    /// `region` holds `layout(len)` bytes filled by [`init`](Ring::init),
    /// here or by the process that created them.
    pub(crate) unsafe fn from_region(
        region: Region,
        len: u64,
    ) -> std::result::Result<Ring, String> {
        // An opened segment is checked like a created one: a crafted
        // capacity must not turn into arithmetic on zero.
        if !(64..=MAX_CAPACITY).contains(&len) {
            return Err(format!("queue capacity {len}"));
        }
        let (_, consumers, state, data) = Self::parts(len).map_err(|e| e.to_string())?;
        // Per the caller, `region` holds `layout(len)` bytes: a queue whose
        // two mutexes the creator initialised first.
        // SAFETY: the producers' mutex is at the region's start.
        let producers = unsafe { RobustMutex::from_region(region.clone()) };
        // SAFETY: `consumers` is an offset inside the region's `layout(len)`.
        let consumers = unsafe { region.sub(consumers) };
        // SAFETY: the consumers' mutex starts there.
        let consumers = unsafe { RobustMutex::from_region(consumers) };
        // SAFETY: `state` is an offset inside the region's `layout(len)`.
        let state = unsafe { region.sub(state) };
        // SAFETY: as is `data`.
        let data = unsafe { region.sub(data) };
        let mut ring = Ring {
            producers,
            consumers,
            id: identity(&state),
            state,
            data,
            capacity: len,
            maxsize: 0,
            span: 2 * len,
            counts_tasks: false,
        };
        ring.maxsize = ring.shared().maxsize;
        if ring.shared().capacity != len {
            return Err(format!(
                "queue capacity {} (header {len})",
                ring.shared().capacity
            ));
        }
        Ok(ring)
    }

    fn shared(&self) -> &RingState {
        // SAFETY: the region holds an initialised RingState while `self`
        // lives; every field is atomic or never changes after creation.
        unsafe { &*self.state.as_ptr::<RingState>() }
    }

    fn end(&self, side: Side) -> &End {
        match side {
            Side::Producer => &self.shared().tail,
            Side::Consumer => &self.shared().head,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Makes puts through this handle (and its clones) count unfinished
    /// tasks, for [`task_done`](Ring::task_done) and [`join`](Ring::join).
    pub(crate) fn count_tasks(&mut self) {
        self.counts_tasks = true;
    }

    /// The index in the ring of byte offset `at`, below the capacity
    /// whatever `at` is. Offsets are below `span` and a frame or a batch
    /// starts at most a capacity past one, so a subtraction or two do on
    /// every healthy path; the division only guards corrupt input.
    #[inline]
    fn index(&self, at: u64) -> usize {
        let cap = self.capacity;
        let mut i = at;
        if i >= cap {
            i -= cap;
        }
        if i >= cap {
            i -= cap;
        }
        if i >= cap {
            i %= cap;
        }
        i as usize
    }

    #[cold]
    #[inline(never)]
    fn corrupt_ends(&self, head: u64, tail: u64) -> Error {
        self.corrupt(format!("queue ends {head:#x} and {tail:#x}"))
    }

    #[cold]
    #[inline(never)]
    fn corrupt_frame(&self, len: u64, at: u64, used: u64) -> Error {
        self.corrupt(format!(
            "queue frame of {len} bytes at {at} overruns the {used} bytes in use"
        ))
    }

    #[cold]
    fn corrupt(&self, what: String) -> Error {
        Error::Corrupt {
            name: String::new(),
            what,
        }
    }

    /// What lies between `head` and `tail`, or `Corrupt` if they make no sense.
    #[inline]
    fn extent(&self, head: u64, tail: u64) -> Result<Extent> {
        let (h, t) = (head & OFFSET_MASK, tail & OFFSET_MASK);
        // Wrapping: offsets at or past `span` (corrupt memory) must not
        // overflow; the check below refuses them.
        let bytes = if t >= h {
            t - h
        } else {
            t.wrapping_add(self.span).wrapping_sub(h)
        };
        let items = ((tail >> OFFSET_BITS).wrapping_sub(head >> OFFSET_BITS)) & COUNT_MASK;
        let sane = h < self.span
            && t < self.span
            && bytes <= self.capacity
            && items <= bytes / LEN as u64
            && (items == 0) == (bytes == 0);
        if sane {
            Ok(Extent { bytes, items })
        } else {
            Err(self.corrupt_ends(head, tail))
        }
    }

    /// An end (offset below `span`) moved past `frames` frames of `bytes`
    /// bytes in all (at most the capacity).
    #[inline]
    fn advance(&self, end: u64, bytes: u64, frames: u64) -> u64 {
        let mut offset = (end & OFFSET_MASK) + bytes;
        if offset >= self.span {
            offset -= self.span;
        }
        if offset >= self.span {
            // Only for ends that were not checked; keeps them in range.
            offset %= self.span;
        }
        let items = ((end >> OFFSET_BITS) + frames) & COUNT_MASK;
        offset | (items << OFFSET_BITS)
    }

    /// What lies between `head` and `tail`, both read while one side's
    /// lock is held, the other side's end fresh: that side's end stands
    /// still, and the other side only ever moves its own end within what
    /// it read of this one, so any value of the other end read now is
    /// consistent with it. A check that fails here means the memory really
    /// is corrupt.
    #[inline]
    fn locked_extent(&self, _held: &Held<'_>, head: u64, tail: u64) -> Result<Extent> {
        self.extent(head, tail)
    }

    /// What lies between the ends at one instant, for a caller that takes
    /// no lock (`len`, `is_full`, which must not block nor trust a lock in
    /// memory that may be corrupt); `None` if the ring looks corrupt.
    ///
    /// Two loads are two moments: a reader descheduled between them can
    /// see a head from before many gets and a tail from after many puts,
    /// ends further apart than the ring is long. So the head is read again
    /// after the tail: if it did not move, both values held at the moment
    /// the tail was read, and they pass the check unless the memory is
    /// corrupt. A read that moved is tried again; one that keeps failing
    /// the check means corruption to these callers, which report no error.
    fn snapshot(&self) -> Option<Extent> {
        let s = self.shared();
        (0..SNAPSHOT_TRIES).find_map(|_| {
            let head = s.head.at.load(Ordering::Acquire);
            let tail = s.tail.at.load(Ordering::Acquire);
            let stable = s.head.at.load(Ordering::Acquire) == head;
            stable.then(|| self.extent(head, tail).ok()).flatten()
        })
    }

    /// The largest item the ring can ever hold.
    pub(crate) fn max_item(&self) -> usize {
        self.capacity() - LEN
    }

    /// Takes one side's lock, waiting for it until `deadline`; `None` once
    /// that has passed (the caller reports it as it reports a wait for an
    /// item or for room that ran out). A process that died holding it left
    /// nothing to repair (its end moves only over a whole frame, in one
    /// store).
    ///
    /// Another caller may hold the lock for long: a consumer's
    /// [`pop_with`](Ring::pop_with) closure, a producer's
    /// [`push_with`](Ring::push_with) one. A `try_` caller therefore only
    /// tries (a few times, for the common case of a holder that is done
    /// within nanoseconds), and a timed one waits no longer than its
    /// deadline.
    #[inline]
    fn lock(&self, side: Side, deadline: Deadline) -> Result<Option<Held<'_>>> {
        let lock = match side {
            Side::Producer => &self.producers,
            Side::Consumer => &self.consumers,
        };
        let acquired = match deadline {
            // glibc's robust mutex never spins: a contended lock is a futex
            // sleep. It is mostly held for a few nanoseconds, so waiting
            // briefly for it to look free avoids most of those calls.
            Deadline::Never => lock.acquire_spinning(LOCK_SPIN, || ()),
            _ => {
                let mut tries = 0;
                loop {
                    match lock.acquire(Deadline::Now, || ()) {
                        Err(RecoverableLockError::WouldBlock | RecoverableLockError::Timeout)
                            if tries < LOCK_TRIES =>
                        {
                            tries += 1;
                            for _ in 0..LOCK_SPIN {
                                std::hint::spin_loop();
                            }
                        }
                        Err(RecoverableLockError::WouldBlock | RecoverableLockError::Timeout)
                            if deadline.may_wait() =>
                        {
                            break lock.acquire(deadline, || ());
                        }
                        done => break done,
                    }
                }
            }
        };
        // The locks are error-checking, so a thread holds one once; but
        // their kind lies in shared memory, and a scribbled one (a crafted
        // file, a broken peer) may nest: a closure run with the lock held
        // would be lent the same bytes of the ring again.
        let taken = matches!(acquired, Ok(()) | Err(RecoverableLockError::OwnerDied(())));
        if taken && !lock.held_once() {
            let _ = lock.unlock();
            return Err(Error::Deadlock);
        }
        match acquired {
            Ok(()) => Ok(Some(Held::new(lock))),
            Err(RecoverableLockError::OwnerDied(())) => {
                let held = Held::new(lock);
                lock.make_consistent()?;
                // It may have died between moving its end and saying so.
                self.signal(side);
                Ok(Some(held))
            }
            Err(RecoverableLockError::WouldBlock | RecoverableLockError::Timeout) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds one frame, waiting for room until `deadline`.
    pub(crate) fn push(
        &self,
        item: &[u8],
        deadline: Deadline,
    ) -> Result<std::result::Result<(), PushFailure>> {
        self.push_with(item.len(), deadline, |buf| buf.copy_from_slice(item))
    }

    /// Adds one frame of `len` bytes (at most [`max_item`](Ring::max_item)),
    /// written by `fill` in place, waiting for room until `deadline`.
    /// `fill` runs with the producers' lock held, on the frame's bytes in
    /// the ring (or on a buffer copied in afterwards if the frame straddles
    /// the ring's end); the frame is published only after it returns, so a
    /// producer killed or a `fill` that panics leaves nothing behind.
    pub(crate) fn push_with(
        &self,
        len: usize,
        deadline: Deadline,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<std::result::Result<(), PushFailure>> {
        let need = (LEN + len) as u64;
        let s = self.shared();
        let mut fill = Some(fill);
        loop {
            let held = match self.lock_to_push(deadline)? {
                Ok(held) => held,
                Err(failure) => return Ok(Err(failure)),
            };
            let tail = s.tail.at.load(Ordering::Acquire);
            let room = |extent: &Extent| {
                self.capacity - extent.bytes >= need
                    && extent.items < MAX_ITEMS
                    && (self.maxsize == 0 || extent.items < self.maxsize)
            };
            // The head as last seen first; the consumers' line only if that
            // view is short of room.
            let cached = s.tail.cached.load(Ordering::Relaxed);
            let mut head = cached;
            let fits = match self.extent(cached, tail) {
                Ok(e) if room(&e) => true,
                _ => {
                    head = s.head.at.load(Ordering::Acquire);
                    s.tail.cached.store(head, Ordering::Relaxed);
                    room(&self.locked_extent(&held, head, tail)?)
                }
            };
            if fits {
                let at = tail & OFFSET_MASK;
                // SAFETY: the producers' lock is held and `need` bytes
                // from the tail are free (`fits`): the first `LEN` for the
                // length...
                unsafe { self.write_len(at, len as u32) };
                let fill = fill.take().expect("filled once: the loop returns after");
                // SAFETY: ...and the `need - LEN = len` after them for the
                // payload, which no consumer reads before the tail moves.
                unsafe { self.fill_in(at + LEN as u64, len, fill) };
                held.still_ours()?;
                // Counted before it can be got (as Python's put does), so
                // a consumer's `task_done` for it is never refused; the
                // release store below publishes the count with the frame.
                // A producer killed between the two leaves one unfinished
                // task that no item will ever complete, as in Python.
                if self.counts_tasks {
                    s.unfinished.fetch_add(1, Ordering::Relaxed);
                }
                // Publish only now, in one store: the frame is complete.
                s.tail
                    .at
                    .store(self.advance(tail, need, 1), Ordering::Release);
                drop(held);
                self.signal(Side::Producer);
                return Ok(Ok(()));
            }
            drop(held);
            if let Err(failure) = self.wait_for_room(head, deadline)? {
                return Ok(Err(failure));
            }
        }
    }

    /// The producers' lock, for a push: `Full` (or `Timeout` if
    /// `deadline` allowed a wait) if it could not be had in time, `Closed`
    /// if the queue is closed.
    #[inline]
    fn lock_to_push(
        &self,
        deadline: Deadline,
    ) -> Result<std::result::Result<Held<'_>, PushFailure>> {
        let Some(held) = self.lock(Side::Producer, deadline)? else {
            return Ok(Err(if deadline.may_wait() {
                PushFailure::Timeout
            } else {
                PushFailure::Full
            }));
        };
        if self.shared().closed.load(Ordering::Acquire) != 0 {
            return Ok(Err(PushFailure::Closed));
        }
        Ok(Ok(held))
    }

    /// After a push found no room with the head at `head` (and let go of
    /// the producers' lock): waits until a get may have made some, `Ok`
    /// to look again; `Full` if `deadline` allows no wait, `Timeout` once
    /// it has passed.
    fn wait_for_room(
        &self,
        head: u64,
        deadline: Deadline,
    ) -> Result<std::result::Result<(), PushFailure>> {
        let s = self.shared();
        // The lock was let go of without a frame published: an async put
        // that found it held sleeps on the tail's word (see `push_async`).
        if s.tail.sleepers.load(Ordering::SeqCst) > 0 {
            self.signal(Side::Producer);
        }
        if !deadline.may_wait() {
            return Ok(Err(PushFailure::Full));
        }
        // Before looking again: a get after this read changes it, and one
        // before it moved the head, which the look below sees.
        let seen = s.head.moved.load(Ordering::SeqCst);
        if s.head.at.load(Ordering::Acquire) != head {
            return Ok(Ok(()));
        }
        self.not_held_here(Side::Consumer)?;
        Ok(if self.sleep(Side::Consumer, seen, deadline) {
            Ok(())
        } else {
            Err(PushFailure::Timeout)
        })
    }

    /// Takes one frame into `out` (replacing its content), waiting for one
    /// until `deadline`.
    pub(crate) fn pop(&self, out: &mut Vec<u8>, deadline: Deadline) -> Result<()> {
        self.pop_with(deadline, |bytes| {
            out.clear();
            out.extend_from_slice(bytes);
        })
    }

    /// Takes one frame, waiting for one until `deadline`, and returns what
    /// `read` makes of its bytes. `read` runs with the consumers' lock held,
    /// on the frame in the ring (or on a copy if it straddles the ring's
    /// end); the frame is consumed only after `read` returns, so a consumer
    /// killed meanwhile, or a `read` that panics, leaves it whole for the
    /// next one. Producers never wait for `read`: they write only past the
    /// tail, and the frame's bytes stay in use until it returns.
    pub(crate) fn pop_with<R>(
        &self,
        deadline: Deadline,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let s = self.shared();
        let mut read = Some(read);
        loop {
            let held = self.lock_to_pop(deadline)?;
            let head = s.head.at.load(Ordering::Acquire);
            let (extent, closed) = self.items_from(&held, head, |e| e.items > 0)?;
            if extent.items > 0 {
                let at = head & OFFSET_MASK;
                // SAFETY: the consumers' lock is held; `extent.bytes` bytes
                // from the head are in use, at least one frame's length.
                let len = unsafe { self.frame_len(at, extent.bytes)? };
                let read = read.take().expect("read once: the loop returns after");
                // SAFETY: as above; `frame_len` checked the payload lies in
                // the bytes in use.
                let r = unsafe { self.read_out(at + LEN as u64, len, read) };
                held.still_ours()?;
                s.head
                    .at
                    .store(self.advance(head, (LEN + len) as u64, 1), Ordering::Release);
                drop(held);
                self.signal(Side::Consumer);
                return Ok(r);
            }
            drop(held);
            self.wait_for_items(closed, deadline)?;
        }
    }

    /// The consumers' lock, for a get: `Empty` (or `Timeout` if
    /// `deadline` allowed a wait) if it could not be had in time.
    #[inline]
    fn lock_to_pop(&self, deadline: Deadline) -> Result<Held<'_>> {
        self.lock(Side::Consumer, deadline)?
            .ok_or(if deadline.may_wait() {
                Error::Timeout
            } else {
                Error::Empty
            })
    }

    /// The frames from `head` (under the consumers' lock): the tail as
    /// last seen if that view is `enough`, else the producers' line, read
    /// then; and whether the queue was closed (known only when the line
    /// was read).
    #[inline]
    fn items_from(
        &self,
        held: &Held<'_>,
        head: u64,
        enough: impl Fn(&Extent) -> bool,
    ) -> Result<(Extent, bool)> {
        let s = self.shared();
        match self.extent(head, s.head.cached.load(Ordering::Relaxed)) {
            Ok(e) if enough(&e) => Ok((e, false)),
            _ => {
                // `closed` before the tail: a close is stored (under the
                // producers' lock) after every put it follows has
                // published its tail, so a close seen here comes with a
                // tail that holds their items. Read the other way round,
                // a put and a close landing between the two reads would
                // give `Closed` with an item left.
                let closed = s.closed.load(Ordering::Acquire) != 0;
                let tail = s.tail.at.load(Ordering::Acquire);
                s.head.cached.store(tail, Ordering::Relaxed);
                Ok((self.locked_extent(held, head, tail)?, closed))
            }
        }
    }

    /// After a get found no item (and let go of the consumers' lock):
    /// `Closed` if the queue was, `Empty` if `deadline` allows no wait;
    /// else waits until a put may have added one (`Ok`: look again), or
    /// `Timeout`.
    fn wait_for_items(&self, closed: bool, deadline: Deadline) -> Result<()> {
        if closed {
            return Err(Error::Closed);
        }
        if !deadline.may_wait() {
            return Err(Error::Empty);
        }
        self.not_held_here(Side::Producer)?;
        if self.idle_until_added(deadline) {
            return Err(Error::Timeout);
        }
        Ok(())
    }

    /// Adds the longest run of whole frames from the start of `frames`
    /// that fits now, waiting until `deadline` for room for the first;
    /// returns how many frames and bytes it added. `frames` holds `count`
    /// frames laid out as in the ring (a little-endian `u32` length, then
    /// that many bytes), each at most [`max_item`](Ring::max_item) long. The
    /// run is published by one store of the tail: a producer killed at any
    /// point leaves all of it or none, and never part of a frame.
    pub(crate) fn push_frames(
        &self,
        frames: &[u8],
        count: usize,
        deadline: Deadline,
    ) -> Result<std::result::Result<(usize, usize), PushFailure>> {
        let s = self.shared();
        if frame_at(frames, 0).is_none() {
            return Ok(Ok((0, 0)));
        }
        loop {
            let held = match self.lock_to_push(deadline)? {
                Ok(held) => held,
                Err(failure) => return Ok(Err(failure)),
            };
            let tail = s.tail.at.load(Ordering::Acquire);
            // Frames and bytes free for a run, under every limit.
            let free = |e: &Extent| {
                let mut items = MAX_ITEMS - e.items.min(MAX_ITEMS);
                if self.maxsize != 0 {
                    items = items.min(self.maxsize - e.items.min(self.maxsize));
                }
                (self.capacity - e.bytes, items)
            };
            // The head as last seen if it leaves room for the whole run;
            // the consumers' line otherwise (so a run that does not fit
            // was measured against the head as it is).
            let cached = s.tail.cached.load(Ordering::Relaxed);
            let mut head = cached;
            let extent = match self.extent(cached, tail) {
                Ok(e)
                    if {
                        let (bytes, items) = free(&e);
                        bytes >= frames.len() as u64 && items >= count as u64
                    } =>
                {
                    e
                }
                _ => {
                    head = s.head.at.load(Ordering::Acquire);
                    s.tail.cached.store(head, Ordering::Relaxed);
                    self.locked_extent(&held, head, tail)?
                }
            };
            let (room, slots) = free(&extent);
            let (mut bytes, mut n) = (0usize, 0u64);
            while n < slots {
                match frame_at(frames, bytes) {
                    Some(size) if (bytes + size) as u64 <= room => {
                        bytes += size;
                        n += 1;
                    }
                    _ => break,
                }
            }
            if n > 0 {
                // SAFETY: the producers' lock is held and the `bytes`
                // bytes from the tail are free: `bytes <= room`.
                unsafe { self.copy_in(tail & OFFSET_MASK, &frames[..bytes]) };
                if self.counts_tasks {
                    s.unfinished.fetch_add(n, Ordering::Relaxed);
                }
                // Publish the run in one store, once it is all written.
                s.tail
                    .at
                    .store(self.advance(tail, bytes as u64, n), Ordering::Release);
                drop(held);
                self.signal(Side::Producer);
                return Ok(Ok((n as usize, bytes)));
            }
            drop(held);
            if let Err(failure) = self.wait_for_room(head, deadline)? {
                return Ok(Err(failure));
            }
        }
    }

    /// Takes frames in one hold of the consumers' lock, waiting until
    /// `deadline` for the first: shows each to `read` in order (in place,
    /// or a copy if it straddles the ring's end), at most `max_frames`,
    /// and no more once `max_bytes` have been taken; returns how many it
    /// took. They are consumed together, by one store of the head after
    /// the last `read`: a consumer killed (or a `read` that panics) before
    /// that leaves every one of them in the ring, whole.
    pub(crate) fn pop_many(
        &self,
        deadline: Deadline,
        max_frames: usize,
        max_bytes: usize,
        mut read: impl FnMut(&[u8]) -> Take,
    ) -> Result<usize> {
        let s = self.shared();
        loop {
            let held = self.lock_to_pop(deadline)?;
            let head = s.head.at.load(Ordering::Acquire);
            // The view is enough if it holds all that may be taken.
            let (extent, closed) = self.items_from(&held, head, |e| {
                e.items as usize >= max_frames || e.bytes as usize >= max_bytes
            })?;
            if extent.items > 0 {
                let (mut taken, mut n) = (0u64, 0u64);
                while n < extent.items && (n as usize) < max_frames && (taken as usize) < max_bytes
                {
                    let at = (head & OFFSET_MASK) + taken;
                    // SAFETY: the consumers' lock is held; the
                    // `extent.bytes - taken` bytes from `at` are in use and
                    // hold `extent.items - n >= 1` frames.
                    let len = match unsafe { self.frame_len(at, extent.bytes - taken) } {
                        Ok(len) => len,
                        Err(e) if n == 0 => return Err(e),
                        // Take the frames before; the next call reports it.
                        Err(_) => break,
                    };
                    // SAFETY: as above; `frame_len` checked the payload
                    // lies in the bytes in use.
                    let take = unsafe { self.read_out(at + LEN as u64, len, &mut read) };
                    if let Take::Leave = take {
                        break;
                    }
                    taken += (LEN + len) as u64;
                    n += 1;
                    if let Take::Last = take {
                        break;
                    }
                }
                held.still_ours()?;
                if n > 0 {
                    s.head
                        .at
                        .store(self.advance(head, taken, n), Ordering::Release);
                    drop(held);
                    self.signal(Side::Consumer);
                }
                return Ok(n as usize);
            }
            drop(held);
            self.wait_for_items(closed, deadline)?;
        }
    }

    /// `Deadlock` if the calling thread, about to wait for `side` to move
    /// its end, is what that waits for: it holds `side`'s lock, or (for
    /// an item) holds items back. That is a `Deserialize` (or a `get_with`
    /// closure), run under the consumers' lock, putting on its own full
    /// queue; a `put_with` closure getting from its own empty one; a
    /// `put_many` iterator getting from its own queue before the items
    /// it gave are published.
    fn not_held_here(&self, side: Side) -> Result<()> {
        let lock = match side {
            Side::Producer => &self.producers,
            Side::Consumer => &self.consumers,
        };
        let holds_items = matches!(side, Side::Producer) && {
            let (process, id) = HELD_BACK.get();
            id == self.id && process.is_some_and(ProcessKey::is_current)
        };
        match lock.owner() {
            _ if holds_items => Err(Error::Deadlock),
            Some(tid) if tid == sys::gettid() => Err(Error::Deadlock),
            _ => Ok(()),
        }
    }

    /// Says, until the guard is dropped, that the calling thread holds back
    /// items of this ring: a get that would wait for an item then fails
    /// with `Deadlock` instead of waiting for this thread.
    pub(crate) fn holding_back(&self) -> HoldingBack {
        HoldingBack(HELD_BACK.replace((Some(ProcessKey::current()), self.id)))
    }

    /// While the queue looks empty (and open), waits for an item without
    /// taking a lock; true if `deadline` passed.
    fn idle_until_added(&self, deadline: Deadline) -> bool {
        let s = self.shared();
        loop {
            // The word first: an item added after this read changes it.
            let seen = s.tail.moved.load(Ordering::SeqCst);
            // The head first: it never passes the tail, so if the tail read
            // after it is the same word, the ring was empty at that moment.
            // Ends that differ are checked under the lock, never here: read
            // at two moments, they prove nothing about the memory.
            let head = s.head.at.load(Ordering::Acquire);
            let tail = s.tail.at.load(Ordering::Acquire);
            if head != tail || s.closed.load(Ordering::Acquire) != 0 {
                return false;
            }
            if !self.sleep(Side::Producer, seen, deadline) {
                return true;
            }
        }
    }

    /// Announces that `side` moved its end: a system call only if someone
    /// of the other side sleeps.
    #[inline]
    fn signal(&self, side: Side) {
        let end = self.end(side);
        end.moved.fetch_add(1, Ordering::SeqCst);
        if end.sleepers.load(Ordering::SeqCst) > 0 {
            sys::futex_wake(&end.moved, u32::MAX);
        }
    }

    /// Waits until `side` moves its end again (its word leaves `seen`), or
    /// a while has passed (then the caller looks again); false once
    /// `deadline` has passed.
    ///
    /// A bounded spin first (a peer running on another CPU answers within
    /// it), then a few `sched_yield`s (a peer on this CPU runs meanwhile,
    /// for a whole time slice of items, and is not preempted by a woken
    /// waiter after each one), then a futex sleep.
    fn sleep(&self, side: Side, seen: u32, deadline: Deadline) -> bool {
        let end = self.end(side);
        if spin(&end.moved, |v| v != seen).is_ok() {
            return true;
        }
        for _ in 0..YIELDS {
            std::thread::yield_now();
            if end.moved.load(Ordering::Acquire) != seen {
                return true;
            }
            if deadline.passed() {
                return false;
            }
        }
        wait_for_change(&end.moved, seen, &end.sleepers, deadline.capped(RECHECK))
            || !deadline.passed()
    }

    /// Items in the queue (a snapshot; 0 if the ring is corrupt).
    pub(crate) fn len(&self) -> usize {
        self.snapshot().map_or(0, |e| e.items as usize)
    }

    /// Whether even an item of `smallest` bytes (the smallest the queue's
    /// item type encodes to) would have to wait: the test a put makes.
    pub(crate) fn is_full(&self, smallest: usize) -> bool {
        match self.snapshot() {
            Some(e) => {
                self.capacity - e.bytes < (LEN + smallest) as u64
                    || e.items >= MAX_ITEMS
                    || (self.maxsize != 0 && e.items >= self.maxsize)
            }
            // A corrupt ring counts as full: nothing more can be put in it.
            None => true,
        }
    }

    /// Refuses further puts and wakes every waiter; remaining items can still be got.
    pub(crate) fn close(&self) -> Result<()> {
        // Under the producers' lock: no put is half-way when it returns.
        let held = self
            .lock(Side::Producer, Deadline::Never)?
            .ok_or(Error::Timeout)?;
        self.shared().closed.store(1, Ordering::Release);
        drop(held);
        self.signal(Side::Producer);
        self.signal(Side::Consumer);
        Ok(())
    }

    /// Marks one item processed (`JoinableQueue::task_done`).
    pub(crate) fn task_done(&self) -> Result<()> {
        let s = self.shared();
        match s
            .unfinished
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        {
            Err(_) => Err(Error::TooManyTaskDone),
            Ok(1) => {
                s.done.fetch_add(1, Ordering::SeqCst);
                if s.joiners.load(Ordering::SeqCst) > 0 {
                    sys::futex_wake(&s.done, u32::MAX);
                }
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// Waits until every item put has been marked done: until no task is
    /// unfinished, or the last one was done since the wait began (as in
    /// Python, whose last `task_done` notifies the joiners, which return
    /// even if another item was put meanwhile).
    pub(crate) fn join(&self, deadline: Deadline) -> Result<()> {
        let s = self.shared();
        let start = s.done.load(Ordering::SeqCst);
        loop {
            if s.unfinished.load(Ordering::Acquire) == 0 || s.done.load(Ordering::SeqCst) != start {
                return Ok(());
            }
            if deadline.passed() {
                return Err(Error::Timeout);
            }
            wait_for_change(&s.done, start, &s.joiners, deadline.capped(RECHECK));
        }
    }

    /// As [`pop`](Ring::pop) with a deadline, without blocking the thread:
    /// the same try, sleeping (through the waiter thread) on the same word
    /// a blocking getter sleeps on. A future dropped before it finishes has
    /// taken nothing: an item is taken only in the poll that returns it.
    pub(crate) async fn pop_async(&self, out: &mut Vec<u8>, deadline: Deadline) -> Result<()> {
        // An item there already: no sleeper to announce (a counted sleeper
        // costs every put a wake-up call).
        match self.pop(out, Deadline::Now) {
            Err(Error::Empty) => {}
            done => return done,
        }
        let s = self.shared();
        let _asleep = Asleep::new(&s.tail.sleepers);
        loop {
            // Items there, yet none taken: another consumer holds the lock
            // (a blocking getter decodes under it). It moves the head when
            // it takes its item, so that is the word to sleep on then; a
            // put would never come to wake this task, which would wait for
            // its next look (`RECHECK`) every time it met the lock held.
            let busy = self.len() > 0;
            let end = if busy { &s.head } else { &s.tail };
            let _taking = busy.then(|| Asleep::new(&s.head.sleepers));
            // `waiter::word` looks again every `RECHECK`, as a blocking sleeper does.
            let popped = waiter::word(&end.moved, deadline, || {
                // Before looking: a move of that end after this read changes it.
                let seen = end.moved.load(Ordering::SeqCst);
                match self.pop(out, Deadline::Now) {
                    // The other word is the one to sleep on now.
                    Err(Error::Empty) if (self.len() > 0) != busy => ControlFlow::Break(None),
                    Err(Error::Empty) => ControlFlow::Continue(seen),
                    done => ControlFlow::Break(Some(done)),
                }
            })
            .await?;
            match popped {
                None => return Err(Error::Timeout),
                Some(Some(done)) => return done,
                Some(None) => {}
            }
        }
    }

    /// As [`push`](Ring::push) with a deadline, without blocking the
    /// thread; a future dropped before it finishes has added nothing.
    pub(crate) async fn push_async(
        &self,
        item: &[u8],
        deadline: Deadline,
    ) -> Result<std::result::Result<(), PushFailure>> {
        match self.push(item, Deadline::Now) {
            Ok(Err(PushFailure::Full)) => {}
            done => return done,
        }
        let s = self.shared();
        let _asleep = Asleep::new(&s.head.sleepers);
        let has_room = || !self.is_full(item.len());
        loop {
            // Room there, yet none taken: another producer holds the lock.
            // It moves the tail when it publishes its item (or says so if
            // it lets the lock go without one), so that is the word to
            // sleep on then: the head may not move for long (consumers
            // busy elsewhere), and this task would wait for its next look
            // (`RECHECK`) every time it met the lock held.
            let busy = has_room();
            let end = if busy { &s.tail } else { &s.head };
            let _putting = busy.then(|| Asleep::new(&s.tail.sleepers));
            let pushed = waiter::word(&end.moved, deadline, || {
                // Before trying: a move of that end after this read changes it.
                let seen = end.moved.load(Ordering::SeqCst);
                match self.push(item, Deadline::Now) {
                    // The other word is the one to sleep on now.
                    Ok(Err(PushFailure::Full)) if has_room() != busy => ControlFlow::Break(None),
                    Ok(Err(PushFailure::Full)) => ControlFlow::Continue(seen),
                    done => ControlFlow::Break(Some(done)),
                }
            })
            .await?;
            match pushed {
                None => return Ok(Err(PushFailure::Timeout)),
                Some(Some(done)) => return done,
                Some(None) => {}
            }
        }
    }

    /// As [`join`](Ring::join), without blocking the thread.
    pub(crate) async fn join_async(&self, deadline: Deadline) -> Result<()> {
        let s = self.shared();
        let start = s.done.load(Ordering::SeqCst);
        if s.unfinished.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let _asleep = Asleep::new(&s.joiners);
        let joined = waiter::word(&s.done, deadline, || {
            if s.unfinished.load(Ordering::Acquire) == 0 || s.done.load(Ordering::SeqCst) != start {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(start)
            }
        })
        .await?;
        joined.ok_or(Error::Timeout)
    }

    fn ring_ptr(&self) -> *mut u8 {
        self.data.as_ptr::<u8>()
    }

    /// Copies `bytes` into the ring at offset `at`, wrapping.
    ///
    /// # Safety
    /// The caller holds the producers' lock and has checked (under it) that
    /// the ring has `bytes.len()` free bytes from `at`: at most the ring's
    /// capacity, and bytes no consumer reads before the tail moves past them.
    unsafe fn copy_in(&self, at: u64, bytes: &[u8]) {
        let cap = self.capacity();
        let start = self.index(at);
        let first = bytes.len().min(cap - start);
        let (head, wrapped) = bytes.split_at(first);
        // SAFETY: `start + first <= cap`: inside the ring.
        let dst = unsafe { self.ring_ptr().add(start) };
        // SAFETY: the `first` bytes from `dst` are in the ring, free per the
        // caller (no consumer reads them meanwhile); `head` is local memory.
        unsafe { std::ptr::copy_nonoverlapping(head.as_ptr(), dst, first) };
        // SAFETY: `wrapped.len() <= cap` per the caller: the bytes from the
        // ring's start, free as above.
        unsafe { std::ptr::copy_nonoverlapping(wrapped.as_ptr(), self.ring_ptr(), wrapped.len()) };
    }

    /// Copies bytes out of the ring from offset `at`, wrapping.
    ///
    /// # Safety
    /// The caller holds the consumers' lock and has checked (under it) that
    /// `out.len()` bytes from `at` are in use: at most the ring's capacity,
    /// and bytes no producer overwrites before the head moves past them.
    unsafe fn copy_out(&self, at: u64, out: &mut [u8]) {
        let cap = self.capacity();
        let start = self.index(at);
        let first = out.len().min(cap - start);
        let (head, wrapped) = out.split_at_mut(first);
        // SAFETY: `start + first <= cap`: inside the ring.
        let src = unsafe { self.ring_ptr().add(start) };
        // SAFETY: the `first` bytes from `src` are in the ring, in use per
        // the caller (no producer writes them meanwhile); `head` is local.
        unsafe { std::ptr::copy_nonoverlapping(src, head.as_mut_ptr(), first) };
        // SAFETY: `wrapped.len() <= cap` per the caller: the bytes from the
        // ring's start, in use as above.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring_ptr(), wrapped.as_mut_ptr(), wrapped.len())
        };
    }

    /// Lets `fill` write the `len` bytes of the ring from offset `at`, in
    /// place when they do not straddle its end.
    ///
    /// # Safety
    /// As for [`copy_in`](Ring::copy_in), for `len` bytes from `at`.
    unsafe fn fill_in(&self, at: u64, len: usize, fill: impl FnOnce(&mut [u8])) {
        let cap = self.capacity();
        let start = self.index(at);
        if start + len <= cap {
            // SAFETY: `start + len <= cap`: inside the ring.
            let ptr = unsafe { self.ring_ptr().add(start) };
            // SAFETY: `len` bytes from `ptr` are in the ring; per the caller
            // no one else reads or writes them while the producers' lock is
            // held (they are past the tail), and the shared memory is
            // initialised (zeroed at creation).
            let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            fill(buf);
        } else {
            let mut buf = take_spare(&STRADDLE);
            buf.clear();
            buf.resize(len, 0);
            fill(&mut buf);
            // SAFETY: forwarded from the caller.
            unsafe { self.copy_in(at, &buf) };
            keep_spare(&STRADDLE, buf);
        }
    }

    /// What `read` makes of the `len` bytes of the ring from offset `at`,
    /// read in place when they do not straddle its end.
    ///
    /// # Safety
    /// As for [`copy_out`](Ring::copy_out), for `len` bytes from `at`.
    unsafe fn read_out<R>(&self, at: u64, len: usize, read: impl FnOnce(&[u8]) -> R) -> R {
        let cap = self.capacity();
        let start = self.index(at);
        if start + len <= cap {
            // SAFETY: `start + len <= cap`: inside the ring.
            let ptr = unsafe { self.ring_ptr().add(start) };
            // SAFETY: `len` bytes from `ptr` are in the ring; per the
            // caller no producer writes them before the head moves past
            // them, which happens after `read` returns.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
            read(bytes)
        } else {
            let mut buf = take_spare(&STRADDLE);
            buf.clear();
            buf.resize(len, 0);
            // SAFETY: forwarded from the caller.
            unsafe { self.copy_out(at, &mut buf) };
            let r = read(&buf);
            keep_spare(&STRADDLE, buf);
            r
        }
    }

    /// Writes a frame's length prefix at offset `at`.
    ///
    /// # Safety
    /// As for [`copy_in`](Ring::copy_in), for [`LEN`] bytes from `at`.
    unsafe fn write_len(&self, at: u64, len: u32) {
        let start = self.index(at);
        let bytes = len.to_le_bytes();
        if start + LEN <= self.capacity() {
            // SAFETY: `start + LEN <= cap`: inside the ring.
            let ptr = unsafe { self.ring_ptr().add(start) };
            // SAFETY: those `LEN` bytes are free per the caller; an
            // unaligned write of plain bytes.
            unsafe { ptr.cast::<[u8; LEN]>().write_unaligned(bytes) };
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { self.copy_in(at, &bytes) };
        }
    }

    /// The payload length of the frame at `at`, checked to lie within the
    /// `used` bytes that follow.
    ///
    /// # Safety
    /// As for [`copy_out`](Ring::copy_out), with `used` bytes from `at`
    /// in use, at least [`LEN`].
    #[inline]
    unsafe fn frame_len(&self, at: u64, used: u64) -> Result<usize> {
        let start = self.index(at);
        let len = if start + LEN <= self.capacity() {
            // SAFETY: `start + LEN <= cap`: inside the ring.
            let ptr = unsafe { self.ring_ptr().add(start) };
            // SAFETY: those `LEN` bytes are in use per the caller; an
            // unaligned read of plain bytes.
            unsafe { ptr.cast::<[u8; LEN]>().read_unaligned() }
        } else {
            let mut len = [0u8; LEN];
            // SAFETY: the first `LEN <= used` bytes, per the caller.
            unsafe { self.copy_out(at, &mut len) };
            len
        };
        let len = u32::from_le_bytes(len) as u64;
        if used < LEN as u64 + len {
            return Err(self.corrupt_frame(len, at, used));
        }
        Ok(len as usize)
    }
}

/// The identity in this process of the ring whose state is `state`, the
/// same through every handle on it: the file and offset of a named queue
/// (opened again, it is mapped again, at another address), else the
/// state's address (an anonymous queue is mapped once per process). Never 0.
fn identity(state: &Region) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    match state.file_position() {
        Some(position) => {
            let mut h = DefaultHasher::new();
            position.hash(&mut h);
            h.finish().max(1)
        }
        None => state.as_ptr::<u8>() as u64,
    }
}

/// While alive, the calling thread holds back items of a ring (see
/// [`Ring::holding_back`]); puts the previous mark back when dropped.
#[must_use = "the mark is taken off at once if unused"]
pub(crate) struct HoldingBack((Option<ProcessKey>, u64));

impl Drop for HoldingBack {
    fn drop(&mut self) {
        HELD_BACK.set(self.0);
    }
}

/// What a batch reader ([`Ring::pop_many`]) does with the frame shown.
pub(crate) enum Take {
    /// Takes it, and would take the next.
    More,
    /// Takes it, and no more.
    Last,
    /// Leaves it (and the rest) in the ring.
    Leave,
}

/// The size of the frame (length prefix included) at `at` in a run of
/// frames laid out as in the ring; `None` past the last whole one.
fn frame_at(frames: &[u8], at: usize) -> Option<usize> {
    let len = frames.get(at..at.checked_add(LEN)?)?;
    let size = LEN + u32::from_le_bytes(len.try_into().ok()?) as usize;
    (frames.len() - at >= size).then_some(size)
}

/// One side's lock, held.
struct Held<'a> {
    lock: &'a RobustMutex,
    /// The process that took it.
    process: ProcessKey,
}

impl<'a> Held<'a> {
    fn new(lock: &'a RobustMutex) -> Self {
        Held {
            lock,
            process: ProcessKey::current(),
        }
    }

    /// `NotOwner` in a copy of the process that took the lock, forked
    /// (a bare `fork(2)`) by a closure run with it held, which has just
    /// returned there too: the frame it read or wrote is its parent's,
    /// which has long moved the end past it and maybe past others since.
    /// The copy must not move the end again, back to where it was.
    fn still_ours(&self) -> Result<()> {
        if self.process.is_current() {
            Ok(())
        } else {
            Err(Error::NotOwner)
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // A copy in a forked descendant releases nothing, even one that
        // got the pid (so the thread id) of the taker once it died, and
        // holds the lock itself now.
        if self.process.is_current() {
            let _ = self.lock.unlock();
        }
    }
}

#[cfg(any(fuzzing, test))]
impl Ring {
    /// For the fuzzer: overwrites the two ends, then each side's view of
    /// the other (from bytes 16..32, which are also the data's start) and
    /// the ring's data with `bytes`, as a broken or hostile process could;
    /// the validated local sizes stay.
    pub(crate) fn scribble(&self, bytes: &[u8]) {
        let s = self.shared();
        let mut words = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
        for end in [&s.head.at, &s.tail.at, &s.head.cached, &s.tail.cached] {
            end.store(words.next().unwrap_or(0), Ordering::Relaxed);
        }
        let data = bytes.get(16..).unwrap_or_default();
        let n = data.len().min(self.capacity());
        // SAFETY: `n` bytes fit the ring's data region.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.data.as_ptr::<u8>(), n) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Queue;

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Batches and single gets over rings whose ends look sane but whose
    /// frames are garbage (what a broken or hostile process could leave):
    /// every call returns items or an error, never panics, never loops,
    /// and the ring takes puts again once drained or found corrupt.
    #[test]
    fn batches_over_scribbled_rings_return_items_or_errors() {
        let q = Queue::<Vec<u8>>::with_capacity(0, 509).unwrap();
        let ring = &q.ring;
        let mut rng = 0x1234_5678_9abc_def1_u64;
        let (mut some, mut corrupt) = (0, 0);
        for round in 0..3000 {
            let span = ring.span;
            let head = xorshift(&mut rng) % span;
            let bytes = xorshift(&mut rng) % (ring.capacity + 1);
            let tail = (head + bytes) % span;
            let items = if bytes == 0 {
                0
            } else {
                1 + xorshift(&mut rng) % (bytes / LEN as u64).max(1)
            };
            let hc = xorshift(&mut rng) & COUNT_MASK;
            let head = head | (hc << OFFSET_BITS);
            let tail = tail | (((hc + items) & COUNT_MASK) << OFFSET_BITS);
            // The ends, then the data (from byte 16, where `scribble` also
            // takes the cached views from): bytes mostly zero or small, so
            // that many lengths make sense and some do not.
            let mut scribble: Vec<u8> = [head, tail].iter().flat_map(|w| w.to_le_bytes()).collect();
            scribble.extend((0..ring.capacity).map(|_| {
                let r = xorshift(&mut rng);
                match r % 8 {
                    0 => (r >> 16) as u8,
                    1 | 2 => (r >> 16) as u8 % 12,
                    _ => 0,
                }
            }));
            ring.scribble(&scribble);
            // The views each side would hold of the other end.
            let s = ring.shared();
            s.tail.cached.store(head, Ordering::Relaxed);
            s.head.cached.store(tail, Ordering::Relaxed);
            let _ = (q.len(), q.is_full());
            let mut taken = 0;
            for i in 0..600 {
                let got = if i % 3 == 0 {
                    q.try_get().map(|_| 1)
                } else {
                    q.try_get_many(1 + i % 7).map(|v| v.len())
                };
                match got {
                    Ok(n) => taken += n,
                    Err(Error::Corrupt { .. }) => {
                        corrupt += 1;
                        break;
                    }
                    Err(Error::Empty) => break,
                    Err(Error::Deserialize(_)) => taken += 1,
                    Err(e) => panic!("round {round}: unexpected {e}"),
                }
            }
            assert!(taken <= items as usize, "round {round}: {taken} of {items}");
            some += usize::from(taken > 0);
            // Reset the ends: the ring works again.
            ring.scribble(&[0; 32]);
            q.try_put_many([vec![1u8, 2], vec![3]]).unwrap();
            assert_eq!(q.try_get_many(5).unwrap(), vec![vec![1, 2], vec![3]]);
        }
        // Both kinds of round happened: items taken, corruption found.
        assert!(
            some > 100 && corrupt > 100,
            "{some} with items, {corrupt} corrupt"
        );
    }

    /// No reachable state of a healthy ring fails the consistency check
    /// of [`Ring::extent`] for want of count bits: the most frames a ring
    /// can hold (all empty, or up to the item cap) stays below the count's
    /// modulus, so a full ring never counts 0 items in its bytes.
    #[test]
    fn the_item_count_never_wraps() {
        let modulus = COUNT_MASK + 1;
        for capacity in [64, 4096, MAX_CAPACITY / 2, MAX_CAPACITY - 1, MAX_CAPACITY] {
            let most = (capacity / LEN as u64).min(MAX_ITEMS);
            assert!(most < modulus, "{capacity}: {most} frames");
            // The check's conditions for `most` empty frames in
            // `most * LEN` bytes: a count that kept its value.
            assert_eq!(most & COUNT_MASK, most);
            assert!(most * LEN as u64 <= capacity);
        }
        // The largest ring would reach the modulus without the cap.
        assert_eq!(MAX_CAPACITY / LEN as u64, modulus);
    }
}
