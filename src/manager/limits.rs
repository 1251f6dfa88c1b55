//! What one request may cost the server: how deep its values nest and how
//! much memory decoding it takes (checked while decoding, through
//! [`PyValue`]'s `Deserialize` and [`bounded_vec`]), how large its answer
//! gets and how much work it does (checked before each is spent, by
//! [`Budget`]).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize;

use super::protocol::Exception;
use super::refs::ProxyRef;
use super::value::{PyObject, PyValue, VALUE_TOKEN};

/// The deepest nesting of lists, tuples and dicts a request may hold.
/// Every walk over a value (decode, compare, hash, encode, format, drop)
/// recurses once per level; this bounds their stack. Decoding is the
/// deepest walk: at this depth it takes about 1 MiB of stack in a debug
/// build and a fifth of that in a release build, half of a spawned
/// thread's default 2 MiB at most. (Python's own recursion limit, which
/// its `repr` and `==` of nested values hit, is 1000.)
pub const MAX_DEPTH: usize = 500;

/// How many levels an answer may add around stored values (a snapshot's
/// dict around its items, a batch around its answers): a client accepts
/// answers nested this much deeper than [`MAX_DEPTH`].
pub(crate) const ANSWER_NESTING: usize = 4;

/// Why decoding stopped short of the data's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    /// Nested deeper than allowed.
    Depth,
    /// It would take more memory than one request may.
    Memory,
}

thread_local! {
    /// Levels of nesting left to the value being decoded.
    static DEPTH_LEFT: Cell<usize> = const { Cell::new(MAX_DEPTH + ANSWER_NESTING) };
    /// Bytes of memory the message being decoded may still take.
    static MEMORY_LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// What stopped decoding, if a limit did.
    static EXCEEDED: Cell<Option<Exceeded>> = const { Cell::new(None) };
}

/// Runs `decode` with nesting limited to [`MAX_DEPTH`] and the memory it
/// takes to `memory` bytes; its result, which limit stopped it, and how
/// much of `memory` is left.
#[cfg(test)]
fn decode_limited<T>(memory: usize, decode: impl FnOnce() -> T) -> (T, Option<Exceeded>, usize) {
    let depth = DEPTH_LEFT.replace(MAX_DEPTH);
    let outer = MEMORY_LEFT.replace(memory);
    EXCEEDED.set(None);
    let r = decode();
    DEPTH_LEFT.set(depth);
    (r, EXCEEDED.take(), MEMORY_LEFT.replace(outer))
}

fn exceeded<E: de::Error>(why: Exceeded) -> E {
    EXCEEDED.set(Some(why));
    E::custom(match why {
        Exceeded::Depth => "nested too deep",
        Exceeded::Memory => "too large",
    })
}

/// Takes `bytes` of the decoding message's memory allowance.
fn charge<E: de::Error>(bytes: usize) -> Result<(), E> {
    let left = MEMORY_LEFT.get();
    match left.checked_sub(bytes) {
        Some(rest) => {
            MEMORY_LEFT.set(rest);
            Ok(())
        }
        None => Err(exceeded(Exceeded::Memory)),
    }
}

/// One level of nesting, given back when dropped.
struct Level;

impl Level {
    fn enter<E: de::Error>() -> Result<Level, E> {
        match DEPTH_LEFT.get().checked_sub(1) {
            Some(left) => {
                DEPTH_LEFT.set(left);
                Ok(Level)
            }
            None => Err(exceeded(Exceeded::Depth)),
        }
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH_LEFT.set(DEPTH_LEFT.get() + 1);
    }
}

/// A `Vec<T>` that takes its items' memory from the allowance as it grows,
/// and never reserves more than a few pages on the word of a length
/// prefix (for serde's `deserialize_with`).
pub(crate) fn bounded_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(Items(PhantomData))
}

/// A [`bounded_vec`]; of a nested container (`nested`), one level deeper.
struct Seq<T> {
    nested: bool,
    items: PhantomData<T>,
}

fn nested<T>() -> Seq<T> {
    Seq {
        nested: true,
        items: PhantomData,
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Seq<T> {
    type Value = Vec<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        let _level = self.nested.then(Level::enter).transpose()?;
        bounded_vec(d)
    }
}

struct Items<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let item = std::mem::size_of::<T>().max(1);
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096 / item));
        loop {
            charge(item)?;
            match seq.next_element()? {
                Some(v) => items.push(v),
                None => return Ok(items),
            }
        }
    }
}

/// `PyValue`'s variants, in the order of its (derived) `Serialize`.
#[derive(Deserialize)]
#[serde(variant_identifier)]
enum Tag {
    None,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    List,
    Tuple,
    Dict,
    Proxy,
    BigInt,
    Set,
    FrozenSet,
    Object,
}

const VARIANTS: &[&str] = &[
    "None",
    "Bool",
    "Int",
    "Float",
    "Str",
    "Bytes",
    "List",
    "Tuple",
    "Dict",
    "Proxy",
    "BigInt",
    "Set",
    "FrozenSet",
    "Object",
];

/// Decodes what the derived `Serialize` encodes, within the limits.
impl<'de> Deserialize<'de> for PyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PyValue, D::Error> {
        d.deserialize_enum(VALUE_TOKEN, VARIANTS, ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = PyValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a manager value")
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<PyValue, A::Error> {
        let (tag, variant) = data.variant::<Tag>()?;
        Ok(match tag {
            Tag::None => {
                variant.unit_variant()?;
                PyValue::None
            }
            Tag::Bool => PyValue::Bool(variant.newtype_variant()?),
            Tag::Int => PyValue::Int(variant.newtype_variant()?),
            Tag::Float => PyValue::Float(variant.newtype_variant()?),
            Tag::Str => {
                let s: String = variant.newtype_variant()?;
                charge(s.len())?;
                PyValue::Str(s)
            }
            Tag::Bytes => PyValue::Bytes(variant.newtype_variant_seed(Seq {
                nested: false,
                items: PhantomData,
            })?),
            Tag::List => PyValue::List(variant.newtype_variant_seed(nested())?),
            Tag::Tuple => PyValue::Tuple(variant.newtype_variant_seed(nested())?),
            Tag::Dict => PyValue::Dict(variant.newtype_variant_seed(nested())?),
            Tag::Proxy => PyValue::Proxy(variant.newtype_variant::<ProxyRef>()?),
            Tag::BigInt => PyValue::BigInt(variant.newtype_variant_seed(Seq {
                nested: false,
                items: PhantomData,
            })?),
            Tag::Set => PyValue::Set(variant.newtype_variant_seed(nested())?),
            Tag::FrozenSet => PyValue::FrozenSet(variant.newtype_variant_seed(nested())?),
            Tag::Object => {
                let _level = Level::enter()?;
                charge(std::mem::size_of::<PyObject>())?;
                PyValue::Object(variant.newtype_variant()?)
            }
        })
    }
}

/// The most work one request may make the server do, in steps of about a
/// value compared or moved each (a quarter of a second on this project's
/// machines): about the longest one client keeps the others waiting.
pub const MAX_WORK: usize = 1 << 25;

/// What is left for the rest of one request: encoded bytes of its answer
/// (whose frame must stay within the limit), memory (the copies made to
/// build the answer) and work.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Budget {
    answer: usize,
    memory: usize,
    work: usize,
    /// Something was refused: the request has done all it may.
    spent: bool,
}

impl Budget {
    pub(crate) fn new(answer: usize, memory: usize) -> Budget {
        Budget {
            answer,
            memory,
            work: MAX_WORK,
            spent: false,
        }
    }

    /// Takes `memory` bytes and `work` steps if both are left (what
    /// decoding a request charges); false, having taken neither, if not.
    #[inline]
    pub(crate) fn take_decoded(&mut self, memory: usize, work: usize) -> bool {
        match (self.memory.checked_sub(memory), self.work.checked_sub(work)) {
            (Some(m), Some(w)) => {
                self.memory = m;
                self.work = w;
                true
            }
            _ => false,
        }
    }

    /// The steps of work taken so far.
    pub(crate) fn work_done(&self) -> usize {
        MAX_WORK - self.work
    }

    /// The steps of work left.
    pub(crate) fn work_left(&self) -> usize {
        self.work
    }

    /// Whether something was refused: the request may do no more.
    pub(crate) fn spent(&self) -> bool {
        self.spent
    }

    /// Takes `steps` of work, or refuses before it is done.
    pub(crate) fn work(&mut self, steps: usize) -> Result<(), Exception> {
        match self.work.checked_sub(steps) {
            Some(left) => {
                self.work = left;
                Ok(())
            }
            None => Err(self.refuse((
                "RuntimeError",
                format!(
                    "the request would take the server more than {MAX_WORK} steps \
                     (values compared or moved); split it"
                ),
            ))),
        }
    }

    /// [`charge`](Budget::charge) of one value, a scalar's cost taken
    /// without a call (a batched lookup charges each value it answers).
    #[inline]
    pub(crate) fn charge_value(&mut self, v: &PyValue) -> Result<(), Exception> {
        if self.take(v) {
            Ok(())
        } else {
            Err(self.refuse(too_large()))
        }
    }

    /// Takes what answering with a copy of each of `values` costs, or
    /// refuses (having walked no more of them than the budget allows).
    pub(crate) fn charge<'a>(
        &mut self,
        values: impl IntoIterator<Item = &'a PyValue>,
    ) -> Result<(), Exception> {
        for v in values {
            if !self.take(v) {
                return Err(self.refuse(too_large()));
            }
        }
        Ok(())
    }

    /// Takes `bytes` of the answer's frame.
    pub(crate) fn charge_bytes(&mut self, bytes: usize) -> Result<(), Exception> {
        match self.answer.checked_sub(bytes) {
            Some(left) => {
                self.answer = left;
                Ok(())
            }
            None => Err(self.refuse(too_large())),
        }
    }

    /// Takes `bytes` of memory (what decoding a request builds), or
    /// refuses.
    pub(crate) fn memory(&mut self, bytes: usize) -> Result<(), Exception> {
        match self.memory.checked_sub(bytes) {
            Some(left) => {
                self.memory = left;
                Ok(())
            }
            None => Err(self.refuse((
                "MemoryError",
                "the value would take more memory than one request may; send less at a time".into(),
            ))),
        }
    }

    fn refuse(&mut self, why: Exception) -> Exception {
        self.spent = true;
        why
    }

    /// Takes the cost of `v` (the length of its pickle, as the server's
    /// encoder writes it, and its size in memory); false as soon as either
    /// runs out.
    #[inline]
    fn take(&mut self, v: &PyValue) -> bool {
        let scalar = match v {
            PyValue::None | PyValue::Bool(_) => Some(1),
            PyValue::Int(i) => Some(pickled_int_len(*i)),
            PyValue::Float(_) => Some(9),
            _ => None,
        };
        match scalar {
            Some(encoded) => self.take_sizes(encoded, std::mem::size_of::<PyValue>()),
            None => self.take_any(v),
        }
    }

    /// Takes `encoded` bytes of the answer and `memory` bytes; false if
    /// either runs out.
    #[inline]
    fn take_sizes(&mut self, encoded: usize, memory: usize) -> bool {
        match (
            self.answer.checked_sub(encoded),
            self.memory.checked_sub(memory),
        ) {
            (Some(a), Some(m)) => {
                self.answer = a;
                self.memory = m;
                true
            }
            _ => false,
        }
    }

    /// [`take`](Budget::take) of any value, its items too.
    fn take_any(&mut self, v: &PyValue) -> bool {
        // MARK and the opcode that ends the items, if there are any.
        let items = |n: usize| if n == 0 { 0 } else { 2 };
        let (encoded, heap) = match v {
            PyValue::None | PyValue::Bool(_) => (1, 0),
            PyValue::Int(i) => (pickled_int_len(*i), 0),
            PyValue::Float(_) => (9, 0),
            PyValue::Str(s) => (pickled_len(s.len()), s.len()),
            PyValue::Bytes(b) => (pickled_len(b.len()), b.len()),
            PyValue::List(vs) => (1 + items(vs.len()), 0),
            PyValue::Tuple(vs) => (if vs.len() <= 3 { 1 } else { 2 }, 0),
            PyValue::Dict(d) => (1 + items(d.len()), 0),
            PyValue::Proxy(_) => (PICKLED_PROXY, 0),
            PyValue::BigInt(b) => (b.len() + if b.len() < 256 { 2 } else { 5 }, b.len()),
            PyValue::Set(vs) => (1 + items(vs.len()), 0),
            PyValue::FrozenSet(_) => (2, 0),
            // Its global, its args tuple, the call, items, kwargs and state
            // opcodes (the values inside are taken below).
            PyValue::Object(o) => (
                pickled_len(o.module.len()) + pickled_len(o.name.len()) + 16,
                std::mem::size_of::<PyObject>() + o.module.len() + o.name.len(),
            ),
        };
        if !self.take_sizes(encoded, std::mem::size_of::<PyValue>() + heap) {
            return false;
        }
        match v {
            PyValue::List(vs) | PyValue::Tuple(vs) | PyValue::Set(vs) | PyValue::FrozenSet(vs) => {
                vs.iter().all(|v| self.take(v))
            }
            PyValue::Dict(d) => d.iter().all(|(k, v)| self.take(k) && self.take(v)),
            PyValue::Object(o) => {
                o.args.iter().all(|v| self.take(v))
                    && o.kwargs
                        .iter()
                        .flatten()
                        .all(|(k, v)| self.take(k) && self.take(v))
                    && o.state.iter().all(|v| self.take(v))
                    && o.list_items.iter().all(|v| self.take(v))
                    && o.dict_items
                        .iter()
                        .all(|(k, v)| self.take(k) && self.take(v))
            }
            _ => true,
        }
    }
}

fn too_large() -> Exception {
    (
        "MemoryError",
        "the answer would exceed the frame limit; ask for less at a time".into(),
    )
}

/// The bytes of a `pathlib` path's parts: comparing it with another path
/// normalises its text, a step a byte (each comparison again).
fn path_bytes(o: &PyObject) -> usize {
    if o.global || !super::pickle::is_pathlib(&o.module, &o.name) {
        return 0;
    }
    o.args
        .iter()
        .map(|a| match a {
            PyValue::Str(s) => s.len(),
            _ => 0,
        })
        .sum()
}

/// The most work comparing `v` with another value takes: its values, and
/// a step for each 32 bytes of its strs and bytes (compared a word at a
/// time), each 8 bytes of its ints beyond 64 bits (byte by byte) and each
/// byte of its paths (normalised).
pub(crate) fn compare_cost(v: &PyValue) -> usize {
    let all = |vs: &[PyValue]| vs.iter().map(compare_cost).sum::<usize>();
    let pairs = |d: &[(PyValue, PyValue)]| {
        d.iter()
            .map(|(k, v)| compare_cost(k) + compare_cost(v))
            .sum::<usize>()
    };
    1 + match v {
        PyValue::Str(s) => s.len() / 32,
        PyValue::Bytes(b) => b.len() / 32,
        PyValue::BigInt(b) => b.len() / 8,
        PyValue::List(vs) | PyValue::Tuple(vs) | PyValue::Set(vs) | PyValue::FrozenSet(vs) => {
            all(vs)
        }
        PyValue::Dict(d) => pairs(d),
        PyValue::Object(o) => {
            path_bytes(o)
                + all(&o.args)
                + o.kwargs.as_deref().map_or(0, pairs)
                + o.state.as_ref().map_or(0, compare_cost)
                + all(&o.list_items)
                + pairs(&o.dict_items)
        }
        _ => 0,
    }
}

/// How many values `v` is made of and bytes its paths are (what comparing
/// it with a value holding sets or paths takes), counted up to just past
/// `limit` (a walk of at most `limit + 1` of its values).
pub(crate) fn size_up_to(v: &PyValue, limit: usize) -> usize {
    fn walk(v: &PyValue, left: &mut usize) -> bool {
        let cost = match v {
            PyValue::Object(o) => 1 + path_bytes(o),
            _ => 1,
        };
        if *left < cost {
            *left = 0;
            return false;
        }
        *left -= cost;
        let all = |vs: &[PyValue], left: &mut usize| vs.iter().all(|v| walk(v, left));
        let pairs = |d: &[(PyValue, PyValue)], left: &mut usize| {
            d.iter().all(|(k, v)| walk(k, left) && walk(v, left))
        };
        match v {
            PyValue::List(vs) | PyValue::Tuple(vs) | PyValue::Set(vs) | PyValue::FrozenSet(vs) => {
                all(vs, left)
            }
            PyValue::Dict(d) => pairs(d, left),
            PyValue::Object(o) => {
                all(&o.args, left)
                    && pairs(o.kwargs.as_deref().unwrap_or_default(), left)
                    && o.state.iter().all(|v| walk(v, left))
                    && all(&o.list_items, left)
                    && pairs(&o.dict_items, left)
            }
            _ => true,
        }
    }
    let mut left = limit.saturating_add(1);
    walk(v, &mut left);
    limit.saturating_add(1) - left
}

/// The steps of work each value of a set, frozenset or dict takes when it
/// is compared with another: hashed into an index (a keyed SipHash and a
/// table entry) and looked up, several times a value walked.
pub(crate) const HASH_STEPS: usize = 8;

/// What comparing `v` with another value takes for each value of the
/// other: nothing beyond as many as `v` has (0); each one, and each byte
/// of its paths, normalised, if `v` holds a path or a small set,
/// frozenset or dict (compared item by item) (1); [`HASH_STEPS`] for each
/// of the other's values, and of `v`'s, if `v` holds a larger one (the
/// items of both hashed into an index).
pub(crate) fn other_side_weight(v: &PyValue) -> usize {
    // As `compare`'s `all_in` and `dict_eq` index them.
    const INDEXED: usize = 8;
    let most = |vs: &[PyValue]| vs.iter().map(other_side_weight).max().unwrap_or(0);
    let pairs = |d: &[(PyValue, PyValue)]| {
        d.iter()
            .map(|(k, v)| other_side_weight(k).max(other_side_weight(v)))
            .max()
            .unwrap_or(0)
    };
    match v {
        PyValue::Set(vs) | PyValue::FrozenSet(vs) if vs.len() > INDEXED => HASH_STEPS,
        PyValue::Dict(d) if d.len() > INDEXED => HASH_STEPS,
        PyValue::Set(vs) | PyValue::FrozenSet(vs) => most(vs).max(1),
        PyValue::Dict(d) => pairs(d).max(1),
        PyValue::List(vs) | PyValue::Tuple(vs) => most(vs),
        // Its items and keyword arguments are compared in order, its
        // path normalised.
        PyValue::Object(o) => most(&o.args)
            .max(o.kwargs.as_deref().map_or(0, pairs))
            .max(o.state.as_ref().map_or(0, other_side_weight))
            .max(most(&o.list_items))
            .max(pairs(&o.dict_items))
            .max(usize::from(
                path_bytes(o) > 0 || o.kwargs.is_some() || !o.dict_items.is_empty(),
            )),
        _ => 0,
    }
}

/// The most a nested proxy's pickle takes: `RebuildProxy(ProxyClass,
/// Token(typeid, address, id), 'pickle', kwds)`, with an address of at
/// most a Unix socket's path (108 bytes) and a queue's exposed names.
const PICKLED_PROXY: usize = 1024;

/// The pickled length of a str or bytes of `n` bytes: its opcode, its
/// length (1, 4 or 8 bytes) and the bytes.
fn pickled_len(n: usize) -> usize {
    n + if n < 256 {
        2
    } else if u32::try_from(n).is_ok() {
        5
    } else {
        9
    }
}

/// The pickled length of an int: `BININT1`, `BININT2`, `BININT`, or
/// `LONG1` and its two's complement bytes.
fn pickled_int_len(i: i64) -> usize {
    if u8::try_from(i).is_ok() {
        2
    } else if u16::try_from(i).is_ok() {
        3
    } else if i32::try_from(i).is_ok() {
        5
    } else {
        // The bytes, without the redundant sign bytes at the top.
        let significant = 64
            - if i < 0 {
                i.leading_ones()
            } else {
                i.leading_zeros()
            } as usize;
        2 + (significant + 1).div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(levels: usize) -> PyValue {
        let mut v = PyValue::Int(1);
        for _ in 0..levels {
            v = PyValue::List(vec![v]);
        }
        v
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn nesting_beyond_the_limit_is_refused_and_within_it_every_walk_is_safe() {
        let bytes = postcard::to_allocvec(&deep(MAX_DEPTH + 1)).unwrap();
        let (r, why, _) = decode_limited(usize::MAX, || postcard::from_bytes::<PyValue>(&bytes));
        assert!(r.is_err());
        assert_eq!(why, Some(Exceeded::Depth));
        // The deepest accepted value through every walk, on a test
        // thread's 2 MiB stack, in a debug build.
        let bytes = postcard::to_allocvec(&deep(MAX_DEPTH)).unwrap();
        let (r, why, _) = decode_limited(usize::MAX, || postcard::from_bytes::<PyValue>(&bytes));
        assert_eq!(why, None);
        let v = r.unwrap();
        let copy = v.clone();
        assert!(v == copy);
        assert_eq!(v.lt(&copy), Ok(false));
        use std::hash::BuildHasher;
        let s = std::hash::RandomState::new();
        assert_eq!(s.hash_one(&v), s.hash_one(&copy));
        assert!(format!("{v:?}").len() > MAX_DEPTH);
        assert!(v.repr().len() < 300);
        assert!(Budget::new(usize::MAX, usize::MAX).charge([&v]).is_ok());
        // A client decodes answers a few levels deeper than requests.
        let wrapped = PyValue::Dict(vec![(PyValue::None, v)]);
        let bytes = postcard::to_allocvec(&wrapped).unwrap();
        assert!(postcard::from_bytes::<PyValue>(&bytes).is_ok());
    }

    #[test]
    fn every_variant_decodes_as_the_derived_encoding_wrote_it() {
        let all = PyValue::Tuple(vec![
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Int(-5),
            PyValue::Float(2.5),
            PyValue::Str("s".into()),
            PyValue::Bytes(vec![1, 2]),
            PyValue::List(vec![PyValue::Int(1)]),
            PyValue::Dict(vec![(PyValue::Str("k".into()), PyValue::Tuple(vec![]))]),
        ]);
        let bytes = postcard::to_allocvec(&all).unwrap();
        let back: PyValue = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{all:?}"));
    }

    #[test]
    fn decoding_takes_memory_from_the_allowance() {
        // 1000 Nones: 1 KB encoded, 32 KB decoded.
        let v = PyValue::List(vec![PyValue::None; 1000]);
        let bytes = postcard::to_allocvec(&v).unwrap();
        let (r, why, _) = decode_limited(16 << 10, || postcard::from_bytes::<PyValue>(&bytes));
        assert!(r.is_err());
        assert_eq!(why, Some(Exceeded::Memory));
        let (r, why, _) = decode_limited(64 << 10, || postcard::from_bytes::<PyValue>(&bytes));
        assert_eq!((r.unwrap(), why), (v, None));
    }

    #[test]
    fn the_budget_counts_exact_pickled_lengths() {
        let mut ints = vec![0, 255, 256, 65535, 65536, -1, -129, -32769];
        ints.extend([i32::MIN, i32::MAX].map(i64::from));
        ints.extend([
            i64::MIN,
            i64::MAX,
            1 << 31,
            -(1 << 31) - 1,
            1 << 39,
            -(1 << 39),
        ]);
        ints.extend((0..64).flat_map(|b| {
            [
                1i64 << b,
                (1i64 << b).wrapping_sub(1),
                (1i64 << b).wrapping_neg(),
            ]
        }));
        let values = ints.into_iter().map(PyValue::Int).chain([
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Float(0.5),
            PyValue::Str("é".repeat(200)),
            PyValue::Str("x".repeat(255)),
            PyValue::Str("x".repeat(256)),
            PyValue::Bytes(vec![7; 130]),
            PyValue::Bytes(vec![7; 300]),
            PyValue::BigInt(vec![1; 300]),
            PyValue::BigInt(vec![1; 20]),
            PyValue::Tuple(vec![]),
            PyValue::Tuple(vec![PyValue::Int(1); 3]),
            PyValue::Tuple(vec![PyValue::Int(1); 200]),
            PyValue::List(vec![]),
            PyValue::List(vec![PyValue::Int(1); 2]),
            PyValue::Set(vec![]),
            PyValue::Set(vec![PyValue::Int(1)]),
            PyValue::FrozenSet(vec![PyValue::Int(1)]),
            PyValue::Dict(vec![]),
            PyValue::Dict(vec![(PyValue::Str("k".into()), PyValue::List(vec![]))]),
        ]);
        let address = PyValue::Str("/tmp/x.sock".into());
        for v in values {
            // Less the protocol header and STOP.
            let len = super::super::pickle::dumps(&v, &address).len() - 3;
            assert!(Budget::new(len, usize::MAX).charge([&v]).is_ok(), "{v:?}");
            assert!(
                Budget::new(len - 1, usize::MAX).charge([&v]).is_err(),
                "{v:?}"
            );
        }
    }
}
