//! [`Reference`]: one counted reference to a server object, what every
//! proxy holds, and the typed round trip of an operation on it.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

#[cfg(feature = "redis")]
use super::client::decode;
use super::client::Client;
use super::de::from_value;
use super::protocol::{Id, Kind, Op};
#[cfg(feature = "redis")]
use super::redis::{Store, REDIS_TOKEN};
use super::refs::PROXY_TOKEN;
use super::PyValue;
use crate::error::Result;
use crate::per_process::PerProcess;
use crate::{poison, sys};

/// While it lives, this thread decodes a server's answer (see
/// [`Reference::answered`]); it puts back what was there before.
struct Answering(Weak<Client>);

impl Drop for Answering {
    fn drop(&mut self) {
        ANSWERED_BY.set(std::mem::take(&mut self.0));
    }
}

/// One reference to a manager's object: a counted reference to an object
/// of a manager server, or the name of an object on Redis.
pub(super) struct Reference {
    kind: Kind,
    target: Target,
}

enum Target {
    /// The process that holds the reference is recorded: a forked child
    /// that uses an inherited proxy first takes a reference of its own,
    /// and only the holder's drop gives one back.
    Server {
        client: Arc<Client>,
        id: Id,
        holder: Holder,
    },
    /// Named objects on Redis are not counted: they live until deleted.
    #[cfg(feature = "redis")]
    Redis { store: Arc<Store>, name: String },
}

thread_local! {
    /// The client whose answer this thread is decoding: a proxy inside it
    /// (a nested proxy) becomes a handle on that client's server.
    static ANSWERED_BY: RefCell<Weak<Client>> = const { RefCell::new(Weak::new()) };
}

impl Reference {
    /// Takes over a reference that the server counted for this process.
    pub(super) fn new(client: Arc<Client>, kind: Kind, id: Id) -> Reference {
        give_back_handed(false);
        Reference {
            kind,
            target: Target::Server {
                client,
                id,
                holder: Holder::new(),
            },
        }
    }

    /// The object `name` of `kind` on Redis.
    #[cfg(feature = "redis")]
    pub(super) fn redis(store: Arc<Store>, kind: Kind, name: String) -> Reference {
        Reference {
            kind,
            target: Target::Redis { store, name },
        }
    }

    /// Records that what this thread decodes, until the guard is dropped,
    /// comes from `client`'s server. Outside such a call, a proxy decoded
    /// is a Redis object's (from a pipe, a queue, a Redis value).
    fn answered(client: &Arc<Client>) -> Answering {
        Answering(ANSWERED_BY.replace(Arc::downgrade(client)))
    }

    /// A proxy of a server's object serializes as its kind and id under
    /// [`PROXY_TOKEN`], which the bridge to [`PyValue`] turns into a
    /// [`PyValue::Proxy`]. A Redis object's serializes as its Redis URL,
    /// kind and name (under [`REDIS_TOKEN`]): whoever decodes it, in any
    /// process, reaches the same object.
    pub(super) fn serialize<S: serde::Serializer>(
        &self,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match &self.target {
            Target::Server { id, .. } => s.serialize_newtype_struct(PROXY_TOKEN, &(self.kind, *id)),
            #[cfg(feature = "redis")]
            Target::Redis { store, name } => {
                s.serialize_newtype_struct(REDIS_TOKEN, &(&store.url, self.kind, name))
            }
        }
    }

    /// A proxy found in a server's answer: it takes over the reference the
    /// answer carried for it (multiproc's server counts one for a client
    /// that holds its references), or takes one now (as a Python client
    /// does with a proxy it unpickles).
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: Kind,
    ) -> std::result::Result<Reference, D::Error> {
        use serde::de::Error as _;
        let Some(client) = ANSWERED_BY.with_borrow(Weak::upgrade) else {
            #[cfg(feature = "redis")]
            return Reference::deserialize_redis(d, kind);
            #[cfg(not(feature = "redis"))]
            return Err(D::Error::custom(
                "a proxy can only be decoded from its manager's answer",
            ));
        };
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = PyValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a manager proxy")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<PyValue, D::Error> {
                serde::Deserialize::deserialize(d)
            }
        }
        let fields = d.deserialize_newtype_struct(PROXY_TOKEN, Fields)?;
        // A Redis object's proxy, stored in this server's object: its URL,
        // kind and name.
        if matches!(&fields, PyValue::Tuple(f) if f.len() == 3) {
            #[cfg(feature = "redis")]
            return from_value::<(String, Kind, String)>(fields)
                .map_err(|e| e.to_string())
                .and_then(|(url, found, name)| Reference::redis_named(&url, found, name, kind))
                .map_err(D::Error::custom);
            #[cfg(not(feature = "redis"))]
            return Err(D::Error::custom(
                "a Redis object's proxy, and this build has no redis feature",
            ));
        }
        let (found, id): (Kind, Id) = from_value(fields).map_err(D::Error::custom)?;
        if found != kind {
            return Err(D::Error::custom(format!(
                "expected a {kind:?} proxy, found a {found:?} proxy"
            )));
        }
        if !super::client::take_carried(id) {
            client
                .incref(id)
                .map_err(|e| D::Error::custom(format!("the {kind:?} object {id:x}: {e}")))?;
        }
        Ok(Reference::new(client, kind, id))
    }

    /// A Redis object's proxy, from its URL, kind and name (as
    /// [`serialize`](Reference::serialize) wrote them), on this process's
    /// store for that URL.
    #[cfg(feature = "redis")]
    fn deserialize_redis<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: Kind,
    ) -> std::result::Result<Reference, D::Error> {
        use serde::de::Error as _;
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = (String, Kind, String);
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Redis object's proxy")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<(String, Kind, String), D::Error> {
                serde::Deserialize::deserialize(d)
            }
        }
        // Outside its manager's answers, only a Redis object's proxy is
        // decoded: a local manager's (from a pipe or a queue) is an error.
        let (url, found, name) = d
            .deserialize_newtype_struct(REDIS_TOKEN, Fields)
            .map_err(|e| {
                D::Error::custom(format!(
                    "not a Redis object's proxy (a local manager's proxy is decoded only from its manager's answers, not from a pipe or a queue): {e}"
                ))
            })?;
        Reference::redis_named(&url, found, name, kind).map_err(D::Error::custom)
    }

    /// The proxy of the Redis object `name` of kind `found` at `url`,
    /// which must be of kind `kind`, on this process's store for `url`.
    #[cfg(feature = "redis")]
    fn redis_named(
        url: &str,
        found: Kind,
        name: String,
        kind: Kind,
    ) -> std::result::Result<Reference, String> {
        if found != kind {
            return Err(format!(
                "expected a {kind:?} proxy, found a {found:?} proxy"
            ));
        }
        super::redis::check_name(&name).map_err(|e| e.to_string())?;
        let store = Store::shared(url, None).map_err(|e| e.to_string())?;
        Ok(Reference::redis(store, kind, name))
    }

    /// Takes a reference of this process's own, if it does not hold this
    /// one (a forked child's first use of an inherited proxy).
    /// Of threads that make their first calls at once, one takes it.
    fn own(client: &Client, id: Id, holder: &Holder) -> Result<()> {
        let me = sys::getpid();
        if holder.pid.load(Ordering::Relaxed) == me {
            return Ok(());
        }
        let was = holder.pid.swap(me, Ordering::Relaxed);
        if was != me {
            if let Err(e) = client.incref(id) {
                // Not taken: the next call tries again.
                let _ = holder
                    .pid
                    .compare_exchange(me, was, Ordering::Relaxed, Ordering::Relaxed);
                return Err(e);
            }
            holder.taken_over(me);
        }
        Ok(())
    }

    /// Applies `op` to the object, decoding the answer as an `R`.
    pub(super) fn call<R: DeserializeOwned>(&self, op: Op) -> Result<R> {
        match &self.target {
            Target::Server { client, id, holder } => {
                Reference::own(client, *id, holder)?;
                let _answering = Reference::answered(client);
                client.call(self.kind, *id, op)
            }
            #[cfg(feature = "redis")]
            Target::Redis { store, name } => decode(store.apply(self.kind, name, op)?),
        }
    }

    /// Applies `op`, which takes a value out of the object, decoding the
    /// answer as an `R`; a value that does not decode is put back with the
    /// operation `put_back` makes of it.
    pub(super) fn take<R: DeserializeOwned>(
        &self,
        op: Op,
        put_back: impl FnOnce(PyValue) -> Option<Op>,
    ) -> Result<R> {
        match &self.target {
            Target::Server { client, id, holder } => {
                Reference::own(client, *id, holder)?;
                let _answering = Reference::answered(client);
                client.call_taking(self.kind, *id, op, put_back)
            }
            #[cfg(feature = "redis")]
            Target::Redis { store, name } => {
                let taken = store.apply(self.kind, name, op)?;
                decode(taken.clone()).map_err(|e| {
                    let again =
                        put_back(taken).map(|op| store.apply(self.kind, name, op).map(drop));
                    super::client::put_back_error(e, again)
                })
            }
        }
    }

    /// Whether the server is multiproc's (it holds this client's
    /// references, or is Redis), and so has multiproc's own methods.
    pub(super) fn multiproc_server(&self) -> Result<bool> {
        match &self.target {
            Target::Server { client, .. } => client.held(),
            #[cfg(feature = "redis")]
            Target::Redis { .. } => Ok(true),
        }
    }

    /// Applies `ops` in one round trip (on Redis, one at a time), decoding
    /// each answer as an `R`.
    pub(super) fn batch<R: DeserializeOwned>(&self, ops: Vec<Op>) -> Result<Vec<R>> {
        match &self.target {
            Target::Server { client, id, holder } => {
                Reference::own(client, *id, holder)?;
                let _answering = Reference::answered(client);
                client.batch(self.kind, *id, ops)
            }
            #[cfg(feature = "redis")]
            Target::Redis { .. } => ops.into_iter().map(|op| self.call(op)).collect(),
        }
    }

    /// Python's `str()` of the object (`{1: 'a'}`, `[9, 8, 7]`,
    /// `Namespace(a=1)`), as the server's `__repr__` gives it, in one round
    /// trip.
    pub(super) fn display(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.call::<String>(Op::Repr) {
            Ok(shown) => f.write_str(&shown),
            Err(e) => write!(f, "<{} object {self}: {e}>", self.kind.proxy_name()),
        }
    }
}

impl Reference {
    /// The object's name on Redis (`None` for a manager server's object).
    pub(super) fn redis_name(&self) -> Option<&str> {
        match &self.target {
            Target::Server { .. } => None,
            #[cfg(feature = "redis")]
            Target::Redis { name, .. } => Some(name),
        }
    }
}

/// The object's id on its server, or its name on Redis.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Server { id, .. } => write!(f, "{id}"),
            #[cfg(feature = "redis")]
            Target::Redis { name, .. } => write!(f, "{name:?}"),
        }
    }
}

impl Clone for Reference {
    fn clone(&self) -> Reference {
        match &self.target {
            Target::Server { client, id, holder } => {
                // A clone is a reference of its own; if the server is gone,
                // there is nothing to count.
                let _ = Reference::own(client, *id, holder);
                let taken = client.incref(*id).is_ok();
                let clone = Reference::new(client.clone(), self.kind, *id);
                if !taken {
                    // None taken (the server is gone, or no descriptor was
                    // left here for the connection): none to give back on
                    // drop (a server that counts globally would free the
                    // object under the other proxies); the clone's first
                    // call takes one, as a forked child's does.
                    if let Target::Server { holder, .. } = &clone.target {
                        holder.pid.store(0, Ordering::Relaxed);
                    }
                }
                clone
            }
            #[cfg(feature = "redis")]
            Target::Redis { store, name } => {
                Reference::redis(store.clone(), self.kind, name.clone())
            }
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if let Target::Server { client, id, holder } = &self.target {
            let me = sys::getpid();
            if holder.pid.load(Ordering::Relaxed) == me {
                match crate::process::handing_to_child() {
                    // The parent's copy of a proxy moved into a forked
                    // child's closure, dropped before the child runs: the
                    // child takes a reference of its own on first use, so
                    // this one is kept until it has (or has dropped its
                    // copy unused, or has ended): given back now, the
                    // object could be gone before the child's first call.
                    Some(child) => hand_to(child, client.clone(), *id, holder.slot_of(me)),
                    None => {
                        // Now, or once a request carrying this proxy
                        // (converted into its value) has gone.
                        let (client, id) = (client.clone(), *id);
                        super::refs::owe(id, move || {
                            let _ = client.decref(id);
                        });
                        holder.free(me);
                    }
                }
            } else {
                // A copy that this process never took a reference for: if
                // it was handed to this process, the parent's is not needed.
                holder.taken_over(me);
                // A clone that took none (see `clone`): its slot, if this
                // process's, is free again.
                if holder.pid.load(Ordering::Relaxed) == 0 {
                    holder.free(me);
                }
            }
            give_back_handed(false);
        }
    }
}

/// Who holds a [`Reference`]'s reference, and its word in this process's
/// slab of [`Slot`]s, through which a forked child handed the proxy tells
/// the parent that it no longer needs the parent's reference.
struct Holder {
    /// The process that holds the reference.
    pid: AtomicU32,
    /// `None` if the slab was full (a handed reference is then kept until
    /// the child ends).
    slot: Option<Slot>,
}

impl Holder {
    fn new() -> Holder {
        Holder {
            pid: AtomicU32::new(sys::getpid()),
            slot: Slot::take(),
        }
    }

    /// The slot, if it is this process's (`me`) to hand over.
    fn slot_of(&self, me: u32) -> Option<Slot> {
        self.slot.filter(|s| s.owner == me)
    }

    /// In process `me`, which has its own reference now (or never needs
    /// one): if the parent handed it this proxy, the parent's can go.
    fn taken_over(&self, me: u32) {
        if let Some(s) = self.slot {
            if s.words[0].load(Ordering::Acquire) == me {
                s.words[1].store(1, Ordering::Release);
            }
        }
    }

    /// Frees the slot, if it is this process's (`me`).
    fn free(&self, me: u32) {
        if let Some(s) = self.slot_of(me) {
            s.free();
        }
    }
}

/// Two words in a slab of memory shared with every child forked since it
/// was made (`MAP_SHARED`): the child a proxy was handed to, and whether
/// that child took a reference of its own (or dropped its copy unused).
/// Only the process that made the slab takes and frees its slots.
#[derive(Clone, Copy)]
struct Slot {
    words: &'static [AtomicU32; 2],
    index: u32,
    /// The process whose slab it is.
    owner: u32,
}

/// Slots in a process's slab.
const SLOTS: usize = 16 << 10;

/// A process's slab: where it is, and its free slots.
struct Slab {
    words: &'static [[AtomicU32; 2]],
    free: Vec<u32>,
    used: usize,
}

/// This process's slab, made on first use (a forked child makes its own).
static SLAB: PerProcess<Option<Slab>> = PerProcess::new();

impl Slot {
    /// A free slot of this process's slab, if there is one.
    fn take() -> Option<Slot> {
        let mut slab = poison::locked(SLAB.get());
        let slab = slab.get_or_insert_with(Slab::map).as_mut()?;
        let index = match slab.free.pop() {
            Some(i) => i,
            None if slab.used < slab.words.len() => {
                slab.used += 1;
                (slab.used - 1) as u32
            }
            None => return None,
        };
        Some(Slot {
            words: &slab.words[index as usize],
            index,
            owner: sys::getpid(),
        })
    }

    /// Gives the slot back to this process's slab.
    fn free(self) {
        self.words[0].store(0, Ordering::Relaxed);
        self.words[1].store(0, Ordering::Relaxed);
        if let Some(slab) = poison::locked(SLAB.get()).as_mut().and_then(Option::as_mut) {
            slab.free.push(self.index);
        }
    }
}

impl Slab {
    /// A new slab, never unmapped (the copies of proxies in children
    /// point into it); `None` if it cannot be mapped.
    fn map() -> Option<Slab> {
        let p = sys::map_anonymous(SLOTS * std::mem::size_of::<[AtomicU32; 2]>(), true)?;
        // SAFETY: `len` bytes, page-aligned, zeroed, mapped for good (never
        // unmapped, so `'static`); atomics only, for which zeroes and any
        // bytes a child writes are valid.
        let words = unsafe { std::slice::from_raw_parts(p.cast::<[AtomicU32; 2]>(), SLOTS) };
        Some(Slab {
            words,
            free: Vec::new(),
            used: 0,
        })
    }
}

/// A reference kept for a forked child that was handed a proxy of it
/// (see [`Reference`]'s drop), until that child takes one of its own,
/// drops its copy, or ends.
struct Handed {
    child: u32,
    client: Arc<Client>,
    id: Id,
    slot: Option<Slot>,
}

/// This process's [`Handed`] references (a forked child starts with none
/// of its parent's: they are the parent's to give back), and when it last
/// looked for children that ended.
static HANDED: PerProcess<Handing> = PerProcess::new();

/// See [`HANDED`].
#[derive(Default)]
struct Handing {
    list: Vec<Handed>,
    looked: Option<Instant>,
}

/// How often a proxy made or dropped looks for children that ended
/// (a look reads `/proc` once a child).
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// Whether [`HANDED`] may hold something (checked before taking its lock).
static ANY_HANDED: AtomicBool = AtomicBool::new(false);

/// Keeps this process's reference to `id` for `child` (see [`Handed`]).
fn hand_to(child: u32, client: Arc<Client>, id: Id, slot: Option<Slot>) {
    if let Some(s) = slot {
        s.words[0].store(child, Ordering::Release);
    }
    poison::locked(HANDED.get())
        .get_or_insert_with(Handing::default)
        .list
        .push(Handed {
            child,
            client,
            id,
            slot,
        });
    ANY_HANDED.store(true, Ordering::Release);
}

/// Gives back the references kept for children that no longer need them
/// (each proxy made or dropped looks, and [`Manager::number_of_objects`]).
/// Children that ended are looked for at most every [`LOOK_EVERY`], or
/// now if `now`.
///
/// [`Manager::number_of_objects`]: super::Manager::number_of_objects
pub(super) fn give_back_handed(now: bool) {
    if !ANY_HANDED.load(Ordering::Acquire) || crate::process::handing_to_child().is_some() {
        return;
    }
    let ended: Vec<Handed> = {
        let mut handing = poison::locked(HANDED.get());
        let handing = handing.get_or_insert_with(Handing::default);
        let at = Instant::now();
        let look = now
            || handing
                .looked
                .is_none_or(|t| at.duration_since(t) >= LOOK_EVERY);
        if look {
            handing.looked = Some(at);
        }
        // Each child looked at once.
        let (mut alive, mut gone) = (Vec::new(), Vec::new());
        let mut ended_child = |pid: u32| {
            if !look || alive.contains(&pid) {
                false
            } else if gone.contains(&pid) {
                true
            } else if sys::pid_alive(pid) {
                alive.push(pid);
                false
            } else {
                gone.push(pid);
                true
            }
        };
        let (ended, running) = std::mem::take(&mut handing.list)
            .into_iter()
            .partition(|h| {
                h.slot
                    .is_some_and(|s| s.words[1].load(Ordering::Acquire) == 1)
                    || ended_child(h.child)
            });
        handing.list = running;
        ANY_HANDED.store(!handing.list.is_empty(), Ordering::Release);
        ended
    };
    // Outside the lock: each is a round trip.
    for h in ended {
        let _ = h.client.decref(h.id);
        if let Some(s) = h.slot {
            s.free();
        }
    }
}
