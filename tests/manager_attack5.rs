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

/// A queue's calls with the wrong arguments raise what a local
/// `queue.Queue` raises for them, word for word (Python 3.10+'s words, as
/// everywhere in the server). The server said `put() takes 3 positional
/// arguments but 4 were given` where Python says `Queue.put() takes from
/// 2 to 4 positional arguments but 5 were given`: `self` counts, the
/// defaults make a range, and the method is named with its class.
#[test]
fn a_queues_argument_errors_are_pythons() {
    const PROGRAM: &str = r#"
import queue, sys
from multiprocessing.managers import SyncManager
m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
if sys.version_info < (3, 10):
    print("same")   # older words; the server speaks 3.10's
    sys.exit(0)
CALLS = [
    ("put", (), {}), ("put", (1, True, None, 4), {}), ("put", (1,), {"item": 2}),
    ("put", (1,), {"x": 2}), ("get", (True, None, 4), {}), ("get", (), {"z": 1}),
    ("qsize", (1,), {}), ("qsize", (1, 2), {}), ("qsize", (), {"x": 1}),
    ("put_nowait", (), {}), ("put_nowait", (1, 2), {}), ("get_nowait", (1,), {}),
    ("task_done", (1,), {}), ("join", (1,), {}), ("empty", (1,), {}), ("full", (1,), {}),
]
local, remote = queue.Queue(), m.Queue()
def error(f):
    try:
        f()
    except Exception as e:
        lines = [l for l in str(e).splitlines() if l.strip("-")]
        return lines[-1] if "Traceback" in str(e) else "%s: %s" % (type(e).__name__, e)
    return "no error"
differences = []
for name, args, kwds in CALLS:
    want = error(lambda: getattr(local, name)(*args, **kwds))
    got = error(lambda: remote._callmethod(name, args, kwds))
    if want != got:
        differences.append("%s%r %r: Python's %r, the server's %r" % (name, args, kwds, want, got))
for args, kwds in [((1, 2), {}), ((), {"x": 1})]:
    want = error(lambda: queue.Queue(*args, **kwds))
    got = error(lambda: m.Queue(*args, **kwds))
    if want != got:
        differences.append("Queue%r %r: Python's %r, the server's %r" % (args, kwds, want, got))
print("\n".join(differences) or "same")
"#;
    watchdog("queue argument errors", LIMIT, || {
        let Some(out) = against_server("queue-args", PROGRAM) else {
            return;
        };
        assert_eq!(out, "same\n");
    });
}
