//! Pool across real worker processes: results, errors, dead workers,
//! recycling, termination.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::watchdog;
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
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
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
        let pool = Pool::new(2).unwrap();
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
        let pool = Pool::new(2).unwrap();
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
        pool.apply_async_with(
            square,
            5,
            move |r| tx.send(Ok(r)).unwrap(),
            move |e| tx2.send(Err(e.to_string())).unwrap(),
        );
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), Ok(25));
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        pool.apply_async_with(
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
        let pool = Pool::new(1).unwrap();
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
        let pool = Pool::new(2).unwrap();
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

/// The counter's name, from the test process's pid (a worker's parent).
fn init_counter_name(test_pid: u32) -> String {
    format!("test-pool-init-{test_pid}")
}

/// An initializer is a plain `fn()`: it finds its counter by name.
fn count_init() {
    let name = init_counter_name(std::os::unix::process::parent_id());
    let n = RawValue::<u32>::open(&name).expect("the test's counter");
    n.atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn the_initializer_runs_once_per_worker() {
    watchdog("initializer", LIMIT, || {
        let name = common::TempName(init_counter_name(std::process::id()));
        let inits = RawValue::create(&name, 0u32).unwrap();
        let mut pool = Pool::builder()
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
        let mut pool = Pool::new(2).unwrap();
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

        let mut pool = Pool::new(2).unwrap();
        assert!(matches!(pool.join(), Err(Error::ProcessState { .. })));
        let queued: Vec<_> = (0..6).map(|i| pool.apply_async(sleep_ms, 20 + i)).collect();
        pool.close();
        assert!(matches!(pool.apply(square, 1), Err(Error::PoolClosed)));
        pool.join().unwrap();
        for (i, r) in queued.iter().enumerate() {
            assert_eq!(r.get().unwrap(), 20 + i as u64);
        }
        // Dropping a pool terminates it.
        let pool = Pool::new(1).unwrap();
        let r = pool.apply_async(sleep_ms, 60_000);
        drop(pool);
        assert!(matches!(r.get(), Err(Error::PoolTerminated)));
    });
}
