//! The manager server's `Condition` typeid against CPython's: one Python
//! program runs against CPython's own manager server (the reference, of
//! the same Python) and against multiproc's, and must print the same
//! answers from both, for CPython 3.8 and 3.13; and what a killed client
//! held or waited for, against multiproc's only (CPython's server keeps a
//! killed client's thread waiting, and what it holds held, for ever).
//! Without either CPython under pyenv, the tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const KEY: &str = "manager condition key";

/// The program's own part, after
/// [`PRELUDE`](common::cpython::PRELUDE): its helpers and its cases, in
/// groups named by `argv[3]`.
const CASES: &str = r##"
import os, re, select, signal, time

NAN = float("nan")


def value_of(v, *ops):
    return [failure_of(lambda: op(v)) for op in ops]


def waiting(c):
    """How many calls wait on c to be notified, as the server's repr of it
    (`<Condition(lock, n)>`) says."""
    return int(re.search(r", (\d+)\)>$", call(c, "__repr__")).group(1))


def in_child(proxies, body):
    """A child client process that runs `body()` on connections of its own
    (of each of `proxies`); its pid and the pipe its answer comes through,
    for `answered`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            for p in proxies:
                p._connect()
            os.write(w, repr(failure_of(body)).encode())
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def has_answered(child, within=0):
    return bool(select.select([child[1]], [], [], within)[0])


def answered(child):
    """A child's answer, once it has one (within 30 s), and the child ended."""
    pid, r = child
    theirs = os.read(r, 1000).decode() if has_answered(child, 30) else "no answer"
    os.close(r)
    if theirs == "no answer":
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return theirs


def until_waiting(c, n, child=None):
    """Polls the server (within 30 s) until n calls wait on c (or the child
    has answered already); how many do."""
    deadline = time.monotonic() + 30
    while waiting(c) != n and time.monotonic() < deadline:
        if child is not None and has_answered(child, 0.01):
            break
        if child is None:
            select.select([], [], [], 0.01)
    return waiting(c)


def waiter(c, n, timeout=60):
    """A child client process that waits on c (holding it, as it must),
    once the server has it as the n-th waiter."""
    def waits():
        with c:
            return c.wait(timeout)
    child = in_child([c], waits)
    until_waiting(c, n, child)
    return child


def waits_holding(c):
    with c:
        return [failure_of(lambda: c.wait(t)) for t in (
            0, -1, NAN, 0.05, -1e300, "x", 10 ** 400, 1e300, [])] + again(c)


def again(c):
    # An RLock's acquire of its owner, a Lock's of anybody.
    got = c.acquire(False)
    return [got, got and c.release()]


def not_holding(c):
    return [failure_of(f) for f in (
        lambda: c.wait(0), c.wait, lambda: c.wait(5), c.notify, c.notify_all,
        lambda: c.notify(0), c.release)]


def notifying_nobody(c):
    with c:
        return [c.notify(), c.notify(0), c.notify(5), c.notify_all(), waiting(c),
                failure_of(lambda: call(c, "notify", ())),
                failure_of(lambda: call(c, "notify", (1, 2))),
                failure_of(lambda: call(c, "notify_all", (1,))),
                failure_of(lambda: call(c, "wait", (1, 2))),
                failure_of(lambda: call(c, "wait", (), {"timeout": 0})),
                failure_of(lambda: call(c, "wait", (), {"x": 0}))]


def rlock_calls(c):
    return value_of(
        c, lambda c: c.acquire(), lambda c: c.acquire(False), lambda c: c.acquire(True, 0),
        lambda c: c.wait(0), lambda c: c.release(), lambda c: c.release(),
        lambda c: c.wait(0), lambda c: c.release(), lambda c: c.release(),
        lambda c: c.acquire(blocking=False), lambda c: c.release())


def sharing(lock):
    """A Condition made of a lock's proxy and that proxy: one lock."""
    c = m.Condition(lock)
    return value_of(
        c, lambda c: lock.acquire(), lambda c: c.acquire(False), lambda c: c.wait(0),
        lambda c: c.notify(), lambda c: lock.release(), lambda c: c.notify(),
        lambda c: c.acquire(), lambda c: lock.acquire(False), lambda c: c.release(),
        lambda c: c.wait(0), lambda c: lock.acquire(False), lambda c: lock.release())


def woken_through(lock):
    """A child client waits on a Condition made of `lock`; this one takes
    the lock through its own proxy, notifies, and releases it through the
    lock's proxy."""
    c = m.Condition(lock)
    child = waiter(c, 1)
    lock.acquire()
    c.notify()
    woke = has_answered(child)
    lock.release()
    return [woke, answered(child), lock.acquire(False), lock.release()]


def notify_one():
    c = m.Condition()
    first = waiter(c, 1)
    second = waiter(c, 2)
    with c:
        c.notify(1)
        left = waiting(c)
    a = answered(first)
    b_waits = not has_answered(second)
    with c:
        c.notify()
    return [left, a, b_waits, answered(second), waiting(c)]


def notify_all():
    c = m.Condition(m.Lock())
    children = [waiter(c, n) for n in (1, 2, 3)]
    with c:
        c.notify_all()
        left = waiting(c)
    return [left] + [answered(child) for child in children]


def timing_out():
    c = m.Condition()
    child = waiter(c, 1, 0.2)
    return [answered(child), waiting(c)]


def consumer(c, items, n):
    def consume():
        got = []
        for _ in range(n):
            with c:
                if not c.wait_for(lambda: len(items) > 0, 60):
                    return got + ["timed out"]
                got.append(items.pop(0))
        return got
    return in_child([c, items], consume)


def produce(c, items, n, notify):
    for i in range(n):
        with c:
            items.append(i)
            notify(c)


def one_consumer():
    c, items = m.Condition(), m.list()
    child = consumer(c, items, 20)
    produce(c, items, 20, lambda c: c.notify())
    return [answered(child), items[:]]


def two_consumers():
    c, items = m.Condition(m.Lock()), m.list()
    children = [consumer(c, items, 10) for _ in range(2)]
    produce(c, items, 20, lambda c: c.notify_all())
    got = [eval(answered(child)) for child in children]
    return [[len(g) for g in got], sorted(got[0] + got[1]), items[:]]


def a_waiting_producer():
    # The producer waits until the consumer took everything.
    c, items = m.Condition(), m.list()
    child = consumer(c, items, 3)
    with c:
        items.extend([1, 2, 3])
        c.notify()
        emptied = c.wait_for(lambda: len(items) == 0, 0.5) or c.wait_for(
            lambda: len(items) == 0, 60)
    return [emptied, answered(child)]


def freed():
    # The condition keeps the lock it shares; both go with its last proxy.
    before = m._number_of_objects()
    lock = m.Lock()
    c = m.Condition(lock)
    del lock
    out = [m._number_of_objects() - before, c.acquire(), c.release()]
    del c
    return out + [m._number_of_objects() - before]


CONDITIONS = {
    "made": lambda: [masked(str(x)) for x in (
        m.Condition(), m.Condition(None), m.Condition(m.Lock()), m.Condition(m.RLock()),
        m.Condition(lock=m.Lock()))],
    "acquire and release": lambda: rlock_calls(m.Condition()),
    "acquire and release of a lock's": lambda: value_of(
        m.Condition(m.Lock()), lambda c: c.acquire(), lambda c: c.acquire(False),
        lambda c: c.acquire(True, 0.01), lambda c: c.wait(0), lambda c: c.release(),
        lambda c: c.release(), lambda c: c.acquire(timeout=-1), lambda c: c.release()),
    "not holding it": lambda: not_holding(m.Condition()),
    "not holding its lock": lambda: not_holding(m.Condition(m.Lock())),
    "waits holding it": lambda: waits_holding(m.Condition()),
    "waits holding its lock": lambda: waits_holding(m.Condition(m.Lock())),
    "notifying nobody": lambda: notifying_nobody(m.Condition()),
    "a lock shared": lambda: sharing(m.Lock()),
    "a wait woken through a shared lock": lambda: woken_through(m.Lock()),
    "notify wakes one": notify_one,
    "notify_all wakes all": notify_all,
    "a wait timing out": timing_out,
    "a producer and a consumer": one_consumer,
    "a producer and two consumers": two_consumers,
    "a producer waiting for its consumer": a_waiting_producer,
    "not a lock": lambda: [failure_of(lambda: m.Condition(x)) for x in (5, "x", m.list())],
    "too many arguments": lambda: m.Condition(None, 2),
    "an unknown keyword": lambda: m._create("Condition", x=1),
    # (One holding a lock's proxy pickles it on CPython's server.)
    "a copy": lambda: m.Condition()._getvalue(),
    "a method not exposed": lambda: call(m.Condition(), "_is_owned"),
    "freed": freed,
    "after": lambda: m.list([1, 2])[:],
}


def refcount(*proxies):
    """The server's count of references to the proxies' objects, all
    together (as one debug_info of it says)."""
    info = m._debug_info()
    return sum(int(re.search(r"%s:\s+refcount=(\d+)" % p._token.id, info).group(1))
               for p in proxies)


def until_refcount(proxies, n):
    """Polls the server (within 30 s) until the proxies' objects have n
    references all together; whether they do."""
    deadline = time.monotonic() + 30
    while refcount(*proxies) != n and time.monotonic() < deadline:
        select.select([], [], [], 0.01)
    return refcount(*proxies) == n


def killed(child):
    os.kill(child[0], signal.SIGKILL)
    os.waitpid(child[0], 0)
    os.close(child[1])


def a_killed_holder(lock):
    c = m.Condition(lock)
    r, w = os.pipe()
    child = in_child([c], lambda: [c.acquire(), os.write(w, b"x"), time.sleep(60)])
    os.close(w)
    os.read(r, 1)
    os.close(r)
    killed(child)
    return [c.acquire(timeout=10), c.release()]


def a_killed_waiter():
    c = m.Condition()
    killed(waiter(c, 1))
    left = until_waiting(c, 0)
    child = waiter(c, 1)
    with c:
        c.notify()
    return [left, answered(child)]


def a_killed_notified_waiter(lock):
    # Notified, it waits for the lock this client holds, and is killed:
    # the notification goes to the next waiter.
    c = m.Condition(lock)
    first = waiter(c, 1)
    second = waiter(c, 2)
    c.acquire()
    c.notify()
    # Its waiting call holds a reference to the condition, or to the lock
    # it waits for once it has seen the notification: gone once the server
    # has seen it end.
    held = [c] if lock is None else [c, lock]
    before = refcount(*held)
    killed(first)
    seen = until_refcount(held, before - 1)
    c.release()
    return [seen, answered(second), waiting(c), c.acquire(False), c.release()]


def a_killed_acquirer():
    # Killed while its acquire waits for the lock of a condition another
    # client waits on: nobody is notified.
    c = m.Condition()
    child = waiter(c, 1)
    c.acquire()
    before = refcount(c)
    # Its waiting call holds a reference to the condition.
    acquirer = in_child([c], c.acquire)
    parked = until_refcount([c], before + 1)
    killed(acquirer)
    seen = until_refcount([c], before)
    c.release()
    left = waiting(c)
    with c:
        c.notify()
    return [parked, seen, left, answered(child)]


KILLED = {
    "a condition its killed holder held": lambda: a_killed_holder(None),
    "a shared lock its killed holder held": lambda: a_killed_holder(m.Lock()),
    "a killed waiter": a_killed_waiter,
    "a killed acquirer": a_killed_acquirer,
    "a killed notified waiter": lambda: a_killed_notified_waiter(None),
    "a killed notified waiter of a shared lock": lambda: a_killed_notified_waiter(m.Lock()),
    "after": lambda: m.list([1, 2])[:],
}

# Different on purpose. CPython's server gives a Condition made of an
# RLock's proxy a proxy of it, whose calls its server threads make on
# connections of their own: the RLock the client acquired is another
# thread's to the Condition, which can never wait on it (`cannot wait on
# un-acquired lock`). Here the client's connection owns it, through either
# proxy. And CPython's Condition takes anything with acquire and release.
DIFFERENT = {
    "an rlock shared": lambda: sharing(m.RLock()),
    "a wait woken through a shared rlock": lambda: woken_through(m.RLock()),
    "a semaphore": lambda: m.Condition(m.Semaphore()),
    "an event": lambda: m.Condition(m.Event()),
    "after": lambda: m.list([1, 2])[:],
}

GROUPS = {"conditions": CONDITIONS, "killed": KILLED, "different": DIFFERENT}
run(GROUPS)
"##;

/// The whole program: [`PRELUDE`](common::cpython::PRELUDE) and [`CASES`].
static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

/// The program, against both servers.
fn differential() -> Differential {
    Differential::of(&PROGRAM, KEY, RUN_LIMIT)
}

/// `m.Condition()`, `m.Condition(m.Lock())`, `m.Condition(m.RLock())`
/// through the `ConditionProxy`: `acquire`/`release`, `wait` of every
/// kind of timeout (0, negative, NaN, huge, wrong, timing out) holding
/// the lock and not (`cannot wait on un-acquired lock`), `notify`
/// without the lock (`cannot notify on un-acquired lock`); a Condition
/// made of a lock's proxy shares that lock with the proxy; `notify(1)`
/// wakes exactly one waiting client process, the oldest, and
/// `notify_all` every one; producers and consumers with `wait_for` across
/// client processes; bad arguments, copies, `str`.
#[test]
fn conditions_answer_as_cpythons() {
    differential().same_answers_in("conditions", LIMIT);
}

/// A Condition made of an `RLock`'s proxy shares the `RLock`, owned by
/// the client connection that acquired it through either proxy, where
/// CPython's server has the Condition call the `RLock` through a proxy of
/// its own (a thread of its own owns what it acquires, and a `wait`
/// raises `cannot wait on un-acquired lock` whoever holds it); one made
/// of a `Semaphore`'s or an `Event`'s proxy is refused (CPython's takes
/// the one, and fails later of the other). (The README's differences say
/// so.)
#[test]
fn a_condition_shares_an_rlock_with_its_proxy() {
    let want = [
        (
            "an rlock shared",
            "[True, True, False, None, None, None, True, True, None, False, True, None]",
        ),
        (
            "a wait woken through a shared rlock",
            "[False, 'True', True, None]",
        ),
        (
            "a semaphore",
            "RemoteError: TypeError: a Condition's lock must be a Lock or an RLock here \
             (a Semaphore was given)",
        ),
        (
            "an event",
            "RemoteError: TypeError: a Condition's lock must be a Lock or an RLock here \
             (a Event was given)",
        ),
        ("after", "[1, 2]"),
    ];
    ours_answer("different", &want);
}

/// Runs the cases of `group` by the newest CPython against multiproc's
/// server only: their answers must be `want`.
fn ours_answer(group: &str, want: &[(&str, &str)]) {
    let Some(got) = differential().ours_only(group, LIMIT) else {
        return;
    };
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    assert_eq!(got, want);
}

/// A client killed (SIGKILL) while it holds a Condition's lock leaves it
/// free; one killed while it waits takes no later notification; one
/// killed after it was notified, while it waits for the lock, hands its
/// notification to the next waiter. CPython's server keeps the lock held
/// and the killed waiter waiting for ever. (The README's differences say
/// so.)
#[test]
fn a_killed_client_blocks_nobody() {
    let want = [
        ("a condition its killed holder held", "[True, None]"),
        ("a shared lock its killed holder held", "[True, None]"),
        ("a killed waiter", "[0, 'True']"),
        ("a killed acquirer", "[True, True, 1, 'True']"),
        ("a killed notified waiter", "[True, 'True', 0, True, None]"),
        (
            "a killed notified waiter of a shared lock",
            "[True, 'True', 0, True, None]",
        ),
        ("after", "[1, 2]"),
    ];
    ours_answer("killed", &want);
}
