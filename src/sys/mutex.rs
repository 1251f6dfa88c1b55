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
/// What [`mutex_lock`] and [`mutex_unlock`] answer in a thread that the C
/// library did not set up ([`libc_set_up`](super::libc_set_up): the child
/// of a raw `clone`, whose thread glibc takes for its parent's), never
/// calling glibc: it would own the mutex in its parent's name (which could
/// then release it, or find it its own), and the kernel, with no robust
/// list for it, would leave it held for ever once it died.
pub(crate) const NOT_SET_UP: libc::c_int = libc::ENOTSUP;

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
    // glibc's try on a mutex that is not recoverable leaves its lock word
    // taken (see `undo_unrecoverable_try`), and a kill before that is
    // undone would leave it so for good: such a mutex is not tried.
    // SAFETY: `m` is a live initialised mutex per the caller.
    let owner = unsafe { glibc_word(m, OWNER_OFFSET) };
    if owner.load(Ordering::Acquire) == NOT_RECOVERABLE {
        return Err(libc::ENOTRECOVERABLE);
    }
    if !super::libc_set_up() {
        return Err(NOT_SET_UP);
    }
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
    // A deadline that has passed (a zero timeout) is not slept on: a
    // sleep until a time already past lasts the thread's timer slack.
    let Some(mut slice) = deadline.next_sleep(LOCK_RECHECK) else {
        return Err(libc::ETIMEDOUT);
    };
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
            libc::ETIMEDOUT => match deadline.next_sleep(LOCK_RECHECK) {
                Some(next) => slice = next,
                None => return Err(libc::ETIMEDOUT),
            },
            e => return Err(e),
        }
    }
}

/// Where glibc's mutex keeps its `int`s, in bytes: `struct
/// __pthread_mutex_s` begins with `int __lock; unsigned __count; int
/// __owner` on every Linux ABI.
const LOCK_OFFSET: usize = 0;
const COUNT_OFFSET: usize = 4;
const OWNER_OFFSET: usize = 8;
/// glibc's `__owner` of a mutex that is not recoverable
/// (`PTHREAD_MUTEX_NOTRECOVERABLE`, `INT_MAX - 1`; `INT_MAX` is one held
/// after its owner died, not yet made consistent).
const NOT_RECOVERABLE: u32 = 0x7fff_fffe;
/// The lock word's bits, the kernel's robust-futex ABI
/// (`Documentation/locking/robust-futex-ABI.rst`): the owner's thread id
/// in the low 30 bits, bit 30 set by the kernel when the owner died, bit
/// 31 when others wait.
const FUTEX_WAITERS: u32 = 1 << 31;
const FUTEX_OWNER_DIED: u32 = 1 << 30;
const FUTEX_TID_MASK: u32 = FUTEX_OWNER_DIED - 1;

/// The aligned `int` of glibc's mutex `m` at byte `offset` (one of the
/// offsets above), which glibc and the kernel change only atomically
/// (`__count`: only its owner, which reads it too).
///
/// # Safety
/// As for [`mutex_lock`], for as long as the reference is used.
unsafe fn glibc_word<'a>(m: *mut PthreadMutex, offset: usize) -> &'a AtomicU32 {
    const { assert!(OWNER_OFFSET + 4 <= std::mem::size_of::<PthreadMutex>()) };
    // `wrapping_add` stays inside the mutex (the assertion above).
    let word = m.cast::<u8>().wrapping_add(offset).cast::<AtomicU32>();
    // SAFETY: `m` is a live mutex per the caller, and `word` one of its
    // 4-byte aligned `int`s.
    unsafe { &*word }
}

/// After `pthread_mutex_trylock` said `ENOTRECOVERABLE` (the mutex became
/// not recoverable after `mutex_lock` looked): glibc's try takes the lock
/// word before it looks at the owner, and leaves it taken by the caller
/// (its timed lock gives it back), so that every later lock would wait for
/// ever (or be `EDEADLK` in this thread). Gives the word back as glibc's
/// unlock does, if it is the caller's.
///
/// # Safety
/// As for [`mutex_lock`].
unsafe fn undo_unrecoverable_try(m: *mut PthreadMutex) {
    // SAFETY: as for this function.
    let word = unsafe { glibc_word(m, LOCK_OFFSET) };
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
    if !super::libc_set_up() {
        return Err(NOT_SET_UP);
    }
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
    // SAFETY: as for this function.
    unsafe { glibc_word(m, LOCK_OFFSET) }.load(Ordering::Relaxed) == 0
}

/// How many times the calling thread holds a recursive mutex that it owns
/// (glibc's `__count`, the second `int` of `pthread_mutex_t`): only its
/// holder can trust the answer (another thread reads a count that its
/// owner may be changing).
///
/// # Safety
/// As for [`mutex_lock`].
pub(crate) unsafe fn mutex_recursion(m: *mut PthreadMutex) -> u32 {
    // SAFETY: as for this function; the word is read atomically (only the
    // owner writes `__count`, atomically or while no other thread looks).
    unsafe { glibc_word(m, COUNT_OFFSET) }.load(Ordering::Relaxed)
}

/// The thread that a robust mutex's lock word names as its owner: `None`
/// if it is free or its owner died (see [`FUTEX_TID_MASK`]).
///
/// # Safety
/// As for [`mutex_lock`]; the mutex is robust (every [`mutex_init`] one is).
pub(crate) unsafe fn mutex_owner(m: *mut PthreadMutex) -> Option<u32> {
    // SAFETY: as for this function.
    let word = unsafe { glibc_word(m, LOCK_OFFSET) }.load(Ordering::Acquire);
    let tid = word & FUTEX_TID_MASK;
    (tid != 0 && word & FUTEX_OWNER_DIED == 0).then_some(tid)
}

/// Whether a live thread of this process holds the robust mutex `m`. It
/// is then a link of that thread's robust list, which glibc threads
/// through the mutexes themselves: the thread's next lock or unlock of a
/// robust mutex writes into its neighbours on the list, and the kernel
/// reads the list when the thread ends.
///
/// # Safety
/// As for [`mutex_lock`].
pub(crate) unsafe fn mutex_held_in_this_process(m: *mut PthreadMutex) -> bool {
    // SAFETY: as for this function.
    let Some(tid) = (unsafe { mutex_owner(m) }) else {
        return false;
    };
    tid == gettid() || {
        let pid = super::getpid() as libc::pid_t;
        // Signal 0 sends nothing: the call only says whether `tid` is a
        // thread of this process.
        // SAFETY: tgkill takes no pointers.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid as libc::pid_t, 0) == 0 }
    }
}

/// Whether the C library set the calling thread up as the kernel knows
/// it, as it does every thread it starts and the child of every fork it
/// makes: its robust list registered with the kernel, and its own thread
/// id cached, which the C library's mutexes record as their owner. The
/// child of a raw `clone` system call is not: its mutexes would name its
/// parent's thread as their owner (which could then unlock them, or find
/// them its own), and the kernel would not mark them when it dies (they
/// would stay held for ever).
pub(super) fn thread_set_up_by_libc() -> bool {
    let mut head = std::ptr::null_mut::<libc::c_void>();
    let mut len: libc::size_t = 0;
    // SAFETY: pid 0 is the calling thread; the call writes only the two
    // out-parameters.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut *mut libc::c_void,
            &mut len as *mut libc::size_t,
        )
    };
    if rc == 0 && head.is_null() {
        return false;
    }
    // Where the C library's id cannot be had, nothing says it is wrong.
    libc_thread_id().is_none_or(|id| id == gettid())
}

/// The calling thread's id as the C library records it in the mutexes it
/// takes (glibc's `__owner` of an error-checking mutex, which it keeps
/// from its cached id of the thread, never asking the kernel); `None` if
/// such a mutex cannot be made.
fn libc_thread_id() -> Option<u32> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let a = attr.as_mut_ptr();
    // SAFETY: `a` points to writable storage for an attribute object.
    errno_result(unsafe { libc::pthread_mutexattr_init(a) }).ok()?;
    // A mutex of this thread's own, private, never moved while in use.
    // SAFETY: a zeroed `pthread_mutex_t` is plain bytes, initialised below.
    let mut mutex: PthreadMutex = unsafe { std::mem::zeroed() };
    let m: *mut PthreadMutex = &mut mutex;
    // SAFETY: `a` is an initialised attribute object.
    let made = unsafe { libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK) } == 0
        // SAFETY: as above; `m` is valid, unused memory for a mutex.
        && unsafe { libc::pthread_mutex_init(m, a) } == 0;
    // SAFETY: initialised above, not used after this.
    unsafe { libc::pthread_mutexattr_destroy(a) };
    if !made {
        return None;
    }
    // SAFETY: `m` is an initialised mutex that only this thread uses.
    let id = (unsafe { libc::pthread_mutex_lock(m) } == 0).then(|| {
        // SAFETY: as above; this thread holds it.
        let id = unsafe { glibc_word(m, OWNER_OFFSET) }.load(Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { libc::pthread_mutex_unlock(m) };
        id
    });
    // SAFETY: initialised above and free.
    unsafe { libc::pthread_mutex_destroy(m) };
    id
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mutex that is not recoverable: every lock says so at once and
    /// none leaves the lock word taken; and glibc's own try, which does
    /// leave it taken (the race `mutex_lock`'s look cannot close), is
    /// undone by `undo_unrecoverable_try`.
    #[test]
    #[cfg_attr(miri, ignore = "pthread mutexes are outside Miri")]
    fn a_mutex_not_recoverable_is_never_left_taken() {
        for kind in [MutexKind::ErrorCheck, MutexKind::Recursive] {
            // SAFETY: a zeroed `pthread_mutex_t` is plain bytes, then
            // initialised before any use; boxed, it stays where it is.
            let mut boxed: Box<PthreadMutex> = Box::new(unsafe { std::mem::zeroed() });
            let m: *mut PthreadMutex = &mut *boxed;
            // SAFETY: `m` is valid, writable and unused.
            unsafe { mutex_init(m, kind) }.unwrap();
            let addr = m as usize;
            // A thread that ends holding it: its owner dies.
            std::thread::spawn(move || {
                // SAFETY: the mutex lives until the end of the test.
                let got = unsafe { mutex_lock(addr as *mut PthreadMutex, Deadline::Never) };
                assert_eq!(got, Ok(Acquired::Clean));
            })
            .join()
            .unwrap();
            let lock = |deadline| {
                // SAFETY: `m` is live and initialised.
                unsafe { mutex_lock(m, deadline) }
            };
            // SAFETY: as above.
            let free = || unsafe { mutex_looks_free(m) };
            // SAFETY: as above.
            let owner = || unsafe { glibc_word(m, OWNER_OFFSET) }.load(Ordering::Acquire);
            assert_eq!(lock(Deadline::Never), Ok(Acquired::OwnerDied));
            // Held after its owner died: not yet "not recoverable".
            assert_ne!(owner(), NOT_RECOVERABLE);
            // Released unrepaired: not recoverable (glibc's mark, which
            // `mutex_lock` looks at before it tries).
            // SAFETY: as above; this thread holds it.
            assert_eq!(unsafe { mutex_unlock(m) }, Ok(()));
            assert_eq!(owner(), NOT_RECOVERABLE);
            for deadline in [Deadline::Now, Deadline::Never] {
                assert_eq!(lock(deadline), Err(libc::ENOTRECOVERABLE));
                assert!(free());
            }
            // SAFETY: as above.
            let tried = unsafe { libc::pthread_mutex_trylock(m) };
            assert_eq!(tried, libc::ENOTRECOVERABLE);
            assert!(!free(), "glibc's try took the word");
            // SAFETY: as above.
            unsafe { undo_unrecoverable_try(m) };
            assert!(free());
            let a_second = Deadline::after(std::time::Duration::from_secs(1));
            assert_eq!(lock(a_second), Err(libc::ENOTRECOVERABLE));
        }
    }
}
