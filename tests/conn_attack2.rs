//! Fifth-round attack on connections: listeners at awkward paths, a live
//! listener that accepts nobody, and frame lengths at the limit.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::watchdog;
use multiproc::conn::{frame, Address, Listener};
use multiproc::{Connection, Error};

const LIMIT: Duration = Duration::from_secs(30);

/// A path under the temporary directory, removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("ca2-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A fresh Unix stream socket, nonblocking if asked.
fn unix_socket(nonblocking: bool) -> OwnedFd {
    let flags = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The address of the socket file `path`.
fn sockaddr(path: &Path) -> libc::sockaddr_un {
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    addr
}

const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;

/// A listening Unix socket at `path` with a backlog of 0, made with libc
/// (std's listeners take a large backlog).
fn listen_backlog_zero(path: &Path) -> OwnedFd {
    let fd = unix_socket(false);
    let addr = sockaddr(path);
    // SAFETY: `addr` is a valid sockaddr_un of `ADDR_LEN` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            ADDR_LEN,
        )
    };
    assert_eq!(r, 0);
    // SAFETY: plain syscall on a bound socket.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 0) }, 0);
    fd
}

/// A live listener whose backlog is full (it accepts nobody) is still
/// live: binding a `Listener` at its path must say so, not wait for ever
/// in the probe that tells a live socket file from a stale one (a
/// blocking connect to a full backlog waits until the listener accepts).
#[test]
fn binding_over_a_live_listener_with_a_full_backlog_does_not_hang() {
    watchdog("bind over a full backlog", LIMIT, || {
        let path = Tmp::new("full");
        let _live = listen_backlog_zero(&path.0);
        // Fill the backlog with connections that are never accepted.
        let mut queued = Vec::new();
        let addr = sockaddr(&path.0);
        loop {
            let fd = unix_socket(true);
            // SAFETY: `addr` is a valid sockaddr_un of `ADDR_LEN` bytes.
            let r = unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    ADDR_LEN,
                )
            };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}");
                break;
            }
            queued.push(fd);
            assert!(queued.len() < 10_000, "the backlog never filled");
        }
        let r = Listener::bind(&Address::Unix(path.0.clone()), None);
        match r {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}")
            }
            other => panic!("{other:?}"),
        }
        assert!(path.0.exists(), "the live socket file was removed");
    });
}

/// Paths that exist and are not sockets (a directory, a symlink to a live
/// socket, a regular file) are refused and left alone; a path one byte
/// too long for `sun_path` is an error, the longest that fits binds.
#[test]
fn awkward_unix_paths_are_refused_or_bound_cleanly() {
    watchdog("awkward paths", LIMIT, || {
        let dir = Tmp::new("dir");
        std::fs::create_dir(&dir.0).unwrap();
        assert!(Listener::bind(&Address::Unix(dir.0.clone()), None).is_err());
        assert!(dir.0.is_dir());

        let target = Tmp::new("target");
        let live = Listener::bind(&Address::Unix(target.0.clone()), None).unwrap();
        let link = Tmp::new("link");
        std::os::unix::fs::symlink(&target.0, &link.0).unwrap();
        assert!(Listener::bind(&Address::Unix(link.0.clone()), None).is_err());
        assert!(target.0.exists() && link.0.symlink_metadata().is_ok());
        drop(live);

        let file = Tmp::new("file");
        std::fs::write(&file.0, b"keep me").unwrap();
        assert!(Listener::bind(&Address::Unix(file.0.clone()), None).is_err());
        assert_eq!(std::fs::read(&file.0).unwrap(), b"keep me");

        // sun_path holds 108 bytes with the NUL: 107 fit, 108 do not.
        let base = Tmp::new("long");
        let pad = |n: usize| {
            let mut s = base.0.clone().into_os_string();
            while s.len() < n {
                s.push("x");
            }
            PathBuf::from(s)
        };
        let (fits, too_long) = (pad(107), pad(108));
        assert!(base.0.as_os_str().len() < 100);
        let l = Listener::bind(&Address::Unix(fits.clone()), Some(b"k")).unwrap();
        let t = std::thread::spawn({
            let fits = fits.clone();
            move || multiproc::conn::connect(&Address::Unix(fits), Some(b"k")).map(drop)
        });
        drop(l.accept().unwrap());
        t.join().unwrap().unwrap();
        drop(l);
        assert!(!fits.exists());
        let e = Listener::bind(&Address::Unix(too_long.clone()), None).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        assert!(!too_long.exists());
        assert!(multiproc::conn::connect(&Address::Unix(too_long), None).is_err());
    });
}

/// A message of exactly the limit is received; one byte more is refused
/// from its header alone and closes the connection; a zero-length one is
/// a message.
#[test]
fn lengths_at_the_limit() {
    watchdog("lengths at the limit", LIMIT, || {
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_socket(ours.into()).unwrap();
        conn.set_max_message(1000);
        let mut stream = Vec::new();
        frame::push(&mut stream, &[1; 1000]).unwrap();
        frame::push(&mut stream, b"").unwrap();
        stream.extend_from_slice(&frame::header(1001).unwrap());
        (&raw).write_all(&stream).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), vec![1; 1000]);
        assert_eq!(conn.recv_bytes().unwrap(), b"");
        let r = conn.recv_bytes();
        assert!(
            matches!(
                r,
                Err(Error::MessageTooLarge {
                    size: 1001,
                    limit: 1000
                })
            ),
            "{r:?}"
        );
        assert!(conn.closed());
    });
}

/// Half a header, and then nothing for ever: a receive with a timeout
/// ends at its deadline (the half header stays buffered, the connection
/// open); the peer's end then closes the connection, which had half a
/// message.
#[test]
fn half_a_header_for_ever_times_out() {
    watchdog("half a header", LIMIT, || {
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_socket(ours.into()).unwrap();
        (&raw).write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0]).unwrap();
        let r = conn.recv_bytes_timeout(Duration::from_millis(50));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(!conn.closed());
        drop(raw);
        let r = conn.recv_bytes_timeout(Duration::from_secs(10));
        assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
        assert!(conn.closed());
    });
}

/// `wait` on no connection at all: with a timeout it returns nothing when
/// the timeout passes; without one nothing could ever end it (Python's
/// waits for ever), so it is an error at once, as for a closed connection.
#[test]
fn a_wait_on_nothing_without_a_timeout_is_an_error() {
    watchdog("wait on nothing", LIMIT, || {
        let r = multiproc::conn::wait(&[], Some(Duration::from_millis(10)));
        assert!(matches!(&r, Ok(v) if v.is_empty()), "{r:?}");
        let r = multiproc::conn::wait(&[], None);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

/// A TCP listener on IPv6 loopback, port 0 (the OS chooses): the address
/// it reports is reachable, authenticated both ways; a client that
/// connects and leaves without a word fails its own `accept` only, and
/// the next client gets through.
#[test]
fn ipv6_port_zero_and_a_client_that_leaves_at_once() {
    watchdog("ipv6 port 0", LIMIT, || {
        let Ok(any) = "tcp:[::1]:0".parse::<Address>() else {
            return;
        };
        let l = match Listener::bind(&any, Some(b"k6")) {
            Ok(l) => l,
            // No IPv6 on this machine.
            Err(e) => return eprintln!("skipped: {e}"),
        };
        let at = l.address().clone();
        let Address::Tcp(sa) = &at else {
            panic!("{at:?}")
        };
        assert!(sa.is_ipv6() && sa.port() != 0, "{sa}");
        let t = std::thread::spawn(move || {
            drop(std::net::TcpStream::connect(match &at {
                Address::Tcp(sa) => *sa,
                Address::Unix(_) => unreachable!(),
            }));
            let mut c = multiproc::conn::connect(&at, Some(b"k6")).unwrap();
            c.send_bytes(b"over v6").unwrap();
        });
        let first = l.accept();
        assert!(
            matches!(first, Err(Error::AuthenticationFailed(_))),
            "{first:?}"
        );
        let mut c = l.accept().unwrap();
        assert_eq!(c.recv_bytes().unwrap(), b"over v6");
        t.join().unwrap();
    });
}

/// A message that does not fit `recv_bytes_into`'s buffer is handed back
/// whole in `BufferTooShort` (Python keeps it in the exception too), and
/// the next message is read as usual; a message of exactly the buffer's
/// length fits.
#[test]
fn recv_bytes_into_a_short_buffer_keeps_the_message() {
    watchdog("recv_bytes_into short", LIMIT, || {
        let (mut a, mut b) = multiproc::Pipe(true).unwrap();
        a.send_bytes(b"12345").unwrap();
        a.send_bytes(b"1234").unwrap();
        a.send_bytes(b"").unwrap();
        let mut buf = [0u8; 4];
        match b.recv_bytes_into(&mut buf) {
            Err(Error::BufferTooShort(m)) => assert_eq!(m, b"12345"),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"1234");
        assert_eq!(b.recv_bytes_into(&mut []).unwrap(), 0);
        assert!(!b.closed());
    });
}

/// A listener whose socket file was removed (a temporary-files cleaner)
/// and whose path another listener then bound must not remove the other
/// listener's file when it is dropped: only the file it made is its own.
#[test]
fn a_listener_removes_only_its_own_socket_file() {
    watchdog("only its own socket file", LIMIT, || {
        let path = Tmp::new("own");
        let address = Address::Unix(path.0.clone());
        let first = Listener::bind(&address, None).unwrap();
        std::fs::remove_file(&path.0).unwrap();
        let second = Listener::bind(&address, None).unwrap();
        drop(first);
        assert!(path.0.exists(), "the second listener's file was removed");
        let t = std::thread::spawn({
            let address = address.clone();
            move || multiproc::conn::connect(&address, None).map(drop)
        });
        drop(second.accept().unwrap());
        t.join().unwrap().unwrap();
        drop(second);
        assert!(!path.0.exists(), "the second listener left its file");
    });
}

/// A value whose serialization fails part-way puts nothing on the wire:
/// the connection stays usable and the next message is read as sent.
#[test]
fn a_send_whose_serialization_fails_sends_nothing() {
    struct FailsHalfway;
    impl serde::Serialize for FailsHalfway {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error as _, SerializeSeq};
            let mut seq = s.serialize_seq(Some(3))?;
            seq.serialize_element(&1u32)?;
            seq.serialize_element(&2u32)?;
            Err(S::Error::custom("not this one"))
        }
    }
    watchdog("serialization fails", LIMIT, || {
        let (mut a, mut b) = multiproc::Pipe(true).unwrap();
        let r = a.send(&FailsHalfway);
        assert!(matches!(r, Err(Error::Serialize(_))), "{r:?}");
        assert!(!b.poll(Some(Duration::ZERO)).unwrap(), "bytes went out");
        a.send(&7u32).unwrap();
        assert_eq!(b.recv::<u32>().unwrap(), 7);
    });
}

/// A peer that connects and never says a word holds `accept` (and a
/// server that accepts and never speaks holds `connect`) for the
/// handshake's 20 s per message, not for ever: each side then fails with
/// `AuthenticationFailed`, and the listener takes the next client (Python's
/// `accept` would wait for ever; README's differences say so).
#[test]
fn a_silent_peer_holds_a_handshake_for_a_bounded_time() {
    watchdog("silent peer", Duration::from_secs(90), || {
        // Our listener, a silent client.
        let path = Tmp::new("silent");
        let address = Address::Unix(path.0.clone());
        let l = Listener::bind(&address, Some(b"key")).unwrap();
        let silent = UnixStream::connect(&path.0).unwrap();
        // A silent server: a raw listener that accepts and says nothing.
        let quiet = Tmp::new("quiet");
        let raw = std::os::unix::net::UnixListener::bind(&quiet.0).unwrap();
        let quiet_addr = Address::Unix(quiet.0.clone());
        let client = std::thread::spawn(move || {
            let r = multiproc::conn::connect(&quiet_addr, Some(b"key")).map(drop);
            (r, raw)
        });
        let started = std::time::Instant::now();
        let r = l.accept();
        assert!(matches!(r, Err(Error::AuthenticationFailed(_))), "{r:?}");
        assert!(started.elapsed() >= Duration::from_secs(19));
        let (r, _raw) = client.join().unwrap();
        assert!(matches!(r, Err(Error::AuthenticationFailed(_))), "{r:?}");
        drop(silent);
        let t = std::thread::spawn({
            let address = address.clone();
            move || multiproc::conn::connect(&address, Some(b"key")).map(drop)
        });
        drop(l.accept().unwrap());
        t.join().unwrap().unwrap();
    });
}

/// A socket handed over in nonblocking mode (from an event loop, say) is
/// still read and written as a blocking connection: a large message to a
/// peer that reads slowly goes out whole rather than failing part-way
/// with `WouldBlock` (which left half a frame on the wire), and a receive
/// waits for its message.
#[test]
fn a_nonblocking_socket_is_used_as_a_blocking_connection() {
    watchdog("nonblocking socket", LIMIT, || {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut a = Connection::from_socket(a.into()).unwrap();
        let mut b = Connection::from_socket(b.into()).unwrap();
        let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
        let sent = big.clone();
        let t = std::thread::spawn(move || {
            let r = a.send_bytes(&sent);
            (r, a)
        });
        let got = b.recv_bytes().unwrap();
        let (r, mut a) = t.join().unwrap();
        r.unwrap();
        assert!(got == big, "the message arrived torn");
        let t = std::thread::spawn(move || b.recv_bytes());
        a.send_bytes(b"after").unwrap();
        assert_eq!(t.join().unwrap().unwrap(), b"after");
    });
}

/// Part of a message read along with the one before it (one write carried
/// both) makes `poll` say ready; a receive with a timeout that then ends
/// before the rest comes must not destroy the connection: the stream is
/// still whole, and the next receive returns the message when it is
/// complete (Python's `poll(0)` then `recv_bytes` only waits for it).
#[test]
fn a_timeout_with_part_of_a_message_buffered_keeps_the_connection() {
    watchdog("timeout mid-message", LIMIT, || {
        let (mut raw, ours) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_socket(ours.into()).unwrap();
        let mut stream = Vec::new();
        frame::push(&mut stream, b"first").unwrap();
        frame::push(&mut stream, b"second message").unwrap();
        let cut = stream.len() - 6;
        raw.write_all(&stream[..cut]).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"first");
        assert!(conn.poll(Some(Duration::ZERO)).unwrap());
        for timeout in [Duration::ZERO, Duration::from_millis(30)] {
            let r = conn.recv_bytes_timeout(timeout);
            assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
            assert!(!conn.closed(), "a timeout closed a sound stream");
        }
        raw.write_all(&stream[cut..]).unwrap();
        let got = conn.recv_bytes_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, b"second message");
        // A large message arriving slower than the timeout, the same way.
        let big: Vec<u8> = (0..3u32 << 20).map(|i| i as u8).collect();
        let mut stream = Vec::new();
        frame::push(&mut stream, &big).unwrap();
        raw.write_all(&stream[..32 << 10]).unwrap();
        let r = conn.recv_bytes_timeout(Duration::from_millis(20));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        let t = std::thread::spawn(move || {
            raw.write_all(&stream[32 << 10..]).unwrap();
            raw
        });
        assert!(conn.recv_bytes_timeout(Duration::from_secs(20)).unwrap() == big);
        let raw = t.join().unwrap();
        drop(raw);
        assert!(matches!(conn.recv_bytes(), Err(Error::ConnectionClosed)));
    });
}

/// A Python client (3.8's MD5 answers and 3.13's `{sha256}` ones) to our
/// listener, with messages of exactly the default limit (64 MiB) both
/// ways, a pickled value where a postcard one is expected (an error, the
/// connection still usable), and the end of the stream.
#[test]
fn python_clients_with_64_mib_messages_and_a_pickle() {
    use sha2::Digest as _;
    const SCRIPT: &str = r#"
import sys, hashlib
from multiprocessing.connection import Client
c = Client(sys.argv[1], authkey=b'big key')
m = c.recv_bytes()
c.send_bytes(hashlib.sha256(m).digest())
c.send_bytes(bytes(range(256)) * (1 << 18))
c.send({'pickled': [1, 2, 3]})
c.send_bytes(b'after')
c.close()
"#;
    let home = std::env::var("HOME").unwrap_or_default();
    let pythons: Vec<PathBuf> = ["3.8", "3.13"]
        .iter()
        .filter_map(|v| {
            let root = PathBuf::from(&home).join(".pyenv/versions");
            std::fs::read_dir(&root)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with(&format!("{v}.")))
                .map(|n| root.join(n).join("bin/python"))
        })
        .collect();
    if pythons.is_empty() {
        return eprintln!("skipped: no Python 3.8 or 3.13 under ~/.pyenv");
    }
    watchdog("python 64 MiB", Duration::from_secs(120), || {
        for python in pythons {
            let path = Tmp::new("py64");
            let address = Address::Unix(path.0.clone());
            let l = Listener::bind(&address, Some(b"big key")).unwrap();
            let mut py = std::process::Command::new(&python)
                .arg("-c")
                .arg(SCRIPT)
                .arg(&path.0)
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut c = l.accept().unwrap();
            let ours: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
            c.send_bytes(&ours).unwrap();
            let digest = c.recv_bytes().unwrap();
            assert_eq!(digest, sha2::Sha256::digest(&ours).to_vec(), "{python:?}");
            let theirs = c.recv_bytes().unwrap();
            assert_eq!(theirs.len(), 64 << 20);
            assert!(theirs.iter().enumerate().all(|(i, &b)| b == i as u8));
            let r = c.recv::<String>();
            assert!(matches!(r, Err(Error::Deserialize(_))), "{r:?}");
            assert_eq!(c.recv_bytes().unwrap(), b"after");
            assert!(matches!(c.recv_bytes(), Err(Error::ConnectionClosed)));
            let status = py.wait().unwrap();
            assert!(status.success(), "{python:?}: {status}");
        }
    });
}

/// A listening socket is a stream socket, but no connection: nothing it
/// could read is a message, and `poll` would say ready when a client
/// connects. `from_socket` refuses it.
#[test]
fn a_listening_socket_is_no_connection() {
    watchdog("listening socket", LIMIT, || {
        let path = Tmp::new("listening");
        let l = std::os::unix::net::UnixListener::bind(&path.0).unwrap();
        let r = Connection::from_socket(l.into());
        assert!(
            matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("listening")),
            "{r:?}"
        );
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Connection::from_socket(t.into());
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    });
}

thread_local! {
    static KEPT: std::cell::RefCell<Option<Listener>> = const { std::cell::RefCell::new(None) };
}

/// A listener the parent keeps in a thread-local, and a child forked from
/// that thread that ends with `std::process::exit` (which runs the
/// thread's thread-local destructors, the forked copy's included): the
/// child's copy must not remove the parent's socket file (Python's
/// listener unlinks its file only in the process that made it).
#[test]
fn a_childs_copy_of_a_kept_listener_leaves_the_socket_file() {
    watchdog("child's copy of a kept listener", LIMIT, || {
        let path = Tmp::new("kept");
        let address = Address::Unix(path.0.clone());
        KEPT.with(|k| *k.borrow_mut() = Some(Listener::bind(&address, None).unwrap()));
        let p = common::static_child(|| std::process::exit(0));
        assert_eq!(common::join(&p, LIMIT), 0);
        let there = path.0.exists();
        KEPT.with(|k| k.borrow_mut().take());
        assert!(there, "the child removed the parent's socket file");
        assert!(!path.0.exists());
    });
}

/// A connection whose descriptor someone else made nonblocking (through
/// `as_raw_fd`, or a process sharing it): a large send that the socket
/// cannot take whole fails, and must not leave half a frame on the wire
/// for the next messages to be read into. Every whole frame the reader
/// gets is a message as sent, in order.
#[test]
fn a_send_cut_short_by_o_nonblock_set_elsewhere_tears_no_frame() {
    watchdog("O_NONBLOCK set elsewhere", LIMIT, || {
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut a = Connection::from_socket(ours.into()).unwrap();
        let fd = a.as_raw_fd();
        // SAFETY: plain syscall on a live descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        let set = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        assert_eq!(set, 0);
        raw.set_nonblocking(true).unwrap();
        let mut stream = Vec::new();
        let drain = |stream: &mut Vec<u8>| {
            let mut chunk = vec![0; 1 << 16];
            loop {
                match std::io::Read::read(&mut &raw, &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => stream.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let big = vec![7u8; 8 << 20];
        let mut sent: Vec<Vec<u8>> = Vec::new();
        if a.send_bytes(&big).is_ok() {
            sent.push(big.clone());
        }
        // Small messages, the socket drained before each, until more than
        // the big message's length has gone by.
        let small = vec![1u8; 1 << 16];
        while stream.len() < 9 << 20 && !a.closed() {
            drain(&mut stream);
            match a.send_bytes(&small) {
                Ok(()) => sent.push(small.clone()),
                Err(_) => break,
            }
        }
        drop(a);
        drain(&mut stream);
        let got: Vec<&[u8]> = frame::frames(&stream).collect();
        assert!(got.len() <= sent.len());
        for (i, m) in got.iter().enumerate() {
            assert!(
                *m == sent[i],
                "frame {i} ({} bytes) is not what was sent",
                m.len()
            );
        }
    });
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: a zeroed rusage is a valid value, and getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is valid and writable.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

/// A receive on a descriptor someone else made nonblocking waits for its
/// message in `poll`, not in a loop of reads that find nothing: the
/// receiving thread uses next to no CPU while the sender takes its time.
#[test]
fn a_receive_on_a_descriptor_made_nonblocking_elsewhere_does_not_spin() {
    watchdog("receive on O_NONBLOCK", LIMIT, || {
        let (mut a, mut b) = multiproc::Pipe(true).unwrap();
        let fd = b.as_raw_fd();
        // SAFETY: plain syscall on a live descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        let set = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        assert_eq!(set, 0);
        let receiver = std::thread::spawn(move || {
            let before = thread_cpu();
            let small = b.recv_bytes().unwrap();
            let mut into = vec![0; 1 << 20];
            let n = b.recv_bytes_into(&mut into).unwrap();
            let timed = b.recv_bytes_timeout(Duration::from_secs(20)).unwrap();
            (thread_cpu() - before, small, n, timed)
        });
        // The sender takes its time: that is the scenario.
        let pause = Duration::from_millis(300);
        std::thread::sleep(pause);
        a.send_bytes(b"small").unwrap();
        std::thread::sleep(pause);
        a.send_bytes(&vec![3u8; 1 << 20]).unwrap();
        std::thread::sleep(pause);
        a.send_bytes(b"timed").unwrap();
        let (cpu, small, n, timed) = receiver.join().unwrap();
        assert_eq!(small, b"small");
        assert_eq!(timed, b"timed");
        assert_eq!(n, 1 << 20);
        assert!(
            cpu < Duration::from_millis(300),
            "the receiver spun: {cpu:?} of CPU"
        );
    });
}
