//! What idle async waits cost: tasks that await a word nobody changes
//! must cost this process next to nothing, and no more per task when
//! there are many of them. Each pending wait looks again now and then
//! (for a waker killed before its wake-up call); every such look made the
//! waiter thread go over every registered wait, so the cost grew with the
//! square of their number (2 000 idle tasks on one event kept a fifth of
//! a CPU busy).
//!
//! The bounds guard a complexity class, not a speed: they are generous
//! enough for a loaded two-core machine. The measurements run one at a
//! time (the CPU time is the whole process's).

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wakers::PATIENCE;
use common::{join, multi_thread, static_child, watchdog};
use multiproc::{Event, Queue};

const LIMIT: Duration = Duration::from_secs(120);

/// How long the idle tasks are watched.
const WINDOW: Duration = Duration::from_secs(1);

/// One measurement at a time: each reads the whole process's CPU time.
static MEASURING: Mutex<()> = Mutex::new(());

/// The CPU time this process (all its threads) has used.
fn process_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid timespec to write.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(r, 0);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Who sets the event once the idle tasks have been measured.
#[derive(Clone, Copy)]
enum Setter {
    ThisProcess,
    AnotherProcess,
}

/// What the idle tasks await.
#[derive(Clone)]
enum Awaited {
    /// An event, until it is set.
    Event(Event),
    /// An empty queue, until an item comes for each task.
    Queue(Queue<u32>),
}

impl Awaited {
    async fn wait(&self) {
        match self {
            Awaited::Event(event) => event.wait_async().await.unwrap(),
            Awaited::Queue(q) => drop(q.get_async().await.unwrap()),
        }
    }

    /// Sets the event, or puts an item for each of `n` tasks.
    fn release(&self, n: usize) {
        match self {
            Awaited::Event(event) => event.set(),
            Awaited::Queue(q) => (0..n as u32).for_each(|i| q.put(i).unwrap()),
        }
    }
}

/// Starts `n` tasks awaiting one event (or one queue), measures the CPU
/// time the process uses over [`WINDOW`] while nothing happens, then sets
/// the event (or puts an item for each task), from this process or a
/// forked one, and checks that every task ends. Returns the CPU time per
/// second of idleness.
fn idle_cost(n: usize, awaited: Awaited, setter: Setter) -> Duration {
    let rt = multi_thread();
    let pending = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (awaited, pending, done) = (awaited.clone(), pending.clone(), done.clone());
            rt.spawn(async move {
                let mut wait = std::pin::pin!(awaited.wait());
                let mut counted = false;
                // Counted once a poll found nothing to do.
                std::future::poll_fn(|cx| {
                    let poll = wait.as_mut().poll(cx);
                    if poll.is_pending() && !counted {
                        counted = true;
                        pending.fetch_add(1, SeqCst);
                    }
                    poll
                })
                .await;
                done.fetch_add(1, SeqCst);
            })
        })
        .collect();
    let end = Instant::now() + PATIENCE;
    while pending.load(SeqCst) < n {
        assert!(Instant::now() < end, "the tasks never all waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    // A measurement window, not a wait for a condition.
    let (wall, cpu) = (Instant::now(), process_cpu());
    std::thread::sleep(WINDOW);
    let (cpu, wall) = (process_cpu() - cpu, wall.elapsed());
    assert_eq!(done.load(SeqCst), 0, "a task ended with nothing to end it");
    let set = Instant::now();
    match setter {
        Setter::ThisProcess => awaited.release(n),
        Setter::AnotherProcess => {
            let theirs = awaited.clone();
            let p = static_child(move || theirs.release(n));
            assert_eq!(join(&p, PATIENCE), 0);
        }
    }
    rt.block_on(async {
        for t in tasks {
            tokio::time::timeout(PATIENCE, t)
                .await
                .expect("a task never woke")
                .unwrap();
        }
    });
    let woken = set.elapsed();
    assert_eq!(done.load(SeqCst), n);
    assert!(
        woken < Duration::from_secs(5),
        "{n} tasks took {woken:?} to see the event set"
    );
    let per_second = cpu.mul_f64(1.0 / wall.as_secs_f64());
    let what = match awaited {
        Awaited::Event(_) => "event",
        Awaited::Queue(_) => "queue",
    };
    eprintln!(
        "{n} idle tasks on one {what}: {:.2} ms of CPU per second ({:.2}% of a CPU), all woken in {woken:?}",
        per_second.as_secs_f64() * 1e3,
        per_second.as_secs_f64() * 100.0,
    );
    per_second
}

/// Checks that 2 000 idle tasks cost no more per task than 200 (within a
/// factor of 3, and a small allowance for noise), and less than `most`
/// of CPU time per second in all.
fn assert_linear(what: &str, few: Duration, many: Duration, most: Duration) {
    let allowance = Duration::from_millis(10);
    assert!(
        many <= few * 30 + allowance,
        "2000 idle tasks on one {what} cost {many:?} of CPU per second, 200 cost {few:?}: \
         the cost grows faster than their number"
    );
    assert!(
        many < most,
        "2000 idle tasks on one {what} cost {many:?} of CPU per second"
    );
}

/// Idle tasks on one event: 2 000 cost no more per task than 200, and
/// little in all; every one of them wakes when the event is set, by this
/// process or by another.
#[test]
fn idle_async_waits_on_an_event_cost_no_more_per_task_when_there_are_many() {
    watchdog("idle async waits on an event", LIMIT, || {
        let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        let event = || Awaited::Event(Event::new().unwrap());
        let few = idle_cost(200, event(), Setter::ThisProcess);
        let mid = idle_cost(500, event(), Setter::AnotherProcess);
        let many = idle_cost(2000, event(), Setter::AnotherProcess);
        assert!(
            mid < Duration::from_millis(50),
            "500 idle tasks on one event cost {mid:?} of CPU per second"
        );
        // They cost nothing until the event changes: well under 5% of a CPU.
        assert_linear("event", few, many, Duration::from_millis(50));
        idle_cost(2000, event(), Setter::ThisProcess);
    });
}

/// The same for tasks awaiting an item from one queue. Each of these
/// looks again every 100 ms (its look depends on more than the word it
/// sleeps on), so they cost something, but in proportion to their number:
/// about 5% of a CPU for 2 000 in a release build and 17% in a debug
/// build, against 50% and 80% before.
#[test]
fn idle_async_gets_on_a_queue_cost_no_more_per_task_when_there_are_many() {
    watchdog("idle async gets on a queue", LIMIT, || {
        let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        let queue = || Awaited::Queue(Queue::new().unwrap());
        let few = idle_cost(200, queue(), Setter::AnotherProcess);
        let many = idle_cost(2000, queue(), Setter::ThisProcess);
        assert_linear("queue", few, many, Duration::from_millis(400));
    });
}
