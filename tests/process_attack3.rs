//! Adversarial review of the process tools (third round): Process, Pool,
//! Pipe/Connection, Listener/Client, with cases the other tests leave out.

mod common;

use std::time::Duration;

use common::{join, static_child, watchdog};
use multiproc::{Error, Pool};

const LIMIT: Duration = Duration::from_secs(90);

/// A task that never ends (its pool's drop kills its worker).
fn park(_: u32) -> u32 {
    loop {
        std::thread::park();
    }
}

/// An `imap_unordered` iterator taken into a forked child, where the
/// results can never arrive (the pool's scheduler thread is the parent's):
/// its chunks not yet delivered are errors there, as `imap`'s are, not a
/// wait for ever.
#[test]
fn imap_unordered_iterated_in_a_forked_child_does_not_hang() {
    watchdog("imap_unordered in a child", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let mut unordered = pool.imap_unordered(park, [1u32, 2], None);
        let mut ordered = pool.imap(park, [3u32], None);
        let p = static_child(move || {
            let o = ordered.next();
            assert!(matches!(o, Some(Err(Error::PoolState(_)))), "imap: {o:?}");
            let got: Vec<_> = unordered.by_ref().collect();
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(
                got.iter().all(|r| matches!(r, Err(Error::PoolState(_)))),
                "{got:?}"
            );
        });
        assert_eq!(join(&p, Duration::from_secs(30)), 0);
        drop(pool);
    });
}
