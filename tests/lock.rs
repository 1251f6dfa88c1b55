//! Lock and RLock across real processes: exclusion, owner death, timeouts.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{child, join, wait_until, watchdog, TempName};
use multiproc::cell::CellGuard;
use multiproc::{Error, Lock, LockError, RLock, RawValue, RecoverableLockError, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// A child that sets `flag` to 1 once it holds the lock, then waits to be killed.
fn hold_until_killed<'a>(
    s: &'a multiproc::Scope<'a, '_>,
    lock: impl FnOnce() + Send + 'a,
    flag: &'a RawValue<u32>,
) -> multiproc::Process<'a> {
    child(s, move || {
        lock();
        flag.atomic().store(1, SeqCst);
        loop {
            std::thread::park();
        }
    })
}

#[test]
fn locked_increments_from_two_processes_are_exact() {
    watchdog("exclusion", LIMIT, || {
        const N: u64 = 20_000;
        let v = Value::new(0u64).unwrap();
        let bump = || {
            for _ in 0..N {
                let mut g = v.lock().unwrap();
                // A read and a separate write: lost updates would show.
                let x = std::hint::black_box(*g);
                *g = x + 1;
            }
        };
        multiproc::scope(|s| {
            let a = child(s, bump);
            let b = child(s, bump);
            assert_eq!(join(&a, LIMIT), 0);
            assert_eq!(join(&b, LIMIT), 0);
            assert_eq!(v.get().unwrap(), 2 * N);
        });
    });
}

#[test]
fn owner_death_is_reported_and_repairable() {
    watchdog("owner died", LIMIT, || {
        let v = Value::new(0i64).unwrap();
        let flag = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let p = hold_until_killed(
                s,
                || {
                    let mut g = v.lock().unwrap();
                    *g = -1; // half-done update
                    std::mem::forget(g);
                },
                &flag,
            );
            assert!(wait_until(LIMIT, || flag.atomic().load(SeqCst) == 1));
            p.kill().unwrap();
            assert_eq!(join(&p, LIMIT), -libc::SIGKILL);

            match v.lock_recovering() {
                Err(RecoverableLockError::OwnerDied(mut g)) => {
                    assert_eq!(*g, -1, "the dead owner's write is visible");
                    *g = 42;
                    CellGuard::make_consistent(&g).unwrap();
                }
                other => panic!("expected OwnerDied, got {other:?}"),
            }
            // Consistent again, for this process and for others.
            assert_eq!(v.get().unwrap(), 42);
            let c = child(s, || assert_eq!(v.get().unwrap(), 42));
            assert_eq!(join(&c, LIMIT), 0);
        });
    });
}

#[test]
fn unrepaired_owner_death_makes_the_lock_not_recoverable() {
    watchdog("not recoverable", LIMIT, || {
        let lock = Lock::new().unwrap();
        let flag = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let p = hold_until_killed(s, || std::mem::forget(lock.lock().unwrap()), &flag);
            assert!(wait_until(LIMIT, || flag.atomic().load(SeqCst) == 1));
            p.kill().unwrap();
            join(&p, LIMIT);

            let r = lock.lock_recovering();
            assert!(
                matches!(r, Err(RecoverableLockError::OwnerDied(_))),
                "{r:?}"
            );
            drop(r); // released without make_consistent
            assert!(matches!(lock.lock(), Err(LockError::NotRecoverable)));
            assert!(matches!(lock.try_lock(), Err(LockError::NotRecoverable)));
            let c = child(s, || {
                let e = lock.lock_timeout(Duration::from_secs(1)).unwrap_err();
                assert!(matches!(e, LockError::NotRecoverable), "{e:?}");
                assert!(matches!(Error::from(e), Error::NotRecoverable));
            });
            assert_eq!(join(&c, LIMIT), 0);
        });
    });
}

/// The plain `lock` reports a dead owner with an error that holds no guard
/// (so `?` carries it anywhere), having released the lock unrepaired: it is
/// not recoverable afterwards, as after a dropped recovering guard.
#[test]
fn plain_lock_reports_owner_death_and_leaves_it_not_recoverable() {
    watchdog("plain lock owner died", LIMIT, || {
        let v = Value::new(0i64).unwrap();
        let flag = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let p = hold_until_killed(s, || std::mem::forget(v.lock().unwrap()), &flag);
            assert!(wait_until(LIMIT, || flag.atomic().load(SeqCst) == 1));
            p.kill().unwrap();
            join(&p, LIMIT);

            let boxed =
                || -> Result<i64, Box<dyn std::error::Error + Send + Sync>> { Ok(*v.lock()?) };
            let e = boxed().unwrap_err();
            assert!(
                matches!(e.downcast_ref::<LockError>(), Some(LockError::OwnerDied)),
                "{e:?}"
            );
            assert!(matches!(v.lock(), Err(LockError::NotRecoverable)));
            assert!(matches!(
                v.lock_recovering(),
                Err(RecoverableLockError::NotRecoverable)
            ));
            assert!(matches!(v.get(), Err(Error::NotRecoverable)));
        });
    });
}

#[test]
fn try_lock_and_relock_never_hang() {
    watchdog("try_lock", LIMIT, || {
        let lock = Lock::new().unwrap();
        let g = lock.lock().unwrap();
        assert!(matches!(lock.lock(), Err(LockError::Deadlock)));
        multiproc::scope(|s| {
            let c = child(s, || {
                assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)))
            });
            assert_eq!(join(&c, LIMIT), 0);
            drop(g);
            let c = child(s, || drop(lock.try_lock().unwrap()));
            assert_eq!(join(&c, LIMIT), 0);

            // Two values sharing one lock: the second lock from the same thread is refused.
            let a = Value::with_lock(1u8, &lock).unwrap();
            let b = Value::with_lock(2u8, &lock).unwrap();
            let ga = a.lock().unwrap();
            assert!(matches!(b.lock(), Err(LockError::Deadlock)));
            drop(ga);
            assert_eq!(b.get().unwrap(), 2);
        });
    });
}

/// 200 timed locks on a lock that another process holds for 50 ms each:
/// every one must succeed (a deadline with nanoseconds dropped or
/// mis-carried fails some of them at once).
#[test]
fn timed_lock_succeeds_when_released_within_the_deadline() {
    watchdog("lock_timeout success", Duration::from_secs(120), || {
        const ROUNDS: u32 = 200;
        let lock = Lock::new().unwrap();
        let step = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let holder = child(s, || {
                for i in 0..ROUNDS {
                    let g = lock.lock().unwrap();
                    step.atomic().store(2 * i + 1, SeqCst);
                    std::thread::sleep(Duration::from_millis(50)); // the hold being tested
                    drop(g);
                    assert!(wait_until(LIMIT, || step.atomic().load(SeqCst) == 2 * i + 2));
                }
            });
            for i in 0..ROUNDS {
                assert!(wait_until(LIMIT, || step.atomic().load(SeqCst) == 2 * i + 1));
                let t = Instant::now();
                let g = lock.lock_timeout(Duration::from_millis(500));
                assert!(
                    g.is_ok(),
                    "round {i}: {:?} after {:?}",
                    g.err(),
                    t.elapsed()
                );
                drop(g);
                step.atomic().store(2 * i + 2, SeqCst);
            }
            assert_eq!(join(&holder, LIMIT), 0);
        });
    });
}

/// 20 timed locks on a lock held throughout: each times out after about 500 ms.
#[test]
fn timed_lock_times_out_after_its_deadline() {
    watchdog("lock_timeout expiry", Duration::from_secs(120), || {
        let lock = Lock::new().unwrap();
        let state = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let holder = child(s, || {
                let _g = lock.lock().unwrap();
                state.atomic().store(1, SeqCst);
                assert!(wait_until(Duration::from_secs(60), || state
                    .atomic()
                    .load(SeqCst)
                    == 2));
            });
            assert!(wait_until(LIMIT, || state.atomic().load(SeqCst) == 1));
            for i in 0..20 {
                let t = Instant::now();
                let r = lock.lock_timeout(Duration::from_millis(500));
                let took = t.elapsed();
                assert!(matches!(r, Err(LockError::Timeout)), "call {i}: {r:?}");
                assert!(
                    took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
                    "call {i} took {took:?}"
                );
            }
            state.atomic().store(2, SeqCst);
            assert_eq!(join(&holder, LIMIT), 0);
        });
    });
}

#[test]
fn rlock_is_reentrant_per_thread_and_exclusive_across_processes() {
    watchdog("rlock", LIMIT, || {
        let r = RLock::new().unwrap();
        let outer = r.lock().unwrap();
        let inner = r.lock().unwrap();
        multiproc::scope(|s| {
            let blocked = || {
                let c = child(s, || {
                    assert!(matches!(r.try_lock(), Err(LockError::WouldBlock)));
                    // Releasing a lock this thread does not hold is an error.
                    assert!(matches!(r.release(), Err(Error::NotOwner)));
                });
                assert_eq!(join(&c, LIMIT), 0);
            };
            blocked();
            drop(inner);
            blocked(); // still held once
            drop(outer);
            let c = child(s, || {
                let _a = r.lock().unwrap();
                let _b = r.try_lock().unwrap();
            });
            assert_eq!(join(&c, LIMIT), 0);
            assert!(matches!(r.release(), Err(Error::NotOwner)));
            r.acquire().unwrap();
            r.acquire().unwrap();
            r.release().unwrap();
            r.release().unwrap();
            assert!(matches!(r.release(), Err(Error::NotOwner)));
        });
    });
}

#[test]
fn rlock_owner_death_is_recoverable() {
    watchdog("rlock owner died", LIMIT, || {
        let r = RLock::new().unwrap();
        let flag = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let p = hold_until_killed(
                s,
                || {
                    r.acquire().unwrap();
                    r.acquire().unwrap();
                },
                &flag,
            );
            assert!(wait_until(LIMIT, || flag.atomic().load(SeqCst) == 1));
            p.kill().unwrap();
            join(&p, LIMIT);
            match r.lock_recovering() {
                Err(RecoverableLockError::OwnerDied(g)) => {
                    multiproc::sync::RLockGuard::make_consistent(&g).unwrap()
                }
                other => panic!("expected OwnerDied, got {other:?}"),
            }
            // Released once by the guard: free for another process now.
            let c = child(s, || drop(r.try_lock().unwrap()));
            assert_eq!(join(&c, LIMIT), 0);
        });
    });
}

#[test]
fn named_lock_is_shared_by_name() {
    watchdog("named lock", LIMIT, || {
        let name = TempName::new("named-lock");
        let lock = Lock::create(&name).unwrap();
        assert!(matches!(Lock::create(&name), Err(Error::AlreadyExists(_))));
        let g = lock.lock().unwrap();
        multiproc::scope(|s| {
            // The child opens the lock by name instead of using the inherited handle.
            let c = child(s, || {
                let mine = Lock::open(&name).unwrap();
                assert!(matches!(mine.try_lock(), Err(LockError::WouldBlock)));
                assert!(matches!(
                    RLock::open(&name),
                    Err(Error::KindMismatch { .. })
                ));
            });
            assert_eq!(join(&c, LIMIT), 0);
            drop(g);
            let again = Lock::create_or_open(&name).unwrap();
            drop(again.try_lock().unwrap());
        });
    });
}

/// Only the thread that holds an RLock may mark it consistent: another
/// thread's call is `NotOwner` and leaves the holder's lock intact (glibc
/// alone would make the caller the owner, and the holder could never
/// release it).
#[test]
fn only_the_holder_marks_an_rlock_consistent() {
    watchdog("rlock make_consistent by a non-owner", LIMIT, || {
        let r = RLock::new().unwrap();
        let flag = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let p = hold_until_killed(s, || r.acquire().unwrap(), &flag);
            assert!(wait_until(LIMIT, || flag.atomic().load(SeqCst) == 1));
            p.kill().unwrap();
            join(&p, LIMIT);
            // Not held by anyone alive: nobody may mark it.
            assert!(matches!(r.make_consistent(), Err(Error::NotOwner)));
            assert!(matches!(
                r.acquire(),
                Err(RecoverableLockError::OwnerDied(()))
            ));
            std::thread::scope(|t| {
                t.spawn(|| assert!(matches!(r.make_consistent(), Err(Error::NotOwner))))
                    .join()
                    .unwrap();
            });
            r.make_consistent().unwrap();
            r.release().unwrap();
            let c = child(s, || drop(r.try_lock().unwrap()));
            assert_eq!(join(&c, LIMIT), 0);
        });
    });
}
