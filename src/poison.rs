//! The crate's process-local `std` locks, taken with poisoning ignored.
//!
//! Each of these locks guards bookkeeping (registries, a connection slot,
//! a result) that is whole between statements: no holder leaves it half
//! changed across a call that can panic. A panic elsewhere while one was
//! held (a user's callback, a waker) says nothing about the data, and
//! refusing every later caller would turn one panic into a broken process.

use std::sync::RwLockWriteGuard;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

/// Locks `m`.
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `l` for reading.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `l` for writing.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// The data of `m`, through exclusive access (no locking).
pub(crate) fn get_mut<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv`, at most `timeout` if given.
pub(crate) fn wait<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    timeout: Option<Duration>,
) -> MutexGuard<'a, T> {
    match timeout {
        None => cv.wait(g).unwrap_or_else(PoisonError::into_inner),
        Some(t) => {
            cv.wait_timeout(g, t)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        }
    }
}
