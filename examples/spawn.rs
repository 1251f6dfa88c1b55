//! The spawn start method: children that are fresh copies of the program,
//! safe to start from a multithreaded parent. `main` calls `spawn_init`
//! first, with the functions a spawned child may run, so that a spawned
//! child runs its function instead of `main`.
//!
//! Run: `cargo run --example spawn`

use multiproc::{current_process, entry, parent_process, Process};

fn report(task: (u32, String)) {
    let parent = parent_process().expect("started by a parent");
    println!(
        "{} (pid {}) got task {} {:?} from {} (pid {})",
        current_process().name(),
        std::process::id(),
        task.0,
        task.1,
        parent.name(),
        parent.pid()
    );
}

fn main() -> multiproc::Result<()> {
    multiproc::spawn_init(&[&entry!(report)]);
    // A busy thread would make fork risky; spawn does not care.
    let _busy = std::thread::spawn(|| loop {
        std::thread::park();
    });
    let mut children: Vec<Process> = (0..3)
        .map(|i| Process::spawn(entry!(report), (i, format!("job-{i}"))))
        .collect();
    for c in &mut children {
        c.start()?;
    }
    for c in &children {
        println!("{} exited with {}", c.name(), c.join()?);
    }
    Ok(())
}
