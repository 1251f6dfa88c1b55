//! Parent and child exchange messages both ways over a duplex Pipe.
//!
//! Run: `cargo run --example pipe`

use multiproc::{Pipe, Process};

fn main() -> multiproc::Result<()> {
    let (mut parent_end, mut child_end) = Pipe(true)?;
    let mut child = Process::fallible(move || -> multiproc::Result<()> {
        for _ in 0..3 {
            let question: String = child_end.recv()?;
            println!("child got:  {question:?}");
            child_end.send(&format!("{} letters", question.len()))?;
        }
        child_end.send(&(42u32, None::<String>, Some("done")))?;
        Ok(())
    });
    child.start()?;
    for word in ["hello", "multiprocessing", "pipe"] {
        parent_end.send(word)?;
        let answer: String = parent_end.recv()?;
        println!("parent got: {answer:?}");
    }
    let last: (u32, Option<String>, Option<String>) = parent_end.recv()?;
    println!("parent got: {last:?}");
    child.join()?;
    Ok(())
}
