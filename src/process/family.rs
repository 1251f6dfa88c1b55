//! This process and its family: who it is (its name and place among the
//! processes this crate started), the children it started, the fork
//! handlers that keep those registries usable in a forked child, and what
//! happens to the children when a process exits.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::state::{poll_state, signal_state, wait_until_exited, State};
use super::{logging, scope};
use crate::error::Result;
use crate::poison::{self, locked};
use crate::sys;

/// Who the calling process is, in this crate's terms.
pub(super) struct Identity {
    pub(super) name: String,
    /// Python's `_identity`: (1,) for the first child of the main process,
    /// (1, 2) for the second child of that child, …
    pub(super) path: Vec<u32>,
    /// The process that started this one.
    pub(super) parent: ProcessInfo,
}

// The child touches these after fork, so they are `std` mutexes (a plain
// futex word), held briefly and never across a blocking call, and the fork
// handlers (`prepare_fork`) hold them across every fork.
pub(super) static IDENTITY: Mutex<Option<Identity>> = Mutex::new(None);
/// Children created so far by this process (reset in each child).
pub(super) static CHILD_COUNTER: AtomicU32 = AtomicU32::new(0);
/// Whether every child this process starts dies with it, daemon or not
/// (a pool worker's: see [`children_die_with_this_process`]); reset in
/// each child.
static CHILDREN_DIE_WITH_IT: AtomicBool = AtomicBool::new(false);

/// From now on, every child this process starts is killed when it dies
/// (by the parent-death signal a daemon gets), and its exit kills every
/// child rather than wait for it, as a daemon's: for a pool worker, whose
/// tasks' children must neither outlive it when it is killed
/// (`terminate`) nor hold up its exit (a task's `exit`, or the end of its
/// loop).
pub(crate) fn children_die_with_this_process() {
    CHILDREN_DIE_WITH_IT.store(true, Ordering::Relaxed);
}

/// Whether a child started now must die with this process (or the thread
/// that starts it) even if it is no daemon.
pub(super) fn children_die_with_it() -> bool {
    CHILDREN_DIE_WITH_IT.load(Ordering::Relaxed)
}

/// Whether this process is killed when its parent dies (a daemon, or a
/// pool task's child); reset in each child. The children its main thread
/// starts then die with it too: Python forbids a daemon to have
/// children, which its parent's exit, killing it, would leave running.
static DIES_WITH_PARENT: AtomicBool = AtomicBool::new(false);

/// Marks this process as one that dies with its parent (see
/// [`DIES_WITH_PARENT`]).
pub(super) fn dies_with_its_parent() {
    DIES_WITH_PARENT.store(true, Ordering::Relaxed);
}

/// Whether this process dies with its parent (see [`DIES_WITH_PARENT`]).
pub(super) fn this_process_dies_with_parent() -> bool {
    DIES_WITH_PARENT.load(Ordering::Relaxed)
}
/// Every child started and not yet known to have exited, with its handle's
/// state: `active_children` lists them, a child whose handle was dropped
/// is still reaped (not left a zombie), and exits and scopes join them.
pub(super) static CHILDREN: Mutex<Vec<ChildEntry>> = Mutex::new(Vec::new());

/// Held shared by a thread while this process holds both ends of a socket
/// whose other end must read as closed once another process is done with
/// it (a fork-server child's status socket, until the server has its end),
/// and exclusively by the fork handlers: no fork copies such an end, which
/// would keep it open for as long as that copy lives.
pub(super) static PAIRING: RwLock<()> = RwLock::new(());

/// See [`PAIRING`].
pub(super) fn pairing() -> RwLockReadGuard<'static, ()> {
    poison::read(&PAIRING)
}

pub(super) struct ChildEntry {
    pub(super) name: String,
    pub(super) daemon: bool,
    /// Whether this process's exit waits for it (see `ends_when_parent_exits`).
    pub(super) waited_at_exit: bool,
    /// The scope that joins it, if it was started from one.
    pub(super) scope: Option<u64>,
    pub(super) state: Arc<Mutex<State>>,
}

/// The registries, and Rust's stdout and stderr (which `sys::fork` holds
/// across its forks and everyone else's needs), held by the forking thread
/// from the `prepare` fork handler to the `parent` or `child` one.
pub(super) struct HeldForFork {
    pub(super) _stdout: std::io::StdoutLock<'static>,
    pub(super) _stderr: std::io::StderrLock<'static>,
    pub(super) _identity: MutexGuard<'static, Option<Identity>>,
    pub(super) children: MutexGuard<'static, Vec<ChildEntry>>,
    pub(super) witnesses: MutexGuard<'static, Vec<scope::WitnessEnd>>,
    pub(super) _pairing: RwLockWriteGuard<'static, ()>,
}

/// The guards [`prepare_fork`] takes, held across a fork by the forking
/// thread.
static HELD_FOR_FORK: sys::HeldAcrossFork<HeldForFork> = sys::HeldAcrossFork::new();

thread_local! {
    /// The scope whose child this thread is forking, if any. (A `Cell` of
    /// a `Copy` value needs no destructor: it is there in a thread-local
    /// destructor too.)
    pub(super) static FORKING_FOR_SCOPE: Cell<Option<u64>> = const { Cell::new(None) };
    /// Whether a panic on this thread is caught and reported by the crate
    /// (a pool task's: its result carries it), so that it ends no process
    /// and takes no "Process NAME:" header.
    static PANIC_CAUGHT_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, whose panics the caller catches and reports (a pool worker
/// its tasks'), without the "Process NAME:" header before their messages:
/// Python prints that header (and a traceback) only for an exception that
/// ends the process; a task's exception goes to the pool's result, and the
/// worker prints nothing. The panic hook before the header's still runs.
pub(crate) fn panics_caught_by_caller<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the mark even if `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PANIC_CAUGHT_HERE.set(self.0);
        }
    }
    let _restore = Restore(PANIC_CAUGHT_HERE.replace(true));
    f()
}

/// The process's identity, locked. Every use of a registry first makes
/// sure that the fork handlers are installed, so that no fork can find one
/// held by a thread it lacks.
pub(super) fn identity() -> MutexGuard<'static, Option<Identity>> {
    // Without handlers (out of memory) the registries work as before.
    let _ = crate::fork_handlers::ready();
    locked(&IDENTITY)
}

/// The registry of children, locked (see [`identity`]).
pub(super) fn children() -> MutexGuard<'static, Vec<ChildEntry>> {
    let _ = crate::fork_handlers::ready();
    locked(&CHILDREN)
}

/// Makes sure the crate's fork handlers and exit hook are installed (see
/// `crate::fork_handlers`), and the panic header. Called before every
/// start, in a spawned child and by `log_to_stderr`.
pub(super) fn ready_for_fork() -> Result<()> {
    crate::fork_handlers::ready()?;
    install_panic_header();
    Ok(())
}

/// Before a fork: takes the standard streams and the registries, held by
/// the forking thread until [`after_fork_in_parent`] or
/// [`after_fork_in_child`]. Always in this order (the arena's lock comes
/// after them, see `crate::fork_handlers`); nothing takes two of them
/// otherwise (the standard streams are reentrant locks, already held by
/// `sys::fork`).
pub(crate) fn prepare_fork() {
    let held = HeldForFork {
        _stdout: std::io::stdout().lock(),
        _stderr: std::io::stderr().lock(),
        _identity: locked(&IDENTITY),
        children: locked(&CHILDREN),
        witnesses: scope::witnesses(),
        _pairing: poison::write(&PAIRING),
    };
    // SAFETY: this thread holds the registries' locks, just taken.
    unsafe { HELD_FOR_FORK.put(held) };
}

/// The guards of this fork's [`prepare_fork`], taken from their slot.
fn take_held() -> Option<HeldForFork> {
    // SAFETY: called by the handlers of the fork whose `prepare_fork`
    // put them.
    unsafe { HELD_FOR_FORK.take() }
}

/// After a fork, in the parent.
pub(crate) fn after_fork_in_parent() {
    drop(take_held());
}

/// After a fork, in the child.
pub(crate) fn after_fork_in_child() {
    // A pool worker's child is no pool worker, nor a daemon's a daemon.
    CHILDREN_DIE_WITH_IT.store(false, Ordering::Relaxed);
    DIES_WITH_PARENT.store(false, Ordering::Relaxed);
    // Nor are a task's child's panics caught by a pool: one ends it.
    PANIC_CAUGHT_HERE.set(false);
    if let Some(mut held) = take_held() {
        // The parent's children are not this process's (and their pidfds
        // are only copies): forget them without closing anything.
        std::mem::forget(std::mem::take(&mut *held.children));
        scope::keep_witnesses(&mut held.witnesses, FORKING_FOR_SCOPE.get());
    }
}

/// Python's `util._exit_function`, run by `exit` in this process.
pub(crate) extern "C" fn exit_hook() {
    finish_at_exit();
}

/// What every exit of this process does first, `exit(3)` or not, with
/// the log records of Python's `util._exit_function` (this crate has no
/// finalizers of its own, but says where Python runs them).
pub(super) fn finish_at_exit() {
    logging::info(format_args!("process shutting down"));
    logging::debug(format_args!(
        "running all \"atexit\" finalizers with priority >= 0"
    ));
    finish_children(|c| c.waited_at_exit, true);
    logging::debug(format_args!("running the remaining \"atexit\" finalizers"));
}

/// What a process does with its children when it exits, and a scope when
/// it ends (Python's rule): kills the daemon children among those `which`
/// selects (every one, at a pool worker's exit), then waits until every
/// one of them has exited; with Python's log records if `at_exit`.
///
/// At exit, a daemon child that this process may no longer signal (it
/// changed its credentials since the child started) is not waited for:
/// it dies with this process (a daemon's death signal, or its fork
/// server's), and would otherwise wait for it forever. A scope waits for
/// every child whatever happens: its soundness rests on it.
pub(super) fn finish_children(which: impl Fn(&ChildEntry) -> bool, at_exit: bool) {
    // A pool worker's exit kills every child, as its loop's end does: a
    // task that exits the worker must not leave it waiting for them.
    let all_die = at_exit && children_die_with_it();
    let mut chosen: Vec<(String, bool, Arc<Mutex<State>>)> = children()
        .iter()
        .filter(|c| which(c) && poll_state(&c.state).is_none())
        .map(|c| (c.name.clone(), c.daemon || all_die, c.state.clone()))
        .collect();
    let mut refused = Vec::new();
    for (name, _, state) in chosen.iter().filter(|(_, daemon, _)| *daemon) {
        if at_exit {
            logging::info(format_args!("calling terminate() for daemon {name}"));
        }
        if let Err(e) = signal_state(state, sys::SIGKILL) {
            refused.push(Arc::as_ptr(state));
            if at_exit {
                logging::info(format_args!("cannot kill daemon {name}: {e}"));
            }
        }
    }
    if at_exit {
        chosen.retain(|(_, _, state)| !refused.contains(&Arc::as_ptr(state)));
    }
    for (name, _, state) in &chosen {
        if at_exit {
            logging::info(format_args!("calling join() for process {name}"));
        }
        wait_until_exited(state);
    }
    reap_children();
}

/// The calling process as this crate sees it (Python's `current_process()`).
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    pub(super) name: String,
    pub(super) pid: u32,
}

impl ProcessInfo {
    /// `"MainProcess"`, or the name given to the [`Process`](super::Process) that runs this code.
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
    identity().as_ref().map(|i| i.parent.clone())
}

/// The children of this process that are still running (Python's
/// `active_children()`); children that have exited are reaped on the way.
pub fn active_children() -> Vec<ProcessInfo> {
    let mut children = children();
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
    let name = identity()
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

/// Ends the calling process with `code`: what a child calls for Python's
/// `sys.exit(code)`. Like any exit it first kills the daemon children and
/// waits for the others; then flushes stdout and stderr and ends at once,
/// running no destructors or `atexit` handlers. In a child, with
/// [`log_to_stderr`](super::log_to_stderr), it logs Python's `process exiting with exitcode N`.
pub fn exit(code: i32) -> ! {
    finish_at_exit();
    let child = identity().is_some();
    if child {
        logging::info(format_args!("process exiting with exitcode {code}"));
    }
    sys::exit_now(code)
}

/// Whether the panic header is installed (not a `Once`: see
/// [`sys::InstallOnce`]).
static PANIC_HEADER: sys::InstallOnce = sys::InstallOnce::new();

/// A panic hook, as `std::panic::take_hook` returns it.
type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The hook that was in place before the header's, which the header's
/// calls: null until set, then a box that is never freed (set before the
/// header's hook is).
static PREVIOUS_HOOK: AtomicPtr<PanicHook> = AtomicPtr::new(std::ptr::null_mut());

/// Like Python's "Process Process-1:" header before a traceback: a panic in
/// a child first says which process it is, then the previous hook prints
/// the rest. Installed at the first start of a [`Process`](super::Process)
/// (not at load: a program that starts no process keeps its panic hook as
/// it is), once per process tree (a child inherits it), so
/// that a child allocates (and so copies) nothing for it. As an
/// [`sys::InstallOnce`], which no fork crosses: a child never finds the
/// hook's lock held by the installing thread, nor waits for a `Once` that
/// only that thread would have finished. The installation itself allocates
/// nothing (the box for the previous hook is made before it, and the new
/// hook is a plain function).
fn install_panic_header() {
    // `take_hook` and `set_hook` panic in a panicking thread: a later call
    // installs it.
    if PANIC_HEADER.is_installed() || std::thread::panicking() {
        return;
    }
    let mut previous: Box<PanicHook> = Box::new(Box::new(|_: &std::panic::PanicHookInfo<'_>| {}));
    // Never fails: the installation has no error of its own.
    let _ = PANIC_HEADER.run(move || {
        *previous = std::panic::take_hook();
        PREVIOUS_HOOK.store(Box::into_raw(previous), Ordering::Release);
        std::panic::set_hook(Box::new(print_header_then_previous));
        Ok(())
    });
}

/// The panic header's hook.
fn print_header_then_previous(info: &std::panic::PanicHookInfo<'_>) {
    // try_lock: a panic while this thread holds the lock must not
    // deadlock; and the lock is released before printing, since a
    // forking thread takes stderr's lock before this one.
    let name = IDENTITY
        .try_lock()
        .ok()
        .and_then(|i| i.as_ref().map(|i| i.name.clone()));
    if let Some(name) = name.filter(|_| !PANIC_CAUGHT_HERE.get()) {
        logging::to_stderr(format_args!("Process {name}:"));
    }
    // SAFETY: the pointer is null or a box that is never freed.
    if let Some(previous) = unsafe { PREVIOUS_HOOK.load(Ordering::Acquire).as_ref() } {
        previous(info);
    }
}

/// The identity path of the next child of this process (and counts it).
pub(super) fn next_child_path() -> Vec<u32> {
    let mut path = identity()
        .as_ref()
        .map_or_else(Vec::new, |i| i.path.clone());
    path.push(CHILD_COUNTER.fetch_add(1, Ordering::Relaxed) + 1);
    path
}

/// The identity path of a helper child of the crate's own (a fork
/// server), which is not counted: this process's own path and a 0 (no
/// counted child has it). Its name is given, and its children's paths are
/// made in this process, so the path is never seen.
pub(super) fn helper_path() -> Vec<u32> {
    let mut path = identity()
        .as_ref()
        .map_or_else(Vec::new, |i| i.path.clone());
    path.push(0);
    path
}

/// A child's default name: `kind` and its identity path, as Python's
/// `Process-1:2` or `ForkServerPoolWorker-3`.
pub(super) fn path_name(kind: &str, path: &[u32]) -> String {
    let path: Vec<String> = path.iter().map(u32::to_string).collect();
    format!("{kind}-{}", path.join(":"))
}

/// Forgets children that have exited (reaping those whose handles are gone).
pub(super) fn reap_children() {
    children().retain(|c| poll_state(&c.state).is_none());
}
