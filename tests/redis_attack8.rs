//! An eighth round of attacks on the Redis backend: a lock acquired by a
//! call the client gave up on (a slow server), an event's channel that
//! another client publishes to, a pool worker whose connection is cut
//! while its task runs, and waits of zero and of `Duration::MAX`.

#![cfg(feature = "redis")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::redis::{attack, attack_own, raw, unique, OwnServer};
use common::{wait_until, TempDir};
use multiproc::pool::{RemotePool, Worker};
use multiproc::{task, Error, Manager};

const LIMIT: Duration = Duration::from_secs(90);

/// The manager's timeout in these tests: short, so that a call on a busy
/// server is given up on soon.
const SHORT: Duration = Duration::from_millis(300);

/// Keeps the server at `url` busy for `busy` (a Lua script that spins:
/// the server runs nothing else meanwhile, and reads what came in during
/// it only after), on a thread of its own; returned once the server has
/// stopped answering.
fn busy_server(url: &str, busy: Duration) -> std::thread::JoinHandle<()> {
    let mut conn = raw(url);
    let handle = std::thread::spawn(move || {
        let _: () = redis::cmd("EVAL")
            .arg(
                "local t0 = redis.call('TIME') \
                 local start = t0[1] * 1000000 + t0[2] \
                 while true do \
                   local t = redis.call('TIME') \
                   if t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) then return end \
                 end",
            )
            .arg(0)
            .arg(busy.as_micros().to_string())
            .query(&mut conn)
            .unwrap();
    });
    let answers = || {
        let c = redis::Client::open(url).unwrap();
        let timeout = Duration::from_millis(50);
        c.get_connection_with_timeout(timeout).is_ok_and(|mut c| {
            c.set_read_timeout(Some(timeout)).is_ok()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
        })
    };
    assert!(wait_until(LIMIT, || !answers()));
    handle
}

/// The number after `prefix` in the server's `INFO section`.
fn info_field(conn: &mut redis::Connection, section: &str, prefix: &str) -> Option<u64> {
    let info: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    info.lines().find_map(|l| {
        let rest = l.strip_prefix(prefix)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// An acquire that the client gives up on (the server is busy past the
/// client's timeout) but that the server runs once it is free: the lock
/// must not stay held, by a token nobody will release, until its lease
/// ends.
#[test]
fn an_acquire_given_up_on_leaves_the_lock_free() {
    attack_own(LIMIT, |url, name| {
        let m = Manager::connect_redis_with_timeout(url, SHORT).unwrap();
        let lock = m
            .lock_named(name)
            .unwrap()
            .with_lease(Duration::from_secs(60))
            .unwrap();
        // The connection is made, and the scripts loaded, before the
        // server is busy.
        lock.try_acquire().unwrap().release().unwrap();
        let busy = busy_server(url, Duration::from_millis(1500));
        let started = Instant::now();
        let r = lock.acquire(Some(Duration::from_secs(1)));
        assert!(
            matches!(r, Err(Error::ManagerGone(_) | Error::Ambiguous(_))),
            "{r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        busy.join().unwrap();
        // The server ran the acquire after the client gave up: whoever
        // holds the lock now is nobody, and it must be free well before
        // its minute of lease ends.
        let holder = format!("multiproc:{{lock:{name}}}:lease");
        let free = wait_until(Duration::from_secs(15), || !lock.is_locked().unwrap());
        let left: i64 = redis::cmd("PTTL")
            .arg(&holder)
            .query(&mut raw(url))
            .unwrap();
        assert!(free, "the lock is still held, for {left} ms more");
        // And free for the next taker.
        let g = lock.try_acquire().unwrap();
        g.release().unwrap();
        m.remove_named(name).unwrap();
    });
}

/// An acquire given up on never releases another client's hold: a lock
/// that someone else holds stays held after a timed-out try.
#[test]
fn an_acquire_given_up_on_leaves_anothers_hold_alone() {
    attack_own(LIMIT, |url, name| {
        let m = Manager::connect_redis_with_timeout(url, SHORT).unwrap();
        let lock = m.lock_named(name).unwrap();
        let held = lock.acquire(Some(Duration::ZERO)).unwrap();
        let other = Manager::connect_redis_with_timeout(url, SHORT)
            .unwrap()
            .lock_named(name)
            .unwrap();
        assert!(other.is_locked().unwrap());
        let busy = busy_server(url, Duration::from_millis(800));
        assert!(other.acquire(Some(Duration::from_millis(100))).is_err());
        busy.join().unwrap();
        // Whatever the given-up acquire cleans up, the holder keeps it.
        let kept = (0..10).all(|_| {
            std::thread::sleep(Duration::from_millis(50));
            other.is_locked().unwrap()
        });
        assert!(kept, "another's hold was released");
        held.release().unwrap();
        m.remove_named(name).unwrap();
    });
}

/// The event's channel, as another program sees it.
fn event_channel(name: &str) -> String {
    format!("multiproc:{{event:{name}}}:set")
}

/// Publishes `message` on `channel` once someone subscribes to it.
fn publish_when_subscribed(url: &str, channel: &str, message: &str) {
    let mut conn = raw(url);
    let subscribed = wait_until(LIMIT, || {
        let n: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut conn)
            .unwrap();
        n.first().is_some_and(|(_, n)| *n > 0)
    });
    assert!(subscribed);
    let _: u64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query(&mut conn)
        .unwrap();
}

/// Another client's `PUBLISH` on an event's channel does not make a wait
/// say the event was set: the event is clear, and the wait runs its time.
#[test]
fn a_foreign_publish_does_not_wake_an_event_wait() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let e = m.event_named(name).unwrap();
        let channel = event_channel(name);
        std::thread::scope(|s| {
            s.spawn(|| publish_when_subscribed(url, &channel, "1"));
            let started = Instant::now();
            assert!(!e.wait(Some(Duration::from_millis(1500))).unwrap());
            assert!(started.elapsed() >= Duration::from_millis(1500));
        });
        // A foreign message, then a real set: the wait sees the set.
        std::thread::scope(|s| {
            s.spawn(|| {
                publish_when_subscribed(url, &channel, "garbage");
                std::thread::sleep(Duration::from_millis(100));
                e.set().unwrap();
            });
            assert!(e.wait(Some(Duration::from_secs(20))).unwrap());
        });
        m.remove_named(name).unwrap();
    });
}

/// A set then a clear while a wait waits wakes it with `true`, as
/// Python's does (the waiter was notified), even if it reads the flag only
/// after the clear; and even when they come right after the wait
/// subscribed, before it read the count of sets (the setter polls for the
/// subscription without pausing, so over the rounds some land there: a
/// wait that took its count after subscribing missed those for good).
#[test]
fn a_set_then_clear_still_wakes_a_wait() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let e = m.event_named(name).unwrap();
        let channel = event_channel(name);
        let mut conn = raw(url);
        for round in 0..40 {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let end = Instant::now() + LIMIT;
                    while Instant::now() < end {
                        let n: Vec<(String, u64)> = redis::cmd("PUBSUB")
                            .arg("NUMSUB")
                            .arg(&channel)
                            .query(&mut conn)
                            .unwrap();
                        if n.first().is_some_and(|(_, n)| *n > 0) {
                            break;
                        }
                    }
                    e.set().unwrap();
                    e.clear().unwrap();
                });
                assert!(
                    e.wait(Some(Duration::from_secs(20))).unwrap(),
                    "round {round}: the set was missed"
                );
            });
            assert!(!e.is_set().unwrap());
            // The wait's subscription is gone before the next round polls.
            assert!(wait_until(LIMIT, || {
                let n: Vec<(String, u64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query(&mut conn)
                    .unwrap();
                n.first().is_some_and(|(_, n)| *n == 0)
            }));
        }
        m.remove_named(name).unwrap();
    });
}

/// Writes `dir/run-<pid>` (this run's own process), then waits until
/// `dir/release` exists; returns 1.
fn hold_until_released(dir: String) -> u64 {
    let dir = Path::new(&dir);
    std::fs::write(dir.join(format!("run-{}", std::process::id())), b"").unwrap();
    let end = Instant::now() + LIMIT;
    while !dir.join("release").exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    1
}

/// How many runs `hold_until_released` started in `dir`.
fn runs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("run-")
        })
        .count()
}

/// Sets its flag when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A blip: the server takes no new client (its `maxclients` at 1), and
/// every connection but `admin`'s is cut. The server's count of refused
/// connections before.
fn cut_off(admin: &mut redis::Connection) -> u64 {
    let rejected = rejected_connections(admin);
    set_maxclients(admin, 1);
    for id in other_clients(admin) {
        let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(admin);
    }
    rejected
}

fn set_maxclients(admin: &mut redis::Connection, n: u64) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(n)
        .query(admin)
        .unwrap();
}

/// How many connections the server refused.
fn rejected_connections(admin: &mut redis::Connection) -> u64 {
    info_field(admin, "stats", "rejected_connections:").unwrap()
}

/// A call on a server that refuses new clients (at its `maxclients`),
/// whose connection was cut: the server is unreachable
/// ([`Error::ManagerGone`]), not a server's answer to the call; and the
/// next call once it takes clients again works.
#[test]
fn a_server_at_its_client_limit_is_unreachable() {
    attack_own(LIMIT, |url, name| {
        let m = Manager::connect_redis_with_timeout(url, SHORT).unwrap();
        let d = m.dict_named::<String, i64>(name).unwrap();
        d.set("a".into(), 1).unwrap();
        let mut admin = raw(url);
        cut_off(&mut admin);
        let r = d.len();
        assert!(matches!(r, Err(Error::ManagerGone(_))), "{r:?}");
        let lock = m.lock_named(name).unwrap();
        let r = lock.try_acquire();
        assert!(matches!(r, Err(Error::ManagerGone(_))), "{r:?}");
        set_maxclients(&mut admin, 10000);
        assert_eq!(d.len().unwrap(), 1);
        m.remove_named(name).unwrap();
    });
}

/// The ids of the server's clients other than the one asking.
fn other_clients(conn: &mut redis::Connection) -> Vec<u64> {
    let me: u64 = redis::cmd("CLIENT").arg("ID").query(conn).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
    list.lines()
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .filter(|&id| id != me)
        .collect()
}

/// A worker whose connection is cut while its task runs, and who cannot
/// connect again for a moment (the server at its client limit): a blip
/// far shorter than its heartbeat. The task runs once, to its end, and
/// its result is the one the submitter gets; the worker neither kills it
/// nor gives it up to be run again.
#[test]
fn a_worker_that_loses_its_connection_mid_task_runs_it_once() {
    attack_own(LIMIT, |url, name| {
        let dir = TempDir::new(&unique("blip"));
        let mut admin = raw(url);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Whatever happens, the worker below stops being run again.
            let _stop = Stop(&done);
            // As a supervisor would, a worker that returns is run again.
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let _ = Worker::new(url, &[&task!(hold_until_released)])
                        .pool(name)
                        .heartbeat(Duration::from_secs(3))
                        .idle_timeout(Duration::from_millis(300))
                        .serve();
                }
            });
            let workers = format!("multiproc:{{pool:{name}}}:workers");
            assert!(wait_until(LIMIT, || {
                redis::cmd("SCARD")
                    .arg(&workers)
                    .query::<u64>(&mut admin)
                    .unwrap()
                    > 0
            }));
            let pool = RemotePool::connect_named(url, name).unwrap();
            let dir_name = dir.0.to_string_lossy().into_owned();
            let result = pool.apply_async(task!(hold_until_released), dir_name);
            assert!(wait_until(LIMIT, || runs(&dir.0) == 1));
            let rejected = cut_off(&mut admin);
            // The worker's renewal found its connection cut, and could not
            // make another.
            assert!(wait_until(LIMIT, || rejected_connections(&mut admin) > rejected));
            set_maxclients(&mut admin, 10000);
            std::fs::write(dir.0.join("release"), b"").unwrap();
            assert_eq!(result.get_timeout(Duration::from_secs(30)).unwrap(), 1);
            assert_eq!(runs(&dir.0), 1, "the task ran more than once");
            pool.stop_workers().unwrap();
            pool.remove().unwrap();
        });
    });
}

/// Waits of zero and of `Duration::MAX` on each Redis primitive: zero is
/// one look, `MAX` is as long as it takes (never a panic, never an
/// overflow into a wait that ends at once).
#[test]
fn waits_of_zero_and_max() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        // The lock.
        let lock = m.lock_named(name).unwrap();
        let short = lock.with_lease(Duration::from_millis(300)).unwrap();
        let held = short.acquire(Some(Duration::MAX)).unwrap();
        assert!(matches!(
            lock.acquire(Some(Duration::ZERO)),
            Err(Error::Timeout)
        ));
        // Its lease ends: a wait of MAX takes it then.
        let g = lock.acquire(Some(Duration::MAX)).unwrap();
        assert!(g.previous_owner_died());
        assert!(matches!(held.release(), Err(Error::NotOwner)));
        g.extend(Duration::MAX).unwrap();
        assert!(matches!(
            g.extend(Duration::ZERO),
            Err(Error::InvalidArgument(_))
        ));
        g.release().unwrap();
        let long = lock.with_lease(Duration::MAX).unwrap();
        long.acquire(Some(Duration::ZERO))
            .unwrap()
            .release()
            .unwrap();
        assert!(lock.with_lease(Duration::ZERO).is_err());
        // The event.
        let e = m.event_named(name).unwrap();
        assert!(!e.wait(Some(Duration::ZERO)).unwrap());
        std::thread::scope(|s| {
            s.spawn(|| {
                publish_when_subscribed(url, &event_channel(name), "x");
                e.set().unwrap();
            });
            assert!(e.wait(Some(Duration::MAX)).unwrap());
        });
        assert!(e.wait(Some(Duration::ZERO)).unwrap());
        // The queue.
        let q = m.queue_named::<u64>(name).unwrap();
        assert!(matches!(q.get(Some(Duration::ZERO)), Err(Error::Empty)));
        q.join(Some(Duration::ZERO)).unwrap();
        q.join(Some(Duration::MAX)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                q.put(&7).unwrap();
            });
            let (v, d) = q.get(Some(Duration::MAX)).unwrap();
            assert_eq!(v, 7);
            assert!(matches!(q.join(Some(Duration::ZERO)), Err(Error::Timeout)));
            assert!(d.ack().unwrap());
        });
        q.join(Some(Duration::MAX)).unwrap();
        // A heartbeat of MAX lives as long as Redis lets a key live.
        let q = q.with_heartbeat(Duration::MAX).unwrap();
        q.put(&8).unwrap();
        let (v, d) = q.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(v, 8);
        d.ack().unwrap();
        assert!(m
            .queue_named::<u64>(name)
            .unwrap()
            .with_heartbeat(Duration::ZERO)
            .is_err());
        m.remove_named(name).unwrap();
    });
}

/// A Redis server restarted (empty) while a lock's, an event's and a
/// queue's waits wait: each ends within its bound, with an error or its
/// answer from the new server, never a panic or a hang; and the next
/// calls work.
#[test]
fn a_restart_mid_wait_ends_each_wait() {
    let test = "a_restart_mid_wait_ends_each_wait";
    let Some(mut server) = OwnServer::start(test) else {
        return;
    };
    let name = unique(test);
    common::watchdog(test, LIMIT, || {
        let url = server.url();
        let m = Manager::connect_redis_with_timeout(&url, Duration::from_secs(2)).unwrap();
        let lock = m.lock_named(&name).unwrap();
        let e = m.event_named(&name).unwrap();
        let q = m.queue_named::<u64>(&name).unwrap();
        let held = lock.acquire(Some(Duration::ZERO)).unwrap();
        let wait = Duration::from_secs(20);
        let (r_lock, r_event, r_queue) = std::thread::scope(|s| {
            let l = s.spawn(|| {
                let started = Instant::now();
                (lock.acquire(Some(wait)).map(drop), started.elapsed())
            });
            let ev = s.spawn(|| {
                let started = Instant::now();
                (e.wait(Some(wait)), started.elapsed())
            });
            let qu = s.spawn(|| {
                let started = Instant::now();
                (q.get(Some(wait)).map(|(v, _)| v), started.elapsed())
            });
            // All three blocked on the server.
            let mut admin = raw(&url);
            assert!(wait_until(LIMIT, || {
                let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
                ["cmd=blpop", "cmd=subscribe", "cmd=blmove"]
                    .iter()
                    .all(|c| list.contains(c))
            }));
            server.restart();
            (l.join().unwrap(), ev.join().unwrap(), qu.join().unwrap())
        });
        eprintln!("lock: {r_lock:?}, event: {r_event:?}, queue: {r_queue:?}");
        let bound = wait + Duration::from_secs(10);
        for took in [r_lock.1, r_event.1, r_queue.1] {
            assert!(took < bound, "{took:?}");
        }
        // The lock is free on the new server: taken, or an error.
        assert!(
            matches!(
                &r_lock.0,
                Ok(()) | Err(Error::ManagerGone(_) | Error::Ambiguous(_))
            ),
            "{r_lock:?}"
        );
        assert!(
            matches!(&r_event.0, Ok(false) | Err(Error::ManagerGone(_))),
            "{r_event:?}"
        );
        assert!(
            matches!(
                &r_queue.0,
                Err(Error::Empty | Error::ManagerGone(_) | Error::Ambiguous(_))
            ),
            "{r_queue:?}"
        );
        drop(held);
        // Everything works on the new server.
        lock.acquire(Some(Duration::from_secs(5)))
            .unwrap()
            .release()
            .unwrap();
        e.set().unwrap();
        assert!(e.wait(Some(Duration::ZERO)).unwrap());
        q.put(&1).unwrap();
        assert_eq!(q.get(Some(Duration::from_secs(5))).unwrap().0, 1);
    });
}
