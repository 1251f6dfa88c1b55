//! A Unix listener's mark (the socket in the abstract namespace that
//! tells another bind at its path that it lives) across forks: a child
//! that merely inherits a listener keeps no mark, a child given one (moved
//! into its closure) holds its own, and a child accepting on its parent's
//! listener (as a forked Python child can) works and sees no probe.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::watchdog;
use multiproc::conn::{connect, Address, Listener};
use multiproc::Process;

const LIMIT: Duration = Duration::from_secs(60);

/// Held by each test: a child forked by another test holds a copy of
/// this test's mark from its fork until its fork handler has made it
/// inert (harmless: that child holds a copy of the listening socket
/// longer), which a look at the mark would see.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`ONE_AT_A_TIME`], taken.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The device and inode of the file at `path`.
fn file_id(path: &Path) -> (u64, u64) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// Whether some process holds the mark of the socket file `id` (the
/// crate's name for it, in the abstract namespace), asked without waiting.
fn marked(id: (u64, u64)) -> bool {
    let name = format!("multiproc-listener-{:x}-{:x}", id.0, id.1);
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path[1..].iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if r == 0 {
        return true;
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EINPROGRESS) => true,
        Some(libc::ECONNREFUSED) => false,
        _ => panic!("connect to the mark: {e}"),
    }
}

/// A child that waits until told to exit (also when a test fails before
/// it tells it: no test leaves a child behind), started once it runs (its
/// fork handlers have run).
struct WaitingChild {
    child: Option<Process<'static>>,
    tx: UnixStream,
}

impl WaitingChild {
    fn start() -> WaitingChild {
        let (mut tx, mut rx) = UnixStream::pair().unwrap();
        let mut child = Process::new(move || {
            rx.write_all(b"r").unwrap();
            let _ = rx.read(&mut [0u8]);
        });
        child.start().unwrap();
        let child = Reaped(Some(child));
        let mut ready = [0u8];
        tx.read_exact(&mut ready).unwrap();
        WaitingChild {
            child: child.take(),
            tx,
        }
    }

    /// Tells it to exit; its exit code.
    fn finish(mut self) -> i32 {
        self.tx.write_all(b"x").unwrap();
        self.child.take().unwrap().join().unwrap()
    }
}

impl Drop for WaitingChild {
    fn drop(&mut self) {
        drop(Reaped(self.child.take()));
    }
}

/// A child killed and joined when dropped (after a failed check, the
/// test's exit would wait for it otherwise).
struct Reaped(Option<Process<'static>>);

impl Reaped {
    /// The child, no longer killed when this is dropped.
    fn take(mut self) -> Option<Process<'static>> {
        self.0.take()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = child.kill();
            let _ = child.join();
        }
    }
}

/// A child forked while a listener is open, which it never uses, keeps no
/// copy of its mark: once the parent drops the listener, the mark is gone
/// while the child lives. Before, the child's copy held it until the child
/// exited, and a new stale file given the freed inode looked live
/// (`AddrInUse`) meanwhile.
#[test]
fn a_child_that_inherits_a_listener_keeps_no_mark() {
    let _alone = alone();
    watchdog("inherited mark", LIMIT, || {
        let dir = common::TempDir::new("inherit");
        let path = dir.0.join("s");
        let listener = Listener::bind(&Address::Unix(path.clone()), None).unwrap();
        let id = file_id(&path);
        assert!(marked(id));
        let child = WaitingChild::start();
        assert!(marked(id), "the parent's mark");
        drop(listener);
        assert!(!path.exists());
        assert!(!marked(id), "the child kept a copy of the mark");
        assert_eq!(child.finish(), 0);
    });
}

/// As [`a_child_that_inherits_a_listener_keeps_no_mark`], for a program
/// run by a child (the mark is closed on exec).
#[test]
fn a_program_run_while_a_listener_is_open_keeps_no_mark() {
    let _alone = alone();
    watchdog("exec mark", LIMIT, || {
        let dir = common::TempDir::new("exec");
        let path = dir.0.join("s");
        let listener = Listener::bind(&Address::Unix(path.clone()), None).unwrap();
        let id = file_id(&path);
        // The program says it runs once its copies of the descriptors
        // closed on exec are gone (they go as the exec returns to it).
        let mut program = std::process::Command::new("sh")
            .args(["-c", "echo running; read line; exit 0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = [0u8; 8];
        program
            .stdout
            .take()
            .unwrap()
            .read_exact(&mut said)
            .unwrap();
        assert_eq!(&said, b"running\n");
        drop(listener);
        let marked_now = marked(id);
        drop(program.stdin.take());
        assert!(program.wait().unwrap().success());
        assert!(!marked_now, "the program kept a copy of the mark");
    });
}

/// A listener moved into a child's closure is the child's: the child
/// accepts on it, holds its mark (a bind at the path is `AddrInUse`
/// without being a client of it), and removes the file when it is done.
#[test]
fn a_child_given_a_listener_accepts_and_holds_its_mark() {
    let _alone = alone();
    watchdog("handed-over mark", LIMIT, || {
        let dir = common::TempDir::new("given");
        let path = dir.0.join("s");
        let address = Address::Unix(path.clone());
        let listener = Listener::bind(&address, None).unwrap();
        let id = file_id(&path);
        let mut child = Process::new(move || {
            let mut first = listener.accept().unwrap();
            first.send_bytes(b"listening").unwrap();
            let mut second = listener.accept().unwrap();
            let got = second.recv_bytes().unwrap();
            second.send_bytes(&got).unwrap();
        });
        child.start().unwrap();
        let child = Reaped(Some(child));
        let mut first = connect(&address, None).unwrap();
        assert_eq!(first.recv_bytes().unwrap(), b"listening");
        assert!(marked(id), "the child holds no mark");
        let third = Listener::bind(&address, None);
        assert!(third.is_err(), "a second listener at a live path");
        let mut second = connect(&address, None).unwrap();
        second.send_bytes(b"real").unwrap();
        // The child's second accept was this client, not the bind's probe.
        assert_eq!(second.recv_bytes().unwrap(), b"real");
        assert_eq!(child.0.as_ref().unwrap().join().unwrap(), 0);
        assert!(!path.exists(), "the child leaves its file");
        assert!(!marked(id));
    });
}

/// A child accepting on its parent's listener (a copy it shares, as a
/// forked Python child can): it gets the client, the parent's mark tells
/// a bind at the path that it lives without a probe reaching the child,
/// and the file and mark stay the parent's after the child exits.
#[test]
fn a_child_accepts_on_its_parents_listener() {
    let _alone = alone();
    watchdog("shared listener", LIMIT, || {
        let dir = common::TempDir::new("shared");
        let path = dir.0.join("s");
        let address = Address::Unix(path.clone());
        let listener = Arc::new(Listener::bind(&address, None).unwrap());
        let id = file_id(&path);
        let mut child = Process::new({
            let listener = listener.clone();
            move || {
                let mut conn = listener.accept().unwrap();
                let got = conn.recv_bytes().unwrap();
                conn.send_bytes(&got).unwrap();
            }
        });
        child.start().unwrap();
        let child = Reaped(Some(child));
        assert!(Listener::bind(&address, None).is_err());
        let mut client = connect(&address, None).unwrap();
        client.send_bytes(b"real").unwrap();
        assert_eq!(client.recv_bytes().unwrap(), b"real");
        assert_eq!(child.0.as_ref().unwrap().join().unwrap(), 0);
        assert!(path.exists(), "the file is the parent's");
        assert!(marked(id), "the mark is the parent's");
        drop(listener);
        assert!(!path.exists());
        assert!(!marked(id));
    });
}
