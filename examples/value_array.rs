//! The classic shared-memory example: a child process sets a Value to π and
//! negates every element of an Array; the parent prints both.
//!
//! Run: `cargo run --example value_array`

use multiproc::{Array, Value};

fn main() -> multiproc::Result<()> {
    let num = Value::new(0.0f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;

    // A scope: the child borrows `num` and `arr`, and is joined at its end.
    multiproc::scope(|s| -> multiproc::Result<()> {
        let mut child = s.fallible(|| -> multiproc::Result<()> {
            num.set(std::f64::consts::PI)?;
            for x in arr.lock()?.iter_mut() {
                *x = -*x;
            }
            Ok(())
        });
        child.start()?;
        child.join()?;
        Ok(())
    })?;

    println!("{}", num.get()?);
    println!("{:?}", arr.to_vec()?);
    Ok(())
}
