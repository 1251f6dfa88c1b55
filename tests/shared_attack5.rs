//! Adversarial cases against the shared layer, fifth round: behaviour
//! (wrong answers, hangs, lost items, false corruption reports) rather
//! than soundness.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{watchdog, Rng, TempName};
use multiproc::{Error, RawValue};

const LIMIT: Duration = Duration::from_secs(30);

/// Creating-or-opening a name that others create and unlink meanwhile
/// either opens the object or creates it: never "not found". It found the
/// name free, then taken when it published its own object, then free again
/// when it opened the one there, and gave up with `NotFound`.
#[test]
fn create_or_open_races_unlink() {
    const RACERS: usize = 2;
    watchdog("create_or_open vs unlink", LIMIT, || {
        let name = TempName::new("coo-unlink");
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Each creates the name and unlinks it again, over and over.
            for _ in 0..RACERS {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let _made = RawValue::<u64>::create(&name, 1);
                        let _ = multiproc::segment::Segment::unlink(&name);
                    }
                });
            }
            let end = Instant::now() + Duration::from_secs(3);
            let mut outcome = Ok(());
            while outcome.is_ok() && Instant::now() < end {
                outcome = RawValue::<u64>::create_or_open(&name, 7).map(drop);
            }
            stop.store(true, Ordering::Relaxed);
            outcome.unwrap();
        });
    });
}

/// Random puts and gets of every kind on small rings, one thread, checked
/// against a model: what fits goes in, what is got comes out in order,
/// and `len`, `is_empty` and `is_full` say what the model says.
#[test]
fn queue_matches_a_model() {
    use multiproc::queue::PutError;
    use multiproc::Queue;
    use std::collections::VecDeque;
    watchdog("queue model", LIMIT, || {
        for seed in 1..40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let cap = 64 + rng.below(200) as usize;
            let maxsize = [0, 1, 2, 3, 7][rng.below(5) as usize];
            let q = Queue::<Vec<u8>>::with_capacity(maxsize, cap).unwrap();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let frame = |v: &Vec<u8>| 4 + 1 + v.len(); // length < 128: one varint byte
            let used = |m: &VecDeque<Vec<u8>>| m.iter().map(frame).sum::<usize>();
            let fits = |m: &VecDeque<Vec<u8>>, v: &Vec<u8>| {
                cap - used(m) >= frame(v) && (maxsize == 0 || m.len() < maxsize)
            };
            let mut counter = 0u8;
            let mut item = |rng: &mut Rng| {
                counter = counter.wrapping_add(1);
                vec![counter; rng.below(40) as usize]
            };
            for step in 0..3000 {
                let ctx = format!("seed {seed} step {step} cap {cap} maxsize {maxsize}");
                match rng.below(6) {
                    0 => {
                        let v = item(&mut rng);
                        let expect = fits(&model, &v);
                        match q.try_put(v.clone()) {
                            Ok(()) => {
                                assert!(expect, "{ctx}: put past the model");
                                model.push_back(v);
                            }
                            Err(PutError::Full(_)) => assert!(!expect, "{ctx}: full too soon"),
                            Err(e) => panic!("{ctx}: {e}"),
                        }
                    }
                    1 => {
                        let n = rng.below(6) as usize;
                        let batch: Vec<_> = (0..n).map(|_| item(&mut rng)).collect();
                        let mut fit = 0;
                        let mut m = model.clone();
                        for v in &batch {
                            if !fits(&m, v) {
                                break;
                            }
                            m.push_back(v.clone());
                            fit += 1;
                        }
                        match q.try_put_many(&batch) {
                            Ok(()) => assert_eq!(fit, n, "{ctx}: batch past the model"),
                            Err(e) => {
                                assert!(matches!(e.error, PutError::Full(())), "{ctx}: {e}");
                                assert_eq!(e.put, fit, "{ctx}: batch put count");
                            }
                        }
                        model.extend(batch.into_iter().take(fit));
                    }
                    2 | 3 => match q.try_get() {
                        Ok(v) => assert_eq!(Some(v), model.pop_front(), "{ctx}: get"),
                        Err(Error::Empty) => assert!(model.is_empty(), "{ctx}: empty too soon"),
                        Err(e) => panic!("{ctx}: {e}"),
                    },
                    4 => {
                        let max = rng.below(5) as usize;
                        match q.try_get_many(max) {
                            Ok(got) => {
                                let want: Vec<_> = model.drain(..max.min(model.len())).collect();
                                assert_eq!(got, want, "{ctx}: get_many({max})");
                            }
                            Err(Error::Empty) => assert!(model.is_empty() && max > 0, "{ctx}"),
                            Err(e) => panic!("{ctx}: {e}"),
                        }
                    }
                    _ => {}
                }
                assert_eq!(q.len(), model.len(), "{ctx}: len");
                assert_eq!(q.is_empty(), model.is_empty(), "{ctx}: is_empty");
                let full = !fits(&model, &Vec::new());
                assert_eq!(q.is_full(), full, "{ctx}: is_full");
            }
        }
    });
}

/// A process that uses a named object forks a child while every slot of
/// the object's header records a live opener: the child must be counted
/// among the openers past the slots, as an opener is. It was not counted
/// at all, so once its parent had let go and the recorded openers ended,
/// the object it still used was stale to `multiproc shm clean`, which
/// would remove its name: the next `create_or_open` makes another object,
/// and what is put there never reaches the child.
#[test]
fn a_child_forked_past_the_recorded_openers_keeps_the_object_in_use() {
    use multiproc::{Event, Semaphore};
    const RECORDED: usize = 16;
    watchdog("forked past the slots", LIMIT, || {
        let name = TempName::new("forked-past");
        let creator = {
            let name = name.0.clone();
            common::static_child(move || drop(RawValue::create(&name, 0u32).unwrap()))
        };
        assert_eq!(common::join(&creator, LIMIT), 0);
        let (opened, go, done) = (
            Semaphore::new(0).unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        let grandchild = RawValue::new(0i32).unwrap();
        let recorded: Vec<_> = (0..RECORDED)
            .map(|_| {
                let (name, opened, go) = (name.0.clone(), opened.clone(), go.clone());
                common::static_child(move || {
                    let v = RawValue::<u32>::open(&name).unwrap();
                    opened.release().unwrap();
                    go.wait();
                    drop(v);
                })
            })
            .collect();
        for _ in 0..RECORDED {
            opened.acquire();
        }
        // Set by the forked child once it runs: its fork handler, which
        // records it, has run by then (the parent's `fork` returns
        // before the child's handler may have run).
        let forked = Event::new().unwrap();
        let parent = {
            let (name, opened, done, grandchild, forked) = (
                name.0.clone(),
                opened.clone(),
                done.clone(),
                grandchild.clone(),
                forked.clone(),
            );
            common::static_child(move || {
                let v = RawValue::<u32>::open(&name).unwrap();
                // SAFETY: the child only waits on shared memory and
                // writes it, then ends with `_exit`.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    forked.set();
                    done.wait_timeout(LIMIT);
                    v.set(1);
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(0) };
                }
                grandchild.set(pid);
                assert!(forked.wait_timeout(LIMIT), "the forked child never ran");
                drop(v);
                opened.release().unwrap();
            })
        };
        opened.acquire();
        assert_eq!(common::join(&parent, LIMIT), 0);
        go.set();
        for p in &recorded {
            assert_eq!(common::join(p, LIMIT), 0);
        }
        let listed = multiproc::segment::list().unwrap();
        let entry = listed.iter().find(|s| s.name == name.0).expect("listed");
        let in_use = entry.alive && !entry.is_stale();
        done.set();
        let v = RawValue::<u32>::open(&name).unwrap();
        let ended = common::wait_until(LIMIT, || v.get() == 1);
        if !ended {
            // SAFETY: signals the grandchild this test forked, by pid.
            unsafe { libc::kill(grandchild.get(), libc::SIGKILL) };
        }
        assert!(in_use, "used by a forked child, yet {entry:?}");
        assert!(ended, "the forked child never ended");
    });
}

/// Eight processes (more than the CPUs) wait and notify on a condition
/// over an `RLock` that each holds twice, with timed waits, and are
/// killed at random and replaced: the survivors keep going (repairing
/// the lock after a death), and nobody ever sees another error.
#[test]
fn rlock_condition_survives_random_kills() {
    use multiproc::sync::{ConditionGuard, RLockGuard};
    use multiproc::{Condition, RLock, RawArray, RecoverableLockError};
    const WORKERS: usize = 8;
    watchdog("rlock condition kills", LIMIT, || {
        let rlock = RLock::new().unwrap();
        let cond = Condition::with_rlock(&rlock).unwrap();
        let ticket = RawValue::new(0u64).unwrap();
        let beats = RawArray::<u64>::new(WORKERS).unwrap();
        let start = |k: usize| {
            let (rlock, cond, ticket, beats) =
                (rlock.clone(), cond.clone(), ticket.clone(), beats.clone());
            common::static_child(move || loop {
                let outer = match rlock.lock_recovering() {
                    Ok(g) => g,
                    Err(RecoverableLockError::OwnerDied(g)) => {
                        RLockGuard::make_consistent(&g).unwrap();
                        g
                    }
                    Err(e) => panic!("rlock: {e}"),
                };
                let mut g = cond.lock().unwrap();
                if k % 2 == 0 {
                    ticket.set(ticket.get() + 1);
                    if k % 4 == 0 {
                        g.notify(1);
                    } else {
                        g.notify_all();
                    }
                } else {
                    let seen = ticket.get();
                    while ticket.get() == seen {
                        match g.wait_timeout(Duration::from_millis(20)) {
                            Ok(_) => {}
                            Err(Error::OwnerDied) => ConditionGuard::make_consistent(&g).unwrap(),
                            Err(e) => panic!("wait: {e}"),
                        }
                    }
                }
                drop(g);
                drop(outer);
                let b = beats.get(k).unwrap();
                beats.set(k, b + 1).unwrap();
            })
        };
        let mut workers: Vec<_> = (0..WORKERS).map(start).collect();
        let mut rng = Rng(0x5eed);
        for _ in 0..100 {
            std::thread::sleep(Duration::from_micros(200 + rng.below(3000)));
            let k = rng.below(WORKERS as u64) as usize;
            workers[k].kill().unwrap();
            assert_eq!(
                common::join(&workers[k], LIMIT),
                -libc::SIGKILL,
                "worker {k}"
            );
            workers[k] = start(k);
        }
        // Every worker still moves.
        let before: Vec<u64> = (0..WORKERS).map(|k| beats.get(k).unwrap()).collect();
        for (k, &seen) in before.iter().enumerate() {
            assert!(
                common::wait_until(Duration::from_secs(10), || beats.get(k).unwrap() > seen),
                "worker {k} stuck"
            );
        }
        for w in &workers {
            w.kill().unwrap();
            common::join(w, LIMIT);
        }
    });
}

/// The same with every slot naming a process killed while it used the
/// object: a child forked then takes one of their slots, as an opener
/// does, rather than being counted past the slots, which a child that
/// ends without letting go (as a forked child does) never undoes: the
/// object, unused once its processes all ended, would never be stale.
#[test]
fn a_child_forked_while_the_slots_name_dead_openers_takes_one() {
    use multiproc::Semaphore;
    const RECORDED: usize = 16;
    watchdog("forked over dead openers", LIMIT, || {
        let name = TempName::new("forked-dead");
        let creator = {
            let name = name.0.clone();
            common::static_child(move || drop(RawValue::create(&name, 0u32).unwrap()))
        };
        assert_eq!(common::join(&creator, LIMIT), 0);
        let opened = Semaphore::new(0).unwrap();
        let killed: Vec<_> = (0..RECORDED)
            .map(|_| {
                let (name, opened) = (name.0.clone(), opened.clone());
                common::static_child(move || {
                    let _v = RawValue::<u32>::open(&name).unwrap();
                    opened.release().unwrap();
                    std::thread::sleep(LIMIT);
                })
            })
            .collect();
        for _ in 0..RECORDED {
            opened.acquire();
        }
        for p in &killed {
            p.kill().unwrap();
            common::join(p, LIMIT);
        }
        let parent = {
            let name = name.0.clone();
            common::static_child(move || {
                let v = RawValue::<u32>::open(&name).unwrap();
                // SAFETY: the child only writes shared memory, then ends
                // with `_exit`.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    v.set(1);
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(0) };
                }
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert_eq!(v.get(), 1);
            })
        };
        assert_eq!(common::join(&parent, LIMIT), 0);
        let listed = multiproc::segment::list().unwrap();
        let entry = listed.iter().find(|s| s.name == name.0).expect("listed");
        assert!(entry.is_stale(), "every user ended, yet {entry:?}");
    });
}

/// `multiproc shm clean` while a process opens a stale object: either the
/// object is removed first (the open fails with `NotFound`), or the opener
/// is recorded first (the object stays); never an opener left holding an
/// object whose name was removed under it, which the next `create_or_open`
/// of that name would replace with another object.
#[test]
fn clean_never_removes_an_object_being_opened() {
    use multiproc::segment;
    watchdog("clean vs open", LIMIT, || {
        let skipped = RawValue::new(0u32).unwrap();
        let theirs = skipped.clone();
        let child = common::static_child(move || {
            if !common::private_dev_shm(None) {
                theirs.set(1);
                return;
            }
            let name = "clean-vs-open";
            let end = Instant::now() + Duration::from_secs(3);
            let mut opened = 0;
            while Instant::now() < end {
                // A stale object: its creator has ended.
                // SAFETY: the child only creates the object, then `_exit`s.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    let made = RawValue::create(name, 0u64).is_ok();
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(i32::from(!made)) };
                }
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert_eq!(status, 0);
                let start = std::sync::Barrier::new(2);
                let held = std::thread::scope(|s| {
                    s.spawn(|| {
                        start.wait();
                        segment::clean().unwrap();
                    });
                    start.wait();
                    RawValue::<u64>::open(name)
                });
                match held {
                    Ok(v) => {
                        opened += 1;
                        v.set(opened);
                        let again = RawValue::<u64>::open(name);
                        assert!(
                            again.as_ref().is_ok_and(|a| a.get() == opened),
                            "opened, then its name removed: {:?}",
                            again.map(|a| a.get())
                        );
                        drop(v);
                        let _ = segment::Segment::unlink(name);
                    }
                    Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        if skipped.get() == 1 {
            eprintln!("SKIPPED: cannot mount a private /dev/shm here (needs CAP_SYS_ADMIN)");
        }
    });
}
