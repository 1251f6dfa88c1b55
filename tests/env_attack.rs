//! Attacks through the process environment: a full descriptor table,
//! broken standard streams, unknown inherited descriptors, SIGCHLD
//! ignored or reaped by a handler, signals interrupting waits, odd
//! `TMPDIR`s. The risky part of each runs in a child process, so that a
//! limit it lowers or a disposition it changes stays there.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use common::harness::tests;
use common::watchdog;
use multiproc::{entry, Process};

const LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    multiproc::spawn_init(&[&entry!(panics_with_stderr_broken)]);
    common::harness::run(&tests![
        a_child_whose_stderr_is_a_closed_pipe_ends_with_its_own_exit_code,
    ])
}

/// Points this process's stderr at a pipe nobody reads (both of the
/// pipe's other descriptors closed): every write to it fails with `EPIPE`
/// (`SIGPIPE` is ignored, as in every Rust program).
fn break_stderr() {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors to a valid array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fd 2 is replaced by a copy of the write end.
    assert_eq!(unsafe { libc::dup2(fds[1], 2) }, 2);
    for fd in fds {
        // SAFETY: descriptors this function just made and owns.
        unsafe { libc::close(fd) };
    }
}

fn panics_with_stderr_broken(_: ()) {
    break_stderr();
    panic!("a panic nobody can read");
}

/// A child whose stderr is a closed pipe still ends with the exit code
/// its work gives (1 for a panic or an error, as Python's), whatever the
/// start method: the crate's messages to stderr (the panic header, a
/// failed `Process::fallible`) ignore the failed write instead of
/// panicking, which in the panic hook was an abort (`-SIGABRT`).
fn a_child_whose_stderr_is_a_closed_pipe_ends_with_its_own_exit_code() {
    watchdog("children with a broken stderr", LIMIT, || {
        let mut fork = Process::new(|| panics_with_stderr_broken(()));
        let mut fallible = Process::fallible(|| {
            break_stderr();
            Err::<(), _>("an error nobody can read")
        });
        let mut logs = Process::new(|| {
            break_stderr();
            multiproc::log_to_stderr(log::LevelFilter::Debug).unwrap();
            log::warn!("a record nobody can read");
        });
        let mut served = Process::forkserver(panics_with_stderr_broken, ());
        let mut spawned = Process::spawn(entry!(panics_with_stderr_broken), ());
        let mut codes = Vec::new();
        for p in [
            &mut fork,
            &mut fallible,
            &mut logs,
            &mut served,
            &mut spawned,
        ] {
            p.start().unwrap();
            let code = p.join_timeout(LIMIT).unwrap();
            if code.is_none() {
                p.kill().unwrap();
            }
            codes.push(code);
        }
        assert_eq!(codes, [Some(1), Some(1), Some(0), Some(1), Some(1)]);
    });
}
