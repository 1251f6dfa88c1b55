//! Robust, process-shared mutexes (glibc's `pthread_mutex_t`).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{errno_result, Deadline};

extern "C" {
    // glibc >= 2.30; not yet in the libc crate.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The state of a process-shared mutex as stored in shared memory.
pub(crate) type PthreadMutex = libc::pthread_mutex_t;

/// How a mutex behaves when its owner locks it again.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MutexKind {
    /// Relocking by the owner fails with `EDEADLK` instead of hanging.
    ErrorCheck,
    /// Relocking by the owner nests; unlocking by anyone else fails with `EPERM`.
    Recursive,
}

/// What a successful lock call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The mutex was free or released normally.
    Clean,
    /// The previous owner died holding it; the caller holds it now.
    OwnerDied,
}

/// Initialises a robust, process-shared mutex in place.
///
/// # Safety
/// `m` must point to writable memory for a `PthreadMutex` that no process is
/// using as a mutex yet.
pub(crate) unsafe fn mutex_init(m: *mut PthreadMutex, kind: MutexKind) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let a = attr.as_mut_ptr();
    // SAFETY: `a` points to writable storage for an attribute object, which
    // this call initialises.
    errno_result(unsafe { libc::pthread_mutexattr_init(a) })?;
    let kind = match kind {
        MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
        MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
    };
    // Every call in here uses `a` between its init above and its destroy below.
    let r = (|| {
        // SAFETY: `a` is an initialised attribute object (see above).
        errno_result(unsafe {
            libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED)
        })?;
        // SAFETY: as above.
        errno_result(unsafe { libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST) })?;
        // SAFETY: as above.
        errno_result(unsafe { libc::pthread_mutexattr_settype(a, kind) })?;
        // SAFETY: `m` points to writable memory for a mutex that no process
        // uses yet (the caller's contract); `a` is initialised.
        errno_result(unsafe { libc::pthread_mutex_init(m, a) })
    })();
    // SAFETY: `a` was initialised above and is not used after this; the
    // mutex initialised from it does not refer to it.
    unsafe { libc::pthread_mutexattr_destroy(a) };
    r
}

/// Locks a robust mutex. Errors carry the errno: `EBUSY` (would block),
/// `ETIMEDOUT`, `ENOTRECOVERABLE`, `EDEADLK`.
///
/// # Safety
/// `m` must point to a mutex initialised by [`mutex_init`] that stays mapped
/// for the duration of the call.
#[inline]
pub(crate) unsafe fn mutex_lock(
    m: *mut PthreadMutex,
    deadline: Deadline,
) -> Result<Acquired, libc::c_int> {
    // The first attempt is glibc's try, its fast path: a free mutex is
    // taken at once (the timed lock below costs several nanoseconds more
    // for the same, `lock_uncontended` in the bench).
    // SAFETY: `m` is a live initialised mutex per the caller.
    match unsafe { libc::pthread_mutex_trylock(m) } {
        0 => return Ok(Acquired::Clean),
        libc::EOWNERDEAD => return Ok(Acquired::OwnerDied),
        libc::EBUSY if deadline.may_wait() => {}
        libc::ENOTRECOVERABLE => {
            // SAFETY: as above.
            unsafe { undo_unrecoverable_try(m) };
            return Err(libc::ENOTRECOVERABLE);
        }
        e => return Err(e),
    }
    let mut slice = deadline.capped(LOCK_RECHECK);
    loop {
        let t = slice.timespec().expect("a slice ends");
        // SAFETY: `m` is a live initialised mutex per the caller; `t`
        // outlives the call, which only reads it.
        match unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &t) } {
            0 => return Ok(Acquired::Clean),
            libc::EOWNERDEAD => return Ok(Acquired::OwnerDied),
            // A sleep on the lock lasts at most `LOCK_RECHECK`: a waiter
            // woken by an unlock and killed before it took the lock, while
            // another thread took it first, takes the word's waiters bit
            // with it (the kernel's clean-up after the dead wakes a sleeper
            // only when the word is free), and the next unlock then wakes
            // none of the sleepers left. Trying again sets the bit again.
            libc::ETIMEDOUT if !deadline.passed() => slice = deadline.capped(LOCK_RECHECK),
            e => return Err(e),
        }
    }
}

/// After `pthread_mutex_trylock` said `ENOTRECOVERABLE`: glibc's try on a
/// robust mutex that is not recoverable takes the lock word before it
/// looks, and leaves it taken by the caller (its timed lock gives it
/// back), so that every later lock would wait for ever (or be `EDEADLK`
/// in this thread). Gives the word back as glibc's unlock does, if it is
/// the caller's.
///
/// # Safety
/// As for [`mutex_lock`].
unsafe fn undo_unrecoverable_try(m: *mut PthreadMutex) {
    /// glibc's (and the kernel's) bits of a robust lock word.
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
    // SAFETY: glibc's mutex begins with its lock word, an aligned `int`
    // that every party changes atomically; `m` is live per the caller.
    let word = unsafe { &*(m.cast::<AtomicU32>()) };
    let taken = word.load(Ordering::Acquire);
    if taken & FUTEX_TID_MASK == gettid()
        && word
            .compare_exchange(taken, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        && taken & FUTEX_WAITERS != 0
    {
        super::futex_wake(word, 1);
    }
}

/// The longest a lock waiter sleeps without trying the lock again.
const LOCK_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Unlocks a mutex; `EPERM` if the caller does not own it.
///
/// # Safety
/// As for [`mutex_lock`].
#[inline]
pub(crate) unsafe fn mutex_unlock(m: *mut PthreadMutex) -> Result<(), libc::c_int> {
    // SAFETY: `m` is a live initialised mutex per the caller.
    match unsafe { libc::pthread_mutex_unlock(m) } {
        0 => Ok(()),
        e => Err(e),
    }
}

/// Whether a mutex looks free right now (glibc's `__lock` word, the first
/// `int` of `pthread_mutex_t`, is zero): for spinning before locking.
///
/// # Safety
/// As for [`mutex_lock`].
#[inline]
pub(crate) unsafe fn mutex_looks_free(m: *mut PthreadMutex) -> bool {
    // SAFETY: the lock word is an aligned int that glibc only changes
    // atomically; reading it atomically is race-free.
    unsafe { (*m.cast::<AtomicU32>()).load(std::sync::atomic::Ordering::Relaxed) == 0 }
}

/// How many times the calling thread holds a recursive mutex that it owns
/// (glibc's `__count`, the second `int` of `pthread_mutex_t`).
///
/// # Safety
/// As for [`mutex_lock`], and the calling thread holds the mutex.
pub(crate) unsafe fn mutex_recursion(m: *mut PthreadMutex) -> u32 {
    // SAFETY: glibc's pthread_mutex_t starts with `int __lock; unsigned int
    // __count;` on every Linux ABI, so one `u32` past its start is still
    // inside the mutex `m` points to.
    let count = unsafe { m.cast::<u32>().add(1) };
    // SAFETY: `count` is glibc's aligned `__count` in a live mutex (the
    // caller's contract); only the owner writes it, and the caller is the
    // owner, so the read does not race.
    unsafe { count.read_volatile() }
}

/// The thread that a robust mutex's lock word names as its owner: `None`
/// if it is free or its owner died. The word is the kernel's robust-futex
/// ABI (`Documentation/locking/robust-futex-ABI.rst`): the owner's thread id
/// in the low 30 bits, bit 30 set by the kernel when the owner died, bit 31
/// when others wait.
///
/// # Safety
/// As for [`mutex_lock`]; the mutex is robust (every [`mutex_init`] one is).
pub(crate) unsafe fn mutex_owner(m: *mut PthreadMutex) -> Option<u32> {
    const OWNER_DIED: u32 = 1 << 30;
    const TID_MASK: u32 = OWNER_DIED - 1;
    // SAFETY: as in `mutex_looks_free`: glibc and the kernel change the
    // lock word only atomically.
    let word = unsafe { (*m.cast::<AtomicU32>()).load(std::sync::atomic::Ordering::Acquire) };
    let tid = word & TID_MASK;
    (tid != 0 && word & OWNER_DIED == 0).then_some(tid)
}

/// The calling thread's id, as robust mutexes record their owner.
pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Marks a mutex whose owner died as consistent again.
///
/// # Safety
/// As for [`mutex_lock`], and the caller holds the mutex.
pub(crate) unsafe fn mutex_make_consistent(m: *mut PthreadMutex) -> Result<(), libc::c_int> {
    // SAFETY: `m` is a live initialised mutex held by the caller.
    match unsafe { libc::pthread_mutex_consistent(m) } {
        0 => Ok(()),
        e => Err(e),
    }
}
