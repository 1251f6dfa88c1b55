//! An event on Redis ([`EventProxy`]).
//!
//! Keys, under the hash tag `{event:<name>}`: `flag`, present while the
//! event is set; `sets`, the number of sets, which only a set changes;
//! and the pub/sub channel `set`, to which [`set`](EventProxy::set)
//! publishes in the same script. A message on the channel only makes a
//! waiter look at the keys: anyone may publish to it.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::queue::{deadline, next_wait, SLICE};
use super::{check_name, Store};
use crate::error::Result;

fn part(name: &str, part: &str) -> String {
    format!("multiproc:{{event:{name}}}:{part}")
}

/// Counts the set (first: a count that is not one fails it before it
/// writes anything), sets the flag, and tells the waiters.
static SET: crate::lazy::Lazy<Script> = crate::lazy::Lazy::new(|| {
    Script::new(
        r"
redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], '1')
redis.call('PUBLISH', ARGV[1], '1')
return 1
",
    )
});

/// Deletes the event `name`; whether it existed.
pub(super) fn delete(store: &Store, name: &str) -> Result<bool> {
    let keys = [part(name, "flag"), part(name, "sets")];
    store
        .run(true, |c| redis::cmd("DEL").arg(&keys).query::<u64>(c))
        .map(|n| n > 0)
}

/// An event on Redis (Python's `Event`), shared by every process (on any
/// machine) that asks its manager for the same name
/// ([`Manager::event_named`](super::super::Manager::event_named)).
///
/// A [`wait`](EventProxy::wait) reads the flag and the count of sets,
/// subscribes to the event's channel (on a connection of its own), then
/// reads them again: a `set` after the first read wakes it (and it
/// answers `true` even if a `clear` came right after, as Python's does:
/// the count moved), at once if it came after the subscription (a
/// message), at the second read if before it. A message on the
/// channel is only a reason to read them again: another client's
/// `PUBLISH` there wakes no wait for good. No polling, except that a long
/// wait reads them again every 5 s (which also notices a server gone, and
/// a wake-up lost with a connection: pub/sub delivers at most once).
pub struct EventProxy {
    inner: Arc<EventInner>,
}

struct EventInner {
    store: Arc<Store>,
    name: String,
    /// The keys `flag` and `sets`.
    keys: [String; 2],
    channel: String,
}

impl Clone for EventProxy {
    fn clone(&self) -> Self {
        EventProxy {
            inner: self.inner.clone(),
        }
    }
}

impl std::fmt::Debug for EventProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProxy")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl EventProxy {
    /// The event's name on Redis.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Sets the event, waking every waiter (one script: `SET` and
    /// `PUBLISH`).
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn set(&self) -> Result<()> {
        let i = &self.inner;
        i.store.run(true, |c| {
            SET.key(&i.keys[0])
                .key(&i.keys[1])
                .arg(&i.channel)
                .invoke::<u64>(c)
        })?;
        Ok(())
    }

    /// Clears the event.
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn clear(&self) -> Result<()> {
        let flag = &self.inner.keys[0];
        self.inner
            .store
            .run(true, |c| redis::cmd("DEL").arg(flag).query::<u64>(c))?;
        Ok(())
    }

    /// Whether the event is set.
    ///
    /// # Errors
    /// As a call on Redis.
    pub fn is_set(&self) -> Result<bool> {
        let flag = &self.inner.keys[0];
        self.inner
            .store
            .run(true, |c| redis::cmd("EXISTS").arg(flag).query::<u64>(c))
            .map(|n| n > 0)
    }

    /// Whether the flag is set, and the count of sets (nil: never set),
    /// in one round trip.
    fn state(&self) -> Result<(bool, redis::Value)> {
        let [flag, sets] = &self.inner.keys;
        let (n, count): (u64, redis::Value) = self.inner.store.run(true, |c| {
            redis::pipe()
                .cmd("EXISTS")
                .arg(flag)
                .cmd("GET")
                .arg(sets)
                .query(c)
        })?;
        Ok((n > 0, count))
    }

    /// Waits until the event is set, up to `timeout` (`None`: as long as
    /// it takes; `Some(Duration::ZERO)`: not at all; any duration is
    /// accepted); whether it was set (Python's `wait`: `false` only when
    /// the time ran out).
    ///
    /// # Errors
    /// As a call on Redis ([`Error::ManagerGone`](crate::Error::ManagerGone) if the server goes away
    /// during the wait, or sends a message that does not come whole
    /// within the manager's timeout).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        // The flag, and the count of sets before the subscription: a set
        // from here on moves the count, whether it comes before the
        // subscription (no message; the count is read again once
        // subscribed) or after it (a message).
        let (flag, before) = self.state()?;
        if flag {
            return Ok(true);
        }
        let deadline = deadline(timeout);
        let Some(first) = next_wait(deadline, SLICE) else {
            return Ok(false);
        };
        let store = &self.inner.store;
        // Set, or set since the count was read (and maybe cleared since).
        let woken = || -> Result<bool> {
            let (flag, sets) = self.state()?;
            Ok(flag || (sets != redis::Value::Nil && sets != before))
        };
        // A connection of its own, subscribed to the event's channel.
        let mut conn = store.connect()?;
        let channel = &self.inner.channel;
        conn.call(store.timeout, |c| {
            redis::cmd("SUBSCRIBE")
                .arg(channel)
                .query::<redis::Value>(c)
        })
        .map_err(|e| store.unreachable(&e))?;
        if woken()? {
            return Ok(true);
        }
        let mut wait = first;
        loop {
            // A message on the channel (anyone's) is a reason to look; a
            // message that began to come and did not end within the
            // timeout, an error (a server that sends one a byte at a time
            // holds the wait no longer).
            if let Err(e) = conn.receive(wait, store.timeout) {
                return Err(store.unreachable(&e));
            }
            if woken()? {
                return Ok(true);
            }
            match next_wait(deadline, SLICE) {
                Some(w) => wait = w,
                None => return Ok(false),
            }
        }
    }
}

impl super::super::Manager {
    /// The event called `name` on Redis (see [`EventProxy`]): every
    /// process that asks for the same name gets the same event.
    ///
    /// On a manager server's handle this is [`Error::InvalidArgument`](crate::Error::InvalidArgument) for
    /// now (as [`dict_named`](super::super::Manager::dict_named)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) on a manager server's handle, or for a
    /// name that is empty or over 512 bytes.
    pub fn event_named(&self, name: &str) -> Result<EventProxy> {
        check_name(name)?;
        let store = self.store(name)?;
        Ok(EventProxy::new(store.clone(), name))
    }
}

impl EventProxy {
    fn new(store: Arc<Store>, name: &str) -> EventProxy {
        EventProxy {
            inner: Arc::new(EventInner {
                store,
                name: name.to_string(),
                keys: [part(name, "flag"), part(name, "sets")],
                channel: part(name, "set"),
            }),
        }
    }
}

/// An event's proxy sent to another process (through a pipe, a queue, a
/// Redis value): its URL, `"event"` and its name.
impl serde::Serialize for EventProxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        super::queue::serialize_proxy(s, &self.inner.store, "event", &self.inner.name)
    }
}

/// An event's proxy from another process, on this process's store for its
/// URL: an error if this process (or the one it was forked from) has not
/// connected to that server.
impl<'de> serde::Deserialize<'de> for EventProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (store, name) = super::queue::deserialize_proxy(d, "event")?;
        Ok(EventProxy::new(store, &name))
    }
}
