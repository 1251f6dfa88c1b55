//! Unix sockets: pairs, a listener, sending and receiving (with attached
//! descriptors), a signal when a client connects, and what a failed
//! `accept` means.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{syscall, syscall_count};

/// Ends a socket's sending direction for every descriptor that shares it
/// (those of forked children included): its peer reads end of file.
pub(crate) fn shutdown_write(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor the caller holds open.
    syscall(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

/// A connected pair of Unix stream sockets, closed on exec.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    unix_pair(libc::SOCK_STREAM)
}

/// A connected pair of Unix sequenced-packet sockets, closed on exec: each
/// send arrives as one message, whole, even from several senders at once.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    unix_pair(libc::SOCK_SEQPACKET)
}

fn unix_pair(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    syscall(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `bytes` (at least one) with copies of `fds` attached
/// (`SCM_RIGHTS`) on a Unix socket, in one `sendmsg`; a short send is an error.
pub(crate) fn send_with_fds(
    socket: &impl AsRawFd,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let data_len = std::mem::size_of_val(raw.as_slice()) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    // u64 elements: aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: a zeroed msghdr pointing at one iovec and at a control buffer
    // of `space` bytes, both alive for the call; when descriptors are
    // attached, the one cmsghdr and its data fit in that buffer (CMSG_SPACE).
    let n = syscall_count(|| unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &iov as *const libc::iovec as *mut libc::iovec;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast(), raw.len());
        }
        libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    })?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// One `recvmsg` on a Unix socket into `buf`, taking up to `max_fds`
/// attached descriptors (closed on exec): the byte count (0 at end of file)
/// and the descriptors. `wait: false` returns `WouldBlock` if nothing has
/// arrived. More descriptors than `max_fds` is an error (the extra ones are
/// closed by the kernel).
pub(crate) fn recv_with_fds(
    socket: &impl AsRawFd,
    buf: &mut [u8],
    max_fds: usize,
    wait: bool,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let data_len = (max_fds * std::mem::size_of::<i32>()) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let flags = libc::MSG_CMSG_CLOEXEC | if wait { 0 } else { libc::MSG_DONTWAIT };
    // SAFETY: `msg` points at `buf` and `control`, alive and writable for
    // the call; recvmsg only writes within their lengths.
    let n = syscall_count(|| unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) })?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg.msg_control` with well-formed cmsghdrs
    // up to `msg_controllen`; the CMSG macros walk within it, and each
    // SCM_RIGHTS payload holds `(cmsg_len - CMSG_LEN(0)) / 4` descriptors
    // that the kernel installed for this process alone.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<i32>();
                let data = libc::CMSG_DATA(cmsg).cast::<i32>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("more descriptors attached than expected"));
    }
    Ok((n, fds))
}

/// One `recv` from a socket that does not wait: `WouldBlock` if nothing
/// has arrived. As [`read`](super::read), the first `n` bytes are
/// initialised on `Ok(n)`.
pub(crate) fn recv_nowait(
    fd: &impl AsRawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; recv(2) only writes.
    syscall_count(|| unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// One blocking `recv`, given up when a signal arrives (`Interrupted`) or
/// the socket's receive timeout passes (`WouldBlock`). As
/// [`read`](super::read), the first `n` bytes are initialised on `Ok(n)`.
pub(crate) fn recv_once(
    fd: &impl AsRawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; recv(2) only writes.
    syscall(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })
        .map(|n| n as usize)
}

/// One `send` on a socket that does not wait (and raises no SIGPIPE): how
/// much was sent, `WouldBlock` if nothing could be.
pub(crate) fn send_nowait(fd: &impl AsRawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length.
    syscall_count(|| unsafe {
        libc::send(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// Bounds how long a blocking receive on a socket waits (`SO_RCVTIMEO`).
pub(crate) fn set_recv_timeout(fd: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid timeval of the size given.
    syscall(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Set by the `SIGIO` handler of [`signal_on_connect`].
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// Has this process sent `SIGIO` when a client connects to `listener`, so
/// that a blocking receive elsewhere is interrupted; [`take_connect_signal`]
/// tells whether one came.
pub(crate) fn signal_on_connect(listener: &impl AsRawFd) -> io::Result<()> {
    extern "C" fn on_sigio(_: libc::c_int) {
        CONNECTED.store(true, Ordering::Relaxed);
    }
    // SAFETY: installing a handler that only stores to an atomic (without
    // SA_RESTART, so that it interrupts a blocking call), unblocking the
    // signal, and asking for it on a descriptor this process owns.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigio as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        syscall(libc::sigaction(libc::SIGIO, &action, std::ptr::null_mut()))?;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGIO);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        let fd = listener.as_raw_fd();
        syscall(libc::fcntl(fd, libc::F_SETOWN, libc::getpid()))?;
        let flags = syscall(libc::fcntl(fd, libc::F_GETFL))?;
        syscall(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC))?;
    }
    Ok(())
}

/// Whether a client connected since the last call (see [`signal_on_connect`]).
pub(crate) fn take_connect_signal() -> bool {
    CONNECTED.swap(false, Ordering::Relaxed)
}

/// A listening Unix stream socket at `path`, made mode 0600 before it
/// accepts anyone (bind, chmod, then listen).
pub(crate) fn unix_listen(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain syscall.
    let fd =
        syscall(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    syscall(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    let c = CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path.
    if let Err(e) = syscall(unsafe { libc::chmod(c.as_ptr(), 0o600) }) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    // SAFETY: plain syscall on a bound socket.
    syscall(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// What a failed `accept(2)` means to a loop that accepts until the queue
/// is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// No connection is queued (on a nonblocking listener).
    QueueEmpty,
    /// That one connection failed; the queue goes on.
    ThisConnection,
    /// Out of descriptors or memory (or worse): the queue must wait.
    Exhausted,
}

/// Classifies an error of `accept(2)`.
pub(crate) fn accept_failure(e: &io::Error) -> AcceptFailure {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => AcceptFailure::QueueEmpty,
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR) => {
            AcceptFailure::ThisConnection
        }
        _ => AcceptFailure::Exhausted,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_failed_setsockopt_reports_its_errno() {
        // Before, the -1 that setsockopt returns was read as the error number.
        let (read, _write) = super::super::pipe().unwrap();
        let e = super::set_recv_timeout(&read, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK), "{e}");
    }
}
