//! The manager server: owns the objects and serves every client connection
//! from one event loop.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use super::protocol::{Id, Kind, Op, Request, Response};
use super::value::refs;
use super::Value;
use crate::conn::auth::{Handshake, Side, HANDSHAKE_MAX, HANDSHAKE_TIMEOUT};
use crate::conn::{Connection, Listener};

/// The largest request the server accepts: a frame over this closes that
/// connection before anything is allocated for it.
pub(crate) const MAX_REQUEST: usize = 16 << 20;

/// A fast hasher for the server's dicts (the Fx hash of rustc): SipHash's
/// protection against hash flooding is not needed for authenticated
/// clients, and it costs more than the rest of a small insert.
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(n.into());
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        // The product's entropy is in its high bits; the table indexes by
        // the low ones (rustc-hash does the same).
        self.0.rotate_left(26)
    }
}

type Map = IndexMap<Value, Value, std::hash::BuildHasherDefault<FxHasher>>;

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
}

type Outcome = std::result::Result<Value, (&'static str, String)>;

fn key_error(key: &Value) -> (&'static str, String) {
    ("KeyError", format!("{key:?}"))
}

fn type_error(msg: String) -> (&'static str, String) {
    ("TypeError", msg)
}

/// A Python index into a list of `len` items, negative from the end.
fn index(
    key: &Value,
    len: usize,
    inserting: bool,
) -> std::result::Result<usize, (&'static str, String)> {
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

/// `a + b` for ints and floats.
fn add(a: &Value, b: &Value) -> Outcome {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x
            .checked_add(*y)
            .map(Value::Int)
            .ok_or_else(|| ("OverflowError", format!("{x} + {y} overflows a 64-bit int"))),
        (Value::Int(x), Value::Float(y)) => Ok(Value::Float(*x as f64 + y)),
        (Value::Float(x), Value::Int(y)) => Ok(Value::Float(x + *y as f64)),
        (Value::Float(x), Value::Float(y)) => Ok(Value::Float(x + y)),
        _ => Err(type_error(format!(
            "unsupported operand types for +=: '{}' and '{}'",
            a.type_name(),
            b.type_name()
        ))),
    }
}

fn apply(entry: &mut Entry, op: Op) -> Outcome {
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
        (Object::Dict(d), Op::Snapshot) => Ok(Value::Dict(
            d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )),
        (Object::List(l), Op::Snapshot) => Ok(Value::List(l.clone())),
        (Object::Dict(d), Op::Get(k)) => d.get(&k).cloned().ok_or_else(|| match kind {
            Kind::Namespace => ("AttributeError", format!("no attribute {k:?}")),
            _ => key_error(&k),
        }),
        (Object::List(l), Op::Get(k)) => Ok(l[index(&k, l.len(), false)?].clone()),
        (Object::Dict(d), Op::Lookup(k)) => Ok(d.get(&k).cloned().unwrap_or(Value::None)),
        (Object::Dict(d), Op::Set(k, v)) => {
            d.insert(k, v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Set(k, v)) => {
            let i = index(&k, l.len(), false)?;
            l[i] = v;
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Del(k)) => d
            .shift_remove(&k)
            .map(|_| Value::None)
            .ok_or_else(|| key_error(&k)),
        (Object::List(l), Op::Del(k)) => {
            let i = index(&k, l.len(), false)?;
            l.remove(i);
            Ok(Value::None)
        }
        (Object::Dict(d), Op::Pop(k)) => d.shift_remove(&k).ok_or_else(|| key_error(&k)),
        (Object::List(l), Op::Pop(k)) => {
            if l.is_empty() {
                return Err(("IndexError", "pop from empty list".into()));
            }
            let i = index(&k, l.len(), false)?;
            Ok(l.remove(i))
        }
        (Object::Dict(d), Op::Discard(k)) => Ok(d.shift_remove(&k).unwrap_or(Value::None)),
        (Object::Dict(d), Op::PopItem) => d
            .pop()
            .map(|(k, v)| Value::Tuple(vec![k, v]))
            .ok_or_else(|| ("KeyError", "popitem(): dictionary is empty".into())),
        (Object::Dict(d), Op::SetDefault(k, v)) => Ok(d.entry(k).or_insert(v).clone()),
        (Object::Dict(d), Op::Contains(k)) => Ok(Value::Bool(d.contains_key(&k))),
        (Object::List(l), Op::Contains(v)) => Ok(Value::Bool(l.contains(&v))),
        (Object::Dict(d), Op::Keys) => Ok(Value::List(d.keys().cloned().collect())),
        (Object::Dict(d), Op::Values) => Ok(Value::List(d.values().cloned().collect())),
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
            let at = if i < 0 { (i + len).max(0) } else { i.min(len) };
            l.insert(at as usize, v);
            Ok(Value::None)
        }
        (Object::List(l), Op::Remove(v)) => match l.iter().position(|x| *x == v) {
            Some(i) => {
                l.remove(i);
                Ok(Value::None)
            }
            None => Err(("ValueError", "list.remove(x): x not in list".into())),
        },
        (Object::List(l), Op::Index(v)) => l
            .iter()
            .position(|x| *x == v)
            .map(|i| Value::Int(i as i64))
            .ok_or_else(|| ("ValueError", format!("{v:?} is not in list"))),
        (Object::List(l), Op::Count(v)) => {
            Ok(Value::Int(l.iter().filter(|x| **x == v).count() as i64))
        }
        (Object::List(l), Op::Reverse) => {
            l.reverse();
            Ok(Value::None)
        }
        (Object::List(l), Op::Sort) => {
            l.sort();
            Ok(Value::None)
        }
        (Object::List(l), Op::Slice(a, b)) => {
            let len = l.len() as i64;
            let clamp = |i: i64| (if i < 0 { i + len } else { i }).clamp(0, len) as usize;
            let (a, b) = (clamp(a), clamp(b));
            Ok(Value::List(if a < b {
                l[a..b].to_vec()
            } else {
                Vec::new()
            }))
        }
        (_, op) => Err(type_error(format!(
            "{op:?} is not an operation of a {kind:?}"
        ))),
    }
}

impl Objects {
    fn handle(&mut self, req: Request) -> Response {
        let outcome = match req {
            Request::Create(kind) => {
                self.next += 1;
                let object = match kind {
                    Kind::List => Object::List(Vec::new()),
                    Kind::Dict | Kind::Namespace => Object::Dict(Map::default()),
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
            Request::Call(id, op) => self.entry(id).and_then(|e| apply(e, op)),
            Request::Batch(ops) => {
                return Response::Batch(
                    ops.into_iter()
                        .map(|(id, op)| self.handle(Request::Call(id, op)))
                        .collect(),
                )
            }
            Request::NumberOfObjects => Ok(Value::Int(self.table.len() as i64)),
            Request::Shutdown => Ok(Value::None),
        };
        match outcome {
            Ok(v) => Response::Value(v),
            Err((kind, message)) => Response::Error {
                kind: kind.into(),
                message,
            },
        }
    }

    fn entry(&mut self, id: Id) -> std::result::Result<&mut Entry, (&'static str, String)> {
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
            let idle = p.handshake.is_none() && !p.pending() && !p.closing && !p.dead;
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
        if crate::sys::poll(&mut pfds, Some(timeout)).is_err() {
            // Only EINVAL or ENOMEM: nothing to wait on now; try again.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        for (p, pfd) in peers.iter_mut().zip(&pfds[1..]) {
            if pfd.revents & libc::POLLOUT != 0 {
                p.flush();
            }
            let readable = pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
            if readable && !p.dead && stopping.is_none() {
                if serve_peer(p, &mut objects, true) {
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
            dead: false,
        };
        match listener.authkey() {
            None => peer.conn.set_max_message(MAX_REQUEST),
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
    while peer.out.len() < OUT_LIMIT {
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
        if let Some((handshake, _)) = &mut peer.handshake {
            let step = handshake.receive(frame);
            if let Some(m) = step.send {
                peer.queue(&m);
            }
            match step.outcome {
                Ok(false) => {}
                Ok(true) => {
                    peer.handshake = None;
                    peer.conn.set_max_message(MAX_REQUEST);
                }
                Err(_) => {
                    peer.closing = true;
                    break;
                }
            }
            continue;
        }
        let Some((response, shutdown)) = objects.request(frame, &mut peer.held) else {
            peer.dead = true;
            break;
        };
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
    /// encoded response and whether it asked for a shutdown, or `None` if
    /// it was malformed (which ends the connection).
    fn request(&mut self, frame: &[u8], held: &mut HashMap<Id, u64>) -> Option<(Vec<u8>, bool)> {
        let req = postcard::from_bytes::<Request>(frame);
        // Proxies inside the request must name objects of this manager.
        let decoded = refs::take_decoded();
        let answer = req.ok().map(|req| {
            let shutdown = matches!(req, Request::Shutdown);
            let unknown = decoded
                .iter()
                .find(|(kind, id)| self.table.get(id).is_none_or(|e| e.kind != *kind));
            let response = match unknown {
                Some((kind, id)) => Response::Error {
                    kind: "ReferenceError".into(),
                    message: format!("this manager has no {kind:?} object {id}"),
                },
                None => self.serve(req, held),
            };
            let mut bytes = postcard::to_allocvec(&response);
            // A frame's length is a u32: a larger answer is refused whole.
            if bytes
                .as_ref()
                .is_ok_and(|b| u32::try_from(b.len()).is_err())
            {
                refs::take_sent();
                bytes = postcard::to_allocvec(&Response::Error {
                    kind: "MemoryError".into(),
                    message: "the answer is over 4 GiB; ask for less at a time".into(),
                });
            }
            (bytes, shutdown)
        });
        // The client holds a reference to each proxy in the response.
        let sent = refs::take_sent();
        let answer = match answer {
            Some((Ok(bytes), shutdown)) => {
                for id in sent {
                    if let Some(e) = self.table.get_mut(&id) {
                        e.refs += 1;
                        *held.entry(id).or_default() += 1;
                    }
                }
                Some((bytes, shutdown))
            }
            _ => None,
        };
        self.settle();
        answer
    }

    /// Serves one request of a connection holding the references `held`.
    fn serve(&mut self, req: Request, held: &mut HashMap<Id, u64>) -> Response {
        match req {
            // A connection may only give back references it holds.
            Request::Decref(id) if held.get(&id).is_none_or(|&n| n == 0) => Response::Error {
                kind: "ReferenceError".into(),
                message: format!("this connection holds no reference to object {id}"),
            },
            Request::Decref(id) => {
                *held.entry(id).or_default() -= 1;
                self.handle(Request::Decref(id))
            }
            Request::Incref(id) => {
                let r = self.handle(Request::Incref(id));
                if matches!(r, Response::Value(_)) {
                    *held.entry(id).or_default() += 1;
                }
                r
            }
            req => {
                let r = self.handle(req);
                if let Response::Created(id) = r {
                    *held.entry(id).or_default() += 1;
                }
                r
            }
        }
    }
}
