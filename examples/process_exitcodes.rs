//! Exit codes as in Python: 0 on return, N after exit(N), 1 after a panic or
//! an error, -N when killed by signal N.
//!
//! Run: `cargo run --example process_exitcodes`

use std::time::Duration;

use multiproc::{process, Process};

fn main() -> multiproc::Result<()> {
    let mut children = [
        Process::new(|| {}).with_name("returns"),
        Process::new(|| process::exit(1)).with_name("exits-1"),
        Process::new(|| panic!("this child panics on purpose")).with_name("panics"),
        Process::fallible(|| Err("this child fails on purpose")).with_name("errs"),
        Process::new(|| std::thread::sleep(Duration::from_secs(60))).with_name("terminated"),
    ];
    for c in &mut children {
        c.start()?;
    }
    children[4].terminate()?;
    for c in &children {
        c.join()?;
        println!("{:>10}.exitcode = {:?}", c.name(), c.exitcode());
    }
    Ok(())
}
