//! # multiproc
//!
//! Python's `multiprocessing`, for Rust programs that split work across
//! processes. Two layers with a clear trade-off, and the process tools
//! that use them:
//!
//! - the **shared layer** lives in `mmap`'d shared memory: a read or a
//!   locked increment costs nanoseconds, not a system call;
//! - the **managed layer** is a server process that owns dicts, lists and
//!   namespaces: any serde type, any number of processes, but a socket
//!   round trip per operation;
//! - **processes**, **pools** and **pipes** start the work and carry
//!   messages between processes.
//!
//! ```
//! use multiproc::{Array, Value};
//!
//! let num = Value::new(0.0f64)?;
//! let arr = Array::from_slice(&[0i32, 1, 2, 3])?;
//! // In a scope, children may borrow: it joins them before it returns.
//! multiproc::scope(|s| -> multiproc::Result<()> {
//!     let mut child = s.fallible(|| -> multiproc::Result<()> {
//!         num.set(std::f64::consts::PI)?;
//!         for x in arr.lock()?.iter_mut() {
//!             *x = -*x;
//!         }
//!         Ok(())
//!     });
//!     child.start()?;
//!     assert_eq!(child.join()?, 0);
//!     Ok(())
//! })?;
//! assert_eq!(num.get()?, std::f64::consts::PI);
//! assert_eq!(arr.to_vec()?, [0, -1, -2, -3]);
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! # Map of the crate
//!
//! ## Shared layer: values, arrays, locks and queues in shared memory
//! - [`cell`]: [`Value`] and [`Array`] behind a robust lock; [`RawValue`]
//!   and [`RawArray`] without one (atomics for integers). Element types
//!   are plain bytes ([`bytemuck::Pod`]).
//! - [`sync`]: [`Lock`] and [`RLock`] (robust: a process that dies holding
//!   one never hangs the others, the next locker is told through
//!   [`LockError::OwnerDied`], or handed the lock to repair through
//!   [`RecoverableLockError::OwnerDied`]), and [`Event`], [`Semaphore`],
//!   [`BoundedSemaphore`], [`Condition`], [`Barrier`] on futex words.
//! - [`queue`]: [`Queue`], [`JoinableQueue`] and [`SimpleQueue`]: serde
//!   items in a ring in shared memory, no feeder thread, no torn item
//!   when a process dies half way.
//! - [`segment`]: the shared memory underneath: anonymous segments for
//!   forked children, named ones (`/dev/shm/multiproc.NAME`) that
//!   unrelated processes open, each with a header that says what it holds;
//!   [`segment::list`] and [`segment::clean`] find and remove stale ones.
//!
//! Each of these objects is either anonymous (inherited by children forked
//! after it was made) or named (opened by name by unrelated processes).
//! Waits take a timeout; the waiting primitives and the queues also have `async` forms
//! ([`Event::wait_async`], [`Queue::get_async`], ...) that need no
//! particular runtime.
//!
//! ## Processes, pools and pipes
//! - [`process`]: [`Process`] runs a closure in a forked child (or a
//!   registered function in a spawned one, [`Process::spawn`] and
//!   [`spawn_init`]), with Python's exit codes; [`scope`] lets children
//!   borrow; [`Pool`] runs tasks on worker processes
//!   ([`Pool::map`], [`Pool::apply_async`] and [`AsyncResult`]).
//! - [`conn`]: [`Pipe()`](fn@Pipe) and [`Connection`] (framed messages
//!   over a socket pair), and [`conn::Listener`] / [`conn::connect`] with
//!   an authkey challenge, for unrelated processes and other machines.
//!
//! ## Managed layer: the Manager
//! - [`manager`]: [`Manager::start`](manager::Manager::start) runs a
//!   server process (or [`Manager::connect`](manager::Manager::connect)
//!   reaches a running one, such as `multiproc manager serve`); its
//!   [`dict`](manager::Manager::dict), [`list`](manager::Manager::list)
//!   and [`namespace`](manager::Manager::namespace) proxies forward every
//!   operation to it, so updates are atomic on the server.
//!
//! ## Errors
//! One [`Error`] for the crate and its [`Result`]; lock calls return a
//! [`LockResult`], whose [`LockError`] holds no guard and so goes through
//! `?` into [`Error`], `Box<dyn Error + Send + Sync>` or `anyhow::Error`.
//! The `lock_recovering` calls ([`Lock::lock_recovering`], ...) return a
//! [`RecoverableLockResult`] instead, whose
//! [`RecoverableLockError::OwnerDied`] hands over the lock of a dead owner
//! for repair.
//!
//! The `multiproc` command-line tool (`multiproc bench`, the numbers
//! behind this trade-off on the user's own machine; `soak`; `manager
//! serve`; `shm list|clean`) is a separate package of this repository, so
//! depending on the library compiles none of it.
//!
//! Linux only for now: everything OS-specific lives in one private `sys` module.

#![warn(missing_docs)]

pub mod cell;
pub mod conn;
mod decode;
mod error;
mod fork_handlers;
mod lazy;
pub mod manager;
mod per_process;
mod poison;
pub mod process;
pub mod queue;
pub mod segment;
pub mod sync;
mod sys;
mod waiter;

/// The README's code, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use cell::{Array, RawArray, RawValue, Value};
pub use conn::{pipe, Connection, Pipe};
pub use error::{
    Error, LockError, LockResult, RecoverableLockError, RecoverableLockResult, Result,
};
pub use manager::{Manager, PyValue};
/// The pool across machines, on Redis: [`pool::RemotePool`] submits,
/// [`pool::serve`] runs the workers.
#[cfg(feature = "redis")]
pub use process::pool::remote as pool;
pub use process::{
    active_children, cpu_count, current_process, log_to_stderr, parent_process, scope, spawn_init,
    AsyncResult, LogLevel, Pool, Process, Scope,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
