//! Pool across real worker processes: results, errors, dead workers,
//! recycling, termination.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{procfs, watchdog};
use multiproc::{Error, Pool, RawValue};

const LIMIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

fn my_pid(_: ()) -> u32 {
    std::process::id()
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms)); // the task's own work
    ms
}

fn fails(msg: String) -> u8 {
    panic!("{msg}")
}

fn die(code: i32) -> u8 {
    multiproc::process::exit(code)
}

fn kill_self(_: ()) -> u8 {
    // SAFETY: sending SIGKILL to this process.
    unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
    unreachable!()
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn checked_div(pair: (i64, i64)) -> Result<i64, String> {
    pair.0
        .checked_div(pair.1)
        .ok_or_else(|| "division by zero".into())
}

#[test]
fn map_apply_starmap_and_imaps() {
    watchdog("pool map", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        assert_eq!(pool.processes(), 2);
        assert_eq!(
            pool.map(square, 0..1000).unwrap(),
            (0..1000u64).map(|x| x * x).collect::<Vec<_>>()
        );
        assert!(pool.map(square, Vec::new()).unwrap().is_empty());
        assert_eq!(pool.map_chunked(square, 0..10, Some(3)).unwrap()[9], 81);
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)]).unwrap(), [3, 7]);
        let ordered: Vec<u64> = pool.imap(square, 0..20, None).map(Result::unwrap).collect();
        assert_eq!(ordered, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, 0..20, Some(2))
            .map(Result::unwrap)
            .collect();
        unordered.sort();
        assert_eq!(unordered, ordered);
        // A task's own Err is its value.
        assert_eq!(
            pool.apply(checked_div, (1, 0)).unwrap(),
            Err("division by zero".to_string())
        );
    });
}

#[test]
fn apply_async_results_timeouts_and_callbacks() {
    watchdog("apply_async", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let slow = pool.apply_async(sleep_ms, 300);
        assert!(!slow.ready());
        assert_eq!(slow.successful(), None);
        let t = Instant::now();
        assert!(matches!(
            slow.get_timeout(Duration::from_millis(50)),
            Err(Error::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(slow.get().unwrap(), 300);
        assert!(slow.ready() && slow.successful() == Some(true));

        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        pool.apply_async_with_error_callback(
            square,
            5,
            move |r| tx.send(Ok(r)).unwrap(),
            move |e| tx2.send(Err(e.to_string())).unwrap(),
        );
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), Ok(25));
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        pool.apply_async_with_error_callback(
            fails,
            "boom".into(),
            move |r: u8| tx.send(Ok(r)).unwrap(),
            move |e| tx2.send(Err(e.to_string())).unwrap(),
        );
        let err = rx.recv_timeout(LIMIT).unwrap().unwrap_err();
        assert!(err.contains("boom"), "{err}");
    });
}

#[test]
fn a_panicking_task_fails_only_itself() {
    watchdog("panic", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        match pool.apply(fails, "expected panic in a pool test".into()) {
            Err(Error::TaskFailed(msg)) => assert!(msg.contains("expected panic"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        let r = pool.apply_async(fails, "again".into());
        r.wait();
        assert_eq!(r.successful(), Some(false));
        // The same worker keeps serving.
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
    });
}

#[test]
fn a_dead_worker_fails_its_task_and_is_replaced() {
    watchdog("dead worker", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let before: HashSet<u32> = (0..20).map(|_| pool.apply(my_pid, ()).unwrap()).collect();
        match pool.apply(kill_self, ()) {
            Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, -libc::SIGKILL),
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        match pool.apply(die, 7) {
            Err(Error::WorkerDied { exitcode: 7 }) => {}
            other => panic!("expected WorkerDied(7), got {other:?}"),
        }
        // Two workers again, and new ones among them.
        assert_eq!(pool.map(square, 0..100).unwrap().len(), 100);
        let after: HashSet<u32> = (0..40).map(|_| pool.apply(my_pid, ()).unwrap()).collect();
        assert!(after.len() <= 2);
        assert!(!after.is_subset(&before), "a replaced worker has a new pid");
    });
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    watchdog("maxtasksperchild", LIMIT, || {
        let pool = Pool::builder()
            .processes(2)
            .max_tasks_per_child(3)
            .build()
            .unwrap();
        let pids: Vec<u32> = (0..12).map(|_| pool.apply(my_pid, ()).unwrap()).collect();
        let distinct: HashSet<u32> = pids.iter().copied().collect();
        // 12 tasks, at most 3 per worker: at least 4 different workers.
        assert!(
            distinct.len() >= 4,
            "{} workers for 12 tasks",
            distinct.len()
        );
    });
}

/// The counter's name, from the test process's pid (the process that
/// started the workers, through the pool's fork server).
fn init_counter_name(test_pid: u32) -> String {
    format!("test-pool-init-{test_pid}")
}

/// An initializer is a plain `fn()`: it finds its counter by name.
fn count_init() {
    let parent = multiproc::process::parent_process().expect("a pool worker has a parent");
    let name = init_counter_name(parent.pid());
    let n = RawValue::<u32>::open(&name).expect("the test's counter");
    n.atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn the_initializer_runs_once_per_worker() {
    watchdog("initializer", LIMIT, || {
        let name = common::TempName(init_counter_name(std::process::id()));
        let inits = RawValue::create(&name, 0u32).unwrap();
        let pool = Pool::builder()
            .processes(3)
            .initializer(count_init)
            .build()
            .unwrap();
        assert_eq!(pool.map(square, 0..300).unwrap().len(), 300);
        pool.close();
        pool.join().unwrap();
        assert_eq!(inits.get(), 3);
    });
}

#[test]
fn terminate_stops_running_tasks_and_close_lets_them_finish() {
    watchdog("terminate", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let running: Vec<_> = (0..4).map(|_| pool.apply_async(sleep_ms, 60_000)).collect();
        let t = Instant::now();
        pool.terminate();
        pool.join().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "terminate did not wait for the tasks"
        );
        for r in &running {
            assert!(matches!(r.get(), Err(Error::PoolTerminated)));
        }

        let pool = Pool::with_processes(2).unwrap();
        assert!(matches!(pool.join(), Err(Error::PoolState(_))));
        let queued: Vec<_> = (0..6).map(|i| pool.apply_async(sleep_ms, 20 + i)).collect();
        pool.close();
        assert!(matches!(pool.apply(square, 1), Err(Error::PoolClosed)));
        pool.join().unwrap();
        for (i, r) in queued.iter().enumerate() {
            assert_eq!(r.get().unwrap(), 20 + i as u64);
        }
        // Dropping a pool terminates it.
        let pool = Pool::with_processes(1).unwrap();
        let r = pool.apply_async(sleep_ms, 60_000);
        drop(pool);
        assert!(matches!(r.get(), Err(Error::PoolTerminated)));
    });
}

fn abort(_: u32) -> u32 {
    std::process::abort()
}

/// Issue 20: each replacement of a dead worker used to reap (through
/// `Process::start`) a sibling that had just died, after which nothing
/// watched it: its task never completed.
#[test]
fn two_dying_tasks_per_round_always_fail_with_worker_died() {
    watchdog(
        "two dying tasks per round",
        Duration::from_secs(300),
        || {
            let pool = Pool::with_processes(2).unwrap();
            for round in 0..500 {
                let (a, b) = (pool.apply_async(abort, 0), pool.apply_async(abort, 1));
                for r in [a, b] {
                    match r.get_timeout(Duration::from_secs(3)) {
                        Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, -libc::SIGABRT),
                        other => panic!("round {round}: expected WorkerDied, got {other:?}"),
                    }
                }
            }
            assert_eq!(pool.map(square, 0..10).unwrap().len(), 10);
            pool.close();
            pool.join().unwrap();
        },
    );
}

/// Issue 20: `active_children` reaped pool workers, so the pool never saw
/// a dead worker's exit.
#[test]
fn dying_tasks_while_active_children_reaps() {
    watchdog(
        "active_children and the pool",
        Duration::from_secs(300),
        || {
            let pool = Pool::with_processes(2).unwrap();
            for round in 0..200 {
                let r = pool.apply_async(abort, round);
                let end = Instant::now() + Duration::from_secs(3);
                while !r.ready() && Instant::now() < end {
                    let _ = multiproc::active_children();
                }
                match r.get_timeout(Duration::ZERO) {
                    Err(Error::WorkerDied { .. }) => {}
                    other => panic!("round {round}: expected WorkerDied, got {other:?}"),
                }
            }
            // No pool worker is anyone's child to list.
            assert!(multiproc::active_children()
                .iter()
                .all(|c| !c.name().contains("PoolWorker")));
            assert_eq!(pool.map(square, 0..10).unwrap().len(), 10);
            pool.close();
            pool.join().unwrap();
        },
    );
}

/// The items that die in the simultaneous-death tests.
const DOOMED: [u32; 2] = [5, 12];

/// Doubles `item`, except for the `DOOMED` items: each of those counts
/// itself in the shared counter `name`, waits (bounded) until the other
/// one has too, and aborts, so that two workers die at the same instant.
fn double_or_die((item, name): (u32, String)) -> u32 {
    if !DOOMED.contains(&item) {
        return item * 2;
    }
    let arrived = RawValue::<u32>::open(&name).expect("the test's counter");
    arrived
        .atomic()
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    common::wait_until(Duration::from_secs(10), || {
        arrived.atomic().load(std::sync::atomic::Ordering::SeqCst) >= 2
    });
    std::process::abort()
}

/// The arguments for the items 0..20, with a fresh counter for `tag`.
fn items_for(tag: &str) -> (common::TempName, RawValue<u32>, Vec<(u32, String)>) {
    let name = common::TempName::new(tag);
    let counter = RawValue::create(&name, 0u32).unwrap();
    let items = (0..20).map(|i| (i, name.0.clone())).collect();
    (name, counter, items)
}

/// Checks per-item results: exactly the doomed items died.
fn exactly_the_doomed_died(results: Vec<(u32, multiproc::Result<u32>)>) {
    assert_eq!(results.len(), 20);
    for (item, r) in results {
        match r {
            Ok(v) if !DOOMED.contains(&item) => assert_eq!(v, item * 2),
            Err(Error::WorkerDied { exitcode }) if DOOMED.contains(&item) => {
                assert_eq!(exitcode, -libc::SIGABRT)
            }
            other => panic!("item {item}: {other:?}"),
        }
    }
}

#[test]
fn two_workers_dying_at_once_fail_exactly_their_tasks() {
    watchdog("simultaneous deaths", LIMIT, || {
        let pool = Pool::with_processes(3).unwrap();

        let (_name, _c, items) = items_for("die-map");
        match pool.map_chunked(double_or_die, items, Some(1)) {
            Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, -libc::SIGABRT),
            other => panic!("map: {other:?}"),
        }
        assert_eq!(pool.map(square, 0..50).unwrap().len(), 50);

        let (_name, _c, items) = items_for("die-imap");
        let results: Vec<_> = pool.imap(double_or_die, items, None).collect();
        exactly_the_doomed_died((0..20).zip(results).collect());
        assert_eq!(pool.map(square, 0..50).unwrap().len(), 50);

        // Unordered: the values say which items succeeded.
        let (_name, _c, items) = items_for("die-imap-unordered");
        let results: Vec<_> = pool.imap_unordered(double_or_die, items, None).collect();
        assert_eq!(results.len(), 20);
        let mut ok: Vec<u32> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|v| v / 2)
            .collect();
        ok.sort();
        let expected: Vec<u32> = (0..20).filter(|i| !DOOMED.contains(i)).collect();
        assert_eq!(ok, expected);
        assert!(results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(Error::WorkerDied { .. }))));
        assert_eq!(pool.map(square, 0..50).unwrap().len(), 50);

        let (_name, _c, items) = items_for("die-apply");
        let (tx, rx) = mpsc::channel();
        let handles: Vec<_> = items
            .into_iter()
            .map(|args| {
                let item = args.0;
                let (tx, tx2) = (tx.clone(), tx.clone());
                pool.apply_async_with_error_callback(
                    double_or_die,
                    args,
                    move |v| tx.send((item, Ok(v))).unwrap(),
                    move |e| tx2.send((item, Err(e))).unwrap(),
                )
            })
            .collect();
        drop(tx);
        let mut results: Vec<_> = rx.iter().take(20).collect();
        results.sort_by_key(|r| r.0);
        exactly_the_doomed_died(results);
        assert!(handles.iter().all(|h| h.wait_timeout(LIMIT)));

        assert_eq!(pool.map(square, 0..100).unwrap().len(), 100);
        pool.close();
        pool.join().unwrap();
    });
}

/// Held by a thread of the test process while the pool forks workers.
static USER_LOCK: std::sync::Mutex<u64> = std::sync::Mutex::new(0);

fn take_user_lock(item: u32) -> u32 {
    *USER_LOCK.lock().unwrap() += 1;
    item
}

/// Issue 11, item 9: a replacement worker forked while another thread held
/// a lock found it held forever.
#[test]
fn workers_never_inherit_a_lock_held_by_another_thread() {
    watchdog("user lock and worker forks", LIMIT, || {
        let pool = Pool::builder()
            .processes(2)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        // Replacement workers are forked all along: the lock is held
        // until every task ended.
        let (results, unfinished) = common::while_another_thread_holds(&USER_LOCK, || {
            let results: Vec<_> = (0..200)
                .map(|i| pool.apply_async(take_user_lock, i))
                .collect();
            let end = Instant::now() + Duration::from_secs(30);
            let unfinished = results
                .iter()
                .filter(|r| !r.wait_timeout(end.saturating_duration_since(Instant::now())))
                .count();
            (results, unfinished)
        });
        assert_eq!(unfinished, 0, "tasks that never finished");
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.get().unwrap(), i as u32);
        }
    });
}

fn worker_parent(_: ()) -> u32 {
    std::os::unix::process::parent_id()
}

/// Issue 11, item 10: a forked child that uses its parent's pool gets an
/// error at once instead of waiting forever.
#[test]
fn a_pool_used_from_a_forked_child_is_an_error() {
    watchdog("pool in a child", LIMIT, || {
        let pool = std::sync::Arc::new(Pool::with_processes(2).unwrap());
        let done = pool.apply_async(square, 4);
        assert_eq!(done.get().unwrap(), 16);
        let running = pool.apply_async(sleep_ms, 60_000);
        let doomed = Pool::with_processes(1).unwrap();
        let in_child = pool.clone();
        let mut child = multiproc::Process::new(move || {
            let foreign = |r: multiproc::Result<u64>| matches!(r, Err(Error::PoolState(_)));
            assert!(foreign(in_child.apply(square, 3)));
            assert!(foreign(in_child.apply_async(square, 3).get_timeout(LIMIT)));
            assert!(in_child.apply_async(square, 3).ready());
            assert!(matches!(
                in_child.map(square, 0..4),
                Err(Error::PoolState(_))
            ));
            // A result that was there before the fork is still there.
            assert_eq!(done.get().unwrap(), 16);
            // One that can never arrive here is an error, not a wait.
            assert!(foreign(running.get()));
            in_child.close();
            in_child.terminate();
            // Dropping a pool in the child neither hangs nor stops the parent's.
            drop(doomed);
        })
        .daemon(true);
        child.start().unwrap();
        assert_eq!(common::join(&child, LIMIT), 0);
        // The parent's pool still works.
        assert_eq!(pool.apply(square, 5).unwrap(), 25);
    });
}

/// The fork server and the workers die with the pool's process: a pool's
/// child process sends their pids and is killed.
#[test]
fn the_fork_server_and_workers_die_with_the_pool_process() {
    watchdog("fork server lifetime", LIMIT, || {
        let (mut ours, mut theirs) = multiproc::Pipe(true).unwrap();
        let mut owner = multiproc::Process::new(move || {
            let pool = Pool::with_processes(2).unwrap();
            let pids: HashSet<u32> = (0..20).map(|_| pool.apply(my_pid, ()).unwrap()).collect();
            let server = pool.apply(worker_parent, ()).unwrap();
            theirs.send(&(server, pids)).unwrap();
            std::thread::sleep(Duration::from_secs(600)); // until killed
        })
        .daemon(true);
        owner.start().unwrap();
        let (server, workers): (u32, HashSet<u32>) = ours.recv().unwrap();
        assert!(!workers.is_empty());
        assert!(!procfs::gone(server) && workers.iter().all(|&w| !procfs::gone(w)));
        owner.kill().unwrap();
        assert_eq!(common::join(&owner, LIMIT), -libc::SIGKILL);
        assert!(common::wait_until(LIMIT, || procfs::gone(server)
            && workers.iter().all(|&w| procfs::gone(w))));
    });
}

/// A pool whose fork server is killed fails its tasks instead of hanging:
/// the workers die with the server, and without it none can be replaced.
#[test]
fn a_pool_whose_fork_server_is_killed_fails_instead_of_hanging() {
    watchdog("fork server killed", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let server = pool.apply(worker_parent, ()).unwrap();
        assert_ne!(server, std::process::id());
        let running = pool.apply_async(sleep_ms, 60_000);
        // SAFETY: SIGKILL to the pool's fork server, a process this test owns
        // (its pid cannot be reused while the pool has not reaped it).
        assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
        match running.get_timeout(LIMIT) {
            Err(Error::WorkerDied { .. } | Error::PoolTerminated) => {}
            other => panic!("expected WorkerDied or PoolTerminated, got {other:?}"),
        }
        // A worker not yet reached by its SIGKILL may still answer.
        assert!(matches!(
            pool.apply(square, 2),
            Ok(4) | Err(Error::PoolTerminated | Error::WorkerDied { .. })
        ));
        pool.close();
        pool.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// Tasks without ceremony (issue 18, item 3).

fn answer() -> u64 {
    42
}

fn mul3(a: u64, b: u64, c: u64) -> u64 {
    a * b * c
}

fn describe(a: u8, b: i16, c: u32, d: String, e: bool, f: (u8, u8)) -> String {
    format!("{a} {b} {c} {d} {e} {f:?}")
}

fn parse_sum(a: String, b: String) -> Result<i64, std::num::ParseIntError> {
    Ok(a.parse::<i64>()? + b.parse::<i64>()?)
}

#[test]
fn functions_of_zero_to_six_arguments_run_directly() {
    watchdog("arities", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        assert_eq!(pool.apply(answer, ()).unwrap(), 42);
        assert_eq!(pool.apply(square, 5).unwrap(), 25);
        assert_eq!(pool.apply(add, (2, 3)).unwrap(), 5);
        assert_eq!(pool.apply(mul3, (2, 3, 4)).unwrap(), 24);
        assert_eq!(
            pool.apply(describe, (1, -2, 3, "four".into(), true, (6, 7)))
                .unwrap(),
            "1 -2 3 four true (6, 7)"
        );
        assert_eq!(pool.apply_async(mul3, (1, 2, 3)).get().unwrap(), 6);
        // Closures that capture nothing are tasks too.
        assert_eq!(pool.apply(|| 7u8, ()).unwrap(), 7);
        assert_eq!(pool.map(|x: u64| x + 1, 0..4).unwrap(), [1, 2, 3, 4]);
        assert_eq!(pool.apply(|a: u8, b: u8| a + b, (1, 2)).unwrap(), 3);
        // Fallible tasks of several arguments.
        assert_eq!(
            pool.try_apply(parse_sum, ("1".into(), "2".into())).unwrap(),
            3
        );
        assert!(matches!(
            pool.try_apply(parse_sum, ("x".into(), "2".into())),
            Err(Error::TaskFailed(msg)) if msg.contains("invalid digit")
        ));
    });
}

#[test]
fn starmap_takes_tuples_of_any_arity_up_to_six() {
    watchdog("starmap arities", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        assert_eq!(pool.starmap(answer, [(), ()]).unwrap(), [42, 42]);
        assert_eq!(pool.starmap(square, [2, 3]).unwrap(), [4, 9]);
        assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
        assert_eq!(
            pool.starmap(mul3, (1..=20).map(|i| (i, 2, 3))).unwrap(),
            (1..=20).map(|i| i * 6).collect::<Vec<_>>()
        );
        let six = pool
            .starmap(
                describe,
                vec![
                    (1, 2, 3, "a".into(), false, (0, 0)),
                    (4, 5, 6, "b".into(), true, (1, 1)),
                ],
            )
            .unwrap();
        assert_eq!(six, ["1 2 3 a false (0, 0)", "4 5 6 b true (1, 1)"]);
        let pending = pool.starmap_async(add, [(5, 5)]);
        assert_eq!(pending.get().unwrap(), [10]);
    });
}

#[test]
fn apply_async_callbacks_are_optional() {
    watchdog("optional error callback", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        // Success callback only (Python's `callback=`).
        let (tx, rx) = mpsc::channel();
        let ok = pool.apply_async_with(square, 6, move |r| tx.send(r).unwrap());
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 36);
        assert_eq!(ok.get().unwrap(), 36);
        // A failure runs no success callback; it is in the result.
        let (tx, rx) = mpsc::channel::<u8>();
        let failed =
            pool.apply_async_with(fails, "no callback".into(), move |r| tx.send(r).unwrap());
        assert!(matches!(failed.get(), Err(Error::TaskFailed(_))));
        // The callback was dropped unrun: its sender is gone.
        assert!(rx.recv_timeout(LIMIT).is_err());
        // Both callbacks (Python's `error_callback=`).
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        pool.apply_async_with_error_callback(
            die,
            3,
            move |r| tx.send(Ok(r)).unwrap(),
            move |e| tx2.send(Err(e)).unwrap(),
        );
        assert!(matches!(
            rx.recv_timeout(LIMIT).unwrap(),
            Err(Error::WorkerDied { exitcode: 3 })
        ));
    });
}

#[test]
fn new_has_cpu_count_workers_and_the_builder_the_rest() {
    watchdog("default size", LIMIT, || {
        let pool = Pool::new().unwrap();
        assert_eq!(pool.processes(), multiproc::cpu_count());
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
        let built = Pool::builder().build().unwrap();
        assert_eq!(built.processes(), multiproc::cpu_count());
        assert!(matches!(
            Pool::with_processes(0),
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn close_terminate_and_join_take_shared_references_from_any_thread() {
    watchdog("receiver convention", LIMIT, || {
        let pool = std::sync::Arc::new(Pool::with_processes(2).unwrap());
        let queued: Vec<_> = (0..4).map(|i| pool.apply_async(sleep_ms, 10 * i)).collect();
        let closer = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.close())
        };
        closer.join().unwrap();
        // Several threads join at once; each returns once the workers are gone.
        let joiners: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || pool.join())
            })
            .collect();
        for j in joiners {
            j.join().unwrap().unwrap();
        }
        for (i, r) in queued.iter().enumerate() {
            assert!(r.ready(), "joined before task {i} finished");
        }
        pool.join().unwrap();
        pool.terminate();
        pool.join().unwrap();
    });
}

#[test]
fn pool_errors_name_the_pool() {
    watchdog("pool errors", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let early = pool.join().unwrap_err();
        assert!(matches!(early, Error::PoolState(_)));
        let text = early.to_string();
        assert!(text.starts_with("pool: "), "{text}");
        assert!(!text.contains("process"), "{text}");
        pool.close();
        assert_eq!(
            pool.apply(square, 1).unwrap_err().to_string(),
            "the pool is closed"
        );
    });
}

// ---------------------------------------------------------------------------
// Lifecycle log records (issue 18, item 2), in Python's words.

/// Appends every record as `pid LEVEL message` to the file at its path,
/// one write per line, opening it for each record: the pool's workers have
/// none of this process's descriptors (their fork server releases them).
/// Records made once the file is removed are dropped.
struct FileLogger(std::path::PathBuf);

impl log::Log for FileLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        use std::io::Write;
        let line = format!(
            "{} {} {}\n",
            std::process::id(),
            record.level(),
            record.args()
        );
        if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&self.0) {
            let _ = file.write_all(line.as_bytes());
        }
    }
    fn flush(&self) {}
}

#[test]
fn the_pool_logs_its_lifecycle_as_python_does() {
    watchdog("pool log", LIMIT, || {
        let path = std::env::temp_dir().join(format!("multiproc-pool-log-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .unwrap();
        log::set_boxed_logger(Box::new(FileLogger(path.clone()))).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
        let pool = Pool::builder()
            .processes(1)
            .max_tasks_per_child(2)
            .build()
            .unwrap();
        let pids: Vec<u32> = (0..3).map(|_| pool.apply(my_pid, ()).unwrap()).collect();
        assert_eq!(pids[0], pids[1]);
        assert_ne!(pids[1], pids[2]);
        pool.close();
        pool.join().unwrap();
        drop(pool);
        // Dropping a running pool terminates it, as leaving `with Pool()` does.
        let running = Pool::with_processes(1).unwrap();
        let last = running.apply(my_pid, ()).unwrap();
        drop(running);
        let log = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let me = std::process::id();
        let has = |pid: u32, text: &str| log.lines().any(|l| l == format!("{pid} DEBUG {text}"));
        for text in [
            "added worker",
            "cleaning up worker 0",
            "closing pool",
            "joining pool",
            "worker handler exiting",
            "joining pool workers",
            "terminating pool",
            "finalizing pool",
            "terminating workers",
        ] {
            assert!(has(me, text), "no {text:?} in\n{log}");
        }
        assert!(has(me, &format!("cleaning up worker {last}")), "{log}");
        assert!(has(pids[0], "worker exiting after 2 tasks"), "{log}");
        assert!(has(pids[2], "worker got sentinel -- exiting"), "{log}");
        assert!(has(pids[2], "worker exiting after 1 tasks"), "{log}");
    });
}

/// Starts a child that waits forever (until killed); its pid.
fn leave_a_sleeper() -> u32 {
    let mut p = multiproc::Process::new(|| loop {
        std::thread::park(); // until killed with its worker
    });
    p.start().unwrap();
    p.pid().unwrap()
}

/// A task's own children end with its worker: closing and joining the
/// pool neither waits for them nor leaves them behind (Python forbids pool
/// workers to have children at all).
#[test]
fn children_a_task_leaves_running_end_with_its_worker() {
    watchdog("task children at close", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let sleepers: Vec<u32> = (0..2)
            .map(|_| pool.apply(leave_a_sleeper, ()).unwrap())
            .collect();
        let t = Instant::now();
        pool.close();
        pool.join().unwrap();
        // Well under the 10 s after which a worker that does not exit is killed.
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "join took {:?}",
            t.elapsed()
        );
        for pid in sleepers {
            assert!(
                common::wait_until(LIMIT, || procfs::gone(pid)),
                "task child {pid} left running"
            );
        }
    });
}

fn length_of(s: String) -> usize {
    s.len()
}

fn text_of(n: usize) -> String {
    "y".repeat(n)
}

/// Arguments and results past a connection's default limit (64 MiB) go
/// through, as in Python: the pool's workers are its own processes.
/// (Strings: postcard encodes them in one piece, a `Vec<u8>` byte by byte.)
#[test]
fn arguments_and_results_larger_than_64_mib_go_through() {
    watchdog("64 MiB and more each way", LIMIT, || {
        const N: usize = (64 << 20) + 4096;
        let pool = Pool::with_processes(1).unwrap();
        assert_eq!(pool.apply(length_of, "x".repeat(N)).unwrap(), N);
        let s = pool.apply(text_of, N).unwrap();
        assert!(s.len() == N && s.bytes().all(|b| b == b'y'));
    });
}
