//! The Redis server the Redis tests run against.
//!
//! CI (`.ci/run`, through `.ci/redis start`) starts a private
//! `redis-server` and puts its URL in `MULTIPROC_TEST_REDIS`. Without it a
//! test is skipped with a printed reason on a developer's machine, and
//! fails in CI (`CI` set): a missing server is never a silent pass there.
//! Tests that kill or restart a server start their own ([`OwnServer`]).
//!
//! The helpers that need the library's `redis` feature are behind it; the
//! command-line tool's tests, which include this file too, have no such
//! feature (and use none of them).
#![allow(unexpected_cfgs)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The environment variable that holds the shared test server's URL.
pub const REDIS_ENV: &str = "MULTIPROC_TEST_REDIS";

/// The shared test server's URL, or `None` (with the reason printed) if
/// there is none on this developer's machine.
///
/// # Panics
/// In CI (`CI` set) when there is none.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var(REDIS_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why = format!(
                "{test}: no Redis server ({REDIS_ENV} is not set; `eval \"$(.ci/redis start)\"` starts one)"
            );
            assert!(std::env::var_os("CI").is_none(), "in CI, {why}");
            eprintln!("skipped {why}");
            None
        }
    }
}

/// A name no other test (or run) uses, for the objects a test makes.
pub fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    getrandom(&mut bytes);
    let tail: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("test-{prefix}-{}-{tail}", std::process::id())
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}

/// A `redis-server` of the test's own, on a free loopback port, killed
/// (by pid) when dropped; for tests that kill or restart the server.
pub struct OwnServer {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl OwnServer {
    /// Starts one, or `None` (with the reason printed, a failure in CI)
    /// if `redis-server` is not installed.
    pub fn start(test: &str) -> Option<OwnServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let why =
                format!("{test}: redis-server is not installed (`.ci/redis start` installs it)");
            assert!(std::env::var_os("CI").is_none(), "in CI, {why}");
            eprintln!("skipped {why}");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "multiproc-test-redis-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut server = OwnServer {
            port,
            child: None,
            dir,
        };
        server.restart();
        Some(server)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it with SIGKILL (as a crash would), if it runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence), and
    /// waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let up = super::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(up, "redis-server on port {} did not come up", self.port);
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis-backed manager on the shared test server, and its URL; `None`
/// (skipped) without one.
#[cfg(feature = "redis")]
pub fn manager(test: &str) -> Option<(multiproc::Manager, String)> {
    let url = redis_url(test)?;
    Some((multiproc::Manager::connect_redis(&url).unwrap(), url))
}

/// A raw connection to the server at `url`, as another program has.
#[cfg(feature = "redis")]
pub fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// The keys of objects called `name` left on the server.
#[cfg(feature = "redis")]
pub fn leftover(url: &str, name: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("multiproc:{{*:{name}}}:*"))
        .query(&mut raw(url))
        .unwrap()
}

/// Removes the objects called `name` (there must be one), and checks that
/// no key of theirs is left (a heartbeat thread that outlived its queue
/// must not bring one back).
#[cfg(feature = "redis")]
pub fn remove_all(m: &multiproc::Manager, url: &str, name: &str) {
    assert!(m.remove_named(name).unwrap(), "{name} was not there");
    no_leftovers(url, name);
}

/// Checks that no key of the objects called `name` is left (within 30 s:
/// a heartbeat thread that outlived its queue must not bring one back).
#[cfg(feature = "redis")]
pub fn no_leftovers(url: &str, name: &str) {
    let gone = super::wait_until(Duration::from_secs(30), || leftover(url, name).is_empty());
    assert!(gone, "left: {:?}", leftover(url, name));
}

/// What most Redis attack tests begin with: the shared test server's URL
/// (the test skipped, with the reason printed, without one) and a name no
/// other test uses, made of the test's name (the name of the thread the
/// test harness runs it on); `body` runs with both under a watchdog of
/// `limit`.
pub fn attack(limit: Duration, body: impl FnOnce(&str, &str)) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a Redis test");
    let Some(url) = redis_url(test) else {
        return;
    };
    let name = unique(test);
    super::watchdog(test, limit, || body(&url, &name));
}

/// As [`attack`], on a Redis server of the test's own ([`OwnServer`]):
/// one the test makes slow, refuses clients on, or kills the clients of,
/// which the other tests must not see.
pub fn attack_own(limit: Duration, body: impl FnOnce(&str, &str)) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a Redis test");
    let Some(server) = OwnServer::start(test) else {
        return;
    };
    let name = unique(test);
    super::watchdog(test, limit, || body(&server.url(), &name));
}
