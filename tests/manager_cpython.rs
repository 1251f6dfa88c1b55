//! The Rust client against CPython's own manager server, the reference
//! implementation of the protocol: for every CPython 3.8+ that pyenv has
//! here, a `SyncManager` server is started (`get_server().serve_forever()`
//! on a Unix socket), the dict, list and namespace operations CPython also
//! has are checked against it (values, Python's exception types, nested
//! proxies), and multiproc's private methods are refused with a clear
//! error. The server is stopped by `shutdown`, or killed by pid at the end.
//! Without any CPython 3.8+, the test says so and passes.

mod common;

use std::time::Duration;

use common::cpython::{pyenv_pythons, CpythonServer};
use common::{child, join, watchdog};
use multiproc::conn::Address;
use multiproc::manager::{DictProxy, ListProxy, Manager};
use multiproc::{Error, PyValue};

const LIMIT: Duration = Duration::from_secs(120);

const KEY: &str = "cpython manager key";

fn remote(e: Error) -> (String, String) {
    match e {
        Error::Remote { kind, message } => (kind, message),
        other => panic!("not a remote error: {other:?}"),
    }
}

#[test]
fn the_rust_client_works_against_cpythons_own_manager_server() {
    let pythons: Vec<String> = pyenv_pythons().into_iter().map(|(_, p)| p).collect();
    if pythons.is_empty() {
        println!("no CPython 3.8+ under pyenv: nothing to check against");
        return;
    }
    watchdog("CPython's server", LIMIT * pythons.len() as u32, || {
        for python in &pythons {
            let mut server = CpythonServer::start(python, KEY, "cpython", LIMIT);
            let address = Address::Unix(server.path().to_path_buf());
            let wrong = Manager::connect(address.clone(), b"not the key").unwrap_err();
            assert!(
                matches!(wrong, Error::AuthenticationFailed(_)),
                "{python}: {wrong}"
            );
            let mut m = Manager::connect(address, KEY.as_bytes()).unwrap();
            check(&m, python);
            m.shutdown().unwrap();
            assert!(server.exited_within(LIMIT), "{python}: shutdown");
            println!("ran against {python}");
        }
    });
}

/// The checks against one server.
fn check(m: &Manager, python: &str) {
    let before = m.number_of_objects().unwrap();

    // dict
    let d = m.dict::<String, i64>().unwrap();
    assert!(d.is_empty().unwrap(), "{python}");
    d.set("a".into(), 1).unwrap();
    d.set("b".into(), 2).unwrap();
    d.set("a".into(), 10).unwrap();
    assert_eq!(d.keys().unwrap(), ["a", "b"], "{python}");
    assert_eq!(d.values().unwrap(), [10, 2]);
    assert_eq!(d.items().unwrap(), [("a".into(), 10), ("b".into(), 2)]);
    assert_eq!(d.get(&"a".into()).unwrap(), Some(10));
    assert_eq!(d.get(&"zz".into()).unwrap(), None);
    assert!(d.contains(&"b".into()).unwrap());
    assert!(!d.contains(&"zz".into()).unwrap());
    assert_eq!(d.setdefault("c".into(), 3).unwrap(), 3);
    assert_eq!(d.setdefault("c".into(), 99).unwrap(), 3);
    assert_eq!(d.popitem().unwrap(), ("c".into(), 3));
    assert_eq!(d.pop(&"b".into()).unwrap(), 2);
    let (kind, message) = remote(d.pop(&"b".into()).unwrap_err());
    assert_eq!((kind.as_str(), message.as_str()), ("KeyError", "'b'"));
    assert_eq!(d.remove(&"b".into()).unwrap(), None);
    d.update([("x".into(), 5), ("y".into(), 6)]).unwrap();
    assert_eq!(d.len().unwrap(), 3);
    assert_eq!(d.to_hash_map().unwrap()["y"], 6);
    assert_eq!(d.to_string(), "{'a': 10, 'x': 5, 'y': 6}");
    // Batches, one call at a time on a server without them.
    d.set_many((0..5).map(|i| (format!("k{i}"), i))).unwrap();
    assert_eq!(
        d.get_many(&["k3".to_string(), "nope".to_string()]).unwrap(),
        [Some(3), None]
    );
    d.clear().unwrap();
    assert_eq!(d.len().unwrap(), 0);
    // Mixed keys, as a Python dict holds them: 1, 1.0 and True are one key.
    let mixed = m.dict::<PyValue, PyValue>().unwrap();
    mixed.set(1.into(), "1".into()).unwrap();
    mixed.set("2".into(), 2.into()).unwrap();
    mixed.set(0.25.into(), PyValue::None).unwrap();
    assert_eq!(mixed.to_string(), "{1: '1', '2': 2, 0.25: None}");
    assert_eq!(mixed.get(&1.0.into()).unwrap(), Some("1".into()));
    assert_eq!(mixed.get(&true.into()).unwrap(), Some("1".into()));
    let nested = PyValue::List(vec![
        PyValue::Tuple(vec![1.into()]),
        PyValue::Bytes(b"x\x00".to_vec()),
        PyValue::dict([(PyValue::from("k"), PyValue::from(vec![1.5]))]),
    ]);
    mixed.set("n".into(), nested.clone()).unwrap();
    assert_eq!(mixed.get(&"n".into()).unwrap(), Some(nested));

    // list
    let l = m.list::<i32>().unwrap();
    l.extend([3, 1, 2]).unwrap();
    l.append(5).unwrap();
    l.insert(0, 9).unwrap();
    l.insert(100, 7).unwrap();
    assert_eq!(l.to_vec().unwrap(), [9, 3, 1, 2, 5, 7], "{python}");
    assert_eq!(l.get(-1).unwrap(), 7);
    l.set(-2, 50).unwrap();
    assert_eq!(l.pop(-1).unwrap(), 7);
    assert_eq!(l.index(&1).unwrap(), 2);
    assert_eq!(l.count(&3).unwrap(), 1);
    l.remove(&9).unwrap();
    let (kind, _) = remote(l.remove(&9).unwrap_err());
    assert_eq!(kind, "ValueError");
    let (kind, message) = remote(l.get(10).unwrap_err());
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("IndexError", "list index out of range")
    );
    let (kind, _) = remote(l.index(&12345).unwrap_err());
    assert_eq!(kind, "ValueError");
    l.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 50]);
    l.reverse().unwrap();
    assert_eq!(l.to_vec().unwrap(), [50, 3, 2, 1]);
    assert_eq!(l.slice(1, -1).unwrap(), [3, 2]);
    assert_eq!(l.slice(-100, 100).unwrap(), [50, 3, 2, 1]);
    assert_eq!(l.len().unwrap(), 4);
    assert_eq!(l.to_string(), "[50, 3, 2, 1]");
    let cleared = m.list_from([1, 2]).unwrap();
    cleared.clear().unwrap();
    assert!(cleared.is_empty().unwrap());
    let (kind, _) = remote(m.list_from(Vec::<i32>::new()).unwrap().pop(-1).unwrap_err());
    assert_eq!(kind, "IndexError");
    let unsortable = m.list_from([PyValue::from(1), "a".into()]).unwrap();
    let (kind, _) = remote(unsortable.sort().unwrap_err());
    assert_eq!(kind, "TypeError");
    assert_eq!(
        m.list_from(0..10).unwrap().to_string(),
        "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
    );

    // namespace
    let ns = m.namespace().unwrap();
    ns.set("x", &1.5f64).unwrap();
    ns.set("name", "ns").unwrap();
    ns.set("_hidden", &2).unwrap();
    assert_eq!(ns.get::<f64>("x").unwrap(), 1.5);
    assert_eq!(ns.get::<String>("name").unwrap(), "ns");
    assert_eq!(ns.to_string(), "Namespace(name='ns', x=1.5)");
    ns.del("x").unwrap();
    let (kind, _) = remote(ns.get::<f64>("x").unwrap_err());
    assert_eq!(kind, "AttributeError");
    let (kind, _) = remote(ns.del("x").unwrap_err());
    assert_eq!(kind, "AttributeError");

    // Nested proxies: stored, read back as the same object, popped.
    let holder = m.dict::<String, ListProxy<i32>>().unwrap();
    let inner = m.list_from([1]).unwrap();
    holder.set("l".into(), inner.clone()).unwrap();
    let again = holder.get(&"l".into()).unwrap().unwrap();
    again.append(2).unwrap();
    assert_eq!(inner.to_vec().unwrap(), [1, 2], "{python}");
    let shown = holder.to_string();
    assert!(shown.starts_with("{'l': <ListProxy object"), "{shown}");
    let rows = m.list::<DictProxy<String, i64>>().unwrap();
    let row = m.dict_from([("i".to_string(), 1)]).unwrap();
    rows.append(row.clone()).unwrap();
    ns.set("rows", &rows).unwrap();
    let rows_back: ListProxy<DictProxy<String, i64>> = ns.get("rows").unwrap();
    rows_back.get(0).unwrap().set("i".into(), 7).unwrap();
    assert_eq!(row.get(&"i".into()).unwrap(), Some(7));
    let popped = holder.pop(&"l".into()).unwrap();
    popped.append(3).unwrap();
    assert_eq!(inner.to_vec().unwrap(), [1, 2, 3]);
    drop((again, popped, rows_back, row, rows));

    // multiproc's own methods: refused by CPython's server, clearly.
    let counters = m.dict::<String, i64>().unwrap();
    for e in [
        counters.increment(&"n".into(), 1).unwrap_err(),
        counters.compare_and_set(&"n".into(), None, 1).unwrap_err(),
        m.list_from([1]).unwrap().increment(0, 1).unwrap_err(),
    ] {
        let (kind, message) = remote(e);
        assert_eq!(kind, "RemoteError");
        assert!(
            message.contains("_multiproc_") && message.contains("not multiproc's"),
            "{message}"
        );
    }

    // Objects go when their last proxy does (references are global counts
    // here: a dropped proxy's decref gives its reference back).
    let now = m.number_of_objects().unwrap();
    let extra = m.dict::<u8, u8>().unwrap();
    assert_eq!(m.number_of_objects().unwrap(), now + 1);
    let copy = extra.clone();
    drop(extra);
    assert_eq!(m.number_of_objects().unwrap(), now + 1, "a clone keeps it");
    drop(copy);
    assert_eq!(m.number_of_objects().unwrap(), now);
    assert!(now > before);

    // A forked child uses inherited proxies (on connections of its own).
    multiproc::scope(|s| {
        let c = child(s, || {
            d.set("from child".into(), 1).unwrap();
            inner.append(4).unwrap();
        });
        assert_eq!(join(&c, LIMIT), 0, "{python}");
    });
    assert_eq!(d.get(&"from child".into()).unwrap(), Some(1));
    assert_eq!(inner.to_vec().unwrap(), [1, 2, 3, 4]);
}
