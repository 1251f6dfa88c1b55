//! Lists on Redis conform to the local Manager's: one test body, run on a
//! local `Manager::start()` and on `Manager::connect_redis`, with the same
//! expected answers; and what only Redis has (foreign values, the
//! documented differences).

#![cfg(feature = "redis")]

mod common;

use std::cell::RefCell;
use std::time::Duration;

use common::redis::{redis_url, unique};
use common::{join, static_child, watchdog};
use multiproc::manager::{ListProxy, Manager};
use multiproc::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(120);

/// An item of a mixed list: a bool, an int, a float or a str.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(untagged)]
enum V {
    B(bool),
    I(i64),
    F(f64),
    S(String),
}

/// A manager to run the body on, and the Redis names it made (removed
/// when dropped).
struct Backend {
    m: Manager,
    what: &'static str,
    names: RefCell<Vec<String>>,
}

impl Backend {
    fn redis(&self) -> bool {
        self.what == "redis"
    }

    fn list<T: Serialize + DeserializeOwned>(&self, tag: &str) -> ListProxy<T> {
        if self.redis() {
            let name = unique(tag);
            self.names.borrow_mut().push(name.clone());
            self.m.list_named(&name).unwrap()
        } else {
            self.m.list().unwrap()
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for name in self.names.borrow().iter() {
            let _ = self.m.remove_named(name);
        }
    }
}

/// A local manager, and a Redis one when a server is there.
fn backends(test: &str) -> Vec<Backend> {
    let mut out = vec![Backend {
        m: Manager::start().unwrap(),
        what: "local",
        names: RefCell::default(),
    }];
    if let Some(url) = redis_url(test) {
        out.push(Backend {
            m: Manager::connect_redis(&url).unwrap(),
            what: "redis",
            names: RefCell::default(),
        });
    }
    out
}

/// The Python exception of `r`'s error, as `(kind, message)`.
#[track_caller]
fn raised<T: std::fmt::Debug>(r: multiproc::Result<T>) -> (String, String) {
    match r {
        Err(Error::Remote { kind, message }) => (kind, message),
        other => panic!("expected a Python exception, got {other:?}"),
    }
}

#[track_caller]
fn raises<T: std::fmt::Debug>(r: multiproc::Result<T>, kind: &str, message: &str) {
    assert_eq!(raised(r), (kind.to_string(), message.to_string()));
}

fn int_list_methods(b: &Backend) {
    let l = b.list::<i64>("ints");
    assert!(l.is_empty().unwrap());
    assert_eq!(l.len().unwrap(), 0);
    assert_eq!(l.to_string(), "[]");
    raises(l.get(0), "IndexError", "list index out of range");
    raises(l.get(-1), "IndexError", "list index out of range");
    raises(l.pop(-1), "IndexError", "pop from empty list");
    raises(l.pop(0), "IndexError", "pop from empty list");
    raises(
        l.set(0, 1),
        "IndexError",
        "list assignment index out of range",
    );
    assert_eq!(l.slice(0, 10).unwrap(), Vec::<i64>::new());

    l.append(1).unwrap();
    l.append(2).unwrap();
    l.extend([3, 4, 5]).unwrap();
    l.extend([]).unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(l.len().unwrap(), 5);
    assert!(!l.is_empty().unwrap());

    // Indexes, negative and out of range.
    assert_eq!(l.get(0).unwrap(), 1);
    assert_eq!(l.get(-1).unwrap(), 5);
    assert_eq!(l.get(-5).unwrap(), 1);
    for i in [5, -6, i64::MAX, i64::MIN] {
        raises(l.get(i), "IndexError", "list index out of range");
        raises(
            l.set(i, 0),
            "IndexError",
            "list assignment index out of range",
        );
        raises(l.increment(i, 1), "IndexError", "list index out of range");
    }
    l.set(-1, 50).unwrap();
    l.set(0, 1).unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 4, 50]);

    // Insert clamps its index as Python does.
    l.insert(-100, 0).unwrap();
    l.insert(100, 9).unwrap();
    l.insert(2, 7).unwrap();
    l.insert(-1, 8).unwrap();
    l.insert(i64::MIN, -1).unwrap();
    l.insert(i64::MAX, 10).unwrap();
    assert_eq!(l.to_vec().unwrap(), [-1, 0, 1, 7, 2, 3, 4, 50, 8, 9, 10]);

    // Slices.
    let all = l.to_vec().unwrap();
    for (a, e) in [
        (0, 3),
        (-3, 100),
        (5, 2),
        (-100, 2),
        (0, 0),
        (3, -7),
        (i64::MIN, i64::MAX),
        (100, 200),
        (-1, 0),
        (2, -100),
        (-2, -1),
        (0, -1),
        (i64::MAX, i64::MIN),
    ] {
        let n = all.len() as i64;
        let clamp = |i: i64| (if i < 0 { i.saturating_add(n) } else { i }).clamp(0, n) as usize;
        let want = all.get(clamp(a)..clamp(e)).unwrap_or_default();
        assert_eq!(l.slice(a, e).unwrap(), want, "l[{a}:{e}]");
    }
    assert_eq!(l.slice(0, 3).unwrap(), [-1, 0, 1]);
    assert_eq!(l.slice(-3, 100).unwrap(), [8, 9, 10]);

    // Pop at the ends and inside.
    assert_eq!(l.pop(-1).unwrap(), 10);
    assert_eq!(l.pop(0).unwrap(), -1);
    assert_eq!(l.pop(3).unwrap(), 2);
    assert_eq!(l.pop(-2).unwrap(), 8);
    for i in [100, -100, i64::MAX, i64::MIN] {
        raises(l.pop(i), "IndexError", "pop index out of range");
    }
    assert_eq!(l.to_vec().unwrap(), [0, 1, 7, 3, 4, 50, 9]);

    // Index, count, remove.
    assert_eq!(l.index(&7).unwrap(), 2);
    raises(l.index(&99), "ValueError", "99 is not in list");
    l.append(7).unwrap();
    assert_eq!(l.count(&7).unwrap(), 2);
    assert_eq!(l.count(&99).unwrap(), 0);
    l.remove(&7).unwrap();
    assert_eq!(l.to_vec().unwrap(), [0, 1, 3, 4, 50, 9, 7]);
    raises(l.remove(&99), "ValueError", "list.remove(x): x not in list");
    assert_eq!(l.index(&7).unwrap(), 6);

    // Reverse, sort, Display.
    l.reverse().unwrap();
    assert_eq!(l.to_vec().unwrap(), [7, 9, 50, 4, 3, 1, 0]);
    l.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), [0, 1, 3, 4, 7, 9, 50]);
    assert_eq!(l.to_string(), "[0, 1, 3, 4, 7, 9, 50]");

    // Increments.
    assert_eq!(l.increment(0, 5).unwrap(), 5);
    assert_eq!(l.increment(-1, -50).unwrap(), 0);
    assert_eq!(l.increment(1, i64::MIN).unwrap(), i64::MIN + 1);
    assert_eq!(l.to_vec().unwrap(), [5, i64::MIN + 1, 3, 4, 7, 9, 0]);

    l.clear().unwrap();
    assert_eq!(l.len().unwrap(), 0);
    assert_eq!(l.to_vec().unwrap(), Vec::<i64>::new());
    l.sort().unwrap();
    l.reverse().unwrap();
    assert_eq!(l.to_string(), "[]");
}

fn mixed_list_methods(b: &Backend) {
    use V::{B, F, I, S};
    let l = b.list::<V>("mixed");

    // Ints and floats sort as numbers, stably (2.0 stays before 2).
    l.extend([I(3), F(1.5), I(-2), F(2.0), I(2), F(-0.5)])
        .unwrap();
    l.sort().unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        [I(-2), F(-0.5), F(1.5), F(2.0), I(2), I(3)]
    );
    assert_eq!(l.to_string(), "[-2, -0.5, 1.5, 2.0, 2, 3]");

    // Exactly, where a float cannot hold the int.
    l.clear().unwrap();
    let two63 = 9_223_372_036_854_775_808.0;
    l.extend([
        I(i64::MAX),
        F(two63),
        I(i64::MAX - 1),
        I(9_007_199_254_740_993),
        F(9_007_199_254_740_992.0),
        F(9_007_199_254_740_994.0),
        I(i64::MIN),
        F(f64::NEG_INFINITY),
        F(f64::INFINITY),
        F(-two63),
        I(-9_007_199_254_740_993),
        F(-9_007_199_254_740_992.5),
    ])
    .unwrap();
    l.sort().unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        [
            F(f64::NEG_INFINITY),
            I(i64::MIN),
            F(-two63),
            I(-9_007_199_254_740_993),
            F(-9_007_199_254_740_992.5),
            F(9_007_199_254_740_992.0),
            I(9_007_199_254_740_993),
            F(9_007_199_254_740_994.0),
            I(i64::MAX - 1),
            I(i64::MAX),
            F(two63),
            F(f64::INFINITY),
        ]
    );

    // Bools are ints 0 and 1, for sort and increment.
    l.clear().unwrap();
    l.extend([I(1), B(true), F(0.5), B(false), I(-1)]).unwrap();
    l.sort().unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        [I(-1), B(false), F(0.5), I(1), B(true)]
    );
    assert_eq!(l.increment(4, I(1)).unwrap(), I(2));
    assert_eq!(l.increment(1, B(true)).unwrap(), I(1));
    assert_eq!(l.increment(2, B(true)).unwrap(), F(1.5));
    assert_eq!(l.to_string(), "[-1, 1, 1.5, 1, 2]");

    // Strs by code point (UTF-8 bytes).
    l.clear().unwrap();
    l.extend(["b", "a", "é", "Z", "ab", "", "\u{1f600}", "\u{ffff}"].map(|s| S(s.into())))
        .unwrap();
    l.sort().unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        ["", "Z", "a", "ab", "b", "é", "\u{ffff}", "\u{1f600}"].map(|s| S(s.into()))
    );

    // Unorderable: a TypeError, the list unchanged.
    for (items, message) in [
        (
            vec![I(1), S("a".into())],
            "'<' not supported between instances of 'str' and 'int'",
        ),
        (
            vec![S("a".into()), I(1)],
            "'<' not supported between instances of 'int' and 'str'",
        ),
        (
            vec![S("x".into()), F(1.5), I(1)],
            "'<' not supported between instances of 'float' and 'str'",
        ),
        // Python names the pair its merge meets first: not checked.
        (vec![I(3), I(2), F(1.0), S("z".into()), I(0)], ""),
    ] {
        l.clear().unwrap();
        l.extend(items.clone()).unwrap();
        let (kind, got) = raised(l.sort());
        assert_eq!(kind, "TypeError", "{items:?}");
        if !message.is_empty() {
            assert_eq!(got, message, "{items:?}");
        }
        assert_eq!(l.to_vec().unwrap(), items, "unchanged after a failed sort");
    }

    // Increments of floats, and of ints by floats.
    l.clear().unwrap();
    l.extend([F(0.1), I(1), F(1.5), F(5e15), F(1e300), F(1e-5), F(0.5)])
        .unwrap();
    assert_eq!(l.increment(0, F(0.2)).unwrap(), F(0.1 + 0.2));
    assert_eq!(l.increment(1, F(0.5)).unwrap(), F(1.5));
    assert_eq!(l.increment(2, I(1)).unwrap(), F(2.5));
    assert_eq!(l.increment(3, F(5e15)).unwrap(), F(1e16));
    assert_eq!(l.increment(4, F(1e300)).unwrap(), F(2e300));
    assert_eq!(l.increment(5, F(0.0)).unwrap(), F(1e-5));
    assert_eq!(l.increment(6, F(0.5)).unwrap(), F(1.0));
    // Stored as a float given by the caller is: found by equality.
    for (i, v) in [0.1 + 0.2, 1.5, 2.5, 1e16, 2e300, 1e-5, 1.0]
        .into_iter()
        .enumerate()
    {
        assert_eq!(l.index(&F(v)).unwrap(), i, "{v:?}");
    }
    assert_eq!(
        l.to_string(),
        "[0.30000000000000004, 1.5, 2.5, 1e+16, 2e+300, 1e-05, 1.0]"
    );

    // A float an increment makes is stored as the caller's own floats
    // are (found by `index` on Redis, where equality is the encoding's).
    let floats = [
        0.1,
        1e-4,
        9.9999e-5,
        1.0000000000000002e-4,
        9.999999999999998e15,
        1e16,
        1.2345678901234567e16,
        123456789.125,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        -1.5e-7,
        -0.0,
        1e21,
        1e22,
        2.0 / 3.0,
        100.0,
        1e15,
        123e-20,
        -9_007_199_254_740_993.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    l.clear().unwrap();
    l.extend(floats.map(F)).unwrap();
    for (i, x) in floats.into_iter().enumerate() {
        let got = l.increment(i as i64, F(-0.0)).unwrap();
        match got {
            F(y) => assert_eq!(y.to_bits(), x.to_bits(), "{x:?}"),
            other => panic!("{x:?} + -0.0 = {other:?}"),
        }
        assert_eq!(l.index(&F(x)).unwrap(), i, "{x:?}");
    }
    // NaNs sort without an error.
    l.clear().unwrap();
    l.extend([F(2.0), F(f64::NAN), I(1), F(0.5)]).unwrap();
    l.sort().unwrap();
    assert_eq!(l.len().unwrap(), 4);
    assert_eq!(l.increment(0, F(f64::NAN)).map(|_| ()).unwrap(), ());

    // Not numbers: a TypeError, nothing changed.
    l.clear().unwrap();
    l.extend([S("a".into()), I(1)]).unwrap();
    raises(
        l.increment(0, I(1)),
        "TypeError",
        "unsupported operand type(s) for +=: 'str' and 'int'",
    );
    raises(
        l.increment(1, S("b".into())),
        "TypeError",
        "unsupported operand type(s) for +=: 'int' and 'str'",
    );
    assert_eq!(l.to_vec().unwrap(), [S("a".into()), I(1)]);
    assert_eq!(l.to_string(), "['a', 1]");
}

/// 4 processes append 500 items each (none lost), then increment one
/// item 250 times each (no lost update).
fn processes_share_the_list(b: &Backend) {
    let l = b.list::<i64>("shared");
    let children: Vec<_> = (0..4)
        .map(|c| {
            let l = l.clone();
            static_child(move || {
                for j in 0..500 {
                    l.append(c * 1000 + j).unwrap();
                }
            })
        })
        .collect();
    for c in &children {
        assert_eq!(join(c, LIMIT), 0);
    }
    assert_eq!(l.len().unwrap(), 2000);
    let mut got = l.to_vec().unwrap();
    got.sort_unstable();
    let want: Vec<i64> = (0..4)
        .flat_map(|c| (0..500).map(move |j| c * 1000 + j))
        .collect();
    assert_eq!(got, want);
    // Each child's items in its order.
    let all = l.to_vec().unwrap();
    for c in 0..4 {
        let mine: Vec<i64> = all.iter().copied().filter(|v| v / 1000 == c).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "child {c}");
    }

    l.clear().unwrap();
    l.extend([7, 0, 9]).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            let l = l.clone();
            static_child(move || {
                for _ in 0..250 {
                    l.increment(1, 1).unwrap();
                }
            })
        })
        .collect();
    for c in &children {
        assert_eq!(join(c, LIMIT), 0);
    }
    assert_eq!(l.to_vec().unwrap(), [7, 1000, 9]);
}

#[test]
fn list_methods_answer_alike_on_both_backends() {
    for b in backends("list_methods_answer_alike_on_both_backends") {
        watchdog(b.what, LIMIT, || {
            int_list_methods(&b);
            mixed_list_methods(&b);
        });
    }
}

#[test]
fn processes_share_a_list_on_both_backends() {
    for b in backends("processes_share_a_list_on_both_backends") {
        watchdog(b.what, LIMIT, || processes_share_the_list(&b));
    }
}

#[test]
fn one_extend_of_a_thousand_items() {
    for b in backends("one_extend_of_a_thousand_items") {
        watchdog(b.what, LIMIT, || {
            let l = b.list::<i64>("thousand");
            l.extend(0..1000).unwrap();
            assert_eq!(l.len().unwrap(), 1000);
            assert_eq!(l.slice(998, 2000).unwrap(), [998, 999]);
            l.reverse().unwrap();
            assert_eq!(l.get(0).unwrap(), 999);
            l.sort().unwrap();
            assert_eq!(l.to_vec().unwrap(), (0..1000).collect::<Vec<_>>());
        });
    }
}

/// The differences the docs name: equality is the encodings', ints are of
/// 64 bits.
#[test]
fn redis_lists_differ_where_documented() {
    let Some(url) = redis_url("redis_lists_differ_where_documented") else {
        return;
    };
    watchdog("differences", LIMIT, || {
        let m = Manager::connect_redis(&url).unwrap();
        let name = unique("differ");
        let l = m.list_named::<V>(&name).unwrap();
        l.extend([V::I(1), V::F(1.0), V::I(1)]).unwrap();
        assert_eq!(l.count(&V::I(1)).unwrap(), 2);
        assert_eq!(l.count(&V::F(1.0)).unwrap(), 1);
        assert_eq!(l.index(&V::F(1.0)).unwrap(), 1);
        l.remove(&V::F(1.0)).unwrap();
        assert_eq!(l.to_vec().unwrap(), [V::I(1), V::I(1)]);

        let n = m.list_named::<i64>(&name).unwrap();
        n.set(0, i64::MAX).unwrap();
        let (kind, _) = raised(n.increment(0, 1));
        assert_eq!(kind, "OverflowError");
        n.set(1, i64::MIN).unwrap();
        let (kind, _) = raised(n.increment(1, -1));
        assert_eq!(kind, "OverflowError");
        assert_eq!(n.to_vec().unwrap(), [i64::MAX, i64::MIN], "unchanged");
        // Ints beyond 64 bits are an OverflowError.
        let u = m.list_named::<u64>(&name).unwrap();
        let (kind, _) = raised(u.increment(0, u64::MAX));
        assert_eq!(kind, "OverflowError");
        // Bools are not ints to equality.
        let b = m.list_named::<V>(&name).unwrap();
        b.clear().unwrap();
        b.extend([V::B(true), V::I(1)]).unwrap();
        assert_eq!(b.index(&V::I(1)).unwrap(), 1);
        assert_eq!(b.count(&V::B(true)).unwrap(), 1);
        // Tuples are not ordered.
        let t = m.list_named::<(i64, i64)>(&name).unwrap();
        t.clear().unwrap();
        t.extend([(2, 1), (1, 2)]).unwrap();
        assert_eq!(raised(t.sort()).0, "TypeError");
        assert_eq!(t.to_vec().unwrap(), [(2, 1), (1, 2)]);
        assert!(m.remove_named(&name).unwrap());
    });
}

/// A value another program pushed is a `Deserialize` error, never a panic.
#[test]
fn a_foreign_value_is_a_deserialize_error() {
    let Some(url) = redis_url("a_foreign_value_is_a_deserialize_error") else {
        return;
    };
    watchdog("foreign", LIMIT, || {
        let m = Manager::connect_redis(&url).unwrap();
        let name = unique("foreign");
        let l = m.list_named::<i64>(&name).unwrap();
        l.append(5).unwrap();
        let mut raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let key = format!("multiproc:{{list:{name}}}:l");
        redis::cmd("RPUSH")
            .arg(&key)
            .arg("junk")
            .arg(b"s\xff".as_slice())
            .arg("12x")
            .query::<i64>(&mut raw)
            .unwrap();
        let deser = |r: multiproc::Result<_>| matches!(r, Err(Error::Deserialize(_)));
        assert!(deser(l.get(1).map(drop)));
        assert!(deser(l.get(2).map(drop)));
        assert!(deser(l.get(-1).map(drop)));
        assert!(deser(l.to_vec().map(drop)));
        assert!(deser(l.slice(0, 2).map(drop)));
        assert!(deser(l.increment(1, 1).map(drop)));
        assert!(deser(l.sort()));
        let stored = |raw: &mut redis::Connection| {
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query::<Vec<Vec<u8>>>(raw)
                .unwrap()
        };
        let before = stored(&mut raw);
        // A pop of an item that does not decode takes nothing.
        for at in [1, 2, -1] {
            assert!(deser(l.pop(at).map(drop)));
            assert_eq!(stored(&mut raw), before, "pop({at})");
        }
        let shown = l.to_string();
        assert!(shown.starts_with("<ListProxy object "), "{shown}");
        assert_eq!(l.get(0).unwrap(), 5);
        assert_eq!(l.len().unwrap(), 4);
        // A key of another type: a clear error.
        let other = unique("wrongtype");
        let okey = format!("multiproc:{{list:{other}}}:l");
        redis::cmd("SET")
            .arg(&okey)
            .arg("x")
            .query::<()>(&mut raw)
            .unwrap();
        let w = m.list_named::<i64>(&other).unwrap();
        assert!(w.len().is_err());
        assert!(w.append(1).is_err());
        assert!(w.sort().is_err());
        assert!(m.remove_named(&other).unwrap());
        assert!(m.remove_named(&name).unwrap());
    });
}

/// How many times the server has run `command` (its `INFO commandstats`).
fn calls(raw: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    let tag = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(tag.as_str()))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// `extend` of 1000 items is one `RPUSH`; a compound operation is one
/// script (a server of the test's own: no other client counts).
#[test]
fn each_operation_is_one_command_or_one_script() {
    let Some(server) =
        common::redis::OwnServer::start("each_operation_is_one_command_or_one_script")
    else {
        return;
    };
    watchdog("round trips", LIMIT, || {
        let m = Manager::connect_redis(&server.url()).unwrap();
        let l = m.list_named::<i64>("counted").unwrap();
        let mut raw = redis::Client::open(server.url().as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let before = calls(&mut raw, "rpush");
        l.extend(0..1000).unwrap();
        assert_eq!(calls(&mut raw, "rpush") - before, 1);
        assert_eq!(l.len().unwrap(), 1000);
        // Each script once, so that it is loaded; then each is one EVALSHA.
        let ops: [&dyn Fn(); 5] = [
            &|| l.insert(500, -1).unwrap(),
            &|| assert_eq!(l.pop(500).unwrap(), -1),
            &|| l.sort().unwrap(),
            &|| l.set(10, 10).unwrap(),
            &|| assert_eq!(l.increment(10, 0).unwrap(), 10),
        ];
        for op in ops {
            op();
        }
        for op in ops {
            let (sha, eval) = (calls(&mut raw, "evalsha"), calls(&mut raw, "eval"));
            op();
            assert_eq!(calls(&mut raw, "evalsha") - sha, 1);
            assert_eq!(calls(&mut raw, "eval"), eval);
        }
        assert_eq!(l.to_vec().unwrap(), (0..1000).collect::<Vec<_>>());
        assert!(m.remove_named("counted").unwrap());
    });
}

/// A server out of memory refuses a rewrite: the list is left as it was
/// (a script's pushes are taken back), and it is readable and shrinkable.
#[test]
fn out_of_memory_leaves_the_list_as_it_was() {
    let Some(server) = common::redis::OwnServer::start("out_of_memory_leaves_the_list_as_it_was")
    else {
        return;
    };
    watchdog("out of memory", LIMIT, || {
        let m = Manager::connect_redis(&server.url()).unwrap();
        let l = m.list_named::<i64>("full").unwrap();
        l.extend((0..3000).rev()).unwrap();
        let mut raw = redis::Client::open(server.url().as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(1)
            .query::<()>(&mut raw)
            .unwrap();
        let before = l.to_vec().unwrap();
        assert!(l.sort().is_err());
        assert!(l.reverse().is_err());
        assert!(l.insert(5, 1).is_err());
        assert!(l.append(1).is_err());
        assert_eq!(l.to_vec().unwrap(), before);
        assert_eq!(l.pop(-1).unwrap(), 0);
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(0)
            .query::<()>(&mut raw)
            .unwrap();
        l.sort().unwrap();
        assert_eq!(l.to_vec().unwrap(), (1..3000).collect::<Vec<_>>());
        assert!(m.remove_named("full").unwrap());
    });
}
