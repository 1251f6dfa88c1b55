//! The methods a proxy calls, by name, as CPython's proxies send them
//! (`(ident, methodname, args, kwds)`): parsed into [`Op`]s, with Python's
//! own `TypeError`s for a wrong number or type of arguments, so that what
//! `apply` does is checked once, here. Pure: no sockets, no references.
//!
//! The messages are CPython 3.13's (checked by running each call on a real
//! `dict`, `list` and `Namespace` under 3.8 and 3.13; where they differ,
//! 3.8 leaves out the type: `keys() takes no arguments (1 given)` rather
//! than `dict.keys() takes no arguments (1 given)`).
//!
//! Besides CPython's methods, every kind answers two of multiproc's own,
//! under names CPython's proxies never send (a Python client reaches them
//! with `proxy._callmethod(name, args)`):
//! - `_multiproc_increment(key, delta)`: `obj[key] += delta` as one atomic
//!   step (a missing dict key counts as 0); answers the new value.
//! - `_multiproc_compare_and_set(key, present, expected, new)`: sets
//!   `obj[key] = new` if the key is present and equal to `expected`
//!   (`present` true) or absent (`present` false); answers whether it did.

// The server calls `parse` once it speaks Python's protocol.

use super::protocol::{Exception, Kind, Op};
use super::PyValue;

/// What a dict exposes: `DictProxy`'s methods in CPython's order, then
/// those 3.14 adds, then multiproc's own.
const DICT: &[&str] = &[
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__iter__",
    "__len__",
    "__setitem__",
    "clear",
    "copy",
    "get",
    "items",
    "keys",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "values",
    "__ior__",
    "__or__",
    "__ror__",
    "__reversed__",
    "fromkeys",
    INCREMENT,
    COMPARE_AND_SET,
    GET_MANY,
];

/// What a list exposes: `ListProxy`'s methods in CPython's order, then
/// those 3.14 adds (and `__iadd__`, which `+=` on a `ListProxy` sends as
/// `extend`), then multiproc's own.
const LIST: &[&str] = &[
    "__add__",
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__len__",
    "__mul__",
    "__reversed__",
    "__rmul__",
    "__setitem__",
    "append",
    "count",
    "extend",
    "index",
    "insert",
    "pop",
    "remove",
    "reverse",
    "sort",
    "__imul__",
    "clear",
    "copy",
    "__iadd__",
    INCREMENT,
    COMPARE_AND_SET,
];

/// What a namespace exposes: `NamespaceProxy`'s methods, then multiproc's own.
const NAMESPACE: &[&str] = &[
    "__getattribute__",
    "__setattr__",
    "__delattr__",
    INCREMENT,
    COMPARE_AND_SET,
];

const INCREMENT: &str = "_multiproc_increment";
const COMPARE_AND_SET: &str = "_multiproc_compare_and_set";
/// A dict's lookups of many keys in one call: `[d.get(k) for k in keys]`.
const GET_MANY: &str = "_multiproc_get_many";

/// The methods a `kind` object answers, as `create` lists them (its
/// `exposed`): CPython's proxy's, dunders included, so that an `AutoProxy`
/// built from this list can index (`sd['k'] = v`), which CPython's own
/// server does not allow. `#GETVALUE`, `__repr__` and `__str__` are
/// answered too without being listed, as CPython's server does.
pub(super) fn exposed(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Dict => DICT,
        Kind::List => LIST,
        Kind::Namespace => NAMESPACE,
        Kind::Iterator | Kind::Queue | Kind::JoinableQueue => &[],
    }
}

/// What a `create` of a registered typeid (`manager serve --object
/// NAME=TYPEID`) answers, from which a client builds an `AutoProxy`: as
/// [`exposed`], but a namespace's attribute dunders, which an `AutoProxy`
/// class would define on itself and then recurse in forever (as it does
/// against CPython's server for the typeid `Namespace`: checked with 3.13).
pub(super) fn auto_exposed(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Namespace => &NAMESPACE[3..],
        kind => exposed(kind),
    }
}

/// A `TypeError`.
fn type_error(message: String) -> Exception {
    ("TypeError", message)
}

/// `s` after a count of one, else nothing: `1 argument`, `2 arguments`.
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A method's arguments, checked as CPython checks those of the method
/// of the same name.
struct Call<'a> {
    /// `dict`, `list` or `Namespace`: the prefix of some of Python's messages.
    class: &'static str,
    method: &'a str,
    args: Vec<PyValue>,
    kwds: Vec<(PyValue, PyValue)>,
}

impl Call<'_> {
    fn no_keywords(&self, wrapper: bool) -> Result<(), Exception> {
        if self.kwds.is_empty() {
            return Ok(());
        }
        Err(type_error(if wrapper {
            format!("wrapper {}() takes no keyword arguments", self.method)
        } else {
            format!(
                "{}.{}() takes no keyword arguments",
                self.class, self.method
            )
        }))
    }

    /// A C method without arguments (`dict.keys`): `dict.keys() takes no
    /// arguments (1 given)`.
    fn none(self) -> Result<(), Exception> {
        self.no_keywords(false)?;
        if self.args.is_empty() {
            return Ok(());
        }
        Err(type_error(format!(
            "{}.{}() takes no arguments ({} given)",
            self.class,
            self.method,
            self.args.len()
        )))
    }

    /// A C method of one argument (`list.append`): `list.append() takes
    /// exactly one argument (0 given)`.
    fn one(self) -> Result<PyValue, Exception> {
        self.no_keywords(false)?;
        let n = self.args.len();
        match <[PyValue; 1]>::try_from(self.args) {
            Ok([v]) => Ok(v),
            Err(_) => Err(type_error(format!(
                "{}.{}() takes exactly one argument ({n} given)",
                self.class, self.method
            ))),
        }
    }

    /// A method of `min..=max` positional arguments (`dict.pop`, `list.index`):
    /// `pop expected at most 2 arguments, got 3`.
    fn between(self, min: usize, max: usize) -> Result<Vec<PyValue>, Exception> {
        self.no_keywords(false)?;
        check_count(self.method, min, max, self.args.len())?;
        Ok(self.args)
    }

    /// A method of exactly `N` positional arguments (`list.insert`):
    /// `insert expected 2 arguments, got 1`.
    fn exactly<const N: usize>(self) -> Result<[PyValue; N], Exception> {
        self.no_keywords(false)?;
        let method = self.method;
        <[PyValue; N]>::try_from(self.args).map_err(|args| {
            type_error(format!(
                "{method} expected {N} argument{}, got {}",
                plural(N),
                args.len()
            ))
        })
    }

    /// A slot wrapper of `N` arguments (`__setitem__`, `__len__`):
    /// `expected 1 argument, got 0`; `unpacked` ones (`__setitem__`,
    /// `__mul__`, `__setattr__`) begin their message with a space, as
    /// CPython's do.
    fn wrapper<const N: usize>(self, unpacked: bool) -> Result<[PyValue; N], Exception> {
        self.no_keywords(true)?;
        let n = self.args.len();
        <[PyValue; N]>::try_from(self.args).map_err(|_| {
            type_error(format!(
                "{}expected {N} argument{}, got {n}",
                if unpacked { " " } else { "" },
                plural(N)
            ))
        })
    }

    /// One of the server's fallbacks (`#GETVALUE`, `__repr__`, `__str__`),
    /// which take no arguments.
    fn fallback(self) -> Result<(), Exception> {
        if self.args.is_empty() && self.kwds.is_empty() {
            return Ok(());
        }
        Err(fallback_arguments(self.method, &self.args, &self.kwds))
    }
}

/// The `TypeError` of CPython's server calling its fallback for `method`
/// (`Server.fallback_getvalue`, `fallback_repr`, `fallback_str`, which
/// take `(self, conn, ident, obj)`) with `args` and `kwds` too: an unknown
/// keyword named first, as Python binds them.
pub(super) fn fallback_arguments(
    method: &str,
    args: &[PyValue],
    kwds: &[(PyValue, PyValue)],
) -> Exception {
    let name = match method {
        "#GETVALUE" => "getvalue",
        "__repr__" => "repr",
        _ => "str",
    };
    if let Some((k, _)) = kwds.first() {
        return type_error(format!(
            "Server.fallback_{name}() got an unexpected keyword argument {k}"
        ));
    }
    type_error(format!(
        "Server.fallback_{name}() takes 4 positional arguments but {} were given",
        4 + args.len()
    ))
}

/// `name expected 2 arguments, got 1`, as Python's argument clinic says it.
fn check_count(method: &str, min: usize, max: usize, n: usize) -> Result<(), Exception> {
    let message = if min == max && n != min {
        format!("{method} expected {min} argument{}, got {n}", plural(min))
    } else if n < min {
        format!(
            "{method} expected at least {min} argument{}, got {n}",
            plural(min)
        )
    } else if n > max {
        format!(
            "{method} expected at most {max} argument{}, got {n}",
            plural(max)
        )
    } else {
        return Ok(());
    };
    Err(type_error(message))
}

/// An integer argument as Python reads one (`operator.index`): an `int`
/// or a `bool`. `Err(negative)` for an int beyond `i64`.
pub(super) fn int_of(v: &PyValue) -> Option<Result<i64, bool>> {
    match v {
        PyValue::Int(i) => Some(Ok(*i)),
        PyValue::Bool(b) => Some(Ok((*b).into())),
        // Two's complement, little-endian: the sign is the last byte's top bit.
        PyValue::BigInt(b) => Some(Err(b.last().is_some_and(|&top| top & 0x80 != 0))),
        _ => None,
    }
}

/// A `Py_ssize_t` argument (`list.insert`'s, `list.pop`'s index).
fn ssize(v: &PyValue) -> Result<i64, Exception> {
    match int_of(v) {
        Some(Ok(i)) => Ok(i),
        Some(Err(_)) => Err((
            "OverflowError",
            "Python int too large to convert to C ssize_t".into(),
        )),
        None => Err(type_error(format!(
            "'{}' object cannot be interpreted as an integer",
            v.type_name()
        ))),
    }
}

/// A repeat count (`list.__mul__`'s).
fn count(v: &PyValue) -> Result<i64, Exception> {
    match int_of(v) {
        Some(Ok(i)) => Ok(i),
        Some(Err(_)) => Err((
            "OverflowError",
            "cannot fit 'int' into an index-sized integer".into(),
        )),
        None => ssize(v),
    }
}

/// A bound of `list.index`: an int, clamped to `i64` as Python clamps it
/// to `Py_ssize_t`.
fn slice_index(v: &PyValue) -> Result<i64, Exception> {
    match int_of(v) {
        Some(Ok(i)) => Ok(i),
        Some(Err(negative)) => Ok(if negative { i64::MIN } else { i64::MAX }),
        None => Err(type_error(
            "slice indices must be integers or have an __index__ method".into(),
        )),
    }
}

/// An attribute name: a `str`.
fn attribute(v: PyValue) -> Result<PyValue, Exception> {
    match v {
        PyValue::Str(_) => Ok(v),
        v => Err(type_error(format!(
            "attribute name must be string, not '{}'",
            v.type_name()
        ))),
    }
}

/// `list.sort(*, key=None, reverse=False)`: whether to reverse. A key
/// function would have to run in the server, which runs nothing a client
/// sends: any key but `None` is refused.
fn sort_reverse(call: Call<'_>) -> Result<bool, Exception> {
    // Python counts all the arguments first, then the positional ones.
    let given = call.args.len() + call.kwds.len();
    if given > 2 {
        return Err(type_error(format!(
            "sort() takes at most 2 {}arguments ({given} given)",
            if call.args.is_empty() { "keyword " } else { "" }
        )));
    }
    if !call.args.is_empty() {
        return Err(type_error("sort() takes no positional arguments".into()));
    }
    let mut reverse = false;
    for (k, v) in call.kwds {
        match (&k, v) {
            (PyValue::Str(name), v) if name == "reverse" => reverse = truth(&v),
            (PyValue::Str(name), PyValue::None) if name == "key" => {}
            (PyValue::Str(name), v) if name == "key" => {
                let key = match &v {
                    PyValue::Object(o) if o.global => format!("{}.{}", o.module, o.name),
                    v => v.repr(),
                };
                return Err(type_error(format!(
                    "sort(key={key}) is not supported by the multiproc manager, which runs \
                     no function a client sends; sort a copy in the client instead \
                     (sorted(proxy[:], key=...))"
                )));
            }
            (PyValue::Str(name), _) => {
                return Err(type_error(format!(
                    "sort() got an unexpected keyword argument '{name}'"
                )))
            }
            _ => return Err(type_error("keywords must be strings".into())),
        }
    }
    Ok(reverse)
}

/// Python's truth value (`bool(v)`), of the values a client sends.
pub(super) fn truth(v: &PyValue) -> bool {
    match v {
        PyValue::None => false,
        PyValue::Bool(b) => *b,
        PyValue::Int(i) => *i != 0,
        PyValue::Float(f) => *f != 0.0,
        PyValue::Str(s) => !s.is_empty(),
        PyValue::Bytes(b) => !b.is_empty(),
        PyValue::List(vs) | PyValue::Tuple(vs) => !vs.is_empty(),
        PyValue::Dict(d) => !d.is_empty(),
        PyValue::Set(vs) | PyValue::FrozenSet(vs) => !vs.is_empty(),
        // Nonzero: an int that fits `i64` is an `Int`.
        PyValue::BigInt(_) => true,
        PyValue::Proxy(_) | PyValue::Object(_) => true,
    }
}

/// Keyword arguments as dict items (`dict.update(a=1)`): names must be str.
fn keyword_items(kwds: Vec<(PyValue, PyValue)>) -> Result<Vec<(PyValue, PyValue)>, Exception> {
    if kwds.iter().any(|(k, _)| !matches!(k, PyValue::Str(_))) {
        return Err(type_error("keywords must be strings".into()));
    }
    Ok(kwds)
}

/// Parses the call of `method` on a `kind` object with `args` and `kwds`
/// into the [`Op`] that does it, or the exception Python raises for a call
/// of that method with those arguments (an `AttributeError` for a method
/// the kind does not have, as CPython's server answers).
pub(super) fn parse(
    kind: Kind,
    method: &str,
    args: Vec<PyValue>,
    kwds: Vec<(PyValue, PyValue)>,
) -> Result<Op, Exception> {
    let class = match kind {
        Kind::Dict => "dict",
        Kind::List => "list",
        Kind::Namespace => "Namespace",
        Kind::Iterator | Kind::Queue | Kind::JoinableQueue => {
            return Err(not_exposed(kind, method))
        }
    };
    let call = Call {
        class,
        method,
        args,
        kwds,
    };
    match method {
        "#GETVALUE" => return call.fallback().map(|()| Op::GetValue),
        "__repr__" | "__str__" => return call.fallback().map(|()| Op::Repr),
        INCREMENT => {
            let [key, delta] = call.exactly()?;
            let key = if kind == Kind::Namespace {
                attribute(key)?
            } else {
                key
            };
            return Ok(Op::Increment(key, delta));
        }
        COMPARE_AND_SET => {
            let [key, present, expected, new] = call.exactly()?;
            let key = if kind == Kind::Namespace {
                attribute(key)?
            } else {
                key
            };
            let PyValue::Bool(present) = present else {
                return Err(type_error(format!(
                    "{COMPARE_AND_SET}: present must be a bool, not '{}'",
                    present.type_name()
                )));
            };
            return Ok(Op::CompareAndSet(key, present.then_some(expected), new));
        }
        _ => {}
    }
    match kind {
        Kind::Dict => dict(call),
        Kind::List => list(call),
        _ => namespace(call),
    }
}

/// CPython's answer to a method that is not exposed.
fn not_exposed(kind: Kind, method: &str) -> Exception {
    let class = match kind {
        Kind::Dict => "<class 'dict'>",
        Kind::List => "<class 'list'>",
        Kind::Namespace => "<class 'multiprocessing.managers.Namespace'>",
        Kind::Iterator => "<class 'dict_keyiterator'>",
        Kind::Queue | Kind::JoinableQueue => "<class 'queue.Queue'>",
    };
    let names = PyValue::Tuple(exposed(kind).iter().map(|&m| m.into()).collect());
    (
        "AttributeError",
        format!(
            "method {} of {class} object is not in exposed={names}",
            PyValue::from(method)
        ),
    )
}

fn dict(call: Call<'_>) -> Result<Op, Exception> {
    let kind = Kind::Dict;
    Ok(match call.method {
        "__contains__" => Op::Contains(call.one()?),
        "__delitem__" => {
            let [k] = call.wrapper(false)?;
            Op::Del(k)
        }
        "__getitem__" => Op::Get(call.one()?),
        "__iter__" => {
            let [] = call.wrapper(false)?;
            Op::Iter
        }
        "__len__" => {
            let [] = call.wrapper(false)?;
            Op::Len
        }
        "__setitem__" => {
            let [k, v] = call.wrapper(true)?;
            Op::Set(k, v)
        }
        "clear" => call.none().map(|()| Op::Clear)?,
        "copy" => call.none().map(|()| Op::Copy)?,
        "get" => {
            let mut args = call.between(1, 2)?.into_iter();
            let key = args.next().unwrap_or(PyValue::None);
            match args.next() {
                Some(default) => Op::LookupOr(key, default),
                None => Op::Lookup(key),
            }
        }
        "items" => call.none().map(|()| Op::Items)?,
        "keys" => call.none().map(|()| Op::Keys)?,
        GET_MANY => match call.one()? {
            PyValue::List(keys) | PyValue::Tuple(keys) => Op::LookupMany(keys),
            other => {
                return Err(type_error(format!(
                    "{GET_MANY}: keys must be a list, not '{}'",
                    other.type_name()
                )))
            }
        },
        "pop" => {
            let mut args = call.between(1, 2)?.into_iter();
            let key = args.next().unwrap_or(PyValue::None);
            match args.next() {
                Some(default) => Op::PopOr(key, default),
                None => Op::Pop(key),
            }
        }
        "popitem" => call.none().map(|()| Op::PopItem)?,
        "setdefault" => {
            let mut args = call.between(1, 2)?.into_iter();
            let key = args.next().unwrap_or(PyValue::None);
            Op::SetDefault(key, args.next().unwrap_or(PyValue::None))
        }
        "update" => {
            check_count("update", 0, 1, call.args.len())?;
            let kwds = keyword_items(call.kwds)?;
            Op::UpdateWith(call.args.into_iter().next(), kwds)
        }
        "values" => call.none().map(|()| Op::Values)?,
        "__ior__" => {
            let [other] = call.wrapper(false)?;
            Op::UpdateWith(Some(other), Vec::new())
        }
        "__or__" => {
            let [other] = call.wrapper(false)?;
            Op::Or(other)
        }
        "__ror__" => {
            let [other] = call.wrapper(false)?;
            Op::ROr(other)
        }
        "__reversed__" => call.none().map(|()| Op::Reversed)?,
        "fromkeys" => {
            let mut args = call.between(1, 2)?.into_iter();
            let keys = args.next().unwrap_or(PyValue::None);
            Op::FromKeys(keys, args.next().unwrap_or(PyValue::None))
        }
        other => return Err(not_exposed(kind, other)),
    })
}

fn list(call: Call<'_>) -> Result<Op, Exception> {
    let kind = Kind::List;
    Ok(match call.method {
        "__add__" => {
            let [other] = call.wrapper(false)?;
            Op::Add(other)
        }
        "__contains__" => {
            let [v] = call.wrapper(false)?;
            Op::Contains(v)
        }
        "__delitem__" => {
            let [k] = call.wrapper(false)?;
            Op::Del(k)
        }
        "__getitem__" => Op::Get(call.one()?),
        "__len__" => {
            let [] = call.wrapper(false)?;
            Op::Len
        }
        "__mul__" | "__rmul__" => {
            let [n] = call.wrapper(true)?;
            Op::Mul(count(&n)?)
        }
        "__imul__" => {
            let [n] = call.wrapper(true)?;
            Op::IMul(count(&n)?)
        }
        "__iadd__" => {
            let [other] = call.wrapper(false)?;
            Op::ExtendWith(other)
        }
        "__reversed__" => call.none().map(|()| Op::Reversed)?,
        "__setitem__" => {
            let [k, v] = call.wrapper(true)?;
            Op::Set(k, v)
        }
        "append" => Op::Append(call.one()?),
        "count" => Op::Count(call.one()?),
        "extend" => Op::ExtendWith(call.one()?),
        "index" => {
            let mut args = call.between(1, 3)?.into_iter();
            let v = args.next().unwrap_or(PyValue::None);
            let start = args.next().map(|a| slice_index(&a)).transpose()?;
            let stop = args.next().map(|a| slice_index(&a)).transpose()?;
            Op::IndexIn(v, start.unwrap_or(0), stop.unwrap_or(i64::MAX))
        }
        "insert" => {
            let [at, v] = call.exactly()?;
            Op::Insert(ssize(&at)?, v)
        }
        "pop" => {
            let at = call.between(0, 1)?.first().map(ssize).transpose()?;
            Op::Pop(PyValue::Int(at.unwrap_or(-1)))
        }
        "remove" => Op::Remove(call.one()?),
        "reverse" => call.none().map(|()| Op::Reverse)?,
        "sort" => {
            if sort_reverse(call)? {
                Op::SortReverse
            } else {
                Op::Sort
            }
        }
        "clear" => call.none().map(|()| Op::Clear)?,
        "copy" => call.none().map(|()| Op::Copy)?,
        other => return Err(not_exposed(kind, other)),
    })
}

fn namespace(call: Call<'_>) -> Result<Op, Exception> {
    let kind = Kind::Namespace;
    Ok(match call.method {
        "__getattribute__" => {
            let [name] = call.wrapper(false)?;
            Op::Get(attribute(name)?)
        }
        "__setattr__" => {
            let [name, v] = call.wrapper(true)?;
            Op::Set(attribute(name)?, v)
        }
        "__delattr__" => {
            let [name] = call.wrapper(false)?;
            Op::Del(attribute(name)?)
        }
        other => return Err(not_exposed(kind, other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> PyValue {
        PyValue::from(v)
    }

    /// Parses a call with positional arguments only.
    fn p(kind: Kind, method: &str, args: Vec<PyValue>) -> Result<Op, Exception> {
        parse(kind, method, args, Vec::new())
    }

    /// The exception a call raises, as `(class, message)`.
    fn raised(r: Result<Op, Exception>) -> (&'static str, String) {
        match r {
            Ok(op) => panic!("parsed as {op:?}"),
            Err(e) => e,
        }
    }

    fn te(message: &str) -> (&'static str, String) {
        ("TypeError", message.into())
    }

    #[test]
    fn dict_methods_parse_to_their_operations() {
        let d = Kind::Dict;
        assert!(matches!(p(d, "__len__", vec![]), Ok(Op::Len)));
        assert!(matches!(p(d, "__getitem__", vec![s("k")]), Ok(Op::Get(_))));
        assert!(matches!(
            p(d, "__setitem__", vec![s("k"), 1.into()]),
            Ok(Op::Set(..))
        ));
        assert!(matches!(p(d, "get", vec![s("k")]), Ok(Op::Lookup(_))));
        assert!(matches!(
            p(d, "_multiproc_get_many", vec![PyValue::List(vec![s("k")])]),
            Ok(Op::LookupMany(_))
        ));
        assert!(matches!(
            p(d, "_multiproc_get_many", vec![s("k")]),
            Err(("TypeError", _))
        ));
        assert!(matches!(
            p(
                Kind::List,
                "_multiproc_get_many",
                vec![PyValue::List(vec![])]
            ),
            Err(("AttributeError", _))
        ));
        assert!(matches!(
            p(d, "get", vec![s("k"), 0.into()]),
            Ok(Op::LookupOr(..))
        ));
        assert!(matches!(p(d, "pop", vec![s("k")]), Ok(Op::Pop(_))));
        assert!(matches!(
            p(d, "pop", vec![s("k"), 0.into()]),
            Ok(Op::PopOr(..))
        ));
        assert!(matches!(
            p(d, "setdefault", vec![s("k")]),
            Ok(Op::SetDefault(_, PyValue::None))
        ));
        assert!(matches!(p(d, "__iter__", vec![]), Ok(Op::Iter)));
        assert!(matches!(p(d, "#GETVALUE", vec![]), Ok(Op::GetValue)));
        assert!(matches!(p(d, "__str__", vec![]), Ok(Op::Repr)));
        assert!(matches!(p(d, "__repr__", vec![]), Ok(Op::Repr)));
        let update = parse(
            d,
            "update",
            vec![PyValue::dict([("c", 3)])],
            vec![(s("d"), 4.into())],
        );
        assert!(matches!(update, Ok(Op::UpdateWith(Some(_), kw)) if kw.len() == 1));
        assert!(matches!(
            parse(d, "update", vec![], vec![(s("x"), 1.into())]),
            Ok(Op::UpdateWith(None, _))
        ));
        assert!(matches!(
            p(d, INCREMENT, vec![s("n"), 1.into()]),
            Ok(Op::Increment(..))
        ));
        assert!(matches!(
            p(
                d,
                COMPARE_AND_SET,
                vec![s("n"), false.into(), 0.into(), 1.into()]
            ),
            Ok(Op::CompareAndSet(_, None, _))
        ));
        assert!(matches!(
            p(
                d,
                COMPARE_AND_SET,
                vec![s("n"), true.into(), 0.into(), 1.into()]
            ),
            Ok(Op::CompareAndSet(_, Some(_), _))
        ));
    }

    /// The messages, as CPython 3.13 gives them for the same calls on a
    /// real dict (3.8's differ only in leaving out `dict.`).
    #[test]
    fn wrong_dict_arguments_are_pythons_type_errors() {
        let d = Kind::Dict;
        let three = || vec![1.into(), 2.into(), 3.into()];
        let cases: Vec<(Result<Op, Exception>, &str)> = vec![
            (
                p(d, "pop", three()),
                "pop expected at most 2 arguments, got 3",
            ),
            (
                p(d, "pop", vec![]),
                "pop expected at least 1 argument, got 0",
            ),
            (
                p(d, "get", vec![]),
                "get expected at least 1 argument, got 0",
            ),
            (
                p(d, "get", three()),
                "get expected at most 2 arguments, got 3",
            ),
            (
                p(d, "setdefault", vec![]),
                "setdefault expected at least 1 argument, got 0",
            ),
            (
                p(d, "popitem", vec![1.into()]),
                "dict.popitem() takes no arguments (1 given)",
            ),
            (
                p(d, "keys", vec![1.into()]),
                "dict.keys() takes no arguments (1 given)",
            ),
            (
                p(d, "copy", vec![1.into()]),
                "dict.copy() takes no arguments (1 given)",
            ),
            (
                p(d, "update", vec![1.into(), 2.into()]),
                "update expected at most 1 argument, got 2",
            ),
            (
                p(d, "__getitem__", vec![]),
                "dict.__getitem__() takes exactly one argument (0 given)",
            ),
            (
                p(d, "__getitem__", vec![1.into(), 2.into()]),
                "dict.__getitem__() takes exactly one argument (2 given)",
            ),
            (
                p(d, "__setitem__", vec![1.into()]),
                " expected 2 arguments, got 1",
            ),
            (p(d, "__delitem__", vec![]), "expected 1 argument, got 0"),
            (
                p(d, "__contains__", vec![]),
                "dict.__contains__() takes exactly one argument (0 given)",
            ),
            (
                p(d, "__len__", vec![1.into()]),
                "expected 0 arguments, got 1",
            ),
            (
                parse(d, "get", vec![], vec![(s("key"), 1.into())]),
                "dict.get() takes no keyword arguments",
            ),
            (
                parse(d, "keys", vec![], vec![(s("x"), 1.into())]),
                "dict.keys() takes no keyword arguments",
            ),
            (
                parse(d, "__len__", vec![], vec![(s("x"), 1.into())]),
                "wrapper __len__() takes no keyword arguments",
            ),
            (
                parse(d, "update", vec![], vec![(1.into(), 2.into())]),
                "keywords must be strings",
            ),
            (
                p(d, "fromkeys", vec![]),
                "fromkeys expected at least 1 argument, got 0",
            ),
            (
                p(d, "fromkeys", three()),
                "fromkeys expected at most 2 arguments, got 3",
            ),
            (
                p(d, "__reversed__", vec![1.into()]),
                "dict.__reversed__() takes no arguments (1 given)",
            ),
            (p(d, "__ior__", vec![]), "expected 1 argument, got 0"),
        ];
        for (r, message) in cases {
            assert_eq!(raised(r), te(message));
        }
        let (class, message) = raised(p(d, "append", vec![1.into()]));
        assert_eq!(class, "AttributeError");
        assert!(
            message.starts_with(
                "method 'append' of <class 'dict'> object is not in exposed=('__contains__', "
            ),
            "{message}"
        );
        assert_eq!(
            raised(p(d, INCREMENT, vec![1.into()])),
            te("_multiproc_increment expected 2 arguments, got 1")
        );
        assert_eq!(
            raised(p(
                d,
                COMPARE_AND_SET,
                vec![1.into(), 1.into(), 2.into(), 3.into()]
            )),
            te("_multiproc_compare_and_set: present must be a bool, not 'int'")
        );
        assert_eq!(
            raised(p(d, "#GETVALUE", vec![1.into()])),
            te("Server.fallback_getvalue() takes 4 positional arguments but 5 were given")
        );
    }

    #[test]
    fn list_methods_parse_to_their_operations() {
        let l = Kind::List;
        assert!(matches!(p(l, "pop", vec![]), Ok(Op::Pop(PyValue::Int(-1)))));
        assert!(matches!(
            p(l, "pop", vec![true.into()]),
            Ok(Op::Pop(PyValue::Int(1)))
        ));
        assert!(matches!(
            p(l, "insert", vec![(-100).into(), 0.into()]),
            Ok(Op::Insert(-100, _))
        ));
        assert!(matches!(
            p(l, "index", vec![1.into()]),
            Ok(Op::IndexIn(_, 0, i64::MAX))
        ));
        assert!(matches!(
            p(l, "index", vec![1.into(), (-3).into(), 4.into()]),
            Ok(Op::IndexIn(_, -3, 4))
        ));
        assert!(matches!(p(l, "__mul__", vec![3.into()]), Ok(Op::Mul(3))));
        assert!(matches!(
            p(l, "__rmul__", vec![true.into()]),
            Ok(Op::Mul(1))
        ));
        assert!(matches!(p(l, "__imul__", vec![2.into()]), Ok(Op::IMul(2))));
        assert!(matches!(
            p(l, "__iadd__", vec![s("ab")]),
            Ok(Op::ExtendWith(_))
        ));
        assert!(matches!(
            p(l, "extend", vec![s("ab")]),
            Ok(Op::ExtendWith(_))
        ));
        assert!(matches!(p(l, "sort", vec![]), Ok(Op::Sort)));
        let sort = |kwds: Vec<(PyValue, PyValue)>| parse(l, "sort", vec![], kwds);
        assert!(matches!(
            sort(vec![(s("reverse"), true.into())]),
            Ok(Op::SortReverse)
        ));
        // 3.13 takes any truth value for `reverse` (3.8 wanted an int).
        assert!(matches!(
            sort(vec![(s("reverse"), s("x")), (s("key"), PyValue::None)]),
            Ok(Op::SortReverse)
        ));
        assert!(matches!(
            sort(vec![(s("reverse"), PyValue::None)]),
            Ok(Op::Sort)
        ));
        assert!(matches!(p(l, "__reversed__", vec![]), Ok(Op::Reversed)));
        assert!(matches!(p(l, "#GETVALUE", vec![]), Ok(Op::GetValue)));
    }

    /// A call's outcome and the exception expected of it.
    type Case = (Result<Op, Exception>, (&'static str, &'static str));

    #[test]
    fn wrong_list_arguments_are_pythons_errors() {
        let l = Kind::List;
        let cases: Vec<Case> = vec![
            (
                p(l, "pop", vec![1.into(), 2.into(), 3.into()]),
                ("TypeError", "pop expected at most 1 argument, got 3"),
            ),
            (
                p(l, "pop", vec![s("a")]),
                (
                    "TypeError",
                    "'str' object cannot be interpreted as an integer",
                ),
            ),
            (
                p(l, "index", vec![]),
                ("TypeError", "index expected at least 1 argument, got 0"),
            ),
            (
                p(l, "index", vec![1.into(), s("a")]),
                (
                    "TypeError",
                    "slice indices must be integers or have an __index__ method",
                ),
            ),
            (
                p(l, "index", vec![1.into(), PyValue::None]),
                (
                    "TypeError",
                    "slice indices must be integers or have an __index__ method",
                ),
            ),
            (
                p(l, "index", vec![1.into(), 2.into(), 3.into(), 4.into()]),
                ("TypeError", "index expected at most 3 arguments, got 4"),
            ),
            (
                p(l, "insert", vec![1.into()]),
                ("TypeError", "insert expected 2 arguments, got 1"),
            ),
            (
                p(l, "insert", vec![s("a"), 1.into()]),
                (
                    "TypeError",
                    "'str' object cannot be interpreted as an integer",
                ),
            ),
            (
                p(l, "insert", vec![1.0.into(), 1.into()]),
                (
                    "TypeError",
                    "'float' object cannot be interpreted as an integer",
                ),
            ),
            (
                p(l, "append", vec![]),
                (
                    "TypeError",
                    "list.append() takes exactly one argument (0 given)",
                ),
            ),
            (
                p(l, "append", vec![1.into(), 2.into()]),
                (
                    "TypeError",
                    "list.append() takes exactly one argument (2 given)",
                ),
            ),
            (
                p(l, "count", vec![]),
                (
                    "TypeError",
                    "list.count() takes exactly one argument (0 given)",
                ),
            ),
            (
                p(l, "remove", vec![]),
                (
                    "TypeError",
                    "list.remove() takes exactly one argument (0 given)",
                ),
            ),
            (
                p(l, "extend", vec![]),
                (
                    "TypeError",
                    "list.extend() takes exactly one argument (0 given)",
                ),
            ),
            (
                p(l, "reverse", vec![1.into()]),
                ("TypeError", "list.reverse() takes no arguments (1 given)"),
            ),
            (
                p(l, "copy", vec![1.into()]),
                ("TypeError", "list.copy() takes no arguments (1 given)"),
            ),
            (
                p(l, "__reversed__", vec![1.into()]),
                (
                    "TypeError",
                    "list.__reversed__() takes no arguments (1 given)",
                ),
            ),
            (
                p(l, "sort", vec![1.into()]),
                ("TypeError", "sort() takes no positional arguments"),
            ),
            (
                parse(l, "sort", vec![], vec![(s("foo"), 2.into())]),
                (
                    "TypeError",
                    "sort() got an unexpected keyword argument 'foo'",
                ),
            ),
            (
                parse(
                    l,
                    "sort",
                    vec![],
                    vec![
                        (s("key"), PyValue::None),
                        (s("reverse"), true.into()),
                        (s("x"), 1.into()),
                    ],
                ),
                (
                    "TypeError",
                    "sort() takes at most 2 keyword arguments (3 given)",
                ),
            ),
            (
                p(l, "__mul__", vec![s("a")]),
                (
                    "TypeError",
                    "'str' object cannot be interpreted as an integer",
                ),
            ),
            (
                p(l, "__rmul__", vec![1.5.into()]),
                (
                    "TypeError",
                    "'float' object cannot be interpreted as an integer",
                ),
            ),
            (
                p(l, "__mul__", vec![]),
                ("TypeError", " expected 1 argument, got 0"),
            ),
            (
                p(l, "__imul__", vec![]),
                ("TypeError", " expected 1 argument, got 0"),
            ),
            (
                p(l, "__iadd__", vec![]),
                ("TypeError", "expected 1 argument, got 0"),
            ),
            (
                p(l, "__add__", vec![]),
                ("TypeError", "expected 1 argument, got 0"),
            ),
            (
                p(l, "__contains__", vec![]),
                ("TypeError", "expected 1 argument, got 0"),
            ),
            (
                p(l, "__getitem__", vec![]),
                (
                    "TypeError",
                    "list.__getitem__() takes exactly one argument (0 given)",
                ),
            ),
            (
                parse(l, "__getitem__", vec![1.into()], vec![(s("x"), 2.into())]),
                ("TypeError", "list.__getitem__() takes no keyword arguments"),
            ),
            (
                p(l, "__setitem__", vec![1.into()]),
                ("TypeError", " expected 2 arguments, got 1"),
            ),
            (
                parse(l, "index", vec![1.into()], vec![(s("start"), 0.into())]),
                ("TypeError", "list.index() takes no keyword arguments"),
            ),
            (
                parse(l, "pop", vec![], vec![(s("index"), 1.into())]),
                ("TypeError", "list.pop() takes no keyword arguments"),
            ),
            (
                parse(l, "__repr__", vec![], vec![(s("x"), 1.into())]),
                (
                    "TypeError",
                    "Server.fallback_repr() got an unexpected keyword argument 'x'",
                ),
            ),
        ];
        for (r, (class, message)) in cases {
            assert_eq!(raised(r), (class, message.to_string()));
        }
        let (class, message) = raised(parse(
            l,
            "sort",
            vec![],
            vec![(s("key"), s("builtins.len"))],
        ));
        assert_eq!(class, "TypeError");
        assert!(message.starts_with("sort(key='builtins.len') is not supported"));
        let (class, message) = raised(p(l, "keys", vec![]));
        assert_eq!(class, "AttributeError");
        assert!(message
            .starts_with("method 'keys' of <class 'list'> object is not in exposed=('__add__', "));
    }

    #[test]
    fn namespace_methods_are_attribute_access() {
        let n = Kind::Namespace;
        assert!(matches!(
            p(n, "__getattribute__", vec![s("name")]),
            Ok(Op::Get(PyValue::Str(_)))
        ));
        assert!(matches!(
            p(n, "__setattr__", vec![s("name"), 1.into()]),
            Ok(Op::Set(..))
        ));
        assert!(matches!(
            p(n, "__delattr__", vec![s("name")]),
            Ok(Op::Del(_))
        ));
        assert!(matches!(p(n, "__str__", vec![]), Ok(Op::Repr)));
        let name_type = te("attribute name must be string, not 'int'");
        assert_eq!(raised(p(n, "__getattribute__", vec![1.into()])), name_type);
        assert_eq!(raised(p(n, "__delattr__", vec![1.into()])), name_type);
        assert_eq!(
            raised(p(n, "__setattr__", vec![1.into(), 2.into()])),
            name_type
        );
        assert_eq!(
            raised(p(n, "__setattr__", vec![s("a")])),
            te(" expected 2 arguments, got 1")
        );
        assert_eq!(
            raised(p(n, "__getattribute__", vec![])),
            te("expected 1 argument, got 0")
        );
        assert_eq!(
            raised(p(n, "__getattribute__", vec![s("a"), 2.into()])),
            te("expected 1 argument, got 2")
        );
        assert_eq!(
            raised(parse(
                n,
                "__setattr__",
                vec![s("a"), 1.into()],
                vec![(s("x"), 1.into())]
            )),
            te("wrapper __setattr__() takes no keyword arguments")
        );
        assert_eq!(raised(p(n, INCREMENT, vec![1.into(), 1.into()])), name_type);
        let (class, message) = raised(p(n, "keys", vec![]));
        assert_eq!(class, "AttributeError");
        assert_eq!(
            message,
            "method 'keys' of <class 'multiprocessing.managers.Namespace'> object is not in \
             exposed=('__getattribute__', '__setattr__', '__delattr__', \
             '_multiproc_increment', '_multiproc_compare_and_set')"
        );
    }

    #[test]
    fn an_auto_proxy_of_a_namespace_gets_no_attribute_dunders() {
        assert_eq!(auto_exposed(Kind::Namespace), [INCREMENT, COMPARE_AND_SET]);
        assert_eq!(auto_exposed(Kind::Dict), exposed(Kind::Dict));
    }

    #[test]
    fn every_exposed_method_parses() {
        for kind in [Kind::Dict, Kind::List, Kind::Namespace] {
            for &m in exposed(kind) {
                let r = parse(kind, m, vec![], vec![]);
                // No arguments is wrong for many, but never "not exposed".
                if let Err((class, message)) = r {
                    assert_eq!(class, "TypeError", "{kind:?}.{m}: {message}");
                }
            }
        }
    }
}
