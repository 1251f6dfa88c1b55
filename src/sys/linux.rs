//! Linux implementation of the `sys` layer.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use super::Deadline;

/// Where POSIX shared-memory objects live on Linux (what `shm_open` uses).
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// An anonymous memory file (`memfd_create`), closed on exec.
pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
    loop {
        // SAFETY: plain syscall on a descriptor we own; it returns an errno value.
        match unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) } {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
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

/// Whether a process with this pid is running: it exists and is not a
/// zombie (a killed process that its parent has not reaped yet can no
/// longer touch shared memory).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    // The state is the first field after the parenthesised command name.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        // Gone between the two checks, or /proc hidden: trust kill().
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// The calling process's id.
pub(crate) fn getpid() -> u32 {
    std::process::id()
}

/// The current time on `CLOCK_MONOTONIC`.
pub(crate) fn monotonic_now() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now
}

// ---------------------------------------------------------------------------
// Robust process-shared mutexes (glibc).

extern "C" {
    // glibc >= 2.30; not yet in the libc crate.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The state of a process-shared mutex as stored in shared memory.
pub(crate) type PthreadMutex = libc::pthread_mutex_t;

/// How a mutex behaves when its owner locks it again.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MutexKind {
    /// Relocking by the owner fails with `EDEADLK` instead of hanging.
    ErrorCheck,
    /// Relocking by the owner nests; unlocking by anyone else fails with `EPERM`.
    Recursive,
}

/// What a successful lock call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The mutex was free or released normally.
    Clean,
    /// The previous owner died holding it; the caller holds it now.
    OwnerDied,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Initialises a robust, process-shared mutex in place.
///
/// # Safety
/// `m` must point to writable memory for a `PthreadMutex` that no process is
/// using as a mutex yet.
pub(crate) unsafe fn mutex_init(m: *mut PthreadMutex, kind: MutexKind) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is initialised by pthread_mutexattr_init before any other
    // use and destroyed on every path after it; `m` is valid per the caller.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let a = attr.as_mut_ptr();
        let kind = match kind {
            MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
            MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
        };
        let r = check(libc::pthread_mutexattr_setpshared(
            a,
            libc::PTHREAD_PROCESS_SHARED,
        ))
        .and_then(|()| {
            check(libc::pthread_mutexattr_setrobust(
                a,
                libc::PTHREAD_MUTEX_ROBUST,
            ))
        })
        .and_then(|()| check(libc::pthread_mutexattr_settype(a, kind)))
        .and_then(|()| check(libc::pthread_mutex_init(m, a)));
        libc::pthread_mutexattr_destroy(a);
        r
    }
}

/// Locks a robust mutex. Errors carry the errno: `EBUSY` (would block),
/// `ETIMEDOUT`, `ENOTRECOVERABLE`, `EDEADLK`.
///
/// # Safety
/// `m` must point to a mutex initialised by [`mutex_init`] that stays mapped
/// for the duration of the call.
#[inline]
pub(crate) unsafe fn mutex_lock(
    m: *mut PthreadMutex,
    deadline: Deadline,
) -> Result<Acquired, libc::c_int> {
    // glibc's pthread_mutex_trylock on a robust mutex that is not
    // recoverable returns ENOTRECOVERABLE but leaves the lock word owned by
    // the caller: every later lock then hangs (or is EDEADLK in this thread).
    // The timed lock handles that case correctly, so a try is a timed lock
    // whose deadline has already passed ([`Deadline::timespec`] of `Now`).
    // SAFETY: `m` is a live initialised mutex per the caller; the timespec
    // outlives the call.
    let rc = unsafe {
        match deadline.timespec() {
            None => libc::pthread_mutex_lock(m),
            Some(t) => pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &t),
        }
    };
    match rc {
        0 => Ok(Acquired::Clean),
        libc::EOWNERDEAD => Ok(Acquired::OwnerDied),
        libc::ETIMEDOUT if !deadline.may_wait() => Err(libc::EBUSY),
        e => Err(e),
    }
}

/// Unlocks a mutex; `EPERM` if the caller does not own it.
///
/// # Safety
/// As for [`mutex_lock`].
#[inline]
pub(crate) unsafe fn mutex_unlock(m: *mut PthreadMutex) -> Result<(), libc::c_int> {
    // SAFETY: `m` is a live initialised mutex per the caller.
    match unsafe { libc::pthread_mutex_unlock(m) } {
        0 => Ok(()),
        e => Err(e),
    }
}

/// Whether a mutex looks free right now (glibc's `__lock` word, the first
/// `int` of `pthread_mutex_t`, is zero): for spinning before locking.
///
/// # Safety
/// As for [`mutex_lock`].
#[inline]
pub(crate) unsafe fn mutex_looks_free(m: *mut PthreadMutex) -> bool {
    // SAFETY: the lock word is an aligned int that glibc only changes
    // atomically; reading it atomically is race-free.
    unsafe { (*m.cast::<AtomicU32>()).load(std::sync::atomic::Ordering::Relaxed) == 0 }
}

/// How many times the calling thread holds a recursive mutex that it owns
/// (glibc's `__count`, the second `int` of `pthread_mutex_t`).
///
/// # Safety
/// As for [`mutex_lock`], and the calling thread holds the mutex.
pub(crate) unsafe fn mutex_recursion(m: *mut PthreadMutex) -> u32 {
    // SAFETY: glibc's pthread_mutex_t starts with `int __lock; unsigned int
    // __count;` on every Linux ABI; only the owner writes `__count`, and
    // the caller is the owner.
    unsafe { m.cast::<u32>().add(1).read_volatile() }
}

/// The thread that a robust mutex's lock word names as its owner: `None`
/// if it is free or its owner died. The word is the kernel's robust-futex
/// ABI (`Documentation/locking/robust-futex-ABI.rst`): the owner's thread id
/// in the low 30 bits, bit 30 set by the kernel when the owner died, bit 31
/// when others wait.
///
/// # Safety
/// As for [`mutex_lock`]; the mutex is robust (every [`mutex_init`] one is).
pub(crate) unsafe fn mutex_owner(m: *mut PthreadMutex) -> Option<u32> {
    const OWNER_DIED: u32 = 1 << 30;
    const TID_MASK: u32 = OWNER_DIED - 1;
    // SAFETY: as in `mutex_looks_free`: glibc and the kernel change the
    // lock word only atomically.
    let word = unsafe { (*m.cast::<AtomicU32>()).load(std::sync::atomic::Ordering::Acquire) };
    let tid = word & TID_MASK;
    (tid != 0 && word & OWNER_DIED == 0).then_some(tid)
}

/// The calling thread's id, as robust mutexes record their owner.
pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Marks a mutex whose owner died as consistent again.
///
/// # Safety
/// As for [`mutex_lock`], and the caller holds the mutex.
pub(crate) unsafe fn mutex_make_consistent(m: *mut PthreadMutex) -> Result<(), libc::c_int> {
    // SAFETY: `m` is a live initialised mutex held by the caller.
    match unsafe { libc::pthread_mutex_consistent(m) } {
        0 => Ok(()),
        e => Err(e),
    }
}

// ---------------------------------------------------------------------------
// Processes.

/// Writes out everything buffered in Rust's and C's standard output streams,
/// so that a fork never copies unwritten output into the child.
pub(crate) fn flush_stdio() {
    use std::io::Write;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: fflush(NULL) flushes every C stream; always safe to call.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

/// Ends the calling process at once with `code`, flushing stdio first and
/// running no destructors or `atexit` handlers (which belong to the parent).
pub(crate) fn exit_now(code: i32) -> ! {
    flush_stdio();
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Result of a `fork`.
pub(crate) enum Forked {
    Parent { pid: u32 },
    Child,
}

/// Forks the calling process.
///
/// Rust's stdout and stderr locks are held (and flushed) across the fork, so
/// that in the child they are owned by the forking thread, which exists
/// there, and never by a parent thread that does not.
pub(crate) fn fork() -> io::Result<Forked> {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let _ = out.flush();
    let _ = err.flush();
    // SAFETY: fflush(NULL) flushes every C stream; always safe to call.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    // SAFETY: the child only runs code that the Process documentation allows
    // after fork; see `process::Process::start`.
    let pid = unsafe { libc::fork() };
    drop(out);
    drop(err);
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent { pid: pid as u32 }),
    }
}

/// Asks the kernel to send `SIGKILL` to the calling process when its parent
/// exits, and closes the race where the parent died before the request.
pub(crate) fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != parent {
        exit_now(1);
    }
    Ok(())
}

/// A pid file descriptor: a handle on one process that never refers to
/// another process after the pid is reused.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; flags 0.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the process behind `pidfd`.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own; no siginfo, flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until the process behind `pidfd` has exited or `deadline` passes;
/// returns whether it exited.
pub(crate) fn pidfd_wait(pidfd: &OwnedFd, deadline: Deadline) -> io::Result<bool> {
    // A pidfd becomes readable when its process exits.
    Ok(poll_readable(&[pidfd.as_raw_fd()], deadline)?[0])
}

/// How a reaped child ended, in Python's convention: the exit code, or
/// minus the number of the signal that killed it.
pub(crate) fn waitpid(pid: u32, block: bool) -> io::Result<Option<i32>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if r == 0 {
            return Ok(None);
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(Some(if libc::WIFSIGNALED(status) {
            -libc::WTERMSIG(status)
        } else {
            libc::WEXITSTATUS(status)
        }));
    }
}

/// Whether `path` is on a filesystem that can hold shared memory.
pub(crate) fn shm_dir() -> &'static Path {
    Path::new(SHM_DIR)
}

/// Registers fork handlers: `prepare` runs in the forking thread before the
/// fork, `parent` and `child` after it on each side.
pub(crate) fn at_fork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> io::Result<()> {
    // SAFETY: the handlers are plain functions valid for the process's life.
    check(unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) })
}

/// Registers `hook` to run when the process exits through `exit(3)`
/// (returning from `main` included).
pub(crate) fn at_exit(hook: extern "C" fn()) -> io::Result<()> {
    // SAFETY: the hook is a plain function valid for the process's life.
    match unsafe { libc::atexit(hook) } {
        0 => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::ENOMEM)),
    }
}

/// Lets descriptor `fd` survive `exec` (clears `FD_CLOEXEC`). Only one
/// system call: usable between `fork` and `exec` (`Command::pre_exec`).
pub(crate) fn keep_on_exec(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; at worst EBADF.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// What descriptor `fd` of this process refers to (`/proc/self/fd`).
pub(crate) fn fd_target(fd: i32) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

// ---------------------------------------------------------------------------
// Futexes (shared between processes: no FUTEX_PRIVATE_FLAG).

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

/// A new blocking `eventfd` (counter 0), inherited by forked children
/// (closed on exec).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
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
    // SAFETY: reads 8 bytes into a valid u64.
    while unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

// ---------------------------------------------------------------------------
// Sockets and pipes.

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Ends a socket's sending direction for every descriptor that shares it
/// (those of forked children included): its peer reads end of file.
pub(crate) fn shutdown_write(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor the caller holds open.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
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
    cvt(unsafe {
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
    let n = retrying(|| unsafe {
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
    let n = retrying(|| unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) })?;
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

/// A pipe: (read end, write end), closed on exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `parts` in as few system calls as the kernel allows;
/// `MSG_NOSIGNAL` on sockets, so a closed peer is `EPIPE`, not a signal.
pub(crate) fn write_all_vectored(
    fd: &impl AsRawFd,
    is_socket: bool,
    parts: &[&[u8]],
) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let n = if is_socket {
            // SAFETY: a zeroed msghdr with a valid iovec array that outlives the call.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = iov.len() as _;
                libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
            }
        } else {
            // SAFETY: a valid iovec array that outlives the call.
            unsafe {
                libc::writev(
                    fd.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len().min(1024) as libc::c_int,
                )
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut n = n as usize;
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
    retrying(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// Runs a system call that returns a count or -1, again after a signal.
fn retrying(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `recv` from a socket that does not wait: `WouldBlock` if nothing
/// has arrived. As [`read`], the first `n` bytes are initialised on `Ok(n)`.
pub(crate) fn recv_nowait(
    fd: &impl AsRawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; recv(2) only writes.
    retrying(|| unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
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
/// SIGPIPE on a socket): how much was written, `WouldBlock` if nothing
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
    // SAFETY: `bytes` is valid for reads of at least `n` bytes.
    retrying(|| unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), n) })
}

/// Whether `fd` is ready as `ready` says, without waiting.
fn ready_now(fd: &impl AsRawFd, ready: Ready) -> io::Result<bool> {
    let mut p = [pollfd(fd.as_raw_fd(), ready)];
    poll(&mut p, Deadline::Now)?;
    Ok(p[0].revents != 0)
}

/// One blocking `recv`, given up when a signal arrives (`Interrupted`) or
/// the socket's receive timeout passes (`WouldBlock`). As [`read`], the
/// first `n` bytes are initialised on `Ok(n)`.
pub(crate) fn recv_once(
    fd: &impl AsRawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; recv(2) only writes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n >= 0 {
        Ok(n as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bounds how long a blocking receive on a socket waits (`SO_RCVTIMEO`).
pub(crate) fn set_recv_timeout(fd: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid timeval of the size given.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
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
        check(libc::sigaction(libc::SIGIO, &action, std::ptr::null_mut()))?;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGIO);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        let fd = listener.as_raw_fd();
        if libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether a client connected since the last call (see [`signal_on_connect`]).
pub(crate) fn take_connect_signal() -> bool {
    CONNECTED.swap(false, Ordering::Relaxed)
}

/// One `send` on a socket that does not wait (and raises no SIGPIPE): how
/// much was sent, `WouldBlock` if nothing could be.
pub(crate) fn send_nowait(fd: &impl AsRawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length.
    retrying(|| unsafe {
        libc::send(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// Waits until any of `fds` is readable (or hung up) or `deadline` passes;
/// returns which are.
pub(crate) fn poll_readable(fds: &[i32], deadline: Deadline) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&fd| pollfd(fd, Ready::Read)).collect();
    poll(&mut pfds, deadline)?;
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// What a descriptor is waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// Something to read, end of file, or an error.
    Read,
    /// Room to write, a hang-up, or an error.
    Write,
}

/// A `pollfd` that waits for `fd` to be ready as `ready` says.
pub(crate) fn pollfd(fd: i32, ready: Ready) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: match ready {
            Ready::Read => libc::POLLIN,
            Ready::Write => libc::POLLOUT,
        },
        revents: 0,
    }
}

/// `poll(2)` until an event or `deadline`, retrying after signals and
/// early wake-ups with the time that is left; the events are in `revents`.
pub(crate) fn poll(pfds: &mut [libc::pollfd], deadline: Deadline) -> io::Result<()> {
    loop {
        // SAFETY: a valid array of pollfds.
        let r = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                deadline.poll_millis(),
            )
        };
        if r > 0 || (r == 0 && deadline.passed()) {
            return Ok(());
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Whether a descriptor is a socket.
pub(crate) fn is_socket(fd: &impl AsRawFd) -> bool {
    // SAFETY: fstat into a zeroed stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_raw_fd(), &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
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
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    let c = CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path.
    if let Err(e) = cvt(unsafe { libc::chmod(c.as_ptr(), 0o600) }) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    // SAFETY: plain syscall on a bound socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Fills `buf` with random bytes from the kernel.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the rest of `buf` is valid for writes.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            done += n as usize;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_available_is_read_and_plausible() {
        let avail = super::memory_available().expect("/proc/meminfo");
        assert!(avail > 1 << 20 && avail < 1 << 50, "{avail}");
    }
}
