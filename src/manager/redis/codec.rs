//! How a [`PyValue`] is stored in Redis: as bytes its scripts can work on.
//!
//! - an `int` (64-bit) is its decimal digits, so that `HINCRBY`/`INCRBY`
//!   add to it and a script reads it with `tonumber`;
//! - a `str` is `s` and its UTF-8 (whose byte order is Python's `str` order);
//! - a `float` is `f` and its shortest round-trip decimal;
//! - `bytes` are `b` and the bytes;
//! - anything else is a pickle (protocol 4: it starts with `0x80`), which a
//!   Python program can read with `pickle.loads`.
//!
//! A dict's field is the encoding of its key made canonical: keys Python
//! finds equal (`1`, `1.0`, `True`) are one field, as in a Python dict.

use super::super::limits::Budget;
use super::super::objects::MAX_FRAME;
use super::super::pickle;
use super::super::PyValue;
use crate::error::{Error, Result};
use crate::lazy::Lazy;

/// The most memory decoding one stored value may take.
const VALUE_MEMORY: usize = 4 * MAX_FRAME;

/// `value` as stored. A proxy of a local manager cannot be stored in Redis.
///
/// # Errors
/// [`Error::Serialize`] if `value` holds a local manager's proxy.
pub(crate) fn encode(value: &PyValue) -> Result<Vec<u8>> {
    Ok(match value {
        PyValue::Int(i) => i.to_string().into_bytes(),
        PyValue::Str(s) => prefixed(b's', s.as_bytes()),
        PyValue::Float(f) => prefixed(b'f', format!("{f:?}").as_bytes()),
        PyValue::Bytes(b) => prefixed(b'b', b),
        other => {
            if holds_proxy(other) {
                return Err(Error::Serialize(
                    "a local manager's proxy cannot be stored in Redis".into(),
                ));
            }
            let bytes = pickle::dumps(other, &PyValue::None);
            // What is stored must read back: a large pickle is decoded
            // once here, within the budget `decode` has (a small one
            // cannot exceed it: each node takes a byte of the pickle).
            if bytes.len() > VALUE_MEMORY / 256 {
                let mut budget = Budget::new(usize::MAX, VALUE_MEMORY);
                if let Err((_, message)) = pickle::loads(&bytes, &mut budget) {
                    return Err(Error::Serialize(format!(
                        "a value too large to store in Redis ({message})"
                    )));
                }
            }
            bytes
        }
    })
}

fn prefixed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(tag);
    out.extend_from_slice(body);
    out
}

fn holds_proxy(v: &PyValue) -> bool {
    match v {
        PyValue::Proxy(_) => true,
        PyValue::List(vs) | PyValue::Tuple(vs) | PyValue::Set(vs) | PyValue::FrozenSet(vs) => {
            vs.iter().any(holds_proxy)
        }
        PyValue::Dict(d) => d.iter().any(|(k, v)| holds_proxy(k) || holds_proxy(v)),
        PyValue::Object(o) => {
            o.args
                .iter()
                .chain(&o.state)
                .chain(&o.list_items)
                .any(holds_proxy)
                || o.kwargs
                    .iter()
                    .flatten()
                    .chain(&o.dict_items)
                    .any(|(k, v)| holds_proxy(k) || holds_proxy(v))
        }
        _ => false,
    }
}

/// A stored value. Anything but the encodings above is
/// [`Error::Deserialize`]: Redis is a shared store, and another program
/// may have written the key.
///
/// # Errors
/// As above.
pub(crate) fn decode(bytes: &[u8]) -> Result<PyValue> {
    let bad = |why: &str| Error::Deserialize(format!("a value stored in Redis: {why}"));
    match bytes.first() {
        None => Err(bad("empty")),
        Some(b'-' | b'0'..=b'9') => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(PyValue::Int)
            .ok_or_else(|| bad("not a 64-bit integer")),
        Some(b's') => String::from_utf8(bytes[1..].to_vec())
            .map(PyValue::Str)
            .map_err(|_| bad("a str that is not UTF-8")),
        Some(b'f') => std::str::from_utf8(&bytes[1..])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(PyValue::Float)
            .ok_or_else(|| bad("not a float")),
        Some(b'b') => Ok(PyValue::Bytes(bytes[1..].to_vec())),
        Some(0x80) => {
            let mut budget = Budget::new(usize::MAX, VALUE_MEMORY);
            pickle::loads(bytes, &mut budget)
                .map_err(|(kind, message)| bad(&format!("{kind}: {message}")))
        }
        Some(_) => Err(bad("not an encoding of multiproc's")),
    }
}

/// Lua: `plain(s)`, whether `s` is an encoding [`decode`] surely accepts
/// (bytes, an ASCII str, an int of at most 18 digits, a float as
/// [`encode`] writes one, `None`, `True`, `False`): a script that takes a
/// value out of an object takes such a one at once; any other it leaves
/// where it is and answers, for the client to decode first (see
/// `super::take`).
pub(crate) static LUA_PLAIN: Lazy<String> = Lazy::new(|| {
    let constants: Vec<String> = [PyValue::None, PyValue::Bool(true), PyValue::Bool(false)]
        .iter()
        // None and the bools hold no proxy: their encodings cannot fail.
        .map(|v| format!("[{}] = true", lua_string(&encode(v).unwrap_or_default())))
        .collect();
    format!(
        r"
local PLAIN = {{{}}}
local function plain(s)
  if PLAIN[s] then return true end
  local c = string.byte(s, 1)
  if c == 98 then return true end
  if c == 115 then return not string.find(s, '[\128-\255]') end
  if c == 102 then
    local f = string.sub(s, 2)
    return f == 'inf' or f == '-inf' or f == 'NaN'
      or string.find(f, '^%-?%d+%.%d+$') ~= nil
      or string.find(f, '^%-?%d+e%-?%d+$') ~= nil
      or string.find(f, '^%-?%d%.%d+e%-?%d+$') ~= nil
  end
  local d = string.match(s, '^%-?(%d+)$')
  return d ~= nil and #d <= 18
end
",
        constants.join(", ")
    )
});

/// `bytes` as a Lua string literal (each byte a decimal escape).
fn lua_string(bytes: &[u8]) -> String {
    let mut out = String::from("'");
    for b in bytes {
        out.push_str(&format!("\\{b:03}"));
    }
    out.push('\'');
    out
}

/// Lua: the numbers of encodings as [`decode`] reads them, for the
/// scripts that add to a stored number: `is_i64(s)`, whether `s` is an
/// int of 64 bits; `float_of(s)`, the float of an `f` encoding, or nil.
/// What `decode` refuses is no number (Lua's `tonumber` also reads hex
/// and spaces, and ints past 64 bits): an increment of it is an error,
/// never a sum written over it.
pub(crate) const LUA_NUMBERS: &str = r"
local function is_i64(s)
  local minus, digits = string.match(s, '^(%-?)(%d+)$')
  if not digits then return false end
  digits = string.gsub(digits, '^0+(%d)', '%1')
  if #digits ~= 19 then return #digits < 19 end
  if minus == '-' then return digits <= '9223372036854775808' end
  return digits <= '9223372036854775807'
end
local function float_of(s)
  if string.byte(s, 1) ~= 102 then return nil end
  local t = string.sub(s, 2)
  local word = string.lower((string.gsub(t, '^[%+%-]', '')))
  if string.find(t, '^[%d%.eE%+%-]+$') or word == 'inf' or word == 'infinity' or word == 'nan' then
    return tonumber(t)
  end
  return nil
end
";

/// Lua: `fmt(x)`, the codec's encoding of the float `x` without its `f`
/// (as Rust's `{:?}` writes it: the shortest decimal that reads back the
/// same, the nearest of those, an exact tie rounded up, as Rust's
/// `flt2dec` does), for the scripts that store a float they computed.
pub(crate) const LUA_FLOAT: &str = r"
local function num(dg, e)
  return tonumber(string.sub(dg, 1, 1) .. '.' .. string.sub(dg, 2) .. 'e' .. string.format('%d', e))
end
local function step(dg, e, by)
  local n = #dg
  local t = {}
  for i = 1, n do t[i] = string.byte(dg, i) - 48 end
  local i = n
  t[i] = t[i] + by
  while i > 1 and (t[i] < 0 or t[i] > 9) do
    if t[i] < 0 then t[i] = t[i] + 10 else t[i] = t[i] - 10 end
    i = i - 1
    t[i] = t[i] + by
  end
  if t[1] > 9 then return '1' .. string.rep('0', n - 1), e + 1 end
  if t[1] == 0 then return string.rep('9', n), e - 1 end
  local out = {}
  for j = 1, n do out[j] = string.char(t[j] + 48) end
  return table.concat(out), e
end
local function shortest(ax)
  local dg, e
  for p = 0, 16 do
    local lead, frac, ex = string.match(string.format('%.' .. p .. 'e', ax), '^(%d)%.?(%d*)e([-+]%d+)$')
    dg, e = lead .. frac, tonumber(ex)
    if num(dg, e) == ax then
      local tl, tf, te = string.match(string.format('%.40e', ax), '^(%d)%.(%d*)e([-+]%d+)$')
      local td = tl .. tf
      if tonumber(te) == e and string.sub(td, 1, p + 1) == dg
          and string.sub(td, p + 2) == '5' .. string.rep('0', 39 - p) then
        local ud, ue = step(dg, e, 1)
        if num(ud, ue) == ax then return ud, ue end
      end
      return dg, e
    end
    for _, by in ipairs({1, -1}) do
      local od, oe = step(dg, e, by)
      if num(od, oe) == ax then return od, oe end
    end
  end
  return dg, e
end
local function fmt(x)
  if x ~= x then return 'NaN' end
  if x == math.huge then return 'inf' end
  if x == -math.huge then return '-inf' end
  if x == 0 then
    if 1 / x < 0 then return '-0.0' end
    return '0.0'
  end
  local sign = ''
  if x < 0 then sign = '-' end
  local a = math.abs(x)
  local digits, e = shortest(a)
  digits = string.gsub(digits, '0+$', '')
  if a < 1e-4 or a >= 1e16 then
    local m = string.sub(digits, 1, 1)
    if #digits > 1 then m = m .. '.' .. string.sub(digits, 2) end
    return sign .. m .. 'e' .. string.format('%d', e)
  end
  if e >= 0 then
    if #digits <= e + 1 then
      return sign .. digits .. string.rep('0', e + 1 - #digits) .. '.0'
    end
    return sign .. string.sub(digits, 1, e + 1) .. '.' .. string.sub(digits, e + 2)
  end
  return sign .. '0.' .. string.rep('0', -e - 1) .. digits
end
";

const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;

/// `key` made canonical: what Python finds equal is the same value
/// (`True` and `1.0` are `1`, `-0.0` is `0`, `2.0**63` is `2**63`, an int
/// given as a big int that fits 64 bits is that int, a frozenset's items
/// in any order are one frozenset), inside tuples and frozensets too.
pub(crate) fn canonical(key: &PyValue) -> PyValue {
    match key {
        PyValue::Bool(b) => PyValue::Int(i64::from(*b)),
        // 2^63 is exact as an f64; `i64::MAX as f64` would round up to it.
        PyValue::Float(f) if f.fract() == 0.0 && f.abs() < TWO_TO_63 || *f == -TWO_TO_63 => {
            PyValue::Int(*f as i64)
        }
        // An integral float past 64 bits is the big int it equals.
        PyValue::Float(f) if f.is_finite() && f.fract() == 0.0 => PyValue::BigInt(float_bytes(*f)),
        PyValue::BigInt(b) => {
            let mut b = b.clone();
            super::super::compare::minimal(&mut b);
            if b.len() <= 8 {
                let fill = if b.last().is_some_and(|&t| t & 0x80 != 0) {
                    0xff
                } else {
                    0
                };
                let mut word = [fill; 8];
                word[..b.len()].copy_from_slice(&b);
                PyValue::Int(i64::from_le_bytes(word))
            } else {
                PyValue::BigInt(b)
            }
        }
        PyValue::Tuple(items) => PyValue::Tuple(items.iter().map(canonical).collect()),
        // A set is no key in Python; as one here, it is a frozenset's field.
        PyValue::FrozenSet(items) | PyValue::Set(items) => {
            let mut items: Vec<(Vec<u8>, PyValue)> = items
                .iter()
                .map(|item| {
                    let item = canonical(item);
                    (encode(&item).unwrap_or_default(), item)
                })
                .collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            PyValue::FrozenSet(items.into_iter().map(|(_, item)| item).collect())
        }
        other => other.clone(),
    }
}

/// The minimal little-endian two's complement bytes of the integer `f`
/// (finite and integral, at least 2^63 in magnitude).
fn float_bytes(f: f64) -> Vec<u8> {
    let bits = f.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as usize;
    let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
    // f = mantissa * 2^(exponent - 1075), the shift at least 63 - 52.
    let shift = exponent.saturating_sub(1075);
    let mut mag = vec![0u8; (53 + shift) / 8 + 2];
    for bit in 0..53 {
        if mantissa >> bit & 1 == 1 {
            let at = bit + shift;
            mag[at / 8] |= 1 << (at % 8);
        }
    }
    if f < 0.0 {
        let mut carry = 1u16;
        for byte in &mut mag {
            let sum = u16::from(!*byte) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
    }
    super::super::compare::minimal(&mut mag);
    mag
}

/// A dict's field for `key`, and the key's own encoding when it differs
/// (what the dict keeps to give the first key back as it was given).
///
/// # Errors
/// As for [`encode`].
pub(crate) fn field(key: &PyValue) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let own = encode(key)?;
    let field = encode(&canonical(key))?;
    Ok(if field == own {
        (field, None)
    } else {
        (field, Some(own))
    })
}

/// For the fuzzer only (built with `--cfg fuzzing`): decodes `data` as a
/// value found in Redis (an error or a value, never a panic); a value it
/// accepts encodes to bytes that decode to a value encoding the same, and
/// its field as a key is found.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    if let Ok(v) = decode(data) {
        let Ok(bytes) = encode(&v) else {
            return;
        };
        let back = match decode(&bytes) {
            Ok(back) => back,
            Err(e) => panic!("what encode wrote does not decode: {e}\n{v:?}"),
        };
        assert!(
            encode(&back).ok() == Some(bytes),
            "{v:?} came back as {back:?}"
        );
        let (own_field, _) = field(&v).expect("a value that encodes has a field");
        assert_eq!(field(&canonical(&v)).expect("canonical").0, own_field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in [
            PyValue::Int(0),
            PyValue::Int(i64::MIN),
            PyValue::Int(i64::MAX),
            PyValue::Str("".into()),
            PyValue::Str("é∂".into()),
            PyValue::Float(1.5),
            PyValue::Float(-0.0),
            PyValue::Float(1e300),
            PyValue::Bytes(vec![0, 255]),
            PyValue::Bool(true),
            PyValue::None,
            PyValue::Tuple(vec![PyValue::Int(1), PyValue::Str("a".into())]),
            PyValue::Dict(vec![(PyValue::Int(1), PyValue::List(vec![]))]),
        ] {
            let back = decode(&encode(&v).unwrap()).unwrap();
            assert_eq!(back.repr(), v.repr(), "{v:?}");
        }
    }

    #[test]
    fn equal_keys_are_one_field() {
        let one = field(&PyValue::Int(1)).unwrap();
        assert_eq!(one, (b"1".to_vec(), None));
        for k in [PyValue::Float(1.0), PyValue::Bool(true)] {
            let (f, own) = field(&k).unwrap();
            assert_eq!(f, one.0);
            assert!(own.is_some());
        }
        assert_eq!(field(&PyValue::Float(-0.0)).unwrap().0, b"0");
        assert_ne!(field(&PyValue::Float(1.5)).unwrap().0, b"1");
        assert_eq!(
            field(&PyValue::Tuple(vec![PyValue::Float(2.0)])).unwrap().0,
            field(&PyValue::Tuple(vec![PyValue::Int(2)])).unwrap().0
        );
    }

    /// Keys the local manager finds equal (Python's `==`) are one field.
    #[test]
    fn keys_python_finds_equal_are_one_field() {
        let two63 = PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
        let minus_two70 = PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xc0]);
        let pairs = [
            (two63.clone(), PyValue::Float(TWO_TO_63)),
            (minus_two70, PyValue::Float(-1180591620717411303424.0)),
            (PyValue::BigInt(vec![1, 0, 0]), PyValue::Int(1)),
            (PyValue::BigInt(vec![0xff, 0xff]), PyValue::Int(-1)),
            (PyValue::BigInt(vec![]), PyValue::Float(-0.0)),
            (
                PyValue::FrozenSet(vec![PyValue::Int(1), PyValue::Str("x".into())]),
                PyValue::FrozenSet(vec![PyValue::Str("x".into()), PyValue::Float(1.0)]),
            ),
            (
                PyValue::Tuple(vec![PyValue::FrozenSet(vec![two63, PyValue::Int(2)])]),
                PyValue::Tuple(vec![PyValue::FrozenSet(vec![
                    PyValue::Float(2.0),
                    PyValue::Float(TWO_TO_63),
                ])]),
            ),
        ];
        for (a, b) in pairs {
            assert_eq!(a, b, "Python's ==");
            assert_eq!(field(&a).unwrap().0, field(&b).unwrap().0, "{a:?} {b:?}");
        }
        // 2**64 + 1 is no float: not 2.0**64.
        assert_ne!(
            field(&PyValue::BigInt(vec![1, 0, 0, 0, 0, 0, 0, 0, 1]))
                .unwrap()
                .0,
            field(&PyValue::Float(18446744073709551616.0)).unwrap().0
        );
        assert_eq!(
            canonical(&PyValue::Float(18446744073709551616.0)),
            PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(canonical(&PyValue::Float(f64::MAX)).to_string().len(), 309);
        assert!(matches!(
            canonical(&PyValue::Float(f64::INFINITY)),
            PyValue::Float(_)
        ));
    }

    /// What `plain` takes at once decodes: the floats `encode` writes
    /// (of the forms it matches) parse, and the constants are encodings.
    #[test]
    fn plain_values_decode() {
        for f in [
            1.5,
            -0.0,
            1e300,
            1.5e-300,
            1e-7,
            5e-324,
            f64::INFINITY,
            f64::NAN,
        ] {
            let e = encode(&PyValue::Float(f)).unwrap();
            assert!(decode(&e).is_ok(), "{f}");
        }
        assert_eq!(lua_string(b"\x80\x04N."), "'\\128\\004\\078\\046'");
        assert!(LUA_PLAIN.contains(&lua_string(&encode(&PyValue::None).unwrap())));
        for n in ["-999999999999999999", "999999999999999999"] {
            assert!(decode(n.as_bytes()).is_ok());
        }
        for f in ["f1.5", "f-1e300", "f1.5e-7", "finf", "f-inf", "fNaN"] {
            assert!(decode(f.as_bytes()).is_ok(), "{f}");
        }
    }

    #[test]
    fn foreign_bytes_are_an_error_not_a_panic() {
        for b in [
            &b""[..],
            b"12x",
            b"99999999999999999999",
            b"s\xff",
            b"fx",
            b"\x80\x04junk",
            b"?",
        ] {
            assert!(matches!(decode(b), Err(Error::Deserialize(_))), "{b:?}");
        }
    }
}
