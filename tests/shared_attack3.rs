//! Adversarial cases against the shared layer, third round: semantics
//! compared with CPython's multiprocessing, and waits that must end.

mod common;

use std::time::{Duration, Instant};

use common::{join, procfs, static_child, watchdog};
use multiproc::Event;

const LIMIT: Duration = Duration::from_secs(120);

/// Whether every thread of process `pid` is asleep in a futex wait.
fn all_threads_in_futex(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .all(|tid| procfs::thread_blocked_in_futex(pid, tid))
}

/// `set()` then `clear()` at once (a pulse) while a process waits: in
/// CPython the waiter wakes and its `wait(30)` returns `False` at once
/// (the flag is down again when it looks); it must not sleep through the
/// pulse until its timeout. The same for an awaiting task.
#[test]
fn an_event_pulsed_while_a_process_waits_wakes_it() {
    watchdog("event pulse", LIMIT, || {
        for awaiting in [false, true] {
            let event = Event::new().unwrap();
            let theirs = event.clone();
            let waiter = static_child(move || {
                let start = Instant::now();
                let flag = if awaiting {
                    async_wait(&theirs)
                } else {
                    theirs.wait_timeout(Duration::from_secs(60))
                };
                // Woken by the pulse, long before the timeout, with the
                // flag as it is then: down.
                let code = if flag {
                    2
                } else if start.elapsed() >= Duration::from_secs(30) {
                    3
                } else {
                    0
                };
                std::process::exit(code);
            });
            let pid = waiter.pid().unwrap();
            assert!(
                common::wait_until(LIMIT / 4, || all_threads_in_futex(pid)),
                "the waiter never slept"
            );
            event.set();
            event.clear();
            assert_eq!(
                join(&waiter, Duration::from_secs(40)),
                0,
                "awaiting {awaiting}"
            );
        }
    });
}

/// The async wait, on a tokio runtime of one thread.
fn async_wait(event: &Event) -> bool {
    common::current_thread()
        .block_on(event.wait_timeout_async(Duration::from_secs(60)))
        .unwrap()
}
