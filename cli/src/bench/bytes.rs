//! 1 MiB payloads from a forked producer to this process, the reader
//! touching every byte: `Queue<Bytes>` (written into the ring, read in
//! place) beside a raw Unix socket carrying the same messages, and the
//! serde queues of bytes (`Vec<u8>`, and a byte-string newtype) in the
//! same run.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use multiproc::queue::{Bytes, Queue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::measure::{paired, Size};
use super::Measured;

/// The payload.
const MIB: usize = 1 << 20;

/// Reads every byte of a payload (as a reader that uses it must): its
/// words summed.
pub(crate) fn touch(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .fold(0u64, u64::wrapping_add)
}

/// A payload numbered `i`: its first word says which.
fn payload(i: u64) -> Vec<u8> {
    let mut p: Vec<u8> = (0..MIB).map(|k| (k % 251) as u8).collect();
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn number(bytes: &[u8]) -> u64 {
    bytes.get(..8).map_or(u64::MAX, |w| {
        u64::from_le_bytes(w.try_into().expect("8 bytes"))
    })
}

/// Bytes per second of `n` payloads from a forked `produce(i)` to
/// `consume()` (which returns the payload's number and its touched sum).
fn bytes_per_sec(
    n: u64,
    produce: impl Fn(u64) + Sync,
    mut consume: impl FnMut() -> Result<(u64, u64)>,
) -> Result<f64> {
    multiproc::scope(|s| {
        let mut producer = s
            .process(|| {
                for i in 0..n {
                    produce(i);
                }
            })
            .daemon(true);
        let t = Instant::now();
        producer.start()?;
        let mut sums = 0u64;
        for i in 0..n {
            let (got, sum) = consume()?;
            if got != i {
                bail!("payload {i} arrived as {got}");
            }
            sums = sums.wrapping_add(sum);
        }
        let rate = (n as usize * MIB) as f64 / t.elapsed().as_secs_f64();
        std::hint::black_box(sums);
        if producer.join_timeout(Duration::from_secs(120))? != Some(0) {
            bail!("producer failed");
        }
        Ok(rate)
    })
}

/// Bytes as one serde byte string (what `serde_bytes::ByteBuf` does).
struct ByteString(Vec<u8>);

impl Serialize for ByteString {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<ByteString, E> {
                Ok(ByteString(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<ByteString, E> {
                Ok(ByteString(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// A ring of four payloads and their length words: no frame ever
/// straddles its end.
const RING: usize = 4 * (MIB + 4);

pub(super) fn queue_bytes_1mib(size: &Size) -> Result<Measured> {
    let n = size.pick(4_000, 1_000);
    let data = payload(0);
    let ours = Queue::<Bytes>::with_capacity(0, RING)?;
    let (tx, rx) = UnixStream::pair()?;
    // The raw producer's message, numbered in place: the socket's one copy
    // of each message is the kernel's, as the queue's is into its ring.
    let message = Mutex::new(data.clone());
    let mut buf = vec![0u8; MIB];
    let (a, b) = paired(
        size,
        || {
            bytes_per_sec(
                n,
                |i| {
                    let _ = ours.put_with(MIB, |frame| {
                        frame.copy_from_slice(&data);
                        frame[..8].copy_from_slice(&i.to_le_bytes());
                    });
                },
                || Ok(ours.get_with(|frame| (number(frame), touch(frame)))?),
            )
        },
        || {
            bytes_per_sec(
                n,
                |i| {
                    let mut message = message.lock().unwrap_or_else(PoisonError::into_inner);
                    message[..8].copy_from_slice(&i.to_le_bytes());
                    let _ = (&tx).write_all(&message);
                },
                || {
                    (&rx).read_exact(&mut buf)?;
                    Ok((number(&buf), touch(&buf)))
                },
            )
        },
    )?;
    // The serde queues of bytes, fewer payloads (they are slower).
    let few = (n / 10).max(20);
    let vec_queue = Queue::<Vec<u8>>::with_capacity(0, RING)?;
    let string_queue = Queue::<ByteString>::with_capacity(0, RING)?;
    let (c, d) = paired(
        size,
        || {
            bytes_per_sec(
                few,
                |i| {
                    let mut p = data.clone();
                    p[..8].copy_from_slice(&i.to_le_bytes());
                    let _ = vec_queue.put(p);
                },
                || {
                    let p = vec_queue.get()?;
                    Ok((number(&p), touch(&p)))
                },
            )
        },
        || {
            bytes_per_sec(
                few,
                |i| {
                    let mut p = data.clone();
                    p[..8].copy_from_slice(&i.to_le_bytes());
                    let _ = string_queue.put(ByteString(p));
                },
                || {
                    let p = string_queue.get()?.0;
                    Ok((number(&p), touch(&p)))
                },
            )
        },
    )?;
    #[cfg_attr(not(feature = "peers"), allow(unused_mut))]
    let mut baselines = vec![
        ("raw Unix socket, same 1 MiB messages", b),
        ("Queue<Vec<u8>>, serde", c),
        ("Queue of a serde byte string (ByteBuf)", d),
    ];
    #[cfg(feature = "peers")]
    super::scenarios::peers::payloads(size, n, &mut baselines)?;
    Ok((a, baselines))
}
