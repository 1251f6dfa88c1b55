//! [`Value`]: one `T` in shared memory behind a robust lock.

use std::time::Duration;

use bytemuck::Pod;

use super::locked::{Init, LockedCells};
use super::ValueGuard;
use crate::error::{Error, LockResult, Result};
use crate::segment::{ObjectKind, Placement};
use crate::sync::Lock;
use crate::sys::Deadline;

/// One value of a plain-data type in shared memory, with a lock (Python's
/// `multiprocessing.Value`).
///
/// Made before a fork it is shared with the child; made by name, any process
/// can [`open`](Value::open) it. Cloning gives another handle on the same value.
///
/// # Example
/// ```
/// use multiproc::{cell::Value, process::Process};
/// let counter = Value::new(0u64)?;
/// let mut children: Vec<_> = (0..2)
///     .map(|_| {
///         let counter = counter.clone(); // another handle on the same value
///         Process::new(move || {
///             for _ in 0..1000 {
///                 *counter.lock().expect("lock") += 1;
///             }
///         })
///     })
///     .collect();
/// for c in &mut children {
///     c.start()?;
/// }
/// for c in &mut children {
///     assert_eq!(c.join()?, 0);
/// }
/// assert_eq!(counter.get()?, 2000);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Value<T> {
    cells: LockedCells<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            cells: self.cells.clone(),
        }
    }
}

impl<T: Pod> Value<T> {
    /// A new anonymous value with a lock of its own.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(init: T) -> Result<Self> {
        Self::place(Placement::Anonymous, init)
    }

    /// A new anonymous value guarded by `lock`, which other objects may share
    /// (Python's `lock=` argument). Locking two of them at once from one
    /// thread is `Deadlock`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn with_lock(init: T, lock: &Lock) -> Result<Self> {
        let cells = LockedCells::with_lock(lock, ObjectKind::Value, Init::Copy(&[init]))?;
        Ok(Value { cells })
    }

    /// Creates a named value that unrelated processes can [`open`](Value::open).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidName`], [`Error::NoSpace`].
    pub fn create(name: &str, init: T) -> Result<Self> {
        Self::place(Placement::Create(name), init)
    }

    /// Opens a named value.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::TypeMismatch`] if it was created with
    /// another `T`; [`Error::KindMismatch`] if the name holds something else.
    pub fn open(name: &str) -> Result<Self> {
        Self::place(Placement::Open(name), T::zeroed())
    }

    /// Opens a named value, creating it with `init` if it does not exist.
    ///
    /// # Errors
    /// As for [`create`](Value::create) and [`open`](Value::open).
    pub fn create_or_open(name: &str, init: T) -> Result<Self> {
        Self::place(Placement::CreateOrOpen(name), init)
    }

    fn place(how: Placement<'_>, init: T) -> Result<Self> {
        let cells = LockedCells::place(how, ObjectKind::Value, Init::Copy(&[init]))?;
        if cells.len() != 1 {
            return Err(Error::Corrupt {
                name: how.name().into(),
                what: format!("a Value with {} elements", cells.len()),
            });
        }
        Ok(Value { cells })
    }

    /// Blocks until the lock is held; the guard derefs to the value.
    ///
    /// # Errors
    /// `OwnerDied` (with the guard: repair, then
    /// [`CellGuard::make_consistent`](super::CellGuard::make_consistent)),
    /// `NotRecoverable`, `Deadlock`.
    #[inline]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.cells.lock_with(Deadline::Never, one)
    }

    /// Takes the lock if it is free.
    ///
    /// # Errors
    /// `WouldBlock`, and those of [`lock`](Value::lock).
    pub fn try_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.cells.lock_with(Deadline::Now, one)
    }

    /// Waits at most `timeout` (monotonic clock) for the lock.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock`](Value::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ValueGuard<'_, T>> {
        self.cells.lock_with(Deadline::after(timeout), one)
    }

    /// Reads the value under the lock.
    ///
    /// # Errors
    /// As for [`lock`](Value::lock). This convenience does not repair: if an
    /// owner died it returns [`Error::OwnerDied`] and the lock becomes not
    /// recoverable. Use [`lock`](Value::lock) where recovery matters.
    #[inline]
    pub fn get(&self) -> Result<T> {
        Ok(*self.lock()?)
    }

    /// Writes the value under the lock.
    ///
    /// # Errors
    /// As for [`get`](Value::get).
    #[inline]
    pub fn set(&self, value: T) -> Result<()> {
        *self.lock()? = value;
        Ok(())
    }

    /// The lock that guards this value (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        self.cells.lock_handle()
    }
}

#[inline]
fn one<T>(p: *mut T, _len: usize) -> *mut T {
    p
}

impl<T> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value<{}> {{ .. }}", std::any::type_name::<T>())
    }
}
