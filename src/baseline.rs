//! What the OS allows without this crate: the raw primitives that
//! `multiproc bench` and the criterion benches measure this crate against,
//! behind the same small traits as the crate's own primitives, so that both
//! sides of a comparison run the same code path.
//!
//! Not needed to use the crate; public so that the benchmarks (a separate
//! binary and bench targets) share one implementation.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cell::{RawValue, Value};
use crate::error::Result;
use crate::segment::Segment;
use crate::sync::Lock;
use crate::sys::{self, MutexKind, PthreadMutex};

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

/// glibc's robust, process-shared mutex with nothing around it, and a
/// `u64` that it guards, in anonymous shared memory.
pub struct RawRobustMutex {
    mem: Segment,
}

impl RawRobustMutex {
    /// A new unlocked mutex and a zero counter.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        let mem = Segment::anonymous(std::mem::size_of::<PthreadMutex>() + 8)?;
        // SAFETY: fresh zeroed memory, 256-aligned, large enough, unshared.
        unsafe { sys::mutex_init(mem.as_ptr().cast(), MutexKind::Normal) }
            .map_err(|e| crate::Error::io("pthread_mutex_init", e))?;
        Ok(RawRobustMutex { mem })
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
                .add(std::mem::size_of::<PthreadMutex>())
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

impl BenchMutex for RawRobustMutex {
    fn lock_unlock(&self) {
        self.lock();
        self.unlock();
    }
}

impl BenchCounter for RawRobustMutex {
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

/// `len` `f64`s in anonymous shared memory behind a [`RawRobustMutex`].
pub struct RawLockedArray {
    mutex: RawRobustMutex,
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
            // SAFETY: in bounds of a fresh, 256-aligned, unshared segment.
            unsafe { data.as_ptr().cast::<f64>().add(i).write(i as f64) };
        }
        Ok(RawLockedArray {
            mutex: RawRobustMutex::new()?,
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

impl BenchArray for crate::cell::Array<f64> {
    fn locked_sum(&self) -> f64 {
        self.lock().map_or(f64::NAN, |g| sum(&g))
    }
}

/// One raw `fork` of a child that `_exit`s at once, and its `waitpid`.
///
/// # Errors
/// If `fork` or `waitpid` fails.
pub fn fork_exit_wait() -> io::Result<()> {
    // SAFETY: the child calls only _exit, which is async-signal-safe.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: _exit has no preconditions.
        0 => unsafe { libc::_exit(0) },
        pid => sys::waitpid(pid as u32, true).map(drop),
    }
}

/// A ping-pong between two processes: one side asks, the other answers.
pub trait BenchPingPong: Sync {
    /// The answering side: waits for one ping and answers it.
    fn answer(&self);
    /// The asking side: one round trip.
    fn ask(&self);
}

/// Two [`Event`](crate::sync::Event)s, one each way.
pub struct EventPair {
    ping: crate::sync::Event,
    pong: crate::sync::Event,
}

impl EventPair {
    /// Two new events, not set.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        Ok(EventPair {
            ping: crate::sync::Event::new()?,
            pong: crate::sync::Event::new()?,
        })
    }
}

impl BenchPingPong for EventPair {
    fn answer(&self) {
        self.ping.wait();
        self.ping.clear();
        self.pong.set();
    }
    fn ask(&self) {
        self.ping.set();
        self.pong.wait();
        self.pong.clear();
    }
}

/// Two [`Event`](crate::sync::Event)s awaited with
/// [`wait_async`](crate::sync::Event::wait_async), each side a task on a
/// minimal executor that parks its thread until the waiter thread wakes
/// the task: what an async round trip costs over the blocking one.
pub struct AsyncEventPair(EventPair);

impl AsyncEventPair {
    /// Two new events, not set.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        EventPair::new().map(AsyncEventPair)
    }
}

impl BenchPingPong for AsyncEventPair {
    fn answer(&self) {
        let _ = crate::waiter::block_on(self.0.ping.wait_async());
        self.0.ping.clear();
        self.0.pong.set();
    }
    fn ask(&self) {
        self.0.ping.set();
        let _ = crate::waiter::block_on(self.0.pong.wait_async());
        self.0.pong.clear();
    }
}

/// The kernel primitive alone: one futex word in shared memory, a
/// `FUTEX_WAIT` whenever the answer is not there yet and a `FUTEX_WAKE` on
/// every message; optionally the same bounded spin as this crate's waits
/// first, which is what the hardware allows when the peer is running.
pub struct RawFutexPingPong {
    mem: Segment,
    spin: bool,
}

impl RawFutexPingPong {
    /// A new idle word; `spin` re-checks it before each sleep.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(spin: bool) -> Result<Self> {
        Ok(RawFutexPingPong {
            mem: Segment::anonymous(4)?,
            spin,
        })
    }

    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: 4 zeroed bytes, 256-aligned, alive as long as `self`,
        // only ever accessed atomically.
        unsafe { &*self.mem.as_ptr().cast() }
    }

    fn send_and_await(&self, send: Option<u32>, expect: u32) {
        let word = self.word();
        if let Some(v) = send {
            word.store(v, Ordering::Release);
            sys::futex_wake(word, 1);
        }
        if self.spin && crate::sync::spin(word, |v| v == expect).is_ok() {
            return;
        }
        loop {
            let v = word.load(Ordering::Acquire);
            if v == expect {
                return;
            }
            sys::futex_wait(word, v, sys::Deadline::Never);
        }
    }
}

const PING: u32 = 1;
const PONG: u32 = 2;

impl BenchPingPong for RawFutexPingPong {
    fn answer(&self) {
        self.send_and_await(None, PING);
        self.word().store(PONG, Ordering::Release);
        sys::futex_wake(self.word(), 1);
    }
    fn ask(&self) {
        self.send_and_await(Some(PING), PONG);
    }
}

/// Two `eventfd`s, one each way: a blocking read and a write per message.
pub struct EventFdPingPong {
    ping: std::os::fd::OwnedFd,
    pong: std::os::fd::OwnedFd,
}

impl EventFdPingPong {
    /// Two new eventfds, shared with children forked afterwards.
    ///
    /// # Errors
    /// If `eventfd` fails.
    pub fn new() -> io::Result<Self> {
        Ok(EventFdPingPong {
            ping: sys::eventfd()?,
            pong: sys::eventfd()?,
        })
    }
}

impl BenchPingPong for EventFdPingPong {
    fn answer(&self) {
        sys::eventfd_read(&self.ping);
        sys::eventfd_write(&self.pong);
    }
    fn ask(&self) {
        sys::eventfd_write(&self.ping);
        sys::eventfd_read(&self.pong);
    }
}

/// A semaphore that a benchmark acquires and releases, uncontended.
pub trait BenchSemaphore {
    /// One acquire and one release.
    fn acquire_release(&self);
}

impl BenchSemaphore for crate::sync::Semaphore {
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
            return Err(crate::Error::io("sem_init", io::Error::last_os_error()));
        }
        Ok(PosixSemaphore { mem })
    }
}

impl BenchSemaphore for PosixSemaphore {
    fn acquire_release(&self) {
        // SAFETY: an initialised semaphore that lives as long as `self`.
        unsafe {
            libc::sem_wait(self.mem.as_ptr().cast());
            libc::sem_post(self.mem.as_ptr().cast());
        }
    }
}

/// A stream of small items from one process to another.
pub trait BenchStream: Sync {
    /// Sends item `i` (producer side).
    fn produce(&self, i: u64);
    /// Receives one item (consumer side).
    fn consume(&self) -> u64;
}

impl BenchStream for crate::queue::Queue<u64> {
    fn produce(&self, i: u64) {
        let _ = self.put(i);
    }
    fn consume(&self) -> u64 {
        self.get().unwrap_or(u64::MAX)
    }
}

/// A [`Queue`](crate::queue::Queue) used through `put_async` and
/// `get_async`, each call a task on a minimal executor that parks its
/// thread while the waiter thread watches the ring.
pub struct AsyncQueue(pub crate::queue::Queue<u64>);

impl BenchStream for AsyncQueue {
    fn produce(&self, i: u64) {
        let _ = crate::waiter::block_on(self.0.put_async(i));
    }
    fn consume(&self) -> u64 {
        crate::waiter::block_on(self.0.get_async()).unwrap_or(u64::MAX)
    }
}

/// A Unix socket pair carrying one 8-byte write per item: what the kernel
/// does for a message without any framing or batching.
pub struct RawSocketStream {
    tx: std::os::fd::OwnedFd,
    rx: std::os::fd::OwnedFd,
}

impl RawSocketStream {
    /// A new socket pair.
    ///
    /// # Errors
    /// If `socketpair` fails.
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = sys::socketpair()?;
        Ok(RawSocketStream { tx, rx })
    }
}

/// Writes one 8-byte word to a socket.
fn write8(fd: &std::os::fd::OwnedFd, v: u64) {
    let _ = sys::write_all_vectored(fd, true, &[&v.to_le_bytes()]);
}

/// Reads one 8-byte word from a socket (`u64::MAX` at end of file).
fn read8(fd: &std::os::fd::OwnedFd) -> u64 {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 8];
    let mut got = 0;
    while got < 8 {
        match sys::read(fd, &mut b[got..]) {
            Ok(0) | Err(_) => return u64::MAX,
            Ok(n) => got += n,
        }
    }
    // SAFETY: all 8 bytes were initialised by read(2).
    u64::from_le_bytes(b.map(|x| unsafe { x.assume_init() }))
}

impl BenchStream for RawSocketStream {
    fn produce(&self, i: u64) {
        write8(&self.tx, i);
    }
    fn consume(&self) -> u64 {
        read8(&self.rx)
    }
}

/// A raw Unix socket pair bouncing an 8-byte message: the baseline for
/// [`Connection`](crate::conn::Connection) round trips.
pub struct RawSocketPingPong {
    a: std::os::fd::OwnedFd,
    b: std::os::fd::OwnedFd,
}

impl RawSocketPingPong {
    /// A new socket pair.
    ///
    /// # Errors
    /// If `socketpair` fails.
    pub fn new() -> io::Result<Self> {
        let (a, b) = sys::socketpair()?;
        Ok(RawSocketPingPong { a, b })
    }
}

impl BenchPingPong for RawSocketPingPong {
    fn answer(&self) {
        let v = read8(&self.b);
        write8(&self.b, v);
    }
    fn ask(&self) {
        write8(&self.a, 7);
        read8(&self.a);
    }
}

/// Two [`Connection`](crate::conn::Connection)s of a duplex [`Pipe`](fn@crate::conn::Pipe).
pub struct PipePingPong {
    a: std::sync::Mutex<crate::conn::Connection>,
    b: std::sync::Mutex<crate::conn::Connection>,
}

impl PipePingPong {
    /// A new duplex pipe.
    ///
    /// # Errors
    /// If the pipe cannot be made.
    pub fn new() -> Result<Self> {
        let (a, b) = crate::conn::Pipe(true)?;
        Ok(PipePingPong {
            a: std::sync::Mutex::new(a),
            b: std::sync::Mutex::new(b),
        })
    }
}

impl BenchPingPong for PipePingPong {
    fn answer(&self) {
        let mut b = self
            .b
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(v) = b.recv::<u64>() {
            let _ = b.send(&v);
        }
    }
    fn ask(&self) {
        let mut a = self
            .a
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = a.send(&7u64);
        let _ = a.recv::<u64>();
    }
}
