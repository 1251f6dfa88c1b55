//! [`Semaphore`] and [`BoundedSemaphore`].

use std::alloc::Layout;
use std::ops::{ControlFlow, Deref};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::futex::{block_on_word, place_state, spin, wake_all};
use crate::error::{Error, Result};
use crate::segment::{ElemType, ObjectKind, Placement, Region};
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

impl Semaphore {
    /// A new anonymous semaphore holding `value` permits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] above 2³¹ − 1 permits; allocation errors.
    pub fn new(value: u32) -> Result<Semaphore> {
        Self::place(Placement::Anonymous, ObjectKind::Semaphore, value)
    }

    /// Creates a named semaphore holding `value` permits.
    ///
    /// # Errors
    /// As for [`new`](Semaphore::new) and [`Lock::create`](super::Lock::create).
    pub fn create(name: &str, value: u32) -> Result<Semaphore> {
        Self::place(Placement::Create(name), ObjectKind::Semaphore, value)
    }

    /// Opens a named semaphore.
    ///
    /// # Errors
    /// As for [`Lock::open`](super::Lock::open).
    pub fn open(name: &str) -> Result<Semaphore> {
        Self::place(Placement::Open(name), ObjectKind::Semaphore, 0)
    }

    /// Opens a named semaphore, creating it with `value` permits if it does not exist.
    ///
    /// # Errors
    /// As for [`create`](Semaphore::create) and [`open`](Semaphore::open).
    pub fn create_or_open(name: &str, value: u32) -> Result<Semaphore> {
        Self::place(Placement::CreateOrOpen(name), ObjectKind::Semaphore, value)
    }

    fn place(how: Placement<'_>, kind: ObjectKind, value: u32) -> Result<Semaphore> {
        if value > COUNT {
            return Err(Error::InvalidArgument(format!(
                "{value} permits (at most {COUNT})"
            )));
        }
        let bounded = kind == ObjectKind::BoundedSemaphore;
        let layout = Layout::new::<SemState>();
        let (state, _) = place_state(
            how,
            kind,
            ElemType::none(),
            0,
            |_| Ok(layout),
            |s: *mut SemState| {
                // SAFETY: fresh zeroed memory for a SemState, not yet shared.
                unsafe {
                    s.write(SemState {
                        word: AtomicU32::new(value),
                        max: if bounded { value } else { COUNT },
                    })
                };
                Ok(())
            },
        )?;
        Ok(Semaphore { state })
    }

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
        Ok(Permit { sem: self })
    }

    async fn acquire_until_async(&self, deadline: Deadline) -> Result<bool> {
        let word = &self.shared().word;
        let got = waiter::word(word, deadline, || self.look()).await?;
        Ok(got.is_some() || self.try_acquire())
    }

    fn acquire_until(&self, deadline: Deadline) -> bool {
        let word = &self.shared().word;
        // Spinning only watches for a free permit; `look` takes it.
        let _ = spin(word, |v| v & COUNT > 0);
        block_on_word(word, deadline, || self.look()).is_some() || self.try_acquire()
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
        let mut v = shared.word.load(Ordering::Acquire);
        loop {
            if v & COUNT >= shared.max {
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
        Permit { sem: self }
    }

    /// Takes a permit if one is free at once.
    pub fn try_permit(&self) -> Option<Permit<'_>> {
        self.try_acquire().then(|| Permit { sem: self })
    }

    /// Takes a permit, waiting at most `timeout`.
    pub fn permit_timeout(&self, timeout: Duration) -> Option<Permit<'_>> {
        self.acquire_timeout(timeout).then(|| Permit { sem: self })
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
#[must_use = "if unused the permit is released at once"]
#[derive(Debug)]
pub struct Permit<'a> {
    sem: &'a Semaphore,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
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

impl BoundedSemaphore {
    /// A new anonymous bounded semaphore holding `value` permits.
    ///
    /// # Errors
    /// As for [`Semaphore::new`].
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Semaphore::place(Placement::Anonymous, ObjectKind::BoundedSemaphore, value).map(Self)
    }

    /// Creates a named bounded semaphore.
    ///
    /// # Errors
    /// As for [`Semaphore::create`].
    pub fn create(name: &str, value: u32) -> Result<BoundedSemaphore> {
        Semaphore::place(Placement::Create(name), ObjectKind::BoundedSemaphore, value).map(Self)
    }

    /// Opens a named bounded semaphore.
    ///
    /// # Errors
    /// As for [`Semaphore::open`].
    pub fn open(name: &str) -> Result<BoundedSemaphore> {
        Semaphore::place(Placement::Open(name), ObjectKind::BoundedSemaphore, 0).map(Self)
    }

    /// Opens a named bounded semaphore, creating it if it does not exist.
    ///
    /// # Errors
    /// As for [`Semaphore::create_or_open`].
    pub fn create_or_open(name: &str, value: u32) -> Result<BoundedSemaphore> {
        Semaphore::place(
            Placement::CreateOrOpen(name),
            ObjectKind::BoundedSemaphore,
            value,
        )
        .map(Self)
    }
}

impl Deref for BoundedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.0
    }
}
