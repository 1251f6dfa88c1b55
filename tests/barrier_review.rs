//! Review of the Barrier whose last arrival counts every party of a pass
//! out at release (no draining): passes never mix, a fast party may
//! re-enter before the released ones woke, aborts/resets/kills/dropped
//! futures never hang it.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{child, join, static_child, wait_until, watchdog};
use multiproc::{Barrier, Error, RawArray, RawValue};

const LIMIT: Duration = Duration::from_secs(60);

/// 6 processes on a 3-party barrier (passes mix processes at random):
/// over all passes, each index is returned equally often (each pass gives
/// each index once), and the barrier ends clean. A process that has done
/// its share keeps waiting until all have, so that no straggler is left
/// alone; then the barrier is aborted to let the last ones out.
#[test]
fn six_processes_three_parties_indices_balanced() {
    watchdog("six on three", LIMIT, || {
        const PARTIES: u32 = 3;
        const PROCS: u32 = 6;
        const PASSES: u32 = 200; // per process, at least
        let barrier = Barrier::new(PARTIES).unwrap();
        let by_index = RawArray::<u32>::new(PARTIES as usize).unwrap();
        let done = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let ps: Vec<_> = (0..PROCS)
                .map(|_| {
                    child(s, || {
                        let mut n = 0;
                        loop {
                            match barrier.wait_timeout(Duration::MAX) {
                                Ok(i) => {
                                    by_index.atomic(i as usize).unwrap().fetch_add(1, SeqCst);
                                }
                                Err(Error::BrokenBarrier) => break,
                                Err(e) => panic!("{e}"),
                            }
                            n += 1;
                            if n == PASSES && done.atomic().fetch_add(1, SeqCst) + 1 == PROCS {
                                barrier.abort().unwrap();
                                break;
                            }
                        }
                    })
                })
                .collect();
            for p in &ps {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
        let counts: Vec<u32> = (0..PARTIES as usize)
            .map(|i| by_index.get(i).unwrap())
            .collect();
        assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
        assert!(counts[0] >= PASSES * PROCS / PARTIES);
        assert_eq!(barrier.n_waiting(), 0);
        barrier.reset().unwrap();
        assert!(!barrier.is_broken());
    });
}

/// Each pass has exactly one index of each kind and the action runs once
/// per pass, with the pass's parties all still inside before it (the
/// action numbers the pass; every party reads the number after release
/// and records its index under it).
#[test]
fn action_numbers_passes_indices_unique() {
    watchdog("action numbering", LIMIT, || {
        const PARTIES: u32 = 3;
        // As many processes as parties: every process is in every pass,
        // so after its release pass k+1 cannot have completed yet.
        const PROCS: u32 = PARTIES;
        const PASSES: u32 = 300;
        let total = (PASSES * PROCS / PARTIES) as usize;
        let pass_no = RawValue::new(0u32).unwrap();
        let masks = RawArray::<u32>::new(total + 1).unwrap();
        let counter = pass_no.clone();
        let barrier = Barrier::new(PARTIES).unwrap().with_action(move || {
            counter.atomic().fetch_add(1, SeqCst);
        });
        multiproc::scope(|s| {
            let ps: Vec<_> = (0..PROCS)
                .map(|_| {
                    child(s, || {
                        for _ in 0..PASSES {
                            let i = barrier.wait().unwrap();
                            let k = pass_no.atomic().load(SeqCst) as usize;
                            let old = masks.atomic(k).unwrap().fetch_or(1 << i, SeqCst);
                            assert_eq!(old & (1 << i), 0, "index {i} twice in pass {k}");
                        }
                    })
                })
                .collect();
            for p in &ps {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
        for k in 1..=total {
            assert_eq!(masks.get(k).unwrap(), 0b111, "pass {k}");
        }
    });
}

/// Threads: a fast party re-enters the next pass before the slow released
/// ones have woken; small timeouts, none, and Duration::MAX mixed.
#[test]
fn fast_reentry_threads_mixed_timeouts() {
    watchdog("fast re-entry", LIMIT, || {
        let barrier = Barrier::new(4).unwrap();
        let broken = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let barrier = &barrier;
                let broken = &broken;
                s.spawn(move || {
                    for n in 0..500u32 {
                        let r = match (t + n) % 3 {
                            0 => barrier.wait(),
                            1 => barrier.wait_timeout(Duration::MAX),
                            _ => barrier.wait_timeout(Duration::from_secs(30)),
                        };
                        r.unwrap_or_else(|e| {
                            broken.fetch_add(1, SeqCst);
                            panic!("pass {n}: {e}")
                        });
                    }
                });
            }
        });
        assert!(!barrier.is_broken());
        assert_eq!(barrier.n_waiting(), 0);
    });
}

/// Tiny timeouts: the barrier breaks often; each round every party either
/// passes or gets BrokenBarrier/Timeout, then a reset (by one, fenced by a
/// second barrier) makes it usable again. Never hangs; the count returns
/// to zero.
#[test]
fn tiny_timeouts_then_reset_rounds() {
    watchdog("tiny timeouts", LIMIT, || {
        const P: u32 = 3;
        let barrier = Barrier::new(P).unwrap();
        let fence = Barrier::new(P).unwrap();
        let passed = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let ps: Vec<_> = (0..P)
                .map(|me| {
                    let (barrier, fence, passed) = (&barrier, &fence, &passed);
                    child(s, move || {
                        for n in 0..150u32 {
                            let t = Duration::from_micros(u64::from((n * 7 + me * 13) % 200));
                            match barrier.wait_timeout(t) {
                                Ok(_) => {
                                    passed.atomic().fetch_add(1, SeqCst);
                                }
                                Err(Error::BrokenBarrier | Error::Timeout) => {}
                                Err(e) => panic!("{e}"),
                            }
                            fence.wait().unwrap();
                            if me == 0 {
                                barrier.reset().unwrap();
                            }
                            fence.wait().unwrap();
                            assert_eq!(barrier.n_waiting(), 0, "round {n}");
                            assert!(!barrier.is_broken(), "round {n}");
                            fence.wait().unwrap();
                        }
                        // Works after all that.
                        barrier.wait().unwrap();
                    })
                })
                .collect();
            for p in &ps {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
        // Each round, passes come in whole passes.
        assert_eq!(passed.atomic().load(SeqCst) % P, 0);
    });
}

/// Abort and reset racing releases: every wait returns; afterwards a reset
/// leaves a working barrier.
#[test]
fn abort_reset_race_releases() {
    watchdog("abort/reset race", LIMIT, || {
        const P: u32 = 3;
        let barrier = Barrier::new(P).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let ps: Vec<_> = (0..P)
                .map(|_| {
                    child(s, || {
                        while stop.atomic().load(SeqCst) == 0 {
                            match barrier.wait_timeout(Duration::from_secs(20)) {
                                Ok(_) | Err(Error::BrokenBarrier) | Err(Error::Timeout) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    })
                })
                .collect();
            let troll = child(s, || {
                for n in 0..400u32 {
                    if n % 2 == 0 {
                        barrier.abort().unwrap();
                    } else {
                        barrier.reset().unwrap();
                    }
                    std::thread::yield_now();
                }
                barrier.reset().unwrap();
                stop.atomic().store(1, SeqCst);
                // Wake whoever still waits.
                barrier.abort().unwrap();
            });
            assert_eq!(join(&troll, LIMIT), 0);
            for p in &ps {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
        assert!(wait_until(Duration::from_secs(10), || {
            barrier.reset().unwrap();
            barrier.n_waiting() == 0 && !barrier.is_broken()
        }));
        let b = barrier.clone();
        let p = static_child(move || {
            for _ in 0..2 {
                b.wait().unwrap();
            }
        });
        let q = {
            let b = barrier.clone();
            static_child(move || {
                b.wait().unwrap();
                b.wait().unwrap();
            })
        };
        for _ in 0..2 {
            barrier.wait().unwrap();
        }
        assert_eq!(join(&p, LIMIT), 0);
        assert_eq!(join(&q, LIMIT), 0);
    });
}

/// kill -9 of a party while it waits: the others get BrokenBarrier (no
/// hang); a reset makes the barrier usable again. Also a party killed right
/// after its release holds up nothing.
#[test]
fn kill_waiting_party_breaks_then_reset() {
    watchdog("kill waiting", LIMIT, || {
        let barrier = Barrier::new(3).unwrap();
        let b = barrier.clone();
        let victim = static_child(move || {
            let _ = b.wait();
            // Passed (or broken): linger, to be killed after release.
            std::thread::sleep(Duration::from_secs(60));
        });
        assert!(wait_until(LIMIT, || barrier.n_waiting() == 1));
        victim.kill().unwrap();
        let _ = join(&victim, LIMIT);
        let b = barrier.clone();
        let other = static_child(move || {
            // Passes (the dead party was counted) or breaks: never hangs.
            assert!(matches!(b.wait(), Ok(_) | Err(Error::BrokenBarrier)));
        });
        assert!(matches!(barrier.wait(), Ok(_) | Err(Error::BrokenBarrier)));
        assert_eq!(join(&other, LIMIT), 0);
        barrier.reset().unwrap();
        assert!(!barrier.is_broken());

        // Pass with a victim, kill it after the release, before it ran.
        let b = barrier.clone();
        let victim = static_child(move || {
            let _ = b.wait();
            std::thread::sleep(Duration::from_secs(60));
        });
        let b = barrier.clone();
        let other = static_child(move || {
            b.wait().unwrap();
            b.wait().unwrap();
        });
        assert!(wait_until(LIMIT, || barrier.n_waiting() == 2));
        barrier.wait().unwrap();
        victim.kill().unwrap();
        let _ = join(&victim, LIMIT);
        // The next pass fills without the dead released party (3 = other,
        // this, and a fresh one).
        let b = barrier.clone();
        let fresh = static_child(move || {
            b.wait().unwrap();
        });
        barrier.wait().unwrap();
        assert_eq!(join(&other, LIMIT), 0);
        assert_eq!(join(&fresh, LIMIT), 0);
        assert!(!barrier.is_broken());
    });
}

/// Async: a future dropped while waiting breaks the pass; one dropped
/// before its first poll changes nothing.
#[test]
fn async_forgotten_and_dropped_futures() {
    watchdog("async drops", LIMIT, || {
        let rt = common::multi_thread();
        let barrier = Barrier::new(2).unwrap();
        rt.block_on(async {
            // Dropped before first poll.
            drop(barrier.wait_async());
            assert_eq!(barrier.n_waiting(), 0);

            // Dropped while waiting: breaks.
            let mut fut = Box::pin(barrier.wait_async());
            let waker = futures_noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            drop(fut);
            assert!(barrier.is_broken());
            assert_eq!(barrier.n_waiting(), 0);
            barrier.reset().unwrap();

            // tokio tasks, many passes, with a task dropped after release.
            for _ in 0..100 {
                let a = tokio::spawn({
                    let b = barrier.clone();
                    async move { b.wait_async().await }
                });
                let r = barrier.wait_timeout_async(Duration::MAX).await.unwrap();
                let s = a.await.unwrap().unwrap();
                assert_eq!(r + s, 1);
            }
        });
        assert!(!barrier.is_broken());
    });
}

/// Async: a released future that is never polled again (forgotten) holds
/// up no later pass.
#[test]
fn async_forgotten_futures_hold_up_nothing() {
    watchdog("forgotten futures", LIMIT, || {
        let rt = common::multi_thread();
        let barrier = Barrier::new(2).unwrap();
        rt.block_on(async {
            // Forgotten after release: poll once to arrive, complete the
            // pass from a thread, then forget the future.
            for _ in 0..50 {
                let mut fut = Box::pin(barrier.wait_async());
                let waker = futures_noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                assert!(fut.as_mut().poll(&mut cx).is_pending());
                assert_eq!(barrier.n_waiting(), 1);
                let b = barrier.clone();
                std::thread::spawn(move || b.wait().unwrap())
                    .join()
                    .unwrap();
                std::mem::forget(fut);
                assert_eq!(barrier.n_waiting(), 0);
                assert!(!barrier.is_broken());
            }
        });
    });
}

use std::future::Future;

fn futures_noop_waker() -> std::task::Waker {
    std::task::Waker::noop().clone()
}

/// kill -9 of a party at random points (before arrival, while waiting,
/// right after a release, inside the internal lock): the others pass or
/// get BrokenBarrier/Timeout, never hang, and after the killing stops a
/// reset makes the barrier usable again.
#[test]
fn random_kills_never_hang_and_reset_recovers() {
    watchdog("random kills", LIMIT, || {
        const P: u32 = 3;
        let barrier = Barrier::new(P).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let steady: Vec<_> = (0..P - 1)
                .map(|_| {
                    child(s, || {
                        while stop.atomic().load(SeqCst) == 0 {
                            match barrier.wait_timeout(Duration::from_secs(5)) {
                                Ok(_) | Err(Error::BrokenBarrier | Error::Timeout) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    })
                })
                .collect();
            for round in 0..60u64 {
                let b = barrier.clone();
                let victim = static_child(move || loop {
                    let _ = b.wait_timeout(Duration::from_secs(5));
                });
                // A pseudo-random moment to kill it at.
                let us = (round * 7919) % 3000;
                std::thread::sleep(Duration::from_micros(us));
                victim.kill().unwrap();
                let _ = join(&victim, LIMIT);
                barrier.reset().unwrap();
            }
            stop.atomic().store(1, SeqCst);
            barrier.abort().unwrap();
            for p in &steady {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
        // Every party is gone: a reset must finish and the barrier work.
        barrier.reset().unwrap();
        assert!(wait_until(Duration::from_secs(5), || {
            barrier.n_waiting() == 0 && !barrier.is_broken()
        }));
        let kids: Vec<_> = (0..P - 1)
            .map(|_| {
                let b = barrier.clone();
                static_child(move || {
                    b.wait_timeout(Duration::from_secs(10)).unwrap();
                })
            })
            .collect();
        barrier.wait_timeout(Duration::from_secs(10)).unwrap();
        for k in &kids {
            assert_eq!(join(k, LIMIT), 0);
        }
    });
}
