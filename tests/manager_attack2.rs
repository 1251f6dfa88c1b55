//! A Rust user's mistakes with the managed layer, from safe code: proxies
//! typed differently from what their object holds, and the like. Each
//! test is a bug found by attacking the public API, kept as a regression
//! test.

mod common;

use std::time::Duration;

use common::{join, static_child, watchdog};
use multiproc::manager::{DictProxy, ListProxy, Manager};
use multiproc::{Error, Process, RawValue};

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

/// The descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A tag no other client's or round's item has.
fn tag(client: u64, round: u64) -> u64 {
    client << 32 | round
}

/// Clients killed with SIGKILL at random moments of list appends, dict
/// `set_many`/`get_many`, `setdefault` and `pop` (through the fast path,
/// and on the socket for a large `set_many`): the others carry on; every
/// append a client saw acknowledged is in the list exactly once, in its
/// order, and the one it had in flight at most once; the server ends up
/// with the objects and the descriptors it had (a dead client's
/// references, connection and fast-path area are freed).
#[test]
fn clients_killed_mid_call_of_any_method_leave_nothing_behind() {
    use multiproc::RawArray;
    use std::sync::atomic::Ordering::SeqCst;
    const CLIENTS: u64 = 4;
    let trials: u64 = std::env::var("MULTIPROC_SWEEP_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    watchdog("kill sweep of manager methods", LIMIT * 4, || {
        let m = Manager::start().unwrap();
        let server = m.server_pid().unwrap();
        let l = m.list::<u64>().unwrap();
        let d = m.dict::<u64, u64>().unwrap();
        let objects = m.number_of_objects().unwrap();
        let fds = open_fds(server);
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("seed {seed:#x}");
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for trial in 0..trials {
            // Appends acknowledged, and rounds begun, per client.
            let acked = RawArray::<u64>::new(CLIENTS as usize).unwrap();
            let begun = RawArray::<u64>::new(CLIENTS as usize).unwrap();
            let kids: Vec<_> = (0..CLIENTS)
                .map(|k| {
                    let (l, d) = (l.clone(), d.clone());
                    let (acked, begun) = (acked.clone(), begun.clone());
                    static_child(move || {
                        let k = k + CLIENTS * trial;
                        for i in 0u64.. {
                            begun
                                .atomic((k % CLIENTS) as usize)
                                .unwrap()
                                .store(i + 1, SeqCst);
                            l.append(tag(k, i)).unwrap();
                            acked
                                .atomic((k % CLIENTS) as usize)
                                .unwrap()
                                .store(i + 1, SeqCst);
                            let keys = [tag(k, 3 * i), tag(k, 3 * i + 1), tag(k, 3 * i + 2)];
                            if i % 8 == 7 {
                                // Over the area's 64 KiB: on the socket.
                                let many: Vec<(u64, u64)> =
                                    (0..10_000).map(|j| (tag(k, 1 << 31 | j), j)).collect();
                                d.set_many(many).unwrap();
                            }
                            d.set_many(keys.map(|key| (key, i))).unwrap();
                            assert_eq!(d.get_many(&keys).unwrap(), [Some(i); 3]);
                            assert_eq!(d.setdefault(keys[0], 7).unwrap(), i);
                            assert_eq!(d.pop(&keys[1]).unwrap(), i);
                            assert_eq!(d.remove(&keys[2]).unwrap(), Some(i));
                        }
                    })
                })
                .collect();
            for k in 0..CLIENTS as usize {
                assert!(
                    common::wait_until(LIMIT, || acked.atomic(k).unwrap().load(SeqCst) > 0),
                    "client {k} never started"
                );
            }
            // A pause of 1 µs to 8 ms, then one client killed.
            let pause = Duration::from_nanos(1_000 << rand(14));
            let end = std::time::Instant::now() + pause;
            while std::time::Instant::now() < end {
                std::hint::spin_loop();
            }
            let victim = rand(CLIENTS) as usize;
            kids[victim].kill().unwrap();
            assert_eq!(join(&kids[victim], LIMIT), -9);
            for (k, kid) in kids.iter().enumerate().filter(|&(k, _)| k != victim) {
                let from = acked.atomic(k).unwrap().load(SeqCst);
                assert!(
                    common::wait_until(LIMIT, || acked.atomic(k).unwrap().load(SeqCst) > from + 2),
                    "trial {trial}: client {k} stuck after client {victim} died"
                );
                kid.kill().unwrap();
                assert_eq!(join(kid, LIMIT), -9);
            }
            let items = l.to_vec().unwrap();
            for k in 0..CLIENTS {
                let mine: Vec<u64> = items
                    .iter()
                    .filter(|&&t| t >> 32 == k + CLIENTS * trial)
                    .map(|&t| t & 0xffff_ffff)
                    .collect();
                let (acked, begun) = (
                    acked.atomic(k as usize).unwrap().load(SeqCst),
                    begun.atomic(k as usize).unwrap().load(SeqCst),
                );
                let expected: Vec<u64> = (0..acked).collect();
                assert!(
                    mine == expected || (begun > acked && mine == (0..begun).collect::<Vec<_>>()),
                    "trial {trial}: client {k}: {acked} appends acknowledged, {begun} begun, list has {} of its items (first missing or repeated: {:?})",
                    mine.len(),
                    mine.iter().enumerate().find(|&(i, &v)| i as u64 != v)
                );
            }
            assert!(
                common::wait_until(LIMIT, || m.number_of_objects().unwrap() == objects),
                "trial {trial}: {} objects, {objects} before",
                m.number_of_objects().unwrap()
            );
            assert!(
                common::wait_until(LIMIT, || open_fds(server) == fds),
                "trial {trial}: the server has {} descriptors open, {fds} before",
                open_fds(server)
            );
            l.clear().unwrap();
            d.clear().unwrap();
        }
    });
}

/// A client forks a child that never uses the manager (a worker of its
/// own, or a helper), then is killed: its connection ends with it, so the
/// server frees what only it held at once, not when the child exits (the
/// child's copy of the connection's socket kept the connection open).
#[test]
fn a_dead_clients_connection_ends_with_it_whatever_its_children_inherited() {
    use std::sync::atomic::Ordering::SeqCst;
    watchdog("a dead client's children", LIMIT * 2, || {
        let m = Manager::start().unwrap();
        let server = m.server_pid().unwrap();
        let (objects, fds) = (m.number_of_objects().unwrap(), open_fds(server));
        let (address, key) = (m.address().clone(), m.authkey().to_vec());
        let helper = RawValue::<u32>::new(0).unwrap();
        let theirs = helper.clone();
        let client = static_child(move || {
            let m = Manager::connect(address, &key).unwrap();
            let d = m.dict::<i64, i64>().unwrap();
            d.set(1, 1).unwrap();
            // Forked while its connection is open; outlives the test
            // (which kills it) unless the test is aborted.
            let mut child = Process::new(|| std::thread::sleep(LIMIT * 3));
            child.start().unwrap();
            theirs.atomic().store(child.pid().unwrap(), SeqCst);
            loop {
                d.increment(&1, 1).unwrap();
            }
        });
        assert!(common::wait_until(LIMIT, || helper.atomic().load(SeqCst) != 0));
        let helper = helper.atomic().load(SeqCst);
        client.kill().unwrap();
        assert_eq!(join(&client, LIMIT), -9);
        let freed = common::wait_until(LIMIT, || {
            m.number_of_objects().unwrap() == objects && open_fds(server) == fds
        });
        // The helper, orphaned, is this test's to end.
        // SAFETY: a signal to a process this test started (its pid is
        // not reused before it is reaped by init, after this kill).
        unsafe { libc::kill(helper as i32, libc::SIGKILL) };
        assert!(
            freed,
            "{} objects (before {objects}), {} descriptors (before {fds}) while the dead client's child lives",
            m.number_of_objects().unwrap(),
            open_fds(server)
        );
    });
}

/// Threads of a forked child that make their first calls on an inherited
/// proxy at once take one reference for the child, not one each: once
/// the child and the parent drop their proxies, the object is freed,
/// while the child lives on (the extra references lived as long as the
/// child's connection).
#[test]
fn threads_of_a_child_first_using_an_inherited_proxy_take_one_reference() {
    use std::sync::atomic::Ordering::SeqCst;
    const THREADS: usize = 8;
    watchdog("first uses in a child", LIMIT * 2, || {
        let m = Manager::start().unwrap();
        let objects = m.number_of_objects().unwrap();
        let d = m.dict::<u64, u64>().unwrap();
        let dropped = RawValue::<u32>::new(0).unwrap();
        let theirs = (d.clone(), dropped.clone());
        let child = static_child(move || {
            let (d, dropped) = theirs;
            let start = std::sync::Barrier::new(THREADS);
            std::thread::scope(|s| {
                for t in 0..THREADS as u64 {
                    let (d, start) = (&d, &start);
                    s.spawn(move || {
                        start.wait();
                        d.set(t, t).unwrap();
                    });
                }
            });
            drop(d);
            dropped.atomic().store(1, SeqCst);
            // Lives on until the test kills it.
            std::thread::sleep(LIMIT * 3);
        });
        assert!(common::wait_until(LIMIT, || dropped.atomic().load(SeqCst) == 1));
        assert_eq!(d.len().unwrap(), THREADS);
        drop(d);
        let freed = common::wait_until(LIMIT, || m.number_of_objects().unwrap() == objects);
        child.kill().unwrap();
        assert_eq!(join(&child, LIMIT), -9);
        assert!(
            freed,
            "{} objects while the child lives",
            m.number_of_objects().unwrap()
        );
    });
}

/// Sixteen fast-path clients on a machine of two CPUs, appending to one
/// list and batching into one dict as fast as they can: no livelock (each
/// finishes), no call waits for seconds, and every write is there exactly
/// once.
#[test]
fn sixteen_clients_on_two_cpus_lose_and_repeat_nothing() {
    const CLIENTS: u64 = 16;
    const ROUNDS: u64 = 200;
    watchdog("sixteen clients", LIMIT * 2, || {
        let m = Manager::start().unwrap();
        let l = m.list::<u64>().unwrap();
        let d = m.dict::<u64, u64>().unwrap();
        // The longest call of each client, in µs.
        let slowest = multiproc::RawArray::<u64>::new(CLIENTS as usize).unwrap();
        let kids: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let (l, d, slowest) = (l.clone(), d.clone(), slowest.clone());
                static_child(move || {
                    let mut worst = Duration::ZERO;
                    for i in 0..ROUNDS {
                        let t = std::time::Instant::now();
                        l.append(tag(k, i)).unwrap();
                        d.set_many([(tag(k, 2 * i), i), (tag(k, 2 * i + 1), i)])
                            .unwrap();
                        worst = worst.max(t.elapsed());
                    }
                    slowest.atomic(k as usize).unwrap().store(
                        worst.as_micros() as u64,
                        std::sync::atomic::Ordering::SeqCst,
                    );
                })
            })
            .collect();
        for kid in &kids {
            assert_eq!(join(kid, LIMIT), 0);
        }
        let mut items = l.to_vec().unwrap();
        items.sort_unstable();
        let expected: Vec<u64> = (0..CLIENTS)
            .flat_map(|k| (0..ROUNDS).map(move |i| tag(k, i)))
            .collect();
        assert_eq!(items, expected);
        assert_eq!(d.len().unwrap() as u64, 2 * CLIENTS * ROUNDS);
        let worst = (0..CLIENTS as usize)
            .map(|k| {
                slowest
                    .atomic(k)
                    .unwrap()
                    .load(std::sync::atomic::Ordering::SeqCst)
            })
            .max()
            .unwrap();
        eprintln!("the slowest call took {worst} µs");
        assert!(worst < 10_000_000, "a call took {worst} µs");
    });
}

/// `Manager::connect` to a program that authenticates with the key but is
/// no manager (its own `Listener`, say) and never answers: an error
/// within the handshake's time limit, not a wait for ever (the first
/// requests waited without a limit).
#[test]
fn connecting_to_a_listener_that_never_answers_fails_in_time() {
    watchdog("a mute listener", LIMIT * 2, || {
        let key = b"the same key";
        let path = std::env::temp_dir().join(format!(
            "multiproc-attack2-mute-{}.sock",
            std::process::id()
        ));
        let address = multiproc::conn::Address::Unix(path.clone());
        let listener = multiproc::conn::Listener::bind(&address, Some(key)).unwrap();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let mute = std::thread::spawn(move || {
            let conn = listener.accept();
            // Holds the connection, unanswered, until the test is done.
            let _ = wait.recv();
            drop(conn);
        });
        let started = std::time::Instant::now();
        let r = Manager::connect(address, key);
        let took = started.elapsed();
        drop(done);
        mute.join().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(r, Err(Error::ManagerGone(_))), "{:?}", r.map(drop));
        assert!(took < Duration::from_secs(40), "took {took:?}");
    });
}

/// `Manager::shutdown` (and so dropping a manager) returns as soon as the
/// server has answered and exited, as Python's does, whether it was asked
/// through the fast path or on the socket: the server waited out its
/// whole grace for undelivered answers (a second) when it had none left.
#[test]
fn a_shutdown_takes_no_grace_it_does_not_need() {
    watchdog("shutdown time", LIMIT, || {
        let time = |transport| {
            (0..3)
                .map(|_| {
                    let mut m = Manager::start().unwrap();
                    let mut asker =
                        Manager::connect_with(m.address().clone(), m.authkey(), transport).unwrap();
                    let started = std::time::Instant::now();
                    asker.shutdown().unwrap();
                    // Joins the server, which is gone.
                    assert!(matches!(m.shutdown(), Err(Error::ManagerGone(_))));
                    started.elapsed()
                })
                .min()
                .unwrap()
        };
        use multiproc::manager::Transport;
        for transport in [Transport::Auto, Transport::Socket] {
            let fastest = time(transport);
            assert!(
                fastest < Duration::from_millis(500),
                "{transport:?}: {fastest:?}"
            );
        }
    });
}
