//! Review of 2026-12-02's changes: a robust mutex's last handle dropped
//! while a thread of this process holds it keeps its memory, but only when
//! the mutex was locked through that handle (a named object opened and
//! dropped over and over while another thread holds it, a normal loop,
//! must not keep a mapping each time).

mod common;

use std::time::Duration;

use common::{join, static_child, watchdog, TempName};
use multiproc::{Condition, Lock, RLock, RawArray};

const LIMIT: Duration = Duration::from_secs(120);

/// The mappings of this process.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

/// A named lock, rlock or condition that a thread of this process holds
/// (or waits on) through one handle, opened through another and dropped,
/// over and over, as threads that each open the object for a job do: the
/// dropped handles held nothing, so their mappings must go. They were all
/// kept for the life of the process (the mutex was held by a thread of the
/// process), until opening failed for want of mappings.
#[test]
fn a_named_lock_opened_and_dropped_while_another_handle_holds_it_keeps_no_mapping() {
    watchdog("named lock reopened while held", LIMIT, || {
        let names = [
            TempName::new("reopen-held-lock"),
            TempName::new("reopen-held-rlock"),
            TempName::new("reopen-held-cond"),
        ];
        let theirs: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
        let user = static_child(move || {
            const TIMES: usize = 2000;
            let lock = Lock::create(&theirs[0]).unwrap();
            let rlock = RLock::create(&theirs[1]).unwrap();
            let cond = Condition::create(&theirs[2]).unwrap();
            let (go, release) = std::sync::mpsc::channel::<()>();
            let (held, is_held) = std::sync::mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                let g = lock.lock().unwrap();
                rlock.acquire().unwrap();
                held.send(()).unwrap();
                release.recv_timeout(LIMIT).unwrap();
                rlock.release().unwrap();
                drop(g);
            });
            is_held.recv_timeout(LIMIT).unwrap();
            let before = mappings();
            for _ in 0..TIMES {
                drop(Lock::open(&theirs[0]).unwrap());
                drop(RLock::open(&theirs[1]).unwrap());
            }
            let grown = mappings().saturating_sub(before);
            go.send(()).unwrap();
            holder.join().unwrap();
            assert!(
                grown < TIMES / 10,
                "{grown} mappings kept by {TIMES} handles that held nothing"
            );
            // A condition's places for its waiters are mutexes too: one held
            // by a waiter of this process.
            let waiting = cond.clone();
            let (woken, wake) = std::sync::mpsc::channel::<()>();
            let waiter = std::thread::spawn(move || {
                let mut g = waiting.lock().unwrap();
                woken.send(()).unwrap();
                g.wait_timeout(LIMIT).unwrap();
            });
            wake.recv_timeout(LIMIT).unwrap();
            // The waiter holds its place once it waits: it let the lock go.
            drop(cond.lock().unwrap());
            let before = mappings();
            for _ in 0..TIMES / 4 {
                drop(Condition::open(&theirs[2]).unwrap());
            }
            let grown = mappings().saturating_sub(before);
            cond.lock().unwrap().notify_all();
            waiter.join().unwrap();
            assert!(
                grown < TIMES / 40,
                "{grown} mappings kept by conditions that held nothing"
            );
        });
        assert_eq!(join(&user, LIMIT), 0);
        drop(names);
    });
}

/// A recursive mutex is linked into its holder's robust list through the
/// mapping its first acquire used, and unlinked only by the last release:
/// an `RLock` opened twice by name, acquired through the first opening,
/// again through the second, released once through the first, is still
/// linked through the first's mapping. Dropping that opening must keep
/// its mapping: the thread's next lock of a robust mutex writes through
/// it (into the cells of a `RawArray` made in its place, here).
#[test]
fn an_rlock_linked_through_one_opening_and_released_through_it_keeps_its_mapping() {
    watchdog("rlock linked through one opening", LIMIT, || {
        let name = TempName::new("linked-opening");
        let cells_name = TempName::new("linked-opening-cells");
        let (their_name, their_cells) = (name.0.clone(), cells_name.0.clone());
        let user = static_child(move || {
            let first = RLock::create(&their_name).unwrap();
            let second = RLock::open(&their_name).unwrap();
            first.acquire().unwrap();
            second.acquire().unwrap();
            first.release().unwrap();
            drop(first);
            // Likely at the address just unmapped.
            let cells = RawArray::create(&their_cells, &[7u64; 16]).unwrap();
            let lock = Lock::new().unwrap();
            drop(lock.lock().unwrap());
            second.release().unwrap();
            assert_eq!(cells.read(..).unwrap(), [7; 16], "nobody wrote the cells");
        });
        assert_eq!(join(&user, LIMIT), 0);
        drop((name, cells_name));
    });
}
