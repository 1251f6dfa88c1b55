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
use multiproc::task;

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

/// A pool worker's life, when this binary is run as one; nothing otherwise.
#[test]
#[ignore = "a pool worker's entry: the pool tests run this binary again as one"]
fn pool_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let (url, pool) = spec.split_once('|').expect("url|pool");
    let served = Worker::new(url, &[&task!(square), &task!(bytes)])
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

/// A result larger than the server takes in one bulk string (its
/// `proto-max-bulk-len`, set here to its 1 MiB minimum): that task fails
/// with a clear error, and the worker serves on (it neither returns with
/// an error nor has the task redelivered to every worker in turn).
#[test]
fn a_result_over_the_servers_bulk_limit_fails_that_task_alone() {
    let Some(server) = OwnServer::start("a_result_over_the_servers_bulk_limit") else {
        return;
    };
    let url = server.url();
    let mut c = raw(&url);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg(1 << 20)
        .query::<()>(&mut c)
        .unwrap();
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
