//! At most K of N processes are inside a section at once: a semaphore with K
//! permits guards it, and a shared counter records how many were inside at
//! the same time.
//!
//! Run: `cargo run --example semaphore_pool`

use std::sync::atomic::Ordering;
use std::time::Duration;

use multiproc::{Process, RawValue, Semaphore};

const N: usize = 8;
const K: u32 = 3;

fn main() -> multiproc::Result<()> {
    let slots = Semaphore::new(K)?;
    let inside = RawValue::new(0u32)?;
    let most = RawValue::new(0u32)?;
    let mut workers: Vec<Process> = (0..N)
        .map(|i| {
            let (slots, inside, most) = (slots.clone(), inside.clone(), most.clone());
            Process::new(move || {
                let _permit = slots.permit();
                let now = inside.atomic().fetch_add(1, Ordering::SeqCst) + 1;
                most.atomic().fetch_max(now, Ordering::SeqCst);
                println!("worker {i}: inside, {now} of at most {K}");
                std::thread::sleep(Duration::from_millis(100)); // the work
                inside.atomic().fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    for w in &workers {
        w.join()?;
    }
    let most = most.atomic().load(Ordering::SeqCst);
    println!("at most {most} workers were inside at once (limit {K})");
    assert!(most <= K);
    Ok(())
}
