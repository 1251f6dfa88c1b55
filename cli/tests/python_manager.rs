//! Python programs against the manager, with every CPython 3.8–3.13 that
//! pyenv has installed here (the missing ones are skipped; each test prints
//! which ran): CPython's own `_TestContainers` through our runner, our
//! interop script (also with pickle protocol 5, 3.14's default) and the
//! tutorials' Manager program. The scripts are in `tests/python/`.
//!
//! Each runs against CPython's own server, started by the same Python (the
//! reference: our expectations must hold there), and against
//! `multiproc manager serve`, on a Unix socket and on loopback TCP.

// The library's test helpers, shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{run_with_deadline, wait_until, watchdog};

/// The longest any one Python run may take (a loaded machine included).
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// The longest a server may take to say where it serves.
const START_LIMIT: Duration = Duration::from_secs(60);
/// The longest a whole test may take.
const TEST_LIMIT: Duration = Duration::from_secs(1800);

/// CPython's manager test classes the runner runs against our server; add
/// `_TestQueue`, `_TestLock`, `_TestEvent`, … as their typeids land.
const CPYTHON_CLASSES: &[&str] = &["_TestContainers"];

/// What the tutorials' Manager program prints (with CPython's server).
const TUTORIAL_OUTPUT: &str = "{1: '1', '2': 2, 0.25: None}\n[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]\n";

/// An installed CPython.
struct Python {
    version: String,
    exe: PathBuf,
}

/// Every CPython 3.8–3.13 under pyenv that has its `test` package, oldest
/// first, and a line saying which were found.
fn pythons() -> Vec<Python> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("pyenv").arg("root").output().ok()?;
            let root = String::from_utf8(out.stdout).ok()?;
            out.status.success().then(|| PathBuf::from(root.trim()))
        })
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let entries = root
        .as_ref()
        .and_then(|root| std::fs::read_dir(root.join("versions")).ok());
    for entry in entries.into_iter().flatten().flatten() {
        let version = entry.file_name().to_string_lossy().into_owned();
        let mut parts = version.split('.');
        let (Some("3"), Some(minor)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(minor) = minor.parse::<u32>() else {
            continue;
        };
        if !(8..=13).contains(&minor) {
            continue;
        }
        let dir = entry.path();
        let exe = dir.join("bin/python3");
        let tests = dir.join(format!("lib/python3.{minor}/test/_test_multiprocessing.py"));
        if exe.exists() && tests.exists() {
            found.push((minor, Python { version, exe }));
        } else {
            skipped.push(format!("{version} (no python3 or no test package)"));
        }
    }
    found.sort_by_key(|(minor, _)| *minor);
    let found: Vec<Python> = found.into_iter().map(|(_, p)| p).collect();
    let names: Vec<&str> = found.iter().map(|p| p.version.as_str()).collect();
    // Straight to the descriptor: libtest captures `println!`, and CI's
    // log should say which Pythons judged the server.
    let _ = writeln!(
        std::io::stderr(),
        "CPython found under {}: {}{}",
        root.as_deref().unwrap_or(Path::new("(no pyenv)")).display(),
        if names.is_empty() {
            "none: skipped".to_owned()
        } else {
            names.join(", ")
        },
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {}", skipped.join(", "))
        }
    );
    found
}

/// The script `name` in `tests/python/`.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/python")
        .join(name)
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Unix,
    Tcp,
}

const TRANSPORTS: [Transport; 2] = [Transport::Unix, Transport::Tcp];

/// A manager server this test started, in a directory of its own (socket,
/// key file, output); killed by its pid and the directory removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    /// Where it serves, as it printed it (`unix:PATH` or `tcp:HOST:PORT`).
    address: String,
    key_hex: String,
}

impl Server {
    /// CPython's own manager server (`tests/python/cpython_server.py`: a
    /// SyncManager plus `get_dict`), run by `python`.
    fn cpython(python: &Python, transport: Transport) -> Server {
        Server::start(transport, |listen, _key_file, key_hex| {
            let mut command = Command::new(&python.exe);
            command
                .arg(script("cpython_server.py"))
                .args([listen, key_hex]);
            command
        })
    }

    /// `multiproc manager serve`, with `get_dict` for the remote-manager
    /// pattern.
    fn ours(transport: Transport) -> Server {
        Server::start(transport, |listen, key_file, _key_hex| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_multiproc"));
            command
                .args(["manager", "serve", "--listen", listen, "--authkey-file"])
                .arg(key_file)
                .args(["--object", "get_dict=dict"]);
            command
        })
    }

    fn start(transport: Transport, command: impl FnOnce(&str, &Path, &str) -> Command) -> Server {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("multiproc-test-python-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut key = [0u8; 16];
        File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut key)
            .unwrap();
        let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let key_file = dir.join("key");
        std::fs::write(&key_file, key).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let listen = match transport {
            Transport::Unix => format!("unix:{}", dir.join("sock").display()),
            Transport::Tcp => "tcp:127.0.0.1:0".to_owned(),
        };
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let mut command = command(&listen, &key_file, &key_hex);
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            dir,
            address: String::new(),
            key_hex,
        };
        let mut exited = false;
        let said = wait_until(START_LIMIT, || {
            exited = exited || server.child.try_wait().unwrap().is_some();
            exited || std::fs::read_to_string(&out).unwrap().contains('\n')
        });
        let printed = std::fs::read_to_string(&out).unwrap();
        let address = printed
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("serving on "));
        match address {
            Some(address) if said && !exited => server.address = address.trim().to_owned(),
            _ => panic!(
                "{command:?} did not start (exited: {exited}):\nstdout: {printed}\nstderr: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            ),
        }
        server
    }

    /// Runs `python script ADDRESS KEY extra...`; its stdout. Fails the test
    /// if it fails or overruns.
    fn run(&self, python: &Python, name: &str, extra: &[&str]) -> String {
        let mut command = Command::new(&python.exe);
        command
            .arg(script(name))
            .args([&self.address, &self.key_hex])
            .args(extra)
            .env_remove("PYTHONPATH");
        let (status, out, err) = run_with_deadline(&mut command, b"", RUN_LIMIT);
        assert!(
            status.success(),
            "Python {} {name} {extra:?} against the server at {}: {status}\nstdout:\n{out}\nstderr:\n{err}",
            python.version,
            self.address
        );
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` for every installed Python; each test prints which ran.
fn each_python(what: &str, mut f: impl FnMut(&Python)) {
    watchdog(what, TEST_LIMIT, || {
        let pythons = pythons();
        for python in &pythons {
            f(python);
        }
        let ran: Vec<&str> = pythons.iter().map(|p| p.version.as_str()).collect();
        let _ = writeln!(
            std::io::stderr(),
            "{what}: ran with {}",
            if ran.is_empty() {
                "no Python".to_owned()
            } else {
                ran.join(", ")
            }
        );
    });
}

fn runner_args() -> Vec<&'static str> {
    CPYTHON_CLASSES.to_vec()
}

// --- against CPython's own server: the reference, passing now ---------------

/// The runner is right: CPython's tests pass through it against CPython's
/// own server.
#[test]
fn cpython_server_passes_cpythons_tests_through_the_runner() {
    each_python("runner against CPython's server", |python| {
        for transport in TRANSPORTS {
            let server = Server::cpython(python, transport);
            server.run(python, "run_cpython_tests.py", &runner_args());
        }
    });
}

/// The interop script's expectations are CPython's: it passes against
/// CPython's own server (minus the pickle that would run code there), also
/// with protocol 5.
#[test]
fn cpython_server_passes_the_interop_script() {
    each_python("interop against CPython's server", |python| {
        for transport in TRANSPORTS {
            let server = Server::cpython(python, transport);
            let out = server.run(python, "interop.py", &["--remote", "--cpython-server"]);
            assert!(out.contains("interop: all passed"), "{out}");
            if matches!(transport, Transport::Tcp) {
                let out = server.run(
                    python,
                    "interop.py",
                    &["--remote", "--cpython-server", "--protocol", "5"],
                );
                assert!(out.contains("all protocol 5"), "{out}");
            }
        }
    });
}

/// What the tutorials' Manager program prints with CPython's server.
#[test]
fn cpython_server_runs_the_tutorial() {
    each_python("tutorial against CPython's server", |python| {
        for transport in TRANSPORTS {
            let server = Server::cpython(python, transport);
            let out = server.run(python, "tutorial_manager.py", &[]);
            assert_eq!(
                out, TUTORIAL_OUTPUT,
                "Python {} {transport:?}",
                python.version
            );
        }
    });
}

// --- against `multiproc manager serve` --------------------------------------

/// CPython's own `_TestContainers`, unchanged, passes against our server.
#[test]
fn our_server_passes_cpythons_test_containers() {
    each_python("CPython's tests against our server", |python| {
        for transport in TRANSPORTS {
            let server = Server::ours(transport);
            let out = server.run(python, "run_cpython_tests.py", &runner_args());
            print!("{out}");
        }
    });
}

/// The interop script passes against our server, over both transports,
/// and once with a client that pickles with protocol 5.
#[test]
fn our_server_passes_the_interop_script() {
    let mut newest = None;
    each_python("interop against our server", |python| {
        for transport in TRANSPORTS {
            let server = Server::ours(transport);
            let out = server.run(python, "interop.py", &["--remote"]);
            assert!(out.contains("interop: all passed"), "{out}");
        }
        newest = Some(python.exe.clone());
    });
    if let Some(exe) = newest {
        let python = Python {
            version: "newest".to_owned(),
            exe,
        };
        let server = Server::ours(Transport::Unix);
        let out = server.run(&python, "interop.py", &["--remote", "--protocol", "5"]);
        assert!(out.contains("all protocol 5"), "{out}");
    }
}

/// The tutorials' Manager program prints with our server what it prints
/// with CPython's.
#[test]
fn our_server_runs_the_tutorial_as_cpythons_does() {
    each_python("tutorial against our server", |python| {
        let reference =
            Server::cpython(python, Transport::Unix).run(python, "tutorial_manager.py", &[]);
        for transport in TRANSPORTS {
            let out = Server::ours(transport).run(python, "tutorial_manager.py", &[]);
            assert_eq!(out, reference, "Python {} {transport:?}", python.version);
        }
    });
}
