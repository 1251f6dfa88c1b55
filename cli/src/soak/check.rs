//! The supervisor's checks: every queue item delivered once and whole,
//! and the counters equal to the acknowledged increments.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use multiproc::{Error, RecoverableLockError};

use super::{payload, Field, Shared, FIELDS, SLACK};

/// The supervisor's side of the queue: takes every item and checks it,
/// counting the items of each producer incarnation in `delivered` (they
/// must arrive numbered 0, 1, 2, ...).
pub(super) fn collect(
    shared: &Shared,
    delivered: &Mutex<HashMap<u64, u64>>,
    done: &AtomicBool,
) -> multiproc::Result<()> {
    loop {
        match shared.queue.get_timeout(Duration::from_millis(100)) {
            Ok(item) => {
                if item.payload != payload(item.incarnation, item.seq) {
                    shared.violation(format_args!(
                        "torn queue item {} of incarnation {}",
                        item.seq, item.incarnation
                    ));
                }
                let mut map = delivered.lock().unwrap_or_else(|p| p.into_inner());
                let d = map.entry(item.incarnation).or_default();
                if item.seq != *d {
                    shared.violation(format_args!(
                        "incarnation {} delivered item {} after {} items (lost or repeated)",
                        item.incarnation, item.seq, *d
                    ));
                }
                *d = (*d).max(item.seq + 1);
            }
            Err(Error::Timeout) if done.load(Ordering::Acquire) => return Ok(()),
            Err(Error::Timeout) => {}
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn total(shared: &Shared, field: Field) -> u64 {
    (0..shared.slots.len() / FIELDS)
        .map(|i| shared.slot(i, field).load(Ordering::Acquire))
        .sum()
}

/// Checks a counter against its acknowledged increments: each kill may add
/// one increment nobody acknowledged.
fn check_counter(shared: &Shared, what: &str, value: u64, acked: u64, kills: u64) {
    if value < acked || value > acked + kills {
        shared.violation(format_args!(
            "{what} is {value}, but {acked} increments were acknowledged (and {kills} kills)"
        ));
    }
}

/// The final checks, once every worker is gone.
pub(super) fn check_counts(
    shared: &Shared,
    kills: u64,
    acked_items: &HashMap<u64, u64>,
    delivered: &HashMap<u64, u64>,
) -> anyhow::Result<()> {
    let counter = match shared.counter.lock_recovering() {
        Ok(g) => *g,
        Err(RecoverableLockError::OwnerDied(g)) => *g,
        Err(e) => anyhow::bail!("the locked Value: {e}"),
    };
    check_counter(
        shared,
        "the locked Value",
        counter,
        total(shared, Field::AckCounter),
        kills,
    );
    check_counter(
        shared,
        "the atomic value",
        shared.atomic.get(),
        total(shared, Field::AckAtomic),
        kills,
    );
    let n = shared.dict.get(&"n".into())?.unwrap_or(-1);
    check_counter(
        shared,
        "the manager dict's counter",
        n as u64,
        total(shared, Field::AckDict),
        kills,
    );
    let len = shared.list.len()? as u64;
    check_counter(
        shared,
        "the manager list's length",
        len,
        total(shared, Field::AckList),
        kills,
    );
    for (incarnation, &acked) in acked_items {
        let got = delivered.get(incarnation).copied().unwrap_or(0);
        // One more than acknowledged: the item of a producer killed after
        // the put took effect and before it could count it.
        if got < acked || got > acked + 1 {
            shared.violation(format_args!(
                "incarnation {incarnation}: {acked} items accepted, {got} delivered"
            ));
        }
    }
    // The workers' references are gone with their connections.
    let deadline = Instant::now() + SLACK;
    loop {
        let objects = shared.manager.number_of_objects()?;
        if objects == 2 {
            break;
        }
        if Instant::now() > deadline {
            shared.violation(format_args!(
                "the manager holds {objects} objects after the workers ended, not 2"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
