//! The manager server under what an ordinary or a hostile client does
//! that the other files do not try: Python clients storing values whose
//! parts are shared (which Python's pickler writes once), and more.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cpython::pyenv_pythons;
use common::{run_with_deadline, watchdog};

/// The longest a test may take.
const LIMIT: Duration = Duration::from_secs(120);

const KEY: &str = "manager attack5 key";

/// The newest CPython 3.8+ under pyenv, if there is one.
fn python() -> Option<String> {
    pyenv_pythons().pop().map(|(_, p)| p)
}

/// Runs `program` with `python` against the server at `path` (its
/// `argv[1]`, the key `argv[2]`): what it printed, once it exited 0.
fn run_python(python: &str, program: &str, path: &std::path::Path) -> String {
    let mut command = Command::new(python);
    command
        .args(["-c", program, path.to_str().unwrap(), KEY])
        .env_remove("PYTHONPATH");
    let (status, out, err) = run_with_deadline(&mut command, b"", LIMIT);
    assert!(
        status.success(),
        "{python}: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// Runs `program` against a server of its own, shut down afterwards.
fn against_server(name: &str, program: &str) -> Option<String> {
    let Some(python) = python() else {
        println!("no CPython 3.8+ under pyenv: nothing to run");
        return None;
    };
    let (server, path, conn) = common::serve_manager(name, KEY.as_bytes());
    drop(conn);
    let out = run_python(&python, program, &path);
    let mut m =
        multiproc::Manager::connect(multiproc::conn::Address::Unix(path.clone()), KEY.as_bytes())
            .unwrap();
    m.shutdown().unwrap();
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
    Some(out)
}

/// A value whose parts are one object many times over (`[s] * 40`, with
/// `s` a 1 MiB string) pickles small, since Python's pickler writes `s`
/// once, but the server's answer writes it 40 times, past a frame. Put on
/// a queue, it stayed at its head: every `get` of every client failed
/// with `MemoryError`, and nothing behind it could be got, for ever. The
/// put is refused now, and the queue goes on.
#[test]
fn a_queue_item_too_large_to_get_back_is_refused_at_put() {
    const PROGRAM: &str = r#"
import sys
from multiprocessing.managers import SyncManager
m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
for q in (m.Queue(), m.JoinableQueue()):
    s = 'x' * (1 << 20)
    try:
        q.put([s] * 40)
        print("put: taken")
    except MemoryError as e:
        print("put: MemoryError")
    try:
        q.put_nowait([s] * 40)
        print("put_nowait: taken")
    except MemoryError as e:
        print("put_nowait: MemoryError")
    q.put("next")
    print("get:", q.get(timeout=10))
    print("qsize:", q.qsize())
"#;
    watchdog("queue item too large", LIMIT, || {
        let Some(out) = against_server("queue-large", PROGRAM) else {
            return;
        };
        assert_eq!(
            out,
            "put: MemoryError\nput_nowait: MemoryError\nget: next\nqsize: 0\n".repeat(2)
        );
    });
}
