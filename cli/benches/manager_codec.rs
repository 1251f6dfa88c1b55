//! The manager server's work on a batch, in this process (no socket):
//! decoding the request's pickle, applying it, encoding the reply, for a
//! 1000-item `update` of new keys and a 1000-key `get_many`.

use std::time::{Duration, Instant};

use criterion::BatchSize;
use criterion::{criterion_group, Criterion, Throughput};
use multiproc::manager::bench::{bare_updates, Codec, IntBatches};

const BATCH: i64 = 1000;
/// Batches of new keys before the dict is cleared (at most 100k items).
const ROUNDS: i64 = 100;

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("manager_codec");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut codec = Codec::new();
    let updates: Vec<Vec<u8>> = (0..ROUNDS)
        .map(|r| codec.update_request((0..BATCH).map(|i| (r * BATCH + i, i))))
        .collect();
    let clear = codec.clear_request();
    g.bench_function("update_1000", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                let round = (i % ROUNDS as u64) as usize;
                if round == 0 {
                    codec.answer(&clear);
                }
                let t = Instant::now();
                std::hint::black_box(codec.answer(&updates[round]));
                spent += t.elapsed();
            }
            spent
        })
    });
    let mut codec = Codec::new();
    codec.answer(&codec.update_request((0..BATCH * 10).map(|i| (i, i))));
    let req = codec.get_many_request((0..BATCH).map(|i| i * 7));
    g.bench_function("get_many_1000", |b| b.iter(|| codec.answer(&req)));
    let req = codec.get_batch_request((0..BATCH).map(|i| i * 7));
    g.bench_function("batch_of_1000_gets", |b| b.iter(|| codec.answer(&req)));
    let mut codec = Codec::new();
    let set = codec.set_request(7, 7);
    let get = codec.get_request(7);
    g.throughput(Throughput::Elements(1));
    g.bench_function("single_set", |b| b.iter(|| codec.answer(&set)));
    g.bench_function("single_get", |b| b.iter(|| codec.answer(&get)));
    g.finish();
}

/// A dict growing to the size of the bench's batched rows (200 batches of
/// 1000 new keys, in a new dict each time): the server answering the
/// requests, beside the same items put into the server's map type alone
/// (no request, no decoding). The second is the floor of the first: the
/// dict's own cost at this size, mostly cache misses.
fn growth(c: &mut Criterion) {
    const BATCHES: i64 = 200;
    let mut g = c.benchmark_group("manager_dict_growth");
    g.throughput(Throughput::Elements((BATCHES * BATCH) as u64));
    g.sample_size(10);
    g.bench_function("server_update_200k", |b| {
        b.iter_batched(
            || {
                let codec = Codec::new();
                let requests: Vec<Vec<u8>> = (0..BATCHES)
                    .map(|b| codec.update_request((0..BATCH).map(|i| (b * BATCH + i, i))))
                    .collect();
                (codec, requests)
            },
            |(mut codec, requests)| {
                for r in &requests {
                    std::hint::black_box(codec.answer(r));
                }
                codec
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("bare_map_200k", |b| {
        b.iter_batched(
            || IntBatches::new(BATCHES, BATCH),
            bare_updates,
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, batches, growth);

/// `MANAGER_CODEC_PROFILE=update|get_many|batch|single` runs 100 batches of that kind
/// (`single`: 100,000 single `__setitem__` requests) and nothing else (for `valgrind --tool=callgrind`: instructions per
/// item are the count under `Codec::answer` divided by 100,000).
/// `client_update|client_get_many|client_single` run the same with the
/// client's side too: its count is the one under `Codec::client_*`.
fn main() {
    match std::env::var("MANAGER_CODEC_PROFILE").as_deref() {
        Ok("update") => {
            let mut codec = Codec::new();
            let updates: Vec<Vec<u8>> = (0..ROUNDS)
                .map(|r| codec.update_request((0..BATCH).map(|i| (r * BATCH + i, i))))
                .collect();
            for u in &updates {
                std::hint::black_box(codec.answer(u));
            }
        }
        Ok("get_many") => {
            let mut codec = Codec::new();
            codec.answer(&codec.update_request((0..BATCH * 10).map(|i| (i, i))));
            let req = codec.get_many_request((0..BATCH).map(|i| i * 7));
            for _ in 0..ROUNDS {
                std::hint::black_box(codec.answer(&req));
            }
        }
        Ok("batch") => {
            let mut codec = Codec::new();
            codec.answer(&codec.update_request((0..BATCH * 10).map(|i| (i, i))));
            let req = codec.get_batch_request((0..BATCH).map(|i| i * 7));
            for _ in 0..ROUNDS {
                std::hint::black_box(codec.answer(&req));
            }
        }
        Ok("single") => {
            let mut codec = Codec::new();
            let sets: Vec<Vec<u8>> = (0..ROUNDS * BATCH)
                .map(|i| codec.set_request(i % 1000, i))
                .collect();
            for s in &sets {
                std::hint::black_box(codec.answer(s));
            }
        }
        // The client's side of the same calls: the requests as a Rust
        // `DictProxy` makes them (serde, then the pickle), and the replies
        // decoded as it decodes them (count under `Codec::client_*`).
        Ok("client_update") => {
            let mut codec = Codec::new();
            for r in 0..ROUNDS {
                let req = codec.client_update((0..BATCH).map(|i| (r * BATCH + i, i)));
                let reply = codec.answer(&req);
                codec.client_reply::<()>(&reply);
            }
        }
        Ok("client_get_many") => {
            let mut codec = Codec::new();
            codec.answer(&codec.update_request((0..BATCH * 10).map(|i| (i, i))));
            let keys: Vec<i64> = (0..BATCH).map(|i| i * 7).collect();
            for _ in 0..ROUNDS {
                let req = codec.client_get_many(&keys);
                let reply = codec.answer(&req);
                let found: Vec<Option<i64>> = codec.client_reply(&reply);
                std::hint::black_box(found);
            }
        }
        Ok("client_single") => {
            let mut codec = Codec::new();
            for i in 0..ROUNDS * BATCH {
                let req = codec.client_set(i % 1000, i);
                let reply = codec.answer(&req);
                codec.client_reply::<()>(&reply);
            }
        }
        _ => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
