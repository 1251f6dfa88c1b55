//! The manager server's value model against Python's: one Python program
//! runs against CPython's own manager server (the reference, of the same
//! Python) and against multiproc's, and prints the same answers from both.
//! Its cases are where the two servers compare values (`in`, `count`,
//! `index`, `remove`, `sort`, dict keys): mixed numbers, NaN, big ints,
//! bytes and bytearray, sets, nested containers, dict order, and the
//! standard library's `OrderedDict`, `Counter`, `deque`, `defaultdict` and
//! `datetime` values. What stays different is in the README's differences
//! section, and not asked here. Every CPython 3.8+ under pyenv runs it;
//! without one, the test says so and passes.

mod common;

use std::time::Duration;

use common::cpython::{pyenv_pythons, Differential};

/// The longest the whole test may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

const KEY: &str = "manager semantics key";

/// The program: connects to the server at `argv[1]` with key `argv[2]`
/// and prints one `name: answer` line per case (an exception as its type
/// and message).
const PROGRAM: &str = r#"
import sys
import datetime as dt
from collections import Counter, OrderedDict, defaultdict, deque
from multiprocessing.managers import SyncManager

m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
nan = float("nan")
utc = dt.timezone.utc
plus1 = dt.timezone(dt.timedelta(hours=1))
NEW = sys.version_info >= (3, 10)   # Counter's own ==, <, <=


def L(*items):
    return m.list(list(items))


def D(d=None):
    return m.dict(d or {})


def sort(*items, **kwds):
    l = L(*items)
    l.sort(**kwds)
    return l[:]


def removed(l, x):
    l.remove(x)
    return l[:]


def setitems(d, *pairs):
    for k, v in pairs:
        d[k] = v
    return d.copy()


def updated(d, *args):
    try:
        d.update(*args)
    except Exception as e:
        return (type(e).__name__, d.copy())
    return d.copy()


def extended(l, items):
    l.extend(items)
    return l[:]


def shuffled_keys(d):
    del d["a"]
    d["a"] = 9
    d[1.0] = "one"
    return (d.keys(), list(d), d.popitem())


CASES = {
    # OrderedDict: == a dict whatever the order, == another in order only.
    "od in list of dict": lambda: OrderedDict(a=1, b=2) in L({"b": 2, "a": 1}),
    "dict in list of od": lambda: {"b": 2, "a": 1} in L(OrderedDict(a=1, b=2)),
    "od count od reordered": lambda: L(OrderedDict(a=1, b=2)).count(OrderedDict(b=2, a=1)),
    "od count od": lambda: L(OrderedDict(a=1, b=2)).count(OrderedDict(a=1, b=2)),
    "od index dict": lambda: L(1, OrderedDict(a=1)).index({"a": 1}),
    "od remove dict": lambda: removed(L(OrderedDict(a=1), 2), {"a": 1}),
    "od values by value": lambda: L(OrderedDict(a=1.0), OrderedDict(a=True)).count({"a": 1}),
    "od count dd": lambda: L(OrderedDict(a=1, b=2)).count(defaultdict(int, b=2, a=1)),
    "od count counter": lambda: L(OrderedDict(a=1, b=2)).count(Counter(b=2, a=1)),
    "od sort": lambda: sort(OrderedDict(), OrderedDict()),
    # Counter.
    "counter count counter": lambda: L(Counter(a=1)).count(Counter(a=1)),
    "counter count dict": lambda: L(Counter(a=1)).count({"a": 1}),
    "dict count counter": lambda: L({"a": 1}).count(Counter(a=1)),
    "counter zero count dict": lambda: L(Counter(a=1, b=0)).count({"a": 1}),
    "counter count od": lambda: L(Counter(a=1)).count(OrderedDict(a=1)),
    "counter sort dict": lambda: sort(Counter(a=2), {"a": 1}),
    "counter negative": lambda: L(Counter(a=-1)).count(Counter(a=-1)),
    # deque: == another deque by items, never a list or tuple.
    "deque count deque": lambda: L(deque([1, 2])).count(deque([1, 2])),
    "deque maxlen": lambda: L(deque([1, 2], maxlen=3)).count(deque([1.0, 2])),
    "deque count list": lambda: L(deque([1, 2])).count([1, 2]),
    "list in deques": lambda: [1, 2] in L(deque([1, 2])),
    "tuple count deque": lambda: L((1, 2)).count(deque([1, 2])),
    "deque sort": lambda: sort(deque([2]), deque([1]), deque([1, 0])),
    "deque sort nested": lambda: sort(deque([[2]]), deque([[1, "a"]])),
    "deque sort list": lambda: sort(deque([2]), [1]),
    "deques in list": lambda: [deque([1])] in L([deque([1.0])]),
    # defaultdict: == a dict by items, whatever its factory.
    "dd count dict": lambda: L(defaultdict(int, a=1)).count({"a": 1}),
    "dict in dds": lambda: {"a": 1} in L(defaultdict(list, a=1)),
    "dd count dd": lambda: L(defaultdict(int, a=1)).count(defaultdict(list, a=1)),
    "dd count od": lambda: L(defaultdict(int, a=1, b=2)).count(OrderedDict(b=2, a=1)),
    "dd sort": lambda: sort(defaultdict(), defaultdict()),
    # None of them is a key.
    "od key": lambda: D().__setitem__(OrderedDict(a=1), 1),
    "od in dict": lambda: OrderedDict() in D(),
    "counter key": lambda: D().__setitem__(Counter(a=1), 1),
    "counter in dict": lambda: Counter() in D(),
    "deque key": lambda: D().__setitem__(deque(), 1),
    "dd key": lambda: D().__setitem__(defaultdict(int), 1),
    "od in tuple key": lambda: D().__setitem__((1, OrderedDict()), 1),
    "deque in tuple key": lambda: D().__setitem__((deque(),), 1),
    "bytearray key": lambda: D().__setitem__(bytearray(b"x"), 1),
    "bytearray in tuple key": lambda: D().__setitem__((bytearray(),), 1),
    "setdefault od": lambda: D().setdefault(OrderedDict(), 1),
    "get deque": lambda: D().get(deque()),
    "getitem od": lambda: D()[OrderedDict()],
    "del dd": lambda: D().__delitem__(defaultdict()),
    "pop counter from empty": lambda: D().pop(Counter(), 5),
    "pop counter": lambda: D({1: 2}).pop(Counter(), 5),
    "update stops at od": lambda: updated(D(), [(1, 2), (OrderedDict(), 3), (4, 5)]),
    # They are iterables.
    "list of deque": lambda: m.list(deque([1, 2]))[:],
    "list of od": lambda: m.list(OrderedDict(a=1, b=2))[:],
    "list of counter": lambda: m.list(Counter("abca"))[:],
    "list of dd": lambda: m.list(defaultdict(int, x=1))[:],
    "dict of od": lambda: m.dict(OrderedDict(b=1, a=2)).copy(),
    "dict of counter": lambda: m.dict(Counter("abca")).copy(),
    "dict of dd": lambda: m.dict(defaultdict(int, x=1)).copy(),
    "dict of deque of pairs": lambda: m.dict(deque([(1, 2)])).copy(),
    "update od": lambda: updated(D({"a": 0}), OrderedDict(z=1)),
    "update counter": lambda: updated(D({"a": 0}), Counter("zz")),
    "extend deque": lambda: extended(L(1), deque([3])),
    "extend od": lambda: extended(L(1), OrderedDict(k=3)),
    "iadd deque": lambda: (lambda l: (l.__iadd__(deque([3])), l[:])[-1])(L(1)),
    "add deque": lambda: L(1) + deque([2]),
    "setitem slice deque": lambda: (lambda l: (l.__setitem__(slice(0, 1), deque([7])), l[:])[-1])(L(1, 2)),
    # datetime: ordered, == by value (an aware one by its instant).
    "date sort": lambda: sort(dt.date(2020, 1, 2), dt.date(2019, 12, 31), dt.date(2020, 1, 1)),
    "datetime sort": lambda: sort(dt.datetime(2020, 1, 2, 3), dt.datetime(2020, 1, 2, 2, 59, 59, 999999), dt.datetime(1, 1, 1)),
    "datetime fold": lambda: L(dt.datetime(2020, 1, 2, 3, fold=1)).count(dt.datetime(2020, 1, 2, 3)),
    "datetime fold key": lambda: setitems(D(), (dt.datetime(2020, 1, 2, 3, fold=1), 1), (dt.datetime(2020, 1, 2, 3), 2)),
    "aware count": lambda: L(dt.datetime(2020, 1, 2, 3, tzinfo=utc)).count(dt.datetime(2020, 1, 2, 4, tzinfo=plus1)),
    "aware key": lambda: len(setitems(D(), (dt.datetime(2020, 1, 2, 3, tzinfo=utc), 1), (dt.datetime(2020, 1, 2, 4, tzinfo=plus1), 2))),
    "aware sort": lambda: sort(dt.datetime(2020, 1, 2, 3, 30, tzinfo=plus1), dt.datetime(2020, 1, 2, 3, tzinfo=utc)),
    "naive aware count": lambda: L(dt.datetime(2020, 1, 2, 3)).count(dt.datetime(2020, 1, 2, 3, tzinfo=utc)),
    "naive aware sort": lambda: sort(dt.datetime(2020, 1, 2, 3), dt.datetime(2020, 1, 2, 3, tzinfo=utc)),
    "date datetime count": lambda: L(dt.date(2020, 1, 2)).count(dt.datetime(2020, 1, 2)),
    "time sort": lambda: sort(dt.time(3), dt.time(1, 59), dt.time(1, 59, fold=1), dt.time(0, 0, 0, 1)),
    "aware time sort": lambda: sort(dt.time(1, tzinfo=utc), dt.time(0, tzinfo=utc)),
    "naive aware time sort": lambda: sort(dt.time(1, tzinfo=utc), dt.time(0)),
    "timedelta sort": lambda: sort(dt.timedelta(days=-1), dt.timedelta(seconds=5), dt.timedelta(0), dt.timedelta(microseconds=-1)),
    "timedelta count": lambda: L(dt.timedelta(hours=24)).count(dt.timedelta(days=1)),
    "timedelta int sort": lambda: sort(dt.timedelta(1), 1),
    "timezone count": lambda: L(dt.timezone(dt.timedelta(hours=1))).count(dt.timezone(dt.timedelta(seconds=3600))),
    # Numbers: 1 == 1.0 == True, -0.0 == 0, exact int/float comparison.
    "one key": lambda: setitems(D(), (1, "a"), (1.0, "b"), (True, "c")),
    "zero key": lambda: setitems(D(), (-0.0, "a"), (0, "b")),
    "2**64 key": lambda: setitems(D(), (2 ** 64, 1), (float(2 ** 64), 2)),
    "2**63 keys": lambda: setitems(D(), (2 ** 63, "i"), (2.0 ** 63, "f"), (-(2 ** 63), "n"), (-(2.0 ** 63), "g")),
    "2**64+1 in floats": lambda: (2 ** 64 + 1) in L(float(2 ** 64)),
    "float in big ints": lambda: float(2 ** 64) in L(2 ** 64),
    "2**1000": lambda: L(2 ** 1000).count(float(2 ** 1000)),
    "1e308": lambda: L(1e308).count(int(1e308)),
    "10**400 inf": lambda: D({10 ** 400: 1}).get(float("inf")),
    "count 1": lambda: L("1", 1, 1.0, True, 1 + 0j, 1 + 1j).count(1),
    "count 0": lambda: L(0, False, 0.0, -0.0, None, "").count(0),
    "index True": lambda: L(0, 1).index(True),
    "remove 1.0": lambda: removed(L("1", True, 1), 1.0),
    "index -0.0": lambda: L("x", 0).index(-0.0),
    "complex key": lambda: setitems(D(), (1, "i"), (1 + 0j, "c"), (2 + 0j, "c2"), (2.0, "f")),
    "sort numbers": lambda: sort(2 ** 64, 1.5, -(2 ** 70), 2 ** 53 + 1, 2.0 ** 53, float("inf"), True, -(2.0 ** 63), -(2 ** 63) - 1),
    "sort stable": lambda: sort(1, True, 1.0, 0, False, 0.0),
    "sort reverse stable": lambda: sort(1, True, 1.0, 0, False, 0.0, reverse=True),
    "sort infinities": lambda: sort(float("inf"), 2 ** 70, -(2 ** 70), float("-inf")),
    # NaN equals nothing, not even itself decoded twice.
    "nan keys": lambda: (lambda d: (setitems(d, (nan, 1), (nan, 2)) and None, len(d), nan in d))(D()),
    "nan in list": lambda: nan in L(nan),
    "nan count": lambda: L(nan, nan).count(nan),
    "nan index": lambda: L(1, nan).index(nan),
    "nan remove": lambda: L(nan).remove(nan),
    "nan tuple": lambda: (nan,) in L((nan,)),
    "nan nested": lambda: L([1, [nan]]).count([1, [nan]]),
    "nan dict value": lambda: L({"a": nan}).count({"a": nan}),
    "one nan twice": lambda: (lambda x: L([x]).count([x]))(nan),
    "sort one nan": lambda: sort(nan),
    # bytes, bytearray, sets, nesting.
    "bytearray in bytes": lambda: bytearray(b"ab") in L(b"ab"),
    "bytes count bytearray": lambda: L(bytearray(b"ab")).count(b"ab"),
    "sort bytearray bytes": lambda: sort(bytearray(b"b"), b"a"),
    "sort bytes": lambda: sort(b"b", b"a\x00", b"a", b"\xff"),
    "bytes str keys": lambda: len(setitems(D(), (b"a", 1), ("a", 2))),
    "frozenset in sets": lambda: frozenset({1, 2}) in L({2, 1}),
    "frozenset key": lambda: setitems(D(), (frozenset({1}), 1), (frozenset({1.0}), 2)),
    "frozenset of tuples key": lambda: D({frozenset({(1, 2)}): 1})[frozenset({(1.0, 2)})],
    "sets in sets": lambda: L({frozenset({1})}).count({frozenset({True})}),
    "sort sets subset": lambda: sort(frozenset({1, 2}), {1}),
    "nested": lambda: L([1, {"a": (1, 2.0)}]).count([True, {"a": (1.0, 2)}]),
    "nested dict in tuple": lambda: L(({"a": [1]},)).count(({"a": [1.0]},)),
    "remove nested": lambda: removed(L([1.0, (2.0,)], 3), [1, (2,)]),
    "tuple key": lambda: D({(1, 2): 1})[(1.0, 2.0)],
    "range": lambda: range(0) in L(range(3, 3)),
    "range list": lambda: [0, 1] in L(range(2)),
    "complex in": lambda: 1 in L(1 + 0j),
    # What Python refuses to sort.
    "sort int str": lambda: sort(1, "a"),
    "sort none bool": lambda: sort(1, 2.5, True, None),
    "sort tuples": lambda: sort((1, "a"), (1, 2)),
    "sort dicts": lambda: sort({}, {}),
    "sort one dict": lambda: sort({}),
    "sort nones": lambda: sort(None, None),
    "sort complex": lambda: sort(1j, 2j),
    "sort bytes str": lambda: sort(b"a", "a"),
    "sort lists": lambda: sort([1, 2], [1], [0, "a"], []),
    "sort tuple list": lambda: sort((1,), [1]),
    "sort slices": lambda: sort(slice(2), slice(1)),
    "sort ranges": lambda: sort(range(2), range(1)),
    # Misses and their messages.
    "index missing": lambda: L(1).index(2),
    "index missing str": lambda: L(1).index("x"),
    "remove missing": lambda: L(1).remove(2),
    "index from": lambda: L(1, 2, 1, 2).index(2, 2),
    "index negative": lambda: L(1, 2, 1, 2).index(1, -2),
    "index big stop": lambda: L(1, 2, 1, 2).index(2, 0, 2 ** 70),
    "index big start": lambda: L(1).index(1, -(2 ** 70)),
    "pop missing": lambda: D().pop("k"),
    "pop missing tuple": lambda: D().pop((1, 2)),
    "getitem missing": lambda: D()[(1,)],
    "popitem empty": lambda: D().popitem(),
    # Dict order.
    "order": lambda: shuffled_keys(D({"a": 1, "b": 2, 1: 0})),
    "update keeps places": lambda: updated(D({"a": 1, "b": 2}), {"a": 9, "c": 3}),
    "update equal key": lambda: updated(D({1: 1}), {True: "x"}),
    "setdefault equal key": lambda: (lambda d: (d.setdefault(1.0, "z"), d.copy()))(D({True: 1})),
    "bool key first": lambda: setitems(D(), (True, 1), (1, 2)),
}
if NEW:
    CASES.update({
        # Python 3.10 on: a missing count is 0, and Counters are ordered
        # as multisets.
        "counter zero": lambda: L(Counter(a=1, b=0)).count(Counter(a=1)),
        "counter zero reversed": lambda: L(Counter(a=1)).count(Counter(a=1, b=0)),
        "counter missing 0.0": lambda: L(Counter(a=0.0)).count(Counter()),
        "counter missing False": lambda: L(Counter(a=False)).count(Counter()),
        "counter value types": lambda: L(Counter(a=1)).count(Counter(a=1.0)),
        "counter sort": lambda: sort(Counter(a=2), Counter(a=1)),
        "counter sort 3": lambda: sort(Counter(a=2, b=1), Counter(a=1), Counter(b=1)),
        "counter sort strs": lambda: sort(Counter(a="x"), Counter(a="y")),
        "counter sort mixed": lambda: sort(Counter(a="x"), Counter(a=1)),
    })

for name, case in CASES.items():
    try:
        answer = repr(case())
    except Exception as e:
        # A server's traceback (a RemoteError's) as its last line.
        lines = [l for l in str(e).splitlines() if l.strip("-")]
        answer = "%s: %s" % (type(e).__name__, lines[-1] if lines else "")
    print("%s: %s" % (name, answer))
"#;

#[test]
fn python_gets_the_same_answers_from_both_servers() {
    let pythons: Vec<String> = pyenv_pythons().into_iter().map(|(_, p)| p).collect();
    let differential = Differential {
        program: PROGRAM,
        key: KEY,
        run_limit: RUN_LIMIT,
    };
    differential.same_answers("semantics", &pythons, &[], LIMIT);
}
