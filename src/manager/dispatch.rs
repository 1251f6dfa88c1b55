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

use std::borrow::Cow;

use super::apply::Raised;
use super::limits::Budget;
use super::protocol::Exception;
use super::PyValue;

/// One request: `(ident, methodname, args, kwds)`; `ident` `None` for the
/// server's own calls.
pub(super) struct Request<'f> {
    /// Borrowed from the request's bytes when they were read straight
    /// (see [`Request::read`]).
    pub(super) ident: Option<Cow<'f, str>>,
    pub(super) method: Cow<'f, str>,
    pub(super) args: Vec<PyValue>,
    pub(super) kwds: Vec<(PyValue, PyValue)>,
    /// Why `args` or `kwds` cannot be spread into a call (`*args` of a
    /// value that is no iterable, `**kwds` of no mapping): the call fails
    /// with it once its object and method are found, as CPython's does.
    pub(super) unspread: Option<Exception>,
}

impl<'f> Request<'f> {
    /// The request `frame` holds, read straight from it if it is a plain
    /// call of scalars (`pickle::request_parts`): what [`parse`] makes of
    /// what the decoders make of it, without decoding it, and `budget`
    /// charged what they would have charged; `None` for any other, which
    /// is theirs.
    ///
    /// [`parse`]: Request::parse
    pub(super) fn read(frame: &'f [u8], budget: &mut Budget) -> Option<Request<'f>> {
        let parts = super::pickle::request_parts(frame)?;
        // What decoding it would have charged (a small request's few
        // nodes: only a budget the decoders would refuse refuses it).
        let (memory, work) = parts.charges;
        if !budget.take_decoded(memory, work) {
            return None;
        }
        Some(Request {
            ident: parts.ident.map(Cow::Borrowed),
            method: Cow::Borrowed(parts.method),
            args: parts.args,
            kwds: Vec::new(),
            unspread: None,
        })
    }

    /// The request a decoded frame holds, or why it is none (CPython's
    /// server unpacks any four items; the args it spreads with `*`, the
    /// kwds with `**`).
    pub(super) fn parse(v: PyValue) -> Result<Request<'f>, Exception> {
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
            PyValue::Str(s) => Some(Cow::Owned(s)),
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
        let mut unspread = None;
        let args = match next() {
            PyValue::Tuple(a) | PyValue::List(a) | PyValue::Set(a) | PyValue::FrozenSet(a) => a,
            PyValue::Str(s) => s.chars().map(|c| PyValue::Str(c.into())).collect(),
            PyValue::Bytes(b) => b.into_iter().map(|b| PyValue::Int(b.into())).collect(),
            PyValue::Dict(d) => d.into_iter().map(|(k, _)| k).collect(),
            other => {
                unspread = Some((
                    "TypeError",
                    format!(
                        "argument after * must be an iterable, not {}",
                        other.type_name()
                    ),
                ));
                Vec::new()
            }
        };
        let kwds = match next() {
            PyValue::Dict(k) => k,
            other => {
                unspread = unspread.or(Some((
                    "TypeError",
                    format!(
                        "argument after ** must be a mapping, not {}",
                        other.type_name()
                    ),
                )));
                Vec::new()
            }
        };
        if kwds.iter().any(|(k, _)| !matches!(k, PyValue::Str(_))) {
            unspread = unspread.or(Some(("TypeError", "keywords must be strings".into())));
        }
        Ok(Request {
            ident,
            method: Cow::Owned(method),
            args,
            kwds,
            unspread,
        })
    }
}

/// A reply, before it is a value: `(kind, result)`.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    /// `('#RETURN', value)`.
    Return(PyValue),
    /// `('#ERROR', exception)`: the method raised it; the client raises it.
    Error(Raised),
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
    /// CPython's `#TRACEBACK` for a method an object does not expose: the
    /// `AttributeError` that names the exposed methods, during whose
    /// handling the method's lookup among the server's fallbacks
    /// (`#GETVALUE`, `__repr__`, `__str__`) failed with a `KeyError`,
    /// which is what the traceback ends with.
    pub(super) fn not_exposed(method: &str, message: String) -> Reply {
        let lookup = traceback(&("KeyError", PyValue::from(method).repr()));
        Reply::Traceback((
            "AttributeError",
            format!(
                "{message}\n\nDuring handling of the above exception, another exception \
                 occurred:\n\n{}",
                lookup.trim_end()
            ),
        ))
    }

    /// `#ERROR` with an exception made from its message.
    pub(super) fn error(e: Exception) -> Reply {
        Reply::Error(e.into())
    }

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
        let (kind, result) = self.into_parts(address);
        PyValue::Tuple(vec![PyValue::Str(kind.into()), result])
    }

    /// Its kind tag and its result, with `address` in its tokens.
    fn into_parts(self, address: &PyValue) -> (&'static str, PyValue) {
        let kind = self.kind();
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
        (kind, result)
    }

    /// What it costs a batch beyond the stored values it copies: its tag
    /// and a scalar, or its error's text.
    pub(super) fn overhead(&self) -> usize {
        16 + match self {
            Reply::Error(r) => r.class.len() + r.message().len() + 64,
            Reply::Traceback((k, m)) | Reply::Unserializable((k, m)) => k.len() + m.len() + 64,
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
    // One pass (every request names its object by ident).
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > 16 || (bytes[0] == b'0' && bytes.len() > 1) {
        return None;
    }
    bytes.iter().try_fold(0u64, |id, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(id << 4 | u64::from(digit))
    })
}

/// The module of a Python exception class the server raises.
pub(super) fn exception_module(name: &str) -> &'static str {
    match name {
        "Empty" => "_queue",
        "Full" | "ShutDown" => "queue",
        "BrokenBarrierError" => "threading",
        _ => "builtins",
    }
}

/// How requests and replies become bytes (pickles), and the Python
/// objects of the protocol.
pub(super) mod wire {
    use super::super::apply::Raised;
    use super::super::limits::Budget;
    use super::super::pickle;
    use super::super::protocol::Exception;
    use super::super::{PyObject, PyValue};
    use super::Reply;

    /// A frame's value (its pickle), within `budget`.
    pub(in crate::manager) fn loads(
        frame: &[u8],
        budget: &mut Budget,
    ) -> Result<PyValue, Exception> {
        pickle::loads(frame, budget)
    }

    /// A request frame's value, within `budget` (see
    /// [`pickle::loads_request`]).
    pub(in crate::manager) fn loads_request(
        frame: &[u8],
        budget: &mut Budget,
    ) -> Result<PyValue, Exception> {
        pickle::loads_request(frame, budget)
    }

    /// A request frame's value, within `budget`, in which a proxy of a
    /// `Lock` or an `RLock` is an inert object (see
    /// [`pickle::loads_lock_request`]).
    pub(in crate::manager) fn loads_lock_request(
        frame: &[u8],
        budget: &mut Budget,
    ) -> Result<PyValue, Exception> {
        pickle::loads_lock_request(frame, budget)
    }

    /// The bytes of a value, with `address` in the tokens of its proxies.
    pub(in crate::manager) fn dumps(v: &PyValue, address: &PyValue) -> Vec<u8> {
        pickle::dumps(v, address)
    }

    /// `('#RETURN', None)` as [`pickle::dumps_tagged`] writes it.
    const RETURN_NONE: &[u8] = b"\x80\x04\x8c\x07#RETURNN\x86.";

    /// The bytes of a reply (as [`dumps`] of its
    /// [`into_value`](Reply::into_value), without making that tuple).
    pub(in crate::manager) fn dumps_reply(reply: Reply, address: &PyValue) -> Vec<u8> {
        // The answer of every call that returns nothing (a set, an append).
        if let Reply::Return(PyValue::None) = reply {
            return RETURN_NONE.to_vec();
        }
        let (kind, result) = reply.into_parts(address);
        let bytes = pickle::dumps_tagged(kind, &result, address);
        result.drop_batch();
        bytes
    }

    /// The exception object `#ERROR` carries: `KeyError('k')`,
    /// `queue.Empty()`.
    pub(in crate::manager) fn exception(raised: Raised) -> PyValue {
        let module = super::exception_module(raised.class);
        PyValue::Object(Box::new(PyObject::call(module, raised.class, raised.args)))
    }

    /// `multiprocessing.managers.Token(typeid, address, ident)`.
    pub(in crate::manager) fn token(typeid: String, address: PyValue, ident: String) -> PyValue {
        PyValue::Object(Box::new(PyObject::instance(
            "multiprocessing.managers",
            "Token",
            Vec::new(),
            Some(PyValue::Tuple(vec![
                PyValue::Str(typeid),
                address,
                PyValue::Str(ident),
            ])),
        )))
    }

    /// The ident of a Token (what `get_methods` is given), or an ident.
    pub(in crate::manager) fn token_ident(v: &PyValue) -> Option<&str> {
        match v {
            PyValue::Str(s) => Some(s),
            PyValue::Object(o) if o.is("multiprocessing.managers", "Token") => match &o.state {
                Some(PyValue::Tuple(t)) if t.len() == 3 => match &t[2] {
                    PyValue::Str(s) => Some(s),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_of_none_is_written_as_any_reply() {
        let address = PyValue::None;
        assert_eq!(
            wire::dumps_reply(Reply::Return(PyValue::None), &address),
            super::super::pickle::dumps_tagged("#RETURN", &PyValue::None, &address)
        );
    }

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

    /// A reply's bytes are those of its `(kind, result)` tuple, for every
    /// kind of reply.
    #[test]
    fn replies_encode_as_their_tuples() {
        let address = PyValue::Str("/tmp/x.sock".into());
        let replies = || {
            vec![
                Reply::Return(PyValue::None),
                Reply::Return(PyValue::Tuple(vec![1.into(), "x".repeat(300).into()])),
                Reply::error(("KeyError", "k".into())),
                Reply::Traceback(("ValueError", "bad".into())),
                Reply::Unserializable(("TypeError", String::new())),
                Reply::Proxy {
                    exposed: &["get", "set"],
                    typeid: "dict".into(),
                    ident: "7f".into(),
                },
                Reply::Batch(vec![
                    Reply::Return(2.into()),
                    Reply::error(("KeyError", "k".into())),
                ]),
            ]
        };
        for (a, b) in replies().into_iter().zip(replies()) {
            let tuple = wire::dumps(&b.into_value(&address), &address);
            assert_eq!(wire::dumps_reply(a, &address), tuple);
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
        assert_eq!((r.ident, &*r.method), (None, "create"));
        assert!(Request::parse(PyValue::Int(1)).is_err());
        assert!(Request::parse(PyValue::Tuple(vec![PyValue::None; 3])).is_err());
        let bad_kwds = PyValue::Tuple(vec![
            PyValue::None,
            "dummy".into(),
            PyValue::Tuple(vec![]),
            PyValue::Dict(vec![(1.into(), 2.into())]),
        ]);
        // Parsed; the call fails with it (`*`/`**` of the wrong values).
        let r = Request::parse(bad_kwds).unwrap();
        assert_eq!(r.unspread.unwrap().0, "TypeError");
        let str_args = PyValue::Tuple(vec![
            PyValue::None,
            "dummy".into(),
            "ab".into(),
            PyValue::Dict(vec![]),
        ]);
        let r = Request::parse(str_args).unwrap();
        assert_eq!(r.args, vec!["a".into(), "b".into()]);
        assert!(r.unspread.is_none());
    }
}
