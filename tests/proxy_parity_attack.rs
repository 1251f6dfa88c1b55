//! The managed objects against Python's: a Python program makes the same
//! calls on CPython's own `SyncManager` server and on multiproc's and must
//! get the same answers (queue timeouts past `threading.TIMEOUT_MAX`, an
//! `Array` made of a bad typecode and a bad initializer), and the Rust
//! proxies (`DictProxy`, `ListProxy`, `NamespaceProxy`) give what the same
//! Python calls give at the extremes (`i64` indexes, empty containers,
//! keys that compare equal, NaN) and after `shutdown`. Without CPython
//! under pyenv, the differential tests say so and pass.

mod common;

use std::time::Duration;

use common::cpython::{with_prelude, Differential};
use common::watchdog;
use multiproc::manager::{DictProxy, ListProxy, Manager, NamespaceProxy, PyValue};
use multiproc::Error;

/// The longest one test may take.
const LIMIT: Duration = Duration::from_secs(300);

/// The longest one run of the program, or a server's start, may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

const KEY: &str = "proxy parity attack key";

const CASES: &str = r##"
def queue_cases():
    q, full = m.Queue(), m.Queue(1)
    full.put(0)
    c = {}
    # Past threading.TIMEOUT_MAX: the OverflowError of the lock the call
    # would wait on (CPython's server raises it at once; it must not wait).
    for t in [2**100, 2**63, 10**10, 1e10, 1e300, float("inf")]:
        c["get %r" % (t,)] = lambda t=t: q.get(True, t)
        c["put full %r" % (t,)] = lambda t=t: full.put(1, True, t)
        c["join-free get %r" % (t,)] = lambda t=t: (q.put("x"), q.get(True, t))[1]
    # Below it, a short wait still times out as Python's does.
    c["get 0.01"] = lambda: failure_of(lambda: q.get(True, 0.01))
    c["get nowait huge"] = lambda: failure_of(lambda: q.get(False, 2**100))
    c["put unbounded huge"] = lambda: (q.put(1, True, 2**100), q.get())[1]
    return c


def array_cases():
    c = {}
    # array.array refuses a str, then what is not iterable, then the
    # typecode.
    for code in ["c", "x", "?", "ii", "i", "u"]:
        for init in [2, None, "ab", b"ab", [1], range(3), 1.5]:
            c["Array(%r, %r)" % (code, init)] = (
                lambda code=code, init=init: m.Array(code, init)[:])
    return c


run({"queue": queue_cases(), "array": array_cases()})
"##;

static PROGRAM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| with_prelude(CASES));

fn differential() -> Differential {
    Differential::of(PROGRAM.as_str(), KEY, RUN_LIMIT)
}

/// Bug: a queue's `get` (or a full queue's `put`) with a timeout past
/// `threading.TIMEOUT_MAX` (`2**100`, `1e10`, `inf`) waited for ever on
/// multiproc's server, where CPython's raises `OverflowError` at once.
#[test]
fn queue_timeouts_past_timeout_max_are_overflow_errors() {
    differential().same_answers_in("queue", LIMIT);
}

/// Bug: `m.Array('c', 2)` (a bad typecode and an initializer that is not
/// iterable) was `ValueError: bad typecode` where CPython's is
/// `TypeError: 'int' object is not iterable`; `m.Array('x', 'ab')` too
/// (`TypeError: cannot use a str …`).
#[test]
fn array_checks_its_initializer_before_its_typecode() {
    differential().same_answers_in("array", LIMIT);
}

fn remote(e: Error) -> (String, String) {
    match e {
        Error::Remote { kind, message } => (kind, message),
        other => panic!("not a Python exception: {other:?}"),
    }
}

/// A list's methods at the `i64` extremes and on an empty list: Python's
/// answers (clamped inserts and slices, `IndexError`s with Python's words).
#[test]
fn list_extremes_are_pythons() {
    watchdog("list extremes", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<i64>().unwrap();
        let err = |r: multiproc::Result<i64>| remote(r.unwrap_err());
        let index_error = |m: &str| ("IndexError".to_string(), m.to_string());
        assert_eq!(err(l.pop(-1)), index_error("pop from empty list"));
        assert_eq!(err(l.pop(i64::MIN)), index_error("pop from empty list"));
        assert_eq!(err(l.get(0)), index_error("list index out of range"));
        l.insert(i64::MIN, 1).unwrap();
        l.insert(i64::MAX, 2).unwrap();
        l.insert(i64::MIN + 1, 0).unwrap();
        assert_eq!(l.to_vec().unwrap(), [0, 1, 2]);
        for i in [i64::MIN, i64::MAX, 3, -4] {
            assert_eq!(err(l.get(i)), index_error("list index out of range"));
            assert_eq!(err(l.pop(i)), index_error("pop index out of range"));
            assert_eq!(
                remote(l.set(i, 9).unwrap_err()),
                index_error("list assignment index out of range")
            );
            assert_eq!(
                err(l.increment(i, 1)),
                index_error("list index out of range")
            );
        }
        assert_eq!(l.get(-3).unwrap(), 0);
        assert_eq!(l.slice(i64::MIN, i64::MAX).unwrap(), [0, 1, 2]);
        assert_eq!(l.slice(i64::MAX, i64::MIN).unwrap(), Vec::<i64>::new());
        assert_eq!(l.slice(-1, i64::MAX).unwrap(), [2]);
        assert_eq!(
            remote(l.index(&9).unwrap_err()),
            ("ValueError".into(), "9 is not in list".into())
        );
        assert_eq!(
            remote(l.remove(&9).unwrap_err()),
            ("ValueError".into(), "list.remove(x): x not in list".into())
        );
        // A value that is not a T is put back where it was.
        let raw = m.list::<PyValue>().unwrap();
        raw.extend([1.into(), "x".into(), 3.into()]).unwrap();
        let ns = m.namespace().unwrap();
        ns.set("l", &raw).unwrap();
        let typed: ListProxy<i64> = ns.get("l").unwrap();
        for i in [1, -2] {
            assert!(matches!(typed.pop(i), Err(Error::Deserialize(_))));
            assert_eq!(raw.to_vec().unwrap(), [1.into(), "x".into(), 3.into()]);
        }
        // Floats: NaN is equal to nothing, -0.0 to 0.0.
        let f = m.list_from([3.0, f64::NAN, -0.0, 1.0]).unwrap();
        assert_eq!(f.count(&f64::NAN).unwrap(), 0);
        assert_eq!(f.index(&0.0).unwrap(), 2);
        let mixed = m.list_from::<PyValue>([1.into(), "a".into()]).unwrap();
        assert_eq!(remote(mixed.sort().unwrap_err()).0, "TypeError");
        assert_eq!(mixed.to_vec().unwrap(), [1.into(), "a".into()]);
    })
}

/// A dict's keys as Python's: `1`, `1.0` and `True` are one key (the first
/// kept), `-0.0` and `0` too, each NaN sent is a key of its own; an empty
/// dict's `popitem` and a missing key's `pop` are Python's `KeyError`s.
#[test]
fn dict_keys_and_empty_dict_are_pythons() {
    watchdog("dict keys", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<PyValue, i64>().unwrap();
        assert_eq!(
            remote(d.popitem().unwrap_err()),
            ("KeyError".into(), "'popitem(): dictionary is empty'".into())
        );
        assert_eq!(remote(d.pop(&1.into()).unwrap_err()).0, "KeyError");
        assert_eq!(d.remove(&1.into()).unwrap(), None);
        d.set(1.into(), 1).unwrap();
        d.set(1.0.into(), 2).unwrap();
        d.set(true.into(), 3).unwrap();
        d.set((-0.0).into(), 4).unwrap();
        d.set(0.into(), 5).unwrap();
        d.update([(9.into(), 1), (9.0.into(), 2)]).unwrap();
        d.set(f64::NAN.into(), 6).unwrap();
        d.set(f64::NAN.into(), 7).unwrap();
        assert_eq!(d.to_string(), "{1: 3, -0.0: 5, 9: 2, nan: 6, nan: 7}");
        assert_eq!(d.get(&f64::NAN.into()).unwrap(), None);
        assert_eq!(d.setdefault(9.0.into(), 100).unwrap(), 2);
        assert_eq!(
            d.get_many(&[0.into(), 0.0.into()]).unwrap(),
            [Some(5), Some(5)]
        );
        assert_eq!(d.popitem().unwrap().1, 7);
        // A sum past i64 is stored, as Python's int; reading it as an i64
        // is an error, not a wrapped value.
        assert!(matches!(
            d.increment(&9.into(), i64::MAX),
            Err(Error::Deserialize(_))
        ));
        let n: DictProxy<PyValue, PyValue> = {
            let ns = m.namespace().unwrap();
            ns.set("d", &d).unwrap();
            ns.get("d").unwrap()
        };
        assert!(matches!(
            n.get(&9.into()).unwrap(),
            Some(PyValue::BigInt(_))
        ));
    })
}

/// Every proxy's call after the server's `shutdown` is `ManagerGone`
/// (never a hang or a panic), and `str` says so.
#[test]
fn proxies_after_shutdown_are_manager_gone() {
    watchdog("after shutdown", LIMIT, || {
        let mut m = Manager::start().unwrap();
        let d = m.dict::<i64, i64>().unwrap();
        let l = m.list::<i64>().unwrap();
        let ns: NamespaceProxy = m.namespace().unwrap();
        m.shutdown().unwrap();
        assert!(matches!(d.get(&1), Err(Error::ManagerGone(_))));
        assert!(matches!(l.len(), Err(Error::ManagerGone(_))));
        assert!(matches!(ns.get::<i64>("x"), Err(Error::ManagerGone(_))));
        assert!(l.to_string().contains("the manager is gone"));
        assert!(matches!(m.dict::<i64, i64>(), Err(Error::ManagerGone(_))));
        assert!(matches!(m.shutdown(), Err(Error::ManagerGone(_))));
    })
}
