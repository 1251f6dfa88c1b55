//! Behavioural parity of the process tools (`Pool`, `Process`, queues,
//! `Pipe`/`Connection`, `Listener`/`connect`) with CPython's
//! `multiprocessing`: each case was run in CPython 3.12 first, and
//! multiproc must do the same, or what its README's "Differences" section
//! says.

mod common;

use std::time::Duration;

use common::{join, static_child, watchdog, TempDir};
use multiproc::{Error, JoinableQueue, Pipe, Pool, Process, Queue};

const LIMIT: Duration = Duration::from_secs(60);

/// A message larger than a socket connection's default limit (64 MiB).
const BIG: usize = multiproc::conn::DEFAULT_MAX_MESSAGE + (1 << 20);

/// A `Pipe` carries a message of any size, as Python's does
/// (`b.send_bytes(bytes(65 << 20)); a.recv_bytes()` works), one way or
/// both, between a parent and its child. Before, a pipe's end refused a
/// message over 64 MiB with `MessageTooLarge` and closed itself: the
/// message was lost and the pipe dead, with nothing in the README.
#[test]
fn a_pipe_carries_a_message_over_64_mib_as_pythons_does() {
    watchdog("a message over 64 MiB through a pipe", LIMIT, || {
        for duplex in [true, false] {
            let (mut reader, mut writer) = Pipe(duplex).unwrap();
            let child = static_child(move || {
                writer.send_bytes(&vec![7u8; BIG]).unwrap();
                writer.send_bytes(b"after").unwrap();
            });
            let got = reader.recv_bytes().unwrap();
            assert_eq!(got.len(), BIG);
            assert!(got.iter().all(|&b| b == 7));
            assert_eq!(reader.recv_bytes().unwrap(), b"after");
            assert_eq!(child.join().unwrap(), 0);
        }
        // A limit set by the caller still holds (Python's `maxlength`).
        let (mut a, mut b) = Pipe(true).unwrap();
        b.set_max_message(3);
        a.send_bytes(b"four").unwrap();
        assert!(matches!(
            b.recv_bytes(),
            Err(Error::MessageTooLarge { size: 4, limit: 3 })
        ));
    });
}

fn sleep_long(_: ()) {
    std::thread::sleep(LIMIT);
}

fn panics(_: ()) {
    panic!("in the child")
}

fn exits_with(code: i32) {
    std::process::exit(code)
}

fn multiproc_exits_with(code: i32) {
    multiproc::process::exit(code)
}

fn aborts(_: ()) {
    std::process::abort()
}

/// The exit codes of a child as Python's `Process.exitcode` has them,
/// forked or from the fork server: a panic is an uncaught exception's 1,
/// an exit code is taken modulo 256 (`sys.exit(300)` is 44, `sys.exit(-1)`
/// 255), a signal is its negative number; `terminate` and `kill` after the
/// exit do nothing, and every later `join` gives the same code.
#[test]
fn exit_codes_are_pythons_forked_and_from_the_fork_server() {
    watchdog("exit codes", LIMIT, || {
        type Made = fn() -> Process<'static>;
        let cases: [(Made, i32); 8] = [
            (|| Process::new(|| panic!("in the child")), 1),
            (|| Process::forkserver(panics, ()), 1),
            (|| Process::new(|| std::process::exit(300)), 44),
            (|| Process::forkserver(exits_with, 300), 44),
            (|| Process::new(|| multiproc::process::exit(-1)), 255),
            (|| Process::forkserver(multiproc_exits_with, -1), 255),
            (|| Process::new(|| std::process::abort()), -libc::SIGABRT),
            (|| Process::forkserver(aborts, ()), -libc::SIGABRT),
        ];
        for (make, code) in cases {
            let mut p = make();
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), code, "{p}");
            p.terminate().unwrap();
            p.kill().unwrap();
            assert_eq!(p.join().unwrap(), code);
            assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), Some(code));
            assert_eq!(p.exitcode(), Some(code));
            assert!(!p.is_alive());
        }
    });
}

/// Python's answers before `start` and around `terminate`, in every order:
/// no pid and no exit code before `start` (`join` is an error, Python's
/// assertion), `join(0)` of a running child is `None`, a `join` with the
/// longest timeout waits like `join()`, and `repr` says `-SIGTERM`. A
/// stopped child (`SIGSTOP`) is alive and not joined, as in Python (whose
/// `waitpid` does not report stops), here and through the fork server.
#[test]
fn a_process_before_start_running_stopped_and_terminated_is_pythons() {
    watchdog("process states", LIMIT, || {
        let made: [fn() -> Process<'static>; 2] = [
            || Process::new(|| std::thread::sleep(LIMIT)).daemon(true),
            || Process::forkserver(sleep_long, ()),
        ];
        for make in made {
            let mut p = make();
            assert_eq!((p.pid(), p.exitcode(), p.is_alive()), (None, None, false));
            assert!(p.to_string().contains(" initial"), "{p}");
            assert!(matches!(p.join(), Err(Error::ProcessState { .. })));
            assert!(matches!(
                p.join_timeout(Duration::ZERO),
                Err(Error::ProcessState { .. })
            ));
            assert!(matches!(p.terminate(), Err(Error::ProcessState { .. })));
            assert!(matches!(p.kill(), Err(Error::ProcessState { .. })));
            p.start().unwrap();
            assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
            let pid = p.pid().unwrap() as i32;
            assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), None);
            // SAFETY: signalling the child this test started, which runs.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
            assert_eq!(p.join_timeout(Duration::from_millis(50)).unwrap(), None);
            assert!(p.is_alive() && p.exitcode().is_none());
            // SAFETY: as above.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
            assert!(p.is_alive());
            p.terminate().unwrap();
            assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(-libc::SIGTERM));
            assert!(p.to_string().contains(" stopped exitcode=-SIGTERM"), "{p}");
            p.terminate().unwrap();
            assert_eq!(p.join().unwrap(), -libc::SIGTERM);
        }
    });
}

fn square(x: u64) -> u64 {
    x * x
}

fn fails_at_three(x: u64) -> u64 {
    assert_ne!(x, 3, "three");
    x
}

fn worker_pid(_: u64) -> u32 {
    std::process::id()
}

fn killed_at_two(x: u64) -> u64 {
    if x == 2 {
        // SAFETY: the worker kills itself, as a crash would.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x
}

/// A pool's `close`, `terminate` and `join` in Python's orders and
/// misuses: `join` while running is refused (Python's `ValueError: Pool
/// is still running`), `close` and `terminate` twice or after each other
/// do nothing more, `join` twice returns; a task given after `close` is
/// `PoolClosed`, after `terminate` `PoolTerminated` (Python's `ValueError:
/// Pool not running`); a result done before `terminate` is still there
/// (Python's too).
#[test]
fn pool_close_terminate_and_join_in_every_order() {
    watchdog("pool orders", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        assert!(matches!(pool.join(), Err(Error::PoolState(_))));
        let done = pool.apply_async(square, 3);
        assert_eq!(done.get().unwrap(), 9);
        pool.close();
        pool.close();
        assert!(matches!(pool.apply(square, 2), Err(Error::PoolClosed)));
        assert!(matches!(pool.map(square, 0..3), Err(Error::PoolClosed)));
        let after: Vec<_> = pool.imap(square, 0..2, None).collect();
        assert!(after.iter().all(|r| matches!(r, Err(Error::PoolClosed))));
        assert_eq!(after.len(), 2);
        pool.join().unwrap();
        pool.join().unwrap();
        pool.terminate();
        pool.join().unwrap();
        assert_eq!(done.get().unwrap(), 9);

        let pool = Pool::with_processes(1).unwrap();
        let done = pool.apply_async(square, 4);
        done.wait();
        pool.terminate();
        pool.terminate();
        pool.close();
        assert!(matches!(pool.apply(square, 2), Err(Error::PoolTerminated)));
        pool.join().unwrap();
        assert_eq!(done.get().unwrap(), 16);
        assert_eq!(done.successful(), Some(true));
    });
}

/// A panic in a task fails its result (Python's exception), and the
/// iteration of `imap` and `imap_unordered` goes on past it (chunks of
/// one, so Python's does too); a worker killed mid-task fails that task
/// only, its error callback runs, and the pool goes on with a new worker
/// (Python's waits for ever there).
#[test]
fn failed_tasks_fail_their_results_only() {
    watchdog("failed tasks", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        assert!(matches!(
            pool.map(fails_at_three, 0..6),
            Err(Error::TaskFailed(ref m)) if m.contains("three")
        ));
        let ordered: Vec<_> = pool.imap(fails_at_three, 0..6, None).collect();
        assert_eq!(ordered.len(), 6);
        for (i, r) in ordered.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, i as u64),
                Err(e) => assert!(i == 3 && matches!(e, Error::TaskFailed(_)), "{e:?}"),
            }
        }
        let mut unordered: Vec<_> = pool
            .imap_unordered(fails_at_three, 0..6, None)
            .filter_map(Result::ok)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, [0, 1, 2, 4, 5]);
        let (tx, rx) = std::sync::mpsc::channel();
        let r = pool.apply_async_with_error_callback(
            killed_at_two,
            2,
            |_| unreachable!("the worker dies"),
            move |e| tx.send(e).unwrap(),
        );
        assert!(
            matches!(r.get(), Err(Error::WorkerDied { exitcode }) if exitcode == -libc::SIGKILL)
        );
        assert!(matches!(
            rx.recv_timeout(LIMIT).unwrap(),
            Error::WorkerDied { .. }
        ));
        assert_eq!(
            pool.map(square, 0..8).unwrap(),
            [0, 1, 4, 9, 16, 25, 36, 49]
        );
    });
}

/// `max_tasks_per_child` counts tasks as Python's `maxtasksperchild`
/// does: a chunk is one task, whatever its number of items.
#[test]
fn max_tasks_per_child_counts_chunks() {
    watchdog("max tasks per child", LIMIT, || {
        let pool = Pool::builder()
            .processes(1)
            .max_tasks_per_child(2)
            .build()
            .unwrap();
        let mut pids = pool.map_chunked(worker_pid, 0..20, Some(5)).unwrap();
        pids.dedup();
        assert_eq!(pids.len(), 2, "4 chunks, 2 per worker: {pids:?}");
    });
}

/// A pool worker stopped (`SIGSTOP`) holds its task, which is done once
/// it is continued: nothing is failed or lost meanwhile.
#[test]
fn a_stopped_worker_loses_no_task() {
    watchdog("a stopped worker", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let pid = pool.apply(worker_pid, 0).unwrap() as i32;
        // SAFETY: signalling the pool's worker.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let r = pool.apply_async(square, 5);
        assert!(!r.wait_timeout(Duration::from_millis(100)));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        assert_eq!(r.get_timeout(LIMIT).unwrap(), 25);
    });
}

/// A `JoinableQueue` counts every item put, by `put_many` and through a
/// plain `Queue` clone too, and no put that failed (full, too large,
/// closed); a `task_done` too many is refused (Python's `ValueError`) and
/// leaves the count as it was.
#[test]
fn a_joinable_queue_counts_what_was_put_only() {
    watchdog("joinable queue counts", LIMIT, || {
        let q = JoinableQueue::<u32>::with_capacity(2, 1024).unwrap();
        q.put_many([1, 2]).unwrap();
        assert!(matches!(
            q.try_put(3),
            Err(multiproc::queue::PutError::Full(3))
        ));
        assert!(q.try_put_many([3, 4]).is_err());
        assert!(matches!(
            q.join_timeout(Duration::ZERO),
            Err(Error::Timeout)
        ));
        assert_eq!(q.get_many(2).unwrap(), [1, 2]);
        q.task_done().unwrap();
        q.task_done().unwrap();
        q.join_timeout(Duration::ZERO).unwrap();
        assert!(matches!(q.task_done(), Err(Error::TooManyTaskDone)));
        let plain: Queue<u32> = (*q).clone();
        plain.put(5).unwrap();
        assert!(matches!(
            q.join_timeout(Duration::ZERO),
            Err(Error::Timeout)
        ));
        assert_eq!(q.get().unwrap(), 5);
        q.task_done().unwrap();
        q.join_timeout(Duration::MAX).unwrap();
        let big = JoinableQueue::<Vec<u8>>::with_capacity(0, 1024).unwrap();
        assert!(big.put(vec![0; 4096]).is_err());
        big.close();
        assert!(big.put(vec![1]).is_err());
        big.join_timeout(Duration::ZERO).unwrap();
    });
}

/// `recv_bytes_into` a buffer too small is Python's `BufferTooShort`
/// holding the whole message, for one read straight into its destination
/// too (over 64 KiB), and the connection goes on with the next message.
#[test]
fn buffer_too_short_keeps_the_message_and_the_connection() {
    watchdog("buffer too short", LIMIT, || {
        let (mut a, mut b) = Pipe(true).unwrap();
        let sender = std::thread::spawn(move || {
            for n in [200_000usize, 5, 3 << 20] {
                b.send_bytes(&vec![(n % 251) as u8; n]).unwrap();
            }
            b
        });
        let mut buf = vec![0u8; 100_000];
        match a.recv_bytes_into(&mut buf) {
            Err(Error::BufferTooShort(whole)) => {
                assert_eq!(whole.len(), 200_000);
                assert!(whole.iter().all(|&x| x == (200_000 % 251) as u8));
            }
            other => panic!("expected BufferTooShort, got {other:?}"),
        }
        assert_eq!(a.recv_bytes_into(&mut buf).unwrap(), 5);
        let mut big = vec![0u8; 4 << 20];
        assert_eq!(a.recv_bytes_into(&mut big).unwrap(), 3 << 20);
        assert!(big[..3 << 20]
            .iter()
            .all(|&x| x == ((3usize << 20) % 251) as u8));
        drop(sender.join().unwrap());
        assert!(a.poll(Some(Duration::MAX)).unwrap());
        assert!(matches!(a.recv_bytes(), Err(Error::ConnectionClosed)));
        // The peer's end is not this end's close (Python's `closed` stays False).
        assert!(!a.closed());
    });
}

/// Starts a child that dies of a panic, and joins it.
fn start_a_dying_child() -> i32 {
    let mut child = Process::new(|| panic!("a task's dying child")).with_name("DyingFromTask");
    child.start().unwrap();
    child.join().unwrap()
}

/// A task's panic is its result's error, and the worker goes on: no
/// "Process ForkServerPoolWorker-N:" line on stderr, which is Python's
/// header for an exception that ends a process (a Python worker prints
/// nothing for a task's exception, which goes to the parent's result).
/// A child that dies of its panic still has the header, as in Python,
/// also one that a task started.
/// Before, every task's panic was headed as if its worker had died.
#[test]
fn a_tasks_panic_is_not_headed_as_its_workers_death() {
    watchdog("the panic header of a task", LIMIT, || {
        let dir = TempDir::new("parity-header");
        let path = dir.0.join("stderr");
        let file = std::fs::File::create(&path).unwrap();
        let child = static_child(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: fd 2 of this child only, which becomes the file.
            assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 2) }, 2);
            // Made after the redirection: its workers write to the file.
            let pool = Pool::with_processes(1).unwrap();
            assert!(matches!(
                pool.apply(fails_at_three, 3),
                Err(Error::TaskFailed(ref m)) if m.contains("three")
            ));
            assert_eq!(pool.apply(square, 4).unwrap(), 16);
            assert_eq!(pool.apply(start_a_dying_child, ()).unwrap(), 1);
            pool.close();
            pool.join().unwrap();
            let mut dying = Process::new(|| panic!("a dying child")).with_name("Dying");
            dying.start().unwrap();
            assert_eq!(dying.join().unwrap(), 1);
        });
        assert_eq!(join(&child, LIMIT), 0);
        let stderr = std::fs::read_to_string(&path).unwrap();
        assert!(!stderr.contains("PoolWorker"), "{stderr}");
        assert!(stderr.contains("Process Dying:"), "{stderr}");
        assert!(stderr.contains("Process DyingFromTask:"), "{stderr}");
    });
}

/// The name a task's worker has (Python's `current_process().name`).
fn worker_name(_: u64) -> String {
    multiproc::process::current_process().name().to_owned()
}

fn do_nothing(_: ()) {}

/// Children are numbered as in Python, whose fork server is no `Process`
/// and takes no number: in a process `Process-K`, a pool's first worker
/// is `ForkServerPoolWorker-K:1` and the next child `Process-K:2`, and
/// starting the fork server of `Process::forkserver` takes none either.
/// Before, each fork server took a number: the worker was
/// `ForkServerPoolWorker-K:2`, the next child `Process-K:3`.
#[test]
fn fork_servers_take_no_number_from_the_children_count() {
    watchdog("children's numbers", LIMIT, || {
        let child = static_child(|| {
            let me = multiproc::process::current_process().name().to_owned();
            let k = me.strip_prefix("Process-").expect("a default name");
            let pool = Pool::with_processes(1).unwrap();
            let worker = pool.apply(worker_name, 0).unwrap();
            assert_eq!(worker, format!("ForkServerPoolWorker-{k}:1"));
            assert_eq!(Process::new(|| {}).name(), format!("Process-{k}:2"));
            multiproc::process::start_forkserver().unwrap();
            let mut served = Process::forkserver(do_nothing, ());
            assert_eq!(served.name(), format!("Process-{k}:3"));
            served.start().unwrap();
            assert_eq!(served.join().unwrap(), 0);
            assert_eq!(Process::new(|| {}).name(), format!("Process-{k}:4"));
        });
        assert_eq!(join(&child, LIMIT), 0);
    });
}
