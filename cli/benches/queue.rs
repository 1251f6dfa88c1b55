//! The queue's two paths beside their raw baselines, in one process (the
//! cross-process figures are `multiproc bench`'s `queue_items_2proc` and
//! `queue_bytes_1mib` rows):
//! - small items: `Queue<u64>` put + get beside one 8-byte write + read on
//!   a Unix socket pair, and batches of 64 through `put_many` + `get_many`;
//! - 1 MiB payloads, the reader touching every byte: `Queue<Bytes>`
//!   (`put_with` + `get_with`, in place), `Queue<Vec<u8>>` and a queue of a
//!   serde byte string (what `serde_bytes::ByteBuf` does), beside a raw Unix
//!   socket (a reader thread takes each message and answers one byte) and a
//!   plain copy of the payload (the floor).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use multiproc::queue::{Bytes, Queue};
use multiproc_cli::baseline::{BenchStream, RawSocketStream};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MIB: usize = 1 << 20;

fn touch(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .fold(0u64, u64::wrapping_add)
}

/// Bytes as one serde byte string (what `serde_bytes::ByteBuf` does).
struct ByteString(Vec<u8>);

impl Serialize for ByteString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteString, E> {
                Ok(ByteString(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteString, E> {
                Ok(ByteString(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

fn small_items(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_small_items");
    g.throughput(Throughput::Elements(1));
    let q = Queue::<u64>::new().unwrap();
    let raw = RawSocketStream::new().unwrap();
    g.bench_function("Queue<u64> put + get", |b| {
        b.iter(|| {
            q.put(black_box(7)).unwrap();
            black_box(q.get().unwrap())
        })
    });
    g.bench_function("Unix socket 8-byte write + read", |b| {
        b.iter(|| {
            raw.produce(black_box(7));
            black_box(raw.consume())
        })
    });
    // Per item, 64 at a time: one lock hold a side per batch.
    g.throughput(Throughput::Elements(64));
    g.bench_function("Queue<u64> put_many + get_many of 64", |b| {
        b.iter(|| {
            q.put_many(black_box(0..64u64)).unwrap();
            black_box(q.get_many(64).unwrap())
        })
    });
    g.finish();
}

fn payloads(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_1mib");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.sample_size(30);
    let data: Vec<u8> = (0..MIB).map(|k| (k % 251) as u8).collect();

    let bytes = Queue::<Bytes>::with_capacity(0, 4 * (MIB + 4)).unwrap();
    g.bench_function("Queue<Bytes> put_with + get_with", |b| {
        b.iter(|| {
            bytes
                .put_with(MIB, |frame| frame.copy_from_slice(&data))
                .unwrap();
            black_box(bytes.get_with(touch).unwrap())
        })
    });
    g.bench_function("Queue<Bytes> put_bytes + get_bytes", |b| {
        b.iter(|| {
            bytes.put_bytes(&data).unwrap();
            black_box(touch(&bytes.get_bytes().unwrap()))
        })
    });
    let vecs = Queue::<Vec<u8>>::with_capacity(0, 4 * (MIB + 8)).unwrap();
    g.bench_function("Queue<Vec<u8>> put + get (serde)", |b| {
        b.iter(|| {
            vecs.put(data.clone()).unwrap();
            black_box(touch(&vecs.get().unwrap()))
        })
    });
    let strings = Queue::<ByteString>::with_capacity(0, 4 * (MIB + 8)).unwrap();
    g.bench_function("Queue<ByteBuf-like> put + get (serde bytes)", |b| {
        b.iter(|| {
            strings.put(ByteString(data.clone())).unwrap();
            black_box(touch(&strings.get().unwrap().0))
        })
    });

    // The raw socket: a reader thread takes each message whole, touches
    // it and answers one byte.
    let (mut tx, mut rx) = UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; MIB];
        while rx.read_exact(&mut buf).is_ok() {
            black_box(touch(&buf));
            if rx.write_all(&[1]).is_err() {
                break;
            }
        }
    });
    g.bench_function("raw Unix socket, reader thread", |b| {
        let mut ack = [0u8; 1];
        b.iter(|| {
            tx.write_all(&data).unwrap();
            tx.read_exact(&mut ack).unwrap();
        })
    });
    drop(tx);
    reader.join().unwrap();

    let mut copy = vec![0u8; MIB];
    g.bench_function("copy + touch (floor)", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&data));
            black_box(touch(&copy))
        })
    });
    g.finish();
}

criterion_group!(benches, small_items, payloads);
criterion_main!(benches);
