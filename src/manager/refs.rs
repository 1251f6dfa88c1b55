//! Reference accounting: [`ProxyRef`], a counted reference to a manager
//! object stored inside a value, and the server's record of the references
//! that `ProxyRef`s take and give back (on this thread; only the server
//! thread records).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::per_process::PerProcess;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::protocol::{Id, Kind};

/// The name under which proxies pass through serde, so that the bridge to
/// [`PyValue`] recognises them.
pub(crate) const PROXY_TOKEN: &str = "$multiproc::Proxy";

/// The name under which a Redis object's proxy passes through serde: its
/// URL, kind and name. In a [`PyValue`](super::PyValue) it is an inert
/// object of class [`REDIS_PROXY_CLASS`] holding the three.
pub(crate) const REDIS_TOKEN: &str = "$multiproc::RedisProxy";

/// The module and class a Redis object's proxy is in a `PyValue`.
pub(crate) const REDIS_PROXY_CLASS: (&str, &str) = ("multiproc", "RedisProxy");

/// A reference to a manager object inside a [`PyValue`](super::PyValue): its kind and id.
///
/// In the server, every `ProxyRef` that exists counts as one reference to
/// its object: decoding or cloning one takes a reference and dropping it
/// gives one back. The changes are recorded as they happen and applied by
/// the server after each request (by this module), so that
/// a value stored, replaced, popped or cleared anywhere keeps the count
/// right without every operation having to.
///
/// Two `ProxyRef`s are equal, ordered and hashed by kind and object alone.
#[derive(Debug)]
pub struct ProxyRef {
    pub(crate) kind: Kind,
    pub(crate) id: Id,
    /// Made from a client's proxy for a request: its object is pinned
    /// while this lives (see [`Pin`]). Never true of a clone.
    pinning: bool,
}

impl ProxyRef {
    pub(crate) fn new(kind: Kind, id: Id) -> ProxyRef {
        record(id, 1);
        ProxyRef {
            kind,
            id,
            pinning: false,
        }
    }

    /// A reference made from a client's own proxy of object `id`, to send
    /// in a value: the object is pinned while it lives (see [`Pin`]).
    pub(crate) fn pinning(kind: Kind, id: Id) -> ProxyRef {
        pin(id);
        let mut r = ProxyRef::new(kind, id);
        r.pinning = true;
        r
    }

    fn key(&self) -> (Kind, Id) {
        (self.kind, self.id)
    }
}

impl PartialEq for ProxyRef {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ProxyRef {}

impl std::hash::Hash for ProxyRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for ProxyRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProxyRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl Clone for ProxyRef {
    fn clone(&self) -> ProxyRef {
        ProxyRef::new(self.kind, self.id)
    }
}

impl Drop for ProxyRef {
    fn drop(&mut self) {
        record(self.id, -1);
        if self.pinning {
            unpin(self.id);
        }
    }
}

/// A client's proxy, converted into a value it is about to send, while
/// that value (its [`ProxyRef`]) lives: if the proxy itself is dropped
/// meanwhile (an item moved into `extend` or `update`, dropped once
/// converted), the reference it gives back is given back only once the
/// request has gone ([`owe`]): else the object could be freed before the
/// request that stores it arrives.
#[derive(Default)]
struct Pin {
    /// The values holding it.
    count: u32,
    /// What the proxies dropped meanwhile owe the server.
    owed: Vec<Box<dyn FnOnce() + Send>>,
}

/// The pinned proxies of this process by object (see [`Pin`]); only while
/// a request carrying proxies is made. A forked child (the Manager's
/// server among them) has its own, never its parent's (nor its lock,
/// which another thread may have held at the fork).
static PINNED: PerProcess<HashMap<Id, Pin>> = PerProcess::new();
/// Whether [`PINNED`] may hold something (checked before taking its lock).
static ANY_PINNED: AtomicBool = AtomicBool::new(false);

/// A client's proxy of object `id` was converted into a value to send
/// (the [`ProxyRef`] made for it): pinned while that value lives.
fn pin(id: Id) {
    let mut pinned = crate::poison::locked(PINNED.get());
    pinned
        .get_or_insert_with(HashMap::new)
        .entry(id)
        .or_default()
        .count += 1;
    ANY_PINNED.store(true, Ordering::Release);
}

/// A client's proxy of object `id` is dropped: `give_back` gives back its
/// reference, now, or once the values it was converted into are dropped
/// (the request that carries them has gone).
pub(crate) fn owe(id: Id, give_back: impl FnOnce() + Send + 'static) {
    if ANY_PINNED.load(Ordering::Acquire) {
        let mut pinned = crate::poison::locked(PINNED.get());
        if let Some(p) = pinned.as_mut().and_then(|p| p.get_mut(&id)) {
            p.owed.push(Box::new(give_back));
            return;
        }
    }
    give_back();
}

/// A value's reference that pinned `id` is dropped: if it was the last
/// one, what the proxies dropped meanwhile owe is given back.
fn unpin(id: Id) {
    let owed = {
        let mut pinned = crate::poison::locked(PINNED.get());
        let Some(pinned) = pinned.as_mut() else {
            return;
        };
        let Some(p) = pinned.get_mut(&id) else {
            return;
        };
        p.count -= 1;
        if p.count > 0 {
            return;
        }
        let owed = pinned.remove(&id).map(|p| p.owed).unwrap_or_default();
        ANY_PINNED.store(!pinned.is_empty(), Ordering::Release);
        owed
    };
    // Outside the lock: each is a round trip.
    owed.into_iter().for_each(|give_back| give_back());
}

impl Serialize for ProxyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        sent(self.id);
        (self.kind, self.id).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProxyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProxyRef, D::Error> {
        let (kind, id) = <(Kind, Id)>::deserialize(d)?;
        decoded(kind, id);
        Ok(ProxyRef::new(kind, id))
    }
}

/// What happened to references since they were last taken.
#[derive(Default)]
struct Changes {
    /// Each reference taken (+1) or given back (-1), in order.
    deltas: Vec<(Id, i8)>,
    /// The references that arrived in a request, to validate.
    decoded: Vec<(Kind, Id)>,
    /// The references that left in a response (the client now holds them).
    sent: Vec<Id>,
}

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static CHANGES: RefCell<Changes> = RefCell::new(Changes::default());
}

thread_local! {
    /// Typeids registered on this thread (the server's `--object NAME=TYPEID`
    /// names) and the kind of object each creates, so that a token naming
    /// one (a Python client's `AutoProxy` of `get_dict`) decodes.
    static REGISTERED: RefCell<Vec<(String, Kind)>> = const { RefCell::new(Vec::new()) };
}

/// Registers `name` as a typeid of `kind` objects on this thread.
pub(crate) fn register_typeid(name: &str, kind: Kind) {
    REGISTERED.with_borrow_mut(|r| r.push((name.into(), kind)));
}

/// The kind of object a typeid registered on this thread creates.
pub(crate) fn registered_typeid(name: &str) -> Option<Kind> {
    REGISTERED.with_borrow(|r| r.iter().find(|(n, _)| n == name).map(|(_, k)| *k))
}

/// Starts recording on this thread (the server's).
pub(crate) fn start() {
    RECORDING.set(true);
}

fn with(f: impl FnOnce(&mut Changes)) {
    if RECORDING.get() {
        CHANGES.with_borrow_mut(f);
    }
}

fn record(id: Id, delta: i8) {
    with(|c| c.deltas.push((id, delta)));
}

pub(crate) fn decoded(kind: Kind, id: Id) {
    with(|c| c.decoded.push((kind, id)));
}

pub(crate) fn sent(id: Id) {
    with(|c| c.sent.push(id));
}

/// The references taken and given back since the last call.
pub(crate) fn take_deltas() -> Vec<(Id, i8)> {
    CHANGES.with_borrow_mut(|c| std::mem::take(&mut c.deltas))
}

/// The references decoded since the last call.
pub(crate) fn take_decoded() -> Vec<(Kind, Id)> {
    CHANGES.with_borrow_mut(|c| std::mem::take(&mut c.decoded))
}

/// The references encoded since the last call.
pub(crate) fn take_sent() -> Vec<Id> {
    CHANGES.with_borrow_mut(|c| std::mem::take(&mut c.sent))
}

#[cfg(test)]
mod tests {
    use super::super::PyValue;
    use super::*;
    use std::sync::Arc;

    /// A proxy dropped while a request carries its object gives its
    /// reference back once that request's value is gone, not when another
    /// reference to the object (a clone, one decoded from an answer on
    /// another thread) is dropped meanwhile.
    #[test]
    fn only_the_pinning_reference_unpins() {
        let id = 0xfeed_0001;
        let sent = ProxyRef::pinning(Kind::Dict, id);
        let clone = sent.clone();
        drop(ProxyRef::new(Kind::Dict, id));
        drop(clone);
        let given = Arc::new(AtomicBool::new(false));
        let g = given.clone();
        owe(id, move || g.store(true, Ordering::SeqCst));
        assert!(
            !given.load(Ordering::SeqCst),
            "given back while a request carries it"
        );
        drop(sent);
        assert!(given.load(Ordering::SeqCst));
        // Nothing pinned now: given back at once.
        let g = given.clone();
        given.store(false, Ordering::SeqCst);
        owe(id, move || g.store(true, Ordering::SeqCst));
        assert!(given.load(Ordering::SeqCst));
    }

    #[test]
    fn proxy_refs_count_what_is_decoded_cloned_and_dropped() {
        start();
        let v = PyValue::List(vec![PyValue::Proxy(ProxyRef::new(Kind::List, 7))]);
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert_eq!(take_sent(), vec![7]);
        let back: PyValue = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(take_decoded(), vec![(Kind::List, 7)]);
        let copy = back.clone();
        drop((v, back, copy));
        // Made, decoded and cloned: three references taken, three given back.
        let deltas = take_deltas();
        assert!(deltas.iter().all(|&(id, _)| id == 7));
        assert_eq!(deltas.iter().filter(|(_, d)| *d > 0).count(), 3);
        assert_eq!(deltas.iter().map(|&(_, d)| i32::from(d)).sum::<i32>(), 0);
    }
}
