//! Four workers, ten tasks that sleep a random moment and return the name of
//! the worker that ran them; the results are collected after close and join.
//!
//! Run: `cargo run --example pool_apply_async`

use std::time::Duration;

use multiproc::{current_process, Pool};

fn work(task: u32) -> String {
    // A pseudo-random pause from the task number and the worker's pid.
    let ms = (task as u64 * 7919 + std::process::id() as u64) % 300;
    std::thread::sleep(Duration::from_millis(ms));
    format!(
        "task {task} ran in {} after {ms} ms",
        current_process().name()
    )
}

fn main() -> multiproc::Result<()> {
    let pool = Pool::with_processes(4)?;
    let results: Vec<_> = (0..10).map(|t| pool.apply_async(work, t)).collect();
    pool.close();
    pool.join()?;
    for r in &results {
        println!("{}", r.get()?);
    }
    Ok(())
}
