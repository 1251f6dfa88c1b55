//! The managed layer as a Rust user uses it, across processes: proxies and
//! manager handles moved into forked children, values as large as the
//! server takes, a server killed while many threads and children call it.

mod common;

use std::time::{Duration, Instant};

use common::{join, procfs, static_child, wait_until, watchdog};
use multiproc::manager::Manager;
use multiproc::{Error, Semaphore};

const LIMIT: Duration = Duration::from_secs(120);

/// A value as large as the server takes in one request reads back whole,
/// and a `pop` of it gives it back rather than losing it. (The client
/// allowed an answer half the memory the server allows a request: a
/// million-item list was stored, could not be read, and `pop` took it out
/// of the list and failed to decode it.)
#[test]
fn the_largest_value_the_server_takes_reads_back_and_pops() {
    watchdog("large values", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<Vec<i64>>().unwrap();
        // The largest of these the server takes in one request.
        let n = [1_600_000usize, 1_400_000, 1_200_000, 1_000_000]
            .into_iter()
            .find(|&n| l.append(vec![7; n]).is_ok())
            .expect("the server takes a million-item list in one request");
        assert_eq!(l.get(0).expect("get").len(), n);
        assert_eq!(l.pop(-1).expect("pop").len(), n);
        assert_eq!(l.len().unwrap(), 0);
        let d = m.dict::<String, Vec<i64>>().unwrap();
        d.set("k".into(), vec![7; n]).unwrap();
        assert_eq!(
            d.remove(&"k".into()).expect("remove").map(|v| v.len()),
            Some(n)
        );
        assert!(d.is_empty().unwrap());
    });
}

/// A proxy moved into a forked child's closure, the only one there is:
/// the parent drops its copy as the child starts, and the object must
/// live for the child all the same (it was freed before the child's first
/// call, which failed with `KeyError`), and be freed once the child no
/// longer needs it: it has ended, or dropped its copy unused.
#[test]
fn a_proxy_moved_into_a_child_lives_for_it() {
    watchdog("moved proxy", LIMIT, || {
        let m = Manager::start().unwrap();
        let user = {
            let d = m.dict::<u32, u32>().unwrap();
            static_child(move || {
                d.set(1, 1).unwrap();
                assert_eq!(d.get(&1).unwrap(), Some(1));
            })
        };
        assert_eq!(join(&user, LIMIT), 0);
        assert!(wait_until(LIMIT, || m.number_of_objects().unwrap() == 0));

        // A child that never uses it keeps it alive as long as it runs,
        // and a killed one gives it back.
        let started = Semaphore::new(0).unwrap();
        let idle = {
            let l = m.list::<u8>().unwrap();
            let started = started.clone();
            static_child(move || {
                let _l = l;
                started.release().unwrap();
                loop {
                    std::thread::park();
                }
            })
        };
        assert!(started.acquire_timeout(LIMIT));
        assert_eq!(m.number_of_objects().unwrap(), 1);
        idle.kill().unwrap();
        join(&idle, LIMIT);
        assert!(wait_until(LIMIT, || m.number_of_objects().unwrap() == 0));

        // One that drops it unused, and lives on, gives it back at once.
        let dropped = {
            let ns = m.namespace().unwrap();
            let started = started.clone();
            static_child(move || {
                drop(ns);
                started.release().unwrap();
                loop {
                    std::thread::park();
                }
            })
        };
        assert!(started.acquire_timeout(LIMIT));
        let freed = wait_until(LIMIT, || m.number_of_objects().unwrap() == 0);
        dropped.kill().unwrap();
        join(&dropped, LIMIT);
        assert!(freed, "the object lived as long as the child");
    });
}

/// A manager handle moved into a forked child's closure is the child's:
/// the parent's copy, dropped as the child starts, does not shut the
/// server down under it (it did: the child's first call found no socket),
/// and the child can shut it down (its `shutdown` failed: it tried to
/// wait for a process that is not its child).
#[test]
fn a_manager_moved_into_a_child_is_the_childs() {
    watchdog("moved manager", LIMIT, || {
        let m = Manager::start().unwrap();
        let server = m.server_pid().unwrap();
        let path = match m.address() {
            multiproc::conn::Address::Unix(p) => p.clone(),
            multiproc::conn::Address::Tcp(_) => unreachable!(),
        };
        let owner = static_child(move || {
            let mut m = m;
            let d = m.dict::<u32, u32>().unwrap();
            d.set(1, 2).unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(2));
            drop(d);
            m.shutdown().unwrap();
        });
        let code = join(&owner, LIMIT);
        if code != 0 {
            // Do not leave the server behind for the other tests.
            // SAFETY: signalling the server this test started.
            let _ = unsafe { libc::kill(server as i32, libc::SIGKILL) };
        }
        assert_eq!(code, 0);
        assert!(wait_until(LIMIT, || procfs::gone(server)));
        assert!(wait_until(LIMIT, || !path.exists()));
    });
}

/// A server killed with SIGKILL while threads of this process and of
/// forked children call it, on the fast path and on the socket (answers
/// too large for the area), gives every call `ManagerGone` promptly;
/// dropping the proxies then takes no longer.
#[test]
fn a_server_killed_under_many_callers_fails_them_all_promptly() {
    watchdog("killed server", LIMIT, || {
        let m = Manager::start().unwrap();
        let server = m.server_pid().unwrap();
        let path = match m.address() {
            multiproc::conn::Address::Unix(p) => p.clone(),
            multiproc::conn::Address::Tcp(_) => unreachable!(),
        };
        let d = m.dict::<u32, Vec<u8>>().unwrap();
        d.set(0, vec![1; 200 << 10]).unwrap();
        let ready = Semaphore::new(0).unwrap();
        let call = |d: &multiproc::manager::DictProxy<u32, Vec<u8>>, i: u32| -> Error {
            loop {
                let r = if i % 2 == 0 {
                    d.get(&0).map(drop)
                } else {
                    d.set(i, vec![i as u8; 8]).map(drop)
                };
                if let Err(e) = r {
                    return e;
                }
            }
        };
        let children: Vec<_> = (0..3u32)
            .map(|c| {
                let d = d.clone();
                let ready = ready.clone();
                static_child(move || {
                    d.len().unwrap();
                    ready.release().unwrap();
                    std::thread::scope(|s| {
                        for i in 0..4 {
                            let d = &d;
                            s.spawn(move || {
                                let e = call(d, c * 4 + i);
                                assert!(matches!(e, Error::ManagerGone(_)), "{e}");
                            });
                        }
                    });
                })
            })
            .collect();
        for _ in &children {
            assert!(ready.acquire_timeout(LIMIT));
        }
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let d = &d;
                    s.spawn(move || call(d, 100 + i))
                })
                .collect();
            // SAFETY: signalling the server this test started.
            assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
            let killed = Instant::now();
            for t in threads {
                let e = t.join().unwrap();
                assert!(matches!(e, Error::ManagerGone(_)), "{e}");
            }
            assert!(killed.elapsed() < Duration::from_secs(10));
        });
        for c in &children {
            assert_eq!(join(c, LIMIT), 0);
        }
        let start = Instant::now();
        let clones: Vec<_> = (0..1000).map(|_| d.clone()).collect();
        drop(clones);
        drop(d);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(m.number_of_objects(), Err(Error::ManagerGone(_))));
        drop(m);
        let _ = std::fs::remove_file(path);
    });
}

/// A list built of many appends can hold more than one answer may bring
/// back whole: reading it whole is an error that says to ask for less (it
/// said "send less at a time", a request's words), and it reads in slices.
#[test]
fn a_list_too_large_to_read_whole_says_so_and_reads_in_slices() {
    watchdog("too large to read", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<i64>().unwrap();
        const CHUNK: usize = 500_000;
        let mut len = 0;
        let whole = loop {
            l.extend(vec![1i64; CHUNK]).unwrap();
            len += CHUNK;
            match l.to_vec() {
                Ok(v) => assert_eq!(v.len(), len),
                Err(e) => break e,
            }
            assert!(len < 20 * CHUNK, "no answer too large");
        };
        let text = whole.to_string();
        assert!(text.contains("ask for less"), "{text}");
        let mut read = 0;
        while read < len {
            let part = l.slice(read as i64, (read + CHUNK) as i64).unwrap();
            assert!(part.iter().all(|&x| x == 1));
            read += part.len();
        }
        assert_eq!(read, len);
    });
}

/// The pids of this process's live children (not zombies).
fn live_children() -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids.retain(|&p| procfs::alive(p));
    pids
}

/// `Manager::start` out of descriptors at each step fails with an error,
/// never leaving the server it started behind (it did when connecting to
/// it failed: the server ran on until this process exited), nor its
/// socket file (the server, killed, left it).
#[test]
fn a_manager_that_fails_to_start_leaves_no_server_behind() {
    watchdog("start out of descriptors", LIMIT, || {
        let tester = static_child(|| {
            common::lower_nofile(256);
            let (mut failed, mut started) = (0, 0);
            for free in 0..16 {
                let mut held = common::fill_descriptors();
                held.truncate(held.len().saturating_sub(free));
                let r = Manager::start();
                drop(held);
                match r {
                    Ok(mut m) => {
                        started += 1;
                        m.shutdown().unwrap();
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{free} free: {e}");
                    }
                }
                assert!(
                    wait_until(Duration::from_secs(5), || live_children().is_empty()),
                    "{free} descriptors free: servers left running: {:?}",
                    live_children()
                );
            }
            assert!(
                failed > 0 && started > 0,
                "{failed} failed, {started} started"
            );
            // Nor the socket file of a server it stopped (one was left).
            let mine = format!("multiproc-manager-{}-", std::process::id());
            let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(&mine))
                .collect();
            assert!(left.is_empty(), "socket files left behind: {left:?}");
        });
        assert_eq!(join(&tester, LIMIT), 0);
    });
}

/// Proxies handed on: a child given the only proxies clones one, uses it,
/// and hands the clone and another it never used to a grandchild; all of
/// them work, and every object is freed once they have ended.
#[test]
fn proxies_handed_on_to_a_grandchild_live_for_it_and_are_freed() {
    watchdog("handed on", LIMIT, || {
        let m = Manager::start().unwrap();
        let child = {
            let d = m.dict::<u32, u32>().unwrap();
            let l = m.list::<u32>().unwrap();
            static_child(move || {
                let d2 = d.clone();
                d.set(1, 1).unwrap();
                let grandchild = static_child(move || {
                    d2.set(2, 2).unwrap();
                    l.append(3).unwrap();
                    assert_eq!(l.to_vec().unwrap(), [3]);
                });
                assert_eq!(join(&grandchild, LIMIT), 0);
                assert_eq!(d.len().unwrap(), 2);
            })
        };
        assert_eq!(join(&child, LIMIT), 0);
        assert!(wait_until(LIMIT, || m.number_of_objects().unwrap() == 0));
    });
}

/// `(kind, result)`, pickled as a server's reply.
fn reply(kind: &str, result: common::pickle::P) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    common::pickle::P::Tuple(vec![common::pickle::s(kind), result]).write(&mut out);
    out.push(b'.');
    out
}

/// A process forked (by `fork` itself) while another of its parent's
/// threads is connecting to a manager, between authentication and the
/// connection's first answers, keeps no live copy of that connection:
/// once the parent has exited, its server sees the connection end (and
/// gives back its references) though the child lives on. (The socket was
/// made inert in forked children only once the handshake was over.)
#[test]
fn a_child_forked_while_a_connection_is_made_does_not_keep_it_open() {
    use common::pickle::P;
    use multiproc::conn::{Address, Listener};
    use multiproc::RawValue;
    const KEY: &[u8] = b"forked mid-handshake";
    watchdog("forked mid-handshake", LIMIT, || {
        let path = std::env::temp_dir().join(format!("attack4-{}.sock", std::process::id()));
        let address = Address::Unix(path);
        let listener = Listener::bind(&address, Some(KEY)).unwrap();
        let in_handshake = Semaphore::new(0).unwrap();
        let forked = Semaphore::new(0).unwrap();
        let grandchild = RawValue::<u32>::new(0).unwrap();
        let client = {
            let (address, in_handshake, forked, grandchild) = (
                address.clone(),
                in_handshake.clone(),
                forked.clone(),
                grandchild.clone(),
            );
            static_child(move || {
                let forker = std::thread::spawn(move || {
                    assert!(in_handshake.acquire_timeout(LIMIT));
                    let pid = common::fork_idle_child();
                    grandchild
                        .atomic()
                        .store(pid, std::sync::atomic::Ordering::SeqCst);
                    forked.release().unwrap();
                });
                let m = Manager::connect(address, KEY).unwrap();
                forker.join().unwrap();
                drop(m);
            })
        };
        // The fake server: it answers the first request only once the
        // client's other thread has forked.
        let mut conn = listener.accept().unwrap();
        conn.recv_bytes_timeout(LIMIT).unwrap();
        in_handshake.release().unwrap();
        assert!(forked.acquire_timeout(LIMIT));
        conn.send_bytes(&reply("#RETURN", P::None)).unwrap();
        // No `_multiproc_hold` here (CPython's server): server-level calls
        // then come on short connections.
        conn.recv_bytes_timeout(LIMIT).unwrap();
        conn.send_bytes(&reply("#TRACEBACK", common::pickle::s("no such method")))
            .unwrap();
        let mut short = listener.accept().unwrap();
        short.recv_bytes_timeout(LIMIT).unwrap();
        short.send_bytes(&reply("#RETURN", P::Int(0))).unwrap();
        assert_eq!(join(&client, LIMIT), 0);
        let ended = conn.recv_bytes_timeout(Duration::from_secs(10));
        let pid = grandchild
            .atomic()
            .load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: signalling the process the test's child forked.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(
            matches!(ended, Err(Error::ConnectionClosed)),
            "the connection of a process that exited is still open: {ended:?}"
        );
    });
}

/// A proxy inside an `Arc` shared with a forked child (the parent's
/// clone of the `Arc` goes at the fork, the proxy stays): the parent
/// drops its last `Arc` before the child's first call. Python's child
/// takes its references right after the fork; here the child takes one
/// only on first use, and the object is gone by then.
#[test]
#[ignore = "unfixed: a child takes its reference to an inherited proxy on first use, not at the fork"]
fn a_proxy_shared_with_a_child_through_an_arc_lives_for_it() {
    watchdog("arc proxy", LIMIT, || {
        let m = Manager::start().unwrap();
        let go = Semaphore::new(0).unwrap();
        let ours = std::sync::Arc::new(m.dict::<u32, u32>().unwrap());
        let child = {
            let (theirs, go) = (ours.clone(), go.clone());
            static_child(move || {
                assert!(go.acquire_timeout(LIMIT));
                theirs.set(1, 1).unwrap();
            })
        };
        drop(ours);
        go.release().unwrap();
        assert_eq!(join(&child, LIMIT), 0);
        assert!(wait_until(LIMIT, || m.number_of_objects().unwrap() == 0));
    });
}
