//! The OS baselines of `multiproc bench` work: counters count, streams
//! deliver, ping-pongs answer. (Their speed is the bench's business.)

// The library's test helpers (the watchdog), shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use multiproc_cli::baseline::*;

#[test]
fn counters_count_and_arrays_sum() {
    let m = RobustPthreadMutex::new().unwrap();
    let a = RawAtomic::new().unwrap();
    for _ in 0..10 {
        m.lock_unlock();
        m.incr();
        a.incr();
    }
    assert_eq!((m.count(), a.count()), (10, 10));
    let sum = (0..16).map(f64::from).sum::<f64>();
    assert_eq!(RawLockedArray::new(16).unwrap().locked_sum(), sum);
    PosixSemaphore::new(1).unwrap().acquire_release();
    fork_exit_wait().unwrap();
}

#[test]
fn streams_deliver_in_order() {
    let s = RawSocketStream::new().unwrap();
    for i in 0..3 {
        s.produce(i);
    }
    assert_eq!([s.consume(), s.consume(), s.consume()], [0, 1, 2]);
}

/// Every ping-pong answers, with the answering side on another thread.
#[test]
fn ping_pongs_answer() {
    fn rounds(pp: &dyn BenchPingPong) {
        std::thread::scope(|s| {
            s.spawn(|| (0..100).for_each(|_| pp.answer()));
            (0..100).for_each(|_| pp.ask());
        });
    }
    common::watchdog("ping-pongs", Duration::from_secs(60), || {
        rounds(&EventPair::new().unwrap());
        rounds(&AsyncEventPair::new().unwrap());
        rounds(&RawFutexPingPong::new(true).unwrap());
        rounds(&RawFutexPingPong::new(false).unwrap());
        rounds(&EventFdPingPong::new().unwrap());
        rounds(&RawSocketPingPong::new().unwrap());
        rounds(&PipePingPong::new().unwrap());
        rounds(&RawCall::new(16, 8).unwrap());
        rounds(&RawCall::new(8_000, 8_000).unwrap());
    });
}

/// The batched manager rows' storage floors run in a process of its own
/// and give a rate for both kinds of work, batches that do not divide
/// the keys included.
#[test]
fn the_map_floor_measures_inserts_and_lookups() {
    common::watchdog("map floor", Duration::from_secs(60), || {
        for work in [MapWork::Insert, MapWork::Lookup] {
            for items in [Items::U64, Items::Values] {
                for (n, batch) in [(10_000, 1000), (1001, 1000), (5, 0)] {
                    let rate = ordered_map_items_per_sec(work, items, n, batch).unwrap();
                    assert!(
                        rate.is_finite() && rate > 0.0,
                        "{work:?} {items:?} {n} {batch}: {rate}"
                    );
                }
            }
        }
    });
}
