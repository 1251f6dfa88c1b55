//! Results back through a `SimpleQueue` (Python's
//! `multiprocessing.SimpleQueue`): four children each put a tuple of any
//! serde type; the parent takes one from each, in whatever order they
//! came, and prints them sorted.
//!
//! Run: `cargo run --example simple_queue`

use multiproc::{Process, SimpleQueue};

fn main() -> multiproc::Result<()> {
    // (which child, its square, a note): any serde type goes through.
    let results = SimpleQueue::<(u32, u64, String)>::new()?;
    let mut children: Vec<Process> = (1..=4)
        .map(|i| {
            let results = results.clone();
            Process::new(move || {
                let note = format!("from pid {}", std::process::id());
                results.put((i, u64::from(i * i), note)).expect("put");
            })
        })
        .collect();
    for c in &mut children {
        c.start()?;
    }
    // One item from each child: the queue holds them until taken.
    let mut got: Vec<_> = (0..children.len())
        .map(|_| results.get())
        .collect::<multiproc::Result<_>>()?;
    for c in &children {
        c.join()?;
    }
    got.sort();
    for (i, square, note) in &got {
        println!("child {i}: {square} ({note})");
    }
    println!("queue empty: {}", results.is_empty());
    Ok(())
}
