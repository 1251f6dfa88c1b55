//! [`Semaphore`] and [`BoundedSemaphore`].

use std::alloc::Layout;
use std::ops::{ControlFlow, Deref};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::futex::{wait_while, wake_all};
use crate::error::{Error, Result};
use crate::segment::{shared_constructors, ObjectKind, Region, SharedObject};
use crate::sys::Deadline;
use crate::waiter;

/// Someone may be asleep waiting for a permit. A release clears it and wakes
/// every sleeper, who then race for the permits: a sleeper that died leaves
/// nothing behind that could swallow a wake-up.
const SLEEPERS: u32 = 1 << 31;
/// The permit count: the low 31 bits.
const COUNT: u32 = SLEEPERS - 1;

#[repr(C)]
struct SemState {
    word: AtomicU32,
    /// The most permits a release may lead to; `COUNT` when unbounded.
    max: u32,
}

/// A counting semaphore shared between processes (Python's
/// `multiprocessing.Semaphore`).
///
/// Permits are not owned: any thread or process may release. A process that
/// dies holding a permit does not give it back (nothing could tell which
/// permits were its own); a waiter that dies never blocks the others.
///
/// # Example
/// ```
/// use multiproc::sync::Semaphore;
/// let slots = Semaphore::new(2)?;
/// let a = slots.permit();
/// let b = slots.permit();
/// assert!(slots.try_permit().is_none());
/// drop(a);
/// assert_eq!(slots.value(), 1);
/// # drop(b);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    state: Region,
}

impl SemState {
    /// Checks a number of permits to start with.
    fn check(value: u32) -> Result<u64> {
        if value > COUNT {
            return Err(Error::InvalidArgument(format!(
                "{value} permits (at most {COUNT})"
            )));
        }
        Ok(0)
    }

    /// Fills a new state of `value` permits, at most `max` after releases.
    ///
    /// # Safety
    /// `at` points to fresh memory for a `SemState`, not yet shared.
    unsafe fn init(at: NonNull<u8>, value: u32, max: u32) -> Result<()> {
        // SAFETY: per the caller.
        unsafe {
            at.cast::<SemState>().write(SemState {
                word: AtomicU32::new(value),
                max,
            })
        };
        Ok(())
    }
}

impl SharedObject for Semaphore {
    type Args<'a> = u32;
    const KIND: ObjectKind = ObjectKind::Semaphore;

    fn len(&value: &u32) -> Result<u64> {
        SemState::check(value)
    }

    fn layout(_: u64) -> Result<Layout> {
        Ok(Layout::new::<SemState>())
    }

    unsafe fn init(at: NonNull<u8>, value: u32) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { SemState::init(at, value, COUNT) }
    }

    unsafe fn from_region(state: Region, _: u64) -> std::result::Result<Self, String> {
        Ok(Semaphore { state })
    }
}

shared_constructors! {
    impl[] Semaphore as "semaphore" {
        args(value: u32) => value,
        made: " holding `value` permits",
        errors: "[`Error::InvalidArgument`](crate::Error::InvalidArgument) above 2³¹ − 1 permits. ",
        kept: " An existing one keeps its own permits.",
        anonymous: new,
    }
}

impl Semaphore {
    #[inline]
    fn shared(&self) -> &SemState {
        // SAFETY: the region holds an initialised SemState while `self`
        // lives; `max` never changes after creation and `word` is atomic.
        unsafe { &*self.state.as_ptr::<SemState>() }
    }

    /// Takes a permit, blocking until one is free.
    #[inline]
    pub fn acquire(&self) {
        self.acquire_until(Deadline::Never);
    }

    /// Takes a permit if one is free at once.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let word = &self.shared().word;
        let mut v = word.load(Ordering::Acquire);
        while v & COUNT > 0 {
            match word.compare_exchange_weak(v, v - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes a permit, waiting at most `timeout`; whether it got one.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.acquire_until(Deadline::after(timeout))
    }

    /// Takes a permit, waiting without blocking the thread (for a task on
    /// an async runtime; any runtime will do).
    ///
    /// # Errors
    /// Only if this process's waiter thread cannot be started.
    pub async fn acquire_async(&self) -> Result<()> {
        self.acquire_until_async(Deadline::Never).await.map(drop)
    }

    /// As [`acquire_async`](Semaphore::acquire_async), giving up after
    /// `timeout`; whether it got a permit.
    ///
    /// # Errors
    /// As for [`acquire_async`](Semaphore::acquire_async).
    pub async fn acquire_timeout_async(&self, timeout: Duration) -> Result<bool> {
        self.acquire_until_async(Deadline::after(timeout)).await
    }

    /// Takes a permit as [`acquire_async`](Semaphore::acquire_async) does;
    /// it is released when dropped.
    ///
    /// # Errors
    /// As for [`acquire_async`](Semaphore::acquire_async).
    pub async fn permit_async(&self) -> Result<Permit<'_>> {
        self.acquire_async().await?;
        Ok(Permit::new(self))
    }

    async fn acquire_until_async(&self, deadline: Deadline) -> Result<bool> {
        let word = &self.shared().word;
        let got = waiter::word_alone(word, deadline, || self.look()).await?;
        Ok(got.is_some() || self.try_acquire())
    }

    fn acquire_until(&self, deadline: Deadline) -> bool {
        let word = &self.shared().word;
        // Spinning only watches for a free permit; `look` takes it.
        wait_while(word, deadline, |v| v & COUNT > 0, || self.look()).is_some()
            || self.try_acquire()
    }

    /// One look for a waiter: a permit taken, or the value to sleep on,
    /// with the sleepers bit announced.
    fn look(&self) -> ControlFlow<(), u32> {
        let word = &self.shared().word;
        let mut v = word.load(Ordering::Acquire);
        loop {
            let next = if v & COUNT > 0 { v - 1 } else { v | SLEEPERS };
            if next == v {
                return ControlFlow::Continue(v);
            }
            match word.compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if v & COUNT > 0 => return ControlFlow::Break(()),
                Ok(_) => return ControlFlow::Continue(next),
                Err(now) => v = now,
            }
        }
    }

    /// Gives a permit back and wakes the waiters.
    ///
    /// # Errors
    /// [`Error::TooManyReleases`] if the count would pass its limit (the
    /// initial value of a [`BoundedSemaphore`], else 2³¹ − 1).
    #[inline]
    pub fn release(&self) -> Result<()> {
        let shared = self.shared();
        // A limit scribbled past `COUNT` (a named semaphore is writable by
        // other processes) must not let the count carry into `SLEEPERS`.
        let max = shared.max.min(COUNT);
        let mut v = shared.word.load(Ordering::Acquire);
        loop {
            if v & COUNT >= max {
                return Err(Error::TooManyReleases);
            }
            // One step: one more permit, and the sleepers flag cleared.
            match shared.word.compare_exchange_weak(
                v,
                (v & COUNT) + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if v & SLEEPERS != 0 {
            wake_all(&shared.word);
        }
        Ok(())
    }

    /// The number of free permits (a snapshot: it may change at once).
    pub fn value(&self) -> u32 {
        self.shared().word.load(Ordering::Acquire) & COUNT
    }

    /// Takes a permit, blocking; the permit is released when dropped.
    pub fn permit(&self) -> Permit<'_> {
        self.acquire();
        Permit::new(self)
    }

    /// Takes a permit if one is free at once.
    pub fn try_permit(&self) -> Option<Permit<'_>> {
        self.try_acquire().then(|| Permit::new(self))
    }

    /// Takes a permit, waiting at most `timeout`.
    pub fn permit_timeout(&self, timeout: Duration) -> Option<Permit<'_>> {
        self.acquire_timeout(timeout).then(|| Permit::new(self))
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

/// A permit of a [`Semaphore`], released when dropped.
///
/// A permit moved into the closure of a forked child is the child's: it
/// is released when the child drops it (never, if the child is killed
/// first), not when the parent drops its own copy of the closure at the
/// fork. So a child can hold a slot of a semaphore for as long as it runs.
#[must_use = "if unused the permit is released at once"]
#[derive(Debug)]
pub struct Permit<'a> {
    sem: &'a Semaphore,
}

impl<'a> Permit<'a> {
    fn new(sem: &'a Semaphore) -> Self {
        Permit { sem }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if crate::process::handing_to_child().is_some() {
            return;
        }
        // Cannot pass the limit: this permit was taken from the count.
        let _ = self.sem.release();
    }
}

/// A semaphore whose [`release`](Semaphore::release) fails with
/// [`Error::TooManyReleases`] past its initial value (Python's
/// `multiprocessing.BoundedSemaphore`). Derefs to [`Semaphore`] for
/// everything else.
#[derive(Clone, Debug)]
pub struct BoundedSemaphore(Semaphore);

impl SharedObject for BoundedSemaphore {
    type Args<'a> = u32;
    const KIND: ObjectKind = ObjectKind::BoundedSemaphore;

    fn len(&value: &u32) -> Result<u64> {
        SemState::check(value)
    }

    fn layout(_: u64) -> Result<Layout> {
        Ok(Layout::new::<SemState>())
    }

    unsafe fn init(at: NonNull<u8>, value: u32) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { SemState::init(at, value, value) }
    }

    unsafe fn from_region(state: Region, _: u64) -> std::result::Result<Self, String> {
        Ok(BoundedSemaphore(Semaphore { state }))
    }
}

shared_constructors! {
    impl[] BoundedSemaphore as "bounded semaphore" {
        args(value: u32) => value,
        made: " holding `value` permits, its limit",
        errors: "[`Error::InvalidArgument`](crate::Error::InvalidArgument) above 2³¹ − 1 permits. ",
        kept: " An existing one keeps its own permits and limit.",
        anonymous: new,
    }
}

impl Deref for BoundedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::futex::testing::{waiter_threads_asleep, woken_after};

    /// A release killed between its count and its wake-up call leaves a
    /// permit, the sleepers bit cleared, and a sleeper nobody wakes; later
    /// releases see no sleeper either. The sleeper must find the permit.
    #[test]
    #[cfg_attr(miri, ignore = "shared memory and futexes are outside Miri")]
    fn a_sleeper_whose_waker_died_takes_the_permit() {
        let sem = Semaphore::new(0).unwrap();
        let word = &sem.shared().word;
        let woken = woken_after(
            word,
            || sem.acquire(),
            || word.store(1, Ordering::Release),
            Duration::from_secs(10),
        );
        assert!(woken, "a free permit, and its waiter asleep");
        // The same for a task.
        let woken = woken_after(
            word,
            || crate::waiter::block_on(sem.acquire_async()).unwrap(),
            || {
                waiter_threads_asleep(Duration::from_secs(10));
                word.store(1, Ordering::Release);
            },
            Duration::from_secs(10),
        );
        assert!(woken, "a free permit, and its task asleep");
    }
}
