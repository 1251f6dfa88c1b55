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
pub(crate) const HANDSHAKE_MAX: usize = 256;
/// How long a peer may take over each handshake message: one that connects
/// and says nothing never holds up `accept` for longer.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

fn digest(key: &[u8], message: &[u8]) -> Result<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| Error::AuthenticationFailed("unusable authkey".into()))?;
    mac.update(message);
    Ok(mac)
}

/// A fresh challenge: the tag and a random nonce.
fn challenge() -> Result<Vec<u8>> {
    let mut message = CHALLENGE.to_vec();
    let mut nonce = [0u8; NONCE];
    sys::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
    message.extend_from_slice(&nonce);
    Ok(message)
}

/// Which side of the handshake this end plays.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    /// Challenges first (the listener).
    Server,
    /// Answers first (the client).
    Client,
}

/// What a handshake waits for from the peer.
enum Awaiting {
    /// The digest of the challenge this end sent.
    Digest,
    /// The peer's challenge.
    Challenge,
    /// The peer's verdict on this end's digest.
    Welcome,
}

/// What to do after a message from the peer.
pub(crate) struct Step {
    /// The message to send (on a failure, the one that tells the peer).
    pub(crate) send: Option<Vec<u8>>,
    /// `Ok(true)` once both proofs succeeded, `Ok(false)` while more is
    /// awaited; an error ends the handshake.
    pub(crate) outcome: Result<bool>,
}

/// The mutual challenge as a state machine fed the peer's messages one at
/// a time, so that the blocking [`handshake`] and the manager server's
/// event loop run the same code.
///
/// The server challenges, checks the digest and welcomes, then answers the
/// client's challenge; the client does the same in the other order.
pub(crate) struct Handshake {
    key: Vec<u8>,
    side: Side,
    /// The challenge this end sent, while its digest is awaited.
    sent: Vec<u8>,
    awaiting: Awaiting,
}

impl Handshake {
    /// Starts a handshake; the message to send first, if this side speaks first.
    pub(crate) fn new(key: &[u8], side: Side) -> Result<(Handshake, Option<Vec<u8>>)> {
        // An unusable key fails now rather than after the peer answered.
        digest(key, b"")?;
        let mut h = Handshake {
            key: key.to_vec(),
            side,
            sent: Vec::new(),
            awaiting: Awaiting::Challenge,
        };
        let first = match side {
            Side::Server => {
                h.sent = challenge()?;
                h.awaiting = Awaiting::Digest;
                Some(h.sent.clone())
            }
            Side::Client => None,
        };
        Ok((h, first))
    }

    /// Takes the peer's next message.
    pub(crate) fn receive(&mut self, message: &[u8]) -> Step {
        let refused = |why: &str| Err(Error::AuthenticationFailed(why.into()));
        let (send, outcome) = match self.awaiting {
            Awaiting::Digest => {
                match digest(&self.key, &self.sent).map(|mac| mac.verify_slice(message).is_ok()) {
                    Ok(true) => {
                        self.awaiting = Awaiting::Challenge;
                        (
                            Some(WELCOME.to_vec()),
                            Ok(matches!(self.side, Side::Client)),
                        )
                    }
                    Ok(false) => (
                        Some(FAILURE.to_vec()),
                        refused("the peer's digest was wrong (wrong authkey?)"),
                    ),
                    Err(e) => (None, Err(e)),
                }
            }
            Awaiting::Challenge
                if !message.starts_with(CHALLENGE) || message.len() != CHALLENGE.len() + NONCE =>
            {
                (None, refused("the peer sent no valid challenge"))
            }
            Awaiting::Challenge => match digest(&self.key, message) {
                Ok(mac) => {
                    self.awaiting = Awaiting::Welcome;
                    (Some(mac.finalize().into_bytes().to_vec()), Ok(false))
                }
                Err(e) => (None, Err(e)),
            },
            Awaiting::Welcome if message != WELCOME => (
                None,
                refused("the peer rejected our digest (wrong authkey?)"),
            ),
            Awaiting::Welcome => match self.side {
                Side::Server => (None, Ok(true)),
                Side::Client => match challenge() {
                    Ok(c) => {
                        self.sent = c.clone();
                        self.awaiting = Awaiting::Digest;
                        (Some(c), Ok(false))
                    }
                    Err(e) => (None, Err(e)),
                },
            },
        };
        Step { send, outcome }
    }
}

/// Any failure during the handshake, as an authentication error.
pub(crate) fn as_auth_error(e: Error) -> Error {
    match e {
        Error::AuthenticationFailed(_) => e,
        other => Error::AuthenticationFailed(format!("handshake failed: {other}")),
    }
}

/// Drives a handshake over a blocking connection.
fn run(conn: &mut Connection, key: &[u8], side: Side) -> Result<()> {
    let (mut h, first) = Handshake::new(key, side)?;
    if let Some(m) = first {
        conn.send_bytes(&m)?;
    }
    loop {
        let step = h.receive(&conn.recv_bytes_timeout(HANDSHAKE_TIMEOUT)?);
        if let Some(m) = step.send {
            let sent = conn.send_bytes(&m);
            // A failure to authenticate matters more than failing to say so.
            if let (Err(e), Ok(_)) = (sent, &step.outcome) {
                return Err(e);
            }
        }
        if step.outcome? {
            return Ok(());
        }
    }
}

/// Runs the mutual challenge with small messages only; on failure the
/// connection is closed.
pub(super) fn handshake(conn: &mut Connection, key: &[u8], side: Side) -> Result<()> {
    let limit = conn.max_message();
    conn.set_max_message(HANDSHAKE_MAX);
    let r = run(conn, key, side);
    conn.set_max_message(limit);
    r.map_err(|e| {
        conn.close();
        as_auth_error(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one side's message to the other until both are done or
    /// nothing is left to send; each side's outcome (`Timeout` if it never
    /// finished).
    fn exchange(server_key: &[u8], client_key: &[u8]) -> (Result<()>, Result<()>) {
        let (mut server, first) = Handshake::new(server_key, Side::Server).unwrap();
        let (mut client, none) = Handshake::new(client_key, Side::Client).unwrap();
        assert!(none.is_none(), "the client speaks second");
        let (mut to_client, mut to_server) = (first, None);
        let (mut server_done, mut client_done) = (None, None);
        let feed = |h: &mut Handshake, m: Vec<u8>, done: &mut Option<Result<()>>| {
            let step = h.receive(&m);
            match step.outcome {
                Ok(false) => {}
                Ok(true) => *done = Some(Ok(())),
                Err(e) => *done = Some(Err(e)),
            }
            step.send
        };
        for _ in 0..10 {
            if let Some(m) = to_client.take().filter(|_| client_done.is_none()) {
                to_server = feed(&mut client, m, &mut client_done);
            } else if let Some(m) = to_server.take().filter(|_| server_done.is_none()) {
                to_client = feed(&mut server, m, &mut server_done);
            } else {
                break;
            }
        }
        (
            server_done.unwrap_or(Err(Error::Timeout)),
            client_done.unwrap_or(Err(Error::Timeout)),
        )
    }

    #[test]
    fn the_same_key_authenticates_both_sides() {
        let (server, client) = exchange(b"key", b"key");
        assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
    }

    #[test]
    fn a_wrong_key_fails_on_both_sides() {
        let (server, client) = exchange(b"key", b"other key");
        assert!(
            matches!(server, Err(Error::AuthenticationFailed(_))),
            "{server:?}"
        );
        assert!(
            matches!(client, Err(Error::AuthenticationFailed(_))),
            "{client:?}"
        );
    }

    #[test]
    fn garbage_is_refused_at_every_step() {
        let (mut server, _) = Handshake::new(b"key", Side::Server).unwrap();
        let step = server.receive(b"not a digest");
        assert_eq!(step.send.as_deref(), Some(FAILURE));
        assert!(step.outcome.is_err());
        let (mut client, _) = Handshake::new(b"key", Side::Client).unwrap();
        assert!(client.receive(b"#CHALLENGE#{sha256}short").outcome.is_err());
        let (mut client, _) = Handshake::new(b"key", Side::Client).unwrap();
        let challenge = [CHALLENGE, &[7; NONCE]].concat();
        assert!(client.receive(&challenge).outcome.is_ok());
        assert!(client.receive(FAILURE).outcome.is_err());
    }
}
