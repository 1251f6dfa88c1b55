//! The manager server with many connections at once, most of them idle:
//! past a few connections, the idle ones rest (only the kernel watches
//! their sockets) and a round of the server's loop walks the others. Each
//! kind of wake-up a resting connection can have is checked against
//! CPython's own server (a request, half a request and later the rest, a
//! request larger than one read, all of them woken at once by a barrier),
//! and, against ours only, a client killed with a hundred connections at
//! rest (the server closes every one). Without a CPython under pyenv,
//! the tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

const KEY: &str = "manager many clients key";

/// The program's own part, after [`PRELUDE`](common::cpython::PRELUDE).
const CASES: &str = r##"
import signal, subprocess, time


def each_thread(n, work):
    # Each thread's proxies talk over a connection of its own.
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return sum(t.is_alive() for t in threads)


def woken_together(n=120, rounds=15):
    # Between rounds every connection is idle; then all speak at once.
    lists = [m.list() for _ in range(n)]
    gate = threading.Barrier(n)

    def work(i):
        for r in range(rounds):
            gate.wait(120)
            lists[i].append(r)
    stuck = each_thread(n, work)
    return [stuck, sorted(set(repr(list(l)) for l in lists))]


def half_a_request(n=60):
    # Half a frame arrives, many others are served (and rest), then the
    # other half: the request is answered once, whole.
    target = m.list()
    raw = raw_connection()
    whole = frame((target._id, "append", ("late",), {}))
    raw._send(whole[: len(whole) // 2])
    others = [m.list() for _ in range(n)]

    def work(i):
        for k in range(10):
            others[i].append(k)
    stuck = each_thread(n, work)
    raw._send(whole[len(whole) // 2 :])
    answer = raw.recv()
    raw.close()
    return [stuck, answer, list(target), sorted(set(len(l) for l in others))]


def large_after_rest(n=40):
    # Connections that were idle send requests larger than a read.
    lists = [m.list() for _ in range(n)]
    gate = threading.Barrier(n)

    def work(i):
        lists[i].append(0)
        gate.wait(120)
        lists[i].extend([b"x" * 1000] * (300 + i))
    stuck = each_thread(n, work)
    return [stuck, [len(l) for l in lists] == [301 + i for i in range(n)]]


def idle_raw_connections(n=300):
    # Many connections that never speak; then each asks one thing.
    target = m.list()
    raws = [raw_connection() for _ in range(n)]
    for i in range(200):
        target.append(i)
    for i, raw in enumerate(raws):
        raw._send(frame((target._id, "__getitem__", (i % 200,), {})))
    answers = [raw.recv() for raw in raws]
    for raw in raws:
        raw.close()
    return [len(target), answers == [("#RETURN", i % 200) for i in range(n)]]


CHILD = r'''
import sys, threading
from multiprocessing.managers import SyncManager
m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
n = int(sys.argv[3])
held = [m.dict() for _ in range(n)]
done = threading.Barrier(n + 1)
def work(i):
    held[i]["k"] = i
    done.wait()
    # (A thread's connection closes when it ends.)
    threading.Event().wait()
for i in range(n):
    threading.Thread(target=work, args=(i,), daemon=True).start()
done.wait()
print("ready", flush=True)
sys.stdin.read()
'''


def killed_while_resting(n=100):
    # A client with n connections at rest is killed: the server closes
    # every one of them (its objects stay, counted globally as CPython's
    # server counts them).
    raw = raw_connection()
    fds = "/proc/%d/fd" % server_pid(raw)
    base = len(os.listdir(fds))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sys.argv[1], sys.argv[2], str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    ready = child.stdout.readline().strip()
    during = len(os.listdir(fds)) - base >= n
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 60
    while len(os.listdir(fds)) > base and time.monotonic() < deadline:
        time.sleep(0.01)
    left = len(os.listdir(fds)) - base
    raw.close()
    return [ready, during, left]


GROUPS = {
    "alike": {
        "woken together": woken_together,
        "half a request": half_a_request,
        "large after rest": large_after_rest,
        "idle raw connections": idle_raw_connections,
    },
    "ours": {
        "killed while resting": killed_while_resting,
        "idle raw connections after": idle_raw_connections,
    },
}
run(GROUPS)
"##;

static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

/// Connections at rest woken every way a client can wake one are served
/// as CPython's server serves them: a barrier's hundred at once, half a
/// request and later the rest, a request larger than a read, hundreds of
/// connections that say nothing until each asks one thing.
#[test]
fn resting_connections_are_served_as_cpythons_server_serves_them() {
    Differential::of(&PROGRAM, KEY, RUN_LIMIT).same_answers_in("alike", LIMIT);
}

/// A client killed with a hundred connections at rest leaves none of them
/// open in the server, and the server serves on.
#[test]
fn a_client_killed_with_its_connections_at_rest_leaves_none_open() {
    let Some(got) = Differential::of(&PROGRAM, KEY, RUN_LIMIT).ours_only("ours", LIMIT) else {
        return;
    };
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    assert_eq!(
        got,
        [
            ("killed while resting", "[b'ready', True, 0]"),
            ("idle raw connections after", "[200, True]"),
        ]
    );
}
