//! Where shared memory lives: the POSIX shared-memory directory and
//! anonymous memory files.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use super::syscall;

/// Where POSIX shared-memory objects live on Linux (what `shm_open` uses).
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// An anonymous memory file (`memfd_create`), closed on exec.
pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = syscall(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory of POSIX shared-memory objects ([`SHM_DIR`]).
pub(crate) fn shm_dir() -> &'static Path {
    Path::new(SHM_DIR)
}
