//! Round trips between two processes: [`Event`]s (blocking and awaited),
//! a bare futex word, eventfds, a Unix socket pair and a [`Pipe`](fn@multiproc::conn::Pipe).

use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};

use anyhow::Result;
use multiproc::conn::Connection;
use multiproc::segment::Segment;
use multiproc::sync::Event;

use super::stream::{read8, write8};

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

/// Re-checks `word` up to `rounds` times; whether it saw message `expect`
/// (whether or not the peer has marked it `SLEEPING` meanwhile).
fn spin_until(word: &AtomicU32, expect: u32, rounds: u32) -> bool {
    for _ in 0..rounds {
        if word.load(Ordering::Acquire) & !SLEEPING == expect {
            return true;
        }
        std::hint::spin_loop();
    }
    word.load(Ordering::Acquire) & !SLEEPING == expect
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
/// `FUTEX_WAIT` whenever the answer is not there yet (the waiter first
/// sets the word's sleeping bit) and a `FUTEX_WAKE` on a message only when
/// the word says its peer sleeps; optionally the same bounded spin as the
/// library's waits first, which is what the hardware allows when the peer
/// is running.
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

    /// Puts message `v` in the word, and wakes the peer if it sleeps.
    fn send(&self, v: u32) {
        let word = self.word();
        if word.swap(v, Ordering::AcqRel) & SLEEPING != 0 {
            futex_wake(word);
        }
    }

    /// Waits until the word holds message `expect`.
    fn await_message(&self, expect: u32) {
        let word = self.word();
        if self.spin_rounds > 0 && spin_until(word, expect, self.spin_rounds) {
            return;
        }
        loop {
            let v = word.load(Ordering::Acquire);
            // The message, even if the peer, waiting for the answer to
            // it, has marked it since.
            if v & !SLEEPING == expect {
                return;
            }
            // Say so before sleeping: the peer's next message wakes us.
            if v & SLEEPING != 0
                || word
                    .compare_exchange(v, v | SLEEPING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                futex_wait(word, v | SLEEPING);
            }
        }
    }
}

const PING: u32 = 1;

const PONG: u32 = 2;

/// Set in the word by a side about to sleep on it.
const SLEEPING: u32 = 4;

impl BenchPingPong for RawFutexPingPong {
    fn answer(&self) {
        self.await_message(PING);
        self.send(PONG);
    }
    fn ask(&self) {
        self.send(PING);
        self.await_message(PONG);
    }
}

/// Two `eventfd`s, one each way: a blocking read and a write per message.
pub struct EventFdPingPong {
    ping: OwnedFd,
    pong: OwnedFd,
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

/// A raw round trip over a Unix socket pair carrying a request of
/// `request_len` bytes and an answer of `answer_len` bytes: what one
/// manager call over a socket costs the OS, with no encoding and no work
/// done. The answering side reads each request whole before it answers
/// (as a server that reads it must).
pub struct RawCall {
    client_end: UnixStream,
    server_end: UnixStream,
    request_len: usize,
    answer_len: usize,
    client: std::sync::Mutex<Vec<u8>>,
    server: std::sync::Mutex<Vec<u8>>,
}

impl RawCall {
    /// A new socket pair for calls of these sizes.
    ///
    /// # Errors
    /// If the socket pair cannot be made.
    pub fn new(request_len: usize, answer_len: usize) -> Result<Self> {
        let (client_end, server_end) = UnixStream::pair()?;
        let buf = || std::sync::Mutex::new(vec![1u8; request_len.max(answer_len)]);
        Ok(RawCall {
            client_end,
            server_end,
            request_len,
            answer_len,
            client: buf(),
            server: buf(),
        })
    }
}

fn lock(m: &std::sync::Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RawCall {
    /// One round trip, asked.
    ///
    /// # Errors
    /// If the answering side is gone or [hung up](RawCall::hang_up).
    pub fn call(&self) -> std::io::Result<()> {
        let mut buf = lock(&self.client);
        (&self.client_end).write_all(&buf[..self.request_len])?;
        (&self.client_end).read_exact(&mut buf[..self.answer_len])
    }

    /// Ends the socket pair in every process that has it: each call, and
    /// each wait for one, fails from then on. For the process that made
    /// it, once a side is gone (its copy of the other side's end keeps
    /// that from reading as the end of the stream).
    pub fn hang_up(&self) {
        let _ = self.client_end.shutdown(std::net::Shutdown::Both);
        let _ = self.server_end.shutdown(std::net::Shutdown::Both);
    }
}

impl BenchPingPong for RawCall {
    fn answer(&self) {
        let mut buf = lock(&self.server);
        let _ = (&self.server_end).read_exact(&mut buf[..self.request_len]);
        let _ = (&self.server_end).write_all(&buf[..self.answer_len]);
    }
    fn ask(&self) {
        let _ = self.call();
    }
}
