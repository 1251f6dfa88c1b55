//! [`Lock`]: a robust, process-shared mutex.

use std::marker::PhantomData;
use std::time::Duration;

use super::RawLock;
use crate::error::{LockResult, Result};
use crate::segment::{ObjectKind, Placement};
use crate::sys::{Deadline, MutexKind};

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
/// If a process dies holding the lock, the next `lock` returns
/// [`LockError::OwnerDied`](crate::LockError::OwnerDied) with a guard: the
/// caller holds the lock, repairs what it protects and calls
/// [`LockGuard::make_consistent`]. If the guard is dropped without that, every
/// later attempt fails with `NotRecoverable`: the data is never silently
/// trusted.
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
    raw: RawLock,
}

impl Lock {
    /// A new anonymous lock, shared with children forked afterwards.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Lock> {
        Self::place(Placement::Anonymous)
    }

    /// Creates a named lock that unrelated processes can [`open`](Lock::open).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) and the errors of
    /// [`Segment::create`](crate::segment::Segment::create).
    pub fn create(name: &str) -> Result<Lock> {
        Self::place(Placement::Create(name))
    }

    /// Opens a named lock.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound), or
    /// [`Error::KindMismatch`](crate::Error::KindMismatch) if the name holds
    /// something else.
    pub fn open(name: &str) -> Result<Lock> {
        Self::place(Placement::Open(name))
    }

    /// Opens a named lock, creating it if it does not exist.
    ///
    /// # Errors
    /// As for [`create`](Lock::create) and [`open`](Lock::open).
    pub fn create_or_open(name: &str) -> Result<Lock> {
        Self::place(Placement::CreateOrOpen(name))
    }

    pub(crate) fn raw(&self) -> &RawLock {
        &self.raw
    }

    fn place(how: Placement<'_>) -> Result<Lock> {
        RawLock::place(how, ObjectKind::Lock, MutexKind::ErrorCheck).map(Self::from_raw)
    }

    pub(crate) fn from_raw(raw: RawLock) -> Lock {
        Lock { raw }
    }

    #[inline]
    pub(crate) fn acquire_with(&self, deadline: Deadline) -> LockResult<LockGuard<'_>> {
        self.raw.acquire(deadline, || LockGuard::new(self))
    }

    /// Blocks until the lock is held.
    ///
    /// # Errors
    /// `OwnerDied` (with the guard), `NotRecoverable`, `Deadlock`.
    #[inline]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        self.acquire_with(Deadline::Never)
    }

    /// Takes the lock if it is free, else `WouldBlock`.
    ///
    /// # Errors
    /// `WouldBlock`, and those of [`lock`](Lock::lock).
    #[inline]
    pub fn try_lock(&self) -> LockResult<LockGuard<'_>> {
        self.acquire_with(Deadline::Now)
    }

    /// Waits at most `timeout` (measured on the monotonic clock) for the lock.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock`](Lock::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
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
    // The owner is a thread: the guard must be dropped by the thread that locked.
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    fn new(lock: &'a Lock) -> Self {
        LockGuard {
            lock,
            _not_send: PhantomData,
        }
    }

    /// Marks the lock consistent after its previous owner died, once the
    /// caller has repaired the data it protects. A no-op on a lock that
    /// was taken normally.
    ///
    /// # Errors
    /// Only on an OS failure.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        guard.lock.raw.make_consistent()
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Cannot fail: this thread holds the lock.
        let _ = self.lock.raw.unlock();
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard { .. }")
    }
}
