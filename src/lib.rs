//! # multiproc
//!
//! Python's `multiprocessing`, for Rust programs that split work across
//! processes. Two layers with a clear trade-off:
//!
//! - the **shared layer** — [`Value`], [`Array`], [`RawValue`], [`RawArray`],
//!   [`Lock`], [`RLock`], [`Event`], [`Semaphore`], [`BoundedSemaphore`],
//!   [`Condition`], [`Barrier`] — lives in `mmap`'d shared memory: a read or a
//!   locked increment costs nanoseconds, not a system call;
//! - the **managed layer** (a Manager server with proxied dicts and lists,
//!   planned) trades a socket round trip per operation for flexibility.
//!
//! [`Process`] runs closures in forked children with Python's exit-code
//! conventions. Locks are robust: a process that dies holding one never
//! hangs the others.
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
//! Linux only for now: everything OS-specific lives in one private `sys` module.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod baseline;
pub mod cell;
pub mod conn;
mod error;
pub mod manager;
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
pub use error::{Error, LockError, LockResult, Result};
pub use process::{
    active_children, cpu_count, current_process, log_to_stderr, parent_process, scope, spawn_init,
    AsyncResult, LogLevel, Pool, Process, Scope,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
