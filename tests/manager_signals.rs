//! A manager's server and the signals a terminal or a supervisor sends:
//! Ctrl-C reaches the whole foreground process group, so the server
//! ignores it (Python's does too, so that its owner can shut it down);
//! a server ended by SIGTERM or SIGHUP still removes its socket file.

mod common;

use std::time::Duration;

use common::{wait_until, watchdog};
use multiproc::conn::Address;
use multiproc::manager::Manager;
use multiproc::Error;

const LIMIT: Duration = Duration::from_secs(60);
/// How long a server is given to go, within the test's `LIMIT`.
const GONE: Duration = Duration::from_secs(20);

/// A manager whose server was forked with Ctrl-C's default action (a test
/// may inherit it ignored, from a background job's shell), its socket
/// path and the server's pid.
fn started() -> (Manager, std::path::PathBuf, i32) {
    // SAFETY: resets one signal's disposition; nothing else is touched.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
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
        // SAFETY: a signal to the server this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
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
