//! What a long-lived helper process keeps of its parent's descriptors.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::{pipe, syscall};

/// Makes descriptors `fds` inert, as [`release_inherited`] does: for a
/// forked child, to let go of its copies of descriptors that must end
/// with the parent. Allocates nothing and takes no lock (it runs in a
/// `pthread_atfork` child handler); a failure leaves them as they were.
pub(crate) fn make_inert(fds: impl Iterator<Item = RawFd>) {
    let mut placeholder = None;
    for fd in fds {
        if placeholder.is_none() {
            let Ok((read, write)) = pipe() else {
                return;
            };
            drop(write);
            placeholder = Some(read);
        }
        if let Some(p) = &placeholder {
            // SAFETY: as in `release_inherited`: the descriptor `fd` is
            // replaced under the same number, its owner unchanged.
            unsafe { libc::dup3(p.as_raw_fd(), fd, libc::O_CLOEXEC) };
        }
    }
}

/// Makes every open descriptor of this process, except the standard
/// streams and `keep`, inert: the number stays taken (so that a handle
/// left in memory by the parent can never alias a descriptor opened
/// later), but it now names the read end of an empty pipe with no writer,
/// which reads as end of file and refuses writes.
///
/// A helper process forked from a multithreaded parent (the fork server,
/// the Manager's server) would otherwise hold, for as long as it lives,
/// copies of whatever the parent had open at that instant: among them the
/// end of a pipe that another thread was handing to a child program, whose
/// reader then never sees the end of file. Python's helpers are new
/// programs that inherit only what they are given; this gives ours the same.
///
/// Call it only while this process has one thread (right after a fork).
pub(crate) fn release_inherited(keep: &[RawFd]) -> io::Result<()> {
    let open = candidates();
    let (placeholder, writer) = pipe()?;
    drop(writer);
    let placeholder = placeholder.as_raw_fd();
    for fd in open {
        // SAFETY: F_GETFD reads a descriptor's flags; any number is valid.
        let is_open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
        if fd <= 2 || fd == placeholder || keep.contains(&fd) || !is_open {
            continue;
        }
        // SAFETY: dup3 replaces descriptor `fd` by a copy of the
        // placeholder; whoever owned `fd` now owns the copy, under the same
        // number, so no ownership changes hands (the first sentence above).
        if let Err(e) = syscall(unsafe { libc::dup3(placeholder, fd, libc::O_CLOEXEC) }) {
            if e.raw_os_error() != Some(libc::EBADF) {
                return Err(e);
            }
            // `fd` is at or above a descriptor limit lowered since it was
            // opened: no new descriptor gets its number (while the limit
            // stays), so closing it is as good.
            // SAFETY: as above, the owner (if any) never learns.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// The numbers that may be open descriptors: the listing of
/// `/proc/self/fd` (whose own descriptor is closed again by the time the
/// caller looks, and skipped as not open), or without `/proc` every number
/// below the descriptor limit.
fn candidates() -> Vec<RawFd> {
    if let Ok(listing) = std::fs::read_dir("/proc/self/fd") {
        return listing
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid pointer.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let below = if known {
        limit.rlim_cur.min(1 << 20)
    } else {
        1024
    };
    (0..below as RawFd).collect()
}
