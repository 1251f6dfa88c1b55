//! Process: Python's exit codes, timeouts, names, daemons and stdio, with
//! real forked children.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{join, watchdog};
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
        let mut named = named.with_name("worker");
        assert_eq!(named.name(), "worker");
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
        let theirs = daemon_pid.clone();
        let mut middle = Process::new(move || {
            let mine = theirs.clone();
            let mut d = Process::new(move || {
                mine.set(std::process::id());
                park_forever();
            })
            .daemon(true);
            d.start().unwrap();
            // Wait until the daemon runs, then exit without joining it.
            assert!(common::wait_until(LIMIT, || theirs.get() != 0));
            // SAFETY: ends this process without the exit hook, as a crash
            // would: the daemon must die by its death signal.
            unsafe { libc::_exit(0) }
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

/// A child's end is an exit too: it waits for its own non-daemon children,
/// whether its closure returns or calls `process::exit`.
#[test]
fn a_child_waits_for_its_children_before_it_exits() {
    watchdog("child exit", LIMIT, || {
        for explicit_exit in [false, true] {
            let done = RawValue::new(0u32).unwrap();
            let theirs = done.clone();
            let mut p = Process::new(move || {
                let mut grandchild = Process::new(move || {
                    std::thread::sleep(Duration::from_millis(300)); // the work
                    theirs.set(1);
                });
                grandchild.start().unwrap();
                if explicit_exit {
                    process::exit(4);
                }
            });
            p.start().unwrap();
            let code = join(&p, LIMIT);
            assert_eq!(code, if explicit_exit { 4 } else { 0 });
            assert_eq!(
                done.get(),
                1,
                "exit {explicit_exit}: returned before its child"
            );
        }
    });
}

/// A scope waits for its children even when its closure panics, and kills
/// its daemon children.
#[test]
fn a_scope_joins_its_children_when_its_closure_panics() {
    watchdog("scope panic", LIMIT, || {
        let done = RawValue::new(0u32).unwrap();
        let daemon = RawValue::new(0u32).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            multiproc::scope(|s| {
                s.start(|| {
                    std::thread::sleep(Duration::from_millis(300)); // the work
                    done.set(1);
                })
                .unwrap();
                let mut d = s
                    .process(|| {
                        daemon.set(std::process::id());
                        park_forever();
                    })
                    .daemon(true);
                d.start().unwrap();
                assert!(common::wait_until(LIMIT, || daemon.get() != 0));
                panic!("expected panic in a scope");
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.get(), 1, "the scope returned before its child ended");
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_eq!(unsafe { libc::kill(daemon.get() as i32, 0) }, -1);
    });
}

/// A scoped child hands a borrow to a child of its own and is killed
/// before it can wait for it: the scope still waits for the grandchild,
/// which may be using the borrow.
#[test]
fn a_scope_waits_for_the_children_of_a_killed_child() {
    watchdog("scope witness", LIMIT, || {
        let started = RawValue::new(0u32).unwrap();
        let done = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let middle = s
                .start(|| {
                    multiproc::scope(|s| {
                        s.start(|| {
                            started.set(1);
                            std::thread::sleep(Duration::from_millis(300)); // the work
                            done.set(1);
                        })
                        .unwrap();
                        park_forever();
                    })
                })
                .unwrap();
            assert!(common::wait_until(LIMIT, || started.get() == 1));
            middle.kill().unwrap();
        });
        assert_eq!(done.get(), 1, "the scope ended while a grandchild ran");
    });
}

/// A `'static` process started while a scope runs cannot hold its borrows:
/// the scope does not wait for it.
#[test]
fn a_scope_does_not_wait_for_processes_outside_it() {
    watchdog("scope outsiders", LIMIT, || {
        let mut outsider = Process::new(park_forever).daemon(true);
        multiproc::scope(|s| {
            s.start(|| {}).unwrap();
            outsider.start().unwrap();
        });
        assert!(outsider.is_alive());
        outsider.kill().unwrap();
        assert_eq!(join(&outsider, LIMIT), -libc::SIGKILL);
    });
}

/// A scope's processes are started by the process that runs the scope; a
/// handle copied into another process can neither start, wait for nor
/// signal anything there.
#[test]
fn handles_belong_to_the_process_that_started_them() {
    watchdog("foreign handles", LIMIT, || {
        let mut sleeper = Process::new(park_forever).daemon(true);
        sleeper.start().unwrap();
        let sleeper = std::sync::Arc::new(sleeper);
        let theirs = sleeper.clone();
        let mut p = Process::new(move || {
            assert!(matches!(theirs.join(), Err(Error::ProcessState { .. })));
            assert!(matches!(theirs.kill(), Err(Error::ProcessState { .. })));
            assert!(!theirs.is_alive());
        });
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), 0);
        assert!(sleeper.is_alive());
        sleeper.kill().unwrap();
        multiproc::scope(|s| {
            let mut unstarted = s.process(|| {});
            let mut p = s.process(move || {
                assert!(matches!(unstarted.start(), Err(Error::ProcessState { .. })));
            });
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), 0);
        });
    });
}

/// A fork from one thread while another starts processes and reads the
/// registry (what a fork server or any `fork` does): the child finds the
/// crate's locks free, and starts and joins a child of its own.
#[test]
fn a_fork_while_another_thread_starts_processes_never_hangs_the_child() {
    watchdog("fork hammer", Duration::from_secs(120), || {
        let stop = AtomicBool::new(false);
        std::thread::scope(|t| {
            t.spawn(|| {
                while !stop.load(SeqCst) {
                    let mut p = Process::new(|| {});
                    p.start().unwrap();
                    let _ = multiproc::active_children();
                    let _ = current_process();
                    p.join().unwrap();
                }
            });
            for i in 0..300 {
                // SAFETY: the child only uses this crate's process API (whose
                // locks are the point of the test) and then `_exit`s.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    let ok = std::panic::catch_unwind(|| {
                        drop(std::io::stdout().lock());
                        let _ = multiproc::active_children();
                        let _ = current_process();
                        let mut p = Process::new(|| {});
                        p.start().unwrap();
                        p.join().unwrap() == 0
                    });
                    // SAFETY: ends the forked copy at once.
                    unsafe { libc::_exit(if ok.unwrap_or(false) { 0 } else { 1 }) };
                }
                assert!(pid > 0);
                let mut status = 0;
                let exited = common::wait_until(Duration::from_secs(10), || {
                    // SAFETY: `status` is a valid out-pointer; our own child.
                    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
                });
                if !exited {
                    // SAFETY: our own unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    stop.store(true, SeqCst);
                    panic!("fork {i}: the child hung");
                }
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "fork {i}: {status:#x}"
                );
            }
            stop.store(true, SeqCst);
        });
    });
}

/// Python's "subclass `Process` and override `run()`": a type that
/// implements `Run`. As in Python, its default name is the type's name and
/// a number (`class Worker(Process)` gives `Worker-2`), the child knows that
/// name, and its changes to `self` stay in the child.
#[test]
fn a_run_type_is_pythons_process_subclass() {
    struct Worker {
        n: u32,
        expected_name: String,
    }
    impl process::Run for Worker {
        fn run(&mut self) {
            self.n *= 2;
            let me = current_process();
            if me.name() != self.expected_name || self.n != 42 {
                process::exit(3);
            }
        }
    }
    struct Failing;
    impl process::Run for Failing {
        fn run(&mut self) {
            process::exit(7);
        }
    }
    watchdog("run objects", LIMIT, || {
        // Another test's thread may take the next number in between: then
        // try again (the name must be exactly the one after `before`'s).
        let (mut p, expected) = loop {
            let before = Process::new(|| {});
            let next: u32 = before.name()["Process-".len()..].parse().unwrap();
            let worker = Worker {
                n: 21,
                expected_name: format!("Worker-{}", next + 1),
            };
            let expected = worker.expected_name.clone();
            let p = Process::from_run(worker);
            let name: u32 = p.name()["Worker-".len()..].parse().unwrap();
            assert!(name > next, "{} after {}", p.name(), before.name());
            if p.name() == expected {
                break (p, expected);
            }
        };
        assert_eq!(
            p.to_string(),
            format!(
                "<Worker name='{expected}' parent={} initial>",
                std::process::id()
            )
        );
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), 0);
        assert!(p
            .to_string()
            .starts_with(&format!("<Worker name='{expected}' pid=")));

        let mut f = Process::from_run(Failing).with_name("failing");
        f.start().unwrap();
        assert_eq!(join(&f, LIMIT), 7);
    });
}

/// `Display` is Python's `repr(p)`. Python 3.12.1 printed, for processes
/// in the same states (pids aside):
///
/// ```text
/// <Process name='Process-1' parent=20371 initial>
/// <Process name="it's" pid=20399 parent=20371 started daemon>
/// <Process name="it's" pid=20399 parent=20371 stopped exitcode=-SIGTERM daemon>
/// <Process name='x"y' pid=20400 parent=20371 stopped exitcode=3>
/// <Process name='Process-5' pid=20403 parent=20371 stopped exitcode=-SIGKILL>
/// <Process name='Process-1' pid=20395 parent=20371 stopped exitcode=0>
/// ```
///
/// and `unknown` for a copy of a handle in another process.
#[test]
fn processes_print_as_python_prints_them() {
    watchdog("display", LIMIT, || {
        let me = std::process::id();
        let p = Process::new(|| {});
        let name = p.name().to_owned();
        assert_eq!(
            p.to_string(),
            format!("<Process name='{name}' parent={me} initial>")
        );

        let mut d = Process::new(park_forever).with_name("it's").daemon(true);
        assert_eq!(
            d.to_string(),
            format!("<Process name=\"it's\" parent={me} initial daemon>")
        );
        d.start().unwrap();
        let pid = d.pid().unwrap();
        assert_eq!(
            d.to_string(),
            format!("<Process name=\"it's\" pid={pid} parent={me} started daemon>")
        );
        // A forked copy of the handle cannot tell: Python's `unknown`.
        multiproc::scope(|s| {
            let d = &d;
            let mut c = s.process(move || {
                let shown = d.to_string();
                let expected =
                    format!("<Process name=\"it's\" pid={pid} parent={me} unknown daemon>");
                process::exit(if shown == expected { 0 } else { 1 });
            });
            c.start().unwrap();
            assert_eq!(join(&c, LIMIT), 0);
        });
        d.terminate().unwrap();
        assert_eq!(join(&d, LIMIT), -libc::SIGTERM);
        assert_eq!(
            d.to_string(),
            format!(
                "<Process name=\"it's\" pid={pid} parent={me} stopped exitcode=-SIGTERM daemon>"
            )
        );

        let mut e = Process::new(|| process::exit(3)).with_name("x\"y");
        e.start().unwrap();
        assert_eq!(join(&e, LIMIT), 3);
        let pid = e.pid().unwrap();
        assert_eq!(
            e.to_string(),
            format!("<Process name='x\"y' pid={pid} parent={me} stopped exitcode=3>")
        );

        let mut k = Process::new(park_forever);
        let name = k.name().to_owned();
        k.start().unwrap();
        k.kill().unwrap();
        assert_eq!(join(&k, LIMIT), -libc::SIGKILL);
        let pid = k.pid().unwrap();
        assert_eq!(
            k.to_string(),
            format!("<Process name='{name}' pid={pid} parent={me} stopped exitcode=-SIGKILL>")
        );
    });
}

/// Fork copies the whole process, so a forked child may run a closure that
/// is not `Send` (one that captures an `Rc`, or borrows a `RefCell`); its
/// handle, a `LocalProcess`, stays on this thread (the compile-fail
/// doctests on `Process` show what is rejected).
#[test]
fn forked_closures_need_not_be_send() {
    use std::cell::RefCell;
    use std::rc::Rc;
    watchdog("local processes", LIMIT, || {
        let shared = Rc::new(RefCell::new(vec![1, 2, 3]));
        let mine = Rc::clone(&shared);
        let mut p = Process::new_local(move || {
            mine.borrow_mut().push(4);
            let sum: i32 = mine.borrow().iter().sum();
            process::exit(sum);
        });
        assert!(p.name().starts_with("Process-"));
        p.start().unwrap();
        assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(10));
        // The child's push was its own; the parent's Rc is intact.
        assert_eq!(*shared.borrow(), [1, 2, 3]);
        assert_eq!(Rc::strong_count(&shared), 1, "the closure was dropped here");

        let local = RefCell::new(5);
        multiproc::scope(|s| {
            let mut c = s.process_local(|| {
                *local.borrow_mut() += 1;
                process::exit(*local.borrow());
            });
            c.start().unwrap();
            assert_eq!(c.join_timeout(LIMIT).unwrap(), Some(6));
        });
        assert_eq!(*local.borrow(), 5);
    });
}
