//! [`Lazy`]: a static made on first use without a lock, safe against a
//! fork from another thread.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicPtr, Ordering};

/// As `std::sync::LazyLock`, without its lock. A `LazyLock` that another
/// thread was making when the process forked stays "being made" in the
/// child for ever, and every use of it there waits. Here each thread that
/// finds no value makes one and all but the first to publish drop theirs,
/// so `make` must be cheap and do nothing else.
pub(crate) struct Lazy<T> {
    /// The value (a `Box` leaked into the pointer), null until made.
    value: AtomicPtr<T>,
    make: fn() -> T,
    /// Neither `Send` nor `Sync` by itself (see the impls below).
    _owns: PhantomData<*mut T>,
}

// SAFETY: the value is made in whichever thread first needs it, shared by
// reference with every thread, and dropped by the owner: `T: Send + Sync`.
unsafe impl<T: Send + Sync> Sync for Lazy<T> {}
// SAFETY: moving the `Lazy` moves the value with it.
unsafe impl<T: Send> Send for Lazy<T> {}

impl<T> Lazy<T> {
    /// A value that `make` makes on first use.
    pub(crate) const fn new(make: fn() -> T) -> Lazy<T> {
        Lazy {
            value: AtomicPtr::new(std::ptr::null_mut()),
            make,
            _owns: PhantomData,
        }
    }
}

impl<T> Deref for Lazy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        let seen = self.value.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` below
        // and is freed only when `self` is dropped.
        if let Some(value) = unsafe { seen.as_ref() } {
            return value;
        }
        let mine = Box::into_raw(Box::new((self.make)()));
        match self.value.compare_exchange(
            std::ptr::null_mut(),
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: just published, and freed only when `self` is dropped.
            Ok(_) => unsafe { &*mine },
            Err(theirs) => {
                // SAFETY: `mine` was never published: this is its only owner.
                drop(unsafe { Box::from_raw(mine) });
                // SAFETY: as for `seen`.
                unsafe { &*theirs }
            }
        }
    }
}

impl<T> Drop for Lazy<T> {
    fn drop(&mut self) {
        let value = *self.value.get_mut();
        if !value.is_null() {
            // SAFETY: published by `deref` from `Box::into_raw`; no
            // reference to it outlives `self`.
            drop(unsafe { Box::from_raw(value) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static MADE: AtomicU32 = AtomicU32::new(0);
    static VALUE: Lazy<Vec<u32>> = Lazy::new(|| {
        MADE.fetch_add(1, Ordering::Relaxed);
        vec![1, 2, 3]
    });

    #[test]
    fn every_thread_sees_the_one_value_published() {
        let seen: Vec<usize> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| s.spawn(|| VALUE.as_ptr() as usize))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(*VALUE, [1, 2, 3]);
        assert!((1..=8).contains(&MADE.load(Ordering::Relaxed)));
    }
}
