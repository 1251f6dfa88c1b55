//! A Redis server killed, restarted or paused under a Redis-backed manager:
//! every call ends within the manager's timeout with a clear error
//! (`ManagerGone` when nothing was sent, `Ambiguous` for a write whose
//! connection broke after sending), never a hang; the next call after the
//! server is back works again, in this process and in a forked child that
//! inherited the manager; a write reported done was done. Also many
//! threads on one manager, and forks from another thread while a thread is
//! mid-call (the child must not deadlock on its parent's connection).
//!
//! Each test starts its own `redis-server` (`OwnServer`), and a watchdog
//! bounds every part that could block.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::redis::{unique, OwnServer};
use common::watchdog;
use multiproc::{Error, Event, Manager};

/// The manager's timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(500);

/// The longest a failed call may take: the timeout, plus slack on a
/// loaded machine (a read that found its connection broken is tried once
/// more, on a new one, which a killed server refuses at once).
const CALL_BOUND: Duration = Duration::from_millis(500 + 700);

/// The process id of the server at `url` (from `INFO server`).
fn server_pid(url: &str) -> libc::pid_t {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("INFO server has process_id")
        .trim()
        .parse()
        .unwrap()
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; `pid` is the test's own
    // redis-server.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A stopped (SIGSTOP) server, continued when dropped (even on a panic).
struct Stopped(libc::pid_t);

impl Stopped {
    fn new(pid: libc::pid_t) -> Stopped {
        signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// Runs `f` (one call), checks that it ended within [`CALL_BOUND`], and
/// returns its result.
fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = watchdog(what, Duration::from_secs(30), f);
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    assert!(took < CALL_BOUND, "{what} took {took:?}");
    r
}

fn is_gone<T: std::fmt::Debug>(r: &multiproc::Result<T>) -> bool {
    matches!(r, Err(Error::ManagerGone(_)))
}

fn is_gone_or_ambiguous<T: std::fmt::Debug>(r: &multiproc::Result<T>) -> bool {
    matches!(r, Err(Error::ManagerGone(_) | Error::Ambiguous(_)))
}

#[test]
fn a_killed_server_gives_clear_errors_and_a_restarted_one_works_again() {
    let Some(mut server) = OwnServer::start("killed_server") else {
        return;
    };
    let url = server.url();
    let manager = Manager::connect_redis_with_timeout(&url, TIMEOUT).unwrap();
    let name = unique("killed");
    let d = manager.dict_named::<String, i64>(&name).unwrap();
    d.set("a".into(), 1).unwrap();
    assert_eq!(d.increment(&"n".into(), 1).unwrap(), 1);

    server.kill();
    // The first write goes out on the broken connection (Ambiguous) or
    // finds it gone (ManagerGone); after that, connecting is refused.
    let r = bounded("increment after kill", || d.increment(&"n".into(), 1));
    assert!(is_gone_or_ambiguous(&r), "{r:?}");
    let r = bounded("get after kill", || d.get(&"a".into()));
    assert!(is_gone(&r), "{r:?}");
    let r = bounded("set after kill", || d.set("b".into(), 2));
    assert!(is_gone(&r), "{r:?}");
    let r = bounded("len after kill", || d.len());
    assert!(is_gone(&r), "{r:?}");
    if let Err(e) = &r {
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
    }

    // A child forked while the server is down inherits the manager: it
    // gets the same errors, then works once the server is back.
    let down_seen = Event::new().unwrap();
    let restarted = Event::new().unwrap();
    multiproc::scope(|s| {
        let child = common::child(s, || {
            let r = d.get(&"a".into());
            assert!(is_gone(&r), "child, server down: {r:?}");
            down_seen.set();
            assert!(restarted.wait_timeout(Duration::from_secs(30)));
            d.set("from child".into(), 7).unwrap();
            assert_eq!(d.increment(&"n".into(), 1).unwrap(), 1);
        });
        assert!(down_seen.wait_timeout(Duration::from_secs(30)));
        server.restart();
        // This process reconnects on its next call (the server restarted
        // empty: no persistence).
        let r = bounded("get after restart", || d.get(&"a".into()));
        assert_eq!(r.unwrap(), None);
        d.set("a".into(), 10).unwrap();
        restarted.set();
        assert_eq!(
            child.join_timeout(Duration::from_secs(60)).unwrap(),
            Some(0)
        );
    });
    assert_eq!(d.get(&"from child".into()).unwrap(), Some(7));
    assert_eq!(d.get(&"a".into()).unwrap(), Some(10));
    assert_eq!(d.increment(&"n".into(), 1).unwrap(), 2);

    // A child forked while the server is up, with this process's
    // connection open, makes its own and works.
    multiproc::scope(|s| {
        let child = common::child(s, || {
            assert_eq!(d.increment(&"n".into(), 1).unwrap(), 3);
        });
        assert_eq!(
            child.join_timeout(Duration::from_secs(60)).unwrap(),
            Some(0)
        );
    });
    assert_eq!(d.increment(&"n".into(), 1).unwrap(), 4);
    manager.remove_named(&name).unwrap();
}

#[test]
fn a_paused_server_times_out_within_the_bound_and_recovers() {
    let Some(server) = OwnServer::start("paused_server") else {
        return;
    };
    let url = server.url();
    let pid = server_pid(&url);
    let manager = Manager::connect_redis_with_timeout(&url, TIMEOUT).unwrap();
    let name = unique("paused");
    let d = manager.dict_named::<String, i64>(&name).unwrap();
    assert_eq!(d.increment(&"n".into(), 1).unwrap(), 1);

    let increment_result;
    {
        let _stopped = Stopped::new(pid);
        // A read: no answer within the timeout, and not tried again.
        let r = bounded("get of a paused server", || d.get(&"n".into()));
        assert!(is_gone(&r), "{r:?}");
        let message = r.unwrap_err().to_string();
        assert!(message.contains("127.0.0.1"), "{message}");
        // A write: sent, no answer: it may or may not be done.
        increment_result = bounded("increment of a paused server", || {
            d.increment(&"n".into(), 1)
        });
        assert!(
            is_gone_or_ambiguous(&increment_result),
            "{increment_result:?}"
        );
        // A process that connects for the first time (a forked child)
        // is bounded too.
        multiproc::scope(|s| {
            let child = common::child(s, || {
                let r = bounded("a child's first call to a paused server", || {
                    d.get(&"n".into())
                });
                assert!(is_gone(&r), "{r:?}");
            });
            assert_eq!(
                child.join_timeout(Duration::from_secs(60)).unwrap(),
                Some(0)
            );
        });
    }
    // Continued: the next call works; the ambiguous increment may have
    // been done when the server read it, or not.
    let n = bounded("get after SIGCONT", || d.get(&"n".into()))
        .unwrap()
        .unwrap();
    match increment_result {
        Err(Error::Ambiguous(_)) => assert!(n == 1 || n == 2, "{n}"),
        _ => assert_eq!(n, 1),
    }
    assert_eq!(d.increment(&"n".into(), 1).unwrap(), n + 1);
    manager.remove_named(&name).unwrap();
}

/// Increments from several threads while the server is paused and
/// continued (a kill would lose the count: the server keeps nothing):
/// every increment that returned `Ok` is counted, and one that returned
/// `ManagerGone` is not (nothing was sent); only an `Ambiguous` one may go
/// either way.
#[test]
fn an_increment_reported_done_is_counted() {
    let Some(server) = OwnServer::start("reported_done") else {
        return;
    };
    let url = server.url();
    let pid = server_pid(&url);
    let manager = Manager::connect_redis_with_timeout(&url, TIMEOUT).unwrap();
    let name = unique("done");
    let d = manager.dict_named::<String, i64>(&name).unwrap();
    let (ok, gone, ambiguous) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    watchdog("increments across a pause", Duration::from_secs(60), || {
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while !stop.load(Relaxed) {
                        let start = Instant::now();
                        match d.increment(&"n".into(), 1) {
                            Ok(_) => ok.fetch_add(1, Relaxed),
                            Err(Error::ManagerGone(_)) => gone.fetch_add(1, Relaxed),
                            Err(Error::Ambiguous(_)) => ambiguous.fetch_add(1, Relaxed),
                            Err(e) => panic!("increment: {e:?}"),
                        };
                        // Each call waits its turn for the process's
                        // connection (three threads) and then its own
                        // round trip.
                        assert!(start.elapsed() < 4 * CALL_BOUND, "{:?}", start.elapsed());
                    }
                });
            }
            // Let some increments through, pause the server for a few
            // timeouts, continue it, let more through.
            let some = |at_least: u64| {
                assert!(common::wait_until(Duration::from_secs(30), || ok
                    .load(Relaxed)
                    >= at_least));
            };
            some(20);
            {
                let _stopped = Stopped::new(pid);
                let before = gone.load(Relaxed) + ambiguous.load(Relaxed);
                assert!(common::wait_until(Duration::from_secs(30), || {
                    gone.load(Relaxed) + ambiguous.load(Relaxed) >= before + 3
                }));
            }
            let after = ok.load(Relaxed);
            some(after + 20);
            stop.store(true, Relaxed);
        });
    });
    let (ok, gone, ambiguous) = (ok.into_inner(), gone.into_inner(), ambiguous.into_inner());
    eprintln!("ok {ok}, ambiguous {ambiguous}, gone {gone}");
    let n = d.get(&"n".into()).unwrap().unwrap() as u64;
    assert!(
        ok <= n && n <= ok + ambiguous,
        "counted {n}; ok {ok}, ambiguous {ambiguous}, gone {gone}"
    );
    assert!(
        gone + ambiguous >= 3,
        "ok {ok}, ambiguous {ambiguous}, gone {gone}"
    );
    manager.remove_named(&name).unwrap();
}

/// Threads share the process's connection; children forked from the main
/// thread while they are mid-call make their own and never wait on the
/// parent's lock.
#[test]
fn threads_and_forks_mid_call_never_deadlock() {
    let Some(server) = OwnServer::start("threads_and_forks") else {
        return;
    };
    let url = server.url();
    let manager = Manager::connect_redis_with_timeout(&url, Duration::from_secs(10)).unwrap();
    let name = unique("forks");
    let d = manager.dict_named::<String, i64>(&name).unwrap();
    let from_threads = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    const CHILDREN: i64 = 12;
    const PER_CHILD: i64 = 20;
    watchdog(
        "threads and forks mid-call",
        Duration::from_secs(120),
        || {
            std::thread::scope(|s| {
                for t in 0..4 {
                    let (d, stop, from_threads) = (&d, &stop, &from_threads);
                    s.spawn(move || {
                        while !stop.load(Relaxed) {
                            d.increment(&"n".into(), 1).unwrap();
                            from_threads.fetch_add(1, Relaxed);
                            d.get(&format!("t{t}")).unwrap();
                        }
                    });
                }
                assert!(common::wait_until(Duration::from_secs(30), || from_threads
                    .load(Relaxed)
                    >= 20));
                multiproc::scope(|ps| {
                    let children: Vec<_> = (0..CHILDREN)
                        .map(|_| {
                            common::child(ps, || {
                                for _ in 0..PER_CHILD {
                                    d.increment(&"n".into(), 1).unwrap();
                                }
                            })
                        })
                        .collect();
                    for child in &children {
                        assert_eq!(
                            child.join_timeout(Duration::from_secs(60)).unwrap(),
                            Some(0)
                        );
                    }
                });
                stop.store(true, Relaxed);
            });
        },
    );
    let n = d.get(&"n".into()).unwrap().unwrap();
    assert_eq!(n, from_threads.into_inner() as i64 + CHILDREN * PER_CHILD);
    manager.remove_named(&name).unwrap();
}

/// `examples/redis_counter` against the test server: four processes, one
/// counter, `total: 4000` last.
#[test]
fn the_redis_counter_example_counts_4000() {
    let Some(url) = common::redis::redis_url("the_redis_counter_example_counts_4000") else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/");
    let example = dir.join("examples").join("redis_counter");
    if !example.exists() {
        // `cargo test` builds the examples; `cargo test --test` does not.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--example", "redis_counter"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success());
    }
    let (status, out, err) = common::run_with_deadline(
        std::process::Command::new(&example).arg(&url),
        b"",
        Duration::from_secs(120),
    );
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out.lines().last(), Some("total: 4000"), "{out}");
}

/// A server that closes idle connections (its `timeout` setting, as hosted
/// Redis services do): a write on this process's closed connection is
/// sent on a new one and done once, never reported `Ambiguous`.
#[test]
fn a_write_after_the_server_closed_an_idle_connection_is_done_once() {
    let Some(server) = OwnServer::start("a_write_after_the_server_closed_an_idle_connection")
    else {
        return;
    };
    let url = server.url();
    let m = Manager::connect_redis_with_timeout(&url, TIMEOUT).unwrap();
    let d = m.dict_named::<String, i64>(&unique("idle")).unwrap();
    assert_eq!(d.increment(&"n".into(), 1).unwrap(), 1);
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "timeout", "1"])
        .query(&mut admin)
        .unwrap();
    // The server closes the manager's idle connection (within a few
    // seconds: it checks idle clients in the background); only the admin
    // connection is left.
    let closed = common::wait_until(Duration::from_secs(20), || {
        let _: () = redis::cmd("PING").query(&mut admin).unwrap();
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
        list.lines().count() == 1
    });
    assert!(closed, "the server did not close the idle connection");
    let r = bounded("an increment on a closed connection", || {
        d.increment(&"n".into(), 1)
    });
    assert_eq!(r.unwrap(), 2);
    assert_eq!(d.get(&"n".into()).unwrap(), Some(2));
}
