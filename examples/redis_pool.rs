//! A map over a range by worker processes that share nothing but a Redis
//! server: the pool across machines (`multiproc::pool`).
//!
//! ```text
//! cargo run --example redis_pool -- redis://127.0.0.1:6379/
//! ```
//!
//! The URL is the first argument (else `MULTIPROC_TEST_REDIS`, else
//! `redis://127.0.0.1:6379/`). The example starts three workers itself, as
//! fresh copies of this program (`Process::spawn`: exec'd, no memory
//! shared); on other machines the same program would call
//! `multiproc::pool::serve(url, &[&task!(square)])` in its `main`. Each
//! worker takes tasks from Redis and runs each in a child it forks; the
//! results come back through Redis, in order. The last line is
//! `sum of squares: 328350`.

use multiproc::pool::{RemotePool, Worker};
use multiproc::{entry, task, Process};

/// The task: registered by name (`task!`), never sent by address.
fn square(x: u64) -> u64 {
    x * x
}

/// A worker: serves the pool `name` at `url` until told to stop.
fn work((url, name): (String, String)) {
    if let Err(e) = Worker::new(&url, &[&task!(square)]).pool(&name).serve() {
        eprintln!("worker {}: {e}", std::process::id());
        multiproc::process::exit(1);
    }
}

fn main() -> multiproc::Result<()> {
    // A spawned worker runs `work` here and exits.
    multiproc::spawn_init(&[&entry!(work)]);
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("MULTIPROC_TEST_REDIS").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_string());
    // A pool of its own, so that runs at once do not share workers.
    let name = format!("redis-pool-example-{}", std::process::id());
    let pool = RemotePool::connect_named(&url, &name)?;

    let mut workers: Vec<Process> = (0..3)
        .map(|_| Process::spawn(entry!(work), (url.clone(), name.clone())))
        .collect();
    for w in &mut workers {
        w.start()?;
    }

    let squares = pool.map(task!(square), 0..100u64)?;
    println!("first squares: {:?}", &squares[..6]);
    let r = pool.apply_async(task!(square), 12);
    println!("square(12) = {}", r.get()?);

    pool.stop_workers()?;
    for w in &workers {
        w.join()?;
    }
    pool.remove()?;
    println!("sum of squares: {}", squares.iter().sum::<u64>());
    Ok(())
}
