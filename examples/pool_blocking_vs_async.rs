//! The same four tasks with `apply` (one after another: each call blocks)
//! and with `apply_async` (three workers run them at once), printing when
//! each starts and ends.
//!
//! Run: `cargo run --example pool_blocking_vs_async`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use multiproc::Pool;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Sleeps 500 ms; returns (task, start, end) in ms since `t0`. A task
/// takes its arguments as any function does: `apply(task, (id, t0))`.
fn task(id: u32, t0: u128) -> (u32, u128, u128) {
    let start = now_ms() - t0;
    std::thread::sleep(Duration::from_millis(500));
    (id, start, now_ms() - t0)
}

fn show(label: &str, runs: &[(u32, u128, u128)]) {
    println!("{label}:");
    for (id, start, end) in runs {
        println!("  task {id}: started at {start:>4} ms, ended at {end:>4} ms");
    }
}

fn main() -> multiproc::Result<()> {
    let pool = Pool::with_processes(3)?;
    let t0 = now_ms();
    let blocking: Vec<_> = (0..4)
        .map(|i| pool.apply(task, (i, t0)))
        .collect::<Result<_, _>>()?;
    show("apply (blocking)", &blocking);
    let t0 = now_ms();
    let pending: Vec<_> = (0..4).map(|i| pool.apply_async(task, (i, t0))).collect();
    let concurrent: Vec<_> = pending.iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    show("apply_async (3 workers)", &concurrent);
    Ok(())
}
