//! Review of the day's changes outside the Manager: the listener's socket
//! file handed to a forked child, fork servers and Ctrl-C, the manager
//! server's signal handlers, barriers by pid and start time.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use multiproc::conn::{Address, Listener};
use multiproc::Process;

const LIMIT: Duration = Duration::from_secs(60);

/// A socket path unique to this test process, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> Self {
        TempPath(std::env::temp_dir().join(format!("mp-today-{tag}-{}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ------------------------------------------------- listener's socket file

/// Makes `pidfd_open` fail with ENOSYS in this process and its children
/// (a seccomp filter, as a container's may be): a fork succeeds, and the
/// start fails after it.
fn refuse_pidfd_open() {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    let filter = [
        // The syscall number, at offset 0 of seccomp_data.
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_pidfd_open as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with plain integer arguments for this process.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0);
    // SAFETY: `prog` points at `filter`, both alive for the call; the
    // kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}

#[test]
fn a_listener_moved_into_a_child_that_fails_to_start_is_kept_until_the_process_goes() {
    let path = TempPath::new("failed-start");
    let inner = path.0.clone();
    let p = common::static_child(move || {
        let listener = Listener::bind(&Address::Unix(inner.clone()), None).unwrap();
        assert!(inner.exists());
        refuse_pidfd_open();
        let mut child = Process::new(move || drop(listener));
        let err = child.start().unwrap_err();
        assert!(err.to_string().contains("pidfd_open"), "{err}");
        // The child never ran: the listener is still this process's, kept
        // with the closure for another start (as Python's `start` keeps
        // its target), and its file goes with the unstarted process.
        assert!(
            inner.exists(),
            "the listener's file went with a failed start"
        );
        drop(child);
        assert!(
            !inner.exists(),
            "socket file left behind by a dropped process"
        );
    });
    assert_eq!(common::join(&p, LIMIT), 0);
    assert!(!path.0.exists());
}

#[test]
fn a_permit_moved_into_a_child_that_fails_to_start_is_given_back() {
    let p = common::static_child(|| {
        let sem = multiproc::Semaphore::new(1).unwrap();
        refuse_pidfd_open();
        multiproc::scope(|s| {
            let permit = sem.permit();
            let mut child = s.process(move || drop(permit));
            let err = child.start().unwrap_err();
            assert!(err.to_string().contains("pidfd_open"), "{err}");
        });
        assert_eq!(sem.value(), 1, "permit lost by a failed start");
    });
    assert_eq!(common::join(&p, LIMIT), 0);
}

// ------------------------------------------------ Ctrl-C to the whole group

static CTRL_C_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_ctrl_c(_: libc::c_int) {
    CTRL_C_SEEN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The program's Ctrl-C handler (a flag, as signal-hook's).
fn handle_ctrl_c() {
    let handler: extern "C" fn(libc::c_int) = note_ctrl_c;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

/// Sends Ctrl-C to this process's group (at x == 5), as a terminal does.
fn ctrl_c_at_five(x: u64) -> u64 {
    if x == 5 {
        // SAFETY: getpgrp only reads this process's group.
        let group = unsafe { libc::getpgrp() };
        // SAFETY: a signal to the test's own process group (its child's).
        unsafe { libc::kill(-group, libc::SIGINT) };
    }
    x * 2
}

/// Ctrl-C to the group of a program using a Manager, a pool and a child,
/// with the handler installed before (`early`) or after them: no hang, the
/// pool goes on, and everything is shut down with nothing left.
fn ctrl_c_to_the_group(early: bool) {
    let p = common::static_child(move || {
        // SAFETY: makes this (forked, single-purpose) child a group leader.
        assert_eq!(unsafe { libc::setpgid(0, 0) }, 0);
        // SAFETY: resets one signal's disposition.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
        if early {
            handle_ctrl_c();
        }
        let mut m = multiproc::Manager::start().unwrap();
        let Address::Unix(sock) = m.address().clone() else {
            unreachable!()
        };
        let l = m.list_from(0..3).unwrap();
        let pool = multiproc::Pool::with_processes(2).unwrap();
        let mut child = Process::forkserver(|()| std::thread::park(), ());
        child.start().unwrap();
        if !early {
            handle_ctrl_c();
        }
        let first = pool.map(ctrl_c_at_five, 0..40u64);
        assert!(CTRL_C_SEEN.load(std::sync::atomic::Ordering::Relaxed));
        if let Ok(v) = &first {
            assert_eq!(v.len(), 40);
        }
        // The pool goes on (its workers replaced if they died).
        assert_eq!(pool.map(ctrl_c_at_five, 6..9u64).unwrap(), [12, 14, 16]);
        assert_eq!(l.to_string(), "[0, 1, 2]");
        pool.close();
        pool.join().unwrap();
        child.kill().unwrap();
        child.join().unwrap();
        m.shutdown().unwrap();
        assert!(!sock.exists(), "manager socket left");
    });
    let pgid = p.pid().unwrap() as i32;
    assert_eq!(common::join(&p, LIMIT), 0);
    // Nothing of the group is left (the helpers die with their parents).
    // SAFETY: a signal 0 only asks whether the group has members.
    let gone = common::wait_until(LIMIT, || unsafe { libc::kill(-pgid, 0) } != 0);
    if !gone {
        // SAFETY: the group is this test's child's.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    assert!(gone, "processes of the group left");
}

#[test]
fn ctrl_c_to_the_group_with_the_handler_installed_first() {
    ctrl_c_to_the_group(true);
}

#[test]
fn ctrl_c_to_the_group_with_the_handler_installed_after() {
    ctrl_c_to_the_group(false);
}

// ------------------------------------- a standalone server's signal handlers

#[test]
fn a_signalled_server_leaves_a_socket_file_another_listener_made_at_its_path() {
    common::watchdog("SIGTERM at a server whose path was taken", LIMIT, || {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let (server, path, conn) = common::serve_manager(&format!("taken-{signal}"), b"k");
            drop(conn);
            // Another listener takes the path (the server's file removed).
            std::fs::remove_file(&path).unwrap();
            let other = Listener::bind(&Address::Unix(path.clone()), None).unwrap();
            let pid = server.pid().unwrap() as i32;
            // SAFETY: a signal to the server this test started.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
            let code = common::join(&server, LIMIT);
            let expected = if signal == libc::SIGINT { 0 } else { -signal };
            assert_eq!(code, expected, "signal {signal}");
            assert!(path.exists(), "signal {signal} removed another's file");
            drop(other);
            assert!(!path.exists());
        }
    });
}

#[test]
fn a_signal_storm_at_a_server_ends_it_with_its_socket_file_removed() {
    common::watchdog("a signal storm at a server", LIMIT, || {
        let (server, path, conn) = common::serve_manager("storm", b"k");
        drop(conn);
        let pid = server.pid().unwrap() as libc::pid_t;
        // Through a pidfd: the crate may reap the server as soon as it
        // ends, and its pid be another process's.
        // SAFETY: pidfd_open of the server this test started.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        assert!(pidfd >= 0);
        'storm: for _ in 0..300 {
            for signal in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
                // SAFETY: a signal through the pidfd made above.
                let r = unsafe {
                    libc::syscall(libc::SYS_pidfd_send_signal, pidfd, signal, 0usize, 0u32)
                };
                if r != 0 {
                    let e = std::io::Error::last_os_error();
                    assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
                    break 'storm;
                }
            }
        }
        // SAFETY: closes the pidfd made above.
        unsafe { libc::close(pidfd) };
        let code = common::join(&server, LIMIT);
        assert!(
            [0, -libc::SIGINT, -libc::SIGTERM, -libc::SIGHUP].contains(&code),
            "{code}"
        );
        assert!(!path.exists(), "socket file left");
    });
}

#[test]
fn a_server_signalled_as_its_socket_file_appears_removes_it() {
    common::watchdog("SIGTERM at a starting server", LIMIT, || {
        for round in 0..100 {
            let path = TempPath::new(&format!("starting-{round}"));
            let address = Address::Unix(path.0.clone());
            let mut server = Process::new({
                let address = address.clone();
                move || {
                    common::default_stop_signals();
                    let _ = multiproc::manager::serve(&address, b"k", |_| {});
                }
            })
            .daemon(true);
            server.start().unwrap();
            let pid = server.pid().unwrap() as i32;
            assert!(common::wait_until(LIMIT, || path.0.exists()));
            // SAFETY: a signal to the server this test started.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
            assert_eq!(common::join(&server, LIMIT), -libc::SIGTERM);
            assert!(!path.0.exists(), "round {round}: socket file left");
        }
    });
}

#[test]
fn ctrl_c_at_a_tcp_server_exits_0_as_at_a_unix_one() {
    common::watchdog("Ctrl-C at a TCP server", LIMIT, || {
        let port = multiproc::RawValue::new(0u32).unwrap();
        let mut server = Process::new({
            let port = port.clone();
            move || {
                common::default_stop_signals();
                let address = Address::Tcp("127.0.0.1:0".parse().unwrap());
                let _ = multiproc::manager::serve(&address, b"k", |bound| {
                    if let Address::Tcp(a) = bound {
                        port.atomic()
                            .store(u32::from(a.port()), std::sync::atomic::Ordering::Release);
                    }
                });
            }
        })
        .daemon(true);
        server.start().unwrap();
        let bound = || port.atomic().load(std::sync::atomic::Ordering::Acquire) != 0;
        assert!(common::wait_until(LIMIT, bound));
        let pid = server.pid().unwrap() as i32;
        // SAFETY: a signal to the server this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        // As Python's serve_forever, whatever the address.
        assert_eq!(common::join(&server, LIMIT), 0);
    });
}

// ------------------------------------------------------------- barriers

/// Makes this process's /proc hide other users' processes (`hidepid=2`,
/// in a mount namespace of its own); false if it cannot (not root).
fn hide_other_users_processes() -> bool {
    // SAFETY: leaves the mount namespace this process shares.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return false;
    }
    // SAFETY: makes this namespace's mounts private; no pointer but null.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    // SAFETY: NUL-terminated strings that outlive the call.
    private == 0
        && unsafe {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                0,
                c"hidepid=2".as_ptr().cast(),
            )
        } == 0
}

/// Becomes user and group `id` (from root).
fn become_user(id: u32) {
    // SAFETY: drops this process's supplementary groups.
    assert_eq!(unsafe { libc::setgroups(0, std::ptr::null()) }, 0);
    // SAFETY: changes this process's own group id.
    assert_eq!(unsafe { libc::setgid(id) }, 0);
    // SAFETY: changes this process's own user id.
    assert_eq!(unsafe { libc::setuid(id) }, 0);
}

#[test]
fn barrier_parties_of_two_users_under_hidepid_are_alive_to_each_other() {
    let p = common::static_child(|| {
        if !hide_other_users_processes() {
            eprintln!("skipped: cannot mount /proc with hidepid=2 here");
            return;
        }
        let barrier = multiproc::Barrier::new(3).unwrap();
        let parties: Vec<_> = [65533, 65534]
            .into_iter()
            .map(|id| {
                let b = barrier.clone();
                common::static_child(move || {
                    become_user(id);
                    b.wait_timeout(LIMIT).unwrap();
                })
            })
            .collect();
        assert!(common::wait_until(LIMIT, || barrier.n_waiting() == 2));
        // Ten looks for dead parties each (every 100 ms): each party is
        // the other's, alive, though /proc does not show it.
        let broke = common::wait_until(Duration::from_secs(1), || barrier.is_broken());
        assert!(!broke, "a live party of another user taken for dead");
        barrier.wait_timeout(LIMIT).unwrap();
        for p in &parties {
            assert_eq!(common::join(p, LIMIT), 0);
        }
    });
    assert_eq!(common::join(&p, LIMIT), 0);
}
