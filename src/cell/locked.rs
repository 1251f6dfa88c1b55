//! The locked core of [`Value`](super::Value) and [`Array`](super::Array):
//! `len` elements of `T` behind a robust lock.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use bytemuck::Pod;

use std::alloc::Layout;

use super::{array_layout, too_large};
use crate::error::{LockResult, Result};
use crate::segment::{place, ElemType, ObjectKind, ObjectLayout, Placement, Region};
use crate::sync::{Lock, LockGuard, RawLock};
use crate::sys::{Deadline, MutexKind};

/// How new cells are filled.
pub(crate) enum Init<'a, T> {
    Copy(&'a [T]),
    Zeroed(usize),
}

impl<T> Init<'_, T> {
    fn len(&self) -> usize {
        match self {
            Init::Copy(s) => s.len(),
            Init::Zeroed(n) => *n,
        }
    }
}

pub(crate) struct LockedCells<T> {
    lock: Lock,
    data: Region,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T> Clone for LockedCells<T> {
    fn clone(&self) -> Self {
        LockedCells {
            lock: self.lock.clone(),
            data: self.data.clone(),
            len: self.len,
            _elem: PhantomData,
        }
    }
}

/// Copies `init` into fresh zeroed memory at `at`.
///
/// # Safety
/// `at` must be valid for writes of `init.len()` elements of `T`, aligned.
unsafe fn fill<T: Pod>(at: *mut T, init: &Init<'_, T>) {
    if let Init::Copy(src) = init {
        // SAFETY: per the caller; `src` is a distinct local slice.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), at, src.len()) };
    }
}

impl<T: Pod> LockedCells<T> {
    /// Makes or finds cells with a lock of their own, in one piece of memory.
    pub(crate) fn place(how: Placement<'_>, kind: ObjectKind, init: Init<'_, T>) -> Result<Self> {
        // A mutex, then the elements.
        let layout_for = |n| -> Result<(Layout, usize)> {
            RawLock::layout()
                .extend(array_layout::<T>(n)?)
                .map_err(|_| too_large(n))
        };
        let object = ObjectLayout {
            kind,
            elem: ElemType::of::<T>(),
            len: init.len() as u64,
            layout_for: |n| layout_for(n).map(|(l, _)| l),
        };
        let (region, len) = place(how, &object, |at: NonNull<u8>| {
            let (_, offset) = layout_for(init.len() as u64)?;
            // SAFETY: `at` is fresh zeroed memory laid out as `layout_for`
            // says: a mutex at 0 and `init.len()` elements at `offset`.
            unsafe {
                RawLock::init(at.as_ptr(), MutexKind::ErrorCheck)?;
                fill(at.as_ptr().add(offset).cast::<T>(), &init);
            }
            Ok(())
        })?;
        let (_, offset) = layout_for(len)?;
        Ok(LockedCells {
            // SAFETY: the object starts with the mutex initialised above
            // (or by the process that created it).
            lock: Lock::from_raw(unsafe { RawLock::from_region(region.clone()) }),
            // SAFETY: `offset` is within the object's memory.
            data: unsafe { region.sub(offset) },
            len: len as usize,
            _elem: PhantomData,
        })
    }

    /// New anonymous cells guarded by an existing lock.
    pub(crate) fn with_lock(lock: &Lock, kind: ObjectKind, init: Init<'_, T>) -> Result<Self> {
        let object = ObjectLayout {
            kind,
            elem: ElemType::of::<T>(),
            len: init.len() as u64,
            layout_for: array_layout::<T>,
        };
        // SAFETY: `at` is fresh memory for `init.len()` elements.
        let (data, len) = place(Placement::Anonymous, &object, |at| {
            unsafe { fill(at.as_ptr().cast::<T>(), &init) };
            Ok(())
        })?;
        Ok(LockedCells {
            lock: lock.clone(),
            data,
            len: len as usize,
            _elem: PhantomData,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The elements' segment file and byte offset, for a named object.
    pub(crate) fn file_position(&self) -> Option<(String, usize)> {
        self.data.file_position()
    }

    pub(crate) fn lock_handle(&self) -> &Lock {
        &self.lock
    }

    #[inline]
    fn guard<'a, U: ?Sized>(&'a self, held: LockGuard<'a>, data: *mut U) -> CellGuard<'a, U> {
        CellGuard {
            _held: held,
            data,
            _marker: PhantomData,
        }
    }

    /// Locks, then views the cells through `view` (a one-element view for
    /// a `Value`, the slice for an `Array`).
    #[inline]
    pub(crate) fn lock_with<U: ?Sized>(
        &self,
        deadline: Deadline,
        view: fn(*mut T, usize) -> *mut U,
    ) -> LockResult<CellGuard<'_, U>> {
        let data = view(self.data.as_ptr::<T>(), self.len);
        match self.lock.acquire_with(deadline) {
            Ok(g) => Ok(self.guard(g, data)),
            Err(e) => Err(e.map(|g| self.guard(g, data))),
        }
    }
}

/// Access to locked shared cells: derefs to `T` for a
/// [`Value`](super::Value) and to `[T]` for an [`Array`](super::Array).
/// The lock is released when the guard is dropped.
#[must_use = "if unused the lock is released at once"]
pub struct CellGuard<'a, U: ?Sized> {
    _held: LockGuard<'a>,
    data: *mut U,
    _marker: PhantomData<&'a mut U>,
}

/// The guard of a [`Value<T>`](super::Value).
pub type ValueGuard<'a, T> = CellGuard<'a, T>;
/// The guard of an [`Array<T>`](super::Array).
pub type ArrayGuard<'a, T> = CellGuard<'a, [T]>;

impl<U: ?Sized> CellGuard<'_, U> {
    /// Marks the lock consistent after its previous owner died, once the
    /// caller has repaired the data. A no-op after a normal lock.
    ///
    /// # Errors
    /// Only on an OS failure.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        LockGuard::make_consistent(&guard._held)
    }
}

impl<U: ?Sized> Deref for CellGuard<'_, U> {
    type Target = U;
    #[inline]
    fn deref(&self) -> &U {
        // SAFETY: the lock is held, so no other process or thread that goes
        // through the lock touches the cells while this reference lives.
        unsafe { &*self.data }
    }
}

impl<U: ?Sized> DerefMut for CellGuard<'_, U> {
    #[inline]
    fn deref_mut(&mut self) -> &mut U {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.data }
    }
}

impl<U: ?Sized + std::fmt::Debug> std::fmt::Debug for CellGuard<'_, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}
