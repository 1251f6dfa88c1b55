//! What the OS allows without the `multiproc` library: the raw primitives
//! that `multiproc bench` and the criterion benches measure it against,
//! behind the same small traits as the library's own primitives, so that
//! both sides of a comparison run the same code path.
//!
//! Each baseline calls the OS (through `libc` or `std`) the way the library
//! does underneath, with nothing around it: the same robust, process-shared
//! pthread mutex, the same `FUTEX_WAIT_BITSET`, the same bounded spin. The
//! memory comes from the library's public [`Segment::anonymous`], so both
//! sides live in the same kind of shared mapping with the same alignment.

use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use anyhow::{Context as _, Result};
use multiproc::conn::Connection;
use multiproc::queue::Queue;
use multiproc::segment::Segment;
use multiproc::sync::{Event, Lock, Semaphore};
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

/// `pthread_*` calls return their error number instead of setting `errno`.
fn check(what: &'static str, rc: libc::c_int) -> Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)).context(what),
    }
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
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before any
        // other use and destroyed after the last; the mutex goes into fresh
        // zeroed memory, 256-aligned, large enough, not yet shared.
        unsafe {
            check(
                "pthread_mutexattr_init",
                libc::pthread_mutexattr_init(attr.as_mut_ptr()),
            )?;
            let a = attr.as_mut_ptr();
            let r = check(
                "pthread_mutexattr_setpshared",
                libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
            )
            .and_then(|()| {
                check(
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
                )
            })
            .and_then(|()| {
                check(
                    "pthread_mutexattr_settype",
                    libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_NORMAL),
                )
            })
            .and_then(|()| {
                check(
                    "pthread_mutex_init",
                    libc::pthread_mutex_init(mem.as_ptr().cast(), a),
                )
            });
            libc::pthread_mutexattr_destroy(a);
            r?;
        }
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
            // SAFETY: in bounds of a fresh, 256-aligned, unshared segment.
            unsafe { data.as_ptr().cast::<f64>().add(i).write(i as f64) };
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
        pid => loop {
            // SAFETY: a null status pointer is allowed.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) } >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        },
    }
}

/// A ping-pong between two processes: one side asks, the other answers.
pub trait BenchPingPong: Sync {
    /// The answering side: waits for one ping and answers it.
    fn answer(&self);
    /// The asking side: one round trip.
    fn ask(&self);
}

/// Two [`Event`]s, one each way.
pub struct EventPair {
    ping: Event,
    pong: Event,
}

impl EventPair {
    /// Two new events, not set.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new() -> Result<Self> {
        Ok(EventPair {
            ping: Event::new()?,
            pong: Event::new()?,
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

/// Runs `future` to completion on this thread, parking it while the future
/// waits: the least an executor can do, so that an async figure is the
/// waiter thread's cost, not a runtime's. (The library drives its own
/// blocking forms the same way.)
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    thread_local! {
        /// This thread's waker, made once.
        static WAKER: Waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    }
    let waker = WAKER.with(Waker::clone);
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Two [`Event`]s awaited with [`wait_async`](Event::wait_async), each side a task on a
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
        let _ = block_on(self.0.ping.wait_async());
        self.0.ping.clear();
        self.0.pong.set();
    }
    fn ask(&self) {
        self.0.ping.set();
        let _ = block_on(self.0.pong.wait_async());
        self.0.pong.clear();
    }
}

/// How many times the library re-checks a futex word before sleeping (its
/// `sync::futex::SPIN`): the spinning ping-pong spins as long.
const SPIN: u32 = 500;

/// Re-checks `word` up to `rounds` times; whether it saw `expect`.
fn spin_until(word: &AtomicU32, expect: u32, rounds: u32) -> bool {
    for _ in 0..rounds {
        if word.load(Ordering::Acquire) == expect {
            return true;
        }
        std::hint::spin_loop();
    }
    word.load(Ordering::Acquire) == expect
}

/// `FUTEX_WAIT_BITSET` with no timeout, as the library sleeps: while
/// `*word == expected`, until woken.
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
}

/// Wakes at most one process sleeping on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// The kernel primitive alone: one futex word in shared memory, a
/// `FUTEX_WAIT` whenever the answer is not there yet and a `FUTEX_WAKE` on
/// every message; optionally the same bounded spin as the library's waits
/// first, which is what the hardware allows when the peer is running.
pub struct RawFutexPingPong {
    mem: Segment,
    /// How many times to re-check the word before sleeping: [`SPIN`], or
    /// none without spinning or on a single CPU (where the peer cannot run
    /// meanwhile), as the library decides.
    spin_rounds: u32,
}

impl RawFutexPingPong {
    /// A new idle word; `spin` re-checks it before each sleep.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(spin: bool) -> Result<Self> {
        Ok(RawFutexPingPong {
            mem: Segment::anonymous(4)?,
            spin_rounds: if spin && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
            {
                SPIN
            } else {
                0
            },
        })
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: 4 zeroed bytes, 256-aligned, alive as long as `self`,
        // only ever accessed atomically.
        unsafe { &*self.mem.as_ptr().cast() }
    }

    fn send_and_await(&self, send: Option<u32>, expect: u32) {
        let word = self.word();
        if let Some(v) = send {
            word.store(v, Ordering::Release);
            futex_wake(word);
        }
        if self.spin_rounds > 0 && spin_until(word, expect, self.spin_rounds) {
            return;
        }
        loop {
            let v = word.load(Ordering::Acquire);
            if v == expect {
                return;
            }
            futex_wait(word, v);
        }
    }
}

const PING: u32 = 1;
const PONG: u32 = 2;

impl BenchPingPong for RawFutexPingPong {
    fn answer(&self) {
        self.send_and_await(None, PING);
        self.word().store(PONG, Ordering::Release);
        futex_wake(self.word());
    }
    fn ask(&self) {
        self.send_and_await(Some(PING), PONG);
    }
}

/// Two `eventfd`s, one each way: a blocking read and a write per message.
pub struct EventFdPingPong {
    ping: OwnedFd,
    pong: OwnedFd,
}

/// A new blocking `eventfd` (counter 0), inherited by forked children.
fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter.
fn eventfd_write(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Blocks until an eventfd's counter is non-zero, and resets it.
fn eventfd_read(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64.
    while unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

impl EventFdPingPong {
    /// Two new eventfds, shared with children forked afterwards.
    ///
    /// # Errors
    /// If `eventfd` fails.
    pub fn new() -> io::Result<Self> {
        Ok(EventFdPingPong {
            ping: eventfd()?,
            pong: eventfd()?,
        })
    }
}

impl BenchPingPong for EventFdPingPong {
    fn answer(&self) {
        eventfd_read(&self.ping);
        eventfd_write(&self.pong);
    }
    fn ask(&self) {
        eventfd_write(&self.ping);
        eventfd_read(&self.pong);
    }
}

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

impl BenchStream for Queue<u64> {
    fn produce(&self, i: u64) {
        let _ = self.put(i);
    }
    fn consume(&self) -> u64 {
        self.get().unwrap_or(u64::MAX)
    }
}

/// A [`Queue`] used through `put_async` and `get_async`, each call a task
/// on a minimal executor ([`block_on`]) that parks its thread while the
/// waiter thread watches the ring.
pub struct AsyncQueue(pub Queue<u64>);

impl BenchStream for AsyncQueue {
    fn produce(&self, i: u64) {
        let _ = block_on(self.0.put_async(i));
    }
    fn consume(&self) -> u64 {
        block_on(self.0.get_async()).unwrap_or(u64::MAX)
    }
}

/// A Unix socket pair carrying one 8-byte write per item: what the kernel
/// does for a message without any framing or batching.
pub struct RawSocketStream {
    tx: UnixStream,
    rx: UnixStream,
}

impl RawSocketStream {
    /// A new socket pair.
    ///
    /// # Errors
    /// If `socketpair` fails.
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = UnixStream::pair()?;
        Ok(RawSocketStream { tx, rx })
    }
}

/// Writes one 8-byte word to a socket.
fn write8(mut socket: &UnixStream, v: u64) {
    let _ = socket.write_all(&v.to_le_bytes());
}

/// Reads one 8-byte word from a socket (`u64::MAX` at end of file).
fn read8(mut socket: &UnixStream) -> u64 {
    let mut b = [0; 8];
    match socket.read_exact(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => u64::MAX,
    }
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
/// [`Connection`] round trips.
pub struct RawSocketPingPong {
    a: UnixStream,
    b: UnixStream,
}

impl RawSocketPingPong {
    /// A new socket pair.
    ///
    /// # Errors
    /// If `socketpair` fails.
    pub fn new() -> io::Result<Self> {
        let (a, b) = UnixStream::pair()?;
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

/// Two [`Connection`]s of a duplex [`Pipe`](fn@multiproc::conn::Pipe).
pub struct PipePingPong {
    a: std::sync::Mutex<Connection>,
    b: std::sync::Mutex<Connection>,
}

impl PipePingPong {
    /// A new duplex pipe.
    ///
    /// # Errors
    /// If the pipe cannot be made.
    pub fn new() -> Result<Self> {
        let (a, b) = multiproc::conn::Pipe(true)?;
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
