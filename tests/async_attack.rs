//! Adversarial tests of the async waits (issue 19): wake-ups racing the
//! arming of a wait, more words than one `futex_waitv` takes, extreme
//! timeouts, futures dropped, forgotten or moved between threads and
//! wakers, forks at awkward moments, killed waiters, many processes and
//! tasks on one queue, and executors other than tokio's multi-threaded one.

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::wakers::{patiently, poll_with, Flag, PATIENCE};
use common::{async_child, current_thread, join, multi_thread, static_child, watchdog, TempName};
use multiproc::queue::PutError;
use multiproc::{
    Barrier, Error, Event, JoinableQueue, Pipe, Process, Queue, Semaphore, SimpleQueue,
};

const LIMIT: Duration = Duration::from_secs(90);

/// Runs `f` on this thread, parking between wake-ups; panics if it is not
/// done within `limit`. Returns the output and how often `f` was polled.
fn block_on_within<F: Future>(limit: Duration, f: F) -> (F::Output, usize) {
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let end = Instant::now() + limit;
    let mut f = std::pin::pin!(f);
    let mut polls = 0;
    loop {
        let seen = flag.count();
        polls += 1;
        if let Poll::Ready(out) = poll_with(f.as_mut(), &waker) {
            return (out, polls);
        }
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            flag.wait_past(seen, left),
            "block_on_within: not done within {limit:?}"
        );
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A boxed wait, as the waits return it.
type Wait = Pin<Box<dyn Future<Output = multiproc::Result<()>> + Send>>;

/// A minimal multi-task executor: one run queue, run on the calling thread.
struct RunQueue {
    ready: Mutex<VecDeque<Arc<Job>>>,
    cv: Condvar,
}

struct Job {
    future: Mutex<Option<Task>>,
    queue: Arc<RunQueue>,
}

impl Wake for Job {
    fn wake(self: Arc<Self>) {
        let q = self.queue.clone();
        q.ready.lock().unwrap().push_back(self);
        q.cv.notify_one();
    }
}

/// Runs every task to completion on this thread; panics after `limit`.
fn run_all(limit: Duration, tasks: Vec<Task>) {
    let queue = Arc::new(RunQueue {
        ready: Mutex::new(VecDeque::new()),
        cv: Condvar::new(),
    });
    let mut left = tasks.len();
    for t in tasks {
        queue.ready.lock().unwrap().push_back(Arc::new(Job {
            future: Mutex::new(Some(t)),
            queue: queue.clone(),
        }));
    }
    let end = Instant::now() + limit;
    while left > 0 {
        let job = {
            let mut ready = queue.ready.lock().unwrap();
            loop {
                if let Some(j) = ready.pop_front() {
                    break j;
                }
                let rest = end.saturating_duration_since(Instant::now());
                assert!(
                    !rest.is_zero(),
                    "run_all: {left} tasks left after {limit:?}"
                );
                ready = queue.cv.wait_timeout(ready, rest).unwrap().0;
            }
        };
        let mut slot = job.future.lock().unwrap();
        if let Some(f) = slot.as_mut() {
            let waker = Waker::from(job.clone());
            if poll_with(f.as_mut(), &waker).is_ready() {
                *slot = None;
                left -= 1;
            }
        }
    }
}

/// CPU time used by this process so far (user and system).
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is a plain C struct of integers, valid when zeroed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable struct for getrusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Counts the polls of the future it wraps.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

/// Gives up on the future it wraps (drops it, unpolled) once it has been
/// woken `polls` times without finishing: the worst moment to cancel, when
/// what it waited for has just happened.
struct Budget<F> {
    inner: Option<Pin<Box<F>>>,
    polls: usize,
}

impl<F> Budget<F> {
    fn new(inner: F, polls: usize) -> Self {
        Budget {
            inner: Some(Box::pin(inner)),
            polls,
        }
    }
}

impl<F: Future> Future for Budget<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            self.inner = None;
            return Poll::Ready(None);
        }
        self.polls -= 1;
        match self
            .inner
            .as_mut()
            .expect("polled after the end")
            .as_mut()
            .poll(cx)
        {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => Poll::Pending,
        }
    }
}

// ---------------------------------------------------------------------------
// Lost wake-ups.

#[test]
fn event_ping_pong_between_processes_loses_no_wakeup() {
    watchdog("event ping-pong", LIMIT, || {
        const ROUNDS: u32 = 2_000;
        // Async in both processes, then async against blocking.
        for blocking_peer in [false, true] {
            let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
            let (pi, po) = (ping.clone(), pong.clone());
            let peer = if blocking_peer {
                static_child(move || {
                    for _ in 0..ROUNDS {
                        assert!(pi.wait_timeout(PATIENCE), "ping lost");
                        pi.clear();
                        po.set();
                    }
                })
            } else {
                async_child(multi_thread, move || async move {
                    for _ in 0..ROUNDS {
                        assert!(pi.wait_timeout_async(PATIENCE).await.unwrap(), "ping lost");
                        pi.clear();
                        po.set();
                    }
                })
            };
            current_thread().block_on(async {
                for _ in 0..ROUNDS {
                    ping.set();
                    assert!(
                        pong.wait_timeout_async(PATIENCE).await.unwrap(),
                        "pong lost"
                    );
                    pong.clear();
                }
            });
            assert_eq!(join(&peer, PATIENCE), 0);
        }
    });
}

#[test]
fn semaphore_and_queue_ping_pong_between_processes_loses_no_wakeup() {
    watchdog("semaphore and queue ping-pong", LIMIT, || {
        const ROUNDS: u32 = 2_000;
        let (a, b) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let (qa, qb) = (Queue::<u32>::new().unwrap(), Queue::<u32>::new().unwrap());
        let (a2, b2, qa2, qb2) = (a.clone(), b.clone(), qa.clone(), qb.clone());
        let peer = async_child(current_thread, move || async move {
            for i in 0..ROUNDS {
                assert!(a2.acquire_timeout_async(PATIENCE).await.unwrap());
                b2.release().unwrap();
                assert_eq!(qa2.get_timeout_async(PATIENCE).await.unwrap(), i);
                qb2.put_async(i).await.unwrap();
            }
        });
        multi_thread().block_on(async {
            for i in 0..ROUNDS {
                a.release().unwrap();
                assert!(b.acquire_timeout_async(PATIENCE).await.unwrap());
                qa.put_async(i).await.unwrap();
                assert_eq!(qb.get_timeout_async(PATIENCE).await.unwrap(), i);
            }
        });
        assert_eq!(join(&peer, PATIENCE), 0);
    });
}

#[test]
fn a_set_racing_the_arming_of_a_wait_is_never_lost() {
    watchdog("set racing arm", LIMIT, || {
        const ROUNDS: usize = 3_000;
        let event = Event::new().unwrap();
        let sem = Semaphore::new(0).unwrap();
        let q = Queue::<usize>::new().unwrap();
        let rt = multi_thread();
        for i in 0..ROUNDS {
            let (e, s, q2) = (event.clone(), sem.clone(), q.clone());
            let waiting = rt.spawn(async move {
                e.wait_async().await.unwrap();
                s.acquire_async().await.unwrap();
                q2.get_async().await.unwrap()
            });
            // From another thread, at whatever point the task has reached.
            let (e, s, q2) = (event.clone(), sem.clone(), q.clone());
            let setter = std::thread::spawn(move || {
                e.set();
                s.release().unwrap();
                q2.put(i).unwrap();
            });
            let got = rt.block_on(patiently("racing wait", waiting)).unwrap();
            assert_eq!(got, i);
            setter.join().unwrap();
            event.clear();
        }
        assert_eq!(sem.value(), 0);
        assert!(q.is_empty());
    });
}

// ---------------------------------------------------------------------------
// More distinct words than one futex_waitv takes.

#[test]
fn hundreds_of_distinct_words_awaited_at_once_all_wake() {
    watchdog("overflow of futex_waitv", LIMIT, || {
        const N: usize = 300;
        let events: Vec<Event> = (0..N).map(|_| Event::new().unwrap()).collect();
        let rt = multi_thread();
        let woken = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = events
            .iter()
            .map(|e| {
                let (e, woken) = (e.clone(), woken.clone());
                rt.spawn(async move {
                    e.wait_async().await.unwrap();
                    woken.fetch_add(1, SeqCst);
                })
            })
            .collect();
        // One at a time, in an order that starts past the first 127, each
        // while all the others still wait.
        let mut tasks: Vec<_> = tasks.into_iter().map(Some).collect();
        for k in 0..N {
            let i = (k * 7 + N - 1) % N;
            events[i].set();
            let t = tasks[i].take().unwrap();
            rt.block_on(patiently("one of many", t)).unwrap();
        }
        assert_eq!(woken.load(SeqCst), N);
    });
}

#[test]
fn hundreds_of_queues_each_with_a_getter_all_get_their_item() {
    watchdog("overflow with queues", LIMIT, || {
        const N: usize = 200;
        let queues: Vec<Queue<usize>> = (0..N)
            .map(|_| Queue::with_capacity(0, 4096).unwrap())
            .collect();
        let rt = multi_thread();
        let tasks: Vec<_> = queues
            .iter()
            .map(|q| {
                let q = q.clone();
                rt.spawn(async move { q.get_timeout_async(PATIENCE).await.unwrap() })
            })
            .collect();
        // Puts from another process.
        let qs = queues.clone();
        let producer = static_child(move || {
            for (i, q) in qs.iter().enumerate().rev() {
                q.put(i).unwrap();
            }
        });
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(rt.block_on(patiently("queue getter", t)).unwrap(), i);
        }
        assert_eq!(join(&producer, PATIENCE), 0);
    });
}

/// Thousands of tasks on thousands of distinct words: the waiter thread's
/// bookkeeping must not grow with the square of the entries.
#[test]
fn thousands_of_distinct_words_register_and_wake_in_reasonable_time() {
    watchdog("thousands of words", LIMIT, || {
        const N: usize = 4_000;
        let events: Vec<Event> = (0..N).map(|_| Event::new().unwrap()).collect();
        let rt = multi_thread();
        let start = Instant::now();
        let polls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = events
            .iter()
            .map(|e| {
                let e = e.clone();
                rt.spawn(Counted {
                    inner: Box::pin(async move { e.wait_async().await.unwrap() }),
                    polls: polls.clone(),
                })
            })
            .collect();
        // Every task has looked once, and so is registered.
        assert!(common::wait_until(PATIENCE, || polls.load(SeqCst) >= N));
        eprintln!("{N} distinct waits registered in {:?}", start.elapsed());
        // What the waits cost while nothing happens (a measurement window,
        // reported, not asserted: past 127 words the extra ones are polled).
        let (cpu_before, polls_before) = (cpu_time(), polls.load(SeqCst));
        let window = Instant::now();
        assert!(!Event::new()
            .unwrap()
            .wait_timeout(Duration::from_millis(300)));
        eprintln!(
            "idle, {:?}: {:?} of CPU, {} polls",
            window.elapsed(),
            cpu_time() - cpu_before,
            polls.load(SeqCst) - polls_before
        );
        for e in &events {
            e.set();
        }
        rt.block_on(async {
            for t in tasks {
                patiently("one of thousands", t).await.unwrap();
            }
        });
        eprintln!("{N} distinct waits in {:?}", start.elapsed());
    });
}

/// Past 127 distinct words the waiter thread lets the extra tasks look
/// again every 2 ms; it must not turn that into a busy loop (every task
/// that looks again re-arms, which interrupts the thread's sleep). Run on
/// the hand-written executor and on tokio's multi-threaded one.
#[test]
fn waiting_on_more_than_127_words_does_not_spin() {
    watchdog("overflow poll rate", LIMIT, || {
        const N: usize = 200;
        for on_tokio in [false, true] {
            let events: Vec<Event> = (0..N).map(|_| Event::new().unwrap()).collect();
            let polls = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<Task> = events
                .iter()
                .map(|e| {
                    let e = e.clone();
                    Box::pin(Counted {
                        inner: Box::pin(async move { e.wait_async().await.unwrap() }),
                        polls: polls.clone(),
                    }) as Task
                })
                .collect();
            let runner = std::thread::spawn(move || {
                if on_tokio {
                    let rt = multi_thread();
                    let handles: Vec<_> = tasks.into_iter().map(|t| rt.spawn(t)).collect();
                    rt.block_on(async {
                        for h in handles {
                            patiently("overflow task", h).await.unwrap();
                        }
                    });
                } else {
                    run_all(PATIENCE, tasks);
                }
            });
            // A measurement window (not a wait for a condition): how often
            // the 73 tasks past the limit are polled in it.
            let window = Duration::from_millis(300);
            let idle = Event::new().unwrap();
            let start = Instant::now();
            let before = polls.load(SeqCst);
            assert!(!idle.wait_timeout(window));
            let polls_in_window = polls.load(SeqCst) - before;
            let elapsed = start.elapsed();
            for e in &events {
                e.set();
            }
            runner.join().unwrap();
            // A poll every 2 ms per task is 150 in 300 ms; allow ten times that.
            let per_task = polls_in_window as f64 / (N - 127) as f64;
            let allowed = 10.0 * elapsed.as_secs_f64() / 0.002;
            eprintln!(
                "tokio {on_tokio}: {polls_in_window} polls in {elapsed:?}: \
                 {per_task:.0} per overflow task"
            );
            assert!(
                per_task <= allowed,
                "{per_task:.0} polls per overflow task in {elapsed:?}: the waiter thread spins"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Timeouts.

#[test]
fn timeouts_of_zero_one_nanosecond_huge_and_max() {
    watchdog("extreme timeouts", LIMIT, || {
        current_thread().block_on(async {
            let event = Event::new().unwrap();
            let sem = Semaphore::new(0).unwrap();
            let q = Queue::<u32>::bounded(1).unwrap();
            let jq = JoinableQueue::<u32>::new().unwrap();
            jq.put(0).unwrap();
            for t in [Duration::ZERO, Duration::from_nanos(1)] {
                assert!(!event.wait_timeout_async(t).await.unwrap());
                assert!(!sem.acquire_timeout_async(t).await.unwrap());
                assert!(matches!(q.get_timeout_async(t).await, Err(Error::Timeout)));
                assert!(matches!(
                    jq.join_timeout_async(t).await,
                    Err(Error::Timeout)
                ));
            }
            q.put(1).unwrap();
            for t in [Duration::ZERO, Duration::from_nanos(1)] {
                assert!(matches!(
                    q.put_timeout_async(2, t).await,
                    Err(PutError::Timeout(2))
                ));
            }
            // Huge (representable, or not) timeouts wait, neither returning
            // at once nor spinning.
            let huge = Duration::from_secs(1 << 40);
            for t in [huge, Duration::MAX] {
                let polls = Arc::new(AtomicUsize::new(0));
                let w = Counted {
                    inner: Box::pin(event.wait_timeout_async(t)),
                    polls: polls.clone(),
                };
                let r = tokio::time::timeout(Duration::from_millis(50), w).await;
                assert!(r.is_err(), "{t:?}: returned {r:?}");
                assert!(polls.load(SeqCst) < 10, "{t:?}: {polls:?} polls");
                let polls = Arc::new(AtomicUsize::new(0));
                let w = Counted {
                    inner: Box::pin(q.get_timeout_async(t)),
                    polls: polls.clone(),
                };
                // The queue has an item: at once.
                assert_eq!(w.await.unwrap(), 1);
                let w = Counted {
                    inner: Box::pin(q.get_timeout_async(t)),
                    polls: polls.clone(),
                };
                let r = tokio::time::timeout(Duration::from_millis(50), w).await;
                assert!(r.is_err(), "{t:?}: returned {r:?}");
                assert!(polls.load(SeqCst) < 10, "{t:?}: {polls:?} polls");
                q.put(1).unwrap();
                // And they end when the awaited thing happens.
                let e = event.clone();
                let setter = std::thread::spawn(move || e.set());
                assert!(patiently("huge", event.wait_timeout_async(t))
                    .await
                    .unwrap());
                setter.join().unwrap();
                event.clear();
                let s = sem.clone();
                let releaser = std::thread::spawn(move || s.release().unwrap());
                assert!(patiently("huge", sem.acquire_timeout_async(t))
                    .await
                    .unwrap());
                releaser.join().unwrap();
            }
        });
        // A barrier wait with a zero timeout breaks it, as in Python.
        current_thread().block_on(async {
            let b = Barrier::new(2).unwrap();
            assert!(matches!(
                b.wait_timeout_async(Duration::ZERO).await,
                Err(Error::BrokenBarrier)
            ));
            assert!(b.is_broken());
            let one = Barrier::new(1).unwrap();
            assert_eq!(one.wait_timeout_async(Duration::ZERO).await.unwrap(), 0);
            assert_eq!(one.wait_timeout_async(Duration::MAX).await.unwrap(), 0);
        });
    });
}

// ---------------------------------------------------------------------------
// Futures dropped, forgotten, moved.

#[test]
fn futures_dropped_unpolled_or_after_one_poll_take_and_add_nothing() {
    watchdog("dropped futures", LIMIT, || {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        // Never polled.
        let sem = Semaphore::new(1).unwrap();
        drop(sem.acquire_async());
        assert_eq!(sem.value(), 1);
        let q = Queue::<u32>::bounded(1).unwrap();
        drop(q.put_async(1));
        assert!(q.is_empty());
        q.put(7).unwrap();
        drop(q.get_async());
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().unwrap(), 7);

        for _ in 0..200 {
            // Polled once (pending), then the awaited thing happens, then
            // the future is dropped without another poll.
            let sem = Semaphore::new(0).unwrap();
            let mut f = Box::pin(sem.acquire_async());
            assert!(poll_with(f.as_mut(), &waker).is_pending());
            sem.release().unwrap();
            drop(f);
            assert_eq!(sem.value(), 1, "a dropped acquire_async took a permit");

            let q = Queue::<u32>::bounded(1).unwrap();
            let mut f = Box::pin(q.get_async());
            assert!(poll_with(f.as_mut(), &waker).is_pending());
            q.put(1).unwrap();
            drop(f);
            assert_eq!(q.len(), 1, "a dropped get_async took the item");

            let mut f = Box::pin(q.put_async(2));
            assert!(poll_with(f.as_mut(), &waker).is_pending());
            assert_eq!(q.get().unwrap(), 1);
            drop(f);
            assert!(q.is_empty(), "a dropped put_async added its item");

            let jq = JoinableQueue::<u32>::new().unwrap();
            jq.put(1).unwrap();
            let mut f = Box::pin(jq.join_async());
            assert!(poll_with(f.as_mut(), &waker).is_pending());
            drop(f);
            jq.get().unwrap();
            jq.task_done().unwrap();

            let sq = SimpleQueue::<u32>::new().unwrap();
            let mut f = Box::pin(sq.get_async());
            assert!(poll_with(f.as_mut(), &waker).is_pending());
            sq.put(3).unwrap();
            drop(f);
            assert_eq!(sq.get().unwrap(), 3);
        }
    });
}

#[test]
fn a_barrier_wait_dropped_after_arrival_breaks_it_and_before_changes_nothing() {
    watchdog("dropped barrier waits", LIMIT, || {
        let waker = Waker::from(Arc::new(Flag::default()));
        // Never polled: never arrived.
        let b = Barrier::new(2).unwrap();
        drop(b.wait_async());
        assert_eq!(b.n_waiting(), 0);
        assert!(!b.is_broken());
        // Polled once: arrived; dropped: broken, for a blocking party too.
        let mut f = Box::pin(b.wait_async());
        assert!(poll_with(f.as_mut(), &waker).is_pending());
        assert_eq!(b.n_waiting(), 1);
        let b2 = b.clone();
        let blocked = std::thread::spawn(move || b2.wait_timeout(PATIENCE));
        // The blocking party completes the pass: the future's pass passed.
        assert!(blocked.join().unwrap().is_ok());
        drop(f);
        assert!(
            !b.is_broken(),
            "a dropped wait whose pass completed broke it"
        );
        // Dropped in a pass that never filled: it breaks, for everyone.
        let mut f = Box::pin(b.wait_async());
        assert!(poll_with(f.as_mut(), &waker).is_pending());
        drop(f);
        assert!(b.is_broken());
        assert!(matches!(
            b.wait_timeout(PATIENCE),
            Err(Error::BrokenBarrier)
        ));
        b.reset().unwrap();
        assert!(!b.is_broken());
        assert_eq!(b.n_waiting(), 0);
    });
}

#[test]
fn forgotten_futures_then_dropped_primitives_leave_the_waiter_thread_working() {
    watchdog("forgotten futures", LIMIT, || {
        let waker = Waker::from(Arc::new(Flag::default()));
        for _ in 0..50 {
            let sem = Semaphore::new(0).unwrap();
            let q = Queue::<u32>::with_capacity(1, 4096).unwrap();
            q.put(1).unwrap();
            let jq = JoinableQueue::<u32>::new().unwrap();
            jq.put(1).unwrap();
            let (mut r, _w) = Pipe(true).unwrap();
            let mut futures: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = vec![
                Box::pin(async { drop(sem.acquire_async().await) }),
                Box::pin(async { drop(q.put_async(2).await) }),
                Box::pin(async { drop(jq.join_async().await) }),
                Box::pin(async { drop(r.recv_bytes_async().await) }),
            ];
            for f in &mut futures {
                assert!(poll_with(f.as_mut(), &waker).is_pending());
            }
            std::mem::forget(futures);
            drop((sem, q, jq, _w));
        }
        // The waiter thread still serves new waits.
        let event = Event::new().unwrap();
        let e = event.clone();
        let setter = std::thread::spawn(move || e.set());
        let (r, _) = block_on_within(PATIENCE, event.wait_async());
        r.unwrap();
        setter.join().unwrap();
        let (mut a, mut b) = Pipe(true).unwrap();
        let sender = std::thread::spawn(move || a.send_bytes(b"after").unwrap());
        let (got, _) = block_on_within(PATIENCE, b.recv_bytes_async());
        assert_eq!(got.unwrap(), b"after");
        sender.join().unwrap();
    });
}

#[test]
fn one_future_polled_from_threads_with_changing_wakers_wakes_the_last() {
    watchdog("moving futures", LIMIT, || {
        for round in 0..300 {
            let event = Event::new().unwrap();
            let fut: Wait = Box::pin({
                let e = event.clone();
                async move { e.wait_async().await }
            });
            let (a, b) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
            let wa = Waker::from(a.clone());
            let mut fut = std::thread::spawn(move || {
                let mut fut = fut;
                assert!(poll_with(fut.as_mut(), &wa).is_pending());
                fut
            })
            .join()
            .unwrap();
            let wb = Waker::from(b.clone());
            let wb2 = wb.clone();
            let second = std::thread::spawn(move || {
                let ready = poll_with(fut.as_mut(), &wb2).is_ready();
                (fut, ready)
            });
            if round % 2 == 0 {
                // The set may race the second poll.
                event.set();
            }
            let (mut fut, ready) = second.join().unwrap();
            if ready {
                continue;
            }
            event.set();
            assert!(
                b.wait_past(0, PATIENCE),
                "round {round}: the latest waker was not woken"
            );
            assert!(poll_with(fut.as_mut(), &wb).is_ready());
        }
    });
}

/// A waker whose drop drops a future that is registered with the waiter
/// thread: the waker must not be dropped while the registry is locked.
#[test]
fn a_waker_whose_drop_drops_a_registered_future_does_not_deadlock() {
    struct Holder {
        _future: Mutex<Option<Wait>>,
    }
    impl Wake for Holder {
        fn wake(self: Arc<Self>) {}
    }
    watchdog("waker drop re-entering the registry", LIMIT, || {
        let noop = Waker::from(Arc::new(Flag::default()));
        for drop_instead_of_repoll in [false, true] {
            let (g, f) = (Event::new().unwrap(), Event::new().unwrap());
            // G is registered (with another waker) and held by H.
            let mut held: Wait = Box::pin({
                let g = g.clone();
                async move { g.wait_async().await }
            });
            assert!(poll_with(held.as_mut(), &noop).is_pending());
            let holder = Arc::new(Holder {
                _future: Mutex::new(Some(held)),
            });
            // F's entry holds the only reference to H.
            let mut fut = Box::pin(f.wait_async());
            assert!(poll_with(fut.as_mut(), &Waker::from(holder)).is_pending());
            if drop_instead_of_repoll {
                drop(fut);
            } else {
                // Re-polled with another waker: the entry's old waker, the
                // last reference to H, is dropped, and with it G.
                assert!(poll_with(fut.as_mut(), &noop).is_pending());
            }
        }
    });
}

/// A waker that panics when woken (as the async book's executor does once
/// its run queue is gone) must not take the process's waiter thread down
/// with it: every later wait in the process would hang.
#[test]
fn a_waker_that_panics_leaves_the_waiter_thread_serving() {
    struct Panicky;
    impl Wake for Panicky {
        fn wake(self: Arc<Self>) {
            panic!("this executor is gone");
        }
    }
    watchdog("panicking waker", LIMIT, || {
        let dead = Event::new().unwrap();
        let mut f = Box::pin(dead.wait_async());
        assert!(poll_with(f.as_mut(), &Waker::from(Arc::new(Panicky))).is_pending());
        dead.set();
        for _ in 0..3 {
            let event = Event::new().unwrap();
            let e = event.clone();
            let setter = std::thread::spawn(move || e.set());
            let (r, _) = block_on_within(Duration::from_secs(10), event.wait_async());
            r.unwrap();
            setter.join().unwrap();
        }
        drop(f);
    });
}

// ---------------------------------------------------------------------------
// Cancellation under load, across processes.

/// Runs `then` once, the first time the future it wraps returns
/// `Pending`: so that what the future waits for happens only once it waits.
struct OnPending<F, C> {
    inner: Pin<Box<F>>,
    then: Option<C>,
}

impl<F, C> OnPending<F, C> {
    fn new(inner: F, then: C) -> Self {
        OnPending {
            inner: Box::pin(inner),
            then: Some(then),
        }
    }
}

impl<F: Future, C: FnOnce() + Unpin> Future for OnPending<F, C> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = self.inner.as_mut().poll(cx);
        if r.is_pending() {
            if let Some(then) = self.then.take() {
                then();
            }
        }
        r
    }
}

/// Takes `count` things that another process hands over one at a time,
/// each only once asked (a release of `ask`), asking once a take waits;
/// each take (made by `take`) is dropped after one, two or three
/// wake-ups, so that some are dropped just as their thing arrives. `got`
/// sees what each completed take returned. How many takes were dropped.
async fn take_dropping<F: Future>(
    what: &str,
    count: u32,
    ask: &Semaphore,
    mut take: impl FnMut() -> F,
    mut got: impl FnMut(F::Output),
) -> u32 {
    // Whether the next thing was asked for and has not been taken.
    let asked = std::cell::Cell::new(false);
    let (mut taken, mut dropped, mut n) = (0, 0, 0);
    while taken < count {
        n += 1;
        let request = || {
            if !asked.replace(true) {
                ask.release().unwrap();
            }
        };
        match patiently(
            what,
            Budget::new(OnPending::new(take(), request), n % 3 + 1),
        )
        .await
        {
            Some(out) => {
                got(out);
                taken += 1;
                asked.set(false);
            }
            None => dropped += 1,
        }
    }
    dropped
}

/// Each item is put by another process only once a get waits for it, and
/// gets are given up (dropped unpolled) after one, two or three wake-ups:
/// a third of them are dropped just as their item arrives.
#[test]
fn gets_dropped_when_woken_take_no_item() {
    watchdog("cancelled gets", LIMIT, || {
        const ITEMS: u32 = 1_000;
        let q = Queue::<u32>::new().unwrap();
        let credit = Semaphore::new(0).unwrap();
        let (q2, c2) = (q.clone(), credit.clone());
        let producer = static_child(move || {
            for i in 0..ITEMS {
                assert!(c2.acquire_timeout(PATIENCE));
                q2.put(i).unwrap();
            }
        });
        let mut seen = vec![false; ITEMS as usize];
        let take = || q.get_async();
        let cancelled =
            multi_thread().block_on(take_dropping("get", ITEMS, &credit, take, |item| {
                let i = item.unwrap();
                assert!(!seen[i as usize], "item {i} twice");
                seen[i as usize] = true;
            }));
        eprintln!("{cancelled} gets dropped when woken");
        assert!(cancelled > 0);
        assert!(seen.iter().all(|&s| s));
        assert!(q.is_empty(), "more items than were put");
        assert_eq!(join(&producer, PATIENCE), 0);
    });
}

/// As for gets: a put into a full queue makes another process take one
/// item only once it waits, and is given up after one to three wake-ups.
#[test]
fn puts_dropped_when_woken_add_no_item() {
    watchdog("cancelled puts", LIMIT, || {
        const ITEMS: u32 = 1_000;
        let q = Queue::<u32>::bounded(2).unwrap();
        let credit = Semaphore::new(0).unwrap();
        let done = Queue::<Vec<u32>>::with_capacity(0, 1 << 16).unwrap();
        let (q2, c2, done2) = (q.clone(), credit.clone(), done.clone());
        let consumer = static_child(move || {
            let mut got = Vec::new();
            loop {
                assert!(c2.acquire_timeout(PATIENCE));
                let i = q2.get_timeout(PATIENCE).unwrap();
                if i == u32::MAX {
                    break;
                }
                got.push(i);
            }
            done2.put(got).unwrap();
        });
        let mut cancelled = 0u32;
        let mut credits = 0;
        current_thread().block_on(async {
            let mut n = 0;
            for i in 0..ITEMS {
                // Retried until it is put: a dropped put that did add the
                // item would show as a duplicate.
                loop {
                    n += 1;
                    let make_room = || {
                        credit.release().unwrap();
                        credits += 1;
                    };
                    let put = OnPending::new(q.put_async(i), make_room);
                    match patiently("put", Budget::new(put, n % 3 + 1)).await {
                        Some(r) => break r.unwrap(),
                        None => cancelled += 1,
                    }
                }
            }
            // Room for the rest of the items, and for the pill.
            for _ in credits..=ITEMS {
                credit.release().unwrap();
            }
            patiently("pill", q.put_async(u32::MAX)).await.unwrap();
        });
        eprintln!("{cancelled} puts dropped when woken");
        assert!(cancelled > 0);
        let got = done.get_timeout(PATIENCE).unwrap();
        assert_eq!(got, (0..ITEMS).collect::<Vec<_>>());
        assert_eq!(join(&consumer, PATIENCE), 0);
    });
}

/// As for gets: each permit is released by another process only once an
/// acquire waits for it.
#[test]
fn acquires_dropped_when_woken_take_no_permit() {
    watchdog("cancelled acquires", LIMIT, || {
        const PERMITS: u32 = 1_000;
        let sem = Semaphore::new(0).unwrap();
        let ask = Semaphore::new(0).unwrap();
        let (s, a) = (sem.clone(), ask.clone());
        let releaser = static_child(move || {
            for _ in 0..PERMITS {
                assert!(a.acquire_timeout(PATIENCE));
                s.release().unwrap();
            }
        });
        let take = || sem.acquire_async();
        let cancelled =
            current_thread().block_on(take_dropping("acquire", PERMITS, &ask, take, |r| {
                r.unwrap();
            }));
        eprintln!("{cancelled} acquires dropped when woken");
        assert!(cancelled > 0);
        assert_eq!(join(&releaser, PATIENCE), 0);
        assert_eq!(sem.value(), 0, "more permits taken than released");
    });
}

// ---------------------------------------------------------------------------
// Connections.

/// A send cancelled part-way must end the stream for the reader even when
/// another process (a forked child) still holds a copy of the sending end.
#[test]
fn a_send_cancelled_half_way_ends_the_stream_even_with_the_end_shared() {
    watchdog("cancelled send, shared descriptor", LIMIT, || {
        let (mut a, mut b) = Pipe(true).unwrap();
        let hold = Event::new().unwrap();
        let h = hold.clone();
        // Inherits both ends, and keeps them open until told.
        let holder = static_child(move || assert!(h.wait_timeout(PATIENCE)));
        let big = vec![1u8; 8 << 20];
        current_thread().block_on(async {
            let r = tokio::time::timeout(Duration::from_millis(50), a.send_bytes_async(&big)).await;
            assert!(r.is_err(), "the send finished with nobody reading");
        });
        assert!(a.closed());
        let r = b.recv_bytes_timeout(Duration::from_secs(10));
        hold.set();
        assert_eq!(join(&holder, PATIENCE), 0);
        assert!(
            matches!(r, Err(Error::ConnectionClosed)),
            "the reader got {:?} instead of the end of the stream",
            r.map(|m| m.len())
        );
    });
}

/// Found while attacking the cancelled send: a blocking receive with a
/// timeout must keep to it when half a message has arrived and the rest
/// never comes.
#[test]
fn recv_bytes_timeout_keeps_its_timeout_with_half_a_message_buffered() {
    watchdog("recv timeout mid-message", LIMIT, || {
        use std::io::Write;
        let (mut raw, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut conn =
            multiproc::Connection::from_socket(std::os::fd::OwnedFd::from(theirs)).unwrap();
        // A header for 100 bytes, and 10 of them.
        raw.write_all(&multiproc::conn::frame::header(100).unwrap())
            .unwrap();
        raw.write_all(&[0u8; 10]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let r = conn.recv_bytes_timeout(Duration::from_millis(100));
            tx.send(r.map(|m| m.len())).unwrap();
        });
        let r = rx.recv_timeout(PATIENCE);
        // Ends a read that ignored its timeout.
        drop(raw);
        reader.join().unwrap();
        assert!(matches!(r, Ok(Err(Error::Timeout))), "{r:?}");
    });
}

#[test]
fn receives_cancelled_at_random_points_lose_no_byte() {
    watchdog("cancelled receives", LIMIT, || {
        for duplex in [true, false] {
            let (mut r, mut w) = Pipe(duplex).unwrap();
            if duplex {
                // Either end of a socket pair receives.
                std::mem::swap(&mut r, &mut w);
            }
            const MESSAGES: u32 = 300;
            let sender = static_child(move || {
                for i in 0..MESSAGES {
                    let len = (i as usize * 7919) % 200_000;
                    let msg: Vec<u8> = (0..len).map(|k| (k as u32 + i) as u8).collect();
                    w.send_bytes(&msg).unwrap();
                }
            });
            let mut cancelled = 0;
            current_thread().block_on(async {
                let mut n = 0u64;
                let mut i = 0;
                while i < MESSAGES {
                    n += 1;
                    let tiny = Duration::from_micros(n % 100);
                    match tokio::time::timeout(tiny, r.recv_bytes_async()).await {
                        Ok(msg) => {
                            let msg = msg.unwrap();
                            let len = (i as usize * 7919) % 200_000;
                            assert_eq!(msg.len(), len, "message {i}");
                            assert!(msg
                                .iter()
                                .enumerate()
                                .all(|(k, &x)| x == (k as u32 + i) as u8));
                            i += 1;
                        }
                        Err(_) => cancelled += 1,
                    }
                }
            });
            eprintln!("duplex {duplex}: {cancelled} receives cancelled");
            assert_eq!(join(&sender, PATIENCE), 0);
        }
    });
}

// ---------------------------------------------------------------------------
// Processes.

/// With SIGCHLD ignored the kernel reaps children itself: `join` reports
/// it; `join_async` must too, instead of waking and looking forever.
#[test]
fn join_async_of_a_child_reaped_elsewhere_is_an_error_not_a_spin() {
    watchdog("join_async with SIGCHLD ignored", LIMIT, || {
        let c = static_child(|| {
            // SAFETY: setting a signal disposition in this child process.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
            // It waits, so that `start` can open its pidfd before the
            // kernel reaps it.
            let go = Event::new().unwrap();
            let g = go.clone();
            let mut grandchild = Process::new(move || {
                let _ = g.wait_timeout(PATIENCE);
            });
            grandchild.start().unwrap();
            go.set();
            let (r, polls) = block_on_within(Duration::from_secs(10), grandchild.join_async());
            assert!(
                matches!(r, Err(Error::ProcessState { .. })),
                "join_async gave {r:?}"
            );
            assert!(polls < 100, "{polls} polls");
            assert!(grandchild.join().is_err());
        });
        assert_eq!(join(&c, PATIENCE), 0);
    });
}

#[test]
fn join_async_of_a_killed_child_and_of_many_children_at_once() {
    watchdog("join_async of many", LIMIT, || {
        let stop = Event::new().unwrap();
        let children: Vec<_> = (0..20)
            .map(|i| {
                let s = stop.clone();
                static_child(move || {
                    assert!(s.wait_timeout(PATIENCE));
                    multiproc::process::exit(i);
                })
            })
            .collect();
        let victim = {
            let s = stop.clone();
            static_child(move || {
                let _ = s.wait_timeout(PATIENCE);
            })
        };
        current_thread().block_on(async {
            let joins: Vec<_> = children.iter().map(|c| c.join_async()).collect();
            victim.kill().unwrap();
            assert_eq!(
                patiently("killed", victim.join_async()).await.unwrap(),
                -libc::SIGKILL
            );
            stop.set();
            for (i, j) in joins.into_iter().enumerate() {
                assert_eq!(patiently("join", j).await.unwrap(), i as i32);
            }
        });
    });
}

// ---------------------------------------------------------------------------
// Forks.

/// Children forked while another thread arms and disarms waits all the
/// time (so the registry's lock is often held at the fork) start clean.
#[test]
fn forks_while_a_thread_keeps_arming_give_working_children_and_grandchildren() {
    watchdog("fork while arming", LIMIT, || {
        let stop = Arc::new(AtomicBool::new(false));
        let event = Event::new().unwrap();
        let s = stop.clone();
        let e = event.clone();
        let armer = std::thread::spawn(move || {
            let waker = Waker::from(Arc::new(Flag::default()));
            let (mut r, _w) = Pipe(true).unwrap();
            while !s.load(SeqCst) {
                let mut f = Box::pin(e.wait_async());
                assert!(poll_with(f.as_mut(), &waker).is_pending());
                drop(f);
                let mut f = Box::pin(r.recv_bytes_async());
                assert!(poll_with(f.as_mut(), &waker).is_pending());
                drop(f);
            }
        });
        // The parent's waiter thread is blocked with entries in it too.
        let rt = multi_thread();
        let e = event.clone();
        let parked = rt.spawn(async move { e.wait_async().await.unwrap() });
        for _ in 0..30 {
            let c = static_child(|| {
                // Waits that arm, in the child and in a grandchild.
                let check = || {
                    let sem = Semaphore::new(0).unwrap();
                    let (r, _) = block_on_within(
                        PATIENCE,
                        sem.acquire_timeout_async(Duration::from_millis(1)),
                    );
                    assert!(!r.unwrap());
                    let ev = Event::new().unwrap();
                    let e2 = ev.clone();
                    let t = std::thread::spawn(move || e2.set());
                    let (r, _) = block_on_within(PATIENCE, ev.wait_async());
                    r.unwrap();
                    t.join().unwrap();
                    let (mut a, mut b) = Pipe(true).unwrap();
                    let t = std::thread::spawn(move || a.send_bytes(b"x").unwrap());
                    let (m, _) = block_on_within(PATIENCE, b.recv_bytes_async());
                    assert_eq!(m.unwrap(), b"x");
                    t.join().unwrap();
                };
                check();
                let grandchild = static_child(check);
                assert_eq!(join(&grandchild, PATIENCE), 0);
            });
            assert_eq!(join(&c, PATIENCE), 0);
        }
        stop.store(true, SeqCst);
        armer.join().unwrap();
        event.set();
        rt.block_on(patiently("parent's wait", parked)).unwrap();
    });
}

/// A future armed in the parent and polled again in a forked child (it
/// was copied by the fork) waits in the child's own registry.
#[test]
fn a_future_armed_before_a_fork_is_awaited_in_the_child() {
    watchdog("future across fork", LIMIT, || {
        let event = Event::new().unwrap();
        let waker = Waker::from(Arc::new(Flag::default()));
        let go = Semaphore::new(0).unwrap();
        multiproc::scope(|s| {
            let mut f = Box::pin(event.wait_async());
            assert!(poll_with(f.as_mut(), &waker).is_pending());
            let g = go.clone();
            let mut c = s.process(move || {
                let flag = Arc::new(Flag::default());
                let w = Waker::from(flag.clone());
                assert!(poll_with(f.as_mut(), &w).is_pending());
                g.release().unwrap();
                assert!(flag.wait_past(0, PATIENCE), "the child's waiter never woke");
                assert!(poll_with(f.as_mut(), &w).is_ready());
                drop(f);
            });
            c.start().unwrap();
            assert!(go.acquire_timeout(PATIENCE));
            event.set();
            assert_eq!(join(&c, PATIENCE), 0);
        });
    });
}

// ---------------------------------------------------------------------------
// Many processes, many tasks, one queue; killed waiters.

#[test]
fn many_processes_and_tasks_on_one_bounded_queue_deliver_each_item_once() {
    watchdog("many on one queue", LIMIT, || {
        const ITEMS: u32 = 4_000;
        const PRODUCERS: u32 = 2;
        const CONSUMERS: usize = 3;
        const TASKS: usize = 40;
        let jobs = Queue::<u32>::bounded(8).unwrap();
        let results = Queue::<(u32, u32)>::new().unwrap();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let jobs = jobs.clone();
                async_child(current_thread, move || async move {
                    let tasks: Vec<_> = (0..4)
                        .map(|t| {
                            let jobs = jobs.clone();
                            tokio::spawn(async move {
                                let mut i = p * (ITEMS / PRODUCERS) + t;
                                while i < (p + 1) * (ITEMS / PRODUCERS) {
                                    patiently("put", jobs.put_async(i)).await.unwrap();
                                    i += 4;
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let (jobs, results) = (jobs.clone(), results.clone());
                let rt: fn() -> tokio::runtime::Runtime =
                    if c == 0 { current_thread } else { multi_thread };
                async_child(rt, move || async move {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| {
                            let (jobs, results) = (jobs.clone(), results.clone());
                            tokio::spawn(async move {
                                loop {
                                    let job = jobs.get_timeout_async(PATIENCE).await.unwrap();
                                    if job == u32::MAX {
                                        break;
                                    }
                                    results.put_async((job, c as u32)).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            })
            .collect();
        let mut seen = vec![false; ITEMS as usize];
        let mut per_consumer = [0u32; CONSUMERS];
        for _ in 0..ITEMS {
            let (i, c) = results.get_timeout(PATIENCE).unwrap();
            assert!(!seen[i as usize], "item {i} delivered twice");
            seen[i as usize] = true;
            per_consumer[c as usize] += 1;
        }
        eprintln!("per consumer: {per_consumer:?}");
        for p in &producers {
            assert_eq!(join(p, PATIENCE), 0);
        }
        for _ in 0..CONSUMERS * TASKS {
            jobs.put(u32::MAX).unwrap();
        }
        for c in &consumers {
            assert_eq!(join(c, PATIENCE), 0);
        }
        assert!(results.is_empty());
    });
}

#[test]
fn consumers_killed_mid_stream_leave_every_other_item_delivered_once() {
    watchdog("killed mid-stream", LIMIT, || {
        const ITEMS: u32 = 3_000;
        let jobs = Queue::<u32>::bounded(16).unwrap();
        let results = Queue::<u32>::new().unwrap();
        let consumer = |jobs: Queue<u32>, results: Queue<u32>| {
            async_child(multi_thread, move || async move {
                let tasks: Vec<_> = (0..30)
                    .map(|_| {
                        let (jobs, results) = (jobs.clone(), results.clone());
                        tokio::spawn(async move {
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
        let victims: Vec<_> = (0..2)
            .map(|_| consumer(jobs.clone(), results.clone()))
            .collect();
        let survivors: Vec<_> = (0..2)
            .map(|_| consumer(jobs.clone(), results.clone()))
            .collect();
        let mut seen = vec![false; ITEMS as usize];
        let mut got = 0;
        current_thread().block_on(async {
            for i in 0..ITEMS {
                patiently("put", jobs.put_async(i)).await.unwrap();
                if i == ITEMS / 3 || i == ITEMS / 2 {
                    let v = &victims[usize::from(i != ITEMS / 3)];
                    v.kill().unwrap();
                }
                // Drain results as we go (the results queue is unbounded).
                while let Ok(r) = results.get_timeout_async(Duration::ZERO).await {
                    assert!(!seen[r as usize], "item {r} twice");
                    seen[r as usize] = true;
                    got += 1;
                }
            }
            for _ in 0..2 * 30 {
                patiently("pill", jobs.put_async(u32::MAX)).await.unwrap();
            }
        });
        for v in &victims {
            assert_eq!(join(v, PATIENCE), -libc::SIGKILL);
        }
        for s in &survivors {
            assert_eq!(join(s, PATIENCE), 0);
        }
        while let Ok(r) = results.get_timeout(Duration::ZERO) {
            assert!(!seen[r as usize], "item {r} twice");
            seen[r as usize] = true;
            got += 1;
        }
        // The killed ones may have taken a few items with them; nothing else
        // is lost.
        eprintln!("{got} of {ITEMS} delivered");
        assert!(got + 2 * 30 >= ITEMS, "only {got} of {ITEMS} delivered");
        assert!(jobs.is_empty());
    });
}

// ---------------------------------------------------------------------------
// Blocking and async waiters on one named object.

#[test]
fn blocking_and_async_waiters_share_named_semaphores_queues_and_barriers() {
    watchdog("named objects, mixed waiters", LIMIT, || {
        let sn = TempName::new("attack-sem");
        let qn = TempName::new("attack-queue");
        let bn = TempName::new("attack-barrier");
        let sem = Semaphore::create(&sn, 0).unwrap();
        let q = Queue::<u32>::create(&qn, 0, 1 << 16).unwrap();
        let barrier = Barrier::create(&bn, 3).unwrap();
        const ROUNDS: u32 = 200;
        let (s1, q1, b1) = (sn.to_string(), qn.to_string(), bn.to_string());
        let blocking = static_child(move || {
            let sem = Semaphore::open(&s1).unwrap();
            let q = Queue::<u32>::open(&q1).unwrap();
            let b = Barrier::open(&b1).unwrap();
            for _ in 0..ROUNDS {
                assert!(sem.acquire_timeout(PATIENCE));
                q.get_timeout(PATIENCE).unwrap();
                b.wait_timeout(PATIENCE).unwrap();
            }
        });
        let (s2, q2, b2) = (sn.to_string(), qn.to_string(), bn.to_string());
        let asynchronous = async_child(multi_thread, move || async move {
            let sem = Semaphore::open(&s2).unwrap();
            let q = Queue::<u32>::open(&q2).unwrap();
            let b = Barrier::open(&b2).unwrap();
            for _ in 0..ROUNDS {
                assert!(sem.acquire_timeout_async(PATIENCE).await.unwrap());
                q.get_timeout_async(PATIENCE).await.unwrap();
                b.wait_timeout_async(PATIENCE).await.unwrap();
            }
        });
        for i in 0..ROUNDS {
            sem.release().unwrap();
            sem.release().unwrap();
            q.put(i).unwrap();
            q.put(i).unwrap();
            barrier.wait_timeout(PATIENCE).unwrap();
        }
        assert_eq!(join(&blocking, PATIENCE), 0);
        assert_eq!(join(&asynchronous, PATIENCE), 0);
        assert_eq!(sem.value(), 0);
        assert!(q.is_empty());
    });
}

// ---------------------------------------------------------------------------
// Executors.

#[test]
fn barrier_waits_spawned_on_a_multi_threaded_runtime_move_between_threads() {
    watchdog("barrier on tokio threads", LIMIT, || {
        const PARTIES: u32 = 8;
        const PASSES: u32 = 100;
        let barrier = Barrier::new(PARTIES).unwrap();
        let rt = multi_thread();
        let tasks: Vec<_> = (0..PARTIES)
            .map(|_| {
                let b = barrier.clone();
                rt.spawn(async move {
                    for _ in 0..PASSES {
                        b.wait_timeout_async(PATIENCE).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            rt.block_on(patiently("barrier task", t)).unwrap();
        }
        assert!(!barrier.is_broken());
    });
}

#[test]
fn a_hand_written_executor_runs_many_waits() {
    watchdog("hand-written executor", LIMIT, || {
        const TASKS: usize = 100;
        let event = Event::new().unwrap();
        let sem = Semaphore::new(0).unwrap();
        let q = Queue::<usize>::new().unwrap();
        let barrier = Barrier::new(TASKS as u32).unwrap();
        let tasks: Vec<Task> = (0..TASKS)
            .map(|i| {
                let (e, s, q, b) = (event.clone(), sem.clone(), q.clone(), barrier.clone());
                Box::pin(async move {
                    e.wait_async().await.unwrap();
                    s.acquire_async().await.unwrap();
                    q.put_async(i).await.unwrap();
                    b.wait_async().await.unwrap();
                }) as Task
            })
            .collect();
        let (e, s) = (event.clone(), sem.clone());
        let waker = std::thread::spawn(move || {
            e.set();
            for _ in 0..TASKS {
                s.release().unwrap();
            }
        });
        run_all(PATIENCE, tasks);
        waker.join().unwrap();
        let mut got: Vec<usize> = (0..TASKS).map(|_| q.get().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..TASKS).collect::<Vec<_>>());
    });
}

/// A released barrier party whose future is kept but never polled again
/// (or forgotten) must not keep every later pass from filling: in an
/// executor that is an ordinary state (a future held by a combinator that
/// stopped polling it), where a released thread always runs eventually.
#[test]
fn a_released_but_unpolled_barrier_party_does_not_wedge_the_next_pass() {
    watchdog("unpolled barrier party", LIMIT, || {
        let b = Barrier::new(2).unwrap();
        let waker = Waker::from(Arc::new(Flag::default()));
        let mut f = Box::pin(b.wait_async());
        assert!(poll_with(f.as_mut(), &waker).is_pending());
        // The other party completes the pass; `f` is released but not polled.
        b.wait_timeout(PATIENCE).unwrap();
        std::mem::forget(f);
        // The next pass, between two other parties.
        let b2 = b.clone();
        let other = std::thread::spawn(move || b2.wait_timeout(Duration::from_secs(2)));
        let mine = b.wait_timeout(Duration::from_secs(2));
        let theirs = other.join().unwrap();
        assert!(mine.is_ok() && theirs.is_ok(), "{mine:?} {theirs:?}");
    });
}
