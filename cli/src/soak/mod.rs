//! `multiproc soak`: worker processes hammer every primitive while a chaos
//! loop SIGKILLs them at random and starts replacements; what must survive
//! a crash is checked, and every breach is counted as a violation.
//!
//! The invariants:
//! - no wait outlives its deadline (a worker stuck past it is reported with
//!   what it waited on);
//! - each counter equals the sum of acknowledged increments, give or take
//!   the one a killed worker may have made without acknowledging it;
//! - locks exclude (a witness word inside each critical section), a torn
//!   array is only ever seen by a locker told that the owner died, a
//!   bounded semaphore never admits more than its value;
//! - every acknowledged queue item is delivered exactly once, in order per
//!   producer, and no torn item is ever delivered;
//! - the Manager keeps answering, and its object count returns to what the
//!   supervisor holds once the workers are gone.
//!
//! Two targeted phases follow the chaos:
//! - condition waiters are killed while they wait (half the time just
//!   before the notify, while they may still be dying), and every
//!   `notify(n)` wakes exactly `min(n, live waiters)`: a dead waiter never
//!   takes a notification, nor leaves one for a later waiter;
//! - with more busy processes than CPUs and a small ring, producers and
//!   consumers work while other processes call `len()` and `is_full()`:
//!   no `Corrupt` error, no impossible length, every item delivered once.
//!
//! This file holds the state every process shares ([`Shared`]); the
//! chaos loop is in `supervisor`, a worker's operations in `worker`, the
//! final checks in `check`, and the two phases in their own files.

mod check;
mod condition_phase;
mod queue_phase;
mod supervisor;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use multiproc::manager::{DictProxy, ListProxy, Manager};
use multiproc::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock};
use multiproc::{Array, Process, Queue, RawArray, RawValue, Value};
use serde::{Deserialize, Serialize};

pub use supervisor::run;

/// Options of `multiproc soak`.
#[derive(clap::Args)]
pub struct Options {
    /// How long the chaos lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Worker processes (default: 2 × cpu_count, at least 4).
    #[arg(long)]
    workers: Option<usize>,
    /// Mean time between two kills, in milliseconds.
    #[arg(long, default_value_t = 100)]
    kill_every_ms: u64,
}

/// The longest any blocking operation of a worker is allowed to wait.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// How far past its deadline a wait may return before it counts as stuck:
/// generous, for a 2-core machine that forks and kills all the while.
const SLACK: Duration = Duration::from_secs(5);

/// Permits of the bounded semaphore.
const PERMITS: u32 = 3;

/// Elements of the striped array.
const STRIPE: usize = 16;

/// The per-worker fields of `Shared::slots`; each worker writes only its own.
#[derive(Clone, Copy)]
enum Field {
    Ops,
    AckCounter,
    AckAtomic,
    AckDict,
    AckList,
    /// The queue items the current incarnation has had accepted.
    AckQueue,
    /// When the current wait began (monotonic ns), 0 when not waiting.
    WaitSince,
    /// What it waits on (an index into `WAITS`).
    WaitWhat,
}

const FIELDS: usize = 8;

/// What a wait can be on, for the report of a stuck one.
const WAITS: [&str; 13] = [
    "value lock",
    "atomic",
    "array lock",
    "lock",
    "rlock",
    "event",
    "semaphore",
    "condition",
    "barrier",
    "queue put",
    "manager dict",
    "manager list",
    "manager objects",
];

/// How often each operation is picked (indexes into `WAITS`): mostly the
/// shared layer, whose critical sections a kill should often interrupt;
/// the manager's round trips are slower and would crowd them out.
const MIX: [usize; 25] = [
    0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 6, 6, 7, 7, 8, 9, 9, 9, 10, 11, 12,
];

/// Everything the workers share, created before the first fork.
struct Shared {
    stop: RawValue<u32>,
    slots: RawArray<u64>,
    violations: RawValue<u64>,
    recoveries: RawValue<u64>,
    counter: Value<u64>,
    atomic: RawValue<u64>,
    array: Array<u64>,
    lock: Lock,
    rlock: RLock,
    /// The pid inside the critical section of `lock` / `rlock`, else 0.
    witness: RawArray<u32>,
    event: Event,
    semaphore: BoundedSemaphore,
    /// A bit per slot whose worker holds a permit.
    permits: RawValue<u64>,
    condition: Condition,
    condition_seq: RawValue<u64>,
    barrier: Barrier,
    queue: Queue<Item>,
    dict: DictProxy<String, i64>,
    list: ListProxy<u64>,
    manager: Manager,
}

impl Shared {
    fn new(workers: usize) -> multiproc::Result<Shared> {
        let manager = Manager::start()?;
        let dict = manager.dict()?;
        dict.set("n".into(), 0)?;
        Ok(Shared {
            stop: RawValue::new(0)?,
            slots: RawArray::new(workers * FIELDS)?,
            violations: RawValue::new(0)?,
            recoveries: RawValue::new(0)?,
            counter: Value::new(0)?,
            atomic: RawValue::new(0)?,
            array: Array::new(STRIPE)?,
            lock: Lock::new()?,
            rlock: RLock::new()?,
            witness: RawArray::new(2)?,
            event: Event::new()?,
            semaphore: BoundedSemaphore::new(PERMITS)?,
            permits: RawValue::new(0)?,
            condition: Condition::new()?,
            condition_seq: RawValue::new(0)?,
            barrier: Barrier::new(2)?,
            queue: Queue::with_capacity(256, 64 << 10)?,
            list: manager.list()?,
            dict,
            manager,
        })
    }

    fn slot(&self, slot: usize, field: Field) -> &AtomicU64 {
        self.slots
            .atomic(slot * FIELDS + field as usize)
            .expect("slot index within the array")
    }

    fn violation(&self, what: std::fmt::Arguments<'_>) {
        self.violations.atomic().fetch_add(1, Ordering::Relaxed);
        // One write, so that lines of several processes do not interleave.
        let line = format!("VIOLATION (pid {}): {what}\n", std::process::id());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }

    fn recovered(&self) {
        self.recoveries.atomic().fetch_add(1, Ordering::Relaxed);
    }
}

/// A queue item: who sent it, its number, and a payload derived from both,
/// so that a torn item cannot pass for a whole one.
#[derive(Serialize, Deserialize)]
struct Item {
    incarnation: u64,
    seq: u64,
    payload: Vec<u8>,
}

fn payload(incarnation: u64, seq: u64) -> Vec<u8> {
    let len = (seq % 97) as usize + 1;
    let mut x = incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    (0..len)
        .map(|_| {
            x = xorshift(x);
            x as u8
        })
        .collect()
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x.max(1)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A started process running `f`.
fn started(f: impl FnOnce() + Send + 'static) -> multiproc::Result<Process<'static>> {
    let mut p = Process::new(f);
    p.start()?;
    Ok(p)
}
