//! The crate's long-lived helper processes (the fork servers, the Manager's
//! server) keep nothing of what their parent had open. A helper forked
//! while another thread held the write end of a pipe (say, while it was
//! starting a program with `std::process::Command` and a piped stderr)
//! would otherwise keep that end open for its whole life, and the pipe's
//! reader would wait for an end of file forever.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::{join, static_child, watchdog};
use multiproc::manager::Manager;
use multiproc::process::start_forkserver;
use multiproc::Pool;

const LIMIT: Duration = Duration::from_secs(30);

/// A pipe as `std` makes them (close-on-exec): (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors to a valid array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: a fresh descriptor (pipe2 succeeded) that nothing else owns.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above; the two are distinct.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    (read, write)
}

/// Whether the read end reads as end of file within five seconds, as it
/// must once the only write end (ours) is closed.
fn reads_end_of_file(read: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, 5000) };
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into a valid buffer; not blocking,
    // since poll said it is readable.
    ready == 1 && unsafe { libc::read(read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) } == 0
}

/// Opens a pipe, starts the helper with `start`, closes the write end, and
/// checks the reader sees the end of file while the helper still runs. In
/// a child process of its own, so that the helper is new.
fn helper_keeps_no_pipe_end(what: &'static str, start: fn() -> Box<dyn std::any::Any>) {
    watchdog(what, LIMIT, || {
        let p = static_child(move || {
            let (read, write) = pipe();
            let helper = start();
            drop(write);
            assert!(
                reads_end_of_file(&read),
                "{what} kept a copy of the pipe's write end"
            );
            drop(helper);
        });
        assert_eq!(join(&p, LIMIT), 0, "{what}");
    });
}

#[test]
fn the_fork_server_keeps_no_descriptor_of_its_parent() {
    helper_keeps_no_pipe_end("the fork server", || {
        start_forkserver().unwrap();
        Box::new(())
    });
}

#[test]
fn a_pools_fork_server_keeps_no_descriptor_of_its_parent() {
    helper_keeps_no_pipe_end("a pool's fork server", || {
        Box::new(Pool::with_processes(1).unwrap())
    });
}

#[test]
fn the_managers_server_keeps_no_descriptor_of_its_parent() {
    helper_keeps_no_pipe_end("the Manager's server", || {
        Box::new(Manager::start().unwrap())
    });
}

/// The helpers still work with their own descriptors only.
#[test]
fn helpers_work_after_releasing_their_parents_descriptors() {
    watchdog("helpers at work", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        assert_eq!(
            pool.map(double, 0..10u64).unwrap(),
            (0..10).map(|x| x * 2).collect::<Vec<_>>()
        );
        let manager = Manager::start().unwrap();
        let d = manager.dict::<String, u64>().unwrap();
        d.set("a".into(), 1).unwrap();
        assert_eq!(d.get(&"a".to_string()).unwrap(), Some(1));
        let mut p = multiproc::Process::forkserver(exit_with, 7u8);
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), 7);
    });
}

fn double(x: u64) -> u64 {
    x * 2
}

fn exit_with(code: u8) {
    std::process::exit(code.into());
}
