//! [`RLock`]: a re-entrant, robust, process-shared lock.

use std::marker::PhantomData;
use std::time::Duration;

use super::RawLock;
use crate::error::{LockResult, Result};
use crate::segment::{ObjectKind, Placement};
use crate::sys::{Deadline, MutexKind};

/// A re-entrant lock shared between processes (Python's
/// `multiprocessing.RLock`): the thread that holds it may take it again, and
/// it is free once every acquisition is released. Ownership is per thread of
/// a process, so another thread or process blocks.
///
/// Robust against owner death like [`Lock`](super::Lock).
///
/// # Example
/// ```
/// use multiproc::sync::RLock;
/// let rlock = RLock::new()?;
/// let outer = rlock.lock().expect("lock");
/// let inner = rlock.lock().expect("re-entered");
/// drop(inner);
/// drop(outer);
/// // Explicit acquire/release, as in Python:
/// rlock.acquire().expect("acquire");
/// rlock.release()?;
/// assert!(rlock.release().is_err()); // not held any more
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    raw: RawLock,
}

impl RLock {
    /// A new anonymous re-entrant lock, shared with children forked afterwards.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<RLock> {
        Self::place(Placement::Anonymous)
    }

    /// Creates a named re-entrant lock.
    ///
    /// # Errors
    /// As for [`Lock::create`](super::Lock::create).
    pub fn create(name: &str) -> Result<RLock> {
        Self::place(Placement::Create(name))
    }

    /// Opens a named re-entrant lock.
    ///
    /// # Errors
    /// As for [`Lock::open`](super::Lock::open).
    pub fn open(name: &str) -> Result<RLock> {
        Self::place(Placement::Open(name))
    }

    /// Opens a named re-entrant lock, creating it if it does not exist.
    ///
    /// # Errors
    /// As for [`Lock::create_or_open`](super::Lock::create_or_open).
    pub fn create_or_open(name: &str) -> Result<RLock> {
        Self::place(Placement::CreateOrOpen(name))
    }

    pub(crate) fn raw(&self) -> &RawLock {
        &self.raw
    }

    fn place(how: Placement<'_>) -> Result<RLock> {
        RawLock::place(how, ObjectKind::RLock, MutexKind::Recursive).map(Self::from_raw)
    }

    pub(crate) fn from_raw(raw: RawLock) -> RLock {
        RLock { raw }
    }

    #[inline]
    fn acquire_with(&self, deadline: Deadline) -> LockResult<RLockGuard<'_>> {
        self.raw.acquire(deadline, || RLockGuard::new(self))
    }

    /// Blocks until the calling thread holds the lock (at once if it already does).
    ///
    /// # Errors
    /// `OwnerDied` (with the guard), `NotRecoverable`.
    #[inline]
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        self.acquire_with(Deadline::Never)
    }

    /// Takes the lock if it is free or already held by this thread.
    ///
    /// # Errors
    /// `WouldBlock`, and those of [`lock`](RLock::lock).
    pub fn try_lock(&self) -> LockResult<RLockGuard<'_>> {
        self.acquire_with(Deadline::Now)
    }

    /// Waits at most `timeout` (monotonic clock) for the lock.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock`](RLock::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<RLockGuard<'_>> {
        self.acquire_with(Deadline::after(timeout))
    }

    /// Takes the lock without a guard; pair each call with [`release`](RLock::release).
    ///
    /// # Errors
    /// As for [`lock`](RLock::lock); after `OwnerDied`, repair and call
    /// [`make_consistent`](RLock::make_consistent).
    pub fn acquire(&self) -> LockResult<()> {
        self.raw.acquire(Deadline::Never, || ())
    }

    /// Releases one acquisition made with [`acquire`](RLock::acquire).
    ///
    /// # Errors
    /// [`Error::NotOwner`](crate::Error::NotOwner) if the calling thread does
    /// not hold the lock.
    pub fn release(&self) -> Result<()> {
        self.raw.unlock()
    }

    /// Marks the lock consistent after its previous owner died; a no-op
    /// otherwise.
    ///
    /// # Errors
    /// [`Error::NotOwner`](crate::Error::NotOwner) if the calling thread
    /// does not hold the lock.
    pub fn make_consistent(&self) -> Result<()> {
        self.raw.make_consistent()
    }
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RLock { .. }")
    }
}

/// One acquisition of an [`RLock`]; released when dropped.
#[must_use = "if unused the lock is released at once"]
pub struct RLockGuard<'a> {
    rlock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    fn new(rlock: &'a RLock) -> Self {
        RLockGuard {
            rlock,
            _not_send: PhantomData,
        }
    }

    /// Marks the lock consistent after its previous owner died.
    ///
    /// # Errors
    /// Only on an OS failure.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        guard.rlock.raw.make_consistent()
    }
}

impl Drop for RLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.rlock.raw.unlock();
    }
}

impl std::fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RLockGuard { .. }")
    }
}
