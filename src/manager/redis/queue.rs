//! A reliable queue on Redis ([`QueueProxy`]): at-least-once delivery
//! across machines, with acknowledgements and a reaper.
//!
//! Keys, under the hash tag `{queue:<name>}` (see [`key`](super::key)):
//! - `q`: the items waiting, a list (put at the left, taken from the right);
//! - `c`: the set of the consumers' ids;
//! - `p:<consumer>`: the items a consumer took and has not acknowledged;
//! - `hb:<consumer>`: the consumer's heartbeat, a key with a time to live
//!   that a thread of the consumer's process refreshes while it lives;
//! - `dead`: items that are not a multiproc envelope, or whose value does
//!   not decode (dead letters, kept for a person to look at);
//! - `u`: the number of unfinished items (Python's `JoinableQueue`): one
//!   more per item put, one less per item acknowledged;
//! - `j`: a list an acknowledgement that brings `u` to 0 pushes a token to,
//!   which [`QueueProxy::join`] waits on (a token that expires soon).
//!
//! An item is stored as an envelope, `mpq1:<id>:<deliveries>:<value>`:
//! a unique id (so that an acknowledgement removes that item and no
//! other), the number of the delivery the next consumer gets, and the
//! value as `codec` stores it.
//!
//! This file also has what the lock and event waits share: a process's
//! connections for blocking commands ([`Waiting`]), so that a thread
//! blocked on the server holds none of the connection every other call of
//! the process uses.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{RedisResult, Script};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::super::client::{decode, encode};
use super::super::protocol::Kind;
use super::wire::Wire;
use super::{check_name, codec, key, python_error, refused, Store, IDLE_CHECK, PYERR, REDIS_TOKEN};
use crate::error::{Error, Result};
use crate::per_process::PerProcess;
use crate::poison;

/// The longest one blocking command waits on the server before the
/// client looks again (reaps, checks the server is there): a bound on how
/// long a server that vanished without closing the connection goes
/// unnoticed.
pub(super) const SLICE: Duration = Duration::from_secs(5);

/// How long a consumer's heartbeat lives unless refreshed, unless
/// [`QueueProxy::with_heartbeat`] says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// The envelope's tag.
const TAG: &[u8] = b"mpq1:";

/// How long the token that wakes [`QueueProxy::join`] lives, in
/// milliseconds (a waiter that missed it still looks at the count at the
/// end of its slice).
const TOKEN_MS: &str = "2000";

/// The connections a process keeps for blocking commands, one per
/// waiting thread at most, kept for the next wait (the queue's, the
/// lock's, and the pool's waits for results).
pub(crate) struct Waiting {
    /// Each with when it was last used.
    idle: PerProcess<Vec<(Wire, Instant)>>,
}

impl Waiting {
    pub(crate) fn new() -> Waiting {
        Waiting {
            idle: PerProcess::new(),
        }
    }

    /// Runs `f`, a command that blocks on the server for up to `wait`, on
    /// a connection of its own. A connection that fails is dropped. A
    /// failure after the command may have been sent is
    /// [`Error::ManagerGone`] if it may run twice (`again`), else
    /// [`Error::Ambiguous`]. A kept connection the server may have closed
    /// while it was idle (a restart, an idle `timeout`) is not taken for
    /// a failure of the call: a call that may run twice runs once more on
    /// a new one, and one that may not is sent only after a `PING` on a
    /// connection idle for a second or more (as [`Store::run`] does).
    ///
    /// # Errors
    /// As above; [`Error::Remote`] for the server's errors.
    pub(crate) fn run<R>(
        &self,
        store: &Store,
        wait: Duration,
        again: bool,
        mut f: impl FnMut(&mut Wire) -> RedisResult<R>,
    ) -> Result<R> {
        let taken = poison::locked(self.idle.get()).as_mut().and_then(Vec::pop);
        let mut retry = again && taken.is_some();
        let mut conn = match taken {
            Some((mut conn, used)) if !again && used.elapsed() >= IDLE_CHECK => {
                match conn.call(store.timeout, |c| redis::cmd("PING").query::<()>(c)) {
                    Ok(()) => conn,
                    Err(e) if e.is_timeout() => return Err(store.unreachable(&e)),
                    Err(_) => store.connect()?,
                }
            }
            Some((conn, _)) => conn,
            None => store.connect()?,
        };
        loop {
            match conn.call(store.timeout.saturating_add(wait), &mut f) {
                Ok(r) => {
                    poison::locked(self.idle.get())
                        .get_or_insert_with(Vec::new)
                        .push((conn, Instant::now()));
                    return Ok(r);
                }
                Err(e)
                    if retry
                        && !e.is_timeout()
                        && (e.is_io_error() || e.is_connection_dropped()) =>
                {
                    retry = false;
                    conn = store.connect()?;
                }
                Err(e) => return Err(classify(store, &e, again)),
            }
        }
    }
}

/// A Redis error as multiproc's (as `Store::run` does).
pub(super) fn classify(store: &Store, e: &redis::RedisError, again: bool) -> Error {
    if e.code() == Some(PYERR) {
        python_error(e)
    } else if refused(e) {
        store.unreachable(e)
    } else if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        if again {
            store.unreachable(e)
        } else {
            Error::Ambiguous(format!(
                "the connection to Redis at {} failed during the call ({e}): it may or may not have been done",
                store.place
            ))
        }
    } else {
        Error::Remote {
            kind: "RedisError".into(),
            message: e.to_string(),
        }
    }
}

/// A wait as a blocking command's timeout in seconds: rounded up to whole
/// milliseconds, at least one (Redis takes `0` for "forever").
pub(super) fn seconds(wait: Duration) -> String {
    let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// How long until `deadline` (`None`: never), at most `slice`; `None` if
/// it has passed.
pub(super) fn next_wait(deadline: Option<Instant>, slice: Duration) -> Option<Duration> {
    match deadline {
        None => Some(slice),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                None
            } else {
                Some(left.min(slice))
            }
        }
    }
}

/// `timeout` from now (`None`: never; a timeout too far to represent is never).
pub(super) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A proxy of the object `name` of this kind (`tag`: `"queue"`, `"lock"`,
/// `"event"`, `"value"`) on `store`, as serde sees it: a newtype struct
/// under [`REDIS_TOKEN`] holding its URL, kind tag and name, as a dict's
/// proxy is (with a string for its kind).
pub(super) fn serialize_proxy<S: serde::Serializer>(
    s: S,
    store: &Store,
    tag: &str,
    name: &str,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(REDIS_TOKEN, &(&store.url, tag, name))
}

/// The store and name of a proxy [`serialize_proxy`] wrote with `tag`: on
/// this process's store for its URL, never a new one (a message from a
/// peer never makes this process connect to a server it did not choose).
///
/// # Errors
/// Not such a proxy, another kind's, a bad name, or a URL this process has
/// not connected to.
pub(super) fn deserialize_proxy<'de, D: serde::Deserializer<'de>>(
    d: D,
    tag: &str,
) -> std::result::Result<(Arc<Store>, String), D::Error> {
    use serde::de::Error as _;
    struct Fields;
    impl<'de> serde::de::Visitor<'de> for Fields {
        type Value = (String, String, String);
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a Redis object's proxy")
        }
        fn visit_newtype_struct<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            serde::Deserialize::deserialize(d)
        }
    }
    let (url, found, name) = d
        .deserialize_newtype_struct(REDIS_TOKEN, Fields)
        .map_err(|e| D::Error::custom(format!("not a Redis {tag}'s proxy: {e}")))?;
    if found != tag {
        return Err(D::Error::custom(format!(
            "expected a Redis {tag}'s proxy, found a {found:?} proxy"
        )));
    }
    check_name(&name).map_err(D::Error::custom)?;
    let store = Store::shared(&url, None).map_err(D::Error::custom)?;
    Ok((store, name))
}

/// A fresh random token (32 hex digits).
pub(super) fn token() -> Result<String> {
    super::fresh_name()
}

/// Returns the items of consumers whose heartbeat expired to the head of
/// the queue (the next taken), oldest first, with their delivery count one
/// more (as digits: `tostring` writes 1e14 and up as `1e+14`); what is
/// not an envelope goes to the dead letters. A consumer
/// whose list of items is not a list (another program wrote it) is left
/// alone, registered (so that deleting the queue deletes that key): one
/// such key must not fail every reaper, and so every `get`. The keys of
/// the consumers are derived from `ARGV[1]`, the object's key prefix,
/// within its hash tag.
static REAP: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
for _, k in ipairs({KEYS[1], KEYS[3]}) do
  local t = redis.call('TYPE', k).ok
  if t ~= 'list' and t ~= 'none' then
    return redis.error_reply('PYERR TypeError the key ' .. k .. ' is not a list (another program wrote it)')
  end
end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local p = ARGV[1] .. 'p:' .. id
  local t = redis.call('TYPE', p).ok
  if (t == 'list' or t == 'none') and redis.call('EXISTS', ARGV[1] .. 'hb:' .. id) == 0 then
    while true do
      local e = redis.call('LPOP', p)
      if not e then break end
      local uid, c = string.match(e, '^mpq1:(%x+):(%d+):')
      if uid and #c <= 15 then
        local head = 'mpq1:' .. uid .. ':'
        local rest = string.sub(e, #head + #c + 2)
        redis.call('RPUSH', KEYS[1], head .. string.format('%d', tonumber(c) + 1) .. ':' .. rest)
        n = n + 1
      else
        redis.call('RPUSH', KEYS[3], e)
      end
    end
    redis.call('SREM', KEYS[2], id)
  end
end
return n
",
    )
});

/// Registers a consumer (`ARGV[1]`) and starts its heartbeat.
static JOIN: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
",
    )
});

/// Refreshes a consumer's heartbeat if it is still registered (1); 0 if
/// the reaper took its items (it was too late) or the queue was removed.
static BEAT: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
",
    )
});

/// A consumer that ends: its heartbeat goes (the reaper returns what it
/// holds), and so does its registration if it holds nothing. A consumer
/// whose `BLMOVE` was given up on (`ARGV[3]` is not `0`) and holds
/// nothing closes its list of items in progress instead, with a string
/// that lives `ARGV[3]` ms: that `BLMOVE`, if it reaches the server
/// later, fails on the key's type and takes nothing, rather than putting
/// an item in the list of a consumer that no reaper looks at any more.
/// It stays registered meanwhile (the reaper leaves a consumer whose list
/// is not a list alone, and unregisters it once the string has expired),
/// so that deleting the queue deletes the string too.
static LEAVE: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[2])
if redis.call('LLEN', KEYS[3]) == 0 then
  if ARGV[3] == '0' then
    redis.call('SREM', KEYS[1], ARGV[1])
  else
    redis.call('SET', KEYS[3], 'closed', 'PX', ARGV[3])
  end
end
return 1
",
    )
});

/// How long a consumer's list stays closed after it left with a `BLMOVE`
/// given up on (see [`LEAVE`]), at least: its heartbeat's time to live if
/// longer (how late a request may come is what the reaper assumes too).
const CLOSED: Duration = Duration::from_secs(60);

/// What [`ACK`] and [`BURY`] share: one item finished. `v` is the count of
/// unfinished items as read before any write (a foreign value there is
/// left alone, digits past 64 bits too: the item is finished all the
/// same), `count` its key; the count reaching 0 pushes a token to
/// `joined` for [`QueueProxy::join`], which expires after `ttl` ms.
const FINISH: &str = r"
local function finish(v, count, joined, ttl)
  local u = v and string.match(v, '^%d+$') and tonumber(v)
  if u and u > 0 and redis.pcall('DECR', count) == 0 then
    redis.call('DEL', joined)
    redis.call('RPUSH', joined, '1')
    redis.call('PEXPIRE', joined, ttl)
  end
end
";

/// Moves an item a consumer took to the dead letters; one multiproc put
/// (`ARGV[2]` is `1`) also counts as finished, as [`ACK`] does.
static BURY: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(&format!(
        "{FINISH}
local t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'list' and t ~= 'none' then
  return redis.error_reply('PYERR TypeError the dead letters key is not a list (another program wrote it)')
end
local v = redis.call('GET', KEYS[3])
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  if ARGV[2] == '1' then finish(v, KEYS[3], KEYS[4], ARGV[3]) end
end
return n
"
    ))
});

/// Puts the envelopes `ARGV` at the tail of the queue and counts them
/// unfinished (`KEYS[2]`), in one script. The count is added first, and
/// the queue's type checked before: a count that cannot grow (a foreign
/// value, one at the edge of 64 bits) or a queue key of another type
/// fails the put before anything is written (a put reported failed that
/// had pushed its items would put them twice when run again).
static PUT: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'list' and t ~= 'none' then
  return redis.error_reply('PYERR TypeError the queue key is not a list (another program wrote it)')
end
local u = redis.call('GET', KEYS[2])
if u and not string.match(u, '^%-?%d+$') then
  return redis.error_reply('PYERR ValueError the unfinished count of the queue is not a number')
end
local n = redis.pcall('INCRBY', KEYS[2], #ARGV)
if type(n) == 'table' and n.err then
  return redis.error_reply('PYERR ValueError the unfinished count of the queue cannot grow: ' .. n.err)
end
local i = 1
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  redis.call('LPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
return n
",
    )
});

/// Acknowledges an item (`task_done`): removes it from the consumer's
/// items in progress, and only if it was there counts one fewer
/// unfinished (never below 0); the count reaching 0 pushes a token to
/// `KEYS[3]` for [`QueueProxy::join`], which expires after `ARGV[2]` ms.
static ACK: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(&format!(
        "{FINISH}
local v = redis.call('GET', KEYS[2])
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n > 0 then finish(v, KEYS[2], KEYS[3], ARGV[2]) end
return n
"
    ))
});

/// The number of unfinished items (`KEYS[1]`, 0 if none), as its digits
/// (a Lua number past 64 bits would come back as a wrong integer); when
/// it is 0 and `ARGV[1]` is `1` (the caller was woken by a token), a
/// token is left for the next waiter (one at most, expiring after
/// `ARGV[2]` ms).
static UNFINISHED: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1]) or '0'
if not string.match(v, '^%-?%d+$') then
  return redis.error_reply('PYERR ValueError the unfinished count of the queue is not a number')
end
if tonumber(v) <= 0 and ARGV[1] == '1' and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return v
",
    )
});

/// Takes the item at the head of the queue (`KEYS[1]`) into the
/// consumer's items in progress (`KEYS[3]`) if the consumer (`ARGV[1]`)
/// is still registered (`KEYS[2]`), refreshing its heartbeat (`KEYS[4]`,
/// `ARGV[2]` ms): the item, nil if none, 0 if the consumer is no longer
/// registered (the reaper took it: an item put in its list would be seen
/// by no reaper).
static TAKE: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return 0 end
local e = redis.call('LMOVE', KEYS[1], KEYS[3], 'RIGHT', 'LEFT')
if e then redis.call('SET', KEYS[4], '1', 'PX', ARGV[2]) end
return e
",
    )
});

/// After a `BLMOVE` put the item `ARGV[3]` in the consumer's items in
/// progress (`KEYS[3]`): if the consumer (`ARGV[1]`) is still registered
/// (`KEYS[2]`), refreshes its heartbeat (`KEYS[4]`, `ARGV[2]` ms) and
/// answers 1; else (the reaper took it while it waited) puts the item
/// back at the head of the queue (`KEYS[1]`), undelivered, and answers 0.
static CLAIM: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
  return 1
end
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'list' and t ~= 'none' then
  return redis.error_reply('PYERR TypeError the queue key is not a list (another program wrote it)')
end
if redis.call('LREM', KEYS[3], 1, ARGV[3]) > 0 then
  redis.call('RPUSH', KEYS[1], ARGV[3])
end
return 0
",
    )
});

/// Deletes a queue: its consumers' lists and heartbeats too (those of
/// the consumers in its set, when that key is a set: another program's
/// key of another type there is deleted with the others).
static DELETE: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
local n = 0
local ids = {}
if redis.call('TYPE', KEYS[2]).ok == 'set' then ids = redis.call('SMEMBERS', KEYS[2]) end
for _, id in ipairs(ids) do
  n = n + redis.call('DEL', ARGV[1] .. 'p:' .. id, ARGV[1] .. 'hb:' .. id)
end
return n + redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], ARGV[1] .. 'u', ARGV[1] .. 'j')
",
    )
});

fn part(name: &str, part: &str) -> String {
    key(Kind::Queue, name, part)
}

/// Deletes the queue `name`; whether it existed.
pub(super) fn delete(store: &Store, name: &str) -> Result<bool> {
    let prefix = part(name, "");
    let keys = [part(name, "q"), part(name, "c"), part(name, "dead")];
    store
        .run(true, |c| {
            DELETE
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(&prefix)
                .invoke::<u64>(c)
        })
        .map(|n| n > 0)
}

/// A reliable queue on Redis, shared by every process (on any machine)
/// that asks its manager for the same name
/// ([`Manager::queue_named`](super::super::Manager::queue_named)).
///
/// Delivery is **at least once, not exactly once**: [`get`](QueueProxy::get)
/// moves the item into this consumer's list of items in progress, and
/// hands it out with a [`Delivery`]; [`Delivery::ack`] removes it from
/// there when the work is done. If the consumer's process dies (or stops
/// refreshing its heartbeat for longer than its time to live, say paused
/// or cut off from Redis) before acknowledging, the reaper (run by any
/// consumer's `get`, or by [`reap`](QueueProxy::reap)) puts the item back
/// at the head of the queue, and another consumer gets it again with a
/// higher [`Delivery::count`]: work that must not be done twice must be
/// idempotent or checked by the consumer.
///
/// A consumer is one per proxy per process (its clones share it; a forked
/// child gets its own): a thread of the process refreshes its heartbeat
/// every third of its time to live until the proxy and its deliveries are
/// dropped.
///
/// What differs from a manager server's queue: unbounded (no `maxsize`,
/// `put` never waits); [`qsize`](QueueProxy::qsize) counts the items
/// waiting, not those in progress. It is also Python's `JoinableQueue`:
/// [`Delivery::ack`] is `task_done` (once per item, however often it is
/// called) and [`join`](QueueProxy::join) waits for every item put to be
/// acknowledged. An item that is
/// not multiproc's (another program pushed it), or whose value does not
/// decode as `T`, is moved to the queue's dead letters (the key
/// `multiproc:{queue:<name>}:dead`) and `get` answers
/// [`Error::Deserialize`]: never lost, never a panic.
pub struct QueueProxy<T> {
    inner: Arc<QueueInner>,
    _types: PhantomData<fn(T) -> T>,
}

impl<T> Clone for QueueProxy<T> {
    fn clone(&self) -> Self {
        QueueProxy {
            inner: self.inner.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for QueueProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProxy")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

struct QueueInner {
    store: Arc<Store>,
    name: String,
    queue: String,
    consumers: String,
    dead: String,
    unfinished: String,
    joined: String,
    prefix: String,
    heartbeat: Duration,
    consumer: PerProcess<Arc<Consumer>>,
    waiting: Waiting,
    /// When this process last ran the reaper (per process: a plain lock
    /// held by another thread at a fork would never be freed in the child).
    last_reap: PerProcess<Instant>,
}

/// One consumer: its list of items in progress, and the thread that keeps its heartbeat, which
/// ends (deleting the heartbeat) when this is dropped.
struct Consumer {
    /// Its id in the queue's set of consumers.
    id: String,
    /// Its heartbeat's key.
    beat: String,
    processing: String,
    /// Still registered (its heartbeat thread clears it when not).
    alive: Arc<AtomicBool>,
    /// A `BLMOVE` into its list was given up on (it may yet reach the
    /// server): its list is closed when it leaves (see [`LEAVE`]).
    given_up: Arc<AtomicBool>,
    /// Dropped, it stops the heartbeat thread (in the process that made
    /// it only).
    beating: Option<mpsc::Sender<()>>,
    /// The process whose thread keeps its heartbeat.
    pid: u32,
}

impl Drop for Consumer {
    /// In a forked child (whose copy of a parent's consumer goes with the
    /// child's copy of the proxy) the sender is forgotten, not dropped:
    /// the child has no heartbeat thread to stop, and the channel's lock
    /// may have been held by that thread at the fork, in which case
    /// dropping it would hang the child.
    fn drop(&mut self) {
        if self.pid != crate::sys::getpid() {
            std::mem::forget(self.beating.take());
        }
    }
}

/// An item taken from a [`QueueProxy`]: acknowledge it with
/// [`ack`](Delivery::ack) when its work is done.
///
/// Dropping it unacknowledged leaves the item in progress until its
/// consumer ends (the proxy and its deliveries dropped, or the process
/// gone), then the reaper gives it to another consumer.
pub struct Delivery {
    inner: Arc<QueueInner>,
    consumer: Arc<Consumer>,
    envelope: Vec<u8>,
    count: u64,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.inner.name)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Which delivery of the item this is: 1 the first time, 2 after its
    /// first consumer died without acknowledging it, and so on.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Acknowledges the item, Python's `task_done`: its work is done, it
    /// is removed from its consumer's items in progress (an `LREM` of its
    /// envelope) and, only if it was there, counted as finished for
    /// [`QueueProxy::join`] (in the same script). `false` if it was no
    /// longer there: the reaper had given it back to the queue (this
    /// consumer's heartbeat had expired), and another consumer may get it
    /// again; it stays unfinished until that delivery is acknowledged.
    ///
    /// # Errors
    /// As a call on Redis ([`Error::ManagerGone`] if unreachable): a
    /// failure after sending is [`Error::Ambiguous`] (it may have been
    /// acknowledged; run again, it would find the item gone and answer
    /// `false` as if the reaper had taken it).
    pub fn ack(self) -> Result<bool> {
        let (processing, envelope) = (&self.consumer.processing, &self.envelope);
        let (unfinished, joined) = (&self.inner.unfinished, &self.inner.joined);
        self.inner
            .store
            .run(false, |c| {
                ACK.key(processing)
                    .key(unfinished)
                    .key(joined)
                    .arg(envelope)
                    .arg(TOKEN_MS)
                    .invoke::<u64>(c)
            })
            .map(|n| n > 0)
    }
}

fn envelope(value: &[u8]) -> Result<Vec<u8>> {
    let id = token()?;
    let mut e = Vec::with_capacity(TAG.len() + id.len() + 3 + value.len());
    e.extend_from_slice(TAG);
    e.extend_from_slice(id.as_bytes());
    e.extend_from_slice(b":1:");
    e.extend_from_slice(value);
    Ok(e)
}

/// An envelope's delivery count and value; `None` if it is not one.
fn open(e: &[u8]) -> Option<(u64, &[u8])> {
    let rest = e.strip_prefix(TAG)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let (id, rest) = (&rest[..colon], &rest[colon + 1..]);
    if id.is_empty() || !id.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let colon = rest.iter().position(|&b| b == b':')?;
    let count = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some((count, &rest[colon + 1..]))
}

/// A queue's proxy sent to another process (through a pipe, a queue, a
/// Redis value): its URL, `"queue"` and its name.
impl<T> Serialize for QueueProxy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_proxy(s, &self.inner.store, "queue", &self.inner.name)
    }
}

/// A queue's proxy from another process, on this process's store for its
/// URL: an error if this process (or the one it was forked from) has not
/// connected to that server. Its consumer's heartbeat is the default
/// (10 s), not the sender's [`with_heartbeat`](QueueProxy::with_heartbeat).
impl<'de, T> serde::Deserialize<'de> for QueueProxy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (store, name) = deserialize_proxy(d, "queue")?;
        Ok(QueueProxy {
            inner: Arc::new(QueueInner::new(store, &name, DEFAULT_HEARTBEAT)),
            _types: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// The queue's name on Redis.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A proxy of the same queue whose consumer's heartbeat lives `ttl`
    /// unless refreshed (default 10 s): the shorter, the sooner a dead
    /// consumer's items go to another, and the more often its process
    /// writes to Redis (every third of it). Its consumer is its own, not
    /// that of `self`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] below 10 ms.
    pub fn with_heartbeat(&self, ttl: Duration) -> Result<QueueProxy<T>> {
        if ttl < Duration::from_millis(10) {
            return Err(Error::InvalidArgument(format!(
                "a queue consumer's heartbeat lives 10 ms or more, not {ttl:?}"
            )));
        }
        let ttl = ttl.min(Duration::from_secs(1 << 30));
        let i = &self.inner;
        Ok(QueueProxy {
            inner: Arc::new(QueueInner::new(i.store.clone(), &i.name, ttl)),
            _types: PhantomData,
        })
    }

    /// Puts `item` at the tail of the queue and counts it unfinished (one
    /// script: `LPUSH` and `INCRBY`).
    ///
    /// # Errors
    /// [`Error::Serialize`] if `item` does not convert; as a call on
    /// Redis (a failure after sending is [`Error::Ambiguous`]: it may have
    /// been put).
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_many(std::slice::from_ref(item))
    }

    /// Puts `items` in order and counts them unfinished, in one round trip
    /// (one script).
    ///
    /// # Errors
    /// As for [`put`](QueueProxy::put).
    pub fn put_many(&self, items: &[T]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let envelopes = items
            .iter()
            .map(|item| envelope(&codec::encode(&encode(item)?)?))
            .collect::<Result<Vec<_>>>()?;
        let (queue, unfinished) = (&self.inner.queue, &self.inner.unfinished);
        self.inner.store.run(false, |c| {
            PUT.key(queue)
                .key(unfinished)
                .arg(&envelopes)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    /// Waits until every item put has been acknowledged (Python's
    /// `JoinableQueue.join`): the count of unfinished items, one more per
    /// item put and one less per [`Delivery::ack`], is 0. An item taken by
    /// a consumer that died stays unfinished: it is delivered again, and
    /// counts as finished when that delivery is acknowledged. An item
    /// moved to the dead letters (it did not decode) counts as finished.
    ///
    /// `timeout`: `Some(Duration::ZERO)` looks once; `Some(t)` waits up
    /// to `t` (any `t`, `Duration::MAX` included); `None` as long as it
    /// takes. The wait is no polling loop: a `BLPOP` on the queue's `j`
    /// key, to which the acknowledgement that brings the count to 0
    /// pushes a token, on a connection of its own, in slices of at most
    /// 5 s, after each of which the count is read again.
    ///
    /// # Errors
    /// [`Error::Timeout`] if items were still unfinished at the end of
    /// `timeout`; [`Error::Remote`] if the count's key holds a foreign
    /// value; as a call on Redis.
    pub fn join(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = deadline(timeout);
        let inner = &self.inner;
        let (unfinished, joined) = (&inner.unfinished, &inner.joined);
        let mut woken = false;
        loop {
            let left = inner.store.run(true, |c| {
                UNFINISHED
                    .key(unfinished)
                    .key(joined)
                    .arg(if woken { "1" } else { "0" })
                    .arg(TOKEN_MS)
                    .invoke::<String>(c)
            })?;
            let left: i64 = left.parse().map_err(|_| Error::Remote {
                kind: "ValueError".into(),
                message: format!("the unfinished count of the queue, {left}, is past 64 bits"),
            })?;
            if left <= 0 {
                return Ok(());
            }
            let Some(wait) = next_wait(deadline, SLICE) else {
                return Err(Error::Timeout);
            };
            woken = inner
                .waiting
                .run(&inner.store, wait, true, |c| {
                    redis::cmd("BLPOP")
                        .arg(joined)
                        .arg(seconds(wait))
                        .query::<Option<(String, String)>>(c)
                })?
                .is_some();
        }
    }

    /// Takes the item at the head of the queue, with its [`Delivery`]
    /// (acknowledge it when done). `timeout`: `Some(Duration::ZERO)` does
    /// not wait; `Some(t)` waits up to `t` (any `t`, a huge one
    /// included); `None` waits as long as it takes. A take is one script
    /// (`LMOVE` into this consumer's items in progress, only while the
    /// consumer is registered, refreshing its heartbeat); a wait is a
    /// `BLMOVE` on a connection of its own, in slices of at most 5 s (a
    /// server that goes away ends it with an error, not a hang), followed
    /// by a script that claims the item for the consumer, or puts it back
    /// at the head of the queue if the reaper took the consumer while it
    /// waited (its heartbeat was late): an item is never left in a list
    /// the reaper no longer looks at. One gap remains: a process that had
    /// been paused past its heartbeat and dies between the `BLMOVE` and
    /// the claim leaves that item in such a list.
    ///
    /// Runs the reaper first if this proxy has not run it for a third of
    /// its heartbeat.
    ///
    /// # Errors
    /// [`Error::Empty`] if no item came in time; [`Error::Deserialize`] if
    /// the item is not multiproc's or does not decode as `T` (it is moved
    /// to the dead letters); as a call on Redis: a connection failure or
    /// a timeout while an item may have been taken (the server took it
    /// and its reply did not come in time) is [`Error::Ambiguous`] (this
    /// proxy then takes a new consumer id, and the old one's items return
    /// to the queue when its heartbeat expires, or at once when this
    /// proxy is dropped; a `BLMOVE` that reaches the server only after
    /// the old consumer left finds its list closed, and takes nothing):
    /// an item is never lost, it may be delivered twice.
    pub fn get(&self, timeout: Option<Duration>) -> Result<(T, Delivery)> {
        let deadline = deadline(timeout);
        let inner = &self.inner;
        // Consumers found reaped on this call: after the first, the
        // deadline is looked at (heartbeats so late that each new
        // consumer is reaped before it takes must not make it spin).
        let mut reaped = 0u32;
        loop {
            if reaped > 1 && next_wait(deadline, SLICE).is_none() {
                return Err(Error::Empty);
            }
            inner.reap_if_due()?;
            let consumer = inner.consumer()?;
            let (queue, consumers) = (&inner.queue, &inner.consumers);
            let (processing, beat) = (&consumer.processing, &consumer.beat);
            let ttl = inner.ttl();
            let taken = inner.store.run(false, |c| {
                TAKE.key(queue)
                    .key(consumers)
                    .key(processing)
                    .key(beat)
                    .arg(&consumer.id)
                    .arg(&ttl)
                    .invoke::<redis::Value>(c)
            });
            let taken = match taken {
                Err(e @ Error::Ambiguous(_)) => {
                    inner.retire(&consumer);
                    return Err(e);
                }
                other => other?,
            };
            match taken {
                redis::Value::BulkString(e) => return self.deliver(consumer, e),
                redis::Value::Int(0) => {
                    // Reaped: the next turn registers a new consumer.
                    inner.retire(&consumer);
                    reaped += 1;
                    continue;
                }
                _ if timeout == Some(Duration::ZERO) => return Err(Error::Empty),
                _ => {}
            }
            let Some(wait) = next_wait(deadline, SLICE.min(inner.heartbeat / 3)) else {
                return Err(Error::Empty);
            };
            let taken = inner.waiting.run(&inner.store, wait, false, |c| {
                redis::cmd("BLMOVE")
                    .arg(queue)
                    .arg(processing)
                    .arg("RIGHT")
                    .arg("LEFT")
                    .arg(seconds(wait))
                    .query::<Option<Vec<u8>>>(c)
            });
            let taken = match taken {
                Err(e @ Error::Ambiguous(_)) => {
                    // The `BLMOVE` may yet reach the server: the consumer
                    // closes its list when it leaves.
                    consumer.given_up.store(true, Ordering::Relaxed);
                    inner.retire(&consumer);
                    return Err(e);
                }
                other => other?,
            };
            let Some(e) = taken else { continue };
            let claimed = inner.store.run(true, |c| {
                CLAIM
                    .key(queue)
                    .key(consumers)
                    .key(processing)
                    .key(beat)
                    .arg(&consumer.id)
                    .arg(&ttl)
                    .arg(&e)
                    .invoke::<u64>(c)
            });
            match claimed {
                Ok(1) => return self.deliver(consumer, e),
                Ok(_) => {
                    inner.retire(&consumer);
                    reaped += 1;
                }
                Err(err) => {
                    // The item is in this consumer's list: it returns to
                    // the queue when the consumer's heartbeat expires.
                    inner.retire(&consumer);
                    return Err(Error::Ambiguous(format!(
                        "an item was taken but could not be claimed ({err}): it returns to the queue when this consumer's heartbeat expires"
                    )));
                }
            }
        }
    }

    fn deliver(&self, consumer: Arc<Consumer>, e: Vec<u8>) -> Result<(T, Delivery)> {
        let decoded = match open(&e) {
            None => Err(Error::Deserialize(
                "the queue held an item that is not multiproc's".into(),
            )),
            Some((count, value)) => codec::decode(value)
                .and_then(decode::<T>)
                .map(|item| (count, item)),
        };
        match decoded {
            Ok((count, item)) => Ok((
                item,
                Delivery {
                    inner: self.inner.clone(),
                    consumer,
                    envelope: e,
                    count,
                },
            )),
            Err(why) => {
                let (processing, dead) = (&consumer.processing, &self.inner.dead);
                let (unfinished, joined) = (&self.inner.unfinished, &self.inner.joined);
                let ours = if open(&e).is_some() { "1" } else { "0" };
                let buried = self.inner.store.run(true, |c| {
                    BURY.key(processing)
                        .key(dead)
                        .key(unfinished)
                        .key(joined)
                        .arg(&e)
                        .arg(ours)
                        .arg(TOKEN_MS)
                        .invoke::<u64>(c)
                });
                if let Err(err) = buried {
                    // The item is still in this consumer's list: retired,
                    // the consumer leaves when dropped (here), and the
                    // reaper returns the item to the queue, rather than
                    // leaving it there while this proxy lives.
                    self.inner.retire(&consumer);
                    return Err(err);
                }
                Err(Error::Deserialize(format!(
                    "{why}; the item was moved to the dead letters, {dead}"
                )))
            }
        }
    }

    /// Runs the reaper now: the items of consumers whose heartbeat expired
    /// go back to the head of the queue, with their delivery count one
    /// more (one script). The number of items returned.
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn reap(&self) -> Result<u64> {
        self.inner.reap()
    }

    /// The number of items waiting (not those taken and unacknowledged).
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn qsize(&self) -> Result<u64> {
        let queue = &self.inner.queue;
        self.inner
            .store
            .run(true, |c| redis::cmd("LLEN").arg(queue).query::<u64>(c))
    }

    /// Whether no item is waiting.
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }
}

impl QueueInner {
    fn new(store: Arc<Store>, name: &str, heartbeat: Duration) -> QueueInner {
        QueueInner {
            store,
            name: name.to_string(),
            queue: part(name, "q"),
            consumers: part(name, "c"),
            dead: part(name, "dead"),
            unfinished: part(name, "u"),
            joined: part(name, "j"),
            prefix: part(name, ""),
            heartbeat,
            consumer: PerProcess::new(),
            waiting: Waiting::new(),
            last_reap: PerProcess::new(),
        }
    }

    fn reap(&self) -> Result<u64> {
        *poison::locked(self.last_reap.get()) = Some(Instant::now());
        let (queue, consumers, dead, prefix) =
            (&self.queue, &self.consumers, &self.dead, &self.prefix);
        self.store.run(true, |c| {
            REAP.key(queue)
                .key(consumers)
                .key(dead)
                .arg(prefix)
                .invoke::<u64>(c)
        })
    }

    fn reap_if_due(&self) -> Result<()> {
        let due = poison::locked(self.last_reap.get())
            .is_none_or(|last| last.elapsed() >= self.heartbeat / 3);
        if due {
            self.reap()?;
        }
        Ok(())
    }

    /// The heartbeat's time to live in milliseconds.
    fn ttl(&self) -> String {
        self.heartbeat.as_millis().max(1).to_string()
    }

    /// This process's consumer, registered (and its heartbeat thread
    /// started) on first use.
    fn consumer(&self) -> Result<Arc<Consumer>> {
        let mut slot = poison::locked(self.consumer.get());
        if let Some(c) = &*slot {
            if c.alive.load(Ordering::Relaxed) {
                return Ok(c.clone());
            }
        }
        let id = token()?;
        let keys = [
            self.consumers.clone(),
            format!("{}hb:{id}", self.prefix),
            format!("{}p:{id}", self.prefix),
        ];
        let ttl = self.ttl();
        self.store.run(true, |c| {
            JOIN.key(&keys[0])
                .key(&keys[1])
                .arg(&id)
                .arg(&ttl)
                .invoke::<u64>(c)
        })?;
        let (tx, rx) = mpsc::channel::<()>();
        let alive = Arc::new(AtomicBool::new(true));
        let given_up = Arc::new(AtomicBool::new(false));
        let beat = Beat {
            store: self.store.clone(),
            every: self.heartbeat / 3,
            keys: keys.clone(),
            id: id.clone(),
            ttl,
            closed: self.heartbeat.max(CLOSED).as_millis().to_string(),
            alive: alive.clone(),
            given_up: given_up.clone(),
        };
        std::thread::Builder::new()
            .name("multiproc-queue-heartbeat".into())
            .spawn(move || beat.run(&rx))
            .map_err(|e| Error::io("spawn a queue heartbeat thread", e))?;
        let [_, beat, processing] = keys;
        let c = Arc::new(Consumer {
            id,
            beat,
            processing,
            alive,
            given_up,
            beating: Some(tx),
            pid: crate::sys::getpid(),
        });
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Stops using `consumer` for new items (after a failure that left
    /// what it holds unknown).
    fn retire(&self, consumer: &Arc<Consumer>) {
        let mut slot = poison::locked(self.consumer.get());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, consumer)) {
            *slot = None;
        }
    }
}

/// A consumer's heartbeat thread.
struct Beat {
    store: Arc<Store>,
    every: Duration,
    /// The consumers' set, the heartbeat, the items in progress.
    keys: [String; 3],
    id: String,
    ttl: String,
    /// How long its list stays closed if it leaves with a `BLMOVE` given
    /// up on, in milliseconds.
    closed: String,
    alive: Arc<AtomicBool>,
    given_up: Arc<AtomicBool>,
}

impl Beat {
    /// Refreshes the heartbeat every `every` on a connection of its own,
    /// until the consumer is dropped (then it leaves, so that the reaper
    /// gives its unacknowledged items to others at once) or is no longer
    /// registered (then the next `get` makes a new consumer).
    fn run(self, stop: &mpsc::Receiver<()>) {
        let mut conn: Option<Wire> = None;
        loop {
            let stopped = !matches!(
                stop.recv_timeout(self.every),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            if conn.is_none() {
                conn = self.store.connect().ok();
            }
            let Some(c) = conn.as_mut() else {
                if stopped {
                    return;
                }
                continue;
            };
            let k = &self.keys;
            let script = if stopped { &*LEAVE } else { &*BEAT };
            let closed = if self.given_up.load(Ordering::Relaxed) {
                &self.closed
            } else {
                "0"
            };
            let beat = c.call(self.store.timeout, |c| {
                script
                    .key(&k[0])
                    .key(&k[1])
                    .key(&k[2])
                    .arg(&self.id)
                    .arg(&self.ttl)
                    .arg(closed)
                    .invoke::<u64>(c)
            });
            match beat {
                Ok(0) => {
                    self.alive.store(false, Ordering::Relaxed);
                    return;
                }
                Ok(_) => {}
                Err(_) => conn = None,
            }
            if stopped {
                return;
            }
        }
    }
}

impl super::super::Manager {
    /// The reliable queue called `name` on Redis (see [`QueueProxy`]):
    /// every process that asks for the same name gets the same queue.
    ///
    /// On a manager server's handle this is [`Error::InvalidArgument`] for
    /// now (as [`dict_named`](super::super::Manager::dict_named)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a manager server's handle, or for a
    /// name that is empty or over 512 bytes.
    pub fn queue_named<T>(&self, name: &str) -> Result<QueueProxy<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        check_name(name)?;
        let store = self.store(name)?;
        Ok(QueueProxy {
            inner: Arc::new(QueueInner::new(store.clone(), name, DEFAULT_HEARTBEAT)),
            _types: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_open() {
        let e = envelope(b"s\x00:x").unwrap();
        assert_eq!(open(&e), Some((1, &b"s\x00:x"[..])));
        for bad in [
            &b""[..],
            b"mpq1:",
            b"mpq1:zz:1:x",
            b"mpq1:ab:x:1",
            b"mpq1:ab:1",
            b"x",
        ] {
            assert_eq!(open(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn waits_are_whole_milliseconds() {
        assert_eq!(seconds(Duration::from_nanos(1)), "0.001");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
        assert_eq!(seconds(Duration::from_micros(1001)), "0.002");
    }
}
