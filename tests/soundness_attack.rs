//! Fourth-round attack on the soundness of the safe API: guards and
//! borrows of shared memory carried into a forked child by a closure that
//! need not be `Send` ([`Process::new_local`], [`Scope::process_local`]).

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::process::LocalProcess;
use multiproc::sync::Event;
use multiproc::{Array, Process, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// A lock guard moved into a local process's closure is dropped by the
/// parent right after the fork (the closure moved to the child), which
/// releases the lock: the child's copy of the guard must then give no
/// access to the shared value, or it writes while another process holds
/// the lock (a data race on shared memory, and mutual exclusion broken).
#[test]
fn a_guard_captured_by_a_forked_closure_gives_no_access_without_the_lock() {
    watchdog("guard captured by a local process", LIMIT, || {
        let v = Value::new(0u64).unwrap();
        let locked_by_parent = Event::new().unwrap();
        multiproc::scope(|s| {
            let mut guard = v.lock().unwrap();
            let ready = locked_by_parent.clone();
            let mut p = s.process_local(move || {
                ready.wait();
                // The parent holds the lock now: this write must not land.
                *guard = 7;
            });
            p.start().unwrap();
            // The parent's copy of the closure (and of the guard) is gone.
            let mut mine = v.try_lock().expect("the parent released the lock");
            *mine = 5;
            locked_by_parent.set();
            let code = join_local(&p);
            assert_eq!(*mine, 5, "the child wrote while the parent held the lock");
            assert_ne!(code, 0, "the child's write through a stale guard must fail");
        });
    });
}

/// As above with a `'static` array and [`Process::new_local`].
#[test]
fn a_static_guard_captured_by_a_local_process_gives_no_access() {
    watchdog("static guard captured by a local process", LIMIT, || {
        let arr: &'static Array<u32> = Box::leak(Box::new(Array::new(4).unwrap()));
        let locked_by_parent = Event::new().unwrap();
        let ready = locked_by_parent.clone();
        let guard = arr.lock().unwrap();
        let mut p = Process::new_local(move || {
            let mut guard = guard;
            ready.wait();
            guard[1] = 7;
        });
        p.start().unwrap();
        let mut mine = arr.try_lock().expect("the parent released the lock");
        mine[1] = 5;
        locked_by_parent.set();
        let code = join_local(&p);
        assert_eq!(mine[1], 5, "the child wrote while the parent held the lock");
        assert_ne!(code, 0);
    });
}

/// Joins a local process within [`LIMIT`]; kills it and fails if it hangs.
fn join_local(p: &LocalProcess<'_>) -> i32 {
    match p.join_timeout(LIMIT).expect("join") {
        Some(code) => code,
        None => {
            p.kill().unwrap();
            panic!("{} did not exit within {LIMIT:?}", p.name());
        }
    }
}

/// The sound way to lend locked cells to a child: a reference taken in
/// the parent, whose guard the scope keeps (and so the lock) until the
/// child has exited. The child writes; nobody else can meanwhile.
#[test]
fn cells_borrowed_through_a_reference_taken_in_the_parent_are_written() {
    watchdog("cells lent to a scoped child", LIMIT, || {
        let v = Value::new(0u64).unwrap();
        let mut guard = v.lock().unwrap();
        let counter = &mut *guard;
        multiproc::scope(|s| {
            let mut p = s.process_local(move || *counter += 41);
            p.start().unwrap();
            assert!(v.try_lock().is_err(), "the parent still holds the lock");
            assert_eq!(join_local(&p), 0);
        });
        *guard += 1;
        drop(guard);
        assert_eq!(v.get().unwrap(), 42);
    });
}

/// A permit moved into a child's closure exists twice after the fork: the
/// parent drops its copy at once, the child when it is done with it. The
/// child holds the permit: the parent's copy gives nothing back, the
/// child's gives it back once (not twice, which would leave the semaphore
/// above its initial value for good).
#[test]
fn a_permit_moved_into_a_child_is_held_by_the_child_and_given_back_once() {
    watchdog("permit moved into a child", LIMIT, || {
        let sem = multiproc::Semaphore::new(1).unwrap();
        let sem: &'static multiproc::Semaphore = Box::leak(Box::new(sem));
        let go = Event::new().unwrap();
        let told = go.clone();
        let permit = sem.permit();
        let mut p = Process::new(move || {
            told.wait();
            drop(permit);
        });
        p.start().unwrap();
        assert_eq!(sem.value(), 0, "the child holds the permit");
        assert!(!sem.try_acquire());
        go.set();
        assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0));
        assert_eq!(sem.value(), 1, "one permit taken, one given back");
    });
}
