//! Uncontended semaphores: glibc's process-shared `sem_t` beside [`Semaphore`].

use std::io;

use anyhow::{Context as _, Result};
use multiproc::segment::Segment;
use multiproc::sync::Semaphore;

/// A semaphore that a benchmark acquires and releases, uncontended.
pub trait BenchSemaphore {
    /// One acquire and one release.
    fn acquire_release(&self);
}

impl BenchSemaphore for Semaphore {
    fn acquire_release(&self) {
        self.acquire();
        let _ = self.release();
    }
}

/// glibc's process-shared POSIX semaphore (`sem_init(.., 1, ..)`).
pub struct PosixSemaphore {
    mem: Segment,
}

impl PosixSemaphore {
    /// A new semaphore holding `value`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated or `sem_init` fails.
    pub fn new(value: u32) -> Result<Self> {
        let mem = Segment::anonymous(std::mem::size_of::<libc::sem_t>())?;
        // SAFETY: fresh zeroed memory, aligned, large enough for a sem_t.
        if unsafe { libc::sem_init(mem.as_ptr().cast(), 1, value) } != 0 {
            return Err(io::Error::last_os_error()).context("sem_init");
        }
        Ok(PosixSemaphore { mem })
    }
}

impl BenchSemaphore for PosixSemaphore {
    fn acquire_release(&self) {
        // SAFETY: an initialised semaphore that lives as long as `self`.
        unsafe { libc::sem_wait(self.mem.as_ptr().cast()) };
        // SAFETY: as above.
        unsafe { libc::sem_post(self.mem.as_ptr().cast()) };
    }
}
