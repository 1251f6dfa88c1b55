//! Seventh-round attack on connections: a client's connect cut short by
//! a signal, and a send in a forked child after its parent forgot an
//! async send part-way.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{join, procfs, static_child, wait_until, watchdog};
use multiproc::conn::{connect, Address, Listener};
use multiproc::{Connection, Error};

const LIMIT: Duration = Duration::from_secs(30);

/// A Unix socket path of this test's own, removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("multiproc-ca4-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A nonblocking connection to the Unix socket at `path`, made with libc
/// (one that never waits for room in the listener's queue); `None` once
/// the queue is full.
fn connect_nowait(path: &Path) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all zeroes is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `addr` is a valid sockaddr_un of the length given.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Some(fd);
    }
    let e = std::io::Error::last_os_error();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}");
    None
}

/// Whether thread `tid` of this process sleeps in `connect(2)`, waiting
/// for room in a Unix listener's queue (its wait channel says so, or,
/// where the kernel hides wait channels, its current system call).
fn sleeping_in_connect(tid: u32) -> bool {
    let task = format!("/proc/self/task/{tid}");
    let read = |file: &str| std::fs::read_to_string(format!("{task}/{file}")).unwrap_or_default();
    let sleeping = read("stat")
        .rsplit_once(") ")
        .is_some_and(|(_, fields)| fields.starts_with('S'));
    let in_connect = read("wchan") == "unix_wait_for_peer"
        || read("syscall").split(' ').next() == Some(&libc::SYS_connect.to_string());
    sleeping && in_connect
}

/// Whether thread `tid` of this process has no signal pending.
fn nothing_pending(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .is_ok_and(|s| s.lines().any(|l| l == "SigPnd:\t0000000000000000"))
}

extern "C" fn do_nothing(_: libc::c_int) {}

/// A client waiting in `connect` for room in a listener's full queue,
/// when a signal whose handler was installed without `SA_RESTART`
/// arrives: the connect failed with `Interrupted` (std's Unix connect
/// does not try again). Python tries again (PEP 475), and so must
/// `connect`: once the listener accepts someone, the client is through.
#[test]
fn a_signal_during_connect_does_not_fail_it() {
    watchdog("connect under a signal", LIMIT, || {
        let path = Tmp::new("eintr");
        let listener = Listener::bind(&Address::Unix(path.0.clone()), None).unwrap();
        let mut queued = Vec::new();
        while let Some(fd) = connect_nowait(&path.0) {
            queued.push(fd);
            assert!(queued.len() < 10_000, "the queue never filled");
        }
        // SAFETY: all zeroes is a valid sigaction (an empty mask, no
        // flags: no SA_RESTART).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = do_nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler does nothing (async-signal-safe); `action`
        // is valid for the call.
        let installed = unsafe { libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()) };
        assert_eq!(installed, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let address = Address::Unix(path.0.clone());
        let client = std::thread::spawn(move || {
            tx.send(procfs::gettid()).unwrap();
            connect(&address, None).map(|c| c.closed())
        });
        let tid = rx.recv().unwrap();
        assert!(wait_until(LIMIT, || sleeping_in_connect(tid)));
        // SAFETY: a signal whose handler is installed, to a thread of
        // this process that is joined below.
        let sent =
            unsafe { libc::syscall(libc::SYS_tgkill, std::process::id(), tid, libc::SIGUSR2) };
        assert_eq!(sent, 0);
        // The client tries again (and sleeps in connect again), or has
        // failed: either way the signal was taken.
        assert!(wait_until(LIMIT, || client.is_finished()
            || nothing_pending(tid) && sleeping_in_connect(tid)));
        // Room in the queue: the client gets through.
        let _first = listener.accept().unwrap();
        let r = client.join().unwrap();
        assert!(matches!(r, Ok(false)), "{r:?}");
        drop(queued);
    });
}

/// An async send forgotten part-way (`mem::forget`) leaves its message
/// half on the wire, which the next send must not follow with a frame of
/// its own (the peer would read that frame's bytes as the rest of the
/// message). The next send did end the stream, but only in the process
/// that forgot the send: a forked child given the connection sent its
/// messages into the middle of the torn one, and the peer received a
/// message that nobody sent.
#[test]
fn a_child_does_not_send_into_a_message_its_parent_left_half_sent() {
    watchdog("half-sent message and a child", LIMIT, || {
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_socket(ours.into()).unwrap();
        let big = vec![7u8; 4 << 20];
        {
            let mut send = Box::pin(conn.send_bytes_async(&big));
            let waker = std::sync::Arc::new(common::wakers::Flag::default()).into();
            let first = common::wakers::poll_with(send.as_mut(), &waker);
            assert!(first.is_pending(), "the whole message went at once");
            std::mem::forget(send);
        }
        let child = static_child(move || {
            // Enough to complete the torn message several times over.
            for _ in 0..4 {
                if conn.send_bytes(&vec![1u8; 4 << 20]).is_err() {
                    return;
                }
            }
            panic!("the child's sends went into the torn stream");
        });
        let reader = std::thread::spawn(move || {
            let mut peer = Connection::from_socket(raw.into()).unwrap();
            let mut torn = 0;
            loop {
                match peer.recv_bytes() {
                    Ok(_) => torn += 1,
                    Err(e) => return (torn, e),
                }
            }
        });
        assert_eq!(join(&child, LIMIT), 0);
        let (torn, end) = reader.join().unwrap();
        assert_eq!(torn, 0, "messages received that nobody sent");
        assert!(matches!(end, Error::ConnectionClosed), "{end:?}");
    });
}

/// A Unix address with an empty path (which `"unix:"` cannot spell, but
/// `Address::Unix` can hold): the bind made a nameless socket in the
/// abstract namespace (Linux's meaning of an empty name), found no file
/// for it, tried again eight times and said another listener kept taking
/// the path (`AddrInUse`). It is refused at once, as the abstract
/// namespace is (Python's `Listener('')` binds a name there).
#[test]
fn an_empty_unix_path_is_refused_as_such() {
    watchdog("an empty path", LIMIT, || {
        let r = Listener::bind(&Address::Unix(PathBuf::new()), None);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

/// A connection's `Debug` form printed its receive buffer byte by byte:
/// what was received (secrets included) went into any log that printed
/// the connection, long after it was returned, and a 16 MiB message made
/// a string of about 50 MB. Python's repr of a connection shows no data.
#[test]
fn debug_shows_no_received_bytes() {
    watchdog("debug of a connection", LIMIT, || {
        let (mut a, mut b) = multiproc::Pipe::duplex().unwrap();
        let secret = vec![b'S'; 16 << 20];
        let sent = secret.clone();
        let sender = std::thread::spawn(move || {
            a.send_bytes(&sent).unwrap();
            a.send_bytes(b"after").unwrap();
            a
        });
        let got = b.recv_bytes_timeout(LIMIT).unwrap();
        assert!(got == secret);
        let _a = sender.join().unwrap();
        let shown = format!("{b:?}");
        assert!(shown.len() < 1000, "{} bytes", shown.len());
        assert!(!shown.contains("83, 83"), "{shown}");
        assert_eq!(b.recv_bytes().unwrap(), b"after");
    });
}

/// More TCP clients at once than the listener's queue holds (std's
/// `TcpListener::bind` asks for 128), each authenticated, each served at
/// once by one accepting thread: a client whose connection the kernel
/// dropped from the full queue thinks itself connected and waits for the
/// challenge, which comes only once the kernel retries (after 1, 3, 7,
/// 15, 31 s, while new clients keep taking the room). Clients failed
/// after the handshake's 20 s, and `accept` failed for each of them
/// (`AuthenticationFailed`, which ends a `listener.accept()?` loop).
/// With the queue the system allows (`somaxconn`, 4096 by default), all
/// are served within moments.
#[test]
fn more_tcp_clients_at_once_than_the_default_queue_all_get_through() {
    watchdog("many TCP clients at once", Duration::from_secs(60), || {
        const CLIENTS: u32 = 400;
        let listener = Listener::bind(&"tcp:127.0.0.1:0".parse().unwrap(), Some(b"key")).unwrap();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let address = listener.address().clone();
                std::thread::spawn(move || {
                    let mut c = connect(&address, Some(b"key"))?;
                    c.send(&i)?;
                    c.recv::<u32>()
                })
            })
            .collect();
        let mut served = Vec::new();
        for _ in 0..CLIENTS {
            let mut c = listener.accept().unwrap();
            let n: u32 = c.recv().unwrap();
            c.send(&n).unwrap();
            served.push(c);
        }
        for (i, client) in clients.into_iter().enumerate() {
            let r = client.join().unwrap();
            assert!(matches!(r, Ok(n) if n as usize == i), "client {i}: {r:?}");
        }
    });
}
