//! Attacks on the shared-memory queues, fifth round: a queue wait that a
//! descendant inherits under a reused pid, and cases the earlier rounds
//! (queue_attack*, queue_batch, queue_bytes, shared_attack*, sweep_kill)
//! left out.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use common::procfs::{gettid, thread_blocked_in_futex};
use common::{fork_as, join, static_child, wait_until, watchdog};
use multiproc::{Queue, RawValue};

const LIMIT: Duration = Duration::from_secs(120);

/// A pending wait of the process that made it, kept in a static (which a
/// forked child inherits).
static HELD: Mutex<Option<Box<dyn Send>>> = Mutex::new(None);

/// Stages of the reused-pid test, in a word every process sees.
const SQUAT: u32 = 1;
const DROPPED: u32 = 2;
const NO_PID: u32 = 3;

/// How long a blocking getter of `q` takes from its call to its return,
/// when an item is put once it sleeps in the kernel: the least of five
/// tries. A getter that the put does not wake sleeps out its 100 ms
/// (counted from after its call) before it looks again.
fn quickest_wake(q: &Queue<u32>) -> Duration {
    (0..5)
        .map(|n| {
            std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::channel();
                let getter = s.spawn(move || {
                    tx.send(gettid()).unwrap();
                    let called = Instant::now();
                    assert_eq!(q.get_timeout(LIMIT).unwrap(), n);
                    called.elapsed()
                });
                let tid = rx.recv().unwrap();
                let pid = std::process::id();
                assert!(
                    wait_until(Duration::from_secs(30), || thread_blocked_in_futex(
                        pid, tid
                    )),
                    "the getter never slept"
                );
                q.put(n).unwrap();
                getter.join().unwrap()
            })
        })
        .min()
        .unwrap()
}

/// A process polls a `get_async` once (counted as a sleeper of the
/// queue), forks, drops its wait (uncounted again) and dies. A descendant
/// that gets the dead process's pid drops its copy of the wait: that copy
/// is not the descendant's, and must leave the count alone. It did not (a
/// pid was all that told the processes apart): the count fell one below
/// the sleepers, a lone blocking getter counted as none, and a put left
/// it asleep until its next look, 100 ms later.
#[test]
fn an_inherited_get_dropped_under_a_reused_pid_leaves_the_sleepers_counted() {
    watchdog("a queue wait inherited under a reused pid", LIMIT, || {
        let q: Queue<u32> = Queue::new().unwrap();
        let stage = RawValue::new(0u32).unwrap();
        let (theirs, st) = (q.clone(), stage.clone());
        let holder = static_child(move || {
            let mut get = Box::pin(async move { theirs.get_async().await });
            let pending = get
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending();
            assert!(pending, "a get from an empty queue ended");
            *HELD.lock().unwrap() = Some(Box::new(get));
            let me = std::process::id();
            // SAFETY: the forked child runs the code below, then ends
            // without exit handlers.
            if unsafe { libc::fork() } == 0 {
                while st.atomic().load(SeqCst) != SQUAT {
                    std::thread::yield_now();
                }
                let took = fork_as(me, || {
                    drop(HELD.lock().unwrap().take());
                    st.atomic().store(DROPPED, SeqCst);
                });
                if !took {
                    st.atomic().store(NO_PID, SeqCst);
                }
                // SAFETY: ending the forked child.
                unsafe { libc::_exit(0) };
            }
            // Its own wait, dropped where it was made: uncounted.
            drop(HELD.lock().unwrap().take());
        });
        assert_eq!(join(&holder, Duration::from_secs(30)), 0);
        stage.atomic().store(SQUAT, SeqCst);
        assert!(wait_until(Duration::from_secs(60), || stage
            .atomic()
            .load(SeqCst)
            > SQUAT));
        if stage.atomic().load(SeqCst) == NO_PID {
            eprintln!("the holder's pid could not be taken again: nothing to test");
            return;
        }
        // A counted sleeper is woken by the put itself; an uncounted one
        // only by its next look, 100 ms after it fell asleep (after its call).
        let wake = quickest_wake(&q);
        assert!(
            wake < Duration::from_millis(100),
            "a getter took {wake:?} from its call to see a put made while it slept"
        );
    });
}

/// Edges of one small ring: an item of exactly the largest size and one
/// byte over it, empty frames, `put_with` and `get_with` closures that
/// panic, zero and endless timeouts (blocking and async), zero and huge
/// batch sizes, more `task_done`s than items. After each the queue is whole: nothing reported as corrupt,
/// nothing lost, nothing left half put.
#[test]
fn edges_of_a_small_ring_leave_it_whole() {
    use multiproc::queue::Bytes;
    use multiproc::{Error, JoinableQueue};
    watchdog("edges of a small ring", LIMIT, || {
        let q = Queue::<Bytes>::with_capacity(0, 64).unwrap();
        let max = q.max_item_size();
        // Exactly the largest item, round after round (at every offset of the ring).
        for round in 0..3u8 {
            let item = vec![round; max];
            q.put_bytes(&item).unwrap();
            assert_eq!(q.get_bytes().unwrap(), item, "round {round}");
        }
        // One byte over: refused, nothing put.
        let over = q.put_bytes(&vec![7; max + 1]);
        assert!(over.is_err(), "an item over the largest size was put");
        assert!(q.is_empty());
        assert!(matches!(q.try_get_bytes(), Err(Error::Empty)));
        // Empty frames, and a length no ring holds.
        q.put_with(0, |b| assert!(b.is_empty())).unwrap();
        assert_eq!(q.get_with(|b| b.len()).unwrap(), 0);
        assert!(matches!(
            q.put_with(usize::MAX, |_| unreachable!()),
            Err(Error::MessageTooLarge { .. })
        ));
        assert!(q.is_empty());
        // A `put_with` that panics puts nothing and keeps nothing locked.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.put_with(max, |b| {
                b.fill(1);
                panic!("filling");
            })
        }));
        assert!(panicked.is_err());
        assert!(q.is_empty(), "a panicking fill left an item");
        q.put_bytes(b"after").unwrap();
        // A `get_with` that panics takes nothing.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.get_with(|_| panic!("reading"))
        }));
        assert!(panicked.is_err());
        q.put_bytes(b"next").unwrap();
        // The frame a panicking `get_with` held stays whole, first.
        assert_eq!(q.get_bytes_timeout(Duration::MAX).unwrap(), b"after");
        assert_eq!(q.get_bytes_timeout(Duration::ZERO).unwrap(), b"next");
        assert!(matches!(
            q.get_bytes_timeout(Duration::ZERO),
            Err(Error::Timeout | Error::Empty)
        ));
        q.put_bytes_timeout(b"zero", Duration::ZERO).unwrap();
        q.put_bytes_timeout(b"max", Duration::MAX).unwrap();
        assert_eq!(q.get_bytes().unwrap(), b"zero");
        assert_eq!(q.get_bytes().unwrap(), b"max");

        // Batches of zero and of every item.
        let n = Queue::<u32>::with_capacity(0, 256).unwrap();
        n.put_many(std::iter::empty::<u32>()).unwrap();
        assert!(n.is_empty());
        assert!(n.get_many_timeout(0, Duration::ZERO).unwrap().is_empty());
        n.put_many(0..5).unwrap();
        assert!(n.try_get_many(0).unwrap().is_empty());
        assert_eq!(n.get_many(usize::MAX).unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(matches!(
            n.get_many_timeout(usize::MAX, Duration::ZERO),
            Err(Error::Timeout | Error::Empty)
        ));
        // More items than the ring holds, in one call: a consumer makes room.
        std::thread::scope(|s| {
            let taker = s.spawn(|| {
                let mut got = Vec::new();
                while got.len() < 10_000 {
                    got.extend(n.get_many_timeout(usize::MAX, LIMIT).unwrap());
                }
                got
            });
            n.put_many(0..10_000).unwrap();
            assert_eq!(taker.join().unwrap(), (0..10_000).collect::<Vec<u32>>());
        });

        // More `task_done`s than items: refused, and the count stays right.
        let j = JoinableQueue::<u32>::new().unwrap();
        assert!(matches!(j.task_done(), Err(Error::TooManyTaskDone)));
        j.put(1).unwrap();
        assert!(matches!(
            j.join_timeout(Duration::ZERO),
            Err(Error::Timeout)
        ));
        j.get().unwrap();
        j.task_done().unwrap();
        assert!(matches!(j.task_done(), Err(Error::TooManyTaskDone)));
        j.join_timeout(Duration::MAX).unwrap();
        j.put(2).unwrap();
        assert!(matches!(
            j.join_timeout(Duration::from_millis(1)),
            Err(Error::Timeout)
        ));

        // The async forms, with zero and endless timeouts.
        common::current_thread().block_on(async {
            let (got, ()) = tokio::join!(n.get_timeout_async(Duration::MAX), async {
                n.put(9).unwrap()
            });
            assert_eq!(got.unwrap(), 9);
            assert!(matches!(
                n.get_timeout_async(Duration::ZERO).await,
                Err(Error::Timeout | Error::Empty)
            ));
            assert!(matches!(
                j.join_timeout_async(Duration::ZERO).await,
                Err(Error::Timeout)
            ));
            let (joined, ()) = tokio::join!(j.join_timeout_async(Duration::MAX), async {
                j.get().unwrap();
                j.task_done().unwrap();
            });
            joined.unwrap();
        });
    });
}

/// Eight producers and eight consumers (more processes than CPUs) on a
/// small ring, singly and in batches, killed with SIGKILL at random and
/// started again for three seconds: no process ever sees an error other
/// than a timeout, and what is left drains as whole items.
#[test]
fn many_processes_killed_at_random_never_see_corruption() {
    use multiproc::{Error, Process};
    const SIDE: usize = 8;
    watchdog("sixteen processes killed at random", LIMIT, || {
        let q = Queue::<u64>::with_capacity(0, 256).unwrap();
        let bad = RawValue::new(0u32).unwrap();
        let start = |n: usize| -> Process<'static> {
            let (q, bad) = (q.clone(), bad.clone());
            static_child(move || {
                let report = |e: Error| {
                    bad.atomic().store(1, SeqCst);
                    panic!("process {n}: {e}");
                };
                let wait = Duration::from_millis(200);
                for seq in 0u64.. {
                    let batch = seq % 3 == 0;
                    if n < SIDE {
                        let item = (n as u64) << 32 | seq;
                        let put = if batch {
                            q.put_many_timeout([item, item], wait)
                                .map_err(|e| Error::from(e.error))
                        } else {
                            q.put_timeout(item, wait).map_err(Error::from)
                        };
                        match put {
                            Ok(()) | Err(Error::Timeout) => {}
                            Err(e) => report(e),
                        }
                    } else {
                        let got = if batch {
                            q.get_many_timeout(1 + seq as usize % 5, wait)
                        } else {
                            q.get_timeout(wait).map(|i| vec![i])
                        };
                        match got {
                            Ok(items) => {
                                for i in items {
                                    assert!(i >> 32 < SIDE as u64, "process {n}: item {i:#x}");
                                }
                            }
                            Err(Error::Timeout | Error::Empty) => {}
                            Err(e) => report(e),
                        }
                    }
                }
            })
        };
        let mut procs: Vec<Process<'static>> = (0..2 * SIDE).map(start).collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x as usize % (2 * SIDE);
            std::thread::sleep(Duration::from_micros(x >> 50));
            procs[n].kill().unwrap();
            join(&procs[n], Duration::from_secs(30));
            assert_eq!(bad.atomic().load(SeqCst), 0, "a process saw an error");
            procs[n] = start(n);
        }
        for p in &procs {
            p.kill().unwrap();
            join(p, Duration::from_secs(30));
        }
        assert_eq!(bad.atomic().load(SeqCst), 0, "a process saw an error");
        loop {
            match q.get_timeout(Duration::from_millis(300)) {
                Ok(i) => assert!(i >> 32 < SIDE as u64, "item {i:#x}"),
                Err(Error::Timeout | Error::Empty) => break,
                Err(e) => panic!("draining: {e}"),
            }
        }
    });
}

/// A named queue opened by an unrelated process as another kind, another
/// item type, another ring size or item limit: the kinds and types are
/// told apart, the queue keeps its own size and limit, and a joinable
/// queue counts every task, whichever handle put it.
#[test]
fn a_named_queue_opened_differently_by_another_process_stays_whole() {
    use common::TempName;
    use multiproc::{Error, JoinableQueue};
    watchdog("a named queue opened differently", LIMIT, || {
        let name = TempName::new("q5-other");
        let q = Queue::<u32>::create(&name, 2, 256).unwrap();
        let (theirs, max) = (name.0.clone(), q.max_item_size());
        let child = static_child(move || {
            assert!(JoinableQueue::<u32>::open(&theirs).is_err());
            assert!(matches!(
                Queue::<String>::open(&theirs),
                Err(Error::TypeMismatch { .. })
            ));
            let s = Queue::<u32>::create_or_open(&theirs, 0, 1 << 20).unwrap();
            assert_eq!(s.max_item_size(), max);
            s.put(1).unwrap();
            s.put(2).unwrap();
            let third = s.put_timeout(3, Duration::from_millis(10));
            assert!(matches!(third, Err(multiproc::queue::PutError::Timeout(3))));
        });
        assert_eq!(join(&child, Duration::from_secs(30)), 0);
        assert_eq!(q.get_many(usize::MAX).unwrap(), [1, 2]);
        q.put(5).unwrap();
        assert_eq!(q.get().unwrap(), 5);

        let jname = TempName::new("q5-joinable");
        let j = JoinableQueue::<u32>::create(&jname, 0, 4096).unwrap();
        let theirs = jname.0.clone();
        let child = static_child(move || match Queue::<u32>::open(&theirs) {
            Ok(plain) => plain.put(1).unwrap(),
            Err(_) => JoinableQueue::<u32>::open(&theirs).unwrap().put(1).unwrap(),
        });
        assert_eq!(join(&child, Duration::from_secs(30)), 0);
        assert_eq!(j.get().unwrap(), 1);
        // Counted as a task whichever handle put it.
        j.task_done().unwrap();
        j.join_timeout(Duration::ZERO).unwrap();
    });
}

/// The parent's pending `get_async` of the fork test, kept where the
/// child's copy of it can be dropped.
type Get = std::pin::Pin<Box<dyn Future<Output = multiproc::Result<u32>> + Send>>;
static FORKED: Mutex<Option<Get>> = Mutex::new(None);

/// A queue forked while a thread of the parent sleeps in a `get` on it and
/// a task of the parent waits in a `get_async`: parent and child go on
/// using it, each getting what the other puts, and the child's copy of
/// the task, dropped there, takes nothing and uncounts nothing (a getter
/// asleep later is woken by the put itself).
#[test]
fn a_queue_forked_mid_wait_serves_parent_and_child() {
    watchdog("a queue used across a fork", LIMIT, || {
        let q = Queue::<u32>::new().unwrap();
        let back = Queue::<u32>::new().unwrap();
        let theirs = q.clone();
        let mut task: Get = Box::pin(async move { theirs.get_async().await });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(task.as_mut().poll(&mut cx).is_pending());
        *FORKED.lock().unwrap() = Some(task);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let getter = s.spawn(|| {
                let tx = tx;
                tx.send(gettid()).unwrap();
                q.get_timeout(LIMIT).unwrap()
            });
            let tid = rx.recv().unwrap();
            let pid = std::process::id();
            assert!(wait_until(Duration::from_secs(30), || {
                thread_blocked_in_futex(pid, tid)
            }));
            let taken = RawValue::new(0u32).unwrap();
            let (q2, back2, taken2) = (q.clone(), back.clone(), taken.clone());
            let child = static_child(move || {
                drop(FORKED.lock().unwrap().take());
                q2.put(1).unwrap();
                // Taken by the parent's thread, not by this get.
                assert!(wait_until(LIMIT, || taken2.atomic().load(SeqCst) == 1));
                back2.put(q2.get_timeout(LIMIT).unwrap()).unwrap();
            });
            // The child's item wakes the parent's sleeping thread (the
            // parent's task is not polled); the parent's goes to the child.
            assert_eq!(getter.join().unwrap(), 1);
            taken.atomic().store(1, SeqCst);
            q.put(2).unwrap();
            assert_eq!(back.get_timeout(LIMIT).unwrap(), 2);
            assert_eq!(join(&child, Duration::from_secs(30)), 0);
        });
        let mut task = FORKED.lock().unwrap().take().unwrap();
        assert!(task.as_mut().poll(&mut cx).is_pending());
        q.put(3).unwrap();
        let mut got = None;
        assert!(wait_until(Duration::from_secs(30), || {
            got = match task.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(r) => Some(r.unwrap()),
                std::task::Poll::Pending => None,
            };
            got.is_some()
        }));
        assert_eq!(got, Some(3));
        drop(task);
        let wake = quickest_wake(&q);
        assert!(
            wake < Duration::from_millis(100),
            "a getter took {wake:?} from its call to see a put made while it slept"
        );
    });
}

/// This process's private anonymous memory in use (`RssAnon`; a queue's
/// shared ring is not in it), in bytes, once the allocator has given back
/// what it holds free.
fn anonymous_resident() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A thread that put and got one 40 MiB item does not keep a 40 MiB
/// encoding buffer for the rest of its life.
#[test]
fn a_large_item_leaves_no_large_buffer_behind() {
    const ITEM: usize = 40 << 20;
    watchdog("large item buffer", LIMIT, || {
        let q = Queue::<Vec<u8>>::with_capacity(0, 2 * ITEM).unwrap();
        // A child of its own: no other test's memory comes and goes there.
        let child = static_child(move || {
            q.put(vec![0u8; 1]).unwrap();
            assert_eq!(q.get().unwrap(), [0]);
            let before = anonymous_resident();
            q.put(vec![7u8; ITEM]).unwrap();
            let item = q.get().unwrap();
            assert_eq!(item.len(), ITEM);
            drop(item);
            let grown = anonymous_resident().saturating_sub(before);
            assert!(
                grown < ITEM / 2,
                "{} MiB kept after the item was gone",
                grown >> 20
            );
        });
        assert_eq!(join(&child, LIMIT), 0);
    });
}
