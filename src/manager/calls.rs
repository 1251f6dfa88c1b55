//! The Rust client's side of `methods`: each [`Op`] as the method call
//! that does it, `(methodname, args, kwds)` as a Python proxy would send
//! it. `methods::parse` of what [`request`] builds is the same operation
//! (the tests check every variant), so the two never drift.
//!
//! Operations that only the Rust client has are sent as the Python call
//! that does the same: `Op::Discard(k)` is `pop(k, None)`, `Op::Slice(a,
//! b)` is `__getitem__(slice(a, b, None))`, `Op::Snapshot` is
//! `#GETVALUE`, `Op::Update(items)` is `update({...})`; a list's `Clear`
//! is `del l[:]` (`__delitem__(slice(None, None, None))`), which CPython's
//! `ListProxy` has before 3.14 added `clear`. The two private
//! methods (`_multiproc_increment`, `_multiproc_compare_and_set`) are
//! multiproc's own: a server that is not multiproc's refuses them.

use super::protocol::{Kind, Op};
use super::{PyObject, PyValue};

/// A method call: its name, positional arguments and keyword arguments.
pub(super) type Call = (&'static str, Vec<PyValue>, Vec<(PyValue, PyValue)>);

/// The method call on a `kind` object that does `op`.
pub(super) fn request(kind: Kind, op: Op) -> Call {
    let namespace = kind == Kind::Namespace;
    let none = Vec::new;
    let plain = |method: &'static str, args: Vec<PyValue>| -> Call { (method, args, Vec::new()) };
    match op {
        Op::Len => plain("__len__", none()),
        // `del l[:]`: CPython's `ListProxy` has no `clear` before 3.14.
        Op::Clear if kind == Kind::List => plain("__delitem__", vec![slice(None, None)]),
        Op::Clear => plain("clear", none()),
        Op::Snapshot | Op::GetValue => plain("#GETVALUE", none()),
        Op::Get(k) if namespace => plain("__getattribute__", vec![k]),
        Op::Get(k) => plain("__getitem__", vec![k]),
        Op::Lookup(k) => plain("get", vec![k]),
        Op::Set(k, v) if namespace => plain("__setattr__", vec![k, v]),
        Op::Set(k, v) => plain("__setitem__", vec![k, v]),
        Op::Del(k) if namespace => plain("__delattr__", vec![k]),
        Op::Del(k) => plain("__delitem__", vec![k]),
        Op::Pop(k) => plain("pop", vec![k]),
        Op::Discard(k) => plain("pop", vec![k, PyValue::None]),
        Op::PopItem => plain("popitem", none()),
        Op::SetDefault(k, v) => plain("setdefault", vec![k, v]),
        Op::Contains(k) => plain("__contains__", vec![k]),
        Op::Keys => plain("keys", none()),
        Op::Values => plain("values", none()),
        Op::Items => plain("items", none()),
        Op::Update(items) => plain("update", vec![PyValue::Dict(items)]),
        Op::UpdateWith(other, kwds) => ("update", other.into_iter().collect(), kwds),
        Op::Increment(k, delta) => plain("_multiproc_increment", vec![k, delta]),
        Op::CompareAndSet(k, expected, new) => {
            let present = PyValue::Bool(expected.is_some());
            plain(
                "_multiproc_compare_and_set",
                vec![k, present, expected.unwrap_or(PyValue::None), new],
            )
        }
        Op::Append(v) => plain("append", vec![v]),
        Op::Extend(vs) => plain("extend", vec![PyValue::List(vs)]),
        Op::ExtendWith(v) => plain("extend", vec![v]),
        Op::Insert(at, v) => plain("insert", vec![PyValue::Int(at), v]),
        Op::Remove(v) => plain("remove", vec![v]),
        Op::Index(v) => plain("index", vec![v]),
        Op::IndexIn(v, start, stop) => {
            plain("index", vec![v, PyValue::Int(start), PyValue::Int(stop)])
        }
        Op::Count(v) => plain("count", vec![v]),
        Op::Reverse => plain("reverse", none()),
        Op::Sort => plain("sort", none()),
        Op::SortReverse => (
            "sort",
            none(),
            vec![("reverse".into(), PyValue::Bool(true))],
        ),
        Op::Slice(start, end) => plain("__getitem__", vec![slice(Some(start), Some(end))]),
        Op::Repr => plain("__repr__", none()),
        Op::Copy => plain("copy", none()),
        Op::LookupOr(k, default) => plain("get", vec![k, default]),
        Op::PopOr(k, default) => plain("pop", vec![k, default]),
        Op::Or(other) => plain("__or__", vec![other]),
        Op::ROr(other) => plain("__ror__", vec![other]),
        Op::FromKeys(keys, v) => plain("fromkeys", vec![keys, v]),
        Op::Iter => plain("__iter__", none()),
        Op::Reversed => plain("__reversed__", none()),
        Op::Add(other) => plain("__add__", vec![other]),
        Op::Mul(n) => plain("__mul__", vec![PyValue::Int(n)]),
        Op::IMul(n) => plain("__imul__", vec![PyValue::Int(n)]),
        Op::LookupMany(keys) => plain("_multiproc_get_many", vec![PyValue::List(keys)]),
    }
}

/// `slice(start, end, None)`.
fn slice(start: Option<i64>, end: Option<i64>) -> PyValue {
    let bound = |b: Option<i64>| b.map_or(PyValue::None, PyValue::Int);
    PyValue::Object(Box::new(PyObject::call(
        "builtins",
        "slice",
        vec![bound(start), bound(end), PyValue::None],
    )))
}

#[cfg(test)]
mod tests {
    use std::mem::discriminant;

    use super::super::methods::parse;
    use super::*;

    fn s(v: &str) -> PyValue {
        PyValue::from(v)
    }

    /// Every operation, on the kinds it applies to, with the operation
    /// `methods::parse` makes of its call where that is another one (an
    /// operation only the Rust client sends).
    fn every_op() -> Vec<(Kind, Op, Option<Op>)> {
        use Kind::{Dict, List, Namespace};
        let pairs = || vec![(s("a"), PyValue::Int(1)), (s("b"), PyValue::Int(2))];
        vec![
            (Dict, Op::Len, None),
            (List, Op::Len, None),
            (Dict, Op::Clear, None),
            (List, Op::Clear, Some(Op::Del(slice(None, None)))),
            (Dict, Op::Snapshot, Some(Op::GetValue)),
            (List, Op::Snapshot, Some(Op::GetValue)),
            (Namespace, Op::Snapshot, Some(Op::GetValue)),
            (Dict, Op::Get(s("k")), None),
            (List, Op::Get(PyValue::Int(-1)), None),
            (Namespace, Op::Get(s("name")), None),
            (Dict, Op::Lookup(s("k")), None),
            (Dict, Op::LookupMany(vec![s("k"), PyValue::Int(1)]), None),
            (Dict, Op::Set(s("k"), 1.into()), None),
            (List, Op::Set(PyValue::Int(0), 1.into()), None),
            (Namespace, Op::Set(s("name"), 1.into()), None),
            (Dict, Op::Del(s("k")), None),
            (List, Op::Del(PyValue::Int(0)), None),
            (Namespace, Op::Del(s("name")), None),
            (Dict, Op::Pop(s("k")), None),
            (List, Op::Pop(PyValue::Int(-1)), None),
            (
                Dict,
                Op::Discard(s("k")),
                Some(Op::PopOr(s("k"), PyValue::None)),
            ),
            (Dict, Op::PopItem, None),
            (Dict, Op::SetDefault(s("k"), 0.into()), None),
            (Dict, Op::Contains(s("k")), None),
            (List, Op::Contains(1.into()), None),
            (Dict, Op::Keys, None),
            (Dict, Op::Values, None),
            (Dict, Op::Items, None),
            (
                Dict,
                Op::Update(pairs()),
                Some(Op::UpdateWith(Some(PyValue::Dict(pairs())), Vec::new())),
            ),
            (
                Dict,
                Op::UpdateWith(Some(PyValue::Dict(pairs())), pairs()),
                None,
            ),
            (Dict, Op::UpdateWith(None, pairs()), None),
            (Dict, Op::Increment(s("n"), 1.into()), None),
            (List, Op::Increment(PyValue::Int(0), 1.into()), None),
            (Namespace, Op::Increment(s("n"), 1.5.into()), None),
            (Dict, Op::CompareAndSet(s("n"), None, 1.into()), None),
            (
                Dict,
                Op::CompareAndSet(s("n"), Some(1.into()), 2.into()),
                None,
            ),
            (
                Namespace,
                Op::CompareAndSet(s("n"), Some(PyValue::None), 2.into()),
                None,
            ),
            (List, Op::Append(1.into()), None),
            (
                List,
                Op::Extend(vec![1.into(), 2.into()]),
                Some(Op::ExtendWith(PyValue::List(vec![1.into(), 2.into()]))),
            ),
            (List, Op::ExtendWith(PyValue::Tuple(vec![1.into()])), None),
            (List, Op::Insert(-3, 1.into()), None),
            (List, Op::Remove(1.into()), None),
            (
                List,
                Op::Index(1.into()),
                Some(Op::IndexIn(1.into(), 0, i64::MAX)),
            ),
            (List, Op::IndexIn(1.into(), -2, 5), None),
            (List, Op::Count(1.into()), None),
            (List, Op::Reverse, None),
            (List, Op::Sort, None),
            (List, Op::SortReverse, None),
            (
                List,
                Op::Slice(1, -1),
                Some(Op::Get(slice(Some(1), Some(-1)))),
            ),
            (Dict, Op::Repr, None),
            (List, Op::Repr, None),
            (Namespace, Op::Repr, None),
            (Dict, Op::GetValue, None),
            (Dict, Op::Copy, None),
            (List, Op::Copy, None),
            (Dict, Op::LookupOr(s("k"), 0.into()), None),
            (Dict, Op::PopOr(s("k"), 0.into()), None),
            (Dict, Op::Or(PyValue::Dict(pairs())), None),
            (Dict, Op::ROr(PyValue::Dict(pairs())), None),
            (
                Dict,
                Op::FromKeys(PyValue::List(vec![s("a")]), 0.into()),
                None,
            ),
            (Dict, Op::Iter, None),
            (Dict, Op::Reversed, None),
            (List, Op::Reversed, None),
            (List, Op::Add(PyValue::List(vec![1.into()])), None),
            (List, Op::Mul(3), None),
            (List, Op::IMul(2), None),
        ]
    }

    /// `methods::parse` of each operation's call is that operation (or
    /// the one the Rust-only operation stands for), whose call is the
    /// same: parse and request are inverses.
    #[test]
    fn parse_of_each_request_is_the_operation() {
        let ops = every_op();
        // Every variant is checked (a new one fails here until it is).
        let mut seen: Vec<&'static str> = ops.iter().map(|(_, op, _)| variant(op)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), VARIANTS, "{seen:?}");
        for (kind, op, canonical) in ops {
            let shown = format!("{kind:?} {op:?}");
            let want = canonical.unwrap_or_else(|| copy(&op));
            let want_call = request(kind, copy(&want));
            let (method, args, kwds) = request(kind, op);
            let parsed = parse(kind, method, args.clone(), kwds.clone())
                .unwrap_or_else(|e| panic!("{shown}: {method}{args:?} {kwds:?}: {e:?}"));
            assert_eq!(
                discriminant(&parsed),
                discriminant(&want),
                "{shown}: parsed as {parsed:?}"
            );
            assert_eq!(request(kind, parsed), want_call, "{shown}");
        }
    }

    /// How many variants `Op` has (`request`'s match names each).
    const VARIANTS: usize = 45;

    /// A variant's name, from its `Debug`.
    fn variant(op: &Op) -> &'static str {
        let shown = format!("{op:?}");
        let name = shown.split(['(', ' ']).next().unwrap_or("").to_string();
        Box::leak(name.into_boxed_str())
    }

    /// A copy of an operation (`Op` is not `Clone`), through its call.
    fn copy(op: &Op) -> Op {
        let bytes = postcard::to_allocvec(op).expect("an Op encodes");
        postcard::from_bytes(&bytes).expect("and decodes")
    }

    #[test]
    fn the_rust_only_operations_are_pythons_calls() {
        let (m, args, kwds) = request(Kind::Dict, Op::Discard(s("k")));
        assert_eq!(
            (m, args, kwds.len()),
            ("pop", vec![s("k"), PyValue::None], 0)
        );
        let (m, args, _) = request(Kind::List, Op::Slice(1, 3));
        assert_eq!(m, "__getitem__");
        assert_eq!(args[0].repr(), "slice(1, 3, None)");
        let (m, _, kwds) = request(Kind::List, Op::SortReverse);
        assert_eq!((m, kwds), ("sort", vec![(s("reverse"), true.into())]));
        assert_eq!(
            request(Kind::Namespace, Op::Get(s("x"))).0,
            "__getattribute__"
        );
    }
}
