//! The spawn start method: a child that is a fresh copy of the program,
//! started by `exec` (through `std::process::Command`, which is safe from a
//! multithreaded parent), runs one registered function on serialized
//! arguments.
//!
//! The child never calls an address it was sent. The program lists, in its
//! call to [`spawn_init`], the functions a spawned child may run (each an
//! [`Entry`], made by [`entry!`](crate::entry) from a function's path, so
//! the list is fixed when the program is compiled, in the program's own
//! code). The parent names one by its path and argument type; the child
//! runs it only if its own list has exactly one entry of that name and
//! type, and only on arguments that decode as that type. An explicit list
//! rather than a link-time registry (`linkme`, `inventory`): no section
//! tricks that a linker may drop, no new dependency, and the list of what a
//! child may be asked to run is in plain sight in `main`.
//!
//! The payload (the entry, its arguments and the child's identity) travels
//! in a private memory file (`memfd`) whose descriptor only the child
//! inherits, named in the child's environment; the child checks that the
//! descriptor is such a file before reading it. Standard input is left to
//! the program (`/dev/null`, as Python's children have).
//!
//! The child also inherits its end of a start gate (see `StartGate`),
//! named in its environment too: it waits there, before it reads its
//! payload, for its parent's word that the parent holds its pid file
//! descriptor. Until then it cannot exit, so a SIGCHLD handler of the
//! parent's that reaps every child cannot take it (and free its pid)
//! before the parent can name it for good.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    identity, ready_for_fork, GateParent, Identity, ProcessInfo, StartGate, CHILD_COUNTER,
};
use crate::error::{Error, Result};
use crate::sys;

/// Tells a spawned child that it is one, and which descriptor holds its work.
const ENV: &str = "MULTIPROC_SPAWNED";
/// Tells a spawned child which descriptor is its end of the start gate.
const GATE_ENV: &str = "MULTIPROC_SPAWN_GATE";
/// The name of the payload's memory file, checked by the child.
const PAYLOAD_FILE: &str = "multiproc-spawn";
/// Whether this process called [`spawn_init`].
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// A function that spawned children may run: made by
/// [`entry!`](crate::entry) from the function's path, listed in
/// [`spawn_init`], and given to [`Process::spawn`](super::Process::spawn).
pub struct Entry<A> {
    name: &'static str,
    func: fn(A),
}

impl<A> Entry<A> {
    /// Use [`entry!`](crate::entry), which names the entry by its
    /// function's full path.
    #[doc(hidden)]
    pub fn new(name: &'static str, func: fn(A)) -> Self {
        Entry { name, func }
    }

    /// The entry's name: its function's full path.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function itself, to call it in this process.
    pub fn function(&self) -> fn(A) {
        self.func
    }
}

impl<A> Clone for Entry<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for Entry<A> {}

impl<A> fmt::Debug for Entry<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("argument", &std::any::type_name::<A>())
            .finish()
    }
}

/// An [`Entry`] for the function at `path`, named by its full path: a
/// function that spawned children may run.
///
/// # Example
/// ```
/// fn work(n: u32) {
///     println!("{n}");
/// }
/// let e = multiproc::entry!(work);
/// assert!(e.name().ends_with("::work"));
/// ```
#[macro_export]
macro_rules! entry {
    ($path:path) => {
        $crate::process::Entry::new($crate::process::__fn_name(&$path), $path)
    };
}

/// The full path of the function `f` (for [`entry!`](crate::entry)).
#[doc(hidden)]
pub fn __fn_name<F>(_: &F) -> &'static str {
    std::any::type_name::<F>()
}

/// An [`Entry`] of any argument type, as [`spawn_init`] lists them.
pub trait SpawnEntry: Sync + sealed::Run {}

mod sealed {
    /// What a spawned child needs of an entry.
    pub trait Run {
        fn name(&self) -> &'static str;
        fn arg_type(&self) -> &'static str;
        /// Decodes the arguments and runs the function; why not, if not.
        fn run(&self, args: &[u8]) -> Result<(), String>;
    }
}

impl<A: DeserializeOwned + 'static> sealed::Run for Entry<A> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn arg_type(&self) -> &'static str {
        std::any::type_name::<A>()
    }

    fn run(&self, args: &[u8]) -> std::result::Result<(), String> {
        match postcard::take_from_bytes::<A>(args) {
            Ok((a, [])) => {
                (self.func)(a);
                Ok(())
            }
            Ok((_, rest)) => Err(format!("{} bytes after the arguments", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl<A: DeserializeOwned + 'static> SpawnEntry for Entry<A> {}

/// What a spawned child runs.
pub(super) struct Call {
    entry: &'static str,
    arg_type: &'static str,
    args: std::result::Result<Vec<u8>, String>,
}

impl Call {
    pub(super) fn new<A: Serialize>(entry: Entry<A>, args: &A) -> Call {
        Call {
            entry: entry.name,
            arg_type: std::any::type_name::<A>(),
            args: postcard::to_allocvec(args).map_err(|e| e.to_string()),
        }
    }
}

/// Who the child will be.
pub(super) struct Child<'a> {
    pub(super) name: &'a str,
    pub(super) path: &'a [u32],
    /// Whether it is killed when its parent dies (a daemon, or a pool
    /// worker's child), or the thread that starts it ends.
    pub(super) dies_with_parent: bool,
    pub(super) parent: &'a ProcessInfo,
    /// The parent's thread that starts the child (see `die_with_parent_thread`).
    pub(super) thread: u32,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    entry: String,
    arg_type: String,
    args: Vec<u8>,
    name: String,
    path: Vec<u32>,
    dies_with_parent: bool,
    parent_name: String,
    parent_pid: u32,
    /// The parent's thread that started this child: a daemon dies with it.
    parent_thread: u32,
    /// The parent's `log_to_stderr` level, if it called it.
    log_level: Option<usize>,
}

/// Starts the child; its pid, and the parent's end of the gate where it
/// waits before it reads its work.
pub(super) fn start(
    call: &Call,
    child: &Child<'_>,
    exec_args: &[OsString],
) -> Result<(u32, GateParent)> {
    if !INITIALIZED.load(Ordering::Relaxed) {
        // The child is this program again: without `spawn_init` it would
        // run `main` from the start (redoing this process's work, and
        // reporting success) instead of the entry.
        let why = if std::env::var_os(ENV).is_some() {
            "this process was started by spawn, but its main() did not call multiproc::spawn_init() first"
        } else {
            "Process::spawn needs multiproc::spawn_init() called first in main(): \
             the spawned child runs this program from the start"
        };
        return Err(Error::InvalidArgument(why.into()));
    }
    let payload = Payload {
        entry: call.entry.into(),
        arg_type: call.arg_type.into(),
        args: call.args.clone().map_err(Error::Serialize)?,
        name: child.name.into(),
        path: child.path.to_vec(),
        dies_with_parent: child.dies_with_parent,
        parent_name: child.parent.name.clone(),
        parent_pid: child.parent.pid,
        parent_thread: child.thread,
        log_level: super::logging::inherited_level(),
    };
    let bytes = postcard::to_allocvec(&payload).map_err(|e| Error::Serialize(e.to_string()))?;
    let memfd = sys::memfd(PAYLOAD_FILE)
        .and_then(sys::above_standard_streams)
        .map_err(|e| Error::io("memfd_create", e))?;
    let mut file = File::from(memfd);
    file.write_all(&bytes)
        .map_err(|e| Error::io("write the spawned child's work", e))?;
    let fd = file.as_raw_fd();
    let StartGate { parent, child } = StartGate::new()?;
    // Not a standard stream's number, which the child's stdin would take.
    let gate = sys::above_standard_streams(child).map_err(|e| Error::io("fcntl", e))?;
    let gate_fd = gate.as_raw_fd();
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "multiproc-child".into());
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(arg0)
        .args(exec_args)
        .env(ENV, fd.to_string())
        .env(GATE_ENV, gate_fd.to_string())
        .stdin(Stdio::null());
    // The child inherits its standard streams and its work, nothing else,
    // as Python's spawned children (`close_fds`): a descriptor of ours that
    // is not closed on exec (a pipe a C library made, one this program
    // inherited) would otherwise stay open for the child's whole life, and
    // the write end of a pipe would keep its reader waiting for the end.
    // SAFETY: the hook makes only system calls (close_range or fcntl,
    // getrlimit: async-signal-safe) and allocates nothing; `fd` and
    // `gate_fd` stay open until `spawn` returns.
    unsafe {
        command.pre_exec(move || {
            sys::close_on_exec_from(3)?;
            sys::keep_on_exec(fd)?;
            sys::keep_on_exec(gate_fd)
        })
    };
    let process = command
        .spawn()
        .map_err(|e| Error::io("spawn /proc/self/exe", e))?;
    // The child's end is the child's only: its parent's death (with this
    // end open nowhere else) reads there as the end of file.
    drop(gate);
    // The handle is dropped without waiting: `Process` reaps the child.
    Ok((process.id(), parent))
}

/// Call this first thing in `main` of a program that uses
/// [`Process::spawn`](super::Process::spawn), with every function that its
/// spawned children may run. In a process started by spawn it runs the
/// child's function and exits (never returning); in any other process it
/// returns at once.
///
/// Like Python's `if __name__ == "__main__":` guard: a spawned child runs
/// the program from the start, and must not redo the parent's work.
///
/// A child whose work cannot be read, names a function not in `entries`
/// (or in it twice), or carries arguments of another type, prints why to
/// stderr and exits with code 1, running nothing.
///
/// # Example
/// ```no_run
/// use multiproc::{entry, Process};
///
/// fn greet(name: String) {
///     println!("hello, {name}");
/// }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::spawn_init(&[&entry!(greet)]);
///     let mut p = Process::spawn(entry!(greet), "spawned child".to_string());
///     p.start()?;
///     p.join()?;
///     Ok(())
/// }
/// ```
pub fn spawn_init(entries: &[&dyn SpawnEntry]) {
    INITIALIZED.store(true, Ordering::Relaxed);
    let Some(var) = std::env::var_os(ENV) else {
        return;
    };
    wait_at_gate();
    let code = match receive(&var).and_then(|p| become_child(p, entries)) {
        Ok((entry, args)) => super::run_catching(|| {
            super::logging::info(format_args!("child process calling self.run()"));
            match entry.run(&args) {
                Ok(()) => 0,
                Err(e) => {
                    super::logging::to_stderr(format_args!(
                        "multiproc: cannot decode the arguments of `{}`: {e}",
                        entry.name()
                    ));
                    1
                }
            }
        }),
        Err(e) => {
            super::logging::to_stderr(format_args!(
                "multiproc: a spawned child could not start: {e}"
            ));
            1
        }
    };
    super::exit(code)
}

/// In a spawned child: waits for the parent's word that it may run (see
/// the module's documentation); exits at once if told not to, or if the
/// parent died first. A child started without a gate (by another program
/// that sets only the payload's variable) does not wait.
fn wait_at_gate() {
    let Some(var) = std::env::var_os(GATE_ENV) else {
        return;
    };
    std::env::remove_var(GATE_ENV);
    let fd = var
        .to_str()
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|&fd| fd > 2)
        .filter(|&fd| sys::fd_target(fd).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")));
    let Some(fd) = fd else {
        super::logging::to_stderr(format_args!(
            "multiproc: {GATE_ENV}={var:?} does not name a start gate"
        ));
        sys::exit_now(1);
    };
    // SAFETY: the descriptor is open and is a socket, which only a parent's
    // `start` hands down under this variable; `spawn_init` runs first thing
    // in `main`, so nothing else in this program has claimed it.
    if !StartGate::opened(unsafe { OwnedFd::from_raw_fd(fd) }) {
        sys::exit_now(1);
    }
}

/// The largest payload a child reads.
const PAYLOAD_LIMIT: u64 = 1 << 32;

/// Reads the payload from the descriptor that `var` names.
fn receive(var: &OsStr) -> std::result::Result<Payload, String> {
    let fd = var
        .to_str()
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("{ENV}={var:?} does not name a payload descriptor"))?;
    let target = sys::fd_target(fd).map_err(|e| format!("descriptor {fd} ({ENV}): {e}"))?;
    if !target
        .to_string_lossy()
        .starts_with(&format!("/memfd:{PAYLOAD_FILE} "))
    {
        return Err(format!(
            "descriptor {fd} ({ENV}) is {target:?}, not a spawn payload"
        ));
    }
    // SAFETY: the descriptor is open and is a payload file, which only a
    // parent's `start` makes and hands down; `spawn_init` runs first thing
    // in `main`, so nothing else in this program has claimed it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // The variable has done its job; this process's own children get theirs.
    std::env::remove_var(ENV);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.take(PAYLOAD_LIMIT).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read the payload: {e}"))?;
    match postcard::take_from_bytes::<Payload>(&bytes) {
        Ok((payload, [])) => Ok(payload),
        Ok((_, rest)) => Err(format!(
            "malformed payload: {} bytes after its end",
            rest.len()
        )),
        Err(e) => Err(format!("malformed payload of {} bytes: {e}", bytes.len())),
    }
}

/// Finds the payload's entry, then becomes the child it describes; the
/// entry and its encoded arguments.
fn become_child<'e>(
    p: Payload,
    entries: &[&'e dyn SpawnEntry],
) -> std::result::Result<(&'e dyn SpawnEntry, Vec<u8>), String> {
    let entry = find(entries, &p.entry, &p.arg_type)?;
    // The panic header, as a forked child has it from its parent (without
    // handlers, out of memory, the child runs as before).
    let _ = ready_for_fork();
    *identity() = Some(Identity {
        name: p.name,
        path: p.path,
        parent: ProcessInfo {
            name: p.parent_name,
            pid: p.parent_pid,
        },
    });
    CHILD_COUNTER.store(0, Ordering::Relaxed);
    if let Some(level) = p.log_level {
        super::logging::install_inherited(level);
    }
    if p.dies_with_parent {
        // As a forked daemon: the kernel's signal names the thread that
        // started this child, which may have ended while this program
        // started (then the signal would never come).
        sys::die_with_parent_thread(p.parent_pid, p.parent_thread)
            .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
        super::family::dies_with_its_parent();
    }
    Ok((entry, p.args))
}

/// The one entry named `name`, if it takes `arg_type`.
fn find<'e>(
    entries: &[&'e dyn SpawnEntry],
    name: &str,
    arg_type: &str,
) -> std::result::Result<&'e dyn SpawnEntry, String> {
    let mut named = entries.iter().filter(|e| e.name() == name);
    match (named.next(), named.next()) {
        (None, _) => Err(format!(
            "no entry `{name}` is listed in this program's spawn_init (it lists: {})",
            entries
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (Some(_), Some(_)) => Err(format!("`{name}` is listed twice in spawn_init")),
        (Some(e), None) if e.arg_type() != arg_type => Err(format!(
            "`{name}` takes {}, but the payload carries {arg_type}",
            e.arg_type()
        )),
        (Some(e), None) => Ok(*e),
    }
}
