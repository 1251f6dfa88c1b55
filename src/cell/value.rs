//! [`Value`]: one `T` in shared memory behind a robust lock.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::time::Duration;

use bytemuck::Pod;

use super::locked::LockedCells;
use super::{Init, ValueGuard};
use crate::error::{LockResult, RecoverableLockResult, Result};
use crate::segment::{shared_constructors, ElemType, ObjectKind, Region, SharedObject};
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

impl<T: Pod> SharedObject for Value<T> {
    type Args<'a> = T;
    const KIND: ObjectKind = ObjectKind::Value;

    fn elem() -> ElemType {
        ElemType::of::<T>()
    }

    fn len(_: &T) -> Result<u64> {
        Ok(1)
    }

    fn layout(len: u64) -> Result<Layout> {
        LockedCells::<T>::layout(len).map(|(l, _)| l)
    }

    unsafe fn init(at: NonNull<u8>, init: T) -> Result<()> {
        // SAFETY: forwarded from the caller, for one element.
        unsafe { LockedCells::init(at, &Init::Copy(&[init])) }
    }

    unsafe fn from_region(region: Region, len: u64) -> std::result::Result<Self, String> {
        if len != 1 {
            return Err(format!("a Value with {len} elements"));
        }
        // SAFETY: forwarded from the caller.
        let cells = unsafe { LockedCells::from_region(region, len) };
        Ok(Value {
            cells: cells.map_err(|e| e.to_string())?,
        })
    }
}

shared_constructors! {
    impl[T: Pod] Value<T> as "value" {
        args(init: T) => init,
        made: " holding `init`, with a lock of its own",
        errors: "",
        kept: " An existing one keeps its own value.",
        anonymous: new,
    }
}

impl<T: Pod> Value<T> {
    /// A new anonymous value guarded by `lock`, which other objects may share
    /// (Python's `lock=` argument). Locking two of them at once from one
    /// thread is `Deadlock`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn with_lock(init: T, lock: &Lock) -> Result<Self> {
        let cells = LockedCells::with_lock(lock, Init::Copy(&[init]))?;
        Ok(Value { cells })
    }

    /// Blocks until the lock is held; the guard derefs to the value.
    ///
    /// # Errors
    /// `NotRecoverable`, `Deadlock`, and `OwnerDied` if the previous owner
    /// died holding the lock: the guard is then dropped without repair,
    /// which makes the lock permanently `NotRecoverable` for everyone. To
    /// repair instead, use [`lock_recovering`](Self::lock_recovering).
    #[inline]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        Ok(self.cells.lock_with(Deadline::Never, one)?)
    }

    /// Takes the lock if it is free.
    ///
    /// # Errors
    /// `WouldBlock`, and those of [`lock`](Self::lock) (an `OwnerDied`
    /// leaves the lock not recoverable).
    pub fn try_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        Ok(self.cells.lock_with(Deadline::Now, one)?)
    }

    /// Waits at most `timeout` (monotonic clock) for the lock.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock`](Self::lock) (an `OwnerDied` leaves
    /// the lock not recoverable).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ValueGuard<'_, T>> {
        Ok(self.cells.lock_with(Deadline::after(timeout), one)?)
    }

    /// Blocks until the lock is held, handing over the guard if the
    /// previous owner died holding it, so that the caller can repair.
    ///
    /// # Errors
    /// [`RecoverableLockError::OwnerDied`](crate::RecoverableLockError::OwnerDied)
    /// with the guard: the caller holds the lock; repair the data, then call
    /// [`CellGuard::make_consistent`](super::CellGuard::make_consistent)
    /// (dropping the guard without that makes the lock permanently
    /// `NotRecoverable`). Otherwise as for [`lock`](Self::lock).
    #[inline]
    pub fn lock_recovering(&self) -> RecoverableLockResult<ValueGuard<'_, T>> {
        self.cells.lock_with(Deadline::Never, one)
    }

    /// As [`lock_recovering`](Self::lock_recovering), waiting at most
    /// `timeout` (monotonic clock).
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock_recovering`](Self::lock_recovering).
    pub fn lock_recovering_timeout(
        &self,
        timeout: Duration,
    ) -> RecoverableLockResult<ValueGuard<'_, T>> {
        self.cells.lock_with(Deadline::after(timeout), one)
    }

    /// Reads the value under the lock.
    ///
    /// # Errors
    /// As for [`lock`](Value::lock). This convenience does not repair: if an
    /// owner died it returns [`Error::OwnerDied`](crate::Error::OwnerDied) and the lock becomes not
    /// recoverable. Use [`lock_recovering`](Value::lock_recovering) where recovery matters.
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
