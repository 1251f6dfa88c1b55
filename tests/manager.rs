//! The Manager across real processes: semantics, atomic updates, lifetime,
//! authentication and robustness.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{child, join, procfs, static_child, wait_until, watchdog};
use multiproc::conn::Address;
use multiproc::manager::{DictProxy, ListProxy, Manager};
use multiproc::{Error, Semaphore};

const LIMIT: Duration = Duration::from_secs(60);

fn remote_kind(e: &Error) -> &str {
    match e {
        Error::Remote { kind, .. } => kind,
        _ => "",
    }
}

#[test]
fn dict_semantics_follow_python() {
    watchdog("dict", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<String, i64>().unwrap();
        assert!(d.is_empty().unwrap());
        d.set("a".into(), 1).unwrap();
        d.set("b".into(), 2).unwrap();
        d.set("a".into(), 10).unwrap(); // overwrite keeps the position
        assert_eq!(d.keys().unwrap(), ["a", "b"]);
        assert_eq!(d.values().unwrap(), [10, 2]);
        assert_eq!(d.get(&"a".into()).unwrap(), Some(10));
        assert_eq!(d.get(&"zz".into()).unwrap(), None);
        assert!(d.contains(&"b".into()).unwrap());
        assert_eq!(d.setdefault("c".into(), 3).unwrap(), 3);
        assert_eq!(d.setdefault("c".into(), 99).unwrap(), 3);
        assert_eq!(d.popitem().unwrap(), ("c".into(), 3));
        assert_eq!(d.pop(&"b".into()).unwrap(), 2);
        assert_eq!(remote_kind(&d.pop(&"b".into()).unwrap_err()), "KeyError");
        assert_eq!(d.remove(&"b".into()).unwrap(), None);
        d.update([("x".into(), 5), ("y".into(), 6)]).unwrap();
        assert_eq!(d.len().unwrap(), 3);
        assert_eq!(d.to_hash_map().unwrap()["y"], 6);
        assert_eq!(d.items().unwrap()[0], ("a".into(), 10));
        d.set_many((0..10).map(|i| (format!("k{i}"), i))).unwrap();
        assert_eq!(
            d.get_many(&["k3".to_string(), "nope".to_string()]).unwrap(),
            [Some(3), None]
        );
        assert_eq!(d.increment(&"a".into(), 5).unwrap(), 15);
        assert_eq!(d.increment(&"new".into(), 2).unwrap(), 2);
        assert!(d.compare_and_set(&"a".into(), Some(&15), 0).unwrap());
        assert!(!d.compare_and_set(&"a".into(), Some(&15), 1).unwrap());
        assert!(d.compare_and_set(&"absent".into(), None, 1).unwrap());
        d.clear().unwrap();
        assert!(d.is_empty().unwrap());
        // Keys and values of any serde type.
        let typed = m.dict::<(u8, bool), Vec<Option<f32>>>().unwrap();
        typed.set((1, true), vec![Some(0.5), None]).unwrap();
        assert_eq!(typed.get(&(1, true)).unwrap(), Some(vec![Some(0.5), None]));
        let strs = m.dict::<String, String>().unwrap();
        strs.set("s".into(), "text".into()).unwrap();
        assert_eq!(
            remote_kind(&strs.increment(&"s".into(), "x".into()).unwrap_err()),
            "TypeError"
        );
    });
}

#[test]
fn list_and_namespace_semantics_follow_python() {
    watchdog("list", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<i32>().unwrap();
        l.extend([3, 1, 2]).unwrap();
        l.append(5).unwrap();
        l.insert(0, 9).unwrap();
        l.insert(100, 7).unwrap(); // clamped, as in Python
        assert_eq!(l.to_vec().unwrap(), [9, 3, 1, 2, 5, 7]);
        assert_eq!(l.get(-1).unwrap(), 7);
        l.set(-2, 50).unwrap();
        assert_eq!(l.pop(-1).unwrap(), 7);
        assert_eq!(l.index(&1).unwrap(), 2);
        assert_eq!(l.count(&3).unwrap(), 1);
        l.remove(&9).unwrap();
        assert_eq!(remote_kind(&l.remove(&9).unwrap_err()), "ValueError");
        assert_eq!(remote_kind(&l.get(10).unwrap_err()), "IndexError");
        l.sort().unwrap();
        assert_eq!(l.to_vec().unwrap(), [1, 2, 3, 50]);
        l.reverse().unwrap();
        assert_eq!(l.slice(1, -1).unwrap(), [3, 2]);
        assert_eq!(l.increment(0, 1).unwrap(), 51);
        assert_eq!(l.len().unwrap(), 4);
        l.clear().unwrap();
        assert_eq!(remote_kind(&l.pop(-1).unwrap_err()), "IndexError");

        let ns = m.namespace().unwrap();
        ns.set("x", &1.5f64).unwrap();
        ns.set("name", "ns").unwrap();
        assert_eq!(ns.get::<f64>("x").unwrap(), 1.5);
        assert_eq!(ns.get::<String>("name").unwrap(), "ns");
        ns.del("x").unwrap();
        assert_eq!(
            remote_kind(&ns.get::<f64>("x").unwrap_err()),
            "AttributeError"
        );
        assert_eq!(remote_kind(&ns.del("x").unwrap_err()), "AttributeError");
    });
}

#[test]
fn many_processes_see_one_object_and_lose_no_increment() {
    watchdog("64 clients", Duration::from_secs(120), || {
        const CLIENTS: usize = 64;
        const EACH: i64 = 50;
        let m = Manager::start().unwrap();
        let d = m.dict::<String, i64>().unwrap();
        let l = m.list::<u32>().unwrap();
        let ready = Semaphore::new(0).unwrap();
        let go = multiproc::Event::new().unwrap();
        multiproc::scope(|s| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let (d, l, ready, go) = (&d, &l, &ready, &go);
                    child(s, move || {
                        ready.release().unwrap();
                        go.wait(); // all 64 connected at once
                        for _ in 0..EACH {
                            d.increment(&"counter".into(), 1).unwrap();
                        }
                        l.append(i as u32).unwrap();
                    })
                })
                .collect();
            for _ in 0..CLIENTS {
                assert!(ready.acquire_timeout(LIMIT));
            }
            go.set();
            for c in &clients {
                assert_eq!(join(c, LIMIT), 0);
            }
            assert_eq!(
                d.get(&"counter".into()).unwrap(),
                Some(CLIENTS as i64 * EACH)
            );
            let mut seen = l.to_vec().unwrap();
            seen.sort();
            assert_eq!(seen, (0..CLIENTS as u32).collect::<Vec<_>>());
        });
    });
}

#[test]
fn objects_live_while_any_process_holds_a_proxy() {
    watchdog("lifetime", LIMIT, || {
        let m = Manager::start().unwrap();
        assert_eq!(m.number_of_objects().unwrap(), 0);
        let d = m.dict::<u8, u8>().unwrap();
        let l = m.list::<u8>().unwrap();
        assert_eq!(m.number_of_objects().unwrap(), 2);
        let d2 = d.clone();
        drop(d);
        assert_eq!(m.number_of_objects().unwrap(), 2, "a clone keeps it");
        let used = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            // Children use inherited proxies (taking references of their own)
            // and end without dropping them, one by exit, one killed.
            let user = child(s, || d2.set(1, 1).unwrap());
            assert_eq!(join(&user, LIMIT), 0);
            let victim = child(s, || {
                l.append(1).unwrap();
                used.release().unwrap();
                loop {
                    std::thread::park();
                }
            });
            assert!(used.acquire_timeout(LIMIT));
            victim.kill().unwrap();
            join(&victim, LIMIT);
        });
        drop(d2);
        drop(l);
        // The children's references go when the server sees their
        // connections close (one process exited, one was killed): then the
        // objects are freed, not leaked.
        assert!(wait_until(LIMIT, || m.number_of_objects().unwrap() == 0));
    });
}

#[test]
fn wrong_keys_garbage_and_killed_clients_hurt_no_one_else() {
    watchdog("robustness", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 1).unwrap();
        let e = Manager::connect(m.address().clone(), b"not the key").unwrap_err();
        assert!(matches!(e, Error::AuthenticationFailed(_)), "{e}");
        if let Address::Unix(p) = m.address() {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // An authenticated client that sends a frame that is no pickle: an
        // error reply, and its connection goes on.
        let mut conn = multiproc::conn::connect(m.address(), Some(m.authkey())).unwrap();
        let (kind, reply) = raw_request(&mut conn, &[0xff, 0xff, 0xff]);
        assert_eq!(kind, "#TRACEBACK");
        assert!(String::from_utf8_lossy(&reply).contains("UnpicklingError"));
        assert_eq!(
            raw_request(&mut conn, &pickled(None, "dummy", &[])).0,
            "#RETURN"
        );
        // One that sends a frame claiming 4 GiB loses its own connection only.
        let huge = multiproc::conn::frame::header(1 << 32).unwrap();
        let mut conn = multiproc::conn::connect(m.address(), Some(m.authkey())).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&conn);
        // SAFETY: borrowing the connection's descriptor for one raw write.
        let mut raw = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        raw.write_all(&huge).unwrap();
        assert!(matches!(conn.recv_bytes(), Err(Error::ConnectionClosed)));
        // A client that connects and never says a word delays no one: a
        // new connection (here, a forked child's) is served at once.
        let Address::Unix(path) = m.address() else {
            unreachable!()
        };
        let _silent = std::os::unix::net::UnixStream::connect(path).unwrap();
        let started = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let prompt = child(s, || {
                let t = std::time::Instant::now();
                d.get(&1).unwrap();
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "took {:?}",
                    t.elapsed()
                );
            });
            assert_eq!(join(&prompt, LIMIT), 0);
            // A client killed in the middle of a stream of requests.
            let busy = child(s, || {
                started.release().unwrap();
                loop {
                    d.increment(&2, 1).unwrap();
                }
            });
            assert!(started.acquire_timeout(LIMIT));
            busy.kill().unwrap();
            join(&busy, LIMIT);
            assert_eq!(
                d.get(&1).unwrap(),
                Some(1),
                "the others are served as before"
            );
        });
    });
}

#[test]
fn shutdown_with_clients_connected_gives_them_a_clear_error() {
    watchdog("shutdown", LIMIT, || {
        let mut m = Manager::start().unwrap();
        let d = m.dict::<u8, u8>().unwrap();
        let connected = Semaphore::new(0).unwrap();
        let stopped = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let c = child(s, || {
                d.set(1, 1).unwrap();
                connected.release().unwrap();
                assert!(stopped.acquire_timeout(LIMIT));
                assert!(matches!(d.get(&1), Err(Error::ManagerGone(_))));
            });
            assert!(connected.acquire_timeout(LIMIT));
            let path = match m.address() {
                Address::Unix(p) => p.clone(),
                Address::Tcp(_) => unreachable!(),
            };
            m.shutdown().unwrap();
            stopped.release().unwrap();
            assert_eq!(join(&c, LIMIT), 0);
            assert!(matches!(d.len(), Err(Error::ManagerGone(_))));
            assert!(!path.exists(), "the socket file is removed");
        });
    });
}

#[test]
fn nested_proxies_name_one_object_that_lives_while_stored() {
    watchdog("nested proxies", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<String, ListProxy<i32>>().unwrap();
        let l = m.list::<i32>().unwrap();
        l.append(1).unwrap();
        d.set("l".into(), l.clone()).unwrap();
        drop(l);
        // The dict's reference keeps the list alive.
        assert_eq!(m.number_of_objects().unwrap(), 2);
        let again = d.get(&"l".into()).unwrap().unwrap();
        again.append(2).unwrap();
        // Another process reads the proxy out of the dict: the same list.
        multiproc::scope(|s| {
            let child = s.start(|| {
                let l = d.get(&"l".into()).unwrap().unwrap();
                l.append(3).unwrap();
            });
            assert_eq!(child.unwrap().join().unwrap(), 0);
        });
        assert_eq!(again.to_vec().unwrap(), vec![1, 2, 3]);
        drop(again);
        assert_eq!(m.number_of_objects().unwrap(), 2);
        // Taken out of the dict and dropped, it is freed.
        let popped = d.remove(&"l".into()).unwrap().unwrap();
        assert_eq!(popped.len().unwrap(), 3);
        drop(popped);
        assert_eq!(m.number_of_objects().unwrap(), 1);

        // Deeper: a namespace holding a list of dicts; clearing frees all.
        let ns = m.namespace().unwrap();
        let rows = m.list::<DictProxy<String, i64>>().unwrap();
        for i in 0..3 {
            let row = m.dict::<String, i64>().unwrap();
            row.set("i".into(), i).unwrap();
            rows.append(row).unwrap();
        }
        ns.set("rows", &rows).unwrap();
        drop(rows);
        assert_eq!(m.number_of_objects().unwrap(), 1 + 1 + 1 + 3);
        let rows: ListProxy<DictProxy<String, i64>> = ns.get("rows").unwrap();
        rows.get(1).unwrap().increment(&"i".into(), 10).unwrap();
        let seen: Vec<i64> = rows
            .to_vec()
            .unwrap()
            .iter()
            .map(|r| r.get(&"i".into()).unwrap().unwrap())
            .collect();
        assert_eq!(seen, vec![0, 11, 2]);
        drop(rows);
        // Read as a dynamic value, a nested proxy takes no reference: the
        // one its answer carried is given back.
        let any: multiproc::PyValue = ns.get("rows").unwrap();
        assert!(any.to_string().starts_with("<ListProxy object"), "{any}");
        let again: Vec<multiproc::PyValue> = ns
            .get::<ListProxy<multiproc::PyValue>>("rows")
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(again.len(), 3);
        ns.del("rows").unwrap();
        assert_eq!(m.number_of_objects().unwrap(), 2);

        // A proxy read back as the wrong kind is a clear error, and one of
        // another manager names nothing here.
        let list = m.list::<i32>().unwrap();
        ns.set("x", &list).unwrap();
        match ns.get::<DictProxy<String, i64>>("x") {
            Err(Error::Deserialize(why)) => assert!(why.contains("List proxy"), "{why}"),
            other => panic!("a list proxy read as a dict: {:?}", other.err()),
        }
        let as_list = m.dict::<String, ListProxy<i32>>().unwrap();
        let other = Manager::start().unwrap();
        let foreign = other.list::<i32>().unwrap();
        match as_list.set("f".into(), foreign) {
            Err(e) => assert_eq!(remote_kind(&e), "ReferenceError"),
            Ok(()) => panic!("a proxy of another manager was stored"),
        }
    });
}

/// A manager server on TCP (as `multiproc manager serve --listen tcp:…`),
/// in a child process: the child, and a handle connected to the server.
fn serve_on_tcp() -> (multiproc::Process<'static>, Manager) {
    let (mut ready, mut tell) = multiproc::conn::Pipe(false).unwrap();
    let server = static_child(move || {
        let at: Address = "tcp:127.0.0.1:0".parse().unwrap();
        multiproc::manager::serve(&at, b"tcp key", |bound| {
            tell.send(&bound.to_string()).unwrap();
        })
        .unwrap();
    });
    let at: String = ready.recv().unwrap();
    let m = Manager::connect(at.parse().unwrap(), b"tcp key").unwrap();
    (server, m)
}

/// Issue 12.1: while one busy client is the server's only peer, connections
/// that are already dead when accepted must not lock later clients out
/// (over Unix sockets: closed; over TCP: reset, with `SO_LINGER` 0).
#[test]
fn dead_connections_never_lock_new_clients_out() {
    watchdog("dead connections", LIMIT, || {
        let (tcp_server, tcp) = serve_on_tcp();
        for mut m in [Manager::start().unwrap(), tcp] {
            let d = m.dict::<u32, u32>().unwrap();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            // This process's one connection is the server's only peer, kept
            // busy with back-to-back requests.
            let busy = {
                let (d, stop) = (d.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        d.set(1, 1).unwrap();
                    }
                })
            };
            for _ in 0..5 {
                match m.address() {
                    Address::Unix(path) => {
                        drop(std::os::unix::net::UnixStream::connect(path).unwrap())
                    }
                    Address::Tcp(at) => {
                        let s = std::net::TcpStream::connect(at).unwrap();
                        let linger = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        // SAFETY: setsockopt with a valid linger of its size.
                        let r = unsafe {
                            libc::setsockopt(
                                std::os::fd::AsRawFd::as_raw_fd(&s),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&linger as *const libc::linger).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            )
                        };
                        assert_eq!(r, 0);
                    }
                }
            }
            let t = std::time::Instant::now();
            let other = Manager::connect(m.address().clone(), m.authkey());
            let took = t.elapsed();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            busy.join().unwrap();
            other.unwrap();
            assert!(took < Duration::from_secs(5), "connecting took {took:?}");
            eprintln!("{:?}: a new client connected in {took:?}", m.address());
            drop(d);
            m.shutdown().unwrap();
        }
        assert_eq!(join(&tcp_server, LIMIT), 0);
    });
}

/// A manager whose server may open only a few descriptors beyond those
/// this process has (the test harness runs other tests beside this one),
/// and that limit.
fn manager_with_few_descriptors() -> (Manager, u64) {
    let limit = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 + 24;
    let old = set_descriptor_limit(limit);
    let m = Manager::start().unwrap();
    set_descriptor_limit(old);
    (m, limit)
}

/// Sets this process's soft limit on descriptors, returning the old one.
fn set_descriptor_limit(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let old = lim.rlim_cur;
    lim.rlim_cur = soft;
    // SAFETY: `lim` is a valid rlimit that setrlimit only reads.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    old
}

/// Issue 12.4: a server out of descriptors, with clients still queued,
/// waits for a descriptor to free instead of spinning on `accept`.
#[test]
fn out_of_descriptors_the_server_waits_instead_of_spinning() {
    watchdog("EMFILE", LIMIT, || {
        // In a child: the descriptor limit is lowered for the server it starts.
        let c = static_child(|| {
            let (m, limit) = manager_with_few_descriptors();
            let Address::Unix(path) = m.address() else {
                unreachable!()
            };
            let silent: Vec<_> = (0..limit + 40)
                .map(|_| std::os::unix::net::UnixStream::connect(path).unwrap())
                .collect();
            let pid = m.server_pid().unwrap();
            // Let the server take what it can and hit the limit.
            assert!(wait_until(LIMIT, || {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .count() as u64
                    >= limit - 2
            }));
            let before = procfs::cpu_ticks(pid);
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_secs(1) {
                std::thread::park_timeout(Duration::from_secs(1) - t.elapsed());
            }
            let used = procfs::cpu_ticks(pid) - before;
            assert!(used < 20, "the server used {used} ticks of CPU in 1 s");
            // Descriptors free: the server accepts again.
            drop(silent);
            let other = Manager::connect(m.address().clone(), m.authkey()).unwrap();
            assert_eq!(other.number_of_objects().unwrap(), 0);
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// Audit of issue 12.4 with the fast path: Rust clients that each take a
/// shared-memory area and a doorbell fill the server's descriptors; the
/// server neither spins nor fails those already served, clients past the
/// limit wait or stay on their socket, and once descriptors free a new
/// client is served.
#[test]
fn fast_clients_filling_the_descriptors_neither_spin_nor_fail_the_server() {
    watchdog("EMFILE fast", LIMIT, || {
        let c = static_child(|| {
            let (m, limit) = manager_with_few_descriptors();
            let pid = m.server_pid().unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            // Fast clients, each served once, until the server is full (a
            // connect that fails is a refusal, never a hang or a crash).
            let mut fast = Vec::new();
            for i in 0..limit as u32 {
                let address = m.address().clone();
                let key = m.authkey().to_vec();
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let r = Manager::connect(address, &key).and_then(|c| {
                        let d = c.dict::<u32, u32>()?;
                        d.set(i, i)?;
                        Ok((c, d))
                    });
                    let _ = tx.send(r);
                });
                match rx.recv_timeout(Duration::from_secs(2)) {
                    Ok(Ok(client)) => fast.push(client),
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            assert!(!fast.is_empty());
            eprintln!(
                "{} fast clients served under a limit of {limit} descriptors",
                fast.len()
            );
            assert!(wait_until(LIMIT, || {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|fds| fds.count() as u64 >= limit - 3)
                    .unwrap_or(false)
            }));
            let before = procfs::cpu_ticks(pid);
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_secs(1) {
                std::thread::park_timeout(Duration::from_secs(1) - t.elapsed());
            }
            let used = procfs::cpu_ticks(pid) - before;
            assert!(used < 20, "the server used {used} ticks of CPU in 1 s");
            // Those served go on being served.
            for (i, (_, fd)) in fast.iter().enumerate() {
                assert_eq!(fd.get(&(i as u32)).unwrap(), Some(i as u32));
            }
            d.set(1000, 1).unwrap();
            drop(fast);
            let other = Manager::connect(m.address().clone(), m.authkey()).unwrap();
            let od = other.dict::<u32, u32>().unwrap();
            od.set(1, 1).unwrap();
            assert_eq!(od.get(&1).unwrap(), Some(1));
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}

/// Issue 11.8: a child forked while another thread of its parent is in
/// the middle of a round trip (holding the client's lock) can still use
/// its proxies.
#[test]
fn children_forked_while_another_thread_uses_a_proxy_can_use_theirs() {
    watchdog("fork while calling", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammer = {
            let (d, stop) = (d.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    d.set(0, 0).unwrap();
                }
            })
        };
        for i in 1..=20 {
            let d = d.clone();
            let c = static_child(move || d.set(i, i).unwrap());
            assert_eq!(join(&c, Duration::from_secs(10)), 0, "child {i}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hammer.join().unwrap();
        assert_eq!(d.len().unwrap(), 21);
    });
}

/// A number that is an int or a float on the server.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(untagged)]
enum Num {
    I(i64),
    F(f64),
    S(char),
}

/// The pickle (protocol 2) of a request `(ident, method, args, {})`,
/// written by hand from the pickles of its arguments: the tests need
/// requests no client would build.
fn pickled(ident: Option<&str>, method: &str, args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0x80, 2, b'('];
    match ident {
        Some(ident) => out.extend(pickled_str(ident)),
        None => out.push(b'N'),
    }
    out.extend(pickled_str(method));
    out.push(b'(');
    args.iter().for_each(|a| out.extend(a));
    out.extend(b"t}t.");
    out
}

/// `BINUNICODE`.
fn pickled_str(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
    out
}

/// `BININT`.
fn pickled_int(i: i32) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend(i.to_le_bytes());
    out
}

/// A list of pickled items.
fn pickled_list(items: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = b"](".to_vec();
    items.into_iter().for_each(|i| out.extend(i));
    out.push(b'e');
    out
}

/// Sends a request as raw bytes; the reply's kind (`#RETURN`, `#ERROR`,
/// `#TRACEBACK`) and the reply.
fn raw_request(conn: &mut multiproc::conn::Connection, frame: &[u8]) -> (&'static str, Vec<u8>) {
    conn.send_bytes(frame).unwrap();
    let answer = conn.recv_bytes().unwrap();
    (reply_kind(&answer), answer)
}

/// The kind of a pickled reply: the first of its tags it holds.
fn reply_kind(answer: &[u8]) -> &'static str {
    ["#RETURN", "#ERROR", "#TRACEBACK", "#PROXY"]
        .into_iter()
        .find(|k| answer.windows(k.len()).any(|w| w == k.as_bytes()))
        .unwrap_or("?")
}

/// `create(typeid)` on a raw connection: the new object's ident.
fn raw_create(conn: &mut multiproc::conn::Connection, typeid: &str) -> String {
    let (kind, answer) = raw_request(conn, &pickled(None, "create", &[pickled_str(typeid)]));
    assert_eq!(kind, "#RETURN");
    // `('#RETURN', (ident, exposed))`: the ident is the first string after
    // the tag (a str opcode, its length, then hex digits).
    let at = answer.windows(7).position(|w| w == b"#RETURN").unwrap() + 7;
    let rest = &answer[at..];
    let (len, text) = match rest.iter().position(|&b| b == 0x8c || b == b'X') {
        Some(p) if rest[p] == 0x8c => (rest[p + 1] as usize, &rest[p + 2..]),
        Some(p) => (
            u32::from_le_bytes(rest[p + 1..p + 5].try_into().unwrap()) as usize,
            &rest[p + 5..],
        ),
        None => panic!("no ident in {answer:?}"),
    };
    String::from_utf8(text[..len].to_vec()).unwrap()
}

/// Issue 12.2 and 12.3 against a real server: the requests that killed it
/// get answers, and it goes on serving.
#[test]
fn requests_that_killed_the_server_get_answers() {
    watchdog("hostile requests", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u8, u8>().unwrap();
        let mut conn = multiproc::conn::connect(m.address(), Some(m.authkey())).unwrap();
        let list = raw_create(&mut conn, "list");
        let dict = raw_create(&mut conn, "dict");
        // A list nested 35,000 deep appended, and a missing key nested
        // 25,000 deep looked up: each a 75-100 KB request.
        for (ident, method, depth) in [(&list, "append", 35_000), (&dict, "get", 25_000)] {
            let mut nested = Vec::new();
            for _ in 0..depth {
                nested.extend(b"](");
            }
            nested.extend(pickled_int(1));
            nested.extend(std::iter::repeat_n(b'e', depth));
            let (kind, error) = raw_request(&mut conn, &pickled(Some(ident), method, &[nested]));
            assert_ne!(kind, "#RETURN", "an error reply");
            assert!(String::from_utf8_lossy(&error).contains("RecursionError"));
        }
        // The sort that ended the server with a panic.
        let l = m.list::<Num>().unwrap();
        let big = 1i64 << 53;
        let items = [Num::I(big), Num::F(big as f64), Num::I(big + 1)];
        l.extend(items.iter().cycle().take(21).copied()).unwrap();
        l.sort().unwrap();
        assert_eq!(l.get(-1).unwrap(), Num::I(big + 1));
        assert_eq!(l.get(0).unwrap(), Num::I(big));
        l.append(Num::S('a')).unwrap();
        assert_eq!(remote_kind(&l.sort().unwrap_err()), "TypeError");
        d.set(1, 1).unwrap();
        assert_eq!(d.get(&1).unwrap(), Some(1), "still serving");
    });
}

/// Each request's work is bounded, and a client that sends many at once
/// gets a turn of about one request's work before the others get theirs.
#[test]
fn a_client_pipelining_heavy_requests_delays_others_by_one_turn() {
    watchdog("pipelined work", LIMIT, || {
        let m = Manager::start().unwrap();
        let mut conn = multiproc::conn::connect(m.address(), Some(m.authkey())).unwrap();
        // Another client, connected after it (the server serves its
        // clients in the order they came).
        let other = Manager::connect(m.address().clone(), m.authkey()).unwrap();
        let d = other.dict::<u8, u8>().unwrap();
        d.set(1, 1).unwrap();
        let list = raw_create(&mut conn, "list");
        // A list of 2**20 ints, in two requests (one would take more
        // memory than a request may).
        let ints = pickled_list(std::iter::repeat_n(vec![b'K', 1], 1 << 19));
        let extend = pickled(Some(&list), "extend", &[ints]);
        for _ in 0..2 {
            let (kind, reply) = raw_request(&mut conn, &extend);
            assert_eq!(kind, "#RETURN", "{}", String::from_utf8_lossy(&reply));
        }
        // A batch of 31 inserts at its front: just within one request's
        // work (each moves every item).
        let insert = pickled(Some(&list), "insert", &[pickled_int(0), pickled_int(0)]);
        // The request's tuple without its protocol header and STOP.
        let item = insert[2..insert.len() - 1].to_vec();
        let batch = pickled(
            None,
            "_multiproc_batch",
            &[pickled_list(std::iter::repeat_n(item, 31))],
        );
        let t = std::time::Instant::now();
        assert_eq!(raw_request(&mut conn, &batch).0, "#RETURN", "answered");
        let one = t.elapsed();
        // Twenty of them in one write (so that one read of the server's
        // takes them all); meanwhile another client is served within a
        // turn or two of them, not after all twenty.
        let mut frame = Vec::new();
        multiproc::conn::frame::push(&mut frame, &batch).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&conn);
        // SAFETY: borrowing the connection's descriptor for one raw write;
        // the File is never dropped, so the descriptor stays the connection's.
        let mut raw = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        raw.write_all(&frame.repeat(20)).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(d.get(&1).unwrap(), Some(1));
        let waited = t.elapsed();
        assert!(
            waited < one * 8,
            "waited {waited:?}; one request takes {one:?}"
        );
        for _ in 0..20 {
            assert_eq!(reply_kind(&conn.recv_bytes().unwrap()), "#RETURN");
        }
    });
}

/// Issue 18.5: `Manager` and the dynamic value at the crate root, objects
/// made with contents, and Python's printing of proxies and values.
#[test]
fn a_python_users_manager_habits_carry_over() {
    use multiproc::PyValue;
    watchdog("python habits", LIMIT, || {
        let m = multiproc::Manager::start().unwrap();
        // manager.list(range(10)), manager.dict({'a': 1})
        let l = m.list_from(0..10).unwrap();
        assert_eq!(l.to_vec().unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(l.to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]");
        let d = m.dict_from([("a".to_string(), 1)]).unwrap();
        assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
        assert_eq!(d.to_string(), "{'a': 1}");
        let l = m.list_from([9, 8, 7]).unwrap();
        assert_eq!(l.to_string(), "[9, 8, 7]");
        assert_eq!(m.list_from(Vec::<u8>::new()).unwrap().to_string(), "[]");
        // Mixed key and value types, as a Python dict holds them.
        let mixed = m.dict::<PyValue, PyValue>().unwrap();
        mixed.set(1.into(), "1".into()).unwrap();
        mixed.set("2".into(), 2.into()).unwrap();
        mixed.set(0.25.into(), PyValue::None).unwrap();
        assert_eq!(mixed.to_string(), "{1: '1', '2': 2, 0.25: None}");
        assert_eq!(mixed.get(&1.0.into()).unwrap(), Some("1".into()));
        assert_eq!(mixed.get(&true.into()).unwrap(), Some("1".into()));
        assert_eq!(
            mixed.keys().unwrap(),
            [PyValue::from(1), "2".into(), 0.25.into()]
        );
        let items = PyValue::dict(mixed.items().unwrap());
        assert_eq!(items.to_string(), "{1: '1', '2': 2, 0.25: None}");
        // Nested values keep their Python types through the server.
        let nested = PyValue::List(vec![
            PyValue::Tuple(vec![1.into()]),
            PyValue::Bytes(b"x\x00".to_vec()),
            PyValue::dict([(PyValue::from("k"), PyValue::from(vec![1.5]))]),
        ]);
        mixed.set("n".into(), nested.clone()).unwrap();
        let back = mixed.get(&"n".into()).unwrap().unwrap();
        assert_eq!(back, nested);
        assert_eq!(back.to_string(), "[(1,), b'x\\x00', {'k': [1.5]}]");
        // A namespace prints as Python's.
        let ns = m.namespace().unwrap();
        ns.set("x", &1).unwrap();
        ns.set("name", "a").unwrap();
        ns.set("_hidden", &2).unwrap();
        assert_eq!(ns.to_string(), "Namespace(name='a', x=1)");
        // A nested proxy prints as a proxy, and printing it leaks nothing.
        let inner = m.list_from([1]).unwrap();
        let holder = m.dict::<String, ListProxy<i32>>().unwrap();
        holder.set("l".into(), inner.clone()).unwrap();
        let objects = m.number_of_objects().unwrap();
        for _ in 0..3 {
            let shown = holder.to_string();
            assert!(shown.starts_with("{'l': <ListProxy object "), "{shown}");
        }
        drop(inner);
        assert_eq!(m.number_of_objects().unwrap(), objects);
        drop(holder);
        assert_eq!(m.number_of_objects().unwrap(), objects - 2);
    });
}
