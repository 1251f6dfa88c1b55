//! POSIX semaphores shared between processes (glibc's `sem_t`): the
//! benchmark's baseline for the crate's own semaphore.

// For src/baseline.rs, which still calls `libc` itself and switches to these.
#![allow(dead_code)]

use std::io;

use super::syscall;

/// The state of a process-shared POSIX semaphore in shared memory.
pub(crate) type PosixSem = libc::sem_t;

/// Initialises a process-shared semaphore holding `value` in place.
///
/// # Safety
/// `s` must point to writable memory for a `PosixSem`, aligned, that no
/// process is using as a semaphore yet.
pub(crate) unsafe fn sem_init(s: *mut PosixSem, value: u32) -> io::Result<()> {
    // SAFETY: `s` is valid per the caller; 1 makes it process-shared.
    syscall(unsafe { libc::sem_init(s, 1, value) }).map(drop)
}

/// Takes one from a semaphore, waiting while it is zero.
///
/// # Safety
/// `s` must point to a semaphore initialised by [`sem_init`] that stays
/// mapped for the duration of the call.
#[inline]
pub(crate) unsafe fn sem_wait(s: *mut PosixSem) -> io::Result<()> {
    // SAFETY: `s` is a live initialised semaphore per the caller.
    syscall(unsafe { libc::sem_wait(s) }).map(drop)
}

/// Gives one back to a semaphore, waking a waiter.
///
/// # Safety
/// As for [`sem_wait`].
#[inline]
pub(crate) unsafe fn sem_post(s: *mut PosixSem) -> io::Result<()> {
    // SAFETY: `s` is a live initialised semaphore per the caller.
    syscall(unsafe { libc::sem_post(s) }).map(drop)
}
