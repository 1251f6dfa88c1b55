//! [`RobustMutex`], the handle on a robust mutex in shared memory that
//! [`Lock`](super::Lock), [`RLock`](super::RLock), the cells and the
//! queues are built on.

use std::alloc::Layout;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::error::{Error, RecoverableLockError, RecoverableLockResult, Result};
use crate::segment::Region;
use crate::sys::{self, errno, Acquired, Deadline, MutexKind, PthreadMutex};

/// A process-local handle on a glibc robust, process-shared mutex in shared
/// memory: the untyped lock under every typed one.
#[derive(Clone)]
pub(crate) struct RobustMutex {
    region: Region,
    /// Shared by this handle and its clones (`None` only once dropped):
    /// how many times the mutex was linked into its holder's robust list
    /// through them (a first acquire: a recursive one's later acquires are
    /// not linked again) and not unlinked since through them (a last
    /// release), never below zero. glibc links the mutex at the address
    /// of the handle that locked it, and its holder's next lock or unlock
    /// writes there: the last of these handles to go keeps the mapping if
    /// the mutex is still held, and only if it was linked through them
    /// (another opening, a named object opened again, maps it elsewhere).
    /// A last release through another opening leaves the count up: the
    /// mapping is then kept if the mutex is held again, never freed while
    /// linked.
    holds: Option<Arc<AtomicU32>>,
}

impl Drop for RobustMutex {
    fn drop(&mut self) {
        let locked_here = self
            .holds
            .take()
            .and_then(Arc::into_inner)
            .is_some_and(|holds| holds.into_inner() != 0);
        // SAFETY: `region` keeps the initialised mutex mapped.
        if locked_here && unsafe { sys::mutex_held_in_this_process(self.mutex()) } {
            // Held with no handle left to release it (a guard forgotten,
            // an `RLock::acquire` never released): a link of its holder's
            // robust list, through which glibc writes at the holder's
            // next lock or unlock. Its memory is never unmapped nor given
            // to another object while this process lives.
            std::mem::forget(self.region.clone());
        }
    }
}

impl RobustMutex {
    pub(crate) fn layout() -> Layout {
        Layout::new::<PthreadMutex>()
    }

    /// Initialises a mutex at `at`.
    ///
    /// # Safety
    /// `at` must point to zeroed memory for a `PthreadMutex`, aligned, that
    /// no process uses yet.
    pub(crate) unsafe fn init(at: *mut u8, kind: MutexKind) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { sys::mutex_init(at.cast(), kind) }.map_err(|e| Error::io("pthread_mutex_init", e))
    }

    /// A handle on the mutex at the start of `region`.
    ///
    /// # Safety
    /// `region` starts with a mutex initialised by [`init`](RobustMutex::init):
    /// one this process just made, or one in an object whose kind the
    /// segment header confirmed and whose creator finished initialising it
    /// (the header's ready state).
    pub(crate) unsafe fn from_region(region: Region) -> Self {
        RobustMutex {
            region,
            holds: Some(Arc::new(AtomicU32::new(0))),
        }
    }

    #[inline]
    fn mutex(&self) -> *mut PthreadMutex {
        self.region.as_ptr()
    }

    /// Whether the calling thread, if it holds the mutex, holds it once:
    /// its lock linked it, or its unlock unlinks it. (An error-checking
    /// mutex counts nothing: 0.)
    #[inline]
    pub(crate) fn held_once(&self) -> bool {
        // SAFETY: `region` keeps the initialised mutex mapped.
        unsafe { sys::mutex_recursion(self.mutex()) <= 1 }
    }

    /// Counts a link of the mutex into the calling thread's robust list
    /// through this handle, if the lock just taken made one.
    #[inline]
    fn count_link(&self) {
        if let Some(holds) = self.holds.as_ref().filter(|_| self.held_once()) {
            holds.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Locks, building the guard with `guard` once the lock is held.
    #[inline]
    pub(crate) fn acquire<G>(
        &self,
        deadline: Deadline,
        guard: impl FnOnce() -> G,
    ) -> RecoverableLockResult<G> {
        // SAFETY: `region` keeps the initialised mutex mapped.
        match unsafe { sys::mutex_lock(self.mutex(), deadline) } {
            Ok(Acquired::Clean) => {
                self.count_link();
                Ok(guard())
            }
            Ok(Acquired::OwnerDied) => {
                self.count_link();
                Err(RecoverableLockError::OwnerDied(guard()))
            }
            Err(errno::EBUSY) => Err(RecoverableLockError::WouldBlock),
            Err(errno::ETIMEDOUT) => Err(RecoverableLockError::Timeout),
            Err(errno::ENOTRECOVERABLE) => Err(RecoverableLockError::NotRecoverable),
            Err(errno::EDEADLK) => Err(RecoverableLockError::Deadlock),
            Err(sys::NOT_SET_UP) => Err(RecoverableLockError::Os(not_set_up())),
            Err(e) => Err(RecoverableLockError::Os(io::Error::from_raw_os_error(e))),
        }
    }

    /// Releases the mutex.
    ///
    /// # Errors
    /// [`Error::NotOwner`] if the calling thread does not hold it.
    #[inline(always)]
    pub(crate) fn unlock(&self) -> Result<()> {
        // Read while the caller holds the mutex, if it does (the unlock
        // says so).
        let unlinks = self.held_once();
        // SAFETY: `region` keeps the initialised mutex mapped.
        match unsafe { sys::mutex_unlock(self.mutex()) } {
            Ok(()) => {
                if let Some(holds) = self.holds.as_ref().filter(|_| unlinks) {
                    let _ = holds
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                }
                Ok(())
            }
            Err(errno::EPERM) => Err(Error::NotOwner),
            Err(sys::NOT_SET_UP) => Err(Error::io("pthread_mutex_unlock", not_set_up())),
            Err(e) => Err(Error::io(
                "pthread_mutex_unlock",
                io::Error::from_raw_os_error(e),
            )),
        }
    }

    /// Locks, spinning up to `spins` times while the mutex is held before
    /// blocking on it. For locks held only for a few nanoseconds, where a
    /// futex sleep would cost far more than the wait.
    #[inline]
    pub(crate) fn acquire_spinning<G>(
        &self,
        spins: u32,
        guard: impl FnOnce() -> G,
    ) -> RecoverableLockResult<G> {
        for _ in 0..spins {
            // SAFETY: `region` keeps the initialised mutex mapped.
            if unsafe { sys::mutex_looks_free(self.mutex()) } {
                break;
            }
            std::hint::spin_loop();
        }
        self.acquire(Deadline::Never, guard)
    }

    /// How many times the calling thread holds this (recursive) mutex.
    ///
    /// # Errors
    /// [`Error::NotOwner`] if the calling thread does not hold it.
    pub(crate) fn recursion(&self) -> Result<u32> {
        if self.owner() != Some(sys::gettid()) {
            return Err(Error::NotOwner);
        }
        // SAFETY: `region` keeps the initialised mutex mapped; the check
        // above shows that the calling thread holds it (only the owner
        // could have put its thread id there, and only it can take it out).
        Ok(unsafe { sys::mutex_recursion(self.mutex()) })
    }

    /// The thread that holds the mutex now, if one does and is alive (a
    /// snapshot: only the caller's own id in it stays true).
    pub(crate) fn owner(&self) -> Option<u32> {
        // SAFETY: `region` keeps the initialised (robust) mutex mapped.
        unsafe { sys::mutex_owner(self.mutex()) }
    }

    /// Marks the mutex consistent after an owner died; a no-op otherwise.
    ///
    /// # Errors
    /// [`Error::NotOwner`] if the calling thread does not hold it: glibc
    /// does not check, and would make the caller the owner of a mutex that
    /// another thread holds (whose unlock would then fail for ever).
    pub(crate) fn make_consistent(&self) -> Result<()> {
        if self.owner() != Some(sys::gettid()) {
            return Err(Error::NotOwner);
        }
        // SAFETY: `region` keeps the initialised mutex mapped; the calling
        // thread holds it (checked above).
        match unsafe { sys::mutex_make_consistent(self.mutex()) } {
            // EINVAL: the mutex was already consistent.
            Ok(()) | Err(errno::EINVAL) => Ok(()),
            Err(errno::EPERM) => Err(Error::NotOwner),
            Err(e) => Err(Error::io(
                "pthread_mutex_consistent",
                io::Error::from_raw_os_error(e),
            )),
        }
    }
}

/// The error of a lock or an unlock by a thread the C library did not set up.
fn not_set_up() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "robust locks in a thread that the C library did not set up (the child of a raw clone)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::RLock;

    /// `recursion` answers only the thread that holds the lock.
    #[test]
    #[cfg_attr(miri, ignore = "shared memory and pthread mutexes are outside Miri")]
    fn recursion_is_only_told_to_the_holder() {
        let rlock = RLock::new().unwrap();
        let lock = rlock.mutex();
        assert!(matches!(lock.recursion(), Err(Error::NotOwner)));
        lock.acquire(Deadline::Never, || ()).unwrap();
        lock.acquire(Deadline::Never, || ()).unwrap();
        assert_eq!(lock.recursion().unwrap(), 2);
        std::thread::scope(|s| {
            let other = s.spawn(|| lock.recursion());
            assert!(matches!(other.join().unwrap(), Err(Error::NotOwner)));
        });
        lock.unlock().unwrap();
        assert_eq!(lock.recursion().unwrap(), 1);
        lock.unlock().unwrap();
        assert!(matches!(lock.recursion(), Err(Error::NotOwner)));
    }

    /// A lock waiter woken by an unlock and killed before it took the
    /// lock, while a third thread took it first, takes the lock word's
    /// waiters bit with it: the kernel's clean-up after the dead wakes a
    /// sleeper only if the word is free, and the next unlock, seeing no
    /// waiter, wakes nobody. The other sleepers must not sleep for ever.
    #[test]
    #[cfg_attr(miri, ignore = "shared memory and pthread mutexes are outside Miri")]
    fn a_lock_sleeper_outlives_a_lost_waiters_bit() {
        use crate::sync::futex::testing::woken_after;
        use std::sync::atomic::{AtomicU32, Ordering};
        /// glibc's (and the kernel's) waiters bit of a lock word.
        const FUTEX_WAITERS: u32 = 0x8000_0000;
        let lock = crate::Lock::new().unwrap();
        // SAFETY: the lock word is glibc's first `int` of the mutex,
        // changed only atomically (see `mutex_looks_free`).
        let word = unsafe { &*lock.mutex().mutex().cast::<AtomicU32>() };
        let held = lock.lock().unwrap();
        let woken = woken_after(
            word,
            || drop(lock.lock().unwrap()),
            || {
                word.fetch_and(!FUTEX_WAITERS, Ordering::SeqCst);
                drop(held);
            },
            std::time::Duration::from_secs(10),
        );
        assert!(woken, "a free lock, and its waiter asleep");
    }
}
