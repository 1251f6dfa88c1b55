//! [`Listener`] and [`connect`]: connections by address, over Unix or TCP
//! sockets, optionally authenticated with a shared key.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::auth::{handshake, Side};
use super::Connection;
use crate::cell::RawValue;
use crate::error::{Error, Result};
use crate::sys;

/// Where a [`Listener`] listens: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket file.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl FromStr for Address {
    type Err = Error;

    /// Parses `unix:PATH` or `tcp:HOST:PORT` (HOST may be a name).
    fn from_str(s: &str) -> Result<Address> {
        let bad = || {
            Error::InvalidArgument(format!(
                "address {s:?}: expected unix:PATH or tcp:HOST:PORT"
            ))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Address::Unix(path.into()));
        }
        let hostport = s.strip_prefix("tcp:").ok_or_else(bad)?;
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("resolve {hostport:?}"), e))?
            .next()
            .ok_or_else(bad)?;
        Ok(Address::Tcp(addr))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A listening socket that hands out authenticated [`Connection`]s (Python's
/// `multiprocessing.connection.Listener`).
///
/// With an authkey, [`accept`](Listener::accept) returns a connection only
/// after a mutual HMAC challenge has succeeded: a peer without the key never
/// gets a single message to the caller. The challenge is Python's (HMAC-SHA256
/// with a Python 3.12+ peer or another `multiproc`, HMAC-MD5 where a Python
/// 3.8-3.11 peer requires it), so a Python `multiprocessing.connection.Client`
/// with the same key connects, and [`connect`] reaches a Python `Listener`. A Unix socket file is
/// created mode 0600 and removed when the listener is dropped by the
/// process that bound it (a listener moved into a forked child's closure
/// is the child's: the file stays until the child drops it; a copy a child
/// merely inherited, in a thread-local say, leaves it, as Python's does);
/// a stale one left by a crashed process is replaced, a live one is an
/// error (and a live one is not even connected to, this crate's or
/// another program's, a Python listener's, in this network namespace: its
/// accept never sees the attempt). The file appears at its path only once
/// the socket listens, so a client that finds it can connect.
///
/// # Example
/// ```
/// use multiproc::conn::{connect, Address, Listener};
/// let path = std::env::temp_dir().join(format!("doc-listener-{}", std::process::id()));
/// let listener = Listener::bind(&Address::Unix(path.clone()), Some(b"secret"))?;
/// let client = std::thread::spawn(move || -> multiproc::Result<String> {
///     let mut c = connect(&Address::Unix(path), Some(b"secret"))?;
///     c.recv()
/// });
/// listener.accept()?.send("hello")?;
/// assert_eq!(client.join().unwrap()?, "hello");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Listener {
    /// The Unix socket file it made, if any. Dropped before the socket,
    /// its mark with it (see `sys::UnixListening`).
    file: Option<SocketFile>,
    socket: Socket,
    address: Address,
    authkey: Option<Vec<u8>>,
}

/// The Unix socket file a listener made, removed when the listener is
/// dropped by the process that owns it and only while it is still this
/// file (another listener may have bound the path after this one's file
/// was removed).
struct SocketFile {
    /// Its device and inode.
    id: (u64, u64),
    /// The pid of the process that removes it: the one that bound it, or
    /// the forked child whose closure the listener was moved into. Shared
    /// memory, so that the parent's hand-over reaches the child's copy. A
    /// copy that a forked child merely inherited (one kept in a
    /// thread-local, say) leaves the file alone, as Python's listener
    /// unlinks its file only in the process that made it.
    owner: RawValue<u32>,
    /// The mark that tells another process binding the path that this
    /// listener lives, without connecting to it (see
    /// `sys::ListenerMark`): this process's own, or in a forked child an
    /// inert copy, until the child takes the listener over (it claims
    /// one of its own at its first use there).
    mark: sys::ListenerMark,
}

impl Listener {
    /// Listens at `address`; with `authkey`, every accepted connection is authenticated.
    ///
    /// # Errors
    /// `AddrInUse` if another process listens there; `InvalidArgument` if a
    /// Unix path exists and is not a socket, or is empty; OS errors.
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Listener> {
        let mut file = None;
        let (socket, address) = match address {
            // Linux's name for an empty path is one in the abstract
            // namespace, which is not spoken here: no file would name it.
            Address::Unix(path) if path.as_os_str().is_empty() => {
                return Err(Error::InvalidArgument(
                    "an empty Unix socket path (Python's names a socket in the abstract namespace, which is refused)".into(),
                ))
            }
            Address::Unix(path) => {
                // Before the file exists: a failure leaves nothing behind.
                let owner = RawValue::new(sys::getpid())?;
                // Before the mark is made: every fork, from now on, makes
                // a child's copy of it inert.
                crate::fork_handlers::ready()?;
                let made = listen_unix(path)?;
                file = Some(SocketFile {
                    id: made.id,
                    owner,
                    mark: made.mark,
                });
                (
                    Socket::Unix(UnixListener::from(made.socket)),
                    address.clone(),
                )
            }
            Address::Tcp(addr) => {
                let l = TcpListener::bind(addr)
                    .and_then(|l| sys::lengthen_backlog(&l).map(|()| l))
                    .map_err(|e| Error::io(format!("listen on {addr}"), e))?;
                let actual = l.local_addr().map_err(|e| Error::io("local_addr", e))?;
                (Socket::Tcp(l), Address::Tcp(actual))
            }
        };
        Ok(Listener {
            socket,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            file,
        })
    }

    /// The address it listens at (for `tcp:…:0`, with the port the OS chose).
    pub fn address(&self) -> &Address {
        self.keep_mark();
        &self.address
    }

    /// Waits for a client and authenticates it.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if the client fails the challenge (its
    /// connection is closed; the listener keeps working); OS errors.
    pub fn accept(&self) -> Result<Connection> {
        let mut conn = self.accept_unauthenticated()?;
        if let Some(key) = &self.authkey {
            handshake(&mut conn, key, Side::Server)?;
        }
        Ok(conn)
    }

    /// Accepts a connection without the handshake, so that a server can run
    /// the handshakes of many clients at once and one slow client never
    /// holds up the others. Nothing may be read from it before a handshake
    /// with [`authkey`](Listener::authkey) succeeds.
    pub(crate) fn accept_unauthenticated(&self) -> Result<Connection> {
        self.keep_mark();
        let fd: OwnedFd = match &self.socket {
            Socket::Unix(l) => l.accept().map(|(s, _)| s.into()),
            Socket::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s.into()
            }),
        }
        .map_err(|e| Error::io("accept", e))?;
        Connection::from_socket(fd)
    }

    /// Makes [`accept`](Listener::accept) return `WouldBlock` instead of
    /// waiting when no client is queued (for an event loop that accepts
    /// until the queue is empty).
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        self.keep_mark();
        match &self.socket {
            Socket::Unix(l) => l.set_nonblocking(nonblocking),
            Socket::Tcp(l) => l.set_nonblocking(nonblocking),
        }
        .map_err(|e| Error::io("set_nonblocking", e))
    }

    /// The key clients must prove they know, if any.
    pub(crate) fn authkey(&self) -> Option<&[u8]> {
        self.authkey.as_deref()
    }
}

impl Listener {
    /// In a forked child that has taken the listener over (one moved into
    /// its closure), claims the mark of its socket file for this process
    /// (the fork made the child's copy inert, and the parent's went with
    /// its copy of the listener). A child that merely inherited a copy
    /// keeps none: its parent's holds as long as the parent's listener,
    /// and the file goes with that. (Until the child's first use, a bind
    /// elsewhere at the path finds the child's listener in the kernel's
    /// list, or, where the kernel does not list it, asks it by
    /// connecting: it is told `AddrInUse` all the same, and the child's
    /// accept then returns that connection, closed.)
    fn keep_mark(&self) {
        if let Some(file) = &self.file {
            if file.owner.atomic().load(Ordering::Acquire) == sys::getpid() {
                file.mark.keep();
            }
        }
    }

    /// The Unix socket file it made (its path, device and inode), if any.
    pub(crate) fn socket_file(&self) -> Option<(&std::path::Path, (u64, u64))> {
        match (&self.address, &self.file) {
            (Address::Unix(path), Some(file)) => Some((path, file.id)),
            _ => None,
        }
    }

    /// Removes the Unix socket file now (for a process that is about to
    /// exit without dropping the listener), if the file at its path is
    /// still the one it made.
    pub(crate) fn remove_socket_file(&self) {
        let (Address::Unix(path), Some(file)) = (&self.address, &self.file) else {
            return;
        };
        if file.owner.atomic().load(Ordering::Acquire) != sys::getpid() {
            return;
        }
        let ours = std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == file.id);
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        match (crate::process::handing_to_child(), &self.file) {
            // A listener moved into a forked child's closure is the
            // child's: the parent's copy, dropped at the fork (before the
            // child runs), hands the file over.
            (Some(child), Some(file)) => file.owner.atomic().store(child, Ordering::Release),
            (Some(_), None) => {}
            (None, _) => self.remove_socket_file(),
        }
    }
}

impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.keep_mark();
        match &self.socket {
            Socket::Unix(l) => l.as_raw_fd(),
            Socket::Tcp(l) => l.as_raw_fd(),
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .finish()
    }
}

/// How many times a Unix listener binds again after finding its path
/// taken by a stale socket file that it removed (other listeners may be
/// binding the same path at once).
const BIND_ATTEMPTS: usize = 8;

/// A listening socket at the Unix socket file `path` (with its file's
/// device and inode, and its mark): bound where nothing is, or in the
/// place of a stale socket file (one nobody listens on any more).
fn listen_unix(path: &Path) -> Result<sys::UnixListening> {
    let listen_error = |e| Error::io(format!("listen on {}", path.display()), e);
    remove_leftovers(path, false);
    for _ in 0..BIND_ATTEMPTS {
        // A file at the path is looked at first: a bind at a live one
        // makes nothing beside it (a temporary file that a kill could
        // leave behind, as it did one time in two for a process trying
        // again and again).
        remove_stale_socket(path)?;
        match sys::unix_listen(path, sys::BACKLOG) {
            Ok(made) => return Ok(made),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(listen_error(e)),
        }
    }
    Err(listen_error(io::Error::new(
        io::ErrorKind::AddrInUse,
        "other listeners keep taking the path",
    )))
}

/// Removes, beside `path`, the temporary files that a process killed while
/// it was binding a path there left behind: a socket file under a
/// temporary name (`sys::temporary_socket_maker`), and a stale file of
/// `path` renamed aside (see [`remove_stale_socket`]). Only those whose
/// maker, named by their name, is gone and that nobody listens on: a live
/// process may still be using one (and a process of another pid namespace,
/// whose pid is unknown here, may be binding one: it binds at the path
/// itself when its temporary file is taken away). Looked for once per
/// directory in a process, and `again` (when a stale file was found at a
/// path: a crash happened there); a failure leaves them.
fn remove_leftovers(path: &Path, again: bool) {
    use std::sync::Mutex;
    /// The directories looked in.
    static LOOKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A lock a forked child's copy may find held by a thread it does
    // not have: then it looks again.
    if let Ok(mut looked) = LOOKED.try_lock() {
        let before = looked.iter().any(|d| d == dir);
        if before && !again {
            return;
        }
        if !before {
            looked.push(dir.to_path_buf());
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let stale_prefix = path.file_name().map(|n| {
        let mut p = n.to_owned();
        p.push(".");
        p
    });
    for entry in entries.flatten() {
        let name = entry.file_name();
        let maker = sys::temporary_socket_maker(&name).or_else(|| {
            let prefix = stale_prefix.as_ref()?.to_str()?;
            aside_maker(name.to_str()?.strip_prefix(prefix)?)
        });
        let Some(maker) = maker else {
            continue;
        };
        let gone = maker == 0
            || i32::try_from(maker).is_err()
            || (maker != sys::getpid() && !sys::pid_alive(maker));
        if !gone {
            continue;
        }
        let leftover = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&leftover) else {
            continue;
        };
        if meta.file_type().is_socket()
            && matches!(listening(&leftover, (meta.dev(), meta.ino())), Ok(false))
        {
            let _ = std::fs::remove_file(&leftover);
        }
    }
}

/// The process that renamed a stale file aside, from the end of its new
/// name after the path's (`PID-N.stale`, see [`remove_stale_socket`]).
fn aside_maker(end: &str) -> Option<u32> {
    let (pid, n) = end.strip_suffix(".stale")?.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes the socket file at `path` if nobody listens on it. Another
/// listener may bind the path between the look and the removal (one that
/// found the same stale file and removed it first), and a fresh file
/// refuses connections until its listener listens: the file is renamed
/// aside and looked at again there, removed only if nobody listens on it
/// still, and put back otherwise (its listener checks, once it listens,
/// that its file is still in place).
fn remove_stale_socket(path: &Path) -> Result<()> {
    let found = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("inspect {}", path.display()), e)),
    };
    if !found.file_type().is_socket() {
        return Err(Error::InvalidArgument(format!(
            "{} exists and is not a socket",
            path.display()
        )));
    }
    // Without waiting: a live listener whose backlog is full would hold a
    // blocking connect until it accepted someone.
    match listening(path, (found.dev(), found.ino())) {
        Ok(true) => {
            return Err(Error::io(
                format!("listen on {}", path.display()),
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening there",
                ),
            ))
        }
        Ok(false) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("probe {}", path.display()), e)),
    }
    static ASIDE: AtomicU32 = AtomicU32::new(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(
        ".{}-{}.stale",
        sys::getpid(),
        ASIDE.fetch_add(1, Ordering::Relaxed)
    ));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("remove stale {}", path.display()), e)),
    }
    // Where the name aside is too long for a socket address, it is taken
    // for live unless it is the very file found stale: the same inode,
    // its contents' time unchanged (a rename leaves it; a new file's
    // differs).
    let identity = |m: &std::fs::Metadata| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec());
    let live = match std::fs::symlink_metadata(&aside) {
        Ok(m) => listening(Path::new(&aside), (m.dev(), m.ino()))
            .unwrap_or(identity(&m) != identity(&found)),
        Err(_) => true,
    };
    if live {
        // A link, not a rename: it never replaces what yet another
        // listener may have bound there meanwhile.
        let _ = std::fs::hard_link(&aside, path);
    }
    let _ = std::fs::remove_file(&aside);
    if !live {
        // Its process crashed, perhaps in the middle of a bind.
        remove_leftovers(path, true);
    }
    Ok(())
}

/// Whether a process listens on the Unix socket file `path`, of device
/// and inode `id`. A listener of this crate says so by its mark, and
/// the kernel lists any other of this network namespace (`sock_diag`),
/// both of which leave it alone; one it does not list (in another
/// namespace, or a kernel without `unix_diag`) is asked by connecting,
/// and its accept then returns that connection, at its end at once:
/// there is no other way to ask it. `NotFound` if the file at `path` is
/// not that one any more.
fn listening(path: &Path, id: (u64, u64)) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // The file held, and asked through its descriptor: by its path, the
    // connection reached whatever was there by then, which a listener
    // replacing the stale file at once may have put there without this
    // looking for its mark (the probe was that listener's next client).
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    let meta = held.metadata()?;
    if (meta.dev(), meta.ino()) != id {
        return Err(io::ErrorKind::NotFound.into());
    }
    if sys::listener_marked(id)? || sys::listed_as_listening(id) {
        return Ok(true);
    }
    let through = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
    match sys::unix_listening(&through) {
        // Without `/proc`, by its path.
        Err(e) if e.kind() == io::ErrorKind::NotFound => sys::unix_listening(path),
        asked => asked,
    }
}

/// Connects to a [`Listener`] and, with `authkey`, authenticates both ways
/// (Python's `multiprocessing.connection.Client`; it also connects to a
/// Python `multiprocessing.connection.Listener`, 3.8 or later).
///
/// # Errors
/// [`Error::AuthenticationFailed`] on a key mismatch; OS errors.
pub fn connect(address: &Address, authkey: Option<&[u8]>) -> Result<Connection> {
    let fd: OwnedFd = match address {
        Address::Unix(path) => connect_unix(path).map(Into::into),
        Address::Tcp(addr) => TcpStream::connect(addr).map(|s| {
            let _ = s.set_nodelay(true);
            s.into()
        }),
    }
    .map_err(|e| Error::io(format!("connect to {address}"), e))?;
    let mut conn = Connection::from_socket(fd)?;
    if let Some(key) = authkey {
        handshake(&mut conn, key, Side::Client)?;
    }
    Ok(conn)
}

/// A connection to the Unix socket file `path`. A signal that comes while
/// the listener's queue is full (from a handler installed without
/// `SA_RESTART`) ends std's connect with `Interrupted`; the socket never
/// connected, so a new one tries again, as Python's connect does (PEP
/// 475). (std's TCP connect tries again itself.)
fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    loop {
        match UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            connected => return connected,
        }
    }
}
