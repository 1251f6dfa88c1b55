//! Adversarial cases against the shared layer under signals, exhausted
//! resources and extreme arguments: waits and allocations made while a
//! storm of signals (a handler installed without `SA_RESTART`) hits the
//! waiting thread, and primitives made or used at the edges of what
//! they take.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::segment::Segment;

const LIMIT: Duration = Duration::from_secs(60);

/// How many signals the storm's handler saw.
static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Installs a handler for `SIGALRM` without `SA_RESTART`: every system
/// call it interrupts fails with `EINTR` (or restarts, where the kernel
/// restarts it whatever the flag).
fn install_handler() {
    // SAFETY: a sigaction is plain data, for which zeroes are valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // Its handler only touches an atomic, which is async-signal-safe.
    action.sa_sigaction = count_signal as *const () as usize;
    action.sa_flags = 0;
    // SAFETY: a valid sigset_t to empty.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: a valid sigaction; the old one is not wanted.
    let installed = unsafe { libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) };
    assert_eq!(installed, 0);
}

/// Arms (or, with zero, disarms) `ITIMER_REAL` to fire every `every`.
fn interval_timer(every: Duration) {
    let tv = libc::timeval {
        tv_sec: every.as_secs() as libc::time_t,
        tv_usec: every.subsec_micros() as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: a valid itimerval; the old value is not wanted.
    let armed = unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    assert_eq!(armed, 0);
}

/// Runs `f` while an interval timer sends this process a `SIGALRM`
/// every `every` (the kernel gives a process's signal to its main thread
/// first: run this on the main thread of a forked child); returns what
/// `f` returned and how many signals were handled meanwhile.
fn in_a_storm<R>(every: Duration, f: impl FnOnce() -> R) -> (R, u64) {
    install_handler();
    let before = SIGNALS.load(Ordering::Relaxed);
    interval_timer(every);
    let r = f();
    interval_timer(Duration::ZERO);
    (r, SIGNALS.load(Ordering::Relaxed) - before)
}

/// Runs `f` in a forked child (a handler installed there touches no
/// other test) and asserts that it exits with 0 within `limit`.
fn in_child(what: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    watchdog(what, limit + Duration::from_secs(10), || {
        let p = common::static_child(f);
        assert_eq!(common::join(&p, limit), 0, "{what}");
    });
}

/// Reserving a large segment's memory (`posix_fallocate`) while signals
/// keep coming must finish: a tmpfs that gave up a reservation that a
/// signal interrupted, taking back what it had reserved, would have the
/// retry start again from nothing, for ever once a reservation takes
/// longer than the time between two signals. (The kernel this was
/// written on, Linux 6.18, finishes the reservation: no `EINTR` seen.)
#[test]
fn a_large_segment_is_made_under_a_storm_of_signals() {
    in_child("a segment made in a storm", LIMIT, || {
        let size = 64 << 20;
        let (seg, signals) = in_a_storm(Duration::from_micros(50), || {
            let start = Instant::now();
            let seg = Segment::anonymous(size);
            (seg, start.elapsed())
        });
        let (seg, took) = seg;
        let seg = seg.expect("an anonymous segment of 64 MiB");
        assert_eq!(seg.len(), size);
        eprintln!("made in {took:?}, {signals} signals");
    });
}

/// How long each timed wait of the storm tests is given.
const TIMEOUT: Duration = Duration::from_millis(30);
/// How late a timed wait may end: this machine's scheduling and a
/// signal's handler, never a wait started over.
const LATE: Duration = Duration::from_millis(400);

/// Runs `wait` (which must time out, and says whether it did) in a storm
/// of signals and checks that it neither ended before `TIMEOUT` nor long
/// after it.
fn times_out_in_a_storm(what: &str, wait: impl FnOnce() -> Result<(), String>) {
    let ((outcome, took), signals) = in_a_storm(Duration::from_micros(50), || {
        let start = Instant::now();
        let outcome = wait();
        (outcome, start.elapsed())
    });
    if let Err(e) = outcome {
        panic!("{what}: {e} after {took:?} ({signals} signals)");
    }
    assert!(
        took >= TIMEOUT,
        "{what} ended early: {took:?} ({signals} signals)"
    );
    assert!(
        took < TIMEOUT + LATE,
        "{what} ended late: {took:?} ({signals} signals)"
    );
}

/// Runs `hold` on another thread, which takes some lock, says so on its
/// first channel and keeps the lock until its second one ends; runs `f`
/// meanwhile (even a panic of `f` ends the second channel).
fn while_held<R>(hold: impl FnOnce(Sender<()>, Receiver<()>) + Send, f: impl FnOnce() -> R) -> R {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(move |s| {
        s.spawn(move || hold(held_tx, stop_rx));
        held_rx.recv().unwrap();
        let r = f();
        drop(stop_tx);
        r
    })
}

fn expect_timeout<T: std::fmt::Debug>(r: multiproc::Result<T>) -> Result<(), String> {
    match r {
        Err(multiproc::Error::Timeout) => Ok(()),
        other => Err(format!("not a timeout: {other:?}")),
    }
}

/// Every timed wait of the shared layer, in a storm of signals: each
/// times out, after its timeout and not long after.
#[test]
fn timed_waits_time_out_on_time_in_a_storm_of_signals() {
    use multiproc::{Barrier, Condition, Event, Lock, Queue, RLock, Semaphore, Value};
    in_child("timed waits in a storm", LIMIT, || {
        let lock = Lock::new().unwrap();
        while_held(
            |held, stop| {
                let g = lock.lock().unwrap();
                held.send(()).unwrap();
                let _ = stop.recv();
                drop(g);
            },
            || {
                times_out_in_a_storm("Lock::lock_timeout", || match lock.lock_timeout(TIMEOUT) {
                    Err(multiproc::LockError::Timeout) => Ok(()),
                    other => Err(format!("{:?}", other.map(|_| ()))),
                })
            },
        );
        let rlock = RLock::new().unwrap();
        while_held(
            |held, stop| {
                let g = rlock.lock().unwrap();
                held.send(()).unwrap();
                let _ = stop.recv();
                drop(g);
            },
            || {
                times_out_in_a_storm("RLock::lock_timeout", || {
                    match rlock.lock_timeout(TIMEOUT) {
                        Err(multiproc::LockError::Timeout) => Ok(()),
                        other => Err(format!("{:?}", other.map(|_| ()))),
                    }
                })
            },
        );
        let value = Value::new(0u64).unwrap();
        while_held(
            |held, stop| {
                let g = value.lock().unwrap();
                held.send(()).unwrap();
                let _ = stop.recv();
                drop(g);
            },
            || {
                times_out_in_a_storm("Value::lock_timeout", || {
                    match value.lock_timeout(TIMEOUT) {
                        Err(multiproc::LockError::Timeout) => Ok(()),
                        other => Err(format!("{:?}", other.map(|_| ()))),
                    }
                })
            },
        );
        let sem = Semaphore::new(0).unwrap();
        times_out_in_a_storm("Semaphore::acquire_timeout", || {
            if sem.acquire_timeout(TIMEOUT) {
                Err("acquired".into())
            } else {
                Ok(())
            }
        });
        let event = Event::new().unwrap();
        times_out_in_a_storm("Event::wait_timeout", || {
            if event.wait_timeout(TIMEOUT) {
                Err("set".into())
            } else {
                Ok(())
            }
        });
        let cond = Condition::new().unwrap();
        times_out_in_a_storm("Condition::wait_timeout", || {
            let mut g = cond.lock().unwrap();
            match g.wait_timeout(TIMEOUT) {
                Ok(false) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        times_out_in_a_storm("Condition::wait_for", || {
            let mut g = cond.lock().unwrap();
            match g.wait_for(|| false, Some(TIMEOUT)) {
                Ok(false) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let barrier = Barrier::new(2).unwrap();
        times_out_in_a_storm("Barrier::wait_timeout", || {
            match barrier.wait_timeout(TIMEOUT) {
                Err(multiproc::Error::BrokenBarrier) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let queue = Queue::<u64>::bounded(1).unwrap();
        times_out_in_a_storm("Queue::get_timeout", || {
            expect_timeout(queue.get_timeout(TIMEOUT))
        });
        queue.put(1).unwrap();
        times_out_in_a_storm("Queue::put_timeout", || {
            match queue.put_timeout(2, TIMEOUT) {
                Err(multiproc::queue::PutError::Timeout(2)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let joinable = multiproc::JoinableQueue::<u64>::new().unwrap();
        joinable.put(1).unwrap();
        times_out_in_a_storm("JoinableQueue::join_timeout", || {
            expect_timeout(joinable.join_timeout(TIMEOUT))
        });
        eprintln!("signals handled: {}", SIGNALS.load(Ordering::Relaxed));
    });
}

/// Runs `f` while another thread sends a `SIGALRM` to every other thread
/// of this process (the async waits' waiter threads too) every `every`.
fn every_thread_in_a_storm<R>(every: Duration, f: impl FnOnce() -> R) -> R {
    install_handler();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let pid = std::process::id() as libc::pid_t;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: gettid cannot fail.
            let me = unsafe { libc::gettid() };
            while !stop.load(Ordering::Relaxed) {
                for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                    let tid: libc::pid_t = task.file_name().to_str().unwrap().parse().unwrap();
                    if tid != me {
                        // SAFETY: signals a thread of this process, which
                        // has a handler for it.
                        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGALRM) };
                    }
                }
                std::thread::sleep(every);
            }
        });
        let r = f();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// The async timed waits, in a storm of signals that reaches the waiter
/// thread too: each times out, after its timeout and not long after.
#[test]
fn async_timed_waits_time_out_on_time_in_a_storm_of_signals() {
    use multiproc::{Barrier, Condition, Event, Queue, Semaphore};
    in_child("async timed waits in a storm", LIMIT, || {
        every_thread_in_a_storm(Duration::from_micros(50), || {
            let rt = common::current_thread();
            let sem = Semaphore::new(0).unwrap();
            let event = Event::new().unwrap();
            let cond = Condition::new().unwrap();
            let barrier = Barrier::new(2).unwrap();
            let queue = Queue::<u64>::bounded(1).unwrap();
            let joinable = multiproc::JoinableQueue::<u64>::new().unwrap();
            joinable.put(1).unwrap();
            let check = |what: &str, r: Result<(), String>, took: Duration| {
                if let Err(e) = r {
                    panic!("{what}: {e} after {took:?}");
                }
                assert!(took >= TIMEOUT, "{what} ended early: {took:?}");
                assert!(took < TIMEOUT + LATE, "{what} ended late: {took:?}");
            };
            macro_rules! timed {
                ($what:expr, $fut:expr, $ok:pat) => {{
                    let start = Instant::now();
                    let r = rt.block_on($fut);
                    let took = start.elapsed();
                    let r = match r {
                        $ok => Ok(()),
                        other => Err(format!("{other:?}")),
                    };
                    check($what, r, took);
                }};
            }
            timed!(
                "Semaphore::acquire_timeout_async",
                sem.acquire_timeout_async(TIMEOUT),
                Ok(false)
            );
            timed!(
                "Event::wait_timeout_async",
                event.wait_timeout_async(TIMEOUT),
                Ok(false)
            );
            timed!(
                "Condition::wait_for_async",
                cond.wait_for_async(|| false, Some(TIMEOUT)),
                Ok(false)
            );
            timed!(
                "Barrier::wait_timeout_async",
                barrier.wait_timeout_async(TIMEOUT),
                Err(multiproc::Error::BrokenBarrier)
            );
            timed!(
                "Queue::get_timeout_async",
                queue.get_timeout_async(TIMEOUT),
                Err(multiproc::Error::Timeout)
            );
            queue.put(1).unwrap();
            timed!(
                "Queue::put_timeout_async",
                queue.put_timeout_async(2, TIMEOUT),
                Err(multiproc::queue::PutError::Timeout(2))
            );
            timed!(
                "JoinableQueue::join_timeout_async",
                joinable.join_timeout_async(TIMEOUT),
                Err(multiproc::Error::Timeout)
            );
        });
        eprintln!("signals handled: {}", SIGNALS.load(Ordering::Relaxed));
    });
}

/// The least of 20 runs of `f`: what it costs at best, whatever else the
/// machine does meanwhile.
fn fastest(mut f: impl FnMut()) -> Duration {
    (0..20)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

/// A wait whose timeout is zero (Python's `acquire(timeout=0)`, a poll)
/// returns at once when it cannot succeed: it slept until its deadline
/// plus the thread's timer slack (the kernel's leeway on a timed sleep,
/// 50 µs by default; raised here to 20 ms so that the sleep cannot hide
/// in the machine's noise), as if the deadline were still ahead.
#[test]
fn a_zero_timeout_never_sleeps() {
    use multiproc::{Condition, Event, Lock, Queue, RLock, Semaphore, Value};
    in_child("zero timeouts", LIMIT, || {
        // SAFETY: changes this thread's timer slack only.
        let slack = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 20_000_000u64) };
        assert_eq!(slack, 0);
        let at_once = Duration::from_millis(2);
        let check = |what: &str, took: Duration| {
            assert!(took < at_once, "{what} with a zero timeout took {took:?}");
        };
        let sem = Semaphore::new(0).unwrap();
        check(
            "Semaphore::acquire_timeout",
            fastest(|| assert!(!sem.acquire_timeout(Duration::ZERO))),
        );
        let event = Event::new().unwrap();
        check(
            "Event::wait_timeout",
            fastest(|| assert!(!event.wait_timeout(Duration::ZERO))),
        );
        let cond = Condition::new().unwrap();
        check(
            "Condition::wait_timeout",
            fastest(|| {
                let mut g = cond.lock().unwrap();
                assert!(!g.wait_timeout(Duration::ZERO).unwrap());
            }),
        );
        let queue = Queue::<u8>::bounded(1).unwrap();
        check(
            "Queue::get_timeout",
            fastest(|| assert!(queue.get_timeout(Duration::ZERO).is_err())),
        );
        queue.put(1).unwrap();
        check(
            "Queue::put_timeout",
            fastest(|| assert!(queue.put_timeout(2, Duration::ZERO).is_err())),
        );
        // The async forms, which also spun before they looked at the
        // deadline; and a zero timeout still takes what is there.
        let rt = common::current_thread();
        check(
            "Semaphore::acquire_timeout_async",
            fastest(|| {
                assert!(!rt
                    .block_on(sem.acquire_timeout_async(Duration::ZERO))
                    .unwrap())
            }),
        );
        check(
            "Event::wait_timeout_async",
            fastest(|| {
                assert!(!rt
                    .block_on(event.wait_timeout_async(Duration::ZERO))
                    .unwrap())
            }),
        );
        sem.release().unwrap();
        assert!(sem.acquire_timeout(Duration::ZERO));
        sem.release().unwrap();
        assert!(rt
            .block_on(sem.acquire_timeout_async(Duration::ZERO))
            .unwrap());
        event.set();
        assert!(event.wait_timeout(Duration::ZERO));
        assert!(rt
            .block_on(event.wait_timeout_async(Duration::ZERO))
            .unwrap());
        assert_eq!(queue.get_timeout(Duration::ZERO).unwrap(), 1);
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        let value = Value::new(0u8).unwrap();
        while_held(
            |held, stop| {
                let guards = (
                    lock.lock().unwrap(),
                    rlock.lock().unwrap(),
                    value.lock().unwrap(),
                );
                held.send(()).unwrap();
                let _ = stop.recv();
                drop(guards);
            },
            || {
                check(
                    "Lock::lock_timeout",
                    fastest(|| assert!(lock.lock_timeout(Duration::ZERO).is_err())),
                );
                check(
                    "RLock::lock_timeout",
                    fastest(|| assert!(rlock.lock_timeout(Duration::ZERO).is_err())),
                );
                check(
                    "Value::lock_timeout",
                    fastest(|| assert!(value.lock_timeout(Duration::ZERO).is_err())),
                );
            },
        );
    });
}

/// Runs `wait` (untimed) on this thread in a storm of signals, and
/// `finish` on another thread once this one has slept on a futex (or
/// after a while: a wait that spins ends anyway); `wait` must return
/// what it waited for.
fn completes_in_a_storm(what: &str, wait: impl FnOnce() -> bool, finish: impl FnOnce() + Send) {
    let me = common::procfs::gettid();
    let (done, signals) = in_a_storm(Duration::from_micros(50), || {
        std::thread::scope(|s| {
            s.spawn(move || {
                common::wait_until(Duration::from_secs(2), || {
                    common::procfs::thread_blocked_in_futex(std::process::id(), me)
                });
                finish();
            });
            wait()
        })
    });
    assert!(
        done,
        "{what} ended without what it waited for ({signals} signals)"
    );
}

/// Every untimed wait of the shared layer, in a storm of signals: none
/// ends early or fails, and each ends once what it waits for happens.
#[test]
fn untimed_waits_complete_in_a_storm_of_signals() {
    use multiproc::{Barrier, Condition, Event, Lock, Queue, Semaphore};
    in_child("untimed waits in a storm", LIMIT, || {
        let sem = Semaphore::new(0).unwrap();
        completes_in_a_storm(
            "Semaphore::acquire",
            || {
                sem.acquire();
                true
            },
            || sem.release().unwrap(),
        );
        let event = Event::new().unwrap();
        completes_in_a_storm(
            "Event::wait",
            || {
                event.wait();
                event.is_set()
            },
            || event.set(),
        );
        let cond = Condition::new().unwrap();
        let flag = multiproc::RawValue::new(0u32).unwrap();
        completes_in_a_storm(
            "Condition::wait_for",
            || {
                let mut g = cond.lock().unwrap();
                g.wait_for(|| flag.get() == 1, None).unwrap()
            },
            || {
                let g = cond.lock().unwrap();
                flag.set(1);
                g.notify_all();
            },
        );
        let barrier = Barrier::new(2).unwrap();
        completes_in_a_storm(
            "Barrier::wait",
            || barrier.wait().is_ok(),
            || {
                barrier.wait().unwrap();
            },
        );
        let queue = Queue::<u64>::bounded(1).unwrap();
        completes_in_a_storm(
            "Queue::get",
            || queue.get().unwrap() == 7,
            || queue.put(7).unwrap(),
        );
        queue.put(1).unwrap();
        completes_in_a_storm(
            "Queue::put",
            || queue.put(2).is_ok(),
            || assert_eq!(queue.get().unwrap(), 1),
        );
        assert_eq!(queue.get().unwrap(), 2);
        let joinable = multiproc::JoinableQueue::<u64>::new().unwrap();
        joinable.put(1).unwrap();
        completes_in_a_storm(
            "JoinableQueue::join",
            || joinable.join().is_ok(),
            || {
                joinable.get().unwrap();
                joinable.task_done().unwrap();
            },
        );
        let lock = Lock::new().unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let lock = &lock;
            s.spawn(move || {
                let g = lock.lock().unwrap();
                held_tx.send(()).unwrap();
                let _ = go_rx.recv();
                drop(g);
            });
            held_rx.recv().unwrap();
            completes_in_a_storm("Lock::lock", || lock.lock().is_ok(), move || drop(go_tx));
        });
        let rt = common::current_thread();
        let event = Event::new().unwrap();
        completes_in_a_storm(
            "Event::wait_async",
            || rt.block_on(event.wait_async()).is_ok() && event.is_set(),
            || event.set(),
        );
        let sem = Semaphore::new(0).unwrap();
        completes_in_a_storm(
            "Semaphore::acquire_async",
            || rt.block_on(sem.acquire_async()).is_ok(),
            || sem.release().unwrap(),
        );
        eprintln!("signals handled: {}", SIGNALS.load(Ordering::Relaxed));
    });
}

/// A `/dev/shm` out of inodes (a tmpfs mounted with `nr_inodes`, or one
/// that holds very many files): making a named object there is
/// `Error::NoSpace`, as when it is out of bytes, not an I/O error of
/// another kind, and leaves no file behind. (The temporary file takes
/// an inode, and so does the link that publishes it under its name.)
#[test]
fn a_dev_shm_out_of_inodes_is_no_space() {
    use multiproc::{Error, Queue, Value};
    in_child("/dev/shm out of inodes", LIMIT, || {
        if !common::private_dev_shm(None) {
            eprintln!("skipped: cannot mount a private /dev/shm here (needs CAP_SYS_ADMIN)");
            return;
        }
        // The root directory takes one inode: with 1, the temporary file
        // finds none; with 2, its link finds none; with 3, one object fits.
        for inodes in [1, 2, 3] {
            let options = std::ffi::CString::new(format!("nr_inodes={inodes},size=1m")).unwrap();
            // SAFETY: valid C strings; this process's own mount namespace.
            let mounted = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/dev/shm".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                )
            };
            assert_eq!(mounted, 0, "{}", std::io::Error::last_os_error());
            let first = Segment::create("first", 100);
            assert_eq!(first.is_ok(), inodes == 3, "{inodes} inodes: {first:?}");
            let no_space = |what: &str, e: Error| {
                assert!(
                    matches!(e, Error::NoSpace { .. }),
                    "{inodes} inodes, {what}: {e:?}"
                );
            };
            no_space("Segment::create", Segment::create("seg", 100).unwrap_err());
            no_space("Value::create", Value::create("value", 1u64).unwrap_err());
            no_space(
                "Queue::create",
                Queue::<u64>::create("queue", 0, 4096).unwrap_err(),
            );
            let left: Vec<_> = std::fs::read_dir("/dev/shm")
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            let expected: &[&str] = if inodes == 3 {
                &["multiproc.first"]
            } else {
                &[]
            };
            assert_eq!(left, expected, "{inodes} inodes");
            drop(first);
            // SAFETY: unmounts the tmpfs mounted above, in this process's
            // own mount namespace.
            let unmounted = unsafe { libc::umount2(c"/dev/shm".as_ptr(), libc::MNT_DETACH) };
            assert_eq!(unmounted, 0);
        }
    });
}

/// Under a file size limit (`RLIMIT_FSIZE`, here 64 KiB) and the default
/// action of `SIGXFSZ` (terminate; Python ignores the signal, Rust does
/// not), a segment larger than the limit is `Error::NoSpace`: its
/// reservation sent the thread a `SIGXFSZ` that killed the process. A
/// named one leaves no file behind, and segments within the limit are
/// still made.
#[test]
fn a_segment_past_the_file_size_limit_is_an_error_not_a_signal() {
    use multiproc::{Array, Error, Queue};
    in_child("segments past RLIMIT_FSIZE", LIMIT, || {
        // SAFETY: sets the default action of one signal in this child.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_DFL) };
        let limit = libc::rlimit {
            rlim_cur: 64 << 10,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: lowers this child's own soft limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
        let no_space = |what: &str, e: Error| {
            assert!(matches!(e, Error::NoSpace { .. }), "{what}: {e:?}");
        };
        no_space(
            "Segment::anonymous",
            Segment::anonymous(1 << 20).unwrap_err(),
        );
        no_space("Array::new", Array::<u8>::new(1 << 20).unwrap_err());
        no_space("Queue::new", Queue::<u64>::new().unwrap_err());
        let name = format!("fsize-{}", std::process::id());
        no_space(
            "Segment::create",
            Segment::create(&name, 1 << 20).unwrap_err(),
        );
        assert!(matches!(Segment::open(&name), Err(Error::NotFound(_))));
        let tmp = std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(&format!("~tmp-{}-", std::process::id())))
            .count();
        assert_eq!(tmp, 0, "a temporary file left behind");
        let small = Segment::anonymous(60 << 10).unwrap();
        assert_eq!(small.len(), 60 << 10);
        let named = Segment::create(&name, 1000).unwrap();
        drop(named);
        Segment::unlink(&name).unwrap();
    });
}
