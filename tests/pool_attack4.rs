//! A fourth attack on the local `Pool` and on `Process`, aimed at the
//! workers' READY frame (a worker takes work only once its initializer
//! has returned), with cases the earlier ones (`pool_attack`,
//! `pool_attack2`, `pool_attack3`, `process_attack*`) left out.

mod common;

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{wait_until, watchdog};
use multiproc::{Error, Event, Pool, Process, RawValue};

const LIMIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

/// How many workers have started their initializer, a gate that holds
/// up the second one, and one that holds up a task (made before any pool,
/// so that every worker shares them).
fn second_start() -> &'static (RawValue<u32>, Event, Event) {
    static GATES: OnceLock<(RawValue<u32>, Event, Event)> = OnceLock::new();
    GATES.get_or_init(|| {
        let event = || Event::new().unwrap();
        (RawValue::new(0).unwrap(), event(), event())
    })
}

/// The second worker to start fails in its initializer once the gate
/// opens (a database that refused one connection); every other starts.
fn second_start_fails() {
    let (starts, gate, _) = second_start();
    if starts.atomic().fetch_add(1, Ordering::SeqCst) == 1 {
        gate.wait();
        multiproc::process::exit(3);
    }
}

/// Runs until the test releases it.
fn hold() -> u64 {
    second_start().2.wait();
    7
}

/// A worker whose initializer fails while another worker is ready fails
/// no task: that worker runs them, as Python's pool does (it replaces the
/// failed worker and runs every task). Before, the death took the next
/// task waiting with it, though a ready worker was there to run it.
#[test]
fn an_initializer_that_fails_once_fails_no_task_a_ready_worker_can_run() {
    watchdog("an initializer that fails once", LIMIT, || {
        let (starts, gate, release) = second_start();
        let pool = Pool::builder()
            .processes(2)
            .initializer(second_start_fails)
            .build()
            .unwrap();
        let held = pool.apply_async(hold, ());
        let waiting: Vec<_> = (0..10u64).map(|i| pool.apply_async(square, i)).collect();
        gate.set();
        // The replacement has started: the death was handled.
        assert!(wait_until(LIMIT, || starts.get() >= 3));
        release.set();
        assert_eq!(held.get().unwrap(), 7);
        for (i, r) in (0..).zip(&waiting) {
            assert_eq!(r.get().unwrap(), i * i, "task {i}");
        }
        pool.close();
        pool.join().unwrap();
    });
}

/// An initializer that forks with `fork(2)`: the copy returns from it too.
fn fork_in_init() {
    // SAFETY: fork in the single-threaded worker; both copies return.
    unsafe { libc::fork() };
}

/// A copy of a worker that its initializer forked never speaks for the
/// worker: neither a second READY (taken for a result) nor an answer to
/// an order meant for the worker.
#[test]
fn a_copy_forked_by_an_initializer_never_answers_for_the_worker() {
    watchdog("an initializer that forks", LIMIT, || {
        let pool = Pool::builder()
            .processes(1)
            .initializer(fork_in_init)
            .build()
            .unwrap();
        for i in 0..20u64 {
            assert_eq!(pool.apply(square, i).unwrap(), i * i, "task {i}");
        }
        pool.close();
        pool.join().unwrap();
    });
}

/// An initializer that waits for ever.
fn never_ready() {
    loop {
        std::thread::park();
    }
}

/// Terminating (or dropping) a pool whose workers never leave their
/// initializer fails the tasks at once; closing it with nothing queued
/// ends it.
#[test]
fn a_pool_stuck_in_its_initializers_terminates() {
    watchdog("terminate during the initializer", LIMIT, || {
        let pool = Pool::builder()
            .processes(2)
            .initializer(never_ready)
            .build()
            .unwrap();
        let r = pool.apply_async(square, 3);
        assert!(matches!(
            r.get_timeout(Duration::from_millis(200)),
            Err(Error::Timeout)
        ));
        pool.terminate();
        assert!(matches!(r.get(), Err(Error::PoolTerminated)));
        pool.join().unwrap();
        let pool = Pool::builder()
            .processes(2)
            .initializer(never_ready)
            .build()
            .unwrap();
        let r = pool.apply_async(square, 3);
        drop(pool);
        assert!(matches!(r.get(), Err(Error::PoolTerminated)));
    });
}

/// Joining a closed pool waits at most ten seconds in all for workers
/// that never leave their initializer (it then kills them; Python's
/// waits for ever), not ten seconds for each in turn.
#[test]
fn joining_a_closed_pool_stuck_in_its_initializers_takes_ten_seconds_in_all() {
    watchdog("join during the initializer", LIMIT, || {
        let pool = Pool::builder()
            .processes(3)
            .initializer(never_ready)
            .build()
            .unwrap();
        pool.close();
        let joining = Instant::now();
        pool.join().unwrap();
        let took = joining.elapsed();
        assert!(took < Duration::from_secs(20), "join took {took:?}");
    });
}

fn die_now(_: ()) -> u8 {
    // SAFETY: sending SIGKILL to this process.
    unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
    unreachable!()
}

/// How many tasks have come to [`meet`] (made before the pool).
fn met() -> &'static RawValue<u32> {
    static MET: OnceLock<RawValue<u32>> = OnceLock::new();
    MET.get_or_init(|| RawValue::new(0).unwrap())
}

/// Waits (at most 10 s) for a second task to come here too: whether it did.
fn meet() -> bool {
    met().atomic().fetch_add(1, Ordering::SeqCst);
    wait_until(Duration::from_secs(10), || met().get() >= 2)
}

/// A worker that could not be replaced (the descriptor table was full
/// for a moment) is replaced later: the pool gets back to its size, as
/// Python's `_maintain_pool` brings it back, rather than run on with one
/// worker fewer for good (and, once every worker is gone so, end).
#[test]
fn a_worker_not_replaced_for_a_moment_is_replaced_later() {
    watchdog("a pool short of a worker", LIMIT, || {
        let child = common::static_child(|| {
            met();
            common::lower_nofile(256);
            let pool = Pool::with_processes(2).unwrap();
            let full = common::fill_descriptors();
            assert!(matches!(
                pool.apply(die_now, ()),
                Err(Error::WorkerDied { exitcode: -9 })
            ));
            // A round trip more: the replacement was tried meanwhile.
            assert_eq!(pool.apply(square, 3).unwrap(), 9);
            drop(full);
            let meetings: Vec<_> = (0..2).map(|_| pool.apply_async(meet, ())).collect();
            for m in &meetings {
                assert!(m.get().unwrap(), "the two tasks ran at once");
            }
            pool.close();
            pool.join().unwrap();
        });
        assert_eq!(common::join(&child, LIMIT), 0);
    });
}

fn fail_on_four(x: u64) -> u64 {
    assert_ne!(x, 4, "four fails");
    x
}

/// Each item of a chunk that failed is that failure, in `imap` and
/// `imap_unordered` (plain and buffered): the results stay one per item,
/// so that a consumer that pairs them with the input pairs each with its
/// own. Before, a failed chunk was one error: every result after it was
/// paired with an input `chunksize - 1` places before its own. (Python's
/// iterator ends at a failed chunk of more than one item.)
#[test]
fn a_failed_chunk_fails_each_of_its_items() {
    watchdog("a failed chunk of imap", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        for size in [1, 3, 100] {
            let failed = |x: u64| x / size == 4 / size;
            let check = |x: u64, r: &multiproc::Result<u64>| match r {
                Ok(v) => assert!(*v == x && !failed(x), "{x}: {v}"),
                Err(Error::TaskFailed(msg)) => {
                    assert!(failed(x) && msg.contains("four fails"), "{x}: {msg}")
                }
                Err(e) => panic!("{x}: {e:?}"),
            };
            let sized = Some(size as usize);
            let ordered: Vec<_> = pool.imap(fail_on_four, 0..10, sized).collect();
            let buffered: Vec<_> = pool.imap_buffered(fail_on_four, 0..10, sized, 2).collect();
            for got in [ordered, buffered] {
                assert_eq!(got.len(), 10, "chunks of {size}");
                (0..).zip(&got).for_each(|(x, r)| check(x, r));
            }
            let unordered: Vec<_> = pool.imap_unordered(fail_on_four, 0..10, sized).collect();
            let buffered: Vec<_> = pool
                .imap_unordered_buffered(fail_on_four, 0..10, sized, 2)
                .collect();
            for got in [unordered, buffered] {
                assert_eq!(got.len(), 10, "chunks of {size}");
                let fails = got.iter().filter(|r| r.is_err()).count() as u64;
                assert_eq!(fails, (0..10).filter(|&x| failed(x)).count() as u64);
                for r in got.iter().filter(|r| r.is_ok()) {
                    check(*r.as_ref().unwrap(), r);
                }
            }
        }
        pool.close();
        pool.join().unwrap();
    });
}

/// `Process` calls out of order, and at the extremes.
#[test]
fn process_calls_out_of_order() {
    watchdog("process calls out of order", LIMIT, || {
        let mut p = Process::new(|| std::thread::sleep(Duration::from_secs(60)));
        assert!(p.join().is_err());
        assert!(p.join_timeout(Duration::MAX).is_err());
        assert!(p.kill().is_err());
        assert_eq!(p.exitcode(), None);
        p.start().unwrap();
        assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
        assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), None);
        p.kill().unwrap();
        assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(-9));
        assert_eq!(p.exitcode(), Some(-9));
        p.kill().unwrap();
        p.terminate().unwrap();
        assert_eq!(p.join().unwrap(), -9);
        assert!(!p.is_alive());
    });
}
