//! [`Event`]: a flag that processes can wait for.

use std::alloc::Layout;
use std::ops::ControlFlow;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::futex::{wait_while, wake_all};
use crate::error::Result;
use crate::segment::{shared_constructors, ObjectKind, Region, SharedObject};
use crate::sys::Deadline;
use crate::waiter;

/// The flag.
const SET: u32 = 1;
/// Someone may be asleep waiting for the flag. A waiter that dies asleep
/// leaves it set, which costs one needless wake-up and nothing else.
const SLEEPERS: u32 = 2;
/// One [`Event::set`] that raised the flag, counted in the bits above the
/// two others: a waiter that slept through a set undone at once by a
/// clear (a pulse) still sees that one happened, and returns, as
/// Python's waiters, which a set notifies, do.
const RAISED: u32 = 4;
/// The bits that count the raising sets.
const RAISES: u32 = !(SET | SLEEPERS);

/// A flag shared between processes (Python's `multiprocessing.Event`):
/// [`wait`](Event::wait) blocks until another process [`set`](Event::set)s it.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use multiproc::{sync::Event, Process};
/// let ready = Event::new()?;
/// let theirs = ready.clone(); // another handle on the same event
/// let mut child = Process::new(move || theirs.set());
/// child.start()?;
/// assert!(ready.wait_timeout(Duration::from_secs(10)));
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    state: Region,
}

impl SharedObject for Event {
    type Args<'a> = ();
    const KIND: ObjectKind = ObjectKind::Event;

    fn layout(_: u64) -> Result<Layout> {
        Ok(Layout::new::<AtomicU32>())
    }

    unsafe fn init(_: NonNull<u8>, (): ()) -> Result<()> {
        Ok(()) // zeroed: not set, nobody asleep
    }

    unsafe fn from_region(state: Region, _: u64) -> std::result::Result<Self, String> {
        Ok(Event { state })
    }
}

shared_constructors! {
    impl[] Event as "event" {
        args() => (),
        made: ", not set",
        errors: "",
        kept: "",
        anonymous: new,
    }
}

impl Event {
    #[inline]
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the region holds an AtomicU32 for as long as `self` lives,
        // and every process touches it only atomically.
        unsafe { &*self.state.as_ptr::<AtomicU32>() }
    }

    /// Sets the flag and wakes every waiter (even one that finds it
    /// cleared again by the time it looks: its wait then returns with the
    /// flag down, as in Python).
    #[inline]
    pub fn set(&self) {
        let raise = |v: u32| {
            let up = if v & SET == 0 {
                (v | SET).wrapping_add(RAISED)
            } else {
                v
            };
            Some(up & !SLEEPERS)
        };
        let word = self.word();
        let was = match word.fetch_update(Ordering::AcqRel, Ordering::Acquire, raise) {
            Ok(v) | Err(v) => v,
        };
        if was & SLEEPERS != 0 {
            wake_all(word);
        }
    }

    /// Clears the flag.
    #[inline]
    pub fn clear(&self) {
        self.word().fetch_and(!SET, Ordering::AcqRel);
    }

    /// Whether the flag is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.word().load(Ordering::Acquire) & SET != 0
    }

    /// Blocks until the flag is set, or until a [`set`](Event::set) that a
    /// [`clear`](Event::clear) undid at once (a pulse) since the wait began.
    #[inline]
    pub fn wait(&self) {
        self.wait_until(Deadline::Never);
    }

    /// Blocks until the flag is set, a pulse (see [`wait`](Event::wait)),
    /// or `timeout` passes; returns the flag, as Python's
    /// `Event.wait(timeout)` does (`false` after a pulse).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout))
    }

    /// Waits until the flag is set (or a pulse, see [`wait`](Event::wait)),
    /// without blocking the thread (for a task on an async runtime; any
    /// runtime will do).
    ///
    /// # Errors
    /// Only if this process's waiter thread cannot be started.
    ///
    /// # Example
    /// ```
    /// # async fn demo(ready: &multiproc::Event) -> multiproc::Result<()> {
    /// ready.wait_async().await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_async(&self) -> Result<()> {
        self.wait_until_async(Deadline::Never).await.map(drop)
    }

    /// As [`wait_async`](Event::wait_async), giving up after `timeout`;
    /// returns the flag, as [`wait_timeout`](Event::wait_timeout) does.
    ///
    /// # Errors
    /// As for [`wait_async`](Event::wait_async).
    pub async fn wait_timeout_async(&self, timeout: Duration) -> Result<bool> {
        self.wait_until_async(Deadline::after(timeout)).await
    }

    async fn wait_until_async(&self, deadline: Deadline) -> Result<bool> {
        let start = self.word().load(Ordering::Acquire);
        let done = waiter::word_alone(self.word(), deadline, || self.look(start)).await?;
        Ok(done.unwrap_or_else(|| self.is_set()))
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        let word = self.word();
        let start = word.load(Ordering::Acquire);
        let done = |v: u32| v & SET != 0 || (v ^ start) & RAISES != 0;
        wait_while(word, deadline, done, || self.look(start)).unwrap_or_else(|| self.is_set())
    }

    /// One look for a waiter whose wait began with the word at `start`:
    /// done, with the flag, if it is set or was raised since; else the
    /// value to sleep on, with the sleepers bit announced.
    fn look(&self, start: u32) -> ControlFlow<bool, u32> {
        let word = self.word();
        let mut v = word.load(Ordering::Acquire);
        loop {
            if v & SET != 0 {
                return ControlFlow::Break(true);
            }
            // Raised and lowered again since the wait began: a pulse.
            if (v ^ start) & RAISES != 0 {
                return ControlFlow::Break(false);
            }
            if v & SLEEPERS != 0 {
                return ControlFlow::Continue(v);
            }
            match word.compare_exchange(v, v | SLEEPERS, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return ControlFlow::Continue(v | SLEEPERS),
                Err(now) => v = now,
            }
        }
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::{waiter_threads_asleep, woken_after};

    /// A `set` killed between raising the flag and its wake-up call
    /// leaves the flag up, the sleepers bit cleared, and a sleeper nobody
    /// wakes; a later `set` sees no sleeper either. The sleeper must
    /// return.
    #[test]
    #[cfg_attr(miri, ignore = "shared memory and futexes are outside Miri")]
    fn a_sleeper_whose_setter_died_sees_the_flag() {
        let event = Event::new().unwrap();
        let word = event.word();
        let woken = woken_after(
            word,
            || event.wait(),
            || {
                word.store(SET, Ordering::Release);
                event.set();
            },
            Duration::from_secs(10),
        );
        assert!(woken, "the flag set, and its waiter asleep");
        // The same for a task (its look depends on the word alone: the
        // waiter thread's periodic compare must find the change).
        let event = Event::new().unwrap();
        let word = event.word();
        let woken = woken_after(
            word,
            || crate::waiter::block_on(event.wait_async()).unwrap(),
            || {
                waiter_threads_asleep(Duration::from_secs(10));
                word.store(SET, Ordering::Release);
                event.set();
            },
            Duration::from_secs(10),
        );
        assert!(woken, "the flag set, and its task asleep");
    }
}
