//! [`Lock`]: a robust, process-shared mutex.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use super::RobustMutex;
use crate::error::{LockResult, RecoverableLockResult, Result};
use crate::segment::{shared_constructors, ObjectKind, Region, SharedObject};
use crate::sys::{Deadline, MutexKind};
use crate::waiter::ProcessKey;

/// A mutual-exclusion lock shared between processes (Python's
/// `multiprocessing.Lock`), robust against the death of its owner.
///
/// Made before a fork, it is shared with the child; made by name, any process
/// can [`open`](Lock::open) it. Cloning a `Lock` gives another handle on the
/// same lock.
///
/// Unlike Python's, the lock belongs to the thread that took it: the guard
/// releases it, and locking it again from the same thread is
/// [`LockError::Deadlock`](crate::LockError::Deadlock) instead of a hang.
///
/// # Example
/// ```
/// use multiproc::{process::Process, sync::Lock};
/// let lock = Lock::new()?;
/// let theirs = lock.clone(); // another handle on the same lock
/// let mut child = Process::new(move || {
///     let _guard = theirs.lock().expect("lock");
///     println!("child holds the lock");
/// });
/// child.start()?;
/// {
///     let _guard = lock.lock().expect("lock");
///     println!("parent holds the lock");
/// }
/// assert_eq!(child.join()?, 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Owner death
/// If a process dies holding the lock, the next
/// [`lock_recovering`](Lock::lock_recovering) returns
/// [`RecoverableLockError::OwnerDied`](crate::RecoverableLockError::OwnerDied)
/// with a guard: the caller holds the lock, repairs what it protects and
/// calls [`LockGuard::make_consistent`]. If the guard is dropped without
/// that, every later attempt fails with `NotRecoverable`: the data is never
/// silently trusted. The plain [`lock`](Lock::lock) (and `try_lock`,
/// `lock_timeout`) returns [`LockError::OwnerDied`](crate::LockError::OwnerDied)
/// instead, an error without a guard that `?` carries anywhere, having
/// dropped the guard: the lock is then not recoverable.
///
/// # No async form
/// The lock belongs to a thread, and a task may move to another thread at
/// every `.await`: so there is no `lock_async`, and the guard is not
/// `Send`, which makes a task that holds it across an `.await` impossible
/// to spawn on a multi-threaded runtime. Drop the guard before awaiting.
/// ```compile_fail
/// fn spawn<F: std::future::Future + Send>(_: F) {}
/// let lock = multiproc::Lock::new().unwrap();
/// spawn(async move {
///     let _guard = lock.lock();
///     std::future::ready(()).await; // the guard lives across this await
/// });
/// ```
/// ```
/// fn spawn<F: std::future::Future + Send>(_: F) {}
/// let lock = multiproc::Lock::new().unwrap();
/// spawn(async move {
///     drop(lock.lock());
///     std::future::ready(()).await; // no guard alive here
/// });
/// ```
#[derive(Clone)]
pub struct Lock {
    mutex: RobustMutex,
}

impl SharedObject for Lock {
    type Args<'a> = ();
    const KIND: ObjectKind = ObjectKind::Lock;

    fn layout(_: u64) -> Result<Layout> {
        Ok(RobustMutex::layout())
    }

    unsafe fn init(at: NonNull<u8>, (): ()) -> Result<()> {
        // SAFETY: fresh zeroed memory for a mutex, per the caller.
        unsafe { RobustMutex::init(at.as_ptr(), MutexKind::ErrorCheck) }
    }

    unsafe fn from_region(region: Region, _: u64) -> std::result::Result<Self, String> {
        // SAFETY: `region` starts with the mutex `init` made, per the caller.
        Ok(Lock::from_mutex(unsafe {
            RobustMutex::from_region(region)
        }))
    }
}

shared_constructors! {
    impl[] Lock as "lock" {
        args() => (),
        made: "",
        errors: "",
        kept: "",
        anonymous: new,
    }
}

impl Lock {
    pub(crate) fn mutex(&self) -> &RobustMutex {
        &self.mutex
    }

    pub(crate) fn from_mutex(mutex: RobustMutex) -> Lock {
        Lock { mutex }
    }

    #[inline]
    pub(crate) fn acquire_with(&self, deadline: Deadline) -> RecoverableLockResult<LockGuard<'_>> {
        self.acquire_as(deadline, ProcessKey::current())
    }

    /// As [`acquire_with`](Lock::acquire_with), for a caller that has the
    /// calling process's key already.
    #[inline]
    pub(crate) fn acquire_as(
        &self,
        deadline: Deadline,
        process: ProcessKey,
    ) -> RecoverableLockResult<LockGuard<'_>> {
        self.mutex.acquire(deadline, || LockGuard {
            lock: self,
            process,
            _not_send: PhantomData,
        })
    }

    /// Blocks until the lock is held.
    ///
    /// # Errors
    /// `NotRecoverable`, `Deadlock`, and `OwnerDied` if the previous owner
    /// died holding the lock: the guard is then dropped without repair,
    /// which makes the lock permanently `NotRecoverable` for everyone. To
    /// repair instead, use [`lock_recovering`](Lock::lock_recovering).
    /// `Os` (`Unsupported`) in the child of a raw `clone` system call,
    /// whose thread the C library takes for its parent's: it would own
    /// the lock in its parent's name, and keep it for ever if it died.
    #[inline]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        Ok(self.acquire_with(Deadline::Never)?)
    }

    /// Takes the lock if it is free, else `WouldBlock`.
    ///
    /// # Errors
    /// `WouldBlock`, and those of [`lock`](Lock::lock) (an `OwnerDied`
    /// leaves the lock not recoverable).
    #[inline]
    pub fn try_lock(&self) -> LockResult<LockGuard<'_>> {
        Ok(self.acquire_with(Deadline::Now)?)
    }

    /// Waits at most `timeout` (measured on the monotonic clock) for the lock.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock`](Lock::lock) (an `OwnerDied` leaves
    /// the lock not recoverable).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
        Ok(self.acquire_with(Deadline::after(timeout))?)
    }

    /// Blocks until the lock is held, handing over the guard if the
    /// previous owner died holding it, so that the caller can repair.
    ///
    /// # Errors
    /// [`RecoverableLockError::OwnerDied`](crate::RecoverableLockError::OwnerDied)
    /// with the guard: the caller holds
    /// the lock; repair what it protects, then call
    /// [`LockGuard::make_consistent`] (dropping the guard without that makes
    /// the lock permanently `NotRecoverable`). Otherwise as for
    /// [`lock`](Lock::lock).
    ///
    /// # Example
    /// ```
    /// use multiproc::{Lock, RecoverableLockError};
    /// use multiproc::sync::LockGuard;
    /// let lock = Lock::new()?;
    /// let guard = match lock.lock_recovering() {
    ///     Ok(guard) => guard,
    ///     Err(RecoverableLockError::OwnerDied(guard)) => {
    ///         // ...repair the data the lock protects...
    ///         LockGuard::make_consistent(&guard)?;
    ///         guard
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// };
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn lock_recovering(&self) -> RecoverableLockResult<LockGuard<'_>> {
        self.acquire_with(Deadline::Never)
    }

    /// As [`lock_recovering`](Lock::lock_recovering), waiting at most
    /// `timeout` (monotonic clock).
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock_recovering`](Lock::lock_recovering).
    pub fn lock_recovering_timeout(
        &self,
        timeout: Duration,
    ) -> RecoverableLockResult<LockGuard<'_>> {
        self.acquire_with(Deadline::after(timeout))
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lock { .. }")
    }
}

/// Proof that the calling thread holds a [`Lock`]; releases it when dropped.
#[must_use = "if unused the lock is released at once"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    /// The process that took the lock. A forked descendant has a copy of
    /// the guard, and may get the pid, so the thread id, of that process
    /// once it has died: the copy must not release what the descendant
    /// holds itself then.
    process: ProcessKey,
    // The owner is a thread: the guard must be dropped by the thread that locked.
    _not_send: PhantomData<*const ()>,
}

impl LockGuard<'_> {
    /// Releases the lock, for a guard that is not dropped (kept in a
    /// `ManuallyDrop`), in the process that took it (the caller checked).
    #[inline]
    pub(crate) fn release_in_its_process(&self) {
        // Cannot fail: this thread holds the lock.
        let _ = self.lock.mutex.unlock();
    }

    /// Marks the lock consistent after its previous owner died, once the
    /// caller has repaired the data it protects. A no-op on a lock that
    /// was taken normally.
    ///
    /// # Errors
    /// Only on an OS failure; [`Error::NotOwner`](crate::Error::NotOwner)
    /// for a copy of the guard in a forked descendant.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        if !guard.process.is_current() {
            return Err(crate::Error::NotOwner);
        }
        guard.lock.mutex.make_consistent()
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Cannot fail: this thread holds the lock. A forked copy of the
        // guard releases nothing (see `process`).
        if self.process.is_current() {
            let _ = self.lock.mutex.unlock();
        }
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard { .. }")
    }
}
