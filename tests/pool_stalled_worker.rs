//! A pool whose worker is frozen (`SIGSTOP`) while the scheduler sends it
//! an order larger than the socket holds: the pool's handle never waits
//! for that worker. (A test binary of its own: it looks for the
//! scheduler's thread among this process's threads, by the system call
//! it is in.)

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{procfs, wait_until, watchdog};
use multiproc::{Barrier, Error, Pool};

const LIMIT: Duration = Duration::from_secs(20);

/// Makes both workers take one task each at once.
static BOTH: OnceLock<Barrier> = OnceLock::new();

fn worker_pid(_: ()) -> u32 {
    BOTH.get().unwrap().wait().unwrap();
    std::process::id()
}

fn sum_bytes(v: Vec<u8>) -> u64 {
    v.iter().map(|&b| u64::from(b)).sum()
}

fn double(x: u64) -> u64 {
    x * 2
}

/// Whether a thread of this process waits in `poll` on 3 or 4
/// descriptors: the scheduler sending an order (the worker's socket, its
/// pidfd, the fork server's, and the wake-up eventfd); with two workers,
/// its wait for results polls 6.
fn scheduler_sends() -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
        let call = std::fs::read_to_string(t.unwrap().path().join("syscall")).unwrap_or_default();
        let mut fields = call.split_whitespace();
        let nr = fields.next().unwrap_or("");
        let nfds = fields.nth(1).unwrap_or("");
        matches!(nr, "7" | "271") && matches!(nfds, "0x3" | "0x4")
    })
}

/// The scheduler is stuck sending a 64 MiB order to a frozen worker:
/// `apply_async` and `terminate` return at once, the task fails as
/// terminated, and the frozen worker is killed with the others.
#[test]
fn a_frozen_worker_half_way_through_an_order_blocks_nobody() {
    watchdog("terminate while an order is half sent", 2 * LIMIT, || {
        BOTH.set(Barrier::new(2).unwrap()).unwrap();
        let pool = Pool::with_processes(2).unwrap();
        let pids = pool.map_chunked(worker_pid, [(), ()], Some(1)).unwrap();
        assert_ne!(pids[0], pids[1]);
        for &pid in &pids {
            // SAFETY: stopping the pool's workers, processes this test started.
            assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
            assert!(wait_until(LIMIT, || procfs::stopped(pid)));
        }
        let big = pool.apply_async(sum_bytes, vec![1u8; 64 << 20]);
        // The scheduler has sent part of it, and waits for room.
        assert!(wait_until(LIMIT, scheduler_sends));
        let small = pool.apply_async(double, 21);
        pool.terminate();
        assert!(matches!(
            big.get(),
            Err(Error::PoolTerminated | Error::WorkerDied { .. })
        ));
        assert!(matches!(small.get(), Err(Error::PoolTerminated)));
        pool.join().unwrap();
        for pid in pids {
            assert!(wait_until(LIMIT, || procfs::gone(pid)));
        }
    });
}
