//! A fourth round of attacks on the Redis backend: what one proxy stores
//! read back and compared by another, keys another program wrote, and
//! limits of the arguments.
//!
//! Needs `MULTIPROC_TEST_REDIS` (see tests/common/redis.rs): skipped with a
//! printed reason without it, a failure in CI.

#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::redis::{attack, raw};
use multiproc::pool::RemotePool;
use multiproc::{task, Error, Manager};

const LIMIT: Duration = Duration::from_secs(60);

/// A value's float sum is stored as the codec stores that float: a
/// compare_and_set of the value `get` answers succeeds, as it does after
/// a `set` of the same float.
#[test]
fn a_float_sum_compares_equal_to_what_get_answers() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let v = m.value_named::<f64>(name).unwrap();
        for (start, delta) in [
            (0.0, 0.1),
            (0.1, 0.2),
            (1.0, 2.0),
            (0.0, 1e20),
            (0.0, 5e-324),
        ] {
            v.set(&start).unwrap();
            let sum = v.increment_float(delta).unwrap();
            assert_eq!(sum, start + delta);
            assert_eq!(v.get().unwrap(), Some(sum));
            assert!(
                v.compare_and_set(&sum, &-1.0).unwrap(),
                "{start} + {delta}: the stored sum is not what a set of {sum} stores"
            );
            assert_eq!(v.get().unwrap(), Some(-1.0));
        }
        assert!(m.remove_named(name).unwrap());
    });
}

/// An unfinished count another program left at the edge of 64 bits (or
/// past it, as digits) makes a put fail before it pushes anything: a put
/// reported failed that had pushed its item would be put twice when run
/// again.
#[test]
fn a_put_whose_count_cannot_grow_pushes_nothing() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let count = format!("multiproc:{{queue:{name}}}:u");
        let mut conn = raw(url);
        let q = m.queue_named::<i64>(name).unwrap();
        for foreign in ["9223372036854775807", "99999999999999999999"] {
            let _: () = redis::cmd("SET")
                .arg(&count)
                .arg(foreign)
                .query(&mut conn)
                .unwrap();
            let put = q.put_many(&[1, 2]);
            assert!(put.is_err(), "{foreign}: {put:?}");
            assert_eq!(q.qsize().unwrap(), 0, "{foreign}: a failed put pushed");
            let left: String = redis::cmd("GET").arg(&count).query(&mut conn).unwrap();
            assert_eq!(left, foreign);
        }
        assert!(m.remove_named(name).unwrap());
    });
}

/// A list's float sum is stored as the codec stores that float (as a
/// dict's is): `index`, `count` and `remove`, which compare encodings,
/// find the sum `increment` answered. Powers of two are where the
/// shortest decimal that reads back is not the nearest of its length.
#[test]
fn a_lists_float_sum_is_found_by_index() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let key = format!("multiproc:{{list:{name}}}:l");
        let mut conn = raw(url);
        let l = m.list_named::<f64>(name).unwrap();
        let mut floats: Vec<f64> = (-1074..1024).map(|e| 2f64.powi(e)).collect();
        floats.extend([
            0.1,
            0.3,
            1e23,
            5e-324,
            1.7976931348623157e308,
            9007199254740993.0,
        ]);
        let mut bad = Vec::new();
        for x in floats {
            l.clear().unwrap();
            l.append(0.0).unwrap();
            let sum = l.increment(0, x).unwrap();
            assert_eq!(sum.to_bits(), x.to_bits());
            let stored: Vec<u8> = redis::cmd("LINDEX")
                .arg(&key)
                .arg(0)
                .query(&mut conn)
                .unwrap();
            if stored != format!("f{x:?}").into_bytes() {
                bad.push((x, String::from_utf8_lossy(&stored).into_owned()));
            }
        }
        assert!(bad.is_empty(), "stored otherwise than the codec: {bad:?}");
        l.clear().unwrap();
        l.append(0.0).unwrap();
        let sum = l.increment(0, 2f64.powi(-1074 + 60)).unwrap();
        assert_eq!(l.index(&sum).unwrap(), 0);
        assert!(m.remove_named(name).is_ok());
    });
}

/// Another program's value where a pool counts its tasks' deaths (the
/// `deaths` key of another type, or a task's count that is no number)
/// fails no reaper: a reaper that failed there failed every worker's and
/// every waiting submitter's call for ever (and pushed the tasks it had
/// put back again at each try). The dead worker's task is reported, not
/// run for ever nor lost.
#[test]
fn a_foreign_death_count_fails_no_reaper() {
    fn square(x: u64) -> u64 {
        x * x
    }
    attack(LIMIT, |url, name| {
        let mut conn = raw(url);
        for foreign_key in [true, false] {
            let pool = RemotePool::connect_named(url, &format!("{name}-{foreign_key}")).unwrap();
            let prefix = format!("multiproc:{{pool:{}}}:", pool.name());
            let part = |p: &str| format!("{prefix}{p}");
            // No worker: the tasks wait; a "ghost" worker, dead (no
            // heartbeat key), holds the first.
            let first = pool.apply_async(task!(square), 3);
            let second = pool.apply_async(task!(square), 4);
            let id: String = redis::cmd("RPOPLPUSH")
                .arg(part("pending"))
                .arg(part("processing:ghost"))
                .query(&mut conn)
                .unwrap();
            let _: u64 = redis::cmd("SADD")
                .arg(part("workers"))
                .arg("ghost")
                .query(&mut conn)
                .unwrap();
            if foreign_key {
                let _: () = redis::cmd("SET")
                    .arg(part("deaths"))
                    .arg("x")
                    .query(&mut conn)
                    .unwrap();
            } else {
                let _: u64 = redis::cmd("HSET")
                    .arg(part("deaths"))
                    .arg(&id)
                    .arg("not a number")
                    .query(&mut conn)
                    .unwrap();
            }
            assert_eq!(pool.workers().unwrap(), 0);
            assert_eq!(pool.workers().unwrap(), 0);
            let pending: Vec<String> = redis::cmd("LRANGE")
                .arg(part("pending"))
                .arg(0)
                .arg(-1)
                .query(&mut conn)
                .unwrap();
            assert!(
                pending.iter().filter(|p| **p == id).count() <= 1,
                "{pending:?}"
            );
            let r = first.get_timeout(Duration::from_secs(5));
            assert!(
                matches!(r, Err(Error::WorkerDied { .. })),
                "foreign key {foreign_key}: {r:?}"
            );
            assert!(!second.ready());
            let _: u64 = redis::cmd("DEL")
                .arg(part("deaths"))
                .query(&mut conn)
                .unwrap();
            pool.remove().unwrap();
        }
    });
}

/// An acknowledgement whose unfinished count another program made
/// digits past 64 bits is not reported failed after it removed the item
/// (run again, it would answer that the reaper took it): it acknowledges
/// and leaves the foreign count alone.
#[test]
fn an_ack_with_a_foreign_count_is_done_or_not_at_all() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let count = format!("multiproc:{{queue:{name}}}:u");
        let mut conn = raw(url);
        let q = m.queue_named::<i64>(name).unwrap();
        q.put(&7).unwrap();
        let (item, d) = q.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(item, 7);
        let foreign = "99999999999999999999";
        let _: () = redis::cmd("SET")
            .arg(&count)
            .arg(foreign)
            .query(&mut conn)
            .unwrap();
        let acked = d.ack();
        assert!(matches!(acked, Ok(true)), "{acked:?}");
        let left: String = redis::cmd("GET").arg(&count).query(&mut conn).unwrap();
        assert_eq!(left, foreign);
        drop(q);
        assert!(m.remove_named(name).unwrap());
    });
}

/// The reaper writes a delivery count of any size the envelope allows as
/// digits (Lua's `tostring` writes 1e14 and up as `1e+14`, which no
/// reader takes for a count: the item went to the dead letters).
#[test]
fn a_large_delivery_count_survives_the_reaper() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let key = |p: &str| format!("multiproc:{{queue:{name}}}:{p}");
        let mut conn = raw(url);
        let q = m
            .queue_named::<i64>(name)
            .unwrap()
            .with_heartbeat(Duration::from_secs(30))
            .unwrap();
        // An envelope as a put writes it, but for its count.
        for count in [99_999_999_999_999u64, 123_456_789_012_344] {
            let _: u64 = redis::cmd("LPUSH")
                .arg(key("q"))
                .arg(format!("mpq1:abcdef:{count}:5"))
                .query(&mut conn)
                .unwrap();
            let (item, held) = q.get(Some(Duration::ZERO)).unwrap();
            assert_eq!((item, held.count()), (5, count));
            let ids: Vec<String> = redis::cmd("SMEMBERS")
                .arg(key("c"))
                .query(&mut conn)
                .unwrap();
            for id in ids {
                let _: u64 = redis::cmd("DEL")
                    .arg(key(&format!("hb:{id}")))
                    .query(&mut conn)
                    .unwrap();
            }
            assert_eq!(q.reap().unwrap(), 1);
            let again = q.get(Some(Duration::ZERO));
            let (item, d) = again.unwrap();
            assert_eq!((item, d.count()), (5, count + 1));
            assert!(d.ack().unwrap());
            assert!(!held.ack().unwrap());
        }
        drop(q);
        m.remove_named(name).unwrap();
    });
}

/// A queue's set of consumers that another program made a key of
/// another type does not stop `remove_named`: the queue's script failed
/// on it, and the name's lock, event and value (deleted after the queue)
/// could never be removed.
#[test]
fn remove_named_deletes_a_queue_whose_consumer_set_is_foreign() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let mut conn = raw(url);
        let consumers = format!("multiproc:{{queue:{name}}}:c");
        let _: () = redis::cmd("SET")
            .arg(&consumers)
            .arg("x")
            .query(&mut conn)
            .unwrap();
        let v = m.value_named::<i64>(name).unwrap();
        v.set(&1).unwrap();
        assert!(m.remove_named(name).unwrap());
        assert_eq!(v.get().unwrap(), None);
        let left: u64 = redis::cmd("EXISTS")
            .arg(&consumers)
            .query(&mut conn)
            .unwrap();
        assert_eq!(left, 0);
    });
}

/// A pool whose workers' set or tasks' hash another program made a key
/// of another type is removed all the same (its script failed on them,
/// and the pool could never be removed).
#[test]
fn a_pool_with_foreign_keys_is_removed() {
    attack(LIMIT, |url, name| {
        let mut conn = raw(url);
        for part in ["workers", "tasks"] {
            let pool = RemotePool::connect_named(url, &format!("{name}-{part}")).unwrap();
            let prefix = format!("multiproc:{{pool:{}}}:", pool.name());
            let _: () = redis::cmd("SET")
                .arg(format!("{prefix}{part}"))
                .arg("x")
                .query(&mut conn)
                .unwrap();
            let _: () = redis::cmd("SET")
                .arg(format!("{prefix}stop"))
                .arg("1")
                .query(&mut conn)
                .unwrap();
            pool.remove().unwrap();
            let left: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut conn)
                .unwrap();
            assert!(left.is_empty(), "{part}: {left:?}");
        }
    });
}

/// An item that does not decode, taken by a `get` whose move of it to the
/// dead letters then failed (here: the dead letters' key of another
/// type), is not left for ever in the list of a consumer that lives on:
/// the consumer is retired, and the reaper takes the item from it (to
/// the queue, or as here, to the dead letters).
#[test]
fn an_item_whose_burial_failed_is_not_kept_by_a_live_consumer() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let key = |p: &str| format!("multiproc:{{queue:{name}}}:{p}");
        let mut conn = raw(url);
        let q = m.queue_named::<i64>(name).unwrap();
        let _: u64 = redis::cmd("LPUSH")
            .arg(key("q"))
            .arg("junk")
            .query(&mut conn)
            .unwrap();
        // Reaped just now: the get's reaper (which would refuse the
        // foreign key) is not due.
        q.reap().unwrap();
        let _: () = redis::cmd("SET")
            .arg(key("dead"))
            .arg("x")
            .query(&mut conn)
            .unwrap();
        let r = q.get(Some(Duration::ZERO));
        assert!(r.is_err(), "{r:?}");
        let _: u64 = redis::cmd("DEL").arg(key("dead")).query(&mut conn).unwrap();
        // The retired consumer leaves (its heartbeat thread, at once);
        // the reaper then takes its item (to the dead letters: it is no
        // envelope).
        let dead = || {
            q.reap().unwrap();
            redis::cmd("LRANGE")
                .arg(key("dead"))
                .arg(0)
                .arg(-1)
                .query::<Vec<String>>(&mut raw(url))
                .unwrap()
        };
        assert!(
            common::wait_until(Duration::from_secs(20), || dead() == ["junk"]),
            "the item stayed with a consumer that lives on"
        );
        assert_eq!(q.qsize().unwrap(), 0);
        drop(q);
        m.remove_named(name).unwrap();
    });
}

/// A submission to a pool whose pending list another program made a key
/// of another type fails before it writes anything: it stored the task's
/// record and then failed, leaving a record no worker would ever see.
#[test]
fn a_submission_to_a_foreign_pending_key_writes_nothing() {
    fn square(x: u64) -> u64 {
        x * x
    }
    attack(LIMIT, |url, name| {
        let mut conn = raw(url);
        let pool = RemotePool::connect_named(url, name).unwrap();
        let prefix = format!("multiproc:{{pool:{}}}:", pool.name());
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}pending"))
            .arg("x")
            .query(&mut conn)
            .unwrap();
        let r = pool
            .apply_async(task!(square), 3)
            .get_timeout(Duration::ZERO);
        assert!(r.is_err(), "{r:?}");
        let records: u64 = redis::cmd("HLEN")
            .arg(format!("{prefix}tasks"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(records, 0, "a failed submission left its record");
        pool.remove().unwrap();
    });
}

/// A join whose unfinished count another program made digits past 64
/// bits does not return as if every item were done (the script's number
/// came back from Lua as a negative integer).
#[test]
fn a_join_with_a_count_past_64_bits_is_not_done() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let mut conn = raw(url);
        let q = m.queue_named::<i64>(name).unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("multiproc:{{queue:{name}}}:u"))
            .arg("99999999999999999999")
            .query(&mut conn)
            .unwrap();
        let r = q.join(Some(Duration::ZERO));
        assert!(r.is_err(), "{r:?}");
        m.remove_named(name).unwrap();
    });
}
