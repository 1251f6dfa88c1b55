//! Attacks on the Redis queue, lease lock, event and value: races of the
//! reaper with a consumer whose heartbeat is late, limits of leases and
//! timeouts, foreign values and odd names.

#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::redis::{leftover, manager, raw, unique};
use common::{wait_until, watchdog};
use multiproc::{Error, Manager};

const LIMIT: Duration = Duration::from_secs(60);

/// A consumer blocked in `get` whose heartbeat expired (its process was
/// paused, or its heartbeat thread starved) is reaped; the item it then
/// takes must not land in a list the reaper never looks at again: once
/// the consumer is gone without acknowledging, the item comes back.
#[test]
fn an_item_taken_by_a_consumer_already_reaped_is_never_lost() {
    let Some((m, url)) = manager("an_item_taken_by_a_consumer_already_reaped") else {
        return;
    };
    let name = unique("attack-orphan");
    let consumers = format!("multiproc:{{queue:{name}}}:c");
    let a = m
        .queue_named::<i64>(&name)
        .unwrap()
        .with_heartbeat(Duration::from_secs(3))
        .unwrap();
    let b = m.queue_named::<i64>(&name).unwrap();
    let taker = std::thread::spawn(move || {
        let (item, d) = a.get(Some(Duration::from_secs(30))).unwrap();
        // The consumer goes away without acknowledging (as if killed).
        drop(d);
        drop(a);
        item
    });
    let mut conn = raw(&url);
    assert!(wait_until(LIMIT, || {
        redis::cmd("SCARD")
            .arg(&consumers)
            .query::<u64>(&mut conn)
            .unwrap()
            == 1
    }));
    // Give the taker time to block in its BLMOVE.
    std::thread::sleep(Duration::from_millis(200));
    // Its heartbeat expires (simulated), the reaper runs.
    let ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&consumers)
        .query(&mut conn)
        .unwrap();
    let _: u64 = redis::cmd("DEL")
        .arg(format!("multiproc:{{queue:{name}}}:hb:{}", ids[0]))
        .query(&mut conn)
        .unwrap();
    b.reap().unwrap();
    b.put(&7).unwrap();
    let item = watchdog("the taker", LIMIT, || taker.join().unwrap());
    assert_eq!(item, 7);
    // The item was never acknowledged: the reaper must give it back.
    let back = watchdog("the item back", LIMIT, || {
        wait_until(Duration::from_secs(10), || {
            b.reap().unwrap();
            b.qsize().unwrap() == 1
        })
    });
    assert!(back, "the unacknowledged item was lost");
    let (item, d) = b.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(item, 7);
    assert!(d.ack().unwrap());
    drop(b);
    m.remove_named(&name).unwrap();
    assert!(wait_until(LIMIT, || {
        m.remove_named(&name).unwrap();
        leftover(&url, &name).is_empty()
    }));
}

/// Leases and timeouts at their limits: 0, 1 ns, `Duration::MAX`; an
/// extension by a non-owner after the lease passed to another; a release
/// after the lease expired never frees the next holder's lock.
#[test]
fn leases_at_their_limits_and_stale_holders() {
    let Some((m, url)) = manager("leases_at_their_limits") else {
        return;
    };
    let name = unique("attack-lease");
    let l = m.lock_named(&name).unwrap();
    for lease in [Duration::ZERO, Duration::from_nanos(1)] {
        assert!(
            matches!(l.with_lease(lease), Err(Error::InvalidArgument(_))) || {
                // If accepted, it must still be a working lock.
                let g = l.with_lease(lease).unwrap().try_acquire();
                drop(g);
                true
            }
        );
    }
    let huge = l.with_lease(Duration::MAX).unwrap();
    let g = watchdog("a Duration::MAX lease", LIMIT, || {
        huge.acquire(Some(Duration::MAX)).unwrap()
    });
    g.extend(Duration::MAX).unwrap();
    assert!(matches!(l.try_acquire(), Err(Error::Timeout)));
    g.release().unwrap();
    // A holder whose lease expired, then someone else holds it.
    let short = l.with_lease(Duration::from_millis(50)).unwrap();
    let stale = short.try_acquire().unwrap();
    let first = stale.fencing_token();
    let next = watchdog("the next holder", LIMIT, || {
        l.acquire(Some(Duration::from_secs(30))).unwrap()
    });
    assert!(next.fencing_token() > first);
    assert!(stale.extend(Duration::from_secs(30)).is_err());
    let _ = stale.release();
    assert!(
        l.is_locked().unwrap(),
        "a stale holder released the next's lock"
    );
    let last = next.fencing_token();
    next.release().unwrap();
    // Fencing tokens keep growing across remove_named.
    m.remove_named(&name).unwrap();
    let g = l.try_acquire().unwrap();
    assert!(
        g.fencing_token() > last,
        "{} after {last}",
        g.fencing_token()
    );
    // A lost answer: the same acquisition run again answers the same.
    g.release().unwrap();
    m.remove_named(&name).unwrap();
    assert!(leftover(&url, &name).is_empty());
    // A foreign value in the fencing counter: an error, and no lease taken.
    let fence = format!("multiproc:{{lock:{name}}}:fence");
    let _: () = redis::cmd("SET")
        .arg(&fence)
        .arg("abc")
        .query(&mut raw(&url))
        .unwrap();
    assert!(l.try_acquire().is_err());
    assert!(
        !l.is_locked().unwrap(),
        "a failed acquire left a lease behind"
    );
    m.remove_named(&name).unwrap();
    assert!(leftover(&url, &name).is_empty());
}

/// Children forked while this process's queue consumers beat (a short
/// heartbeat: its thread is often in the channel's code) drop their
/// copies of the proxies and exit; none hangs.
#[test]
fn forked_children_drop_a_beating_consumer_without_hanging() {
    let Some((m, url)) = manager("forked_children_drop_a_beating_consumer") else {
        return;
    };
    let name = unique("attack-fork");
    let queues: Vec<_> = (0..4)
        .map(|_| {
            m.queue_named::<i64>(&name)
                .unwrap()
                .with_heartbeat(Duration::from_millis(10))
                .unwrap()
        })
        .collect();
    for q in &queues {
        q.put(&1).unwrap();
        let (_, d) = q.get(Some(Duration::ZERO)).unwrap();
        assert!(d.ack().unwrap());
    }
    watchdog("forked children dropping consumers", LIMIT, || {
        for _ in 0..40 {
            let copies = queues.clone();
            let mut p = multiproc::Process::new(move || {
                // Each proxy's first use in the child drops the child's
                // copy of the parent's consumer (and makes its own).
                for q in &copies {
                    let _ = q.get(Some(Duration::ZERO));
                }
                drop(copies);
            });
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), 0);
        }
    });
    drop(queues);
    let gone = wait_until(Duration::from_secs(10), || {
        let _ = m.remove_named(&name);
        leftover(&url, &name).is_empty()
    });
    assert!(gone, "left: {:?}", leftover(&url, &name));
}

/// Values at their limits: an increment that overflows, a float
/// increment to NaN or infinity, names with `{`, `}` and `*`, and a key
/// of another Redis type.
#[test]
fn values_at_their_limits_and_foreign_keys() {
    let Some((m, url)) = manager("values_at_their_limits") else {
        return;
    };
    let name = unique("attack-value{x}*");
    let v = m.value_named::<i64>(&name).unwrap();
    v.set(&i64::MAX).unwrap();
    assert!(v.increment(1).is_err());
    assert_eq!(v.get().unwrap(), Some(i64::MAX));
    let f = m.value_named::<f64>(&name).unwrap();
    f.set(&1.0).unwrap();
    assert!(f.increment_float(f64::NAN).is_err());
    assert!(f.increment_float(f64::INFINITY).is_err());
    assert!(f.increment_float(f64::MAX).is_ok());
    let _ = f.increment_float(f64::MAX);
    m.remove_named(&name).unwrap();
    // A foreign type in the value's key, then in each key of a queue.
    let mut conn = raw(&url);
    let vkey: Vec<String> = leftover(&url, &name);
    assert!(vkey.is_empty());
    let _: u64 = redis::cmd("SADD")
        .arg(format!("multiproc:{{value:{name}}}:v"))
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let _ = v.get();
    let _ = v.increment(1);
    let _ = v.compare_and_set(&1, &2);
    let _ = m.remove_named(&name);
    let q = m.queue_named::<i64>(&name).unwrap();
    for part in ["q", "c", "u", "j", "dead"] {
        let key = format!("multiproc:{{queue:{name}}}:{part}");
        let _: u64 = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
        let _: u64 = redis::cmd("HSET")
            .arg(&key)
            .arg("f")
            .arg("v")
            .query(&mut conn)
            .unwrap();
        watchdog("calls on a foreign key", LIMIT, || {
            let _ = q.put(&1);
            let _ = q.get(Some(Duration::ZERO));
            let _ = q.get(Some(Duration::from_millis(1)));
            let _ = q.qsize();
            let _ = q.join(Some(Duration::ZERO));
            let _ = q.reap();
        });
        let _: u64 = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
    }
    drop(q);
    let gone = wait_until(Duration::from_secs(10), || {
        let _ = m.remove_named(&name);
        leftover(&url, &name).is_empty()
    });
    assert!(gone, "left: {:?}", leftover(&url, &name));
}

/// A foreign value in a queue's key never makes a script half-done: a
/// put whose unfinished count is not a number pushes nothing, and a
/// reaper that cannot push back to the queue leaves the dead consumer's
/// items where they are (never lost).
#[test]
fn a_foreign_key_never_loses_or_half_puts_an_item() {
    let Some((m, url)) = manager("a_foreign_key_never_loses") else {
        return;
    };
    let name = unique("attack-half");
    let key = |part: &str| format!("multiproc:{{queue:{name}}}:{part}");
    let mut conn = raw(&url);
    let q = m.queue_named::<i64>(&name).unwrap();
    let _: () = redis::cmd("SET")
        .arg(key("u"))
        .arg("abc")
        .query(&mut conn)
        .unwrap();
    assert!(q.put(&1).is_err());
    assert_eq!(q.qsize().unwrap(), 0, "a put that failed pushed its item");
    let _: u64 = redis::cmd("DEL").arg(key("u")).query(&mut conn).unwrap();
    // A consumer takes an item, then "dies" (its heartbeat is deleted)
    // while another program made the queue's key a hash.
    let a = m
        .queue_named::<i64>(&name)
        .unwrap()
        .with_heartbeat(Duration::from_secs(30))
        .unwrap();
    q.put(&2).unwrap();
    let (item, held) = watchdog("a get", LIMIT, || a.get(Some(Duration::ZERO)).unwrap());
    assert_eq!(item, 2);
    let ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(key("c"))
        .query(&mut conn)
        .unwrap();
    let _: u64 = redis::cmd("DEL")
        .arg(key(&format!("hb:{}", ids[0])))
        .query(&mut conn)
        .unwrap();
    let _: u64 = redis::cmd("HSET")
        .arg(key("q"))
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    assert!(q.reap().is_err());
    let _: u64 = redis::cmd("DEL").arg(key("q")).query(&mut conn).unwrap();
    assert_eq!(
        q.reap().unwrap(),
        1,
        "the reaper lost the dead consumer's item"
    );
    let (item, d) = q.get(Some(Duration::ZERO)).unwrap();
    assert_eq!((item, d.count()), (2, 2));
    assert!(d.ack().unwrap());
    assert!(!held.ack().unwrap());
    drop((a, q));
    let gone = wait_until(Duration::from_secs(10), || {
        let _ = m.remove_named(&name);
        leftover(&url, &name).is_empty()
    });
    assert!(gone, "left: {:?}", leftover(&url, &name));
}

/// Consumers with a short heartbeat on a machine with more busy
/// processes than CPUs (so heartbeats are late and live consumers get
/// reaped), killed by SIGKILL at random points of their get/ack loop and
/// replaced: afterwards every item was seen, every item counts finished
/// exactly once (`join` returns), and nothing is left in progress.
#[test]
fn consumers_killed_at_random_on_a_loaded_machine_lose_nothing() {
    let Some((m, url)) = manager("consumers_killed_at_random") else {
        return;
    };
    let name = unique("attack-storm");
    let seen = format!("multiproc-test:{{{name}}}:seen");
    const N: i64 = 300;
    let q = m.queue_named::<i64>(&name).unwrap();
    q.put_many(&(0..N).collect::<Vec<_>>()).unwrap();
    let consumer = || {
        let (url, name, seen) = (url.clone(), name.clone(), seen.clone());
        let mut p = multiproc::Process::new(move || {
            let m = Manager::connect_redis(&url).unwrap();
            let q = m
                .queue_named::<i64>(&name)
                .unwrap()
                .with_heartbeat(Duration::from_millis(60))
                .unwrap();
            let mut conn = raw(&url);
            loop {
                match q.get(Some(Duration::from_millis(500))) {
                    Ok((item, d)) => {
                        let _: u64 = redis::cmd("SADD")
                            .arg(&seen)
                            .arg(item)
                            .query(&mut conn)
                            .unwrap();
                        let _ = d.ack();
                    }
                    Err(Error::Empty) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        p.start().unwrap();
        p
    };
    let burners: Killed = Killed(
        (0..3)
            .map(|_| {
                let mut p = multiproc::Process::new(|| loop {
                    std::hint::spin_loop();
                });
                p.start().unwrap();
                p
            })
            .collect(),
    );
    let mut consumers = Killed((0..3).map(|_| consumer()).collect());
    let mut conn = raw(&url);
    watchdog("the storm", LIMIT, || {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..25 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            std::thread::sleep(Duration::from_millis(20 + rng % 120));
            let victim = usize::try_from(rng % 3).unwrap();
            let old = std::mem::replace(&mut consumers.0[victim], consumer());
            old.kill().unwrap();
            old.join().unwrap();
        }
        let all = wait_until(Duration::from_secs(40), || {
            redis::cmd("SCARD")
                .arg(&seen)
                .query::<i64>(&mut conn)
                .unwrap()
                == N
        });
        assert!(all, "items lost");
        q.join(Some(Duration::from_secs(30))).unwrap();
    });
    drop((consumers, burners));
    assert_eq!(q.qsize().unwrap(), 0);
    let _: u64 = redis::cmd("DEL").arg(&seen).query(&mut conn).unwrap();
    drop(q);
    let gone = wait_until(Duration::from_secs(10), || {
        let _ = m.remove_named(&name);
        leftover(&url, &name).is_empty()
    });
    assert!(gone, "left: {:?}", leftover(&url, &name));
}

/// Child processes killed (SIGKILL) and joined when dropped, a failed
/// test included.
struct Killed(Vec<multiproc::Process<'static>>);

impl Drop for Killed {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = p.kill();
            let _ = p.join();
        }
    }
}

/// Children forked while another thread of the parent hammers a queue
/// proxy (its reaper's clock, its consumer, its blocking connections)
/// can use their copy of the proxy at once.
#[test]
fn children_forked_while_a_thread_hammers_a_queue_can_use_it() {
    let Some((m, url)) = manager("children_forked_while_a_thread_hammers") else {
        return;
    };
    let name = unique("attack-hammer");
    let q = m
        .queue_named::<i64>(&name)
        .unwrap()
        .with_heartbeat(Duration::from_millis(30))
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    watchdog("forks while a thread hammers", LIMIT, || {
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    q.put(&1).unwrap();
                    let _ = q.reap();
                    if let Ok((_, d)) = q.get(Some(Duration::from_millis(1))) {
                        let _ = d.ack();
                    }
                }
            });
            for _ in 0..30 {
                let q = q.clone();
                let mut p = multiproc::Process::new(move || {
                    q.put(&2).unwrap();
                    let (_, d) = q.get(Some(Duration::from_secs(10))).unwrap();
                    d.ack().unwrap();
                });
                p.start().unwrap();
                assert_eq!(common::join(&p, Duration::from_secs(20)), 0);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
    drop(q);
    let gone = wait_until(Duration::from_secs(10), || {
        let _ = m.remove_named(&name);
        leftover(&url, &name).is_empty()
    });
    assert!(gone, "left: {:?}", leftover(&url, &name));
}
