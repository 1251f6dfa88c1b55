//! What the futex-based primitives share: deadlines, the bounded spin before
//! sleeping, and placing a fixed-size state in shared memory.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

use crate::error::Result;
use crate::segment::{place, ElemType, ObjectKind, ObjectLayout, Placement, Region};
use crate::sys::{self, Woke};

/// How many times a waiter re-checks its condition before sleeping (a few
/// microseconds: about 12 here). A peer that is running on another CPU answers within a few
/// hundred nanoseconds, while sleeping and being woken across CPUs costs tens
/// of microseconds on these machines; a longer spin only steals time from a
/// peer that shares the CPU.
const SPIN: u32 = 500;

/// How long a sleeper goes without looking again, where a process killed
/// at the wrong moment could leave it asleep with no one to wake it.
pub(crate) const RECHECK: Duration = Duration::from_millis(100);

/// Whether spinning can help at all: not when this process may run on one
/// CPU only, where the peer it waits for cannot run while it spins.
fn spinning_helps() -> bool {
    // A plain atomic, not a `OnceLock`: a child forked while another thread
    // of its parent was initialising a `OnceLock` would wait for it forever.
    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;
    static HELPS: AtomicU8 = AtomicU8::new(UNKNOWN);
    match HELPS.load(Ordering::Relaxed) {
        UNKNOWN => {
            let helps = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
            HELPS.store(if helps { YES } else { NO }, Ordering::Relaxed);
            helps
        }
        v => v == YES,
    }
}

/// An absolute deadline on the monotonic clock, or none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<libc::timespec>);

impl Deadline {
    pub(crate) const NEVER: Deadline = Deadline(None);

    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.map(sys::monotonic_deadline))
    }

    pub(crate) fn passed(&self) -> bool {
        self.0.as_ref().is_some_and(sys::deadline_passed)
    }

    /// The earlier of this deadline and `slice` from now.
    pub(crate) fn capped(&self, slice: Duration) -> Deadline {
        let cap = sys::monotonic_deadline(slice);
        match self.0 {
            Some(d) if (d.tv_sec, d.tv_nsec) <= (cap.tv_sec, cap.tv_nsec) => *self,
            _ => Deadline(Some(cap)),
        }
    }

    /// Sleeps while `*word == expected`, until woken or this deadline.
    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32) -> Woke {
        sys::futex_wait(word, expected, self.0.as_ref())
    }
}

/// Re-checks `word` up to [`SPIN`] times; returns the first value for
/// which `done` holds, or the last value seen.
#[inline]
pub(crate) fn spin(word: &AtomicU32, done: impl Fn(u32) -> bool) -> std::result::Result<u32, u32> {
    let mut v = word.load(Ordering::Acquire);
    let rounds = if spinning_helps() { SPIN } else { 0 };
    for _ in 0..rounds {
        if done(v) {
            return Ok(v);
        }
        std::hint::spin_loop();
        v = word.load(Ordering::Acquire);
    }
    if done(v) {
        Ok(v)
    } else {
        Err(v)
    }
}

/// Wakes every process sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    sys::futex_wake(word, u32::MAX);
}

/// Makes or finds the shared state `S` of a primitive holding elements of
/// type `elem` (none for most): `layout_for` gives
/// its size for `len` elements (the header's count wins when opening), and
/// `init` fills new, zeroed state. Returns the state and its element count.
pub(crate) fn place_state<S>(
    how: Placement<'_>,
    kind: ObjectKind,
    elem: ElemType,
    len: u64,
    layout_for: impl Fn(u64) -> Result<std::alloc::Layout>,
    init: impl FnOnce(*mut S) -> Result<()>,
) -> Result<(Region, u64)> {
    let object = ObjectLayout {
        kind,
        elem,
        len,
        layout_for,
    };
    place(how, &object, |at| init(at.as_ptr().cast()))
}
