//! Adversarial tests of the process layer: workers dying at random, pools
//! dropped, killed and nested, fork-server children, scopes that panic and
//! nest, forks from threads while pools run, and nothing left behind.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{procfs, static_child, watchdog, TempName};
use multiproc::process::PoolBuilder;
use multiproc::process::{active_children, scope};
use multiproc::{Error, Event, Pool, Process, RawValue, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn send_u32(mut w: &UnixStream, v: u32) {
    w.write_all(&v.to_le_bytes()).unwrap();
}

fn recv_u32(mut r: &UnixStream) -> u32 {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).unwrap();
    u32::from_le_bytes(b)
}

const LIMIT: Duration = Duration::from_secs(90);

/// Eight children, each alive until a byte (or the end) comes on `gate`.
fn gated_children(gate: &UnixStream) -> Vec<Process<'static>> {
    (0..8)
        .map(|_| {
            let gate = gate.try_clone().unwrap();
            let mut p = Process::new(move || {
                let _ = (&gate).read(&mut [0u8; 1]);
            });
            p.start().unwrap();
            p
        })
        .collect()
}

/// A task whose fate depends on its input: returns it, aborts, or is killed.
fn maybe_die(x: u64) -> u64 {
    match x % 7 {
        3 => std::process::abort(),
        5 => {
            // SAFETY: sending SIGKILL to this process.
            unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
            unreachable!()
        }
        _ => x * 2,
    }
}

fn worker_pid(_: ()) -> (u32, u32) {
    (std::process::id(), std::os::unix::process::parent_id())
}

fn block_long(_: ()) -> u8 {
    std::thread::sleep(Duration::from_secs(600)); // killed long before
    0
}

fn double(x: u64) -> u64 {
    x * 2
}

fn assert_died_or_ok(x: u64, r: &multiproc::Result<u64>) {
    match r {
        Ok(v) => assert_eq!(*v, x * 2),
        Err(Error::WorkerDied { .. }) => assert!(x % 7 == 3 || x % 7 == 5, "{x} died"),
        Err(e) => panic!("task {x}: unexpected {e:?}"),
    }
}

#[test]
fn workers_dying_at_random_fail_only_their_tasks() {
    watchdog("random deaths", LIMIT, || {
        let pool = Pool::with_processes(3).unwrap();
        // apply_async: one task per worker turn.
        let handles: Vec<_> = (0..60u64)
            .map(|x| (x, pool.apply_async(maybe_die, x)))
            .collect();
        for (x, h) in &handles {
            assert_died_or_ok(*x, &h.get());
        }
        // imap with chunks of one: exactly the dying items fail.
        for (x, r) in (0..60u64).zip(pool.imap(maybe_die, 0..60u64, Some(1))) {
            assert_died_or_ok(x, &r);
        }
        // imap_unordered: as many failures as dying items.
        let results: Vec<_> = pool.imap_unordered(maybe_die, 0..60u64, Some(1)).collect();
        assert_eq!(results.len(), 60);
        let died = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(
            died,
            (0..60u64).filter(|x| x % 7 == 3 || x % 7 == 5).count()
        );
        // map: fails as a whole, never hangs.
        assert!(matches!(
            pool.map(maybe_die, 0..40u64),
            Err(Error::WorkerDied { .. })
        ));
        // The pool still serves.
        assert_eq!(pool.map(double, 0..10u64).unwrap()[9], 18);
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn pool_whose_fork_server_is_killed_fails_tasks_and_leaves_nothing() {
    watchdog("fork server killed", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let (worker, server) = pool.apply(worker_pid, ()).unwrap();
        assert_eq!(procfs::ppid(worker), Some(server));
        let running: Vec<_> = (0..4).map(|_| pool.apply_async(block_long, ())).collect();
        // SAFETY: the server is the pool's unreaped child's pid: still ours.
        assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
        for r in &running {
            match r.get() {
                Err(Error::WorkerDied { .. } | Error::PoolTerminated) => {}
                other => panic!("after the server died: {other:?}"),
            }
        }
        // Later tasks end too (an error), never hang.
        let later = pool.apply_async(double, 1);
        assert!(later.get().is_err() || later.get().unwrap() == 2);
        drop(pool);
        assert!(!procfs::exists(server), "fork server {server} left behind");
        // The worker, orphaned by the server's death, died with it (init,
        // not this process, reaps it: a zombie of init's is fine here).
        assert!(
            common::wait_until(LIMIT, || !procfs::alive(worker)),
            "worker {worker} outlived its fork server"
        );
    });
}

#[test]
fn pool_dropped_from_another_thread_while_tasks_run_leaves_nothing() {
    watchdog("pool dropped elsewhere", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let (worker, server) = pool.apply(worker_pid, ()).unwrap();
        let running: Vec<_> = (0..4).map(|_| pool.apply_async(block_long, ())).collect();
        std::thread::spawn(move || drop(pool)).join().unwrap();
        for r in &running {
            assert!(matches!(r.get(), Err(Error::PoolTerminated)));
        }
        assert!(!procfs::exists(server), "fork server {server} left behind");
        assert!(!procfs::exists(worker), "worker {worker} left behind");
    });
}

#[test]
fn many_pools_at_once() {
    watchdog("many pools", LIMIT, || {
        let threads: Vec<_> = (0..6u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let pool = Pool::with_processes(2).unwrap();
                    let out = pool.map(double, (0..50).map(|x| x + t)).unwrap();
                    assert_eq!(out[49], 2 * (49 + t));
                    let (_, server) = pool.apply(worker_pid, ()).unwrap();
                    pool.close();
                    pool.join().unwrap();
                    drop(pool);
                    server
                })
            })
            .collect();
        let servers: HashSet<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(servers.len(), 6, "each pool has its own fork server");
        for s in servers {
            assert!(!procfs::exists(s), "fork server {s} left behind");
        }
    });
}

#[test]
fn a_forked_child_makes_its_own_pool() {
    watchdog("pool in a child", LIMIT, || {
        let outer = Pool::with_processes(1).unwrap();
        let p = static_child(move || {
            // The parent's pool is not this process's.
            assert!(outer.apply(double, 1).is_err());
            let pool = Pool::with_processes(2).unwrap();
            assert_eq!(pool.map(double, 0..20u64).unwrap()[19], 38);
            pool.close();
            pool.join().unwrap();
            drop(outer);
        });
        assert_eq!(common::join(&p, LIMIT), 0);
    });
}

fn exit_with(code: i32) {
    multiproc::process::exit(code)
}

fn panics(_: ()) {
    panic!("on purpose")
}

fn waits_forever(_: ()) {
    std::thread::sleep(Duration::from_secs(600)); // killed long before
}

#[test]
fn forkserver_children_exit_codes_listing_and_timeouts() {
    watchdog("forkserver children", LIMIT, || {
        let mut ok = Process::forkserver(exit_with, 0);
        let mut n = Process::forkserver(exit_with, 7);
        let mut p = Process::forkserver(panics, ());
        let mut k = Process::forkserver(waits_forever, ());
        for c in [&mut ok, &mut n, &mut p, &mut k] {
            c.start().unwrap();
        }
        let kp = k.pid().unwrap();
        assert!(active_children().iter().any(|c| c.pid() == kp));
        assert_eq!(k.join_timeout(Duration::ZERO).unwrap(), None);
        assert_eq!(ok.join_timeout(Duration::MAX).unwrap(), Some(0));
        assert_eq!(n.join().unwrap(), 7);
        assert_eq!(p.join().unwrap(), 1);
        k.kill().unwrap();
        assert_eq!(k.join_timeout(Duration::MAX).unwrap(), Some(-9));
        assert_eq!(k.exitcode(), Some(-9));
        assert!(!active_children().iter().any(|c| c.pid() == kp));
        // A killed child's kill again is a no-op.
        k.kill().unwrap();
    });
}

#[test]
fn forkserver_children_dropped_are_joined_at_exit_of_a_child() {
    watchdog("forkserver at exit", LIMIT, || {
        let (gate, done) = (TempName::new("fs-exit-gate"), TempName::new("fs-exit-done"));
        let open_gate = Event::create(&gate).unwrap();
        let report = Value::<u32>::create(&done, 0).unwrap();
        let (r, w) = UnixStream::pair().unwrap();
        let names = (gate.0.clone(), done.0.clone());
        let p = static_child(move || {
            // The grandchild (its handle dropped) waits for the gate, then
            // reports in a named value (a fork server's child has none of
            // its parent's descriptors: it opens what it needs).
            fn report((gate, done): (String, String)) {
                Event::open(&gate).unwrap().wait();
                Value::<u32>::open(&done).unwrap().set(7).unwrap();
            }
            let mut g = Process::forkserver(report, names);
            g.start().unwrap();
            drop(g);
            send_u32(&w, 1);
        });
        assert_eq!(recv_u32(&r), 1);
        open_gate.set();
        assert_eq!(common::join(&p, LIMIT), 0);
        // The child's exit waited for its fork-server child's report.
        assert_eq!(report.get().unwrap(), 7);
    });
}

#[test]
fn exit_codes_through_fork_and_scope() {
    watchdog("exit codes", LIMIT, || {
        let mut zero = Process::new(|| {});
        let mut n = Process::new(|| multiproc::process::exit(42));
        let mut pan = Process::new(|| panic!("on purpose"));
        let mut killed = Process::new(|| std::thread::sleep(Duration::from_secs(600)));
        for c in [&mut zero, &mut n, &mut pan, &mut killed] {
            c.start().unwrap();
        }
        killed.kill().unwrap();
        assert_eq!(zero.join().unwrap(), 0);
        assert_eq!(n.join().unwrap(), 42);
        assert_eq!(pan.join().unwrap(), 1);
        assert_eq!(killed.join().unwrap(), -9);
        scope(|s| {
            let a = s.start(|| multiproc::process::exit(3)).unwrap();
            assert_eq!(a.join().unwrap(), 3);
        });
    });
}

#[test]
fn scope_with_panic_joins_its_children_first() {
    watchdog("scope panic", LIMIT, || {
        let (r, w) = UnixStream::pair().unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scope(|s| {
                let w = &w;
                s.start(move || send_u32(w, 1)).unwrap();
                panic!("scope body panics");
            })
        }));
        assert!(result.is_err());
        // The child ran (and was joined) before the panic got here.
        r.set_nonblocking(true).unwrap();
        assert_eq!(recv_u32(&r), 1);
    });
}

#[test]
fn nested_scopes_and_a_killed_child_with_grandchildren() {
    watchdog("nested scopes", LIMIT, || {
        let (r, w) = UnixStream::pair().unwrap();
        let (gate_r, gate_w) = UnixStream::pair().unwrap();
        let data = [1u8, 2, 3];
        scope(|outer| {
            let data = &data;
            scope(|inner| {
                let c = inner.start(move || assert_eq!(data[2], 3)).unwrap();
                assert_eq!(c.join().unwrap(), 0);
            });
            let (w, gate_r) = (&w, &gate_r);
            let child = outer
                .start(move || {
                    // A grandchild that outlives its parent until the gate opens.
                    let gr = gate_r.try_clone().unwrap();
                    let mut g = Process::new(move || {
                        let _ = (&gr).read(&mut [0u8; 1]);
                    });
                    g.start().unwrap();
                    send_u32(w, g.pid().unwrap());
                    std::thread::sleep(Duration::from_secs(600)); // killed
                })
                .unwrap();
            let _grandchild = recv_u32(&r);
            child.kill().unwrap();
            assert_eq!(child.join().unwrap(), -9);
            // Open the gate: the grandchild ends, and the scope can end.
            (&gate_w).write_all(&[0]).unwrap();
        });
    });
}

#[test]
fn forks_from_threads_while_a_pool_runs() {
    watchdog("forks while pool runs", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let forker = std::thread::spawn(|| {
            for _ in 0..40 {
                let mut p = Process::new(|| {});
                p.start().unwrap();
                assert_eq!(p.join().unwrap(), 0);
            }
        });
        for round in 0..20u64 {
            let out = pool.map(double, 0..30u64).unwrap();
            assert_eq!(out[29], 58, "round {round}");
            let _ = active_children();
        }
        forker.join().unwrap();
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn max_tasks_per_child_one_under_load() {
    watchdog("max tasks 1", LIMIT, || {
        let pool = PoolBuilder::default()
            .processes(3)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let handles: Vec<_> = (0..120u64)
            .map(|x| (x, pool.apply_async(maybe_die, x)))
            .collect();
        for (x, h) in &handles {
            assert_died_or_ok(*x, &h.get());
        }
        let pids: HashSet<u32> = (0..20)
            .map(|_| pool.apply_async(worker_pid, ()))
            .collect::<Vec<_>>()
            .iter()
            .map(|h| h.get().unwrap().0)
            .collect();
        assert_eq!(pids.len(), 20, "every task on a fresh worker");
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn join_timeout_limits_for_forked_children() {
    watchdog("join limits", LIMIT, || {
        let mut p = Process::new(|| std::thread::sleep(Duration::from_secs(600)));
        p.start().unwrap();
        assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), None);
        assert_eq!(p.join_timeout(Duration::new(0, 999_999_999)).unwrap(), None);
        p.kill().unwrap();
        assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(-9));
    });
}

/// In a child of its own (so that other tests' children, between their
/// exit and their join, do not count): after pools with dying workers,
/// dropped handles of exited children of every start method and a scope,
/// nothing of this process is left unreaped.
#[test]
fn nothing_left_behind() {
    watchdog("leftovers", LIMIT, || {
        let p = static_child(|| {
            let pool = Pool::with_processes(2).unwrap();
            let (_, server) = pool.apply(worker_pid, ()).unwrap();
            let _ = pool.map(maybe_die, 0..20u64);
            pool.close();
            pool.join().unwrap();
            drop(pool);
            assert!(
                !procfs::exists(server),
                "pool fork server {server} left behind"
            );
            let mut forked = Process::new(|| {});
            forked.start().unwrap();
            drop(forked);
            let mut served = Process::forkserver(greet, ());
            served.start().unwrap();
            drop(served);
            scope(|s| {
                s.start(|| {}).unwrap();
            });
            assert!(common::wait_until(LIMIT, || active_children().is_empty()));
            assert_eq!(procfs::zombie_children(), Vec::<u32>::new());
        });
        assert_eq!(common::join(&p, LIMIT), 0);
    });
}

fn greet(_: ()) {}

#[test]
fn process_forkserver_after_its_server_was_killed() {
    watchdog("global fork server killed", LIMIT, || {
        // In a child, which has a fork server of its own, so that killing
        // it disturbs no other test.
        let p = static_child(|| {
            // Running until killed, so that its parent can be read.
            let mut a = Process::forkserver(waits_forever, ());
            a.start().unwrap();
            let server = procfs::ppid(a.pid().unwrap()).unwrap();
            a.kill().unwrap();
            assert_eq!(a.join().unwrap(), -9);
            // SAFETY: the server is this process's child, never reaped.
            assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
            // Python's forkserver starts a new server when the old one is gone.
            let mut b = Process::forkserver(greet, ());
            b.start().expect("start after the fork server died");
            assert_eq!(b.join().unwrap(), 0);
        });
        assert_eq!(common::join(&p, LIMIT), 0);
    });
}

fn pool_in_task(n: u64) -> u64 {
    let pool = Pool::with_processes(2).unwrap();
    let out = pool.map(double, 0..n).unwrap();
    pool.close();
    pool.join().unwrap();
    let mut p = Process::forkserver(greet, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    let mut q = Process::new(|| {});
    q.start().unwrap();
    assert_eq!(q.join().unwrap(), 0);
    out.iter().sum()
}

#[test]
fn pools_and_processes_inside_pool_tasks() {
    watchdog("pool in a task", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let out = pool.map(pool_in_task, [5u64, 6, 7]).unwrap();
        assert_eq!(out, vec![20, 30, 42]);
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn a_grandchild_of_a_killed_scope_child_still_holds_the_scope_open() {
    watchdog("scope grandchild", LIMIT, || {
        let done = multiproc::Value::new(0u64).unwrap();
        let (r, w) = UnixStream::pair().unwrap();
        let (gate_r, gate_w) = UnixStream::pair().unwrap();
        scope(|outer| {
            let (done, w, gate_r) = (&done, &w, &gate_r);
            let child = outer
                .start(move || {
                    // The grandchild borrows `done` through a nested scope,
                    // which its parent is killed while waiting for.
                    scope(|inner| {
                        let g = inner
                            .start(move || {
                                let _ = (&*gate_r).read(&mut [0u8; 1]);
                                *done.lock().unwrap() = 1;
                            })
                            .unwrap();
                        send_u32(w, g.pid().unwrap());
                    });
                })
                .unwrap();
            let _grandchild = recv_u32(&r);
            child.kill().unwrap();
            assert_eq!(child.join().unwrap(), -9);
            (&gate_w).write_all(&[0]).unwrap();
        });
        // The scope ended only after the grandchild's last use of the borrow.
        assert_eq!(*done.lock().unwrap(), 1);
    });
}

fn die_now(_: u32) -> u32 {
    std::process::abort()
}

#[test]
fn dying_tasks_while_other_threads_fork_and_list_children() {
    watchdog("deaths with forks", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lister = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut p = Process::new(|| {});
                    p.start().unwrap();
                    let _ = active_children();
                    let mut q = Process::forkserver(greet, ());
                    q.start().unwrap();
                    assert_eq!(p.join().unwrap(), 0);
                    assert_eq!(q.join().unwrap(), 0);
                }
            })
        };
        for round in 0..100 {
            let (a, b) = (pool.apply_async(die_now, 0), pool.apply_async(die_now, 1));
            for r in [a, b] {
                assert!(
                    matches!(r.get(), Err(Error::WorkerDied { .. })),
                    "round {round}"
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        lister.join().unwrap();
        assert_eq!(pool.map(double, 0..8u64).unwrap()[7], 14);
    });
}

#[test]
fn pool_server_killed_after_other_threads_forked_while_workers_started() {
    // A child forked by another thread while the pool's manager holds the
    // server's end of a new worker's status socket (between `socketpair`
    // and `drop(theirs)` in `ForkServer::fork`) keeps a copy of it. When
    // the fork server then died, that status socket never read as closed,
    // so the worker's death was never noticed and its task never ended
    // (until the copying child exited).
    watchdog(
        "server killed after forks",
        Duration::from_secs(300),
        || {
            let mut lost = 0;
            for _ in 0..40 {
                let (gate_r, gate_w) = UnixStream::pair().unwrap();
                // Eight children forked while the pool starts its workers, each
                // alive until the gate opens.
                let forker = std::thread::spawn(move || gated_children(&gate_r));
                let pool = Pool::with_processes(2).unwrap();
                let (_, server) = pool.apply(worker_pid, ()).unwrap();
                let kept = forker.join().unwrap();
                let running: Vec<_> = (0..2).map(|_| pool.apply_async(block_long, ())).collect();
                // SAFETY: the pool's fork server, an unreaped child: still ours.
                unsafe { libc::kill(server as i32, libc::SIGKILL) };
                for r in &running {
                    if matches!(r.get_timeout(Duration::from_secs(5)), Err(Error::Timeout)) {
                        lost += 1;
                    }
                }
                (&gate_w).write_all(&[0u8; 8]).unwrap();
                for p in &kept {
                    p.join().unwrap();
                }
                if lost > 0 {
                    // Once the children that copied the socket are gone, the
                    // lost tasks end: the copies were what kept them waiting.
                    for r in &running {
                        assert!(matches!(
                            r.get_timeout(LIMIT),
                            Err(Error::WorkerDied { .. } | Error::PoolTerminated)
                        ));
                    }
                    break;
                }
                drop(pool);
            }
            assert_eq!(
                lost, 0,
                "tasks whose worker died with the server never ended"
            );
        },
    );
}

#[test]
fn forkserver_children_of_a_killed_server_after_other_threads_forked() {
    // As for the pool above, for `Process::forkserver` children: a copy of
    // a child's status socket in a process forked meanwhile must not keep
    // its join waiting once the server (and so the child) is dead.
    watchdog("process server killed after forks", LIMIT, || {
        let p = static_child(|| {
            let mut lost = 0;
            for _ in 0..20 {
                let (gate_r, gate_w) = UnixStream::pair().unwrap();
                let forker = std::thread::spawn(move || gated_children(&gate_r));
                let served: Vec<_> = (0..3)
                    .map(|_| {
                        let mut s = Process::forkserver(waits_forever, ());
                        s.start().unwrap();
                        s
                    })
                    .collect();
                let kept = forker.join().unwrap();
                let server = procfs::ppid(served[0].pid().unwrap()).unwrap();
                // SAFETY: this process's fork server, never reaped: ours.
                unsafe { libc::kill(server as i32, libc::SIGKILL) };
                for s in &served {
                    match s.join_timeout(Duration::from_secs(5)).unwrap() {
                        Some(code) => assert_eq!(code, -9),
                        None => lost += 1,
                    }
                }
                (&gate_w).write_all(&[0u8; 8]).unwrap();
                for k in &kept {
                    k.join().unwrap();
                }
                for s in &served {
                    s.join().unwrap();
                }
                if lost > 0 {
                    break;
                }
            }
            assert_eq!(
                lost, 0,
                "joins of children dead with their server waited on"
            );
        });
        assert_eq!(common::join(&p, LIMIT), 0);
    });
}

fn nested_forkserver(depth: u32) {
    if depth > 0 {
        let mut p = Process::forkserver(nested_forkserver, depth - 1);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 0);
    }
}

fn sum_bytes(v: Vec<u8>) {
    let s: u64 = v.iter().map(|&b| u64::from(b)).sum();
    multiproc::process::exit(i32::from(s == 4 * 1024 * 1024))
}

#[test]
fn forkserver_children_nest_and_carry_large_arguments() {
    watchdog("forkserver nesting", LIMIT, || {
        let mut p = Process::forkserver(nested_forkserver, 3);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 0);
        let mut big = Process::forkserver(sum_bytes, vec![1u8; 4 * 1024 * 1024]);
        big.start().unwrap();
        assert_eq!(big.join().unwrap(), 1);
    });
}

#[test]
fn pool_misuse_is_an_error_not_a_hang() {
    watchdog("pool misuse", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        assert!(matches!(pool.join(), Err(Error::PoolState(_))));
        // Result handles of the parent's pool, in a child: one that can
        // never complete there (its task blocks until the pool ends), and
        // one whose result was in before the fork.
        let pending = pool.apply_async(block_long, ());
        let ready = pool.apply_async(double, 2);
        assert_eq!(ready.get().unwrap(), 4);
        let child = static_child(move || {
            assert!(pending.get().is_err());
            assert!(pending.get_timeout(Duration::MAX).is_err());
            pending.wait();
            assert!(pending.wait_timeout(Duration::MAX));
            std::mem::forget(pending);
            assert_eq!(ready.get().unwrap(), 4);
            std::mem::forget(ready);
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        pool.close();
        assert!(matches!(pool.apply(double, 1), Err(Error::PoolClosed)));
        pool.terminate();
        pool.join().unwrap();
        pool.join().unwrap();
        assert!(pool.apply(double, 1).is_err());
        assert_eq!(pool.imap(double, 0..3u64, None).count(), 3);
        assert_eq!(pool.imap_unordered(double, 0..3u64, Some(0)).count(), 3);
    });
}

#[test]
fn pool_dropped_just_as_its_fork_server_is_killed() {
    watchdog("drop while server dies", LIMIT, || {
        for _ in 0..10 {
            let pool = Pool::with_processes(2).unwrap();
            let (worker, server) = pool.apply(worker_pid, ()).unwrap();
            let running: Vec<_> = (0..3).map(|_| pool.apply_async(block_long, ())).collect();
            // SAFETY: the pool's fork server, an unreaped child: still ours.
            unsafe { libc::kill(server as i32, libc::SIGKILL) };
            std::thread::spawn(move || drop(pool)).join().unwrap();
            for r in &running {
                assert!(r.get().is_err());
            }
            assert!(!procfs::exists(server), "fork server {server} left behind");
            assert!(common::wait_until(LIMIT, || !procfs::alive(worker)));
        }
    });
}

/// Starts a child that waits for the event `gate`, then sets the value
/// `done`; its pid. (By name: a worker has none of the test's descriptors.)
fn leave_a_child(gate: String, done: String) -> u32 {
    let mut p = Process::new(move || {
        multiproc::Event::open(&gate).unwrap().wait();
        multiproc::Value::<u32>::open(&done)
            .unwrap()
            .set(1)
            .unwrap();
    });
    p.start().unwrap();
    p.pid().unwrap()
}

#[test]
fn a_task_that_leaves_a_child_running_does_not_stall_a_recycling_pool() {
    // With max_tasks_per_child(1) and one process, the worker that ran
    // `leave_a_child` returns from its loop and exits. Its exit used to
    // wait for the non-daemon child, so the scheduler saw no exit, started
    // no replacement, and the next task never ran. Python forbids pool
    // workers (daemonic) to have children at all; here a worker kills the
    // children its tasks left running when it exits, as a daemon would.
    watchdog("recycled worker with a child", LIMIT, || {
        let (gate, done) = (
            common::TempName::new("left-child-gate"),
            common::TempName::new("left-child-done"),
        );
        // Opens the gate when dropped: the child never outlives the test.
        struct Gate(multiproc::Event);
        impl Drop for Gate {
            fn drop(&mut self) {
                self.0.set();
            }
        }
        let open_gate = Gate(multiproc::Event::create(&gate).unwrap());
        let report = multiproc::Value::<u32>::create(&done, 0).unwrap();
        let pool = PoolBuilder::default()
            .processes(1)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let child = pool
            .apply(leave_a_child, (gate.0.clone(), done.0.clone()))
            .unwrap();
        let next = pool
            .apply_async(double, 1)
            .get_timeout(Duration::from_secs(10));
        assert_eq!(next.unwrap(), 2);
        let ended = common::wait_until(LIMIT, || !procfs::alive(child));
        // Let it go if it still runs; it must not have passed the gate.
        drop(open_gate);
        assert!(ended, "the task's child {child} outlived its worker");
        assert_eq!(report.get().unwrap(), 0, "the task's child was not killed");
    });
}

/// Dies in one of four ways chosen by `x`, or returns it doubled.
fn die_four_ways(x: u64) -> u64 {
    match x % 5 {
        0 => std::process::abort(),
        1 => {
            // SAFETY: sending SIGKILL to this process.
            unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
            unreachable!()
        }
        2 => {
            // SAFETY: the default action for SIGSEGV (std's handler returns
            // for a raised one) in this process.
            unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
            // SAFETY: raising SIGSEGV in this process: it dies.
            unsafe { libc::raise(libc::SIGSEGV) };
            unreachable!()
        }
        3 => multiproc::process::exit(0),
        _ => x * 2,
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 200 workers die (abort, SIGKILL, SIGSEGV, exit(0)) with more workers
/// than CPUs, while another thread lists and starts children: every task
/// has exactly one outcome, callbacks run once each, and the pool keeps no
/// descriptor of a replaced worker.
///
/// Counted in a child of its own, so that the count is this test's alone,
/// not also that of the tests other threads run meanwhile (one that is
/// still running at the end, or that starts this process's fork server,
/// would hold more then than at the start).
#[test]
fn two_hundred_deaths_four_ways_leave_no_descriptor() {
    watchdog("200 deaths", LIMIT + LIMIT, || {
        let p = static_child(|| watchdog("200 deaths (child)", LIMIT, two_hundred_deaths));
        assert_eq!(common::join(&p, LIMIT + LIMIT / 2), 0);
    });
}

fn two_hundred_deaths() {
    let outside = open_descriptors();
    let pool = PoolBuilder::default()
        .processes(6)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    // The pool's own descriptors, counted when `build` returns: every
    // worker started and none retiring yet. A count taken later may fall
    // while workers that reached `max_tasks_per_child` are replaced: when
    // k retire at once, all k are dropped, then replaced one fork at a
    // time, so the pool holds up to 3k descriptors fewer than once
    // settled. (This test counted after the warm-up `map` below, and one
    // CI run waited for that lower count until its watchdog fired.)
    let with_pool = open_descriptors();
    assert_eq!(pool.map(double, 0..12).unwrap().len(), 12);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = active_children();
                let mut p = Process::new(|| {});
                p.start().unwrap();
                assert_eq!(p.join().unwrap(), 0);
            }
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..250u64)
        .map(|x| {
            let (tx, tx2) = (tx.clone(), tx.clone());
            pool.apply_async_with_error_callback(
                die_four_ways,
                x,
                move |v| tx.send((x, Ok(v))).unwrap(),
                move |e| tx2.send((x, Err(e))).unwrap(),
            )
        })
        .collect();
    drop(tx);
    let mut seen: Vec<(u64, multiproc::Result<u64>)> = rx.iter().collect();
    assert_eq!(seen.len(), 250);
    seen.sort_by_key(|s| s.0);
    for (i, (x, r)) in seen.iter().enumerate() {
        assert_eq!(*x, i as u64);
        match (x % 5, r) {
            (4, Ok(v)) => assert_eq!(*v, x * 2),
            (0, Err(Error::WorkerDied { exitcode })) => assert_eq!(*exitcode, -libc::SIGABRT),
            (1, Err(Error::WorkerDied { exitcode })) => assert_eq!(*exitcode, -libc::SIGKILL),
            (2, Err(Error::WorkerDied { exitcode })) => assert_eq!(*exitcode, -libc::SIGSEGV),
            (3, Err(Error::WorkerDied { exitcode })) => assert_eq!(*exitcode, 0),
            other => panic!("task {x}: {other:?}"),
        }
    }
    // A callback runs before its result is ready (as in Python).
    assert!(handles.iter().all(|h| h.wait_timeout(LIMIT)));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    lister.join().unwrap();
    assert_eq!(pool.map(double, 0..60).unwrap().len(), 60);
    // Replacement is asynchronous: wait for the count to settle, on
    // exactly the pool's own (not fewer: six workers again).
    let settled = common::wait_until(LIMIT, || open_descriptors() == with_pool);
    assert!(
        settled,
        "{with_pool} descriptors with the pool built, {} after",
        open_descriptors()
    );
    pool.close();
    pool.join().unwrap();
    drop(pool);
    // Joined, the pool has closed everything it opened.
    assert_eq!(open_descriptors(), outside);
}

/// As a worker killed half-way through sending a large result: writes the
/// header of a 1 MiB message and a little of it on the worker's socket to
/// the pool, and kills itself. First it starts a child that keeps a copy
/// of that socket (as a process forked while the socket is open does)
/// until the test sets the counter `gate`, so no end of file comes.
fn dies_half_way_through_its_result(gate: String) -> u64 {
    let socket = the_socket();
    let mut holder = Process::new(move || {
        let gate = RawValue::<u32>::open(&gate).expect("the test's gate");
        common::wait_until(LIMIT, || {
            gate.atomic().load(std::sync::atomic::Ordering::SeqCst) != 0
        });
    });
    holder.start().unwrap();
    let mut partial = (1i32 << 20).to_be_bytes().to_vec();
    partial.extend_from_slice(&[0u8; 1000]);
    // SAFETY: writing a buffer of ours to a descriptor this process holds.
    let n = unsafe { libc::write(socket, partial.as_ptr().cast(), partial.len()) };
    assert_eq!(n, partial.len() as isize);
    // SAFETY: sending SIGKILL to this process.
    unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
    unreachable!()
}

/// A worker that dies half-way through sending its result, its socket
/// still open in another process, fails its task and is replaced: the
/// pool never waits for the rest of a result (it used to block reading
/// it, and with it every task of the pool).
#[test]
fn a_worker_killed_while_sending_its_result_fails_its_task() {
    watchdog("half a result", 3 * LIMIT, || {
        let gate = TempName::new("half-a-result");
        let open = RawValue::create(&gate, 0u32).unwrap();
        let pool = Pool::with_processes(2).unwrap();
        let r = pool.apply_async(dies_half_way_through_its_result, gate.0.clone());
        let outcome = r.get_timeout(LIMIT);
        // Other tasks meanwhile.
        let other = pool.apply_async(double, 21).get_timeout(LIMIT);
        // The copy of the socket goes (whatever happened).
        open.atomic().store(1, std::sync::atomic::Ordering::SeqCst);
        assert!(
            matches!(outcome, Err(Error::WorkerDied { exitcode: -9 })),
            "{outcome:?}"
        );
        assert_eq!(other.unwrap(), 42);
        assert_eq!(pool.map(double, 0..20u64).unwrap().len(), 20);
        pool.close();
        pool.join().unwrap();
    });
}

/// The descriptor of this worker's one socket (its pool's).
fn the_socket() -> i32 {
    let sockets: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(sockets.len(), 1, "a worker's one socket is its pool's");
    sockets[0]
}

/// The stages of [`a_worker_dead_before_its_large_order_fails_it`], in a
/// shared counter.
const KILL: u32 = 1;
const ORDER_CAME: u32 = 2;
const DONE: u32 = 3;

/// Starts a child that holds a copy of this worker's socket until the
/// counter `stage` is `DONE`, telling (`ORDER_CAME`) when data comes on
/// it after `KILL`; and a thread that kills this worker at `KILL`.
/// Returns at once: the pid of the worker.
fn die_when_told_keeping_the_socket(stage: String) -> u32 {
    let socket = the_socket();
    let name = stage.clone();
    let holder = move || {
        let stage = RawValue::<u32>::open(&name).expect("the test's counter");
        let stage = stage.atomic();
        let seq = std::sync::atomic::Ordering::SeqCst;
        let order_came = || {
            let mut p = libc::pollfd {
                fd: socket,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            stage.load(seq) == KILL && unsafe { libc::poll(&mut p, 1, 0) } == 1
        };
        if common::wait_until(LIMIT, order_came) {
            stage.store(ORDER_CAME, seq);
        }
        common::wait_until(LIMIT, || stage.load(seq) == DONE);
    };
    // A bare fork: a child the worker starts as a Process dies with it.
    // SAFETY: the child runs the holder's loop and ends with _exit.
    if unsafe { libc::fork() } == 0 {
        holder();
        // SAFETY: ends the bare child at once.
        unsafe { libc::_exit(0) };
    }
    std::thread::spawn(move || {
        let stage = RawValue::<u32>::open(&stage).expect("the test's counter");
        common::wait_until(LIMIT, || {
            stage.atomic().load(std::sync::atomic::Ordering::SeqCst) >= KILL
        });
        // SAFETY: sending SIGKILL to this process.
        unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
    });
    std::process::id()
}

fn byte_count(bytes: Vec<u8>) -> usize {
    bytes.len()
}

/// Continues a stopped process when dropped (on a failed assertion too).
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: SIGCONT to the test's pool's fork server.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// A worker that died before reading an order larger than its socket
/// holds, the socket still open in another process, fails the task it was
/// given: the pool never waits to send the rest (it used to block
/// sending it, and with it every task of the pool).
#[test]
fn a_worker_dead_before_its_large_order_fails_it() {
    watchdog("a large order to a dead worker", 3 * LIMIT, || {
        let stage_name = TempName::new("large-order");
        let stage = RawValue::create(&stage_name, 0u32).unwrap();
        let stage = stage.atomic();
        let seq = std::sync::atomic::Ordering::SeqCst;
        let pool = Pool::with_processes(1).unwrap();
        let worker = pool
            .apply(die_when_told_keeping_the_socket, stage_name.0.clone())
            .unwrap();
        let server = procfs::ppid(worker).unwrap();
        // With its fork server stopped, the pool cannot learn that the
        // worker died, and gives it the next task.
        // SAFETY: SIGSTOP to this test's pool's fork server, our child.
        assert_eq!(unsafe { libc::kill(server as i32, libc::SIGSTOP) }, 0);
        let stopped = Stopped(server);
        stage.store(KILL, seq);
        assert!(common::wait_until(LIMIT, || procfs::state(worker) == Some('Z')));
        let large = pool.apply_async(byte_count, vec![7u8; 4 << 20]);
        // The order has begun to arrive, in the dead worker's socket.
        let came = common::wait_until(LIMIT, || stage.load(seq) == ORDER_CAME);
        drop(stopped);
        let outcome = large.get_timeout(LIMIT);
        let other = pool
            .apply_async(byte_count, vec![1u8; 10])
            .get_timeout(LIMIT);
        stage.store(DONE, seq);
        assert!(came, "no order came to the dead worker");
        assert!(
            matches!(outcome, Err(Error::WorkerDied { exitcode: -9 })),
            "{outcome:?}"
        );
        assert_eq!(other.unwrap(), 10);
        pool.close();
        pool.join().unwrap();
    });
}

/// The pool's fork server is killed while many tasks are in flight and
/// workers die: every task ends (died or terminated), nothing hangs.
#[test]
fn fork_server_killed_while_workers_die_and_tasks_queue() {
    watchdog("server killed under deaths", LIMIT, || {
        let pool = Pool::with_processes(5).unwrap();
        let server = pool.apply(worker_pid, ()).unwrap().1;
        let handles: Vec<_> = (0..100u64)
            .map(|x| pool.apply_async(die_four_ways, x))
            .collect();
        // SAFETY: SIGKILL to the pool's fork server, owned by this test's pool.
        assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
        for (x, h) in handles.iter().enumerate() {
            match h.get_timeout(LIMIT) {
                Ok(v) => assert_eq!(v, x as u64 * 2),
                Err(Error::WorkerDied { .. } | Error::PoolTerminated) => {}
                other => panic!("task {x}: {other:?}"),
            }
        }
        pool.terminate();
        pool.join().unwrap();
    });
}

/// A pool terminated, then dropped, while its workers die.
#[test]
fn pool_terminated_while_workers_die() {
    watchdog("terminate under deaths", LIMIT, || {
        for _ in 0..10 {
            let pool = Pool::with_processes(4).unwrap();
            let handles: Vec<_> = (0..40u64)
                .map(|x| pool.apply_async(die_four_ways, x))
                .collect();
            pool.terminate();
            for h in &handles {
                assert!(h.get_timeout(LIMIT).is_ok() || h.ready());
            }
            pool.join().unwrap();
            drop(pool);
        }
        assert!(common::wait_until(LIMIT, || procfs::zombie_children().is_empty()));
    });
}

/// Locked and unlocked in a tight loop by a thread of the test process.
static HAMMERED: std::sync::Mutex<u64> = std::sync::Mutex::new(0);

fn take_hammered(x: u64) -> u64 {
    *HAMMERED.lock().unwrap() += 1;
    if x % 4 == 1 {
        std::process::abort()
    }
    x
}

/// Issue 11: one thread takes and releases a lock as fast as it can while
/// the pool replaces workers (recycled and dead): no worker starts with
/// the lock held, so every task ends.
#[test]
fn a_thread_hammers_a_lock_while_the_pool_replaces_workers() {
    watchdog("hammered lock", LIMIT, || {
        let pool = PoolBuilder::default()
            .processes(4)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    *HAMMERED.lock().unwrap() += 1;
                }
            })
        };
        let handles: Vec<_> = (0..200u64)
            .map(|x| pool.apply_async(take_hammered, x))
            .collect();
        for (x, h) in handles.iter().enumerate() {
            match h.get_timeout(Duration::from_secs(30)) {
                Ok(v) => assert_eq!(v, x as u64),
                Err(Error::WorkerDied { .. }) if x % 4 == 1 => {}
                other => panic!("task {x}: {other:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hammer.join().unwrap();
        pool.close();
        pool.join().unwrap();
    });
}

fn pool_in_forkserver_child(n: u64) {
    let pool = Pool::with_processes(3).unwrap();
    let r: Vec<_> = (0..n).map(|x| pool.apply_async(maybe_die, x)).collect();
    for (x, h) in r.iter().enumerate() {
        assert_died_or_ok(x as u64, &h.get());
    }
    pool.close();
    pool.join().unwrap();
}

/// A forkserver child killed while another thread waits for it without a
/// limit; timeouts of 0 and 1 ns before; and a forkserver child that runs
/// a pool of its own whose workers die.
#[test]
fn forkserver_child_killed_while_another_thread_waits() {
    watchdog("forkserver join from a thread", LIMIT, || {
        let mut k = Process::forkserver(waits_forever, ());
        k.start().unwrap();
        assert_eq!(k.join_timeout(Duration::ZERO).unwrap(), None);
        assert_eq!(k.join_timeout(Duration::from_nanos(1)).unwrap(), None);
        assert_eq!(k.join_timeout(Duration::new(0, 999_999_999)).unwrap(), None);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| k.join_timeout(Duration::MAX).unwrap());
            // Likely (not needed) that the waiter is waiting by now.
            std::thread::sleep(Duration::from_millis(50));
            k.kill().unwrap();
            assert_eq!(waiter.join().unwrap(), Some(-libc::SIGKILL));
        });
        assert_eq!(
            k.join_timeout(Duration::ZERO).unwrap(),
            Some(-libc::SIGKILL)
        );

        let mut p = Process::forkserver(pool_in_forkserver_child, 40);
        p.start().unwrap();
        assert_eq!(common::join(&p, LIMIT), 0);
    });
}
