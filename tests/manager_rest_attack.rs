//! Attacks on the manager server's resting connections (past a few
//! connections, the idle ones are left to the kernel and a round of the
//! loop walks only the others): a resting connection that asks something
//! while the server holds more answers than it may (it must not spin),
//! connections that close while resting and whose numbers are given to
//! new ones, a half-closed one, partial requests that stall, two thousand
//! connections, and a shutdown with calls waiting. Each must be served as
//! CPython's server serves it, end when it should, and leave no
//! descriptor open in the server. Without a CPython under pyenv, the tests
//! say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{pyenv_pythons, with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

const KEY: &str = "manager rest attack key";

/// The program's own part, after [`PRELUDE`](common::cpython::PRELUDE).
const CASES: &str = r##"
import resource, select, time


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settle(pid, base, limit=30):
    # Waits until the server holds no more descriptors than `base`.
    deadline = time.monotonic() + limit
    while open_fds(pid) > base and time.monotonic() < deadline:
        time.sleep(0.01)
    return open_fds(pid) - base


def readable(conn, limit):
    return bool(select.select([conn.fileno()], [], [], limit)[0])


def more_descriptors(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def asks_while_over_the_answers_total(readers=22, idle=20):
    # `readers` connections each with a 15 MiB answer queued (together past
    # what the server may hold: it reads no requests until they drain),
    # read slowly enough to hold it there and fast enough not to be ended
    # as stalled; then a resting connection asks something. The server has
    # nothing it may do until the answers drain: it must sleep, not spin.
    raw = raw_connection()
    pid = server_pid(raw)
    target = m.list([1, 2, 3])
    big = m.list()
    big.append(b"x" * (15 << 20))
    idle = [raw_connection() for _ in range(idle)]
    readers = [raw_connection() for _ in range(readers)]
    socks = [socket.socket(fileno=os.dup(r.fileno())) for r in readers]
    for r in readers:
        r._send(frame((big._id, "__getitem__", (0,), {})))
    # Enough answers begun to pass the server's total (256 MiB: it reads
    # the others' requests only once they drain), well before it would end
    # unread ones as stalled (2 s).
    deadline, begun = time.monotonic() + 1.5, False
    while not begun and time.monotonic() < deadline:
        begun = len(select.select(readers, [], [], 0.01)[0]) > 256 // 15
    stop = threading.Event()
    got = [0]

    def trickle():
        # What each socket holds, every so often.
        while not stop.wait(0.8):
            for s in socks:
                try:
                    got[0] += len(s.recv(1 << 20, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    pass
    t = threading.Thread(target=trickle)
    t.start()
    idle[0]._send(frame((target._id, "__len__", (), {})))
    time.sleep(0.2)
    before = server_cpu(pid)
    time.sleep(1.0)
    used = server_cpu(pid) - before
    stop.set()
    t.join()
    for c in readers + socks:
        c.close()
    answered = readable(idle[0], 60) and idle[0].recv()
    for c in idle:
        c.close()
    raw.close()
    # (Still past the total at the end: what was read is far from it.)
    return [begun, used < 0.3 or used, got[0] < (40 << 20), answered]


def closed_and_numbers_reused(idle=40, rounds=300):
    # Resting connections close while new ones come (taking the numbers
    # they leave); each new one is served, none confused with the old.
    target = m.list(list(range(100)))
    conns = [raw_connection() for _ in range(idle)]
    wrong = 0
    for i in range(rounds):
        k = (i * 7) % idle
        conns[k].close()
        conns[k] = raw_connection()
        j = (i * 13) % idle
        conns[j]._send(frame((target._id, "__getitem__", (i % 100,), {})))
        wrong += conns[j].recv() != ("#RETURN", i % 100)
    for c in conns:
        c.close()
    return [wrong, len(target)]


def half_closed_while_resting(idle=30):
    # A resting connection sends a request and shuts its writing side.
    target = m.list(["a", "b"])
    conns = [raw_connection() for _ in range(idle)]
    time.sleep(0.1)
    answers = []
    for c in conns[:5]:
        s = socket.socket(fileno=os.dup(c.fileno()))
        c._send(frame((target._id, "__getitem__", (1,), {})))
        s.shutdown(socket.SHUT_WR)
        s.close()
        answers.append(failure_of(c.recv) if readable(c, 30) else "no answer")
    # Others still served.
    conns[-1]._send(frame((target._id, "__len__", (), {})))
    answers.append(conns[-1].recv())
    for c in conns:
        c.close()
    return answers


def half_a_request_then_half_closed(idle=30):
    # Resting connections send half a request and shut their writing
    # side: each ends (no answer), the others are served. (CPython's
    # server answers each with its own traceback, "got end of file during
    # message", then ends it: ours ends it without one.)
    target = m.list(["a", "b"])
    conns = [raw_connection() for _ in range(idle)]
    time.sleep(0.1)
    whole = frame((target._id, "__len__", (), {}))
    ends = []
    for c in conns[:5]:
        s = socket.socket(fileno=os.dup(c.fileno()))
        c._send(whole[: len(whole) // 2])
        s.shutdown(socket.SHUT_WR)
        s.close()
        ends.append(failure_of(c.recv) if readable(c, 30) else "no end")
    conns[-1]._send(whole)
    ends.append(conns[-1].recv())
    for c in conns:
        c.close()
    return ends


def two_thousand_connections(n=2000):
    # Two thousand connections, all resting; then all ask at once.
    more_descriptors(n + 200)
    target = m.list(list(range(100)))
    conns = [raw_connection() for _ in range(n)]
    for i, c in enumerate(conns):
        c._send(frame((target._id, "__getitem__", (i % 100,), {})))
    answers = [c.recv() for c in conns]
    for c in conns:
        c.close()
    return [len(answers), answers == [("#RETURN", i % 100) for i in range(n)]]


def quiet_costs_nothing(idle=500):
    # Idle connections (resting), calls waiting on a queue, half requests
    # that stall, a client that half-closed after its answer: nothing for
    # the server to do, and it does nothing (no round without a cause).
    more_descriptors(idle + 200)
    raw = raw_connection()
    pid = server_pid(raw)
    q = m.Queue()
    target = m.list([7])
    # (The proxies' own connection open, as it stays.)
    q.qsize()
    len(target)
    base = open_fds(pid)
    conns = [raw_connection() for _ in range(idle)]
    time.sleep(0.1)
    for c in conns[:10]:
        c._send(frame((q._id, "get", (), {})))
    whole = frame((target._id, "__len__", (), {}))
    for c in conns[10:15]:
        c._send(whole[:5])
    half = socket.socket(fileno=os.dup(conns[15].fileno()))
    conns[15]._send(whole)
    half.shutdown(socket.SHUT_WR)
    half.close()
    answered = conns[15].recv()
    time.sleep(0.3)
    before = server_cpu(pid)
    time.sleep(1.0)
    used = server_cpu(pid) - before
    # Then each waiting call gets its item, each half its rest.
    for i in range(10):
        q.put(i)
    got = sorted(c.recv()[1] for c in conns[:10])
    for c in conns[10:15]:
        c._send(whole[5:])
    rest = [c.recv() for c in conns[10:15]]
    for c in conns:
        c.close()
    left = settle(pid, base)
    raw.close()
    return [used < 0.05 or used, answered, got, rest == [("#RETURN", 1)] * 5, left]


def fds_after_everything():
    # What every case above left open in the server (asked last).
    raw = raw_connection()
    pid = server_pid(raw)
    base = open_fds(pid)
    conns = [raw_connection() for _ in range(50)]
    during = open_fds(pid) - base >= 50
    for c in conns:
        c.close()
    left = settle(pid, base)
    raw.close()
    return [during, left]


def stalled_partial_requests(holders=10):
    # Resting connections each send the start of a 15 MiB request (what
    # receiving it may take, together, passes what the server grants) and
    # then nothing more: while others wait for what they hold, they end
    # (the stalled-read rule), resting or not before.
    raw = raw_connection()
    pid = server_pid(raw)
    base = open_fds(pid)
    conns = [raw_connection() for _ in range(holders + 20)]
    time.sleep(0.1)
    body = 15 << 20
    for c in conns[:holders]:
        c._send(struct.pack("!i", body) + b"\x80\x02" + b"x" * (1 << 20))
    ended = sum(readable(c, 30) for c in conns[:holders])
    # The others are still served.
    target = m.list([5])
    conns[-1]._send(frame((target._id, "__len__", (), {})))
    answer = conns[-1].recv()
    for c in conns:
        c.close()
    left = settle(pid, base)
    raw.close()
    return [ended >= 1, answer, left]


GROUPS = {
    "alike": {
        "closed and numbers reused": closed_and_numbers_reused,
        "half closed while resting": half_closed_while_resting,
        "two thousand connections": two_thousand_connections,
    },
    "ours": {
        "asks while over the answers' total": asks_while_over_the_answers_total,
        "closed and numbers reused": closed_and_numbers_reused,
        "half closed while resting": half_closed_while_resting,
        "half a request then half closed": half_a_request_then_half_closed,
        "two thousand connections": two_thousand_connections,
        "stalled partial requests": stalled_partial_requests,
        "quiet costs nothing": quiet_costs_nothing,
        "fds after everything": fds_after_everything,
    },
}
run(GROUPS)
"##;

static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

/// Connections that close while resting (their numbers given to new
/// ones), a half-closed one, and two thousand at once are served as
/// CPython's server serves them.
#[test]
fn resting_connections_under_attack_are_served_as_cpythons_server_serves_them() {
    raise_descriptor_limit();
    Differential::of(&PROGRAM, KEY, RUN_LIMIT).same_answers_in("alike", LIMIT);
}

/// Against ours only: a resting connection that asks while the server
/// holds more answers than it may does not make it spin (it was put back
/// to rest every round, woken at once by its request, and the loop never
/// slept: a whole CPU until the answers drained); partial requests that
/// stall end; nothing is left open.
#[test]
fn resting_connections_under_attack_cost_nothing_and_leave_nothing() {
    raise_descriptor_limit();
    let Some(got) = Differential::of(&PROGRAM, KEY, RUN_LIMIT).ours_only("ours", LIMIT) else {
        return;
    };
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    assert_eq!(
        got,
        [
            (
                "asks while over the answers' total",
                "[True, True, True, ('#RETURN', 3)]"
            ),
            ("closed and numbers reused", "[0, 100]"),
            (
                "half closed while resting",
                "[('#RETURN', 'b'), ('#RETURN', 'b'), ('#RETURN', 'b'), ('#RETURN', 'b'), \
                 ('#RETURN', 'b'), ('#RETURN', 2)]"
            ),
            (
                "half a request then half closed",
                "['EOFError: ', 'EOFError: ', 'EOFError: ', 'EOFError: ', 'EOFError: ', \
                 ('#RETURN', 2)]"
            ),
            ("two thousand connections", "[2000, True]"),
            ("stalled partial requests", "[True, ('#RETURN', 1), 0]"),
            (
                "quiet costs nothing",
                "[True, ('#RETURN', 1), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], True, 0]"
            ),
            ("fds after everything", "[True, 0]"),
        ]
    );
}

/// A shutdown asked while connections rest and others hold calls that
/// wait (on a queue): the server exits, and every client sees its
/// connection end.
#[test]
fn a_shutdown_with_resting_connections_and_waiting_calls_ends_everything() {
    const SHUTDOWN: &str = r##"
import select, time

q = m.Queue()
conns = [raw_connection() for _ in range(40)]
time.sleep(0.1)
for c in conns[:10]:
    c._send(frame((q._id, "get", (), {})))
time.sleep(0.2)
conns[-1]._send(frame((None, "shutdown", (), {})))
ended = 0
for c in conns:
    if select.select([c.fileno()], [], [], 30)[0]:
        try:
            while True:
                c.recv()
        except (EOFError, OSError):
            ended += 1
print("ended", ended, flush=True)
"##;
    raise_descriptor_limit();
    let Some((_, python)) = pyenv_pythons().into_iter().max() else {
        return println!("no CPython under pyenv: nothing to run");
    };
    common::watchdog("shutdown while resting", LIMIT, || {
        let (server, path, conn) = common::serve_manager("rest-shutdown", KEY.as_bytes());
        drop(conn);
        let (status, out, err) = common::run_with_deadline(
            std::process::Command::new(&python)
                .args(["-c", &with_prelude(SHUTDOWN), path.to_str().unwrap(), KEY])
                .env_remove("PYTHONPATH"),
            b"",
            RUN_LIMIT,
        );
        assert!(status.success(), "{out}\n{err}");
        // Those with calls waiting, the idle ones and the one that asked.
        assert_eq!(out.trim(), "ended 40", "{err}");
        assert_eq!(
            server.join_timeout(Duration::from_secs(30)).unwrap(),
            Some(0)
        );
        let _ = std::fs::remove_file(path);
    });
}

/// Raises this process's soft descriptor limit to its hard one (the
/// server started from it inherits it): two thousand connections.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads this process's own limit into a valid struct.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(read, 0);
    limit.rlim_cur = limit.rlim_max.min(65536);
    // SAFETY: sets this process's own limit from a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// Busy clients on sockets (`MULTIPROC_REST_BENCH_CLIENTS`, 64 unless
/// told, each a process making calls one after another for
/// `MULTIPROC_REST_BENCH_SECS`, 5 unless told; each call as a proxy makes
/// it, or with `MULTIPROC_REST_BENCH_KIND=raw` bytes sent and received
/// as they are; a proxy's client sleeps `MULTIPROC_REST_BENCH_THINK_US`
/// between calls, none unless told): the calls a second and the server's
/// CPU a call. Not a check: run it in release, by hand,
/// `cargo test --release --test manager_rest_attack -- --ignored --nocapture busy`.
#[test]
#[ignore]
fn busy_clients_cost() {
    const BENCH: &str = r##"
import time

target = m.list([1, 2, 3])
n, secs, proxy_like = int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "proxy"
think = float(sys.argv[6]) / 1e6
request = frame((target._id, "__len__", (), {}))

conns = [raw_connection() for _ in range(n)]
pid = server_pid(conns[0])
go_r, go_w = os.pipe()
done_r, done_w = os.pipe()
children = []
for c in conns:
    child = os.fork()
    if child == 0:
        s = socket.socket(fileno=os.dup(c.fileno()))
        os.read(go_r, 1)
        end = time.monotonic() + secs
        calls = 0
        while time.monotonic() < end and proxy_like:
            for _ in range(20):
                # As a proxy's call: pickled, sent, received, unpickled.
                c.send((target._id, "__len__", (), {}))
                kind, result = c.recv()
                calls += 1
                if think:
                    time.sleep(think)
        while time.monotonic() < end:
            for _ in range(20):
                s.sendall(request)
                want = None
                got = b""
                while want is None or len(got) < want:
                    got += s.recv(4096)
                    if want is None and len(got) >= 4:
                        want = 4 + struct.unpack("!i", got[:4])[0]
                calls += 1
        os.write(done_w, struct.pack("!q", calls))
        os._exit(0)
    children.append(child)
time.sleep(0.5)
before = server_cpu(pid)
t = time.monotonic()
os.write(go_w, b"x" * n)
calls = sum(struct.unpack("!q", os.read(done_r, 8))[0] for _ in range(n))
elapsed = time.monotonic() - t
used = server_cpu(pid) - before
for child in children:
    os.waitpid(child, 0)
print("%d %s clients (think %s us): %.0f calls/s, server CPU %.2f us/call (%.2f s CPU in %.2f s)"
      % (n, sys.argv[5], sys.argv[6], calls / elapsed, used / calls * 1e6, used, elapsed), flush=True)
"##;
    let Some((_, python)) = pyenv_pythons().into_iter().max() else {
        return println!("no CPython under pyenv: nothing to run");
    };
    let clients = std::env::var("MULTIPROC_REST_BENCH_CLIENTS").unwrap_or("64".into());
    let secs = std::env::var("MULTIPROC_REST_BENCH_SECS").unwrap_or("5".into());
    let kind = std::env::var("MULTIPROC_REST_BENCH_KIND").unwrap_or("proxy".into());
    let think = std::env::var("MULTIPROC_REST_BENCH_THINK_US").unwrap_or("0".into());
    common::watchdog("busy clients", LIMIT, || {
        let (server, path, conn) = common::serve_manager("rest-bench", KEY.as_bytes());
        drop(conn);
        let (status, out, err) = common::run_with_deadline(
            std::process::Command::new(&python)
                .args([
                    "-c",
                    &with_prelude(BENCH),
                    path.to_str().unwrap(),
                    KEY,
                    &clients,
                    &secs,
                    &kind,
                    &think,
                ])
                .env_remove("PYTHONPATH"),
            b"",
            RUN_LIMIT,
        );
        assert!(status.success(), "{out}\n{err}");
        println!("{}", out.trim());
        common::cpython::shut_down(&path, KEY);
        server.join().unwrap();
    });
}
