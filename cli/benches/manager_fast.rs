//! One managed dict operation through the fast path (shared memory) beside
//! the same operation forced onto the socket: the same server, the same
//! client code, only the transport differs. (The raw Unix socket round
//! trip beside them, which needs an answering process, is in
//! `multiproc bench`'s manager rows.)

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use multiproc::manager::{Manager, Transport};

fn dict_ops(c: &mut Criterion) {
    let started = Manager::start().unwrap();
    let connect = |t| Manager::connect_with(started.address().clone(), started.authkey(), t);
    let fast = connect(Transport::Auto).unwrap();
    let socket = connect(Transport::Socket).unwrap();
    let fast_dict = fast.dict::<u64, u64>().unwrap();
    let socket_dict = socket.dict::<u64, u64>().unwrap();
    let mut g = c.benchmark_group("manager_dict_set");
    let mut i = 0u64;
    g.bench_function("fast path (shared memory)", |b| {
        b.iter(|| {
            i = (i + 1) % 1024;
            fast_dict.set(black_box(i), i).unwrap()
        })
    });
    g.bench_function("socket", |b| {
        b.iter(|| {
            i = (i + 1) % 1024;
            socket_dict.set(black_box(i), i).unwrap()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("manager_dict_get");
    g.bench_function("fast path (shared memory)", |b| {
        b.iter(|| fast_dict.get(black_box(&1)).unwrap())
    });
    g.bench_function("socket", |b| {
        b.iter(|| socket_dict.get(black_box(&1)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, dict_ops);
criterion_main!(benches);
