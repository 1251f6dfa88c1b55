//! `Queue<Bytes>`: frames written and read in place, across real processes,
//! with writers and readers killed (SIGKILL) or panicking inside their
//! closures; and `close` (this handle) beside `close_all` (everyone).

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{child, join, wait_until, watchdog, TempName};
use multiproc::queue::{Bytes, PutError};
use multiproc::{Error, Queue, RawValue};

const LIMIT: Duration = Duration::from_secs(60);

/// The content of frame `seq` of `len` bytes: every byte depends on both,
/// so a torn or shifted frame never passes [`check`].
fn frame(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect()
}

fn check(seq: u32, bytes: &[u8]) {
    assert!(bytes == frame(seq, bytes.len()), "frame {seq} is torn");
}

#[test]
fn frames_round_trip_in_place_and_by_copy() {
    let q = Queue::<Bytes>::with_capacity(0, 256).unwrap();
    assert_eq!(q.max_item_size(), 252);
    q.put_with(3, |buf| buf.copy_from_slice(b"abc")).unwrap();
    q.put_bytes(b"").unwrap();
    q.put_bytes(&frame(1, 100)).unwrap();
    assert_eq!(q.len(), 3);
    assert_eq!(q.get_with(|b| b.to_vec()).unwrap(), b"abc");
    assert_eq!(q.get_bytes().unwrap(), b"");
    q.get_with(|b| check(1, b)).unwrap();
    assert!(matches!(q.try_get_bytes(), Err(Error::Empty)));
    assert!(matches!(q.try_get_with(|_| ()), Err(Error::Empty)));
    assert!(matches!(
        q.get_bytes_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    // The largest frame, and one byte more.
    q.put_bytes(&frame(2, 252)).unwrap();
    assert!(matches!(q.try_put_bytes(b"x"), Err(Error::WouldBlock)));
    assert!(matches!(
        q.put_bytes_timeout(b"x", Duration::from_millis(1)),
        Err(Error::Timeout)
    ));
    q.get_with(|b| check(2, b)).unwrap();
    let mut called = false;
    assert!(matches!(
        q.put_with(253, |_| called = true),
        Err(Error::MessageTooLarge {
            size: 253,
            limit: 252
        })
    ));
    assert!(!called, "fill is not called for a frame that cannot fit");
    // Timeouts too large to represent mean forever (and there is room).
    q.put_bytes_timeout(b"max", Duration::MAX).unwrap();
    assert_eq!(q.get_bytes_timeout(Duration::MAX).unwrap(), b"max");
}

/// Frames of every length go round a small ring many times, so that many
/// straddle its end (those go through a buffer), in order and whole.
#[test]
fn frames_that_straddle_the_ring_end_arrive_whole() {
    let q = Queue::<Bytes>::with_capacity(0, 97).unwrap();
    for seq in 0..2000u32 {
        let len = (seq as usize * 13) % 60;
        q.put_bytes(&frame(seq + 5000, seq as usize % 5)).unwrap();
        q.put_with(len, |buf| buf.copy_from_slice(&frame(seq, len)))
            .unwrap();
        q.get_with(|b| check(seq + 5000, b)).unwrap();
        q.get_with(|b| {
            assert_eq!(b.len(), len);
            check(seq, b)
        })
        .unwrap();
    }
    assert!(q.is_empty());
}

#[test]
fn a_panicking_closure_adds_nothing_and_takes_nothing() {
    let q = Queue::<Bytes>::with_capacity(0, 128).unwrap();
    let r = std::panic::catch_unwind(|| {
        q.put_with(10, |buf| {
            buf.fill(9);
            panic!("writer gives up");
        })
    });
    assert!(r.is_err());
    assert!(q.is_empty(), "a panicking writer left a frame");
    q.put_bytes(&frame(5, 40)).unwrap();
    let r = std::panic::catch_unwind(|| q.get_with(|_| panic!("reader gives up")));
    assert!(r.is_err());
    assert_eq!(q.len(), 1, "a panicking reader consumed the frame");
    q.get_with(|b| check(5, b)).unwrap();
    // Both locks were released on the way out.
    q.put_bytes(b"ok").unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"ok");
}

/// A reader SIGKILLed while it holds a frame in `get_with` leaves it whole
/// for the next reader; a writer SIGKILLed half way through `put_with`'s
/// closure leaves nothing; the queue goes on working for everyone.
#[test]
fn killed_readers_and_writers_leave_whole_frames_or_nothing() {
    watchdog("killed in closures", LIMIT, || {
        let q = Queue::<Bytes>::with_capacity(0, 4096).unwrap();
        let inside = RawValue::new(0u32).unwrap();
        let (q, inside) = (&q, &inside);
        multiproc::scope(|s| {
            for round in 0..3u32 {
                // The reader.
                q.put_bytes(&frame(round, 1000)).unwrap();
                inside.atomic().store(0, SeqCst);
                let reader = child(s, move || {
                    q.get_with(|b| {
                        // Read half of it, then hang inside the closure.
                        assert_eq!(b[0], frame(round, 1000)[0]);
                        inside.atomic().store(1, SeqCst);
                        loop {
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    })
                    .unwrap();
                });
                assert!(wait_until(LIMIT, || inside.atomic().load(SeqCst) == 1));
                reader.kill().unwrap();
                assert_eq!(join(&reader, LIMIT), -9);
                assert_eq!(q.len(), 1, "the killed reader's frame is gone");
                q.get_with(|b| check(round, b)).unwrap();

                // The writer.
                inside.atomic().store(0, SeqCst);
                let writer = child(s, move || {
                    q.put_with(1500, |buf| {
                        buf[..700].fill(0xee);
                        inside.atomic().store(1, SeqCst);
                        loop {
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    })
                    .unwrap();
                });
                assert!(wait_until(LIMIT, || inside.atomic().load(SeqCst) == 1));
                writer.kill().unwrap();
                assert_eq!(join(&writer, LIMIT), -9);
                assert!(matches!(q.try_get_bytes(), Err(Error::Empty)));
                // The dead writer's lock is taken over; the ring works.
                q.put_bytes(&frame(round + 100, 1500)).unwrap();
                q.get_with(|b| check(round + 100, b)).unwrap();
            }
        });
    });
}

/// A reader holding a frame does not stop producers: they add frames into
/// the free part of the ring meanwhile.
#[test]
fn a_reader_holding_a_frame_does_not_block_producers() {
    watchdog("reader holds a frame", LIMIT, || {
        let q = Queue::<Bytes>::with_capacity(0, 4096).unwrap();
        let inside = RawValue::new(0u32).unwrap();
        let release = RawValue::new(0u32).unwrap();
        q.put_bytes(&frame(0, 100)).unwrap();
        multiproc::scope(|s| {
            let reader = child(s, || {
                q.get_with(|b| {
                    inside.atomic().store(1, SeqCst);
                    while release.atomic().load(SeqCst) == 0 {
                        std::thread::yield_now();
                    }
                    check(0, b);
                })
                .unwrap();
            });
            assert!(wait_until(LIMIT, || inside.atomic().load(SeqCst) == 1));
            for seq in 1..20 {
                q.try_put_bytes(&frame(seq, 100)).unwrap();
            }
            release.atomic().store(1, SeqCst);
            assert_eq!(join(&reader, LIMIT), 0);
            for seq in 1..20 {
                q.get_with(|b| check(seq, b)).unwrap();
            }
        });
    });
}

/// A byte queue is its own item type: opening it as a queue of serde items
/// is an error, and the other way round.
#[test]
fn a_byte_queue_is_not_a_queue_of_items() {
    let name = TempName::new("byte-queue");
    let q = Queue::<Bytes>::create(&name, 0, 4096).unwrap();
    assert!(Queue::<Vec<u8>>::open(&name).is_err());
    assert!(Queue::<u64>::open(&name).is_err());
    let opened = Queue::<Bytes>::open(&name).unwrap();
    opened.put_bytes(b"named").unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"named");
    let items = TempName::new("item-queue");
    let _q = Queue::<Vec<u8>>::create(&items, 0, 4096).unwrap();
    assert!(Queue::<Bytes>::open(&items).is_err());
}

/// `close` is Python's: this handle and its clones put nothing more in this
/// process; gets go on, other processes and other handles still put.
/// `close_all` closes the queue for every process.
#[test]
fn close_ends_this_processes_puts_and_close_all_everyones() {
    watchdog("close", LIMIT, || {
        let q = Queue::<u32>::new().unwrap();
        let clone = q.clone();
        q.put(1).unwrap();
        q.close();
        assert!(matches!(q.put(2), Err(PutError::Closed(2))));
        assert!(matches!(clone.put(3), Err(PutError::Closed(3))));
        assert_eq!(q.get().unwrap(), 1);
        multiproc::scope(|s| {
            // A child forked after the close may put, as in Python.
            let c = child(s, || clone.put(4).unwrap());
            assert_eq!(join(&c, LIMIT), 0);
        });
        assert_eq!(q.get().unwrap(), 4);
        // A handle opened by name is another handle.
        let name = TempName::new("close-here");
        let named = Queue::<u32>::create(&name, 0, 4096).unwrap();
        let other = Queue::<u32>::open(&name).unwrap();
        named.close();
        other.put(5).unwrap();
        assert_eq!(named.get().unwrap(), 5);
        // close_all: everyone's puts fail, gets drain then fail.
        other.put(6).unwrap();
        named.close_all().unwrap();
        assert!(matches!(other.put(7), Err(PutError::Closed(7))));
        assert_eq!(other.get().unwrap(), 6);
        assert!(matches!(other.get(), Err(Error::Closed)));

        let b = Queue::<Bytes>::new().unwrap();
        b.close();
        assert!(matches!(b.put_bytes(b"x"), Err(Error::Closed)));
        let b2 = Queue::<Bytes>::new().unwrap();
        b2.put_bytes(b"y").unwrap();
        b2.close_all().unwrap();
        assert!(matches!(b2.put_bytes(b"x"), Err(Error::Closed)));
        assert_eq!(b2.get_bytes().unwrap(), b"y");
        assert!(matches!(b2.get_bytes(), Err(Error::Closed)));
    });
}

/// Producers and consumers in several processes move frames of many sizes
/// through a small ring; every frame arrives once and whole.
#[test]
fn frames_between_processes_arrive_once_and_whole() {
    watchdog("bytes between processes", LIMIT, || {
        const PER: u32 = 3000;
        let q = Queue::<Bytes>::with_capacity(0, 1000).unwrap();
        let seen = multiproc::RawArray::<u8>::new(2 * PER as usize).unwrap();
        multiproc::scope(|s| {
            let producers: Vec<_> = (0..2u32)
                .map(|p| {
                    let q = &q;
                    child(s, move || {
                        for i in 0..PER {
                            let seq = p * PER + i;
                            let len = 4 + (seq as usize * 37) % 300;
                            q.put_with(len, |buf| {
                                buf.copy_from_slice(&frame(seq, len));
                                buf[..4].copy_from_slice(&seq.to_le_bytes());
                            })
                            .unwrap();
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    child(s, || loop {
                        match q.get_with(|b| {
                            let seq = u32::from_le_bytes(b[..4].try_into().unwrap());
                            assert!(b[4..] == frame(seq, b.len())[4..], "frame {seq} torn");
                            seq
                        }) {
                            Ok(seq) => {
                                let was = seen.atomic(seq as usize).unwrap().fetch_add(1, SeqCst);
                                assert_eq!(was, 0, "frame {seq} delivered twice");
                            }
                            Err(Error::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    })
                })
                .collect();
            for p in &producers {
                assert_eq!(join(p, LIMIT), 0);
            }
            q.close_all().unwrap();
            for c in &consumers {
                assert_eq!(join(c, LIMIT), 0);
            }
        });
        let seen = seen.read(..).unwrap();
        assert!(seen.iter().all(|&n| n == 1), "a frame was lost");
    });
}

/// A `try_`/`_timeout` call honours its deadline while another process
/// sits inside `get_with`'s (or `put_with`'s) closure holding the lock of
/// its side: it used to wait for the closure to return.
#[test]
fn deadlines_hold_while_another_process_is_inside_a_closure() {
    watchdog("deadlines vs a closure", LIMIT, || {
        let q = Queue::<Bytes>::with_capacity(0, 4096).unwrap();
        let inside = RawValue::new(0u32).unwrap();
        let release = RawValue::new(0u32).unwrap();
        let prompt = Duration::from_secs(1);
        q.put_bytes(b"held").unwrap();
        q.put_bytes(b"second").unwrap();
        multiproc::scope(|s| {
            let holder = child(s, || {
                q.get_with(|_| {
                    inside.atomic().store(1, SeqCst);
                    assert!(wait_until(LIMIT, || release.atomic().load(SeqCst) == 1));
                })
                .unwrap();
            });
            assert!(wait_until(LIMIT, || inside.atomic().load(SeqCst) == 1));
            let t = std::time::Instant::now();
            assert!(matches!(q.try_get_bytes(), Err(Error::Empty)));
            assert!(matches!(q.try_get_with(|_| ()), Err(Error::Empty)));
            assert!(t.elapsed() < prompt, "try_get waited {:?}", t.elapsed());
            let t = std::time::Instant::now();
            let r = q.get_bytes_timeout(Duration::from_millis(100));
            assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
            assert!(t.elapsed() < prompt, "get_timeout waited {:?}", t.elapsed());
            release.atomic().store(1, SeqCst);
            assert_eq!(join(&holder, LIMIT), 0);
        });
        assert_eq!(q.try_get_bytes().unwrap(), b"second");
        inside.atomic().store(0, SeqCst);
        release.atomic().store(0, SeqCst);
        multiproc::scope(|s| {
            let holder = child(s, || {
                q.put_with(10, |b| {
                    b.fill(1);
                    inside.atomic().store(1, SeqCst);
                    assert!(wait_until(LIMIT, || release.atomic().load(SeqCst) == 1));
                })
                .unwrap();
            });
            assert!(wait_until(LIMIT, || inside.atomic().load(SeqCst) == 1));
            let t = std::time::Instant::now();
            assert!(matches!(q.try_put_bytes(b"x"), Err(Error::WouldBlock)));
            assert!(t.elapsed() < prompt, "try_put waited {:?}", t.elapsed());
            let t = std::time::Instant::now();
            let r = q.put_bytes_timeout(b"x", Duration::from_millis(100));
            assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
            assert!(t.elapsed() < prompt, "put_timeout waited {:?}", t.elapsed());
            release.atomic().store(1, SeqCst);
            assert_eq!(join(&holder, LIMIT), 0);
        });
        assert_eq!(q.try_get_bytes().unwrap(), vec![1; 10]);
        assert!(q.is_empty());
    });
}

/// Another thread of the process calling `try_get_bytes` while this one
/// is inside `get_with` returns at once (it used to wait for the closure).
#[test]
fn try_get_on_another_thread_during_get_with_returns_at_once() {
    watchdog("thread inside get_with", LIMIT, || {
        let q = Queue::<Bytes>::with_capacity(0, 256).unwrap();
        q.put_bytes(b"a").unwrap();
        q.put_bytes(b"b").unwrap();
        let got = q
            .get_with(|a| {
                assert_eq!(a, b"a");
                let (tx, rx) = std::sync::mpsc::channel();
                let q2 = q.clone();
                std::thread::spawn(move || {
                    let t = std::time::Instant::now();
                    let r = q2.try_get_bytes();
                    let _ = tx.send((r.is_err_and(|e| matches!(e, Error::Empty)), t.elapsed()));
                });
                rx.recv_timeout(Duration::from_secs(10))
            })
            .unwrap();
        let (empty, took) = got.expect("try_get_bytes did not return while get_with ran");
        assert!(empty, "try_get_bytes said Empty");
        assert!(took < Duration::from_secs(1), "try_get_bytes took {took:?}");
        assert_eq!(q.try_get_bytes().unwrap(), b"b");
    });
}

/// `is_full` agrees with what a put of an empty frame does: false while
/// one still fits, true once `try_put_bytes` is refused.
#[test]
fn is_full_agrees_with_empty_frames() {
    let q = Queue::<Bytes>::with_capacity(0, 64).unwrap();
    let mut n = 0;
    loop {
        let full = q.is_full();
        match q.try_put_bytes(b"") {
            Ok(()) => assert!(!full, "is_full said full, then a put fitted"),
            Err(Error::WouldBlock) => {
                assert!(full, "a put was refused, but is_full said not full");
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
        n += 1;
        assert!(n <= 64, "a 64-byte ring took {n} frames");
    }
    // A ring full of empty frames: 64 / 4 of them, counted and got.
    assert_eq!(n, 16);
    assert_eq!(q.len(), 16);
    assert!(q.is_full());
    for left in (0..16).rev() {
        assert_eq!(q.try_get_bytes().unwrap(), b"");
        assert_eq!(q.len(), left);
        assert!(!q.is_full());
    }
    assert!(matches!(q.try_get_bytes(), Err(Error::Empty)));
}
