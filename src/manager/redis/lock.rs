//! A lock on Redis ([`LockProxy`]): a lease with a fencing token.
//!
//! Keys, under the hash tag `{lock:<name>}`:
//! - `lease`: the holder's token, with the lease as its time to live
//!   (`SET NX PX`);
//! - `held`: `<token>:<fencing token>:<died>`, without a time to live,
//!   deleted by a release: found present with the lease gone, the last
//!   holder's lease ended without a release (it died, or was too slow);
//! - `fence`: the counter of acquisitions (`INCR`), the fencing tokens;
//! - `wake`: a list a release pushes to, that waiters block on (`BLPOP`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisResult, Script};

use super::queue::{deadline, next_wait, seconds, token, Waiting, SLICE};
use super::wire::Wire;
use super::{check_name, Store};
use crate::error::{Error, Result};
use crate::sys;

/// The lease of a lock unless [`LockProxy::with_lease`] says otherwise.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The longest lease (about 34 years: Redis's expiry must not overflow).
const MAX_LEASE_MS: u128 = 1 << 40;

fn part(name: &str, part: &str) -> String {
    format!("multiproc:{{lock:{name}}}:{part}")
}

/// Takes the lock if its lease is free: `{1, fence, died}`; else `{0,
/// milliseconds the lease has left}`. Run again by the same token (after
/// a lost answer) it answers what it answered the first time. The
/// fencing counter starts at the server's clock in microseconds, so that
/// tokens keep growing across a `remove_named` (unless that clock steps
/// back); it is incremented before anything is written, so that a
/// foreign value in its key is an error that takes no lease.
static ACQUIRE: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  local h = redis.call('GET', KEYS[2])
  if h then
    local t, f, d = string.match(h, '^(%x+):(%d+):(%d)$')
    if t == ARGV[1] then return {1, tonumber(f), tonumber(d)} end
  end
end
if cur then return {0, redis.call('PTTL', KEYS[1])} end
if redis.call('EXISTS', KEYS[3]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])))
end
local f = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local died = redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. string.format('%d', f) .. ':' .. died)
return {1, f, died}
",
    )
});

/// Releases the lock if `ARGV[1]` holds it (1), else 0; wakes a waiter.
static RELEASE: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[3], '1')
redis.call('PEXPIRE', KEYS[3], 60000)
return 1
",
    )
});

/// Runs [`RELEASE`] for `token` on the lock of `keys`.
fn release(c: &mut Wire, keys: &[String; 4], token: &str) -> RedisResult<u64> {
    RELEASE
        .key(&keys[0])
        .key(&keys[1])
        .key(&keys[3])
        .arg(token)
        .invoke(c)
}

/// How long the undoing of an acquire given up on keeps trying to reach
/// the server, at most.
const UNDO_FOR: Duration = Duration::from_secs(600);

/// The most threads undoing acquires at once in a process (a server down
/// for a while fails every acquire meanwhile: past these, an acquire's
/// lease is left to end).
const MAX_UNDOING: u64 = 16;

/// The threads undoing acquires now in this process: its pid (the high
/// half) and their count (the low half). A forked child has none of its
/// parent's threads, and a count under another pid is taken for none.
static UNDOING: AtomicU64 = AtomicU64::new(0);

/// Counts one more thread undoing an acquire in this process, unless
/// [`MAX_UNDOING`] do already.
fn count_undoing() -> bool {
    let me = u64::from(sys::cached_pid()) << 32;
    UNDOING
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            let n = if w >> 32 == me >> 32 {
                w & 0xffff_ffff
            } else {
                0
            };
            (n < MAX_UNDOING).then_some(me | (n + 1))
        })
        .is_ok()
}

/// Undoes an acquire by `token` whose answer was lost (the server was
/// slow past the timeout, or the connection broke): the server may have
/// run it, or may run it yet, and then the lock is held by a token that
/// nobody would release before its lease ends. It releases the lock if
/// `token` holds it, never another's hold, from a thread of its own that
/// tries until the server answers (each try on a new connection of its
/// own: the process's other calls do not wait behind it), for
/// [`UNDO_FOR`] at most: the acquire's caller has its error at once.
fn undo(inner: &Arc<LockInner>, token: String) {
    if !count_undoing() {
        log::warn!(
            "{MAX_UNDOING} lost Redis lock acquires are being undone already: this one's lease is left to end"
        );
        return;
    }
    let inner = inner.clone();
    let once = move || {
        let conn = inner.store.connect().ok();
        conn.is_some_and(|mut conn| {
            match conn.call(inner.store.timeout, |c| release(c, &inner.keys, &token)) {
                Ok(_) => true,
                // An answer, if not a wanted one: nothing more to try.
                Err(e) => !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped()),
            }
        })
    };
    let tries = move || {
        let until = sys::Deadline::after(UNDO_FOR);
        let mut pause = Duration::from_millis(10);
        while !once() && !until.passed() {
            std::thread::sleep(pause);
            pause = (pause * 2).min(SLICE);
        }
        UNDOING.fetch_sub(1, Ordering::AcqRel);
    };
    let spawned = std::thread::Builder::new()
        .name("multiproc-lock-undo".into())
        .spawn(tries);
    if let Err(e) = spawned {
        UNDOING.fetch_sub(1, Ordering::AcqRel);
        log::warn!("could not start a thread to undo a lost Redis lock acquire ({e})");
    }
}

/// Extends the lease of `ARGV[1]` to `ARGV[2]` ms from now (1), else 0.
static EXTEND: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Deletes the lock `name`; whether it existed.
pub(super) fn delete(store: &Store, name: &str) -> Result<bool> {
    let keys: Vec<String> = ["lease", "held", "fence", "wake"]
        .iter()
        .map(|p| part(name, p))
        .collect();
    store
        .run(true, |c| redis::cmd("DEL").arg(&keys).query::<u64>(c))
        .map(|n| n > 0)
}

/// A lock on Redis, shared by every process (on any machine) that asks
/// its manager for the same name
/// ([`Manager::lock_named`](super::super::Manager::lock_named)).
///
/// It is a **lease**: [`acquire`](LockProxy::acquire) holds it for the
/// proxy's lease (default 30 s, [`with_lease`](LockProxy::with_lease)),
/// which the holder may [`extend`](LeaseGuard::extend); a holder that
/// dies loses it when its lease ends, and the next holder is told
/// ([`LeaseGuard::previous_owner_died`], the analogue of
/// [`Error::OwnerDied`]).
///
/// What a lease cannot promise: mutual exclusion in time. A holder that
/// is paused (stopped, swapping, a long garbage collection, cut off from
/// Redis) past its lease still believes it holds the lock while the next
/// holder has it. That is what the [fencing
/// token](LeaseGuard::fencing_token) is for: it grows with each
/// acquisition, so a resource that remembers the highest token it saw can
/// refuse a write from an older holder. Redis's own failover (a replica
/// promoted before it got the lease) can also lose a lease.
pub struct LockProxy {
    inner: Arc<LockInner>,
}

impl Clone for LockProxy {
    fn clone(&self) -> Self {
        LockProxy {
            inner: self.inner.clone(),
        }
    }
}

impl std::fmt::Debug for LockProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockProxy")
            .field("name", &self.inner.name)
            .field("lease", &self.inner.lease)
            .finish_non_exhaustive()
    }
}

struct LockInner {
    store: Arc<Store>,
    name: String,
    lease: Duration,
    keys: [String; 4],
    waiting: Waiting,
}

/// A held lease of a [`LockProxy`]: released when dropped (by the process
/// that acquired it; a forked child's copy releases nothing), or by
/// [`release`](LeaseGuard::release), which says if it was still held.
pub struct LeaseGuard {
    inner: Arc<LockInner>,
    token: String,
    fence: u64,
    died: bool,
    pid: u32,
    released: bool,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("lock", &self.inner.name)
            .field("fencing_token", &self.fence)
            .field("previous_owner_died", &self.died)
            .finish_non_exhaustive()
    }
}

impl LockProxy {
    /// The lock's name on Redis.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This proxy with another lease for what it acquires.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a lease under 1 ms (one over about
    /// 34 years is that).
    pub fn with_lease(&self, lease: Duration) -> Result<LockProxy> {
        let i = &self.inner;
        Ok(LockProxy {
            inner: Arc::new(LockInner::new(i.store.clone(), &i.name, lease)?),
        })
    }

    /// Acquires the lock, waiting up to `timeout` (`None`: as long as it
    /// takes; `Some(Duration::ZERO)`: one try; any duration is accepted).
    /// A waiter blocks on the server (`BLPOP` on a list a release pushes
    /// to, on a connection of its own) until a release, the end of the
    /// holder's lease, or 5 s at most, then tries again.
    ///
    /// An acquire whose answer is lost (the server slow past the
    /// manager's timeout, or the connection broken) is an error, and if
    /// the server took the lock for it after all, a thread of this process
    /// releases it (by this acquire's own token: never another's hold),
    /// trying until the server answers: the lock is not left held until
    /// its lease ends.
    ///
    /// # Errors
    /// [`Error::Timeout`] if it is not free in time; as a call on Redis.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<LeaseGuard> {
        let deadline = deadline(timeout);
        let i = &self.inner;
        let token = token()?;
        let lease = lease_ms(i.lease)?;
        loop {
            let answer = i.store.run(true, |c| {
                let r: Vec<i64> = ACQUIRE
                    .key(&i.keys[0])
                    .key(&i.keys[1])
                    .key(&i.keys[2])
                    .arg(&token)
                    .arg(&lease)
                    .invoke(c)?;
                Ok((
                    r.first().copied().unwrap_or(0),
                    r.get(1).copied().unwrap_or(0),
                    r.get(2).copied().unwrap_or(0),
                ))
            });
            let (got, value, died) = match answer {
                Ok(answer) => answer,
                Err(e @ (Error::ManagerGone(_) | Error::Ambiguous(_))) => {
                    undo(i, token);
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if got == 1 {
                return Ok(LeaseGuard {
                    inner: i.clone(),
                    token,
                    fence: u64::try_from(value).unwrap_or(0),
                    died: died == 1,
                    pid: sys::getpid(),
                    released: false,
                });
            }
            if timeout == Some(Duration::ZERO) {
                return Err(Error::Timeout);
            }
            // The lease's time left (-1: none, a foreign key; -2: gone).
            let left = match u64::try_from(value) {
                Ok(ms) => Duration::from_millis(ms.max(1)),
                Err(_) if value == -2 => continue,
                Err(_) => SLICE,
            };
            let Some(wait) = next_wait(deadline, SLICE.min(left)) else {
                return Err(Error::Timeout);
            };
            let wake = &i.keys[3];
            i.waiting.run(&i.store, wait, true, |c| {
                redis::cmd("BLPOP")
                    .arg(wake)
                    .arg(seconds(wait))
                    .query::<Option<(String, String)>>(c)
            })?;
        }
    }

    /// [`acquire`](LockProxy::acquire) without waiting.
    ///
    /// # Errors
    /// As for [`acquire`](LockProxy::acquire).
    pub fn try_acquire(&self) -> Result<LeaseGuard> {
        self.acquire(Some(Duration::ZERO))
    }

    /// Whether someone holds the lease now.
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn is_locked(&self) -> Result<bool> {
        let lease = &self.inner.keys[0];
        self.inner
            .store
            .run(true, |c| redis::cmd("EXISTS").arg(lease).query::<u64>(c))
            .map(|n| n > 0)
    }
}

impl LeaseGuard {
    /// The fencing token of this acquisition: larger than that of every
    /// earlier acquisition of the lock. Pass it with each write to a
    /// resource the lock protects; the resource refuses a token below the
    /// highest it saw (a paused former holder's).
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// Whether the previous holder's lease ended without a release (it
    /// died holding the lock, or outlived its lease): what it protected
    /// may be half-updated.
    pub fn previous_owner_died(&self) -> bool {
        self.died
    }

    /// Extends the lease to `lease` from now, if this guard still holds it.
    ///
    /// # Errors
    /// [`Error::NotOwner`] if the lease had ended (someone else may hold
    /// the lock); [`Error::InvalidArgument`] for a zero lease; as a call
    /// on Redis.
    pub fn extend(&self, lease: Duration) -> Result<()> {
        let ms = lease_ms(lease)?;
        let i = &self.inner;
        let token = &self.token;
        let n = i.store.run(true, |c| {
            EXTEND.key(&i.keys[0]).arg(token).arg(&ms).invoke::<u64>(c)
        })?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::NotOwner)
        }
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// [`Error::NotOwner`] if this guard's lease had ended (the next
    /// holder will be told its previous owner died); as a call on Redis
    /// (a failure after sending is [`Error::Ambiguous`]).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.release_now()
    }

    fn release_now(&self) -> Result<()> {
        let i = &self.inner;
        let token = &self.token;
        let n = i.store.run(false, |c| release(c, &i.keys, token))?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::NotOwner)
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.released && self.pid == sys::getpid() {
            let _ = self.release_now();
        }
    }
}

fn lease_ms(lease: Duration) -> Result<String> {
    let ms = lease.as_millis();
    if ms == 0 {
        return Err(Error::InvalidArgument(format!(
            "a lease is 1 ms or more, not {lease:?}"
        )));
    }
    Ok(ms.min(MAX_LEASE_MS).to_string())
}

/// A lock's proxy sent to another process (through a pipe, a queue, a
/// Redis value): its URL, `"lock"` and its name.
impl serde::Serialize for LockProxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        super::queue::serialize_proxy(s, &self.inner.store, "lock", &self.inner.name)
    }
}

/// A lock's proxy from another process, on this process's store for its
/// URL: an error if this process (or the one it was forked from) has not
/// connected to that server. Its lease is the default (30 s), not the
/// sender's [`with_lease`](LockProxy::with_lease).
impl<'de> serde::Deserialize<'de> for LockProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let (store, name) = super::queue::deserialize_proxy(d, "lock")?;
        Ok(LockProxy {
            inner: Arc::new(LockInner::new(store, &name, DEFAULT_LEASE).map_err(D::Error::custom)?),
        })
    }
}

impl LockInner {
    fn new(store: Arc<Store>, name: &str, lease: Duration) -> Result<LockInner> {
        lease_ms(lease)?;
        Ok(LockInner {
            store,
            name: name.to_string(),
            lease,
            keys: ["lease", "held", "fence", "wake"].map(|p| part(name, p)),
            waiting: Waiting::new(),
        })
    }
}

impl super::super::Manager {
    /// The lock called `name` on Redis, a lease of 30 s (see
    /// [`LockProxy`], and [`LockProxy::with_lease`]): every process that
    /// asks for the same name gets the same lock.
    ///
    /// On a manager server's handle this is [`Error::InvalidArgument`] for
    /// now (as [`dict_named`](super::super::Manager::dict_named)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a manager server's handle, or for a
    /// name that is empty or over 512 bytes.
    pub fn lock_named(&self, name: &str) -> Result<LockProxy> {
        check_name(name)?;
        let store = self.store(name)?;
        Ok(LockProxy {
            inner: Arc::new(LockInner::new(store.clone(), name, DEFAULT_LEASE)?),
        })
    }
}
