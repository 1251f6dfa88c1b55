//! [`Reference`]: one counted reference to a server object, what every
//! proxy holds, and the typed round trip of an operation on it.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use serde::de::DeserializeOwned;

use super::client::Client;
use super::protocol::{Id, Kind, Op};
use super::refs::PROXY_TOKEN;
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

    /// A proxy found in a server's answer: it takes over the reference the
    /// answer carried for it (multiproc's server counts one for a client
    /// that holds its references), or takes one now (as a Python client
    /// does with a proxy it unpickles).
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
        if !super::client::take_carried(id) {
            client
                .incref(id)
                .map_err(|e| D::Error::custom(format!("the {kind:?} object {id:x}: {e}")))?;
        }
        Ok(Reference::new(client, kind, id))
    }

    fn own(&self) -> Result<()> {
        let me = sys::getpid();
        if self.holder.load(Ordering::Relaxed) != me {
            self.client.incref(self.id)?;
            self.holder.store(me, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Applies `op` to the object, decoding the answer as an `R`.
    pub(super) fn call<R: DeserializeOwned>(&self, op: Op) -> Result<R> {
        self.own()?;
        self.answered();
        self.client.call(self.kind, self.id, op)
    }

    /// Whether the server is multiproc's (it holds this client's
    /// references), and so has multiproc's own methods.
    pub(super) fn multiproc_server(&self) -> Result<bool> {
        self.client.held()
    }

    /// Applies `ops` in one round trip, decoding each answer as an `R`.
    pub(super) fn batch<R: DeserializeOwned>(&self, ops: Vec<Op>) -> Result<Vec<R>> {
        self.own()?;
        self.answered();
        self.client.batch(self.kind, self.id, ops)
    }

    /// Python's `str()` of the object (`{1: 'a'}`, `[9, 8, 7]`,
    /// `Namespace(a=1)`), as the server's `__repr__` gives it, in one round
    /// trip.
    pub(super) fn display(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.call::<String>(Op::Repr) {
            Ok(shown) => f.write_str(&shown),
            Err(e) => write!(f, "<{} object {}: {e}>", self.kind.proxy_name(), self.id),
        }
    }
}

impl Clone for Reference {
    fn clone(&self) -> Reference {
        // A clone is a reference of its own; if the server is gone, there is
        // nothing to count.
        let _ = self.own();
        let _ = self.client.incref(self.id);
        Reference::new(self.client.clone(), self.kind, self.id)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if self.holder.load(Ordering::Relaxed) == sys::getpid() {
            let _ = self.client.decref(self.id);
        }
    }
}
