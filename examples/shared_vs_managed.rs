//! The same counter updated by several processes, through a shared-memory
//! Value and through a managed dict: the time per update of each, and the
//! ratio. The managed counter uses the server's atomic increment, so no
//! update is lost there either.
//!
//! Run: `cargo run --release --example shared_vs_managed`

use std::sync::atomic::Ordering;
use std::time::Instant;

use multiproc::manager::Manager;
use multiproc::{Process, RawValue, Value};

const PROCESSES: usize = 4;
const UPDATES: i64 = 2_000;

/// Runs `update` UPDATES times in each of PROCESSES children, released
/// together once all have started; ns per update (starting them not counted).
fn timed(update: &(dyn Fn() + Sync)) -> multiproc::Result<f64> {
    let go = RawValue::new(0u32)?;
    // A scope: the children borrow `go` and `update`.
    multiproc::scope(|s| {
        let mut children: Vec<Process> = (0..PROCESSES)
            .map(|_| {
                s.process(|| {
                    while go.atomic().load(Ordering::Acquire) == 0 {
                        std::hint::spin_loop();
                    }
                    for _ in 0..UPDATES {
                        update();
                    }
                })
            })
            .collect();
        for c in &mut children {
            c.start()?;
        }
        let t = Instant::now();
        go.atomic().store(1, Ordering::Release);
        for c in &children {
            assert_eq!(c.join()?, 0);
        }
        Ok(t.elapsed().as_nanos() as f64 / (PROCESSES as f64 * UPDATES as f64))
    })
}

fn main() -> multiproc::Result<()> {
    let shared = Value::new(0i64)?;
    let shared_ns = timed(&|| *shared.lock().expect("lock") += 1)?;

    let manager = Manager::start()?;
    let managed = manager.dict::<String, i64>()?;
    let key = "counter".to_string();
    let managed_ns = timed(&|| {
        managed.increment(&key, 1).expect("increment");
    })?;

    let expected = PROCESSES as i64 * UPDATES;
    println!(
        "shared Value:  {:>10.1} ns per update, total {}",
        shared_ns,
        shared.get()?
    );
    println!(
        "managed dict:  {:>10.1} ns per update, total {}",
        managed_ns,
        managed.get(&key)?.unwrap_or(0)
    );
    println!(
        "the managed update costs {:.0}x the shared one",
        managed_ns / shared_ns
    );
    assert_eq!(shared.get()?, expected);
    assert_eq!(managed.get(&key)?, Some(expected));
    Ok(())
}
