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

GROUPS = {"values": VALUES}
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
