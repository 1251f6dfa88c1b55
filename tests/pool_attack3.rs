//! A third attack on the local `Pool`, with cases the earlier ones
//! (`pool_attack`, `pool_attack2`, `pool_stalled_worker`) left out.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::watchdog;
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
