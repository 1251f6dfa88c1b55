//! A value on Redis ([`ValueProxy`]): one key, `multiproc:{value:<name>}:v`,
//! holding the value as `codec` stores it.

use std::marker::PhantomData;
use std::sync::Arc;

use redis::Script;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::super::client::{decode, encode};
use super::{check_name, codec, Store};
use crate::error::{Error, Result};

fn part(name: &str) -> String {
    format!("multiproc:{{value:{name}}}:v")
}

/// Adds a float to the value (an int, a float or nothing, which is 0):
/// the sum, stored as a float as the codec stores it (so that a
/// `compare_and_set` of the sum `get` answers finds it).
static ADD_FLOAT: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        &[
            codec::LUA_FLOAT,
            codec::LUA_NUMBERS,
            r"
local v = redis.call('GET', KEYS[1])
local x
if not v then x = 0
elseif is_i64(v) then x = tonumber(v)
else x = float_of(v)
end
if x == nil then
  return redis.error_reply('PYERR TypeError the value is not a number')
end
local s = 'f' .. fmt(x + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], s)
return s
",
        ]
        .concat(),
    )
});

/// Sets the value to `ARGV[2]` if it is `ARGV[1]` (byte for byte): 1, else 0.
static CAS: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Deletes the value `name`; whether it existed.
pub(super) fn delete(store: &Store, name: &str) -> Result<bool> {
    let key = part(name);
    store
        .run(true, |c| redis::cmd("DEL").arg(&key).query::<u64>(c))
        .map(|n| n > 0)
}

/// A value on Redis (Python's manager `Value`), shared by every process
/// (on any machine) that asks its manager for the same name
/// ([`Manager::value_named`](super::super::Manager::value_named)).
///
/// What differs from a manager server's `Value`: it has no value until
/// one is set ([`get`](ValueProxy::get) answers `None`), and no typecode:
/// `T` is any serde type, stored as the Redis backend stores values.
pub struct ValueProxy<T> {
    inner: Arc<ValueInner>,
    _types: PhantomData<fn(T) -> T>,
}

struct ValueInner {
    store: Arc<Store>,
    name: String,
    key: String,
}

impl<T> Clone for ValueProxy<T> {
    fn clone(&self) -> Self {
        ValueProxy {
            inner: self.inner.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ValueProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueProxy")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

fn stored<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    codec::encode(&encode(v)?)
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value's name on Redis.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The value; `None` if it was never set (or was removed).
    ///
    /// # Errors
    /// [`Error::Deserialize`] if what is stored does not decode as `T`
    /// (another program wrote the key, or another type); as a call on Redis.
    pub fn get(&self) -> Result<Option<T>> {
        let key = &self.inner.key;
        let raw = self.inner.store.run(true, |c| {
            redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(c)
        })?;
        raw.map(|b| codec::decode(&b).and_then(decode)).transpose()
    }

    /// Sets the value.
    ///
    /// # Errors
    /// [`Error::Serialize`] if `value` does not convert; as a call on Redis.
    pub fn set(&self, value: &T) -> Result<()> {
        let (key, bytes) = (&self.inner.key, stored(value)?);
        self.inner.store.run(true, |c| {
            redis::cmd("SET").arg(key).arg(&bytes).query::<()>(c)
        })
    }

    /// Adds `delta` to an integer value (nothing counts as 0), atomically
    /// (`INCRBY`); the new value.
    ///
    /// Unlike Python's ints, the value is 64-bit: an overflow is an error,
    /// and nothing is changed.
    ///
    /// # Errors
    /// [`Error::Remote`] (`RedisError`) if the value is not an integer or
    /// the sum overflows; as a call on Redis (a failure after sending is
    /// [`Error::Ambiguous`]).
    pub fn increment(&self, delta: i64) -> Result<i64> {
        let key = &self.inner.key;
        self.inner.store.run(false, |c| {
            redis::cmd("INCRBY").arg(key).arg(delta).query::<i64>(c)
        })
    }

    /// Adds `delta` to a number (an int or a float; nothing counts as 0),
    /// atomically (one script); the new value, which is stored as a float.
    ///
    /// # Errors
    /// [`Error::Remote`] (`TypeError`) if the value is not a number;
    /// [`Error::InvalidArgument`] for a `delta` that is not finite; as a
    /// call on Redis (a failure after sending is [`Error::Ambiguous`]).
    pub fn increment_float(&self, delta: f64) -> Result<f64> {
        if !delta.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "increment_float of {delta}: not a finite number"
            )));
        }
        let key = &self.inner.key;
        let arg = format!("{delta:e}");
        let raw = self
            .inner
            .store
            .run(false, |c| ADD_FLOAT.key(key).arg(&arg).invoke::<Vec<u8>>(c))?;
        match codec::decode(&raw)? {
            super::super::PyValue::Float(f) => Ok(f),
            other => Err(Error::Deserialize(format!(
                "increment_float answered {other}"
            ))),
        }
    }

    /// Sets the value to `new` if it is `current` now (as stored: `1` and
    /// `1.0` differ), atomically (one script); whether it did. A value
    /// never set is no `current`.
    ///
    /// # Errors
    /// [`Error::Serialize`] if a value does not convert; as a call on
    /// Redis (a failure after sending is [`Error::Ambiguous`]).
    pub fn compare_and_set(&self, current: &T, new: &T) -> Result<bool> {
        let (current, new) = (stored(current)?, stored(new)?);
        let key = &self.inner.key;
        self.inner
            .store
            .run(false, |c| {
                CAS.key(key).arg(&current).arg(&new).invoke::<u64>(c)
            })
            .map(|n| n == 1)
    }
}

impl super::super::Manager {
    /// The value called `name` on Redis (see [`ValueProxy`]): every
    /// process that asks for the same name gets the same value.
    ///
    /// On a manager server's handle this is [`Error::InvalidArgument`] for
    /// now (as [`dict_named`](super::super::Manager::dict_named)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a manager server's handle, or for a
    /// name that is empty or over 512 bytes.
    pub fn value_named<T>(&self, name: &str) -> Result<ValueProxy<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        check_name(name)?;
        let store = self.store(name)?;
        Ok(ValueProxy::on(store.clone(), name))
    }
}

impl<T> ValueProxy<T> {
    fn on(store: Arc<Store>, name: &str) -> ValueProxy<T> {
        ValueProxy {
            inner: Arc::new(ValueInner {
                store,
                name: name.to_string(),
                key: part(name),
            }),
            _types: PhantomData,
        }
    }
}

/// A value's proxy sent to another process (through a pipe, a queue, a
/// Redis value): its URL, `"value"` and its name.
impl<T> Serialize for ValueProxy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        super::queue::serialize_proxy(s, &self.inner.store, "value", &self.inner.name)
    }
}

/// A value's proxy from another process, on this process's store for its
/// URL: an error if this process (or the one it was forked from) has not
/// connected to that server.
impl<'de, T> serde::Deserialize<'de> for ValueProxy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (store, name) = super::queue::deserialize_proxy(d, "value")?;
        Ok(ValueProxy::on(store, &name))
    }
}
