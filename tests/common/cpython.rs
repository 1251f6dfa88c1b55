//! The CPython interpreters a test compares with, and a CPython manager
//! server to compare against.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every CPython 3.8+ that pyenv has here (`$PYENV_ROOT`, or `~/.pyenv`),
/// as its minor version and the path of its `python3`, oldest first.
pub fn pyenv_pythons() -> Vec<(u32, String)> {
    let root = std::env::var("PYENV_ROOT")
        .unwrap_or_else(|_| format!("{}/.pyenv", std::env::var("HOME").unwrap_or_default()));
    let mut found: Vec<(u32, String)> = std::fs::read_dir(format!("{root}/versions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().into_string().ok()?;
            let minor: u32 = v.strip_prefix("3.")?.split('.').next()?.parse().ok()?;
            (minor >= 8).then(|| (minor, format!("{root}/versions/{v}/bin/python3")))
        })
        .filter(|(_, p)| std::path::Path::new(p).exists())
        .collect();
    found.sort();
    found
}

/// CPython's own manager server at `argv[1]` with key `argv[2]`; prints
/// its address once it listens.
const SERVER: &str = r#"
import sys
from multiprocessing import current_process
from multiprocessing.managers import SyncManager
# As a server that `m.start()` made: its own authkey, with which the
# proxies it unpickles (a Condition's lock) call it.
current_process().authkey = sys.argv[2].encode()
m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
s = m.get_server()
print(s.address, flush=True)
s.serve_forever()
"#;

/// A CPython manager server process, killed (by its pid) if still running
/// when dropped, and its socket file removed.
pub struct CpythonServer {
    child: Child,
    path: std::path::PathBuf,
}

impl CpythonServer {
    /// Starts CPython's own manager server ([`SERVER`]) with `python`,
    /// with `key`, on a socket named after `name`; waits (within `limit`)
    /// until it listens.
    pub fn start(python: &str, key: &str, name: &str, limit: Duration) -> CpythonServer {
        let path = std::env::temp_dir().join(format!(
            "multiproc-{name}-{}-{}.sock",
            std::process::id(),
            python.len() + python.bytes().map(usize::from).sum::<usize>()
        ));
        let _ = std::fs::remove_file(&path);
        let mut child = Command::new(python)
            .args(["-c", SERVER, path.to_str().unwrap(), key])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().unwrap();
        let (tell, told) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tell.send(line);
        });
        let server = CpythonServer { child, path };
        let line = told
            .recv_timeout(limit)
            .expect("the server prints its address");
        assert_eq!(
            line.trim(),
            server.path.to_str().unwrap(),
            "{python}: the server did not start"
        );
        server
    }

    /// Its socket's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Waits (within `limit`) for it to exit by itself.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for CpythonServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// CPython 3.8 and 3.13 (those of them pyenv has): the oldest and the
/// newest a program is compared on.
pub fn oldest_and_newest() -> Vec<String> {
    pyenv_pythons()
        .into_iter()
        .filter(|(minor, _)| [8, 13].contains(minor))
        .map(|(_, p)| p)
        .collect()
}

/// The start of a differential program (see [`Differential`]) whose cases
/// come in named groups: it connects a `SyncManager` `m` to the server at
/// `argv[1]` with key `argv[2]`, and defines `NEW` (Python 3.10+, whose
/// messages the server answers in), `failure(e)` (an exception as its
/// type and the last line of its message; on Python before 3.10, its type
/// only), `failure_of(f)` (`f()`, or its exception as `failure` gives it),
/// `call(proxy, method, args, kwds)` (any method, as a proxy sends it),
/// `masked(s)` (`s` with its addresses masked), for raw frames
/// `raw_connection()`, `frame(request)`, `server_pid(conn)` and
/// `server_cpu(pid)`, and `run(groups)`, which
/// prints one `name: answer` line for each
/// case of the group named by `argv[3]`. A program is this followed by its
/// own helpers and cases, ending in `run(GROUPS)`.
pub const PRELUDE: &str = r#"
import collections, copy, os, pickle, queue, re, socket, struct, sys, threading
from multiprocessing.connection import Client
from multiprocessing.managers import SyncManager, dispatch

m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()
NEW = sys.version_info >= (3, 10)


def failure(e):
    # A server's traceback (a RemoteError's) as its last line.
    lines = [l for l in str(e).splitlines() if l.strip("-")]
    if not NEW:
        return type(e).__name__
    return "%s: %s" % (type(e).__name__, lines[-1] if lines else "")


def failure_of(f):
    try:
        return f()
    except threading.BrokenBarrierError:
        return "BrokenBarrierError"
    except Exception as e:
        return failure(e)


def call(p, method, args=(), kwds={}):
    # Any method, as a proxy sends it (the server says if it is exposed).
    return p._callmethod(method, args, kwds)


def masked(s):
    # An object's address differs from server to server.
    return re.sub(r"0x[0-9a-f]+", "0x…", s)


def raw_connection():
    # A connection of its own, past `accept_connection`, for raw frames.
    c = Client(sys.argv[1], authkey=sys.argv[2].encode())
    dispatch(c, None, "accept_connection", ("raw",))
    return c


def frame(request):
    # `request` as one whole message on the wire (length and pickle).
    body = pickle.dumps(request, protocol=2)
    return struct.pack("!i", len(body)) + body


def server_pid(raw):
    # The server's pid, from its socket's credentials.
    s = socket.socket(fileno=os.dup(raw.fileno()))
    pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    s.close()
    return pid


def server_cpu(pid):
    # The server's CPU time so far (user and system), in seconds.
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(groups):
    # Each case's answer (or exception), in order, as `name: answer`.
    for name, case in groups[sys.argv[3]].items():
        try:
            answer = repr(case())
        except Exception as e:
            answer = failure(e)
        print("%s: %s" % (name, answer), flush=True)
"#;

/// [`PRELUDE`] followed by `cases`: a whole program.
pub fn with_prelude(cases: &str) -> String {
    format!("{PRELUDE}{cases}")
}

/// A Python program run against both managers' servers, which prints one
/// line `name: answer` per case (its arguments: the server's socket path,
/// the authkey, then its own).
pub struct Differential {
    pub program: &'static str,
    pub key: &'static str,
    /// How long one run of the program may take.
    pub run_limit: Duration,
}

impl Differential {
    /// `program`, a [`with_prelude`] program of groups of cases, against
    /// servers with the authkey `key`; one run may take `run_limit`.
    pub fn of(program: &'static str, key: &'static str, run_limit: Duration) -> Differential {
        Differential {
            program,
            key,
            run_limit,
        }
    }

    /// Runs the cases of `group` against CPython's server and
    /// multiproc's, with CPython 3.8 and 3.13 as clients, within `limit`;
    /// fails listing every case whose answers differ.
    pub fn same_answers_in(&self, group: &str, limit: Duration) {
        self.same_answers(group, &oldest_and_newest(), &[group], limit);
    }

    /// The answers of `group`, run by the newest CPython here against
    /// multiproc's server only (a server of its own, for what CPython's
    /// server does otherwise or cannot do), within `limit`; `None`, said
    /// so, without a CPython.
    pub fn ours_only(&self, group: &str, limit: Duration) -> Option<Vec<(String, String)>> {
        let Some((_, python)) = pyenv_pythons().into_iter().max() else {
            println!("no CPython under pyenv: nothing to run");
            return None;
        };
        Some(super::watchdog(group, limit, || {
            let (server, ours, conn) = super::serve_manager(group, self.key.as_bytes());
            drop(conn);
            let got = self.answers(&python, &ours, &[group]);
            shut_down(&ours, self.key);
            server.join().unwrap();
            got
        }))
    }

    /// The program's answers, run by `python` against the server at `path`
    /// with `args` after the path and key: each case's name and answer,
    /// in order.
    pub fn answers(
        &self,
        python: &str,
        path: &std::path::Path,
        args: &[&str],
    ) -> Vec<(String, String)> {
        let mut command = Command::new(python);
        command
            .args(["-c", self.program, path.to_str().unwrap(), self.key])
            .args(args)
            .env_remove("PYTHONPATH");
        let (status, out, err) = super::run_with_deadline(&mut command, b"", self.run_limit);
        assert!(
            status.success(),
            "{python} against {path:?}: {status}\nstdout:\n{out}\nstderr:\n{err}"
        );
        out.lines()
            .map(|line| match line.split_once(": ") {
                Some((name, answer)) => (name.to_owned(), answer.to_owned()),
                None => panic!("{python}: a line without an answer: {line:?}"),
            })
            .collect()
    }

    /// Runs the program with `args` by each of `pythons` against CPython's
    /// server and multiproc's (one of each, named `name`), within
    /// `limit`; fails listing every case whose answers differ.
    pub fn same_answers(&self, name: &str, pythons: &[String], args: &[&str], limit: Duration) {
        if pythons.is_empty() {
            return println!("no CPython to compare with under pyenv");
        }
        super::watchdog(name, limit, || {
            let (server, ours, conn) = super::serve_manager(name, self.key.as_bytes());
            drop(conn);
            let mut failures = Vec::new();
            for python in pythons {
                let reference = CpythonServer::start(python, self.key, name, self.run_limit);
                let want = self.answers(python, reference.path(), args);
                drop(reference);
                let got = self.answers(python, &ours, args);
                match differences(&want, &got) {
                    None => println!("{python}: {} answers alike", want.len()),
                    Some(d) => failures.push(format!("{python}: {d}")),
                }
            }
            shut_down(&ours, self.key);
            server.join().unwrap();
            assert!(failures.is_empty(), "{}", failures.join("\n"));
        });
    }
}

/// Each case whose answer in `got` is not the one in `want` (by name), as
/// a listing; `None` if they are alike, case for case.
fn differences(want: &[(String, String)], got: &[(String, String)]) -> Option<String> {
    let ours: std::collections::HashMap<&str, &str> =
        got.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    assert_eq!(ours.len(), got.len(), "a case named twice");
    let differences: Vec<String> = want
        .iter()
        .filter(|(name, w)| ours.get(name.as_str()) != Some(&w.as_str()))
        .map(|(name, w)| {
            let g = ours.get(name.as_str()).unwrap_or(&"(no answer)");
            format!("  {name}:\n    CPython's: {w}\n    ours:      {g}")
        })
        .collect();
    if differences.is_empty() && want.len() == got.len() {
        return None;
    }
    Some(format!(
        "{} of {} answers differ ({} answered by ours):\n{}",
        differences.len(),
        want.len(),
        got.len(),
        differences.join("\n")
    ))
}

/// Shuts down multiproc's server at `path` and removes its socket file.
pub fn shut_down(path: &std::path::Path, key: &str) {
    let address = multiproc::conn::Address::Unix(path.to_owned());
    let mut m = multiproc::Manager::connect(address, key.as_bytes()).unwrap();
    m.shutdown().unwrap();
    let _ = std::fs::remove_file(path);
}
