//! Adversarial cases against the shared layer, sixth round: a child made
//! by a raw `clone` system call (no fork handler, and a thread the C
//! library takes for its parent's).

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::{Lock, RLock, RawValue};

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
        rlock.acquire().unwrap();
        in_a_raw_clone(|| {
            took.set(match lock.lock() {
                Ok(guard) => {
                    std::mem::forget(guard);
                    2
                }
                Err(_) => 1,
            });
            released.set(if rlock.release().is_ok() { 2 } else { 1 });
        });
        assert_eq!(took.get(), 1, "a raw clone took a robust lock");
        assert_eq!(released.get(), 1, "a raw clone released its parent's rlock");
        match lock.lock_timeout(Duration::from_secs(10)) {
            Ok(_) => {}
            Err(e) => panic!("the lock after the clone: {e:?}"),
        };
        rlock.release().unwrap();
    });
}
