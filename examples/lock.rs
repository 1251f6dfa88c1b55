//! Ten processes print under one Lock, so their lines never interleave.
//!
//! Run: `cargo run --example lock`

use multiproc::{Lock, Process};

fn main() -> multiproc::Result<()> {
    let lock = Lock::new()?;
    let mut children: Vec<Process> = (0..10)
        .map(|i| {
            let lock = lock.clone();
            Process::new(move || {
                let _held = lock.lock().expect("lock");
                println!("hello world {i}");
            })
        })
        .collect();
    for c in &mut children {
        c.start()?;
    }
    for c in &children {
        c.join()?;
    }
    Ok(())
}
