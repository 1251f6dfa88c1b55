//! A hostile review of the Redis backend: servers that answer late,
//! garbage or never, timeouts at their bounds, a fork in the middle of a
//! call, foreign keys, names that look like other objects' keys.
#![cfg(feature = "redis")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{redis_url, unique};
use multiproc::manager::{Manager, PyValue};
use multiproc::Error;

/// One command a client sent, as its arguments.
type Command = Vec<Vec<u8>>;

/// Reads one RESP command (an array of bulk strings); `None` at the end.
fn read_command(r: &mut BufReader<TcpStream>) -> Option<Command> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        r.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        args.push(arg);
    }
    Some(args)
}

/// A fake Redis server on a loopback port: `PING` and the client's
/// `CLIENT …` handshake answered, every other command given to `answer`
/// (with the connection's number, from 0) which writes what it wants and
/// says whether to go on. Every command is recorded in `seen`.
struct Fake {
    port: u16,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
}

impl Fake {
    fn start(
        answer: impl Fn(usize, &Command, &mut TcpStream) -> bool + Send + Sync + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let log = seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let (answer, log) = (answer.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut w = stream.try_clone().unwrap();
                    let mut r = BufReader::new(stream);
                    while let Some(cmd) = read_command(&mut r) {
                        let name = String::from_utf8_lossy(&cmd[0]).to_uppercase();
                        log.lock().unwrap().push((n, name.clone()));
                        let go_on = match name.as_str() {
                            "PING" => w.write_all(b"+PONG\r\n").is_ok(),
                            "CLIENT" | "SELECT" => w.write_all(b"+OK\r\n").is_ok(),
                            _ => answer(n, &cmd, &mut w),
                        };
                        if !go_on {
                            return;
                        }
                    }
                });
            }
        });
        Fake { port, seen }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// How many times a command named `name` came.
    fn count(&self, name: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n == name)
            .count()
    }
}

const SHORT: Duration = Duration::from_millis(300);

/// A reply that comes after the timeout is never read as the answer of a
/// later call: the late connection is dropped (a read that timed out is
/// not tried again: that would double the wait), and the next call gets
/// its own answer on a new one.
#[test]
fn a_late_reply_is_never_the_next_calls_answer() {
    let fake = Fake::start(|conn, cmd, w| {
        if cmd[0].eq_ignore_ascii_case(b"HLEN") {
            if conn < 1 {
                // Too late, and then the rest of a reply.
                std::thread::sleep(SHORT * 3);
                let _ = w.write_all(b":111\r\n");
                return true;
            }
            return w
                .write_all(format!(":{}\r\n", 200 + conn).as_bytes())
                .is_ok();
        }
        w.write_all(b"-ERR unknown\r\n").is_ok()
    });
    common::watchdog("late replies", Duration::from_secs(30), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let d = m.dict_named::<String, i64>("late").unwrap();
        let started = Instant::now();
        let first = d.len();
        assert!(matches!(first, Err(Error::ManagerGone(_))), "{first:?}");
        assert!(started.elapsed() < SHORT * 5, "{:?}", started.elapsed());
        // One try: the server did not answer in time.
        assert_eq!(fake.count("HLEN"), 1);
        assert_eq!(d.len().unwrap(), 201);
        assert_eq!(d.len().unwrap(), 201);
    });
}

/// A call that changes something is sent once, never twice, when its
/// reply does not come: the caller is told it is ambiguous.
#[test]
fn a_write_whose_reply_is_lost_is_sent_once_and_ambiguous() {
    let fake = Fake::start(|_, cmd, w| {
        if cmd[0].eq_ignore_ascii_case(b"EVALSHA") || cmd[0].eq_ignore_ascii_case(b"EVAL") {
            std::thread::sleep(SHORT * 3);
            return false;
        }
        w.write_all(b":0\r\n").is_ok()
    });
    common::watchdog("a lost write", Duration::from_secs(30), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let d = m.dict_named::<String, i64>("lost").unwrap();
        // `increment` may not run twice (a `set` may: it sets what it sets).
        let r = d.increment(&"k".into(), 1);
        assert!(matches!(r, Err(Error::Ambiguous(_))), "{r:?}");
        assert_eq!(fake.count("EVALSHA") + fake.count("EVAL"), 1);
    });
}

/// Garbage in place of a reply: an error within the timeout, never an
/// allocation of what the garbage announces, never a hang.
#[test]
fn garbage_replies_are_errors_not_allocations_or_hangs() {
    for reply in [
        &b"$9999999999\r\n"[..],
        b"*9999999999\r\n",
        b"*-5\r\n",
        b"$-7\r\n",
        b":99999999999999999999999\r\n",
        b"%9999999999999999999\r\n",
        b"!\r\n",
        b"\x00\x01\x02\r\n",
        b"+OK\r\n",
    ] {
        let fake = Fake::start(move |_, _, w| w.write_all(reply).is_ok());
        common::watchdog("garbage", Duration::from_secs(30), || {
            let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
            let d = m.dict_named::<String, i64>("garbage").unwrap();
            let started = Instant::now();
            let r = d.len();
            assert!(r.is_err(), "{:?}: {r:?}", String::from_utf8_lossy(reply));
            assert!(started.elapsed() < SHORT * 5, "{:?}", started.elapsed());
        });
    }
}

/// Arrays nested ever deeper, without end: the parser's depth bound
/// answers an error, no stack overflow.
#[test]
fn endlessly_nested_arrays_are_an_error() {
    let fake = Fake::start(|_, _, w| {
        let chunk = b"*1\r\n".repeat(1024);
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return false;
            }
        }
        false
    });
    common::watchdog("nested", Duration::from_secs(30), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let d = m.dict_named::<String, i64>("nested").unwrap();
        assert!(d.len().is_err());
    });
}

/// Timeouts at their bounds: 1 ns (below what a socket's timeout can
/// hold) and `Duration::MAX` work, no panic and no "blocks forever".
#[test]
fn tiny_and_endless_timeouts_work() {
    let Some(url) = redis_url("tiny_and_endless_timeouts_work") else {
        return;
    };
    common::watchdog("timeouts", Duration::from_secs(60), || {
        let name = unique("timeouts");
        let m = Manager::connect_redis_with_timeout(&url, Duration::MAX).unwrap();
        let d = m.dict_named::<String, i64>(&name).unwrap();
        d.set("a".into(), 1).unwrap();
        assert_eq!(d.len().unwrap(), 1);
        // 1 ns: connecting or the round trip times out, or (a fast
        // loopback) they are done; never a panic or a hang.
        match Manager::connect_redis_with_timeout(&url, Duration::from_nanos(1)) {
            Ok(m) => {
                let _ = m.dict_named::<String, i64>(&name).unwrap().len();
            }
            Err(e) => assert!(matches!(e, Error::ManagerGone(_)), "{e}"),
        }
        // 1 ns against a server that never answers: an error at once.
        let mute = Fake::start(|_, _, _| {
            std::thread::sleep(Duration::from_secs(5));
            false
        });
        let started = Instant::now();
        if let Ok(m) = Manager::connect_redis_with_timeout(&mute.url(), Duration::from_nanos(1)) {
            let r = m.dict_named::<String, i64>("mute").unwrap().len();
            assert!(r.is_err(), "{r:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        m.remove_named(&name).unwrap();
    });
}

/// A server that wants a password: a clear error with and without the
/// wrong one, and the right one works.
#[test]
fn a_server_that_wants_a_password() {
    let Some(server) = common::redis::OwnServer::start("a_server_that_wants_a_password") else {
        return;
    };
    {
        let mut c = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        c.write_all(b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$6\r\nsecret\r\n")
            .unwrap();
        let mut ok = [0u8; 5];
        c.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
    }
    common::watchdog("auth", Duration::from_secs(30), || {
        let port = server.port;
        match Manager::connect_redis(&format!("redis://127.0.0.1:{port}/")) {
            Err(Error::ManagerGone(e)) => assert!(e.contains("NOAUTH"), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        match Manager::connect_redis(&format!("redis://:wrong@127.0.0.1:{port}/")) {
            Err(e) => {
                let e = e.to_string();
                assert!(!e.contains("wrong"), "the password is shown: {e}");
                eprintln!("wrong password: {e}");
            }
            Ok(_) => panic!("a wrong password connects"),
        }
        let m = Manager::connect_redis(&format!("redis://:secret@127.0.0.1:{port}/")).unwrap();
        let d = m.dict_named::<String, i64>("auth").unwrap();
        d.set("a".into(), 1).unwrap();
        assert_eq!(d.len().unwrap(), 1);
    });
}

/// A reply that trickles in, a byte at a time, each within the timeout:
/// the call still ends near its timeout (the timeout bounds the whole
/// call, not each read).
#[test]
fn a_trickling_reply_ends_near_the_timeout() {
    let fake = Fake::start(|_, _, w| {
        if w.write_all(b"$100000000\r\n").is_err() {
            return false;
        }
        loop {
            std::thread::sleep(SHORT / 3);
            if w.write_all(b"x").is_err() {
                return false;
            }
        }
    });
    common::watchdog("a trickling reply", Duration::from_secs(20), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let d = m.dict_named::<String, i64>("trickle").unwrap();
        let started = Instant::now();
        assert!(d.len().is_err());
        assert!(started.elapsed() < SHORT * 10, "{:?}", started.elapsed());
    });
}

/// How late past its timeout a call against a misbehaving server may end
/// (the bound is the timeout and a few milliseconds; the rest is room for
/// a loaded machine, where a thread may wait hundreds of milliseconds for
/// a CPU). A call tried again is caught by counting what the server got,
/// not by the clock.
const MARGIN: Duration = Duration::from_millis(600);

/// Waits until the client closes the connection (or 30 s pass): a server
/// that stalls.
fn stall(w: &mut TcpStream) -> bool {
    let _ = w.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 256];
    while matches!(w.read(&mut buf), Ok(n) if n > 0) {}
    false
}

/// Sends `reply` a byte at a time, each a third of the timeout after the
/// last, until the client goes.
fn trickle(w: &mut TcpStream, reply: &[u8]) -> bool {
    for chunk in reply.chunks(1).cycle() {
        std::thread::sleep(SHORT / 3);
        if w.write_all(chunk).is_err() {
            return false;
        }
    }
    false
}

/// A server whose first connection gets what `misbehave` does, and
/// every later one `:7`.
fn misbehaving_first(
    misbehave: fn(&mut TcpStream) -> bool,
) -> impl Fn(usize, &Command, &mut TcpStream) -> bool + Send + Sync + 'static {
    move |conn, _, w| {
        if conn == 0 {
            misbehave(w)
        } else {
            w.write_all(b":7\r\n").is_ok()
        }
    }
}

/// The first connection's `HLEN` and `HINCRBY`-like scripts get what
/// `misbehave` does; later connections' get `:7`. Each call on the first
/// ends within the timeout and a margin, with a clear error, and the next
/// call (on a new connection) gets its answer.
fn ends_near_the_timeout(what: &str, misbehave: fn(&mut TcpStream) -> bool) {
    let fake = Fake::start(misbehaving_first(misbehave));
    common::watchdog(what, Duration::from_secs(30), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let d = m.dict_named::<String, i64>("misbehaving").unwrap();
        let started = Instant::now();
        // A read: tried no more after a timeout, the server is "gone".
        match d.len() {
            Err(Error::ManagerGone(e)) => assert!(
                e.contains("timeout") || e.contains("timed out"),
                "{what}: {e}"
            ),
            other => panic!("{what}: {other:?}"),
        }
        let took = started.elapsed();
        assert!(took < SHORT + MARGIN, "{what}: {took:?}");
        assert!(took >= SHORT, "{what}: ended before its timeout: {took:?}");
        // The next call is on a new connection, which answers.
        assert_eq!(d.len().unwrap(), 7, "{what}");
        assert_eq!(fake.count("HLEN"), 2, "{what}");
    });
    // A call that may not run twice: ambiguous, as soon.
    let fake = Fake::start(misbehaving_first(misbehave));
    common::watchdog(what, Duration::from_secs(30), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let d = m.dict_named::<String, i64>("misbehaving").unwrap();
        let started = Instant::now();
        let r = d.increment(&"k".into(), 1);
        assert!(matches!(r, Err(Error::Ambiguous(_))), "{what}: {r:?}");
        assert!(
            started.elapsed() < SHORT + MARGIN,
            "{what}: {:?}",
            started.elapsed()
        );
        assert_eq!(d.len().unwrap(), 7, "{what}");
    });
}

/// A server that takes the command and never answers.
#[test]
fn a_mute_server_ends_the_call_at_its_timeout() {
    ends_near_the_timeout("mute", stall);
}

/// A server that answers half a reply and then stalls.
#[test]
fn half_a_reply_then_a_stall_ends_the_call_at_its_timeout() {
    ends_near_the_timeout("half a reply", |w| {
        if w.write_all(b"$10\r\nhello").is_err() {
            return false;
        }
        stall(w)
    });
}

/// A server that trickles a reply that never ends, a byte at a time, each
/// well within the timeout.
#[test]
fn an_endless_trickle_ends_the_call_at_its_timeout() {
    ends_near_the_timeout("an endless trickle", |w| {
        if w.write_all(b"$100000000\r\n").is_err() {
            return false;
        }
        trickle(w, b"x")
    });
}

/// A trickle whose every byte comes within the timeout but whose reply,
/// a short one, takes longer than it: still a timeout (each read's own
/// bound is not the call's).
#[test]
fn a_short_reply_trickled_past_the_timeout_is_a_timeout() {
    ends_near_the_timeout("a slow short reply", |w| trickle(w, b":1234567890\r\n"));
}

/// An event's wait whose channel message trickles in, a byte at a time:
/// it ends within its wait and the timeout, with an error; a message that
/// never begins ends it at its wait, unset.
#[test]
fn an_events_trickled_message_ends_its_wait() {
    let fake = Fake::start(|conn, cmd, w| {
        let name = String::from_utf8_lossy(&cmd[0]).to_uppercase();
        match name.as_str() {
            "SUBSCRIBE" => {
                let channel = &cmd[1];
                let mut confirm =
                    format!("*3\r\n$9\r\nsubscribe\r\n${}\r\n", channel.len()).into_bytes();
                confirm.extend_from_slice(channel);
                confirm.extend_from_slice(b"\r\n:1\r\n");
                if w.write_all(&confirm).is_err() {
                    return false;
                }
                // The second connection that subscribes: a message that
                // never comes.
                if conn == 2 {
                    return stall(w);
                }
                trickle(w, b"*3\r\n$7\r\nmessage\r\n")
            }
            _ => w.write_all(b":0\r\n").is_ok(),
        }
    });
    common::watchdog("a trickled event", Duration::from_secs(30), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let e = m.event_named("trickled").unwrap();
        let wait = Duration::from_secs(1);
        let started = Instant::now();
        let r = e.wait(Some(wait));
        assert!(matches!(r, Err(Error::ManagerGone(_))), "{r:?}");
        assert!(
            started.elapsed() < wait + SHORT + MARGIN,
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(!e.wait(Some(SHORT)).unwrap());
        let took = started.elapsed();
        assert!(took >= SHORT && took < SHORT + MARGIN, "{took:?}");
    });
}

/// A `redis-server` of this test's own on a Unix socket only, with a
/// password, killed (by pid) and its directory removed when dropped.
struct UnixServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Over a Unix socket (`redis+unix://`), with a password and a database
/// other than 0: the handshake is done, and each call is bounded as over
/// TCP.
#[test]
fn a_unix_socket_with_a_password_and_a_database() {
    // Where the shared server runs, so does redis-server (a machine
    // without one skips, as the shared server's tests do).
    if redis_url("a_unix_socket_with_a_password_and_a_database").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("multiproc-test-unix-redis-{}", unique("u")));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args([
            "--requirepass",
            "secret",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = UnixServer { child, dir };
    assert!(common::wait_until(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    }));
    common::watchdog("unix", Duration::from_secs(30), || {
        let path = socket.to_str().unwrap();
        let refused = Manager::connect_redis_with_timeout(&format!("redis+unix://{path}"), SHORT);
        assert!(
            matches!(refused, Err(Error::ManagerGone(_))),
            "{:?}",
            refused.map(|_| ())
        );
        let m = Manager::connect_redis_with_timeout(
            &format!("redis+unix://{path}?db=2&pass=secret"),
            SHORT,
        )
        .unwrap();
        let d = m.dict_named::<String, i64>("over-unix").unwrap();
        d.set("a".into(), 5).unwrap();
        assert_eq!(d.get(&"a".into()).unwrap(), Some(5));
        // In database 2, not 0.
        let mut raw = std::os::unix::net::UnixStream::connect(path).unwrap();
        raw.write_all(b"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n*2\r\n$6\r\nEXISTS\r\n$28\r\nmultiproc:{dict:over-unix}:v\r\n").unwrap();
        let mut got = [0u8; 9];
        raw.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"+OK\r\n:0\r\n");
        assert!(m.remove_named("over-unix").unwrap());
    });
    drop(server);
    // A Unix server that accepts and never answers: the handshake's PING
    // ends at the timeout.
    let dir = std::env::temp_dir().join(format!("multiproc-test-mute-unix-{}", unique("m")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let later = listener.try_clone().unwrap();
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| stall_unix(s)));
    common::watchdog("mute unix", Duration::from_secs(30), || {
        let started = Instant::now();
        let r =
            Manager::connect_redis_with_timeout(&format!("redis+unix://{}", path.display()), SHORT);
        assert!(
            matches!(r, Err(Error::ManagerGone(_))),
            "{:?}",
            r.map(|_| ())
        );
        let took = started.elapsed();
        assert!(took >= SHORT && took < SHORT + MARGIN, "{took:?}");
        // One connection: the handshake was not tried again.
        later.set_nonblocking(true).unwrap();
        let again = later.accept().map(|_| ());
        assert!(
            matches!(&again, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{again:?}"
        );
    });
    let _ = held.join();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A RESP3 URL (`?protocol=resp3`) speaks RESP2 all the same (the
/// replies multiproc reads are RESP2's; an event's channel messages would
/// be RESP3 push values): the calls, the blocking ones among them, work.
#[test]
fn a_resp3_url_speaks_resp2() {
    let Some(url) = redis_url("a_resp3_url_speaks_resp2") else {
        return;
    };
    common::watchdog("resp3", Duration::from_secs(30), || {
        let m = Manager::connect_redis(&format!("{url}?protocol=resp3")).unwrap();
        let name = unique("resp3");
        let d = m.dict_named::<String, i64>(&name).unwrap();
        d.set("a".into(), 1).unwrap();
        assert_eq!(d.increment(&"a".into(), 2).unwrap(), 3);
        let q = m.queue_named::<String>(&name).unwrap();
        assert!(matches!(
            q.get(Some(Duration::from_millis(50))),
            Err(Error::Empty)
        ));
        q.put(&"x".into()).unwrap();
        let (item, delivery) = q.get(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(item, "x");
        assert!(delivery.ack().unwrap());
        let e = m.event_named(&name).unwrap();
        assert!(!e.wait(Some(Duration::from_millis(50))).unwrap());
        e.set().unwrap();
        assert!(e.wait(Some(Duration::from_secs(5))).unwrap());
        m.remove_named(&name).unwrap();
    });
}

/// Waits until the client closes its Unix connection (or 30 s pass).
fn stall_unix(mut s: std::os::unix::net::UnixStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 256];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// A proxy in front of the test server that passes everything at once,
/// but a chunk from the server that holds `needle`, which it sends a byte
/// at a time, a third of [`SHORT`] apart. Its port.
fn trickling_proxy(upstream: String, needle: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(upstream.as_str()) else {
                return;
            };
            let (mut from_client, mut to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
                let _ = to_server.shutdown(std::net::Shutdown::Write);
            });
            let (mut from_server, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match from_server.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    let sent = if chunk.windows(needle.len()).any(|w| w == needle) {
                        chunk.iter().all(|b| {
                            std::thread::sleep(SHORT / 3);
                            to_client.write_all(&[*b]).is_ok()
                        })
                    } else {
                        to_client.write_all(chunk).is_ok()
                    };
                    if !sent {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A queue `get` whose `BLMOVE` took an item on the server but whose
/// reply trickles: the call ends at its timeout and wait, ambiguous, and
/// the item is not lost: it is in that consumer's items in progress,
/// which return to the queue when the consumer's heartbeat expires (the
/// crate's promise for a call that fails after it may have taken an item:
/// delivered at least once, never dropped).
#[test]
fn a_queue_get_that_times_out_loses_no_item() {
    let Some(url) = redis_url("a_queue_get_that_times_out_loses_no_item") else {
        return;
    };
    let upstream = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let port = trickling_proxy(upstream, b"needle-in-a-queue");
    let name = unique("trickled-queue");
    let direct = Manager::connect_redis(&url).unwrap();
    let theirs = direct
        .queue_named::<String>(&name)
        .unwrap()
        .with_heartbeat(Duration::from_secs(1))
        .unwrap();
    common::watchdog("a trickled queue get", Duration::from_secs(60), || {
        let proxied =
            Manager::connect_redis_with_timeout(&format!("redis://127.0.0.1:{port}/"), SHORT)
                .unwrap();
        let ours = proxied
            .queue_named::<String>(&name)
            .unwrap()
            .with_heartbeat(Duration::from_secs(1))
            .unwrap();
        let wait = Duration::from_secs(2);
        let putter = {
            let theirs = theirs.clone();
            std::thread::spawn(move || {
                // The item comes while the get waits on the server (its
                // `BLMOVE`), or before (then its take script has it):
                // either reply trickles.
                std::thread::sleep(SHORT);
                theirs.put(&"needle-in-a-queue".to_string()).unwrap();
            })
        };
        let started = Instant::now();
        let r = ours.get(Some(wait));
        let took = started.elapsed();
        putter.join().unwrap();
        assert!(
            matches!(r, Err(Error::Ambiguous(_))),
            "{:?}",
            r.map(|(v, _)| v)
        );
        assert!(took < wait + SHORT + MARGIN, "{took:?}");
        // Taken on the server: not waiting in the queue any more.
        assert_eq!(theirs.qsize().unwrap(), 0);
        drop(ours);
        // The item comes back, once.
        let (item, delivery) = theirs.get(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(item, "needle-in-a-queue");
        assert!(delivery.ack().unwrap());
        assert!(matches!(
            theirs.get(Some(Duration::ZERO)),
            Err(Error::Empty)
        ));
    });
    direct.remove_named(&name).unwrap();
}

/// A child forked while another thread of its parent is in the middle of
/// a round trip (holding this process's connection) makes a connection of
/// its own: it never waits on the parent's, nor reads its reply.
#[test]
fn a_fork_during_another_threads_call_does_not_deadlock() {
    let fake = Fake::start(|conn, cmd, w| {
        if cmd[0].eq_ignore_ascii_case(b"HLEN") {
            if conn == 0 {
                std::thread::sleep(Duration::from_secs(3));
                return w.write_all(b":1\r\n").is_ok();
            }
            return w.write_all(b":5\r\n").is_ok();
        }
        w.write_all(b"-ERR unknown\r\n").is_ok()
    });
    let m = Manager::connect_redis_with_timeout(&fake.url(), Duration::from_secs(10)).unwrap();
    let d = m.dict_named::<String, i64>("fork").unwrap();
    let busy = {
        let d = d.clone();
        std::thread::spawn(move || d.len().unwrap())
    };
    assert!(common::wait_until(Duration::from_secs(10), || fake
        .count("HLEN")
        == 1));
    let theirs = d.clone();
    let child = common::static_child(move || {
        assert_eq!(theirs.len().unwrap(), 5);
    });
    assert_eq!(common::join(&child, Duration::from_secs(20)), 0);
    assert_eq!(busy.join().unwrap(), 1);
    // The parent still has its own connection (number 0).
    assert_eq!(d.len().unwrap(), 1);
}

/// Many threads of one process share its connection: every call gets its
/// own answer, and every increment counts.
#[test]
fn many_threads_at_once() {
    let Some(url) = redis_url("many_threads_at_once") else {
        return;
    };
    let name = unique("threads");
    let m = Manager::connect_redis(&url).unwrap();
    let d = m.dict_named::<String, i64>(&name).unwrap();
    common::watchdog("threads", Duration::from_secs(60), || {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        d.increment(&"n".into(), 1).unwrap();
                        let own = format!("t{t}");
                        d.set(own.clone(), i).unwrap();
                        assert_eq!(d.get(&own).unwrap(), Some(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    assert_eq!(d.get(&"n".into()).unwrap(), Some(400));
    m.remove_named(&name).unwrap();
}

/// A raw command on the test server.
fn raw(url: &str, args: &[&[u8]]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c)
        .unwrap_or_else(|e| redis::Value::SimpleString(e.to_string()))
}

fn part(name: &str, p: &str) -> String {
    format!("multiproc:{{dict:{name}}}:{p}")
}

/// A part of a dict that another program made a key of another type: the
/// script says so before it writes anything (Redis does not roll back a
/// script that fails half way).
#[test]
fn a_foreign_part_fails_before_any_write() {
    let Some(url) = redis_url("a_foreign_part_fails_before_any_write") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    for foreign in ["o", "k"] {
        let name = unique("foreign");
        let d = m.dict_named::<PyValue, i64>(&name).unwrap();
        raw(&url, &[b"SET", part(&name, foreign).as_bytes(), b"theirs"]);
        // 1.0 is given in another form than its field: `k` is written too.
        let one = PyValue::Float(1.0);
        assert!(d.set(one.clone(), 1).is_err());
        assert!(d.update(vec![(one.clone(), 1)]).is_err());
        assert!(d.setdefault(one.clone(), 1).is_err());
        assert!(d.increment(&one, 1).is_err());
        assert!(d.compare_and_set(&one, None, 1).is_err());
        assert_eq!(
            raw(&url, &[b"EXISTS", part(&name, "v").as_bytes()]),
            redis::Value::Int(0),
            "{foreign}: a write before the error"
        );
        m.remove_named(&name).unwrap();
    }
}

/// Floats at their edges stored and incremented: inf, NaN, -0.0.
#[test]
fn edge_floats_as_values_and_keys() {
    let Some(url) = redis_url("edge_floats_as_values_and_keys") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    let name = unique("floats");
    let d = m.dict_named::<String, f64>(&name).unwrap();
    d.set("inf".into(), f64::INFINITY).unwrap();
    assert_eq!(d.increment(&"inf".into(), 1.0).unwrap(), f64::INFINITY);
    d.set("nan".into(), f64::NAN).unwrap();
    assert!(d.increment(&"nan".into(), 1.0).unwrap().is_nan());
    d.set("z".into(), -0.0).unwrap();
    let z = d.increment(&"z".into(), -0.0).unwrap();
    assert!(z == 0.0 && z.is_sign_negative(), "{z}");
    d.set("big".into(), f64::MAX).unwrap();
    assert_eq!(d.increment(&"big".into(), f64::MAX).unwrap(), f64::INFINITY);
    let keys = m.dict_named::<f64, i64>(&name).unwrap();
    keys.set(-0.0, 1).unwrap();
    keys.set(0.0, 2).unwrap();
    assert_eq!(keys.get(&0.0).unwrap(), Some(2));
    keys.set(f64::NEG_INFINITY, 3).unwrap();
    assert_eq!(keys.get(&f64::NEG_INFINITY).unwrap(), Some(3));
    // NaN keys are one field here (a manager server keeps each its own).
    keys.set(f64::NAN, 4).unwrap();
    keys.set(-f64::NAN, 5).unwrap();
    assert_eq!(keys.get(&f64::NAN).unwrap(), Some(5));
    // The 4 str keys above, 0, -inf and one NaN.
    assert_eq!(keys.len().unwrap(), 7);
    m.remove_named(&name).unwrap();
}

/// What `set` accepts, `get` gives back: a large value, and a value whose
/// decoded form is much larger than its pickle.
#[test]
fn what_is_stored_can_be_read_back() {
    let Some(url) = redis_url("what_is_stored_can_be_read_back") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    let name = unique("large");
    common::watchdog("large values", Duration::from_secs(120), || {
        let bytes = m.dict_named::<String, PyValue>(&name).unwrap();
        let big = PyValue::Bytes(vec![7u8; 20 << 20]);
        bytes.set("b".into(), big.clone()).unwrap();
        assert_eq!(bytes.get(&"b".into()).unwrap().as_ref(), Some(&big));
        let lists = m.dict_named::<String, Vec<u8>>(&name).unwrap();
        // One of these is over the memory a value may take to read.
        for n in [1_000, 300_000, 3_000_000] {
            let many = vec![0u8; n];
            match lists.set("l".into(), many.clone()) {
                Ok(()) => assert_eq!(lists.get(&"l".into()).unwrap(), Some(many)),
                Err(e) => assert!(n > 1_000 && matches!(e, Error::Serialize(_)), "{e}"),
            }
        }
    });
    m.remove_named(&name).unwrap();
}

/// Names that look like other objects' keys (`}`, `{`, `:`, `*`): each
/// object has keys of its own, and `remove_named` deletes only its own.
#[test]
fn hostile_names_share_no_keys() {
    let Some(url) = redis_url("hostile_names_share_no_keys") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    let base = unique("names");
    let names = [
        base.clone(),
        format!("{base}}}:v"),
        format!("{base}}}"),
        format!("{base}:v"),
        format!("{{{base}"),
        format!("{base}*"),
        "*".to_string(),
        format!("{base}}}:o}}:k"),
    ];
    for (i, n) in names.iter().enumerate() {
        let d = m.dict_named::<String, usize>(n).unwrap();
        d.set("i".into(), i).unwrap();
    }
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            m.dict_named::<String, usize>(n).unwrap().len().unwrap(),
            1,
            "{n}"
        );
        assert_eq!(
            m.dict_named::<String, usize>(n)
                .unwrap()
                .get(&"i".into())
                .unwrap(),
            Some(i)
        );
    }
    assert!(m.remove_named(&names[0]).unwrap());
    for (i, n) in names.iter().enumerate().skip(1) {
        assert_eq!(
            m.dict_named::<String, usize>(n)
                .unwrap()
                .get(&"i".into())
                .unwrap(),
            Some(i)
        );
    }
    for n in &names[1..] {
        assert!(m.remove_named(n).unwrap());
    }
}

/// Compound operations from several processes at once: `setdefault`
/// gives every process the same value, `popitem` never gives one item
/// twice nor loses one.
#[test]
fn compound_operations_race_between_processes() {
    let Some(url) = redis_url("compound_operations_race_between_processes") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    let name = unique("race");
    let d = m.dict_named::<String, i64>(&name).unwrap();
    for i in 0..400 {
        d.set(format!("k{i}"), i).unwrap();
    }
    let out = m.dict_named::<String, i64>(&unique("race-out")).unwrap();
    let children: Vec<_> = (0..4)
        .map(|c| {
            let (d, out) = (d.clone(), out.clone());
            common::static_child(move || {
                let mine = out.setdefault("first".into(), c).unwrap();
                out.set(format!("first{c}"), mine).unwrap();
                while let Ok((k, v)) = d.popitem() {
                    assert_eq!(k, format!("k{v}"));
                    assert!(
                        out.compare_and_set(&k, None, c).unwrap(),
                        "{k} popped twice"
                    );
                }
            })
        })
        .collect();
    for c in &children {
        assert_eq!(common::join(c, Duration::from_secs(60)), 0);
    }
    let firsts: Vec<Option<i64>> = (0..4)
        .map(|c| out.get(&format!("first{c}")).unwrap())
        .collect();
    assert!(
        firsts.iter().all(|f| f.is_some() && *f == firsts[0]),
        "{firsts:?}"
    );
    assert_eq!(out.len().unwrap(), 405);
    assert_eq!(d.len().unwrap(), 0);
    m.remove_named(&name).unwrap();
    m.remove_named(out.redis_name().unwrap()).unwrap();
}

/// A local manager's proxy decoded outside any call of its manager (from
/// a pipe): a clear error, not a Redis proxy of nonsense. (Postcard's own
/// error type keeps no message: `crate::decode` keeps the decoder's.)
#[test]
fn a_local_proxy_from_a_pipe_is_a_clear_error() {
    let local = Manager::start().unwrap();
    let d = local.dict::<String, i64>().unwrap();
    let (mut tx, mut rx) = multiproc::Pipe(true).unwrap();
    let sent = tx.send(&d);
    let got = sent.and_then(|()| rx.recv::<multiproc::manager::DictProxy<String, i64>>());
    match got {
        Ok(p) => panic!("decoded as {:?}", p.redis_name()),
        Err(e) => {
            let e = e.to_string();
            eprintln!("{e}");
            assert!(e.contains("manager") || e.contains("proxy"), "{e}");
        }
    }
}

/// A password in a URL is never shown in an error.
#[test]
fn a_password_is_never_shown() {
    for url in [
        "redis://:hunter2@127.0.0.1:99999/",
        "redis://user:hunter2@127.0.0.1:1/x",
        "redis://user:hunter2@[::1/",
    ] {
        let e = Manager::connect_redis_with_timeout(url, Duration::from_secs(1))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
    // A proxy from a pipe naming such a URL.
    let (mut tx, mut rx) = multiproc::Pipe(true).unwrap();
    tx.send(&("redis://:hunter2@127.0.0.1:99999/", 0u32, "x"))
        .unwrap();
    let e = rx
        .recv::<multiproc::manager::DictProxy<String, i64>>()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

/// A reply the client cannot parse leaves the connection in an unknown
/// place: it is dropped, and the next call never reads what followed.
#[test]
fn an_unparsable_reply_drops_the_connection() {
    let fake = Fake::start(|conn, cmd, w| {
        if cmd[0].eq_ignore_ascii_case(b"HLEN") {
            if conn == 0 {
                return w.write_all(b"?garbage\r\n:111\r\n").is_ok();
            }
            return w.write_all(b":222\r\n").is_ok();
        }
        w.write_all(b"-ERR unknown\r\n").is_ok()
    });
    common::watchdog("unparsable", Duration::from_secs(30), || {
        let m = Manager::connect_redis_with_timeout(&fake.url(), SHORT).unwrap();
        let d = m.dict_named::<String, i64>("unparsable").unwrap();
        let first = d.len();
        assert!(first.is_err(), "{first:?}");
        assert_eq!(d.len().unwrap(), 222);
    });
}

/// A Redis object's proxy stored in a local manager's dict reads back (in
/// the local manager's answer, where its own proxies are decoded), and a
/// queue's proxy too; in a `PyValue` both are an inert
/// `multiproc.RedisProxy(url, kind, name)`.
#[test]
fn a_redis_proxy_in_a_local_dict_reads_back() {
    let Some(url) = redis_url("a_redis_proxy_in_a_local_dict_reads_back") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    let name = unique("in-local");
    let d = m.dict_named::<String, i64>(&name).unwrap();
    d.set("a".into(), 1).unwrap();
    let q = m.queue_named::<String>(&name).unwrap();
    let local = Manager::start().unwrap();
    let holder = local
        .dict::<String, multiproc::manager::DictProxy<String, i64>>()
        .unwrap();
    holder.set("r".into(), d.clone()).unwrap();
    let back = holder.get(&"r".into()).unwrap().expect("stored");
    assert_eq!(back.get(&"a".into()).unwrap(), Some(1));
    let shown = holder.to_string();
    assert_eq!(shown, "{'r': <multiproc.RedisProxy object>}");
    let queues = local
        .list::<multiproc::manager::QueueProxy<String>>()
        .unwrap();
    queues.append(q.clone()).unwrap();
    queues
        .get(0)
        .unwrap()
        .put(&"via a local list".into())
        .unwrap();
    let (item, delivery) = q.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(item, "via a local list");
    delivery.ack().unwrap();
    m.remove_named(&name).unwrap();
}

/// Keys that are empty, binary or look like encodings of other types.
#[test]
fn hostile_keys() {
    let Some(url) = redis_url("hostile_keys") else {
        return;
    };
    let m = Manager::connect_redis(&url).unwrap();
    let name = unique("keys");
    let d = m.dict_named::<PyValue, i64>(&name).unwrap();
    let keys = [
        PyValue::Str(String::new()),
        PyValue::Bytes(vec![]),
        PyValue::Bytes(vec![0, 0xff, b'\r', b'\n']),
        PyValue::Str("s".into()),
        PyValue::Str("1".into()),
        PyValue::Bytes(b"1".to_vec()),
        PyValue::Int(1),
        PyValue::Str("\0".into()),
        PyValue::Tuple(vec![]),
        PyValue::None,
    ];
    for (i, k) in keys.iter().enumerate() {
        d.set(k.clone(), i as i64).unwrap();
    }
    assert_eq!(d.len().unwrap(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(d.get(k).unwrap(), Some(i as i64), "{k:?}");
    }
    assert_eq!(d.keys().unwrap(), keys.to_vec());
    m.remove_named(&name).unwrap();
}
