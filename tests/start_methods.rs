//! The same Process checks under the three start methods, fork, spawn and
//! forkserver, with real children. And the spawned child's distrust of its
//! payload: bad ones end it with a message.
//!
//! A spawned child is this test binary run again, so the binary has its
//! own `main` (`harness = false`), which calls `multiproc::spawn_init`
//! first, as the crate asks of every program that spawns: in a spawned
//! child it runs the child's work and never returns.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::harness::tests;
use common::{join, wait_until, watchdog};
use multiproc::process::Entry;
use multiproc::{
    active_children, current_process, entry, parent_process, process, Process, RawValue,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The argument that makes a spawned child of this binary copy its payload
/// to `dump_path` instead of running it (see `real_payload`).
const DUMP_PAYLOAD: &str = "multiproc-test-dump-payload";

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(DUMP_PAYLOAD) {
        dump_payload();
    }
    multiproc::spawn_init(&[
        &entry!(log_line),
        &entry!(returns),
        &entry!(exits),
        &entry!(panics),
        &entry!(sleeps),
        &entry!(identity),
        &entry!(touch),
        &entry!(touch_all),
    ]);
    if std::env::var_os(common::HELPER_ENV).is_some() {
        logging_helper();
        return ExitCode::SUCCESS;
    }
    common::harness::run(&tests![
        log_lines_carry_the_process_name,
        children_log_their_life_as_python_does,
        exit_codes_fork,
        exit_codes_spawn,
        exit_codes_forkserver,
        names_and_parents_fork,
        names_and_parents_spawn,
        names_and_parents_forkserver,
        shared_memory_by_name_fork,
        shared_memory_by_name_spawn,
        shared_memory_by_name_forkserver,
        forkserver_children_never_inherit_a_lock_held_by_another_thread,
        active_children_and_join_agree_on_a_forkserver_child,
        active_children_lists_running_children_only,
        the_main_process_has_no_parent_process,
        a_spawned_child_runs_only_a_listed_entry_on_a_well_formed_payload,
        a_payload_on_stdin_is_never_run,
        a_child_is_spawned_by_a_process_whose_standard_streams_are_closed,
        a_start_that_fails_can_be_retried_fork,
        a_start_that_fails_can_be_retried_spawn,
        a_start_that_fails_can_be_retried_forkserver,
    ])
}

fn log_line(_: ()) {
    log::warn!("from the child");
}

/// Logs from the main process and from a forked and a spawned child.
fn logging_helper() {
    multiproc::log_to_stderr(log::LevelFilter::Info).unwrap();
    log::info!("from the parent");
    log::debug!("not shown: below the level");
    for start in [Start::Fork, Start::Spawn] {
        let mut p = make(start, entry!(log_line), ()).with_name(format!("logger-{start:?}"));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 0);
    }
}

fn log_lines_carry_the_process_name() {
    watchdog("logging", LIMIT, || {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.env(common::HELPER_ENV, "log");
        let (status, _, err) = common::run_with_deadline(&mut command, b"", LIMIT);
        assert!(status.success(), "{status}: {err}");
        assert!(err.contains("[INFO/MainProcess] from the parent"), "{err}");
        assert!(
            err.contains("[WARNING/logger-Fork] from the child"),
            "{err}"
        );
        assert!(
            err.contains("[WARNING/logger-Spawn] from the child"),
            "{err}"
        );
        assert!(!err.contains("below the level"), "{err}");
    });
}

/// Forked and spawned children report their life as Python's do, at
/// `log_to_stderr(INFO)`: Python 3.12's `[INFO/Process-1] child process
/// calling self.run()`, `process shutting down` and `process exiting with
/// exitcode 0` for each child, with the child's own records in between,
/// and the main process's `process shutting down` when it exits.
fn children_log_their_life_as_python_does() {
    watchdog("lifecycle logging", LIMIT, || {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.env(common::HELPER_ENV, "log");
        let (status, _, err) = common::run_with_deadline(&mut command, b"", LIMIT);
        assert!(status.success(), "{status}: {err}");
        for name in ["logger-Fork", "logger-Spawn"] {
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
                "{err}"
            );
        }
        let main: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("/MainProcess] "))
            .collect();
        assert_eq!(
            main,
            [
                "[INFO/MainProcess] from the parent",
                "[INFO/MainProcess] process shutting down"
            ],
            "{err}"
        );
    });
}

#[derive(Clone, Copy, Debug)]
enum Start {
    Fork,
    Spawn,
    ForkServer,
}

/// A process running `entry` on `args`, started either way.
fn make<A>(start: Start, entry: Entry<A>, args: A) -> Process<'static>
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    match start {
        Start::Fork => Process::new(move || entry.function()(args)),
        Start::Spawn => Process::spawn(entry, args),
        Start::ForkServer => Process::forkserver(entry.function(), args),
    }
}

fn returns(_: ()) {}

fn exits(code: i32) {
    process::exit(code)
}

fn panics(_: ()) {
    panic!("expected panic in a test child")
}

fn sleeps(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs)); // the child's work: waiting to be stopped
}

/// Asserts who the child is and who its parent is (a panic is exit code 1);
/// the last field says whether the parent is also the OS parent (not so
/// for a child of the fork server).
fn identity(expected: (String, String, u32, bool)) {
    let (name, parent_name, parent_pid, os_parent) = expected;
    assert_eq!(current_process().name(), name);
    assert_eq!(current_process().pid(), std::process::id());
    let parent = parent_process().expect("a parent");
    assert_eq!(
        (parent.name(), parent.pid()),
        (parent_name.as_str(), parent_pid)
    );
    assert_eq!(std::os::unix::process::parent_id() == parent_pid, os_parent);
}

/// Writes into a named shared value: a spawned child shares nothing else.
fn touch(name: String) {
    RawValue::<u32>::open(&name).unwrap().set(7);
}

fn exit_codes(start: Start) {
    let cases: Vec<(Process, i32)> = vec![
        (make(start, entry!(returns), ()), 0),
        (make(start, entry!(exits), 3), 3),
        (make(start, entry!(panics), ()), 1),
    ];
    for (mut p, code) in cases {
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), code, "{start:?}");
    }
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut p = make(start, entry!(sleeps), 600).daemon(true);
        p.start().unwrap();
        assert!(p.is_alive());
        let t = Instant::now();
        assert_eq!(p.join_timeout(Duration::from_millis(100)).unwrap(), None);
        assert!(t.elapsed() >= Duration::from_millis(100));
        if signal == libc::SIGTERM {
            p.terminate().unwrap();
        } else {
            p.kill().unwrap();
        }
        assert_eq!(join(&p, LIMIT), -signal, "{start:?}");
    }
}

fn exit_codes_fork() {
    watchdog("exit codes fork", LIMIT, || exit_codes(Start::Fork));
}

fn exit_codes_spawn() {
    watchdog("exit codes spawn", LIMIT, || exit_codes(Start::Spawn));
}

fn exit_codes_forkserver() {
    watchdog("exit codes forkserver", LIMIT, || {
        exit_codes(Start::ForkServer)
    });
}

fn names_and_parents(start: Start) {
    let me = current_process();
    let os_parent = !matches!(start, Start::ForkServer);
    let mut p = make(
        start,
        entry!(identity),
        ("worker".into(), me.name().into(), me.pid(), os_parent),
    )
    .with_name("worker");
    p.start().unwrap();
    assert_eq!(join(&p, LIMIT), 0, "{start:?}");
    // A default name, Python's Process-N: predicted from the next handle.
    let probe = Process::new(|| {});
    let next = probe
        .name()
        .strip_prefix("Process-")
        .unwrap()
        .parse::<u32>()
        .unwrap()
        + 1;
    let mut p = make(
        start,
        entry!(identity),
        (
            format!("Process-{next}"),
            me.name().into(),
            me.pid(),
            os_parent,
        ),
    );
    assert_eq!(p.name(), format!("Process-{next}"));
    p.start().unwrap();
    assert_eq!(join(&p, LIMIT), 0, "{start:?}");
}

fn names_and_parents_fork() {
    watchdog("names fork", LIMIT, || names_and_parents(Start::Fork));
}

fn names_and_parents_spawn() {
    watchdog("names spawn", LIMIT, || names_and_parents(Start::Spawn));
}

fn names_and_parents_forkserver() {
    watchdog("names forkserver", LIMIT, || {
        names_and_parents(Start::ForkServer)
    });
}

fn shared_by_name(start: Start) {
    let name = common::TempName::new(&format!("touch-{start:?}"));
    let v = RawValue::create(&name, 0u32).unwrap();
    let mut p = make(start, entry!(touch), name.0.clone());
    p.start().unwrap();
    assert_eq!(join(&p, LIMIT), 0);
    assert_eq!(v.get(), 7);
}

fn shared_memory_by_name_fork() {
    watchdog("touch fork", LIMIT, || shared_by_name(Start::Fork));
}

fn shared_memory_by_name_spawn() {
    watchdog("touch spawn", LIMIT, || shared_by_name(Start::Spawn));
}

fn shared_memory_by_name_forkserver() {
    watchdog("touch forkserver", LIMIT, || {
        shared_by_name(Start::ForkServer)
    });
}

/// A start that fails (here: no descriptor can be opened, so neither the
/// fork's start gate nor a spawn's pipes nor a fork-server connection can
/// be made) leaves the process unstarted with its closure, as Python's
/// `Process.start` leaves a process that failed to start: a second start
/// runs it.
fn start_fails_then_runs(start: Start) {
    let name = common::TempName::new(&format!("retry-{start:?}"));
    let v = RawValue::create(&name, 0u32).unwrap();
    let mut p = make(start, entry!(touch), name.0.clone());
    let failed = common::with_no_new_descriptors(|| p.start());
    assert!(
        matches!(failed, Err(multiproc::Error::Io { .. })),
        "{start:?}: {failed:?}"
    );
    assert_eq!(p.pid(), None, "{start:?}");
    assert_eq!(p.exitcode(), None, "{start:?}");
    p.start().unwrap();
    assert_eq!(join(&p, LIMIT), 0, "{start:?}");
    assert_eq!(v.get(), 7, "{start:?}");
}

fn a_start_that_fails_can_be_retried_fork() {
    watchdog("retry fork", LIMIT, || start_fails_then_runs(Start::Fork));
}

fn a_start_that_fails_can_be_retried_spawn() {
    watchdog("retry spawn", LIMIT, || start_fails_then_runs(Start::Spawn));
}

fn a_start_that_fails_can_be_retried_forkserver() {
    watchdog("retry forkserver", LIMIT, || {
        start_fails_then_runs(Start::ForkServer)
    });
}

/// Held by a thread of the test process while children start.
static USER_LOCK: std::sync::Mutex<u64> = std::sync::Mutex::new(0);

fn take_user_lock(_: ()) {
    *USER_LOCK.lock().unwrap() += 1;
}

/// A child of the fork server never inherits a lock that another thread
/// of the parent holds when the child starts (the server was forked
/// before that thread took it).
fn forkserver_children_never_inherit_a_lock_held_by_another_thread() {
    watchdog("forkserver and a held lock", LIMIT, || {
        process::start_forkserver().unwrap();
        let codes: Vec<Option<i32>> = common::while_another_thread_holds(&USER_LOCK, || {
            (0..50)
                .map(|_| {
                    let mut p = make(Start::ForkServer, entry!(take_user_lock), ());
                    p.start().unwrap();
                    let code = p.join_timeout(Duration::from_secs(10)).unwrap();
                    let _ = p.kill();
                    code
                })
                .collect()
        });
        assert!(codes.iter().all(|c| *c == Some(0)), "{codes:?}");
    });
}

/// `active_children` reaps a child of the fork server through the same
/// handle state: its exit code is not lost.
fn active_children_and_join_agree_on_a_forkserver_child() {
    watchdog("active_children forkserver", LIMIT, || {
        let mut p = make(Start::ForkServer, entry!(exits), 9).with_name("fs-exits");
        p.start().unwrap();
        assert!(wait_until(LIMIT, || active_children()
            .iter()
            .all(|c| c.name() != "fs-exits")));
        assert_eq!(join(&p, LIMIT), 9);
    });
}

fn active_children_lists_running_children_only() {
    watchdog("active_children", LIMIT, || {
        let mut a = make(Start::Fork, entry!(sleeps), 600)
            .with_name("sleeper-fork")
            .daemon(true);
        let mut b = make(Start::Spawn, entry!(sleeps), 600)
            .with_name("sleeper-spawn")
            .daemon(true);
        a.start().unwrap();
        b.start().unwrap();
        let names = || {
            let mut n: Vec<String> = active_children()
                .into_iter()
                .filter(|c| c.name().starts_with("sleeper"))
                .map(|c| c.name().to_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(), ["sleeper-fork", "sleeper-spawn"]);
        a.kill().unwrap();
        // Reaped through the handle or by active_children, whichever first.
        assert!(wait_until(LIMIT, || names() == ["sleeper-spawn"]));
        b.kill().unwrap();
        drop(b); // a dropped handle's child is still reaped
        assert!(wait_until(LIMIT, || names().is_empty()));
        assert_eq!(a.exitcode(), Some(-libc::SIGKILL));
    });
}

fn the_main_process_has_no_parent_process() {
    assert!(parent_process().is_none());
    assert_eq!(current_process().name(), "MainProcess");
}

// ---------------------------------------------------------------------------
// Payloads a spawned child must not trust.

const SPAWNED_ENV: &str = "MULTIPROC_SPAWNED";

/// Where `dump_payload` leaves the payload it was given.
fn dump_path(parent: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("multiproc-test-payload-{parent}"))
}

/// In a child spawned with `DUMP_PAYLOAD` as its argument: copies its
/// payload to `dump_path` instead of running it.
fn dump_payload() -> ! {
    let fd: i32 = std::env::var(SPAWNED_ENV)
        .expect("a spawned child")
        .parse()
        .unwrap();
    let bytes = std::fs::read(format!("/proc/self/fd/{fd}")).unwrap();
    std::fs::write(dump_path(std::os::unix::process::parent_id()), bytes).unwrap();
    process::exit(0)
}

/// A real payload: the spawn of `exits(7)`, captured by `dump_payload`.
fn real_payload() -> Vec<u8> {
    let mut p = Process::spawn(entry!(exits), 7).exec_args([DUMP_PAYLOAD]);
    p.start().unwrap();
    assert_eq!(join(&p, LIMIT), 0);
    let path = dump_path(std::process::id());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(path).unwrap();
    bytes
}

/// Runs this binary as a spawned child whose payload descriptor holds
/// `payload` (or, with `None`, with the variable set to 1 and `stdin` on
/// its standard input: the old protocol); its exit code and stderr. A
/// child still running after [`LIMIT`] is killed and fails the test.
fn run_spawned(payload: Option<&[u8]>, stdin: &[u8]) -> (Option<i32>, String) {
    use std::io::Write;
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    let _memfd = payload.map(|bytes| {
        // Not close-on-exec, so that the child inherits it, like a parent's.
        // SAFETY: a NUL-terminated name; flags 0.
        let fd = unsafe { libc::memfd_create(c"multiproc-spawn".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(fd.try_clone().unwrap())
            .write_all(bytes)
            .unwrap();
        command.env(SPAWNED_ENV, fd.as_raw_fd().to_string());
        fd
    });
    if payload.is_none() {
        command.env(SPAWNED_ENV, "1");
    }
    let (status, _, err) = common::run_with_deadline(&mut command, stdin, LIMIT);
    (status.code(), err)
}

/// Replaces the only occurrence of `from` in `bytes` by `to`, of the same length.
fn replaced(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at: Vec<usize> = (0..=bytes.len() - from.len())
        .filter(|&i| &bytes[i..i + from.len()] == from.as_bytes())
        .collect();
    assert_eq!(at.len(), 1, "{from:?} occurs {} times", at.len());
    let mut out = bytes.to_vec();
    out[at[0]..at[0] + to.len()].copy_from_slice(to.as_bytes());
    out
}

fn a_spawned_child_runs_only_a_listed_entry_on_a_well_formed_payload() {
    watchdog("payloads", Duration::from_secs(120), || {
        let good = real_payload();
        // The control: the captured payload runs `exits(7)`.
        assert_eq!(run_spawned(Some(&good), b"").0, Some(7));

        let name = entry!(exits).name();
        let renamed = format!("{}z", &name[..name.len() - 1]);
        let cases: Vec<(&str, Vec<u8>, String)> = vec![
            (
                "truncated",
                good[..good.len() - 3].to_vec(),
                "malformed payload".into(),
            ),
            ("empty", Vec::new(), "malformed payload".into()),
            ("garbage", vec![0xff; 64], "malformed payload".into()),
            (
                // A first field that claims 2^32 - 1 bytes: refused
                // before anything that long is allocated or read.
                "huge length",
                [&[0xff, 0xff, 0xff, 0xff, 0x0f][..], &good[5..]].concat(),
                "malformed payload".into(),
            ),
            (
                "huge length at the end",
                [
                    &good[..],
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..],
                ]
                .concat(),
                "bytes after its end".into(),
            ),
            (
                "trailing bytes",
                [&good[..], &[0u8]].concat(),
                "1 bytes after its end".into(),
            ),
            (
                "unknown entry",
                replaced(&good, name, &renamed),
                format!("no entry `{renamed}` is listed"),
            ),
            (
                "wrong argument type",
                replaced(&good, "i32", "u32"),
                format!("`{name}` takes i32, but the payload carries u32"),
            ),
        ];
        for (case, payload, why) in cases {
            let (code, err) = run_spawned(Some(&payload), b"");
            assert_eq!(code, Some(1), "{case}: {err}");
            assert!(
                err.contains("multiproc: a spawned child could not start:") && err.contains(&why),
                "{case}: {err}"
            );
        }
    });
}

/// The old protocol's attack: offsets on stdin that became function
/// pointers. Now stdin is not read, and the variable must name a payload file.
fn a_payload_on_stdin_is_never_run() {
    watchdog("stdin payload", LIMIT, || {
        // Offsets 2^20 and 1 from the anchor: a SIGSEGV under the old protocol.
        let crafted = [0x80u8, 0x80, 0x40, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        let (code, err) = run_spawned(None, &crafted);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("does not name a payload descriptor"), "{err}");
    });
}

/// A process started with its standard streams closed (a daemon, a
/// program run with `<&- >&-`) spawns as any other (and starts children
/// through a fork server and a pool): the payload's
/// descriptor, which may then be 0, 1 or 2, must not be the one the
/// child's standard streams replace. Each stream alone, then all three.
fn a_child_is_spawned_by_a_process_whose_standard_streams_are_closed() {
    watchdog("spawn with closed standard streams", LIMIT, || {
        for closed in [&[0][..], &[1], &[2], &[0, 1, 2]] {
            let mut p = Process::new(move || {
                for &fd in closed {
                    // SAFETY: closes a standard stream of this child only.
                    unsafe { libc::close(fd) };
                }
                let mut spawned = Process::spawn(entry!(touch_all), ());
                let code = spawned.start().and_then(|()| spawned.join());
                let mut served = Process::forkserver(touch_all, ());
                let served = served.start().and_then(|()| served.join());
                let pooled = multiproc::Pool::with_processes(1).and_then(|p| p.apply(double, 4));
                let ok =
                    matches!(code, Ok(0)) && matches!(served, Ok(0)) && matches!(pooled, Ok(8));
                process::exit(if ok { 0 } else { 9 });
            });
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), 0, "closed {closed:?}");
        }
    });
}

fn touch_all(_: ()) {}

fn double(x: u32) -> u32 {
    x * 2
}
