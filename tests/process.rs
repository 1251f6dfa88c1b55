//! Process: Python's exit codes, timeouts, names, daemons and stdio, with
//! real forked children.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{join, run_helper, watchdog, HELPER_ENV};
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

/// The bodies of the helper processes that the next tests execute (this
/// test binary, run again with real stdout); a no-op otherwise.
#[test]
fn helper_entry() {
    match std::env::var(HELPER_ENV).as_deref() {
        Ok("stdout") => {
            // Pending in Rust's line buffer when the child forks.
            print!("before-fork ");
            let mut p = Process::new(|| println!("child"));
            p.start().unwrap();
            p.join().unwrap();
            println!("parent");
        }
        Ok("main-returns") => {
            // A Python program's habit: start children and let main end.
            let mut worker = Process::new(|| {
                // The child's work: it is still running when main returns.
                std::thread::sleep(Duration::from_millis(300));
                println!("child finished");
            });
            worker.start().unwrap();
            let mut daemon = Process::new(park_forever).daemon(true);
            daemon.start().unwrap();
            println!("daemon {}", daemon.pid().unwrap());
            println!("main returns");
        }
        Ok("lifecycle-log") => {
            // The program of `a_childs_life_is_logged_as_python_logs_it`.
            multiproc::log_to_stderr(multiproc::LogLevel::Debug).unwrap();
            let mut p = Process::new(|| println!("child working"));
            p.start().unwrap();
            p.join().unwrap();
            // A daemon dies with the thread that started it (see
            // `Process::daemon`), and this test's thread ends before the
            // program does: start it from one that lives until the exit.
            // It tells when it runs (so has logged that it does), lest the
            // exit kill it before it could.
            let (started, wait) = std::sync::mpsc::channel();
            let running = multiproc::Event::new().unwrap();
            let tell = running.clone();
            std::thread::spawn(move || {
                let daemon = Process::new(move || {
                    tell.set();
                    park_forever();
                });
                daemon.daemon(true).start().unwrap();
                started.send(()).unwrap();
                park_forever();
            });
            wait.recv().unwrap();
            assert!(running.wait_timeout(LIMIT));
            // Still working when main returns.
            Process::new(|| {
                std::thread::sleep(Duration::from_millis(300));
                println!("slow child finished");
            })
            .start()
            .unwrap();
            println!("main returns");
        }
        Ok("manager-at-exit") => {
            // The Manager's server outlives nothing: an exit with a live
            // manager (no destructor runs) must not wait for it forever.
            let m = multiproc::manager::Manager::start().unwrap();
            m.dict::<u8, u8>().unwrap().set(1, 1).unwrap();
            println!("exiting");
            std::process::exit(0);
        }
        Ok("busy-stdout") => {
            // Another thread keeps taking the stdout lock while we fork.
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(SeqCst) {
                        println!("noise");
                    }
                });
                for i in 0..100 {
                    let mut p = Process::new(move || println!("child {i}"));
                    p.start().unwrap();
                    assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0), "child {i} hung");
                }
                stop.store(true, SeqCst);
            });
        }
        _ => {}
    }
}

#[test]
fn buffered_output_is_never_doubled_by_fork() {
    watchdog("stdout", LIMIT, || {
        let out = run_helper("stdout");
        assert_eq!(out.matches("before-fork").count(), 1, "{out}");
        assert_eq!(out.matches("child").count(), 1, "{out}");
        assert_eq!(out.matches("parent").count(), 1, "{out}");
    });
}

#[test]
fn forking_while_another_thread_prints_never_hangs_the_child() {
    watchdog("busy stdout", Duration::from_secs(120), || {
        let out = run_helper("busy-stdout");
        for i in [0, 50, 99] {
            assert!(out.contains(&format!("child {i}\n")), "child {i} missing");
        }
    });
}

/// Python joins non-daemon children at exit and ends daemon ones: a program
/// whose `main` returns while a child works exits after the child, with the
/// child's output in place, and leaves no daemon behind.
#[test]
fn children_are_joined_when_main_returns() {
    watchdog("main returns", LIMIT, || {
        let out = run_helper("main-returns");
        let main_returns = out.find("main returns").expect(&out);
        let child_finished = out.find("child finished").expect(&out);
        assert!(main_returns < child_finished, "{out}");
        let daemon: i32 = out
            .split("daemon ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect(&out)
            .parse()
            .unwrap();
        // Killed and reaped before the program ended.
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_eq!(
            unsafe { libc::kill(daemon, 0) },
            -1,
            "daemon {daemon} lives"
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

/// An exit with a Manager alive does not wait for its server, which ends
/// by itself when it sees its parent gone.
#[test]
fn an_exit_does_not_wait_for_the_manager_server() {
    watchdog("manager at exit", LIMIT, || {
        assert!(run_helper("manager-at-exit").contains("exiting"));
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

/// The log lines of `log_to_stderr`'s stderr, as (level, process, message).
fn log_records(stderr: &str) -> Vec<(String, String, String)> {
    stderr
        .lines()
        .filter_map(|line| {
            let (head, message) = line.strip_prefix('[')?.split_once("] ")?;
            let (level, process) = head.split_once('/')?;
            Some((level.into(), process.into(), message.into()))
        })
        .collect()
}

/// `log_to_stderr(DEBUG)` in Python reports each process's life; the same
/// program in Rust (the helper "lifecycle-log") reports it with the same
/// words at the same levels. Python 3.12.1 printed, for this program
///
/// ```python
/// import logging, multiprocessing as mp, time
/// def work(): print("child working", flush=True)
/// def slow(): time.sleep(0.3); print("slow child finished", flush=True)
/// def park(): time.sleep(60)
/// if __name__ == "__main__":
///     mp.set_start_method("fork")
///     mp.log_to_stderr(logging.DEBUG)
///     p = mp.Process(target=work); p.start(); p.join()
///     mp.Process(target=park, daemon=True).start()
///     mp.Process(target=slow).start()
///     print("main returns", flush=True)
/// ```
///
/// these lines on stderr (the processes' lines interleave differently from
/// run to run; each process's own are always in this order):
///
/// ```text
/// [INFO/Process-1] child process calling self.run()
/// [INFO/Process-1] process shutting down
/// [DEBUG/Process-1] running all "atexit" finalizers with priority >= 0
/// [DEBUG/Process-1] running the remaining "atexit" finalizers
/// [INFO/Process-1] process exiting with exitcode 0
/// [INFO/MainProcess] process shutting down
/// [DEBUG/MainProcess] running all "atexit" finalizers with priority >= 0
/// [INFO/MainProcess] calling terminate() for daemon Process-2
/// [INFO/MainProcess] calling join() for process Process-3
/// [INFO/Process-3] child process calling self.run()
/// [INFO/Process-3] process shutting down
/// [DEBUG/Process-3] running all "atexit" finalizers with priority >= 0
/// [DEBUG/Process-3] running the remaining "atexit" finalizers
/// [INFO/Process-3] process exiting with exitcode 0
/// [INFO/MainProcess] calling join() for process Process-2
/// [DEBUG/MainProcess] running the remaining "atexit" finalizers
/// ```
///
/// The daemon, Process-2, was terminated here before it could log its
/// first line (the Rust program waits until it has); Python joins the
/// children in no set order (multiproc in the order they started), and
/// says `calling join()` for the terminated daemon only if it has not
/// exited yet when it looks again (multiproc always does: it waits for the
/// killed daemon too).
#[test]
fn a_childs_life_is_logged_as_python_logs_it() {
    watchdog("lifecycle log", LIMIT, || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_entry", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, "lifecycle-log")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let records = log_records(&stderr);
        let of = |process: &str| -> Vec<String> {
            records
                .iter()
                .filter(|(_, p, _)| p == process)
                .map(|(level, _, message)| format!("{level} {message}"))
                .collect()
        };
        let child_life = [
            "INFO child process calling self.run()",
            "INFO process shutting down",
            "DEBUG running all \"atexit\" finalizers with priority >= 0",
            "DEBUG running the remaining \"atexit\" finalizers",
            "INFO process exiting with exitcode 0",
        ];
        assert_eq!(of("Process-1"), child_life, "{stderr}");
        // Killed by its parent's exit before it could say more.
        assert_eq!(of("Process-2"), child_life[..1], "{stderr}");
        assert_eq!(of("Process-3"), child_life, "{stderr}");
        assert_eq!(
            of("MainProcess"),
            [
                "INFO process shutting down",
                "DEBUG running all \"atexit\" finalizers with priority >= 0",
                "INFO calling terminate() for daemon Process-2",
                "INFO calling join() for process Process-2",
                "INFO calling join() for process Process-3",
                "DEBUG running the remaining \"atexit\" finalizers",
            ],
            "{stderr}"
        );
        // Process-1 was joined before the others started; the main
        // process's last line comes after Process-3's, which it waited for.
        let at = |process: &str, message: &str| {
            records
                .iter()
                .position(|(_, p, m)| p == process && m == message)
                .unwrap_or_else(|| panic!("{process}: {message} missing: {stderr}"))
        };
        let exiting = "process exiting with exitcode 0";
        assert!(at("Process-1", exiting) < at("Process-2", "child process calling self.run()"));
        assert!(
            at("Process-3", exiting)
                < at("MainProcess", "running the remaining \"atexit\" finalizers")
        );
        // And the children's own output is there, the slow child's after
        // main returned.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("child working\n"), "{stdout}");
        let main_returns = stdout.find("main returns\n").expect(&stdout);
        let finished = stdout.find("slow child finished\n").expect(&stdout);
        assert!(main_returns < finished, "{stdout}");
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
        let before = Process::new(|| {});
        let next: u32 = before.name()["Process-".len()..].parse().unwrap();
        let worker = Worker {
            n: 21,
            expected_name: format!("Worker-{}", next + 1),
        };
        let expected = worker.expected_name.clone();
        let mut p = Process::from_run(worker);
        assert_eq!(p.name(), expected);
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
