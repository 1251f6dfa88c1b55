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
from multiprocessing.managers import SyncManager
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
