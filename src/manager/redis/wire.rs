//! A connection to a Redis server on which every call ends by its
//! deadline, whatever the server does ([`Wire`]).
//!
//! The `redis` crate's own synchronous connection bounds each socket read
//! by its timeout, not the round trip: a server that sends its reply a
//! byte at a time, each before the read's timeout, holds a call as long
//! as it likes. A `Wire` owns its socket instead (the crate's connection
//! does not show its descriptor), speaks to it with the crate's command
//! encoding and parser, and gives the parser a reader that sets the
//! socket's timeout to the time left before a read (and a write) when
//! the timeout it has is above that by more than a slack, or below it:
//! the first read of a call, made right after its request was written,
//! costs no system call more than the crate's own connection; only a
//! reply that needs several reads (a large value, a server that trickles)
//! or a call that waits on the server (`BLMOVE`) sets the timeout. (A
//! watchdog thread that shuts the socket down at the deadline would cost
//! a wake-up or two per call instead.) A call that times out fails with
//! the crate's timeout error (an I/O error of kind `TimedOut`), and the
//! caller drops the connection: one that stopped half way through a reply
//! is never used again.
//!
//! Connecting is bounded too (by the timeout), but for a name's DNS
//! lookup and a Unix socket's `connect` to a listener whose backlog is
//! full, which wait as the crate's own connection does.
//!
//! TLS connections (`rediss://`, the `redis-tls` feature) are the crate's
//! own, with each read bounded by the time the call has, at its start:
//! there, a trickling server can still hold a call longer.
//!
//! Every connection speaks RESP2, whatever the URL's `protocol`: the
//! replies this crate reads are RESP2's, and a channel's messages (an
//! event's wait) are replies, not RESP3's push values the crate's
//! connection would skip.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ConnectionLike, Parser, ProtocolVersion, RedisError,
    RedisResult, Value,
};

/// How far above the time left a socket's timeout may be before a read
/// lowers it: a call ends at most this much after its deadline, and a
/// reply read in several parts sets the timeout about once per this much
/// time, not once per read.
const SLACK_MAX: Duration = Duration::from_millis(20);

/// A connection to a Redis server whose calls ([`Wire::call`]) each end
/// by a deadline.
pub(crate) struct Wire {
    link: Kind,
    db: i64,
    /// When the call under way must end (`None`: never).
    deadline: Option<Instant>,
    /// How late past the deadline a read may end (see [`SLACK_MAX`]).
    slack: Duration,
    /// How many requests of the call under way were handed whole to the
    /// socket (over TLS, every one tried: there it is not known).
    sent: u32,
}

enum Kind {
    Own(Own),
    /// TLS: the crate's connection, and the read timeout its socket has
    /// now.
    Crate(Box<redis::Connection>, Duration),
}

/// A connection on a socket of this crate's own.
struct Own {
    stream: Stream,
    parser: Parser,
    /// The socket's timeouts now (`SO_RCVTIMEO`, `SO_SNDTIMEO`).
    read_timeout: Duration,
    write_timeout: Duration,
    /// How many bytes were read from it, ever.
    read_bytes: u64,
    open: bool,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(t)),
            Stream::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(Some(t)),
            Stream::Unix(s) => s.set_write_timeout(Some(t)),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// The error a call past its deadline fails with: the crate's timeout
/// error (`RedisError::is_timeout`).
fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the call did not end within its timeout",
    )
}

/// What is left until `deadline`; `Err` if nothing is.
fn left(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(timed_out())
            } else {
                Ok(Some(left))
            }
        }
    }
}

/// The timeout a socket whose timeout is `now` must have before a read or
/// a write with `left` until the deadline (`None`: as it is): the time
/// left, and half the slack, if `now` is below it (a call that waits on
/// the server: a read must not end before the deadline) or above it by
/// more than `slack`. The half slack above keeps the next call's first
/// read, which has a little less left than its budget, from setting it
/// again.
fn timeout_to_set(now: Duration, left: Duration, slack: Duration) -> Option<Duration> {
    (now < left || now - left > slack).then(|| left.saturating_add(slack / 2))
}

/// A timeout of `Some(Duration::ZERO)` is refused by the OS: a read
/// of a timeout that small times out as soon as it would wait.
fn socket_timeout(t: Duration) -> Duration {
    t.max(Duration::from_micros(1))
}

/// The crate's parser's reader: each read ends by the call's deadline.
struct Bounded<'a> {
    stream: &'a mut Stream,
    read_timeout: &'a mut Duration,
    read_bytes: &'a mut u64,
    deadline: Option<Instant>,
    /// Once a byte has come, the deadline becomes this from then.
    then: Option<Duration>,
    slack: Duration,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = left(self.deadline)?.unwrap_or(Duration::MAX);
        if let Some(t) = timeout_to_set(*self.read_timeout, left, self.slack) {
            self.stream.set_read_timeout(socket_timeout(t))?;
            *self.read_timeout = t;
        }
        match self.stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(timed_out()),
            Ok(n) => {
                *self.read_bytes += n as u64;
                if let Some(then) = self.then.take().filter(|_| n > 0) {
                    self.deadline = Instant::now().checked_add(then);
                }
                Ok(n)
            }
            other => other,
        }
    }
}

impl Own {
    fn write_all(
        &mut self,
        mut bytes: &[u8],
        deadline: Option<Instant>,
        slack: Duration,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            let left = left(deadline)?.unwrap_or(Duration::MAX);
            if let Some(t) = timeout_to_set(self.write_timeout, left, slack) {
                self.stream.set_write_timeout(socket_timeout(t))?;
                self.write_timeout = t;
            }
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_value(
        &mut self,
        deadline: Option<Instant>,
        then: Option<Duration>,
        slack: Duration,
    ) -> RedisResult<Value> {
        self.parser.parse_value(Bounded {
            stream: &mut self.stream,
            read_timeout: &mut self.read_timeout,
            read_bytes: &mut self.read_bytes,
            deadline,
            then,
            slack,
        })
    }

    /// Sends `bytes`, `count` commands (counted in `sent` once handed
    /// whole to the socket, or at once if more than one), and reads their
    /// replies; any failure closes it.
    fn request(
        &mut self,
        bytes: &[u8],
        count: usize,
        deadline: Option<Instant>,
        slack: Duration,
        sent: &mut u32,
    ) -> RedisResult<Vec<Value>> {
        if count > 1 {
            // Commands sent together: the first may be had whole before
            // the last is sent.
            *sent += 1;
        }
        let result = self
            .write_all(bytes, deadline, slack)
            .map_err(RedisError::from)
            .and_then(|()| {
                *sent += 1;
                (0..count)
                    .map(|_| self.read_value(deadline, None, slack))
                    .collect::<RedisResult<Vec<_>>>()
            });
        if result.is_err() {
            // Where the stream stands is unknown: nothing more is read
            // from it as if it were at a reply's start.
            self.open = false;
        }
        result
    }
}

impl Wire {
    /// A connection to the server `info` names, connected and its
    /// handshake (`AUTH`, `SELECT`) done within `timeout`, with the
    /// socket's timeouts set to `timeout`.
    ///
    /// # Errors
    /// The crate's: the server unreachable, a refused password.
    pub(crate) fn connect(info: &ConnectionInfo, timeout: Duration) -> RedisResult<Wire> {
        let deadline = Instant::now().checked_add(timeout);
        let slack = (timeout / 32).clamp(Duration::from_micros(2), SLACK_MAX);
        let redis = info.redis_settings();
        let own = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                Some(Stream::Tcp(connect_tcp(host, *port, deadline)?))
            }
            ConnectionAddr::Unix(path) => Some(Stream::Unix(UnixStream::connect(path)?)),
            _ => None,
        };
        let Some(stream) = own else {
            // The crate's handshake skips its `CLIENT SETINFO` pair: it
            // reads both answers, each with the whole timeout.
            let settings = redis
                .clone()
                .set_skip_set_lib_name()
                .set_protocol(ProtocolVersion::RESP2);
            let conn = redis::Client::open(info.clone().set_redis_settings(settings))?
                .get_connection_with_timeout(timeout)?;
            conn.set_read_timeout(Some(socket_timeout(timeout)))?;
            conn.set_write_timeout(Some(socket_timeout(timeout)))?;
            return Ok(Wire {
                link: Kind::Crate(Box::new(conn), timeout),
                db: redis.db(),
                deadline,
                slack,
                sent: 0,
            });
        };
        stream.set_read_timeout(socket_timeout(timeout))?;
        stream.set_write_timeout(socket_timeout(timeout))?;
        let mut wire = Wire {
            link: Kind::Own(Own {
                stream,
                parser: Parser::new(),
                read_timeout: timeout,
                write_timeout: timeout,
                read_bytes: 0,
                open: true,
            }),
            db: redis.db(),
            deadline,
            slack,
            sent: 0,
        };
        if let Some(password) = redis.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = redis.username() {
                auth.arg(user);
            }
            auth.arg(password).query::<()>(&mut wire)?;
        }
        if redis.db() != 0 {
            redis::cmd("SELECT")
                .arg(redis.db())
                .query::<()>(&mut wire)?;
        }
        Ok(wire)
    }

    /// Runs `f` (one call: any number of commands) with `budget` for all
    /// of it: past that, what it sends or reads fails with a timeout.
    pub(crate) fn call<R>(&mut self, budget: Duration, f: impl FnOnce(&mut Wire) -> R) -> R {
        self.deadline = Instant::now().checked_add(budget);
        self.sent = 0;
        if let Kind::Crate(conn, now) = &mut self.link {
            // Each read bounded by the call's budget, set only when it is
            // another than the last call's.
            if *now != budget && conn.set_read_timeout(Some(socket_timeout(budget))).is_ok() {
                *now = budget;
            }
        }
        f(self)
    }

    /// Reads one value the server sends unasked (a message on a channel
    /// this connection subscribed to), waiting up to `wait` for it to
    /// begin, and then up to `then` for the rest: `None` if none began to
    /// come (the connection stays usable); one that began and did not end
    /// in time is the crate's timeout error, and the connection is closed.
    ///
    /// # Errors
    /// The crate's, as above.
    pub(crate) fn receive(&mut self, wait: Duration, then: Duration) -> RedisResult<Option<Value>> {
        let deadline = Instant::now().checked_add(wait);
        match &mut self.link {
            Kind::Own(own) => {
                let before = own.read_bytes;
                match own.read_value(deadline, Some(then), self.slack) {
                    Err(e) if e.is_timeout() && own.read_bytes == before => Ok(None),
                    Err(e) => {
                        own.open = false;
                        Err(e)
                    }
                    Ok(v) => Ok(Some(v)),
                }
            }
            Kind::Crate(conn, now) => {
                conn.set_read_timeout(Some(socket_timeout(wait)))?;
                *now = wait;
                match conn.recv_response() {
                    Err(e) if e.is_timeout() => Ok(None),
                    other => other.map(Some),
                }
            }
        }
    }

    /// Whether the last call failed before any of its requests was handed
    /// whole to the socket: the server, which runs a command only once it
    /// has all of it, ran none of them.
    pub(crate) fn nothing_sent(&self) -> bool {
        self.sent == 0
    }

    fn request(&mut self, bytes: &[u8], count: usize) -> RedisResult<Vec<Value>> {
        match &mut self.link {
            Kind::Own(own) => own.request(bytes, count, self.deadline, self.slack, &mut self.sent),
            Kind::Crate(conn, _) => {
                self.sent += 1;
                if count == 1 {
                    conn.req_packed_command(bytes).map(|v| vec![v])
                } else {
                    conn.req_packed_commands(bytes, 0, count)
                }
            }
        }
    }
}

/// A TCP connection to `host:port`, to the first of its addresses that
/// answers, by `deadline`.
fn connect_tcp(host: &str, port: u16, deadline: Option<Instant>) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        let stream = match left(deadline)? {
            Some(left) => TcpStream::connect_timeout(&addr, left),
            None => TcpStream::connect(addr),
        };
        match stream {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}:{port} has no address"),
        )
    }))
}

impl ConnectionLike for Wire {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let mut values = self.request(cmd, 1)?;
        values
            .pop()
            .ok_or_else(|| io::Error::other("no reply read").into())
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut values = self.request(cmd, offset + count)?;
        Ok(values.split_off(offset))
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.req_packed_command(&cmd.get_packed_command())
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        match &self.link {
            Kind::Own(own) => own.open,
            Kind::Crate(conn, _) => conn.is_open(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path sets no timeout: a call's first read, right after
    /// its request, has a little less left than the timeout the socket
    /// holds. A call that waits on the server sets it, and the next one
    /// sets it back once; after that, none again.
    #[test]
    fn only_a_changed_budget_sets_the_timeout() {
        let (t, slack) = (Duration::from_secs(10), SLACK_MAX);
        let tiny = Duration::from_micros(30);
        assert_eq!(timeout_to_set(t, t - tiny, slack), None);
        let blocking = t + Duration::from_secs(5);
        let set = timeout_to_set(t, blocking - tiny, slack).unwrap();
        assert!(set >= blocking - tiny);
        let back = timeout_to_set(set, t - tiny, slack).unwrap();
        assert!(back >= t - tiny && back <= t - tiny + slack);
        for _ in 0..3 {
            assert_eq!(timeout_to_set(back, t - tiny * 3, slack), None);
        }
        // A reply read in parts: lowered as time runs out, never above
        // what is left by more than the slack.
        let late = timeout_to_set(back, Duration::from_millis(5), slack).unwrap();
        assert!(late <= Duration::from_millis(5) + slack);
        // No deadline (`Duration::MAX` left): no overflow.
        assert_eq!(
            timeout_to_set(late, Duration::MAX, slack),
            Some(Duration::MAX)
        );
        assert_eq!(timeout_to_set(Duration::MAX, Duration::MAX, slack), None);
    }
}
