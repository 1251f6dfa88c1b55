//! The managed rows once more on Redis (`multiproc bench --redis URL`):
//! a dict of [`Manager::connect_redis`](multiproc::manager::Manager::connect_redis)
//! beside the same work done raw through the `redis` crate in the same
//! run (`redis-benchmark`-style: one connection per client, one command
//! per round trip, no pipelining).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result};
use multiproc::manager::Manager;

use super::measure::{manager_work, median, paired, prepare, run_clients, ManagerOp, Size, BATCH};
use super::Measured;

/// The baseline's name in the table.
fn raw_name(op: ManagerOp) -> &'static str {
    match op {
        ManagerOp::Set => "raw HSET round trips, redis crate",
        ManagerOp::Get => "raw HGET round trips, redis crate",
        ManagerOp::Append => "raw RPUSH round trips, redis crate",
        ManagerOp::SetBatched => "raw HSET of 1000 fields per round trip",
        ManagerOp::GetBatched => "raw HMGET of 1000 fields per round trip",
    }
}

/// A name no other object of this run (or another run) has.
fn fresh(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "multiproc-bench-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A managed row on Redis: `clients` processes doing `op` on a
/// Redis-backed dict, beside the same work done with raw commands
/// (alternately, medians of the repeats, as every row); the 1-client set
/// row also shows raw `PING` round trips.
pub(super) fn redis_managed(size: &Size, op: ManagerOp, clients: u64) -> Result<Measured> {
    let url = size
        .redis
        .as_deref()
        .context("the Redis rows need --redis URL")?;
    // The full run's sizes are the local manager rows'; `--quick` does
    // less, as a network round trip costs ten times the fast path's.
    let n = match op {
        ManagerOp::SetBatched | ManagerOp::GetBatched => size.pick(500_000, 20_000),
        _ => size.pick(20_000, 2_000),
    };
    let (mut cpu, mut raw_cpu) = (Vec::new(), Vec::new());
    let (a, b) = paired(
        size,
        || {
            let (rate, cpu_us) = managed_rate(url, op, clients, n)?;
            cpu.push(cpu_us);
            Ok(rate)
        },
        || {
            let (rate, cpu_us) = raw_rate(url, op, clients, n)?;
            raw_cpu.push(cpu_us);
            Ok(rate)
        },
    )?;
    eprint!(
        " (redis-server CPU {:.2} us/op; raw commands' {:.2})",
        median(cpu),
        median(raw_cpu)
    );
    let mut baselines = vec![(raw_name(op), b)];
    if op == ManagerOp::Set && clients == 1 {
        let ping = median(
            (0..size.repeats())
                .map(|_| ping_rate(url, size.pick(20_000, 2_000)))
                .collect::<Result<_>>()?,
        );
        baselines.push(("raw PING round trips, redis crate", ping));
    }
    Ok((a, baselines))
}

/// Operations per second of `op` on a Redis-backed dict by `clients`
/// processes (each with its own connection), and the server's CPU time
/// per operation in microseconds.
fn managed_rate(url: &str, op: ManagerOp, clients: u64, n: u64) -> Result<(f64, f64)> {
    let manager = Manager::connect_redis(url)?;
    let name = fresh("dict");
    let dict = manager.dict_named::<u64, u64>(&name)?;
    let list = manager.list_named::<u64>(&name)?;
    let measured = (|| -> Result<(f64, f64)> {
        prepare(&dict, op, n)?;
        let work = |client: u64| manager_work(&dict, &list, op, client, n);
        timed(url, clients * n, || run_clients(clients, work))
    })();
    let removed = manager.remove_named(&name);
    let measured = measured?;
    removed?;
    Ok(measured)
}

/// The same work as [`managed_rate`] in raw commands on a hash (a list
/// for `Append`), one connection per client, no pipelining.
fn raw_rate(url: &str, op: ManagerOp, clients: u64, n: u64) -> Result<(f64, f64)> {
    let client = redis::Client::open(url)?;
    let key = fresh("raw");
    let mut conn = client.get_connection()?;
    let measured = (|| -> Result<(f64, f64)> {
        if matches!(op, ManagerOp::Get | ManagerOp::GetBatched) {
            for b in 0..n.div_ceil(BATCH) {
                let mut hset = redis::cmd("HSET");
                hset.arg(&key);
                for i in b * BATCH..((b + 1) * BATCH).min(n) {
                    hset.arg(i).arg(i);
                }
                hset.query::<()>(&mut conn)?;
            }
        }
        let work = |c: u64| -> Result<()> {
            // Each client process makes its own connection.
            let mut conn = client.get_connection()?;
            let base = c * n;
            match op {
                ManagerOp::Set => (0..n).try_for_each(|i| {
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg(base + i)
                        .arg(i)
                        .query::<()>(&mut conn)
                })?,
                ManagerOp::Get => (0..n).try_for_each(|i| {
                    redis::cmd("HGET")
                        .arg(&key)
                        .arg(i)
                        .query::<Option<u64>>(&mut conn)
                        .map(drop)
                })?,
                ManagerOp::Append => (0..n).try_for_each(|i| {
                    redis::cmd("RPUSH").arg(&key).arg(i).query::<()>(&mut conn)
                })?,
                ManagerOp::SetBatched => (0..n / BATCH).try_for_each(|b| {
                    let mut hset = redis::cmd("HSET");
                    hset.arg(&key);
                    for i in 0..BATCH {
                        hset.arg(base + b * BATCH + i).arg(i);
                    }
                    hset.query::<()>(&mut conn)
                })?,
                ManagerOp::GetBatched => (0..n / BATCH).try_for_each(|b| {
                    let mut hmget = redis::cmd("HMGET");
                    hmget.arg(&key);
                    for i in 0..BATCH {
                        hmget.arg(b * BATCH + i);
                    }
                    hmget.query::<Vec<Option<u64>>>(&mut conn).map(drop)
                })?,
            }
            Ok(())
        };
        timed(url, clients * n, || run_clients(clients, work))
    })();
    let removed = redis::cmd("DEL").arg(&key).query::<()>(&mut conn);
    let measured = measured?;
    removed?;
    Ok(measured)
}

/// Raw `PING` round trips per second on one connection.
fn ping_rate(url: &str, n: u64) -> Result<f64> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    for _ in 0..100 {
        redis::cmd("PING").query::<()>(&mut conn)?;
    }
    let t = Instant::now();
    for _ in 0..n {
        redis::cmd("PING").query::<()>(&mut conn)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Runs `work` (`ops` operations); operations per second, and the
/// server's CPU time per operation in microseconds (from `INFO cpu`: the
/// server may be on another machine).
fn timed(url: &str, ops: u64, work: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let before = server_cpu_seconds(&mut conn)?;
    let t = Instant::now();
    work()?;
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = server_cpu_seconds(&mut conn)? - before;
    Ok((ops as f64 / elapsed, cpu / ops as f64 * 1e6))
}

/// The Redis server's user + system CPU time so far, in seconds.
fn server_cpu_seconds(conn: &mut redis::Connection) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn)?;
    let field = |name: &str| -> Result<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("INFO cpu has no {name}"))?
            .trim()
            .parse::<f64>()
            .with_context(|| format!("INFO cpu's {name}"))
    };
    Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
}
