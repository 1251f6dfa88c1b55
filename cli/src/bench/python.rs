//! The same workloads in Python's `multiprocessing` (`python/bench.py`,
//! compiled in), one scenario per `python3` run; for the managed scenarios,
//! also Python's client against multiproc's server.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use multiproc::conn::{Address, Pipe};
use multiproc::Process;

/// The script: `python3 -c SCRIPT SCENARIO N [ADDRESS AUTHKEY_HEX PID]`
/// prints its figure (and, for the managed scenarios, the server's CPU
/// time per operation).
const PYTHON_SCRIPT: &str = include_str!("../../python/bench.py");

pub(super) fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import multiprocessing.managers"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What one run of the Python script measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct PythonFigure {
    /// The figure, in the scenario's unit.
    pub(super) value: f64,
    /// For the managed scenarios, the server's CPU time per operation in
    /// microseconds (whichever server the client used).
    pub(super) server_cpu_us: Option<f64>,
    /// Its user and system parts, as the kernel splits it (sampled at
    /// its 10 ms ticks).
    pub(super) server_user_system_us: Option<(f64, f64)>,
}

/// Parses the script's output: the figure, then optionally the server's
/// CPU time per operation, then optionally its user and system parts.
fn parse_output(text: &str) -> Option<PythonFigure> {
    let mut numbers = text.split_whitespace().map(str::parse::<f64>);
    let value = numbers.next()?.ok()?;
    let mut next = || numbers.next().and_then(Result::ok);
    let server_cpu_us = next();
    let server_user_system_us = next().zip(next());
    Some(PythonFigure {
        value,
        server_cpu_us,
        server_user_system_us,
    })
}

/// Who answers a managed scenario's Python clients.
pub(super) enum Answerer<'a> {
    /// A `Manager()` of Python's own.
    Python,
    /// multiproc's server.
    Ours(&'a OurServer),
    /// A raw socket echo ([`RawEcho`]).
    Raw(&'a RawEcho),
}

/// Runs one scenario of the Python script; for a managed one, its clients
/// talk to `answerer`. `None` (with a warning) if it fails.
pub(super) fn run_python(
    scenario: &str,
    n: u64,
    answerer: Answerer,
) -> Result<Option<PythonFigure>> {
    let mut args = vec![
        "-c".to_string(),
        PYTHON_SCRIPT.to_string(),
        scenario.to_string(),
        n.to_string(),
    ];
    let against = match answerer {
        Answerer::Python => "",
        Answerer::Ours(s) => {
            args.extend([
                s.path.display().to_string(),
                hex(&s.authkey),
                s.pid.to_string(),
            ]);
            " against multiproc's server"
        }
        Answerer::Raw(e) => {
            args.extend([
                e.path.display().to_string(),
                "raw".into(),
                e.pid.to_string(),
            ]);
            " against a raw socket echo"
        }
    };
    let mut child = Command::new("python3")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            eprint!(" (python timed out)");
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    match parse_output(&String::from_utf8_lossy(&out.stdout)) {
        Some(figure) if out.status.success() => Ok(Some(figure)),
        _ => {
            eprint!(
                " (python{against} failed: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(None)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);

/// A fresh socket path for a server of the bench.
fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "multiproc-bench-{}-{}.sock",
        std::process::id(),
        SOCKETS.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The frame a raw echo answers every call with: `('#RETURN', None)`
/// pickled (protocol 4, as Python's manager server answers a set), after
/// its length (`Connection.send_bytes`' frame).
const ECHO_ANSWER: &[u8] = b"\0\0\0\x0e\x80\x04\x8c\x07#RETURNN\x86.";

/// How a [`RawEcho`] serves its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Echo {
    /// A thread per connection, each blocked in its own reads (as
    /// Python's manager server serves its clients and the raw calls'
    /// answerer its channels).
    Threads,
    /// One thread for every connection, woken by epoll for the ones with
    /// something to read: the shape of multiproc's server, an event loop.
    EventLoop,
}

/// A raw socket echo for Python's clients: a process listening on a fresh
/// Unix socket that answers each frame a connection sends with
/// [`ECHO_ANSWER`], served as [`Echo`] says, decoding nothing: what the
/// same clients' calls cost a server that does nothing but the socket's
/// part. Dropping it stops the process (by pid) and removes its socket.
pub(super) struct RawEcho {
    process: Process<'static>,
    pid: u32,
    path: PathBuf,
}

impl RawEcho {
    pub(super) fn start(how: Echo) -> Result<RawEcho> {
        let path = socket_path();
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        // A daemon: killed if the bench dies before it stops the echo.
        let mut process = Process::new(move || match how {
            Echo::Threads => {
                for conn in listener.incoming().flatten() {
                    std::thread::spawn(move || echo(conn));
                }
            }
            Echo::EventLoop => {
                if let Err(e) = event_loop_echo(&listener) {
                    eprint!(" (the event-loop echo failed: {e})");
                }
            }
        })
        .with_name("raw socket echo (bench)")
        .daemon(true);
        let started = process.start();
        let echo = RawEcho {
            pid: process.pid().unwrap_or(0),
            process,
            path,
        };
        started?;
        Ok(echo)
    }
}

/// Answers each frame `conn` sends with [`ECHO_ANSWER`] until it closes.
fn echo(mut conn: UnixStream) {
    let mut body = Vec::new();
    let mut len = [0u8; 4];
    while conn.read_exact(&mut len).is_ok() {
        // A frame of 2 GiB or more: not one a client of the bench sends.
        let Ok(n) = usize::try_from(i32::from_be_bytes(len)) else {
            return;
        };
        body.resize(n, 0);
        if conn.read_exact(&mut body).is_err() || conn.write_all(ECHO_ANSWER).is_err() {
            return;
        }
    }
}

/// [`echo`] for every connection `listener` accepts, from this thread: an
/// epoll wait, then one read of each connection it says is readable (a
/// read that cannot block, the sockets staying blocking for the answers'
/// writes), and an answer for each whole frame read. Returns only if epoll
/// fails.
fn event_loop_echo(listener: &UnixListener) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
    /// The key of the listener's events (a connection's is its index).
    const LISTENER: u64 = u64::MAX;
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: epoll_create1 takes no pointers.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: the descriptor epoll_create1 returned is new, owned from here.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    let watch = |fd: RawFd, key: u64| {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: `event` is a valid epoll_event for the call's duration.
        check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) })
    };
    listener.set_nonblocking(true)?;
    watch(listener.as_raw_fd(), LISTENER)?;
    // Each connection and the bytes of its frame not read whole yet.
    let mut conns: Vec<Option<(UnixStream, Vec<u8>)>> = Vec::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: `events` has room for the `events.len()` entries epoll
        // may write.
        let ready = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                -1,
            )
        };
        let ready = match check(ready) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for event in &events[..ready] {
            let key = event.u64;
            if key == LISTENER {
                while let Ok((conn, _)) = listener.accept() {
                    watch(conn.as_raw_fd(), conns.len() as u64)?;
                    conns.push(Some((conn, Vec::new())));
                }
                continue;
            }
            let Some(slot) = usize::try_from(key).ok().and_then(|k| conns.get_mut(k)) else {
                continue;
            };
            // Closing a connection (dropping it) also takes it out of epoll.
            let keep = match slot {
                Some((conn, pending)) => match conn.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        answer_whole_frames(conn, pending)
                    }
                    Err(e) => e.kind() == std::io::ErrorKind::Interrupted,
                },
                None => continue,
            };
            if !keep {
                *slot = None;
            }
        }
    }
}

/// Answers each whole frame at the start of `pending` with
/// [`ECHO_ANSWER`], and keeps what is left of a frame not read whole.
/// `false` if the connection is to be closed (a write failed, or a frame of
/// 2 GiB or more, not one a client of the bench sends).
fn answer_whole_frames(conn: &mut UnixStream, pending: &mut Vec<u8>) -> bool {
    let mut at = 0;
    while let Some(&len) = pending.get(at..).and_then(|rest| rest.first_chunk::<4>()) {
        let Ok(n) = usize::try_from(i32::from_be_bytes(len)) else {
            return false;
        };
        if pending.len() - at - 4 < n {
            break;
        }
        at += 4 + n;
        if conn.write_all(ECHO_ANSWER).is_err() {
            return false;
        }
    }
    pending.drain(..at);
    true
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        stop(&mut self.process);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Stops a server process of the bench: SIGTERM, then SIGKILL if it is
/// still there after 5 s.
fn stop(process: &mut Process<'static>) {
    let _ = process.terminate();
    if !matches!(process.join_timeout(Duration::from_secs(5)), Ok(Some(_))) {
        let _ = process.kill();
        let _ = process.join_timeout(Duration::from_secs(5));
    }
}

/// multiproc's manager server (`multiproc::manager::serve`, what
/// `multiproc manager serve` runs) in a child process of the bench, on a
/// fresh Unix socket with a random authkey, for Python's client. Dropping
/// it stops the server (by pid) and removes its socket.
pub(super) struct OurServer {
    process: Process<'static>,
    pid: u32,
    path: PathBuf,
    authkey: [u8; 32],
}

impl OurServer {
    pub(super) fn start() -> Result<OurServer> {
        let mut authkey = [0u8; 32];
        let mut filled = 0;
        while filled < authkey.len() {
            let rest = &mut authkey[filled..];
            // SAFETY: `rest` is valid and writable for `rest.len()` bytes.
            let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if got < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e).context("getrandom");
                }
            } else {
                filled += got as usize;
            }
        }
        let path = socket_path();
        let address = Address::Unix(path.clone());
        let (mut ready, mut tell) = Pipe(false)?;
        // A daemon: killed if the bench dies before it stops the server.
        let mut process = Process::new(move || {
            let served = multiproc::manager::serve(&address, &authkey, |_| {
                let _ = tell.send_bytes(b"");
            });
            // It returns only if it could not listen.
            let Err(e) = served;
            let _ = tell.send_bytes(e.to_string().as_bytes());
        })
        .with_name("multiproc manager server (bench)")
        .daemon(true);
        process.start()?;
        let pid = process.pid().context("the server has no pid")?;
        let server = OurServer {
            process,
            pid,
            path,
            authkey,
        };
        match ready.recv_bytes_timeout(Duration::from_secs(10)) {
            Ok(why) if why.is_empty() => Ok(server),
            Ok(why) => bail!(
                "multiproc's manager server could not listen: {}",
                String::from_utf8_lossy(&why)
            ),
            Err(e) => bail!("multiproc's manager server did not start: {e}"),
        }
    }
}

impl Drop for OurServer {
    fn drop(&mut self) {
        stop(&mut self.process);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_with_and_without_server_cpu() {
        assert_eq!(
            parse_output("7600.5 36.0 10.5 25.5\n"),
            Some(PythonFigure {
                value: 7600.5,
                server_cpu_us: Some(36.0),
                server_user_system_us: Some((10.5, 25.5)),
            })
        );
        assert_eq!(
            parse_output("7600.5 36.0\n"),
            Some(PythonFigure {
                value: 7600.5,
                server_cpu_us: Some(36.0),
                server_user_system_us: None,
            })
        );
        assert_eq!(
            parse_output("156.2\n"),
            Some(PythonFigure {
                value: 156.2,
                server_cpu_us: None,
                server_user_system_us: None,
            })
        );
        assert_eq!(parse_output(""), None);
        assert_eq!(parse_output("Traceback"), None);
    }

    #[test]
    fn authkey_in_hex() {
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
    }
}
