//! The pool across machines (`multiproc::pool`) against a real Redis:
//! workers are this test binary run again (exec'd: separate processes that
//! share nothing but the Redis server), killed by pid when a test ends.
//!
//! Needs `MULTIPROC_TEST_REDIS` (see tests/common/redis.rs): skipped with a
//! printed reason without it, a failure in CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::harness::{self, tests};
use common::redis::{redis_url, unique};
use common::{wait_until, watchdog};
use multiproc::pool::{RemotePool, Worker};
use multiproc::{task, Error};

/// Set in a worker: `<url>|<pool>`.
const WORKER_ENV: &str = "MULTIPROC_TEST_POOL_WORKER";
/// The workers' heartbeat: a dead worker's task is put back this long after.
const HEARTBEAT: Duration = Duration::from_millis(600);
/// The bound on every test.
const LIMIT: Duration = Duration::from_secs(90);

// The tasks (the workers serve all but `not_served`).

fn square(x: u64) -> u64 {
    x * x
}

fn fail(x: u64) -> u64 {
    panic!("no luck with {x}")
}

/// Ends its run (the child its worker forked) with exit code 7.
fn exit_seven(_: u64) -> u64 {
    std::process::exit(7)
}

/// Kills the worker that runs it (its child dies with it).
fn kill_worker(_: u64) -> u64 {
    let worker = std::os::unix::process::parent_id() as i32;
    // SAFETY: a plain system call.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Writes `dir/run-<worker pid>`; the first run then waits to be killed,
/// any later one returns `x * 10`.
fn hold((dir, x): (String, u64)) -> u64 {
    let dir = Path::new(&dir);
    let worker = std::os::unix::process::parent_id();
    let first = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join("first"))
        .is_ok();
    std::fs::write(dir.join(format!("run-{worker}")), b"").unwrap();
    if first {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    x * 10
}

fn not_served(x: u64) -> u64 {
    x
}

/// The length of its argument (for a 10 MB argument).
fn length(v: Vec<u8>) -> u64 {
    v.len() as u64
}

/// `n` bytes (for a 10 MB result).
fn bytes(n: u64) -> Vec<u8> {
    vec![7; n as usize]
}

/// Writes `dir/run-<worker pid>`, sleeps `ms`, returns `ms`.
fn mark((dir, ms): (String, u64)) -> u64 {
    let worker = std::os::unix::process::parent_id();
    std::fs::write(Path::new(&dir).join(format!("run-{worker}")), b"").unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Forks a grandchild that lives on a while (holding what the task's
/// process holds, its result pipe too), then ends the task's process with
/// exit code 3 without a result.
fn fork_and_exit(_: u64) -> u64 {
    // SAFETY: the grandchild only sleeps and exits.
    if unsafe { libc::fork() } == 0 {
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: ends the grandchild without running the parent's exit code.
        unsafe { libc::_exit(0) };
    }
    std::process::exit(3)
}

/// Sleeps `ms`, then fails if told to, else writes `dir/done-<ms>` and
/// returns `ms`.
fn nap_then((dir, ms, fail): (String, u64, bool)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    assert!(!fail, "failed after {ms} ms");
    std::fs::write(Path::new(&dir).join(format!("done-{ms}")), b"").unwrap();
    ms
}

/// Sleeps `ms`, then returns it.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A worker's life: serve, then exit (0 when told to stop).
fn worker(spec: &str) -> ! {
    let (url, pool) = spec.split_once('|').expect("url|pool");
    let served = Worker::new(
        url,
        &[
            &task!(square),
            &task!(fail),
            &task!(exit_seven),
            &task!(kill_worker),
            &task!(hold),
            &task!(length),
            &task!(bytes),
            &task!(nap),
            &task!(nap_then),
            &task!(mark),
            &task!(fork_and_exit),
        ],
    )
    .pool(pool)
    .heartbeat(HEARTBEAT)
    .serve();
    match served {
        Ok(_) => multiproc::process::exit(0),
        Err(e) => {
            eprintln!("pool worker {}: {e}", std::process::id());
            multiproc::process::exit(1)
        }
    }
}

/// A pool of its own and its worker processes; ends them (by pid) and
/// removes the pool's keys when dropped.
struct Fixture {
    url: String,
    pool: RemotePool,
    workers: Vec<Child>,
}

impl Fixture {
    /// `None` (skipped) without a Redis server.
    fn new(test: &str, workers: usize) -> Option<Fixture> {
        let url = redis_url(test)?;
        let pool = RemotePool::connect_named(&url, &unique(test)).expect("connect");
        let mut f = Fixture {
            url,
            pool,
            workers: Vec::new(),
        };
        f.start(workers);
        Some(f)
    }

    /// Starts `n` more workers and waits until they have announced
    /// themselves.
    fn start(&mut self, n: usize) {
        for _ in 0..n {
            let child = Command::new(std::env::current_exe().unwrap())
                .env(WORKER_ENV, format!("{}|{}", self.url, self.pool.name()))
                .stdin(Stdio::null())
                .spawn()
                .expect("start a worker");
            self.workers.push(child);
        }
        let want = self.alive();
        assert!(
            wait_until(Duration::from_secs(20), || self.pool.workers().unwrap()
                == want),
            "{want} workers did not announce themselves"
        );
    }

    /// How many worker processes have not exited.
    fn alive(&mut self) -> usize {
        self.workers
            .iter_mut()
            .map(|c| c.try_wait().unwrap().is_none())
            .filter(|&running| running)
            .count()
    }

    /// Stops the workers through Redis and checks that each returned from
    /// `serve` (exit code 0), except those killed.
    fn stop(&mut self) {
        self.pool.stop_workers().unwrap();
        for c in &mut self.workers {
            let exited = wait_until(Duration::from_secs(20), || c.try_wait().unwrap().is_some());
            assert!(exited, "worker {} did not stop", c.id());
            let status = c.wait().unwrap();
            use std::os::unix::process::ExitStatusExt;
            assert!(
                status.success() || status.signal() == Some(libc::SIGKILL),
                "worker {}: {status}",
                c.id()
            );
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.workers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.pool.remove();
    }
}

/// A directory of the test's own, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The pids in the `run-<pid>` files.
    fn runs(&self) -> Vec<i32> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_str()?
                    .strip_prefix("run-")?
                    .parse()
                    .ok()
            })
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn map_apply_and_apply_async_across_workers() {
    let Some(mut f) = Fixture::new("pool-map", 3) else {
        return;
    };
    watchdog("map, apply, apply_async", LIMIT, || {
        let squares = f.pool.map(task!(square), 0..200u64).unwrap();
        assert_eq!(squares, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(f.pool.apply(task!(square), 12).unwrap(), 144);
        let handles: Vec<_> = (0..10u64)
            .map(|x| f.pool.apply_async(task!(square), x))
            .collect();
        for (x, h) in handles.iter().enumerate() {
            assert_eq!(h.get().unwrap(), (x * x) as u64);
            assert!(h.ready());
            // A result, once read, stays with its handle.
            assert_eq!(h.get_timeout(Duration::ZERO).unwrap(), (x * x) as u64);
        }
        let chunked = f.pool.map_async(task!(square), 0..50u64, Some(7));
        assert_eq!(
            chunked.get().unwrap(),
            (0..50u64).map(|x| x * x).collect::<Vec<_>>()
        );
        let mut unordered: Vec<u64> = f
            .pool
            .imap_unordered(task!(square), 0..20u64)
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(f.pool.map(task!(square), Vec::<u64>::new()).unwrap(), []);
        f.stop();
    });
}

fn get_timeout_at_zero_and_max() {
    // No worker yet: the task waits in Redis.
    let Some(mut f) = Fixture::new("pool-timeouts", 0) else {
        return;
    };
    watchdog("get_timeout", LIMIT, || {
        let r = f.pool.apply_async(task!(square), 9);
        let start = Instant::now();
        assert!(matches!(r.get_timeout(Duration::ZERO), Err(Error::Timeout)));
        assert!(!r.ready());
        assert!(start.elapsed() < Duration::from_secs(5));
        let start = Instant::now();
        assert!(matches!(
            r.get_timeout(Duration::from_millis(300)),
            Err(Error::Timeout)
        ));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
        for tiny in [
            Duration::from_nanos(1),
            Duration::from_nanos(999_999_999),
            Duration::new(0, 999_999),
        ] {
            let start = Instant::now();
            assert!(matches!(r.get_timeout(tiny), Err(Error::Timeout)));
            assert!(!r.wait_timeout(tiny));
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        f.start(1);
        assert_eq!(r.get_timeout(Duration::MAX).unwrap(), 81);
        let m = f.pool.map_async(task!(square), 1..=3u64, None);
        assert_eq!(m.get_timeout(Duration::MAX).unwrap(), [1, 4, 9]);
        assert!(m.ready());
        f.stop();
    });
}

fn a_panicking_task_is_task_failed() {
    let Some(mut f) = Fixture::new("pool-panic", 2) else {
        return;
    };
    watchdog("a panicking task", LIMIT, || {
        match f.pool.apply(task!(fail), 3) {
            Err(Error::TaskFailed(msg)) => assert!(msg.contains("no luck with 3"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        match f.pool.map(task!(fail), [1u64, 2]) {
            Err(Error::TaskFailed(msg)) => assert!(msg.contains("no luck with"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        // The workers serve on.
        assert_eq!(f.pool.apply(task!(square), 5).unwrap(), 25);
        assert_eq!(f.alive(), 2);
        f.stop();
    });
}

/// As Python's `map`: a failed map returns once every chunk is done (no
/// task of it still running), with the first failed chunk's error in
/// input order.
fn a_failed_map_waits_for_every_chunk() {
    let Some(mut f) = Fixture::new("pool-map-fail", 2) else {
        return;
    };
    watchdog("a failed map waits for every chunk", LIMIT, || {
        let dir = common::TempDir::new("pool-map-fail");
        let d = dir.0.to_str().unwrap().to_owned();
        // The first chunk fails at once, the second ends later.
        match f.pool.map(
            task!(nap_then),
            [(d.clone(), 0, true), (d.clone(), 400, false)],
        ) {
            Err(Error::TaskFailed(msg)) => assert!(msg.contains("after 0 ms"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        assert!(
            dir.0.join("done-400").exists(),
            "map returned before its last chunk ended"
        );
        // The first failure in input order, not in time.
        let m = f.pool.map_async(
            task!(nap_then),
            [(d.clone(), 300, true), (d, 0, true)],
            Some(1),
        );
        match m.get_timeout(Duration::MAX) {
            Err(Error::TaskFailed(msg)) => assert!(msg.contains("after 300 ms"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        assert!(m.ready());
        f.stop();
    });
}

fn an_unknown_task_is_a_clear_error() {
    let Some(mut f) = Fixture::new("pool-unknown", 1) else {
        return;
    };
    watchdog("an unknown task", LIMIT, || {
        match f.pool.apply(task!(not_served), 1) {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains("::not_served"), "{msg}");
                assert!(
                    msg.contains("::square"),
                    "the served tasks are listed: {msg}"
                );
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(f.pool.apply(task!(square), 3).unwrap(), 9);
        f.stop();
    });
}

fn a_task_that_dies_twice_is_worker_died_with_its_exit_code() {
    let Some(mut f) = Fixture::new("pool-exit", 2) else {
        return;
    };
    watchdog("a task that exits", LIMIT, || {
        match f.pool.apply(task!(exit_seven), 1) {
            Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, 7),
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        // Only the task's child died: both workers serve on.
        assert_eq!(f.alive(), 2);
        assert_eq!(f.pool.apply(task!(square), 4).unwrap(), 16);
        f.stop();
    });
}

fn a_worker_killed_mid_task_has_its_task_retried_on_another() {
    let Some(mut f) = Fixture::new("pool-kill9", 2) else {
        return;
    };
    let dir = TempDir::new("pool-kill9");
    watchdog("a worker killed mid-task", LIMIT, || {
        let r = f
            .pool
            .apply_async(task!(hold), (dir.0.to_str().unwrap().to_string(), 4));
        assert!(
            wait_until(Duration::from_secs(20), || !dir.runs().is_empty()),
            "the task did not start"
        );
        let first = dir.runs()[0];
        // SAFETY: a plain system call, on a worker this test started.
        assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
        // Put back when its heartbeat lapses, and run by the other worker.
        assert_eq!(r.get_timeout(Duration::from_secs(30)).unwrap(), 40);
        let runs = dir.runs();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(runs.iter().any(|&p| p != first), "{runs:?}");
        assert_eq!(f.alive(), 1);
        assert_eq!(f.pool.workers().unwrap(), 1);
        f.stop();
    });
}

fn a_task_that_kills_every_worker_is_worker_died() {
    let Some(mut f) = Fixture::new("pool-killer", 3) else {
        return;
    };
    watchdog("a task that kills its workers", LIMIT, || {
        match f.pool.apply(task!(kill_worker), 0) {
            Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, -9),
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        // Run twice, by two workers: the third serves on.
        assert!(wait_until(Duration::from_secs(10), || f.alive() == 1));
        assert_eq!(f.pool.apply(task!(square), 6).unwrap(), 36);
        f.stop();
    });
}

fn bad_names_and_urls_are_clear_errors() {
    let Some(url) = redis_url("pool-names") else {
        return;
    };
    assert!(matches!(
        RemotePool::connect_named(&url, ""),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        RemotePool::connect("http://example.com/"),
        Err(Error::InvalidArgument(_))
    ));
    let tasks: [&dyn multiproc::pool::ServedTask; 2] = [&task!(square), &task!(square)];
    assert!(matches!(
        Worker::new(&url, &tasks).serve(),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Worker::new(&url, &[&task!(square)])
            .heartbeat(Duration::ZERO)
            .serve(),
        Err(Error::InvalidArgument(_))
    ));
}

/// A submitter waiting for a result when the server dies gets a clear
/// error, not a hang, and works again once the server is back.
fn a_server_killed_mid_wait_is_a_clear_error() {
    let Some(mut server) = common::redis::OwnServer::start("pool-server-killed") else {
        return;
    };
    watchdog("a server killed mid-wait", LIMIT, || {
        let pool = RemotePool::connect_named(&server.url(), "killed").unwrap();
        let r = pool.apply_async(task!(square), 2);
        assert!(matches!(
            r.get_timeout(Duration::from_millis(100)),
            Err(Error::Timeout)
        ));
        server.kill();
        let start = Instant::now();
        match r.get_timeout(Duration::MAX) {
            Err(Error::ManagerGone(msg)) => assert!(msg.contains("unreachable"), "{msg}"),
            other => panic!("expected ManagerGone, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30));
        server.restart();
        // A new connection; the empty server has no workers.
        assert_eq!(pool.workers().unwrap(), 0);
        // The restarted server lost the task: a look finds nothing; a
        // wait finds it gone (never a wait for ever, and a clear error).
        assert!(matches!(r.get_timeout(Duration::ZERO), Err(Error::Timeout)));
        let start = Instant::now();
        match r.get() {
            Err(Error::ManagerGone(msg)) => assert!(msg.contains("no longer in Redis"), "{msg}"),
            other => panic!("expected ManagerGone, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        // A map of which the server lost every chunk, and imap_unordered.
        let m = pool.map_async(task!(square), 0..10u64, Some(3));
        let u: Vec<_> = {
            let it = pool.imap_unordered(task!(square), 0..3u64);
            server.kill();
            server.restart();
            it.collect()
        };
        assert!(u.iter().all(Result::is_err), "{u:?}");
        assert!(matches!(m.get(), Err(Error::ManagerGone(_))));
        pool.remove().unwrap();
    });
}

/// A pool removed while a submitter waits: the submitter is told, never
/// left waiting for ever.
fn a_task_of_a_removed_pool_is_an_error_not_a_hang() {
    let Some(f) = Fixture::new("pool-removed", 0) else {
        return;
    };
    watchdog("a removed pool", LIMIT, || {
        let r = f.pool.apply_async(task!(square), 3);
        let m = f.pool.map_async(task!(square), 0..10u64, Some(2));
        assert!(matches!(r.get_timeout(Duration::ZERO), Err(Error::Timeout)));
        f.pool.remove().unwrap();
        let start = Instant::now();
        assert!(matches!(r.get(), Err(Error::ManagerGone(_))));
        assert!(matches!(
            m.get_timeout(Duration::MAX),
            Err(Error::ManagerGone(_))
        ));
        assert!(start.elapsed() < Duration::from_secs(10));
    });
}

/// Entries another program pushed onto the pending list (bytes that are
/// not UTF-8, an id with no task, an id whose record is garbage) do not
/// make a worker fail, nor every worker in turn (what a failing worker
/// holds is put back for the next).
fn foreign_pending_entries_do_not_stop_the_workers() {
    let Some(mut f) = Fixture::new("pool-foreign", 2) else {
        return;
    };
    watchdog("foreign pending entries", LIMIT, || {
        let prefix = format!("multiproc:{{pool:{}}}:", f.pool.name());
        let mut c = redis::Client::open(f.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let pending = format!("{prefix}pending");
        let _: () = redis::cmd("LPUSH")
            .arg(&pending)
            .arg(&b"\xff\xfe not utf-8"[..])
            .arg("no-such-task")
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}tasks"))
            .arg("garbage")
            .arg(&b"\x05\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"[..])
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("LPUSH")
            .arg(&pending)
            .arg("garbage")
            .query(&mut c)
            .unwrap();
        // A foreign "worker" (never alive) whose task list is no list:
        // the reaper, which every worker runs, passes over it.
        let _: () = redis::cmd("SADD")
            .arg(format!("{prefix}workers"))
            .arg("intruder")
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}processing:intruder"))
            .arg("not a list")
            .query(&mut c)
            .unwrap();
        // The reaper runs here too: it passes over the intruder's key and
        // drops it (never alive).
        assert_eq!(f.pool.workers().unwrap(), 2);
        assert_eq!(
            f.pool.map(task!(square), 0..20u64).unwrap(),
            (0..20u64).map(|x| x * x).collect::<Vec<_>>()
        );
        assert!(wait_until(Duration::from_secs(10), || {
            redis::cmd("LLEN")
                .arg(&pending)
                .query::<u64>(&mut c)
                .unwrap()
                == 0
        }));
        // The garbage record was answered (a clear failure in its result).
        let result: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(format!("{prefix}result:garbage"))
            .arg(0)
            .arg(-1)
            .query(&mut c)
            .unwrap();
        assert_eq!(result.len(), 1);
        assert!(result[0].starts_with(b"F"), "{result:?}");
        assert_eq!(f.alive(), 2);
        f.stop();
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}processing:intruder"))
            .query(&mut c)
            .unwrap();
    });
}

/// A 10 MB argument and a 10 MB result go through.
fn ten_megabyte_arguments_and_results() {
    let Some(mut f) = Fixture::new("pool-huge", 1) else {
        return;
    };
    watchdog("10 MB values", LIMIT, || {
        let n = 10 << 20;
        assert_eq!(f.pool.apply(task!(length), vec![1u8; n]).unwrap(), n as u64);
        let got = f.pool.apply(task!(bytes), n as u64).unwrap();
        assert!(got.len() == n && got.iter().all(|&b| b == 7));
        f.stop();
    });
}

/// `imap_unordered` over thousands of items, and a `map` of 100 000:
/// every result once.
fn many_items_through_map_and_imap_unordered() {
    let Some(mut f) = Fixture::new("pool-many", 2) else {
        return;
    };
    watchdog("many items", LIMIT, || {
        let n = 100_000u64;
        let squares = f.pool.map(task!(square), 0..n).unwrap();
        assert!(squares
            .iter()
            .enumerate()
            .all(|(x, &y)| y == (x * x) as u64));
        // The same tasks (chunks of one) through map and imap_unordered
        // (their times printed, not asserted: the second cost five times
        // the first before it looked at a window of chunks per round).
        let start = Instant::now();
        let mapped = f.pool.map_async(task!(square), 0..1500u64, Some(1));
        assert_eq!(mapped.get().unwrap().len(), 1500);
        let map_took = start.elapsed();
        let start = Instant::now();
        let mut got: Vec<u64> = f
            .pool
            .imap_unordered(task!(square), 0..1500u64)
            .map(Result::unwrap)
            .collect();
        let imap_took = start.elapsed();
        eprintln!("1500 tasks: map {map_took:?}, imap_unordered {imap_took:?}");
        got.sort_unstable();
        assert_eq!(got, (0..1500u64).map(|x| x * x).collect::<Vec<_>>());
        f.stop();
    });
}

/// A worker's idle limit holds whatever its heartbeat; a heartbeat Redis
/// cannot hold (`Duration::MAX`) is a clear error, never a panic.
fn idle_limit_and_heartbeat_bounds() {
    let Some(f) = Fixture::new("pool-idle", 0) else {
        return;
    };
    watchdog("idle limit", LIMIT, || {
        let start = Instant::now();
        let served = Worker::new(&f.url, &[&task!(square)])
            .pool(f.pool.name())
            .idle_timeout(Duration::from_millis(200))
            .serve()
            .unwrap();
        assert_eq!(served, 0);
        let took = start.elapsed();
        // Before: a wait of a third of the heartbeat (10 s by default).
        assert!(took < Duration::from_secs(3), "{took:?}");
        for hb in [Duration::MAX, Duration::from_secs(u64::MAX / 1000)] {
            assert!(matches!(
                Worker::new(&f.url, &[&task!(square)])
                    .pool(f.pool.name())
                    .heartbeat(hb)
                    .idle_timeout(Duration::ZERO)
                    .serve(),
                Err(Error::InvalidArgument(_))
            ));
        }
        // Zero idle time: returns at once.
        assert_eq!(
            Worker::new(&f.url, &[&task!(square)])
                .pool(f.pool.name())
                .idle_timeout(Duration::ZERO)
                .serve()
                .unwrap(),
            0
        );
        assert_eq!(f.pool.workers().unwrap(), 0);
    });
}

/// A worker paused past its heartbeat (a loaded machine, a stopped
/// process) while its task runs: the reaper gives the task to another
/// worker, both runs finish, and the submitter gets exactly one answer;
/// the late run writes no second result (no stray key), and the paused
/// worker serves on once it resumes.
fn a_paused_worker_and_its_replacement_answer_once() {
    let Some(mut f) = Fixture::new("pool-paused", 2) else {
        return;
    };
    let dir = TempDir::new("pool-paused");
    watchdog("a paused worker", LIMIT, || {
        let r = f
            .pool
            .apply_async(task!(mark), (dir.0.to_str().unwrap().to_string(), 1500));
        assert!(wait_until(Duration::from_secs(20), || !dir
            .runs()
            .is_empty()));
        let first = dir.runs()[0];
        // SAFETY: plain system calls, on a worker this test started.
        assert_eq!(unsafe { libc::kill(first, libc::SIGSTOP) }, 0);
        let second = wait_until(Duration::from_secs(20), || dir.runs().len() == 2);
        let got = r.get_timeout(Duration::from_secs(30));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(first, libc::SIGCONT) }, 0);
        assert!(second, "the task was not given to the other worker");
        assert_eq!(got.unwrap(), 1500);
        // The paused worker finishes its run, announces itself and serves.
        assert!(wait_until(Duration::from_secs(20), || f
            .pool
            .workers()
            .unwrap()
            == 2));
        assert_eq!(
            f.pool.map(task!(square), 0..10u64).unwrap(),
            (0..10u64).map(|x| x * x).collect::<Vec<_>>()
        );
        f.stop();
        let mut c = redis::Client::open(f.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let prefix = format!("multiproc:{{pool:{}}}:", f.pool.name());
        let stray: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}result:*"))
            .query(&mut c)
            .unwrap();
        assert!(stray.is_empty(), "results nobody will read: {stray:?}");
        let tasks: u64 = redis::cmd("HLEN")
            .arg(format!("{prefix}tasks"))
            .query(&mut c)
            .unwrap();
        assert_eq!(tasks, 0);
    });
}

/// A task whose process forks a grandchild (which keeps its result pipe
/// open) and exits without a result: seen as dead by its exit code, not
/// waited for until the grandchild ends.
fn a_task_that_forks_and_exits_is_worker_died() {
    let Some(mut f) = Fixture::new("pool-forker", 1) else {
        return;
    };
    watchdog("a task that forks and exits", LIMIT, || {
        match f.pool.apply(task!(fork_and_exit), 0) {
            Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, 3),
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        assert_eq!(f.pool.apply(task!(square), 2).unwrap(), 4);
        f.stop();
    });
}

/// `imap_unordered` whose task kills each worker that runs it, the last
/// worker included: the waiting submitter reaps (nobody else is left to),
/// so the item is `WorkerDied`, never a wait for ever.
fn imap_unordered_reaps_when_no_worker_is_left() {
    let Some(mut f) = Fixture::new("pool-imap-dead", 2) else {
        return;
    };
    watchdog("imap_unordered with every worker killed", LIMIT, || {
        let got: Vec<_> = f.pool.imap_unordered(task!(kill_worker), [0u64]).collect();
        assert!(
            matches!(got[..], [Err(Error::WorkerDied { exitcode: -9 })]),
            "{got:?}"
        );
        assert!(wait_until(Duration::from_secs(10), || f.alive() == 0));
        assert_eq!(f.pool.workers().unwrap(), 0);
    });
}

/// A task submitted under a served task's name but with other types (as
/// another build of the program might): a clear error naming both, never
/// a misdecode or a panic; the worker serves on.
fn a_task_of_other_types_under_a_served_name_is_refused() {
    let Some(mut f) = Fixture::new("pool-mismatch", 1) else {
        return;
    };
    watchdog("a type mismatch", LIMIT, || {
        fn narrow(x: u32) -> u32 {
            x
        }
        let impostor =
            multiproc::pool::RemoteTask::new(task!(square).name(), narrow as fn(u32) -> u32);
        match f.pool.apply(impostor, 3) {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains("u64") && msg.contains("u32"), "{msg}")
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(f.pool.apply(task!(square), 3).unwrap(), 9);
        f.stop();
    });
}

/// `stop_workers` while tasks run: the running ones finish and are
/// delivered, the waiting ones stay waiting (not lost, not failed).
fn stop_workers_with_tasks_in_flight() {
    let Some(mut f) = Fixture::new("pool-stop", 1) else {
        return;
    };
    watchdog("stop in flight", LIMIT, || {
        let mut c = redis::Client::open(f.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let pending = format!("multiproc:{{pool:{}}}:pending", f.pool.name());
        let a = f.pool.apply_async(task!(nap), 700);
        // Taken by the worker (no longer pending), not yet done.
        assert!(wait_until(Duration::from_secs(20), || {
            redis::cmd("LLEN")
                .arg(&pending)
                .query::<u64>(&mut c)
                .unwrap()
                == 0
        }));
        assert!(!a.ready());
        let b = f.pool.apply_async(task!(nap), 1);
        f.stop();
        // Still there, only waiting: not lost, not failed.
        assert!(!b.ready());
        assert_eq!(a.get_timeout(Duration::ZERO).unwrap(), 700);
        assert!(matches!(
            b.get_timeout(Duration::from_millis(1200)),
            Err(Error::Timeout)
        ));
    });
}

/// examples/redis_pool, run as a user would (`cargo test` builds it; a
/// run of this test binary alone may not have: then it says so).
fn the_example_maps_with_workers_it_spawns() {
    let Some(url) = redis_url("pool-example") else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples").join("redis_pool"))
        .unwrap();
    if !example.exists() {
        eprintln!(
            "skipped the example: {} is not built (`cargo test` or `cargo build --examples` builds it)",
            example.display()
        );
        return;
    }
    let (status, out, err) =
        common::run_with_deadline(Command::new(&example).arg(&url), b"", LIMIT);
    assert!(status.success(), "{status}\nstdout: {out}\nstderr: {err}");
    assert_eq!(
        out.lines().last(),
        Some("sum of squares: 328350"),
        "stdout: {out}\nstderr: {err}"
    );
}

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        worker(&spec);
    }
    harness::run(&tests![
        map_apply_and_apply_async_across_workers,
        get_timeout_at_zero_and_max,
        a_panicking_task_is_task_failed,
        a_failed_map_waits_for_every_chunk,
        an_unknown_task_is_a_clear_error,
        a_task_that_dies_twice_is_worker_died_with_its_exit_code,
        a_worker_killed_mid_task_has_its_task_retried_on_another,
        a_task_that_kills_every_worker_is_worker_died,
        bad_names_and_urls_are_clear_errors,
        a_server_killed_mid_wait_is_a_clear_error,
        a_task_of_a_removed_pool_is_an_error_not_a_hang,
        foreign_pending_entries_do_not_stop_the_workers,
        ten_megabyte_arguments_and_results,
        many_items_through_map_and_imap_unordered,
        idle_limit_and_heartbeat_bounds,
        a_paused_worker_and_its_replacement_answer_once,
        a_task_that_forks_and_exits_is_worker_died,
        imap_unordered_reaps_when_no_worker_is_left,
        a_task_of_other_types_under_a_served_name_is_refused,
        stop_workers_with_tasks_in_flight,
        the_example_maps_with_workers_it_spawns,
    ])
}
