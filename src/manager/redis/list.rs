//! Lists on Redis: one Redis list (part `l`) of encoded values (see
//! `codec`), in the list's order.
//!
//! Each operation is one command or one Lua script:
//!
//! | operation | on Redis | cost |
//! |---|---|---|
//! | `get`, `set` | `LINDEX` / a script of `LLEN` + `LSET` | O(1) at the ends, O(min(i, n−i)) inside |
//! | `append`, `extend` | one `RPUSH` (all the items) | O(1) per item |
//! | `insert`, `pop`, `del l[i]` | a script (`LPUSH`/`RPUSH`/`LPOP`/`RPOP` at the ends, a unique pivot inside; a `pop` of an item the script cannot tell decodes, a second one once the client decoded it) | O(1) at the ends; inside O(i) (`insert`), O(min(i, n−i)) (`pop`) |
//! | `remove`, `index`, `count`, `in` | `LREM 1` / `LPOS` / `LPOS COUNT 0` / `LPOS` | O(n) |
//! | `len`, `clear` | `LLEN` / `DEL` | O(1) / O(n) |
//! | `reverse`, `sort` | a script that reads, rewrites the list | O(n) / O(n log n), blocking the server meanwhile |
//! | slice, snapshot, repr | `LRANGE` | O(k) for k items |
//! | `l[i] += d` | a script (ints through `INCRBY` on a scratch key of the same hash slot) | as `get` |
//!
//! A script holds the whole server while it runs: `sort` of 100,000 ints
//! took 1.5 s, of 100,000 short strs 6.6 s (Lua compares them byte by
//! byte) on a loaded 2-core machine, and past Redis's
//! `busy-reply-threshold` (5 s) other clients' commands fail with `BUSY`
//! until it ends. Sort long lists in the client (`to_vec`) instead.
//!
//! What differs from a manager server's list:
//! - equality (`remove`, `index`, `count`, `in`) is equality of the
//!   stored encodings: `1`, `1.0` and `True` are three different values
//!   (Python finds them equal);
//! - `sort` orders ints and floats by number (exactly, also beyond 2^53),
//!   bools with them (as Python does), strs by their UTF-8 bytes (Python's
//!   order), bytes by bytes; any other type (tuples, None, ...) in a list
//!   of two or more items is a `TypeError` (Python orders tuples with
//!   tuples; ints beyond 64 bits are stored as pickles, and are not
//!   ordered either); NaNs may end elsewhere than Python puts them;
//! - `l[i] += d` adds ints of 64 bits (beyond is `OverflowError`, a
//!   manager server goes to 127 bits), floats, and bools as ints.

use crate::lazy::Lazy;

use redis::Script;

use super::codec::{LUA_FLOAT, LUA_NUMBERS, LUA_PLAIN};
use super::{codec, fresh_name, key, Store};
use crate::error::{Error, Result};
use crate::manager::protocol::{Kind, Op};
use crate::manager::PyValue;

/// The keys a list is made of: the list (`l`), and a scratch key (`t`)
/// that an increment of ints uses inside its script and deletes there.
pub(super) const PARTS: &[&str] = &["l", "t"];

/// Lua helpers: `replace` puts the items `t` in place of the list's `n`
/// (`RPUSH`es of at most 1000, as Lua's `unpack` has a bound, then an
/// `LTRIM` of the old ones); if a push fails (`OOM`), it trims what it
/// pushed and answers the error: the list is as it was. `at`: Python's
/// index from the end.
const LUA_HELPERS: &str = r"
local function replace(key, t, n)
  for j = 1, n, 1000 do
    local r = redis.pcall('RPUSH', key, unpack(t, j, math.min(j + 999, n)))
    if type(r) == 'table' and r.err then
      redis.call('LTRIM', key, 0, n - 1)
      return r
    end
  end
  redis.call('LTRIM', key, n, -1)
  return nil
end
local function at(i, n)
  i = tonumber(i)
  if i < 0 then i = i + n end
  return i
end
";

/// `l[i] = v`. KEYS: list; ARGV: index, value.
static SET: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local n = redis.call('LLEN', KEYS[1])
local i = at(ARGV[1], n)
if i < 0 or i >= n then
  return redis.error_reply('PYERR IndexError list assignment index out of range')
end
redis.call('LSET', KEYS[1], i, ARGV[2])
return 1
"
    ))
});

/// `l.insert(i, v)`, `i` clamped as Python does. KEYS: list; ARGV: index,
/// value, a pivot no value equals.
static INSERT: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local n = redis.call('LLEN', KEYS[1])
local i = tonumber(ARGV[1])
if i < 0 then i = math.max(i + n, 0) else i = math.min(i, n) end
if i >= n then
  redis.call('RPUSH', KEYS[1], ARGV[2])
elseif i == 0 then
  redis.call('LPUSH', KEYS[1], ARGV[2])
else
  local old = redis.call('LINDEX', KEYS[1], i)
  redis.call('LSET', KEYS[1], i, ARGV[3])
  local r = redis.pcall('LINSERT', KEYS[1], 'BEFORE', ARGV[3], ARGV[2])
  if type(r) == 'table' and r.err then
    redis.call('LSET', KEYS[1], i, old)
    return r
  end
  redis.call('LSET', KEYS[1], i + 1, old)
end
return 1
",
    )
});

/// `l.pop(i)` and `del l[i]`. KEYS: list; ARGV: index, a pivot no value
/// equals, the message for an empty list, for an index out of range, `1`
/// to take any item (`del`), and the item expected (see `super::take`).
/// Answers `{'T', item}` (taken) or `{'P', item}` (left where it was).
static POP: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
{}
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return redis.error_reply('PYERR IndexError ' .. ARGV[3]) end
local i = at(ARGV[1], n)
if i < 0 or i >= n then return redis.error_reply('PYERR IndexError ' .. ARGV[4]) end
local v = redis.call('LINDEX', KEYS[1], i)
if ARGV[5] ~= '1' and v ~= ARGV[6] and not plain(v) then return {{'P', v}} end
if i == 0 then
  redis.call('LPOP', KEYS[1])
elseif i == n - 1 then
  redis.call('RPOP', KEYS[1])
else
  redis.call('LSET', KEYS[1], i, ARGV[2])
  if i < n / 2 then
    redis.call('LREM', KEYS[1], 1, ARGV[2])
  else
    redis.call('LREM', KEYS[1], -1, ARGV[2])
  end
end
return {{'T', v}}
",
        *LUA_PLAIN
    ))
});

/// `l.reverse()`. KEYS: list.
static REVERSE: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local n = #items
if n < 2 then return 1 end
local rev = {{}}
for i = n, 1, -1 do rev[n - i + 1] = items[i] end
local e = replace(KEYS[1], rev, n)
if e then return e end
return 1
"
    ))
});

/// Lua (after `codec::LUA_NUMBERS`): what kind of number an encoding is
/// (`'i'`, `'f'` or nil: what `decode` refuses is none; bools are ints,
/// as in Python), an int's (or bool's) digits, and byte-wise
/// comparison of strings (Lua's `<` follows the server's locale). The
/// script defines `TRUE` and `FALSE`: the encodings of `True` and `False`.
const LUA_VALUES: &str = r"
local function intof(s)
  if s == TRUE then return '1' end
  if s == FALSE then return '0' end
  return s
end
local function numkind(s)
  if s == TRUE or s == FALSE then return 'i' end
  local c = string.byte(s, 1)
  if c == nil then return nil end
  if c == 45 or (c >= 48 and c <= 57) then
    if is_i64(s) then return 'i' end
    return nil
  end
  if float_of(s) then return 'f' end
  return nil
end
local byte = string.byte
local function bytelt(a, b)
  if a == b then return false end
  local n = #a
  if #b < n then n = #b end
  for k = 1, n do
    local x, y = byte(a, k), byte(b, k)
    if x ~= y then return x < y end
  end
  return #a < #b
end
";

/// `l.sort()` (stable). KEYS: list; ARGV: `1` for `reverse=True`, the
/// encodings of `True` and `False`.
/// Answers `{'OK'}`, or `{'TE', a, b}`: `a < b` is not supported.
static SORT: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local TRUE, FALSE = ARGV[2], ARGV[3]
{LUA_NUMBERS}
{LUA_VALUES}
-- Integer strings (no leading zeros, no '-0') compared exactly.
local function cmpint(x, y)
  local nx, ny = string.byte(x, 1) == 45, string.byte(y, 1) == 45
  if nx ~= ny then if nx then return -1 else return 1 end end
  if nx then x = string.sub(x, 2); y = string.sub(y, 2) end
  local c
  if #x ~= #y then
    if #x < #y then c = -1 else c = 1 end
  elseif x == y then c = 0
  elseif bytelt(x, y) then c = -1 else c = 1 end
  if nx then c = -c end
  return c
end
local function intstr(s)
  local neg = string.byte(s, 1) == 45
  if neg then s = string.sub(s, 2) end
  s = string.gsub(s, '^0+(%d)', '%1')
  if s == '0' then return '0' end
  if neg then return '-' .. s end
  return s
end
local EXACT = 9007199254740992
-- int (exact string) < float
local function intlt(i, f, int_first)
  if f ~= f then return false end
  if f == math.huge then return int_first end
  if f == -math.huge then return not int_first end
  local fl = math.floor(f)
  local c = cmpint(i, intstr(string.format('%.0f', fl)))
  if int_first then return c < 0 or (c == 0 and fl < f) end
  return c > 0
end
local function numlt(a, b)
  if a.exact and b.exact then return a.num < b.num end
  if a.int and b.int then return cmpint(a.int, b.int) < 0 end
  if a.int then return intlt(a.int, b.num, true) end
  if b.int then return intlt(b.int, a.num, false) end
  return a.num < b.num
end
local function class(s)
  local c = string.byte(s, 1)
  local k = numkind(s)
  if k then return 'n' end
  if c == 115 then return 's' end
  if c == 98 then return 'b' end
  return 'x'
end
local function msort(a, lt)
  local n = #a
  local src, dst = a, {{}}
  local width = 1
  while width < n do
    local i = 1
    while i <= n do
      local mid = math.min(i + width, n + 1)
      local hi = math.min(i + 2 * width, n + 1)
      local l, r, k = i, mid, i
      while l < mid and r < hi do
        if lt(src[r], src[l]) then dst[k] = src[r]; r = r + 1 else dst[k] = src[l]; l = l + 1 end
        k = k + 1
      end
      while l < mid do dst[k] = src[l]; l = l + 1; k = k + 1 end
      while r < hi do dst[k] = src[r]; r = r + 1; k = k + 1 end
      i = i + 2 * width
    end
    src, dst = dst, src
    width = width * 2
  end
  return src
end

local items = redis.call('LRANGE', KEYS[1], 0, -1)
local n = #items
if n < 2 then return {{'OK'}} end
local c0 = class(items[1])
for i = 2, n do
  local c = class(items[i])
  if c ~= c0 or c == 'x' then return {{'TE', items[i], items[1]}} end
end
local reverse = ARGV[1] == '1'
local t = {{}}
for i = 1, n do
  local j = i
  if reverse then j = n - i + 1 end
  local s = items[j]
  if c0 == 'n' then
    local r = {{raw = s}}
    if numkind(s) == 'i' then
      r.int = intstr(intof(s))
      r.num = tonumber(r.int)
      r.exact = math.abs(r.num) < EXACT
    else
      r.num = tonumber(string.sub(s, 2))
      r.exact = true
    end
    t[i] = r
  else
    t[i] = s
  end
end
-- Equal keys in groups, in the list's order (stable); the distinct keys
-- sorted by table.sort (C's quicksort; numbers compared in C). Equal
-- strs and bytes are equal encodings; equal numbers may not be (2, 2.0).
local function grouped(keys, raws, lt)
  local groups, distinct = {{}}, {{}}
  for i = 1, n do
    local g = groups[keys[i]]
    if g == nil then
      g = {{}}
      groups[keys[i]] = g
      distinct[#distinct + 1] = keys[i]
    end
    g[#g + 1] = raws[i]
  end
  if lt then table.sort(distinct, lt) else table.sort(distinct) end
  local out = {{}}
  for _, k in ipairs(distinct) do
    for _, raw in ipairs(groups[k]) do out[#out + 1] = raw end
  end
  return out
end
local sorted
if c0 == 'n' then
  local simple, nums, raws = true, {{}}, {{}}
  for i = 1, n do
    local r = t[i]
    if not r.exact or r.num ~= r.num then simple = false; break end
    nums[i] = r.num
    raws[i] = r.raw
  end
  if simple then
    -- Exact doubles (floats, ints below 2^53), no NaN: compared in C.
    sorted = grouped(nums, raws, nil)
  else
    sorted = msort(t, numlt)
    for i = 1, n do sorted[i] = sorted[i].raw end
  end
else
  sorted = grouped(t, t, bytelt)
end
if reverse then
  local back = {{}}
  for i = 1, n do back[i] = sorted[n - i + 1] end
  sorted = back
end
local e = replace(KEYS[1], sorted, n)
if e then return e end
return {{'OK'}}
"
    ))
});

/// `l[i] += d`. KEYS: list, scratch key; ARGV: index, delta, the
/// encodings of `True` and `False`. Answers
/// `{'OK', new}`, or `{'TE', item, delta}` for what is not a number.
static INCREMENT: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local TRUE, FALSE = ARGV[3], ARGV[4]
{LUA_NUMBERS}
{LUA_VALUES}
{LUA_FLOAT}
local n = redis.call('LLEN', KEYS[1])
local i = at(ARGV[1], n)
if i < 0 or i >= n then
  return redis.error_reply('PYERR IndexError list index out of range')
end
local old = redis.call('LINDEX', KEYS[1], i)
local d = ARGV[2]
local ko, kd = numkind(old), numkind(d)
if not ko or not kd then return {{'TE', old, d}} end
local new
if ko == 'i' and kd == 'i' then
  redis.call('SET', KEYS[2], intof(old))
  local r = redis.pcall('INCRBY', KEYS[2], intof(d))
  new = redis.call('GET', KEYS[2])
  redis.call('DEL', KEYS[2])
  if type(r) == 'table' and r.err then
    return redis.error_reply('PYERR OverflowError ' .. intof(old) .. ' + ' .. intof(d) .. ' is beyond the 64-bit ints a Redis list holds')
  end
else
  local function num(s, kind)
    if kind == 'i' then return tonumber(intof(s)) end
    return tonumber(string.sub(s, 2))
  end
  new = 'f' .. fmt(num(old, ko) + num(d, kd))
end
redis.call('LSET', KEYS[1], i, new)
return {{'OK', new}}
"
    ))
});

/// The encodings of `True` and `False` (pickles), for the scripts that
/// take bools for the ints 1 and 0, as Python does.
static TRUE: Lazy<Vec<u8>> = Lazy::new(|| encoded_bool(true));
static FALSE: Lazy<Vec<u8>> = Lazy::new(|| encoded_bool(false));

fn encoded_bool(b: bool) -> Vec<u8> {
    // A bool holds no proxy: its encoding cannot fail.
    codec::encode(&PyValue::Bool(b)).unwrap_or_default()
}

/// A value that `Store::run` gives back: `Some(bytes)` or nil.
type Bulk = Option<Vec<u8>>;

/// A pivot for `insert`/`pop` inside the list: no encoding starts with a
/// NUL byte, and the random tail makes it unlike any foreign value.
fn pivot() -> Result<Vec<u8>> {
    Ok(format!("\0multiproc-pivot:{}", fresh_name()?).into_bytes())
}

/// What a command that answers nothing a proxy wants answers.
fn none<T>(_: T) -> PyValue {
    PyValue::None
}

fn decode_all(items: &[Vec<u8>]) -> Result<Vec<PyValue>> {
    items.iter().map(|b| codec::decode(b)).collect()
}

/// An int index of an `Op` (the proxies send `PyValue::Int`).
fn int_index(op: &str, k: &PyValue) -> Result<i64> {
    match k {
        PyValue::Int(i) => Ok(*i),
        PyValue::Bool(b) => Ok(i64::from(*b)),
        other => Err(Error::Remote {
            kind: "TypeError".into(),
            message: format!(
                "list indices must be integers, not {} ({op} on Redis takes no slices)",
                other.type_name()
            ),
        }),
    }
}

fn type_error(message: String) -> Error {
    Error::Remote {
        kind: "TypeError".into(),
        message,
    }
}

/// A script's `{'TE', a, b}` (the error `refuse` makes of `a` and `b`)
/// or `{'OK', …}` answer.
fn checked(answer: Vec<Vec<u8>>, refuse: impl Fn(&PyValue, &PyValue) -> Error) -> Result<Bulk> {
    let mut it = answer.into_iter();
    match (it.next().as_deref(), it.next(), it.next()) {
        (Some(b"OK"), new, None) => Ok(new),
        (Some(b"TE"), Some(a), Some(b)) => {
            let (a, b) = (codec::decode(&a)?, codec::decode(&b)?);
            Err(refuse(&a, &b))
        }
        _ => Err(Error::Deserialize(
            "an answer of a multiproc script that is not its own".into(),
        )),
    }
}

pub(super) fn apply(store: &Store, name: &str, op: Op) -> Result<PyValue> {
    let k = key(Kind::List, name, "l");
    match op {
        Op::Len => store
            .run(true, |c| redis::cmd("LLEN").arg(&k).query::<i64>(c))
            .map(PyValue::Int),
        Op::Clear => store
            .run(true, |c| redis::cmd("DEL").arg(&k).query::<i64>(c))
            .map(none),
        Op::Snapshot | Op::Copy | Op::GetValue | Op::Repr => {
            let items = store.run(true, |c| {
                redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query::<Vec<Vec<u8>>>(c)
            })?;
            let list = PyValue::List(decode_all(&items)?);
            Ok(match op {
                Op::Repr => PyValue::Str(list.repr()),
                _ => list,
            })
        }
        Op::Slice(a, b) => {
            // Python's `l[a:b]` is Redis's `LRANGE a b-1`, both clamping
            // the same way, but for `b == 0` (Redis's -1 is the last).
            if b == 0 {
                return Ok(PyValue::List(Vec::new()));
            }
            let stop = b.saturating_sub(1);
            let items = store.run(true, |c| {
                redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(a)
                    .arg(stop)
                    .query::<Vec<Vec<u8>>>(c)
            })?;
            Ok(PyValue::List(decode_all(&items)?))
        }
        Op::Get(i) => {
            let i = int_index("__getitem__", &i)?;
            let v = store.run(true, |c| {
                redis::cmd("LINDEX").arg(&k).arg(i).query::<Bulk>(c)
            })?;
            match v {
                Some(v) => codec::decode(&v),
                None => Err(Error::Remote {
                    kind: "IndexError".into(),
                    message: "list index out of range".into(),
                }),
            }
        }
        Op::Set(i, v) => {
            let i = int_index("__setitem__", &i)?;
            let v = codec::encode(&v)?;
            // Not run twice: an insert in between would make it set
            // another item.
            store
                .run(false, |c| SET.key(&k).arg(i).arg(&v).invoke::<i64>(c))
                .map(none)
        }
        Op::Append(v) => {
            let v = codec::encode(&v)?;
            store
                .run(false, |c| {
                    redis::cmd("RPUSH").arg(&k).arg(&v).query::<i64>(c)
                })
                .map(none)
        }
        Op::Extend(vs) => {
            if vs.is_empty() {
                return Ok(PyValue::None);
            }
            let vs = vs.iter().map(codec::encode).collect::<Result<Vec<_>>>()?;
            store
                .run(false, |c| {
                    redis::cmd("RPUSH").arg(&k).arg(&vs).query::<i64>(c)
                })
                .map(none)
        }
        Op::Insert(i, v) => {
            let v = codec::encode(&v)?;
            let pivot = pivot()?;
            store
                .run(false, |c| {
                    INSERT.key(&k).arg(i).arg(&v).arg(&pivot).invoke::<i64>(c)
                })
                .map(none)
        }
        Op::Pop(ref i) | Op::Del(ref i) => {
            let del = matches!(op, Op::Del(_));
            let i = int_index(op.name(), i)?;
            let (empty, range) = if del {
                (
                    "list assignment index out of range",
                    "list assignment index out of range",
                )
            } else {
                ("pop from empty list", "pop index out of range")
            };
            let pivot = pivot()?;
            let any = if del { "1" } else { "0" };
            let taken = super::take(|expected| {
                store.run(false, |c| {
                    let mut call = POP.key(&k);
                    call.arg(i).arg(&pivot).arg(empty).arg(range).arg(any);
                    if let Some(e) = expected.first() {
                        call.arg(e);
                    }
                    call.invoke(c)
                })
            })?;
            match taken.as_deref() {
                _ if del => Ok(PyValue::None),
                Some([v]) => codec::decode(v),
                _ => Err(Error::Deserialize(
                    "an answer of a multiproc script that is not its own".into(),
                )),
            }
        }
        Op::Remove(v) => {
            let e = codec::encode(&v)?;
            let n = store.run(false, |c| {
                redis::cmd("LREM").arg(&k).arg(1).arg(&e).query::<i64>(c)
            })?;
            if n == 0 {
                return Err(Error::Remote {
                    kind: "ValueError".into(),
                    message: "list.remove(x): x not in list".into(),
                });
            }
            Ok(PyValue::None)
        }
        Op::Index(v) => {
            let e = codec::encode(&v)?;
            let at = store.run(true, |c| {
                redis::cmd("LPOS").arg(&k).arg(&e).query::<Option<i64>>(c)
            })?;
            at.map(PyValue::Int).ok_or_else(|| Error::Remote {
                kind: "ValueError".into(),
                message: format!("{} is not in list", v.repr()),
            })
        }
        Op::Contains(v) => {
            let e = codec::encode(&v)?;
            store
                .run(true, |c| {
                    redis::cmd("LPOS").arg(&k).arg(&e).query::<Option<i64>>(c)
                })
                .map(|at| PyValue::Bool(at.is_some()))
        }
        Op::Count(v) => {
            let e = codec::encode(&v)?;
            store
                .run(true, |c| {
                    redis::cmd("LPOS")
                        .arg(&k)
                        .arg(&e)
                        .arg("COUNT")
                        .arg(0)
                        .query::<Vec<i64>>(c)
                })
                .map(|at| PyValue::Int(at.len() as i64))
        }
        Op::Reverse => store
            .run(false, |c| REVERSE.key(&k).invoke::<i64>(c))
            .map(none),
        Op::Sort | Op::SortReverse => {
            let reverse = if matches!(op, Op::SortReverse) { 1 } else { 0 };
            // Not run twice: an append in between would be sorted in.
            let answer = store.run(false, |c| {
                SORT.key(&k)
                    .arg(reverse)
                    .arg(&*TRUE)
                    .arg(&*FALSE)
                    .invoke::<Vec<Vec<u8>>>(c)
            })?;
            checked(answer, |a, b| {
                type_error(format!(
                    "'<' not supported between instances of '{}' and '{}'",
                    a.type_name(),
                    b.type_name()
                ))
            })
            .map(none)
        }
        Op::Increment(i, delta) => {
            let i = int_index("_multiproc_increment", &i)?;
            let d = codec::encode(&delta)?;
            let scratch = key(Kind::List, name, "t");
            let answer = store.run(false, |c| {
                INCREMENT
                    .key(&k)
                    .key(&scratch)
                    .arg(i)
                    .arg(&d)
                    .arg(&*TRUE)
                    .arg(&*FALSE)
                    .invoke::<Vec<Vec<u8>>>(c)
            })?;
            let new = checked(answer, |a, b| {
                let big = |v: &PyValue| matches!(v, PyValue::BigInt(_));
                if big(a) || big(b) {
                    return Error::Remote {
                        kind: "OverflowError".into(),
                        message: "a Redis list adds ints of at most 64 bits".into(),
                    };
                }
                type_error(format!(
                    "unsupported operand type(s) for +=: '{}' and '{}'",
                    a.type_name(),
                    b.type_name()
                ))
            })?;
            match new {
                Some(new) => codec::decode(&new),
                None => Err(Error::Deserialize(
                    "an increment's answer without the new value".into(),
                )),
            }
        }
        other => Err(Error::InvalidArgument(format!(
            "{} is not an operation a Redis-backed list does",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation a list does not have is refused by name, before any
    /// round trip.
    #[test]
    fn operations_a_list_has_not_are_invalid_arguments() {
        let Ok(url) = std::env::var("MULTIPROC_TEST_REDIS") else {
            eprintln!("skipped: MULTIPROC_TEST_REDIS is not set");
            return;
        };
        let store = Store::open(&url, std::time::Duration::from_secs(5)).unwrap();
        for op in [
            Op::Keys,
            Op::PopItem,
            Op::Lookup(PyValue::Int(1)),
            Op::Mul(2),
        ] {
            let name = op.name();
            match apply(&store, "never-made", op) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(name), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn bools_have_encodings() {
        assert!(!TRUE.is_empty() && !FALSE.is_empty() && *TRUE != *FALSE);
        let p = pivot().unwrap();
        assert!(p.starts_with(b"\0") && p != pivot().unwrap());
    }
}
