//! The manager server under what a hostile or merely unusual Python client
//! does that the other files do not try, against CPython's server where
//! its behaviour is the reference: requests sent on one connection before
//! the answers to the earlier ones are read (pipelined), whose answers
//! carry proxies of objects nothing else holds; and the methods a dict's
//! iterator's proxy exposes but the iterator lacks; and a client that
//! closes its sending side while a call of its waits.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(300);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

const KEY: &str = "manager attack 7 key";

/// The program's own part, after
/// [`PRELUDE`](common::cpython::PRELUDE): its helpers and its cases, in
/// groups named by `argv[3]`.
const CASES: &str = r##"
import gc
from multiprocessing import current_process
from multiprocessing.managers import dispatch

# A proxy that an answer carries is unpickled with this process's key.
current_process().authkey = m._authkey


def objects():
    return dispatch(m._Client(m._address, authkey=m._authkey), None, "number_of_objects")


def pipelined(holder, first, then):
    """Sends `first` and `then` (method, args) of `holder` on one accepted
    connection, the second before the first's answer is read, then reads
    both: the first answer's value (its proxy, made as Python makes it,
    now read whole) and the second's."""
    conn = m._Client(m._address, authkey=m._authkey)
    dispatch(conn, None, "accept_connection", ("pipelined",))
    for method, args in (first, then):
        conn.send((holder._token.id, method, args, {}))
    return both(conn)


def both(conn):
    """Reads two answers on `conn` and closes it: the first's value (its
    proxy, made as Python makes it, now read whole) and the second."""
    kind, got = conn.recv()
    second = conn.recv()
    try:
        value = (kind, type(got).__name__, failure_of(lambda: got[:]))
    finally:
        del got
        conn.close()
    return (value, second)


def leaves_nothing(case):
    """`case`'s answer, and whether the server holds as many objects after
    it as before."""
    gc.collect()
    before = objects()
    answer = case()
    gc.collect()
    return (answer, objects() == before)


def popped():
    d = m.dict({"l": m.list([1, 2, 3])})
    return pipelined(d, ("pop", ("l",)), ("__len__", ()))


def got_then_deleted():
    d = m.dict({"l": m.list([4, 5])})
    return pipelined(d, ("__getitem__", ("l",)), ("__delitem__", ("l",)))


def list_popped():
    outer = m.list([m.list([6])])
    return pipelined(outer, ("pop", ()), ("append", (7,)))


def parked_get():
    """A `get` that waits on an empty queue, and a request sent behind it;
    then a list whose only holder is the queue is put."""
    q = m.Queue()
    conn = m._Client(m._address, authkey=m._authkey)
    dispatch(conn, None, "accept_connection", ("parked",))
    conn.send((q._token.id, "get", (), {}))
    conn.send((q._token.id, "qsize", (), {}))
    # Nothing to get yet (the get waits, or is still on its way).
    waited = conn.poll(0.2)
    q.put(m.list([9]))
    return (waited, *both(conn))


def never_unpickled():
    """An answer carrying the only reference, read as bytes only (no
    incref), then the connection closed."""
    d = m.dict({"l": m.list([8])})
    conn = m._Client(m._address, authkey=m._authkey)
    dispatch(conn, None, "accept_connection", ("raw",))
    conn.send((d._token.id, "pop", ("l",), {}))
    conn.send((d._token.id, "__len__", (), {}))
    answers = [len(conn.recv_bytes()) > 0, conn.recv()]
    conn.close()
    return answers


PIPELINED = {
    "pop, then a request sent before its answer was read": lambda: leaves_nothing(popped),
    "getitem, then a pipelined del of its key": lambda: leaves_nothing(got_then_deleted),
    "a list's pop, then a pipelined append": lambda: leaves_nothing(list_popped),
    "a waiting get, then a request sent behind it": lambda: leaves_nothing(parked_get),
    "pop never unpickled, then closed": lambda: leaves_nothing(never_unpickled),
    "after": lambda: m.list([1, 2])[:],
}

ITERATOR = {
    "send": lambda: call(iter(m.dict({1: 2})), "send", (None,)),
    "throw": lambda: call(iter(m.dict({1: 2})), "throw", (ValueError,)),
    "throw of an instance": lambda: call(iter(m.dict({1: 2})), "throw", (ValueError("x"),)),
    "close": lambda: call(iter(m.dict({1: 2})), "close"),
    "__next__ after send": lambda: each(
        iter(m.dict({1: 2, 3: 4})),
        lambda it: next(it),
        lambda it: call(it, "send", (5,)),
        lambda it: next(it),
    ),
}


def half_closed(method, holder, args, give):
    """`method` of `holder` called on a connection of its own and left
    waiting; the client then closes its sending side. Once the server has
    ended the connection (it is readable: at its end), `give` makes what
    the call waited for. What the client reads, then `give`'s result."""
    conn = raw_connection()
    conn.send((holder._token.id, method, args, {}))
    s = socket.socket(fileno=os.dup(conn.fileno()))
    s.shutdown(socket.SHUT_WR)
    s.close()
    ended = conn.poll(60)
    read = failure_of(conn.recv) if ended else "still open"
    conn.close()
    return (read, give())


def half_closed_get():
    q = m.Queue()
    return half_closed("get", q, (), lambda: (q.put(1), q.qsize())[1])


def half_closed_acquire():
    lock = m.Lock()
    lock.acquire()
    return half_closed("acquire", lock, (), lambda: (lock.release(), lock.acquire(False))[1])


HALF_CLOSED = {
    "a waiting get, its sending side closed": half_closed_get,
    "a waiting acquire, its sending side closed": half_closed_acquire,
}


def each(proxy, *steps):
    return [failure_of(lambda: step(proxy)) for step in steps]


run({"pipelined": PIPELINED, "iterator": ITERATOR, "half-closed": HALF_CLOSED})
"##;

static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

fn differential() -> Differential {
    Differential::of(PROGRAM.as_str(), KEY, RUN_LIMIT)
}

/// A request sent on a connection before the answer to the one before it
/// was read ended that connection's loan of the proxies the answer
/// carried (see `Objects::lend`): an object popped from the only
/// container that held it was freed before the client's incref of it
/// arrived, and the client's proxy named nothing (`KeyError`), its items
/// lost. CPython's server keeps it for the client.
#[test]
fn proxies_answered_to_pipelined_requests_live_for_their_client() {
    differential().same_answers_in("pipelined", LIMIT);
}

/// A dict's iterator's `send`, `throw` and `close` (which its proxy
/// exposes, as CPython's `IteratorProxy` does, and a `dict_keyiterator`
/// lacks) answered a bare `AttributeError`; CPython's server looks the
/// name up among its fallbacks then, and its traceback ends with that
/// lookup's `KeyError`, which is what a client reading the last line sees.
#[test]
fn an_iterators_missing_methods_answer_as_cpythons() {
    differential().same_answers_in("iterator", LIMIT);
}

/// A client's `decref`s past its own references of a registered name's
/// object (`multiproc manager serve --object get_dict=dict`) gave back
/// the server's own reference too, freeing the object and what it held:
/// the next `m.get_dict()` made a new, empty dict. CPython's server only
/// forgets the id then; the object the registered callable returns, and
/// its items, live on. Here the server's reference is its own, which no
/// client gives back.
#[test]
fn decrefs_past_a_clients_own_leave_a_registered_object_whole() {
    const PROGRAM: &str = r#"
import sys
from multiprocessing.managers import BaseManager, dispatch

class M(BaseManager):
    pass

M.register("get_dict")
M.register("get_queue")
m = M(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()

def decref(ident):
    try:
        dispatch(m._Client(m._address, authkey=m._authkey), None, "decref", (ident,))
        return True
    except Exception:
        return False

d = m.get_dict()
d.update(a=1)
q = m.get_queue()
q.put(5)
for proxy in (d, q):
    # Each reference there is given back, and more, until refused.
    given = 0
    while decref(proxy._token.id) and given < 10:
        given += 1
print("dict", m.get_dict().copy())
print("queue", m.get_queue().qsize())
"#;
    let Some((_, python)) = common::cpython::pyenv_pythons().pop() else {
        return println!("no CPython 3.8+ under pyenv: nothing to run");
    };
    common::watchdog("registered", LIMIT, || {
        let (server, path, conn) = common::serve_manager_registered(
            "registered",
            KEY.as_bytes(),
            &[("get_dict", "dict"), ("get_queue", "Queue")],
        );
        drop(conn);
        let mut command = std::process::Command::new(&python);
        command
            .args(["-c", PROGRAM, path.to_str().unwrap(), KEY])
            .env_remove("PYTHONPATH");
        let (status, out, err) = common::run_with_deadline(&mut command, b"", RUN_LIMIT);
        common::cpython::shut_down(&path, KEY);
        server.join().unwrap();
        assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
        assert_eq!(out, "dict {'a': 1}\nqueue 1\n");
    });
}

/// A client that closes its sending side while one of its calls waits is
/// taken for gone: the call ends unanswered and the connection closes, so
/// no queue item or lock is taken for a client that may be dead (an item
/// would be lost). CPython's server finishes the call (README,
/// differences).
#[test]
fn a_half_closed_clients_waiting_call_takes_nothing() {
    let Some(got) = differential().ours_only("half-closed", LIMIT) else {
        return;
    };
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    assert_eq!(
        got,
        [
            (
                "a waiting get, its sending side closed",
                "('EOFError: ', 1)"
            ),
            (
                "a waiting acquire, its sending side closed",
                "('EOFError: ', True)"
            ),
        ]
    );
}
