//! Every public timed call at the limits of its timeout: zero, one
//! nanosecond, nanoseconds just short of a second (where a deadline's
//! nanoseconds must carry into its seconds), and `Duration::MAX` (a
//! deadline past the end of the clock, which means "wait forever" and must
//! neither panic nor return early).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::{
    Barrier, Condition, Error, Event, JoinableQueue, Lock, LockError, Pipe, Pool, Process, Queue,
    RLock, Semaphore, Value,
};

const LIMIT: Duration = Duration::from_secs(60);

/// Timeouts that end before anything happens, and the longest each may take.
const SHORT: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_nanos(999_999_999),
];

/// Runs `f` with each short timeout; `f` must report a timeout, and it
/// must come neither before the timeout nor long after.
fn times_out(what: &str, mut f: impl FnMut(Duration) -> bool) {
    for t in SHORT {
        let start = Instant::now();
        assert!(f(t), "{what} with {t:?} did not time out");
        let took = start.elapsed();
        assert!(took >= t, "{what} with {t:?} returned after {took:?}");
        assert!(
            took < t + Duration::from_secs(5),
            "{what} with {t:?} took {took:?}"
        );
    }
}

/// Every timeout, `Duration::MAX` included, on a call that can succeed at
/// once: it does, without panicking.
fn all_timeouts() -> impl Iterator<Item = Duration> {
    SHORT
        .into_iter()
        .chain([Duration::MAX, Duration::new(u64::MAX, 999_999_999)])
}

#[test]
fn locks() {
    watchdog("locks", LIMIT, || {
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        let value = Value::new(0u64).unwrap();
        for t in all_timeouts() {
            drop(lock.lock_timeout(t).unwrap());
            drop(rlock.lock_timeout(t).unwrap());
            drop(value.lock_timeout(t).unwrap());
        }
        // Held by another thread: the short waits time out; a wait of
        // Duration::MAX gets the lock once the holder lets go.
        let (taken, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        thread::scope(|s| {
            s.spawn(|| {
                let _g = lock.lock().unwrap();
                let _r = rlock.lock().unwrap();
                let _v = value.lock().unwrap();
                taken.wait();
                release.wait();
            });
            taken.wait();
            times_out("Lock::lock_timeout", |t| {
                matches!(lock.lock_timeout(t), Err(LockError::Timeout))
            });
            times_out("RLock::lock_timeout", |t| {
                matches!(rlock.lock_timeout(t), Err(LockError::Timeout))
            });
            times_out("Value::lock_timeout", |t| {
                matches!(value.lock_timeout(t), Err(LockError::Timeout))
            });
            release.wait();
            drop(lock.lock_timeout(Duration::MAX).unwrap());
            drop(rlock.lock_timeout(Duration::MAX).unwrap());
            drop(value.lock_timeout(Duration::MAX).unwrap());
        });
    });
}

#[test]
fn event_semaphore_condition_barrier() {
    watchdog("futex primitives", LIMIT, || {
        let event = Event::new().unwrap();
        times_out("Event::wait_timeout", |t| !event.wait_timeout(t));
        let sem = Semaphore::new(0).unwrap();
        times_out("Semaphore::acquire_timeout", |t| !sem.acquire_timeout(t));
        times_out("Semaphore::permit_timeout", |t| {
            sem.permit_timeout(t).is_none()
        });
        let cond = Condition::new().unwrap();
        times_out("Condition::wait_timeout", |t| {
            !cond.lock().unwrap().wait_timeout(t).unwrap()
        });
        times_out("Condition::wait_for", |t| {
            !cond.lock().unwrap().wait_for(|| false, Some(t)).unwrap()
        });
        times_out("Barrier::wait_timeout", |t| {
            matches!(
                Barrier::new(2).unwrap().wait_timeout(t),
                Err(Error::BrokenBarrier)
            )
        });
        times_out("Barrier::with_timeout", |t| {
            matches!(
                Barrier::with_timeout(2, t).unwrap().wait(),
                Err(Error::BrokenBarrier)
            )
        });

        // Satisfied already or later, a wait of Duration::MAX returns true.
        let barrier = Barrier::with_timeout(2, Duration::MAX).unwrap();
        thread::scope(|s| {
            s.spawn(|| event.set());
            assert!(event.wait_timeout(Duration::MAX));
            s.spawn(|| sem.release().unwrap());
            assert!(sem.acquire_timeout(Duration::MAX));
            s.spawn(|| barrier.wait_timeout(Duration::MAX).unwrap());
            barrier.wait().unwrap();
        });
        for t in all_timeouts() {
            assert!(event.wait_timeout(t));
            sem.release().unwrap();
            assert!(sem.acquire_timeout(t));
            assert!(cond.lock().unwrap().wait_for(|| true, Some(t)).unwrap());
        }
        let mut g = cond.lock().unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                cond.lock().unwrap().notify_all();
            });
            assert!(g.wait_timeout(Duration::MAX).unwrap());
        });
    });
}

#[test]
fn queues() {
    watchdog("queues", LIMIT, || {
        let q = Queue::<u32>::bounded(1).unwrap();
        times_out("Queue::get_timeout", |t| {
            matches!(q.get_timeout(t), Err(Error::Timeout))
        });
        q.put(1).unwrap();
        times_out("Queue::put_timeout", |t| q.put_timeout(2, t).is_err());
        assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 1);
        for t in all_timeouts() {
            q.put_timeout(3, t).unwrap();
            assert_eq!(q.get_timeout(t).unwrap(), 3);
        }
        let jq = JoinableQueue::<u32>::new().unwrap();
        jq.put(1).unwrap();
        times_out("JoinableQueue::join_timeout", |t| {
            matches!(jq.join_timeout(t), Err(Error::Timeout))
        });
        jq.get().unwrap();
        jq.task_done().unwrap();
        for t in all_timeouts() {
            jq.join_timeout(t).unwrap();
        }
    });
}

#[test]
fn connections() {
    watchdog("connections", LIMIT, || {
        let (mut a, mut b) = Pipe(true).unwrap();
        times_out("Connection::poll", |t| !a.poll(Some(t)).unwrap());
        times_out("connection::wait", |t| {
            multiproc::conn::wait(&[&a], Some(t)).unwrap().is_empty()
        });
        times_out("Connection::recv_bytes_timeout", |t| {
            matches!(a.recv_bytes_timeout(t), Err(Error::Timeout))
        });
        for t in all_timeouts() {
            b.send_bytes(b"x").unwrap();
            assert!(a.poll(Some(t)).unwrap());
            assert_eq!(multiproc::conn::wait(&[&a], Some(t)).unwrap(), [0]);
            assert_eq!(a.recv_bytes_timeout(t).unwrap(), b"x");
        }
        thread::scope(|s| {
            s.spawn(|| b.send_bytes(b"later").unwrap());
            assert!(a.poll(Some(Duration::MAX)).unwrap());
            assert_eq!(a.recv_bytes_timeout(Duration::MAX).unwrap(), b"later");
        });
    });
}

/// A pool task that returns once the named event is set.
fn after_event(name: String) -> u32 {
    Event::open(&name).unwrap().wait();
    7
}

#[test]
fn processes_and_pools() {
    watchdog("processes and pools", LIMIT, || {
        let (mut rx, mut tx) = Pipe(false).unwrap();
        let mut p = Process::new(move || {
            // Waits until the parent says so: the parent's short joins time out.
            let _ = rx.recv_bytes();
        });
        p.start().unwrap();
        times_out("Process::join_timeout", |t| {
            p.join_timeout(t).unwrap().is_none()
        });
        tx.send_bytes(b"go").unwrap();
        assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(0));
        for t in all_timeouts() {
            assert_eq!(p.join_timeout(t).unwrap(), Some(0));
        }

        let name = common::TempName::new("timeouts-event");
        let event = Event::create(&name).unwrap();
        let pool = Pool::with_processes(1).unwrap();
        let slow = pool.apply_async(after_event, name.to_string());
        times_out("AsyncResult::get_timeout", |t| {
            matches!(slow.get_timeout(t), Err(Error::Timeout))
        });
        times_out("AsyncResult::wait_timeout", |t| !slow.wait_timeout(t));
        let many = pool.map_async(after_event, [name.to_string(), name.to_string()]);
        times_out("MapResult::get_timeout", |t| {
            matches!(many.get_timeout(t), Err(Error::Timeout))
        });
        event.set();
        assert_eq!(slow.get_timeout(Duration::MAX).unwrap(), 7);
        assert_eq!(many.get_timeout(Duration::MAX).unwrap(), [7, 7]);
        for t in all_timeouts() {
            assert!(slow.wait_timeout(t));
            assert_eq!(slow.get_timeout(t).unwrap(), 7);
            assert_eq!(many.get_timeout(t).unwrap(), [7, 7]);
        }
    });
}

/// Timeouts that are representable on the clock but centuries long: the
/// deadline is an ordinary instant far in the future, which the futex, the
/// robust mutex's timed lock and `poll` must all accept (no EINVAL, no
/// early return, no overflow in the milliseconds given to `poll`).
const HUGE: [Duration; 3] = [
    Duration::from_secs(i64::MAX as u64 / 4),
    Duration::from_secs(u64::MAX / 2),
    Duration::new(1 << 40, 999_999_999),
];

/// The calls added after the first audit (the byte queue's in-place
/// `put_with`/`get_with`, `Condition::wait_for_async`) at every limit, and
/// the older calls at the huge timeouts, both where they return at once
/// and where they must sleep until another thread acts.
#[test]
fn newer_calls_and_huge_timeouts() {
    use multiproc::queue::Bytes;
    watchdog("newer calls and huge timeouts", LIMIT, || {
        let q = Queue::<Bytes>::with_capacity(0, 64).unwrap();
        times_out("Queue<Bytes>::get_with_timeout", |t| {
            matches!(q.get_with_timeout(t, |_| ()), Err(Error::Timeout))
        });
        q.put_bytes(&[7; 40]).unwrap();
        times_out("Queue<Bytes>::put_with_timeout", |t| {
            matches!(q.put_with_timeout(40, t, |_| ()), Err(Error::Timeout))
        });
        q.get_with(|_| ()).unwrap();
        for t in all_timeouts().chain(HUGE) {
            q.put_with_timeout(3, t, |b| b.copy_from_slice(b"abc"))
                .unwrap();
            assert_eq!(q.get_with_timeout(t, |b| b.to_vec()).unwrap(), b"abc");
            q.put_bytes_timeout(b"de", t).unwrap();
            assert_eq!(q.get_bytes_timeout(t).unwrap(), b"de");
        }

        let cond = Condition::new().unwrap();
        let lock = Lock::new().unwrap();
        let event = Event::new().unwrap();
        let (mut a, mut b) = Pipe(true).unwrap();
        for t in HUGE {
            drop(lock.lock_timeout(t).unwrap());
            b.send_bytes(b"x").unwrap();
            assert!(a.poll(Some(t)).unwrap());
            assert_eq!(a.recv_bytes_timeout(t).unwrap(), b"x");
            event.set();
            assert!(event.wait_timeout(t));
        }
        // Sleeping with a huge deadline, then woken by another thread.
        for t in HUGE {
            let e = Event::new().unwrap();
            let held = Lock::new().unwrap();
            thread::scope(|s| {
                let g = held.lock().unwrap();
                s.spawn(|| {
                    assert!(e.wait_timeout(t));
                    drop(held.lock_timeout(t).unwrap());
                });
                thread::sleep(Duration::from_millis(20));
                e.set();
                drop(g);
            });
            let mut g = cond.lock().unwrap();
            assert!(g.wait_for(|| true, Some(t)).unwrap());
            drop(g);
        }

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for t in SHORT {
                let start = Instant::now();
                assert!(!cond.wait_for_async(|| false, Some(t)).await.unwrap());
                assert!(start.elapsed() >= t);
            }
            for t in all_timeouts().chain(HUGE) {
                assert!(cond.wait_for_async(|| true, Some(t)).await.unwrap());
                let e = Event::new().unwrap();
                e.set();
                assert!(e.wait_timeout_async(t).await.unwrap());
            }
        });
    });
}
