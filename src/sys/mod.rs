//! Thin wrappers over the operating system: the one place that knows which OS
//! this is. Everything above calls these functions and never `libc` directly
//! for anything platform-specific.
//!
//! One file per mechanism: [`mutex`] (robust process-shared mutexes),
//! [`futex`] (futex waits and wakes), [`eventfd`](mod@eventfd),
//! [`process`] (fork, pidfds, signals, exit), [`loader`] (which loaded
//! object holds an address), [`fd`] (pipes and reading and writing any
//! descriptor), [`descriptors`] (what a helper process keeps of its
//! parent's descriptors), [`socket`] (Unix sockets and descriptor passing),
//! [`poll`](mod@poll), [`shm`] (where shared memory lives, memory files),
//! [`memory`] (reserving memory the system can give), [`random`], [`errno`]
//! (the error numbers callers match on) and [`deadline`] (the clock and how
//! long a call may wait).
//!
//! A system call that reports failure as `-1` and `errno` goes through
//! [`syscall`] (or [`syscall_retrying`] when `EINTR` means "again",
//! [`syscall_count`] for a byte count); one
//! that returns the error number itself (the `pthread_*` family) through
//! [`errno_result`]. The `unsafe` block stays at each call, with its
//! `SAFETY` comment.

use std::io;

mod deadline;
#[cfg(target_os = "linux")]
mod descriptors;
#[cfg(target_os = "linux")]
pub(crate) mod errno;
#[cfg(target_os = "linux")]
mod eventfd;
#[cfg(target_os = "linux")]
mod fd;
#[cfg(target_os = "linux")]
mod futex;
#[cfg(target_os = "linux")]
mod held;
#[cfg(target_os = "linux")]
mod loader;
#[cfg(target_os = "linux")]
mod memory;
#[cfg(target_os = "linux")]
mod mutex;
#[cfg(target_os = "linux")]
mod poll;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod random;
#[cfg(target_os = "linux")]
mod shm;
#[cfg(target_os = "linux")]
mod socket;

pub(crate) use deadline::Deadline;
#[cfg(target_os = "linux")]
pub(crate) use descriptors::{make_inert, release_inherited};
#[cfg(target_os = "linux")]
pub(crate) use {
    eventfd::*, fd::*, futex::*, held::*, loader::*, memory::*, mutex::*, poll::*, process::*,
    random::*, shm::*, socket::*,
};

#[cfg(not(target_os = "linux"))]
compile_error!("multiproc supports Linux only for now; OS specifics live in src/sys");

/// The return value of a system call whose failure is a negative value
/// (`-1`) with the reason in `errno`: `int`, `ssize_t` or `long`.
trait SyscallReturn: Copy {
    fn is_error(self) -> bool;
}

macro_rules! impl_syscall_return {
    ($($t:ty),*) => {$(
        impl SyscallReturn for $t {
            #[inline]
            fn is_error(self) -> bool {
                self < 0
            }
        }
    )*};
}

impl_syscall_return!(i32, i64, isize);

/// A system call's return value as a result: `Err` with `errno` when it is
/// negative, else the value (mio's `syscall!` as a function, so that each
/// `unsafe` block and its `SAFETY` comment stay visible at the call).
#[inline]
fn syscall<T: SyscallReturn>(r: T) -> io::Result<T> {
    if r.is_error() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`syscall`] for a call that is made again when a signal interrupted it.
#[inline]
fn syscall_retrying<T: SyscallReturn>(mut call: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match syscall(call()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// [`syscall_retrying`] for a call that returns a count of bytes
/// (`ssize_t`).
#[inline]
fn syscall_count(call: impl FnMut() -> isize) -> io::Result<usize> {
    syscall_retrying(call).map(|n| n as usize)
}

/// The result of a call that returns the error number itself, 0 for
/// success (the `pthread_*` functions, `posix_fallocate`).
#[inline]
fn errno_result(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    #[test]
    fn syscall_turns_a_negative_return_into_errno() {
        assert_eq!(super::syscall(3i32).unwrap(), 3);
        // SAFETY: close of a descriptor number that cannot be open.
        let e = super::syscall(unsafe { libc::close(-1) }).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let mut calls = 0;
        let n = super::syscall_count(|| {
            calls += 1;
            if calls < 3 {
                // SAFETY: __errno_location cannot fail.
                let errno = unsafe { libc::__errno_location() };
                // SAFETY: it points at this thread's errno, which this sets,
                // as an interrupted call does.
                unsafe { *errno = libc::EINTR };
                -1
            } else {
                7
            }
        });
        assert_eq!((n.unwrap(), calls), (7, 3));
        assert_eq!(
            super::errno_result(libc::EBUSY).unwrap_err().kind(),
            io::Error::from_raw_os_error(libc::EBUSY).kind()
        );
    }
}
