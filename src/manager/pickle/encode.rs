//! The encoder: protocol 4 without memo or frames (`\x80\x04 … .`), which
//! every CPython from 3.4 reads.

use super::super::compare::int_bytes;
use super::super::protocol::{Id, Kind};
use super::super::refs::{self, ProxyRef};
use super::super::value::{PyObject, PyValue};
use super::op;

/// `value` as a protocol 4 pickle. A nested proxy becomes
/// `RebuildProxy(<ProxyClass>, Token(typeid, address, id), 'pickle',
/// kwds)`, with `address` (a `(host, port)` tuple or a path) in its token.
pub(crate) fn dumps(value: &PyValue, address: &PyValue) -> Vec<u8> {
    encoded(address, |e| e.value(value))
}

/// The pickle of the pair `(tag, value)`, as [`dumps`] would write it,
/// without the tuple made first (every reply is such a pair).
pub(crate) fn dumps_tagged(tag: &str, value: &PyValue, address: &PyValue) -> Vec<u8> {
    encoded(address, |e| {
        e.str(tag);
        e.value(value);
        e.out.push(op::TUPLE2);
    })
}

/// The pickle of the request `(ident, method, args, kwds)`, as [`dumps`]
/// would write it, without the tuple made first.
pub(crate) fn dumps_request(
    ident: Option<&str>,
    method: &str,
    args: &[PyValue],
    kwds: &[(PyValue, PyValue)],
    address: &PyValue,
) -> Vec<u8> {
    encoded(address, |e| {
        e.out.push(op::MARK);
        match ident {
            Some(ident) => e.str(ident),
            None => e.out.push(op::NONE),
        }
        e.str(method);
        e.tuple(args);
        e.out.push(op::EMPTY_DICT);
        e.set_items(kwds);
        e.out.push(op::TUPLE);
    })
}

/// A protocol 4 pickle of what `write` writes.
fn encoded(address: &PyValue, write: impl FnOnce(&mut Encoder)) -> Vec<u8> {
    // Room for a small message from the start (most are), so that it is
    // not regrown byte by byte.
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[op::PROTO, 4]);
    let mut e = Encoder { out, address };
    write(&mut e);
    e.out.push(op::STOP);
    e.out
}

struct Encoder<'a> {
    out: Vec<u8>,
    address: &'a PyValue,
}

impl Encoder<'_> {
    fn value(&mut self, v: &PyValue) {
        match v {
            PyValue::None => self.out.push(op::NONE),
            PyValue::Bool(true) => self.out.push(op::NEWTRUE),
            PyValue::Bool(false) => self.out.push(op::NEWFALSE),
            PyValue::Int(i) => self.int(*i),
            PyValue::BigInt(b) => self.long(b),
            PyValue::Float(f) => {
                self.out.push(op::BINFLOAT);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            PyValue::Str(s) => self.str(s),
            PyValue::Bytes(b) => {
                match u8::try_from(b.len()) {
                    Ok(n) => self.out.extend_from_slice(&[op::SHORT_BINBYTES, n]),
                    Err(_) => match u32::try_from(b.len()) {
                        Ok(n) => {
                            self.out.push(op::BINBYTES);
                            self.out.extend_from_slice(&n.to_le_bytes());
                        }
                        Err(_) => {
                            self.out.push(op::BINBYTES8);
                            self.out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                        }
                    },
                }
                self.out.extend_from_slice(b);
            }
            PyValue::List(items) => {
                self.out.push(op::EMPTY_LIST);
                self.appends(items);
            }
            PyValue::Tuple(items) => self.tuple(items),
            PyValue::Dict(d) => {
                self.out.push(op::EMPTY_DICT);
                self.set_items(d);
            }
            PyValue::Set(items) => {
                self.out.push(op::EMPTY_SET);
                if !items.is_empty() {
                    self.out.push(op::MARK);
                    items.iter().for_each(|v| self.value(v));
                    self.out.push(op::ADDITEMS);
                }
            }
            PyValue::FrozenSet(items) => {
                self.out.push(op::MARK);
                items.iter().for_each(|v| self.value(v));
                self.out.push(op::FROZENSET);
            }
            PyValue::Object(o) => self.object(o),
            PyValue::Proxy(r) => self.proxy(r),
        }
    }

    /// As CPython writes ints: the shortest of `BININT1`, `BININT2`,
    /// `BININT`, `LONG1`.
    fn int(&mut self, i: i64) {
        if let Ok(b) = u8::try_from(i) {
            self.out.extend_from_slice(&[op::BININT1, b]);
        } else if let Ok(b) = u16::try_from(i) {
            self.out.push(op::BININT2);
            self.out.extend_from_slice(&b.to_le_bytes());
        } else if let Ok(b) = i32::try_from(i) {
            self.out.push(op::BININT);
            self.out.extend_from_slice(&b.to_le_bytes());
        } else {
            self.long(&int_bytes(i));
        }
    }

    fn long(&mut self, b: &[u8]) {
        match u8::try_from(b.len()) {
            Ok(n) => self.out.extend_from_slice(&[op::LONG1, n]),
            Err(_) => {
                self.out.push(op::LONG4);
                // An int longer than 2 GiB is never built.
                self.out
                    .extend_from_slice(&i32::try_from(b.len()).unwrap_or(i32::MAX).to_le_bytes());
            }
        }
        self.out.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        match u8::try_from(s.len()) {
            Ok(n) => self.out.extend_from_slice(&[op::SHORT_BINUNICODE, n]),
            Err(_) => match u32::try_from(s.len()) {
                Ok(n) => {
                    self.out.push(op::BINUNICODE);
                    self.out.extend_from_slice(&n.to_le_bytes());
                }
                Err(_) => {
                    self.out.push(op::BINUNICODE8);
                    self.out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                }
            },
        }
        self.out.extend_from_slice(s.as_bytes());
    }

    fn tuple(&mut self, items: &[PyValue]) {
        match items.len() {
            0 => self.out.push(op::EMPTY_TUPLE),
            n @ 1..=3 => {
                items.iter().for_each(|v| self.item(v));
                self.out.push(op::TUPLE1 + (n as u8 - 1));
            }
            _ => {
                self.out.push(op::MARK);
                items.iter().for_each(|v| self.item(v));
                self.out.push(op::TUPLE);
            }
        }
    }

    /// An item of a container: [`Encoder::value`], with the most common
    /// one, an int, written in the caller's loop rather than through the
    /// recursive call.
    #[inline(always)]
    fn item(&mut self, v: &PyValue) {
        match v {
            PyValue::Int(i) => self.int(*i),
            v => self.value(v),
        }
    }

    /// Appends `items` to the list on the stack.
    fn appends(&mut self, items: &[PyValue]) {
        if !items.is_empty() {
            self.out.push(op::MARK);
            items.iter().for_each(|v| self.item(v));
            self.out.push(op::APPENDS);
        }
    }

    /// Sets `items` in the dict on the stack.
    fn set_items(&mut self, items: &[(PyValue, PyValue)]) {
        if !items.is_empty() {
            self.out.push(op::MARK);
            for (k, v) in items {
                self.item(k);
                self.item(v);
            }
            self.out.push(op::SETITEMS);
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.str(module);
        self.str(name);
        self.out.push(op::STACK_GLOBAL);
    }

    /// As CPython's `save_reduce` writes it: the construction, the list
    /// and dict items, then the state.
    fn object(&mut self, o: &PyObject) {
        self.global(&o.module, &o.name);
        if o.global {
            return;
        }
        self.tuple(&o.args);
        match (&o.kwargs, o.new) {
            (Some(kwargs), _) => {
                self.out.push(op::EMPTY_DICT);
                self.set_items(kwargs);
                self.out.push(op::NEWOBJ_EX);
            }
            (None, true) => self.out.push(op::NEWOBJ),
            (None, false) => self.out.push(op::REDUCE),
        }
        self.appends(&o.list_items);
        self.set_items(&o.dict_items);
        if let Some(state) = &o.state {
            self.value(state);
            self.out.push(op::BUILD);
        }
    }

    fn proxy(&mut self, r: &ProxyRef) {
        // The client now holds this reference.
        refs::sent(r.id);
        self.rebuild_proxy(r.kind, r.id);
    }

    /// `RebuildProxy(ProxyClass, Token(typeid, address, id), 'pickle',
    /// kwds)`, as a proxy's `__reduce__` gives it.
    fn rebuild_proxy(&mut self, kind: Kind, id: Id) {
        const MANAGERS: &str = "multiprocessing.managers";
        self.global(MANAGERS, "RebuildProxy");
        self.out.push(op::MARK);
        self.global(MANAGERS, kind.proxy_name());
        self.object(&PyObject::token(kind, id, self.address));
        self.str("pickle");
        self.out.push(op::EMPTY_DICT);
        if matches!(kind, Kind::Queue | Kind::JoinableQueue) {
            let exposed: Vec<PyValue> = super::super::queue::EXPOSED
                .iter()
                .map(|&m| m.into())
                .collect();
            self.set_items(&[("exposed".into(), PyValue::Tuple(exposed))]);
        }
        self.out.push(op::TUPLE);
        self.out.push(op::REDUCE);
    }
}
