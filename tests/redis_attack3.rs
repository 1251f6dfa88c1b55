//! A third round of attacks on the Redis backend and the pool across
//! machines: threads of one process sharing a server, kills mid-operation,
//! keys scribbled on by another client.
//!
//! Needs `MULTIPROC_TEST_REDIS` (see tests/common/redis.rs): skipped with a
//! printed reason without it, a failure in CI. Pool workers are this test
//! binary run again (`pool_worker`, an ignored test that serves only when
//! its environment says so), killed by pid when a test ends.

#![cfg(feature = "redis")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::{redis_url, unique};
use common::{wait_until, watchdog};
use multiproc::pool::{RemotePool, Worker};
use multiproc::{task, Manager};

const LIMIT: Duration = Duration::from_secs(90);

/// Set in a worker: `<url>|<pool>`.
const WORKER_ENV: &str = "MULTIPROC_TEST_ATTACK3_WORKER";

fn square(x: u64) -> u64 {
    x * x
}

/// Sleeps `ms`, then returns it.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A result that refuses to be encoded.
#[derive(Debug)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unencodable)
    }
}

fn unencodable(_: u64) -> Unencodable {
    Unencodable
}

/// A pool worker's life, when this binary is run as one; nothing otherwise.
#[test]
#[ignore = "a pool worker's entry: the pool tests run this binary again as one"]
fn pool_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let (url, pool) = spec.split_once('|').expect("url|pool");
    let served = Worker::new(url, &[&task!(square), &task!(nap), &task!(unencodable)])
        .pool(pool)
        .heartbeat(Duration::from_millis(600))
        .serve();
    match served {
        // What `serve` says it ran, told to the test as the exit code.
        Ok(n) => std::process::exit(100 + i32::try_from(n.min(100)).unwrap()),
        Err(e) => {
            eprintln!("pool worker {}: {e}", std::process::id());
            std::process::exit(1);
        }
    }
}

/// A pool of its own and its worker processes; kills them (by pid) and
/// removes the pool's keys when dropped.
struct Workers {
    pool: RemotePool,
    children: Vec<Child>,
}

impl Workers {
    fn start(url: &str, test: &str, n: usize) -> Workers {
        Workers::start_named(url, &unique(test), n)
    }

    fn start_named(url: &str, name: &str, n: usize) -> Workers {
        let pool = RemotePool::connect_named(url, name).expect("connect");
        let children = (0..n)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "pool_worker", "--ignored", "--test-threads=1"])
                    .env(WORKER_ENV, format!("{url}|{}", pool.name()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("start a worker")
            })
            .collect();
        let w = Workers { pool, children };
        assert!(
            wait_until(Duration::from_secs(30), || w.pool.workers().unwrap() == n),
            "{n} workers did not announce themselves"
        );
        w
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.pool.remove();
    }
}

/// One thread waits for a slow task's result; another thread of the same
/// process applies quick tasks and uses a dict on the same server. The
/// waiting thread must not hold the process's connection while it waits:
/// the others' calls answer in their own time, not after the slow task.
#[test]
fn a_threads_wait_for_a_slow_result_holds_up_no_other_thread() {
    let Some(url) = redis_url("a_threads_wait_for_a_slow_result") else {
        return;
    };
    watchdog("a slow result and quick calls", LIMIT, || {
        let w = Workers::start(&url, "attack3-slow-wait", 2);
        let m = Manager::connect_redis(&url).unwrap();
        let name = unique("attack3-slow-wait-dict");
        let d = m.dict_named::<String, i64>(&name).unwrap();
        let slow = w.pool.apply_async(task!(nap), 6000);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| slow.get().unwrap());
            let start = Instant::now();
            for i in 0..5u64 {
                assert_eq!(w.pool.apply(task!(square), i).unwrap(), i * i);
                d.set("k".into(), i as i64).unwrap();
            }
            let took = start.elapsed();
            assert!(
                took < Duration::from_secs(3),
                "five quick tasks and dict sets took {took:?} while another thread waited"
            );
            assert_eq!(waiter.join().unwrap(), 6000);
        });
        assert!(m.remove_named(&name).unwrap());
    });
}

/// A thread waits for a result with `get`; another asks `ready()` and
/// `wait_timeout` of the same result (Python's `AsyncResult` answers
/// `ready()` at once whoever waits): each answers in its own time, and
/// both threads see the result once it comes.
#[test]
fn ready_and_wait_timeout_answer_while_another_thread_gets() {
    let Some(url) = redis_url("ready_and_wait_timeout_answer") else {
        return;
    };
    watchdog("ready while another thread gets", LIMIT, || {
        let w = Workers::start(&url, "attack3-ready", 1);
        let slow = w.pool.apply_async(task!(nap), 3000);
        std::thread::scope(|s| {
            let getter = s.spawn(|| slow.get().unwrap());
            // Over a second of looks, while the getter waits.
            for _ in 0..10 {
                let start = Instant::now();
                assert!(!slow.ready());
                assert!(!slow.wait_timeout(Duration::from_millis(100)));
                let took = start.elapsed();
                assert!(
                    took < Duration::from_millis(1000),
                    "ready and a 100 ms wait took {took:?} while another thread waited"
                );
            }
            // Both see the result: neither is told it is gone.
            assert!(slow.wait_timeout(Duration::from_secs(30)));
            assert_eq!(slow.get().unwrap(), 3000);
            assert_eq!(getter.join().unwrap(), 3000);
        });
    });
}

/// `serve` answers the number of tasks it ran: the entries that wake a
/// waiting worker for a stop, and ids of tasks already finished, are no
/// tasks (nor count towards `max_tasks`).
#[test]
fn serve_counts_the_tasks_it_ran_and_no_stop_entry() {
    let Some(url) = redis_url("serve_counts_the_tasks_it_ran") else {
        return;
    };
    watchdog("a worker's count", LIMIT, || {
        let mut w = Workers::start(&url, "attack3-count", 1);
        assert_eq!(w.pool.apply(task!(square), 3).unwrap(), 9);
        assert_eq!(w.pool.apply(task!(square), 4).unwrap(), 16);
        // An id of no task, as a finished task's second run finds.
        let pending = format!("multiproc:{{pool:{}}}:pending", w.pool.name());
        let _: u64 = redis::cmd("LPUSH")
            .arg(&pending)
            .arg("0123456789abcdef0123456789abcdef")
            .query(&mut common::redis::raw(&url))
            .unwrap();
        assert_eq!(w.pool.apply(task!(square), 5).unwrap(), 25);
        w.pool.stop_workers().unwrap();
        let c = &mut w.children[0];
        assert!(wait_until(Duration::from_secs(30), || c
            .try_wait()
            .unwrap()
            .is_some()));
        let code = c.wait().unwrap().code();
        assert_eq!(code, Some(103), "serve's count, plus 100");
    });
}

/// A TCP proxy to the Redis server at `url` that, once armed, drops the
/// next reply the server sends on any connection (closing that
/// connection instead of passing it on): a reply lost after the server
/// did the work.
struct ReplyDropper {
    port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ReplyDropper {
    fn start(url: &str) -> ReplyDropper {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let target = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let arm = armed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n @ 1..) = c_in.read(&mut buf) {
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Both);
                    let _ = c_in.shutdown(Shutdown::Both);
                });
                let arm = arm.clone();
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n @ 1..) = s_in.read(&mut buf) {
                        if arm.swap(false, Ordering::SeqCst) || c_out.write_all(&buf[..n]).is_err()
                        {
                            break;
                        }
                    }
                    let _ = s_in.shutdown(Shutdown::Both);
                    let _ = c_out.shutdown(Shutdown::Both);
                });
            }
        });
        ReplyDropper { port, armed }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An acknowledgement that the server did, whose reply was lost: `ack`
/// must not answer that the item was taken back by the reaper (it was
/// finished, and will never come again); it says so, or that it cannot
/// know.
#[test]
fn an_ack_whose_reply_is_lost_is_not_reported_as_reaped() {
    let Some(url) = redis_url("an_ack_whose_reply_is_lost") else {
        return;
    };
    watchdog("a lost ack reply", LIMIT, || {
        let proxy = ReplyDropper::start(&url);
        let m = Manager::connect_redis(&proxy.url()).unwrap();
        let name = unique("attack3-lost-ack");
        // A heartbeat that beats no more during the test.
        let q = m
            .queue_named::<i64>(&name)
            .unwrap()
            .with_heartbeat(Duration::from_secs(600))
            .unwrap();
        q.put_many(&[1, 2]).unwrap();
        // The acknowledgement's script is loaded with the first.
        let (one, d) = q.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(one, 1);
        assert!(d.ack().unwrap());
        let (two, d) = q.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(two, 2);
        proxy.arm();
        let acked = d.ack();
        // It was done: nothing is left unfinished or waiting.
        q.join(Some(Duration::ZERO)).unwrap();
        assert_eq!(q.qsize().unwrap(), 0);
        assert!(q.reap().unwrap() == 0);
        assert!(
            matches!(acked, Ok(true) | Err(multiproc::Error::Ambiguous(_))),
            "an ack the server did answered {acked:?}"
        );
        drop(q);
        m.remove_named(&name).unwrap();
    });
}

/// More workers than CPUs, a task whose result cannot be encoded among
/// quick ones: that task fails alone (`TaskFailed`), every
/// other item comes back once and right, and the workers serve on.
#[test]
fn more_workers_than_cpus_and_an_unencodable_result() {
    let Some(url) = redis_url("more_workers_than_cpus") else {
        return;
    };
    watchdog("many workers", LIMIT, || {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let w = Workers::start(&url, "attack3-many", cpus * 3);
        let bad = w.pool.apply_async(task!(unencodable), 1);
        let squares = w
            .pool
            .map_async(task!(square), 0..600u64, Some(1))
            .get()
            .unwrap();
        assert_eq!(squares, (0..600u64).map(|x| x * x).collect::<Vec<_>>());
        match bad.get() {
            Err(multiproc::Error::TaskFailed(m)) => {
                // (postcard keeps no custom message: not the value's own words)
                assert!(m.contains("cannot encode the result"), "{m}")
            }
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        let mut unordered: Vec<u64> = w
            .pool
            .imap_unordered(task!(square), 0..200u64)
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(w.pool.workers().unwrap(), cpus * 3);
    });
}

/// Removing a pool deletes its own keys only: another pool whose name
/// begins with this one's and holds `}:result:` (any name is allowed)
/// keeps its waiting tasks.
#[test]
fn removing_a_pool_leaves_a_pool_of_a_longer_name_alone() {
    let Some(url) = redis_url("removing_a_pool_leaves") else {
        return;
    };
    watchdog("two pools of close names", LIMIT, || {
        let short = unique("attack3-remove");
        let long = format!("{short}}}:result:x");
        let a = RemotePool::connect_named(&url, &short).unwrap();
        let b = RemotePool::connect_named(&url, &long).unwrap();
        // Tasks of `b` wait (no worker serves it).
        let waiting = b.apply_async(task!(square), 3);
        let mut c = common::redis::raw(&url);
        let pending = format!("multiproc:{{pool:{long}}}:pending");
        let len = |c: &mut redis::Connection| -> u64 {
            redis::cmd("LLEN").arg(&pending).query(c).unwrap()
        };
        assert_eq!(len(&mut c), 1);
        a.remove().unwrap();
        assert_eq!(
            len(&mut c),
            1,
            "removing {short:?} deleted {long:?}'s tasks"
        );
        assert!(matches!(
            waiting.get_timeout(Duration::ZERO),
            Err(multiproc::Error::Timeout)
        ));
        b.remove().unwrap();
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("multiproc:{{pool:{short}*"))
            .query(&mut c)
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    });
}

/// A server that closes idle connections (its `timeout`, as hosted Redis
/// services do) closes the connection a queue `get` waited on before: the
/// next wait is made on a new one, an empty queue is `Empty` (never
/// `Ambiguous`: nothing was taken), and an item put then is delivered.
#[test]
fn a_wait_after_the_server_closed_an_idle_waiting_connection_is_not_ambiguous() {
    let Some(server) = common::redis::OwnServer::start("a_wait_after_the_server_closed") else {
        return;
    };
    watchdog("a wait on a closed connection", LIMIT, || {
        let url = server.url();
        let m = Manager::connect_redis(&url).unwrap();
        let q = m.queue_named::<i64>(&unique("attack3-idle")).unwrap();
        assert!(matches!(
            q.get(Some(Duration::from_millis(50))),
            Err(multiproc::Error::Empty)
        ));
        let mut admin = common::redis::raw(&url);
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "timeout", "1"])
            .query(&mut admin)
            .unwrap();
        // The server closes the idle connections: the waiting one, the
        // manager's (the heartbeat's beats keep its own alive).
        let list = |admin: &mut redis::Connection| -> String {
            redis::cmd("CLIENT").arg("LIST").query(admin).unwrap()
        };
        let closed = wait_until(Duration::from_secs(20), || {
            !list(&mut admin).contains("cmd=blmove")
        });
        assert!(closed, "the server did not close the idle connection");
        let r = q.get(Some(Duration::from_millis(50)));
        assert!(matches!(r, Err(multiproc::Error::Empty)), "{r:?}");
        q.put(&5).unwrap();
        let (item, d) = q.get(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(item, 5);
        assert!(d.ack().unwrap());
    });
}

/// Another program writes a hash where a running task's result goes: the
/// submitter gets a clear error, and the worker serves on (one foreign
/// key must not end a worker, nor every worker in turn).
#[test]
fn a_foreign_result_key_fails_that_task_not_the_worker() {
    let Some(url) = redis_url("a_foreign_result_key") else {
        return;
    };
    watchdog("a foreign result key", LIMIT, || {
        let mut w = Workers::start(&url, "attack3-foreign-result", 1);
        let prefix = format!("multiproc:{{pool:{}}}:", w.pool.name());
        let slow = w.pool.apply_async(task!(nap), 1500);
        let mut c = common::redis::raw(&url);
        let mut ids: Vec<String> = Vec::new();
        assert!(wait_until(Duration::from_secs(10), || {
            ids = redis::cmd("HKEYS")
                .arg(format!("{prefix}tasks"))
                .query(&mut c)
                .unwrap();
            !ids.is_empty()
        }));
        let _: u64 = redis::cmd("HSET")
            .arg(format!("{prefix}result:{}", ids[0]))
            .arg("x")
            .arg("y")
            .query(&mut c)
            .unwrap();
        let r = slow.get_timeout(Duration::from_secs(20));
        assert!(
            matches!(&r, Err(multiproc::Error::Remote { message, .. }) if message.contains("WRONGTYPE")),
            "{r:?}"
        );
        // The task ran to its end: its worker has recorded what it could.
        let tasks = format!("{prefix}tasks");
        assert!(wait_until(Duration::from_secs(20), || {
            redis::cmd("HLEN").arg(&tasks).query::<u64>(&mut c).unwrap() == 0
        }));
        // The worker is still there, and serves.
        let r = w.pool.apply_async(task!(square), 6);
        let r = r.get_timeout(Duration::from_secs(20));
        assert!(
            w.children[0].try_wait().unwrap().is_none(),
            "the worker ended: {:?}",
            w.children[0].try_wait()
        );
        assert_eq!(r.unwrap(), 36);
    });
}

/// Another program overwrote a dead consumer's list of items in progress
/// with a string: the reaper leaves that key alone (and `remove_named`
/// deletes it), and every other consumer's `get` goes on working (it runs
/// the reaper first: a reaper that failed on that key failed every `get`
/// of the queue for ever).
#[test]
fn a_foreign_key_of_one_dead_consumer_does_not_stop_the_queue() {
    let Some(url) = redis_url("a_foreign_key_of_one_dead_consumer") else {
        return;
    };
    watchdog("a dead consumer's foreign key", LIMIT, || {
        let m = Manager::connect_redis(&url).unwrap();
        let name = unique("attack3-foreign-p");
        let key = |part: &str| format!("multiproc:{{queue:{name}}}:{part}");
        let mut c = common::redis::raw(&url);
        let a = m
            .queue_named::<i64>(&name)
            .unwrap()
            .with_heartbeat(Duration::from_secs(60))
            .unwrap();
        a.put(&1).unwrap();
        let (one, held) = a.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(one, 1);
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(key("c")).query(&mut c).unwrap();
        let _: () = redis::cmd("SET")
            .arg(key(&format!("p:{}", ids[0])))
            .arg("not a list")
            .query(&mut c)
            .unwrap();
        let _: u64 = redis::cmd("DEL")
            .arg(key(&format!("hb:{}", ids[0])))
            .query(&mut c)
            .unwrap();
        let b = m.queue_named::<i64>(&name).unwrap();
        b.put(&2).unwrap();
        let got = b.get(Some(Duration::ZERO));
        assert!(matches!(got, Ok((2, _))), "{got:?}");
        let (_, d) = got.unwrap();
        assert!(d.ack().unwrap());
        assert_eq!(b.reap().unwrap(), 0);
        // The acknowledgement of what the other program overwrote is refused.
        assert!(held.ack().is_err());
        drop((a, b));
        common::redis::remove_all(&m, &url, &name);
    });
}

/// Every timed call of the queue, lock and event at 0, 1 ns and
/// `Duration::MAX` when what it waits for is there: each succeeds at
/// once (no overflow, no "timed out" for a free lock or a set event).
#[test]
fn timed_calls_at_zero_one_nanosecond_and_max_succeed_when_free() {
    let Some(url) = redis_url("timed_calls_at_zero_one_nanosecond_and_max") else {
        return;
    };
    watchdog("timed calls at their limits", LIMIT, || {
        let m = Manager::connect_redis(&url).unwrap();
        let name = unique("attack3-limits");
        let q = m
            .queue_named::<u32>(&name)
            .unwrap()
            .with_heartbeat(Duration::MAX)
            .unwrap();
        let lock = m
            .lock_named(&name)
            .unwrap()
            .with_lease(Duration::MAX)
            .unwrap();
        let event = m.event_named(&name).unwrap();
        event.set().unwrap();
        let pool = RemotePool::connect_named(&url, &name).unwrap();
        for t in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
            q.put(&7).unwrap();
            let (item, d) = q.get(Some(t)).unwrap_or_else(|e| panic!("get({t:?}): {e}"));
            assert_eq!(item, 7);
            assert!(d.ack().unwrap());
            q.join(Some(t))
                .unwrap_or_else(|e| panic!("join({t:?}): {e}"));
            let g = lock
                .acquire(Some(t))
                .unwrap_or_else(|e| panic!("acquire({t:?}): {e}"));
            g.extend(Duration::MAX).unwrap();
            assert!(g.extend(Duration::from_nanos(1)).is_err());
            g.release().unwrap();
            assert!(event.wait(Some(t)).unwrap(), "wait({t:?})");
            // An empty map is done at once, whatever the timeout.
            let none: Vec<u64> = pool
                .map_async(task!(square), Vec::<u64>::new(), None)
                .get_timeout(t)
                .unwrap();
            assert!(none.is_empty());
        }
        drop(q);
        common::redis::remove_all(&m, &url, &name);
        pool.remove().unwrap();
    });
}

/// Pools whose names hold a space, braces, glob characters, a colon, or
/// are as long as allowed: each serves its tasks, and `remove` leaves none
/// of its keys (and none of another's).
#[test]
fn pools_of_odd_names_serve_and_are_removed_whole() {
    let Some(url) = redis_url("pools_of_odd_names") else {
        return;
    };
    watchdog("pools of odd names", LIMIT, || {
        let base = unique("attack3-odd");
        let long = format!("{base}{}", "x".repeat(512 - base.len()));
        let names = [
            format!("{base} a b"),
            format!("{{{base}}}"),
            format!("{base}}}"),
            format!("{base}*?[a]\\:result:"),
            long,
        ];
        let mut c = common::redis::raw(&url);
        let keys = |c: &mut redis::Connection| -> Vec<String> {
            let all: Vec<String> = redis::cmd("KEYS")
                .arg("multiproc:{pool:*")
                .query(c)
                .unwrap();
            all.into_iter()
                .filter(|k| k.contains(base.as_str()))
                .collect()
        };
        for name in &names {
            let w = Workers::start_named(&url, name, 1);
            assert_eq!(w.pool.apply(task!(square), 9).unwrap(), 81, "{name:?}");
            // A result nobody reads.
            let _unread = w.pool.apply_async(task!(square), 2);
            assert!(wait_until(Duration::from_secs(30), || keys(&mut c)
                .iter()
                .any(|k| k.contains(":result:") && !k.ends_with(":result:"))));
            w.pool.stop_workers().unwrap();
            // Dropped: its worker killed, the pool removed.
            drop(w);
            assert!(keys(&mut c).is_empty(), "{name:?} left: {:?}", keys(&mut c));
        }
    });
}

/// Workers killed (SIGKILL) at random moments of claiming, running and
/// finishing tasks, and replaced: every task of a map comes back, right,
/// or as `WorkerDied` (two of its runs died), and none is lost or hangs.
#[test]
fn workers_killed_at_random_lose_no_task() {
    let Some(url) = redis_url("workers_killed_at_random") else {
        return;
    };
    watchdog("workers killed at random", LIMIT, || {
        let mut w = Workers::start(&url, "attack3-kill", 3);
        let handles: Vec<_> = (0..300u64)
            .map(|i| (i, w.pool.apply_async(task!(nap), i % 7 * 15)))
            .collect();
        let mut seed = std::process::id() as u64 | 1;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let start = Instant::now();
        let mut kills = 0;
        while start.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(40 + rand() % 120));
            let k = (rand() % w.children.len() as u64) as usize;
            let _ = w.children[k].kill();
            let _ = w.children[k].wait();
            kills += 1;
            let spare = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "pool_worker", "--ignored", "--test-threads=1"])
                .env(WORKER_ENV, format!("{url}|{}", w.pool.name()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            w.children[k] = spare;
        }
        let (mut ok, mut died) = (0, 0);
        for (i, h) in &handles {
            match h.get_timeout(Duration::from_secs(60)) {
                Ok(v) => {
                    assert_eq!(v, i % 7 * 15);
                    ok += 1;
                }
                Err(multiproc::Error::WorkerDied { .. }) => died += 1,
                Err(e) => panic!("task {i}: {e}"),
            }
        }
        eprintln!("{kills} kills: {ok} done, {died} died twice");
        assert_eq!(ok + died, handles.len());
    });
}

/// A child forked while another thread of its parent waits for a pool
/// result (its blocking read in flight) uses the same pool handle: it
/// gets its own results on its own connections, and the parent's waiter
/// still gets its result (neither reads the other's reply).
#[test]
fn a_child_forked_mid_wait_uses_the_pool_on_its_own_connection() {
    let Some(url) = redis_url("a_child_forked_mid_wait") else {
        return;
    };
    watchdog("a fork mid-wait", LIMIT, || {
        let w = Workers::start(&url, "attack3-fork", 2);
        let slow = w.pool.apply_async(task!(nap), 1500);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| slow.get().unwrap());
            // Forked while the waiter is (most likely) blocked in Redis.
            let pool = w.pool.clone();
            let child = common::static_child(move || {
                for i in 0..5u64 {
                    assert_eq!(pool.apply(task!(square), i).unwrap(), i * i);
                }
                let r = pool.apply_async(task!(nap), 10);
                assert!(r.wait_timeout(Duration::from_secs(30)));
                assert_eq!(r.get().unwrap(), 10);
            });
            assert_eq!(common::join(&child, Duration::from_secs(60)), 0);
            assert_eq!(waiter.join().unwrap(), 1500);
        });
        assert_eq!(w.pool.apply(task!(square), 12).unwrap(), 144);
    });
}
