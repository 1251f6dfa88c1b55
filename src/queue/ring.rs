//! The shared part of a queue: a ring of length-prefixed frames behind a
//! robust mutex, and futex words to sleep on. Items are bytes here; the typed
//! queues encode and decode them outside the lock.

use std::alloc::Layout;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, LockError, Result};
use crate::segment::{ObjectKind, Placement, Region};
use crate::sync::{place_state, spin, Deadline, RawLock};
use crate::sys::{self, MutexKind, Woke};

const LEN: usize = 4;
/// Attempts to take the lock before blocking on it.
const LOCK_SPIN: u32 = 1000;

/// The state after the mutex. All fields are atomics so that no reference
/// ever claims exclusive access to memory other processes touch; the ones
/// other than the futex words and sleeper counts change only under the lock.
#[repr(C)]
struct RingState {
    /// Ring size in bytes (fixed at creation).
    capacity: u64,
    /// Most items at once, 0 for no limit (Python's `maxsize`).
    maxsize: u64,
    /// Bytes consumed and produced since creation: the ring holds the
    /// complete frames in `head..tail` (offsets taken modulo `capacity`).
    head: AtomicU64,
    tail: AtomicU64,
    /// Items in the ring (recounted after an owner died).
    count: AtomicU64,
    /// Items put but not yet marked done (`JoinableQueue`).
    unfinished: AtomicU64,
    closed: AtomicU32,
    /// Bumped when an item is added / space is freed / the last task is
    /// done; the futex words waiters sleep on.
    added: AtomicU32,
    freed: AtomicU32,
    done: AtomicU32,
    /// Processes asleep on each word; one that dies asleep leaves its count
    /// too high, which costs extra wake-ups only.
    getters: AtomicU32,
    putters: AtomicU32,
    joiners: AtomicU32,
}

/// What a queue is waiting for.
#[derive(Clone, Copy)]
enum Wake {
    Added,
    Freed,
    Done,
}

/// A process-local handle on a shared ring.
///
/// Everything read from shared memory may have been written by a broken or
/// hostile process, so the fixed sizes are copied here once validated, and
/// arithmetic on the moving offsets never trusts them: a ring whose offsets
/// make no sense is an [`Error::Corrupt`], never a panic.
#[derive(Clone)]
pub(crate) struct Ring {
    lock: RawLock,
    state: Region,
    data: Region,
    capacity: u64,
    maxsize: u64,
}

/// Why a push did not happen.
pub(crate) enum PushFailure {
    Full,
    Timeout,
    Closed,
}

impl Ring {
    fn layout(capacity: u64) -> Result<(Layout, usize, usize)> {
        let bytes = usize::try_from(capacity)
            .ok()
            .and_then(|n| Layout::array::<u8>(n).ok())
            .ok_or_else(|| Error::InvalidArgument(format!("a {capacity}-byte queue")))?;
        let (l, state) = RawLock::layout()
            .extend(Layout::new::<RingState>())
            .expect("small");
        let (l, data) = l
            .extend(bytes.align_to(8).expect("8 is a power of two"))
            .map_err(|_| Error::InvalidArgument(format!("a {capacity}-byte queue")))?;
        Ok((l, state, data))
    }

    pub(crate) fn place(
        how: Placement<'_>,
        kind: ObjectKind,
        elem: crate::segment::ElemType,
        capacity: u64,
        maxsize: u64,
    ) -> Result<Ring> {
        if capacity < 64 {
            return Err(Error::InvalidArgument(format!(
                "a {capacity}-byte queue (64 at least)"
            )));
        }
        let (region, len) = place_state(
            how,
            kind,
            elem,
            capacity,
            |n| Self::layout(n).map(|(l, ..)| l),
            |at: *mut u8| {
                let (_, state, _) = Self::layout(capacity)?;
                // SAFETY: fresh zeroed memory laid out as `layout(capacity)`.
                unsafe {
                    RawLock::init(at, MutexKind::ErrorCheck)?;
                    at.add(state).cast::<RingState>().write(RingState {
                        capacity,
                        maxsize,
                        head: AtomicU64::new(0),
                        tail: AtomicU64::new(0),
                        count: AtomicU64::new(0),
                        unfinished: AtomicU64::new(0),
                        closed: AtomicU32::new(0),
                        added: AtomicU32::new(0),
                        freed: AtomicU32::new(0),
                        done: AtomicU32::new(0),
                        getters: AtomicU32::new(0),
                        putters: AtomicU32::new(0),
                        joiners: AtomicU32::new(0),
                    });
                }
                Ok(())
            },
        )?;
        let (_, state, data) = Self::layout(len)?;
        // SAFETY: both offsets are inside the object's memory.
        let (state, data) = unsafe { (region.sub(state), region.sub(data)) };
        let mut ring = Ring {
            lock: RawLock::from_region(region),
            state,
            data,
            capacity: len,
            maxsize: 0,
        };
        ring.maxsize = ring.shared().maxsize;
        // An opened segment is checked like a created one: a crafted
        // capacity must not turn into arithmetic on zero.
        if ring.shared().capacity != len || len < 64 {
            return Err(Error::Corrupt {
                name: how.name().into(),
                what: format!("queue capacity {} (header {len})", ring.shared().capacity),
            });
        }
        Ok(ring)
    }

    fn shared(&self) -> &RingState {
        // SAFETY: the region holds an initialised RingState while `self`
        // lives; every field is atomic or never changes after creation.
        unsafe { &*self.state.as_ptr::<RingState>() }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Bytes in use, or `Corrupt` if the offsets make no sense.
    fn used(&self, head: u64, tail: u64) -> Result<u64> {
        tail.checked_sub(head)
            .filter(|&used| used <= self.capacity)
            .ok_or_else(|| self.corrupt(format!("queue offsets head {head}, tail {tail}")))
    }

    fn corrupt(&self, what: String) -> Error {
        Error::Corrupt {
            name: String::new(),
            what,
        }
    }

    /// The largest item the ring can ever hold.
    pub(crate) fn max_item(&self) -> usize {
        self.capacity() - LEN
    }

    /// Takes the lock; after an owner died, recounts the items (the frames
    /// in `head..tail` are complete: `tail` moves only after a frame is
    /// written) and marks the lock consistent.
    fn lock(&self) -> Result<Held<'_>> {
        // glibc's robust mutex never spins: a contended lock is a futex
        // sleep. Producer and consumer hold it for a few nanoseconds, so
        // waiting briefly for it to look free avoids most of those calls.
        let r = self.lock.acquire_spinning(LOCK_SPIN, || ());
        match r {
            Ok(()) => Ok(Held { ring: self }),
            Err(LockError::OwnerDied(())) => {
                let held = Held { ring: self };
                held.repair()?;
                self.lock.make_consistent()?;
                Ok(held)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds one frame, waiting for room until `deadline` (not at all if `try_only`).
    pub(crate) fn push(
        &self,
        item: &[u8],
        try_only: bool,
        deadline: Deadline,
    ) -> Result<std::result::Result<(), PushFailure>> {
        let need = (LEN + item.len()) as u64;
        loop {
            let held = self.lock()?;
            let s = self.shared();
            if s.closed.load(Ordering::Relaxed) != 0 {
                return Ok(Err(PushFailure::Closed));
            }
            let used = self.used(
                s.head.load(Ordering::Relaxed),
                s.tail.load(Ordering::Relaxed),
            )?;
            let items = s.count.load(Ordering::Relaxed);
            let room = self.capacity - used >= need && (self.maxsize == 0 || items < self.maxsize);
            if room {
                let tail = s.tail.load(Ordering::Relaxed);
                let end = tail
                    .checked_add(need)
                    .ok_or_else(|| self.corrupt(format!("queue tail {tail} at the end of u64")))?;
                held.copy_in(tail, &(item.len() as u32).to_le_bytes());
                held.copy_in(tail + LEN as u64, item);
                // Publish only now: the frame is complete.
                s.tail.store(end, Ordering::Release);
                s.count.store(items.saturating_add(1), Ordering::Relaxed);
                // Changed only under the lock: no read-modify-write needed.
                s.unfinished.store(
                    s.unfinished.load(Ordering::Relaxed).saturating_add(1),
                    Ordering::Relaxed,
                );
                held.signal(Wake::Added);
                return Ok(Ok(()));
            }
            if try_only {
                return Ok(Err(PushFailure::Full));
            }
            if !held.sleep(Wake::Freed, deadline)? {
                return Ok(Err(PushFailure::Timeout));
            }
        }
    }

    /// Takes one frame into `out` (replacing its content), waiting for one
    /// until `deadline` (not at all if `try_only`).
    pub(crate) fn pop(&self, out: &mut Vec<u8>, try_only: bool, deadline: Deadline) -> Result<()> {
        loop {
            if !try_only && self.idle_until_added(deadline)? {
                return Err(Error::Timeout);
            }
            let held = self.lock()?;
            let s = self.shared();
            let head = s.head.load(Ordering::Relaxed);
            let tail = s.tail.load(Ordering::Acquire);
            if head != tail {
                let len = held.frame_len(head, tail)?;
                out.clear();
                out.resize(len, 0);
                held.copy_out(head + LEN as u64, out);
                s.head.store(head + (LEN + len) as u64, Ordering::Release);
                s.count.store(
                    s.count.load(Ordering::Relaxed).saturating_sub(1),
                    Ordering::Relaxed,
                );
                held.signal(Wake::Freed);
                return Ok(());
            }
            if s.closed.load(Ordering::Relaxed) != 0 {
                return Err(Error::Closed);
            }
            if try_only {
                return Err(Error::Empty);
            }
            if !held.sleep(Wake::Added, deadline)? {
                return Err(Error::Timeout);
            }
        }
    }

    /// The futex word and the sleeper count of `wake`.
    fn words(&self, wake: Wake) -> (&AtomicU32, &AtomicU32) {
        let s = self.shared();
        match wake {
            Wake::Added => (&s.added, &s.getters),
            Wake::Freed => (&s.freed, &s.putters),
            Wake::Done => (&s.done, &s.joiners),
        }
    }

    /// While the queue looks empty (and open), waits for an item without
    /// taking the lock, so that an idle consumer never competes with the
    /// producer for it; true if `deadline` passed.
    fn idle_until_added(&self, deadline: Deadline) -> Result<bool> {
        let s = self.shared();
        let (word, sleepers) = self.words(Wake::Added);
        loop {
            // The word first: an item added after this read changes it.
            let seen = word.load(Ordering::SeqCst);
            let empty = s.head.load(Ordering::Acquire) == s.tail.load(Ordering::Acquire);
            if !empty || s.closed.load(Ordering::Acquire) != 0 {
                return Ok(false);
            }
            if spin(word, |v| v != seen).is_ok() {
                continue;
            }
            sleepers.fetch_add(1, Ordering::SeqCst);
            let woke = deadline.wait(word, seen);
            sleepers.fetch_sub(1, Ordering::SeqCst);
            if woke == Woke::TimedOut && word.load(Ordering::SeqCst) == seen {
                return Ok(true);
            }
        }
    }

    /// Items in the queue (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.shared().count.load(Ordering::Relaxed) as usize
    }

    /// Whether even the smallest item would have to wait.
    pub(crate) fn is_full(&self) -> bool {
        let s = self.shared();
        // A corrupt ring counts as full: nothing more can be put in it.
        let Ok(used) = self.used(
            s.head.load(Ordering::Relaxed),
            s.tail.load(Ordering::Relaxed),
        ) else {
            return true;
        };
        self.capacity - used < LEN as u64 + 1
            || (self.maxsize != 0 && s.count.load(Ordering::Relaxed) >= self.maxsize)
    }

    /// Refuses further puts and wakes every waiter; remaining items can still be got.
    pub(crate) fn close(&self) -> Result<()> {
        let held = self.lock()?;
        self.shared().closed.store(1, Ordering::Relaxed);
        held.signal(Wake::Added);
        held.signal(Wake::Freed);
        Ok(())
    }

    /// Marks one item processed (`JoinableQueue::task_done`).
    pub(crate) fn task_done(&self) -> Result<()> {
        let held = self.lock()?;
        let s = self.shared();
        match s.unfinished.load(Ordering::Relaxed) {
            0 => Err(Error::TooManyTaskDone),
            1 => {
                s.unfinished.store(0, Ordering::Relaxed);
                held.signal(Wake::Done);
                Ok(())
            }
            n => {
                s.unfinished.store(n - 1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Waits until every item put has been marked done.
    pub(crate) fn join(&self, deadline: Deadline) -> Result<()> {
        loop {
            let held = self.lock()?;
            if self.shared().unfinished.load(Ordering::Relaxed) == 0 {
                return Ok(());
            }
            if !held.sleep(Wake::Done, deadline)? {
                return Err(Error::Timeout);
            }
        }
    }
}

/// The ring's lock, held.
struct Held<'a> {
    ring: &'a Ring,
}

impl Held<'_> {
    /// Announces a change; a system call only if someone sleeps on it.
    fn signal(&self, wake: Wake) {
        let (word, sleepers) = self.ring.words(wake);
        word.fetch_add(1, Ordering::SeqCst);
        if sleepers.load(Ordering::SeqCst) > 0 {
            sys::futex_wake(word, u32::MAX);
        }
    }

    /// Releases the lock and waits for `wake` until `deadline`; false if it passed.
    fn sleep(self, wake: Wake, deadline: Deadline) -> Result<bool> {
        let (word, sleepers) = self.ring.words(wake);
        let seen = word.load(Ordering::SeqCst);
        drop(self);
        if spin(word, |v| v != seen).is_ok() {
            return Ok(true);
        }
        sleepers.fetch_add(1, Ordering::SeqCst);
        let woke = deadline.wait(word, seen);
        sleepers.fetch_sub(1, Ordering::SeqCst);
        Ok(woke != Woke::TimedOut || word.load(Ordering::SeqCst) != seen)
    }

    fn ring_ptr(&self) -> *mut u8 {
        self.ring.data.as_ptr::<u8>()
    }

    /// Copies `bytes` into the ring at logical offset `at`, wrapping.
    fn copy_in(&self, at: u64, bytes: &[u8]) {
        let cap = self.ring.capacity();
        let start = (at % cap as u64) as usize;
        let first = bytes.len().min(cap - start);
        // SAFETY: both ranges are inside the ring, which the held lock
        // makes this process's alone to write.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring_ptr().add(start), first);
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add(first),
                self.ring_ptr(),
                bytes.len() - first,
            );
        }
    }

    /// Copies bytes out of the ring from logical offset `at`, wrapping.
    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let cap = self.ring.capacity();
        let start = (at % cap as u64) as usize;
        let first = out.len().min(cap - start);
        // SAFETY: as for `copy_in`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring_ptr().add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.ring_ptr(),
                out.as_mut_ptr().add(first),
                out.len() - first,
            );
        }
    }

    /// The payload length of the frame at `head`, checked to lie within `head..tail`.
    fn frame_len(&self, head: u64, tail: u64) -> Result<usize> {
        let mut len = [0u8; LEN];
        self.copy_out(head, &mut len);
        let len = u32::from_le_bytes(len) as u64;
        if self.ring.used(head, tail)? < LEN as u64 + len {
            return Err(Error::Corrupt {
                name: String::new(),
                what: format!(
                    "queue frame of {len} bytes at {head} overruns the data that ends at {tail}"
                ),
            });
        }
        Ok(len as usize)
    }

    /// After an owner died: re-establishes `count` from the frames, and drops
    /// a damaged tail rather than ever deliver a torn item.
    fn repair(&self) -> Result<()> {
        let s = self.ring.shared();
        let (mut at, tail) = (
            s.head.load(Ordering::Relaxed),
            s.tail.load(Ordering::Relaxed),
        );
        let mut count = 0;
        while at < tail {
            match self.frame_len(at, tail) {
                Ok(len) => {
                    at += (LEN + len) as u64;
                    count += 1;
                }
                Err(_) => {
                    s.tail.store(at, Ordering::Relaxed);
                    break;
                }
            }
        }
        s.count.store(count, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.ring.lock.unlock();
    }
}

#[cfg(fuzzing)]
impl Ring {
    /// For the fuzzer: overwrites the moving offsets (head, tail, count)
    /// and then the ring's data with `bytes`, as a broken or hostile
    /// process could; the validated local sizes stay.
    pub(crate) fn scribble(&self, bytes: &[u8]) {
        let s = self.shared();
        let mut words = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
        for field in [&s.head, &s.tail, &s.count] {
            field.store(words.next().unwrap_or(0), Ordering::Relaxed);
        }
        let data = bytes.get(24..).unwrap_or_default();
        let n = data.len().min(self.capacity());
        // SAFETY: `n` bytes fit the ring's data region.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.data.as_ptr::<u8>(), n) };
    }
}
