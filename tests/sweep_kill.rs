//! A "kill -9 at any instruction" sweep of the shared layer: for every
//! primitive, child processes hammer it in a tight loop and one of them is
//! killed (SIGKILL) after a random pause, from a microsecond to a few
//! milliseconds, so that over many trials the kill lands everywhere on the
//! hot paths. After each kill the survivors and the test check what the
//! crate promises after a death: the next locker gets the lock (told of
//! the death), a semaphore loses at most a dead holder's permits, waiters
//! are never stranded, a barrier breaks (unless the dead party was not
//! inside a wait), a queue neither reports corruption nor loses or repeats
//! an item beyond those in a dead consumer's hands. The Manager's clients
//! (through its shared-memory fast path and its socket) and its server are
//! killed the same way: no request is applied twice, no client hangs.
//!
//! Every object is anonymous (no segment to unlink); every process is a
//! daemon child of the test's thread, killed and reaped by the test.
//!
//! `MULTIPROC_SWEEP_TRIALS=N` runs N trials per primitive instead of the
//! few that keep the file quick (try thousands, in release mode).

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{join, static_child, wait_until, watchdog, Rng};
use multiproc::queue::Bytes;
use multiproc::sync::{ConditionGuard, LockGuard};
use multiproc::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, Process, Queue, RLock,
    RawArray, RawValue, RecoverableLockError, Semaphore, Value,
};

/// How long any one step may take on a loaded machine before it counts
/// as a hang.
const STEP: Duration = Duration::from_secs(20);

/// The trials per primitive: `MULTIPROC_SWEEP_TRIALS`, else `default`.
fn trials(default: usize) -> usize {
    std::env::var("MULTIPROC_SWEEP_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long a whole sweep of `n` trials may take.
fn sweep_limit(n: usize) -> Duration {
    Duration::from_secs(120) + STEP.saturating_mul(n as u32 / 20)
}

/// Waits between about 1 µs and 8 ms, log-uniformly, as `rng` draws:
/// most kills land early in a loop's life, where the first passes through
/// each path are, and some land long after. Spins below 200 µs, where a
/// sleep would be mostly its own overhead.
fn pause(rng: &mut Rng) {
    let scale = 1_000u64 << rng.below(14);
    let wait = Duration::from_nanos(scale + rng.below(scale));
    if wait < Duration::from_micros(200) {
        let end = Instant::now() + wait;
        while Instant::now() < end {
            std::hint::spin_loop();
        }
    } else {
        std::thread::sleep(wait);
    }
}

/// A counter in shared memory that a child bumps on every round.
#[derive(Clone)]
struct Beat(RawValue<u64>);

impl Beat {
    fn new() -> Beat {
        Beat(RawValue::new(0).unwrap())
    }

    fn tick(&self) {
        self.0.atomic().fetch_add(1, SeqCst);
    }

    fn get(&self) -> u64 {
        self.0.atomic().load(SeqCst)
    }

    /// Fails the test unless the counter moves on within `STEP`.
    fn moves(&self, who: &str) {
        let from = self.get();
        assert!(
            wait_until(STEP, || self.get() > from),
            "{who} made no progress within {STEP:?} (stuck at {from})"
        );
    }

    /// Waits until the child has made its first round.
    fn started(&self, who: &str) {
        assert!(wait_until(STEP, || self.get() > 0), "{who} never started");
    }
}

/// A hammering child and its beat.
struct Hammer {
    name: String,
    process: Process<'static>,
    beat: Beat,
    killed: bool,
}

impl Hammer {
    fn start(name: impl Into<String>, f: impl FnOnce(Beat) + Send + 'static) -> Hammer {
        let beat = Beat::new();
        let theirs = beat.clone();
        Hammer {
            name: name.into(),
            process: static_child(move || f(theirs)),
            beat,
            killed: false,
        }
    }

    /// Kills the child and reaps it; fails the test if it had died
    /// before (a failed check in the child, which printed why) unless it
    /// may have finished (`may_exit`).
    fn kill(&mut self, may_exit: bool) {
        self.process.kill().unwrap();
        let code = join(&self.process, STEP);
        self.killed = true;
        assert!(
            code == -9 || (may_exit && code == 0),
            "{} ended with {code} before it was killed",
            self.name
        );
    }
}

/// Starts every hammer, waits for each to run, pauses, then kills one at
/// random and checks that every survivor goes on, then kills the rest.
fn kill_all(rng: &mut Rng, hammers: &mut [Hammer]) {
    for h in hammers.iter() {
        h.beat.started(&h.name);
    }
    pause(rng);
    let victim = rng.below(hammers.len() as u64) as usize;
    hammers[victim].kill(false);
    for h in hammers.iter().filter(|h| !h.killed) {
        h.beat
            .moves(&format!("{} after {} died", h.name, hammers[victim].name));
    }
    kill_rest(rng, hammers, |_| false);
}

/// Kills every hammer not yet killed, in random order, after a pause
/// each; hammer `i` may have finished if `may_exit(i)`.
fn kill_rest(rng: &mut Rng, hammers: &mut [Hammer], may_exit: impl Fn(usize) -> bool) {
    let mut rest: Vec<usize> = (0..hammers.len()).filter(|&i| !hammers[i].killed).collect();
    while !rest.is_empty() {
        let i = rest.swap_remove(rng.below(rest.len() as u64) as usize);
        pause(rng);
        hammers[i].kill(may_exit(i));
    }
}

/// Takes `lock` in the hammer loop: repairs `holders` after a death.
fn take<'a>(lock: &'a Lock, holders: &RawValue<u32>, timed: bool) -> LockGuard<'a> {
    let r = if timed {
        lock.lock_recovering_timeout(STEP)
    } else {
        lock.lock_recovering()
    };
    match r {
        Ok(g) => g,
        Err(RecoverableLockError::OwnerDied(g)) => {
            holders.set(0);
            LockGuard::make_consistent(&g).unwrap();
            g
        }
        Err(e) => panic!("lock: {e}"),
    }
}

/// Lock: three children take and release in a loop, counting the
/// holders (three, so that one may sleep on the lock while another is
/// woken and killed); one is killed, the others go on; all killed, the
/// test takes the lock (told of the death if a holder died) and never
/// sees a second holder.
#[test]
fn lock_sweep() {
    let n = trials(150);
    watchdog("lock sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("lock sweep");
        let lock = Lock::new().unwrap();
        let holders = RawValue::new(0u32).unwrap();
        let mut deaths = 0;
        for _ in 0..n {
            let mut hammers: Vec<Hammer> = (0..3)
                .map(|k| {
                    let (lock, holders) = (lock.clone(), holders.clone());
                    Hammer::start(format!("locker {k}"), move |beat| {
                        for i in 0u64.. {
                            let g = take(&lock, &holders, i % 2 == 1);
                            assert_eq!(holders.atomic().fetch_add(1, SeqCst), 0, "two holders");
                            holders.atomic().fetch_sub(1, SeqCst);
                            drop(g);
                            beat.tick();
                        }
                    })
                })
                .collect();
            kill_all(&mut rng, &mut hammers);
            match lock.lock_recovering_timeout(STEP) {
                Ok(g) => {
                    assert_eq!(holders.get(), 0, "free lock, but a holder inside");
                    drop(g);
                }
                Err(RecoverableLockError::OwnerDied(g)) => {
                    deaths += 1;
                    holders.set(0);
                    LockGuard::make_consistent(&g).unwrap();
                }
                Err(e) => panic!("after the kills: {e}"),
            }
            // Released: free for another thread at once.
            std::thread::scope(|s| {
                s.spawn(|| assert!(lock.try_lock().is_ok(), "released lock still held"));
            });
        }
        eprintln!("lock sweep: {n} trials, {deaths} with the last holder killed");
    });
}

/// RLock: as for the Lock, each child taking it three deep; after the
/// kills the test's own recursion count is right (one release per
/// acquisition frees it for another thread).
#[test]
fn rlock_sweep() {
    let n = trials(150);
    watchdog("rlock sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("rlock sweep");
        let rlock = RLock::new().unwrap();
        let holders = RawValue::new(0u32).unwrap();
        let acquire = |rlock: &RLock, holders: &RawValue<u32>| -> bool {
            match rlock.acquire() {
                Ok(()) => false,
                Err(RecoverableLockError::OwnerDied(())) => {
                    holders.set(0);
                    rlock.make_consistent().unwrap();
                    true
                }
                Err(e) => panic!("acquire: {e}"),
            }
        };
        let mut deaths = 0;
        for _ in 0..n {
            let mut hammers: Vec<Hammer> = (0..3)
                .map(|k| {
                    let (rlock, holders) = (rlock.clone(), holders.clone());
                    Hammer::start(format!("rlocker {k}"), move |beat| loop {
                        acquire(&rlock, &holders);
                        assert_eq!(holders.atomic().fetch_add(1, SeqCst), 0, "two holders");
                        let inner = rlock.lock().expect("re-enter");
                        rlock.acquire().expect("re-enter");
                        rlock.release().unwrap();
                        drop(inner);
                        holders.atomic().fetch_sub(1, SeqCst);
                        rlock.release().unwrap();
                        beat.tick();
                    })
                })
                .collect();
            kill_all(&mut rng, &mut hammers);
            let died = watchdog("rlock after kills", STEP, || acquire(&rlock, &holders));
            if died {
                deaths += 1;
            } else {
                assert_eq!(holders.get(), 0, "free rlock, but a holder inside");
            }
            rlock.acquire().unwrap();
            rlock.release().unwrap();
            let other_gets_it =
                || std::thread::scope(|s| s.spawn(|| rlock.try_lock().is_ok()).join().unwrap());
            assert!(!other_gets_it(), "held once, yet free for another thread");
            rlock.release().unwrap();
            assert!(other_gets_it(), "released, yet still held");
            assert!(rlock.release().is_err(), "released more than taken");
        }
        eprintln!("rlock sweep: {n} trials, {deaths} with the last holder killed");
    });
}

/// Where a semaphore hammer is in its round, for the permits its death
/// may have taken.
const IDLE: u32 = 0;
const ACQUIRING: u32 = 1;
const HOLDING: u32 = 2;
const RELEASING: u32 = 3;

/// Semaphore and BoundedSemaphore of 2 permits, three children taking and
/// giving back: one killed, the others go on (they share at least one
/// permit); all killed, the count is the initial one less the permits
/// the dead held (a dead holder's permit is not given back, as
/// documented), a bounded one never passes its bound, and every permit
/// left can be taken at once.
fn semaphore_sweep(sem: &Semaphore, bounded: bool, what: &str) {
    const PERMITS: u32 = 2;
    let n = trials(100);
    watchdog(what, sweep_limit(n), || {
        let mut rng = Rng::from_clock(what);
        let mut lost_total = 0;
        for _ in 0..n {
            let phases: Vec<RawValue<u32>> = (0..3).map(|_| RawValue::new(IDLE).unwrap()).collect();
            let mut hammers: Vec<Hammer> = (0..3)
                .map(|k| {
                    let (sem, phase) = (sem.clone(), phases[k].clone());
                    Hammer::start(format!("{what} user {k}"), move |beat| {
                        for i in 0u64.. {
                            phase.set(ACQUIRING);
                            match i % 3 {
                                0 => sem.acquire(),
                                1 => assert!(sem.acquire_timeout(STEP), "no permit in {STEP:?}"),
                                _ => {
                                    while !sem.try_acquire() {
                                        std::hint::spin_loop();
                                    }
                                }
                            }
                            phase.set(HOLDING);
                            assert!(sem.value() < PERMITS, "a permit held, yet all free");
                            phase.set(RELEASING);
                            sem.release().expect("release");
                            phase.set(IDLE);
                            beat.tick();
                        }
                    })
                })
                .collect();
            kill_all(&mut rng, &mut hammers);
            // What each death may have taken: [least, most] permits.
            let (mut least, mut most) = (0, 0);
            for phase in &phases {
                match phase.get() {
                    IDLE => {}
                    HOLDING => {
                        least += 1;
                        most += 1;
                    }
                    _ => most += 1,
                }
            }
            let value = sem.value();
            assert!(
                (PERMITS.saturating_sub(most)..=PERMITS - least).contains(&value),
                "{value} permits left, {least}..={most} lost"
            );
            let lost = PERMITS - value;
            lost_total += lost;
            // Every free permit can be taken, at once, and no more.
            for _ in 0..value {
                assert!(
                    sem.acquire_timeout(STEP),
                    "a free permit could not be taken"
                );
            }
            assert!(!sem.try_acquire(), "more permits than the count said");
            for _ in 0..PERMITS {
                sem.release().unwrap();
            }
            assert_eq!(sem.value(), PERMITS);
            if bounded {
                assert!(matches!(sem.release(), Err(Error::TooManyReleases)));
                assert_eq!(sem.value(), PERMITS);
            }
        }
        eprintln!("{what}: {n} trials, {lost_total} permits lost with their dead holders");
    });
}

#[test]
fn semaphore_sweep_unbounded() {
    semaphore_sweep(&Semaphore::new(2).unwrap(), false, "semaphore sweep");
}

#[test]
fn bounded_semaphore_sweep() {
    semaphore_sweep(
        &BoundedSemaphore::new(2).unwrap(),
        true,
        "bounded semaphore sweep",
    );
}

/// Event: a child sets and clears the flag in a loop while two children
/// wait for it; one of the three is killed, then the setter is; a `set`
/// by the test then wakes every waiter left.
#[test]
fn event_sweep() {
    let n = trials(150);
    watchdog("event sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("event sweep");
        for _ in 0..n {
            let event = Event::new().unwrap();
            let mut hammers: Vec<Hammer> = (0..2)
                .map(|k| {
                    let event = event.clone();
                    Hammer::start(format!("waiter {k}"), move |beat| {
                        for i in 0u64.. {
                            if i % 2 == 0 {
                                event.wait();
                            } else {
                                // `false` before the timeout: a set the
                                // setter's clear undid at once (a pulse).
                                let t = Instant::now();
                                let set = event.wait_timeout(STEP);
                                assert!(set || t.elapsed() < STEP, "not set within {STEP:?}");
                            }
                            beat.tick();
                        }
                    })
                })
                .collect();
            let theirs = event.clone();
            hammers.push(Hammer::start("setter", move |beat| loop {
                theirs.set();
                beat.tick();
                theirs.clear();
            }));
            for h in &hammers {
                h.beat.started(&h.name);
            }
            pause(&mut rng);
            let victim = rng.below(3) as usize;
            hammers[victim].kill(false);
            if !hammers[2].killed {
                pause(&mut rng);
                hammers[2].kill(false);
            }
            event.set();
            for h in hammers.iter().filter(|h| !h.killed) {
                h.beat.moves(&format!("{} after the set", h.name));
            }
            for h in hammers.iter_mut().filter(|h| !h.killed) {
                h.kill(false);
            }
        }
        eprintln!("event sweep: {n} trials");
    });
}

/// Takes a condition's lock in a hammer loop, repairing after a death.
fn cond_lock(cond: &Condition) -> ConditionGuard<'_> {
    match cond.lock_recovering() {
        Ok(g) => g,
        Err(RecoverableLockError::OwnerDied(g)) => {
            ConditionGuard::make_consistent(&g).unwrap();
            g
        }
        Err(e) => panic!("condition lock: {e}"),
    }
}

/// Waits on `g` until `ticket` moves past `seen`, repairing after a death.
fn wait_past(g: &mut ConditionGuard<'_>, ticket: &RawValue<u64>, seen: u64) {
    while ticket.get() == seen {
        match g.wait() {
            Ok(()) => {}
            Err(Error::OwnerDied) => ConditionGuard::make_consistent(g).unwrap(),
            Err(e) => panic!("wait: {e}"),
        }
    }
}

/// Condition: two children wait for a ticket to move, a third moves it
/// and notifies one waiter or all, in a loop; one of the three is killed
/// and the others go on (the test notifying if the notifier died). All
/// killed, a new waiter is woken by a single `notify(1)`: no dead waiter
/// swallows it.
#[test]
fn condition_sweep() {
    let n = trials(120);
    watchdog("condition sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("condition sweep");
        let cond = Condition::new().unwrap();
        let ticket = RawValue::new(0u64).unwrap();
        for _ in 0..n {
            let mut hammers: Vec<Hammer> = (0..2)
                .map(|k| {
                    let (cond, ticket) = (cond.clone(), ticket.clone());
                    Hammer::start(format!("waiter {k}"), move |beat| loop {
                        let mut g = cond_lock(&cond);
                        wait_past(&mut g, &ticket, ticket.get());
                        drop(g);
                        beat.tick();
                    })
                })
                .collect();
            let (theirs, their_ticket) = (cond.clone(), ticket.clone());
            hammers.push(Hammer::start("notifier", move |beat| {
                for i in 0u64.. {
                    let g = cond_lock(&theirs);
                    their_ticket.set(their_ticket.get() + 1);
                    if i % 2 == 0 {
                        g.notify(1);
                    } else {
                        g.notify_all();
                    }
                    drop(g);
                    beat.tick();
                }
            }));
            for h in &hammers {
                h.beat.started(&h.name);
            }
            pause(&mut rng);
            let victim = rng.below(3) as usize;
            hammers[victim].kill(false);
            if victim == 2 {
                // The test notifies, one waiter at a time: each notify(1)
                // must reach a live waiter.
                for _ in 0..2 {
                    let waiting: Vec<u64> = hammers.iter().map(|h| h.beat.get()).collect();
                    let g = watchdog("condition lock", STEP, || cond_lock(&cond));
                    ticket.set(ticket.get() + 1);
                    g.notify(1);
                    drop(g);
                    assert!(
                        wait_until(STEP, || hammers[..2]
                            .iter()
                            .zip(&waiting)
                            .any(|(h, &w)| !h.killed && h.beat.get() > w)),
                        "notify(1) after the notifier died woke nobody"
                    );
                }
            } else {
                for h in hammers.iter().filter(|h| !h.killed) {
                    h.beat
                        .moves(&format!("{} after {} died", h.name, hammers[victim].name));
                }
            }
            kill_rest(&mut rng, &mut hammers, |_| false);
            one_notify_wakes_a_new_waiter(&cond, &ticket);
        }
        eprintln!("condition sweep: {n} trials");
    });
}

/// A new waiter, once inside its wait, is woken by one `notify(1)`.
fn one_notify_wakes_a_new_waiter(cond: &Condition, ticket: &RawValue<u64>) {
    let inside = RawValue::new(0u32).unwrap();
    let (theirs, their_ticket, their_inside) = (cond.clone(), ticket.clone(), inside.clone());
    let waiter = static_child(move || {
        let mut g = cond_lock(&theirs);
        let seen = their_ticket.get();
        their_inside.set(1);
        wait_past(&mut g, &their_ticket, seen);
    });
    assert!(
        wait_until(STEP, || inside.get() == 1),
        "new waiter never came"
    );
    // Its wait released the lock: taking it means the waiter waits.
    let g = watchdog("condition lock", STEP, || cond_lock(cond));
    ticket.set(ticket.get() + 1);
    g.notify(1);
    drop(g);
    assert_eq!(join(&waiter, STEP), 0, "new waiter not woken by notify(1)");
}

/// Barrier of three parties, three children passing it in a loop: one is
/// killed, the two others get `BrokenBarrier` (never a hang, never
/// another error), or, if it died outside a wait (or inside one whose
/// pass the others then filled), they wait alone for it until the test
/// aborts the barrier; after a reset the barrier works again.
#[test]
fn barrier_sweep() {
    let n = trials(60);
    watchdog("barrier sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("barrier sweep");
        let (mut passes, mut outside) = (0, 0);
        for _ in 0..n {
            let barrier = Barrier::new(3).unwrap();
            let mut hammers: Vec<Hammer> = (0..3)
                .map(|k| {
                    let barrier = barrier.clone();
                    Hammer::start(format!("party {k}"), move |beat| loop {
                        match barrier.wait() {
                            Ok(_) => beat.tick(),
                            Err(Error::BrokenBarrier) => return,
                            Err(e) => panic!("wait: {e}"),
                        }
                    })
                })
                .collect();
            for h in &hammers {
                h.beat.started(&h.name);
            }
            pause(&mut rng);
            let victim = rng.below(3) as usize;
            hammers[victim].kill(false);
            // A party killed inside breaks the barrier; one killed
            // outside (before it entered, after it left) is a party that
            // never comes, as in Python: the two others wait, alone in the
            // pass, until the test aborts it.
            let survivors: Vec<&Hammer> = hammers.iter().filter(|h| !h.killed).collect();
            let out = || survivors.iter().all(|h| h.process.exitcode().is_some());
            let mut alone_since = None;
            let ended = wait_until(STEP, || {
                if out() {
                    return true;
                }
                if barrier.n_waiting() == 2 {
                    let since = *alone_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(200) {
                        barrier.abort().unwrap();
                        outside += 1;
                    }
                } else {
                    alone_since = None;
                }
                false
            });
            assert!(ended, "survivors neither broken out nor alone in the pass");
            for h in survivors {
                assert_eq!(join(&h.process, STEP), 0, "{} after the kill", h.name);
                passes += h.beat.get();
            }
            assert!(barrier.is_broken());
            barrier.reset().unwrap();
            std::thread::scope(|s| {
                let waits: Vec<_> = (0..3)
                    .map(|_| s.spawn(|| barrier.wait_timeout(STEP)))
                    .collect();
                for w in waits {
                    w.join().unwrap().expect("a pass after the reset");
                }
            });
        }
        eprintln!("barrier sweep: {n} trials, {passes} passes, {outside} parties killed outside");
    });
}

/// Which queue operations a queue sweep hammers.
#[derive(Clone, Copy, Debug)]
enum Ops {
    /// `put` and `get` (and their timed forms).
    Single,
    /// `put_many` and `get_many`.
    Batch,
    /// A `Queue<Bytes>`: `put_with` and `get_with`.
    Bytes,
}

/// The most items a batch moves.
const BATCH: u64 = 8;
/// Items each producer puts in a trial (then it exits).
const PER_PRODUCER: u64 = 1 << 13;
/// Items a consumer can log.
const LOG: usize = 2 * PER_PRODUCER as usize + 64;

fn item(producer: u64, seq: u64) -> u64 {
    producer << 40 | seq
}

/// The bytes of a `Bytes` frame for `item`: its 8 bytes, then a length
/// that varies with it, filled with a pattern a torn frame would break.
fn frame_len(item: u64) -> usize {
    8 + (item % 29) as usize
}

fn fill_frame(item: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&item.to_le_bytes());
    for (i, b) in buf[8..].iter_mut().enumerate() {
        *b = (item as u8).wrapping_add(i as u8);
    }
}

fn read_frame(buf: &[u8]) -> u64 {
    let item = u64::from_le_bytes(buf[..8].try_into().expect("a frame of 8 bytes or more"));
    assert_eq!(
        buf.len(),
        frame_len(item),
        "frame of {item:#x}: wrong length"
    );
    for (i, &b) in buf[8..].iter().enumerate() {
        assert_eq!(
            b,
            (item as u8).wrapping_add(i as u8),
            "frame of {item:#x} torn"
        );
    }
    item
}

/// A queue of either kind, as a sweep uses it.
#[derive(Clone)]
enum AnyQueue {
    Items(Queue<u64>),
    Frames(Queue<Bytes>),
}

impl AnyQueue {
    fn len(&self) -> usize {
        match self {
            AnyQueue::Items(q) => q.len(),
            AnyQueue::Frames(q) => q.len(),
        }
    }

    fn put(&self, ops: Ops, items: &[u64], round: u64) {
        match (self, ops) {
            (AnyQueue::Items(q), Ops::Batch) => {
                q.put_many(items.iter().copied()).expect("put_many")
            }
            (AnyQueue::Items(q), _) => {
                let r = if round % 2 == 0 {
                    q.put(items[0])
                } else {
                    q.put_timeout(items[0], STEP)
                };
                assert!(r.is_ok(), "put failed");
            }
            (AnyQueue::Frames(q), _) => {
                let it = items[0];
                q.put_with(frame_len(it), |buf| fill_frame(it, buf))
                    .expect("put_with");
            }
        }
    }

    /// The next items, `Err(Empty)` if none came within `timeout` (`None`:
    /// wait as long as it takes).
    fn get(&self, ops: Ops, timeout: Option<Duration>) -> multiproc::Result<Vec<u64>> {
        match (self, ops, timeout) {
            (AnyQueue::Items(q), Ops::Batch, None) => q.get_many(BATCH as usize),
            (AnyQueue::Items(q), Ops::Batch, Some(t)) => q.get_many_timeout(BATCH as usize, t),
            (AnyQueue::Items(q), _, None) => q.get().map(|i| vec![i]),
            (AnyQueue::Items(q), _, Some(t)) => q.get_timeout(t).map(|i| vec![i]),
            (AnyQueue::Frames(q), _, None) => q.get_with(read_frame).map(|i| vec![i]),
            (AnyQueue::Frames(q), _, Some(t)) => q.get_with_timeout(t, read_frame).map(|i| vec![i]),
        }
    }
}

/// What one consumer took: a log of items, and whether it was between a
/// get and the logging of what it got (an item in its hands is lost when
/// it dies).
#[derive(Clone)]
struct Taken {
    log: RawArray<u64>,
    len: RawValue<u64>,
    in_hands: RawValue<u32>,
}

/// A queue sweep: two producers put numbered items, two consumers take
/// them, on a small ring that fills and wraps; one of the four is killed
/// and the others go on; all killed, the test drains the queue. No error
/// (a healthy queue never reports corruption), no item twice, none that
/// was not put, per producer in order, and every item whose put returned
/// is found but for those in a dead consumer's hands.
fn queue_sweep(ops: Ops, what: &str) {
    let n = trials(80);
    watchdog(what, sweep_limit(n), || {
        let mut rng = Rng::from_clock(what);
        let mut lost_total = 0;
        let mut moved_total = 0;
        for _ in 0..n {
            let queue = match ops {
                Ops::Bytes => AnyQueue::Frames(Queue::with_capacity(0, 256).unwrap()),
                _ => AnyQueue::Items(Queue::with_capacity(12, 256).unwrap()),
            };
            let confirmed: Vec<RawValue<u64>> = (0..2).map(|_| RawValue::new(0).unwrap()).collect();
            let attempted: Vec<RawValue<u64>> = (0..2).map(|_| RawValue::new(0).unwrap()).collect();
            let taken: Vec<Taken> = (0..2)
                .map(|_| Taken {
                    log: RawArray::new(LOG).unwrap(),
                    len: RawValue::new(0).unwrap(),
                    in_hands: RawValue::new(0).unwrap(),
                })
                .collect();
            let mut hammers = Vec::new();
            for p in 0..2u64 {
                let (queue, confirmed, attempted) = (
                    queue.clone(),
                    confirmed[p as usize].clone(),
                    attempted[p as usize].clone(),
                );
                hammers.push(Hammer::start(format!("producer {p}"), move |beat| {
                    let mut seq = 0;
                    for round in 0u64.. {
                        let size = match ops {
                            Ops::Batch => 1 + round % BATCH,
                            _ => 1,
                        }
                        .min(PER_PRODUCER - seq);
                        if size == 0 {
                            return;
                        }
                        let items: Vec<u64> = (seq..seq + size).map(|s| item(p, s)).collect();
                        attempted.set(seq + size);
                        queue.put(ops, &items, round);
                        seq += size;
                        confirmed.set(seq);
                        beat.tick();
                    }
                }));
            }
            for (c, t) in taken.iter().enumerate() {
                let (queue, t) = (queue.clone(), t.clone());
                hammers.push(Hammer::start(format!("consumer {c}"), move |beat| loop {
                    t.in_hands.set(1);
                    let items = queue.get(ops, None).expect("get");
                    for it in items {
                        let at = t.len.get();
                        t.log.set(at as usize, it).expect("log full");
                        t.len.set(at + 1);
                    }
                    t.in_hands.set(0);
                    beat.tick();
                }));
            }
            // Each one goes on, unless it has nothing left to do: a
            // producer that put its share, a consumer with nothing left to
            // take (every live producer done, the queue empty).
            let goes_on = |hammers: &[Hammer], i: usize, what: &str| {
                let idle = || {
                    let all_put =
                        (0..2).all(|p| hammers[p].killed || confirmed[p].get() == PER_PRODUCER);
                    if i < 2 {
                        confirmed[i].get() == PER_PRODUCER
                    } else {
                        all_put && queue.len() == 0
                    }
                };
                let from = hammers[i].beat.get();
                assert!(
                    wait_until(STEP, || hammers[i].beat.get() > from || idle()),
                    "{} made no progress {what} (beats {:?}, confirmed {:?}, queue length {})",
                    hammers[i].name,
                    hammers.iter().map(|h| h.beat.get()).collect::<Vec<_>>(),
                    confirmed.iter().map(|c| c.get()).collect::<Vec<_>>(),
                    queue.len(),
                );
            };
            for i in 0..4 {
                goes_on(&hammers, i, "at the start");
            }
            pause(&mut rng);
            let victim = rng.below(4) as usize;
            hammers[victim].kill(victim < 2);
            for i in 0..4 {
                if !hammers[i].killed {
                    let what = format!("after {} died", hammers[victim].name);
                    goes_on(&hammers, i, &what);
                }
            }
            kill_rest(&mut rng, &mut hammers, |i| i < 2);
            // Drain what is left; the ring must read clean.
            let mut drained = Vec::new();
            loop {
                match queue.get(ops, Some(Duration::ZERO)) {
                    Ok(items) => drained.extend(items),
                    Err(Error::Empty | Error::Timeout) => break,
                    Err(e) => panic!("{what}: draining after the kills: {e}"),
                }
            }
            // Check what was taken against what was put.
            let mut seen = HashSet::new();
            let mut last_taken = [None::<u64>; 2];
            let mut allowance = 0;
            for t in &taken {
                if t.in_hands.get() == 1 {
                    allowance += match ops {
                        Ops::Batch => BATCH,
                        _ => 1,
                    };
                }
                let mut last = [None::<u64>; 2];
                for k in 0..t.len.get() as usize {
                    let it = t.log.get(k).unwrap();
                    let (p, seq) = ((it >> 40) as usize, it & ((1 << 40) - 1));
                    assert!(
                        p < 2 && seq < attempted[p].get(),
                        "{what}: item {it:#x} never put"
                    );
                    assert!(seen.insert(it), "{what}: item {it:#x} taken twice");
                    assert!(
                        last[p] < Some(seq),
                        "{what}: producer {p}'s items out of order"
                    );
                    last[p] = Some(seq);
                    last_taken[p] = last_taken[p].max(Some(seq));
                }
            }
            let mut last = [None::<u64>; 2];
            for &it in &drained {
                let (p, seq) = ((it >> 40) as usize, it & ((1 << 40) - 1));
                assert!(
                    p < 2 && seq < attempted[p].get(),
                    "{what}: item {it:#x} never put"
                );
                assert!(
                    seen.insert(it),
                    "{what}: item {it:#x} left after it was taken"
                );
                assert!(
                    last_taken[p] < Some(seq),
                    "{what}: item {it:#x} left behind later ones"
                );
                assert!(
                    last[p] < Some(seq),
                    "{what}: producer {p}'s items out of order"
                );
                last[p] = Some(seq);
            }
            let mut lost = 0;
            for p in 0..2u64 {
                lost += (0..confirmed[p as usize].get())
                    .filter(|&s| !seen.contains(&item(p, s)))
                    .count() as u64;
            }
            assert!(
                lost <= allowance,
                "{what}: {lost} items lost, only {allowance} were in dead consumers' hands"
            );
            lost_total += lost;
            moved_total += seen.len();
            // Still usable.
            queue.put(ops, &[item(0, 0)], 0);
            assert_eq!(
                queue.get(ops, Some(STEP)).expect("get after the sweep"),
                [item(0, 0)]
            );
        }
        eprintln!("{what}: {n} trials, {moved_total} items moved, {lost_total} lost in dead hands");
    });
}

#[test]
fn queue_sweep_single() {
    queue_sweep(Ops::Single, "queue sweep (put/get)");
}

#[test]
fn queue_sweep_batch() {
    queue_sweep(Ops::Batch, "queue sweep (put_many/get_many)");
}

#[test]
fn queue_sweep_bytes() {
    queue_sweep(Ops::Bytes, "queue sweep (bytes)");
}

/// Value and Array behind their locks: three writers keep `[a, b]` equal
/// (writing a, then b, under the lock); one is killed, the others go on;
/// all killed, the next locker finds the pair equal unless told that a
/// holder died (then it repairs).
#[test]
fn cell_sweep() {
    let n = trials(150);
    watchdog("cell sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("cell sweep");
        let array = Array::from_slice(&[0u64, 0]).unwrap();
        let value = Value::new([0u64, 0]).unwrap();
        let mut deaths = 0;
        for _ in 0..n {
            let mut hammers: Vec<Hammer> = (0..3)
                .map(|k| {
                    let (array, value) = (array.clone(), value.clone());
                    Hammer::start(format!("writer {k}"), move |beat| loop {
                        let mut a = match array.lock_recovering() {
                            Ok(g) => g,
                            Err(RecoverableLockError::OwnerDied(mut g)) => {
                                g[1] = g[0];
                                multiproc::cell::CellGuard::make_consistent(&g).unwrap();
                                g
                            }
                            Err(e) => panic!("array lock: {e}"),
                        };
                        assert_eq!(a[0], a[1], "array torn under a clean lock");
                        a[0] += 1;
                        a[1] = std::hint::black_box(a[0]);
                        drop(a);
                        let mut v = match value.lock_recovering_timeout(STEP) {
                            Ok(g) => g,
                            Err(RecoverableLockError::OwnerDied(mut g)) => {
                                g[1] = g[0];
                                multiproc::cell::CellGuard::make_consistent(&g).unwrap();
                                g
                            }
                            Err(e) => panic!("value lock: {e}"),
                        };
                        assert_eq!(v[0], v[1], "value torn under a clean lock");
                        v[0] += 1;
                        v[1] = std::hint::black_box(v[0]);
                        drop(v);
                        beat.tick();
                    })
                })
                .collect();
            kill_all(&mut rng, &mut hammers);
            match array.lock_recovering_timeout(STEP) {
                Ok(g) => assert_eq!(g[0], g[1], "array torn under a clean lock"),
                Err(RecoverableLockError::OwnerDied(mut g)) => {
                    deaths += 1;
                    g[1] = g[0];
                    multiproc::cell::CellGuard::make_consistent(&g).unwrap();
                }
                Err(e) => panic!("array after the kills: {e}"),
            }
            match value.lock_recovering_timeout(STEP) {
                Ok(g) => assert_eq!(g[0], g[1], "value torn under a clean lock"),
                Err(RecoverableLockError::OwnerDied(mut g)) => {
                    deaths += 1;
                    g[1] = g[0];
                    multiproc::cell::CellGuard::make_consistent(&g).unwrap();
                }
                Err(e) => panic!("value after the kills: {e}"),
            }
            assert_eq!(value.get().unwrap()[0], value.get().unwrap()[1]);
        }
        eprintln!("cell sweep: {n} trials, {deaths} locks found with a dead holder");
    });
}

/// The Manager's clients, through the shared-memory fast path and the
/// socket: three children each bump their own key (small requests, in
/// the shared area) and now and then store a value too large for the
/// area (on the socket), counting each acknowledged bump in shared
/// memory; one is killed, the others go on; all killed, each key holds
/// the acknowledged bumps, or one more (a bump the server applied whose
/// answer its client never read), never fewer nor two more, and the
/// server serves a new client and drops the dead clients' references.
#[test]
fn manager_client_sweep() {
    let n = trials(60);
    watchdog("manager client sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("manager client sweep");
        let m = multiproc::Manager::start().unwrap();
        let d = m.dict::<u32, u64>().unwrap();
        let blobs = m.dict::<u32, Vec<u64>>().unwrap();
        let acked = RawArray::<u64>::new(3).unwrap();
        let objects = m.number_of_objects().unwrap();
        let mut unanswered = 0;
        for trial in 0..n as u32 {
            let keys = [3 * trial, 3 * trial + 1, 3 * trial + 2];
            for k in 0..3 {
                acked.atomic(k).unwrap().store(0, SeqCst);
            }
            let mut hammers: Vec<Hammer> = (0..3)
                .map(|k| {
                    let (d, blobs, acked) = (d.clone(), blobs.clone(), acked.clone());
                    Hammer::start(format!("client {k}"), move |beat| {
                        // Over the area's 64 KiB: this one takes the socket.
                        let blob = vec![u64::from(keys[k]); 10_000];
                        for i in 0u64.. {
                            d.increment(&keys[k], 1).unwrap();
                            acked.atomic(k).unwrap().fetch_add(1, SeqCst);
                            if i % 16 == 15 {
                                blobs.set(keys[k], blob.clone()).unwrap();
                                assert_eq!(blobs.get(&keys[k]).unwrap().as_ref(), Some(&blob));
                            }
                            beat.tick();
                        }
                    })
                })
                .collect();
            kill_all(&mut rng, &mut hammers);
            for (k, key) in keys.iter().enumerate() {
                let acked = acked.atomic(k).unwrap().load(SeqCst);
                let stored = d.get(key).unwrap().unwrap_or(0);
                assert!(
                    stored == acked || stored == acked + 1,
                    "client {k}: {acked} bumps acknowledged, {stored} stored"
                );
                unanswered += stored - acked;
            }
            // The dead clients' proxies were released with their connections.
            assert!(
                wait_until(STEP, || m.number_of_objects().unwrap() == objects),
                "{} objects after trial {trial}, {objects} before",
                m.number_of_objects().unwrap()
            );
        }
        eprintln!("manager client sweep: {n} trials, {unanswered} bumps applied but not answered");
    });
}

/// The Manager's server killed at a random moment while three clients
/// hammer it (in the shared area and on the socket): every client's next
/// call fails with `ManagerGone` soon after, none hangs or sees another
/// error; the socket file the server leaves is removed.
#[test]
fn manager_server_sweep() {
    let n = trials(30);
    watchdog("manager server sweep", sweep_limit(n), || {
        let mut rng = Rng::from_clock("manager server sweep");
        for _ in 0..n {
            let m = multiproc::Manager::start().unwrap();
            let d = m.dict::<u32, u64>().unwrap();
            let blobs = m.dict::<u32, Vec<u64>>().unwrap();
            let mut hammers: Vec<Hammer> = (0..3u32)
                .map(|k| {
                    let (d, blobs) = (d.clone(), blobs.clone());
                    Hammer::start(format!("client {k}"), move |beat| {
                        // Over the area's 64 KiB: this one takes the socket.
                        let blob = vec![u64::from(k); 10_000];
                        for i in 0u64.. {
                            let r = if i % 16 == 15 {
                                blobs.set(k, blob.clone())
                            } else {
                                d.increment(&k, 1).map(drop)
                            };
                            match r {
                                Ok(()) => beat.tick(),
                                Err(Error::ManagerGone(_)) => multiproc::process::exit(0),
                                Err(e) => panic!("client {k} with its server killed: {e}"),
                            }
                        }
                    })
                })
                .collect();
            for h in &hammers {
                h.beat.started(&h.name);
            }
            pause(&mut rng);
            let pid = m.server_pid().unwrap();
            // SAFETY: signalling the server process this test started.
            assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
            for h in &mut hammers {
                assert_eq!(
                    join(&h.process, STEP),
                    0,
                    "{} after the server died",
                    h.name
                );
                h.killed = true;
            }
            let path = match m.address() {
                multiproc::conn::Address::Unix(path) => Some(path.clone()),
                multiproc::conn::Address::Tcp(_) => None,
            };
            drop((d, blobs, m));
            if let Some(path) = path {
                let _ = std::fs::remove_file(path);
            }
        }
    });
}
