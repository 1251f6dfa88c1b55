//! Event, Semaphore, BoundedSemaphore, Condition and Barrier across real
//! processes: CPython's own behaviour checks (Lib/test/_test_multiprocessing.py,
//! _TestEvent, _TestSemaphore, _TestCondition, _TestBarrier) ported with the
//! parties as processes, and the death of a waiter for each primitive.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{child, join, procfs, wait_until, watchdog, TempName};
use multiproc::{
    Barrier, BoundedSemaphore, Condition, Error, Event, Process, RawArray, RawValue, Semaphore,
};

const LIMIT: Duration = Duration::from_secs(60);
const TIMEOUT1: Duration = Duration::from_millis(300);
const TIMEOUT2: Duration = Duration::from_millis(200);
const TIMEOUT3: Duration = Duration::from_millis(500);

/// Asserts that `f` took about `expected` (the scheduler may add a little).
fn timed<R>(expected: Duration, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    assert!(
        took >= expected && took < expected + Duration::from_millis(400),
        "took {took:?}, expected about {expected:?}"
    );
    r
}

/// Asserts that `cond` stays false for `window`: how a test checks that
/// something does *not* happen (no extra wake-up, say).
fn stays_false(window: Duration, mut cond: impl FnMut() -> bool) {
    assert!(!wait_until(window, &mut cond), "happened within {window:?}");
}

// ---------------------------------------------------------------------------
// Event (_TestEvent.test_event)

#[test]
fn event() {
    watchdog("event", LIMIT, || {
        let event = Event::new().unwrap();
        assert!(!event.is_set());
        assert!(!timed(Duration::ZERO, || event.wait_timeout(Duration::ZERO)));
        assert!(!timed(TIMEOUT1, || event.wait_timeout(TIMEOUT1)));
        event.set();
        assert!(event.is_set());
        timed(Duration::ZERO, || event.wait());
        assert!(timed(Duration::ZERO, || event.wait_timeout(TIMEOUT1)));
        event.clear();
        assert!(!event.is_set());
        let (pid, tid) = (std::process::id(), procfs::gettid());
        multiproc::scope(|s| {
            // A process sets it once this thread sleeps in the wait; the
            // wait returns true.
            let p = child(s, || {
                assert!(
                    wait_until(LIMIT, || procfs::thread_blocked_in_futex(pid, tid)),
                    "the waiter never blocked"
                );
                event.set();
            });
            event.wait();
            assert!(event.is_set());
            assert_eq!(join(&p, LIMIT), 0);
            // And by name, from a process that opens it.
            let name = TempName::new("event");
            let named = Event::create(&name).unwrap();
            let opened_by = name.0.clone();
            let p = child(s, move || Event::open(&opened_by).unwrap().set());
            assert!(named.wait_timeout(LIMIT));
            assert_eq!(join(&p, LIMIT), 0);
        });
    });
}

#[test]
fn event_survives_a_killed_waiter() {
    watchdog("event waiter death", LIMIT, || {
        let event = Event::new().unwrap();
        let asleep = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let victim = child(s, || {
                asleep.release().unwrap();
                event.wait();
            });
            let survivor = child(s, || {
                asleep.release().unwrap();
                assert!(event.wait_timeout(LIMIT));
            });
            asleep.acquire();
            asleep.acquire();
            victim.kill().unwrap();
            assert_eq!(join(&victim, LIMIT), -libc::SIGKILL);
            event.set();
            assert_eq!(join(&survivor, LIMIT), 0);
            // Later waits still work.
            event.clear();
            let late = child(s, || assert!(event.wait_timeout(LIMIT)));
            event.set();
            assert_eq!(join(&late, LIMIT), 0);
        });
    });
}

// ---------------------------------------------------------------------------
// Semaphore (_TestSemaphore)

fn check_semaphore(sem: &Semaphore) {
    assert_eq!(sem.value(), 2);
    sem.acquire();
    assert_eq!(sem.value(), 1);
    sem.acquire();
    assert_eq!(sem.value(), 0);
    assert!(!sem.try_acquire());
    assert_eq!(sem.value(), 0);
    sem.release().unwrap();
    assert_eq!(sem.value(), 1);
    sem.release().unwrap();
    assert_eq!(sem.value(), 2);
}

#[test]
fn semaphore() {
    let sem = Semaphore::new(2).unwrap();
    check_semaphore(&sem);
    sem.release().unwrap();
    assert_eq!(sem.value(), 3);
    sem.release().unwrap();
    assert_eq!(sem.value(), 4);
}

#[test]
fn bounded_semaphore() {
    let sem = BoundedSemaphore::new(2).unwrap();
    check_semaphore(&sem);
    assert!(matches!(sem.release(), Err(Error::TooManyReleases)));
    assert_eq!(sem.value(), 2);
    let name = TempName::new("bsem");
    let named = BoundedSemaphore::create(&name, 1).unwrap();
    assert!(matches!(
        Semaphore::open(&name),
        Err(Error::KindMismatch { .. })
    ));
    multiproc::scope(|s| {
        let p = child(s, || {
            let mine = BoundedSemaphore::open(&name).unwrap();
            assert!(mine.try_acquire());
            assert!(!mine.try_acquire());
        });
        assert_eq!(join(&p, LIMIT), 0);
    });
    named.release().unwrap();
    assert!(matches!(named.release(), Err(Error::TooManyReleases)));
}

#[test]
fn semaphore_timeout() {
    let sem = Semaphore::new(0).unwrap();
    assert!(!timed(Duration::ZERO, || sem.try_acquire()));
    assert!(!timed(Duration::ZERO, || sem.acquire_timeout(Duration::ZERO)));
    assert!(!timed(TIMEOUT2, || sem.acquire_timeout(TIMEOUT2)));
    assert!(!timed(TIMEOUT3, || sem.acquire_timeout(TIMEOUT3)));
    assert!(sem.permit_timeout(TIMEOUT2).is_none());
}

#[test]
fn semaphore_across_processes() {
    watchdog("semaphore processes", LIMIT, || {
        let sem = Semaphore::new(0).unwrap();
        let got = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    child(s, || {
                        sem.acquire();
                        got.atomic().fetch_add(1, SeqCst);
                    })
                })
                .collect();
            for n in 1..=3 {
                sem.release().unwrap();
                assert!(wait_until(LIMIT, || got.atomic().load(SeqCst) == n));
            }
            for w in &waiters {
                assert_eq!(join(w, LIMIT), 0);
            }
            assert_eq!(sem.value(), 0);
        });
    });
}

#[test]
fn semaphore_survives_a_killed_waiter() {
    watchdog("semaphore waiter death", LIMIT, || {
        let sem = Semaphore::new(0).unwrap();
        let asleep = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let victim = child(s, || {
                asleep.release().unwrap();
                sem.acquire();
            });
            asleep.acquire();
            // Let the victim go to sleep in the kernel, then kill it there.
            assert!(wait_until(LIMIT, || procfs::blocked_in_futex(
                victim.pid().unwrap()
            )));
            victim.kill().unwrap();
            join(&victim, LIMIT);
            let survivor = child(s, || assert!(sem.acquire_timeout(LIMIT)));
            sem.release().unwrap();
            assert_eq!(join(&survivor, LIMIT), 0);
            // The dead waiter took nothing.
            sem.release().unwrap();
            assert_eq!(sem.value(), 1);
        });
    });
}

// ---------------------------------------------------------------------------
// Condition (_TestCondition)

/// CPython's waiter: take the lock, say it is about to sleep, wait, say it woke.
fn condition_waiter<'a>(
    s: &'a multiproc::Scope<'a, '_>,
    cond: &'a Condition,
    sleeping: &'a Semaphore,
    woken: &'a Semaphore,
    timeout: Option<Duration>,
) -> Process<'a> {
    child(s, move || {
        let mut g = cond.lock().unwrap();
        sleeping.release().unwrap();
        match timeout {
            Some(t) => drop(g.wait_timeout(t).unwrap()),
            None => g.wait().unwrap(),
        }
        woken.release().unwrap();
    })
}

/// Waits until `n` waiters announced themselves; once the lock can be taken
/// after that, each of them is inside `wait` (it announced while holding the
/// lock and gave the lock up only there).
fn all_waiting(cond: &Condition, sleeping: &Semaphore, n: u32) {
    for _ in 0..n {
        assert!(sleeping.acquire_timeout(LIMIT));
    }
    drop(cond.lock().unwrap());
}

#[test]
fn condition_notify() {
    watchdog("notify", LIMIT, || {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let woken = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let a = condition_waiter(s, &cond, &sleeping, &woken, None);
            let b = condition_waiter(s, &cond, &sleeping, &woken, None);
            all_waiting(&cond, &sleeping, 2);
            assert_eq!(woken.value(), 0);
            cond.lock().unwrap().notify(1);
            assert!(wait_until(LIMIT, || woken.value() == 1));
            stays_false(TIMEOUT2, || woken.value() > 1);
            cond.lock().unwrap().notify(1);
            assert!(wait_until(LIMIT, || woken.value() == 2));
            assert_eq!(join(&a, LIMIT), 0);
            assert_eq!(join(&b, LIMIT), 0);
        });
    });
}

#[test]
fn condition_notify_all() {
    watchdog("notify_all", LIMIT, || {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let woken = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            // Three that time out by themselves...
            let timed_out: Vec<_> = (0..3)
                .map(|_| condition_waiter(s, &cond, &sleeping, &woken, Some(TIMEOUT1)))
                .collect();
            all_waiting(&cond, &sleeping, 3);
            assert!(wait_until(LIMIT, || woken.value() == 3));
            for p in &timed_out {
                assert_eq!(join(p, LIMIT), 0);
            }
            // ...and three that only a notify_all wakes.
            let waiting: Vec<_> = (0..3)
                .map(|_| condition_waiter(s, &cond, &sleeping, &woken, None))
                .collect();
            all_waiting(&cond, &sleeping, 3);
            stays_false(TIMEOUT2, || woken.value() > 3);
            cond.lock().unwrap().notify_all();
            assert!(wait_until(LIMIT, || woken.value() == 6));
            for p in &waiting {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
    });
}

#[test]
fn condition_notify_n() {
    watchdog("notify_n", LIMIT, || {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let woken = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let ps: Vec<_> = (0..6)
                .map(|_| condition_waiter(s, &cond, &sleeping, &woken, None))
                .collect();
            all_waiting(&cond, &sleeping, 6);
            assert_eq!(woken.value(), 0);
            cond.lock().unwrap().notify(2);
            assert!(wait_until(LIMIT, || woken.value() == 2));
            stays_false(TIMEOUT2, || woken.value() > 2);
            cond.lock().unwrap().notify(4);
            assert!(wait_until(LIMIT, || woken.value() == 6));
            // Nobody is left: this does nothing.
            cond.lock().unwrap().notify(3);
            stays_false(TIMEOUT2, || woken.value() > 6);
            for p in &ps {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
    });
}

#[test]
fn condition_timeout() {
    let cond = Condition::new().unwrap();
    let mut g = cond.lock().unwrap();
    assert!(!timed(TIMEOUT1, || g.wait_timeout(TIMEOUT1).unwrap()));
}

#[test]
fn condition_wait_for() {
    watchdog("wait_for", LIMIT, || {
        let cond = Condition::new().unwrap();
        let state = RawValue::new(-1i32).unwrap();
        multiproc::scope(|s| {
            let p = child(s, || {
                let mut g = cond.lock().unwrap();
                state.set(0);
                g.notify(1);
                assert!(g.wait_for(|| state.get() == 4, None).unwrap());
                assert_eq!(state.get(), 4);
            });
            {
                let mut g = cond.lock().unwrap();
                assert!(g.wait_for(|| state.get() == 0, None).unwrap());
            }
            for _ in 0..4 {
                let g = cond.lock().unwrap();
                state.set(state.get() + 1);
                g.notify(1);
            }
            assert_eq!(join(&p, LIMIT), 0);
        });
    });
}

#[test]
fn condition_wait_for_timeout() {
    watchdog("wait_for timeout", LIMIT, || {
        let cond = Condition::new().unwrap();
        let state = RawValue::new(0i32).unwrap();
        let started = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let p = child(s, || {
                started.release().unwrap();
                let mut g = cond.lock().unwrap();
                let expected = Duration::from_millis(100);
                let t = Instant::now();
                let result = g.wait_for(|| state.get() == 4, Some(expected)).unwrap();
                assert!(!result);
                assert!(t.elapsed() >= expected, "{:?}", t.elapsed());
            });
            assert!(started.acquire_timeout(LIMIT));
            // Only three increments: the predicate never holds.
            for _ in 0..3 {
                let g = cond.lock().unwrap();
                state.set(state.get() + 1);
                g.notify(1);
            }
            assert_eq!(join(&p, LIMIT), 0);
        });
    });
}

#[test]
fn condition_over_a_recursive_lock_releases_every_level() {
    watchdog("rlock condition", LIMIT, || {
        let rlock = multiproc::RLock::new().unwrap();
        let cond = Condition::with_rlock(&rlock).unwrap();
        let flag = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let p = child(s, || {
                let _outer = rlock.lock().unwrap();
                let mut g = cond.lock().unwrap(); // held twice now
                assert!(g.wait_for(|| flag.get() == 1, Some(LIMIT)).unwrap());
                // Both levels came back: with the condition's level released,
                // the outer one still keeps another process out.
                drop(g);
                multiproc::scope(|s| {
                    let other = child(s, || {
                        assert!(matches!(
                            rlock.try_lock(),
                            Err(multiproc::LockError::WouldBlock)
                        ))
                    });
                    assert_eq!(join(&other, LIMIT), 0);
                });
            });
            // The waiter gave up both levels, so this lock succeeds.
            let g = cond.lock().unwrap();
            flag.set(1);
            g.notify_all();
            drop(g);
            assert_eq!(join(&p, LIMIT), 0);
            // A named condition, opened by another process.
            let name = TempName::new("cond");
            let named = Condition::create(&name).unwrap();
            let opened_by = name.0.clone();
            let flag = &flag;
            let opener = child(s, move || {
                let c = Condition::open(&opened_by).unwrap();
                let mut g = c.lock().unwrap();
                assert!(g.wait_for(|| flag.get() == 2, Some(LIMIT)).unwrap());
            });
            let g = named.lock().unwrap();
            flag.set(2);
            g.notify_all();
            drop(g);
            assert_eq!(join(&opener, LIMIT), 0);
        });
    });
}

#[test]
fn condition_survives_a_killed_waiter() {
    watchdog("condition waiter death", LIMIT, || {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let woken = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let victim = condition_waiter(s, &cond, &sleeping, &woken, None);
            let survivor = condition_waiter(s, &cond, &sleeping, &woken, None);
            all_waiting(&cond, &sleeping, 2);
            victim.kill().unwrap();
            join(&victim, LIMIT);
            cond.lock().unwrap().notify(1);
            assert_eq!(join(&survivor, LIMIT), 0);
            assert_eq!(woken.value(), 1);
        });
    });
}

#[test]
fn condition_waiter_is_told_when_the_lock_holder_dies() {
    watchdog("condition owner death", LIMIT, || {
        let cond = Condition::with_lock(&multiproc::Lock::new().unwrap()).unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let holding = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let waiter = child(s, || {
                let mut g = cond.lock().unwrap();
                sleeping.release().unwrap();
                // Times out while a dead process holds the lock: told, not hung.
                let e = g.wait_timeout(TIMEOUT1).unwrap_err();
                assert!(matches!(e, Error::OwnerDied), "{e}");
                multiproc::sync::ConditionGuard::make_consistent(&g).unwrap();
            });
            all_waiting(&cond, &sleeping, 1);
            let holder = child(s, || {
                std::mem::forget(cond.lock().unwrap());
                holding.release().unwrap();
                loop {
                    std::thread::park();
                }
            });
            assert!(holding.acquire_timeout(LIMIT));
            holder.kill().unwrap();
            join(&holder, LIMIT);
            assert_eq!(join(&waiter, LIMIT), 0);
        });
    });
}

// ---------------------------------------------------------------------------
// Barrier (_TestBarrier), N parties as processes

const N: u32 = 5;

/// Runs `f(party)` in N processes and checks they all exit 0.
fn run_parties(f: impl Fn(u32) + Sync) {
    multiproc::scope(|s| {
        let ps: Vec<_> = (0..N)
            .map(|i| {
                child(s, {
                    let f = &f;
                    move || f(i)
                })
            })
            .collect();
        for p in &ps {
            assert_eq!(join(p, LIMIT), 0);
        }
    });
}

fn counter() -> RawValue<u32> {
    RawValue::new(0).unwrap()
}

fn bump(c: &RawValue<u32>) {
    c.atomic().fetch_add(1, SeqCst);
}

fn lockstep(passes: u32) {
    let barrier = Barrier::new(N).unwrap();
    // Each party's current pass: after a wait, nobody may be behind this
    // pass or two passes ahead.
    let at = RawArray::<u32>::new(N as usize).unwrap();
    run_parties(|me| {
        for pass in 0..passes {
            at.set(me as usize, pass).unwrap();
            barrier.wait().unwrap();
            for other in 0..N as usize {
                let theirs = at.get(other).unwrap();
                assert!(
                    theirs >= pass && theirs <= pass + 1,
                    "party {other} at {theirs} in pass {pass}"
                );
            }
        }
    });
}

#[test]
fn barrier() {
    watchdog("barrier", LIMIT, || lockstep(1));
}

#[test]
fn barrier_10() {
    watchdog("barrier 10", LIMIT, || lockstep(10));
}

#[test]
fn barrier_thousand_passes() {
    watchdog("barrier 1000", Duration::from_secs(120), || lockstep(1000));
}

#[test]
fn barrier_wait_return() {
    watchdog("wait return", LIMIT, || {
        let barrier = Barrier::new(N).unwrap();
        let seen = RawArray::<u32>::new(N as usize).unwrap();
        run_parties(|_| {
            let i = barrier.wait().unwrap();
            seen.atomic(i as usize).unwrap().fetch_add(1, SeqCst);
        });
        assert_eq!(
            seen.read(..).unwrap(),
            vec![1; N as usize],
            "each index exactly once"
        );
    });
}

#[test]
fn barrier_action() {
    watchdog("action", LIMIT, || {
        let ran = counter();
        let ran_in_action = ran.clone();
        let barrier = Barrier::new(N)
            .unwrap()
            .with_action(move || bump(&ran_in_action));
        run_parties(|_| {
            barrier.wait().unwrap();
        });
        assert_eq!(ran.get(), 1);
    });
}

/// CPython's `_test_abort_f`: one party aborts after the first wait; the
/// others try a second wait. A broken barrier in either wait counts as broken.
fn abort_phase(barrier: &Barrier, passed: &RawValue<u32>, broken: &RawValue<u32>) {
    let r = barrier.wait().and_then(|i| {
        if i == N / 2 {
            barrier.abort()?;
            return Ok(false);
        }
        barrier.wait().map(|_| true)
    });
    match r {
        Ok(true) => bump(passed),
        Ok(false) => {}
        Err(Error::BrokenBarrier) => bump(broken),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn barrier_abort() {
    watchdog("abort", LIMIT, || {
        let barrier = Barrier::new(N).unwrap();
        let (passed, broken) = (counter(), counter());
        run_parties(|_| abort_phase(&barrier, &passed, &broken));
        assert_eq!(passed.get(), 0);
        assert_eq!(broken.get(), N - 1);
        assert!(barrier.is_broken());
    });
}

#[test]
fn barrier_reset() {
    watchdog("reset", LIMIT, || {
        let barrier = Barrier::new(N).unwrap();
        let (passed, broken, again) = (counter(), counter(), counter());
        run_parties(|_| {
            let i = barrier.wait().unwrap();
            if i == N / 2 {
                // Once the others are all waiting, reset under them.
                assert!(wait_until(LIMIT, || barrier.n_waiting() == N - 1));
                barrier.reset().unwrap();
            } else {
                match barrier.wait() {
                    Ok(_) => bump(&passed),
                    Err(Error::BrokenBarrier) => bump(&broken),
                    Err(e) => panic!("{e}"),
                }
            }
            barrier.wait().unwrap();
            bump(&again);
        });
        assert_eq!((passed.get(), broken.get(), again.get()), (0, N - 1, N));
    });
}

#[test]
fn barrier_abort_and_reset() {
    watchdog("abort and reset", LIMIT, || {
        let barrier = Barrier::new(N).unwrap();
        let sync = Barrier::new(N).unwrap();
        let (passed, broken, again) = (counter(), counter(), counter());
        run_parties(|_| {
            abort_phase(&barrier, &passed, &broken);
            // Everyone has left the barrier before the reset, and nobody
            // enters it again before the reset is done.
            if sync.wait().unwrap() == N / 2 {
                barrier.reset().unwrap();
            }
            sync.wait().unwrap();
            barrier.wait().unwrap();
            bump(&again);
        });
        assert_eq!((passed.get(), broken.get(), again.get()), (0, N - 1, N));
    });
}

#[test]
fn barrier_timeout() {
    watchdog("barrier timeout", LIMIT, || {
        let barrier = Barrier::new(N).unwrap();
        let broken = counter();
        run_parties(|_| {
            let i = barrier.wait().unwrap();
            if i == N / 2 {
                // One party is late: it comes once the others timed out.
                assert!(wait_until(LIMIT, || barrier.is_broken()));
            }
            if let Err(Error::BrokenBarrier) = barrier.wait_timeout(TIMEOUT3) {
                bump(&broken);
            }
        });
        assert_eq!(broken.get(), N);
    });
}

#[test]
fn barrier_default_timeout() {
    watchdog("barrier default timeout", LIMIT, || {
        let barrier = Barrier::with_timeout(N, TIMEOUT3).unwrap();
        let broken = counter();
        run_parties(|_| {
            let i = barrier.wait_timeout(LIMIT).unwrap();
            if i == N / 2 {
                // One party is late: it comes once the others timed out.
                assert!(wait_until(LIMIT, || barrier.is_broken()));
            }
            if let Err(Error::BrokenBarrier) = barrier.wait() {
                bump(&broken);
            }
        });
        assert_eq!(broken.get(), N);
    });
}

#[test]
fn barrier_single_party() {
    let barrier = Barrier::new(1).unwrap();
    for _ in 0..3 {
        assert_eq!(barrier.wait().unwrap(), 0);
    }
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));
}

#[test]
fn barrier_breaks_when_a_waiting_party_dies() {
    watchdog("barrier party death", LIMIT, || {
        let name = TempName::new("barrier");
        let barrier = Barrier::create(&name, 3).unwrap();
        multiproc::scope(|s| {
            let victim = child(s, || {
                barrier.wait().unwrap();
            });
            assert!(wait_until(LIMIT, || barrier.n_waiting() == 1));
            victim.kill().unwrap();
            join(&victim, LIMIT);
            // The survivor would wait for the dead party forever; it is told instead.
            let survivor = child(s, || {
                let mine = Barrier::open(&name).unwrap();
                assert_eq!(mine.parties(), 3);
                assert!(matches!(mine.wait(), Err(Error::BrokenBarrier)));
            });
            assert_eq!(join(&survivor, LIMIT), 0);
            assert!(barrier.is_broken());
            // Reset, and three live parties pass.
            barrier.reset().unwrap();
            let ps: Vec<_> = (0..2)
                .map(|_| {
                    child(s, || {
                        barrier.wait().unwrap();
                    })
                })
                .collect();
            barrier.wait().unwrap();
            for p in &ps {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
    });
}

/// Issue 11's sequence: a waiter killed while waiting, a `notify_all`, then
/// two new waiters and one `notify(1)`: exactly one of them is notified.
/// The dead waiter's share of the `notify_all` is not kept for later.
#[test]
fn a_killed_waiter_leaves_no_notification_behind() {
    watchdog("killed waiter's notification", LIMIT, || {
        multiproc::scope(|ps| {
            let cond = Condition::new().unwrap();
            let sleeping = Semaphore::new(0).unwrap();
            // [waiters that returned true, waiters that returned false]
            let outcomes = RawArray::<u32>::new(2).unwrap();
            let waiter = |timeout: Duration| {
                let (cond, sleeping, outcomes) = (cond.clone(), sleeping.clone(), outcomes.clone());
                child(ps, move || {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    let notified = g.wait_timeout(timeout).unwrap();
                    let i = if notified { 0 } else { 1 };
                    outcomes.atomic(i).unwrap().fetch_add(1, SeqCst);
                })
            };
            let dead = waiter(LIMIT);
            all_waiting(&cond, &sleeping, 1);
            dead.kill().unwrap();
            join(&dead, LIMIT);
            cond.lock().unwrap().notify_all();
            let (a, b) = (
                waiter(Duration::from_millis(1500)),
                waiter(Duration::from_millis(1500)),
            );
            all_waiting(&cond, &sleeping, 2);
            cond.lock().unwrap().notify(1);
            assert_eq!(join(&a, LIMIT), 0);
            assert_eq!(join(&b, LIMIT), 0);
            assert_eq!(outcomes.read(..).unwrap(), [1, 1], "[notified, timed out]");
        })
    });
}

/// The same with the killed waiter still waiting when others arrive: every
/// `notify(1)` wakes one live waiter, the dead one is never chosen.
#[test]
fn notify_skips_a_killed_waiter() {
    watchdog("notify skips the dead", LIMIT, || {
        multiproc::scope(|ps| {
            let cond = Condition::new().unwrap();
            let sleeping = Semaphore::new(0).unwrap();
            let woken = Semaphore::new(0).unwrap();
            let waiter = || {
                let (cond, sleeping, woken) = (cond.clone(), sleeping.clone(), woken.clone());
                child(ps, move || {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    g.wait().unwrap();
                    woken.release().unwrap();
                })
            };
            // The dead one waits longest: a notify that took it would wake nobody.
            let dead = waiter();
            all_waiting(&cond, &sleeping, 1);
            let live: Vec<_> = (0..3).map(|_| waiter()).collect();
            all_waiting(&cond, &sleeping, 3);
            dead.kill().unwrap();
            join(&dead, LIMIT);
            for n in 1..=3 {
                cond.lock().unwrap().notify(1);
                assert!(wait_until(LIMIT, || woken.value() == n));
                stays_false(TIMEOUT2, || woken.value() > n);
            }
            for p in &live {
                assert_eq!(join(p, LIMIT), 0);
            }
        })
    });
}

/// A condition holds `MAX_WAITERS` waiters; one more is an error, not a
/// hang, and waiters that died give their places back.
#[test]
fn condition_waiter_places_are_bounded_and_given_back_by_the_dead() {
    watchdog("condition places", LIMIT, || {
        multiproc::scope(|ps| {
            let cond = Condition::new().unwrap();
            let go = RawValue::new(0u32).unwrap();
            let sleeping = Semaphore::new(0).unwrap();
            std::thread::scope(|s| {
                let threads: Vec<_> = (0..Condition::MAX_WAITERS)
                    .map(|_| {
                        s.spawn(|| {
                            let mut g = cond.lock().unwrap();
                            sleeping.release().unwrap();
                            g.wait_for(|| go.get() == 1, Some(LIMIT)).unwrap()
                        })
                    })
                    .collect();
                all_waiting(&cond, &sleeping, Condition::MAX_WAITERS as u32);
                let mut g = cond.lock().unwrap();
                let e = g.wait_timeout(TIMEOUT1).unwrap_err();
                assert!(
                    matches!(e, Error::TooManyWaiters { limit } if limit == Condition::MAX_WAITERS),
                    "{e}"
                );
                go.set(1);
                g.notify_all();
                drop(g);
                for t in threads {
                    assert!(t.join().unwrap());
                }
            });
            // More waiters die than there are places, with no notify between
            // to clear them: each new waiter takes a dead one's place.
            let waiter = || {
                let (cond, sleeping) = (cond.clone(), sleeping.clone());
                child(ps, move || {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    assert!(g.wait_timeout(LIMIT).unwrap());
                })
            };
            for _ in 0..Condition::MAX_WAITERS + 2 {
                let dead = waiter();
                all_waiting(&cond, &sleeping, 1);
                dead.kill().unwrap();
                join(&dead, LIMIT);
            }
            let live = waiter();
            all_waiting(&cond, &sleeping, 1);
            cond.lock().unwrap().notify(1);
            assert_eq!(join(&live, LIMIT), 0);
        })
    });
}

/// A waiter killed just before a `notify(1)` chose it (the kill not yet
/// done when the notify looked): the notification passes on to a live
/// waiter that was waiting when it was made, instead of dying with it.
#[test]
fn a_notification_chosen_for_a_dying_waiter_passes_on() {
    watchdog("notification passed on", LIMIT, || {
        multiproc::scope(|ps| {
            let cond = Condition::new().unwrap();
            let sleeping = Semaphore::new(0).unwrap();
            let notified = RawValue::new(0u32).unwrap();
            for _ in 0..5 {
                notified.set(0);
                let waiter = || {
                    let (cond, sleeping, notified) =
                        (cond.clone(), sleeping.clone(), notified.clone());
                    child(ps, move || {
                        let mut g = cond.lock().unwrap();
                        sleeping.release().unwrap();
                        if g.wait_timeout(Duration::from_secs(10)).unwrap() {
                            notified.atomic().fetch_add(1, SeqCst);
                        }
                    })
                };
                // The one that dies waits longest: notify(1) prefers it.
                let dying = waiter();
                all_waiting(&cond, &sleeping, 1);
                let live = waiter();
                all_waiting(&cond, &sleeping, 1);
                dying.kill().unwrap();
                cond.lock().unwrap().notify(1);
                join(&dying, LIMIT);
                let t = Instant::now();
                assert_eq!(join(&live, LIMIT), 0);
                assert_eq!(notified.get(), 1, "the live waiter was notified");
                assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            }
        })
    });
}

/// Variants of issue 11's sequence: three waiters killed while they wait,
/// then a `notify(2)` with only the dead waiting (it must not be kept for
/// later), then two live waiters and a `notify(1)` (exactly one wakes),
/// then a third live waiter and a `notify_all` (the two left wake, and
/// nothing else).
#[test]
fn notifications_to_dead_waiters_only_are_not_kept() {
    watchdog("notify with only dead waiters", LIMIT, || {
        multiproc::scope(|ps| {
            let cond = Condition::new().unwrap();
            let sleeping = Semaphore::new(0).unwrap();
            let woken = Semaphore::new(0).unwrap();
            // [waiters that returned true, waiters that returned false]
            let outcomes = RawArray::<u32>::new(2).unwrap();
            let waiter = |timeout: Duration| {
                let (cond, sleeping, woken, outcomes) = (
                    cond.clone(),
                    sleeping.clone(),
                    woken.clone(),
                    outcomes.clone(),
                );
                child(ps, move || {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    let notified = g.wait_timeout(timeout).unwrap();
                    drop(g);
                    let i = if notified { 0 } else { 1 };
                    outcomes.atomic(i).unwrap().fetch_add(1, SeqCst);
                    woken.release().unwrap();
                })
            };
            let dead: Vec<_> = (0..3).map(|_| waiter(LIMIT)).collect();
            all_waiting(&cond, &sleeping, 3);
            for d in &dead {
                d.kill().unwrap();
                join(d, LIMIT);
            }
            cond.lock().unwrap().notify(2);
            let (a, b) = (waiter(LIMIT), waiter(LIMIT));
            all_waiting(&cond, &sleeping, 2);
            cond.lock().unwrap().notify(1);
            assert!(woken.acquire_timeout(LIMIT));
            stays_false(TIMEOUT2, || woken.value() > 0);
            let c = waiter(LIMIT);
            all_waiting(&cond, &sleeping, 1);
            cond.lock().unwrap().notify_all();
            for p in [&a, &b, &c] {
                assert_eq!(join(p, LIMIT), 0);
            }
            assert_eq!(outcomes.read(..).unwrap(), [3, 0], "[notified, timed out]");
        })
    });
}
