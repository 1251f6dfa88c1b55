//! The classic producer and consumers on a `Condition`: three consumer
//! processes wait until an item is there (or the producer is done), take
//! it, and go back to waiting; the producer makes nine items, notifying one
//! consumer for each, then tells them all it is done.
//!
//! Run: `cargo run --example condition`

use std::time::Duration;

use multiproc::{Condition, Process, RawValue};

const ITEMS: u32 = 9;
const CONSUMERS: usize = 3;

fn main() -> multiproc::Result<()> {
    // Python's `Condition()`: a condition with a recursive lock of its own.
    // The shared counters are read and written only under that lock.
    let cond = Condition::new()?;
    let waiting = RawValue::new(0u32)?; // made, not yet taken
    let taken = RawValue::new(0u32)?;
    let done = RawValue::new(0u8)?; // 1 once the producer is done

    let mut consumers: Vec<Process> = (0..CONSUMERS)
        .map(|i| {
            let (cond, waiting, taken, done) =
                (cond.clone(), waiting.clone(), taken.clone(), done.clone());
            Process::new(move || {
                let mut mine = 0;
                loop {
                    let mut g = cond.lock().expect("lock");
                    let there = || waiting.get() > 0;
                    g.wait_for(|| there() || done.get() == 1, None)
                        .expect("wait");
                    if !there() {
                        break; // done, and nothing left
                    }
                    waiting.set(waiting.get() - 1);
                    let n = taken.get() + 1;
                    taken.set(n);
                    drop(g);
                    mine += 1;
                    println!("consumer {i}: took item {n}");
                    std::thread::sleep(Duration::from_millis(20)); // the work, without the lock
                }
                println!("consumer {i}: done after {mine} items");
            })
        })
        .collect();
    for c in &mut consumers {
        c.start()?;
    }

    for n in 1..=ITEMS {
        let g = cond.lock().expect("lock");
        waiting.set(waiting.get() + 1);
        println!("producer: made item {n}");
        g.notify(1);
    }
    let g = cond.lock().expect("lock");
    done.set(1);
    g.notify_all();
    drop(g);

    for c in &consumers {
        c.join()?;
    }
    let taken = taken.get();
    assert_eq!(taken, ITEMS);
    println!("all {taken} items taken");
    Ok(())
}
