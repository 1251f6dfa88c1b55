//! [`raw_sync`](::raw_sync), the crate a Rust user first reaches for to
//! share a lock or an event between processes: its process-shared pthread
//! `Mutex` (not robust: a holder's death leaves it locked forever) beside
//! [`Lock`](multiproc::sync::Lock) and [`Value`](multiproc::Value), and
//! its `BusyEvent` (spins, never sleeps) and `Event` (a pthread condition
//! variable) beside [`Event`](multiproc::sync::Event).

use anyhow::{anyhow, Result};
use multiproc::segment::Segment;
use raw_sync::events::{BusyEvent, Event, EventImpl, EventInit, EventState};
use raw_sync::locks::{LockImpl, LockInit, Mutex};
use raw_sync::Timeout;

use crate::baseline::{BenchCounter, BenchMutex, BenchPingPong};

/// raw_sync's errors are boxed and not `Send`: their text.
fn error(e: Box<dyn std::error::Error>) -> anyhow::Error {
    anyhow!("raw_sync: {e}")
}

/// raw_sync's `Mutex` (a process-shared pthread mutex of the default type,
/// not robust) guarding a `u64`, in anonymous shared memory.
pub struct RawSyncMutex {
    lock: Box<dyn LockImpl>,
    // Holds the mutex and the counter; after `lock`, which points into it.
    _mem: Segment,
}

// SAFETY: the lock is a process-shared pthread mutex in shared memory,
// which pthreads lets any thread of any process lock and unlock; the box
// holds only pointers into `_mem`, which lives as long as it does.
unsafe impl Sync for RawSyncMutex {}

impl RawSyncMutex {
    /// A new unlocked mutex and a zero counter.
    ///
    /// # Errors
    /// If shared memory cannot be allocated or the mutex initialised.
    pub fn new() -> Result<Self> {
        let lock_len = Mutex::size_of(None) + std::mem::align_of::<u64>();
        let mem = Segment::anonymous(lock_len + 8)?;
        let base = mem.as_ptr();
        // SAFETY: `lock_len` (a multiple of 8: the mutex and its largest
        // alignment padding) is within the segment, which is 256-aligned:
        // the counter is an aligned, zeroed u64 in bounds.
        let counter = unsafe { base.add(lock_len.next_multiple_of(8)) };
        // SAFETY: `base` is the start of a fresh, writable, zeroed mapping
        // with room for the mutex before `counter`; both live as long as
        // the returned box, which is dropped before `mem` (field order).
        let (lock, _) = unsafe { Mutex::new(base, counter) }.map_err(error)?;
        Ok(RawSyncMutex { lock, _mem: mem })
    }
}

impl BenchMutex for RawSyncMutex {
    fn lock_unlock(&self) {
        drop(self.lock.lock());
    }
}

impl BenchCounter for RawSyncMutex {
    fn incr(&self) {
        if let Ok(guard) = self.lock.lock() {
            // SAFETY: the guard's pointer is the counter, an aligned u64 in
            // the shared segment, only touched with the mutex held.
            unsafe { *guard.cast::<u64>() += 1 };
        }
    }
    fn count(&self) -> u64 {
        self.lock.lock().map_or(0, |guard| {
            // SAFETY: as for `incr`.
            unsafe { *guard.cast::<u64>() }
        })
    }
}

/// Two raw_sync events, one each way (auto-reset: a wait takes the signal).
pub struct RawSyncEventPair {
    ping: Box<dyn EventImpl>,
    pong: Box<dyn EventImpl>,
    // Holds both events; after them, which point into it.
    _mem: Segment,
}

// SAFETY: both events live in shared memory and are made for use by
// several processes at once (a process-shared mutex and condition
// variable, or an atomic flag); the boxes hold only pointers into `_mem`.
unsafe impl Sync for RawSyncEventPair {}

impl RawSyncEventPair {
    /// Two new events, not set: `busy` for raw_sync's `BusyEvent` (spins
    /// until set, never sleeps), else its `Event` (a pthread condition
    /// variable).
    ///
    /// # Errors
    /// If shared memory cannot be allocated or an event initialised.
    pub fn new(busy: bool) -> Result<Self> {
        let one = if busy {
            BusyEvent::size_of(None)
        } else {
            Event::size_of(None)
        };
        // Room for each event's alignment padding, at 64-byte offsets.
        let stride = (one + 16).next_multiple_of(64);
        let mem = Segment::anonymous(2 * stride)?;
        let make = |at: usize| {
            // SAFETY: `at` is 0 or `stride`, within the `2 * stride`-byte
            // segment.
            let p = unsafe { mem.as_ptr().add(at) };
            let r = if busy {
                // SAFETY: the event and its padding fit in the fresh,
                // writable, zeroed segment from `p`, which outlives the box
                // (dropped first, by field order).
                unsafe { BusyEvent::new(p, true) }
            } else {
                // SAFETY: as above.
                unsafe { Event::new(p, true) }
            };
            r.map(|(event, _)| event).map_err(error)
        };
        Ok(RawSyncEventPair {
            ping: make(0)?,
            pong: make(stride)?,
            _mem: mem,
        })
    }
}

impl BenchPingPong for RawSyncEventPair {
    fn answer(&self) {
        let _ = self.ping.wait(Timeout::Infinite);
        let _ = self.pong.set(EventState::Signaled);
    }
    fn ask(&self) {
        let _ = self.ping.set(EventState::Signaled);
        let _ = self.pong.wait(Timeout::Infinite);
    }
}
