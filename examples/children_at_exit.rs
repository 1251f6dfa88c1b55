//! A Python habit that works: `main` starts children and returns without
//! joining them. As in Python, the program waits for its non-daemon
//! children before it ends (their output comes before the shell prompt),
//! and kills its daemon children.
//!
//! Run: `cargo run --example children_at_exit`

use std::time::Duration;

use multiproc::{current_process, Process};

fn main() -> multiproc::Result<()> {
    for i in 1..=3 {
        let mut worker = Process::new(move || {
            std::thread::sleep(Duration::from_millis(200 * i)); // the work
            println!("{} finished its work", current_process().name());
        });
        worker.start()?;
    }
    let mut watcher = Process::new(|| loop {
        std::thread::park();
    })
    .daemon(true);
    watcher.start()?;
    println!("main returns; the three workers are still working");
    Ok(())
}
