//! Attacks through the process environment: a full descriptor table,
//! broken standard streams, unknown inherited descriptors, SIGCHLD
//! ignored or reaped by a handler, signals interrupting waits, odd
//! `TMPDIR`s. The risky part of each runs in a child process, so that a
//! limit it lowers or a disposition it changes stays there.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use common::harness::tests;
use common::{fill_descriptors, join, lower_nofile, static_child, watchdog, TempName};
use multiproc::{entry, Event, Process};

const LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    multiproc::spawn_init(&[&entry!(panics_with_stderr_broken), &entry!(waits_for_gate)]);
    common::harness::run(&tests![
        a_child_whose_stderr_is_a_closed_pipe_ends_with_its_own_exit_code,
        a_start_refused_for_want_of_a_descriptor_runs_nothing,
        a_sigchld_handler_that_reaps_every_child_fails_no_start,
        fork_servers_started_under_a_reaping_sigchld_handler_keep_exit_codes,
        a_spawned_child_keeps_no_descriptor_it_was_not_given,
        a_child_reaped_by_someone_else_is_reported_by_every_join,
        a_manager_starts_whatever_tmpdir_says,
        with_no_descriptor_left_existing_objects_still_work,
        signals_without_sa_restart_interrupt_no_wait,
        a_fork_server_out_of_descriptors_runs_no_refused_child,
        a_pool_is_dropped_after_its_owner_drops_privileges,
        a_process_that_dropped_privileges_exits_past_its_daemons,
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

/// Sets this process's soft descriptor limit to `n`; the hard limit, up
/// to which it may be raised again.
fn set_soft_nofile(n: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    limit.rlim_cur = n;
    // SAFETY: sets this process's own limit from a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    limit.rlim_max
}

/// A fork that `start` cannot follow with the child's pid file descriptor
/// (the table is full) is refused before the child runs any of its work:
/// a start that reports an error must not have run the closure (it was
/// killed after it had begun, its side effects done). Python makes its
/// pipes before it forks, so it too fails before anything runs.
fn a_start_refused_for_want_of_a_descriptor_runs_nothing() {
    watchdog("start with no descriptor left", LIMIT, || {
        let c = static_child(|| {
            lower_nofile(64);
            let ran = Event::new().unwrap();
            let held = fill_descriptors();
            for _ in 0..50 {
                let r = ran.clone();
                let mut p = Process::new(move || r.set());
                assert!(p.start().is_err(), "a start with no descriptor left");
            }
            drop(held);
            assert!(!ran.is_set(), "a child whose start failed ran its work");
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

extern "C" fn reap_every_child(_: libc::c_int) {
    // SAFETY: waitpid is async-signal-safe; a null status is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// A program whose SIGCHLD handler reaps every child (`waitpid(-1)`, a
/// common idiom) starts children that exit at once: every start succeeds
/// (before, the handler could reap the child before `start` had its pid
/// file descriptor, and the start failed with `ESRCH` after the child had
/// run; and the pid it then killed was free for reuse). Joins return: the
/// exit code, or the error that says the handler took it.
fn a_sigchld_handler_that_reaps_every_child_fails_no_start() {
    watchdog("starts under a reaping SIGCHLD handler", LIMIT, || {
        let c = static_child(|| {
            let handler = reap_every_child as extern "C" fn(libc::c_int);
            // SAFETY: installs a handler (async-signal-safe) in this child.
            unsafe { libc::signal(libc::SIGCHLD, handler as libc::sighandler_t) };
            for _ in 0..50 {
                let mut p = Process::new(|| ());
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

fn exits_with(code: i32) {
    multiproc::process::exit(code);
}

fn triple(x: u64) -> u64 {
    x * 3
}

/// A fork server (the global one, a pool's) started while the program's
/// SIGCHLD handler reaps every child does not inherit the handler: the
/// server reaps its children itself, so their exit codes reach the
/// caller and no start fails because a child was reaped before the server
/// had its pidfd.
fn fork_servers_started_under_a_reaping_sigchld_handler_keep_exit_codes() {
    watchdog(
        "fork servers under a reaping SIGCHLD handler",
        LIMIT,
        || {
            let c = static_child(|| {
                let handler = reap_every_child as extern "C" fn(libc::c_int);
                // SAFETY: installs a handler (async-signal-safe) in this child.
                unsafe { libc::signal(libc::SIGCHLD, handler as libc::sighandler_t) };
                for i in 0..30 {
                    let mut p = Process::forkserver(exits_with, i % 4);
                    let started = p.start();
                    assert!(started.is_ok(), "{started:?}");
                    assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(i % 4));
                }
                let pool = multiproc::Pool::builder()
                    .processes(2)
                    .max_tasks_per_child(1)
                    .build()
                    .unwrap();
                let items: Vec<u64> = (0..20).collect();
                let tripled: Vec<u64> = items.iter().map(|x| x * 3).collect();
                assert_eq!(pool.map(triple, items).unwrap(), tripled);
            });
            assert_eq!(join(&c, LIMIT), 0);
        },
    );
}

fn waits_for_gate(name: String) {
    assert!(Event::open(&name).unwrap().wait_timeout(LIMIT));
}

/// A spawned child runs a new program that inherits only its standard
/// streams (and its work), as Python's spawn does (`close_fds`): a
/// descriptor of the parent's that is not closed on exec (a shell's pipe,
/// one a C library opened) is not held by the child for its whole life,
/// where the write end of a pipe would keep its reader from ever seeing
/// the end of file.
fn a_spawned_child_keeps_no_descriptor_it_was_not_given() {
    watchdog("spawned child and an inherited pipe", LIMIT, || {
        // In a child: a process that another test forks meanwhile would
        // hold the pipe too.
        let c = static_child(|| {
            let name = TempName::new("spawn-fds");
            let gate = Event::create(&name).unwrap();
            let mut fds = [0; 2];
            // SAFETY: pipe writes two descriptors to a valid array; not closed
            // on exec, as a descriptor made outside Rust's std may not be.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: a fresh descriptor that nothing else owns.
            let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
            // SAFETY: as above; the two are distinct.
            let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
            let mut p = Process::spawn(entry!(waits_for_gate), name.to_string());
            p.start().unwrap();
            drop(write);
            let mut poll = libc::pollfd {
                fd: read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // Readable at once if nobody else holds the write end (end of file).
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, 10_000) };
            gate.set();
            let code = p.join_timeout(LIMIT).unwrap();
            assert_eq!(ready, 1, "the spawned child holds the pipe's write end");
            assert_eq!(code, Some(0));
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// With SIGCHLD ignored (the kernel reaps) or a handler that reaps every
/// child, the exit status of a forked child is gone. Every join says so:
/// `join` and `join_async` did, but `join_timeout` answered `None`
/// ("still running") at once, forever, so that a loop on it spun; and a
/// Manager's `shutdown`, which joins its server, failed though the server
/// had stopped. (Python's join returns with no exit code, its
/// `shutdown` raises nothing.)
fn a_child_reaped_by_someone_else_is_reported_by_every_join() {
    watchdog("joins of children reaped elsewhere", LIMIT, || {
        let handler = reap_every_child as extern "C" fn(libc::c_int);
        for disposition in [libc::SIG_IGN, handler as libc::sighandler_t] {
            let c = static_child(move || {
                // SAFETY: sets a disposition (or an async-signal-safe
                // handler) in this child.
                unsafe { libc::signal(libc::SIGCHLD, disposition) };
                let done = Event::new().unwrap();
                let d = done.clone();
                let mut p = Process::new(move || d.set());
                p.start().unwrap();
                done.wait();
                let joined = p.join_timeout(LIMIT);
                assert!(
                    matches!(joined, Err(multiproc::Error::ProcessState { .. })),
                    "{joined:?}"
                );
                assert!(p.join().is_err());
                let mut m = multiproc::Manager::start().unwrap();
                let d = m.dict::<u32, u32>().unwrap();
                d.set(1, 1).unwrap();
                let stopped = m.shutdown();
                assert!(stopped.is_ok(), "{stopped:?}");
            });
            assert_eq!(join(&c, LIMIT), 0);
        }
    });
}

/// `Manager::start` makes its socket in the temporary directory. As
/// Python's (`tempfile.gettempdir`), a `TMPDIR` that names no directory is
/// passed over for the next candidate (`/tmp`), and an unset one too; one
/// whose socket path would not fit a Unix address (108 bytes) is a clear
/// error, never a panic.
fn a_manager_starts_whatever_tmpdir_says() {
    watchdog("Manager::start under odd TMPDIRs", LIMIT, || {
        let c = static_child(|| {
            let missing = format!("/nonexistent-{}", std::process::id());
            for tmpdir in [Some(missing.as_str()), None, Some("/dev/null")] {
                match tmpdir {
                    Some(dir) => std::env::set_var("TMPDIR", dir),
                    None => std::env::remove_var("TMPDIR"),
                }
                let started = multiproc::Manager::start();
                assert!(started.is_ok(), "TMPDIR={tmpdir:?}: {started:?}");
                let m = started.unwrap();
                assert_eq!(m.dict::<u32, u32>().unwrap().len().unwrap(), 0);
            }
            let long = std::path::Path::new("/tmp").join(format!(
                "{}-{}",
                "d".repeat(100),
                std::process::id()
            ));
            std::fs::create_dir(&long).unwrap();
            std::env::set_var("TMPDIR", &long);
            let started = multiproc::Manager::start().map(drop);
            std::fs::remove_dir(&long).unwrap();
            match started {
                Err(e) => assert!(e.to_string().contains("too long"), "{e}"),
                Ok(()) => panic!("a socket path over 108 bytes"),
            }
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// In a process with no descriptor to spare, what needs no new descriptor
/// still works: a queue's put and get (blocking and async), a lock, a
/// pipe, an existing Manager proxy (from another thread too), a pool's
/// map with its workers restarting, a forked child's join; a new
/// connection to the Manager is an `Io` error (EMFILE), not `ManagerGone`.
fn with_no_descriptor_left_existing_objects_still_work() {
    watchdog("existing objects in a full descriptor table", LIMIT, || {
        let c = static_child(|| {
            lower_nofile(128);
            let q = multiproc::Queue::<u64>::new().unwrap();
            let lock = multiproc::Lock::new().unwrap();
            let (mut a, mut b) = multiproc::Pipe(true).unwrap();
            let m = multiproc::Manager::start().unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            // A server this process has no connection to.
            let other = multiproc::Manager::start().unwrap();
            let pool = multiproc::Pool::builder()
                .processes(2)
                .max_tasks_per_child(1)
                .build()
                .unwrap();
            let gate = Event::new().unwrap();
            let g = gate.clone();
            // A daemon: a failed check must not leave it waiting for the gate.
            let mut kid = Process::new(move || assert!(g.wait_timeout(LIMIT))).daemon(true);
            kid.start().unwrap();
            let held = fill_descriptors();
            // What needs a new descriptor fails, and says why: the server
            // is not gone.
            let fresh = multiproc::Manager::connect(other.address().clone(), other.authkey());
            match fresh.and_then(|fresh| fresh.dict::<u32, u32>().map(drop)) {
                Err(multiproc::Error::Io { source, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(libc::EMFILE))
                }
                other => panic!("a connect in a full table: {:?}", other.err()),
            }
            q.put(5).unwrap();
            assert_eq!(q.get().unwrap(), 5);
            q.put(6).unwrap();
            assert_eq!(block_on(q.get_async()).unwrap(), 6);
            drop(lock.lock().unwrap());
            a.send(&7u32).unwrap();
            assert_eq!(b.recv::<u32>().unwrap(), 7);
            d.set(1, 2).unwrap();
            let d2 = d.clone();
            assert_eq!(
                std::thread::spawn(move || d2.get(&1))
                    .join()
                    .unwrap()
                    .unwrap(),
                Some(2)
            );
            let tripled: Vec<u64> = (0..10).map(|x| x * 3).collect();
            assert_eq!(pool.map(triple, 0..10u64).unwrap(), tripled);
            gate.set();
            assert_eq!(kid.join_timeout(LIMIT).unwrap(), Some(0));
            drop(held);
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// Polls `f` on this thread until it is ready (within `LIMIT`).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let end = std::time::Instant::now() + LIMIT;
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "not ready within {LIMIT:?}");
        std::thread::park_timeout(left);
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A handler installed without `SA_RESTART` makes blocking calls fail with
/// `EINTR`; signals delivered over and over to a thread blocked in a
/// queue's get, a join, an event's wait, a connection's recv, a pool's
/// map, proxy calls and a listener's accept lose nothing and end none of
/// them early: each returns what it waited for.
fn signals_without_sa_restart_interrupt_no_wait() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    watchdog("waits under a storm of signals", LIMIT, || {
        let c = static_child(|| {
            // SAFETY: a zeroed sigaction is a valid value (no flags: no
            // SA_RESTART).
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
            // SAFETY: installs, in this child only, a handler that does
            // nothing (async-signal-safe).
            let installed =
                unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) };
            assert_eq!(installed, 0);
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() };
            // The waited-for event happens only after many signals.
            let go = Event::new().unwrap();
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let storm = {
                let (go, stop) = (go.clone(), stop.clone());
                std::thread::spawn(move || {
                    for n in 1u64.. {
                        if stop.load(Relaxed) {
                            break;
                        }
                        // SAFETY: this thread is joined before `me` ends.
                        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
                        if n % 200 == 0 {
                            go.set();
                        }
                        std::thread::yield_now();
                    }
                })
            };
            let q = multiproc::Queue::<u64>::new().unwrap();
            let (q2, go2) = (q.clone(), go.clone());
            let mut p = Process::new(move || {
                assert!(go2.wait_timeout(LIMIT));
                q2.put(9).unwrap();
            })
            .daemon(true);
            go.clear();
            p.start().unwrap();
            assert_eq!(q.get().unwrap(), 9);
            assert_eq!(p.join().unwrap(), 0);
            go.clear();
            assert!(go.wait_timeout(LIMIT));
            let (mut a, mut b) = multiproc::Pipe(true).unwrap();
            let go3 = go.clone();
            go.clear();
            let mut p = Process::new(move || {
                assert!(go3.wait_timeout(LIMIT));
                b.send(&3u32).unwrap();
            })
            .daemon(true);
            p.start().unwrap();
            assert_eq!(a.recv::<u32>().unwrap(), 3);
            assert_eq!(p.join().unwrap(), 0);
            let pool = multiproc::Pool::with_processes(1).unwrap();
            assert_eq!(pool.map(triple, [1u64, 2]).unwrap(), vec![3, 6]);
            let m = multiproc::Manager::start().unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            for i in 0..200 {
                d.set(i, i).unwrap();
            }
            assert_eq!(d.len().unwrap(), 200);
            let path =
                std::path::Path::new("/tmp").join(format!("env-attack-{}", std::process::id()));
            let address = multiproc::conn::Address::Unix(path.clone());
            let listener = multiproc::conn::Listener::bind(&address, None).unwrap();
            let go4 = go.clone();
            go.clear();
            let mut p = Process::new(move || {
                assert!(go4.wait_timeout(LIMIT));
                multiproc::conn::connect(&address, None).unwrap();
            })
            .daemon(true);
            p.start().unwrap();
            let accepted = listener.accept().map(drop);
            let _ = std::fs::remove_file(&path);
            assert!(accepted.is_ok(), "{accepted:?}");
            assert_eq!(p.join().unwrap(), 0);
            stop.store(true, Relaxed);
            storm.join().unwrap();
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// Shared with the fork server's children, which are forks of the process
/// that set it (through the server, forked after it was set).
static STARTED: std::sync::OnceLock<(multiproc::Semaphore, Event)> = std::sync::OnceLock::new();

/// Counts itself, then waits for the gate.
fn count_then_wait(_: ()) {
    let (started, gate) = STARTED.get().unwrap();
    started.release().unwrap();
    assert!(gate.wait_timeout(LIMIT));
}

/// A fork server with no descriptor left for a new child's pidfd refuses
/// the start, and the refused child has run nothing: it learns its work
/// only once the server holds its pidfd. (Before, the order went out with
/// the request, the child read it at once, and the server killed it after
/// it had begun.) So every child that ran is a child whose start
/// succeeded.
fn a_fork_server_out_of_descriptors_runs_no_refused_child() {
    watchdog("fork server out of descriptors", LIMIT, || {
        let c = static_child(|| {
            let hard = set_soft_nofile(64);
            STARTED
                .set((multiproc::Semaphore::new(0).unwrap(), Event::new().unwrap()))
                .unwrap();
            multiproc::process::start_forkserver().unwrap();
            // The server keeps the low limit; this process, the client,
            // has room for every child the server can start.
            set_soft_nofile(hard.min(1024));
            let mut started = Vec::new();
            let mut refused = 0;
            for _ in 0..60 {
                let mut c = Process::forkserver(count_then_wait, ()).daemon(true);
                match c.start() {
                    Ok(()) => started.push(c),
                    Err(_) => refused += 1,
                }
            }
            let (ran, gate) = STARTED.get().unwrap();
            gate.set();
            for c in &started {
                assert_eq!(c.join_timeout(LIMIT).unwrap(), Some(0));
            }
            assert!(
                refused > 0,
                "60 children fitted in the server's 64 descriptors?"
            );
            assert_eq!(ran.value() as usize, started.len());
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// A daemon's pattern: start a pool (and a Manager) as root, then drop
/// privileges. The pool's workers keep the old credentials, so this
/// process may no longer signal them: dropping the pool waited forever
/// for workers its `SIGKILL` had not reached. Their fork server, which may
/// kill them, now does. (Skipped unless the tests run as root.)
fn a_pool_is_dropped_after_its_owner_drops_privileges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to change credentials");
        return;
    }
    watchdog("a pool dropped after setuid", LIMIT, || {
        let c = static_child(|| {
            let pool = multiproc::Pool::with_processes(2).unwrap();
            let mut m = multiproc::Manager::start().unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            become_nobody();
            assert_eq!(pool.map(triple, 0..4u64).unwrap(), vec![0, 3, 6, 9]);
            d.set(1, 1).unwrap();
            drop(pool);
            assert!(m.shutdown().is_ok());
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

fn waits_long(_: ()) {
    let _ = Event::new().unwrap().wait_timeout(2 * LIMIT);
}

/// Changes this process's credentials to nobody's, and restores the death
/// signal the change cleared (the test's children have one).
fn become_nobody() {
    // SAFETY: changes this process's own credentials (group first).
    assert_eq!(unsafe { libc::setgid(65534) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setuid(65534) }, 0);
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    assert_eq!(set, 0);
}

/// At exit a process kills its daemon children and waits for every child
/// (Python's rule). One that dropped its privileges after starting them
/// may no longer kill them; it waited for them forever, and they, dying
/// with it, for it. It now exits past them: they die with it. (Python's
/// exit handler stops at the refused kill. Skipped unless root.) The
/// fork server's daemon dies with its server, which watches this process.
fn a_process_that_dropped_privileges_exits_past_its_daemons() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to change credentials");
        return;
    }
    watchdog("exit after setuid with daemon children", 2 * LIMIT, || {
        // The forked daemon outlives its parent: the kernel sends the death
        // signal as from the parent, which, now nobody, may not signal a
        // root process (it is orphaned, as Python's daemons are). Its end:
        let end = Event::new().unwrap();
        let e = end.clone();
        let c = static_child(move || {
            let mut forked = Process::new(move || assert!(e.wait_timeout(2 * LIMIT))).daemon(true);
            forked.start().unwrap();
            let mut served = Process::forkserver(waits_long, ()).daemon(true);
            served.start().unwrap();
            become_nobody();
        });
        let code = join(&c, LIMIT);
        end.set();
        assert_eq!(code, 0);
    });
}
