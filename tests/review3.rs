//! Third-round adversarial review of the pieces merged in round 3: pool
//! tasks, local processes, shared-object placement, the manager's values.
//! Each test attacks one promise; see the report of branch r3-review.

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{watchdog, TempName};
use multiproc::process::LocalProcess;
use multiproc::{Barrier, Error, Event, Manager, Pool, PyValue, Queue, Semaphore};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- pool tasks

fn boom(x: u32) -> u32 {
    if x == 3 {
        panic!("boom at {x}");
    }
    x
}

fn six(a: u8, b: u16, c: u32, d: u64, e: i8, f: String) -> String {
    format!("{a}{b}{c}{d}{e}{f}")
}

fn generic<T: std::fmt::Debug>(x: T) -> String {
    format!("{x:?}")
}

/// A zero-sized `Copy` type that a closure may capture.
#[derive(Clone, Copy)]
struct Token;

impl Token {
    fn value(self) -> u64 {
        77
    }
}

#[test]
fn a_panicking_task_fails_alone_and_reaches_the_error_callback() {
    watchdog("panicking task", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let e = pool.apply(boom, 3).unwrap_err();
        assert!(
            matches!(&e, Error::TaskFailed(m) if m.contains("boom at 3")),
            "{e:?}"
        );
        // A map with a panicking item fails as a whole, with its text.
        let e = pool.map(boom, 0..6).unwrap_err();
        assert!(
            matches!(&e, Error::TaskFailed(m) if m.contains("boom")),
            "{e:?}"
        );
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let r = pool.apply_async_with_error_callback(
            boom,
            3,
            move |v| tx.send(Ok(v)).unwrap(),
            move |e| tx2.send(Err(e.to_string())).unwrap(),
        );
        let got = rx.recv_timeout(LIMIT).unwrap();
        assert!(matches!(&got, Err(m) if m.contains("boom")), "{got:?}");
        assert!(r.get().is_err());
        // The worker survived (or was replaced): the pool still works.
        assert_eq!(pool.apply(boom, 4).unwrap(), 4);
    });
}

#[test]
fn zero_sized_captures_generic_fns_and_six_arguments_run_as_themselves() {
    watchdog("task kinds", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let t = Token;
        let unit = ();
        // Closures that capture only zero-sized values are zero-sized.
        assert_eq!(pool.apply(move || t.value(), ()).unwrap(), 77);
        assert_eq!(
            pool.apply(
                move |x: u64| {
                    let () = unit;
                    x + 1
                },
                1
            )
            .unwrap(),
            2
        );
        // Two instances of one generic fn are two tasks, not one address.
        assert_eq!(pool.apply(generic::<u8>, 5).unwrap(), "5");
        assert_eq!(pool.apply(generic::<String>, "a".into()).unwrap(), "\"a\"");
        assert_eq!(
            pool.apply(generic::<Vec<i32>>, vec![-1, 2]).unwrap(),
            "[-1, 2]"
        );
        let out = pool
            .starmap(
                six,
                [
                    (1, 2, 3, 4, -5, "x".to_string()),
                    (0, 0, 0, 0, 0, String::new()),
                ],
            )
            .unwrap();
        assert_eq!(out, ["1234-5x", "00000"]);
        // Method paths and closures of no argument.
        assert_eq!(pool.apply(u64::wrapping_add, (u64::MAX, 2)).unwrap(), 1);
        assert_eq!(pool.apply(|| 9u8, ()).unwrap(), 9);
        assert!(pool.starmap(six, []).unwrap().is_empty());
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn a_pool_of_zero_workers_is_refused() {
    let e = Pool::with_processes(0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
}

#[test]
fn many_threads_join_close_and_terminate_at_once() {
    watchdog("join race", LIMIT, || {
        for round in 0..4 {
            let pool = Arc::new(Pool::with_processes(2).unwrap());
            let pending: Vec<_> = (0..8u32).map(|i| pool.apply_async(boom, i + 4)).collect();
            let barrier = Arc::new(std::sync::Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|i| {
                    let (pool, barrier) = (pool.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        match (i + round) % 3 {
                            0 => pool.close(),
                            1 => pool.terminate(),
                            _ => {}
                        }
                        // join may come before close/terminate: an error then.
                        while let Err(e) = pool.join() {
                            assert!(matches!(e, Error::PoolState(_)), "{e:?}");
                            std::thread::yield_now();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            // Every result is settled: a value or "terminated".
            for r in pending {
                match r.get() {
                    Ok(v) => assert!(v >= 4),
                    Err(e) => assert!(
                        matches!(e, Error::PoolTerminated | Error::WorkerDied { .. }),
                        "{e:?}"
                    ),
                }
            }
            // Submitting after the end is an error, not a hang.
            let late = pool.apply(boom, 1);
            assert!(late.is_err(), "{late:?}");
        }
    });
}

/// Starts a child of its worker (which the worker must end) and returns.
fn leave_a_child(_: u32) -> u32 {
    let mut p = multiproc::Process::new(|| std::thread::sleep(Duration::from_secs(600)));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    std::mem::forget(p);
    pid
}

#[test]
fn recycled_workers_kill_only_their_own_tasks_children() {
    watchdog("recycled workers", LIMIT, || {
        // The test process's own child, started before the pool: the fork
        // server and its workers are copies of this process, whose list of
        // children holds this one.
        let gate = Event::new().unwrap();
        let g = gate.clone();
        let mut mine = multiproc::Process::new(move || {
            g.wait_timeout(Duration::from_secs(120));
        });
        mine.start().unwrap();
        let pool = Pool::builder()
            .processes(2)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let left = pool.map(leave_a_child, 0..4).unwrap();
        pool.close();
        pool.join().unwrap();
        for pid in &left {
            assert!(
                common::wait_until(LIMIT, || common::procfs::gone(*pid)),
                "task child {pid} still runs"
            );
        }
        assert!(
            mine.is_alive(),
            "a worker killed its pool's process's child"
        );
        gate.set();
        assert_eq!(common::join(&mine, LIMIT), 0);
    });
}

// ------------------------------------------------------------ local processes

/// Compiles only if `T` is not `Send` (two impls apply to a `Send` type,
/// and inference then fails).
trait AmbiguousIfSend<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

trait AmbiguousIfSync<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

#[test]
fn a_local_process_stays_on_its_thread() {
    <LocalProcess<'static> as AmbiguousIfSend<_>>::check();
    <LocalProcess<'static> as AmbiguousIfSync<_>>::check();
    // A local process's closure is dropped where it was made, started or not.
    let rc = std::rc::Rc::new(5);
    let mut p = multiproc::Process::new_local({
        let rc = rc.clone();
        move || assert_eq!(*rc, 5)
    });
    assert_eq!(std::rc::Rc::strong_count(&rc), 2);
    p.start().unwrap();
    assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0));
    drop(p);
    assert_eq!(std::rc::Rc::strong_count(&rc), 1);
    let p = multiproc::Process::new_local({
        let rc = rc.clone();
        move || drop(rc)
    });
    drop(p);
    assert_eq!(std::rc::Rc::strong_count(&rc), 1);
}

// ---------------------------------------------------------------- placement

#[test]
fn extreme_anonymous_sizes_are_errors() {
    let e = Barrier::new(Barrier::MAX_PARTIES + 1).err().unwrap();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let e = Barrier::new(u32::MAX).err().unwrap();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));
    let e = Semaphore::new(u32::MAX).err().unwrap();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    for bytes in [0, 63, (1 << 30) + 1, usize::MAX] {
        let e = Queue::<u8>::with_capacity(0, bytes).err().unwrap();
        assert!(matches!(e, Error::InvalidArgument(_)), "{bytes}: {e:?}");
    }
    let e = Queue::<u8>::with_capacity(usize::MAX, 64);
    // A huge item limit is no limit worth refusing; it must not panic.
    drop(e);
    let e = multiproc::Array::<u64>::new(usize::MAX).err().unwrap();
    assert!(
        matches!(
            e,
            Error::InvalidArgument(_) | Error::NoSpace { .. } | Error::Io { .. }
        ),
        "{e:?}"
    );
    let e = multiproc::RawArray::<u64>::new(usize::MAX / 4)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::InvalidArgument(_) | Error::NoSpace { .. } | Error::Io { .. }
        ),
        "{e:?}"
    );
}

#[test]
fn a_named_object_opened_as_another_is_refused() {
    let name = TempName::new("r3-kind");
    let _b = Barrier::create(&name, 3).unwrap();
    assert!(matches!(
        Semaphore::open(&name),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        Event::open(&name),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        Queue::<u8>::open(&name),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        multiproc::Array::<u64>::open(&name),
        Err(Error::KindMismatch { .. })
    ));
    // create_or_open with other arguments finds the creator's barrier.
    assert_eq!(Barrier::create_or_open(&name, 9).unwrap().parties(), 3);
    let arr = TempName::new("r3-arr");
    let _a = multiproc::Array::<u32>::create(&arr, &[1, 2, 3]).unwrap();
    assert!(matches!(
        multiproc::Array::<u64>::open(&arr),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        multiproc::Array::<i32>::open(&arr),
        Err(Error::TypeMismatch { .. })
    ));
    assert_eq!(multiproc::Array::<u32>::open(&arr).unwrap().len(), 3);
}

#[test]
fn create_or_open_races_between_processes_make_one_object() {
    watchdog("create_or_open race", LIMIT, || {
        for round in 0..5 {
            let name = TempName::new(&format!("r3-race-{round}"));
            let n = name.0.clone();
            let start = Event::new().unwrap();
            let children: Vec<_> = (0..4)
                .map(|_| {
                    let (n, start) = (n.clone(), start.clone());
                    common::static_child(move || {
                        assert!(start.wait_timeout(LIMIT));
                        let s = Semaphore::create_or_open(&n, 0).unwrap();
                        s.release().unwrap();
                    })
                })
                .collect();
            start.set();
            let s = Semaphore::create_or_open(&name, 0).unwrap();
            for c in &children {
                assert_eq!(common::join(c, LIMIT), 0);
            }
            // Four releases on one semaphore, whoever created it.
            for _ in 0..4 {
                assert!(s.acquire_timeout(Duration::ZERO));
            }
            assert!(!s.acquire_timeout(Duration::ZERO));
        }
    });
}

// ------------------------------------------------------------------ manager

fn display_of(v: PyValue) -> String {
    v.to_string()
}

#[test]
fn equal_keys_of_different_types_are_one_key_as_in_python() {
    watchdog("manager keys", LIMIT, || {
        let mut m = Manager::start().unwrap();
        // Python: {0: 'a', 0.0: 'b', False: 'c', -0.0: 'd'} == {0: 'd'}
        let d = m
            .dict_from::<PyValue, PyValue>([
                (0.into(), "a".into()),
                (0.0.into(), "b".into()),
                (false.into(), "c".into()),
                ((-0.0).into(), "d".into()),
            ])
            .unwrap();
        assert_eq!(d.to_string(), "{0: 'd'}");
        // Python: dict([(1,'a'),(2,'b'),(1,'c')]) == {1: 'c', 2: 'b'}
        let d = m
            .dict_from([(1, "a"), (2, "b"), (1, "c")].map(|(k, v)| (k, v.to_string())))
            .unwrap();
        assert_eq!(d.to_string(), "{1: 'c', 2: 'b'}");
        // 2**53 + 1 and float(2**53) differ exactly.
        let d = m
            .dict_from::<PyValue, PyValue>(
                [((1i64 << 53) + 1).into(), ((1u64 << 53) as f64).into()]
                    .map(|k: PyValue| (k, PyValue::None)),
            )
            .unwrap();
        assert_eq!(d.len().unwrap(), 2);
        assert_eq!(
            d.to_string(),
            "{9007199254740993: None, 9007199254740992.0: None}"
        );
        // NaN keys: each NaN is its own key in Python unless it is the same
        // object; here values have no identity, so either answer is
        // acceptable, but never a panic or a hang.
        let d = m
            .dict_from::<PyValue, PyValue>([
                (f64::NAN.into(), 1.into()),
                (f64::NAN.into(), 2.into()),
            ])
            .unwrap();
        let n = d.len().unwrap();
        assert!((1..=2).contains(&n));
        let _ = d.to_string();
        m.shutdown().unwrap();
    });
}

#[test]
fn strings_print_as_python_prints_them() {
    // Python 3.12's repr of each, as checked against every assigned code
    // point: C1 controls as `\x..`, separators, format and private-use
    // characters escaped, the rest (any script) as themselves.
    for (s, py) in [
        ("\u{85}\u{a0}\u{ad}\u{7f}", r"'\x85\xa0\xad\x7f'"),
        (
            "\u{200b}\u{2028}\u{2029}\u{1680}\u{3000}",
            r"'\u200b\u2028\u2029\u1680\u3000'",
        ),
        (
            "\u{feff}\u{e000}\u{e0001}\u{10fffd}",
            r"'\ufeff\ue000\U000e0001\U0010fffd'",
        ),
        ("a é ß ж 中 🦀 \u{301}", "'a é ß ж 中 🦀 \u{301}'"),
        ("it's", "\"it's\""),
        ("'\"", r#"'\'"'"#),
    ] {
        assert_eq!(display_of(s.into()), py, "{s:?}");
    }
}

#[test]
fn floats_print_as_python_prints_them() {
    for (f, py) in [
        (-0.0, "-0.0"),
        (1e16, "1e+16"),
        (1e-5, "1e-05"),
        (123456789012345680.0, "1.2345678901234568e+17"),
        (f64::NAN, "nan"),
        (f64::NEG_INFINITY, "-inf"),
        (0.0001, "0.0001"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
    ] {
        assert_eq!(display_of(f.into()), py, "{f:?}");
    }
}

#[test]
fn values_nested_too_deep_are_refused_and_the_server_lives_on() {
    watchdog("deep values", LIMIT, || {
        let mut v = PyValue::None;
        for _ in 0..multiproc::manager::MAX_DEPTH + 10 {
            v = PyValue::List(vec![v]);
        }
        let mut m = Manager::start().unwrap();
        let l = m.list::<PyValue>().unwrap();
        assert!(l.append(v.clone()).is_err());
        l.append(PyValue::Tuple(vec![1.into()])).unwrap();
        assert_eq!(l.to_string(), "[(1,)]");
        // Its Display is Python's repr, however deep.
        let shown = v.to_string();
        assert!(
            shown.starts_with("[[[[") && shown.contains("[None]]") && shown.ends_with("]]]]"),
            "{}",
            &shown[shown.len().saturating_sub(60)..]
        );
        m.shutdown().unwrap();
    });
}

// ---------------------------------------------------------------- logging

fn square(x: u64) -> u64 {
    x * x
}

/// Sends this process's stderr to /dev/null (in a forked child, whose
/// lifecycle records would otherwise fill the test's output).
fn quiet_stderr() {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    // SAFETY: dup2 onto fd 2 of an open file.
    assert!(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 2) } == 2);
}

#[test]
fn forks_and_exit_while_other_threads_log_never_hang() {
    // In a child of its own: the logger is process-wide.
    let p = common::static_child(|| {
        quiet_stderr();
        multiproc::log_to_stderr(multiproc::LogLevel::SubDebug).unwrap();
        for t in 0..3 {
            std::thread::spawn(move || loop {
                log::info!("thread {t} logging");
            });
        }
        for _ in 0..20 {
            let mut c = multiproc::Process::new(|| log::info!("child logging"));
            c.start().unwrap();
            // Some die mid-log.
            let _ = c.kill();
            assert!(c.join_timeout(LIMIT).unwrap().is_some());
        }
        let pool = Pool::with_processes(2).unwrap();
        assert_eq!(pool.map(square, 0..10u64).unwrap().len(), 10);
        drop(pool);
        // A daemon child left running: the exit hook kills it and logs,
        // while the threads still log.
        let mut d = multiproc::Process::new(|| std::thread::sleep(LIMIT)).daemon(true);
        d.start().unwrap();
        std::mem::forget(d);
        multiproc::process::exit(0);
    });
    assert_eq!(common::join(&p, LIMIT), 0);
}

// ------------------------------------------- descriptors released by helpers

#[test]
fn helpers_start_under_a_lowered_descriptor_limit() {
    let p = common::static_child(|| {
        // Open descriptors up to about 64, then lower the limit below the
        // highest: the fork server and the Manager's server inherit one
        // above their limit.
        let files: Vec<_> = (0..60)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let top = files
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .max()
            .unwrap();
        let limit = libc::rlimit {
            rlim_cur: (top - 10) as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit to a valid pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let limit = libc::rlimit {
            rlim_max: old.rlim_max,
            ..limit
        };
        // SAFETY: setrlimit reads one valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        // Free twenty numbers below the limit; the top ones stay open.
        let mut files = files;
        files.drain(..20);
        let pool = Pool::with_processes(2).unwrap();
        assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
        pool.close();
        pool.join().unwrap();
        let mut m = Manager::start().unwrap();
        let l = m.list_from(0..3).unwrap();
        assert_eq!(l.to_string(), "[0, 1, 2]");
        m.shutdown().unwrap();
        drop(files);
    });
    assert_eq!(common::join(&p, LIMIT), 0);
}

#[test]
fn a_pool_on_one_cpu_has_one_worker() {
    let p = common::static_child(|| {
        // SAFETY: cpu_set_t is a plain bit array, valid all zeros.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU 0 is within the set's bits.
        unsafe { libc::CPU_SET(0, &mut set) };
        // SAFETY: a valid cpu_set_t of the size given, for this process.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        assert_eq!(r, 0);
        assert_eq!(multiproc::cpu_count(), 1);
        let pool = Pool::new().unwrap();
        assert_eq!(pool.processes(), 1);
        assert_eq!(pool.map(square, 0..5u64).unwrap(), [0, 1, 4, 9, 16]);
        pool.close();
        pool.join().unwrap();
    });
    assert_eq!(common::join(&p, LIMIT), 0);
}

// ------------------------------------------------------------ pool, more

fn exit_worker(code: i32) -> i32 {
    std::process::exit(code)
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_task_that_ends_its_worker_fails_alone() {
    watchdog("worker exit", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let e = pool.apply(exit_worker, 3).unwrap_err();
        assert!(matches!(e, Error::WorkerDied { .. }), "{e:?}");
        assert_eq!(pool.apply(square, 7).unwrap(), 49);
        // Timeouts at both ends.
        let r = pool.apply_async(sleepy, 200);
        assert!(matches!(r.get_timeout(Duration::ZERO), Err(Error::Timeout)));
        assert_eq!(r.get_timeout(Duration::MAX).unwrap(), 200);
        assert!(r.wait_timeout(Duration::ZERO));
        let m = pool.map_async(sleepy, [1, 2]);
        assert_eq!(m.get_timeout(Duration::MAX).unwrap(), [1, 2]);
    });
}

#[test]
fn a_pool_used_from_a_forked_child_refuses_without_hanging() {
    watchdog("foreign pool", LIMIT, || {
        let pool = Pool::with_processes(1).unwrap();
        let pending = pool.apply_async(sleepy, 300);
        multiproc::scope(|s| {
            let mut c = s.process(|| {
                assert!(pool.apply(square, 2).is_err());
                assert!(pool.map(square, [1, 2]).is_err());
                assert!(pool.join().is_err());
                assert!(pending.get().is_err());
                assert!(pending.get_timeout(Duration::MAX).is_err());
                pool.close();
                pool.terminate();
            });
            c.start().unwrap();
            assert_eq!(c.join_timeout(LIMIT).unwrap(), Some(0));
        });
        assert_eq!(pending.get().unwrap(), 300);
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
    });
}

#[test]
#[ignore = "reproduces: a PyValue::Dict with Python-equal keys is stored and shown as is \
            ({1: 'a', 2: 'x', 1.0: 'b'}), not as the dict Python builds from it; \
            documented on PyValue::dict (\"keeping a repeated key each time\")"]
fn a_dict_value_with_repeated_keys_is_stored_as_python_builds_it() {
    watchdog("dict value", LIMIT, || {
        let mut m = Manager::start().unwrap();
        let l = m.list::<PyValue>().unwrap();
        // Python: [dict([(1, 'a'), (2, 'x'), (1.0, 'b')])] == [{1: 'b', 2: 'x'}]
        l.append(PyValue::dict([
            (PyValue::from(1), "a"),
            (2.into(), "x"),
            (1.0.into(), "b"),
        ]))
        .unwrap();
        assert_eq!(l.to_string(), "[{1: 'b', 2: 'x'}]");
        m.shutdown().unwrap();
    });
}

fn big(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[test]
fn dropped_iterators_and_huge_results_end_without_hanging() {
    watchdog("imap drop", LIMIT, || {
        let pool = Pool::with_processes(2).unwrap();
        let mut it = pool.imap(boom, 0..8, Some(1));
        assert_eq!(it.next().unwrap().unwrap(), 0);
        drop(it);
        let got: Vec<_> = pool.imap_unordered(boom, 0..6, None).collect();
        assert_eq!(got.len(), 6);
        assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
        // A chunk size of 0 is taken as 1, not a panic or an endless loop.
        assert_eq!(pool.imap(square, 0..3u64, Some(0)).count(), 3);
        assert_eq!(
            pool.map_chunked(square, 0..3u64, Some(0)).unwrap(),
            [0, 1, 4]
        );
        // 4 MiB back from a worker: a result or an error, and the pool lives.
        match pool.apply(big, 4 << 20) {
            Ok(v) => assert_eq!(v.len(), 4 << 20),
            Err(e) => assert!(!matches!(e, Error::Timeout), "{e:?}"),
        }
        assert_eq!(pool.apply(square, 5).unwrap(), 25);
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn the_last_handle_of_a_pool_dropped_by_its_own_callback_does_not_hang() {
    watchdog("pool dropped in its callback", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        let (tx, rx) = mpsc::channel();
        let held = pool.clone();
        let r = pool.apply_async_with(sleepy, 100, move |v| {
            // The callback owns the last handle when it runs: it is dropped
            // here, on the pool's own scheduler thread.
            drop(held);
            tx.send(v).unwrap();
        });
        drop(pool);
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 100);
        assert_eq!(r.get_timeout(LIMIT).unwrap(), 100);
        if std::env::var_os("REVIEW3_CHILDREN").is_some() {
            // Alone in the binary: the scheduler ends the pool by itself.
            let ours = || {
                std::fs::read_dir("/proc/self/task")
                    .unwrap()
                    .filter_map(|t| {
                        std::fs::read_to_string(t.unwrap().path().join("children")).ok()
                    })
                    .collect::<String>()
            };
            assert!(
                common::wait_until(LIMIT, || ours().trim().is_empty()),
                "{}",
                ours()
            );
        }
    });
}

#[test]
fn joining_a_pool_from_its_own_callback_is_an_error() {
    watchdog("pool joined in its callback", LIMIT, || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        let (tx, rx) = mpsc::channel();
        let held = pool.clone();
        let _r = pool.apply_async_with(sleepy, 100, move |_| {
            held.close();
            tx.send(held.join()).unwrap();
        });
        let got = rx.recv_timeout(LIMIT).unwrap();
        assert!(matches!(got, Err(Error::PoolState(_))), "{got:?}");
        pool.join().unwrap();
    });
}

/// A callback that waits for a result of its own pool gets an error at
/// once: callbacks run on the scheduler thread, which would deliver that
/// result (Python's result handler thread hangs there). Results already
/// there, and other pools' results, are waited for as usual.
#[test]
fn waiting_for_a_result_in_a_callback_does_not_hang() {
    watchdog("wait in a callback", Duration::from_secs(30), || {
        let pool = Arc::new(Pool::with_processes(1).unwrap());
        let other = Arc::new(Pool::with_processes(1).unwrap());
        let done = pool.apply_async(square, 5);
        assert_eq!(done.get().unwrap(), 25);
        let (tx, rx) = mpsc::channel();
        let (held, other_held) = (pool.clone(), other.clone());
        let _r = pool.apply_async_with(square, 2, move |_| {
            let pending = held.apply_async(square, 4);
            pending.wait();
            let waited = pending.wait_timeout(Duration::MAX);
            let map = held.map_async(square, [1, 2]);
            map.wait();
            tx.send((
                held.apply(square, 3),
                waited,
                pending.get_timeout(Duration::MAX),
                poll_until_ready(pending.get_async()),
                map.get(),
                done.get(),
                other_held.apply(square, 6),
            ))
            .unwrap();
        });
        let (apply, waited, get, get_async, map, done, other) =
            rx.recv_timeout(Duration::from_secs(20)).unwrap();
        for e in [
            apply.unwrap_err(),
            get.unwrap_err(),
            get_async.unwrap_err(),
            map.unwrap_err(),
        ] {
            assert!(matches!(e, Error::PoolState(_)), "{e:?}");
        }
        assert!(!waited);
        assert_eq!(done.unwrap(), 25);
        assert_eq!(other.unwrap(), 36);
        // The pool goes on.
        assert_eq!(pool.apply(square, 7).unwrap(), 49);
    });
}

/// Polls `f` on this thread until it is ready (a callback cannot await).
fn poll_until_ready<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_namespace_prints_as_python_prints_it() {
    watchdog("namespace display", LIMIT, || {
        let mut m = Manager::start().unwrap();
        let ns = m.namespace().unwrap();
        assert_eq!(ns.to_string(), "Namespace()");
        ns.set("b", &1).unwrap();
        ns.set("_x", &2).unwrap();
        ns.set("a", &vec![1]).unwrap();
        ns.set("a b", &"q").unwrap();
        // Python 3.12: str(Namespace) with the same attributes set.
        assert_eq!(ns.to_string(), "Namespace(a b='q', a=[1], b=1)");
        m.shutdown().unwrap();
        // A proxy whose server is gone prints an error, without panicking.
        assert!(ns.to_string().starts_with("<NamespaceProxy object"));
    });
}

#[test]
fn the_largest_barrier_and_semaphore_are_made() {
    // 2^22 slots of a pid and a start time: 48 MiB.
    assert_eq!(
        Barrier::new(Barrier::MAX_PARTIES).unwrap().parties(),
        Barrier::MAX_PARTIES
    );
    let s = Semaphore::new(i32::MAX as u32).unwrap();
    assert!(s.acquire_timeout(Duration::ZERO));
    assert!(matches!(
        Semaphore::new(i32::MAX as u32 + 1),
        Err(Error::InvalidArgument(_))
    ));
}
