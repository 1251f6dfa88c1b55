//! Threads or processes for CPU-bound work?
//!
//! Python needs processes because its GIL lets one thread run Python code
//! at a time. Rust has no GIL: threads scale across cores too. This
//! program measures the same prime count on one thread, on a thread per
//! core and on a process per core (a `Pool`), then shows what processes
//! give instead of speed: a worker that crashes (an `abort`, as a segfault
//! or a bug in foreign code would) takes only itself down, and the pool
//! reports it and goes on; in a thread it would end the whole program.
//!
//! Run: `cargo run --release --example threads_vs_processes` (count the
//! primes below another limit than 3 000 000 with `-- LIMIT`)

use std::time::Instant;

use multiproc::{cpu_count, Error, Pool};

/// Counts the primes in `lo..hi` by trial division: pure CPU work.
fn primes_in((lo, hi): (u64, u64)) -> u64 {
    (lo..hi)
        .filter(|&n| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

/// A task that crashes its worker outright, no unwinding.
fn crash(_: u64) -> u64 {
    std::process::abort()
}

/// The primes counted are those below this, unless the first argument
/// says otherwise.
const LIMIT: u64 = 3_000_000;

/// `0..limit` cut into `n` ranges.
fn chunks(limit: u64, n: u64) -> Vec<(u64, u64)> {
    let step = limit.div_ceil(n);
    (0..n)
        .map(|i| (i * step, ((i + 1) * step).min(limit)))
        .collect()
}

fn main() -> multiproc::Result<()> {
    let limit = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("not a limit: {arg:?}")))?,
        None => LIMIT,
    };
    let workers = cpu_count();
    // Many small chunks, so that no worker waits on one long one.
    let work = chunks(limit, 8 * workers as u64);

    let t = Instant::now();
    let serial: u64 = work.iter().map(|&c| primes_in(c)).sum();
    let one = t.elapsed();

    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threaded: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut sum = 0;
                    while let Some(&c) =
                        work.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        sum += primes_in(c);
                    }
                    sum
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    let threads = t.elapsed();

    let pool = Pool::with_processes(workers)?;
    let t = Instant::now();
    let pooled: u64 = pool.map(primes_in, work.iter().copied())?.iter().sum();
    let processes = t.elapsed();

    assert_eq!(serial, threaded);
    assert_eq!(serial, pooled);
    println!("{serial} primes below {limit}, on {workers} cores:");
    println!("  1 thread          {:>8.1} ms", one.as_secs_f64() * 1e3);
    println!(
        "  {workers} threads         {:>8.1} ms  ({:.1}x)",
        threads.as_secs_f64() * 1e3,
        one.as_secs_f64() / threads.as_secs_f64()
    );
    println!(
        "  {workers} processes       {:>8.1} ms  ({:.1}x, a Pool)",
        processes.as_secs_f64() * 1e3,
        one.as_secs_f64() / processes.as_secs_f64()
    );

    // Isolation: one task crashes its worker; the rest finish.
    let crashed = pool.apply_async(crash, 0);
    let after = pool.map(primes_in, chunks(limit, 4))?.iter().sum::<u64>();
    match crashed.get() {
        Err(Error::WorkerDied { .. }) => {
            println!("a task aborted its worker process: reported as WorkerDied; the pool replaced the worker and went on ({after} primes counted after it)")
        }
        other => println!("the crashing task ended as {other:?}"),
    }
    println!("the same abort in a thread would have ended this whole program");
    pool.close();
    Ok(())
}
