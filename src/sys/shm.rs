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

/// How a named segment's file is locked (`flock(2)`, advisory): shared
/// by processes opening it, while they record themselves; exclusive by
/// one that removes its name, from its last look until the removal.
#[derive(Clone, Copy)]
pub(crate) enum FileLock {
    Shared,
    Exclusive,
}

/// Tries to take `how` on the file behind `fd` without waiting: false if
/// another process holds a lock that conflicts, an error if the file
/// takes no lock. It is let go of by [`unlock_file`], or when the last
/// descriptor of that opening of the file closes.
pub(crate) fn try_lock_file(fd: &impl std::os::fd::AsRawFd, how: FileLock) -> io::Result<bool> {
    let op = match how {
        FileLock::Shared => libc::LOCK_SH,
        FileLock::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: flock takes any descriptor; at worst it fails.
    match syscall(unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lets go of the lock that [`try_lock_file`] took on `fd`'s file.
pub(crate) fn unlock_file(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: as above.
    unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
}

/// The directory of POSIX shared-memory objects ([`SHM_DIR`]).
pub(crate) fn shm_dir() -> &'static Path {
    Path::new(SHM_DIR)
}

/// Whether `fd` is a memory file of at least `len` bytes whose size no
/// one can shrink any more (sealed with `F_SEAL_SHRINK`), so that a mapping
/// of its first `len` bytes never faults: what a process checks before it
/// maps a memory file a peer handed it.
pub(crate) fn is_sealed_at_least(fd: &impl std::os::fd::AsRawFd, len: usize) -> bool {
    // SAFETY: plain fcntl on a descriptor the caller owns.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
        return false;
    }
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer it is given.
    if unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it initialised `stat`.
    let size = unsafe { stat.assume_init() }.st_size;
    u64::try_from(size).is_ok_and(|size| size >= len as u64)
}

/// An anonymous memory file of `len` bytes (closed on exec) whose size is
/// sealed: whoever it is passed to can write it but never shrink or grow
/// it, so that the process that maps it never meets a `SIGBUS` from a
/// peer's `ftruncate` (the manager's fast-path areas).
pub(crate) fn sealed_memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = syscall(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    super::reserve(&fd, len)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on a descriptor we own.
    syscall(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}
