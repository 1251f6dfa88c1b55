//! Hot paths of the shared layer beside their raw OS baselines, through the
//! same traits as `multiproc bench` so both sides run the same code path.
//! Single-process figures (the manager's server is its own process); the
//! cross-process ones (ping-pongs, contended counters) are in `multiproc bench`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use multiproc::{Event, Lock, RawValue, Semaphore, Value};
use multiproc_cli::baseline::{
    BenchCounter, BenchMutex, BenchSemaphore, PosixSemaphore, RawAtomic, RobustPthreadMutex,
};

fn lock_unlock(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_uncontended");
    let ours = Lock::new().unwrap();
    let raw = RobustPthreadMutex::new().unwrap();
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
    let raw_locked = RobustPthreadMutex::new().unwrap();
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

fn semaphore(c: &mut Criterion) {
    let mut g = c.benchmark_group("semaphore_uncontended");
    let ours = Semaphore::new(1).unwrap();
    let raw = PosixSemaphore::new(1).unwrap();
    g.bench_function("multiproc::Semaphore", |b| {
        b.iter(|| black_box(&ours).acquire_release())
    });
    g.bench_function("POSIX sem_t", |b| {
        b.iter(|| black_box(&raw).acquire_release())
    });
    g.finish();
}

fn event(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    let e = Event::new().unwrap();
    g.bench_function("set + wait (already set) + clear", |b| {
        b.iter(|| {
            e.set();
            e.wait();
            e.clear();
        })
    });
    g.finish();
}

fn queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    let q = multiproc::Queue::<u64>::new().unwrap();
    g.bench_function("put + get, one process", |b| {
        b.iter(|| {
            q.put(black_box(7)).unwrap();
            black_box(q.get().unwrap())
        })
    });
    g.finish();
}

fn manager(c: &mut Criterion) {
    let mut g = c.benchmark_group("manager_round_trip");
    let m = multiproc::manager::Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let raw = multiproc_cli::baseline::RawSocketPingPong::new().unwrap();
    g.bench_function("DictProxy::set", |b| {
        b.iter(|| d.set(black_box(1), 2).unwrap())
    });
    g.bench_function("DictProxy::set_many (100 per round trip)", |b| {
        b.iter(|| d.set_many((0..100).map(|i| (i, i))).unwrap())
    });
    // The floor: the same round trip on a raw socket, answered by a thread
    // here (criterion runs in one process).
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            use multiproc_cli::baseline::BenchPingPong;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                raw.answer();
            }
        });
        g.bench_function("raw Unix socket round trip", |b| {
            use multiproc_cli::baseline::BenchPingPong;
            b.iter(|| raw.ask())
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // One last ask lets the answering thread see `stop`.
        use multiproc_cli::baseline::BenchPingPong;
        raw.ask();
    });
    g.finish();
}

criterion_group!(
    benches,
    lock_unlock,
    increments,
    semaphore,
    event,
    queue,
    manager
);
criterion_main!(benches);
