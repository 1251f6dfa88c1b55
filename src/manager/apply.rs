//! The object model: what each operation does to a dict, a list or a
//! namespace, as Python's would (its results, its exceptions and their
//! messages), within a request's [`Budget`]. Pure: no sockets and no
//! reference counting, so that it can be tested (and reused) on its own.
//!
//! Where this differs from Python, on purpose: lists and dicts may be dict
//! keys (Rust clients use them); `__imul__`, `__iadd__` and `__ior__`
//! answer `None` rather than the object (the proxies ignore the answer); a
//! proxy is not iterable within an operation (`l.extend(other_proxy)` is a
//! `TypeError` that says to pass a copy); an operation
//! that would build more than a request may take is a `MemoryError` before
//! anything is built; error messages show at most about 200 characters of
//! a value; `_multiproc_increment` adds ints of up to 127 bits; a sort of
//! mixed types raises Python's `TypeError`, but the pair of types it names
//! may be another than CPython's (it depends on the order of comparisons,
//! which CPython itself changed in 3.13).

use indexmap::IndexMap;

use super::compare::sort;
use super::limits::{self, Budget};
use super::methods::int_of;
use super::protocol::{Exception, Kind, Op};
use super::{PyObject, PyValue};

/// The server's dicts hash with foldhash (its fast variant) under a key
/// drawn from the operating system's randomness when the server starts
/// (see [`keyed`]): a client that chooses keys does not know the key, and
/// so cannot choose their collisions. It is several times cheaper than
/// std's SipHash-1-3 per key; the dicts iterate in insertion order, so
/// no answer shows how keys hash.
pub(super) type Map = IndexMap<PyValue, PyValue, Keyed>;

/// The hasher of the server's dicts (see [`Map`]): foldhash's, keyed.
#[derive(Clone, Debug)]
pub(super) struct Keyed(foldhash::fast::SeedableRandomState);

/// A new random key for dicts' hashers: a per-key seed and a seed shared
/// by this process, both drawn from std's `RandomState` (whose SipHash
/// keys come from the operating system's randomness), not from foldhash's
/// own default (addresses and the time).
pub(super) fn keyed() -> Keyed {
    use std::hash::BuildHasher;
    fn random() -> u64 {
        std::hash::RandomState::new().hash_one(0x6d70_7263_u64)
    }
    static SHARED: crate::lazy::Lazy<foldhash::SharedSeed> =
        crate::lazy::Lazy::new(|| foldhash::SharedSeed::from_u64(random()));
    Keyed(foldhash::fast::SeedableRandomState::with_seed(
        random(),
        &SHARED,
    ))
}

impl std::hash::BuildHasher for Keyed {
    type Hasher = KeyedHasher;
    #[inline]
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.0.build_hasher())
    }
}

/// foldhash's hasher, whose writes stay out of line in a debug build:
/// hashing a value recurses once per level of nesting, and inlined there
/// they would make each level's frame several times larger (the deepest
/// value allowed must hash within a thread's stack).
pub(super) struct KeyedHasher(foldhash::fast::FoldHasher<'static>);

macro_rules! forward {
    ($($name:ident: $t:ty),*) => {$(
        #[cfg_attr(debug_assertions, inline(never))]
        #[cfg_attr(not(debug_assertions), inline)]
        fn $name(&mut self, i: $t) {
            self.0.$name(i)
        }
    )*};
}

impl std::hash::Hasher for KeyedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }
    forward!(write: &[u8], write_u8: u8, write_u16: u16, write_u32: u32, write_u64: u64,
        write_u128: u128, write_usize: usize);
}

/// A manager object's contents.
pub(super) enum Object {
    /// Dicts and namespaces (whose keys are names).
    Dict(Map),
    List(Vec<PyValue>),
}

/// What an operation answers: a value, or the Python exception it raises
/// (as its class and message).
pub(super) type OpResult = std::result::Result<PyValue, Exception>;

/// A Python exception that an operation raises: its class and the
/// arguments it is made with, as `#ERROR` sends it (`KeyError('k')` holds
/// the key itself, `MemoryError()` nothing).
#[derive(Debug, PartialEq)]
pub(super) struct Raised {
    pub(super) class: &'static str,
    pub(super) args: Vec<PyValue>,
}

impl Raised {
    /// `KeyError(key)`.
    fn key_error(key: PyValue) -> Raised {
        Raised {
            class: "KeyError",
            args: vec![key],
        }
    }

    /// Python's `str()` of the exception: `'k'` for `KeyError('k')`.
    pub(super) fn message(&self) -> String {
        match self.args.as_slice() {
            [] => String::new(),
            [PyValue::Str(s)] if self.class != "KeyError" => s.clone(),
            [v] => v.repr(),
            vs => {
                let reprs: Vec<String> = vs.iter().map(PyValue::repr).collect();
                format!("({})", reprs.join(", "))
            }
        }
    }

    /// The exception as its class and message.
    #[cfg(test)]
    fn into_exception(self) -> Exception {
        (self.class, self.message())
    }
}

/// An exception made with its message (none if empty).
impl From<Exception> for Raised {
    fn from((class, message): Exception) -> Raised {
        Raised {
            class,
            args: if message.is_empty() {
                Vec::new()
            } else {
                vec![PyValue::Str(message)]
            },
        }
    }
}

fn type_error(msg: String) -> Exception {
    ("TypeError", msg)
}

/// Python's `TypeError` for a dict key it cannot hash: an `OrderedDict`,
/// `defaultdict`, `Counter`, `deque` or `bytearray`, or a tuple holding
/// one. (Lists, dicts and sets are keys here: see [`PyValue`].) Ints and
/// strs pass with one test of their kind. Every insert asks it; a lookup
/// only when the key is missing, so that the lookups of a batch cost what
/// they did (a key found equals a stored one, which was asked: only an
/// `OrderedDict`, `defaultdict` or `Counter` equal to a dict stored as a
/// key is found where Python refuses it).
#[inline]
pub(super) fn hashable(k: &PyValue) -> std::result::Result<(), Exception> {
    use PyValue::*;
    match k {
        Object(_) | Tuple(_) | FrozenSet(_) | List(_) | Dict(_) | Set(_) => unhashable(k),
        _ => Ok(()),
    }
}

/// [`hashable`] of a value that may hold a value Python cannot hash.
#[cold]
#[inline(never)]
fn unhashable(k: &PyValue) -> std::result::Result<(), Exception> {
    match k.unhashable() {
        Some(name) => Err(type_error(format!("unhashable type: '{name}'"))),
        None => Ok(()),
    }
}

/// `k`, if Python can hash it (see [`hashable`]).
#[inline]
fn hashed(k: &PyValue) -> std::result::Result<&PyValue, Exception> {
    hashable(k).map(|()| k)
}

/// Whether `k` may be popped from `d`: an empty dict pops any key without
/// hashing it, as Python's (`{}.pop([], 5)` is 5).
fn popped(d: &Map, k: &PyValue) -> std::result::Result<(), Exception> {
    if d.is_empty() {
        return Ok(());
    }
    hashable(k)
}

/// Inserts `items` in order, as Python's `dict.update` does: up to the
/// first key Python cannot hash, whose `TypeError` it answers.
fn insert_all(
    d: &mut Map,
    items: impl IntoIterator<Item = (PyValue, PyValue)>,
) -> std::result::Result<(), Exception> {
    let items = items.into_iter();
    // As `extend` reserves: half if the map has keys, which may repeat.
    let n = items.size_hint().0;
    d.reserve(if d.is_empty() { n } else { n.div_ceil(2) });
    for (k, v) in items {
        hashable(&k)?;
        d.insert(k, v);
    }
    Ok(())
}

fn index_error(msg: &str) -> Exception {
    ("IndexError", msg.into())
}

/// The position `key` (an int, negative from the end) names in a list of
/// `len` items, or Python's error: `list index out of range`, or as
/// `out_of_range` says (`list assignment index out of range`).
fn index(key: &PyValue, len: usize, out_of_range: &str) -> std::result::Result<usize, Exception> {
    let i = match int_of(key) {
        Some(Ok(i)) => i,
        Some(Err(_)) => return Err(index_error("cannot fit 'int' into an index-sized integer")),
        None => {
            return Err(type_error(format!(
                "list indices must be integers or slices, not {}",
                key.type_name()
            )))
        }
    };
    let len = len as i64;
    let at = if i < 0 { i + len } else { i };
    if (0..len).contains(&at) {
        Ok(at as usize)
    } else {
        Err(index_error(out_of_range))
    }
}

const GET_RANGE: &str = "list index out of range";
const SET_RANGE: &str = "list assignment index out of range";

/// A slice's bounds, as `slice(start, stop, step)` holds them (ints beyond
/// `i64` clamped, as Python clamps them to `Py_ssize_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slice {
    pub(super) start: Option<i64>,
    pub(super) stop: Option<i64>,
    pub(super) step: Option<i64>,
}

/// The slice `key` is, if it is one (`builtins.slice(start, stop, step)`,
/// as a client pickles `l[1:3]`), or the `TypeError` of a slice of
/// something else than ints.
pub(super) fn slice_of(key: &PyValue) -> Option<std::result::Result<Slice, Exception>> {
    let PyValue::Object(o) = key else {
        return None;
    };
    if !o.is_builtin("slice") {
        return None;
    }
    let part = |i: usize| slice_part(o.args.get(i).unwrap_or(&PyValue::None));
    Some((|| {
        // Python reads the step first (`PySlice_Unpack`): `l['a'::0]`, and
        // `l[::0] = 5`, are the step's `ValueError`.
        let step = part(2)?;
        if step == Some(0) {
            return Err(zero_step());
        }
        Ok(Slice {
            start: part(0)?,
            stop: part(1)?,
            step,
        })
    })())
}

/// Python's `ValueError` for a slice with a step of 0.
fn zero_step() -> Exception {
    ("ValueError", "slice step cannot be zero".into())
}

/// One bound of a slice: `None`, or an int clamped to `i64`.
fn slice_part(v: &PyValue) -> std::result::Result<Option<i64>, Exception> {
    match (v, int_of(v)) {
        (PyValue::None, _) => Ok(None),
        (_, Some(Ok(i))) => Ok(Some(i)),
        (_, Some(Err(negative))) => Ok(Some(if negative { i64::MIN } else { i64::MAX })),
        (_, None) => Err(type_error(
            "slice indices must be integers or None or have an __index__ method".into(),
        )),
    }
}

impl Slice {
    /// The items it selects in a sequence of `len`: the first position,
    /// the step and how many (Python's `PySlice_Unpack` and
    /// `PySlice_AdjustIndices`).
    fn indices(self, len: usize) -> std::result::Result<(i64, i64, usize), Exception> {
        let step = self.step.unwrap_or(1);
        if step == 0 {
            return Err(zero_step());
        }
        let step = step.max(-i64::MAX);
        let len = len as i64;
        let adjust = |i: i64| {
            if i < 0 {
                let i = i + len;
                if i < 0 {
                    if step < 0 {
                        -1
                    } else {
                        0
                    }
                } else {
                    i
                }
            } else if i >= len {
                if step < 0 {
                    len - 1
                } else {
                    len
                }
            } else {
                i
            }
        };
        let start = adjust(self.start.unwrap_or(if step < 0 { i64::MAX } else { 0 }));
        let stop = adjust(
            self.stop
                .unwrap_or(if step < 0 { i64::MIN } else { i64::MAX }),
        );
        // Both are within -1..=len now: no overflow below.
        let count = if step < 0 && stop < start {
            (start - stop - 1) / -step + 1
        } else if step > 0 && start < stop {
            (stop - start - 1) / step + 1
        } else {
            0
        };
        Ok((start, step, count as usize))
    }

    /// The positions it selects in a sequence of `len`, in its order.
    pub(super) fn positions(
        self,
        len: usize,
    ) -> std::result::Result<impl Iterator<Item = usize>, Exception> {
        let (start, step, count) = self.indices(len)?;
        Ok((0..count as i64).map(move |k| (start + k * step) as usize))
    }
}

/// `l[slice]`: its copies taken from `budget` before they are made.
fn get_slice(l: &[PyValue], s: Slice, budget: &mut Budget) -> OpResult {
    budget.charge(s.positions(l.len())?.map(|i| &l[i]))?;
    Ok(PyValue::List(
        s.positions(l.len())?.map(|i| l[i].clone()).collect(),
    ))
}

/// `l[slice] = items`: a plain slice takes any number of items, an
/// extended one (a step other than 1) exactly as many as it selects.
fn set_slice(
    l: &mut Vec<PyValue>,
    s: Slice,
    items: Vec<PyValue>,
    budget: &mut Budget,
) -> std::result::Result<(), Exception> {
    let (start, step, count) = s.indices(l.len())?;
    if step == 1 {
        let start = start as usize;
        budget.work(l.len() - start + items.len())?;
        l.splice(start..start + count, items);
        return Ok(());
    }
    if items.len() != count {
        return Err((
            "ValueError",
            format!(
                "attempt to assign sequence of size {} to extended slice of size {count}",
                items.len()
            ),
        ));
    }
    for (k, item) in items.into_iter().enumerate() {
        l[(start + k as i64 * step) as usize] = item;
    }
    Ok(())
}

/// `del l[slice]`.
fn del_slice(
    l: &mut Vec<PyValue>,
    s: Slice,
    budget: &mut Budget,
) -> std::result::Result<(), Exception> {
    let positions = s.positions(l.len())?;
    budget.work(l.len())?;
    let mut gone = vec![false; l.len()];
    for i in positions {
        gone[i] = true;
    }
    let mut i = 0;
    l.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
    Ok(())
}

/// The items of an iterable a client sent (`list.extend`'s argument): a
/// list's or tuple's items, a str's characters, a bytes' ints, a dict's
/// keys. Those made here (characters, ints) are taken from `budget`.
pub(super) fn items_of(
    v: PyValue,
    budget: &mut Budget,
) -> std::result::Result<Vec<PyValue>, Exception> {
    match v {
        PyValue::List(vs) | PyValue::Tuple(vs) => Ok(vs),
        PyValue::Dict(d) => Ok(d.into_iter().map(|(k, _)| k).collect()),
        PyValue::Str(s) => {
            let one = PyValue::Str(String::new());
            let mut out = Vec::new();
            for c in s.chars() {
                budget.charge([&one])?;
                out.push(PyValue::Str(c.into()));
            }
            Ok(out)
        }
        PyValue::Bytes(b) => {
            let one = PyValue::Int(0);
            let mut out = Vec::new();
            for c in b {
                budget.charge([&one])?;
                out.push(PyValue::Int(c.into()));
            }
            Ok(out)
        }
        PyValue::Set(vs) | PyValue::FrozenSet(vs) => Ok(vs),
        // A deque's items, an OrderedDict's, defaultdict's or Counter's keys.
        PyValue::Object(ref o) if o.module == "collections" && v.deque_items().is_some() => {
            let items = v.deque_items().unwrap_or_default();
            budget.charge(items)?;
            Ok(items.to_vec())
        }
        PyValue::Object(ref o) if o.module == "collections" && v.mapping().is_some() => {
            let pairs = v.mapping().map_or(&[][..], |(_, pairs)| pairs);
            budget.charge(pairs.iter().map(|(k, _)| k))?;
            Ok(pairs.iter().map(|(k, _)| k.clone()).collect())
        }
        PyValue::Object(o) if o.is_builtin("bytearray") => match o.args.first() {
            Some(PyValue::Bytes(b)) => items_of(PyValue::Bytes(b.clone()), budget),
            _ => Ok(Vec::new()),
        },
        PyValue::Object(o) if o.is_builtin("range") => range_items(&o.args, budget),
        PyValue::Proxy(r) => Err(type_error(format!(
            "'{}' object is not iterable in the manager, which reads no other object \
             within an operation; pass a copy (proxy[:])",
            r.kind.proxy_name()
        ))),
        v => Err(type_error(format!(
            "'{}' object is not iterable",
            v.type_name()
        ))),
    }
}

/// The ints of `range(start, stop, step)` (as the decoder leaves it: three
/// ints), each taken from `budget` before it is made.
fn range_items(
    args: &[PyValue],
    budget: &mut Budget,
) -> std::result::Result<Vec<PyValue>, Exception> {
    let [PyValue::Int(start), PyValue::Int(stop), PyValue::Int(step)] = args else {
        return Err(type_error("a range of ints".into()));
    };
    let (start, stop, step) = (i128::from(*start), i128::from(*stop), i128::from(*step));
    if step == 0 {
        return Err(("ValueError", "range() arg 3 must not be zero".into()));
    }
    let one = PyValue::Int(0);
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        budget.charge([&one])?;
        // Within `start..stop`, which are `i64`s.
        out.push(PyValue::Int(i as i64));
        i += step;
    }
    Ok(out)
}

/// The items of `dict.update`'s argument: a dict's, or an iterable's of
/// pairs.
pub(super) fn pairs_of(
    v: PyValue,
    budget: &mut Budget,
) -> std::result::Result<Vec<(PyValue, PyValue)>, Exception> {
    let (pairs, end) = pairs_until(v, budget);
    end.map(|()| pairs)
}

/// [`pairs_of`] as far as it goes, as Python's `dict.update` reads its
/// argument: the pairs before the first item that is not a pair, and that
/// item's error (the pairs before it are inserted all the same).
fn pairs_until(
    v: PyValue,
    budget: &mut Budget,
) -> (Vec<(PyValue, PyValue)>, std::result::Result<(), Exception>) {
    if let PyValue::Dict(d) = v {
        return (d, Ok(()));
    }
    if let (PyValue::Object(_), Some((_, pairs))) = (&v, v.mapping()) {
        return match budget.charge(pairs.iter().flat_map(|(k, v)| [k, v])) {
            Ok(()) => (pairs.to_vec(), Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        };
    }
    let items = match items_of(v, budget) {
        Ok(items) => items,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut pairs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let pair = match items_of(item, budget) {
            Ok(pair) => pair,
            // The budget's refusal ends the request as it is.
            Err(e) if budget.spent() => return (pairs, Err(e)),
            Err(_) => {
                let message =
                    format!("cannot convert dictionary update sequence element #{i} to a sequence");
                return (pairs, Err(type_error(message)));
            }
        };
        match <[PyValue; 2]>::try_from(pair) {
            Ok([k, v]) => pairs.push((k, v)),
            Err(pair) => {
                let message = format!(
                    "dictionary update sequence element #{i} has length {}; 2 is required",
                    pair.len()
                );
                return (pairs, Err(("ValueError", message)));
            }
        }
    }
    (pairs, Ok(()))
}

/// An int of up to 128 bits, as an `Int` if it fits `i64` and else as a
/// `BigInt`'s minimal little-endian two's complement bytes.
pub(super) fn int_value(i: i128) -> PyValue {
    if let Ok(small) = i64::try_from(i) {
        return PyValue::Int(small);
    }
    let mut bytes = i.to_le_bytes().to_vec();
    // Drop a top byte that only repeats the sign of the one below it.
    while let [.., below, top] = bytes[..] {
        let sign = if below & 0x80 != 0 { 0xff } else { 0 };
        if top != sign {
            break;
        }
        bytes.pop();
    }
    PyValue::BigInt(bytes)
}

/// A number as Python adds it: an int of up to 128 bits (a `bool` is an
/// int), or a float.
enum Addend {
    Int(i128),
    Float(f64),
}

fn addend(v: &PyValue) -> Option<Addend> {
    match v {
        PyValue::Bool(b) => Some(Addend::Int((*b).into())),
        PyValue::Int(i) => Some(Addend::Int((*i).into())),
        PyValue::Float(f) => Some(Addend::Float(*f)),
        PyValue::BigInt(b) => big_i128(b).map(Addend::Int),
        _ => None,
    }
}

/// A `BigInt`'s two's complement bytes as an `i128`, if they fit.
pub(super) fn big_i128(b: &[u8]) -> Option<i128> {
    if b.len() > 16 {
        return None;
    }
    let fill = if b.last().is_some_and(|&top| top & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut le = [fill; 16];
    le[..b.len()].copy_from_slice(b);
    Some(i128::from_le_bytes(le))
}

/// `a + b` for ints and floats (and bools, which are ints in Python), as
/// `_multiproc_increment` does it: ints beyond 64 bits are Python's too,
/// up to 127 bits.
fn add(a: &PyValue, b: &PyValue) -> OpResult {
    let too_big = || {
        (
            "OverflowError",
            "the manager adds ints of at most 127 bits".to_string(),
        )
    };
    let big = |v: &PyValue| matches!(v, PyValue::BigInt(_));
    match (addend(a), addend(b)) {
        (Some(Addend::Int(x)), Some(Addend::Int(y))) => {
            x.checked_add(y).map(int_value).ok_or_else(too_big)
        }
        (Some(Addend::Int(x)), Some(Addend::Float(y))) => Ok(PyValue::Float(x as f64 + y)),
        (Some(Addend::Float(x)), Some(Addend::Int(y))) => Ok(PyValue::Float(x + y as f64)),
        (Some(Addend::Float(x)), Some(Addend::Float(y))) => Ok(PyValue::Float(x + y)),
        _ if big(a) || big(b) => Err(too_big()),
        _ => Err(type_error(format!(
            "unsupported operand type(s) for +=: '{}' and '{}'",
            a.type_name(),
            b.type_name()
        ))),
    }
}

/// The most a representation (`__repr__`) may take before it is refused,
/// as Python would run out of memory for it: four frames' worth.
const REPR_MAX: usize = 64 << 20;

/// At most how long Python's `repr` of `v` is, without making it.
fn repr_bound(v: &PyValue) -> usize {
    // Each item, and a separator.
    let items = |open: usize, vs: &[PyValue]| {
        vs.iter().fold(open, |n, v| {
            n.saturating_add(repr_bound(v)).saturating_add(2)
        })
    };
    match v {
        PyValue::None | PyValue::Bool(_) => 5,
        PyValue::Int(_) => 20,
        PyValue::Float(_) => 24,
        // An escape is at most 4 characters a byte (`\x00`, `\U0001f600`).
        PyValue::Str(s) => s.len().saturating_mul(4).saturating_add(2),
        PyValue::Bytes(b) => b.len().saturating_mul(4).saturating_add(3),
        PyValue::List(vs) | PyValue::Tuple(vs) => items(3, vs),
        PyValue::Dict(d) => d.iter().fold(2, |n, (k, v)| {
            n.saturating_add(repr_bound(k))
                .saturating_add(repr_bound(v))
                .saturating_add(4)
        }),
        PyValue::Set(vs) | PyValue::FrozenSet(vs) => items(14, vs),
        // Under 2.5 decimal digits a byte, and a sign.
        PyValue::BigInt(b) => b.len().saturating_mul(3).saturating_add(2),
        PyValue::Proxy(_) => 96,
        PyValue::Object(o) => items(
            o.module
                .len()
                .saturating_add(o.name.len())
                .saturating_add(32),
            &o.args,
        ),
    }
}

/// The work of writing `v`'s `repr`: a step for each of its values, and
/// the digits of its numbers (a float's shortest digits take as long as
/// a dozen values walked, an int's a few) and the characters of its strs
/// and bytes (each looked at for an escape).
fn repr_work(v: &PyValue) -> usize {
    let all = |vs: &[PyValue]| vs.iter().map(repr_work).sum::<usize>();
    let pairs = |d: &[(PyValue, PyValue)]| {
        d.iter()
            .map(|(k, v)| repr_work(k) + repr_work(v))
            .sum::<usize>()
    };
    1 + match v {
        PyValue::Int(_) => 4,
        PyValue::Float(_) => 16,
        PyValue::Str(s) => s.len() / 4,
        PyValue::Bytes(b) => b.len() / 4,
        PyValue::BigInt(b) => super::value::decimal_work(b),
        PyValue::List(vs) | PyValue::Tuple(vs) | PyValue::Set(vs) | PyValue::FrozenSet(vs) => {
            all(vs)
        }
        PyValue::Dict(d) => pairs(d),
        PyValue::Object(o) => {
            all(&o.args)
                + o.kwargs.as_deref().map_or(0, pairs)
                + o.state.as_ref().map_or(0, repr_work)
                + all(&o.list_items)
                + pairs(&o.dict_items)
        }
        _ => 0,
    }
}

/// Takes the work of walking `values` for their `repr`, or refuses one
/// that would be too long before it is made.
fn repr_cost<'a>(
    values: impl Iterator<Item = &'a PyValue>,
    budget: &mut Budget,
) -> std::result::Result<(), Exception> {
    let mut bound = 2usize;
    for v in values {
        budget.work(repr_work(v))?;
        bound = bound.saturating_add(repr_bound(v)).saturating_add(4);
    }
    if bound > REPR_MAX {
        return Err(too_large());
    }
    Ok(())
}

/// Python's `repr` of a dict (`{'a': 1}`) or of a namespace
/// (`Namespace(a=1, b='x')`), within the request's budget.
fn repr_dict(kind: Kind, d: &Map, budget: &mut Budget) -> OpResult {
    repr_cost(d.iter().flat_map(|(k, v)| [k, v]), budget)?;
    answer_str(dict_repr(kind, d.iter()), budget)
}

/// Python's `repr` of a dict's items (`{'a': 1}`) or of a namespace's
/// (`Namespace(a=1, b='x')`: names that start with `_` hidden, the others
/// sorted as their `name=value` strings, as `Namespace.__repr__` does);
/// also what the Redis backend answers.
pub(crate) fn dict_repr<'a>(
    kind: Kind,
    items: impl Iterator<Item = (&'a PyValue, &'a PyValue)>,
) -> String {
    if kind == Kind::Namespace {
        let mut shown: Vec<String> = items
            .filter_map(|(k, v)| match k {
                PyValue::Str(name) if name.starts_with('_') => None,
                PyValue::Str(name) => Some(format!("{name}={v}")),
                other => Some(format!("{other}={v}")),
            })
            .collect();
        shown.sort();
        format!("Namespace({})", shown.join(", "))
    } else {
        let shown: Vec<String> = items.map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{{}}}", shown.join(", "))
    }
}

/// Python's `repr` of a list: `[1, 'a']`.
fn repr_list(l: &[PyValue], budget: &mut Budget) -> OpResult {
    repr_cost(l.iter(), budget)?;
    let items: Vec<String> = l.iter().map(PyValue::to_string).collect();
    answer_str(format!("[{}]", items.join(", ")), budget)
}

/// `text` as an answer, taken from `budget`.
fn answer_str(text: String, budget: &mut Budget) -> OpResult {
    let text = PyValue::Str(text);
    budget.charge([&text])?;
    Ok(text)
}

fn too_large() -> Exception {
    (
        "MemoryError",
        "the answer would exceed the frame limit; ask for less at a time".into(),
    )
}

/// A copy of a dict's (or a namespace's) items.
fn copy_items(
    d: &Map,
    budget: &mut Budget,
) -> std::result::Result<Vec<(PyValue, PyValue)>, Exception> {
    budget.charge(d.iter().flat_map(|(k, v)| [k, v]))?;
    Ok(d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A copy of a dict's (or a namespace's) items, as a dict.
fn copy_of(d: &Map, budget: &mut Budget) -> OpResult {
    copy_items(d, budget).map(PyValue::Dict)
}

/// `multiprocessing.managers.Namespace` with the attributes `attrs`, as
/// Python's client rebuilds it from `#GETVALUE`.
fn namespace(attrs: Vec<(PyValue, PyValue)>) -> PyValue {
    PyValue::Object(Box::new(PyObject::instance(
        "multiprocessing.managers",
        "Namespace",
        Vec::new(),
        Some(PyValue::Dict(attrs)),
    )))
}

/// `iter(items)`: an iterator for the client (what a dict's `__reversed__`
/// answers).
fn iterator(items: Vec<PyValue>) -> PyValue {
    PyValue::Object(Box::new(PyObject::call(
        "builtins",
        "iter",
        vec![PyValue::List(items)],
    )))
}

/// A new dict of `items` (later ones replacing the values of earlier
/// equal keys, which keep their place), with `hasher`'s key.
fn dict_of(items: impl IntoIterator<Item = (PyValue, PyValue)>, hasher: &Keyed) -> PyValue {
    let mut m = Map::with_hasher(hasher.clone());
    m.extend(items);
    PyValue::Dict(m.into_iter().collect())
}

/// Applies `op` to `object`, a `kind` object; the answer's copies of
/// stored values are taken from `budget` before they are made. The
/// exception's arguments are flattened to a message. (The server sends
/// `run`'s exceptions whole; this is the tests' shorthand.)
#[cfg(test)]
fn apply(kind: Kind, object: &mut Object, op: Op, budget: &mut Budget) -> OpResult {
    run(kind, object, op, budget).map_err(Raised::into_exception)
}

/// Applies `op` to `object`, a `kind` object; the answer's copies of
/// stored values are taken from `budget` before they are made.
pub(super) fn run(
    kind: Kind,
    object: &mut Object,
    op: Op,
    budget: &mut Budget,
) -> std::result::Result<PyValue, Raised> {
    match object {
        Object::Dict(d) => dict(kind, d, op, budget),
        Object::List(l) => list(kind, l, op, budget),
    }
}

/// The `AttributeError` of a namespace without the attribute `name`.
fn no_attribute(name: &PyValue) -> Raised {
    let name = match name {
        PyValue::Str(s) => s.clone(),
        other => other.to_string(),
    };
    Raised::from((
        "AttributeError",
        format!("'Namespace' object has no attribute '{name}'"),
    ))
}

/// The error of a missing key: a `KeyError`, or a namespace's `AttributeError`.
fn missing(kind: Kind, key: PyValue) -> Raised {
    match kind {
        Kind::Namespace => no_attribute(&key),
        _ => Raised::key_error(key),
    }
}

fn not_an_operation(kind: Kind, op: &Op) -> Raised {
    Raised::from(type_error(format!(
        "{} is not an operation of a {kind:?}",
        op.name()
    )))
}

/// An operation on a dict or a namespace.
fn dict(
    kind: Kind,
    d: &mut Map,
    op: Op,
    budget: &mut Budget,
) -> std::result::Result<PyValue, Raised> {
    Ok(match op {
        Op::Len => PyValue::Int(d.len() as i64),
        Op::Clear => {
            d.clear();
            PyValue::None
        }
        Op::Snapshot | Op::Copy => copy_of(d, budget)?,
        Op::GetValue if kind == Kind::Namespace => namespace(copy_items(d, budget)?),
        Op::GetValue => copy_of(d, budget)?,
        Op::Repr => repr_dict(kind, d, budget)?,
        Op::Get(k) => match d.get(&k) {
            Some(v) => {
                budget.charge([v])?;
                v.clone()
            }
            None => {
                hashable(&k)?;
                return Err(missing(kind, k));
            }
        },
        Op::Lookup(k) => lookup_or(d, &k, || PyValue::None, budget)?,
        Op::LookupMany(keys) => {
            budget.work(keys.len())?;
            let mut found = Vec::with_capacity(keys.len());
            for k in &keys {
                found.push(lookup_or(d, k, || PyValue::None, budget)?);
            }
            super::value::drop_values(keys);
            PyValue::List(found)
        }
        Op::LookupOr(k, default) => lookup_or(d, &k, || default, budget)?,
        Op::Set(k, v) => {
            hashable(&k)?;
            d.insert(k, v);
            PyValue::None
        }
        Op::Del(k) => match remove_key(d, hashed(&k)?, budget)? {
            Some(_) => PyValue::None,
            None => return Err(missing(kind, k)),
        },
        Op::Pop(k) => {
            popped(d, &k)?;
            budget.charge(d.get(&k))?;
            match remove_key(d, &k, budget)? {
                Some(v) => v,
                None => return Err(Raised::key_error(k)),
            }
        }
        Op::Discard(k) => {
            popped(d, &k)?;
            budget.charge(d.get(&k))?;
            remove_key(d, &k, budget)?.unwrap_or(PyValue::None)
        }
        Op::PopOr(k, default) => {
            popped(d, &k)?;
            budget.charge(d.get(&k))?;
            remove_key(d, &k, budget)?.unwrap_or(default)
        }
        Op::PopItem => {
            budget.charge(d.last().into_iter().flat_map(|(k, v)| [k, v]))?;
            match d.pop() {
                Some((k, v)) => PyValue::Tuple(vec![k, v]),
                None => {
                    return Err(Raised::from((
                        "KeyError",
                        "popitem(): dictionary is empty".into(),
                    )))
                }
            }
        }
        Op::SetDefault(k, v) => {
            hashable(&k)?;
            budget.charge([d.get(&k).unwrap_or(&v)])?;
            d.entry(k).or_insert(v).clone()
        }
        Op::Contains(k) => {
            let found = d.contains_key(&k);
            if !found {
                hashable(&k)?;
            }
            PyValue::Bool(found)
        }
        Op::Keys => {
            budget.charge(d.keys())?;
            PyValue::List(d.keys().cloned().collect())
        }
        Op::Iter => {
            budget.charge(d.keys())?;
            iterator(d.keys().cloned().collect())
        }
        Op::Reversed => {
            budget.charge(d.keys())?;
            iterator(d.keys().rev().cloned().collect())
        }
        Op::Values => {
            budget.charge(d.values())?;
            PyValue::List(d.values().cloned().collect())
        }
        Op::Items => {
            // A tuple of two for each item, around the copies.
            let pair = PyValue::Tuple(Vec::new());
            budget.charge(d.iter().flat_map(|(k, v)| [&pair, k, v]))?;
            PyValue::List(
                d.iter()
                    .map(|(k, v)| PyValue::Tuple(vec![k.clone(), v.clone()]))
                    .collect(),
            )
        }
        Op::Update(items) => {
            // Room for every item at once, as Python's `update` makes it
            // (rather than growing the table a few times on the way).
            d.reserve(items.len());
            insert_all(d, items)?;
            PyValue::None
        }
        Op::UpdateWith(Some(PyValue::Dict(items)), kwds) => {
            // A dict's keys are all hashable in Python (its unpickler
            // would refuse the request): none is inserted if one is not.
            // Its items may set a key twice (`pickle::loads_request`):
            // inserted in order, the key stays where first set.
            items.iter().try_for_each(|(k, _)| hashable(k))?;
            d.reserve(items.len() + kwds.len());
            for (k, v) in items {
                d.insert(k, v);
            }
            d.extend(kwds);
            PyValue::None
        }
        Op::UpdateWith(other, kwds) => {
            // Python inserts the pairs before an item that is not one.
            let (pairs, end) = match other {
                Some(other) => pairs_until(other, budget),
                None => (Vec::new(), Ok(())),
            };
            d.reserve(pairs.len() + kwds.len());
            insert_all(d, pairs)?;
            end?;
            d.extend(kwds);
            PyValue::None
        }
        Op::Or(other) | Op::ROr(other) if !matches!(other, PyValue::Dict(_)) => {
            return Err(Raised::from(type_error(format!(
                "unsupported operand type(s) for |: 'dict' and '{}'",
                other.type_name()
            ))))
        }
        Op::Or(PyValue::Dict(other)) => {
            budget.charge(d.iter().flat_map(|(k, v)| [k, v]))?;
            let mine = d.iter().map(|(k, v)| (k.clone(), v.clone()));
            dict_of(mine.chain(other), d.hasher())
        }
        Op::ROr(PyValue::Dict(other)) => {
            budget.charge(d.iter().flat_map(|(k, v)| [k, v]))?;
            let mine = d.iter().map(|(k, v)| (k.clone(), v.clone()));
            dict_of(other.into_iter().chain(mine), d.hasher())
        }
        Op::FromKeys(keys, value) => {
            let keys = items_of(keys, budget)?;
            keys.iter().try_for_each(hashable)?;
            budget.charge(keys.iter().map(|_| &value))?;
            dict_of(keys.into_iter().map(|k| (k, value.clone())), d.hasher())
        }
        Op::Increment(k, delta) => {
            hashable(&k)?;
            let new = match d.get(&k) {
                Some(old) => add(old, &delta)?,
                None => add(&PyValue::Int(0), &delta)?,
            };
            d.insert(k, new.clone());
            new
        }
        Op::CompareAndSet(k, expected, new) => {
            hashable(&k)?;
            if let (Some(stored), Some(expected)) = (d.get(&k), &expected) {
                scan(std::slice::from_ref(stored), expected, budget)?;
            }
            let matches = d.get(&k) == expected.as_ref();
            if matches {
                d.insert(k, new);
            }
            PyValue::Bool(matches)
        }
        op => return Err(not_an_operation(kind, &op)),
    })
}

/// `d.get(k, default)`; the default is made only for a key not there (a
/// batch of lookups would otherwise drop one for every key found).
fn lookup_or(
    d: &Map,
    k: &PyValue,
    default: impl FnOnce() -> PyValue,
    budget: &mut Budget,
) -> OpResult {
    match d.get(k) {
        Some(v) => {
            budget.charge_value(v)?;
            Ok(v.clone())
        }
        None => absent(k, default()),
    }
}

/// [`lookup_or`]'s answer for a missing key: `default`, or the
/// `TypeError` of a key Python cannot hash. Out of line: the lookups that
/// find their key compile as they did without it.
#[cold]
#[inline(never)]
fn absent(k: &PyValue, default: PyValue) -> OpResult {
    hashable(k)?;
    Ok(default)
}

/// An operation on a list.
fn list(
    kind: Kind,
    l: &mut Vec<PyValue>,
    op: Op,
    budget: &mut Budget,
) -> std::result::Result<PyValue, Raised> {
    Ok(match op {
        Op::Len => PyValue::Int(l.len() as i64),
        Op::Clear => {
            l.clear();
            PyValue::None
        }
        Op::Snapshot | Op::GetValue | Op::Copy => {
            budget.charge(l.iter())?;
            PyValue::List(l.clone())
        }
        Op::Iter => {
            budget.charge(l.iter())?;
            iterator(l.clone())
        }
        Op::Reversed => {
            budget.charge(l.iter())?;
            // As CPython pickles a `list_reverseiterator`: `reversed(list)`.
            PyValue::Object(Box::new(PyObject::call(
                "builtins",
                "reversed",
                vec![PyValue::List(l.clone())],
            )))
        }
        Op::Repr => repr_list(l, budget)?,
        Op::Get(k) => match slice_of(&k) {
            Some(s) => get_slice(l, s?, budget)?,
            None => {
                let v = &l[index(&k, l.len(), GET_RANGE)?];
                budget.charge([v])?;
                v.clone()
            }
        },
        Op::Set(k, v) => {
            match slice_of(&k) {
                Some(s) => {
                    let s = s?;
                    let items = items_of(v, budget).map_err(|(class, message)| match class {
                        "TypeError" => type_error("must assign iterable to extended slice".into()),
                        _ => (class, message),
                    })?;
                    set_slice(l, s, items, budget)?;
                }
                None => {
                    let i = index(&k, l.len(), SET_RANGE)?;
                    l[i] = v;
                }
            }
            PyValue::None
        }
        Op::Del(k) => {
            match slice_of(&k) {
                Some(s) => del_slice(l, s?, budget)?,
                None => {
                    let i = index(&k, l.len(), SET_RANGE)?;
                    budget.work(l.len() - i)?;
                    l.remove(i);
                }
            }
            PyValue::None
        }
        Op::Pop(k) => {
            let i = match int_of(&k) {
                Some(Ok(i)) => i,
                _ => {
                    return Err(Raised::from(type_error(format!(
                        "'{}' object cannot be interpreted as an integer",
                        k.type_name()
                    ))))
                }
            };
            if l.is_empty() {
                return Err(Raised::from(index_error("pop from empty list")));
            }
            let i = index(&PyValue::Int(i), l.len(), "pop index out of range")?;
            budget.charge([&l[i]])?;
            budget.work(l.len() - i)?;
            l.remove(i)
        }
        Op::Contains(v) => {
            scan(l, &v, budget)?;
            PyValue::Bool(l.contains(&v))
        }
        Op::Increment(k, delta) => {
            let i = index(&k, l.len(), GET_RANGE)?;
            l[i] = add(&l[i], &delta)?;
            l[i].clone()
        }
        Op::CompareAndSet(k, expected, new) => {
            let i = index(&k, l.len(), GET_RANGE)?;
            if let Some(expected) = &expected {
                scan(std::slice::from_ref(&l[i]), expected, budget)?;
            }
            let matches = Some(&l[i]) == expected.as_ref();
            if matches {
                l[i] = new;
            }
            PyValue::Bool(matches)
        }
        Op::Append(v) => {
            l.push(v);
            PyValue::None
        }
        Op::Extend(vs) => {
            l.extend(vs);
            PyValue::None
        }
        Op::ExtendWith(v) => {
            let vs = items_of(v, budget)?;
            l.extend(vs);
            PyValue::None
        }
        Op::Insert(i, v) => {
            // Python clamps an insert index to the list.
            let len = l.len() as i64;
            let at = if i < 0 { (i + len).max(0) } else { i.min(len) } as usize;
            budget.work(l.len() - at)?;
            l.insert(at, v);
            PyValue::None
        }
        Op::Remove(v) => {
            scan(l, &v, budget)?;
            match l.iter().position(|x| *x == v) {
                Some(i) => {
                    l.remove(i);
                    PyValue::None
                }
                None => {
                    return Err(Raised::from((
                        "ValueError",
                        "list.remove(x): x not in list".into(),
                    )))
                }
            }
        }
        Op::Index(v) => index_in(l, v, 0, i64::MAX, budget)?,
        Op::IndexIn(v, start, stop) => index_in(l, v, start, stop, budget)?,
        Op::Count(v) => {
            scan(l, &v, budget)?;
            PyValue::Int(l.iter().filter(|x| **x == v).count() as i64)
        }
        Op::Reverse => {
            budget.work(l.len())?;
            l.reverse();
            PyValue::None
        }
        Op::Sort => {
            sort_list(l, budget)?;
            PyValue::None
        }
        Op::SortReverse => {
            // Python's: reversed, sorted stably, reversed again, so that
            // equal items keep their order.
            budget.work(2 * l.len())?;
            l.reverse();
            let sorted = sort_list(l, budget);
            l.reverse();
            sorted?;
            PyValue::None
        }
        Op::Slice(a, b) => {
            let len = l.len() as i64;
            let clamp = |i: i64| (if i < 0 { i + len } else { i }).clamp(0, len) as usize;
            let (a, b) = (clamp(a), clamp(b));
            let items = l.get(a..b).unwrap_or_default();
            budget.charge(items)?;
            PyValue::List(items.to_vec())
        }
        Op::Add(other) => {
            let PyValue::List(other) = other else {
                return Err(Raised::from(type_error(format!(
                    "can only concatenate list (not \"{}\") to list",
                    other.type_name()
                ))));
            };
            budget.charge(l.iter())?;
            let mut sum = Vec::with_capacity(l.len() + other.len());
            sum.extend(l.iter().cloned());
            sum.extend(other);
            PyValue::List(sum)
        }
        Op::Mul(n) => PyValue::List(repeat(l, n, budget)?),
        Op::IMul(n) => {
            if n <= 0 {
                l.clear();
            } else if n > 1 {
                let more = repeat(l, n - 1, budget)?;
                l.extend(more);
            }
            PyValue::None
        }
        op => return Err(not_an_operation(kind, &op)),
    })
}

/// `l * n`: the copies are taken from `budget` before they are made, so
/// that `l * 10**12` is a `MemoryError`, not an allocation.
fn repeat(
    l: &[PyValue],
    n: i64,
    budget: &mut Budget,
) -> std::result::Result<Vec<PyValue>, Exception> {
    let n = usize::try_from(n).unwrap_or(0);
    if l.is_empty() || n == 0 {
        return Ok(Vec::new());
    }
    // Each pass takes at least a value's size per item: this ends once
    // the budget is out, long before `n` passes if `n` is huge.
    for _ in 0..n {
        budget.charge(l.iter())?;
    }
    budget.work(l.len().saturating_mul(n))?;
    let mut out = Vec::with_capacity(l.len() * n);
    for _ in 0..n {
        out.extend(l.iter().cloned());
    }
    Ok(out)
}

/// `l.index(v, start, stop)`, the bounds as Python reads them.
fn index_in(l: &[PyValue], v: PyValue, start: i64, stop: i64, budget: &mut Budget) -> OpResult {
    let len = l.len() as i64;
    let bound = |i: i64| (if i < 0 { (i + len).max(0) } else { i.min(len) }) as usize;
    let (start, stop) = (bound(start), bound(stop));
    let range = l.get(start..stop).unwrap_or_default();
    scan(range, &v, budget)?;
    range
        .iter()
        .position(|x| *x == v)
        .map(|i| PyValue::Int((start + i) as i64))
        .ok_or_else(|| ("ValueError", format!("{} is not in list", v.repr())))
}

/// `l.sort()`, its work taken from `budget` first.
fn sort_list(l: &mut Vec<PyValue>, budget: &mut Budget) -> std::result::Result<(), Exception> {
    // Each of about n log n comparisons walks at most the smaller of two
    // items.
    let mut widest = 0;
    for v in l.iter() {
        let size = limits::compare_cost(v).saturating_mul(limits::other_side_weight(v).max(1));
        budget.work(size)?;
        widest = widest.max(size);
    }
    let n = l.len();
    let compares = n.saturating_mul(n.max(2).ilog2() as usize + 1);
    budget.work(compares.saturating_mul(widest))?;
    sort(l).map_err(type_error)
}

/// Takes the work of comparing `probe` with every item of `items`.
fn scan(
    items: &[PyValue],
    probe: &PyValue,
    budget: &mut Budget,
) -> std::result::Result<(), Exception> {
    let weight = limits::other_side_weight(probe);
    let cost = limits::compare_cost(probe).saturating_mul(weight.max(1));
    budget.work(items.len().saturating_mul(cost))?;
    // A set or dict compared with one of as many items hashes all of the
    // other's, a path normalises the other's: the items' own sizes bound
    // that.
    for item in items {
        let Some(left) = budget.work_left().checked_div(weight) else {
            break;
        };
        let size = limits::size_up_to(item, left);
        budget.work(size.saturating_mul(weight))?;
    }
    Ok(())
}

/// `d.pop(k)` keeping the order of the others, which moves those after it.
fn remove_key(
    d: &mut Map,
    k: &PyValue,
    budget: &mut Budget,
) -> std::result::Result<Option<PyValue>, Exception> {
    let Some(i) = d.get_index_of(k) else {
        return Ok(None);
    };
    budget.work(d.len() - i)?;
    Ok(d.shift_remove_index(i).map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::methods::parse;

    /// A budget far from any limit.
    fn budget() -> Budget {
        Budget::new(usize::MAX / 2, usize::MAX / 2)
    }

    fn dict() -> Object {
        Object::Dict(Map::with_hasher(keyed()))
    }

    fn ints(v: &[i64]) -> Vec<PyValue> {
        v.iter().map(|&i| PyValue::Int(i)).collect()
    }

    fn five() -> Object {
        Object::List(ints(&[0, 1, 2, 3, 4]))
    }

    fn s(v: &str) -> PyValue {
        PyValue::from(v)
    }

    /// Applies `op` to `object` as a `kind`: the answer, or the exception's class.
    fn run_op(kind: Kind, object: &mut Object, op: Op) -> Result<PyValue, &'static str> {
        apply(kind, object, op, &mut budget()).map_err(|(class, _)| class)
    }

    /// Calls `method` as a Python client would: the answer, or the exception.
    fn call(
        kind: Kind,
        object: &mut Object,
        method: &str,
        args: Vec<PyValue>,
    ) -> Result<PyValue, Exception> {
        let op = parse(kind, method, args, Vec::new())?;
        apply(kind, object, op, &mut budget())
    }

    fn err(class: &'static str, message: &str) -> Result<PyValue, Exception> {
        Err((class, message.into()))
    }

    /// The items of an `iter(list)` answer.
    fn iterated(answer: Result<PyValue, Exception>) -> Vec<PyValue> {
        match answer {
            Ok(PyValue::Object(o)) if o.is_builtin("iter") => match &o.args[..] {
                [PyValue::List(items)] => items.clone(),
                _ => panic!("iter of {:?}", o.args),
            },
            other => panic!("not an iterator: {other:?}"),
        }
    }

    /// `slice(start, stop, step)` as a client pickles it.
    fn slice(start: PyValue, stop: PyValue, step: PyValue) -> PyValue {
        PyValue::Object(Box::new(PyObject::call(
            "builtins",
            "slice",
            vec![start, stop, step],
        )))
    }

    /// 2**64 (`negative`: -2**64), an int beyond `i64`.
    fn big(negative: bool) -> PyValue {
        let mut b = vec![0u8; 8];
        b.push(if negative { 0xff } else { 1 });
        PyValue::BigInt(b)
    }

    fn contents(o: &Object) -> PyValue {
        match o {
            Object::List(l) => PyValue::List(l.clone()),
            Object::Dict(d) => {
                PyValue::Dict(d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
        }
    }

    #[test]
    fn dict_operations_are_pythons() {
        let mut d = dict();
        let k = |s: &str| PyValue::from(s);
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Set(k("a"), 1.into())),
            Ok(PyValue::None)
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Set(2.into(), k("b"))),
            Ok(PyValue::None)
        );
        assert_eq!(run_op(Kind::Dict, &mut d, Op::Len), Ok(2.into()));
        assert_eq!(run_op(Kind::Dict, &mut d, Op::Get(2.0.into())), Ok(k("b")));
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Get(k("zz"))),
            Err("KeyError")
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Lookup(k("zz"))),
            Ok(PyValue::None)
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Increment(k("a"), 2.5.into())),
            Ok(3.5.into())
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Increment(k("n"), 1.into())),
            Ok(1.into())
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Increment(2.into(), 1.into())),
            Err("TypeError")
        );
        // Past 64 bits, a Python int.
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Increment(k("big"), i64::MAX.into())),
            Ok(i64::MAX.into())
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Increment(k("big"), 1.into())),
            Ok(PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]))
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Increment(k("big"), (-1).into())),
            Ok(i64::MAX.into())
        );
        assert_eq!(
            run_op(
                Kind::Dict,
                &mut d,
                Op::Increment(
                    k("big"),
                    PyValue::BigInt(vec![0; 16].into_iter().chain([0x40]).collect())
                )
            ),
            Err("OverflowError")
        );
        assert_eq!(
            int_value(i128::from(i64::MIN) - 1),
            PyValue::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff])
        );
        assert_eq!(
            int_value(-(1 << 100)),
            PyValue::BigInt({
                let mut b = vec![0u8; 12];
                b.push(0xf0);
                b
            })
        );
        run_op(Kind::Dict, &mut d, Op::Del(k("big"))).unwrap();
        assert_eq!(
            run_op(
                Kind::Dict,
                &mut d,
                Op::CompareAndSet(k("n"), Some(1.into()), 5.into())
            ),
            Ok(true.into())
        );
        assert_eq!(
            run_op(
                Kind::Dict,
                &mut d,
                Op::CompareAndSet(k("n"), None, 6.into())
            ),
            Ok(false.into())
        );
        // Insertion order, kept by a removal.
        assert_eq!(run_op(Kind::Dict, &mut d, Op::Pop(2.into())), Ok(k("b")));
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Keys),
            Ok(PyValue::List(vec![k("a"), k("n")]))
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::PopItem),
            Ok(PyValue::Tuple(vec![k("n"), 5.into()]))
        );
        assert_eq!(
            run_op(Kind::Dict, &mut d, Op::Append(1.into())),
            Err("TypeError")
        );
        assert_eq!(
            run_op(Kind::Namespace, &mut d, Op::Get(k("missing"))),
            Err("AttributeError")
        );
    }

    #[test]
    fn dict_methods_answer_as_pythons() {
        let mut d = dict();
        let k = Kind::Dict;
        for (key, v) in [("a", 1), ("b", 2)] {
            call(k, &mut d, "__setitem__", vec![s(key), v.into()]).unwrap();
        }
        assert_eq!(call(k, &mut d, "get", vec![s("x"), 0.into()]), Ok(0.into()));
        assert_eq!(call(k, &mut d, "get", vec![s("a"), 0.into()]), Ok(1.into()));
        assert_eq!(call(k, &mut d, "pop", vec![s("x"), 7.into()]), Ok(7.into()));
        assert_eq!(
            call(k, &mut d, "setdefault", vec![s("c")]),
            Ok(PyValue::None)
        );
        assert_eq!(
            call(k, &mut d, "__contains__", vec![s("c")]),
            Ok(true.into())
        );
        assert_eq!(
            call(k, &mut d, "__delitem__", vec![s("c")]),
            Ok(PyValue::None)
        );
        // KeyError carries the key itself.
        for method in ["__getitem__", "__delitem__", "pop"] {
            let op = parse(k, method, vec![s("x")], vec![]).unwrap();
            assert_eq!(
                run(k, &mut d, op, &mut budget()),
                Err(Raised {
                    class: "KeyError",
                    args: vec![s("x")]
                })
            );
        }
        assert_eq!(
            call(k, &mut d, "__getitem__", vec![s("x")]),
            err("KeyError", "'x'")
        );
        assert_eq!(
            call(k, &mut d, "items", vec![]),
            Ok(PyValue::List(vec![(s("a"), 1).into(), (s("b"), 2).into()]))
        );
        assert_eq!(
            call(k, &mut d, "values", vec![]),
            Ok(PyValue::from(vec![1, 2]))
        );
        assert_eq!(
            iterated(call(k, &mut d, "__reversed__", vec![])),
            vec![s("b"), s("a")]
        );
        assert_eq!(
            iterated(call(k, &mut d, "__iter__", vec![])),
            vec![s("a"), s("b")]
        );
        assert_eq!(
            call(k, &mut d, "copy", vec![]),
            Ok(PyValue::dict([("a", 1), ("b", 2)]))
        );
        assert_eq!(
            call(k, &mut d, "__repr__", vec![]),
            Ok(s("{'a': 1, 'b': 2}"))
        );
        assert_eq!(
            call(k, &mut d, "#GETVALUE", vec![]),
            Ok(PyValue::dict([("a", 1), ("b", 2)]))
        );
        // update: a dict, pairs of any iterable shape, keywords.
        let op = parse(
            k,
            "update",
            vec![PyValue::List(vec![
                (s("c"), 3).into(),
                PyValue::List(vec![s("d"), 4.into()]),
                s("ef"),
            ])],
            vec![(s("g"), 5.into())],
        )
        .unwrap();
        apply(k, &mut d, op, &mut budget()).unwrap();
        assert_eq!(
            call(k, &mut d, "__repr__", vec![]),
            Ok(s("{'a': 1, 'b': 2, 'c': 3, 'd': 4, 'e': 'f', 'g': 5}"))
        );
        assert_eq!(
            call(k, &mut d, "update", vec![1.into()]),
            err("TypeError", "'int' object is not iterable")
        );
        assert_eq!(
            call(k, &mut d, "update", vec![PyValue::from(vec![1])]),
            err(
                "TypeError",
                "cannot convert dictionary update sequence element #0 to a sequence"
            )
        );
        assert_eq!(
            call(
                k,
                &mut d,
                "update",
                vec![PyValue::List(vec![PyValue::from(vec![1, 2, 3])])]
            ),
            err(
                "ValueError",
                "dictionary update sequence element #0 has length 3; 2 is required"
            )
        );
        call(k, &mut d, "clear", vec![]).unwrap();
        assert_eq!(
            call(k, &mut d, "popitem", vec![]),
            // str(KeyError(...)) is the repr of its argument.
            err("KeyError", "'popitem(): dictionary is empty'")
        );
        assert_eq!(call(k, &mut d, "__len__", vec![]), Ok(0.into()));
    }

    #[test]
    fn dict_union_and_fromkeys_are_314s() {
        let mut d = dict();
        let k = Kind::Dict;
        call(
            k,
            &mut d,
            "update",
            vec![PyValue::dict([("a", 1), ("b", 2)])],
        )
        .unwrap();
        assert_eq!(
            call(
                k,
                &mut d,
                "__or__",
                vec![PyValue::dict([("a", 9), ("c", 3)])]
            ),
            Ok(PyValue::dict([("a", 9), ("b", 2), ("c", 3)]))
        );
        assert_eq!(
            call(
                k,
                &mut d,
                "__ror__",
                vec![PyValue::dict([("z", 0), ("a", 5)])]
            ),
            Ok(PyValue::dict([("z", 0), ("a", 1), ("b", 2)]))
        );
        assert_eq!(
            call(k, &mut d, "__or__", vec![1.into()]),
            err(
                "TypeError",
                "unsupported operand type(s) for |: 'dict' and 'int'"
            )
        );
        assert_eq!(
            call(
                k,
                &mut d,
                "__ior__",
                vec![PyValue::List(vec![(1, 2).into()])]
            ),
            Ok(PyValue::None)
        );
        assert_eq!(call(k, &mut d, "__getitem__", vec![1.into()]), Ok(2.into()));
        assert_eq!(
            call(k, &mut d, "__ior__", vec![1.into()]),
            err("TypeError", "'int' object is not iterable")
        );
        assert_eq!(
            call(k, &mut d, "fromkeys", vec![s("aba"), 0.into()]),
            Ok(PyValue::dict([("a", 0), ("b", 0)]))
        );
        assert_eq!(
            call(k, &mut d, "fromkeys", vec![PyValue::from(vec![1, 2])]),
            Ok(PyValue::Dict(vec![
                (1.into(), PyValue::None),
                (2.into(), PyValue::None)
            ]))
        );
        assert_eq!(
            call(k, &mut d, "fromkeys", vec![1.into()]),
            err("TypeError", "'int' object is not iterable")
        );
    }

    #[test]
    fn namespace_is_pythons() {
        let mut n = dict();
        let k = Kind::Namespace;
        for (name, v) in [
            ("b", s("x")),
            ("a", 1.into()),
            ("_h", 2.into()),
            ("C", 3.into()),
        ] {
            call(k, &mut n, "__setattr__", vec![s(name), v]).unwrap();
        }
        // Sorted as `name=value` strings, `_` names hidden (checked with 3.8 and 3.13).
        assert_eq!(
            call(k, &mut n, "__str__", vec![]),
            Ok(s("Namespace(C=3, a=1, b='x')"))
        );
        assert_eq!(
            call(k, &mut n, "__getattribute__", vec![s("a")]),
            Ok(1.into())
        );
        assert_eq!(
            call(k, &mut n, "__delattr__", vec![s("a")]),
            Ok(PyValue::None)
        );
        let missing = err("AttributeError", "'Namespace' object has no attribute 'a'");
        assert_eq!(call(k, &mut n, "__getattribute__", vec![s("a")]), missing);
        assert_eq!(call(k, &mut n, "__delattr__", vec![s("a")]), missing);
        let mut bob = dict();
        call(k, &mut bob, "__setattr__", vec![s("name"), s("Bob")]).unwrap();
        call(k, &mut bob, "__setattr__", vec![s("_hidden"), s("hidden")]).unwrap();
        assert_eq!(
            call(k, &mut bob, "__str__", vec![]),
            Ok(s("Namespace(name='Bob')"))
        );
        assert_eq!(
            call(k, &mut dict(), "__repr__", vec![]),
            Ok(s("Namespace()"))
        );
        assert_eq!(
            call(k, &mut bob, "_multiproc_increment", vec![s("n"), 2.into()]),
            Ok(2.into())
        );
    }

    #[test]
    fn list_operations_are_pythons() {
        let mut l = Object::List(Vec::new());
        let k = Kind::List;
        run_op(k, &mut l, Op::Extend(ints(&[3, 1, 2]))).unwrap();
        assert_eq!(run_op(k, &mut l, Op::Get((-1).into())), Ok(2.into()));
        assert_eq!(run_op(k, &mut l, Op::Get(3.into())), Err("IndexError"));
        assert_eq!(run_op(k, &mut l, Op::Get("0".into())), Err("TypeError"));
        // An insert index is clamped, as in Python.
        run_op(k, &mut l, Op::Insert(-100, 0.into())).unwrap();
        run_op(k, &mut l, Op::Insert(100, 9.into())).unwrap();
        run_op(k, &mut l, Op::Sort).unwrap();
        assert_eq!(
            run_op(k, &mut l, Op::Snapshot),
            Ok(PyValue::from(vec![0, 1, 2, 3, 9]))
        );
        assert_eq!(
            run_op(k, &mut l, Op::Slice(-3, 100)),
            Ok(PyValue::from(vec![2, 3, 9]))
        );
        assert_eq!(run_op(k, &mut l, Op::Index(9.0.into())), Ok(4.into()));
        assert_eq!(run_op(k, &mut l, Op::Remove(7.into())), Err("ValueError"));
        assert_eq!(run_op(k, &mut l, Op::Pop((-1).into())), Ok(9.into()));
        run_op(k, &mut l, Op::Reverse).unwrap();
        assert_eq!(
            run_op(k, &mut l, Op::Snapshot),
            Ok(PyValue::from(vec![3, 2, 1, 0]))
        );
        run_op(k, &mut l, Op::Clear).unwrap();
        assert_eq!(run_op(k, &mut l, Op::Pop((-1).into())), Err("IndexError"));
        assert_eq!(run_op(k, &mut l, Op::Keys), Err("TypeError"));
    }

    /// Each expected answer and message is CPython 3.13's for the same call
    /// on `[0, 1, 2, 3, 4]` (and 3.8's, but for the prefixes noted in `methods`).
    #[test]
    fn list_methods_answer_as_pythons() {
        let k = Kind::List;
        let on_five = |method: &str, args: Vec<PyValue>| call(k, &mut five(), method, args);
        let after = |method: &str, args: Vec<PyValue>| {
            let mut l = five();
            call(k, &mut l, method, args).map(|_| contents(&l))
        };
        let list = |v: Vec<PyValue>| Ok(PyValue::List(v));
        assert_eq!(
            on_five("__getitem__", vec![9.into()]),
            err("IndexError", "list index out of range")
        );
        assert_eq!(on_five("__getitem__", vec![true.into()]), Ok(1.into()));
        assert_eq!(on_five("__getitem__", vec![(-5).into()]), Ok(0.into()));
        assert_eq!(
            on_five("__getitem__", vec![s("a")]),
            err(
                "TypeError",
                "list indices must be integers or slices, not str"
            )
        );
        assert_eq!(
            on_five("__getitem__", vec![PyValue::None]),
            err(
                "TypeError",
                "list indices must be integers or slices, not NoneType"
            )
        );
        assert_eq!(
            on_five("__setitem__", vec![9.into(), 1.into()]),
            err("IndexError", "list assignment index out of range")
        );
        assert_eq!(
            on_five("__delitem__", vec![9.into()]),
            err("IndexError", "list assignment index out of range")
        );
        assert_eq!(
            on_five("pop", vec![9.into()]),
            err("IndexError", "pop index out of range")
        );
        assert_eq!(on_five("pop", vec![true.into()]), Ok(1.into()));
        assert_eq!(
            call(k, &mut Object::List(vec![]), "pop", vec![]),
            err("IndexError", "pop from empty list")
        );
        assert_eq!(
            call(k, &mut Object::List(vec![]), "pop", vec![3.into()]),
            err("IndexError", "pop from empty list")
        );
        assert_eq!(
            on_five("remove", vec![9.into()]),
            err("ValueError", "list.remove(x): x not in list")
        );
        assert_eq!(
            on_five("index", vec![9.into()]),
            err("ValueError", "9 is not in list")
        );
        assert_eq!(
            on_five("index", vec![s("x")]),
            err("ValueError", "'x' is not in list")
        );
        assert_eq!(
            on_five("index", vec![3.into(), (-3).into(), i64::MAX.into()]),
            Ok(3.into())
        );
        assert_eq!(
            on_five("index", vec![4.into(), 0.into(), (-1).into()]),
            err("ValueError", "4 is not in list")
        );
        assert_eq!(on_five("index", vec![1.into(), true.into()]), Ok(1.into()));
        assert_eq!(
            on_five("index", vec![0.into(), 1.into()]),
            err("ValueError", "0 is not in list")
        );
        assert_eq!(on_five("count", vec![1.0.into()]), Ok(1.into()));
        assert_eq!(on_five("__contains__", vec![4.into()]), Ok(true.into()));
        assert_eq!(
            after("insert", vec![true.into(), s("x")]),
            list(vec![
                0.into(),
                s("x"),
                1.into(),
                2.into(),
                3.into(),
                4.into()
            ])
        );
        assert_eq!(
            after("insert", vec![i64::MAX.into(), 9.into()]),
            list(ints(&[0, 1, 2, 3, 4, 9]))
        );
        assert_eq!(
            after("insert", vec![i64::MIN.into(), 9.into()]),
            list(ints(&[9, 0, 1, 2, 3, 4]))
        );
        assert_eq!(
            after("extend", vec![s("ab")]),
            list(vec![
                0.into(),
                1.into(),
                2.into(),
                3.into(),
                4.into(),
                s("a"),
                s("b")
            ])
        );
        assert_eq!(
            after("extend", vec![PyValue::dict([("k", 1)])]),
            list(vec![
                0.into(),
                1.into(),
                2.into(),
                3.into(),
                4.into(),
                s("k")
            ])
        );
        assert_eq!(
            after("extend", vec![PyValue::Bytes(vec![7])]),
            list(ints(&[0, 1, 2, 3, 4, 7]))
        );
        assert_eq!(
            on_five("extend", vec![1.into()]),
            err("TypeError", "'int' object is not iterable")
        );
        assert_eq!(
            on_five("__iadd__", vec![1.into()]),
            err("TypeError", "'int' object is not iterable")
        );
        assert_eq!(
            after("__iadd__", vec![PyValue::Tuple(ints(&[5]))]),
            list(ints(&[0, 1, 2, 3, 4, 5]))
        );
        assert_eq!(
            on_five("__add__", vec![PyValue::from(vec![9])]),
            list(ints(&[0, 1, 2, 3, 4, 9]))
        );
        assert_eq!(
            on_five("__add__", vec![PyValue::Tuple(ints(&[1]))]),
            err(
                "TypeError",
                "can only concatenate list (not \"tuple\") to list"
            )
        );
        assert_eq!(on_five("__mul__", vec![(-1).into()]), list(vec![]));
        assert_eq!(
            on_five("__mul__", vec![true.into()]),
            list(ints(&[0, 1, 2, 3, 4]))
        );
        assert_eq!(
            on_five("__rmul__", vec![2.into()]),
            list(ints(&[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]))
        );
        assert_eq!(
            after("__imul__", vec![2.into()]),
            list(ints(&[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]))
        );
        assert_eq!(after("__imul__", vec![0.into()]), list(vec![]));
        assert_eq!(
            after("__imul__", vec![1.into()]),
            list(ints(&[0, 1, 2, 3, 4]))
        );
        match on_five("__reversed__", vec![]) {
            Ok(PyValue::Object(o)) if o.is_builtin("reversed") => {
                assert_eq!(o.args, [PyValue::List(ints(&[0, 1, 2, 3, 4]))]);
            }
            other => panic!("not a reverse iterator: {other:?}"),
        }
        assert_eq!(on_five("copy", vec![]), list(ints(&[0, 1, 2, 3, 4])));
        assert_eq!(after("clear", vec![]), list(vec![]));
        assert_eq!(after("reverse", vec![]), list(ints(&[4, 3, 2, 1, 0])));
        let mixed = vec![
            0.into(),
            s("a"),
            PyValue::None,
            2.5.into(),
            PyValue::Tuple(ints(&[1])),
            PyValue::Bytes(b"x".to_vec()),
        ];
        assert_eq!(
            call(k, &mut Object::List(mixed), "__repr__", vec![]),
            Ok(s("[0, 'a', None, 2.5, (1,), b'x']"))
        );
        assert_eq!(on_five("__str__", vec![]), Ok(s("[0, 1, 2, 3, 4]")));
        assert_eq!(on_five("#GETVALUE", vec![]), list(ints(&[0, 1, 2, 3, 4])));
    }

    #[test]
    fn sorting_is_pythons() {
        let k = Kind::List;
        let sort = |items: Vec<PyValue>, reverse: bool| {
            let mut l = Object::List(items);
            let kwds = if reverse {
                vec![(s("reverse"), true.into())]
            } else {
                vec![]
            };
            let op = parse(k, "sort", vec![], kwds)?;
            apply(k, &mut l, op, &mut budget()).map(|_| contents(&l))
        };
        assert_eq!(
            sort(ints(&[3, 1, 2]), true),
            Ok(PyValue::from(vec![3, 2, 1]))
        );
        // Stable both ways: 1 and 1.0 and True keep their order.
        let ones = vec![1.into(), 1.0.into(), true.into(), 0.into()];
        let Ok(PyValue::List(up)) = sort(ones.clone(), false) else {
            panic!()
        };
        assert!(matches!(
            up[..],
            [
                PyValue::Int(0),
                PyValue::Int(1),
                PyValue::Float(_),
                PyValue::Bool(_)
            ]
        ));
        let Ok(PyValue::List(down)) = sort(ones, true) else {
            panic!()
        };
        assert!(matches!(
            down[..],
            [
                PyValue::Int(1),
                PyValue::Float(_),
                PyValue::Bool(_),
                PyValue::Int(0)
            ]
        ));
        let not_ordered = |a: &str, b: &str| {
            err(
                "TypeError",
                &format!("'<' not supported between instances of '{a}' and '{b}'"),
            )
        };
        assert_eq!(
            sort(vec![1.into(), s("a")], false),
            not_ordered("str", "int")
        );
        assert_eq!(
            sort(vec![s("a"), 1.into()], false),
            not_ordered("int", "str")
        );
        assert_eq!(
            sort(vec![PyValue::None, PyValue::None], false),
            not_ordered("NoneType", "NoneType")
        );
        assert_eq!(
            sort(vec![PyValue::None], false),
            Ok(PyValue::List(vec![PyValue::None]))
        );
        // A refused reverse sort leaves the list as it was.
        let mut l = Object::List(vec![1.into(), s("a"), 2.into()]);
        let op = parse(k, "sort", vec![], vec![(s("reverse"), true.into())]).unwrap();
        assert!(apply(k, &mut l, op, &mut budget()).is_err());
        assert_eq!(
            contents(&l),
            PyValue::List(vec![1.into(), s("a"), 2.into()])
        );
    }

    fn sl(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Slice {
        Slice { start, stop, step }
    }

    /// Slices as CPython 3.13 does them on `[0, 1, 2, 3, 4]`.
    #[test]
    fn slices_are_pythons() {
        let get = |s: Slice| get_slice(&ints(&[0, 1, 2, 3, 4]), s, &mut budget());
        let set = |s: Slice, items: Vec<PyValue>| {
            let mut l = ints(&[0, 1, 2, 3, 4]);
            set_slice(&mut l, s, items, &mut budget()).map(|()| PyValue::List(l))
        };
        let del = |s: Slice| {
            let mut l = ints(&[0, 1, 2, 3, 4]);
            del_slice(&mut l, s, &mut budget()).map(|()| PyValue::List(l))
        };
        let list = |v: &[i64]| Ok(PyValue::List(ints(v)));
        let chars = |text: &str| text.chars().map(PyValue::from).collect::<Vec<_>>();
        assert_eq!(get(sl(Some(1), Some(3), None)), list(&[1, 2]));
        assert_eq!(get(sl(Some(2), Some(10), None)), list(&[2, 3, 4]));
        assert_eq!(get(sl(None, None, None)), list(&[0, 1, 2, 3, 4]));
        assert_eq!(get(sl(None, None, Some(-2))), list(&[4, 2, 0]));
        assert_eq!(get(sl(Some(-100), Some(100), None)), list(&[0, 1, 2, 3, 4]));
        assert_eq!(
            get(sl(Some(i64::MIN), Some(i64::MAX), Some(i64::MAX))),
            list(&[0])
        );
        assert_eq!(
            get(sl(Some(i64::MAX), Some(i64::MIN), Some(i64::MIN))),
            list(&[4])
        );
        assert_eq!(get(sl(Some(3), Some(1), None)), list(&[]));
        assert_eq!(get(sl(Some(-1), None, Some(-1))), list(&[4, 3, 2, 1, 0]));
        let zero = Err(("ValueError", "slice step cannot be zero".to_string()));
        assert_eq!(get(sl(None, None, Some(0))), zero);
        assert_eq!(set(sl(None, None, Some(0)), vec![]), zero);
        assert_eq!(del(sl(None, None, Some(0))), zero);
        assert_eq!(del(sl(None, None, Some(2))), list(&[1, 3]));
        assert_eq!(del(sl(Some(4), Some(0), Some(-2))), list(&[0, 1, 3]));
        assert_eq!(del(sl(Some(1), Some(-1), None)), list(&[0, 4]));
        assert_eq!(del(sl(Some(3), Some(1), None)), list(&[0, 1, 2, 3, 4]));
        assert_eq!(
            set(sl(None, None, Some(-1)), chars("abcde")),
            Ok(PyValue::List(chars("edcba")))
        );
        assert_eq!(
            set(sl(Some(1), Some(3), None), chars("abc")),
            Ok(PyValue::List(vec![
                0.into(),
                s("a"),
                s("b"),
                s("c"),
                3.into(),
                4.into()
            ]))
        );
        assert_eq!(
            set(sl(Some(3), Some(1), None), chars("xy")),
            Ok(PyValue::List(vec![
                0.into(),
                1.into(),
                2.into(),
                s("x"),
                s("y"),
                3.into(),
                4.into()
            ]))
        );
        assert_eq!(
            set(sl(Some(4), Some(1), Some(-1)), chars("xyz")),
            Ok(PyValue::List(vec![
                0.into(),
                1.into(),
                s("z"),
                s("y"),
                s("x")
            ]))
        );
        assert_eq!(
            set(sl(None, None, Some(2)), chars("abc")),
            Ok(PyValue::List(vec![
                s("a"),
                1.into(),
                s("b"),
                3.into(),
                s("c")
            ]))
        );
        assert_eq!(
            set(sl(Some(-1), None, None), ints(&[7, 8, 9])),
            list(&[0, 1, 2, 3, 7, 8, 9])
        );
        assert_eq!(
            set(sl(Some(3), Some(1), None), ints(&[7])),
            list(&[0, 1, 2, 7, 3, 4])
        );
        assert_eq!(
            set(sl(Some(9), None, Some(2)), vec![]),
            list(&[0, 1, 2, 3, 4])
        );
        assert_eq!(set(sl(None, None, None), vec![]), list(&[]));
        assert_eq!(
            set(sl(None, None, Some(2)), ints(&[1, 2])),
            Err((
                "ValueError",
                "attempt to assign sequence of size 2 to extended slice of size 3".to_string()
            ))
        );
        assert_eq!(
            slice_part(&s("a")),
            Err((
                "TypeError",
                "slice indices must be integers or None or have an __index__ method".to_string()
            ))
        );
        assert_eq!(slice_part(&PyValue::None), Ok(None));
        assert_eq!(slice_part(&true.into()), Ok(Some(1)));
    }

    /// Slices and big ints as a client sends them, answered as CPython 3.13
    /// answers the same calls on `[0, 1, 2, 3, 4]`.
    #[test]
    fn slice_objects_and_big_ints_are_pythons() {
        let k = Kind::List;
        let on_five = |method: &str, args: Vec<PyValue>| call(k, &mut five(), method, args);
        let after = |method: &str, args: Vec<PyValue>| {
            let mut l = five();
            call(k, &mut l, method, args).map(|_| contents(&l))
        };
        let list = |v: &[i64]| Ok(PyValue::List(ints(v)));
        let none = || PyValue::None;
        assert_eq!(
            on_five("__getitem__", vec![slice(1.into(), 3.into(), none())]),
            list(&[1, 2])
        );
        assert_eq!(
            on_five("__getitem__", vec![slice(none(), none(), (-2).into())]),
            list(&[4, 2, 0])
        );
        assert_eq!(
            on_five(
                "__getitem__",
                vec![slice(big(true), big(false), big(false))]
            ),
            list(&[0])
        );
        assert_eq!(
            on_five("__getitem__", vec![slice(s("a"), none(), none())]),
            err(
                "TypeError",
                "slice indices must be integers or None or have an __index__ method"
            )
        );
        assert_eq!(
            on_five("__getitem__", vec![slice(none(), none(), 0.into())]),
            err("ValueError", "slice step cannot be zero")
        );
        assert_eq!(
            after("__delitem__", vec![slice(none(), none(), 2.into())]),
            list(&[1, 3])
        );
        assert_eq!(
            after(
                "__setitem__",
                vec![
                    slice(1.into(), 3.into(), none()),
                    PyValue::from(vec![7, 8, 9])
                ]
            ),
            list(&[0, 7, 8, 9, 3, 4])
        );
        assert_eq!(
            after(
                "__setitem__",
                vec![slice(none(), none(), 2.into()), PyValue::from(vec![1, 2])]
            ),
            err(
                "ValueError",
                "attempt to assign sequence of size 2 to extended slice of size 3"
            )
        );
        assert_eq!(
            after(
                "__setitem__",
                vec![slice(1.into(), 2.into(), none()), 1.into()]
            ),
            err("TypeError", "must assign iterable to extended slice")
        );
        let fit = err("IndexError", "cannot fit 'int' into an index-sized integer");
        assert_eq!(on_five("__getitem__", vec![big(false)]), fit);
        assert_eq!(on_five("__setitem__", vec![big(false), 1.into()]), fit);
        let overflow = err(
            "OverflowError",
            "Python int too large to convert to C ssize_t",
        );
        assert_eq!(on_five("pop", vec![big(false)]), overflow);
        assert_eq!(on_five("insert", vec![big(false), 1.into()]), overflow);
        let index_sized = err(
            "OverflowError",
            "cannot fit 'int' into an index-sized integer",
        );
        assert_eq!(on_five("__mul__", vec![big(false)]), index_sized);
        assert_eq!(
            call(k, &mut Object::List(vec![]), "__mul__", vec![big(false)]),
            index_sized
        );
        assert_eq!(
            on_five("index", vec![3.into(), big(true), big(false)]),
            Ok(3.into())
        );
        // Iterables a client sends: a range, a set, a bytearray.
        let range = PyValue::Object(Box::new(PyObject::call(
            "builtins",
            "range",
            ints(&[10, 4, -3]),
        )));
        assert_eq!(after("extend", vec![range]), list(&[0, 1, 2, 3, 4, 10, 7]));
        assert_eq!(
            after("extend", vec![PyValue::Set(ints(&[5]))]),
            list(&[0, 1, 2, 3, 4, 5])
        );
        let bytearray = PyValue::Object(Box::new(PyObject::call(
            "builtins",
            "bytearray",
            vec![PyValue::Bytes(vec![6])],
        )));
        assert_eq!(after("extend", vec![bytearray]), list(&[0, 1, 2, 3, 4, 6]));
        let complex = PyValue::Object(Box::new(PyObject::call(
            "builtins",
            "complex",
            vec![1.0.into(), 2.0.into()],
        )));
        assert_eq!(
            on_five("extend", vec![complex]),
            err("TypeError", "'complex' object is not iterable")
        );
        // `sort(key=len)` arrives as the global `builtins.len`.
        let len = PyValue::Object(Box::new(PyObject::global("builtins", "len")));
        let (class, message) = parse(k, "sort", vec![], vec![(s("key"), len)]).unwrap_err();
        assert_eq!(class, "TypeError");
        assert!(
            message.starts_with("sort(key=builtins.len) is not supported"),
            "{message}"
        );
    }

    #[test]
    fn a_namespace_value_is_pythons_namespace() {
        let mut n = dict();
        let k = Kind::Namespace;
        call(k, &mut n, "__setattr__", vec![s("name"), s("Bob")]).unwrap();
        let Ok(PyValue::Object(o)) = call(k, &mut n, "#GETVALUE", vec![]) else {
            panic!("not an object")
        };
        assert!(o.is("multiprocessing.managers", "Namespace") && o.new && o.args.is_empty());
        assert_eq!(o.state, Some(PyValue::dict([("name", "Bob")])));
        // The Rust client's snapshot stays a dict.
        assert_eq!(
            run_op(k, &mut n, Op::Snapshot),
            Ok(PyValue::dict([("name", "Bob")]))
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn repetition_is_bounded_by_the_budget() {
        let k = Kind::List;
        // As a server's request gets it: a frame's answer, four frames' memory.
        let request = || Budget::new(16 << 20, 64 << 20);
        for method in ["__mul__", "__rmul__", "__imul__"] {
            let mut l = five();
            let op = parse(k, method, vec![1_000_000_000_000i64.into()], vec![]).unwrap();
            let t = std::time::Instant::now();
            assert_eq!(
                apply(k, &mut l, op, &mut request()).map_err(|(c, _)| c),
                Err("MemoryError")
            );
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
            assert_eq!(contents(&l), PyValue::List(ints(&[0, 1, 2, 3, 4])));
        }
        // An empty list times anything is empty, at once.
        let op = parse(k, "__mul__", vec![i64::MAX.into()], vec![]).unwrap();
        assert_eq!(
            apply(k, &mut Object::List(vec![]), op, &mut request()),
            Ok(PyValue::List(vec![]))
        );
        // A str extends by its characters, within the budget.
        let mut l = Object::List(vec![]);
        let op = parse(k, "extend", vec![s(&"x".repeat(10_000_000))], vec![]).unwrap();
        assert_eq!(
            apply(k, &mut l, op, &mut request()).map_err(|(c, _)| c),
            Err("MemoryError")
        );
        // The repr of what cannot fit an answer is refused, made (4 MiB
        // of escapes, 16 MiB of repr) or not (20 MiB, 80 MiB).
        let mut l = Object::List(vec![s(&"\u{1}".repeat(4 << 20))]);
        let op = parse(k, "__repr__", vec![], vec![]).unwrap();
        assert_eq!(
            apply(k, &mut l, op, &mut request()).map_err(|(c, _)| c),
            Err("MemoryError")
        );
        let mut l = Object::List(vec![s(&"\u{1}".repeat(20 << 20))]);
        let op = parse(k, "__repr__", vec![], vec![]).unwrap();
        assert_eq!(
            apply(k, &mut l, op, &mut request()).map_err(|(c, _)| c),
            Err("MemoryError")
        );
    }

    #[test]
    fn an_operation_over_budget_is_refused_before_it_is_done() {
        let mut l = Object::List(vec![PyValue::None; 1000]);
        let mut tight = Budget::new(16, usize::MAX / 2);
        assert_eq!(
            apply(Kind::List, &mut l, Op::Snapshot, &mut tight).map_err(|(c, _)| c),
            Err("MemoryError")
        );
        let mut l = Object::List(vec![PyValue::None; 1000]);
        assert_eq!(run_op(Kind::List, &mut l, Op::Len), Ok(1000.into()));
    }

    #[test]
    fn exceptions_print_as_pythons() {
        let key = Raised {
            class: "KeyError",
            args: vec![s("k")],
        };
        assert_eq!(key.into_exception(), ("KeyError", "'k'".to_string()));
        let index = Raised::from(index_error("list index out of range"));
        assert_eq!(index.args, vec![s("list index out of range")]);
        assert_eq!(index.message(), "list index out of range");
        assert_eq!(Raised::from(("MemoryError", String::new())).args, vec![]);
        let two = Raised {
            class: "ValueError",
            args: vec![1.into(), s("a")],
        };
        assert_eq!(two.message(), "(1, 'a')");
    }

    /// What `generate.py` (beside the cases) prints for an answer: an
    /// iterator (a reverse one too) as the list of its items.
    fn shown(v: &PyValue) -> String {
        match v {
            PyValue::Object(o) if o.is_builtin("iter") && o.args.len() == 1 => {
                o.args[0].to_string()
            }
            PyValue::Object(o) if o.is_builtin("reversed") => match &o.args[..] {
                [PyValue::List(items)] => {
                    PyValue::List(items.iter().rev().cloned().collect()).to_string()
                }
                _ => v.to_string(),
            },
            v => v.to_string(),
        }
    }

    fn object_repr(kind: Kind, o: &Object) -> String {
        let r = match o {
            Object::List(l) => repr_list(l, &mut budget()),
            Object::Dict(d) => repr_dict(kind, d, &mut budget()),
        };
        match r {
            Ok(PyValue::Str(s)) => s,
            other => panic!("repr gave {other:?}"),
        }
    }

    /// 255 calls as CPython's proxies send them (pickled by CPython 3.13:
    /// `testdata/methods/generate.py`), each answered and leaving the
    /// object as a real `list`, `dict` or `Namespace` of CPython 3.13 does:
    /// same answers, same exception classes and messages.
    #[test]
    fn python_answers_every_case_alike() {
        let cases = include_bytes!("testdata/methods/cases.pickle");
        let expected = include_str!("testdata/methods/expected.txt");
        let Ok(PyValue::List(cases)) = crate::manager::pickle::loads(cases, &mut budget()) else {
            panic!("the cases do not load")
        };
        let expected: Vec<&str> = expected.lines().collect();
        assert_eq!(cases.len(), expected.len());
        let mut differences = Vec::new();
        for (case, python) in cases.into_iter().zip(expected) {
            let described = case.to_string();
            let PyValue::Tuple(fields) = case else {
                panic!("{described}")
            };
            let Ok(
                [PyValue::Str(kind), init, PyValue::Str(method), PyValue::Tuple(args), PyValue::Dict(kwds)],
            ) = <[PyValue; 5]>::try_from(fields)
            else {
                panic!("{described}")
            };
            let kind = match kind.as_str() {
                "list" => Kind::List,
                "dict" => Kind::Dict,
                _ => Kind::Namespace,
            };
            let mut object = match init {
                PyValue::List(items) if kind == Kind::List => Object::List(items),
                PyValue::List(pairs) => {
                    let mut m = Map::with_hasher(keyed());
                    for pair in pairs {
                        let PyValue::Tuple(pair) = pair else {
                            panic!("{described}")
                        };
                        let Ok([k, v]) = <[PyValue; 2]>::try_from(pair) else {
                            panic!("{described}")
                        };
                        m.insert(k, v);
                    }
                    Object::Dict(m)
                }
                _ => panic!("{described}"),
            };
            // As a server's request gets it.
            let mut request = Budget::new(16 << 20, 64 << 20);
            let answer = parse(kind, &method, args, kwds)
                .map_err(Raised::from)
                .and_then(|op| run(kind, &mut object, op, &mut request));
            let after = object_repr(kind, &object);
            let ours = match answer {
                Ok(v) => format!("ok {} | {after}", shown(&v)),
                Err(e) => format!("err {}: {} | {after}", e.class, e.message()),
            };
            if ours != python {
                differences.push(format!("{described}\n  ours:   {ours}\n  Python: {python}"));
            }
        }
        assert!(differences.is_empty(), "{}", differences.join("\n"));
    }

    /// Any method with any arguments a client may send: an answer or a
    /// Python exception, never a panic, and a list or dict left whole.
    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn no_call_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let atoms = |r: u64| -> PyValue {
            match r % 12 {
                0 => PyValue::None,
                1 => PyValue::Bool(r & 16 != 0),
                2 => PyValue::Int((r >> 8) as i64 % 13 - 6),
                3 => PyValue::Int(if r & 16 != 0 { i64::MAX } else { i64::MIN }),
                4 => big(r & 16 != 0),
                5 => PyValue::Float(((r >> 8) % 7) as f64 - 3.5),
                6 => s(["", "a", "ab", "abc"][(r >> 8) as usize % 4]),
                7 => PyValue::Bytes(vec![1, 2]),
                8 => PyValue::from(vec![1, 2]),
                9 => PyValue::Tuple(vec![s("k"), 1.into()]),
                10 => PyValue::dict([("a", 1)]),
                _ => slice(
                    PyValue::Int((r >> 8) as i64 % 9 - 4),
                    if r & 32 != 0 {
                        PyValue::None
                    } else {
                        big(r & 64 != 0)
                    },
                    PyValue::Int((r >> 16) as i64 % 5 - 2),
                ),
            }
        };
        let (mut answered, mut raised) = (0, 0);
        for round in 0..50_000 {
            let kind = [Kind::Dict, Kind::List, Kind::Namespace][round % 3];
            let methods = exposed_and_fallbacks(kind);
            let method = methods[next() as usize % methods.len()];
            let args: Vec<PyValue> = (0..[0, 1, 1, 1, 2, 2, 3, 4][next() as usize % 8])
                .map(|_| atoms(next()))
                .collect();
            let kwds: Vec<(PyValue, PyValue)> = match next() % 8 {
                0 => vec![(s("reverse"), atoms(next()))],
                1 => vec![(atoms(next()), atoms(next()))],
                2 => vec![(s("key"), PyValue::None)],
                _ => vec![],
            };
            let mut object = match kind {
                Kind::List => Object::List((0..next() % 8).map(|_| atoms(next())).collect()),
                _ => {
                    let mut m = Map::with_hasher(keyed());
                    for _ in 0..next() % 6 {
                        m.insert(s(["a", "b", "_c"][next() as usize % 3]), atoms(next()));
                    }
                    Object::Dict(m)
                }
            };
            let mut request = Budget::new(1 << 20, 4 << 20);
            if let Ok(op) = parse(kind, method, args, kwds) {
                match run(kind, &mut object, op, &mut request) {
                    Ok(_) => answered += 1,
                    Err(_) => raised += 1,
                }
            }
            // Whatever happened, the object still answers.
            object_repr(kind, &object);
        }
        // The calls got past their arguments, both ways.
        assert!(answered > 3000 && raised > 1500, "{answered} {raised}");
    }

    /// Keys that are all unequal but hash alike whatever the key (a NaN
    /// equals nothing, not even a NaN of the same bits; nor does a tuple
    /// or frozenset holding one) would make each insert compare with every
    /// key before it: as cheap to insert as so many random floats.
    #[test]
    fn nan_keys_do_not_collide() {
        use std::hash::BuildHasher;
        use std::time::{Duration, Instant};
        let nan = || PyValue::Float(f64::NAN);
        let hasher = keyed();
        assert_ne!(hasher.hash_one(nan()), hasher.hash_one(nan()));
        let n = 20_000;
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            PyValue::Float(f64::from_bits(x >> 12 | 0x3ff0_0000_0000_0000))
        };
        let time = |keys: Vec<PyValue>| {
            let mut d = dict();
            let items = keys.into_iter().map(|k| (k, PyValue::None)).collect();
            let t = Instant::now();
            run_op(Kind::Dict, &mut d, Op::Update(items)).unwrap();
            let Object::Dict(m) = &d else { unreachable!() };
            assert_eq!(m.len(), n, "every NaN is a key of its own");
            t.elapsed()
        };
        let floats = time((0..n).map(|_| random()).collect());
        for (what, key) in [
            ("NaN", &nan as &dyn Fn() -> PyValue),
            ("(NaN,)", &|| PyValue::Tuple(vec![nan()])),
            ("frozenset({NaN})", &|| PyValue::FrozenSet(vec![nan()])),
        ] {
            let crafted = time((0..n).map(|_| key()).collect());
            assert!(
                crafted < floats * 20 + Duration::from_millis(200),
                "{n} {what} keys took {crafted:?}, random floats {floats:?}"
            );
        }
    }

    fn exposed_and_fallbacks(kind: Kind) -> Vec<&'static str> {
        let mut all = crate::manager::methods::exposed(kind).to_vec();
        all.extend(["#GETVALUE", "__repr__", "__str__", "nonsense"]);
        all
    }
}
