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
//!
//! # What the compiler refuses
//! A guard proves that the thread that took the lock holds it, so it can
//! neither go to another thread (the lock belongs to the thread: its
//! release there would fail, or release another thread's hold),
//! ```compile_fail,E0277
//! let lock = multiproc::Lock::new()?;
//! let guard = lock.lock()?;
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(guard));
//! });
//! # Ok::<(), multiproc::Error>(())
//! ```
//! ```compile_fail,E0277
//! let rlock = multiproc::RLock::new()?;
//! let guard = rlock.lock()?;
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(guard));
//! });
//! # Ok::<(), multiproc::Error>(())
//! ```
//! ```compile_fail,E0277
//! let cond = multiproc::Condition::new()?;
//! let guard = cond.lock()?;
//! std::thread::scope(|s| {
//!     s.spawn(move || guard.notify_all());
//! });
//! # Ok::<(), multiproc::Error>(())
//! ```
//! nor be shared with one (a notify or a wait from another thread would
//! act on a lock that thread does not hold),
//! ```compile_fail,E0277
//! let cond = multiproc::Condition::new()?;
//! let guard = cond.lock()?;
//! std::thread::scope(|s| {
//!     s.spawn(|| guard.notify_all());
//! });
//! # Ok::<(), multiproc::Error>(())
//! ```
//! nor outlive its lock; nor does a permit outlive its semaphore:
//! ```compile_fail,E0505
//! let lock = multiproc::Lock::new()?;
//! let guard = lock.lock()?;
//! drop(lock);
//! drop(guard);
//! # Ok::<(), multiproc::Error>(())
//! ```
//! ```compile_fail,E0505
//! let rlock = multiproc::RLock::new()?;
//! let guard = rlock.lock()?;
//! drop(rlock);
//! drop(guard);
//! # Ok::<(), multiproc::Error>(())
//! ```
//! ```compile_fail,E0505
//! let cond = multiproc::Condition::new()?;
//! let mut guard = cond.lock()?;
//! drop(cond);
//! guard.wait()?;
//! # Ok::<(), multiproc::Error>(())
//! ```
//! ```compile_fail,E0505
//! let sem = multiproc::Semaphore::new(1)?;
//! let permit = sem.permit();
//! drop(sem);
//! drop(permit);
//! # Ok::<(), multiproc::Error>(())
//! ```
//! A barrier's action runs in whichever thread of whichever process
//! arrives last, so it must be `Send` and `Sync`:
//! ```compile_fail,E0277
//! let counter = std::rc::Rc::new(std::cell::Cell::new(0));
//! let barrier = multiproc::Barrier::new(2)?.with_action(move || counter.set(counter.get() + 1));
//! # Ok::<(), multiproc::Error>(())
//! ```

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
