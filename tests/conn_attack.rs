//! Fourth-round attack on connections: hostile peers of a `Connection`,
//! a `Listener` and a client, at the frame and the handshake level.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{child, join, watchdog};
use multiproc::conn::frame;
use multiproc::{Connection, Error};

const LIMIT: Duration = Duration::from_secs(30);

/// A peer that announces a message far larger than memory and sends
/// nothing more. With a limit raised to let large messages through, a
/// typed `recv` must not allocate what the header claims before the bytes
/// come (an allocation that fails aborts the process): it reads on as
/// `recv_bytes` does, and ends when the peer does.
#[test]
fn a_huge_announced_message_is_not_allocated_by_a_typed_recv() {
    watchdog("huge announced message", LIMIT, || {
        multiproc::scope(|s| {
            let p = child(s, || {
                for typed in [false, true] {
                    let (raw, ours) = UnixStream::pair().unwrap();
                    let mut conn = Connection::from_socket(ours.into()).unwrap();
                    conn.set_max_message(usize::MAX);
                    (&raw).write_all(&frame::header(1 << 46).unwrap()).unwrap();
                    (&raw).write_all(&[7; 100]).unwrap();
                    drop(raw);
                    let r = if typed {
                        conn.recv::<Vec<u8>>().map(drop)
                    } else {
                        conn.recv_bytes().map(drop)
                    };
                    assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
                }
            });
            assert_eq!(join(&p, LIMIT), 0, "the receiver died");
        });
    });
}

/// Waiting on what can never become readable is an error at once, as in
/// Python (`OSError: handle is closed`, `connection is write-only`), not
/// a wait for ever: `poll` on a sending-only end, `wait` on a closed
/// connection (one closed by a framing error included) or on a sending-only end.
#[test]
fn waits_that_can_never_end_are_errors() {
    watchdog("waits that can never end", LIMIT, || {
        let (reader, writer) = multiproc::Pipe(false).unwrap();
        assert!(matches!(writer.poll(None), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            multiproc::conn::wait(&[&writer], None),
            Err(Error::InvalidArgument(_))
        ));
        let (raw, ours) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_socket(ours.into()).unwrap();
        conn.set_max_message(10);
        (&raw).write_all(&frame::header(11).unwrap()).unwrap();
        assert!(matches!(
            conn.recv_bytes(),
            Err(Error::MessageTooLarge { .. })
        ));
        assert!(conn.closed());
        assert!(conn.poll(None).is_err());
        assert!(multiproc::conn::wait(&[&conn], None).is_err());
        // One closed among open ones: still refused (Python raises too).
        assert!(multiproc::conn::wait(&[&reader, &conn], None).is_err());
        drop(raw);
    });
}

/// A listener moved into a child's closure (bound first, so that the
/// parent knows where to connect before the child runs) is the child's:
/// the parent's copy, dropped at the fork, must not remove the socket
/// file the child listens on. The child's drop removes it.
#[test]
fn a_listener_moved_into_a_child_keeps_its_socket_file() {
    watchdog("listener moved into a child", LIMIT, || {
        use multiproc::conn::{connect, Address, Listener};
        let path = std::env::temp_dir().join(format!("conn-attack-moved-{}", std::process::id()));
        let address = Address::Unix(path.clone());
        let listener = Listener::bind(&address, Some(b"key")).unwrap();
        let p = common::static_child(move || {
            let mut c = listener.accept().unwrap();
            let n: u32 = c.recv().unwrap();
            c.send(&(n + 1)).unwrap();
        });
        let mut c = connect(&address, Some(b"key")).expect("the socket file is there");
        c.send(&41u32).unwrap();
        assert_eq!(c.recv::<u32>().unwrap(), 42);
        assert_eq!(join(&p, LIMIT), 0);
        assert!(!path.exists(), "the child removed its socket file");
    });
}

/// A Unix address with a NUL byte is refused before anything is bound:
/// no socket file is left at the part of the path before the NUL.
#[test]
fn a_socket_path_with_a_nul_byte_binds_nothing() {
    use multiproc::conn::{Address, Listener};
    let before = std::env::temp_dir().join(format!("conn-attack-nul-{}", std::process::id()));
    let mut with_nul = before.clone().into_os_string();
    with_nul.push("\0tail");
    let r = Listener::bind(&Address::Unix(with_nul.into()), None);
    assert!(r.is_err());
    let left = before.exists();
    let _ = std::fs::remove_file(&before);
    assert!(!left, "a socket file was left at {}", before.display());
}

/// A long header announcing the largest length there is (`u64::MAX`),
/// with no limit set: the header's and the message's lengths must not
/// overflow when added (a panic in debug builds, a wrong slice in
/// release ones) in any receive, blocking, typed or async.
#[test]
fn the_largest_announced_length_overflows_nothing() {
    watchdog("largest announced length", LIMIT, || {
        for how in 0..3 {
            let (raw, ours) = UnixStream::pair().unwrap();
            let mut conn = Connection::from_socket(ours.into()).unwrap();
            conn.set_max_message(usize::MAX);
            (&raw).write_all(&[0xff; frame::LONG_HEADER_LEN]).unwrap();
            (&raw).write_all(&[7; 100]).unwrap();
            drop(raw);
            let r = match how {
                0 => conn.recv::<u8>().map(drop),
                1 => conn.recv_bytes().map(drop),
                _ => common::current_thread()
                    .block_on(conn.recv_bytes_async())
                    .map(drop),
            };
            assert!(
                matches!(
                    r,
                    Err(Error::ConnectionClosed | Error::MessageTooLarge { .. })
                ),
                "{how}: {r:?}"
            );
        }
    });
}

/// A recursive type, nested as deep as a peer likes.
#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)] // only ever decoded
enum Tree {
    Leaf,
    Node(Box<Tree>),
}

/// A hostile peer nests a recursive type a million levels deep in a
/// 1 MiB message: a typed receive must refuse it (Python's unpickler
/// raises `RecursionError`), not overflow the stack and abort the process.
#[test]
fn a_deeply_nested_message_does_not_overflow_the_stack() {
    watchdog("deeply nested message", LIMIT, || {
        multiproc::scope(|s| {
            let p = child(s, || {
                let (raw, ours) = UnixStream::pair().unwrap();
                let mut conn = Connection::from_socket(ours.into()).unwrap();
                let mut message = vec![1u8; 1 << 20];
                message.push(0);
                let writer = std::thread::spawn(move || {
                    let mut stream = Vec::new();
                    frame::push(&mut stream, &message).unwrap();
                    (&raw).write_all(&stream).unwrap();
                    raw
                });
                let r = conn.recv::<Tree>();
                drop(writer.join().unwrap());
                assert!(matches!(r, Err(Error::Deserialize(_))), "{r:?}");
            });
            assert_eq!(join(&p, LIMIT), 0, "the receiver died");
        });
    });
}

/// A `Tree` nested `.0` levels deep, encoded by hand (postcard writes a
/// tuple of bytes as they are), so that a queue can carry any depth.
#[derive(Debug, PartialEq)]
struct Nested(usize);

impl serde::Serialize for Nested {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0 + 1)?;
        for _ in 0..self.0 {
            t.serialize_element(&1u8)?;
        }
        t.serialize_element(&0u8)?;
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for Nested {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut tree = <Tree as serde::Deserialize>::deserialize(d)?;
        let mut depth = 0;
        while let Tree::Node(inner) = tree {
            tree = *inner;
            depth += 1;
        }
        Ok(Nested(depth))
    }
}

/// As above for a queue's item, which another process put: a million
/// levels are refused by the getter, a few come through.
#[test]
fn a_deeply_nested_queue_item_does_not_overflow_the_stack() {
    watchdog("deeply nested queue item", LIMIT, || {
        let q = multiproc::Queue::<Nested>::with_capacity(0, 4 << 20).unwrap();
        multiproc::scope(|s| {
            let p = child(s, || {
                q.put(Nested(10)).unwrap();
                q.put(Nested(1 << 20)).unwrap();
                assert_eq!(q.get().unwrap(), Nested(10));
                let r = q.get();
                assert!(matches!(r, Err(Error::Deserialize(_))), "{r:?}");
            });
            assert_eq!(join(&p, LIMIT), 0, "the getter died");
        });
    });
}
