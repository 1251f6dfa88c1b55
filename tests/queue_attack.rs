//! Attacks on the shared-memory queues, third round: cases the earlier
//! rounds (messaging, shared_attack, queue_batch, queue_bytes, sweep_kill,
//! async_attack) left out.

mod common;

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use common::wakers::{poll_with, Flag, PATIENCE};
use common::{join, procfs, static_child, wait_until, watchdog, TempName};
use multiproc::queue::{Bytes, PutError};
use multiproc::{Error, Event, Queue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Queues used from a thread-local destructor.

/// Queues that a thread-local value uses when its thread ends.
struct Queues {
    items: Queue<Vec<u8>>,
    /// A ring of 100 bytes: a 60-byte frame after another one straddles
    /// its end.
    frames: Queue<Bytes>,
}

impl Queues {
    /// Puts and gets of small and large items, a batch each way, and byte
    /// frames whose second one straddles the ring's end: every buffer the
    /// queues keep per thread is used.
    fn exercise(&self) {
        let large = vec![2u8; 5000];
        self.items.put(vec![1u8; 10]).unwrap();
        self.items.put(large.clone()).unwrap();
        assert_eq!(self.items.get().unwrap(), vec![1u8; 10]);
        assert_eq!(self.items.get().unwrap(), large);
        self.items
            .put_many([vec![3u8; 100], vec![4u8; 100]])
            .unwrap();
        assert_eq!(
            self.items.get_many(10).unwrap(),
            [vec![3u8; 100], vec![4u8; 100]]
        );
        for fill in [5u8, 6] {
            self.frames.put_bytes(&[fill; 60]).unwrap();
            assert_eq!(self.frames.get_bytes().unwrap(), [fill; 60]);
        }
    }
}

/// Uses the queues again when dropped, then says so on `done`.
struct UsesQueuesOnDrop(Queues, Queue<u32>);

impl Drop for UsesQueuesOnDrop {
    fn drop(&mut self) {
        self.0.exercise();
        self.1.put(1).unwrap();
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<UsesQueuesOnDrop>> = const { RefCell::new(None) };
}

/// A thread-local value whose destructor puts and gets (a handle that
/// flushes its records when its thread ends) works whatever the order in
/// which the thread's values are destroyed: the queues' own per-thread
/// buffers may be gone by then, and the calls do without them instead of
/// panicking (a panic in a thread-local destructor aborts the process).
#[test]
fn queues_work_in_a_thread_local_destructor() {
    watchdog("queues in a thread-local destructor", LIMIT, || {
        let queues = Queues {
            items: Queue::new().unwrap(),
            frames: Queue::with_capacity(0, 100).unwrap(),
        };
        let done = Queue::<u32>::new().unwrap();
        let (items, frames, theirs) = (queues.items.clone(), queues.frames.clone(), done.clone());
        let p = static_child(move || {
            std::thread::spawn(move || {
                // Registered first, so destroyed after the buffers the
                // queues register below (in reverse order).
                ON_EXIT.with(|d| {
                    *d.borrow_mut() = Some(UsesQueuesOnDrop(Queues { items, frames }, theirs))
                });
                ON_EXIT.with(|d| d.borrow().as_ref().unwrap().0.exercise());
            })
            .join()
            .unwrap();
        });
        assert_eq!(join(&p, LIMIT), 0);
        assert_eq!(done.try_get().unwrap(), 1);
        assert!(queues.items.is_empty() && queues.frames.is_empty());
    });
}

// ---------------------------------------------------------------------------
// An async put that finds the producers' lock held.

/// Bytes encoded as one byte string (a memory copy, as `serde_bytes`
/// does), so that a large item costs a producer about as long to encode
/// as to copy into the ring under the producers' lock.
#[derive(Clone, Debug, PartialEq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

/// Sends `signal` to process `pid`, which this test started.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: a signal to a child of this test, by its pid.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// An async put that arrives while another producer holds the producers'
/// lock (here: a process stopped while it copies a large item in), with
/// room in the ring, is woken when that producer publishes its item and
/// lets the lock go: not only by its periodic look again (100 ms later).
/// No consumer moves the head meanwhile (consumers busy elsewhere: the
/// queue only grows), so a put that waits for the head waits for that
/// look, every time it meets the lock held.
#[test]
fn an_async_put_that_finds_the_producers_lock_busy_is_woken_when_it_frees() {
    watchdog("put behind a busy producers' lock", LIMIT, || {
        const ROUNDS: usize = 4;
        let q = Queue::<Blob>::with_capacity(0, 64 << 20).unwrap();
        let theirs = q.clone();
        let producer = static_child(move || loop {
            theirs.put(Blob(vec![7; 1 << 20])).unwrap();
        });
        let pid = producer.pid().unwrap();
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let (mut measured, mut slow, mut tries) = (0, 0, 0);
        while measured < ROUNDS {
            tries += 1;
            assert!(
                tries < 10_000,
                "the producer was never caught holding the lock"
            );
            // Room for everything the producer puts until the next round.
            while q.try_get_many(1000).is_ok() {}
            signal(pid, libc::SIGSTOP);
            assert!(wait_until(LIMIT, || procfs::stopped(pid)));
            // Stopped with the lock held: a try finds no room, yet the
            // ring has plenty.
            let held =
                matches!(q.try_put(Blob(Vec::new())), Err(PutError::Full(_))) && !q.is_full();
            if !held {
                signal(pid, libc::SIGCONT);
                continue;
            }
            let mut put = Box::pin(q.put_timeout_async(Blob(vec![1]), PATIENCE));
            let seen = flag.count();
            assert!(
                poll_with(put.as_mut(), &waker).is_pending(),
                "the lock is held"
            );
            let resumed = Instant::now();
            signal(pid, libc::SIGCONT);
            let end = resumed + PATIENCE;
            let mut seen = seen;
            loop {
                assert!(flag.wait_past(seen, end - Instant::now()), "never woken");
                seen = flag.count();
                if let Poll::Ready(r) = poll_with(put.as_mut(), &waker) {
                    r.unwrap();
                    break;
                }
            }
            measured += 1;
            if resumed.elapsed() >= Duration::from_millis(70) {
                slow += 1;
            }
        }
        producer.kill().unwrap();
        assert_ne!(join(&producer, LIMIT), 0);
        assert!(
            slow < ROUNDS,
            "every round, the async put got in only at its periodic look ({tries} tries)"
        );
    });
}

// ---------------------------------------------------------------------------
// A batch whose iterator waits on its own queue through another handle.

/// A `put_many` iterator that waits for an item of its own queue while
/// the batch holds back items, through another handle on that queue (a
/// named queue opened again in the same process: a mapping of its own),
/// gets [`Error::Deadlock`] as through the same handle: the wait would
/// never end (here it would time out; a `get` would hang).
#[test]
fn a_batch_whose_iterator_waits_through_another_handle_is_a_deadlock_error() {
    watchdog(
        "put_many waiting for itself by another handle",
        LIMIT,
        || {
            let name = TempName::new("qa-held-back");
            let created = Queue::<u64>::create(&name, 0, 4096).unwrap();
            let opened = Queue::<u64>::open(&name).unwrap();
            for (put, get) in [(&created, &opened), (&opened, &created)] {
                let mut inner = None;
                put.put_many((0..4u64).inspect(|&i| {
                    if i == 2 {
                        inner = Some(get.get_timeout(Duration::from_secs(5)));
                    }
                }))
                .unwrap();
                assert!(matches!(inner, Some(Err(Error::Deadlock))), "{inner:?}");
                assert_eq!(get.try_get_many(10).unwrap(), [0, 1, 2, 3]);
            }
            // Another queue's handle waits as usual.
            let other = Queue::<u64>::new().unwrap();
            let mut inner = None;
            created
                .put_many((0..2u64).inspect(|&i| {
                    if i == 1 {
                        inner = Some(other.get_timeout(Duration::from_millis(1)));
                    }
                }))
                .unwrap();
            assert!(matches!(inner, Some(Err(Error::Timeout))), "{inner:?}");
        },
    );
}

/// A child process started by a `put_many` iterator (a worker per so
/// many jobs, say) holds back nothing: its thread's copy of the batch's
/// mark is its parent's. Its `get` on the queue, empty until the parent's
/// batch is published, waits for the batch as any other process's does,
/// instead of failing at once with [`Error::Deadlock`].
#[test]
fn a_child_started_by_a_batchs_iterator_waits_for_the_batch() {
    watchdog("a worker started inside put_many", LIMIT, || {
        let q = Queue::<u64>::new().unwrap();
        let waited = Event::new().unwrap();
        let mut worker = None;
        q.put_many((0..4u64).inspect(|&i| {
            if i == 1 {
                let (theirs, told) = (q.clone(), waited.clone());
                let started = static_child(move || {
                    // Before the batch is published: a wait that times out.
                    let early = theirs.get_timeout(Duration::from_millis(1));
                    assert!(matches!(early, Err(Error::Timeout)), "{early:?}");
                    told.set();
                    assert_eq!(theirs.get_timeout(LIMIT).unwrap(), 0);
                });
                // Until it has waited, or failed (its exit code says how).
                assert!(wait_until(LIMIT, || waited.is_set() || !started.is_alive()));
                worker = Some(started);
            }
        }))
        .unwrap();
        assert_eq!(join(&worker.unwrap(), LIMIT), 0);
        assert_eq!(q.try_get_many(10).unwrap(), [1, 2, 3]);
    });
}

// ---------------------------------------------------------------------------
// Async puts and gets with tiny timeouts on a contended bounded queue.

/// Async puts and gets of two processes' tasks, each with a timeout of
/// up to a fraction of a millisecond, on a queue of two items whose
/// producers' and consumers' locks are contended: a put that timed out
/// added nothing, one that returned `Ok` added its item once, and a get
/// that timed out took nothing. The set of items put is the set got.
#[test]
fn async_puts_and_gets_that_time_out_add_and_take_nothing() {
    use multiproc::{RawArray, RawValue};
    use std::sync::atomic::Ordering::SeqCst;
    const PER_TASK: u32 = 300;
    const TASKS: u32 = 6;
    const ITEMS: u32 = 2 * TASKS * PER_TASK;
    watchdog("async timeouts on a bounded queue", LIMIT, || {
        let q = Queue::<u32>::bounded(2).unwrap();
        let put = RawArray::<u32>::new(ITEMS as usize).unwrap();
        let got = RawArray::<u32>::new(ITEMS as usize).unwrap();
        let producers_done = RawValue::new(0u32).unwrap();
        let spread =
            |seed: u32| Duration::from_micros(u64::from(seed.wrapping_mul(2_654_435_761) % 300));
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let (q, put, done) = (q.clone(), put.clone(), producers_done.clone());
                common::async_child(common::current_thread, move || async move {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|t| {
                            let (q, put) = (q.clone(), put.clone());
                            tokio::spawn(async move {
                                for k in 0..PER_TASK {
                                    let i = (p * TASKS + t) * PER_TASK + k;
                                    match q.put_timeout_async(i, spread(i)).await {
                                        Ok(()) => {
                                            put.atomic(i as usize).unwrap().fetch_add(1, SeqCst);
                                        }
                                        Err(PutError::Timeout(back)) => assert_eq!(back, i),
                                        Err(e) => panic!("put {i}: {e}"),
                                    }
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    done.atomic().fetch_add(1, SeqCst);
                })
            })
            .collect();
        let consumer = {
            let (q, got, done) = (q.clone(), got.clone(), producers_done.clone());
            common::async_child(common::multi_thread, move || async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let (q, got, done) = (q.clone(), got.clone(), done.clone());
                        tokio::spawn(async move {
                            let mut n = t;
                            while done.get() < 2 {
                                n = n.wrapping_add(7);
                                match q.get_timeout_async(spread(n)).await {
                                    Ok(i) => {
                                        got.atomic(i as usize).unwrap().fetch_add(1, SeqCst);
                                    }
                                    Err(Error::Timeout) => {}
                                    Err(e) => panic!("get: {e}"),
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        };
        for p in &producers {
            assert_eq!(join(p, LIMIT), 0);
        }
        assert_eq!(join(&consumer, LIMIT), 0);
        while let Ok(i) = q.try_get() {
            got.atomic(i as usize).unwrap().fetch_add(1, SeqCst);
        }
        let (put, got) = (put.read(..).unwrap(), got.read(..).unwrap());
        let added = put.iter().filter(|&&n| n == 1).count();
        for i in 0..ITEMS as usize {
            assert!(put[i] <= 1, "item {i} put {} times", put[i]);
            assert_eq!(
                got[i], put[i],
                "item {i}: put {} times, got {}",
                put[i], got[i]
            );
        }
        eprintln!("{added} of {ITEMS} put");
        assert!(added > 0, "no put got in");
    });
}
