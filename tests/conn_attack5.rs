//! Eighth-round attack on connections: the handshake against CPython 3.8
//! and 3.13 listeners and clients over Unix and TCP (empty and huge keys,
//! every digest a CPython challenge may name), fake peers that challenge
//! strangely or leave mid-handshake, headers at the frame format's
//! boundaries, one-way pipes used the wrong way, and what a client is told
//! when nothing listens.

mod common;

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::cpython::oldest_and_newest;
use common::watchdog;
use multiproc::conn::{connect, frame, Address, Listener, Pipe};
use multiproc::{Connection, Error};

const LIMIT: Duration = Duration::from_secs(60);
const KEY: &[u8] = b"conn attack five";

/// A Unix socket path of this test's own, removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("multiproc-ca5-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Tmp(p)
    }

    fn address(&self) -> Address {
        Address::Unix(self.0.clone())
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// CPython's side: `listen ADDRESS KEY DIGEST` listens (a Unix path, or
/// `host:0` for TCP), prints `ready` and its port or path, and accepts one
/// client (with DIGEST other than `-`, it runs the challenge itself, asking
/// for that digest); `client ADDRESS KEY -` connects. KEY is hex, or `-`
/// for none. It then echoes each message reversed until `bye`, and prints
/// `done`; a refused handshake prints `refused` and why, a peer that left
/// `eof`. The alarm ends a script nobody talks to.
const SCRIPT: &str = r#"
import sys, binascii, signal
from multiprocessing import connection as mc
signal.alarm(60)
role, addr, key, digest = sys.argv[1:5]
key = None if key == '-' else binascii.unhexlify(key)
if not addr.startswith('/'):
    host, port = addr.rsplit(':', 1)
    addr = (host, int(port))
try:
    if role == 'listen':
        l = mc.Listener(addr, authkey=key if digest == '-' else None)
        a = l.address
        print('ready', a[1] if isinstance(a, tuple) else a, flush=True)
        c = l.accept()
        if digest != '-':
            mc.deliver_challenge(c, key, digest_name=digest)
            mc.answer_challenge(c, key)
    else:
        c = mc.Client(addr, authkey=key)
    while True:
        m = c.recv_bytes()
        if m == b'bye':
            break
        c.send_bytes(m[::-1])
    c.close()
    print('done', flush=True)
except mc.AuthenticationError as e:
    print('refused', e, flush=True)
except (EOFError, ConnectionError) as e:
    print('eof', type(e).__name__, flush=True)
"#;

/// The script running; killed and reaped if still running when dropped.
struct Python {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Python {
    fn start(python: &str, args: &[&str]) -> Python {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let out = child.stdout.take().unwrap();
        let (tell, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tell.send(line).is_err() {
                    break;
                }
            }
        });
        Python { child, lines }
    }

    /// Its next line of output.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("the script said nothing: {e}"))
    }

    /// A Python `Listener` at `address` (a path, or `host:0`): where it
    /// listens, once it does.
    fn listen(python: &str, address: &str, key: &str, digest: &str) -> (Python, Address) {
        let py = Python::start(python, &["listen", address, key, digest]);
        let ready = py.line();
        let at = ready
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{python}: {ready}"));
        let address = if address.starts_with('/') {
            Address::Unix(at.into())
        } else {
            format!("tcp:127.0.0.1:{at}").parse().unwrap()
        };
        (py, address)
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Messages echoed reversed (an empty one among them), then `bye`, then
/// the peer's end.
fn exchange(conn: &mut Connection, what: &str) {
    for m in [&b"hello"[..], b"", &[7u8; 70_000]] {
        conn.send_bytes(m).unwrap();
        let mut back = conn.recv_bytes().unwrap();
        back.reverse();
        assert_eq!(back, m, "{what}");
    }
    conn.send_bytes(b"bye").unwrap();
    let r = conn.recv_bytes();
    assert!(matches!(r, Err(Error::ConnectionClosed)), "{what}: {r:?}");
}

fn refused<T: std::fmt::Debug>(r: &multiproc::Result<T>) -> bool {
    matches!(r, Err(Error::AuthenticationFailed(_)))
}

/// Our client with CPython 3.8's and 3.13's listeners, over Unix and TCP,
/// with the key and a wrong one (refused on both sides).
/// CPython 3.8 and 3.13 under pyenv; `None`, having said the test is
/// skipped, without either.
fn pythons() -> Option<Vec<String>> {
    let pythons = oldest_and_newest();
    if pythons.is_empty() {
        eprintln!("skipped: no CPython 3.8 or 3.13 under pyenv");
        return None;
    }
    Some(pythons)
}

#[test]
fn our_client_with_python_listeners_over_unix_and_tcp() {
    let Some(pythons) = pythons() else {
        return;
    };
    watchdog("python listeners", LIMIT * 4, || {
        for python in &pythons {
            let path = Tmp::new("pyl");
            for at in [path.0.to_str().unwrap(), "127.0.0.1:0"] {
                let what = format!("{python} at {at}");
                let (py, address) = Python::listen(python, at, &hex(KEY), "-");
                let mut c = connect(&address, Some(KEY)).unwrap();
                exchange(&mut c, &what);
                assert_eq!(py.line(), "done", "{what}");
                drop(py);
                let _ = std::fs::remove_file(&path.0);

                let (py, address) = Python::listen(python, at, &hex(KEY), "-");
                let r = connect(&address, Some(b"not the key"));
                assert!(refused(&r), "{what}: {r:?}");
                assert!(py.line().starts_with("refused"), "{what}");
                drop(py);
                let _ = std::fs::remove_file(&path.0);
            }
        }
    });
}

/// An empty authkey and a 32 KiB one, both ways with CPython 3.8 and
/// 3.13 (an empty key is a key: Python's `Client` answers the challenge
/// with it, and 3.13's `Listener` challenges with it).
#[test]
fn empty_and_huge_authkeys_with_python() {
    let Some(pythons) = pythons() else {
        return;
    };
    let huge: Vec<u8> = (0..32u32 << 10).map(|i| (i * 7 + 3) as u8).collect();
    watchdog("python keys", LIMIT * 4, || {
        for python in &pythons {
            for key in [&b""[..], &huge] {
                let what = format!("{python} with a key of {} bytes", key.len());
                // Their client, our listener.
                let path = Tmp::new("keys");
                let l = Listener::bind(&path.address(), Some(key)).unwrap();
                let py = Python::start(
                    python,
                    &["client", path.0.to_str().unwrap(), &hex(key), "-"],
                );
                let mut c = l.accept().unwrap();
                exchange(&mut c, &what);
                assert_eq!(py.line(), "done", "{what}");
                drop(py);
                // A wrong key of the same length is refused.
                let mut wrong = key.to_vec();
                wrong.push(1);
                let py = Python::start(
                    python,
                    &["client", path.0.to_str().unwrap(), &hex(&wrong), "-"],
                );
                assert!(refused(&l.accept()), "{what}");
                assert!(py.line().starts_with("refused"), "{what}");
                drop(py);
                drop(l);
                // Their listener, our client (3.8-3.12's listener takes an
                // empty key for none, and never challenges).
                if key.is_empty() && python.contains("3.8") {
                    continue;
                }
                let (py, address) = Python::listen(python, "127.0.0.1:0", &hex(key), "-");
                let mut c = connect(&address, Some(key)).unwrap();
                exchange(&mut c, &what);
                assert_eq!(py.line(), "done", "{what}");
            }
        }
    });
}

/// A CPython 3.12+ peer may challenge with any digest it allows: `md5`,
/// `sha256` and `sha384` are answered; `sha3_256`, which is not spoken
/// here, is refused by name (README's differences say so).
#[test]
fn python_challenges_with_each_digest() {
    let Some(python) = oldest_and_newest().into_iter().find(|p| p.contains("3.13")) else {
        return eprintln!("skipped: no CPython 3.13 under pyenv");
    };
    watchdog("python digests", LIMIT * 2, || {
        for digest in ["md5", "sha256", "sha384"] {
            let (py, address) = Python::listen(&python, "127.0.0.1:0", &hex(KEY), digest);
            let mut c = connect(&address, Some(KEY)).unwrap();
            exchange(&mut c, digest);
            assert_eq!(py.line(), "done", "{digest}");
        }
        let (py, address) = Python::listen(&python, "127.0.0.1:0", &hex(KEY), "sha3_256");
        let r = connect(&address, Some(KEY));
        match &r {
            Err(Error::AuthenticationFailed(why)) => assert!(why.contains("sha3_256"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(py.line().starts_with("eof"));
    });
}

/// A fake server: accepts one client on a fresh path and runs `script`
/// on the raw stream.
fn fake_server(
    tag: &str,
    script: impl FnOnce(&mut UnixStream) + Send + 'static,
) -> (Tmp, std::thread::JoinHandle<()>) {
    let path = Tmp::new(tag);
    let l = UnixListener::bind(&path.0).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        script(&mut s);
    });
    (path, t)
}

/// One frame on a raw stream (errors ignored: the peer may have left).
fn put(s: &mut UnixStream, message: &[u8]) {
    let mut out = Vec::new();
    frame::push(&mut out, message).unwrap();
    let _ = s.write_all(&out);
}

/// One frame from a raw stream, if the peer sent one.
fn take(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut header = [0; 4];
    s.read_exact(&mut header).ok()?;
    let mut m = vec![0; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut m).ok()?;
    Some(m)
}

/// Challenges a client cannot answer: empty, one byte short of a legacy
/// one, 1 MiB, digests unknown or misspelt. Each is refused at once (not
/// after the handshake's timeout), the challenge over 256 bytes without
/// being read whole.
#[test]
fn strange_challenges_are_refused_at_once() {
    let nonce = [9u8; 40];
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![1; 19],
        vec![1; 1 << 20],
        [&b"{md4}"[..], &nonce].concat(),
        [&b"{}"[..], &nonce].concat(),
        [&b"{sha256"[..], &nonce].concat(),
        [&b"{SHA256}"[..], &nonce].concat(),
        [&b"{sha256}"[..]].concat(),
    ];
    watchdog("strange challenges", LIMIT, || {
        for body in bodies {
            let shown = String::from_utf8_lossy(&body[..body.len().min(12)]).into_owned();
            let (path, t) = fake_server("strange", move |s| {
                put(s, &[&b"#CHALLENGE#"[..], &body].concat());
                // Whatever comes back, until the client leaves.
                let _ = s.read_to_end(&mut Vec::new());
            });
            let started = std::time::Instant::now();
            let r = connect(&path.address(), Some(KEY));
            assert!(refused(&r), "{shown:?}: {r:?}");
            assert!(started.elapsed() < Duration::from_secs(10), "{shown:?}");
            t.join().unwrap();
        }
    });
}

/// A server that welcomes any answer, and then cannot answer our
/// challenge (or welcomes us before challenging, or leaves mid-way): the
/// handshake is mutual, so our client refuses it, tells it `#FAILURE#`
/// where it answered wrongly, and returns no connection.
#[test]
fn a_server_that_welcomes_anything_is_refused() {
    watchdog("welcoming servers", LIMIT, || {
        let (path, t) = fake_server("welcome", |s| {
            put(s, &[&b"#CHALLENGE#{sha256}"[..], &[3; 40]].concat());
            take(s).unwrap();
            put(s, b"#WELCOME#");
            let ours = take(s).unwrap();
            assert!(ours.starts_with(b"#CHALLENGE#{sha256}"));
            put(s, &[&b"{sha256}"[..], &[0; 32]].concat());
            assert_eq!(take(s).as_deref(), Some(&b"#FAILURE#"[..]));
        });
        let r = connect(&path.address(), Some(KEY));
        assert!(refused(&r), "{r:?}");
        t.join().unwrap();

        // A welcome instead of a challenge; a challenge and then the end;
        // a welcome and then the end.
        type Script = fn(&mut UnixStream);
        let scripts: [Script; 3] = [
            |s| put(s, b"#WELCOME#"),
            |s| put(s, &[&b"#CHALLENGE#"[..], &[3; 20]].concat()),
            |s| {
                put(s, &[&b"#CHALLENGE#"[..], &[3; 20]].concat());
                take(s).unwrap();
                put(s, b"#WELCOME#");
            },
        ];
        for script in scripts {
            let (path, t) = fake_server("leaves", script);
            let r = connect(&path.address(), Some(KEY));
            assert!(refused(&r), "{r:?}");
            t.join().unwrap();
        }
    });
}

/// A client that answers our challenge with a long header announcing
/// 3 GiB: refused from the header, nothing of that size allocated, and
/// the listener takes the next client.
#[test]
fn a_long_header_in_the_handshake_is_refused_from_the_header() {
    watchdog("long header", LIMIT, || {
        let path = Tmp::new("longhdr");
        let l = Listener::bind(&path.address(), Some(KEY)).unwrap();
        let p = path.0.clone();
        let t = std::thread::spawn(move || {
            let mut s = UnixStream::connect(&p).unwrap();
            take(&mut s).unwrap();
            let mut header = vec![0xff; 4];
            header.extend((3u64 << 30).to_be_bytes());
            s.write_all(&header).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
            let mut good = connect(&Address::Unix(p), Some(KEY)).unwrap();
            good.send_bytes(b"second").unwrap();
        });
        let r = l.accept();
        match &r {
            Err(Error::AuthenticationFailed(why)) => assert!(why.contains("limit"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.accept().unwrap().recv_bytes().unwrap(), b"second");
        t.join().unwrap();
    });
}

/// A connection and the raw socket at its other end.
fn raw_pair() -> (UnixStream, Connection) {
    let (raw, ours) = UnixStream::pair().unwrap();
    (raw, Connection::from_socket(ours.into()).unwrap())
}

/// Headers at the format's edges: the largest short length (refused
/// under the default limit, from its header); the long form for 0 and
/// for a few bytes (read, as Python reads them); the long form for one
/// byte over the limit (refused); a negative short length other than -1
/// (refused: Python would read it as an empty message).
#[test]
fn headers_at_the_formats_edges() {
    let (mut raw, mut c) = raw_pair();
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    let r = c.recv_bytes();
    assert!(
        matches!(
            r,
            Err(Error::MessageTooLarge {
                size: 0x7fff_ffff,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(c.closed());

    let (mut raw, mut c) = raw_pair();
    let long = |len: u64| [&[0xff; 4][..], &len.to_be_bytes()].concat();
    raw.write_all(&long(0)).unwrap();
    raw.write_all(&[long(5), b"fives".to_vec()].concat())
        .unwrap();
    assert_eq!(c.recv_bytes().unwrap(), b"");
    let mut into = [0; 8];
    assert_eq!(c.recv_bytes_into(&mut into).unwrap(), 5);
    assert_eq!(&into[..5], b"fives");
    c.set_max_message(10);
    raw.write_all(&long(11)).unwrap();
    let r = c.recv_bytes();
    assert!(
        matches!(
            r,
            Err(Error::MessageTooLarge {
                size: 11,
                limit: 10
            })
        ),
        "{r:?}"
    );
    assert!(c.closed());

    let (mut raw, mut c) = raw_pair();
    raw.write_all(&[0x80, 0, 0, 0]).unwrap();
    assert!(matches!(c.recv_bytes(), Err(Error::Deserialize(_))));
    assert!(c.closed());
}

/// Sends to a socket peer that is gone are `ConnectionClosed`, over a
/// Unix socket pair and TCP, in a process whose SIGPIPE has its default
/// action (the signal would kill it).
#[test]
fn sends_to_a_gone_socket_peer_raise_no_sigpipe() {
    let p = common::static_child(|| {
        // SAFETY: this child's own disposition of SIGPIPE.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        assert_ne!(old, libc::SIG_ERR);
        let (a, mut b) = Pipe::duplex().unwrap();
        drop(a);
        let r = b.send_bytes(b"to nobody");
        assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let mut c = Connection::from_socket(s.into()).unwrap();
        drop(tcp.accept().unwrap());
        drop(tcp);
        // TCP takes the first sends after the peer's close (its reset
        // comes back later): one of the next must fail.
        let r = (0..1000)
            .map(|_| c.send_bytes(&[1; 1000]))
            .find(|r| r.is_err())
            .unwrap_or(Ok(()));
        assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
    });
    assert_eq!(
        common::join(&p, LIMIT),
        0,
        "the child died (-13: of SIGPIPE)"
    );
}

/// `poll` without a timeout, and with `Duration::MAX`, returns when the
/// peer closes; `poll(0)` on nothing is false at once.
#[test]
fn poll_sees_the_peer_leave() {
    watchdog("poll", LIMIT, || {
        for timeout in [
            None,
            Some(Duration::MAX),
            Some(Duration::from_secs(u64::MAX / 4)),
        ] {
            let (mut a, b) = Pipe::duplex().unwrap();
            assert!(!a.poll(Some(Duration::ZERO)).unwrap());
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(b);
            });
            assert!(a.poll(timeout).unwrap(), "{timeout:?}");
            assert!(matches!(a.recv_bytes(), Err(Error::ConnectionClosed)));
            assert!(a.poll(Some(Duration::ZERO)).unwrap());
            t.join().unwrap();
        }
    });
}

/// A one-way pipe's ends used the wrong way: every call is
/// `InvalidArgument`, and neither end is closed by it (the next message
/// goes through).
#[test]
fn one_way_ends_refuse_the_other_direction() {
    let (mut reader, mut writer) = Pipe(false).unwrap();
    let invalid = |r: multiproc::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{what}: {r:?}");
    };
    invalid(reader.send_bytes(b"x"), "send_bytes");
    invalid(reader.send(&1u8), "send");
    let rt = common::current_thread();
    invalid(
        rt.block_on(reader.send_bytes_async(b"x")),
        "send_bytes_async",
    );
    invalid(writer.recv_bytes().map(drop), "recv_bytes");
    invalid(
        writer.recv_bytes_into(&mut [0; 4]).map(drop),
        "recv_bytes_into",
    );
    invalid(
        writer.recv_bytes_timeout(Duration::ZERO).map(drop),
        "recv_bytes_timeout",
    );
    invalid(writer.recv::<u8>().map(drop), "recv");
    invalid(
        rt.block_on(writer.recv_bytes_async()).map(drop),
        "recv_bytes_async",
    );
    invalid(writer.poll(None).map(drop), "poll");
    assert!(!reader.closed() && !writer.closed());
    assert!(reader.readable() && !reader.writable());
    assert!(writer.writable() && !writer.readable());
    writer.send(&42u32).unwrap();
    assert_eq!(reader.recv::<u32>().unwrap(), 42);
}

/// The OS error kind of `r`'s error.
fn io_kind<T: std::fmt::Debug>(r: multiproc::Result<T>) -> std::io::ErrorKind {
    match r {
        Err(Error::Io { source, .. }) => source.kind(),
        other => panic!("{other:?}"),
    }
}

/// A client to where nothing listens is told what is there: no file
/// (`NotFound`), a socket file nobody listens on or a closed TCP port
/// (`ConnectionRefused`), a path too long for a socket address.
#[test]
fn a_client_where_nothing_listens_says_what_is_there() {
    use std::io::ErrorKind;
    let path = Tmp::new("nobody");
    assert_eq!(
        io_kind(connect(&path.address(), Some(KEY))),
        ErrorKind::NotFound
    );
    drop(UnixListener::bind(&path.0).unwrap());
    assert_eq!(
        io_kind(connect(&path.address(), Some(KEY))),
        ErrorKind::ConnectionRefused
    );
    // A port nothing listens on, kept by this test meanwhile (a port
    // freed by a dropped listener may be another test's by the connect):
    // the local end of a connection, bound and never listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let address: Address = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        io_kind(connect(&address, None)),
        ErrorKind::ConnectionRefused
    );
    let long = Address::Unix(std::env::temp_dir().join("x".repeat(200)));
    assert!(matches!(connect(&long, None), Err(Error::Io { .. })));
}

/// Many clients queued before the first accept, then the socket file
/// removed by someone else: the queued clients are still accepted, each
/// with its message, and the listener's drop is quiet.
#[test]
fn queued_clients_are_accepted_after_the_file_goes() {
    const CLIENTS: u32 = 48;
    watchdog("queued clients", LIMIT, || {
        let path = Tmp::new("queued");
        let l = Listener::bind(&path.address(), None).unwrap();
        let clients: Vec<Connection> = (0..CLIENTS)
            .map(|i| {
                let s = UnixStream::connect(&path.0).unwrap();
                let mut c = Connection::from_socket(s.into()).unwrap();
                c.send(&i).unwrap();
                c
            })
            .collect();
        std::fs::remove_file(&path.0).unwrap();
        let seen: Vec<u32> = (0..CLIENTS)
            .map(|_| l.accept().unwrap().recv::<u32>().unwrap())
            .collect();
        assert_eq!(seen, (0..CLIENTS).collect::<Vec<_>>());
        drop(clients);
        drop(l);
        assert!(!path.0.exists());
    });
}

/// Binding at the path of a live CPython listener is `AddrInUse`, as
/// Python's own second bind is, and must not reach that listener: its
/// `accept` took the probe for a client, which left at once (with a key,
/// `accept` raised `EOFError` or `ConnectionResetError`, ending a
/// `while True: listener.accept()` server loop).
#[test]
fn a_bind_at_a_live_python_listeners_path_leaves_it_alone() {
    let Some(pythons) = pythons() else {
        return;
    };
    watchdog("bind over python", LIMIT * 2, || {
        for python in &pythons {
            let path = Tmp::new("pybind");
            let (py, address) = Python::listen(python, path.0.to_str().unwrap(), &hex(KEY), "-");
            let r = Listener::bind(&address, Some(KEY));
            assert_eq!(io_kind(r), std::io::ErrorKind::AddrInUse, "{python}");
            // Its accept's first client is the real one.
            let mut c = connect(&address, Some(KEY)).unwrap();
            exchange(&mut c, python);
            assert_eq!(py.line(), "done", "{python}");
        }
    });
}

/// CPython's side of an inherited pipe: its descriptor 3 as a
/// `Connection` (`duplex`: read and write; `reader`: read only, then
/// the reversed messages on stdout; `writer`: write only). It echoes
/// each message reversed until `bye`, then sends `b''` and a 100 KiB one,
/// and prints `done`.
const PIPE_SCRIPT: &str = r#"
import sys, signal
from multiprocessing.connection import Connection
signal.alarm(60)
mode = sys.argv[1]
c = Connection(3, readable=mode != 'writer', writable=mode != 'reader')
if mode == 'writer':
    for m in (b'one', b'', bytes(range(256)) * 400):
        c.send_bytes(m)
else:
    while True:
        m = c.recv_bytes()
        if m == b'bye':
            break
        if mode == 'duplex':
            c.send_bytes(m[::-1])
        else:
            print(len(m), flush=True)
    if mode == 'duplex':
        c.send_bytes(b'')
        c.send_bytes(b'z' * 102400)
c.close()
print('done', flush=True)
"#;

/// Runs [`PIPE_SCRIPT`] in `mode` with `end` as its descriptor 3.
fn python_on_fd(python: &str, mode: &str, end: Connection) -> Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = end.as_raw_fd();
    let mut command = Command::new(python);
    command
        .args(["-c", PIPE_SCRIPT, mode])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let onto_3 = move || {
        let done = if fd == 3 {
            // Already 3 (a dup2 onto itself would leave it close-on-exec):
            // kept open across the exec instead.
            // SAFETY: fcntl of a descriptor the parent holds open.
            unsafe { libc::fcntl(3, libc::F_SETFD, 0) }
        } else {
            // SAFETY: dup2 of a descriptor the parent holds open.
            unsafe { libc::dup2(fd, 3) }
        };
        if done < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls dup2 or fcntl, which are
    // async-signal-safe, between fork and exec.
    unsafe { command.pre_exec(onto_3) };
    let child = command.spawn().expect("python runs");
    drop(end);
    child
}

/// What a finished script printed.
fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Our pipes, duplex and one-way, with a CPython `Connection` on the
/// other end (as `multiprocessing.Pipe` gives a child), both directions.
#[test]
fn our_pipes_with_a_python_connection_at_the_other_end() {
    let Some(pythons) = pythons() else {
        return;
    };
    watchdog("python pipes", LIMIT * 2, || {
        for python in &pythons {
            let (mut ours, theirs) = Pipe::duplex().unwrap();
            let py = python_on_fd(python, "duplex", theirs);
            exchange_then_theirs(&mut ours, python);
            assert_eq!(output(py), "done\n", "{python}");

            let (reader, mut writer) = Pipe::simplex().unwrap();
            let py = python_on_fd(python, "reader", reader);
            for m in [&b"ab"[..], b"", &[1; 200_000]] {
                writer.send_bytes(m).unwrap();
            }
            writer.send_bytes(b"bye").unwrap();
            assert_eq!(output(py), "2\n0\n200000\ndone\n", "{python}");

            let (mut reader, writer) = Pipe::simplex().unwrap();
            let py = python_on_fd(python, "writer", writer);
            assert_eq!(reader.recv_bytes().unwrap(), b"one");
            assert_eq!(reader.recv_bytes().unwrap(), b"");
            let big = reader.recv_bytes().unwrap();
            assert!(big.len() == 102_400 && big.iter().enumerate().all(|(i, &b)| b == i as u8));
            assert!(matches!(reader.recv_bytes(), Err(Error::ConnectionClosed)));
            assert_eq!(output(py), "done\n", "{python}");
        }
    });
}

/// [`exchange`] without its final end: the peer's own two messages
/// first.
fn exchange_then_theirs(conn: &mut Connection, what: &str) {
    for m in [&b"hello"[..], b"", &[7u8; 70_000]] {
        conn.send_bytes(m).unwrap();
        let mut back = conn.recv_bytes().unwrap();
        back.reverse();
        assert_eq!(back, m, "{what}");
    }
    conn.send_bytes(b"bye").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    assert_eq!(conn.recv_bytes().unwrap(), vec![b'z'; 102_400]);
    assert!(matches!(conn.recv_bytes(), Err(Error::ConnectionClosed)));
}

/// A fresh stream socket that was never connected (Unix and TCP), taken
/// as a connection: every send and receive fails at once, none waits for
/// ever, and `poll` says it is ready (there is an error to read).
#[test]
fn a_socket_never_connected_fails_at_once() {
    use std::os::fd::{FromRawFd, OwnedFd};
    watchdog("unconnected", LIMIT, || {
        for family in [libc::AF_UNIX, libc::AF_INET] {
            // SAFETY: plain syscall; the descriptor is owned at once.
            let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0);
            // SAFETY: a fresh descriptor nothing else owns.
            let mut c = Connection::from_socket(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap();
            let r = c.send_bytes(b"x");
            assert!(r.is_err(), "{family}: {r:?}");
            assert!(c.poll(Some(Duration::from_secs(5))).unwrap(), "{family}");
            let r = c.recv_bytes();
            assert!(r.is_err(), "{family}: {r:?}");
            let r = common::current_thread().block_on(c.recv_bytes_async());
            assert!(r.is_err(), "{family}: {r:?}");
        }
    });
}

/// Small edges of a receive: an empty buffer takes an empty message and
/// hands a 1-byte one back whole; a limit of 0 takes empty messages only;
/// a message cut short by the peer's end closes the connection, after
/// which every call is an error (none panics or waits).
#[test]
fn small_edges_of_a_receive() {
    watchdog("small edges", LIMIT, || {
        let (mut raw, mut c) = raw_pair();
        let mut stream = Vec::new();
        for m in [&b""[..], b"x", b"", b"yz"] {
            frame::push(&mut stream, m).unwrap();
        }
        raw.write_all(&stream).unwrap();
        assert_eq!(c.recv_bytes_into(&mut []).unwrap(), 0);
        match c.recv_bytes_into(&mut []) {
            Err(Error::BufferTooShort(m)) => assert_eq!(m, b"x"),
            other => panic!("{other:?}"),
        }
        c.set_max_message(0);
        assert_eq!(c.recv_bytes().unwrap(), b"");
        assert!(matches!(
            c.recv_bytes(),
            Err(Error::MessageTooLarge { size: 2, limit: 0 })
        ));
        assert!(c.closed());

        let (mut raw, mut c) = raw_pair();
        raw.write_all(&[0, 0, 0, 5, b'a', b'b']).unwrap();
        drop(raw);
        assert!(matches!(c.recv_bytes(), Err(Error::ConnectionClosed)));
        assert!(c.closed());
        assert!(c.recv_bytes().is_err());
        assert!(c.send_bytes(b"x").is_err());
        assert!(c.poll(Some(Duration::ZERO)).is_err());
        assert!(multiproc::conn::wait(&[&c], Some(Duration::ZERO)).is_err());
    });
}

/// The socket file of a CPython listener that was killed is stale: a
/// bind there replaces it (the kernel lists no listener for it), and a
/// Python client then reaches ours.
#[test]
fn a_killed_python_listeners_file_is_replaced() {
    let Some(python) = oldest_and_newest().pop() else {
        return eprintln!("skipped: no CPython 3.8 or 3.13 under pyenv");
    };
    watchdog("killed python listener", LIMIT, || {
        let path = Tmp::new("pykilled");
        let (mut py, address) = Python::listen(&python, path.0.to_str().unwrap(), &hex(KEY), "-");
        py.child.kill().unwrap();
        py.child.wait().unwrap();
        assert!(path.0.exists());
        let l = Listener::bind(&address, Some(KEY)).unwrap();
        let py = Python::start(
            &python,
            &["client", path.0.to_str().unwrap(), &hex(KEY), "-"],
        );
        exchange(&mut l.accept().unwrap(), &python);
        assert_eq!(py.line(), "done");
    });
}

/// Many authenticated clients at once on a Unix listener, each served by
/// one accepting thread in turn: every one gets through, with its own
/// message.
#[test]
fn many_authenticated_unix_clients_at_once() {
    const CLIENTS: u32 = 64;
    watchdog("many unix clients", LIMIT, || {
        let path = Tmp::new("many");
        let l = Listener::bind(&path.address(), Some(KEY)).unwrap();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let address = path.address();
                std::thread::spawn(move || {
                    let mut c = connect(&address, Some(KEY)).unwrap();
                    c.send(&i).unwrap();
                    assert_eq!(c.recv::<u32>().unwrap(), i + 1000);
                })
            })
            .collect();
        for _ in 0..CLIENTS {
            let mut c = l.accept().unwrap();
            let i: u32 = c.recv().unwrap();
            c.send(&(i + 1000)).unwrap();
        }
        for t in clients {
            t.join().unwrap();
        }
    });
}

/// The manager server's handshake (its event loop's) with an empty key
/// and a 32 KiB one, and CPython 3.8's and 3.13's manager clients.
#[test]
fn the_manager_server_with_empty_and_huge_keys() {
    const CLIENT: &str = r#"
import sys, signal
from multiprocessing.managers import SyncManager
signal.alarm(60)
m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
d = m.dict()
d['a'] = 41
print(d['a'] + 1, flush=True)
try:
    SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode() + b'!').connect()
    print('wrong key welcomed')
except Exception as e:
    print(type(e).__name__)
"#;
    let Some(pythons) = pythons() else {
        return;
    };
    let huge = "k".repeat(32 << 10);
    watchdog("manager keys", LIMIT * 2, || {
        for key in ["", huge.as_str()] {
            let (server, path, conn) = common::serve_manager("ca5keys", key.as_bytes());
            drop(conn);
            for python in &pythons {
                let mut command = Command::new(python);
                command.args(["-c", CLIENT, path.to_str().unwrap(), key]);
                let (status, out, err) = common::run_with_deadline(&mut command, b"", LIMIT);
                assert!(status.success(), "{python}, key of {}: {err}", key.len());
                assert_eq!(
                    out,
                    "42\nAuthenticationError\n",
                    "{python}, key of {}",
                    key.len()
                );
            }
            common::cpython::shut_down(&path, key);
            common::join(&server, LIMIT);
        }
    });
}

/// Random answers and challenges from fake clients (a fixed seed): every
/// accept fails with `AuthenticationFailed`, none panics or waits, and a
/// real client then gets through.
#[test]
fn random_handshake_messages_are_refused() {
    const ROUNDS: usize = 200;
    watchdog("random handshakes", LIMIT, || {
        let path = Tmp::new("random");
        let l = Listener::bind(&path.address(), Some(KEY)).unwrap();
        let p = path.0.clone();
        let t = std::thread::spawn(move || {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let prefixes: [&[u8]; 6] = [
                b"",
                b"#CHALLENGE#",
                b"#WELCOME#",
                b"{sha256}",
                b"{md5}",
                b"{",
            ];
            for _ in 0..ROUNDS {
                let mut s = UnixStream::connect(&p).unwrap();
                take(&mut s).unwrap();
                let mut m = prefixes[next() as usize % prefixes.len()].to_vec();
                let len = next() as usize % 300;
                m.extend((0..len).map(|_| next() as u8));
                put(&mut s, &m);
                // A second message, for the case the first was taken.
                put(&mut s, &m);
                let _ = s.read_to_end(&mut Vec::new());
            }
            let mut c = connect(&Address::Unix(p), Some(KEY)).unwrap();
            c.send_bytes(b"real").unwrap();
        });
        for _ in 0..ROUNDS {
            let r = l.accept();
            assert!(refused(&r), "{r:?}");
        }
        assert_eq!(l.accept().unwrap().recv_bytes().unwrap(), b"real");
        t.join().unwrap();
    });
}
