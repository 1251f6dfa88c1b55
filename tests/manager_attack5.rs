//! The manager server under what an ordinary or a hostile client does
//! that the other files do not try: Python clients storing values whose
//! parts are shared (which Python's pickler writes once), and more.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cpython::pyenv_pythons;
use common::pickle::{request, returned_ident, s};
use common::{run_with_deadline, wait_until, watchdog};
use multiproc::conn::{connect, Address, Connection};

/// The longest a test may take (making thousands of connections to a
/// debug build's server takes a minute).
const LIMIT: Duration = Duration::from_secs(300);

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

/// The same value stored in a dict, a list or a namespace was taken, and
/// then could not be read back whole (its answer exceeds a frame); and each
/// such request, 1 MiB on the wire, took 40 MiB of the server's memory. Any
/// request whose values, written out, would exceed a frame is now refused
/// with `MemoryError`, storing nothing; one with repeats that fit is taken
/// and reads back equal.
#[test]
fn values_too_large_to_read_back_are_refused_wherever_they_go() {
    const PROGRAM: &str = r#"
import sys
from multiprocessing.managers import SyncManager
m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
d, l, ns = m.dict(), m.list(), m.Namespace()
s = 'x' * (1 << 20)
big = [s] * 40
calls = [
    ("d[k] = v", lambda: d.__setitem__("a", big)),
    ("d.update", lambda: d.update({"a": big})),
    ("d.update(kw)", lambda: d.update(a=big)),
    ("d.setdefault", lambda: d.setdefault("a", big)),
    ("l.append", lambda: l.append(big)),
    ("l.extend", lambda: l.extend([big])),
    ("ns.a = v", lambda: setattr(ns, "a", big)),
    ("two 10 MiB", lambda: d.__setitem__("a", [s * 10] * 2)),
]
for name, call in calls:
    try:
        call()
        print(name, "taken")
    except MemoryError:
        print(name, "MemoryError")
print("stored:", len(d), len(l), hasattr(ns, "a"))
d["b"] = [s] * 10
v = d["b"]
print("read back:", len(v), v[3] == s)
"#;
    watchdog("values too large to read back", LIMIT, || {
        let Some(out) = against_server("read-back", PROGRAM) else {
            return;
        };
        let refused = [
            "d[k] = v",
            "d.update",
            "d.update(kw)",
            "d.setdefault",
            "l.append",
            "l.extend",
            "ns.a = v",
            "two 10 MiB",
        ]
        .map(|name| format!("{name} MemoryError\n"))
        .concat();
        assert_eq!(
            out,
            format!("{refused}stored: 0 0 False\nread back: 10 True\n")
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

/// Sends a request and waits for its reply, which must be a `#RETURN`.
fn call(conn: &mut Connection, frame: &[u8]) -> Vec<u8> {
    conn.send_bytes(frame).unwrap();
    let reply = conn.recv_bytes().unwrap();
    assert!(
        reply.windows(7).any(|w| w == b"#RETURN"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    reply
}

/// A new object of `typeid` (counted globally, as a Python client's): its
/// ident.
fn create(conn: &mut Connection, typeid: &str) -> String {
    let reply = call(conn, &request(None, "create", vec![s(typeid)]));
    returned_ident(&reply)
}

/// The descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The most memory process `pid` has had resident, in bytes.
fn peak_rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb << 10)
}

/// Connections that each ask for a 15 MiB answer and never read it: the
/// server held every one of those answers (48 of them, 720 MiB; with
/// thousands of connections, any amount). It now reads no more requests
/// while it holds more than a bound of unsent answers, and ends the
/// connections whose answers have not moved for a while: its memory stays
/// bounded, other clients are served, and the stalled connections beyond
/// what the bound holds close.
#[test]
fn connections_that_never_read_their_answers_cost_the_server_bounded_memory() {
    const STALLED: usize = 48;
    const MIB: usize = 1 << 20;
    watchdog("unread answers", LIMIT, || {
        let (server, path, mut conn) = common::serve_manager("unread", KEY.as_bytes());
        let pid = server.pid().unwrap();
        let address = Address::Unix(path.clone());
        let list = create(&mut conn, "list");
        for _ in 0..15 {
            call(
                &mut conn,
                &request(Some(&list), "append", vec![s(&"x".repeat(MIB))]),
            );
        }
        let fds = open_fds(pid);
        let stalled: Vec<Connection> = (0..STALLED)
            .map(|_| {
                let mut c = connect(&address, Some(KEY.as_bytes())).unwrap();
                c.send_bytes(&request(Some(&list), "copy", vec![])).unwrap();
                c
            })
            .collect();
        // Another client is served meanwhile.
        let mut m = multiproc::Manager::connect(address.clone(), KEY.as_bytes()).unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 2).unwrap();
        assert_eq!(d.get(&1).unwrap(), Some(2));
        drop(d);
        // What the bound holds may stay, unread (256 MiB: 17 answers).
        let closed = wait_until(Duration::from_secs(60), || open_fds(pid) <= fds + 17);
        let peak = peak_rss(pid);
        assert!(closed, "{} connections left open", open_fds(pid) - fds);
        println!("the server's memory peaked at {} MiB", peak / MIB);
        assert!(
            peak < 500 * MIB,
            "the server's memory peaked at {} MiB",
            peak / MIB
        );
        drop(stalled);
        m.shutdown().unwrap();
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    });
}

/// Thousands of calls waiting on one queue of one item's room, gets and
/// then puts: each put done let one get go on, which let the next put go
/// on, and the server tried every waiting call again after each one done,
/// the square of their number of tries (2000 of each took 2 s of a debug
/// build's server, 4000 of each 7 s, during which it served no one else).
/// Each call is tried about once now (0.4 s for 2000 of each).
#[test]
fn thousands_of_calls_waiting_on_a_queue_are_done_in_linear_time() {
    const PROGRAM: &str = r##"
import resource, sys, time
from multiprocessing.connection import Client
from multiprocessing.managers import SyncManager
N = 2000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard != resource.RLIM_INFINITY and hard < 2 * N + 100:
    print("skipped: descriptor limit %d" % hard)
    sys.exit(0)
resource.setrlimit(resource.RLIMIT_NOFILE, (2 * N + 100, hard))
addr, key = sys.argv[1], sys.argv[2].encode()
m = SyncManager(address=addr, authkey=key)
m.connect()
q = m.Queue(1)
def connection():
    c = Client(addr, authkey=key)
    c.send((None, "accept_connection", ("waiter",), {}))
    c.recv()
    return c
gets = [connection() for _ in range(N)]
puts = [connection() for _ in range(N)]
for c in gets:
    c.send((q._token.id, "get", (), {}))
# A round trip: the gets are waiting when the puts come.
m.dict()
for i, c in enumerate(puts):
    c.send((q._token.id, "put", (i,), {}))
start = time.monotonic()
got = sorted(c.recv()[1] for c in gets)
took = time.monotonic() - start
assert got == list(range(N)), got[:10]
assert all(c.recv() == ("#RETURN", None) for c in puts)
print("took %.2f s" % took)
"##;
    watchdog("thousands waiting", LIMIT, || {
        // As many descriptors as allowed, for the server's connections.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads this process's own descriptor limit into `limit`.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        limit.rlim_cur = limit.rlim_max.min(16384);
        // SAFETY: raises this process's own soft limit, within its hard one.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        if limit.rlim_cur < 4200 {
            println!("descriptor limit {}: too low to try", limit.rlim_cur);
            return;
        }
        let Some(out) = against_server("waiting", PROGRAM) else {
            return;
        };
        println!("{}", out.trim());
        if let Some(took) = out.trim().strip_prefix("took ") {
            let took: f64 = took.trim_end_matches(" s").parse().unwrap();
            assert!(took < 1.2, "the waiting calls took {took} s");
        }
    });
}

/// A server that dies during a client's handshake (its listener gone, the
/// connection closed before the challenge) is `ManagerGone` to the client,
/// as a server killed at any other moment is; it was
/// `AuthenticationFailed`, which a call racing a killed server under load
/// could get.
#[test]
fn a_server_gone_during_the_handshake_is_manager_gone() {
    watchdog("handshake cut", LIMIT, || {
        let dir = common::TempDir::new("handshake-cut");
        let path = dir.0.join("m.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            // The listener goes first, then the connection: the server died.
            drop(listener);
            std::fs::remove_file(&path).unwrap();
            drop(conn);
        });
        let address = Address::Unix(dir.0.join("m.sock"));
        let e = match multiproc::Manager::connect(address, b"key") {
            Err(e) => e,
            Ok(_) => panic!("connected to no server"),
        };
        server.join().unwrap();
        assert!(matches!(e, multiproc::Error::ManagerGone(_)), "{e}");
    });
}
