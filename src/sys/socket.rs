//! Unix sockets: pairs, a listener, sending and receiving (with attached
//! descriptors), a signal when a client connects, and what a failed
//! `accept` means.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The type of socket `fd` is (`SOCK_STREAM`, …); `ENOTSOCK` for a
/// descriptor that is no socket.
pub(crate) fn socket_type(fd: &impl AsRawFd) -> io::Result<libc::c_int> {
    socket_option(fd, libc::SO_TYPE)
}

/// The process at the other end of the Unix socket `fd` (`SO_PEERCRED`:
/// the one that connected), if it is one.
pub(crate) fn peer_pid(fd: &impl AsRawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of their sizes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// Whether the socket `fd` is listening (`SO_ACCEPTCONN`).
pub(crate) fn is_listening(fd: &impl AsRawFd) -> io::Result<bool> {
    socket_option(fd, libc::SO_ACCEPTCONN).map(|on| on != 0)
}

/// The socket-level option `option` of `fd`, an `int`.
fn socket_option(fd: &impl AsRawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid, writable, and `len` is the size
    // of `value`; a bad descriptor or option is at worst an error.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    syscall(r)?;
    Ok(value)
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
    // SAFETY: `socketpair` succeeded, so `fds[0]` is a fresh descriptor that
    // nothing else owns.
    let first = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as for `fds[0]`; the two are distinct descriptors.
    let second = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((first, second))
}

/// Sends `bytes` (at least one) with copies of `fds` attached
/// (`SCM_RIGHTS`) on a Unix socket, in one `sendmsg`; a short send is an error.
pub(crate) fn send_with_fds(
    socket: &impl AsRawFd,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    let n = sendmsg_with_fds(socket, bytes, fds, 0)?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// [`send_with_fds`] that never waits: how much was sent (the descriptors
/// went with the first byte), `WouldBlock` if nothing could be.
pub(crate) fn send_with_fds_nowait(
    socket: &impl AsRawFd,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<usize> {
    sendmsg_with_fds(socket, bytes, fds, libc::MSG_DONTWAIT)
}

fn sendmsg_with_fds(
    socket: &impl AsRawFd,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
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
    // SAFETY: `msghdr` is a plain C struct (integers and raw pointers) for
    // which all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &iov as *const libc::iovec as *mut libc::iovec;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` is a valid msghdr, pointing at `control`, `space`
        // bytes long, room for one header (CMSG_SPACE); CMSG_FIRSTHDR only
        // reads `msg` and computes an address.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: `cmsg` is the first header of `control`, which is non-empty
        // and 8-byte aligned (`u64` elements), so it is in bounds, aligned
        // and writable, and nothing else refers to it while `hdr` lives.
        let hdr = unsafe { &mut *cmsg };
        hdr.cmsg_level = libc::SOL_SOCKET;
        hdr.cmsg_type = libc::SCM_RIGHTS;
        // SAFETY: CMSG_LEN only computes a size.
        hdr.cmsg_len = unsafe { libc::CMSG_LEN(data_len) } as _;
        // SAFETY: `cmsg` is a header inside `control`; CMSG_DATA only
        // computes the address of its payload.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // SAFETY: the payload has room for `data_len` bytes, that is
        // `raw.len()` ints (CMSG_SPACE reserved them), and is int-aligned
        // (CMSG_ALIGN); `raw` is a separate allocation.
        unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr(), data.cast(), raw.len()) };
    }
    // SAFETY: `msg` points at `iov` (and at `control`, when descriptors are
    // attached), both alive for the call; sendmsg only reads through them.
    syscall_count(|| unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | flags) })
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
    match recv_some_fds(socket, buf, max_fds, wait)? {
        (n, fds, false) => Ok((n, fds)),
        (_, _, true) => Err(io::Error::other("more descriptors attached than expected")),
    }
}

/// [`recv_with_fds`], but descriptors cut off (more than `max_fds`, or
/// more than this process may open: the kernel closes those) are not an
/// error: the bytes read are returned, with the descriptors that did
/// arrive, and `true` for the cut.
pub(crate) fn recv_some_fds(
    socket: &impl AsRawFd,
    buf: &mut [u8],
    max_fds: usize,
    wait: bool,
) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
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
    // The kernel filled `msg.msg_control` with well-formed cmsghdrs up to
    // `msg_controllen`, and the CMSG macros walk within it.
    // SAFETY: `msg` is a valid msghdr pointing at `control`; CMSG_FIRSTHDR
    // only reads `msg` and computes an address, null if there is no header.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies
        // wholly inside `control`, aligned; nothing writes it meanwhile.
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN only computes a size.
            let payload_len = hdr.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            // SAFETY: `cmsg` is a header inside `control`; CMSG_DATA only
            // computes the address of its payload.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            // SAFETY: the payload, `payload_len` bytes after `data`, lies
            // inside `control`, initialised by the kernel, and nothing
            // writes `control` while `payload` lives.
            let payload = unsafe { std::slice::from_raw_parts(data, payload_len) };
            for b in payload.chunks_exact(std::mem::size_of::<i32>()) {
                let fd = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                // SAFETY: an SCM_RIGHTS descriptor that the kernel installed
                // for this process alone: nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: `cmsg` is a header inside `msg`'s control buffer;
        // CMSG_NXTHDR returns the next one or null past `msg_controllen`.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((n, fds, msg.msg_flags & libc::MSG_CTRUNC != 0))
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

/// Bounds how long a blocking receive on a socket waits (`SO_RCVTIMEO`):
/// at least a microsecond (a zero `timeval` would mean no bound at all),
/// at most what a `timeval` holds.
pub(crate) fn set_recv_timeout(fd: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    let tv_sec = libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX);
    let micros = match (tv_sec, timeout.subsec_micros()) {
        (0, 0) => 1,
        (_, us) => us,
    };
    let tv = libc::timeval {
        tv_sec,
        tv_usec: libc::suseconds_t::from(micros),
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

/// The socket file that [`remove_socket_on_signal`]'s handler removes: its
/// path, device and inode.
static STOPPED_REMOVES: std::sync::OnceLock<(CString, u64, u64)> = std::sync::OnceLock::new();

/// Has each of `signals` whose disposition is the default (not one ignored
/// or handled by the program) remove the Unix socket file `file`, if any:
/// `path` — while it is still the file `(dev, ino)` — and then end the
/// process: with exit code 0 for `SIGINT` (as Python's `serve_forever`
/// after Ctrl-C, whatever it serves on), and for any other signal by that
/// signal, as its default would. For a process that serves one socket
/// until it is stopped; a second call in the same process keeps the first
/// file.
pub(crate) fn remove_socket_on_signal(
    file: Option<(&Path, (u64, u64))>,
    signals: &[i32],
) -> io::Result<()> {
    extern "C" fn on_stop(signal: libc::c_int) {
        if let Some((path, dev, ino)) = STOPPED_REMOVES.get() {
            // SAFETY: `stat` is a plain C struct, valid when zeroed.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `path` is a NUL-terminated string that lives for the
            // process; `st` is writable. `lstat` and `unlink` are
            // async-signal-safe.
            let ours = unsafe { libc::lstat(path.as_ptr(), &mut st) } == 0
                && st.st_dev == *dev
                && st.st_ino == *ino;
            if ours {
                // SAFETY: as above.
                unsafe { libc::unlink(path.as_ptr()) };
            }
        }
        if signal == libc::SIGINT {
            // SAFETY: `_exit` is async-signal-safe and never returns.
            unsafe { libc::_exit(0) }
        }
        // SAFETY: `signal` is async-signal-safe.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        // SAFETY: as above; the signal is blocked while its handler runs,
        // and delivered with its default action once the handler returns.
        unsafe { libc::raise(signal) };
    }
    if let Some((path, (dev, ino))) = file {
        let path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let _ = STOPPED_REMOVES.set((path, dev, ino));
    }
    for &signal in signals {
        // SAFETY: `sigaction` is a plain C struct, valid when zeroed.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a valid signal number; only the old action is asked for.
        syscall(unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) })?;
        if old.sa_sigaction != libc::SIG_DFL {
            continue;
        }
        // SAFETY: as above.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: `sa_mask` is a valid, writable signal set.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is fully set and outlives the call; the handler
        // calls only async-signal-safe functions and reads a `OnceLock` set
        // above, before the handler was installed.
        syscall(unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) })?;
    }
    Ok(())
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
    // SAFETY: `sigaction` is a plain C struct, valid when zeroed (no flags,
    // so no SA_RESTART: the signal interrupts a blocking call).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigio as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: `sa_mask` is a valid, writable signal set.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully set and outlives the call; the handler only
    // stores to an atomic, which is async-signal-safe.
    syscall(unsafe { libc::sigaction(libc::SIGIO, &action, std::ptr::null_mut()) })?;
    // SAFETY: `sigset_t` is a plain C struct, valid when zeroed.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable signal set.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: as above; SIGIO is a valid signal number.
    unsafe { libc::sigaddset(&mut set, libc::SIGIO) };
    // SAFETY: `set` is initialised and outlives the call; no old mask asked.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    let fd = listener.as_raw_fd();
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    // SAFETY: fcntl on a descriptor this process owns (`listener`); no
    // pointer arguments.
    syscall(unsafe { libc::fcntl(fd, libc::F_SETOWN, pid) })?;
    // SAFETY: as above.
    let flags = syscall(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    syscall(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) })?;
    Ok(())
}

/// Whether a client connected since the last call (see [`signal_on_connect`]).
pub(crate) fn take_connect_signal() -> bool {
    CONNECTED.swap(false, Ordering::Relaxed)
}

/// The directory for a new Unix socket file, chosen as Python's
/// `tempfile.gettempdir` chooses: the first of `$TMPDIR`, `$TEMP`, `$TMP`,
/// `/tmp`, `/var/tmp`, `/usr/tmp` that is a directory this process may
/// create files in (a `TMPDIR` that names nothing is passed over, not an
/// error); the current directory if none is.
pub(crate) fn socket_dir() -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let from_env = ["TMPDIR", "TEMP", "TMP"]
        .into_iter()
        .filter_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()));
    let fixed = ["/tmp", "/var/tmp", "/usr/tmp"].map(std::ffi::OsString::from);
    from_env
        .chain(fixed)
        .map(std::path::PathBuf::from)
        .find(|dir| {
            let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
                return false;
            };
            // SAFETY: a valid NUL-terminated path; access only reads it.
            let writable = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
            writable && dir.is_dir()
        })
        .unwrap_or_else(|| ".".into())
}

/// Clears `O_NONBLOCK` on a socket, so that its reads and writes wait
/// (the nonblocking calls here ask with `MSG_DONTWAIT` instead).
pub(crate) fn set_blocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: plain syscall.
    let flags = syscall(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: plain syscall.
        syscall(unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// The address of the Unix socket file `path`, its length, and the path
/// NUL-terminated.
fn unix_addr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t, CString)> {
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
    // A NUL byte would name a socket at the path before it (or, leading,
    // in the abstract namespace), which chmod cannot reach.
    let c = CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket path with a NUL byte"))?;
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    Ok((addr, len, c))
}

/// A fresh Unix stream socket, nonblocking if asked.
fn unix_stream_socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain syscall.
    let fd = syscall(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The longest queue of connections not yet accepted that a listener asks
/// for: as long as the system allows (Linux caps what is asked at
/// `net.core.somaxconn`, 4096 by default). A short queue fails clients
/// that come at once: a TCP client dropped from a full queue thinks itself
/// connected and waits for the kernel's retry (after 1, 3, 7 … s) past its
/// handshake's deadline.
pub(crate) const BACKLOG: i32 = i32::MAX;

/// Asks again for `fd`'s listening queue to be [`BACKLOG`] long (for a
/// listener made by std, which asks for 128).
pub(crate) fn lengthen_backlog(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: a plain syscall on a listening socket.
    syscall(unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) }).map(drop)
}

/// A listening Unix stream socket at `path`, and its file's device and
/// inode. The file appears at `path` only once the socket listens: it is
/// made under a temporary name beside it (bind, chmod 0600, listen) and
/// linked to `path`, which fails if the path is taken (`AddrInUse`). A
/// file that refuses connections is then a stale one for good, never one
/// whose listener is yet to listen, which a process replacing stale files
/// could take away. Where the temporary name would be too long for a
/// socket address, the socket is made at `path` itself, and if the file
/// there after the listen is not the one the bind made, this is
/// `AddrInUse` too, rather than a socket that no client can reach.
pub(crate) fn unix_listen(path: &Path, backlog: i32) -> io::Result<UnixListening> {
    // Clients must reach it by this path: one a socket address cannot
    // hold is refused at once.
    unix_addr(path)?;
    let mut random = [0u8; 4];
    super::random_bytes(&mut random)?;
    let name = format!(
        ".{:08x}{:08x}.socket",
        super::getpid(),
        u32::from_ne_bytes(random)
    );
    let temporary = path.with_file_name(name);
    if unix_addr(&temporary).is_ok() && path.file_name().is_some() {
        let made = bind_and_listen(&temporary, backlog).and_then(marked);
        let linked = match &made {
            Ok(_) => std::fs::hard_link(&temporary, path),
            Err(_) => Ok(()),
        };
        let _ = std::fs::remove_file(&temporary);
        let made = made?;
        match linked {
            Ok(()) => return Ok(made),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(in_use("the path is taken"))
            }
            // A file system without hard links: made at the path itself.
            Err(_) => {}
        }
    }
    let made = marked(bind_and_listen(path, backlog)?)?;
    if file_id(path).ok() != Some(made.id) {
        return Err(in_use(REPLACED));
    }
    Ok(made)
}

/// The process that made `name`, if it is the name of a temporary socket
/// file of [`unix_listen`] (`.PPPPPPPPRRRRRRRR.socket`: its pid and a
/// random number, in hexadecimal), which its maker removes unless it is
/// killed first.
pub(crate) fn temporary_socket_maker(name: &std::ffi::OsStr) -> Option<u32> {
    let hex = name.to_str()?.strip_prefix('.')?.strip_suffix(".socket")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(&hex[..8], 16).ok()
}

/// A listening Unix socket made by [`unix_listen`].
pub(crate) struct UnixListening {
    /// Its mark ([`ListenerMark`]), to be held as long as it listens.
    /// Dropped before the socket: a mark that outlived it for a moment
    /// was taken for the mark of a new socket given the freed inode, left
    /// without one.
    pub(crate) mark: ListenerMark,
    /// The listening socket.
    pub(crate) socket: OwnedFd,
    /// Its file's device and inode.
    pub(crate) id: (u64, u64),
}

/// The socket and file `made`, with the mark of a live listener claimed.
fn marked((socket, id): (OwnedFd, (u64, u64))) -> io::Result<UnixListening> {
    let mark = ListenerMark::claim(id)?;
    Ok(UnixListening { socket, id, mark })
}

/// The mark of a live listener of the socket file `id` (device and
/// inode): a socket listening at a name of the abstract namespace made
/// from `id`, which lasts as long as its descriptor. So another process
/// tells a live listener of this crate ([`listener_marked`]) without
/// connecting to it, which would be a client that its accept returns. (A
/// file's device and inode name no other file while its listener lives:
/// the socket keeps the file's inode.)
///
/// The mark is this process's alone: a forked child's copy of it is made
/// inert at the fork ([`after_fork_marks_in_child`]), so that it never
/// outlives the child's copy of the listening socket (at the child's exit,
/// say) to make a new file given the freed inode look live. A child that
/// takes the listener over claims a mark of its own ([`ListenerMark::keep`]).
pub(crate) struct ListenerMark {
    id: (u64, u64),
    /// The process that claimed the mark (high 32 bits) and its
    /// descriptor there (low 32 bits; [`NO_MARK`] if another listener held
    /// the name: then they tell this listener live all the same). In
    /// another process (a forked child), the descriptor's number is the
    /// child's copy, made inert at the fork, still to be closed.
    held: AtomicU64,
}

/// The descriptor part of [`ListenerMark::held`] for no descriptor.
const NO_MARK: u32 = u32::MAX;

/// The descriptors of this process's marks, which a forked child makes
/// inert. A mark is made and listed, and unlisted and closed, under its
/// lock, and every fork holds it (from the `prepare` fork handler to the
/// `parent` or `child` one): no child gets a copy of a mark that is not
/// listed.
static MARKS: std::sync::Mutex<Vec<libc::c_int>> = std::sync::Mutex::new(Vec::new());

/// The list of marks, locked.
type MarksHeld = std::sync::MutexGuard<'static, Vec<libc::c_int>>;

/// [`MARKS`], held by the thread that forks, across the fork.
static MARKS_HELD: super::HeldAcrossFork<MarksHeld> = super::HeldAcrossFork::new();

/// The list of marks this fork's [`prepare_fork_marks`] took.
fn take_held_marks() -> Option<MarksHeld> {
    // SAFETY: called by the handlers of the fork whose
    // `prepare_fork_marks` put it.
    unsafe { MARKS_HELD.take() }
}

/// [`MARKS`], locked (nothing panics while holding it).
fn marks() -> MarksHeld {
    MARKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Before a fork (a `prepare` fork handler): takes the list of marks.
pub(crate) fn prepare_fork_marks() {
    let held = marks();
    // SAFETY: this thread holds the lock, just taken.
    unsafe { MARKS_HELD.put(held) };
}

/// After a fork, in the parent: gives the list of marks back.
pub(crate) fn after_fork_marks_in_parent() {
    drop(take_held_marks());
}

/// After a fork, in the child: makes its copies of the parent's marks
/// inert (the numbers stay taken by the copies of their listeners, which
/// close them), and gives the list, now empty, back. Allocates nothing
/// and takes no lock: the forking thread, this one, holds the list.
pub(crate) fn after_fork_marks_in_child() {
    if let Some(mut held) = take_held_marks() {
        super::make_inert(held.iter().copied());
        held.clear();
    }
}

impl ListenerMark {
    /// Claims the mark of the socket file `id`; one without a descriptor
    /// if a listener holds it already. Call `fork_handlers::ready` first,
    /// or a child forked meanwhile may keep a copy of it.
    pub(crate) fn claim(id: (u64, u64)) -> io::Result<ListenerMark> {
        let held = claim_listener_mark(id)?;
        Ok(ListenerMark {
            id,
            held: AtomicU64::new(held),
        })
    }

    /// Where this process has no mark of its own (in a forked child, its
    /// copy), claims one: for a listener this process has taken over. On
    /// a failure it has none, and asks again next time.
    pub(crate) fn keep(&self) {
        let now = self.held.load(Ordering::Acquire);
        if now >> 32 == u64::from(super::getpid()) {
            return;
        }
        let Ok(new) = claim_listener_mark(self.id) else {
            return;
        };
        match self
            .held
            .compare_exchange(now, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => close_copy(now),
            // Another thread of this process claimed it first.
            Err(_) => release(new),
        }
    }
}

impl Drop for ListenerMark {
    fn drop(&mut self) {
        let held = *self.held.get_mut();
        if held >> 32 == u64::from(super::getpid()) {
            release(held);
        } else {
            close_copy(held);
        }
    }
}

/// The descriptor part of `held` (see [`ListenerMark::held`]), if any.
fn mark_fd(held: u64) -> Option<libc::c_int> {
    let fd = held as u32;
    (fd != NO_MARK).then_some(fd as libc::c_int)
}

/// Closes the descriptor of `held` (see [`ListenerMark::held`]), a
/// forked child's copy of another process's mark, made inert at the fork.
fn close_copy(held: u64) {
    if let Some(fd) = mark_fd(held) {
        // SAFETY: the number is this mark's own copy, which nothing else
        // closes.
        unsafe { libc::close(fd) };
    }
}

/// Unlists and closes this process's mark `held` (see
/// [`ListenerMark::held`]), if it holds one: under the list's lock, so
/// that no fork copies it once unlisted.
fn release(held: u64) {
    if let Some(fd) = mark_fd(held) {
        let mut marks = marks();
        marks.retain(|&m| m != fd);
        // SAFETY: the mark's own descriptor, which nothing else closes.
        unsafe { libc::close(fd) };
    }
}

/// Claims the mark of the socket file `id` (see [`ListenerMark`]) for
/// this process, listed for the fork handlers: its pid and descriptor as
/// [`ListenerMark::held`] holds them (without a descriptor if a listener
/// holds the mark).
fn claim_listener_mark(id: (u64, u64)) -> io::Result<u64> {
    let (addr, len) = mark_address(id);
    let mut marks = marks();
    let fd = unix_stream_socket(false)?;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    let bound = syscall(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    });
    match bound {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => return Ok(held(NO_MARK)),
        Err(e) => return Err(e),
    }
    // Listening, so that others ask by connecting to it, not by claiming
    // it: a claim held for a moment by one asking was copied into a child
    // forked meanwhile, and a later file given the same inode (as ext4
    // gives a freed one to the next file) looked live while that child
    // lived. Nothing accepts: a full queue answers as well.
    // SAFETY: a plain syscall on a bound socket.
    syscall(unsafe { libc::listen(fd.as_raw_fd(), 0) })?;
    marks
        .try_reserve(1)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    let fd = fd.into_raw_fd();
    marks.push(fd);
    Ok(held(fd as u32))
}

/// [`ListenerMark::held`] for this process and the descriptor `fd`.
fn held(fd: u32) -> u64 {
    u64::from(super::getpid()) << 32 | u64::from(fd)
}

/// Whether a listener of this crate holds the mark of the socket file
/// `id` (see [`ListenerMark`]), asked without waiting.
pub(crate) fn listener_marked(id: (u64, u64)) -> io::Result<bool> {
    let (addr, len) = mark_address(id);
    connects_at_once(&addr, len)
}

/// The abstract address of the mark of the socket file `id`.
fn mark_address(id: (u64, u64)) -> (libc::sockaddr_un, libc::socklen_t) {
    let name = format!("multiproc-listener-{:x}-{:x}", id.0, id.1);
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // A leading NUL: the abstract namespace, where the name dies with
    // the socket.
    for (d, s) in addr.sun_path[1..].iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as libc::socklen_t;
    (addr, len)
}

/// Why a socket file made at its path directly is not there any more.
const REPLACED: &str = "the socket file was replaced while it was being made";

/// An `AddrInUse` error saying `why`.
fn in_use(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::AddrInUse, why.to_string())
}

/// A listening Unix stream socket at `path`, made mode 0600 before it
/// accepts anyone (bind, chmod, then listen), and its file's device and
/// inode (looked at right after the bind); the file is removed if a step
/// after the bind fails and it is still this one.
fn bind_and_listen(path: &Path, backlog: i32) -> io::Result<(OwnedFd, (u64, u64))> {
    let (addr, len, c) = unix_addr(path)?;
    let fd = unix_stream_socket(false)?;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    syscall(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    let id = file_id(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => in_use(REPLACED),
        _ => e,
    })?;
    // SAFETY: a valid NUL-terminated path.
    let made = syscall(unsafe { libc::chmod(c.as_ptr(), 0o600) })
        // SAFETY: a plain syscall on a bound socket.
        .and_then(|_| syscall(unsafe { libc::listen(fd.as_raw_fd(), backlog) }));
    if let Err(e) = made {
        if file_id(path).is_ok_and(|now| now == id) {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    Ok((fd, id))
}

/// The device and inode of the file at `path` (not followed if a link).
fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Whether a process listens at the Unix socket file `path`, asked
/// without waiting: a connect that succeeds, or finds the listener's
/// backlog full (`EAGAIN`: a blocking connect would wait until it
/// accepts), is `Ok(true)`; one refused (nobody listens: a stale file) is
/// `Ok(false)`; other errors are returned.
pub(crate) fn unix_listening(path: &Path) -> io::Result<bool> {
    let (addr, len, _) = unix_addr(path)?;
    connects_at_once(&addr, len)
}

/// Whether a process listens at `addr` (of `len` bytes), as
/// [`unix_listening`] tells.
fn connects_at_once(addr: &libc::sockaddr_un, len: libc::socklen_t) -> io::Result<bool> {
    let fd = unix_stream_socket(true)?;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    let r = syscall(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (addr as *const libc::sockaddr_un).cast(),
            len,
        )
    });
    match r {
        Ok(_) => Ok(true),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINPROGRESS) => Ok(true),
            Some(libc::ECONNREFUSED) => Ok(false),
            _ => Err(e),
        },
    }
}

/// Whether the kernel lists a Unix socket that listens on the socket
/// file `id` (its device and inode) in this network namespace: asked
/// through `sock_diag` (what `ss -xl` asks), which reaches no listener,
/// so that a listener of another program (a Python one) is not handed a
/// client that leaves at once. `false` where the kernel does not say
/// (no `unix_diag`), or lists no such socket: only a connect can then
/// tell (the listener may be in another network namespace).
pub(crate) fn listed_as_listening(id: (u64, u64)) -> bool {
    listening_vfs_ids().is_ok_and(|ids| {
        ids.iter().any(|&(dev, ino)| {
            // The kernel's device number (20 bits of minor) as `stat`
            // encodes it, and the inode's low 32 bits (all it reports).
            libc::makedev(dev >> 20, dev & 0xf_ffff) == id.0 && u64::from(ino) == id.1 & 0xffff_ffff
        })
    })
}

/// The socket files (kernel device number, inode) of every listening Unix
/// socket the kernel lists for this network namespace.
fn listening_vfs_ids() -> io::Result<Vec<(u32, u32)>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_VFS: u32 = 0x2;
    const UNIX_DIAG_VFS: u16 = 1;
    const TCP_LISTEN: u32 = 10;
    const NLMSG_HEADER: usize = 16;
    // SAFETY: plain syscall; the descriptor is owned at once.
    let fd = syscall(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The kernel answers at once; a reply that never came (a filter in
    // the way) must not hold a bind for ever.
    set_recv_timeout(&fd, Duration::from_secs(1))?;
    // `nlmsghdr` and `unix_diag_req`: a dump of the listening sockets,
    // with their files.
    let mut request = Vec::with_capacity(NLMSG_HEADER + 24);
    request.extend_from_slice(&(NLMSG_HEADER as u32 + 24).to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    request.extend_from_slice(&[0; 8]);
    request.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&UDIAG_SHOW_VFS.to_ne_bytes());
    request.extend_from_slice(&[0; 8]);
    // SAFETY: a valid buffer of that length, to the kernel (no address).
    syscall_count(|| unsafe {
        libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0)
    })?;
    let u16_at = |b: &[u8], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut ids = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // SAFETY: a valid buffer of that length.
        let n = syscall_count(|| unsafe {
            libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
        })?;
        let mut rest = &buf[..n];
        if rest.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        while rest.len() >= NLMSG_HEADER {
            let len = (u32_at(rest, 0) as usize).min(rest.len());
            if len < NLMSG_HEADER {
                return Err(io::ErrorKind::InvalidData.into());
            }
            match i32::from(u16_at(rest, 4)) {
                libc::NLMSG_DONE => return Ok(ids),
                libc::NLMSG_ERROR => return Err(io::ErrorKind::Unsupported.into()),
                _ => {}
            }
            // `unix_diag_msg` (16 bytes), then attributes, each aligned
            // to 4 bytes.
            let mut attrs = rest.get(NLMSG_HEADER + 16..len).unwrap_or_default();
            while attrs.len() >= 4 {
                let alen = (u16_at(attrs, 0) as usize).min(attrs.len());
                if alen < 4 {
                    break;
                }
                if u16_at(attrs, 2) == UNIX_DIAG_VFS && alen >= 12 {
                    ids.push((u32_at(attrs, 8), u32_at(attrs, 4)));
                }
                attrs = attrs.get((alen + 3) & !3..).unwrap_or_default();
            }
            rest = rest.get((len + 3) & !3..).unwrap_or_default();
        }
    }
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

    /// The kernel's list has a live listener's socket file, and neither
    /// a stale one nor a bound socket that does not listen. (Where the
    /// kernel has no `unix_diag`, it lists none: only the first check is
    /// skipped then.)
    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn the_kernel_lists_only_live_listeners() {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::net::{UnixDatagram, UnixListener};
        let dir = std::env::temp_dir();
        let path = |tag: &str| dir.join(format!("multiproc-diag-{tag}-{}", std::process::id()));
        let id = |p: &std::path::Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let (live, stale, datagram) = (path("live"), path("stale"), path("dgram"));
        for p in [&live, &stale, &datagram] {
            let _ = std::fs::remove_file(p);
        }
        let l = UnixListener::bind(&live).unwrap();
        drop(UnixListener::bind(&stale).unwrap());
        let d = UnixDatagram::bind(&datagram).unwrap();
        if super::listening_vfs_ids().is_ok() {
            assert!(super::listed_as_listening(id(&live)));
        }
        assert!(!super::listed_as_listening(id(&stale)));
        assert!(!super::listed_as_listening(id(&datagram)));
        drop((l, d));
        for p in [&live, &stale, &datagram] {
            let _ = std::fs::remove_file(p);
        }
        // More listeners than one reply of the kernel's holds: every one
        // of them is found.
        let many: Vec<_> = (0..500).map(|i| path(&format!("many{i}"))).collect();
        let held: Vec<UnixListener> = many
            .iter()
            .map(|p| {
                let _ = std::fs::remove_file(p);
                UnixListener::bind(p).unwrap()
            })
            .collect();
        if super::listening_vfs_ids().is_ok() {
            assert!(many.iter().all(|p| super::listed_as_listening(id(p))));
        }
        drop(held);
        for p in &many {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn a_failed_setsockopt_reports_its_errno() {
        // Before, the -1 that setsockopt returns was read as the error number.
        let (read, _write) = super::super::pipe().unwrap();
        let e = super::set_recv_timeout(&read, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK), "{e}");
    }

    /// A zero bound is the shortest one, not none (a zero `timeval`); one
    /// past what a `timeval` holds is the longest (it wrapped to a negative
    /// number of seconds).
    #[test]
    fn receive_bounds_at_both_ends() {
        let (a, _b) = super::socketpair().unwrap();
        super::set_recv_timeout(&a, Duration::ZERO).unwrap();
        let mut byte = [std::mem::MaybeUninit::new(0u8)];
        let e = super::super::read(&a, &mut byte).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
        super::set_recv_timeout(&a, Duration::MAX).unwrap();
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        // SAFETY: a valid timeval and its length, written by the kernel.
        let got = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&a),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&mut tv as *mut libc::timeval).cast(),
                &mut len,
            )
        };
        assert_eq!(got, 0);
        // The kernel keeps a bound that long as none (it reads back 0).
        let forever = tv.tv_sec == 0 && tv.tv_usec == 0;
        assert!(forever || tv.tv_sec > 1 << 30, "{} s", tv.tv_sec);
    }
}
