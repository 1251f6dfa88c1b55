//! The manager server against clients that try to exhaust its memory or
//! its descriptors through the connections themselves: requests sent in
//! part and never finished, handshakes never answered.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::pickle::{request, returned_ident, s};
use common::{join, static_child, wait_until, watchdog};
use multiproc::conn::{connect, Address, Connection};
use multiproc::Manager;

/// The longest a test may take.
const LIMIT: Duration = Duration::from_secs(300);

const KEY: &str = "manager attack6 key";

const MIB: usize = 1 << 20;

/// A line of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb << 10)
}

/// The memory process `pid` has resident now, in bytes.
fn rss(pid: u32) -> usize {
    status_bytes(pid, "VmRSS:")
}

/// The most memory process `pid` has had resident, in bytes.
fn peak_rss(pid: u32) -> usize {
    status_bytes(pid, "VmHWM:")
}

/// The descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The variable that makes this binary, run again, the parent of a
/// manager server (see [`serve_here`]).
const SERVE_ENV: &str = "MULTIPROC_ATTACK6_SERVE";

/// Not a test: this binary run again with [`SERVE_ENV`] set to a name
/// starts a manager server (`common::serve_manager`) in a fresh process,
/// prints its pid and socket's path, and waits for it to shut down. A
/// server forked from the test process itself would start with the
/// memory the other tests' threads have touched, which its own use then
/// hides from `VmRSS`.
#[test]
#[ignore = "a helper: the server's parent in a process of its own"]
fn serve_here() {
    let Ok(name) = std::env::var(SERVE_ENV) else {
        return;
    };
    let (server, path, conn) = common::serve_manager(&name, KEY.as_bytes());
    drop(conn);
    println!("{} {}", server.pid().unwrap(), path.display());
    std::io::stdout().flush().unwrap();
    server.join().unwrap();
}

/// A manager server started by [`serve_here`] in a fresh process; that
/// process is killed (by pid) if the test ends before the server does.
struct Fresh {
    helper: std::process::Child,
    pid: u32,
}

impl Fresh {
    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    /// Waits (at most a minute) for the server, asked to shut down, and
    /// its parent to exit.
    fn join(mut self) -> std::io::Result<()> {
        assert!(wait_until(Duration::from_secs(60), || matches!(
            self.helper.try_wait(),
            Ok(Some(_))
        )));
        Ok(())
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Ok(None) = self.helper.try_wait() {
            let _ = self.helper.kill();
            let _ = self.helper.wait();
        }
    }
}

/// Shuts down the server at `path` (through a new connection), waits for
/// its process and removes its socket file.
fn shut_down(server: Fresh, path: &std::path::Path) {
    let m = Manager::connect(Address::Unix(path.to_path_buf()), KEY.as_bytes()).unwrap();
    shut_down_through(m, server, path);
}

/// [`shut_down`] through the manager `m` already connected to it.
fn shut_down_through(mut m: Manager, server: Fresh, path: &std::path::Path) {
    m.shutdown().unwrap();
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

/// A server of its own in a fresh process (see [`serve_here`]): it, its
/// socket's path, and a connection to it.
fn serve_fresh(name: &str, key: &[u8]) -> (Fresh, std::path::PathBuf, Connection) {
    use std::io::BufRead;
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["serve_here", "--exact", "--ignored", "--nocapture"])
        .env(SERVE_ENV, name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let out = helper.stdout.take().unwrap();
    let mut fresh = Fresh { helper, pid: 0 };
    // The harness's own lines come first; what comes after is read to its
    // end, by a thread of its own (a write to no reader would fail).
    let mut lines = std::io::BufReader::new(out).lines();
    for l in lines.by_ref() {
        line = l.unwrap();
        if line.split(' ').count() == 2 && line.starts_with(|c: char| c.is_ascii_digit()) {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let (pid, path) = line.split_once(' ').expect("the helper's server");
    fresh.pid = pid.parse().unwrap();
    let path = std::path::PathBuf::from(path);
    let conn = connect(&Address::Unix(path.clone()), Some(key)).unwrap();
    (fresh, path, conn)
}

/// Sends a request and waits (at most a minute) for its reply, which must
/// be a `#RETURN`.
fn call(conn: &mut Connection, frame: &[u8]) -> Vec<u8> {
    conn.send_bytes(frame).unwrap();
    let reply = conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap();
    assert!(
        reply.windows(7).any(|w| w == b"#RETURN"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    reply
}

/// A hostile client on an authenticated connection: a thread that sends
/// the header of a `frame`-byte request and `part` bytes of it, then one
/// byte every 100 ms (never enough to finish it), until the server closes
/// the connection or the client is stopped.
struct Partial {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    /// The connection, kept open (the thread writes on a duplicate).
    _conn: Connection,
}

impl Partial {
    fn start(address: &Address, frame: usize, part: usize) -> Partial {
        let conn = connect(address, Some(KEY.as_bytes())).unwrap();
        // SAFETY: duplicates a live descriptor of this process.
        let fd = unsafe { libc::dup(conn.as_raw_fd()) };
        assert!(fd >= 0);
        // SAFETY: the duplicate is new and owned by nothing else.
        let mut stream = unsafe { UnixStream::from_raw_fd(fd) };
        // Short writes, so that the thread sees `stop` while the server
        // reads nothing from it.
        stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut head = (frame as u32).to_be_bytes().to_vec();
                head.resize(4 + part, b'x');
                let mut sent = 0;
                while !stop.load(Relaxed) {
                    let end = if sent < head.len() {
                        head.len()
                    } else {
                        // The trickle: a byte at a time, never the last.
                        if sent >= 4 + frame - 1 {
                            return;
                        }
                        std::thread::park_timeout(Duration::from_millis(100));
                        sent + 1
                    };
                    let chunk = if sent < head.len() {
                        &head[sent..end]
                    } else {
                        &b"x"[..]
                    };
                    match stream.write(chunk) {
                        Ok(n) => sent += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        // The server closed the connection.
                        Err(_) => return,
                    }
                }
            }
        });
        Partial {
            stop,
            thread,
            _conn: conn,
        }
    }

    fn stop(self) {
        self.stop.store(true, Relaxed);
        self.thread.thread().unpark();
        self.thread.join().unwrap();
    }
}

/// Connections that each send most of a 16 MiB request and then a byte
/// now and then, never finishing it: the server buffered every one of them
/// whole (32 of them: 518 MiB; with more connections, any amount). It now
/// holds partly received requests up to a bound in all, reads no more
/// from the others until that frees, and ends the connections that hold
/// part of it without sending the rest: its memory stays bounded, and an
/// honest client's large request is served.
#[test]
fn requests_sent_in_part_cost_the_server_bounded_memory() {
    const HOSTILE: usize = 32;
    const FRAME: usize = 16 * MIB - 64;
    watchdog("partial requests", LIMIT, || {
        let (server, path, mut conn) = serve_fresh("partial", KEY.as_bytes());
        let pid = server.pid().unwrap();
        let address = Address::Unix(path.clone());
        let list = returned_ident(&call(&mut conn, &request(None, "create", vec![s("list")])));
        let before = rss(pid);
        let hostile: Vec<Partial> = (0..HOSTILE)
            .map(|_| Partial::start(&address, FRAME, 15 * MIB))
            .collect();
        // The server is holding a good part of them.
        assert!(wait_until(Duration::from_secs(60), || rss(pid) > before + 100 * MIB));
        // An honest client's large request is served meanwhile.
        let start = Instant::now();
        let mut honest = connect(&address, Some(KEY.as_bytes())).unwrap();
        call(
            &mut honest,
            &request(Some(&list), "append", vec![s(&"y".repeat(FRAME - 4096))]),
        );
        println!("the honest request took {:?}", start.elapsed());
        let peak = peak_rss(pid);
        println!(
            "the server's memory peaked at {} MiB ({} MiB before)",
            peak / MIB,
            before / MIB
        );
        for h in hostile {
            h.stop();
        }
        assert!(
            peak < before + 320 * MIB,
            "the server's memory peaked at {} MiB ({} MiB before)",
            peak / MIB,
            before / MIB
        );
        // Small calls go on.
        call(&mut conn, &request(Some(&list), "__len__", vec![]));
        drop(honest);
        drop(conn);
        shut_down(server, &path);
    });
}

/// Honest clients sending large requests all at once, more than the
/// server holds partly received at a time (12 of 16 MiB; it holds 256
/// MiB, each taking up to twice its size): each waits its turn, and none
/// is taken for one that stalls.
#[test]
fn many_large_requests_at_once_are_all_served() {
    const CLIENTS: usize = 12;
    watchdog("large requests at once", LIMIT, || {
        let (server, path, mut conn) = serve_fresh("large-at-once", KEY.as_bytes());
        let address = Address::Unix(path.clone());
        let list = returned_ident(&call(&mut conn, &request(None, "create", vec![s("list")])));
        let big = Arc::new(request(
            Some(&list),
            "count",
            vec![s(&"c".repeat(16 * MIB - 4096))],
        ));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let mut c = connect(&address, Some(KEY.as_bytes())).unwrap();
                let big = big.clone();
                std::thread::spawn(move || {
                    call(&mut c, &big);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        drop(conn);
        shut_down(server, &path);
    });
}

/// Connections that each send one large request (refused: a method of no
/// object) and then sit idle: each kept the buffer it was received in (16
/// MiB and more: 24 of them kept 400 MiB resident, more of them any
/// amount). A buffer gives its memory back once its large request is
/// served.
#[test]
fn large_requests_served_leave_no_memory_behind_on_idle_connections() {
    const IDLE: usize = 24;
    watchdog("idle after large requests", LIMIT, || {
        let (server, path, conn) = serve_fresh("idle-large", KEY.as_bytes());
        let pid = server.pid().unwrap();
        let address = Address::Unix(path.clone());
        let before = rss(pid);
        let big = request(
            Some("nothing"),
            "append",
            vec![s(&"z".repeat(16 * MIB - 4096))],
        );
        let idle: Vec<Connection> = (0..IDLE)
            .map(|_| {
                let mut c = connect(&address, Some(KEY.as_bytes())).unwrap();
                c.send_bytes(&big).unwrap();
                // An error (a `KeyError`): its kind does not matter here.
                c.recv_bytes_timeout(Duration::from_secs(60)).unwrap();
                c
            })
            .collect();
        // A round trip on another connection: the server is past the last
        // of them.
        let m = Manager::connect(address, KEY.as_bytes()).unwrap();
        assert_eq!(m.number_of_objects().unwrap(), 0);
        let now = rss(pid);
        println!(
            "the server holds {} MiB ({} MiB before)",
            now / MIB,
            before / MIB
        );
        assert!(
            now < before + 64 * MIB,
            "the server holds {} MiB ({} MiB before)",
            now / MIB,
            before / MIB
        );
        drop((idle, conn));
        shut_down_through(m, server, &path);
    });
}

/// Connections that each read one large answer (a copy of a 15 MiB list)
/// and then sit idle: each kept the buffer its answer was queued in (24
/// of them kept 390 MiB resident, more of them any amount). A
/// connection's queue of answers gives its memory back once a large
/// answer is sent.
#[test]
fn large_answers_sent_leave_no_memory_behind_on_idle_connections() {
    const IDLE: usize = 24;
    watchdog("idle after large answers", LIMIT, || {
        let (server, path, mut conn) = serve_fresh("idle-answers", KEY.as_bytes());
        let pid = server.pid().unwrap();
        let address = Address::Unix(path.clone());
        let list = returned_ident(&call(&mut conn, &request(None, "create", vec![s("list")])));
        for _ in 0..15 {
            call(
                &mut conn,
                &request(Some(&list), "append", vec![s(&"x".repeat(MIB))]),
            );
        }
        let before = rss(pid);
        let copy = request(Some(&list), "copy", vec![]);
        let idle: Vec<Connection> = (0..IDLE)
            .map(|_| {
                let mut c = connect(&address, Some(KEY.as_bytes())).unwrap();
                assert!(call(&mut c, &copy).len() > 15 * MIB);
                c
            })
            .collect();
        // A round trip on another connection: the server is past the last
        // of them.
        call(&mut conn, &request(Some(&list), "__len__", vec![]));
        let now = rss(pid);
        println!(
            "the server holds {} MiB ({} MiB before)",
            now / MIB,
            before / MIB
        );
        assert!(
            now < before + 64 * MIB,
            "the server holds {} MiB ({} MiB before)",
            now / MIB,
            before / MIB
        );
        drop((idle, conn));
        shut_down(server, &path);
    });
}

/// Raises this process's soft limit on descriptors to `want` (within its
/// hard limit), for the servers it starts after; the limit it got.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur = lim.rlim_cur.max(want.min(lim.rlim_max));
    // SAFETY: `lim` is a valid rlimit that setrlimit only reads.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    lim.rlim_cur
}

/// Thousands of connections that never authenticate, each sending all
/// but the last byte of the longest answer a handshake takes: the server
/// holds no more for each than that answer and the connection itself
/// (its memory grows by less than 16 KiB a connection), and serves an
/// honest client meanwhile.
#[test]
fn unauthenticated_connections_hold_no_more_than_a_handshake() {
    const SILENT: usize = 3000;
    watchdog("unauthenticated", LIMIT, || {
        if raise_nofile(2 * SILENT as u64 + 200) < 2 * SILENT as u64 + 200 {
            println!("descriptor limit too low to try");
            return;
        }
        let (server, path, conn) = serve_fresh("unauth", KEY.as_bytes());
        let pid = server.pid().unwrap();
        let before = rss(pid);
        let fds = open_fds(pid);
        let mut answer = 256u32.to_be_bytes().to_vec();
        answer.resize(4 + 255, b'a');
        let silent: Vec<UnixStream> = (0..SILENT)
            .map(|_| {
                let mut c = UnixStream::connect(&path).unwrap();
                c.write_all(&answer).unwrap();
                c
            })
            .collect();
        assert!(wait_until(Duration::from_secs(60), || open_fds(pid) >= fds + SILENT));
        // A round trip: the server has read what they sent.
        let m = Manager::connect(Address::Unix(path.clone()), KEY.as_bytes()).unwrap();
        assert_eq!(m.number_of_objects().unwrap(), 0);
        let grown = rss(pid).saturating_sub(before);
        println!(
            "the server grew by {} KiB a connection",
            (grown / SILENT) >> 10
        );
        assert!(
            grown < SILENT * (16 << 10),
            "the server grew by {} KiB a connection",
            (grown / SILENT) >> 10
        );
        drop((silent, conn));
        shut_down_through(m, server, &path);
    });
}

/// A server with a soft limit of `limit` descriptors (set for the fork
/// that starts it); a child of this process's.
fn manager_with_few_descriptors(limit: u64) -> Manager {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let old = lim.rlim_cur;
    lim.rlim_cur = limit;
    // SAFETY: `lim` is a valid rlimit that setrlimit only reads.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let m = Manager::start().unwrap();
    lim.rlim_cur = old;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    m
}

/// Connections that never answer the handshake's challenge, as many as
/// the server has descriptors for: every other client waited until they
/// timed out (20 s), and an attacker that keeps as many open kept
/// everyone out for ever. Out of descriptors, the server now ends the
/// oldest connection still in its handshake to take the next one: an
/// honest client gets in at once.
#[test]
fn handshakes_never_answered_do_not_keep_other_clients_out() {
    watchdog("silent handshakes", LIMIT, || {
        let c = static_child(|| {
            let limit = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 + 40;
            let m = manager_with_few_descriptors(limit);
            let pid = m.server_pid().unwrap();
            let Address::Unix(path) = m.address() else {
                unreachable!()
            };
            let silent: Vec<_> = (0..limit + 20)
                .map(|_| UnixStream::connect(path).unwrap())
                .collect();
            assert!(wait_until(LIMIT, || open_fds(pid) as u64 >= limit - 2));
            let start = Instant::now();
            let other = Manager::connect(m.address().clone(), m.authkey()).unwrap();
            assert_eq!(other.number_of_objects().unwrap(), 0);
            let took = start.elapsed();
            assert!(took < Duration::from_secs(5), "connecting took {took:?}");
            drop(silent);
        });
        assert_eq!(join(&c, LIMIT), 0);
    });
}
