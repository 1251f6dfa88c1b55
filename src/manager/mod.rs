//! The managed layer: a Manager server process that owns dicts, lists and
//! namespaces, served to any number of processes through proxies over an
//! authenticated Unix socket (Python's `multiprocessing.Manager`).
//!
//! Each operation is a round trip to the server, so the managed layer is
//! flexible (any serde type, any number of processes, unrelated ones
//! included) but slow next to the shared layer. The server keeps values in
//! a dynamic model of Python's basic types ([`PyValue`]), so that it can
//! compare, sort and update them atomically itself.
//!
//! Where things are: the client side is [`Manager`] (here), the connection
//! of each process (`client`), the counted reference every proxy holds
//! (`reference`), one file per proxy (`dict`, `list`, `namespace`) and the
//! method call each operation is (`calls`); the operations are in
//! `protocol`, the frames they travel in are
//! [`conn::frame`](crate::conn::frame). Both sides speak Python's
//! manager protocol (pickled `(ident, methodname, args, kwds)` requests,
//! `(kind, result)` replies, through `pickle`). The server side is its
//! event loop (`server`, which also serves the shared-memory areas of the
//! fast path, `fast`, through which Rust clients on the same machine call
//! instead of their sockets; see [`Transport`]), the object table, its reference counts and the
//! calls waiting on queues (`objects`), the requests and replies
//! (`dispatch`), which method is which operation (`methods`) and what each
//! does (`apply`, and `queue` for queues), within the limits of `limits`. The
//! values are [`PyValue`] (`value`, compared and hashed in `compare`),
//! converted from and to typed Rust values by `ser` and `de`, and counted
//! where they hold proxies by `refs`.

mod apply;
mod array;
mod barrier;
/// A server's request handling in-process, for the criterion benches and
/// the profiler only: not part of the API.
#[doc(hidden)]
pub mod bench;
mod calls;
mod client;
mod compare;
mod condition;
mod de;
mod dict;
mod dispatch;
#[cfg(not(fuzzing))]
mod fast;
/// The fast path's area, public to the fuzzer only (built with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fast;
mod limits;
mod list;
mod methods;
mod namespace;
mod objects;
#[cfg(not(fuzzing))]
mod pickle;
/// The pickle codec, public to the fuzzer only (built with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod pickle;
mod protocol;
mod queue;
#[cfg(all(feature = "redis", not(fuzzing)))]
pub(crate) mod redis;
/// The Redis backend, public to the fuzzer only (built with `--cfg fuzzing`).
#[cfg(all(feature = "redis", fuzzing))]
#[doc(hidden)]
pub mod redis;
mod reference;
mod refs;
mod ser;
mod server;
mod sync;
mod value;

use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use dict::DictProxy;
pub use limits::{MAX_DEPTH, MAX_WORK};
pub use list::ListProxy;
pub use namespace::NamespaceProxy;
#[cfg(feature = "redis")]
pub use redis::event::EventProxy;
#[cfg(feature = "redis")]
pub use redis::lock::{LeaseGuard, LockProxy};
#[cfg(feature = "redis")]
pub use redis::queue::{Delivery, QueueProxy};
#[cfg(feature = "redis")]
pub use redis::value::ValueProxy;
#[cfg(feature = "redis")]
pub use redis::DEFAULT_TIMEOUT as REDIS_TIMEOUT;
pub use ser::ConvertError;
pub use value::{ProxyRef, PyObject, PyValue};

pub(crate) use client::after_fork_in_child;
use client::Client;
use protocol::Kind;
use reference::Reference;

use crate::conn::{Address, Listener, Pipe};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::sys;

/// Runs a manager server in this process, listening at `address` for
/// clients with `authkey` (what `multiproc manager serve` does), until a
/// client asks it to shut down; then the process exits. `ready` is called
/// with the bound address (for `tcp:…:0`, with the port the OS chose).
///
/// # Errors
/// If it cannot listen at `address`.
pub fn serve(
    address: &Address,
    authkey: &[u8],
    ready: impl FnOnce(&Address),
) -> crate::Result<std::convert::Infallible> {
    serve_registered(address, authkey, &[], ready)
}

/// [`serve`], with more typeids: each `(name, typeid)` makes `name` create
/// a `typeid` object (one of `dict`, `list`, `Namespace`, `Queue`,
/// `JoinableQueue`, `Event`, `Lock`, `RLock`, `Semaphore`,
/// `BoundedSemaphore`, `Condition`: those made without arguments), for Python clients of the remote-manager pattern
/// (`BaseManager.register('get_dict')`, then `m.get_dict()`).
///
/// # Errors
/// If a typeid is not one of those, or a name is already a typeid or is
/// given twice; if it cannot listen at `address`.
pub fn serve_registered(
    address: &Address,
    authkey: &[u8],
    names: &[(String, String)],
    ready: impl FnOnce(&Address),
) -> crate::Result<std::convert::Infallible> {
    let mut registry = std::collections::HashMap::new();
    for (name, typeid) in names {
        // A `Value`, an `Array` or a `Barrier` is made of arguments, which a registered
        // name's `create` does not take.
        if !objects::Objects::known_typeid(typeid)
            || matches!(&**typeid, "Value" | "Array" | "Barrier")
        {
            return Err(Error::InvalidArgument(format!(
                "{name}={typeid}: the typeid is none of dict, list, Namespace, Queue, \
                 JoinableQueue, Event, Lock, RLock, Semaphore, BoundedSemaphore, Condition"
            )));
        }
        if objects::Objects::known_typeid(name) || name == "Iterator" || name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{name}={typeid}: {name:?} cannot be a registered name"
            )));
        }
        if registry.insert(name.clone(), typeid.clone()).is_some() {
            return Err(Error::InvalidArgument(format!(
                "{name}={typeid}: {name:?} is registered twice"
            )));
        }
    }
    let held = server::hold_stop_signals();
    let listener = Listener::bind(address, Some(authkey))?;
    ready(listener.address());
    server::event_loop(listener, None, registry, held)
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
/// use multiproc::{Manager, Process};
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
    backend: Backend,
}

/// Where a manager's objects are.
enum Backend {
    /// On a manager server.
    Server {
        client: Arc<Client>,
        /// The server this handle started, and the pid of the process that did.
        server: Option<(Process<'static>, u32)>,
    },
    /// On Redis, at `address`.
    #[cfg(feature = "redis")]
    Redis {
        store: Arc<redis::Store>,
        address: Address,
    },
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);

/// How a client's calls travel to its server.
///
/// A call is a round trip to the server either way. Over the socket, each
/// costs two socket messages and the wake-ups of both processes; through
/// shared memory (a per-connection area the server hands over after
/// authentication), a call that finds the server running costs no system
/// call at all, and otherwise one doorbell byte and one futex wake. The
/// socket stays for authentication, for large requests and answers (over
/// 64 KiB), and for telling that the server is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Through shared memory when the server is multiproc's and listens on
    /// a `unix:` address (it is then on this machine); over the socket
    /// otherwise (TCP, CPython's server).
    #[default]
    Auto,
    /// Always over the socket (to compare, or to keep the server's memory
    /// to one socket per client).
    Socket,
}

impl Manager {
    /// Starts a server process on a fresh Unix socket with a random authkey.
    /// The socket is made in the temporary directory that Python's
    /// `tempfile.gettempdir` would choose (`$TMPDIR` if it is a writable
    /// directory, else `/tmp`…).
    ///
    /// # Errors
    /// If the server cannot be started or does not come up within 10 s; if
    /// the socket's path is too long for a Unix address (108 bytes).
    pub fn start() -> Result<Manager> {
        let mut key = [0u8; 32];
        sys::random_bytes(&mut key).map_err(|e| Error::io("getrandom", e))?;
        let path = sys::socket_dir().join(format!(
            "multiproc-manager-{}-{}.sock",
            sys::getpid(),
            SOCKETS.fetch_add(1, Ordering::Relaxed)
        ));
        let address = Address::Unix(path.clone());
        // A server stopped here leaves its socket file (bound, or about to
        // be): it is this start's alone (named by this process and count).
        let abandon = |server: &mut Process<'static>| {
            let _ = server.kill();
            let _ = server.join();
            let _ = std::fs::remove_file(&path);
        };
        let (mut ready, mut tell) = Pipe(false)?;
        let (listen_at, listen_key) = (address.clone(), key.to_vec());
        let parent = sys::getpid();
        // Not a daemon (whose death signal would leave the socket file
        // behind): the server watches for its parent's exit and cleans up.
        let mut server = Process::new(move || {
            // A long-lived process: it keeps nothing of ours but `tell`
            // and the standard streams (see `sys::release_inherited`).
            if let Err(e) = sys::release_inherited(&[tell.as_raw_fd()]) {
                let _ = tell.send(&Some(format!("cannot release descriptors: {e}")));
                return;
            }
            // Ctrl-C at the terminal reaches the whole process group: the
            // server ignores it, as Python's does, so that its owner can
            // still shut it down (or it ends when its owner has gone).
            let _ = sys::ignore_signal(sys::SIGINT);
            let held = server::hold_stop_signals();
            match Listener::bind(&listen_at, Some(&listen_key)) {
                Ok(listener) => {
                    let _ = tell.send(&None::<String>);
                    drop(tell);
                    server::event_loop(listener, Some(parent), Default::default(), held)
                }
                Err(e) => {
                    let _ = tell.send(&Some(e.to_string()));
                }
            }
        })
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
                abandon(&mut server);
                return Err(Error::ManagerGone(format!("the server did not start: {e}")));
            }
        }
        let mut m = match Manager::connect(address, &key) {
            Ok(m) => m,
            Err(e) => {
                // No handle will stop it: it goes now, not at this
                // process's exit.
                abandon(&mut server);
                return Err(e);
            }
        };
        if let Backend::Server { server: s, .. } = &mut m.backend {
            *s = Some((server, sys::getpid()));
        }
        Ok(m)
    }

    /// A handle on a server that is already running (started by another
    /// program, or by `multiproc manager serve`).
    ///
    /// The server may also be CPython's own (a `SyncManager`'s server, or
    /// `multiprocessing.Manager()`'s, with its address and authkey): the
    /// protocol is the same. There, references are counted globally, as
    /// for CPython's clients (a process killed with proxies leaks their
    /// objects), batches ([`DictProxy::set_many`]) are sent one call at a
    /// time, and multiproc's own atomic methods ([`DictProxy::increment`],
    /// [`DictProxy::compare_and_set`], [`ListProxy::increment`]) are refused
    /// with [`Error::Remote`] `RemoteError`.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] on a wrong key; [`Error::ManagerGone`]
    /// if it is unreachable, or if it takes the key but does not answer
    /// the first requests within 20 s (it is no manager, or a stuck one).
    pub fn connect(address: Address, authkey: &[u8]) -> Result<Manager> {
        Manager::connect_with(address, authkey, Transport::Auto)
    }

    /// [`connect`](Manager::connect), choosing how calls travel:
    /// [`Transport::Socket`] keeps every call of this handle's proxies
    /// (and of the proxies made from them) on the socket.
    ///
    /// # Errors
    /// As for [`connect`](Manager::connect).
    ///
    /// # Example
    /// ```
    /// use multiproc::manager::{Manager, Transport};
    /// let manager = Manager::start()?;
    /// let over_socket =
    ///     Manager::connect_with(manager.address().clone(), manager.authkey(), Transport::Socket)?;
    /// let d = over_socket.dict::<String, i64>()?;
    /// d.set("a".into(), 1)?;
    /// assert_eq!(d.get(&"a".into())?, Some(1));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect_with(address: Address, authkey: &[u8], transport: Transport) -> Result<Manager> {
        let client = Arc::new(Client::new(address, authkey, transport));
        // Connect now, so that a wrong address or key fails here (and a
        // peer that takes the key but never answers, in time).
        client.server_call_timed("number_of_objects", Vec::new(), true)?;
        Ok(Manager {
            backend: Backend::Server {
                client,
                server: None,
            },
        })
    }

    /// Where the server listens (for a Redis-backed manager, Redis's
    /// address).
    pub fn address(&self) -> &Address {
        match &self.backend {
            Backend::Server { client, .. } => &client.address,
            #[cfg(feature = "redis")]
            Backend::Redis { address, .. } => address,
        }
    }

    /// The server's pid, if this handle started it.
    pub fn server_pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Server { server, .. } => server.as_ref().and_then(|(p, _)| p.pid()),
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => None,
        }
    }

    /// The key clients need (Python's `authkey`), for
    /// [`connect`](Manager::connect); empty for a Redis-backed manager
    /// (whose password, if any, is in its URL).
    pub fn authkey(&self) -> &[u8] {
        match &self.backend {
            Backend::Server { client, .. } => &client.authkey,
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => &[],
        }
    }

    /// This handle's manager server.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a Redis-backed manager.
    fn client(&self, what: &str) -> Result<&Arc<Client>> {
        match &self.backend {
            Backend::Server { client, .. } => Ok(client),
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => Err(Error::InvalidArgument(format!(
                "a Redis-backed manager has no server to {what}"
            ))),
        }
    }

    /// A new object of `kind`, and this process's reference to it (on
    /// Redis, under a fresh random name).
    fn create(&self, kind: Kind) -> Result<Reference> {
        match &self.backend {
            Backend::Server { client, .. } => {
                let id = client.create(kind)?;
                Ok(Reference::new(client.clone(), kind, id))
            }
            #[cfg(feature = "redis")]
            Backend::Redis { store, .. } => {
                Ok(Reference::redis(store.clone(), kind, redis::fresh_name()?))
            }
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
            reference: self.create(Kind::Dict)?,
            _types: PhantomData,
        })
    }

    /// A new shared list.
    ///
    /// # Errors
    /// If the server is gone.
    pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<ListProxy<T>> {
        Ok(ListProxy {
            reference: self.create(Kind::List)?,
            _types: PhantomData,
        })
    }

    /// A new shared dict holding `items` (Python's
    /// `manager.dict({'a': 1})`), in one more round trip.
    ///
    /// # Errors
    /// If the server is gone; [`Error::Serialize`] if an item does not
    /// convert.
    ///
    /// # Example
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let d = manager.dict_from([("a".to_string(), 1)])?;
    /// assert_eq!(d.to_string(), "{'a': 1}");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dict_from<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>> {
        let d = self.dict()?;
        d.update(items)?;
        Ok(d)
    }

    /// A new shared list holding `items` (Python's
    /// `manager.list(range(10))`), in one more round trip.
    ///
    /// # Errors
    /// If the server is gone; [`Error::Serialize`] if an item does not
    /// convert.
    ///
    /// # Example
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let l = manager.list_from(0..10)?;
    /// assert_eq!(l.to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn list_from<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>> {
        let l = self.list()?;
        l.extend(items)?;
        Ok(l)
    }

    /// A new shared namespace (named attributes of any type).
    ///
    /// # Errors
    /// If the server is gone.
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        Ok(NamespaceProxy {
            reference: self.create(Kind::Namespace)?,
        })
    }

    /// How many objects the server holds (for tests of object lifetime).
    ///
    /// # Errors
    /// If the server is gone.
    pub fn number_of_objects(&self) -> Result<u64> {
        reference::give_back_handed(true);
        client::decode(
            self.client("count objects")?
                .server_call("number_of_objects", Vec::new())?,
        )
    }

    /// Stops the server. Proxies still around get [`Error::ManagerGone`].
    /// The process that started the server waits for it to exit; a forked
    /// child given the handle (not the server's parent) does not.
    ///
    /// # Errors
    /// If the server was already gone.
    pub fn shutdown(&mut self) -> Result<()> {
        let Backend::Server { client, server } = &mut self.backend else {
            return self.client("shut down").map(drop);
        };
        let r = client.server_call("shutdown", Vec::new()).map(drop);
        // Only the process that started the server can wait for it (a
        // forked child given the handle is not its parent).
        if let Some((server, _)) = server.take_if(|(_, starter)| *starter == sys::getpid()) {
            // A server whose exit status SIGCHLD's disposition took has
            // stopped all the same.
            let gone = |e: Error| {
                if crate::process::is_unreaped(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            };
            match server.join_timeout(Duration::from_secs(10)) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    server.kill()?;
                    server.join().map(drop).or_else(gone)?;
                }
                Err(e) => gone(e)?,
            }
            // The server has exited. One that was killed (by SIGKILL, the
            // OOM killer) could not remove its socket file: that file is
            // this start's alone (named by this process and count), so its
            // starter removes it, as Python's removes its temporary
            // directory. Gone already after a clean exit.
            if let Address::Unix(path) = &client.address {
                let _ = std::fs::remove_file(path);
            }
        }
        r
    }
}

/// A manager started by this process is shut down when its handle is
/// dropped (as leaving Python's `with Manager() as m:` block). A handle
/// moved into a forked child's closure is the child's: the server then
/// runs until the child calls [`shutdown`](Manager::shutdown) or this
/// process exits.
impl Drop for Manager {
    fn drop(&mut self) {
        // Only in the process that started it: a forked child that drops a
        // copy of the handle must not stop everyone's server.
        if let Backend::Server {
            server: Some((_, starter)),
            ..
        } = &self.backend
        {
            if *starter != sys::getpid() {
                return;
            }
            // The parent's copy of a handle moved into a forked child's
            // closure, dropped before the child runs: the server is the
            // child's to use (it stops when this process exits, or when
            // the child shuts it down).
            if crate::process::handing_to_child().is_some() {
                return;
            }
            let _ = self.shutdown();
        }
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", self.address())
            .finish()
    }
}
