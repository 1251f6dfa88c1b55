//! Locks, counters and locked arrays: glibc's robust pthread mutex and an
//! atomic in shared memory beside [`Lock`], [`Value`], [`RawValue`] and
//! [`Array`].

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use multiproc::segment::Segment;
use multiproc::sync::Lock;
use multiproc::{Array, RawValue, Value};

/// A mutex that a benchmark locks and unlocks.
pub trait BenchMutex {
    /// One uncontended lock and unlock.
    fn lock_unlock(&self);
}

/// A shared counter that a benchmark increments from several processes.
pub trait BenchCounter {
    /// Adds one.
    fn incr(&self);
    /// The current count.
    fn count(&self) -> u64;
}

/// glibc's robust, process-shared mutex with nothing around it, and a `u64`
/// that it guards, in anonymous shared memory: the OS limit for [`Lock`].
/// Of the default (`PTHREAD_MUTEX_NORMAL`) type, the cheapest; [`Lock`]
/// uses the error-checking type so that unlocking a lock one does not
/// hold is an error.
pub struct RobustPthreadMutex {
    mem: Segment,
}

impl RobustPthreadMutex {
    /// A new unlocked mutex and a zero counter.
    ///
    /// # Errors
    /// If shared memory cannot be allocated or the mutex initialised.
    pub fn new() -> Result<Self> {
        let size = std::mem::size_of::<libc::pthread_mutex_t>();
        let mem = Segment::anonymous(size + 8)?;
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let a = attr.as_mut_ptr();
        // SAFETY: `a` points to writable storage for an attribute object,
        // which this call initialises.
        let r = unsafe { libc::pthread_mutexattr_init(a) };
        check("pthread_mutexattr_init", r)?;
        // Every call in here uses `a` between its init above and its destroy below.
        let r = (|| {
            // SAFETY: `a` is an initialised attribute object (see above).
            let r = unsafe { libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED) };
            check("pthread_mutexattr_setpshared", r)?;
            // SAFETY: as above.
            let r = unsafe { libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST) };
            check("pthread_mutexattr_setrobust", r)?;
            // SAFETY: as above.
            let r = unsafe { libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_NORMAL) };
            check("pthread_mutexattr_settype", r)?;
            // SAFETY: the mutex goes into fresh zeroed memory, 256-aligned,
            // large enough, not yet shared; `a` is initialised.
            let r = unsafe { libc::pthread_mutex_init(mem.as_ptr().cast(), a) };
            check("pthread_mutex_init", r)
        })();
        // SAFETY: `a` was initialised above and is not used after this; the
        // mutex initialised from it does not refer to it.
        unsafe { libc::pthread_mutexattr_destroy(a) };
        r?;
        Ok(RobustPthreadMutex { mem })
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.mem.as_ptr().cast()
    }

    fn counter(&self) -> *mut u64 {
        // SAFETY: the segment holds the mutex and then 8 bytes; the offset
        // (the mutex size, 40) keeps the counter 8-aligned.
        unsafe {
            self.mem
                .as_ptr()
                .add(std::mem::size_of::<libc::pthread_mutex_t>())
                .cast()
        }
    }

    fn lock(&self) {
        // SAFETY: an initialised mutex that lives as long as `self`.
        let rc = unsafe { libc::pthread_mutex_lock(self.mutex()) };
        debug_assert_eq!(rc, 0, "{}", io::Error::from_raw_os_error(rc));
    }

    fn unlock(&self) {
        // SAFETY: as for `lock`; the calling thread holds it.
        unsafe { libc::pthread_mutex_unlock(self.mutex()) };
    }
}

/// `pthread_*` calls return their error number instead of setting `errno`.
fn check(what: &'static str, rc: libc::c_int) -> Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)).context(what),
    }
}

impl BenchMutex for RobustPthreadMutex {
    fn lock_unlock(&self) {
        self.lock();
        self.unlock();
    }
}

impl BenchCounter for RobustPthreadMutex {
    fn incr(&self) {
        self.lock();
        // SAFETY: the mutex is held; the counter is only touched under it.
        unsafe { *self.counter() += 1 };
        self.unlock();
    }
    fn count(&self) -> u64 {
        self.lock();
        // SAFETY: as for `incr`.
        let n = unsafe { *self.counter() };
        self.unlock();
        n
    }
}

/// An `AtomicU64` in anonymous shared memory.
pub struct RawAtomic {
    mem: Segment,
}

impl RawAtomic {
    /// A new zero counter.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        Ok(RawAtomic {
            mem: Segment::anonymous(8)?,
        })
    }

    fn atomic(&self) -> &AtomicU64 {
        // SAFETY: 8 zeroed bytes, 256-aligned, alive as long as `self`, only
        // ever accessed atomically.
        unsafe { &*self.mem.as_ptr().cast::<AtomicU64>() }
    }
}

impl BenchCounter for RawAtomic {
    fn incr(&self) {
        self.atomic().fetch_add(1, Ordering::Relaxed);
    }
    fn count(&self) -> u64 {
        self.atomic().load(Ordering::Relaxed)
    }
}

impl BenchMutex for Lock {
    fn lock_unlock(&self) {
        drop(self.lock());
    }
}

impl BenchCounter for Value<u64> {
    fn incr(&self) {
        if let Ok(mut g) = self.lock() {
            *g += 1;
        }
    }
    fn count(&self) -> u64 {
        self.get().unwrap_or(0)
    }
}

impl BenchCounter for RawValue<u64> {
    fn incr(&self) {
        self.atomic().fetch_add(1, Ordering::Relaxed);
    }
    fn count(&self) -> u64 {
        self.atomic().load(Ordering::Relaxed)
    }
}

/// An array that a benchmark sums under its lock.
pub trait BenchArray {
    /// Locks, sums every element, unlocks.
    fn locked_sum(&self) -> f64;
}

/// `len` `f64`s in anonymous shared memory behind a [`RobustPthreadMutex`].
pub struct RawLockedArray {
    mutex: RobustPthreadMutex,
    data: Segment,
    len: usize,
}

impl RawLockedArray {
    /// `len` elements, element `i` holding `i`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(len: usize) -> Result<Self> {
        let data = Segment::anonymous(len * 8)?;
        for i in 0..len {
            // SAFETY: element `i < len` is in bounds of the `len * 8`-byte
            // segment.
            let at = unsafe { data.as_ptr().cast::<f64>().add(i) };
            // SAFETY: an 8-aligned (the segment is 256-aligned) element of a
            // fresh segment that nothing else reaches yet.
            unsafe { at.write(i as f64) };
        }
        Ok(RawLockedArray {
            mutex: RobustPthreadMutex::new()?,
            data,
            len,
        })
    }
}

/// The summing loop both sides run.
fn sum(xs: &[f64]) -> f64 {
    xs.iter().sum()
}

impl BenchArray for RawLockedArray {
    fn locked_sum(&self) -> f64 {
        self.mutex.lock();
        // SAFETY: `len` initialised f64s, only written under the mutex (held).
        let s =
            sum(unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<f64>(), self.len) });
        self.mutex.unlock();
        s
    }
}

impl BenchArray for Array<f64> {
    fn locked_sum(&self) -> f64 {
        self.lock().map_or(f64::NAN, |g| sum(&g))
    }
}
