//! Adversarial cases against the shared layer, third round: semantics
//! compared with CPython's multiprocessing, and waits that must end.

mod common;

use std::time::{Duration, Instant};

use common::{join, procfs, static_child, watchdog, TempName};
use multiproc::{
    Condition, Error, Event, JoinableQueue, Lock, LockError, RLock, RawArray, RawValue, Value,
};

const LIMIT: Duration = Duration::from_secs(120);

/// Waits until a child that set `ready` just before its wait sleeps in it
/// (every thread of it asleep in a futex wait, after `ready`).
fn asleep_in_its_wait(pid: u32, ready: &RawValue<u32>) -> bool {
    common::wait_until(LIMIT / 4, || ready.get() == 1 && all_threads_in_futex(pid))
}

/// Whether every thread of process `pid` is asleep in a futex wait.
fn all_threads_in_futex(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .all(|tid| procfs::thread_blocked_in_futex(pid, tid))
}

/// `set()` then `clear()` at once (a pulse) while a process waits: in
/// CPython the waiter wakes and its `wait(30)` returns at once (`False`:
/// the flag is down again when it looks); it must not sleep through the
/// pulse until its timeout. The same for an awaiting task.
#[test]
fn an_event_pulsed_while_a_process_waits_wakes_it() {
    watchdog("event pulse", LIMIT, || {
        for awaiting in [false, true] {
            let event = Event::new().unwrap();
            let ready = RawValue::new(0u32).unwrap();
            let (theirs, their_ready) = (event.clone(), ready.clone());
            let waiter = static_child(move || {
                let start = Instant::now();
                their_ready.set(1);
                let flag = if awaiting {
                    async_wait(&theirs)
                } else {
                    theirs.wait_timeout(Duration::from_secs(60))
                };
                // Woken by the pulse, long before the timeout, with the
                // flag as it is then: down, or (woken between the set and
                // the clear) up.
                let late = start.elapsed() >= Duration::from_secs(30);
                std::process::exit(if late && !flag { 3 } else { 0 });
            });
            assert!(
                asleep_in_its_wait(waiter.pid().unwrap(), &ready),
                "the waiter never slept"
            );
            event.set();
            event.clear();
            assert_eq!(
                join(&waiter, Duration::from_secs(40)),
                0,
                "awaiting {awaiting}"
            );
        }
    });
}

/// The async wait, on a tokio runtime of one thread.
fn async_wait(event: &Event) -> bool {
    common::current_thread()
        .block_on(event.wait_timeout_async(Duration::from_secs(60)))
        .unwrap()
}

/// Every task done, then a new item put at once, while a process waits in
/// `join`: in CPython the last `task_done` notifies the joiners, whose
/// `join` returns (all the work it waited for is done); it must not wait
/// on for the new item. The same for an awaiting task.
#[test]
fn a_join_returns_when_every_task_was_done_even_if_an_item_follows() {
    watchdog("join past a zero", LIMIT, || {
        for awaiting in [false, true] {
            let queue = JoinableQueue::<u32>::new().unwrap();
            queue.put(1).unwrap();
            assert_eq!(queue.get().unwrap(), 1);
            let ready = RawValue::new(0u32).unwrap();
            let (theirs, their_ready) = (queue.clone(), ready.clone());
            let joiner = static_child(move || {
                let long = Duration::from_secs(60);
                their_ready.set(1);
                let joined = if awaiting {
                    common::current_thread().block_on(theirs.join_timeout_async(long))
                } else {
                    theirs.join_timeout(long)
                };
                std::process::exit(i32::from(joined.is_err()));
            });
            assert!(
                asleep_in_its_wait(joiner.pid().unwrap(), &ready),
                "the joiner never slept"
            );
            queue.task_done().unwrap();
            queue.put(2).unwrap();
            assert_eq!(
                join(&joiner, Duration::from_secs(40)),
                0,
                "awaiting {awaiting}"
            );
            assert_eq!(queue.get().unwrap(), 2);
            queue.task_done().unwrap();
        }
    });
}

/// Python's `Condition(v.get_lock())` idiom reads `v.value` with the lock
/// held, which its default `RLock` allows. A `Value`'s lock is a `Lock`
/// here (a difference the README lists): the read is a `Deadlock` error,
/// at once, never a hang, and the lock stays the condition's.
#[test]
fn a_value_read_under_a_condition_over_its_own_lock_is_a_deadlock_error() {
    watchdog("value under its condition", LIMIT, || {
        let value = Value::new(7u64).unwrap();
        let cond = Condition::with_lock(value.get_lock()).unwrap();
        let mut held = cond.lock().unwrap();
        assert!(matches!(value.get(), Err(Error::Deadlock)));
        assert!(matches!(value.lock(), Err(LockError::Deadlock)));
        assert!(!held.wait_timeout(Duration::from_millis(1)).unwrap());
        drop(held);
        assert_eq!(value.get().unwrap(), 7);
    });
}

/// A robust mutex that a thread holds is a link of that thread's robust
/// list (glibc threads the list through the mutexes themselves). An
/// `RLock` taken with `acquire` and never released, whose last handle is
/// then dropped, must not have its memory unmapped or handed to another
/// object while it is a link: the thread's next lock of any robust mutex
/// writes through it, into whatever lies there now (the cells of a
/// `RawArray` made in its place, here), or faults if nothing does.
#[test]
fn a_held_lock_whose_last_handle_is_dropped_leaves_no_dangling_robust_link() {
    watchdog("held lock dropped", LIMIT, || {
        for named in [false, true] {
            let name = TempName::new(&format!("held-dropped-{named}"));
            let cells_name = TempName::new(&format!("held-dropped-cells-{named}"));
            let (their_name, their_cells) = (name.0.clone(), cells_name.0.clone());
            let user = static_child(move || {
                let rlock = if named {
                    RLock::create(&their_name).unwrap()
                } else {
                    RLock::new().unwrap()
                };
                rlock.acquire().unwrap();
                drop(rlock);
                // Likely in the memory just dropped (the arena's block, or
                // a mapping at the same address).
                let cells = if named {
                    RawArray::create(&their_cells, &[7u64; 16]).unwrap()
                } else {
                    RawArray::from_slice(&[7u64; 16]).unwrap()
                };
                let lock = Lock::new().unwrap();
                drop(lock.lock().unwrap());
                assert_eq!(cells.read(..).unwrap(), [7; 16], "nobody wrote the cells");
            });
            assert_eq!(join(&user, LIMIT / 2), 0, "named {named}");
        }
    });
}
