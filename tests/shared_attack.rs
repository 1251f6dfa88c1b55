//! Adversarial cases against the shared layer: limits of every timed call,
//! odd sizes, misuse, and waiters killed at awkward moments.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{child, join, procfs, watchdog};
use multiproc::{
    Barrier, BoundedSemaphore, Condition, Error, Event, JoinableQueue, Lock, LockError, Queue,
    RLock, RawArray, RawValue, RecoverableLockError, Semaphore,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The timeouts at their limits: none may panic; short ones return at once.
const SHORT: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_nanos(999_999_999),
];
const LONG: [Duration; 3] = [
    Duration::MAX,
    Duration::from_secs(u64::MAX / 2),
    // Far, but representable on the clock: it reaches the kernel.
    Duration::from_secs(i64::MAX as u64 / 2),
];

#[test]
fn every_timed_call_at_its_limits() {
    watchdog("timeouts at limits", LIMIT, || {
        for t in SHORT {
            let lock = Lock::new().unwrap();
            let g = lock.lock().unwrap();
            std::thread::scope(|s| {
                s.spawn(|| assert!(matches!(lock.lock_timeout(t), Err(LockError::Timeout))));
            });
            drop(g);
            let rlock = RLock::new().unwrap();
            let g = rlock.lock().unwrap();
            std::thread::scope(|s| {
                s.spawn(|| assert!(matches!(rlock.lock_timeout(t), Err(LockError::Timeout))));
            });
            drop(g);
            assert!(!Event::new().unwrap().wait_timeout(t));
            assert!(!Semaphore::new(0).unwrap().acquire_timeout(t));
            assert!(BoundedSemaphore::new(0)
                .unwrap()
                .permit_timeout(t)
                .is_none());
            let cond = Condition::new().unwrap();
            let mut g = cond.lock().unwrap();
            assert!(!g.wait_timeout(t).unwrap());
            assert!(!g.wait_for(|| false, Some(t)).unwrap());
            drop(g);
            let q = Queue::<u8>::with_capacity(1, 64).unwrap();
            assert!(
                matches!(q.get_timeout(t), Err(Error::Timeout | Error::Empty)),
                "{t:?}"
            );
            q.put(1).unwrap();
            assert!(matches!(
                q.put_timeout(2, t),
                Err(multiproc::queue::PutError::Timeout(2))
            ));
            let jq = JoinableQueue::<u8>::new().unwrap();
            jq.put(1).unwrap();
            assert!(matches!(jq.join_timeout(t), Err(Error::Timeout)));
            let b = Barrier::new(2).unwrap();
            assert!(matches!(
                b.wait_timeout(t),
                Err(Error::Timeout | Error::BrokenBarrier)
            ));
            let b = Barrier::with_timeout(2, t).unwrap();
            assert!(matches!(
                b.wait(),
                Err(Error::Timeout | Error::BrokenBarrier)
            ));
        }
        for t in LONG {
            let lock = Lock::new().unwrap();
            drop(lock.lock_timeout(t).unwrap());
            // Contended: the wait reaches the kernel with that deadline.
            let g = lock.lock().unwrap();
            std::thread::scope(|s| {
                s.spawn(|| drop(lock.lock_timeout(t).unwrap()));
                for _ in 0..1000 {
                    std::thread::yield_now();
                }
                drop(g);
            });
            let sem = Semaphore::new(0).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| assert!(sem.acquire_timeout(t)));
                for _ in 0..1000 {
                    std::thread::yield_now();
                }
                sem.release().unwrap();
            });
            drop(RLock::new().unwrap().lock_timeout(t).unwrap());
            let e = Event::new().unwrap();
            e.set();
            assert!(e.wait_timeout(t));
            assert!(Semaphore::new(1).unwrap().acquire_timeout(t));
            let q = Queue::<u8>::new().unwrap();
            q.put_timeout(3, t).unwrap();
            assert_eq!(q.get_timeout(t).unwrap(), 3);
            let jq = JoinableQueue::<u8>::new().unwrap();
            jq.join_timeout(t).unwrap();
            assert_eq!(Barrier::new(1).unwrap().wait_timeout(t).unwrap(), 0);
            assert_eq!(Barrier::with_timeout(1, t).unwrap().wait().unwrap(), 0);
            // A long wait that is notified.
            let cond = Condition::new().unwrap();
            let flag = RawValue::new(0u32).unwrap();
            std::thread::scope(|s| {
                let mut g = cond.lock().unwrap();
                s.spawn(|| {
                    let g = cond.lock().unwrap();
                    flag.set(1);
                    g.notify_all();
                });
                assert!(g.wait_for(|| flag.get() == 1, Some(t)).unwrap());
            });
        }
    });
}

#[test]
fn notify_counts() {
    watchdog("notify counts", LIMIT, || {
        let cond = Condition::new().unwrap();
        let g = cond.lock().unwrap();
        // Nobody waits: each is a no-op.
        for n in [0, 1, 7, u32::MAX] {
            g.notify(n);
        }
        g.notify_all();
        drop(g);
        // Three threads wait; notify(0) wakes none, notify(u32::MAX) all.
        let woken = RawValue::new(0u32).unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    assert!(g.wait_timeout(LIMIT).unwrap());
                    woken.atomic().fetch_add(1, SeqCst);
                });
            }
            for _ in 0..3 {
                sleeping.acquire();
            }
            let g = cond.lock().unwrap();
            g.notify(0);
            drop(g);
            assert_eq!(woken.get(), 0);
            cond.lock().unwrap().notify(u32::MAX);
        });
        assert_eq!(woken.get(), 3);
    });
}

#[test]
fn a_panicking_predicate_leaves_the_condition_usable() {
    watchdog("panicking predicate", LIMIT, || {
        let cond = Condition::new().unwrap();
        for _ in 0..(Condition::MAX_WAITERS + 5) {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut g = cond.lock().unwrap();
                let mut calls = 0;
                let _ = g.wait_for(
                    || {
                        calls += 1;
                        assert!(calls < 2, "predicate panics");
                        false
                    },
                    Some(Duration::from_nanos(1)),
                );
            }));
            // With a 1 ns deadline the predicate may run once only.
            let _ = r;
        }
        // The lock was released by the unwinding guard, and no place leaked.
        std::thread::scope(|s| {
            s.spawn(|| drop(cond.lock_timeout(LIMIT).unwrap()));
        });
        let mut g = cond.lock().unwrap();
        assert!(!g.wait_timeout(Duration::from_millis(1)).unwrap());
    });
}

#[test]
fn condition_over_an_rlock_held_three_deep_across_processes() {
    watchdog("rlock depth 3", LIMIT, || {
        let rlock = RLock::new().unwrap();
        let cond = Condition::with_rlock(&rlock).unwrap();
        let flag = RawValue::new(0u32).unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let p = child(s, || {
                rlock.acquire().unwrap();
                let _outer = rlock.lock().unwrap();
                let mut g = cond.lock().unwrap();
                sleeping.release().unwrap();
                assert!(g.wait_for(|| flag.get() == 1, Some(LIMIT)).unwrap());
                drop(g);
                drop(_outer);
                // Exactly one level is left.
                rlock.release().unwrap();
                assert!(matches!(rlock.release(), Err(Error::NotOwner)));
            });
            sleeping.acquire();
            let g = cond.lock().unwrap();
            flag.set(1);
            g.notify(1);
            drop(g);
            assert_eq!(join(&p, LIMIT), 0);
        });
        // Not held here: release and make_consistent are refused.
        assert!(matches!(rlock.release(), Err(Error::NotOwner)));
        assert!(matches!(rlock.make_consistent(), Err(Error::NotOwner)));
    });
}

/// A waiter stopped while waiting, chosen by notify(1), then killed: the
/// notification passes on to the other waiter (no 'sleep' involved: the
/// stop makes the death come after the choice, every run).
#[test]
fn a_waiter_killed_after_being_chosen_passes_its_notification_on() {
    watchdog("chosen then killed", LIMIT, || {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let notified = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let waiter = || {
                child(s, || {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    if g.wait_timeout(LIMIT).unwrap() {
                        notified.atomic().fetch_add(1, SeqCst);
                    }
                })
            };
            let first = waiter();
            sleeping.acquire();
            drop(cond.lock().unwrap()); // `first` is inside wait
            let pid = first.pid().unwrap() as i32;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            let second = waiter();
            sleeping.acquire();
            let g = cond.lock().unwrap(); // `second` is inside wait
            g.notify(1); // chooses `first`, the longest waiting
            drop(g);
            first.kill().unwrap();
            join(&first, LIMIT);
            assert_eq!(join(&second, LIMIT), 0);
            assert_eq!(notified.get(), 1);
        });
    });
}

/// A waiter killed while re-taking the lock after its notify: a later
/// notify(1) wakes exactly one of two new waiters.
#[test]
fn a_waiter_killed_while_retaking_the_lock() {
    watchdog("killed retaking", LIMIT, || {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let notified = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let (cond, sleeping, notified) = (&cond, &sleeping, &notified);
            let waiter = |timeout: Duration| {
                child(s, move || {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    if g.wait_timeout(timeout).unwrap() {
                        notified.atomic().fetch_add(1, SeqCst);
                    }
                })
            };
            let doomed = waiter(LIMIT);
            sleeping.acquire();
            let g = cond.lock().unwrap();
            g.notify(1);
            // `doomed` is notified and now blocks on the lock this holds.
            doomed.kill().unwrap();
            join(&doomed, LIMIT);
            drop(g);
            let a = waiter(LIMIT);
            sleeping.acquire();
            let b = waiter(Duration::from_millis(500));
            sleeping.acquire();
            cond.lock().unwrap().notify(1);
            join(&a, LIMIT);
            join(&b, LIMIT);
            assert_eq!(notified.get(), 1, "exactly one of two woken");
        });
    });
}

#[test]
fn queue_sizes_at_the_edges() {
    watchdog("queue edges", LIMIT, || {
        // Items of zero bytes.
        let q = Queue::<()>::with_capacity(0, 64).unwrap();
        for _ in 0..1000 {
            match q.try_put(()) {
                Ok(()) => {}
                Err(multiproc::queue::PutError::Full(())) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        while q.try_get().is_ok() {}
        assert!(q.is_empty());
        // The ring's exact item limit, and one byte over.
        let q = Queue::<Vec<u8>>::with_capacity(0, 64).unwrap();
        let max = q.max_item_size();
        let mut n = 0;
        let fits = loop {
            let item = vec![7u8; n];
            match q.try_put(item) {
                Ok(()) => {
                    q.try_get().unwrap();
                    n += 1;
                }
                Err(multiproc::queue::PutError::TooLarge { size, .. }) => {
                    assert_eq!(size, max + 1, "the first item too large is one byte over");
                    break n - 1;
                }
                Err(e) => panic!("{e:?}"),
            }
            assert!(n < 1000);
        };
        // The largest that fits goes in and comes out intact, twice around.
        for _ in 0..3 {
            q.put(vec![9u8; fits]).unwrap();
            assert!(q.is_full() || q.len() == 1);
            assert_eq!(q.get().unwrap(), vec![9u8; fits]);
        }
        // maxsize 1.
        let q = Queue::<u32>::bounded(1).unwrap();
        q.put(1).unwrap();
        assert!(q.is_full());
        assert!(matches!(
            q.try_put(2),
            Err(multiproc::queue::PutError::Full(2))
        ));
        assert_eq!(q.get().unwrap(), 1);
        // Huge maxsize and odd ring sizes are refused or accepted, never a panic.
        let _ = Queue::<u8>::with_capacity(usize::MAX, 64);
        for bytes in [0, 1, 63, 65, usize::MAX, 1 << 30, (1 << 30) + 1] {
            let _ = Queue::<u8>::with_capacity(0, bytes);
        }
        // task_done once too many.
        let jq = JoinableQueue::<u8>::new().unwrap();
        jq.put(1).unwrap();
        jq.get().unwrap();
        jq.task_done().unwrap();
        assert!(matches!(jq.task_done(), Err(Error::TooManyTaskDone)));
        jq.join_timeout(Duration::ZERO).unwrap();
    });
}

#[test]
fn close_races_put_and_get() {
    watchdog("close races", LIMIT, || {
        for _ in 0..20 {
            let q = Queue::<u64>::with_capacity(0, 256).unwrap();
            let got = RawValue::new(0u64).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..200 {
                        if q.put_timeout(i, Duration::from_millis(10)).is_err() {
                            break;
                        }
                    }
                });
                s.spawn(|| loop {
                    match q.get_timeout(Duration::from_millis(10)) {
                        Ok(_) => {
                            got.atomic().fetch_add(1, SeqCst);
                        }
                        Err(Error::Empty | Error::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                });
                s.spawn(|| {
                    for _ in 0..100 {
                        let _ = q.len();
                        let _ = q.is_full();
                    }
                    let _ = q.close_all();
                });
            });
        }
    });
}

#[test]
fn semaphores_past_their_limits() {
    watchdog("semaphore limits", LIMIT, || {
        assert!(Semaphore::new(u32::MAX).is_err());
        assert!(BoundedSemaphore::new(u32::MAX).is_err());
        let s = Semaphore::new((1 << 31) - 1).unwrap();
        assert!(matches!(s.release(), Err(Error::TooManyReleases)));
        assert_eq!(s.value(), (1 << 31) - 1);
        let b = BoundedSemaphore::new(1).unwrap();
        assert!(matches!(b.release(), Err(Error::TooManyReleases)));
        b.acquire();
        b.release().unwrap();
        assert!(matches!(b.release(), Err(Error::TooManyReleases)));
        let z = BoundedSemaphore::new(0).unwrap();
        assert!(matches!(z.release(), Err(Error::TooManyReleases)));
    });
}

#[test]
fn barrier_edges() {
    watchdog("barrier edges", LIMIT, || {
        assert!(Barrier::new(0).is_err());
        // Refused at once: a pid slot per party would be 16 GiB.
        assert!(matches!(
            Barrier::new(u32::MAX),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Barrier::new(Barrier::MAX_PARTIES + 1).is_err());
        drop(Barrier::new(Barrier::MAX_PARTIES).unwrap());
        let b = Barrier::new(1).unwrap();
        for _ in 0..10 {
            assert_eq!(b.wait().unwrap(), 0);
        }
        b.abort().unwrap();
        assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
        b.reset().unwrap();
        assert_eq!(b.wait().unwrap(), 0);
        // abort and reset racing waits: every wait returns.
        let b = Barrier::new(3).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let _ = b.wait_timeout(Duration::from_secs(10));
                    }
                });
            }
            for i in 0..400 {
                if i % 2 == 0 {
                    b.abort().unwrap();
                } else {
                    b.reset().unwrap();
                }
            }
            b.abort().unwrap();
        });
    });
}

macro_rules! tearing {
    ($N:literal) => {{
        const N: usize = $N;
        let v = RawValue::new([0u8; N]).unwrap();
        let a = RawArray::from_slice(&[[0u8; N]; 4]).unwrap();
        let piece = 1usize << (N | 8).trailing_zeros();
        std::thread::scope(|s| {
            for w in [0x11u8, 0xEE] {
                let (v, a) = (&v, &a);
                s.spawn(move || {
                    for _ in 0..20_000 {
                        v.set([w; N]);
                        a.set(2, [w; N]).unwrap();
                    }
                });
            }
            for _ in 0..20_000 {
                for x in [v.get(), a.get(2).unwrap()] {
                    // The documented rule: each piece is whole.
                    for p in x.chunks(piece) {
                        assert!(p.iter().all(|&b| b == p[0]), "{N}: torn piece {p:?}");
                    }
                }
            }
        });
        assert!(a.get(4).is_err());
    }};
}

#[test]
fn raw_cells_tear_only_between_pieces() {
    watchdog("raw tearing", LIMIT, || {
        tearing!(1);
        tearing!(3);
        tearing!(8);
        tearing!(12);
        tearing!(16);
        tearing!(64);
    });
}

#[test]
fn lock_owner_death_and_a_non_owner() {
    watchdog("lock owner death", LIMIT, || {
        let lock = Lock::new().unwrap();
        multiproc::scope(|s| {
            let p = child(s, || {
                let g = lock.lock().unwrap();
                std::mem::forget(g);
                multiproc::process::exit(0);
            });
            assert_eq!(join(&p, LIMIT), 0);
        });
        match lock.lock_recovering() {
            Err(RecoverableLockError::OwnerDied(g)) => {
                // Another thread, not the owner, cannot take it meanwhile.
                std::thread::scope(|s| {
                    s.spawn(|| assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock))));
                });
                multiproc::sync::LockGuard::make_consistent(&g).unwrap();
            }
            Ok(_) => panic!("owner death not reported"),
            Err(e) => panic!("{e:?}"),
        }
        drop(lock.lock().unwrap());
    });
}

/// An item that can be got has been counted as unfinished: a producer
/// stopped at any instruction of `put` never leaves an item whose
/// `task_done` is refused (Python counts before the item can be got).
/// The producer is stopped at random points hundreds of times.
#[test]
fn an_item_that_can_be_got_is_already_unfinished() {
    watchdog("unfinished before visible", LIMIT, || {
        let q = JoinableQueue::<u64>::new().unwrap();
        multiproc::scope(|s| {
            let producer = child(s, || {
                for i in 0.. {
                    q.put(i).unwrap();
                }
            });
            let pid = producer.pid().unwrap() as i32;
            for round in 0..400 {
                while q.is_empty() {
                    std::thread::yield_now();
                }
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                while !procfs::stopped(pid as u32) {
                    std::thread::yield_now();
                }
                while q.try_get().is_ok() {
                    if let Err(e) = q.task_done() {
                        producer.kill().unwrap();
                        panic!("round {round}: task_done of a got item: {e}");
                    }
                }
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            producer.kill().unwrap();
            join(&producer, LIMIT);
        });
    });
}

/// Items of a check-summed shape: `(producer, seq, payload)`, the payload
/// `seq % 300` bytes of `seq as u8`.
type Item = (u32, u32, Vec<u8>);

fn item(p: u32, seq: u32) -> Item {
    (p, seq, vec![seq as u8; (seq % 300) as usize])
}

const SEQS: u32 = 50_000;

/// Records a got item in `seen` (one counter per producer and seq) after
/// checking that it is whole.
fn record(seen: &RawArray<u32>, (p, seq, payload): Item) {
    assert_eq!(payload, item(p, seq).2, "torn item {p}/{seq}");
    let idx = (p * SEQS + seq) as usize;
    seen.atomic(idx).unwrap().fetch_add(1, SeqCst);
}

/// Producers SIGKILLed mid-put, then consumers SIGKILLed mid-get, on a
/// small ring: no item torn, none got twice, none lost whose put returned
/// (when only producers die).
#[test]
fn queue_survives_killed_producers_and_consumers() {
    watchdog("queue kills", LIMIT * 2, || {
        const PRODUCERS: u32 = 3;
        let q = Queue::<Item>::with_capacity(0, 4096).unwrap();
        let acked = RawArray::<u32>::new(PRODUCERS as usize).unwrap();
        let seen = RawArray::<u32>::new((PRODUCERS * SEQS) as usize).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        let seen2 = RawArray::<u32>::new(20_000).unwrap();
        let got = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            // Phase 1: consumers are threads here; producers die mid-put.
            std::thread::scope(|ts| {
                for _ in 0..2 {
                    ts.spawn(|| {
                        while stop.get() == 0 {
                            match q.get_timeout(Duration::from_millis(20)) {
                                Ok(it) => record(&seen, it),
                                Err(Error::Timeout | Error::Empty) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    });
                }
                for p in 0..PRODUCERS {
                    let (q, acked) = (&q, &acked);
                    let producer = child(s, move || {
                        for seq in 0..SEQS {
                            q.put(item(p, seq)).unwrap();
                            acked.atomic(p as usize).unwrap().store(seq + 1, SeqCst);
                        }
                    });
                    // Killed after a varying number of puts.
                    let target = 500 + p * 1700;
                    while acked.get(p as usize).unwrap() < target {
                        std::thread::yield_now();
                    }
                    producer.kill().unwrap();
                    join(&producer, LIMIT);
                }
                // Drain what is left, then stop the consumers.
                while !q.is_empty() {
                    std::thread::yield_now();
                }
                stop.set(1);
            });
            for p in 0..PRODUCERS {
                let acked = acked.get(p as usize).unwrap();
                for seq in 0..SEQS {
                    let n = seen.get((p * SEQS + seq) as usize).unwrap();
                    assert!(n <= 1, "{p}/{seq} got {n} times");
                    if seq < acked {
                        assert_eq!(n, 1, "{p}/{seq} acknowledged but lost");
                    }
                }
            }
            // Phase 2: the producer is a thread here; consumers die mid-get.
            let seen = &seen2;
            std::thread::scope(|ts| {
                ts.spawn(|| {
                    for seq in 0..20_000 {
                        q.put(item(0, seq)).unwrap();
                    }
                    stop.set(2);
                });
                for round in 0..6 {
                    let (q, got) = (&q, &got);
                    let consumer = child(s, move || loop {
                        record(seen, q.get().unwrap());
                        got.atomic().fetch_add(1, SeqCst);
                    });
                    let target = got.get() + 300 + round * 50;
                    while got.get() < target {
                        std::thread::yield_now();
                    }
                    consumer.kill().unwrap();
                    join(&consumer, LIMIT);
                }
                // The last consumer drains the rest here.
                loop {
                    match q.get_timeout(Duration::from_millis(200)) {
                        Ok(it) => record(seen, it),
                        Err(Error::Timeout) if stop.get() == 2 => break,
                        Err(Error::Timeout) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
            for seq in 0..20_000 {
                let n = seen.get(seq).unwrap();
                assert!(n <= 1, "0/{seq} got {n} times");
            }
        });
    });
}

/// The async timed forms at their limits: none panics; the short ones
/// give up at once, the long ones return what is there.
#[test]
fn every_async_timed_call_at_its_limits() {
    watchdog("async timeouts at limits", LIMIT, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for t in SHORT {
                assert!(!Event::new().unwrap().wait_timeout_async(t).await.unwrap());
                let sem = Semaphore::new(0).unwrap();
                assert!(!sem.acquire_timeout_async(t).await.unwrap());
                let q = Queue::<u8>::with_capacity(1, 64).unwrap();
                assert!(matches!(
                    q.get_timeout_async(t).await,
                    Err(Error::Timeout | Error::Empty)
                ));
                q.put(1).unwrap();
                assert!(q.put_timeout_async(2, t).await.is_err());
                let jq = JoinableQueue::<u8>::new().unwrap();
                jq.put(1).unwrap();
                assert!(matches!(
                    jq.join_timeout_async(t).await,
                    Err(Error::Timeout)
                ));
                let b = Barrier::new(2).unwrap();
                assert!(b.wait_timeout_async(t).await.is_err());
            }
            for t in LONG {
                let e = Event::new().unwrap();
                e.set();
                assert!(e.wait_timeout_async(t).await.unwrap());
                let sem = Semaphore::new(1).unwrap();
                assert!(sem.acquire_timeout_async(t).await.unwrap());
                let q = Queue::<u8>::new().unwrap();
                q.put_timeout_async(5, t).await.unwrap();
                assert_eq!(q.get_timeout_async(t).await.unwrap(), 5);
                let jq = JoinableQueue::<u8>::new().unwrap();
                jq.join_timeout_async(t).await.unwrap();
                let b = Barrier::new(1).unwrap();
                assert_eq!(b.wait_timeout_async(t).await.unwrap(), 0);
            }
        });
    });
}

/// A process killed holding a condition's lock (before it could wait):
/// the next locker is told, repairs, and waits and notifies as usual.
#[test]
fn condition_lock_holder_killed_before_waiting() {
    watchdog("cond holder killed", LIMIT, || {
        for rlock in [false, true] {
            let cond = if rlock {
                Condition::new().unwrap()
            } else {
                Condition::with_lock(&Lock::new().unwrap()).unwrap()
            };
            let locked = Semaphore::new(0).unwrap();
            let flag = RawValue::new(0u32).unwrap();
            multiproc::scope(|s| {
                let doomed = child(s, || {
                    let g = cond.lock().unwrap();
                    locked.release().unwrap();
                    std::mem::forget(g);
                    loop {
                        std::thread::park();
                    }
                });
                locked.acquire();
                doomed.kill().unwrap();
                join(&doomed, LIMIT);
                let g = match cond.lock_recovering() {
                    Err(RecoverableLockError::OwnerDied(g)) => g,
                    Ok(_) => panic!("owner death not reported"),
                    Err(e) => panic!("{e:?}"),
                };
                multiproc::sync::ConditionGuard::make_consistent(&g).unwrap();
                drop(g);
                let waiter = child(s, || {
                    let mut g = cond.lock().unwrap();
                    assert!(g.wait_for(|| flag.get() == 1, Some(LIMIT)).unwrap());
                });
                let g = cond.lock().unwrap();
                flag.set(1);
                g.notify_all();
                drop(g);
                assert_eq!(join(&waiter, LIMIT), 0);
            });
        }
    });
}

/// The party running the barrier's action is killed inside it: the other
/// parties are told the barrier broke (they do not hang), and after a reset
/// the barrier passes again.
#[test]
fn barrier_party_killed_inside_the_action() {
    watchdog("barrier action killed", LIMIT, || {
        let in_action = RawValue::new(0u32).unwrap();
        let theirs = in_action.clone();
        let barrier = Barrier::new(3).unwrap().with_action(move || {
            if theirs.get() == 0 {
                theirs.set(std::process::id());
                loop {
                    std::thread::park();
                }
            }
        });
        let broken = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let parties: Vec<_> = (0..3)
                .map(|_| {
                    child(s, || match barrier.wait() {
                        Err(Error::BrokenBarrier) => {
                            broken.atomic().fetch_add(1, SeqCst);
                        }
                        Ok(_) => panic!("passed a barrier whose action never ended"),
                        Err(e) => panic!("{e}"),
                    })
                })
                .collect();
            while in_action.get() == 0 {
                std::thread::yield_now();
            }
            // SAFETY: signalling our own child.
            unsafe { libc::kill(in_action.get() as i32, libc::SIGKILL) };
            for p in &parties {
                join(p, LIMIT);
            }
            assert_eq!(broken.get(), 2, "both survivors told");
            barrier.reset().unwrap();
            let again: Vec<_> = (0..3)
                .map(|_| {
                    child(s, || {
                        barrier.wait_timeout(LIMIT).unwrap();
                    })
                })
                .collect();
            for p in &again {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
    });
}

/// A recursive mutex must never back a `Lock` (two guards in one thread
/// would be two `&mut` of one value): opening a named RLock or Condition
/// as a Lock is refused.
#[test]
fn a_named_rlock_never_opens_as_a_lock() {
    watchdog("rlock as lock", LIMIT, || {
        let name = common::TempName::new("attack-rlock");
        let _r = RLock::create(&name).unwrap();
        assert!(Lock::open(&name).is_err());
        let cname = common::TempName::new("attack-cond-kind");
        let _c = Condition::create(&cname).unwrap();
        assert!(Lock::open(&cname).is_err());
        assert!(RLock::open(&cname).is_err());
        assert!(multiproc::Value::<u32>::open(&cname).is_err());
    });
}

/// `close` wakes a put blocked on a full queue and a get blocked on an
/// empty one, with no timeout: each returns `Closed` instead of hanging.
#[test]
fn close_wakes_blocked_put_and_get() {
    watchdog("close wakes", LIMIT, || {
        let full = Queue::<u32>::bounded(1).unwrap();
        full.put(1).unwrap();
        let empty = Queue::<u32>::new().unwrap();
        multiproc::scope(|s| {
            let putter = child(s, || {
                assert!(matches!(
                    full.put(2),
                    Err(multiproc::queue::PutError::Closed(2))
                ));
            });
            let getter = child(s, || assert!(matches!(empty.get(), Err(Error::Closed))));
            // Both blocked (or about to be): close cannot be missed either way.
            full.close_all().unwrap();
            empty.close_all().unwrap();
            assert_eq!(join(&putter, LIMIT), 0);
            assert_eq!(join(&getter, LIMIT), 0);
            // What was in the closed queue can still be got.
            assert_eq!(full.get().unwrap(), 1);
            assert!(matches!(full.get(), Err(Error::Closed)));
        });
    });
}

/// Racing releases never push a BoundedSemaphore past its limit: of many
/// concurrent releases on a full one, all are refused; on one with k
/// permits out, exactly k succeed.
#[test]
fn racing_releases_respect_the_bound() {
    watchdog("bounded releases", LIMIT, || {
        for out in [0u32, 1, 3] {
            let b = BoundedSemaphore::new(4).unwrap();
            for _ in 0..out {
                b.acquire();
            }
            let ok = RawValue::new(0u32).unwrap();
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        for _ in 0..50 {
                            match b.release() {
                                Ok(()) => {
                                    ok.atomic().fetch_add(1, SeqCst);
                                }
                                Err(Error::TooManyReleases) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    });
                }
            });
            assert_eq!(ok.get(), out);
            assert_eq!(b.value(), 4);
        }
    });
}

/// A party released by a pass but killed before it left the barrier
/// (stopped while asleep, so it dies after the release, every run): the
/// barrier is not left draining for ever; the next pass goes through.
#[test]
fn barrier_party_killed_after_release_before_leaving() {
    watchdog("barrier draining", LIMIT, || {
        let barrier = Barrier::new(2).unwrap();
        multiproc::scope(|s| {
            let doomed = child(s, || {
                let _ = barrier.wait();
            });
            while barrier.n_waiting() < 1 {
                std::thread::yield_now();
            }
            let pid = doomed.pid().unwrap() as i32;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            while !procfs::stopped(pid as u32) {
                std::thread::yield_now();
            }
            // The last arrival: the pass is released, `doomed` cannot leave.
            assert_eq!(barrier.wait_timeout(LIMIT).unwrap(), 1);
            doomed.kill().unwrap();
            join(&doomed, LIMIT);
            let other = child(s, || {
                barrier.wait_timeout(LIMIT).unwrap();
            });
            barrier.wait_timeout(LIMIT).unwrap();
            assert_eq!(join(&other, LIMIT), 0);
        });
    });
}

/// Two waiters stopped inside `wait_timeout`; notify(1) chooses the
/// longest waiting; both resume only after their deadlines passed: the
/// chosen one reports the notification, the other a timeout (a notify
/// is never lost to a timeout, nor counted twice).
#[test]
fn a_notification_and_a_timeout_at_once() {
    watchdog("notify vs timeout", LIMIT, || {
        let cond = Condition::new().unwrap();
        let sleeping = Semaphore::new(0).unwrap();
        let results = RawArray::<u32>::new(2).unwrap();
        multiproc::scope(|s| {
            let waiter = |k: usize| {
                let (cond, sleeping, results) = (&cond, &sleeping, &results);
                child(s, move || {
                    let mut g = cond.lock().unwrap();
                    sleeping.release().unwrap();
                    let notified = g.wait_timeout(Duration::from_millis(200)).unwrap();
                    results.set(k, 1 + u32::from(notified)).unwrap();
                })
            };
            let first = waiter(0);
            sleeping.acquire();
            drop(cond.lock().unwrap());
            let second = waiter(1);
            sleeping.acquire();
            let g = cond.lock().unwrap(); // both inside wait
            let pids = [first.pid().unwrap() as i32, second.pid().unwrap() as i32];
            for pid in pids {
                // SAFETY: signalling our own children.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
            for pid in pids {
                while !procfs::stopped(pid as u32) {
                    std::thread::yield_now();
                }
            }
            g.notify(1);
            drop(g);
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_millis(400) {
                std::thread::yield_now(); // both deadlines pass while stopped
            }
            for pid in pids {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            assert_eq!(join(&first, LIMIT), 0);
            assert_eq!(join(&second, LIMIT), 0);
            assert_eq!(
                results.read(..).unwrap(),
                vec![2, 1],
                "[first, second]: 2 notified, 1 timed out"
            );
        });
    });
}

/// Other processes hammer `len`/`is_full` while producers and consumers
/// race on a tiny bounded ring: no get reports corruption, and no
/// snapshot ever shows more items than `maxsize`.
#[test]
fn len_and_is_full_hammered_on_a_tiny_bounded_ring() {
    watchdog("len hammered", LIMIT, || {
        let q = Queue::<Vec<u8>>::with_capacity(5, 128).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        let over = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let hammers: Vec<_> = (0..2)
                .map(|_| {
                    child(s, || {
                        while stop.get() == 0 {
                            if q.len() > 5 {
                                over.atomic().fetch_add(1, SeqCst);
                            }
                            let _ = q.is_full();
                        }
                    })
                })
                .collect();
            let producers: Vec<_> = (0..2u8)
                .map(|p| {
                    let q = &q;
                    child(s, move || {
                        for i in 0..3000u32 {
                            q.put(vec![p; (i % 40) as usize]).unwrap();
                        }
                    })
                })
                .collect();
            std::thread::scope(|ts| {
                for _ in 0..2 {
                    ts.spawn(|| {
                        for _ in 0..3000 {
                            let it = q.get_timeout(LIMIT).unwrap();
                            assert!(it.iter().all(|&b| b == it.first().copied().unwrap_or(0)));
                        }
                    });
                }
            });
            stop.set(1);
            for p in producers.iter().chain(&hammers) {
                assert_eq!(join(p, LIMIT), 0);
            }
            assert_eq!(over.get(), 0, "len above maxsize");
            assert!(q.is_empty());
        });
    });
}

/// Children forked from the main thread while other threads of the parent
/// keep the crate's process-local locks busy: the anonymous-object arena
/// (allocating and freeing small cells), named segments (create, open,
/// unlink) and async waits (the waiter thread's registry). Each child
/// uses all three at once and exits: none may find a lock held by a
/// thread that does not exist in it.
#[test]
fn forks_while_other_threads_use_the_arena_named_segments_and_async_waits() {
    use multiproc::{Array, Value};
    use std::sync::atomic::AtomicBool;
    watchdog("forks under busy crate locks", LIMIT, || {
        let stop = AtomicBool::new(false);
        let names = common::TempName::new("fork-busy");
        let rt = common::multi_thread();
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(SeqCst) {
                    let v = Value::new(1u64).unwrap();
                    let a = Array::<u8>::new(100).unwrap();
                    std::hint::black_box((v.get().unwrap(), a.len()));
                }
            });
            s.spawn(|| {
                let mut i = 0u64;
                while !stop.load(SeqCst) {
                    let name = format!("{}-{}", &*names, i % 4);
                    i += 1;
                    let _ = multiproc::segment::Segment::unlink(&name);
                    if let Ok(e) = Event::create(&name) {
                        e.set();
                        drop(Event::open(&name));
                    }
                    let _ = multiproc::segment::Segment::unlink(&name);
                }
            });
            s.spawn(|| {
                rt.block_on(async {
                    while !stop.load(SeqCst) {
                        let e = Event::new().unwrap();
                        let waiting = e.wait_timeout_async(Duration::from_micros(50));
                        std::hint::black_box(waiting.await.unwrap());
                    }
                })
            });
            for i in 0..40 {
                let name = format!("{}-child-{i}", &*names);
                let c = common::static_child(move || {
                    let v = Value::new(7u64).unwrap();
                    assert_eq!(v.get().unwrap(), 7);
                    let e = Event::create(&name).unwrap();
                    e.set();
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        assert!(e.wait_timeout_async(Duration::from_secs(5)).await.unwrap());
                        let other = Event::new().unwrap();
                        assert!(!other
                            .wait_timeout_async(Duration::from_millis(1))
                            .await
                            .unwrap());
                    });
                    multiproc::segment::Segment::unlink(&name).unwrap();
                });
                assert_eq!(join(&c, Duration::from_secs(20)), 0, "child {i}");
            }
            stop.store(true, SeqCst);
        });
    });
}

/// Item 4's escape tried at run time: a scoped child's handle leaked with
/// `mem::forget` (and one dropped at once) while the child still writes
/// through a borrow of a locked value. The scope must not return before
/// both children have exited, so the value the parent sees after it never
/// changes again.
#[test]
fn a_leaked_scoped_handle_still_holds_the_scope_open() {
    use multiproc::Value;
    watchdog("leaked scoped handle", LIMIT, || {
        let v = Value::new(0u64).unwrap();
        let go = Event::new().unwrap();
        {
            let mut guard = v.lock().unwrap();
            let counter = &mut *guard;
            let go = &go;
            multiproc::scope(|s| {
                let leaked = s
                    .start(move || {
                        go.wait();
                        for _ in 0..1000 {
                            *counter += 1;
                        }
                    })
                    .unwrap();
                std::mem::forget(leaked);
                drop(s.start(|| go.wait()).unwrap());
                go.set();
            });
            // The child wrote through the parent's guard: the parent's
            // mapping is shared, so the writes are visible here.
            drop(guard);
        }
        let first = v.get().unwrap();
        assert_eq!(first, 1000);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            v.get().unwrap(),
            first,
            "a child still wrote after the scope"
        );
    });
}
