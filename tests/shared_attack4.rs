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
