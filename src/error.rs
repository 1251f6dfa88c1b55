//! The crate's error types.

use std::fmt;
use std::io;

use crate::segment::ObjectKind;

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `multiproc`.
///
/// Lock operations return [`LockError`] (or, from the `lock_recovering`
/// calls, [`RecoverableLockError`]); both convert into this type with `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A segment name that cannot be used.
    #[error("invalid shared-memory name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `create` found a segment of that name.
    #[error("shared-memory segment {0:?} already exists")]
    AlreadyExists(String),
    /// `open` found no segment of that name.
    #[error("shared-memory segment {0:?} does not exist")]
    NotFound(String),
    /// The shared-memory filesystem (its space or its inodes), a memory
    /// limit, the file-size limit or the address space has no room for the
    /// segment (when it is made, published, reserved or mapped).
    #[error("no room for a {size}-byte shared-memory segment (is /dev/shm full, or memory or address space used up?): {source}")]
    NoSpace {
        /// Bytes requested.
        size: usize,
        /// The OS error: `ENOSPC`, `EFBIG` or `ENOMEM`, from making or
        /// publishing the file, reserving its space, or `mmap`; `EFBIG`
        /// also for a segment past `RLIMIT_FSIZE`.
        #[source]
        source: io::Error,
    },
    /// The segment is not one of this crate's, or its header is damaged.
    #[error("segment {name:?} is not a valid multiproc segment: {what}")]
    Corrupt {
        /// The segment's name (empty for bytes given directly).
        name: String,
        /// What is wrong with it.
        what: String,
    },
    /// The segment is shorter than its header says.
    #[error("segment {name:?} is truncated: {size} bytes, needs {needed}")]
    Truncated {
        /// The segment's name.
        name: String,
        /// Its actual size.
        size: u64,
        /// The size it needs.
        needed: u64,
    },
    /// The segment was made by an incompatible version of this crate.
    #[error("segment {name:?} has layout version {found}; this build reads version {expected}")]
    VersionMismatch {
        /// The segment's name.
        name: String,
        /// The version in the segment.
        found: u32,
        /// The version this build writes.
        expected: u32,
    },
    /// The segment holds another kind of object (say, an `Array` opened as a `Lock`).
    #[error("segment {name:?} holds a {found}, not a {expected}")]
    KindMismatch {
        /// The segment's name.
        name: String,
        /// What it holds.
        found: ObjectKind,
        /// What was asked for.
        expected: ObjectKind,
    },
    /// The segment's element type differs from the one asked for.
    #[error(
        "segment {name:?} holds elements of type {found} ({found_size} bytes, align {found_align}), \
         not {expected} ({expected_size} bytes, align {expected_align})"
    )]
    TypeMismatch {
        /// The segment's name.
        name: String,
        /// The element type it was created with.
        found: String,
        /// Its size in bytes.
        found_size: u32,
        /// Its alignment.
        found_align: u32,
        /// The element type asked for.
        expected: String,
        /// Its size in bytes.
        expected_size: u32,
        /// Its alignment.
        expected_align: u32,
    },
    /// The segment's creator did not finish initialising it.
    #[error("segment {name:?} was never fully initialised by its creator (pid {creator_pid}, {})",
        if *.creator_alive { "still running" } else { "dead" })]
    NotInitialised {
        /// The segment's name.
        name: String,
        /// The pid recorded by its creator.
        creator_pid: u32,
        /// Whether that process still exists.
        creator_alive: bool,
    },
    /// A lock's previous owner died holding it; see [`LockError::OwnerDied`] to recover.
    #[error("the previous owner of the lock died while holding it")]
    OwnerDied,
    /// A lock's previous owner died and nobody marked it consistent.
    #[error(
        "the lock is not recoverable: an owner died holding it and nobody called make_consistent"
    )]
    NotRecoverable,
    /// A timed operation ran out of time.
    #[error("timed out")]
    Timeout,
    /// A non-blocking operation could not proceed at once.
    #[error("the operation would block")]
    WouldBlock,
    /// The calling thread already holds this (non-reentrant) lock.
    #[error("deadlock: the calling thread already holds this lock")]
    Deadlock,
    /// The calling thread tried to release a lock it does not hold.
    #[error("the calling thread does not hold this lock")]
    NotOwner,
    /// An index or range outside an array.
    #[error("index {index} out of range for length {len}")]
    OutOfBounds {
        /// The first offending index.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A `BoundedSemaphore` released more times than it was acquired.
    #[error("semaphore released too many times")]
    TooManyReleases,
    /// A `Condition` already has as many processes waiting as it has room
    /// for.
    #[error("{limit} processes already wait on this condition")]
    TooManyWaiters {
        /// Waiters a condition holds at once.
        limit: usize,
    },
    /// A waiting party of a `Barrier` saw it broken (by a timeout, an
    /// `abort`, a failed action or a dead party); `reset` repairs it.
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// An argument outside what the operation accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The peer closed the connection (end of file), possibly mid-message.
    #[error("connection closed by the peer")]
    ConnectionClosed,
    /// A message larger than the connection's limit (checked before any
    /// memory is allocated for it).
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// `recv_bytes_into` got a message longer than the buffer; here it is.
    #[error("buffer too short for a message of {} bytes", .0.len())]
    BufferTooShort(Vec<u8>),
    /// The peer failed the authkey challenge, or refused ours.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// A value could not be encoded.
    #[error("cannot serialize: {0}")]
    Serialize(String),
    /// Bytes could not be decoded as the expected type.
    #[error("cannot deserialize: {0}")]
    Deserialize(String),
    /// `try_get` found the queue empty.
    #[error("the queue is empty")]
    Empty,
    /// The queue was closed (and, for a get, drained).
    #[error("the queue is closed")]
    Closed,
    /// `task_done` called more times than items were put.
    #[error("task_done() called too many times")]
    TooManyTaskDone,
    /// A pool task panicked; the panic message.
    #[error("the task failed: {0}")]
    TaskFailed(String),
    /// The pool worker running the task died (exit code as in Python:
    /// −N for signal N); the pool replaced it.
    #[error("the pool worker running the task died (exit code {exitcode})")]
    WorkerDied {
        /// The worker's exit code.
        exitcode: i32,
    },
    /// The pool was closed: it accepts no new tasks.
    #[error("the pool is closed")]
    PoolClosed,
    /// The pool was terminated before the task finished.
    #[error("the pool was terminated")]
    PoolTerminated,
    /// The manager raised an error for an operation, as Python's would
    /// (`KeyError`, `IndexError`, `ValueError`, `TypeError`).
    #[error("{kind}: {message}")]
    Remote {
        /// The Python exception's name.
        kind: String,
        /// What it says.
        message: String,
    },
    /// The manager server shut down or is unreachable.
    #[error("the manager is gone: {0}")]
    ManagerGone(String),
    /// The connection to a Redis-backed manager failed after the request
    /// was sent: the operation may or may not have been done. The next
    /// call connects again.
    #[error("the outcome is unknown: {0}")]
    Ambiguous(String),
    /// A pool operation in the wrong state or process (e.g. `join` before
    /// `close`, as Python's `ValueError("Pool is still running")`).
    #[error("pool: {0}")]
    PoolState(&'static str),
    /// A process operation in the wrong state (e.g. `join` before `start`).
    #[error("process {name:?}: {what}")]
    ProcessState {
        /// The process's name.
        name: String,
        /// What was wrong.
        what: &'static str,
    },
}

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }
}

/// Why a lock could not be taken: the error of the common lock calls
/// ([`Lock::lock`](crate::Lock::lock), `try_lock`, `lock_timeout`, and the
/// same on [`RLock`](crate::RLock), [`Condition`](crate::Condition),
/// [`Value`](crate::Value) and [`Array`](crate::Array)).
///
/// It holds no guard, so it is `Send + Sync + 'static` and goes through `?`
/// into this crate's [`Error`], a `Box<dyn Error + Send + Sync>` or an
/// `anyhow::Error`. When a lock's owner died, these calls report
/// [`OwnerDied`](LockError::OwnerDied) after releasing the lock unrepaired,
/// which makes it [`NotRecoverable`](LockError::NotRecoverable) for
/// everyone; to repair instead, take the lock with the type's
/// `lock_recovering` call, whose [`RecoverableLockError`] hands over the
/// guard.
///
/// # Example
/// ```
/// use multiproc::{Lock, Value};
///
/// fn boxed(lock: &Lock) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let _guard = lock.lock()?;
///     Ok(())
/// }
///
/// fn with_anyhow(value: &Value<u64>) -> anyhow::Result<u64> {
///     let mut guard = value.lock()?;
///     *guard += 1;
///     Ok(*guard)
/// }
///
/// fn crate_error(lock: &Lock) -> multiproc::Result<()> {
///     let _guard = lock.lock()?;
///     Ok(())
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let lock = Lock::new()?;
///     boxed(&lock)?;
///     crate_error(&lock)?;
///     assert_eq!(with_anyhow(&Value::new(1u64)?)?, 2);
///     Ok(())
/// }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The previous owner died holding the lock. The call took it and
    /// released it again unrepaired, so it is now not recoverable (a
    /// `lock_recovering` call hands over the guard instead).
    #[error("the previous owner of the lock died while holding it")]
    OwnerDied,
    /// An owner died earlier and nobody made the lock consistent.
    #[error(
        "the lock is not recoverable: an owner died holding it and nobody called make_consistent"
    )]
    NotRecoverable,
    /// `try_lock` found the lock held.
    #[error("the operation would block")]
    WouldBlock,
    /// `lock_timeout` ran out of time.
    #[error("timed out")]
    Timeout,
    /// The calling thread already holds this lock.
    #[error("deadlock: the calling thread already holds this lock")]
    Deadlock,
    /// An unexpected OS error (for instance memory that is not a valid lock).
    #[error("lock failed: {0}")]
    Os(#[source] io::Error),
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Self {
        match e {
            LockError::OwnerDied => Error::OwnerDied,
            LockError::NotRecoverable => Error::NotRecoverable,
            LockError::WouldBlock => Error::WouldBlock,
            LockError::Timeout => Error::Timeout,
            LockError::Deadlock => Error::Deadlock,
            LockError::Os(e) => Error::io("lock", e),
        }
    }
}

/// The result of a common lock call: a guard `G` (or a value computed
/// under it), or a [`LockError`].
pub type LockResult<G> = std::result::Result<G, LockError>;

/// Why a lock could not be taken cleanly, from a `lock_recovering` call
/// ([`Lock::lock_recovering`](crate::Lock::lock_recovering) and the same
/// on [`RLock`](crate::RLock), [`Condition`](crate::Condition),
/// [`Value`](crate::Value) and [`Array`](crate::Array)).
///
/// `G` is the guard type, handed back in
/// [`OwnerDied`](RecoverableLockError::OwnerDied) because the caller then
/// holds the lock and can repair what it protects. The other variants are
/// those of [`LockError`]; `?` or `From` turns this error into a
/// [`LockError`] or an [`Error`], dropping the guard (which leaves the lock
/// not recoverable).
///
/// # Example
/// ```
/// use multiproc::{RecoverableLockError, Value};
///
/// let balance = Value::new(100i64)?;
/// let mut guard = match balance.lock_recovering() {
///     Ok(guard) => guard,
///     Err(RecoverableLockError::OwnerDied(mut guard)) => {
///         *guard = 100; // repair from what is known to be right
///         multiproc::cell::ValueGuard::make_consistent(&guard)?;
///         guard
///     }
///     Err(e) => return Err(e.into()),
/// };
/// *guard -= 1;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A guard belongs to the thread that locked and borrows its lock, so this
/// error (unlike [`LockError`]) cannot go to another thread, nor into a
/// `Box<dyn Error + Send + Sync>`; convert it first.
/// ```compile_fail,E0277
/// fn must_be_send<T: Send>(_: T) {}
/// let lock = multiproc::Lock::new().unwrap();
/// must_be_send(lock.lock_recovering().err());
/// ```
/// ```compile_fail,E0277
/// fn f(lock: &multiproc::Lock) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let _guard = lock.lock_recovering()?;
///     Ok(())
/// }
/// ```
/// ```
/// fn must_be_send<T: Send>(_: T) {}
/// let lock = multiproc::Lock::new().unwrap();
/// must_be_send(lock.lock().err());
/// must_be_send(lock.lock_recovering().map_err(multiproc::LockError::from).err());
///
/// fn f(lock: &multiproc::Lock) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let _guard = lock.lock_recovering().map_err(multiproc::LockError::from)?;
///     Ok(())
/// }
/// f(&lock).unwrap();
/// ```
#[must_use]
pub enum RecoverableLockError<G> {
    /// The previous owner died holding the lock. The caller holds it now,
    /// through this guard: repair the protected data, then call the guard's
    /// `make_consistent`. Dropping the guard without doing so makes the lock
    /// permanently [`NotRecoverable`](RecoverableLockError::NotRecoverable)
    /// for everyone.
    OwnerDied(G),
    /// An owner died earlier and nobody made the lock consistent.
    NotRecoverable,
    /// The lock was held (a non-blocking attempt).
    WouldBlock,
    /// `lock_recovering_timeout` ran out of time.
    Timeout,
    /// The calling thread already holds this lock.
    Deadlock,
    /// An unexpected OS error (for instance memory that is not a valid lock).
    Os(io::Error),
}

impl<G> RecoverableLockError<G> {
    /// Applies `f` to the guard of an
    /// [`OwnerDied`](RecoverableLockError::OwnerDied) error.
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> RecoverableLockError<H> {
        match self {
            RecoverableLockError::OwnerDied(g) => RecoverableLockError::OwnerDied(f(g)),
            RecoverableLockError::NotRecoverable => RecoverableLockError::NotRecoverable,
            RecoverableLockError::WouldBlock => RecoverableLockError::WouldBlock,
            RecoverableLockError::Timeout => RecoverableLockError::Timeout,
            RecoverableLockError::Deadlock => RecoverableLockError::Deadlock,
            RecoverableLockError::Os(e) => RecoverableLockError::Os(e),
        }
    }

    /// Whether this is [`OwnerDied`](RecoverableLockError::OwnerDied).
    pub fn is_owner_died(&self) -> bool {
        matches!(self, RecoverableLockError::OwnerDied(_))
    }
}

impl<G> fmt::Debug for RecoverableLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoverableLockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            RecoverableLockError::NotRecoverable => f.write_str("NotRecoverable"),
            RecoverableLockError::WouldBlock => f.write_str("WouldBlock"),
            RecoverableLockError::Timeout => f.write_str("Timeout"),
            RecoverableLockError::Deadlock => f.write_str("Deadlock"),
            RecoverableLockError::Os(e) => f.debug_tuple("Os").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for RecoverableLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The same words as the matching `LockError` variants.
        match self {
            RecoverableLockError::OwnerDied(_) => LockError::OwnerDied.fmt(f),
            RecoverableLockError::NotRecoverable => LockError::NotRecoverable.fmt(f),
            RecoverableLockError::WouldBlock => LockError::WouldBlock.fmt(f),
            RecoverableLockError::Timeout => LockError::Timeout.fmt(f),
            RecoverableLockError::Deadlock => LockError::Deadlock.fmt(f),
            RecoverableLockError::Os(e) => write!(f, "lock failed: {e}"),
        }
    }
}

impl<G> std::error::Error for RecoverableLockError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecoverableLockError::Os(e) => Some(e),
            _ => None,
        }
    }
}

/// Converting drops the guard of an `OwnerDied` error, which releases the
/// lock unrepaired: it becomes not recoverable.
impl<G> From<RecoverableLockError<G>> for LockError {
    fn from(e: RecoverableLockError<G>) -> Self {
        match e {
            RecoverableLockError::OwnerDied(_) => LockError::OwnerDied,
            RecoverableLockError::NotRecoverable => LockError::NotRecoverable,
            RecoverableLockError::WouldBlock => LockError::WouldBlock,
            RecoverableLockError::Timeout => LockError::Timeout,
            RecoverableLockError::Deadlock => LockError::Deadlock,
            RecoverableLockError::Os(e) => LockError::Os(e),
        }
    }
}

/// Converting drops the guard of an `OwnerDied` error, which releases the
/// lock unrepaired: it becomes not recoverable.
impl<G> From<RecoverableLockError<G>> for Error {
    fn from(e: RecoverableLockError<G>) -> Self {
        LockError::from(e).into()
    }
}

/// The result of a `lock_recovering` call: a guard `G` (or a value `T`
/// computed under it), or a [`RecoverableLockError`] that hands over the
/// guard if the previous owner died.
pub type RecoverableLockResult<T, G = T> = std::result::Result<T, RecoverableLockError<G>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The common lock error travels: across threads and into boxed errors.
    #[test]
    fn lock_error_is_send_sync_static() {
        fn travels<E: std::error::Error + Send + Sync + 'static>() {}
        travels::<LockError>();
        let boxed: Box<dyn std::error::Error + Send + Sync> = LockError::Timeout.into();
        assert_eq!(boxed.to_string(), Error::Timeout.to_string());
    }

    /// Both errors convert into `Error` with the same meaning.
    #[test]
    fn conversions_keep_their_meaning() {
        assert!(matches!(
            Error::from(LockError::OwnerDied),
            Error::OwnerDied
        ));
        assert!(matches!(
            Error::from(RecoverableLockError::OwnerDied(())),
            Error::OwnerDied
        ));
        assert!(matches!(
            LockError::from(RecoverableLockError::<()>::NotRecoverable),
            LockError::NotRecoverable
        ));
        assert!(matches!(
            Error::from(LockError::Os(io::Error::other("bad lock"))),
            Error::Io { .. }
        ));
        assert_eq!(
            RecoverableLockError::OwnerDied(()).to_string(),
            Error::OwnerDied.to_string()
        );
        assert_eq!(LockError::Deadlock.to_string(), Error::Deadlock.to_string());
    }
}
