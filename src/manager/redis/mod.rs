//! The Redis backend of the managed layer: the same proxies
//! ([`DictProxy`](super::DictProxy), [`ListProxy`](super::ListProxy),
//! [`NamespaceProxy`](super::NamespaceProxy)) on a Redis server, so that
//! processes on other machines share them (see
//! [`Manager::connect_redis`](super::Manager::connect_redis)).
//!
//! Each object is a few Redis keys under one hash tag,
//! `multiproc:{<kind>:<name>}:<part>` (see [`key`]), so that a cluster keeps
//! them on one node and a script may touch them all. Every operation is one
//! command or one Lua script, never a read then a write from the client:
//! concurrent updates from any number of machines are atomic. (A `pop` of
//! a value the script cannot tell decodes, a pickle or a str that is not
//! ASCII, takes two: the first leaves it, the second takes it if it is
//! still the value the client decoded, see [`take`]: what does not decode
//! is never taken.) Values are
//! stored as `codec` says. Each process has its own connection (a forked
//! child makes its own), and the manager's timeout bounds each call as a
//! whole, whatever the server sends or does not (see [`wire`]).

#[cfg(not(fuzzing))]
pub(crate) mod codec;
/// The stored values' codec, public to the fuzzer only (built with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod codec;
mod dict;
pub(crate) mod event;
mod list;
pub(crate) mod lock;
pub(crate) mod queue;
pub(crate) mod value;
mod wire;

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ConnectionLike as _, RedisError, RedisResult};

use wire::Wire;

use super::protocol::{Kind, Op};
use super::PyValue;
use crate::error::{Error, Result};
use crate::per_process::PerProcess;
use crate::poison;

pub(crate) use super::refs::REDIS_TOKEN;

/// The most stores (Redis URLs, with their timeouts) one process keeps.
const MAX_STORES: usize = 64;

/// How long a connection may stay unused before a call that must not
/// run twice checks it with a PING first.
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// This process's connection, and when it was last used.
struct Link {
    conn: Wire,
    used: Instant,
}

/// The longest object name.
pub(crate) const MAX_NAME: usize = 512;

/// The error code a script answers a Python exception with:
/// `PYERR <ExceptionName> <message>`.
pub(crate) const PYERR: &str = "PYERR";

/// One Redis server (or cluster node) and this process's connection to it.
pub(crate) struct Store {
    client: redis::Client,
    /// The URL it was opened with, without a user and password (see
    /// [`shown`]): what a proxy sent to another process carries, and what
    /// the receiver finds its own store by.
    pub(crate) url: String,
    /// The URL it was opened with.
    full_url: String,
    /// Where the server is, for errors (the URL without its password).
    place: String,
    /// The bound on connecting and on each round trip.
    pub(crate) timeout: Duration,
    links: PerProcess<Link>,
}

impl Store {
    /// A store on the server at `url` (`redis://host:port/db`,
    /// `rediss://…` with the `redis-tls` feature, `redis+unix:///path`),
    /// connected now so that a wrong URL fails here.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL that is not Redis's, or a zero
    /// timeout; [`Error::ManagerGone`] if the server is unreachable or
    /// refuses this client (a password missing or wrong).
    pub(crate) fn open(url: &str, timeout: Duration) -> Result<Arc<Store>> {
        if timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "a Redis manager's timeout must be above zero".into(),
            ));
        }
        let store = Store::shared(url, Some(timeout))?;
        // A server that refuses this client (a password it wants and was
        // not given) is as unusable as one that is down, as a wrong
        // password (refused when connecting) already is.
        store
            .run(true, |c| redis::cmd("PING").query::<()>(c))
            .map_err(|e| match e {
                Error::Remote { message, .. } => Error::ManagerGone(format!(
                    "Redis at {} refuses this client: {message}",
                    store.place
                )),
                other => other,
            })?;
        Ok(store)
    }

    /// This process's store for `url` with `timeout`, made if there is
    /// none: the proxies of one server share one connection per process,
    /// whether they came from a manager or were decoded from a pipe or a
    /// value. Not connected yet. With `None` (a proxy decoded from a pipe,
    /// a queue or a value), a store for `url` this process (or the one it
    /// was forked from) already made, with any timeout, and never a new
    /// one: a message from a peer never makes this process connect to a
    /// server it did not choose.
    ///
    /// Stores are kept for the life of the process, one per URL and
    /// timeout, at most [`MAX_STORES`], in a list that is only ever added
    /// to (without a lock, so that a child forked while another thread
    /// adds one never waits).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL that is not Redis's, one more
    /// than [`MAX_STORES`], or (with `None`) a server this process has no
    /// store for.
    pub(crate) fn shared(url: &str, timeout: Option<Duration>) -> Result<Arc<Store>> {
        struct Kept {
            store: Arc<Store>,
            next: *mut Kept,
        }
        static KEPT: AtomicPtr<Kept> = AtomicPtr::new(std::ptr::null_mut());
        let mut head = KEPT.load(Ordering::Acquire);
        loop {
            let mut at = head;
            let mut kept_now = 0;
            // SAFETY: every node came from `Box::into_raw` below and is
            // never freed; `next` is written before the node is published.
            while let Some(kept) = unsafe { at.as_ref() } {
                let same = match timeout {
                    Some(t) => kept.store.full_url == url && kept.store.timeout == t,
                    None => kept.store.url == shown(url),
                };
                if same {
                    return Ok(kept.store.clone());
                }
                at = kept.next;
                kept_now += 1;
            }
            let Some(timeout) = timeout else {
                return Err(Error::InvalidArgument(format!(
                    "a proxy of an object on the Redis server at {:?}, which this process has not connected to (Manager::connect_redis first)",
                    shown(url)
                )));
            };
            if kept_now >= MAX_STORES {
                return Err(Error::InvalidArgument(format!(
                    "this process already has {MAX_STORES} Redis servers or timeouts; {:?} would be one more",
                    shown(url)
                )));
            }
            let client = redis::Client::open(url).map_err(|e| {
                Error::InvalidArgument(format!("{:?} is not a Redis URL: {e}", shown(url)))
            })?;
            let place = client.get_connection_info().addr().to_string();
            let store = Arc::new(Store {
                client,
                url: shown(url),
                full_url: url.to_string(),
                place,
                timeout,
                links: PerProcess::new(),
            });
            let node = Box::into_raw(Box::new(Kept {
                store: store.clone(),
                next: head,
            }));
            match KEPT.compare_exchange(head, node, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(store),
                Err(now) => {
                    // Another thread added one: look again from the new head.
                    // SAFETY: `node` was never published.
                    drop(unsafe { Box::from_raw(node) });
                    head = now;
                }
            }
        }
    }

    /// A new link: a new connection, used now.
    fn link(&self) -> Result<Link> {
        Ok(Link {
            conn: self.connect()?,
            used: Instant::now(),
        })
    }

    /// A new connection, connected (and its handshake done) within the
    /// timeout.
    fn connect(&self) -> Result<Wire> {
        Wire::connect(self.client.get_connection_info(), self.timeout)
            .map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, e: &RedisError) -> Error {
        Error::ManagerGone(format!("Redis at {} is unreachable: {e}", self.place))
    }

    /// Runs `f` on this process's connection (made if need be), all of it
    /// within the timeout: past it, `f`'s command fails with the crate's
    /// timeout error, whatever the server sends or does not (see
    /// [`wire`]). A connection that fails is dropped, and the next call
    /// makes a new one: one that timed out half way through a reply is
    /// never read again. One that broke before any request was sent whole
    /// was not done, whatever it is: it runs once more on a new
    /// connection, and breaking that way again is [`Error::Remote`] saying
    /// it was not done. If it broke after the request may have been sent,
    /// a call that may run twice (`again`: a read, or a write that sets what it
    /// sets) runs once more on a new connection (not after a timeout:
    /// that would double the wait); any other is [`Error::Ambiguous`].
    ///
    /// # Errors
    /// [`Error::Remote`] for what a script answers with [`PYERR`] (and
    /// `RedisError` for the server's own errors); [`Error::ManagerGone`] if
    /// the server cannot be reached; [`Error::Ambiguous`] as above.
    pub(crate) fn run<R>(
        &self,
        again: bool,
        mut f: impl FnMut(&mut Wire) -> RedisResult<R>,
    ) -> Result<R> {
        self.run_waiting(None, again, &mut f)
    }

    /// [`run`](Store::run) for a command that blocks on the server for up
    /// to `wait` (`BLMOVE`, `BLPOP`): the call may take that much longer
    /// than the timeout.
    ///
    /// # Errors
    /// As for [`run`](Store::run).
    pub(crate) fn run_blocking<R>(
        &self,
        wait: Duration,
        again: bool,
        mut f: impl FnMut(&mut Wire) -> RedisResult<R>,
    ) -> Result<R> {
        self.run_waiting(Some(wait), again, &mut f)
    }

    fn run_waiting<R>(
        &self,
        wait: Option<Duration>,
        again: bool,
        f: &mut dyn FnMut(&mut Wire) -> RedisResult<R>,
    ) -> Result<R> {
        let budget = self.timeout.saturating_add(wait.unwrap_or(Duration::ZERO));
        let mut slot = poison::locked(self.links.get());
        let mut tries = if again { 2 } else { 1 };
        // A call whose connection broke before the server had any of its
        // requests whole was not done, whatever it is: it is sent once
        // more on a new connection, and if that breaks the same way (the
        // server closes the connection on a request it refuses unread,
        // one over its `proto-max-bulk-len`), the error says it was not
        // done rather than that it may have been.
        let mut resend = true;
        loop {
            // Taken out while in use: whatever fails leaves no link behind,
            // and only one that works is put back.
            let mut link = match slot.take() {
                Some(link) => link,
                None => self.link()?,
            };
            // A call that must not run twice, on a connection idle for a
            // while (which the server may have closed: an idle `timeout`,
            // a restart), first checks it with a PING, so that a closed
            // one is made anew before anything is sent, not reported
            // `Ambiguous`.
            if !again && link.used.elapsed() >= IDLE_CHECK {
                let ping = link
                    .conn
                    .call(self.timeout, |c| redis::cmd("PING").query::<()>(c));
                if let Err(e) = ping {
                    if e.is_timeout() {
                        return Err(self.unreachable(&e));
                    }
                    link = self.link()?;
                }
            }
            link.used = Instant::now();
            let result = link.conn.call(budget, &mut *f);
            let unsent = link.conn.nothing_sent();
            let broken =
                |e: &RedisError| e.is_io_error() || e.is_timeout() || e.is_connection_dropped();
            // A connection is kept whatever the answer, even an error the
            // server sent, unless it broke, timed out or read what it
            // could not parse: where its stream stands is then unknown.
            // A "Protocol error" (a request over the server's
            // `proto-max-bulk-len`) is the server's last word: it closes
            // the connection, which the next call must not find.
            let kept = link.conn.is_open()
                && match &result {
                    Ok(_) => true,
                    Err(e) => {
                        !broken(e)
                            && !e.is_unrecoverable_error()
                            && !refused(e)
                            && !e.detail().is_some_and(|d| d.starts_with("Protocol error"))
                    }
                };
            if kept {
                *slot = Some(link);
            }
            match result {
                Ok(r) => return Ok(r),
                Err(e) if e.code() == Some(PYERR) => return Err(python_error(&e)),
                Err(e) if refused(&e) => return Err(self.unreachable(&e)),
                Err(e) if broken(&e) && unsent && !e.is_timeout() => {
                    if !resend {
                        return Err(Error::Remote {
                            kind: "RedisError".into(),
                            message: format!(
                                "Redis at {} closed the connection before it had the whole request ({e}; is it over the server's proto-max-bulk-len?): it was not done",
                                self.place
                            ),
                        });
                    }
                    resend = false;
                }
                Err(e) if broken(&e) => {
                    tries -= 1;
                    // A server that did not answer in time is tried no
                    // more: once more would double the wait. A connection
                    // that broke (a restarted server) is made anew.
                    if tries == 0 || e.is_timeout() {
                        return Err(if again {
                            self.unreachable(&e)
                        } else {
                            Error::Ambiguous(format!(
                                "the connection to Redis at {} failed during the call ({e}): it may or may not have been done",
                                self.place
                            ))
                        });
                    }
                }
                Err(e) => {
                    return Err(Error::Remote {
                        kind: "RedisError".into(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// Applies `op` to the object `name` of `kind`.
    ///
    /// # Errors
    /// As for [`run`](Store::run); [`Error::Remote`] with Python's
    /// exception where Python raises one.
    pub(crate) fn apply(&self, kind: Kind, name: &str, op: Op) -> Result<PyValue> {
        match kind {
            Kind::Dict => dict::apply(self, Kind::Dict, name, op),
            Kind::Namespace => dict::apply(self, Kind::Namespace, name, op),
            Kind::List => list::apply(self, name, op),
            other => Err(Error::InvalidArgument(format!(
                "a Redis manager has no {other:?} objects"
            ))),
        }
    }

    /// Deletes every key of the object `name` of `kind`; whether it existed.
    ///
    /// # Errors
    /// As for [`run`](Store::run).
    pub(crate) fn delete(&self, kind: Kind, name: &str) -> Result<bool> {
        let keys: Vec<String> = parts(kind)
            .iter()
            .map(|part| key(kind, name, part))
            .collect();
        self.run(true, |c| redis::cmd("DEL").arg(&keys).query::<u64>(c))
            .map(|n| n > 0)
    }
}

/// The Redis keys an object of `kind` is made of (its parts).
fn parts(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Dict | Kind::Namespace => dict::PARTS,
        Kind::List => list::PARTS,
        _ => &[],
    }
}

/// The Redis key of part `part` of the object `name` of `kind`. The hash
/// tag (`{…}`) holds the kind and the name: every part of an object lives
/// on one cluster node.
pub(crate) fn key(kind: Kind, name: &str, part: &str) -> String {
    let kind = match kind {
        Kind::Dict => "dict",
        Kind::List => "list",
        Kind::Namespace => "namespace",
        Kind::Queue => "queue",
        Kind::JoinableQueue => "joinable",
        Kind::Iterator => "iterator",
    };
    format!("multiproc:{{{kind}:{name}}}:{part}")
}

/// Checks an object's name: not empty, at most [`MAX_NAME`] bytes.
///
/// # Errors
/// [`Error::InvalidArgument`] otherwise.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::InvalidArgument(format!(
            "a Redis object's name has 1 to {MAX_NAME} bytes, not {}",
            name.len()
        )));
    }
    Ok(())
}

/// `url` as an error shows it: without what comes before an `@` (a user
/// and password) in its authority.
pub(crate) fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// How many times [`take`] asks again for a value that another client
/// keeps changing between its looks.
const TAKE_TRIES: usize = 64;

/// Takes values out of an object without losing any that does not
/// decode: `call(expected)` runs a script that answers `{}` (nothing to
/// take), `{'T', values…}` (taken: each plain, see [`codec::LUA_PLAIN`],
/// or the `expected` ones), or `{'P', values…}` (left where they were).
/// Values left are decoded here: one that does not decode is the error,
/// and nothing is taken; ones that do are asked for again as `expected`,
/// which the script takes if they are still what it would take. The
/// values taken (a nil among them ends them), or `None`.
///
/// # Errors
/// `call`'s; [`Error::Deserialize`] for a value that does not decode (left
/// where it was); [`Error::Remote`] `RuntimeError` if the values changed
/// between each of [`TAKE_TRIES`] looks (nothing was taken).
pub(super) fn take(
    mut call: impl FnMut(&[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>>,
) -> Result<Option<Vec<Vec<u8>>>> {
    let mut expected = Vec::new();
    for _ in 0..TAKE_TRIES {
        let mut answer = call(&expected)?.into_iter();
        let Some(flag) = answer.next() else {
            return Ok(None);
        };
        let values: Vec<Vec<u8>> = answer.map_while(|v| v).collect();
        match flag.as_deref() {
            Some(b"T") => return Ok(Some(values)),
            Some(b"P") => {
                for v in &values {
                    codec::decode(v).map_err(|e| match e {
                        Error::Deserialize(why) => {
                            Error::Deserialize(format!("{why}; it was left where it was"))
                        }
                        other => other,
                    })?;
                }
                expected = values;
            }
            _ => {
                return Err(Error::Deserialize(
                    "an answer of a multiproc script that is not its own".into(),
                ))
            }
        }
    }
    Err(Error::Remote {
        kind: "RuntimeError".into(),
        message: format!(
            "the value to take changed {TAKE_TRIES} times while it was being taken (another client kept writing it): nothing was taken"
        ),
    })
}

/// Whether `e` is a server's refusal of a new connection: at its
/// `maxclients`, it answers one error before reading anything, and closes
/// the connection. Nothing sent on it was done: the server is as
/// unreachable as one that refuses the TCP connection, not a server's
/// answer to the call.
pub(super) fn refused(e: &RedisError) -> bool {
    e.detail()
        .is_some_and(|d| d.starts_with("max number of clients reached"))
}

/// A script's `PYERR <ExceptionName> <message>` as Python's exception.
fn python_error(e: &RedisError) -> Error {
    let detail = e.detail().unwrap_or("");
    let (kind, message) = detail.split_once(' ').unwrap_or((detail, ""));
    Error::Remote {
        kind: kind.to_string(),
        message: message.to_string(),
    }
}

/// A fresh random name, for an object made without one.
///
/// # Errors
/// If the OS has no random bytes.
pub(crate) fn fresh_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    crate::sys::random_bytes(&mut bytes).map_err(|e| Error::io("getrandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How long a Redis-backed manager waits to connect, and for each round
/// trip, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis-backed manager: the same proxies on a Redis server.
impl super::Manager {
    /// A manager whose objects live on the Redis server at `url`
    /// (`redis://[:password@]host:port/db`, `redis+unix:///path`, and
    /// `rediss://…` with the `redis-tls` feature), so that processes on
    /// any machine that reaches it share them. Its proxies are the local
    /// manager's types, with the same methods; each operation is one
    /// Redis command or one Lua script, atomic on the server.
    ///
    /// What differs from a manager server (see the README's "Beyond one
    /// machine"):
    /// - objects are found by name ([`dict_named`](super::Manager::dict_named)):
    ///   they are not counted, and live until
    ///   [`remove_named`](super::Manager::remove_named) (an unnamed one gets a
    ///   random name, [`DictProxy::redis_name`](super::DictProxy::redis_name));
    /// - each process connects on its first call (a forked child makes its
    ///   own connection), and every call ends within
    ///   [`REDIS_TIMEOUT`](super::REDIS_TIMEOUT) (see
    ///   [`connect_redis_with_timeout`](super::Manager::connect_redis_with_timeout)),
    ///   and a few milliseconds, whatever the server does (one that
    ///   answers late, half way or a byte at a time); a call that waits on
    ///   the server (a queue's `get`) within its wait and the timeout.
    ///   Over TLS (`rediss://`) or RESP3, the timeout bounds each read of
    ///   a reply instead;
    /// - a connection that fails after a request was sent makes a call
    ///   that changes something [`Error::Ambiguous`] (it may or may not
    ///   have been done); a read is tried once more on a new connection
    ///   (unless the server did not answer within the timeout). One that
    ///   fails before the whole request was sent was not done: it is sent
    ///   once more, and failing again (a request the server refuses
    ///   unread, over its `proto-max-bulk-len`) is an error saying so.
    ///   The next call connects again.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL that is not Redis's;
    /// [`Error::ManagerGone`] if the server is unreachable.
    pub fn connect_redis(url: &str) -> Result<super::Manager> {
        super::Manager::connect_redis_with_timeout(url, DEFAULT_TIMEOUT)
    }

    /// [`connect_redis`](super::Manager::connect_redis), with `timeout`
    /// bounding the connection and each round trip.
    ///
    /// # Errors
    /// As for [`connect_redis`](super::Manager::connect_redis);
    /// [`Error::InvalidArgument`] for a zero timeout.
    pub fn connect_redis_with_timeout(url: &str, timeout: Duration) -> Result<super::Manager> {
        let store = Store::open(url, timeout)?;
        let address = match store.client.get_connection_info().addr() {
            redis::ConnectionAddr::Unix(path) => crate::conn::Address::Unix(path.clone()),
            other => {
                let (host, port) = match other {
                    redis::ConnectionAddr::Tcp(host, port) => (host, port),
                    redis::ConnectionAddr::TcpTls { host, port, .. } => (host, port),
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "{:?}: an address multiproc does not know",
                            shown(url)
                        )))
                    }
                };
                use std::net::ToSocketAddrs;
                let resolved = (host.as_str(), *port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| Error::ManagerGone(format!("{host}:{port} does not resolve")))?;
                crate::conn::Address::Tcp(resolved)
            }
        };
        Ok(super::Manager {
            backend: super::Backend::Redis { store, address },
        })
    }

    /// The Redis store of a Redis-backed manager.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a manager server's handle.
    fn store(&self, what: &str) -> Result<&Arc<Store>> {
        match &self.backend {
            super::Backend::Redis { store, .. } => Ok(store),
            super::Backend::Server { .. } => Err(Error::InvalidArgument(format!(
                "{what}: named objects are on Redis (Manager::connect_redis); a manager server's objects are reached through their proxies"
            ))),
        }
    }

    fn named(&self, kind: Kind, name: &str) -> Result<super::reference::Reference> {
        check_name(name)?;
        let store = self.store(name)?;
        Ok(super::reference::Reference::redis(
            store.clone(),
            kind,
            name.to_string(),
        ))
    }

    /// The dict called `name` on Redis, empty until something is stored in
    /// it: every process that asks for the same name gets the same dict.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a manager server's handle, or for a
    /// name that is empty or over 512 bytes.
    pub fn dict_named<K, V>(&self, name: &str) -> Result<super::DictProxy<K, V>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        Ok(super::DictProxy {
            reference: self.named(Kind::Dict, name)?,
            _types: std::marker::PhantomData,
        })
    }

    /// The list called `name` on Redis (as [`dict_named`](super::Manager::dict_named)).
    ///
    /// # Errors
    /// As for [`dict_named`](super::Manager::dict_named).
    pub fn list_named<T>(&self, name: &str) -> Result<super::ListProxy<T>>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        Ok(super::ListProxy {
            reference: self.named(Kind::List, name)?,
            _types: std::marker::PhantomData,
        })
    }

    /// The namespace called `name` on Redis (as [`dict_named`](super::Manager::dict_named)).
    ///
    /// # Errors
    /// As for [`dict_named`](super::Manager::dict_named).
    pub fn namespace_named(&self, name: &str) -> Result<super::NamespaceProxy> {
        Ok(super::NamespaceProxy {
            reference: self.named(Kind::Namespace, name)?,
        })
    }

    /// Deletes the objects called `name` on Redis (a dict, a list, a
    /// namespace, a queue, a lock, an event and a value may share a
    /// name); whether there was one.
    ///
    /// # Errors
    /// As for [`dict_named`](super::Manager::dict_named); as a call on Redis.
    pub fn remove_named(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let store = self.store(name)?;
        let mut any = false;
        for kind in [Kind::Dict, Kind::List, Kind::Namespace] {
            any |= store.delete(kind, name)?;
        }
        any |= queue::delete(store, name)?;
        any |= lock::delete(store, name)?;
        any |= event::delete(store, name)?;
        any |= value::delete(store, name)?;
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// A server that answers every command with `answer(n)` for the `n`th
    /// command (from 0) after the handshake, or stays mute on `None`.
    fn fake(answer: fn(usize) -> Option<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let mut n = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let Some(count) = line.trim().strip_prefix('*') else {
                    continue;
                };
                let mut name = String::new();
                for i in 0..count.parse::<usize>().unwrap() {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if i == 0 {
                        name = line.trim().to_uppercase();
                    }
                }
                let reply: Option<&[u8]> = match name.as_str() {
                    "PING" => Some(b"+PONG\r\n"),
                    "CLIENT" => Some(b"+OK\r\n"),
                    _ => {
                        n += 1;
                        answer(n - 1)
                    }
                };
                match reply {
                    Some(reply) => w.write_all(reply).unwrap(),
                    None => std::thread::sleep(Duration::from_secs(10)),
                }
            }
        });
        format!("redis://127.0.0.1:{port}/")
    }

    /// A blocking call answered with an error the server sent keeps its
    /// connection: the next call is bounded by the timeout again, not by
    /// the blocking call's longer one.
    #[test]
    fn a_blocking_call_that_fails_gives_the_timeout_back() {
        let url = fake(|n| (n == 0).then_some(&b"-PYERR KeyError 'x'\r\n"[..]));
        let store = Store::open(&url, Duration::from_millis(200)).unwrap();
        let r = store.run_blocking(Duration::from_secs(30), false, |c| {
            redis::cmd("BLPOP").arg("x").arg(30).query::<()>(c)
        });
        assert!(matches!(r, Err(Error::Remote { .. })), "{r:?}");
        let started = Instant::now();
        let r = store.run(false, |c| redis::cmd("HLEN").arg("x").query::<i64>(c));
        assert!(matches!(r, Err(Error::Ambiguous(_))), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        // Nor sent: a proxy carries the URL without them, and the receiver
        // finds its own store (and password) by that.
        let store = Store::shared("redis://:secret@127.0.0.1:1/3", Some(DEFAULT_TIMEOUT)).unwrap();
        let proxy = super::super::DictProxy::<String, i64> {
            reference: super::super::reference::Reference::redis(store, Kind::Dict, "d".into()),
            _types: std::marker::PhantomData,
        };
        let bytes = postcard::to_allocvec(&proxy).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
        let back: super::super::DictProxy<String, i64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.redis_name(), Some("d"));
        assert!(!format!("{back:?}").contains("secret"));
        assert_eq!(shown("redis://:pw@h:1/0"), "redis://…@h:1/0");
        assert_eq!(shown("redis://u:p@w@h:1/0?a=@"), "redis://…@h:1/0?a=@");
        assert_eq!(shown("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(shown("nonsense"), "nonsense");
    }
}
