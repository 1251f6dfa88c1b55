//! Leak sweeps: each public operation, and its failing variants (a wrong
//! key, nothing to connect to, a timeout that expires, a peer killed
//! mid-call, a name already taken, a target that panics, a worker or a
//! server killed), run a few hundred times in this one process; after the
//! loop this process must hold no more descriptors, threads, children,
//! shared mappings, segments in `/dev/shm` or socket files than a small
//! constant over what it held before. A leak grows with the rounds; a lazy
//! once-per-process thread or mapping does not (a few warm-up rounds run
//! before the count is taken).
//!
//! `harness = false`: the tests run one after another, so what one counts
//! is its own. `main` gives the process a `/dev/shm` and a temporary
//! directory of its own, so that other programs' segments and sockets do
//! not enter the counts.

mod common;

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use common::harness::tests;
use common::{join, procfs, wait_until, watchdog, TempDir};
use multiproc::conn::{connect, Address, Listener};
use multiproc::process::Entry;
use multiproc::{entry, Error, Event, Lock, Manager, Pool, Process, Queue, Semaphore, Value};

/// How long one sweep may take before the watchdog aborts the binary.
const LIMIT: Duration = Duration::from_secs(240);

/// Rounds run before the counts are taken: lazily started threads,
/// mappings and servers of the process come up in these.
const WARM_UP: usize = 5;

/// What a sweep may leave over its starting counts, whatever the rounds.
const SLACK: Counts = Counts {
    fds: 3,
    threads: 3,
    children: 2,
    maps: 4,
    segments: 1,
    sockets: 1,
};

/// What this process holds of each resource that a leak makes grow.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counts {
    fds: usize,
    threads: usize,
    /// Children, alive or zombies.
    children: usize,
    /// Shared mappings (`/proc/self/maps` lines whose permissions end in
    /// `s`): segments, memory files. Private ones are left out: the C
    /// library keeps the stacks of threads that ended for new ones, up to
    /// a bound, and how many it keeps depends on how many threads ran at
    /// once.
    maps: usize,
    /// `multiproc.*` files in `/dev/shm`.
    segments: usize,
    /// Files in the temporary directory (where sockets are made).
    sockets: usize,
}

impl Counts {
    fn now() -> Counts {
        let entries = |dir: &str, prefix: &str| {
            std::fs::read_dir(dir).map_or(0, |d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .count()
            })
        };
        let me = std::process::id();
        let children = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| procfs::ppid(pid) == Some(me))
            .count();
        Counts {
            // Less the descriptor read_dir holds on /proc/self/fd itself.
            fds: entries("/proc/self/fd", "") - 1,
            threads: entries("/proc/self/task", ""),
            children,
            maps: std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter(|l| l.split(' ').nth(1).is_some_and(|p| p.ends_with('s')))
                .count(),
            segments: entries("/dev/shm", "multiproc."),
            sockets: entries(&std::env::temp_dir().to_string_lossy(), ""),
        }
    }

    /// Whether every count is at most `before`'s plus [`SLACK`].
    fn within(&self, before: &Counts) -> bool {
        self.fds <= before.fds + SLACK.fds
            && self.threads <= before.threads + SLACK.threads
            && self.children <= before.children + SLACK.children
            && self.maps <= before.maps + SLACK.maps
            && self.segments <= before.segments + SLACK.segments
            && self.sockets <= before.sockets + SLACK.sockets
    }
}

/// Runs `round` (given its number) [`WARM_UP`] times, then `rounds`
/// times, and asserts that the counts did not grow past [`SLACK`] over
/// the second half of those rounds (waiting up to 10 s for what ends by
/// itself: a thread that finishes, a child that exits and is reaped). A
/// leak grows in each half; what is bounded but fills up as the rounds go
/// (the threads that undo lost Redis lock acquires, at most 16 at once)
/// fills up in the first.
fn sweep(what: &str, rounds: usize, mut round: impl FnMut(usize)) {
    watchdog(what, LIMIT, || {
        for i in 0..WARM_UP {
            round(i);
        }
        let start = Counts::now();
        let half = WARM_UP + rounds / 2;
        for i in WARM_UP..half {
            round(i);
        }
        let middle = Counts::now();
        for i in half..WARM_UP + rounds {
            round(i);
        }
        let settled = wait_until(Duration::from_secs(10), || Counts::now().within(&middle));
        let end = Counts::now();
        let counts = format!("start {start:?}\n  middle {middle:?}\n  end    {end:?}");
        eprintln!("{what}: {rounds} rounds\n  {counts}");
        assert!(settled, "{what}: grew over {rounds} rounds\n  {counts}");
    });
}

/// A name for a named object, unique to this process and `tag`.
fn name(tag: &str) -> String {
    format!("leak-{tag}-{}", std::process::id())
}

fn shared_values_locks_and_queues_anonymous() {
    sweep("anonymous shared objects", 300, |i| {
        let v = Value::new(i as u64).unwrap();
        v.set(7).unwrap();
        let lock = Lock::new().unwrap();
        let held = lock.lock().unwrap();
        // A timeout that expires, waiting on another thread's lock.
        std::thread::scope(|s| {
            let waited = s.spawn(|| lock.lock_timeout(Duration::from_millis(1)).map(drop));
            assert!(matches!(
                waited.join().unwrap(),
                Err(multiproc::LockError::Timeout)
            ));
        });
        drop(held);
        let q = Queue::<u64>::new().unwrap();
        q.put(1).unwrap();
        assert_eq!(q.get().unwrap(), 1);
        assert!(matches!(
            q.get_timeout(Duration::from_millis(1)),
            Err(Error::Timeout)
        ));
        let e = Event::new().unwrap();
        assert!(!e.wait_timeout(Duration::from_millis(1)));
        let s = Semaphore::new(0).unwrap();
        assert!(!s.acquire_timeout(Duration::from_millis(1)));
    });
}

fn shared_objects_named_and_taken_names() {
    let (v, l, q) = (name("value"), name("lock"), name("queue"));
    sweep("named shared objects", 300, |i| {
        let value = Value::<u64>::create(&v, i as u64).unwrap();
        // A name that already exists, and a kind that does not match.
        assert!(matches!(
            Value::<u64>::create(&v, 0),
            Err(Error::AlreadyExists(_))
        ));
        assert!(Lock::open(&v).is_err());
        let again = Value::<u64>::open(&v).unwrap();
        assert_eq!(again.get().unwrap(), i as u64);
        let lock = Lock::create_or_open(&l).unwrap();
        drop(lock.lock().unwrap());
        let queue = Queue::<u64>::create(&q, 0, 4096).unwrap();
        queue.put(3).unwrap();
        assert!(Queue::<u64>::create(&q, 0, 4096).is_err());
        // A name that does not exist.
        assert!(matches!(
            Value::<u64>::open(&name("nothing")),
            Err(Error::NotFound(_))
        ));
        for n in [&v, &l, &q] {
            multiproc::segment::Segment::unlink(n).unwrap();
        }
        drop((value, again, queue));
    });
}

fn pipes_and_a_peer_killed_mid_call() {
    sweep("pipes", 300, |i| {
        let (mut a, mut b) = multiproc::Pipe(true).unwrap();
        a.send(&i).unwrap();
        assert_eq!(b.recv::<usize>().unwrap(), i);
        assert!(matches!(
            b.recv_bytes_timeout(Duration::from_millis(1)),
            Err(Error::Timeout)
        ));
        drop(a);
        assert!(b.recv_bytes().is_err());
    });
    sweep("pipe, its peer killed", 100, |_| {
        let (mut mine, mut theirs) = multiproc::Pipe(true).unwrap();
        let peer = common::static_child(move || {
            // Killed while it waits here.
            let _ = theirs.recv_bytes();
        });
        peer.kill().unwrap();
        assert_eq!(join(&peer, LIMIT), -libc::SIGKILL);
        assert!(mine.recv_bytes().is_err());
        assert!(mine.send_bytes(b"to nobody").is_err());
    });
}

/// A connection to `listener` with `key`, and the listener's accepted end
/// (or why it refused), at once.
fn connect_and_accept(
    listener: &Listener,
    key: &[u8],
) -> (
    multiproc::Result<multiproc::conn::Connection>,
    multiproc::Result<multiproc::conn::Connection>,
) {
    std::thread::scope(|s| {
        let client = s.spawn(|| connect(listener.address(), Some(key)));
        let accepted = listener.accept();
        (client.join().unwrap(), accepted)
    })
}

/// Whether a client waits to be accepted by `listener` (10 ms at most).
fn waiting_client(listener: &Listener) -> bool {
    let mut waiting = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one valid pollfd for 10 ms.
    unsafe { libc::poll(&mut waiting, 1, 10) == 1 }
}

fn listeners_and_clients(address: impl Fn(usize) -> Address, what: &str) {
    sweep(what, 200, |i| {
        let listener = Listener::bind(&address(i), Some(b"key")).unwrap();
        let (client, server) = connect_and_accept(&listener, b"key");
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        client.send(&1u8).unwrap();
        assert_eq!(server.recv::<u8>().unwrap(), 1);
        drop(server);
        assert!(client.recv_bytes().is_err());
        // The wrong key, both ends.
        let (client, server) = connect_and_accept(&listener, b"wrong");
        assert!(matches!(client, Err(Error::AuthenticationFailed(_))));
        assert!(matches!(server, Err(Error::AuthenticationFailed(_))));
        // An address already bound.
        if let Address::Unix(_) = listener.address() {
            assert!(Listener::bind(listener.address(), None).is_err());
        }
        let gone = listener.address().clone();
        drop(listener);
        // Nothing to connect to.
        assert!(connect(&gone, Some(b"key")).is_err());
    });
}

fn unix_listeners_and_clients() {
    let dir = std::env::temp_dir();
    listeners_and_clients(
        |i| Address::Unix(dir.join(format!("multiproc-leak-{}.sock", i % 3))),
        "Unix listeners",
    );
}

fn tcp_listeners_and_clients() {
    listeners_and_clients(|_| "tcp:127.0.0.1:0".parse().unwrap(), "TCP listeners");
}

/// A child of start method `start` (0 fork, 1 spawn, 2 forkserver)
/// running `target`.
fn child_of(start: usize, target: Entry<()>) -> Process<'static> {
    match start {
        0 => Process::new(move || target.function()(())),
        1 => Process::spawn(target, ()),
        _ => Process::forkserver(target.function(), ()),
    }
}

fn processes(start: usize, what: &str) {
    sweep(what, 100, |_| {
        let mut ok = child_of(start, entry!(returns));
        ok.start().unwrap();
        assert_eq!(join(&ok, LIMIT), 0);
        let mut panicking = child_of(start, entry!(panics));
        panicking.start().unwrap();
        assert_eq!(join(&panicking, LIMIT), 1);
        let mut killed = child_of(start, entry!(sleeps)).daemon(true);
        killed.start().unwrap();
        // A timeout that expires.
        assert_eq!(killed.join_timeout(Duration::from_millis(1)).unwrap(), None);
        killed.kill().unwrap();
        assert_eq!(join(&killed, LIMIT), -libc::SIGKILL);
        let mut terminated = child_of(start, entry!(sleeps)).daemon(true);
        terminated.start().unwrap();
        terminated.terminate().unwrap();
        assert_eq!(join(&terminated, LIMIT), -libc::SIGTERM);
        // A handle dropped without a join: its child is still reaped.
        let mut dropped = child_of(start, entry!(returns));
        dropped.start().unwrap();
    });
}

fn scoped_processes() {
    let counter = Value::new(0u64).unwrap();
    sweep("scoped processes", 100, |_| {
        multiproc::scope(|s| {
            let c = &counter;
            // Not daemons, which the scope's end kills: it waits for these.
            s.process(move || *c.lock().unwrap() += 1).start().unwrap();
            s.process(|| panics(())).start().unwrap();
            // A daemon that the scope's end kills.
            common::child(s, || sleeps(()));
        });
    });
    assert_eq!(counter.get().unwrap(), (WARM_UP + 100) as u64);
}

fn processes_forked() {
    processes(0, "processes, fork");
}

fn processes_spawned() {
    processes(1, "processes, spawn");
}

fn processes_forkserver() {
    processes(2, "processes, forkserver");
}

fn pools_and_a_worker_killed() {
    sweep("pools", 30, |_| {
        let pool = Pool::with_processes(2).unwrap();
        assert_eq!(pool.apply(double, 21).unwrap(), 42);
        assert!(matches!(
            pool.apply(die_now, ()),
            Err(Error::WorkerDied { .. })
        ));
        assert_eq!(pool.map(double, 0..10).unwrap()[9], 18);
        pool.close();
        pool.join().unwrap();
        let dropped = Pool::with_processes(1).unwrap();
        assert_eq!(dropped.apply(double, 1).unwrap(), 2);
        let terminated = Pool::with_processes(1).unwrap();
        let waiting = terminated.apply_async(double, 5);
        terminated.terminate();
        let _ = waiting.get_timeout(Duration::from_millis(1));
        terminated.join().unwrap();
    });
}

fn managers_started_and_shut_down() {
    sweep("managers", 40, |i| {
        let mut m = Manager::start().unwrap();
        let d = m.dict::<String, u64>().unwrap();
        d.set("a".into(), i as u64).unwrap();
        assert_eq!(d.get(&"a".into()).unwrap(), Some(i as u64));
        let l = m.list::<u64>().unwrap();
        l.append(1).unwrap();
        // The wrong key; nothing to connect to.
        assert!(matches!(
            Manager::connect(m.address().clone(), b"wrong"),
            Err(Error::AuthenticationFailed(_))
        ));
        let other = m.address().clone();
        let mut second = Manager::connect(other, m.authkey()).unwrap();
        assert_eq!(second.number_of_objects().unwrap(), 2);
        drop(second);
        drop((d, l));
        m.shutdown().unwrap();
        assert!(Manager::connect(m.address().clone(), m.authkey()).is_err());
        second = Manager::start().unwrap();
        drop(second);
    });
}

fn managers_whose_server_is_killed() {
    sweep("managers, their server killed", 40, |_| {
        let m = Manager::start().unwrap();
        let d = m.dict::<u64, u64>().unwrap();
        d.set(1, 1).unwrap();
        let pid = m.server_pid().unwrap();
        // SAFETY: killing the manager's server, this test's child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        assert!(wait_until(LIMIT, || procfs::gone(pid)));
        assert!(matches!(d.get(&1), Err(Error::ManagerGone(_))));
        assert!(m.list::<u64>().is_err());
        drop(d);
        drop(m);
    });
}

fn async_waits_that_expire_or_are_dropped() {
    let rt = common::current_thread();
    sweep("async waits", 300, |_| {
        rt.block_on(async {
            let e = Event::new().unwrap();
            assert!(!e
                .wait_timeout_async(Duration::from_millis(1))
                .await
                .unwrap());
            // A wait dropped before it ends.
            assert!(
                tokio::time::timeout(Duration::from_millis(1), e.wait_async())
                    .await
                    .is_err()
            );
            let s = Semaphore::new(0).unwrap();
            assert!(!s
                .acquire_timeout_async(Duration::from_millis(1))
                .await
                .unwrap());
            let q = Queue::<u64>::new().unwrap();
            assert!(matches!(
                q.get_timeout_async(Duration::from_millis(1)).await,
                Err(Error::Timeout)
            ));
            assert!(
                tokio::time::timeout(Duration::from_millis(1), q.get_async())
                    .await
                    .is_err()
            );
            let (mut a, b) = multiproc::Pipe(true).unwrap();
            assert!(
                tokio::time::timeout(Duration::from_millis(1), a.recv_bytes_async())
                    .await
                    .is_err()
            );
            drop(b);
            assert!(a.recv_bytes_async().await.is_err());
            let p = common::static_child(|| {});
            assert_eq!(p.join_async().await.unwrap(), 0);
        });
    });
}

fn managers_killed_mid_call() {
    sweep("managers, their server killed mid-call", 40, |_| {
        let m = Manager::start().unwrap();
        let d = m.dict::<u64, u64>().unwrap();
        let pid = m.server_pid().unwrap();
        std::thread::scope(|s| {
            // Calls until one fails: the kill comes in the middle of one.
            let caller = s.spawn(|| (0..).find_map(|k| d.set(k, k).err()).unwrap());
            // SAFETY: killing the manager's server, this test's child.
            assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
            assert!(matches!(caller.join().unwrap(), Error::ManagerGone(_)));
        });
        // A second handle, connected to the dead server's address: nothing
        // there.
        assert!(Manager::connect(m.address().clone(), m.authkey()).is_err());
    });
}

fn listeners_whose_client_dies_mid_handshake() {
    let address = Address::Unix(std::env::temp_dir().join("multiproc-leak-dies.sock"));
    let listener = Listener::bind(&address, Some(b"key")).unwrap();
    sweep("listener, its client killed mid-handshake", 100, |_| {
        let client = common::static_child({
            let address = address.clone();
            // Killed while it waits for the challenge's answer.
            move || drop(connect(&address, Some(b"wrong")))
        });
        assert!(wait_until(LIMIT, || waiting_client(&listener)));
        client.kill().unwrap();
        assert_eq!(join(&client, LIMIT), -libc::SIGKILL);
        assert!(listener.accept().is_err());
    });
}

fn pools_whose_fork_server_is_killed() {
    sweep("pools, their fork server killed", 20, |_| {
        let pool = Pool::with_processes(2).unwrap();
        let worker = pool.apply(my_pid, ()).unwrap();
        let server = procfs::ppid(worker).unwrap();
        // SAFETY: signalling the pool's own fork server, this test's grandchild.
        assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
        // Done by a worker not yet gone with its server, or failed.
        let after = pool.apply_async(double, 2).get_timeout(LIMIT);
        assert!(
            matches!(
                after,
                Ok(4) | Err(Error::PoolTerminated | Error::WorkerDied { .. })
            ),
            "{after:?}"
        );
        pool.terminate();
        pool.join().unwrap();
        // A pool dropped without close or join.
        let dropped = Pool::with_processes(1).unwrap();
        let _ = dropped.apply_async(double, 3);
    });
}

#[cfg(feature = "redis")]
fn redis_proxies_and_a_server_killed() {
    let Some(mut server) = common::redis::OwnServer::start("leak sweep") else {
        return;
    };
    let url = server.url();
    let names = common::redis::unique("leak");
    sweep("Redis proxies", 100, |i| {
        let m = Manager::connect_redis_with_timeout(&url, Duration::from_secs(2)).unwrap();
        let d = m.dict_named::<u64, u64>(&names).unwrap();
        d.set(1, i as u64).unwrap();
        let q = m.queue_named::<u64>(&names).unwrap();
        q.put(&1).unwrap();
        let (item, delivery) = q.get(Some(LIMIT)).unwrap();
        assert_eq!(item, 1);
        delivery.ack().unwrap();
        assert!(matches!(
            q.get(Some(Duration::from_millis(1))),
            Err(Error::Empty)
        ));
        let lock = m.lock_named(&names).unwrap();
        let held = lock.acquire(None).unwrap();
        assert!(matches!(
            lock.acquire(Some(Duration::from_millis(1))),
            Err(Error::Timeout)
        ));
        held.release().unwrap();
        let e = m.event_named(&names).unwrap();
        assert!(!e.wait(Some(Duration::from_millis(1))).unwrap());
        // Nothing to connect to.
        assert!(Manager::connect_redis("redis://127.0.0.1:1/").is_err());
    });
    sweep("Redis proxies, the server killed", 40, |_| {
        let m = Manager::connect_redis_with_timeout(&url, Duration::from_secs(2)).unwrap();
        let d = m.dict_named::<u64, u64>(&names).unwrap();
        let q = m.queue_named::<u64>(&names).unwrap();
        q.put(&1).unwrap();
        let (_, delivery) = q.get(Some(LIMIT)).unwrap();
        let lock = m.lock_named(&names).unwrap();
        let held = lock.acquire(None).unwrap();
        server.kill();
        assert!(d.set(1, 1).is_err());
        assert!(q.get(Some(Duration::from_millis(1))).is_err());
        assert!(held.release().is_err());
        assert!(lock.acquire(Some(Duration::from_millis(1))).is_err());
        assert!(delivery.ack().is_err());
        drop((d, q, lock, m));
        server.restart();
    });
    let m = Manager::connect_redis(&url).unwrap();
    m.remove_named(&names).unwrap();
    remote_pools(&url, &names);
}

/// A worker of the remote pool `name` at `url`, in a child, that returns
/// after `tasks` tasks.
#[cfg(feature = "redis")]
fn remote_worker(url: &str, name: &str, tasks: u64) -> Process<'static> {
    let (url, name) = (url.to_owned(), name.to_owned());
    common::static_child(move || {
        let served = multiproc::pool::Worker::new(
            &url,
            &[&multiproc::task!(double), &multiproc::task!(sleep_ms)],
        )
        .pool(&name)
        .max_tasks(tasks)
        .serve();
        assert_eq!(served.unwrap(), tasks);
    })
}

#[cfg(feature = "redis")]
fn remote_pools(url: &str, name: &str) {
    use multiproc::pool::RemotePool;
    let pool = RemotePool::connect_named(url, name).unwrap();
    sweep("remote pools", 40, |_| {
        let pool = RemotePool::connect_named(url, name).unwrap();
        let worker = remote_worker(url, name, 2);
        assert_eq!(pool.apply(multiproc::task!(double), 21).unwrap(), 42);
        // A timeout that expires (Redis may answer the blocking wait late,
        // with the result).
        let slow = pool.apply_async(multiproc::task!(sleep_ms), 20);
        match slow.get_timeout(Duration::from_millis(1)) {
            Err(Error::Timeout) => slow.get().unwrap(),
            r => r.unwrap(),
        }
        assert_eq!(join(&worker, LIMIT), 0);
        // Nothing to connect to.
        assert!(RemotePool::connect("redis://127.0.0.1:1/").is_err());
    });
    sweep("remote pools, a worker killed mid-task", 40, |_| {
        let worker = remote_worker(url, name, 1);
        let stuck = pool.apply_async(multiproc::task!(sleep_ms), 60_000);
        // Killed once it holds the task (or before: either way the task
        // waits for another worker).
        let _ = stuck.wait_timeout(Duration::from_millis(20));
        worker.kill().unwrap();
        join(&worker, LIMIT);
        assert!(matches!(
            stuck.get_timeout(Duration::from_millis(1)),
            Err(Error::Timeout)
        ));
    });
    pool.remove().unwrap();
}

#[cfg(not(feature = "redis"))]
fn redis_proxies_and_a_server_killed() {
    eprintln!("skipped: built without the redis feature");
}

fn pools_that_replace_their_workers() {
    sweep("pools, a worker per task", 20, |_| {
        let pool = Pool::builder()
            .processes(2)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        assert_eq!(pool.map(double, 0..20).unwrap()[19], 38);
        // An iterator dropped half way, and results never asked for.
        assert_eq!(pool.imap(double, 0..20, None).nth(2).unwrap().unwrap(), 4);
        let _ = pool.apply_async(double, 1);
        pool.close();
        pool.join().unwrap();
    });
    sweep("pools, an initializer that always fails", 20, |_| {
        let pool = Pool::builder()
            .processes(2)
            .initializer(|| panics(()))
            .build()
            .unwrap();
        assert!(matches!(
            pool.apply(double, 1),
            Err(Error::WorkerDied { .. })
        ));
        pool.terminate();
        pool.join().unwrap();
    });
}

fn async_waits_on_several_threads() {
    let rt = common::multi_thread();
    let pool = Pool::with_processes(1).unwrap();
    sweep("async waits, two worker threads", 200, |_| {
        rt.block_on(async {
            let b = multiproc::Barrier::new(2).unwrap();
            assert!(b
                .wait_timeout_async(Duration::from_millis(1))
                .await
                .is_err());
            let c = multiproc::Condition::new().unwrap();
            assert!(!c
                .wait_for_async(|| false, Some(Duration::from_millis(1)))
                .await
                .unwrap());
            // Waits dropped before they end: a child's exit, a pool's result.
            let p = common::static_child(|| sleeps(()));
            assert!(
                tokio::time::timeout(Duration::from_millis(1), p.join_async())
                    .await
                    .is_err()
            );
            p.kill().unwrap();
            assert_eq!(p.join_async().await.unwrap(), -libc::SIGKILL);
            // (On a loaded machine the result may come first.)
            let slow = pool.apply_async(sleep_ms, 50);
            let _ = tokio::time::timeout(Duration::from_millis(1), slow.get_async()).await;
            slow.get().unwrap();
            assert_eq!(pool.apply_async(double, 2).get_async().await.unwrap(), 4);
        });
    });
}

/// Named objects made where `/dev/shm` is nearly full (a tmpfs of 256 KiB
/// mounted over this process's own): a creation that fails for want of
/// space leaves neither its file under a temporary name nor a mapping.
fn named_objects_where_shared_memory_runs_out() {
    if !PRIVATE_DEV_SHM.load(Relaxed) {
        eprintln!("skipped: no /dev/shm of its own to fill (not root)");
        return;
    }
    // SAFETY: valid C strings; this process's own mount namespace.
    let small = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=256k".as_ptr().cast(),
        )
    };
    assert_eq!(small, 0, "{}", std::io::Error::last_os_error());
    let (v, q) = (name("full-value"), name("full-queue"));
    let mut failed = 0;
    let filled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sweep("named objects, /dev/shm full", 200, |i| {
            // From a few KiB to past the whole file system.
            let bytes = 4096 << (i % 8);
            let values = multiproc::Array::create(&v, &vec![0u64; bytes / 8]);
            let queue = Queue::<u64>::create(&q, 0, bytes);
            let both = values.is_ok() && queue.is_ok();
            assert!(both || bytes > 64 << 10, "{bytes}: {values:?}");
            failed += usize::from(!both);
            drop((values, queue));
            for n in [&v, &q] {
                let _ = multiproc::segment::Segment::unlink(n);
            }
        });
        assert!(failed > 0, "shared memory never ran out");
    }));
    // SAFETY: unmounts the tmpfs mounted above.
    assert_eq!(unsafe { libc::umount2(c"/dev/shm".as_ptr(), 0) }, 0);
    filled.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// Runs `f` while this process may open only `left` more descriptors (its
/// `RLIMIT_NOFILE` soft limit just above those open now; restored after,
/// even if `f` panics), so that an operation that needs several fails
/// part of the way through. Children started meanwhile inherit the limit.
fn with_descriptors_left<R>(left: u64, f: impl FnOnce() -> R) -> R {
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit to write.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    // The descriptor that listed /proc/self/fd is closed again: numbers
    // from `highest` on are free, and the free ones below it are taken
    // (a new descriptor gets the lowest free number).
    let mut gaps = Vec::new();
    loop {
        let f = std::fs::File::open("/dev/null").unwrap();
        if f.as_raw_fd() as u64 >= highest {
            break;
        }
        gaps.push(f);
    }
    let low = libc::rlimit {
        rlim_cur: highest + left,
        rlim_max: old.rlim_max,
    };
    // SAFETY: valid rlimits, read only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    drop(gaps);
    out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Each operation run short of descriptors, `round % 12` left: each fails
/// at another step, or succeeds; either way it leaves nothing behind.
fn operations_that_run_out_of_descriptors() {
    let dir = std::env::temp_dir();
    let named = name("short");
    let rt = common::current_thread();
    sweep("operations short of descriptors", 240, |i| {
        let left = (i % 12) as u64;
        with_descriptors_left(left, || {
            let _ = multiproc::Pipe(true).map(|(mut a, mut b)| {
                a.send(&1u8).unwrap();
                b.recv::<u8>().unwrap()
            });
            let _ = Queue::<u64>::new().map(|q| q.put(1).map(|_| q.get_timeout(LIMIT)));
            let _ = Value::<u64>::create(&named, 1);
            let _ = multiproc::segment::Segment::unlink(&named);
            if let Ok(e) = Event::new() {
                let _ = rt.block_on(e.wait_timeout_async(Duration::from_millis(1)));
            }
        });
        with_descriptors_left(left, || {
            let address = Address::Unix(dir.join("multiproc-leak-short.sock"));
            if let Ok(listener) = Listener::bind(&address, Some(b"key")) {
                // The client may fail before it connects, and the accept
                // after it has: closing the listener then lets it go.
                let client = std::thread::spawn(move || connect(&address, Some(b"key")).map(drop));
                wait_until(LIMIT, || waiting_client(&listener) || client.is_finished());
                if waiting_client(&listener) {
                    let _ = listener.accept();
                }
                drop(listener);
                let _ = client.join().unwrap();
            }
            let _ = connect(&"tcp:127.0.0.1:1".parse().unwrap(), None);
        });
        for start in 0..3 {
            let mut p = child_of(start, entry!(returns));
            if with_descriptors_left(left, || p.start()).is_ok() {
                assert_eq!(join(&p, LIMIT), 0);
            }
        }
    });
    // A pool needs some 14 descriptors, a manager 7 (and with 5 its
    // server, short too, takes 20 s to fail the handshake).
    sweep("pools and managers short of descriptors", 24, |i| {
        let left = (i % 24) as u64;
        let pool = with_descriptors_left(left, Pool::new);
        if let Ok(pool) = pool {
            let _ = pool.apply(double, 1);
            pool.close();
            pool.join().unwrap();
        }
        let manager = with_descriptors_left(left, Manager::start);
        if let Ok(m) = manager {
            let _ = m.dict::<u64, u64>().map(|d| d.set(1, 1));
        }
    });
}

/// Whether this process has a `/dev/shm` of its own (see `main`).
static PRIVATE_DEV_SHM: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    multiproc::spawn_init(&[&entry!(returns), &entry!(panics), &entry!(sleeps)]);
    // Before any thread: a temporary directory (for the sockets) and a
    // `/dev/shm` (with root's rights) of this process's own.
    let tmp = TempDir::new("leak-sweep");
    std::env::set_var("TMPDIR", &tmp.0);
    PRIVATE_DEV_SHM.store(common::private_dev_shm(None), Relaxed);
    if !PRIVATE_DEV_SHM.load(Relaxed) {
        eprintln!("leak_sweep: no /dev/shm of its own (not root): counting the shared one");
    }
    common::harness::run(&tests![
        shared_values_locks_and_queues_anonymous,
        shared_objects_named_and_taken_names,
        pipes_and_a_peer_killed_mid_call,
        unix_listeners_and_clients,
        tcp_listeners_and_clients,
        scoped_processes,
        processes_forked,
        processes_spawned,
        processes_forkserver,
        pools_and_a_worker_killed,
        managers_started_and_shut_down,
        managers_whose_server_is_killed,
        async_waits_that_expire_or_are_dropped,
        operations_that_run_out_of_descriptors,
        managers_killed_mid_call,
        listeners_whose_client_dies_mid_handshake,
        pools_whose_fork_server_is_killed,
        redis_proxies_and_a_server_killed,
        pools_that_replace_their_workers,
        async_waits_on_several_threads,
        named_objects_where_shared_memory_runs_out,
    ])
}

fn returns(_: ()) {}

fn panics(_: ()) {
    // Quiet: hundreds of these would bury the test's own output.
    std::panic::set_hook(Box::new(|_| {}));
    panic!("expected panic in a leak sweep child")
}

fn sleeps(_: ()) {
    // The child's work: waiting to be killed.
    std::thread::sleep(LIMIT);
}

fn sleep_ms(ms: u64) {
    // The task's work: taking that long.
    std::thread::sleep(Duration::from_millis(ms));
}

fn my_pid(_: ()) -> u32 {
    std::process::id()
}

fn double(x: u64) -> u64 {
    2 * x
}

fn die_now(_: ()) -> u8 {
    // SAFETY: sending SIGKILL to this process (a pool worker).
    unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
    unreachable!()
}
