//! A third attack on the local `Pool`, with cases the earlier ones
//! (`pool_attack`, `pool_attack2`, `pool_stalled_worker`) left out.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{touchy, watchdog};
use multiproc::{Error, Pool};

const LIMIT: Duration = Duration::from_secs(60);

/// A value whose encoding fails.
#[derive(Debug, serde::Deserialize)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused"))
    }
}

fn take_unencodable(_: Unencodable) -> u8 {
    0
}

/// An error callback runs on the pool's thread, as the documentation
/// says, also for a task whose arguments cannot be encoded (Python's
/// task thread fails it there): the submitting thread may hold a lock
/// the callback takes. Before, that callback ran inside `apply_async`,
/// on the caller's thread, which then waited for its own lock for ever.
/// There, it may use the pool, as any callback may.
#[test]
fn an_error_callback_never_runs_on_the_submitting_thread() {
    watchdog("error callback of unencodable arguments", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let held = failures.lock().unwrap();
        let record = failures.clone();
        let weak = Arc::downgrade(&pool);
        let r = pool.apply_async_with_error_callback(
            take_unencodable,
            Unencodable,
            |_| unreachable!("the task cannot succeed"),
            move |e| {
                let next = weak.upgrade().unwrap().apply_async(square, 5);
                tx.send((std::thread::current().id(), next)).unwrap();
                record.lock().unwrap().push(e.to_string());
            },
        );
        let caller = std::thread::current().id();
        drop(held);
        let (thread, next) = rx.recv_timeout(LIMIT).unwrap();
        assert_ne!(thread, caller);
        assert_eq!(next.get().unwrap(), 25);
        assert!(matches!(r.get(), Err(Error::TaskFailed(ref m)) if m.contains("serialize")));
        let failures = failures.lock().unwrap();
        assert!(failures[0].contains("serialize"), "{failures:?}");
        pool.close();
        pool.join().unwrap();
    });
}

fn square(x: u64) -> u64 {
    x * x
}

/// An endless input (0, 1, 2, …, of unknown length, as a generator's)
/// whose reading past `limit` items fails the test.
fn endless(limit: u64) -> impl Iterator<Item = u64> {
    let mut next = 0;
    std::iter::from_fn(move || {
        assert!(
            next < limit,
            "the input was read far ahead of the results taken"
        );
        next += 1;
        Some(next - 1)
    })
}

/// `imap_buffered` and `imap_unordered_buffered` over an endless input
/// yield its first results, having read no more of it than the results
/// taken, the chunks buffered and the chunk being read; the pool goes on
/// once the iterators are dropped. Before, there was no way to `imap` an
/// endless input: `imap` and `imap_unordered` read all of it before they
/// returned, for ever, holding ever more memory (Python 3.16's
/// `buffersize`).
#[test]
fn imap_buffered_reads_an_endless_input_as_the_results_are_taken() {
    watchdog("imap over an endless input", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let first: Vec<u64> = pool
            .imap_buffered(square, endless(100 + 8 + 1), None, 8)
            .take(100)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, (0..100u64).map(square).collect::<Vec<_>>());
        let mut some: Vec<u64> = pool
            .imap_unordered_buffered(square, endless(100 + 4 * 3 + 3), Some(3), 4)
            .take(100)
            .map(Result::unwrap)
            .collect();
        some.sort();
        some.dedup();
        assert_eq!(some.len(), 100);
        assert!(some.iter().all(|v| v.isqrt().pow(2) == *v), "{some:?}");
        assert_eq!(pool.map(square, 0..10u64).unwrap()[9], 81);
        // `imap` and `imap_unordered`, which read all their input at once,
        // make iterators that another thread may take, whatever the input.
        let not_send = std::rc::Rc::new(3u64);
        let input = || {
            let not_send = not_send.clone();
            (0..3u64).map(move |x| x + *not_send)
        };
        let ordered = pool.imap(square, input(), None);
        let unordered = pool.imap_unordered(square, input(), None);
        let taken = std::thread::spawn(move || ordered.chain(unordered).count());
        assert_eq!(taken.join().unwrap(), 6);
        // Closed half-way: what was submitted runs, `join` does not wait
        // for the iterator, and the reading stops with one error.
        let mut half = pool.imap_buffered(square, endless(4), None, 2);
        assert_eq!(half.next().unwrap().unwrap(), 0);
        pool.close();
        pool.join().unwrap();
        let rest: Vec<_> = half.collect();
        assert!(
            matches!(rest[..], [Ok(1), Ok(4), Err(Error::PoolClosed)]),
            "{rest:?}"
        );
    });
}

/// The `_buffered` iterators taken into a forked child, where the pool
/// takes no task, end there with one error for the input not read yet,
/// rather than read an endless input for ever; the parent's pool is
/// untouched.
#[test]
fn buffered_iterators_in_a_forked_child_stop_reading() {
    watchdog("buffered iterators in a child", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let ordered = pool.imap_buffered(square, endless(2), None, 1);
        let unordered = pool.imap_unordered_buffered(square, endless(2), None, 1);
        let child = common::static_child(move || {
            for got in [ordered.collect::<Vec<_>>(), unordered.collect()] {
                assert!(
                    matches!(
                        got[..],
                        [Ok(0) | Err(Error::PoolState(_)), Err(Error::PoolState(_))]
                    ),
                    "{got:?}"
                );
            }
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
        pool.close();
        pool.join().unwrap();
    });
}

/// A result whose decoding panics reaches the error callback as an
/// `Error::Deserialize`, as one whose decoding fails does; the pool goes
/// on. Before, the panic, caught on the scheduler thread, ran neither
/// callback: the result was lost to a program that waits on them.
#[test]
fn a_result_whose_decoding_panics_reaches_the_error_callback() {
    watchdog("decoding panic in a callback", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let (tx, rx) = mpsc::channel();
        for x in [12, 13] {
            let (ok, failed) = (tx.clone(), tx.clone());
            pool.apply_async_with_error_callback(
                touchy,
                x,
                move |v| ok.send(Ok(v.0)).unwrap(),
                move |e| failed.send(Err(e)).unwrap(),
            );
        }
        assert!(matches!(rx.recv_timeout(LIMIT), Ok(Ok(12))));
        match rx.recv_timeout(LIMIT) {
            Ok(Err(Error::Deserialize(m))) => assert!(m.contains("unlucky"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.apply(square, 4).unwrap(), 16);
        pool.close();
        pool.join().unwrap();
    });
}

/// What the initializer of `an_order_for_a_worker_still_in_its_initializer_holds_up_no_other`
/// waits on: made before its pool, whose workers inherit them.
static SLOW_INIT: std::sync::OnceLock<(multiproc::RawValue<u32>, multiproc::Event)> =
    std::sync::OnceLock::new();

/// The first worker to start waits in its initializer until the test
/// opens the gate; the others go on at once.
fn first_waits() {
    let (started, gate) = SLOW_INIT.get().expect("made before the pool");
    if started
        .atomic()
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        gate.wait();
    }
}

fn length(v: Vec<u8>) -> usize {
    v.len()
}

/// A task larger than a socket holds, given to a worker still in its
/// initializer, does not hold up the pool: its other worker takes the
/// work. Before, the scheduler gave the first task to the first worker
/// whatever it was doing, and waited for it to read the whole order:
/// every task, and every result, waited for that worker's initializer.
/// (Python's workers all take from one queue, so an idle one takes it.)
#[test]
fn an_order_for_a_worker_still_in_its_initializer_holds_up_no_other() {
    watchdog("a worker slow to start", LIMIT, || {
        let (_, gate) = SLOW_INIT.get_or_init(|| {
            (
                multiproc::RawValue::new(0).unwrap(),
                multiproc::Event::new().unwrap(),
            )
        });
        let pool = Pool::builder()
            .processes(2)
            .initializer(first_waits)
            .build()
            .unwrap();
        let big = vec![7u8; 8 << 20];
        let results: Vec<_> = (0..4)
            .map(|_| pool.apply_async(length, big.clone()))
            .collect();
        for r in &results {
            assert_eq!(
                r.get_timeout(Duration::from_secs(20)).unwrap(),
                8 << 20,
                "done by the worker that is ready"
            );
        }
        gate.set();
        pool.close();
        pool.join().unwrap();
    });
}
