//! [`Reference`]: one counted reference to a server object, what every
//! proxy holds, and the typed round trip of an operation on it.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use serde::de::DeserializeOwned;

use super::client::{decode, protocol_error, Client};
use super::protocol::{Command, Id, Kind, Op, Response};
use super::refs::PROXY_TOKEN;
use super::PyValue;
use crate::error::Result;
use crate::sys;

/// One reference to a server object. The process that holds the reference
/// is recorded: a forked child that uses an inherited proxy first takes a
/// reference of its own, and only the holder's drop gives one back.
pub(super) struct Reference {
    client: Arc<Client>,
    kind: Kind,
    pub(super) id: Id,
    holder: AtomicU32,
}

thread_local! {
    /// The client whose answer this thread is decoding: a proxy inside it
    /// (a nested proxy) becomes a handle on that client's server.
    static ANSWERED_BY: RefCell<Weak<Client>> = const { RefCell::new(Weak::new()) };
}

impl Reference {
    /// Takes over a reference that the server counted for this process.
    pub(super) fn new(client: Arc<Client>, kind: Kind, id: Id) -> Reference {
        Reference {
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
    /// the bridge to [`PyValue`] turns into a [`PyValue::Proxy`].
    pub(super) fn serialize<S: serde::Serializer>(
        &self,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(PROXY_TOKEN, &(self.kind, self.id))
    }

    /// A proxy found in a server's answer: the server counted a reference
    /// for this process when it sent it, which the handle takes over.
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: Kind,
    ) -> std::result::Result<Reference, D::Error> {
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
        Ok(Reference::new(client, kind, id))
    }

    fn own(&self) -> Result<()> {
        let me = sys::getpid();
        if self.holder.load(Ordering::Relaxed) != me {
            self.client.call::<()>(&Command::Incref(self.id))?;
            self.holder.store(me, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Applies `op` to the object, decoding the answer as an `R`.
    pub(super) fn call<R: DeserializeOwned>(&self, op: Op) -> Result<R> {
        self.own()?;
        self.answered();
        self.client.call(&Command::Call(self.id, op))
    }

    /// Applies `ops` in one round trip, decoding each answer as an `R`.
    pub(super) fn batch<R: DeserializeOwned>(&self, ops: Vec<Op>) -> Result<Vec<R>> {
        self.own()?;
        self.answered();
        match self.client.request(&Command::Batch(
            ops.into_iter().map(|op| (self.id, op)).collect(),
        ))? {
            Response::Batch(rs) => rs
                .into_iter()
                .map(|r| match r {
                    Response::Value(v) => decode(v),
                    other => Err(protocol_error(other)),
                })
                .collect(),
            other => Err(protocol_error(other)),
        }
    }

    /// Python's `str()` of the object (`{1: 'a'}`, `[9, 8, 7]`): a
    /// snapshot, in one round trip. Nested proxies print as
    /// `<DictProxy object 12>`, and the references their copies in the
    /// answer carry are given back at once.
    pub(super) fn display(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.kind.proxy_name();
        let snapshot = match self.call::<PyValue>(Op::Snapshot) {
            Ok(v) => v,
            Err(e) => return write!(f, "<{name} object {}: {e}>", self.id),
        };
        let shown = match (self.kind, &snapshot) {
            // As Python's `Namespace.__repr__`: `name=repr` for the names
            // not starting with `_`, sorted as strings.
            (Kind::Namespace, PyValue::Dict(attrs)) => {
                let mut shown: Vec<String> = attrs
                    .iter()
                    .filter_map(|(k, v)| match k {
                        PyValue::Str(name) if name.starts_with('_') => None,
                        PyValue::Str(name) => Some(format!("{name}={v}")),
                        other => Some(format!("{other}={v}")),
                    })
                    .collect();
                shown.sort();
                format!("Namespace({})", shown.join(", "))
            }
            (_, v) => v.to_string(),
        };
        self.release_nested(&snapshot);
        f.write_str(&shown)
    }

    /// Gives back the references that the proxies inside `v`, an answer
    /// of the server, were counted for.
    fn release_nested(&self, v: &PyValue) {
        match v {
            PyValue::Proxy(r) => {
                let _ = self.client.call::<()>(&Command::Decref(r.id));
            }
            PyValue::List(vs) | PyValue::Tuple(vs) => {
                vs.iter().for_each(|v| self.release_nested(v))
            }
            PyValue::Dict(d) => d.iter().for_each(|(k, v)| {
                self.release_nested(k);
                self.release_nested(v);
            }),
            _ => {}
        }
    }
}

impl Clone for Reference {
    fn clone(&self) -> Reference {
        // A clone is a reference of its own; if the server is gone, there is
        // nothing to count.
        let _ = self.own();
        let _ = self.client.call::<()>(&Command::Incref(self.id));
        Reference::new(self.client.clone(), self.kind, self.id)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if self.holder.load(Ordering::Relaxed) == sys::getpid() {
            let _ = self.client.call::<()>(&Command::Decref(self.id));
        }
    }
}
