//! Attacks on the blocking waits of the shared layer from where a wait is
//! least expected: a thread-local value's destructor (after the thread's
//! other thread-locals are gone), a thread that std never made, a stream
//! of signals that interrupt every sleep, and timeouts at and past the
//! ends of the clock.
//!
//! Each case that could abort the process (a panic in a thread-local
//! destructor does) or that installs a signal handler runs in a child
//! process of its own.

mod common;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{join, static_child, watchdog};
use multiproc::{
    Barrier, BoundedSemaphore, Condition, Error, Event, Lock, LockError, Queue, RLock, Semaphore,
    Value,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The shared objects every wait of [`run_waits`] uses. Each is free (or
/// set, or holds a permit) so that the waits can finish at once, except
/// those of [`Held`], which another party holds.
#[derive(Clone)]
struct Objects {
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    bounded: BoundedSemaphore,
    event: Event,
    unset: Event,
    cond: Condition,
    one_party: Barrier,
    two_parties: Barrier,
    value: Value<u64>,
    queue: Queue<u32>,
}

impl Objects {
    fn new() -> Objects {
        Objects {
            lock: Lock::new().unwrap(),
            rlock: RLock::new().unwrap(),
            sem: Semaphore::new(1_000).unwrap(),
            bounded: BoundedSemaphore::new(1_000).unwrap(),
            event: {
                let e = Event::new().unwrap();
                e.set();
                e
            },
            unset: Event::new().unwrap(),
            cond: Condition::new().unwrap(),
            one_party: Barrier::new(1).unwrap(),
            two_parties: Barrier::new(2).unwrap(),
            value: Value::new(0).unwrap(),
            queue: Queue::new().unwrap(),
        }
    }
}

/// Runs every blocking wait of the shared layer once, each of which must
/// end at once (successfully, or by timing out after a short timeout);
/// returns what went wrong.
fn run_waits(o: &Objects) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut check = |what: &str, ok: bool| {
        if !ok {
            wrong.push(what.to_owned());
        }
    };
    let short = Duration::from_millis(5);
    check("Barrier::wait", o.one_party.wait().is_ok());
    check(
        "Barrier::wait_timeout",
        o.one_party.wait_timeout(Duration::from_secs(10)).is_ok(),
    );
    check(
        "Barrier::wait_timeout alone",
        matches!(o.two_parties.wait_timeout(short), Err(Error::BrokenBarrier)),
    );
    check("Barrier::reset", o.two_parties.reset().is_ok());
    o.event.wait();
    check(
        "Event::wait_timeout",
        o.event.wait_timeout(Duration::from_secs(10)),
    );
    check("Event::wait_timeout unset", !o.unset.wait_timeout(short));
    check(
        "Lock::lock_timeout",
        o.lock.lock_timeout(Duration::from_secs(10)).is_ok(),
    );
    check("Lock::lock", o.lock.lock().is_ok());
    check(
        "RLock::lock_timeout",
        o.rlock.lock_timeout(Duration::from_secs(10)).is_ok(),
    );
    check(
        "Value::lock_timeout",
        o.value.lock_timeout(Duration::from_secs(10)).is_ok(),
    );
    o.sem.acquire();
    check(
        "Semaphore::acquire_timeout",
        o.sem.acquire_timeout(Duration::from_secs(10)),
    );
    check(
        "BoundedSemaphore::acquire_timeout",
        o.bounded.acquire_timeout(Duration::from_secs(10)),
    );
    check("BoundedSemaphore::release", o.bounded.release().is_ok());
    match o.cond.lock() {
        Ok(mut g) => {
            check(
                "Condition::wait_timeout",
                matches!(g.wait_timeout(short), Ok(false)),
            );
            check(
                "Condition::wait_for",
                matches!(g.wait_for(|| false, Some(short)), Ok(false)),
            );
        }
        Err(_) => check("Condition::lock", false),
    }
    check("Queue::put", o.queue.put(7).is_ok());
    check(
        "Queue::get_timeout",
        matches!(o.queue.get_timeout(Duration::from_secs(10)), Ok(7)),
    );
    check(
        "Queue::get_timeout empty",
        o.queue.get_timeout(short).is_err(),
    );
    wrong
}

/// What the waits run by a destructor or a foreign thread found wrong
/// (`None` until they ran).
static FOUND: Mutex<Option<Vec<String>>> = Mutex::new(None);

fn report(wrong: Vec<String>) {
    *FOUND.lock().unwrap_or_else(|e| e.into_inner()) = Some(wrong);
}

/// Asserts, in the child, that the waits ran and found nothing wrong.
fn assert_ran_clean(case: &str) {
    match FOUND.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(wrong) => assert!(wrong.is_empty(), "{case}: {wrong:?}"),
        None => panic!("{case}: the waits never ran"),
    }
}

/// A thread-local value whose destructor runs every wait.
struct WaitsOnDrop(Option<Objects>);

impl Drop for WaitsOnDrop {
    fn drop(&mut self) {
        if let Some(o) = self.0.take() {
            report(run_waits(&o));
        }
    }
}

thread_local! {
    static WAITS_ON_DROP: RefCell<WaitsOnDrop> = const { RefCell::new(WaitsOnDrop(None)) };
}

/// Runs `case` in a child process; it must exit with 0.
fn in_child(what: &str, case: fn()) {
    watchdog(what, LIMIT, || {
        let p = static_child(case);
        assert_eq!(join(&p, LIMIT), 0, "{what}: the child failed");
    });
}

#[test]
fn waits_in_a_thread_local_destructor_after_the_waits_of_the_thread() {
    // The destructor is registered before anything the waits use, so it
    // runs after everything they registered is destroyed.
    in_child("waits in a TLS destructor", || {
        let o = Objects::new();
        thread::spawn(move || {
            WAITS_ON_DROP.with(|w| w.borrow_mut().0 = Some(o.clone()));
            let wrong = run_waits(&o);
            assert!(wrong.is_empty(), "on the thread itself: {wrong:?}");
        })
        .join()
        .unwrap();
        assert_ran_clean("after the thread's own waits");
    });
}

#[test]
fn waits_in_a_thread_local_destructor_as_the_first_waits_of_the_thread() {
    in_child("first waits in a TLS destructor", || {
        let o = Objects::new();
        thread::spawn(move || {
            WAITS_ON_DROP.with(|w| w.borrow_mut().0 = Some(o));
        })
        .join()
        .unwrap();
        assert_ran_clean("first waits of the thread");
    });
}

#[test]
fn waits_in_the_main_threads_thread_local_destructor() {
    // The main thread of a child that ends by returning from its closure:
    // its thread-locals are destroyed by `exit`, if at all; a waits's
    // panic there would abort with a signal.
    in_child("waits on a main thread ending", || {
        let o = Objects::new();
        let wrong = run_waits(&o);
        assert!(wrong.is_empty(), "{wrong:?}");
        WAITS_ON_DROP.with(|w| w.borrow_mut().0 = Some(o));
    });
}

/// The objects a thread made by `pthread_create` works on.
static FOREIGN: Mutex<Option<Objects>> = Mutex::new(None);

extern "C" fn foreign_thread(_: *mut libc::c_void) -> *mut libc::c_void {
    let o = FOREIGN.lock().unwrap().clone().unwrap();
    let wrong = run_waits(&o);
    // And again from a thread-local destructor of this thread.
    WAITS_ON_DROP.with(|w| w.borrow_mut().0 = Some(o));
    if !wrong.is_empty() {
        report(wrong.into_iter().map(|w| format!("{w} (body)")).collect());
    }
    std::ptr::null_mut()
}

extern "C" fn key_destructor(_: *mut libc::c_void) {
    // A pthread key's destructor runs after every Rust thread-local of the
    // thread is destroyed.
    let o = FOREIGN.lock().unwrap().clone().unwrap();
    let wrong = run_waits(&o);
    KEY_WAITS_RAN.store(true, Ordering::SeqCst);
    if !wrong.is_empty() {
        report(wrong.into_iter().map(|w| format!("{w} (key)")).collect());
    }
}

static KEY_WAITS_RAN: AtomicBool = AtomicBool::new(false);

extern "C" fn foreign_thread_with_key(arg: *mut libc::c_void) -> *mut libc::c_void {
    let key = arg as usize as libc::pthread_key_t;
    // SAFETY: `key` was made by `pthread_key_create`; any non-null value
    // makes its destructor run as the thread ends.
    unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<u8>().cast()) };
    foreign_thread(std::ptr::null_mut())
}

/// Runs `body` on a thread made by `pthread_create` with `arg` and joins it.
fn on_foreign_thread(
    body: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    arg: *mut libc::c_void,
) {
    let mut t: libc::pthread_t = 0;
    // SAFETY: `t` is a valid out-pointer, `body` a C function that takes
    // `arg`, which it reads as an integer only.
    let r = unsafe { libc::pthread_create(&mut t, std::ptr::null(), body, arg) };
    assert_eq!(r, 0, "pthread_create");
    // SAFETY: `t` is the joinable thread just made.
    assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
}

#[test]
fn waits_on_a_thread_that_std_never_made() {
    in_child("waits on a foreign thread", || {
        *FOREIGN.lock().unwrap() = Some(Objects::new());
        on_foreign_thread(foreign_thread, std::ptr::null_mut());
        assert_ran_clean("foreign thread");
    });
}

#[test]
fn waits_in_a_pthread_key_destructor() {
    in_child("waits in a pthread key destructor", || {
        *FOREIGN.lock().unwrap() = Some(Objects::new());
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: a valid out-pointer and a C destructor.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(key_destructor)) },
            0
        );
        on_foreign_thread(foreign_thread_with_key, key as usize as *mut libc::c_void);
        assert!(KEY_WAITS_RAN.load(Ordering::SeqCst), "the key's waits");
        assert_ran_clean("foreign thread with a key");
    });
}
