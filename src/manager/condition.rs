//! The server's `Condition` (CPython's `SyncManager` typeid, a
//! `threading.Condition`): its lock, and the waits it has not yet
//! notified. The lock is its own `RLock`, or a `Lock` or an `RLock` of the
//! object table that other proxies use too (`m.Condition(m.Lock())`):
//! `objects` finds it there and parks the calls that wait.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::protocol::{Exception, Id};
use super::queue::Args;
use super::sync::{self, Sync};
use super::PyValue;

/// The methods a `ConditionProxy` calls (`wait_for`, `__enter__` and
/// `__exit__` are its own, calling these).
pub(super) const EXPOSED: &[&str] = &["acquire", "release", "wait", "notify", "notify_all"];

/// A condition's lock.
pub(super) enum Lock {
    /// Its own: an `RLock` made with it (`m.Condition()`).
    Own(Box<Sync>),
    /// A `Lock` (else an `RLock`) of the object table, of which it holds
    /// a reference.
    Shared { id: Id, rlock: bool },
}

/// A `threading.Condition`.
pub(super) struct Condition {
    pub(super) lock: Lock,
    /// The tickets of the waits not notified yet, oldest first.
    waiting: VecDeque<u64>,
    /// The tickets notified whose waits have not yet gone on.
    notified: HashSet<u64>,
    /// The next wait's ticket.
    next: u64,
}

/// A Condition's `lock` argument: `None`, or what a proxy of a `Lock` or
/// an `RLock` decodes to in its `create` request (its typeid and ident).
pub(super) enum LockArg {
    Own,
    Shared { typeid: String, ident: String },
}

impl Condition {
    /// The lock argument of `create('Condition', lock=None)`: what else is
    /// given fails as `threading.Condition(lock)` does.
    pub(super) fn lock_arg(
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
    ) -> Result<LockArg, Exception> {
        let lock = Args::of("Condition", "__init__", args, kwds)
            .bind(&["lock"], 0)?
            .pop()
            .flatten()
            .unwrap_or(PyValue::None);
        let shared = super::pickle::SHARED_LOCK;
        match lock {
            PyValue::None => Ok(LockArg::Own),
            PyValue::Object(o) if o.is(shared.0, shared.1) => match &o.args[..] {
                [PyValue::Str(typeid), PyValue::Str(ident)] => Ok(LockArg::Shared {
                    typeid: typeid.clone(),
                    ident: ident.clone(),
                }),
                _ => Err(no_acquire("object")),
            },
            PyValue::Proxy(r) => Err(no_acquire(r.kind.proxy_name())),
            other => Err(no_acquire(other.type_name())),
        }
    }

    /// A condition over `lock`.
    pub(super) fn new(lock: Lock) -> Condition {
        Condition {
            lock,
            waiting: VecDeque::new(),
            notified: HashSet::new(),
            next: 0,
        }
    }

    /// Its own lock, if it has one.
    pub(super) fn own_lock(&mut self) -> Option<&mut Sync> {
        match &mut self.lock {
            Lock::Own(lock) => Some(lock),
            Lock::Shared { .. } => None,
        }
    }

    /// A new wait's ticket, the newest waiting.
    pub(super) fn enqueue(&mut self) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.waiting.push_back(ticket);
        ticket
    }

    /// How many waits are not notified yet.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Wakes the oldest `n` waits not notified yet; whether it woke any.
    pub(super) fn wake(&mut self, n: usize) -> bool {
        let n = n.min(self.waiting.len());
        self.notified.extend(self.waiting.drain(..n));
        n > 0
    }

    /// Whether the wait of `ticket` was notified (it is then no longer
    /// waiting); if not and `timed_out`, it no longer waits either.
    pub(super) fn woken(&mut self, ticket: u64, timed_out: bool) -> Option<bool> {
        if self.notified.remove(&ticket) {
            return Some(true);
        }
        if timed_out {
            self.waiting.retain(|&t| t != ticket);
            return Some(false);
        }
        None
    }

    /// Forgets the wait of `ticket`, whose connection ended; a
    /// notification it had and did not take goes to the oldest wait not
    /// notified yet.
    pub(super) fn forget(&mut self, ticket: u64) {
        self.waiting.retain(|&t| t != ticket);
        if self.notified.remove(&ticket) {
            self.pass_on();
        }
    }

    /// Gives a notification that a wait whose connection ended took (and
    /// had still to take the lock again) to the oldest wait not notified
    /// yet, if there is one.
    pub(super) fn pass_on(&mut self) {
        self.wake(1);
    }

    /// Python's `repr` of it, its lock's being `lock`.
    pub(super) fn repr(&self, lock: &str) -> String {
        format!("<Condition({lock}, {})>", self.waiting.len())
    }

    /// The lock's class, as a copy's refusal names it.
    pub(super) fn lock_class(&self) -> &'static str {
        match &self.lock {
            Lock::Shared { rlock: false, .. } => "_thread.lock",
            _ => "_thread.RLock",
        }
    }
}

/// `wait(timeout=None)` of connection `peer` on a condition whose lock is
/// `lock`: refused if `peer` does not own it (a `Lock`: nobody holds it,
/// as CPython's `_is_owned` sees one); else the lock is released, whatever
/// its count, and the call waits (`batch`: nothing waits, as a wait of no
/// time): how many times it released the lock and for how long at most
/// (`None`, as long as it takes), or `None` if it does not wait (it took
/// the lock again at once, and answers `False`).
#[allow(clippy::type_complexity)]
pub(super) fn wait(
    lock: &mut Sync,
    args: Vec<PyValue>,
    kwds: Vec<(PyValue, PyValue)>,
    peer: u64,
    batch: bool,
) -> Result<Option<(u64, Option<Duration>)>, Exception> {
    let timeout = Args::of("Condition", "wait", args, kwds)
        .bind(&["timeout"], 0)?
        .pop()
        .flatten();
    if !owns(lock, peer) {
        return Err(("RuntimeError", "cannot wait on un-acquired lock".into()));
    }
    let timeout = sync::condition_wait(timeout.as_ref())?;
    let count = lock.release_all();
    if batch || timeout.is_some_and(|t| t.is_zero()) {
        // Taken again at once: a `Lock` another connection held is this
        // one's now, as on CPython's server.
        lock.restore(count, peer);
        return Ok(None);
    }
    Ok(Some((count, timeout)))
}

/// How many waits `notify(n=1)` (`all`: `notify_all()`) of connection
/// `peer` wakes of the `waiting` a condition whose lock is `lock` has,
/// reading `n` as Python 3.13 does (`while waiters and n > 0`, one less
/// each time: 1.5 wakes two).
pub(super) fn to_wake(
    lock: &Sync,
    all: bool,
    args: Vec<PyValue>,
    kwds: Vec<(PyValue, PyValue)>,
    peer: u64,
    waiting: usize,
) -> Result<usize, Exception> {
    let n = if all {
        Args::of("Condition", "notify_all", args, kwds).bind(&[], 0)?;
        None
    } else {
        Args::of("Condition", "notify", args, kwds)
            .bind(&["n"], 0)?
            .pop()
            .flatten()
    };
    if !owns(lock, peer) {
        return Err(("RuntimeError", "cannot notify on un-acquired lock".into()));
    }
    if waiting == 0 {
        return Ok(0);
    }
    Ok(match n {
        None if all => waiting,
        None => 1,
        Some(n) => {
            let n = sync::compared(&n, ">")?;
            if n > 0.0 {
                n.ceil().min(waiting as f64) as usize
            } else {
                0
            }
        }
    })
}

/// Whether connection `peer` owns `lock` as CPython's `Condition` sees
/// it: an `RLock` it owns, a `Lock` anybody holds (its `_is_owned` only
/// tries to take it).
fn owns(lock: &Sync, peer: u64) -> bool {
    match lock {
        Sync::Lock(holder) => holder.is_some(),
        other => other.held_by(peer) > 0,
    }
}

/// `AttributeError` of a lock of type `type_name`, which has no `acquire`.
fn no_acquire(type_name: &str) -> Exception {
    (
        "AttributeError",
        format!("'{type_name}' object has no attribute 'acquire'"),
    )
}
