//! A seventh round of attacks on the Redis backend: requests that reach
//! the server after the client gave up on them, connections killed again
//! and again by another client, a server out of memory or with a low
//! bulk limit, batches that repeat a key.

#![cfg(feature = "redis")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis::{attack, attack_own, raw};
use common::wait_until;
use multiproc::pool::{RemotePool, Worker};
use multiproc::{task, Error, Manager};

const LIMIT: Duration = Duration::from_secs(90);

/// The proxied manager's timeout: short, so that a held request is given
/// up on soon.
const SHORT: Duration = Duration::from_millis(500);

/// Requests held back, each with the connection to the server it is for.
type Held = Arc<Mutex<Vec<(Vec<u8>, TcpStream)>>>;

/// A proxy in front of the test server that passes everything at once,
/// but, once armed, holds back the next request that holds `needle` (and
/// what follows it on that connection) until released, as a network that
/// delays a segment would: the server runs it after the client gave up,
/// then finds the connection closed.
/// What the server answers such a request is kept in `late`.
struct HoldingProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    held: Held,
    late: Arc<Mutex<Vec<u8>>>,
}

impl HoldingProxy {
    fn start(url: &str, needle: &'static [u8]) -> HoldingProxy {
        let upstream = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = HoldingProxy {
            port: listener.local_addr().unwrap().port(),
            armed: Arc::new(AtomicBool::new(false)),
            held: Arc::new(Mutex::new(Vec::new())),
            late: Arc::new(Mutex::new(Vec::new())),
        };
        let (armed, held, late) = (proxy.armed.clone(), proxy.held.clone(), proxy.late.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream.as_str()) else {
                    return;
                };
                let holding = Arc::new(AtomicBool::new(false));
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (armed, held, this) = (armed.clone(), held.clone(), holding.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from_client.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        if chunk.windows(needle.len()).any(|w| w == needle)
                            && armed.swap(false, Ordering::SeqCst)
                        {
                            this.store(true, Ordering::SeqCst);
                            held.lock()
                                .unwrap()
                                .push((chunk.to_vec(), to_server.try_clone().unwrap()));
                            // What follows on this connection is never sent:
                            // the client gives up on it and closes it.
                            return;
                        }
                        if to_server.write_all(chunk).is_err() {
                            return;
                        }
                    }
                });
                let (mut from_server, mut to_client) = (server, client);
                let late = late.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from_server.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if holding.load(Ordering::SeqCst) {
                            late.lock().unwrap().extend_from_slice(&buf[..n]);
                        } else if to_client.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many requests it holds.
    fn holding(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Sends what was held, and then the end of the connection (the
    /// client closed it meanwhile); how many requests.
    fn release(&self) -> usize {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        for (chunk, server) in &held {
            (&*server).write_all(chunk).unwrap();
            server.shutdown(std::net::Shutdown::Write).unwrap();
        }
        held.len()
    }

    /// The server answered a released request.
    fn answered(&self) -> bool {
        !self.late.lock().unwrap().is_empty()
    }
}

/// A queue `get` whose blocking `BLMOVE` the network delays past the
/// client's timeout: the call is ambiguous and its consumer leaves; the
/// `BLMOVE` then reaches the server, after an item was put. That item
/// must not land in the list of a consumer that no reaper looks at any
/// more (it would be lost for good): another consumer gets it.
#[test]
fn a_blocking_take_that_reaches_the_server_after_its_consumer_left_loses_nothing() {
    attack(LIMIT, |url, name| {
        let proxy = HoldingProxy::start(url, b"BLMOVE");
        let direct = Manager::connect_redis(url).unwrap();
        let theirs = direct.queue_named::<String>(name).unwrap();
        let proxied = Manager::connect_redis_with_timeout(&proxy.url(), SHORT).unwrap();
        let ours = proxied.queue_named::<String>(name).unwrap();
        proxy.arm();
        let r = ours.get(Some(Duration::from_millis(200)));
        assert!(
            matches!(r, Err(Error::Ambiguous(_))),
            "{:?}",
            r.map(|(v, _)| v)
        );
        drop(ours);
        // Its consumer leaves (its heartbeat goes).
        let beats = format!("multiproc:{{queue:{name}}}:hb:*");
        assert!(wait_until(LIMIT, || redis::cmd("KEYS")
            .arg(&beats)
            .query::<Vec<String>>(&mut raw(url))
            .unwrap()
            .is_empty()));
        theirs.put(&"in-flight".to_string()).unwrap();
        assert_eq!(proxy.release(), 1);
        assert!(wait_until(LIMIT, || proxy.answered()));
        let got = theirs.get(Some(Duration::from_secs(15)));
        let (item, delivery) = got.expect("the item was lost");
        assert_eq!(item, "in-flight");
        assert_eq!(delivery.count(), 1);
        assert!(delivery.ack().unwrap());
        assert!(matches!(
            theirs.get(Some(Duration::ZERO)),
            Err(Error::Empty)
        ));
        drop(theirs);
        common::redis::remove_all(&direct, url, name);
    });
}

fn square(x: u64) -> u64 {
    x * x
}

/// Sleeps `ms` milliseconds; `ms`.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Whether a client of the server at `url` is blocked in a `BLMOVE`.
fn blocked_in_blmove(url: &str) -> bool {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut raw(url))
        .unwrap();
    clients.lines().any(|l| {
        l.contains("cmd=blmove")
            && l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('b'))
    })
}

/// A pool worker's `BLMOVE` of a task id that the network delays past
/// the worker's timeout: the worker looks at its list once, finds
/// nothing, and takes other tasks; the `BLMOVE` then reaches the server
/// while a task waits, and moves it to the worker's list. The worker
/// must run it while it lives (it is reaped only when it dies), not leave
/// its submitter waiting for ever.
#[test]
fn a_worker_take_that_reaches_the_server_late_is_run() {
    attack(LIMIT, |url, name| {
        let proxy = HoldingProxy::start(url, b"BLMOVE");
        let pool = RemotePool::connect_named(url, name).unwrap();
        proxy.arm();
        let worker = {
            let (url, name) = (proxy.url(), name.to_string());
            std::thread::spawn(move || {
                Worker::new(&url, &[&task!(square), &task!(nap)])
                    .pool(&name)
                    .heartbeat(Duration::from_secs(3))
                    .serve()
            })
        };
        // Its first take is held; it gives up on it (past its timeout)
        // and blocks in another.
        assert!(wait_until(LIMIT, || proxy.holding() == 1));
        assert!(wait_until(LIMIT, || blocked_in_blmove(url)));
        let napping = pool.apply_async(task!(nap), 1000);
        let pending = format!("multiproc:{{pool:{name}}}:pending");
        let llen = || -> u64 {
            redis::cmd("LLEN")
                .arg(&pending)
                .query(&mut raw(url))
                .unwrap()
        };
        assert!(wait_until(LIMIT, || llen() == 0));
        let squared = pool.apply_async(task!(square), 3);
        assert_eq!(proxy.release(), 1);
        assert!(wait_until(LIMIT, || proxy.answered()));
        assert_eq!(napping.get().unwrap(), 1000);
        assert_eq!(squared.get_timeout(Duration::from_secs(20)).unwrap(), 9);
        pool.stop_workers().unwrap();
        assert_eq!(worker.join().unwrap().unwrap(), 2);
        pool.remove().unwrap();
    });
}

/// Kills every other client's connection (`CLIENT KILL TYPE normal`),
/// every few milliseconds, until `stop`.
fn killing(url: &str, stop: &AtomicBool) {
    let mut conn = raw(url);
    while !stop.load(Ordering::SeqCst) {
        let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut conn);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Items put and taken while another client kills every connection again
/// and again: every item whose put was answered is delivered (once its
/// consumers are gone, to the last), and no item is delivered that was
/// not put.
#[test]
fn connections_killed_again_and_again_lose_no_queue_item() {
    attack_own(LIMIT, |url, name| {
        let m = Manager::connect_redis_with_timeout(url, SHORT).unwrap();
        let q = m
            .queue_named::<u64>(name)
            .unwrap()
            .with_heartbeat(Duration::from_millis(600))
            .unwrap();
        let (stop, done) = (AtomicBool::new(false), AtomicBool::new(false));
        let (put, maybe, got) = std::thread::scope(|s| {
            s.spawn(|| killing(url, &stop));
            let producer = s.spawn(|| {
                let (mut put, mut maybe) = (Vec::new(), Vec::new());
                for i in 0..200u64 {
                    match q.put(&i) {
                        Ok(()) => put.push(i),
                        Err(Error::Ambiguous(_)) => maybe.push(i),
                        Err(Error::ManagerGone(_)) => {}
                        Err(e) => panic!("put {i}: {e:?}"),
                    }
                }
                done.store(true, Ordering::SeqCst);
                (put, maybe)
            });
            let consumer = s.spawn(|| {
                let q = q.with_heartbeat(Duration::from_millis(600)).unwrap();
                let mut got = Vec::new();
                // Calls in a row that took nothing, once the producer is done.
                let mut idle = 0;
                while idle < 20 {
                    match q.get(Some(Duration::from_millis(50))) {
                        Ok((i, d)) => {
                            got.push(i);
                            let _ = d.ack();
                            idle = 0;
                        }
                        Err(Error::Empty | Error::Ambiguous(_) | Error::ManagerGone(_)) => {
                            if done.load(Ordering::SeqCst) {
                                idle += 1;
                            }
                        }
                        Err(e) => panic!("get: {e:?}"),
                    }
                }
                got
            });
            let (put, maybe) = producer.join().unwrap();
            let got = consumer.join().unwrap();
            stop.store(true, Ordering::SeqCst);
            (put, maybe, got)
        });
        // The rest, once the consumers above are gone.
        drop(q);
        let last = m.queue_named::<u64>(name).unwrap();
        let mut got = got;
        let missing = |got: &[u64]| put.iter().filter(|i| !got.contains(i)).count();
        let all = wait_until(Duration::from_secs(30), || {
            while let Ok((i, d)) = last.get(Some(Duration::from_millis(100))) {
                got.push(i);
                d.ack().unwrap();
            }
            missing(&got) == 0
        });
        assert!(all, "lost: {} of {} put", missing(&got), put.len());
        for i in &got {
            assert!(put.contains(i) || maybe.contains(i), "{i} was never put");
        }
        eprintln!(
            "put {}, maybe {}, delivered {} ({} distinct)",
            put.len(),
            maybe.len(),
            got.len(),
            {
                let mut d = got.clone();
                d.sort_unstable();
                d.dedup();
                d.len()
            }
        );
        drop(last);
        m.remove_named(name).unwrap();
    });
}

/// Tasks submitted and run while another client kills every connection
/// again and again, with workers run again whenever they return (as a
/// supervisor would): every task submitted has its result, or a clear
/// error, within a bound; none waits for ever, none answers another's.
#[test]
fn connections_killed_again_and_again_leave_no_task_waiting() {
    attack_own(LIMIT, |url, name| {
        let pool = RemotePool::connect_named(url, name).unwrap();
        let (stop, done) = (AtomicBool::new(false), AtomicBool::new(false));
        let outcomes = std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !done.load(Ordering::SeqCst) {
                        let _ = Worker::new(url, &[&task!(square)])
                            .pool(name)
                            .heartbeat(Duration::from_millis(900))
                            .idle_timeout(Duration::from_millis(300))
                            .serve();
                    }
                });
            }
            s.spawn(|| killing(url, &stop));
            let handles: Vec<_> = (0..100u64)
                .map(|i| (i, pool.apply_async(task!(square), i)))
                .collect();
            let outcomes: Vec<_> = handles
                .into_iter()
                .map(|(i, h)| (i, h.get_timeout(Duration::from_secs(40))))
                .collect();
            stop.store(true, Ordering::SeqCst);
            done.store(true, Ordering::SeqCst);
            outcomes
        });
        let mut ok = 0;
        for (i, r) in outcomes {
            match r {
                Ok(v) => {
                    assert_eq!(v, i * i);
                    ok += 1;
                }
                Err(
                    e @ (Error::Ambiguous(_) | Error::ManagerGone(_) | Error::WorkerDied { .. }),
                ) => eprintln!("task {i}: {e}"),
                Err(e) => panic!("task {i}: {e:?}"),
            }
        }
        eprintln!("{ok} of 100 tasks ran");
        pool.remove().unwrap();
    });
}

/// Every key of the objects called `name`, with its serialized content.
fn snapshot(url: &str, name: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let mut conn = raw(url);
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("multiproc:{{*:{name}}}:*"))
        .query(&mut conn)
        .unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = redis::cmd("DUMP").arg(&k).query(&mut conn).unwrap();
            (k, v)
        })
        .collect()
}

/// A server out of memory (`maxmemory` reached, `noeviction`): each write
/// of each kind of object is a clear error that names the cause (never
/// `Ambiguous`: the server refused it), writes nothing, and works again
/// once memory is freed.
#[test]
fn writes_on_a_server_out_of_memory_are_refused_whole() {
    attack_own(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let d = m.dict_named::<String, i64>(name).unwrap();
        let l = m.list_named::<i64>(name).unwrap();
        let q = m.queue_named::<i64>(name).unwrap();
        let v = m.value_named::<i64>(name).unwrap();
        let e = m.event_named(name).unwrap();
        let lock = m.lock_named(name).unwrap();
        d.set("a".into(), 1).unwrap();
        l.append(1).unwrap();
        q.put(&1).unwrap();
        v.set(&1).unwrap();
        let (one, delivery) = q.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(one, 1);
        q.put(&2).unwrap();
        let mut conn = raw(url);
        // Filler, then a limit below what is used.
        let filler: Vec<u8> = vec![7; 1 << 20];
        for i in 0..8 {
            let _: () = redis::cmd("SET")
                .arg(format!("filler-{i}"))
                .arg(&filler)
                .query(&mut conn)
                .unwrap();
        }
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(1 << 20)
            .query(&mut conn)
            .unwrap();
        let before = snapshot(url, name);
        let refused = |what: &str, r: multiproc::Result<()>| match r {
            Err(Error::Remote { message, .. }) if message.contains("OOM") => {}
            other => panic!("{what} on a server out of memory: {other:?}"),
        };
        refused("dict set", d.set("b".into(), 2));
        refused(
            "dict update",
            d.update(vec![("c".into(), 3), ("c".into(), 4)]),
        );
        refused("dict increment", d.increment(&"a".to_string(), 1).map(drop));
        refused("list append", l.append(2));
        refused("list extend", l.extend(vec![3, 4]));
        refused("list insert", l.insert(0, 5));
        refused("queue put", q.put(&3));
        refused("value set", v.set(&2));
        refused("value increment", v.increment(1).map(drop));
        refused("event set", e.set());
        refused("lock acquire", lock.try_acquire().map(drop));
        // A take moves an item (`LMOVE`, which Redis refuses out of memory).
        refused("queue get", q.get(Some(Duration::ZERO)).map(drop));
        assert_eq!(
            snapshot(url, name),
            before,
            "a refused write changed something"
        );
        // What frees memory is done: an acknowledgement.
        assert!(delivery.ack().unwrap());
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(0)
            .query(&mut conn)
            .unwrap();
        let (two, delivery) = q.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(two, 2);
        assert!(delivery.ack().unwrap());
        d.set("b".into(), 2).unwrap();
        l.append(2).unwrap();
        q.put(&3).unwrap();
        assert_eq!(q.get(Some(Duration::ZERO)).unwrap().0, 3);
        v.set(&2).unwrap();
        e.set().unwrap();
        drop(lock.try_acquire().unwrap());
        assert_eq!(d.len().unwrap(), 2);
        assert_eq!(l.len().unwrap(), 2);
        drop(q);
        m.remove_named(name).unwrap();
    });
}

/// A batch that names one key more than once (the same key, or keys
/// Python finds equal: `1`, `True`, `1.0`) ends as Python's `dict.update`
/// does: one key, the first form given, the last value, in the place of
/// its first appearance; and a read of one key twice answers it twice.
#[test]
fn a_batch_that_repeats_a_key_ends_as_pythons_update() {
    use multiproc::manager::PyValue;
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let d = m.dict_named::<PyValue, PyValue>(name).unwrap();
        let s = |t: &str| PyValue::Str(t.into());
        let batch = vec![
            (PyValue::Int(1), s("a")),
            (s(""), s("empty")),
            (PyValue::Bool(true), s("b")),
            (s("x\0\n"), s("nul")),
            (PyValue::Float(1.0), s("c")),
            (s(""), s("empty again")),
        ];
        for how in ["update", "set_many"] {
            d.clear().unwrap();
            match how {
                "update" => d.update(batch.clone()).unwrap(),
                _ => d.set_many(batch.clone()).unwrap(),
            }
            assert_eq!(
                d.items().unwrap(),
                vec![
                    (PyValue::Int(1), s("c")),
                    (s(""), s("empty again")),
                    (s("x\0\n"), s("nul")),
                ],
                "{how}"
            );
            assert_eq!(
                d.get_many(&[PyValue::Bool(true), PyValue::Int(1), s(""), s("")])
                    .unwrap(),
                vec![
                    Some(s("c")),
                    Some(s("c")),
                    Some(s("empty again")),
                    Some(s("empty again"))
                ],
                "{how}"
            );
        }
        m.remove_named(name).unwrap();
    });
}

/// Values over the server's bulk limit (`proto-max-bulk-len`, at its
/// 1 MiB minimum), which the server answers by closing the connection
/// while the request is still being sent: each put or set is an error
/// that says it was not done, never `Ambiguous` (the server runs no
/// command it did not have whole), and the next call works.
#[test]
fn values_over_the_servers_bulk_limit_are_refused_clearly() {
    attack_own(LIMIT, |url, name| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("proto-max-bulk-len")
            .arg(1 << 20)
            .query(&mut raw(url))
            .unwrap();
        let m = Manager::connect_redis(url).unwrap();
        let q = m.queue_named::<String>(name).unwrap();
        let d = m.dict_named::<String, String>(name).unwrap();
        let v = m.value_named::<String>(name).unwrap();
        let big = "x".repeat(4 << 20);
        for _ in 0..3 {
            let r = q.put(&big);
            assert!(matches!(r, Err(Error::Remote { .. })), "queue put: {r:?}");
            let r = d.set("k".into(), big.clone());
            assert!(matches!(r, Err(Error::Remote { .. })), "dict set: {r:?}");
            let r = v.set(&big);
            assert!(matches!(r, Err(Error::Remote { .. })), "value set: {r:?}");
        }
        q.put(&"small".to_string()).unwrap();
        assert_eq!(q.get(Some(Duration::ZERO)).unwrap().0, "small");
        assert_eq!(q.qsize().unwrap(), 0);
        drop(q);
        m.remove_named(name).unwrap();
    });
}

/// Another client flushes the server while a task runs and a queue item
/// is in progress: the task's submitter hears that it is gone (no wait
/// for ever), the worker and the queue's consumer serve on, and what is
/// submitted or put after is done.
#[test]
fn a_flush_by_another_client_mid_task_ends_waits_and_serves_on() {
    attack_own(LIMIT, |url, name| {
        let pool = RemotePool::connect_named(url, name).unwrap();
        let worker = {
            let (url, name) = (url.to_string(), name.to_string());
            std::thread::spawn(move || {
                Worker::new(&url, &[&task!(square), &task!(nap)])
                    .pool(&name)
                    .heartbeat(Duration::from_secs(1))
                    .serve()
            })
        };
        let m = Manager::connect_redis(url).unwrap();
        let q = m.queue_named::<u64>(name).unwrap();
        q.put(&1).unwrap();
        let (_, delivery) = q.get(Some(Duration::ZERO)).unwrap();
        let napping = pool.apply_async(task!(nap), 1500);
        let tasks = format!("multiproc:{{pool:{name}}}:pending");
        assert!(wait_until(LIMIT, || redis::cmd("LLEN")
            .arg(&tasks)
            .query::<u64>(&mut raw(url))
            .unwrap()
            == 0));
        let _: () = redis::cmd("FLUSHALL").query(&mut raw(url)).unwrap();
        match napping.get_timeout(Duration::from_secs(30)) {
            Err(Error::ManagerGone(m)) => assert!(m.contains("no longer in Redis"), "{m}"),
            other => panic!("a task flushed away answered {other:?}"),
        }
        assert!(!delivery.ack().unwrap());
        q.put(&2).unwrap();
        assert_eq!(q.get(Some(Duration::from_secs(5))).unwrap().0, 2);
        assert_eq!(pool.apply(task!(square), 5).unwrap(), 25);
        pool.stop_workers().unwrap();
        assert!(worker.join().unwrap().is_ok());
        drop(q);
        pool.remove().unwrap();
        m.remove_named(name).unwrap();
    });
}

/// Consumers whose `get`s wait 0, 1 ms or 1 ns at a time race with a
/// producer: with no failure, each item is delivered exactly once.
#[test]
fn gets_with_tiny_timeouts_racing_puts_deliver_each_item_once() {
    attack(LIMIT, |url, name| {
        let m = Manager::connect_redis(url).unwrap();
        let q = m.queue_named::<u64>(name).unwrap();
        let done = AtomicBool::new(false);
        let got: Vec<u64> = std::thread::scope(|s| {
            let consumers: Vec<_> = [
                Duration::ZERO,
                Duration::from_millis(1),
                Duration::from_nanos(1),
            ]
            .into_iter()
            .map(|wait| {
                let (q, done) = (&q, &done);
                s.spawn(move || {
                    let q = q.with_heartbeat(Duration::from_secs(10)).unwrap();
                    let mut got = Vec::new();
                    loop {
                        match q.get(Some(wait)) {
                            Ok((i, d)) => {
                                assert_eq!(d.count(), 1);
                                assert!(d.ack().unwrap());
                                got.push(i);
                            }
                            Err(Error::Empty) if done.load(Ordering::SeqCst) => return got,
                            Err(Error::Empty) => {}
                            Err(e) => panic!("get: {e:?}"),
                        }
                    }
                })
            })
            .collect();
            for i in 0..600u64 {
                q.put(&i).unwrap();
            }
            done.store(true, Ordering::SeqCst);
            consumers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect()
        });
        let mut got = got;
        got.sort_unstable();
        assert_eq!(got, (0..600).collect::<Vec<_>>());
        q.join(Some(Duration::ZERO)).unwrap();
        drop(q);
        common::redis::remove_all(&m, url, name);
    });
}
