//! Python's manager protocol, one request at a time: a request
//! `(ident, methodname, args, kwds)` in, a reply `(kind, result)` out.
//! Which calls there are and what they answer is here; the objects and
//! their references are `objects`', what an operation does is `apply`'s
//! and `queue`'s.
//!
//! CPython's server answers the server-level calls (`create`, `incref`,
//! …) only as the first request of a short connection, and object calls
//! only after `accept_connection`; this one answers both on any
//! connection (so a client may keep one connection for everything).

use super::protocol::Exception;
use super::PyValue;

/// One request: `(ident, methodname, args, kwds)`; `ident` `None` for the
/// server's own calls.
pub(super) struct Request {
    pub(super) ident: Option<String>,
    pub(super) method: String,
    pub(super) args: Vec<PyValue>,
    pub(super) kwds: Vec<(PyValue, PyValue)>,
}

impl Request {
    /// The request a decoded frame holds, or why it is none (CPython's
    /// server unpacks any four items; the args it spreads with `*`, the
    /// kwds with `**`).
    pub(super) fn parse(v: PyValue) -> Result<Request, Exception> {
        let items = match v {
            PyValue::Tuple(items) | PyValue::List(items) if items.len() == 4 => items,
            PyValue::Tuple(items) | PyValue::List(items) => {
                return Err((
                    "ValueError",
                    format!(
                        "a request is 4 items (ident, methodname, args, kwds), not {}",
                        items.len()
                    ),
                ))
            }
            other => {
                return Err((
                    "TypeError",
                    format!("cannot unpack non-iterable {} object", other.type_name()),
                ))
            }
        };
        let mut items = items.into_iter();
        let mut next = || items.next().unwrap_or(PyValue::None);
        let ident = match next() {
            PyValue::None => None,
            PyValue::Str(s) => Some(s),
            other => {
                return Err((
                    "TypeError",
                    format!("an ident is a str, not {}", other.type_name()),
                ))
            }
        };
        let PyValue::Str(method) = next() else {
            return Err(("TypeError", "a method name is a str".into()));
        };
        let args = match next() {
            PyValue::Tuple(a) | PyValue::List(a) => a,
            other => {
                return Err((
                    "TypeError",
                    format!(
                        "argument after * must be an iterable, not {}",
                        other.type_name()
                    ),
                ))
            }
        };
        let kwds = match next() {
            PyValue::Dict(k) => k,
            other => {
                return Err((
                    "TypeError",
                    format!(
                        "argument after ** must be a mapping, not {}",
                        other.type_name()
                    ),
                ))
            }
        };
        if kwds.iter().any(|(k, _)| !matches!(k, PyValue::Str(_))) {
            return Err(("TypeError", "keywords must be strings".into()));
        }
        Ok(Request {
            ident,
            method,
            args,
            kwds,
        })
    }
}

/// A reply, before it is a value: `(kind, result)`.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    /// `('#RETURN', value)`.
    Return(PyValue),
    /// `('#ERROR', exception)`: the method raised it; the client raises it.
    Error(Exception),
    /// `('#TRACEBACK', text)`: the call itself failed (an unknown object
    /// or method, a request that is none); the client raises `RemoteError`.
    Traceback(Exception),
    /// `('#UNSERIALIZABLE', text)`: the answer cannot be sent.
    Unserializable(Exception),
    /// `('#PROXY', (exposed, Token(typeid, address, ident)))`: a new object
    /// the client holds one reference to.
    Proxy {
        exposed: &'static [&'static str],
        typeid: String,
        ident: String,
    },
    /// The replies of `_multiproc_batch`, a list of `(kind, result)`.
    Batch(Vec<Reply>),
}

/// The text of a `#TRACEBACK` or `#UNSERIALIZABLE` reply: what Python's
/// `format_exc()` would end with.
fn traceback((name, message): &Exception) -> String {
    let line = if message.is_empty() {
        (*name).to_string()
    } else {
        format!("{name}: {message}")
    };
    format!("Traceback (most recent call last):\n  (in the multiproc manager server)\n{line}\n")
}

impl Reply {
    /// Its kind tag.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Reply::Return(_) | Reply::Batch(_) => "#RETURN",
            Reply::Error(_) => "#ERROR",
            Reply::Traceback(_) => "#TRACEBACK",
            Reply::Unserializable(_) => "#UNSERIALIZABLE",
            Reply::Proxy { .. } => "#PROXY",
        }
    }

    /// The `(kind, result)` tuple sent, with `address` in its tokens.
    pub(super) fn into_value(self, address: &PyValue) -> PyValue {
        let kind = PyValue::Str(self.kind().into());
        let result = match self {
            Reply::Return(v) => v,
            Reply::Error(e) => wire::exception(e),
            Reply::Traceback(e) | Reply::Unserializable(e) => PyValue::Str(traceback(&e)),
            Reply::Proxy {
                exposed,
                typeid,
                ident,
            } => PyValue::Tuple(vec![
                PyValue::Tuple(exposed.iter().map(|&m| PyValue::from(m)).collect()),
                wire::token(typeid, address.clone(), ident),
            ]),
            Reply::Batch(replies) => {
                PyValue::List(replies.into_iter().map(|r| r.into_value(address)).collect())
            }
        };
        PyValue::Tuple(vec![kind, result])
    }

    /// What it costs a batch beyond the stored values it copies: its tag
    /// and a scalar, or its error's text.
    pub(super) fn overhead(&self) -> usize {
        16 + match self {
            Reply::Error((k, m)) | Reply::Traceback((k, m)) | Reply::Unserializable((k, m)) => {
                k.len() + m.len() + 64
            }
            Reply::Proxy { exposed, .. } => {
                128 + exposed.iter().map(|m| m.len() + 2).sum::<usize>()
            }
            _ => 0,
        }
    }
}

/// An object's ident on the wire: its id in hex (as CPython's `'%x' % id(obj)`).
pub(super) fn ident(id: u64) -> String {
    format!("{id:x}")
}

/// The id an ident names, read back strictly (the exact spelling
/// [`ident`] writes: lowercase, no sign, no leading zero).
pub(super) fn parse_ident(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| u64::from_str_radix(s, 16).ok()).flatten()
}

/// The module of a Python exception class the server raises.
pub(super) fn exception_module(name: &str) -> &'static str {
    match name {
        "Empty" => "_queue",
        "Full" => "queue",
        _ => "builtins",
    }
}

/// How requests and replies become bytes and values become Python objects.
///
/// Until the pickle codec is merged, frames are postcard-encoded
/// `PyValue`s and objects are tuples: the dispatch above them does not
/// change with it.
pub(super) mod wire {
    use super::super::limits;
    use super::super::protocol::Exception;
    use super::super::PyValue;

    /// A frame's value, with what decoding it took from `budget`'s memory.
    pub(in crate::manager) fn loads(
        frame: &[u8],
        memory: usize,
    ) -> (Result<PyValue, Exception>, usize) {
        let (v, exceeded, left) =
            limits::decode_limited(memory, || postcard::from_bytes::<PyValue>(frame));
        let v = match (v, exceeded) {
            (Ok(v), _) => Ok(v),
            (Err(_), Some(why)) => Err(why.error(memory)),
            (Err(e), None) => Err(("UnpicklingError", e.to_string())),
        };
        (v, left)
    }

    /// The bytes of a reply.
    pub(in crate::manager) fn dumps(v: &PyValue, _address: &PyValue) -> Vec<u8> {
        postcard::to_allocvec(v).unwrap_or_default()
    }

    /// The exception object `#ERROR` carries: `Name(message)`, or
    /// `Name()` without one.
    pub(in crate::manager) fn exception((name, message): Exception) -> PyValue {
        let module = super::exception_module(name);
        let args = if message.is_empty() {
            vec![]
        } else {
            vec![PyValue::Str(message)]
        };
        PyValue::Tuple(vec![
            PyValue::Str(format!("{module}.{name}")),
            PyValue::Tuple(args),
        ])
    }

    /// `multiprocessing.managers.Token(typeid, address, ident)`.
    pub(in crate::manager) fn token(typeid: String, address: PyValue, ident: String) -> PyValue {
        PyValue::Tuple(vec![PyValue::Str(typeid), address, PyValue::Str(ident)])
    }

    /// A `multiprocessing.managers.Namespace` holding `attrs` (what
    /// `#GETVALUE` of a namespace answers).
    pub(in crate::manager) fn namespace(attrs: Vec<(PyValue, PyValue)>) -> PyValue {
        PyValue::Dict(attrs)
    }

    /// The items of a `builtins.range` object, if `v` is one.
    pub(in crate::manager) fn range(_v: &PyValue) -> Option<(i64, i64, i64)> {
        None
    }

    /// The ident of a Token (what `get_methods` is given).
    pub(in crate::manager) fn token_ident(v: &PyValue) -> Option<&str> {
        match v {
            PyValue::Str(s) => Some(s),
            PyValue::Tuple(t) if t.len() == 3 => match &t[2] {
                PyValue::Str(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Which methods each kind exposes and which operation each is, until
/// `methods` (the full mapping) is merged: a few, as CPython's proxies
/// call them.
pub(super) mod methods {
    use super::super::protocol::{Exception, Kind, Op};
    use super::super::PyValue;

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
    ];
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
    ];
    const NAMESPACE: &[&str] = &["__getattribute__", "__setattr__", "__delattr__"];

    /// The methods a proxy of `kind` may call.
    pub(in crate::manager) fn exposed(kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Dict => DICT,
            Kind::List => LIST,
            Kind::Namespace => NAMESPACE,
        }
    }

    /// The operation a call is.
    pub(in crate::manager) fn parse(
        kind: Kind,
        method: &str,
        args: Vec<PyValue>,
        _kwds: Vec<(PyValue, PyValue)>,
    ) -> Result<Op, Exception> {
        let mut a = args.into_iter();
        let mut arg = || {
            a.next()
                .ok_or_else(|| ("TypeError", format!("{method}() takes more arguments")))
        };
        Ok(match (kind, method) {
            (_, "__len__") => Op::Len,
            (_, "clear") => Op::Clear,
            (_, "copy") => Op::Snapshot,
            (Kind::Namespace, "__getattribute__") | (_, "__getitem__") => Op::Get(arg()?),
            (Kind::Namespace, "__setattr__") | (_, "__setitem__") => Op::Set(arg()?, arg()?),
            (Kind::Namespace, "__delattr__") | (_, "__delitem__") => Op::Del(arg()?),
            (_, "__contains__") => Op::Contains(arg()?),
            (Kind::Dict, "get") => Op::Lookup(arg()?),
            (Kind::Dict, "pop") => Op::Pop(arg()?),
            (Kind::List, "pop") => Op::Pop(arg().unwrap_or(PyValue::Int(-1))),
            (_, "popitem") => Op::PopItem,
            (_, "setdefault") => Op::SetDefault(arg()?, arg().unwrap_or(PyValue::None)),
            (_, "keys") => Op::Keys,
            (_, "values") => Op::Values,
            (_, "append") => Op::Append(arg()?),
            (_, "extend") => match arg()? {
                PyValue::List(v) | PyValue::Tuple(v) => Op::Extend(v),
                _ => return Err(("TypeError", "extend() wants a list".into())),
            },
            (_, "count") => Op::Count(arg()?),
            (_, "index") => Op::Index(arg()?),
            (_, "remove") => Op::Remove(arg()?),
            (_, "reverse") => Op::Reverse,
            (_, "sort") => Op::Sort,
            (_, "_multiproc_increment") => Op::Increment(arg()?, arg()?),
            _ => {
                return Err((
                    "AttributeError",
                    format!("'{kind:?}' object has no attribute '{method}'"),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_read_back_only_as_written() {
        for id in [0, 1, 0xabc, u64::MAX] {
            assert_eq!(parse_ident(&ident(id)), Some(id));
        }
        for bad in [
            "",
            "0x1",
            "01",
            "ABC",
            "-1",
            " 1",
            "1 ",
            "1_0",
            "10000000000000000",
        ] {
            assert_eq!(parse_ident(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn requests_are_four_items() {
        let r = Request::parse(PyValue::Tuple(vec![
            PyValue::None,
            "create".into(),
            PyValue::Tuple(vec!["dict".into()]),
            PyValue::Dict(vec![]),
        ]))
        .unwrap();
        assert_eq!((r.ident, r.method.as_str()), (None, "create"));
        assert!(Request::parse(PyValue::Int(1)).is_err());
        assert!(Request::parse(PyValue::Tuple(vec![PyValue::None; 3])).is_err());
        let bad_kwds = PyValue::Tuple(vec![
            PyValue::None,
            "dummy".into(),
            PyValue::Tuple(vec![]),
            PyValue::Dict(vec![(1.into(), 2.into())]),
        ]);
        assert!(Request::parse(bad_kwds).is_err());
    }
}
