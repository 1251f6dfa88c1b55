//! A Rust user's mistakes with the managed layer, from safe code: proxies
//! typed differently from what their object holds, and the like. Each
//! test is a bug found by attacking the public API, kept as a regression
//! test.

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::manager::{DictProxy, ListProxy, Manager};
use multiproc::Error;

const LIMIT: Duration = Duration::from_secs(60);

/// Whether `r` is the `Deserialize` error of a value that did not decode.
fn undecodable<T: std::fmt::Debug>(r: multiproc::Result<T>) -> bool {
    match r {
        Err(Error::Deserialize(e)) => e.contains("the value was put back"),
        other => {
            eprintln!("not a Deserialize error: {other:?}");
            false
        }
    }
}

/// What a removing call (`pop`, `remove`, `popitem`, a list's `pop`)
/// takes from `m`'s objects and then cannot decode as the proxy's type is
/// put back: the call fails with `Error::Deserialize`, and the object
/// holds what it held (a list, in the same order; a dict's key put back
/// comes last, as one set again does).
fn popped_as_the_wrong_type(m: &Manager) {
    let d = m.dict_from([("a".to_string(), "x".to_string())]).unwrap();
    d.set("b".into(), "y".into()).unwrap();
    d.set("c".into(), "z".into()).unwrap();
    let l = m.list_from(["p", "q", "r", "s"].map(String::from)).unwrap();
    // The same objects through proxies of another type (as a proxy
    // nested in a namespace reads back: any type the user names).
    let ns = m.namespace().unwrap();
    ns.set("d", &d).unwrap();
    ns.set("l", &l).unwrap();
    let wrong_d: DictProxy<String, i64> = ns.get("d").unwrap();
    let wrong_l: ListProxy<i64> = ns.get("l").unwrap();
    let sorted = |mut items: Vec<(String, String)>| {
        items.sort();
        items
    };
    let items = d.items().unwrap();

    assert!(undecodable(wrong_d.pop(&"a".into())));
    assert_eq!(sorted(d.items().unwrap()), items);
    assert!(undecodable(wrong_d.remove(&"b".into())));
    assert_eq!(sorted(d.items().unwrap()), items);
    let order = d.items().unwrap();
    assert!(undecodable(wrong_d.popitem()));
    assert_eq!(d.items().unwrap(), order);

    let all = l.to_vec().unwrap();
    for at in [0, 2, -1, -2, -4] {
        assert!(undecodable(wrong_l.pop(at)), "pop({at})");
        assert_eq!(l.to_vec().unwrap(), all, "pop({at})");
    }
    // A missing key or index is still the error it was.
    assert!(matches!(
        wrong_d.pop(&"zz".into()),
        Err(Error::Remote { .. })
    ));
    assert_eq!(wrong_d.remove(&"zz".into()).unwrap(), None);
    assert!(matches!(wrong_l.pop(9), Err(Error::Remote { .. })));
    #[cfg(feature = "redis")]
    for name in [d.redis_name(), l.redis_name(), ns.redis_name()]
        .into_iter()
        .flatten()
    {
        m.remove_named(name).unwrap();
    }
}

#[test]
fn a_value_popped_as_the_wrong_type_is_put_back() {
    watchdog("wrong type pops", LIMIT, || {
        popped_as_the_wrong_type(&Manager::start().unwrap());
    });
}

#[cfg(feature = "redis")]
#[test]
fn a_value_popped_as_the_wrong_type_is_put_back_on_redis() {
    watchdog("wrong type pops on Redis", LIMIT, || {
        if let Some((m, _)) = common::redis::manager("wrong type pops on Redis") {
            popped_as_the_wrong_type(&m);
        }
    });
}

/// A unit struct: `None` in the manager's values, as `()` is.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Unit;

/// An `Option` whose value is itself stored as `None` (`Some(None)`,
/// `Some(())`, `Some(Unit)`) would read back as `None`, another value:
/// storing one is an `Error::Serialize`, and nothing is stored. Every
/// other `Option` reads back as itself.
#[test]
fn an_option_that_would_read_back_as_another_is_refused() {
    watchdog("Some(None)", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<i64, Option<Option<i64>>>().unwrap();
        let refused = |r: multiproc::Result<()>| matches!(r, Err(Error::Serialize(_)));
        assert!(refused(d.set(1, Some(None))));
        assert_eq!(d.len().unwrap(), 0);
        for v in [None, Some(Some(0)), Some(Some(-1))] {
            d.set(2, v).unwrap();
            assert_eq!(d.items().unwrap(), [(2, v)]);
        }
        let units = m.list::<Option<()>>().unwrap();
        assert!(refused(units.append(Some(()))));
        units.append(None).unwrap();
        assert_eq!(units.to_vec().unwrap(), [None]);
        let ns = m.namespace().unwrap();
        assert!(refused(ns.set("u", &Some(Unit))));
        assert!(refused(ns.set("v", &vec![Some(None::<String>)])));
        ns.set("w", &Unit).unwrap();
        assert_eq!(ns.get::<Unit>("w").unwrap(), Unit);
        assert!(matches!(ns.get::<i64>("u"), Err(Error::Remote { .. })));
    });
}
