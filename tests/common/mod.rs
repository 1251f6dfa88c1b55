//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use multiproc::segment::Segment;
use multiproc::{Process, Scope};

/// The environment variable that tells a re-run test binary which helper to be.
pub const HELPER_ENV: &str = "MULTIPROC_TEST_HELPER";

/// Runs this test binary again as an unrelated process (exec'd, not forked),
/// executing only its `helper_entry` test with `HELPER_ENV=arg` and real
/// stdout; returns that stdout. Fails the test if the helper fails.
pub fn run_helper(arg: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_entry", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, arg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `f`; if it has not returned after `limit`, prints what hung and
/// aborts the whole test binary, so a deadlock fails CI instead of hanging it.
/// Children started with `daemon(true)` die with the test's thread.
pub fn watchdog<R>(what: &str, limit: Duration, f: impl FnOnce() -> R) -> R {
    let (done, wait) = mpsc::channel::<()>();
    let what = what.to_owned();
    let dog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            eprintln!("watchdog: {what} did not finish within {limit:?}; aborting");
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
            let line = format!("child {} panicked: {msg}\n", std::process::id());
            // SAFETY: writing a valid buffer to fd 2.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            multiproc::process::exit(1);
        }
    }
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
