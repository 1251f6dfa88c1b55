//! Adversarial tests of the waiter after it came to keep its registrations
//! by id, watch and deadline (and to stop polling event and semaphore
//! waits): more distinct words than every waiter thread can sleep on, a
//! new registration racing the retirement of an idle thread, tasks on one
//! word dropped as it fires, many tasks with one deadline, and permits
//! taken by blocking waiters of another process while tasks wait.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wakers::patiently;
use common::{current_thread, join, multi_thread, static_child, watchdog};
use multiproc::{Event, Semaphore};

const LIMIT: Duration = Duration::from_secs(120);

/// More distinct words awaited at once than 64 threads of 127 words each
/// sleep on: every one is woken when its event is set, those past the
/// threads' capacity included, in an order that starts with the last.
#[test]
fn more_words_than_every_waiter_thread_sleeps_on_all_wake() {
    watchdog("64 x 127 + 1 words", LIMIT, || {
        const N: usize = 64 * 127 + 40;
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
        // Let every task register before any event is set.
        let end = Instant::now() + Duration::from_secs(60);
        while common::procfs::threads_named(std::process::id(), "multiproc-waite").len() < 64 {
            assert!(Instant::now() < end, "64 waiter threads never ran");
            std::thread::yield_now();
        }
        let mut tasks: Vec<_> = tasks.into_iter().map(Some).collect();
        // Some one at a time (the last registered first), then all at once.
        for k in 0..60 {
            let i = N - 1 - k * 131;
            events[i].set();
            let t = tasks[i].take().unwrap();
            rt.block_on(patiently("one past capacity", t)).unwrap();
        }
        for e in &events {
            e.set();
        }
        for t in tasks.into_iter().flatten() {
            rt.block_on(patiently("one of all", t)).unwrap();
        }
        assert_eq!(woken.load(SeqCst), N);
    });
}

/// A wait armed just as the last of two waiter threads retires (after
/// [`IDLE`](one second) with nothing to watch) is still woken: it is given
/// to a thread that exists.
#[test]
fn a_wait_armed_as_an_idle_thread_retires_is_woken() {
    watchdog("arm racing retirement", LIMIT, || {
        let rt = current_thread();
        // 128 distinct words: the second thread gets one.
        let events: Vec<Event> = (0..128).map(|_| Event::new().unwrap()).collect();
        for step in 0..12u64 {
            let tasks: Vec<_> = events
                .iter()
                .map(|e| {
                    let e = e.clone();
                    rt.spawn(async move { e.wait_async().await.unwrap() })
                })
                .collect();
            // Let them all register, then free the second thread.
            for _ in 0..3 {
                rt.block_on(tokio::task::yield_now());
            }
            for e in &events {
                e.set();
            }
            for t in tasks {
                rt.block_on(patiently("first round", t)).unwrap();
            }
            for e in &events {
                e.clear();
            }
            // Arm again around the moment the idle thread retires.
            let offset = Duration::from_millis(960 + step * 8);
            let start = Instant::now();
            while start.elapsed() < offset {
                std::thread::yield_now();
            }
            let tasks: Vec<_> = events
                .iter()
                .map(|e| {
                    let e = e.clone();
                    rt.spawn(async move { e.wait_async().await.unwrap() })
                })
                .collect();
            for _ in 0..3 {
                rt.block_on(tokio::task::yield_now());
            }
            for e in events.iter().rev() {
                e.set();
            }
            for t in tasks {
                rt.block_on(patiently("armed at retirement", t)).unwrap();
            }
            for e in &events {
                e.clear();
            }
        }
    });
}

/// Two tasks on one word, one dropped on another thread just as the word
/// fires: the other is woken every time.
#[test]
fn a_task_dropped_as_its_shared_word_fires_leaves_the_other_woken() {
    watchdog("drop as it fires", LIMIT, || {
        let rt = multi_thread();
        for _ in 0..2000 {
            let event = Event::new().unwrap();
            let (a, b) = (event.clone(), event.clone());
            let dropped = rt.spawn(async move { a.wait_async().await.unwrap() });
            let kept = rt.spawn(async move { b.wait_async().await.unwrap() });
            std::thread::yield_now();
            let setter = {
                let e = event.clone();
                std::thread::spawn(move || e.set())
            };
            dropped.abort();
            setter.join().unwrap();
            rt.block_on(patiently("the kept task", kept)).unwrap();
        }
    });
}

/// A thousand tasks with the same timeout on one word, and as many with
/// timeouts of 0, 1 ns and `Duration::MAX`: the timed ones all end
/// unset, the others are woken by the set.
#[test]
fn many_tasks_with_one_deadline_all_time_out() {
    watchdog("one deadline", LIMIT, || {
        let rt = multi_thread();
        let event = Event::new().unwrap();
        let timed: Vec<_> = (0..1000)
            .map(|i| {
                let e = event.clone();
                let t = match i % 3 {
                    0 => Duration::from_millis(50),
                    1 => Duration::ZERO,
                    _ => Duration::from_nanos(1),
                };
                rt.spawn(async move { e.wait_timeout_async(t).await.unwrap() })
            })
            .collect();
        let forever: Vec<_> = (0..300)
            .map(|_| {
                let e = event.clone();
                rt.spawn(async move { e.wait_timeout_async(Duration::MAX).await.unwrap() })
            })
            .collect();
        for t in timed {
            assert!(!rt.block_on(patiently("a timed wait", t)).unwrap());
        }
        event.set();
        for t in forever {
            assert!(rt.block_on(patiently("an endless wait", t)).unwrap());
        }
    });
}

/// Tasks acquire a semaphore while a blocking waiter in another process
/// takes permits too (its look sets the word back to the value the tasks
/// sleep on): every permit released is taken once, by someone, and
/// nobody is left asleep with a permit free.
#[test]
fn tasks_and_a_blocking_waiter_of_another_process_share_every_permit() {
    watchdog("permits shared with a blocking process", LIMIT, || {
        const ROUNDS: usize = 3000;
        let sem = Semaphore::new(0).unwrap();
        let taken = Semaphore::new(0).unwrap();
        let (s, t) = (sem.clone(), taken.clone());
        let child = static_child(move || {
            // Takes until it sees the stop permit's count reach it.
            while s.acquire_timeout(Duration::from_secs(5)) {
                t.release().unwrap();
            }
        });
        let rt = multi_thread();
        let got = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (s, got, t) = (sem.clone(), got.clone(), taken.clone());
                rt.spawn(async move {
                    loop {
                        if !s
                            .acquire_timeout_async(Duration::from_secs(5))
                            .await
                            .unwrap()
                        {
                            return;
                        }
                        got.fetch_add(1, SeqCst);
                        t.release().unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..ROUNDS {
            sem.release().unwrap();
            // Each permit is taken, by a task or the child.
            assert!(
                taken.acquire_timeout(Duration::from_secs(10)),
                "a released permit was never taken (value {})",
                sem.value()
            );
        }
        for t in tasks {
            rt.block_on(patiently("a task", t)).unwrap();
        }
        assert_eq!(join(&child, Duration::from_secs(30)), 0);
        // How many the tasks took is a race with the child (from none to
        // most, by the load of the machine): no share is promised.
        eprintln!("the tasks took {} of {ROUNDS}", got.load(SeqCst));
    });
}

/// Counts the polls of the future it wraps.
struct Counted<F> {
    inner: std::pin::Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: std::future::Future> std::future::Future for Counted<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls.fetch_add(1, SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

/// Past the words that 64 waiter threads sleep on, the extra tasks look
/// again every 2 ms: that must not become a busy loop (each task that
/// looks again re-arms on a new watch, which interrupts a thread, whose
/// interrupted sleep lets the extra tasks look again).
#[test]
fn waiting_on_more_words_than_every_thread_takes_does_not_spin() {
    watchdog("overflow past 64 threads", LIMIT, || {
        const EXTRA: usize = 73;
        const N: usize = 64 * 127 + EXTRA;
        let events: Vec<Event> = (0..N).map(|_| Event::new().unwrap()).collect();
        let polls = Arc::new(AtomicUsize::new(0));
        let rt = multi_thread();
        let handles: Vec<_> = events
            .iter()
            .map(|e| {
                let e = e.clone();
                rt.spawn(Counted {
                    inner: Box::pin(async move { e.wait_async().await.unwrap() }),
                    polls: polls.clone(),
                })
            })
            .collect();
        let end = Instant::now() + Duration::from_secs(60);
        while polls.load(SeqCst) < N {
            assert!(Instant::now() < end, "the tasks never ran");
            std::thread::yield_now();
        }
        // A measurement window (not a wait for a condition).
        let window = Duration::from_millis(500);
        let idle = Event::new().unwrap();
        let start = Instant::now();
        let before = polls.load(SeqCst);
        assert!(!idle.wait_timeout(window));
        let in_window = polls.load(SeqCst) - before;
        let elapsed = start.elapsed();
        for e in &events {
            e.set();
        }
        for h in handles {
            rt.block_on(patiently("overflow task", h)).unwrap();
        }
        // A poll every 2 ms per extra task; allow ten times that.
        let per_task = in_window as f64 / EXTRA as f64;
        let allowed = 10.0 * elapsed.as_secs_f64() / 0.002;
        eprintln!("{in_window} polls in {elapsed:?}: {per_task:.0} per extra task");
        assert!(
            per_task <= allowed,
            "{per_task:.0} polls per extra task in {elapsed:?}: the waiter threads spin"
        );
    });
}

/// More descriptors awaited at once than one waiter thread polls (1023),
/// when no second thread can be had (the descriptor table is full when
/// the extra waits arm, so its wake-up eventfd cannot be made): the
/// thread that takes the extra ones must look at them every 2 ms, and a
/// message sent to one of them is received. Run in a child process, whose
/// descriptor table it fills.
#[test]
fn descriptors_past_one_threads_poll_are_looked_at_when_no_thread_can_start() {
    watchdog("descriptor overflow", LIMIT, || {
        let child = static_child(|| {
            const FIRST: usize = 1023;
            const EXTRA: usize = 5;
            let rt = current_thread();
            let pairs: Vec<_> = (0..FIRST + EXTRA)
                .map(|_| multiproc::pipe().unwrap())
                .collect();
            let polls = Arc::new(AtomicUsize::new(0));
            let mut senders = Vec::new();
            let mut tasks = Vec::new();
            let spawn_until_polled = |range: std::ops::Range<usize>,
                                      pairs: &mut Vec<_>,
                                      senders: &mut Vec<_>,
                                      tasks: &mut Vec<_>| {
                for _ in range {
                    let (mut a, b): (multiproc::Connection, multiproc::Connection) =
                        pairs.remove(0);
                    senders.push(b);
                    tasks.push(rt.spawn(Counted {
                        inner: Box::pin(async move { a.recv_async::<u32>().await.unwrap() }),
                        polls: polls.clone(),
                    }));
                }
                let want = tasks.len();
                let end = Instant::now() + Duration::from_secs(30);
                while polls.load(SeqCst) < want {
                    assert!(Instant::now() < end, "the tasks never ran");
                    rt.block_on(tokio::task::yield_now());
                }
            };
            let mut pairs = pairs;
            spawn_until_polled(0..FIRST, &mut pairs, &mut senders, &mut tasks);
            // No descriptor left for a second thread's eventfd.
            let held = common::fill_descriptors();
            spawn_until_polled(0..EXTRA, &mut pairs, &mut senders, &mut tasks);
            drop(held);
            for (i, t) in tasks.into_iter().enumerate().rev() {
                senders[i].send(&(i as u32)).unwrap();
                let got = rt.block_on(patiently("a receive", t)).unwrap();
                assert_eq!(got, i as u32);
            }
        });
        assert_eq!(
            join(&child, LIMIT),
            0,
            "a receive past the poll never ended"
        );
    });
}

/// Thirty-two event ping-pongs at once between tasks of this process and
/// threads of another, all on one waiter thread's words: wake-ups that
/// come while the thread takes another word's tasks or collects its
/// watches again are not lost (a lost one would cost the periodic
/// compare, 100 ms, each time: minutes over all the rounds).
#[test]
fn many_ping_pongs_on_one_waiter_thread_lose_no_wakeup() {
    watchdog("many ping-pongs", LIMIT, || {
        const PAIRS: usize = 32;
        const ROUNDS: usize = 300;
        let pings: Vec<Event> = (0..PAIRS).map(|_| Event::new().unwrap()).collect();
        let pongs: Vec<Event> = (0..PAIRS).map(|_| Event::new().unwrap()).collect();
        let (ps, qs) = (pings.clone(), pongs.clone());
        let child = static_child(move || {
            let threads: Vec<_> = ps
                .into_iter()
                .zip(qs)
                .map(|(ping, pong)| {
                    std::thread::spawn(move || {
                        for _ in 0..ROUNDS {
                            assert!(ping.wait_timeout(Duration::from_secs(20)));
                            ping.clear();
                            // Past the task's spin: it sleeps on the waiter.
                            std::thread::sleep(Duration::from_micros(300));
                            pong.set();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        });
        let rt = multi_thread();
        let start = Instant::now();
        let tasks: Vec<_> = pings
            .into_iter()
            .zip(pongs)
            .map(|(ping, pong)| {
                rt.spawn(async move {
                    let mut slow = 0;
                    for _ in 0..ROUNDS {
                        let t = Instant::now();
                        ping.set();
                        assert!(pong
                            .wait_timeout_async(Duration::from_secs(20))
                            .await
                            .unwrap());
                        pong.clear();
                        if t.elapsed() >= Duration::from_millis(90) {
                            slow += 1;
                        }
                    }
                    slow
                })
            })
            .collect();
        let mut slow = 0;
        for t in tasks {
            slow += rt.block_on(patiently("a ping-pong", t)).unwrap();
        }
        let elapsed = start.elapsed();
        assert_eq!(join(&child, LIMIT), 0);
        eprintln!(
            "{} rounds in {elapsed:?}, {slow} of them 90 ms or more",
            PAIRS * ROUNDS
        );
        assert!(
            slow < PAIRS * ROUNDS / 20,
            "{slow} rounds of {} took 90 ms or more: wake-ups lost",
            PAIRS * ROUNDS
        );
    });
}

/// Idle tasks on an event are not looked at again because of traffic on
/// other words of the same waiter thread: a queue that another process
/// keeps putting to, got from by a task here, leaves the two thousand
/// tasks on the event asleep (a race of the queue's word with the
/// thread's compare is reported as "some word changed", which woke every
/// task of the thread).
#[test]
fn traffic_on_one_word_does_not_wake_idle_tasks_on_another() {
    watchdog("idle tasks beside traffic", LIMIT, || {
        const IDLE_TASKS: usize = 2000;
        const ITEMS: u32 = 3000;
        let idle = Event::new().unwrap();
        let queue = multiproc::Queue::<u32>::new().unwrap();
        let rt = multi_thread();
        let polls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..IDLE_TASKS)
            .map(|_| {
                let e = idle.clone();
                rt.spawn(Counted {
                    inner: Box::pin(async move { e.wait_async().await.unwrap() }),
                    polls: polls.clone(),
                })
            })
            .collect();
        let end = Instant::now() + Duration::from_secs(60);
        while polls.load(SeqCst) < IDLE_TASKS {
            assert!(Instant::now() < end, "the tasks never ran");
            std::thread::yield_now();
        }
        let before = polls.load(SeqCst);
        let q = queue.clone();
        let child = static_child(move || {
            for i in 0..ITEMS {
                q.put(i).unwrap();
                if i % 4 == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        });
        let q = queue.clone();
        let getter = rt.spawn(async move {
            for i in 0..ITEMS {
                assert_eq!(q.get_async().await.unwrap(), i);
            }
        });
        rt.block_on(patiently("the getter", getter)).unwrap();
        assert_eq!(join(&child, LIMIT), 0);
        let during = polls.load(SeqCst) - before;
        idle.set();
        for t in tasks {
            rt.block_on(patiently("an idle task", t)).unwrap();
        }
        eprintln!("{during} polls of idle tasks during {ITEMS} gets");
        assert!(
            during <= IDLE_TASKS * 5,
            "{during} polls of {IDLE_TASKS} idle tasks during {ITEMS} gets from another word"
        );
    });
}

/// A process that lowers its descriptor limit below the descriptors it
/// has open while tasks await some of them: the waiter thread's `poll`
/// of more descriptors than the limit fails (EINVAL), and must not be
/// taken as "any may be ready" (every task would look again and re-arm,
/// which interrupts the thread, whose next `poll` fails again: a busy
/// loop for as long as the tasks wait), and every task still receives
/// its message. Run in a child process.
#[test]
fn awaiting_more_descriptors_than_the_limit_does_not_spin() {
    watchdog("descriptors past the limit", LIMIT, || {
        let child = static_child(|| {
            const PAIRS: usize = 20;
            let rt = current_thread();
            let polls = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            let mut senders = Vec::new();
            for _ in 0..PAIRS {
                let (mut a, b) = multiproc::pipe().unwrap();
                senders.push(b);
                tasks.push(rt.spawn(Counted {
                    inner: Box::pin(async move { a.recv_async::<u32>().await.unwrap() }),
                    polls: polls.clone(),
                }));
            }
            let end = Instant::now() + Duration::from_secs(30);
            while polls.load(SeqCst) < PAIRS {
                assert!(Instant::now() < end, "the tasks never ran");
                rt.block_on(tokio::task::yield_now());
            }
            common::lower_nofile(PAIRS as u64 / 2);
            // Wakes the thread, which then polls past the limit.
            senders[0].send(&0u32).unwrap();
            let first = tasks.remove(0);
            assert_eq!(
                rt.block_on(patiently("the first receive", first)).unwrap(),
                0
            );
            // A measurement window (not a wait for a condition).
            let before = polls.load(SeqCst);
            let start = Instant::now();
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
            let in_window = polls.load(SeqCst) - before;
            let elapsed = start.elapsed();
            for (i, t) in tasks.into_iter().enumerate() {
                senders[i + 1].send(&1u32).unwrap();
                assert_eq!(rt.block_on(patiently("a receive", t)).unwrap(), 1);
            }
            eprintln!(
                "{in_window} polls of {} idle tasks in {elapsed:?}",
                PAIRS - 1
            );
            // A look every 2 ms by each task would be 150 each; a spin is
            // thousands each.
            assert!(
                in_window <= 300 * PAIRS,
                "{in_window} polls of {} idle tasks in {elapsed:?}: the waiter thread spins",
                PAIRS - 1
            );
        });
        assert_eq!(join(&child, LIMIT), 0);
    });
}
