//! The client side: [`Manager`] and the typed proxies.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::protocol::{Id, Kind, Op, Request, Response};
use super::server::serve;
use super::value::PROXY_TOKEN;
use super::{from_value, to_value, Value};
use crate::conn::{connect, Address, Connection, Listener, Pipe};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::sys;

/// One process's connection to the server, opened on first use in each
/// process (a forked child never shares its parent's socket).
///
/// Fork-safe: a child forked while another thread of its parent was in
/// the middle of a round trip (holding the parent's connection lock) never
/// touches that lock; it makes a connection state of its own, found by pid.
struct Client {
    address: Address,
    authkey: Vec<u8>,
    /// This process's connection state (a `Box` leaked into the pointer).
    current: AtomicPtr<ProcessConn>,
    /// States of the processes this one was forked from, freed with the
    /// client: another thread of this process may still be reading one.
    retired: AtomicPtr<ProcessConn>,
}

/// One process's connection to the server.
struct ProcessConn {
    pid: u32,
    conn: Mutex<Option<Connection>>,
    /// The next state in [`Client::retired`].
    next: AtomicPtr<ProcessConn>,
}

impl Client {
    fn new(address: Address, authkey: &[u8]) -> Client {
        Client {
            address,
            authkey: authkey.to_vec(),
            current: AtomicPtr::new(std::ptr::null_mut()),
            retired: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// This process's connection state, made on its first use here.
    fn state(&self) -> &ProcessConn {
        let me = sys::getpid();
        loop {
            let seen = self.current.load(Ordering::Acquire);
            // SAFETY: a non-null pointer here came from `Box::into_raw`
            // and is freed only when the client is dropped (see `retired`).
            if let Some(state) = unsafe { seen.as_ref() } {
                if state.pid == me {
                    return state;
                }
            }
            let mine = Box::into_raw(Box::new(ProcessConn {
                pid: me,
                conn: Mutex::new(None),
                next: AtomicPtr::new(std::ptr::null_mut()),
            }));
            match self
                .current
                .compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if !seen.is_null() {
                        self.retire(seen);
                    }
                    // SAFETY: just made, freed only with the client.
                    return unsafe { &*mine };
                }
                // Another thread of this process made one first.
                // SAFETY: `mine` was never shared.
                Err(_) => drop(unsafe { Box::from_raw(mine) }),
            }
        }
    }

    /// Keeps a parent's state until the client is dropped, closing this
    /// process's copy of its socket now if no round trip was under way at
    /// the fork (the server then sees the parent's connection end with the
    /// parent, not with its last child).
    fn retire(&self, old: *mut ProcessConn) {
        // SAFETY: retired states live until the client is dropped.
        let state = unsafe { &*old };
        // Never waits: the lock may be held by a thread that was not forked.
        if let Ok(mut conn) = state.conn.try_lock() {
            conn.take();
        }
        let mut head = self.retired.load(Ordering::Acquire);
        loop {
            state.next.store(head, Ordering::Relaxed);
            match self
                .retired
                .compare_exchange(head, old, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    fn request(&self, req: &Request) -> Result<Response> {
        let mut conn = self
            .state()
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let c = match &mut *conn {
            Some(c) => c,
            None => conn.insert(connect(&self.address, Some(&self.authkey)).map_err(
                |e| match e {
                    Error::Io { .. } => Error::ManagerGone(e.to_string()),
                    other => other,
                },
            )?),
        };
        let exchanged = c.send(req).and_then(|()| c.recv::<Response>());
        match exchanged {
            Ok(r) => Ok(r),
            Err(e) => {
                *conn = None;
                Err(match e {
                    Error::ConnectionClosed => {
                        Error::ManagerGone("the server closed the connection".into())
                    }
                    other => other,
                })
            }
        }
    }

    fn value(&self, req: &Request) -> Result<Value> {
        match self.request(req)? {
            Response::Value(v) => Ok(v),
            other => Err(protocol_error(other)),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let current = *self.current.get_mut();
        if !current.is_null() {
            // SAFETY: from `Box::into_raw`, and no thread can reach it any
            // more (the client is being dropped).
            drop(unsafe { Box::from_raw(current) });
        }
        let mut next = *self.retired.get_mut();
        while !next.is_null() {
            // SAFETY: as above, for each retired state once.
            let mut state = unsafe { Box::from_raw(next) };
            next = *state.next.get_mut();
        }
    }
}

fn protocol_error(r: Response) -> Error {
    match r {
        Response::Error { kind, message } => Error::Remote { kind, message },
        other => Error::ManagerGone(format!("unexpected answer {other:?}")),
    }
}

fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Value> {
    to_value(v).map_err(|e| Error::Serialize(e.to_string()))
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T> {
    from_value(v).map_err(|e| Error::Deserialize(e.to_string()))
}

/// A manager: a server process that owns shared dicts, lists and
/// namespaces (Python's `multiprocessing.Manager()`), and the handle that
/// creates them.
///
/// Every operation on a proxy is a round trip to the server: flexible and
/// safe, but microseconds, where the shared layer ([`Value`](crate::Value))
/// takes nanoseconds. Batch operations ([`DictProxy::set_many`],
/// [`DictProxy::get_many`]) share one round trip; read-modify-write
/// operations ([`DictProxy::increment`], [`DictProxy::compare_and_set`])
/// are atomic on the server, so concurrent updates never get lost.
///
/// # Example
/// ```
/// use multiproc::{manager::Manager, Process};
/// let manager = Manager::start()?;
/// let d = manager.dict::<String, i64>()?;
/// let theirs = d.clone(); // another proxy of the same dict
/// let mut child = Process::new(move || {
///     theirs.set("from child".into(), 1).expect("set");
///     theirs.increment(&"hits".into(), 5).expect("increment");
/// });
/// child.start()?;
/// child.join()?;
/// assert_eq!(d.get(&"from child".into())?, Some(1));
/// assert_eq!(d.get(&"hits".into())?, Some(5));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Manager {
    client: Arc<Client>,
    /// The server this handle started, and the pid of the process that did.
    server: Option<(Process<'static>, u32)>,
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);

impl Manager {
    /// Starts a server process on a fresh Unix socket with a random authkey.
    ///
    /// # Errors
    /// If the server cannot be started or does not come up within 10 s.
    pub fn start() -> Result<Manager> {
        let mut key = [0u8; 32];
        sys::random_bytes(&mut key).map_err(|e| Error::io("getrandom", e))?;
        let path = std::env::temp_dir().join(format!(
            "multiproc-manager-{}-{}.sock",
            sys::getpid(),
            SOCKETS.fetch_add(1, Ordering::Relaxed)
        ));
        let address = Address::Unix(path);
        let (mut ready, mut tell) = Pipe(false)?;
        let (listen_at, listen_key) = (address.clone(), key.to_vec());
        let parent = sys::getpid();
        // Not a daemon (whose death signal would leave the socket file
        // behind): the server watches for its parent's exit and cleans up.
        let mut server =
            Process::new(
                move || match Listener::bind(&listen_at, Some(&listen_key)) {
                    Ok(listener) => {
                        let _ = tell.send(&None::<String>);
                        drop(tell);
                        serve(listener, Some(parent))
                    }
                    Err(e) => {
                        let _ = tell.send(&Some(e.to_string()));
                    }
                },
            )
            .with_name("SyncManager")
            .ends_when_parent_exits();
        server.start()?;
        ready.set_max_message(4096);
        match ready.recv_bytes_timeout(Duration::from_secs(10)) {
            Ok(bytes) => match postcard::from_bytes::<Option<String>>(&bytes) {
                Ok(None) => {}
                Ok(Some(why)) => {
                    return Err(Error::ManagerGone(format!(
                        "the server could not listen: {why}"
                    )))
                }
                Err(e) => return Err(Error::Deserialize(e.to_string())),
            },
            Err(e) => {
                let _ = server.kill();
                let _ = server.join();
                return Err(Error::ManagerGone(format!("the server did not start: {e}")));
            }
        }
        let mut m = Manager::connect(address, &key)?;
        m.server = Some((server, sys::getpid()));
        Ok(m)
    }

    /// A handle on a server that is already running (started by another
    /// program, or by `multiproc manager serve`).
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] on a wrong key; if it is unreachable.
    pub fn connect(address: Address, authkey: &[u8]) -> Result<Manager> {
        let client = Arc::new(Client::new(address, authkey));
        // Connect now, so that a wrong address or key fails here.
        client.value(&Request::NumberOfObjects)?;
        Ok(Manager {
            client,
            server: None,
        })
    }

    /// Where the server listens.
    pub fn address(&self) -> &Address {
        &self.client.address
    }

    /// The server's pid, if this handle started it.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(|(p, _)| p.pid())
    }

    /// The key clients need (Python's `authkey`), for [`connect`](Manager::connect).
    pub fn authkey(&self) -> &[u8] {
        &self.client.authkey
    }

    fn create(&self, kind: Kind) -> Result<Handle> {
        match self.client.request(&Request::Create(kind))? {
            Response::Created(id) => Ok(Handle::new(self.client.clone(), kind, id)),
            other => Err(protocol_error(other)),
        }
    }

    /// A new shared dict.
    ///
    /// # Errors
    /// If the server is gone.
    pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
    ) -> Result<DictProxy<K, V>> {
        Ok(DictProxy {
            handle: self.create(Kind::Dict)?,
            _types: PhantomData,
        })
    }

    /// A new shared list.
    ///
    /// # Errors
    /// If the server is gone.
    pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<ListProxy<T>> {
        Ok(ListProxy {
            handle: self.create(Kind::List)?,
            _types: PhantomData,
        })
    }

    /// A new shared namespace (named attributes of any type).
    ///
    /// # Errors
    /// If the server is gone.
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        Ok(NamespaceProxy {
            handle: self.create(Kind::Namespace)?,
        })
    }

    /// How many objects the server holds (for tests of object lifetime).
    ///
    /// # Errors
    /// If the server is gone.
    pub fn number_of_objects(&self) -> Result<u64> {
        match self.client.value(&Request::NumberOfObjects)? {
            Value::Int(n) => Ok(n as u64),
            v => Err(Error::Deserialize(format!("object count {v:?}"))),
        }
    }

    /// Stops the server. Proxies still around get [`Error::ManagerGone`].
    ///
    /// # Errors
    /// If the server was already gone.
    pub fn shutdown(&mut self) -> Result<()> {
        let r = self.client.value(&Request::Shutdown).map(drop);
        if let Some((server, _)) = self.server.take() {
            if server.join_timeout(Duration::from_secs(10))?.is_none() {
                server.kill()?;
                server.join()?;
            }
        }
        r
    }
}

/// A manager started by this process is shut down when its handle is
/// dropped (as leaving Python's `with Manager() as m:` block).
impl Drop for Manager {
    fn drop(&mut self) {
        // Only in the process that started it: a forked child that drops a
        // copy of the handle must not stop everyone's server.
        if self
            .server
            .as_ref()
            .is_some_and(|(_, starter)| *starter == sys::getpid())
        {
            let _ = self.shutdown();
        }
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.client.address)
            .finish()
    }
}

/// One reference to a server object. The process that holds the reference
/// is recorded: a forked child that uses an inherited proxy first takes a
/// reference of its own, and only the holder's drop gives one back.
struct Handle {
    client: Arc<Client>,
    kind: Kind,
    id: Id,
    holder: AtomicU32,
}

thread_local! {
    /// The client whose answer this thread is decoding: a proxy inside it
    /// (a nested proxy) becomes a handle on that client's server.
    static ANSWERED_BY: RefCell<Weak<Client>> = const { RefCell::new(Weak::new()) };
}

impl Handle {
    /// Takes over a reference that the server counted for this process.
    fn new(client: Arc<Client>, kind: Kind, id: Id) -> Handle {
        Handle {
            client,
            kind,
            id,
            holder: AtomicU32::new(sys::getpid()),
        }
    }

    /// Records that what this thread decodes next came from this handle's server.
    fn answered(&self) {
        ANSWERED_BY.with_borrow_mut(|c| {
            if !std::ptr::eq(c.as_ptr(), Arc::as_ptr(&self.client)) {
                *c = Arc::downgrade(&self.client);
            }
        });
    }

    /// A proxy serializes as its kind and id under [`PROXY_TOKEN`], which
    /// the bridge to [`Value`] turns into a [`Value::Proxy`].
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(PROXY_TOKEN, &(self.kind, self.id))
    }

    /// A proxy found in a server's answer: the server counted a reference
    /// for this process when it sent it, which the handle takes over.
    fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: Kind,
    ) -> std::result::Result<Handle, D::Error> {
        use serde::de::Error as _;
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = (Kind, Id);
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a manager proxy")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<(Kind, Id), D::Error> {
                serde::Deserialize::deserialize(d)
            }
        }
        let (found, id) = d.deserialize_newtype_struct(PROXY_TOKEN, Fields)?;
        if found != kind {
            return Err(D::Error::custom(format!(
                "expected a {kind:?} proxy, found a {found:?} proxy"
            )));
        }
        let client = ANSWERED_BY.with_borrow(Weak::upgrade).ok_or_else(|| {
            D::Error::custom("a proxy can only be decoded from its manager's answer")
        })?;
        Ok(Handle::new(client, kind, id))
    }

    fn own(&self) -> Result<()> {
        let me = sys::getpid();
        if self.holder.load(Ordering::Relaxed) != me {
            self.client.value(&Request::Incref(self.id))?;
            self.holder.store(me, Ordering::Relaxed);
        }
        Ok(())
    }

    fn call(&self, op: Op) -> Result<Value> {
        self.own()?;
        self.answered();
        self.client.value(&Request::Call(self.id, op))
    }

    fn batch(&self, ops: Vec<Op>) -> Result<Vec<Value>> {
        self.own()?;
        self.answered();
        match self.client.request(&Request::Batch(
            ops.into_iter().map(|op| (self.id, op)).collect(),
        ))? {
            Response::Batch(rs) => rs
                .into_iter()
                .map(|r| match r {
                    Response::Value(v) => Ok(v),
                    other => Err(protocol_error(other)),
                })
                .collect(),
            other => Err(protocol_error(other)),
        }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        // A clone is a reference of its own; if the server is gone, there is
        // nothing to count.
        let _ = self.own();
        let _ = self.client.value(&Request::Incref(self.id));
        Handle::new(self.client.clone(), self.kind, self.id)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.holder.load(Ordering::Relaxed) == sys::getpid() {
            let _ = self.client.value(&Request::Decref(self.id));
        }
    }
}

fn int(v: Value) -> Result<usize> {
    match v {
        Value::Int(n) => Ok(n as usize),
        v => Err(Error::Deserialize(format!("expected an int, got {v:?}"))),
    }
}

fn truth(v: Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(b),
        v => Err(Error::Deserialize(format!("expected a bool, got {v:?}"))),
    }
}

fn values<T: DeserializeOwned>(v: Value) -> Result<Vec<T>> {
    match v {
        Value::List(items) => items.into_iter().map(decode).collect(),
        v => Err(Error::Deserialize(format!("expected a list, got {v:?}"))),
    }
}

/// A dict owned by a [`Manager`] (Python's `Manager().dict()`), typed on this
/// side through serde. Clones and copies in forked children refer to the
/// same dict; the server frees it when the last proxy anywhere is dropped.
pub struct DictProxy<K, V> {
    handle: Handle,
    _types: PhantomData<fn() -> (K, V)>,
}

/// A proxy stored in a dict, list or namespace of the same manager (a
/// nested proxy, as in Python): the container holds a reference, and
/// reading it back gives a proxy of the same object.
impl<K, V> Serialize for DictProxy<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

/// Decodes only from an answer of the manager that owns the dict.
impl<'de, K, V> serde::Deserialize<'de> for DictProxy<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(DictProxy {
            handle: Handle::deserialize(d, Kind::Dict)?,
            _types: PhantomData,
        })
    }
}

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        DictProxy {
            handle: self.handle.clone(),
            _types: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// `d.get(key)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`]; [`Error::Deserialize`] if the value is not a `V`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        match self.handle.call(Op::Lookup(encode(key)?))? {
            Value::None => Ok(None),
            v => decode(v).map(Some),
        }
    }

    /// `d[key] = value`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn set(&self, key: K, value: V) -> Result<()> {
        self.handle
            .call(Op::Set(encode(&key)?, encode(&value)?))
            .map(drop)
    }

    /// `d.pop(key, None)`: removes the key, returning its value if present.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        match self.handle.call(Op::Discard(encode(key)?))? {
            Value::None => Ok(None),
            v => decode(v).map(Some),
        }
    }

    /// `d.pop(key)`.
    ///
    /// # Errors
    /// [`Error::Remote`] `KeyError` if absent.
    pub fn pop(&self, key: &K) -> Result<V> {
        decode(self.handle.call(Op::Pop(encode(key)?))?)
    }

    /// `d.popitem()`: the last item inserted.
    ///
    /// # Errors
    /// [`Error::Remote`] `KeyError` if empty.
    pub fn popitem(&self) -> Result<(K, V)> {
        decode(self.handle.call(Op::PopItem)?)
    }

    /// `d.setdefault(key, default)`: the value, inserting `default` if absent.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn setdefault(&self, key: K, default: V) -> Result<V> {
        decode(
            self.handle
                .call(Op::SetDefault(encode(&key)?, encode(&default)?))?,
        )
    }

    /// `key in d`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn contains(&self, key: &K) -> Result<bool> {
        truth(self.handle.call(Op::Contains(encode(key)?))?)
    }

    /// `len(d)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn len(&self) -> Result<usize> {
        int(self.handle.call(Op::Len)?)
    }

    /// Whether the dict is empty.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn keys(&self) -> Result<Vec<K>> {
        values(self.handle.call(Op::Keys)?)
    }

    /// The values, in insertion order.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn values(&self) -> Result<Vec<V>> {
        values(self.handle.call(Op::Values)?)
    }

    /// The items, in insertion order (one round trip: a snapshot).
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.handle.call(Op::Snapshot)? {
            Value::Dict(items) => items
                .into_iter()
                .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
                .collect(),
            v => Err(Error::Deserialize(format!("expected a dict, got {v:?}"))),
        }
    }

    /// A snapshot copy into a `HashMap`.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn to_hash_map(&self) -> Result<HashMap<K, V>>
    where
        K: Eq + Hash,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// `d.update(items)`, in one round trip.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let items = items
            .into_iter()
            .map(|(k, v)| Ok((encode(&k)?, encode(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.handle.call(Op::Update(items)).map(drop)
    }

    /// `d.clear()`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn clear(&self) -> Result<()> {
        self.handle.call(Op::Clear).map(drop)
    }

    /// `d[key] += delta` as one atomic step on the server (a missing key
    /// counts as zero): concurrent increments from many processes never
    /// lose an update, unlike Python's `d[k] += 1`. Returns the new value.
    ///
    /// # Errors
    /// [`Error::Remote`] `TypeError` if the value is not a number.
    pub fn increment(&self, key: &K, delta: V) -> Result<V> {
        decode(
            self.handle
                .call(Op::Increment(encode(key)?, encode(&delta)?))?,
        )
    }

    /// Sets `d[key] = new` only if it currently equals `expected` (`None`:
    /// absent), atomically; whether it did.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn compare_and_set(&self, key: &K, expected: Option<&V>, new: V) -> Result<bool> {
        let expected = expected.map(encode).transpose()?;
        truth(
            self.handle
                .call(Op::CompareAndSet(encode(key)?, expected, encode(&new)?))?,
        )
    }

    /// Sets many keys in one round trip.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn set_many(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let ops = items
            .into_iter()
            .map(|(k, v)| Ok(Op::Set(encode(&k)?, encode(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.handle.batch(ops).map(drop)
    }

    /// Looks many keys up in one round trip.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn get_many<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Result<Vec<Option<V>>>
    where
        K: 'k,
    {
        let ops = keys
            .into_iter()
            .map(|k| Ok(Op::Lookup(encode(k)?)))
            .collect::<Result<Vec<_>>>()?;
        self.handle
            .batch(ops)?
            .into_iter()
            .map(|v| match v {
                Value::None => Ok(None),
                v => decode(v).map(Some),
            })
            .collect()
    }
}

/// A list owned by a [`Manager`] (Python's `Manager().list()`). Indexes
/// may be negative (from the end), as in Python.
pub struct ListProxy<T> {
    handle: Handle,
    _types: PhantomData<fn() -> T>,
}

/// A proxy stored in a dict, list or namespace of the same manager (a
/// nested proxy, as in Python): the container holds a reference, and
/// reading it back gives a proxy of the same object.
impl<T> Serialize for ListProxy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

/// Decodes only from an answer of the manager that owns the list.
impl<'de, T> serde::Deserialize<'de> for ListProxy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(ListProxy {
            handle: Handle::deserialize(d, Kind::List)?,
            _types: PhantomData,
        })
    }
}

impl<T> Clone for ListProxy<T> {
    fn clone(&self) -> Self {
        ListProxy {
            handle: self.handle.clone(),
            _types: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// `l[index]`.
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError`.
    pub fn get(&self, index: i64) -> Result<T> {
        decode(self.handle.call(Op::Get(Value::Int(index)))?)
    }

    /// `l[index] = value`.
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError`.
    pub fn set(&self, index: i64, value: T) -> Result<()> {
        self.handle
            .call(Op::Set(Value::Int(index), encode(&value)?))
            .map(drop)
    }

    /// `l.append(value)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn append(&self, value: T) -> Result<()> {
        self.handle.call(Op::Append(encode(&value)?)).map(drop)
    }

    /// `l.extend(values)`, in one round trip.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn extend(&self, values: impl IntoIterator<Item = T>) -> Result<()> {
        let vs = values
            .into_iter()
            .map(|v| encode(&v))
            .collect::<Result<Vec<_>>>()?;
        self.handle.call(Op::Extend(vs)).map(drop)
    }

    /// `l.insert(index, value)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn insert(&self, index: i64, value: T) -> Result<()> {
        self.handle
            .call(Op::Insert(index, encode(&value)?))
            .map(drop)
    }

    /// `l.pop(index)` (`-1` for the last).
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError`.
    pub fn pop(&self, index: i64) -> Result<T> {
        decode(self.handle.call(Op::Pop(Value::Int(index)))?)
    }

    /// `l.remove(value)`: the first equal item.
    ///
    /// # Errors
    /// [`Error::Remote`] `ValueError` if absent.
    pub fn remove(&self, value: &T) -> Result<()> {
        self.handle.call(Op::Remove(encode(value)?)).map(drop)
    }

    /// `l.index(value)`.
    ///
    /// # Errors
    /// [`Error::Remote`] `ValueError` if absent.
    pub fn index(&self, value: &T) -> Result<usize> {
        int(self.handle.call(Op::Index(encode(value)?))?)
    }

    /// `l.count(value)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn count(&self, value: &T) -> Result<usize> {
        int(self.handle.call(Op::Count(encode(value)?))?)
    }

    /// `len(l)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn len(&self) -> Result<usize> {
        int(self.handle.call(Op::Len)?)
    }

    /// Whether the list is empty.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `l.reverse()`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn reverse(&self) -> Result<()> {
        self.handle.call(Op::Reverse).map(drop)
    }

    /// `l.sort()`, on the server.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn sort(&self) -> Result<()> {
        self.handle.call(Op::Sort).map(drop)
    }

    /// `l.clear()`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn clear(&self) -> Result<()> {
        self.handle.call(Op::Clear).map(drop)
    }

    /// `l[start:end]` (negative bounds from the end, clamped as in Python).
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Deserialize`].
    pub fn slice(&self, start: i64, end: i64) -> Result<Vec<T>> {
        values(self.handle.call(Op::Slice(start, end))?)
    }

    /// `l[index] += delta`, atomically on the server; the new value.
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError` or `TypeError`.
    pub fn increment(&self, index: i64, delta: T) -> Result<T> {
        decode(
            self.handle
                .call(Op::Increment(Value::Int(index), encode(&delta)?))?,
        )
    }

    /// A snapshot copy of the whole list.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Deserialize`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        values(self.handle.call(Op::Snapshot)?)
    }
}

/// A namespace owned by a [`Manager`] (Python's `Manager().Namespace()`):
/// named attributes of any serde type.
#[derive(Clone)]
pub struct NamespaceProxy {
    handle: Handle,
}

/// A proxy stored in a dict, list or namespace of the same manager.
impl Serialize for NamespaceProxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

/// Decodes only from an answer of the manager that owns the namespace.
impl<'de> serde::Deserialize<'de> for NamespaceProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(NamespaceProxy {
            handle: Handle::deserialize(d, Kind::Namespace)?,
        })
    }
}

impl NamespaceProxy {
    /// `ns.name`.
    ///
    /// # Errors
    /// [`Error::Remote`] `AttributeError` if unset; [`Error::Deserialize`].
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        decode(self.handle.call(Op::Get(Value::Str(name.into())))?)
    }

    /// `ns.name = value`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.handle
            .call(Op::Set(Value::Str(name.into()), encode(value)?))
            .map(drop)
    }

    /// `del ns.name`.
    ///
    /// # Errors
    /// [`Error::Remote`] `KeyError` if unset.
    pub fn del(&self, name: &str) -> Result<()> {
        self.handle.call(Op::Del(Value::Str(name.into()))).map(drop)
    }
}

impl<K, V> std::fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DictProxy({})", self.handle.id)
    }
}

impl<T> std::fmt::Debug for ListProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListProxy({})", self.handle.id)
    }
}

impl std::fmt::Debug for NamespaceProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamespaceProxy({})", self.handle.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parent's state, its lock held by a thread that was not forked:
    /// this process makes its own without waiting, and every state is
    /// freed with the client (Miri checks the pointers and the leaks).
    #[test]
    fn a_process_never_takes_the_lock_of_a_state_not_its_own() {
        let client = Client::new(Address::Unix("/nonexistent".into()), b"key");
        let first: *const ProcessConn = client.state();
        assert!(std::ptr::eq(first, client.state()), "one state per process");
        let parents = Box::into_raw(Box::new(ProcessConn {
            pid: sys::getpid().wrapping_add(1),
            conn: Mutex::new(None),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }));
        // SAFETY: just made; the client frees it.
        std::mem::forget(unsafe { &*parents }.conn.lock().unwrap());
        client.retire(client.current.swap(parents, Ordering::AcqRel));
        let mine = client.state();
        assert_eq!(mine.pid, sys::getpid());
        assert!(mine.conn.try_lock().is_ok());
        assert!(!std::ptr::eq(mine, parents) && !std::ptr::eq(mine, first));
    }
}
