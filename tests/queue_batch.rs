//! `put_many` / `get_many`: batches moved per lock hold. In one process
//! (empty batches, deadlines at zero and `Duration::MAX`, a batch larger
//! than the ring, items that stop a batch), and across real processes,
//! more of them than CPUs, with producers and consumers SIGKILLed at
//! random points and inside a batch: a run of items is visible whole or
//! not at all, no item is torn or got twice, and the ring stays usable.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::OnceLock;
use std::time::Duration;

use common::{child, join, wait_until, watchdog};
use multiproc::queue::{JoinableQueue, PutError, PutManyError};
use multiproc::{Error, Queue, RawArray, RawValue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const LIMIT: Duration = Duration::from_secs(120);

/// An item that carries its own check: a torn or shifted frame never
/// decodes to one that passes [`Tagged::whole`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Tagged {
    producer: u32,
    seq: u32,
    check: u64,
}

impl Tagged {
    fn new(producer: u32, seq: u32) -> Tagged {
        Tagged {
            producer,
            seq,
            check: Self::sum(producer, seq),
        }
    }
    fn sum(producer: u32, seq: u32) -> u64 {
        (u64::from(producer) << 32 | u64::from(seq)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
    }
    fn whole(&self) -> bool {
        self.check == Self::sum(self.producer, self.seq)
    }
}

#[test]
fn batches_round_trip_in_order() {
    let q = Queue::<u64>::new().unwrap();
    q.put_many(0..1000u64).unwrap();
    assert_eq!(q.len(), 1000);
    let mut got = Vec::new();
    while got.len() < 1000 {
        let batch = q.get_many(99).unwrap();
        assert!(!batch.is_empty() && batch.len() <= 99);
        got.extend(batch);
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    // Batches and single items mix, in order.
    q.put(1).unwrap();
    q.put_many([2, 3].iter()).unwrap();
    q.put(4).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_many(usize::MAX).unwrap(), vec![2, 3, 4]);
}

#[test]
fn empty_batches_and_deadlines() {
    let q = Queue::<u64>::new().unwrap();
    // Empty batches: nothing put, nothing taken, no waiting.
    q.put_many(std::iter::empty::<u64>()).unwrap();
    q.try_put_many(Vec::<u64>::new()).unwrap();
    q.put_many_timeout(&[] as &[u64], Duration::ZERO).unwrap();
    assert!(q.get_many(0).unwrap().is_empty());
    assert!(q.try_get_many(0).unwrap().is_empty());
    assert!(q.get_many_timeout(0, Duration::ZERO).unwrap().is_empty());
    assert_eq!(q.len(), 0);
    // Nothing there.
    assert!(matches!(q.try_get_many(5), Err(Error::Empty)));
    assert!(matches!(
        q.get_many_timeout(5, Duration::ZERO),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        q.get_many_timeout(5, Duration::from_millis(5)),
        Err(Error::Timeout)
    ));
    // Deadlines too far to represent mean forever.
    q.put_many_timeout(0..10u64, Duration::MAX).unwrap();
    assert_eq!(
        q.get_many_timeout(100, Duration::MAX).unwrap(),
        (0..10).collect::<Vec<_>>()
    );
    q.put_many_timeout(0..3u64, Duration::ZERO).unwrap();
    assert_eq!(q.try_get_many(2).unwrap(), vec![0, 1]);
    assert_eq!(q.get_many_timeout(2, Duration::ZERO).unwrap(), vec![2]);
}

#[test]
fn a_batch_larger_than_the_ring_goes_in_runs() {
    watchdog("batch larger than the ring", LIMIT, || {
        let q = Queue::<u64>::with_capacity(0, 256).unwrap();
        // Without waiting: the items that fit, from the start.
        let e = q.try_put_many(0..1000u64).unwrap_err();
        assert!(matches!(e.error, PutError::Full(())), "{e}");
        assert!(e.put > 0 && e.put < 1000);
        assert_eq!(q.len(), e.put);
        assert!(matches!(
            q.put_many_timeout(0..1000u64, Duration::from_millis(10)),
            Err(PutManyError {
                put: 0,
                error: PutError::Timeout(())
            })
        ));
        assert_eq!(
            q.get_many(usize::MAX).unwrap(),
            (0..e.put as u64).collect::<Vec<_>>()
        );
        // Waiting: all of it, as a consumer makes room.
        let q = &q;
        std::thread::scope(|s| {
            let consumer = s.spawn(|| {
                let mut got = Vec::new();
                while got.len() < 100_000 {
                    got.extend(q.get_many(1 + got.len() % 50).unwrap());
                }
                got
            });
            q.put_many(0..100_000u64).unwrap();
            assert_eq!(consumer.join().unwrap(), (0..100_000).collect::<Vec<_>>());
        });
    });
}

#[test]
fn the_item_limit_holds_for_batches() {
    let q = Queue::<u64>::bounded(5).unwrap();
    let e = q.try_put_many(0..10u64).unwrap_err();
    assert_eq!(e.put, 5);
    assert!(matches!(e.error, PutError::Full(())));
    assert!(q.is_full());
    assert_eq!(q.get_many(3).unwrap(), vec![0, 1, 2]);
    q.try_put_many([7, 8, 9]).unwrap();
    let e = q.try_put_many([10, 11].iter()).unwrap_err();
    assert_eq!(e.put, 0, "{e}");
    assert_eq!(q.get_many(10).unwrap(), vec![3, 4, 7, 8, 9]);
}

#[test]
fn an_item_that_cannot_go_in_stops_the_batch_there() {
    let q = Queue::<Vec<u8>>::with_capacity(0, 256).unwrap();
    let items = vec![vec![1u8; 10], vec![2; 10], vec![3; 1000], vec![4; 10]];
    let e = q.put_many(&items).unwrap_err();
    assert_eq!(e.put, 2);
    assert!(
        matches!(e.error, PutError::TooLarge { max: 252, .. }),
        "{e}"
    );
    assert_eq!(q.get_many(10).unwrap(), items[..2].to_vec());
    // The same through `?`: the count is dropped, the cause kept.
    let err: Error = q.put_many(&items[2..]).unwrap_err().into();
    assert!(matches!(err, Error::MessageTooLarge { .. }));

    // Closed: by this handle, and for everyone.
    q.close();
    let e = q.put_many(&items[..1]).unwrap_err();
    assert!(matches!(
        e,
        PutManyError {
            put: 0,
            error: PutError::Closed(())
        }
    ));
    let other = q.clone();
    let fresh = Queue::<Vec<u8>>::with_capacity(0, 256).unwrap();
    fresh.put_many(&items[..2]).unwrap();
    fresh.close_all().unwrap();
    assert!(matches!(
        fresh.put_many(&items[..1]),
        Err(PutManyError {
            put: 0,
            error: PutError::Closed(())
        })
    ));
    assert_eq!(fresh.get_many(10).unwrap().len(), 2);
    assert!(matches!(fresh.get_many(10), Err(Error::Closed)));
    drop(other);
}

/// A `u32` that refuses to decode 13 and panics decoding 666.
#[derive(Debug, PartialEq)]
struct Picky(u32);

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

/// Set in a child that must hang while decoding (or encoding) [`HANG`]:
/// the flag it raises there, in shared memory.
static HANG_HERE: OnceLock<RawValue<u32>> = OnceLock::new();
const HANG: u32 = 4242;

/// In a child that set [`HANG_HERE`]: says so, and never returns.
fn hang_if_asked() {
    if let Some(inside) = HANG_HERE.get() {
        inside.atomic().store(1, SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        match v {
            13 => Err(serde::de::Error::custom("unlucky")),
            666 => panic!("decoding 666"),
            v => {
                if v == HANG {
                    hang_if_asked();
                }
                Ok(Picky(v))
            }
        }
    }
}

#[test]
fn a_bad_item_ends_the_batch_before_it_and_is_then_consumed() {
    let q = Queue::<Picky>::new().unwrap();
    q.put_many([Picky(1), Picky(13), Picky(2)]).unwrap();
    assert_eq!(q.get_many(10).unwrap(), vec![Picky(1)]);
    assert!(matches!(q.get_many(10), Err(Error::Deserialize(_))));
    assert_eq!(q.get_many(10).unwrap(), vec![Picky(2)]);

    // A panic while decoding ends the batch before that item, as an
    // error does: the items before it are returned, not dropped with the
    // panic. The next batch starts with it: it panics, consuming that
    // item only; the lock is released.
    q.put_many([Picky(1), Picky(666), Picky(2)]).unwrap();
    assert_eq!(q.get_many(10).unwrap(), vec![Picky(1)]);
    let r = std::panic::catch_unwind(|| q.get_many(10));
    assert!(r.is_err());
    assert_eq!(q.len(), 1);
    assert_eq!(q.get_many(10).unwrap(), vec![Picky(2)]);
    // A single get consumes a panicking item too.
    q.put(Picky(666)).unwrap();
    assert!(std::panic::catch_unwind(|| q.get()).is_err());
    assert_eq!(q.len(), 0);
}

/// A consumer SIGKILLed inside a `get_many` (decoding its third item,
/// with the consumers' lock held) leaves every item of the batch in the
/// queue; the next consumer takes the lock over and gets them all.
#[test]
fn a_consumer_killed_inside_a_batch_takes_nothing() {
    watchdog("consumer killed in a batch", LIMIT, || {
        let q = Queue::<Picky>::new().unwrap();
        let inside = RawValue::new(0u32).unwrap();
        for round in 0..3 {
            q.put_many([Picky(1), Picky(2), Picky(HANG), Picky(3)])
                .unwrap();
            inside.atomic().store(0, SeqCst);
            let (q, inside) = (&q, &inside);
            multiproc::scope(|s| {
                let consumer = child(s, move || {
                    let _ = HANG_HERE.set(inside.clone());
                    q.get_many(10).unwrap();
                    unreachable!("decoding HANG hangs");
                });
                // Inside the batch, decoding its third item.
                assert!(wait_until(LIMIT, || inside.atomic().load(SeqCst) == 1));
                // The consumers' lock is held: a try gives up at once, a
                // timed call when its time is up.
                assert!(matches!(q.try_get_many(1), Err(Error::Empty)));
                let t = std::time::Instant::now();
                assert!(matches!(
                    q.get_many_timeout(1, Duration::from_millis(30)),
                    Err(Error::Timeout)
                ));
                assert!(t.elapsed() < Duration::from_secs(10));
                assert_eq!(q.len(), 4);
                consumer.kill().unwrap();
                assert_eq!(join(&consumer, LIMIT), -9);
            });
            assert_eq!(q.len(), 4, "round {round}: the killed batch took items");
            assert_eq!(
                q.get_many(10).unwrap(),
                vec![Picky(1), Picky(2), Picky(HANG), Picky(3)]
            );
        }
    });
}

/// A `Serialize` that hangs on one value, in a child that asks it to.
struct Slow(u32);

impl Serialize for Slow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == HANG {
            hang_if_asked();
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Slow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(Slow)
    }
}

/// A producer SIGKILLed in the middle of a batch (encoding it) leaves
/// none of that run in the queue, and its lock and ring usable.
#[test]
fn a_producer_killed_inside_a_batch_leaves_nothing_of_it() {
    watchdog("producer killed in a batch", LIMIT, || {
        let q = Queue::<Slow>::new().unwrap();
        let inside = RawValue::new(0u32).unwrap();
        let (q, inside) = (&q, &inside);
        multiproc::scope(|s| {
            let producer = child(s, move || {
                let _ = HANG_HERE.set(inside.clone());
                let _ = q.put_many([Slow(1), Slow(2), Slow(HANG), Slow(3)]);
                unreachable!("encoding HANG hangs");
            });
            assert!(wait_until(LIMIT, || inside.atomic().load(SeqCst) == 1));
            producer.kill().unwrap();
            assert_eq!(join(&producer, LIMIT), -9);
        });
        assert_eq!(q.len(), 0);
        q.put_many([Slow(5), Slow(6)]).unwrap();
        let got: Vec<u32> = q.get_many(10).unwrap().into_iter().map(|s| s.0).collect();
        assert_eq!(got, vec![5, 6]);
    });
}

/// A tiny deterministic generator, for kill times.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A [`Tagged`] that always encodes to 16 bytes (a 20-byte frame).
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Fixed([u8; 16]);

impl Fixed {
    fn new(producer: u32, seq: u32) -> Fixed {
        let t = Tagged::new(producer, seq);
        let mut b = [0; 16];
        b[..4].copy_from_slice(&t.producer.to_le_bytes());
        b[4..8].copy_from_slice(&t.seq.to_le_bytes());
        b[8..].copy_from_slice(&t.check.to_le_bytes());
        Fixed(b)
    }
    fn tagged(&self) -> Tagged {
        let b = &self.0;
        Tagged {
            producer: u32::from_le_bytes(b[..4].try_into().unwrap()),
            seq: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            check: u64::from_le_bytes(b[8..].try_into().unwrap()),
        }
    }
}

/// Four producers (more processes than CPUs) put batches of `BATCH`
/// tagged items, three of them without end, while a consumer process
/// takes one batch's worth at a time with `get_many`; the parent SIGKILLs
/// the endless producers at random points, also while they wait for room
/// in the full ring. The ring holds a whole number of batches and the
/// consumer takes whole batches, so the free room is always whole
/// batches too, and a batch never has to go in in runs: every producer's
/// items arrive whole, in order, without gaps, and in whole batches (a
/// killed producer's batch is all there or not at all).
#[test]
fn killed_producers_leave_whole_batches() {
    watchdog("producers killed mid-batch", LIMIT, || {
        const PRODUCERS: u32 = 4;
        const BATCH: u32 = 50;
        const BATCHES: u32 = 400;
        const FRAME: usize = 4 + 16;
        let got = RawArray::<u32>::new(PRODUCERS as usize).unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..3u32 {
            let q = Queue::<Fixed>::with_capacity(0, 16 * BATCH as usize * FRAME).unwrap();
            for p in 0..PRODUCERS as usize {
                got.atomic(p).unwrap().store(0, SeqCst);
            }
            let (q, got) = (&q, &got);
            multiproc::scope(|s| {
                let consumer = child(s, move || {
                    let mut next = vec![0u32; PRODUCERS as usize];
                    loop {
                        match q.get_many(BATCH as usize) {
                            Ok(items) => {
                                for t in items.iter().map(Fixed::tagged) {
                                    assert!(t.whole(), "torn item {t:?}");
                                    let p = t.producer as usize;
                                    assert_eq!(t.seq, next[p], "producer {p}: gap or repeat");
                                    next[p] += 1;
                                    got.atomic(p).unwrap().store(next[p], SeqCst);
                                }
                            }
                            Err(Error::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
                let producers: Vec<_> = (0..PRODUCERS)
                    .map(|p| {
                        child(s, move || {
                            let batches = if p == 0 { BATCHES } else { u32::MAX / BATCH };
                            for b in 0..batches {
                                let seqs = b * BATCH..(b + 1) * BATCH;
                                q.put_many(seqs.map(|seq| Fixed::new(p, seq))).unwrap();
                            }
                        })
                    })
                    .collect();
                for (p, producer) in producers.iter().enumerate().skip(1) {
                    let at = 1000 + next(&mut rng) % 20_000;
                    assert!(wait_until(LIMIT, || u64::from(
                        got.atomic(p).unwrap().load(SeqCst)
                    ) >= at));
                    producer.kill().unwrap();
                    assert_eq!(join(producer, LIMIT), -9);
                }
                assert_eq!(join(&producers[0], LIMIT), 0);
                q.close_all().unwrap();
                assert_eq!(join(&consumer, LIMIT), 0);
            });
            for p in 0..PRODUCERS as usize {
                let n = got.atomic(p).unwrap().load(SeqCst);
                assert_eq!(
                    n % BATCH,
                    0,
                    "round {round}: producer {p} left a partial batch ({n})"
                );
            }
            assert_eq!(got.atomic(0).unwrap().load(SeqCst), BATCHES * BATCH);
        }
    });
}

/// Two producers put batches through a small ring (so they wait for room)
/// while three consumers take batches with `get_many`; the parent SIGKILLs
/// consumers at random moments and starts new ones. No item is torn or
/// got twice, the ring stays consistent, and the only items missing are
/// ones a killed consumer had taken: at most one batch per kill.
#[test]
fn killed_consumers_lose_at_most_the_batch_they_held() {
    watchdog("consumers killed mid-batch", LIMIT, || {
        const TOTAL: u32 = 60_000;
        const MAX: usize = 40;
        const KILLS: usize = 8;
        let q = Queue::<Tagged>::with_capacity(0, 16 << 10).unwrap();
        let seen = RawArray::<u8>::new(TOTAL as usize).unwrap();
        let taken = RawValue::new(0u32).unwrap();
        let (q, seen, taken) = (&q, &seen, &taken);
        let mut rng = 0x9e37_79b9_u64;
        multiproc::scope(|s| {
            let consumer = || {
                child(s, move || loop {
                    match q.get_many(MAX) {
                        Ok(items) => {
                            assert!(!items.is_empty() && items.len() <= MAX);
                            for t in items {
                                assert!(t.whole(), "torn item {t:?}");
                                let was = seen.atomic(t.seq as usize).unwrap().fetch_add(1, SeqCst);
                                assert_eq!(was, 0, "item {} got twice", t.seq);
                                taken.atomic().fetch_add(1, SeqCst);
                            }
                        }
                        Err(Error::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                })
            };
            let producers: Vec<_> = (0..2u32)
                .map(|p| {
                    child(s, move || {
                        let half = TOTAL / 2;
                        let mut seq = p * half;
                        while seq < (p + 1) * half {
                            let end = (seq + 1 + seq % 31).min((p + 1) * half);
                            q.put_many((seq..end).map(|i| Tagged::new(p, i))).unwrap();
                            seq = end;
                        }
                    })
                })
                .collect();
            let mut consumers: Vec<_> = (0..3).map(|_| consumer()).collect();
            let mut at = 0u64;
            for k in 0..KILLS {
                at += next(&mut rng) % (u64::from(TOTAL) / KILLS as u64 / 2);
                wait_until(LIMIT, || u64::from(taken.atomic().load(SeqCst)) >= at);
                let victim = consumers.swap_remove(k % consumers.len());
                victim.kill().unwrap();
                let code = join(&victim, LIMIT);
                assert!(code == -9 || code == 0, "consumer exit {code}");
                consumers.push(consumer());
            }
            for p in &producers {
                assert_eq!(join(p, LIMIT), 0);
            }
            q.close_all().unwrap();
            for c in &consumers {
                assert_eq!(join(c, LIMIT), 0);
            }
        });
        let seen = seen.read(..).unwrap();
        assert!(seen.iter().all(|&n| n <= 1));
        let missing = seen.iter().filter(|&&n| n == 0).count();
        assert!(
            missing <= KILLS * MAX,
            "{missing} items lost to {KILLS} kills"
        );
        assert_eq!(q.len(), 0);
    });
}

/// JoinableQueue counts every item of a batch as a task.
#[test]
fn a_joinable_batch_counts_every_item() {
    let q = JoinableQueue::<u64>::new().unwrap();
    q.put_many(0..10u64).unwrap();
    assert!(matches!(
        q.join_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    assert_eq!(q.get_many(100).unwrap().len(), 10);
    for _ in 0..9 {
        q.task_done().unwrap();
    }
    assert!(matches!(
        q.join_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    q.task_done().unwrap();
    q.join_timeout(Duration::ZERO).unwrap();
    assert!(matches!(q.task_done(), Err(Error::TooManyTaskDone)));
}

thread_local! {
    /// The queue a [`Reentrant`] puts on while it is decoded, and what
    /// that put returned.
    static REENTER: std::cell::RefCell<(Option<Queue<Reentrant>>, Option<String>)> =
        const { std::cell::RefCell::new((None, None)) };
}

/// A `u32` whose decoding (under the consumers' lock) puts one item, or
/// a batch, back on its own queue.
#[derive(Debug, PartialEq)]
struct Reentrant(u32);

impl Serialize for Reentrant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Reentrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        REENTER.with(|r| {
            let mut r = r.borrow_mut();
            let outcome = match (&r.0, v) {
                (Some(q), 1) => Some(format!("{:?}", q.put(Reentrant(0)).map_err(Error::from))),
                (Some(q), 2) => Some(format!(
                    "{:?}",
                    q.put_many([Reentrant(0)]).map_err(|e| Error::from(e.error))
                )),
                _ => None,
            };
            if outcome.is_some() {
                r.1 = outcome;
            }
        });
        Ok(Reentrant(v))
    }
}

/// An operation that would wait for the other end of its own queue while
/// the calling thread holds that end's lock (a `Deserialize` that puts on
/// its full queue; a `put_with` closure that gets from its empty queue, a
/// `get_with` one that puts on its full one) fails with
/// [`Error::Deadlock`] instead of hanging every process of that side.
#[test]
fn waiting_on_the_lock_this_thread_holds_is_a_deadlock_error() {
    watchdog("waits under the queue's own lock", LIMIT, || {
        for (kind, many) in [(1u32, false), (2, false), (1, true), (2, true)] {
            let q = Queue::<Reentrant>::with_capacity(0, 64).unwrap();
            REENTER.with(|r| *r.borrow_mut() = (Some(q.clone()), None));
            q.put(Reentrant(kind)).unwrap();
            while q.try_put(Reentrant(7)).is_ok() {}
            let first = if many {
                q.get_many(1).unwrap().remove(0)
            } else {
                q.get().unwrap()
            };
            assert_eq!(first, Reentrant(kind));
            let inner = REENTER.with(|r| r.borrow_mut().1.take());
            assert_eq!(inner.as_deref(), Some("Err(Deadlock)"), "kind {kind}");
            REENTER.with(|r| *r.borrow_mut() = (None, None));
            // Nothing was lost or added; the locks were released.
            while q.try_get().is_ok() {}
            q.put(Reentrant(9)).unwrap();
            assert_eq!(q.get().unwrap(), Reentrant(9));
        }

        let b = Queue::<multiproc::queue::Bytes>::with_capacity(0, 64).unwrap();
        let mut inner = None;
        b.put_with(1, |buf| {
            buf[0] = 1;
            inner = Some(b.get_bytes());
        })
        .unwrap();
        assert!(matches!(inner, Some(Err(Error::Deadlock))), "{inner:?}");
        while b.try_put_bytes(b"full").is_ok() {}
        let mut inner = None;
        let got = b.get_with(|frame| {
            inner = Some(b.put_bytes(b"x"));
            frame.to_vec()
        });
        assert_eq!(got.unwrap(), vec![1]);
        assert!(matches!(inner, Some(Err(Error::Deadlock))), "{inner:?}");
    });
}

/// A `u32` whose encoding panics for 3.
#[derive(Debug, PartialEq, Deserialize)]
struct Unencodable(u32);

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(self.0 != 3, "encoding 3");
        s.serialize_u32(self.0)
    }
}

/// An iterator (or a `Serialize`) that panics half-way through a batch:
/// every item it gave before the panic is put, as by a loop of `put`s
/// that panicked there, and the queue and its buffers work afterwards.
#[test]
fn a_batch_whose_items_panic_puts_those_before() {
    let q = Queue::<u64>::new().unwrap();
    let r = std::panic::catch_unwind(|| {
        q.put_many((0..10u64).map(|i| if i == 5 { panic!("item 5") } else { i }))
    });
    assert!(r.is_err());
    assert_eq!(q.try_get_many(100).unwrap(), (0..5).collect::<Vec<_>>());

    // Past the first encoded run (64 KiB): the runs before and the part
    // of this one encoded before the panic.
    let big = Queue::<Vec<u8>>::new().unwrap();
    let r = std::panic::catch_unwind(|| {
        big.put_many((0..200u8).map(|i| {
            assert!(i != 150, "item 150");
            vec![i; 1000]
        }))
    });
    assert!(r.is_err());
    let mut got = Vec::new();
    while let Ok(items) = big.try_get_many(1000) {
        got.extend(items.into_iter().map(|v| v[0]));
    }
    assert_eq!(got, (0..150).collect::<Vec<_>>());

    let q = Queue::<Unencodable>::new().unwrap();
    let r = std::panic::catch_unwind(|| q.put_many((0..6).map(Unencodable)));
    assert!(r.is_err());
    assert_eq!(
        q.try_get_many(100).unwrap(),
        (0..3).map(Unencodable).collect::<Vec<_>>()
    );
    q.put_many((4..6).map(Unencodable)).unwrap();
    assert_eq!(q.len(), 2);
}

/// `close` (this handle) while a batch is being put, by its own iterator
/// or by another thread: the items given before it are put, and none
/// after, as with a loop of `put`s.
#[test]
fn a_close_during_a_batch_refuses_the_items_after_it() {
    let q = Queue::<u64>::new().unwrap();
    let r = q.put_many((0..10u64).inspect(|&i| {
        if i == 5 {
            q.close();
        }
    }));
    assert!(matches!(
        r,
        Err(PutManyError {
            put: 5,
            error: PutError::Closed(())
        })
    ));
    assert_eq!(q.try_get_many(100).unwrap(), (0..5).collect::<Vec<_>>());
}

/// The ring's offsets changed meaning with batches (they run modulo twice
/// the ring's size): a named queue made by a build of the layout before
/// (version 3) is refused, not read with offsets it means otherwise.
#[test]
fn a_queue_of_the_layout_before_batches_is_refused() {
    use std::os::unix::fs::FileExt;
    let name = common::TempName::new("old-layout-queue");
    let q = Queue::<u32>::create(&name, 0, 4096).unwrap();
    let path = format!("/dev/shm/{}{}", multiproc::segment::PREFIX, &*name);
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    // The header's version, after its 8-byte magic.
    file.write_all_at(&3u32.to_le_bytes(), 8).unwrap();
    drop(q);
    assert!(matches!(
        Queue::<u32>::open(&name),
        Err(Error::VersionMismatch { found: 3, .. })
    ));
}

thread_local! {
    /// The queue a [`Peeking`] item looks into while it is decoded, and
    /// what it found there.
    static PEEK: std::cell::RefCell<(Option<Queue<Peeking>>, Option<String>)> =
        const { std::cell::RefCell::new((None, None)) };
}

/// Bytes whose decoding, when the first is 1, tries a `get` on its own
/// queue: that works only if the consumers' lock is not held meanwhile.
#[derive(Debug, PartialEq, Serialize)]
struct Peeking(Vec<u8>);

impl<'de> Deserialize<'de> for Peeking {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<u8>::deserialize(d)?;
        if v.first() == Some(&1) {
            PEEK.with(|p| {
                let mut p = p.borrow_mut();
                let found =
                    p.0.as_ref()
                        .map(|q| format!("{:?}", q.try_get().map(|x| x.0.len())));
                p.1 = found;
            });
        }
        Ok(Peeking(v))
    }
}

/// A large item (over 4 KiB encoded) is decoded after the consumers' lock
/// is released, by `get_many` as by `get`: a slow `Deserialize` of it
/// keeps no other consumer (nor a producer waiting for room) waiting. It
/// is got alone, after the small items before it.
#[test]
fn large_items_are_decoded_after_the_lock_in_batches_too() {
    let q = Queue::<Peeking>::new().unwrap();
    PEEK.with(|p| *p.borrow_mut() = (Some(q.clone()), None));
    let mut large = vec![1u8; 10_000];
    large[1] = 2;
    for many in [false, true] {
        q.put_many([
            Peeking(vec![0; 3]),
            Peeking(large.clone()),
            Peeking(vec![0; 7]),
        ])
        .unwrap();
        let lens = |items: Vec<Peeking>| items.iter().map(|p| p.0.len()).collect::<Vec<_>>();
        if many {
            assert_eq!(lens(q.get_many(10).unwrap()), [3]);
            assert!(q.get_many(10).unwrap() == [Peeking(large.clone())]);
        } else {
            assert_eq!(q.get().unwrap(), Peeking(vec![0; 3]));
            assert!(q.get().unwrap() == Peeking(large.clone()));
        }
        // Its decoding took the item after it: the lock was free.
        let found = PEEK.with(|p| p.borrow_mut().1.take());
        assert_eq!(found.as_deref(), Some("Ok(7)"), "get_many: {many}");
        assert!(q.is_empty());
    }
    PEEK.with(|p| *p.borrow_mut() = (None, None));
}

/// An iterator given to `put_many` that waits for an item of the same
/// queue while the batch holds back items it encoded but has not yet
/// published would wait for itself: it gets [`Error::Deadlock`] instead
/// of hanging. With nothing held back it waits (here: gets) as usual.
#[test]
fn a_batch_whose_iterator_waits_on_its_own_queue_is_a_deadlock_error() {
    watchdog("put_many waiting for itself", LIMIT, || {
        let q = Queue::<u64>::new().unwrap();
        let mut inner = Vec::new();
        q.put_many((0..4u64).inspect(|&i| {
            if i == 2 {
                inner.push(q.get_timeout(LIMIT).map_err(|e| e.to_string()));
                inner.push(
                    q.get_many(5)
                        .map(|v| v.len() as u64)
                        .map_err(|e| e.to_string()),
                );
            }
        }))
        .unwrap();
        assert!(
            inner
                .iter()
                .all(|r| matches!(r, Err(e) if e.contains("deadlock"))),
            "{inner:?}"
        );
        assert_eq!(q.try_get_many(10).unwrap(), [0, 1, 2, 3]);

        // A run already published, nothing held back: the get works.
        q.put(7).unwrap();
        let mut got = None;
        q.put_many((0..2u64).inspect(|&i| {
            if i == 0 {
                got = Some(q.get().unwrap());
            }
        }))
        .unwrap();
        assert_eq!(got, Some(7));
        assert_eq!(q.try_get_many(10).unwrap(), [0, 1]);
    });
}
