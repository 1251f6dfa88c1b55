//! The manager server's `Value`, `Array`, `Event`, `Lock`, `RLock`,
//! `Semaphore`, `BoundedSemaphore` and `Barrier` typeids against
//! CPython's: one
//! Python program runs against CPython's own manager server (the
//! reference, of the same Python) and against multiproc's, and must print
//! the same answers from both, for CPython 3.8 and 3.13; and what a killed
//! client held, against multiproc's only (CPython's keeps it held). Without
//! either CPython under pyenv, the tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{pyenv_pythons, shut_down, with_prelude, Differential};
use common::watchdog;

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const KEY: &str = "manager sync types key";

/// The program's own part, after
/// [`PRELUDE`](common::cpython::PRELUDE): its helpers and its cases, in
/// groups named by `argv[3]`.
const CASES: &str = r##"
import os, re, select, signal, threading, time


def value_of(v, *ops):
    out = []
    for op in ops:
        try:
            out.append(op(v))
        except Exception as e:
            out.append(failure(e))
    return out


def setting(v, x):
    v.value = x
    return v.value


VALUES = {
    "an int": lambda: value_of(m.Value("i", 7), lambda v: v.value, lambda v: v.get(), str),
    "the typecode is not checked": lambda: value_of(
        m.Value("i", "text"), lambda v: v.value, str, lambda v: setting(v, [1.5, None])),
    "an unknown typecode": lambda: str(m.Value("nonsense", 2 ** 80)),
    "keywords": lambda: str(m.Value(typecode="d", value=1.5, lock=False)),
    "set and get": lambda: value_of(m.Value("d", 0.5), lambda v: v.set(2.5), lambda v: v.get()),
    "a copy": lambda: repr(m.Value("b", b"x")._getvalue()),
    "a copy's value": lambda: m.Value("b", (1, "2"))._getvalue().value,
    "a proxy in a value": lambda: m.Value("O", m.list([1, 2])).value[:],
    "too few arguments": lambda: m.Value("i"),
    "too many arguments": lambda: m.Value("i", 1, 2, 3),
    "an unknown keyword": lambda: m._create("Value", "i", 1, x=2),
    "get of an argument": lambda: call(m.Value("i", 1), "get", (1,)),
    "set of none": lambda: call(m.Value("i", 1), "set"),
    "set by keyword": lambda: value_of(
        m.Value("i", 1), lambda v: call(v, "set", (), {"value": 9}), lambda v: v.value),
    "set of a keyword unknown": lambda: call(m.Value("i", 1), "set", (), {"x": 9}),
    "a method not exposed": lambda: call(m.Value("i", 1), "__len__"),
    "repr by the server": lambda: call(m.Value("i", 1), "__repr__"),
    "after": lambda: m.list([1, 2])[:],
}

BOUNDS = [2 ** 7, -2 ** 7 - 1, 2 ** 8, -1, 2 ** 15, -2 ** 15 - 1, 2 ** 16, 2 ** 31,
          -2 ** 31 - 1, 2 ** 32, 2 ** 63, -2 ** 63 - 1, 2 ** 64, 2 ** 100, -2 ** 100]


def made(typecode, sequence):
    try:
        return str(m.Array(typecode, sequence))
    except Exception as e:
        return failure(e)


def items(typecode, values):
    return [made(typecode, [v]) for v in values]


def indexed(a, *ops):
    return value_of(a, *ops)


ARRAYS = {
    **{"bounds of " + t: (lambda t=t: items(t, BOUNDS)) for t in "bBhHiIlLqQ"},
    **{"odd items of " + t: (lambda t=t: items(t, [1.5, "x", None, True, 2 ** 2000, "ab", 1e300]))
       for t in "bIqfdu"},
    "a bad typecode": lambda: made("z", [1]),
    "a typecode not a str": lambda: made(1, [1]),
    "a typecode of two": lambda: made("ii", [1]),
    "a str for ints": lambda: made("i", "ab"),
    "a str of characters": lambda: made("u", "ab"),
    "bytes": lambda: [made(t, b"abcdefgh") for t in "bBhHiIlLqQfd"],
    "bytes of a bad length": lambda: made("i", b"abc"),
    "an int": lambda: made("i", 5),
    "a range": lambda: made("i", range(3)),
    "a tuple of floats": lambda: made("f", (0.1, -2, 1e300)),
    "empty": lambda: [made(t, []) for t in "idu"],
    "no sequence": lambda: m.Array("i"),
    "an unknown keyword": lambda: m._create("Array", "i", [1], x=2),
    "keywords": lambda: made(typecode="d", sequence=[1, 2], lock=False)
        if False else str(m.Array(typecode="d", sequence=[1, 2], lock=False)),
    "index": lambda: indexed(
        m.Array("i", [1, 2, 3]), len, lambda a: a[0], lambda a: a[-1], lambda a: a[5],
        lambda a: a[-4], lambda a: a["x"], lambda a: a[1.0], lambda a: a[2 ** 70],
        lambda a: a[True]),
    "slices": lambda: indexed(
        m.Array("q", [1, 2, 3, 4]), lambda a: a[1:3], lambda a: a[::2], lambda a: a[::-1],
        lambda a: a[5:], lambda a: a[::0], lambda a: a["x":]),
    "slices of floats and characters": lambda: [
        m.Array("d", [0.5, 1.5])[:], m.Array("u", "abc")[1:], m.Array("f", [0.1])[:]],
    "set": lambda: indexed(
        m.Array("h", [1, 2, 3]), lambda a: a.__setitem__(0, 9), lambda a: a[0],
        lambda a: a.__setitem__(-1, 2 ** 15), lambda a: a.__setitem__(3, 1),
        lambda a: a.__setitem__("x", 1), lambda a: a.__setitem__(0, 1.5),
        lambda a: a.__setitem__(slice(0, 1), [1]), lambda a: a[:]),
    "set a float and a character": lambda: indexed(
        (m.Array("f", [0.0]), m.Array("u", "ab")),
        lambda a: a[0].__setitem__(0, 0.1), lambda a: a[0][0],
        lambda a: a[1].__setitem__(1, "z"), lambda a: a[1][:],
        lambda a: a[1].__setitem__(1, "zz")),
    "a copy": lambda: [m.Array("i", [1, 2])._getvalue(), m.Array("u", "ab")._getvalue()],
    "slot arguments": lambda: indexed(
        m.Array("i", [1]), lambda a: call(a, "__len__", (1,)),
        lambda a: call(a, "__getitem__"),
        lambda a: call(a, "__getitem__", (0,), {"x": 1})),
    "a method not exposed": lambda: call(m.Array("i", [1]), "append", (2,)),
    "after": lambda: m.list([1, 2])[:],
}

NAN = float("nan")


def in_child(proxy, then):
    """A child client process that calls `then(proxy)` on a connection of
    its own after a pause; waited for by `joined`."""
    pid = os.fork()
    if pid == 0:
        try:
            proxy._connect()
            time.sleep(0.3)
            then(proxy)
        finally:
            os._exit(0)
    return pid


def joined(pid, answer):
    os.waitpid(pid, 0)
    return answer


def unset_event_waits(e):
    return [failure_of(lambda: e.wait(t)) for t in (0, -1, NAN, 0.05, "x", 10 ** 400, 1e300)]


def in_thread(f):
    out = []
    t = threading.Thread(target=lambda: out.append(failure_of(f)))
    t.start()
    t.join(60)
    return out


def set_and_wait(e):
    e.set()
    return [e.is_set(), e.wait(), e.wait(None), e.wait(0), e.wait(10 ** 400), e.wait(NAN)]


EVENTS = {
    "unset": lambda: value_of(m.Event(), lambda e: e.is_set(), unset_event_waits),
    "set": lambda: value_of(m.Event(), set_and_wait, lambda e: e.clear(), lambda e: e.is_set(),
                            lambda e: e.wait(0.01)),
    "str": lambda: masked(str(m.Event())) if NEW else "-",
    "a copy": lambda: m.Event()._getvalue(),
    "arguments": lambda: m.Event(1),
    "wait of two arguments": lambda: call(m.Event(), "wait", (1, 2)),
    "a method not exposed": lambda: call(m.Event(), "acquire"),
    "a wait woken by another client": lambda: (lambda e: joined(
        in_child(e, lambda e: e.set()), e.wait(60)))(m.Event()),
    "after": lambda: m.list([1, 2])[:],
}


def lock_calls(l):
    return value_of(
        l, lambda l: l.acquire(), lambda l: l.acquire(False), lambda l: l.acquire(True, 0),
        lambda l: l.acquire(timeout=0.05), lambda l: l.acquire(False, 1),
        lambda l: l.acquire(True, -2), lambda l: l.acquire(True, NAN),
        lambda l: l.acquire(True, 1e300), lambda l: l.acquire(True, 10 ** 400),
        lambda l: call(l, "acquire", (True, None)), lambda l: call(l, "acquire", (1, 2, 3)),
        lambda l: call(l, "acquire", (), {"x": 1}), lambda l: l.release(),
        lambda l: l.release(), lambda l: call(l, "release", (1,)),
        lambda l: l.acquire(True, -1), lambda l: l.release(),
        lambda l: l.acquire(blocking=False), lambda l: l.release())


def with_lock(l):
    with l:
        inside = l.acquire(False)
    return [inside, l.acquire(False)]


def semaphore_calls(s):
    return value_of(
        s, lambda s: s.acquire(), lambda s: s.acquire(), lambda s: s.acquire(False),
        lambda s: s.acquire(timeout=0), lambda s: s.acquire(timeout=-1),
        lambda s: s.acquire(timeout=0.05), lambda s: s.acquire(False, 1),
        lambda s: s.acquire(timeout="x"), lambda s: s.acquire(timeout=1e300),
        lambda s: s.acquire(timeout=10 ** 400), lambda s: s.release(),
        lambda s: s.acquire(timeout=1e300), lambda s: s.release(), lambda s: s.release(),
        lambda s: s.release(), lambda s: s.acquire(False))


def rlock_calls(r):
    return value_of(
        r, lambda r: r.acquire(), lambda r: r.acquire(False), lambda r: r.acquire(True, 0),
        lambda r: in_thread(lambda: r.acquire(False)), lambda r: in_thread(r.release),
        lambda r: r.release(), lambda r: r.release(), lambda r: r.release(),
        lambda r: r.release(), lambda r: r.acquire(False), lambda r: r.release())


LOCKS = {
    "a lock": lambda: lock_calls(m.Lock()),
    "a lock in a with": lambda: with_lock(m.Lock()),
    "a lock released by another thread": lambda: (lambda l: [
        l.acquire(), in_thread(l.release), l.acquire(False)])(m.Lock()),
    "an rlock": lambda: rlock_calls(m.RLock()),
    "an rlock in a with": lambda: with_lock(m.RLock()),
    "a semaphore": lambda: semaphore_calls(m.Semaphore(2)),
    "a bounded semaphore": lambda: semaphore_calls(m.BoundedSemaphore(2)),
    "a semaphore of 0": lambda: m.Semaphore(0).acquire(False),
    "a negative semaphore": lambda: m.Semaphore(-1),
    "a semaphore of a str": lambda: m.BoundedSemaphore("x"),
    "a semaphore of a keyword": lambda: m.Semaphore(value=3).acquire(False),
    "str": lambda: [masked(str(x)) for x in (
        m.Lock(), m.Semaphore(3), m.BoundedSemaphore(2))] if NEW else "-",
    "copies": lambda: [failure_of(x._getvalue) for x in (m.Lock(), m.RLock(), m.Semaphore())],
    "a method not exposed": lambda: call(m.Lock(), "locked"),
    "an acquire woken by another client's release": lambda: (lambda l: [l.acquire(), joined(
        in_child(l, lambda l: l.release()), l.acquire(timeout=60))])(m.Lock()),
    "a semaphore's acquire woken by another client": lambda: (lambda s: joined(
        in_child(s, lambda s: s.release()), s.acquire(timeout=60)))(m.Semaphore(0)),
    "after": lambda: m.list([1, 2])[:],
}


def killed_holding(proxy, method="acquire", *args):
    """A child client that calls `method` on `proxy` and is killed (SIGKILL)
    after its answer, or while it waits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            proxy._connect()
            os.write(w, b"x")
            proxy._callmethod(method, args)
            os.write(w, b"y")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 1)
    if method == "acquire" and not args:
        os.read(r, 1)
    else:
        # The call is sent right after the byte: give the server time to
        # take it (its waiting is what is asked about).
        time.sleep(0.5)
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return proxy


def a_killed_waiter(l):
    l.acquire()
    killed_holding(l, "acquire", True, 30)
    l.release()
    return [l.acquire(False), l.release()]


KILLED = {
    "a lock its killed holder held": lambda: killed_holding(m.Lock()).acquire(timeout=10),
    "an rlock its killed owner held": lambda: killed_holding(m.RLock()).acquire(timeout=10),
    "a semaphore a killed client took": lambda: killed_holding(m.Semaphore(1)).acquire(
        timeout=0.2),
    "a killed client's waiting acquire": lambda: a_killed_waiter(m.Lock()),
    "a killed client's waiting wait": lambda: (lambda e: [
        e.set(), e.is_set()])(killed_holding(m.Event(), "wait", 30)),
    "after": lambda: m.list([1, 2])[:],
}

def attrs(b):
    return [b.parties, b.n_waiting, b.broken]


def child_waits(b, timeout):
    """A child client process that waits on b on a connection of its own,
    once the server has it waiting (or it has its answer already): its pid
    and the pipe its answer comes through, for `collected`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            b._connect()
            os.write(w, repr(failure_of(lambda: b.wait(timeout))).encode())
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + 30
    while b.n_waiting < 1 and time.monotonic() < deadline:
        if select.select([r], [], [], 0.01)[0]:
            break
    return pid, r


def collected(child):
    """The answer of a `child_waits` child, once it has ended."""
    pid, r = child
    theirs = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return theirs


def two_waits(b, timeout=60):
    """A child client process's wait and this one's on b, their indexes."""
    child = child_waits(b, timeout)
    mine = failure_of(lambda: b.wait(timeout))
    return sorted([repr(mine), collected(child)])


def broken_by_a_timeout(b):
    """This client's wait times out while a child client's waits: both
    get BrokenBarrierError, and the barrier stays broken until reset."""
    child = child_waits(b, 60)
    mine = failure_of(lambda: b.wait(0.2))
    out = [repr(mine), collected(child)]
    return out + [b.broken, failure_of(b.wait), b.reset(), b.broken, attrs(b)]


def aborted(b):
    child = child_waits(b, 60)
    waiting = b.n_waiting
    b.abort()
    theirs = collected(child)
    return [waiting, theirs, attrs(b), failure_of(b.wait)]


BARRIERS = {
    "one party": lambda: value_of(
        m.Barrier(1), lambda b: b.wait(), attrs, lambda b: b.wait(0), lambda b: b.wait(-1),
        lambda b: b.wait(NAN), lambda b: masked(str(b)) if NEW else "-"),
    "two parties, one client": lambda: value_of(
        m.Barrier(2), attrs, lambda b: failure_of(lambda: b.wait(0)), attrs,
        lambda b: failure_of(b.wait), lambda b: b.reset(), attrs,
        lambda b: failure_of(lambda: b.wait(-1)), lambda b: b.reset(),
        lambda b: failure_of(lambda: b.wait("x")), lambda b: failure_of(lambda: b.wait(10 ** 400)),
        lambda b: failure_of(lambda: b.wait(1e300)), attrs, lambda b: b.abort(), attrs,
        lambda b: masked(str(b)) if NEW else "-"),
    "two clients": lambda: two_waits(m.Barrier(2)),
    "two clients twice": lambda: (lambda b: [two_waits(b), two_waits(b), attrs(b)])(m.Barrier(2)),
    "a wait timing out": lambda: broken_by_a_timeout(m.Barrier(3)),
    "a default timeout": lambda: failure_of(m.Barrier(2, None, 0.05).wait),
    "an abort": lambda: aborted(m.Barrier(2)),
    # Python 3.8's Barrier takes them (and never releases).
    "bad parties": lambda: [failure_of(lambda: m.Barrier(p)) for p in (0, -1, "x")]
        if NEW else "-",
    "no parties": lambda: m.Barrier(),
    "an attribute it has not": lambda: call(m.Barrier(2), "__getattribute__", ("nope",)),
    "a copy": lambda: m.Barrier(2)._getvalue(),
    "a method not exposed": lambda: call(m.Barrier(2), "acquire"),
    "after": lambda: m.list([1, 2])[:],
}

GROUPS = {"values": VALUES, "arrays": ARRAYS, "events": EVENTS, "locks": LOCKS,
          "killed": KILLED, "barriers": BARRIERS}
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

/// `m.Value(typecode, value)`: its `value` property, `get` and `set`, its
/// `str` (`Value('i', 7)`), a copy (`_getvalue()`, a
/// `multiprocessing.managers.Value`), a typecode nothing checks, a proxy
/// as its value, and what wrong arguments raise.
#[test]
fn values_answer_as_cpythons() {
    same_answers("values");
}

/// `m.Array(typecode, sequence)`: every integer typecode's bounds and the
/// `OverflowError`s past them, items of the wrong type, bad typecodes, a
/// str or bytes as the sequence, `len`, indexes and slices read and
/// written, a copy (`_getvalue()`, an `array.array`), and what wrong
/// arguments raise.
#[test]
fn arrays_answer_as_cpythons() {
    same_answers("arrays");
}

/// `m.Event()`: `is_set`, `set`, `clear`, and `wait` of no timeout, of 0,
/// negative, NaN, huge (`OverflowError` only if it must wait) and wrong
/// ones, a `wait` timing out, and one woken by another client process
/// (parked in the server's event loop, which serves the `set` meanwhile).
#[test]
fn events_answer_as_cpythons() {
    same_answers("events");
}

/// `m.Lock()`, `m.RLock()`, `m.Semaphore(n)` and `m.BoundedSemaphore(n)`
/// through the `AcquirerProxy`: `acquire` of every kind of `blocking` and
/// `timeout` (0, -1, negative, NaN, huge, wrong, timing out), `release`
/// of what is not held (`release unlocked lock`, `cannot release
/// un-acquired lock` from another connection, `Semaphore released too
/// many times`), `with`, bad initial values, and an `acquire` woken by
/// another client process's `release`.
#[test]
fn locks_and_semaphores_answer_as_cpythons() {
    same_answers("locks");
}

/// `m.Barrier(parties, action=None, timeout=None)`: `wait` of one party,
/// of two client processes (each gets its index, and again in the next
/// generation), timing out or of a timeout of 0, negative, NaN (one
/// party), huge or wrong; `abort`, `reset`, `broken`, `n_waiting`,
/// `parties`; and bad arguments.
#[test]
fn barriers_answer_as_cpythons() {
    same_answers("barriers");
}

/// A client killed (SIGKILL) while it holds a `Lock` or owns an `RLock`
/// leaves it free, where CPython's server keeps it held for ever; a
/// `Semaphore`'s count it took is not given back (another process
/// routinely releases what one acquired); a killed client's waiting
/// `acquire` or `wait` takes nothing with it. (The README's differences
/// say so.)
#[test]
fn what_a_killed_client_held_is_freed() {
    let Some(got) = differential().ours_only("killed", LIMIT) else {
        return;
    };
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    let want = [
        ("a lock its killed holder held", "True"),
        ("an rlock its killed owner held", "True"),
        ("a semaphore a killed client took", "False"),
        ("a killed client's waiting acquire", "[True, None]"),
        ("a killed client's waiting wait", "[None, True]"),
        ("after", "[1, 2]"),
    ];
    assert_eq!(got, want);
}

/// A name registered for a `Lock` (`serve_registered`, as `multiproc
/// manager serve --object get_lock=Lock` does) is one lock for every
/// client of the remote-manager pattern (`BaseManager.register('get_lock')`);
/// a `Value` or `Array`, made of arguments a registered name's `create`
/// does not take, cannot be registered.
#[test]
fn a_registered_name_may_stand_for_a_lock() {
    use multiproc::conn::{connect, Address};
    let refused = multiproc::manager::serve_registered(
        &Address::Unix(std::env::temp_dir().join("multiproc-test-never-bound.sock")),
        KEY.as_bytes(),
        &[("get_value".into(), "Value".into())],
        |_| {},
    );
    assert!(refused.is_err());
    let Some((_, python)) = pyenv_pythons().into_iter().max() else {
        return println!("no CPython under pyenv: nothing to run");
    };
    watchdog("registered", LIMIT, || {
        let path = std::env::temp_dir().join(format!(
            "multiproc-test-sync-registered-{}.sock",
            std::process::id()
        ));
        let address = Address::Unix(path.clone());
        let mut server = multiproc::Process::new({
            let address = address.clone();
            move || {
                let names = [("get_lock".to_string(), "Lock".to_string())];
                let _ =
                    multiproc::manager::serve_registered(&address, KEY.as_bytes(), &names, |_| {});
            }
        })
        .daemon(true);
        server.start().unwrap();
        assert!(common::wait_until(Duration::from_secs(10), || connect(
            &address,
            Some(KEY.as_bytes())
        )
        .is_ok()));
        let program = r#"
import sys
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register("get_lock")
m = M(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
first, second = m.get_lock(), m.get_lock()
print(first.acquire(), second.acquire(False), first.release(), second.acquire(False))
"#;
        let (status, out, err) = common::run_with_deadline(
            std::process::Command::new(&python).args(["-c", program, path.to_str().unwrap(), KEY]),
            b"",
            RUN_LIMIT,
        );
        assert!(status.success(), "{out}\n{err}");
        assert_eq!(out.trim(), "True False None True");
        shut_down(&path, KEY);
        server.join().unwrap();
    });
}
