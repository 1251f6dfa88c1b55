//! Message passing over file descriptors: [`Pipe()`](fn@Pipe) and [`Connection`]
//! (Python's `multiprocessing.Pipe` and `Connection`), [`Listener`] and
//! [`connect`] with an authkey challenge (Python's `Listener`/`Client`).
//!
//! The wire is Python's: a message is a 4-byte big-endian length and that
//! many bytes (an 8-byte length after `ff ff ff ff` above 2 GiB; see
//! [`frame`]), and the authkey handshake is Python's mutual HMAC challenge
//! (see [`Listener`]), so these connections talk to Python's
//! `multiprocessing.connection` `Listener`, `Client` and `Connection`
//! (`send_bytes`/`recv_bytes`; `send`/`recv` carry postcard, not pickle).
//! The length is checked against the connection's limit before any memory
//! is allocated for the message, so a hostile or broken peer cannot make a
//! process allocate what it claims.

pub(crate) mod auth;
pub mod frame;
mod listener;

use std::io;
use std::mem::MaybeUninit;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sys::{self, Deadline, Ready};
use crate::waiter;
use frame::HEADER_LEN as HEADER;

pub use listener::{connect, Address, Listener};

/// The default largest message a connection over a socket accepts
/// ([`Connection::from_socket`], [`Listener::accept`], [`connect`]): 64 MiB.
/// The ends of a [`Pipe()`](fn@Pipe) have no limit, as Python's have none.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;
/// The longest message any connection receives, whatever its limit: the
/// most a `Vec` holds, less a long header.
const LARGEST_MESSAGE: usize = isize::MAX as usize - frame::LONG_HEADER_LEN;
/// How much is read at once when buffering; the rest of a message at
/// least this long is read straight into its destination instead.
pub(crate) const READ_CHUNK: usize = 64 << 10;
/// The most a receive allocates for a message before its bytes arrive;
/// the buffer then doubles as they do.
const UPFRONT: usize = 1 << 20;

/// One end of a pipe or socket that carries whole messages.
///
/// Messages keep their boundaries: each `recv` returns exactly what one
/// `send` sent. `send`/`recv` carry any serde type (encoded with postcard);
/// `send_bytes`/`recv_bytes` carry raw bytes (use them for a `Vec<u8>`:
/// serde encodes one byte at a time, see [`send`](Connection::send)). A closed peer is
/// [`Error::ConnectionClosed`]. After a framing error (a message over the
/// limit, a peer that closed mid-message) the connection is closed: the
/// stream can no longer be trusted to be at a message boundary, and every
/// later call is [`Error::Io`] (`NotConnected`), as after
/// [`close`](Connection::close), not the peer's `ConnectionClosed`.
///
/// A connection used in a forked child should be used there only (or only
/// in the parent): two processes reading one stream interleave its bytes.
pub struct Connection {
    fd: Option<OwnedFd>,
    readable: bool,
    writable: bool,
    is_socket: bool,
    /// Bytes read from the descriptor but not yet returned: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    max_message: usize,
    /// The last message was large and read straight into its destination:
    /// the next header is read alone (exactly its bytes), so that the
    /// message after it, likely large too, is not read into the buffer
    /// first and copied out of it.
    header_alone: bool,
    /// A timed receive gave up with the buffered bytes, part of a
    /// message: they are no longer news to `poll` and `wait` (until more
    /// arrive), which would otherwise say "ready" at once for ever.
    incomplete_timed_out: bool,
    /// The process whose async send has sent part of its message and not
    /// the rest (see [`Sending`]): while it is under way, and after, if
    /// its future was forgotten (`mem::forget`) rather than dropped.
    half_sent: Option<u32>,
}

impl std::fmt::Debug for Connection {
    /// Its descriptor, directions, limit and how many bytes it holds
    /// unread: never the bytes themselves (what was received may be
    /// secret, and may be many megabytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.as_raw_fd())
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("buffered", &self.buffered())
            .field("max_message", &self.max_message)
            .finish()
    }
}

/// A pair of connected [`Connection`]s, as Python's
/// `multiprocessing.Pipe(duplex)` spells it; [`pipe`], [`Pipe::duplex`] and
/// [`Pipe::simplex`] say the same with names instead of a flag.
///
/// Duplex: both ends send and receive (a Unix socket pair). One-way: the
/// first end only receives and the second only sends (a pipe).
///
/// # Errors
/// If the socket pair or pipe cannot be created.
///
/// # Example
/// ```
/// use multiproc::{conn::Pipe, Process};
/// let (mut parent, mut child_end) = Pipe(true)?;
/// let mut child = Process::new(move || {
///     let n: u32 = child_end.recv().expect("recv");
///     child_end.send(&(n * 2)).expect("send");
/// });
/// child.start()?;
/// parent.send(&21u32)?;
/// assert_eq!(parent.recv::<u32>()?, 42);
/// child.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[allow(non_snake_case)]
pub fn Pipe(duplex: bool) -> Result<(Connection, Connection)> {
    if duplex {
        Pipe::duplex()
    } else {
        Pipe::simplex()
    }
}

/// The two kinds of pipe by name (a namespace beside the Python-spelled
/// function [`Pipe()`](fn@Pipe): `Pipe(true)` is `Pipe::duplex()`).
///
/// # Example
/// ```
/// use multiproc::Pipe;
/// let (mut reader, mut writer) = Pipe::simplex()?;
/// writer.send_bytes(b"one way")?;
/// assert_eq!(reader.recv_bytes()?, b"one way");
/// let (mut a, mut b) = Pipe::duplex()?;
/// b.send_bytes(b"and back")?;
/// assert_eq!(a.recv_bytes()?, b"and back");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum Pipe {}

impl Pipe {
    /// Two ends that both send and receive (a Unix socket pair).
    ///
    /// # Errors
    /// If the socket pair cannot be created.
    pub fn duplex() -> Result<(Connection, Connection)> {
        let (a, b) = sys::socketpair().map_err(|e| Error::io("socketpair", e))?;
        Ok((
            Connection::new(a, true, true).unlimited(),
            Connection::new(b, true, true).unlimited(),
        ))
    }

    /// A receiving end and a sending end, in that order (a pipe).
    ///
    /// # Errors
    /// If the pipe cannot be created.
    pub fn simplex() -> Result<(Connection, Connection)> {
        let (r, w) = sys::pipe().map_err(|e| Error::io("pipe", e))?;
        Ok((
            Connection::new(r, true, false).unlimited(),
            Connection::new(w, false, true).unlimited(),
        ))
    }
}

/// A duplex pipe: [`Pipe::duplex`].
///
/// # Errors
/// If the socket pair cannot be created.
pub fn pipe() -> Result<(Connection, Connection)> {
    Pipe::duplex()
}

impl Connection {
    /// An end of a [`Pipe()`](fn@Pipe), whose peer is this process or one
    /// it forked: no limit on the messages it takes but a `Vec`'s, as
    /// Python's pipes take any (a receive allocates as the bytes arrive,
    /// not as the header says, so a lying header costs nothing).
    fn unlimited(mut self) -> Connection {
        self.max_message = usize::MAX;
        self
    }

    fn new(fd: OwnedFd, readable: bool, writable: bool) -> Connection {
        Connection {
            is_socket: sys::is_socket(&fd),
            fd: Some(fd),
            readable,
            writable,
            buf: Vec::new(),
            start: 0,
            header_alone: false,
            incomplete_timed_out: false,
            half_sent: None,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }

    /// A connection over a connected stream socket (both directions): a
    /// Unix or TCP socket of type `SOCK_STREAM`, whose bytes the message
    /// framing reads as one stream. A socket in nonblocking mode is made
    /// blocking (`send_bytes` and `recv_bytes` wait; the async methods
    /// never block the thread either way).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a descriptor that is not a socket (a
    /// file, a pipe), a listening socket, or a socket of another type (`SOCK_DGRAM`,
    /// `SOCK_SEQPACKET`, `SOCK_RAW`): a datagram's bytes beyond what one
    /// read asks for are lost, and the framing would read them as the next
    /// message's. The descriptor is closed then. [`Error::Io`] if its type
    /// cannot be read.
    ///
    /// # Example
    /// ```
    /// use std::os::unix::net::{UnixDatagram, UnixStream};
    /// use multiproc::Connection;
    /// let (a, b) = UnixStream::pair()?;
    /// let (mut a, mut b) = (Connection::from_socket(a.into())?, Connection::from_socket(b.into())?);
    /// a.send(&7u8)?;
    /// assert_eq!(b.recv::<u8>()?, 7);
    /// let (datagram, _) = UnixDatagram::pair()?;
    /// assert!(Connection::from_socket(datagram.into()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_socket(fd: OwnedFd) -> Result<Connection> {
        match sys::socket_type(&fd) {
            Ok(libc::SOCK_STREAM) if sys::is_listening(&fd).unwrap_or(false) => {
                Err(Error::InvalidArgument(
                    "Connection::from_socket takes a connected stream socket, not a listening one (see Listener)".into(),
                ))
            }
            Ok(libc::SOCK_STREAM) => {
                // A nonblocking socket would fail a send part-way, with
                // half a frame on the wire, and spin a receive.
                sys::set_blocking(&fd).map_err(|e| Error::io("fcntl(O_NONBLOCK)", e))?;
                Ok(Connection::new(fd, true, true))
            }
            Ok(other) => Err(Error::InvalidArgument(format!(
                "Connection::from_socket takes a stream socket (SOCK_STREAM), not {}: message framing needs a byte stream",
                match other {
                    libc::SOCK_DGRAM => "a datagram socket (SOCK_DGRAM)".to_string(),
                    libc::SOCK_SEQPACKET => "a sequenced-packet socket (SOCK_SEQPACKET)".to_string(),
                    libc::SOCK_RAW => "a raw socket (SOCK_RAW)".to_string(),
                    n => format!("a socket of type {n}"),
                }
            ))),
            Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => Err(Error::InvalidArgument(
                "Connection::from_socket takes a stream socket, not a descriptor that is no socket (a file, a pipe: see Pipe)".into(),
            )),
            Err(e) => Err(Error::io("getsockopt(SO_TYPE)", e)),
        }
    }

    /// Sets the largest message this end accepts (it does not limit
    /// sending): by default [`DEFAULT_MAX_MESSAGE`] for a socket's
    /// connection, none for a pipe's end. A longer one is [`Error::MessageTooLarge`] from its header
    /// alone, before any of it is read; so is one longer than a `Vec` can
    /// be, whatever the limit.
    pub fn set_max_message(&mut self, bytes: usize) {
        self.max_message = bytes;
    }

    /// The largest message this end accepts.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Whether [`close`](Connection::close) was called (or a framing error closed it).
    pub fn closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Closes this end; the peer then sees end of file. What was received
    /// and not yet returned is dropped: a closed end receives nothing.
    pub fn close(&mut self) {
        self.fd = None;
        self.buf = Vec::new();
        self.start = 0;
        self.half_sent = None;
    }

    /// Ends the stream if an async send stopped part-way: half a message
    /// would be read as a frame, with whatever follows as its rest. On a
    /// dropped future, only if the send was this process's (`anyone`
    /// false: a forked child's copy of the future is not its send); before
    /// a send, whoever's it was (`anyone` true): a child given the
    /// connection after its parent forgot a send part-way would otherwise
    /// send its messages into the middle of that one. A socket is shut
    /// down first, so that the peer reads its end even while another
    /// process (a forked child) holds a copy of this descriptor; closing
    /// only this copy would leave the peer waiting for the rest of the
    /// message.
    fn end_half_sent(&mut self, anyone: bool) {
        let ended = match self.half_sent {
            Some(sender) => anyone || sender == sys::getpid(),
            None => false,
        };
        if !ended {
            return;
        }
        if self.is_socket {
            if let Ok(fd) = self.fd() {
                let _ = sys::shutdown_write(fd);
            }
        }
        self.close();
    }

    fn fd(&self) -> Result<&OwnedFd> {
        self.fd.as_ref().ok_or_else(|| {
            Error::io(
                "connection",
                io::Error::new(io::ErrorKind::NotConnected, "closed"),
            )
        })
    }

    /// Sends `bytes` as one message.
    ///
    /// # Errors
    /// [`Error::ConnectionClosed`] if the peer is gone; `InvalidArgument`
    /// on a receive-only end; [`Error::Io`] (`WouldBlock`) if another
    /// process or a caller made the descriptor nonblocking and it would
    /// not take the whole message: this end is then closed (and a
    /// socket's sending side shut down), so that the peer sees the end of
    /// the stream rather than half a message.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.end_half_sent(true);
        let header = self.header_for(bytes)?;
        let fd = self.fd()?;
        match sys::write_all_vectored(fd, self.is_socket, &[&header, bytes]) {
            Ok(()) => Ok(()),
            // Someone made the descriptor nonblocking (a process sharing
            // it, a caller through `as_raw_fd`), and it took part of the
            // message, maybe: the rest must not follow as another
            // message's bytes, so the stream ends here, as for an async
            // send dropped part-way.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.is_socket {
                    let _ = sys::shutdown_write(fd);
                }
                self.close();
                Err(Error::io(
                    "send (the descriptor was made nonblocking elsewhere, and part of the message may have gone: the connection is closed)",
                    e,
                ))
            }
            Err(e) => Err(send_error(e)),
        }
    }

    /// The length header of a message of `bytes`, on an end that may send.
    fn header_for(&self, bytes: &[u8]) -> Result<frame::Header> {
        self.fd()?;
        if !self.writable {
            return Err(Error::InvalidArgument(
                "this end of the pipe only receives".into(),
            ));
        }
        frame::header(bytes.len())
    }

    /// Sends `bytes` as one message without blocking the thread (for a
    /// task on an async runtime; any runtime will do).
    ///
    /// Cancellation: a future dropped before it sent anything sent nothing;
    /// one dropped part-way closes this end (the peer sees the connection
    /// end instead of half a message), so a message is never torn; one
    /// forgotten part-way (`mem::forget`) leaves that to the next send. A
    /// socket's sending side is shut down for every process that shares
    /// it; a one-way pipe's reader sees the end only once every process
    /// holding the sending end has closed it.
    ///
    /// # Errors
    /// As for [`send_bytes`](Connection::send_bytes).
    pub async fn send_bytes_async(&mut self, bytes: &[u8]) -> Result<()> {
        self.end_half_sent(true);
        let header = self.header_for(bytes)?;
        let fd = self.fd()?.as_raw_fd();
        let mut sending = Sending {
            is_socket: self.is_socket,
            conn: self,
            parts: [&header, bytes],
            sent: 0,
            sender: sys::getpid(),
        };
        waiter::descriptor(fd, Deadline::Never, || sending.step(fd))
            .await?
            .ok_or(Error::Timeout)
    }

    /// Sends `value` (postcard-encoded) as one message without blocking
    /// the thread; cancellation as for
    /// [`send_bytes_async`](Connection::send_bytes_async).
    ///
    /// # Errors
    /// [`Error::Serialize`], and those of [`send_bytes`](Connection::send_bytes).
    pub async fn send_async<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let bytes = postcard::to_allocvec(value).map_err(|e| Error::Serialize(e.to_string()))?;
        self.send_bytes_async(&bytes).await
    }

    /// Receives one message without blocking the thread (for a task on an
    /// async runtime; any runtime will do).
    ///
    /// Cancellation: a future dropped before it finishes loses nothing;
    /// what it read stays buffered for the next receive.
    ///
    /// # Errors
    /// As for [`recv_bytes`](Connection::recv_bytes).
    pub async fn recv_bytes_async(&mut self) -> Result<Vec<u8>> {
        self.check_readable()?;
        let fd = self.fd()?.as_raw_fd();
        waiter::descriptor(fd, Deadline::Never, || loop {
            let before = self.buffered();
            match self.try_recv_frame(true).map(|f| f.map(<[u8]>::to_vec)) {
                Ok(Some(frame)) => return ControlFlow::Break(Ok(frame)),
                // Part of a message came: read on while more is there.
                Ok(None) if self.buffered() > before => {}
                Ok(None) => return ControlFlow::Continue(Ready::Read),
                Err(e) => return ControlFlow::Break(Err(e)),
            }
        })
        .await?
        .ok_or(Error::Timeout)
    }

    /// Receives one message and decodes it, without blocking the thread;
    /// cancellation as for [`recv_bytes_async`](Connection::recv_bytes_async).
    ///
    /// # Errors
    /// [`Error::Deserialize`], and those of [`recv_bytes`](Connection::recv_bytes).
    pub async fn recv_async<T: DeserializeOwned>(&mut self) -> Result<T> {
        let msg = self.recv_bytes_async().await?;
        crate::decode::from_bytes(&msg).map_err(|e| Error::Deserialize(e.to_string()))
    }

    /// Sends `value` (postcard-encoded) as one message.
    ///
    /// Bytes: send a `Vec<u8>` or `[u8]` with
    /// [`send_bytes`](Connection::send_bytes) (and receive it with
    /// [`recv_bytes`](Connection::recv_bytes)) instead. Through serde, a
    /// byte sequence is encoded and decoded one element at a time: 1 MiB
    /// messages go about 5 times slower than through `send_bytes`
    /// (`multiproc bench`'s `pipe_bytes_1mib` row shows both). Inside a
    /// larger value, a byte field marked `#[serde(with = "serde_bytes")]`
    /// (the `serde_bytes` crate) is copied whole.
    ///
    /// # Errors
    /// [`Error::Serialize`], and those of [`send_bytes`](Connection::send_bytes).
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let bytes = postcard::to_allocvec(value).map_err(|e| Error::Serialize(e.to_string()))?;
        self.send_bytes(&bytes)
    }

    /// Receives one message, blocking until it has arrived whole.
    ///
    /// # Errors
    /// [`Error::ConnectionClosed`] once the peer has closed its end,
    /// [`Error::MessageTooLarge`]; [`Error::Io`] (`NotConnected`) on an end
    /// closed here, by [`close`](Connection::close) or a framing error.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_message(Deadline::Never)
    }

    /// Receives one message into `buf`, returning its length. A large
    /// message is read straight into `buf`, with no copy in between.
    ///
    /// # Errors
    /// [`Error::BufferTooShort`] with the whole message if it does not fit
    /// (it is consumed either way), and those of [`recv_bytes`](Connection::recv_bytes).
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let len = self.begin_message(Deadline::Never)?;
        let Some(dst) = buf.get_mut(..len) else {
            return Err(Error::BufferTooShort(
                self.finish_message_vec(len, Deadline::Never)?,
            ));
        };
        // SAFETY: `MaybeUninit<u8>` has `u8`'s layout, and only initialised
        // bytes are written through the view (by read(2), or copied from
        // the buffer), so `buf` stays initialised.
        let dst = unsafe { &mut *(dst as *mut [u8] as *mut [MaybeUninit<u8>]) };
        let mut at = 0;
        while at < len {
            at += self.body_step(&mut dst[at..], Deadline::Never)?;
        }
        Ok(len)
    }

    /// Receives one message and decodes it as `T`.
    ///
    /// For bytes, [`recv_bytes`](Connection::recv_bytes) is many times
    /// faster than `recv::<Vec<u8>>()` (see [`send`](Connection::send)).
    ///
    /// # Errors
    /// [`Error::Deserialize`] (also for a value nested more than 256 levels
    /// deep, which could otherwise overflow the stack, and for a message
    /// with bytes left after the value: one of another type), and those of
    /// [`recv_bytes`](Connection::recv_bytes); the message is consumed.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        let msg = self.recv_frame(Deadline::Never)?;
        crate::decode::from_bytes(msg).map_err(|e| Error::Deserialize(e.to_string()))
    }

    /// Receives one message, waiting at most `timeout` for all of it.
    ///
    /// # Errors
    /// [`Error::Timeout`] (the connection stays usable: what part of a
    /// message had arrived stays buffered, and a later receive returns the
    /// message once the rest has come), and those of
    /// [`recv_bytes`](Connection::recv_bytes).
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_message(Deadline::after(timeout))
    }

    /// Whether a message (or end of file) is ready to be received, waiting
    /// at most `timeout` for one; `None` waits forever. As in Python,
    /// unread bytes of a message count (its rest may still be on its
    /// way), but not those a timed receive gave up with: then only new
    /// bytes do.
    ///
    /// # Errors
    /// On an OS failure; on a closed end; `InvalidArgument` on an end that
    /// only sends (which nothing could ever make readable).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_readable()?;
        self.poll_until(Deadline::within(timeout))
    }

    fn poll_until(&self, deadline: Deadline) -> Result<bool> {
        self.fd()?;
        if self.message_buffered() {
            return Ok(true);
        }
        self.descriptor_readable(deadline)
    }

    /// Whether what is buffered is something to receive: a whole
    /// message, a header that a receive refuses, or part of a message
    /// (unread bytes, as Python's `poll` counts them) unless a timed
    /// receive already gave up with them: readiness then waits for the
    /// peer, or a loop of `poll` and timed receives would spin.
    fn message_buffered(&self) -> bool {
        match self.buffered_frame_len() {
            Ok(Some((header, len))) if self.buffered() >= header + len => true,
            Ok(_) => self.buffered() > 0 && !self.incomplete_timed_out,
            Err(_) => true,
        }
    }

    /// Whether the descriptor has something to read, whatever is buffered.
    fn descriptor_readable(&self, deadline: Deadline) -> Result<bool> {
        let fd = self.fd()?.as_raw_fd();
        Ok(sys::poll_readable(&[fd], deadline).map_err(|e| Error::io("poll", e))?[0])
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Reads until at least `n` bytes are buffered.
    fn fill(&mut self, n: usize, deadline: Deadline) -> Result<()> {
        while self.buffered() < n {
            // The descriptor, not `poll_until`: what is buffered is not
            // enough, and a read with nothing to read would block past
            // the deadline.
            if !matches!(deadline, Deadline::Never) && !self.descriptor_readable(deadline)? {
                return Err(Error::Timeout);
            }
            self.read_waiting(n, ReadMode::Wait, deadline)?;
        }
        Ok(())
    }

    /// One read towards `n` buffered bytes; one that found nothing (a
    /// descriptor made nonblocking elsewhere) waits in `poll` until there
    /// is something (a timeout at the deadline), rather than read again
    /// at once, which would spin.
    fn read_waiting(&mut self, n: usize, mode: ReadMode, deadline: Deadline) -> Result<()> {
        if !self.read_more(n, mode)? && !self.descriptor_readable(deadline)? {
            return Err(Error::Timeout);
        }
        Ok(())
    }

    /// As [`fill`](Self::fill), reading no more than the `n` bytes.
    fn fill_exactly(&mut self, n: usize, deadline: Deadline) -> Result<()> {
        while self.buffered() < n {
            if !matches!(deadline, Deadline::Never) && !self.descriptor_readable(deadline)? {
                return Err(Error::Timeout);
            }
            self.read_waiting(n, ReadMode::Exactly, deadline)?;
        }
        Ok(())
    }

    /// One blocking read of whatever arrives, given up (`Ok(false)`) when a
    /// signal comes or the socket's receive timeout passes: for an event
    /// loop that has one client to wait for.
    pub(crate) fn read_some(&mut self) -> Result<bool> {
        let want = self.buffered() + 1;
        self.read_more(want, ReadMode::Once)
    }

    /// One read towards `n` buffered bytes; `Ok(false)` if nothing came
    /// (only without [`ReadMode::Wait`] or [`ReadMode::Exactly`]).
    fn read_more(&mut self, n: usize, mode: ReadMode) -> Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let have = self.buf.len();
        // Room for what is missing, but never more than what has arrived
        // (or `UPFRONT`): the buffer grows with the bytes, not with what a
        // header claims, which could be more than the memory there is.
        let missing = n.saturating_sub(have);
        self.buf
            .reserve(missing.min(UPFRONT.max(have)).max(READ_CHUNK));
        let fd = self.fd.as_ref().ok_or(Error::ConnectionClosed)?;
        let got = match mode {
            ReadMode::Wait => sys::read(fd, self.buf.spare_capacity_mut()),
            ReadMode::Exactly => {
                let spare = self.buf.spare_capacity_mut();
                // `fill_exactly` asks for more than is buffered: `want > 0`.
                let want = n.saturating_sub(have).min(spare.len());
                sys::read(fd, &mut spare[..want])
            }
            ReadMode::NoWait => sys::read_nowait(fd, self.is_socket, self.buf.spare_capacity_mut()),
            ReadMode::Once => sys::recv_once(fd, self.buf.spare_capacity_mut()),
        };
        if let Ok(k) = got {
            // SAFETY: read(2) or recv(2) initialised the first `k` spare bytes.
            unsafe { self.buf.set_len(have + k) };
            self.incomplete_timed_out &= k == 0;
        }
        read_outcome(got).map(|k| k.is_some())
    }

    /// The bytes of memory the receive buffer takes (for an event loop that
    /// bounds what its connections hold, with the next three).
    pub(crate) fn read_buffer_size(&self) -> usize {
        self.buf.capacity()
    }

    /// The bytes received and not yet returned.
    pub(crate) fn buffered_len(&self) -> usize {
        self.buffered()
    }

    /// The length, header included, of the next message, once its header
    /// has arrived (whether the message has or not); `None` before, or if
    /// the header is invalid (which the next receive reports).
    pub(crate) fn next_frame_len(&self) -> Option<usize> {
        match self.buffered_frame_len() {
            Ok(Some((header, len))) => Some(header + len),
            _ => None,
        }
    }

    /// Gives back the receive buffer's memory beyond what it holds, or
    /// beyond `keep` bytes if it holds less.
    pub(crate) fn trim_read_buffer(&mut self, keep: usize) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.shrink_to(keep.max(self.buf.len()));
    }

    /// The next whole message if one has arrived, without waiting (for an
    /// event loop that polls the socket itself); `Ok(None)` if it has not
    /// arrived whole yet. With `read` false, only what is already buffered
    /// is looked at (an event loop reads once per readiness, and a read
    /// that finds nothing is a wasted system call). Errors as
    /// [`recv_bytes`](Connection::recv_bytes), and a framing error closes
    /// the connection as there.
    pub(crate) fn try_recv_frame(&mut self, read: bool) -> Result<Option<&[u8]>> {
        let mut may_read = read;
        loop {
            match self.buffered_frame_len() {
                Ok(Some((header, len))) if self.buffered() >= header + len => {
                    let at = self.start + header;
                    self.start = at + len;
                    return Ok(Some(&self.buf[at..at + len]));
                }
                Ok(_) => {}
                Err(e) => return Err(self.fail(e, true)),
            }
            // One read per call at most: a client that keeps sending must
            // not keep the loop from the others.
            if !may_read {
                return Ok(None);
            }
            may_read = false;
            let want = self.buffered().max(HEADER);
            match self.read_more(want, ReadMode::NoWait) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => {
                    let mid = self.buffered() > 0;
                    return Err(self.fail(e, mid));
                }
            }
        }
    }

    /// A closed end is that first (as Python checks), whichever way it
    /// went: a receive on it must not look like the peer's end of file.
    fn check_readable(&self) -> Result<()> {
        self.fd()?;
        if self.readable {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "this end of the pipe only sends".into(),
            ))
        }
    }

    /// Receives one message into a `Vec` of its own.
    ///
    /// With a deadline, nothing is consumed before the whole message has
    /// arrived: a timeout leaves what came buffered, the stream at its
    /// boundary and the connection usable (the message is then copied out
    /// of the buffer once; without a deadline it is read straight into
    /// its `Vec`).
    fn recv_message(&mut self, deadline: Deadline) -> Result<Vec<u8>> {
        if matches!(deadline, Deadline::Never) {
            let len = self.begin_message(deadline)?;
            return self.finish_message_vec(len, deadline);
        }
        self.check_readable()?;
        let keep_on_timeout = |conn: &mut Connection, e: Error| match e {
            Error::Timeout => {
                conn.incomplete_timed_out = conn.buffered() > 0;
                e
            }
            e => {
                let mid = conn.buffered() > 0;
                conn.fail(e, mid)
            }
        };
        let (header, len) = match self.read_frame_len(deadline) {
            Ok(lens) => lens,
            Err(e) => return Err(keep_on_timeout(self, e)),
        };
        if let Err(e) = self.fill(header + len, deadline) {
            return Err(keep_on_timeout(self, e));
        }
        let at = self.start + header;
        self.start = at + len;
        Ok(self.buf[at..at + len].to_vec())
    }

    /// Reads and consumes the next message's header: the length of its
    /// message, checked against the limit. As [`recv_frame`](Self::recv_frame),
    /// an error closes the connection if part of a header had arrived.
    fn begin_message(&mut self, deadline: Deadline) -> Result<usize> {
        self.check_readable()?;
        match self.read_frame_len(deadline) {
            Ok((header, len)) => {
                self.start += header;
                Ok(len)
            }
            Err(e) => Err(self.fail(e, self.buffered() > 0)),
        }
    }

    /// The `len`-byte message whose header [`begin_message`](Self::begin_message)
    /// consumed, in a `Vec` of its size. The `Vec` is allocated as the
    /// bytes arrive, up to [`UPFRONT`] at first and then doubling: a peer
    /// that announces a message up to the limit and sends nothing does
    /// not make this process allocate it.
    fn finish_message_vec(&mut self, len: usize, deadline: Deadline) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len.min(UPFRONT));
        while out.len() < len {
            if out.len() == out.capacity() {
                let target = len.min(out.capacity().saturating_mul(2));
                out.reserve_exact(target - out.len());
            }
            let want = len - out.len();
            let spare = out.spare_capacity_mut();
            let k = spare.len().min(want);
            let got = self.body_step(&mut spare[..k], deadline)?;
            // SAFETY: `body_step` initialised the first `got` spare bytes.
            unsafe { out.set_len(out.len() + got) };
        }
        Ok(out)
    }

    /// Puts the next bytes of the message being received into `dst` (not
    /// empty, at most what is left of the message): what is buffered, or
    /// else one read. A large rest is read straight into `dst` (no copy
    /// through the buffer); a small one through the buffer, which takes
    /// what follows it too (the next messages' bytes, in the same call).
    /// Returns how many bytes of `dst` it initialised (none if a read
    /// found nothing after all); an error closes the connection (the
    /// stream is mid-message).
    fn body_step(&mut self, dst: &mut [MaybeUninit<u8>], deadline: Deadline) -> Result<usize> {
        let r = self.body_step_inner(dst, deadline);
        r.map_err(|e| self.fail(e, true))
    }

    fn body_step_inner(
        &mut self,
        dst: &mut [MaybeUninit<u8>],
        deadline: Deadline,
    ) -> Result<usize> {
        if self.buffered() == 0 {
            if dst.len() < READ_CHUNK {
                self.fill(1, deadline)?;
            } else {
                if !matches!(deadline, Deadline::Never) && !self.descriptor_readable(deadline)? {
                    return Err(Error::Timeout);
                }
                let fd = self.fd.as_ref().ok_or(Error::ConnectionClosed)?;
                self.header_alone = true;
                // Interrupted reads are retried by `sys::read`.
                return match read_outcome(sys::read(fd, dst))? {
                    Some(k) => Ok(k),
                    // Nothing (a descriptor made nonblocking elsewhere):
                    // wait for something rather than spin.
                    None if !self.descriptor_readable(deadline)? => Err(Error::Timeout),
                    None => Ok(0),
                };
            }
        }
        let k = self.buffered().min(dst.len());
        let src = &self.buf[self.start..self.start + k];
        for (d, &b) in dst[..k].iter_mut().zip(src) {
            d.write(b);
        }
        self.start += k;
        Ok(k)
    }

    fn recv_frame(&mut self, deadline: Deadline) -> Result<&[u8]> {
        self.check_readable()?;
        let (header, len) = match self.read_frame_len(deadline) {
            Ok(lens) => lens,
            Err(e) => return Err(self.fail(e, self.buffered() > 0)),
        };
        if let Err(e) = self.fill(header + len, deadline) {
            return Err(self.fail(e, true));
        }
        let at = self.start + header;
        self.start = at + len;
        Ok(&self.buf[at..at + len])
    }

    /// The lengths of the next message's header and of the message,
    /// checked against the limit, reading the header first if need be.
    fn read_frame_len(&mut self, deadline: Deadline) -> Result<(usize, usize)> {
        // A short header first; the long one's 8 more bytes only if it is one.
        let mut want = HEADER;
        let alone = std::mem::take(&mut self.header_alone);
        loop {
            if alone {
                self.fill_exactly(want, deadline)?;
            } else {
                self.fill(want, deadline)?;
            }
            match self.buffered_frame_len()? {
                Some(lens) => return Ok(lens),
                None => want = frame::LONG_HEADER_LEN,
            }
        }
    }

    /// The lengths of the buffered header and of its message, checked
    /// against the limit; `None` if the header has not arrived whole.
    fn buffered_frame_len(&self) -> Result<Option<(usize, usize)>> {
        let Some((header, len)) = frame::parse_header(&self.buf[self.start..])? else {
            return Ok(None);
        };
        // Whatever the limit, no message is longer than a `Vec` can be,
        // and its header's length added to it cannot overflow.
        let limit = self.max_message.min(LARGEST_MESSAGE);
        match usize::try_from(len) {
            Ok(len) if len <= limit => Ok(Some((header, len))),
            _ => Err(Error::MessageTooLarge { size: len, limit }),
        }
    }

    /// Closes the connection if the stream is no longer at a message boundary.
    fn fail(&mut self, e: Error, mid_message: bool) -> Error {
        if mid_message || matches!(e, Error::MessageTooLarge { .. }) {
            self.close();
        }
        e
    }
}

/// What a read's result means to the caller: `Some(bytes read)`, never
/// `Some(0)`; `None` if it was interrupted or found nothing (without
/// waiting); end of file or a reset is [`Error::ConnectionClosed`].
fn read_outcome(got: io::Result<usize>) -> Result<Option<usize>> {
    match got {
        Ok(0) => Err(Error::ConnectionClosed),
        Ok(k) => Ok(Some(k)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.raw_os_error() == Some(sys::errno::ECONNRESET) => Err(Error::ConnectionClosed),
        Err(e) => Err(Error::io("recv", e)),
    }
}

/// What a send failure means to the caller.
fn send_error(e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(sys::errno::EPIPE | sys::errno::ECONNRESET) => Error::ConnectionClosed,
        _ => Error::io("send", e),
    }
}

/// A message being sent by [`Connection::send_bytes_async`]: its header and
/// body, and how much of them went out.
struct Sending<'a, 'b> {
    conn: &'a mut Connection,
    is_socket: bool,
    parts: [&'b [u8]; 2],
    sent: usize,
    /// The process sending: a copy of the future in a forked child is not
    /// its send, and its drop must not end the parent's stream.
    sender: u32,
}

impl Sending<'_, '_> {
    /// Writes what the descriptor takes now: done, or wait until writable.
    fn step(&mut self, fd: i32) -> ControlFlow<Result<()>, Ready> {
        loop {
            let [header, body] = self.parts;
            let rest = match self.sent.checked_sub(header.len()) {
                None => &header[self.sent..],
                Some(at) if at < body.len() => &body[at..],
                Some(_) => {
                    self.conn.half_sent = None;
                    return ControlFlow::Break(Ok(()));
                }
            };
            match sys::write_nowait(&fd, self.is_socket, rest) {
                Ok(n) => {
                    self.sent += n;
                    self.conn.half_sent = Some(self.sender);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return ControlFlow::Continue(Ready::Write)
                }
                Err(e) => return ControlFlow::Break(Err(send_error(e))),
            }
        }
    }
}

impl Drop for Sending<'_, '_> {
    fn drop(&mut self) {
        // Dropped part-way (in the process that sends: a copy of the
        // future in a forked child is not its send).
        self.conn.end_half_sent(false);
    }
}

/// How [`Connection::read_more`] reads.
#[derive(Clone, Copy)]
enum ReadMode {
    /// Blocks until something arrives (signals are retried).
    Wait,
    /// Takes what has arrived, if anything.
    NoWait,
    /// Blocks, but gives up on a signal or the socket's receive timeout.
    Once,
    /// As `Wait`, but reads no more than the bytes asked for.
    Exactly,
}

impl AsRawFd for Connection {
    /// The descriptor, or -1 once closed.
    fn as_raw_fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }
}

/// Waits until at least one of `connections` has a message (or end of file)
/// ready, or `timeout` passes; returns the indexes of the ready ones
/// (Python's `multiprocessing.connection.wait`).
///
/// # Errors
/// On an OS failure; if one of `connections` is closed (Python raises
/// `OSError` too), or only sends (`InvalidArgument`: no message can come
/// on it; Python's `wait` reports such an end ready once its reader has
/// closed).
/// `InvalidArgument` too for no connections and no timeout (or one too
/// long for the clock, such as `Duration::MAX`), which nothing could end
/// (Python's waits for ever); with a timeout, no connections is a sleep
/// that returns none.
pub fn wait(connections: &[&Connection], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let deadline = Deadline::within(timeout);
    if connections.is_empty() && matches!(deadline, Deadline::Never) {
        return Err(Error::InvalidArgument(
            "wait on no connections without a timeout would never end".into(),
        ));
    }
    for c in connections {
        c.check_readable()?;
    }
    let buffered: Vec<bool> = connections.iter().map(|c| c.message_buffered()).collect();
    // A message already buffered ends the wait, but the others that are
    // ready are reported with it, as Python's `wait` reports them.
    let deadline = if buffered.contains(&true) {
        Deadline::Now
    } else {
        deadline
    };
    let fds: Vec<i32> = connections.iter().map(|c| c.as_raw_fd()).collect();
    let r = sys::poll_readable(&fds, deadline).map_err(|e| Error::io("poll", e))?;
    Ok((0..r.len()).filter(|&i| buffered[i] || r[i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    /// A connection and the raw socket at the other end.
    fn raw_pair() -> (UnixStream, Connection) {
        let (raw, ours) = UnixStream::pair().unwrap();
        (raw, Connection::from_socket(ours.into()).unwrap())
    }

    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn the_wire_is_big_endian_and_reads_the_long_header() {
        let (mut raw, mut conn) = raw_pair();
        conn.send_bytes(b"hi").unwrap();
        let mut got = [0; 6];
        std::io::Read::read_exact(&mut raw, &mut got).unwrap();
        assert_eq!(got, [0, 0, 0, 2, b'h', b'i']);
        // Python's long form (for any length), arriving a byte at a time,
        // through the blocking and the event loop's read paths.
        let long = [&[0xff; 4][..], &3u64.to_be_bytes(), b"abc"].concat();
        let t = std::thread::spawn(move || {
            for b in long.iter().chain(&long) {
                raw.write_all(&[*b]).unwrap();
            }
            raw
        });
        assert_eq!(conn.recv_bytes().unwrap(), b"abc");
        let raw = t.join().unwrap();
        let got = loop {
            if let Some(m) = conn.try_recv_frame(true).unwrap() {
                break m.to_vec();
            }
        };
        assert_eq!(got, b"abc");
        drop(raw);
    }

    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn bad_headers_close_the_connection() {
        // A negative length other than -1.
        let (mut raw, mut conn) = raw_pair();
        raw.write_all(&[0x80, 0, 0, 1]).unwrap();
        assert!(matches!(conn.recv_bytes(), Err(Error::Deserialize(_))));
        assert!(conn.closed());
        let (mut raw, mut conn) = raw_pair();
        raw.write_all(&[0xff, 0xff, 0xff, 0xfe]).unwrap();
        assert!(matches!(
            conn.try_recv_frame(true),
            Err(Error::Deserialize(_))
        ));
        assert!(conn.closed());
        // A long header over the limit (4 GiB): refused before the message
        // comes, by the blocking and the event loop's read paths.
        for read in [true, false] {
            let (mut raw, mut conn) = raw_pair();
            conn.set_max_message(1000);
            raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0])
                .unwrap();
            let r = if read {
                conn.recv_bytes().map(|_| ())
            } else {
                loop {
                    match conn.try_recv_frame(true) {
                        Ok(None) => continue,
                        r => break r.map(|_| ()),
                    }
                }
            };
            assert!(
                matches!(
                    r,
                    Err(Error::MessageTooLarge {
                        size: 0x1_0000_0000,
                        limit: 1000
                    })
                ),
                "{r:?}"
            );
            assert!(conn.closed());
        }
    }

    /// Messages of sizes around the read chunk and the up-front
    /// allocation, written in odd pieces, each read back whole by
    /// `recv_bytes` and `recv_bytes_into`, small and large interleaved.
    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn large_and_small_messages_arrive_whole_in_any_pieces() {
        let sizes = [
            0,
            1,
            READ_CHUNK - 1,
            READ_CHUNK,
            READ_CHUNK + 1,
            7,
            UPFRONT - 1,
            UPFRONT + 5,
            3 * UPFRONT + 1,
            2,
        ];
        let message = |i: usize, len: usize| -> Vec<u8> {
            (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
        };
        let (mut raw, mut conn) = raw_pair();
        conn.set_max_message(4 * UPFRONT);
        let t = std::thread::spawn(move || {
            let mut stream = Vec::new();
            for round in 0..2 {
                for (i, &len) in sizes.iter().enumerate() {
                    frame::push(&mut stream, &message(round * 100 + i, len)).unwrap();
                }
            }
            // Pieces that cut headers and messages anywhere.
            let mut at = 0;
            let mut piece = 1;
            while at < stream.len() {
                let end = (at + piece).min(stream.len());
                raw.write_all(&stream[at..end]).unwrap();
                at = end;
                piece = piece * 3 % 200_003 + 1;
            }
            raw
        });
        for (i, &len) in sizes.iter().enumerate() {
            assert_eq!(conn.recv_bytes().unwrap(), message(i, len), "message {i}");
        }
        let mut into = vec![0xaa; 3 * UPFRONT + 10];
        for (i, &len) in sizes.iter().enumerate() {
            let n = conn.recv_bytes_into(&mut into).unwrap();
            assert_eq!(n, len);
            assert_eq!(into[..n], message(100 + i, len), "message {i}");
        }
        drop(t.join().unwrap());
        assert!(matches!(conn.recv_bytes(), Err(Error::ConnectionClosed)));
    }

    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn a_large_message_into_a_short_buffer_is_handed_back_whole() {
        let (mut raw, mut conn) = raw_pair();
        let big: Vec<u8> = (0..UPFRONT + 3).map(|j| j as u8).collect();
        let t = std::thread::spawn(move || {
            let mut stream = Vec::new();
            frame::push(&mut stream, &big).unwrap();
            frame::push(&mut stream, b"next").unwrap();
            raw.write_all(&stream).unwrap();
            (raw, big)
        });
        let mut small = [0; 16];
        let got = conn.recv_bytes_into(&mut small);
        let (_raw, big) = t.join().unwrap();
        match got {
            Err(Error::BufferTooShort(whole)) => assert!(whole == big),
            other => panic!("{:?}", other.map_err(|e| e.to_string())),
        }
        assert_eq!(conn.recv_bytes_into(&mut small).unwrap(), 4);
        assert_eq!(&small[..4], b"next");
    }

    /// A peer that announces a large message and stops part-way: a
    /// timeout keeps what arrived (the stream is still whole), end of file
    /// closes the connection, and what had arrived is not taken for a
    /// message.
    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn a_message_cut_short_closes_the_connection() {
        let (mut raw, mut conn) = raw_pair();
        conn.set_max_message(usize::MAX);
        // 2**40 bytes announced, a few sent: nothing that size is allocated.
        raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 0, 0])
            .unwrap();
        raw.write_all(&[1; 100]).unwrap();
        assert!(matches!(
            conn.recv_bytes_timeout(Duration::from_millis(20)),
            Err(Error::Timeout)
        ));
        assert!(!conn.closed());
        assert!(conn.buf.capacity() < 1 << 20);
        drop(raw);
        assert!(matches!(
            conn.recv_bytes_timeout(Duration::from_secs(10)),
            Err(Error::ConnectionClosed)
        ));
        assert!(conn.closed());

        let (mut raw, mut conn) = raw_pair();
        let t = std::thread::spawn(move || {
            raw.write_all(&frame::header(3 * READ_CHUNK).unwrap())
                .unwrap();
            raw.write_all(&vec![2; 2 * READ_CHUNK]).unwrap();
        });
        let mut into = vec![0; 4 * READ_CHUNK];
        assert!(matches!(
            conn.recv_bytes_into(&mut into),
            Err(Error::ConnectionClosed)
        ));
        assert!(conn.closed());
        t.join().unwrap();
    }

    /// A timeout of zero with nothing there, or of `Duration::MAX` with a
    /// large message there, leaves the connection usable.
    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn zero_and_endless_timeouts_around_a_large_message() {
        let (mut raw, mut conn) = raw_pair();
        assert!(matches!(
            conn.recv_bytes_timeout(Duration::ZERO),
            Err(Error::Timeout)
        ));
        assert!(!conn.closed());
        let big = vec![9u8; 3 * READ_CHUNK];
        let sent = big.clone();
        let t = std::thread::spawn(move || {
            let mut stream = Vec::new();
            frame::push(&mut stream, &sent).unwrap();
            raw.write_all(&stream).unwrap();
            raw
        });
        assert!(conn.recv_bytes_timeout(Duration::MAX).unwrap() == big);
        let _raw = t.join().unwrap();
        assert!(matches!(
            conn.recv_bytes_timeout(Duration::ZERO),
            Err(Error::Timeout)
        ));
        assert!(!conn.closed());
    }
}
