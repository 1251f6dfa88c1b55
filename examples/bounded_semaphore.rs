//! A `BoundedSemaphore` guarding a pool of two connections: five processes
//! take turns with them, and a release that was never acquired (a bug in a
//! caller) is refused instead of silently making a third connection
//! available, as a plain `Semaphore` would.
//!
//! Run: `cargo run --example bounded_semaphore`

use std::sync::atomic::Ordering;
use std::time::Duration;

use multiproc::{BoundedSemaphore, Error, Process, RawValue, Semaphore};

const CONNECTIONS: u32 = 2;

fn main() -> multiproc::Result<()> {
    let connections = BoundedSemaphore::new(CONNECTIONS)?;
    let in_use = RawValue::new(0u32)?;
    let most = RawValue::new(0u32)?;
    let mut users: Vec<Process> = (0..5)
        .map(|i| {
            let (connections, in_use, most) = (connections.clone(), in_use.clone(), most.clone());
            Process::new(move || {
                // Released when dropped, at the end of the closure.
                let _connection = connections.permit();
                let now = in_use.atomic().fetch_add(1, Ordering::SeqCst) + 1;
                most.atomic().fetch_max(now, Ordering::SeqCst);
                println!("user {i}: has a connection ({now} in use)");
                std::thread::sleep(Duration::from_millis(50)); // the work
                in_use.atomic().fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for u in &mut users {
        u.start()?;
    }
    for u in &users {
        u.join()?;
    }
    let most = most.atomic().load(Ordering::SeqCst);
    println!("at most {most} connections were in use at once");
    assert!(most <= CONNECTIONS);

    // A release with every connection back: refused.
    match connections.release() {
        Err(Error::TooManyReleases) => println!("bounded: an extra release is refused"),
        other => panic!("expected TooManyReleases, got {other:?}"),
    }
    assert_eq!(connections.value(), CONNECTIONS);
    // A plain semaphore takes it, and now hands out a third connection.
    let plain = Semaphore::new(CONNECTIONS)?;
    plain.release()?;
    println!("plain: an extra release makes {} available", plain.value());
    Ok(())
}
