//! What the manager's requests mean: the kinds of objects and the
//! operations on them ([`Op`]), which Python's method calls are parsed
//! into (`methods`) and the Rust client's are built from (`calls`).

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

impl Kind {
    /// Every kind.
    pub(crate) const ALL: [Kind; 6] = [
        Kind::Dict,
        Kind::List,
        Kind::Namespace,
        Kind::Iterator,
        Kind::Queue,
        Kind::JoinableQueue,
    ];
}

/// An operation on one object: what a method call means (parsed from
/// Python's method names by `methods::parse`, done by `apply`). Keys of
/// lists are `Int` indexes (negative ones count from the end) or slices,
/// of namespaces `Str` names.
// New variants go at the end: postcard numbers them in order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// `__len__`.
    Len,
    /// `clear`.
    Clear,
    /// The whole object: a dict's or a namespace's items as a `Dict`, a
    /// list as a `List` (the Rust client's copy; `#GETVALUE` is `GetValue`).
    Snapshot,
    /// `obj[key]`: `KeyError`/`IndexError` if missing; a namespace's
    /// `__getattribute__`.
    Get(PyValue),
    /// `dict.get(key)`: `None` if missing.
    Lookup(PyValue),
    /// `obj[key] = value` (a list's slice takes any iterable); a
    /// namespace's `__setattr__`.
    Set(PyValue, PyValue),
    /// `del obj[key]`; a namespace's `__delattr__`.
    Del(PyValue),
    /// `dict.pop(key)`: `KeyError` if missing; `list.pop(index)`.
    Pop(PyValue),
    /// `dict.pop(key, None)`.
    Discard(PyValue),
    PopItem,
    SetDefault(PyValue, PyValue),
    /// `__contains__`.
    Contains(PyValue),
    Keys,
    Values,
    Update(#[serde(deserialize_with = "bounded_vec")] Vec<(PyValue, PyValue)>),
    /// `obj[key] += delta`, atomically; a missing dict key counts as 0.
    /// Answers the new value (`_multiproc_increment`).
    Increment(PyValue, PyValue),
    /// Sets `obj[key] = new` if it currently equals `expected` (`None`:
    /// absent); answers whether it did (`_multiproc_compare_and_set`).
    CompareAndSet(PyValue, Option<PyValue>, PyValue),
    Append(PyValue),
    /// `list.extend` of the items themselves.
    Extend(#[serde(deserialize_with = "bounded_vec")] Vec<PyValue>),
    /// `list.insert(index, value)`, the index clamped to the list.
    Insert(i64, PyValue),
    /// `list.remove(value)`: `ValueError` if absent.
    Remove(PyValue),
    /// `list.index(value)`.
    Index(PyValue),
    Count(PyValue),
    Reverse,
    Sort,
    /// `l[start:end]`.
    Slice(i64, i64),
    /// `__repr__` and `__str__`: Python's `repr` of the object, a `str`.
    Repr,
    /// `#GETVALUE`: a copy of the object as Python's client rebuilds it (a
    /// namespace as a `multiprocessing.managers.Namespace`).
    GetValue,
    /// `copy`: a plain dict or list.
    Copy,
    /// `dict.items()`, as a list of pairs.
    Items,
    /// `dict.get(key, default)`.
    LookupOr(PyValue, PyValue),
    /// `dict.pop(key, default)`.
    PopOr(PyValue, PyValue),
    /// `dict.update(other, **kwds)` (and `__ior__`): `other` a dict or an
    /// iterable of pairs.
    UpdateWith(
        Option<PyValue>,
        #[serde(deserialize_with = "bounded_vec")] Vec<(PyValue, PyValue)>,
    ),
    /// `dict.__or__(other)`: a new dict.
    Or(PyValue),
    /// `dict.__ror__(other)`: a new dict, `other`'s items first.
    ROr(PyValue),
    /// `dict.fromkeys(iterable, value)`: a new dict (the object is untouched).
    FromKeys(PyValue, PyValue),
    /// `__iter__`: the server answers a dict's with a live `Iterator` of
    /// its own; done here, `iter()` of a copy of the keys (a dict's) or items.
    Iter,
    /// `__reversed__`: `iter()` of the keys (a dict's) or items, last first.
    Reversed,
    /// `list.extend(iterable)` and `list.__iadd__(iterable)`.
    ExtendWith(PyValue),
    /// `list.index(value, start, stop)`.
    IndexIn(PyValue, i64, i64),
    /// `list.sort(reverse=True)`.
    SortReverse,
    /// `list.__add__(other)`: a new list; `other` must be a list.
    Add(PyValue),
    /// `list.__mul__(n)` and `__rmul__`: a new list.
    Mul(i64),
    /// `list.__imul__(n)`, in place.
    IMul(i64),
    /// `[d.get(k) for k in keys]`, in one call (`_multiproc_get_many`): a
    /// batch of lookups without a request per key.
    LookupMany(#[serde(deserialize_with = "bounded_vec")] Vec<PyValue>),
}

impl Op {
    /// The operation's name (the Python method's, where there is one), for
    /// error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Len => "__len__",
            Op::Clear => "clear",
            Op::Snapshot => "snapshot",
            Op::Get(_) => "__getitem__",
            Op::Lookup(_) | Op::LookupOr(..) => "get",
            Op::Set(..) => "__setitem__",
            Op::Del(_) => "__delitem__",
            Op::Pop(_) | Op::Discard(_) | Op::PopOr(..) => "pop",
            Op::PopItem => "popitem",
            Op::SetDefault(..) => "setdefault",
            Op::Contains(_) => "__contains__",
            Op::Keys => "keys",
            Op::Values => "values",
            Op::Items => "items",
            Op::Update(_) | Op::UpdateWith(..) => "update",
            Op::Increment(..) => "_multiproc_increment",
            Op::CompareAndSet(..) => "_multiproc_compare_and_set",
            Op::Append(_) => "append",
            Op::Extend(_) | Op::ExtendWith(_) => "extend",
            Op::Insert(..) => "insert",
            Op::Remove(_) => "remove",
            Op::Index(_) | Op::IndexIn(..) => "index",
            Op::Count(_) => "count",
            Op::Reverse => "reverse",
            Op::Sort | Op::SortReverse => "sort",
            Op::Slice(..) => "slice",
            Op::Repr => "__repr__",
            Op::GetValue => "#GETVALUE",
            Op::Copy => "copy",
            Op::Or(_) => "__or__",
            Op::ROr(_) => "__ror__",
            Op::FromKeys(..) => "fromkeys",
            Op::Iter => "__iter__",
            Op::Reversed => "__reversed__",
            Op::Add(_) => "__add__",
            Op::Mul(_) => "__mul__",
            Op::IMul(_) => "__imul__",
            Op::LookupMany(_) => "_multiproc_get_many",
        }
    }
}
