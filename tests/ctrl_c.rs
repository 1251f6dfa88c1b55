//! The crate's helper processes and the signals a terminal or a
//! supervisor sends. Ctrl-C reaches the whole foreground process group,
//! so a manager's server and the fork servers ignore it, as Python's do
//! (the program decides what Ctrl-C means; a pool keeps its workers'
//! server), while the children a fork server starts get back the
//! program's own disposition. A manager's server ended by SIGTERM or
//! SIGHUP still removes its socket file.

mod common;

use std::time::Duration;

use common::{procfs, static_child, wait_until, watchdog};
use multiproc::conn::Address;
use multiproc::manager::Manager;
use multiproc::{Error, Pool, Process};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a server is given to go, within the test's `LIMIT`.
const GONE: Duration = Duration::from_secs(20);

/// Sends Ctrl-C's signal to `pid`, a process this test started.
fn ctrl_c(pid: u32) {
    // SAFETY: a signal to a process of this test's.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
}

/// A manager whose server was forked with the stop signals' default
/// actions, its socket path and the server's pid.
fn started() -> (Manager, std::path::PathBuf, i32) {
    common::default_stop_signals();
    let m = Manager::start().unwrap();
    let Address::Unix(path) = m.address().clone() else {
        unreachable!("Manager::start listens on a Unix socket")
    };
    let pid = m.server_pid().unwrap() as i32;
    (m, path, pid)
}

#[test]
fn a_managers_server_ignores_ctrl_c_as_pythons_does() {
    watchdog("Ctrl-C at a manager's server", LIMIT, || {
        let (mut m, path, pid) = started();
        let d = m.dict::<String, u32>().unwrap();
        d.set("a".into(), 1).unwrap();
        ctrl_c(pid as u32);
        // Any answer to a call made after the signal was sent comes after
        // the server returned to user space, where the signal is delivered.
        for i in 0..100 {
            d.set(format!("k{i}"), i).unwrap();
        }
        assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
        assert_eq!(d.len().unwrap(), 101);
        m.shutdown().unwrap();
        assert!(!path.exists());
    });
}

#[test]
fn a_managers_server_ended_by_a_signal_removes_its_socket_file() {
    watchdog("SIGTERM or SIGHUP at a manager's server", LIMIT, || {
        for signal in [libc::SIGTERM, libc::SIGHUP] {
            let (m, path, pid) = started();
            let d = m.dict::<String, u32>().unwrap();
            d.set("a".into(), 1).unwrap();
            assert!(path.exists());
            // SAFETY: a signal to the server this test started.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
            assert!(
                wait_until(GONE, || matches!(d.len(), Err(Error::ManagerGone(_)))),
                "signal {signal}"
            );
            assert!(
                wait_until(GONE, || !path.exists()),
                "signal {signal} left {}",
                path.display()
            );
        }
    });
}

fn waits_forever(_: ()) {
    std::thread::sleep(Duration::from_secs(600)); // killed long before
}

fn greet(_: ()) {}

fn parent_pid(_: ()) -> u32 {
    std::os::unix::process::parent_id()
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn the_fork_server_ignores_ctrl_c_and_its_children_do_not() {
    watchdog("Ctrl-C at the fork server", LIMIT, || {
        // In a child, which has a fork server of its own.
        let p = static_child(|| {
            common::default_stop_signals();
            let mut a = Process::forkserver(waits_forever, ());
            a.start().unwrap();
            let server = procfs::ppid(a.pid().unwrap()).unwrap();
            ctrl_c(server);
            // The child keeps the program's Ctrl-C: it ends by it.
            ctrl_c(a.pid().unwrap());
            assert_eq!(a.join().unwrap(), -libc::SIGINT);
            // The same server still starts children (a signal to it was
            // delivered before it could answer this start).
            let mut b = Process::forkserver(greet, ());
            b.start().unwrap();
            assert_eq!(procfs::ppid(b.pid().unwrap()).unwrap(), server);
            assert_eq!(b.join().unwrap(), 0);
        });
        assert_eq!(common::join(&p, LIMIT), 0);
    });
}

#[test]
fn a_pools_fork_server_ignores_ctrl_c() {
    watchdog("Ctrl-C at a pool's fork server", LIMIT, || {
        common::default_stop_signals();
        let pool = Pool::with_processes(2).unwrap();
        let server = pool.apply(parent_pid, ()).unwrap();
        ctrl_c(server);
        for i in 0..20 {
            assert_eq!(pool.apply(square, i).unwrap(), i * i);
        }
        // SAFETY: a signal 0 only asks whether the pool's server is alive.
        assert_eq!(unsafe { libc::kill(server as i32, 0) }, 0);
        pool.close();
        pool.join().unwrap();
    });
}
