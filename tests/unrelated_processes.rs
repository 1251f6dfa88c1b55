//! Tests whose other party is an unrelated process: this test binary run
//! again (exec'd, not forked, so it shares nothing but what it opens by
//! name), with `HELPER_ENV` saying which helper to be. The helpers run in
//! `main`, before any test: a program of their own with real stdout, and
//! whose `main` returns as a program's does.

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use common::harness::tests;
use common::{procfs, run_helper, run_with_deadline, wait_until, watchdog, TempName, HELPER_ENV};
use multiproc::{Condition, Error, Process, RawValue, Value};

const LIMIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    if let Ok(helper) = std::env::var(HELPER_ENV) {
        run_as_helper(&helper);
        return ExitCode::SUCCESS;
    }
    common::harness::run(&tests![
        buffered_output_is_never_doubled_by_fork,
        forking_while_another_thread_prints_never_hangs_the_child,
        children_are_joined_when_main_returns,
        a_childs_life_is_logged_as_python_logs_it,
        an_exit_does_not_wait_for_the_manager_server,
        unrelated_process_opens_by_name,
        named_condition_between_unrelated_processes,
    ])
}

fn park_forever() {
    loop {
        std::thread::park();
    }
}

/// The helper processes' bodies; a panic fails the test that ran them.
fn run_as_helper(helper: &str) {
    match helper.split_once(':').unwrap_or((helper, "")) {
        ("stdout", _) => {
            // Pending in Rust's line buffer when the child forks.
            print!("before-fork ");
            let mut p = Process::new(|| println!("child"));
            p.start().unwrap();
            p.join().unwrap();
            println!("parent");
        }
        ("main-returns", _) => {
            // A Python program's habit: start children and let main end.
            let main_returned = RawValue::new(0u32).unwrap();
            let theirs = main_returned.clone();
            let mut worker = Process::new(move || {
                assert!(wait_until(LIMIT, || theirs.get() == 1));
                // The child's work: it is still running when main returns.
                std::thread::sleep(Duration::from_millis(300));
                println!("child finished");
            });
            worker.start().unwrap();
            let mut daemon = Process::new(park_forever).daemon(true);
            daemon.start().unwrap();
            println!("daemon {}", daemon.pid().unwrap());
            println!("main returns");
            main_returned.set(1);
        }
        ("lifecycle-log", _) => {
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
        ("manager-at-exit", _) => {
            // The Manager's server outlives nothing: an exit with a live
            // manager (no destructor runs) must not wait for it forever.
            let m = multiproc::manager::Manager::start().unwrap();
            m.dict::<u8, u8>().unwrap().set(1, 1).unwrap();
            println!("server {}", m.server_pid().unwrap());
            println!("exiting");
            std::process::exit(0);
        }
        ("busy-stdout", _) => {
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
        ("open-value", name) => {
            let v = Value::<u64>::open(name).expect("open by name");
            *v.lock().expect("lock") += 1;
            assert!(matches!(
                Value::<f64>::open(name),
                Err(Error::TypeMismatch { .. })
            ));
        }
        ("cond", name) => {
            // Open the named condition, wait for its flag word (a named
            // RawValue beside it), and say how it woke.
            let cond = Condition::open(name).unwrap();
            let flag = RawValue::<u32>::open(&format!("{name}-flag")).unwrap();
            let mut g = cond.lock().unwrap();
            flag.atomic().fetch_add(1, SeqCst); // here, holding the lock
            let ok = g.wait_for(|| flag.get() >= 100, Some(LIMIT)).unwrap();
            println!("woke {ok}");
        }
        _ => panic!("no helper {helper:?}"),
    }
}

/// The number that follows the first `label` in `out`.
fn number_after(out: &str, label: &str) -> u32 {
    out.split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {out:?}"))
}

fn buffered_output_is_never_doubled_by_fork() {
    watchdog("stdout", LIMIT, || {
        let out = run_helper("stdout", LIMIT);
        assert_eq!(out.matches("before-fork").count(), 1, "{out}");
        assert_eq!(out.matches("child").count(), 1, "{out}");
        assert_eq!(out.matches("parent").count(), 1, "{out}");
    });
}

fn forking_while_another_thread_prints_never_hangs_the_child() {
    let limit = Duration::from_secs(120);
    watchdog("busy stdout", limit, || {
        let out = run_helper("busy-stdout", limit);
        for i in [0, 50, 99] {
            assert!(out.contains(&format!("child {i}\n")), "child {i} missing");
        }
    });
}

/// Python joins non-daemon children at exit and ends daemon ones: a program
/// whose `main` returns while a child works exits after the child, with the
/// child's output in place, and leaves no daemon behind.
fn children_are_joined_when_main_returns() {
    watchdog("main returns", LIMIT, || {
        // Only the helper's exit is awaited: its output then is complete
        // only if the exit waited for the child.
        let out = run_helper("main-returns", LIMIT);
        let main_returns = out.find("main returns").expect(&out);
        let child_finished = out.find("child finished").expect(&out);
        assert!(main_returns < child_finished, "{out}");
        let daemon = number_after(&out, "daemon ");
        // Killed and reaped before the program ended.
        assert!(!procfs::exists(daemon), "daemon {daemon} lives");
    });
}

/// An exit with a Manager alive does not wait for its server, which ends
/// by itself when it sees its parent gone.
fn an_exit_does_not_wait_for_the_manager_server() {
    watchdog("manager at exit", LIMIT, || {
        let out = run_helper("manager-at-exit", LIMIT);
        assert!(out.contains("exiting"), "{out}");
        let server = number_after(&out, "server ");
        assert!(
            wait_until(LIMIT, || procfs::gone(server)),
            "the server {server} outlives its program"
        );
    });
}

fn unrelated_process_opens_by_name() {
    watchdog("exec'd opener", LIMIT, || {
        let name = TempName::new("unrelated");
        let v = Value::create(&name, 41u64).unwrap();
        run_helper(&format!("open-value:{}", name.0), LIMIT);
        assert_eq!(v.get().unwrap(), 42);
    });
}

/// A named condition opened by unrelated processes: they wait on it and
/// are woken by this one's notify_all.
fn named_condition_between_unrelated_processes() {
    watchdog("named condition", LIMIT, || {
        let name = TempName::new("attack-cond");
        let flag_name = TempName(format!("{}-flag", name.0));
        let cond = Condition::create(&name).unwrap();
        let flag = RawValue::create(&flag_name, 0u32).unwrap();
        std::thread::scope(|s| {
            let helpers: Vec<_> = (0..2)
                .map(|_| s.spawn(|| run_helper(&format!("cond:{}", name.0), LIMIT)))
                .collect();
            // Both are inside wait once they counted and the lock is free.
            assert!(wait_until(LIMIT, || flag.get() >= 2));
            let g = cond.lock().unwrap();
            flag.set(100);
            g.notify_all();
            drop(g);
            for h in helpers {
                let out = h.join().unwrap();
                assert!(out.contains("woke true"), "{out}");
            }
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
fn a_childs_life_is_logged_as_python_logs_it() {
    watchdog("lifecycle log", LIMIT, || {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.env(HELPER_ENV, "lifecycle-log");
        let (status, stdout, stderr) = run_with_deadline(&mut command, b"", LIMIT);
        assert!(status.success(), "{stderr}");
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
        assert!(stdout.contains("child working\n"), "{stdout}");
        let main_returns = stdout.find("main returns\n").expect(&stdout);
        let finished = stdout.find("slow child finished\n").expect(&stdout);
        assert!(main_returns < finished, "{stdout}");
    });
}
