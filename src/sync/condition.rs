//! [`Condition`]: a condition variable over a [`Lock`] or an [`RLock`].

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::futex::{wait_while, RECHECK};
use super::{Lock, RLock, RobustMutex};
use crate::error::{Error, LockResult, RecoverableLockError, RecoverableLockResult, Result};
use crate::segment::{shared_constructors, ObjectKind, Region, SharedObject};
use crate::sys::{self, Deadline, MutexKind, PthreadMutex};
use crate::waiter::{self, ProcessKey};

const MAX_WAITERS: usize = Condition::MAX_WAITERS;

/// A slot's state: nobody in it.
const FREE: u32 = 0;
/// The low two bits of a slot's state: its waiter waits to be notified
/// (and the bits above hold its ticket, see [`waiting`]).
const WAITING: u32 = 1;
/// The low two bits of a slot's state: a notify chose its waiter, which
/// has not left yet (and the bits above hold the notify's horizon, see
/// [`notified`]).
const NOTIFIED: u32 = 2;
/// The bits of a slot's state that say which state it is.
const STATE_BITS: u32 = 3;
/// Tickets count modulo 2^30, so that one fits beside the state bits.
const TICKET_MASK: u32 = (1 << 30) - 1;

/// The state of a slot whose waiter waits, with the ticket it drew on
/// arrival: a notify that compares and swaps the whole word can never
/// choose a later waiter that took the slot meanwhile.
fn waiting(ticket: u32) -> u32 {
    WAITING | (ticket & TICKET_MASK) << 2
}

/// The state of a slot whose waiter a notify chose, made when `horizon`
/// was the next ticket: the waiters it could have chosen instead are those
/// with earlier tickets.
fn notified(horizon: u32) -> u32 {
    NOTIFIED | (horizon & TICKET_MASK) << 2
}

/// How many tickets before `horizon` the waiter of `ticket` arrived.
fn age(ticket: u32, horizon: u32) -> u32 {
    horizon.wrapping_sub(ticket) & TICKET_MASK
}

/// Whether the waiter of `ticket` arrived before `horizon`.
fn before(ticket: u32, horizon: u32) -> bool {
    (1..=TICKET_MASK / 2).contains(&age(ticket, horizon))
}

/// One waiter's place: its state, and the futex word on which only its
/// own waiter sleeps, so a notify wakes exactly the waiters it chose.
#[repr(C)]
struct Slot {
    state: AtomicU32,
}

/// The shared state, followed by one robust mutex per slot.
///
/// Each waiter takes a slot and holds that slot's mutex for as long as it is
/// inside `wait`. A notify chooses among the waiters whose mutex a live
/// thread holds: the kernel marks the mutex of a thread that dies, so a
/// notification never goes to a waiter known dead, and since it goes to a
/// particular waiter it is never kept for a later one. A waiter that dies
/// after a notify chose it (killed an instant before, say) leaves its slot
/// notified: whoever finds it first (a notify, a new waiter, or a waiter
/// that looks every [`RECHECK`]) passes the notification on to the longest
/// waiting live waiter that the notify could have chosen instead, if there
/// is one, and frees the slot. Nothing ever waits for a particular waiter,
/// so one that dies can never hang anyone.
///
/// Slots are taken only under the condition's lock, which every wait and
/// notify holds; a slot's mutex decides who frees a dead waiter's slot.
#[repr(C)]
struct CondState {
    /// Slots not free: a notify with none skips the scan. A waiter killed
    /// between taking and freeing its slot leaves it too high, which costs
    /// a scan, never a lost notify.
    inside: AtomicU32,
    /// Order of arrival, so that notifies wake the longest waiting first.
    next_ticket: AtomicU32,
    slots: [Slot; MAX_WAITERS],
}

impl CondState {
    /// The state and its slots' mutexes, and where the mutexes start.
    fn layout() -> (Layout, usize) {
        Layout::new::<CondState>()
            .extend(Layout::array::<PthreadMutex>(MAX_WAITERS).expect("small"))
            .expect("small fixed layouts")
    }

    /// Initialises the slots' mutexes of a state at `at`.
    ///
    /// # Safety
    /// `at` points to fresh zeroed memory of `layout()` that no process uses yet.
    unsafe fn init(at: *mut u8) -> Result<()> {
        let (_, mutexes) = Self::layout();
        for i in 0..MAX_WAITERS {
            let m = mutexes + i * std::mem::size_of::<PthreadMutex>();
            // SAFETY: slot i's mutex, at offset `m`, lies inside the
            // `layout()` bytes at `at`.
            let slot = unsafe { at.add(m) };
            // SAFETY: zeroed, aligned memory for a mutex that no process
            // uses yet (per the caller).
            unsafe { RobustMutex::init(slot, MutexKind::ErrorCheck)? };
        }
        Ok(())
    }
}

#[derive(Clone)]
enum CondLock {
    Lock(Lock),
    RLock(RLock),
}

impl CondLock {
    fn mutex(&self) -> &RobustMutex {
        match self {
            CondLock::Lock(l) => l.mutex(),
            CondLock::RLock(r) => r.mutex(),
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
    /// The slots' mutexes.
    presence: Arc<[RobustMutex]>,
}

/// A condition made by itself (new or named) is one piece of memory: its
/// recursive lock, then its state.
impl SharedObject for Condition {
    type Args<'a> = ();
    const KIND: ObjectKind = ObjectKind::Condition;

    fn layout(_: u64) -> Result<Layout> {
        Ok(Self::whole_layout().0)
    }

    unsafe fn init(at: NonNull<u8>, (): ()) -> Result<()> {
        let (_, state) = Self::whole_layout();
        // Per the caller, `at` is fresh zeroed memory laid out as
        // `whole_layout()`, not yet shared.
        // SAFETY: the recursive mutex is at offset 0 of that memory.
        unsafe { RobustMutex::init(at.as_ptr(), MutexKind::Recursive)? };
        // SAFETY: `state` is an offset inside that memory.
        let state = unsafe { at.as_ptr().add(state) };
        // SAFETY: the state's `CondState::layout()` bytes from there are
        // fresh zeroed memory, inside the object.
        unsafe { CondState::init(state) }
    }

    unsafe fn from_region(region: Region, _: u64) -> std::result::Result<Self, String> {
        let (_, state) = Self::whole_layout();
        // Per the caller, `init` initialised the recursive mutex at the
        // start and the state at `state`, inside the region.
        // SAFETY: the recursive mutex is at the region's start.
        let mutex = unsafe { RobustMutex::from_region(region.clone()) };
        let lock = RLock::from_mutex(mutex);
        // SAFETY: `state` is an offset inside the region.
        let state = unsafe { region.sub(state) };
        // SAFETY: it holds a state initialised by `CondState::init`.
        Ok(unsafe { Self::from_parts(CondLock::RLock(lock), state) })
    }
}

shared_constructors! {
    impl[] Condition as "condition" {
        args() => (),
        made: " with an [`RLock`] of its own (Python's default)",
        errors: "",
        kept: "",
        anonymous: new,
    }
}

impl Condition {
    /// How many threads (of any processes) can wait on one condition at
    /// once; one more gets [`Error::TooManyWaiters`]. A waiter that died
    /// gives its place back.
    pub const MAX_WAITERS: usize = 128;

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

    /// A condition over a lock of another object: its state alone.
    fn anonymous(lock: CondLock) -> Result<Condition> {
        let state = Region::anonymous(CondState::layout().0)?;
        // SAFETY: a fresh zeroed block of `CondState::layout()`, ours alone.
        unsafe { CondState::init(state.as_ptr())? };
        // SAFETY: initialised just above.
        Ok(unsafe { Self::from_parts(lock, state) })
    }

    /// The memory of a condition with its own lock, and where its state starts.
    fn whole_layout() -> (Layout, usize) {
        RobustMutex::layout()
            .extend(CondState::layout().0)
            .expect("small fixed layouts")
    }

    /// The handle on a placed state.
    ///
    /// # Safety
    /// `state` holds a state initialised by [`CondState::init`].
    unsafe fn from_parts(lock: CondLock, state: Region) -> Condition {
        let (_, mutexes) = CondState::layout();
        let presence = (0..MAX_WAITERS)
            .map(|i| {
                let at = mutexes + i * std::mem::size_of::<PthreadMutex>();
                // SAFETY: slot i's mutex, at offset `at`, lies inside the
                // state's `CondState::layout()` bytes.
                let slot = unsafe { state.sub(at) };
                // SAFETY: it holds a mutex initialised by `CondState::init`
                // (per the caller).
                unsafe { RobustMutex::from_region(slot) }
            })
            .collect();
        Condition {
            lock,
            state,
            presence,
        }
    }

    fn shared(&self) -> &CondState {
        // SAFETY: the region holds a CondState (zeroed is valid) while
        // `self` lives; all its fields are atomics. The mutexes after it
        // are reached only through `presence`.
        unsafe { &*self.state.as_ptr::<CondState>() }
    }

    /// Takes a free slot for the calling thread, which holds the
    /// condition's lock, and holds the slot's mutex; the slot waits.
    /// Returns the slot and its waiting state.
    fn enter(&self) -> Result<(usize, u32)> {
        let shared = self.shared();
        let ticket = shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        for (i, slot) in shared.slots.iter().enumerate() {
            // A slot whose waiter died is free too: its mutex says so.
            let free = match slot.state.load(Ordering::Acquire) {
                FREE => true,
                _ => self.presence[i].owner().is_none(),
            };
            if !free {
                continue;
            }
            let was = match self.presence[i].acquire(Deadline::Now, || ()) {
                Ok(()) => slot.state.load(Ordering::Acquire),
                Err(RecoverableLockError::OwnerDied(())) => {
                    if let Err(e) = self.presence[i].make_consistent() {
                        let _ = self.presence[i].unlock();
                        return Err(e);
                    }
                    self.take_over(i)
                }
                // Its waiter is leaving (it frees the slot before its mutex).
                Err(_) => continue,
            };
            if was == FREE {
                shared.inside.fetch_add(1, Ordering::AcqRel);
            }
            let mine = waiting(ticket);
            slot.state.store(mine, Ordering::Release);
            return Ok((i, mine));
        }
        Err(Error::TooManyWaiters { limit: MAX_WAITERS })
    }

    /// Frees slot `i`, whose mutex the calling thread holds.
    fn leave(&self, i: usize) {
        let shared = self.shared();
        // Free before unlocking: a slot whose mutex is free but whose state
        // is not would look like a dead waiter's, or a leaver's.
        shared.slots[i].state.store(FREE, Ordering::Release);
        let was = shared.inside.fetch_sub(1, Ordering::AcqRel);
        let _ = self.presence[i].unlock();
        if was as usize >= MAX_WAITERS {
            // Every place was taken: async waiters may be waiting for one.
            sys::futex_wake(&shared.inside, u32::MAX);
        }
    }

    /// Frees slot `i` if its waiter died, passing on a notification it
    /// did not live to take.
    fn bury(&self, i: usize) {
        match self.presence[i].acquire(Deadline::Now, || ()) {
            Err(RecoverableLockError::OwnerDied(())) => {
                let _ = self.presence[i].make_consistent();
                if self.take_over(i) == FREE {
                    // It died leaving, after it freed its slot: it may
                    // have counted itself out of `inside` too. Counted
                    // out twice, `inside` could read 0 while a waiter
                    // waits, and a notify would skip it; left one too
                    // high, it costs a scan.
                    let _ = self.presence[i].unlock();
                } else {
                    self.leave(i);
                }
            }
            // Its waiter left between the caller's look and this one.
            Ok(()) => {
                let _ = self.presence[i].unlock();
            }
            // Someone else is burying it.
            Err(_) => {}
        }
    }

    /// Frees the slots of waiters that died (their mutex says so), passing
    /// on their notifications; `which` says which states to look at.
    fn bury_dead(&self, which: impl Fn(u32) -> bool) {
        for (i, slot) in self.shared().slots.iter().enumerate() {
            if which(slot.state.load(Ordering::Acquire)) && self.presence[i].owner().is_none() {
                self.bury(i);
            }
        }
    }

    /// Empties slot `i`, whose dead waiter's mutex the calling thread
    /// has just taken, passing on a notification it did not live to take;
    /// returns the state it was in. The slot is emptied first, so that a
    /// caller killed half way can lose that notification but never give
    /// it twice.
    fn take_over(&self, i: usize) -> u32 {
        let was = self.shared().slots[i].state.swap(FREE, Ordering::AcqRel);
        self.pass_on(was);
        was
    }

    /// Gives the notification of a dead waiter whose slot was in `state`
    /// (if it was notified) to the longest waiting live waiter that its
    /// notify could have chosen instead; nobody if there is none.
    fn pass_on(&self, state: u32) {
        if state & NOTIFIED == 0 {
            return;
        }
        let horizon = state >> 2;
        self.choose(1, horizon, |ticket| before(ticket, horizon), state);
    }

    /// Notifies up to `n` live waiters whose ticket is `eligible`, the
    /// longest waiting before `horizon` first, each with slot state `mark`.
    fn choose(&self, n: u32, horizon: u32, eligible: impl Fn(u32) -> bool, mark: u32) {
        let shared = self.shared();
        let mut live = [(0u32, 0usize, 0u32); MAX_WAITERS];
        let mut count = 0;
        for (i, slot) in shared.slots.iter().enumerate() {
            let state = slot.state.load(Ordering::Acquire);
            if state & STATE_BITS != WAITING || self.presence[i].owner().is_none() {
                continue;
            }
            let ticket = state >> 2;
            if eligible(ticket) {
                live[count] = (age(ticket, horizon), i, state);
                count += 1;
            }
        }
        let live = &mut live[..count];
        live.sort_unstable_by_key(|&(age, ..)| std::cmp::Reverse(age));
        let mut woken = 0;
        for &(_, i, waiting) in live.iter() {
            if woken == n {
                break;
            }
            let state = &shared.slots[i].state;
            // Fails only if that waiter timed out and left meanwhile (and
            // perhaps another came), or another thread chose it first.
            if state
                .compare_exchange(waiting, mark, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                sys::futex_wake(state, 1);
                woken += 1;
            }
        }
    }

    /// Takes the condition's lock.
    ///
    /// # Errors
    /// As for [`Lock::lock`](super::Lock::lock): an `OwnerDied` leaves the
    /// lock not recoverable; [`lock_recovering`](Condition::lock_recovering)
    /// hands over the guard instead.
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        Ok(self.lock_with(Deadline::Never)?)
    }

    /// Takes the condition's lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// As for [`Lock::lock_timeout`](super::Lock::lock_timeout).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ConditionGuard<'_>> {
        Ok(self.lock_with(Deadline::after(timeout))?)
    }

    /// Takes the condition's lock, handing over the guard if the previous
    /// owner died holding it.
    ///
    /// # Errors
    /// As for [`Lock::lock_recovering`](super::Lock::lock_recovering): on
    /// `OwnerDied` repair, then call [`ConditionGuard::make_consistent`].
    pub fn lock_recovering(&self) -> RecoverableLockResult<ConditionGuard<'_>> {
        self.lock_with(Deadline::Never)
    }

    /// As [`lock_recovering`](Condition::lock_recovering), waiting at most
    /// `timeout`.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock_recovering`](Condition::lock_recovering).
    pub fn lock_recovering_timeout(
        &self,
        timeout: Duration,
    ) -> RecoverableLockResult<ConditionGuard<'_>> {
        self.lock_with(Deadline::after(timeout))
    }

    /// Waits, without blocking the thread, until `predicate` holds, for at
    /// most `timeout` if given; returns the predicate's last value (the
    /// async form of [`ConditionGuard::wait_for`], for a task on any
    /// runtime).
    ///
    /// No guard goes in or comes out: a robust lock belongs to the thread
    /// that took it, and a task may move between threads at every
    /// `.await`. So, as Python's `asyncio.Condition.wait_for` does between
    /// its waits, this takes the condition's lock itself, on the polling
    /// thread and within one poll, each time it calls `predicate`, and
    /// releases it before it returns or suspends: `predicate` runs with
    /// the lock held (it may change the protected data, say take the item
    /// it waited for), and a notify that follows a change made under the
    /// lock is never missed. Taking the lock blocks the polling thread for
    /// as long as another holder keeps it, as [`lock`](Condition::lock)
    /// does; keep critical sections short.
    ///
    /// While it waits, the task's place among the waiters (one of
    /// [`MAX_WAITERS`](Condition::MAX_WAITERS)) is held for it by a
    /// keeper thread of its process, so a notify chooses it as it would a
    /// blocking waiter, and a process killed while its tasks wait leaves
    /// no place taken (its notifications go to other waiters). When every
    /// place is taken the task waits for one to come free instead of
    /// failing (woken when one does, and looking again at least every
    /// 100 ms for one whose waiter died); it is not a waiter
    /// meanwhile, which loses nothing, since it calls `predicate` again
    /// before it takes a place.
    ///
    /// Cancellation: a future dropped while it waits gives up its place;
    /// if a notify had chosen it already, the notification goes on to the
    /// longest waiting waiter that the notify could have chosen instead,
    /// as a dead waiter's does. A notification that ends the wait is
    /// consumed, whatever `predicate` then says (as in Python).
    ///
    /// # Errors
    /// [`Error::OwnerDied`] if a holder of the lock died: the lock is left
    /// not recoverable, as [`lock`](Condition::lock) leaves it.
    /// [`Error::InvalidArgument`] if the calling thread holds the lock
    /// already (through a [`ConditionGuard`]): the lock could never be
    /// released for a notifier. An error of the lock, or if this
    /// process's waiter or keeper thread cannot be started.
    pub async fn wait_for_async(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = Deadline::within(timeout);
        loop {
            let place = {
                let _held = self.hold_for_async()?;
                if predicate() {
                    return Ok(true);
                }
                if deadline.passed() {
                    return Ok(false);
                }
                // Before looking for a place: a place freed after this
                // changes it.
                let seen = self.shared().inside.load(Ordering::Acquire);
                // Taken while the lock is held, as a blocking waiter's.
                let cond = self.clone();
                match waiter::Keeper::take(move || cond.enter())? {
                    Ok((keeper, (i, mine))) => Ok(AsyncPlace {
                        cond: self.clone(),
                        keeper,
                        i,
                        mine,
                        consumed: false,
                    }),
                    Err(Error::TooManyWaiters { .. }) => Err(seen),
                    Err(e) => return Err(e),
                }
            };
            match place {
                Err(seen) => {
                    // Woken when a place comes free (see `leave`); looks
                    // again every `RECHECK` for one whose waiter died.
                    let inside = &self.shared().inside;
                    waiter::word(inside, deadline.capped(RECHECK), || {
                        if inside.load(Ordering::Acquire) == seen {
                            ControlFlow::Continue(seen)
                        } else {
                            ControlFlow::Break(())
                        }
                    })
                    .await?;
                }
                Ok(mut place) => {
                    let state = &self.shared().slots[place.i].state;
                    let mine = place.mine;
                    loop {
                        let woken = waiter::word(state, deadline.capped(RECHECK), || {
                            if state.load(Ordering::Acquire) == mine {
                                ControlFlow::Continue(mine)
                            } else {
                                ControlFlow::Break(())
                            }
                        })
                        .await?;
                        if woken.is_some() || state.load(Ordering::Acquire) != mine {
                            place.consumed = true;
                            break;
                        }
                        if deadline.passed() {
                            // Leaves unless a notify chose it first.
                            place.consumed = state
                                .compare_exchange(mine, FREE, Ordering::AcqRel, Ordering::Acquire)
                                .is_err();
                            break;
                        }
                        // A notification may have gone to a waiter that
                        // died before taking it, and be this one's now.
                        self.bury_dead(|s| s & NOTIFIED != 0);
                    }
                    // Given back by its keeper, as a job posted now: if
                    // the next place is taken on another keeper before it
                    // runs, that is another slot, and a full condition
                    // wakes this task when this one comes free.
                }
            }
        }
    }

    /// Takes the lock for one step of an async wait; released on drop.
    fn hold_for_async(&self) -> Result<AsyncHold<'_>> {
        let mutex = self.lock.mutex();
        match mutex.acquire(Deadline::Never, || ()) {
            Ok(()) => {}
            Err(RecoverableLockError::OwnerDied(())) => {
                let _ = mutex.unlock();
                return Err(Error::OwnerDied);
            }
            Err(e) => return Err(e.into()),
        }
        let hold = AsyncHold { cond: self };
        if let CondLock::RLock(_) = self.lock {
            if mutex.recursion()? > 1 {
                return Err(Error::InvalidArgument(
                    "wait_for_async by a thread that holds the condition's lock".into(),
                ));
            }
        }
        Ok(hold)
    }

    fn lock_with(&self, deadline: Deadline) -> RecoverableLockResult<ConditionGuard<'_>> {
        self.lock.mutex().acquire(deadline, || ConditionGuard {
            cond: self,
            process: ProcessKey::current(),
            _not_send: PhantomData,
        })
    }
}

/// The condition's lock, held by the polling thread for one step of an
/// async wait.
struct AsyncHold<'a> {
    cond: &'a Condition,
}

impl Drop for AsyncHold<'_> {
    fn drop(&mut self) {
        let _ = self.cond.lock.mutex().unlock();
    }
}

/// An async waiter's place: slot `i`, whose mutex a keeper thread of
/// this process holds. Dropping it has the keeper give the slot back,
/// passing on a notification that chose it unless the waiter took it
/// (`consumed`).
struct AsyncPlace {
    cond: Condition,
    /// The keeper thread that holds the slot's mutex.
    keeper: waiter::Keeper,
    i: usize,
    mine: u32,
    consumed: bool,
}

impl Drop for AsyncPlace {
    fn drop(&mut self) {
        let (cond, i, consumed) = (self.cond.clone(), self.i, self.consumed);
        // Nothing in a forked copy: the slot is the parent's. If the
        // keeper is gone (it never is while the process lives), the slot
        // stays taken until the process ends, which frees it.
        let _ = self.keeper.give_back(move || {
            if !consumed {
                cond.take_over(i);
            }
            cond.leave(i);
        });
    }
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
    /// The process that took the lock: a forked descendant's copy of the
    /// guard neither releases nor waits (which releases), even where the
    /// descendant got the pid (so the thread id) of that process once it
    /// died, and holds the lock itself.
    process: ProcessKey,
    _not_send: PhantomData<*const ()>,
}

impl ConditionGuard<'_> {
    /// Releases the lock, waits for a notify, and takes the lock again.
    ///
    /// # Errors
    /// [`Error::OwnerDied`] if, while this process waited, another died
    /// holding the lock: this guard holds it again and the protected data may
    /// need repair before [`make_consistent`](ConditionGuard::make_consistent).
    /// [`Error::TooManyWaiters`] at once if [`Condition::MAX_WAITERS`]
    /// threads wait already (the lock stays held). [`Error::NotOwner`] at
    /// once for a copy of the guard in a forked descendant.
    pub fn wait(&mut self) -> Result<()> {
        self.wait_until(Deadline::Never).map(drop)
    }

    /// As [`wait`](ConditionGuard::wait), for at most `timeout`; `false` if
    /// it timed out without being notified.
    ///
    /// # Errors
    /// As for [`wait`](ConditionGuard::wait).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.wait_until(Deadline::after(timeout))
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
        let deadline = Deadline::within(timeout);
        while !predicate() {
            // A spent timeout is no wait (Python's, and `wait_for_async`):
            // the lock stays held and no waiter's place is taken.
            if deadline.passed() {
                return Ok(false);
            }
            self.wait_until(deadline)?;
        }
        Ok(true)
    }

    fn wait_until(&mut self, deadline: Deadline) -> Result<bool> {
        if !self.process.is_current() {
            return Err(Error::NotOwner);
        }
        let cond = self.cond;
        let mutex = cond.lock.mutex();
        let depth = match &cond.lock {
            CondLock::Lock(_) => 1,
            CondLock::RLock(_) => mutex.recursion()?,
        };
        // In a slot while holding the lock, which every notify holds too:
        // a notify before this is not ours, every one after may choose us.
        let (i, mine) = cond.enter()?;
        let state = &cond.shared().slots[i].state;
        for _ in 0..depth {
            if let Err(e) = mutex.unlock() {
                cond.leave(i);
                return Err(e);
            }
        }
        let notified = loop {
            let chosen = || {
                if state.load(Ordering::Acquire) == mine {
                    ControlFlow::Continue(mine)
                } else {
                    ControlFlow::Break(())
                }
            };
            if wait_while(state, deadline.capped(RECHECK), |v| v != mine, chosen).is_some() {
                break true;
            }
            if state.load(Ordering::Acquire) != mine {
                break true;
            }
            if deadline.passed() {
                // Leave unless a notify chose this waiter first.
                break state
                    .compare_exchange(mine, FREE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err();
            }
            // A notification may have gone to a waiter that died before
            // taking it, and be this one's now.
            cond.bury_dead(|s| s & NOTIFIED != 0);
        };
        cond.leave(i);
        let mut owner_died = false;
        for _ in 0..depth {
            match mutex.acquire(Deadline::Never, || ()) {
                Ok(()) => {}
                Err(RecoverableLockError::OwnerDied(())) => owner_died = true,
                Err(e) => return Err(e.into()),
            }
        }
        if owner_died {
            return Err(Error::OwnerDied);
        }
        Ok(notified)
    }

    /// Wakes at most `n` of the processes waiting on the condition, those
    /// waiting longest first. Waiters that died are skipped (and their
    /// places freed).
    pub fn notify(&self, n: u32) {
        let cond = self.cond;
        let shared = cond.shared();
        if n == 0 || shared.inside.load(Ordering::Acquire) == 0 {
            return; // nobody waits: no scan, no system call
        }
        cond.bury_dead(|s| s != FREE);
        // Every waiter came before this notify.
        let horizon = shared.next_ticket.load(Ordering::Relaxed) & TICKET_MASK;
        cond.choose(n, horizon, |_| true, notified(horizon));
    }

    /// Wakes every process waiting on the condition.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    /// Marks the lock consistent after its previous owner died.
    ///
    /// # Errors
    /// Only on an OS failure; [`Error::NotOwner`] for a copy of the guard
    /// in a forked descendant.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        if !guard.process.is_current() {
            return Err(Error::NotOwner);
        }
        guard.cond.lock.mutex().make_consistent()
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if self.process.is_current() {
            let _ = self.cond.lock.mutex().unlock();
        }
    }
}

impl std::fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConditionGuard { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter killed in `leave`, after it freed its slot and counted
    /// itself out but before it let go of the slot's mutex, is buried
    /// by someone who saw its slot taken a moment before: the burial
    /// must not count it out a second time. `inside` one too low reads 0
    /// while a waiter waits, and the next notify skips it for good.
    #[test]
    #[cfg_attr(miri, ignore = "shared memory and pthread mutexes are outside Miri")]
    fn a_waiter_dead_while_leaving_is_counted_out_once() {
        let cond = Condition::new().unwrap();
        let inside = || cond.shared().inside.load(Ordering::SeqCst);
        let waiter = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = cond.lock().unwrap();
                let (i, _) = cond.enter().unwrap();
                // `leave` up to its unlock; the thread then ends holding
                // the slot's mutex, which the kernel marks owner-dead.
                cond.shared().slots[i].state.store(FREE, Ordering::Release);
                cond.shared().inside.fetch_sub(1, Ordering::AcqRel);
                i
            })
            .join()
            .unwrap()
        });
        assert_eq!(inside(), 0);
        cond.bury(waiter);
        assert_eq!(inside(), 0, "counted out twice");
        // And a waiter who comes now is counted, and notified.
        let (i, mine) = cond.enter().unwrap();
        assert_eq!(inside(), 1);
        cond.lock().unwrap().notify(1);
        assert_ne!(cond.shared().slots[i].state.load(Ordering::Acquire), mine);
        cond.leave(i);
    }
}
