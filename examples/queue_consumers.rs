//! The classic consumer pool: a JoinableQueue of tasks, 2 × cpu_count
//! consumer processes, one poison pill per consumer, and a results queue.
//! The main process joins the task queue and prints every result.
//!
//! Run: `cargo run --example queue_consumers`

use serde::{Deserialize, Serialize};

use multiproc::{current_process, JoinableQueue, Process, Queue};

#[derive(Serialize, Deserialize, Debug)]
enum Task {
    Multiply(u64, u64),
    /// The poison pill: the consumer stops.
    Stop,
}

fn main() -> multiproc::Result<()> {
    let tasks = JoinableQueue::<Task>::new()?;
    let results = Queue::<String>::new()?;
    let consumers = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("creating {consumers} consumers");
    let mut pool: Vec<Process> = (0..consumers)
        .map(|_| {
            let (tasks, results) = (tasks.clone(), results.clone());
            Process::fallible(move || -> multiproc::Result<()> {
                let me = current_process().name().to_owned();
                loop {
                    let task = tasks.get()?;
                    let Task::Multiply(a, b) = task else {
                        println!("{me}: exiting");
                        tasks.task_done()?;
                        return Ok(());
                    };
                    results.put(format!("{a} * {b} = {}", a * b))?;
                    tasks.task_done()?;
                }
            })
        })
        .collect();
    for p in &mut pool {
        p.start()?;
    }
    const JOBS: u64 = 10;
    for i in 0..JOBS {
        tasks.put(Task::Multiply(i, i))?;
    }
    for _ in 0..consumers {
        tasks.put(Task::Stop)?;
    }
    tasks.join()?;
    for _ in 0..JOBS {
        println!("result: {}", results.get()?);
    }
    for p in &pool {
        p.join()?;
    }
    Ok(())
}
