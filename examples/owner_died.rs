//! A child locks a Value and is killed while holding it. The parent's next
//! lock is told the owner died, repairs the value, marks the lock consistent
//! and carries on: a crash never hangs the survivors.
//!
//! Run: `cargo run --example owner_died`

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::cell::CellGuard;
use multiproc::{Process, RawValue, RecoverableLockError, Value};

fn main() -> multiproc::Result<()> {
    let balance = Value::new(100i64)?;
    let holding = RawValue::new(0u32)?;

    let (their_balance, their_holding) = (balance.clone(), holding.clone());
    let mut child = Process::new(move || {
        let mut g = their_balance.lock().expect("lock");
        *g = -999; // half-way through an update...
        their_holding.atomic().store(1, Ordering::Release);
        loop {
            std::thread::park(); // ...and killed before finishing it
        }
    });
    child.start()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while holding.atomic().load(Ordering::Acquire) == 0 {
        assert!(Instant::now() < deadline, "the child never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill()?;
    println!(
        "child killed while holding the lock: exitcode {}",
        child.join()?
    );

    // `lock_recovering`, not `lock`: on owner death it hands over the guard
    // for repair (`lock` would report the death and leave the lock not
    // recoverable).
    match balance.lock_recovering() {
        Err(RecoverableLockError::OwnerDied(mut g)) => {
            println!("owner died; the value it left is {}", *g);
            *g = 100; // repair from what we know is right
            CellGuard::make_consistent(&g)?;
            println!("recovered");
        }
        Ok(_) => println!("the lock was released normally (unexpected)"),
        Err(e) => return Err(e.into()),
    }
    println!("balance = {}", balance.get()?);
    Ok(())
}
