//! Python's `multiprocessing.connection` and ours speak one wire: a Python
//! `Listener(authkey=...)` accepts our `conn::connect`, our `Listener`
//! accepts a Python `Client`, messages go both ways (an empty one and one
//! over 64 KiB included), and a wrong key is refused on both sides, with
//! every CPython that pyenv has here (2.7 and 3.6-3.11 answer our
//! challenges with raw HMAC-MD5 and challenge with 20 bytes; 3.12+ with
//! `{sha256}`). Without pyenv's Pythons the tests say so and pass.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::watchdog;
use multiproc::conn::{connect, Address, Listener};
use multiproc::{Connection, Error};

/// The most any one scenario may take (a Python start included).
const LIMIT: Duration = Duration::from_secs(60);
const KEY: &[u8] = b"\x00the key\xff, not UTF-8";
const WRONG_KEY: &[u8] = b"not the key";

/// Python 2.7 and 3.x alike. `serve ADDRESS KEYHEX ok|wrong` listens and
/// prints `ready`; `client ADDRESS KEYHEX ok|wrong` connects (`auth`: the
/// same, then closes without a word). With `ok`,
/// the peer echoes each message reversed until `bye`, then sends an empty
/// message and a 76800-byte one and closes; with `wrong`, it expects the
/// handshake to fail and prints why. A Unix address is a path, a TCP one
/// `host:port`. The alarm ends a script that nobody talks to.
const SCRIPT: &str = r#"
from __future__ import print_function
import binascii, signal, sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
signal.alarm(60)
role, address, key, expect = sys.argv[1], sys.argv[2], binascii.unhexlify(sys.argv[3]), sys.argv[4]
if ':' in address:
    host, port = address.rsplit(':', 1)
    address = (host, int(port))

def peer(c):
    while True:
        m = c.recv_bytes()
        if m == b'bye':
            break
        c.send_bytes(m[::-1])
    c.send_bytes(b'')
    c.send_bytes(bytes(bytearray(range(256))) * 300)
    c.close()

if role == 'serve':
    l = Listener(address, authkey=key)
    print('ready')
    sys.stdout.flush()
    try:
        c = l.accept()
    except AuthenticationError as e:
        print('refused:', e)
        sys.exit(0 if expect == 'wrong' else 1)
    finally:
        if expect == 'wrong':
            l.close()
    if expect == 'wrong':
        sys.exit('accepted a wrong key')
    peer(c)
    l.close()
else:
    try:
        c = Client(address, authkey=key)
    except AuthenticationError as e:
        print('refused:', e)
        sys.exit(0 if expect == 'wrong' else 1)
    if expect == 'wrong':
        sys.exit('connected with a wrong key')
    if role == 'client':
        peer(c)
    else:
        c.close()
print('done')
"#;

/// Every CPython that pyenv has here, oldest first.
fn pythons() -> Vec<(String, PathBuf)> {
    let root = std::env::var("PYENV_ROOT")
        .unwrap_or_else(|_| format!("{}/.pyenv", std::env::var("HOME").unwrap_or_default()));
    let mut found: Vec<(Vec<u32>, String, PathBuf)> = std::fs::read_dir(format!("{root}/versions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().into_string().ok()?;
            let parts: Vec<u32> = v
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let python = e.path().join("bin/python");
            python.exists().then_some((parts, v, python))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, v, p)| (v, p)).collect()
}

/// Runs `f` for each installed CPython and says which ran (on fd 2, past
/// the harness's capture); says so, and runs nothing, when none is.
fn each_python(what: &str, mut f: impl FnMut(&str, &PathBuf)) {
    let pythons = pythons();
    if pythons.is_empty() {
        let _ = writeln!(std::io::stderr(), "{what}: no CPython under pyenv; skipped");
        return;
    }
    for (version, python) in &pythons {
        watchdog(&format!("{what} with {version}"), LIMIT, || {
            f(version, python)
        });
    }
    let versions: Vec<&str> = pythons.iter().map(|(v, _)| v.as_str()).collect();
    let _ = writeln!(
        std::io::stderr(),
        "{what}: ran with CPython {}",
        versions.join(", ")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A socket path of this test's own, removed when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(tag: &str) -> SocketPath {
        let path = std::env::temp_dir().join(format!("mp-pyconn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running Python script; killed and reaped if still running when dropped.
struct Python {
    child: Child,
    version: String,
    stdout: Option<BufReader<std::process::ChildStdout>>,
    stderr: std::fs::File,
}

impl Python {
    fn start(version: &str, python: &PathBuf, args: &[&str]) -> Python {
        // Its stderr goes to an unnamed file (a pipe's end could be
        // inherited by a process another test forks, and read to its end
        // it would wait for that process too).
        let stderr = unnamed_file().unwrap();
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{version}: cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().map(BufReader::new);
        Python {
            child,
            version: version.to_owned(),
            stdout,
            stderr,
        }
    }

    /// The next line it printed; `None` at end of output.
    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = self.stdout.as_mut()?.read_line(&mut line).unwrap();
        (n > 0).then(|| line.trim_end().to_owned())
    }

    /// What it wrote to stderr so far.
    fn errors(&mut self) -> String {
        use std::io::Seek;
        let mut s = String::new();
        self.stderr.seek(std::io::SeekFrom::Start(0)).unwrap();
        let _ = self.stderr.read_to_string(&mut s);
        s
    }

    /// Whether it has exited (and with success), without waiting.
    fn exited(&mut self) -> Option<bool> {
        self.child.try_wait().unwrap().map(|s| s.success())
    }

    /// Waits (up to `LIMIT`) for it to exit; the rest of its stdout.
    /// Fails the test unless it exited with success.
    fn finish(mut self) -> String {
        let mut rest = String::new();
        if let Some(out) = self.stdout.as_mut() {
            let _ = out.read_to_string(&mut rest);
        }
        let exited = common::wait_until(LIMIT, || self.child.try_wait().unwrap().is_some());
        assert!(exited, "{}: did not exit", self.version);
        let status = self.child.wait().unwrap();
        let errors = self.errors();
        assert!(
            status.success(),
            "{}: {status}\nstdout: {rest}\nstderr: {errors}",
            self.version
        );
        rest
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A temporary file, already unlinked.
fn unnamed_file() -> std::io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "mp-pyconn-err-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// Talks to the script's `peer`: three messages echoed reversed (an empty
/// one and one over 64 KiB among them), then its own two, then its close.
fn drive(conn: &mut Connection, version: &str) {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for m in [&b"hello"[..], b"", &big] {
        conn.send_bytes(m).unwrap();
        let back = conn.recv_bytes().unwrap();
        let reversed: Vec<u8> = m.iter().rev().copied().collect();
        assert!(back == reversed, "{version}: a {}-byte echo", m.len());
    }
    conn.send_bytes(b"bye").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"", "{version}");
    let theirs = conn.recv_bytes().unwrap();
    let expected: Vec<u8> = (0..300).flat_map(|_| 0..=255u8).collect();
    assert!(theirs == expected, "{version}: its 76800 bytes");
    assert!(
        matches!(conn.recv_bytes(), Err(Error::ConnectionClosed)),
        "{version}: it closed"
    );
}

/// Starts the script as a Python `Listener` at a fresh Unix path and waits
/// until it listens.
fn python_listener(
    version: &str,
    python: &PathBuf,
    key: &[u8],
    expect: &str,
) -> (Python, SocketPath) {
    let path = SocketPath::new(&format!("py{version}"));
    let address = path.0.to_str().unwrap().to_owned();
    let mut py = Python::start(version, python, &["serve", &address, &hex(key), expect]);
    let ready = py.line();
    if ready.as_deref() != Some("ready") {
        let _ = py.child.wait();
        panic!("{version}: not listening: {ready:?}\n{}", py.errors());
    }
    (py, path)
}

#[test]
fn our_client_talks_to_a_python_listener() {
    each_python("our connect -> Python Listener", |version, python| {
        let (py, path) = python_listener(version, python, KEY, "ok");
        let mut conn = connect(&Address::Unix(path.0.clone()), Some(KEY))
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        drive(&mut conn, version);
        assert!(py.finish().contains("done"), "{version}");
    });
}

#[test]
fn a_python_listener_refuses_our_wrong_key_and_we_say_so() {
    each_python(
        "our connect, wrong key -> Python Listener",
        |version, python| {
            let (py, path) = python_listener(version, python, KEY, "wrong");
            let e = connect(&Address::Unix(path.0.clone()), Some(WRONG_KEY)).unwrap_err();
            let Error::AuthenticationFailed(why) = &e else {
                panic!("{version}: {e:?}")
            };
            assert!(
                why.contains("the server rejected our digest"),
                "{version}: {e}"
            );
            let out = py.finish();
            assert!(
                out.contains("refused: digest received was wrong"),
                "{version}: {out}"
            );
        },
    );
}

/// Accepts on `listener` while the script connects; if the script ends
/// before anyone connected, pokes the listener (so that `accept` returns)
/// and fails the test with the script's errors.
fn accept(listener: &Listener, py: &mut Python) -> multiproc::Result<Connection> {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        s.spawn(move || tx.send(listener.accept()).unwrap());
        loop {
            if let Ok(r) = rx.recv_timeout(Duration::from_millis(10)) {
                return r;
            }
            if py.exited().is_some() {
                // It may have connected just before it ended.
                if let Ok(r) = rx.recv_timeout(Duration::from_secs(1)) {
                    return r;
                }
                match listener.address() {
                    Address::Unix(p) => drop(UnixStream::connect(p)),
                    Address::Tcp(a) => drop(TcpStream::connect(a)),
                }
                let _ = rx.recv();
                let errors = py.errors();
                panic!("{}: ended without connecting:\n{errors}", py.version);
            }
        }
    })
}

/// Our `Listener` (on loopback TCP if `tcp`, else at a fresh Unix path)
/// with [`KEY`], and the script as a Python `Client` of it with `key`.
fn python_client(
    version: &str,
    python: &PathBuf,
    tcp: bool,
    key: &[u8],
    expect: &str,
) -> (Listener, Python, SocketPath) {
    let path = SocketPath::new(&format!("ours{version}"));
    let address = if tcp {
        "tcp:127.0.0.1:0".parse().unwrap()
    } else {
        Address::Unix(path.0.clone())
    };
    let listener = Listener::bind(&address, Some(KEY)).unwrap();
    let arg = match listener.address() {
        Address::Unix(p) => p.to_str().unwrap().to_owned(),
        Address::Tcp(a) => a.to_string(),
    };
    let py = Python::start(version, python, &["client", &arg, &hex(key), expect]);
    (listener, py, path)
}

#[test]
fn a_python_client_talks_to_our_listener() {
    for tcp in [false, true] {
        let what = format!(
            "Python Client -> our Listener ({})",
            if tcp { "tcp" } else { "unix" }
        );
        each_python(&what, |version, python| {
            let (listener, mut py, _path) = python_client(version, python, tcp, KEY, "ok");
            let mut conn = accept(&listener, &mut py).unwrap_or_else(|e| panic!("{version}: {e}"));
            drive(&mut conn, version);
            assert!(py.finish().contains("done"), "{version}");
        });
    }
}

#[test]
fn our_listener_refuses_a_python_client_with_a_wrong_key() {
    each_python(
        "Python Client, wrong key -> our Listener",
        |version, python| {
            let (listener, mut py, _path) =
                python_client(version, python, false, WRONG_KEY, "wrong");
            let e = accept(&listener, &mut py).unwrap_err();
            let Error::AuthenticationFailed(why) = &e else {
                panic!("{version}: {e:?}")
            };
            assert!(
                why.contains("the client does not know the authkey"),
                "{version}: {e}"
            );
            let out = py.finish();
            assert!(
                out.contains("refused: digest sent was rejected"),
                "{version}: {out}"
            );
        },
    );
}

/// The manager server runs the same handshake in its event loop: a Python
/// client with the key is welcomed, one without is refused, and the server
/// goes on serving.
#[test]
fn the_manager_server_authenticates_python_clients() {
    let mut m = multiproc::manager::Manager::start().unwrap();
    let Address::Unix(path) = m.address().clone() else {
        panic!("a Unix address")
    };
    let path = path.to_str().unwrap().to_owned();
    let key = hex(m.authkey());
    each_python("Python Client -> the manager server", |version, python| {
        for (key, expect) in [(key.as_str(), "ok"), (&hex(WRONG_KEY), "wrong")] {
            let out = Python::start(version, python, &["auth", &path, key, expect]).finish();
            let said = if expect == "ok" {
                "done"
            } else {
                "refused: digest sent was rejected"
            };
            assert!(out.contains(said), "{version} {expect}: {out}");
        }
    });
    m.shutdown().unwrap();
}
