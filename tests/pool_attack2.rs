//! Another attack on the process tools: `Process` under its three start
//! methods and the local `Pool`, with cases the earlier reviews left out.
//!
//! A spawned child is this test binary run again, so the binary has its
//! own `main` (`harness = false`), which calls `multiproc::spawn_init`
//! first.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use common::harness::tests;
use common::{join, static_child, watchdog};
use multiproc::{entry, Process};

const LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    multiproc::spawn_init(&[&entry!(returns)]);
    common::harness::run(&tests![a_reaping_sigchld_handler_fails_no_spawned_start,])
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
    // SAFETY: a cpu_set_t is an array of integers: all zeroes is valid.
    let mut one_cpu: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET on a valid, zeroed set.
    unsafe { libc::CPU_SET(0, &mut one_cpu) };
    // SAFETY: a valid set of its size, for the calling thread (0).
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&one_cpu), &one_cpu) };
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
