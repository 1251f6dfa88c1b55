//! The authkey handshake of [`Listener::accept`] and [`connect`] (Python's
//! `multiprocessing.connection` challenge: `#CHALLENGE#` with a
//! `{digest}` prefix or a legacy 20-byte body, the HMAC answer, `#WELCOME#`
//! or `#FAILURE#`; every message framed with a 4-byte length or `-1` and an
//! 8-byte one) against a peer on a real Unix socket whose every byte the
//! fuzzer chooses. The crate plays either side: the listener (it
//! challenges first) or the client (it answers first).
//!
//! The input is a flags byte and a script of operations (see [`Op`]): raw
//! bytes, framed messages (short or long header), challenges, a welcome or
//! a failure, and answers to the crate's challenge computed with the right
//! key or a wrong one (which needs the crate's random challenge, so the
//! peer reads it when it comes). The peer sends the script, then closes
//! its sending side and reads what the crate sent, or (by a flag) closes
//! the socket at once.
//!
//! Checked, besides no panic and no hang (every wait is bounded: the peer
//! reads and writes with a timeout, and a watchdog aborts an input that
//! runs over 15 s):
//! - a crate that reports success was sent a correct answer to its own
//!   challenge under its key: a peer that never learned the key is never
//!   accepted, whatever it sends;
//! - with an orderly close, the outcome and every message the crate sent
//!   are those of a model of CPython 3.13's `deliver_challenge` and
//!   `answer_challenge` fed the same bytes (below: [`Model`]); the crate's
//!   own challenges are `#CHALLENGE#{sha256}` and 40 bytes. The model
//!   keeps the crate's documented differences: `{sha3_*}` is refused, and
//!   a negative length other than -1 ends the handshake without a
//!   `#FAILURE#` (Python reads it as an empty message, refused too).
#![no_main]

use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use multiproc::conn::{connect, Address, Listener};
use multiproc::Error;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// The largest handshake message (Python's `recv_bytes(256)`).
const MAX: u64 = 256;
/// How long the peer waits for the crate to send or to read.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// An input running longer than this is a hang: the process aborts.
const WATCHDOG: Duration = Duration::from_secs(15);

/// The keys the crate is given (by the flags); the peer has the same one
/// or, by a flag, the next.
const KEYS: [&[u8]; 4] = [b"key", b"", b"another key", &[0x5a; 100]];

/// One listener per key (the crate as the server), and a plain socket
/// listener for the crate as the client, in a directory of this process
/// that an exit handler removes.
struct Env {
    listeners: Vec<Listener>,
    paths: Vec<PathBuf>,
    peer_listener: UnixListener,
    peer_path: PathBuf,
    /// Milliseconds since `base` when the current input started; 0 between inputs.
    started: AtomicU64,
    base: Instant,
}

static ENV: OnceLock<Env> = OnceLock::new();
static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("multiproc-fuzz-conn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("a directory for the sockets");
        DIR.set(dir.clone()).unwrap();
        // SAFETY: `remove_dir` is an `extern "C"` function without arguments.
        unsafe { libc::atexit(remove_dir) };
        let mut listeners = Vec::new();
        let mut paths = Vec::new();
        for (i, key) in KEYS.iter().enumerate() {
            let path = dir.join(format!("l{i}.sock"));
            listeners.push(Listener::bind(&Address::Unix(path.clone()), Some(key)).expect("bind"));
            paths.push(path);
        }
        let peer_path = dir.join("peer.sock");
        let peer_listener = UnixListener::bind(&peer_path).expect("bind the peer's socket");
        peer_listener.set_nonblocking(true).unwrap();
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(500));
            let Some(env) = ENV.get() else {
                continue;
            };
            let started = env.started.load(Ordering::Relaxed);
            let now = env.base.elapsed().as_millis() as u64;
            if started != 0 && now.saturating_sub(started) > WATCHDOG.as_millis() as u64 {
                eprintln!("conn_handshake: an input ran over {WATCHDOG:?}: a hang");
                std::process::abort();
            }
        });
        Env {
            listeners,
            paths,
            peer_listener,
            peer_path,
            started: AtomicU64::new(0),
            base: Instant::now(),
        }
    })
}

// ---- HMACs and CPython's rules -------------------------------------------

fn mac(name: &[u8], key: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(key).unwrap();
        m.update(message);
        m.finalize().into_bytes().to_vec()
    }
    Some(match name {
        b"md5" => run::<Hmac<md5::Md5>>(key, message),
        b"sha256" => run::<Hmac<sha2::Sha256>>(key, message),
        b"sha384" => run::<Hmac<sha2::Sha384>>(key, message),
        // `sha3_*` (Python's too) is refused by the crate.
        _ => return None,
    })
}

/// Python's `_get_digest_name_and_payload` past the legacy lengths: the
/// digest named by a `{name}` prefix Python allows, and the rest.
fn py_prefix(m: &[u8]) -> Option<(&[u8], &[u8])> {
    if m.first() != Some(&b'{') {
        return None;
    }
    // `message.find(b'}', 1, _MAX_DIGEST_LEN + 2)`.
    let end = m.len().min(10);
    let curly = 1 + m.get(1..end)?.iter().position(|&b| b == b'}')?;
    let name = &m[1..curly];
    let allowed: [&[u8]; 5] = [b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"];
    allowed.contains(&name).then(|| (name, &m[curly + 1..]))
}

/// Python's `_verify_challenge`: whether `response` answers `body`.
fn py_verify(key: &[u8], body: &[u8], response: &[u8]) -> bool {
    let (name, tag): (&[u8], &[u8]) = if response.len() == 16 || response.len() == 20 {
        (b"md5", response)
    } else {
        match py_prefix(response) {
            Some(found) => found,
            None => return false,
        }
    };
    mac(name, key, body).is_some_and(|expected| expected == tag)
}

/// Python's `answer_challenge` past the `#CHALLENGE#` prefix: the answer
/// to a challenge `body`, or `None` if it is refused.
fn py_answer(key: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < 20 {
        return None;
    }
    if body.len() == 20 {
        return mac(b"md5", key, body);
    }
    let (name, _) = py_prefix(body)?;
    let tag = mac(name, key, body)?;
    Some([b"{", name, b"}", &tag].concat())
}

// ---- The model of the crate's side --------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The crate listens: it challenges first.
    Server,
    /// The crate connects: it answers first.
    Client,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    AwaitDigest,
    AwaitChallenge,
    AwaitWelcome,
    Done(bool),
}

/// A message the crate is expected to send.
#[derive(Debug)]
enum Out {
    /// Its own challenge: `#CHALLENGE#{sha256}` and 40 random bytes.
    Challenge,
    Exact(Vec<u8>),
}

/// Python's side of the handshake, fed the peer's bytes.
struct Model {
    key: Vec<u8>,
    role: Role,
    state: State,
    /// The peer's bytes not yet taken as frames.
    stream: Vec<u8>,
    /// The body of the crate's last challenge, once the peer has read it.
    challenge: Option<Vec<u8>>,
    out: Vec<Out>,
}

enum Advance {
    /// The crate has sent a challenge whose body the model needs.
    NeedChallenge,
    /// Nothing more without more bytes.
    Idle,
}

impl Model {
    fn new(key: &[u8], role: Role) -> Model {
        let (state, out) = match role {
            Role::Server => (State::AwaitDigest, vec![Out::Challenge]),
            Role::Client => (State::AwaitChallenge, vec![]),
        };
        Model {
            key: key.to_vec(),
            role,
            state,
            stream: Vec::new(),
            challenge: None,
            out,
        }
    }

    /// The next whole frame of the peer's stream; `Err` for a header the
    /// crate refuses (over the limit, or negative other than -1).
    fn frame(&mut self) -> Result<Option<Vec<u8>>, ()> {
        let s = &self.stream;
        let Some(short) = s.first_chunk::<4>() else {
            return Ok(None);
        };
        let (at, len) = match i32::from_be_bytes(*short) {
            -1 => match s[4..].first_chunk::<8>() {
                Some(long) => (12, u64::from_be_bytes(*long)),
                None => return Ok(None),
            },
            n if n < 0 => return Err(()),
            n => (4, n as u64),
        };
        if len > MAX {
            return Err(());
        }
        let len = len as usize;
        if s.len() < at + len {
            return Ok(None);
        }
        let message = s[at..at + len].to_vec();
        self.stream.drain(..at + len);
        Ok(Some(message))
    }

    fn advance(&mut self) -> Advance {
        loop {
            if matches!(self.state, State::Done(_)) {
                return Advance::Idle;
            }
            if self.state == State::AwaitDigest && self.challenge.is_none() {
                return Advance::NeedChallenge;
            }
            let m = match self.frame() {
                Ok(Some(m)) => m,
                Ok(None) => return Advance::Idle,
                Err(()) => {
                    self.state = State::Done(false);
                    return Advance::Idle;
                }
            };
            self.state = match self.state {
                State::AwaitDigest => {
                    let body = self.challenge.take().unwrap();
                    if py_verify(&self.key, &body, &m) {
                        self.out.push(Out::Exact(WELCOME.to_vec()));
                        match self.role {
                            Role::Server => State::AwaitChallenge,
                            Role::Client => State::Done(true),
                        }
                    } else {
                        self.out.push(Out::Exact(FAILURE.to_vec()));
                        State::Done(false)
                    }
                }
                State::AwaitChallenge => {
                    match m
                        .strip_prefix(CHALLENGE)
                        .and_then(|b| py_answer(&self.key, b))
                    {
                        Some(answer) => {
                            self.out.push(Out::Exact(answer));
                            State::AwaitWelcome
                        }
                        None => State::Done(false),
                    }
                }
                State::AwaitWelcome if m != WELCOME => State::Done(false),
                State::AwaitWelcome => match self.role {
                    Role::Server => State::Done(true),
                    Role::Client => {
                        self.out.push(Out::Challenge);
                        State::AwaitDigest
                    }
                },
                State::Done(_) => unreachable!(),
            };
        }
    }
}

// ---- The peer -------------------------------------------------------------

/// What the crate sent, read and checked against the model.
struct Reader {
    buf: Vec<u8>,
    /// How many of the model's expected messages have been read.
    seen: usize,
    /// The body of the crate's last challenge, until the peer answers it.
    unanswered: Option<Vec<u8>>,
}

impl Reader {
    /// The crate's next message; `None` once it closed.
    fn next(&mut self, s: &mut UnixStream) -> Option<Vec<u8>> {
        loop {
            if let Some(short) = self.buf.first_chunk::<4>() {
                let len = i32::from_be_bytes(*short);
                assert!(
                    (0..=MAX as i32).contains(&len),
                    "the crate sent a header {short:?}"
                );
                let len = len as usize;
                if self.buf.len() >= 4 + len {
                    let m = self.buf[4..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Some(m);
                }
            }
            let mut chunk = [0; 1024];
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The crate closed with bytes of ours unread.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the crate neither sent nor closed within {PEER_TIMEOUT:?}: {e}"),
            }
        }
        assert!(
            self.buf.is_empty(),
            "the crate closed mid-message: {:?}",
            self.buf
        );
        None
    }

    /// Reads the crate's next message and checks it is the one expected.
    fn check_next(&mut self, s: &mut UnixStream, model: &Model) -> bool {
        let Some(m) = self.next(s) else {
            return false;
        };
        match model.out.get(self.seen) {
            None => panic!(
                "the crate sent {m:?} where Python sends nothing (expected {:?})",
                model.out
            ),
            Some(Out::Challenge) => {
                let body = m
                    .strip_prefix(CHALLENGE)
                    .unwrap_or_else(|| panic!("not a challenge: {m:?}"));
                assert!(
                    body.starts_with(b"{sha256}") && body.len() == 48,
                    "our challenge {m:?}"
                );
                self.unanswered = Some(body.to_vec());
            }
            Some(Out::Exact(e)) => {
                assert_eq!(&m, e, "the crate's message {} ({:?})", self.seen, model.out)
            }
        }
        self.seen += 1;
        true
    }
}

struct Peer {
    stream: UnixStream,
    model: Model,
    reader: Reader,
    /// The key the peer answers with.
    key: Vec<u8>,
    /// Whether it sent a correct answer under the crate's key.
    proved: bool,
    /// Its writes fail: the crate closed.
    broken: bool,
}

impl Peer {
    fn write(&mut self, bytes: &[u8]) {
        self.model.stream.extend_from_slice(bytes);
        let mut rest = bytes;
        while !rest.is_empty() && !self.broken {
            // SAFETY: `rest` is valid for `rest.len()` bytes for the call.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                rest = &rest[n as usize..];
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::Interrupted => {}
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => self.broken = true,
                _ => panic!("the crate read nothing for {PEER_TIMEOUT:?}: {e}"),
            }
        }
        self.pump();
    }

    /// Lets the model take the whole frames sent, reading the crate's
    /// challenges as the model says they come.
    fn pump(&mut self) {
        while let Advance::NeedChallenge = self.model.advance() {
            while self.reader.seen < self.model.out.len() {
                let expected = &self.model.out[self.reader.seen];
                let what = format!("{expected:?}");
                assert!(
                    self.reader.check_next(&mut self.stream, &self.model),
                    "the crate closed where Python sends {what} (state {:?})",
                    self.model.state
                );
            }
            self.model.challenge = Some(self.reader.unanswered.clone().unwrap());
        }
    }

    fn frame(&mut self, m: &[u8], long: bool) {
        let mut bytes = if long {
            [&[0xff; 4][..], &(m.len() as u64).to_be_bytes()].concat()
        } else {
            (m.len() as u32).to_be_bytes().to_vec()
        };
        bytes.extend_from_slice(m);
        self.write(&bytes);
    }
}

/// The fuzzer's bytes, taken from the front.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// Up to `n` bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// A length byte and that many bytes (fewer at the end).
    fn counted(&mut self) -> &'a [u8] {
        let n = self.byte().unwrap_or(0);
        self.take(n.into())
    }
}

/// One step of the peer's script (its byte, modulo 7; then its operands).
#[derive(Debug)]
enum Op<'a> {
    /// 0, n, n bytes: sent as they are.
    Raw(&'a [u8]),
    /// 1, n, n bytes: one message with a 4-byte header.
    Frame(&'a [u8]),
    /// 2, n, n bytes: one message with the long header (-1, 8 bytes).
    LongFrame(&'a [u8]),
    /// 3, d, c: the answer to the crate's last challenge (if it sent one
    /// not yet answered) with the peer's key: digest `d & 0x7f` modulo 5
    /// (raw HMAC-MD5, `{md5}`, `{sha256}`, `{sha384}`, `{sha3_256}` with
    /// 32 made-up bytes), a long header if `d & 0x80`; byte `c - 1`
    /// (modulo its length) flipped if `c` is not 0.
    Answer { digest: u8, long: bool, corrupt: u8 },
    /// 4, k, body: a challenge: kind `k & 0x7f` modulo 5 (legacy: 20 bytes;
    /// `{md5}`, `{sha256}`, `{sha384}`, `{sha3_256}` and n, n bytes), a
    /// long header if `k & 0x80`.
    Challenge { body: Vec<u8>, long: bool },
    /// 5: `#WELCOME#`.
    Welcome,
    /// 6: `#FAILURE#`.
    Failure,
}

impl<'a> Input<'a> {
    fn op(&mut self) -> Option<Op<'a>> {
        Some(match self.byte()? % 7 {
            0 => Op::Raw(self.counted()),
            1 => Op::Frame(self.counted()),
            2 => Op::LongFrame(self.counted()),
            3 => {
                let d = self.byte().unwrap_or(0);
                Op::Answer {
                    digest: (d & 0x7f) % 5,
                    long: d & 0x80 != 0,
                    corrupt: self.byte().unwrap_or(0),
                }
            }
            4 => {
                let k = self.byte().unwrap_or(0);
                let body = match (k & 0x7f) % 5 {
                    0 => self.take(20).to_vec(),
                    kind => {
                        let name = ["md5", "sha256", "sha384", "sha3_256"][usize::from(kind) - 1];
                        [format!("{{{name}}}").as_bytes(), self.counted()].concat()
                    }
                };
                Op::Challenge {
                    body,
                    long: k & 0x80 != 0,
                }
            }
            5 => Op::Welcome,
            _ => Op::Failure,
        })
    }
}

/// The peer's run: whether it proved the key, and the model's outcome
/// (with an orderly close only).
fn peer(
    stream: UnixStream,
    data: &[u8],
    crate_key: &[u8],
    peer_key: &[u8],
    role: Role,
    abrupt: bool,
) -> (bool, Option<bool>) {
    stream.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(PEER_TIMEOUT)).unwrap();
    let mut p = Peer {
        stream,
        model: Model::new(crate_key, role),
        reader: Reader {
            buf: Vec::new(),
            seen: 0,
            unanswered: None,
        },
        key: peer_key.to_vec(),
        proved: false,
        broken: false,
    };
    p.pump();
    let mut input = Input(data);
    while let Some(op) = input.op() {
        match op {
            Op::Raw(b) => p.write(b),
            Op::Frame(m) => p.frame(m, false),
            Op::LongFrame(m) => p.frame(m, true),
            Op::Answer {
                digest,
                long,
                corrupt,
            } => {
                let Some(body) = p.reader.unanswered.take() else {
                    continue;
                };
                let mut answer = match digest {
                    0 => mac(b"md5", &p.key, &body).unwrap(),
                    4 => [&b"{sha3_256}"[..], &[0x33; 32]].concat(),
                    d => {
                        let name = [&b"md5"[..], b"sha256", b"sha384"][usize::from(d) - 1];
                        [b"{", name, b"}", &mac(name, &p.key, &body).unwrap()].concat()
                    }
                };
                if corrupt != 0 {
                    let at = usize::from(corrupt - 1) % answer.len();
                    answer[at] ^= 1;
                }
                p.proved |= digest < 4 && corrupt == 0 && p.key == crate_key;
                p.frame(&answer, long);
            }
            Op::Challenge { body, long } => p.frame(&[CHALLENGE, &body].concat(), long),
            Op::Welcome => p.frame(WELCOME, false),
            Op::Failure => p.frame(FAILURE, false),
        }
    }
    if abrupt {
        return (p.proved, None);
    }
    let _ = p.stream.shutdown(std::net::Shutdown::Write);
    p.pump();
    if !matches!(p.model.state, State::Done(_)) {
        // Python's next receive ends at the end of the stream.
        p.model.state = State::Done(false);
    }
    while p.reader.check_next(&mut p.stream, &p.model) {}
    assert_eq!(
        p.reader.seen,
        p.model.out.len(),
        "the crate closed before sending all Python sends: {:?}",
        p.model.out
    );
    (p.proved, Some(p.model.state == State::Done(true)))
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let (flags, script) = data.split_first().map_or((0, &[][..]), |(f, s)| (*f, s));
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let k = usize::from(flags >> 1) & 3;
    let crate_key = KEYS[k];
    let peer_key = if flags & 8 == 0 {
        crate_key
    } else {
        KEYS[(k + 1) % KEYS.len()]
    };
    let abrupt = flags & 16 != 0;
    env.started
        .store(env.base.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);

    let (outcome, peer) = match role {
        Role::Server => {
            let stream = UnixStream::connect(&env.paths[k]).expect("connect to the listener");
            let script = script.to_vec();
            let peer = std::thread::spawn(move || {
                peer(stream, &script, crate_key, peer_key, role, abrupt)
            });
            (env.listeners[k].accept().map(drop), peer)
        }
        Role::Client => {
            let script = script.to_vec();
            let peer = std::thread::spawn(move || {
                // Waits for the crate's connection (in poll, not spinning:
                // the crate needs the CPU), up to the peer's timeout.
                let deadline = Instant::now() + PEER_TIMEOUT;
                let stream = loop {
                    match env.peer_listener.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            assert!(!left.is_zero(), "the crate never connected");
                            let mut pfd = libc::pollfd {
                                fd: env.peer_listener.as_raw_fd(),
                                events: libc::POLLIN,
                                revents: 0,
                            };
                            // SAFETY: one valid pollfd, for the length given
                            // (an interrupted poll is tried again above).
                            unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int + 1) };
                        }
                        Err(e) => panic!("the crate never connected: {e}"),
                    }
                };
                stream.set_nonblocking(false).unwrap();
                peer(stream, &script, crate_key, peer_key, role, abrupt)
            });
            let r = connect(&Address::Unix(env.peer_path.clone()), Some(crate_key)).map(drop);
            (r, peer)
        }
    };
    // The connection is closed (dropped above on success): the peer reads to its end.
    let (proved, expected) = match peer.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    env.started.store(0, Ordering::Relaxed);

    match &outcome {
        Ok(()) => assert!(proved, "{role:?} accepted a peer that never proved the key"),
        Err(Error::AuthenticationFailed(_)) => {}
        Err(e) => panic!("{role:?}: a handshake error that is not AuthenticationFailed: {e}"),
    }
    if let Some(expected) = expected {
        assert_eq!(
            outcome.is_ok(),
            expected,
            "{role:?}: the crate's outcome {outcome:?} is not Python's"
        );
    }
});
