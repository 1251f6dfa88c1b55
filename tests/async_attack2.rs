//! More adversarial tests of the async waits: a getter that finds the
//! consumers' lock busy with an item waiting, thousands of waits against
//! the process's descriptors and threads, a thousand futures on one word,
//! and the extreme timeouts of every timed async wait.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use common::wakers::{patiently, poll_with, Flag, PATIENCE};
use common::{current_thread, multi_thread, watchdog};
use multiproc::{Barrier, Condition, Error, Event, JoinableQueue, Queue, RawValue, Semaphore};
use serde::{Deserialize, Deserializer, Serialize};

const LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// A getter that finds the consumers' lock busy.

/// An item whose decoding, for the value 0, stops until [`GATE`] opens: a
/// blocking getter decodes a small item under the consumers' lock, so
/// this holds that lock for as long as the test wants.
#[derive(Serialize, Debug, PartialEq)]
struct Stall(u32);

/// Whether a decoding of `Stall(0)` is under way, and whether it may end.
static GATE: Mutex<(bool, bool)> = Mutex::new((false, false));
static GATE_CV: Condvar = Condvar::new();

impl<'de> Deserialize<'de> for Stall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == 0 {
            let mut g = GATE.lock().unwrap();
            g.0 = true;
            GATE_CV.notify_all();
            let end = Instant::now() + PATIENCE;
            while !g.1 && Instant::now() < end {
                g = GATE_CV
                    .wait_timeout(g, end.saturating_duration_since(Instant::now()))
                    .unwrap()
                    .0;
            }
            g.0 = false;
        }
        Ok(Stall(v))
    }
}

/// An async getter that arrives while a blocking getter holds the
/// consumers' lock, with another item waiting behind the one being
/// taken, is woken when that lock comes free: not only by the periodic
/// look again (100 ms later), which under steady contention from blocking
/// getters would hold each async get for that long.
#[test]
fn an_async_get_that_finds_the_consumers_lock_busy_is_woken_when_it_frees() {
    watchdog("get behind a busy consumers' lock", LIMIT, || {
        let q = Queue::<Stall>::new().unwrap();
        let mut slow_rounds = 0;
        const ROUNDS: usize = 4;
        for _ in 0..ROUNDS {
            *GATE.lock().unwrap() = (false, false);
            q.put(Stall(0)).unwrap();
            q.put(Stall(1)).unwrap();
            let blocking = {
                let q = q.clone();
                std::thread::spawn(move || q.get().unwrap())
            };
            // Wait until the blocking getter holds the lock, decoding.
            {
                let mut g = GATE.lock().unwrap();
                while !g.0 {
                    g = GATE_CV.wait_timeout(g, PATIENCE).unwrap().0;
                }
            }
            let flag = Arc::new(Flag::default());
            let waker = Waker::from(flag.clone());
            let mut get = Box::pin(q.get_timeout_async(PATIENCE));
            // Before the poll: a wake-up after it counts.
            let seen = flag.count();
            assert!(
                poll_with(get.as_mut(), &waker).is_pending(),
                "the lock is held: nothing can be taken yet"
            );
            let opened = Instant::now();
            {
                let mut g = GATE.lock().unwrap();
                g.1 = true;
                GATE_CV.notify_all();
            }
            assert_eq!(blocking.join().unwrap(), Stall(0));
            assert!(flag.wait_past(seen, PATIENCE), "never woken");
            let mut got = None;
            let end = Instant::now() + PATIENCE;
            while got.is_none() {
                let seen = flag.count();
                match poll_with(get.as_mut(), &waker) {
                    Poll::Ready(r) => got = Some(r.unwrap()),
                    Poll::Pending => assert!(flag.wait_past(seen, end - Instant::now())),
                }
            }
            let waited = opened.elapsed();
            assert_eq!(got.unwrap(), Stall(1));
            if waited >= Duration::from_millis(70) {
                slow_rounds += 1;
            }
        }
        assert!(
            slow_rounds < ROUNDS,
            "every round, the async getter saw the item only at its periodic look"
        );
    });
}

// ---------------------------------------------------------------------------
// Resources.

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Ten thousand async waits of every kind (finished at once, timed out,
/// woken, dropped pending) leave the process with as many descriptors as
/// before and, once idle waiter threads have retired, as many threads.
#[test]
fn ten_thousand_async_waits_leak_no_descriptor_or_thread() {
    watchdog("ten thousand waits", LIMIT, || {
        let event = Event::new().unwrap();
        let q = Queue::<u32>::new().unwrap();
        let sem = Semaphore::new(0).unwrap();
        let cond = Condition::new().unwrap();
        let jq = JoinableQueue::<u32>::new().unwrap();
        let rt = current_thread();
        let round = |i: u32| {
            rt.block_on(async {
                match i % 8 {
                    0 => assert!(!event.wait_timeout_async(Duration::ZERO).await.unwrap()),
                    1 => assert!(!event
                        .wait_timeout_async(Duration::from_micros(50))
                        .await
                        .unwrap()),
                    2 => {
                        q.put(i).unwrap();
                        assert_eq!(q.get_async().await.unwrap(), i);
                    }
                    3 => assert!(matches!(
                        q.get_timeout_async(Duration::from_micros(50)).await,
                        Err(Error::Timeout)
                    )),
                    4 => assert!(!sem
                        .acquire_timeout_async(Duration::from_micros(50))
                        .await
                        .unwrap()),
                    5 => assert!(!cond
                        .wait_for_async(|| false, Some(Duration::from_micros(50)))
                        .await
                        .unwrap()),
                    6 => {
                        // Dropped while pending, armed.
                        let mut f = Box::pin(event.wait_async());
                        let w = Waker::noop();
                        assert!(poll_with(f.as_mut(), w).is_pending());
                        let mut g = Box::pin(cond.wait_for_async(|| false, None));
                        assert!(poll_with(g.as_mut(), w).is_pending());
                    }
                    _ => {
                        jq.put(i).unwrap();
                        let t = async {
                            jq.get_async().await.unwrap();
                            jq.task_done().unwrap();
                        };
                        let (_, joined) = tokio::join!(t, jq.join_async());
                        joined.unwrap();
                    }
                }
            })
        };
        // Warm up: the waiter and keeper threads start.
        for i in 0..64 {
            round(i);
        }
        let (fds, tasks) = (descriptors(), threads());
        for i in 0..10_000 {
            round(i);
        }
        assert_eq!(descriptors(), fds, "descriptors leaked");
        // Extra waiter threads retire after a second idle.
        let end = Instant::now() + PATIENCE;
        while threads() > tasks && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(threads() <= tasks, "threads: {} > {tasks}", threads());
    });
}

// ---------------------------------------------------------------------------
// Many futures on one word.

/// A thousand tasks awaiting one event, one queue and one semaphore in one
/// runtime are each woken: every task ends, every item and permit taken
/// once.
#[test]
fn a_thousand_tasks_on_one_event_queue_and_semaphore_all_wake() {
    watchdog("a thousand on one word", LIMIT, || {
        const N: u32 = 1000;
        for rt in [current_thread(), multi_thread()] {
            let event = Event::new().unwrap();
            let q = Queue::<u32>::new().unwrap();
            let sem = Semaphore::new(0).unwrap();
            let ready = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                let mut tasks = Vec::new();
                for _ in 0..N {
                    let (event, q, sem, ready) =
                        (event.clone(), q.clone(), sem.clone(), ready.clone());
                    tasks.push(tokio::spawn(async move {
                        ready.fetch_add(1, SeqCst);
                        event.wait_async().await.unwrap();
                        let item = q.get_async().await.unwrap();
                        sem.acquire_async().await.unwrap();
                        item
                    }));
                }
                while ready.load(SeqCst) < N as usize {
                    tokio::task::yield_now().await;
                }
                event.set();
                for i in 0..N {
                    q.put_async(i).await.unwrap();
                }
                for _ in 0..N {
                    sem.release().unwrap();
                }
                let mut got = Vec::new();
                for t in tasks {
                    got.push(patiently("one of a thousand", t).await.unwrap());
                }
                got.sort_unstable();
                assert_eq!(got, (0..N).collect::<Vec<_>>());
                assert!(!sem.try_acquire(), "a permit left over");
                assert!(q.try_get().is_err(), "an item left over");
            });
        }
    });
}

// ---------------------------------------------------------------------------
// Extreme timeouts.

/// `Duration::ZERO` and `Duration::MAX` on every timed async wait: zero
/// answers at once (taking what is there), the maximum waits like no
/// timeout at all and ends when woken; neither panics.
#[test]
fn zero_and_max_timeouts_on_every_timed_async_wait() {
    watchdog("zero and max timeouts", LIMIT, || {
        let rt = multi_thread();
        rt.block_on(async {
            let event = Event::new().unwrap();
            let q = Queue::<u32>::new().unwrap();
            let jq = JoinableQueue::<u32>::new().unwrap();
            let sem = Semaphore::new(0).unwrap();
            let cond = Condition::new().unwrap();
            let flag = RawValue::new(0u32).unwrap();
            let barrier = Barrier::new(2).unwrap();

            // Zero: nothing there.
            assert!(!event.wait_timeout_async(Duration::ZERO).await.unwrap());
            assert!(matches!(
                q.get_timeout_async(Duration::ZERO).await,
                Err(Error::Timeout)
            ));
            assert!(!sem.acquire_timeout_async(Duration::ZERO).await.unwrap());
            assert!(!cond
                .wait_for_async(|| false, Some(Duration::ZERO))
                .await
                .unwrap());
            jq.put(1).unwrap();
            assert!(matches!(
                jq.join_timeout_async(Duration::ZERO).await,
                Err(Error::Timeout)
            ));
            assert!(matches!(
                barrier.wait_timeout_async(Duration::ZERO).await,
                Err(Error::Timeout | Error::BrokenBarrier)
            ));
            barrier.reset().unwrap();

            // Zero: something there is taken.
            q.put(7).unwrap();
            assert_eq!(q.get_timeout_async(Duration::ZERO).await.unwrap(), 7);
            sem.release().unwrap();
            assert!(sem.acquire_timeout_async(Duration::ZERO).await.unwrap());
            event.set();
            assert!(event.wait_timeout_async(Duration::ZERO).await.unwrap());
            event.clear();
            assert!(cond
                .wait_for_async(|| true, Some(Duration::ZERO))
                .await
                .unwrap());

            // Max: waits, and ends when woken.
            let done = Arc::new(AtomicBool::new(false));
            let waits = {
                let (event, q, sem, cond, flag, jq, barrier) = (
                    event.clone(),
                    q.clone(),
                    sem.clone(),
                    cond.clone(),
                    flag.clone(),
                    jq.clone(),
                    barrier.clone(),
                );
                let done = done.clone();
                tokio::spawn(async move {
                    assert!(event.wait_timeout_async(Duration::MAX).await.unwrap());
                    assert_eq!(q.get_timeout_async(Duration::MAX).await.unwrap(), 9);
                    assert!(sem.acquire_timeout_async(Duration::MAX).await.unwrap());
                    assert!(cond
                        .wait_for_async(|| flag.atomic().load(SeqCst) == 1, Some(Duration::MAX))
                        .await
                        .unwrap());
                    jq.join_timeout_async(Duration::MAX).await.unwrap();
                    barrier.wait_timeout_async(Duration::MAX).await.unwrap();
                    done.store(true, SeqCst);
                })
            };
            event.set();
            q.put(9).unwrap();
            sem.release().unwrap();
            {
                let g = cond.lock().unwrap();
                flag.atomic().store(1, SeqCst);
                g.notify_all();
            }
            jq.get().unwrap();
            jq.task_done().unwrap();
            patiently("the other party", barrier.wait_async())
                .await
                .unwrap();
            patiently("the max waits", waits).await.unwrap();
            assert!(done.load(SeqCst));
        });
    });
}

/// A thousand tasks in one runtime await one condition (more than it has
/// places for waiters): a thousand notifies of one, each after one token
/// is added, end every task, each with one token; none is stranded.
#[test]
fn a_thousand_tasks_on_one_condition_each_take_one_token() {
    watchdog("a thousand on one condition", LIMIT, || {
        const N: u32 = 1000;
        for rt in [current_thread(), multi_thread()] {
            let cond = Condition::new().unwrap();
            let tokens = RawValue::new(0u32).unwrap();
            let taken = RawValue::new(0u32).unwrap();
            rt.block_on(async {
                let mut tasks = Vec::new();
                for _ in 0..N {
                    let (cond, tokens, taken) = (cond.clone(), tokens.clone(), taken.clone());
                    tasks.push(tokio::spawn(async move {
                        cond.wait_for_async(|| common::take_token(&tokens, &taken), Some(PATIENCE))
                            .await
                            .unwrap()
                    }));
                }
                tokio::task::yield_now().await;
                for _ in 0..N {
                    let g = cond.lock().unwrap();
                    tokens.atomic().fetch_add(1, SeqCst);
                    g.notify(1);
                    drop(g);
                    tokio::task::yield_now().await;
                }
                for t in tasks {
                    assert!(patiently("one of a thousand", t).await.unwrap());
                }
                assert_eq!(taken.atomic().load(SeqCst), N);
                assert_eq!(tokens.atomic().load(SeqCst), 0);
            });
        }
    });
}

// ---------------------------------------------------------------------------
// Wakers kept by dropped waits.

/// Polls `f` once with a waker of its own (it must be pending), drops it,
/// and checks that nothing kept a clone of that waker: a kept waker keeps
/// the task it wakes (its future, all it owns) alive, one per dropped
/// wait.
fn keeps_no_waker<F: Future>(what: &str, f: F) {
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let mut f = Box::pin(f);
    assert!(
        poll_with(f.as_mut(), &waker).is_pending(),
        "{what}: finished at once"
    );
    drop(f);
    // A waiter thread may hold a clone for a moment, while it wakes it.
    let end = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&flag) > 2 && Instant::now() < end {
        std::thread::yield_now();
    }
    assert_eq!(
        Arc::strong_count(&flag),
        2,
        "{what}: a dropped wait's waker is kept"
    );
}

/// Every async wait of the shared primitives, dropped while pending,
/// gives up its waker.
#[test]
fn dropped_waits_keep_no_waker() {
    watchdog("dropped waits keep no waker", LIMIT, || {
        let event = Event::new().unwrap();
        keeps_no_waker("event", event.wait_async());
        keeps_no_waker("event, timed", event.wait_timeout_async(PATIENCE));
        let q = Queue::<u32>::bounded(1).unwrap();
        keeps_no_waker("get", q.get_async());
        q.put(1).unwrap();
        keeps_no_waker("put", q.put_async(2));
        let sem = Semaphore::new(0).unwrap();
        keeps_no_waker("acquire", sem.acquire_async());
        let cond = Condition::new().unwrap();
        keeps_no_waker("condition", cond.wait_for_async(|| false, None));
        let barrier = Barrier::new(2).unwrap();
        keeps_no_waker("barrier", barrier.wait_async());
        let jq = JoinableQueue::<u32>::new().unwrap();
        jq.put(1).unwrap();
        keeps_no_waker("join", jq.join_async());
        let (mut r, _w) = multiproc::Pipe(true).unwrap();
        keeps_no_waker("recv", r.recv_bytes_async());
    });
}

fn nap(ms: u64) -> u64 {
    // The task must still run while the test looks: it sleeps, the test
    // never waits for it.
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A pool result's async get, dropped while pending, gives up its waker:
/// each dropped `get_async` (a `select!` that lost, a timeout) kept a
/// clone until the task finished, and with it the awaiting task.
#[test]
fn a_dropped_pool_result_get_keeps_no_waker() {
    watchdog("dropped pool get keeps no waker", LIMIT, || {
        let pool = multiproc::Pool::with_processes(1).unwrap();
        let long = pool.apply_async(nap, 60_000);
        for _ in 0..3 {
            keeps_no_waker("pool result", long.get_async());
        }
        pool.terminate();
    });
}

/// A thousand tasks of one runtime are a barrier's thousand parties, for
/// several passes: each pass releases all of them, each index given once.
#[test]
fn a_thousand_tasks_pass_one_barrier_again_and_again() {
    watchdog("a thousand parties", LIMIT, || {
        const N: u32 = 1000;
        const PASSES: usize = 3;
        for rt in [current_thread(), multi_thread()] {
            let barrier = Barrier::new(N).unwrap();
            rt.block_on(async {
                let tasks: Vec<_> = (0..N)
                    .map(|_| {
                        let barrier = barrier.clone();
                        tokio::spawn(async move {
                            let mut got = Vec::new();
                            for _ in 0..PASSES {
                                got.push(barrier.wait_async().await.unwrap());
                            }
                            got
                        })
                    })
                    .collect();
                let mut by_pass = vec![Vec::new(); PASSES];
                for t in tasks {
                    for (pass, index) in patiently("a party", t)
                        .await
                        .unwrap()
                        .into_iter()
                        .enumerate()
                    {
                        by_pass[pass].push(index);
                    }
                }
                for mut indexes in by_pass {
                    indexes.sort_unstable();
                    assert_eq!(indexes, (0..N).collect::<Vec<_>>());
                }
            });
        }
    });
}

/// More tasks awaiting one condition than it has places for waiters do
/// not spin while nothing happens: the ones without a place wait for one
/// to come free, they do not take the lock and ask the keeper thread for
/// a place every millisecond each (a hundred such tasks kept a CPU busy).
#[test]
fn tasks_beyond_the_condition_places_do_not_spin() {
    watchdog("condition overflow spin", LIMIT, || {
        let n = Condition::MAX_WAITERS * 2;
        let cond = Condition::new().unwrap();
        let go = RawValue::new(0u32).unwrap();
        let looks = Arc::new(AtomicUsize::new(0));
        let rt = current_thread();
        rt.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (cond, go, looks) = (cond.clone(), go.clone(), looks.clone());
                    tokio::spawn(async move {
                        cond.wait_for_async(
                            || {
                                looks.fetch_add(1, SeqCst);
                                go.atomic().load(SeqCst) == 1
                            },
                            Some(PATIENCE),
                        )
                        .await
                        .unwrap()
                    })
                })
                .collect();
            // Every task has looked once, and waits (in a place or for one).
            while looks.load(SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            // A measurement window (not a wait for a condition): how often
            // the tasks without a place look in it.
            let (wall, seen) = (Instant::now(), looks.load(SeqCst));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let idle = wall.elapsed();
            let per_task = (looks.load(SeqCst) - seen) / (n - Condition::MAX_WAITERS);
            {
                let g = cond.lock().unwrap();
                go.atomic().store(1, SeqCst);
                g.notify_all();
            }
            for t in tasks {
                assert!(patiently("a waiter", t).await.unwrap());
            }
            // A look every 100 ms is 5 in 500 ms; allow twice that.
            let allowed = (idle.as_millis() / 50) as usize;
            assert!(
                per_task <= allowed,
                "{per_task} looks per task without a place in {idle:?}: they spin"
            );
        });
    });
}

// ---------------------------------------------------------------------------
// Futures copied by a fork.

/// A pending get, copied into a forked child that drops its copy, leaves
/// the parent's get counted as a sleeper: the child's drop took the
/// parent's task out of the queue's sleeper count, so a put made no
/// wake-up call and the parent's task saw its item only at its periodic
/// look, 100 ms later.
#[test]
fn a_pending_get_dropped_in_a_forked_child_leaves_the_parent_counted() {
    watchdog("pending get dropped in a child", LIMIT, || {
        const ROUNDS: u32 = 4;
        let mut slow_rounds = 0;
        for round in 0..ROUNDS {
            // A fresh queue each round: the count the child broke stays broken.
            let q = Queue::<u32>::new().unwrap();
            let flag = Arc::new(Flag::default());
            let waker = Waker::from(flag.clone());
            let mut get = Box::pin(q.get_async());
            // Before the poll: a wake-up after it counts.
            let seen = flag.count();
            assert!(poll_with(get.as_mut(), &waker).is_pending());
            // SAFETY: the child only drops the future and exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                drop(get);
                // SAFETY: ends the child at once, running nothing else.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for the child this test just forked.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert_eq!(status, 0);
            let put = Instant::now();
            q.put(round).unwrap();
            assert!(flag.wait_past(seen, PATIENCE), "never woken");
            let waited = put.elapsed();
            let end = Instant::now() + PATIENCE;
            let got = loop {
                let seen = flag.count();
                match poll_with(get.as_mut(), &waker) {
                    Poll::Ready(r) => break r.unwrap(),
                    Poll::Pending => assert!(flag.wait_past(seen, end - Instant::now())),
                }
            };
            assert_eq!(got, round);
            if waited >= Duration::from_millis(70) {
                slow_rounds += 1;
            }
        }
        assert!(
            slow_rounds < ROUNDS,
            "every round, the parent's get saw its item only at its periodic look"
        );
    });
}

/// A pending barrier wait, copied into a forked child that drops its copy,
/// leaves the parent's party in the pass: the child's drop left the pass
/// in the parent's party's name and broke it.
#[test]
fn a_pending_barrier_wait_dropped_in_a_forked_child_breaks_nothing() {
    watchdog("pending barrier wait dropped in a child", LIMIT, || {
        let barrier = Barrier::new(2).unwrap();
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut wait = Box::pin(barrier.wait_async());
        assert!(poll_with(wait.as_mut(), &waker).is_pending());
        // SAFETY: the child only drops the future and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            drop(wait);
            // SAFETY: ends the child at once, running nothing else.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child this test just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0);
        let other = {
            let barrier = barrier.clone();
            std::thread::spawn(move || barrier.wait_timeout(PATIENCE))
        };
        let end = Instant::now() + PATIENCE;
        let mine = loop {
            let seen = flag.count();
            match poll_with(wait.as_mut(), &waker) {
                Poll::Ready(r) => break r,
                Poll::Pending => assert!(flag.wait_past(seen, end - Instant::now())),
            }
        };
        let theirs = other.join().unwrap();
        assert!(
            mine.is_ok() && theirs.is_ok(),
            "the pass broke: {mine:?}, {theirs:?}"
        );
    });
}

/// A send cut half way, copied into a forked child that drops its copy,
/// leaves the parent's connection open: the child's drop shut the shared
/// socket down, and the parent's send (and every later one) failed.
#[test]
fn a_half_sent_message_dropped_in_a_forked_child_leaves_the_parents_send() {
    watchdog("half sent message dropped in a child", LIMIT, || {
        let (mut a, mut b) = multiproc::Pipe(true).unwrap();
        let message = vec![7u8; 8 << 20];
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut send = Box::pin(a.send_bytes_async(&message));
        assert!(
            poll_with(send.as_mut(), &waker).is_pending(),
            "8 MiB fit a socket buffer"
        );
        // SAFETY: the child only drops the future and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            drop(send);
            // SAFETY: ends the child at once, running nothing else.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child this test just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let reader = std::thread::spawn(move || b.recv_bytes().map(|m| m.len()));
        let end = Instant::now() + PATIENCE;
        let sent = loop {
            let seen = flag.count();
            match poll_with(send.as_mut(), &waker) {
                Poll::Ready(r) => break r,
                Poll::Pending => assert!(flag.wait_past(seen, end - Instant::now())),
            }
        };
        let got = reader.join().unwrap();
        assert!(
            sent.is_ok() && matches!(got, Ok(n) if n == message.len()),
            "the parent's send: {sent:?}, received: {got:?}"
        );
    });
}
