//! The classic Manager example: a child writes into a managed dict and
//! reverses a managed list; the parent prints both.
//!
//! Run: `cargo run --example manager_dict_list`

use multiproc::manager::Manager;
use multiproc::Process;

fn main() -> multiproc::Result<()> {
    let manager = Manager::start()?;
    let d = manager.dict::<String, f64>()?;
    let l = manager.list::<i32>()?;
    l.extend(0..10)?;

    let mut child = Process::fallible(|| -> multiproc::Result<()> {
        d.set("1".into(), 1.0)?;
        d.set("2".into(), 2.0)?;
        d.set("0.25".into(), 0.25)?;
        l.reverse()
    });
    child.start()?;
    child.join()?;

    println!("{:?}", d.items()?);
    println!("{:?}", l.to_vec()?);
    Ok(())
}
