//! A sweep of two kinds of breakage over the public API:
//!
//! - the timed calls that `timeouts.rs` does not reach (batch queue calls,
//!   the `lock_recovering_timeout` forms, the async forms, arrays) at the
//!   limits of their timeout, and waits of `Duration::MAX` ended by
//!   another process;
//! - a child forked while another thread of its parent is inside the
//!   crate (allocating in the arena, starting processes, in a scope, in an
//!   async wait, mid queue call, mid manager round trip), which must never
//!   find a lock of the crate's copied in its held state.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use common::{join, watchdog};
use multiproc::{
    Array, Barrier, Condition, Error, Event, JoinableQueue, Lock, LockError, Pipe, Queue, RLock,
    RecoverableLockError, Semaphore, Value,
};

const LIMIT: Duration = Duration::from_secs(90);
/// How long a forked child may take before it counts as hung.
const CHILD_LIMIT: Duration = Duration::from_secs(20);

/// Timeouts that end before anything happens.
const SHORT: [Duration; 2] = [Duration::ZERO, Duration::from_nanos(1)];

/// Every kind of timeout: zero, tiny, and too large for the clock (or
/// representable but centuries long).
const ALL: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::MAX,
    Duration::from_secs(u64::MAX),
    Duration::from_secs(i64::MAX as u64),
    Duration::new(i64::MAX as u64 / 4, 999_999_999),
];

/// `f` times out with each short timeout, promptly.
fn times_out(what: &str, mut f: impl FnMut(Duration) -> bool) {
    for t in SHORT {
        let start = Instant::now();
        assert!(f(t), "{what} with {t:?} did not time out");
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{what} with {t:?} took {took:?}"
        );
    }
}

#[test]
fn batch_queue_calls_at_every_limit() {
    watchdog("batch queue calls", LIMIT, || {
        let q = Queue::<u32>::bounded(2).unwrap();
        times_out("Queue::get_many_timeout", |t| {
            matches!(q.get_many_timeout(4, t), Err(Error::Timeout))
        });
        q.put_many([1, 2]).unwrap();
        times_out("Queue::put_many_timeout", |t| {
            q.put_many_timeout([3], t).is_err()
        });
        assert_eq!(q.get_many_timeout(4, Duration::MAX).unwrap(), [1, 2]);
        for t in ALL {
            q.put_many_timeout([5, 6], t).unwrap();
            assert_eq!(q.get_many_timeout(4, t).unwrap(), [5, 6], "{t:?}");
        }
    });
}

#[test]
fn recovering_and_array_locks_at_every_limit() {
    watchdog("recovering locks", LIMIT, || {
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        let value = Value::new(0u64).unwrap();
        let array = Array::from_slice(&[0u32; 4]).unwrap();
        let cond = Condition::new().unwrap();
        for t in ALL {
            drop(lock.lock_recovering_timeout(t).unwrap());
            drop(rlock.lock_recovering_timeout(t).unwrap());
            drop(value.lock_recovering_timeout(t).unwrap());
            drop(array.lock_recovering_timeout(t).unwrap());
            drop(array.lock_timeout(t).unwrap());
            drop(cond.lock_recovering_timeout(t).unwrap());
            drop(cond.lock_timeout(t).unwrap());
        }
        let (taken, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        thread::scope(|s| {
            s.spawn(|| {
                let _g = lock.lock().unwrap();
                let _r = rlock.lock().unwrap();
                let _v = value.lock().unwrap();
                let _a = array.lock().unwrap();
                let _c = cond.lock().unwrap();
                taken.wait();
                release.wait();
            });
            taken.wait();
            let timed_out = |r: Result<(), RecoverableLockError<()>>| {
                matches!(r, Err(RecoverableLockError::Timeout))
            };
            times_out("Lock::lock_recovering_timeout", |t| {
                timed_out(
                    lock.lock_recovering_timeout(t)
                        .map(drop)
                        .map_err(drop_guard),
                )
            });
            times_out("RLock::lock_recovering_timeout", |t| {
                timed_out(
                    rlock
                        .lock_recovering_timeout(t)
                        .map(drop)
                        .map_err(drop_guard),
                )
            });
            times_out("Value::lock_recovering_timeout", |t| {
                timed_out(
                    value
                        .lock_recovering_timeout(t)
                        .map(drop)
                        .map_err(drop_guard),
                )
            });
            times_out("Array::lock_recovering_timeout", |t| {
                timed_out(
                    array
                        .lock_recovering_timeout(t)
                        .map(drop)
                        .map_err(drop_guard),
                )
            });
            times_out("Array::lock_timeout", |t| {
                matches!(array.lock_timeout(t), Err(LockError::Timeout))
            });
            times_out("Condition::lock_recovering_timeout", |t| {
                timed_out(
                    cond.lock_recovering_timeout(t)
                        .map(drop)
                        .map_err(drop_guard),
                )
            });
            release.wait();
            drop(lock.lock_recovering_timeout(Duration::MAX).unwrap());
            drop(array.lock_recovering_timeout(Duration::MAX).unwrap());
            drop(cond.lock_recovering_timeout(Duration::MAX).unwrap());
        });
    });
}

/// A recoverable lock error without its guard.
fn drop_guard<G>(e: RecoverableLockError<G>) -> RecoverableLockError<()> {
    match e {
        RecoverableLockError::OwnerDied(_) => RecoverableLockError::OwnerDied(()),
        RecoverableLockError::NotRecoverable => RecoverableLockError::NotRecoverable,
        RecoverableLockError::Timeout => RecoverableLockError::Timeout,
        RecoverableLockError::WouldBlock => RecoverableLockError::WouldBlock,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn async_timed_calls_at_every_limit() {
    watchdog("async timed calls", LIMIT, || {
        common::current_thread().block_on(async {
            let q = Queue::<u32>::bounded(1).unwrap();
            let jq = JoinableQueue::<u32>::new().unwrap();
            let sem = Semaphore::new(0).unwrap();
            let event = Event::new().unwrap();
            for t in SHORT {
                let start = Instant::now();
                assert!(matches!(q.get_timeout_async(t).await, Err(Error::Timeout)));
                assert!(!sem.acquire_timeout_async(t).await.unwrap());
                assert!(!event.wait_timeout_async(t).await.unwrap());
                jq.put(1).unwrap();
                assert!(matches!(
                    jq.join_timeout_async(t).await,
                    Err(Error::Timeout)
                ));
                jq.get().unwrap();
                jq.task_done().unwrap();
                assert!(matches!(
                    Barrier::new(2).unwrap().wait_timeout_async(t).await,
                    Err(Error::BrokenBarrier)
                ));
                assert!(start.elapsed() < Duration::from_secs(5));
            }
            event.set();
            let one = Barrier::new(1).unwrap();
            for t in ALL {
                q.put(1).unwrap();
                assert_eq!(q.get_timeout_async(t).await.unwrap(), 1);
                sem.release().unwrap();
                assert!(sem.acquire_timeout_async(t).await.unwrap());
                assert!(event.wait_timeout_async(t).await.unwrap());
                jq.join_timeout_async(t).await.unwrap();
                one.wait_timeout_async(t).await.unwrap();
            }
        });
    });
}

/// Waits of every huge timeout in a child, each ended by the parent once
/// the child says (through a pipe) it is about to wait: they return when
/// the object becomes ready, not early and not never.
#[test]
fn huge_waits_in_a_child_end_when_the_parent_acts() {
    watchdog("huge waits across processes", LIMIT, || {
        let event = Event::new().unwrap();
        let sem = Semaphore::new(0).unwrap();
        let q = Queue::<u32>::bounded(1).unwrap();
        let lock = Lock::new().unwrap();
        let barrier = Barrier::with_timeout(2, Duration::MAX).unwrap();
        let (mut mine, mut theirs) = Pipe(true).unwrap();
        multiproc::scope(|s| {
            let guard = lock.lock().unwrap();
            let child = common::child(s, || {
                for t in ALL.into_iter().filter(|t| !t.is_zero() && t.as_nanos() > 1) {
                    theirs.send_bytes(b"event").unwrap();
                    assert!(event.wait_timeout(t), "{t:?}");
                    theirs.send_bytes(b"sem").unwrap();
                    assert!(sem.acquire_timeout(t), "{t:?}");
                    theirs.send_bytes(b"queue").unwrap();
                    assert_eq!(q.get_timeout(t).unwrap(), 9);
                    theirs.send_bytes(b"pipe").unwrap();
                    assert_eq!(theirs.recv_bytes_timeout(t).unwrap(), b"go");
                    theirs.send_bytes(b"barrier").unwrap();
                    barrier.wait().unwrap();
                }
                theirs.send_bytes(b"lock").unwrap();
                drop(lock.lock_timeout(Duration::MAX).unwrap());
                drop(lock.lock_timeout(Duration::from_secs(u64::MAX)).unwrap());
            });
            for _ in ALL.into_iter().filter(|t| !t.is_zero() && t.as_nanos() > 1) {
                assert_eq!(mine.recv_bytes().unwrap(), b"event");
                event.set();
                assert_eq!(mine.recv_bytes().unwrap(), b"sem");
                event.clear();
                sem.release().unwrap();
                assert_eq!(mine.recv_bytes().unwrap(), b"queue");
                q.put(9).unwrap();
                assert_eq!(mine.recv_bytes().unwrap(), b"pipe");
                mine.send_bytes(b"go").unwrap();
                assert_eq!(mine.recv_bytes().unwrap(), b"barrier");
                barrier.wait_timeout(Duration::MAX).unwrap();
            }
            assert_eq!(mine.recv_bytes().unwrap(), b"lock");
            drop(guard);
            assert_eq!(join(&child, CHILD_LIMIT), 0);
        });
    });
}

/// Runs `busy` over and over on another thread while the main thread
/// forks `forks` children, each running `child` (which must finish well
/// within [`CHILD_LIMIT`], or the test fails and the child is killed).
fn fork_while<B, C>(what: &str, forks: usize, busy: B, child: C)
where
    B: Fn() + Sync,
    C: Fn() + Sync,
{
    watchdog(what, LIMIT, || {
        common::while_another_thread_runs(busy, || {
            for _ in 0..forks {
                multiproc::scope(|s| {
                    let p = common::child(s, &child);
                    assert_eq!(join(&p, CHILD_LIMIT), 0, "{what}: a child failed");
                });
            }
        });
    });
}

#[test]
fn fork_while_another_thread_allocates_shared_objects() {
    fork_while(
        "arena",
        40,
        || {
            let v = Value::new(1u64).unwrap();
            let a = Array::from_slice(&[1u8; 300]).unwrap();
            let l = Lock::new().unwrap();
            drop((v, a, l));
        },
        || {
            let v = Value::new(2u64).unwrap();
            v.set(3).unwrap();
            assert_eq!(v.get().unwrap(), 3);
            drop(Event::new().unwrap());
        },
    );
}

#[test]
fn fork_while_another_thread_starts_processes_and_scopes() {
    fork_while(
        "process family",
        30,
        || {
            multiproc::scope(|s| {
                let p = common::child(s, || {});
                join(&p, CHILD_LIMIT);
            });
            let mut p = multiproc::Process::new(|| {});
            p.start().unwrap();
            p.join_timeout(CHILD_LIMIT).unwrap();
        },
        || {
            multiproc::scope(|s| {
                let p = common::child(s, || {});
                assert_eq!(join(&p, CHILD_LIMIT), 0);
            });
            assert!(multiproc::process::active_children().is_empty());
        },
    );
}

#[test]
fn fork_while_another_thread_uses_a_queue() {
    let q = Queue::<Vec<u8>>::with_capacity(0, 1 << 16).unwrap();
    let item = vec![7u8; 3000];
    fork_while(
        "queue",
        40,
        || {
            // Takes all there is, children's items too, so it never fills.
            q.put_many([item.clone(), item.clone()]).unwrap();
            assert!(q.get_many_timeout(64, Duration::ZERO).unwrap().len() >= 2);
            q.put(item.clone()).unwrap();
            assert!(!q
                .get_many_timeout(64, Duration::from_nanos(1))
                .unwrap()
                .is_empty());
        },
        || {
            let own = Queue::<Vec<u8>>::new().unwrap();
            own.put_many([vec![1; 3000], vec![2; 5]]).unwrap();
            assert_eq!(own.get_many(2).unwrap(), [vec![1; 3000], vec![2; 5]]);
            // The parent's queue takes a put from the child; the
            // parent's thread may then take it, so it is not read back.
            q.put_timeout(vec![3], CHILD_LIMIT).unwrap();
        },
    );
}

#[test]
fn fork_while_another_thread_awaits() {
    let event = Event::new().unwrap();
    let sem = Semaphore::new(0).unwrap();
    let childs = Semaphore::new(0).unwrap();
    let rt = common::current_thread();
    fork_while(
        "async waiter",
        30,
        || {
            rt.block_on(async {
                let _ = event.wait_timeout_async(Duration::from_micros(50)).await;
                let _ = sem.acquire_timeout_async(Duration::ZERO).await;
            })
        },
        || {
            common::current_thread().block_on(async {
                assert!(!event
                    .wait_timeout_async(Duration::from_millis(1))
                    .await
                    .unwrap());
                childs.release().unwrap();
                assert!(childs.acquire_timeout_async(Duration::MAX).await.unwrap());
            })
        },
    );
}

#[test]
fn fork_while_another_thread_calls_the_manager() {
    let mut manager = multiproc::manager::Manager::start().unwrap();
    let dict = manager.dict::<u32, String>().unwrap();
    let list = manager.list::<u32>().unwrap();
    fork_while(
        "manager",
        25,
        || {
            dict.set(1, "x".repeat(100)).unwrap();
            list.append(1).unwrap();
            let _ = dict.get(&1).unwrap();
            list.clear().unwrap();
        },
        || {
            dict.set(2, "y".to_string()).unwrap();
            assert_eq!(dict.get(&2).unwrap().as_deref(), Some("y"));
            list.append(2).unwrap();
        },
    );
    manager.shutdown().unwrap();
}

/// The environment variable that makes [`first_fork_setup_helper`] run.
const SETUP_HELPER: &str = "MULTIPROC_SWEEP_SETUP_HELPER";

/// A child forked (by any means: here `fork(2)` itself) while another
/// thread of its parent makes the parent's first process, and so installs
/// the crate's fork handlers and its panic header, can start processes of
/// its own: it is not left waiting for an installation that only a thread
/// it does not have was doing, nor finds a lock of the crate's held by
/// such a thread. Run in a new process, where nothing is installed yet,
/// many times, the fork landing at varying moments of the installation.
///
/// This once failed about once in 1000–3000 trials on a loaded machine:
/// glibc runs each `prepare` handler with its atfork lock released, so the
/// installing thread could register the process module's handlers while a
/// fork in another thread was in the arena's `prepare` (registered just
/// before); that fork then ran none of the new handlers, and if the
/// installing thread took the process registry (`IDENTITY`) before the
/// fork, the child inherited it held and its first `Process::new` waited
/// for ever. Now one registration holds all the handlers, and the fork
/// gate (registered at load, see
/// [`a_fork_that_missed_the_handlers_takes_the_locks_at_the_gate`])
/// keeps forks out of every installation.
#[test]
fn a_fork_during_the_first_start_in_another_thread_leaves_a_working_child() {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.env(SETUP_HELPER, "1").args([
        "--exact",
        "first_fork_setup_helper",
        "--test-threads=1",
        "--nocapture",
    ]);
    let (status, out, err) = common::run_with_deadline(&mut command, b"", LIMIT);
    assert!(status.success(), "{status}: {out}{err}");
    assert!(out.contains("trials done"), "{out}{err}");
}

/// One trial per fresh process (a `fork(2)` of this one, which has never
/// started a process): a thread starts the first process while this one
/// forks; the forked child must start and join one within the deadline.
#[test]
fn first_fork_setup_helper() {
    if std::env::var_os(SETUP_HELPER).is_none() {
        return;
    }
    for trial in 0..2000u32 {
        // Odd trials: the thread has made its process (the fork handlers
        // are installed) and races only its first start.
        let made_first = trial % 2 == 1;
        let fresh = raw_fork(|| {
            let (ready, go) = (AtomicBool::new(false), AtomicBool::new(false));
            thread::scope(|ts| {
                ts.spawn(|| {
                    let early = made_first.then(|| multiproc::Process::new(|| {}));
                    ready.store(true, Relaxed);
                    while !go.load(Relaxed) {
                        std::hint::spin_loop();
                    }
                    let mut p = early.unwrap_or_else(|| multiproc::Process::new(|| {}));
                    p.start().unwrap();
                    p.join().unwrap();
                });
                while !ready.load(Relaxed) {
                    std::hint::spin_loop();
                }
                go.store(true, Relaxed);
                // Forks at a moment that varies from trial to trial.
                for _ in 0..(trial / 2 % 50) * 40 {
                    std::hint::spin_loop();
                }
                let child = raw_fork(|| {
                    let mut p = multiproc::Process::new(|| {});
                    p.start().unwrap();
                    p.join().unwrap()
                });
                wait_raw(child, Duration::from_secs(10))
            })
        });
        let code = wait_raw(fresh, Duration::from_secs(30));
        assert_eq!(code, 0, "trial {trial}: the forked child hung or failed");
    }
    println!("trials done");
}

/// Forks with `fork(2)`; the child runs `f` and exits with the code it
/// returns, or 1 if it panics. The child's pid.
fn raw_fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child runs `f` and exits at once, without unwinding
    // into the parent's frames.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(1);
        // SAFETY: ends the child without running the parent's exit hooks.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits up to `limit` for the raw child `pid`; its exit code, or 99
/// after killing it if it has not exited in time.
fn wait_raw(pid: libc::pid_t, limit: Duration) -> i32 {
    let end = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: `pid` is this process's unreaped child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                98
            };
        }
        if Instant::now() >= end {
            // SAFETY: `pid` is this process's own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return 99;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The environment variable that makes [`panic_header_helper`] run.
const HEADER_HELPER: &str = "MULTIPROC_SWEEP_HEADER_HELPER";

/// In a new process that has not called the crate, a `fork(2)` made while
/// another thread installs the crate's panic header (at its first start,
/// here held up by a panic hook that a third thread is running, which
/// holds the hook's lock) waits for the installation to end, and the child
/// works: it never copies the hook's lock held by the installing thread.
#[test]
fn a_fork_during_the_panic_header_installation_waits_for_it() {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.env(HEADER_HELPER, "1").args([
        "--exact",
        "panic_header_helper",
        "--test-threads=1",
        "--nocapture",
    ]);
    let (status, out, err) = common::run_with_deadline(&mut command, b"", LIMIT);
    assert!(status.success(), "{status}: {out}{err}");
    assert!(out.contains("the fork waited"), "{out}{err}");
}

/// In the new process of
/// [`a_fork_during_the_panic_header_installation_waits_for_it`].
#[test]
fn panic_header_helper() {
    if std::env::var_os(HEADER_HELPER).is_none() {
        return;
    }
    static IN_HOOK: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    // Ends the hook first: a panic waits for the hook lock.
    let fail = |why: &str| -> ! {
        RELEASE.store(true, Relaxed);
        panic!("{why}");
    };
    let deadline = Instant::now() + CHILD_LIMIT;
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        while !done() {
            if Instant::now() >= deadline {
                fail(&format!("timed out waiting for {what}"));
            }
            thread::yield_now();
        }
    };
    // Nothing of the crate's has run yet. A panic hook that holds the
    // hook lock (shared) until released, so that installing another one
    // waits.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if thread::current().name() == Some("held-panic") {
            IN_HOOK.store(true, Relaxed);
            while !RELEASE.load(Relaxed) {
                thread::yield_now();
            }
        } else {
            previous(info);
        }
    }));
    let installer_tid = AtomicI32::new(0);
    let forker_tid = AtomicI32::new(0);
    let fork_returned = AtomicBool::new(false);
    thread::scope(|ts| {
        let panicker = thread::Builder::new()
            .name("held-panic".into())
            .spawn_scoped(ts, || panic!("held in the hook"))
            .unwrap();
        wait_for("the panic hook", &|| IN_HOOK.load(Relaxed));
        let installer = ts.spawn(|| {
            // SAFETY: gettid has no preconditions.
            installer_tid.store(unsafe { libc::gettid() }, Relaxed);
            // The first start: installs the handlers and the panic header,
            // which waits for the hook lock.
            let mut p = multiproc::Process::new(|| {});
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), 0);
        });
        wait_for("the installation to wait for the hook lock", &|| {
            in_futex_wait(installer_tid.load(Relaxed))
        });
        let forker = ts.spawn(|| {
            // SAFETY: as above.
            forker_tid.store(unsafe { libc::gettid() }, Relaxed);
            let child = raw_fork(|| {
                let mut p = multiproc::Process::new(|| {});
                p.start().unwrap();
                p.join().unwrap()
            });
            fork_returned.store(true, Relaxed);
            wait_raw(child, CHILD_LIMIT)
        });
        wait_for("the fork to wait", &|| {
            if fork_returned.load(Relaxed) {
                fail("the fork did not wait for the installation");
            }
            in_futex_wait(forker_tid.load(Relaxed))
        });
        RELEASE.store(true, Relaxed);
        assert!(panicker.join().is_err());
        installer.join().unwrap();
        assert_eq!(forker.join().unwrap(), 0, "the forked child failed");
    });
    println!("the fork waited");
}

/// Whether thread `tid` of this process is blocked in a futex wait.
fn in_futex_wait(tid: libc::pid_t) -> bool {
    let futex = libc::SYS_futex.to_string();
    tid != 0
        && std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(futex.as_str()))
}

/// The environment variable that makes [`missed_handlers_helper`] run.
const MISSED_HELPER: &str = "MULTIPROC_SWEEP_MISSED_HELPER";

/// A fork whose `prepare` handlers began before the crate's handlers were
/// registered runs none of them (glibc 2.36 on releases its atfork lock
/// while each runs, so the registration can happen meanwhile): the fork
/// gate takes the crate's locks for it. Here a `prepare` handler of
/// another library holds such a fork while the crate's first use
/// registers the handlers and this thread then holds the standard output:
/// the fork must wait for it (the gate took it) and give a working child.
///
/// This also shows that the gate is registered when the program is
/// loaded, before `main` (an ELF constructor, kept in the link of this
/// test, which links the crate as an rlib): only that registration comes
/// before the other library's, made first thing in a new process that has
/// not called the crate.
#[test]
fn a_fork_that_missed_the_handlers_takes_the_locks_at_the_gate() {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.env(MISSED_HELPER, "1").args([
        "--exact",
        "missed_handlers_helper",
        "--test-threads=1",
        "--nocapture",
    ]);
    let (status, out, err) = common::run_with_deadline(&mut command, b"", LIMIT);
    assert!(status.success(), "{status}: {out}{err}");
    assert!(out.contains("the gate took the locks"), "{out}{err}");
}

/// In the new process of
/// [`a_fork_that_missed_the_handlers_takes_the_locks_at_the_gate`].
#[test]
fn missed_handlers_helper() {
    static ARMED: AtomicBool = AtomicBool::new(false);
    static IN_PREPARE: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);
    /// Another library's `prepare` handler: holds the armed fork.
    extern "C" fn slow_prepare() {
        if ARMED.swap(false, Relaxed) {
            IN_PREPARE.store(true, Relaxed);
            while !GO.load(Relaxed) {
                thread::yield_now();
            }
        }
    }
    if std::env::var_os(MISSED_HELPER).is_none() {
        return;
    }
    // Before 2.36 the registration would wait for the fork to end.
    // SAFETY: no preconditions.
    let version = unsafe { libc::gnu_get_libc_version() };
    // SAFETY: glibc's version is a static C string.
    let glibc = unsafe { std::ffi::CStr::from_ptr(version) };
    let minor = glibc.to_str().unwrap().split('.').nth(1).unwrap();
    if minor.parse::<u32>().unwrap() < 36 {
        println!("the gate took the locks (not tested: glibc {glibc:?})");
        return;
    }
    // Nothing of the crate's has run yet, so this handler is registered
    // before the crate's handlers and runs after their `prepare`.
    // SAFETY: a plain function valid for the process's life.
    let registered = unsafe { libc::pthread_atfork(Some(slow_prepare), None, None) };
    assert_eq!(registered, 0);
    let deadline = Instant::now() + CHILD_LIMIT;
    let forker_tid = AtomicI32::new(0);
    let fork_returned = AtomicBool::new(false);
    thread::scope(|ts| {
        let forker = ts.spawn(|| {
            // SAFETY: gettid has no preconditions.
            forker_tid.store(unsafe { libc::gettid() }, Relaxed);
            ARMED.store(true, Relaxed);
            let child = raw_fork(|| {
                println!("a child of the fork that missed the handlers");
                let mut p = multiproc::Process::new(|| {});
                p.start().unwrap();
                p.join().unwrap()
            });
            fork_returned.store(true, Relaxed);
            wait_raw(child, CHILD_LIMIT)
        });
        while !IN_PREPARE.load(Relaxed) {
            if Instant::now() >= deadline {
                GO.store(true, Relaxed);
                panic!("timed out waiting for the fork");
            }
            thread::yield_now();
        }
        // The crate's first use registers its handlers, too late for the
        // fork under way.
        drop(Value::new(1u8).unwrap());
        let stdout = std::io::stdout().lock();
        GO.store(true, Relaxed);
        let mut took = false;
        while !took && !fork_returned.load(Relaxed) && Instant::now() < deadline {
            took = in_futex_wait(forker_tid.load(Relaxed));
            thread::yield_now();
        }
        drop(stdout);
        assert!(
            took,
            "the fork that missed the handlers did not wait for stdout"
        );
        assert_eq!(forker.join().unwrap(), 0, "the forked child failed");
    });
    println!("the gate took the locks");
}

/// The environment variable that makes [`first_script_helper`] run.
#[cfg(feature = "redis")]
const SCRIPT_HELPER: &str = "MULTIPROC_SWEEP_SCRIPT_HELPER";

/// As [`a_fork_during_the_first_start_in_another_thread_leaves_a_working_child`],
/// for the Lua scripts of the Redis proxies, made on first use: a child
/// forked while another thread makes one (its first `set` on a dict) can
/// still use it.
#[cfg(feature = "redis")]
#[test]
fn a_fork_during_a_first_redis_call_in_another_thread_leaves_a_working_child() {
    let Some(url) = common::redis::redis_url("first redis call") else {
        return;
    };
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.env(SCRIPT_HELPER, url).args([
        "--exact",
        "first_script_helper",
        "--test-threads=1",
        "--nocapture",
    ]);
    let (status, out, err) = common::run_with_deadline(&mut command, b"", LIMIT);
    assert!(status.success(), "{status}: {out}{err}");
    assert!(out.contains("trials done"), "{out}{err}");
}

/// One trial per fresh process, as in [`first_fork_setup_helper`].
#[cfg(feature = "redis")]
#[test]
fn first_script_helper() {
    use multiproc::manager::Manager;
    let Some(url) = std::env::var_os(SCRIPT_HELPER) else {
        return;
    };
    let url = url.into_string().unwrap();
    let name = common::redis::unique("sweep-script");
    let manager = Manager::connect_redis(&url).unwrap();
    let dict = manager.dict_named::<u32, u32>(&name).unwrap();
    for trial in 0..600u32 {
        let fresh = raw_fork(|| {
            let (ready, go) = (AtomicBool::new(false), AtomicBool::new(false));
            thread::scope(|ts| {
                ts.spawn(|| {
                    // Connected (a call without a script), then the first
                    // call with one.
                    dict.get(&1).unwrap();
                    ready.store(true, Relaxed);
                    while !go.load(Relaxed) {
                        std::hint::spin_loop();
                    }
                    dict.set(1, 1).unwrap();
                });
                while !ready.load(Relaxed) {
                    std::hint::spin_loop();
                }
                go.store(true, Relaxed);
                for _ in 0..(trial % 60) * 200 {
                    std::hint::spin_loop();
                }
                let child = raw_fork(|| {
                    dict.set(2, 2).unwrap();
                    0
                });
                wait_raw(child, Duration::from_secs(10))
            })
        });
        let code = wait_raw(fresh, Duration::from_secs(30));
        assert_eq!(code, 0, "trial {trial}: the forked child hung or failed");
    }
    dict.clear().unwrap();
    println!("trials done");
}
