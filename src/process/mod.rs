//! Processes: [`Process`] runs a closure in a forked child, with Python's
//! exit-code conventions; [`Pool`] runs tasks on a set of worker processes.
//!
//! # Fork and threads
//! `fork` copies only the calling thread. A child forked from a
//! multithreaded parent must not depend on a lock that another parent thread
//! held at that moment (the child's copy stays locked forever): allocation
//! and this crate's own state are fork-safe, but locks of other libraries,
//! and Rust's stdout lock if another thread is printing, may not be.
//! Fork before starting threads, or use the spawn start method
//! ([`Process::spawn`]) for such programs.
//!
//! # Fork or spawn
//! `fork` (the default, [`Process::new`]) starts a child in about a quarter
//! of a millisecond and lets it run any closure, with everything the parent
//! had. `spawn` ([`Process::spawn`]) starts the program again from the top
//! and runs one function on serialized arguments: slower, but safe from a
//! multithreaded parent (an async runtime, a thread pool), and the child
//! shares nothing by accident. A program that spawns must call
//! [`spawn_init`] first thing in `main`.

mod logging;
mod pool;
mod spawn;

pub use logging::log_to_stderr;
pub use pool::{AsyncResult, MapResult, Pool, PoolBuilder};
pub use spawn::spawn_init;

use std::fmt;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use std::ffi::OsString;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::sys::{self, Deadline, Forked, Ready};
use crate::waiter;

/// Who the calling process is, in this crate's terms.
struct Identity {
    name: String,
    /// Python's `_identity`: (1,) for the first child of the main process,
    /// (1, 2) for the second child of that child, …
    path: Vec<u32>,
    /// The process that started this one.
    parent: ProcessInfo,
}

// The child touches these after fork, so they are `std` mutexes (a plain
// futex word) and `start` holds them across the fork: see `segment::arena`.
static IDENTITY: Mutex<Option<Identity>> = Mutex::new(None);
/// Children created so far by this process (reset in each child).
static CHILD_COUNTER: AtomicU32 = AtomicU32::new(0);
/// Every child started and not yet known to have exited, with its handle's
/// state: `active_children` lists them, and a child whose handle was
/// dropped is still reaped (not left a zombie).
static CHILDREN: Mutex<Vec<ChildEntry>> = Mutex::new(Vec::new());

struct ChildEntry {
    name: String,
    state: Arc<Mutex<State>>,
}

/// Locks a process-local mutex; nothing panics while holding one.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The calling process as this crate sees it (Python's `current_process()`).
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
}

impl ProcessInfo {
    /// `"MainProcess"`, or the name given to the [`Process`] that runs this code.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The process that started this one (Python's `parent_process()`), `None`
/// in a process not started by this crate.
pub fn parent_process() -> Option<ProcessInfo> {
    locked(&IDENTITY).as_ref().map(|i| i.parent.clone())
}

/// The children of this process that are still running (Python's
/// `active_children()`); children that have exited are reaped on the way.
pub fn active_children() -> Vec<ProcessInfo> {
    let mut children = locked(&CHILDREN);
    children.retain(|c| poll_state(&c.state).is_none());
    children
        .iter()
        .filter_map(|c| match &*locked(&c.state) {
            State::Running { pid, .. } => Some(ProcessInfo {
                name: c.name.clone(),
                pid: *pid,
            }),
            _ => None,
        })
        .collect()
}

/// The process running this code.
pub fn current_process() -> ProcessInfo {
    let name = locked(&IDENTITY)
        .as_ref()
        .map_or_else(|| "MainProcess".to_owned(), |i| i.name.clone());
    ProcessInfo {
        name,
        pid: sys::getpid(),
    }
}

/// The number of CPUs this process may use (Python's `cpu_count`, but
/// respecting CPU affinity and cgroup quotas).
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Ends the calling process at once with `code`: what a child calls for
/// Python's `sys.exit(code)`. Flushes stdout and stderr; runs no destructors.
pub fn exit(code: i32) -> ! {
    sys::exit_now(code)
}

enum State {
    NotStarted,
    Running { pid: u32, pidfd: OwnedFd },
    Exited { pid: u32, code: i32 },
}

type Target<'a> = Box<dyn FnOnce() -> i32 + Send + 'a>;

/// How a process is started.
enum Launch<'a> {
    Fork(Target<'a>),
    Spawn(spawn::Call),
}

/// A closure run in a child process (Python's `multiprocessing.Process`),
/// started by `fork` ([`Process::new`]), or a function run in a fresh copy
/// of the program ([`Process::spawn`]).
///
/// The child sees everything the parent had when it started, including
/// borrowed data and the shared objects of this crate; its own writes to
/// ordinary memory stay its own. A panic is caught in the child (exit code 1)
/// and never unwinds into the parent's code.
///
/// Exit codes follow Python: `None` while running, 0 on return, N after
/// [`exit(N)`](exit), 1 after a panic or an `Err`, −N when killed by signal N.
///
/// Dropping the handle of a running child leaves it running (as
/// `std::process::Child` does); it is reaped by a later [`Process::start`]
/// or [`active_children`].
/// A [daemon](Process::daemon) child is killed when its parent exits.
///
/// # Example
/// ```
/// use multiproc::process::Process;
/// let mut p = Process::new(|| println!("hello from the child")).name("greeter");
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Process<'a> {
    /// Taken by `start`; in a mutex only so that `Process` is `Sync` (it is
    /// reached through `&mut self`, without locking).
    launch: Mutex<Option<Launch<'a>>>,
    name: String,
    path: Vec<u32>,
    daemon: bool,
    /// Extra command-line arguments of a spawned child.
    exec_args: Vec<OsString>,
    state: Arc<Mutex<State>>,
}

impl Process<'static> {
    /// A process that will run `f(args)` in a fresh copy of this program
    /// (the spawn start method), named `Process-N` like Python's. The
    /// program's `main` must call [`spawn_init`] first. Exit code 0 when `f`
    /// returns, 1 if it panics.
    pub fn spawn<A>(f: fn(A), args: A) -> Self
    where
        A: serde::Serialize + serde::de::DeserializeOwned,
    {
        Self::with_launch(Launch::Spawn(spawn::Call::new(f, &args)))
    }
}

impl<'a> Process<'a> {
    /// A process that will run `target`, named `Process-N` like Python's.
    /// Exit code 0 when it returns, 1 if it panics.
    pub fn new<F>(target: F) -> Self
    where
        F: FnOnce() + Send + 'a,
    {
        Self::with_launch(Launch::Fork(Box::new(move || {
            target();
            0
        })))
    }

    /// A process whose closure returns a `Result`: exit code 0 on `Ok`, 1 on
    /// `Err` (printed to stderr with the process's name) or on a panic.
    pub fn fallible<F, E>(target: F) -> Self
    where
        F: FnOnce() -> std::result::Result<(), E> + Send + 'a,
        E: fmt::Debug,
    {
        Self::with_launch(Launch::Fork(Box::new(move || match target() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("Process {}: error: {e:?}", current_process().name());
                1
            }
        })))
    }

    fn with_launch(launch: Launch<'a>) -> Self {
        let mut path = locked(&IDENTITY)
            .as_ref()
            .map_or_else(Vec::new, |i| i.path.clone());
        path.push(CHILD_COUNTER.fetch_add(1, Ordering::Relaxed) + 1);
        let name = format!(
            "Process-{}",
            path.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(":")
        );
        Process {
            launch: Mutex::new(Some(launch)),
            name,
            path,
            daemon: false,
            exec_args: Vec::new(),
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

    /// Sets the name that the child's [`current_process`] reports.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A daemon child is killed (`SIGKILL`) when the parent exits, however
    /// it exits. Note: Linux ties this to the parent *thread* that calls
    /// [`start`](Process::start), so start daemons from a long-lived thread.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The name of this process.
    pub fn process_name(&self) -> &str {
        &self.name
    }

    /// Whether this is a daemon process.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Starts the child: forks it (it runs the closure and exits), or
    /// spawns a new copy of the program.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if already started; [`Error::Io`] if the
    /// child cannot be started.
    pub fn start(&mut self) -> Result<()> {
        let Some(launch) = self
            .launch
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Err(self.state_error("already started"));
        };
        reap_children();
        install_panic_header();
        let pid = match launch {
            Launch::Fork(target) => self.fork(target)?,
            Launch::Spawn(call) => spawn::start(
                &call,
                &spawn::Child {
                    name: &self.name,
                    path: &self.path,
                    daemon: self.daemon,
                    parent: &current_process(),
                },
                &self.exec_args,
            )?,
        };
        match sys::pidfd_open(pid) {
            Ok(pidfd) => {
                *locked(&self.state) = State::Running { pid, pidfd };
                locked(&CHILDREN).push(ChildEntry {
                    name: self.name.clone(),
                    state: self.state.clone(),
                });
                Ok(())
            }
            Err(e) => {
                // Without a pidfd the child cannot be waited on safely.
                // SAFETY: kill on the pid we just started and have not reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let _ = sys::waitpid(pid, true);
                Err(Error::io("pidfd_open (Linux 5.3 or later is required)", e))
            }
        }
    }

    /// Forks; in the parent returns the child's pid, in the child runs
    /// `target` and never returns.
    fn fork(&mut self, target: Target<'a>) -> Result<u32> {
        crate::segment::ready_for_fork()?;
        let parent = current_process();
        // Held across the fork: in the child they belong to this thread.
        let identity = locked(&IDENTITY);
        let children = locked(&CHILDREN);
        match sys::fork() {
            Err(e) => Err(Error::io("fork", e)),
            Ok(Forked::Child) => self.run_child(target, parent, identity, children),
            Ok(Forked::Parent { pid }) => Ok(pid),
        }
    }

    fn run_child(
        &mut self,
        target: Target<'a>,
        parent: ProcessInfo,
        mut identity: MutexGuard<'_, Option<Identity>>,
        mut children: MutexGuard<'_, Vec<ChildEntry>>,
    ) -> ! {
        let parent_pid = parent.pid;
        *identity = Some(Identity {
            name: std::mem::take(&mut self.name),
            path: std::mem::take(&mut self.path),
            parent,
        });
        // The parent's children are not this process's (and their pidfds
        // are only copies): forget them without closing anything.
        std::mem::forget(std::mem::take(&mut *children));
        drop((identity, children));
        CHILD_COUNTER.store(0, Ordering::Relaxed);
        if self.daemon && sys::die_with_parent(parent_pid).is_err() {
            sys::exit_now(1);
        }
        let code = catch_unwind(AssertUnwindSafe(target)).unwrap_or(1);
        sys::exit_now(code)
    }

    /// The child's pid file descriptor while it runs (readable once it has
    /// exited), for waiting on many children at once.
    pub(crate) fn pidfd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        match &*locked(&self.state) {
            State::Running { pidfd, .. } => Some(pidfd.as_raw_fd()),
            _ => None,
        }
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<u32> {
        match &*locked(&self.state) {
            State::NotStarted => None,
            State::Running { pid, .. } | State::Exited { pid, .. } => Some(*pid),
        }
    }

    /// Whether the child has started and not yet exited.
    pub fn is_alive(&self) -> bool {
        self.poll();
        matches!(&*locked(&self.state), State::Running { .. })
    }

    /// The exit code, `None` while running or before start.
    pub fn exitcode(&self) -> Option<i32> {
        self.poll()
    }

    /// Waits for the child to exit and returns its exit code.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started.
    pub fn join(&self) -> Result<i32> {
        self.wait(Deadline::Never)?
            .ok_or_else(|| unreaped_error(&self.name))
    }

    /// Waits at most `timeout` for the child; `None` if it is still running.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        self.wait(Deadline::after(timeout))
    }

    /// Waits for the child to exit without blocking the thread (for a task
    /// on an async runtime; any runtime will do) and returns its exit code.
    /// Dropping the future stops the wait and nothing else.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started.
    pub async fn join_async(&self) -> Result<i32> {
        let pidfd = match &*locked(&self.state) {
            State::NotStarted => return Err(self.state_error("not started")),
            State::Exited { code, .. } => return Ok(*code),
            State::Running { pidfd, .. } => {
                pidfd.try_clone().map_err(|e| Error::io("dup pidfd", e))?
            }
        };
        // A pidfd becomes readable when its process exits. Readable before
        // the reap and still nothing to reap: the kernel or someone else
        // reaped it (as in `wait`), and looking again would never end.
        waiter::descriptor(pidfd.as_raw_fd(), Deadline::Never, || {
            let exited = match sys::pidfd_wait(&pidfd, Deadline::Now) {
                Ok(exited) => exited,
                Err(e) => return ControlFlow::Break(Err(Error::io("wait for child", e))),
            };
            match self.poll() {
                Some(code) => ControlFlow::Break(Ok(code)),
                None if exited => ControlFlow::Break(Err(unreaped_error(&self.name))),
                None => ControlFlow::Continue(Ready::Read),
            }
        })
        .await?
        .ok_or_else(|| unreaped_error(&self.name))
    }

    fn wait(&self, deadline: Deadline) -> Result<Option<i32>> {
        let pidfd = match &*locked(&self.state) {
            State::NotStarted => return Err(self.state_error("not started")),
            State::Exited { code, .. } => return Ok(Some(*code)),
            State::Running { pidfd, .. } => {
                pidfd.try_clone().map_err(|e| Error::io("dup pidfd", e))?
            }
        };
        // Wait without holding the state lock, so other threads can poll.
        if !sys::pidfd_wait(&pidfd, deadline).map_err(|e| Error::io("wait for child", e))? {
            return Ok(None);
        }
        Ok(self.poll())
    }

    /// Reaps the child if it has exited; returns its exit code if known.
    fn poll(&self) -> Option<i32> {
        poll_state(&self.state)
    }

    /// Asks the child to stop (`SIGTERM`). A no-op once it has exited.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Kills the child (`SIGKILL`). A no-op once it has exited.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if not started.
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    fn signal(&self, signal: i32) -> Result<()> {
        match &*locked(&self.state) {
            State::NotStarted => Err(self.state_error("not started")),
            State::Exited { .. } => Ok(()),
            // The pidfd names this child even if it has exited: never another process.
            State::Running { pidfd, .. } => match sys::pidfd_signal(pidfd, signal) {
                Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                    Err(Error::io("signal child", e))
                }
                _ => Ok(()),
            },
        }
    }

    fn state_error(&self, what: &'static str) -> Error {
        Error::ProcessState {
            name: self.name.clone(),
            what,
        }
    }
}

/// Reaps the child behind `state` if it has exited; its exit code if known.
fn poll_state(state: &Mutex<State>) -> Option<i32> {
    let mut state = locked(state);
    match &*state {
        State::NotStarted => None,
        State::Exited { code, .. } => Some(*code),
        State::Running { pid, .. } => match sys::waitpid(*pid, false) {
            Ok(Some(code)) => {
                let pid = *pid;
                *state = State::Exited { pid, code };
                Some(code)
            }
            // Not yet exited, or reaped elsewhere (ECHILD): nothing to tell.
            Ok(None) | Err(_) => None,
        },
    }
}

fn unreaped_error(name: &str) -> Error {
    Error::ProcessState {
        name: name.into(),
        what: "exited but could not be reaped (was SIGCHLD set to SIG_IGN?)",
    }
}

/// Like Python's "Process Process-1:" header before a traceback: a panic in
/// a child first says which process it is, then the previous hook prints
/// the rest. Installed once, in the parent, so that a child allocates (and
/// so copies) nothing for it.
fn install_panic_header() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: a panic while this thread holds the lock must not deadlock.
            if let Ok(identity) = IDENTITY.try_lock() {
                if let Some(identity) = identity.as_ref() {
                    eprintln!("Process {}:", identity.name);
                }
            }
            previous(info);
        }));
    });
}

/// Forgets children that have exited (reaping those whose handles are gone).
fn reap_children() {
    locked(&CHILDREN).retain(|c| poll_state(&c.state).is_none());
}

impl fmt::Debug for Process<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}
