//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use multiproc::segment::Segment;
use multiproc::{Process, Scope};

pub mod cpython;
pub mod fastpath;
pub mod harness;
pub mod pickle;
pub mod procfs;
pub mod redis;
pub mod wakers;

/// The environment variable that tells a test binary run again which
/// helper to be (its `main` reads it before running any test).
pub const HELPER_ENV: &str = "MULTIPROC_TEST_HELPER";

/// Runs this test binary again as an unrelated process (exec'd, not forked)
/// with `HELPER_ENV=arg`; returns its stdout. Fails the test if the helper
/// fails or has not exited after `limit`.
pub fn run_helper(arg: &str, limit: Duration) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(HELPER_ENV, arg);
    let (status, out, err) = run_with_deadline(&mut command, b"", limit);
    assert!(status.success(), "helper {arg:?}: {status}: {err}");
    out
}

/// Runs `command` with `stdin` on its standard input; its exit status,
/// stdout and stderr. Kills it and fails the test if it has not exited
/// after `limit`.
///
/// Its standard streams are private files, not pipes: a process that
/// another test forks meanwhile inherits the ends of any pipe open then,
/// and reading a pipe to its end would wait for that process too.
pub fn run_with_deadline(
    command: &mut Command,
    stdin: &[u8],
    limit: Duration,
) -> (ExitStatus, String, String) {
    let input = memory_file(c"test-stdin");
    (&input).write_all(stdin).unwrap();
    (&input).seek(SeekFrom::Start(0)).unwrap();
    let (out, err) = (memory_file(c"test-stdout"), memory_file(c"test-stderr"));
    let mut child = command
        .stdin(input)
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap();
    let exited = wait_until(limit, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let (out, err) = (contents(out), contents(err));
    assert!(
        exited,
        "{command:?} did not exit within {limit:?}; killed.\nstdout: {out}\nstderr: {err}"
    );
    (status, out, err)
}

/// A new file in memory, closed on exec (a child gets its copy as a
/// standard stream), written in append mode: the processes that share it
/// share one file offset, which the kernel does not lock for a memory
/// file, so without it two writers at once can write over each other.
fn memory_file(name: &std::ffi::CStr) -> File {
    // SAFETY: a NUL-terminated name and a valid flag.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: F_SETFL on the descriptor just made.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_APPEND) };
    assert!(r == 0, "O_APPEND: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor that nothing else owns.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What was written to `file`, from its start.
fn contents(mut file: File) -> String {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut bytes).unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs `f`; if it has not returned after `limit`, prints what hung and
/// aborts the whole test binary, so a deadlock fails CI instead of hanging it.
/// Children started with `daemon(true)` die with the test's thread.
pub fn watchdog<R>(what: &str, limit: Duration, f: impl FnOnce() -> R) -> R {
    let (done, wait) = mpsc::channel::<()>();
    let what = what.to_owned();
    let dog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            // Straight to fd 2: the harness captures a test's eprintln,
            // and the abort would lose it.
            write_stderr(&format!(
                "watchdog: {what} did not finish within {limit:?}; aborting\n{}",
                procfs::threads_report(std::process::id())
            ));
            std::process::abort();
        }
    });
    let r = f();
    drop(done);
    dog.join().unwrap();
    r
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
/// For conditions no primitive can wait on (another process's state).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Waits until `stage` is one of `wanted` (polling, so a forked helper
/// with no test harness may wait too); the stage then, or `None` after
/// `limit`.
pub fn stage_in(stage: &multiproc::RawValue<u32>, wanted: &[u32], limit: Duration) -> Option<u32> {
    let mut now = 0;
    wait_until(limit, || {
        now = stage.atomic().load(std::sync::atomic::Ordering::SeqCst);
        wanted.contains(&now)
    })
    .then_some(now)
}

/// The parent's side of a reused-pid test: lets the helpers squat (puts
/// `squat` in `stage`), then waits up to `limit` for their outcome (a
/// stage past it). `None`, said so, if `whose` pid could not be taken
/// again (`no_pid`): nothing to test.
pub fn squat_outcome(
    stage: &multiproc::RawValue<u32>,
    [squat, no_pid]: [u32; 2],
    whose: &str,
    limit: Duration,
) -> Option<u32> {
    use std::sync::atomic::Ordering::SeqCst;
    stage.atomic().store(squat, SeqCst);
    assert!(wait_until(limit, || stage.atomic().load(SeqCst) > squat));
    let outcome = stage.atomic().load(SeqCst);
    if outcome == no_pid {
        eprintln!("{whose} pid could not be taken again: nothing to test");
        return None;
    }
    Some(outcome)
}

/// A segment name unique to this test process, unlinked when dropped.
pub struct TempName(pub String);

impl TempName {
    pub fn new(tag: &str) -> Self {
        TempName(format!("test-{tag}-{}", std::process::id()))
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.0);
    }
}

impl std::ops::Deref for TempName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A fresh directory of the test's own (named after `tag` and this
/// process), removed with what is in it when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mp-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` while this process may open no new descriptor (its
/// `RLIMIT_NOFILE` soft limit at 0; restored after, even if `f` panics).
/// The limit is the whole process's: nothing else may run meanwhile.
pub fn with_no_new_descriptors<R>(f: impl FnOnce() -> R) -> R {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit to write.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: old.rlim_max,
    };
    // SAFETY: valid rlimits, read only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &none) }, 0);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A daemon child of scope `s` running `f`, started at once. A panic in
/// `f` is printed straight to fd 2 (the test harness's output capture does
/// not reach a forked child) and gives exit code 1.
pub fn child<'a>(s: &'a Scope<'a, '_>, f: impl FnOnce() + Send + 'a) -> Process<'a> {
    started(s.process(reporting(f)))
}

/// As [`child`], for a closure that borrows nothing: no scope needed.
pub fn static_child(f: impl FnOnce() + Send + 'static) -> Process<'static> {
    started(Process::new(reporting(f)))
}

fn started(p: Process<'_>) -> Process<'_> {
    let mut p = p.daemon(true);
    p.start().expect("start child");
    p
}

/// `f`, with a panic printed straight to fd 2 and turned into exit code 1.
fn reporting(f: impl FnOnce() + Send) -> impl FnOnce() + Send {
    move || {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            write_stderr(&format!("child {} panicked: {msg}\n", std::process::id()));
            multiproc::process::exit(1);
        }
    }
}

/// Runs `f` while another thread keeps taking `lock` and holding it most
/// of the time: a lock that a child forked meanwhile must never find held.
pub fn while_another_thread_holds<R>(
    lock: &'static std::sync::Mutex<u64>,
    f: impl FnOnce() -> R,
) -> R {
    while_another_thread_runs(
        || {
            let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..20_000 {
                *g = std::hint::black_box(*g + 1);
            }
        },
        f,
    )
}

/// Runs `f` while another thread runs `busy` over and over, until `f`
/// ends (even by a panic).
pub fn while_another_thread_runs<R>(busy: impl Fn() + Sync, f: impl FnOnce() -> R) -> R {
    /// Stops the busy thread when `f` ends, even by a panic.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Relaxed) {
                busy();
            }
        });
        let _stop = Stop(&stop);
        f()
    })
}

/// A tokio runtime on two worker threads, with timers and I/O.
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A tokio runtime on the calling thread, with timers and I/O.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// As [`static_child`], running the future that `f` makes under its own
/// runtime, made by `rt` ([`multi_thread`] or [`current_thread`]).
pub fn async_child<F>(
    rt: fn() -> tokio::runtime::Runtime,
    f: impl FnOnce() -> F + Send + 'static,
) -> Process<'static>
where
    F: std::future::Future<Output = ()>,
{
    static_child(move || rt().block_on(f()))
}

/// Writes `text` to fd 2 itself, past any output capture.
fn write_stderr(text: &str) {
    // SAFETY: writing a valid buffer to fd 2.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

/// Joins `p` within `limit` and returns its exit code; kills it and fails
/// the test if it does not exit in time.
pub fn join(p: &Process<'_>, limit: Duration) -> i32 {
    match p.join_timeout(limit).expect("join") {
        Some(code) => code,
        None => {
            p.kill().unwrap();
            panic!("{} did not exit within {limit:?}", p.name());
        }
    }
}

/// Opens `/dev/null` until the descriptor table is full.
pub fn fill_descriptors() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("open /dev/null: {e}"),
        }
    }
}

/// Sets this process's descriptor limit (soft and hard) to `n`.
pub fn lower_nofile(n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: lowers this process's own descriptor limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// A Manager server of its own (`manager::serve`, as `multiproc manager
/// serve` runs it; a daemon, killed when the test process exits) on a
/// Unix socket named after this process and `name`, with `key`: the
/// process, its socket's path, and a connection to it.
pub fn serve_manager(
    name: &str,
    key: &[u8],
) -> (
    Process<'static>,
    std::path::PathBuf,
    multiproc::conn::Connection,
) {
    serve_manager_registered(name, key, &[])
}

/// [`serve_manager`] with the registered names `names` (`(name, typeid)`,
/// as `multiproc manager serve --object NAME=TYPEID` gives them).
pub fn serve_manager_registered(
    name: &str,
    key: &[u8],
    names: &[(&str, &str)],
) -> (
    Process<'static>,
    std::path::PathBuf,
    multiproc::conn::Connection,
) {
    use multiproc::conn::{connect, Address};
    let names: Vec<(String, String)> = names
        .iter()
        .map(|&(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    let path = std::env::temp_dir().join(format!(
        "multiproc-test-serve-{}-{name}.sock",
        std::process::id()
    ));
    let address = Address::Unix(path.clone());
    let mut server = Process::new({
        let (address, key) = (address.clone(), key.to_vec());
        move || {
            // As a server started at a terminal: the stop signals' default
            // actions, whatever this test inherited (a background job's
            // shell ignores SIGINT, `nohup` SIGHUP).
            default_stop_signals();
            let _ = multiproc::manager::serve_registered(&address, &key, &names, |_| {});
        }
    })
    .daemon(true);
    server.start().unwrap();
    assert!(wait_until(Duration::from_secs(10), || connect(
        &address,
        Some(key)
    )
    .is_ok()));
    let conn = connect(&address, Some(key)).unwrap();
    (server, path, conn)
}

/// Gives SIGINT, SIGTERM and SIGHUP their default actions in this process,
/// as at a terminal, whatever it inherited (a background job's shell
/// ignores SIGINT, `nohup` SIGHUP): for tests that stop servers with them.
pub fn default_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: resets one signal's disposition; nothing else is touched.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// A condition's predicate that takes one of `tokens` if there is one,
/// counting it in `taken`; whether it took one.
pub fn take_token(tokens: &multiproc::RawValue<u32>, taken: &multiproc::RawValue<u32>) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    let t = tokens.atomic();
    if t.load(SeqCst) > 0 {
        t.fetch_sub(1, SeqCst);
        taken.atomic().fetch_add(1, SeqCst);
        true
    } else {
        false
    }
}

/// Two threads binding `address` at once (released together by a
/// barrier): what each bind gave.
pub fn two_binds_at_once(
    address: &multiproc::conn::Address,
) -> Vec<multiproc::Result<multiproc::conn::Listener>> {
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let binders: Vec<_> = (0..2)
        .map(|_| {
            let (start, address) = (start.clone(), address.clone());
            thread::spawn(move || {
                start.wait();
                multiproc::conn::Listener::bind(&address, None)
            })
        })
        .collect();
    binders.into_iter().map(|t| t.join().unwrap()).collect()
}

/// A pool task's result type whose decoding panics in the parent (for 13).
#[derive(Debug, PartialEq)]
pub struct Touchy(pub u64);

impl serde::Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <u64 as serde::Deserialize>::deserialize(d)?;
        if v == 13 {
            panic!("unlucky");
        }
        Ok(Touchy(v))
    }
}

/// A pool task whose result is a [`Touchy`].
pub fn touchy(x: u64) -> Touchy {
    Touchy(x)
}

/// Forks until a child gets pid `target`, which runs `then` and ends;
/// `false` if none did. Needs the right to write `ns_last_pid` (root).
pub fn fork_as(target: u32, then: impl FnOnce()) -> bool {
    for _ in 0..1000 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", target - 1)).is_err() {
            return false;
        }
        // SAFETY: the forking process has one thread; the child only ends
        // at once, or runs `then` as that process's only thread.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: getpid cannot fail.
            if unsafe { libc::getpid() } as u32 == target {
                then();
            }
            // SAFETY: ending the child, without the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return false;
        }
        // SAFETY: reaping the child just forked.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        if pid as u32 == target {
            return true;
        }
    }
    false
}

/// A small xorshift generator of arbitrary numbers: deterministic from its
/// seed (not 0), so that a failing round repeats.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock (the seed is printed, under `what`).
    pub fn from_clock(what: &str) -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("{what}: seed {seed:#x}");
        Rng(seed)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (not 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A word a broken process might leave: an edge value or random bits.
    pub fn word(&mut self) -> u32 {
        const EDGES: [u32; 8] = [0, 1, 2, 3, 0x7fff_ffff, 0x8000_0000, u32::MAX - 1, u32::MAX];
        match self.next() % 3 {
            0 => EDGES[(self.next() % 8) as usize],
            _ => self.next() as u32,
        }
    }
}

/// Puts this process in a mount namespace of its own with a `/dev/shm` of
/// its own (a tmpfs, of at most `size`: `"1m"`; `None` for the default),
/// where no other test's segments are and its own reach no other; false
/// if it cannot (no `CAP_SYS_ADMIN`).
pub fn private_dev_shm(size: Option<&str>) -> bool {
    use std::ffi::CString;
    let data = size.map(|s| CString::new(format!("size={s}")).unwrap());
    let data = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast());
    let null = std::ptr::null();
    // SAFETY: unshare takes no pointer; it changes this process only.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0;
    // SAFETY: a valid C string, and nulls where mount takes them.
    let private = || unsafe { libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, null.cast()) } == 0;
    // SAFETY: valid C strings, and `data` one or null.
    let tmpfs = || unsafe { libc::mount(c"tmpfs".as_ptr(), c"/dev/shm".as_ptr(), c"tmpfs".as_ptr(), 0, data) } == 0;
    unshared && private() && tmpfs()
}

/// Forks a child of the calling thread that only waits for signals until
/// it is killed (as a child forked by another thread of a program would
/// hold what was open at the fork); its pid.
pub fn fork_idle_child() -> u32 {
    // SAFETY: the child only waits for signals (pause is async-signal-safe)
    // until it is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: as above.
            unsafe { libc::pause() };
        }
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    pid as u32
}
