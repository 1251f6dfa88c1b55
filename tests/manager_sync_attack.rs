//! The manager server's `Value`, `Array`, `Semaphore`, `Lock`, `RLock`
//! and `Barrier` under attack, by a careless or hostile Python client:
//! counts past 64 and 127 bits, the text of large values, a client killed
//! while its barrier `wait` has a timeout, and arrays larger than a request
//! may take. Where CPython's server answers, ours must answer the same
//! (for CPython 3.8 and 3.13); where it would take memory past the
//! server's limits, ours refuses with a `MemoryError` and serves on.
//! Without either CPython under pyenv, the tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const KEY: &str = "manager sync attack key";

/// The program's own part, after
/// [`PRELUDE`](common::cpython::PRELUDE): its helpers and its cases, in
/// groups named by `argv[3]`.
const CASES: &str = r##"
import os, re, signal, threading, time


def released(s, n):
    # Python 3.8's release takes no n.
    return failure_of(lambda: call(s, "release", (n,))) if NEW else "-"


COUNTS = {
    "a release of a huge n": lambda: (lambda s: [released(s, 2 ** 70), s.acquire(False)])(
        m.Semaphore(0)),
    "a release of a huge negative n": lambda: released(m.Semaphore(0), -2 ** 200),
    "a bounded semaphore's release past 127 bits": lambda: released(
        m.BoundedSemaphore(0), 2 ** 200),
    "a bounded semaphore full at the top": lambda: failure_of(
        m.BoundedSemaphore(2 ** 127 - 1).release),
    "a bounded semaphore taken at the top": lambda: (lambda s: [
        s.acquire(), released(s, 2), s.release(),
        s.acquire(False)])(m.BoundedSemaphore(2 ** 127 - 1)),
    "a semaphore's initial value past 127 bits, negative": lambda: failure_of(
        lambda: m.Semaphore(-10 ** 40)),
    "float items of ints near 2**1024": lambda: [
        failure_of(lambda: m.Array("d", [v])[0]) for v in (
            2 ** 1023, -2 ** 1023, 2 ** 1024 - 2 ** 971, -(2 ** 1024 - 2 ** 971),
            2 ** 1024 - 2 ** 970, 2 ** 1024 - 1, -2 ** 1024, 2 ** 1000 + 1)],
    "parties past 64 bits": lambda: (lambda b: [b.parties, masked(str(b)) if NEW else "-"])(
        m.Barrier(2 ** 64)),
    "parties True": lambda: (lambda b: [b.parties, b.wait()])(m.Barrier(True)),
    "a barrier's attribute of wrong arguments": lambda: (lambda b: [
        failure_of(lambda: call(b, "__getattribute__", ("parties", "x"))),
        failure_of(lambda: call(b, "__getattribute__")),
        failure_of(lambda: call(b, "__getattribute__", ("parties",), {"x": 1}))])(m.Barrier(2)),
    "an rlock of arguments": lambda: m._create("RLock", 1, x=2)[0].typeid,
    "a lock of arguments": lambda: [failure_of(lambda: m._create("Lock", 1)),
                                    failure_of(lambda: m._create("Lock", x=1))],
    "after": lambda: m.list([1, 2])[:],
}

TIMEOUTS = {
    # Added to the clock first (a float), then compared with 0.
    "a semaphore's timeout of a huge negative int": lambda: failure_of(
        lambda: m.Semaphore(0).acquire(True, -10 ** 400)),
    "a semaphore's timeout of -2**1023 - 1": lambda: m.Semaphore(0).acquire(True, -2 ** 1023 - 1),
    "a barrier's timeout of -2**1023 - 1": lambda: failure_of(lambda: m.Barrier(2).wait(-2 ** 1023 - 1)),
    "a semaphore's complex timeout": lambda: failure_of(lambda: m.Semaphore(0).acquire(True, 1j)),
    "a semaphore's complex timeout, free": lambda: m.Semaphore(1).acquire(True, 1j),
    "a barrier's complex timeout": lambda: (lambda b: [failure_of(lambda: b.wait(1j)), b.broken])(
        m.Barrier(2)),
    "a barrier's complex default timeout": lambda: failure_of(m.Barrier(2, None, 1j).wait),
    "after": lambda: m.list([1, 2])[:],
}

STRS = {
    "an array of 100 ints": lambda: str(m.Array("i", range(100))),
    "an array of floats": lambda: str(m.Array("d", [0.1 * i for i in range(60)])),
    "an array of 300 characters": lambda: str(m.Array("u", "xy'" * 100)),
    # Python 3.13's typecode of 4-byte characters.
    "a w array": lambda: [str(m.Array("w", "ab\u1234")), m.Array("w", "xyz")[1:],
                          m.Array("w", b"a\0\0\0")._getvalue(), failure_of(lambda: m.Array("w", [1]))]
        if sys.version_info >= (3, 13) else "-",
    "a value of a long list": lambda: str(m.Value("O", list(range(100)))),
    "a value of a long str": lambda: str(m.Value("c", "z" * 300)),
    "after": lambda: m.list([1, 2])[:],
}


def other_party_of_a_killed_waiter(parties, timeout):
    """A child client waits on a barrier with `timeout` and is killed
    (SIGKILL) while it waits; this client's own wait, with no timeout, is
    broken when the dead one's timeout passes (CPython's server thread
    waits on for the dead client): its answer, whether it came within 0.7 s
    of that timeout, and the barrier's state after."""
    b = m.Barrier(parties)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            b._connect()
            os.write(w, b"x")
            b.wait(timeout)
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 1)
    sent = time.monotonic()
    os.close(r)
    deadline = sent + 30
    while b.n_waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    out = []
    t = threading.Thread(target=lambda: out.append(failure_of(b.wait)), daemon=True)
    t.start()
    t.join(timeout + 10)
    in_time = time.monotonic() - sent < timeout + 0.7
    return [out[0] if out else "still waiting", in_time, b.n_waiting, b.broken]


KILLED = {
    "a killed party's timeout breaks the barrier": lambda: other_party_of_a_killed_waiter(2 + 1, 1.0),
    "after": lambda: m.list([1, 2])[:],
}

# Past a request's memory: an int item takes 16 bytes on the server.
LARGE = 12 << 20
# Within a request's memory, its copies not.
BIG = 5 << 20


def big_array():
    a = m.Array("b", bytes(BIG))
    return [len(a), a[BIG - 3:], failure_of(lambda: a[:]), failure_of(lambda: a[::-1]),
            failure_of(a._getvalue), a[1:3], call(a, "__getitem__", (slice(None, None, 2 ** 62),))]


LIMITS = {
    "an array too large for a request": lambda: failure_of(lambda: m.Array("b", bytes(LARGE))),
    "a big array's slices and copy": big_array,
    "arrays of a million items": lambda: [len(m.Array("i", list(range(10 ** 6)))),
                                         len(m.Array("b", [0] * 10 ** 6)[:]),
                                         len(m.Array("d", [0.5] * 10 ** 6)._getvalue())],
    "a semaphore's count past 127 bits": lambda: failure_of(m.Semaphore(2 ** 127 - 1).release),
    "after": lambda: m.list([1, 2])[:],
}

GROUPS = {"counts": COUNTS, "timeouts": TIMEOUTS, "strs": STRS, "killed": KILLED, "limits": LIMITS}
run(GROUPS)
"##;

/// The whole program: [`PRELUDE`](common::cpython::PRELUDE) and [`CASES`].
static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

/// The cases of `group`, against both servers (see
/// [`Differential::same_answers_in`]).
fn same_answers(group: &str) {
    Differential::of(&PROGRAM, KEY, RUN_LIMIT).same_answers_in(group, LIMIT);
}

/// A `Semaphore`'s `release(n)` of an int past 64 bits (taken, as
/// Python's), past 127 bits or negative, and its initial value negative
/// past 127 bits (`ValueError`); a `BoundedSemaphore` at the top of
/// what the server counts, released past it (`ValueError`, not a failed
/// request); a `Barrier`'s `parties` past 64 bits or `True`, answered as
/// given; a `d` array's items of ints near 2**1024 (a float up to where
/// they round past it); a `Barrier`'s `__getattribute__` of wrong
/// arguments (a slot wrapper's words); an `RLock` made of arguments (which Python
/// ignores), and a `Lock`'s refusal of them in Python's words.
#[test]
fn counts_past_64_bits_answer_as_cpythons() {
    same_answers("counts");
}

/// A `Semaphore`'s `acquire` and a `Barrier`'s `wait` whose timeout must
/// be waited add it to the clock before they compare it: a negative int
/// past a float's range is an `OverflowError` (one just within it is not),
/// a complex fails the comparison.
#[test]
fn timeouts_added_to_the_clock_answer_as_cpythons() {
    same_answers("timeouts");
}

/// `str()` of an `Array` and of a `Value` is their whole `repr`, however
/// long, as CPython's (not cut short as in an error message); and Python
/// 3.13's `w` arrays (of 4-byte characters) are made, read and copied.
#[test]
fn strs_are_whole_as_cpythons() {
    same_answers("strs");
}

/// A client killed while its barrier `wait` with a timeout waits: the
/// timeout still breaks the barrier for the other parties, at once (as
/// CPython's server thread, which waits on for the dead client, does),
/// rather than leave them waiting for ever.
#[test]
fn a_killed_partys_timeout_breaks_the_barrier_as_cpythons() {
    same_answers("killed");
}

/// An `Array` whose items would take more than a request's memory on the
/// server is refused with `MemoryError`, and so are a slice or a copy of a
/// big one that would (CPython's server makes them, in less memory: the
/// README's differences say so); a semaphore counted past 127 bits is an
/// `OverflowError`; the server serves on.
#[test]
fn what_would_take_too_much_is_refused() {
    let Some(got) = Differential::of(&PROGRAM, KEY, RUN_LIMIT).ours_only("limits", LIMIT) else {
        return;
    };
    let got: Vec<(&str, &str)> = got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    let too_much = "MemoryError: the value would take more memory than one request may; \
                    send less at a time";
    let too_large = "MemoryError: the answer would exceed the frame limit; ask for less at a time";
    let big = format!(
        "[5242880, array('b', [0, 0, 0]), '{too_large}', '{too_large}', '{too_large}', \
         array('b', [0, 0]), array('b', [0])]"
    );
    let want = [
        (
            "an array too large for a request",
            format!("'RemoteError: {too_much}'"),
        ),
        ("a big array's slices and copy", big),
        (
            "arrays of a million items",
            "[1000000, 1000000, 1000000]".into(),
        ),
        (
            "a semaphore's count past 127 bits",
            "'OverflowError: the manager counts a semaphore in at most 127 bits'".into(),
        ),
        ("after", "[1, 2]".into()),
    ];
    let want: Vec<(&str, &str)> = want.iter().map(|(n, a)| (*n, a.as_str())).collect();
    assert_eq!(got, want);
}
