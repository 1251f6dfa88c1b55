//! [`Condition`]: a condition variable over a [`Lock`] or an [`RLock`].

use std::alloc::Layout;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::futex::{place_state, spin, Deadline};
use super::{Lock, RLock, RawLock};
use crate::error::{Error, LockError, LockResult, Result};
use crate::segment::{ElemType, ObjectKind, Placement, Region};
use crate::sys::{self, MutexKind, Wait, Woke};

/// The shared state. Every process inside `wait` is counted either in
/// `waiters` (not yet notified) or in `grants` (notified, not yet returned):
/// `notify(n)` moves at most n from one to the other, and each waiter leaves
/// by taking one back out. A waiter may take a grant only if a notify came
/// after it registered (`seq` moved), so a late waiter never steals the
/// wake-up of an earlier one. Nothing ever waits for a particular waiter, so
/// one that dies costs at most a stray grant, never a hang.
#[repr(C)]
struct CondState {
    /// Bumped by every notify: the futex word waiters sleep on.
    seq: AtomicU32,
    waiters: AtomicU32,
    grants: AtomicU32,
}

#[derive(Clone)]
enum CondLock {
    Lock(Lock),
    RLock(RLock),
}

impl CondLock {
    fn raw(&self) -> &RawLock {
        match self {
            CondLock::Lock(l) => l.raw(),
            CondLock::RLock(r) => r.raw(),
        }
    }
}

/// A condition variable shared between processes (Python's
/// `multiprocessing.Condition`), over a [`Lock`] or an [`RLock`].
///
/// [`lock`](Condition::lock) returns a [`ConditionGuard`], through which the
/// holder waits and notifies. A waiter returning from a wait holds the lock
/// again. The data the condition is about lives elsewhere in shared memory
/// (a [`RawValue`](crate::RawValue), say), protected by this lock.
///
/// # Example
/// ```
/// use std::sync::atomic::Ordering;
/// use multiproc::{sync::Condition, Process, RawValue};
/// let cond = Condition::new()?;
/// let ready = RawValue::new(0u32)?;
/// let (their_cond, their_ready) = (cond.clone(), ready.clone());
/// let mut child = Process::new(move || {
///     let g = their_cond.lock().expect("lock");
///     their_ready.atomic().store(1, Ordering::Relaxed);
///     g.notify_all();
/// });
/// child.start()?;
/// let mut g = cond.lock().expect("lock");
/// g.wait_for(|| ready.atomic().load(Ordering::Relaxed) == 1, None)?;
/// drop(g);
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: CondLock,
    state: Region,
}

impl Condition {
    /// A new anonymous condition with an [`RLock`] of its own (Python's default).
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Condition> {
        Self::with_rlock(&RLock::new()?)
    }

    /// A new anonymous condition over `lock`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn with_lock(lock: &Lock) -> Result<Condition> {
        Self::anonymous(CondLock::Lock(lock.clone()))
    }

    /// A new anonymous condition over `rlock`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn with_rlock(rlock: &RLock) -> Result<Condition> {
        Self::anonymous(CondLock::RLock(rlock.clone()))
    }

    fn anonymous(lock: CondLock) -> Result<Condition> {
        let layout = Layout::new::<CondState>();
        let (state, _) = place_state(
            Placement::Anonymous,
            ObjectKind::Condition,
            ElemType::none(),
            0,
            |_| Ok(layout),
            |_: *mut CondState| Ok(()),
        )?;
        Ok(Condition { lock, state })
    }

    /// Creates a named condition with an [`RLock`] of its own.
    ///
    /// # Errors
    /// As for [`Lock::create`](super::Lock::create).
    pub fn create(name: &str) -> Result<Condition> {
        Self::named(Placement::Create(name))
    }

    /// Opens a named condition.
    ///
    /// # Errors
    /// As for [`Lock::open`](super::Lock::open).
    pub fn open(name: &str) -> Result<Condition> {
        Self::named(Placement::Open(name))
    }

    /// Opens a named condition, creating it if it does not exist.
    ///
    /// # Errors
    /// As for [`Lock::create_or_open`](super::Lock::create_or_open).
    pub fn create_or_open(name: &str) -> Result<Condition> {
        Self::named(Placement::CreateOrOpen(name))
    }

    /// A named condition is one segment: its recursive lock, then its state.
    fn named(how: Placement<'_>) -> Result<Condition> {
        let (layout, offset) = RawLock::layout()
            .extend(Layout::new::<CondState>())
            .expect("two small fixed layouts");
        let (region, _) = place_state(
            how,
            ObjectKind::Condition,
            ElemType::none(),
            0,
            |_| Ok(layout),
            |at: *mut u8| {
                // SAFETY: fresh zeroed memory laid out as `layout`.
                unsafe { RawLock::init(at, MutexKind::Recursive) }
            },
        )?;
        Ok(Condition {
            lock: CondLock::RLock(RLock::from_raw(RawLock::from_region(region.clone()))),
            // SAFETY: `offset` is inside the segment's data.
            state: unsafe { region.sub(offset) },
        })
    }

    fn shared(&self) -> &CondState {
        // SAFETY: the region holds a CondState (zeroed is valid) while
        // `self` lives; all its fields are atomics.
        unsafe { &*self.state.as_ptr::<CondState>() }
    }

    /// Takes the condition's lock.
    ///
    /// # Errors
    /// As for [`Lock::lock`](super::Lock::lock).
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        self.lock_with(Wait::Forever)
    }

    /// Takes the condition's lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// As for [`Lock::lock_timeout`](super::Lock::lock_timeout).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ConditionGuard<'_>> {
        self.lock_with(Wait::timeout(timeout))
    }

    fn lock_with(&self, wait: Wait) -> LockResult<ConditionGuard<'_>> {
        self.lock.raw().acquire(wait, || ConditionGuard {
            cond: self,
            _not_send: PhantomData,
        })
    }

    fn take_grant(&self) -> bool {
        take_one(&self.shared().grants)
    }
}

/// Decrements `n` if it is positive; whether it did.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condition { .. }")
    }
}

/// The lock of a [`Condition`], held; waits and notifies go through it.
#[must_use = "if unused the lock is released at once"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    _not_send: PhantomData<*const ()>,
}

impl ConditionGuard<'_> {
    /// Releases the lock, waits for a notify, and takes the lock again.
    ///
    /// # Errors
    /// [`Error::OwnerDied`] if, while this process waited, another died
    /// holding the lock: this guard holds it again and the protected data may
    /// need repair before [`make_consistent`](ConditionGuard::make_consistent).
    pub fn wait(&mut self) -> Result<()> {
        self.wait_until(Deadline::NEVER).map(drop)
    }

    /// As [`wait`](ConditionGuard::wait), for at most `timeout`; `false` if
    /// it timed out without being notified.
    ///
    /// # Errors
    /// As for [`wait`](ConditionGuard::wait).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.wait_until(Deadline::after(Some(timeout)))
    }

    /// Waits until `predicate` holds, re-checking it after every notify, for
    /// at most `timeout` if given; returns the predicate's last value
    /// (Python's `wait_for`).
    ///
    /// # Errors
    /// As for [`wait`](ConditionGuard::wait).
    pub fn wait_for(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = Deadline::after(timeout);
        while !predicate() {
            if !self.wait_until(deadline)? && deadline.passed() {
                return Ok(predicate());
            }
        }
        Ok(true)
    }

    fn wait_until(&mut self, deadline: Deadline) -> Result<bool> {
        let cond = self.cond;
        let shared = cond.shared();
        // Registered, and at which sequence number, while holding the lock,
        // which every notify holds too: grants made before are not ours.
        shared.waiters.fetch_add(1, Ordering::AcqRel);
        let registered = shared.seq.load(Ordering::Acquire);
        let raw = cond.lock.raw();
        let depth = match &cond.lock {
            CondLock::Lock(_) => 1,
            CondLock::RLock(_) => raw.recursion(),
        };
        for _ in 0..depth {
            raw.unlock()?;
        }
        let notified = loop {
            // The sequence is read before the grants are checked, so a
            // notify that comes after the check changes it and the sleep
            // below returns at once.
            let seq = shared.seq.load(Ordering::Acquire);
            if seq != registered && cond.take_grant() {
                break true;
            }
            let changed = spin(&shared.seq, |v| v != seq).is_ok();
            if !changed && deadline.wait(&shared.seq, seq) == Woke::TimedOut {
                // Leave: by a grant if one is ours to take, else as a waiter.
                // One of the two is always there while this process is inside.
                break loop {
                    if shared.seq.load(Ordering::Acquire) != registered && cond.take_grant() {
                        break true;
                    }
                    if take_one(&shared.waiters) {
                        break false;
                    }
                };
            }
        };
        let mut owner_died = false;
        for _ in 0..depth {
            match raw.acquire(Wait::Forever, || ()) {
                Ok(()) => {}
                Err(LockError::OwnerDied(())) => owner_died = true,
                Err(e) => return Err(e.into()),
            }
        }
        if owner_died {
            return Err(Error::OwnerDied);
        }
        Ok(notified)
    }

    /// Wakes at most `n` of the processes waiting on the condition.
    pub fn notify(&self, n: u32) {
        let shared = self.cond.shared();
        let Ok(before) = shared
            .waiters
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w > 0).then(|| w - w.min(n))
            })
        else {
            return; // nobody waits: no system call
        };
        let k = before.min(n);
        shared.grants.fetch_add(k, Ordering::AcqRel);
        shared.seq.fetch_add(1, Ordering::AcqRel);
        sys::futex_wake(&shared.seq, k);
    }

    /// Wakes every process waiting on the condition.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    /// Marks the lock consistent after its previous owner died.
    ///
    /// # Errors
    /// Only on an OS failure.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        guard.cond.lock.raw().make_consistent()
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        let _ = self.cond.lock.raw().unlock();
    }
}

impl std::fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConditionGuard { .. }")
    }
}
