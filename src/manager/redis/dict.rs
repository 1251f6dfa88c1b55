//! Dicts and namespaces on Redis.
//!
//! A dict (or a namespace, the same with its own errors and `repr`) is
//! three keys under one hash tag:
//! - `v`, a hash: field → value, the field being the key's canonical
//!   encoding ([`codec::field`]: `1`, `1.0` and `True` are one field) and
//!   the value its [`codec::encode`]ing;
//! - `o`, a sorted set: field → its insertion number, for Python's
//!   insertion order (a new field gets the highest number + 1, read in
//!   the same script; a field set again keeps its place, one removed and
//!   set again goes last, as in Python);
//! - `k`, a hash: field → the key's own encoding, only for a key whose
//!   encoding is not its field (`1.0`, `True`): the first key given is the
//!   one `keys()` answers, as in Python.
//!
//! Every operation is one command (`HGET`, `HMGET`, `HLEN`, `HEXISTS`,
//! `DEL`) or one Lua script (a `pop` or `popitem` of a value the script
//! cannot tell decodes, two: see `super::take`). What differs from a
//! manager server:
//! - `compare_and_set` compares encodings: a stored `1` is not an expected
//!   `1.0` (Python's `==` says they are equal);
//! - `increment` adds 64-bit ints (`HINCRBY`): past `i64` it is an
//!   `OverflowError`, where a manager server goes on up to 127 bits;
//! - a NaN key is one field (`fNaN`): where a manager server keeps each
//!   NaN stored as a key of its own (NaN equals nothing), here the second
//!   replaces the first, and `d[nan]` finds it;
//! - keys equal by Python's rules for objects (`complex(1, 0)` and `1`, a
//!   `bytearray` and `bytes`) are different fields (ints, floats, bools,
//!   big ints, tuples and frozensets of them are made canonical, see
//!   `codec::canonical`);
//! - a value another program wrote in the hash is [`Error::Deserialize`]
//!   when read, and is left where it was when popped; a key of another
//!   Redis type is Redis's `WRONGTYPE` error.

use crate::lazy::Lazy;

use redis::{FromRedisValue, Script};

use super::{codec, key, Store};
use crate::error::{Error, Result};
use crate::manager::apply::dict_repr;
use crate::manager::apply::Map;
use crate::manager::protocol::{Kind, Op};
use crate::manager::{PyObject, PyValue};

/// The keys a dict is made of: its values by field (`v`), its fields in
/// insertion order (`o`), and the keys given in another form than their
/// field (`k`).
pub(super) const PARTS: &[&str] = &["v", "o", "k"];

/// What every script starts with: its keys (each of its own type, or none:
/// a key another program made of another type fails the script before it
/// writes anything, as Redis does not undo a script's writes), and how a
/// field is put and dropped keeping the three parts in step.
const PRELUDE: &str = r"
local V, O, K = KEYS[1], KEYS[2], KEYS[3]
for i, want in ipairs({'hash', 'zset', 'hash'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. t .. ', not a part of a dict')
  end
end
local after = nil
local function put(f, v, own)
  if redis.call('HSET', V, f, v) == 1 then
    if not after then
      local top = redis.call('ZREVRANGE', O, 0, 0, 'WITHSCORES')
      after = 1
      if top[2] then after = tonumber(top[2]) + 1 end
    end
    redis.call('ZADD', O, after, f)
    after = after + 1
    if own ~= '' then redis.call('HSET', K, f, own) end
  end
end
local function drop(f)
  local had = redis.call('HDEL', V, f) == 1
  redis.call('ZREM', O, f)
  redis.call('HDEL', K, f)
  return had
end
local function keys_of(fs)
  if redis.call('EXISTS', K) == 1 then
    local own = redis.call('HGETALL', K)
    local m = {}
    for i = 1, #own, 2 do m[own[i]] = own[i + 1] end
    local ks = {}
    for i = 1, #fs do ks[i] = m[fs[i]] or fs[i] end
    return ks
  end
  return fs
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// `d[f] = v` (ARGV: field, own encoding or '', value).
static SET: Lazy<Script> = Lazy::new(|| {
    script(
        r"
put(ARGV[1], ARGV[3], ARGV[2])
return 1
",
    )
});

/// `d.update(...)` (ARGV: field, own, value, field, own, value, ...), in
/// a few commands for the whole batch rather than a few per item: one
/// `HSET` and one `ZADD NX` per 500 items (a new field gets the next
/// number, in the batch's order; one already there keeps its place; a
/// field given twice keeps its first place and its last value, as
/// Python's `update`), and the key of a new field first given in another
/// form than its field (`1.0`, `True`), as Python keeps the first key.
static UPDATE: Lazy<Script> = Lazy::new(|| {
    script(
        r"
local top = redis.call('ZREVRANGE', O, 0, 0, 'WITHSCORES')
local first = 1
if top[2] then first = tonumber(top[2]) + 1 end
local owns, seen = {}, {}
for i = 1, #ARGV, 3 do
  local f = ARGV[i]
  if not seen[f] then
    seen[f] = true
    if ARGV[i + 1] ~= '' and redis.call('HEXISTS', V, f) == 0 then
      owns[#owns + 1] = i
    end
  end
end
local chunk = 500 * 3
for c = 1, #ARGV, chunk do
  local h, z = {}, {}
  for i = c, math.min(c + chunk - 1, #ARGV), 3 do
    h[#h + 1] = ARGV[i]
    h[#h + 1] = ARGV[i + 2]
    z[#z + 1] = first + (i - 1) / 3
    z[#z + 1] = ARGV[i]
  end
  redis.call('HSET', V, unpack(h))
  redis.call('ZADD', O, 'NX', unpack(z))
end
for _, i in ipairs(owns) do redis.call('HSET', K, ARGV[i], ARGV[i + 1]) end
return #ARGV / 3
",
    )
});

/// `d.pop(f, None)` (ARGV: field, the value expected, see
/// `super::take`): `{}` if absent, `{'T', value}` taken, `{'P', value}`
/// left.
static DISCARD: Lazy<Script> = Lazy::new(|| {
    script(
        &[
            &codec::LUA_PLAIN,
            r"
local old = redis.call('HGET', V, ARGV[1])
if not old then return {} end
if old ~= ARGV[2] and not plain(old) then return {'P', old} end
drop(ARGV[1])
return {'T', old}
",
        ]
        .concat(),
    )
});

/// `del d[f]`: whether it was there (ARGV: field).
static DEL: Lazy<Script> = Lazy::new(|| {
    script(
        r"
if drop(ARGV[1]) then return 1 end
return 0
",
    )
});

/// `d.popitem()`: of the last field inserted, `{'T', key, value}` taken
/// (without its value if the hash lacks one: another program's write),
/// `{'P', key, value}` left (ARGV: the key and value expected, see
/// `super::take`), or `{}`.
static POPITEM: Lazy<Script> = Lazy::new(|| {
    script(
        &[
            &codec::LUA_PLAIN,
            r"
local f = redis.call('ZREVRANGE', O, 0, 0)[1]
if not f then return {} end
local v = redis.call('HGET', V, f)
local k = redis.call('HGET', K, f) or f
if v and not (k == ARGV[1] and v == ARGV[2]) and not (plain(k) and plain(v)) then
  return {'P', k, v}
end
drop(f)
return {'T', k, v}
",
        ]
        .concat(),
    )
});

/// `d.setdefault(f, v)`: the value after (ARGV: field, own, value).
static SETDEFAULT: Lazy<Script> = Lazy::new(|| {
    script(
        r"
local old = redis.call('HGET', V, ARGV[1])
if old then return old end
put(ARGV[1], ARGV[3], ARGV[2])
return ARGV[3]
",
    )
});

/// The keys (ARGV 'k'), values ('v') or both, flat ('kv'), in order. A
/// value missing from `v` (another program's write) is nil.
static LIST: Lazy<Script> = Lazy::new(|| {
    script(
        r"
local fs = redis.call('ZRANGE', O, 0, -1)
local mode = ARGV[1]
if mode == 'k' then return keys_of(fs) end
local out = {}
if mode == 'v' then
  for i = 1, #fs do out[i] = redis.call('HGET', V, fs[i]) end
  return out
end
local ks = keys_of(fs)
for i = 1, #fs do
  out[2 * i - 1] = ks[i]
  out[2 * i] = redis.call('HGET', V, fs[i])
end
return out
",
    )
});

/// `d[f] += delta`, atomically (ARGV: field, own, delta, 'i' for an int
/// delta or 'f' for a float, the encodings of True and False). Answers
/// {'v', new}, {'type', old} (old is not a number), or {'overflow', ''}.
///
/// Ints are added by `HINCRBY` (64-bit, an error past it); floats in Lua
/// (doubles, as Python's), written as the codec writes them
/// ([`codec::LUA_FLOAT`]).
static INCREMENT: Lazy<Script> = Lazy::new(|| {
    script(
        &[
            codec::LUA_FLOAT,
            codec::LUA_NUMBERS,
            r"
local f, own, d, kind = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('HGET', V, f)
local b = nil
if old == ARGV[5] then b = 1 elseif old == ARGV[6] then b = 0 end
local function is_int(v)
  local minus, digits = string.match(v, '^(-?)(%d+)$')
  if not digits then return false end
  if #digits ~= 19 then return #digits < 19 end
  if minus == '-' then return digits <= '9223372036854775808' end
  return digits <= '9223372036854775807'
end
local int_old = old and is_int(old)
if kind == 'i' then
  if not old then
    put(f, d, own)
    return {'v', d}
  end
  if b then
    if b == 1 and d == '9223372036854775807' then return {'overflow', ''} end
    redis.call('HSET', V, f, d)
    redis.call('HINCRBY', V, f, b)
    return {'v', redis.call('HGET', V, f)}
  end
  if int_old then
    local r = redis.pcall('HINCRBY', V, f, d)
    if type(r) == 'table' and r.err then
      if string.find(r.err, 'overflow') then return {'overflow', ''} end
      return r
    end
    return {'v', redis.call('HGET', V, f)}
  end
end
local x
if not old then x = 0
elseif b then x = b
elseif int_old then x = tonumber(old)
else x = float_of(old)
end
if not x then return {'type', old} end
local y
if kind == 'i' then y = tonumber(d) else y = tonumber(string.sub(d, 2)) end
local new = 'f' .. fmt(x + y)
put(f, new, own)
return {'v', new}
",
        ]
        .concat(),
    )
});

/// Sets `d[f] = new` if it is `expected` (ARGV: field, own, '1' with an
/// expected value or '0' for absent, expected, new): 1 if it did.
static COMPARE_AND_SET: Lazy<Script> = Lazy::new(|| {
    script(
        r"
local cur = redis.call('HGET', V, ARGV[1])
if ARGV[3] == '0' then
  if cur then return 0 end
  put(ARGV[1], ARGV[5], ARGV[2])
  return 1
end
if cur == ARGV[4] then
  redis.call('HSET', V, ARGV[1], ARGV[5])
  return 1
end
return 0
",
    )
});

/// A dict or namespace on Redis: its kind and its keys.
struct Dict<'a> {
    store: &'a Store,
    kind: Kind,
    keys: [String; 3],
}

impl Dict<'_> {
    /// Runs `script` with this dict's keys and `args`.
    fn invoke<T: FromRedisValue>(&self, script: &Script, again: bool, args: &[&[u8]]) -> Result<T> {
        self.store.run(again, |c| {
            let mut call = script.prepare_invoke();
            for k in &self.keys {
                call.key(k);
            }
            for a in args {
                call.arg(*a);
            }
            call.invoke(c)
        })
    }

    /// Takes the value of `key` out (`pop`), if there: one that does not
    /// decode is left (see `super::take`).
    fn take(&self, key: &PyValue) -> Result<Option<Vec<u8>>> {
        let (field, _) = codec::field(key)?;
        let taken = super::take(|expected| {
            let mut args: Vec<&[u8]> = vec![&field];
            args.extend(expected.iter().map(Vec::as_slice));
            self.invoke(&DISCARD, false, &args)
        })?;
        match taken {
            None => Ok(None),
            Some(mut values) if values.len() == 1 => Ok(values.pop()),
            Some(_) => Err(inconsistent()),
        }
    }

    /// `HGET v field`.
    fn hget(&self, field: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store.run(true, |c| {
            redis::cmd("HGET")
                .arg(&self.keys[0])
                .arg(field)
                .query::<Option<Vec<u8>>>(c)
        })
    }

    /// Python's error for a missing `key`: a `KeyError`, or a namespace's
    /// `AttributeError`.
    fn missing(&self, key: &PyValue) -> Error {
        if self.kind == Kind::Namespace {
            no_attribute(key)
        } else {
            key_error(key)
        }
    }

    /// The items in insertion order.
    fn items(&self) -> Result<Vec<(PyValue, PyValue)>> {
        let flat: Vec<Option<Vec<u8>>> = self.invoke(&LIST, true, &[b"kv"])?;
        flat.chunks(2)
            .map(|pair| match pair {
                [Some(k), Some(v)] => Ok((codec::decode(k)?, codec::decode(v)?)),
                _ => Err(inconsistent()),
            })
            .collect()
    }

    /// Python's `repr`: `{'a': 1}`, or `Namespace(a=1)` (names that start
    /// with `_` hidden, the others sorted as their `name=value` strings, as
    /// `Namespace.__repr__` does and the manager server answers).
    fn repr(&self) -> Result<String> {
        let items = self.items()?;
        Ok(dict_repr(self.kind, items.iter().map(|(k, v)| (k, v))))
    }

    /// `d[key] += delta`, atomically.
    fn increment(&self, key: &PyValue, delta: &PyValue) -> Result<PyValue> {
        let (field, own) = codec::field(key)?;
        let (kind, delta_bytes): (&[u8], Vec<u8>) = match delta {
            PyValue::Bool(b) => (b"i", i64::from(*b).to_string().into_bytes()),
            PyValue::Int(i) => (b"i", i.to_string().into_bytes()),
            PyValue::BigInt(b) => match small_int(b) {
                Some(i) => (b"i", i.to_string().into_bytes()),
                None => return Err(overflow()),
            },
            PyValue::Float(_) => (b"f", codec::encode(delta)?),
            other => {
                // Nothing is written: Python's message names the stored type.
                let old = match self.hget(&field)? {
                    Some(old) => codec::decode(&old)?,
                    None => PyValue::Int(0),
                };
                return Err(unsupported(&old, other));
            }
        };
        let yes = codec::encode(&PyValue::Bool(true))?;
        let no = codec::encode(&PyValue::Bool(false))?;
        let own = own.unwrap_or_default();
        let (tag, payload): (String, Vec<u8>) = self.invoke(
            &INCREMENT,
            false,
            &[&field, &own, &delta_bytes, kind, &yes, &no],
        )?;
        match tag.as_str() {
            "v" => codec::decode(&payload),
            "type" => Err(unsupported(&codec::decode(&payload)?, delta)),
            "overflow" => Err(overflow()),
            other => Err(Error::Deserialize(format!(
                "the increment script answered {other:?}"
            ))),
        }
    }
}

/// `KeyError(key)`, as the manager server's client shows it.
fn key_error(key: &PyValue) -> Error {
    Error::Remote {
        kind: "KeyError".into(),
        message: key.repr(),
    }
}

/// A namespace's `AttributeError` for the attribute `name`.
fn no_attribute(name: &PyValue) -> Error {
    let name = match name {
        PyValue::Str(s) => s.clone(),
        other => other.to_string(),
    };
    Error::Remote {
        kind: "AttributeError".into(),
        message: format!("'Namespace' object has no attribute '{name}'"),
    }
}

fn unsupported(old: &PyValue, delta: &PyValue) -> Error {
    Error::Remote {
        kind: "TypeError".into(),
        message: format!(
            "unsupported operand type(s) for +=: '{}' and '{}'",
            old.type_name(),
            delta.type_name()
        ),
    }
}

fn overflow() -> Error {
    Error::Remote {
        kind: "OverflowError".into(),
        message: "a Redis manager adds ints of at most 64 bits".into(),
    }
}

fn inconsistent() -> Error {
    Error::Deserialize(
        "a dict on Redis whose parts disagree (another program changed its keys)".into(),
    )
}

/// A `BigInt`'s little-endian two's complement bytes as an `i64`, if it fits.
fn small_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut le = [fill; 16];
    le[..b.len()].copy_from_slice(b);
    i64::try_from(i128::from_le_bytes(le)).ok()
}

/// A new dict of `first`'s items then `then`'s (a later value replaces an
/// earlier one's, which keeps its place), as `dict | dict` makes it.
fn union(first: Vec<(PyValue, PyValue)>, then: Vec<(PyValue, PyValue)>) -> PyValue {
    let mut m = Map::with_hasher(crate::manager::apply::keyed());
    m.extend(first);
    m.extend(then);
    PyValue::Dict(m.into_iter().collect())
}

/// A stored value, or `default` if absent.
fn value_or(found: Option<Vec<u8>>, default: PyValue) -> Result<PyValue> {
    found.map_or(Ok(default), |v| codec::decode(&v))
}

/// Applies `op` to the dict (or namespace, as `kind` says) `name`.
pub(super) fn apply(store: &Store, kind: Kind, name: &str, op: Op) -> Result<PyValue> {
    let d = Dict {
        store,
        kind,
        keys: [
            key(kind, name, PARTS[0]),
            key(kind, name, PARTS[1]),
            key(kind, name, PARTS[2]),
        ],
    };
    let v = &d.keys[0];
    Ok(match op {
        Op::Len => PyValue::Int(store.run(true, |c| redis::cmd("HLEN").arg(v).query::<i64>(c))?),
        Op::Clear => {
            store.run(true, |c| redis::cmd("DEL").arg(&d.keys).query::<()>(c))?;
            PyValue::None
        }
        Op::Contains(k) => {
            let (field, _) = codec::field(&k)?;
            PyValue::Bool(store.run(true, |c| {
                redis::cmd("HEXISTS").arg(v).arg(&field).query::<bool>(c)
            })?)
        }
        Op::Lookup(k) => value_or(d.hget(&codec::field(&k)?.0)?, PyValue::None)?,
        Op::LookupOr(k, default) => value_or(d.hget(&codec::field(&k)?.0)?, default)?,
        Op::Get(k) => match d.hget(&codec::field(&k)?.0)? {
            Some(found) => codec::decode(&found)?,
            None => return Err(d.missing(&k)),
        },
        Op::LookupMany(keys) => {
            if keys.is_empty() {
                return Ok(PyValue::List(Vec::new()));
            }
            let fields = keys
                .iter()
                .map(|k| Ok(codec::field(k)?.0))
                .collect::<Result<Vec<_>>>()?;
            let found: Vec<Option<Vec<u8>>> =
                store.run(true, |c| redis::cmd("HMGET").arg(v).arg(&fields).query(c))?;
            if found.len() != fields.len() {
                return Err(inconsistent());
            }
            PyValue::List(
                found
                    .into_iter()
                    .map(|f| value_or(f, PyValue::None))
                    .collect::<Result<_>>()?,
            )
        }
        Op::Set(k, value) => {
            let (field, own) = codec::field(&k)?;
            let value = codec::encode(&value)?;
            d.invoke::<()>(&SET, true, &[&field, &own.unwrap_or_default(), &value])?;
            PyValue::None
        }
        Op::Update(items) => {
            if items.is_empty() {
                return Ok(PyValue::None);
            }
            let mut args = Vec::with_capacity(items.len() * 3);
            for (k, value) in &items {
                let (field, own) = codec::field(k)?;
                args.push(field);
                args.push(own.unwrap_or_default());
                args.push(codec::encode(value)?);
            }
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            d.invoke::<()>(&UPDATE, true, &args)?;
            PyValue::None
        }
        Op::Discard(k) => value_or(d.take(&k)?, PyValue::None)?,
        Op::PopOr(k, default) => value_or(d.take(&k)?, default)?,
        Op::Pop(k) => match d.take(&k)? {
            Some(found) => codec::decode(&found)?,
            None => return Err(key_error(&k)),
        },
        Op::Del(k) => {
            let had: bool = d.invoke(&DEL, false, &[&codec::field(&k)?.0])?;
            if !had {
                return Err(d.missing(&k));
            }
            PyValue::None
        }
        Op::PopItem => {
            let taken = super::take(|expected| {
                let mut args: Vec<&[u8]> = Vec::with_capacity(2);
                args.extend(expected.iter().map(Vec::as_slice));
                d.invoke(&POPITEM, false, &args)
            })?;
            match taken.as_deref() {
                None => {
                    return Err(Error::Remote {
                        kind: "KeyError".into(),
                        message: "'popitem(): dictionary is empty'".into(),
                    })
                }
                Some([k, v]) => PyValue::Tuple(vec![codec::decode(k)?, codec::decode(v)?]),
                Some(_) => return Err(inconsistent()),
            }
        }
        Op::SetDefault(k, default) => {
            let (field, own) = codec::field(&k)?;
            let default = codec::encode(&default)?;
            let found: Vec<u8> = d.invoke(
                &SETDEFAULT,
                true,
                &[&field, &own.unwrap_or_default(), &default],
            )?;
            codec::decode(&found)?
        }
        Op::Keys => {
            let keys: Vec<Vec<u8>> = d.invoke(&LIST, true, &[b"k"])?;
            PyValue::List(
                keys.iter()
                    .map(|k| codec::decode(k))
                    .collect::<Result<_>>()?,
            )
        }
        Op::Values => {
            let values: Vec<Option<Vec<u8>>> = d.invoke(&LIST, true, &[b"v"])?;
            PyValue::List(
                values
                    .iter()
                    .map(|v| v.as_deref().map_or(Err(inconsistent()), codec::decode))
                    .collect::<Result<_>>()?,
            )
        }
        Op::Snapshot | Op::Copy => PyValue::Dict(d.items()?),
        Op::GetValue if kind == Kind::Namespace => PyValue::Object(Box::new(PyObject::instance(
            "multiprocessing.managers",
            "Namespace",
            Vec::new(),
            Some(PyValue::Dict(d.items()?)),
        ))),
        Op::GetValue => PyValue::Dict(d.items()?),
        Op::Items => PyValue::List(
            d.items()?
                .into_iter()
                .map(|(k, v)| PyValue::Tuple(vec![k, v]))
                .collect(),
        ),
        Op::Repr => PyValue::Str(d.repr()?),
        Op::Increment(k, delta) => d.increment(&k, &delta)?,
        Op::CompareAndSet(k, expected, new) => {
            let (field, own) = codec::field(&k)?;
            let (flag, expected): (&[u8], Vec<u8>) = match &expected {
                Some(e) => (b"1", codec::encode(e)?),
                None => (b"0", Vec::new()),
            };
            let new = codec::encode(&new)?;
            let done: bool = d.invoke(
                &COMPARE_AND_SET,
                false,
                &[&field, &own.unwrap_or_default(), flag, &expected, &new],
            )?;
            PyValue::Bool(done)
        }
        // Python's own answer for a list's method on a dict.
        op @ (Op::Append(_)
        | Op::Extend(_)
        | Op::ExtendWith(_)
        | Op::Insert(..)
        | Op::Remove(_)
        | Op::Index(_)
        | Op::IndexIn(..)
        | Op::Count(_)
        | Op::Reverse
        | Op::Sort
        | Op::SortReverse
        | Op::Slice(..)
        | Op::Add(_)
        | Op::Mul(_)
        | Op::IMul(_)) => {
            return Err(Error::Remote {
                kind: "TypeError".into(),
                message: format!("{} is not an operation of a {kind:?}", op.name()),
            })
        }
        Op::Iter | Op::Reversed => {
            let keys: Vec<Vec<u8>> = d.invoke(&LIST, true, &[b"k"])?;
            let mut keys = keys
                .iter()
                .map(|k| codec::decode(k))
                .collect::<Result<Vec<_>>>()?;
            if matches!(op, Op::Reversed) {
                keys.reverse();
            }
            PyValue::Object(Box::new(PyObject::call(
                "builtins",
                "iter",
                vec![PyValue::List(keys)],
            )))
        }
        Op::Or(other) | Op::ROr(other) if !matches!(other, PyValue::Dict(_)) => {
            return Err(Error::Remote {
                kind: "TypeError".into(),
                message: format!(
                    "unsupported operand type(s) for |: 'dict' and '{}'",
                    other.type_name()
                ),
            })
        }
        Op::Or(PyValue::Dict(other)) => union(d.items()?, other),
        Op::ROr(PyValue::Dict(other)) => union(other, d.items()?),
        op @ (Op::UpdateWith(..) | Op::FromKeys(..) | Op::Or(_) | Op::ROr(_)) => {
            return Err(Error::InvalidArgument(format!(
                "{} is not done on a {kind:?} on Redis",
                op.name()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::manager::apply::{self, Object};
    use crate::manager::limits::Budget;

    /// The test server (`MULTIPROC_TEST_REDIS`), or `None` (skipped; a
    /// failure in CI).
    fn store(test: &str) -> Option<Arc<Store>> {
        match std::env::var("MULTIPROC_TEST_REDIS") {
            Ok(url) if !url.is_empty() => Some(Store::open(&url, Duration::from_secs(10)).unwrap()),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "in CI, {test} needs Redis"
                );
                eprintln!("skipped {test}: MULTIPROC_TEST_REDIS is not set");
                None
            }
        }
    }

    /// One object on a manager server's object model and on Redis.
    struct Twin {
        kind: Kind,
        local: Object,
        store: Arc<Store>,
        name: String,
    }

    impl Twin {
        fn new(kind: Kind, store: Arc<Store>) -> Twin {
            Twin {
                kind,
                local: Object::Dict(Map::with_hasher(apply::keyed())),
                store,
                name: super::super::fresh_name().unwrap(),
            }
        }

        /// Applies the op `make` makes to both; they must answer alike.
        fn check(&mut self, make: impl Fn() -> Op) {
            let op = make();
            let what = format!("{op:?}");
            let mut budget = Budget::new(usize::MAX / 2, usize::MAX / 2);
            let local = apply::run(self.kind, &mut self.local, make(), &mut budget)
                .map_err(|r| (r.class.to_string(), r.message()));
            let redis = self
                .store
                .apply(self.kind, &self.name, op)
                .map_err(|e| match e {
                    Error::Remote { kind, message } => (kind, message),
                    other => ("not Python's".to_string(), other.to_string()),
                });
            assert_eq!(
                anonymous(&format!("{local:?}")),
                anonymous(&format!("{redis:?}")),
                "{what}"
            );
        }
    }

    /// `text` without the `identity: N` of the objects in it (each object
    /// made is another one).
    fn anonymous(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("identity: ") {
            out.push_str(&rest[..at]);
            rest = rest[at + "identity: ".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out + rest
    }

    impl Drop for Twin {
        fn drop(&mut self) {
            let _ = self.store.delete(self.kind, &self.name);
        }
    }

    fn s(v: &str) -> PyValue {
        PyValue::from(v)
    }

    fn ops(t: &mut Twin) {
        use PyValue::{Bool, Float, Int, Tuple};
        t.check(|| Op::Repr);
        t.check(|| Op::PopItem);
        t.check(|| Op::Set(s("a"), Int(1)));
        t.check(|| Op::Set(Float(2.0), s("two")));
        t.check(|| Op::Set(Int(2), s("deux")));
        t.check(|| Op::Set(Bool(true), Tuple(vec![])));
        t.check(|| Op::Set(s("_h"), Float(0.5)));
        for k in [
            s("a"),
            Int(2),
            Float(1.0),
            s("zz"),
            Float(2.5),
            PyValue::None,
        ] {
            t.check(|| Op::Lookup(k.clone()));
            t.check(|| Op::LookupOr(k.clone(), Int(7)));
            t.check(|| Op::Get(k.clone()));
            t.check(|| Op::Contains(k.clone()));
        }
        t.check(|| Op::LookupMany(vec![s("a"), s("zz"), Bool(true)]));
        t.check(|| Op::LookupMany(vec![]));
        for op in [
            || Op::Len,
            || Op::Keys,
            || Op::Values,
            || Op::Items,
            || Op::Snapshot,
            || Op::Copy,
            || Op::GetValue,
            || Op::Repr,
        ] {
            t.check(op);
        }
        t.check(|| Op::SetDefault(s("a"), Int(0)));
        t.check(|| Op::SetDefault(s("sd"), PyValue::None));
        t.check(|| Op::PopOr(s("zz"), Int(3)));
        t.check(|| Op::PopOr(s("sd"), Int(3)));
        t.check(|| Op::Pop(s("zz")));
        t.check(|| Op::Discard(s("zz")));
        t.check(|| Op::Del(s("zz")));
        t.check(|| Op::Del(Float(2.0)));
        t.check(|| Op::Set(Int(2), s("back")));
        t.check(|| Op::Update(vec![(s("u"), Int(1)), (s("a"), Int(5)), (s("u"), Int(2))]));
        t.check(|| Op::Update(vec![]));
        t.check(|| Op::Increment(s("a"), Int(1)));
        t.check(|| Op::Increment(s("a"), Float(0.25)));
        t.check(|| Op::Increment(s("new"), Bool(true)));
        t.check(|| Op::Increment(s("_h"), s("x")));
        t.check(|| Op::Increment(Int(2), Int(1)));
        t.check(|| Op::CompareAndSet(s("new"), Some(Int(1)), Int(9)));
        t.check(|| Op::CompareAndSet(s("new"), None, Int(9)));
        t.check(|| Op::CompareAndSet(s("c"), None, Int(9)));
        t.check(|| Op::Keys);
        t.check(|| Op::Repr);
        t.check(|| Op::Snapshot);
        t.check(|| Op::GetValue);
        t.check(|| Op::Iter);
        t.check(|| Op::Reversed);
        t.check(|| Op::Or(PyValue::Dict(vec![(s("a"), Int(0)), (Float(9.0), Int(9))])));
        t.check(|| Op::ROr(PyValue::Dict(vec![(s("z"), Int(0)), (Bool(true), Int(1))])));
        t.check(|| Op::Or(Int(1)));
        t.check(|| Op::ROr(PyValue::List(vec![])));
        t.check(|| Op::Append(Int(1)));
        t.check(|| Op::Slice(0, 1));
        t.check(|| Op::Sort);
        for _ in 0..9 {
            t.check(|| Op::PopItem);
        }
        t.check(|| Op::Len);
        t.check(|| Op::Set(s("a"), Int(1)));
        t.check(|| Op::Clear);
        t.check(|| Op::Snapshot);
        t.check(|| Op::Repr);
    }

    #[test]
    fn dicts_and_namespaces_answer_as_the_manager_server() {
        let Some(store) = store("dicts_and_namespaces_answer_as_the_manager_server") else {
            return;
        };
        for kind in [Kind::Dict, Kind::Namespace] {
            ops(&mut Twin::new(kind, store.clone()));
        }
    }

    #[test]
    fn operations_redis_does_not_do_are_invalid_arguments() {
        let Some(store) = store("operations_redis_does_not_do_are_invalid_arguments") else {
            return;
        };
        let name = super::super::fresh_name().unwrap();
        for op in [
            Op::FromKeys(PyValue::List(vec![]), PyValue::None),
            Op::UpdateWith(None, vec![]),
        ] {
            let what = op.name();
            match store.apply(Kind::Dict, &name, op) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
