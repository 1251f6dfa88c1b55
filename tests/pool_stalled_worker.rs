//! A pool whose worker is frozen (`SIGSTOP`) while the scheduler sends it
//! an order larger than the socket holds: the pool's handle never waits
//! for that worker. (A test binary of its own: it looks for the
//! scheduler's thread among this process's threads, by the system call
//! it is in.)

mod common;

use std::sync::atomic::Ordering::SeqCst;
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

/// The worker that runs [`big_result`], once it is about to return.
static SENDER: OnceLock<multiproc::RawValue<u32>> = OnceLock::new();

fn big_result(_: ()) -> Vec<u8> {
    let v = vec![3u8; 64 << 20];
    SENDER
        .get()
        .unwrap()
        .atomic()
        .store(std::process::id(), SeqCst);
    v
}

/// A worker frozen while it sends a result larger than the socket holds
/// (or just before, or after): the other worker goes on serving, the
/// result is either whole or not there, and killing the frozen worker
/// fails its task (unless the result had arrived whole) and replaces it.
#[test]
fn a_worker_frozen_while_sending_its_result_blocks_nobody() {
    watchdog("a result half sent", 2 * LIMIT, || {
        SENDER.set(multiproc::RawValue::new(0).unwrap()).unwrap();
        let pool = Pool::with_processes(2).unwrap();
        let big = pool.apply_async(big_result, ());
        let sender = SENDER.get().unwrap().atomic();
        assert!(wait_until(LIMIT, || sender.load(SeqCst) != 0));
        let pid = sender.load(SeqCst);
        // SAFETY: stopping a worker of the pool, a process this test started.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
        assert!(wait_until(LIMIT, || procfs::stopped(pid)));
        assert_eq!(pool.map(double, 0..50u64).unwrap()[49], 98);
        match big.get_timeout(Duration::from_millis(50)) {
            Ok(v) => assert!(v.len() == 64 << 20 && v.iter().all(|&b| b == 3)),
            Err(Error::Timeout) => {}
            Err(e) => panic!("{e:?}"),
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
        match big.get() {
            Ok(v) => assert!(v.len() == 64 << 20 && v.iter().all(|&b| b == 3)),
            Err(Error::WorkerDied { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
        assert_eq!(pool.map(double, 0..50u64).unwrap()[49], 98);
        pool.close();
        pool.join().unwrap();
    });
}
