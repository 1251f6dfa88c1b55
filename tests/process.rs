//! Process: Python's exit codes, timeouts, names, daemons and stdio, with
//! real forked children.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{join, run_helper, watchdog, HELPER_ENV};
use multiproc::{current_process, process, Error, Process, RawValue};

const LIMIT: Duration = Duration::from_secs(30);

fn park_forever() {
    loop {
        std::thread::park();
    }
}

#[test]
fn exit_codes_follow_python() {
    watchdog("exit codes", LIMIT, || {
        let mut ret = Process::new(|| {});
        let mut exit3 = Process::new(|| {
            process::exit(3);
        });
        let mut panics = Process::new(|| {
            panic!("expected panic in a test child");
        });
        let mut errs = Process::fallible(|| Err("expected error"));
        let mut termed = Process::new(park_forever).daemon(true);
        let mut killed = Process::new(park_forever).daemon(true);
        for p in [
            &mut ret,
            &mut exit3,
            &mut panics,
            &mut errs,
            &mut termed,
            &mut killed,
        ] {
            assert_eq!(p.exitcode(), None);
            p.start().unwrap();
        }
        assert_eq!(termed.exitcode(), None, "running");
        assert!(termed.is_alive());
        termed.terminate().unwrap();
        killed.kill().unwrap();
        assert_eq!(join(&ret, LIMIT), 0);
        assert_eq!(join(&exit3, LIMIT), 3);
        assert_eq!(join(&panics, LIMIT), 1);
        assert_eq!(join(&errs, LIMIT), 1);
        assert_eq!(join(&termed, LIMIT), -libc::SIGTERM);
        assert_eq!(join(&killed, LIMIT), -libc::SIGKILL);
        assert!(!killed.is_alive());
        assert_eq!(killed.exitcode(), Some(-libc::SIGKILL));
        // Signals and joins after exit are harmless.
        killed.terminate().unwrap();
        assert_eq!(killed.join().unwrap(), -libc::SIGKILL);
    });
}

#[test]
fn join_timeout_returns_none_while_running() {
    watchdog("join_timeout", LIMIT, || {
        let mut p = Process::new(park_forever).daemon(true);
        p.start().unwrap();
        let t = Instant::now();
        assert_eq!(p.join_timeout(Duration::from_millis(200)).unwrap(), None);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        p.kill().unwrap();
        assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(-libc::SIGKILL));
    });
}

#[test]
fn misuse_is_an_error() {
    let mut p = Process::new(|| {});
    assert!(matches!(p.join(), Err(Error::ProcessState { .. })));
    assert!(matches!(p.kill(), Err(Error::ProcessState { .. })));
    assert_eq!(p.pid(), None);
    p.start().unwrap();
    assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
    assert_eq!(p.join().unwrap(), 0);
    assert!(p.pid().is_some());
}

#[test]
fn names_and_identity() {
    watchdog("names", LIMIT, || {
        assert_eq!(current_process().name(), "MainProcess");
        assert_eq!(current_process().pid(), std::process::id());
        let named = Process::new(|| assert_eq!(current_process().name(), "worker"));
        let mut named = named.name("worker");
        assert_eq!(named.process_name(), "worker");
        named.start().unwrap();
        assert_eq!(join(&named, LIMIT), 0);

        // Default names are Python's Process-N, and Process-N:M below them.
        let mut outer = Process::new(|| {
            let me = current_process().name().to_owned();
            assert!(me.starts_with("Process-") && !me.contains(':'), "{me}");
            let mut inner = Process::new(move || {
                assert_eq!(current_process().name(), format!("{me}:1"));
            });
            inner.start().unwrap();
            assert_eq!(inner.join().unwrap(), 0);
        });
        outer.start().unwrap();
        assert_eq!(join(&outer, LIMIT), 0);
    });
}

#[test]
fn a_child_panic_never_unwinds_into_the_parent() {
    watchdog("panic isolation", LIMIT, || {
        let after_start = RawValue::new(0u32).unwrap();
        let mut p = Process::new(|| {
            panic!("expected panic in a test child");
        });
        p.start().unwrap();
        // Only the parent returns from start(); a child unwinding out of its
        // closure would run this line too.
        after_start.atomic().fetch_add(1, SeqCst);
        assert_eq!(join(&p, LIMIT), 1);
        assert_eq!(after_start.atomic().load(SeqCst), 1);
    });
}

/// A daemon child dies with its parent: the middle process starts a daemon
/// and exits; the daemon, re-parented to this test process (a subreaper),
/// must end by SIGKILL.
#[test]
fn daemon_children_do_not_outlive_their_parent() {
    watchdog("daemon", LIMIT, || {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a flag.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
        let daemon_pid = RawValue::new(0u32).unwrap();
        let mut middle = Process::new(|| {
            let mut d = Process::new(|| {
                daemon_pid.set(std::process::id());
                park_forever();
            })
            .daemon(true);
            d.start().unwrap();
            // Wait until the daemon runs, then exit without joining it.
            assert!(common::wait_until(LIMIT, || daemon_pid.get() != 0));
        });
        middle.start().unwrap();
        assert_eq!(join(&middle, LIMIT), 0);
        let pid = nix::unistd::Pid::from_raw(daemon_pid.get() as i32);
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Signaled(pid, nix::sys::signal::SIGKILL, false)
        );
    });
}

/// The bodies of the helper processes that the next tests execute (this
/// test binary, run again with real stdout); a no-op otherwise.
#[test]
fn helper_entry() {
    match std::env::var(HELPER_ENV).as_deref() {
        Ok("stdout") => {
            // Pending in Rust's line buffer when the child forks.
            print!("before-fork ");
            let mut p = Process::new(|| println!("child"));
            p.start().unwrap();
            p.join().unwrap();
            println!("parent");
        }
        Ok("busy-stdout") => {
            // Another thread keeps taking the stdout lock while we fork.
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(SeqCst) {
                        println!("noise");
                    }
                });
                for i in 0..100 {
                    let mut p = Process::new(move || println!("child {i}"));
                    p.start().unwrap();
                    assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0), "child {i} hung");
                }
                stop.store(true, SeqCst);
            });
        }
        _ => {}
    }
}

#[test]
fn buffered_output_is_never_doubled_by_fork() {
    watchdog("stdout", LIMIT, || {
        let out = run_helper("stdout");
        assert_eq!(out.matches("before-fork").count(), 1, "{out}");
        assert_eq!(out.matches("child").count(), 1, "{out}");
        assert_eq!(out.matches("parent").count(), 1, "{out}");
    });
}

#[test]
fn forking_while_another_thread_prints_never_hangs_the_child() {
    watchdog("busy stdout", Duration::from_secs(120), || {
        let out = run_helper("busy-stdout");
        for i in [0, 50, 99] {
            assert!(out.contains(&format!("child {i}\n")), "child {i} missing");
        }
    });
}
