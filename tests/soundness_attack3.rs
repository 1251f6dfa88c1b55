//! Third-round attack on the soundness of the safe API: state that a
//! process tells apart from its forked copies by its pid alone, fooled by
//! a descendant that gets the pid of an ancestor that has died.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;
use std::time::Duration;

use common::{fork_as, join, squat_outcome, stage_in, static_child, wait_until, watchdog};
use multiproc::{Error, Queue, RawValue, Value};

const LIMIT: Duration = Duration::from_secs(120);

/// How long a forked helper waits for the next stage before it gives up.
const STAGE_WAIT: Duration = Duration::from_secs(60);

/// Stages of the reused-pid tests, in a word every process sees.
const SQUAT: u32 = 1;
const REFUSED: u32 = 2;
const WROTE: u32 = 3;
const MADE: u32 = 4;
const LOOKED: u32 = 5;
const NO_PID: u32 = 6;
const TIMED_OUT: u32 = 7;
const DEADLOCK: u32 = 8;
const OTHER: u32 = 9;

/// The tests take pids by writing `ns_last_pid`: one at a time.
static PIDS: Mutex<()> = Mutex::new(());

/// A process that holds a value's lock forks a copy of itself that keeps
/// the guard (as a closure given to `Process::new_local` would carry it),
/// releases the lock and dies. A descendant of the copy that gets the
/// dead process's pid must find the guard as useless as its parent did:
/// the lock is another process's now. The guard knew its process by pid
/// alone, and let the descendant write while the lock was held.
#[test]
fn a_guard_inherited_under_a_reused_pid_gives_no_access() {
    let _one = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    watchdog("a guard inherited under a reused pid", LIMIT, || {
        let v = Value::new(0u64).unwrap();
        let stage = RawValue::new(0u32).unwrap();
        let (theirs, st) = (v.clone(), stage.clone());
        let holder = static_child(move || {
            let guard = theirs.lock().unwrap();
            let me = std::process::id();
            // SAFETY: the forked child runs the code below, then ends
            // without exit handlers.
            if unsafe { libc::fork() } == 0 {
                if stage_in(&st, &[SQUAT], STAGE_WAIT).is_some() {
                    let took = fork_as(me, || {
                        let mut guard = guard;
                        let wrote = catch_unwind(AssertUnwindSafe(|| *guard = 7)).is_ok();
                        st.atomic()
                            .store(if wrote { WROTE } else { REFUSED }, SeqCst);
                    });
                    if !took {
                        st.atomic().store(NO_PID, SeqCst);
                    }
                }
                // SAFETY: ending the forked child.
                unsafe { libc::_exit(0) };
            }
            drop(guard);
        });
        assert_eq!(join(&holder, LIMIT), 0);
        let mut mine = v.try_lock().expect("the holder released the lock");
        *mine = 5;
        let Some(outcome) = squat_outcome(&stage, [SQUAT, NO_PID], "the holder's", STAGE_WAIT)
        else {
            return;
        };
        assert_eq!(*mine, 5, "a process wrote while another held the lock");
        assert_eq!(outcome, REFUSED);
    });
}

/// A process forks a copy of itself, then makes an object in the next
/// free block of its arena, which it shares with a child that outlives
/// it, and dies. A descendant of the copy that gets the dead process's
/// pid took the arena it inherited (as it was before that block was
/// handed out) for its own, and made an object of its own in the same
/// block: two objects in one piece of shared memory.
#[test]
fn objects_made_under_a_reused_pid_never_share_memory() {
    let _one = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    watchdog("an arena inherited under a reused pid", LIMIT, || {
        const MARK: u64 = 0x5eed;
        let stage = RawValue::new(0u32).unwrap();
        let seen = RawValue::new(0u64).unwrap();
        let (st, sn) = (stage.clone(), seen.clone());
        let holder = static_child(move || {
            // An arena of this process's own, with a block in use.
            let first = RawValue::new(1u64).unwrap();
            let me = std::process::id();
            // SAFETY: the forked child runs the code below, then ends
            // without exit handlers.
            if unsafe { libc::fork() } == 0 {
                if stage_in(&st, &[SQUAT], STAGE_WAIT).is_some() {
                    let took = fork_as(me, || {
                        let theirs = RawValue::new(0u64).unwrap();
                        theirs.set(MARK);
                        st.atomic().store(MADE, SeqCst);
                        stage_in(&st, &[LOOKED], STAGE_WAIT);
                    });
                    if !took {
                        st.atomic().store(NO_PID, SeqCst);
                    }
                }
                // SAFETY: ending the forked child.
                unsafe { libc::_exit(0) };
            }
            let next = RawValue::new(0u64).unwrap();
            // SAFETY: as above.
            if unsafe { libc::fork() } == 0 {
                if stage_in(&st, &[MADE, NO_PID], STAGE_WAIT) == Some(MADE) {
                    sn.set(next.get());
                    st.atomic().store(LOOKED, SeqCst);
                }
                // SAFETY: ending the forked child.
                unsafe { libc::_exit(0) };
            }
            drop(first);
        });
        assert_eq!(join(&holder, LIMIT), 0);
        stage.atomic().store(SQUAT, SeqCst);
        assert!(wait_until(STAGE_WAIT, || matches!(
            stage.atomic().load(SeqCst),
            LOOKED | NO_PID
        )));
        if stage.atomic().load(SeqCst) == NO_PID {
            eprintln!("the holder's pid could not be taken again: nothing to test");
            return;
        }
        assert_eq!(
            seen.get(),
            0,
            "an object made under the reused pid took a live object's memory"
        );
    });
}

/// A process forks a copy of itself from the iterator of a `put_many`,
/// while it holds back items it encoded (a get of its own that would
/// wait for them is `Deadlock`), and dies once they are put. A descendant
/// of the copy that gets the dead process's pid holds back nothing: its
/// get from the empty queue must wait, not fail. The mark said which
/// process held back by pid alone.
#[test]
fn a_get_under_a_reused_pid_is_no_deadlock_of_the_dead_putter() {
    let _one = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    watchdog("a put_many inherited under a reused pid", LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        let stage = RawValue::new(0u32).unwrap();
        let (theirs, st) = (q.clone(), stage.clone());
        let holder = static_child(move || {
            let me = std::process::id();
            let items = (0..2u32).inspect(|&n| {
                // The first item is encoded and held back: fork now.
                // SAFETY: the forked child runs the code below, then ends
                // without exit handlers.
                if n == 1 && unsafe { libc::fork() } == 0 {
                    if stage_in(&st, &[SQUAT], STAGE_WAIT).is_some() {
                        let took = fork_as(me, || {
                            let got = theirs.get_timeout(Duration::from_millis(50));
                            let outcome = match got {
                                Err(Error::Timeout) => TIMED_OUT,
                                Err(Error::Deadlock) => DEADLOCK,
                                _ => OTHER,
                            };
                            st.atomic().store(outcome, SeqCst);
                        });
                        if !took {
                            st.atomic().store(NO_PID, SeqCst);
                        }
                    }
                    // SAFETY: ending the forked child.
                    unsafe { libc::_exit(0) };
                }
            });
            theirs.put_many(items).unwrap();
        });
        assert_eq!(join(&holder, LIMIT), 0);
        assert_eq!(q.get_many(2).unwrap(), [0, 1]);
        let Some(outcome) = squat_outcome(&stage, [SQUAT, NO_PID], "the holder's", STAGE_WAIT)
        else {
            return;
        };
        assert_eq!(outcome, TIMED_OUT, "not a timeout ({DEADLOCK}: Deadlock)");
    });
}

/// A process closes its handle of a queue (Python's `close()`: it puts
/// nothing more through it), forks a copy of itself and dies. A child
/// forked after a `close` may put again, as in Python, and so may a
/// descendant of the copy that gets the dead process's pid: the handle
/// knew who closed it by pid alone, and refused that descendant's put.
#[test]
fn a_put_under_a_reused_pid_is_not_refused_by_the_dead_closer() {
    let _one = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(
        "a closed handle inherited under a reused pid",
        LIMIT,
        || {
            let q: Queue<u32> = Queue::new().unwrap();
            let stage = RawValue::new(0u32).unwrap();
            let (theirs, st) = (q.clone(), stage.clone());
            let holder = static_child(move || {
                let me = std::process::id();
                theirs.close();
                // SAFETY: the forked child runs the code below, then ends
                // without exit handlers.
                if unsafe { libc::fork() } == 0 {
                    if stage_in(&st, &[SQUAT], STAGE_WAIT).is_some() {
                        let took = fork_as(me, || {
                            let outcome = match theirs.put(7) {
                                Ok(()) => WROTE,
                                Err(_) => REFUSED,
                            };
                            st.atomic().store(outcome, SeqCst);
                        });
                        if !took {
                            st.atomic().store(NO_PID, SeqCst);
                        }
                    }
                    // SAFETY: ending the forked child.
                    unsafe { libc::_exit(0) };
                }
            });
            assert_eq!(join(&holder, LIMIT), 0);
            let Some(outcome) = squat_outcome(&stage, [SQUAT, NO_PID], "the closer's", STAGE_WAIT)
            else {
                return;
            };
            assert_eq!(outcome, WROTE, "the descendant's put was refused");
            assert_eq!(q.get().unwrap(), 7);
        },
    );
}
