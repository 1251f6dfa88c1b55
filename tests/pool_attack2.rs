//! Another attack on the process tools: `Process` under its three start
//! methods and the local `Pool`, with cases the earlier reviews left out.
//!
//! A spawned child is this test binary run again, so the binary has its
//! own `main` (`harness = false`), which calls `multiproc::spawn_init`
//! first.

mod common;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use common::harness::tests;
use common::{join, static_child, watchdog};
use multiproc::process::start_forkserver;
use multiproc::{entry, Process};

const LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    multiproc::spawn_init(&[&entry!(returns), &entry!(panic_with_bomb)]);
    match std::env::var(common::HELPER_ENV).as_deref() {
        Ok("log-server-first") => return log_from_a_forkserver_child(true),
        Ok("log-logger-first") => return log_from_a_forkserver_child(false),
        _ => {}
    }
    common::harness::run(&tests![
        a_reaping_sigchld_handler_fails_no_spawned_start,
        forkserver_children_log_their_life_as_python_does,
        a_forkserver_child_runs_in_its_parents_working_directory,
        a_child_whose_panic_payload_panics_on_drop_exits_1,
        a_logger_that_panics_breaks_no_child_and_no_pool,
        a_hand_over_whose_drop_panics_loses_no_child,
        a_waker_that_panics_leaves_the_pool_serving,
        imap_unordered_in_a_callback_of_the_same_pool_is_an_error,
    ])
}

fn returns(_: ()) {}

extern "C" fn reap_every_child(_: libc::c_int) {
    // SAFETY: waitpid is async-signal-safe; a null status is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Makes the calling thread run only when nothing else on its CPU wants
/// to (`SCHED_IDLE`), its children scheduled as usual: a child it starts
/// then runs to its end before the thread goes on, as on a loaded machine.
fn yield_to_children() {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: a cpu_set_t is an array of integers: all zeroes is valid.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid set of its size, for the calling thread (0).
    let r = unsafe { libc::sched_getaffinity(0, size, &mut allowed) };
    assert_eq!(
        r,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    // The first CPU this thread may run on (not always CPU 0 in a container).
    let first = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads a valid set, at an index below its size.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .expect("a thread runs on some CPU");
    // SAFETY: as for `allowed`.
    let mut one_cpu: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET on a valid set, at an index below its size.
    unsafe { libc::CPU_SET(first, &mut one_cpu) };
    // SAFETY: a valid set of its size, for the calling thread (0).
    let r = unsafe { libc::sched_setaffinity(0, size, &one_cpu) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid policy and parameter for the calling thread (0).
    let r = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE | libc::SCHED_RESET_ON_FORK, &param)
    };
    assert_eq!(
        r,
        0,
        "sched_setscheduler: {}",
        std::io::Error::last_os_error()
    );
}

/// A program whose SIGCHLD handler reaps every child starts spawned
/// children that exit at once: every start succeeds, as a forked or a
/// fork server's child's does. Before, a spawned child could exit and be
/// reaped before `start` had its pid file descriptor: the start failed
/// with `ESRCH` after the child had run its work, and the pid it then
/// killed was free for reuse.
fn a_reaping_sigchld_handler_fails_no_spawned_start() {
    watchdog("spawns under a reaping SIGCHLD handler", LIMIT, || {
        let c = static_child(|| {
            let handler = reap_every_child as extern "C" fn(libc::c_int);
            // SAFETY: installs a handler (async-signal-safe) in this child.
            unsafe { libc::signal(libc::SIGCHLD, handler as libc::sighandler_t) };
            yield_to_children();
            for _ in 0..20 {
                let mut p = Process::spawn(entry!(returns), ());
                let started = p.start();
                assert!(started.is_ok(), "{started:?}");
                let joined = p.join_timeout(LIMIT);
                assert!(
                    matches!(
                        joined,
                        Ok(Some(0)) | Err(multiproc::Error::ProcessState { .. })
                    ),
                    "{joined:?}"
                );
            }
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

fn log_line(_: ()) {
    log::warn!("from the child");
}

/// Logs at level INFO from a child of the fork server, which is started
/// before the logger is set up (`server_first`, as the crate advises: the
/// server first thing in `main`) or after.
fn log_from_a_forkserver_child(server_first: bool) -> ExitCode {
    if server_first {
        start_forkserver().unwrap();
    }
    multiproc::log_to_stderr(log::LevelFilter::Info).unwrap();
    let mut p = Process::forkserver(log_line, ()).with_name("logger-ForkServer");
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    ExitCode::SUCCESS
}

/// A child of the fork server reports its life as a forked or a spawned
/// one does, and as Python's forkserver children do (whose preparation
/// data carries the parent's logging set-up with each child), whether
/// the server started before the logger was set up or after. Before, it
/// logged no `child process calling self.run()`, and nothing at all when
/// the server had started first.
fn forkserver_children_log_their_life_as_python_does() {
    for mode in ["log-logger-first", "log-server-first"] {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.env(common::HELPER_ENV, mode);
        let (status, _, err) = common::run_with_deadline(&mut command, b"", LIMIT);
        assert!(status.success(), "{mode}: {status}: {err}");
        let name = "logger-ForkServer";
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.contains(&format!("/{name}] ")))
            .collect();
        assert_eq!(
            lines,
            [
                format!("[INFO/{name}] child process calling self.run()"),
                format!("[WARNING/{name}] from the child"),
                format!("[INFO/{name}] process shutting down"),
                format!("[INFO/{name}] process exiting with exitcode 0"),
            ],
            "{mode}: {err}"
        );
    }
}

/// Writes the child's working directory into the file `out` (a path
/// from the root).
fn report_cwd(out: std::path::PathBuf) {
    let cwd = std::env::current_dir().unwrap();
    std::fs::write(out, cwd.as_os_str().as_encoded_bytes()).unwrap();
}

/// A child of the fork server runs in the directory its parent is in when
/// it starts the child, not the one the parent was in when it started the
/// server (first thing in `main`, as advised), as Python's forkserver
/// children do (their preparation data carries the parent's `getcwd()`):
/// a relative path names the same file in both.
fn a_forkserver_child_runs_in_its_parents_working_directory() {
    watchdog("a forkserver child's working directory", LIMIT, || {
        let dir = std::env::temp_dir().join(format!("multiproc-cwd-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let out = dir.join("seen");
        let c = static_child({
            let (dir, out) = (dir.clone(), out.clone());
            move || {
                start_forkserver().unwrap();
                std::env::set_current_dir(&dir).unwrap();
                let mut p = Process::forkserver(report_cwd, out.clone());
                p.start().unwrap();
                assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0));
                let seen = std::fs::read(&out).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&seen),
                    std::env::current_dir().unwrap().to_string_lossy(),
                    "the child's working directory"
                );
            }
        });
        let code = join(&c, LIMIT);
        let _ = std::fs::remove_file(&out);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(code, 0);
    });
}

/// A panic payload whose drop panics again.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the payload's drop panics too");
    }
}

fn panic_with_bomb(_: ()) {
    std::panic::panic_any(Bomb)
}

/// Marks, if dropped in a process other than `owner`, that code of that
/// process's stack ran there.
struct Witness {
    owner: u32,
    escaped: multiproc::RawValue<u32>,
}

impl Drop for Witness {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            self.escaped.set(std::process::id());
        }
    }
}

/// A child whose closure panics with a payload whose drop panics again
/// ends with exit code 1, as for any panic, under each start method.
/// Before, the second panic unwound out of the forked child's start into
/// the parent's code that had called `start` (dropping the parent's
/// values there: a guard, a temporary file), and the child ended as that
/// code did (exit code 0 when the thread's end was the process's); a
/// spawned child's unwound out of `spawn_init` into `main`.
fn a_child_whose_panic_payload_panics_on_drop_exits_1() {
    watchdog("panic payloads that panic on drop", LIMIT, || {
        let escaped = multiproc::RawValue::new(0u32).unwrap();
        let code = {
            let _witness = Witness {
                owner: std::process::id(),
                escaped: escaped.clone(),
            };
            let mut p = Process::new(|| panic_with_bomb(()));
            p.start().unwrap();
            p.join_timeout(LIMIT).unwrap()
        };
        let mut codes = vec![("fork", code)];
        for (how, mut p) in [
            ("spawn", Process::spawn(entry!(panic_with_bomb), ())),
            ("forkserver", Process::forkserver(panic_with_bomb, ())),
        ] {
            p.start().unwrap();
            codes.push((how, p.join_timeout(LIMIT).unwrap()));
        }
        let want = [
            ("fork", Some(1)),
            ("spawn", Some(1)),
            ("forkserver", Some(1)),
        ];
        assert_eq!(
            (escaped.get(), &codes[..]),
            (0, &want[..]),
            "(the pid of a child that ran its parent's code, exit codes)"
        );
    });
}

/// A logger that cannot write: as one that prints with `println!` to a
/// pipe whose reader has gone (`program | head`), which panics.
struct PanickingLogger;

impl log::Log for PanickingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, _: &log::Record<'_>) {
        panic!("the logger cannot write");
    }

    fn flush(&self) {}
}

fn double(x: u64) -> u64 {
    x * 2
}

/// The records of the crate's own (a child's life, a pool's) go to a
/// logger that panics: children run and end with their own exit codes,
/// and pools work. Before, a forked child's first record panicked out of
/// its start into its parent's code, which it ran as its own; a pool's
/// scheduler thread died at its first record, and the pool could not be
/// built.
fn a_logger_that_panics_breaks_no_child_and_no_pool() {
    watchdog("a logger that panics", LIMIT, || {
        let c = static_child(|| {
            log::set_logger(&PanickingLogger).unwrap();
            log::set_max_level(log::LevelFilter::Trace);
            let escaped = multiproc::RawValue::new(0u32).unwrap();
            let code = {
                let _witness = Witness {
                    owner: std::process::id(),
                    escaped: escaped.clone(),
                };
                let mut p = Process::new(|| ());
                p.start().unwrap();
                p.join_timeout(LIMIT).unwrap()
            };
            assert_eq!((escaped.get(), code), (0, Some(0)), "fork");
            let mut p = Process::forkserver(returns, ());
            p.start().unwrap();
            assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0), "forkserver");
            let pool = multiproc::Pool::with_processes(1).unwrap();
            assert_eq!(pool.map(double, 0..4u64).unwrap(), [0, 2, 4, 6]);
            pool.close();
            pool.join().unwrap();
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// A value whose drop panics in the process `.0` only.
struct PanicsInParent(u32);

impl Drop for PanicsInParent {
    fn drop(&mut self) {
        if std::process::id() == self.0 {
            panic!("the parent's copy panics on drop");
        }
    }
}

/// A value moved into a forked child whose parent's copy panics when
/// dropped at the hand-over: the child runs all the same, as the value's
/// owner, and is recorded and joined; the panic reaches the caller of
/// `start`. Before, the child was left out of the record (the handle said
/// "not started"), ran nothing, and was never reaped.
fn a_hand_over_whose_drop_panics_loses_no_child() {
    watchdog("a hand-over whose drop panics", LIMIT, || {
        let ran = multiproc::RawValue::new(0u32).unwrap();
        let value = PanicsInParent(std::process::id());
        let mut p = Process::new({
            let ran = ran.clone();
            move || {
                drop(value);
                ran.set(1);
            }
        });
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.start()));
        assert!(started.is_err(), "the drop's panic reaches the caller");
        assert!(p.pid().is_some(), "the child is recorded");
        assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0));
        assert_eq!(ran.get(), 1, "the child ran");
    });
}

/// The gate a task waits at: made before the pool, so its workers share it.
static GATE: std::sync::OnceLock<multiproc::Event> = std::sync::OnceLock::new();

fn wait_at_the_gate(_: ()) -> bool {
    GATE.get().is_some_and(|gate| gate.wait_timeout(LIMIT))
}

/// A waker that panics when woken, as the async book's executor does once
/// its run queue is gone.
struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("this executor is gone");
    }
}

/// A task awaited (`get_async`) by a task of an executor whose waker
/// panics: the pool's scheduler thread, which wakes it, goes on serving.
/// Before, it died there, and every later result waited for ever.
fn a_waker_that_panics_leaves_the_pool_serving() {
    watchdog("a waker that panics", LIMIT, || {
        let _ = GATE.set(multiproc::Event::new().unwrap());
        let pool = multiproc::Pool::with_processes(2).unwrap();
        let waiting = pool.apply_async(wait_at_the_gate, ());
        let waker = std::task::Waker::from(std::sync::Arc::new(PanickingWaker));
        let mut get = Box::pin(waiting.get_async());
        let polled = get
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending(), "the task waits at the gate");
        GATE.get().unwrap().set();
        assert!(
            waiting.get_timeout(LIMIT).unwrap(),
            "the task passed the gate"
        );
        drop(get);
        let later = pool.apply_async(double, 21);
        assert_eq!(later.get_timeout(Duration::from_secs(20)).unwrap(), 42);
        pool.close();
        pool.join().unwrap();
    });
}

/// `imap_unordered` of a pool in one of its own callbacks, which run on
/// the thread that delivers the results, fails each item at once with a
/// `PoolState` error, as `imap`, `map` and `get` do there. Before, it
/// waited for a delivery that its own thread would make: the pool hung.
fn imap_unordered_in_a_callback_of_the_same_pool_is_an_error() {
    watchdog("imap_unordered in a callback", LIMIT, || {
        let pool = std::sync::Arc::new(multiproc::Pool::with_processes(1).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = pool.clone();
        let first = pool.apply_async_with(double, 1, move |_| {
            let got: Vec<_> = inner.imap_unordered(double, 0..3u64, None).collect();
            let _ = tx.send(got);
        });
        let got = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("imap_unordered in a callback answered");
        assert!(!got.is_empty());
        for r in &got {
            assert!(matches!(r, Err(multiproc::Error::PoolState(_))), "{got:?}");
        }
        assert_eq!(first.get_timeout(LIMIT).unwrap(), 2);
        pool.terminate();
        pool.join().unwrap();
    });
}
