//! How [`PyValue`]s compare, order and hash: as Python's values do (an
//! int and a float as the numbers they are, exactly), and `list.sort()`.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use super::PyValue;

impl PyValue {
    /// The value as a number, if it is one (`bool` is an `int` in Python).
    fn number(&self) -> Option<Number> {
        match *self {
            PyValue::Bool(b) => Some(Number::Int(b.into())),
            PyValue::Int(i) => Some(Number::Int(i)),
            PyValue::Float(f) => Some(Number::Float(f)),
            // Normally an int outside i64; one that fits is an `Int`.
            PyValue::BigInt(ref b) => big_to_i64(b).map(Number::Int),
            _ => None,
        }
    }

    /// The value as an int beyond `i64` (or a float compared with one):
    /// its two's complement bytes, if it is an int.
    fn big(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match *self {
            PyValue::BigInt(ref b) => Some(std::borrow::Cow::Borrowed(b)),
            PyValue::Int(i) => Some(std::borrow::Cow::Owned(int_bytes(i))),
            PyValue::Bool(b) => Some(std::borrow::Cow::Owned(int_bytes(b.into()))),
            _ => None,
        }
    }

    /// Python's `self < other`, or the `TypeError` Python raises for it
    /// (as its message).
    pub(crate) fn lt(&self, other: &PyValue) -> Result<bool, String> {
        use PyValue::*;
        if let (Some(a), Some(b)) = (self.number(), other.number()) {
            return Ok(a.partial_cmp(b) == Some(Ordering::Less));
        }
        if let Some(o) = big_cmp_any(self, other) {
            return Ok(o == Some(Ordering::Less));
        }
        if let (Object(_), Object(_)) = (self, other) {
            if let Some(lt) = time_lt(self, other) {
                return lt;
            }
            if let (Some(a), Some(b)) = (self.deque_items(), other.deque_items()) {
                return PyValue::lt_items(a, b);
            }
            if let (Some((Mapping::Counter, a)), Some((Mapping::Counter, b))) =
                (self.mapping(), other.mapping())
            {
                // Python 3.10's `Counter.__lt__`: `self <= other and
                // self != other`, `<=` of each count (a missing one 0).
                let (le, eq) = counter_le_eq(a, b)?;
                return Ok(le && !eq);
            }
        }
        match (self, other) {
            (Set(a) | FrozenSet(a), Set(b) | FrozenSet(b)) => {
                // A proper subset.
                Ok(a.len() < b.len() && all_in(a, b))
            }
            (Object(a), Object(b)) if a.is_builtin("slice") && b.is_builtin("slice") => {
                PyValue::lt_items(&a.args, &b.args)
            }
            (Object(_) | Bytes(_), Object(_) | Bytes(_))
                if self.bytes_like().is_some() && other.bytes_like().is_some() =>
            {
                Ok(self.bytes_like() < other.bytes_like())
            }
            (Str(a), Str(b)) => Ok(a < b),
            (Bytes(a), Bytes(b)) => Ok(a < b),
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => PyValue::lt_items(a, b),
            _ => Err(format!(
                "'<' not supported between instances of '{}' and '{}'",
                self.type_name(),
                other.type_name()
            )),
        }
    }

    /// The items of a dict-like value (`dict`, and the `OrderedDict`,
    /// `defaultdict` and `Counter` a Python client sends), and how it
    /// compares.
    pub(crate) fn mapping(&self) -> Option<(Mapping, &[(PyValue, PyValue)])> {
        let o = match self {
            PyValue::Dict(d) => return Some((Mapping::Dict, d)),
            PyValue::Object(o) if !o.global && o.module == "collections" => o,
            _ => return Option::None,
        };
        match (o.name.as_str(), &o.args[..]) {
            ("OrderedDict", []) => Some((Mapping::Ordered, &o.dict_items)),
            // The default factory does not take part in `==`.
            ("defaultdict", [] | [_]) => Some((Mapping::Dict, &o.dict_items)),
            // Pickled as `Counter(dict(self))`.
            ("Counter", []) if o.dict_items.is_empty() => Some((Mapping::Counter, &[])),
            ("Counter", [PyValue::Dict(d)]) if o.dict_items.is_empty() => {
                Some((Mapping::Counter, d))
            }
            _ => Option::None,
        }
    }

    /// The items of a `collections.deque` a Python client sends (pickled
    /// as `deque((), maxlen)` and its items appended).
    pub(crate) fn deque_items(&self) -> Option<&[PyValue]> {
        let PyValue::Object(o) = self else {
            return Option::None;
        };
        if !o.is("collections", "deque") {
            return Option::None;
        }
        let given: &[PyValue] = match o.args.first() {
            Option::None => &[],
            Some(PyValue::List(v) | PyValue::Tuple(v)) => v,
            Some(_) => return Option::None,
        };
        match (given.is_empty(), o.list_items.is_empty()) {
            (true, _) => Some(&o.list_items),
            (false, true) => Some(given),
            (false, false) => Option::None,
        }
    }

    /// The name of the type that makes this value unusable as a dict key
    /// in Python (`'collections.deque'`, `'bytearray'`), found in it or
    /// in the values it holds; `None` if Python hashes it, or if it is a
    /// list, dict or set (which this server takes as keys).
    pub(crate) fn unhashable(&self) -> Option<&str> {
        match self {
            PyValue::List(v) | PyValue::Tuple(v) | PyValue::Set(v) | PyValue::FrozenSet(v) => {
                v.iter().find_map(PyValue::unhashable)
            }
            PyValue::Dict(d) => d
                .iter()
                .find_map(|(k, v)| k.unhashable().or_else(|| v.unhashable())),
            PyValue::Object(o)
                if !o.global
                    && (o.is_builtin("bytearray")
                        || o.module == "collections"
                            && matches!(
                                o.name.as_str(),
                                "OrderedDict" | "defaultdict" | "Counter" | "deque"
                            )) =>
            {
                Some(self.type_name())
            }
            _ => Option::None,
        }
    }

    /// `a < b` of two sequences: the first items that differ decide; else
    /// the shorter is less.
    fn lt_items(a: &[PyValue], b: &[PyValue]) -> Result<bool, String> {
        Ok(PyValue::first_difference(a, b)?.unwrap_or(a.len() < b.len()))
    }

    /// `x < y` of the first items of `a` and `b` that differ (Python's
    /// `x != y`, then `x < y`), or `None` if none does. Lists in lists,
    /// tuples in tuples, deques in deques and slices in slices (whose `<`
    /// is their items') are compared item by item in the same walk: an
    /// `!=` of them and then a `<` one level down, asking `!=` again,
    /// would walk a value nested n deep n times (deques nested 160 deep
    /// around a list of a million items took twenty times the work the
    /// server charged for sorting two of them).
    fn first_difference(a: &[PyValue], b: &[PyValue]) -> Result<Option<bool>, String> {
        for (x, y) in a.iter().zip(b) {
            match x.ordered_items(y) {
                Some((p, q)) => {
                    if let Some(lt) = PyValue::first_difference(p, q)? {
                        return Ok(Some(lt));
                    }
                    if p.len() != q.len() {
                        return Ok(Some(p.len() < q.len()));
                    }
                }
                Option::None if x != y => return x.lt(y).map(Some),
                Option::None => {}
            }
        }
        Ok(Option::None)
    }

    /// The items whose order is that of `self` and `other` (as `lt`
    /// orders them), if both are lists, tuples, deques or slices.
    fn ordered_items<'a>(&'a self, other: &'a PyValue) -> Option<(&'a [PyValue], &'a [PyValue])> {
        use PyValue::{List, Object, Tuple};
        match (self, other) {
            (List(p), List(q)) | (Tuple(p), Tuple(q)) => Some((p, q)),
            (Object(a), Object(b)) => match (self.deque_items(), other.deque_items()) {
                (Some(p), Some(q)) => Some((p, q)),
                _ => (a.is_builtin("slice") && b.is_builtin("slice"))
                    .then_some((&a.args[..], &b.args[..])),
            },
            _ => Option::None,
        }
    }

    /// The bytes of a `bytes` or a `bytearray`.
    fn bytes_like(&self) -> Option<&[u8]> {
        match self {
            PyValue::Bytes(b) => Some(b),
            PyValue::Object(o) if o.is_builtin("bytearray") => match o.args.first() {
                Some(PyValue::Bytes(b)) => Some(b),
                Option::None => Some(&[]),
                _ => Option::None,
            },
            _ => Option::None,
        }
    }

    /// A `complex` with no imaginary part, as the real number it equals.
    fn complex_real(&self) -> Option<PyValue> {
        match self {
            PyValue::Object(o) if o.is_builtin("complex") => {
                let imag = o.args.get(1).cloned().unwrap_or(PyValue::Int(0));
                (imag == PyValue::Int(0))
                    .then(|| o.args.first().cloned().unwrap_or(PyValue::Int(0)))
            }
            _ => Option::None,
        }
    }
}

/// The int 0 as an `i64`, from two's complement little-endian bytes that
/// fit.
fn big_to_i64(b: &[u8]) -> Option<i64> {
    let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    if b.len() > 8 {
        // Fits only if the bytes above 8 are sign extension (looked at
        // from the top, where a large int differs at once).
        if b[8..].iter().rev().any(|&x| x != fill) || (b[7] & 0x80 != 0) != negative {
            return Option::None;
        }
    }
    let mut word = [fill; 8];
    let n = b.len().min(8);
    word[..n].copy_from_slice(&b[..n]);
    Some(i64::from_le_bytes(word))
}

/// `i` as the shortest two's complement little-endian bytes (`0` as none).
pub(crate) fn int_bytes(i: i64) -> Vec<u8> {
    let mut b = i.to_le_bytes().to_vec();
    minimal(&mut b);
    b
}

/// Drops the redundant sign bytes at the top of two's complement bytes.
pub(crate) fn minimal(b: &mut Vec<u8>) {
    while let [.., next, top] = b[..] {
        let redundant = (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        b.pop();
    }
    if b[..] == [0] {
        b.clear();
    }
}

/// Two ints in two's complement (minimal or not) compared.
fn big_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let neg = |x: &[u8]| x.last().is_some_and(|&t| t & 0x80 != 0);
    let (na, nb) = (neg(a), neg(b));
    if na != nb {
        return if na {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // Sign-extend both to one length; then the bytes compare as unsigned.
    let fill = if na { 0xff } else { 0 };
    let len = a.len().max(b.len());
    let at = |x: &[u8], i: usize| x.get(i).copied().unwrap_or(fill);
    (0..len)
        .rev()
        .map(|i| at(a, i).cmp(&at(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// An integral float, exactly, as two's complement bytes.
fn float_int_bytes(f: f64) -> Vec<u8> {
    let bits = f.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let mantissa = if exp == 0 {
        (bits & ((1 << 52) - 1)) << 1
    } else {
        (bits & ((1 << 52) - 1)) | (1 << 52)
    };
    // f = mantissa * 2**(exp - 1075)
    let shift = exp - 1075;
    let mut mag = vec![0u8; 8];
    if shift >= 0 {
        let shift = shift as usize;
        mag = vec![0u8; shift / 8 + 9];
        let m = u128::from(mantissa) << (shift % 8);
        for (i, byte) in m.to_le_bytes().iter().take(9).enumerate() {
            mag[shift / 8 + i] = *byte;
        }
    } else if shift > -64 {
        mag.copy_from_slice(&(mantissa >> (-shift)).to_le_bytes());
    }
    mag.push(0);
    if f < 0.0 {
        // Two's complement negation.
        let mut carry = 1u16;
        for byte in &mut mag {
            let sum = u16::from(!*byte) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
    }
    minimal(&mut mag);
    mag
}

/// `a` compared with `b` where one of them is an int beyond `i64` and
/// the other a number; `Some(None)` if a NaN is involved; `None` if they
/// are not such a pair.
fn big_cmp_any(a: &PyValue, b: &PyValue) -> Option<Option<Ordering>> {
    if !matches!(a, PyValue::BigInt(_)) && !matches!(b, PyValue::BigInt(_)) {
        return Option::None;
    }
    // Borrowed: a copy of a stored int of 64 KiB for each comparison with
    // it made a scan of a list of them cost that much per item.
    fn as_big(v: &PyValue) -> Option<Result<std::borrow::Cow<'_, [u8]>, f64>> {
        match v {
            PyValue::Float(f) => Some(Err(*f)),
            v => v.big().map(Ok),
        }
    }
    let (x, y) = (as_big(a)?, as_big(b)?);
    Some(match (x, y) {
        (Ok(x), Ok(y)) => Some(big_cmp(&x, &y)),
        (Ok(x), Err(f)) => big_cmp_float(&x, f),
        (Err(f), Ok(y)) => big_cmp_float(&y, f).map(Ordering::reverse),
        (Err(f), Err(g)) => f.partial_cmp(&g),
    })
}

/// An int compared with a float, exactly.
fn big_cmp_float(x: &[u8], f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return Option::None;
    }
    if f.is_infinite() {
        return Some(if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        });
    }
    let whole = f.trunc();
    Some(big_cmp(x, &float_int_bytes(whole)).then(if f > whole {
        Ordering::Less
    } else if f < whole {
        Ordering::Greater
    } else {
        Ordering::Equal
    }))
}

/// The int as the float it equals exactly, if there is one.
fn big_as_float(b: &[u8]) -> Option<f64> {
    // No float is 2**1024 or more, an int of more than 129 bytes (its
    // bits looked at one by one below took a hash of a 64 KB int 28 ms).
    if b.len() > 129 {
        return Option::None;
    }
    let negative = b.last().is_some_and(|&t| t & 0x80 != 0);
    let mut mag = b.to_vec();
    if negative {
        let mut carry = 1u16;
        for byte in &mut mag {
            let sum = u16::from(!*byte) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
    }
    let bit = |i: usize| mag[i / 8] >> (i % 8) & 1 == 1;
    let bits = mag.len() * 8;
    let high = (0..bits).rev().find(|&i| bit(i))?;
    let low = (0..bits).find(|&i| bit(i))?;
    if high - low >= 53 || high >= 1024 {
        return Option::None;
    }
    let mut m = 0u64;
    for i in (low..=high).rev() {
        m = m << 1 | u64::from(bit(i));
    }
    let f = m as f64 * 2f64.powi(low as i32);
    Some(if negative { -f } else { f })
}

/// What a `datetime` value a Python client sends compares and hashes
/// by, as Python's: a `date`, a naive `datetime` or `time` by its
/// fields (not its `fold`), an aware one (its `tzinfo` a fixed
/// `timezone`) by the instant it names, a `timedelta` by its length.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) enum TimeKey {
    /// A `date`: its year, month and day.
    Date(u32),
    /// A naive `datetime`: microseconds from 0001-01-01 00:00.
    Naive(i128),
    /// An aware `datetime`: microseconds from 0001-01-01 00:00 UTC.
    Aware(i128),
    /// A naive `time`: microseconds from midnight.
    Time(i128),
    /// An aware `time`: microseconds from midnight UTC.
    AwareTime(i128),
    /// A `timedelta`, in microseconds.
    Delta(i128),
}

impl super::value::PyObject {
    /// What a `datetime.date`, `datetime`, `time` or `timedelta` compares
    /// by; `None` for another object, or one not pickled as Python
    /// pickles them.
    pub(crate) fn time_key(&self) -> Option<TimeKey> {
        if self.global || self.module != "datetime" {
            return Option::None;
        }
        let delta = |args: &[PyValue]| match *args {
            [PyValue::Int(days), PyValue::Int(seconds), PyValue::Int(us)] => {
                Some((i128::from(days) * 86_400 + i128::from(seconds)) * 1_000_000 + i128::from(us))
            }
            _ => Option::None,
        };
        let fields = |b: &[u8]| -> i128 {
            // Year, month (its top bit `fold`), day, hour, minute, second,
            // microsecond (3 bytes): as microseconds from 0001-01-01.
            let days = days_from_civil(
                i64::from(b[0]) << 8 | i64::from(b[1]),
                i64::from(b[2] & 0x7f),
                i64::from(b[3]),
            );
            let seconds =
                days * 86_400 + i64::from(b[4]) * 3600 + i64::from(b[5]) * 60 + i64::from(b[6]);
            i128::from(seconds) * 1_000_000 + i128::from(u32::from_be_bytes([0, b[7], b[8], b[9]]))
        };
        // The offset of a `timezone`, in microseconds.
        let offset = |tz: &super::value::PyObject| match tz.args.first() {
            Some(PyValue::Object(o)) if tz.is("datetime", "timezone") => {
                o.is("datetime", "timedelta").then(|| delta(&o.args))?
            }
            _ => Option::None,
        };
        let clock = |b: &[u8]| {
            (i128::from(b[0] & 0x7f) * 3600 + i128::from(b[1]) * 60 + i128::from(b[2])) * 1_000_000
                + i128::from(u32::from_be_bytes([0, b[3], b[4], b[5]]))
        };
        match (self.name.as_str(), &self.args[..]) {
            ("timedelta", args) => delta(args).map(TimeKey::Delta),
            ("date", [PyValue::Bytes(b)]) if b.len() == 4 => {
                Some(TimeKey::Date(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            ("datetime", [PyValue::Bytes(b)]) if b.len() == 10 => Some(TimeKey::Naive(fields(b))),
            ("datetime", [PyValue::Bytes(b), PyValue::Object(tz)]) if b.len() == 10 => {
                Some(TimeKey::Aware(fields(b) - offset(tz)?))
            }
            ("time", [PyValue::Bytes(b)]) if b.len() == 6 => Some(TimeKey::Time(clock(b))),
            ("time", [PyValue::Bytes(b), PyValue::Object(tz)]) if b.len() == 6 => {
                Some(TimeKey::AwareTime(clock(b) - offset(tz)?))
            }
            _ => Option::None,
        }
    }
}

/// The days from 0001-01-01 to `year-month-day` (proleptic Gregorian),
/// for dates in the range Python's are.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe
}

/// Python's `a < b` of two `datetime` values, if it is defined: `None` if
/// they are not both such values, or are of two types.
fn time_lt(a: &PyValue, b: &PyValue) -> Option<Result<bool, String>> {
    let (PyValue::Object(a), PyValue::Object(b)) = (a, b) else {
        return Option::None;
    };
    match (a.time_key()?, b.time_key()?) {
        (TimeKey::Naive(_), TimeKey::Aware(_)) | (TimeKey::Aware(_), TimeKey::Naive(_)) => Some(
            Err("can't compare offset-naive and offset-aware datetimes".into()),
        ),
        (TimeKey::Time(_), TimeKey::AwareTime(_)) | (TimeKey::AwareTime(_), TimeKey::Time(_)) => {
            Some(Err(
                "can't compare offset-naive and offset-aware times".into()
            ))
        }
        (x, y) if std::mem::discriminant(&x) == std::mem::discriminant(&y) => Some(Ok(x < y)),
        _ => Option::None,
    }
}

/// How a dict-like value compares (see [`PyValue::mapping`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mapping {
    /// A `dict` or `defaultdict`: by items, in any order.
    Dict,
    /// An `OrderedDict`: with another, by items in order; with any
    /// other dict, as a dict.
    Ordered,
    /// A `Counter`: with another, by counts, a missing one counting 0
    /// (Python 3.10 and later); with any other dict, as a dict.
    Counter,
}

/// Python's `==` of two dict-like values.
fn mapping_eq(
    (ka, a): (Mapping, &[(PyValue, PyValue)]),
    (kb, b): (Mapping, &[(PyValue, PyValue)]),
) -> bool {
    match (ka, kb) {
        // Python's `dict.__eq__(a, b) and all(map(_eq, a, b))`: with the
        // keys equal in order, the dicts are equal if the values are, in
        // the same order. One walk: comparing each key twice (once as a
        // dict's, once in order) took 2**depth of OrderedDicts keyed by
        // OrderedDicts (a value 60 deep kept the server from its other
        // clients for ever).
        (Mapping::Ordered, Mapping::Ordered) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1 == y.1)
        }
        (Mapping::Counter, Mapping::Counter) => counter_eq(a, b),
        _ => dict_eq(a, b),
    }
}

/// Python 3.10's `Counter.__eq__`: each count of either equals the
/// other's (a missing count is 0).
fn counter_eq(a: &[(PyValue, PyValue)], b: &[(PyValue, PyValue)]) -> bool {
    counts_all(a, b, |x, y| Ok(x == y)).unwrap_or(false)
}

/// Python 3.10's `a <= b` and `a == b` of two Counters, in one walk
/// (`false` for both once `a <= b` is known to be false, as `<` needs no
/// more). Asked one after the other, as Python asks them for `<`, each
/// level of Counters nested in Counters walked the levels below it again:
/// two nested 100 deep around a list of a million items took ten times
/// the work the server charged for sorting them.
fn counter_le_eq(
    a: &[(PyValue, PyValue)],
    b: &[(PyValue, PyValue)],
) -> Result<(bool, bool), String> {
    let eq = std::cell::Cell::new(true);
    let le = counts_all(a, b, |x, y| {
        let (le, same) = count_le_eq(x, y)?;
        eq.set(eq.get() && same);
        Ok(le)
    })?;
    Ok((le, le && eq.get()))
}

/// `x <= y` and `x == y` of two counts (Counters' [`counter_le_eq`]).
fn count_le_eq(x: &PyValue, y: &PyValue) -> Result<(bool, bool), String> {
    if let (PyValue::Object(_), PyValue::Object(_)) = (x, y) {
        if let (Some((Mapping::Counter, a)), Some((Mapping::Counter, b))) =
            (x.mapping(), y.mapping())
        {
            return counter_le_eq(a, b);
        }
    }
    if x.lt(y).map_err(|e| e.replacen("'<'", "'<='", 1))? {
        return Ok((true, false));
    }
    let eq = x == y;
    Ok((eq, eq))
}

/// Python's `all(f(a[e], b[e]) for c in (a, b) for e in c)` of two
/// Counters (a missing count is 0), in that order, stopping at the first
/// false answer or error.
fn counts_all(
    a: &[(PyValue, PyValue)],
    b: &[(PyValue, PyValue)],
    f: impl Fn(&PyValue, &PyValue) -> Result<bool, String>,
) -> Result<bool, String> {
    let zero = PyValue::Int(0);
    let in_b = Counts::new(b);
    // The keys of `b` found in `a`. Each key of both is looked up and
    // its counts compared once, in the first pass: Python looks it up
    // and compares again in the second, with the same answer
    // (comparisons are pure), which doubled the work at each level of
    // Counters nested in Counters (as counts or as keys), 2**depth in all
    // (a value 100 deep kept the server from its other clients for ever).
    // A key of `b` not found from `a` is not in `a`: the keys of each are
    // distinct.
    let mut found = vec![false; b.len()];
    for (k, v) in a {
        let count = match in_b.position(k) {
            Some(i) => {
                found[i] = true;
                &b[i].1
            }
            Option::None => &zero,
        };
        if !f(v, count)? {
            return Ok(false);
        }
    }
    for ((_, v), found) in b.iter().zip(found) {
        if !found && !f(&zero, v)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The counts of a Counter, looked up by key: through a hash index if
/// there are many (one search of all for each key of the other would
/// take their product).
struct Counts<'a> {
    items: &'a [(PyValue, PyValue)],
    index: Option<std::collections::HashMap<u64, Vec<usize>>>,
    _memo: HashMemo,
}

impl<'a> Counts<'a> {
    fn new(items: &'a [(PyValue, PyValue)]) -> Counts<'a> {
        let _memo = HashMemo::start();
        let index = (items.len() > 8).then(|| {
            let mut index = std::collections::HashMap::<u64, Vec<usize>>::new();
            for (i, (k, _)) in items.iter().enumerate() {
                index.entry(item_hash(k)).or_default().push(i);
            }
            index
        });
        Counts {
            items,
            index,
            _memo,
        }
    }

    /// Where the key equal to `k` is among the items.
    fn position(&self, k: &PyValue) -> Option<usize> {
        let items = self.items;
        match &self.index {
            Option::None => items.iter().position(|(k2, _)| k2 == k),
            Some(index) => index
                .get(&item_hash(k))?
                .iter()
                .copied()
                .find(|&i| items[i].0 == *k),
        }
    }
}

/// Whether the set `items` holds `x`.
fn set_contains(items: &[PyValue], x: &PyValue) -> bool {
    items.iter().any(|y| y == x)
}

/// Two sets of distinct items are equal: the same length, and each item
/// of one in the other (found through a hash index, for large sets).
fn set_eq(a: &[PyValue], b: &[PyValue]) -> bool {
    a.len() == b.len() && all_in(a, b)
}

/// Whether each item of `a` is in `b` (through a hash index of `b`, unless
/// both are small): one pass over each, where a search of `b` for each
/// would take their product (a subset test of two sets of 100,000 items
/// kept the server from its other clients for seconds).
fn all_in(a: &[PyValue], b: &[PyValue]) -> bool {
    if a.len() <= 8 && b.len() <= 8 {
        return a.iter().all(|x| set_contains(b, x));
    }
    let _memo = HashMemo::start();
    let mut index: std::collections::HashMap<u64, Vec<&PyValue>> =
        std::collections::HashMap::with_capacity(b.len());
    for y in b {
        index.entry(item_hash(y)).or_default().push(y);
    }
    a.iter()
        .all(|x| index.get(&item_hash(x)).is_some_and(|ys| ys.contains(&x)))
}

/// Two dicts (of distinct keys) are equal as in Python: the same length,
/// and each key of one in the other with an equal value, in any order
/// (found through a hash index, for large dicts).
fn dict_eq(a: &[(PyValue, PyValue)], b: &[(PyValue, PyValue)]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let has = |pairs: &[&(PyValue, PyValue)], (k, v): &(PyValue, PyValue)| {
        pairs.iter().any(|(k2, v2)| k2 == k && v2 == v)
    };
    if a.len() <= 8 {
        let b: Vec<_> = b.iter().collect();
        return a.iter().all(|p| has(&b, p));
    }
    let _memo = HashMemo::start();
    let mut index: std::collections::HashMap<u64, Vec<&(PyValue, PyValue)>> =
        std::collections::HashMap::with_capacity(b.len());
    for p in b {
        index.entry(item_hash(&p.0)).or_default().push(p);
    }
    a.iter()
        .all(|p| index.get(&item_hash(&p.0)).is_some_and(|ps| has(ps, p)))
}

thread_local! {
    /// The item-hash sums of the sets and dicts hashed while a [`HashMemo`]
    /// is kept, by the address and length of their items (which stay put
    /// when the set or dict moves): without them, sets nested `d` deep are
    /// hashed again at each level that compares or deduplicates them, `d`
    /// times the work (a probe 300 deep kept the server from its other
    /// clients for seconds).
    static SUMS: std::cell::RefCell<Option<std::collections::HashMap<(usize, usize), u64>>> =
        const { std::cell::RefCell::new(None) };
}

/// Keeps [`SUMS`] while the outermost user that started it runs: a
/// comparison through a hash index, or the decoding of a message. No set
/// or dict hashed meanwhile may be dropped, nor its items changed.
pub(crate) struct HashMemo {
    outermost: bool,
}

impl HashMemo {
    /// Starts remembering, or goes on with an outer memo.
    pub(crate) fn start() -> HashMemo {
        let outermost = SUMS.with_borrow_mut(|sums| {
            sums.is_none() && {
                *sums = Some(std::collections::HashMap::new());
                true
            }
        });
        HashMemo { outermost }
    }
}

impl Drop for HashMemo {
    fn drop(&mut self) {
        if self.outermost {
            SUMS.with_borrow_mut(|sums| *sums = None);
        }
    }
}

/// The item-hash sum of the set or dict whose items are `at` (address,
/// length): remembered while a [`HashMemo`] is kept, else computed.
fn memo_sum(at: (usize, usize), sum: impl FnOnce() -> u64) -> u64 {
    if let Some(known) = SUMS.with_borrow(|sums| sums.as_ref().and_then(|s| s.get(&at).copied())) {
        return known;
    }
    let computed = sum();
    SUMS.with_borrow_mut(|sums| {
        if let Some(sums) = sums {
            sums.insert(at, computed);
        }
    });
    computed
}

/// One item's hash, the same for every call in this process, under a
/// random key of its own: a set hashes as the sum of its items' hashes,
/// and a client that knew the key could compute sets of items whose sums
/// are equal (a subset-sum problem, easy for 64-bit sums), so that set
/// keys collide whatever the key of the dict's hasher. (The key is a
/// secret first word: a keyed `RandomState` in a `OnceLock` here made
/// the hashing of every dict key dearer, through what got inlined.)
fn item_hash(v: &PyValue) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write_u64(item_key());
    v.hash(&mut h);
    h.finish()
}

/// This process's key for [`item_hash`], drawn once (never 0).
#[inline(never)]
fn item_key() -> u64 {
    static KEY: AtomicU64 = AtomicU64::new(0);
    match KEY.load(AtomicOrdering::Relaxed) {
        0 => {
            use std::hash::BuildHasher;
            let fresh = std::hash::RandomState::new().hash_one(0x7365_7473_u64) | 1;
            match KEY.compare_exchange(0, fresh, AtomicOrdering::Relaxed, AtomicOrdering::Relaxed) {
                Ok(_) => fresh,
                Err(first) => first,
            }
        }
        key => key,
    }
}

/// Python's `list.sort()`: stable, by `<` only; on a `TypeError` (items
/// Python cannot order, such as `1` and `"a"`) the list is left as it was.
/// Any answers of `<` (a NaN's included) give some permutation, never a
/// panic.
pub(crate) fn sort(items: &mut Vec<PyValue>) -> Result<(), String> {
    // A merge sort of positions, bottom up.
    let n = items.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut merged = Vec::with_capacity(n);
    let mut width = 1;
    while width < n {
        merged.clear();
        for start in (0..n).step_by(2 * width) {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut i, mut j) = (start, mid);
            while i < mid && j < end {
                // The right one first only if it is less: stable.
                if items[order[j]].lt(&items[order[i]])? {
                    merged.push(order[j]);
                    j += 1;
                } else {
                    merged.push(order[i]);
                    i += 1;
                }
            }
            merged.extend_from_slice(&order[i..mid]);
            merged.extend_from_slice(&order[j..end]);
        }
        std::mem::swap(&mut order, &mut merged);
        width *= 2;
    }
    let mut slots: Vec<Option<PyValue>> = items.drain(..).map(Some).collect();
    items.extend(order.iter().filter_map(|&i| slots[i].take()));
    Ok(())
}

/// A Python number: `bool` and `int` as `Int`.
#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
}

/// 2**63 as a float: floats at or above it are above every `i64`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

impl Number {
    /// Exact comparison, as Python's: an int and a float compare as the
    /// numbers they are, not through a rounding conversion; `None` if a
    /// NaN is involved.
    fn partial_cmp(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
            (Number::Int(a), Number::Float(b)) => int_cmp_float(a, b),
            (Number::Float(a), Number::Int(b)) => int_cmp_float(b, a).map(Ordering::reverse),
        }
    }

    /// The int that this number equals, if there is one (in `i64`).
    fn as_int(self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(i),
            // In range, `f as i64` is exact for an integral float.
            Number::Float(f) if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) => {
                Some(f as i64)
            }
            Number::Float(_) => None,
        }
    }
}

/// `i` compared with `f`, exactly.
fn int_cmp_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    // Now `f.trunc()` is an i64 exactly; the fraction breaks a tie.
    let whole = f.trunc();
    Some(i.cmp(&(whole as i64)).then(if f > whole {
        Ordering::Less
    } else if f < whole {
        Ordering::Greater
    } else {
        Ordering::Equal
    }))
}

/// Python's `==` (see [`PyValue`] for where it differs).
impl PartialEq for PyValue {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // The most common keys, directly (inlined into the dict's probe).
        if let (PyValue::Int(a), PyValue::Int(b)) = (self, other) {
            return a == b;
        }
        self.eq_other(other)
    }
}

impl PyValue {
    /// [`PartialEq`] of every pair of values but two `Int`s.
    fn eq_other(&self, other: &Self) -> bool {
        use PyValue::*;
        if let (Some(a), Some(b)) = (self.number(), other.number()) {
            return a.partial_cmp(b) == Some(Ordering::Equal);
        }
        match (self, other) {
            (None, None) => true,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a == b,
            (Dict(a), Dict(b)) => dict_eq(a, b),
            (Proxy(a), Proxy(b)) => a == b,
            (BigInt(_), _) | (_, BigInt(_)) => {
                big_cmp_any(self, other) == Some(Some(Ordering::Equal))
            }
            (Set(a) | FrozenSet(a), Set(b) | FrozenSet(b)) => set_eq(a, b),
            (Object(a), Object(b)) if a.identity == b.identity => true,
            // A class or function is one object in a process: its name.
            (Object(a), Object(b)) if a.global || b.global => {
                a.global && b.global && a.module == b.module && a.name == b.name
            }
            // OrderedDict, defaultdict, Counter and deque by their items
            // (a dict-like one equal to a dict as a dict is).
            (Object(a), Object(b)) if a.module == "collections" || b.module == "collections" => {
                match (self.mapping(), other.mapping()) {
                    (Some(x), Some(y)) => mapping_eq(x, y),
                    _ => self
                        .deque_items()
                        .is_some_and(|x| Some(x) == other.deque_items()),
                }
            }
            (Object(_), Dict(_)) | (Dict(_), Object(_)) => {
                match (self.mapping(), other.mapping()) {
                    (Some(x), Some(y)) => mapping_eq(x, y),
                    _ => false,
                }
            }
            (Object(a), Object(b)) if a.module == "datetime" && b.module == "datetime" => {
                match (a.time_key(), b.time_key()) {
                    (Some(x), Some(y)) => x == y,
                    _ => a.same_value(b),
                }
            }
            (Object(a), Object(b)) if a.range_key().is_some() && b.range_key().is_some() => {
                a.range_key() == b.range_key()
            }
            (Object(a), Object(b)) if a.by_value() && b.by_value() => {
                a.same_value(b)
                    || self.bytes_like().is_some() && self.bytes_like() == other.bytes_like()
                    || self.complex_real().is_some_and(|r| r == *other)
            }
            (Object(_), Bytes(_)) | (Bytes(_), Object(_)) => {
                self.bytes_like().is_some() && self.bytes_like() == other.bytes_like()
            }
            (Object(_), _) => self.complex_real().is_some_and(|r| r == *other),
            (_, Object(_)) => other.complex_real().is_some_and(|r| r == *self),
            _ => false,
        }
    }
}

/// Python's `==` is an equivalence except for NaN, which equals nothing:
/// a NaN key is a key of its own each time it is stored, as in Python.
impl Eq for PyValue {}

/// What a NaN hashes as: a NaN equals nothing (not even itself here), so
/// any hash will do, and it is a new one each time, as CPython (3.10 on)
/// hashes each NaN by its identity. One hash for all would let a client
/// store many NaN keys (or tuples of one) that all collide, each insert
/// comparing with every one before it. Out of line: the common keys'
/// hashing stays small enough to inline.
#[cold]
#[inline(never)]
fn nan_hash() -> u64 {
    static NAN: AtomicU64 = AtomicU64::new(0);
    NAN.fetch_add(1, AtomicOrdering::Relaxed)
}

/// Consistent with `==`: equal values hash alike (`1`, `1.0` and `true`
/// as the int 1).
impl Hash for PyValue {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The most common keys, directly (as `number` would hash them).
        if let PyValue::Int(i) = self {
            return state.write_i64(*i);
        }
        self.hash_other(state);
    }
}

impl PyValue {
    /// [`Hash`] of every value but an `Int`.
    fn hash_other<H: Hasher>(&self, state: &mut H) {
        if let Some(n) = self.number() {
            match n.as_int() {
                // One write (the hasher's cost is per write): an int's
                // 8 bytes, which no other kind of value writes alone.
                Some(i) => state.write_i64(i),
                // Not integral or out of `i64`'s range: equal only to
                // the same float (a NaN to nothing).
                Option::None => {
                    state.write_u8(1);
                    if let Number::Float(f) = n {
                        state.write_u64(if f.is_nan() { nan_hash() } else { f.to_bits() });
                    }
                }
            }
            return;
        }
        match self {
            PyValue::Str(s) => {
                state.write_u8(2);
                s.hash(state);
            }
            PyValue::Bytes(b) => {
                state.write_u8(3);
                b.hash(state);
            }
            PyValue::List(v) => {
                state.write_u8(4);
                v.hash(state);
            }
            PyValue::Tuple(v) => {
                state.write_u8(5);
                v.hash(state);
            }
            PyValue::Dict(d) => hash_mapping(d, Mapping::Dict, state),
            PyValue::Proxy(r) => {
                state.write_u8(7);
                r.hash(state);
            }
            PyValue::BigInt(b) => match big_as_float(b) {
                // As the float it equals.
                Some(f) => {
                    state.write_u8(1);
                    state.write_u64(f.to_bits());
                }
                Option::None => {
                    state.write_u8(9);
                    b.hash(state);
                }
            },
            // Order-independent: the sum of the items' own hashes.
            PyValue::Set(v) | PyValue::FrozenSet(v) => {
                state.write_u8(10);
                state.write_u64(memo_sum((v.as_ptr() as usize, v.len()), || {
                    v.iter().map(item_hash).fold(0, u64::wrapping_add)
                }));
            }
            PyValue::Object(o) => {
                if let Some((kind, items)) = self.mapping() {
                    hash_mapping(items, kind, state);
                } else if let Some(key) = o.time_key() {
                    state.write_u8(17);
                    key.hash(state);
                } else if let Some(items) = self.deque_items() {
                    state.write_u8(16);
                    items.hash(state);
                } else if let Some(b) = self.bytes_like() {
                    state.write_u8(3);
                    b.hash(state);
                } else if let Some(real) = self.complex_real() {
                    real.hash(state);
                } else if let Some(key) = o.range_key() {
                    state.write_u8(13);
                    key.hash(state);
                } else if o.global {
                    state.write_u8(14);
                    o.module.hash(state);
                    o.name.hash(state);
                } else if let Some(key) = o.path_key() {
                    state.write_u8(15);
                    key.hash(state);
                } else if o.by_value() {
                    // Every part `same_value` compares: objects that
                    // differed only in their state or items (a client's
                    // `OrderedDict`s, made with no arguments) all collided.
                    state.write_u8(11);
                    o.module.hash(state);
                    o.name.hash(state);
                    o.args.hash(state);
                    o.kwargs.hash(state);
                    o.state.hash(state);
                    o.list_items.hash(state);
                    o.dict_items.hash(state);
                } else {
                    state.write_u8(12);
                    state.write_u64(o.identity);
                }
            }
            _ => state.write_u8(8),
        }
    }
}

/// A dict-like value's hash: order-independent, as its `==`. A Counter
/// leaves out its zero counts, which its `==` with another Counter
/// ignores (but a dict's does not: `Counter(a=0) == {'a': 0}` and
/// `Counter(a=0) == Counter()`, but `{'a': 0} != Counter()`; no hash
/// follows such an `==`, and Python hashes none of them: the server
/// takes no Counter as a key).
fn hash_mapping<H: Hasher>(items: &[(PyValue, PyValue)], kind: Mapping, state: &mut H) {
    state.write_u8(6);
    let counted = |(_, v): &&(PyValue, PyValue)| kind != Mapping::Counter || *v != PyValue::Int(0);
    let pair = |(k, v): &(PyValue, PyValue)| item_hash(k) ^ item_hash(v).rotate_left(1);
    state.write_u64(memo_sum((items.as_ptr() as usize, items.len()), || {
        items
            .iter()
            .filter(counted)
            .map(pair)
            .fold(0, u64::wrapping_add)
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(v: &PyValue) -> u64 {
        use std::hash::BuildHasher;
        // One fixed key, so that hashes compare across calls.
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(v)
    }

    /// Dicts compare as in Python, whatever their order: `[{1: 2, 3: 4}]`
    /// holds `{3: 4, 1: 2}` (`count`, `index`, `remove`, `in` depend on
    /// it); and equal dicts hash alike (the server takes them as keys).
    #[test]
    fn dicts_are_equal_in_any_order() {
        use std::hash::BuildHasher;
        let dict = |pairs: &[(i64, i64)]| {
            PyValue::Dict(
                pairs
                    .iter()
                    .map(|&(k, v)| (PyValue::Int(k), PyValue::Int(v)))
                    .collect(),
            )
        };
        let s = std::hash::RandomState::new();
        for n in [2, 20] {
            let forward: Vec<(i64, i64)> = (0..n).map(|i| (i, i * 10)).collect();
            let backward: Vec<(i64, i64)> = forward.iter().rev().copied().collect();
            let (a, b) = (dict(&forward), dict(&backward));
            assert_eq!(a, b, "{n} items");
            assert_eq!(s.hash_one(&a), s.hash_one(&b));
            let mut other = backward.clone();
            other[0].1 += 1;
            assert_ne!(a, dict(&other));
            assert_ne!(a, dict(&forward[1..]));
            let mut swapped = forward.clone();
            (swapped[0].1, swapped[1].1) = (swapped[1].1, swapped[0].1);
            assert_ne!(a, dict(&swapped));
        }
    }

    /// Sets hash by their items' hashes, which must not be the public
    /// ones of an unkeyed hasher (whose sums a client could make collide).
    #[test]
    fn set_items_hash_under_a_secret_key() {
        let items: Vec<PyValue> = (0..4).map(PyValue::Int).collect();
        assert!(items.iter().all(|v| item_hash(v) != hash(v)));
        assert_eq!(item_hash(&items[1]), item_hash(&PyValue::Float(1.0)));
    }

    #[test]
    fn numbers_compare_and_hash_exactly_as_in_python() {
        let big = 1i64 << 53;
        // 2**53 + 1 == 2.0**53 is False in Python; 2**53 == 2.0**53 is True.
        assert_ne!(PyValue::Int(big + 1), PyValue::Float(big as f64));
        assert_eq!(PyValue::Int(big), PyValue::Float(big as f64));
        assert_eq!(
            PyValue::Int(big + 1).lt(&PyValue::Float(big as f64)),
            Ok(false)
        );
        assert_eq!(
            PyValue::Float(big as f64).lt(&PyValue::Int(big + 1)),
            Ok(true)
        );
        // 2**63 - 1 < 2.0**63; -2**63 == -2.0**63.
        assert_eq!(
            PyValue::Int(i64::MAX).lt(&PyValue::Float(TWO_POW_63)),
            Ok(true)
        );
        assert_eq!(PyValue::Int(i64::MIN), PyValue::Float(-TWO_POW_63));
        // 1, 1.0 and True are one key.
        let one = [PyValue::Int(1), PyValue::Float(1.0), PyValue::Bool(true)];
        for a in &one {
            for b in &one {
                assert_eq!(a, b);
                assert_eq!(hash(a), hash(b));
            }
        }
        assert_eq!(PyValue::Float(-0.0), PyValue::Int(0));
        assert_eq!(hash(&PyValue::Float(-0.0)), hash(&PyValue::Int(0)));
        let nan = PyValue::Float(f64::NAN);
        assert_ne!(nan, nan.clone());
        assert_eq!(nan.lt(&PyValue::Int(1)), Ok(false));
        assert_eq!(PyValue::Int(1).lt(&nan), Ok(false));
    }

    #[test]
    fn sort_is_pythons_and_refuses_what_python_refuses() {
        let big = 1i64 << 53;
        // The list that made the server panic (issue 12.3).
        let mut l: Vec<PyValue> = (0..7)
            .flat_map(|_| {
                [
                    PyValue::Int(big),
                    PyValue::Float(big as f64),
                    PyValue::Int(big + 1),
                ]
            })
            .collect();
        sort(&mut l).unwrap();
        assert!(l[..14].iter().all(|v| *v == PyValue::Int(big)));
        assert!(l[14..]
            .iter()
            .all(|v| matches!(v, PyValue::Int(i) if *i == big + 1)));
        // Stable: equal ints and floats keep their order.
        assert!(matches!(l[0], PyValue::Int(_)) && matches!(l[1], PyValue::Float(_)));
        let mut l = vec![PyValue::Bool(true), PyValue::Float(0.5), PyValue::Int(0)];
        sort(&mut l).unwrap();
        assert_eq!(l, [PyValue::Int(0), PyValue::Float(0.5), PyValue::Int(1)]);
        let mut l = vec![PyValue::Int(1), PyValue::Str("a".into())];
        assert_eq!(
            sort(&mut l).unwrap_err(),
            "'<' not supported between instances of 'str' and 'int'"
        );
        assert_eq!(
            l,
            [PyValue::Int(1), PyValue::Str("a".into())],
            "left as it was"
        );
        assert!(sort(&mut vec![PyValue::None, PyValue::None]).is_err());
        let nested = |x: PyValue| PyValue::List(vec![PyValue::Int(1), x]);
        assert!(sort(&mut vec![
            nested(PyValue::Int(2)),
            nested(PyValue::Str("a".into()))
        ])
        .is_err());
        let mut l = vec![
            PyValue::List(vec![PyValue::Int(2), PyValue::Str("a".into())]),
            PyValue::List(vec![PyValue::Int(1)]),
        ];
        sort(&mut l).unwrap();
        assert_eq!(l[0], PyValue::List(vec![PyValue::Int(1)]));
        // NaNs give some order, never a panic.
        let mut l: Vec<PyValue> = (0..100)
            .map(|i| {
                if i % 3 == 0 {
                    PyValue::Float(f64::NAN)
                } else {
                    PyValue::Int(100 - i)
                }
            })
            .collect();
        sort(&mut l).unwrap();
        assert_eq!(l.len(), 100);
    }

    #[test]
    fn big_ints_compare_and_hash_exactly() {
        let two63 = PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
        let two70 = PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40]);
        let minus_two70 = PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xc0]);
        let two64_plus_1 = PyValue::BigInt(vec![1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(two63, PyValue::Float(TWO_POW_63));
        assert_eq!(hash(&two63), hash(&PyValue::Float(TWO_POW_63)));
        assert_eq!(two70, PyValue::Float(1180591620717411303424.0));
        assert_eq!(
            hash(&two70),
            hash(&PyValue::Float(1180591620717411303424.0))
        );
        assert_eq!(minus_two70, PyValue::Float(-1180591620717411303424.0));
        // 2**64 + 1 is no float; the nearest is 2.0**64, less than it.
        let f64_2_64 = PyValue::Float(18446744073709551616.0);
        assert_ne!(two64_plus_1, f64_2_64);
        assert_eq!(f64_2_64.lt(&two64_plus_1), Ok(true));
        assert_eq!(two64_plus_1.lt(&f64_2_64), Ok(false));
        assert_eq!(PyValue::Int(i64::MAX).lt(&two63), Ok(true));
        assert_eq!(minus_two70.lt(&PyValue::Int(i64::MIN)), Ok(true));
        assert_eq!(minus_two70.lt(&two70), Ok(true));
        assert_eq!(two70.lt(&PyValue::Float(f64::INFINITY)), Ok(true));
        assert_eq!(two70.lt(&PyValue::Float(0.5)), Ok(false));
        assert_eq!(two70.lt(&PyValue::Float(f64::NAN)), Ok(false));
        assert_eq!(
            two70.lt(&PyValue::Str("a".into())).unwrap_err(),
            "'<' not supported between instances of 'int' and 'str'"
        );
        // An int that fits i64, even if given as a BigInt, is that int.
        assert_eq!(PyValue::BigInt(vec![1, 0, 0]), PyValue::Int(1));
        assert_eq!(
            hash(&PyValue::BigInt(vec![1, 0, 0])),
            hash(&PyValue::Int(1))
        );
        assert_eq!(PyValue::BigInt(vec![]), PyValue::Int(0));
        assert_eq!(two70.to_string(), "1180591620717411303424");
        assert_eq!(minus_two70.to_string(), "-1180591620717411303424");
        assert_eq!(int_bytes(-1), vec![0xff]);
        assert_eq!(int_bytes(0), Vec::<u8>::new());
        assert_eq!(int_bytes(128), vec![0x80, 0]);
    }

    /// `OrderedDict`, `defaultdict`, `Counter` and `deque` (as a Python
    /// client pickles them) compare by their items as Python's do, and
    /// equal ones hash alike.
    #[test]
    fn collections_compare_by_their_items() {
        use super::super::value::PyObject;
        let pairs = |kv: &[(&str, i64)]| -> Vec<(PyValue, PyValue)> {
            kv.iter().map(|&(k, v)| (k.into(), v.into())).collect()
        };
        let with_items = |name: &str, args: Vec<PyValue>, kv: &[(&str, i64)]| {
            let mut o = PyObject::call("collections", name, args);
            o.dict_items = pairs(kv);
            PyValue::Object(Box::new(o))
        };
        let od = |kv: &[(&str, i64)]| with_items("OrderedDict", vec![], kv);
        let dd = |kv: &[(&str, i64)]| with_items("defaultdict", vec![PyValue::None], kv);
        let counter = |kv: &[(&str, i64)]| {
            let args = vec![PyValue::Dict(pairs(kv))];
            PyValue::Object(Box::new(PyObject::call("collections", "Counter", args)))
        };
        let dict = |kv: &[(&str, i64)]| PyValue::Dict(pairs(kv));
        let deque = |items: Vec<PyValue>| {
            let mut o = PyObject::call("collections", "deque", vec![PyValue::Tuple(vec![])]);
            o.list_items = items;
            PyValue::Object(Box::new(o))
        };
        let ab = [("a", 1), ("b", 2)];
        let ba = [("b", 2), ("a", 1)];
        // Equal as dicts, whatever the order, but two OrderedDicts in order.
        for x in [od(&ab), dd(&ab), counter(&ab), dict(&ab)] {
            for y in [od(&ba), dd(&ba), counter(&ba), dict(&ba)] {
                let ordered = matches!((&x, &y), (PyValue::Object(a), PyValue::Object(b))
                    if a.name == "OrderedDict" && b.name == "OrderedDict");
                assert_eq!(x == y, !ordered, "{x:?} == {y:?}");
                assert_eq!(y == x, !ordered, "{y:?} == {x:?}");
                if !ordered {
                    assert_eq!(hash(&x), hash(&y), "{x:?} and {y:?} hash alike");
                }
            }
            assert_ne!(x, dict(&[("a", 1)]));
            assert_ne!(x, deque(vec!["a".into(), "b".into()]));
        }
        assert_eq!(od(&ab), od(&ab));
        // Counters: a missing count is 0 (Python 3.10 on), and `<` is a
        // multiset's.
        let a1 = counter(&[("a", 1)]);
        let a1b0 = counter(&[("a", 1), ("b", 0)]);
        assert_eq!(a1, a1b0);
        assert_eq!(hash(&a1), hash(&a1b0));
        assert_ne!(a1b0, dict(&[("a", 1)]), "a dict's == counts every key");
        assert_eq!(a1.lt(&counter(&[("a", 2)])), Ok(true));
        assert_eq!(a1.lt(&counter(&[("b", 1)])), Ok(false));
        assert_eq!(a1.lt(&a1b0), Ok(false));
        assert!(a1.lt(&dict(&[("a", 2)])).is_err());
        // Deques: by items, and ordered as sequences; never a list.
        let d12 = deque(vec![1.into(), 2.into()]);
        assert_eq!(
            d12,
            deque(vec![1.0.into(), true.into(), 2.into()][1..].to_vec())
        );
        assert_eq!(d12, deque(vec![true.into(), 2.0.into()]));
        assert_eq!(hash(&d12), hash(&deque(vec![true.into(), 2.0.into()])));
        assert_ne!(d12, PyValue::List(vec![1.into(), 2.into()]));
        assert_eq!(deque(vec![1.into()]).lt(&d12), Ok(true));
        assert!(d12.lt(&PyValue::List(vec![])).is_err());
        // None of them is a key; nor is a tuple holding one.
        for v in [od(&ab), dd(&ab), counter(&ab), d12.clone()] {
            assert!(v.unhashable().is_some());
            assert!(PyValue::Tuple(vec![1.into(), v]).unhashable().is_some());
        }
        assert_eq!(PyValue::Tuple(vec![1.into()]).unhashable(), None);
        assert_eq!(d12.type_name(), "collections.deque");
        assert_eq!(a1.type_name(), "Counter");
    }

    #[test]
    fn sets_and_objects_compare_as_in_python() {
        use super::super::value::PyObject;
        let set = |items: Vec<PyValue>| PyValue::Set(items);
        let a = set(vec![1.into(), "x".into(), PyValue::Tuple(vec![2.into()])]);
        let b = PyValue::FrozenSet(vec![
            PyValue::Tuple(vec![2.0.into()]),
            "x".into(),
            true.into(),
        ]);
        assert_eq!(a, b, "order and set/frozenset do not matter");
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, set(vec![1.into(), "x".into()]));
        assert_eq!(set(vec![1.into()]).lt(&a), Ok(true), "a proper subset");
        assert_eq!(a.lt(&b), Ok(false));
        assert_eq!(set(vec![9.into()]).lt(&a), Ok(false));
        let big: Vec<PyValue> = (0..100).map(PyValue::from).collect();
        let mut reversed = big.clone();
        reversed.reverse();
        assert_eq!(set(big.clone()), PyValue::FrozenSet(reversed));
        let mut other = big.clone();
        other[50] = PyValue::Int(1000);
        assert_ne!(set(big), set(other));
        assert_eq!(PyValue::Set(vec![]).to_string(), "set()");

        let obj = |module: &str, name: &str, args: Vec<PyValue>| {
            PyValue::Object(Box::new(PyObject::call(module, name, args)))
        };
        // complex, slice, range and bytearray by value.
        let c = obj("builtins", "complex", vec![1.0.into(), 0.0.into()]);
        assert_eq!(c, PyValue::Int(1));
        assert_eq!(hash(&c), hash(&PyValue::Int(1)));
        assert_eq!(c, obj("builtins", "complex", vec![1.0.into(), 0.0.into()]));
        assert_ne!(c, obj("builtins", "complex", vec![1.0.into(), 2.0.into()]));
        let ba = obj(
            "builtins",
            "bytearray",
            vec![PyValue::Bytes(b"ab".to_vec())],
        );
        assert_eq!(ba, PyValue::Bytes(b"ab".to_vec()));
        assert_eq!(hash(&ba), hash(&PyValue::Bytes(b"ab".to_vec())));
        assert_eq!(ba.lt(&PyValue::Bytes(b"b".to_vec())), Ok(true));
        // Ranges as the sequences they are.
        let range =
            |a: i64, b: i64, c: i64| obj("builtins", "range", vec![a.into(), b.into(), c.into()]);
        for (x, y) in [
            ((0, 0, 1), (5, 5, 1)),
            ((0, 3, 2), (0, 4, 2)),
            ((1, 2, 5), (1, 3, 7)),
            ((3, 0, -1), (3, 0, -1)),
        ] {
            let (x, y) = (range(x.0, x.1, x.2), range(y.0, y.1, y.2));
            assert_eq!(x, y);
            assert_eq!(hash(&x), hash(&y));
        }
        assert_ne!(range(0, 3, 1), range(0, 3, 2));
        assert_ne!(range(0, 2, 1), range(1, 2, 1));
        assert_ne!(
            range(0, 3, 1),
            PyValue::List(vec![0.into(), 1.into(), 2.into()])
        );
        let s1 = obj("builtins", "slice", vec![1.into(), 3.into(), PyValue::None]);
        let s2 = obj("builtins", "slice", vec![1.into(), 4.into(), PyValue::None]);
        assert_eq!(s1, s1.clone());
        assert_eq!(s1.lt(&s2), Ok(true));
        // Any other object only equals itself (its copies).
        let p = obj("__main__", "Point", vec![1.into()]);
        let q = obj("__main__", "Point", vec![1.into()]);
        assert_ne!(p, q);
        assert_eq!(p, p.clone());
        assert_eq!(hash(&p), hash(&p.clone()));
        assert_eq!(
            p.lt(&q).unwrap_err(),
            "'<' not supported between instances of 'Point' and 'Point'"
        );
        let mut l = vec![s2.clone(), s1.clone()];
        sort(&mut l).unwrap();
        assert_eq!(l, [s1, s2]);
    }

    /// Property test of the value model over many random values built from
    /// the numbers where conversions go wrong: equal values hash alike,
    /// `==` is symmetric (and transitive without NaNs), and `<` is
    /// consistent with `==`, asymmetric and transitive wherever Python
    /// defines it.
    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri")]
    fn equal_values_hash_alike_and_order_is_consistent() {
        let big = 1i64 << 53;
        let atoms = [
            PyValue::None,
            PyValue::Bool(false),
            PyValue::Bool(true),
            PyValue::Int(0),
            PyValue::Int(1),
            PyValue::Int(-1),
            PyValue::Int(big),
            PyValue::Int(big + 1),
            PyValue::Int(big - 1),
            PyValue::Int(i64::MAX),
            PyValue::Int(i64::MIN),
            PyValue::Float(0.0),
            PyValue::Float(-0.0),
            PyValue::Float(1.0),
            PyValue::Float(0.5),
            PyValue::Float(big as f64),
            PyValue::Float((big + 2) as f64),
            PyValue::Float(TWO_POW_63),
            PyValue::Float(-TWO_POW_63),
            PyValue::Float(f64::INFINITY),
            PyValue::Float(f64::NEG_INFINITY),
            PyValue::Float(f64::NAN),
            PyValue::Str("a".into()),
            PyValue::Str("b".into()),
            PyValue::Bytes(b"a".to_vec()),
            // 2**63, -2**63 - 1, 2**70, -2**70, 2**64 + 1, and floats
            // that equal some of them.
            PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
            PyValue::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]),
            PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40]),
            PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xc0]),
            PyValue::BigInt(vec![1, 0, 0, 0, 0, 0, 0, 0, 1]),
            PyValue::Float(1180591620717411303424.0),
            PyValue::Float(-1180591620717411303424.0),
            PyValue::Float(18446744073709551616.0),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn build(atoms: &[PyValue], next: &mut dyn FnMut() -> u64, depth: u32) -> PyValue {
            let r = next();
            if depth == 0 || r % 3 != 0 {
                return atoms[(r >> 8) as usize % atoms.len()].clone();
            }
            let items = (0..(r >> 4) % 3)
                .map(|_| build(atoms, next, depth - 1))
                .collect();
            if r & 8 == 0 {
                PyValue::List(items)
            } else {
                PyValue::Tuple(items)
            }
        }
        let values: Vec<PyValue> = (0..300).map(|_| build(&atoms, &mut next, 3)).collect();
        let has_nan = |v: &PyValue| format!("{v:?}").contains("NaN");
        for a in &values {
            for b in &values {
                assert_eq!(a == b, b == a, "{a:?} {b:?}");
                if a == b {
                    assert_eq!(hash(a), hash(b), "{a:?} == {b:?}");
                    assert!(!a.lt(b).unwrap_or(false), "{a:?} == {b:?}");
                }
                if let (Ok(ab), Ok(ba)) = (a.lt(b), b.lt(a)) {
                    assert!(!(ab && ba), "{a:?} < {b:?} < {a:?}");
                    if !has_nan(a) && !has_nan(b) {
                        assert_eq!(!ab && !ba, a == b, "{a:?} vs {b:?}: a total order");
                    }
                }
            }
        }
        let clean: Vec<&PyValue> = values.iter().filter(|v| !has_nan(v)).collect();
        for a in clean.iter().take(80) {
            for b in clean.iter().take(80) {
                for c in clean.iter().take(80) {
                    if a == b && b == c {
                        assert_eq!(a, c);
                    }
                    if a.lt(b) == Ok(true) && b.lt(c) == Ok(true) {
                        assert_eq!(a.lt(c), Ok(true), "{a:?} < {b:?} < {c:?}");
                    }
                }
            }
        }
    }
}
