//! The pool across machines: tasks submitted through Redis and run by
//! worker processes on any machine that runs the same program.
//!
//! ```text
//!  submitter (RemotePool)              Redis                  worker (serve)
//!  apply_async ── SUBMIT script ──▶ tasks{id: record}
//!                                   pending [id, …] ── BLMOVE ──▶ processing:<w>
//!                                                                 fork a child, run the task
//!  get ◀── result:<id> ◀──────────── FINISH script ◀────────────  (heartbeat alive:<w> meanwhile)
//! ```
//!
//! A task is a function `fn(A) -> R` registered under a stable name with
//! [`task!`](crate::task) (its full path, as [`entry!`](crate::entry) names
//! an entry): the submitter sends that name and the encoded arguments, and a
//! worker runs the task only if the list it was given in [`serve`] has one
//! of that name and of those argument and result types. No address crosses
//! the network, so any build of the same program serves any other's tasks.
//!
//! Arguments and results are encoded with postcard, as the local pool's
//! are: both ends are the same program with the same types, so a compact
//! encoding without a schema is enough (the managed layer's codec is for
//! values a Python program may read, which task arguments are not).
//!
//! # What it guarantees
//! - A task runs at least once, and normally once: its result is the first
//!   one written; a second run (after a worker was wrongly thought dead)
//!   writes nothing once the first has finished.
//! - A task that panics is [`Error::TaskFailed`] with the panic message.
//! - Each task runs in a child forked by its worker. A task that crashes
//!   its child (abort, segfault, `exit`, killed) is run once more, by
//!   whichever worker takes it next; if that run dies too, it is
//!   [`Error::WorkerDied`] with the child's exit code. A worker that dies
//!   itself (kill -9, its machine lost) stops renewing its heartbeat key;
//!   when the key expires, a reaper (run by every worker and every waiting
//!   submitter, one Lua script) puts its task back in the queue once, and
//!   fails it with `WorkerDied { exitcode: -9 }` the second time (the real
//!   exit code is not known on another machine).
//! - Every step on Redis is one command or one Lua script; all of a pool's
//!   keys share one hash tag, `multiproc:{pool:<name>}:…` (the scripts
//!   reach per-worker keys they compute, which a Redis Cluster allows for
//!   keys of one slot but does not promise).
//! - Results that nobody reads expire after a day.
//!
//! What it does not do: order tasks across submitters (one pending queue,
//! first in first out), cancel a submitted task, or bound a task's running
//! time (a task that hangs holds its worker, as in the local pool).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lazy::Lazy;
use crate::manager::redis::queue::Waiting;
use crate::manager::redis::{fresh_name, Store, DEFAULT_TIMEOUT, MAX_NAME};
use crate::poison::locked;
use crate::process::Process;
use crate::sys::{self, Deadline};

/// The pool that [`RemotePool::connect`] and [`serve`] use unless given
/// another name.
pub const DEFAULT_POOL: &str = "default";

/// How long a worker's heartbeat key lives unless renewed, by default: a
/// worker that dies has its task put back this long after.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// The longest heartbeat a worker takes (Redis refuses expiry times past
/// a bound, and a dead worker's task waits this long).
const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);

/// How long a result waits to be read before Redis drops it.
const RESULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a waiting submitter blocks on Redis before it runs the reaper
/// and blocks again.
const WAIT_SLICE: Duration = Duration::from_millis(500);

/// The exit code reported for a task whose worker's heartbeat lapsed twice:
/// the real one is not known (the worker may be on another machine), and
/// `kill -9` is the usual cause.
const LAPSED_EXITCODE: i32 = -9;

/// How many of its oldest chunks `imap_unordered` looks at in one round.
const UNORDERED_WINDOW: usize = 1024;

/// Chunks submitted by one script call (each is a few arguments of it).
const SUBMIT_BATCH: usize = 512;

/// The largest result message a worker reads from its task's child.
const MAX_RESULT: usize = 512 << 20;

/// The lowest limit a Redis server may set on one bulk string
/// (`proto-max-bulk-len`): a message or record no longer is never refused
/// for its size.
const MIN_BULK_LIMIT: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Tasks

/// A function that a [`RemotePool`] may ask workers to run: made by
/// [`task!`](crate::task) from the function's path (its name), listed in
/// the workers' call of [`serve`], and given to [`RemotePool::apply`] and
/// [`RemotePool::map`].
pub struct RemoteTask<A, R> {
    name: &'static str,
    func: fn(A) -> R,
}

impl<A, R> RemoteTask<A, R> {
    /// Use [`task!`](crate::task), which names the task by its function's
    /// full path.
    #[doc(hidden)]
    pub fn new(name: &'static str, func: fn(A) -> R) -> Self {
        RemoteTask { name, func }
    }

    /// The task's name: its function's full path.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function itself, to call it in this process.
    pub fn function(&self) -> fn(A) -> R {
        self.func
    }
}

impl<A, R> Clone for RemoteTask<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for RemoteTask<A, R> {}

impl<A, R> std::fmt::Debug for RemoteTask<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTask")
            .field("name", &self.name)
            .field("argument", &std::any::type_name::<A>())
            .field("result", &std::any::type_name::<R>())
            .finish()
    }
}

/// A [`RemoteTask`] for the function at `path` (`fn(A) -> R`, `A` and `R`
/// serde types), named by its full path: a task that workers of a
/// [`RemotePool`](crate::pool::RemotePool) may run.
///
/// # Example
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let t = multiproc::task!(square);
/// assert!(t.name().ends_with("::square"));
/// ```
#[macro_export]
macro_rules! task {
    ($path:path) => {
        $crate::pool::RemoteTask::new($crate::process::__fn_name(&$path), $path)
    };
}

/// A [`RemoteTask`] of any types, as [`serve`] lists them.
pub trait ServedTask: Sync + sealed::Run {}

mod sealed {
    /// A task's code, callable in a forked child.
    pub type Runner = Box<dyn FnOnce(&[u8]) -> Result<Vec<u8>, String> + Send>;

    /// What a worker needs of a task.
    pub trait Run {
        fn name(&self) -> &'static str;
        fn arg_type(&self) -> &'static str;
        fn result_type(&self) -> &'static str;
        /// Decodes a chunk of arguments, calls the function on each, and
        /// encodes the results; why not, if the arguments do not decode.
        fn runner(&self) -> Runner;
    }
}

impl<A, R> sealed::Run for RemoteTask<A, R>
where
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn arg_type(&self) -> &'static str {
        std::any::type_name::<A>()
    }

    fn result_type(&self) -> &'static str {
        std::any::type_name::<R>()
    }

    fn runner(&self) -> sealed::Runner {
        let func = self.func;
        Box::new(move |args: &[u8]| {
            // From Redis, where another program may have written it.
            let args: Vec<A> = match crate::decode::take_from_bytes(args) {
                Ok((args, [])) => args,
                Ok((_, rest)) => return Err(format!("{} bytes after the arguments", rest.len())),
                Err(e) => return Err(format!("cannot decode the arguments: {e}")),
            };
            let results: Vec<R> = args.into_iter().map(func).collect();
            postcard::to_allocvec(&results).map_err(|e| format!("cannot encode the result: {e}"))
        })
    }
}

impl<A, R> ServedTask for RemoteTask<A, R>
where
    A: DeserializeOwned + Sync + 'static,
    R: Serialize + Sync + 'static,
{
}

/// One submitted chunk, as it waits in Redis.
#[derive(Serialize, Deserialize)]
struct Record {
    task: String,
    arg_type: String,
    result_type: String,
    /// The postcard encoding of a `Vec<A>`.
    args: Vec<u8>,
}

/// How a result message starts (the rest: the postcard encoding of a
/// `Vec<R>`, a message, or an exit code in decimal). The Lua scripts write
/// the `W` form themselves.
mod tag {
    pub const DONE: u8 = b'D';
    pub const FAILED: u8 = b'F';
    pub const DIED: u8 = b'W';
    pub const UNKNOWN: u8 = b'U';
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 1);
    m.push(tag);
    m.extend_from_slice(body);
    m
}

/// A result message as a chunk's results.
fn decode<R: DeserializeOwned>(message: &[u8]) -> Result<Vec<R>> {
    let text = |body: &[u8]| String::from_utf8_lossy(body).into_owned();
    match message.split_first() {
        Some((&tag::DONE, body)) => match crate::decode::take_from_bytes::<Vec<R>>(body) {
            Ok((values, [])) => Ok(values),
            Ok((_, rest)) => Err(Error::Deserialize(format!(
                "{} bytes after a task's results",
                rest.len()
            ))),
            Err(e) => Err(Error::Deserialize(format!("a task's results: {e}"))),
        },
        Some((&tag::FAILED, body)) => Err(Error::TaskFailed(text(body))),
        Some((&tag::UNKNOWN, body)) => Err(Error::InvalidArgument(text(body))),
        Some((&tag::DIED, body)) => {
            match std::str::from_utf8(body).ok().and_then(|s| s.parse().ok()) {
                Some(exitcode) => Err(Error::WorkerDied { exitcode }),
                None => Err(Error::Deserialize(format!(
                    "a result key holds a malformed worker-death message {:?}",
                    text(body)
                ))),
            }
        }
        _ => Err(Error::Deserialize(
            "a result key holds something that is not a task's result (another program wrote it?)"
                .into(),
        )),
    }
}

// ---------------------------------------------------------------------------
// Keys and scripts

/// The Redis keys of one pool: `multiproc:{pool:<name>}:<part>`.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(pool: &str) -> Result<Keys> {
        if pool.is_empty() || pool.len() > MAX_NAME {
            return Err(Error::InvalidArgument(format!(
                "a pool's name has 1 to {MAX_NAME} bytes, not {}",
                pool.len()
            )));
        }
        Ok(Keys {
            prefix: format!("multiproc:{{pool:{pool}}}:"),
        })
    }

    fn part(&self, part: &str) -> String {
        format!("{}{part}", self.prefix)
    }

    /// Task id → [`Record`].
    fn tasks(&self) -> String {
        self.part("tasks")
    }
    /// Task id → how many of its runs died.
    fn deaths(&self) -> String {
        self.part("deaths")
    }
    /// Ids waiting for a worker; submitted at the left, taken at the right.
    fn pending(&self) -> String {
        self.part("pending")
    }
    /// The ids of the workers that have announced themselves.
    fn workers(&self) -> String {
        self.part("workers")
    }
    /// Set to make the workers return from [`serve`].
    fn stop(&self) -> String {
        self.part("stop")
    }
    fn alive(&self, worker: &str) -> String {
        self.part(&format!("alive:{worker}"))
    }
    fn processing(&self, worker: &str) -> String {
        self.part(&format!("processing:{worker}"))
    }
    fn result(&self, id: &str) -> String {
        self.part(&format!("result:{id}"))
    }
}

/// Stores chunks: `KEYS` tasks, pending; `ARGV` id, record, id, record, ….
/// Another program's key of another type in either fails it before it
/// writes anything (not after a record whose id no list holds).
static SUBMIT: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
for i, want in ipairs({'hash', 'list'}) do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= want and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. t .. ', not a ' .. want .. ' of a pool')
  end
end
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('LPUSH', KEYS[2], ARGV[i])
end
return #ARGV / 2",
    )
});

/// A worker's heartbeat, which also announces it: `KEYS` workers, alive,
/// stop; `ARGV` worker, ttl (ms), who. Whether the pool is told to stop.
static BEAT: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return redis.call('EXISTS', KEYS[3])",
    )
});

/// A worker takes the task it moved to its list: announces itself again
/// (the reaper may have dropped it, if it was paused) and reads the
/// task's record. `KEYS` tasks, workers, alive; `ARGV` id, worker, ttl
/// (ms), who.
static TAKE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3])
return redis.call('HGET', KEYS[1], ARGV[1])",
    )
});

/// What the scripts that write a result share: whether another program's
/// value (not a list) is in the result key `k`; and a run's death
/// counted in the hash `deaths`, whether it is the task's second. Another
/// program's value is left alone, and the script's other writes are done
/// (a script that failed half way would leave the task in no list, and
/// end the worker that ran it, and each worker that runs the reaper after
/// it): a count that cannot be kept (the key of another type, a field
/// that is no number) counts as a second death, so that the task is
/// reported rather than run again for ever.
const FOREIGN: &str = r"
local function foreign(k)
  local t = redis.call('TYPE', k).ok
  return t ~= 'list' and t ~= 'none'
end
local function second_death(deaths, id)
  local n = redis.pcall('HINCRBY', deaths, id, 1)
  return type(n) ~= 'number' or n >= 2
end
local function forget_deaths(deaths, id)
  redis.pcall('HDEL', deaths, id)
end
";

/// Records a task's result, unless it already has one (or is gone): `KEYS`
/// processing, tasks, deaths, pending, result; `ARGV` id, message, result
/// ttl (ms). Whether the result was recorded (not if another program's
/// value is in its key: the task is done, and the submitter's read of
/// that key fails).
static FINISH: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{FOREIGN}
local held = redis.call('LREM', KEYS[1], 1, ARGV[1])
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then
  return 0
end
if held == 0 then
  -- the reaper took it from this worker meanwhile: it may wait again
  redis.call('LREM', KEYS[4], 0, ARGV[1])
end
forget_deaths(KEYS[3], ARGV[1])
if foreign(KEYS[5]) then
  return 0
end
redis.call('RPUSH', KEYS[5], ARGV[2])
redis.call('PEXPIRE', KEYS[5], ARGV[3])
return 1"
    ))
});

/// A run of a task died: it waits again (first death) or fails: `KEYS`
/// processing, tasks, deaths, pending, result; `ARGV` id, exit code,
/// result ttl (ms). `retry`, `failed` or `gone`.
static DIED: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{FOREIGN}
local held = redis.call('LREM', KEYS[1], 1, ARGV[1])
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 or held == 0 then
  return 'gone'
end
if second_death(KEYS[3], ARGV[1]) then
  redis.call('HDEL', KEYS[2], ARGV[1])
  forget_deaths(KEYS[3], ARGV[1])
  if not foreign(KEYS[5]) then
    redis.call('RPUSH', KEYS[5], 'W' .. ARGV[2])
    redis.call('PEXPIRE', KEYS[5], ARGV[3])
  end
  return 'failed'
end
redis.call('RPUSH', KEYS[4], ARGV[1])
return 'retry'"
    ))
});

/// Returns the tasks of workers whose heartbeat lapsed (or fails those that
/// lapsed before): `KEYS` workers, tasks, deaths, pending; `ARGV` key
/// prefix, result ttl (ms), exit code. How many workers it found dead.
static REAP: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{FOREIGN}
local dead = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'alive:' .. w) == 0 then
    local held = ARGV[1] .. 'processing:' .. w
    local ids = {{}}
    -- another program's key of that name is no task list: not read
    if redis.call('TYPE', held).ok == 'list' then
      ids = redis.call('LRANGE', held, 0, -1)
    end
    for _, id in ipairs(ids) do
      if redis.call('HEXISTS', KEYS[2], id) == 1 then
        if second_death(KEYS[3], id) then
          local result = ARGV[1] .. 'result:' .. id
          redis.call('HDEL', KEYS[2], id)
          forget_deaths(KEYS[3], id)
          if not foreign(result) then
            redis.call('RPUSH', result, 'W' .. ARGV[3])
            redis.call('PEXPIRE', result, ARGV[2])
          end
        else
          redis.call('RPUSH', KEYS[4], id)
        end
      end
    end
    redis.call('DEL', held)
    redis.call('SREM', KEYS[1], w)
    dead = dead + 1
  end
end
return dead"
    ))
});

/// A worker leaves: what it holds waits again. `KEYS` workers, alive,
/// processing, pending; `ARGV` worker.
static LEAVE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  redis.call('RPUSH', KEYS[4], id)
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[1], ARGV[1])
return 1",
    )
});

/// Tells the workers to stop, and wakes each blocked one with an id that
/// names no task: `KEYS` stop, workers, pending.
static STOP: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], 1)
for _ = 1, redis.call('SCARD', KEYS[2]) do
  redis.call('RPUSH', KEYS[3], 'stop')
end
return 1",
    )
});

/// Deletes a pool's keys: `KEYS` workers, tasks, deaths, pending, stop;
/// `ARGV` key prefix. The workers' and the tasks' keys are read only if
/// they are a set and a hash (another program's key of another type there
/// is deleted with the others, not a script that fails for ever).
static REMOVE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local function read(k, want, cmd)
  if redis.call('TYPE', k).ok ~= want then return {} end
  return redis.call(cmd, k)
end
for _, w in ipairs(read(KEYS[1], 'set', 'SMEMBERS')) do
  redis.call('DEL', ARGV[1] .. 'alive:' .. w, ARGV[1] .. 'processing:' .. w)
end
for _, id in ipairs(read(KEYS[2], 'hash', 'HKEYS')) do
  redis.call('DEL', ARGV[1] .. 'result:' .. id)
end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])",
    )
});

/// Whether a task is still known to Redis: waiting, running, or with its
/// result there. `KEYS` tasks, result; `ARGV` id.
static KNOWN: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
return redis.call('HEXISTS', KEYS[1], ARGV[1])",
    )
});

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Puts the tasks of dead workers back (see [`REAP`]).
fn reap(store: &Store, keys: &Keys) -> Result<u64> {
    store.run(true, |c| {
        REAP.key(keys.workers())
            .key(keys.tasks())
            .key(keys.deaths())
            .key(keys.pending())
            .arg(&keys.prefix)
            .arg(millis(RESULT_TTL))
            .arg(LAPSED_EXITCODE)
            .invoke::<u64>(c)
    })
}

// ---------------------------------------------------------------------------
// The submitter

/// A pool whose workers are processes on any machine, reached through a
/// Redis server: the submitting side (the workers call [`serve`]).
///
/// A type of its own rather than a [`Pool`](crate::Pool) connected
/// elsewhere: a local pool runs any function item or capture-less closure
/// (found in the worker by its address in a forked copy of this process),
/// while a remote one runs only [`RemoteTask`]s registered by name, which
/// its methods take instead. The methods keep the local pool's names and
/// results: [`apply`](RemotePool::apply), [`apply_async`](RemotePool::apply_async)
/// (a [`RemoteResult`] with `get`, `get_timeout`, `ready`),
/// [`map`](RemotePool::map), [`map_async`](RemotePool::map_async),
/// [`imap_unordered`](RemotePool::imap_unordered); errors are the same
/// ([`Error::TaskFailed`], [`Error::WorkerDied`]).
///
/// A handle is cheap to clone, and works in a forked child (which makes
/// its own connection). Tasks wait in Redis until a worker takes them: a
/// pool with no workers waits.
///
/// # Example
/// ```no_run
/// use multiproc::pool::{self, RemotePool};
/// use multiproc::task;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> multiproc::Result<()> {
///     let url = "redis://127.0.0.1:6379/";
///     if std::env::args().any(|a| a == "--worker") {
///         // On every machine: serve until told to stop.
///         pool::serve(url, &[&task!(square)])?;
///         return Ok(());
///     }
///     let pool = RemotePool::connect(url)?;
///     assert_eq!(pool.map(task!(square), 1..=4)?, [1, 4, 9, 16]);
///     assert_eq!(pool.apply(task!(square), 7)?, 49);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct RemotePool {
    store: Arc<Store>,
    /// The connections of the threads that wait for results: one that
    /// waits holds none that another thread's calls need.
    waiting: Arc<Waiting>,
    keys: Keys,
    name: String,
}

impl RemotePool {
    /// The pool [`DEFAULT_POOL`] on the Redis server at `url`
    /// (`redis://host:port/db`, as for
    /// [`Manager::connect_redis`](crate::Manager::connect_redis)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL that is not Redis's;
    /// [`Error::ManagerGone`] if the server is unreachable.
    pub fn connect(url: &str) -> Result<RemotePool> {
        RemotePool::connect_named(url, DEFAULT_POOL)
    }

    /// The pool called `name` on the server at `url`: its workers are
    /// those that [`serve`] the same name ([`Worker::pool`]). Pools of
    /// different names share nothing.
    ///
    /// # Errors
    /// As for [`connect`](RemotePool::connect); [`Error::InvalidArgument`]
    /// for a name that is empty or over 512 bytes.
    pub fn connect_named(url: &str, name: &str) -> Result<RemotePool> {
        let keys = Keys::new(name)?;
        Ok(RemotePool {
            store: Store::open(url, DEFAULT_TIMEOUT)?,
            waiting: Arc::new(Waiting::new()),
            keys,
            name: name.to_string(),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Submits chunks of arguments of `task`; one handle per chunk.
    fn submit<A, R>(&self, task: RemoteTask<A, R>, chunks: Vec<&[A]>) -> Vec<Pending>
    where
        A: Serialize,
    {
        let mut handles = Vec::with_capacity(chunks.len());
        let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
        let flush = |batch: &mut Vec<(String, Vec<u8>)>, handles: &mut Vec<Pending>| {
            if batch.is_empty() {
                return;
            }
            let sent = self.store.run(false, |c| {
                let mut call = SUBMIT.prepare_invoke();
                call.key(self.keys.tasks()).key(self.keys.pending());
                for (id, record) in batch.iter() {
                    call.arg(id).arg(record);
                }
                call.invoke::<u64>(c)
            });
            for (id, _) in batch.drain(..) {
                let mut h = Pending::new(self, id);
                if let Err(e) = &sent {
                    h.known = Mutex::new(Some(Known::Error(copy_error(e))));
                }
                handles.push(h);
            }
        };
        for chunk in chunks {
            let record = postcard::to_allocvec(chunk)
                .map_err(|e| Error::Serialize(e.to_string()))
                .and_then(|args| {
                    postcard::to_allocvec(&Record {
                        task: task.name.to_string(),
                        arg_type: std::any::type_name::<A>().to_string(),
                        result_type: std::any::type_name::<R>().to_string(),
                        args,
                    })
                    .map_err(|e| Error::Serialize(e.to_string()))
                });
            let id = match fresh_name() {
                Ok(id) => id,
                Err(e) => {
                    flush(&mut batch, &mut handles);
                    handles.push(Pending::failed(self, e));
                    continue;
                }
            };
            match record {
                Ok(record) => {
                    // A record the server may refuse for its size is sent
                    // alone: a refusal fails that task, not its neighbours.
                    let alone = record.len() > MIN_BULK_LIMIT;
                    if alone {
                        flush(&mut batch, &mut handles);
                    }
                    batch.push((id, record));
                    if alone || batch.len() == SUBMIT_BATCH {
                        flush(&mut batch, &mut handles);
                    }
                }
                Err(e) => {
                    flush(&mut batch, &mut handles);
                    handles.push(Pending::failed(self, e));
                }
            }
        }
        flush(&mut batch, &mut handles);
        handles
    }

    /// Runs `task(arg)` on a worker and returns its result (blocking).
    ///
    /// # Errors
    /// As for [`RemoteResult::get`].
    pub fn apply<A, R>(&self, task: RemoteTask<A, R>, arg: A) -> Result<R>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.apply_async(task, arg).get()
    }

    /// Submits `task(arg)` and returns at once.
    pub fn apply_async<A, R>(&self, task: RemoteTask<A, R>, arg: A) -> RemoteResult<R>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let pending = self.submit(task, vec![std::slice::from_ref(&arg)]);
        RemoteResult {
            pending: pending.into_iter().next().unwrap_or_else(|| {
                Pending::failed(self, Error::InvalidArgument("nothing was submitted".into()))
            }),
            _result: PhantomData,
        }
    }

    /// Applies `task` to every item on the workers and returns the results
    /// in order (blocking). Items go in chunks of Python's default size
    /// (a quarter of the items per live worker).
    ///
    /// # Errors
    /// Once every chunk is done, the error of the first chunk (in input
    /// order) that failed, as for [`RemoteResult::get`].
    pub fn map<A, R>(
        &self,
        task: RemoteTask<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.map_async(task, items, None).get()
    }

    /// As [`map`](RemotePool::map), with `chunksize` items per task
    /// (Python's default if `None`), returning at once.
    pub fn map_async<A, R>(
        &self,
        task: RemoteTask<A, R>,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> RemoteMapResult<R>
    where
        A: Serialize,
    {
        let items: Vec<A> = items.into_iter().collect();
        let size = match chunksize {
            Some(size) => size.max(1),
            None => {
                let workers = self.workers().unwrap_or(1).max(1);
                items.len().div_ceil(4 * workers).max(1)
            }
        };
        RemoteMapResult {
            chunks: self.submit(task, items.chunks(size).collect()),
            _result: PhantomData,
        }
    }

    /// Applies `task` to every item (chunks of one); the results come back
    /// as they arrive, in whatever order.
    pub fn imap_unordered<A, R>(
        &self,
        task: RemoteTask<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> impl Iterator<Item = Result<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunks = self.submit(task, items.chunks(1).collect());
        Unordered {
            pool: self.clone(),
            waiting: chunks.into(),
            ready: Vec::new(),
            _result: PhantomData,
        }
    }

    /// How many workers serve the pool now (after the dead ones are
    /// reaped).
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn workers(&self) -> Result<usize> {
        reap(&self.store, &self.keys)?;
        let n = self.store.run(true, |c| {
            redis::cmd("SCARD").arg(self.keys.workers()).query::<u64>(c)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Tells every worker of the pool to return from [`serve`] once its
    /// current task is done (and any worker started later to return at
    /// once, until [`remove`](RemotePool::remove)), waking those that wait
    /// for a task. Tasks still waiting stay in Redis.
    ///
    /// # Errors
    /// As a call on Redis ([`Error::Ambiguous`] if the connection failed
    /// during the call: call it again).
    pub fn stop_workers(&self) -> Result<()> {
        self.store.run(false, |c| {
            STOP.key(self.keys.stop())
                .key(self.keys.workers())
                .key(self.keys.pending())
                .invoke::<()>(c)
        })
    }

    /// Deletes the pool's keys in Redis: waiting tasks, the workers'
    /// records, the stop flag, and results not yet read (found with `SCAN`:
    /// a cost in the size of the database). Call it once the workers are
    /// gone (a worker still serving announces itself again).
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn remove(&self) -> Result<()> {
        self.store.run(true, |c| {
            REMOVE
                .key(self.keys.workers())
                .key(self.keys.tasks())
                .key(self.keys.deaths())
                .key(self.keys.pending())
                .key(self.keys.stop())
                .arg(&self.keys.prefix)
                .invoke::<u64>(c)
        })?;
        // Results that nobody read: found by their names, a task id (32
        // hex digits) after the prefix, and nothing more (a `*` would
        // match the keys of a pool named `<this name>}:result:…`).
        let pattern = format!(
            "{}result:{}",
            glob_escape(&self.keys.prefix),
            "[0-9a-f]".repeat(32)
        );
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = self.store.run(true, |c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            if !found.is_empty() {
                self.store
                    .run(true, |c| redis::cmd("DEL").arg(&found).query::<u64>(c))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl std::fmt::Debug for RemotePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePool")
            .field("name", &self.name)
            .field("url", &self.store.url)
            .finish()
    }
}

/// `text` as a `SCAN MATCH` pattern that matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A copy of an error from submitting, for every handle of the batch.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Ambiguous(m) => Error::Ambiguous(m.clone()),
        Error::ManagerGone(m) => Error::ManagerGone(m.clone()),
        Error::Serialize(m) => Error::Serialize(m.clone()),
        Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
        Error::Remote { kind, message } => Error::Remote {
            kind: kind.clone(),
            message: message.clone(),
        },
        other => Error::ManagerGone(other.to_string()),
    }
}

/// What a handle knows of its chunk.
enum Known {
    Message(Vec<u8>),
    /// It was never submitted.
    Error(Error),
}

/// The handle on one submitted chunk.
struct Pending {
    store: Arc<Store>,
    waiting: Arc<Waiting>,
    keys: Keys,
    id: String,
    known: Mutex<Option<Known>>,
}

impl Pending {
    fn new(pool: &RemotePool, id: String) -> Pending {
        Pending {
            store: pool.store.clone(),
            waiting: pool.waiting.clone(),
            keys: pool.keys.clone(),
            id,
            known: Mutex::new(None),
        }
    }

    fn failed(pool: &RemotePool, e: Error) -> Pending {
        let p = Pending::new(pool, String::new());
        *locked(&p.known) = Some(Known::Error(e));
        p
    }

    /// The chunk's results, waiting until `deadline`.
    fn get<R: DeserializeOwned>(&self, deadline: Deadline) -> Result<Vec<R>> {
        self.wait(deadline)?;
        match &*locked(&self.known) {
            Some(Known::Message(m)) => decode(m),
            Some(Known::Error(e)) => Err(copy_error(e)),
            None => Err(Error::Timeout),
        }
    }

    /// Waits for the result message until `deadline`: read without taking
    /// it (a rotation of the one-item list, which may be repeated after a
    /// lost connection), on a connection of the pool's waiting threads,
    /// then deleted. Between slices of the wait, the reaper runs: a task
    /// whose worker died is put back even when no other worker is alive
    /// to notice. The handle's lock is held to look and to record, never
    /// while waiting: another thread's `ready` answers at once.
    fn wait(&self, deadline: Deadline) -> Result<()> {
        if self.settled() {
            return Ok(());
        }
        let key = self.keys.result(&self.id);
        loop {
            let left = deadline.remaining();
            let look_once = left == Some(Duration::ZERO);
            let message: Option<Vec<u8>> = if look_once {
                self.store
                    .run(true, |c| redis::cmd("LINDEX").arg(&key).arg(0).query(c))?
            } else {
                let slice = left.map_or(WAIT_SLICE, |l| l.min(WAIT_SLICE));
                // Redis takes seconds; 0 would wait forever.
                let secs = slice.as_secs_f64().max(0.001);
                self.waiting.run(&self.store, slice, true, |c| {
                    redis::cmd("BLMOVE")
                        .arg(&key)
                        .arg(&key)
                        .arg("LEFT")
                        .arg("LEFT")
                        .arg(secs)
                        .query(c)
                })?
            };
            if let Some(m) = message {
                // Recorded before the key goes: another thread of this
                // handle that then finds it gone finds this first.
                locked(&self.known).get_or_insert(Known::Message(m));
                // A failed delete leaves the key to its expiry.
                let _ = self
                    .store
                    .run(true, |c| redis::cmd("DEL").arg(&key).query::<()>(c));
                return Ok(());
            }
            if look_once {
                return Ok(());
            }
            // After each slice of waiting, even the last (a caller that
            // waits in slices, as `imap_unordered` does, relies on it).
            reap(&self.store, &self.keys)?;
            // Neither waiting nor done (one script: a result is written
            // as its task is deleted): the server lost it, or the pool was
            // removed. Waiting on would be for ever.
            let there = self.store.run(true, |c| {
                KNOWN
                    .key(self.keys.tasks())
                    .key(&key)
                    .arg(&self.id)
                    .invoke::<bool>(c)
            })?;
            if !there {
                locked(&self.known).get_or_insert_with(|| {
                    Known::Error(Error::ManagerGone(format!(
                        "task {} is no longer in Redis (the server restarted without its data, the pool was removed, or its result expired unread)",
                        self.id
                    )))
                });
                return Ok(());
            }
            if deadline.passed() || self.settled() {
                return Ok(());
            }
        }
    }

    /// Whether the chunk's outcome is known here (no look at Redis).
    fn settled(&self) -> bool {
        locked(&self.known).is_some()
    }

    fn ready(&self) -> bool {
        self.wait(Deadline::Now).is_ok() && self.settled()
    }
}

/// The result of a task submitted with [`RemotePool::apply_async`].
pub struct RemoteResult<R> {
    pending: Pending,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> RemoteResult<R> {
    /// Waits for the task and returns its result.
    ///
    /// # Errors
    /// [`Error::TaskFailed`] if it panicked (with the message);
    /// [`Error::WorkerDied`] if two of its runs died (a crashed task, a
    /// worker killed or lost); [`Error::InvalidArgument`] if the worker
    /// that took it does not serve a task of that name and types;
    /// [`Error::Deserialize`]; as a call on Redis ([`Error::ManagerGone`],
    /// [`Error::Ambiguous`] if it could not be submitted);
    /// [`Error::ManagerGone`] too if Redis lost the task (a server
    /// restarted without its data, the pool removed): found within half a
    /// second of waiting.
    pub fn get(&self) -> Result<R> {
        self.get_until(Deadline::Never)
    }

    /// As [`get`](RemoteResult::get), waiting at most `timeout` (zero:
    /// look once; `Duration::MAX`: for ever).
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get`](RemoteResult::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.get_until(Deadline::after(timeout))
    }

    fn get_until(&self, deadline: Deadline) -> Result<R> {
        let values: Vec<R> = self.pending.get(deadline)?;
        let mut values = values.into_iter();
        match (values.next(), values.next()) {
            (Some(r), None) => Ok(r),
            _ => Err(Error::Deserialize(
                "a task's result did not hold exactly one value".into(),
            )),
        }
    }

    /// Whether the task has finished (one look at Redis).
    pub fn ready(&self) -> bool {
        self.pending.ready()
    }

    /// Waits at most `timeout`; whether the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.pending.wait(Deadline::after(timeout)).is_ok() && self.pending.settled()
    }
}

impl<R> std::fmt::Debug for RemoteResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteResult")
            .field("id", &self.pending.id)
            .finish()
    }
}

/// The results of [`RemotePool::map_async`], in order.
pub struct RemoteMapResult<R> {
    chunks: Vec<Pending>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> RemoteMapResult<R> {
    /// Waits for every item and returns the results in order.
    ///
    /// # Errors
    /// Once every chunk is done, the error of the first chunk (in input
    /// order) that failed, as for [`RemoteResult::get`].
    pub fn get(&self) -> Result<Vec<R>> {
        self.get_until(Deadline::Never)
    }

    /// As [`get`](RemoteMapResult::get), waiting at most `timeout` in all.
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get`](RemoteMapResult::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>> {
        self.get_until(Deadline::after(timeout))
    }

    /// As Python's `map`: done only once every chunk is, so no chunk of a
    /// failed map is still running when it returns; then the first
    /// failed chunk's error, in input order (workers on other machines
    /// share no clock that would order their failures in time).
    fn get_until(&self, deadline: Deadline) -> Result<Vec<R>> {
        for c in &self.chunks {
            c.wait(deadline)?;
        }
        if !self.chunks.iter().all(Pending::settled) {
            return Err(Error::Timeout);
        }
        let mut out = Vec::new();
        for c in &self.chunks {
            out.extend(c.get::<R>(Deadline::Now)?);
        }
        Ok(out)
    }

    /// Whether every item is done.
    pub fn ready(&self) -> bool {
        self.chunks.iter().all(Pending::ready)
    }
}

impl<R> std::fmt::Debug for RemoteMapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteMapResult")
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

/// [`RemotePool::imap_unordered`]'s iterator: each round looks at the
/// oldest chunks still waiting (at most [`UNORDERED_WINDOW`] of them, one
/// round trip), reads all whose results are there, and blocks a while on
/// the oldest if none is. A round costs the window, not all chunks: over
/// 100 000 items, a round per result over all of them would cost their
/// square.
struct Unordered<R> {
    pool: RemotePool,
    waiting: VecDeque<Pending>,
    ready: Vec<Result<R>>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Iterator for Unordered<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.ready.pop() {
                return Some(r);
            }
            if self.waiting.is_empty() {
                return None;
            }
            let n = self.waiting.len().min(UNORDERED_WINDOW);
            let window: Vec<Pending> = self.waiting.drain(..n).collect();
            // One round trip for the window: which results are there?
            let keys: Vec<String> = window
                .iter()
                .map(|p| self.pool.keys.result(&p.id))
                .collect();
            let there = self.pool.store.run(true, |c| {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("EXISTS").arg(k);
                }
                pipe.query::<Vec<bool>>(c)
            });
            let mut failed = None;
            let mut keep = Vec::new();
            let mut found = false;
            match there {
                Err(e) => {
                    failed = Some(e);
                    keep = window;
                }
                Ok(there) => {
                    for (p, there) in window.into_iter().zip(there) {
                        // Those never submitted, and those already read,
                        // are there too.
                        let there = there || locked(&p.known).is_some();
                        if failed.is_some() || !there {
                            keep.push(p);
                            continue;
                        }
                        found = true;
                        // At once: it is there.
                        if let Err(e) = p.wait(Deadline::Never) {
                            failed = Some(e);
                            keep.push(p);
                            continue;
                        }
                        match p.get::<R>(Deadline::Now) {
                            Ok(values) => self.ready.extend(values.into_iter().rev().map(Ok)),
                            Err(e) => self.ready.push(Err(e)),
                        }
                    }
                }
            }
            for p in keep.into_iter().rev() {
                self.waiting.push_front(p);
            }
            if let Some(e) = failed {
                return Some(Err(e));
            }
            if !found {
                // None yet: wait a while for the oldest.
                if let Err(e) = self.waiting[0].wait(Deadline::after(WAIT_SLICE)) {
                    return Some(Err(e));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The worker

/// Serves the pool [`DEFAULT_POOL`] on the Redis server at `url` with
/// `tasks`, until the pool's workers are told to stop
/// ([`RemotePool::stop_workers`]); the number of tasks it ran. Call it
/// from the program's `main` (as [`spawn_init`](crate::spawn_init) is), on
/// any machine that reaches the server, before starting threads; see
/// [`Worker`] for the options.
///
/// # Errors
/// As for [`Worker::serve`].
pub fn serve(url: &str, tasks: &[&dyn ServedTask]) -> Result<u64> {
    Worker::new(url, tasks).serve()
}

/// A worker of a [`RemotePool`], with its options; [`serve`](Worker::serve)
/// runs it.
///
/// Each task runs in a child that the worker forks for it (and waits for),
/// so that a task that crashes costs one child, not the worker, and is
/// reported with its exit code. The worker itself keeps to one thread: it
/// renews its heartbeat while it waits for the child.
pub struct Worker<'t> {
    url: String,
    tasks: Vec<&'t dyn ServedTask>,
    pool: String,
    heartbeat: Duration,
    max_tasks: Option<u64>,
    idle: Option<Duration>,
}

impl<'t> Worker<'t> {
    /// A worker of the pool [`DEFAULT_POOL`] at `url`, serving `tasks`.
    pub fn new(url: &str, tasks: &[&'t dyn ServedTask]) -> Worker<'t> {
        Worker {
            url: url.to_string(),
            tasks: tasks.to_vec(),
            pool: DEFAULT_POOL.to_string(),
            heartbeat: DEFAULT_HEARTBEAT,
            max_tasks: None,
            idle: None,
        }
    }

    /// Serves the pool called `name` ([`RemotePool::connect_named`]).
    pub fn pool(mut self, name: &str) -> Self {
        self.pool = name.to_string();
        self
    }

    /// How long the worker's heartbeat key lives unless renewed (renewed
    /// every third of that): when the worker dies, its task is put back
    /// this long after. From 30 ms to a day; default [`DEFAULT_HEARTBEAT`].
    /// While a task runs, a renewal (or the recording of its result) that
    /// fails for want of the server is tried again until the key may have
    /// expired: a shorter blip neither ends the task nor runs it twice.
    pub fn heartbeat(mut self, ttl: Duration) -> Self {
        self.heartbeat = ttl;
        self
    }

    /// Returns after `n` tasks (Python's `maxtasksperchild`, for the worker).
    pub fn max_tasks(mut self, n: u64) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// Returns after `idle` with no task.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// Serves tasks until told to stop, or the `max_tasks` or idle limits;
    /// the number of tasks it ran. On its way out it puts back any task
    /// it holds and leaves the pool's list of workers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad URL, pool name or heartbeat, or
    /// two tasks of one name; as a call on Redis (a worker returns when the
    /// server is unreachable: run it again, or under a supervisor);
    /// [`Error::Io`] if it cannot fork.
    pub fn serve(self) -> Result<u64> {
        if self.heartbeat < Duration::from_millis(30) || self.heartbeat > MAX_HEARTBEAT {
            return Err(Error::InvalidArgument(format!(
                "a worker's heartbeat must be from 30 ms to a day, not {:?}",
                self.heartbeat
            )));
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if self.tasks[..i].iter().any(|u| u.name() == t.name()) {
                return Err(Error::InvalidArgument(format!(
                    "task `{}` is listed twice",
                    t.name()
                )));
            }
        }
        let keys = Keys::new(&self.pool)?;
        let store = Store::open(&self.url, DEFAULT_TIMEOUT)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let me = format!("{}-{}", sys::getpid(), &fresh_name()?[..12]);
        let mut serving = Serving {
            worker: &self,
            store: &store,
            keys: &keys,
            me,
            who: format!("{host} pid {}", sys::getpid()),
            every: self.heartbeat / 3,
            next_beat: Instant::now(),
            renewed: Instant::now(),
        };
        let result = serving.run();
        let left = store.run(true, |c| {
            LEAVE
                .key(keys.workers())
                .key(keys.alive(&serving.me))
                .key(keys.processing(&serving.me))
                .key(keys.pending())
                .arg(&serving.me)
                .invoke::<u64>(c)
        });
        let served = result?;
        left?;
        Ok(served)
    }
}

impl std::fmt::Debug for Worker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pool", &self.pool)
            .field(
                "tasks",
                &self.tasks.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// How a task's child ended.
enum Ran {
    /// It sent its result message.
    Message(Vec<u8>),
    /// It died first, with this exit code.
    Died(i32),
}

/// A worker at work.
struct Serving<'w, 't> {
    worker: &'w Worker<'t>,
    store: &'w Store,
    keys: &'w Keys,
    me: String,
    /// Its host and pid, the value of its heartbeat key.
    who: String,
    /// How often the heartbeat is renewed.
    every: Duration,
    /// When the heartbeat is renewed next.
    next_beat: Instant,
    /// When the last renewal that the server answered was sent: the
    /// heartbeat key lives until a heartbeat after it at least.
    renewed: Instant,
}

impl<'t> Serving<'_, 't> {
    /// Renews the heartbeat (announcing the worker); whether the pool is
    /// told to stop.
    fn beat(&mut self) -> Result<bool> {
        let sent = Instant::now();
        self.next_beat = sent + self.every;
        let stop = self.store.run(true, |c| {
            BEAT.key(self.keys.workers())
                .key(self.keys.alive(&self.me))
                .key(self.keys.stop())
                .arg(&self.me)
                .arg(millis(self.worker.heartbeat))
                .arg(&self.who)
                .invoke::<bool>(c)
        })?;
        self.renewed = sent;
        Ok(stop)
    }

    /// Whether the heartbeat key may have expired: the last renewal the
    /// server answered was sent a heartbeat ago or more, and the reaper
    /// may have given this worker's task to another.
    fn lapsed(&self) -> bool {
        self.renewed.elapsed() >= self.worker.heartbeat
    }

    /// Does `call`, a step of a task this worker holds, which may run
    /// twice; one that fails for want of the server (a connection cut, a
    /// server restarting or refusing new clients for a moment) is done
    /// again soon, the heartbeat renewed meanwhile, for as long as the
    /// heartbeat key lives: until then the task is this worker's still,
    /// and giving it up (to be run again, by whichever worker takes it
    /// next) would run it twice.
    ///
    /// It gives up a heartbeat after its first failure even so: renewals
    /// that get through while the step keeps failing would keep the key
    /// alive, and the step tried for ever.
    fn persist<R>(&mut self, mut call: impl FnMut(&mut Self) -> Result<R>) -> Result<R> {
        let heartbeat = self.worker.heartbeat;
        let mut give_up: Option<Deadline> = None;
        loop {
            match call(self) {
                Err(Error::ManagerGone(why))
                    if !self.lapsed()
                        && !give_up
                            .get_or_insert_with(|| Deadline::after(heartbeat))
                            .passed() =>
                {
                    log::debug!("pool worker {}: tried again: {why}", self.me);
                    std::thread::sleep(self.retry_pause());
                    self.renew_if_due()?;
                }
                other => return other,
            }
        }
    }

    /// Renews the heartbeat if it is time, while the worker holds a task
    /// (a stop waits for the task). A renewal that fails for want of the
    /// server is tried again soon, until the heartbeat key may have
    /// expired: a blip must not end the task (it would be run again),
    /// only a lapse, which may have given it to another worker.
    fn renew_if_due(&mut self) -> Result<()> {
        if Instant::now() < self.next_beat {
            return Ok(());
        }
        match self.beat() {
            Ok(_) => Ok(()),
            Err(Error::ManagerGone(why)) if !self.lapsed() => {
                log::debug!("pool worker {}: renewal failed: {why}", self.me);
                self.next_beat = Instant::now() + self.retry_pause();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// How long a worker waits before it tries a failed step again: a
    /// quarter of the time between renewals, from 5 ms to a second (a
    /// long heartbeat must not make a blip last longer).
    fn retry_pause(&self) -> Duration {
        (self.every / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    fn run(&mut self) -> Result<u64> {
        let mut served = 0u64;
        let mut idle_since = Instant::now();
        let mut last_reap: Option<Instant> = None;
        let held = self.keys.processing(&self.me);
        // After a lost connection, a task may have been moved to this
        // worker without its hearing of it: look there first. A take
        // given up on may also reach the server later, and move a task
        // there then: the list is looked at again each time the reaper
        // runs, and again after each task found there, until it is empty.
        let mut look_back = false;
        loop {
            if self.beat()? {
                log::debug!("pool worker {}: told to stop", self.me);
                return Ok(served);
            }
            if self.worker.max_tasks.is_some_and(|n| served >= n) {
                return Ok(served);
            }
            if self.worker.idle.is_some_and(|i| idle_since.elapsed() >= i) {
                return Ok(served);
            }
            if last_reap.is_none_or(|t| t.elapsed() >= self.every) {
                reap(self.store, self.keys)?;
                last_reap = Some(Instant::now());
                look_back = true;
            }
            // Ids as bytes: an entry that another program pushed may not be
            // UTF-8, and must not make the worker fail (nor every worker,
            // as it is put back when one leaves).
            let id: Option<Vec<u8>> = if look_back {
                let id: Option<Vec<u8>> = self
                    .store
                    .run(true, |c| redis::cmd("LINDEX").arg(&held).arg(-1).query(c))?;
                look_back = id.is_some();
                id
            } else {
                None
            };
            let id = match id {
                Some(id) => Some(id),
                None => {
                    // Not past the idle limit: the worker returns on time.
                    let wait = match self.worker.idle {
                        Some(idle) => self
                            .every
                            .min(idle.saturating_sub(idle_since.elapsed()))
                            .max(Duration::from_millis(1)),
                        None => self.every,
                    };
                    let taken = self.store.run_blocking(wait, false, |c| {
                        redis::cmd("BLMOVE")
                            .arg(self.keys.pending())
                            .arg(&held)
                            .arg("RIGHT")
                            .arg("LEFT")
                            .arg(wait.as_secs_f64().max(0.001))
                            .query::<Option<Vec<u8>>>(c)
                    });
                    match taken {
                        Ok(id) => id,
                        Err(Error::Ambiguous(_)) => {
                            look_back = true;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            if let Some(id) = id {
                match String::from_utf8(id) {
                    Ok(id) => {
                        served += u64::from(self.handle(&id)?);
                    }
                    Err(e) => {
                        // No task has such an id: dropped.
                        let id = e.into_bytes();
                        log::warn!(
                            "pool worker {}: dropped a pending entry that is not a task id: {:?}",
                            self.me,
                            String::from_utf8_lossy(&id)
                        );
                        self.store.run(true, |c| {
                            redis::cmd("LREM").arg(&held).arg(1).arg(&id).query::<()>(c)
                        })?;
                    }
                }
                idle_since = Instant::now();
            }
        }
    }

    /// Runs the task `id`, which this worker holds, and records how it
    /// went; whether there was such a task to run (a stop's wake-up, or a
    /// task already finished, is none).
    fn handle(&mut self, id: &str) -> Result<bool> {
        let sent = Instant::now();
        self.next_beat = sent + self.every;
        let record: Option<Vec<u8>> = self.store.run(true, |c| {
            TAKE.key(self.keys.tasks())
                .key(self.keys.workers())
                .key(self.keys.alive(&self.me))
                .arg(id)
                .arg(&self.me)
                .arg(millis(self.worker.heartbeat))
                .arg(&self.who)
                .invoke(c)
        })?;
        self.renewed = sent;
        let Some(record) = record else {
            // Finished or failed already (run twice): nothing to do.
            let held = self.keys.processing(&self.me);
            self.store.run(true, |c| {
                redis::cmd("LREM").arg(&held).arg(1).arg(id).query::<()>(c)
            })?;
            return Ok(false);
        };
        let ran = match postcard::from_bytes::<Record>(&record) {
            Err(e) => Ran::Message(message(
                tag::FAILED,
                format!("the task's record in Redis is malformed (another program wrote it?): {e}")
                    .as_bytes(),
            )),
            Ok(record) => match self.find(&record) {
                Err(why) => Ran::Message(message(tag::UNKNOWN, why.as_bytes())),
                Ok(task) => self.run_child(task, record.args)?,
            },
        };
        match ran {
            Ran::Message(m) => {
                if let Err(e) = self.persist(|w| w.finish(id, &FINISH, &m)) {
                    // A message the server refuses (over its
                    // `proto-max-bulk-len`, which may be set as low as
                    // 1 MiB) would fail every worker in turn: the task
                    // fails with the reason instead. `FINISH` does nothing
                    // again if the first was done after all.
                    if m.len() <= MIN_BULK_LIMIT {
                        return Err(e);
                    }
                    let why = format!(
                        "the task's result ({} bytes) could not be stored in Redis (is it over the server's proto-max-bulk-len?): {e}",
                        m.len()
                    );
                    let failed = message(tag::FAILED, why.as_bytes());
                    self.persist(|w| w.finish(id, &FINISH, &failed))
                        .map_err(|_| e)?;
                }
            }
            Ran::Died(code) => {
                log::debug!(
                    "pool worker {}: task {id} died with exit code {code}",
                    self.me
                );
                let code = code.to_string();
                self.persist(|w| w.finish(id, &DIED, code.as_bytes()))?;
            }
        };
        Ok(true)
    }

    /// Runs `script` ([`FINISH`] or [`DIED`]) for the task `id` with
    /// `msg`: done again, it does nothing more.
    fn finish(&self, id: &str, script: &Script, msg: &[u8]) -> Result<redis::Value> {
        self.store.run(true, |c| {
            script
                .key(self.keys.processing(&self.me))
                .key(self.keys.tasks())
                .key(self.keys.deaths())
                .key(self.keys.pending())
                .key(self.keys.result(id))
                .arg(id)
                .arg(msg)
                .arg(millis(RESULT_TTL))
                .invoke(c)
        })
    }

    /// The served task that `record` asks for; why not, if none.
    fn find(&self, record: &Record) -> std::result::Result<&'t dyn ServedTask, String> {
        let served = || {
            self.worker
                .tasks
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(task) = self.worker.tasks.iter().find(|t| t.name() == record.task) else {
            return Err(format!(
                "no task `{}` is served by the workers of pool {:?} (worker {} serves: {})",
                record.task,
                self.worker.pool,
                self.me,
                served()
            ));
        };
        if task.arg_type() != record.arg_type || task.result_type() != record.result_type {
            return Err(format!(
                "task `{}` takes {} and returns {} on worker {}, but was submitted as taking {} and returning {}",
                record.task,
                task.arg_type(),
                task.result_type(),
                self.me,
                record.arg_type,
                record.result_type
            ));
        }
        Ok(*task)
    }

    /// Runs `task` on `args` in a child, renewing the heartbeat meanwhile.
    fn run_child(&mut self, task: &dyn ServedTask, args: Vec<u8>) -> Result<Ran> {
        let run = task.runner();
        let (mut ours, mut theirs) = crate::conn::Pipe::duplex()?;
        ours.set_max_message(MAX_RESULT);
        let mut child = Process::new(move || {
            let out = match catch_unwind(AssertUnwindSafe(|| run(&args))) {
                Ok(Ok(results)) => message(tag::DONE, &results),
                Ok(Err(why)) => message(tag::FAILED, why.as_bytes()),
                Err(panic) => {
                    let text = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic with a non-string payload".into());
                    message(tag::FAILED, text.as_bytes())
                }
            };
            let _ = theirs.send_bytes(&out);
        })
        .with_name(format!("pool-task-{}", task.name()))
        .daemon(true);
        child.start()?;
        let ran = self.wait_child(&child, &mut ours);
        if ran.is_err() {
            let _ = child.kill();
            let _ = child.join_timeout(self.every);
        }
        ran
    }

    fn wait_child(
        &mut self,
        child: &Process<'static>,
        ours: &mut crate::conn::Connection,
    ) -> Result<Ran> {
        loop {
            // Woken in time for the next heartbeat: once every third of
            // its life, not up to two thirds (a loaded machine adds its
            // delays to that, and a lapse runs the task twice).
            let until_beat = self
                .next_beat
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            if ours.poll(Some(until_beat))? {
                return Ok(match ours.recv_bytes() {
                    Ok(m) => {
                        child.join()?;
                        Ran::Message(m)
                    }
                    Err(Error::ConnectionClosed) => Ran::Died(child.join()?),
                    // A result this worker cannot read (over the size
                    // bound, a broken frame) fails the task, not the
                    // worker: what a failing worker holds is put back, and
                    // would fail every worker in turn.
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.join_timeout(self.every);
                        Ran::Message(message(
                            tag::FAILED,
                            format!("the worker could not read the task's result: {e}").as_bytes(),
                        ))
                    }
                });
            }
            self.renew_if_due()?;
            if let Some(code) = child.join_timeout(Duration::ZERO)? {
                if !ours.poll(Some(Duration::ZERO))? {
                    return Ok(Ran::Died(code));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn result_messages_decode_or_say_why() {
        let done = message(tag::DONE, &postcard::to_allocvec(&vec![1u32, 2]).unwrap());
        assert_eq!(decode::<u32>(&done).unwrap(), [1, 2]);
        assert!(matches!(decode::<u32>(b"Fboom"), Err(Error::TaskFailed(m)) if m == "boom"));
        assert!(matches!(
            decode::<u32>(b"W-6"),
            Err(Error::WorkerDied { exitcode: -6 })
        ));
        assert!(matches!(decode::<u32>(b"Uwho"), Err(Error::InvalidArgument(m)) if m == "who"));
        // What another program may have written: errors, never a panic.
        for foreign in [&b""[..], b"W", b"Wx", b"D\xff\xff\xff", b"xyz", b"D"] {
            assert!(decode::<u32>(foreign).is_err(), "{foreign:?}");
        }
    }

    #[test]
    fn a_task_runs_a_chunk_and_refuses_bad_arguments() {
        let t = crate::task!(double);
        assert!(t.name().ends_with("::double"));
        let run = sealed::Run::runner(&t);
        let out = run(&postcard::to_allocvec(&vec![1u32, 21]).unwrap()).unwrap();
        assert_eq!(postcard::from_bytes::<Vec<u32>>(&out).unwrap(), [2, 42]);
        assert!(sealed::Run::runner(&t)(b"\x05\x01").is_err());
        let mut long = postcard::to_allocvec(&vec![1u32]).unwrap();
        long.push(0);
        assert!(sealed::Run::runner(&t)(&long).is_err());
    }

    #[test]
    fn key_patterns_match_only_themselves() {
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        assert!(Keys::new("").is_err());
        assert!(Keys::new(&"x".repeat(MAX_NAME + 1)).is_err());
        assert_eq!(
            Keys::new("p").unwrap().result("id"),
            "multiproc:{pool:p}:result:id"
        );
    }
}
