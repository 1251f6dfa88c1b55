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
use common::{join, static_child, wait_until, watchdog};
use multiproc::{Queue, RawValue};

const LIMIT: Duration = Duration::from_secs(120);

/// A pending wait of the process that made it, kept in a static (which a
/// forked child inherits).
static HELD: Mutex<Option<Box<dyn Send>>> = Mutex::new(None);

/// Stages of the reused-pid test, in a word every process sees.
const SQUAT: u32 = 1;
const DROPPED: u32 = 2;
const NO_PID: u32 = 3;

/// Forks until a child gets pid `target`, which runs `then` and ends;
/// `false` if none did. Needs the right to write `ns_last_pid` (root).
/// (As in async_attack4.rs.)
fn fork_as(target: u32, then: impl FnOnce()) -> bool {
    for _ in 0..1000 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", target - 1)).is_err() {
            return false;
        }
        // SAFETY: the child only ends at once, or runs `then` and ends.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: getpid cannot fail.
            if unsafe { libc::getpid() } as u32 == target {
                then();
            }
            // SAFETY: ending the child, without the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return false;
        }
        // SAFETY: reaping the child just forked.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        if pid as u32 == target {
            return true;
        }
    }
    false
}

/// How long a blocking getter of `q`, asleep in the kernel, takes to
/// return once an item is put: the least of five tries.
fn quickest_wake(q: &Queue<u32>) -> Duration {
    (0..5)
        .map(|n| {
            std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::channel();
                let getter = s.spawn(move || {
                    tx.send(gettid()).unwrap();
                    q.get_timeout(LIMIT).unwrap()
                });
                let tid = rx.recv().unwrap();
                let pid = std::process::id();
                assert!(
                    wait_until(Duration::from_secs(30), || thread_blocked_in_futex(
                        pid, tid
                    )),
                    "the getter never slept"
                );
                let put = Instant::now();
                q.put(n).unwrap();
                assert_eq!(getter.join().unwrap(), n);
                put.elapsed()
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
        // only by its next look, 100 ms after it fell asleep.
        let wake = quickest_wake(&q);
        assert!(
            wake < Duration::from_millis(50),
            "a getter asleep took {wake:?} to see a put"
        );
    });
}
