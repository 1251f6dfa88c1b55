//! [`ListProxy`]: a list owned by a manager.

use std::fmt;
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

/// A list owned by a [`Manager`] (Python's `Manager().list()`). Indexes
/// may be negative (from the end), as in Python.
pub struct ListProxy<T> {
    pub(super) reference: Reference,
    pub(super) _types: PhantomData<fn() -> T>,
}

/// A proxy stored in a dict, list or namespace of the same manager (a
/// nested proxy, as in Python): the container holds a reference, and
/// reading it back gives a proxy of the same object.
impl<T> Serialize for ListProxy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.reference.serialize(s)
    }
}

/// Decodes only from an answer of the manager that owns the list.
impl<'de, T> serde::Deserialize<'de> for ListProxy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(ListProxy {
            reference: Reference::deserialize(d, Kind::List)?,
            _types: PhantomData,
        })
    }
}

impl<T> Clone for ListProxy<T> {
    fn clone(&self) -> Self {
        ListProxy {
            reference: self.reference.clone(),
            _types: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// The object's name on Redis, for a Redis-backed manager's
    /// `remove_named` (`None` for a manager server's object).
    pub fn redis_name(&self) -> Option<&str> {
        self.reference.redis_name()
    }

    /// `l[index]`.
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError`.
    pub fn get(&self, index: i64) -> Result<T> {
        self.reference.call(Op::Get(PyValue::Int(index)))
    }

    /// `l[index] = value`.
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError`.
    pub fn set(&self, index: i64, value: T) -> Result<()> {
        self.reference
            .call::<()>(Op::Set(PyValue::Int(index), encode(&value)?))
    }

    /// `l.append(value)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn append(&self, value: T) -> Result<()> {
        self.reference.call::<()>(Op::Append(encode(&value)?))
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
        self.reference.call::<()>(Op::Extend(vs))
    }

    /// `l.insert(index, value)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Serialize`].
    pub fn insert(&self, index: i64, value: T) -> Result<()> {
        self.reference
            .call::<()>(Op::Insert(index, encode(&value)?))
    }

    /// `l.pop(index)` (`-1` for the last).
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError`; [`Error::Deserialize`] if the item
    /// is not a `T`, which is put back where it was.
    pub fn pop(&self, index: i64) -> Result<T> {
        // Back where it was: `insert(i)` goes before the item at `i`, so
        // an index from the end is one more once the item is gone.
        self.reference
            .take(Op::Pop(PyValue::Int(index)), |v| match index {
                -1 => Some(Op::Append(v)),
                i if i < -1 => Some(Op::Insert(i + 1, v)),
                i => Some(Op::Insert(i, v)),
            })
    }

    /// `l.remove(value)`: the first equal item.
    ///
    /// # Errors
    /// [`Error::Remote`] `ValueError` if absent.
    pub fn remove(&self, value: &T) -> Result<()> {
        self.reference.call::<()>(Op::Remove(encode(value)?))
    }

    /// `l.index(value)`.
    ///
    /// # Errors
    /// [`Error::Remote`] `ValueError` if absent.
    pub fn index(&self, value: &T) -> Result<usize> {
        self.reference.call(Op::Index(encode(value)?))
    }

    /// `l.count(value)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn count(&self, value: &T) -> Result<usize> {
        self.reference.call(Op::Count(encode(value)?))
    }

    /// `len(l)`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn len(&self) -> Result<usize> {
        self.reference.call(Op::Len)
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
        self.reference.call::<()>(Op::Reverse)
    }

    /// `l.sort()`, on the server.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn sort(&self) -> Result<()> {
        self.reference.call::<()>(Op::Sort)
    }

    /// `l.clear()`.
    ///
    /// # Errors
    /// [`Error::ManagerGone`].
    pub fn clear(&self) -> Result<()> {
        self.reference.call::<()>(Op::Clear)
    }

    /// `l[start:end]` (negative bounds from the end, clamped as in Python).
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Deserialize`].
    pub fn slice(&self, start: i64, end: i64) -> Result<Vec<T>> {
        self.reference.call(Op::Slice(start, end))
    }

    /// `l[index] += delta`, atomically on the server; the new value.
    /// Numbers only: a `str` is refused, where Python's `+=` would join
    /// strings.
    ///
    /// # Errors
    /// [`Error::Remote`] `IndexError`, or `TypeError` if the item is not a
    /// number.
    pub fn increment(&self, index: i64, delta: T) -> Result<T> {
        self.reference
            .call(Op::Increment(PyValue::Int(index), encode(&delta)?))
    }

    /// A snapshot copy of the whole list.
    ///
    /// # Errors
    /// [`Error::ManagerGone`], [`Error::Deserialize`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.reference.call(Op::Snapshot)
    }
}

impl<T> fmt::Debug for ListProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListProxy({})", self.reference)
    }
}

/// Python's `str(l)`: the list as Python prints it, `[9, 8, 7]` (one
/// round trip; if that fails, `<ListProxy object ID: ERROR>`).
impl<T> fmt::Display for ListProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reference.display(f)
    }
}
