//! Processes: fork and exit, pid file descriptors, signals, waiting for a
//! child, fork and exit hooks.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use super::{errno_result, poll_readable, syscall, syscall_retrying, Deadline};

/// Whether a process with this pid is running: it exists and is not a
/// zombie (a killed process that its parent has not reaped yet can no
/// longer touch shared memory).
pub(crate) fn pid_alive(pid: u32) -> bool {
    pid_alive_since(pid, 0)
}

/// As [`pid_alive`], for the process that had `start` as its
/// [`start_time`] (0 if unknown): a process that took the pid of a dead
/// one since (pids are reused, after as few as 32768 forks) is not it.
pub(crate) fn pid_alive_since(pid: u32, start: u64) -> bool {
    // Signal 0 only checks for existence and permission.
    let another_users = match kill(pid, 0) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => true,
        Err(_) => return false,
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match state_and_start(&stat) {
            Some((state, started)) => {
                state != "Z" && state != "X" && (start == 0 || started == Some(start))
            }
            None => true,
        },
        // Another user's process that /proc does not show (`hidepid=2`),
        // or /proc unreadable: trust kill(). Else it has just exited.
        Err(e) => another_users || e.kind() != io::ErrorKind::NotFound,
    }
}

/// When the calling process started, in clock ticks since boot (the
/// `starttime` of `/proc/self/stat`), which tells it apart from any other
/// process that has or had its pid; 0 if `/proc` cannot say.
pub(crate) fn start_time() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| state_and_start(&stat)?.1)
        .unwrap_or(0)
}

/// The calling process's id and [`start_time`], the latter read once per
/// process (a forked child has a pid of its own, so it reads its own).
pub(crate) fn own_pid_and_start() -> (u32, u64) {
    thread_local! {
        static KNOWN: std::cell::Cell<(u32, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    let pid = cached_pid();
    KNOWN.with(|known| match known.get() {
        (p, start) if p == pid => (pid, start),
        _ => {
            let start = start_time();
            known.set((pid, start));
            (pid, start)
        }
    })
}

/// The state and the start time of a `/proc/PID/stat` line: the first
/// and the twentieth field after the parenthesised command name (fields
/// 3 and 22 of proc(5)).
fn state_and_start(stat: &str) -> Option<(&str, Option<u64>)> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    Some((state, fields.nth(18).and_then(|t| t.parse().ok())))
}

/// The calling process's id.
pub(crate) fn getpid() -> u32 {
    std::process::id()
}

/// What the page of [`cached_pid`] and [`own_word`] holds: words that
/// every new process starts at 0.
#[repr(C)]
struct Wiped {
    /// The process's id, 0 until known in this process.
    pid: AtomicU32,
    /// [`own_word`].
    word: AtomicUsize,
    /// [`libc_set_up`]: 0 until asked in this process, then 1 (yes) or 2.
    libc_set_up: AtomicU32,
}

/// A page that the kernel empties in the child of any fork
/// (`MADV_WIPEONFORK`, Linux 4.14), however it was made — `fork(3)`,
/// `_Fork`, a raw `clone` system call, none of which a `pthread_atfork`
/// handler sees all of; `None` where it cannot be had (or under Miri,
/// which has no `madvise`).
#[inline(always)]
fn wiped() -> Option<&'static Wiped> {
    /// The page, null until mapped, [`NONE`] if it could not be.
    static PAGE: AtomicPtr<Wiped> = AtomicPtr::new(std::ptr::null_mut());
    const NONE: *mut Wiped = std::ptr::dangling_mut();
    if cfg!(miri) {
        return None;
    }
    let mut page = PAGE.load(Ordering::Acquire);
    if page.is_null() {
        page = wiped_on_fork().unwrap_or(NONE);
        if let Err(first) = PAGE.compare_exchange(
            std::ptr::null_mut(),
            page,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            if page != NONE {
                // SAFETY: our own mapping, never shared.
                unsafe { libc::munmap(page.cast(), page_size()) };
            }
            page = first;
        }
    }
    // SAFETY: a page mapped for good (never unmapped once published),
    // aligned, readable and writable, and zeroed: a valid `Wiped`.
    (page != NONE).then(|| unsafe { &*page })
}

/// The calling process's id as [`getpid`] gives it, without a system call
/// once known: kept in a page that every new process starts empty (see
/// [`wiped`]). Where the page cannot be had, [`getpid`] each time.
pub(crate) fn cached_pid() -> u32 {
    let Some(page) = wiped() else {
        return getpid();
    };
    match page.pid.load(Ordering::Relaxed) {
        0 => {
            let pid = getpid();
            page.pid.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Whether the C library set the calling process's thread up, as it does
/// every thread it starts and the child of every fork it makes, but not
/// the child of a raw `clone` system call (see
/// [`thread_set_up_by_libc`](super::mutex::thread_set_up_by_libc)). Asked
/// once per process, the answer kept in the page that every new process
/// starts empty: a load on every robust lock and unlock. Where the page
/// cannot be had, nothing is asked (the answer is yes).
#[inline(always)]
pub(crate) fn libc_set_up() -> bool {
    match wiped() {
        Some(page) if page.libc_set_up.load(Ordering::Relaxed) == 1 => true,
        page => page.is_none_or(ask_libc_set_up),
    }
}

/// [`libc_set_up`] when not known yes.
#[cold]
#[inline(never)]
fn ask_libc_set_up(page: &Wiped) -> bool {
    match page.libc_set_up.load(Ordering::Relaxed) {
        0 => {
            let set_up = super::mutex::thread_set_up_by_libc();
            page.libc_set_up
                .store(if set_up { 1 } else { 2 }, Ordering::Relaxed);
            set_up
        }
        known => known == 1,
    }
}

/// A word of the calling process's own: 0 in every process it forks or
/// clones, however (see [`wiped`]), and until the process sets it; `None`
/// where that cannot be had.
#[inline(always)]
pub(crate) fn own_word() -> Option<&'static AtomicUsize> {
    wiped().map(|page| &page.word)
}

/// A fresh page that the kernel empties in the child of any fork.
fn wiped_on_fork() -> Option<*mut Wiped> {
    let len = page_size();
    let page = super::map_anonymous(len, false)?;
    // SAFETY: advice on the mapping just made.
    if unsafe { libc::madvise(page, len, libc::MADV_WIPEONFORK) } != 0 {
        // SAFETY: our own mapping, never shared.
        unsafe { libc::munmap(page, len) };
        return None;
    }
    Some(page.cast())
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// The signal that ends a process and cannot be caught.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// The signal that asks a process to end.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// Ctrl-C at a terminal.
pub(crate) const SIGINT: i32 = libc::SIGINT;
/// The terminal of the process's session has closed.
pub(crate) const SIGHUP: i32 = libc::SIGHUP;

/// The name of signal `n` as Python's `signal` module spells it (Linux's
/// numbering), for exit codes such as `-SIGTERM`.
pub(crate) fn signal_name(n: i32) -> Option<&'static str> {
    const NAMES: [(i32, &str); 31] = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGPOLL, "SIGPOLL"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    // The real-time signals' ends are in Python's table too (by the C
    // library's numbers, 34 and 64 under glibc); those between are not.
    let real_time = [
        (libc::SIGRTMIN(), "SIGRTMIN"),
        (libc::SIGRTMAX(), "SIGRTMAX"),
    ];
    NAMES
        .iter()
        .chain(&real_time)
        .find(|(s, _)| *s == n)
        .map(|(_, name)| *name)
}

/// Sends `signal` to process `pid`. Only for a child that this process
/// started and has not reaped (so that the pid cannot name another
/// process); any other process is reached through its pidfd
/// ([`pidfd_signal`]). A pid that would name more than one process as a
/// `pid_t` (0 or, past `i32::MAX`, a negative number: a process group, or
/// every process) is `ESRCH`.
pub(crate) fn kill(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&pid| pid > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill takes any pid and signal number; at worst it fails.
    syscall(unsafe { libc::kill(pid, signal) }).map(drop)
}

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
    let out = io::stdout().lock();
    let err = io::stderr().lock();
    // The locks are reentrant: this thread flushes through them.
    flush_stdio();
    // SAFETY: the child only runs code that the Process documentation allows
    // after fork; see `process::Process::start`.
    let pid = syscall(unsafe { libc::fork() });
    drop(out);
    drop(err);
    match pid? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent { pid: pid as u32 }),
    }
}

/// Gives `SIGCHLD` its default disposition in this process: a helper
/// forked from the user's program (the fork server) reaps its own
/// children, and a handler of the program's that reaps every child, or
/// `SIG_IGN`, would take their exit statuses first. (Python's helpers are
/// new programs, with the default.)
pub(crate) fn default_child_signal() -> io::Result<()> {
    // SAFETY: sets a disposition (the default, no handler) for a valid signal.
    if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Has this process ignore `signal`.
pub(crate) fn ignore_signal(signal: i32) -> io::Result<()> {
    // SAFETY: a valid signal number and the `SIG_IGN` disposition.
    if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `signals` blocked in the calling thread until dropped; then the
/// thread's mask from before is back, and one of them sent meanwhile is
/// delivered.
pub(crate) struct SignalsHeld(libc::sigset_t);

impl SignalsHeld {
    pub(crate) fn new(signals: &[i32]) -> io::Result<SignalsHeld> {
        // SAFETY: `sigset_t` is a plain C struct, valid when zeroed.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable signal set.
        unsafe { libc::sigemptyset(&mut set) };
        for &signal in signals {
            // SAFETY: as above, and a signal number (checked by the call).
            syscall(unsafe { libc::sigaddset(&mut set, signal) })?;
        }
        // SAFETY: both sets are initialised and outlive the call.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(SignalsHeld(old))
    }

    /// Whether `signal` was held already before: by the thread's mask
    /// from before.
    pub(crate) fn held_before(&self, signal: i32) -> bool {
        // SAFETY: the mask filled by `pthread_sigmask` in `new`; a bad
        // signal number is at worst -1.
        unsafe { libc::sigismember(&self.0, signal) == 1 }
    }

    /// Takes back a `signal` pending for the calling thread (one it
    /// holds), if there is one, so that it is not delivered when the
    /// mask from before is back.
    pub(crate) fn discard_pending(&self, signal: i32) {
        // SAFETY: `sigset_t` is a plain C struct, valid when zeroed.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable signal set.
        unsafe { libc::sigemptyset(&mut set) };
        // SAFETY: as above; a bad signal number is refused by the call.
        unsafe { libc::sigaddset(&mut set, signal) };
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // A zero timeout: EAGAIN if none is pending; EINTR if a handler
        // of another signal ran, then look again.
        // SAFETY: a valid set and timeout; no siginfo is asked for.
        while unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &now) } < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
    }

    /// Gives the calling thread the mask from before: for a forked child
    /// of the thread that holds them (which inherited its mask and its
    /// copy of this), whose parent goes on holding them.
    pub(crate) fn release_here(&self) -> io::Result<()> {
        // SAFETY: the mask filled by `pthread_sigmask` in `new`.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        match r {
            0 => Ok(()),
            r => Err(io::Error::from_raw_os_error(r)),
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        let _ = self.release_here();
    }
}

/// Asks the kernel to send `SIGKILL` to the calling process when its parent
/// exits, and closes the race where the parent died before the request.
pub(crate) fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    syscall(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != parent {
        exit_now(1);
    }
    Ok(())
}

/// [`die_with_parent`] for a child forked by the thread `thread` of
/// `parent`. The kernel sends the signal when that thread ends (not the
/// process), and a thread that ended before the request was made never
/// sends it: then the calling process is killed now, as it would have been,
/// so that a daemon started from a thread that ends at once dies the same
/// way every time.
pub(crate) fn die_with_parent_thread(parent: u32, thread: u32) -> io::Result<()> {
    die_with_parent(parent)?;
    // SAFETY: signal 0 only asks whether the thread exists.
    let asked = syscall(unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            parent as libc::pid_t,
            thread as libc::pid_t,
            0,
        )
    });
    if matches!(asked, Err(e) if e.raw_os_error() == Some(libc::ESRCH)) {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as u32;
        kill(me, libc::SIGKILL)?;
    }
    Ok(())
}

/// A pid file descriptor: a handle on one process that never refers to
/// another process after the pid is reused.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; flags 0.
    let fd = syscall(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the process behind `pidfd`.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own; no siginfo, flags 0.
    syscall(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
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
    // SAFETY: `status` is a valid out-pointer.
    let r = syscall_retrying(|| unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) })?;
    if r == 0 {
        return Ok(None);
    }
    Ok(Some(if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }))
}

/// [`waitpid`] for the child that `pidfd` names (`waitid(P_PIDFD)`), not
/// its pid: once someone else has reaped the child (a handler that reaps
/// every child), its pid may be a sibling's, whose exit `waitpid` would
/// take. `Ok(None)` while it runs (and `block` is false);
/// `ErrorKind::InvalidInput` on a kernel without `P_PIDFD` (before Linux
/// 5.4), `ECHILD` once it was reaped elsewhere.
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<i32>> {
    /// `waitid`'s id type for a pidfd (Linux 5.4).
    const P_PIDFD: libc::idtype_t = 3;
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    // SAFETY: a zeroed `siginfo_t` is a valid out-parameter, whose
    // `si_pid` stays 0 when no child has exited (`WNOHANG`).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let fd = pidfd.as_raw_fd() as libc::id_t;
    // SAFETY: a descriptor the caller keeps open, and an out-pointer of
    // the right type.
    syscall_retrying(|| unsafe { libc::waitid(P_PIDFD, fd, &mut info, flags) })?;
    // SAFETY: `waitid` filled `info` for a child's exit, or left it zeroed.
    if unsafe { info.si_pid() } == 0 {
        return Ok(None);
    }
    // SAFETY: as above; a child's exit fills its status.
    let status = unsafe { info.si_status() };
    Ok(Some(if info.si_code == libc::CLD_EXITED {
        status
    } else {
        -status
    }))
}

/// A one-time installation (fork handlers, an exit hook, a panic hook)
/// that no fork copies half done. Not a `Once`: a process forked while a
/// thread of its parent was inside one would wait for that thread, which
/// it does not have.
///
/// Every installation runs inside the process's single installation slot,
/// which the fork gate ([`fork_gate_enter`], a `prepare` handler
/// registered when the program is loaded) keeps every fork out of: a fork
/// that comes while an installation runs waits for its end, and an
/// installation that begins while forks are under way waits for them to
/// be done (and the crate's other `prepare` handler waits for one before
/// it takes any lock: [`wait_for_installations`]). So no child finds a
/// lock taken by an installing thread it does not have, nor an
/// installation it cannot tell done from not begun. An installation must
/// not wait for anything that the `prepare` handlers a fork ran before the
/// gate may hold, such as an allocator's locks: it allocates nothing
/// through Rust's allocator.
pub(crate) struct InstallOnce(std::sync::atomic::AtomicBool);

/// The pid of the process whose thread is running an installation, or 0.
/// A child that finds its parent's pid here (a fork that bypassed the
/// gate) takes the slot over.
static INSTALLING: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The forks between the gate and the `fork` system call (counted from the
/// gate's `prepare` handler to its `parent` one): the count in the low 32
/// bits, the pid of the process they fork in the high ones (so that a
/// child of a fork that bypassed the gate does not wait for its parent's).
static FORKS_AT_GATE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether a fork of this process (`me`) is between the gate and the
/// `fork` system call.
fn forks_at_gate(me: u32) -> bool {
    let at_gate = FORKS_AT_GATE.load(std::sync::atomic::Ordering::SeqCst);
    at_gate >> 32 == u64::from(me) && at_gate as u32 != 0
}

impl InstallOnce {
    /// Not installed yet.
    pub(crate) const fn new() -> InstallOnce {
        InstallOnce(std::sync::atomic::AtomicBool::new(false))
    }

    /// Whether it is installed in this process (or in the parent it was
    /// forked from).
    pub(crate) fn is_installed(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs `install` unless it has run in this process (or in the parent
    /// it was forked from); a thread that finds another one of this
    /// process installing waits for it. An error leaves it not installed.
    pub(crate) fn run(&self, install: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        use std::sync::atomic::Ordering::{Release, SeqCst};
        // The common case without a system call.
        if self.is_installed() {
            return Ok(());
        }
        let me = getpid();
        loop {
            match INSTALLING.load(SeqCst) {
                // Another thread of this process is installing.
                state if state == me => std::thread::yield_now(),
                // Free, or taken by the process this one was forked from
                // (by a fork that bypassed the gate).
                state => {
                    if INSTALLING
                        .compare_exchange(state, me, SeqCst, SeqCst)
                        .is_ok()
                    {
                        break;
                    }
                }
            }
        }
        // Sequentially consistent with the gate: a fork that reaches it
        // from now on waits, and those that passed it before are counted.
        while forks_at_gate(me) {
            std::thread::yield_now();
        }
        let installed = if self.is_installed() {
            Ok(())
        } else {
            install()
        };
        if installed.is_ok() {
            self.0.store(true, Release);
        }
        INSTALLING.store(0, SeqCst);
        super::futex_wake(&INSTALLING, u32::MAX);
        installed
    }

    /// Says it is installed in this process: for a child fork handler
    /// (a fork that bypassed the gate may have copied the installation
    /// done but not yet marked so).
    pub(crate) fn mark_installed(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The fork gate's `prepare` handler, for a handler registered when the
/// program is loaded (so that it runs after the `prepare` handlers of
/// everything set up later, just before the fork): waits while a thread
/// of this process is installing something (see [`InstallOnce`]), then
/// counts this fork until [`fork_gate_leave`] or [`fork_gate_child`].
pub(crate) fn fork_gate_enter() {
    use std::sync::atomic::Ordering::SeqCst;
    let me = getpid();
    loop {
        // Never fails: the closure always gives a value.
        let _ = FORKS_AT_GATE.fetch_update(SeqCst, SeqCst, |at_gate| {
            Some(if at_gate >> 32 == u64::from(me) {
                at_gate + 1
            } else {
                u64::from(me) << 32 | 1
            })
        });
        if INSTALLING.load(SeqCst) != me {
            return;
        }
        // Out of the installer's way while it waits for the gate to empty.
        fork_gate_leave();
        wait_for_installation(me);
    }
}

/// Waits while a thread of this process is installing something (see
/// [`InstallOnce`]): for a `prepare` handler, before it takes any lock
/// that the installing thread could be waiting for, if only indirectly
/// (a thread that holds the lock the installation needs may be waiting
/// for it). The fork gate waits again, for an installation that began
/// after this.
pub(crate) fn wait_for_installations() {
    wait_for_installation(getpid());
}

fn wait_for_installation(me: u32) {
    loop {
        let installing = INSTALLING.load(std::sync::atomic::Ordering::SeqCst);
        if installing != me {
            return;
        }
        super::futex_wait(&INSTALLING, installing, Deadline::Never);
    }
}

/// Stops counting this fork (the gate's `parent` handler: the fork is
/// done).
pub(crate) fn fork_gate_leave() {
    FORKS_AT_GATE.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
}

/// The fork gate's `child` handler: the child has no fork under way.
pub(crate) fn fork_gate_child() {
    FORKS_AT_GATE.store(0, std::sync::atomic::Ordering::SeqCst);
}

/// Makes the program's loader call `$init` (an `extern "C" fn()`) when it
/// loads the object this crate is linked into: before `main` and before
/// any thread for a program, with the other constructors of its object
/// (an ELF `.init_array` entry; `#[used]` keeps it in an rlib's link).
macro_rules! run_at_load {
    ($name:ident = $init:path) => {
        #[used]
        #[link_section = ".init_array"]
        static $name: extern "C" fn() = $init;
    };
}
pub(crate) use run_at_load;

/// Registers fork handlers: `prepare` runs in the forking thread before the
/// fork, `parent` and `child` after it on each side.
pub(crate) fn at_fork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> io::Result<()> {
    // SAFETY: the handlers are plain functions valid for the process's life.
    errno_result(unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) })
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

/// Has `at_end` called as the calling thread ends (not when its process
/// exits), after the destructors of every Rust thread-local (glibc runs
/// pthread keys' destructors after those). One key per
/// process, made on first use by whichever `at_end` comes first: every
/// caller must pass the same function.
///
/// # Errors
/// If no pthread key is left.
pub(crate) fn call_at_thread_end(
    at_end: unsafe extern "C" fn(*mut libc::c_void),
) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    /// The key plus one, 0 until made.
    static KEY: AtomicU64 = AtomicU64::new(0);
    let key = match KEY.load(Ordering::Acquire) {
        0 => {
            let mut mine: libc::pthread_key_t = 0;
            // SAFETY: `mine` is writable; `at_end` is a valid destructor.
            errno_result(unsafe { libc::pthread_key_create(&mut mine, Some(at_end)) })?;
            match KEY.compare_exchange(0, u64::from(mine) + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => mine,
                Err(theirs) => {
                    // SAFETY: `mine` was made above and never used.
                    unsafe { libc::pthread_key_delete(mine) };
                    (theirs - 1) as libc::pthread_key_t
                }
            }
        }
        k => (k - 1) as libc::pthread_key_t,
    };
    // A value that is not null has the destructor called.
    // SAFETY: `key` is a live key of this process.
    errno_result(unsafe {
        libc::pthread_setspecific(key, std::ptr::NonNull::<u8>::dangling().as_ptr().cast())
    })
}

#[cfg(test)]
mod tests {
    use super::{pid_alive_since, start_time, state_and_start};

    #[test]
    fn a_start_time_tells_a_process_from_one_with_its_pid_before() {
        let me = std::process::id();
        let start = start_time();
        assert_ne!(start, 0);
        assert!(pid_alive_since(me, start));
        assert!(pid_alive_since(me, 0));
        assert!(!pid_alive_since(me, start + 1));
        // A command name with a parenthesis and spaces in it.
        let stat = "7 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19";
        assert_eq!(state_and_start(stat), Some(("S", Some(4242))));
    }

    #[test]
    fn kill_of_no_process_is_esrch() {
        // Beyond pid_max (at most 2^22): no process has this pid.
        let e = super::kill(1 << 30, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
        // Not a process group, not every process.
        for pid in [0, u32::MAX] {
            let e = super::kill(pid, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
        }
    }
}
