//! Adversarial tests of the async waits, fourth round: more condition
//! places held for tasks in one process than the kernel's clean-up after
//! a killed process reaches, and those places notified, cancelled and
//! taken again.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::wakers::patiently;
use common::{async_child, current_thread, multi_thread, wait_until, watchdog};
use multiproc::{Condition, Error, RawValue};

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
/// wakes every one of them, tasks cancelled while they wait give every
/// place back, and round after round takes no more keeper threads.
#[test]
fn thousands_of_places_are_notified_cancelled_and_taken_again() {
    watchdog("2560 places, three rounds", LIMIT, || {
        const CONDITIONS: usize = 20;
        let conds: Vec<(Condition, RawValue<u32>)> = (0..CONDITIONS)
            .map(|_| (Condition::new().unwrap(), RawValue::new(0u32).unwrap()))
            .collect();
        let rt = multi_thread();
        let mut keepers = Vec::new();
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
            keepers
                .push(common::procfs::threads_named(std::process::id(), "multiproc-keepe").len());
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
        assert!(
            keepers.iter().all(|&k| k == keepers[0]),
            "keeper threads from round to round: {keepers:?}"
        );
    });
}
