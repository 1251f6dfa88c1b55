//! `multiproc manager serve`, run as the command it is.

// The library's test helpers, shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::conn::Address;

/// Issue 12, also: `multiproc manager serve` refuses an authkey file that
/// other users may read, unless told to (then it warns).
#[test]
fn manager_serve_refuses_a_readable_authkey_file() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    watchdog("manager serve", Duration::from_secs(60), || {
        let dir = std::env::temp_dir().join(format!("multiproc-test-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, b"secret").unwrap();
        let serve = |extra: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_multiproc"))
                .args(["manager", "serve", "--listen"])
                .arg(format!("unix:{}", dir.join("sock").display()))
                .arg("--authkey-file")
                .arg(&key)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = serve(&[]).wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("chmod 600"), "{err}");
        // Told to, it serves, with a warning; so it does on a private file.
        for (mode, extra) in [(0o644, &["--allow-readable-authkey"][..]), (0o600, &[])] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let mut server = serve(extra);
            let mut line = String::new();
            BufReader::new(server.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.starts_with("serving on"), "{line}");
            server.kill().unwrap();
            let out = server.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.contains("warning"), mode == 0o644, "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// A request `(ident, method, args, {})` pickled by hand (protocol 2),
/// with `args` already pickled (each a complete value, back to back).
fn request(ident: Option<&str>, method: &str, args: &[u8]) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &str| {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    };
    let mut out = vec![0x80, 2, b'('];
    match ident {
        Some(ident) => string(&mut out, ident),
        None => out.push(b'N'),
    }
    string(&mut out, method);
    out.push(b'(');
    out.extend(args);
    out.extend(b"t}t.");
    out
}

/// A pickled str.
fn str_arg(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
    out
}

/// A pickled small int.
fn int_arg(i: u8) -> Vec<u8> {
    vec![b'K', i]
}

/// Whether a reply is a `#RETURN` of the small int `i` (as protocol 4
/// writes it: `BININT1 i` right before the closing `TUPLE2`).
fn returns_int(reply: &[u8], i: u8) -> bool {
    reply.windows(7).any(|w| w == b"#RETURN") && reply.ends_with(&[b'K', i, 0x86, b'.'])
}

/// `multiproc manager serve` on a fresh socket: the server, the socket's
/// address and the directory to remove.
struct Served {
    server: std::process::Child,
    address: multiproc::conn::Address,
    dir: std::path::PathBuf,
}

impl Served {
    fn start(extra: &[&str]) -> Served {
        use std::io::{BufRead, BufReader};
        use std::os::unix::fs::PermissionsExt;
        use std::process::{Command, Stdio};
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("multiproc-serve-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, b"secret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sock = dir.join("sock");
        let mut command = Command::new(env!("CARGO_BIN_EXE_multiproc"));
        command
            .args(["manager", "serve", "--listen"])
            .arg(format!("unix:{}", sock.display()))
            .arg("--authkey-file")
            .arg(&key)
            .args(extra)
            .stdout(Stdio::piped());
        // As at a terminal: the stop signals' default actions, whatever
        // this test inherited (a background job's shell ignores SIGINT,
        // `nohup` SIGHUP).
        let default_stop_signals = || {
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: `signal` is async-signal-safe.
                unsafe { libc::signal(signal, libc::SIG_DFL) };
            }
            Ok(())
        };
        // SAFETY: the hook calls only an async-signal-safe function.
        unsafe { std::os::unix::process::CommandExt::pre_exec(&mut command, default_stop_signals) };
        let mut server = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("serving on"), "{line}");
        Served {
            server,
            address: multiproc::conn::Address::Unix(sock),
            dir,
        }
    }

    fn connect(&self) -> multiproc::conn::Connection {
        multiproc::conn::connect(&self.address, Some(b"secret")).unwrap()
    }

    /// Asks the server to shut down, and waits for it to exit.
    fn shutdown(mut self) {
        let mut c = self.connect();
        c.send_bytes(&request(None, "shutdown", b"")).unwrap();
        let _ = c.recv_bytes();
        assert!(self.server.wait().unwrap().success());
    }
}

/// A test that failed before `shutdown` leaves no server behind (it would
/// hold the test harness's output open) and no files.
impl Drop for Served {
    fn drop(&mut self) {
        if self.server.try_wait().ok().flatten().is_none() {
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The ident `create` answered (the hex digits of the first string after
/// the reply's tag).
fn created(reply: &[u8]) -> String {
    let at = reply
        .windows(7)
        .position(|w| w == b"#RETURN")
        .expect("#RETURN")
        + 7;
    let rest = &reply[at..];
    // SHORT_BINUNICODE, its length, the ident.
    let at = rest.iter().position(|&b| b == 0x8c).unwrap();
    let len = rest[at + 1] as usize;
    String::from_utf8(rest[at + 2..at + 2 + len].to_vec()).unwrap()
}

/// A queue's `get` that must wait is parked in the server's event loop:
/// other clients are served meanwhile, a `put` wakes it with the item; and
/// the waiting call of a client that is gone is dropped, not handed the
/// next item.
#[test]
fn manager_serve_parks_waiting_queue_calls() {
    watchdog("manager serve queues", Duration::from_secs(60), || {
        let m = Served::start(&["--object", "get_queue=Queue"]);
        let mut a = m.connect();
        a.send_bytes(&request(None, "create", &str_arg("get_queue")))
            .unwrap();
        let q = created(&a.recv_bytes().unwrap());
        a.send_bytes(&request(Some(&q), "get", b"")).unwrap();
        assert!(!a.poll(Some(Duration::from_millis(200))).unwrap());
        let mut b = m.connect();
        b.send_bytes(&request(Some(&q), "put", &int_arg(7)))
            .unwrap();
        assert!(b.recv_bytes().unwrap().windows(7).any(|w| w == b"#RETURN"));
        assert!(returns_int(&a.recv_bytes().unwrap(), 7));
        // A waits again, and goes away: its call is dropped with it.
        a.send_bytes(&request(Some(&q), "get", b"")).unwrap();
        let refcount = |b: &mut multiproc::conn::Connection| {
            b.send_bytes(&request(None, "debug_info", b"")).unwrap();
            let info = b.recv_bytes().unwrap();
            let text = String::from_utf8_lossy(&info).into_owned();
            text.split("refcount=").nth(1).unwrap_or("").chars().next()
        };
        // The server's own reference to a registered name's object, A's,
        // and the one A's waiting call holds.
        assert!(common::wait_until(Duration::from_secs(10), || refcount(
            &mut b
        ) == Some(
            '3'
        )));
        drop(a);
        assert!(common::wait_until(Duration::from_secs(10), || refcount(
            &mut b
        ) == Some(
            '2'
        )));
        b.send_bytes(&request(Some(&q), "put", &int_arg(8)))
            .unwrap();
        b.recv_bytes().unwrap();
        b.send_bytes(&request(Some(&q), "get_nowait", b"")).unwrap();
        assert!(returns_int(&b.recv_bytes().unwrap(), 8));
        drop(b);
        m.shutdown();
    });
}

/// Stopped by a signal (Ctrl-C, `kill`, its terminal closing), the server
/// removes its socket file; after Ctrl-C it exits with 0, as Python's
/// `serve_forever` does, and after the others it dies of the signal. A
/// client's next call finds it gone.
#[test]
fn manager_serve_removes_its_socket_file_when_stopped_by_a_signal() {
    use std::os::unix::process::ExitStatusExt;
    watchdog("manager serve signals", Duration::from_secs(60), || {
        for (signal, code, by) in [
            (libc::SIGINT, Some(0), None),
            (libc::SIGTERM, None, Some(libc::SIGTERM)),
            (libc::SIGHUP, None, Some(libc::SIGHUP)),
        ] {
            let mut m = Served::start(&[]);
            let Address::Unix(path) = m.address.clone() else {
                unreachable!("a Unix address")
            };
            let mut c = m.connect();
            assert!(path.exists());
            // SAFETY: a signal to the server this test started.
            assert_eq!(unsafe { libc::kill(m.server.id() as i32, signal) }, 0);
            let status = m.server.wait().unwrap();
            assert_eq!(
                (status.code(), status.signal()),
                (code, by),
                "signal {signal}"
            );
            assert!(!path.exists(), "signal {signal} left {}", path.display());
            c.send_bytes(&request(None, "debug_info", b"")).ok();
            assert!(c.recv_bytes().is_err());
        }
    });
}

/// `--object NAME=TYPEID` takes only the typeids the server has.
#[test]
fn manager_serve_refuses_an_unknown_typeid() {
    use std::os::unix::fs::PermissionsExt;
    watchdog("manager serve --object", Duration::from_secs(60), || {
        let dir = std::env::temp_dir().join(format!("multiproc-typeid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, b"secret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        for (bad, why) in [
            (&["get_thing=Thing"][..], "typeid"),
            (&["dict=list"], "registered name"),
            (&["get_dict"], "NAME=TYPEID"),
            (&["=dict"], "NAME=TYPEID"),
            (&["get=dict", "get=list"], "registered twice"),
        ] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_multiproc"))
                .args(["manager", "serve", "--listen"])
                .arg(format!("unix:{}", dir.join("sock").display()))
                .arg("--authkey-file")
                .arg(&key)
                .args(bad.iter().flat_map(|b| ["--object", b]))
                .output()
                .unwrap();
            assert!(!out.status.success(), "{bad:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
