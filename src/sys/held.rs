//! Lock guards held across a fork by the forking thread, from a `prepare`
//! fork handler to the `parent` or `child` one.

use std::cell::UnsafeCell;

/// A slot for guards that a `prepare` fork handler takes and the `parent`
/// or `child` handler of the same fork gives back. A static, not a
/// thread-local: a fork may come from a thread-local value's destructor,
/// after the thread's other thread-locals are gone (reaching one there
/// panics, and a panic in a fork handler aborts).
pub(crate) struct HeldAcrossFork<T>(UnsafeCell<Option<T>>);

// SAFETY: the cell is reached only through `put` and `take`, whose callers
// hold the lock(s) that the guards in it are of: one thread at a time.
// That thread both puts and takes them (in the child, its own copy), so a
// guard never changes threads.
unsafe impl<T> Sync for HeldAcrossFork<T> {}

impl<T> HeldAcrossFork<T> {
    pub(crate) const fn new() -> Self {
        HeldAcrossFork(UnsafeCell::new(None))
    }

    /// Keeps `held` until [`take`](Self::take).
    ///
    /// # Safety
    /// The calling thread holds the lock(s) `held` guards, taken in this
    /// fork's `prepare` handler.
    pub(crate) unsafe fn put(&self, held: T) {
        // SAFETY: the caller holds the locks: no other thread is here.
        unsafe { *self.0.get() = Some(held) };
    }

    /// What [`put`](Self::put) kept in this fork.
    ///
    /// # Safety
    /// Called by the `parent` or `child` handler of the fork whose
    /// `prepare` handler put the guards, on the forking thread (the
    /// crate's handlers run in pairs: both or neither).
    pub(crate) unsafe fn take(&self) -> Option<T> {
        // SAFETY: as for `put`: the caller holds the locks.
        unsafe { (*self.0.get()).take() }
    }
}
