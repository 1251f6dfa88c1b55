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
use multiproc::Event;

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
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) },
        0
    );
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Who sets the event once the idle tasks have been measured.
#[derive(Clone, Copy)]
enum Setter {
    ThisProcess,
    AnotherProcess,
}

/// Starts `n` tasks awaiting one event, measures the CPU time the process
/// uses over [`WINDOW`] while nothing happens, then sets the event (from
/// this process or a forked one) and checks that every task ends. Returns
/// the CPU time per second of idleness.
fn idle_cost(n: usize, setter: Setter) -> Duration {
    let rt = multi_thread();
    let event = Event::new().unwrap();
    let pending = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (event, pending, done) = (event.clone(), pending.clone(), done.clone());
            rt.spawn(async move {
                let mut wait = std::pin::pin!(event.wait_async());
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
                .await
                .unwrap();
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
    assert_eq!(done.load(SeqCst), 0, "a task ended with the event unset");
    let set = Instant::now();
    match setter {
        Setter::ThisProcess => event.set(),
        Setter::AnotherProcess => {
            let theirs = event.clone();
            let p = static_child(move || theirs.set());
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
    eprintln!(
        "{n} idle tasks: {:.2} ms of CPU per second ({:.2}% of a CPU), all woken in {woken:?}",
        per_second.as_secs_f64() * 1e3,
        per_second.as_secs_f64() * 100.0,
    );
    per_second
}

/// 2 000 idle tasks cost no more per task than 200 (within a factor of 3
/// and a small allowance for noise), and well under 5% of a CPU in all;
/// every one of them wakes when the event is set, by this process or by
/// another.
#[test]
fn idle_async_waits_cost_no_more_per_task_when_there_are_many() {
    watchdog("idle async waits", LIMIT, || {
        let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        let few = idle_cost(200, Setter::ThisProcess);
        let many = idle_cost(2000, Setter::AnotherProcess);
        let allowance = Duration::from_millis(10);
        assert!(
            many <= few * 30 + allowance,
            "2000 idle tasks cost {many:?} of CPU per second, 200 cost {few:?}: \
             the cost grows faster than their number"
        );
        assert!(
            many < Duration::from_millis(50),
            "2000 idle tasks cost {many:?} of CPU per second"
        );
    });
}

/// The same with the event set by another process for the few, and by
/// this one for the many, and an intermediate count (for the record).
#[test]
fn idle_async_waits_wake_whoever_sets_the_event() {
    watchdog("idle async waits, the other setters", LIMIT, || {
        let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        idle_cost(200, Setter::AnotherProcess);
        let mid = idle_cost(500, Setter::ThisProcess);
        assert!(
            mid < Duration::from_millis(50),
            "500 idle tasks cost {mid:?} of CPU per second"
        );
        idle_cost(2000, Setter::ThisProcess);
    });
}
