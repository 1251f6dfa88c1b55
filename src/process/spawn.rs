//! The spawn start method: a child that is a fresh copy of the program,
//! started by `exec` (through `std::process::Command`, which is safe from a
//! multithreaded parent), runs one function on serialized arguments.
//!
//! The function travels as its distance from an anchor function of this
//! crate: the child runs the same executable (`/proc/self/exe`, the very
//! file the parent runs), where that distance is the same whatever address
//! the loader chose. The arguments and the child's identity travel on its
//! standard input, which is then replaced by `/dev/null`, as in Python.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{install_panic_header, locked, Identity, ProcessInfo, CHILD_COUNTER, IDENTITY};
use crate::error::{Error, Result};
use crate::sys;

/// Tells a spawned child that it is one.
const ENV: &str = "MULTIPROC_SPAWNED";
/// Whether this process called [`spawn_init`].
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Runs the function at `func` on encoded arguments; the exit code.
type Trampoline = fn(usize, &[u8]) -> i32;

/// What a spawned child runs.
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
}

impl Call {
    /// The function and trampoline as distances from `anchor()`.
    fn offsets(&self) -> (i64, i64) {
        (
            self.call as i64 - anchor() as i64,
            self.func as i64 - anchor() as i64,
        )
    }

    /// The call as bytes for [`run_encoded`] in a fork server's child (a
    /// fork of this program, which finds the functions as a spawned child does).
    pub(super) fn encode(&self) -> Result<Vec<u8>> {
        let (call, func) = self.offsets();
        let args = self.args.clone().map_err(Error::Serialize)?;
        postcard::to_allocvec(&Encoded { call, func, args })
            .map_err(|e| Error::Serialize(e.to_string()))
    }
}

/// A [`Call`] as a fork server's child receives it.
#[derive(Serialize, Deserialize)]
struct Encoded {
    call: i64,
    func: i64,
    args: Vec<u8>,
}

/// Runs a call made by [`Call::encode`]; the exit code.
pub(super) fn run_encoded(bytes: &[u8]) -> i32 {
    match postcard::from_bytes::<Encoded>(bytes) {
        Ok(e) => {
            let (call, func) = resolve(e.call, e.func);
            call(func, &e.args)
        }
        Err(e) => {
            eprintln!("multiproc: a fork server's child got a malformed call: {e}");
            1
        }
    }
}

/// The trampoline and function at the distances `call` and `func` from `anchor()`.
fn resolve(call: i64, func: i64) -> (Trampoline, usize) {
    let at = |offset: i64| (anchor() as i64 + offset) as usize;
    // SAFETY: the parent computed the offset from a `Trampoline` in this same
    // executable (see the module documentation).
    let call: Trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(at(call)) };
    (call, at(func))
}

fn run<A: DeserializeOwned>(func: usize, args: &[u8]) -> i32 {
    // SAFETY: `func` is the address of an `fn(A)` computed by the parent in
    // `Call::new` with the same `A`, moved to this process's load address.
    let f: fn(A) = unsafe { std::mem::transmute::<usize, fn(A)>(func) };
    match postcard::from_bytes(args) {
        Ok(a) => {
            f(a);
            0
        }
        Err(e) => {
            eprintln!("spawned process: cannot deserialize its arguments: {e}");
            1
        }
    }
}

/// Who the child will be.
pub(super) struct Child<'a> {
    pub(super) name: &'a str,
    pub(super) path: &'a [u32],
    pub(super) daemon: bool,
    pub(super) parent: &'a ProcessInfo,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    /// Distances from `anchor()`.
    call: i64,
    func: i64,
    args: Vec<u8>,
    name: String,
    path: Vec<u32>,
    daemon: bool,
    parent_name: String,
    parent_pid: u32,
    /// The parent's `log_to_stderr` level, if it called it.
    log_level: Option<usize>,
}

fn anchor() -> usize {
    spawn_init as fn() as usize
}

/// Starts the child; its pid.
pub(super) fn start(call: &Call, child: &Child<'_>, exec_args: &[OsString]) -> Result<u32> {
    if std::env::var_os(ENV).is_some() && !INITIALIZED.load(Ordering::Relaxed) {
        return Err(Error::InvalidArgument(
            "this process was started by spawn, but its main() did not call multiproc::spawn_init() first".into(),
        ));
    }
    let args = call.args.clone().map_err(Error::Serialize)?;
    let (call_offset, func_offset) = call.offsets();
    let payload = Payload {
        call: call_offset,
        func: func_offset,
        args,
        name: child.name.into(),
        path: child.path.to_vec(),
        daemon: child.daemon,
        parent_name: child.parent.name.clone(),
        parent_pid: child.parent.pid,
        log_level: super::logging::inherited_level(),
    };
    let bytes = postcard::to_allocvec(&payload).map_err(|e| Error::Serialize(e.to_string()))?;
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "multiproc-child".into());
    let mut process = Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(exec_args)
        .env(ENV, "1")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("spawn /proc/self/exe", e))?;
    let pid = process.id();
    let sent = process
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin pipe"))
        .and_then(|mut stdin| stdin.write_all(&bytes));
    if let Err(e) = sent {
        let _ = process.kill();
        let _ = process.wait();
        return Err(Error::io("send the spawned child its work", e));
    }
    // The handle is dropped without waiting: `Process` reaps the child.
    Ok(pid)
}

/// Call this first thing in `main` of a program that uses
/// [`Process::spawn`](super::Process::spawn). In a process started by
/// spawn it runs the child's function and exits (never returning); in any
/// other process it returns at once.
///
/// Like Python's `if __name__ == "__main__":` guard: a spawned child runs
/// the program from the start, and must not redo the parent's work.
///
/// # Example
/// ```no_run
/// fn greet(name: String) {
///     println!("hello, {name}");
/// }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::spawn_init();
///     let mut p = multiproc::Process::spawn(greet, "spawned child".to_string());
///     p.start()?;
///     p.join()?;
///     Ok(())
/// }
/// ```
pub fn spawn_init() {
    INITIALIZED.store(true, Ordering::Relaxed);
    if std::env::var_os(ENV).is_none() {
        return;
    }
    let code = match receive() {
        Ok((call, func, args)) => catch_unwind(AssertUnwindSafe(|| call(func, &args))).unwrap_or(1),
        Err(e) => {
            eprintln!("multiproc: a spawned child could not start: {e}");
            1
        }
    };
    sys::exit_now(code)
}

/// Reads the payload, becomes the child it describes, and returns what to run.
fn receive() -> io::Result<(Trampoline, usize, Vec<u8>)> {
    let mut bytes = Vec::new();
    io::stdin().lock().read_to_end(&mut bytes)?;
    let devnull = std::fs::File::open("/dev/null")?;
    sys::dup_onto(&devnull, 0)?;
    let p: Payload = postcard::from_bytes(&bytes).map_err(io::Error::other)?;
    // The variable has done its job; this process's own children get theirs.
    std::env::remove_var(ENV);
    *locked(&IDENTITY) = Some(Identity {
        name: p.name,
        path: p.path,
        parent: ProcessInfo {
            name: p.parent_name,
            pid: p.parent_pid,
        },
    });
    CHILD_COUNTER.store(0, Ordering::Relaxed);
    install_panic_header();
    if let Some(level) = p.log_level {
        super::logging::install_inherited(level);
    }
    if p.daemon {
        sys::die_with_parent(p.parent_pid)?;
    }
    let (call, func) = resolve(p.call, p.func);
    Ok((call, func, p.args))
}
