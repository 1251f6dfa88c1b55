//! Adversarial review of the process tools, sixth round: `Process`, the
//! local `Pool`, `Pipe`/`Connection` and `Listener`/`connect`, with the
//! cases the earlier rounds (`process_attack*`, `pool_attack*`,
//! `conn_attack*`, `review*`) left out: timeouts at 0, 1 ns and
//! `Duration::MAX` on every timed wait, the order in which a map reports
//! its failures, pools used around `terminate` from callbacks and other
//! threads, and handshakes fed garbage.

mod common;

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{join, procfs, wait_until, watchdog};
use multiproc::conn::{connect, wait, Address, Listener};
use multiproc::process::Process;
use multiproc::{Connection, Error, Pipe, Pool};

const LIMIT: Duration = Duration::from_secs(60);

/// The three extreme timeouts every timed wait must take.
const EXTREMES: [Duration; 3] = [Duration::ZERO, Duration::from_nanos(1), Duration::MAX];

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Writes `dir/started-<pid>`, then sleeps `ms`.
fn mark_then_sleep((dir, ms): (String, u64)) -> u64 {
    let started = std::path::Path::new(&dir).join(format!("started-{}", std::process::id()));
    std::fs::write(started, b"").unwrap();
    sleep_ms(ms)
}

fn square(x: u64) -> u64 {
    x * x
}

/// Fails after `ms` milliseconds, saying which.
fn fail_after(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    panic!("failed after {ms} ms");
}

fn text(e: &Error) -> String {
    e.to_string()
}

/// Python's `map` (and `map_async(…).get()`) raises the failure that
/// happened first, not that of the first chunk in order: with chunks of
/// one, `[slow failure, quick failure]` raises the quick one's exception
/// (`MapResult._set` keeps "only the first exception" to arrive).
#[test]
fn a_map_reports_the_failure_that_came_first() {
    watchdog("first failure", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let items = [1500u64, 1];
        let e = pool.map_chunked(fail_after, items, Some(1)).unwrap_err();
        assert!(text(&e).contains("failed after 1 ms"), "{e}");
        let r = pool.map_async(fail_after, items);
        let e = r.get_timeout(LIMIT).unwrap_err();
        assert!(text(&e).contains("failed after 1 ms"), "{e}");
        let e = pool.starmap(fail_after, items).unwrap_err();
        assert!(text(&e).contains("failed after 1 ms"), "{e}");
    });
}

/// Every timed wait of a process takes 0, 1 ns and `Duration::MAX`: a
/// running child is `None` for the short ones, and the long one returns
/// its exit code once it exits.
#[test]
fn process_waits_at_the_extreme_timeouts() {
    watchdog("process timeouts", LIMIT, || {
        let (tx, rx) = UnixStream::pair().unwrap();
        let mut p = Process::new(move || {
            let mut b = [0u8];
            let _ = std::io::Read::read(&mut &rx, &mut b);
            multiproc::process::exit(i32::from(b[0]));
        })
        .daemon(true);
        p.start().unwrap();
        for t in &EXTREMES[..2] {
            assert_eq!(p.join_timeout(*t).unwrap(), None);
        }
        (&tx).write_all(&[7]).unwrap();
        assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(7));
        for t in EXTREMES {
            assert_eq!(p.join_timeout(t).unwrap(), Some(7));
        }
        // Signals to a child that exited and was reaped do nothing.
        p.kill().unwrap();
        p.terminate().unwrap();
        assert_eq!(p.exitcode(), Some(7));
    });
}

/// A forked child's misuse: start twice, join or kill before start.
#[test]
fn process_misuse_is_an_error() {
    watchdog("misuse", LIMIT, || {
        let mut p = Process::new(|| {});
        assert!(matches!(p.join(), Err(Error::ProcessState { .. })));
        assert!(matches!(
            p.join_timeout(Duration::ZERO),
            Err(Error::ProcessState { .. })
        ));
        assert!(matches!(p.kill(), Err(Error::ProcessState { .. })));
        assert!(!p.is_alive());
        assert_eq!(p.exitcode(), None);
        p.start().unwrap();
        assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
        assert_eq!(join(&p, LIMIT), 0);
        assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
    });
}

/// Results' timed waits at the extremes, on a result not there yet and
/// on one that is.
#[test]
fn result_waits_at_the_extreme_timeouts() {
    watchdog("result timeouts", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let slow = pool.apply_async(sleep_ms, 400);
        let slow_map = pool.map_async(sleep_ms, [1u64, 1]);
        for t in &EXTREMES[..2] {
            assert!(matches!(slow.get_timeout(*t), Err(Error::Timeout)));
            assert!(!slow.wait_timeout(*t));
            assert!(matches!(slow_map.get_timeout(*t), Err(Error::Timeout)));
        }
        assert_eq!(slow_map.get_timeout(Duration::MAX).unwrap(), [1, 1]);
        for t in EXTREMES {
            assert_eq!(slow.get_timeout(t).unwrap(), 400);
            assert!(slow.wait_timeout(t));
            assert_eq!(slow_map.get_timeout(t).unwrap(), [1, 1]);
        }
    });
}

/// A connection's timed waits at the extremes: nothing there, then a
/// whole message there.
#[test]
fn connection_waits_at_the_extreme_timeouts() {
    watchdog("connection timeouts", LIMIT, || {
        let (mut a, mut b) = Pipe(true).unwrap();
        for t in &EXTREMES[..2] {
            assert!(!b.poll(Some(*t)).unwrap());
            assert!(matches!(b.recv_bytes_timeout(*t), Err(Error::Timeout)));
            assert!(wait(&[&b], Some(*t)).unwrap().is_empty());
        }
        a.send_bytes(b"x").unwrap();
        for t in EXTREMES {
            assert!(b.poll(Some(t)).unwrap());
            assert_eq!(wait(&[&b], Some(t)).unwrap(), [0]);
        }
        for t in EXTREMES {
            assert_eq!(b.recv_bytes_timeout(t).unwrap(), b"x");
            a.send_bytes(b"x").unwrap();
        }
        // A header that promises 5 bytes, then nothing: each timeout ends,
        // and the message is whole once its bytes come.
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut c = Connection::from_socket(ours.into()).unwrap();
        (&raw).write_all(&5u32.to_be_bytes()).unwrap();
        for t in &EXTREMES[..2] {
            assert!(matches!(c.recv_bytes_timeout(*t), Err(Error::Timeout)));
        }
        assert!(matches!(
            c.recv_bytes_timeout(Duration::from_millis(50)),
            Err(Error::Timeout)
        ));
        (&raw).write_all(b"hello").unwrap();
        assert_eq!(c.recv_bytes_timeout(Duration::MAX).unwrap(), b"hello");
        // The peer gone: every wait ends at once.
        drop(raw);
        for t in EXTREMES {
            assert!(c.poll(Some(t)).unwrap());
            assert!(matches!(
                c.recv_bytes_timeout(t),
                Err(Error::ConnectionClosed)
            ));
        }
    });
}

/// A pool terminated from another thread while `map` waits: `map`
/// returns an error soon, and every later call is refused.
#[test]
fn terminate_from_another_thread_while_map_runs() {
    watchdog("terminate during map", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(2).unwrap());
        let p2 = pool.clone();
        let dir = common::TempDir::new("terminate-during-map");
        let d = dir.0.to_str().unwrap().to_owned();
        let t = std::thread::spawn(move || {
            p2.map_chunked(mark_then_sleep, vec![(d, 20_000u64); 8], Some(1))
        });
        // Once the two workers have their tasks.
        let started = || std::fs::read_dir(&dir.0).unwrap().count() == 2;
        assert!(wait_until(LIMIT, started));
        let begun = Instant::now();
        pool.terminate();
        let r = t.join().unwrap();
        assert!(matches!(r, Err(Error::PoolTerminated)), "{r:?}");
        assert!(begun.elapsed() < Duration::from_secs(10));
        assert!(matches!(pool.apply(square, 2), Err(Error::PoolTerminated)));
        assert!(pool.map(square, [1u64]).is_err());
        assert!(pool.imap(square, [1u64], None).all(|r| r.is_err()));
        pool.close();
        pool.join().unwrap();
    });
}

/// `terminate` from a success callback while a map runs: the map's
/// results still pending fail, nothing hangs, `join` returns.
#[test]
fn terminate_from_a_callback_while_map_runs() {
    watchdog("terminate in callback", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(2).unwrap());
        let p2 = pool.clone();
        let (tx, rx) = mpsc::channel();
        let (go, gate) = mpsc::channel::<()>();
        // The callback waits (on the scheduler thread) until the map is in.
        pool.apply_async_with(square, 3, move |_| {
            gate.recv().unwrap();
            p2.terminate();
            tx.send(()).unwrap();
        });
        let m = pool.map_async(sleep_ms, vec![5_000u64; 6]);
        go.send(()).unwrap();
        rx.recv_timeout(LIMIT).unwrap();
        assert!(m.get_timeout(Duration::from_secs(20)).is_err());
        pool.join().unwrap();
    });
}

/// Ten thousand tiny tasks on more workers than CPUs, by `apply_async`,
/// `map` and `imap_unordered`, all answered.
#[test]
fn ten_thousand_tiny_tasks_on_more_workers_than_cpus() {
    watchdog("10k tasks", LIMIT, || {
        let pool = Pool::with_processes(8).unwrap();
        let rs: Vec<_> = (0..10_000u64)
            .map(|i| pool.apply_async(square, i))
            .collect();
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.get().unwrap(), (i as u64) * (i as u64));
        }
        let v = pool.map_chunked(square, 0..10_000u64, Some(1)).unwrap();
        assert_eq!(v.len(), 10_000);
        let mut u: Vec<u64> = pool
            .imap_unordered(square, 0..10_000u64, None)
            .map(Result::unwrap)
            .collect();
        u.sort_unstable();
        assert_eq!(u, v);
    });
}

/// A pool dropped while results are pending and other threads wait on
/// them: each wait ends with `PoolTerminated`.
#[test]
fn a_pool_dropped_with_waiters_fails_them() {
    watchdog("drop with waiters", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let rs: Vec<_> = (0..4).map(|_| pool.apply_async(sleep_ms, 20_000)).collect();
        let done = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            let (tids, waiters) = mpsc::channel();
            for r in &rs {
                let (done, tids) = (done.clone(), tids.clone());
                s.spawn(move || {
                    tids.send(procfs::gettid()).unwrap();
                    assert!(matches!(r.get(), Err(Error::PoolTerminated)));
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            // Once every waiter sleeps in its wait.
            let me = std::process::id();
            for tid in waiters.iter().take(rs.len()) {
                assert!(wait_until(LIMIT, || procfs::thread_blocked_in_futex(
                    me, tid
                )));
            }
            drop(pool);
        });
        assert_eq!(done.load(Ordering::SeqCst), 4);
    });
}

/// A one-way pipe used the wrong way, and a closed end.
#[test]
fn one_way_pipes_and_closed_ends() {
    watchdog("one way", LIMIT, || {
        let (mut r, mut w) = Pipe(false).unwrap();
        assert!(matches!(r.send_bytes(b"x"), Err(Error::InvalidArgument(_))));
        assert!(matches!(w.recv_bytes(), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            w.poll(Some(Duration::ZERO)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(wait(&[&w], Some(Duration::ZERO)).is_err());
        w.send_bytes(b"x").unwrap();
        drop(w);
        assert_eq!(r.recv_bytes().unwrap(), b"x");
        assert!(matches!(r.recv_bytes(), Err(Error::ConnectionClosed)));
        r.close();
        for t in EXTREMES {
            assert!(r.poll(Some(t)).is_err());
            assert!(r.recv_bytes_timeout(t).is_err());
        }
    });
}

/// A client that sends garbage during the handshake is refused and the
/// listener goes on; keys of 0 bytes and of 10 MB work.
#[test]
fn handshake_garbage_and_extreme_keys() {
    watchdog("handshake", LIMIT, || {
        for key in [Vec::new(), vec![0xa5u8; 10_000_000]] {
            let l =
                Listener::bind(&"tcp:127.0.0.1:0".parse::<Address>().unwrap(), Some(&key)).unwrap();
            let addr = l.address().clone();
            let key2 = key.clone();
            let t = std::thread::spawn(move || {
                // Garbage: a frame of random bytes in place of the answer.
                let mut s = std::net::TcpStream::connect(match &addr {
                    Address::Tcp(a) => *a,
                    _ => unreachable!(),
                })
                .unwrap();
                let mut hdr = [0u8; 4];
                std::io::Read::read_exact(&mut s, &mut hdr).unwrap();
                let n = u32::from_be_bytes(hdr) as usize;
                let mut challenge = vec![0u8; n];
                std::io::Read::read_exact(&mut s, &mut challenge).unwrap();
                let junk = [0u8, 0, 0, 3, 1, 2, 3];
                s.write_all(&junk).unwrap();
                drop(s);
                let mut c = connect(&addr, Some(&key2)).unwrap();
                c.send_bytes(b"ok").unwrap();
                c.recv_bytes().unwrap()
            });
            assert!(matches!(l.accept(), Err(Error::AuthenticationFailed(_))));
            let mut c = l.accept().unwrap();
            assert_eq!(c.recv_bytes().unwrap(), b"ok");
            c.send_bytes(b"back").unwrap();
            assert_eq!(t.join().unwrap(), b"back");
        }
    });
}

/// Waits, without reaping it, until the child `pid` has exited.
fn wait_exited_unreaped(pid: u32) -> bool {
    // SAFETY: a zeroed `siginfo_t` is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain system call on an out-pointer of the right type.
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    r == 0
}

/// Whether the child `pid` has not exited yet (without reaping it).
fn still_running(pid: u32) -> Option<bool> {
    // SAFETY: a zeroed `siginfo_t` is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOWAIT | libc::WNOHANG;
    // SAFETY: plain system call on an out-pointer of the right type.
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
    // SAFETY: `waitid` succeeded: `info` is filled, or zeroed if no child changed.
    (r == 0).then(|| unsafe { info.si_pid() } == 0)
}

/// Makes the next pid the kernel hands out `pid`, if it can (root, and
/// no other process forks in between): `ns_last_pid`, as CRIU uses it.
fn next_pid_is(pid: u32) -> bool {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_ok()
}

/// The scenario of [`a_reused_pid_never_gives_a_child_its_siblings_exit_code`],
/// in a child of its own (it reaps behind the crate's back): its exit
/// code says what went wrong, 77 if the pid could not be reused.
fn sibling_with_a_reused_pid() -> i32 {
    let mut a = Process::new(|| multiproc::process::exit(3));
    a.start().unwrap();
    let pa = a.pid().unwrap();
    // Reaped elsewhere, as a SIGCHLD handler that reaps every child does.
    if !wait_exited_unreaped(pa) {
        return 10;
    }
    // SAFETY: waits for our own child, which has exited.
    unsafe { libc::waitpid(pa as i32, std::ptr::null_mut(), 0) };
    // A sibling started now that gets the same pid.
    let mut reused = None;
    let (go, gate) = UnixStream::pair().unwrap();
    for _ in 0..200 {
        if !next_pid_is(pa) {
            return 77;
        }
        let gate = gate.try_clone().unwrap();
        let mut b = Process::new(move || {
            let _ = std::io::Read::read(&mut &gate, &mut [0u8]);
            multiproc::process::exit(5)
        });
        b.start().unwrap();
        if b.pid() == Some(pa) {
            reused = Some(b);
            break;
        }
        b.kill().unwrap();
        if b.join().unwrap() != -libc::SIGKILL {
            return 11;
        }
    }
    let Some(b) = reused else { return 77 };
    // A's signals never reach B, which has its pid now.
    a.kill().unwrap();
    a.terminate().unwrap();
    if still_running(pa) != Some(true) {
        return 13;
    }
    (&go).write_all(&[1]).unwrap();
    if !wait_exited_unreaped(pa) {
        return 12;
    }
    // A's exit status was taken elsewhere: it must not read B's.
    match a.join_timeout(Duration::ZERO) {
        Ok(Some(5)) => return 20,
        Ok(Some(_)) => return 21,
        Ok(None) | Err(_) => {}
    }
    match a.exitcode() {
        Some(5) => return 22,
        Some(_) => return 23,
        None => {}
    }
    // B keeps its own exit code.
    match b.join_timeout(Duration::from_secs(20)) {
        Ok(Some(5)) => 0,
        Ok(other) => 30 + other.map_or(0, |c| c.clamp(0, 9)),
        Err(_) => 40,
    }
}

/// A child whose exit status was taken elsewhere (a SIGCHLD handler that
/// reaps every child) and whose pid a sibling then got: waiting for the
/// first must never reap the sibling and report its exit code, which
/// the sibling's own handle then lacks. (The pid is reused on purpose
/// here, with `ns_last_pid`; on a machine whose `pid_max` is 32768 it
/// comes round by itself.)
#[test]
fn a_reused_pid_never_gives_a_child_its_siblings_exit_code() {
    watchdog("reused pid", LIMIT, || {
        let mut p = Process::new(|| multiproc::process::exit(sibling_with_a_reused_pid()));
        p.start().unwrap();
        match join(&p, LIMIT) {
            0 => {}
            77 => eprintln!("skipped: the pid could not be made to come round"),
            code => panic!("failed with code {code}"),
        }
    });
}

/// Exit codes as Python gives them, read through the child's pidfd:
/// a return, `exit(n)` (its low byte), a panic, and signals, by `join`,
/// `join_timeout` and `exitcode`.
#[test]
fn exit_codes_of_every_kind() {
    watchdog("exit codes", LIMIT, || {
        let cases: Vec<(Process<'static>, i32)> = vec![
            (Process::new(|| {}), 0),
            (Process::new(|| multiproc::process::exit(300)), 44),
            (Process::new(|| panic!("boom")), 1),
            (
                // SAFETY: raises a signal in this (child) process.
                Process::new(|| unsafe {
                    libc::raise(libc::SIGUSR1);
                }),
                -libc::SIGUSR1,
            ),
            (
                // SAFETY: as above.
                Process::new(|| unsafe {
                    libc::raise(libc::SIGRTMIN() + 1);
                }),
                -(libc::SIGRTMIN() + 1),
            ),
        ];
        for (mut p, want) in cases {
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), want);
            assert_eq!(p.exitcode(), Some(want));
        }
        let (_tx, rx) = UnixStream::pair().unwrap();
        for (signal, how) in [(libc::SIGKILL, 0), (libc::SIGTERM, 1)] {
            let rx = rx.try_clone().unwrap();
            let mut p = Process::new(move || {
                let _ = std::io::Read::read(&mut &rx, &mut [0u8]);
            });
            p.start().unwrap();
            if how == 0 {
                p.kill().unwrap();
            } else {
                p.terminate().unwrap();
            }
            assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(-signal));
            assert!(!p.is_alive());
        }
    });
}

/// Whether the process `pid` is there and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A daemon's child: Python refuses it ("daemonic processes are not
/// allowed to have children"), since a daemon is killed at its parent's
/// exit and would leave its children running. Here a daemon may start
/// children, and they must not outlive it when it is killed so.
#[test]
fn a_daemons_child_does_not_outlive_the_daemon_killed_at_exit() {
    watchdog("daemon's child", LIMIT, || {
        let (pid_tx, pid_rx) = UnixStream::pair().unwrap();
        let (go_tx, go_rx) = UnixStream::pair().unwrap();
        let mut outer = Process::new(move || {
            let mut daemon = Process::new(move || {
                let sleeper = || Process::new(|| std::thread::sleep(Duration::from_secs(300)));
                let mut grandchild = sleeper();
                grandchild.start().unwrap();
                let pid = grandchild.pid().unwrap();
                // One started from a thread that ends: not killed with it.
                let from_thread = std::thread::spawn(move || {
                    let mut p = sleeper();
                    p.start().unwrap();
                    p
                })
                .join()
                .unwrap();
                let other = from_thread.pid().unwrap();
                (&pid_tx).write_all(&pid.to_le_bytes()).unwrap();
                (&pid_tx).write_all(&other.to_le_bytes()).unwrap();
                std::thread::sleep(Duration::from_secs(300));
            })
            .daemon(true);
            daemon.start().unwrap();
            // Exits once told to (the grandchild's pid has been read).
            let _ = std::io::Read::read(&mut &go_rx, &mut [0u8]);
        });
        outer.start().unwrap();
        let mut pid = [0u8; 4];
        std::io::Read::read_exact(&mut &pid_rx, &mut pid).unwrap();
        let grandchild = u32::from_le_bytes(pid) as i32;
        // Its pidfd, opened while it is known to live: the clean-up below
        // can never signal another process that took its pid.
        // SAFETY: a plain system call.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, grandchild, 0) } as i32;
        assert!(pidfd >= 0 && alive(grandchild));
        std::io::Read::read_exact(&mut &pid_rx, &mut pid).unwrap();
        let other = u32::from_le_bytes(pid) as i32;
        // SAFETY: a plain system call.
        let other_fd = unsafe { libc::syscall(libc::SYS_pidfd_open, other, 0) } as i32;
        assert!(other_fd >= 0);
        assert!(!common::wait_until(Duration::from_millis(300), || !alive(
            other
        )));
        // The outer child exits: its exit kills the daemon.
        (&go_tx).write_all(&[1]).unwrap();
        assert_eq!(join(&outer, LIMIT), 0);
        let gone = common::wait_until(Duration::from_secs(10), || !alive(grandchild));
        // SAFETY: signals through the pidfd opened above.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, 0, 0) };
        // SAFETY: closes it; nothing else owns it.
        unsafe { libc::close(pidfd) };
        // The one from a thread is an orphan now, as documented: ended here.
        // SAFETY: signals through the pidfd opened above.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, other_fd, libc::SIGKILL, 0, 0) };
        // SAFETY: closes it; nothing else owns it.
        unsafe { libc::close(other_fd) };
        assert!(gone, "the daemon's child {grandchild} outlived it");
    });
}

/// A map's waits where they cannot end: in one of the pool's callbacks
/// (the thread that delivers the outcomes) a map not done yet is
/// `PoolState` at once, by `get` and `get_async`; in a forked child a
/// copy of a map is the foreign-process error, and one done before the
/// fork gives its values. The async `get` reports the first failure in
/// time too.
#[test]
fn map_waits_that_cannot_end_and_the_async_first_failure() {
    watchdog("map waits", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(2).unwrap());
        let rt = common::current_thread();
        let e = rt
            .block_on(pool.map_async(fail_after, [1500u64, 1]).get_async())
            .unwrap_err();
        assert!(text(&e).contains("failed after 1 ms"), "{e}");
        let done = pool.map_async(square, [2u64, 3]);
        assert_eq!(done.get().unwrap(), [4, 9]);
        let pending = pool.map_async(sleep_ms, [3000u64, 1]);
        let child = common::static_child(move || {
            assert_eq!(done.get().unwrap(), [4, 9]);
            assert!(matches!(pending.get(), Err(Error::PoolState(_))));
            std::mem::forget((done, pending));
        });
        assert_eq!(join(&child, LIMIT), 0);
        let (tx, rx) = mpsc::channel();
        let p2 = pool.clone();
        pool.apply_async_with(square, 1, move |_| {
            let m = p2.map_async(sleep_ms, [1u64, 2]);
            let got = (
                matches!(m.get(), Err(Error::PoolState(_))),
                matches!(
                    common::current_thread().block_on(m.get_async()),
                    Err(Error::PoolState(_))
                ),
            );
            tx.send(got).unwrap();
        });
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), (true, true));
    });
}

/// `terminate` and `close` in a forked child leave the parent's pool
/// alone; an `AsyncResult` dropped at once still has its callback run;
/// a callback that blocks holds up later results only until it returns,
/// and `terminate` from another thread meanwhile takes effect then.
#[test]
fn pool_calls_from_a_child_dropped_results_and_a_blocking_callback() {
    watchdog("pool odds", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(2).unwrap());
        let p2 = pool.clone();
        let child = common::static_child(move || {
            p2.terminate();
            p2.close();
            assert!(p2.join().is_err());
            std::mem::forget(p2);
        });
        assert_eq!(join(&child, LIMIT), 0);
        assert_eq!(pool.apply(square, 5).unwrap(), 25);
        let (tx, rx) = mpsc::channel();
        drop(pool.apply_async_with(square, 6, move |v| tx.send(v).unwrap()));
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 36);
        let (go, gate) = mpsc::channel::<()>();
        let (blocking, in_callback) = mpsc::channel::<()>();
        let blocked = pool.apply_async_with(square, 7, move |_| {
            blocking.send(()).unwrap();
            let _ = gate.recv_timeout(LIMIT);
        });
        in_callback.recv_timeout(LIMIT).unwrap();
        let later = pool.apply_async(square, 8);
        assert!(!later.wait_timeout(Duration::from_millis(300)));
        pool.terminate();
        go.send(()).unwrap();
        pool.join().unwrap();
        assert_eq!(blocked.get().unwrap(), 49);
        assert!(later.get().is_ok() || matches!(later.get(), Err(Error::PoolTerminated)));
    });
}

/// A connection moved into a forked child is the child's: the parent's
/// copy goes at the hand-over, so the parent's other end sees the end of
/// the stream once the child exits, and reads every message first.
#[test]
fn a_connection_moved_into_a_child_ends_with_it() {
    watchdog("moved connection", LIMIT, || {
        let (mut ours, mut theirs) = Pipe(true).unwrap();
        let mut p = Process::new(move || {
            for i in 0..100u32 {
                theirs.send(&i).unwrap();
            }
            theirs.send_bytes(&vec![9u8; 1 << 20]).unwrap();
        });
        p.start().unwrap();
        for i in 0..100u32 {
            assert_eq!(ours.recv::<u32>().unwrap(), i);
        }
        assert_eq!(ours.recv_bytes().unwrap().len(), 1 << 20);
        assert_eq!(join(&p, LIMIT), 0);
        assert!(ours.poll(Some(Duration::MAX)).unwrap());
        assert!(matches!(ours.recv_bytes(), Err(Error::ConnectionClosed)));
    });
}

/// The async waits under a runtime's timeouts of 0, 1 ns and
/// `Duration::MAX`: a wait cut short loses nothing (a later wait gets
/// the exit code, the result, the whole message), and one not cut
/// short returns what the blocking call would.
#[test]
fn async_waits_cut_short_at_the_extreme_timeouts() {
    use tokio::time::timeout;
    watchdog("async timeouts", LIMIT, || {
        let rt = common::current_thread();
        let pool = Pool::with_processes(1).unwrap();
        let (tx, rx) = UnixStream::pair().unwrap();
        let mut p = Process::new(move || {
            let _ = std::io::Read::read(&mut &rx, &mut [0u8]);
            multiproc::process::exit(9);
        })
        .daemon(true);
        p.start().unwrap();
        let slow = pool.apply_async(sleep_ms, 300);
        let slow_map = pool.map_async(sleep_ms, [1u64, 2]);
        let (mut a, mut b) = Pipe(true).unwrap();
        rt.block_on(async {
            for t in &EXTREMES[..2] {
                assert!(timeout(*t, p.join_async()).await.is_err());
                assert!(timeout(*t, b.recv_bytes_async()).await.is_err());
            }
            assert_eq!(
                timeout(Duration::MAX, slow.get_async())
                    .await
                    .unwrap()
                    .unwrap(),
                300
            );
            assert_eq!(
                timeout(Duration::MAX, slow_map.get_async())
                    .await
                    .unwrap()
                    .unwrap(),
                [1, 2]
            );
            (&tx).write_all(&[1]).unwrap();
            assert_eq!(
                timeout(Duration::MAX, p.join_async())
                    .await
                    .unwrap()
                    .unwrap(),
                9
            );
            for t in EXTREMES {
                assert_eq!(timeout(t, p.join_async()).await.unwrap().unwrap(), 9);
                assert_eq!(timeout(t, slow.get_async()).await.unwrap().unwrap(), 300);
            }
            // A big message, its send and receive both cut short again and
            // again (at 1 ns each), then finished whole.
            let big = vec![5u8; 4 << 20];
            a.send_bytes(&big[..10]).unwrap();
            let mut got = None;
            for _ in 0..1000 {
                if let Ok(r) = timeout(Duration::from_nanos(1), b.recv_bytes_async()).await {
                    got = Some(r.unwrap());
                    break;
                }
            }
            assert_eq!(got.unwrap(), &big[..10]);
        });
        let sender = std::thread::spawn(move || {
            a.send_bytes(&vec![5u8; 4 << 20]).unwrap();
            a
        });
        let mut got = None;
        rt.block_on(async {
            for _ in 0..100_000 {
                if let Ok(r) = timeout(Duration::from_nanos(1), b.recv_bytes_async()).await {
                    got = Some(r.unwrap());
                    break;
                }
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(got.map(|g| g.len()), Some(4 << 20));
        drop(sender.join().unwrap());
    });
}

/// `max_tasks_per_child(1)` with many tasks on more workers than CPUs:
/// every task runs in a fresh worker, and none is lost or run twice.
#[test]
fn one_task_per_worker_for_two_thousand_tasks() {
    fn worker_pid(x: u64) -> (u64, u32) {
        (x, std::process::id())
    }
    watchdog("max_tasks_per_child(1)", LIMIT, || {
        let pool = Pool::builder()
            .processes(8)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let begun = Instant::now();
        let rs: Vec<_> = (0..1000u64)
            .map(|i| pool.apply_async(worker_pid, i))
            .collect();
        let mut got: Vec<(u64, u32)> = rs.iter().map(|r| r.get().unwrap()).collect();
        got.extend(
            pool.map_chunked(worker_pid, 1000..2000u64, Some(1))
                .unwrap(),
        );
        let took = begun.elapsed();
        let mut pids: Vec<u32> = got.iter().map(|&(_, p)| p).collect();
        pids.sort_unstable();
        pids.dedup();
        assert_eq!(pids.len(), 2000, "a worker ran two tasks");
        assert!(got.iter().enumerate().all(|(i, &(x, _))| x == i as u64));
        pool.close();
        pool.join().unwrap();
        eprintln!("2000 tasks, one per worker: {took:?}");
    });
}
