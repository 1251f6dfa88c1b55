//! Cross-process synchronisation primitives that live in shared memory.
//!
//! [`Lock`] and [`RLock`] are glibc robust, process-shared mutexes: a process
//! that dies holding one never hangs the others, the next locker is told
//! ([`LockError::OwnerDied`](crate::LockError::OwnerDied)), or, through
//! [`Lock::lock_recovering`], handed the lock
//! ([`RecoverableLockError::OwnerDied`](crate::RecoverableLockError::OwnerDied))
//! to repair the protected data.
//!
//! [`Event`], [`Semaphore`], [`BoundedSemaphore`], [`Condition`] and
//! [`Barrier`] are built on futex words in shared memory, so that the death
//! of a waiter never wedges anyone: the kernel simply forgets a dead
//! sleeper, and no operation waits for a particular peer to respond. Waits
//! spin briefly before sleeping, so a running peer is answered in well under
//! a microsecond, and a wake-up system call is made only when someone may be
//! asleep.

mod barrier;
mod condition;
mod event;
mod futex;
mod lock;
mod mutex;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Permit, Semaphore};

pub(crate) use futex::{spin, wait_for_change, Asleep, RECHECK};
pub(crate) use mutex::RobustMutex;
