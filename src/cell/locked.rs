//! The locked core of [`Value`](super::Value) and [`Array`](super::Array):
//! `len` elements of `T` behind a robust lock.

use std::alloc::Layout;
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use bytemuck::Pod;

use super::{array_layout, too_large, Init};
use crate::error::{RecoverableLockError, RecoverableLockResult, Result};
use crate::segment::Region;
use crate::sync::{Lock, LockGuard, RobustMutex};
use crate::sys::{self, Deadline, MutexKind};
use crate::waiter::ProcessKey;

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

impl<T: Pod> LockedCells<T> {
    /// The memory of `len` cells with a lock of their own: a mutex, then
    /// the elements, which start at the offset returned.
    pub(crate) fn layout(len: u64) -> Result<(Layout, usize)> {
        RobustMutex::layout()
            .extend(array_layout::<T>(len)?)
            .map_err(|_| too_large(len))
    }

    /// Fills new cells with a lock of their own.
    ///
    /// # Safety
    /// `at` points to fresh zeroed memory of `layout(init.len())`, not yet
    /// shared.
    pub(crate) unsafe fn init(at: NonNull<u8>, init: &Init<'_, T>) -> Result<()> {
        let (_, offset) = Self::layout(init.len() as u64)?;
        // SAFETY: per the caller, fresh unshared memory of `layout`, which
        // puts the mutex at offset 0.
        unsafe { RobustMutex::init(at.as_ptr(), MutexKind::ErrorCheck)? };
        // SAFETY: `offset` is inside the same `layout`-sized memory.
        let elements = unsafe { at.as_ptr().add(offset) };
        // SAFETY: `layout` puts `init.len()` elements of `T`, aligned, at
        // `offset`: fresh memory that nothing else reaches yet.
        unsafe { init.fill(elements.cast::<T>()) };
        Ok(())
    }

    /// The handle on `len` cells with a lock of their own.
    ///
    /// # Safety
    /// `region` holds `layout(len)` bytes filled by [`init`](Self::init),
    /// here or by the process that created them.
    pub(crate) unsafe fn from_region(region: Region, len: u64) -> Result<Self> {
        let (_, offset) = Self::layout(len)?;
        Ok(LockedCells {
            // SAFETY: the object starts with the mutex `init` made.
            lock: Lock::from_mutex(unsafe { RobustMutex::from_region(region.clone()) }),
            // SAFETY: `offset` is within the object's memory.
            data: unsafe { region.sub(offset) },
            len: len as usize,
            _elem: PhantomData,
        })
    }

    /// New anonymous cells guarded by an existing lock.
    pub(crate) fn with_lock(lock: &Lock, init: Init<'_, T>) -> Result<Self> {
        let data = Region::anonymous(array_layout::<T>(init.len() as u64)?)?;
        // SAFETY: a fresh block for `init.len()` elements, ours alone.
        unsafe { init.fill(data.as_ptr::<T>()) };
        Ok(LockedCells {
            lock: lock.clone(),
            data,
            len: init.len(),
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
    fn guard<'a, U: ?Sized>(
        &'a self,
        held: LockGuard<'a>,
        data: *mut U,
        process: ProcessKey,
    ) -> CellGuard<'a, U> {
        HELD.set(HELD.get() + 1);
        CellGuard {
            _held: ManuallyDrop::new(held),
            data,
            process,
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
    ) -> RecoverableLockResult<CellGuard<'_, U>> {
        if !WATCHED.get() {
            // No guard without the check of leaked ones (see `CellGuard`).
            sys::call_at_thread_end(thread_ends).map_err(RecoverableLockError::Os)?;
            WATCHED.set(true);
        }
        let process = ProcessKey::current();
        let data = view(self.data.as_ptr::<T>(), self.len);
        let held = self.lock.acquire_as(deadline, process);
        // The lock is error-checking, so a thread holds it once; but its
        // kind lies in shared memory, and a scribbled one (a crafted file,
        // a broken peer) may nest: a second guard of this thread would be
        // a second `&mut` to the cells.
        let taken = matches!(held, Ok(_) | Err(RecoverableLockError::OwnerDied(_)));
        if taken && !self.lock.mutex().held_once() {
            drop(held);
            return Err(RecoverableLockError::Deadlock);
        }
        match held {
            Ok(g) => Ok(self.guard(g, data, process)),
            Err(e) => Err(e.map(|g| self.guard(g, data, process))),
        }
    }
}

/// Access to locked shared cells: derefs to `T` for a
/// [`Value`](super::Value) and to `[T]` for an [`Array`](super::Array).
/// The lock is released when the guard is dropped.
///
/// # Panics
/// Dereferencing panics in any process but the one that took the lock.
/// A forked child has a copy of every guard its parent held, and a
/// closure that captured one (given to [`Process::new_local`] or
/// [`Scope::process_local`]) carries it into the child, while the parent
/// drops its own copy at the fork and so releases the lock: the child's
/// copy gives no access, or it would write while another process holds
/// the lock. A child borrows the cells safely through a reference taken
/// in the parent (`let cells = &mut *guard;`), which a
/// [`scope`](crate::scope) keeps locked until the child has exited.
///
/// # Leaked guards
/// A guard that is leaked (`Box::leak`, `mem::forget`) keeps the lock, as
/// a leaked `std` guard does, and a reference taken through it may live
/// as long as the value. But the kernel releases a robust lock when the
/// thread holding it ends, and the next locker would then have a second
/// reference to the cells: so a thread that ends, before its process
/// does, with a guard not dropped (once its thread-locals, which may keep
/// guards, are dropped) aborts the process, with a message, rather than
/// let that happen. Not covered: a forked child that has a copy of such a
/// reference (a `&'static mut` carried by a [`Process::new`] closure)
/// and outlives this process (an abort, a kill): once the kernel has
/// released the lock, the child's writes race with the next locker's, as
/// for a [`scope`](crate::scope) whose process dies (see there).
///
/// [`Process::new`]: crate::Process::new
/// [`Process::new_local`]: crate::Process::new_local
/// [`Scope::process_local`]: crate::Scope::process_local
#[must_use = "if unused the lock is released at once"]
pub struct CellGuard<'a, U: ?Sized> {
    /// Released by the guard's `Drop`, which knows its process already.
    _held: ManuallyDrop<LockGuard<'a>>,
    data: *mut U,
    /// The process that took the lock, the only one the guard serves. Not
    /// its pid: a forked descendant may get that pid once the process has
    /// died, with a copy of the guard.
    process: ProcessKey,
    _marker: PhantomData<&'a mut U>,
}

/// The guard of a [`Value<T>`](super::Value).
pub type ValueGuard<'a, T> = CellGuard<'a, T>;
/// The guard of an [`Array<T>`](super::Array).
pub type ArrayGuard<'a, T> = CellGuard<'a, [T]>;

impl<U: ?Sized> CellGuard<'_, U> {
    /// The cells, in the process that took the lock only (see the type's
    /// documentation).
    #[inline]
    fn data(&self) -> *mut U {
        if !self.in_its_process() {
            foreign_guard();
        }
        self.data
    }

    /// Whether the calling process is the one that took the lock.
    #[inline]
    fn in_its_process(&self) -> bool {
        self.process.is_current()
    }

    /// Marks the lock consistent after its previous owner died, once the
    /// caller has repaired the data. A no-op after a normal lock.
    ///
    /// # Errors
    /// Only on an OS failure.
    pub fn make_consistent(guard: &Self) -> Result<()> {
        LockGuard::make_consistent(&guard._held)
    }
}

impl<U: ?Sized> Drop for CellGuard<'_, U> {
    #[inline]
    fn drop(&mut self) {
        // A forked child's copy was counted by its parent's thread, and
        // releases nothing (see `LockGuard`).
        if self.in_its_process() {
            HELD.set(HELD.get().saturating_sub(1));
            self._held.release_in_its_process();
        }
    }
}

thread_local! {
    /// The cell guards this thread holds. No destructor: it is read as
    /// the thread ends, after every thread-local's destructor (one of
    /// which may drop a guard the thread kept there).
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// Whether [`thread_ends`] is called when this thread ends.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

/// Checks, as a thread ends, that it holds no cell guard: one it leaked
/// still holds a robust lock, which the kernel is about to release while
/// references taken through the guard may live on in other threads.
extern "C" fn thread_ends(_: *mut std::ffi::c_void) {
    if HELD.get() != 0 {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "multiproc: a thread ends holding the lock of a Value or Array \
             through a leaked guard; its lock would be released while \
             references to the cells may live on: aborting"
        );
        std::process::abort();
    }
}

impl<U: ?Sized> Deref for CellGuard<'_, U> {
    type Target = U;
    #[inline]
    fn deref(&self) -> &U {
        // SAFETY: the lock is held (by this process: `data` checks), so no
        // other process or thread that goes through the lock touches the
        // cells while this reference lives.
        unsafe { &*self.data() }
    }
}

impl<U: ?Sized> DerefMut for CellGuard<'_, U> {
    #[inline]
    fn deref_mut(&mut self) -> &mut U {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.data() }
    }
}

/// A guard used in a process that does not hold its lock.
#[cold]
#[inline(never)]
fn foreign_guard() -> ! {
    panic!(
        "a Value or Array guard used in a process that did not take its lock \
         (a guard captured by a forked child's closure; the parent released \
         the lock when it dropped its copy)"
    )
}

impl<U: ?Sized + std::fmt::Debug> std::fmt::Debug for CellGuard<'_, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}
