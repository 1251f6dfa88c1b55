//! One process's connection to a manager server, and the round trips
//! every proxy operation makes over it, in Python's manager protocol:
//! pickled `(ident, methodname, args, kwds)` requests, `(kind, result)`
//! replies (see `PYTHON-WIRE.md`).
//!
//! Each process opens one long connection on first use
//! (`accept_connection`, as a CPython proxy's thread does), then asks the
//! server to hold the references this connection takes
//! (`_multiproc_hold`): multiproc's server then gives them back when the
//! connection closes, however the process ended. A server that refuses
//! (CPython's own) counts references globally; then the server-level calls
//! (`create`, `incref`, `decref`, …) go on short connections of their own,
//! as CPython's client sends them, and a dropped proxy's `decref` is what
//! gives its reference back.
//!
//! On multiproc's server over a `unix:` address, the long connection then
//! asks for a fast-path area (see `fast`): its requests and answers that
//! fit travel through shared memory, the socket staying for the rest and
//! for telling that the server is gone. [`Transport::Socket`] keeps every
//! call on the socket.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::calls;
use super::de::from_value;
use super::fast::{Called, ClientArea};
use super::limits::Budget;
use super::objects::MAX_FRAME;
use super::pickle;
use super::protocol::{Id, Kind, Op};
use super::ser::to_value;
use super::{ProxyRef, PyValue, Transport};
use crate::conn::auth::{handshake, Side, HANDSHAKE_TIMEOUT};
use crate::conn::{connect, Address, Connection};
use crate::error::{Error, Result};
use crate::per_process::PerProcess;
use crate::poison;
use crate::sys::Deadline;

/// The most memory decoding one answer may take: a client that trusts its
/// server still bounds what it reads, but never below what the server lets
/// one request take (`objects::REQUEST_MEMORY`, 8 frames), with room for
/// the answer's own wrapping. A value the server took in one request
/// reads back whole; at half that, a million-item value was stored but
/// could not be read, and a `pop` of it took it out and lost it.
const ANSWER_MEMORY: usize = 16 * MAX_FRAME;

/// The name this client's connections give the server (`accept_connection`).
const CONNECTION_NAME: &str = "MainProcess|multiproc";

/// Whether the server holds each connection's references
/// ([`Client::mode`]): not known before the first connection.
const UNKNOWN: u8 = 0;
/// It does (multiproc's server): every call goes on the long connection.
const HELD: u8 = 1;
/// It does not (CPython's): references are global counts.
const GLOBAL: u8 = 2;

/// One process's connection to the server, opened on first use in each
/// process (a forked child never shares its parent's socket).
///
/// Fork-safe: a child forked while another thread of its parent was in
/// the middle of a round trip (holding the parent's connection lock) never
/// touches that lock; it makes a connection state of its own, found by pid.
pub(super) struct Client {
    pub(super) address: Address,
    pub(super) authkey: Vec<u8>,
    /// The server's address as a `Token` carries it, in the nested proxies
    /// this client sends: `('host', port)` or a socket's path.
    token_address: PyValue,
    /// [`HELD`], [`GLOBAL`] or [`UNKNOWN`].
    mode: AtomicU8,
    /// Whether the long connections ask for a fast-path area.
    transport: Transport,
    /// This process's long connection, made on first use in each process.
    links: PerProcess<Link>,
}

/// A process's long connection, and its fast-path area if it has one
/// (which goes with the connection: a forked child's state drops both).
struct Link {
    /// First, so that they are dropped (off the list) before the socket
    /// and the area's doorbell are closed and their numbers reused.
    _listed: Listed,
    _doorbell_listed: Option<Listed>,
    conn: Connection,
    fast: Option<ClientArea>,
}

/// The sockets of this process's long connections, and of their areas'
/// doorbells (`-1`: a free place), which a forked child makes inert at
/// once ([`after_fork_in_child`]): the server sees a connection end, and
/// gives back the references it held, when its process ends, not when the
/// last child that inherited the socket does (a child never uses its
/// parent's connection). Room for 64 connections with an area; a socket
/// beyond the places is left as it is.
static SOCKETS: [AtomicI32; 128] = [const { AtomicI32::new(-1) }; 128];

/// A socket's place in [`SOCKETS`], if it has one, from as soon as the
/// connection is made (a child forked by another thread while the
/// connection's first requests are answered must not keep it open) until
/// it is dropped, before the socket is closed.
struct Listed {
    place: Option<usize>,
    fd: i32,
}

impl Listed {
    fn new(socket: &impl AsRawFd) -> Listed {
        let fd = socket.as_raw_fd();
        // The handler that makes them inert runs only once installed.
        let place = crate::fork_handlers::ready().ok().and_then(|()| {
            SOCKETS.iter().position(|s| {
                s.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
        });
        Listed { place, fd }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(i) = self.place {
            let _ = SOCKETS[i].compare_exchange(self.fd, -1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// In a forked child, right after the fork: makes its copies of the
/// parent's connections' sockets inert (the numbers stay taken by the
/// parent's state, which the child drops on its first call).
pub(crate) fn after_fork_in_child() {
    crate::sys::make_inert(SOCKETS.iter().filter_map(|s| {
        let fd = s.swap(-1, Ordering::AcqRel);
        (fd >= 0).then_some(fd)
    }));
}

/// What a call answered, before it is decoded.
pub(super) struct Answer {
    pub(super) value: PyValue,
    /// The objects whose references the server counted for this client
    /// with the answer: the new object of a `#PROXY` answer, and on a
    /// connection that holds its references, every proxy in the value.
    /// A proxy decoded from the answer takes one over; the others are
    /// given back once the answer is decoded.
    carried: Vec<Id>,
}

thread_local! {
    /// The references the answer this thread is decoding carries, not yet
    /// taken over by a proxy.
    static CARRIED: RefCell<Vec<Id>> = const { RefCell::new(Vec::new()) };
}

/// Takes over a reference to `id` that the answer being decoded carries,
/// if it carries one.
pub(super) fn take_carried(id: Id) -> bool {
    CARRIED.with_borrow_mut(|c| match c.iter().position(|&x| x == id) {
        Some(i) => {
            c.swap_remove(i);
            true
        }
        None => false,
    })
}

/// The ids of the proxies in `v`, one per proxy.
fn proxies_in(v: &PyValue, out: &mut Vec<Id>) {
    match v {
        PyValue::Proxy(r) => out.push(r.id),
        PyValue::List(vs) | PyValue::Tuple(vs) | PyValue::Set(vs) | PyValue::FrozenSet(vs) => {
            vs.iter().for_each(|v| proxies_in(v, out))
        }
        PyValue::Dict(d) => d.iter().for_each(|(k, v)| {
            proxies_in(k, out);
            proxies_in(v, out);
        }),
        PyValue::Object(o) => {
            o.args
                .iter()
                .chain(&o.state)
                .chain(&o.list_items)
                .for_each(|v| proxies_in(v, out));
            o.kwargs
                .iter()
                .flatten()
                .chain(&o.dict_items)
                .for_each(|(k, v)| {
                    proxies_in(k, out);
                    proxies_in(v, out);
                });
        }
        _ => {}
    }
}

impl Client {
    pub(super) fn new(address: Address, authkey: &[u8], transport: Transport) -> Client {
        Client {
            transport,
            token_address: pickle::token_address(&address),
            address,
            authkey: authkey.to_vec(),
            mode: AtomicU8::new(UNKNOWN),
            links: PerProcess::new(),
        }
    }

    /// A new authenticated connection to the server.
    fn open(&self) -> Result<Connection> {
        self.open_marked(|_| ()).map(|(conn, ())| conn)
    }

    /// [`open`](Client::open), `mark` called with the connection as soon
    /// as it is made, before the handshake (which may take up to
    /// [`HANDSHAKE_TIMEOUT`]): a child forked meanwhile by another thread
    /// must find the socket listed, to make it inert.
    fn open_marked<T>(&self, mark: impl FnOnce(&Connection) -> T) -> Result<(Connection, T)> {
        let mut conn = connect(&self.address, None).map_err(|e| match e {
            // Out of descriptors or memory here: the server is not gone.
            Error::Io { ref source, .. } if is_local_shortage(source) => e,
            Error::Io { .. } => Error::ManagerGone(e.to_string()),
            other => other,
        })?;
        let marked = mark(&conn);
        handshake(&mut conn, &self.authkey, Side::Client).map_err(|e| match e {
            // A handshake cut short by a server that died meanwhile (a
            // server that lives refused the key, and takes connections).
            Error::AuthenticationFailed(_) if self.refuses_connections() => {
                Error::ManagerGone(e.to_string())
            }
            other => other,
        })?;
        conn.set_max_message(MAX_FRAME);
        Ok((conn, marked))
    }

    /// Whether the server's address takes no connection (not for want of
    /// descriptors or memory here): the server is gone.
    fn refuses_connections(&self) -> bool {
        match connect(&self.address, None) {
            Err(Error::Io { ref source, .. }) => !is_local_shortage(source),
            _ => false,
        }
    }

    /// This process's long connection: `accept_connection`, then
    /// `_multiproc_hold`, which tells what kind of server it is; then, on
    /// multiproc's server on this machine, its fast-path area.
    fn open_long(&self) -> Result<Link> {
        // `listed` declared after `conn`: on an early return, dropped first.
        let (mut conn, listed) = self.open_marked(Listed::new)?;
        let accept = self.request(None, "accept_connection", &[CONNECTION_NAME.into()], &[]);
        answer_of(&self.hello(&mut conn, &accept)?, "accept_connection")?;
        let hold = self.request(None, "_multiproc_hold", &[], &[]);
        let held = match answer_of(&self.hello(&mut conn, &hold)?, "_multiproc_hold") {
            Ok(_) => HELD,
            // CPython's server answers `#TRACEBACK`: it has no such call.
            Err(Error::Remote { .. }) => GLOBAL,
            Err(e) => return Err(e),
        };
        self.mode.store(held, Ordering::Release);
        let fast = if held == HELD
            && self.transport == Transport::Auto
            && matches!(self.address, Address::Unix(_))
        {
            ClientArea::setup(&mut conn)?
        } else {
            None
        };
        Ok(Link {
            _listed: listed,
            _doorbell_listed: fast.as_ref().map(|a| Listed::new(a.doorbell())),
            conn,
            fast,
        })
    }

    /// A round trip of the first requests on a new connection, whose
    /// answer must come within the handshake's time limit: a peer that
    /// took the key but does not answer them is no manager (or a stuck
    /// one), and the connection is refused rather than waited on for ever.
    fn hello(&self, conn: &mut Connection, req: &[u8]) -> Result<Vec<u8>> {
        conn.send_bytes(req).map_err(gone)?;
        conn.recv_bytes_timeout(HANDSHAKE_TIMEOUT)
            .map_err(|e| self.mute(e))
    }

    /// A failure to receive an answer within [`HANDSHAKE_TIMEOUT`].
    fn mute(&self, e: Error) -> Error {
        match e {
            Error::Timeout => Error::ManagerGone(format!(
                "{}: no answer within {HANDSHAKE_TIMEOUT:?}: not a manager?",
                self.address
            )),
            e => gone(e),
        }
    }

    /// Sends the request `bytes` and reads the answer's, within
    /// [`HANDSHAKE_TIMEOUT`] if `timed` (else for as long as it takes). A
    /// failure to send or receive (or an answer not in time) leaves the
    /// connection unusable (the caller drops it); a request too large to
    /// send does not.
    fn round_trip(
        &self,
        conn: &mut Connection,
        fast: Option<&mut ClientArea>,
        bytes: &[u8],
        timed: bool,
    ) -> Result<Result<Vec<u8>>> {
        if bytes.len() > MAX_FRAME {
            // What the server would refuse by closing the connection.
            return Ok(Err(Error::MessageTooLarge {
                size: bytes.len() as u64,
                limit: MAX_FRAME,
            }));
        }
        let deadline = if timed {
            Deadline::after(HANDSHAKE_TIMEOUT)
        } else {
            Deadline::Never
        };
        let called = match fast {
            Some(area) if area.fits(bytes.len()) => {
                area.call(conn, bytes, deadline).map_err(|e| self.mute(e))?
            }
            _ => {
                conn.send_bytes(bytes).map_err(gone)?;
                Called::OnSocket
            }
        };
        Ok(Ok(match (called, deadline.remaining()) {
            (Called::Answer(answer), _) => answer,
            (Called::OnSocket, None) => conn.recv_bytes().map_err(gone)?,
            (Called::OnSocket, Some(left)) => {
                conn.recv_bytes_timeout(left).map_err(|e| self.mute(e))?
            }
        }))
    }

    /// One round trip on this process's long connection, opened if need be:
    /// the answer's bytes.
    fn on_long(&self, req: &[u8], timed: bool) -> Result<Vec<u8>> {
        let mut conn = poison::locked(self.links.get());
        let link = match &mut *conn {
            Some(link) => link,
            None => conn.insert(self.open_long()?),
        };
        match self.round_trip(&mut link.conn, link.fast.as_mut(), req, timed) {
            Ok(answer) => answer,
            Err(e) => {
                *conn = None;
                Err(e)
            }
        }
    }

    /// Whether the server holds this connection's references, connecting
    /// to find out if nobody has yet.
    pub(super) fn held(&self) -> Result<bool> {
        if self.mode.load(Ordering::Acquire) == UNKNOWN {
            let mut conn = poison::locked(self.links.get());
            if conn.is_none() {
                *conn = Some(self.open_long()?);
            }
        }
        Ok(self.mode.load(Ordering::Acquire) == HELD)
    }

    /// A server-level call (`ident` `None`): on the long connection of a
    /// server that holds its references, else on a short connection of its
    /// own, as CPython's server wants them.
    pub(super) fn server_call(&self, method: &'static str, args: Vec<PyValue>) -> Result<PyValue> {
        self.server_call_timed(method, args, false)
    }

    /// [`server_call`](Client::server_call), answered within
    /// [`HANDSHAKE_TIMEOUT`] if `timed`: the first call of a new handle,
    /// which a peer that took the key but is no manager (or a stuck one)
    /// never answers.
    pub(super) fn server_call_timed(
        &self,
        method: &'static str,
        args: Vec<PyValue>,
        timed: bool,
    ) -> Result<PyValue> {
        let req = self.request(None, method, &args, &[]);
        let answer = if self.held()? {
            self.on_long(&req, timed)?
        } else {
            let mut conn = self.open()?;
            self.round_trip(&mut conn, None, &req, timed)??
        };
        answer_of(&answer, method).map(|a| a.value)
    }

    /// Calls the method that does `op` on object `id` of kind `kind`.
    fn call_raw(&self, kind: Kind, id: Id, op: Op) -> Result<Answer> {
        let (method, args, kwds) = calls::request(kind, op);
        let req = self.request(Some(id), method, &args, &kwds);
        let answer = self.on_long(&req, false);
        // Dropped once the request has gone: a proxy in them that was
        // dropped meanwhile gives back its reference only now.
        args.into_iter().for_each(PyValue::drop_batch);
        drop(kwds);
        self.carrying(answer_of(&answer?, method))
    }

    /// An answer with the references a server that holds them counted
    /// for the proxies in its value (a `#PROXY` answer's one proxy carries
    /// its reference already).
    fn carrying(&self, answer: Result<Answer>) -> Result<Answer> {
        let mut answer = answer?;
        if self.mode.load(Ordering::Acquire) == HELD && answer.carried.is_empty() {
            proxies_in(&answer.value, &mut answer.carried);
        }
        Ok(answer)
    }

    /// Calls the method that does `op` on object `id`, decoding the answer
    /// as an `R`: every conversion checked (a count is a `usize` only if
    /// it fits one).
    pub(super) fn call<R: DeserializeOwned>(&self, kind: Kind, id: Id, op: Op) -> Result<R> {
        let answer = self.call_raw(kind, id, op)?;
        self.settle(answer)
    }

    /// [`call`](Client::call) of an `op` that takes a value out of object
    /// `id` (a `pop`): a value that does not decode as an `R` is put back
    /// with the operation `put_back` makes of it, so that a proxy of the
    /// wrong type loses nothing.
    pub(super) fn call_taking<R: DeserializeOwned>(
        &self,
        kind: Kind,
        id: Id,
        op: Op,
        put_back: impl FnOnce(PyValue) -> Option<Op>,
    ) -> Result<R> {
        let answer = self.call_raw(kind, id, op)?;
        let taken = answer.value.clone();
        // Put back before the references the answer carried are given
        // back, so that the objects of proxies in it stay alive.
        self.settle_or(answer, |e| {
            put_back_error(
                e,
                put_back(taken)
                    .map(|op| self.call::<serde::de::IgnoredAny>(kind, id, op).map(drop)),
            )
        })
    }

    /// Decodes an answer as an `R`, then gives back the references it
    /// carried that no proxy took over.
    fn settle<R: DeserializeOwned>(&self, answer: Answer) -> Result<R> {
        self.settle_or(answer, |e| e)
    }

    /// [`settle`](Client::settle), turning a failure to decode into
    /// `failed(error)` while the references are still held.
    fn settle_or<R: DeserializeOwned>(
        &self,
        answer: Answer,
        failed: impl FnOnce(Error) -> Error,
    ) -> Result<R> {
        let outer = CARRIED.replace(answer.carried);
        let decoded = decode(answer.value).map_err(failed);
        for id in CARRIED.replace(outer) {
            let _ = self.decref(id);
        }
        decoded
    }

    /// Several operations on object `id` in one round trip
    /// (`_multiproc_batch`), each answer decoded as an `R`. A server
    /// without batches (CPython's) gets them one by one.
    pub(super) fn batch<R: DeserializeOwned>(
        &self,
        kind: Kind,
        id: Id,
        ops: Vec<Op>,
    ) -> Result<Vec<R>> {
        if !self.held()? {
            return ops.into_iter().map(|op| self.call(kind, id, op)).collect();
        }
        let mut methods = Vec::with_capacity(ops.len());
        let ident = PyValue::Str(ident(id));
        let items = ops
            .into_iter()
            .map(|op| {
                let (method, args, kwds) = calls::request(kind, op);
                methods.push(method);
                PyValue::Tuple(vec![
                    ident.clone(),
                    method.into(),
                    PyValue::Tuple(args),
                    PyValue::Dict(kwds),
                ])
            })
            .collect();
        let items = [PyValue::List(items)];
        let req = self.request(None, "_multiproc_batch", &items, &[]);
        let answer = self.on_long(&req, false);
        // As in `call_raw`: once the request has gone.
        drop(items);
        let answers = match answer_of(&answer?, "_multiproc_batch")?.value {
            PyValue::List(answers) if answers.len() == methods.len() => answers,
            other => {
                return Err(Error::Deserialize(format!(
                    "a batch of {} answered {}",
                    methods.len(),
                    other.type_name()
                )))
            }
        };
        let answers: Vec<Result<Answer>> = answers
            .into_iter()
            .zip(methods)
            .map(|(a, method)| self.carrying(reply(a, method)))
            .collect();
        // Each answer is decoded (and what it owes given back) even after
        // a failed one.
        let mut out = Vec::with_capacity(answers.len());
        let mut failed = None;
        for a in answers {
            match a.and_then(|a| self.settle(a)) {
                Ok(v) => out.push(v),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// A new object of `kind` (`create(typeid)`), and the reference to it
    /// that the server counted for this client.
    pub(super) fn create(&self, kind: Kind) -> Result<Id> {
        let answer = self.server_call("create", vec![kind.typeid().into()])?;
        match answer {
            PyValue::Tuple(t) | PyValue::List(t) if t.len() == 2 => match &t[0] {
                PyValue::Str(ident) => parse_ident(ident),
                other => Err(Error::Deserialize(format!(
                    "create answered an ident of type {}",
                    other.type_name()
                ))),
            },
            other => Err(Error::Deserialize(format!(
                "create answered {}, not (ident, exposed)",
                other.type_name()
            ))),
        }
    }

    /// The bytes of the request `(ident, methodname, args, kwds)`.
    fn request(
        &self,
        id: Option<Id>,
        method: &str,
        args: &[PyValue],
        kwds: &[(PyValue, PyValue)],
    ) -> Vec<u8> {
        let mut hex = [0; 16];
        let ident = id.map(|id| ident_in(id, &mut hex));
        pickle::dumps_request(ident, method, args, kwds, &self.token_address)
    }

    /// Takes one more reference to object `id`.
    pub(super) fn incref(&self, id: Id) -> Result<()> {
        self.server_call("incref", vec![ident(id).into()]).map(drop)
    }

    /// Gives back a reference to object `id`.
    pub(super) fn decref(&self, id: Id) -> Result<()> {
        self.server_call("decref", vec![ident(id).into()]).map(drop)
    }
}

/// An object's ident on the wire: its id in hex (`'%x' % id(obj)` in
/// CPython's server, so its idents read back the same).
fn ident(id: Id) -> String {
    ident_in(id, &mut [0; 16]).to_owned()
}

/// [`ident`], written into `buf` rather than a new string.
fn ident_in(id: Id, buf: &mut [u8; 16]) -> &str {
    let digits = (64 - id.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in buf[..digits].iter_mut().enumerate() {
        let nibble = (id >> (4 * (digits - 1 - i))) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    // Hex digits are ASCII.
    std::str::from_utf8(&buf[..digits]).unwrap_or_default()
}

/// The id an ident names.
fn parse_ident(ident: &str) -> Result<Id> {
    Id::from_str_radix(ident, 16)
        .map_err(|_| Error::Deserialize(format!("the server named an object {ident:?}")))
}

/// The error of a value taken out of an object that did not decode, after
/// `put_back` (`None`: there was nothing to put back).
pub(super) fn put_back_error(e: Error, put_back: Option<Result<()>>) -> Error {
    match put_back {
        Some(Ok(())) => Error::Deserialize(format!("{e}; the value was put back")),
        Some(Err(again)) => Error::Deserialize(format!(
            "{e}; the value was taken, and putting it back failed: {again}"
        )),
        None => e,
    }
}

/// An answer's value, from its pickle.
fn loads(answer: &[u8]) -> Result<PyValue> {
    let mut budget = Budget::new(usize::MAX, ANSWER_MEMORY);
    pickle::loads_answer(answer, &mut budget).map_err(|(kind, message)| match kind {
        // The decoder's words are a server's, for a request.
        "MemoryError" => Error::Deserialize(format!(
            "MemoryError: the answer would take more than {} MiB to decode here; \
             ask for less at a time (a slice)",
            ANSWER_MEMORY >> 20
        )),
        _ => Error::Deserialize(format!("{kind}: {message}")),
    })
}

/// What the server's answer `bytes` to a call of `method` mean. The
/// answer to most calls, `('#RETURN', None)` or a number, is read
/// straight from its bytes.
pub(super) fn answer_of(bytes: &[u8], method: &str) -> Result<Answer> {
    match pickle::returned_scalar(bytes) {
        Some(value) => Ok(Answer {
            value,
            carried: Vec::new(),
        }),
        None => reply(loads(bytes)?, method),
    }
}

/// Whether a failed connect ran out of something of this process's or
/// this machine's (descriptors, memory), not of the server's.
fn is_local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
    )
}

/// A failure to send or receive: the server is gone if the connection is.
fn gone(e: Error) -> Error {
    match e {
        Error::ConnectionClosed => Error::ManagerGone("the server closed the connection".into()),
        Error::Io { .. } => Error::ManagerGone(e.to_string()),
        other => other,
    }
}

/// What a `(kind, result)` reply to a call of `method` means.
fn reply(answer: PyValue, method: &str) -> Result<Answer> {
    let (kind, result) = match answer {
        PyValue::Tuple(t) if t.len() == 2 => {
            let mut t = t.into_iter();
            match (t.next(), t.next()) {
                (Some(PyValue::Str(kind)), Some(result)) => (kind, result),
                _ => return Err(malformed()),
            }
        }
        _ => return Err(malformed()),
    };
    match kind.as_str() {
        "#RETURN" => Ok(Answer {
            value: result,
            carried: Vec::new(),
        }),
        "#ERROR" => Err(raised(result)),
        "#PROXY" => proxy(result),
        "#TRACEBACK" | "#UNSERIALIZABLE" => {
            let text = match result {
                PyValue::Str(s) => s,
                other => other.to_string(),
            };
            let message = if method.starts_with("_multiproc_") {
                format!(
                    "{method} is multiproc's own, and this server (not multiproc's) does \
                     not have it: {}",
                    text.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                )
            } else {
                text
            };
            Err(Error::Remote {
                kind: "RemoteError".into(),
                message,
            })
        }
        other => Err(Error::Deserialize(format!(
            "the server answered a {other:?} reply"
        ))),
    }
}

fn malformed() -> Error {
    Error::Deserialize("the server's answer is not a (kind, result) pair".into())
}

/// The error an `#ERROR` reply's exception object is: its class's name,
/// and Python's `str()` of it.
fn raised(exception: PyValue) -> Error {
    let PyValue::Object(o) = exception else {
        return Error::Remote {
            kind: "Exception".into(),
            message: exception.to_string(),
        };
    };
    let message = match o.args.as_slice() {
        [] => String::new(),
        [PyValue::Str(s)] if o.name != "KeyError" => s.clone(),
        [v] => v.repr(),
        vs => PyValue::Tuple(vs.to_vec()).repr(),
    };
    Error::Remote {
        kind: o.name.clone(),
        message,
    }
}

/// A `#PROXY` answer, `(exposed, Token(typeid, address, ident))`: the new
/// object as a proxy value, and the reference the server counted for it.
fn proxy(result: PyValue) -> Result<Answer> {
    let bad = || Error::Deserialize("a #PROXY answer is not (exposed, Token)".into());
    let PyValue::Tuple(t) = result else {
        return Err(bad());
    };
    let Some(PyValue::Object(token)) = t.get(1) else {
        return Err(bad());
    };
    let Some(PyValue::Tuple(fields)) = &token.state else {
        return Err(bad());
    };
    let (Some(PyValue::Str(typeid)), Some(PyValue::Str(ident))) = (fields.first(), fields.get(2))
    else {
        return Err(bad());
    };
    let kind = Kind::from_typeid(typeid)
        .ok_or_else(|| Error::Deserialize(format!("no proxy of typeid {typeid:?} here")))?;
    let id = parse_ident(ident)?;
    Ok(Answer {
        value: PyValue::Proxy(ProxyRef::new(kind, id)),
        carried: vec![id],
    })
}

/// A key or value as the manager stores it.
pub(super) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<PyValue> {
    to_value(v).map_err(|e| Error::Serialize(e.to_string()))
}

/// A `T` from what the manager answered.
pub(super) fn decode<T: DeserializeOwned>(v: PyValue) -> Result<T> {
    from_value(v).map_err(|e| Error::Deserialize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::PyObject;
    use super::*;

    #[test]
    fn idents_are_lowercase_hex_as_cpythons() {
        let mut ids = vec![0, 1, 9, 10, 15, 16, 0xabc, u64::MAX, u64::MAX >> 4];
        ids.extend((0..64).map(|shift| 1u64 << shift));
        for id in ids {
            assert_eq!(ident(id), format!("{id:x}"));
            assert_eq!(parse_ident(&ident(id)).unwrap(), id);
        }
    }

    fn answer(kind: &str, result: PyValue) -> PyValue {
        PyValue::Tuple(vec![kind.into(), result])
    }

    fn exception(name: &str, args: Vec<PyValue>) -> PyValue {
        PyValue::Object(Box::new(PyObject::call("builtins", name, args)))
    }

    fn remote(r: Result<Answer>) -> (String, String) {
        match r {
            Err(Error::Remote { kind, message }) => (kind, message),
            Err(e) => panic!("not a remote error: {e}"),
            Ok(a) => panic!("answered {}", a.value),
        }
    }

    /// Python's `str()` of the exception an `#ERROR` carries.
    #[test]
    fn errors_are_their_exceptions_name_and_str() {
        let (k, m) = remote(reply(
            answer("#ERROR", exception("KeyError", vec!["k".into()])),
            "__getitem__",
        ));
        assert_eq!((k.as_str(), m.as_str()), ("KeyError", "'k'"));
        let (k, m) = remote(reply(
            answer(
                "#ERROR",
                exception("IndexError", vec!["list index out of range".into()]),
            ),
            "__getitem__",
        ));
        assert_eq!(
            (k.as_str(), m.as_str()),
            ("IndexError", "list index out of range")
        );
        let (_, m) = remote(reply(
            answer(
                "#ERROR",
                exception("ValueError", vec![1.into(), "x".into()]),
            ),
            "index",
        ));
        assert_eq!(m, "(1, 'x')");
        let (_, m) = remote(reply(
            answer("#ERROR", exception("RuntimeError", vec![])),
            "x",
        ));
        assert_eq!(m, "");
        let traceback = "Traceback (most recent call last):\n  ...\nKeyError: None\n";
        let (k, m) = remote(reply(
            answer("#TRACEBACK", traceback.into()),
            "_multiproc_increment",
        ));
        assert_eq!(k, "RemoteError");
        assert!(
            m.starts_with("_multiproc_increment is multiproc's own")
                && m.ends_with("KeyError: None")
                && !m.contains("  "),
            "{m}"
        );
        let (k, m) = remote(reply(answer("#UNSERIALIZABLE", "text".into()), "get"));
        assert_eq!((k.as_str(), m.as_str()), ("RemoteError", "text"));
        assert!(matches!(
            reply(PyValue::Int(1), "get"),
            Err(Error::Deserialize(_))
        ));
    }

    /// A `#PROXY` answer is a proxy value carrying the reference the
    /// server counted for it.
    #[test]
    fn a_proxy_answer_carries_its_reference() {
        let token = PyObject::token(Kind::Dict, 0xab, &PyValue::from("/x.sock"));
        let a = reply(
            answer(
                "#PROXY",
                PyValue::Tuple(vec![
                    PyValue::Tuple(vec![]),
                    PyValue::Object(Box::new(token)),
                ]),
            ),
            "__iter__",
        )
        .unwrap();
        assert!(matches!(&a.value, PyValue::Proxy(r) if r.id == 0xab && r.kind == Kind::Dict));
        assert_eq!(a.carried, [0xab]);
    }
}
