//! Processes: [`Process`] runs a closure in a forked child, with Python's
//! exit-code conventions; [`Pool`] runs tasks on a set of worker processes.
//!
//! # Fork and threads
//! `fork` copies only the calling thread. A child forked from a
//! multithreaded parent must not depend on a lock that another parent thread
//! held at that moment (the child's copy stays locked forever): allocation,
//! Rust's stdout and stderr and this crate's own state are fork-safe, but
//! locks of other libraries may not be, nor the standard library's lock on
//! the environment: a child forked while another thread is in
//! [`std::env::set_var`] waits for ever in its first [`std::env::var`]
//! (a fork server started before such threads has no such trouble).
//! Fork before starting threads, or
//! use the spawn start method ([`Process::spawn`]) for such programs. The
//! crate's own process-local locks (the registry of children, the
//! process's identity, the scopes' witnesses, the gate that keeps forks
//! from copying a socket end meant for one process) and the standard
//! streams are
//! taken by `pthread_atfork` handlers around every fork, whoever forks, so
//! a child never finds one held by a thread it lacks. The handlers are
//! installed before any of these locks is first taken, and a small handler
//! that the crate registers when the program is loaded (before `main`)
//! keeps every fork out of that installation, so a fork in another thread
//! that races it is covered too.
//!
//! # Exit
//! As in Python, a process that exits (returning from `main`, calling
//! [`std::process::exit`] or [`exit`], or a child whose closure returns)
//! first kills its [daemon](Process::daemon) children and then waits for
//! every other child it started. A [`scope`] does the same for its own
//! children when it ends.
//!
//! # Fork or spawn
//! `fork` (the default, [`Process::new`]) starts a child in about a quarter
//! of a millisecond and lets it run any closure, with everything the parent
//! had. `spawn` ([`Process::spawn`]) starts the program again from the top
//! and runs one function on serialized arguments: slower, but safe from a
//! multithreaded parent (an async runtime, a thread pool), and the child
//! shares nothing by accident. A program that spawns must call
//! [`spawn_init`] first thing in `main`.
//!
//! `forkserver` ([`Process::forkserver`]) forks each child from a
//! single-threaded server process that this process forks once, on first
//! use (or at [`start_forkserver`]): a child then never inherits a lock
//! held by another thread of the parent, if the server was started before
//! other threads took any. Every [`Pool`] worker is started that way, by a
//! server of the pool's own.

mod code_origin;
mod display;
mod family;
mod forkserver;
mod logging;
pub(crate) mod pool;
mod scope;
mod spawn;
mod state;
mod target;

pub use family::{active_children, cpu_count, current_process, exit, parent_process, ProcessInfo};
pub use forkserver::start_forkserver;
pub use logging::{log_to_stderr, LogLevel};
pub use pool::{AsyncResult, MapResult, Pool, PoolBuilder, Task};
pub use scope::{scope, Scope};
#[doc(hidden)]
pub use spawn::__fn_name;
pub use spawn::{spawn_init, Entry, SpawnEntry};
pub use target::{LocalProcess, LocalTarget, Run, SendTarget};

// The crate-private pieces, for this file and the ones beside it.
use family::*;
// The process module's part of the crate's fork handlers and its exit hook
// (see `crate::fork_handlers`).
pub(crate) use family::{
    after_fork_in_child, after_fork_in_parent, exit_hook, panics_caught_by_caller, prepare_fork,
};
pub(crate) use state::is_unreaped;
use state::*;
use target::*;

use std::fmt;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use std::ffi::OsString;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::poison::{self, locked};
use crate::sys::{self, Deadline, Forked, Ready};
use crate::waiter;

/// A closure run in a child process (Python's `multiprocessing.Process`),
/// started by `fork` ([`Process::new`]), or a function run in a fresh copy
/// of the program ([`Process::spawn`]).
///
/// The child sees everything the parent had when it started, including
/// the shared objects of this crate; its own writes to ordinary memory stay
/// its own. A panic is caught in the child (exit code 1) and never unwinds
/// into the parent's code.
///
/// The closure is `'static`, as for [`std::thread::spawn`]: a child can
/// outlive any borrow the parent holds (a lock guard's data, for one). A
/// closure that borrows runs in a [`scope`], which joins it before the
/// borrow ends; the lifetime `'a` is that scope's.
///
/// Exit codes follow Python: `None` while running, 0 on return, N after
/// [`exit(N)`](exit), 1 after a panic or an `Err`, −N when killed by signal N.
///
/// Dropping the handle of a running child leaves it running (as
/// `std::process::Child` does); it is reaped by a later [`Process::start`]
/// or [`active_children`], and waited for when this process exits (see
/// [the module documentation](self#exit)). A [daemon](Process::daemon)
/// child is killed when its parent exits. Only the process that started a
/// child may wait for it or signal it: in any other process (a forked child
/// holding a copy of the handle) those calls are errors.
///
/// # Example
/// ```
/// use multiproc::process::Process;
/// let mut p = Process::new(|| println!("hello from the child")).with_name("greeter");
/// assert_eq!(p.to_string(), format!("<Process name='greeter' parent={} initial>", std::process::id()));
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// assert_eq!(p.name(), "greeter");
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Closures that are not `Send`
/// Fork copies the whole process, so a forked child may use anything: a
/// closure that captures an `Rc` runs in a [`LocalProcess`], made by
/// [`Process::new_local`] (or [`Scope::process_local`]). Such a handle is
/// neither `Send` nor `Sync`: the closure is forked and dropped on the
/// thread that made it, never on another one that could race with that
/// thread's other references to the same `Rc`. The spawn and forkserver
/// start methods send a function and serialized arguments, never a closure,
/// and need no `Send` either.
/// ```
/// use std::rc::Rc;
/// use multiproc::Process;
/// let shared = Rc::new(vec![1, 2, 3]);
/// let mine = Rc::clone(&shared);
/// let mut p = Process::new_local(move || assert_eq!(mine.iter().sum::<i32>(), 6));
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
/// [`Process::new`] asks for `Send`, so that its handle can go to other
/// threads:
/// ```compile_fail,E0277
/// let rc = std::rc::Rc::new(1);
/// multiproc::Process::new(move || println!("{rc}"));
/// ```
/// and a `LocalProcess` cannot be moved to another thread,
/// ```compile_fail,E0277
/// let rc = std::rc::Rc::new(1);
/// let mut p = multiproc::Process::new_local(move || println!("{rc}"));
/// std::thread::spawn(move || p.start());
/// ```
/// nor shared with one:
/// ```compile_fail,E0277
/// let rc = std::rc::Rc::new(1);
/// let p = multiproc::Process::new_local(move || println!("{rc}"));
/// std::thread::scope(|s| {
///     s.spawn(|| p.is_alive());
/// });
/// ```
/// A `Process` made by [`Process::new`] can:
/// ```
/// let mut p = multiproc::Process::new(|| println!("started from another thread"));
/// let code = std::thread::spawn(move || {
///     p.start()?;
///     p.join()
/// })
/// .join()
/// .unwrap()?;
/// assert_eq!(code, 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A child cannot take a borrow that the parent may end before the child
/// does, such as a reference into a locked value:
/// ```compile_fail,E0597
/// use multiproc::{Process, Value};
/// let v = Value::new(0u64)?;
/// let mut guard = v.lock()?;
/// let counter = &mut *guard;
/// Process::new(move || *counter += 1).start()?;
/// drop(guard); // the child would still write through `counter`
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Process<'a, T = SendTarget<'a>> {
    /// Taken by `start`; in a mutex only so that `Process` is `Sync` when
    /// `T` is `Send` (it is reached through `&mut self`, without locking).
    launch: Mutex<Option<Launch<T>>>,
    name: String,
    /// What Python's repr and default name call the process: `Process`, or
    /// the name of the [`Run`] type.
    kind: &'static str,
    /// The process that made this handle (Python's `_parent_pid`).
    created_by: u32,
    path: Vec<u32>,
    daemon: bool,
    /// Whether the parent's exit waits for the child.
    waited_at_exit: bool,
    /// Extra command-line arguments of a spawned child.
    exec_args: Vec<OsString>,
    /// The scope that joins the child: set exactly when the closure may
    /// borrow (`'a` is not `'static`).
    scope: Option<&'a scope::Shared>,
    /// The process that started the child (0 before start): the only one
    /// whose calls may touch `state`, which a fork can copy locked.
    started_by: AtomicU32,
    /// The child's pid (0 before start).
    pid: AtomicU32,
    state: Arc<Mutex<State>>,
}

impl Process<'static> {
    /// A process that will run `target`, named `Process-N` like Python's.
    /// Exit code 0 when it returns, 1 if it panics.
    ///
    /// The closure is `Send`, so that the handle may go to other threads;
    /// one that is not (that captures an `Rc`) runs in a [`LocalProcess`]
    /// made by [`Process::new_local`].
    pub fn new<F>(target: F) -> Self
    where
        F: FnOnce() + Send + 'static,
    {
        Self::with_launch(Launch::Fork(send(returning(target))), None)
    }

    /// A helper process of the crate's own (a fork server) that runs
    /// `target`: it takes no number from this process's count of
    /// children, as Python's fork server (no `Process` of its own) takes
    /// none, so that the children a program starts are numbered as in
    /// Python (a pool's first worker `ForkServerPoolWorker-1`).
    pub(super) fn helper<F>(target: F) -> Self
    where
        F: FnOnce() + Send + 'static,
    {
        let launch = Launch::Fork(send(returning(target)));
        Self::with_kind_at("Process", launch, None, helper_path())
    }

    /// A process that will run `value`'s [`Run::run`] (Python's subclass of
    /// `Process` that overrides `run()`), named after `R` like Python's:
    /// `Worker-N` for a type `Worker`. See [`Run`]; a value that is not
    /// `Send` runs with [`Process::from_run_local`].
    pub fn from_run<R>(mut value: R) -> Self
    where
        R: Run + Send + 'static,
    {
        let kind = type_name_of::<R>();
        Self::with_kind(
            kind,
            Launch::Fork(send(returning(move || value.run()))),
            None,
        )
    }

    /// A process whose closure returns a `Result`: exit code 0 on `Ok`, 1 on
    /// `Err` (printed to stderr with the process's name) or on a panic.
    pub fn fallible<F, E>(target: F) -> Self
    where
        F: FnOnce() -> std::result::Result<(), E> + Send + 'static,
        E: fmt::Debug,
    {
        Self::with_launch(Launch::Fork(send(fallible(target))), None)
    }

    /// A process that will run `entry`'s function on `args` in a fresh copy
    /// of this program (the spawn start method), named `Process-N` like
    /// Python's. The program's `main` must call [`spawn_init`] first, with
    /// `entry` among its entries ([`start`](Process::start) is an
    /// `InvalidArgument` error in a process that has not called it). Exit
    /// code 0 when the function returns, 1 if it panics. As in Python, the
    /// child inherits this process's standard streams and no other
    /// descriptor.
    pub fn spawn<A>(entry: Entry<A>, args: A) -> Self
    where
        A: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        Self::with_launch(Launch::Spawn(spawn::Call::new(entry, &args)), None)
    }

    /// A process that will run `f(args)` in a child forked by this
    /// process's fork server (the forkserver start method), named
    /// `Process-N`. The server is a fork of this process, started on first
    /// use: start it early with [`start_forkserver`], while the program has
    /// one thread. The child dies if the server does (which it does when
    /// this process exits). It runs in the directory this process is in
    /// when it starts the child, as Python's. Exit code 0 when `f`
    /// returns, 1 if it panics.
    ///
    /// # Example
    /// ```
    /// use multiproc::process::{start_forkserver, Process};
    /// fn greet(name: String) {
    ///     println!("hello, {name}");
    /// }
    /// start_forkserver()?; // first thing in main
    /// let mut p = Process::forkserver(greet, "child of the fork server".to_string());
    /// p.start()?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn forkserver<A>(f: fn(A), args: A) -> Self
    where
        A: serde::Serialize + serde::de::DeserializeOwned,
    {
        Self::with_launch(Launch::ForkServer(forkserver::Call::new(f, &args)), None)
    }
}

impl LocalProcess<'static> {
    /// A process that will run `target` in a forked child, as
    /// [`Process::new`] does, for a closure that is not `Send` (one that
    /// captures an `Rc`, say). The handle stays on this thread: see
    /// [`LocalProcess`].
    pub fn new_local<F>(target: F) -> Self
    where
        F: FnOnce() + 'static,
    {
        Self::with_launch(Launch::Fork(local(returning(target))), None)
    }

    /// [`Process::from_run`] for a value that is not `Send`.
    ///
    /// # Example
    /// ```
    /// use std::rc::Rc;
    /// use multiproc::process::{Process, Run};
    ///
    /// struct Reader(Rc<Vec<u8>>);
    /// impl Run for Reader {
    ///     fn run(&mut self) {
    ///         assert_eq!(self.0.len(), 3);
    ///     }
    /// }
    ///
    /// let mut p = Process::from_run_local(Reader(Rc::new(vec![1, 2, 3])));
    /// assert!(p.name().starts_with("Reader-"));
    /// p.start()?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_run_local<R>(mut value: R) -> Self
    where
        R: Run + 'static,
    {
        let kind = type_name_of::<R>();
        Self::with_kind(
            kind,
            Launch::Fork(local(returning(move || value.run()))),
            None,
        )
    }
}

impl<'a, T: sealed::Target<'a>> Process<'a, T> {
    fn with_launch(launch: Launch<T>, scope: Option<&'a scope::Shared>) -> Self {
        Self::with_kind("Process", launch, scope)
    }

    fn with_kind(kind: &'static str, launch: Launch<T>, scope: Option<&'a scope::Shared>) -> Self {
        Self::with_kind_at(kind, launch, scope, next_child_path())
    }

    fn with_kind_at(
        kind: &'static str,
        launch: Launch<T>,
        scope: Option<&'a scope::Shared>,
        path: Vec<u32>,
    ) -> Self {
        let name = path_name(kind, &path);
        Process {
            launch: Mutex::new(Some(launch)),
            name,
            kind,
            created_by: sys::getpid(),
            path,
            daemon: false,
            waited_at_exit: true,
            exec_args: Vec::new(),
            scope,
            started_by: AtomicU32::new(0),
            pid: AtomicU32::new(0),
            state: Arc::new(Mutex::new(State::NotStarted)),
        }
    }

    /// Adds command-line arguments for a spawned child (not a forked one):
    /// for programs that choose what to run by their arguments, such as a
    /// test harness running one test that calls [`spawn_init`].
    pub fn exec_args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.exec_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the name that the child's [`current_process`] reports (Python's
    /// `name=` argument); read it back with [`name`](Process::name).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A daemon child is killed (`SIGKILL`) when the parent exits, however
    /// it exits, and at the end of its [`scope`]. Note: Linux ties the kill
    /// on an abnormal exit (`PR_SET_PDEATHSIG`) to the parent *thread* that
    /// calls [`start`](Process::start): a forked or spawned daemon is
    /// killed as soon as that thread ends, every time, even if the process
    /// runs on (Python's lives until the process exits), so start daemons
    /// from a long-lived thread. A fork server's daemon is the server's
    /// child, and lives until this process ends, as Python's.
    ///
    /// Set before [`start`](Process::start): once the child runs, it
    /// changes nothing (Python refuses it), and the handle goes on telling
    /// what the child was started as.
    pub fn daemon(mut self, daemon: bool) -> Self {
        if self.started_by.load(Ordering::Acquire) == 0 {
            self.daemon = daemon;
        }
        self
    }

    /// For a child that watches its parent and ends by itself when the
    /// parent exits (the Manager's server, which then removes its socket):
    /// the parent's exit neither waits for it (which would deadlock) nor
    /// kills it. A scope still waits for it.
    pub(crate) fn ends_when_parent_exits(mut self) -> Self {
        self.waited_at_exit = false;
        self
    }

    /// The name of this process (Python's `Process.name`): `Process-N`
    /// (`Worker-N` for [`Process::from_run`] of a `Worker`), or the one
    /// given to [`with_name`](Process::with_name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of this process: use [`name`](Process::name).
    #[deprecated(since = "0.1.0", note = "use `name()`; `with_name(..)` sets it")]
    pub fn process_name(&self) -> &str {
        &self.name
    }

    /// Whether this is a daemon process.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether the child, once started, is killed when its parent dies (or
    /// the thread that starts it ends): a daemon, or any child of a pool
    /// worker (see `children_die_with_this_process`), or one that the main
    /// thread of a process that dies with its own parent starts (a
    /// daemon's child, which would otherwise outlive the daemon killed at
    /// its parent's exit; the main thread's end is the process's, so it
    /// is not killed any earlier), but those that watch
    /// their parent and end by themselves when it does (the crate's fork
    /// servers, not `listed`; a Manager's server, see
    /// `ends_when_parent_exits`), which clean up on their way out.
    fn dies_with_parent(&self, listed: bool) -> bool {
        let from_a_dying_main_thread =
            this_process_dies_with_parent() && sys::gettid() == sys::getpid();
        self.daemon
            || (listed
                && self.waited_at_exit
                && (children_die_with_it() || from_a_dying_main_thread))
    }

    /// Starts the child: forks it (it runs the closure and exits), or
    /// spawns a new copy of the program, or has the fork server fork it.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if already started, if this handle was made
    /// by another process (a forked child given its parent's handle, as
    /// Python refuses), or if it belongs to a [`scope`] run by another
    /// process; [`Error::Io`] if the child cannot
    /// be started (no child ran: the process is left unstarted, closure
    /// and all, and may be started again, as in Python).
    ///
    /// # Panics
    /// If a forked child's closure captured a value whose drop panics
    /// here, where this process drops its copy as the child takes over:
    /// after the child is started and recorded (it runs, and can be joined).
    pub fn start(&mut self) -> Result<()> {
        self.start_as(true)
    }

    /// Starts the child without listing it among this process's children:
    /// only this handle reaps it, [`active_children`] does not show it and
    /// an exit does not wait for it (for the crate's own helper processes).
    fn start_unlisted(&mut self) -> Result<()> {
        self.start_as(false)
    }

    fn start_as(&mut self, listed: bool) -> Result<()> {
        if self.created_by != sys::getpid() {
            return Err(self.state_error("can only start a process created by the current process"));
        }
        ready_for_fork()?;
        let scope = self
            .scope
            .map(|s| s.ready_to_start(&self.name))
            .transpose()?;
        let Some(launch) = poison::get_mut(&mut self.launch).take() else {
            return Err(self.state_error("already started"));
        };
        reap_children();
        // A start that fails before its child runs leaves the process as it
        // was, closure and all, as Python's `start` does: it may be retried.
        match self.launch(launch, scope, listed)? {
            Launched::Ours { pid, pidfd, panic } => {
                self.running(pid, pidfd, Reaper::Us, listed.then_some(scope));
                match panic {
                    // The child runs and is recorded; the panic is the caller's.
                    Some(panic) => std::panic::resume_unwind(panic),
                    None => Ok(()),
                }
            }
            Launched::Served(served) => {
                let reaper = Reaper::ForkServer(Arc::new(served.status));
                self.running(served.pid, served.pidfd, reaper, listed.then_some(scope));
                Ok(())
            }
        }
    }

    /// Starts the child as `launch` says; on a failure before the child
    /// runs, keeps `launch` for another start.
    fn launch(&mut self, launch: Launch<T>, scope: Option<u64>, listed: bool) -> Result<Launched> {
        match launch {
            Launch::Fork(target) => {
                let gate = match StartGate::new() {
                    Ok(gate) => gate,
                    Err(e) => return Err(self.keep(Launch::Fork(target), e)),
                };
                let (pid, gate, target) = match self.fork(target, scope, listed, gate) {
                    Ok(forked) => forked,
                    Err((e, target)) => return Err(self.keep(Launch::Fork(target), e)),
                };
                match gate.pidfd(pid) {
                    Ok(pidfd) => Ok(Launched::Ours {
                        pid,
                        pidfd,
                        panic: gate.open(pid, Some(target.into_target())),
                    }),
                    Err(e) => Err(self.keep(Launch::Fork(target), e)),
                }
            }
            Launch::Spawn(call) => {
                let child = spawn::Child {
                    name: &self.name,
                    path: &self.path,
                    dies_with_parent: self.dies_with_parent(listed),
                    parent: &current_process(),
                    thread: sys::gettid(),
                };
                match spawn::start(&call, &child, &self.exec_args)
                    .and_then(|(pid, gate)| Ok((pid, gate.pidfd(pid)?, gate)))
                {
                    Ok((pid, pidfd, gate)) => Ok(Launched::Ours {
                        pid,
                        pidfd,
                        panic: gate.open(pid, None),
                    }),
                    Err(e) => Err(self.keep(Launch::Spawn(call), e)),
                }
            }
            Launch::ForkServer(call) => {
                match forkserver::fork_global(&self.name, &self.path, &call) {
                    Ok(served) => Ok(Launched::Served(served)),
                    Err(e) => Err(self.keep(Launch::ForkServer(call), e)),
                }
            }
        }
    }

    /// Keeps `launch` for another start, after `e`; `e`.
    fn keep(&mut self, launch: Launch<T>, e: Error) -> Error {
        *poison::get_mut(&mut self.launch) = Some(launch);
        e
    }

    /// Records the started child, and lists it among this process's
    /// children unless `listed` is `None`.
    fn running(&mut self, pid: u32, pidfd: OwnedFd, reaper: Reaper, listed: Option<Option<u64>>) {
        let pidfd = Arc::new(pidfd);
        *locked(&self.state) = State::Running { pid, pidfd, reaper };
        self.pid.store(pid, Ordering::Relaxed);
        self.started_by.store(sys::getpid(), Ordering::Release);
        if let Some(scope) = listed {
            children().push(ChildEntry {
                name: self.name.clone(),
                daemon: self.daemon,
                waited_at_exit: self.waited_at_exit,
                scope,
                state: self.state.clone(),
            });
        }
    }

    /// Forks; in the parent returns the child's pid, in the child runs
    /// `target` and never returns.
    /// The child waits at `gate` before it runs anything; the parent gets
    /// its end of the gate back with the pid, and its copy of `target`,
    /// which is still its own until the gate opens.
    /// Forks the child, which waits at `gate` and then runs `target`: its
    /// pid, the gate's end here and this process's copy of `target`; or
    /// the error and `target`, if no child was made.
    fn fork(
        &mut self,
        target: T,
        scope: Option<u64>,
        listed: bool,
        gate: StartGate,
    ) -> std::result::Result<(u32, GateParent, T), (Error, T)> {
        let parent = current_process();
        // The thread whose end kills the child, if it dies with its parent.
        let dies_with = self.dies_with_parent(listed).then(sys::gettid);
        FORKING_FOR_SCOPE.set(scope);
        let forked = sys::fork();
        FORKING_FOR_SCOPE.set(None);
        match forked {
            Err(e) => Err((Error::io("fork", e), target)),
            Ok(Forked::Child) => {
                // Without the parent's copy of its end here, the parent's
                // death reads as end of file.
                drop(gate.parent);
                if !StartGate::opened(gate.child) {
                    sys::exit_now(1);
                }
                self.run_child(target.into_target(), parent, dies_with, listed)
            }
            Ok(Forked::Parent { pid }) => {
                drop(gate.child);
                Ok((pid, gate.parent, target))
            }
        }
    }

    /// Runs the child forked by `parent`, which dies with the thread
    /// `dies_with` of `parent`, if any, that forked it.
    fn run_child(
        &mut self,
        target: Target<'a>,
        parent: ProcessInfo,
        dies_with: Option<u32>,
        listed: bool,
    ) -> ! {
        let parent_pid = parent.pid;
        // The fork handlers released the registries: this is the only thread.
        *identity() = Some(Identity {
            name: std::mem::take(&mut self.name),
            path: std::mem::take(&mut self.path),
            parent,
        });
        CHILD_COUNTER.store(0, Ordering::Relaxed);
        if let Some(thread) = dies_with {
            if sys::die_with_parent_thread(parent_pid, thread).is_err() {
                sys::exit_now(1);
            }
            dies_with_its_parent();
        }
        if listed {
            // Not for the crate's own helpers (a fork server), which
            // Python's logs do not show as processes either.
            logging::info(format_args!("child process calling self.run()"));
        }
        exit(run_catching(target))
    }

    /// The child's state, for the process that started it only: a copy of
    /// the handle in another process may hold a copy of a locked mutex.
    fn state(&self) -> Result<MutexGuard<'_, State>> {
        match self.started_by.load(Ordering::Acquire) {
            0 => Err(self.state_error("not started")),
            pid if pid != sys::getpid() => Err(self.state_error("not a child of this process")),
            _ => Ok(locked(&self.state)),
        }
    }

    /// A copy of the child's pid file descriptor while it runs (readable
    /// once it has exited).
    fn pidfd_clone(&self) -> Option<OwnedFd> {
        match &*self.state().ok()? {
            State::Running { pidfd, .. } => pidfd.try_clone().ok(),
            _ => None,
        }
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Whether the child has started and not yet exited.
    pub fn is_alive(&self) -> bool {
        self.poll();
        self.state()
            .is_ok_and(|s| matches!(&*s, State::Running { .. }))
    }

    /// The exit code, `None` while running or before start.
    pub fn exitcode(&self) -> Option<i32> {
        self.poll()
    }

    /// Waits for the child to exit and returns its exit code.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started, or started by another
    /// process, or if it exited and its exit status was taken by someone
    /// else (SIGCHLD set to `SIG_IGN`, or a handler that reaps every child:
    /// Python's join returns with no exit code then).
    pub fn join(&self) -> Result<i32> {
        self.wait(Deadline::Never)?
            .ok_or_else(|| unreaped_error(&self.name))
    }

    /// Waits at most `timeout` for the child; `None` if it is still running.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started, or started by another
    /// process, or if it exited and its exit status was taken by someone
    /// else (SIGCHLD set to `SIG_IGN`, or a handler that reaps every child),
    /// as [`join`](Process::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        self.wait(Deadline::after(timeout))
    }

    /// Waits for the child to exit without blocking the thread (for a task
    /// on an async runtime; any runtime will do) and returns its exit code.
    /// Dropping the future stops the wait and nothing else.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started, or started by another process.
    pub async fn join_async(&self) -> Result<i32> {
        drop(self.state()?);
        let exited = match exit_descriptor(&self.state) {
            Ok(fd) => fd,
            Err(Some(code)) => return Ok(code),
            Err(None) => return Err(self.state_error("not started")),
        };
        // Readable before the reap and still nothing to reap: the kernel or
        // someone else reaped it (as in `wait`), and looking again would
        // never end.
        waiter::descriptor(exited.as_raw_fd(), Deadline::Never, || {
            let ready = match sys::pidfd_wait(&exited, Deadline::Now) {
                Ok(ready) => ready,
                Err(e) => return ControlFlow::Break(Err(Error::io("wait for child", e))),
            };
            match poll_state(&self.state) {
                Some(code) => ControlFlow::Break(Ok(code)),
                None if ready => ControlFlow::Break(Err(unreaped_error(&self.name))),
                None => ControlFlow::Continue(Ready::Read),
            }
        })
        .await?
        .ok_or_else(|| unreaped_error(&self.name))
    }

    fn wait(&self, deadline: Deadline) -> Result<Option<i32>> {
        drop(self.state()?);
        match wait_state(&self.state, deadline)? {
            // Not "still running": every later wait would return at once.
            None if self.exited_unreaped() => Err(unreaped_error(&self.name)),
            r => Ok(r),
        }
    }

    /// Whether the child has exited with nothing for this process to reap
    /// (SIGCHLD ignored, or a handler reaped it): its exit descriptor is
    /// readable, and still no exit code.
    fn exited_unreaped(&self) -> bool {
        exit_descriptor(&self.state).is_ok_and(|exited| {
            sys::pidfd_wait(&exited, Deadline::Now).unwrap_or(false)
                && poll_state(&self.state).is_none()
        })
    }

    /// Reaps the child if it has exited; returns its exit code if known.
    fn poll(&self) -> Option<i32> {
        drop(self.state().ok()?);
        poll_state(&self.state)
    }

    /// Asks the child to stop (`SIGTERM`). A no-op once it has exited.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started, or started by another process.
    pub fn terminate(&self) -> Result<()> {
        self.signal(sys::SIGTERM)
    }

    /// Kills the child (`SIGKILL`). A no-op once it has exited.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started, or started by another process.
    pub fn kill(&self) -> Result<()> {
        self.signal(sys::SIGKILL)
    }

    fn signal(&self, signal: i32) -> Result<()> {
        drop(self.state()?);
        signal_state(&self.state, signal)
    }

    fn state_error(&self, what: &'static str) -> Error {
        Error::ProcessState {
            name: self.name.clone(),
            what,
        }
    }
}

thread_local! {
    /// The pid of the child this thread has just forked, while it drops its
    /// copy of the child's closure (see [`handing_to_child`]).
    static HANDING_TO_CHILD: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// A started child, as [`Process::launch`] made it.
enum Launched {
    /// Forked or spawned by this process, which reaps it: the panic of a
    /// captured value's drop at the hand-over, if any, is the caller's.
    Ours {
        pid: u32,
        pidfd: OwnedFd,
        panic: Option<Box<dyn std::any::Any + Send>>,
    },
    /// Forked by the fork server, which reaps it.
    Served(forkserver::Served),
}

/// What a forked or spawned child waits on before it runs anything: its
/// parent's word that it holds the child's pid file descriptor. Until then the
/// child cannot exit, so no SIGCHLD handler of the parent's (one that
/// reaps every child) can reap it before `pidfd_open`, which would fail,
/// and free its pid for reuse; and when `pidfd_open` fails (no descriptor
/// left) the child is told to exit having run none of its work. Made
/// before the fork: in a full descriptor table the start fails before any
/// child exists, as Python's, whose pipes are made before it forks.
struct StartGate {
    parent: GateParent,
    child: OwnedFd,
}

/// The parent's end of a [`StartGate`].
struct GateParent(OwnedFd);

/// The byte that lets a child run.
const GATE_OPEN: u8 = 1;
/// The byte that tells it to exit (as does the end of file, should the
/// parent die first).
const GATE_SHUT: u8 = 0;

impl StartGate {
    fn new() -> Result<StartGate> {
        let (parent, child) = sys::socketpair().map_err(|e| Error::io("socketpair", e))?;
        Ok(StartGate {
            parent: GateParent(parent),
            child,
        })
    }

    /// In the child: waits for the parent's word; whether to run.
    fn opened(gate: OwnedFd) -> bool {
        let mut byte = [std::mem::MaybeUninit::new(0u8)];
        matches!(sys::read(&gate, &mut byte), Ok(1))
            // SAFETY: `read` returned 1: the byte is initialised.
            && unsafe { byte[0].assume_init() } == GATE_OPEN
    }
}

impl GateParent {
    /// In the parent, once the child's end is closed here (so that the
    /// descriptor it took is free again for the pidfd): the child's pidfd;
    /// or, if there is none, the child told to exit and reaped, having run
    /// none of its closure (whose copy here, a listener's socket file, a
    /// permit, are still this process's: the start may be retried).
    fn pidfd(&self, pid: u32) -> Result<OwnedFd> {
        sys::pidfd_open(pid).map_err(|e| {
            // Said, not left to the end of file, which a copy of this end
            // in a child another thread forks meanwhile would hold off. The
            // child is alive (it waits for this word) and not reaped: its
            // pid is still its own.
            let _ = sys::send_nowait(&self.0, &[GATE_SHUT]);
            let _ = sys::waitpid(pid, true);
            pidfd_error(e)
        })
    }

    /// Lets the child `pid` (whose pidfd this process holds) run, `target`
    /// (this process's copy of a forked child's closure) handed over to it
    /// first.
    ///
    /// A panic of that hand-over (a drop of the program's) is returned, not
    /// raised: the child runs all the same, as the owner of what its closure
    /// took, and must be recorded before the caller gets the panic.
    fn open(self, pid: u32, target: Option<Target<'_>>) -> Option<Box<dyn std::any::Any + Send>> {
        let panic = target.and_then(|target| {
            catch_unwind(AssertUnwindSafe(|| handed_to_child(target, pid))).err()
        });
        // A byte into an empty socket buffer: it cannot block. If the child
        // is gone (killed meanwhile), its pidfd says so.
        let _ = sys::send_nowait(&self.0, &[GATE_OPEN]);
        panic
    }
}

/// Runs a child's work; its exit code, or 1 if it panics. The panic's
/// payload is leaked, not dropped: its drop may panic again, and that
/// panic would unwind out of the child's start into the code of the
/// parent that called it, which the child would then run as its own.
fn run_catching(work: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        std::mem::forget(payload);
        1
    })
}

/// The error of a failed `pidfd_open`.
fn pidfd_error(e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOSYS) {
        Error::io("pidfd_open (Linux 5.3 or later is required)", e)
    } else {
        Error::io("pidfd_open", e)
    }
}

/// Drops this process's copy of `target`, the closure of the child `pid`
/// just forked (still waiting at its start gate), which now owns what the
/// closure captured.
fn handed_to_child(target: Target<'_>, pid: u32) {
    /// Clears the mark even if a drop panics.
    struct Handing;
    impl Drop for Handing {
        fn drop(&mut self) {
            HANDING_TO_CHILD.set(None);
        }
    }
    HANDING_TO_CHILD.set(Some(pid));
    let _handing = Handing;
    drop(target);
}

/// If the value being dropped is the parent's copy of one that a forked
/// child's closure captured, that child's pid: after the fork both
/// processes have it, the child owns it, and the parent drops its copy at
/// once, before the child runs. A value whose drop gives something back
/// to other processes (a semaphore's permit, a listener's socket file)
/// leaves that to the child's copy.
pub(crate) fn handing_to_child() -> Option<u32> {
    HANDING_TO_CHILD.get()
}
