//! Adversarial cases against the shared layer, fourth round: many more
//! processes than CPUs, named objects a second process misuses, and
//! Python's answers at the edges.

mod common;

use std::time::{Duration, Instant};

use common::{join, static_child, watchdog};
use multiproc::{Barrier, Error, RawArray};

const LIMIT: Duration = Duration::from_secs(120);

/// Many processes (far more than CPUs) pass a barrier round after round,
/// one late party keeping the others waiting each time: a round takes
/// about as long as its late party, however many wait meanwhile. Each
/// sleeping party looked for dead ones on every wake-up, asking about every
/// other process: N² reads of `/proc` every 100 ms, under the barrier's
/// lock (150 processes: 25 s for what takes 1.5 s).
#[test]
fn a_barrier_of_many_processes_passes_at_the_pace_of_its_slowest() {
    const PARTIES: u32 = 150;
    const ROUNDS: u32 = 5;
    const LATE: Duration = Duration::from_millis(300);
    watchdog("many-party barrier", LIMIT, || {
        let barrier = Barrier::new(PARTIES).unwrap();
        let start = Instant::now();
        let children: Vec<_> = (0..PARTIES)
            .map(|i| {
                let barrier = barrier.clone();
                static_child(move || {
                    for round in 0..ROUNDS {
                        if i == round {
                            std::thread::sleep(LATE);
                        }
                        barrier.wait().unwrap();
                    }
                })
            })
            .collect();
        for c in &children {
            assert_eq!(join(c, LIMIT), 0);
        }
        let took = start.elapsed();
        assert!(
            took < LATE * ROUNDS + Duration::from_secs(8),
            "{PARTIES} parties, {ROUNDS} rounds: {took:?}"
        );
    });
}

/// Python's barrier action may look at its barrier (its lock is
/// re-entrant): `n_waiting` is every party then, and an `abort` or a
/// `reset` there is overridden by the release that follows it. Here the
/// action's look was a `Deadlock` that `n_waiting` reported as 0 parties,
/// and `abort` and `reset` failed.
#[test]
fn a_barrier_action_looks_at_its_barrier_as_pythons_does() {
    watchdog("barrier action looks", LIMIT, || {
        let seen = RawArray::<u32>::new(6).unwrap();
        let barrier = Barrier::new(2).unwrap();
        let (mine, theirs) = (barrier.clone(), seen.clone());
        let barrier = barrier.with_action(move || {
            let wait = mine.wait_timeout(Duration::from_millis(1));
            theirs.set(0, mine.n_waiting()).unwrap();
            theirs.set(1, mine.is_broken().into()).unwrap();
            theirs.set(2, mine.abort().is_ok().into()).unwrap();
            theirs.set(3, mine.is_broken().into()).unwrap();
            theirs.set(4, mine.reset().is_ok().into()).unwrap();
            theirs
                .set(5, matches!(wait, Err(Error::Deadlock)).into())
                .unwrap();
        });
        let other = barrier.clone();
        let child = static_child(move || {
            other.wait().unwrap();
        });
        barrier.wait().unwrap();
        assert_eq!(join(&child, LIMIT), 0);
        // As CPython 3.12: 2 waiting, not broken, aborted (broken), reset.
        assert_eq!(seen.read(..).unwrap(), [2, 0, 1, 1, 1, 1]);
        assert!(!barrier.is_broken());
        assert_eq!(barrier.n_waiting(), 0);
        // And the next pass goes as any other.
        let other = barrier.clone();
        let child = static_child(move || {
            other.wait().unwrap();
        });
        barrier.wait().unwrap();
        assert_eq!(join(&child, LIMIT), 0);
    });
}

/// More processes open a named object than its header has slots to record
/// them (16), and the recorded ones, its creator among them, end: the last
/// opener still uses it, so `multiproc shm clean` must not call it stale
/// (its name removed, the next `create_or_open` would make another object,
/// and what is put there would never reach that opener).
#[test]
fn a_named_object_used_only_by_openers_past_the_recorded_ones_is_not_stale() {
    use multiproc::{Event, RawValue, Semaphore};
    const RECORDED: usize = 16;
    watchdog("unrecorded opener", LIMIT, || {
        let name = common::TempName::new("unrecorded");
        let creator = {
            let name = name.0.clone();
            static_child(move || drop(RawValue::create(&name, 0u32).unwrap()))
        };
        assert_eq!(join(&creator, LIMIT), 0);
        let (opened, go, done) = (
            Semaphore::new(0).unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        let opener = |until: &Event| {
            let (name, opened, until) = (name.0.clone(), opened.clone(), until.clone());
            static_child(move || {
                let v = RawValue::<u32>::open(&name).unwrap();
                opened.release().unwrap();
                until.wait();
                v.atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let recorded: Vec<_> = (0..RECORDED).map(|_| opener(&go)).collect();
        for _ in 0..RECORDED {
            opened.acquire();
        }
        let last = opener(&done);
        opened.acquire();
        go.set();
        for p in &recorded {
            assert_eq!(join(p, LIMIT), 0);
        }
        let listed = multiproc::segment::list().unwrap();
        let entry = listed.iter().find(|s| s.name == name.0).expect("listed");
        assert!(entry.alive && !entry.is_stale(), "{entry:?}");
        done.set();
        assert_eq!(join(&last, LIMIT), 0);
        let v = RawValue::<u32>::open(&name).unwrap();
        assert_eq!(v.get(), RECORDED as u32 + 1);
        drop(v);
        // Now nobody uses it.
        let listed = multiproc::segment::list().unwrap();
        let entry = listed.iter().find(|s| s.name == name.0).expect("listed");
        assert!(entry.is_stale(), "{entry:?}");
    });
}

/// A party killed among many waiting processes breaks the barrier for all
/// of them within a few looks for dead parties, now that one look serves
/// them all (see the test above).
#[test]
fn a_party_killed_among_many_waiting_processes_breaks_the_barrier_at_once() {
    use multiproc::{RawValue, Semaphore};
    const PARTIES: u32 = 100;
    watchdog("barrier crowd kill", LIMIT, || {
        let barrier = Barrier::new(PARTIES + 1).unwrap();
        let arrived = Semaphore::new(0).unwrap();
        let broken = RawValue::new(0u32).unwrap();
        let children: Vec<_> = (0..PARTIES)
            .map(|_| {
                let (barrier, arrived, broken) = (barrier.clone(), arrived.clone(), broken.clone());
                static_child(move || {
                    arrived.release().unwrap();
                    match barrier.wait() {
                        Err(Error::BrokenBarrier) => {
                            broken
                                .atomic()
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        for _ in 0..PARTIES {
            arrived.acquire();
        }
        assert!(common::wait_until(LIMIT, || barrier.n_waiting() == PARTIES));
        let start = Instant::now();
        children[17].kill().unwrap();
        for (i, c) in children.iter().enumerate() {
            if i != 17 {
                assert_eq!(join(c, LIMIT), 0);
            }
        }
        join(&children[17], LIMIT);
        assert_eq!(broken.get(), PARTIES - 1);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(10), "broken after {took:?}");
    });
}

/// A process that opened a named object forks a child that goes on using
/// it, and is killed (so its exit hook never waits for the child): the
/// object is in use by the child, which its header must show, or `shm
/// clean` calls it stale and removes its name under it.
#[test]
fn a_named_object_used_by_the_child_of_a_killed_opener_is_not_stale() {
    use multiproc::{Event, Process, RawValue, Semaphore};
    watchdog("inherited named object", LIMIT, || {
        let name = common::TempName::new("inherited");
        let creator = {
            let name = name.0.clone();
            static_child(move || drop(RawValue::create(&name, 0u32).unwrap()))
        };
        assert_eq!(join(&creator, LIMIT), 0);
        let (started, done, ended) = (
            Semaphore::new(0).unwrap(),
            Event::new().unwrap(),
            Semaphore::new(0).unwrap(),
        );
        let grandchild = RawValue::new(0u32).unwrap();
        let opener = {
            let name = name.0.clone();
            let (started, done, ended, grandchild) = (
                started.clone(),
                done.clone(),
                ended.clone(),
                grandchild.clone(),
            );
            // Not a daemon: a daemon's children die with it.
            let mut opener = Process::new(move || {
                let v = RawValue::<u32>::open(&name).unwrap();
                let release = done.clone();
                let mut p = Process::new(move || {
                    let done = release;
                    started.release().unwrap();
                    done.wait();
                    v.atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    ended.release().unwrap();
                });
                p.start().unwrap();
                grandchild.set(p.pid().unwrap());
                done.wait();
            });
            opener.start().unwrap();
            opener
        };
        started.acquire();
        opener.kill().unwrap();
        join(&opener, LIMIT);
        let listed = multiproc::segment::list().unwrap();
        let entry = listed.iter().find(|s| s.name == name.0).expect("listed");
        let in_use = entry.alive && !entry.is_stale();
        done.set();
        let ended_in_time = ended.acquire_timeout(LIMIT);
        if !ended_in_time {
            // SAFETY: a plain kill of the process this test started.
            unsafe { libc::kill(grandchild.get() as i32, libc::SIGKILL) };
        }
        assert!(in_use, "{entry:?}");
        assert!(ended_in_time);
        assert_eq!(RawValue::<u32>::open(&name).unwrap().get(), 1);
    });
}

/// A named segment shrunk to nothing under its mappings (as any process
/// of the user may do to a file in `/dev/shm`) is a `SIGBUS` for its users
/// (see `shared_attack2`), but not for a child forked afterwards that
/// never touches it: the child's recording of itself in the headers of
/// the named segments it inherits must not touch a header that is gone.
#[test]
fn a_child_forked_while_a_named_segment_is_shrunk_to_nothing_starts() {
    use multiproc::RawValue;
    watchdog("shrunk segment at a fork", LIMIT, || {
        let name = common::TempName::new("shrunk-fork");
        let v = RawValue::create(&name, 5u64).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{}{}", multiproc::segment::PREFIX, &*name))
            .unwrap()
            .set_len(0)
            .unwrap();
        let child = static_child(|| {});
        assert_eq!(join(&child, LIMIT), 0);
        // Never touched, so never a SIGBUS here.
        drop(v);
    });
}
