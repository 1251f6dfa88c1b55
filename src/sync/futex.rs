//! What the futex-based primitives share: the bounded spin before
//! sleeping, and placing a fixed-size state in shared memory.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

use crate::error::Result;
use crate::segment::{place, ElemType, ObjectKind, ObjectLayout, Placement, Region};
use crate::sys::{self, Deadline, Woke};

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

/// Blocks until `look` finishes: it is a wait loop's body, and either
/// finishes (`Break`) or names the value of `word` to sleep on
/// (`Continue`), having announced a sleeper if the waking side needs to
/// know. `None` once `deadline` has passed with `look` unfinished. The
/// same `look` serves the async form ([`crate::waiter::word`]).
pub(crate) fn block_on_word<T>(
    word: &AtomicU32,
    deadline: Deadline,
    mut look: impl FnMut() -> ControlFlow<T, u32>,
) -> Option<T> {
    loop {
        match look() {
            ControlFlow::Break(t) => return Some(t),
            ControlFlow::Continue(v) => {
                if sys::futex_wait(word, v, deadline) == Woke::TimedOut {
                    return None;
                }
            }
        }
    }
}

/// A sleeper counted in a primitive's `sleepers` word for as long as it
/// lives, however the sleep ends (a dropped future included). SeqCst, as
/// on the waking side: either the sleeper sees the change, or the changer
/// sees the sleeper.
pub(crate) struct Asleep<'a>(&'a AtomicU32);

impl<'a> Asleep<'a> {
    pub(crate) fn new(sleepers: &'a AtomicU32) -> Self {
        sleepers.fetch_add(1, Ordering::SeqCst);
        Asleep(sleepers)
    }
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
