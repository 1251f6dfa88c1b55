//! examples/python_clients, run as a user would, with the oldest and the
//! newest CPython that pyenv has here: unchanged Python programs (four
//! worker processes sharing a queue, a dict, an `Event`, a `Value` and a
//! `Condition` over a `Lock`) on a server the example started, which has
//! every object back when they end. `cargo test` builds the example; a run of this test
//! binary alone may not have, and then it says so.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cpython::oldest_and_newest;
use common::run_with_deadline;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn python_workers_share_a_rust_managers_objects() {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples").join("python_clients"))
        .unwrap();
    if !example.exists() {
        eprintln!(
            "skipped: {} is not built (`cargo test` or `cargo build --examples` builds it)",
            example.display()
        );
        return;
    }
    let pythons = oldest_and_newest();
    if pythons.is_empty() {
        eprintln!("skipped: no CPython 3.8+ under pyenv");
    }
    for python in pythons {
        let (status, out, err) =
            run_with_deadline(Command::new(&example).env("PYTHON", &python), b"", LIMIT);
        assert!(
            status.success(),
            "{python}: {status}\nstdout: {out}\nstderr: {err}"
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..lines.len().min(2)],
            ["all counted: True", "squares: 100 summing to 328350"],
            "{python}: {out}\n{err}"
        );
        assert_eq!(
            lines[lines.len().saturating_sub(2)..],
            ["counter: 100", "objects left on the server: 0"],
            "{python}: {out}\n{err}"
        );
    }
}
