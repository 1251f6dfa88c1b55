//! Event descriptors: a counter in the kernel that one thread or process
//! can wait on and another can bump.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{syscall, syscall_retrying};

/// A new blocking `eventfd` (counter 0), inherited by forked children
/// (closed on exec).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = syscall(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter.
pub(crate) fn eventfd_write(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Blocks until an eventfd's counter is non-zero, and resets it.
pub(crate) fn eventfd_read(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // Only an interruption is retried; an eventfd read fails for no other
    // reason that waiting again would cure.
    // SAFETY: reads 8 bytes into a valid u64.
    let _ =
        syscall_retrying(|| unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) });
}
