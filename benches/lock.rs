//! Hot paths of the shared layer beside their raw OS baselines, through the
//! same traits as `multiproc bench` so both sides run the same code path.
//! Single-process figures; the cross-process ones are in `multiproc bench`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use multiproc::baseline::{BenchCounter, BenchMutex, RawAtomic, RawRobustMutex};
use multiproc::{Lock, RawValue, Value};

fn lock_unlock(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_uncontended");
    let ours = Lock::new().unwrap();
    let raw = RawRobustMutex::new().unwrap();
    g.bench_function("multiproc::Lock", |b| {
        b.iter(|| black_box(&ours).lock_unlock())
    });
    g.bench_function("robust pthread mutex", |b| {
        b.iter(|| black_box(&raw).lock_unlock())
    });
    g.finish();
}

fn increments(c: &mut Criterion) {
    let mut g = c.benchmark_group("increment");
    let value = Value::new(0u64).unwrap();
    let raw_locked = RawRobustMutex::new().unwrap();
    let raw_value = RawValue::new(0u64).unwrap();
    let raw_atomic = RawAtomic::new().unwrap();
    g.bench_function("Value (locked)", |b| b.iter(|| black_box(&value).incr()));
    g.bench_function("robust mutex + u64", |b| {
        b.iter(|| black_box(&raw_locked).incr())
    });
    g.bench_function("RawValue::atomic", |b| {
        b.iter(|| black_box(&raw_value).incr())
    });
    g.bench_function("AtomicU64 in shared memory", |b| {
        b.iter(|| black_box(&raw_atomic).incr())
    });
    g.finish();
}

criterion_group!(benches, lock_unlock, increments);
criterion_main!(benches);
