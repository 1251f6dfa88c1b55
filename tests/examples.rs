//! Every example runs to its end, as a user would run it, and prints what
//! its README row says. The examples are the binaries `cargo test` builds
//! beside this one; run alone (`cargo test --test examples`), cargo does
//! not build them, and each test says so and passes, except in CI.
//!
//! Not here: `python_clients` (tests/example_python_clients.rs),
//! `redis_counter` and `redis_pool` (they need a Redis server; the second
//! runs in tests/redis_pool.rs), and `remote_manager`, which builds the
//! command-line program with `cargo` while this run holds cargo's lock.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The bound on each example.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs example `name` with `args`; its standard output, once it has
/// exited with 0. `None` if it is not built (outside CI).
fn run(name: &str, args: &[&str]) -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples").join(name))
        .unwrap();
    if !example.exists() {
        let why = format!(
            "{} is not built (`cargo test` builds it)",
            example.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    let (status, out, err) =
        common::run_with_deadline(Command::new(&example).args(args), b"", LIMIT);
    assert!(
        status.success(),
        "{name}: {status}\nstdout: {out}\nstderr: {err}"
    );
    Some(out)
}

/// Runs example `name` and checks that it printed each of `lines`.
fn prints(name: &str, args: &[&str], lines: &[&str]) {
    let Some(out) = run(name, args) else {
        return;
    };
    for line in lines {
        assert!(
            out.lines().any(|l| l == *line),
            "{name} did not print {line:?}:\n{out}"
        );
    }
}

#[test]
fn value_array() {
    prints(
        "value_array",
        &[],
        &["[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]"],
    );
}

#[test]
fn lock() {
    let lines: Vec<String> = (0..10).map(|i| format!("hello world {i}")).collect();
    prints(
        "lock",
        &[],
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

#[test]
fn rlock() {
    prints(
        "rlock",
        &[],
        &[
            "auditor: the total was 2000 at each of 1000 checks",
            "accounts: 1500 and 500",
            "total still 2000 after 1000 transfers",
        ],
    );
}

#[test]
fn process_exitcodes() {
    prints(
        "process_exitcodes",
        &[],
        &["terminated.exitcode = Some(-15)"],
    );
}

#[test]
fn owner_died() {
    prints("owner_died", &[], &["balance = 100"]);
}

#[test]
fn event() {
    prints(
        "event",
        &[],
        &[
            "wait_for_event_timeout: event.is_set() = false",
            "main: event is set",
            "wait_for_event: event.is_set() = true",
        ],
    );
}

#[test]
fn condition() {
    prints("condition", &[], &["all 9 items taken"]);
}

#[test]
fn barrier() {
    prints("barrier", &[], &["3 phases done in lockstep"]);
}

#[test]
fn semaphore_pool() {
    prints(
        "semaphore_pool",
        &[],
        &["at most 3 workers were inside at once (limit 3)"],
    );
}

#[test]
fn bounded_semaphore() {
    prints(
        "bounded_semaphore",
        &[],
        &[
            "at most 2 connections were in use at once",
            "bounded: an extra release is refused",
            "plain: an extra release makes 3 available",
        ],
    );
}

#[test]
fn queue_consumers() {
    prints("queue_consumers", &[], &["result: 9 * 9 = 81"]);
}

#[test]
fn simple_queue() {
    let Some(out) = run("simple_queue", &[]) else {
        return;
    };
    for (i, square) in [(1, 1), (2, 4), (3, 9), (4, 16)] {
        assert!(
            out.contains(&format!("child {i}: {square} (from pid ")),
            "{out}"
        );
    }
    assert!(out.ends_with("queue empty: true\n"), "{out}");
}

#[test]
fn pipe() {
    prints("pipe", &[], &["parent got: (42, None, Some(\"done\"))"]);
}

#[test]
fn listener_client() {
    let Some(out) = run("listener_client", &[]) else {
        return;
    };
    assert!(out.contains("server: refused a client"), "{out}");
}

#[test]
fn children_at_exit() {
    prints(
        "children_at_exit",
        &[],
        &[
            "main returns; the three workers are still working",
            "Process-1 finished its work",
            "Process-2 finished its work",
            "Process-3 finished its work",
        ],
    );
}

#[test]
fn spawn() {
    prints("spawn", &[], &["Process-3 exited with 0"]);
}

#[test]
fn manager_dict_list() {
    prints("manager_dict_list", &[], &["evens: [0, 2, 4, 6, 8]"]);
}

#[test]
fn manager_namespace() {
    prints(
        "manager_namespace",
        &[],
        &[
            "area_1 = 2.5",
            "area_2 = 10",
            "area_3 = 22.5",
            "area_4: AttributeError: 'Namespace' object has no attribute 'area_4'",
        ],
    );
}

#[test]
fn shared_vs_managed() {
    let Some(out) = run("shared_vs_managed", &[]) else {
        return;
    };
    assert!(out.contains("the managed update costs"), "{out}");
}

#[test]
fn pool_apply_async() {
    let Some(out) = run("pool_apply_async", &[]) else {
        return;
    };
    for i in 0..10 {
        assert!(out.contains(&format!("task {i} ran in")), "{out}");
    }
}

#[test]
fn pool_map() {
    let squares: Vec<String> = (0..100u64).map(|i| (i * i).to_string()).collect();
    let Some(out) = run("pool_map", &[]) else {
        return;
    };
    assert!(out.contains(&squares[..20].join(", ")), "{out}");
}

#[test]
fn pool_blocking_vs_async() {
    let Some(out) = run("pool_blocking_vs_async", &[]) else {
        return;
    };
    assert!(out.contains("task 3: started at"), "{out}");
}

#[test]
fn threads_vs_processes() {
    // A smaller count than the example's own: the test build is unoptimised.
    prints(
        "threads_vs_processes",
        &["100000"],
        &["the same abort in a thread would have ended this whole program"],
    );
}

#[test]
fn async_workers() {
    let Some(out) = run("async_workers", &[]) else {
        return;
    };
    assert!(out.contains("total: 600 jobs"), "{out}");
}
