//! Adversarial cases against the shared layer, sixth round: a child made
//! by a raw `clone` system call (no fork handler, and a thread the C
//! library takes for its parent's), and copies of a process forked by a
//! closure that a queue runs with one of its locks held.

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::queue::{Bytes, Queue};
use multiproc::{Barrier, Error, Lock, RLock, RawValue};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `child` in a child made by a raw `clone` (a fork without the C
/// library, flags SIGCHLD only: no fork handler runs, and the C library
/// still takes the child's thread for its parent's), which ends at once
/// after it; waits for it.
fn in_a_raw_clone(child: impl FnOnce()) {
    // SAFETY: the child runs `child` on its own copy of the memory and
    // ends at once, without unwinding.
    let raw = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    if raw == 0 {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
        // SAFETY: ends the clone at once.
        unsafe { libc::_exit(0) };
    }
    assert!(raw > 0, "clone");
    let mut status = 0;
    // SAFETY: waits for the clone just made.
    unsafe { libc::waitpid(raw as libc::pid_t, &mut status, 0) };
}

/// The C library records the owner of a mutex by its own cached id of the
/// thread, which in a raw clone's child is its parent's: a lock the clone
/// took and died with was the parent's own (`Deadlock`) and held for
/// ever for every other process (the kernel, which had no robust list
/// for the clone, never marked it), and the clone could release a lock
/// its parent held. Such a thread is refused robust locks instead.
#[test]
fn a_raw_clone_neither_takes_nor_releases_its_parents_locks() {
    watchdog("locks in a raw clone", LIMIT, || {
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        // 1: the clone's lock was refused; 2: taken. 1: its release of
        // the parent's rlock was refused; 2: done.
        let took = RawValue::new(0u32).unwrap();
        let released = RawValue::new(0u32).unwrap();
        // Cloned from a forked child, which has one thread: no other
        // thread holds a lock of the C library's (the allocator's) that
        // the clone would find held for ever.
        let (l, r, t, rel) = (lock.clone(), rlock.clone(), took.clone(), released.clone());
        let parent = common::static_child(move || {
            r.acquire().unwrap();
            in_a_raw_clone(|| {
                t.set(match l.lock() {
                    Ok(guard) => {
                        std::mem::forget(guard);
                        2
                    }
                    Err(_) => 1,
                });
                rel.set(if r.release().is_ok() { 2 } else { 1 });
            });
            assert_eq!(t.get(), 1, "a raw clone took a robust lock");
            assert_eq!(rel.get(), 1, "a raw clone released its parent's rlock");
            if let Err(e) = l.lock_timeout(Duration::from_secs(10)) {
                panic!("the lock after the clone: {e:?}");
            }
            r.release().unwrap();
        });
        assert_eq!(common::join(&parent, LIMIT / 2), 0);
    });
}

/// Forks (a bare `fork(2)`, as a pool task may make) inside a closure that
/// the queue runs with one of its locks held. The child goes on from the
/// fork once the parent has said `resume` (set to 1): it returns from the
/// closure into the queue's code, as the parent did long before, and ends
/// right after that call. Returns the child's pid, in the parent.
fn fork_in_closure(resume: &RawValue<u32>) -> libc::pid_t {
    // SAFETY: the child only waits on shared memory, returns into the
    // queue's code (which allocates nothing on this path) and ends.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        while resume.get() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    pid
}

/// Ends the calling process if it is the child of [`fork_in_closure`]
/// (`pid` 0), else waits for that child.
fn end_child(pid: libc::pid_t) {
    if pid == 0 {
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// A consumer's copy forked inside `get_with`'s closure takes no frame: the
/// frame is the parent's, consumed once, and the copy returning from the
/// closure after the parent has taken more frames must not move the head
/// back to just past the first (which gave the second frame again).
#[test]
fn a_copy_forked_inside_get_with_consumes_nothing() {
    watchdog("fork inside get_with", LIMIT, || {
        let q = Queue::<Bytes>::new().unwrap();
        for frame in [b"one", b"two", b"six"] {
            q.put_bytes(frame).unwrap();
        }
        let resume = RawValue::new(0u32).unwrap();
        let mut child = 0;
        let first = q
            .get_with(|frame| {
                child = fork_in_closure(&resume);
                frame.to_vec()
            })
            .unwrap();
        if child == 0 {
            end_child(child);
        }
        assert_eq!(first, b"one");
        assert_eq!(q.get_bytes().unwrap(), b"two");
        resume.set(1);
        end_child(child);
        assert_eq!(
            q.try_get_bytes().unwrap(),
            b"six",
            "the forked copy moved the head back"
        );
        assert!(matches!(q.try_get_bytes(), Err(Error::Empty)));
    });
}

/// A producer's copy forked inside `put_with`'s closure adds no frame: the
/// frame is the parent's, published once, and the copy returning from the
/// closure after the parent has put more must not move the tail back to
/// just past the first (which lost the second).
#[test]
fn a_copy_forked_inside_put_with_publishes_nothing() {
    watchdog("fork inside put_with", LIMIT, || {
        let q = Queue::<Bytes>::new().unwrap();
        let resume = RawValue::new(0u32).unwrap();
        let mut child = 0;
        q.put_with(3, |buf| {
            child = fork_in_closure(&resume);
            buf.copy_from_slice(b"one");
        })
        .unwrap();
        if child == 0 {
            end_child(child);
        }
        q.put_bytes(b"two").unwrap();
        resume.set(1);
        end_child(child);
        assert_eq!(q.try_get_bytes().unwrap(), b"one");
        assert_eq!(
            q.try_get_bytes().unwrap(),
            b"two",
            "the forked copy moved the tail back"
        );
        assert!(matches!(q.try_get_bytes(), Err(Error::Empty)));
    });
}

/// A copy of the process forked by a barrier's action (a bare `fork(2)`)
/// and returning from it releases nothing: the pass is its parent's, and
/// its parent released it long before. Releasing again then released the
/// next pass with one party of two in it.
#[test]
fn a_copy_forked_by_a_barrier_action_releases_no_later_pass() {
    watchdog("fork inside a barrier action", LIMIT, || {
        let resume = RawValue::new(0u32).unwrap();
        let child = RawValue::new(0i32).unwrap();
        let (r, c) = (resume.clone(), child.clone());
        let barrier = Barrier::new(2).unwrap().with_action(move || {
            if c.get() == 0 {
                let pid = fork_in_closure(&r);
                if pid > 0 {
                    c.set(pid);
                }
            }
        });
        // The copy returns from its action into the wait of whichever
        // thread ran it, and ends there.
        let parent = std::process::id();
        let wait = || {
            let passed = barrier.wait();
            if std::process::id() != parent {
                end_child(0);
            }
            passed
        };
        std::thread::scope(|s| {
            let other = s.spawn(wait);
            assert!(wait().is_ok());
            assert!(other.join().unwrap().is_ok());
        });
        assert!(child.get() > 0, "the action forked");
        std::thread::scope(|s| {
            let early = s.spawn(|| barrier.wait_timeout(LIMIT / 4));
            assert!(common::wait_until(LIMIT / 4, || barrier.n_waiting() == 1));
            resume.set(1);
            end_child(child.get());
            assert_eq!(barrier.n_waiting(), 1, "the copy released the next pass");
            assert!(!early.is_finished(), "a party passed alone");
            let late = barrier.wait_timeout(LIMIT / 4);
            let early = early.join().unwrap();
            assert!(late.is_ok() && early.is_ok(), "{late:?} {early:?}");
        });
    });
}

/// A copy of the process forked by a `put_many` iterator (a bare
/// `fork(2)`) puts what a loop of `put`s forked there would: the items
/// the iterator gives it after the fork. The items given before were
/// encoded, held back for one publication, and published by both.
#[test]
fn a_copy_forked_by_a_put_many_iterator_puts_only_its_own_items() {
    watchdog("fork inside put_many's iterator", LIMIT, || {
        let q = Queue::<u32>::new().unwrap();
        let resume = RawValue::new(0u32).unwrap();
        let mut child = 0;
        let items = (0..6u32).inspect(|&i| {
            if i == 3 {
                child = fork_in_closure(&resume);
            }
        });
        q.put_many(items).unwrap();
        if child == 0 {
            end_child(0);
        }
        resume.set(1);
        end_child(child);
        let mut got = q.try_get_many(100).unwrap();
        got.sort_unstable();
        assert_eq!(
            got,
            [0, 1, 2, 3, 3, 4, 4, 5, 5],
            "0 to 5, and the copy's 3 to 5"
        );
    });
}
