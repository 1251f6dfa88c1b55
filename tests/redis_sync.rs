//! The Redis backend's queue, lock, event and value: each method, across
//! processes, with consumers and holders killed by SIGKILL, timeouts of
//! 0, 1 ns and `Duration::MAX`, foreign values, a server that goes away.

#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::redis::{manager, no_leftovers, raw, remove_all, unique, OwnServer};
use common::{wait_until, watchdog};
use multiproc::{Error, Manager, Process};

const LIMIT: Duration = Duration::from_secs(60);

/// Parks a child forever: the parent kills it.
fn park() -> ! {
    loop {
        std::thread::park();
    }
}

fn start(f: impl FnOnce() + Send + 'static) -> Process<'static> {
    let mut p = Process::new(f);
    p.start().unwrap();
    p
}

#[test]
fn named_sync_objects_need_redis() {
    let local = Manager::start().unwrap();
    assert!(matches!(
        local.queue_named::<i64>("x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        local.lock_named("x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        local.event_named("x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        local.value_named::<i64>("x"),
        Err(Error::InvalidArgument(_))
    ));
    let Some((m, _)) = manager("named_sync_objects_need_redis") else {
        return;
    };
    let long = "x".repeat(513);
    for bad in ["", long.as_str()] {
        assert!(matches!(
            m.queue_named::<i64>(bad),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(m.lock_named(bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(m.event_named(bad), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            m.value_named::<i64>(bad),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn queue_methods() {
    let Some((m, url)) = manager("queue_methods") else {
        return;
    };
    let name = unique("queue");
    let q = m.queue_named::<String>(&name).unwrap();
    assert_eq!(q.name(), name);
    assert!(q.empty().unwrap());
    for t in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(50),
    ] {
        let start = Instant::now();
        assert!(matches!(q.get(Some(t)), Err(Error::Empty)), "{t:?}");
        assert!(start.elapsed() >= t && start.elapsed() < Duration::from_secs(5));
    }
    q.put(&"a".to_string()).unwrap();
    q.put_many(&["b".to_string(), "c".to_string()]).unwrap();
    q.put_many(&[]).unwrap();
    assert_eq!(q.qsize().unwrap(), 3);
    assert!(!q.empty().unwrap());
    let mut got = Vec::new();
    for _ in 0..3 {
        let (item, d) = q.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(d.count(), 1);
        got.push(item);
        assert!(d.ack().unwrap());
    }
    assert_eq!(got, ["a", "b", "c"]);
    assert_eq!(q.qsize().unwrap(), 0);
    assert_eq!(q.reap().unwrap(), 0);
    // Unacknowledged, then the proxy dropped: the consumer ends, and the
    // reaper gives the item back with its second delivery.
    q.put(&"d".to_string()).unwrap();
    let (item, d) = q.get(None).unwrap();
    assert_eq!(item, "d");
    drop(d);
    drop(q);
    let q = m.queue_named::<String>(&name).unwrap();
    let (item, d) = watchdog("the item of a dropped consumer", LIMIT, || {
        q.get(Some(Duration::from_secs(30))).unwrap()
    });
    assert_eq!((item.as_str(), d.count()), ("d", 2));
    assert!(d.ack().unwrap());
    // An item of another type is a dead letter, not lost.
    let ints = m.queue_named::<i64>(&name).unwrap();
    q.put(&"not an int".to_string()).unwrap();
    assert!(matches!(
        ints.get(Some(Duration::ZERO)),
        Err(Error::Deserialize(_))
    ));
    let dead = format!("multiproc:{{queue:{name}}}:dead");
    let n: u64 = redis::cmd("LLEN").arg(&dead).query(&mut raw(&url)).unwrap();
    assert_eq!(n, 1);
    assert!(m.remove_named(&name).unwrap());
    assert!(!m.remove_named(&name).unwrap());
    // The consumers' heartbeats do not bring the removed queue back.
    std::thread::sleep(Duration::from_millis(100));
    drop((q, ints));
    no_leftovers(&url, &name);
}

#[test]
fn waits_longer_than_a_slice_are_woken_after_it() {
    let Some((m, url)) = manager("waits_longer_than_a_slice") else {
        return;
    };
    let name = unique("slices");
    let (q, lock, e) = (
        m.queue_named::<i64>(&name).unwrap(),
        m.lock_named(&name).unwrap(),
        m.event_named(&name).unwrap(),
    );
    let held = lock.acquire(None).unwrap();
    let waiters = [
        std::thread::spawn(move || {
            q.get(Some(Duration::from_secs(20)))
                .map(|(i, d)| (i, d.ack().unwrap()))
                .is_ok()
        }),
        std::thread::spawn(move || lock.acquire(None).is_ok()),
        std::thread::spawn(move || e.wait(Some(Duration::from_secs(20))).unwrap()),
    ];
    std::thread::sleep(Duration::from_millis(5500));
    let (url2, name2) = (url.clone(), name.clone());
    let other = start(move || {
        let m = Manager::connect_redis(&url2).unwrap();
        m.queue_named::<i64>(&name2).unwrap().put(&1).unwrap();
        m.event_named(&name2).unwrap().set().unwrap();
    });
    held.release().unwrap();
    watchdog("waits past a slice", LIMIT, || {
        for w in waiters {
            assert!(w.join().unwrap());
        }
    });
    assert_eq!(other.join().unwrap(), 0);
    remove_all(&m, &url, &name);
}

#[test]
fn foreign_values_in_a_queue_are_errors_not_losses() {
    let Some((m, url)) = manager("foreign_values_in_a_queue") else {
        return;
    };
    let name = unique("queue-foreign");
    let q = m.queue_named::<i64>(&name).unwrap();
    let key = format!("multiproc:{{queue:{name}}}:q");
    let mut c = raw(&url);
    q.put(&1).unwrap();
    for foreign in [
        &b"hello"[..],
        b"",
        b"mpq1:ab:1:?",
        b"mpq1:ab:x:1",
        b"\x80\x04junk",
    ] {
        let _: u64 = redis::cmd("LPUSH")
            .arg(&key)
            .arg(foreign)
            .query(&mut c)
            .unwrap();
    }
    q.put(&2).unwrap();
    let (one, d) = q.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(one, 1);
    d.ack().unwrap();
    for _ in 0..5 {
        let r = q.get(Some(Duration::ZERO));
        assert!(matches!(r, Err(Error::Deserialize(_))), "{r:?}");
    }
    let (two, d) = q.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(two, 2);
    d.ack().unwrap();
    let dead = format!("multiproc:{{queue:{name}}}:dead");
    let n: u64 = redis::cmd("LLEN").arg(&dead).query(&mut c).unwrap();
    assert_eq!(n, 5, "every foreign item is kept");
    // A foreign item in a dead consumer's list goes to the dead letters too.
    let consumers = format!("multiproc:{{queue:{name}}}:c");
    let held = format!("multiproc:{{queue:{name}}}:p:gone");
    let _: u64 = redis::cmd("SADD")
        .arg(&consumers)
        .arg("gone")
        .query(&mut c)
        .unwrap();
    let _: u64 = redis::cmd("LPUSH")
        .arg(&held)
        .arg("junk")
        .query(&mut c)
        .unwrap();
    assert_eq!(q.reap().unwrap(), 0);
    let n: u64 = redis::cmd("LLEN").arg(&dead).query(&mut c).unwrap();
    assert_eq!(n, 6);
    assert!(m.remove_named(&name).unwrap());
    // Keys of another type: errors, for the queue, the lock, the event
    // and the value alike.
    for part in [
        "queue:{n}}:q",
        "lock:{n}}:lease",
        "event:{n}}:flag",
        "value:{n}}:v",
    ] {
        let key = format!("multiproc:{{{}", part.replace("{n}", &name));
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("f")
            .arg("v")
            .query(&mut c)
            .unwrap();
    }
    assert!(matches!(
        q.get(Some(Duration::ZERO)),
        Err(Error::Remote { .. })
    ));
    assert!(matches!(
        q.get(Some(Duration::from_millis(10))),
        Err(Error::Remote { .. })
    ));
    assert!(matches!(q.put(&1), Err(Error::Remote { .. })));
    assert!(matches!(q.qsize(), Err(Error::Remote { .. })));
    let lock = m.lock_named(&name).unwrap();
    assert!(matches!(lock.acquire(None), Err(Error::Remote { .. })));
    let e = m.event_named(&name).unwrap();
    assert!(e.is_set().unwrap(), "a key is there");
    let v = m.value_named::<i64>(&name).unwrap();
    assert!(matches!(v.get(), Err(Error::Remote { .. })));
    assert!(matches!(v.increment(1), Err(Error::Remote { .. })));
    assert!(matches!(
        v.compare_and_set(&1, &2),
        Err(Error::Remote { .. })
    ));
    remove_all(&m, &url, &name);
}

#[test]
fn a_queue_across_four_producers_and_four_consumers() {
    let Some((m, url)) = manager("a_queue_across_processes") else {
        return;
    };
    let name = unique("queue-procs");
    const PER: i64 = 500;
    watchdog("4 producers and 4 consumers", LIMIT, || {
        let mut producers = Vec::new();
        for p in 0..4 {
            let (url, name) = (url.clone(), name.clone());
            producers.push(start(move || {
                let m = Manager::connect_redis(&url).unwrap();
                let q = m.queue_named::<i64>(&name).unwrap();
                let items: Vec<i64> = (p * PER..(p + 1) * PER).collect();
                for chunk in items.chunks(50) {
                    q.put_many(chunk).unwrap();
                }
            }));
        }
        let mut consumers = Vec::new();
        for c in 0..4 {
            let (url, name) = (url.clone(), name.clone());
            consumers.push(start(move || {
                let m = Manager::connect_redis(&url).unwrap();
                let q = m.queue_named::<i64>(&name).unwrap();
                let mut got = Vec::new();
                loop {
                    let (item, d) = q.get(None).unwrap();
                    assert_eq!(d.count(), 1);
                    assert!(d.ack().unwrap());
                    if item < 0 {
                        break;
                    }
                    got.push(item);
                }
                m.value_named::<Vec<i64>>(&format!("{name}-got-{c}"))
                    .unwrap()
                    .set(&got)
                    .unwrap();
            }));
        }
        for p in &producers {
            assert_eq!(p.join().unwrap(), 0);
        }
        let q = m.queue_named::<i64>(&name).unwrap();
        q.put_many(&[-1, -1, -1, -1]).unwrap();
        for c in &consumers {
            assert_eq!(c.join().unwrap(), 0);
        }
    });
    let mut seen = BTreeMap::new();
    for c in 0..4 {
        let got = format!("{name}-got-{c}");
        let items = m
            .value_named::<Vec<i64>>(&got)
            .unwrap()
            .get()
            .unwrap()
            .unwrap();
        for i in items {
            *seen.entry(i).or_insert(0) += 1;
        }
        m.remove_named(&got).unwrap();
    }
    assert_eq!(seen.len(), 4 * PER as usize);
    assert!(seen
        .iter()
        .all(|(i, n)| *n == 1 && (0..4 * PER).contains(i)));
    assert_eq!(m.queue_named::<i64>(&name).unwrap().qsize().unwrap(), 0);
    m.remove_named(&name).unwrap();
}

#[test]
fn a_killed_consumers_items_go_to_another_with_delivery_count_two() {
    let Some((m, url)) = manager("a_killed_consumer") else {
        return;
    };
    let name = unique("queue-kill");
    let ready = format!("{name}-ready");
    // The child's heartbeat is short (its items come back soon after it
    // is killed), this consumer's long (a stall of the test does not
    // make the reaper take what it holds).
    let hb = Duration::from_secs(1);
    let q = m
        .queue_named::<i64>(&name)
        .unwrap()
        .with_heartbeat(Duration::from_secs(5))
        .unwrap();
    q.put_many(&[1, 2, 3, 4, 5]).unwrap();
    let child = {
        let (url, name, ready) = (url.clone(), name.clone(), ready.clone());
        start(move || {
            let m = Manager::connect_redis(&url).unwrap();
            let q = m
                .queue_named::<i64>(&name)
                .unwrap()
                .with_heartbeat(hb)
                .unwrap();
            let held: Vec<_> = (0..3).map(|_| q.get(None).unwrap()).collect();
            m.value_named::<i64>(&ready).unwrap().set(&1).unwrap();
            let _keep = held;
            park();
        })
    };
    let r = m.value_named::<i64>(&ready).unwrap();
    assert!(wait_until(LIMIT, || r.get().unwrap() == Some(1)));
    child.kill().unwrap();
    child.join().unwrap();
    let got = watchdog("the killed consumer's items", LIMIT, || {
        let mut got = BTreeMap::new();
        while got.len() < 5 {
            let (item, d) = q.get(Some(Duration::from_secs(30))).unwrap();
            got.insert(item, d.count());
            assert!(d.ack().unwrap());
        }
        got
    });
    assert_eq!(
        got,
        BTreeMap::from([(1, 2), (2, 2), (3, 2), (4, 1), (5, 1)])
    );
    assert_eq!(q.qsize().unwrap(), 0);
    m.remove_named(&name).unwrap();
    m.remove_named(&ready).unwrap();
}

#[test]
fn a_queue_get_of_duration_max_or_none_ends_with_a_put_from_another_process() {
    let Some((m, url)) = manager("queue_get_max") else {
        return;
    };
    let name = unique("queue-max");
    for timeout in [Some(Duration::MAX), None] {
        let q = m.queue_named::<i64>(&name).unwrap();
        let waiter = std::thread::spawn(move || q.get(timeout).map(|(i, d)| (i, d.ack())));
        let (url, name) = (url.clone(), name.clone());
        let putter = start(move || {
            std::thread::sleep(Duration::from_millis(200));
            let m = Manager::connect_redis(&url).unwrap();
            m.queue_named::<i64>(&name).unwrap().put(&7).unwrap();
        });
        let (item, acked) =
            watchdog("a get without a bound", LIMIT, || waiter.join().unwrap()).unwrap();
        assert_eq!(item, 7);
        assert!(acked.unwrap());
        assert_eq!(putter.join().unwrap(), 0);
    }
    m.remove_named(&name).unwrap();
}

#[test]
fn waits_without_a_bound_end_with_an_error_when_the_server_goes_away() {
    let Some(mut server) = OwnServer::start("waits_end_when_the_server_goes") else {
        return;
    };
    let m = Manager::connect_redis_with_timeout(&server.url(), Duration::from_secs(2)).unwrap();
    let q = m.queue_named::<i64>("q").unwrap();
    let lock = m.lock_named("l").unwrap();
    let _held = lock.acquire(None).unwrap();
    let e = m.event_named("e").unwrap();
    let (q2, l2, e2) = (q.clone(), lock.clone(), e.clone());
    let waiters = [
        std::thread::spawn(move || q2.get(None).err().map(|e| e.to_string())),
        std::thread::spawn(move || l2.acquire(None).err().map(|e| e.to_string())),
        std::thread::spawn(move || e2.wait(None).err().map(|e| e.to_string())),
    ];
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    watchdog("waits on a server killed", LIMIT, || {
        for w in waiters {
            let r = w.join().unwrap();
            assert!(r.is_some(), "a wait ended without an error");
        }
    });
}

#[test]
fn lock_methods_and_a_non_owners_release() {
    let Some((m, _)) = manager("lock_methods") else {
        return;
    };
    let name = unique("lock");
    let lock = m.lock_named(&name).unwrap();
    assert_eq!(lock.name(), name);
    assert!(matches!(
        lock.with_lease(Duration::ZERO),
        Err(Error::InvalidArgument(_))
    ));
    assert!(lock.with_lease(Duration::MAX).is_ok());
    let g = lock.acquire(Some(Duration::ZERO)).unwrap();
    assert!(!g.previous_owner_died());
    let first = g.fencing_token();
    assert!(lock.is_locked().unwrap());
    for t in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(50),
    ] {
        let start = Instant::now();
        assert!(
            matches!(lock.acquire(Some(t)), Err(Error::Timeout)),
            "{t:?}"
        );
        assert!(start.elapsed() >= t && start.elapsed() < Duration::from_secs(5));
    }
    assert!(matches!(lock.try_acquire(), Err(Error::Timeout)));
    g.extend(Duration::from_secs(60)).unwrap();
    assert!(matches!(
        g.extend(Duration::ZERO),
        Err(Error::InvalidArgument(_))
    ));
    g.release().unwrap();
    assert!(!lock.is_locked().unwrap());
    let g = lock.acquire(None).unwrap();
    assert!(g.fencing_token() > first && !g.previous_owner_died());
    drop(g);
    assert!(!lock.is_locked().unwrap());
    // A lease that ends: the next holder is told, the old one is no owner.
    let short = lock.with_lease(Duration::from_millis(100)).unwrap();
    let old = short.acquire(None).unwrap();
    let new = watchdog("a lease that ends", LIMIT, || {
        lock.acquire(Some(Duration::from_secs(30))).unwrap()
    });
    assert!(new.previous_owner_died());
    assert!(new.fencing_token() > old.fencing_token());
    assert!(matches!(
        old.extend(Duration::from_secs(1)),
        Err(Error::NotOwner)
    ));
    assert!(matches!(old.release(), Err(Error::NotOwner)));
    assert!(lock.is_locked().unwrap());
    new.release().unwrap();
    assert!(!lock.acquire(None).unwrap().previous_owner_died());
    assert!(m.remove_named(&name).unwrap());
}

#[test]
fn a_killed_holders_lock_goes_to_the_next_who_is_told() {
    let Some((m, url)) = manager("a_killed_holder") else {
        return;
    };
    let name = unique("lock-kill");
    let fence = format!("{name}-fence");
    let child = {
        let (url, name, fence) = (url.clone(), name.clone(), fence.clone());
        start(move || {
            let m = Manager::connect_redis(&url).unwrap();
            let lock = m.lock_named(&name).unwrap();
            let g = lock
                .with_lease(Duration::from_millis(700))
                .unwrap()
                .acquire(None)
                .unwrap();
            let f = i64::try_from(g.fencing_token()).unwrap();
            m.value_named::<i64>(&fence).unwrap().set(&f).unwrap();
            let _keep = g;
            park();
        })
    };
    let v = m.value_named::<i64>(&fence).unwrap();
    assert!(wait_until(LIMIT, || v.get().unwrap().is_some()));
    child.kill().unwrap();
    child.join().unwrap();
    let theirs = u64::try_from(v.get().unwrap().unwrap()).unwrap();
    let lock = m.lock_named(&name).unwrap();
    let g = watchdog("the killed holder's lock", LIMIT, || {
        lock.acquire(Some(Duration::from_secs(30))).unwrap()
    });
    assert!(g.previous_owner_died());
    assert!(g.fencing_token() > theirs);
    let mine = g.fencing_token();
    g.release().unwrap();
    let g = lock.acquire(None).unwrap();
    assert!(!g.previous_owner_died());
    assert!(g.fencing_token() > mine);
    drop(g);
    m.remove_named(&name).unwrap();
    m.remove_named(&fence).unwrap();
}

#[test]
fn a_lock_acquire_of_duration_max_ends_with_a_release_from_another_process() {
    let Some((m, url)) = manager("lock_acquire_max") else {
        return;
    };
    let name = unique("lock-max");
    let go = format!("{name}-go");
    let child = {
        let (url, name, go) = (url.clone(), name.clone(), go.clone());
        start(move || {
            let m = Manager::connect_redis(&url).unwrap();
            let g = m.lock_named(&name).unwrap().acquire(None).unwrap();
            m.value_named::<i64>(&go).unwrap().set(&1).unwrap();
            assert!(m.event_named(&go).unwrap().wait(None).unwrap());
            g.release().unwrap();
        })
    };
    let v = m.value_named::<i64>(&go).unwrap();
    assert!(wait_until(LIMIT, || v.get().unwrap().is_some()));
    let lock = m.lock_named(&name).unwrap();
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        lock.acquire(Some(Duration::MAX))
            .map(|g| (start.elapsed(), g.previous_owner_died()))
    });
    std::thread::sleep(Duration::from_millis(200));
    m.event_named(&go).unwrap().set().unwrap();
    let (waited, died) = watchdog("an acquire of Duration::MAX", LIMIT, || {
        waiter.join().unwrap()
    })
    .unwrap();
    assert!(!died);
    assert!(
        waited < Duration::from_secs(5),
        "woken by the release: {waited:?}"
    );
    assert_eq!(child.join().unwrap(), 0);
    m.remove_named(&name).unwrap();
    m.remove_named(&go).unwrap();
}

#[test]
fn event_methods_and_waits() {
    let Some((m, url)) = manager("event_methods") else {
        return;
    };
    let name = unique("event");
    let e = m.event_named(&name).unwrap();
    assert_eq!(e.name(), name);
    assert!(!e.is_set().unwrap());
    for t in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(50),
    ] {
        let start = Instant::now();
        assert!(!e.wait(Some(t)).unwrap(), "{t:?}");
        assert!(start.elapsed() >= t && start.elapsed() < Duration::from_secs(5));
    }
    e.set().unwrap();
    assert!(e.is_set().unwrap());
    assert!(e.wait(None).unwrap());
    assert!(e.wait(Some(Duration::ZERO)).unwrap());
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());
    for timeout in [Some(Duration::MAX), None] {
        e.clear().unwrap();
        let mine = e.clone();
        let waiter = std::thread::spawn(move || {
            let start = Instant::now();
            mine.wait(timeout).map(|set| (set, start.elapsed()))
        });
        let (url, name) = (url.clone(), name.clone());
        // Set and cleared at once: the waiter is still told.
        let setter = start(move || {
            std::thread::sleep(Duration::from_millis(300));
            let m = Manager::connect_redis(&url).unwrap();
            let e = m.event_named(&name).unwrap();
            e.set().unwrap();
            e.clear().unwrap();
        });
        let (set, waited) =
            watchdog("a wait without a bound", LIMIT, || waiter.join().unwrap()).unwrap();
        assert!(set);
        assert!(
            waited < Duration::from_secs(4),
            "woken, not polled: {waited:?}"
        );
        assert_eq!(setter.join().unwrap(), 0);
    }
    e.set().unwrap();
    assert!(m.remove_named(&name).unwrap());
    assert!(!e.is_set().unwrap());
}

#[test]
fn value_methods() {
    let Some((m, url)) = manager("value_methods") else {
        return;
    };
    let name = unique("value");
    let v = m.value_named::<i64>(&name).unwrap();
    assert_eq!(v.name(), name);
    assert_eq!(v.get().unwrap(), None);
    assert!(!v.compare_and_set(&0, &1).unwrap());
    assert_eq!(v.increment(5).unwrap(), 5);
    assert_eq!(v.get().unwrap(), Some(5));
    v.set(&i64::MAX).unwrap();
    assert!(matches!(v.increment(1), Err(Error::Remote { .. })));
    assert_eq!(v.get().unwrap(), Some(i64::MAX));
    assert!(v.compare_and_set(&i64::MAX, &-3).unwrap());
    assert!(!v.compare_and_set(&i64::MAX, &4).unwrap());
    assert_eq!(v.get().unwrap(), Some(-3));
    let f = m.value_named::<f64>(&name).unwrap();
    assert_eq!(f.increment_float(0.5).unwrap(), -2.5);
    assert_eq!(f.increment_float(0.1).unwrap(), -2.5 + 0.1);
    assert_eq!(f.get().unwrap(), Some(-2.5 + 0.1));
    assert!(matches!(
        f.increment_float(f64::NAN),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(v.increment(1), Err(Error::Remote { .. })));
    let s = m.value_named::<String>(&name).unwrap();
    s.set(&"text".to_string()).unwrap();
    assert!(
        matches!(f.increment_float(1.0), Err(Error::Remote { kind, .. }) if kind == "TypeError")
    );
    assert!(matches!(v.get(), Err(Error::Deserialize(_))));
    // Written by another program.
    let key = format!("multiproc:{{value:{name}}}:v");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("?garbage")
        .query(&mut raw(&url))
        .unwrap();
    assert!(matches!(s.get(), Err(Error::Deserialize(_))));
    assert!(m.remove_named(&name).unwrap());
    assert_eq!(v.get().unwrap(), None);
}

/// The queue's count of unfinished items, as stored.
fn unfinished(url: &str, name: &str) -> Option<i64> {
    redis::cmd("GET")
        .arg(format!("multiproc:{{queue:{name}}}:u"))
        .query(&mut raw(url))
        .unwrap()
}

#[test]
fn join_returns_after_every_item_is_acked_by_two_consumer_processes() {
    let Some((m, url)) = manager("join_two_consumers") else {
        return;
    };
    let name = unique("queue-join");
    let q = m.queue_named::<i64>(&name).unwrap();
    // Nothing put: done at once, whatever the timeout.
    for t in [Some(Duration::ZERO), Some(Duration::from_nanos(1)), None] {
        q.join(t).unwrap();
    }
    q.put_many(&(0..20).collect::<Vec<_>>()).unwrap();
    assert_eq!(unfinished(&url, &name), Some(20));
    let children: Vec<_> = (0..2)
        .map(|_| {
            let (url, name) = (url.clone(), name.clone());
            start(move || {
                let m = Manager::connect_redis(&url).unwrap();
                let q = m.queue_named::<i64>(&name).unwrap();
                loop {
                    match q.get(Some(Duration::from_millis(200))) {
                        Ok((_, d)) => assert!(d.ack().unwrap()),
                        Err(Error::Empty) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    watchdog("a join while two processes ack", LIMIT, || {
        q.join(Some(Duration::MAX)).unwrap();
        q.join(None).unwrap();
        q.join(Some(Duration::ZERO)).unwrap();
        for c in children {
            c.join().unwrap();
            assert_eq!(c.exitcode(), Some(0));
        }
    });
    assert_eq!(unfinished(&url, &name), Some(0));
    remove_all(&m, &url, &name);
}

#[test]
fn join_times_out_while_an_item_is_unacked() {
    let Some((m, url)) = manager("join_times_out") else {
        return;
    };
    let name = unique("queue-join-timeout");
    let q = m.queue_named::<String>(&name).unwrap();
    q.put(&"a".to_string()).unwrap();
    let (_, d) = q.get(Some(Duration::ZERO)).unwrap();
    watchdog("joins that time out", LIMIT, || {
        for t in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(300),
        ] {
            let start = Instant::now();
            assert!(matches!(q.join(Some(t)), Err(Error::Timeout)), "{t:?}");
            assert!(start.elapsed() >= t && start.elapsed() < Duration::from_secs(10));
        }
        // A join without a bound in another thread ends with the ack.
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.join(None))
        };
        assert!(d.ack().unwrap());
        waiter.join().unwrap().unwrap();
        q.join(Some(Duration::ZERO)).unwrap();
    });
    // A foreign count is an error, not a panic.
    let _: () = redis::cmd("SET")
        .arg(format!("multiproc:{{queue:{name}}}:u"))
        .arg("x")
        .query(&mut raw(&url))
        .unwrap();
    assert!(matches!(
        q.join(Some(Duration::ZERO)),
        Err(Error::Remote { .. })
    ));
    remove_all(&m, &url, &name);
}

#[test]
fn join_returns_after_a_killed_consumers_items_are_redelivered_and_acked() {
    let Some((m, url)) = manager("join_killed_consumer") else {
        return;
    };
    let name = unique("queue-join-kill");
    let ready = format!("{name}-ready");
    let q = m
        .queue_named::<i64>(&name)
        .unwrap()
        .with_heartbeat(Duration::from_secs(5))
        .unwrap();
    q.put_many(&[1, 2, 3]).unwrap();
    let child = {
        let (url, name, ready) = (url.clone(), name.clone(), ready.clone());
        start(move || {
            let m = Manager::connect_redis(&url).unwrap();
            let q = m
                .queue_named::<i64>(&name)
                .unwrap()
                .with_heartbeat(Duration::from_secs(1))
                .unwrap();
            let held: Vec<_> = (0..2).map(|_| q.get(None).unwrap()).collect();
            m.value_named::<i64>(&ready).unwrap().set(&1).unwrap();
            let _keep = held;
            park();
        })
    };
    let r = m.value_named::<i64>(&ready).unwrap();
    assert!(wait_until(LIMIT, || r.get().unwrap() == Some(1)));
    child.kill().unwrap();
    child.join().unwrap();
    // The killed consumer's items are still unfinished.
    assert!(matches!(q.join(Some(Duration::ZERO)), Err(Error::Timeout)));
    watchdog("a join over a killed consumer's items", LIMIT, || {
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.join(None))
        };
        let mut counts = Vec::new();
        for _ in 0..3 {
            let (item, d) = q.get(Some(Duration::from_secs(30))).unwrap();
            counts.push((item, d.count()));
            assert!(d.ack().unwrap());
        }
        counts.sort();
        assert_eq!(counts, [(1, 2), (2, 2), (3, 1)]);
        waiter.join().unwrap().unwrap();
    });
    assert_eq!(unfinished(&url, &name), Some(0));
    m.remove_named(&name).unwrap();
    m.remove_named(&ready).unwrap();
}

#[test]
fn an_ack_after_the_reaper_took_the_item_does_not_count_twice() {
    let Some((m, url)) = manager("ack_after_reap") else {
        return;
    };
    let name = unique("queue-join-reaped");
    let q = m.queue_named::<String>(&name).unwrap();
    q.put(&"a".to_string()).unwrap();
    let (_, first) = q.get(Some(Duration::ZERO)).unwrap();
    // This consumer's heartbeat goes as if it had expired: the reaper
    // gives the item back (the heartbeat thread may set it again between
    // the two; then again).
    let consumers = format!("multiproc:{{queue:{name}}}:c");
    assert!(wait_until(LIMIT, || {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&consumers)
            .query(&mut raw(&url))
            .unwrap();
        for id in ids {
            let _: () = redis::cmd("DEL")
                .arg(format!("multiproc:{{queue:{name}}}:hb:{id}"))
                .query(&mut raw(&url))
                .unwrap();
        }
        q.reap().unwrap() == 1
    }));
    assert!(!first.ack().unwrap());
    assert_eq!(unfinished(&url, &name), Some(1));
    assert!(matches!(q.join(Some(Duration::ZERO)), Err(Error::Timeout)));
    let (_, second) = watchdog("the reaped item", LIMIT, || {
        q.get(Some(Duration::from_secs(30))).unwrap()
    });
    assert_eq!(second.count(), 2);
    assert!(second.ack().unwrap());
    assert_eq!(unfinished(&url, &name), Some(0));
    q.join(Some(Duration::ZERO)).unwrap();
    // A count already 0 (say, set by hand) does not go below 0.
    q.put(&"b".to_string()).unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("multiproc:{{queue:{name}}}:u"))
        .arg(0)
        .query(&mut raw(&url))
        .unwrap();
    let (_, d) = q.get(Some(Duration::ZERO)).unwrap();
    assert!(d.ack().unwrap());
    assert_eq!(unfinished(&url, &name), Some(0));
    assert!(m.remove_named(&name).unwrap());
    drop(q);
    no_leftovers(&url, &name);
}

#[test]
fn queue_lock_event_and_value_proxies_travel_to_a_forked_child() {
    use multiproc::manager::{EventProxy, LockProxy, QueueProxy, ValueProxy};
    let Some((m, _)) = manager("proxies_travel") else {
        return;
    };
    let name = unique("travel");
    let (qn, ln, en, vn) = (
        format!("{name}-q"),
        format!("{name}-l"),
        format!("{name}-e"),
        format!("{name}-v"),
    );
    let q = m.queue_named::<i64>(&qn).unwrap();
    let l = m.lock_named(&ln).unwrap();
    let e = m.event_named(&en).unwrap();
    let v = m.value_named::<i64>(&vn).unwrap();
    v.set(&1).unwrap();
    let held = l.try_acquire().unwrap();
    let (mut parent, mut child_end) = multiproc::Pipe(true).unwrap();
    let child = common::static_child(move || {
        let q: QueueProxy<i64> = child_end.recv().unwrap();
        let l: LockProxy = child_end.recv().unwrap();
        let e: EventProxy = child_end.recv().unwrap();
        let v: ValueProxy<i64> = child_end.recv().unwrap();
        q.put(&42).unwrap();
        assert_eq!(v.increment(10).unwrap(), 11);
        // The parent releases once it got the item.
        let g = l.acquire(Some(Duration::from_secs(30))).unwrap();
        e.set().unwrap();
        g.release().unwrap();
        child_end.send(&()).unwrap();
    });
    parent.send(&q).unwrap();
    parent.send(&l).unwrap();
    parent.send(&e).unwrap();
    parent.send(&v).unwrap();
    watchdog("the child's use of the proxies", LIMIT, || {
        let (item, d) = q.get(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(item, 42);
        assert!(d.ack().unwrap());
        held.release().unwrap();
        assert!(e.wait(Some(Duration::from_secs(30))).unwrap());
        parent.recv::<()>().unwrap();
    });
    assert_eq!(common::join(&child, LIMIT), 0);
    assert_eq!(v.get().unwrap(), Some(11));
    assert!(!l.is_locked().unwrap());
    for n in [&qn, &ln, &en, &vn] {
        m.remove_named(n).unwrap();
    }
}

#[test]
fn a_proxy_of_another_kind_or_of_a_server_never_connected_to_is_an_error() {
    use multiproc::manager::{EventProxy, LockProxy, QueueProxy, ValueProxy};
    let Some((m, url)) = manager("proxies_refused") else {
        return;
    };
    let (mut tx, mut rx) = multiproc::Pipe(true).unwrap();
    let name = unique("refused");
    // Another kind's proxy: each kind checks its tag.
    tx.send(&m.lock_named(&name).unwrap()).unwrap();
    assert!(matches!(
        rx.recv::<QueueProxy<i64>>(),
        Err(Error::Deserialize(_))
    ));
    tx.send(&m.queue_named::<i64>(&name).unwrap()).unwrap();
    assert!(matches!(rx.recv::<LockProxy>(), Err(Error::Deserialize(_))));
    tx.send(&m.value_named::<i64>(&name).unwrap()).unwrap();
    assert!(matches!(
        rx.recv::<EventProxy>(),
        Err(Error::Deserialize(_))
    ));
    tx.send(&m.event_named(&name).unwrap()).unwrap();
    assert!(matches!(
        rx.recv::<ValueProxy<i64>>(),
        Err(Error::Deserialize(_))
    ));
    // A bad name, and a server this process never connected to (nothing
    // listens there: a connection attempt would be an error of another
    // kind, ManagerGone, and come later).
    let nowhere = "redis://127.0.0.1:1/";
    assert_ne!(nowhere, url);
    for tag in ["queue", "lock", "event", "value"] {
        for (u, n) in [(nowhere, "x"), (url.as_str(), "")] {
            tx.send(&(u, tag, n)).unwrap();
            let got = match tag {
                "queue" => rx.recv::<QueueProxy<i64>>().map(drop),
                "lock" => rx.recv::<LockProxy>().map(drop),
                "event" => rx.recv::<EventProxy>().map(drop),
                _ => rx.recv::<ValueProxy<i64>>().map(drop),
            };
            assert!(
                matches!(got, Err(Error::Deserialize(_))),
                "{tag} {u} {n:?}: {got:?}"
            );
        }
    }
    // The same on the wire with this server's URL decodes.
    tx.send(&(url.as_str(), "value", name.as_str())).unwrap();
    let v = rx.recv::<ValueProxy<i64>>().unwrap();
    assert_eq!(v.name(), name);
    assert_eq!(v.get().unwrap(), None);
    m.remove_named(&name).unwrap();
}
