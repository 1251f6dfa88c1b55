//! [`Barrier`]: processes wait until all parties have arrived.

use std::alloc::Layout;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::futex::{wait_for_change, wake_all, Asleep};
use super::RobustMutex;
use crate::error::{Error, RecoverableLockError, Result};
use crate::segment::{place, shared_constructors, ObjectKind, Placement, Region, SharedObject};
use crate::sys::{self, Deadline, MutexKind};
use crate::waiter;

const FILLING: u32 = 0;
/// Python's draining state: parties of a released pass leaving one by
/// one. Never entered now (a release takes every party out at once, see
/// [`Inner::release`]); still understood, as a barrier state shared with
/// an older build.
const DRAINING: u32 = 1;
const RESETTING: u32 = 2;
const BROKEN: u32 = 3;
/// The last party to arrive is releasing the pass: it holds the internal
/// lock, and `count` holds the generation being completed. Seen only by
/// whoever takes the lock after that party died half way, who finishes the
/// release (see [`Inner::release`]).
const RELEASING: u32 = 4;

/// How often a sleeping party looks for parties that died inside the barrier.
const DEATH_CHECK: Duration = Duration::from_millis(100);

/// The shared state, after an internal robust mutex that guards every field
/// but `seq`. CPython's algorithm, plus the pids of the parties inside, so
/// that a party that dies there breaks the barrier instead of hanging it.
#[repr(C)]
struct BarrierState {
    /// Bumped on every change of `state`: the futex word sleepers wait on.
    seq: AtomicU32,
    /// Parties asleep on `seq`, so that a change wakes only when someone
    /// sleeps. One that dies asleep leaves it too high: extra wake-ups only.
    sleepers: AtomicU32,
    parties: u32,
    /// Parties inside `wait` (Python's `_count`); while `state` is
    /// `RELEASING`, the generation being completed.
    count: AtomicU32,
    state: AtomicU32,
    /// Completed passes: a party whose pass completed has passed, even if
    /// the barrier is aborted a moment later.
    generation: AtomicU32,
    /// Default timeout in nanoseconds, 0 for none.
    timeout_ns: AtomicU64,
    /// When a sleeping party last looked for dead ones (`CLOCK_MONOTONIC`,
    /// in nanoseconds): one look every [`DEATH_CHECK`] serves them all.
    looked_at: AtomicU64,
    // Followed by `parties` pid slots (0 = free), then as many start times
    // (`sys::start_time`) of the processes in them: a party is known by
    // both, since the pid of one that died may be another process's since.
}

/// How one party's pass through the barrier ended.
enum PassEnd {
    Passed,
    /// Broken, reset or aborted by someone else.
    Broken,
    TimedOut,
    ActionPanicked(Box<dyn std::any::Any + Send>),
}

/// A barrier for a fixed number of parties across processes (Python's
/// `multiprocessing.Barrier`).
///
/// Each [`wait`](Barrier::wait) returns a distinct index in `0..parties`. An
/// optional [`action`](Barrier::with_action) runs in exactly one party (the
/// last to arrive) before the others are released. A timeout, an
/// [`abort`](Barrier::abort), a panicking action or a party that dies while
/// inside `wait` breaks the barrier: every waiter gets
/// [`Error::BrokenBarrier`] until [`reset`](Barrier::reset).
///
/// # Example
/// ```
/// use multiproc::{sync::Barrier, Process};
/// let barrier = Barrier::new(2)?;
/// let theirs = barrier.clone(); // another handle on the same barrier
/// let mut child = Process::new(move || {
///     theirs.wait().expect("barrier");
/// });
/// child.start()?;
/// let index = barrier.wait()?;
/// assert!(index < 2);
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    mutex: RobustMutex,
    state: Region,
    parties: u32,
    action: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// The creator's parties and default timeout.
type BarrierArgs = (u32, Option<Duration>);

impl SharedObject for Barrier {
    type Args<'a> = BarrierArgs;
    const KIND: ObjectKind = ObjectKind::Barrier;

    fn len(&(parties, _): &BarrierArgs) -> Result<u64> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party".into(),
            ));
        }
        Ok(u64::from(parties))
    }

    fn layout(parties: u64) -> Result<Layout> {
        Self::parts(parties).map(|(l, ..)| l)
    }

    unsafe fn init(at: NonNull<u8>, (parties, timeout): BarrierArgs) -> Result<()> {
        let timeout_ns = timeout.map_or(0, |t| t.as_nanos().clamp(1, u64::MAX as u128) as u64);
        let (_, state, ..) = Self::parts(u64::from(parties))?;
        // Per the caller, `at` is fresh zeroed memory laid out as
        // `parts(parties)`, not yet shared.
        // SAFETY: the mutex is at offset 0 of that memory.
        unsafe { RobustMutex::init(at.as_ptr(), MutexKind::ErrorCheck)? };
        // SAFETY: `state` is an offset inside that memory.
        let state = unsafe { at.add(state) }.cast::<BarrierState>();
        // SAFETY: `state` is aligned for `BarrierState` (its layout) and
        // writable, and holds nothing that needs dropping.
        unsafe {
            state.write(BarrierState {
                seq: AtomicU32::new(0),
                sleepers: AtomicU32::new(0),
                parties,
                count: AtomicU32::new(0),
                state: AtomicU32::new(FILLING),
                generation: AtomicU32::new(0),
                timeout_ns: AtomicU64::new(timeout_ns),
                looked_at: AtomicU64::new(0),
            })
        };
        Ok(())
    }

    unsafe fn from_region(region: Region, len: u64) -> std::result::Result<Self, String> {
        // An opened segment is checked like a created one: no zero parties.
        let parties = u32::try_from(len)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("a barrier of {len} parties"))?;
        let (_, state, ..) = Self::parts(len).map_err(|e| e.to_string())?;
        Ok(Barrier {
            // SAFETY: the object starts with the mutex `init` made, per the
            // caller.
            mutex: unsafe { RobustMutex::from_region(region.clone()) },
            // SAFETY: the offset is inside the object's memory.
            state: unsafe { region.sub(state) },
            parties,
            action: None,
        })
    }
}

shared_constructors! {
    impl[] Barrier as "barrier" {
        args(parties: u32) => (parties, None),
        made: " for `parties` parties (at least 1, at most [`MAX_PARTIES`](Barrier::MAX_PARTIES))",
        errors: "[`Error::InvalidArgument`](crate::Error::InvalidArgument) for 0 parties or more than [`MAX_PARTIES`](Barrier::MAX_PARTIES). ",
        kept: " An existing one keeps its own parties.",
        anonymous: new,
    }
}

impl Barrier {
    /// The most parties a barrier takes: as many as Linux can have
    /// processes (its `PID_MAX_LIMIT`). Each party has a slot for its pid
    /// and its start time in the shared memory (12 bytes), so `u32::MAX`
    /// parties would need 48 GiB.
    pub const MAX_PARTIES: u32 = 1 << 22;

    /// A new anonymous barrier whose waits time out after `timeout` by
    /// default (Python's `timeout=`).
    ///
    /// # Errors
    /// As for [`new`](Barrier::new).
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Barrier> {
        place(Placement::Anonymous((parties, Some(timeout))))
    }

    /// This handle, with `action` run by the last party to arrive at each
    /// pass, before any party is released. The action belongs to this
    /// process's handles (and forked children's copies of them); a process
    /// that opens the barrier by name sets its own.
    ///
    /// As in Python, the action may look at the barrier (`n_waiting` is
    /// then the parties of the pass, all arrived) and `abort` or `reset`
    /// it, which the release that follows the action overrides; a `wait`
    /// in it is [`Error::Deadlock`]. A copy of the process that the action
    /// forks (a bare `fork(2)`) and that returns from it takes no part in
    /// the pass, its parent's: its `wait` returns [`Error::NotOwner`].
    pub fn with_action(mut self, action: impl Fn() + Send + Sync + 'static) -> Barrier {
        self.action = Some(Arc::new(action));
        self
    }

    /// The memory of a barrier for `parties`, and where its state, its pid
    /// slots and their start times start.
    fn parts(parties: u64) -> Result<(Layout, usize, usize, usize)> {
        if parties > u64::from(Barrier::MAX_PARTIES) {
            return Err(Error::InvalidArgument(format!(
                "{parties} parties (a barrier takes at most {})",
                Barrier::MAX_PARTIES
            )));
        }
        let too_many = || Error::InvalidArgument(format!("{parties} parties"));
        let n = usize::try_from(parties).map_err(|_| too_many())?;
        let slots = Layout::array::<AtomicU32>(n).map_err(|_| too_many())?;
        let starts = Layout::array::<AtomicU64>(n).map_err(|_| too_many())?;
        let (l, state) = RobustMutex::layout()
            .extend(Layout::new::<BarrierState>())
            .expect("small");
        let (l, pids) = l.extend(slots).map_err(|_| too_many())?;
        let (l, starts) = l.extend(starts).map_err(|_| too_many())?;
        Ok((l, state, pids, starts))
    }

    fn seq(&self) -> &AtomicU32 {
        // SAFETY: `seq` is the first field of the BarrierState in `state`,
        // an atomic that lives as long as `self`.
        unsafe { &*self.state.as_ptr::<AtomicU32>() }
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// Waits until all parties have called `wait`, for at most the default
    /// timeout if the barrier has one; returns this party's index.
    ///
    /// # Errors
    /// [`Error::BrokenBarrier`] if the barrier is or becomes broken
    /// (including by this wait timing out); with a default timeout,
    /// [`Error::Timeout`] as for [`wait_timeout`](Barrier::wait_timeout).
    pub fn wait(&self) -> Result<u32> {
        waiter::block_on(self.wait_inner(self.default_timeout(), Sleep::Block))
    }

    /// As [`wait`](Barrier::wait), with its own timeout.
    ///
    /// # Errors
    /// As for [`wait`](Barrier::wait), and [`Error::Timeout`] if the previous
    /// pass was still draining (or a reset still finishing: parties of the
    /// reset pass still inside) when the time ran out: this party never
    /// entered, and the barrier is not broken.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        waiter::block_on(self.wait_inner(Some(timeout), Sleep::Block))
    }

    /// As [`wait`](Barrier::wait), without blocking the thread (for a task
    /// on an async runtime; any runtime will do).
    ///
    /// Cancellation: a future dropped before this party arrived changes
    /// nothing; one dropped after it arrived and before the pass was
    /// released breaks the barrier, as a timeout does (the others get
    /// [`Error::BrokenBarrier`]), since the pass can no longer fill with
    /// this party gone. Once the last party arrives, every party of the
    /// pass has passed: the release takes them all out of the barrier at
    /// once, so a released future that is never polled again, is dropped,
    /// or whose process is killed, holds up and breaks no later pass.
    ///
    /// # Errors
    /// As for [`wait`](Barrier::wait), and if this process's waiter thread
    /// cannot be started.
    pub async fn wait_async(&self) -> Result<u32> {
        self.wait_inner(self.default_timeout(), Sleep::Await).await
    }

    /// As [`wait_timeout`](Barrier::wait_timeout), without blocking the
    /// thread; cancellation as for [`wait_async`](Barrier::wait_async).
    ///
    /// # Errors
    /// As for [`wait_timeout`](Barrier::wait_timeout) and
    /// [`wait_async`](Barrier::wait_async).
    pub async fn wait_timeout_async(&self, timeout: Duration) -> Result<u32> {
        self.wait_inner(Some(timeout), Sleep::Await).await
    }

    fn default_timeout(&self) -> Option<Duration> {
        // SAFETY: `timeout_ns` is an atomic of the BarrierState in `state`.
        let ns =
            unsafe { &(*self.state.as_ptr::<BarrierState>()).timeout_ns }.load(Ordering::Relaxed);
        (ns > 0).then(|| Duration::from_nanos(ns))
    }

    /// One party's pass, blocking or awaiting as `how` says (one
    /// algorithm for both: the blocking form never returns `Pending`).
    async fn wait_inner(&self, timeout: Option<Duration>, how: Sleep) -> Result<u32> {
        let deadline = Deadline::within(timeout);
        let process = waiter::ProcessKey::current();
        let mut inner = self.enter()?;
        // Let a previous pass drain, or a reset finish.
        if !inner
            .wait_while(deadline, how, |s, _| matches!(s, DRAINING | RESETTING))
            .await?
        {
            return Err(Error::Timeout);
        }
        if inner.pass() == BROKEN {
            return Err(Error::BrokenBarrier);
        }
        let index = inner.state().count.fetch_add(1, Ordering::Relaxed);
        let generation = inner.state().generation.load(Ordering::Relaxed);
        let slot = inner.claim_slot();
        // From here on this party is inside: however this ends (a dropped
        // future included), it leaves, and breaks a pass it did not see
        // through.
        let mut inside = Inside {
            inner,
            process,
            slot,
            generation,
            left: false,
        };
        let outcome = if index.wrapping_add(1) == self.parties {
            // The last to arrive runs the action, then releases everyone.
            let action = self
                .action
                .as_ref()
                .map(|a| catch_unwind(AssertUnwindSafe(|| a())));
            if !inside.process.is_current() {
                // A copy of this process that the action forked, returning
                // here: the pass is its parent's, released (or broken) by
                // it long ago. Released again, it would release a later
                // pass that has not filled.
                return Err(Error::NotOwner);
            }
            match action {
                Some(Err(panic)) => PassEnd::ActionPanicked(panic),
                _ => {
                    inside.inner.release();
                    PassEnd::Passed
                }
            }
        } else {
            let joined = inside.generation;
            match inside
                .inner
                .wait_while(deadline, how, |s, g| s == FILLING && g == joined)
                .await?
            {
                // Released by the last arrival; a reset or abort is an error.
                _ if inside.passed() => PassEnd::Passed,
                true => PassEnd::Broken,
                false => PassEnd::TimedOut,
            }
        };
        // Only this party's own failure breaks the barrier for the others.
        if matches!(outcome, PassEnd::TimedOut | PassEnd::ActionPanicked(_)) {
            inside.inner.set_state(BROKEN);
        }
        inside.leave();
        drop(inside);
        match outcome {
            PassEnd::Passed => Ok(index),
            PassEnd::ActionPanicked(panic) => resume_unwind(panic),
            PassEnd::Broken | PassEnd::TimedOut => Err(Error::BrokenBarrier),
        }
    }

    /// Breaks the barrier: every waiter, now and later, gets
    /// [`Error::BrokenBarrier`] until [`reset`](Barrier::reset).
    ///
    /// # Errors
    /// Only on an OS failure of the internal lock.
    pub fn abort(&self) -> Result<()> {
        self.look()?.set_state(BROKEN);
        Ok(())
    }

    /// Returns the barrier to its initial state. Parties waiting at the
    /// time get [`Error::BrokenBarrier`].
    ///
    /// # Errors
    /// Only on an OS failure of the internal lock.
    pub fn reset(&self) -> Result<()> {
        let inner = self.look()?;
        if inner.count() > 0 {
            // Waiters leave as broken; the last one out refills it.
            inner.set_state(RESETTING);
        } else {
            inner.set_state(FILLING);
        }
        Ok(())
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.look().is_ok_and(|i| i.pass() == BROKEN)
    }

    /// How many parties are waiting for the current pass to fill.
    pub fn n_waiting(&self) -> u32 {
        self.look()
            .map_or(0, |i| if i.pass() == FILLING { i.count() } else { 0 })
    }

    /// The internal lock for a look or a change of state: taken, or, in
    /// the action (which runs with it held by its thread: no other code
    /// does), used as held there, as Python's re-entrant lock lets its
    /// action do. A `wait` always takes it, and so is refused there.
    fn look(&self) -> Result<Inner<'_>> {
        if self.mutex.owner() == Some(sys::gettid()) {
            return Ok(Inner {
                barrier: self,
                held: false,
            });
        }
        self.enter()
    }

    /// Takes the internal lock.
    fn enter(&self) -> Result<Inner<'_>> {
        let mut inner = Inner {
            barrier: self,
            held: false,
        };
        inner.relock()?;
        Ok(inner)
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .finish()
    }
}

/// The barrier's internal lock, held unless `held` says otherwise (only
/// while `wait_while` sleeps, or after it failed to re-take it).
struct Inner<'a> {
    barrier: &'a Barrier,
    held: bool,
}

impl Inner<'_> {
    /// Takes the internal lock; a party that died holding it breaks the barrier.
    fn relock(&mut self) -> Result<()> {
        match self.barrier.mutex.acquire(Deadline::Never, || ()) {
            Ok(()) => self.held = true,
            Err(RecoverableLockError::OwnerDied(())) => {
                self.held = true;
                self.barrier.mutex.make_consistent()?;
                if self.pass() == RELEASING {
                    // The last party died releasing its pass, which had
                    // filled: the pass is complete, and nobody else is
                    // inside the barrier.
                    self.finish_release();
                    return Ok(());
                }
                self.bury_dead();
                if self.pass() == FILLING {
                    self.set_state(BROKEN);
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn state(&self) -> &BarrierState {
        // SAFETY: the region holds an initialised BarrierState while the
        // barrier lives; the fields other processes change are atomics.
        unsafe { &*self.barrier.state.as_ptr::<BarrierState>() }
    }

    /// The pass's state (changed only under the internal lock).
    fn pass(&self) -> u32 {
        self.state().state.load(Ordering::Relaxed)
    }

    /// Parties inside (changed only under the internal lock).
    fn count(&self) -> u32 {
        self.state().count.load(Ordering::Relaxed)
    }

    /// The pid slots.
    fn slots(&self) -> &[AtomicU32] {
        let (_, state, pids, _) =
            Barrier::parts(u64::from(self.barrier.parties)).expect("checked at creation");
        // SAFETY: `parts` puts `parties` aligned `AtomicU32`s at `pids`.
        unsafe { self.array_at(pids - state) }
    }

    /// The start times of the processes in the slots.
    fn starts(&self) -> &[AtomicU64] {
        let (_, state, _, starts) =
            Barrier::parts(u64::from(self.barrier.parties)).expect("checked at creation");
        // SAFETY: `parts` puts `parties` aligned `AtomicU64`s at `starts`.
        unsafe { self.array_at(starts - state) }
    }

    /// The `parties` atomics that start `offset` bytes after the state.
    ///
    /// # Safety
    /// `parts` must put `parties` aligned `A`s there, inside the object's
    /// memory; they are only ever accessed atomically.
    unsafe fn array_at<A>(&self, offset: usize) -> &[A] {
        // SAFETY: inside the object's memory, per the caller.
        let base = unsafe { self.barrier.state.as_ptr::<u8>().add(offset) };
        // SAFETY: `parties` aligned `A`s, per the caller, mapped while the
        // barrier lives.
        unsafe { std::slice::from_raw_parts(base.cast::<A>(), self.barrier.parties as usize) }
    }

    /// Records this process in a free slot; there is one, since at most
    /// `parties` are inside.
    fn claim_slot(&self) -> Option<usize> {
        let (pid, start) = sys::own_pid_and_start();
        let slot = self
            .slots()
            .iter()
            .position(|s| s.load(Ordering::Relaxed) == 0)?;
        // The start time first: a slot is taken only once its pid is in.
        self.starts()[slot].store(start, Ordering::Relaxed);
        self.slots()[slot].store(pid, Ordering::Relaxed);
        Some(slot)
    }

    /// Leaves the barrier (Python's `_exit`): the last one out of a pass
    /// that drained or reset refills it.
    fn leave(&self, slot: Option<usize>) {
        if let Some(slot) = slot {
            self.slots()[slot].store(0, Ordering::Relaxed);
        }
        self.state().count.fetch_sub(1, Ordering::Relaxed);
        self.refill_if_empty();
    }

    /// Completes the pass (by its last party, holding the internal lock):
    /// every party inside has passed, and leaves the barrier at once, so
    /// that none of them has to run again for the next pass to start (a
    /// released future may never be polled again). Each party knows that
    /// it passed by the generation, and does not leave itself.
    ///
    /// `count` keeps the generation being completed while the state says
    /// `RELEASING`: whoever takes the lock after this party died half way
    /// finishes the release exactly once
    /// ([`finish_release`](Inner::finish_release) is idempotent).
    fn release(&self) {
        let generation = self.state().generation.load(Ordering::Relaxed);
        self.state().count.store(generation, Ordering::Relaxed);
        self.state().state.store(RELEASING, Ordering::Relaxed);
        self.finish_release();
    }

    /// The second half of [`release`](Inner::release).
    fn finish_release(&self) {
        let completed = self.count();
        self.state()
            .generation
            .store(completed.wrapping_add(1), Ordering::Relaxed);
        for slot in self.slots() {
            slot.store(0, Ordering::Relaxed);
        }
        self.state().count.store(0, Ordering::Relaxed);
        self.set_state(FILLING);
    }

    fn refill_if_empty(&self) {
        if self.count() == 0 && matches!(self.pass(), RESETTING | DRAINING) {
            self.set_state(FILLING);
        }
    }

    fn set_state(&self, state: u32) {
        self.state().state.store(state, Ordering::Relaxed);
        // SeqCst here and in `wait_while`: either the sleeper sees the new
        // sequence number, or this sees the sleeper.
        self.barrier.seq().fetch_add(1, Ordering::SeqCst);
        if self.state().sleepers.load(Ordering::SeqCst) > 0 {
            wake_all(self.barrier.seq());
        }
    }

    /// Removes parties that died inside the barrier. One that died while the
    /// pass was filling means it can never fill: that breaks the barrier.
    ///
    /// The slots are the truth: every party inside holds one, and the count
    /// is set from the live ones. So a party killed while it held the
    /// internal lock, between counting itself and taking its slot or
    /// between freeing its slot and uncounting itself, leaves no phantom
    /// party that would keep a pass from ever draining.
    ///
    /// Many parties are often one process's (its threads, or its tasks:
    /// a thousand tasks of one runtime are a thousand parties, each of which
    /// looks here after every wake-up): this process is alive without
    /// asking, and each other pid is asked about once per look, not once
    /// per slot, which made a pass of N parties cost N² system calls.
    fn bury_dead(&self) {
        let me = sys::own_pid_and_start();
        let mut known: Option<(u32, u64, bool)> = None;
        let mut alive = |pid: u32, start: u64| match known {
            _ if (pid, start) == me => true,
            Some((p, s, a)) if (p, s) == (pid, start) => a,
            _ => {
                let a = sys::pid_alive_since(pid, start);
                known = Some((pid, start, a));
                a
            }
        };
        let mut buried = false;
        let mut inside = 0;
        for (slot, start) in self.slots().iter().zip(self.starts()) {
            let pid = slot.load(Ordering::Relaxed);
            if pid == 0 {
                continue;
            }
            if alive(pid, start.load(Ordering::Relaxed)) {
                inside += 1;
            } else {
                slot.store(0, Ordering::Relaxed);
                buried = true;
            }
        }
        if buried || self.count() != inside {
            self.state().count.store(inside, Ordering::Relaxed);
            if self.pass() == FILLING {
                self.set_state(BROKEN);
            }
            self.refill_if_empty();
        }
    }

    /// Sleeps, with the internal lock released, while `blocked` holds for
    /// the state and generation, or until `deadline`; returns whether
    /// `blocked` stopped holding.
    async fn wait_while(
        &mut self,
        deadline: Deadline,
        how: Sleep,
        blocked: impl Fn(u32, u32) -> bool,
    ) -> Result<bool> {
        let seq = self.barrier.seq();
        while blocked(self.pass(), self.state().generation.load(Ordering::Relaxed)) {
            if deadline.passed() {
                return Ok(false);
            }
            let seen = seq.load(Ordering::Acquire);
            self.barrier.mutex.unlock()?;
            self.held = false;
            let nap = deadline.capped(DEATH_CHECK);
            match how {
                Sleep::Block => {
                    wait_for_change(seq, seen, &self.state().sleepers, nap);
                }
                Sleep::Await => {
                    let _asleep = Asleep::new(&self.state().sleepers);
                    waiter::word(seq, nap, || {
                        if seq.load(Ordering::SeqCst) == seen {
                            ControlFlow::Continue(seen)
                        } else {
                            ControlFlow::Break(())
                        }
                    })
                    .await?;
                }
            }
            self.relock()?;
            self.look_for_dead();
        }
        Ok(true)
    }

    /// [`bury_dead`](Self::bury_dead), for a sleeping party that woke (with
    /// the lock held), unless another party did within [`DEATH_CHECK`].
    ///
    /// Every sleeping party wakes every `DEATH_CHECK`, and a look asks
    /// the kernel about every other process inside: were each to look,
    /// N processes waiting would make N² queries each time, under the
    /// lock (200 processes: 40 000 reads of `/proc` every 100 ms, more
    /// than two CPUs do in that time, and a round of the barrier took 20
    /// s). The time of the last look is shared: a party that finds it
    /// older than `DEATH_CHECK`, or not in its past (the memory was
    /// scribbled, or the looker's clock is another time namespace's),
    /// looks. A looker that dies half way leaves the lock to its next
    /// owner, who looks (see [`relock`](Self::relock)).
    fn look_for_dead(&self) {
        let now = monotonic_nanos();
        let last = self.state().looked_at.load(Ordering::Relaxed);
        let recent = last <= now && now - last < DEATH_CHECK.as_nanos() as u64;
        if !recent {
            self.state().looked_at.store(now, Ordering::Relaxed);
            self.bury_dead();
        }
    }
}

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock every process of the
/// machine (of one time namespace) reads alike.
fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// How a party waits.
#[derive(Clone, Copy)]
enum Sleep {
    /// On the futex, blocking the thread.
    Block,
    /// Through this process's waiter thread, as a future.
    Await,
}

/// A party inside the barrier: counted, with its slot.
struct Inside<'a> {
    inner: Inner<'a>,
    /// The process of the party: a copy that a `fork` made of a pending
    /// wait is not a party, and its drop leaves nothing, even in a
    /// descendant that got the pid of the party's process once that died.
    process: waiter::ProcessKey,
    slot: Option<usize>,
    /// The pass it joined.
    generation: u32,
    left: bool,
}

impl Inside<'_> {
    /// Whether the pass it joined has completed.
    fn passed(&self) -> bool {
        self.inner.state().generation.load(Ordering::Relaxed) != self.generation
    }

    /// Leaves (with the internal lock held), unless the pass it joined
    /// completed: its release took every party of it out already (and its
    /// slot may be another's now).
    fn leave(&mut self) {
        if !self.passed() {
            self.inner.leave(self.slot);
        }
        self.left = true;
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        if self.left || !self.process.is_current() {
            return;
        }
        // Gone mid-pass (a dropped future, or an error): the pass cannot
        // fill without this party.
        if !self.inner.held && self.inner.relock().is_err() {
            return;
        }
        if !self.passed() && self.inner.pass() == FILLING {
            self.inner.set_state(BROKEN);
        }
        self.leave();
    }
}

impl Drop for Inner<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.barrier.mutex.unlock();
        }
    }
}
