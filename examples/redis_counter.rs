//! One counter on Redis, four processes: each connects on its own (as a
//! process on another machine would), finds the dict by name and
//! increments the counter 1000 times. `increment` is one `HINCRBY` on the
//! server, so no update is lost; the last line is `total: 4000`.
//!
//! Run: `cargo run --example redis_counter -- redis://127.0.0.1:6379/`
//! (the URL defaults to `$MULTIPROC_TEST_REDIS`, else the one shown).

use std::time::Duration;

use multiproc::Manager;

const PROCESSES: u64 = 4;
const INCREMENTS: i64 = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("MULTIPROC_TEST_REDIS").ok())
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    // A name of this run's own: two runs at once count apart.
    let name = format!("redis_counter-{}", std::process::id());

    let manager = Manager::connect_redis(&url)?;
    let counts = manager.dict_named::<String, i64>(&name)?;
    counts.set("hits".into(), 0)?;

    let mut workers: Vec<multiproc::Process> = (0..PROCESSES)
        .map(|_| {
            let (url, name) = (url.clone(), name.clone());
            multiproc::Process::fallible(move || -> multiproc::Result<()> {
                let manager = Manager::connect_redis(&url)?;
                let counts = manager.dict_named::<String, i64>(&name)?;
                for _ in 0..INCREMENTS {
                    counts.increment(&"hits".into(), 1)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    let mut failed = 0;
    for w in &mut workers {
        if w.join_timeout(Duration::from_secs(120))? != Some(0) {
            failed += 1;
        }
    }

    let total = counts.get(&"hits".into())?.unwrap_or(0);
    manager.remove_named(&name)?;
    if failed > 0 {
        return Err(format!("{failed} of {PROCESSES} processes failed").into());
    }
    println!("total: {total}");
    Ok(())
}
