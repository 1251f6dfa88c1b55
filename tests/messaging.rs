//! Pipes, connections, listeners and queues across real processes.

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{child, join, procfs, static_child, wait_until, watchdog, TempName};
use multiproc::conn::{connect, frame, wait, Address, Listener};
use multiproc::queue::PutError;
use multiproc::{Error, JoinableQueue, Pipe, Queue, RawArray, RawValue, SimpleQueue};

const LIMIT: Duration = Duration::from_secs(60);

fn socket_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("multiproc-test-{tag}-{}.sock", std::process::id()))
}

// ---------------------------------------------------------------------------
// Pipes and connections

#[test]
fn duplex_pipe_keeps_message_boundaries_both_ways() {
    watchdog("duplex pipe", LIMIT, || {
        let (mut parent, mut other) = Pipe(true).unwrap();
        let big = vec![7u8; 1 << 20];
        multiproc::scope(|s| {
            let c = child(s, move || {
                assert_eq!(other.recv_bytes().unwrap(), b"");
                assert_eq!(other.recv_bytes().unwrap(), vec![7u8; 1 << 20]);
                assert_eq!(
                    other.recv::<(u32, String)>().unwrap(),
                    (1, "one".to_string())
                );
                other.send(&vec![1u64, 2, 3]).unwrap();
                other.send_bytes(b"bye").unwrap();
            });
            parent.send_bytes(b"").unwrap();
            parent.send_bytes(&big).unwrap();
            parent.send(&(1u32, "one")).unwrap();
            assert_eq!(parent.recv::<Vec<u64>>().unwrap(), [1, 2, 3]);
            let mut buf = [0u8; 2];
            match parent.recv_bytes_into(&mut buf) {
                Err(Error::BufferTooShort(msg)) => assert_eq!(msg, b"bye"),
                other => panic!("expected BufferTooShort, got {other:?}"),
            }
            assert_eq!(join(&c, LIMIT), 0);
            // The child is gone and its end closed: end of file, both ways.
            assert!(matches!(parent.recv_bytes(), Err(Error::ConnectionClosed)));
            assert!(matches!(
                parent.send_bytes(b"x"),
                Err(Error::ConnectionClosed)
            ));
        });
    });
}

#[test]
fn one_way_pipe_has_a_reading_and_a_writing_end() {
    let (mut r, mut w) = Pipe(false).unwrap();
    assert!(r.readable() && !r.writable() && w.writable() && !w.readable());
    assert!(matches!(r.send_bytes(b"x"), Err(Error::InvalidArgument(_))));
    assert!(matches!(w.recv_bytes(), Err(Error::InvalidArgument(_))));
    w.send(&5u8).unwrap();
    assert_eq!(r.recv::<u8>().unwrap(), 5);
    drop(w);
    assert!(matches!(r.recv_bytes(), Err(Error::ConnectionClosed)));
}

#[test]
fn oversized_and_lying_frames_are_refused_before_allocation() {
    let (mut a, mut b) = Pipe(true).unwrap();
    b.set_max_message(1024);
    a.send_bytes(&[0u8; 2048]).unwrap();
    match b.recv_bytes() {
        Err(Error::MessageTooLarge {
            size: 2048,
            limit: 1024,
        }) => {}
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert!(b.closed(), "the stream is no longer at a boundary: closed");
    // A raw peer claiming a 4 GiB message: refused from the header alone.
    let (raw, ours) = UnixStream::pair().unwrap();
    let mut conn = multiproc::Connection::from_socket(ours.into()).unwrap();
    (&raw).write_all(&frame::header(1 << 32).unwrap()).unwrap();
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::MessageTooLarge { .. })
    ));
    // A peer that dies mid-message: end of file, not a partial message.
    let (raw, ours) = UnixStream::pair().unwrap();
    let mut conn = multiproc::Connection::from_socket(ours.into()).unwrap();
    (&raw).write_all(&frame::header(100).unwrap()).unwrap();
    (&raw).write_all(&[1u8; 10]).unwrap();
    drop(raw);
    assert!(matches!(conn.recv_bytes(), Err(Error::ConnectionClosed)));
}

#[test]
fn poll_wait_and_timeouts() {
    watchdog("poll", LIMIT, || {
        let (mut a, mut b) = Pipe(true).unwrap();
        let (mut c, mut d) = Pipe(true).unwrap();
        let t = Instant::now();
        assert!(!a.poll(Some(Duration::from_millis(100))).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert!(matches!(
            a.recv_bytes_timeout(Duration::from_millis(50)),
            Err(Error::Timeout)
        ));
        assert!(
            !a.closed(),
            "a timeout before any byte keeps the connection"
        );
        assert!(wait(&[&a, &c], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty());
        multiproc::scope(|s| {
            let p = child(s, move || {
                d.send(&1u8).unwrap();
                b.send(&2u8).unwrap();
            });
            assert_eq!(join(&p, LIMIT), 0);
            assert!(a.poll(Some(Duration::ZERO)).unwrap());
            assert_eq!(wait(&[&a, &c], None).unwrap(), [0, 1]);
            assert_eq!(c.recv::<u8>().unwrap(), 1);
            assert_eq!(a.recv::<u8>().unwrap(), 2);
        });
    });
}

// ---------------------------------------------------------------------------
// Listener and client

#[test]
fn listener_and_client_authenticate_over_unix_and_tcp() {
    watchdog("listener", LIMIT, || {
        let path = socket_path("auth");
        multiproc::scope(|s| {
            for address in [
                Address::Unix(path.clone()),
                "tcp:127.0.0.1:0".parse().unwrap(),
            ] {
                let listener = Listener::bind(&address, Some(b"right key")).unwrap();
                let address = listener.address().clone();
                if let Address::Unix(p) = &address {
                    let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
                    assert_eq!(mode, 0o600, "socket file mode");
                }
                let c = child(s, move || {
                    let mut conn = connect(&address, Some(b"right key")).unwrap();
                    let n: u64 = conn.recv().unwrap();
                    conn.send(&(n + 1)).unwrap();
                });
                let mut conn = listener.accept().unwrap();
                conn.send(&41u64).unwrap();
                assert_eq!(conn.recv::<u64>().unwrap(), 42);
                assert_eq!(join(&c, LIMIT), 0);
            }
            assert!(
                !path.exists(),
                "the socket file is removed with the listener"
            );
        });
    });
}

#[test]
fn a_wrong_key_fails_on_both_sides_and_gets_nothing_through() {
    watchdog("wrong key", LIMIT, || {
        let path = socket_path("wrong");
        let listener = Listener::bind(&Address::Unix(path.clone()), Some(b"right key")).unwrap();
        let address = Address::Unix(path.clone());
        multiproc::scope(|s| {
            let c = child(s, || {
                let e = connect(&address, Some(b"wrong key")).unwrap_err();
                assert!(matches!(e, Error::AuthenticationFailed(_)), "{e}");
            });
            let e = listener.accept().unwrap_err();
            assert!(matches!(e, Error::AuthenticationFailed(_)), "{e}");
            assert_eq!(join(&c, LIMIT), 0);

            // A peer that skips the handshake and just sends a message.
            let evil = child(s, || {
                let mut s = UnixStream::connect(&path).unwrap();
                let msg = postcard::to_allocvec("let me in").unwrap();
                s.write_all(&frame::header(msg.len()).unwrap()).unwrap();
                s.write_all(&msg).unwrap();
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(&mut s, &mut rest);
            });
            assert!(matches!(
                listener.accept(),
                Err(Error::AuthenticationFailed(_))
            ));
            assert_eq!(join(&evil, LIMIT), 0);

            // One that claims a huge message during the handshake.
            let greedy = child(s, || {
                let mut s = UnixStream::connect(&path).unwrap();
                let mut challenge = [0u8; 64];
                let _ = std::io::Read::read(&mut s, &mut challenge);
                s.write_all(&frame::header(1 << 32).unwrap()).unwrap();
            });
            assert!(matches!(
                listener.accept(),
                Err(Error::AuthenticationFailed(_))
            ));
            assert_eq!(join(&greedy, LIMIT), 0);

            // The listener still serves a client with the key.
            let good = child(s, || {
                connect(&address, Some(b"right key"))
                    .unwrap()
                    .send(&"hi")
                    .unwrap()
            });
            assert_eq!(listener.accept().unwrap().recv::<String>().unwrap(), "hi");
            assert_eq!(join(&good, LIMIT), 0);
        });
    });
}

#[test]
fn stale_socket_files_are_replaced_and_live_ones_refused() {
    watchdog("stale socket", LIMIT, || {
        let path = socket_path("stale");
        let address = Address::Unix(path.clone());
        multiproc::scope(|s| {
            // A listener that "crashes": its process exits without cleaning up.
            let c = child(s, || {
                std::mem::forget(Listener::bind(&address, None).unwrap())
            });
            assert_eq!(join(&c, LIMIT), 0);
            assert!(path.exists());
            let live = Listener::bind(&address, None).unwrap();
            let e = Listener::bind(&address, None).unwrap_err();
            assert!(
                e.to_string().contains("another process is listening"),
                "{e}"
            );
            drop(live);
            let file = socket_path("regular");
            std::fs::write(&file, b"not a socket").unwrap();
            assert!(matches!(
                Listener::bind(&Address::Unix(file.clone()), None),
                Err(Error::InvalidArgument(_))
            ));
            std::fs::remove_file(&file).unwrap();
            assert!(matches!(
                "udp:1.2.3.4:5".parse::<Address>(),
                Err(Error::InvalidArgument(_))
            ));
        });
    });
}

// ---------------------------------------------------------------------------
// Queues

#[test]
fn queue_delivers_every_item_once_in_order_per_producer() {
    watchdog("queue", LIMIT, || {
        const PER: u32 = 20_000;
        let q = Queue::<(u32, u32)>::bounded(100).unwrap();
        multiproc::scope(|s| {
            let producers: Vec<_> = (0..3)
                .map(|p| {
                    let q = &q;
                    child(s, move || {
                        for i in 0..PER {
                            q.put((p, i)).unwrap();
                        }
                    })
                })
                .collect();
            let mut next = [0u32; 3];
            for _ in 0..3 * PER {
                let (p, i) = q.get_timeout(LIMIT).unwrap();
                assert_eq!(i, next[p as usize], "producer {p}'s items in order");
                next[p as usize] += 1;
            }
            assert!(q.is_empty() && matches!(q.try_get(), Err(Error::Empty)));
            for p in &producers {
                assert_eq!(join(p, LIMIT), 0);
            }
        });
    });
}

#[test]
fn full_and_empty_with_timeouts_hand_the_item_back() {
    let q = Queue::<String>::bounded(2).unwrap();
    q.put("a".into()).unwrap();
    q.try_put("b".into()).unwrap();
    assert!(q.is_full() && q.len() == 2);
    match q.try_put("c".into()) {
        Err(PutError::Full(item)) => assert_eq!(item, "c"),
        other => panic!("expected Full, got {other:?}"),
    }
    let t = Instant::now();
    match q.put_timeout("d".into(), Duration::from_millis(100)) {
        Err(PutError::Timeout(item)) => assert_eq!(item, "d"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.get().unwrap(), "a");
    assert_eq!(q.try_get().unwrap(), "b");
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));

    // Too large for the ring, whatever the wait: an error at once.
    let small = Queue::<Vec<u8>>::with_capacity(0, 256).unwrap();
    match small.put(vec![0; 1000]) {
        Err(PutError::TooLarge { item, max, .. }) => assert_eq!((item.len(), max), (1000, 252)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // An item whose encoding fails: an error at put, with the item.
    struct Unencodable;
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to be encoded"))
        }
    }
    impl<'de> serde::Deserialize<'de> for Unencodable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unencodable)
        }
    }
    let q = Queue::<Unencodable>::new().unwrap();
    assert!(matches!(q.put(Unencodable), Err(PutError::Serialize(_, _))));
    assert!(q.is_empty());
}

#[test]
fn close_fails_puts_drains_gets_and_wakes_waiters() {
    watchdog("close", LIMIT, || {
        let q = Queue::<u8>::new().unwrap();
        multiproc::scope(|s| {
            let waiter = child(s, || assert!(matches!(q.get(), Err(Error::Closed))));
            // Once the waiter sleeps in the kernel, close wakes it.
            assert!(wait_until(LIMIT, || procfs::blocked_in_futex(
                waiter.pid().unwrap()
            )));
            q.close_all().unwrap();
            assert_eq!(join(&waiter, LIMIT), 0);
            let q = Queue::<u8>::new().unwrap();
            q.put(1).unwrap();
            q.close_all().unwrap();
            assert!(matches!(q.put(2), Err(PutError::Closed(2))));
            assert_eq!(q.get().unwrap(), 1);
            assert!(matches!(q.get(), Err(Error::Closed)));
        });
    });
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    watchdog("joinable", LIMIT, || {
        let q = JoinableQueue::<u32>::new().unwrap();
        assert!(matches!(q.task_done(), Err(Error::TooManyTaskDone)));
        for i in 0..10 {
            q.put(i).unwrap();
        }
        let done = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let worker = child(s, || {
                for _ in 0..10 {
                    q.get().unwrap();
                    done.atomic().fetch_add(1, SeqCst);
                    q.task_done().unwrap();
                }
            });
            q.join_timeout(LIMIT).unwrap();
            assert_eq!(done.get(), 10, "join returned only after every task_done");
            assert_eq!(join(&worker, LIMIT), 0);
            assert!(matches!(q.task_done(), Err(Error::TooManyTaskDone)));
            q.join().unwrap(); // nothing unfinished: at once
            let s = SimpleQueue::<String>::new().unwrap();
            assert!(s.is_empty());
            s.put("x".into()).unwrap();
            assert_eq!(s.get().unwrap(), "x");
        });
    });
}

#[test]
fn named_queue_is_typed_and_shared() {
    watchdog("named queue", LIMIT, || {
        let name = TempName::new("queue");
        let q = Queue::<String>::create(&name, 0, 4096).unwrap();
        multiproc::scope(|s| {
            let c = child(s, || {
                let mine = Queue::<String>::open(&name).unwrap();
                mine.put("hello by name".into()).unwrap();
                assert!(matches!(
                    Queue::<u64>::open(&name),
                    Err(Error::TypeMismatch { .. })
                ));
                assert!(matches!(
                    JoinableQueue::<String>::open(&name),
                    Err(Error::KindMismatch { .. })
                ));
            });
            assert_eq!(join(&c, LIMIT), 0);
            assert_eq!(q.get().unwrap(), "hello by name");
        });
    });
}

/// `create_or_open` creates a queue once; later calls open it and keep its
/// ring size and item limit, whatever they ask for.
#[test]
fn queues_are_created_or_opened_by_name() {
    watchdog("create_or_open queue", LIMIT, || {
        let name = TempName::new("queue-coo");
        let q = Queue::<u32>::create_or_open(&name, 2, 4096).unwrap();
        let path = name.0.clone();
        let c = static_child(move || {
            let again = Queue::<u32>::create_or_open(&path, 0, 1 << 20).unwrap();
            again.put(1).unwrap();
            again.put(2).unwrap();
            assert!(again.is_full(), "the creator's limit of 2 items holds");
            assert_eq!(again.max_item_size(), 4096 - 4);
        });
        assert_eq!(join(&c, LIMIT), 0);
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (1, 2));
        let jname = TempName::new("jqueue-coo");
        let jq = JoinableQueue::<u32>::create_or_open(&jname, 0, 4096).unwrap();
        let opened = JoinableQueue::<u32>::create_or_open(&jname, 0, 4096).unwrap();
        opened.put(7).unwrap();
        assert_eq!(jq.get().unwrap(), 7);
        jq.task_done().unwrap();
        opened.join_timeout(LIMIT).unwrap();
        assert!(matches!(
            Queue::<u32>::create_or_open(&jname, 0, 4096),
            Err(Error::KindMismatch { .. })
        ));
    });
}

/// An item that shows if it was torn: a sequence number and a payload that
/// is derived from it.
fn item(producer: u32, seq: u32) -> (u32, u32, Vec<u8>) {
    (
        producer,
        seq,
        vec![(seq % 251) as u8; 4096 + (seq as usize % 64)],
    )
}

fn intact(it: &(u32, u32, Vec<u8>)) -> bool {
    *it == item(it.0, it.1)
}

/// Producers are SIGKILLed at random moments (many while holding the
/// queue's lock mid-copy); consumers too. Afterwards: no torn item, no
/// acknowledged item lost or doubled, and the queue still works.
#[test]
fn killing_producers_and_consumers_mid_operation_loses_and_tears_nothing() {
    watchdog("queue chaos", Duration::from_secs(120), || {
        const PRODUCERS: u32 = 3;
        const MAX_SEQ: usize = 200_000;
        let q = Queue::<(u32, u32, Vec<u8>)>::with_capacity(0, 64 << 10).unwrap();
        // acked[p * MAX_SEQ + seq] = 1 once that put returned.
        let acked = RawArray::<u8>::new(PRODUCERS as usize * MAX_SEQ).unwrap();
        let seen = RawArray::<u8>::new(PRODUCERS as usize * MAX_SEQ).unwrap();
        let next_seq = RawArray::<u32>::new(PRODUCERS as usize).unwrap();
        let torn = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let start_producer = |p: u32| {
                let (q, acked, next_seq) = (&q, &acked, &next_seq);
                child(s, move || loop {
                    // Each incarnation continues where the killed one stopped.
                    let seq = next_seq.atomic(p as usize).unwrap().fetch_add(1, SeqCst);
                    if seq as usize >= MAX_SEQ {
                        return;
                    }
                    q.put(item(p, seq)).unwrap();
                    acked.set(p as usize * MAX_SEQ + seq as usize, 1).unwrap();
                })
            };
            let start_consumer = || {
                let (q, seen, torn) = (&q, &seen, &torn);
                child(s, move || loop {
                    let it = q.get().unwrap();
                    if !intact(&it) {
                        torn.atomic().fetch_add(1, SeqCst);
                    }
                    seen.atomic(it.0 as usize * MAX_SEQ + it.1 as usize)
                        .unwrap()
                        .fetch_add(1, SeqCst);
                })
            };
            let mut producers: Vec<_> = (0..PRODUCERS).map(start_producer).collect();
            let mut consumers: Vec<_> = (0..2).map(|_| start_consumer()).collect();
            let mut kills = 0;
            let mut consumer_kills = 0;
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                std::thread::sleep(Duration::from_micros(500 + rng % 3000)); // chaos pacing
                let victim = (rng >> 20) as usize % (producers.len() + consumers.len());
                if victim < producers.len() {
                    producers[victim].kill().unwrap();
                    join(&producers[victim], LIMIT);
                    producers[victim] = start_producer(victim as u32);
                } else {
                    let v = victim - producers.len();
                    consumers[v].kill().unwrap();
                    join(&consumers[v], LIMIT);
                    consumers[v] = start_consumer();
                    consumer_kills += 1;
                }
                kills += 1;
            }
            for p in &producers {
                p.kill().unwrap();
                join(p, LIMIT);
            }
            for c in &consumers {
                c.kill().unwrap();
                join(c, LIMIT);
            }
            // What is left in the queue, drained by this process.
            while let Ok(it) = q.try_get() {
                assert!(intact(&it));
                seen.atomic(it.0 as usize * MAX_SEQ + it.1 as usize)
                    .unwrap()
                    .fetch_add(1, SeqCst);
            }
            assert_eq!(torn.get(), 0, "no torn item was ever delivered");
            let (acked, seen) = (acked.read(..).unwrap(), seen.read(..).unwrap());
            let mut lost = 0;
            for i in 0..acked.len() {
                assert!(seen[i] <= 1, "item {i} delivered {} times", seen[i]);
                if acked[i] == 1 && seen[i] == 0 {
                    lost += 1;
                }
            }
            // A consumer killed between taking an item and recording it loses
            // at most that one item; nothing else may be missing.
            assert!(
                lost <= consumer_kills,
                "{lost} acknowledged items lost, {consumer_kills} consumers killed"
            );
            // Real traffic went through, even on a slow machine or under a
            // sanitizer (several thousand items on an idle one).
            let delivered: usize = seen.iter().map(|&s| s as usize).sum();
            assert!(
                delivered > 100,
                "the queue kept working under chaos ({delivered} items)"
            );
            // Still usable by everyone.
            q.put(item(9, 9)).unwrap();
            assert!(intact(&q.get().unwrap()));
            eprintln!("queue chaos: {kills} kills, {delivered} items delivered, {lost} lost in killed consumers");
        });
    });
}

/// A queue whose shared offsets another process corrupted: every operation
/// reports it (or, for `is_full`, says "full"); none panics.
#[test]
fn a_corrupted_queue_is_an_error_not_a_panic() {
    let name = TempName::new("corrupt-queue");
    let q = Queue::<u64>::create(&name, 0, 256).unwrap();
    q.put(1).unwrap();
    // After the 256-byte segment header: the producers' and the consumers'
    // mutexes (a cache line each), then the state, whose tail and head
    // words (byte offset and item count packed) start lines of their own.
    const TAIL: u64 = 256 + 128 + 64;
    const HEAD: u64 = 256 + 128 + 128;
    let path = format!("/dev/shm/{}{}", multiproc::segment::PREFIX, &*name);
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    // Each end's line also holds, 16 bytes in, that side's last view of
    // the other end; a side looks at the other's end only when its view
    // says it must wait. The corruption is written to both, as if each
    // side had just looked.
    let write = |at: u64, word: u64| {
        let view = if at == HEAD { TAIL + 16 } else { HEAD + 16 };
        for at in [at, view] {
            std::os::unix::fs::FileExt::write_at(&file, &word.to_le_bytes(), at).unwrap();
        }
    };
    // The head past the tail.
    write(HEAD, u64::MAX);
    assert!(q.is_full());
    assert_eq!(q.len(), 0);
    assert!(matches!(q.try_get(), Err(Error::Corrupt { .. })));
    assert!(matches!(
        q.put(2),
        Err(PutError::Other(2, Error::Corrupt { .. }))
    ));
    let opened = Queue::<u64>::open(&name).unwrap();
    assert!(matches!(
        opened.get_timeout(Duration::from_millis(10)),
        Err(Error::Corrupt { .. })
    ));
    // Items counted where no bytes are, and bytes where no item is.
    write(HEAD, 0);
    write(TAIL, 5 << 36);
    assert!(matches!(q.try_get(), Err(Error::Corrupt { .. })));
    write(TAIL, 12);
    assert!(matches!(q.try_get(), Err(Error::Corrupt { .. })));
    // A frame that claims more bytes than there are.
    write(TAIL, 6 | 1 << 36);
    std::os::unix::fs::FileExt::write_at(&file, &1000u32.to_le_bytes(), 256 + 128 + 192).unwrap();
    assert!(matches!(q.try_get(), Err(Error::Corrupt { .. })));
    // Put right, it works again.
    write(TAIL, 0);
    q.put(3).unwrap();
    assert_eq!(q.get().unwrap(), 3);
}

/// Spins until `stopped`: a process that only takes CPU from the others.
fn burn_until(stopped: &impl Fn() -> bool) {
    while !stopped() {
        std::hint::spin_loop();
    }
}

/// Ends a busy-queue run after 3 s: stops and joins `others` (producers,
/// observers, burners), closes the queue with `close_all`, joins the
/// consumers, and checks that producer `p`'s first `put[p]` items were each
/// seen exactly once (`seen[p * max_seq + seq]`) and no other. Returns how
/// many items went through.
fn end_busy_run<'r, 'p: 'r>(
    stop: &RawValue<u32>,
    others: impl Iterator<Item = &'r multiproc::Process<'p>>,
    close_all: impl FnOnce(),
    consumers: &[multiproc::Process<'_>],
    (put, seen, max_seq): (&RawArray<u32>, &RawArray<u8>, usize),
) -> u32 {
    std::thread::sleep(Duration::from_secs(3)); // the length of the run
    stop.atomic().store(1, SeqCst);
    for p in others {
        assert_eq!(join(p, LIMIT), 0);
    }
    close_all();
    for c in consumers {
        assert_eq!(join(c, LIMIT), 0);
    }
    let (put, seen) = (put.read(..).unwrap(), seen.read(..).unwrap());
    for (p, &n) in put.iter().enumerate() {
        let mine = &seen[p * max_seq..(p + 1) * max_seq];
        assert!(
            mine[..n as usize].iter().all(|&s| s == 1),
            "producer {p}'s items delivered exactly once"
        );
        assert!(mine[n as usize..].iter().all(|&s| s == 0));
    }
    put.iter().sum()
}

/// More busy processes than CPUs, a small ring, nothing killed: consumers
/// and observers read the ring's ends while others move them, and a reader
/// descheduled between reading one end and the other must never take that
/// for corruption. Every item is delivered exactly once.
#[test]
fn a_busy_queue_never_reports_corruption() {
    watchdog("busy queue", LIMIT, || {
        const PRODUCERS: usize = 4;
        const MAX_SEQ: usize = 1 << 20;
        let q = Queue::<(u32, u32, Vec<u8>)>::with_capacity(0, 256).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        let put = RawArray::<u32>::new(PRODUCERS).unwrap();
        let seen = RawArray::<u8>::new(PRODUCERS * MAX_SEQ).unwrap();
        // [Corrupt from a get, any other error, a len() beyond the ring]
        let failures = RawArray::<u32>::new(3).unwrap();
        let stopped = || stop.atomic().load(SeqCst) != 0;
        let fail = |kind: usize| failures.atomic(kind).unwrap().fetch_add(1, SeqCst);
        multiproc::scope(|ps| {
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let (q, put) = (q.clone(), put.clone());
                    child(ps, move || {
                        let next = put.atomic(p).unwrap();
                        while !stopped() && (next.load(SeqCst) as usize) < MAX_SEQ {
                            let seq = next.load(SeqCst);
                            q.put((p as u32, seq, vec![seq as u8; seq as usize % 48]))
                                .unwrap();
                            next.store(seq + 1, SeqCst);
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..3)
                .map(|_| {
                    let (q, seen) = (q.clone(), seen.clone());
                    // No wait: every get looks at both ends without a lock
                    // first, and a full ring makes it return at once.
                    child(ps, move || loop {
                        match q.get_timeout(Duration::ZERO) {
                            Ok((p, seq, _)) => {
                                seen.atomic(p as usize * MAX_SEQ + seq as usize)
                                    .unwrap()
                                    .fetch_add(1, SeqCst);
                            }
                            Err(Error::Closed) => return,
                            Err(Error::Timeout) => {}
                            Err(Error::Corrupt { .. }) => drop(fail(0)),
                            Err(_) => drop(fail(1)),
                        }
                    })
                })
                .collect();
            // Other processes look at the queue's size the whole time, and
            // some only burn CPU, so that readers are descheduled often.
            let observers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    child(ps, move || {
                        while !stopped() {
                            if q.len() > q.max_item_size() / 4 + 1 {
                                fail(2);
                            }
                            std::hint::black_box(q.is_full());
                        }
                    })
                })
                .collect();
            let burners: Vec<_> = (0..4)
                .map(|_| child(ps, move || burn_until(&stopped)))
                .collect();
            let total = end_busy_run(
                &stop,
                producers.iter().chain(&observers).chain(&burners),
                || q.close_all().unwrap(),
                &consumers,
                (&put, &seen, MAX_SEQ),
            );
            let failures = failures.read(..).unwrap();
            eprintln!("busy queue: {total} items, failures {failures:?}");
            assert_eq!(
                failures,
                [0, 0, 0],
                "[Corrupt, other errors, impossible len()]"
            );
            assert!(total > 100, "traffic went through ({total} items)");
        })
    });
}

/// An item put just before `close_all` is got before `Closed`: a getter
/// used to see the ring empty, then the close, and report `Closed` with
/// the item still in the queue (about 1 in 13 trials with threads).
#[test]
fn close_all_never_hides_the_last_item() {
    watchdog("close_all vs the last item", LIMIT, || {
        for trial in 0..2000 {
            let q = Queue::<u64>::with_capacity(0, 4096).unwrap();
            let got = std::thread::scope(|s| {
                let c = s.spawn(|| {
                    let mut got = 0;
                    loop {
                        match q.try_get() {
                            Ok(_) => got += 1,
                            Err(Error::Empty) => {}
                            Err(Error::Closed) => return got,
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
                std::thread::yield_now();
                q.put(7).unwrap();
                q.close_all().unwrap();
                c.join().unwrap()
            });
            assert_eq!(
                got,
                1,
                "trial {trial}: Closed with {} item(s) left",
                q.len()
            );
        }
    });
}

/// As above across processes, the getter blocked in `get_timeout`.
#[test]
fn close_all_never_hides_the_last_item_across_processes() {
    watchdog("close_all vs the last item, processes", LIMIT, || {
        let ready = RawValue::new(0u32).unwrap();
        for _ in 0..50 {
            let q = Queue::<u64>::with_capacity(0, 4096).unwrap();
            ready.atomic().store(0, SeqCst);
            multiproc::scope(|s| {
                let c = child(s, || {
                    ready.atomic().store(1, SeqCst);
                    let mut got = 0;
                    loop {
                        match q.get_timeout(LIMIT) {
                            Ok(_) => got += 1,
                            Err(Error::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    assert_eq!(got, 1, "Closed with an item left");
                });
                assert!(wait_until(LIMIT, || ready.atomic().load(SeqCst) == 1));
                q.put(7).unwrap();
                q.close_all().unwrap();
                assert_eq!(join(&c, LIMIT), 0);
            });
        }
    });
}

/// `is_full` of a queue of zero-byte items (`()`) agrees with `try_put`.
#[test]
fn is_full_agrees_with_unit_items() {
    let q = Queue::<()>::with_capacity(0, 64).unwrap();
    let mut n = 0;
    loop {
        let full = q.is_full();
        match q.try_put(()) {
            Ok(()) => assert!(!full, "is_full said full, then a put fitted"),
            Err(PutError::Full(())) => {
                assert!(full, "a put was refused, but is_full said not full");
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
        n += 1;
        assert!(n <= 64);
    }
    assert_eq!(q.len(), n);
    // Items of a byte or more: full once a one-byte item no longer fits.
    let q = Queue::<u8>::with_capacity(0, 64).unwrap();
    while q.try_put(1).is_ok() {
        assert!(q.len() <= 64);
    }
    assert!(q.is_full());
}

/// The byte queue's in-place paths under the same load: producers fill
/// frames with `put_with_timeout` (zero and one-nanosecond timeouts, so
/// they mostly fail on a full ring and look again), consumers read them in
/// place with `try_get_with` and `get_with_timeout`, observers call `len`,
/// `is_full` and `is_empty`, and more processes run than there are CPUs.
/// No `Corrupt`, no torn frame, every item exactly once.
#[test]
fn a_busy_byte_queue_read_in_place_never_reports_corruption() {
    use multiproc::queue::Bytes;
    watchdog("busy byte queue", LIMIT, || {
        const PRODUCERS: usize = 3;
        const MAX_SEQ: usize = 1 << 20;
        let q = Queue::<Bytes>::with_capacity(0, 192).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        let put = RawArray::<u32>::new(PRODUCERS).unwrap();
        let seen = RawArray::<u8>::new(PRODUCERS * MAX_SEQ).unwrap();
        // [Corrupt, any other error, a torn frame, a len() beyond the ring]
        let failures = RawArray::<u32>::new(4).unwrap();
        let stopped = || stop.atomic().load(SeqCst) != 0;
        let fail = |kind: usize| failures.atomic(kind).unwrap().fetch_add(1, SeqCst);
        multiproc::scope(|ps| {
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let (q, put) = (q.clone(), put.clone());
                    child(ps, move || {
                        let next = put.atomic(p).unwrap();
                        let mut n = 0u32;
                        while !stopped() && (next.load(SeqCst) as usize) < MAX_SEQ {
                            let seq = next.load(SeqCst);
                            let len = 8 + seq as usize % 60;
                            let t = Duration::from_nanos(u64::from(n % 2));
                            n += 1;
                            let r = q.put_with_timeout(len, t, |b| {
                                b[..4].copy_from_slice(&(p as u32).to_le_bytes());
                                b[4..8].copy_from_slice(&seq.to_le_bytes());
                                b[8..].fill(seq as u8);
                            });
                            match r {
                                Ok(()) => next.store(seq + 1, SeqCst),
                                Err(Error::Timeout) => {}
                                Err(Error::Corrupt { .. }) => drop(fail(0)),
                                Err(_) => drop(fail(1)),
                            }
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..3)
                .map(|c| {
                    let (q, seen) = (q.clone(), seen.clone());
                    child(ps, move || {
                        let read = |b: &[u8]| {
                            let p = u32::from_le_bytes(b[..4].try_into().unwrap());
                            let seq = u32::from_le_bytes(b[4..8].try_into().unwrap());
                            let whole = b.len() == 8 + seq as usize % 60
                                && b[8..].iter().all(|&x| x == seq as u8);
                            (p, seq, whole)
                        };
                        let timeouts = [1, 999_999_999];
                        let mut n = 0usize;
                        loop {
                            n += 1;
                            let r = if (n + c) % 3 == 0 {
                                q.try_get_with(read)
                            } else {
                                let t = Duration::from_nanos(timeouts[n % 2]);
                                q.get_with_timeout(t, read)
                            };
                            match r {
                                Ok((p, seq, whole)) => {
                                    if !whole || p as usize >= PRODUCERS {
                                        fail(2);
                                        continue;
                                    }
                                    seen.atomic(p as usize * MAX_SEQ + seq as usize)
                                        .unwrap()
                                        .fetch_add(1, SeqCst);
                                }
                                Err(Error::Closed) => return,
                                Err(Error::Timeout | Error::Empty) => {}
                                Err(Error::Corrupt { .. }) => drop(fail(0)),
                                Err(_) => drop(fail(1)),
                            }
                        }
                    })
                })
                .collect();
            let observers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    child(ps, move || {
                        while !stopped() {
                            if q.len() > q.max_item_size() / 4 + 1 {
                                fail(3);
                            }
                            std::hint::black_box((q.is_full(), q.is_empty()));
                        }
                    })
                })
                .collect();
            let burners: Vec<_> = (0..3)
                .map(|_| child(ps, move || burn_until(&stopped)))
                .collect();
            let total = end_busy_run(
                &stop,
                producers.iter().chain(&observers).chain(&burners),
                || q.close_all().unwrap(),
                &consumers,
                (&put, &seen, MAX_SEQ),
            );
            let failures = failures.read(..).unwrap();
            eprintln!("busy byte queue: {total} items, failures {failures:?}");
            assert_eq!(
                failures,
                [0, 0, 0, 0],
                "[Corrupt, other errors, torn frames, impossible len()]"
            );
            assert!(total > 100, "traffic went through ({total} items)");
        })
    });
}
