//! Second review of the day's changes: Unix listeners replacing a stale
//! socket file at once.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::conn::{connect, Address, Listener};

const LIMIT: Duration = Duration::from_secs(60);

/// Two listeners replacing one stale socket file at once: neither's
/// probe of the file is a client of the other, and the winner holds its
/// mark, so that a third bind at the path is no client of it either. The
/// winner's first accept is the real client. Before, one round in a few
/// hundred it was a probe (at its end at once): the loser's probe of the
/// stale file went by its path, to the winner's file put there since; or
/// (where a freed inode is the next file's, as on ext4) the winner's
/// socket had the inode of the loser's dropped one, whose mark, closed
/// after its socket, was still there, and the winner went without one.
#[test]
fn a_winner_over_a_stale_file_is_marked() {
    let dir = common::TempDir::new("stalerace");
    racing_over_a_stale_file(dir.0.join("s"));
}

/// As [`a_winner_over_a_stale_file_is_marked`], at a path too long for
/// the temporary name beside it (the socket is made at the path itself).
#[test]
fn a_winner_over_a_stale_file_at_a_long_path_is_marked() {
    let dir = common::TempDir::new("long");
    let pad = 100 - dir.0.as_os_str().len();
    let path = dir.0.join("s".repeat(pad));
    assert_eq!(path.as_os_str().len(), 101);
    racing_over_a_stale_file(path);
}

fn racing_over_a_stale_file(path: PathBuf) {
    watchdog("stale race marks", LIMIT, || {
        let address = Address::Unix(path.clone());
        for round in 0..3000 {
            stale_socket_file(&path);
            let won: Vec<Listener> = common::two_binds_at_once(&address)
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            assert_eq!(won.len(), 1, "round {round}");
            let third = Listener::bind(&address, None);
            assert!(third.is_err(), "round {round}");
            let client = std::thread::spawn({
                let address = address.clone();
                move || {
                    let mut c = connect(&address, None).unwrap();
                    c.send_bytes(b"real").unwrap();
                    c
                }
            });
            let mut accepted = won[0].accept().unwrap();
            let got = accepted.recv_bytes();
            assert!(
                matches!(&got, Ok(b) if b == b"real"),
                "round {round}: the winner's first accept was {got:?}"
            );
            drop(client.join().unwrap());
            drop(won);
        }
    });
}

/// A process that binds a live listener's path (a second copy of a
/// program, trying again until the first is gone), killed at any moment,
/// leaves nothing beside the path. Before, each attempt made a socket
/// file under a temporary name before it found the path taken, and one
/// kill in two left that file behind.
#[test]
fn a_binder_killed_at_a_live_path_leaves_nothing() {
    watchdog("killed binder", LIMIT, || {
        let dir = common::TempDir::new("killed");
        let path = dir.0.join("s");
        let address = Address::Unix(path.clone());
        let live = Listener::bind(&address, None).unwrap();
        for i in 0..200u64 {
            let address = address.clone();
            let mut binder = multiproc::Process::new(move || loop {
                assert!(Listener::bind(&address, None).is_err());
            });
            binder.start().unwrap();
            std::thread::sleep(Duration::from_micros(200 + (i * 37) % 2000));
            binder.kill().unwrap();
            binder.join().unwrap();
            let names: Vec<_> = std::fs::read_dir(&dir.0)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["s"], "round {i}");
        }
        drop(live);
    });
}

/// A process killed in the middle of a bind that succeeds leaves a file
/// beside the path: its socket under a temporary name (before its link to
/// the path), or a stale file there renamed aside (before its removal).
/// The next bind there removes it: its maker is gone and nobody listens
/// on it. A binder is killed as soon as such a file is seen, until one
/// is left behind.
#[test]
fn a_bind_removes_what_a_binder_killed_mid_bind_left() {
    watchdog("killed mid-bind", LIMIT, || {
        let dir = common::TempDir::new("midbind");
        let path = dir.0.join("s");
        let address = Address::Unix(path.clone());
        let deadline = Instant::now() + Duration::from_secs(40);
        let left = loop {
            assert!(Instant::now() < deadline, "no binder was killed mid-bind");
            let mut binder = multiproc::Process::new({
                let (address, path) = (address.clone(), path.clone());
                move || loop {
                    if std::fs::symlink_metadata(&path).is_err() {
                        stale_socket_file(&path);
                    }
                    drop(Listener::bind(&address, None).unwrap());
                }
            });
            binder.start().unwrap();
            let binder = KilledWhenDropped(binder);
            while temporaries(&dir.0).is_empty() {
                assert!(Instant::now() < deadline, "no temporary file seen");
                assert!(binder.0.is_alive(), "{:?}", binder.0.exitcode());
            }
            drop(binder);
            let left = temporaries(&dir.0);
            if !left.is_empty() {
                break left;
            }
        };
        let listener = Listener::bind(&address, None).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s"], "left behind: {left:?}");
        drop(listener);
    });
}

/// A child killed and joined when dropped.
struct KilledWhenDropped(multiproc::Process<'static>);

impl Drop for KilledWhenDropped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.join();
    }
}

/// The temporary files of binds in `dir`.
fn temporaries(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| {
            let n = n.to_string_lossy();
            n.ends_with(".stale") || (n.starts_with('.') && n.ends_with(".socket"))
        })
        .collect()
}

/// A child forked while another thread binds a path over a stale socket
/// file (so looks at it) does not make the next stale file there look
/// live. Before, the look claimed the stale file's mark for a moment, the
/// child kept a copy of it, and a file given the same inode (as ext4
/// gives a freed one to the next file) was taken for a live listener's:
/// `AddrInUse` for as long as the child lived.
///
/// And a child forked while the round's own listener is open keeps no
/// copy of that listener's mark (the fork handlers make it inert): before,
/// the child's copy outlived the child's copy of the listening socket at
/// its exit, and the next stale file, given the freed inode, was taken
/// for live (`AddrInUse`; about one run in ten).
#[test]
fn a_forked_child_keeps_no_look_at_a_stale_file() {
    use std::sync::atomic::{AtomicBool, Ordering};
    watchdog("forks during looks", LIMIT, || {
        let dir = common::TempDir::new("forklook");
        let path = dir.0.join("s");
        let address = Address::Unix(path.clone());
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut children = std::collections::VecDeque::new();
                while !done.load(Ordering::Relaxed) {
                    let mut child = multiproc::Process::new(|| {
                        std::thread::sleep(Duration::from_millis(50));
                    });
                    child.start().unwrap();
                    children.push_back(child);
                    if children.len() > 20 {
                        children.pop_front().unwrap().join().unwrap();
                    }
                }
                for child in children {
                    child.join().unwrap();
                }
            });
            let outcome = std::panic::catch_unwind(|| {
                for round in 0..10000 {
                    stale_socket_file(&path);
                    let bound = Listener::bind(&address, None);
                    assert!(bound.is_ok(), "round {round}: {:?}", bound.err());
                }
            });
            done.store(true, Ordering::Relaxed);
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        });
    });
}

/// A stale socket file at `path`: bound, never listened on, closed (a
/// listening socket here would be live in a child forked meanwhile).
fn stale_socket_file(path: &std::path::Path) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}
