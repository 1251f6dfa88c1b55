//! What the futex-based primitives share: the one wait loop, a bounded
//! spin and then sleeps on a futex word.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

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

/// The wait loop of every blocking wait on a futex word. First spins
/// (a bounded [`spin`]) while `spin_until` does not hold for `word`,
/// announcing nothing, so that a peer that answers at once never has to
/// make a wake-up call. Then blocks until `look` finishes: it is the loop's
/// body, and either finishes (`Break`) or names the value of `word` to
/// sleep on (`Continue`), having announced a sleeper if the waking side
/// needs to know. `None` once `deadline` has passed with `look`
/// unfinished. The same `look` serves the async form
/// ([`crate::waiter::word`]).
#[inline]
pub(crate) fn wait_while<T>(
    word: &AtomicU32,
    deadline: Deadline,
    spin_until: impl Fn(u32) -> bool,
    mut look: impl FnMut() -> ControlFlow<T, u32>,
) -> Option<T> {
    let _ = spin(word, spin_until);
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

/// Waits until `word` leaves `seen`, counted in `sleepers` while asleep
/// (for a waking side that calls only when someone sleeps); false if
/// `deadline` passed first.
pub(crate) fn wait_for_change(
    word: &AtomicU32,
    seen: u32,
    sleepers: &AtomicU32,
    deadline: Deadline,
) -> bool {
    let mut asleep = None;
    wait_while(
        word,
        deadline,
        |v| v != seen,
        || {
            // Announced before the kernel compares the word: either this
            // sleep sees a change, or the changer sees the sleeper.
            asleep.get_or_insert_with(|| Asleep::new(sleepers));
            if word.load(Ordering::SeqCst) == seen {
                ControlFlow::Continue(seen)
            } else {
                ControlFlow::Break(())
            }
        },
    )
    .is_some()
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
