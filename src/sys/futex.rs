//! Futexes, shared between processes (no `FUTEX_PRIVATE_FLAG`).

use std::io;
use std::sync::atomic::AtomicU32;

use super::Deadline;

/// Why a futex wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Woken, the word had changed already, or a signal interrupted the wait:
    /// the caller re-checks its condition either way.
    Maybe,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or `deadline` (absolute,
/// `CLOCK_MONOTONIC`) passes.
#[inline]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> Woke {
    let at = deadline.timespec();
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            timespec_ptr(&at),
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        Woke::TimedOut
    } else {
        Woke::Maybe
    }
}

/// An optional absolute time as a system call takes it: null for none.
fn timespec_ptr(at: &Option<libc::timespec>) -> *const libc::timespec {
    at.as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec)
}

/// What [`futex_waitv`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitvOutcome {
    /// The word at this index was woken.
    Woken(usize),
    /// Some word no longer held its expected value (or could not be read,
    /// or a signal came): the caller looks at all of them again.
    Changed,
    /// The deadline passed.
    TimedOut,
    /// This kernel has no `futex_waitv` (before Linux 5.16).
    Unsupported,
}

/// Sleeps until one of `words` — addresses of 32-bit futex words, each with
/// the value it is expected to hold — is woken or no longer holds its
/// value, or `deadline` passes (`futex_waitv(2)`, Linux 5.16+; at most 128
/// words).
///
/// The kernel reads the words itself: an address that is no longer mapped
/// is an error of the call ([`WaitvOutcome::Changed`]), never a fault in
/// this process, so a stale address is harmless.
pub(crate) fn futex_waitv(words: &[(usize, u32)], deadline: Deadline) -> WaitvOutcome {
    /// `struct futex_waitv` from `<linux/futex.h>`.
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    /// `FUTEX2_SIZE_U32`: 32-bit words, shared between processes.
    const FUTEX2_SIZE_U32: u32 = 0x02;
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|&(addr, val)| FutexWaitv {
            val: u64::from(val),
            uaddr: addr as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let at = deadline.timespec();
    // SAFETY: `waiters` is a valid array of `words.len()` entries for the
    // duration of the call; the kernel only reads the addresses in it (and
    // reports a bad one as EFAULT); the timeout is absolute on
    // CLOCK_MONOTONIC.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            timespec_ptr(&at),
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return WaitvOutcome::Woken(r as usize);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => WaitvOutcome::TimedOut,
        Some(libc::ENOSYS) => WaitvOutcome::Unsupported,
        _ => WaitvOutcome::Changed,
    }
}

/// Wakes at most `n` processes sleeping on `word`; returns how many woke.
#[inline]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    r.max(0) as u32
}
