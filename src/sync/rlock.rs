//! [`RLock`]: a re-entrant, robust, process-shared lock.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use super::RobustMutex;
use crate::error::{LockResult, RecoverableLockResult, Result};
use crate::segment::{shared_constructors, ObjectKind, Region, SharedObject};
use crate::sys::{Deadline, MutexKind};
use crate::waiter::ProcessKey;

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
    mutex: RobustMutex,
}

impl SharedObject for RLock {
    type Args<'a> = ();
    const KIND: ObjectKind = ObjectKind::RLock;

    fn layout(_: u64) -> Result<Layout> {
        Ok(RobustMutex::layout())
    }

    unsafe fn init(at: NonNull<u8>, (): ()) -> Result<()> {
        // SAFETY: fresh zeroed memory for a mutex, per the caller.
        unsafe { RobustMutex::init(at.as_ptr(), MutexKind::Recursive) }
    }

    unsafe fn from_region(region: Region, _: u64) -> std::result::Result<Self, String> {
        // SAFETY: `region` starts with the mutex `init` made, per the caller.
        Ok(RLock::from_mutex(unsafe {
            RobustMutex::from_region(region)
        }))
    }
}

shared_constructors! {
    impl[] RLock as "re-entrant lock" {
        args() => (),
        made: "",
        errors: "",
        kept: "",
        anonymous: new,
    }
}

impl RLock {
    pub(crate) fn mutex(&self) -> &RobustMutex {
        &self.mutex
    }

    pub(crate) fn from_mutex(mutex: RobustMutex) -> RLock {
        RLock { mutex }
    }

    #[inline]
    fn acquire_with(&self, deadline: Deadline) -> RecoverableLockResult<RLockGuard<'_>> {
        self.mutex.acquire(deadline, || RLockGuard::new(self))
    }

    /// Blocks until the calling thread holds the lock (at once if it already does).
    ///
    /// # Errors
    /// `NotRecoverable`, and `OwnerDied` if the previous owner died holding
    /// the lock: the guard is then dropped without repair, which makes the
    /// lock permanently `NotRecoverable` for everyone. To repair instead,
    /// use [`lock_recovering`](RLock::lock_recovering).
    #[inline]
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        Ok(self.acquire_with(Deadline::Never)?)
    }

    /// Takes the lock if it is free or already held by this thread.
    ///
    /// # Errors
    /// `WouldBlock`, and those of [`lock`](RLock::lock) (an `OwnerDied`
    /// leaves the lock not recoverable).
    pub fn try_lock(&self) -> LockResult<RLockGuard<'_>> {
        Ok(self.acquire_with(Deadline::Now)?)
    }

    /// Waits at most `timeout` (monotonic clock) for the lock.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock`](RLock::lock) (an `OwnerDied` leaves
    /// the lock not recoverable).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<RLockGuard<'_>> {
        Ok(self.acquire_with(Deadline::after(timeout))?)
    }

    /// Blocks until the calling thread holds the lock, handing over the
    /// guard if the previous owner died holding it, so that the caller can
    /// repair.
    ///
    /// # Errors
    /// [`RecoverableLockError::OwnerDied`](crate::RecoverableLockError::OwnerDied)
    /// with the guard: the caller holds the lock; repair what it protects,
    /// then call [`RLockGuard::make_consistent`] (dropping the guard without
    /// that makes the lock permanently `NotRecoverable`). Otherwise as for
    /// [`lock`](RLock::lock).
    #[inline]
    pub fn lock_recovering(&self) -> RecoverableLockResult<RLockGuard<'_>> {
        self.acquire_with(Deadline::Never)
    }

    /// As [`lock_recovering`](RLock::lock_recovering), waiting at most
    /// `timeout` (monotonic clock).
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock_recovering`](RLock::lock_recovering).
    pub fn lock_recovering_timeout(
        &self,
        timeout: Duration,
    ) -> RecoverableLockResult<RLockGuard<'_>> {
        self.acquire_with(Deadline::after(timeout))
    }

    /// Takes the lock without a guard; pair each call with [`release`](RLock::release).
    ///
    /// # Errors
    /// [`RecoverableLockError::OwnerDied(())`](crate::RecoverableLockError::OwnerDied)
    /// if the previous owner died holding the lock: the caller holds it now
    /// (there is no guard to drop); repair, call
    /// [`make_consistent`](RLock::make_consistent), then
    /// [`release`](RLock::release). Otherwise as for [`lock`](RLock::lock).
    /// The error holds no guard, so `?` carries it anywhere, but on
    /// `OwnerDied` the lock stays held.
    pub fn acquire(&self) -> RecoverableLockResult<()> {
        self.mutex.acquire(Deadline::Never, || ())
    }

    /// Releases one acquisition made with [`acquire`](RLock::acquire).
    ///
    /// # Errors
    /// [`Error::NotOwner`](crate::Error::NotOwner) if the calling thread does
    /// not hold the lock.
    pub fn release(&self) -> Result<()> {
        self.mutex.unlock()
    }

    /// Marks the lock consistent after its previous owner died; a no-op
    /// otherwise.
    ///
    /// # Errors
    /// [`Error::NotOwner`](crate::Error::NotOwner) if the calling thread
    /// does not hold the lock.
    pub fn make_consistent(&self) -> Result<()> {
        self.mutex.make_consistent()
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
    /// The process that took the lock: a forked descendant's copy of the
    /// guard releases nothing, even where the descendant got the pid (so
    /// the thread id) of that process once it died, and holds the lock.
    process: ProcessKey,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    fn new(rlock: &'a RLock) -> Self {
        RLockGuard {
            rlock,
            process: ProcessKey::current(),
            _not_send: PhantomData,
        }
    }

    /// Marks the lock consistent after its previous owner died.
    ///
    /// # Errors
    /// Only on an OS failure; [`Error::NotOwner`](crate::Error::NotOwner)
    /// for a copy of the guard in a forked descendant.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        if !guard.process.is_current() {
            return Err(crate::Error::NotOwner);
        }
        guard.rlock.mutex.make_consistent()
    }
}

impl Drop for RLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.process.is_current() {
            let _ = self.rlock.mutex.unlock();
        }
    }
}

impl std::fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RLockGuard { .. }")
    }
}
