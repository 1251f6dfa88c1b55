//! A review of the day's fixes to the local `Pool` and the Redis backend.

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::watchdog;
use multiproc::{Error, Pool};

const LIMIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

/// In a forked child, where the pool takes no task, `imap_unordered`
/// gives one result per item, as `imap` does: each item of a chunk
/// submitted before the fork is the child's error. Before, it gave one
/// error per chunk (2 results for 6 items), where `imap` gave 6.
#[test]
fn unordered_results_in_a_forked_child_are_one_per_item() {
    watchdog("imap_unordered in a child", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let ordered = pool.imap(square, 0..6, Some(3));
        let unordered = pool.imap_unordered(square, 0..6, Some(3));
        let child = common::static_child(move || {
            for got in [ordered.collect::<Vec<_>>(), unordered.collect()] {
                assert_eq!(got.len(), 6, "{got:?}");
                assert!(
                    got.iter()
                        .all(|r| matches!(r, Ok(_) | Err(Error::PoolState(_)))),
                    "{got:?}"
                );
            }
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        pool.close();
        pool.join().unwrap();
    });
}

/// An `imap_unordered` iterated in one of the pool's callbacks (on the
/// thread that would deliver its chunks) gives one result per item too:
/// each item of a chunk not delivered there is the error that says so.
/// Before, such a chunk was one error (2 results for 6 items).
#[test]
fn unordered_results_in_a_callback_are_one_per_item() {
    watchdog("imap_unordered in a callback", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(2).unwrap());
        let (tx, rx) = mpsc::channel();
        let weak = Arc::downgrade(&pool);
        pool.apply_async_with(square, 1, move |_| {
            let pool = weak.upgrade().unwrap();
            let got: Vec<_> = pool.imap_unordered(square, 0..6, Some(3)).collect();
            tx.send(got).unwrap();
        });
        let got = rx.recv_timeout(LIMIT).unwrap();
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(
            got.iter()
                .all(|r| matches!(r, Ok(_) | Err(Error::PoolState(_)))),
            "{got:?}"
        );
        pool.close();
        pool.join().unwrap();
    });
}

/// CPU time this process has used, all threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(u.ru_utime) + micros(u.ru_stime))
}

/// Sets this process's descriptor limit to `n`.
fn limit_descriptors(n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: 4096.max(n),
    };
    // SAFETY: a valid rlimit for this (child) process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// A pool that cannot replace a worker (its process has no descriptor
/// left for the new worker's socket) runs on one short without spinning
/// its scheduler on the retries, then fills up again once it can.
#[test]
fn a_worker_that_cannot_be_replaced_costs_no_cpu_while_it_cannot() {
    watchdog("a worker not replaced", LIMIT, || {
        let child = common::static_child(|| {
            let pool = Pool::builder()
                .processes(2)
                .max_tasks_per_child(1)
                .build()
                .unwrap();
            let highest = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap();
            // No descriptor more: those under the limit that are free are
            // taken.
            limit_descriptors(highest + 1);
            let taken: Vec<_> = std::iter::from_fn(|| std::fs::File::open("/dev/null").ok())
                .take(4096)
                .collect();
            assert!(std::fs::File::open("/dev/null").is_err());
            assert_eq!(pool.apply(square, 3).unwrap(), 9);
            let before = cpu_time();
            std::thread::sleep(Duration::from_secs(1));
            let spent = cpu_time() - before;
            assert!(
                spent < Duration::from_millis(300),
                "{spent:?} of CPU in 1 s"
            );
            limit_descriptors(4096);
            drop(taken);
            let r: Vec<_> = (0..4u64).map(|x| pool.apply(square, x)).collect();
            assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
            pool.close();
            pool.join().unwrap();
        });
        assert_eq!(common::join(&child, LIMIT), 0);
    });
}

/// The Redis cases.
#[cfg(feature = "redis")]
mod redis_cases {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::common;
    use super::LIMIT;
    use common::redis::{attack, attack_own, raw, unique, OwnServer};
    use multiproc::pool::{RemotePool, Worker};
    use multiproc::{task, Error, Manager};

    /// Sleeps `ms` milliseconds; returns them.
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    /// `n` bytes.
    fn bytes(n: usize) -> Vec<u8> {
        vec![7; n]
    }

    /// A result far over the server's bulk limit (which closes the
    /// connection while the worker still writes it, a cut connection to
    /// the worker) fails that task with a clear error soon, while the
    /// worker renews its heartbeat: it is not tried again for ever.
    #[test]
    fn a_result_far_over_the_bulk_limit_fails_its_task_soon() {
        super::watchdog("a result far over the bulk limit", LIMIT, || {
            let Some(server) = OwnServer::start("a result far over the bulk limit") else {
                return;
            };
            let url = server.url();
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("proto-max-bulk-len")
                .arg(1 << 20)
                .query::<()>(&mut raw(&url))
                .unwrap();
            let name = unique("far-over");
            let pool = RemotePool::connect_named(&url, &name).unwrap();
            std::thread::scope(|s| {
                let worker = s.spawn(|| {
                    Worker::new(&url, &[&task!(bytes)])
                        .pool(&name)
                        .heartbeat(Duration::from_secs(30))
                        .serve()
                });
                let big = pool
                    .apply_async(task!(bytes), 64 << 20)
                    .get_timeout(Duration::from_secs(20));
                assert!(
                    matches!(big, Err(Error::TaskFailed(ref m)) if m.contains("proto-max-bulk-len")),
                    "{:?}",
                    big.map(|v| v.len())
                );
                pool.stop_workers().unwrap();
                let _ = worker.join().unwrap();
            });
            pool.remove().unwrap();
        });
    }

    /// A pool worker whose server goes away for good while its task
    /// runs tries to renew its heartbeat and record the result until the
    /// key may have expired (about one heartbeat after its last renewal),
    /// then gives up: it returns an error rather than try on for ever.
    #[test]
    fn a_worker_whose_server_stays_down_gives_up_within_a_heartbeat() {
        super::watchdog("a worker on a server gone for good", LIMIT, || {
            let Some(mut server) = OwnServer::start("worker on a server gone") else {
                return;
            };
            let url = server.url();
            let name = unique("gone");
            let heartbeat = Duration::from_secs(2);
            let (tx, rx) = std::sync::mpsc::channel();
            let worker = {
                let (url, name) = (url.clone(), name.clone());
                std::thread::spawn(move || {
                    let r = Worker::new(&url, &[&task!(nap)])
                        .pool(&name)
                        .heartbeat(heartbeat)
                        .idle_timeout(Duration::from_millis(300))
                        .serve();
                    tx.send(Instant::now()).unwrap();
                    r
                })
            };
            let pool = RemotePool::connect_named(&url, &name).unwrap();
            let _result = pool.apply_async(task!(nap), 1500);
            // The task has been taken: the worker holds it.
            let held = format!("multiproc:{{pool:{name}}}:processing:*");
            let mut admin = raw(&url);
            let taken = common::wait_until(LIMIT, || {
                redis::cmd("KEYS")
                    .arg(&held)
                    .query::<Vec<String>>(&mut admin)
                    .is_ok_and(|keys| !keys.is_empty())
            });
            assert!(taken);
            std::thread::sleep(Duration::from_millis(200));
            let killed = Instant::now();
            server.kill();
            let ended = rx.recv_timeout(LIMIT).expect("the worker gave up");
            let r = worker.join().unwrap();
            assert!(r.is_err(), "{r:?}");
            let took = ended - killed;
            assert!(took < heartbeat * 3, "gave up after {took:?}");
        });
    }

    /// A storm of another client's `PUBLISH`es on an event's channel
    /// (each one read again from the keys) holds a wait no longer than
    /// its timeout, and wakes it for none.
    #[test]
    fn a_publish_storm_holds_no_event_wait_past_its_timeout() {
        attack(LIMIT, |url, name| {
            let m = Manager::connect_redis(url).unwrap();
            let event = m.event_named(name).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let channel = format!("multiproc:{{event:{name}}}:set");
            let storm = {
                let (stop, mut conn) = (stop.clone(), raw(url));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut p = redis::pipe();
                        for _ in 0..100 {
                            p.cmd("PUBLISH").arg(&channel).arg("1").ignore();
                        }
                        let _: () = p.query(&mut conn).unwrap();
                    }
                })
            };
            let started = Instant::now();
            let woken = event.wait(Some(Duration::from_millis(500)));
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            storm.join().unwrap();
            assert!(matches!(woken, Ok(false)), "{woken:?}");
            assert!(took < Duration::from_secs(3), "{took:?}");
            m.remove_named(name).unwrap();
        });
    }

    /// Sets the server's `maxclients` to `n` over `admin`.
    fn set_maxclients(admin: &mut redis::Connection, n: u64) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(n)
            .query(admin)
            .unwrap();
    }

    /// Cuts every connection but `admin`'s.
    fn cut_others(admin: &mut redis::Connection) {
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(admin)
            .unwrap();
    }

    /// An acquire given up on (the server refusing clients for a moment)
    /// is undone by its own token: the same proxy's next acquire, which
    /// succeeds once the server takes clients again, keeps its hold while
    /// the undoing thread reaches the server (its pauses grow to 5 s).
    #[test]
    fn undoing_a_lost_acquire_leaves_the_next_acquire_held() {
        attack_own(LIMIT, |url, name| {
            let m = Manager::connect_redis_with_timeout(url, Duration::from_millis(300)).unwrap();
            let lock = m
                .lock_named(name)
                .unwrap()
                .with_lease(Duration::from_secs(60))
                .unwrap();
            lock.try_acquire().unwrap().release().unwrap();
            let mut admin = raw(url);
            cut_others(&mut admin);
            set_maxclients(&mut admin, 1);
            let r = lock.acquire(Some(Duration::from_secs(1)));
            assert!(
                matches!(r, Err(Error::ManagerGone(_) | Error::Ambiguous(_))),
                "{r:?}"
            );
            set_maxclients(&mut admin, 10000);
            let held = lock.acquire(Some(Duration::from_secs(10))).unwrap();
            // Longer than the undoing thread's longest pause.
            let end = Instant::now() + Duration::from_secs(7);
            while Instant::now() < end {
                assert!(
                    lock.is_locked().unwrap(),
                    "the next acquire's hold was undone"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            held.release().unwrap();
            m.remove_named(name).unwrap();
        });
    }

    /// A process whose lost acquires are being undone (the server gone,
    /// so the undoing threads try on) exits when its main returns, at
    /// once and with its own status: the threads hold up nothing.
    #[test]
    fn a_process_undoing_lost_acquires_exits_at_once() {
        attack_own(LIMIT, |url, name| {
            let url = url.to_string();
            let name = name.to_string();
            let m = Manager::connect_redis_with_timeout(&url, Duration::from_millis(300)).unwrap();
            let lock = m.lock_named(&name).unwrap();
            lock.try_acquire().unwrap().release().unwrap();
            let cut = url.clone();
            let child = common::static_child(move || {
                // Both connections cut: the next acquire's answer is lost.
                let mut admin = raw(&cut);
                cut_others(&mut admin);
                set_maxclients(&mut admin, 1);
                for _ in 0..20 {
                    let r = lock.acquire(Some(Duration::from_secs(1)));
                    assert!(
                        matches!(r, Err(Error::ManagerGone(_) | Error::Ambiguous(_))),
                        "{r:?}"
                    );
                }
            });
            let started = Instant::now();
            assert_eq!(common::join(&child, LIMIT), 0);
            set_maxclients(&mut raw(&url), 10000);
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{:?}",
                started.elapsed()
            );
            let free = common::wait_until(Duration::from_secs(20), || {
                !m.lock_named(&name).unwrap().is_locked().unwrap_or(true)
            });
            assert!(free);
            m.remove_named(&name).unwrap();
        });
    }
}
