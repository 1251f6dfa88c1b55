//! [`NamespaceProxy`]: a namespace owned by a manager.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::encode;
use super::protocol::{Kind, Op};
use super::reference::Reference;
use super::PyValue;
use crate::error::Result;
#[cfg(doc)]
use crate::{Error, Manager};

/// A namespace owned by a [`Manager`] (Python's `Manager().Namespace()`):
/// named attributes of any serde type.
#[derive(Clone)]
pub struct NamespaceProxy {
    pub(super) reference: Reference,
}

/// A proxy stored in a dict, list or namespace of the same manager.
impl Serialize for NamespaceProxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.reference.serialize(s)
    }
}

/// Decodes only from an answer of the manager that owns the namespace.
impl<'de> serde::Deserialize<'de> for NamespaceProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(NamespaceProxy {
            reference: Reference::deserialize(d, Kind::Namespace)?,
        })
    }
}

impl NamespaceProxy {
    /// The object's name on Redis, for a Redis-backed manager's
    /// `remove_named` (`None` for a manager server's object).
    pub fn redis_name(&self) -> Option<&str> {
        self.reference.redis_name()
    }

    /// `ns.name`.
    ///
    /// # Errors
    /// [`Error::Remote`] `AttributeError` if unset; [`Error::Deserialize`].
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.reference.call(Op::Get(PyValue::Str(name.into())))
    }

    /// `ns.name = value`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.reference
            .call::<()>(Op::Set(PyValue::Str(name.into()), encode(value)?))
    }

    /// `del ns.name`.
    ///
    /// # Errors
    /// [`Error::Remote`] `AttributeError` if unset.
    pub fn del(&self, name: &str) -> Result<()> {
        self.reference
            .call::<()>(Op::Del(PyValue::Str(name.into())))
    }
}

impl fmt::Debug for NamespaceProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamespaceProxy({})", self.reference)
    }
}

/// Python's `str(ns)`: `Namespace(a=1, b='x')` (one round trip; if that
/// fails, `<NamespaceProxy object ID: ERROR>`).
impl fmt::Display for NamespaceProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reference.display(f)
    }
}
