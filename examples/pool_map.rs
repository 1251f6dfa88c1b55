//! The squares of a range, computed by a pool of workers.
//!
//! Run: `cargo run --example pool_map`

use multiproc::Pool;

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> multiproc::Result<()> {
    let pool = Pool::new()?;
    let squares = pool.map(square, 0..20)?;
    println!("{squares:?}");
    Ok(())
}
