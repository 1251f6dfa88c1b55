//! Value, Array, RawValue and RawArray across real processes.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use common::{child, join, watchdog, TempName};
use multiproc::{Array, Error, Lock, LockError, RawArray, RawValue, Value};

const LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

#[test]
fn child_writes_are_seen_by_the_parent() {
    watchdog("value and array", LIMIT, || {
        let num = Value::new(0.0f64).unwrap();
        let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>()).unwrap();
        let point = Value::new(Point { x: 1.0, y: 2.0 }).unwrap();
        multiproc::scope(|s| {
            let c = child(s, || {
                num.set(std::f64::consts::PI).unwrap();
                for x in arr.lock().unwrap().iter_mut() {
                    *x = -*x;
                }
                point.lock().unwrap().y = -2.0;
            });
            assert_eq!(join(&c, LIMIT), 0);
            assert_eq!(num.get().unwrap(), std::f64::consts::PI);
            assert_eq!(
                arr.to_vec().unwrap(),
                (0..10).map(|x: i32| -x).collect::<Vec<_>>()
            );
            assert_eq!(point.get().unwrap(), Point { x: 1.0, y: -2.0 });
        });
    });
}

#[test]
fn array_ranges_and_bounds() {
    let a = Array::<u16>::new(5).unwrap();
    assert_eq!(a.len(), 5);
    assert_eq!(a.to_vec().unwrap(), [0; 5]);
    a.write(1, &[7, 8, 9]).unwrap();
    assert_eq!(a.read(1..4).unwrap(), [7, 8, 9]);
    assert_eq!(a.get(3).unwrap(), 9);
    a.set(4, 1).unwrap();
    assert_eq!(a.to_vec().unwrap(), [0, 7, 8, 9, 1]);
    assert!(matches!(
        a.get(5),
        Err(Error::OutOfBounds { index: 5, len: 5 })
    ));
    assert!(matches!(a.set(9, 0), Err(Error::OutOfBounds { .. })));
    assert!(matches!(
        a.write(3, &[1, 2, 3]),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        a.write(usize::MAX, &[1]),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(a.read(2..9), Err(Error::OutOfBounds { .. })));
    assert_eq!(
        a.to_vec().unwrap(),
        [0, 7, 8, 9, 1],
        "failed writes change nothing"
    );
    let empty = Array::<u64>::new(0).unwrap();
    assert!(empty.is_empty() && empty.to_vec().unwrap().is_empty());
    // Larger than an arena chunk: a segment of its own.
    let big = Array::<u64>::new(1 << 20).unwrap();
    big.set((1 << 20) - 1, 3).unwrap();
    assert_eq!(big.get((1 << 20) - 1).unwrap(), 3);
}

#[test]
fn cells_can_share_one_lock() {
    watchdog("shared lock", LIMIT, || {
        let lock = Lock::new().unwrap();
        let a = Value::with_lock(0u32, &lock).unwrap();
        let b = Array::from_slice_with_lock(&[0u32; 4], &lock).unwrap();
        let held = lock.lock().unwrap();
        multiproc::scope(|s| {
            let c = child(s, || {
                assert!(matches!(a.try_lock(), Err(LockError::WouldBlock)));
                assert!(matches!(b.try_lock(), Err(LockError::WouldBlock)));
            });
            assert_eq!(join(&c, LIMIT), 0);
            drop(held);
            // Both updated under one acquisition, as Python's lock= allows.
            let g = a.get_lock().lock().unwrap();
            assert!(matches!(b.try_lock(), Err(LockError::Deadlock)));
            drop(g);
            b.set(0, 1).unwrap();
            a.set(1).unwrap();
        });
    });
}

#[test]
fn named_cells_are_typed_and_shared() {
    watchdog("named cells", LIMIT, || {
        let v = TempName::new("cell-v");
        let a = TempName::new("cell-a");
        let value = Value::create(&v, Point { x: 0.5, y: 0.25 }).unwrap();
        let array = Array::create(&a, &[1u8, 2, 3]).unwrap();
        multiproc::scope(|s| {
            let c = child(s, || {
                let mine = Value::<Point>::open(&v).unwrap();
                mine.lock().unwrap().x = 9.0;
                let arr = Array::<u8>::open(&a).unwrap();
                assert_eq!(arr.len(), 3);
                arr.set(2, 30).unwrap();
                assert!(matches!(
                    Value::<[f64; 2]>::open(&v),
                    Err(Error::TypeMismatch { .. })
                ));
            });
            assert_eq!(join(&c, LIMIT), 0);
            assert_eq!(value.get().unwrap().x, 9.0);
            assert_eq!(array.to_vec().unwrap(), [1, 2, 30]);
            // create_or_open keeps what exists.
            assert_eq!(
                Value::create_or_open(&v, Point { x: 0.0, y: 0.0 })
                    .unwrap()
                    .get()
                    .unwrap()
                    .x,
                9.0
            );
            assert_eq!(Array::create_or_open(&a, &[0u8; 7]).unwrap().len(), 3);
            let fresh = TempName::new("cell-fresh");
            assert_eq!(
                Value::create_or_open(&fresh, 3i16).unwrap().get().unwrap(),
                3
            );
            let raw = TempName::new("cell-raw");
            let r = RawArray::create(&raw, &[5u32; 4]).unwrap();
            assert_eq!(RawArray::<u32>::open(&raw).unwrap().get(3).unwrap(), 5);
            assert!(matches!(
                Array::<u32>::open(&raw),
                Err(Error::KindMismatch { .. })
            ));
            drop(r);
            let rv = TempName::new("cell-rawv");
            RawValue::create(&rv, 11u64).unwrap();
            assert_eq!(RawValue::<u64>::open(&rv).unwrap().get(), 11);
        });
    });
}

#[test]
fn atomic_counters_across_processes_lose_nothing() {
    watchdog("atomics", LIMIT, || {
        const N: u64 = 100_000;
        let total = RawValue::new(0u64).unwrap();
        let slots = RawArray::<i32>::new(4).unwrap();
        let bump = || {
            for _ in 0..N {
                total.atomic().fetch_add(1, SeqCst);
            }
            slots.atomic(1).unwrap().fetch_sub(1, SeqCst);
        };
        multiproc::scope(|s| {
            let a = child(s, bump);
            let b = child(s, bump);
            assert_eq!(join(&a, LIMIT), 0);
            assert_eq!(join(&b, LIMIT), 0);
            assert_eq!(total.get(), 2 * N);
            assert_eq!(slots.read(..).unwrap(), [0, -2, 0, 0]);
            assert!(matches!(slots.atomic(4), Err(Error::OutOfBounds { .. })));
            assert_eq!(
                total.atomic().compare_exchange(2 * N, 7, SeqCst, SeqCst),
                Ok(2 * N)
            );
            total.set(1);
            assert_eq!(total.atomic().load(SeqCst), 1);
        });
    });
}

/// Raw cells written only with all-zero or all-one patterns.
#[derive(Clone)]
struct Patterns {
    pair: RawValue<[u32; 2]>,
    word: RawValue<u64>,
    wide: RawValue<[u64; 2]>,
    bytes: RawArray<[u8; 4]>,
}

impl Patterns {
    const ROUNDS: u32 = 200_000;

    fn write(&self, ones: bool) {
        let w = if ones { u64::MAX } else { 0 };
        for i in 0..Self::ROUNDS {
            self.pair.set([w as u32; 2]);
            if i % 2 == 0 {
                self.word.set(w);
            } else {
                // A read-modify-write between plain sets: still 0 or MAX.
                self.word.atomic().fetch_and(w, SeqCst);
            }
            self.wide.set([w; 2]);
            self.bytes.set(i as usize % 8, [w as u8; 4]).unwrap();
        }
    }

    /// Checks what can never tear; counts the `[u64; 2]` reads that did.
    fn read(&self) -> u32 {
        let mut torn_wide = 0;
        for _ in 0..Self::ROUNDS {
            let p = self.pair.get();
            assert_eq!(p[0], p[1], "a [u32; 2] never tears");
            let w = self.word.get();
            assert!(w == 0 || w == u64::MAX, "a u64 never tears: {w:#x}");
            let v = self.wide.get();
            assert!(v.iter().all(|&h| h == 0 || h == u64::MAX), "{v:?}");
            torn_wide += u32::from(v[0] != v[1]);
            for b in self.bytes.read(..).unwrap() {
                assert!(
                    b == [0; 4] || b == [0xff; 4],
                    "a [u8; 4] never tears: {b:?}"
                );
            }
        }
        torn_wide
    }
}

/// Two threads and two processes write raw cells while a thread and a
/// process read them, through `set`, `get`, `read` and `atomic` at once.
/// Values of one piece (up to 8 bytes) never tear; a `[u64; 2]` may tear
/// only between its halves. (That none of this is a data race is what Miri
/// checks in the library's unit test of the same copies.)
#[test]
fn raw_cells_of_one_piece_never_tear_under_concurrent_writers() {
    watchdog("raw cell tearing", LIMIT, || {
        let cells = Patterns {
            pair: RawValue::new([0u32; 2]).unwrap(),
            word: RawValue::new(0u64).unwrap(),
            wide: RawValue::new([0u64; 2]).unwrap(),
            bytes: RawArray::new(8).unwrap(),
        };
        let torn_wide = multiproc::scope(|ps| {
            let processes: Vec<_> = [false, true]
                .into_iter()
                .map(|ones| {
                    let cells = cells.clone();
                    child(ps, move || cells.write(ones))
                })
                .chain([{
                    let cells = cells.clone();
                    child(ps, move || {
                        cells.read();
                    })
                }])
                .collect();
            let torn_wide = std::thread::scope(|s| {
                for ones in [true, false] {
                    let cells = &cells;
                    s.spawn(move || cells.write(ones));
                }
                s.spawn(|| cells.read()).join().unwrap()
            });
            for p in &processes {
                assert_eq!(join(p, LIMIT), 0);
            }
            torn_wide
        });
        eprintln!("raw cells: a [u64; 2] read torn between its halves {torn_wide} times");
    });
}
