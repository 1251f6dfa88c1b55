//! The system's memory: reserving a memory file's backing store, how
//! much the system can still give, and anonymous mappings.

use std::io;
use std::os::fd::AsRawFd;

use super::errno_result;

/// A new zeroed anonymous mapping of `len` bytes, page-aligned, shared
/// with the children forked after it (`MAP_SHARED`) or copied into them
/// (`MAP_PRIVATE`); `None` if the system gives none.
pub(crate) fn map_anonymous(len: usize, shared: bool) -> Option<*mut libc::c_void> {
    let sharing = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    // SAFETY: a new anonymous mapping, at an address of the kernel's
    // choice; no existing memory changes.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            sharing | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p)
}

/// Allocates the backing memory of `fd` up to `len` bytes now, so that a full
/// tmpfs is an error here and never a `SIGBUS` on first touch later.
///
/// A large request is first checked against the memory the system can
/// still give (`MemAvailable` plus free swap): an anonymous segment's file
/// has no size limit of its own, and reserving more than there is would
/// drive the machine into the OOM killer instead of failing (`ENOMEM`).
pub(crate) fn reserve(fd: &impl AsRawFd, len: usize) -> io::Result<()> {
    /// Below this, the check costs more than it could save.
    const CHECKED_FROM: usize = 64 << 20;
    if len >= CHECKED_FROM && memory_available().is_some_and(|avail| len as u64 > avail) {
        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
    }
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    if past_file_size_limit(len as u64) {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    }
    loop {
        // SAFETY: plain syscall on a descriptor we own; it returns an errno value.
        match errno_result(unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Whether a file of `len` bytes is larger than this process may make
/// (`RLIMIT_FSIZE`). Reserving it would fail with `EFBIG` and also send
/// the thread a `SIGXFSZ`, whose default action kills the process
/// (Python ignores `SIGXFSZ` from its start; Rust does not): such a
/// reservation is not tried, so that it is an error and nothing else.
fn past_file_size_limit(len: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the `rlimit` it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } == 0;
    read && limit.rlim_cur != libc::RLIM_INFINITY && len > limit.rlim_cur
}

/// The bytes of memory the system can still give: `MemAvailable` plus
/// `SwapFree` from `/proc/meminfo`; `None` if that cannot be read.
fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    };
    Some(field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_available_is_read_and_plausible() {
        let avail = super::memory_available().expect("/proc/meminfo");
        assert!(avail > 1 << 20 && avail < 1 << 50, "{avail}");
    }
}
