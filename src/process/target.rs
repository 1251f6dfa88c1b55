//! What a child runs: a closure (`Send` or not), a fallible one, or a
//! [`Run`] value, and how it is started.

use std::fmt;

use super::{current_process, forkserver, spawn, Process};

/// What a forked child runs; its exit code.
pub(super) type Target<'a> = Box<dyn FnOnce() -> i32 + 'a>;

/// The closure of a forked [`Process`] that may be moved to and dropped on
/// another thread (it is `Send`): the default, so that a `Process` can be
/// kept in a pool, a struct shared between threads, or started from any
/// thread.
pub struct SendTarget<'a>(Box<dyn FnOnce() -> i32 + Send + 'a>);

/// The closure of a forked [`LocalProcess`], which need not be `Send` (it
/// may capture an `Rc`): it is forked, and dropped, only on the thread that
/// made it, since a `LocalProcess` is neither `Send` nor `Sync`.
pub struct LocalTarget<'a>(Target<'a>);

/// A [`Process`] whose closure need not be `Send`, made by
/// [`Process::new_local`] or [`Scope::process_local`](super::Scope::process_local): fork copies the
/// whole process, so the child may use anything the closure captured, but
/// the handle itself stays on the thread that made it.
pub type LocalProcess<'a> = Process<'a, LocalTarget<'a>>;

pub(super) mod sealed {
    /// What a [`Process`](super::Process) may hold as its closure:
    /// [`SendTarget`](super::SendTarget) or [`LocalTarget`](super::LocalTarget).
    pub trait Target<'a> {
        fn into_target(self) -> super::Target<'a>;
    }
}

impl<'a> sealed::Target<'a> for SendTarget<'a> {
    fn into_target(self) -> Target<'a> {
        self.0
    }
}

impl<'a> sealed::Target<'a> for LocalTarget<'a> {
    fn into_target(self) -> Target<'a> {
        self.0
    }
}

impl fmt::Debug for SendTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendTarget")
    }
}

impl fmt::Debug for LocalTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalTarget")
    }
}

/// How a process is started.
pub(super) enum Launch<T> {
    Fork(T),
    Spawn(spawn::Call),
    ForkServer(forkserver::Call),
}

/// Exit code 0 when `target` returns (1 if it panics: see `run_child`).
/// `Send` exactly when `target` is.
pub(super) fn returning<'a>(target: impl FnOnce() + 'a) -> impl FnOnce() -> i32 + 'a {
    move || {
        target();
        0
    }
}

/// Exit code 0 on `Ok`, 1 on `Err` (printed with the process's name).
/// `Send` exactly when `target` is.
pub(super) fn fallible<'a, E: fmt::Debug>(
    target: impl FnOnce() -> std::result::Result<(), E> + 'a,
) -> impl FnOnce() -> i32 + 'a {
    move || match target() {
        Ok(()) => 0,
        Err(e) => {
            super::logging::to_stderr(format_args!(
                "Process {}: error: {e:?}",
                current_process().name()
            ));
            1
        }
    }
}

/// Python's way to define a process: subclass `Process` and override
/// `run()`. Here, a type that implements `Run`, given to
/// [`Process::from_run`]; the child calls [`run`](Run::run) on its copy of
/// the value. As in Python, the process's default name is the type's name
/// and a number (`Worker-1`), and [`current_process`] tells the child its
/// name.
///
/// # Example
/// ```
/// use multiproc::process::{current_process, Process, Run};
///
/// struct Worker {
///     n: u32,
/// }
///
/// impl Run for Worker {
///     fn run(&mut self) {
///         println!("{} squares {}: {}", current_process().name(), self.n, self.n * self.n);
///     }
/// }
///
/// let mut p = Process::from_run(Worker { n: 7 });
/// assert!(p.name().starts_with("Worker-"));
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Run {
    /// The child's work (Python's `Process.run`). Returning ends the child
    /// with exit code 0; a panic gives 1, and
    /// [`process::exit(n)`](super::exit) gives `n`.
    fn run(&mut self);
}

/// The closure as a [`SendTarget`].
pub(super) fn send<'a>(target: impl FnOnce() -> i32 + Send + 'a) -> SendTarget<'a> {
    SendTarget(Box::new(target))
}

/// The closure as a [`LocalTarget`].
pub(super) fn local<'a>(target: impl FnOnce() -> i32 + 'a) -> LocalTarget<'a> {
    LocalTarget(Box::new(target))
}

/// `R`'s name without its path and generic arguments: `Worker` for
/// `my_crate::jobs::Worker<u32>`, as Python's `type(self).__name__`.
pub(super) fn type_name_of<R>() -> &'static str {
    let full = std::any::type_name::<R>();
    let plain = full.split('<').next().unwrap_or(full);
    plain.rsplit("::").next().unwrap_or(plain)
}
