//! Async waits across real processes, each with its own tokio runtime:
//! many tasks awaiting one shared object, blocking and async waiters side
//! by side, waiters killed, futures dropped and forgotten, and a fork from
//! a process whose waiter thread is running.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{async_child, join, multi_thread, procfs, wait_until, watchdog, TempName};
use multiproc::{Event, Pipe, Process, Semaphore};

const LIMIT: Duration = Duration::from_secs(60);
/// Long enough that no healthy wait here comes near it.
const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn hundreds_of_tasks_in_several_processes_await_one_event() {
    watchdog("event across processes", LIMIT, || {
        let event = Event::new().unwrap();
        let ready = Semaphore::new(0).unwrap();
        const TASKS: usize = 200;
        let children: Vec<_> = (0..3)
            .map(|_| {
                let (event, ready) = (event.clone(), ready.clone());
                async_child(multi_thread, move || async move {
                    let woken = Arc::new(AtomicUsize::new(0));
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| {
                            let (event, woken) = (event.clone(), woken.clone());
                            tokio::spawn(async move {
                                event.wait_async().await.unwrap();
                                woken.fetch_add(1, SeqCst);
                            })
                        })
                        .collect();
                    ready.release().unwrap();
                    for t in tasks {
                        tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
                    }
                    assert_eq!(woken.load(SeqCst), TASKS);
                })
            })
            .collect();
        for _ in &children {
            assert!(ready.acquire_timeout(PATIENCE));
        }
        event.set();
        for c in &children {
            assert_eq!(join(c, PATIENCE), 0);
        }
    });
}

#[test]
fn a_blocking_and_an_async_waiter_on_one_named_event_both_wake() {
    watchdog("blocking and async waiters", LIMIT, || {
        let name = TempName::new("async-named-event");
        let event = Event::create(&name).unwrap();
        let n = name.to_string();
        let blocking = Process::new(move || {
            let e = Event::open(&n).unwrap();
            multiproc::process::exit(if e.wait_timeout(PATIENCE) { 0 } else { 1 });
        })
        .daemon(true);
        let mut blocking = blocking;
        blocking.start().unwrap();
        let n = name.to_string();
        let asynchronous = async_child(multi_thread, move || async move {
            let e = Event::open(&n).unwrap();
            assert!(e.wait_timeout_async(PATIENCE).await.unwrap());
        });
        event.set();
        assert_eq!(join(&blocking, PATIENCE), 0);
        assert_eq!(join(&asynchronous, PATIENCE), 0);
    });
}

#[test]
fn timeouts_end_async_waits_and_a_semaphore_hands_out_each_permit_once() {
    watchdog("async timeouts", LIMIT, || {
        multi_thread().block_on(async {
            let event = Event::new().unwrap();
            let start = Instant::now();
            assert!(!event
                .wait_timeout_async(Duration::from_millis(50))
                .await
                .unwrap());
            assert!(start.elapsed() >= Duration::from_millis(50));
            assert!(!event.wait_timeout_async(Duration::ZERO).await.unwrap());
            event.set();
            assert!(event.wait_timeout_async(Duration::MAX).await.unwrap());

            let sem = Semaphore::new(0).unwrap();
            assert!(!sem
                .acquire_timeout_async(Duration::from_millis(20))
                .await
                .unwrap());
            let taken = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..100)
                .map(|_| {
                    let (sem, taken) = (sem.clone(), taken.clone());
                    tokio::spawn(async move {
                        let _permit = sem.permit_async().await.unwrap();
                        taken.fetch_add(1, SeqCst);
                        // The permit goes back when dropped.
                    })
                })
                .collect();
            sem.release().unwrap();
            for t in tasks {
                tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
            }
            assert_eq!(taken.load(SeqCst), 100);
            assert_eq!(sem.value(), 1);
        });
    });
}

#[test]
fn dropped_and_forgotten_waits_take_nothing_and_wedge_nobody() {
    watchdog("cancelled async waits", LIMIT, || {
        multi_thread().block_on(async {
            let sem = Semaphore::new(0).unwrap();
            // Cancelled by a timeout: takes no permit.
            for _ in 0..50 {
                let r = tokio::time::timeout(Duration::from_millis(1), sem.acquire_async()).await;
                assert!(r.is_err());
            }
            sem.release().unwrap();
            assert!(sem.try_acquire(), "a dropped acquire_async took the permit");

            // A forgotten future leaves an entry behind for memory that is
            // then unmapped; the waiter thread must carry on.
            for _ in 0..20 {
                let doomed = Event::new().unwrap();
                let mut fut = Box::pin(doomed.wait_async());
                let waker = futures_noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                assert!(fut.as_mut().poll(&mut cx).is_pending());
                std::mem::forget(fut);
                drop(doomed);
            }
            let event = Event::new().unwrap();
            let e2 = event.clone();
            let t = tokio::spawn(async move { e2.wait_async().await.unwrap() });
            event.set();
            tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
        });
    });
}

/// A waker that does nothing, for polling a future by hand.
fn futures_noop_waker() -> std::task::Waker {
    std::task::Waker::noop().clone()
}

#[test]
fn a_child_forked_while_the_waiter_thread_runs_gets_its_own() {
    watchdog("fork with a running waiter thread", LIMIT, || {
        let rt = multi_thread();
        let parent_event = Event::new().unwrap();
        let child_event = Event::new().unwrap();
        // This process's waiter thread is running with an entry in it: the
        // wait was polled once (which registers it) and the thread sleeps.
        let pe = parent_event.clone();
        let (polled, was_polled) = std::sync::mpsc::channel();
        let waiting = rt.spawn(async move {
            let mut wait = std::pin::pin!(pe.wait_async());
            let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
            polled.send(()).unwrap();
            match first {
                Poll::Ready(r) => r.unwrap(),
                Poll::Pending => wait.await.unwrap(),
            }
        });
        was_polled.recv_timeout(PATIENCE).unwrap();
        let me = std::process::id();
        assert!(wait_until(PATIENCE, || procfs::threads_named(
            me,
            "multiproc-waite"
        )
        .into_iter()
        .any(|tid| procfs::thread_blocked_in_futex(me, tid))));
        let ce = child_event.clone();
        let c = async_child(multi_thread, move || async move {
            assert!(ce.wait_timeout_async(PATIENCE).await.unwrap());
        });
        child_event.set();
        assert_eq!(join(&c, PATIENCE), 0);
        parent_event.set();
        rt.block_on(async { tokio::time::timeout(PATIENCE, waiting).await })
            .unwrap()
            .unwrap();
    });
}

#[test]
fn killed_async_waiters_wedge_no_one() {
    watchdog("killed async waiters", LIMIT, || {
        let sem = Semaphore::new(0).unwrap();
        let awaiting = Semaphore::new(0).unwrap();
        let victims: Vec<_> = (0..3)
            .map(|_| {
                let (sem, awaiting) = (sem.clone(), awaiting.clone());
                async_child(multi_thread, move || async move {
                    let tasks: Vec<_> = (0..50)
                        .map(|_| {
                            let (sem, awaiting) = (sem.clone(), awaiting.clone());
                            tokio::spawn(async move {
                                awaiting.release().unwrap();
                                sem.acquire_async().await.unwrap()
                            })
                        })
                        .collect();
                    for t in tasks {
                        let _ = t.await;
                    }
                })
            })
            .collect();
        for _ in 0..150 {
            assert!(awaiting.acquire_timeout(PATIENCE));
        }
        for v in &victims {
            v.kill().unwrap();
            assert_eq!(join(v, PATIENCE), -libc::SIGKILL);
        }
        // The dead waiters hold nothing: a survivor gets every permit.
        let s = sem.clone();
        let survivor = async_child(multi_thread, move || async move {
            for _ in 0..10 {
                assert!(s.acquire_timeout_async(PATIENCE).await.unwrap());
            }
        });
        for _ in 0..10 {
            sem.release().unwrap();
        }
        assert_eq!(join(&survivor, PATIENCE), 0);
    });
}

#[test]
fn connections_and_processes_are_awaited() {
    watchdog("async connections", LIMIT, || {
        for duplex in [true, false] {
            let (mut a, mut b) = Pipe(duplex).unwrap();
            if !duplex {
                // A simplex pipe: the first end receives, the second sends.
                std::mem::swap(&mut a, &mut b);
            }
            // `b` receives; `a` sends. Messages larger than the pipe's
            // buffer make the sender wait for room.
            let big: Vec<u8> = (0..(4 << 20)).map(|i| (i % 251) as u8).collect();
            let expect = big.clone();
            let c = async_child(multi_thread, move || async move {
                for _ in 0..3 {
                    assert_eq!(b.recv_bytes_async().await.unwrap(), expect);
                }
                let n: u64 = b.recv_async().await.unwrap();
                assert_eq!(n, 42);
            });
            multi_thread().block_on(async {
                for _ in 0..3 {
                    a.send_bytes_async(&big).await.unwrap();
                }
                a.send_async(&42u64).await.unwrap();
                let code = tokio::time::timeout(PATIENCE, c.join_async())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(code, 0, "duplex {duplex}");
            });
        }
    });
}

#[test]
fn a_send_cancelled_half_way_closes_the_connection_instead_of_tearing_a_message() {
    watchdog("cancelled send", LIMIT, || {
        let (mut a, mut b) = Pipe(true).unwrap();
        let big = vec![1u8; 8 << 20];
        multi_thread().block_on(async {
            // Nobody reads: the send stops part-way and is cancelled.
            let r = tokio::time::timeout(Duration::from_millis(50), a.send_bytes_async(&big)).await;
            assert!(r.is_err());
        });
        assert!(a.closed());
        // The reader sees the connection end, not a short message.
        assert!(b.recv_bytes().is_err());
    });
}

#[test]
fn barrier_passes_with_async_and_blocking_parties_and_a_dropped_wait_breaks_it() {
    watchdog("async barrier", LIMIT, || {
        use multiproc::{Barrier, Error};
        let barrier = Barrier::new(3).unwrap();
        const PASSES: u32 = 20;
        let b = barrier.clone();
        let asynchronous = async_child(multi_thread, move || async move {
            for _ in 0..PASSES {
                b.wait_timeout_async(PATIENCE).await.unwrap();
            }
        });
        let b = barrier.clone();
        let mut blocking = Process::new(move || {
            for _ in 0..PASSES {
                b.wait_timeout(PATIENCE).unwrap();
            }
        })
        .daemon(true);
        blocking.start().unwrap();
        multi_thread().block_on(async {
            let mut indexes = Vec::new();
            for _ in 0..PASSES {
                indexes.push(barrier.wait_timeout_async(PATIENCE).await.unwrap());
            }
            assert!(indexes.iter().all(|&i| i < 3));
        });
        assert_eq!(join(&asynchronous, PATIENCE), 0);
        assert_eq!(join(&blocking, PATIENCE), 0);

        // A party that arrives and is then dropped breaks the barrier.
        let two = Barrier::new(2).unwrap();
        multi_thread().block_on(async {
            let r = tokio::time::timeout(Duration::from_millis(20), two.wait_async()).await;
            assert!(r.is_err());
        });
        assert!(two.is_broken());
        assert!(matches!(two.wait(), Err(Error::BrokenBarrier)));
        two.reset().unwrap();
        assert_eq!(two.n_waiting(), 0);
        assert!(!two.is_broken());
    });
}

#[test]
fn queue_items_reach_hundreds_of_tasks_in_several_processes_exactly_once() {
    watchdog("async queue", LIMIT, || {
        use multiproc::Queue;
        const ITEMS: u32 = 3_000;
        const TASKS: usize = 100;
        let jobs = Queue::<u32>::new().unwrap();
        let results = Queue::<u32>::new().unwrap();
        let awaiting = Semaphore::new(0).unwrap();
        let consumer = |jobs: Queue<u32>, results: Queue<u32>, awaiting: Semaphore| {
            async_child(multi_thread, move || async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let (jobs, results, awaiting) =
                            (jobs.clone(), results.clone(), awaiting.clone());
                        tokio::spawn(async move {
                            awaiting.release().unwrap();
                            // u32::MAX is the poison pill: one per task.
                            loop {
                                let job = jobs.get_timeout_async(PATIENCE).await.unwrap();
                                if job == u32::MAX {
                                    break;
                                }
                                results.put_async(job).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        };
        let consumers: Vec<_> = (0..3)
            .map(|_| consumer(jobs.clone(), results.clone(), awaiting.clone()))
            .collect();
        for _ in 0..3 * TASKS {
            assert!(awaiting.acquire_timeout(PATIENCE));
        }
        // One consumer dies while all its tasks wait: it took nothing.
        consumers[0].kill().unwrap();
        assert_eq!(join(&consumers[0], PATIENCE), -libc::SIGKILL);
        multi_thread().block_on(async {
            for i in 0..ITEMS {
                jobs.put_async(i).await.unwrap();
            }
            for _ in 0..2 * TASKS {
                jobs.put_async(u32::MAX).await.unwrap();
            }
            let mut seen = vec![false; ITEMS as usize];
            for _ in 0..ITEMS {
                let i = results.get_timeout_async(PATIENCE).await.unwrap();
                assert!(!seen[i as usize], "item {i} delivered twice");
                seen[i as usize] = true;
            }
        });
        for c in &consumers[1..] {
            assert_eq!(join(c, PATIENCE), 0);
        }
        assert!(results.is_empty());
    });
}

#[test]
fn queue_cancellation_puts_nothing_and_takes_nothing() {
    watchdog("async queue cancellation", LIMIT, || {
        use multiproc::queue::PutError;
        use multiproc::{Error, JoinableQueue, Queue};
        multi_thread().block_on(async {
            let q = Queue::<u32>::bounded(1).unwrap();
            // A get that is cancelled takes nothing.
            assert!(
                tokio::time::timeout(Duration::from_millis(5), q.get_async())
                    .await
                    .is_err()
            );
            q.put(1).unwrap();
            // A put into the full queue that is cancelled adds nothing.
            assert!(
                tokio::time::timeout(Duration::from_millis(5), q.put_async(2))
                    .await
                    .is_err()
            );
            assert!(matches!(
                q.put_timeout_async(3, Duration::from_millis(5)).await,
                Err(PutError::Timeout(3))
            ));
            assert_eq!(q.len(), 1);
            assert_eq!(q.get_async().await.unwrap(), 1);
            assert!(matches!(
                q.get_timeout_async(Duration::ZERO).await,
                Err(Error::Timeout)
            ));
            // A waiting put finishes when a get makes room.
            q.put(4).unwrap();
            let q2 = q.clone();
            let put = tokio::spawn(async move { q2.put_async(5).await.map_err(|_| ()) });
            assert_eq!(q.get_async().await.unwrap(), 4);
            tokio::time::timeout(PATIENCE, put)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(q.get_async().await.unwrap(), 5);

            let jq = JoinableQueue::<u32>::new().unwrap();
            jq.put(1).unwrap();
            assert!(matches!(
                jq.join_timeout_async(Duration::from_millis(5)).await,
                Err(Error::Timeout)
            ));
            let jq2 = jq.clone();
            let joined = tokio::spawn(async move { jq2.join_async().await.unwrap() });
            jq.get_async().await.unwrap();
            jq.task_done().unwrap();
            tokio::time::timeout(PATIENCE, joined)
                .await
                .unwrap()
                .unwrap();
        });
    });
}

fn square(x: u64) -> u64 {
    x * x
}

fn die(_: u64) -> u64 {
    std::process::abort()
}

#[test]
fn pool_results_are_awaited() {
    watchdog("async pool results", LIMIT, || {
        use multiproc::{Error, Pool};
        let pool = Pool::with_processes(2).unwrap();
        multi_thread().block_on(async {
            let one = pool.apply_async(square, 7);
            let many = pool.map_async(square, 0..100u64);
            let dead = pool.apply_async(die, 0);
            // Several tasks may await one result; a dropped await changes nothing.
            assert!(
                tokio::time::timeout(Duration::from_millis(1), many.get_async())
                    .await
                    .is_err()
                    || many.ready()
            );
            assert_eq!(one.get_async().await.unwrap(), 49);
            let squares = tokio::time::timeout(PATIENCE, many.get_async())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(squares, (0..100u64).map(square).collect::<Vec<_>>());
            assert!(matches!(
                tokio::time::timeout(PATIENCE, dead.get_async())
                    .await
                    .unwrap(),
                Err(Error::WorkerDied { .. })
            ));
            assert_eq!(one.get().unwrap(), 49);
        });
        pool.close();
        pool.join().unwrap();
    });
}

/// More distinct words awaited at once than one `futex_waitv` takes (127
/// beside the waiter thread's control word): each one is woken as soon as
/// it is set, however many are awaited, never found by a periodic look.
#[test]
fn more_than_127_awaited_words_each_wake_promptly() {
    watchdog("many distinct words", LIMIT, || {
        const TASKS: usize = 500;
        const TIMED: usize = 150;
        let events: Vec<Event> = (0..TASKS).map(|_| Event::new().unwrap()).collect();
        let armed = Semaphore::new(0).unwrap();
        let woke = Semaphore::new(0).unwrap();
        let child = {
            let (events, armed, woke) = (events.clone(), armed.clone(), woke.clone());
            async_child(multi_thread, move || async move {
                let tasks: Vec<_> = events
                    .into_iter()
                    .map(|e| {
                        let (armed, woke) = (armed.clone(), woke.clone());
                        tokio::spawn(async move {
                            let mut wait = std::pin::pin!(e.wait_timeout_async(PATIENCE));
                            // Registered with the waiter once it returned Pending.
                            let first =
                                std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx)))
                                    .await;
                            assert!(first.is_pending());
                            armed.release().unwrap();
                            assert!(wait.await.unwrap());
                            woke.release().unwrap();
                        })
                    })
                    .collect();
                for t in tasks {
                    tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
                }
            })
        };
        for _ in 0..TASKS {
            assert!(armed.acquire_timeout(PATIENCE));
        }
        // One at a time, alternately one of the last armed (beyond the
        // first 127, once polled every 2 ms) and one of the first armed
        // (the control: a word the waiter always slept on).
        let time = |e: &Event| {
            let start = Instant::now();
            e.set();
            assert!(woke.acquire_timeout(PATIENCE));
            start.elapsed()
        };
        let (mut late, mut early) = (Vec::new(), Vec::new());
        for i in 0..TIMED {
            late.push(time(&events[TASKS - 1 - i]));
            early.push(time(&events[i]));
        }
        for e in &events {
            e.set();
        }
        assert_eq!(join(&child, PATIENCE), 0);
        let total: Duration = late.iter().sum();
        late.sort_unstable();
        early.sort_unstable();
        let (median, control) = (late[TIMED / 2], early[TIMED / 2]);
        eprintln!(
            "{TASKS} distinct words awaited, {TIMED} of the last armed set one by one: \
             median wake {median:?} (of the first armed: {control:?}), 90th percentile \
             {:?}, total {total:?}",
            late[TIMED * 9 / 10]
        );
        // The old overflow poll (every 2 ms, waking every task beyond the
        // first 127 words, which slowed the others too) gave a median near
        // 4 ms here; one sleep per 127 words gives a few hundred µs on a
        // loaded machine.
        assert!(
            median < Duration::from_micros(1500),
            "median {median:?}, control {control:?}"
        );
    });
}

/// The tasks of a condition test: each waits (async) for a token, and
/// takes it under the lock when it is there. `arrived` counts first looks.
fn token_takers(
    cond: &multiproc::Condition,
    tokens: &multiproc::RawValue<u32>,
    taken: &multiproc::RawValue<u32>,
    arrived: &multiproc::RawValue<u32>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<bool>> {
    (0..n)
        .map(|_| {
            let (cond, tokens, taken, arrived) =
                (cond.clone(), tokens.clone(), taken.clone(), arrived.clone());
            tokio::spawn(async move {
                let mut first = true;
                cond.wait_for_async(
                    || {
                        if std::mem::take(&mut first) {
                            arrived.atomic().fetch_add(1, SeqCst);
                        }
                        common::take_token(&tokens, &taken)
                    },
                    Some(PATIENCE),
                )
                .await
                .unwrap()
            })
        })
        .collect()
}

/// Several processes, each a tokio runtime with a hundred tasks awaiting
/// one condition (more than its 128 places), one of them killed -9 while
/// its tasks wait: every token, each announced by its own `notify(1)`,
/// is taken, once, by a live task, long before any wait times out.
#[test]
fn condition_wait_for_async_in_several_processes_with_kills_accounts_for_every_notify() {
    watchdog("condition async across processes", LIMIT, || {
        use multiproc::{Condition, RawValue};
        const TASKS: usize = 100;
        const SURVIVORS: usize = 3;
        let cond = Condition::new().unwrap();
        let tokens = RawValue::new(0u32).unwrap();
        let taken = RawValue::new(0u32).unwrap();
        let arrived = RawValue::new(0u32).unwrap();
        let spawn = |exit_checked: bool| {
            let (cond, tokens, taken, arrived) =
                (cond.clone(), tokens.clone(), taken.clone(), arrived.clone());
            async_child(multi_thread, move || async move {
                let tasks = token_takers(&cond, &tokens, &taken, &arrived, TASKS);
                for t in tasks {
                    let got = tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
                    assert!(got || !exit_checked);
                }
            })
        };
        let victim = spawn(false);
        let survivors: Vec<_> = (0..SURVIVORS).map(|_| spawn(true)).collect();
        let all = (TASKS * (SURVIVORS + 1)) as u32;
        assert!(wait_until(PATIENCE, || arrived.atomic().load(SeqCst) == all));
        // Killed while none of its threads holds the lock (this one does).
        {
            let _g = cond.lock().unwrap();
            victim.kill().unwrap();
            let _ = victim.join_timeout(PATIENCE).unwrap();
        }
        let start = Instant::now();
        for _ in 0..TASKS * SURVIVORS {
            let g = cond.lock().unwrap();
            tokens.atomic().fetch_add(1, SeqCst);
            g.notify(1);
        }
        for s in &survivors {
            assert_eq!(join(s, PATIENCE), 0);
        }
        eprintln!(
            "{} tokens taken by async waiters in {:?}",
            TASKS * SURVIVORS,
            start.elapsed()
        );
        assert_eq!(taken.atomic().load(SeqCst), (TASKS * SURVIVORS) as u32);
        assert_eq!(tokens.atomic().load(SeqCst), 0);
        // No wait came near its deadline: a swallowed notify would have.
        assert!(start.elapsed() < PATIENCE / 2, "{:?}", start.elapsed());
    });
}

/// A blocking waiter (another process) and an async waiter on one
/// condition are both woken by one `notify_all`.
#[test]
fn a_blocking_and_an_async_condition_waiter_are_both_woken_by_notify_all() {
    watchdog("condition blocking and async", LIMIT, || {
        use multiproc::{Condition, RawValue};
        let cond = Condition::new().unwrap();
        let flag = RawValue::new(0u32).unwrap();
        let arrived = RawValue::new(0u32).unwrap();
        let blocking = {
            let (cond, flag, arrived) = (cond.clone(), flag.clone(), arrived.clone());
            common::static_child(move || {
                let mut g = cond.lock().unwrap();
                arrived.atomic().fetch_add(1, SeqCst);
                // The predicate is looked at only after a wake-up.
                let ok = g
                    .wait_for(|| flag.atomic().load(SeqCst) == 1, Some(PATIENCE))
                    .unwrap();
                assert!(ok);
            })
        };
        let asynchronous = {
            let (cond, flag, arrived) = (cond.clone(), flag.clone(), arrived.clone());
            async_child(multi_thread, move || async move {
                let mut first = true;
                let ok = cond
                    .wait_for_async(
                        || {
                            if std::mem::take(&mut first) {
                                arrived.atomic().fetch_add(1, SeqCst);
                            }
                            flag.atomic().load(SeqCst) == 1
                        },
                        Some(PATIENCE),
                    )
                    .await
                    .unwrap();
                assert!(ok);
            })
        };
        assert!(wait_until(PATIENCE, || arrived.atomic().load(SeqCst) == 2));
        let start = Instant::now();
        {
            let g = cond.lock().unwrap();
            flag.atomic().store(1, SeqCst);
            g.notify_all();
        }
        assert_eq!(join(&blocking, PATIENCE), 0);
        assert_eq!(join(&asynchronous, PATIENCE), 0);
        assert!(start.elapsed() < PATIENCE / 2);
    });
}

/// A condition future that a notify chose, dropped before it saw the
/// notification, passes it on to the next waiter instead of swallowing
/// it; one dropped before its first poll, or while waiting, takes nothing.
#[test]
fn a_dropped_condition_future_passes_its_notification_on() {
    watchdog("condition dropped future", LIMIT, || {
        use multiproc::{Condition, RawValue};
        let cond = Condition::new().unwrap();
        let flag = RawValue::new(0u32).unwrap();
        let rt = multi_thread();
        rt.block_on(async {
            let pred = || flag.atomic().load(SeqCst) == 1;
            drop(cond.wait_for_async(pred, Some(PATIENCE)));
            // A waits longest, so a notify(1) chooses it.
            let mut a = Box::pin(cond.wait_for_async(pred, Some(PATIENCE)));
            let waker = futures_noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(a.as_mut().poll(&mut cx).is_pending());
            let arrived = Arc::new(AtomicUsize::new(0));
            let b = {
                let (cond, flag, arrived) = (cond.clone(), flag.clone(), arrived.clone());
                tokio::spawn(async move {
                    let mut first = true;
                    cond.wait_for_async(
                        || {
                            if std::mem::take(&mut first) {
                                arrived.fetch_add(1, SeqCst);
                            }
                            flag.atomic().load(SeqCst) == 1
                        },
                        Some(PATIENCE),
                    )
                    .await
                    .unwrap()
                })
            };
            // b is a waiter once its predicate ran and the lock is free.
            while arrived.load(SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let start = Instant::now();
            {
                let g = cond.lock().unwrap();
                flag.atomic().store(1, SeqCst);
                g.notify(1);
            }
            drop(a);
            assert!(tokio::time::timeout(PATIENCE, b).await.unwrap().unwrap());
            assert!(start.elapsed() < PATIENCE / 2, "{:?}", start.elapsed());
        });
    });
}

/// A process whose awaiting task a `notify(1)` chose, killed -9 before the
/// task took the notification (stopped first, so it cannot): its place is
/// freed and the notification goes on to a live async waiter.
#[test]
fn a_notification_chosen_for_a_killed_async_waiter_goes_on_to_a_live_one() {
    watchdog("condition killed chosen waiter", LIMIT, || {
        use multiproc::{Condition, RawValue};
        let cond = Condition::new().unwrap();
        let flag = RawValue::new(0u32).unwrap();
        let arrived = RawValue::new(0u32).unwrap();
        let waiter = |cond: Condition, flag: RawValue<u32>, arrived: RawValue<u32>| {
            async_child(multi_thread, move || async move {
                let mut first = true;
                let ok = cond
                    .wait_for_async(
                        || {
                            if std::mem::take(&mut first) {
                                arrived.atomic().fetch_add(1, SeqCst);
                            }
                            flag.atomic().load(SeqCst) == 1
                        },
                        Some(PATIENCE),
                    )
                    .await
                    .unwrap();
                assert!(ok);
            })
        };
        // The victim waits longest: a notify(1) chooses it.
        let victim = waiter(cond.clone(), flag.clone(), arrived.clone());
        assert!(wait_until(PATIENCE, || arrived.atomic().load(SeqCst) == 1));
        let live = waiter(cond.clone(), flag.clone(), arrived.clone());
        assert!(wait_until(PATIENCE, || arrived.atomic().load(SeqCst) == 2));
        let start = Instant::now();
        {
            let g = cond.lock().unwrap();
            let pid = victim.pid().unwrap() as i32;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            flag.atomic().store(1, SeqCst);
            g.notify(1);
            victim.kill().unwrap();
            let _ = victim.join_timeout(PATIENCE).unwrap();
        }
        assert_eq!(join(&live, PATIENCE), 0);
        assert!(start.elapsed() < PATIENCE / 2, "{:?}", start.elapsed());
        eprintln!("notification passed on in {:?}", start.elapsed());
    });
}
