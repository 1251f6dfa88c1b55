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

    /// Sets the flag and wakes every waiter.
    #[inline]
    pub fn set(&self) {
        if self.word().swap(SET, Ordering::AcqRel) & SLEEPERS != 0 {
            wake_all(self.word());
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

    /// Blocks until the flag is set.
    #[inline]
    pub fn wait(&self) {
        self.wait_until(Deadline::Never);
    }

    /// Blocks until the flag is set or `timeout` passes; returns the flag,
    /// as Python's `Event.wait(timeout)` does.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout))
    }

    /// Waits until the flag is set, without blocking the thread (for a
    /// task on an async runtime; any runtime will do).
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
        let done = waiter::word_alone(self.word(), deadline, || self.look()).await?;
        Ok(done.is_some() || self.is_set())
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        wait_while(self.word(), deadline, |v| v & SET != 0, || self.look()).is_some()
            || self.is_set()
    }

    /// One look for a waiter: done if the flag is set, else the value to
    /// sleep on, with the sleepers bit announced.
    fn look(&self) -> ControlFlow<(), u32> {
        let word = self.word();
        let mut v = word.load(Ordering::Acquire);
        loop {
            if v & SET != 0 {
                return ControlFlow::Break(());
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
