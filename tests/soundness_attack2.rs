//! Fifth-round attack on the soundness of the safe API: a thread that
//! ends while it holds a cell's robust lock through a leaked guard.

mod common;

use std::time::Duration;

use common::{join, static_child, watchdog};
use multiproc::{RecoverableLockError, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// A guard leaked by a thread (`Box::leak` is safe) keeps its borrow of
/// the value for as long as the value lives, but the robust lock is
/// released by the kernel when the thread ends: the next locker would get
/// a second `&mut` to the same memory while the first is alive. The
/// process must stop at that thread's end instead (as std aborts when
/// soundness cannot be kept), never hand out the second reference.
#[test]
fn a_thread_ending_with_a_leaked_guard_never_lets_the_lock_be_recovered() {
    watchdog("thread ending with a leaked guard", LIMIT, || {
        let p = static_child(|| {
            let v = Value::new(0u64).unwrap();
            std::thread::scope(|s| {
                let first: &mut u64 = s
                    .spawn(|| &mut **Box::leak(Box::new(v.lock().unwrap())))
                    .join()
                    .unwrap();
                match v.lock_recovering() {
                    Err(RecoverableLockError::OwnerDied(mut second)) => {
                        // Two live `&mut u64` to one location.
                        *second = 1;
                        *first = 2;
                        multiproc::process::exit(3);
                    }
                    _ => multiproc::process::exit(4),
                }
            });
        });
        assert_eq!(
            join(&p, LIMIT),
            -libc::SIGABRT,
            "the lock of a leaked guard was handed out again"
        );
    });
}
