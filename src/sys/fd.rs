//! Descriptors of any kind: pipes, reading and writing, and what survives
//! `exec`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{ready_now, recv_nowait, send_nowait, syscall, syscall_count, Ready, SignalsHeld};

/// A pipe: (read end, write end), closed on exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    syscall(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: `pipe2` succeeded, so `fds[0]` is a fresh descriptor that
    // nothing else owns.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as for `fds[0]`; the two are distinct descriptors.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// Runs `write`, writes to a pipe, with SIGPIPE held in the calling
/// thread, so that a pipe whose reader is gone is `EPIPE` only, as
/// `MSG_NOSIGNAL` makes it on a socket, whatever the process does on
/// SIGPIPE: one that gave it its default action back (as command-line
/// programs do, to end quietly in a shell pipeline) died of the write.
/// The SIGPIPE a write raised is taken back before the thread's mask is
/// restored (unless the caller held SIGPIPE already).
fn without_sigpipe<T>(write: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let held = SignalsHeld::new(&[libc::SIGPIPE])?;
    let r = write();
    let broken = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EPIPE));
    if broken && !held.held_before(libc::SIGPIPE) {
        held.discard_pending(libc::SIGPIPE);
    }
    r
}

/// Writes all of `parts` in as few system calls as the kernel allows;
/// `MSG_NOSIGNAL` on sockets, and SIGPIPE held on a pipe, so a closed
/// peer is `EPIPE`, not a signal.
pub(crate) fn write_all_vectored(
    fd: &impl AsRawFd,
    is_socket: bool,
    parts: &[&[u8]],
) -> io::Result<()> {
    if is_socket {
        write_all_parts(fd, true, parts)
    } else {
        without_sigpipe(|| write_all_parts(fd, false, parts))
    }
}

/// [`write_all_vectored`], with SIGPIPE as the caller left it.
fn write_all_parts(fd: &impl AsRawFd, is_socket: bool, parts: &[&[u8]]) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut n = syscall_count(|| {
            if is_socket {
                // SAFETY: `msghdr` is a plain C struct (integers and raw
                // pointers) for which all-zero bytes are a valid value.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = iov.len() as _;
                // SAFETY: `msg` has no name and no control data, and points
                // at `iov`, a valid iovec array (of live `parts`) that
                // outlives the call; sendmsg only reads through it.
                unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) }
            } else {
                // SAFETY: a valid iovec array that outlives the call.
                unsafe {
                    libc::writev(
                        fd.as_raw_fd(),
                        iov.as_ptr(),
                        iov.len().min(1024) as libc::c_int,
                    )
                }
            }
        })?;
        while n > 0 {
            if n >= parts[0].len() {
                n -= parts[0].len();
                parts.remove(0);
            } else {
                parts[0] = &parts[0][n..];
                n = 0;
            }
        }
    }
    Ok(())
}

/// One `read` into possibly uninitialised memory; `Ok(0)` at end of file.
/// The first `n` bytes of `buf` are initialised when it returns `Ok(n)`.
pub(crate) fn read(fd: &impl AsRawFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; read(2) only writes.
    syscall_count(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// One read from a socket or a pipe that does not wait: `WouldBlock` if
/// nothing has arrived. A pipe's `O_NONBLOCK` would change it for every
/// process that holds it, so a pipe is asked with `poll` first (another
/// reader of the same pipe could still take the bytes in between; then
/// this read waits for more). As [`read`], the first `n` bytes are
/// initialised on `Ok(n)`.
pub(crate) fn read_nowait(
    fd: &impl AsRawFd,
    is_socket: bool,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    if is_socket {
        recv_nowait(fd, buf)
    } else if ready_now(fd, Ready::Read)? {
        read(fd, buf)
    } else {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// One write to a socket or a pipe that does not wait (and raises no
/// SIGPIPE): how much was written, `WouldBlock` if nothing
/// could be. A pipe is asked with `poll` first, as in [`read_nowait`];
/// `poll` calls a pipe writable when a page is free, so at most
/// `PIPE_BUF` bytes are written at once, which then never waits.
pub(crate) fn write_nowait(fd: &impl AsRawFd, is_socket: bool, bytes: &[u8]) -> io::Result<usize> {
    if is_socket {
        return send_nowait(fd, bytes);
    }
    if !ready_now(fd, Ready::Write)? {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let n = bytes.len().min(libc::PIPE_BUF);
    without_sigpipe(|| {
        // SAFETY: `bytes` is valid for reads of at least `n` bytes.
        syscall_count(|| unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), n) })
    })
}

/// Whether a descriptor is a socket.
pub(crate) fn is_socket(fd: &impl AsRawFd) -> bool {
    // SAFETY: `stat` is a plain C struct of integers, valid when zeroed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer for the call; a bad
    // descriptor is at worst EBADF.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// Lets descriptor `fd` survive `exec` (clears `FD_CLOEXEC`). Only one
/// system call: usable between `fork` and `exec` (`Command::pre_exec`).
pub(crate) fn keep_on_exec(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; at worst EBADF.
    syscall(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// Marks every descriptor from `first` up close-on-exec. System calls
/// only, no allocation: usable between `fork` and `exec`
/// (`Command::pre_exec`). `close_range` does it in one call (Linux 5.11);
/// before that, one `fcntl` per number below the descriptor limit (the
/// first 2^20 of them).
pub(crate) fn close_on_exec_from(first: u32) -> io::Result<()> {
    // SAFETY: plain syscall; it changes flags only, closes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) {
        return Err(e);
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid pointer.
    syscall(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    for fd in u64::from(first)..limit.rlim_cur.min(1 << 20) {
        // SAFETY: fcntl on a descriptor number; EBADF for one not open.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// `fd`, or a copy of it (closed on exec) numbered 3 or above if it is a
/// standard stream's number (0, 1 or 2, free in a process that closed its
/// streams): a descriptor handed down to a child by number must not be
/// one that the child's standard streams replace.
pub(crate) fn above_standard_streams(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; F_DUPFD_CLOEXEC makes a new one.
    let copy = syscall(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// What descriptor `fd` of this process refers to (`/proc/self/fd`).
pub(crate) fn fd_target(fd: i32) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}
