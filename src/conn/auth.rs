//! The mutual authkey challenge, Python's (`multiprocessing.connection`'s
//! `deliver_challenge` and `answer_challenge`): each side proves it knows
//! the key without sending it, and nothing else is read from the peer
//! before both proofs succeed.
//!
//! Each message is one frame. The challenger sends `#CHALLENGE#` and a
//! body; the answer is an HMAC of the body (everything after `#CHALLENGE#`)
//! under the key; the challenger replies `#WELCOME#` or `#FAILURE#`. The
//! server challenges first, then answers the client's challenge; the client
//! does the same in the other order.
//!
//! Versions of the protocol, all spoken here:
//! - We challenge with `{sha256}` and 40 random bytes. A Python 3.12+ peer
//!   answers `{sha256}` and the HMAC-SHA256; a 3.8-3.11 peer answers the
//!   raw 16-byte HMAC-MD5 of the same body. We accept either, and also a
//!   `{md5}` or `{sha384}` answer (Python 3.12+ accepts those too); the
//!   prefix is part of the MAC'd body, so it cannot be downgraded.
//! - We answer a 20-byte challenge (Python 3.8-3.11's) with the raw
//!   HMAC-MD5, and a `{digest}`-prefixed one with `{digest}` and that HMAC
//!   (`md5`, `sha256` or `sha384`; `sha3_*` is refused).
//!
//! MD5 is used only where a legacy peer requires it. Digests are compared
//! in constant time; handshake messages are at most [`HANDSHAKE_MAX`] bytes.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Sha256, Sha384};

use super::Connection;
use crate::error::{Error, Result};
use crate::sys;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The digest our challenges ask for.
const OUR_DIGEST: Digest = Digest::Sha256;
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// The random bytes of our challenge (Python 3.12+'s `MESSAGE_LENGTH`).
const NONCE: usize = 40;
/// The body of a Python 3.8-3.11 challenge: raw bytes, answered with a raw
/// HMAC-MD5; a shorter body is refused.
const LEGACY_CHALLENGE: usize = 20;
/// The length of a raw HMAC-MD5 answer (no `{digest}` prefix).
const MD5_LEN: usize = 16;
/// The longest `{digest}` name looked for (Python's `_MAX_DIGEST_LEN`).
const MAX_NAME: usize = 8;
/// The largest message accepted during the handshake.
pub(crate) const HANDSHAKE_MAX: usize = 256;
/// How long a peer may take over each handshake message: one that connects
/// and says nothing never holds up `accept` for longer.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The HMAC digests spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    /// The HMAC of `message` under `key`.
    fn mac(self, key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
            let mut mac = <M as KeyInit>::new_from_slice(key).map_err(|_| unusable_key())?;
            mac.update(message);
            Ok(mac.finalize().into_bytes().to_vec())
        }
        match self {
            Digest::Md5 => run::<Hmac<Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<Sha384>>(key, message),
        }
    }

    /// Whether `tag` is the HMAC of `message` under `key` (compared in
    /// constant time).
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> Result<bool> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> Result<bool> {
            let mut mac = <M as KeyInit>::new_from_slice(key).map_err(|_| unusable_key())?;
            mac.update(message);
            Ok(mac.verify_slice(tag).is_ok())
        }
        match self {
            Digest::Md5 => run::<Hmac<Md5>>(key, message, tag),
            Digest::Sha256 => run::<Hmac<Sha256>>(key, message, tag),
            Digest::Sha384 => run::<Hmac<Sha384>>(key, message, tag),
        }
    }
}

fn unusable_key() -> Error {
    Error::AuthenticationFailed("unusable authkey".into())
}

/// Splits a `{digest}` prefix off `message`: the digest and the rest.
///
/// # Errors
/// Without a prefix, or with a digest not spoken here (its name is said).
fn prefixed(message: &[u8]) -> std::result::Result<(Digest, &[u8]), String> {
    let close = message
        .strip_prefix(b"{")
        .and_then(|m| m.iter().take(MAX_NAME + 1).position(|&b| b == b'}'));
    let Some(close) = close else {
        return Err("no {digest} prefix".into());
    };
    let name = &message[1..1 + close];
    let digest = match name {
        b"md5" => Digest::Md5,
        b"sha256" => Digest::Sha256,
        b"sha384" => Digest::Sha384,
        _ => {
            return Err(format!(
                "unsupported digest {:?}",
                String::from_utf8_lossy(name)
            ))
        }
    };
    Ok((digest, &message[close + 2..]))
}

/// A fresh challenge body: our digest's prefix and random bytes.
fn challenge_body() -> Result<Vec<u8>> {
    let mut body = format!("{{{}}}", OUR_DIGEST.name()).into_bytes();
    let mut nonce = [0u8; NONCE];
    sys::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
    body.extend_from_slice(&nonce);
    Ok(body)
}

/// The answer to a peer's challenge `message` (with its `#CHALLENGE#`).
///
/// # Errors
/// [`Error::AuthenticationFailed`] if it is no challenge this end can answer.
fn answer(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    let refused = |why: String| Error::AuthenticationFailed(why);
    let body = message
        .strip_prefix(CHALLENGE)
        .ok_or_else(|| refused("the peer sent no challenge".into()))?;
    if body.len() < LEGACY_CHALLENGE {
        return Err(refused(format!(
            "the peer's challenge is too short ({} bytes)",
            body.len()
        )));
    }
    if body.len() == LEGACY_CHALLENGE {
        // A Python 3.8-3.11 peer: the raw HMAC-MD5.
        return Digest::Md5.mac(key, body);
    }
    let (digest, _) =
        prefixed(body).map_err(|why| refused(format!("the peer's challenge: {why}")))?;
    let mut reply = format!("{{{}}}", digest.name()).into_bytes();
    reply.extend(digest.mac(key, body)?);
    Ok(reply)
}

/// Checks the peer's answer to our challenge `body`: a raw HMAC-MD5 (16
/// bytes, from a Python 3.8-3.11 peer), or a `{digest}`-prefixed HMAC.
fn check(key: &[u8], body: &[u8], answer: &[u8]) -> Result<std::result::Result<(), String>> {
    let (digest, tag) = if answer.len() == MD5_LEN {
        (Digest::Md5, answer)
    } else {
        match prefixed(answer) {
            Ok(found) => found,
            Err(why) => return Ok(Err(why)),
        }
    };
    Ok(if digest.verify(key, body, tag)? {
        Ok(())
    } else {
        Err(format!("its {} digest was wrong", digest.name()))
    })
}

/// Which side of the handshake this end plays.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    /// Challenges first (the listener).
    Server,
    /// Answers first (the client).
    Client,
}

impl Side {
    /// What this end calls its peer in an error.
    fn peer(self) -> &'static str {
        match self {
            Side::Server => "client",
            Side::Client => "server",
        }
    }
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
    /// The body of the challenge this end sent, while its digest is awaited.
    sent: Vec<u8>,
    awaiting: Awaiting,
}

impl Handshake {
    /// Starts a handshake; the message to send first, if this side speaks first.
    pub(crate) fn new(key: &[u8], side: Side) -> Result<(Handshake, Option<Vec<u8>>)> {
        // An unusable key fails now rather than after the peer answered.
        Digest::Sha256.mac(key, b"")?;
        let mut h = Handshake {
            key: key.to_vec(),
            side,
            sent: Vec::new(),
            awaiting: Awaiting::Challenge,
        };
        let first = match side {
            Side::Server => Some(h.challenge()?),
            Side::Client => None,
        };
        Ok((h, first))
    }

    /// A fresh challenge, remembered; then the digest is awaited.
    fn challenge(&mut self) -> Result<Vec<u8>> {
        self.sent = challenge_body()?;
        self.awaiting = Awaiting::Digest;
        Ok([CHALLENGE, &self.sent].concat())
    }

    /// Takes the peer's next message.
    pub(crate) fn receive(&mut self, message: &[u8]) -> Step {
        let peer = self.side.peer();
        let refused = |why: String| Err(Error::AuthenticationFailed(why));
        let (send, outcome) = match self.awaiting {
            Awaiting::Digest => match check(&self.key, &self.sent, message) {
                Ok(Ok(())) => {
                    self.awaiting = Awaiting::Challenge;
                    (
                        Some(WELCOME.to_vec()),
                        Ok(matches!(self.side, Side::Client)),
                    )
                }
                Ok(Err(why)) => (
                    Some(FAILURE.to_vec()),
                    refused(format!(
                        "the {peer} does not know the authkey: {why} (wrong authkey?)"
                    )),
                ),
                Err(e) => (None, Err(e)),
            },
            Awaiting::Challenge => match answer(&self.key, message) {
                Ok(digest) => {
                    self.awaiting = Awaiting::Welcome;
                    (Some(digest), Ok(false))
                }
                Err(e) => (None, Err(e)),
            },
            Awaiting::Welcome if message != WELCOME => (
                None,
                refused(format!("the {peer} rejected our digest (wrong authkey?)")),
            ),
            Awaiting::Welcome => match self.side {
                Side::Server => (None, Ok(true)),
                Side::Client => match self.challenge() {
                    Ok(c) => (Some(c), Ok(false)),
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
/// connection is closed. (The manager's client runs it on a connection it
/// listed for the fork handler first.)
pub(crate) fn handshake(conn: &mut Connection, key: &[u8], side: Side) -> Result<()> {
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

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn refused(outcome: &Result<bool>) -> bool {
        matches!(outcome, Err(Error::AuthenticationFailed(_)))
    }

    /// A server's handshake and the body of its challenge.
    fn server(key: &[u8]) -> (Handshake, Vec<u8>) {
        let (h, first) = Handshake::new(key, Side::Server).unwrap();
        let first = first.unwrap();
        let body = first.strip_prefix(CHALLENGE).unwrap().to_vec();
        (h, body)
    }

    // HMACs computed by CPython 3.8 and 3.13 (`hmac.new(b'key', body, d)`).
    const MD5_LEGACY: &str = "8b9085844c5a293d3ffd786fc197c66e";
    const MD5_OF_SHA256_BODY: &str = "5085b49d877a9208947d55f90af280d5";
    const SHA256: &str = "95fb26dffa5c69c343bb72a7007fd1beceb481774d9b21f116a1c9577626afd3";
    const SHA384: &str = "9503d25c58b2c162781fef7ca132702e9cded04a747306832bb9a874b8c3572a589bca2e8925e66fcde4869a427ae425";

    #[test]
    fn the_same_key_authenticates_both_sides() {
        let (server, client) = exchange(b"key", b"key");
        assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
        // An empty key is a key too (HMAC takes any length).
        let (server, client) = exchange(b"", b"");
        assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
    }

    #[test]
    fn a_wrong_key_fails_on_both_sides() {
        let (server, client) = exchange(b"key", b"other key");
        let Err(Error::AuthenticationFailed(s)) = server else {
            panic!("{server:?}")
        };
        assert!(s.contains("the client does not know the authkey"), "{s}");
        let Err(Error::AuthenticationFailed(c)) = client else {
            panic!("{client:?}")
        };
        assert!(c.contains("the server rejected our digest"), "{c}");
    }

    #[test]
    fn our_challenge_is_pythons() {
        let (_, body) = server(b"key");
        assert_eq!(body.len(), b"{sha256}".len() + NONCE);
        assert!(body.starts_with(b"{sha256}"));
        let (_, other) = server(b"key");
        assert_ne!(body, other, "a fresh nonce each time");
    }

    #[test]
    fn answers_match_cpythons() {
        let legacy = [CHALLENGE, &[7; 20]].concat();
        assert_eq!(answer(b"key", &legacy).unwrap(), hex(MD5_LEGACY));
        for (digest, expected) in [("sha256", SHA256), ("sha384", SHA384), ("md5", "")] {
            let prefix = format!("{{{digest}}}");
            let challenge = [CHALLENGE, prefix.as_bytes(), &[7; 40]].concat();
            let reply = answer(b"key", &challenge).unwrap();
            assert!(reply.starts_with(prefix.as_bytes()), "{digest}");
            if !expected.is_empty() {
                assert_eq!(reply[prefix.len()..], hex(expected), "{digest}");
            }
        }
    }

    #[test]
    fn the_server_accepts_each_answer_python_gives() {
        // A 3.8-3.11 client: the raw HMAC-MD5 of the whole body.
        let (mut s, body) = server(b"key");
        let step = s.receive(&Digest::Md5.mac(b"key", &body).unwrap());
        assert_eq!(step.send.as_deref(), Some(WELCOME));
        assert!(matches!(step.outcome, Ok(false)));
        // The same, with CPython's numbers, and its `{sha256}` answer.
        for reply in [
            hex(MD5_OF_SHA256_BODY),
            [&b"{sha256}"[..], &hex(SHA256)].concat(),
        ] {
            let (mut s, _) = server(b"key");
            s.sent = [&b"{sha256}"[..], &[7; 40]].concat();
            assert_eq!(s.receive(&reply).send.as_deref(), Some(WELCOME));
        }
        // 3.12+: `{sha256}` (what it answers ours with), or another digest.
        let (mut s, body) = server(b"key");
        let reply = answer(b"key", &[CHALLENGE, &body].concat()).unwrap();
        assert!(reply.starts_with(b"{sha256}"));
        assert_eq!(s.receive(&reply).send.as_deref(), Some(WELCOME));
        for d in [Digest::Sha256, Digest::Sha384, Digest::Md5] {
            let (mut s, body) = server(b"key");
            let mut reply = format!("{{{}}}", d.name()).into_bytes();
            reply.extend(d.mac(b"key", &body).unwrap());
            let step = s.receive(&reply);
            assert_eq!(step.send.as_deref(), Some(WELCOME), "{d:?}");
            assert!(matches!(step.outcome, Ok(false)), "{d:?}");
        }
    }

    #[test]
    fn the_server_refuses_wrong_and_strange_answers() {
        let (_, body) = server(b"key");
        let good_md5 = Digest::Md5.mac(b"key", &body).unwrap();
        let wrong_md5 = Digest::Md5.mac(b"other", &body).unwrap();
        let wrong_sha = [
            &b"{sha256}"[..],
            &Digest::Sha256.mac(b"other", &body).unwrap(),
        ]
        .concat();
        let short_sha = [
            &b"{sha256}"[..],
            &Digest::Sha256.mac(b"key", &body).unwrap()[..31],
        ]
        .concat();
        let sha3 = [&b"{sha3_256}"[..], &[0; 32]].concat();
        for bad in [
            &b""[..],
            b"not a digest",
            &wrong_md5,
            &good_md5[..15],
            &[&good_md5[..], b"x"].concat(),
            &wrong_sha,
            &short_sha,
            &sha3,
            b"{sha256",
            b"{}",
            WELCOME,
        ] {
            // A fresh server each time, with the same body.
            let (mut s, _) = server(b"key");
            s.sent = body.clone();
            let step = s.receive(bad);
            assert_eq!(step.send.as_deref(), Some(FAILURE), "{bad:?}");
            assert!(refused(&step.outcome), "{bad:?}");
        }
        let (mut s, _) = server(b"key");
        s.sent = body.clone();
        assert_eq!(s.receive(&good_md5).send.as_deref(), Some(WELCOME));
    }

    #[test]
    fn the_client_speaks_to_a_legacy_server() {
        // A 3.8-3.11 server: a 20-byte challenge, raw MD5 both ways.
        let (mut c, _) = Handshake::new(b"key", Side::Client).unwrap();
        let step = c.receive(&[CHALLENGE, &[7; 20]].concat());
        assert_eq!(step.send.unwrap(), hex(MD5_LEGACY));
        assert!(matches!(step.outcome, Ok(false)));
        let step = c.receive(WELCOME);
        let ours = step.send.unwrap();
        assert!(ours.starts_with(b"#CHALLENGE#{sha256}"));
        assert!(matches!(step.outcome, Ok(false)));
        // It answers our `{sha256}` challenge with a raw HMAC-MD5.
        let body = &ours[CHALLENGE.len()..];
        let step = c.receive(&Digest::Md5.mac(b"key", body).unwrap());
        assert_eq!(step.send.as_deref(), Some(WELCOME));
        assert!(matches!(step.outcome, Ok(true)));
    }

    #[test]
    fn garbage_is_refused_at_every_step() {
        let (mut s, _) = server(b"key");
        let step = s.receive(b"not a digest");
        assert_eq!(step.send.as_deref(), Some(FAILURE));
        assert!(refused(&step.outcome));
        for bad in [
            &b"#CHALLENGE#{sha256}short"[..],
            b"#CHALLENGE#",
            &[CHALLENGE, &[7; 19]].concat(),
            &[CHALLENGE, &[7; 16]].concat(),
            &[CHALLENGE, &[7; 21]].concat(),
            &[CHALLENGE, b"{sha3_256}", &[7; 40]].concat(),
            &[CHALLENGE, b"{whirlpool}", &[7; 40]].concat(),
            &[b"#CHALLENGE!", &[7; 20][..]].concat(),
            WELCOME,
            b"",
        ] {
            let (mut client, _) = Handshake::new(b"key", Side::Client).unwrap();
            let step = client.receive(bad);
            assert!(step.send.is_none(), "{bad:?}");
            assert!(refused(&step.outcome), "{bad:?}");
        }
        let (mut client, _) = Handshake::new(b"key", Side::Client).unwrap();
        let challenge = [CHALLENGE, b"{sha256}", &[7; NONCE]].concat();
        assert!(matches!(client.receive(&challenge).outcome, Ok(false)));
        assert!(refused(&client.receive(FAILURE).outcome));
        // The server refuses anything but a welcome to its answer.
        let (mut s, body) = server(b"key");
        let md5 = Digest::Md5.mac(b"key", &body).unwrap();
        assert!(matches!(s.receive(&md5).outcome, Ok(false)));
        let step = s.receive(&[CHALLENGE, &[1; 20]].concat());
        assert!(matches!(step.outcome, Ok(false)));
        assert!(refused(&s.receive(b"#WELCOME#!").outcome));
    }

    /// The blocking handshake over a socket pair: both sides, a wrong key,
    /// and an oversized handshake message.
    #[test]
    #[cfg_attr(miri, ignore = "sockets are outside Miri")]
    fn blocking_handshakes_over_a_socket() {
        let run = |server_key: &'static [u8], client_key: &'static [u8]| {
            let (mut a, mut b) = super::super::Pipe::duplex().unwrap();
            a.set_max_message(super::super::DEFAULT_MAX_MESSAGE);
            let t = std::thread::spawn(move || handshake(&mut b, client_key, Side::Client));
            let s = handshake(&mut a, server_key, Side::Server);
            (s, t.join().unwrap(), a)
        };
        let (s, c, a) = run(b"key", b"key");
        assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");
        assert_eq!(a.max_message(), super::super::DEFAULT_MAX_MESSAGE);
        let (s, c, a) = run(b"key", b"not the key");
        assert!(matches!(s, Err(Error::AuthenticationFailed(_))), "{s:?}");
        assert!(matches!(c, Err(Error::AuthenticationFailed(_))), "{c:?}");
        assert!(a.closed());

        // A peer whose answer is over the handshake's limit.
        let (mut a, mut b) = super::super::Pipe::duplex().unwrap();
        let t = std::thread::spawn(move || {
            let challenge = b.recv_bytes().unwrap();
            assert!(challenge.starts_with(CHALLENGE));
            b.send_bytes(&[0; HANDSHAKE_MAX + 1]).unwrap();
            b
        });
        let e = handshake(&mut a, b"key", Side::Server).unwrap_err();
        let Error::AuthenticationFailed(why) = e else {
            panic!("{e:?}")
        };
        assert!(why.contains("exceeds the limit"), "{why}");
        assert!(a.closed());
        drop(t.join().unwrap());
    }
}
