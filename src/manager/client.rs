//! One process's connection to a manager server, and the round trip that
//! every proxy operation makes over it.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::de::from_value;
use super::protocol::{Command, Response};
use super::ser::to_value;
use super::PyValue;
use crate::conn::{connect, Address, Connection};
use crate::error::{Error, Result};
use crate::poison;
use crate::sys;

/// One process's connection to the server, opened on first use in each
/// process (a forked child never shares its parent's socket).
///
/// Fork-safe: a child forked while another thread of its parent was in
/// the middle of a round trip (holding the parent's connection lock) never
/// touches that lock; it makes a connection state of its own, found by pid.
pub(super) struct Client {
    pub(super) address: Address,
    pub(super) authkey: Vec<u8>,
    /// This process's connection state (a `Box` leaked into the pointer).
    current: AtomicPtr<ProcessConn>,
    /// States of the processes this one was forked from, freed with the
    /// client: another thread of this process may still be reading one.
    retired: AtomicPtr<ProcessConn>,
}

/// One process's connection to the server.
struct ProcessConn {
    pid: u32,
    conn: Mutex<Option<Connection>>,
    /// The next state in [`Client::retired`].
    next: AtomicPtr<ProcessConn>,
}

impl Client {
    pub(super) fn new(address: Address, authkey: &[u8]) -> Client {
        Client {
            address,
            authkey: authkey.to_vec(),
            current: AtomicPtr::new(std::ptr::null_mut()),
            retired: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// This process's connection state, made on its first use here.
    fn state(&self) -> &ProcessConn {
        let me = sys::getpid();
        loop {
            let seen = self.current.load(Ordering::Acquire);
            // SAFETY: a non-null pointer here came from `Box::into_raw`
            // and is freed only when the client is dropped (see `retired`).
            if let Some(state) = unsafe { seen.as_ref() } {
                if state.pid == me {
                    return state;
                }
            }
            let mine = Box::into_raw(Box::new(ProcessConn {
                pid: me,
                conn: Mutex::new(None),
                next: AtomicPtr::new(std::ptr::null_mut()),
            }));
            match self
                .current
                .compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if !seen.is_null() {
                        self.retire(seen);
                    }
                    // SAFETY: just made, freed only with the client.
                    return unsafe { &*mine };
                }
                // Another thread of this process made one first.
                // SAFETY: `mine` was never shared.
                Err(_) => drop(unsafe { Box::from_raw(mine) }),
            }
        }
    }

    /// Keeps a parent's state until the client is dropped, closing this
    /// process's copy of its socket now if no round trip was under way at
    /// the fork (the server then sees the parent's connection end with the
    /// parent, not with its last child).
    fn retire(&self, old: *mut ProcessConn) {
        // SAFETY: retired states live until the client is dropped.
        let state = unsafe { &*old };
        // Never waits: the lock may be held by a thread that was not forked.
        if let Ok(mut conn) = state.conn.try_lock() {
            conn.take();
        }
        let mut head = self.retired.load(Ordering::Acquire);
        loop {
            state.next.store(head, Ordering::Relaxed);
            match self
                .retired
                .compare_exchange(head, old, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// One round trip: sends `req`, returns the answer.
    pub(super) fn request(&self, req: &Command) -> Result<Response> {
        let mut conn = poison::locked(&self.state().conn);
        let c = match &mut *conn {
            Some(c) => c,
            None => conn.insert(connect(&self.address, Some(&self.authkey)).map_err(
                |e| match e {
                    Error::Io { .. } => Error::ManagerGone(e.to_string()),
                    other => other,
                },
            )?),
        };
        let exchanged = c.send(req).and_then(|()| c.recv::<Response>());
        match exchanged {
            Ok(r) => Ok(r),
            Err(e) => {
                *conn = None;
                Err(match e {
                    Error::ConnectionClosed => {
                        Error::ManagerGone("the server closed the connection".into())
                    }
                    other => other,
                })
            }
        }
    }

    /// One round trip whose answer is a value, decoded as an `R`: every
    /// conversion checked (a count is a `usize` only if it fits one).
    pub(super) fn call<R: DeserializeOwned>(&self, req: &Command) -> Result<R> {
        match self.request(req)? {
            Response::Value(v) => decode(v),
            other => Err(protocol_error(other)),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let current = *self.current.get_mut();
        if !current.is_null() {
            // SAFETY: from `Box::into_raw`, and no thread can reach it any
            // more (the client is being dropped).
            drop(unsafe { Box::from_raw(current) });
        }
        let mut next = *self.retired.get_mut();
        while !next.is_null() {
            // SAFETY: as above, for each retired state once.
            let mut state = unsafe { Box::from_raw(next) };
            next = *state.next.get_mut();
        }
    }
}

pub(super) fn protocol_error(r: Response) -> Error {
    match r {
        Response::Error { kind, message } => Error::Remote { kind, message },
        other => Error::ManagerGone(format!("unexpected answer {other:?}")),
    }
}

/// A key or value as the manager stores it.
pub(super) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<PyValue> {
    to_value(v).map_err(|e| Error::Serialize(e.to_string()))
}

/// A `T` from what the manager answered.
pub(super) fn decode<T: DeserializeOwned>(v: PyValue) -> Result<T> {
    from_value(v).map_err(|e| Error::Deserialize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parent's state, its lock held by a thread that was not forked:
    /// this process makes its own without waiting, and every state is
    /// freed with the client (Miri checks the pointers and the leaks).
    #[test]
    fn a_process_never_takes_the_lock_of_a_state_not_its_own() {
        let client = Client::new(Address::Unix("/nonexistent".into()), b"key");
        let first: *const ProcessConn = client.state();
        assert!(std::ptr::eq(first, client.state()), "one state per process");
        let parents = Box::into_raw(Box::new(ProcessConn {
            pid: sys::getpid().wrapping_add(1),
            conn: Mutex::new(None),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }));
        // SAFETY: just made; the client frees it.
        std::mem::forget(unsafe { &*parents }.conn.lock().unwrap());
        client.retire(client.current.swap(parents, Ordering::AcqRel));
        let mine = client.state();
        assert_eq!(mine.pid, sys::getpid());
        assert!(mine.conn.try_lock().is_ok());
        assert!(!std::ptr::eq(mine, parents) && !std::ptr::eq(mine, first));
    }
}
