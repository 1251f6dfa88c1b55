//! What the futex-based primitives share: the one wait loop, a bounded
//! spin and then sleeps on a futex word.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

use crate::sys::{self, Deadline};
use crate::waiter;

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
///
/// A sleep lasts at most [`RECHECK`] before `look` runs again: a waker
/// killed between its change of `word` and its wake-up call (or one that
/// saw no sleeper announced because a killed waker had just cleared the
/// announcement) leaves a sleeper that nobody will wake.
#[inline]
pub(crate) fn wait_while<T>(
    word: &AtomicU32,
    deadline: Deadline,
    spin_until: impl Fn(u32) -> bool,
    mut look: impl FnMut() -> ControlFlow<T, u32>,
) -> Option<T> {
    // A deadline that has passed already (a zero timeout: a poll) gets
    // one look, without the spin (tens of microseconds) or a sleep. The
    // clock is read only where the spin would otherwise begin.
    if !spin_until(word.load(Ordering::Acquire)) && !deadline.passed() {
        let _ = spin(word, spin_until);
    }
    loop {
        match look() {
            ControlFlow::Break(t) => return Some(t),
            ControlFlow::Continue(v) => match deadline.next_sleep(RECHECK) {
                Some(until) => {
                    sys::futex_wait(word, v, until);
                }
                None => return None,
            },
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
/// sees the sleeper. Only the process that counted it uncounts it: a task
/// that a `fork` copied while it waited, dropped (or finished) in the
/// child, must not take the parent's task out of the count, which would
/// leave it, and every other sleeper, without wake-up calls. A pid would
/// not tell them apart: a descendant may get the pid of the process that
/// counted, once that one has died.
pub(crate) struct Asleep<'a> {
    sleepers: &'a AtomicU32,
    /// The counting process.
    process: waiter::ProcessKey,
}

impl<'a> Asleep<'a> {
    pub(crate) fn new(sleepers: &'a AtomicU32) -> Self {
        sleepers.fetch_add(1, Ordering::SeqCst);
        Asleep {
            sleepers,
            process: waiter::ProcessKey::current(),
        }
    }
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        if self.process.is_current() {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Wakes every process sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    sys::futex_wake(word, u32::MAX);
}

/// What the tests of the futex-based primitives share.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::sys::{self, Deadline};

    /// Runs `wait` on a thread of its own until it sleeps in the kernel
    /// on a futex, then `strand` (which leaves the state a waker killed
    /// half way leaves); returns whether `wait` then returned within
    /// `limit`. If it did not, wakes every sleeper on `word` so that the
    /// thread can end.
    pub(crate) fn woken_after(
        word: &AtomicU32,
        wait: impl FnOnce() + Send,
        strand: impl FnOnce(),
        limit: Duration,
    ) -> bool {
        std::thread::scope(|s| {
            let (tid_tx, tid_rx) = mpsc::channel();
            let (done_tx, done_rx) = mpsc::channel();
            s.spawn(move || {
                tid_tx.send(sys::gettid()).unwrap();
                wait();
                done_tx.send(()).unwrap();
            });
            let tid = tid_rx.recv().unwrap();
            let wchan = format!("/proc/self/task/{tid}/wchan");
            let end = Deadline::after(limit);
            while !std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("futex")) {
                assert!(!end.passed(), "the waiter never slept");
                std::thread::yield_now();
            }
            strand();
            let woken = done_rx.recv_timeout(limit).is_ok();
            while !woken && done_rx.try_recv().is_err() {
                sys::futex_wake(word, u32::MAX);
                std::thread::yield_now();
            }
            woken
        })
    }

    /// Waits until every async waiter thread of this process sleeps in
    /// the kernel: a change made then is one that no thread has compared
    /// yet, and that only a wake-up call or a periodic compare finds.
    pub(crate) fn waiter_threads_asleep(limit: Duration) {
        let end = Deadline::after(limit);
        let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        loop {
            let tasks = std::fs::read_dir("/proc/self/task").unwrap();
            let asleep = tasks.filter_map(|t| t.ok()).all(|t| {
                // `comm` holds the first 15 bytes of the name.
                !read(t.path().join("comm")).starts_with("multiproc-waite")
                    || read(t.path().join("wchan")).contains("futex")
            });
            if asleep {
                return;
            }
            assert!(!end.passed(), "a waiter thread never slept");
            std::thread::yield_now();
        }
    }
}
