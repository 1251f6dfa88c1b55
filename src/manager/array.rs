//! The server's `Array`: CPython's manager makes an `array.array(typecode,
//! sequence)`, whose typecode and items are checked as `array.array`
//! checks them (the same exceptions and messages, in Python 3.13's words),
//! and which an `ArrayProxy` reads and writes by index and slice.

use super::apply::{big_i128, int_value, items_of, slice_of};
use super::limits::Budget;
use super::methods::int_of;
use super::protocol::Exception;
use super::queue::Args;
use super::value::PyObject;
use super::PyValue;

/// The methods an `ArrayProxy` calls (its `_exposed_`).
pub(super) const EXPOSED: &[&str] = &["__len__", "__getitem__", "__setitem__"];

/// The items of an array, by the kind of its typecode.
enum Items {
    /// Integer typecodes (`b` … `Q`): each within its C type's range.
    Int(Vec<i128>),
    /// `f` (each rounded to a C float) and `d`.
    Float(Vec<f64>),
    /// `u` and `w`: characters.
    Char(Vec<char>),
}

/// An `array.array`.
pub(super) struct Array {
    typecode: char,
    items: Items,
}

fn overflow(message: &str) -> Exception {
    ("OverflowError", message.into())
}

fn type_error(message: impl Into<String>) -> Exception {
    ("TypeError", message.into())
}

/// The bytes of one item of `typecode` (`array.itemsize`).
fn item_size(typecode: char) -> usize {
    match typecode {
        'b' | 'B' => 1,
        'h' | 'H' => 2,
        'i' | 'I' | 'f' | 'u' | 'w' => 4,
        _ => 8,
    }
}

/// `v` as an item of the integer `typecode`, with `array.array`'s
/// exceptions: a C `long` first for the small types, then the type's own
/// range, in the order and words of CPython's converters.
fn int_item(typecode: char, v: &PyValue) -> Result<i128, Exception> {
    let n = match (v, int_of(v)) {
        (PyValue::BigInt(b), _) => big_i128(b).unwrap_or(if matches!(int_of(v), Some(Err(true))) {
            i128::MIN
        } else {
            i128::MAX
        }),
        (_, Some(Ok(i))) => i128::from(i),
        _ => {
            return Err(type_error(format!(
                "'{}' object cannot be interpreted as an integer",
                v.type_name()
            )))
        }
    };
    let range = |low: i128, high: i128, name: &str| {
        if n > high {
            Err(overflow(&format!("{name} is greater than maximum")))
        } else if n < low {
            Err(overflow(&format!("{name} is less than minimum")))
        } else {
            Ok(n)
        }
    };
    let long = |n: i128| {
        if i64::try_from(n).is_err() {
            Err(overflow("Python int too large to convert to C long"))
        } else {
            Ok(n)
        }
    };
    let short = (i128::from(i16::MIN), i128::from(i16::MAX));
    let int = (i128::from(i32::MIN), i128::from(i32::MAX));
    match typecode {
        'b' => {
            long(n)?;
            range(short.0, short.1, "signed short integer")?;
            range(-128, 127, "signed char")
        }
        'B' => long(n).and_then(|_| range(0, 255, "unsigned byte integer")),
        'h' => long(n).and_then(|_| range(short.0, short.1, "signed short integer")),
        'H' => {
            long(n)?;
            range(int.0, int.1, "signed integer")?;
            range(0, 65535, "unsigned short")
        }
        'i' => long(n).and_then(|_| range(int.0, int.1, "signed integer")),
        'l' => long(n),
        'I' | 'L' if n < 0 => Err(overflow("can't convert negative value to unsigned int")),
        'I' | 'L' if u64::try_from(n).is_err() => Err(overflow(
            "Python int too large to convert to C unsigned long",
        )),
        'I' => range(0, u32::MAX.into(), "unsigned int"),
        'L' => Ok(n),
        'q' if i64::try_from(n).is_err() => Err(overflow("int too big to convert")),
        'Q' if n < 0 => Err(overflow("can't convert negative int to unsigned")),
        'Q' if u64::try_from(n).is_err() => Err(overflow("int too big to convert")),
        _ => Ok(n),
    }
}

/// `v` as a C double, as `float(v)` of an int or a float.
pub(super) fn float_item(v: &PyValue) -> Result<f64, Exception> {
    match v {
        PyValue::Float(f) => Ok(*f),
        PyValue::Int(i) => Ok(*i as f64),
        PyValue::Bool(b) => Ok(f64::from(u8::from(*b))),
        PyValue::BigInt(b) => match big_i128(b) {
            Some(n) => Ok(n as f64),
            None => {
                // Past 128 bits: its magnitude (the two's complement of a
                // negative one negated), too large if it is 2**1024 or
                // rounds to it, as in Python; else its top bytes give it.
                let negative = b.last().is_some_and(|&top| top & 0x80 != 0);
                let mut magnitude = b.to_vec();
                if negative {
                    let mut carry = true;
                    for byte in &mut magnitude {
                        (*byte, carry) = (!*byte).overflowing_add(u8::from(carry));
                    }
                }
                let f = magnitude
                    .iter()
                    .rev()
                    .fold(0.0, |acc, &byte| acc * 256.0 + f64::from(byte));
                if super::queue::rounds_past_float(&magnitude) || f.is_infinite() {
                    return Err(overflow("int too large to convert to float"));
                }
                Ok(if negative { -f } else { f })
            }
        },
        other => Err(type_error(format!(
            "must be real number, not {}",
            other.type_name()
        ))),
    }
}

impl Array {
    /// `Array(typecode, sequence, lock=True)`, from `create`'s arguments.
    pub(super) fn new(
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
        budget: &mut Budget,
    ) -> Result<Array, Exception> {
        let mut bound = Args::of("", "Array", args, kwds)
            .bind(&["typecode", "sequence", "lock"], 2)?
            .into_iter()
            .flatten();
        let (typecode, sequence) = (
            bound.next().unwrap_or(PyValue::None),
            bound.next().unwrap_or(PyValue::None),
        );
        let typecode = match &typecode {
            PyValue::Str(s) if s.chars().count() == 1 => s.chars().next().unwrap_or('?'),
            other => {
                return Err(type_error(format!(
                    "array() argument 1 must be a unicode character, not {}",
                    other.type_name()
                )))
            }
        };
        // `array.array` refuses a str or what is not iterable before it
        // looks the typecode up.
        if matches!(sequence, PyValue::Str(_)) && !matches!(typecode, 'u' | 'w') {
            return Err(type_error(format!(
                "cannot use a str to initialize an array with typecode '{typecode}'"
            )));
        }
        let items = match typecode {
            'b' | 'B' | 'h' | 'H' | 'i' | 'I' | 'l' | 'L' | 'q' | 'Q' => Items::Int(Vec::new()),
            'f' | 'd' => Items::Float(Vec::new()),
            // 'w' (Python 3.13's) is 'u' where a wchar_t is 4 bytes.
            'u' | 'w' => Items::Char(Vec::new()),
            _ => {
                // (Iterated only for its `TypeError`: a range, which
                // would be made whole, is iterable anyway.)
                let range = matches!(&sequence, PyValue::Object(o) if o.is_builtin("range"));
                if !range {
                    items_of(sequence, budget)?;
                }
                return Err((
                    "ValueError",
                    "bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)".into(),
                ));
            }
        };
        let mut array = Array { typecode, items };
        let values = match sequence {
            PyValue::Str(s) => {
                array.reserve(s.chars().count(), budget)?;
                array.items = Items::Char(s.chars().collect());
                return Ok(array);
            }
            PyValue::Bytes(b) => {
                array.reserve(b.len() / item_size(typecode), budget)?;
                return array.extend_from_bytes(&b).map(|()| array);
            }
            // Decoded within the budget already, in more memory than
            // the array's items take.
            other => items_of(other, budget)?,
        };
        for v in &values {
            array.push(v)?;
        }
        Ok(array)
    }

    /// Takes from `budget` the memory `n` items of this array take on the
    /// server, for items that arrived in less (bytes, a str): an int item
    /// takes 16 bytes here.
    fn reserve(&self, n: usize, budget: &mut Budget) -> Result<(), Exception> {
        let each = match &self.items {
            Items::Int(_) => std::mem::size_of::<i128>(),
            Items::Float(_) => std::mem::size_of::<f64>(),
            Items::Char(_) => std::mem::size_of::<char>(),
        };
        budget.memory(n.saturating_mul(each))
    }

    /// `frombytes`: the machine values of the bytes `b`.
    fn extend_from_bytes(&mut self, b: &[u8]) -> Result<(), Exception> {
        let size = item_size(self.typecode);
        if b.len() % size != 0 {
            return Err((
                "ValueError",
                "bytes length not a multiple of item size".into(),
            ));
        }
        for chunk in b.chunks_exact(size) {
            let mut le = [0u8; 8];
            le[..size].copy_from_slice(chunk);
            let raw = u64::from_le_bytes(le);
            let signed = |bits: u32| i128::from((raw << (64 - bits)) as i64 >> (64 - bits));
            match (&mut self.items, self.typecode) {
                (Items::Int(v), 'b' | 'h' | 'i' | 'l' | 'q') => v.push(signed(size as u32 * 8)),
                (Items::Int(v), _) => v.push(i128::from(raw)),
                (Items::Float(v), 'f') => v.push(f64::from(f32::from_bits(raw as u32))),
                (Items::Float(v), _) => v.push(f64::from_bits(raw)),
                (Items::Char(v), _) => v.push(char::from_u32(raw as u32).ok_or_else(|| {
                    (
                        "UnicodeDecodeError",
                        "'utf-32-le' codec can't decode bytes: code point not in range(0x110000)"
                            .to_string(),
                    )
                })?),
            }
        }
        Ok(())
    }

    /// Appends `v`, checked as an item of this array.
    fn push(&mut self, v: &PyValue) -> Result<(), Exception> {
        let typecode = self.typecode;
        match &mut self.items {
            Items::Int(items) => items.push(int_item(typecode, v)?),
            Items::Float(items) => items.push(self::float(typecode, float_item(v)?)),
            Items::Char(items) => items.push(char_item(v)?),
        }
        Ok(())
    }

    fn len(&self) -> usize {
        match &self.items {
            Items::Int(v) => v.len(),
            Items::Float(v) => v.len(),
            Items::Char(v) => v.len(),
        }
    }

    /// Item `i` (within the array) as Python gives it.
    fn get(&self, i: usize) -> PyValue {
        match &self.items {
            Items::Int(v) => int_value(v[i]),
            Items::Float(v) => PyValue::Float(v[i]),
            Items::Char(v) => PyValue::Str(v[i].into()),
        }
    }

    /// The position `index` names, or `IndexError(out_of_range)`.
    fn position(&self, index: i64, out_of_range: &str) -> Result<usize, Exception> {
        let len = self.len() as i64;
        let i = if index < 0 { index + len } else { index };
        if (0..len).contains(&i) {
            Ok(i as usize)
        } else {
            Err(("IndexError", out_of_range.into()))
        }
    }

    /// An index or a slice as `array.array`'s subscript reads it.
    fn key(key: &PyValue) -> Result<Result<i64, super::apply::Slice>, Exception> {
        if let Some(slice) = slice_of(key) {
            return slice.map(Err);
        }
        match int_of(key) {
            Some(Ok(i)) => Ok(Ok(i)),
            Some(Err(_)) => Err((
                "IndexError",
                "cannot fit 'int' into an index-sized integer".into(),
            )),
            None => Err(type_error("array indices must be integers")),
        }
    }

    /// Calls `method`, one of [`EXPOSED`]: its answer (a slice's copied
    /// within `budget`) or its exception.
    pub(super) fn call(
        &mut self,
        method: &str,
        args: Vec<PyValue>,
        kwds: Vec<(PyValue, PyValue)>,
        budget: &mut Budget,
    ) -> Result<PyValue, Exception> {
        // A slot wrapper's checks of its arguments.
        let expected = match method {
            "__len__" => 0,
            "__getitem__" => 1,
            _ => 2,
        };
        if !kwds.is_empty() {
            return Err(type_error(format!(
                "wrapper {method}() takes no keyword arguments"
            )));
        }
        if args.len() != expected {
            let s = if expected == 1 { "" } else { "s" };
            return Err(type_error(format!(
                "expected {expected} argument{s}, got {}",
                args.len()
            )));
        }
        let mut args = args.into_iter();
        let key = args.next().unwrap_or(PyValue::None);
        match method {
            "__len__" => Ok(PyValue::Int(self.len() as i64)),
            "__getitem__" => match Array::key(&key)? {
                Ok(i) => Ok(self.get(self.position(i, "array index out of range")?)),
                Err(slice) => {
                    let mut part = Array {
                        typecode: self.typecode,
                        items: Items::Int(Vec::new()),
                    };
                    part.items = match &self.items {
                        Items::Int(v) => {
                            Items::Int(slice.positions(v.len())?.map(|i| v[i]).collect())
                        }
                        Items::Float(v) => {
                            Items::Float(slice.positions(v.len())?.map(|i| v[i]).collect())
                        }
                        Items::Char(v) => {
                            Items::Char(slice.positions(v.len())?.map(|i| v[i]).collect())
                        }
                    };
                    part.copy(budget)
                }
            },
            _ => {
                let value = args.next().unwrap_or(PyValue::None);
                match Array::key(&key)? {
                    Ok(i) => {
                        let i = self.position(i, "array assignment index out of range")?;
                        let typecode = self.typecode;
                        match &mut self.items {
                            Items::Int(v) => v[i] = int_item(typecode, &value)?,
                            Items::Float(v) => v[i] = float(typecode, float_item(&value)?),
                            Items::Char(v) => v[i] = char_item(&value)?,
                        }
                        Ok(PyValue::None)
                    }
                    // Only an array may be assigned to a slice, which a
                    // client pickles with a function the server does not
                    // call (`array._array_reconstructor`).
                    Err(_) => Err(type_error(format!(
                        "can only assign array (not \"{}\") to array slice",
                        value.type_name()
                    ))),
                }
            }
        }
    }

    /// Python's `repr`: `array('i', [1, 2])`, `array('u', 'ab')`,
    /// `array('d')`; its items written until it is longer than `max`
    /// (the rest left out), none of them copied.
    pub(super) fn repr(&self, max: usize) -> String {
        use std::fmt::Write as _;
        let typecode = PyValue::Str(self.typecode.into());
        let mut out = format!("array({typecode}");
        match &self.items {
            _ if self.len() == 0 => {}
            Items::Char(v) => {
                let _ = write!(out, ", {}", PyValue::Str(v.iter().take(max).collect()));
            }
            _ => {
                out.push_str(", [");
                for i in 0..self.len() {
                    if out.len() > max {
                        break;
                    }
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{}", self.get(i));
                }
                out.push(']');
            }
        }
        out.push(')');
        out
    }

    /// A copy as a client unpickles it: `array.array(typecode, items)`,
    /// its items taken from `budget` one by one (refused as soon as they
    /// would exceed it).
    pub(super) fn copy(&self, budget: &mut Budget) -> Result<PyValue, Exception> {
        let items = match &self.items {
            Items::Char(v) => {
                budget.memory(v.len())?;
                let text = PyValue::Str(v.iter().collect());
                budget.charge([&text])?;
                text
            }
            _ => {
                let mut values = Vec::new();
                for i in 0..self.len() {
                    let v = self.get(i);
                    budget.charge_value(&v)?;
                    values.push(v);
                }
                PyValue::List(values)
            }
        };
        Ok(PyValue::Object(Box::new(PyObject::call(
            "array",
            "array",
            vec![PyValue::Str(self.typecode.into()), items],
        ))))
    }
}

/// `f` as an item of the float `typecode` (rounded to a C float for `f`).
fn float(typecode: char, f: f64) -> f64 {
    if typecode == 'f' {
        f64::from(f as f32)
    } else {
        f
    }
}

/// `v` as an item of a `u` or `w` array: a str of one character.
fn char_item(v: &PyValue) -> Result<char, Exception> {
    match v {
        PyValue::Str(s) if s.chars().count() == 1 => Ok(s.chars().next().unwrap_or('\0')),
        _ => Err(type_error("array item must be unicode character")),
    }
}
