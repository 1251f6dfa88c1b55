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

use common::redis::{redis_url, unique};
use common::{child, join, static_child, watchdog};
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

/// The Redis manager of a test, or `None` (skipped) without a server.
fn redis_manager(test: &str) -> Option<(String, Manager)> {
    let url = redis_url(test)?;
    let m = Manager::connect_redis(&url).unwrap();
    Some((url, m))
}

/// A raw connection to the test server, as another program would have.
fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn part(kind: &str, name: &str, part: &str) -> String {
    format!("multiproc:{{{kind}:{name}}}:{part}")
}

/// Where Redis differs from a manager server, as the README says:
/// `compare_and_set` compares encodings (1 is not 1.0), and `increment`
/// stops at 64 bits with an `OverflowError`, the value left as it was.
#[test]
fn redis_differs_where_documented() {
    let test = "redis_differs_where_documented";
    watchdog(test, LIMIT, || {
        let local = Manager::start().unwrap();
        let Some((_, m)) = redis_manager(test) else {
            return;
        };
        let (made_l, made_r) = (Made::new(&local), Made::new(&m));
        let (l, r) = (made_l.dict(), made_r.dict());
        for d in [&l, &r] {
            d.set(s("one"), K::Int(1)).unwrap();
            d.set(s("m"), K::Int(i64::MAX)).unwrap();
            d.set(s("t"), K::Bool(true)).unwrap();
            d.set(s("low"), K::Int(i64::MIN)).unwrap();
        }
        let expected_float = |d: &DictProxy<K, K>| {
            d.compare_and_set(&s("one"), Some(&K::Float(1.0)), K::Int(2))
                .unwrap()
        };
        assert!(expected_float(&l));
        assert!(!expected_float(&r));
        assert_eq!(r.get(&s("one")).unwrap(), Some(K::Int(1)));

        // Past 64 bits: a Python int locally, an OverflowError on Redis.
        assert!(matches!(
            l.increment(&s("m"), K::Int(1)).unwrap(),
            K::BigInt(_)
        ));
        for (key, delta) in [
            ("m", K::Int(1)),
            ("m", K::Bool(true)),
            ("low", K::Int(-1)),
            ("t", K::Int(i64::MAX)),
            ("new", K::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])),
        ] {
            let e = r.increment(&s(key), delta.clone()).unwrap_err();
            assert_eq!(remote(&e).0, "OverflowError", "{key} += {delta:?}");
        }
        assert_eq!(r.get(&s("m")).unwrap(), Some(K::Int(i64::MAX)));
        assert_eq!(r.get(&s("low")).unwrap(), Some(K::Int(i64::MIN)));
        assert_eq!(format!("{:?}", r.get(&s("t")).unwrap()), "Some(Bool(true))");
        assert!(!r.contains(&s("new")).unwrap());
        // A BigInt delta that fits 64 bits is added.
        assert_eq!(
            r.increment(&s("m"), K::BigInt(vec![0xff])).unwrap(),
            K::Int(i64::MAX - 1)
        );
    });
}

/// A float that `increment` computes on the server is stored as the
/// codec writes floats (Rust's shortest `{:?}`), so that it compares equal
/// to the same float set by a client (`compare_and_set` compares
/// encodings), and is the float a manager server computes.
#[test]
fn float_increments_are_stored_as_the_codec_writes_floats() {
    let test = "float_increments_are_stored_as_the_codec_writes_floats";
    watchdog(test, LIMIT, || {
        let local = Manager::start().unwrap();
        let Some((url, m)) = redis_manager(test) else {
            return;
        };
        let (made_l, made_r) = (Made::new(&local), Made::new(&m));
        let (l, r) = (made_l.dict(), made_r.dict());
        let mut conn = raw(&url);
        let v = part("dict", r.redis_name().unwrap(), "v");
        let floats = [
            0.1,
            0.2,
            0.30000000000000004,
            1e16,
            9999999999999998.0,
            1e15 + 0.3,
            1e15 + 0.75,
            2f64.powi(50) + 0.25,
            2f64.powi(51) + 0.5,
            4503599627370495.5,
            999999999999999.9,
            9.5,
            0.000123456789012345,
            1.2345678901234567e-5,
            1e-4,
            9.99e-5,
            1e-5,
            1.5e-7,
            123456.789,
            -2.5,
            1e300,
            5e-324,
            2f64.powi(53),
            2f64.powi(53) + 2.0,
            1e22,
            100.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            -1e-300,
            0.5,
            3.0,
            1.0 / 3.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let bits = |v: Option<K>| match v {
            Some(K::Float(f)) if f.is_nan() => "NaN".to_string(),
            Some(K::Float(f)) => format!("{:x}", f.to_bits()),
            other => format!("{other:?}"),
        };
        for (i, x) in floats.into_iter().enumerate() {
            let key = K::Int(i as i64);
            let (a, b) = (
                l.increment(&key, K::Float(x)).unwrap(),
                r.increment(&key, K::Float(x)).unwrap(),
            );
            assert_eq!(bits(Some(a)), bits(Some(b.clone())), "0 + {x:?}");
            let stored: Vec<u8> = redis::cmd("HGET")
                .arg(&v)
                .arg(i.to_string())
                .query(&mut conn)
                .unwrap();
            let K::Float(sum) = b else { panic!("{b:?}") };
            assert_eq!(
                String::from_utf8(stored).unwrap(),
                format!("f{sum:?}"),
                "0 + {x:?}"
            );
            // Sums of floats, and of an int and a float.
            for d in [&l, &r] {
                d.increment(&s("acc"), K::Float(x)).unwrap();
                d.increment(&s("acc"), K::Int(3)).unwrap();
                d.increment(&s("int"), K::Int(7)).unwrap();
                d.increment(&s("int"), K::Float(x / 7.0)).unwrap();
            }
            for k in ["acc", "int"] {
                assert_eq!(
                    bits(l.get(&s(k)).unwrap()),
                    bits(r.get(&s(k)).unwrap()),
                    "{k} after {x:?}"
                );
            }
        }
        // Random doubles, and dyadic ones (whose exact decimals are short:
        // where rounding ties are).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..1000u64 {
            let x = match i % 3 {
                0 => f64::from_bits(next()),
                1 => (next() % (1 << 56)) as f64 / 8.0,
                _ => (next() % 1_000_000) as f64 / f64::from(1u32 << (next() % 30)),
            };
            if !x.is_finite() {
                continue;
            }
            let key = K::Int(1000 + i as i64);
            r.increment(&key, K::Float(x)).unwrap();
            let stored: Vec<u8> = redis::cmd("HGET")
                .arg(&v)
                .arg((1000 + i).to_string())
                .query(&mut conn)
                .unwrap();
            assert_eq!(
                String::from_utf8(stored).unwrap(),
                format!("f{:?}", 0.0 + x),
                "0 + {x:e}"
            );
        }
        // A float set by a client compares equal to the same one computed.
        r.set(s("c"), K::Float(0.1)).unwrap();
        r.increment(&s("c"), K::Float(0.2)).unwrap();
        assert!(r
            .compare_and_set(&s("c"), Some(&K::Float(0.30000000000000004)), K::None)
            .unwrap());
        // An int made a float by a float delta.
        r.set(s("i"), K::Int(i64::MAX)).unwrap();
        assert_eq!(
            r.increment(&s("i"), K::Float(0.0)).unwrap(),
            K::Float(i64::MAX as f64)
        );
    });
}

/// What another program wrote in a dict's keys is an error when read,
/// never a panic: a value not in multiproc's encoding is `Deserialize`, a
/// key of another Redis type is Redis's own error.
#[test]
fn foreign_values_are_errors_not_panics() {
    let test = "foreign_values_are_errors_not_panics";
    watchdog(test, LIMIT, || {
        let Some((url, m)) = redis_manager(test) else {
            return;
        };
        let made = Made::new(&m);
        let d = made.dict();
        let name = d.redis_name().unwrap().to_string();
        let (v, o) = (part("dict", &name, "v"), part("dict", &name, "o"));
        let mut conn = raw(&url);
        d.set(s("x"), K::Int(1)).unwrap();
        d.set(s("y"), K::Int(2)).unwrap();
        let hset = |conn: &mut redis::Connection, f: &[u8], value: &[u8]| {
            redis::cmd("HSET")
                .arg(&v)
                .arg(f)
                .arg(value)
                .query::<()>(conn)
                .unwrap()
        };
        let deserialize = |r: Result<_, Error>, what: &str| match r {
            Err(Error::Deserialize(_)) => {}
            other => panic!("{what}: {other:?}"),
        };
        for garbage in [
            &b"garbage"[..],
            b"",
            b"f1.5.5",
            b"s\xff",
            b"99999999999999999999",
            b"\x80\x04junk",
        ] {
            hset(&mut conn, b"sx", garbage);
            deserialize(d.get(&s("x")).map(|_| ()), "get");
            deserialize(d.values().map(|_| ()), "values");
            deserialize(d.items().map(|_| ()), "items");
            deserialize(d.get_many(&[s("y"), s("x")]).map(|_| ()), "get_many");
            deserialize(d.setdefault(s("x"), K::None).map(|_| ()), "setdefault");
            let shown = d.to_string();
            assert!(shown.starts_with("<DictProxy object"), "{shown}");
            if garbage != b"99999999999999999999" {
                deserialize(d.increment(&s("x"), K::Int(1)).map(|_| ()), "increment");
            }
            deserialize(d.increment(&s("x"), s("z")).map(|_| ()), "increment by str");
            assert_eq!(d.keys().unwrap(), [s("x"), s("y")]);
            assert_eq!(d.len().unwrap(), 2);
        }
        // A big decimal is not an int HINCRBY adds: an error, not a wrap.
        hset(&mut conn, b"sx", b"99999999999999999999");
        assert!(d.increment(&s("x"), K::Int(1)).is_err());
        deserialize(
            d.increment(&s("x"), K::Float(1.0)).map(|_| ()),
            "float increment",
        );
        hset(&mut conn, b"sx", b"-9223372036854775809");
        deserialize(
            d.increment(&s("x"), K::Float(1.0)).map(|_| ()),
            "float increment",
        );
        hset(&mut conn, b"sx", b"-9223372036854775808");
        assert_eq!(
            d.increment(&s("x"), K::Float(1.0)).unwrap(),
            K::Float(i64::MIN as f64)
        );
        // A field in the order that the values lack; a field that is no key.
        redis::cmd("ZADD")
            .arg(&o)
            .arg(100)
            .arg("sz")
            .query::<()>(&mut conn)
            .unwrap();
        hset(&mut conn, b"sx", b"1");
        deserialize(d.values().map(|_| ()), "values without a value");
        deserialize(d.items().map(|_| ()), "items without a value");
        deserialize(d.popitem().map(|_| ()), "popitem without a value");
        hset(&mut conn, b"\xff", b"1");
        redis::cmd("ZADD")
            .arg(&o)
            .arg(101)
            .arg(b"\xff")
            .query::<()>(&mut conn)
            .unwrap();
        deserialize(d.keys().map(|_| ()), "keys");
        deserialize(d.popitem().map(|_| ()), "popitem of a foreign key");
        // Left where it was, with its value: nothing is lost.
        deserialize(d.keys().map(|_| ()), "keys after popitem");
        let left: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&v)
            .arg(b"\xff")
            .query(&mut conn)
            .unwrap();
        assert_eq!(left.as_deref(), Some(&b"1"[..]));
        redis::cmd("HDEL")
            .arg(&v)
            .arg(b"\xff")
            .query::<()>(&mut conn)
            .unwrap();
        redis::cmd("ZREM")
            .arg(&o)
            .arg(b"\xff")
            .query::<()>(&mut conn)
            .unwrap();
        assert_eq!(d.keys().unwrap(), [s("x"), s("y")]);
        // A typed dict reading a value of another type.
        let typed = m.dict_named::<String, i64>(&name).unwrap();
        d.set(s("x"), s("text")).unwrap();
        deserialize(typed.get(&"x".into()).map(|_| ()), "typed get");
        assert_eq!(typed.get(&"y".into()).unwrap(), Some(2));
        // A key of another Redis type: Redis's error.
        d.clear().unwrap();
        redis::cmd("SET")
            .arg(&v)
            .arg("a string")
            .query::<()>(&mut conn)
            .unwrap();
        for r in [
            d.len().map(|_| ()),
            d.get(&s("x")).map(|_| ()),
            d.set(s("x"), K::Int(1)),
            d.increment(&s("x"), K::Int(1)).map(|_| ()),
            d.update([(s("a"), K::Int(1))]),
        ] {
            match r {
                Err(Error::Remote { kind, message }) => {
                    assert_eq!(kind, "RedisError");
                    assert!(message.contains("WRONGTYPE"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(m.remove_named(&name).unwrap());
        assert_eq!(d.len().unwrap(), 0);
    });
}

/// Two "machines": processes that share only Redis (each connects on its
/// own) see the same named dict and namespace, and lose no update.
#[test]
fn separately_connected_managers_share_named_objects() {
    let test = "separately_connected_managers_share_named_objects";
    watchdog(test, LIMIT, || {
        let Some((url, m)) = redis_manager(test) else {
            return;
        };
        let name = unique("shared");
        let machines: Vec<_> = (0..2)
            .map(|i| {
                let (url, name) = (url.clone(), name.clone());
                static_child(move || {
                    let m = Manager::connect_redis(&url).unwrap();
                    let d = m.dict_named::<String, i64>(&name).unwrap();
                    let n = m.namespace_named(&name).unwrap();
                    for _ in 0..300 {
                        d.increment(&"n".into(), 1).unwrap();
                    }
                    d.set(format!("from{i}"), i).unwrap();
                    n.set(&format!("machine{i}"), &i).unwrap();
                })
            })
            .collect();
        for p in &machines {
            assert_eq!(join(p, LIMIT), 0);
        }
        let d = m.dict_named::<String, i64>(&name).unwrap();
        assert_eq!(d.get(&"n".into()).unwrap(), Some(600));
        assert_eq!(d.len().unwrap(), 3);
        let mut keys = d.keys().unwrap();
        keys.sort();
        assert_eq!(keys, ["from0", "from1", "n"]);
        let n = m.namespace_named(&name).unwrap();
        assert_eq!(n.to_string(), "Namespace(machine0=0, machine1=1)");
        // A third machine sees what the parent writes.
        d.set("parent".into(), 7).unwrap();
        let (url2, name2) = (url.clone(), name.clone());
        let reader = static_child(move || {
            let m = Manager::connect_redis(&url2).unwrap();
            let d = m.dict_named::<String, i64>(&name2).unwrap();
            assert_eq!(d.get(&"parent".into()).unwrap(), Some(7));
            assert_eq!(
                m.namespace_named(&name2)
                    .unwrap()
                    .get::<i64>("machine1")
                    .unwrap(),
                1
            );
        });
        assert_eq!(join(&reader, LIMIT), 0);
        assert!(m.remove_named(&name).unwrap());
        assert_eq!(d.len().unwrap(), 0);
        assert_eq!(n.to_string(), "Namespace()");
        assert!(!m.remove_named(&name).unwrap());
    });
}

/// The bounds of the timeout: a manager with `Duration::MAX` works.
#[test]
fn a_huge_timeout_works() {
    let test = "a_huge_timeout_works";
    watchdog(test, LIMIT, || {
        let Some(url) = redis_url(test) else {
            return;
        };
        let m = Manager::connect_redis_with_timeout(&url, Duration::MAX).unwrap();
        let made = Made::new(&m);
        let d = made.dict();
        d.set(s("a"), K::Int(1)).unwrap();
        assert_eq!(d.increment(&s("a"), K::Int(1)).unwrap(), K::Int(2));
        assert_eq!(d.to_string(), "{'a': 2}");
    });
}

/// A connection that watches what a Redis server is asked (`MONITOR`).
struct Monitor {
    watch: redis::Connection,
    marker: redis::Connection,
    marks: u32,
}

impl Monitor {
    fn new(url: &str) -> Monitor {
        let mut watch = raw(url);
        watch
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        redis::cmd("MONITOR").query::<()>(&mut watch).unwrap();
        Monitor {
            watch,
            marker: raw(url),
            marks: 0,
        }
    }

    /// The commands clients sent (not those of scripts) since the last
    /// call, up to a marker this sends now.
    fn calls(&mut self) -> usize {
        self.marks += 1;
        let mark = format!("multiproc-test-mark-{}", self.marks);
        redis::cmd("ECHO")
            .arg(&mark)
            .query::<String>(&mut self.marker)
            .unwrap();
        let mut n = 0;
        loop {
            let line = match self.watch.recv_response().unwrap() {
                redis::Value::SimpleString(s) => s,
                other => format!("{other:?}"),
            };
            if line.contains(&mark) {
                return n;
            }
            if !line.contains(" lua]") && !line.contains("multiproc-test-mark-") {
                n += 1;
            }
        }
    }
}

/// `set_many`/`update` and `get_many` of 1000 items, and every other
/// operation, are one call each (on a server of the test's own, so that
/// nothing else counts).
#[test]
fn every_operation_is_one_call() {
    let test = "every_operation_is_one_call";
    watchdog(test, LIMIT, || {
        let Some(server) = common::redis::OwnServer::start(test) else {
            return;
        };
        let m = Manager::connect_redis(&server.url()).unwrap();
        let made = Made::new(&m);
        let d = made.dict();
        let n = made.namespace();
        let items: Vec<(K, K)> = (0..1000).map(|i| (K::Int(i), s("v"))).collect();
        let keys: Vec<K> = (0..1000).map(|k| K::Float(f64::from(k))).collect();
        // Each script once, so that it is loaded (the first call of a
        // script may take two: EVALSHA, then EVAL).
        let all = |d: &DictProxy<K, K>, n: &NamespaceProxy| {
            d.update(items.clone()).unwrap();
            d.set(K::Float(1.0), s("x")).unwrap();
            d.setdefault(s("sd"), K::None).unwrap();
            d.increment(&s("c"), K::Int(1)).unwrap();
            d.increment(&s("c"), K::Float(1.5)).unwrap();
            d.compare_and_set(&s("c"), None, K::None).unwrap();
            d.remove(&s("sd")).unwrap();
            d.pop(&K::Int(5)).unwrap();
            d.popitem().unwrap();
            d.keys().unwrap();
            d.values().unwrap();
            d.items().unwrap();
            d.to_string();
            n.set("a", &1).unwrap();
            n.del("a").unwrap();
            n.to_string();
        };
        all(&d, &n);
        let mut monitor = Monitor::new(&server.url());
        monitor.calls();
        d.set_many(items.clone()).unwrap();
        assert_eq!(monitor.calls(), 1, "set_many of 1000");
        assert_eq!(d.get_many(&keys).unwrap().len(), 1000);
        assert_eq!(monitor.calls(), 1, "get_many of 1000");
        all(&d, &n);
        assert_eq!(monitor.calls(), 16, "one call each");
    });
}

/// Batches that cross the update script's chunks (500 items), with keys
/// given twice, in another form (`7.0` then `7`), and already there:
/// Python's order, first keys and last values on both backends.
fn batch_body(m: &Manager, r: &mut Record) {
    let made = Made::new(m);
    let d = made.dict();
    d.set(K::Int(600), s("before")).unwrap();
    let mut items: Vec<(K, K)> = (0..1200).rev().map(|i| (K::Int(i), K::Int(i))).collect();
    items.insert(3, (K::Float(7.0), s("first form")));
    items.push((K::Int(5), s("last value")));
    items.push((K::Bool(true), s("one is true")));
    d.update(items).unwrap();
    let keys = d.keys().unwrap();
    r.note("len", keys.len());
    r.note("first keys", format!("{:?}", &keys[..6]));
    r.note("around 600", format!("{:?}", &keys[595..602]));
    r.note("last keys", format!("{:?}", &keys[keys.len() - 3..]));
    r.note("5", d.get(&K::Int(5)).unwrap());
    r.note("1", d.get(&K::Int(1)).unwrap());
    r.note("600", d.get(&K::Int(600)).unwrap());
    r.note("7", d.get(&K::Int(7)).unwrap());
    r.note("popitem", format!("{:?}", d.popitem().unwrap()));
}

#[test]
fn batches_across_chunks_answer_alike_on_both_backends() {
    on_both(
        "batches_across_chunks_answer_alike_on_both_backends",
        batch_body,
    );
}
