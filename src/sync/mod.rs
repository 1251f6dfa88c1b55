//! Cross-process synchronisation primitives that live in shared memory.
//!
//! [`Lock`] and [`RLock`] are glibc robust, process-shared mutexes: a process
//! that dies holding one never hangs the others, the next locker is told
//! ([`LockError::OwnerDied`](crate::LockError::OwnerDied)) and can repair the
//! protected data.

mod lock;
mod raw;
mod rlock;

pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};

pub(crate) use raw::RawLock;
