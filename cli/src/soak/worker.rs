//! A worker process: picks operations at random by [`MIX`] and checks,
//! from inside, what each one must guarantee even while other workers die.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::manager::ListProxy;
use multiproc::{Error, RecoverableLockError};

use super::{
    now_ns, payload, xorshift, Field, Item, Shared, MIX, OP_TIMEOUT, PERMITS, SLACK, STRIPE, WAITS,
};

/// One worker process's view: its slot, and the incarnation it is.
pub(super) struct Worker<'a> {
    pub(super) shared: &'a Shared,
    pub(super) slot: usize,
    pub(super) incarnation: u64,
    pub(super) rng: u64,
    pub(super) queue_seq: u64,
}

impl Worker<'_> {
    pub(super) fn run(mut self) {
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
        let Some((mut guard, died)) = acquired(
            s,
            "value lock",
            s.counter.lock_recovering_timeout(OP_TIMEOUT),
        ) else {
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
        let Some((mut guard, died)) =
            acquired(s, "array lock", s.array.lock_recovering_timeout(OP_TIMEOUT))
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
        if let Some((guard, died)) = acquired(s, "lock", s.lock.lock_recovering_timeout(OP_TIMEOUT))
        {
            self.witness(0, died);
            if died {
                consistent(s, multiproc::sync::LockGuard::make_consistent(&guard));
            }
        }
    }

    fn exclusive_rlock(&mut self) {
        let s = self.shared;
        let Some((outer, died)) = acquired(s, "rlock", s.rlock.lock_recovering_timeout(OP_TIMEOUT))
        else {
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
        let Some((mut guard, died)) = acquired(
            s,
            "condition",
            s.condition.lock_recovering_timeout(OP_TIMEOUT),
        ) else {
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
fn acquired<G>(
    s: &Shared,
    what: &str,
    r: multiproc::RecoverableLockResult<G>,
) -> Option<(G, bool)> {
    match r {
        Ok(g) => Some((g, false)),
        Err(RecoverableLockError::OwnerDied(g)) => {
            s.recovered();
            Some((g, true))
        }
        Err(RecoverableLockError::Timeout) => None,
        Err(e) => {
            s.violation(format_args!("{what}: {e}"));
            None
        }
    }
}
