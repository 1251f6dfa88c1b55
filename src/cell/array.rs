//! [`Array`]: a fixed-length array of `T` in shared memory behind a robust lock.

use std::alloc::Layout;
use std::ops::RangeBounds;
use std::ptr::NonNull;
use std::time::Duration;

use bytemuck::Pod;

use super::locked::LockedCells;
use super::{resolve, ArrayGuard, Init};
use crate::error::{Error, LockResult, RecoverableLockResult, Result};
use crate::segment::{
    place, shared_constructors, ElemType, ObjectKind, Placement, Region, SharedObject,
};
use crate::sync::Lock;
use crate::sys::Deadline;

/// A fixed-length array of plain-data elements in shared memory, with a lock
/// (Python's `multiprocessing.Array`).
///
/// The guard of [`lock`](Array::lock) derefs to `[T]`; the other methods take
/// the lock for one operation each. Indexes out of range are an
/// [`Error::OutOfBounds`], never a panic.
///
/// # Example
/// ```
/// use multiproc::{cell::Array, process::Process};
/// let a = Array::from_slice(&[1i32, 2, 3, 4])?;
/// let theirs = a.clone(); // another handle on the same memory
/// let mut child = Process::new(move || {
///     for x in theirs.lock().expect("lock").iter_mut() {
///         *x = -*x;
///     }
/// });
/// child.start()?;
/// child.join()?;
/// assert_eq!(a.to_vec()?, [-1, -2, -3, -4]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Array<T> {
    cells: LockedCells<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            cells: self.cells.clone(),
        }
    }
}

impl<T: Pod> SharedObject for Array<T> {
    type Args<'a> = Init<'a, T>;
    const KIND: ObjectKind = ObjectKind::Array;

    fn elem() -> ElemType {
        ElemType::of::<T>()
    }

    fn len(init: &Init<'_, T>) -> Result<u64> {
        Ok(init.len() as u64)
    }

    fn layout(len: u64) -> Result<Layout> {
        LockedCells::<T>::layout(len).map(|(l, _)| l)
    }

    unsafe fn init(at: NonNull<u8>, init: Init<'_, T>) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { LockedCells::init(at, &init) }
    }

    unsafe fn from_region(region: Region, len: u64) -> std::result::Result<Self, String> {
        // SAFETY: forwarded from the caller.
        let cells = unsafe { LockedCells::from_region(region, len) };
        Ok(Array {
            cells: cells.map_err(|e| e.to_string())?,
        })
    }
}

shared_constructors! {
    impl[T: Pod] Array<T> as "array" {
        args(init: &[T]) => Init::Copy(init),
        made: " holding a copy of `init`",
        errors: "",
        kept: " An existing one keeps its own length and elements.",
    }
}

impl<T: Pod> Array<T> {
    /// A new anonymous array of `len` zeroed elements.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(len: usize) -> Result<Self> {
        place(Placement::Anonymous(Init::Zeroed(len)))
    }

    /// A new anonymous array holding a copy of `init`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn from_slice(init: &[T]) -> Result<Self> {
        place(Placement::Anonymous(Init::Copy(init)))
    }

    /// A new anonymous array holding a copy of `init`, guarded by `lock`
    /// (Python's `lock=` argument).
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn from_slice_with_lock(init: &[T], lock: &Lock) -> Result<Self> {
        let cells = LockedCells::with_lock(lock, Init::Copy(init))?;
        Ok(Array { cells })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where another program finds the elements of a named array: the
    /// shared-memory object's name (as `shm_open` and Python's
    /// `multiprocessing.shared_memory.SharedMemory(name=...)` take it) and
    /// the byte offset of element 0 in it. The elements follow one another
    /// in native byte order with no padding (`len() * size_of::<T>()`
    /// bytes). `None` for an anonymous array, which no other program can
    /// open.
    ///
    /// The array's lock is a glibc robust mutex that only this crate takes:
    /// a program that reads or writes the elements directly does so without
    /// it, so it may see a write half done, and its own writes may land in
    /// the middle of a locked update. Use it for data that is written once
    /// and then read, or coordinate through another channel.
    ///
    /// # Example
    /// ```
    /// # let name = format!("doc-location-{}", std::process::id());
    /// let a = multiproc::Array::create(&name, &[1.5f64, 2.5])?;
    /// let (file, offset) = a.shm_location().expect("named");
    /// assert_eq!(file, format!("multiproc.{name}"));
    /// assert_eq!(offset % std::mem::align_of::<f64>(), 0);
    /// # multiproc::segment::Segment::unlink(&name)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn shm_location(&self) -> Option<(String, usize)> {
        self.cells.file_position()
    }

    /// Blocks until the lock is held; the guard derefs to `[T]`.
    ///
    /// # Errors
    /// `NotRecoverable`, `Deadlock`, and `OwnerDied` if the previous owner
    /// died holding the lock: the guard is then dropped without repair,
    /// which makes the lock permanently `NotRecoverable` for everyone. To
    /// repair instead, use [`lock_recovering`](Self::lock_recovering).
    #[inline]
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        Ok(self.cells.lock_with(Deadline::Never, slice)?)
    }

    /// Takes the lock if it is free.
    ///
    /// # Errors
    /// `WouldBlock`, and those of [`lock`](Self::lock) (an `OwnerDied`
    /// leaves the lock not recoverable).
    pub fn try_lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        Ok(self.cells.lock_with(Deadline::Now, slice)?)
    }

    /// Waits at most `timeout` (monotonic clock) for the lock.
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock`](Self::lock) (an `OwnerDied` leaves
    /// the lock not recoverable).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ArrayGuard<'_, T>> {
        Ok(self.cells.lock_with(Deadline::after(timeout), slice)?)
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
    pub fn lock_recovering(&self) -> RecoverableLockResult<ArrayGuard<'_, T>> {
        self.cells.lock_with(Deadline::Never, slice)
    }

    /// As [`lock_recovering`](Self::lock_recovering), waiting at most
    /// `timeout` (monotonic clock).
    ///
    /// # Errors
    /// `Timeout`, and those of [`lock_recovering`](Self::lock_recovering).
    pub fn lock_recovering_timeout(
        &self,
        timeout: Duration,
    ) -> RecoverableLockResult<ArrayGuard<'_, T>> {
        self.cells.lock_with(Deadline::after(timeout), slice)
    }

    /// Reads element `index` under the lock.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`]; lock errors as for [`Value::get`](super::Value::get).
    pub fn get(&self, index: usize) -> Result<T> {
        Ok(self.read(index..=index)?[0])
    }

    /// Writes element `index` under the lock.
    ///
    /// # Errors
    /// As for [`get`](Array::get).
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.write(index, &[value])
    }

    /// Copies the elements in `range` out under the lock.
    ///
    /// # Errors
    /// As for [`get`](Array::get).
    pub fn read(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let range = resolve(range, self.len())?;
        Ok(self.lock()?[range].to_vec())
    }

    /// Copies `values` in starting at `start`, under the lock.
    ///
    /// # Errors
    /// As for [`get`](Array::get); nothing is written if the range does not fit.
    pub fn write(&self, start: usize, values: &[T]) -> Result<()> {
        let end = start.checked_add(values.len()).ok_or(Error::OutOfBounds {
            index: start,
            len: self.len(),
        })?;
        let range = resolve(start..end, self.len())?;
        self.lock()?[range].copy_from_slice(values);
        Ok(())
    }

    /// Copies the whole array out under the lock.
    ///
    /// # Errors
    /// Lock errors as for [`Value::get`](super::Value::get).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.read(..)
    }

    /// The lock that guards this array (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        self.cells.lock_handle()
    }
}

#[inline]
fn slice<T>(p: *mut T, len: usize) -> *mut [T] {
    std::ptr::slice_from_raw_parts_mut(p, len)
}

impl<T: Pod> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Array<{}> {{ len: {} }}",
            std::any::type_name::<T>(),
            self.cells.len()
        )
    }
}
