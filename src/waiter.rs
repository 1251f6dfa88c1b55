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
//! Two rules keep this sound when futures are dropped, forgotten or moved
//! across a `fork`:
//! - the thread never reads a registered address itself: only the kernel
//!   does (`futex_waitv` compares the values and reports an unmapped
//!   address as an error), so an entry left behind by a forgotten future is
//!   a spurious wake-up, never a read of freed memory;
//! - each process has its own registry, found by pid: a forked child never
//!   touches the registry (or its lock) that it inherited from its parent,
//!   whose waiter thread it does not have, and starts its own on first use.

use std::io;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
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
    type Watch: Copy + Eq + Send;
    /// How many distinct watches one sleep can cover.
    const MAX: usize;
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
    pid: u32,
    entries: Mutex<Entries<S>>,
}

struct Entries<S: Source> {
    list: Vec<Entry<S::Watch>>,
    /// The running waiter threads, each by its own interruptible sleep;
    /// thread `i` watches the entries whose `thread` is `i`.
    threads: Vec<Arc<S>>,
}

/// At most this many waiter threads per source (`MAX` watches each);
/// watches beyond them are looked at every [`OVERFLOW_POLL`].
const MAX_THREADS: usize = 64;

/// How long the last of several waiter threads stays with nothing to
/// watch before it ends.
const IDLE: Duration = Duration::from_secs(1);

struct Entry<W> {
    id: u64,
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
    forget_registries_in_children()?;
    let slot = S::slot();
    let pid = sys::getpid();
    loop {
        let seen = slot.load(Ordering::Acquire);
        // SAFETY: registries are leaked, never freed: a non-null pointer in
        // the slot is valid for the rest of the process.
        if let Some(r) = unsafe { seen.as_ref() } {
            if r.pid == pid {
                return Ok(r);
            }
        }
        let fresh = Box::into_raw(Box::new(Registry {
            pid,
            entries: Mutex::new(Entries {
                list: Vec::new(),
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

/// Makes every forked child start without registries (once per process
/// tree: the handler is inherited). The pid check in [`current`] alone
/// would be fooled by a descendant that gets the pid of an ancestor that
/// has exited.
fn forget_registries_in_children() -> io::Result<()> {
    extern "C" fn nothing() {}
    extern "C" fn forget() {
        FUTEXES.store(std::ptr::null_mut(), Ordering::Relaxed);
        DESCRIPTORS.store(std::ptr::null_mut(), Ordering::Relaxed);
        KEEPER.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
    static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    sys::at_fork(nothing, nothing, forget)
        .inspect_err(|_| INSTALLED.store(false, Ordering::Release))
}

/// One future's place in its process's registry; leaving it (on drop)
/// takes the entry out, so the waiter thread forgets the watch.
struct Registration<S: Source> {
    /// The process and entry id, once armed.
    armed: Option<(u32, u64)>,
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
        let mut entries = lock(&registry.entries);
        let id = match self.armed {
            Some((pid, id)) if pid == registry.pid => id,
            _ => NEXT_ID.fetch_add(1, Ordering::Relaxed),
        };
        self.armed = Some((registry.pid, id));
        match entries.list.iter_mut().find(|e| e.id == id) {
            Some(e) if e.watch == watch => {
                // Same watch: the thread already sleeps on it.
                if !e.waker.will_wake(waker) {
                    _replaced = Some(std::mem::replace(&mut e.waker, waker.clone()));
                }
                e.deadline = deadline;
                return Ok(());
            }
            Some(e) => {
                e.watch = watch;
                e.deadline = deadline;
                _replaced = Some(std::mem::replace(&mut e.waker, waker.clone()));
            }
            None => entries.list.push(Entry {
                id,
                thread: 0,
                watch,
                deadline,
                waker: waker.clone(),
            }),
        }
        let thread = match choose_thread(&entries, id, watch) {
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
                        entries.threads.push(source);
                        index
                    }
                    // The threads there are: the least busy polls the
                    // watches beyond what it can sleep on.
                    Err(_) if index > 0 => least_busy(&entries, id),
                    Err(e) => {
                        entries.list.retain(|e| e.id != id);
                        self.armed = None;
                        return Err(Error::io("start the async waiter thread", e));
                    }
                }
            }
        };
        if let Some(e) = entries.list.iter_mut().find(|e| e.id == id) {
            e.thread = thread;
        }
        entries.threads[thread].interrupt();
        Ok(())
    }
}

impl<S: Source> Drop for Registration<S> {
    fn drop(&mut self) {
        let Some((pid, id)) = self.armed else {
            return;
        };
        if pid != sys::getpid() {
            return; // armed in the parent before a fork: not this process's
        }
        if let Ok(registry) = current::<S>() {
            let mut entries = lock(&registry.entries);
            let gone = entries.list.iter().position(|e| e.id == id);
            let entry = gone.map(|i| entries.list.remove(i));
            // Its waker is dropped after the lock is released (see `arm`).
            drop(entries);
            drop(entry);
        }
    }
}

/// How long a thread given more than [`Source::MAX`] distinct watches
/// (when no more threads could be started) sleeps before it lets the
/// tasks beyond them look again.
const OVERFLOW_POLL: Duration = Duration::from_millis(2);

/// The thread for entry `id`'s `watch`: the one that watches the same
/// already, or the first with room (fewer than `MAX` other entries, so
/// fewer distinct watches); `None` if a new one is wanted.
fn choose_thread<S: Source>(entries: &Entries<S>, id: u64, watch: S::Watch) -> Option<usize> {
    let others = || entries.list.iter().filter(move |e| e.id != id);
    if let Some(e) = others().find(|e| e.watch == watch) {
        return Some(e.thread);
    }
    let mut load = vec![0usize; entries.threads.len()];
    for e in others() {
        if let Some(n) = load.get_mut(e.thread) {
            *n += 1;
        }
    }
    let room = load.iter().position(|&n| n < S::MAX);
    match room {
        Some(t) => Some(t),
        None if entries.threads.len() >= MAX_THREADS => Some(least_busy(entries, id)),
        None => None,
    }
}

/// The thread with the fewest entries but `id`'s.
fn least_busy<S: Source>(entries: &Entries<S>, id: u64) -> usize {
    let mut load = vec![0usize; entries.threads.len()];
    for e in entries.list.iter().filter(|e| e.id != id) {
        if let Some(n) = load.get_mut(e.thread) {
            *n += 1;
        }
    }
    (0..load.len()).min_by_key(|&t| load[t]).unwrap_or(0)
}

/// Waiter thread `index`, sleeping through `source` on the watches of
/// the entries given to it.
fn waiter_thread<S: Source>(registry: &'static Registry<S>, index: usize, source: Arc<S>) {
    let mut watches = Vec::new();
    let mut wake = Vec::new();
    let mut idle_since: Option<Instant> = None;
    loop {
        let snapshot = source.snapshot();
        let mut deadline = Deadline::Never;
        let mut overflow = false;
        {
            let mut entries = lock(&registry.entries);
            entries.list.retain(|e| {
                let expired = e.thread == index && e.deadline.passed();
                if expired {
                    wake.push(e.waker.clone());
                }
                !expired
            });
            watches.clear();
            for e in entries.list.iter().filter(|e| e.thread == index) {
                deadline = deadline.earlier(e.deadline);
                if !watches.contains(&e.watch) {
                    watches.push(e.watch);
                }
            }
            if watches.len() > S::MAX {
                watches.truncate(S::MAX);
                overflow = true;
                deadline = deadline.capped(OVERFLOW_POLL);
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
        }
        wake_each(&mut wake);
        let fired = source.sleep(snapshot, &watches, deadline);
        let mut entries = lock(&registry.entries);
        entries.list.retain(|e| {
            let woken = e.thread == index
                && match &fired {
                    Fired::All => true,
                    Fired::Some(which) => which.iter().any(|&i| watches[i] == e.watch),
                    Fired::Nothing => overflow && !watches.contains(&e.watch),
                };
            if woken {
                wake.push(e.waker.clone());
            }
            !woken
        });
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
            WaitvOutcome::Changed => Fired::All,
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
        if sys::poll(&mut pfds, deadline).is_err() {
            return Fired::All;
        }
        if sys::ready(&pfds[0]) {
            sys::eventfd_read(&self.wake);
        }
        Fired::Some(
            (1..pfds.len())
                .filter(|&i| sys::ready(&pfds[i]))
                .map(|i| i - 1)
                .collect(),
        )
    }
}

/// Waits, without blocking the thread, until `attempt` finishes: it is
/// called as a blocking wait loop's body is, and either finishes
/// (`Break`) or names the value of `word` to sleep on (`Continue`), having
/// announced a sleeper if the waking side needs to know. `Ok(None)` once
/// `deadline` has passed with `attempt` unfinished. As a blocking sleeper
/// does, it calls `attempt` again at least
/// every [`RECHECK`]: a waker killed before its wake-up call wakes nobody.
pub(crate) async fn word<T>(
    word: &AtomicU32,
    deadline: Deadline,
    mut attempt: impl FnMut() -> ControlFlow<T, u32>,
) -> Result<Option<T>> {
    let addr = word.as_ptr() as usize;
    // Before the first sleep, a short spin as a blocking waiter's: a peer
    // that is running answers within it, and the task is never suspended.
    let mut spun = false;
    loop {
        let slice = until::<Futexes, T>(deadline.capped(RECHECK), || loop {
            match attempt() {
                ControlFlow::Break(t) => return ControlFlow::Break(t),
                ControlFlow::Continue(v) if !spun => {
                    spun = true;
                    if spin(word, |now| now != v).is_err() {
                        return ControlFlow::Continue((addr, v));
                    }
                }
                ControlFlow::Continue(v) => return ControlFlow::Continue((addr, v)),
            }
        })
        .await?;
        if slice.is_some() || deadline.passed() {
            return Ok(slice);
        }
    }
}

/// Waits, without blocking the thread, until `attempt` finishes; it names
/// (`Continue`) how `fd` must become ready before it is worth calling again.
pub(crate) async fn descriptor<T>(
    fd: RawFd,
    deadline: Deadline,
    mut attempt: impl FnMut() -> ControlFlow<Result<T>, Ready>,
) -> Result<Option<T>> {
    until::<Descriptors, Result<T>>(deadline, move || match attempt() {
        ControlFlow::Break(t) => ControlFlow::Break(t),
        ControlFlow::Continue(ready) => ControlFlow::Continue((fd, ready)),
    })
    .await?
    .transpose()
}

async fn until<S: Source, T>(
    deadline: Deadline,
    mut attempt: impl FnMut() -> ControlFlow<T, S::Watch>,
) -> Result<Option<T>> {
    let mut registration = Registration::<S>::new();
    std::future::poll_fn(|cx| match attempt() {
        ControlFlow::Break(t) => Poll::Ready(Ok(Some(t))),
        ControlFlow::Continue(_) if deadline.passed() => Poll::Ready(Ok(None)),
        ControlFlow::Continue(w) => match registration.arm(w, deadline, cx.waker()) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        },
    })
    .await
}

/// Runs `future` to completion on this thread, parking it while the future
/// waits: for code that drives an async algorithm whose waits block (the
/// barrier's blocking form), never a runtime.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    thread_local! {
        /// This thread's waker, made once.
        static WAKER: Waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    }
    let waker = WAKER.with(Waker::clone);
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// A job for the keeper thread.
type Job = Box<dyn FnOnce() + Send>;

/// This process's keeper thread: it runs jobs, in order, for tasks that
/// need something held by a thread while they await (a condition
/// waiter's presence mutex: tasks move between threads, and a robust
/// mutex belongs to the thread that took it). When the process dies, the
/// kernel marks what the keeper held as its owner dead, exactly as for a
/// blocking waiter's thread.
struct Keeper {
    pid: u32,
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
}

static KEEPER: AtomicPtr<Keeper> = AtomicPtr::new(std::ptr::null_mut());

/// This process's keeper, started on first use (and again in a forked
/// child, which never touches its parent's: see [`current`]).
fn keeper() -> Result<&'static Keeper> {
    forget_registries_in_children().map_err(|e| Error::io("async waiter", e))?;
    let pid = sys::getpid();
    loop {
        let seen = KEEPER.load(Ordering::Acquire);
        // SAFETY: keepers are leaked, never freed.
        if let Some(k) = unsafe { seen.as_ref() } {
            if k.pid == pid {
                return Ok(k);
            }
        }
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
        let fresh = Box::into_raw(Box::new(Keeper {
            pid,
            jobs: Mutex::new(tx),
        }));
        match KEEPER.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just installed; never freed from now on.
            Ok(_) => return Ok(unsafe { &*fresh }),
            // SAFETY: never shared; dropping its sender ends its thread.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

/// Runs `job` on this process's keeper thread, after every job posted
/// before it, without waiting for it.
pub(crate) fn keep(job: impl FnOnce() + Send + 'static) -> Result<()> {
    let keeper = keeper()?;
    lock(&keeper.jobs)
        .send(Box::new(job))
        .map_err(|_| Error::io("async keeper thread", io::ErrorKind::BrokenPipe.into()))
}

/// Runs `job` on this process's keeper thread and waits (blocking this
/// thread briefly) for its result.
pub(crate) fn keep_and_wait<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    keep(move || {
        let _ = tx.send(job());
    })?;
    rx.recv()
        .map_err(|_| Error::io("async keeper thread", io::ErrorKind::BrokenPipe.into()))
}

/// Whether the calling process is the one that made `pid`'s keeper jobs.
pub(crate) fn same_process(pid: u32) -> bool {
    pid == sys::getpid()
}
