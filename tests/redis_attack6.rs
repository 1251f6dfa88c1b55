//! A sixth round of attacks on the Redis backend and the pool across
//! machines: a server configured with limits below the crate's own.
//!
//! Pool workers are this test binary run again (`pool_worker`, an ignored
//! test that serves only when its environment says so), killed by pid
//! when a test ends.

#![cfg(feature = "redis")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::redis::{raw, unique, OwnServer};
use common::watchdog;
use multiproc::pool::{RemotePool, Worker};
use multiproc::{task, Manager};

const LIMIT: Duration = Duration::from_secs(90);

/// Set in a worker: `<url>|<pool>`.
const WORKER_ENV: &str = "MULTIPROC_TEST_ATTACK6_WORKER";

fn square(x: u64) -> u64 {
    x * x
}

/// `n` bytes.
fn bytes(n: u64) -> Vec<u8> {
    vec![7; usize::try_from(n).unwrap()]
}

/// The length of `v`.
fn length(v: Vec<u8>) -> u64 {
    v.len() as u64
}

/// A pool worker's life, when this binary is run as one; nothing otherwise.
#[test]
#[ignore = "a pool worker's entry: the pool tests run this binary again as one"]
fn pool_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let (url, pool) = spec.split_once('|').expect("url|pool");
    let served = Worker::new(url, &[&task!(square), &task!(bytes), &task!(length)])
        .pool(pool)
        .heartbeat(Duration::from_millis(600))
        .serve();
    match served {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("pool worker {}: {e}", std::process::id());
            std::process::exit(1);
        }
    }
}

/// A worker process of this binary, killed by pid when dropped.
struct OneWorker(Child);

impl OneWorker {
    fn start(url: &str, pool: &str) -> OneWorker {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "pool_worker", "--nocapture"])
            .env(WORKER_ENV, format!("{url}|{pool}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("a worker");
        OneWorker(child)
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for OneWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server of the test's own that takes bulk strings of 1 MiB at most
/// (its `proto-max-bulk-len` at its lowest), and its URL.
fn small_bulk_server(test: &str) -> Option<(OwnServer, String)> {
    let server = OwnServer::start(test)?;
    let url = server.url();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg(1 << 20)
        .query::<()>(&mut raw(&url))
        .unwrap();
    Some((server, url))
}

/// A result larger than the server takes in one bulk string (its
/// `proto-max-bulk-len`, set here to its 1 MiB minimum): that task fails
/// with a clear error, and the worker serves on (it neither returns with
/// an error nor has the task redelivered to every worker in turn).
#[test]
fn a_result_over_the_servers_bulk_limit_fails_that_task_alone() {
    let Some((_server, url)) = small_bulk_server("a_result_over_the_servers_bulk_limit") else {
        return;
    };
    watchdog("a result over the bulk limit", LIMIT, || {
        let name = unique("attack6-bulk");
        let pool = RemotePool::connect_named(&url, &name).unwrap();
        let mut w = OneWorker::start(&url, &name);
        assert_eq!(pool.apply(task!(square), 3).unwrap(), 9);
        let big = pool
            .apply_async(task!(bytes), 2 << 20)
            .get_timeout(Duration::from_secs(30));
        match big {
            Err(multiproc::Error::TaskFailed(m)) => {
                assert!(m.contains("proto-max-bulk-len"), "{m}");
            }
            other => panic!(
                "a 2 MiB result on a 1 MiB limit answered {:?}",
                other.map(|v| v.len())
            ),
        }
        assert!(w.alive(), "the worker left");
        assert_eq!(pool.apply(task!(square), 4).unwrap(), 16);
        pool.remove().unwrap();
    });
}

/// An argument over the server's bulk limit among small ones submitted
/// together: that task fails alone; the others are submitted and run.
#[test]
fn an_argument_over_the_servers_bulk_limit_fails_that_task_alone() {
    let Some((_server, url)) = small_bulk_server("an_argument_over_the_servers_bulk_limit") else {
        return;
    };
    watchdog("an argument over the bulk limit", LIMIT, || {
        let name = unique("attack6-arg");
        let pool = RemotePool::connect_named(&url, &name).unwrap();
        let _w = OneWorker::start(&url, &name);
        let items = vec![vec![1u8; 10], vec![2u8; 2 << 20], vec![3u8; 20]];
        let mut ok: Vec<u64> = Vec::new();
        let mut failed = 0;
        for r in pool.imap_unordered(task!(length), items) {
            match r {
                Ok(n) => ok.push(n),
                Err(_) => failed += 1,
            }
        }
        ok.sort_unstable();
        assert_eq!((ok, failed), (vec![10, 20], 1));
        pool.remove().unwrap();
    });
}

/// A list's append over the server's bulk limit is an error, and the
/// connection the server closed after it is not used again: the next
/// append (which must not run twice) is done, not `Ambiguous`.
#[test]
fn an_append_over_the_servers_bulk_limit_leaves_the_next_unharmed() {
    let Some((_server, url)) = small_bulk_server("an_append_over_the_servers_bulk_limit") else {
        return;
    };
    watchdog("an append over the bulk limit", LIMIT, || {
        let m = Manager::connect_redis(&url).unwrap();
        let name = unique("attack6-append");
        let l = m.list_named::<Vec<u8>>(&name).unwrap();
        assert!(l.append(vec![1u8; 2 << 20]).is_err());
        l.append(vec![2u8; 3]).unwrap();
        assert_eq!(l.len().unwrap(), 1);
        assert_eq!(l.get(0).unwrap(), vec![2u8; 3]);
        drop(l);
        m.remove_named(&name).unwrap();
    });
}
