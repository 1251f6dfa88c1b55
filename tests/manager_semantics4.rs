//! What the manager server serves beyond the containers' methods, against
//! CPython's: one Python program runs against CPython's own manager server
//! (the reference, of the same Python) and against multiproc's, and must
//! print the same answers from both, for CPython 3.8 and 3.13 (as
//! tests/manager_semantics2.rs and 3 do for the methods and the creation
//! paths). Its cases are a `JoinableQueue`'s `task_done` and `join`, the
//! fallbacks (`#GETVALUE`, `__str__`, `__repr__`) of a queue, what each
//! typeid exposes, methods that are not exposed, an object after its last
//! `decref`, and the server's own calls on idents it does not have. The
//! typeid CPython's `SyncManager` has and multiproc's server does not
//! serve (`Pool`: see the README's differences) is refused with an error
//! and leaves the server serving;
//! and a client killed while its call waits on a queue takes nothing
//! with it. Without either CPython under pyenv, the tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const KEY: &str = "manager semantics 4 key";

/// The program's own part, after
/// [`PRELUDE`](common::cpython::PRELUDE): its helpers and its cases, in
/// groups named by `argv[3]`.
const CASES: &str = r##"
import os, re, signal, threading, time
from multiprocessing.managers import dispatch


def raw(request, accept=False):
    """request sent on a connection of its own (first accepted, for an
    object's method, as a proxy's is): the reply's kind, and its result (a
    traceback as its last line; before 3.10, its exception's type)."""
    conn = m._Client(m._address, authkey=m._authkey)
    try:
        if accept:
            dispatch(conn, None, "accept_connection", ("raw",))
        conn.send(request)
        kind, result = conn.recv()
    finally:
        conn.close()
    if kind == "#TRACEBACK":
        result = [l for l in result.splitlines() if l.strip()][-1]
        if not NEW:
            # The server answers in 3.10+'s words: only the type compared.
            result = result.split(":")[0]
    elif isinstance(result, BaseException):
        result = failure(result)
    return (kind, result)


def server(method, *args):
    return raw((None, method, args, {}))


def freed(typeid, method, *args):
    """An object's method called after its only reference is gone."""
    token, _ = m._create(typeid)
    server("decref", token.id)
    kind, result = raw((token.id, method, args, {}), accept=True)
    return (kind, result.replace(token.id, "<ident>"))


def no_address(text):
    return re.sub("0x[0-9a-f]+", "0x?", text)


def task_done(times, puts=1):
    """task_done `times` times after `puts` items put and got, then join."""
    q = m.JoinableQueue()
    for i in range(puts):
        q.put(i)
        q.get()
    out = []
    for _ in range(times):
        try:
            out.append(q.task_done())
        except Exception as e:
            out.append(failure(e))
    out.append(q.join())
    return out


QUEUES = {
    "task_done once": lambda: task_done(1),
    "task_done three times": lambda: task_done(3),
    "task_done of none put": lambda: task_done(1, puts=0),
    "task_done twice of two put": lambda: task_done(2, puts=2),
    "task_done of a Queue": lambda: call(m.Queue(), "task_done"),
    "join of a Queue": lambda: call(m.Queue(), "join"),
    "join of one": lambda: call(m.JoinableQueue(), "join", (1,)),
    "task_done of a keyword": lambda: call(m.JoinableQueue(), "task_done", (), {"n": 1}),
    "_getvalue of a Queue": lambda: m.Queue()._getvalue(),
    "_getvalue of a JoinableQueue": lambda: m.JoinableQueue()._getvalue(),
    # A put that cannot find the queue full does not read its timeout, and
    # a NaN one is not looked at unless the call must wait.
    "put of a negative timeout, unbounded": lambda: each(
        m.Queue(), lambda q: q.put(1, True, -1), lambda q: q.qsize()),
    "put of a str timeout, maxsize -1": lambda: each(
        m.Queue(-1), lambda q: q.put(1, True, "x"), lambda q: q.qsize()),
    "put of a NaN timeout, unbounded": lambda: each(
        m.Queue(), lambda q: q.put(1, True, float("nan")), lambda q: q.get(True, float("nan"))),
    "put of a NaN timeout, room": lambda: each(
        m.Queue(2), lambda q: q.put(1, True, float("nan")), lambda q: q.qsize()),
    "put of a str timeout, room": lambda: each(m.Queue(2), lambda q: q.put(1, True, "x")),
    "put of a negative timeout, room": lambda: each(m.Queue(2), lambda q: q.put(1, True, -1)),
    "put of a negative timeout, maxsize 0.5": lambda: each(m.Queue(0.5), lambda q: q.put(1, True, -1)),
    "put of -inf, not blocking, unbounded": lambda: each(
        m.Queue(), lambda q: q.put(1, False, float("-inf")), lambda q: q.qsize()),
    # Waiting calls, and what ends their wait.
    "a waiting join, task_done": lambda: waiting(of(1, got=1), lambda q: q.join(),
                                                 lambda q: q.task_done()),
    "a waiting join, a put, get, task_done twice": lambda: waiting(
        of(1, got=1), lambda q: q.join(),
        lambda q: (q.put(2), q.task_done(), q.get(), q.task_done())),
    "a waiting put, a get": lambda: waiting(full(), lambda q: q.put(1), lambda q: q.get()),
    "a waiting get, timed out": lambda: waiting(m.Queue(), lambda q: q.get(timeout=0.5),
                                                lambda q: None),
    "a waiting put, timed out": lambda: waiting(full(), lambda q: q.put(1, timeout=0.5),
                                                lambda q: None),
    "str of a Queue": lambda: no_address(str(m.Queue())),
    "repr of a JoinableQueue": lambda: no_address(call(m.JoinableQueue(), "__repr__")),
}

EXPOSED = {
    "_put of a Queue": lambda: call(m.Queue(), "_put", (1,)),
    "__init__ of a Queue": lambda: call(m.Queue(), "__init__"),
    "mutex of a Queue": lambda: call(m.Queue(), "mutex"),
    "__len__ of a Queue": lambda: call(m.Queue(), "__len__"),
    "append of a dict": lambda: call(m.dict(), "append", (1,)),
    "keys of a list": lambda: call(m.list(), "keys"),
    "__class__ of a list": lambda: call(m.list(), "__class__"),
    "__dict__ of a Namespace": lambda: call(m.Namespace(), "__dict__"),
    "__reduce__ of a dict": lambda: call(m.dict(), "__reduce__"),
    "#GETVALUE of an argument": lambda: call(m.list([1]), "#GETVALUE", (1,)),
    "__repr__ of a keyword": lambda: call(m.list([1]), "__repr__", (), {"x": 1}),
    "__str__ of two": lambda: call(m.Namespace(), "__str__", (1, 2)),
    "#GETVALUE of a keyword and one": lambda: call(m.Queue(), "#GETVALUE", (1,), {"x": 1}),
    "__repr__ of an iterator and one": lambda: call(iter(m.dict({1: 2})), "__repr__", (1,)),
    "__length_hint__ of an iterator": lambda: call(iter(m.dict({1: 2})), "__length_hint__"),
}

FREED = {
    "qsize of a freed Queue": lambda: freed("Queue", "qsize"),
    "__len__ of a freed list": lambda: freed("list", "__len__"),
    "#GETVALUE of a freed dict": lambda: freed("dict", "#GETVALUE"),
    "__str__ of a freed Namespace": lambda: freed("Namespace", "__str__"),
    "a method of an unknown ident": lambda: raw(("nope", "__len__", (), {}), accept=True),
    "incref of an unknown ident": lambda: server("incref", "nope"),
    "decref of an unknown ident": lambda: server("decref", "nope"),
    "number_of_objects": lambda: type(server("number_of_objects")[1]).__name__,
    "an unknown server method": lambda: server("nope"),
    "after": lambda: m.list([1, 2])[:],
}

# The server's own calls with arguments they do not take.
SERVER = {
    "incref of none": lambda: server("incref"),
    "decref of none": lambda: server("decref"),
    "decref of two": lambda: server("decref", "a", "b"),
    "incref of an int": lambda: server("incref", 1),
    "decref of None": lambda: server("decref", None),
    "incref of ident=": lambda: raw((None, "incref", (), {"ident": "nope"})),
    "incref of an unknown keyword": lambda: raw((None, "incref", ("nope",), {"x": 1})),
    "create of none": lambda: server("create"),
    "create of an int": lambda: server("create", 1),
    "create of None": lambda: server("create", None),
    "debug_info of one": lambda: server("debug_info", 1),
    "number_of_objects of one": lambda: server("number_of_objects", 1),
    "number_of_objects of a keyword": lambda: raw((None, "number_of_objects", (), {"x": 1})),
    "dummy": lambda: server("dummy"),
    "dummy of one": lambda: server("dummy", 1),
    "accept_connection of none": lambda: server("accept_connection"),
    "accept_connection of two": lambda: server("accept_connection", "a", "b"),
    "get_methods of none": lambda: server("get_methods"),
    "shutdown of one": lambda: server("shutdown", 1),
    "shutdown of a keyword": lambda: raw((None, "shutdown", (), {"x": 1})),
    "after": lambda: m.list([1, 2])[:],
}

# Different on purpose (see the README's differences): asked of ours only.
UNSERVED = {
    "Pool": lambda: m.Pool(1),
    "Pool of arguments": lambda: m._create("Pool", 1, x=2),
    "after": lambda: m.list([1, 2])[:],
}


def killed_in(proxy, method, *args):
    """A child client that calls `method` on `proxy`, which waits, and is
    killed with SIGKILL while it waits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            proxy._connect()
            os.write(w, b"x")
            proxy._callmethod(method, args)
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    # The call is sent right after the byte: give the server time to take
    # it (its waiting is what is asked about, not a race with it).
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def after_a_killed_get():
    q = m.Queue()
    killed_in(q, "get")
    q.put("item")
    return q.get(timeout=5)


def after_a_killed_put():
    q = m.Queue(1)
    q.put("first")
    killed_in(q, "put", "the dead client's")
    out = [q.get(timeout=5)]
    try:
        out.append(q.get(timeout=1))
    except queue.Empty:
        out.append("Empty")
    return out


def after_a_killed_join():
    q = m.JoinableQueue()
    q.put(1)
    killed_in(q, "join")
    q.get()
    q.task_done()
    return (q.join(), q.qsize())


KILLED = {
    "a killed get": after_a_killed_get,
    "a killed put": after_a_killed_put,
    "a killed join": after_a_killed_join,
    "after": lambda: m.list([1, 2])[:],
}


def full():
    q = m.Queue(1)
    q.put(0)
    return q


def each(q, *calls):
    """Each call's answer (or exception) on q, in order."""
    out = []
    for f in calls:
        try:
            out.append(f(q))
        except queue.Empty:
            out.append("Empty")
        except queue.Full:
            out.append("Full")
        except Exception as e:
            out.append(failure(e))
    return out


def shut(q, immediate=False):
    q.shutdown(immediate)
    return q


def of(*items, maxsize=0, got=0):
    """A JoinableQueue of `items`, the first `got` of them taken."""
    q = m.JoinableQueue(maxsize)
    for i in items:
        q.put(i)
    for _ in range(got):
        q.get()
    return q


def waiting(q, call, then):
    """What `call(q)`, made in another thread (its own connection) so that
    it waits, answers once `then(q)` is done here. Whether or not the call
    was waiting yet when `then` ran, its answer is the same."""
    out = []
    # A daemon: one still waiting does not keep the program from ending.
    t = threading.Thread(target=lambda: out.append(each(q, call)[0]), daemon=True)
    t.start()
    time.sleep(0.3)
    then(q)
    t.join(10)
    return out[0] if out else "still waiting"


def dropped_proxies():
    """How many objects more the server has after a queue holding proxies
    was shut down with immediate=True (their referents are freed)."""
    q = m.Queue()
    before = server("number_of_objects")[1]
    q.put(m.list([1]))
    q.put({"d": m.dict({1: 2})})
    q.shutdown(True)
    return server("number_of_objects")[1] - before


# Python 3.13's Queue.shutdown (3.8's queue has none: asked of 3.13+).
SHUTDOWN = {} if not hasattr(queue, "ShutDown") else {
    "put, put_nowait": lambda: each(shut(m.Queue()), lambda q: q.put(1), lambda q: q.put_nowait(1)),
    "get, get_nowait of none": lambda: each(shut(m.Queue()), lambda q: q.get(), lambda q: q.get_nowait()),
    "get of two": lambda: each(shut(of(1, 2)), lambda q: q.get(), lambda q: q.get(False),
                               lambda q: q.get(), lambda q: q.qsize(), lambda q: q.empty()),
    "immediate": lambda: each(shut(of(1, 2, 3, got=1), True), lambda q: q.qsize(),
                              lambda q: q.get(), lambda q: q.task_done(), lambda q: q.join(),
                              lambda q: q.task_done()),
    "immediate of none put": lambda: each(shut(m.JoinableQueue(), True), lambda q: q.join()),
    "immediate, all got": lambda: each(shut(of(1, 2, got=2), True), lambda q: q.task_done(),
                                       lambda q: q.task_done(), lambda q: q.task_done()),
    "immediate, proxies in it": dropped_proxies,
    "twice": lambda: each(shut(shut(of(1)), True), lambda q: q.qsize(), lambda q: q.full()),
    "then shutdown immediate": lambda: each(shut(of(1)), lambda q: q.shutdown(True),
                                            lambda q: q.get_nowait()),
    "immediate of a str": lambda: each(of(1), lambda q: q.shutdown("x"), lambda q: q.qsize()),
    "immediate of 0": lambda: each(of(1), lambda q: q.shutdown(0), lambda q: q.qsize()),
    "of two": lambda: each(m.Queue(), lambda q: call(q, "shutdown", (1, 2)), lambda q: q.put(1)),
    "of a keyword": lambda: each(m.Queue(), lambda q: call(q, "shutdown", (), {"x": 1})),
    "of immediate=": lambda: each(of(1), lambda q: call(q, "shutdown", (), {"immediate": True}),
                                  lambda q: q.qsize()),
    "of one and immediate=": lambda: each(m.Queue(), lambda q: call(q, "shutdown", (1,), {"immediate": 1})),
    # ShutDown comes before what put and get check of their arguments.
    "put of a full queue, negative timeout": lambda: each(shut(full()), lambda q: q.put(1, True, -1)),
    "put of maxsize None": lambda: each(shut(m.Queue(None)), lambda q: q.put(1), lambda q: q.full()),
    "get of a negative timeout": lambda: each(shut(m.Queue()), lambda q: q.get(True, -1)),
    "get of one, negative timeout": lambda: each(shut(of(1)), lambda q: q.get(True, -1)),
    "get of a str timeout": lambda: each(shut(m.Queue()), lambda q: q.get(True, "x")),
    "put of a NaN timeout": lambda: each(shut(full()), lambda q: q.put(1, True, float("nan"))),
    # Waiting calls are woken.
    "a waiting get": lambda: waiting(m.Queue(), lambda q: q.get(), shut),
    "a waiting timed get": lambda: waiting(m.Queue(), lambda q: q.get(timeout=60), shut),
    "a waiting put": lambda: waiting(full(), lambda q: q.put(1), shut),
    "a waiting timed put": lambda: waiting(full(), lambda q: q.put(1, timeout=60), shut),
    "a waiting get, immediate": lambda: waiting(m.Queue(), lambda q: q.get(),
                                                lambda q: q.shutdown(True)),
    "a waiting join, immediate": lambda: waiting(of(1, 2), lambda q: q.join(),
                                                 lambda q: q.shutdown(True)),
    "a waiting get, a put": lambda: waiting(m.Queue(), lambda q: q.get(),
                                            lambda q: (q.put(5), q.shutdown())),
}


def got(q, *args):
    try:
        return q.get(*args)
    except queue.Empty:
        return "Empty"


# CPython's server spins for ever in these (a NaN deadline is never
# passed, and its waits of a NaN are no waits): asked of ours only.
NAN = {
    "get of a NaN timeout": lambda: m.Queue().get(True, float("nan")),
    "put of a NaN timeout": lambda: full().put(1, True, float("nan")),
    "get of a NaN timeout, not blocking": lambda: got(m.Queue(), False, float("nan")),
    "after": lambda: m.list([1, 2])[:],
}

GROUPS = {"queues": QUEUES, "exposed": EXPOSED, "freed": FREED, "server": SERVER,
          "unserved": UNSERVED,
          "killed": KILLED, "nan": NAN, "shutdown": SHUTDOWN}
run(GROUPS)
"##;

/// The whole program: [`PRELUDE`](common::cpython::PRELUDE) and [`CASES`].
static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

/// The program, against both servers.
fn differential() -> Differential {
    Differential::of(&PROGRAM, KEY, RUN_LIMIT)
}

/// The cases of `group`, against both servers (see [`Differential::same_answers_in`]).
fn same_answers(group: &str) {
    differential().same_answers_in(group, LIMIT);
}

/// The answers of `group` by the newest CPython against multiproc's
/// server only; `None` without a CPython.
fn ours_only(group: &str) -> Option<Vec<(String, String)>> {
    differential().ours_only(group, LIMIT)
}

/// Among them: `task_done` called more times than items were put is
/// `ValueError: task_done() called too many times`, and leaves `join`
/// answering at once; a queue's `_getvalue()` fails to pickle it. And a
/// `put` on a queue without a bound does not read its timeout (`put(1,
/// True, -1)` puts), nor does a `get` or `put` that need not wait look at
/// a NaN one: the server refused both (`ValueError`), putting nothing.
/// Fails unless `got` is `want`, case for case.
fn assert_answers(got: &[(String, String)], want: &[(&str, &str)]) {
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn joinable_queues_and_queue_fallbacks_answer_as_cpythons() {
    same_answers("queues");
}

/// A method an object does not expose is refused with CPython's
/// traceback, which ends in the `KeyError` of the fallbacks' lookup (it
/// ended in the `AttributeError` that names the exposed methods); and a
/// fallback (`#GETVALUE`, `__repr__`, `__str__`) called with arguments is
/// a `#TRACEBACK` naming `Server.fallback_…()` (it was a `TypeError`
/// raised in the client, and a queue's ignored them).
#[test]
fn methods_an_object_does_not_expose_answer_as_cpythons() {
    same_answers("exposed");
}

/// The server's own calls (`incref`, `decref`, `create`, `dummy`, …)
/// refuse arguments they do not take as Python binds them, in 3.13's
/// words (`Server.decref() takes 3 positional arguments but 4 were
/// given`), and an ident or typeid that is not a str is a `KeyError` of
/// it, as its lookup fails: they said `takes 0 arguments (1 given)` and
/// `an ident is a str`.
#[test]
fn the_servers_own_calls_of_odd_arguments_answer_as_cpythons() {
    same_answers("server");
}

/// Python 3.13's `Queue.shutdown`, with and without `immediate`: what
/// `put`, `get`, `task_done` and `join` answer after it, and what calls
/// waiting when it came answer. The server's queues had no `shutdown`.
#[test]
fn queue_shutdown_answers_as_cpythons() {
    same_answers("shutdown");
}

#[test]
fn freed_objects_and_unknown_idents_answer_as_cpythons() {
    same_answers("freed");
}

/// `Pool`, which CPython's `SyncManager` serves, is refused as any
/// unknown typeid is (the README's differences say so), arguments and
/// all, and the server serves on.
#[test]
fn typeids_the_server_does_not_serve_are_refused_and_it_serves_on() {
    let Some(got) = ours_only("unserved") else {
        return;
    };
    let (after, refused) = got.split_last().unwrap();
    assert_eq!(refused.len(), 2);
    for (name, answer) in refused {
        let typeid = name.split(' ').next().unwrap();
        assert_eq!(
            answer,
            &format!("RemoteError: KeyError: '{typeid}'"),
            "{name}"
        );
    }
    assert_eq!(after, &("after".to_owned(), "[1, 2]".to_owned()));
}

/// A client killed (SIGKILL) while its `get`, `put` or `join` waits on a
/// queue leaves the queue as if it had never called: an item put later
/// goes to a live getter, the dead client's item is never put, and a
/// `join` answers the others. CPython's server gives the item to the dead
/// client's thread, which loses it, and puts the dead client's item when
/// there is room (the README's differences say so).
#[test]
fn a_client_killed_while_its_call_waits_on_a_queue_takes_nothing_with_it() {
    let Some(got) = ours_only("killed") else {
        return;
    };
    let want = [
        ("a killed get", "'item'"),
        ("a killed put", "['first', 'Empty']"),
        ("a killed join", "(None, 0)"),
        ("after", "[1, 2]"),
    ];
    assert_answers(&got, &want);
}

/// A queue's `get` or `put` of a NaN timeout is refused with Python's
/// `ValueError` for a NaN time (`threading.Lock.acquire`'s), where
/// CPython's server spins a thread for ever and its client never gets an
/// answer (the README's differences say so); without blocking, a NaN
/// timeout is not looked at, as in Python.
#[test]
fn a_nan_timeout_is_refused_where_cpythons_server_spins_for_ever() {
    let Some(got) = ours_only("nan") else {
        return;
    };
    let nan = "ValueError: Invalid value NaN (not a number)";
    let want = [
        ("get of a NaN timeout", nan),
        ("put of a NaN timeout", nan),
        ("get of a NaN timeout, not blocking", "'Empty'"),
        ("after", "[1, 2]"),
    ];
    assert_answers(&got, &want);
}
