//! [`DictProxy`]: a dict owned by a manager.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::encode;
use super::protocol::{Kind, Op};
use super::reference::Reference;
use super::PyValue;
use crate::error::Result;
#[cfg(doc)]
use crate::{Error, Manager};

/// A dict owned by a [`Manager`] (Python's `Manager().dict()`), typed on this
/// side through serde. Clones and copies in forked children refer to the
/// same dict; the server frees it when the last proxy anywhere is dropped.
pub struct DictProxy<K, V> {
    pub(super) reference: Reference,
    pub(super) _types: PhantomData<fn() -> (K, V)>,
}

/// A proxy stored in a dict, list or namespace of the same manager (a
/// nested proxy, as in Python): the container holds a reference, and
/// reading it back gives a proxy of the same object.
impl<K, V> Serialize for DictProxy<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.reference.serialize(s)
    }
}

/// Decodes only from an answer of the manager that owns the dict.
impl<'de, K, V> serde::Deserialize<'de> for DictProxy<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(DictProxy {
            reference: Reference::deserialize(d, Kind::Dict)?,
            _types: PhantomData,
        })
    }
}

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        DictProxy {
            reference: self.reference.clone(),
            _types: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The object's name on Redis, for a Redis-backed manager's
    /// `remove_named` (`None` for a manager server's object).
    pub fn redis_name(&self) -> Option<&str> {
        self.reference.redis_name()
    }

    /// `d.get(key)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`]; [`Error::Deserialize`] if the value is not a `V`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.reference.call(Op::Lookup(encode(key)?))
    }

    /// `d[key] = value`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn set(&self, key: K, value: V) -> Result<()> {
        self.reference
            .call::<()>(Op::Set(encode(&key)?, encode(&value)?))
    }

    /// `d.pop(key, None)`: removes the key, returning its value if present.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get); a value that is not a `V` is put
    /// back (its key then comes last in the dict's order).
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let key = encode(key)?;
        self.reference
            .take(Op::Discard(key.clone()), |v| Some(Op::SetDefault(key, v)))
    }

    /// `d.pop(key)`.
    ///
    /// # Errors
    /// [`Error::Remote`] `KeyError` if absent; [`Error::Deserialize`] if
    /// the value is not a `V`, which is put back (its key then comes last
    /// in the dict's order).
    pub fn pop(&self, key: &K) -> Result<V> {
        let key = encode(key)?;
        self.reference
            .take(Op::Pop(key.clone()), |v| Some(Op::SetDefault(key, v)))
    }

    /// `d.popitem()`: the last item inserted.
    ///
    /// # Errors
    /// [`Error::Remote`] `KeyError` if empty; [`Error::Deserialize`] if
    /// the item is not a `(K, V)`, which is put back.
    pub fn popitem(&self) -> Result<(K, V)> {
        self.reference.take(Op::PopItem, |item| match item {
            PyValue::Tuple(kv) => <[PyValue; 2]>::try_from(kv)
                .ok()
                .map(|[k, v]| Op::SetDefault(k, v)),
            _ => None,
        })
    }

    /// `d.setdefault(key, default)`: the value, inserting `default` if absent.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn setdefault(&self, key: K, default: V) -> Result<V> {
        self.reference
            .call(Op::SetDefault(encode(&key)?, encode(&default)?))
    }

    /// `key in d`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn contains(&self, key: &K) -> Result<bool> {
        self.reference.call(Op::Contains(encode(key)?))
    }

    /// `len(d)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn len(&self) -> Result<usize> {
        self.reference.call(Op::Len)
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
        self.reference.call(Op::Keys)
    }

    /// The values, in insertion order.
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn values(&self) -> Result<Vec<V>> {
        self.reference.call(Op::Values)
    }

    /// The items, in insertion order (one round trip: a snapshot).
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.reference.call(Op::Snapshot)
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
        self.reference.call::<()>(Op::Update(items))
    }

    /// `d.clear()`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn clear(&self) -> Result<()> {
        self.reference.call::<()>(Op::Clear)
    }

    /// `d[key] += delta` as one atomic step on the server (a missing key
    /// counts as zero): concurrent increments from many processes never
    /// lose an update, unlike Python's `d[k] += 1`. Returns the new value.
    /// On Redis ([`Manager::connect_redis`]) ints are 64-bit: a sum past
    /// `i64` is an `OverflowError` and the value is left as it was (a
    /// manager server goes on to 127 bits).
    ///
    /// # Errors
    /// [`Error::Remote`] `TypeError` if the value is not a number (numbers
    /// only: a `str` is refused, where Python's `+=` would join strings).
    pub fn increment(&self, key: &K, delta: V) -> Result<V> {
        self.reference
            .call(Op::Increment(encode(key)?, encode(&delta)?))
    }

    /// Sets `d[key] = new` only if it currently equals `expected` (`None`:
    /// absent), atomically; whether it did. On Redis
    /// ([`Manager::connect_redis`]) "equals" is "has the same encoding":
    /// an expected `1.0` does not match a stored `1` (Python's `==` says
    /// they are equal, and a manager server matches them).
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn compare_and_set(&self, key: &K, expected: Option<&V>, new: V) -> Result<bool> {
        let expected = expected.map(encode).transpose()?;
        self.reference
            .call(Op::CompareAndSet(encode(key)?, expected, encode(&new)?))
    }

    /// Sets many keys in one round trip, in order (a key given twice ends
    /// with its last value): one `d.update({...})`, which every server has
    /// (CPython's too), and the cheapest way to send many items.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn set_many(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        self.update(items)
    }

    /// Looks many keys up in one round trip (one call of multiproc's
    /// server; a server without it, CPython's, gets one `get` per key).
    ///
    /// # Errors
    /// As for [`get`](DictProxy::get).
    pub fn get_many<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Result<Vec<Option<V>>>
    where
        K: 'k,
    {
        let keys = keys.into_iter().map(encode).collect::<Result<Vec<_>>>()?;
        if self.reference.multiproc_server()? {
            let n = keys.len();
            let found: Vec<Option<V>> = self.reference.call(Op::LookupMany(keys))?;
            // A server that answers another count answers something else.
            if found.len() != n {
                return Err(crate::Error::Deserialize(format!(
                    "get_many of {n} keys answered {}",
                    found.len()
                )));
            }
            return Ok(found);
        }
        self.reference
            .batch(keys.into_iter().map(Op::Lookup).collect())
    }
}

impl<K, V> fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DictProxy({})", self.reference)
    }
}

/// Python's `str(d)`: the dict as Python prints it, `{1: '1', '2': 2}`
/// (one round trip; if that fails, `<DictProxy object ID: ERROR>`).
impl<K, V> fmt::Display for DictProxy<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reference.display(f)
    }
}
