//! The forkserver start method: children forked by a single-threaded
//! server process instead of by the (possibly multithreaded) parent.
//!
//! `fork` copies only the calling thread, so a child forked while another
//! thread holds a lock (a user's `Mutex`, a library's) finds it locked
//! forever. A fork server is forked once, early, while no other thread
//! holds anything; from then on every child is forked by the server, whose
//! one thread holds nothing when it forks. This is Python's `forkserver`.
//! Unlike Python's, ours is a plain fork of the parent (no `exec`): it has
//! the parent's code and data as they were when it started.
//!
//! The server's children are its own, so the server reaps them, and each
//! client learns about its child on a private status socket: first the
//! child's pid with a pid file descriptor attached (for signals that can
//! never reach another process), then, once the server has reaped it, its
//! exit code. Nothing else in the parent can reap such a child.
//!
//! The server ends when told to, when its parent process exits, or when the
//! request socket is closed; it kills and reaps its remaining children
//! first, and every child is killed if the server dies, so it leaves
//! neither zombies nor orphans.

use std::cell::UnsafeCell;
use std::ffi::OsString;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::code_origin::CodeOrigin;
use super::{locked, pairing, parent_process, Process, CHILD_COUNTER, IDENTITY};
use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::sys::{self, Deadline, Forked};

/// What a server's child runs: the request's bytes and descriptors in, the
/// exit code out.
pub(super) type ChildBody = Box<dyn Fn(Vec<u8>, Vec<OwnedFd>) -> i32 + Send>;

/// Request byte: fork a child.
const FORK: u8 = b'F';
/// Request byte: kill the children and exit.
const STOP: u8 = b'S';
/// The most descriptors one request carries (the status socket included).
const MAX_FDS: usize = 8;

/// What a child is told, by the client directly, on its status socket.
#[derive(Serialize, Deserialize)]
struct Order {
    name: String,
    path: Vec<u32>,
    #[serde(with = "byte_string")]
    body: Vec<u8>,
    /// The client's `log_to_stderr` level, if it called it (perhaps after
    /// it started the server, which then has no such logger).
    log_level: Option<usize>,
}

/// A `Vec<u8>` as one byte string: serde's default, a sequence, is encoded
/// and decoded a byte at a time (many times slower for large arguments).
mod byte_string {
    use serde::{de, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// A fork server, and the socket on which it takes requests.
pub(super) struct ForkServer {
    /// Sequenced packets: each request is one message, so threads may
    /// send at once without a lock.
    requests: OwnedFd,
    /// The server's pid file descriptor, to notice its death while waiting.
    server_pidfd: OwnedFd,
    /// The server, reaped by its owner only (not in the list of children).
    process: Process<'static>,
}

/// A child started by a fork server: the server's child, not ours.
pub(super) struct Served {
    pub(super) pid: u32,
    /// Names this child only, even after it exits.
    pub(super) pidfd: OwnedFd,
    /// Readable once the server has reaped the child; see [`exit_code`].
    pub(super) status: OwnedFd,
}

impl ForkServer {
    /// Forks a server that runs `serve` in each child it forks. Call it
    /// while no other thread may hold a lock the children need.
    pub(super) fn start(name: &str, serve: ChildBody) -> Result<ForkServer> {
        let (requests, server_end) =
            sys::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        let mut process = Process::helper(move || {
            // Nothing of the parent's but the standard streams: among the
            // rest is the copy of the client's end of `requests` (released,
            // so that the server sees the end of file when the client closes
            // its own) and whatever other threads had open at the fork.
            if let Err(e) = sys::release_inherited(&[server_end.as_raw_fd()]) {
                super::logging::to_stderr(format_args!(
                    "multiproc: a fork server cannot release its parent's descriptors: {e}"
                ));
                sys::exit_now(1);
            }
            // Its children are its own to reap (and they start with the
            // default, as Python's fork server's do).
            if let Err(e) = sys::default_child_signal() {
                super::logging::to_stderr(format_args!(
                    "multiproc: a fork server cannot reset SIGCHLD: {e}"
                ));
                sys::exit_now(1);
            }
            // Ctrl-C at the terminal reaches the whole process group: the
            // server does not end by it, as Python's does not, so that the
            // program can go on starting children (and a pool keeps its
            // workers' server). Held (blocked) rather than ignored: each
            // child gets the program's mask back, and one sent to a child
            // before it has is still delivered then.
            let ctrl_c = match sys::SignalsHeld::new(&[sys::SIGINT]) {
                Ok(held) => held,
                Err(e) => {
                    super::logging::to_stderr(format_args!(
                        "multiproc: a fork server cannot block SIGINT: {e}"
                    ));
                    sys::exit_now(1);
                }
            };
            sys::exit_now(run_server(server_end, &serve, &ctrl_c))
        })
        .with_name(name);
        process.start_unlisted()?;
        let server_pidfd = process
            .pidfd_clone()
            .ok_or_else(|| Error::io("fork server", io::Error::other("not running")))?;
        Ok(ForkServer {
            requests,
            server_pidfd,
            process,
        })
    }

    /// Asks the server for a child named `name` (with identity `path`) that
    /// runs the server's function on `body` and copies of `fds`.
    pub(super) fn fork(
        &self,
        name: &str,
        path: &[u32],
        body: Vec<u8>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Served> {
        let err = |e| Error::io("start a child through the fork server", e);
        let (ours, orders) = {
            // The server's end of the status socket must be the server's
            // only: a copy in a process forked meanwhile would keep it from
            // reading as closed when the server dies.
            let _no_fork = pairing();
            let (ours, theirs) = sys::socketpair().map_err(err)?;
            // Taken before asking: once the child exists, sending its order
            // needs no new descriptor.
            let orders = ours.try_clone().map_err(err)?;
            let mut attached = vec![theirs.as_fd()];
            attached.extend_from_slice(fds);
            sys::send_with_fds(&self.requests, &[FORK], &attached).map_err(err)?;
            (ours, orders)
        };
        // The server may die before it answers (and a copy of its request
        // socket elsewhere would keep the question pending): wait on both.
        let ready = sys::poll_readable(
            &[ours.as_raw_fd(), self.server_pidfd.as_raw_fd()],
            Deadline::Never,
        )
        .map_err(err)?;
        if !ready[0] {
            return Err(err(io::Error::other("the fork server is gone")));
        }
        let mut reply = [0u8; 4];
        let (n, mut got) = sys::recv_with_fds(&ours, &mut reply, 1, true).map_err(err)?;
        let pid = i32::from_le_bytes(reply);
        match (n, got.pop()) {
            (4, Some(pidfd)) if pid > 0 => {
                // The child learns its work (the server never parses it)
                // only now that the server holds its pidfd: a child the
                // server could not keep track of was killed before it read
                // anything, and ran nothing.
                let order = Order {
                    name: name.into(),
                    path: path.to_vec(),
                    body,
                    log_level: super::logging::inherited_level(),
                };
                Connection::from_socket(orders)?.send(&order)?;
                Ok(Served {
                    pid: pid as u32,
                    pidfd,
                    status: ours,
                })
            }
            (4, _) if pid < 0 => Err(err(io::Error::from_raw_os_error(-pid))),
            _ => Err(err(io::Error::other("the fork server is gone"))),
        }
    }

    /// Whether the server still takes requests: it has not exited, nor
    /// closed its end of the request socket (which it does only to exit,
    /// and which it never writes to, so that end reads as hung up).
    fn is_running(&self) -> bool {
        let fds = [self.requests.as_raw_fd(), self.server_pidfd.as_raw_fd()];
        matches!(sys::poll_readable(&fds, Deadline::Now), Ok(ready) if !ready.contains(&true))
    }

    /// The server's pid file descriptor, readable once it has exited: then
    /// its children are dead or dying (they die with it), and a child's
    /// status socket may never read as closed if a fork elsewhere copied
    /// the server's end of it while the client held that end.
    pub(super) fn pidfd(&self) -> BorrowedFd<'_> {
        self.server_pidfd.as_fd()
    }

    /// Tells the server to kill its children and exit, and reaps it.
    pub(super) fn stop(&self) {
        let _ = sys::send_with_fds(&self.requests, &[STOP], &[]);
        let _ = self.process.join();
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The exit code of a child whose `status` socket is readable, in Python's
/// convention; `None` if it has not been reaped yet. A server that died
/// without reporting took the child with it (`SIGKILL`).
pub(super) fn exit_code(status: &OwnedFd) -> Option<i32> {
    let mut code = [0u8; 4];
    let mut have = 0;
    while have < code.len() {
        let mut buf = [0u8; 4];
        match sys::recv_with_fds(status, &mut buf[..4 - have], 0, have > 0) {
            Ok((0, _)) => return Some(-sys::SIGKILL),
            Ok((n, _)) => {
                code[have..have + n].copy_from_slice(&buf[..n]);
                have += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) => return Some(-sys::SIGKILL),
        }
    }
    Some(i32::from_le_bytes(code))
}

/// The fork server of [`Process::forkserver`](super::Process::forkserver):
/// one per process, started on first use (and again if it was killed),
/// never stopped (it exits with this process). A forked child starts its
/// own: the inherited one is the parent's.
struct Global {
    owner: u32,
    /// Dropped (its descriptors closed) once it is retired and unused.
    server: UnsafeCell<ManuallyDrop<ForkServer>>,
    /// The [`Lease`]s on `server`, with [`RETIRED`] set once the server
    /// was found dead and replaced: no lease is taken after that, and the
    /// last one out (or the retirement, if there is none) drops the server.
    users: AtomicUsize,
}

/// The bit of [`Global::users`] that says the server was replaced.
const RETIRED: usize = 1 << (usize::BITS - 1);

impl Global {
    /// A lease on the server, unless it was retired.
    fn lease(&'static self) -> Option<Lease> {
        let mut users = self.users.load(Ordering::Acquire);
        loop {
            if users & RETIRED != 0 {
                return None;
            }
            match self.users.compare_exchange_weak(
                users,
                users + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Lease(self)),
                Err(now) => users = now,
            }
        }
    }

    /// Takes no more leases; the server goes with the last one.
    fn retire(&self) {
        if self.users.fetch_or(RETIRED, Ordering::AcqRel) == 0 {
            // SAFETY: no lease is held (the count was zero) and none can be
            // taken any more (retired): nothing refers to the server, and
            // this is the one transition to "retired and unused".
            unsafe { self.drop_server() };
        }
    }

    /// Drops the server (stopping nothing: it is dead) and so closes its
    /// descriptors.
    ///
    /// # Safety
    /// Once only, with no reference to the server left or to come.
    unsafe fn drop_server(&self) {
        // SAFETY: the caller's promise: nobody else reaches the server.
        let server = unsafe { &mut *self.server.get() };
        // SAFETY: dropped once (the caller's promise), never used after.
        unsafe { ManuallyDrop::drop(server) };
    }
}

// SAFETY: the server is shared as `&ForkServer` (which is `Sync`) through
// leases only, and reached mutably once, to drop it, when no lease is held
// and none can be taken (see `Global::retire` and `Lease`'s drop).
unsafe impl Sync for Global {}

/// Use of a [`Global`]'s server, which stays open meanwhile.
struct Lease(&'static Global);

impl std::ops::Deref for Lease {
    type Target = ForkServer;

    fn deref(&self) -> &ForkServer {
        // SAFETY: the server is dropped only once retired with no lease
        // held, and this lease is held.
        unsafe { &*self.0.server.get() }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0.users.fetch_sub(1, Ordering::AcqRel) == RETIRED | 1 {
            // SAFETY: this was the last lease of a retired server: nothing
            // else refers to it, none can come, and the count is now
            // `RETIRED` alone, which no other lease or retirement leaves.
            unsafe { self.0.drop_server() };
        }
    }
}

/// Leaked once per server a process starts, so that it is reached without
/// a lock (a lock held by another thread at a fork would stay held in the
/// child); a dead server's descriptors are closed once it is replaced and
/// no thread uses it any more.
static GLOBAL: AtomicPtr<Global> = AtomicPtr::new(std::ptr::null_mut());

/// Starts this process's fork server for [`Process::forkserver`] if it is
/// not running yet. It starts by itself on first use; call this early,
/// while the program has one thread, so that no lock another thread holds
/// is copied into it (and so into every child it forks).
///
/// The server and its children keep none of this process's open
/// descriptors but the standard streams, as with Python's fork server
/// (a new program): in them, a file or socket this process had open reads
/// as end of file and refuses writes. A child opens what it needs itself,
/// from its arguments (a named segment's name, an address to connect to).
///
/// # Errors
/// If the server cannot be started.
pub fn start_forkserver() -> Result<()> {
    global().map(|_| ())
}

/// Has this process's fork server start a child for `call`; if the
/// server turns out to be gone (killed by a user, by the OOM killer),
/// starts another and asks it once more.
pub(super) fn fork_global(name: &str, path: &[u32], call: &Call) -> Result<Served> {
    let server = global()?;
    match server.fork(name, path, call.encode()?, &[]) {
        Err(_) if !server.is_running() => global()?.fork(name, path, call.encode()?, &[]),
        served => served,
    }
}

fn global() -> Result<Lease> {
    let me = sys::getpid();
    let current = GLOBAL.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in GLOBAL came from `Box::into_raw` and
    // is never freed: valid for the life of the process (and its forks).
    let found = unsafe { current.as_ref() }.filter(|g| g.owner == me);
    if let Some(g) = found {
        // Retired: another thread replaced it meanwhile; look again.
        let Some(lease) = g.lease() else {
            return global();
        };
        if lease.is_running() {
            return Ok(lease);
        }
        // Killed (by a user, the OOM killer): as Python's
        // `ensure_running`, start another. The dead one is reaped.
        let _ = lease.process.join();
    }
    let mine = Box::into_raw(Box::new(Global {
        owner: me,
        server: UnsafeCell::new(ManuallyDrop::new(ForkServer::start(
            "ForkServer",
            Box::new(|body, _| run_encoded(&body)),
        )?)),
        users: AtomicUsize::new(0),
    }));
    match GLOBAL.compare_exchange(current, mine, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // The dead server's descriptors close with its last lease. An
            // inherited server (another owner's) is the parent's: left alone.
            if let Some(g) = found {
                g.retire();
            }
            // SAFETY: `mine` is now published, never freed.
            let g: &'static Global = unsafe { &*mine };
            // Retired only by the thread that replaces it, after this one.
            g.lease().map_or_else(global, Ok)
        }
        Err(_) => {
            // Another thread of this process started one first: use that.
            // SAFETY: `mine` was never published; this is its only owner.
            let mine = unsafe { Box::from_raw(mine) };
            // SAFETY: never published: nothing else refers to its server.
            unsafe { mine.drop_server() };
            global()
        }
    }
}

// ---------------------------------------------------------------------------
// What a child of the process-wide server runs.

/// Runs the function at `func` on encoded arguments; the exit code.
type Trampoline = fn(usize, &[u8]) -> i32;

/// What a child of this process's fork server runs for
/// [`Process::forkserver`](super::Process::forkserver): a function, the
/// trampoline that decodes its arguments, and the arguments.
///
/// The function travels by address. The addresses are this process's own
/// and are valid in the server's children because the server is a fork of
/// this process (the same executable at the same addresses: no `exec`);
/// they travel only over the private socket between this process and its
/// own fork server, never from outside (a spawned child, by contrast, is
/// a new program and runs only listed entries: see `spawn`). Code this
/// process loaded after it forked the server (`dlopen`) is missing in the
/// server, or something else is at its address: each address travels with
/// the object that holds it (as a pool task's does), and the child calls
/// it only if its own object there is the same file at the same place.
pub(super) struct Call {
    call: usize,
    func: usize,
    args: std::result::Result<Vec<u8>, String>,
}

impl Call {
    pub(super) fn new<A: Serialize + DeserializeOwned>(f: fn(A), args: &A) -> Call {
        Call {
            call: run::<A> as Trampoline as usize,
            func: f as usize,
            args: postcard::to_allocvec(args).map_err(|e| e.to_string()),
        }
    }

    /// The call as bytes for [`run_encoded`].
    ///
    /// # Errors
    /// [`Error::Serialize`] if the arguments could not be encoded;
    /// `InvalidArgument` if the dynamic loader knows no object that holds
    /// the function or its trampoline (a child could not check it has them).
    pub(super) fn encode(&self) -> Result<Vec<u8>> {
        let args = self.args.clone().map_err(Error::Serialize)?;
        let encoded = Encoded {
            call: self.call as u64,
            func: self.func as u64,
            call_origin: origin(self.call)?,
            func_origin: origin(self.func)?,
            args,
            // Not known if it was removed: the child then stays in the server's.
            cwd: std::env::current_dir()
                .ok()
                .map(|dir| dir.into_os_string().into_vec()),
        };
        postcard::to_allocvec(&encoded).map_err(|e| Error::Serialize(e.to_string()))
    }
}

/// The object that holds the code at `addr`, which a child checks it has.
fn origin(addr: usize) -> Result<CodeOrigin> {
    CodeOrigin::of(addr).ok_or_else(|| {
        Error::InvalidArgument(
            "a fork server's child cannot be given a function that is in no object \
             the dynamic loader knows"
                .into(),
        )
    })
}

/// A [`Call`] as the server's child receives it.
#[derive(Serialize, Deserialize)]
struct Encoded {
    call: u64,
    func: u64,
    call_origin: CodeOrigin,
    func_origin: CodeOrigin,
    #[serde(with = "byte_string")]
    args: Vec<u8>,
    /// The working directory of the process that started the child, which
    /// the child runs in (as Python's forkserver children do), rather than
    /// the one the server was started in.
    cwd: Option<Vec<u8>>,
}

/// Runs a call made by [`Call::encode`]; the exit code.
fn run_encoded(bytes: &[u8]) -> i32 {
    let e = match postcard::from_bytes::<Encoded>(bytes) {
        Ok(e) => e,
        Err(e) => {
            super::logging::to_stderr(format_args!(
                "multiproc: a fork server's child got a malformed call: {e}"
            ));
            return 1;
        }
    };
    let holds =
        |origin: &CodeOrigin, addr: u64| usize::try_from(addr).is_ok_and(|addr| origin.holds(addr));
    if !holds(&e.call_origin, e.call) || !holds(&e.func_origin, e.func) {
        super::logging::to_stderr(format_args!(
            "multiproc: a fork server's child does not have the function's code ({}): \
             it was loaded after the fork server started",
            e.func_origin.path()
        ));
        return 1;
    }
    if let Some(dir) = e
        .cwd
        .map(|dir| std::path::PathBuf::from(OsString::from_vec(dir)))
    {
        if let Err(err) = std::env::set_current_dir(&dir) {
            super::logging::to_stderr(format_args!(
                "multiproc: a fork server's child cannot enter its parent's working \
                 directory {}: {err}",
                dir.display()
            ));
            return 1;
        }
    }
    // SAFETY: `call` is the address of a `Trampoline` taken by this
    // process's parent, of which this process is a fork (see `Call`), in
    // the object `call_origin`, which this process has at the same place
    // (checked above): the same code.
    let call: Trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(e.call as usize) };
    call(e.func as usize, &e.args)
}

fn run<A: DeserializeOwned>(func: usize, args: &[u8]) -> i32 {
    // SAFETY: `func` is the address of an `fn(A)` taken in `Call::new` with
    // the same `A`, by the process this one is a fork of (see `Call`), in
    // an object this process has at the same place (`run_encoded` checks).
    let f: fn(A) = unsafe { std::mem::transmute::<usize, fn(A)>(func) };
    match postcard::from_bytes(args) {
        Ok(a) => {
            f(a);
            0
        }
        Err(e) => {
            super::logging::to_stderr(format_args!(
                "multiproc: a fork server's child cannot decode its arguments: {e}"
            ));
            1
        }
    }
}

// ---------------------------------------------------------------------------
// The server process.

/// A child of the server.
struct Child {
    pid: u32,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's loop; its exit code. `ctrl_c` holds SIGINT in the server;
/// each child lets it go.
fn run_server(requests: OwnedFd, serve: &ChildBody, ctrl_c: &sys::SignalsHeld) -> i32 {
    let server_pid = sys::getpid();
    let Some(parent) = parent_process() else {
        return 1;
    };
    let Ok(parent_fd) = sys::pidfd_open(parent.pid()) else {
        return 1;
    };
    if std::os::unix::process::parent_id() != parent.pid() {
        // The parent died before its pidfd was opened.
        return 1;
    }
    let mut children: Vec<Child> = Vec::new();
    loop {
        let mut fds = vec![requests.as_raw_fd(), parent_fd.as_raw_fd()];
        fds.extend(children.iter().map(|c| c.pidfd.as_raw_fd()));
        let Ok(ready) = sys::poll_readable(&fds, Deadline::Never) else {
            break;
        };
        if ready[1] {
            break;
        }
        // Highest index first, so that the indexes stay valid while removing.
        for i in (0..children.len()).rev() {
            if ready[2 + i] {
                reap(children.swap_remove(i));
            }
        }
        if !ready[0] {
            continue;
        }
        let mut request = [0u8; 1];
        match sys::recv_with_fds(&requests, &mut request, MAX_FDS, true) {
            Ok((1, mut fds)) if request[0] == FORK && !fds.is_empty() => {
                // The first descriptor is the status socket, the rest the child's.
                let status = fds.remove(0);
                match sys::fork() {
                    Ok(Forked::Child) => {
                        // The server's descriptors are not the child's.
                        drop((requests, parent_fd, children));
                        run_child(status, fds, serve, server_pid, ctrl_c)
                    }
                    Ok(Forked::Parent { pid }) => children.extend(adopt(pid, status)),
                    Err(e) => reply(&status, -e.raw_os_error().unwrap_or(sys::errno::EIO), None),
                }
            }
            Ok((1, _)) if request[0] == STOP => break,
            // A malformed request (only this crate sends any): dropped.
            Ok((n, _)) if n > 0 => {}
            Err(e) if e.kind() == io::ErrorKind::Other => {}
            // End of file or a broken socket: nobody can ask any more.
            _ => break,
        }
    }
    // No child outlives the server.
    for c in &children {
        let _ = sys::pidfd_signal(&c.pidfd, sys::SIGKILL);
    }
    children.into_iter().for_each(reap);
    0
}

/// Tells the client about its new child; the child if that worked.
fn adopt(pid: u32, status: OwnedFd) -> Option<Child> {
    match sys::pidfd_open(pid) {
        Ok(pidfd) => {
            reply(&status, pid as i32, Some(pidfd.as_fd()));
            Some(Child { pid, pidfd, status })
        }
        Err(e) => {
            // Our own child, not reaped yet: the pid is that process.
            let _ = sys::kill(pid, sys::SIGKILL);
            let _ = sys::waitpid(pid, true);
            reply(&status, -e.raw_os_error().unwrap_or(sys::errno::EIO), None);
            None
        }
    }
}

/// Sends the client a pid (or minus an errno), with the pidfd attached.
fn reply(status: &OwnedFd, value: i32, pidfd: Option<BorrowedFd<'_>>) {
    // The client may be gone; nothing to do about it here.
    let _ = sys::send_with_fds(status, &value.to_le_bytes(), pidfd.as_slice());
}

/// Reaps an exited (or killed) child and tells its client the exit code.
fn reap(child: Child) {
    let code = sys::waitpid(child.pid, true)
        .ok()
        .flatten()
        .unwrap_or(-sys::SIGKILL);
    reply(&child.status, code, None);
}

/// A child of the server: becomes the process its order describes and runs.
fn run_child(
    status: OwnedFd,
    fds: Vec<OwnedFd>,
    serve: &ChildBody,
    server_pid: u32,
    ctrl_c: &sys::SignalsHeld,
) -> ! {
    if sys::die_with_parent(server_pid).is_err() || ctrl_c.release_here().is_err() {
        sys::exit_now(1);
    }
    let Ok(mut orders) = Connection::from_socket(status) else {
        sys::exit_now(1);
    };
    // The order comes from the process that asked for this child, with
    // arguments of any size (as a Python child's are).
    orders.set_max_message(usize::MAX);
    let order = orders.recv::<Order>();
    // The status socket is the server's: closed before the work starts.
    drop(orders);
    let order = match order {
        Ok(order) => order,
        Err(e) => {
            super::logging::to_stderr(format_args!(
                "multiproc: a fork server's child got no order: {e}"
            ));
            sys::exit_now(1)
        }
    };
    if let Some(identity) = locked(&IDENTITY).as_mut() {
        identity.name = order.name;
        identity.path = order.path;
    }
    CHILD_COUNTER.store(0, Ordering::Relaxed);
    if let Some(level) = order.log_level {
        // A no-op if the server had the logger already.
        super::logging::install_inherited(level);
    }
    super::logging::info(format_args!("child process calling self.run()"));
    let code = super::run_catching(|| serve(order.body, fds));
    // As any child's end: daemon children killed, the others waited for.
    super::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static RAN: AtomicU32 = AtomicU32::new(0);

    fn record(n: u32) {
        RAN.store(n, Ordering::Relaxed);
    }

    /// A call is run only where the objects that hold its function and
    /// trampoline are those of the process that made it: an address from
    /// an object this process lacks (code loaded after the server forked)
    /// or in no object at all is refused, never jumped to.
    #[test]
    #[cfg_attr(miri, ignore = "asks the dynamic loader")]
    fn a_call_runs_only_where_its_code_is_the_same() {
        let call = Call::new(record, &41);
        assert_eq!(run_encoded(&call.encode().unwrap()), 0);
        assert_eq!(RAN.load(Ordering::Relaxed), 41);
        let forged = |edit: &dyn Fn(&mut Encoded)| {
            let mut e: Encoded = postcard::from_bytes(&Call::new(record, &7).encode().unwrap())
                .expect("our own encoding");
            edit(&mut e);
            run_encoded(&postcard::to_allocvec(&e).unwrap())
        };
        // An object this process lacks (code loaded after the server forked).
        let elsewhere = || -> CodeOrigin {
            let fields = (usize::MAX - 4095, b"/not/loaded.so".to_vec());
            postcard::from_bytes(&postcard::to_allocvec(&fields).unwrap()).unwrap()
        };
        assert_eq!(forged(&|e| e.func_origin = elsewhere()), 1);
        assert_eq!(forged(&|e| e.call_origin = elsewhere()), 1);
        assert_eq!(forged(&|e| e.call = 16), 1);
        assert_eq!(forged(&|e| e.func = 16), 1);
        assert_eq!(RAN.load(Ordering::Relaxed), 41, "nothing forged ran");
    }
}
