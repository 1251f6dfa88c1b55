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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::manager::{DictProxy, ListProxy, Manager};
use multiproc::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use multiproc::{Array, Error, LockError, Process, Queue, RawArray, RawValue, Value};
use serde::{Deserialize, Serialize};

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

/// One worker process's view: its slot, and the incarnation it is.
struct Worker<'a> {
    shared: &'a Shared,
    slot: usize,
    incarnation: u64,
    rng: u64,
    queue_seq: u64,
}

impl Worker<'_> {
    fn run(mut self) {
        let s = self.shared;
        while s.stop.atomic().load(Ordering::Relaxed) == 0 {
            self.rng = xorshift(self.rng);
            let op = MIX[(self.rng % MIX.len() as u64) as usize];
            self.timed(op, |w| w.step(op));
            s.slot(self.slot, Field::Ops)
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs one operation that may wait, published as waiting on `op`; a
    /// return past the deadline is a violation.
    fn timed(&mut self, op: usize, f: impl FnOnce(&mut Self)) {
        let s = self.shared;
        s.slot(self.slot, Field::WaitWhat)
            .store(op as u64, Ordering::Relaxed);
        s.slot(self.slot, Field::WaitSince)
            .store(now_ns(), Ordering::Release);
        let started = Instant::now();
        f(self);
        s.slot(self.slot, Field::WaitSince)
            .store(0, Ordering::Release);
        if started.elapsed() > OP_TIMEOUT + SLACK {
            s.violation(format_args!(
                "{} took {:?}, past its deadline",
                WAITS[op],
                started.elapsed()
            ));
        }
    }

    /// Stays a random moment (up to a few microseconds) inside a critical
    /// section, so that kills land there too.
    fn dwell(&mut self) {
        self.rng = xorshift(self.rng);
        for _ in 0..self.rng % 4096 {
            std::hint::spin_loop();
        }
    }

    fn ack(&self, field: Field) {
        self.shared
            .slot(self.slot, field)
            .fetch_add(1, Ordering::Release);
    }

    fn step(&mut self, op: usize) {
        let s = self.shared;
        match op {
            0 => self.value_increment(),
            1 => {
                s.atomic.atomic().fetch_add(1, Ordering::Relaxed);
                self.ack(Field::AckAtomic);
            }
            2 => self.array_stripe(),
            3 => self.exclusive_lock(),
            4 => self.exclusive_rlock(),
            5 => self.event(),
            6 => self.semaphore(),
            7 => self.condition(),
            8 => self.barrier(),
            9 => self.queue_put(),
            10 => match s.dict.increment(&"n".into(), 1) {
                Ok(_) => self.ack(Field::AckDict),
                Err(e) => s.violation(format_args!("manager dict increment: {e}")),
            },
            11 => match s.list.append(self.incarnation) {
                Ok(()) => self.ack(Field::AckList),
                Err(e) => s.violation(format_args!("manager list append: {e}")),
            },
            _ => {
                // Objects this worker alone holds, a list nested in a dict:
                // freed when dropped, or by the server when a kill closes
                // the connection.
                let made = s.manager.list::<u64>().and_then(|l| {
                    l.append(self.incarnation)?;
                    let d = s.manager.dict::<u64, ListProxy<u64>>()?;
                    d.set(self.queue_seq, l)?;
                    d.get(&self.queue_seq)
                });
                match made {
                    Ok(Some(_)) => {}
                    Ok(None) => s.violation(format_args!("a nested list vanished from its dict")),
                    Err(e) => s.violation(format_args!("manager objects: {e}")),
                }
            }
        }
    }

    fn value_increment(&mut self) {
        let s = self.shared;
        let Some((mut guard, died)) = acquired(s, "value lock", s.counter.lock_timeout(OP_TIMEOUT))
        else {
            return;
        };
        // One u64 store cannot be torn: the dead owner's increment is in or
        // out as a whole; nothing to repair.
        if died {
            consistent(s, multiproc::cell::ValueGuard::make_consistent(&guard));
        }
        self.dwell();
        *guard += 1;
        drop(guard);
        self.ack(Field::AckCounter);
    }

    fn array_stripe(&mut self) {
        let s = self.shared;
        let Some((mut guard, died)) = acquired(s, "array lock", s.array.lock_timeout(OP_TIMEOUT))
        else {
            return;
        };
        let first = guard[0];
        if guard.iter().any(|&x| x != first) {
            if died {
                // The dead owner was mid-write: repair.
                guard.fill(first);
            } else {
                s.violation(format_args!("a torn array without a dead owner"));
            }
        }
        if died {
            consistent(s, multiproc::cell::ArrayGuard::make_consistent(&guard));
        }
        // Half the stripe, a pause, the other half: a kill in the pause
        // leaves it torn for the next owner to repair.
        let (a, b) = guard.split_at_mut(STRIPE / 2);
        a.fill(first + 1);
        self.dwell();
        b.fill(first + 1);
    }

    /// Inside a critical section: the witness must be empty on entry (or
    /// left by a dead owner) and still ours on exit.
    fn witness(&mut self, which: usize, died: bool) {
        let s = self.shared;
        let w = s.witness.atomic(which).expect("two witnesses");
        let me = std::process::id();
        let before = w.swap(me, Ordering::Relaxed);
        if before != 0 && !died {
            s.violation(format_args!(
                "{} held by {before} and {me} at once",
                WAITS[3 + which]
            ));
        }
        self.dwell();
        if w.swap(0, Ordering::Relaxed) != me {
            s.violation(format_args!("{} entered while held", WAITS[3 + which]));
        }
    }

    fn exclusive_lock(&mut self) {
        let s = self.shared;
        if let Some((guard, died)) = acquired(s, "lock", s.lock.lock_timeout(OP_TIMEOUT)) {
            self.witness(0, died);
            if died {
                consistent(s, multiproc::sync::LockGuard::make_consistent(&guard));
            }
        }
    }

    fn exclusive_rlock(&mut self) {
        let s = self.shared;
        let Some((outer, died)) = acquired(s, "rlock", s.rlock.lock_timeout(OP_TIMEOUT)) else {
            return;
        };
        if died {
            consistent(s, multiproc::sync::RLockGuard::make_consistent(&outer));
        }
        // Re-entered by its owner: never blocks.
        match s.rlock.try_lock() {
            Ok(_inner) => self.witness(1, died),
            Err(e) => s.violation(format_args!("rlock not re-entrant: {e}")),
        }
        drop(outer);
    }

    fn event(&mut self) {
        let s = self.shared;
        match self.rng % 3 {
            0 => s.event.set(),
            1 => s.event.clear(),
            _ => {
                let _ = s.event.wait_timeout(Duration::from_millis(self.rng % 5));
            }
        }
    }

    fn semaphore(&mut self) {
        let s = self.shared;
        if !s.semaphore.acquire_timeout(OP_TIMEOUT) {
            return;
        }
        let bit = 1u64 << self.slot;
        let held = (s.permits.atomic().fetch_or(bit, Ordering::AcqRel) | bit).count_ones();
        if held > PERMITS {
            s.violation(format_args!("{held} holders of a semaphore of {PERMITS}"));
        }
        self.dwell();
        s.permits.atomic().fetch_and(!bit, Ordering::AcqRel);
        if let Err(e) = s.semaphore.release() {
            s.violation(format_args!("semaphore release: {e}"));
        }
    }

    fn condition(&self) {
        let s = self.shared;
        let Some((mut guard, died)) =
            acquired(s, "condition", s.condition.lock_timeout(OP_TIMEOUT))
        else {
            return;
        };
        if died {
            consistent(s, multiproc::sync::ConditionGuard::make_consistent(&guard));
        }
        let seq = s.condition_seq.atomic().fetch_add(1, Ordering::Relaxed);
        guard.notify_all();
        // Another worker's notify (or the timeout) ends this wait.
        let waited = guard.wait_for(
            || s.condition_seq.atomic().load(Ordering::Relaxed) > seq + 1,
            Some(Duration::from_millis(5)),
        );
        match waited {
            Ok(_) => {}
            // Another process died holding the lock while this one waited:
            // the guard holds it again; the sequence needs no repair.
            Err(Error::OwnerDied) => {
                s.recovered();
                consistent(s, multiproc::sync::ConditionGuard::make_consistent(&guard));
            }
            Err(e) => s.violation(format_args!("condition wait: {e}")),
        }
    }

    fn barrier(&self) {
        let s = self.shared;
        match s.barrier.wait_timeout(Duration::from_millis(10)) {
            Ok(_) => {}
            // A timeout or a dead party breaks it: whoever sees that resets.
            Err(Error::BrokenBarrier | Error::Timeout) => {
                let _ = s.barrier.reset();
            }
            Err(e) => s.violation(format_args!("barrier wait: {e}")),
        }
    }

    fn queue_put(&mut self) {
        let s = self.shared;
        let item = Item {
            incarnation: self.incarnation,
            seq: self.queue_seq,
            payload: payload(self.incarnation, self.queue_seq),
        };
        match s.queue.put_timeout(item, OP_TIMEOUT) {
            Ok(()) => {
                self.queue_seq += 1;
                self.ack(Field::AckQueue);
            }
            Err(multiproc::queue::PutError::Timeout(_)) => {}
            Err(e) => s.violation(format_args!("queue put: {e}")),
        }
    }
}

fn consistent(s: &Shared, r: multiproc::Result<()>) {
    if let Err(e) = r {
        s.violation(format_args!("make_consistent: {e}"));
    }
}

/// The guard of a lock a worker tried to take, and whether its owner had
/// died (counted as a recovery; the caller repairs and makes it
/// consistent). `None` if it was not taken: a timeout is allowed, anything
/// else (not recoverable, an OS error) is a violation.
fn acquired<G>(s: &Shared, what: &str, r: multiproc::LockResult<G>) -> Option<(G, bool)> {
    match r {
        Ok(g) => Some((g, false)),
        Err(LockError::OwnerDied(g)) => {
            s.recovered();
            Some((g, true))
        }
        Err(LockError::Timeout) => None,
        Err(e) => {
            s.violation(format_args!("{what}: {e}"));
            None
        }
    }
}

/// The supervisor's side of the queue: takes every item and checks it,
/// counting the items of each producer incarnation in `delivered` (they
/// must arrive numbered 0, 1, 2, ...).
fn collect(
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

/// The supervisor's record of one slot.
struct Slot {
    process: Process<'static>,
    incarnation: u64,
    stuck_reported: bool,
}

pub fn run(options: &Options) -> multiproc::Result<()> {
    let workers = options
        .workers
        .unwrap_or_else(|| (2 * multiproc::cpu_count()).max(4))
        .clamp(1, 64);
    let shared = Arc::new(Shared::new(workers)?);
    let next_incarnation = AtomicU64::new(0);
    let start = |slot: usize| -> multiproc::Result<Slot> {
        let incarnation = next_incarnation.fetch_add(1, Ordering::Relaxed);
        shared
            .slot(slot, Field::AckQueue)
            .store(0, Ordering::Relaxed);
        shared
            .slot(slot, Field::WaitSince)
            .store(0, Ordering::Relaxed);
        let s = shared.clone();
        let mut process = Process::new(move || {
            Worker {
                shared: &s,
                slot,
                incarnation,
                rng: xorshift(now_ns() ^ (incarnation << 20)),
                queue_seq: 0,
            }
            .run()
        })
        .with_name(format!("soak-{slot}"));
        process.start()?;
        Ok(Slot {
            process,
            incarnation,
            stuck_reported: false,
        })
    };
    // Each incarnation's accepted queue items, once it has ended.
    let mut acked_items: HashMap<u64, u64> = HashMap::new();
    let mut kills = 0u64;
    let mut slots = (0..workers)
        .map(&start)
        .collect::<multiproc::Result<Vec<_>>>()?;

    let delivered = Mutex::new(HashMap::<u64, u64>::new());
    let done = AtomicBool::new(false);
    let began = Instant::now();
    let run_for = Duration::from_secs(options.seconds);
    println!(
        "soak: {workers} workers for {} s, a kill every ~{} ms",
        options.seconds, options.kill_every_ms
    );
    let collected = std::thread::scope(|scope| -> multiproc::Result<()> {
        let collector = scope.spawn(|| collect(&shared, &delivered, &done));
        let mut rng = xorshift(now_ns());
        let mut shown = 0;
        while began.elapsed() < run_for {
            rng = xorshift(rng);
            // The chaos pace: jittered around the mean.
            std::thread::sleep(Duration::from_millis(rng % (2 * options.kill_every_ms + 1)));
            let victim = (rng >> 8) as usize % workers;
            let old = &slots[victim];
            old.process.kill()?;
            old.process.join()?;
            kills += 1;
            release_permit(&shared, victim)?;
            acked_items.insert(
                old.incarnation,
                shared.slot(victim, Field::AckQueue).load(Ordering::Acquire),
            );
            slots[victim] = start(victim)?;
            check_stuck(&shared, &mut slots);
            let secs = began.elapsed().as_secs();
            if secs >= shown + 5 {
                shown = secs;
                println!(
                    "  {secs:>4} s: {kills} kills, {} ops, {} violations",
                    total(&shared, Field::Ops),
                    shared.violations.get()
                );
            }
        }
        shared.stop.set(1);
        for (slot, s) in slots.iter().enumerate() {
            match s.process.join_timeout(OP_TIMEOUT + SLACK)? {
                Some(0) => {}
                Some(code) => shared.violation(format_args!("worker {slot} exited with {code}")),
                None => {
                    let what = shared.slot(slot, Field::WaitWhat).load(Ordering::Relaxed);
                    shared.violation(format_args!(
                        "worker {slot} did not stop (waiting on {})",
                        WAITS[what as usize % WAITS.len()]
                    ));
                    s.process.kill()?;
                    s.process.join()?;
                    kills += 1;
                }
            }
            acked_items.insert(
                s.incarnation,
                shared.slot(slot, Field::AckQueue).load(Ordering::Acquire),
            );
        }
        done.store(true, Ordering::Release);
        collector.join().expect("the collector does not panic")
    });
    collected?;
    let elapsed = began.elapsed();
    let phase = (run_for / 5).max(Duration::from_secs(1));
    let (rounds, condition_kills) = condition_phase(&shared, phase)?;
    kills += condition_kills;
    println!("condition phase: {rounds} rounds, {condition_kills} waiters killed");
    let items = queue_phase(&shared, phase)?;
    println!("queue observer phase: {items} items");
    check_counts(
        &shared,
        kills,
        &acked_items,
        &delivered.into_inner().unwrap_or_else(|p| p.into_inner()),
    )?;
    let ops = total(&shared, Field::Ops);
    println!(
        "operations: {ops} ({:.0}/s)",
        ops as f64 / elapsed.as_secs_f64()
    );
    println!("kills survived: {kills}");
    println!("owner-died recoveries: {}", shared.recoveries.get());
    let violations = shared.violations.get();
    println!("violations: {violations}");
    if violations > 0 {
        return Err(Error::InvalidArgument(format!(
            "{violations} invariant violations (see the VIOLATION lines above)"
        )));
    }
    Ok(())
}

/// Gives back the permit a killed worker held (if the kill came between
/// taking it and recording it, the permit is lost: never counted twice).
fn release_permit(shared: &Shared, slot: usize) -> multiproc::Result<()> {
    let bit = 1u64 << slot;
    if shared.permits.atomic().fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
        shared.semaphore.release()?;
    }
    Ok(())
}

/// Reports each worker that has waited past its deadline (once per wait).
fn check_stuck(shared: &Shared, slots: &mut [Slot]) {
    let now = now_ns();
    for (i, slot) in slots.iter_mut().enumerate() {
        let since = shared.slot(i, Field::WaitSince).load(Ordering::Acquire);
        let stuck =
            since != 0 && now.saturating_sub(since) > (OP_TIMEOUT + SLACK).as_nanos() as u64;
        if stuck && !slot.stuck_reported {
            let what = shared.slot(i, Field::WaitWhat).load(Ordering::Relaxed) as usize;
            shared.violation(format_args!(
                "worker {i} stuck for {:?} on {}",
                Duration::from_nanos(now - since),
                WAITS[what % WAITS.len()]
            ));
        }
        slot.stuck_reported = stuck;
    }
}

fn total(shared: &Shared, field: Field) -> u64 {
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
fn check_counts(
    shared: &Shared,
    kills: u64,
    acked_items: &HashMap<u64, u64>,
    delivered: &HashMap<u64, u64>,
) -> multiproc::Result<()> {
    let counter = match shared.counter.lock() {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => *g,
        Err(e) => return Err(Error::InvalidArgument(format!("the locked Value: {e}"))),
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

/// A started process running `f`.
fn started(f: impl FnOnce() + Send + 'static) -> multiproc::Result<Process<'static>> {
    let mut p = Process::new(f);
    p.start()?;
    Ok(p)
}

/// Waiters of one round of the condition phase.
const ROUND_WAITERS: u32 = 4;

/// Rounds on one condition: `ROUND_WAITERS` processes wait, some are
/// killed, then a `notify(n)` and a `notify_all`. Each waiter records
/// which of the two woke it (the generation the supervisor set under the
/// lock), and each must have woken exactly as many as were alive, up to n.
/// The dead of one round are still in the condition when the next begins.
/// Returns the rounds and the kills.
fn condition_phase(shared: &Arc<Shared>, length: Duration) -> multiproc::Result<(u64, u64)> {
    let cond = Condition::new()?;
    let sleeping = Semaphore::new(0)?;
    let generation = RawValue::new(0u32)?;
    // Waiters of this round woken by [the notify(n), the notify_all].
    let woken = RawArray::<u32>::new(2)?;
    let began = Instant::now();
    let mut rng = xorshift(now_ns());
    let (mut rounds, mut kills) = (0, 0);
    while began.elapsed() < length {
        woken.atomic(0)?.store(0, Ordering::Relaxed);
        woken.atomic(1)?.store(0, Ordering::Relaxed);
        let waiters = (0..ROUND_WAITERS)
            .map(|_| {
                let (s, cond, sleeping) = (shared.clone(), cond.clone(), sleeping.clone());
                let (generation, woken) = (generation.clone(), woken.clone());
                started(move || {
                    let mut g = match cond.lock() {
                        Ok(g) => g,
                        Err(e) => return s.violation(format_args!("condition lock: {e}")),
                    };
                    if let Err(e) = sleeping.release() {
                        return s.violation(format_args!("semaphore release: {e}"));
                    }
                    match g.wait_timeout(OP_TIMEOUT + SLACK) {
                        Ok(true) => {
                            let gen = generation.get() as usize;
                            if let Ok(w) = woken.atomic(gen.min(1)) {
                                w.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(false) => {
                            s.violation(format_args!("a live condition waiter was never notified"))
                        }
                        Err(e) => s.violation(format_args!("condition wait: {e}")),
                    }
                })
            })
            .collect::<multiproc::Result<Vec<_>>>()?;
        for _ in 0..ROUND_WAITERS {
            if !sleeping.acquire_timeout(OP_TIMEOUT + SLACK) {
                shared.violation(format_args!("a condition waiter did not start"));
            }
        }
        // Once the lock is free again, every waiter is inside `wait`.
        drop(cond.lock_timeout(OP_TIMEOUT + SLACK)?);
        rng = xorshift(rng);
        let dead = (rng % u64::from(ROUND_WAITERS)) as usize;
        // Half the time the notify comes while the killed may still be
        // dying: a notification chosen for one of them must pass on.
        let dying = rng & (1 << 20) != 0;
        for p in &waiters[..dead] {
            p.kill()?;
            if !dying {
                p.join()?;
            }
        }
        kills += dead as u64;
        let live = ROUND_WAITERS - dead as u32;
        let n = 1 + ((rng >> 8) % u64::from(ROUND_WAITERS)) as u32;
        let expected = [n.min(live), live - n.min(live)];
        {
            let g = cond.lock_timeout(OP_TIMEOUT + SLACK)?;
            generation.set(0);
            g.notify(n);
        }
        if dying {
            for p in &waiters[..dead] {
                p.join()?;
            }
        }
        let deadline = Instant::now() + OP_TIMEOUT + SLACK;
        while woken.atomic(0)?.load(Ordering::Relaxed) < expected[0] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        {
            let g = cond.lock_timeout(OP_TIMEOUT + SLACK)?;
            generation.set(1);
            g.notify_all();
        }
        for p in &waiters[dead..] {
            match p.join_timeout(OP_TIMEOUT + SLACK)? {
                Some(0) => {}
                other => shared.violation(format_args!("a condition waiter ended with {other:?}")),
            }
        }
        let got = [woken.get(0)?, woken.get(1)?];
        if got != expected {
            shared.violation(format_args!(
                "notify({n}) with {live} live and {dead} killed waiters woke {} (then notify_all {}), expected {expected:?}",
                got[0], got[1]
            ));
        }
        rounds += 1;
    }
    Ok((rounds, kills))
}

/// Items one producer of the queue phase puts at most.
const PHASE_ITEMS: usize = 1 << 20;

/// Producers, consumers and processes that only look at `len()` and
/// `is_full()` on a small ring, beside processes that only burn CPU, so
/// that every reader is descheduled mid-read now and then. Nothing is
/// killed: a `Corrupt` error or an impossible length is a violation, and
/// every item put is delivered exactly once. Returns the items.
fn queue_phase(shared: &Arc<Shared>, length: Duration) -> multiproc::Result<u64> {
    const PRODUCERS: usize = 4;
    let queue = Queue::<(u32, u32, Vec<u8>)>::with_capacity(0, 256)?;
    let stop = RawValue::new(0u32)?;
    let put = RawArray::<u32>::new(PRODUCERS)?;
    let seen = RawArray::<u8>::new(PRODUCERS * PHASE_ITEMS)?;
    let mut busy = Vec::new();
    for p in 0..PRODUCERS {
        let (s, queue, stop, put) = (shared.clone(), queue.clone(), stop.clone(), put.clone());
        busy.push(started(move || {
            let Ok(next) = put.atomic(p) else { return };
            while stop.get() == 0 && (next.load(Ordering::Relaxed) as usize) < PHASE_ITEMS {
                let seq = next.load(Ordering::Relaxed);
                match queue.put((p as u32, seq, vec![seq as u8; seq as usize % 48])) {
                    Ok(()) => next.store(seq + 1, Ordering::Relaxed),
                    Err(e) => return s.violation(format_args!("queue phase put: {e}")),
                }
            }
        })?);
    }
    let max_items = (queue.max_item_size() + 4) / 4;
    for _ in 0..2 {
        let (s, queue, stop) = (shared.clone(), queue.clone(), stop.clone());
        busy.push(started(move || {
            while stop.get() == 0 {
                let len = queue.len();
                if len > max_items {
                    s.violation(format_args!("a 256-byte queue said it held {len} items"));
                }
                std::hint::black_box(queue.is_full());
            }
        })?);
    }
    for _ in 0..4 {
        let stop = stop.clone();
        busy.push(started(move || {
            while stop.get() == 0 {
                std::hint::spin_loop();
            }
        })?);
    }
    let consumers = (0..3)
        .map(|_| {
            let (s, queue, seen) = (shared.clone(), queue.clone(), seen.clone());
            started(move || loop {
                // No wait: every get reads both ends without a lock first.
                match queue.get_timeout(Duration::ZERO) {
                    Ok((p, seq, _)) => {
                        let at = p as usize * PHASE_ITEMS + seq as usize;
                        if let Ok(n) = seen.atomic(at) {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(Error::Timeout) => {}
                    Err(Error::Closed) => return,
                    Err(e) => return s.violation(format_args!("queue phase get: {e}")),
                }
            })
        })
        .collect::<multiproc::Result<Vec<_>>>()?;
    std::thread::sleep(length);
    stop.set(1);
    for p in &busy {
        if p.join_timeout(OP_TIMEOUT + SLACK)? != Some(0) {
            shared.violation(format_args!("a queue phase process did not stop"));
            p.kill()?;
            p.join()?;
        }
    }
    queue.close()?;
    for p in &consumers {
        if p.join_timeout(OP_TIMEOUT + SLACK)? != Some(0) {
            shared.violation(format_args!("a queue phase consumer did not stop"));
            p.kill()?;
            p.join()?;
        }
    }
    let (put, seen) = (put.read(..)?, seen.read(..)?);
    let mut items = 0;
    for (p, &n) in put.iter().enumerate() {
        let mine = &seen[p * PHASE_ITEMS..(p + 1) * PHASE_ITEMS];
        let wrong = mine
            .iter()
            .enumerate()
            .filter(|&(seq, &got)| got != u8::from(seq < n as usize))
            .count();
        if wrong > 0 {
            shared.violation(format_args!(
                "queue phase: {wrong} of producer {p}'s items not delivered exactly once"
            ));
        }
        items += u64::from(n);
    }
    Ok(items)
}
