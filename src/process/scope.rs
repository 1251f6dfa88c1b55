//! Scoped processes: children whose closures borrow from the caller,
//! because the scope does not end before every one of them has exited (as
//! [`std::thread::scope`] does for threads).
//!
//! # Why this is sound
//! A forked child has a copy of the parent's memory, so a borrow it holds
//! stays valid in its own address space; what can go wrong is a borrow of
//! memory that other processes share (a reference into a locked
//! [`Value`](crate::Value), say), used by the child after the parent's
//! borrow ended (after the guard was dropped and another process locked it).
//! So no process may run with a copy of a borrow after the borrow ends:
//!
//! 1. A [`Process`] whose closure is not `'static` can only be made by
//!    [`Scope::process`] (or [`Scope::process_local`]), which ties it to
//!    the scope (`Process<'scope>`, with the scope recorded in it);
//!    [`Process::new`] and [`Process::new_local`] take `'static` closures
//!    only. `'scope` cannot be named outside [`scope`]'s closure, and
//!    `'env` outlives it, as in `std`.
//! 2. Starting it registers the child under the scope's id before `start`
//!    returns, whatever happens to the handle afterwards (dropped, leaked);
//!    only the process that runs the scope may start it.
//! 3. [`scope`] returns or unwinds only after every child registered under
//!    its id has exited (daemons are killed first, as at a process's exit).
//! 4. A child may pass a borrow on to a process of its own (a nested scope)
//!    and then die without waiting for it, killed by a signal or by a
//!    `panic = "abort"` build. So every child of a scope also holds the
//!    write end of the scope's *witness* pipe, and hands it on to the
//!    children of its own scopes. The scope closes its copy at the end and
//!    waits for end of file: then no process that might hold a borrow of
//!    this scope's borrowed data exists. Processes that cannot hold such a
//!    borrow drop the witness: `'static` children and every other fork (the
//!    fork handlers close it), and programs that `exec` (it is close-on-exec).
//!
//! Not covered: the process that runs the scope dying (killed by a signal)
//! while its children still use borrows of data it had locked. Its robust
//! lock then tells the next locker that its owner died
//! ([`LockError::OwnerDied`](crate::LockError::OwnerDied), or
//! [`RecoverableLockError::OwnerDied`](crate::RecoverableLockError::OwnerDied)
//! with the guard), which says the data may be inconsistent;
//! the children are not stopped.

use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{
    fallible, finish_children, local, locked, returning, send, Launch, LocalProcess, Process,
};
use crate::error::{Error, Result};
use crate::sys;

/// The write ends of witness pipes that this process holds: those of the
/// scopes it runs (`scope: Some(id)`) and those it inherited as a child of
/// a scope (`None`), which it keeps until it exits.
static WITNESSES: Mutex<Vec<WitnessEnd>> = Mutex::new(Vec::new());

pub(super) struct WitnessEnd {
    scope: Option<u64>,
    _fd: OwnedFd,
}

/// The witness registry, locked (for the fork handlers).
pub(super) fn witnesses() -> MutexGuard<'static, Vec<WitnessEnd>> {
    locked(&WITNESSES)
}

/// In a new child, keeps the witnesses it must hold: for a child of scope
/// `id`, that scope's and the inherited ones (all now inherited); for any
/// other fork, none.
pub(super) fn keep_witnesses(ends: &mut Vec<WitnessEnd>, scope: Option<u64>) {
    match scope {
        Some(id) => {
            ends.retain(|w| w.scope.is_none_or(|s| s == id));
            for w in ends.iter_mut() {
                w.scope = None;
            }
        }
        None => ends.clear(),
    }
}

/// Runs `f` with a [`Scope`] whose processes may borrow anything that
/// outlives the call; returns `f`'s result once every process started in
/// the scope has exited. Daemon processes of the scope are killed at its
/// end, the others waited for (Python's rule at a process's exit). If `f`
/// panics, the scope still waits, then resumes the panic.
///
/// # Example
/// ```
/// use multiproc::{scope, Value};
///
/// let total = Value::new(0u64)?;
/// let parts = vec![1u64, 2, 3, 4];
/// scope(|s| -> multiproc::Result<()> {
///     for part in parts.chunks(2) {
///         // Borrows `total` and `parts`.
///         s.start(|| {
///             *total.lock().expect("lock") += part.iter().sum::<u64>();
///         })?;
///     }
///     Ok(())
/// })?;
/// assert_eq!(total.get()?, 10);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// The compiler rejects children that could outlive what they borrow: a
/// handle that leaves the scope,
/// ```compile_fail
/// let escaped = multiproc::scope(|s| s.process(|| {}));
/// ```
/// a borrow of something that ends inside the scope,
/// ```compile_fail,E0373
/// multiproc::scope(|s| {
///     let local = 1;
///     s.start(|| println!("{local}")).unwrap();
/// });
/// ```
/// and the end of a borrow (here, a lock guard) that a child still uses.
/// ```compile_fail,E0505
/// use multiproc::Value;
/// let v = Value::new(0u64)?;
/// let mut guard = v.lock()?;
/// let counter = &mut *guard;
/// multiproc::scope(|s| -> multiproc::Result<()> {
///     s.start(move || *counter += 1)?;
///     drop(guard);
///     Ok(())
/// })?;
/// # Ok::<(), multiproc::Error>(())
/// ```
/// A scoped process cannot be handed to a `'static` one either.
/// ```compile_fail
/// multiproc::scope(|s| {
///     let inner = s.process(|| {});
///     multiproc::Process::new(move || drop(inner));
/// });
/// ```
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        shared: Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            owner: sys::getpid(),
            witness: Mutex::new(None),
        },
        scope: PhantomData,
        env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    scope.shared.finish();
    result.unwrap_or_else(|panic| resume_unwind(panic))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A scope to start processes that borrow; see [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    shared: Shared,
    /// Invariant in both, as `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// What a scoped [`Process`] knows of its scope.
pub(super) struct Shared {
    id: u64,
    /// The process that runs the scope.
    owner: u32,
    /// The read end of the witness pipe, made at the first start.
    witness: Mutex<Option<OwnedFd>>,
}

impl Shared {
    /// Before a child of this scope is forked: checks that this process
    /// runs the scope and that the witness exists; the scope's id.
    pub(super) fn ready_to_start(&self, name: &str) -> Result<u64> {
        if self.owner != sys::getpid() {
            return Err(Error::ProcessState {
                name: name.into(),
                what: "belongs to a scope of another process",
            });
        }
        let mut read = locked(&self.witness);
        if read.is_none() {
            let (r, w) = sys::pipe().map_err(|e| Error::io("pipe", e))?;
            locked(&WITNESSES).push(WitnessEnd {
                scope: Some(self.id),
                _fd: w,
            });
            *read = Some(r);
        }
        Ok(self.id)
    }

    /// The end of the scope: see the module documentation.
    fn finish(&self) {
        finish_children(|c| c.scope == Some(self.id), false);
        let Some(read) = locked(&self.witness).take() else {
            return;
        };
        locked(&WITNESSES).retain(|w| w.scope != Some(self.id));
        let mut buf = [std::mem::MaybeUninit::uninit(); 1];
        // Nobody writes: the read returns 0 when the last holder is gone.
        // It can only fail with EINTR, and is then retried.
        while !matches!(sys::read(&read, &mut buf), Ok(0)) {}
    }
}

impl<'scope> Scope<'scope, '_> {
    /// A process that will run `target`, which may borrow what outlives
    /// the scope; configure it as any [`Process`] and
    /// [`start`](Process::start) it. Only the process that runs the scope
    /// can start it: a child that wants children of its own opens a scope
    /// of its own.
    pub fn process<F>(&'scope self, target: F) -> Process<'scope>
    where
        F: FnOnce() + Send + 'scope,
    {
        Process::with_launch(Launch::Fork(send(returning(target))), Some(&self.shared))
    }

    /// [`Process::new_local`] in this scope: a process whose closure need
    /// not be `Send` (see [`LocalProcess`]), such as one that borrows a
    /// `RefCell`:
    /// ```
    /// let cell = std::cell::RefCell::new(1);
    /// multiproc::scope(|s| -> multiproc::Result<()> {
    ///     let mut p = s.process_local(|| assert_eq!(*cell.borrow(), 1));
    ///     p.start()?;
    ///     assert_eq!(p.join()?, 0);
    ///     Ok(())
    /// })?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    /// which [`Scope::process`] rejects, since its handle may go to other
    /// threads:
    /// ```compile_fail,E0277
    /// let cell = std::cell::RefCell::new(1);
    /// multiproc::scope(|s| {
    ///     s.process(|| assert_eq!(*cell.borrow(), 1));
    /// });
    /// ```
    pub fn process_local<F>(&'scope self, target: F) -> LocalProcess<'scope>
    where
        F: FnOnce() + 'scope,
    {
        Process::with_launch(Launch::Fork(local(returning(target))), Some(&self.shared))
    }

    /// [`Process::fallible`] in this scope: exit code 1 on `Err`.
    pub fn fallible<F, E>(&'scope self, target: F) -> Process<'scope>
    where
        F: FnOnce() -> std::result::Result<(), E> + Send + 'scope,
        E: std::fmt::Debug,
    {
        Process::with_launch(Launch::Fork(send(fallible(target))), Some(&self.shared))
    }

    /// Starts a process running `target` at once (see [`Scope::process`]).
    ///
    /// # Errors
    /// As [`Process::start`].
    pub fn start<F>(&'scope self, target: F) -> Result<Process<'scope>>
    where
        F: FnOnce() + Send + 'scope,
    {
        let mut p = self.process(target);
        p.start()?;
        Ok(p)
    }
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("id", &self.shared.id)
            .finish()
    }
}
