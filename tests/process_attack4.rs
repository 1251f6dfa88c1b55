//! Adversarial review of the process tools (fourth round): Process under
//! the three start methods, Pool, Pipe/Connection, Listener/Client, with
//! cases the earlier rounds leave out.
//!
//! A spawned child is this test binary run again under libtest's `main`,
//! which calls no `spawn_init`: the spawning tests name the test
//! [`spawned_children_start_here`] as the child's only test to run, and
//! that test's `spawn_init` runs the child's work and never returns.

mod common;

use std::time::Duration;

use common::{join, procfs, watchdog, TempName};
use multiproc::{entry, Process};

const LIMIT: Duration = Duration::from_secs(90);

/// Every function a spawned child of this binary may run.
fn spawn_entries() {
    multiproc::spawn_init(&[&entry!(park_for_ever)]);
}

/// In a spawned child, the child's work (it never returns); in a test run,
/// nothing.
#[test]
fn spawned_children_start_here() {
    spawn_entries();
}

/// Arguments that make a spawned child of this binary run its work.
const SPAWNED: [&str; 3] = ["spawned_children_start_here", "--exact", "--nocapture"];

fn park_for_ever(_: ()) {
    loop {
        std::thread::park();
    }
}

/// A spawned daemon child started from a thread dies when that thread
/// ends, as a forked one does (process_attack3): every time, also when the
/// thread ended before the child (a new program, slow to reach the point
/// where it asks for the parent-death signal) asked for it.
#[test]
fn a_spawned_daemon_started_from_a_thread_dies_with_that_thread() {
    spawn_entries();
    watchdog("spawned daemons of ended threads", LIMIT, || {
        let started: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut p = Process::spawn(entry!(park_for_ever), ())
                        .exec_args(SPAWNED)
                        .daemon(true);
                    p.start().unwrap();
                    p
                })
            })
            .collect();
        for t in started {
            let p = t.join().unwrap();
            assert_eq!(join(&p, Duration::from_secs(20)), -9);
        }
    });
}

fn wait_for_event(name: String) {
    let event = multiproc::Event::open(&name).unwrap();
    event.wait();
}

/// A fork server's daemon child is the server's child, not the thread's:
/// started from a thread that ends at once, it lives on until this
/// process ends (as Python's daemons do), every time, rather than dying
/// with the thread or not depending on a race.
#[test]
fn a_forkserver_daemon_outlives_the_thread_that_started_it() {
    watchdog("forkserver daemons of ended threads", LIMIT, || {
        let name = format!("test-pa4-fsd-{}", std::process::id());
        let event = multiproc::Event::create(&name).unwrap();
        let started: Vec<_> = (0..4)
            .map(|_| {
                let name = name.clone();
                std::thread::spawn(move || {
                    let mut p = Process::forkserver(wait_for_event, name).daemon(true);
                    p.start().unwrap();
                    p
                })
            })
            .collect();
        let children: Vec<_> = started.into_iter().map(|t| t.join().unwrap()).collect();
        for p in &children {
            assert_eq!(p.join_timeout(Duration::from_millis(100)).unwrap(), None);
        }
        event.set();
        for p in &children {
            assert_eq!(join(p, Duration::from_secs(20)), 0);
        }
        multiproc::segment::Segment::unlink(&name).unwrap();
    });
}

/// Starts a child (not a daemon) that waits for the event `gate`; its pid.
/// (By name: a worker has none of the test's descriptors.)
fn leave_a_child(gate: String) -> u32 {
    let mut p = Process::new(move || multiproc::Event::open(&gate).unwrap().wait());
    p.start().unwrap();
    p.pid().unwrap()
}

/// Opens the gate when dropped: a child that waits there never outlives
/// the test.
struct Gate(multiproc::Event);

impl Drop for Gate {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// A pool task's child ends with its worker when the worker is killed
/// (`terminate`, a `SIGKILL` from elsewhere), as it does when the worker
/// exits (process_attack's recycling test): it was left running for ever,
/// an orphan of nobody's, where Python's pool workers may have no
/// children at all.
#[test]
fn a_pool_tasks_child_dies_with_its_killed_worker() {
    watchdog("a task's child after its worker is killed", LIMIT, || {
        let gate = TempName::new("pa4-task-child");
        let _open_gate = Gate(multiproc::Event::create(&gate).unwrap());
        let pool = multiproc::Pool::with_processes(1).unwrap();
        let child = pool.apply(leave_a_child, gate.0.clone()).unwrap();
        assert!(procfs::alive(child));
        pool.terminate();
        pool.join().unwrap();
        assert!(
            common::wait_until(Duration::from_secs(20), || !procfs::alive(child)),
            "the task's child {child} outlived its killed worker"
        );
    });
}

/// Starts a Manager and leaves it running; its server's pid and socket
/// file.
fn leave_a_manager(_: ()) -> (u32, String) {
    let manager = multiproc::Manager::start().unwrap();
    let pid = manager.server_pid().unwrap();
    let multiproc::conn::Address::Unix(path) = manager.address().clone() else {
        panic!("a Unix manager");
    };
    // Its drop would shut the server down.
    std::mem::forget(manager);
    (pid, path.to_string_lossy().into_owned())
}

/// A Manager's server that a pool task started is not killed outright
/// with its killed worker, as the task's other children are: it watches
/// its parent, and on its way out removes its socket file (a kill would
/// leave the file behind).
#[test]
fn a_pool_tasks_manager_cleans_up_after_its_killed_worker() {
    watchdog("a task's manager after its worker is killed", LIMIT, || {
        let pool = multiproc::Pool::with_processes(1).unwrap();
        let (server, path) = pool.apply(leave_a_manager, ()).unwrap();
        assert!(std::path::Path::new(&path).exists());
        pool.terminate();
        pool.join().unwrap();
        assert!(
            common::wait_until(Duration::from_secs(30), || !procfs::alive(server)),
            "the task's manager {server} outlived its killed worker"
        );
        assert!(
            !std::path::Path::new(&path).exists(),
            "the killed worker's manager left its socket file {path}"
        );
    });
}

/// Starts a child (not a daemon) that waits for the event `gate`, then
/// ends its worker with `exit(3)`, as a task may.
fn leave_a_child_and_exit(gate: String) -> u32 {
    leave_a_child(gate);
    multiproc::process::exit(3)
}

/// A task that ends its worker with `exit` while a child it started still
/// runs: the worker exits at once, taking the child with it, as when it
/// leaves its loop (the exit waited for the child, as a process's exit
/// waits for its children, and with it the task's result, for ever).
#[test]
fn a_task_that_exits_its_worker_with_a_child_running_does_not_hang() {
    watchdog("a task's exit with a child running", LIMIT, || {
        let gate = TempName::new("pa4-exit-child");
        let _open_gate = Gate(multiproc::Event::create(&gate).unwrap());
        let pool = multiproc::Pool::with_processes(1).unwrap();
        let r = pool
            .apply_async(leave_a_child_and_exit, gate.0.clone())
            .get_timeout(Duration::from_secs(20));
        assert!(
            matches!(r, Err(multiproc::Error::WorkerDied { exitcode: 3 })),
            "{r:?}"
        );
        // The pool still serves, with a new worker.
        assert!(pool.apply(leave_a_child, gate.0.clone()).is_ok());
    });
}

/// An async send polled until part of its message went out and then
/// forgotten (`mem::forget`, which safe code may do: no drop runs) ends
/// the stream as a dropped one does, at the next use of the connection:
/// the next message followed the first one's half, and the peer read the
/// two as one message of the first one's length, a corrupt one.
#[test]
fn a_half_sent_message_whose_future_is_forgotten_tears_no_frame() {
    watchdog("a forgotten half send", LIMIT, || {
        let (mut ours, mut theirs) = multiproc::Pipe::duplex().unwrap();
        // More than a socket pair's buffers hold: the send stops part-way.
        let big = vec![7u8; 8 << 20];
        let waker = std::sync::Arc::new(common::wakers::Flag::default()).into();
        {
            let mut send = Box::pin(ours.send_bytes_async(&big));
            let first = common::wakers::poll_with(send.as_mut(), &waker);
            assert!(first.is_pending(), "the whole message went at once");
            std::mem::forget(send);
        }
        let reader = std::thread::spawn(move || theirs.recv_bytes_timeout(Duration::from_secs(10)));
        let next = ours.send_bytes(b"next");
        let got = reader.join().unwrap();
        assert!(
            next.is_err() && matches!(got, Err(multiproc::Error::ConnectionClosed)),
            "sent: {next:?}; received: {:?}",
            got.map(|m| m.len())
        );
    });
}

/// The daemon flag set once the child runs changes nothing, and the
/// handle says so (Python refuses it: "process has already started"): it
/// said `daemon` (`is_daemon`, its repr), while the child, started as no
/// daemon, was still waited for at exit and never killed.
#[test]
fn a_daemon_flag_set_after_start_is_not_reported() {
    watchdog("daemon after start", LIMIT, || {
        let gate = TempName::new("pa4-daemon-after");
        let event = multiproc::Event::create(&gate).unwrap();
        let open = Gate(event.clone());
        let name = gate.0.clone();
        let mut p = Process::new(move || multiproc::Event::open(&name).unwrap().wait());
        p.start().unwrap();
        let p = p.daemon(true);
        let shown = p.to_string();
        assert!(!p.is_daemon() && !shown.ends_with(" daemon>"), "{shown}");
        drop(open);
        assert_eq!(join(&p, Duration::from_secs(20)), 0);
    });
}
