//! The mutual authkey challenge (as Python's `deliver_challenge` and
//! `answer_challenge`, with HMAC-SHA256): each side proves it knows the key
//! without sending it, and nothing else is read from the peer before both
//! proofs succeed.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Connection;
use crate::error::{Error, Result};
use crate::sys;

const CHALLENGE: &[u8] = b"#CHALLENGE#{sha256}";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE: usize = 32;
/// The largest message accepted during the handshake.
const HANDSHAKE_MAX: usize = 256;
/// How long a peer may take over each handshake message: one that connects
/// and says nothing never holds up `accept` for longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

fn digest(key: &[u8], message: &[u8]) -> Result<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| Error::AuthenticationFailed("unusable authkey".into()))?;
    mac.update(message);
    Ok(mac)
}

/// Sends a fresh challenge and checks the peer's answer.
fn deliver(conn: &mut Connection, key: &[u8]) -> Result<()> {
    let mut message = CHALLENGE.to_vec();
    let mut nonce = [0u8; NONCE];
    sys::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
    message.extend_from_slice(&nonce);
    conn.send_bytes(&message)?;
    let answer = conn.recv_bytes_timeout(HANDSHAKE_TIMEOUT)?;
    if digest(key, &message)?.verify_slice(&answer).is_ok() {
        conn.send_bytes(WELCOME)
    } else {
        let _ = conn.send_bytes(FAILURE);
        Err(Error::AuthenticationFailed(
            "the peer's digest was wrong (wrong authkey?)".into(),
        ))
    }
}

/// Answers the peer's challenge and checks it was accepted.
fn answer(conn: &mut Connection, key: &[u8]) -> Result<()> {
    let message = conn.recv_bytes_timeout(HANDSHAKE_TIMEOUT)?;
    if !message.starts_with(CHALLENGE) || message.len() != CHALLENGE.len() + NONCE {
        return Err(Error::AuthenticationFailed(
            "the peer sent no valid challenge".into(),
        ));
    }
    conn.send_bytes(&digest(key, &message)?.finalize().into_bytes())?;
    match conn.recv_bytes_timeout(HANDSHAKE_TIMEOUT)?.as_slice() {
        WELCOME => Ok(()),
        _ => Err(Error::AuthenticationFailed(
            "the peer rejected our digest (wrong authkey?)".into(),
        )),
    }
}

/// Which side of the handshake this end plays.
#[derive(Clone, Copy)]
pub(super) enum Side {
    /// Challenges first (the listener).
    Server,
    /// Answers first (the client).
    Client,
}

/// Runs the mutual challenge with small messages only; on failure the
/// connection is closed.
pub(super) fn handshake(conn: &mut Connection, key: &[u8], side: Side) -> Result<()> {
    let limit = conn.max_message();
    conn.set_max_message(HANDSHAKE_MAX);
    let r = match side {
        Side::Server => deliver(conn, key).and_then(|()| answer(conn, key)),
        Side::Client => answer(conn, key).and_then(|()| deliver(conn, key)),
    };
    conn.set_max_message(limit);
    if let Err(e) = r {
        conn.close();
        return Err(match e {
            Error::AuthenticationFailed(_) => e,
            other => Error::AuthenticationFailed(format!("handshake failed: {other}")),
        });
    }
    Ok(())
}
