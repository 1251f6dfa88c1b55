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
    Barrier, BoundedSemaphore, Condition, Error, Event, Lock, LockError, Queue, RLock, RawValue,
    Semaphore, Value,
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
    // The async forms, driven by a waker of the test's own (no runtime).
    check(
        "Barrier::wait_async",
        block(o.one_party.wait_async()).is_ok(),
    );
    check(
        "Barrier::wait_timeout_async alone",
        matches!(
            block(o.two_parties.wait_timeout_async(short)),
            Err(Error::BrokenBarrier)
        ),
    );
    check("Barrier::reset", o.two_parties.reset().is_ok());
    check(
        "Event::wait_timeout_async unset",
        matches!(block(o.unset.wait_timeout_async(short)), Ok(false)),
    );
    check(
        "Semaphore::acquire_timeout_async",
        matches!(
            block(o.sem.acquire_timeout_async(Duration::from_secs(10))),
            Ok(true)
        ),
    );
    check(
        "Condition::wait_for_async",
        matches!(
            block(o.cond.wait_for_async(|| false, Some(short))),
            Ok(false)
        ),
    );
    check(
        "Queue::get_timeout_async empty",
        matches!(block(o.queue.get_timeout_async(short)), Err(Error::Timeout)),
    );
    wrong
}

/// Runs `f` to completion on this thread with a waker that reaches no
/// thread-local (a std mutex and condition variable).
fn block<F: std::future::Future>(f: F) -> F::Output {
    use common::wakers::{poll_with, Flag};
    let flag = std::sync::Arc::new(Flag::default());
    let waker = std::task::Waker::from(flag.clone());
    let mut f = std::pin::pin!(f);
    loop {
        let seen = flag.count();
        if let std::task::Poll::Ready(out) = poll_with(f.as_mut(), &waker) {
            return out;
        }
        assert!(flag.wait_past(seen, LIMIT), "never woken");
    }
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

/// A thread-local value whose destructor runs every wait and ends the
/// process: with 0 if they all went well, 3 if not.
struct ExitsAfterWaits(Option<Objects>);

impl Drop for ExitsAfterWaits {
    fn drop(&mut self) {
        if let Some(o) = self.0.take() {
            let wrong = run_waits(&o);
            if !wrong.is_empty() {
                let text = format!("waits in the exit's destructor: {wrong:?}\n");
                // SAFETY: writes a valid buffer to fd 2.
                unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
            }
            // SAFETY: ends the process at once, as the test means to.
            unsafe { libc::_exit(if wrong.is_empty() { 0 } else { 3 }) };
        }
    }
}

thread_local! {
    static EXITS_AFTER_WAITS: RefCell<ExitsAfterWaits> =
        const { RefCell::new(ExitsAfterWaits(None)) };
}

#[test]
fn waits_in_a_thread_local_destructor_run_by_exit() {
    // `exit` runs the calling thread's thread-local destructors: those of
    // the main thread, after the thread's own waits. Exit code 4 means the
    // destructor never ran.
    in_child("waits in a TLS destructor run by exit", || {
        EXITS_AFTER_WAITS.with(|w| w.borrow_mut().0 = Some(Objects::new()));
        let wrong = run_waits(&Objects::new());
        assert!(wrong.is_empty(), "{wrong:?}");
        std::process::exit(4);
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
        let made = unsafe { libc::pthread_key_create(&mut key, Some(key_destructor)) };
        assert_eq!(made, 0);
        on_foreign_thread(foreign_thread_with_key, key as usize as *mut libc::c_void);
        assert!(KEY_WAITS_RAN.load(Ordering::SeqCst), "the key's waits");
        assert_ran_clean("foreign thread with a key");
    });
}

/// Every blocking wait of the shared layer on objects where it cannot
/// finish (a lock another thread holds, an unset event, a semaphore
/// without permits, a barrier whose other party never comes, an empty
/// queue, a full one), each given `timeout`: `(name, timed out as it
/// should, with the right result)`.
struct Blocked {
    lock: Lock,
    rlock: RLock,
    value: Value<u64>,
    sem: Semaphore,
    bounded: BoundedSemaphore,
    unset: Event,
    cond: Condition,
    two_parties: Barrier,
    empty: Queue<u32>,
    full: Queue<u32>,
}

impl Blocked {
    fn new() -> Blocked {
        let full = Queue::bounded(1).unwrap();
        full.put(1).unwrap();
        Blocked {
            lock: Lock::new().unwrap(),
            rlock: RLock::new().unwrap(),
            value: Value::new(0).unwrap(),
            sem: Semaphore::new(0).unwrap(),
            bounded: BoundedSemaphore::new(0).unwrap(),
            unset: Event::new().unwrap(),
            cond: Condition::new().unwrap(),
            two_parties: Barrier::new(2).unwrap(),
            empty: Queue::new().unwrap(),
            full,
        }
    }

    /// Runs `f` while another thread holds the locks.
    fn while_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let (taken, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        thread::scope(|s| {
            s.spawn(|| {
                let _g = self.lock.lock().unwrap();
                let _r = self.rlock.lock().unwrap();
                let _v = self.value.lock().unwrap();
                taken.wait();
                release.wait();
            });
            taken.wait();
            // Lets the holder go however `f` ends (a panic included).
            let _release = OnDrop(|| {
                release.wait();
            });
            f()
        })
    }

    /// The blocking waits, each with `t`; `check` takes each one's name
    /// and whether it ended as a timeout should, as it returns.
    fn waits(&self, t: Duration, check: &mut dyn FnMut(&'static str, bool)) {
        use multiproc::queue::PutError;
        let timed_out = matches!(self.lock.lock_timeout(t), Err(LockError::Timeout));
        check("Lock::lock_timeout", timed_out);
        let timed_out = matches!(self.rlock.lock_timeout(t), Err(LockError::Timeout));
        check("RLock::lock_timeout", timed_out);
        let timed_out = matches!(self.value.lock_timeout(t), Err(LockError::Timeout));
        check("Value::lock_timeout", timed_out);
        check("Semaphore::acquire_timeout", !self.sem.acquire_timeout(t));
        check(
            "BoundedSemaphore::acquire_timeout",
            !self.bounded.acquire_timeout(t),
        );
        check(
            "Semaphore::permit_timeout",
            self.sem.permit_timeout(t).is_none(),
        );
        check("Event::wait_timeout", !self.unset.wait_timeout(t));
        let mut g = self.cond.lock().unwrap();
        let timed_out = matches!(g.wait_timeout(t), Ok(false));
        check("Condition::wait_timeout", timed_out);
        let timed_out = matches!(g.wait_for(|| false, Some(t)), Ok(false));
        check("Condition::wait_for", timed_out);
        drop(g);
        let timed_out = matches!(self.two_parties.wait_timeout(t), Err(Error::BrokenBarrier));
        check("Barrier::wait_timeout", timed_out);
        self.two_parties.reset().unwrap();
        let timed_out = matches!(self.empty.get_timeout(t), Err(Error::Timeout));
        check("Queue::get_timeout", timed_out);
        let timed_out = matches!(self.full.put_timeout(2, t), Err(PutError::Timeout(2)));
        check("Queue::put_timeout", timed_out);
    }

    /// The async forms of the waits, as [`waits`](Blocked::waits).
    async fn async_waits(&self, t: Duration, check: &mut dyn FnMut(&'static str, bool)) {
        use multiproc::queue::PutError;
        let timed_out = matches!(self.sem.acquire_timeout_async(t).await, Ok(false));
        check("Semaphore::acquire_timeout_async", timed_out);
        let timed_out = matches!(self.unset.wait_timeout_async(t).await, Ok(false));
        check("Event::wait_timeout_async", timed_out);
        let timed_out = matches!(self.cond.wait_for_async(|| false, Some(t)).await, Ok(false));
        check("Condition::wait_for_async", timed_out);
        let timed_out = matches!(
            self.two_parties.wait_timeout_async(t).await,
            Err(Error::BrokenBarrier)
        );
        check("Barrier::wait_timeout_async", timed_out);
        self.two_parties.reset().unwrap();
        let timed_out = matches!(self.empty.get_timeout_async(t).await, Err(Error::Timeout));
        check("Queue::get_timeout_async", timed_out);
        let timed_out = matches!(
            self.full.put_timeout_async(2, t).await,
            Err(PutError::Timeout(2))
        );
        check("Queue::put_timeout_async", timed_out);
    }
}

/// Times each wait of `run` (all given `timeout`) and checks that it
/// timed out as it should, neither early nor much later; returns what
/// went wrong.
fn timed(
    timeout: Duration,
    late: Duration,
    run: impl FnOnce(&mut dyn FnMut(&'static str, bool)),
) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut last = Instant::now();
    run(&mut |name, ok| {
        let took = last.elapsed();
        if !ok {
            wrong.push(format!("{name}: wrong result"));
        } else if took < timeout {
            wrong.push(format!("{name}: returned after {took:?} < {timeout:?}"));
        } else if took > timeout + late {
            wrong.push(format!("{name}: returned after {took:?}"));
        }
        last = Instant::now();
    });
    wrong
}

/// Runs its closure when dropped: the end of a test step, however it ends.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Sends SIGUSR1, whose handler does nothing and was installed without
/// `SA_RESTART`, to every other thread of this process every 100 µs while
/// `f` runs: every sleep in the kernel is cut short with `EINTR`.
fn under_a_stream_of_signals<R>(f: impl FnOnce() -> R) -> R {
    /// Signals handled: all the handler does (an atomic add is
    /// async-signal-safe).
    static HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    extern "C" fn nothing(_: libc::c_int) {
        HANDLED.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: all zeroes is a valid `sigaction` (an empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // No SA_RESTART: interrupted calls fail with EINTR.
    action.sa_flags = 0;
    // SAFETY: the handler does nothing, so it is async-signal-safe;
    // `action` is valid for the call.
    let installed = unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) };
    assert_eq!(installed, 0);
    let stop = AtomicBool::new(false);
    let sent = std::sync::atomic::AtomicU64::new(0);
    let r = thread::scope(|s| {
        s.spawn(|| {
            let (pid, me) = (std::process::id(), common::procfs::gettid());
            let mut tids = Vec::new();
            let mut listed: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                // Threads come and go (the async waiter threads): list
                // them again now and then.
                if listed.is_none_or(|at| at.elapsed() > Duration::from_millis(5)) {
                    tids = std::fs::read_dir("/proc/self/task")
                        .unwrap()
                        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok())
                        .filter(|&t| t != me)
                        .collect();
                    listed = Some(Instant::now());
                }
                for &tid in &tids {
                    // SAFETY: tgkill with a signal whose handler is
                    // installed; a thread that has ended gets nothing.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                // The handler's SA_RESTART-less interruptions, not this
                // thread's pace, are what is tested: 100 µs between rounds.
                thread::sleep(Duration::from_micros(100));
            }
        });
        let _stop = OnDrop(|| stop.store(true, Ordering::Relaxed));
        f()
    });
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "too few signals were sent"
    );
    assert!(
        HANDLED.load(Ordering::Relaxed) > 100,
        "too few signals were handled"
    );
    r
}

#[test]
fn timed_waits_end_on_time_under_a_stream_of_signals() {
    in_child("timed waits under signals", || {
        let b = Blocked::new();
        let timeout = Duration::from_millis(150);
        let late = Duration::from_secs(3);
        under_a_stream_of_signals(|| {
            let wrong = b.while_held(|| timed(timeout, late, |c| b.waits(timeout, c)));
            assert!(wrong.is_empty(), "blocking: {wrong:?}");
            let rt = common::current_thread();
            let wrong = rt.block_on(async {
                let mut wrong = Vec::new();
                let mut last = Instant::now();
                let mut check = |name: &'static str, ok: bool| {
                    let took = last.elapsed();
                    if !ok || took < timeout || took > timeout + late {
                        wrong.push(format!("{name}: {ok} after {took:?}"));
                    }
                    last = Instant::now();
                };
                b.async_waits(timeout, &mut check).await;
                wrong
            });
            assert!(wrong.is_empty(), "async: {wrong:?}");
            // Satisfied during a long wait: success, neither a timeout
            // nor an error from an interrupted sleep.
            let event = Event::new().unwrap();
            let sem = Semaphore::new(0).unwrap();
            thread::scope(|s| {
                let w = s.spawn(|| {
                    (
                        event.wait_timeout(Duration::from_secs(30)),
                        sem.acquire_timeout(Duration::from_secs(30)),
                    )
                });
                thread::sleep(Duration::from_millis(50));
                event.set();
                sem.release().unwrap();
                assert_eq!(w.join().unwrap(), (true, true));
            });
        });
    });
}

#[test]
fn zero_and_one_nanosecond_try_once() {
    watchdog("zero timeouts", LIMIT, || {
        let b = Blocked::new();
        for t in [Duration::ZERO, Duration::from_nanos(1)] {
            let wrong = b.while_held(|| timed(t, Duration::from_millis(500), |c| b.waits(t, c)));
            assert!(wrong.is_empty(), "{t:?}: {wrong:?}");
            let rt = common::current_thread();
            let wrong = rt.block_on(async {
                let mut wrong = Vec::new();
                let mut last = Instant::now();
                let mut check = |name: &'static str, ok: bool| {
                    let took = last.elapsed();
                    if !ok || took > Duration::from_millis(500) {
                        wrong.push(format!("{name}: {ok} after {took:?}"));
                    }
                    last = Instant::now();
                };
                b.async_waits(t, &mut check).await;
                wrong
            });
            assert!(wrong.is_empty(), "async {t:?}: {wrong:?}");
        }
    });
}

/// Timeouts at and past the end of the monotonic clock: deadlines whose
/// seconds are `i64::MAX` or just short of it (as far as the kernel's
/// timers go), ones whose nanoseconds carry them past it, and durations
/// no clock holds.
fn edge_timeouts() -> Vec<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let left = i64::MAX as u64 - now.tv_sec as u64;
    vec![
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::new(u64::MAX, 999_999_999),
        Duration::from_secs(i64::MAX as u64),
        Duration::new(left, 999_999_999),
        Duration::new(left - 1, 999_999_999),
        Duration::new(left - 1, 0),
        Duration::new(left - 2, 0),
        Duration::from_secs(left / 2),
    ]
}

/// The waits of `o` that can finish at once, each given `t`; what went
/// wrong.
fn ready_waits(o: &Objects, t: Duration) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut check = |what: &str, ok: bool| {
        if !ok {
            wrong.push(format!("{what} with {t:?}"));
        }
    };
    check("Barrier::wait_timeout", o.one_party.wait_timeout(t).is_ok());
    check("Event::wait_timeout", o.event.wait_timeout(t));
    check("Lock::lock_timeout", o.lock.lock_timeout(t).is_ok());
    check("RLock::lock_timeout", o.rlock.lock_timeout(t).is_ok());
    check("Value::lock_timeout", o.value.lock_timeout(t).is_ok());
    check("Semaphore::acquire_timeout", o.sem.acquire_timeout(t));
    check(
        "Semaphore::permit_timeout",
        o.sem.permit_timeout(t).is_some(),
    );
    check(
        "BoundedSemaphore::acquire_timeout",
        o.bounded.acquire_timeout(t),
    );
    check("BoundedSemaphore::release", o.bounded.release().is_ok());
    check(
        "Condition::wait_for",
        matches!(o.cond.lock().unwrap().wait_for(|| true, Some(t)), Ok(true)),
    );
    check("Queue::put_timeout", o.queue.put_timeout(5, t).is_ok());
    check(
        "Queue::get_timeout",
        matches!(o.queue.get_timeout(t), Ok(5)),
    );
    let rt = common::current_thread();
    let more = rt.block_on(async {
        vec![
            (
                "Barrier::wait_timeout_async",
                o.one_party.wait_timeout_async(t).await.is_ok(),
            ),
            (
                "Event::wait_timeout_async",
                matches!(o.event.wait_timeout_async(t).await, Ok(true)),
            ),
            (
                "Semaphore::acquire_timeout_async",
                matches!(o.sem.acquire_timeout_async(t).await, Ok(true)),
            ),
            (
                "Condition::wait_for_async",
                matches!(o.cond.wait_for_async(|| true, Some(t)).await, Ok(true)),
            ),
            (
                "Queue::put_timeout_async",
                o.queue.put_timeout_async(6, t).await.is_ok(),
            ),
            (
                "Queue::get_timeout_async",
                matches!(o.queue.get_timeout_async(t).await, Ok(6)),
            ),
        ]
    });
    for (what, ok) in more {
        check(what, ok);
    }
    wrong
}

#[test]
fn waits_that_can_finish_at_once_do_with_timeouts_at_the_end_of_the_clock() {
    watchdog("ready waits at the clock's end", LIMIT, || {
        let o = Objects::new();
        for t in edge_timeouts() {
            let wrong = ready_waits(&o, t);
            assert!(wrong.is_empty(), "{wrong:?}");
        }
    });
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Whether thread `tid` of this process sleeps in the kernel (a futex
/// wait for a blocking wait; `epoll_wait` for a runtime's thread).
fn thread_sleeps(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, f)| f.trim_start().starts_with('S'))
    })
}

/// Runs `wait` (given `t`) on a thread of its own; once that thread
/// sleeps in the kernel, lets it sleep 150 ms, then runs `satisfy`.
/// `wait` must return true, and its thread must have slept rather than
/// spun meanwhile.
fn sleeps_until_satisfied(
    what: &str,
    t: Duration,
    wait: impl FnOnce(Duration) -> bool + Send,
    satisfy: impl FnOnce(),
) {
    thread::scope(|s| {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let w = s.spawn(move || {
            tid_tx.send(common::procfs::gettid()).unwrap();
            let cpu = thread_cpu();
            let ok = wait(t);
            (ok, thread_cpu() - cpu)
        });
        let tid = tid_rx.recv().unwrap();
        let asleep = common::wait_until(Duration::from_secs(10), || thread_sleeps(tid));
        assert!(asleep, "{what} with {t:?}: never slept");
        thread::sleep(Duration::from_millis(150));
        satisfy();
        let (ok, cpu) = w.join().unwrap();
        assert!(ok, "{what} with {t:?}: failed");
        assert!(
            cpu < Duration::from_millis(60),
            "{what} with {t:?}: used {cpu:?} of CPU while it waited"
        );
    });
}

#[test]
fn waits_sleep_until_satisfied_with_timeouts_at_the_end_of_the_clock() {
    watchdog("sleeping waits at the clock's end", LIMIT * 2, || {
        for t in edge_timeouts() {
            let event = Event::new().unwrap();
            sleeps_until_satisfied(
                "Event::wait_timeout",
                t,
                |t| event.wait_timeout(t),
                || event.set(),
            );
            let sem = Semaphore::new(0).unwrap();
            sleeps_until_satisfied(
                "Semaphore::acquire_timeout",
                t,
                |t| sem.acquire_timeout(t),
                || sem.release().unwrap(),
            );
            let lock = Lock::new().unwrap();
            let g = lock.lock().unwrap();
            sleeps_until_satisfied(
                "Lock::lock_timeout",
                t,
                |t| lock.lock_timeout(t).is_ok(),
                || drop(g),
            );
            let rlock = RLock::new().unwrap();
            let g = rlock.lock().unwrap();
            sleeps_until_satisfied(
                "RLock::lock_timeout",
                t,
                |t| rlock.lock_timeout(t).is_ok(),
                || drop(g),
            );
            let barrier = Barrier::new(2).unwrap();
            sleeps_until_satisfied(
                "Barrier::wait_timeout",
                t,
                |t| barrier.wait_timeout(t).is_ok(),
                || assert!(barrier.wait_timeout(t).is_ok()),
            );
            let cond = Condition::new().unwrap();
            let flag = AtomicBool::new(false);
            sleeps_until_satisfied(
                "Condition::wait_for",
                t,
                |t| {
                    let mut g = cond.lock().unwrap();
                    g.wait_for(|| flag.load(Ordering::SeqCst), Some(t)).unwrap()
                },
                || {
                    let g = cond.lock().unwrap();
                    flag.store(true, Ordering::SeqCst);
                    g.notify_all();
                },
            );
            let queue = Queue::<u32>::new().unwrap();
            sleeps_until_satisfied(
                "Queue::get_timeout",
                t,
                |t| matches!(queue.get_timeout(t), Ok(9)),
                || queue.put(9).unwrap(),
            );
            let event = Event::new().unwrap();
            sleeps_until_satisfied(
                "Event::wait_timeout_async",
                t,
                |t| {
                    let rt = common::current_thread();
                    matches!(rt.block_on(event.wait_timeout_async(t)), Ok(true))
                },
                || event.set(),
            );
        }
    });
}

#[test]
fn barrier_default_timeouts_at_the_limits() {
    watchdog("barrier default timeouts", LIMIT, || {
        for t in [Duration::ZERO, Duration::from_nanos(1)] {
            let alone = Barrier::with_timeout(2, t).unwrap();
            let start = Instant::now();
            assert!(matches!(alone.wait(), Err(Error::BrokenBarrier)), "{t:?}");
            assert!(start.elapsed() < Duration::from_secs(1), "{t:?}");
            assert!(alone.is_broken());
        }
        for t in edge_timeouts() {
            let barrier = Barrier::with_timeout(2, t).unwrap();
            sleeps_until_satisfied(
                "Barrier::wait with a default timeout",
                t,
                |_| barrier.wait().is_ok(),
                || assert!(barrier.wait().is_ok()),
            );
        }
    });
}

/// A thread-local value whose destructor forks a child (a process start).
struct ForksOnDrop(bool);

impl Drop for ForksOnDrop {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: the child only calls `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for the child just forked.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            FORKED.store(pid > 0 && status == 0, Ordering::SeqCst);
        }
    }
}

static FORKED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static FORKS_ON_DROP: RefCell<ForksOnDrop> = const { RefCell::new(ForksOnDrop(false)) };
}

/// The fork handlers keep what they hold across a fork in statics: a
/// thread-local, which a thread that forked before has destroyed by then,
/// made the handler panic, and the process abort.
#[test]
fn a_fork_in_a_thread_local_destructor_after_a_fork_of_the_thread() {
    in_child("a fork in a TLS destructor", || {
        thread::spawn(|| {
            FORKS_ON_DROP.with(|f| f.borrow_mut().0 = true);
            // A first fork by the thread (the crate's fork handlers run,
            // and keep what they hold across it in thread-locals).
            let value = Value::new(1u32).unwrap();
            let p = static_child(move || assert_eq!(value.get().unwrap(), 1));
            assert_eq!(join(&p, LIMIT), 0);
        })
        .join()
        .unwrap();
        assert!(FORKED.load(Ordering::SeqCst), "the destructor's fork");
    });
}

/// A thread-local value whose destructor sleeps in waits that another
/// thread ends: a barrier's second party, an event's set, a notify.
struct SleepsOnDrop(Option<(Barrier, Event, Condition, RawValue<u32>)>);

impl Drop for SleepsOnDrop {
    fn drop(&mut self) {
        if let Some((barrier, event, cond, flag)) = self.0.take() {
            let mut wrong = Vec::new();
            if barrier.wait_timeout(LIMIT).is_err() {
                wrong.push("Barrier::wait_timeout".to_owned());
            }
            if !event.wait_timeout(LIMIT) {
                wrong.push("Event::wait_timeout".to_owned());
            }
            let mut g = cond.lock().unwrap();
            let seen = g.wait_for(|| flag.atomic().load(Ordering::SeqCst) == 1, Some(LIMIT));
            if !matches!(seen, Ok(true)) {
                wrong.push(format!("Condition::wait_for: {seen:?}"));
            }
            drop(g);
            report(wrong);
        }
    }
}

thread_local! {
    static SLEEPS_ON_DROP: RefCell<SleepsOnDrop> = const { RefCell::new(SleepsOnDrop(None)) };
}

#[test]
fn waits_in_a_thread_local_destructor_sleep_until_another_thread_ends_them() {
    in_child("sleeping waits in a TLS destructor", || {
        let barrier = Barrier::new(2).unwrap();
        let event = Event::new().unwrap();
        let cond = Condition::new().unwrap();
        let flag = RawValue::<u32>::new(0).unwrap();
        let theirs = (barrier.clone(), event.clone(), cond.clone(), flag.clone());
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let t = thread::spawn(move || {
            SLEEPS_ON_DROP.with(|s| s.borrow_mut().0 = Some(theirs));
            // The thread's own waits first, so that what they use is
            // destroyed before the destructor runs.
            let o = Objects::new();
            assert!(run_waits(&o).is_empty());
            tid_tx.send(common::procfs::gettid()).unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        let asleep = || common::wait_until(LIMIT, || thread_sleeps(tid));
        assert!(barrier.wait_timeout(LIMIT).is_ok());
        assert!(asleep(), "never slept on the event");
        event.set();
        // Asleep on the condition: its notify is what wakes it.
        assert!(common::wait_until(LIMIT, || cond.lock().is_ok_and(|g| {
            drop(g);
            thread_sleeps(tid)
        })));
        let g = cond.lock().unwrap();
        flag.atomic().store(1, Ordering::SeqCst);
        g.notify_all();
        drop(g);
        t.join().unwrap();
        assert_ran_clean("sleeping waits in a TLS destructor");
    });
}
