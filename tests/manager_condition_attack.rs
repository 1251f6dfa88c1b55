//! The manager server's `Condition` under attack, against multiproc's
//! server only: many waits parked at once and notified in storms, waits
//! on one lock through two Conditions, a lock released through its own
//! proxy under a parked wait, and forged `multiproc.SharedLock` objects
//! (what the server decodes a lock's proxy to for `create('Condition',
//! lock)`) sent by hand. The server must answer every wait and serve on.
//! Without a CPython under pyenv, the tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

const KEY: &str = "manager condition attack key";

/// The program's own part, after [`PRELUDE`](common::cpython::PRELUDE).
const CASES: &str = r##"
import copyreg, pickle, re, time, types


def waiting(c):
    return int(re.search(r", (\d+)\)>$", call(c, "__repr__")).group(1))


def until_waiting(c, n):
    deadline = time.monotonic() + 60
    while waiting(c) != n and time.monotonic() < deadline:
        time.sleep(0.01)
    return waiting(c)


def parked(c, n, timeout=120):
    """n threads (each on a connection of its own) that wait on c; their
    answers, filled in as they come."""
    answers = []

    def waits():
        with c:
            answers.append(c.wait(timeout))
    threads = [threading.Thread(target=waits, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    until_waiting(c, n)
    return threads, answers


def joined(threads, *answers):
    for t in threads:
        t.join(120)
    answers = [a for some in answers for a in some]
    return [len(answers), sorted(set(map(repr, answers)))]


def storm_all(lock, n):
    c = m.Condition(lock)
    threads, answers = parked(c, n)
    with c:
        c.notify_all()
        left = waiting(c)
    return [left] + joined(threads, answers) + [waiting(c)]


def storm_one(lock, n):
    c = m.Condition(lock)
    threads, answers = parked(c, n)
    for _ in range(n):
        with c:
            c.notify()
    return joined(threads, answers) + [waiting(c)]


def huge_notify(n):
    c = m.Condition()
    threads, answers = parked(c, 3)
    with c:
        c.notify(n)
        left = waiting(c)
    with c:
        c.notify_all()
    return [left] + joined(threads, answers)


def two_conditions():
    """One lock, two Conditions: a wait on each, notified through the
    other's proxy while holding the lock through the lock's."""
    lock = m.Lock()
    a, b = m.Condition(lock), m.Condition(lock)
    ta, aa = parked(a, 2)
    tb, ab = parked(b, 2)
    with lock:
        a.notify()
        b.notify_all()
        left = [waiting(a), waiting(b)]
    with b:
        a.notify()
    return [left] + joined(ta + tb, aa, ab) + [lock.acquire(False), lock.release()]


def released_under():
    """A wait parked, the lock released through its proxy (nobody holds
    it: a Lock's release fails), then notified."""
    lock = m.Lock()
    c = m.Condition(lock)
    threads, answers = parked(c, 1)
    again = failure_of(lock.release)
    with lock:
        c.notify()
    return [again] + joined(threads, answers) + [lock.acquire(False), lock.release()]


# A module `multiproc` of one class `SharedLock`, so that pickle writes a
# `multiproc.SharedLock` object (GLOBAL, NEWOBJ) as a forger would.
multiproc = types.ModuleType("multiproc")
sys.modules["multiproc"] = multiproc


class SharedLock(object):
    def __new__(cls, *args):
        o = object.__new__(cls)
        o.args = args
        return o

    def __reduce_ex__(self, protocol):
        return (copyreg.__newobj__, (SharedLock,) + self.args)

    def __repr__(self):
        return "SharedLock%r" % (self.args,)


SharedLock.__module__ = "multiproc"
multiproc.SharedLock = SharedLock


def forged(*args):
    return failure_of(lambda: m._create("Condition", SharedLock(*args))[0].id is not None)


def kept(proxy, typeid):
    return forged(typeid, proxy._token.id)


def raw():
    from multiprocessing.connection import Client
    return Client(m._address, authkey=m._authkey)


def padded(size):
    """create('Condition', lock, pad=...) of exactly size bytes: the
    fallback decodes it (the keyword is refused) up to its limit only."""
    lock = m.Lock()
    conn = raw()
    pad = 0
    while True:
        req = pickle.dumps((None, "create", ("Condition", lock), {"p" * pad: 1}))
        if len(req) >= size:
            break
        pad += 1
    conn.send_bytes(req)
    kind, answer = conn.recv()
    conn.close()
    return [len(req), kind, str(answer).strip().splitlines()[-1][:60]]


def in_a_batch():
    """A batch's waits and acquires wait for nothing: a wait holding the
    lock answers False at once, one not holding it is refused, an acquire
    of a lock another holds answers False."""
    from multiprocessing.managers import dispatch
    lock = m.Lock()
    c = m.Condition(lock)
    ident = c._token.id
    conn = raw()
    ops = [(ident, "acquire", (), {}), (ident, "wait", (), {}), (ident, "wait", (60,), {}),
           (ident, "notify", (), {}), (ident, "release", (), {}), (ident, "wait", (), {})]
    first = failure_of(lambda: dispatch(conn, None, "_multiproc_batch", (ops,)))
    lock.acquire()
    second = failure_of(lambda: dispatch(
        conn, None, "_multiproc_batch", ([(ident, "acquire", (), {})],)))
    lock.release()
    conn.close()
    return [first, second, lock.acquire(False), lock.release()]


def forged_as_lock():
    lock = m.Lock()
    ident = lock._token.id
    made = forged("Lock", ident)
    lock.acquire()
    c_ident = m._create("Condition", SharedLock("Lock", ident))[0]
    return [made, c_ident.typeid, lock.release()]


def stored(x):
    d = m.dict()
    d["x"] = x
    q = m.Queue()
    q.put(x)
    back = [d["x"], q.get(timeout=5)]
    return [[type(v).__name__, v.args[0], v.args[1] == x.args[1]] for v in back]


ATTACK = {
    "notify_all of many": lambda: storm_all(None, 400),
    "notify_all of many over a lock": lambda: storm_all(m.Lock(), 300),
    "notify one by one": lambda: storm_one(m.RLock(), 400),
    "notify a huge n": lambda: huge_notify(10 ** 30),
    "notify inf": lambda: huge_notify(float("inf")),
    "notify nan": lambda: huge_notify(float("nan")),
    "notify True": lambda: huge_notify(True),
    "notify -10**30": lambda: huge_notify(-10 ** 30),
    "two conditions of one lock": two_conditions,
    "a lock released under a wait": released_under,
    "a forged lock of no object": lambda: forged("Lock", "ffffff"),
    "a forged lock of a dict": lambda: kept(m.dict(), "Lock"),
    "a forged lock of an event": lambda: kept(m.Event(), "Event"),
    "a forged lock of a condition": lambda: kept(m.Condition(), "Lock"),
    "at the fallback's limit": lambda: padded(4096),
    "over the fallback's limit": lambda: padded(4097),
    "waits in a batch": in_a_batch,
    "a forged lock, one argument": lambda: forged("Lock"),
    "a forged lock, ints": lambda: forged(1, 2),
    "a forged lock of a lock": forged_as_lock,
    "a forged lock stored": lambda: stored(SharedLock("Lock", m.Lock()._token.id)),
    "after": lambda: m.list([1, 2])[:],
}

run({"attack": ATTACK})
"##;

/// The whole program: [`PRELUDE`](common::cpython::PRELUDE) and [`CASES`].
static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

/// Runs the cases of `group` by the newest CPython against multiproc's
/// server only: their answers must be `want`.
fn ours_answer(group: &str, want: &[(&str, &str)]) {
    let Some(got) = Differential::of(&PROGRAM, KEY, RUN_LIMIT).ours_only(group, LIMIT) else {
        return;
    };
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    assert_eq!(got, want);
}

/// A thousand waits parked at once, woken by `notify_all` and one by one;
/// `notify(n)` of huge, infinite, NaN, bool and hugely negative `n`; two
/// Conditions of one `Lock`, each notified while the lock is held through
/// its own proxy; a `Lock` released through its proxy under a parked wait
/// (refused: the wait released it); a batch's waits (none waits); a
/// `create('Condition', lock)` request at and just over the size up to
/// which a lock's proxy is decoded (the one refused as a proxy of no known
/// kind); forged `multiproc.SharedLock` objects (NEWOBJ) naming no object,
/// another kind of object (refused naming its own typeid, not the one
/// forged), a `Lock` (as its proxy would), or malformed; one stored in a
/// dict and put in a queue (an inert object, read back as sent). Every
/// wait is answered and the server serves on.
#[test]
fn a_condition_under_attack_answers_every_wait() {
    let refused = |given: &str| {
        format!(
            "\"RemoteError: TypeError: a Condition's lock must be a Lock or an RLock here \
             (a {given} was given)\""
        )
    };
    let no_acquire = "\"RemoteError: AttributeError: 'object' object has no attribute 'acquire'\"";
    let want = [
        ("notify_all of many", "[0, 400, ['True'], 0]".to_owned()),
        (
            "notify_all of many over a lock",
            "[0, 300, ['True'], 0]".into(),
        ),
        ("notify one by one", "[400, ['True'], 0]".into()),
        ("notify a huge n", "[0, 3, ['True']]".into()),
        ("notify inf", "[0, 3, ['True']]".into()),
        ("notify nan", "[3, 3, ['True']]".into()),
        ("notify True", "[2, 3, ['True']]".into()),
        ("notify -10**30", "[3, 3, ['True']]".into()),
        (
            "two conditions of one lock",
            "[[1, 0], 4, ['True'], True, None]".into(),
        ),
        (
            "a lock released under a wait",
            "['RuntimeError: release unlocked lock', 1, ['True'], True, None]".into(),
        ),
        (
            "a forged lock of no object",
            "'RemoteError: ReferenceError: this manager has no Lock object ffffff'".into(),
        ),
        ("a forged lock of a dict", refused("dict")),
        ("a forged lock of an event", refused("Event")),
        ("a forged lock of a condition", refused("Condition")),
        (
            "at the fallback's limit",
            "[4096, '#TRACEBACK', 'TypeError: Condition.__init__() got an unexpected keyword ar']"
                .into(),
        ),
        (
            "over the fallback's limit",
            "[4097, '#TRACEBACK', 'UnpicklingError: no proxy of typeid \"Lock\" here']".into(),
        ),
        (
            "waits in a batch",
            "[[('#RETURN', True), ('#RETURN', False), ('#RETURN', False), ('#RETURN', None), \
             ('#RETURN', None), ('#ERROR', RuntimeError('cannot wait on un-acquired lock'))], \
             [('#RETURN', False)], True, None]"
                .into(),
        ),
        ("a forged lock, one argument", no_acquire.into()),
        ("a forged lock, ints", no_acquire.into()),
        (
            "a forged lock of a lock",
            "[True, 'Condition', None]".into(),
        ),
        (
            "a forged lock stored",
            "[['SharedLock', 'Lock', True], ['SharedLock', 'Lock', True]]".into(),
        ),
        ("after", "[1, 2]".into()),
    ];
    let want: Vec<(&str, &str)> = want.iter().map(|(n, a)| (*n, a.as_str())).collect();
    ours_answer("attack", &want);
}
