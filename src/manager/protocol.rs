//! The messages between proxies and the manager server (postcard-encoded,
//! one per [`Connection`](crate::conn::Connection) frame).

use serde::{Deserialize, Serialize};

use super::limits::bounded_vec;
use super::PyValue;

/// A Python exception: its class name and message.
pub(crate) type Exception = (&'static str, String);

/// An object's number on the server.
pub(crate) type Id = u64;

/// What kind of object a proxy stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Kind {
    Dict,
    List,
    Namespace,
    /// A live iterator over a dict (what a dict's `__iter__` answers).
    Iterator,
    Queue,
    JoinableQueue,
}

/// What a client asks of the server: one message, one answer ([`Response`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    Create(Kind),
    Incref(Id),
    Decref(Id),
    Call(Id, Op),
    /// Several operations, one round trip; answered by `Response::Batch`.
    Batch(#[serde(deserialize_with = "bounded_vec")] Vec<(Id, Op)>),
    NumberOfObjects,
    Shutdown,
}

/// An operation on one object. Keys of lists are `Int` indexes (negative
/// ones count from the end), of namespaces `Str` names.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    Len,
    Clear,
    /// The whole object: a dict's items as a `Dict`, a list as a `List`.
    Snapshot,
    /// `obj[key]`: `KeyError`/`IndexError` if missing.
    Get(PyValue),
    /// `dict.get(key)`: `None` if missing.
    Lookup(PyValue),
    /// `obj[key] = value`.
    Set(PyValue, PyValue),
    /// `del obj[key]`.
    Del(PyValue),
    /// `dict.pop(key)`: `KeyError` if missing; `list.pop(index)`.
    Pop(PyValue),
    /// `dict.pop(key, None)`.
    Discard(PyValue),
    PopItem,
    SetDefault(PyValue, PyValue),
    Contains(PyValue),
    Keys,
    Values,
    Update(#[serde(deserialize_with = "bounded_vec")] Vec<(PyValue, PyValue)>),
    /// `obj[key] += delta`, atomically; a missing dict key counts as 0.
    /// Answers the new value.
    Increment(PyValue, PyValue),
    /// Sets `obj[key] = new` if it currently equals `expected` (`None`:
    /// absent); answers whether it did.
    CompareAndSet(PyValue, Option<PyValue>, PyValue),
    Append(PyValue),
    Extend(#[serde(deserialize_with = "bounded_vec")] Vec<PyValue>),
    Insert(i64, PyValue),
    /// `list.remove(value)`: `ValueError` if absent.
    Remove(PyValue),
    Index(PyValue),
    Count(PyValue),
    Reverse,
    Sort,
    Slice(i64, i64),
}

impl Op {
    /// The operation's name, for error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Len => "len",
            Op::Clear => "clear",
            Op::Snapshot => "snapshot",
            Op::Get(_) => "get",
            Op::Lookup(_) => "lookup",
            Op::Set(..) => "set",
            Op::Del(_) => "del",
            Op::Pop(_) => "pop",
            Op::Discard(_) => "discard",
            Op::PopItem => "popitem",
            Op::SetDefault(..) => "setdefault",
            Op::Contains(_) => "contains",
            Op::Keys => "keys",
            Op::Values => "values",
            Op::Update(_) => "update",
            Op::Increment(..) => "increment",
            Op::CompareAndSet(..) => "compare_and_set",
            Op::Append(_) => "append",
            Op::Extend(_) => "extend",
            Op::Insert(..) => "insert",
            Op::Remove(_) => "remove",
            Op::Index(_) => "index",
            Op::Count(_) => "count",
            Op::Reverse => "reverse",
            Op::Sort => "sort",
            Op::Slice(..) => "slice",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Value(PyValue),
    Created(Id),
    Batch(Vec<Response>),
    Error { kind: String, message: String },
}
