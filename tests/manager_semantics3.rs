//! The manager server's creation paths and argument checks, against
//! CPython's: one Python program runs against CPython's own manager server
//! (the reference, of the same Python) and against multiproc's, and must
//! print the same answers from both, for CPython 3.8 and 3.13 (as
//! tests/manager_semantics2.rs does for the methods). Its cases create
//! every typeid the server serves (`dict`, `list`, `Namespace`, `Queue`,
//! `JoinableQueue`) with odd arguments: too many positional ones, unknown
//! keywords, wrong types, ints past 64 bits; and call a dict's `__iter__`
//! and the queues' methods with arguments they do not take. On Python
//! before 3.10 an exception is compared by its type only (the server
//! answers in 3.10+'s words). Without either CPython under pyenv, the
//! tests say so and pass.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::cpython::{with_prelude, Differential};

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const KEY: &str = "manager semantics 3 key";

/// The program's own part, after
/// [`PRELUDE`](common::cpython::PRELUDE): its helpers and its cases, in
/// groups named by `argv[3]`.
const CASES: &str = r##"
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
            out.append(("raised", failure(e)))
    return out


def use(q):
    """What a queue made of odd arguments does."""
    return each(q, lambda q: q.qsize(), lambda q: q.empty(), lambda q: q.full(),
                lambda q: q.put(1), lambda q: q.put_nowait(2), lambda q: q.put(3, True, 0.01),
                lambda q: q.qsize(), lambda q: q.get_nowait(), lambda q: q.get(timeout=0.01))


def made(typeid, *args, **kwds):
    """What create(typeid, ...) exposes (its ident differs)."""
    ident, exposed = m._create(typeid, *args, **kwds)
    return sorted(exposed or ())


CREATE = {
    "dict of an int": lambda: m.dict(1).copy(),
    "dict of None": lambda: m.dict(None).copy(),
    "dict of 2**70": lambda: m.dict(2 ** 70).copy(),
    "dict of two": lambda: m.dict({1: 2}, {3: 4}).copy(),
    "dict of a list of ints": lambda: m.dict([1]).copy(),
    "dict of str pairs": lambda: m.dict(["ab"]).copy(),
    "dict of a keyword not an identifier": lambda: m.dict(**{"1 x": 2}).copy(),
    "dict of a dict and keywords": lambda: m.dict({"a": 1}, b=2, a=3).copy(),
    "list of two": lambda: m.list(1, 2)[:],
    "list of three": lambda: m.list(1, 2, 3)[:],
    "list of a keyword": lambda: m.list(x=1)[:],
    "list of one and a keyword": lambda: m.list([1], x=1)[:],
    "list of None": lambda: m.list(None)[:],
    "list of 2**70": lambda: m.list(2 ** 70)[:],
    "list of a float": lambda: m.list(1.5)[:],
    "list of a tuple": lambda: m.list((1, (2,)))[:],
    "list of a set": lambda: m.list({3})[:],
    "Namespace of one": lambda: str(m.Namespace(1)),
    "Namespace of two": lambda: str(m.Namespace(1, 2)),
    "Namespace of one and a keyword": lambda: str(m.Namespace(1, a=2)),
    "Namespace of None": lambda: str(m.Namespace(None)),
    "Namespace of a keyword not an identifier": lambda: str(m.Namespace(**{"1 x": 2})),
    "Namespace of 2**70": lambda: str(m.Namespace(a=2 ** 70)),
    # The typeids a client has no method for.
    "Iterator of none": lambda: made("Iterator"),
    "Iterator of two": lambda: made("Iterator", 1, 2),
    "Iterator of a keyword": lambda: made("Iterator", x=1),
    "an unknown typeid": lambda: made("Nope"),
    "an unknown typeid of arguments": lambda: made("Nope", 1, x=2),
}
for typeid in ("Queue", "JoinableQueue"):
    make = getattr(m, typeid)
    CREATE.update({
        typeid + " of None": lambda make=make: use(make(None)),
        typeid + " of a str": lambda make=make: use(make("x")),
        typeid + " of a list": lambda make=make: use(make([1])),
        typeid + " of a complex": lambda make=make: use(make(1j)),
        typeid + " of maxsize=None": lambda make=make: use(make(maxsize=None)),
        typeid + " of 2**70": lambda make=make: use(make(2 ** 70)),
        typeid + " of -2**70": lambda make=make: use(make(-2 ** 70)),
        typeid + " of 1": lambda make=make: use(make(1)),
        typeid + " of True": lambda make=make: use(make(True)),
        typeid + " of 0.5": lambda make=make: use(make(0.5)),
        typeid + " of nan": lambda make=make: use(make(float("nan"))),
        typeid + " of -inf": lambda make=make: use(make(float("-inf"))),
        typeid + " of a list proxy": lambda make=make: use(make(m.list())),
        typeid + " of a class": lambda make=make: use(make(int)),
        typeid + " of a range": lambda make=make: use(make(range(3))),
        typeid + " of a bytes": lambda make=make: use(make(b"")),
        typeid + " of a tuple": lambda make=make: use(make(())),
        typeid + " of two": lambda make=make: use(make(1, 2)),
        typeid + " of a keyword": lambda make=make: use(make(x=1)),
        typeid + " of one and maxsize=": lambda make=make: use(make(1, maxsize=2)),
        typeid + " of two and a keyword": lambda make=make: use(make(1, 2, x=1)),
        typeid + " of None, task_done join": lambda make=make: each(
            make(None), lambda q: q.join(), lambda q: q.task_done()),
    })

ARGUMENTS = {
    "__iter__ of one": lambda: call(m.dict({1: 2}), "__iter__", (1,)),
    "__iter__ of two": lambda: call(m.dict({1: 2}), "__iter__", (1, 2)),
    "__iter__ of a keyword": lambda: call(m.dict({1: 2}), "__iter__", (), {"x": 1}),
    "__iter__ of one and a keyword": lambda: call(m.dict({1: 2}), "__iter__", (1,), {"x": 1}),
    "empty of one and a keyword": lambda: call(m.Queue(), "empty", (1,), {"x": 1}),
    "empty of a keyword": lambda: call(m.Queue(), "empty", (), {"x": 1}),
    "empty of one": lambda: call(m.Queue(), "empty", (1,)),
    "get of three and block=": lambda: call(m.Queue(), "get", (1, 2, 3), {"block": False}),
    "get of one and block=": lambda: call(m.Queue(), "get", (1,), {"block": False}),
    "get of two and timeout=": lambda: call(m.Queue(), "get", (1, 2), {"timeout": 1}),
    "get of three and an unknown keyword": lambda: call(m.Queue(), "get", (1, 2, 3), {"x": 1}),
    "put of four and item=": lambda: call(m.Queue(), "put", (1, 2, 3, 4), {"item": 1}),
    "put of none": lambda: call(m.Queue(), "put"),
    "put of block= only": lambda: call(m.Queue(), "put", (), {"block": False}),
    "put_nowait of two": lambda: call(m.Queue(), "put_nowait", (1, 2)),
    "put_nowait of one and item=": lambda: call(m.Queue(), "put_nowait", (1,), {"item": 1}),
    "qsize of a keyword and two": lambda: call(m.Queue(), "qsize", (1, 2), {"y": 1}),
    "task_done of one": lambda: call(m.JoinableQueue(), "task_done", (1,)),
    "join of a keyword": lambda: call(m.JoinableQueue(), "join", (), {"timeout": 1}),
}

# Different on purpose (see the README's differences): asked of ours only.
REFUSED = {
    "Queue of a Decimal": lambda: use(m.Queue(__import__("decimal").Decimal(2))),
    "JoinableQueue of a Fraction": lambda: use(m.JoinableQueue(__import__("fractions").Fraction(1, 2))),
}

GROUPS = {"create": CREATE, "arguments": ARGUMENTS, "refused": REFUSED}
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

/// Among them: `Namespace(1)` is refused in CPython's words
/// (`Namespace.__init__() takes 1 positional argument but 2 were given`;
/// it was `Namespace() takes no positional arguments`), and a queue whose
/// `maxsize` Python cannot compare with an int (`None`, a str) is made, its
/// `put` and `full` raising the comparison's `TypeError` (it was refused
/// when created); `Queue(1, 2, x=1)` names the keyword first.
#[test]
fn creating_each_typeid_with_odd_arguments_answers_as_cpythons() {
    same_answers("create");
}

/// Among them: a dict's `__iter__(1)` says `expected 0 arguments, got 1`
/// and `__iter__(x=1)` `wrapper __iter__() takes no keyword arguments`
/// (both said `expected 0 arguments`), and a queue method names an
/// unknown or repeated keyword before too many positional arguments, as
/// Python binds them (`get(1, 2, 3, block=False)`: `got multiple values
/// for argument 'block'`).
#[test]
fn arguments_a_method_does_not_take_are_refused_as_cpythons() {
    same_answers("arguments");
}

/// A queue's `maxsize` of a class the server cannot compare with an int
/// (`Decimal`, `Fraction`) is refused when the queue is made, with a
/// message that says why (as the README's differences say), and the
/// server serves on.
#[test]
fn a_maxsize_the_server_cannot_compare_is_refused_when_created() {
    let Some(got) = differential().ours_only("refused", LIMIT) else {
        return;
    };
    assert_eq!(got.len(), 2);
    for ((name, answer), type_name) in got.iter().zip(["Decimal", "Fraction"]) {
        assert_eq!(
            answer,
            &format!(
                "RemoteError: TypeError: the server cannot compare a maxsize \
                 of type '{type_name}' with an int"
            ),
            "{name}"
        );
    }
}
