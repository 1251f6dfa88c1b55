//! Adversarial tests of the async waits, fourth round: more condition
//! places held for tasks in one process than the kernel's clean-up after
//! a killed process reaches, those places notified, cancelled and taken
//! again, and a condition's or a barrier's wait dropped in a descendant
//! that got the pid of the process that made it, or in a raw clone.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::Duration;

use common::wakers::patiently;
use common::{async_child, current_thread, fork_as, multi_thread, wait_until, watchdog};
use multiproc::{Barrier, Condition, Error, RawValue};

const LIMIT: Duration = Duration::from_secs(120);

/// Whether a blocking waiter of this process finds a place on `cond`
/// (it takes one and leaves at once); false if every place is taken.
fn has_a_place(cond: &Condition) -> bool {
    match cond.lock().unwrap().wait_timeout(Duration::ZERO) {
        Ok(_) => true,
        Err(Error::TooManyWaiters { .. }) => false,
        Err(e) => panic!("wait: {e}"),
    }
}

/// A process whose tasks wait on many conditions at once holds a robust
/// mutex for each of their places (on its keeper thread). The kernel
/// walks at most 2048 entries of a dead thread's robust list, the last
/// locked first: a process killed with more places than that left the
/// first ones held by a dead thread, yet unmarked, for ever: their
/// waiters counted as alive, notifies were given to them, and a
/// condition whose places they filled refused every later waiter.
#[test]
fn places_of_a_killed_process_with_thousands_of_tasks_all_come_free() {
    watchdog("2560 places of a killed process", LIMIT, || {
        const CONDITIONS: usize = 20;
        let conds: Vec<Condition> = (0..CONDITIONS).map(|_| Condition::new().unwrap()).collect();
        let theirs = conds.clone();
        let child = async_child(current_thread, move || async move {
            let mut tasks = Vec::new();
            for cond in &theirs {
                for _ in 0..Condition::MAX_WAITERS {
                    let cond = cond.clone();
                    tasks.push(tokio::spawn(async move {
                        cond.wait_for_async(|| false, None).await.unwrap();
                    }));
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        // Every place of every condition taken by the child's tasks.
        for cond in &conds {
            assert!(
                wait_until(Duration::from_secs(60), || !has_a_place(cond)),
                "the child's tasks never filled a condition"
            );
        }
        child.kill().unwrap();
        common::join(&child, Duration::from_secs(10));
        let full: Vec<usize> = (0..CONDITIONS)
            .filter(|&i| !has_a_place(&conds[i]))
            .collect();
        assert!(
            full.is_empty(),
            "conditions still full of a dead process's waiters: {full:?}"
        );
    });
}

/// Thousands of tasks of one process wait on twenty conditions at once
/// (their places held by more than one keeper thread): a `notify_all`
/// wakes every one of them, and tasks cancelled while they wait give
/// every place back, round after round.
#[test]
fn thousands_of_places_are_notified_cancelled_and_taken_again() {
    watchdog("2560 places, three rounds", LIMIT, || {
        const CONDITIONS: usize = 20;
        let conds: Vec<(Condition, RawValue<u32>)> = (0..CONDITIONS)
            .map(|_| (Condition::new().unwrap(), RawValue::new(0u32).unwrap()))
            .collect();
        let rt = multi_thread();
        for round in 0..3 {
            let tasks: Vec<_> = conds
                .iter()
                .flat_map(|(cond, flag)| {
                    (0..Condition::MAX_WAITERS).map(|_| {
                        let (cond, flag) = (cond.clone(), flag.clone());
                        rt.spawn(async move {
                            let set = || flag.atomic().load(SeqCst) != 0;
                            assert!(cond.wait_for_async(set, None).await.unwrap());
                        })
                    })
                })
                .collect();
            for (cond, _) in &conds {
                assert!(
                    wait_until(Duration::from_secs(60), || !has_a_place(cond)),
                    "round {round}: the tasks never filled a condition"
                );
            }
            if round == 1 {
                // Cancelled while they wait: every place comes free.
                for t in &tasks {
                    t.abort();
                }
                for t in tasks {
                    assert!(rt.block_on(t).unwrap_err().is_cancelled());
                }
                for (i, (cond, _)) in conds.iter().enumerate() {
                    assert!(
                        wait_until(Duration::from_secs(10), || has_a_place(cond)),
                        "round {round}: condition {i} still full after its tasks were cancelled"
                    );
                }
                continue;
            }
            for (cond, flag) in &conds {
                let g = cond.lock().unwrap();
                flag.atomic().store(1, SeqCst);
                g.notify_all();
            }
            for t in tasks {
                rt.block_on(patiently("a task on a notified condition", t))
                    .unwrap();
            }
            for (_, flag) in &conds {
                flag.atomic().store(0, SeqCst);
            }
        }
    });
}

/// A wait of the test's process, boxed to be kept in a static (which a
/// forked child inherits).
type Wait = Pin<Box<dyn Future<Output = multiproc::Result<bool>> + Send>>;

/// A pending wait of the process that made it (a condition's, holding a
/// place, or a barrier's, a party inside), inherited by its descendants.
static HELD: Mutex<Option<Box<dyn Send>>> = Mutex::new(None);

/// Polls a new wait on `cond` once: it takes a place and is pending.
fn waiting_on(cond: &Condition) -> Wait {
    let c = cond.clone();
    let mut wait: Wait = Box::pin(async move { c.wait_for_async(|| false, None).await });
    let pending = wait
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending();
    assert!(pending, "a wait for a predicate that never holds ended");
    wait
}

/// Stages of the tests of waits inherited under a reused pid, in a word
/// every process sees.
const PLACED: u32 = 1;
const SQUAT: u32 = 2;
const DROPPED: u32 = 3;
const NO_PID: u32 = 4;

/// Starts a child that makes a pending wait with `wait` and forks a
/// process that keeps it; once the child is dead and `stage` says
/// [`SQUAT`], that process forks until a child gets the dead one's pid,
/// which drops its copy of the wait between two calls of `own` and says
/// [`DROPPED`] ([`NO_PID`] if no child got the pid). Returns when the
/// child is dead.
fn inherited_by_a_pid_squatter(
    stage: &RawValue<u32>,
    target: &RawValue<u32>,
    wait: impl FnOnce() -> Box<dyn Send> + Send + 'static,
    own: impl Fn() + Send + 'static,
) {
    let (st, tg) = (stage.clone(), target.clone());
    let holder = common::static_child(move || {
        *HELD.lock().unwrap() = Some(wait());
        st.atomic().store(PLACED, SeqCst);
        // SAFETY: the forked child runs the code below as the only
        // thread of its process, then ends without exit handlers.
        if unsafe { libc::fork() } == 0 {
            while st.atomic().load(SeqCst) != SQUAT {
                std::thread::yield_now();
            }
            let took = fork_as(tg.atomic().load(SeqCst), || {
                own();
                drop(HELD.lock().unwrap().take());
                own();
                st.atomic().store(DROPPED, SeqCst);
            });
            if !took {
                st.atomic().store(NO_PID, SeqCst);
            }
            // SAFETY: ending the forked child.
            unsafe { libc::_exit(0) };
        }
    });
    assert!(wait_until(Duration::from_secs(30), || stage
        .atomic()
        .load(SeqCst)
        == PLACED));
    target.atomic().store(holder.pid().unwrap(), SeqCst);
    assert_eq!(common::join(&holder, Duration::from_secs(30)), 0);
}

/// A process holds a place of a condition for a pending wait, forks, and
/// dies; another waiter takes the place it left. A descendant that gets
/// the dead process's pid again (and waits on a condition itself, so that
/// it has a keeper thread of the same number) drops its copy of the wait:
/// that copy is not the descendant's, and must not give the place back.
/// It did (a pid was all that told the processes apart), freeing the
/// other waiter's place under it: that waiter returned as notified,
/// though nobody notified it, and the place counted as free.
#[test]
fn an_inherited_place_dropped_under_a_reused_pid_frees_nothing() {
    watchdog("a place inherited under a reused pid", LIMIT, || {
        let cond = Condition::new().unwrap();
        let other = Condition::new().unwrap();
        let stage = RawValue::new(0u32).unwrap();
        let target = RawValue::new(0u32).unwrap();
        let (c, o) = (cond.clone(), other.clone());
        // The squatter waits on another condition before the drop (so
        // that it has a keeper thread) and after it (its keeper runs jobs
        // in order: whatever the drop asked of it was done by then).
        inherited_by_a_pid_squatter(
            &stage,
            &target,
            move || Box::new(waiting_on(&c)),
            move || drop(waiting_on(&o)),
        );
        let waiting = RawValue::new(0u32).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut g = cond.lock().unwrap();
                waiting.atomic().store(1, SeqCst);
                g.wait_timeout(LIMIT).unwrap()
            });
            // The waiter waits once it let go of the lock.
            while waiting.atomic().load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            drop(cond.lock().unwrap());
            stage.atomic().store(SQUAT, SeqCst);
            assert!(wait_until(Duration::from_secs(60), || stage
                .atomic()
                .load(SeqCst)
                > SQUAT));
            if stage.atomic().load(SeqCst) == NO_PID {
                eprintln!("the holder's pid could not be taken again: nothing to test");
            } else {
                // Not woken: it looks at its place at least every 100 ms.
                assert!(
                    !wait_until(Duration::from_secs(1), || waiter.is_finished()),
                    "a waiter woke, its place freed by a stranger's drop"
                );
            }
            cond.lock().unwrap().notify(1);
            assert!(waiter.join().unwrap(), "the waiter was notified");
        });
    });
}

/// A party of a barrier (a pending async wait) forks and dies; the barrier
/// breaks for it and is reset, and a new pass starts filling. A
/// descendant that gets the dead party's pid again drops its copy of the
/// wait: that copy is not the descendant's, and must neither break the
/// new pass nor take a party out of it. It did both (a pid was all that
/// told the processes apart).
#[test]
fn an_inherited_barrier_wait_dropped_under_a_reused_pid_breaks_nothing() {
    watchdog("a barrier wait inherited under a reused pid", LIMIT, || {
        let barrier = Barrier::new(3).unwrap();
        let stage = RawValue::new(0u32).unwrap();
        let target = RawValue::new(0u32).unwrap();
        let b = barrier.clone();
        inherited_by_a_pid_squatter(
            &stage,
            &target,
            move || {
                let mut wait = Box::pin(async move { b.wait_async().await });
                let pending = wait
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_pending();
                assert!(pending, "one party of three passed");
                Box::new(wait)
            },
            || {},
        );
        // A party that comes finds the dead one (within 100 ms), and the
        // pass broken; then a new pass starts.
        assert!(matches!(
            barrier.wait_timeout(LIMIT),
            Err(Error::BrokenBarrier)
        ));
        barrier.reset().unwrap();
        std::thread::scope(|s| {
            let first = s.spawn(|| barrier.wait_timeout(LIMIT));
            assert!(wait_until(Duration::from_secs(30), || barrier.n_waiting() == 1));
            stage.atomic().store(SQUAT, SeqCst);
            assert!(wait_until(Duration::from_secs(60), || stage
                .atomic()
                .load(SeqCst)
                > SQUAT));
            if stage.atomic().load(SeqCst) == NO_PID {
                eprintln!("the party's pid could not be taken again: nothing to test");
            } else {
                assert!(!barrier.is_broken(), "a stranger's drop broke the pass");
                assert_eq!(barrier.n_waiting(), 1, "a stranger's drop took a party out");
            }
            let second = s.spawn(|| barrier.wait_timeout(LIMIT));
            let third = barrier.wait_timeout(LIMIT);
            let mut passed = [first.join().unwrap(), second.join().unwrap(), third]
                .map(|r| r.expect("a party of the new pass"));
            passed.sort_unstable();
            assert_eq!(passed, [0, 1, 2]);
        });
    });
}

/// Tasks of one process on twelve conditions (more places than one keeper
/// thread holds) wait and are cancelled at random points, again and
/// again, while another thread notifies at random: nothing hangs, and
/// once they are done every place of every condition is free.
#[test]
fn waits_cancelled_at_random_across_keeper_threads_leave_every_place_free() {
    watchdog("random cancellations over 1320 tasks", LIMIT, || {
        const CONDITIONS: usize = 12;
        const TASKS: usize = 110;
        let conds: Vec<Condition> = (0..CONDITIONS).map(|_| Condition::new().unwrap()).collect();
        let rt = multi_thread();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                while !done.load(SeqCst) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let g = conds[x as usize % CONDITIONS].lock().unwrap();
                    g.notify((x >> 32) as u32 % 4);
                    drop(g);
                    std::thread::yield_now();
                }
            });
            let tasks: Vec<_> = (0..CONDITIONS * TASKS)
                .map(|n| {
                    let cond = conds[n % CONDITIONS].clone();
                    rt.spawn(async move {
                        for round in 0..20u64 {
                            let limit = Duration::from_micros((n as u64 * 7 + round * 13) % 3000);
                            let wait = cond.wait_for_async(|| false, None);
                            let _ = tokio::time::timeout(limit, wait).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                rt.block_on(patiently("a task cancelling its waits", t))
                    .unwrap();
            }
            done.store(true, SeqCst);
        });
        for (i, cond) in conds.iter().enumerate() {
            // Every place free: as many blocking waiters as there are
            // places each find one.
            std::thread::scope(|s| {
                let waiters: Vec<_> = (0..Condition::MAX_WAITERS)
                    .map(|_| {
                        s.spawn(|| {
                            cond.lock()
                                .unwrap()
                                .wait_timeout(Duration::from_millis(100))
                        })
                    })
                    .collect();
                for w in waiters {
                    let r = w.join().unwrap();
                    assert!(matches!(r, Ok(false)), "condition {i}: {r:?}");
                }
            });
        }
    });
}

/// A party's pending wait copied into a child by a raw `clone` (which runs
/// no fork handler: the child has its parent's memory as it was) and
/// dropped there is not the child's: the barrier stays whole, the party
/// in it, and the pass completes.
#[test]
fn a_barrier_wait_dropped_in_a_raw_clone_breaks_nothing() {
    watchdog("a barrier wait dropped in a raw clone", LIMIT, || {
        let barrier = Barrier::new(2).unwrap();
        let checked = RawValue::new(0u32).unwrap();
        let (b, ch) = (barrier.clone(), checked.clone());
        let party = common::static_child(move || {
            let theirs = b.clone();
            let mut wait = Box::pin(async move { theirs.wait_async().await });
            let pending = wait
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending();
            assert!(pending, "one party of two passed");
            // SAFETY: a fork without the C library (flags: SIGCHLD only);
            // the child returns from the call on its own copy of the
            // stack, drops its copy of the wait and ends.
            let raw = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
            if raw == 0 {
                drop(wait);
                // SAFETY: ends the clone at once.
                unsafe { libc::_exit(0) };
            }
            assert!(raw > 0, "clone");
            let mut status = 0;
            // SAFETY: waits for the clone just made.
            unsafe { libc::waitpid(raw as libc::pid_t, &mut status, 0) };
            assert!(!b.is_broken(), "the clone's drop broke the pass");
            assert_eq!(b.n_waiting(), 1, "the clone's drop took the party out");
            ch.atomic().store(1, SeqCst);
            assert_eq!(current_thread().block_on(wait).unwrap(), 0);
        });
        assert!(wait_until(Duration::from_secs(30), || checked
            .atomic()
            .load(SeqCst)
            == 1
            || party.exitcode().is_some()));
        let mine = barrier.wait_timeout(Duration::from_secs(30));
        assert_eq!(common::join(&party, Duration::from_secs(30)), 0);
        assert_eq!(mine.unwrap(), 1);
    });
}
