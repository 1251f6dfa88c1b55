//! An adversarial review of the Manager's fast path (`src/manager/fast.rs`):
//! each test tries to break one of the properties the fast path must keep,
//! with real processes, real areas and a real server.

mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::procfs;
use common::{join, static_child, wait_until, watchdog};
use multiproc::manager::{Manager, Transport};
use multiproc::Error;

const LIMIT: Duration = Duration::from_secs(60);

/// The inodes of this process's mappings of fast-path areas.
fn areas_mapped() -> Vec<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut inodes: Vec<u64> = maps
        .lines()
        .filter(|l| l.contains("multiproc-manager-fastpath"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    inodes
}

/// The inodes in `now` that are not in `before`.
fn new_areas(before: &[u64], now: &[u64]) -> Vec<u64> {
    now.iter()
        .filter(|i| !before.contains(i))
        .copied()
        .collect()
}

/// This process's descriptors that are sockets whose other end process
/// `pid` made (its connections to the server, and its areas' doorbells).
fn sockets_to(pid: u32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.into_iter()
        .filter(|&fd| {
            // SAFETY: a zeroed ucred, which getsockopt fills.
            let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `cred`.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    (&raw mut cred).cast(),
                    &mut len,
                )
            };
            r == 0 && cred.pid as u32 == pid
        })
        .collect()
}

/// Runs `f` in a child process of its own, whose mappings and descriptors
/// change only by what `f` does (the tests of this binary run on threads
/// of one process).
fn alone(f: impl FnOnce() + Send + 'static) {
    assert_eq!(join(&static_child(f), LIMIT), 0);
}

/// Sends `signal` to process `pid`, which the test started.
fn signal(pid: u32, signal: i32) {
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// A server stopped (`SIGSTOP`) until this is dropped, even by a failed
/// assertion: a stopped server would otherwise outlive the test.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        assert!(wait_until(LIMIT, || procfs::stopped(pid)), "stopped");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// A child forked (by another thread) while its parent is in the middle of
/// a call through its area holds nothing of the parent's connection: not
/// its socket, not its doorbell, not its area mapped. (It kept the area
/// mapped, and its doorbell open, for as long as it lived: the parent's
/// connection state, whose lock the calling thread held at the fork, is
/// never dropped in the child.) The child then makes its own connection,
/// and both calls are answered.
#[test]
fn a_child_forked_mid_request_holds_nothing_of_its_parents_connection() {
    watchdog("fork mid-request", LIMIT, || {
        alone(|| {
            let before = areas_mapped();
            let m = Manager::start().unwrap();
            let server = m.server_pid().unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            d.set(0, 7).unwrap();
            let parents = new_areas(&before, &areas_mapped());
            assert_eq!(parents.len(), 1, "the parent's area");
            assert_eq!(sockets_to(server).len(), 2, "its socket and doorbell");
            let theirs = d.clone();
            std::thread::scope(|s| {
                // Inside the scope: a failed assertion lets the server go
                // on before the scope waits for the caller.
                let stopped = Stopped::new(server);
                let (tid_tx, tid_rx) = std::sync::mpsc::channel();
                let d = &d;
                let caller = s.spawn(move || {
                    tid_tx.send(procfs::gettid()).unwrap();
                    d.get(&0).unwrap()
                });
                let tid = tid_rx.recv().unwrap();
                // Asleep on its area's futex: the call is under way.
                assert!(wait_until(LIMIT, || procfs::thread_blocked_in_futex(
                    std::process::id(),
                    tid
                )));
                let kid = static_child(move || {
                    let kept = sockets_to(server);
                    let mapped = areas_mapped().contains(&parents[0]);
                    // Served once the server runs again, on its own.
                    theirs.set(1, 1).unwrap();
                    assert_eq!(theirs.get(&0).unwrap(), Some(7));
                    assert!(
                        kept.is_empty() && !mapped,
                        "the parent's sockets kept: {kept:?}; its area mapped: {mapped}"
                    );
                });
                drop(stopped);
                assert_eq!(join(&kid, LIMIT), 0);
                assert_eq!(caller.join().unwrap(), Some(7));
            });
            assert_eq!(d.get(&1).unwrap(), Some(1));
        });
    });
}
