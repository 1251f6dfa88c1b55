//! A fifth round of attacks on the Redis backend: values another program
//! wrote taken out of an object (never lost), keys of another Redis type,
//! limits of the arguments, and a server that is gone.
//!
//! Needs `MULTIPROC_TEST_REDIS` (see tests/common/redis.rs): skipped with a
//! printed reason without it, a failure in CI.

#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::redis::{attack, raw};
use multiproc::{Error, Manager};

const LIMIT: Duration = Duration::from_secs(60);

/// Values no multiproc program writes: not an encoding, a str that is not
/// UTF-8, an int past 64 bits, a float that does not parse, a broken pickle.
const FOREIGN: [&[u8]; 6] = [
    b"junk",
    b"",
    b"s\xff",
    b"99999999999999999999",
    b"f1.5.5",
    b"\x80\x04junk",
];

fn deserialize<T: std::fmt::Debug>(r: multiproc::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::Deserialize(_))), "{what}: {r:?}");
}

fn lrange(conn: &mut redis::Connection, key: &str) -> Vec<Vec<u8>> {
    cmd(conn, "LRANGE", (key, 0, -1))
}

/// Runs the Redis command `name` with `args` (a tuple), as another program
/// would: its answer.
fn cmd<T: redis::FromRedisValue>(
    conn: &mut redis::Connection,
    name: &str,
    args: impl redis::ToRedisArgs,
) -> T {
    redis::cmd(name).arg(args).query(conn).unwrap()
}

/// A list item another program wrote that does not decode, popped (at
/// either end or inside, by an index from the start or the end): a
/// `Deserialize` error, and the item is still where it was, as is every
/// other item.
#[test]
fn a_foreign_item_popped_from_a_list_stays_where_it_was() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let key = format!("multiproc:{{list:{name}}}:l");
        let mut conn = raw(url);
        let l = m.list_named::<i64>(name).unwrap();
        for foreign in FOREIGN {
            l.clear().unwrap();
            let _: i64 = cmd(
                &mut conn,
                "RPUSH",
                (&key, foreign, "1", foreign, "2", "3", foreign, "4", foreign),
            );
            let before = lrange(&mut conn, &key);
            for at in [0, 2, 5, 7, -1, -3, -6, -8] {
                deserialize(l.pop(at), &format!("pop({at}) of {foreign:?}"));
                assert_eq!(
                    lrange(&mut conn, &key),
                    before,
                    "pop({at}) of {foreign:?} changed the list"
                );
            }
            // What decodes is still popped, from among the foreign items.
            assert_eq!(l.pop(1).unwrap(), 1);
            assert_eq!(l.pop(-2).unwrap(), 4);
            assert_eq!(l.len().unwrap(), 6);
        }
        assert!(m.remove_named(name).unwrap());
    });
}

/// A dict's value another program wrote that does not decode, popped by
/// key (`pop`, `remove`): a `Deserialize` error, and the item is still
/// there, in its place in the dict's order.
#[test]
fn a_foreign_value_popped_from_a_dict_stays() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let v = format!("multiproc:{{dict:{name}}}:v");
        let mut conn = raw(url);
        let d = m.dict_named::<String, i64>(name).unwrap();
        for foreign in FOREIGN {
            d.clear().unwrap();
            d.set("x".into(), 1).unwrap();
            d.set("y".into(), 2).unwrap();
            d.set("z".into(), 3).unwrap();
            let _: () = cmd(&mut conn, "HSET", (&v, "sy", foreign));
            deserialize(d.pop(&"y".into()), &format!("pop of {foreign:?}"));
            deserialize(d.remove(&"y".into()), &format!("remove of {foreign:?}"));
            let left: Option<Vec<u8>> = cmd(&mut conn, "HGET", (&v, "sy"));
            assert_eq!(left.as_deref(), Some(foreign), "{foreign:?} was taken");
            assert_eq!(d.keys().unwrap(), ["x", "y", "z"]);
            // The last inserted, foreign: popitem leaves it too.
            d.set("y".into(), 2).unwrap();
            let _: () = cmd(&mut conn, "HSET", (&v, "sz", foreign));
            deserialize(d.popitem(), &format!("popitem of {foreign:?}"));
            assert_eq!(d.keys().unwrap(), ["x", "y", "z"]);
            // What decodes is still popped.
            assert_eq!(d.pop(&"y".into()).unwrap(), 2);
            assert_eq!(d.keys().unwrap(), ["x", "z"]);
        }
        assert!(m.remove_named(name).unwrap());
    });
}

/// A dict's key another program wrote that does not decode (a field no
/// multiproc key encodes to), the last inserted: `popitem` is a
/// `Deserialize` error and leaves it, with its value.
#[test]
fn a_foreign_key_popped_from_a_dict_stays() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let v = format!("multiproc:{{dict:{name}}}:v");
        let o = format!("multiproc:{{dict:{name}}}:o");
        let mut conn = raw(url);
        let d = m.dict_named::<String, i64>(name).unwrap();
        d.set("x".into(), 1).unwrap();
        let _: () = cmd(&mut conn, "HSET", (&v, b"\xff", "7"));
        let _: () = cmd(&mut conn, "ZADD", (&o, 100, b"\xff"));
        deserialize(d.popitem(), "popitem of a foreign key");
        let left: Option<String> = cmd(&mut conn, "HGET", (&v, b"\xff"));
        assert_eq!(left.as_deref(), Some("7"));
        let order: Vec<Vec<u8>> = cmd(&mut conn, "ZRANGE", (&o, 0, -1));
        assert_eq!(order, [b"sx".to_vec(), b"\xff".to_vec()]);
        assert!(m.remove_named(name).unwrap());
    });
}

/// Numbers another program wrote that `get` refuses (a hex or spaced
/// float, which Lua's `tonumber` reads; an int past 64 bits): an
/// increment of one is an error and leaves it, in a value, a dict and a
/// list (it was replaced by the sum of what Lua read: lost).
#[test]
fn an_increment_of_a_number_get_refuses_leaves_it() {
    const NUMBERS: [&str; 7] = [
        "f0x10",
        "f 1",
        "f1 ",
        "f-0x1p4",
        "99999999999999999999999",
        "99999999999999999999",
        "-99999999999999999999",
    ];
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let mut conn = raw(url);
        let get = |conn: &mut redis::Connection, cmd: &str, key: &str, at: &str| {
            let mut c = redis::cmd(cmd);
            c.arg(key);
            if !at.is_empty() {
                c.arg(at);
            }
            c.query::<Vec<u8>>(conn).unwrap()
        };
        let value = m.value_named::<f64>(name).unwrap();
        let vkey = format!("multiproc:{{value:{name}}}:v");
        let d = m.dict_named::<String, f64>(name).unwrap();
        let dkey = format!("multiproc:{{dict:{name}}}:v");
        let l = m.list_named::<f64>(name).unwrap();
        let lkey = format!("multiproc:{{list:{name}}}:l");
        for foreign in NUMBERS {
            let _: () = cmd(&mut conn, "SET", (&vkey, foreign));
            deserialize(value.get(), &format!("get of {foreign:?}"));
            assert!(value.increment_float(1.0).is_err(), "{foreign:?}");
            assert_eq!(get(&mut conn, "GET", &vkey, ""), foreign.as_bytes());

            d.clear().unwrap();
            d.set("x".into(), 0.0).unwrap();
            let _: () = cmd(&mut conn, "HSET", (&dkey, "sx", foreign));
            deserialize(d.get(&"x".into()), &format!("dict get of {foreign:?}"));
            let r = d.increment(&"x".into(), 1.0);
            assert!(r.is_err(), "dict {foreign:?}: {r:?}");
            assert_eq!(get(&mut conn, "HGET", &dkey, "sx"), foreign.as_bytes());

            l.clear().unwrap();
            let _: () = cmd(&mut conn, "RPUSH", (&lkey, foreign));
            deserialize(l.get(0), &format!("list get of {foreign:?}"));
            let r = l.increment(0, 1.0);
            assert!(r.is_err(), "list {foreign:?}: {r:?}");
            assert_eq!(get(&mut conn, "LINDEX", &lkey, "0"), foreign.as_bytes());
        }
        assert!(m.remove_named(name).unwrap());
        common::redis::no_leftovers(url, name);
    });
}

/// Values a script cannot tell decode (pickles: tuples, big ints, None
/// inside a tuple) are taken on a second look, once decoded: `pop` and
/// `popitem` answer them and take them, and only them.
#[test]
fn values_decoded_before_they_are_taken_are_taken() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let l = m.list_named::<(i64, Option<String>)>(name).unwrap();
        let items: Vec<(i64, Option<String>)> = (0..8)
            .map(|i| (i, (i % 2 == 0).then(|| "é".repeat(i as usize))))
            .collect();
        l.extend(items.clone()).unwrap();
        let mut left = items.clone();
        for at in [0i64, -1, 3, -3, 1] {
            let i = if at < 0 { left.len() as i64 + at } else { at } as usize;
            assert_eq!(l.pop(at).unwrap(), left.remove(i), "pop({at})");
            assert_eq!(l.to_vec().unwrap(), left, "pop({at})");
        }
        let d = m.dict_named::<(i64, i64), Vec<u8>>(name).unwrap();
        for i in 0..4 {
            d.set((i, -i), vec![0xff; i as usize]).unwrap();
        }
        assert_eq!(d.pop(&(1, -1)).unwrap(), [0xff]);
        assert_eq!(d.popitem().unwrap(), ((3, -3), vec![0xff; 3]));
        assert_eq!(d.keys().unwrap(), [(0, 0), (2, -2)]);
        assert!(m.remove_named(name).unwrap());
    });
}

/// Every key of `keys` as Redis serializes it (`DUMP`), to compare.
fn dump(conn: &mut redis::Connection, keys: &[String]) -> Vec<Option<Vec<u8>>> {
    keys.iter().map(|k| cmd(conn, "DUMP", (k,))).collect()
}

/// Every operation of a list and a dict that fails on what another
/// program wrote (each foreign value at each place) fails having written
/// nothing: a failed call changed nothing, so nothing is lost.
#[test]
fn an_operation_that_fails_on_foreign_values_writes_nothing() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let mut conn = raw(url);
        let part = |kind: &str, p: &str| format!("multiproc:{{{kind}:{name}}}:{p}");
        let lkeys = [part("list", "l"), part("list", "t")];
        let dkeys = [part("dict", "v"), part("dict", "o"), part("dict", "k")];
        let l = m.list_named::<i64>(name).unwrap();
        let d = m.dict_named::<String, i64>(name).unwrap();
        let mut failed = 0;
        for foreign in FOREIGN.iter().chain(&[&b"f0x10"[..], b"f 1"]) {
            for at in 0..3i64 {
                l.clear().unwrap();
                l.extend([1, 2]).unwrap();
                let _: () = cmd(
                    &mut conn,
                    "LINSERT",
                    (
                        &lkeys[0],
                        "BEFORE",
                        if at == 0 { "1" } else { "2" },
                        foreign,
                    ),
                );
                if at == 2 {
                    let _: () = cmd(&mut conn, "RPUSH", (&lkeys[0], foreign));
                }
                let ops: [(&str, &dyn Fn() -> multiproc::Result<()>); 11] = [
                    ("pop", &|| l.pop(at).map(drop)),
                    ("pop(-1)", &|| l.pop(-1).map(drop)),
                    ("increment", &|| l.increment(at, 1).map(drop)),
                    ("increment(-1)", &|| l.increment(-1, 1).map(drop)),
                    ("sort", &|| l.sort()),
                    ("get", &|| l.get(at).map(drop)),
                    ("to_vec", &|| l.to_vec().map(drop)),
                    ("index", &|| l.index(&7).map(drop)),
                    ("remove", &|| l.remove(&7)),
                    ("slice", &|| l.slice(0, 9).map(drop)),
                    ("set", &|| l.set(9, 1)),
                ];
                for (what, op) in ops {
                    let before = dump(&mut conn, &lkeys);
                    if op().is_err() {
                        failed += 1;
                        assert_eq!(
                            dump(&mut conn, &lkeys),
                            before,
                            "list {what} at {at} of {foreign:?} failed and wrote"
                        );
                    }
                }
            }
            for field in [&b"sx"[..], b"sz", b"\xff"] {
                d.clear().unwrap();
                d.set("x".into(), 1).unwrap();
                d.set("y".into(), 2).unwrap();
                let _: () = cmd(&mut conn, "HSET", (&dkeys[0], field, foreign));
                let _: () = cmd(&mut conn, "ZADD", (&dkeys[1], "NX", 100, field));
                let ops: [(&str, &dyn Fn() -> multiproc::Result<()>); 10] = [
                    ("pop", &|| d.pop(&"x".into()).map(drop)),
                    ("remove", &|| d.remove(&"z".into()).map(drop)),
                    ("popitem", &|| d.popitem().map(drop)),
                    ("increment", &|| d.increment(&"x".into(), 1).map(drop)),
                    ("increment z", &|| d.increment(&"z".into(), 1).map(drop)),
                    ("setdefault", &|| d.setdefault("x".into(), 5).map(drop)),
                    ("items", &|| d.items().map(drop)),
                    ("keys", &|| d.keys().map(drop)),
                    ("values", &|| d.values().map(drop)),
                    ("compare_and_set", &|| {
                        d.compare_and_set(&"x".into(), Some(&1), 3).map(drop)
                    }),
                ];
                for (what, op) in ops {
                    let before = dump(&mut conn, &dkeys);
                    if op().is_err() {
                        failed += 1;
                        assert_eq!(
                            dump(&mut conn, &dkeys),
                            before,
                            "dict {what} with {field:?} = {foreign:?} failed and wrote"
                        );
                    }
                }
            }
        }
        assert!(
            failed > 100,
            "only {failed} failures: the values were not foreign"
        );
        assert!(m.remove_named(name).unwrap());
    });
}

/// Plants a key of Redis type `kind` at `key`.
fn plant(conn: &mut redis::Connection, key: &str, kind: &str) {
    let _: () = cmd(conn, "DEL", (key,));
    let mut c = match kind {
        "string" => redis::cmd("SET"),
        "list" => redis::cmd("RPUSH"),
        "set" => redis::cmd("SADD"),
        "zset" => {
            let mut c = redis::cmd("ZADD");
            c.arg(key).arg(1);
            c.arg("sx");
            let _: () = c.query(conn).unwrap();
            return;
        }
        "hash" => {
            let mut c = redis::cmd("HSET");
            c.arg(key).arg("sx");
            c.arg("1");
            let _: () = c.query(conn).unwrap();
            return;
        }
        _ => {
            let mut c = redis::cmd("XADD");
            c.arg(key).arg("*").arg("sx").arg("1");
            let _: () = c.query(conn).unwrap();
            return;
        }
    };
    c.arg(key).arg("sx");
    let _: () = c.query(conn).unwrap();
}

/// A part of a list or dict that another program made a key of another
/// Redis type: every operation that fails on it (a clear error, never a
/// panic or a hang) has written nothing.
#[test]
fn an_operation_that_fails_on_a_part_of_another_type_writes_nothing() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let mut conn = raw(url);
        let part = |kind: &str, p: &str| format!("multiproc:{{{kind}:{name}}}:{p}");
        let lkeys = [part("list", "l"), part("list", "t")];
        let dkeys = [part("dict", "v"), part("dict", "o"), part("dict", "k")];
        let l = m.list_named::<i64>(name).unwrap();
        let d = m.dict_named::<String, i64>(name).unwrap();
        let mut failed = 0;
        for kind in ["string", "list", "set", "zset", "hash", "stream"] {
            for at in 0..lkeys.len() {
                if at == 0 && kind == "list" {
                    continue;
                }
                l.clear().unwrap();
                l.extend([1, 2, 3]).unwrap();
                plant(&mut conn, &lkeys[at], kind);
                let ops: [(&str, &dyn Fn() -> multiproc::Result<()>); 14] = [
                    ("pop", &|| l.pop(1).map(drop)),
                    ("pop(-1)", &|| l.pop(-1).map(drop)),
                    ("increment", &|| l.increment(1, 1).map(drop)),
                    ("sort", &|| l.sort()),
                    ("reverse", &|| l.reverse()),
                    ("insert", &|| l.insert(1, 5)),
                    ("append", &|| l.append(5)),
                    ("extend", &|| l.extend([5, 6])),
                    ("set", &|| l.set(1, 5)),
                    ("remove", &|| l.remove(&2)),
                    ("index", &|| l.index(&2).map(drop)),
                    ("len", &|| l.len().map(drop)),
                    ("to_vec", &|| l.to_vec().map(drop)),
                    ("get", &|| l.get(1).map(drop)),
                ];
                for (what, op) in ops {
                    let before = dump(&mut conn, &lkeys);
                    if op().is_err() {
                        failed += 1;
                        assert_eq!(
                            dump(&mut conn, &lkeys),
                            before,
                            "list {what} with a {kind} at {} failed and wrote",
                            lkeys[at]
                        );
                    }
                }
            }
            for (at, own) in ["hash", "zset", "hash"].into_iter().enumerate() {
                if kind == own {
                    continue;
                }
                d.clear().unwrap();
                d.set("x".into(), 1).unwrap();
                d.set("y".into(), 2).unwrap();
                plant(&mut conn, &dkeys[at], kind);
                let ops: [(&str, &dyn Fn() -> multiproc::Result<()>); 14] = [
                    ("pop", &|| d.pop(&"x".into()).map(drop)),
                    ("remove", &|| d.remove(&"x".into()).map(drop)),
                    ("popitem", &|| d.popitem().map(drop)),
                    ("increment", &|| d.increment(&"x".into(), 1).map(drop)),
                    ("setdefault", &|| d.setdefault("z".into(), 5).map(drop)),
                    ("set", &|| d.set("z".into(), 5)),
                    ("set_many", &|| {
                        d.set_many([("z".into(), 5), ("w".into(), 6)])
                    }),
                    ("items", &|| d.items().map(drop)),
                    ("keys", &|| d.keys().map(drop)),
                    ("len", &|| d.len().map(drop)),
                    ("get", &|| d.get(&"x".into()).map(drop)),
                    ("contains", &|| d.contains(&"x".into()).map(drop)),
                    ("get_many", &|| {
                        d.get_many(&["x".into(), "q".into()]).map(drop)
                    }),
                    ("compare_and_set", &|| {
                        d.compare_and_set(&"x".into(), Some(&1), 3).map(drop)
                    }),
                ];
                for (what, op) in ops {
                    let before = dump(&mut conn, &dkeys);
                    if op().is_err() {
                        failed += 1;
                        assert_eq!(
                            dump(&mut conn, &dkeys),
                            before,
                            "dict {what} with a {kind} at {} failed and wrote",
                            dkeys[at]
                        );
                    }
                }
            }
        }
        assert!(
            failed > 100,
            "only {failed} failures: the keys were not foreign"
        );
        assert!(m.remove_named(name).unwrap());
    });
}

/// A pop that takes two looks (a value the script cannot tell decodes)
/// on a server killed before it, and restarted empty: a clear error
/// within the timeout, never a hang or a panic, and the next pop on the
/// restarted server works.
#[test]
fn a_two_look_pop_on_a_killed_server_is_a_clear_error() {
    let test = "a_two_look_pop_on_a_killed_server_is_a_clear_error";
    common::watchdog(test, LIMIT, || {
        let Some(mut server) = common::redis::OwnServer::start(test) else {
            return;
        };
        let timeout = Duration::from_secs(2);
        let m = Manager::connect_redis_with_timeout(&server.url(), timeout).unwrap();
        let name = common::redis::unique("gone");
        let l = m.list_named::<(i64, i64)>(&name).unwrap();
        let d = m.dict_named::<(i64, i64), (i64, i64)>(&name).unwrap();
        l.extend([(1, 1), (2, 2)]).unwrap();
        d.set((1, 1), (2, 2)).unwrap();
        server.kill();
        let gone = |r: multiproc::Result<()>| {
            assert!(
                matches!(r, Err(Error::ManagerGone(_) | Error::Ambiguous(_))),
                "{r:?}"
            );
        };
        let start = std::time::Instant::now();
        gone(l.pop(0).map(drop));
        gone(d.pop(&(1, 1)).map(drop));
        gone(d.popitem().map(drop));
        assert!(start.elapsed() < 4 * timeout, "{:?}", start.elapsed());
        server.restart();
        let r = l.pop(0);
        assert!(
            matches!(&r, Err(Error::Remote { kind, .. }) if kind == "IndexError"),
            "{r:?}"
        );
        l.append((3, 3)).unwrap();
        assert_eq!(l.pop(-1).unwrap(), (3, 3));
        d.set((1, 1), (2, 2)).unwrap();
        assert_eq!(d.popitem().unwrap(), ((1, 1), (2, 2)));
    });
}
