//! Dicts and namespaces on Redis: the same test body runs on a local
//! manager server and on Redis, and both must answer alike (every answer
//! is recorded, and the two records compared), except where the README
//! says Redis differs (tested on their own below). Also: atomic updates
//! from many processes, two "machines" that share only Redis, and values
//! another program wrote in the hash.

#![cfg(feature = "redis")]

mod common;

use std::cell::RefCell;
use std::fmt::Debug;
use std::time::Duration;

use common::redis::redis_url;
use common::{child, join, watchdog};
use multiproc::manager::{DictProxy, Manager, NamespaceProxy};
use multiproc::{Error, PyValue as K};

const LIMIT: Duration = Duration::from_secs(120);

/// The objects a test made on Redis, removed when it ends (even by a panic).
struct Made<'m> {
    m: &'m Manager,
    names: RefCell<Vec<String>>,
}

impl<'m> Made<'m> {
    fn new(m: &'m Manager) -> Made<'m> {
        Made {
            m,
            names: RefCell::new(Vec::new()),
        }
    }

    fn dict(&self) -> DictProxy<K, K> {
        let d = self.m.dict::<K, K>().unwrap();
        if let Some(name) = d.redis_name() {
            self.names.borrow_mut().push(name.to_string());
        }
        d
    }

    fn namespace(&self) -> NamespaceProxy {
        let n = self.m.namespace().unwrap();
        if let Some(name) = n.redis_name() {
            self.names.borrow_mut().push(name.to_string());
        }
        n
    }
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        for name in self.names.borrow().iter() {
            let _ = self.m.remove_named(name);
        }
    }
}

/// What a backend answered, step by step, to compare with the other's.
#[derive(Default)]
struct Record(Vec<String>);

impl Record {
    /// Records `answer` (its `Debug`, which tells `1` from `1.0`) and gives it back.
    fn note<T: Debug>(&mut self, step: &str, answer: T) -> T {
        self.0.push(format!("{step}: {answer:?}"));
        answer
    }
}

fn s(v: &str) -> K {
    K::from(v)
}

fn remote(e: &Error) -> (&str, &str) {
    match e {
        Error::Remote { kind, message } => (kind, message),
        other => panic!("not a remote error: {other:?}"),
    }
}

/// The backends: a local manager server, and Redis if there is one.
fn backends(test: &str) -> Vec<(&'static str, Manager)> {
    let mut all = vec![("local", Manager::start().unwrap())];
    if let Some(url) = redis_url(test) {
        all.push(("redis", Manager::connect_redis(&url).unwrap()));
    }
    all
}

/// Runs `body` on each backend; the records must be the same.
fn on_both(test: &str, body: fn(&Manager, &mut Record)) {
    watchdog(test, LIMIT, || {
        let mut records = Vec::new();
        for (name, m) in backends(test) {
            let mut r = Record::default();
            body(&m, &mut r);
            records.push((name, r.0));
        }
        eprintln!(
            "{test}: {} backends, {} steps",
            records.len(),
            records[0].1.len()
        );
        if let [(_, local), (_, redis)] = records.as_slice() {
            for (l, r) in local.iter().zip(redis) {
                assert_eq!(l, r, "local and Redis answer alike");
            }
            assert_eq!(local.len(), redis.len());
        }
    });
}

fn dict_body(m: &Manager, r: &mut Record) {
    let made = Made::new(m);
    let d = made.dict();
    // Empty.
    assert_eq!(r.note("len", d.len().unwrap()), 0);
    assert!(d.is_empty().unwrap());
    assert!(r.note("keys", d.keys().unwrap()).is_empty());
    assert_eq!(r.note("str", d.to_string()), "{}");
    assert_eq!(r.note("get", d.get(&s("x")).unwrap()), None);
    let e = r.note("pop", d.pop(&s("x")).unwrap_err());
    assert_eq!(remote(&e), ("KeyError", "'x'"));
    let e = r.note("popitem", d.popitem().unwrap_err());
    assert_eq!(remote(&e), ("KeyError", "'popitem(): dictionary is empty'"));
    assert_eq!(r.note("remove", d.remove(&s("x")).unwrap()), None);

    // 1, 1.0 and True are one key, the first one given.
    d.set(K::Int(1), s("one")).unwrap();
    d.set(K::Float(1.0), s("uno")).unwrap();
    d.set(K::Bool(true), s("si")).unwrap();
    let keys = r.note("keys", d.keys().unwrap());
    assert_eq!(format!("{keys:?}"), "[Int(1)]");
    assert_eq!(r.note("len", d.len().unwrap()), 1);
    assert!(r.note("contains", d.contains(&K::Bool(true)).unwrap()));
    assert!(r.note("contains", d.contains(&K::Float(1.0)).unwrap()));
    assert!(!r.note("contains", d.contains(&K::Float(1.5)).unwrap()));
    r.note("get", d.get(&K::Float(1.0)).unwrap());
    d.set(K::Float(2.0), K::Int(2)).unwrap();
    d.set(K::Int(2), K::Float(2.5)).unwrap();
    assert_eq!(r.note("str", d.to_string()), "{1: 'si', 2.0: 2.5}");
    assert_eq!(
        format!("{:?}", r.note("pop", d.pop(&K::Int(1)).unwrap())),
        "Str(\"si\")"
    );
    // A key given as 1.0 first is kept as 1.0, removed with 1.
    d.set(K::Float(1.0), s("f")).unwrap();
    d.set(K::Int(1), s("i")).unwrap();
    r.note("items", d.items().unwrap());
    assert_eq!(r.note("str", d.to_string()), "{2.0: 2.5, 1.0: 'i'}");
    assert_eq!(
        format!("{:?}", r.note("popitem", d.popitem().unwrap())),
        "(Float(1.0), Str(\"i\"))"
    );
    d.clear().unwrap();

    // Insertion order: a value set again keeps its place, a key removed
    // and set again goes last.
    for k in ["a", "b", "c", "d"] {
        d.set(s(k), s(k)).unwrap();
    }
    d.set(s("a"), K::Int(10)).unwrap();
    assert_eq!(r.note("remove", d.remove(&s("b")).unwrap()), Some(s("b")));
    d.set(s("b"), K::Int(20)).unwrap();
    assert_eq!(
        r.note("keys", d.keys().unwrap()),
        [s("a"), s("c"), s("d"), s("b")]
    );
    r.note("values", d.values().unwrap());
    assert_eq!(
        r.note("str", d.to_string()),
        "{'a': 10, 'c': 'c', 'd': 'd', 'b': 20}"
    );
    // popitem: the last inserted first (LIFO).
    r.note("popitem", d.popitem().unwrap());
    r.note("popitem", d.popitem().unwrap());
    assert_eq!(r.note("keys", d.keys().unwrap()), [s("a"), s("c")]);
    // setdefault.
    assert_eq!(
        r.note("setdefault", d.setdefault(s("a"), K::Int(0)).unwrap()),
        K::Int(10)
    );
    assert_eq!(
        r.note("setdefault", d.setdefault(s("z"), K::None).unwrap()),
        K::None
    );
    assert!(r.note("contains", d.contains(&s("z")).unwrap()));
    // update: in order, a key given twice ends with its last value.
    d.update([
        (s("u"), K::Int(1)),
        (s("a"), K::Int(11)),
        (s("u"), K::Int(2)),
        (K::Tuple(vec![K::Int(1), s("t")]), K::Bytes(vec![0, 255])),
        (K::None, K::List(vec![K::Float(0.5), K::Bool(false)])),
    ])
    .unwrap();
    d.update(Vec::new()).unwrap();
    assert_eq!(
        r.note("str", d.to_string()),
        "{'a': 11, 'c': 'c', 'z': None, 'u': 2, (1, 't'): b'\\x00\\xff', None: [0.5, False]}"
    );
    r.note("items", d.items().unwrap());
    r.note("values", d.values().unwrap());
    r.note(
        "get tuple",
        d.get(&K::Tuple(vec![K::Float(1.0), s("t")])).unwrap(),
    );

    // increment.
    assert_eq!(
        r.note("inc new", d.increment(&s("n"), K::Int(5)).unwrap()),
        K::Int(5)
    );
    assert_eq!(
        r.note("inc", d.increment(&s("n"), K::Int(-7)).unwrap()),
        K::Int(-2)
    );
    r.note("inc float", d.increment(&s("n"), K::Float(0.5)).unwrap());
    r.note("inc float", d.increment(&s("n"), K::Int(1)).unwrap());
    r.note(
        "inc new float",
        d.increment(&s("g"), K::Float(0.1)).unwrap(),
    );
    r.note("inc float", d.increment(&s("g"), K::Float(0.2)).unwrap());
    r.note("inc -0.0", d.increment(&s("h"), K::Float(-0.0)).unwrap());
    r.note("inc bool", d.increment(&s("n"), K::Bool(true)).unwrap());
    d.set(s("yes"), K::Bool(true)).unwrap();
    r.note("inc of a bool", d.increment(&s("yes"), K::Int(2)).unwrap());
    d.set(s("no"), K::Bool(false)).unwrap();
    r.note(
        "inc of a bool",
        d.increment(&s("no"), K::Float(2.5)).unwrap(),
    );
    r.note(
        "inc key 1.0",
        d.increment(&K::Float(3.0), K::Int(1)).unwrap(),
    );
    r.note("inc key 3", d.increment(&K::Int(3), K::Int(1)).unwrap());
    let e = r.note("inc str", d.increment(&s("c"), K::Int(1)).unwrap_err());
    assert_eq!(
        remote(&e),
        (
            "TypeError",
            "unsupported operand type(s) for +=: 'str' and 'int'"
        )
    );
    let e = r.note("inc by str", d.increment(&s("n"), s("x")).unwrap_err());
    assert_eq!(
        remote(&e),
        (
            "TypeError",
            "unsupported operand type(s) for +=: 'float' and 'str'"
        )
    );
    r.note("inc new by str", d.increment(&s("q"), s("x")).unwrap_err());
    r.note("inc None", d.increment(&s("z"), K::Int(1)).unwrap_err());
    r.note(
        "inc list",
        d.increment(&K::None, K::Float(1.0)).unwrap_err(),
    );
    assert!(!r.note("q absent", d.contains(&s("q")).unwrap()));
    r.note("inc max", d.increment(&s("m"), K::Int(i64::MAX)).unwrap());
    r.note("inc min", d.increment(&s("m"), K::Int(i64::MIN)).unwrap());

    // compare_and_set: None is absent.
    assert!(r.note(
        "cas absent",
        d.compare_and_set(&s("w"), None, K::Int(1)).unwrap()
    ));
    assert!(!r.note(
        "cas absent",
        d.compare_and_set(&s("w"), None, K::Int(2)).unwrap()
    ));
    assert!(!r.note(
        "cas wrong",
        d.compare_and_set(&s("w"), Some(&K::Int(2)), K::Int(3))
            .unwrap()
    ));
    assert!(r.note(
        "cas right",
        d.compare_and_set(&s("w"), Some(&K::Int(1)), s("x"))
            .unwrap()
    ));
    assert!(r.note(
        "cas str",
        d.compare_and_set(&s("w"), Some(&s("x")), K::Tuple(vec![]))
            .unwrap()
    ));
    assert!(r.note(
        "cas tuple",
        d.compare_and_set(&s("w"), Some(&K::Tuple(vec![])), K::None)
            .unwrap()
    ));
    assert!(!r.note(
        "cas missing",
        d.compare_and_set(&s("ww"), Some(&K::None), K::None)
            .unwrap()
    ));
    r.note("keys", d.keys().unwrap());
    r.note("str", d.to_string());

    // get_many/set_many, 1000 items.
    d.clear().unwrap();
    assert_eq!(r.note("len", d.len().unwrap()), 0);
    d.set_many((0..1000).map(|i| (K::Int(i), K::Int(i * i))))
        .unwrap();
    assert_eq!(r.note("len", d.len().unwrap()), 1000);
    let wanted: Vec<K> = (0..1000).map(|i| K::Float(f64::from(i * 2))).collect();
    let found = d.get_many(&wanted).unwrap();
    assert_eq!(found.len(), 1000);
    for (i, v) in found.iter().enumerate() {
        let i = i as i64 * 2;
        assert_eq!(v, &(i < 1000).then(|| K::Int(i * i)));
    }
    r.note("get_many", found);
    assert!(r.note("get_many none", d.get_many([]).unwrap()).is_empty());
    let keys = d.keys().unwrap();
    assert_eq!(keys, (0..1000).map(K::Int).collect::<Vec<_>>());
    r.note("keys", keys);
    r.note("popitem", d.popitem().unwrap());
    r.note("items", d.items().unwrap().len());
    d.clear().unwrap();
    assert!(r.note("empty", d.is_empty().unwrap()));
}

#[test]
fn dicts_answer_alike_on_both_backends() {
    on_both("dicts_answer_alike_on_both_backends", dict_body);
}

fn namespace_body(m: &Manager, r: &mut Record) {
    let made = Made::new(m);
    let n = made.namespace();
    assert_eq!(r.note("str", n.to_string()), "Namespace()");
    n.set("b", "x").unwrap();
    n.set("a", &1).unwrap();
    n.set("_h", &2).unwrap();
    n.set("C", &3.5).unwrap();
    n.set("a", &10).unwrap();
    assert_eq!(
        r.note("str", n.to_string()),
        "Namespace(C=3.5, a=10, b='x')"
    );
    assert_eq!(r.note("get", n.get::<i64>("a").unwrap()), 10);
    assert_eq!(r.note("get", n.get::<String>("b").unwrap()), "x");
    assert_eq!(r.note("get", n.get::<i64>("_h").unwrap()), 2);
    assert_eq!(r.note("get", n.get::<K>("C").unwrap()), K::Float(3.5));
    let e = r.note("get str as int", n.get::<i64>("b").unwrap_err());
    assert!(matches!(e, Error::Deserialize(_)), "{e:?}");
    let e = r.note("get missing", n.get::<i64>("zz").unwrap_err());
    assert_eq!(
        remote(&e),
        ("AttributeError", "'Namespace' object has no attribute 'zz'")
    );
    n.del("a").unwrap();
    let e = r.note("del missing", n.del("a").unwrap_err());
    assert_eq!(
        remote(&e),
        ("AttributeError", "'Namespace' object has no attribute 'a'")
    );
    let e = r.note("get deleted", n.get::<i64>("a").unwrap_err());
    assert_eq!(remote(&e).0, "AttributeError");
    n.set("list", &vec![1, 2]).unwrap();
    n.set("none", &()).unwrap();
    assert_eq!(r.note("get", n.get::<Vec<i64>>("list").unwrap()), [1, 2]);
    assert_eq!(
        r.note("str", n.to_string()),
        "Namespace(C=3.5, b='x', list=[1, 2], none=None)"
    );
    let clone = n.clone();
    clone.set("a", "again").unwrap();
    assert_eq!(r.note("get", n.get::<String>("a").unwrap()), "again");
}

#[test]
fn namespaces_answer_alike_on_both_backends() {
    on_both("namespaces_answer_alike_on_both_backends", namespace_body);
}

/// `increment` from 4 processes × 500 loses no update; `compare_and_set`
/// races have exactly one winner, and a read-CAS loop loses nothing.
fn concurrency_body(m: &Manager, r: &mut Record) {
    const PROCS: usize = 4;
    const EACH: i64 = 500;
    const ROUNDS: i64 = 50;
    let made = Made::new(m);
    let d = made.dict();
    multiproc::scope(|sc| {
        let kids: Vec<_> = (0..PROCS)
            .map(|p| {
                let d = &d;
                child(sc, move || {
                    for i in 0..EACH {
                        d.increment(&s("n"), K::Int(1)).unwrap();
                        if i % 2 == 0 {
                            d.increment(&s("f"), K::Float(0.5)).unwrap();
                        }
                    }
                    for round in 0..ROUNDS {
                        let slot = K::Tuple(vec![s("slot"), K::Int(round)]);
                        if d.compare_and_set(&slot, None, K::Int(p as i64)).unwrap() {
                            d.increment(&K::Tuple(vec![s("wins"), K::Int(round)]), K::Int(1))
                                .unwrap();
                        }
                    }
                    // A counter by read and compare_and_set: no lost update.
                    for _ in 0..100 {
                        loop {
                            let now = d.get(&s("cas")).unwrap();
                            let next = match &now {
                                Some(K::Int(i)) => K::Int(i + 1),
                                _ => K::Int(1),
                            };
                            if d.compare_and_set(&s("cas"), now.as_ref(), next).unwrap() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for k in &kids {
            assert_eq!(join(k, LIMIT), 0);
        }
    });
    let total = PROCS as i64 * EACH;
    assert_eq!(r.note("n", d.get(&s("n")).unwrap()), Some(K::Int(total)));
    assert_eq!(
        r.note("f", d.get(&s("f")).unwrap()),
        Some(K::Float(total as f64 / 4.0))
    );
    assert_eq!(
        r.note("cas", d.get(&s("cas")).unwrap()),
        Some(K::Int(PROCS as i64 * 100))
    );
    for round in 0..ROUNDS {
        let wins = d.get(&K::Tuple(vec![s("wins"), K::Int(round)])).unwrap();
        assert_eq!(r.note("wins", wins), Some(K::Int(1)), "round {round}");
        let slot = d.get(&K::Tuple(vec![s("slot"), K::Int(round)])).unwrap();
        assert!(matches!(slot, Some(K::Int(p)) if (0..PROCS as i64).contains(&p)));
    }
    assert_eq!(r.note("len", d.len().unwrap()), 3 + 2 * ROUNDS as usize);
}

#[test]
fn concurrent_updates_lose_nothing_on_both_backends() {
    on_both(
        "concurrent_updates_lose_nothing_on_both_backends",
        concurrency_body,
    );
}
