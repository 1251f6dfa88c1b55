//! Attacks on the local `Pool`: callbacks that use the pool while it is
//! being terminated, tasks that fork, callbacks whose panics misbehave.

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{touchy, watchdog};
use multiproc::{Error, Pool};

const LIMIT: Duration = Duration::from_secs(60);

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms)); // the task's own work
    ms
}

fn square(x: u64) -> u64 {
    x * x
}

/// Error callbacks of tasks still queued when the pool is terminated run
/// with `PoolTerminated`; one that uses the pool (submits, closes) must
/// get an answer, not wait forever for a lock the scheduler holds.
#[test]
fn an_error_callback_that_uses_the_pool_during_terminate_does_not_deadlock() {
    watchdog("callback during terminate", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        // Keep the one worker busy so that the next tasks stay queued.
        let busy = pool.apply_async(sleep_ms, 300);
        let (tx, rx) = mpsc::channel();
        let queued: Vec<_> = (0..3)
            .map(|_| {
                let p = Arc::downgrade(&pool);
                let tx = tx.clone();
                pool.apply_async_with_error_callback(
                    square,
                    2,
                    |_| {},
                    move |e| {
                        let again = p.upgrade().map(|p| {
                            p.close();
                            p.apply_async(square, 3).get()
                        });
                        let _ = tx.send((e, again));
                    },
                )
            })
            .collect();
        drop(tx);
        pool.terminate();
        for r in &queued {
            assert!(
                matches!(r.get(), Err(Error::PoolTerminated)),
                "{:?}",
                r.get()
            );
        }
        let seen: Vec<_> = rx.iter().collect();
        assert_eq!(seen.len(), 3);
        for (e, again) in seen {
            assert!(matches!(e, Error::PoolTerminated), "{e:?}");
            if let Some(again) = again {
                assert!(
                    matches!(again, Err(Error::PoolTerminated | Error::PoolClosed)),
                    "{again:?}"
                );
            }
        }
        assert!(matches!(busy.get(), Err(Error::PoolTerminated)));
        pool.join().unwrap();
    });
}

/// A task that forks with `fork(2)` itself: the copy returns from the
/// task too. Only the worker's own result may reach the pool, never the
/// copy's (which would be taken for the worker's next task's result).
fn fork_and_return(x: u64) -> u64 {
    // SAFETY: fork in a single-threaded worker; both copies return.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The copy answers late, when the worker has its next task.
        std::thread::sleep(Duration::from_millis(200)); // the copy's own delay
        x + 1000
    } else {
        x
    }
}

fn slow_identity(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(400)); // outlasts the copy's delay
    x
}

#[test]
fn a_copy_forked_by_a_task_never_answers_for_the_worker() {
    watchdog("task that forks", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        assert_eq!(pool.apply(fork_and_return, 1).unwrap(), 1);
        // The copy's late "1001" must not be this task's result.
        assert_eq!(pool.apply(slow_identity, 7).unwrap(), 7);
        assert_eq!(pool.apply(square, 5).unwrap(), 25);
        pool.close();
        pool.join().unwrap();
    });
}

/// A panic payload whose own drop panics.
struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("payload dropped");
    }
}

/// A callback that panics with such a payload must not take down the
/// thread that delivers every other result.
#[test]
fn a_callback_panic_whose_payload_panics_on_drop_loses_no_result() {
    watchdog("callback panic payload", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let first = pool.apply_async_with(square, 2, |_| std::panic::panic_any(Bomb));
        let rest: Vec<_> = (0..4).map(|i| pool.apply_async(square, i)).collect();
        assert_eq!(first.get().unwrap(), 4);
        for (i, r) in rest.iter().enumerate() {
            assert_eq!(
                r.get_timeout(Duration::from_secs(30)).unwrap(),
                (i * i) as u64
            );
        }
        pool.close();
        pool.join().unwrap();
    });
}

fn panic_with_bomb(_: ()) -> u8 {
    std::panic::panic_any(Bomb)
}

/// A task whose panic payload panics when dropped fails alone, as any
/// panicking task does; its worker lives on.
#[test]
fn a_task_panic_whose_payload_panics_on_drop_fails_that_task_only() {
    watchdog("task panic payload", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let pid = pool.apply(|(): ()| std::process::id(), ()).unwrap();
        match pool.apply(panic_with_bomb, ()) {
            Err(Error::TaskFailed(msg)) => assert!(msg.contains("non-string"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.apply(|(): ()| std::process::id(), ()).unwrap(), pid);
        pool.close();
        pool.join().unwrap();
    });
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// 1000 worker restarts (`max_tasks_per_child(1)`) leak no descriptor,
/// thread or zombie; nor does the pool once joined. Counted in a child of
/// its own, which no other test's threads share.
#[test]
fn a_thousand_worker_restarts_leak_nothing() {
    watchdog("restarts", Duration::from_secs(240), || {
        let child = common::static_child(|| {
            let (fds0, threads0) = (open_fds(), threads());
            let pool = Pool::builder()
                .processes(2)
                .max_tasks_per_child(1)
                .build()
                .unwrap();
            assert_eq!(pool.map_chunked(square, 0..10, Some(1)).unwrap().len(), 10);
            let (fds1, threads1) = (open_fds(), threads());
            let got = pool.map_chunked(square, 0..1000u64, Some(1)).unwrap();
            assert_eq!(got, (0..1000u64).map(square).collect::<Vec<_>>());
            // Workers may be between an exit and their replacement: a
            // descriptor or a zombie each, at most; a leak per restart
            // would be a thousand.
            let (fds, tasks) = (open_fds(), threads());
            assert!(fds <= fds1 + 4 && tasks == threads1, "{fds} {tasks}");
            assert!(common::procfs::zombie_children().len() <= 2);
            pool.close();
            pool.join().unwrap();
            drop(pool);
            assert_eq!((open_fds(), threads()), (fds0, threads0));
            assert_eq!(common::procfs::zombie_children(), Vec::<u32>::new());
        });
        assert_eq!(common::join(&child, Duration::from_secs(200)), 0);
    });
}

fn panicking_init() {
    panic!("initializer fails");
}

fn exiting_init() {
    multiproc::process::exit(0);
}

/// An initializer that panics or exits kills every worker as it starts:
/// tasks fail with `WorkerDied` (Python's pool restarts its workers for
/// ever and its tasks wait for ever); close, join and terminate return.
#[test]
fn an_initializer_that_fails_fails_the_tasks_without_a_hang() {
    watchdog("failing initializer", LIMIT, || {
        for init in [panicking_init as fn(), exiting_init] {
            let pool = Pool::builder()
                .processes(2)
                .initializer(init)
                .build()
                .unwrap();
            let results: Vec<_> = (0..4).map(|i| pool.apply_async(square, i)).collect();
            for r in &results {
                assert!(
                    matches!(r.get(), Err(Error::WorkerDied { .. })),
                    "{:?}",
                    r.get()
                );
            }
            assert!(matches!(
                pool.map(square, 0..3u64),
                Err(Error::WorkerDied { .. })
            ));
            pool.close();
            pool.join().unwrap();
        }
        let pool = Pool::builder()
            .processes(1)
            .initializer(panicking_init)
            .build()
            .unwrap();
        pool.terminate();
        pool.join().unwrap();
    });
}

/// Threads that submit while another terminates the pool: every result
/// is either the task's value or `PoolTerminated`, none is lost or hangs.
#[test]
fn submitting_from_many_threads_while_terminating_loses_no_result() {
    watchdog("submit during terminate", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(3).unwrap());
        let threads: Vec<_> = (0..6u64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let rs: Vec<_> = (0..200u64)
                        .map(|i| (t * 1000 + i, pool.apply_async(square, t * 1000 + i)))
                        .collect();
                    let mut done = 0;
                    for (x, r) in rs {
                        match r.get() {
                            Ok(v) => {
                                assert_eq!(v, x * x);
                                done += 1;
                            }
                            Err(Error::PoolTerminated) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    done
                })
            })
            .collect();
        // Let some tasks run first (no sleep: wait for a result).
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
        pool.terminate();
        for t in threads {
            t.join().unwrap();
        }
        pool.join().unwrap();
    });
}

/// `imap_unordered` decodes its results where `imap` does: on the
/// caller's thread, so a `Deserialize` that panics there panics the
/// caller, as with `imap`, instead of silently losing its chunk (the
/// callbacks' thread catches panics).
#[test]
fn imap_unordered_loses_no_item_to_a_panicking_deserialize() {
    watchdog("imap_unordered decode panic", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let mut got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.imap_unordered(touchy, 10..16u64, None)
                .map(|r| r.unwrap().0)
                .collect::<Vec<_>>()
        }))
        .map_err(|_| "panicked")
        .map(|mut v| {
            v.sort();
            v
        });
        // Either the caller saw the panic, or nothing was lost.
        if let Ok(v) = &mut got {
            assert_eq!(*v, [10, 11, 12, 13, 14, 15]);
        }
        assert_eq!(got, Err("panicked"));
        pool.close();
        pool.join().unwrap();
    });
}

fn die_now(_: ()) -> u8 {
    // SAFETY: sending SIGKILL to this process.
    unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
    unreachable!()
}

fn big(mib: usize) -> Vec<u8> {
    vec![7u8; mib << 20]
}

/// Timeouts at both ends, on results that are there, not yet, or whose
/// worker died; a large result arrives whole (32 MiB here, for a debug
/// build's speed; 128 MiB takes about a second in release).
#[test]
fn timeouts_at_the_extremes_and_a_large_result() {
    watchdog("timeouts", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let slow = pool.apply_async(sleep_ms, 300);
        assert!(matches!(
            slow.get_timeout(Duration::ZERO),
            Err(Error::Timeout)
        ));
        assert!(!slow.wait_timeout(Duration::ZERO));
        assert_eq!(slow.get_timeout(Duration::MAX).unwrap(), 300);
        assert_eq!(slow.get_timeout(Duration::ZERO).unwrap(), 300);
        let dead = pool.apply_async(die_now, ());
        assert!(matches!(
            dead.get_timeout(Duration::MAX),
            Err(Error::WorkerDied { exitcode: -9 })
        ));
        assert!(matches!(
            dead.get_timeout(Duration::ZERO),
            Err(Error::WorkerDied { exitcode: -9 })
        ));
        assert_eq!(dead.successful(), Some(false));
        let many: Vec<_> = (0..50).map(|i| pool.apply_async(square, i)).collect();
        for r in &many {
            r.wait();
        }
        assert!(many.iter().all(|r| r.successful() == Some(true)));
        let m = pool.map_async(square, 0..0u64);
        assert!(m.ready());
        assert_eq!(m.get_timeout(Duration::ZERO).unwrap(), Vec::<u64>::new());
        let r = pool.apply(big, 32).unwrap();
        assert_eq!(r.len(), 32 << 20);
        assert!(r.iter().all(|&b| b == 7));
        drop(r);
        pool.close();
        pool.join().unwrap();
        // A result outlives its pool.
        assert_eq!(many[3].get().unwrap(), 9);
    });
}

/// A child forked (with `Process`) while a pool exists gets a clear
/// error from every call, never the parent's scheduler; a pool it makes
/// of its own works. The parent's pool is untouched.
#[test]
fn a_forked_child_cannot_use_the_parents_pool_but_can_make_its_own() {
    watchdog("forked child", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        let pending = Arc::new(pool.apply_async(sleep_ms, 200));
        let (p2, pend2) = (pool.clone(), pending.clone());
        let child = common::static_child(move || {
            assert!(matches!(p2.apply(square, 2), Err(Error::PoolState(_))));
            assert!(matches!(p2.map(square, 0..3u64), Err(Error::PoolState(_))));
            assert!(p2
                .imap(square, 0..2u64, None)
                .all(|r| matches!(r, Err(Error::PoolState(_)))));
            assert!(matches!(pend2.get(), Err(Error::PoolState(_))));
            p2.close();
            p2.terminate();
            assert!(matches!(p2.join(), Err(Error::PoolState(_))));
            let own = Pool::with_processes(1).unwrap();
            assert_eq!(own.apply(square, 6).unwrap(), 36);
            own.close();
            own.join().unwrap();
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        assert_eq!(pending.get().unwrap(), 200);
        assert_eq!(pool.apply(square, 4).unwrap(), 16);
        pool.close();
        pool.join().unwrap();
    });
}

/// `close`, `terminate` and `join` in every order, each twice, from two
/// threads; use after each gives a clear error.
#[test]
fn close_terminate_join_in_every_order() {
    watchdog("lifecycle orders", LIMIT, || {
        type Step = fn(&Pool) -> bool;
        let close: Step = |p| {
            p.close();
            true
        };
        let terminate: Step = |p| {
            p.terminate();
            true
        };
        let join: Step = |p| p.join().is_ok();
        let steps = [("close", close), ("terminate", terminate), ("join", join)];
        for a in 0..3 {
            for b in 0..3 {
                for c in 0..3 {
                    let pool = Arc::new(Pool::with_processes(1).unwrap());
                    let pending = pool.apply_async(sleep_ms, 50);
                    let (mut closed, mut ended) = (false, false);
                    for i in [a, a, b, c, c] {
                        let (name, step) = steps[i];
                        let ok = if name == "join" {
                            let p2 = pool.clone();
                            let other = std::thread::spawn(move || p2.join().is_ok());
                            let mine = step(&pool);
                            let theirs = other.join().unwrap();
                            assert_eq!(mine, theirs);
                            mine
                        } else {
                            step(&pool)
                        };
                        match name {
                            "close" | "terminate" => closed = true,
                            _ => {
                                assert_eq!(ok, closed, "join after {a} {b} {c}");
                                ended |= ok;
                            }
                        }
                        if closed {
                            assert!(matches!(
                                pool.apply(square, 2),
                                Err(Error::PoolClosed | Error::PoolTerminated)
                            ));
                        }
                    }
                    match pending.get() {
                        Ok(50) | Err(Error::PoolTerminated) => {}
                        other => panic!("{other:?} after {a} {b} {c}"),
                    }
                    if ended {
                        assert!(pending.ready());
                    }
                }
            }
        }
    });
}

/// A pool of more workers than this process has descriptors for fails
/// to build with an error and leaves nothing behind.
#[test]
fn a_pool_too_big_for_the_descriptor_table_is_an_error() {
    watchdog("too many workers", LIMIT, || {
        let child = common::static_child(|| {
            common::lower_nofile(64);
            let fds = open_fds();
            match Pool::with_processes(100) {
                Err(Error::Io { .. }) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(open_fds(), fds);
            assert!(common::wait_until(Duration::from_secs(10), || {
                common::procfs::zombie_children().is_empty()
            }));
            let pool = Pool::with_processes(2).unwrap();
            assert_eq!(pool.apply(square, 3).unwrap(), 9);
        });
        assert_eq!(common::join(&child, LIMIT), 0);
    });
}

fn abort_now(_: ()) -> u8 {
    std::process::abort()
}

/// Iterators and results that outlive their pool end with
/// `PoolTerminated` for what had not run; callbacks that submit to the
/// pool (while it runs) have their tasks run; one that waits for such a
/// task gets `PoolState`; an aborting task fails alone.
#[test]
fn iterators_outlive_the_pool_and_callbacks_submit() {
    watchdog("outliving iterators", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        assert!(matches!(
            pool.apply(abort_now, ()),
            Err(Error::WorkerDied { exitcode: -6 })
        ));
        let (tx, rx) = mpsc::channel();
        let weak = Arc::downgrade(&pool);
        pool.apply_async_with(square, 4, move |v| {
            let p = weak.upgrade().unwrap();
            let next = p.apply_async(square, v);
            let waited = p.apply(square, 1);
            tx.send((next, waited)).unwrap();
        });
        let (next, waited) = rx.recv_timeout(LIMIT).unwrap();
        assert!(matches!(waited, Err(Error::PoolState(_))), "{waited:?}");
        assert_eq!(next.get().unwrap(), 256);
        let _busy = pool.apply_async(sleep_ms, 200);
        let ordered = pool.imap(square, 0..5u64, None);
        let unordered = pool.imap_unordered(square, 0..5u64, None);
        drop(pool);
        for r in ordered.chain(unordered) {
            assert!(matches!(r, Err(Error::PoolTerminated)), "{r:?}");
        }
    });
}

fn nested_pool_sum(n: u64) -> u64 {
    let inner = Pool::with_processes(2).unwrap();
    let sum = inner.map(square, 0..n).unwrap().into_iter().sum();
    inner.close();
    inner.join().unwrap();
    sum
}

fn child_with_process(x: u64) -> u64 {
    let mut p = multiproc::Process::new(move || multiproc::process::exit((x % 100) as i32));
    p.start().unwrap();
    p.join().unwrap() as u64
}

/// A task may make a pool of its own (Python forbids a pool worker any
/// child) and start processes; the outer pool is unaffected.
#[test]
fn a_task_that_makes_a_pool_or_a_process() {
    watchdog("nested pool", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let got = pool.map(nested_pool_sum, [3u64, 4, 5]).unwrap();
        assert_eq!(got, [5, 14, 30]);
        assert_eq!(pool.map(child_with_process, [7u64, 42]).unwrap(), [7, 42]);
        pool.close();
        pool.join().unwrap();
    });
}

/// A value whose encoding fails (`Refuse(false)`) or panics (`Refuse(true)`).
#[derive(Debug, serde::Deserialize)]
struct Refuse(bool);

impl serde::Serialize for Refuse {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        if self.0 {
            panic!("serialize panicked");
        }
        Err(serde::ser::Error::custom("refused"))
    }
}

fn make_refuse(panics: bool) -> Refuse {
    Refuse(panics)
}

fn take_refuse(_: Refuse) -> u8 {
    0
}

/// Results that cannot be encoded (an error, or a panic) fail their task
/// with `TaskFailed`, arguments that cannot be encoded fail it at once,
/// and the pool goes on.
#[test]
fn values_that_fail_to_encode_fail_their_task_only() {
    watchdog("encoding failures", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        for panics in [false, true] {
            match pool.apply(make_refuse, panics) {
                Err(Error::TaskFailed(msg)) => {
                    // postcard keeps no custom message: only that it failed.
                    assert!(
                        msg.contains("serialize") || msg.contains("panicked"),
                        "{msg}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        match pool.apply(take_refuse, Refuse(false)) {
            Err(Error::TaskFailed(msg)) => assert!(msg.contains("serialize"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.apply(square, 9).unwrap(), 81);
        pool.close();
        pool.join().unwrap();
    });
}

/// Empty input after `close` or `terminate`, or in a forked child, is
/// still an error, as Python's `map(f, [])` raises "Pool not running"
/// there; on a running pool it is an empty result.
#[test]
fn empty_input_to_a_pool_that_cannot_take_it_is_an_error() {
    watchdog("empty input", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        assert_eq!(
            pool.map(square, Vec::<u64>::new()).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(pool.imap(square, Vec::<u64>::new(), None).count(), 0);
        let p2 = pool.clone();
        let child = common::static_child(move || {
            assert!(matches!(
                p2.map(square, Vec::<u64>::new()),
                Err(Error::PoolState(_))
            ));
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        pool.close();
        assert!(matches!(
            pool.map(square, Vec::<u64>::new()),
            Err(Error::PoolClosed)
        ));
        assert!(matches!(
            pool.starmap_async(square, Vec::<u64>::new()).get(),
            Err(Error::PoolClosed)
        ));
        let items: Vec<_> = pool.imap(square, Vec::<u64>::new(), None).collect();
        assert!(matches!(items[..], [Err(Error::PoolClosed)]), "{items:?}");
        let items: Vec<_> = pool
            .imap_unordered(square, Vec::<u64>::new(), Some(3))
            .collect();
        assert!(matches!(items[..], [Err(Error::PoolClosed)]), "{items:?}");
        pool.terminate();
        assert!(matches!(
            pool.map(square, Vec::<u64>::new()),
            Err(Error::PoolTerminated)
        ));
        pool.join().unwrap();
    });
}

fn my_pid(_: ()) -> u32 {
    std::process::id()
}

/// The pool's fork server killed (by the OOM killer, say): the workers
/// die with it, their tasks fail, and the pool, which can start no
/// more, fails what is queued and what comes after instead of waiting.
#[test]
fn the_pools_fork_server_killed_fails_tasks_without_a_hang() {
    watchdog("fork server killed", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let worker = pool.apply(my_pid, ()).unwrap();
        let server = common::procfs::ppid(worker).unwrap();
        assert_ne!(server, std::process::id());
        let running = pool.apply_async(sleep_ms, 5000);
        // SAFETY: signalling the pool's own fork server, this test's grandchild.
        let killed = unsafe { libc::kill(server as libc::pid_t, libc::SIGKILL) };
        assert_eq!(killed, 0);
        assert!(running.get().is_err());
        let after = pool
            .apply_async(square, 2)
            .get_timeout(Duration::from_secs(30));
        assert!(
            matches!(after, Err(Error::PoolTerminated | Error::WorkerDied { .. })),
            "{after:?}"
        );
        pool.terminate();
        pool.join().unwrap();
        assert!(common::wait_until(Duration::from_secs(10), || {
            common::procfs::gone(worker)
        }));
    });
}

/// The descriptor limit lowered below what the pool's scheduler polls
/// (`poll` then fails with `EINVAL`): results still arrive, no thread
/// spins on the failing call.
#[test]
fn a_descriptor_limit_lowered_under_the_pool_loses_no_result() {
    watchdog("lowered descriptor limit", LIMIT, || {
        let child = common::static_child(|| {
            let pool = Pool::with_processes(20).unwrap();
            assert_eq!(pool.apply(square, 3).unwrap(), 9);
            let limit = libc::rlimit {
                rlim_cur: 24,
                rlim_max: 1024,
            };
            // SAFETY: a valid rlimit for this (child) process.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
            let r = pool.map(square, 0..100u64);
            assert_eq!(r.unwrap(), (0..100u64).map(square).collect::<Vec<_>>());
            pool.close();
            pool.join().unwrap();
        });
        assert_eq!(common::join(&child, Duration::from_secs(50)), 0);
    });
}

/// Submits `square` with an error callback that submits again, forever.
fn submit_forever(pool: Arc<Pool>, calls: Arc<std::sync::atomic::AtomicU64>) {
    let (p, c) = (pool.clone(), calls.clone());
    let _ = pool.apply_async_with_error_callback(
        square,
        2,
        |_| {},
        move |_| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            submit_forever(p, c);
        },
    );
}

/// A submission the pool refuses (closed, terminated, from another
/// process) fails in its result and runs no callback, as Python's
/// `apply_async` raises then: an error callback that submits again ran
/// inside itself until the stack overflowed and the process aborted.
#[test]
fn a_refused_submission_runs_no_callback() {
    watchdog("refused submissions", LIMIT, || {
        let child = common::static_child(|| {
            for terminate in [false, true] {
                let pool = Arc::new(Pool::with_processes(1).unwrap());
                if terminate {
                    pool.terminate();
                } else {
                    pool.close();
                }
                let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
                submit_forever(pool.clone(), calls.clone());
                let refused = pool.apply_async_with_error_callback(
                    square,
                    2,
                    |_| panic!("a refused task ran"),
                    |_| panic!("a refused task's error callback ran"),
                );
                assert!(matches!(
                    refused.get(),
                    Err(Error::PoolClosed | Error::PoolTerminated)
                ));
                assert!(pool.map_async(square, 0..3u64).get().is_err());
                assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
                pool.join().unwrap();
            }
        });
        assert_eq!(common::join(&child, LIMIT), 0);
    });
}
