//! Async waits on shared primitives, with any runtime.
//!
//! A task that awaits a futex word or a descriptor registers what it waits
//! for with this process's waiter threads and returns `Pending`; a thread
//! sleeps on up to [`Source::MAX`] registered words at once
//! (`futex_waitv`) or descriptors (`poll`), and wakes the tasks whose word
//! changed, whose descriptor became ready or whose deadline passed. Each
//! registration is given to one thread for as long as it lasts (the one
//! that already watches the same thing, or one with room): a thread is
//! started when the others are full, and the last one retires after
//! [`IDLE`] with nothing to watch. The
//! tasks then look again, exactly as a blocking waiter does after its
//! `futex_wait` returns. So nothing changes in the shared layout or on the
//! waking side: `set`, `release`, `put` wake blocking and async waiters
//! alike, and a process that never awaits never starts a thread.
//!
//! Idle tasks cost little, and no more each when there are many: arming,
//! refreshing or dropping a registration touches its own entry (a hash
//! and a deadline tree), never every entry; a wait whose outcome depends
//! on the word alone ([`word_alone`]) is not looked at again until the
//! word changes, a thread having the kernel compare its words again every
//! [`RECHECK`] in case a waker died before its wake-up call; and the
//! periodic looks of the other waits ([`word`]) fall on a coarse grid, so
//! that a thread wakes once for many of them.
//!
//! Two rules keep this sound when futures are dropped, forgotten or moved
//! across a `fork`:
//! - the thread never reads a registered address itself: only the kernel
//!   does (`futex_waitv` compares the values and reports an unmapped
//!   address as an error), so an entry left behind by a forgotten future is
//!   a spurious wake-up, never a read of freed memory;
//! - each process has its own registry, found by [`token`]: a
//!   forked child never
//!   touches the registry (or its lock) that it inherited from its parent,
//!   whose waiter thread it does not have, and starts its own on first use.

use std::collections::{hash_map, BTreeSet, HashMap, HashSet};
use std::io;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Duration;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::poison::locked as lock;
use crate::sync::{spin, RECHECK};
use crate::sys::{self, Deadline, Ready, WaitvOutcome};

/// What a waiter thread sleeps on: futex words or descriptors.
trait Source: Sized + Send + Sync + 'static {
    /// One thing to wait for.
    type Watch: Copy + Eq + std::hash::Hash + Send;
    /// How many distinct watches one sleep can cover.
    const MAX: usize;
    /// How often a thread with watches sleeps again even if none fired:
    /// the kernel then compares every watched word once more, which
    /// finds a change whose wake-up call never came.
    const LOOK_AGAIN: Option<Duration>;
    /// The slot that holds this process's registry.
    fn slot() -> &'static AtomicPtr<Registry<Self>>;
    fn new() -> io::Result<Self>;
    /// A token read before the entries are collected; an interruption
    /// after it makes the next [`sleep`](Source::sleep) return at once.
    fn snapshot(&self) -> u32;
    /// Makes the thread's current or next sleep return.
    fn interrupt(&self);
    /// Sleeps until a watch fires, an interruption, or `deadline`.
    fn sleep(&self, snapshot: u32, watches: &[Self::Watch], deadline: Deadline) -> Fired;
}

/// What ended a waiter thread's sleep.
enum Fired {
    /// These watches (indexes) fired.
    Some(Vec<usize>),
    /// Any watch may have fired: every waiting task looks again.
    All,
    /// An interruption or a deadline: entries are looked at again.
    Nothing,
}

struct Registry<S: Source> {
    /// The [`token`] of the process that made it.
    process: usize,
    entries: Mutex<Entries<S>>,
}

struct Entries<S: Source> {
    /// Every armed registration, by id.
    by_id: HashMap<u64, Entry<S::Watch>>,
    /// Every distinct watch: the thread it is given to and the entries
    /// on it (all on that one thread).
    by_watch: HashMap<S::Watch, Watched>,
    /// The running waiter threads; thread `i` sleeps through `threads[i]`.
    threads: Vec<Thread<S>>,
}

/// The entries on one watch, and the thread that watches it.
struct Watched {
    thread: usize,
    ids: HashSet<u64>,
}

/// One waiter thread's share: arming, refreshing or dropping an entry
/// costs a hash and a tree update, never a pass over every entry.
struct Thread<S: Source> {
    /// Its interruptible sleep.
    source: Arc<S>,
    /// The distinct watches given to it, in the order given: it sleeps
    /// on the first [`Source::MAX`].
    watches: Vec<S::Watch>,
    /// Its entries' deadlines, earliest first (never-ending ones are not
    /// there).
    deadlines: BTreeSet<(Due, u64)>,
    /// When its current or next sleep ends at the latest, as it last
    /// collected its watches (`None`: never): an entry due no earlier,
    /// on a watch it already sleeps on, needs no interruption.
    until: Option<Due>,
}

/// At most this many waiter threads per source (`MAX` watches each);
/// watches beyond them are looked at every [`OVERFLOW_POLL`].
const MAX_THREADS: usize = 64;

/// How long the last of several waiter threads stays with nothing to
/// watch before it ends.
const IDLE: Duration = Duration::from_secs(1);

struct Entry<W> {
    /// The waiter thread that watches it.
    thread: usize,
    watch: W,
    deadline: Deadline,
    waker: Waker,
}

/// Entry ids, unique across a process and the children it forks (they
/// inherit the counter, and futures armed before the fork keep older ids).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// This process's registry for `S`, made on first use (and again in a
/// forked child, which leaves its parent's alone: its lock may be held by
/// a thread that does not exist here).
fn current<S: Source>() -> io::Result<&'static Registry<S>> {
    let slot = S::slot();
    let process = token()?;
    loop {
        let seen = slot.load(Ordering::Acquire);
        // SAFETY: registries are leaked, never freed: a non-null pointer in
        // the slot is valid for the rest of the process.
        if let Some(r) = unsafe { seen.as_ref() } {
            if r.process == process {
                return Ok(r);
            }
        }
        let fresh = Box::into_raw(Box::new(Registry {
            process,
            entries: Mutex::new(Entries {
                by_id: HashMap::new(),
                by_watch: HashMap::new(),
                threads: Vec::new(),
            }),
        }));
        match slot.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just installed; never freed from now on.
            Ok(_) => return Ok(unsafe { &*fresh }),
            // SAFETY: `fresh` was never shared; another thread installed its own.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

/// Makes every forked child start without registries, keepers or
/// [`token`] (once per process tree: the handler is inherited).
/// A pid alone would not tell a process from a descendant that gets its
/// pid once it has exited.
fn forget_registries_in_children() -> io::Result<()> {
    extern "C" fn nothing() {}
    extern "C" fn forget() {
        FUTEXES.store(std::ptr::null_mut(), Ordering::Relaxed);
        DESCRIPTORS.store(std::ptr::null_mut(), Ordering::Relaxed);
        KEEPERS.store(std::ptr::null_mut(), Ordering::Relaxed);
        TOKEN.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
    static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    sys::at_fork(nothing, nothing, forget)
        .inspect_err(|_| INSTALLED.store(false, Ordering::Release))
}

/// The process's token (see [`token`]), made on first use.
struct Token {
    /// The process that made it: where the token is kept in [`TOKEN`], a
    /// child made by a raw `clone` (which runs no fork handler) finds its
    /// parent's there, and makes its own.
    pid: u32,
}

/// The process's token where it has no word of its own
/// ([`sys::own_word`]); where it has one, a copy that leak checkers see.
static TOKEN: AtomicPtr<Token> = AtomicPtr::new(std::ptr::null_mut());

/// A process as state that a `fork` copies records its owner: its
/// [`token`], or its pid where it could not have one (the fork handler
/// that gives children tokens of their own could not be installed).
/// Tells a process from its forked descendants, even one that gets its
/// pid once it has died. One word (a token is the address of a [`Token`],
/// a multiple of its alignment, 4; a pid is kept odd), so that a guard
/// that holds one is copied whole, and fits an atomic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcessKey(NonZeroUsize);

impl ProcessKey {
    /// The calling process's.
    #[inline(always)]
    pub(crate) fn current() -> ProcessKey {
        match token().ok().and_then(NonZeroUsize::new) {
            Some(token) => ProcessKey(token),
            None => ProcessKey::of_pid(sys::cached_pid()),
        }
    }

    /// The key of the process `pid` (where it has no token).
    fn of_pid(pid: u32) -> ProcessKey {
        ProcessKey(NonZeroUsize::MIN | (pid as usize) << 1)
    }

    /// Whether it is the calling process's (in every access through a
    /// cell's guard: kept to a few loads).
    #[inline(always)]
    pub(crate) fn is_current(self) -> bool {
        let key = self.0.get();
        if key & 1 == 1 {
            return sys::cached_pid() as usize == key >> 1;
        }
        match sys::own_word() {
            // Without making this process's token if it has none yet
            // (then it is not this one): one load on the common path.
            Some(word) => word.load(Ordering::Relaxed) == key,
            None => token().ok() == Some(key),
        }
    }

    /// The key as one word, never 0, for an atomic.
    pub(crate) fn to_word(self) -> usize {
        self.0.get()
    }

    /// The key [`to_word`](ProcessKey::to_word) made `word` of; `None` for 0.
    pub(crate) fn from_word(word: usize) -> Option<ProcessKey> {
        NonZeroUsize::new(word).map(ProcessKey)
    }

    /// A key of no process (no token is at address 4), for tests of state
    /// made by another process: one whose pid this process may have.
    #[cfg(test)]
    pub(crate) fn another() -> ProcessKey {
        ProcessKey(NonZeroUsize::new(4).expect("not 0"))
    }
}

/// A token of the calling process that, unlike its pid, no process with a
/// copy of its memory has: a forked descendant has a token of its own,
/// even one that got the pid of this process once it died. (It is the
/// address of a [`Token`] that the process allocates on first use and
/// never frees: every descendant's copy of the memory keeps it
/// allocated.) For state that a `fork` copies into a child that must
/// leave it alone.
///
/// # Errors
/// If the fork handler that gives children their own cannot be installed.
#[inline(always)]
fn token() -> io::Result<usize> {
    match sys::own_word() {
        // Empty in every new process, however it was made.
        Some(word) => match word.load(Ordering::Acquire) {
            0 => new_token(Some(word)),
            token => Ok(token),
        },
        None => {
            let seen = TOKEN.load(Ordering::Acquire);
            // SAFETY: tokens are leaked, never freed.
            if unsafe { seen.as_ref() }.is_some_and(|t| t.pid == sys::cached_pid()) {
                return Ok(seen as usize);
            }
            new_token(None)
        }
    }
}

/// Makes the calling process's token, as [`token`] does once per process,
/// and keeps it in `word` (the process's own word), or else in [`TOKEN`]
/// (reset by the fork handler, and checked against the pid for children
/// made by a raw `clone`, which run no fork handler).
#[cold]
#[inline(never)]
fn new_token(word: Option<&AtomicUsize>) -> io::Result<usize> {
    // Installed before any token is made (see `forget_registries_in_children`).
    forget_registries_in_children()?;
    let pid = sys::cached_pid();
    let fresh = Box::into_raw(Box::new(Token { pid }));
    let other = match word {
        Some(word) => {
            match word.compare_exchange(0, fresh as usize, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // Also where a leak checker looks (the page is memory
                    // it does not scan): the token is kept, not lost.
                    TOKEN.store(fresh, Ordering::Release);
                    return Ok(fresh as usize);
                }
                Err(other) => other,
            }
        }
        None => loop {
            let seen = TOKEN.load(Ordering::Acquire);
            // SAFETY: tokens are leaked, never freed.
            if unsafe { seen.as_ref() }.is_some_and(|t| t.pid == pid) {
                break seen as usize;
            }
            if TOKEN
                .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(fresh as usize);
            }
        },
    };
    // SAFETY: `fresh` was never shared; another thread made the token first.
    drop(unsafe { Box::from_raw(fresh) });
    Ok(other)
}

/// One future's place in its process's registry; leaving it (on drop)
/// takes the entry out, so the waiter thread forgets the watch.
struct Registration<S: Source> {
    /// The [`token`] of the process that armed it, and its entry
    /// id, once armed.
    armed: Option<(usize, u64)>,
    _source: PhantomData<fn() -> S>,
}

impl<S: Source> Registration<S> {
    fn new() -> Self {
        Registration {
            armed: None,
            _source: PhantomData,
        }
    }

    /// Asks the waiter thread to wake `waker` once `watch` fires or
    /// `deadline` passes.
    fn arm(&mut self, watch: S::Watch, deadline: Deadline, waker: &Waker) -> Result<()> {
        // The waker this replaces is dropped only after the lock is
        // released: dropping a waker runs the executor's code, which may
        // drop another future registered here (and so take the lock).
        let mut _replaced = None;
        let registry = current::<S>().map_err(|e| Error::io("async waiter", e))?;
        let mut guard = lock(&registry.entries);
        let entries = &mut *guard;
        let id = match self.armed {
            Some((process, id)) if process == registry.process => id,
            _ => NEXT_ID.fetch_add(1, Ordering::Relaxed),
        };
        self.armed = Some((registry.process, id));
        let due = key(deadline);
        if let Some(e) = entries.by_id.get_mut(&id) {
            if e.watch == watch {
                // Same watch: the thread already sleeps on it.
                if !e.waker.will_wake(waker) {
                    _replaced = Some(std::mem::replace(&mut e.waker, waker.clone()));
                }
                let was = key(std::mem::replace(&mut e.deadline, deadline));
                if was != due {
                    let thread = &mut entries.threads[e.thread];
                    if let Some(k) = was {
                        thread.deadlines.remove(&(k, id));
                    }
                    if let Some(k) = due {
                        thread.deadlines.insert((k, id));
                    }
                    thread.wake_by(due);
                }
                return Ok(());
            }
            _replaced = entries.take(id);
        }
        let thread = match entries.choose_thread(watch) {
            Some(t) => t,
            None => {
                let index = entries.threads.len();
                let started = S::new().and_then(|source| {
                    let source = Arc::new(source);
                    let theirs = source.clone();
                    std::thread::Builder::new()
                        .name("multiproc-waiter".into())
                        .spawn(move || waiter_thread(registry, index, theirs))
                        .map(|_| source)
                });
                match started {
                    Ok(source) => {
                        entries.threads.push(Thread {
                            source,
                            watches: Vec::new(),
                            deadlines: BTreeSet::new(),
                            until: None,
                        });
                        index
                    }
                    // The threads there are: the least busy polls the
                    // watches beyond what it can sleep on.
                    Err(_) if index > 0 => entries.least_busy(),
                    Err(e) => {
                        self.armed = None;
                        return Err(Error::io("start the async waiter thread", e));
                    }
                }
            }
        };
        let t = &mut entries.threads[thread];
        let fresh = match entries.by_watch.entry(watch) {
            hash_map::Entry::Occupied(mut o) => {
                o.get_mut().ids.insert(id);
                false
            }
            hash_map::Entry::Vacant(v) => {
                v.insert(Watched {
                    thread,
                    ids: HashSet::from([id]),
                });
                t.watches.push(watch);
                true
            }
        };
        if let Some(k) = due {
            t.deadlines.insert((k, id));
        }
        entries.by_id.insert(
            id,
            Entry {
                thread,
                watch,
                deadline,
                waker: waker.clone(),
            },
        );
        if fresh {
            t.source.interrupt();
        } else {
            t.wake_by(due);
        }
        Ok(())
    }
}

impl<S: Source> Drop for Registration<S> {
    fn drop(&mut self) {
        let Some((process, id)) = self.armed else {
            return;
        };
        if token().ok() != Some(process) {
            return; // armed in the parent before a fork: not this process's
        }
        if let Ok(registry) = current::<S>() {
            let mut entries = lock(&registry.entries);
            let waker = entries.take(id);
            // Its waker is dropped after the lock is released (see `arm`).
            drop(entries);
            drop(waker);
        }
    }
}

/// A point on the monotonic clock, as (seconds, nanoseconds): the order
/// of the deadline trees.
type Due = (i64, i64);

/// `deadline` as a point on the clock; `None` for never.
fn key(deadline: Deadline) -> Option<Due> {
    deadline.timespec().map(|t| (t.tv_sec, t.tv_nsec))
}

/// The deadline at `at`.
fn at((tv_sec, tv_nsec): Due) -> Deadline {
    Deadline::At(libc::timespec { tv_sec, tv_nsec })
}

impl<S: Source> Thread<S> {
    /// Makes the thread wake by `due` (`None`: never): interrupts its
    /// sleep if that would end later.
    fn wake_by(&mut self, due: Option<Due>) {
        let sooner = match (due, self.until) {
            (Some(due), Some(until)) => due < until,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if sooner {
            // It collects again after this, and so sleeps until `due` at
            // the latest: later entries need not interrupt it again.
            self.until = due;
            self.source.interrupt();
        }
    }
}

impl<S: Source> Entries<S> {
    /// Takes entry `id` out; returns its waker, to be dropped (or woken)
    /// once the lock is released.
    fn take(&mut self, id: u64) -> Option<Waker> {
        let e = self.by_id.remove(&id)?;
        if let Some(thread) = self.threads.get_mut(e.thread) {
            if let Some(k) = key(e.deadline) {
                thread.deadlines.remove(&(k, id));
            }
            if let hash_map::Entry::Occupied(mut o) = self.by_watch.entry(e.watch) {
                o.get_mut().ids.remove(&id);
                if o.get().ids.is_empty() {
                    o.remove();
                    thread.watches.retain(|w| *w != e.watch);
                }
            }
        }
        Some(e.waker)
    }

    /// Takes out every entry on `watch` if thread `index` watches it;
    /// their wakers go to `wake`.
    fn take_watch(&mut self, index: usize, watch: S::Watch, wake: &mut Vec<Waker>) {
        let watched = match self.by_watch.entry(watch) {
            hash_map::Entry::Occupied(o) if o.get().thread == index => o.remove(),
            _ => return,
        };
        let thread = &mut self.threads[index];
        thread.watches.retain(|w| *w != watch);
        for id in watched.ids {
            if let Some(e) = self.by_id.remove(&id) {
                if let Some(k) = key(e.deadline) {
                    thread.deadlines.remove(&(k, id));
                }
                wake.push(e.waker);
            }
        }
    }

    /// The thread for `watch`: the one that watches it already, or the
    /// first with room (fewer than `MAX` distinct watches); `None` if a
    /// new one is wanted.
    fn choose_thread(&self, watch: S::Watch) -> Option<usize> {
        if let Some(w) = self.by_watch.get(&watch) {
            return Some(w.thread);
        }
        match self.threads.iter().position(|t| t.watches.len() < S::MAX) {
            Some(t) => Some(t),
            None if self.threads.len() >= MAX_THREADS => Some(self.least_busy()),
            None => None,
        }
    }

    /// The thread with the fewest watches.
    fn least_busy(&self) -> usize {
        (0..self.threads.len())
            .min_by_key(|&t| self.threads[t].watches.len())
            .unwrap_or(0)
    }
}

/// How long a thread given more than [`Source::MAX`] distinct watches
/// (when no more threads could be started) sleeps before it lets the
/// tasks beyond them look again.
const OVERFLOW_POLL: Duration = Duration::from_millis(2);

/// Waiter thread `index`, sleeping through `source` on the watches given
/// to it.
fn waiter_thread<S: Source>(registry: &'static Registry<S>, index: usize, source: Arc<S>) {
    let mut watches = Vec::new();
    let mut wake = Vec::new();
    let mut idle_since: Option<Instant> = None;
    loop {
        let snapshot = source.snapshot();
        let mut deadline;
        let overflow;
        {
            let mut entries = lock(&registry.entries);
            let now = key(Deadline::after(Duration::ZERO));
            while let Some(&(due, id)) = entries.threads[index].deadlines.first() {
                if Some(due) > now {
                    break;
                }
                match entries.take(id) {
                    Some(waker) => wake.push(waker),
                    None => {
                        entries.threads[index].deadlines.pop_first();
                    }
                }
            }
            let thread = &entries.threads[index];
            watches.clear();
            watches.extend(thread.watches.iter().take(S::MAX).copied());
            overflow = thread.watches.len() > S::MAX;
            deadline = thread
                .deadlines
                .first()
                .map_or(Deadline::Never, |&(k, _)| at(k));
            if overflow {
                deadline = deadline.capped(OVERFLOW_POLL);
            }
            if let (false, Some(every)) = (watches.is_empty(), S::LOOK_AGAIN) {
                deadline = deadline.capped(every);
            }
            if watches.is_empty() && index > 0 && index + 1 == entries.threads.len() {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= IDLE {
                    // Retire: no entry is given to a thread that is not there.
                    entries.threads.truncate(index);
                    drop(entries);
                    wake_each(&mut wake);
                    return;
                }
                deadline = deadline.earlier(Deadline::after(IDLE));
            } else {
                idle_since = None;
            }
            entries.threads[index].until = key(deadline);
        }
        wake_each(&mut wake);
        let fired = source.sleep(snapshot, &watches, deadline);
        let mut entries = lock(&registry.entries);
        let woken: Vec<S::Watch> = match fired {
            Fired::All => entries.threads[index].watches.clone(),
            Fired::Some(which) => which
                .iter()
                .filter_map(|&i| watches.get(i).copied())
                .collect(),
            Fired::Nothing if overflow => entries.threads[index]
                .watches
                .iter()
                .filter(|w| !watches.contains(w))
                .copied()
                .collect(),
            Fired::Nothing => Vec::new(),
        };
        for watch in woken {
            entries.take_watch(index, watch, &mut wake);
        }
        drop(entries);
        wake_each(&mut wake);
    }
}

/// Wakes the tasks behind `wakers`. A waker runs the executor's code: one
/// that panics (say, because its executor is gone) must not end this
/// thread, which every async wait in the process relies on.
fn wake_each(wakers: &mut Vec<Waker>) {
    for waker in wakers.drain(..) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
    }
}

/// Futex words in shared memory.
pub(crate) struct Futexes {
    /// Bumped to interrupt the thread's sleep.
    control: AtomicU32,
    /// Without `futex_waitv`: how long to sleep before every task looks
    /// again (microseconds, doubling up to [`MAX_BACKOFF_US`]).
    backoff_us: AtomicU32,
}

const MIN_BACKOFF_US: u32 = 50;
const MAX_BACKOFF_US: u32 = 10_000;

static FUTEXES: AtomicPtr<Registry<Futexes>> = AtomicPtr::new(std::ptr::null_mut());

impl Source for Futexes {
    /// A word's address and the value it is expected to hold.
    type Watch = (usize, u32);
    /// `futex_waitv` takes 128 words; one is the control word.
    const MAX: usize = 127;
    const LOOK_AGAIN: Option<Duration> = Some(RECHECK);

    fn slot() -> &'static AtomicPtr<Registry<Self>> {
        &FUTEXES
    }

    fn new() -> io::Result<Self> {
        Ok(Futexes {
            control: AtomicU32::new(0),
            backoff_us: AtomicU32::new(MIN_BACKOFF_US),
        })
    }

    fn snapshot(&self) -> u32 {
        self.control.load(Ordering::SeqCst)
    }

    fn interrupt(&self) {
        self.control.fetch_add(1, Ordering::SeqCst);
        self.backoff_us.store(MIN_BACKOFF_US, Ordering::Relaxed);
        sys::futex_wake(&self.control, 1);
    }

    fn sleep(&self, snapshot: u32, watches: &[(usize, u32)], deadline: Deadline) -> Fired {
        // A task just woken usually waits again at once, with a new value
        // to wait for: a short spin catches that without a sleep and a
        // wake-up of this thread (as a blocking waiter spins before it
        // sleeps).
        if spin(&self.control, |v| v != snapshot).is_ok() {
            return Fired::Nothing;
        }
        let mut words = Vec::with_capacity(watches.len() + 1);
        words.push((self.control.as_ptr() as usize, snapshot));
        words.extend_from_slice(watches);
        match sys::futex_waitv(&words, deadline) {
            WaitvOutcome::Woken(0) | WaitvOutcome::TimedOut => Fired::Nothing,
            WaitvOutcome::Woken(i) => Fired::Some(vec![i - 1]),
            // Either the control word moved (an interruption: collect
            // again) or a watched one did (then the next sleep finds it
            // changed too, with the control word as it was).
            WaitvOutcome::Changed if self.snapshot() != snapshot => Fired::Nothing,
            // Which ones: the kernel compares each alone (with a deadline
            // long past, so that it never sleeps), so that the tasks on
            // the other words, idle, are not woken for nothing. None
            // changed any more: the next sleep compares them all again.
            WaitvOutcome::Changed => {
                let changed: Vec<usize> = (0..watches.len())
                    .filter(|&i| {
                        let alone = sys::futex_waitv(&watches[i..=i], Deadline::Now);
                        !matches!(alone, WaitvOutcome::TimedOut)
                    })
                    .collect();
                if changed.is_empty() {
                    Fired::Nothing
                } else {
                    Fired::Some(changed)
                }
            }
            WaitvOutcome::Unsupported => {
                // Before Linux 5.16: sleep on the control word alone for a
                // while, then let every task look again.
                let us = self.backoff_us.load(Ordering::Relaxed);
                self.backoff_us
                    .store((us * 2).min(MAX_BACKOFF_US), Ordering::Relaxed);
                let nap = deadline.capped(Duration::from_micros(u64::from(us)));
                sys::futex_wait(&self.control, snapshot, nap);
                Fired::All
            }
        }
    }
}

/// Descriptors that a task waits to become ready.
pub(crate) struct Descriptors {
    /// Written to interrupt the thread's `poll`.
    wake: OwnedFd,
}

static DESCRIPTORS: AtomicPtr<Registry<Descriptors>> = AtomicPtr::new(std::ptr::null_mut());

impl Source for Descriptors {
    type Watch = (RawFd, Ready);
    const MAX: usize = 1023;
    /// `poll` reports a ready descriptor however late it looks.
    const LOOK_AGAIN: Option<Duration> = None;

    fn slot() -> &'static AtomicPtr<Registry<Self>> {
        &DESCRIPTORS
    }

    fn new() -> io::Result<Self> {
        Ok(Descriptors {
            wake: sys::eventfd()?,
        })
    }

    fn snapshot(&self) -> u32 {
        0
    }

    fn interrupt(&self) {
        sys::eventfd_write(&self.wake);
    }

    fn sleep(&self, _: u32, watches: &[(RawFd, Ready)], deadline: Deadline) -> Fired {
        let mut pfds = Vec::with_capacity(watches.len() + 1);
        pfds.push(sys::pollfd(self.wake.as_raw_fd(), Ready::Read));
        pfds.extend(watches.iter().map(|&(fd, ready)| sys::pollfd(fd, ready)));
        // A program may lower its descriptor limit below what it has
        // open, and `poll` takes no more than the limit (EINVAL: a failure
        // each time, where every task would look again, re-arm and so
        // interrupt the next `poll`, for ever). Then the thread sleeps on
        // as many as it can, at most `OVERFLOW_POLL`, and looks at the
        // others in groups of that many without waiting.
        let mut polled = pfds.len();
        loop {
            let sleep = if polled < pfds.len() {
                deadline.capped(OVERFLOW_POLL)
            } else {
                deadline
            };
            match sys::poll(&mut pfds[..polled], sleep) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && polled > 1 => {
                    polled = (polled / 2).max(1);
                }
                Err(_) => return Fired::All,
            }
        }
        for group in pfds[polled..].chunks_mut(polled) {
            if sys::poll(group, Deadline::Now).is_err() {
                return Fired::All;
            }
        }
        if sys::ready(&pfds[0]) {
            sys::eventfd_read(&self.wake);
        }
        let ready: Vec<usize> = (1..pfds.len())
            .filter(|&i| sys::ready(&pfds[i]))
            .map(|i| i - 1)
            .collect();
        // None ready: an interruption or the deadline, after which the
        // watches beyond those polled are looked at.
        if ready.is_empty() {
            Fired::Nothing
        } else {
            Fired::Some(ready)
        }
    }
}

/// Waits, without blocking the thread, until `attempt` finishes: it is
/// called as a blocking wait loop's body is, and either finishes
/// (`Break`) or names the value of `word` to sleep on (`Continue`), having
/// announced a sleeper if the waking side needs to know. `Ok(None)` once
/// `deadline` has passed with `attempt` unfinished. As a blocking sleeper
/// does, it calls `attempt` again at least
/// every [`RECHECK`]: a waker killed before its wake-up call wakes nobody.
/// (Those looks are on a grid of [`LOOK_GRID`], so that the waiter thread
/// wakes once for the looks of many tasks.)
pub(crate) async fn word<T>(
    word: &AtomicU32,
    deadline: Deadline,
    attempt: impl FnMut() -> ControlFlow<T, u32>,
) -> Result<Option<T>> {
    on_word(word, deadline, true, attempt).await
}

/// As [`word`], for an `attempt` whose outcome depends on the value of
/// `word` alone: it is called again only when the word changes (or
/// `deadline` passes), so an idle task costs nothing. A waker killed
/// between its change of the word and its wake-up call is still seen:
/// the waiter thread has the kernel compare every word it watches again
/// every [`RECHECK`] ([`Source::LOOK_AGAIN`]).
pub(crate) async fn word_alone<T>(
    word: &AtomicU32,
    deadline: Deadline,
    attempt: impl FnMut() -> ControlFlow<T, u32>,
) -> Result<Option<T>> {
    on_word(word, deadline, false, attempt).await
}

async fn on_word<T>(
    word: &AtomicU32,
    deadline: Deadline,
    look_again: bool,
    mut attempt: impl FnMut() -> ControlFlow<T, u32>,
) -> Result<Option<T>> {
    let addr = word.as_ptr() as usize;
    // Before the first sleep, a short spin as a blocking waiter's: a peer
    // that is running answers within it, and the task is never suspended.
    let mut spun = false;
    until::<Futexes, T>(deadline, look_again, || loop {
        match attempt() {
            ControlFlow::Break(t) => return ControlFlow::Break(t),
            ControlFlow::Continue(v) if !spun => {
                spun = true;
                // Not for a deadline that has passed (a zero timeout):
                // that wait ends at its first look.
                if deadline.passed() || spin(word, |now| now != v).is_err() {
                    return ControlFlow::Continue((addr, v));
                }
            }
            ControlFlow::Continue(v) => return ControlFlow::Continue((addr, v)),
        }
    })
    .await
}

/// The grid that the periodic looks of [`word`] fall on.
const LOOK_GRID: Duration = Duration::from_millis(25);

/// When a task that looks again every [`RECHECK`] looks next: at most
/// that long from now, rounded down to the [`LOOK_GRID`] (which divides a
/// second), so that many tasks' looks come due together.
fn next_look() -> Deadline {
    match Deadline::after(RECHECK) {
        Deadline::At(mut t) => {
            let grid = LOOK_GRID.as_nanos() as i64;
            t.tv_nsec -= t.tv_nsec % grid;
            Deadline::At(t)
        }
        other => other,
    }
}

/// Waits, without blocking the thread, until `attempt` finishes; it names
/// (`Continue`) how `fd` must become ready before it is worth calling again.
pub(crate) async fn descriptor<T>(
    fd: RawFd,
    deadline: Deadline,
    mut attempt: impl FnMut() -> ControlFlow<Result<T>, Ready>,
) -> Result<Option<T>> {
    until::<Descriptors, Result<T>>(deadline, false, move || match attempt() {
        ControlFlow::Break(t) => ControlFlow::Break(t),
        ControlFlow::Continue(ready) => ControlFlow::Continue((fd, ready)),
    })
    .await?
    .transpose()
}

/// Waits until `attempt` finishes or `deadline` passes, calling it again
/// whenever its watch fires, and (if `look_again`) at least every
/// [`RECHECK`].
async fn until<S: Source, T>(
    deadline: Deadline,
    look_again: bool,
    mut attempt: impl FnMut() -> ControlFlow<T, S::Watch>,
) -> Result<Option<T>> {
    let mut registration = Registration::<S>::new();
    std::future::poll_fn(|cx| match attempt() {
        ControlFlow::Break(t) => Poll::Ready(Ok(Some(t))),
        ControlFlow::Continue(_) if deadline.passed() => Poll::Ready(Ok(None)),
        ControlFlow::Continue(w) => {
            let wake_at = if look_again {
                deadline.earlier(next_look())
            } else {
                deadline
            };
            match registration.arm(w, wake_at, cx.waker()) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        }
    })
    .await
}

/// Runs `future` to completion on this thread, sleeping while the future
/// waits: for code that drives an async algorithm whose waits block (the
/// barrier's blocking form), never a runtime.
///
/// The thread sleeps on a futex word of the waker's own, not through
/// `std::thread::park` and a waker kept in a thread-local: a blocking wait
/// may be called from a thread-local value's destructor (where the
/// thread's other thread-locals may be gone, and reaching one panics,
/// which aborts there) or on a thread that std did not make.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    /// Woken: 1 from a wake-up until the sleeper takes it.
    struct Unpark(AtomicU32);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.store(1, Ordering::Release);
            sys::futex_wake(&self.0, 1);
        }
    }
    let mut future = std::pin::pin!(future);
    // The barrier's blocking form finishes in its first poll: no waker is
    // made for it. A future that is pending is polled again at once with
    // the real waker, which it then keeps (as a re-poll must).
    let mut first = std::task::Context::from_waker(Waker::noop());
    if let Poll::Ready(out) = future.as_mut().poll(&mut first) {
        return out;
    }
    let unpark = Arc::new(Unpark(AtomicU32::new(0)));
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake-up during the poll is taken here, without a sleep; a
        // signal or a spurious return only loops.
        while unpark.0.swap(0, Ordering::Acquire) == 0 {
            sys::futex_wait(&unpark.0, 0, Deadline::Never);
        }
    }
}

/// A job for a keeper thread.
type Job = Box<dyn FnOnce() + Send>;

/// At most this many mutexes are held by one keeper thread at once. When
/// a thread dies, the kernel marks the robust mutexes it held by walking
/// its robust list, the last locked first, and walks at most 2048 links
/// (`ROBUST_LIST_LIMIT`): a mutex past those would stay held by a dead
/// thread, unmarked, for ever. Half that leaves room to spare.
const KEEPER_HOLDS: usize = 1024;

/// This process's keeper threads: they run jobs, in order on each thread,
/// for tasks that need something held by a thread while they await (a
/// condition waiter's presence mutex: tasks move between threads, and a
/// robust mutex belongs to the thread that took it). When the process
/// dies, the kernel marks what they held as its owner dead, exactly as for
/// a blocking waiter's thread. A thread is started when the others hold
/// [`KEEPER_HOLDS`] mutexes each.
struct Keepers {
    /// The [`token`] of the process that made them.
    process: usize,
    threads: Mutex<Vec<KeeperThread>>,
}

/// One keeper thread, and the mutexes it holds.
struct KeeperThread {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Mutexes it holds, or will once the jobs posted to it have run.
    holds: usize,
}

static KEEPERS: AtomicPtr<Keepers> = AtomicPtr::new(std::ptr::null_mut());

/// This process's keepers (and again in a forked child, which never
/// touches its parent's: see [`current`]).
fn keepers() -> Result<&'static Keepers> {
    let process = token().map_err(|e| Error::io("async waiter", e))?;
    loop {
        let seen = KEEPERS.load(Ordering::Acquire);
        // SAFETY: keepers are leaked, never freed.
        if let Some(k) = unsafe { seen.as_ref() } {
            if k.process == process {
                return Ok(k);
            }
        }
        let fresh = Box::into_raw(Box::new(Keepers {
            process,
            threads: Mutex::new(Vec::new()),
        }));
        match KEEPERS.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just installed; never freed from now on.
            Ok(_) => return Ok(unsafe { &*fresh }),
            // SAFETY: never shared; it started no thread.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

/// Starts a keeper thread; returns where its jobs go.
fn start_keeper() -> Result<std::sync::mpsc::Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("multiproc-keeper".into())
        .spawn(move || {
            for job in rx {
                // A job that panics must not end the thread.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .map_err(|e| Error::io("start the async keeper thread", e))?;
    Ok(tx)
}

/// The keeper thread that holds a mutex for a task, taken through
/// [`Keeper::take`]; [`Keeper::give_back`] lets go of it.
#[derive(Clone, Copy)]
pub(crate) struct Keeper {
    /// The [`token`] of the process that took it: a forked
    /// descendant has other keepers.
    process: usize,
    index: usize,
}

fn keeper_gone() -> Error {
    Error::io("async keeper thread", io::ErrorKind::BrokenPipe.into())
}

impl Keeper {
    /// Runs `take` on a keeper thread with room for one more mutex, after
    /// every job posted to that thread before it, and waits (blocking this
    /// thread briefly) for its result: `Ok` with the keeper if `take` took
    /// a mutex (its `Ok`), which [`give_back`](Keeper::give_back) must then
    /// let go of.
    pub(crate) fn take<T, E>(
        take: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
    ) -> Result<std::result::Result<(Keeper, T), E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let keepers = keepers()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let keeper = {
            let mut threads = lock(&keepers.threads);
            let index = match threads.iter().position(|t| t.holds < KEEPER_HOLDS) {
                Some(index) => index,
                None => {
                    threads.push(KeeperThread {
                        jobs: start_keeper()?,
                        holds: 0,
                    });
                    threads.len() - 1
                }
            };
            let thread = &mut threads[index];
            thread
                .jobs
                .send(Box::new(move || {
                    let _ = tx.send(take());
                }))
                .map_err(|_| keeper_gone())?;
            // Counted before it runs: jobs posted meanwhile see it.
            thread.holds += 1;
            Keeper {
                process: keepers.process,
                index,
            }
        };
        match rx.recv() {
            Ok(Ok(t)) => Ok(Ok((keeper, t))),
            Ok(Err(e)) => {
                keeper.uncount();
                Ok(Err(e))
            }
            Err(_) => {
                keeper.uncount();
                Err(keeper_gone())
            }
        }
    }

    /// The keeper threads of the process that took this keeper, if that
    /// is the calling process.
    fn threads(self) -> Option<std::sync::MutexGuard<'static, Vec<KeeperThread>>> {
        if token().ok() != Some(self.process) {
            return None;
        }
        // This process took it, so it has its keepers.
        keepers().ok().map(|k| lock(&k.threads))
    }

    /// Runs `give_back` on this keeper thread, after every job posted to
    /// it before, without waiting: it lets go of the mutex that
    /// [`take`](Keeper::take) took. Nothing in a forked descendant: the
    /// keeper, and the mutex, are the process's that took it.
    pub(crate) fn give_back(self, give_back: impl FnOnce() + Send + 'static) -> Result<()> {
        let Some(mut threads) = self.threads() else {
            return Ok(());
        };
        let Some(thread) = threads.get_mut(self.index) else {
            return Ok(());
        };
        thread
            .jobs
            .send(Box::new(give_back))
            .map_err(|_| keeper_gone())?;
        // Jobs posted after this one run after it, when it holds one fewer.
        thread.holds = thread.holds.saturating_sub(1);
        Ok(())
    }

    /// Counts a hold that was not taken after all.
    fn uncount(self) {
        if let Some(thread) = self.threads().as_mut().and_then(|t| t.get_mut(self.index)) {
            thread.holds = thread.holds.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key kept in one word (a closed queue handle's) comes back as the
    /// same process's key, a token or a pid.
    #[test]
    fn a_process_key_survives_its_word() {
        let mine = ProcessKey::current();
        let back = ProcessKey::from_word(mine.to_word()).expect("never 0");
        assert!(back.is_current());
        let pid = ProcessKey::of_pid(sys::cached_pid());
        assert!(ProcessKey::from_word(pid.to_word()).is_some_and(ProcessKey::is_current));
        let other = ProcessKey::of_pid(sys::cached_pid().wrapping_add(1));
        assert!(!ProcessKey::from_word(other.to_word()).is_some_and(ProcessKey::is_current));
        assert!(ProcessKey::from_word(0).is_none());
    }
}
