//! The classic Event example: one process blocks on `wait()`, another waits
//! with a 2 s timeout, and the main process sets the event after 3 s. The
//! timed waiter gives up first (is_set = false), the other sees it set.
//!
//! Run: `cargo run --example event`

use std::time::Duration;

use multiproc::{Event, Process};

fn main() -> multiproc::Result<()> {
    let event = Event::new()?;
    // Each child gets its own handle on the same event, as in Python.
    let e = event.clone();
    let mut blocking = Process::new(move || {
        e.wait();
        println!("wait_for_event: event.is_set() = {}", e.is_set());
    });
    let e = event.clone();
    let mut timed = Process::new(move || {
        let flag = e.wait_timeout(Duration::from_secs(2));
        println!("wait_for_event_timeout: event.is_set() = {flag}");
    });
    blocking.start()?;
    timed.start()?;
    println!("main: waiting before calling Event.set()");
    std::thread::sleep(Duration::from_secs(3));
    event.set();
    println!("main: event is set");
    blocking.join()?;
    timed.join()?;
    Ok(())
}
