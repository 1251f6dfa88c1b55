//! Processes for the CPUs, coroutines for the waiting: the tutorials'
//! crawler, with a tokio runtime in each of three worker processes. Every
//! worker runs many tasks that take jobs from one shared `Queue` with
//! `get_async`, "fetch" each (a timer stands in for the network), and
//! report through a results queue with `put_async`: no task ever blocks
//! its runtime's thread, so a few threads keep hundreds of fetches in
//! flight.
//!
//! Run: `cargo run --release --example async_workers`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use multiproc::{Process, Queue};

const WORKERS: usize = 3;
const TASKS_PER_WORKER: usize = 50;
const JOBS: u32 = 600;
/// Marks the end of the jobs: one per task.
const DONE: u32 = u32::MAX;

/// One worker process: a runtime, many tasks, one shared job queue.
fn worker(jobs: Queue<u32>, results: Queue<(u32, u32)>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS_PER_WORKER)
            .map(|_| {
                let (jobs, results) = (jobs.clone(), results.clone());
                tokio::spawn(async move {
                    while let Ok(job) = jobs.get_async().await {
                        if job == DONE {
                            break;
                        }
                        // The "download": 5 to 20 ms of waiting.
                        tokio::time::sleep(Duration::from_millis(5 + u64::from(job % 16))).await;
                        let pid = std::process::id();
                        if results.put_async((pid, job)).await.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
}

fn main() -> multiproc::Result<()> {
    let jobs = Queue::<u32>::new()?;
    let results = Queue::<(u32, u32)>::new()?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (jobs, results) = (jobs.clone(), results.clone());
        let mut p = Process::new(move || worker(jobs, results));
        p.start()?;
        workers.push(p);
    }
    for job in 0..JOBS {
        jobs.put(job)?;
    }
    for _ in 0..WORKERS * TASKS_PER_WORKER {
        jobs.put(DONE)?;
    }
    let mut per_process = BTreeMap::new();
    for _ in 0..JOBS {
        let (pid, _job) = results.get()?;
        *per_process.entry(pid).or_insert(0u32) += 1;
    }
    for w in &workers {
        assert_eq!(w.join()?, 0);
    }
    let took = started.elapsed();
    for (pid, n) in &per_process {
        println!("process {pid}: {n} jobs");
    }
    let total: u32 = per_process.values().sum();
    println!(
        "total: {total} jobs of 5-20 ms each in {:.2} s by {} tasks in {WORKERS} processes \
         (one after another they would take about {:.1} s)",
        took.as_secs_f64(),
        WORKERS * TASKS_PER_WORKER,
        f64::from(JOBS) * 0.0125
    );
    Ok(())
}
