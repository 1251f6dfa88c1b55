//! The manager server's `Value` typeid against CPython's: one Python
//! program runs against CPython's own manager server (the reference, of
//! the same Python) and against multiproc's, and must print the same
//! answers from both, for CPython 3.8 and 3.13. Without either CPython
//! under pyenv, the tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{oldest_and_newest, with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const KEY: &str = "manager sync types key";

/// The program's own part, after
/// [`PRELUDE`](common::cpython::PRELUDE): its helpers and its cases, in
/// groups named by `argv[3]`.
const CASES: &str = r##"
import re


def call(p, method, args=(), kwds={}):
    return p._callmethod(method, args, kwds)


def masked(s):
    # An object's address differs from server to server.
    return re.sub(r"0x[0-9a-f]+", "0x…", s)


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

GROUPS = {"values": VALUES, "arrays": ARRAYS}
run(GROUPS)
"##;

/// The whole program: [`PRELUDE`](common::cpython::PRELUDE) and [`CASES`].
static PROGRAM: LazyLock<String> = LazyLock::new(|| with_prelude(CASES));

/// The program, against both servers.
fn differential() -> Differential {
    Differential {
        program: &PROGRAM,
        key: KEY,
        run_limit: RUN_LIMIT,
    }
}

/// Runs the cases of `group` against CPython's server and multiproc's,
/// with CPython 3.8 and 3.13 as clients, and fails listing every case
/// whose answers differ.
fn same_answers(group: &str) {
    differential().same_answers(group, &oldest_and_newest(), &[group], LIMIT);
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
