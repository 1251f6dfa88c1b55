//! A review of the day's fixes to the local `Pool` and the Redis backend.

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::watchdog;
use multiproc::{Error, Pool};

const LIMIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

/// In a forked child, where the pool takes no task, `imap_unordered`
/// gives one result per item, as `imap` does: each item of a chunk
/// submitted before the fork is the child's error. Before, it gave one
/// error per chunk (2 results for 6 items), where `imap` gave 6.
#[test]
fn unordered_results_in_a_forked_child_are_one_per_item() {
    watchdog("imap_unordered in a child", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let ordered = pool.imap(square, 0..6, Some(3));
        let unordered = pool.imap_unordered(square, 0..6, Some(3));
        let child = common::static_child(move || {
            for got in [ordered.collect::<Vec<_>>(), unordered.collect()] {
                assert_eq!(got.len(), 6, "{got:?}");
                assert!(
                    got.iter()
                        .all(|r| matches!(r, Ok(_) | Err(Error::PoolState(_)))),
                    "{got:?}"
                );
            }
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        pool.close();
        pool.join().unwrap();
    });
}

/// An `imap_unordered` iterated in one of the pool's callbacks (on the
/// thread that would deliver its chunks) gives one result per item too:
/// each item of a chunk not delivered there is the error that says so.
/// Before, such a chunk was one error (2 results for 6 items).
#[test]
fn unordered_results_in_a_callback_are_one_per_item() {
    watchdog("imap_unordered in a callback", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(2).unwrap());
        let (tx, rx) = mpsc::channel();
        let weak = Arc::downgrade(&pool);
        pool.apply_async_with(square, 1, move |_| {
            let pool = weak.upgrade().unwrap();
            let got: Vec<_> = pool.imap_unordered(square, 0..6, Some(3)).collect();
            tx.send(got).unwrap();
        });
        let got = rx.recv_timeout(LIMIT).unwrap();
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(
            got.iter()
                .all(|r| matches!(r, Ok(_) | Err(Error::PoolState(_)))),
            "{got:?}"
        );
        pool.close();
        pool.join().unwrap();
    });
}
