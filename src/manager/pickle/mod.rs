//! Python's pickle format, for the values of Python's manager protocol: a
//! decoder ([`loads`]) for protocols 2 to 5 that is safe by construction,
//! and an encoder ([`dumps`]) that writes protocol 4.
//!
//! The decoder never imports nor calls anything. A pickle names classes
//! and functions (its "globals") and asks for them to be called; here a
//! call is allowed only to a fixed list of globals whose result is an
//! inert value (`slice`, `complex`, `set`, a manager's `RebuildProxy`, the
//! builtin exceptions, …; see `decode`), and any other call is an
//! `UnpicklingError`. An object made by `cls.__new__` (pickle's `NEWOBJ`,
//! how instances of user classes such as dataclasses are pickled) becomes
//! an inert [`PyObject`](super::PyObject) record that pickles back to the
//! same object. What decoding builds is charged to the request's
//! [`Budget`](super::limits::Budget), copies of memoized values included, and bounded in depth
//! and in the length of its ints.

// The server and the client switch over to this codec in their own
// changes (issue 14); until then only the tests and the fuzzer use it.

mod decode;
mod encode;
mod flat;
#[cfg(test)]
mod tests;

#[allow(unused_imports)]
pub(crate) use decode::{
    is_pathlib, loads, loads_answer, loads_lock_request, loads_request, request_parts,
    returned_scalar, RequestParts, MAX_INT_BYTES, SHARED_LOCK,
};
#[allow(unused_imports)]
pub(crate) use encode::{dumps, dumps_request, dumps_tagged};

/// For the fuzzer only (built with `--cfg fuzzing`): decodes `data` as a
/// request within a request's memory, and if that succeeds, checks that
/// what the value encodes to decodes to a value that encodes the same;
/// and that whatever the one-pass decoder takes on, within any budget and
/// depth, it decodes and charges exactly as the general decoder does; and
/// that a reply's scalar or a request read straight from the bytes is read
/// as the decoders read it; and that the server reads a request as
/// [`loads`] does, but for an `update`'s items (`loads_request`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    use super::limits::Budget;
    let address = super::PyValue::Str("/tmp/fuzz.sock".into());
    let small = data.len().saturating_mul(24);
    for (memory, depth) in [
        (64 << 20, super::limits::MAX_DEPTH + 2),
        (small, 3),
        (small / 3, 1),
    ] {
        let mut fast = Budget::new(usize::MAX, memory);
        if let Ok(v) = flat::decode(data, &mut fast, depth) {
            let mut budget = Budget::new(usize::MAX, memory);
            match decode::general(data, &mut budget, depth) {
                Ok(w) => assert!(
                    dumps(&v, &address) == dumps(&w, &address),
                    "one pass gave {v:?}, the general decoder {w:?}"
                ),
                Err(e) => panic!("one pass gave {v:?}, the general decoder {e:?}"),
            }
            assert_eq!(fast, budget, "the two decoders charged {v:?} differently");
        }
    }
    // A reply read straight from its bytes is read as the decoders read it.
    if let Some(v) = returned_scalar(data) {
        let pair = super::PyValue::Tuple(vec!["#RETURN".into(), v]);
        match loads_answer(data, &mut Budget::new(usize::MAX, 64 << 20)) {
            Ok(w) => assert!(
                dumps(&pair, &address) == dumps(&w, &address),
                "read straight as {pair:?}, by the decoders as {w:?}"
            ),
            Err(e) => panic!("read straight as {pair:?}, which the decoders refuse: {e:?}"),
        }
    }
    // So is a request read straight from its bytes.
    if let Some(parts) = request_parts(data) {
        let mut charged = Budget::new(usize::MAX, 64 << 20);
        let _ = charged.memory(parts.charges.0);
        let _ = charged.work(parts.charges.1);
        let mut read = super::PyValue::Tuple(vec![
            parts
                .ident
                .map_or(super::PyValue::None, super::PyValue::from),
            parts.method.into(),
            super::PyValue::Tuple(parts.args),
            super::PyValue::Dict(Default::default()),
        ]);
        // An update's items as set: the decoders keep one a key.
        flat::one_item_a_key_inside(&mut read);
        let mut decoding = Budget::new(usize::MAX, 64 << 20);
        match loads(data, &mut decoding) {
            Ok(w) => assert!(
                dumps(&read, &address) == dumps(&w, &address),
                "read straight as {read:?}, by the decoders as {w:?}"
            ),
            Err(e) => panic!("read straight as {read:?}, which the decoders refuse: {e:?}"),
        }
        assert_eq!(
            charged, decoding,
            "{read:?} read straight charged otherwise"
        );
    }
    // The server's read of a request is `loads`', but for the items an
    // `update` passes, which may set a key twice until one is kept.
    let (mut server, mut client) = (
        Budget::new(usize::MAX, 64 << 20),
        Budget::new(usize::MAX, 64 << 20),
    );
    match (loads_request(data, &mut server), loads(data, &mut client)) {
        (Ok(mut v), Ok(w)) => {
            flat::one_item_a_key_inside(&mut v);
            assert!(
                dumps(&v, &address) == dumps(&w, &address),
                "the server read {v:?}, loads {w:?}"
            );
        }
        (Err(_), Err(_)) => {}
        (v, w) => panic!("the server read {v:?}, loads {w:?}"),
    }
    assert_eq!(server, client, "the server's read charged otherwise");
    let mut budget = Budget::new(usize::MAX, 64 << 20);
    if let Ok(v) = loads(data, &mut budget) {
        let bytes = dumps(&v, &address);
        let mut budget = Budget::new(usize::MAX, usize::MAX);
        let back = match loads_answer(&bytes, &mut budget) {
            Ok(back) => back,
            Err(e) => panic!("what dumps wrote does not decode: {e:?}\n{v:?}"),
        };
        assert!(
            dumps(&back, &address) == bytes,
            "{v:?} came back as {back:?}"
        );
    }
}

/// Pickle's opcodes (CPython's `Lib/pickle.py` names them).
mod op {
    pub(super) const MARK: u8 = b'(';
    pub(super) const STOP: u8 = b'.';
    pub(super) const POP: u8 = b'0';
    pub(super) const POP_MARK: u8 = b'1';
    pub(super) const DUP: u8 = b'2';
    pub(super) const BININT: u8 = b'J';
    pub(super) const BININT1: u8 = b'K';
    pub(super) const BININT2: u8 = b'M';
    pub(super) const NONE: u8 = b'N';
    pub(super) const PERSID: u8 = b'P';
    pub(super) const BINPERSID: u8 = b'Q';
    pub(super) const REDUCE: u8 = b'R';
    pub(super) const BINUNICODE: u8 = b'X';
    pub(super) const APPEND: u8 = b'a';
    pub(super) const BUILD: u8 = b'b';
    pub(super) const GLOBAL: u8 = b'c';
    pub(super) const DICT: u8 = b'd';
    pub(super) const EMPTY_DICT: u8 = b'}';
    pub(super) const APPENDS: u8 = b'e';
    pub(super) const BINGET: u8 = b'h';
    pub(super) const LONG_BINGET: u8 = b'j';
    pub(super) const LIST: u8 = b'l';
    pub(super) const EMPTY_LIST: u8 = b']';
    pub(super) const BINPUT: u8 = b'q';
    pub(super) const LONG_BINPUT: u8 = b'r';
    pub(super) const SETITEM: u8 = b's';
    pub(super) const TUPLE: u8 = b't';
    pub(super) const EMPTY_TUPLE: u8 = b')';
    pub(super) const SETITEMS: u8 = b'u';
    pub(super) const BINFLOAT: u8 = b'G';
    pub(super) const BINBYTES: u8 = b'B';
    pub(super) const SHORT_BINBYTES: u8 = b'C';
    pub(super) const PROTO: u8 = 0x80;
    pub(super) const NEWOBJ: u8 = 0x81;
    pub(super) const TUPLE1: u8 = 0x85;
    pub(super) const TUPLE2: u8 = 0x86;
    pub(super) const TUPLE3: u8 = 0x87;
    pub(super) const NEWTRUE: u8 = 0x88;
    pub(super) const NEWFALSE: u8 = 0x89;
    pub(super) const LONG1: u8 = 0x8a;
    pub(super) const LONG4: u8 = 0x8b;
    pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(super) const BINUNICODE8: u8 = 0x8d;
    pub(super) const BINBYTES8: u8 = 0x8e;
    pub(super) const EMPTY_SET: u8 = 0x8f;
    pub(super) const ADDITEMS: u8 = 0x90;
    pub(super) const FROZENSET: u8 = 0x91;
    pub(super) const NEWOBJ_EX: u8 = 0x92;
    pub(super) const STACK_GLOBAL: u8 = 0x93;
    pub(super) const MEMOIZE: u8 = 0x94;
    pub(super) const FRAME: u8 = 0x95;
    pub(super) const BYTEARRAY8: u8 = 0x96;
    pub(super) const NEXT_BUFFER: u8 = 0x97;
    pub(super) const READONLY_BUFFER: u8 = 0x98;
}

/// The address a `Token` carries for a server at `address`: `('host',
/// port)`, or a Unix socket's path, as CPython writes it.
pub(crate) fn token_address(address: &crate::conn::Address) -> super::PyValue {
    match address {
        crate::conn::Address::Tcp(a) => super::PyValue::Tuple(vec![
            super::PyValue::Str(a.ip().to_string()),
            super::PyValue::Int(a.port().into()),
        ]),
        crate::conn::Address::Unix(p) => super::PyValue::Str(p.to_string_lossy().into_owned()),
    }
}
