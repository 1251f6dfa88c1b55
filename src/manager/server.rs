//! The manager server: owns the objects and serves every client connection
//! from one event loop.

use std::collections::HashMap;
use std::hash::RandomState;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use super::limits::{self, Budget, MAX_WORK};
use super::protocol::{Exception, Id, Kind, Op, Request, Response};
use super::value::{refs, sort};
use super::Value;
use crate::conn::auth::{Handshake, Side, HANDSHAKE_MAX, HANDSHAKE_TIMEOUT};
use crate::conn::{Connection, Listener};

/// The largest frame either way: a request over this closes that
/// connection before anything is allocated for it, and an answer that
/// would exceed it is refused with a `MemoryError` before it is built.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// Room in a frame for the answer's own tags around what the budget counts.
const FRAME_SLACK: usize = 64;

/// The most memory one request may take: decoding it, and the copies its
/// answer is built from.
const REQUEST_MEMORY: usize = 4 * MAX_FRAME;

/// The server's dicts hash with SipHash-1-3 under a random key of this
/// server's (std's `RandomState`): a client that chooses keys cannot
/// choose their collisions.
type Map = IndexMap<Value, Value, RandomState>;

enum Object {
    /// Dicts and namespaces (whose keys are names).
    Dict(Map),
    List(Vec<Value>),
}

struct Entry {
    kind: Kind,
    refs: u64,
    object: Object,
}

struct Objects {
    next: Id,
    table: HashMap<Id, Entry>,
    /// The key of every dict's hasher.
    hasher: RandomState,
}

type Outcome = std::result::Result<Value, Exception>;

/// The answer for a Python exception.
fn error((kind, message): Exception) -> Response {
    Response::Error {
        kind: kind.into(),
        message,
    }
}

/// `serve()`, but a panic (a bug) fails only the request it happened in:
/// the answer is an error and the server goes on serving everyone. The
/// object table stays consistent: values are never left half-made, and the
/// references of those dropped while unwinding are recorded as ever.
fn survive_panic(serve: impl FnOnce() -> Response) -> Response {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(serve)).unwrap_or_else(|_| {
        error((
            "SystemError",
            "the manager server failed on this request (a bug); it goes on serving".into(),
        ))
    })
}

fn key_error(key: &Value) -> Exception {
    ("KeyError", key.repr())
}

fn type_error(msg: String) -> Exception {
    ("TypeError", msg)
}

/// A Python index into a list of `len` items, negative from the end.
fn index(key: &Value, len: usize, inserting: bool) -> std::result::Result<usize, Exception> {
    let Value::Int(i) = *key else {
        return Err(type_error(format!(
            "list indices must be integers, not {}",
            key.type_name()
        )));
    };
    let len = len as i64;
    let at = if i < 0 { i + len } else { i };
    let limit = if inserting { len + 1 } else { len };
    if (0..limit).contains(&at) {
        Ok(at as usize)
    } else {
        Err((
            "IndexError",
            format!("list index {i} out of range for length {len}"),
        ))
    }
}

/// `a + b` for ints and floats (and bools, which are ints in Python).
fn add(a: &Value, b: &Value) -> Outcome {
    let int = |v: &Value| match *v {
        Value::Bool(b) => Value::Int(b.into()),
        ref v => v.clone(),
    };
    match (int(a), int(b)) {
        (Value::Int(x), Value::Int(y)) => x
            .checked_add(y)
            .map(Value::Int)
            .ok_or_else(|| ("OverflowError", format!("{x} + {y} overflows a 64-bit int"))),
        (Value::Int(x), Value::Float(y)) => Ok(Value::Float(x as f64 + y)),
        (Value::Float(x), Value::Int(y)) => Ok(Value::Float(x + y as f64)),
        (Value::Float(x), Value::Float(y)) => Ok(Value::Float(x + y)),
        _ => Err(type_error(format!(
            "unsupported operand types for +=: '{}' and '{}'",
            a.type_name(),
            b.type_name()
        ))),
    }
}

/// Applies `op` to an object; the answer's copies of stored values are
/// taken from `budget` before they are made.
fn apply(entry: &mut Entry, op: Op, budget: &mut Budget) -> Outcome {
    let kind = entry.kind;
    match (&mut entry.object, op) {
        (Object::Dict(d), Op::Len) => Ok(Value::Int(d.len() as i64)),
        (Object::List(l), Op::Len) => Ok(Value::Int(l.len() as i64)),
        (Object::Dict(d), Op::Clear) => {
            d.clear();
            Ok(Value::None)
        }
        (Object::List(l), Op::Clear) => {
            l.clear();
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Snapshot) => {
            budget.charge(d.iter().flat_map(|(k, v)| [k, v]))?;
            Ok(Value::Dict(
                d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ))
        }
        (Object::List(l), Op::Snapshot) => {
            budget.charge(l.iter())?;
            Ok(Value::List(l.clone()))
        }
        (Object::Dict(d), Op::Get(k)) => match d.get(&k) {
            Some(v) => {
                budget.charge([v])?;
                Ok(v.clone())
            }
            None => Err(match kind {
                Kind::Namespace => ("AttributeError", format!("no attribute {}", k.repr())),
                _ => key_error(&k),
            }),
        },
        (Object::List(l), Op::Get(k)) => {
            let v = &l[index(&k, l.len(), false)?];
            budget.charge([v])?;
            Ok(v.clone())
        }
        (Object::Dict(d), Op::Lookup(k)) => match d.get(&k) {
            Some(v) => {
                budget.charge([v])?;
                Ok(v.clone())
            }
            None => Ok(Value::None),
        },
        (Object::Dict(d), Op::Set(k, v)) => {
            d.insert(k, v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Set(k, v)) => {
            let i = index(&k, l.len(), false)?;
            l[i] = v;
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Del(k)) => remove_key(d, &k, budget)?
            .map(|_| Value::None)
            .ok_or_else(|| key_error(&k)),
        (Object::List(l), Op::Del(k)) => {
            let i = index(&k, l.len(), false)?;
            budget.work(l.len() - i)?;
            l.remove(i);
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Pop(k)) => {
            budget.charge(d.get(&k))?;
            remove_key(d, &k, budget)?.ok_or_else(|| key_error(&k))
        }
        (Object::List(l), Op::Pop(k)) => {
            if l.is_empty() {
                return Err(("IndexError", "pop from empty list".into()));
            }
            let i = index(&k, l.len(), false)?;
            budget.charge([&l[i]])?;
            budget.work(l.len() - i)?;
            Ok(l.remove(i))
        }
        (Object::Dict(d), Op::Discard(k)) => {
            budget.charge(d.get(&k))?;
            Ok(remove_key(d, &k, budget)?.unwrap_or(Value::None))
        }
        (Object::Dict(d), Op::PopItem) => {
            budget.charge(d.last().into_iter().flat_map(|(k, v)| [k, v]))?;
            d.pop()
                .map(|(k, v)| Value::Tuple(vec![k, v]))
                .ok_or_else(|| ("KeyError", "popitem(): dictionary is empty".into()))
        }
        (Object::Dict(d), Op::SetDefault(k, v)) => {
            budget.charge([d.get(&k).unwrap_or(&v)])?;
            Ok(d.entry(k).or_insert(v).clone())
        }
        (Object::Dict(d), Op::Contains(k)) => Ok(Value::Bool(d.contains_key(&k))),
        (Object::List(l), Op::Contains(v)) => {
            scan(l, &v, budget)?;
            Ok(Value::Bool(l.contains(&v)))
        }
        (Object::Dict(d), Op::Keys) => {
            budget.charge(d.keys())?;
            Ok(Value::List(d.keys().cloned().collect()))
        }
        (Object::Dict(d), Op::Values) => {
            budget.charge(d.values())?;
            Ok(Value::List(d.values().cloned().collect()))
        }
        (Object::Dict(d), Op::Update(items)) => {
            d.extend(items);
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Increment(k, delta)) => {
            let new = match d.get(&k) {
                Some(old) => add(old, &delta)?,
                None => add(&Value::Int(0), &delta)?,
            };
            d.insert(k, new.clone());
            Ok(new)
        }
        (Object::List(l), Op::Increment(k, delta)) => {
            let i = index(&k, l.len(), false)?;
            l[i] = add(&l[i], &delta)?;
            Ok(l[i].clone())
        }
        (Object::Dict(d), Op::CompareAndSet(k, expected, new)) => {
            let matches = d.get(&k) == expected.as_ref();
            if matches {
                d.insert(k, new);
            }
            Ok(Value::Bool(matches))
        }
        (Object::List(l), Op::CompareAndSet(k, expected, new)) => {
            let i = index(&k, l.len(), false)?;
            let matches = Some(&l[i]) == expected.as_ref();
            if matches {
                l[i] = new;
            }
            Ok(Value::Bool(matches))
        }
        (Object::List(l), Op::Append(v)) => {
            l.push(v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Extend(vs)) => {
            l.extend(vs);
            Ok(Value::None)
        }
        (Object::List(l), Op::Insert(i, v)) => {
            // Python clamps an insert index to the list.
            let len = l.len() as i64;
            let at = if i < 0 { (i + len).max(0) } else { i.min(len) } as usize;
            budget.work(l.len() - at)?;
            l.insert(at, v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Remove(v)) => {
            scan(l, &v, budget)?;
            match l.iter().position(|x| *x == v) {
                Some(i) => {
                    l.remove(i);
                    Ok(Value::None)
                }
                None => Err(("ValueError", "list.remove(x): x not in list".into())),
            }
        }
        (Object::List(l), Op::Index(v)) => {
            scan(l, &v, budget)?;
            l.iter()
                .position(|x| *x == v)
                .map(|i| Value::Int(i as i64))
                .ok_or_else(|| ("ValueError", format!("{} is not in list", v.repr())))
        }
        (Object::List(l), Op::Count(v)) => {
            scan(l, &v, budget)?;
            Ok(Value::Int(l.iter().filter(|x| **x == v).count() as i64))
        }
        (Object::List(l), Op::Reverse) => {
            budget.work(l.len())?;
            l.reverse();
            Ok(Value::None)
        }
        (Object::List(l), Op::Sort) => {
            // Each of about n log n comparisons walks at most the smaller
            // of two items.
            let mut widest = 0;
            for v in l.iter() {
                let size = limits::size(v);
                budget.work(size)?;
                widest = widest.max(size);
            }
            let n = l.len();
            let compares = n.saturating_mul(n.max(2).ilog2() as usize + 1);
            budget.work(compares.saturating_mul(widest))?;
            sort(l).map_err(type_error)?;
            Ok(Value::None)
        }
        (Object::List(l), Op::Slice(a, b)) => {
            let len = l.len() as i64;
            let clamp = |i: i64| (if i < 0 { i + len } else { i }).clamp(0, len) as usize;
            let (a, b) = (clamp(a), clamp(b));
            let items = l.get(a..b).unwrap_or_default();
            budget.charge(items)?;
            Ok(Value::List(items.to_vec()))
        }
        (_, op) => Err(type_error(format!(
            "{} is not an operation of a {kind:?}",
            op.name()
        ))),
    }
}

/// Takes the work of comparing `probe` with every item of `items`.
fn scan(items: &[Value], probe: &Value, budget: &mut Budget) -> std::result::Result<(), Exception> {
    budget.work(items.len().saturating_mul(limits::size(probe)))
}

/// `d.pop(k)` keeping the order of the others, which moves those after it.
fn remove_key(
    d: &mut Map,
    k: &Value,
    budget: &mut Budget,
) -> std::result::Result<Option<Value>, Exception> {
    let Some(i) = d.get_index_of(k) else {
        return Ok(None);
    };
    budget.work(d.len() - i)?;
    Ok(d.shift_remove_index(i).map(|(_, v)| v))
}

/// What every answer in a batch costs beyond the stored values it copies:
/// its tag and a scalar, or its error's text.
fn answer_overhead(r: &Response) -> usize {
    16 + match r {
        Response::Error { kind, message } => kind.len() + message.len(),
        _ => 0,
    }
}

impl Objects {
    fn handle(&mut self, req: Request, budget: &mut Budget) -> Response {
        let outcome = match req {
            Request::Create(kind) => {
                self.next += 1;
                let object = match kind {
                    Kind::List => Object::List(Vec::new()),
                    Kind::Dict | Kind::Namespace => {
                        Object::Dict(Map::with_hasher(self.hasher.clone()))
                    }
                };
                self.table.insert(
                    self.next,
                    Entry {
                        kind,
                        refs: 1,
                        object,
                    },
                );
                return Response::Created(self.next);
            }
            Request::Incref(id) => self.entry(id).map(|e| {
                e.refs += 1;
                Value::None
            }),
            Request::Decref(id) => self.entry(id).map(|_| ()).map(|()| {
                self.decref(id);
                Value::None
            }),
            Request::Call(id, op) => self.entry(id).and_then(|e| apply(e, op, budget)),
            Request::Batch(ops) => {
                let mut answers = Vec::with_capacity(ops.len());
                for (id, op) in ops {
                    let r = self.handle(Request::Call(id, op), budget);
                    let r = match budget.charge_bytes(answer_overhead(&r)) {
                        Ok(()) => r,
                        Err(e) => error(e),
                    };
                    // Once something is refused, the rest is not done.
                    if let (true, Response::Error { kind, message }) = (budget.spent(), &r) {
                        return Response::Error {
                            kind: kind.clone(),
                            message: format!("{message} (the operations before it were done)"),
                        };
                    }
                    answers.push(r);
                }
                return Response::Batch(answers);
            }
            Request::NumberOfObjects => Ok(Value::Int(self.table.len() as i64)),
            Request::Shutdown => Ok(Value::None),
        };
        outcome.map_or_else(error, Response::Value)
    }

    fn entry(&mut self, id: Id) -> std::result::Result<&mut Entry, Exception> {
        self.table
            .get_mut(&id)
            .ok_or_else(|| ("ReferenceError", format!("the manager has no object {id}")))
    }
}

/// How long a shutting-down server tries to deliver the last responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The longest the loop waits in a blocking receive on its one client.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// How often the server checks that the process that started it is alive.
const PARENT_CHECK: Duration = Duration::from_secs(1);
/// Responses queued for one client beyond which the server stops reading
/// its requests until they are sent: a client that sends without reading
/// costs the server bounded memory.
const OUT_LIMIT: usize = 1 << 20;

/// One client connection of the event loop.
struct Peer {
    conn: Connection,
    /// Until the client has proved it knows the key: the handshake, and the
    /// moment it must be over.
    handshake: Option<(Handshake, Instant)>,
    /// Encoded responses not yet sent, and how much of them was.
    out: Vec<u8>,
    sent: usize,
    /// The references this connection (one client process) holds: released
    /// when it closes, however the client ended, so that a process that
    /// exits or is killed never leaks an object.
    held: HashMap<Id, u64>,
    /// Close once `out` is sent (after a failed handshake).
    closing: bool,
    /// Its last turn ended before every buffered frame was served: serve
    /// it again without waiting for its socket.
    more: bool,
    /// Gone: its references are released and it is dropped.
    dead: bool,
}

impl Peer {
    fn queue(&mut self, message: &[u8]) {
        // Answers over 4 GiB were replaced by an error (`Objects::request`).
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(message);
    }

    /// Sends what the socket takes now.
    fn flush(&mut self) {
        while self.sent < self.out.len() {
            match crate::sys::send_nowait(&self.conn, &self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        if self.closing {
            self.dead = true;
        }
    }

    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }
}

/// Serves clients until one asks for a shutdown (or, with `parent`, until
/// that process is gone); then removes the socket file and exits.
///
/// One thread runs an event loop over every connection: it never blocks on
/// a client, so a slow or hostile one (including one that stalls in the
/// handshake) delays no one else. One thread is also what makes the server
/// safe to fork from a multithreaded program: a thread created in a forked
/// child can deadlock on a lock another parent thread held at the fork.
pub(crate) fn serve(listener: Listener, parent: Option<u32>) -> ! {
    crate::sys::flush_stdio();
    refs::start();
    let mut objects = Objects::new();
    let mut peers: Vec<Peer> = Vec::new();
    let mut stopping: Option<Instant> = None;
    let mut checked = Instant::now();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let exit = |listener: &Listener| -> ! {
        listener.remove_socket_file();
        crate::sys::exit_now(0)
    };
    // Without it, a single client is served through poll (see below).
    let fast_single = crate::sys::signal_on_connect(&listener).is_ok();
    // Every readiness accepts the whole queue: a connection left queued
    // would wait for the next readiness or signal, which may never come.
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("manager server: {e}");
        crate::sys::exit_now(1);
    }
    let mut accepting = Accepting::default();
    loop {
        let now = Instant::now();
        accepting.resume_after(now);
        if now.duration_since(checked) >= PARENT_CHECK {
            checked = now;
            if parent.is_some_and(|p| std::os::unix::process::parent_id() != p) {
                exit(&listener);
            }
        }
        // Handshakes past their deadline end; so does a shutdown's grace.
        for p in &mut peers {
            if p.handshake.as_ref().is_some_and(|(_, d)| *d <= now) {
                p.dead = true;
            }
        }
        if release_dead(&mut peers, &mut objects) {
            accepting.resume();
        }
        if let Some(deadline) = stopping {
            if deadline <= now || peers.iter().all(|p| !p.pending()) {
                exit(&listener);
            }
        }
        // One client, and nothing else to do: wait in a blocking receive on
        // its socket, whose wake-up costs less than poll's (a fifth of a
        // round trip on these machines). A new connection interrupts it
        // (SIGIO), and the socket's receive timeout bounds it.
        if let [p] = peers.as_mut_slice() {
            let idle = p.handshake.is_none() && !p.pending() && !p.closing && !p.dead && !p.more;
            if fast_single && idle && stopping.is_none() && !crate::sys::take_connect_signal() {
                match p.conn.read_some() {
                    Ok(false) => {}
                    Ok(true) => {
                        if serve_peer(p, &mut objects, false) {
                            stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                        }
                        p.flush();
                        continue;
                    }
                    Err(_) => p.dead = true,
                }
            }
        }
        let mut timeout = PARENT_CHECK;
        for (_, d) in peers.iter().filter_map(|p| p.handshake.as_ref()) {
            timeout = timeout.min(d.saturating_duration_since(now));
        }
        for d in stopping.iter().chain(&accepting.paused_until) {
            timeout = timeout.min(d.saturating_duration_since(now));
        }
        if peers.iter().any(|p| p.more && p.out.len() < OUT_LIMIT) {
            timeout = Duration::ZERO;
        }
        pfds.clear();
        pfds.push(libc::pollfd {
            fd: if stopping.is_some() || accepting.paused_until.is_some() {
                -1
            } else {
                listener.as_raw_fd()
            },
            events: libc::POLLIN,
            revents: 0,
        });
        for p in &peers {
            let mut events = 0;
            if p.pending() {
                events |= libc::POLLOUT;
            }
            if stopping.is_none() && !p.closing && p.out.len() < OUT_LIMIT {
                events |= libc::POLLIN;
            }
            pfds.push(libc::pollfd {
                fd: p.conn.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        if crate::sys::poll(&mut pfds, crate::sys::Deadline::after(timeout)).is_err() {
            // Only EINVAL or ENOMEM: nothing to wait on now; try again.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        for (p, pfd) in peers.iter_mut().zip(&pfds[1..]) {
            if pfd.revents & libc::POLLOUT != 0 {
                p.flush();
            }
            let readable = pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
            let unserved = p.more && p.out.len() < OUT_LIMIT;
            if (readable || unserved) && !p.dead && stopping.is_none() {
                if serve_peer(p, &mut objects, readable) {
                    stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                p.flush();
            }
        }
        if pfds[0].revents != 0 {
            accepting.accept_all(&listener, &mut peers);
        }
    }
}

/// How long the server stops accepting after running out of descriptors,
/// unless a connection closes first.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Whether the listener is watched: out of descriptors, a queued
/// connection keeps it readable while `accept` keeps failing, so the loop
/// stops watching it until a connection closes (or [`ACCEPT_PAUSE`]).
#[derive(Default)]
struct Accepting {
    paused_until: Option<Instant>,
    /// The pause was logged (once: a client may cause it at will).
    logged: bool,
}

impl Accepting {
    fn resume(&mut self) {
        self.paused_until = None;
    }

    fn resume_after(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.resume();
        }
    }

    /// Takes every queued client (until `accept` would block), or pauses.
    fn accept_all(&mut self, listener: &Listener, peers: &mut Vec<Peer>) {
        loop {
            let conn = match listener.accept_unauthenticated() {
                Ok(conn) => conn,
                Err(crate::Error::Io { source, .. }) => match source.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    // That one connection failed; the queue goes on.
                    Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR) => continue,
                    // Out of descriptors or memory: the queue waits.
                    _ => {
                        if !self.logged {
                            self.logged = true;
                            log::warn!(
                                "manager server: cannot accept clients ({source}); \
                                 paused until a connection closes"
                            );
                        }
                        self.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                        return;
                    }
                },
                Err(_) => return,
            };
            if let Some(peer) = Peer::new(listener, conn) {
                peers.push(peer);
            }
        }
    }
}

impl Peer {
    /// A new client's peer, its handshake begun; `None` if that failed
    /// (its connection then closes and the others go on).
    fn new(listener: &Listener, conn: Connection) -> Option<Peer> {
        // Only the loop's blocking receive (one client, nothing else to do)
        // waits; this bounds it, for the parent check and for new clients.
        crate::sys::set_recv_timeout(&conn, RECV_TIMEOUT).ok()?;
        let mut peer = Peer {
            conn,
            handshake: None,
            out: Vec::new(),
            sent: 0,
            held: HashMap::new(),
            closing: false,
            more: false,
            dead: false,
        };
        match listener.authkey() {
            None => peer.conn.set_max_message(MAX_FRAME),
            Some(key) => {
                let Ok((handshake, Some(first))) = Handshake::new(key, Side::Server) else {
                    return None;
                };
                peer.conn.set_max_message(HANDSHAKE_MAX);
                peer.queue(&first);
                peer.handshake = Some((handshake, Instant::now() + HANDSHAKE_TIMEOUT));
                peer.flush();
            }
        }
        Some(peer)
    }
}

/// Serves the requests that have arrived whole on one connection (reading
/// once more first if `read`); whether one of them asked for a shutdown.
fn serve_peer(peer: &mut Peer, objects: &mut Objects, read: bool) -> bool {
    let mut first = read;
    // The work of this turn: frames decoded and steps taken. Beyond a
    // quarter of one request's most, the others get their turn first: a
    // turn is at most about one request's work.
    let mut turn = 0;
    peer.more = false;
    loop {
        if turn >= MAX_WORK / 4 || peer.out.len() >= OUT_LIMIT {
            peer.more = true;
            break;
        }
        // One read per readiness; then what it brought, frame by frame.
        let frame = match peer.conn.try_recv_frame(std::mem::take(&mut first)) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            // Malformed input or a vanished client ends this connection only.
            Err(_) => {
                peer.dead = true;
                break;
            }
        };
        turn += frame.len();
        if let Some((handshake, _)) = &mut peer.handshake {
            let step = handshake.receive(frame);
            if let Some(m) = step.send {
                peer.queue(&m);
            }
            match step.outcome {
                Ok(false) => {}
                Ok(true) => {
                    peer.handshake = None;
                    peer.conn.set_max_message(MAX_FRAME);
                }
                Err(_) => {
                    peer.closing = true;
                    break;
                }
            }
            continue;
        }
        let Some((response, shutdown, work)) = objects.request(frame, &mut peer.held) else {
            peer.dead = true;
            break;
        };
        turn += work;
        peer.queue(&response);
        if shutdown {
            return true;
        }
    }
    false
}

/// Drops the connections that ended, giving back every reference they
/// held; whether there were any.
fn release_dead(peers: &mut Vec<Peer>, objects: &mut Objects) -> bool {
    let before = peers.len();
    peers.retain_mut(|p| {
        if p.dead {
            for (&id, &n) in &p.held {
                for _ in 0..n {
                    objects.decref(id);
                }
            }
        }
        !p.dead
    });
    objects.settle();
    peers.len() < before
}

impl Objects {
    fn new() -> Objects {
        // Ids start at a random point, so that a proxy of another manager,
        // stored here by mistake, names no object of this one.
        let mut seed = [0u8; 8];
        let _ = crate::sys::random_bytes(&mut seed);
        Objects {
            next: u64::from_le_bytes(seed) >> 2,
            table: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// Gives back one reference; the last one frees the object.
    fn decref(&mut self, id: Id) {
        if let Some(e) = self.table.get_mut(&id) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                // Dropping it gives back the references its values held.
                self.table.remove(&id);
            }
        }
    }

    /// Applies the references that `ProxyRef`s took and gave back (by
    /// being decoded, cloned, stored or dropped), taking before giving
    /// back, until freeing objects frees no more.
    fn settle(&mut self) {
        loop {
            let deltas = refs::take_deltas();
            if deltas.is_empty() {
                return;
            }
            for &(id, _) in deltas.iter().filter(|(_, d)| *d > 0) {
                if let Some(e) = self.table.get_mut(&id) {
                    e.refs += 1;
                }
            }
            for &(id, _) in deltas.iter().filter(|(_, d)| *d < 0) {
                self.decref(id);
            }
        }
    }

    /// Serves one encoded request of a connection holding `held`: the
    /// encoded response, whether it asked for a shutdown and the work it
    /// took, or `None` if it was malformed (which ends the connection).
    fn request(
        &mut self,
        frame: &[u8],
        held: &mut HashMap<Id, u64>,
    ) -> Option<(Vec<u8>, bool, usize)> {
        let (req, exceeded, memory) =
            limits::decode_limited(REQUEST_MEMORY, || postcard::from_bytes::<Request>(frame));
        // Proxies inside the request must name objects of this manager.
        let decoded = refs::take_decoded();
        let mut work = 0;
        let (response, shutdown) = match (req, exceeded) {
            (Ok(req), _) => {
                let shutdown = matches!(req, Request::Shutdown);
                let unknown = decoded
                    .iter()
                    .find(|(kind, id)| self.table.get(id).is_none_or(|e| e.kind != *kind));
                let response = match unknown {
                    Some((kind, id)) => error((
                        "ReferenceError",
                        format!("this manager has no {kind:?} object {id}"),
                    )),
                    None => {
                        let mut budget = Budget::new(MAX_FRAME - FRAME_SLACK, memory);
                        let r = survive_panic(|| self.serve(req, held, &mut budget));
                        work = budget.work_done();
                        r
                    }
                };
                (response, shutdown)
            }
            // Too deep or too large, but a whole frame: the stream goes on.
            (Err(_), Some(why)) => (error(why.error(REQUEST_MEMORY)), false),
            (Err(_), None) => {
                self.settle();
                return None;
            }
        };
        let mut bytes = postcard::to_allocvec(&response);
        // The budget keeps answers within a frame; should it ever fail,
        // the answer is refused whole rather than cut.
        if bytes.as_ref().is_ok_and(|b| b.len() > MAX_FRAME) {
            refs::take_sent();
            bytes = postcard::to_allocvec(&error((
                "MemoryError",
                "the answer would exceed the frame limit; ask for less at a time".into(),
            )));
        }
        drop(response);
        // The client holds a reference to each proxy in the response.
        let sent = refs::take_sent();
        let answer = match bytes {
            Ok(bytes) => {
                for id in sent {
                    if let Some(e) = self.table.get_mut(&id) {
                        e.refs += 1;
                        *held.entry(id).or_default() += 1;
                    }
                }
                Some((bytes, shutdown, work))
            }
            Err(_) => None,
        };
        self.settle();
        answer
    }

    /// Serves one request of a connection holding the references `held`.
    fn serve(
        &mut self,
        req: Request,
        held: &mut HashMap<Id, u64>,
        budget: &mut Budget,
    ) -> Response {
        match req {
            // A connection may only give back references it holds.
            Request::Decref(id) if held.get(&id).is_none_or(|&n| n == 0) => Response::Error {
                kind: "ReferenceError".into(),
                message: format!("this connection holds no reference to object {id}"),
            },
            Request::Decref(id) => {
                *held.entry(id).or_default() -= 1;
                self.handle(Request::Decref(id), budget)
            }
            Request::Incref(id) => {
                let r = self.handle(Request::Incref(id), budget);
                if matches!(r, Response::Value(_)) {
                    *held.entry(id).or_default() += 1;
                }
                r
            }
            req => {
                let r = self.handle(req, budget);
                if let Response::Created(id) = r {
                    *held.entry(id).or_default() += 1;
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::manager::MAX_DEPTH;

    /// One server's object table and one connection's references.
    struct Server {
        objects: Objects,
        held: HashMap<Id, u64>,
    }

    impl Server {
        fn new() -> Server {
            Server {
                objects: Objects::new(),
                held: HashMap::new(),
            }
        }

        fn frame(&mut self, frame: &[u8]) -> Response {
            let (bytes, ..) = self
                .objects
                .request(frame, &mut self.held)
                .expect("a reply");
            assert!(bytes.len() <= MAX_FRAME);
            postcard::from_bytes(&bytes).unwrap()
        }

        fn ask(&mut self, req: Request) -> Response {
            self.frame(&postcard::to_allocvec(&req).unwrap())
        }

        fn create(&mut self, kind: Kind) -> Id {
            match self.ask(Request::Create(kind)) {
                Response::Created(id) => id,
                _ => panic!("not created"),
            }
        }

        fn call(&mut self, id: Id, op: Op) -> std::result::Result<Value, String> {
            match self.ask(Request::Call(id, op)) {
                Response::Value(v) => Ok(v),
                Response::Error { kind, .. } => Err(kind),
                _ => panic!("not a value"),
            }
        }
    }

    /// A request to call `op` (its postcard bytes) on `id`, whose last
    /// argument is a list nested `depth` deep around an int: encoded by
    /// hand, as encoding it recursively could itself exhaust the stack.
    fn deep_call(id: Id, op: u8, depth: usize) -> Vec<u8> {
        let mut frame = vec![3]; // Request::Call
        let mut id = id;
        while id >= 0x80 {
            frame.push(id as u8 | 0x80);
            id >>= 7;
        }
        frame.push(id as u8);
        frame.push(op);
        for _ in 0..depth {
            frame.extend([6, 1]); // Value::List of one item
        }
        frame.extend([2, 2]); // Value::Int(1)
        frame
    }

    const OP_LOOKUP: u8 = 4;
    const OP_APPEND: u8 = 17;

    fn error_kind(r: Response) -> String {
        match r {
            Response::Error { kind, .. } => kind,
            Response::Batch(rs) => panic!("expected an error, got {} answers", rs.len()),
            _ => panic!("expected an error"),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn values_nested_too_deep_get_an_error_reply_and_the_deepest_accepted_are_served() {
        let mut s = Server::new();
        let l = s.create(Kind::List);
        let d = s.create(Kind::Dict);
        // 35,000 levels aborted the server (issue 12.2); now refused.
        assert_eq!(
            error_kind(s.frame(&deep_call(l, OP_APPEND, 35_000))),
            "RecursionError"
        );
        assert_eq!(
            error_kind(s.frame(&deep_call(d, OP_LOOKUP, 25_000))),
            "RecursionError"
        );
        // The deepest accepted value, through every walk of the server.
        for _ in 0..3 {
            assert!(matches!(
                s.frame(&deep_call(l, OP_APPEND, MAX_DEPTH - 1)),
                Response::Value(Value::None)
            ));
        }
        let deep = s.call(l, Op::Get(Value::Int(0))).unwrap();
        assert_eq!(s.call(l, Op::Count(deep.clone())), Ok(Value::Int(3)));
        s.call(l, Op::Sort).unwrap();
        s.call(l, Op::Snapshot).unwrap();
        s.call(d, Op::Set(deep.clone(), deep.clone())).unwrap();
        assert_eq!(
            s.call(d, Op::Get(Value::List(vec![deep.clone()]))),
            Err("KeyError".into())
        );
        s.call(d, Op::Snapshot).unwrap();
        s.call(d, Op::Clear).unwrap();
        s.call(l, Op::Clear).unwrap();
    }

    #[test]
    fn numbers_are_one_key_and_sort_as_python_sorts_them() {
        let mut s = Server::new();
        let d = s.create(Kind::Dict);
        for (i, k) in [Value::Int(1), Value::Float(1.0), Value::Bool(true)]
            .into_iter()
            .enumerate()
        {
            s.call(d, Op::Set(k, Value::Int(i as i64))).unwrap();
        }
        assert_eq!(s.call(d, Op::Len), Ok(Value::Int(1)));
        assert_eq!(s.call(d, Op::Get(Value::Float(1.0))), Ok(Value::Int(2)));
        // The sort that panicked the server (issue 12.3).
        let l = s.create(Kind::List);
        let big = 1i64 << 53;
        let items = (0..7)
            .flat_map(|_| {
                [
                    Value::Int(big),
                    Value::Float(big as f64),
                    Value::Int(big + 1),
                ]
            })
            .collect();
        s.call(l, Op::Extend(items)).unwrap();
        s.call(l, Op::Sort).unwrap();
        assert_eq!(s.call(l, Op::Get(Value::Int(-1))), Ok(Value::Int(big + 1)));
        // What Python refuses to sort is a TypeError; the list is as it was.
        let mixed = s.create(Kind::List);
        let items = vec![Value::Int(1), Value::Str("a".into())];
        s.call(mixed, Op::Extend(items.clone())).unwrap();
        assert_eq!(s.call(mixed, Op::Sort), Err("TypeError".into()));
        assert_eq!(s.call(mixed, Op::Snapshot), Ok(Value::List(items)));
    }

    #[test]
    fn a_panic_fails_only_its_request() {
        let r = survive_panic(|| panic!("a bug"));
        assert_eq!(error_kind(r), "SystemError");
        let mut s = Server::new();
        let d = s.create(Kind::Dict);
        s.call(d, Op::Set(Value::Int(1), Value::Int(2))).unwrap();
        assert_eq!(s.call(d, Op::Len), Ok(Value::Int(1)));
    }

    #[test]
    fn dicts_hash_under_a_key_of_each_server() {
        use std::hash::BuildHasher;
        let (a, b) = (Objects::new(), Objects::new());
        let key = Value::Int(12345);
        assert_ne!(a.hasher.hash_one(&key), b.hasher.hash_one(&key));
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn one_request_costs_bounded_memory_and_answers_within_a_frame() {
        let mut s = Server::new();
        let l = s.create(Kind::List);
        s.call(l, Op::Extend(vec![Value::Int(7); 1000])).unwrap();
        // 40,000 snapshots of a 1000-item list in one batch needed 1.3 GB
        // (issue 12.6): refused once the answer would pass a frame.
        let t = Instant::now();
        let batch = Request::Batch((0..40_000).map(|_| (l, Op::Snapshot)).collect());
        assert_eq!(error_kind(s.ask(batch)), "MemoryError");
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        // An extend of 4 Mi Nones (4 MiB) would take 128 MiB: refused
        // while decoding.
        let mut frame = vec![3];
        frame.extend(postcard::to_allocvec(&l).unwrap());
        frame.push(18); // Op::Extend
        frame.extend(postcard::to_allocvec(&(4u32 << 20)).unwrap());
        frame.resize(frame.len() + (4 << 20), 0);
        assert_eq!(error_kind(s.frame(&frame)), "MemoryError");
        assert_eq!(s.call(l, Op::Len), Ok(Value::Int(1000)));
        // A snapshot larger than a frame is refused before it is copied;
        // a slice that fits is served.
        let big = Value::Str("x".repeat(1 << 20));
        for _ in 0..17 {
            s.call(l, Op::Append(big.clone())).unwrap();
        }
        assert_eq!(s.call(l, Op::Snapshot), Err("MemoryError".into()));
        assert!(s.call(l, Op::Slice(0, 1010)).is_ok());
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn one_request_does_bounded_work() {
        let mut s = Server::new();
        let l = s.create(Kind::List);
        for _ in 0..4 {
            s.call(l, Op::Extend(vec![Value::Int(1); 1 << 18])).unwrap();
        }
        // A million comparisons are served; a batch of a hundred such
        // scans, or of a thousand inserts at the front, is refused whole
        // before it is done.
        assert_eq!(s.call(l, Op::Count(Value::Int(1))), Ok(Value::Int(1 << 20)));
        let t = Instant::now();
        let scans = Request::Batch((0..100).map(|_| (l, Op::Count(Value::Int(1)))).collect());
        assert_eq!(error_kind(s.ask(scans)), "RuntimeError");
        let inserts = Request::Batch((0..1000).map(|_| (l, Op::Insert(0, Value::None))).collect());
        assert_eq!(error_kind(s.ask(inserts)), "RuntimeError");
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        // The inserts before the refused one were done, as in a loop of calls.
        let Ok(Value::Int(n)) = s.call(l, Op::Len) else {
            panic!("no length")
        };
        assert!(n > 1 << 20 && n < (1 << 20) + 1000);
    }
}
