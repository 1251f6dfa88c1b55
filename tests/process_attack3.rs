//! Adversarial review of the process tools (third round): Process, Pool,
//! Pipe/Connection, Listener/Client, with cases the other tests leave out.

mod common;

use std::time::Duration;

use common::{join, static_child, watchdog};
use multiproc::{Error, Pool};

const LIMIT: Duration = Duration::from_secs(90);

/// A task that never ends (its pool's drop kills its worker).
fn park(_: u32) -> u32 {
    loop {
        std::thread::park();
    }
}

/// An `imap_unordered` iterator taken into a forked child, where the
/// results can never arrive (the pool's scheduler thread is the parent's):
/// its chunks not yet delivered are errors there, as `imap`'s are, not a
/// wait for ever.
#[test]
fn imap_unordered_iterated_in_a_forked_child_does_not_hang() {
    watchdog("imap_unordered in a child", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let mut unordered = pool.imap_unordered(park, [1u32, 2], None);
        let mut ordered = pool.imap(park, [3u32], None);
        let p = static_child(move || {
            let o = ordered.next();
            assert!(matches!(o, Some(Err(Error::PoolState(_)))), "imap: {o:?}");
            let got: Vec<_> = unordered.by_ref().collect();
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(
                got.iter().all(|r| matches!(r, Err(Error::PoolState(_)))),
                "{got:?}"
            );
        });
        assert_eq!(join(&p, Duration::from_secs(30)), 0);
        drop(pool);
    });
}

fn answer() -> u32 {
    42
}

/// An `imap_unordered` iterator made on the caller's thread and iterated
/// in one of the same pool's callbacks, on the thread that delivers its
/// results: a chunk not done yet is the error `imap` gives there, not a
/// wait that would hold the pool's scheduler for ever.
#[test]
fn imap_unordered_iterated_in_a_callback_of_its_pool_does_not_hang() {
    watchdog("imap_unordered in a callback", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        // One worker held for ever; the other runs the callback's task.
        let unordered = pool.imap_unordered(park, [1u32], None);
        let (tx, rx) = std::sync::mpsc::channel();
        pool.apply_async_with(answer, (), move |_| {
            let got: Vec<_> = unordered.collect();
            let _ = tx.send(format!("{got:?}"));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(got) => assert!(got.starts_with("[Err(PoolState("), "{got}"),
            Err(_) => {
                // The scheduler thread is stuck in the callback: a drop
                // would wait for it for ever.
                std::mem::forget(pool);
                panic!("the callback's iteration did not return");
            }
        }
    });
}

/// A daemon child started from a thread dies when that thread ends (the
/// kernel's parent-death signal names the thread), though its process runs
/// on: the documented difference from Python (README). Every time: also
/// when the thread ends before the child asked for the signal (which the
/// kernel would then never send), as it often does for a thread that ends
/// right after the start.
#[test]
fn a_daemon_started_from_a_thread_dies_with_that_thread() {
    use std::io::{Read, Write};
    watchdog("daemons of ended threads", LIMIT, || {
        let started: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
                    let mut p = multiproc::Process::new(move || {
                        let mut b = [0u8; 1];
                        if (&theirs).read(&mut b).unwrap_or(0) == 1 {
                            let _ = (&theirs).write_all(&b);
                        }
                    })
                    .daemon(true);
                    p.start().unwrap();
                    (p, ours)
                })
            })
            .collect();
        for t in started {
            let (p, ours) = t.join().unwrap();
            assert_eq!(join(&p, Duration::from_secs(30)), -9);
            let _ = (&ours).write_all(b"x");
            assert!(!matches!((&ours).read(&mut [0u8; 1]), Ok(1)));
        }
    });
}

fn block_for_ever(_: ()) {
    loop {
        std::thread::park();
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The process-wide fork server killed again and again: each start after
/// a kill starts a new server, and the dead one's descriptors (its request
/// socket, its pid file descriptor) go, rather than stay open for the rest
/// of the process's life.
#[test]
fn a_fork_server_killed_again_and_again_leaks_no_descriptor() {
    watchdog("fork server killed again and again", LIMIT, || {
        // In a child, which has a fork server of its own, so that killing
        // it disturbs no other test.
        let p = static_child(|| {
            let mut counts = Vec::new();
            for _ in 0..5 {
                let mut a = multiproc::Process::forkserver(block_for_ever, ());
                a.start().unwrap();
                let server = common::procfs::ppid(a.pid().unwrap()).unwrap();
                a.kill().unwrap();
                assert_eq!(a.join().unwrap(), -9);
                // SAFETY: the server is this process's child, never reaped.
                assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
                counts.push(open_descriptors());
            }
            assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
        });
        assert_eq!(join(&p, LIMIT), 0);
    });
}

fn quick(_: ()) {}

/// Threads starting fork-server children while the server is killed again
/// and again: every start either runs its child or fails, none hangs, and
/// the dead servers' descriptors are all closed by the end (the last
/// thread using one closes it).
#[test]
fn threads_start_fork_server_children_while_the_server_is_killed() {
    watchdog("fork server killed under threads", LIMIT, || {
        let p = static_child(|| {
            let base = {
                let mut a = multiproc::Process::forkserver(quick, ());
                a.start().unwrap();
                assert_eq!(a.join().unwrap(), 0);
                open_descriptors()
            };
            let starters: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(|| {
                        let mut ran = 0;
                        for _ in 0..25 {
                            let mut c = multiproc::Process::forkserver(quick, ());
                            if c.start().is_ok() {
                                let code = c.join().unwrap();
                                assert!(code == 0 || code == -9, "{code}");
                                ran += 1;
                            }
                        }
                        ran
                    })
                })
                .collect();
            let mut killed = 0;
            while killed < 5 {
                let mut a = multiproc::Process::forkserver(block_for_ever, ());
                if a.start().is_err() {
                    continue;
                }
                let server = common::procfs::ppid(a.pid().unwrap());
                a.kill().unwrap();
                let _ = a.join();
                if let Some(server) = server.filter(|&s| s != std::process::id()) {
                    // SAFETY: the server is this process's child (or gone).
                    unsafe { libc::kill(server as i32, libc::SIGKILL) };
                    killed += 1;
                }
            }
            let ran: usize = starters.into_iter().map(|t| t.join().unwrap()).sum();
            assert!(ran > 0);
            // Once more after the last kill: the last dead server retired.
            let mut a = multiproc::Process::forkserver(quick, ());
            a.start().unwrap();
            assert_eq!(a.join().unwrap(), 0);
            assert_eq!(open_descriptors(), base);
        });
        assert_eq!(join(&p, LIMIT), 0);
    });
}

/// A child killed by the first or the last real-time signal prints as
/// Python's repr prints it (`exitcode=-SIGRTMIN`, `exitcode=-SIGRTMAX`:
/// Python's table has the two by name), and one in between by number.
#[test]
fn exit_codes_of_real_time_signals_print_as_pythons() {
    watchdog("real-time signals", LIMIT, || {
        for (signal, shown) in [
            (libc::SIGRTMIN(), "-SIGRTMIN".to_string()),
            (libc::SIGRTMAX(), "-SIGRTMAX".to_string()),
            (libc::SIGRTMIN() + 1, format!("-{}", libc::SIGRTMIN() + 1)),
        ] {
            let mut p = multiproc::Process::new(move || {
                // SAFETY: raising a signal whose default action ends the process.
                unsafe { libc::raise(signal) };
            });
            p.start().unwrap();
            assert_eq!(join(&p, Duration::from_secs(30)), -signal);
            let printed = p.to_string();
            assert!(
                printed.ends_with(&format!(" stopped exitcode={shown}>")),
                "{printed}"
            );
        }
    });
}
