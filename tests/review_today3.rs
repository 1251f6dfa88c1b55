//! Review of 2026-12-01's changes: a process whose start fails before its
//! child runs keeps its closure (in a scope, a local process, a captured
//! value dropped exactly once, by this process, and a drop that panics at
//! the retried start's hand-over); and a manager server that reads plain
//! calls of scalars straight from their bytes answers CPython 3.8's and
//! 3.13's clients as CPython's own manager does, for scalars of each type.
//!
//! A start is made to fail by lowering `RLIMIT_NOFILE` to 0, which the
//! whole process feels: the tests take turns (`SERIAL`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{join, watchdog};
use multiproc::manager::Manager;
use multiproc::{Error, Process};

const LIMIT: Duration = Duration::from_secs(120);

/// Taken by every test: one at a time may lower the descriptor limit.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts its drops in the process that made it (a child's drops are its
/// own copy's).
struct Counted {
    drops: Arc<AtomicUsize>,
    owner: u32,
    /// Whether its drop in the owner panics.
    panics: bool,
}

impl Counted {
    fn new(panics: bool) -> (Counted, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        let c = Counted {
            drops: drops.clone(),
            owner: std::process::id(),
            panics,
        };
        (c, drops)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if std::process::id() == self.owner {
            self.drops.fetch_add(1, Ordering::SeqCst);
            if self.panics {
                panic!("Counted's drop panics");
            }
        }
    }
}

fn io_error<T: std::fmt::Debug>(r: multiproc::Result<T>) {
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
}

/// A value captured by a closure whose starts fail is dropped once, by
/// this process, when the process is dropped unstarted; and once here
/// (its copy handed over) when a retry starts the child, which then says
/// "already started" to a third start.
#[test]
fn a_captured_value_is_dropped_once_whatever_the_starts() {
    let _serial = serial();
    watchdog("captured drops", LIMIT, || {
        let (c, drops) = Counted::new(false);
        let mut p = Process::new(move || {
            let _kept = &c;
        });
        io_error(common::with_no_new_descriptors(|| p.start()));
        io_error(common::with_no_new_descriptors(|| p.start()));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(p);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped unstarted");

        let (c, drops) = Counted::new(false);
        let mut p = Process::new(move || {
            let _kept = &c;
        });
        io_error(common::with_no_new_descriptors(|| p.start()));
        p.start().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1, "handed over");
        assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
        assert_eq!(join(&p, LIMIT), 0);
        drop(p);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped after the run");
        assert!(multiproc::active_children().is_empty());
    });
}

/// A captured value whose drop panics: a failed start drops nothing; the
/// retry starts the child, records it and then raises the drop's panic;
/// the child is joined, and nothing is dropped again.
#[test]
fn a_drop_that_panics_at_the_retried_start_is_raised_once() {
    let _serial = serial();
    watchdog("panicking drop", LIMIT, || {
        let (c, drops) = Counted::new(true);
        let mut p = Process::new(move || {
            let _kept = &c;
        });
        io_error(common::with_no_new_descriptors(|| p.start()));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.start()));
        assert!(started.is_err(), "the drop's panic is raised");
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(p.pid().is_some());
        assert_eq!(join(&p, LIMIT), 0);
        assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
        drop(p);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// In a scope: a start that fails, then one that runs the child, which
/// reaches the scope's borrowed state; and a process whose start failed
/// dropped unstarted, which the scope's end does not wait for.
#[test]
fn a_scoped_start_that_fails_can_be_retried() {
    let _serial = serial();
    watchdog("scoped retry", LIMIT, || {
        let v = multiproc::Value::new(0u32).unwrap();
        let (c, drops) = Counted::new(false);
        multiproc::scope(|s| {
            let mut p = s.process(|| v.set(7).unwrap());
            io_error(common::with_no_new_descriptors(|| p.start()));
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), 0);
            let mut q = s.process(move || {
                let _kept = &c;
            });
            io_error(common::with_no_new_descriptors(|| q.start()));
            drop(q);
        });
        assert_eq!(v.get().unwrap(), 7);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(multiproc::active_children().is_empty());
    });
}

/// A local process (a closure that is not `Send`): the same.
#[test]
fn a_local_start_that_fails_can_be_retried() {
    let _serial = serial();
    watchdog("local retry", LIMIT, || {
        let v = multiproc::Value::new(0u32).unwrap();
        let rc = std::rc::Rc::new(v.clone());
        let (c, drops) = Counted::new(false);
        let mut p = Process::new_local(move || {
            let _kept = &c;
            rc.set(9).unwrap();
        });
        io_error(common::with_no_new_descriptors(|| p.start()));
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        p.start().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0));
        assert_eq!(v.get().unwrap(), 9);
    });
}

/// A pool that cannot start its workers says so, and one built after
/// works.
#[test]
fn a_pool_whose_workers_cannot_start_says_so() {
    let _serial = serial();
    watchdog("pool start", LIMIT, || {
        let failed =
            common::with_no_new_descriptors(|| multiproc::Pool::builder().processes(2).build());
        assert!(failed.is_err());
        let pool = multiproc::Pool::builder().processes(2).build().unwrap();
        let squares = pool.map(square, [1u64, 2, 3]).unwrap();
        assert_eq!(squares, vec![1, 4, 9]);
        pool.close();
        pool.join().unwrap();
    });
}

fn square(x: u64) -> u64 {
    x * x
}

/// Every CPython 3.8 and 3.13 that pyenv has here, or none.
fn pythons() -> Vec<String> {
    common::cpython::pyenv_pythons()
        .into_iter()
        .filter(|(minor, _)| [8, 13].contains(minor))
        .map(|(_, p)| p)
        .collect()
}

/// CPython's clients call a list and a dict of a multiproc server and of
/// CPython's own manager with scalars of every type as arguments (each
/// call a plain call of scalars, read straight, but for the ints past
/// `i64` and the strs and bytes past 255 bytes): the same results, the
/// same exceptions, the same contents after.
#[test]
fn cpython_clients_get_cpythons_answers_for_calls_of_scalars() {
    let _serial = serial();
    let pythons = pythons();
    if pythons.is_empty() {
        return eprintln!("skipped: no CPython 3.8 or 3.13 under pyenv");
    }
    watchdog("cpython scalars", LIMIT, || {
        let mut m = Manager::start().unwrap();
        let multiproc::conn::Address::Unix(path) = m.address() else {
            panic!("not a unix socket")
        };
        for python in &pythons {
            // The authkey as bytes on the command line: hex.
            let hex: String = m.authkey().iter().map(|b| format!("{b:02x}")).collect();
            let out = std::process::Command::new(python)
                .args(["-c", SCALAR_CALLS, path.to_str().unwrap(), &hex])
                .output()
                .expect("python runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{python}:\n{stdout}\n{stderr}");
            assert!(stdout.contains("differ 0"), "{python}:\n{stdout}");
            eprintln!("{python}: {}", stdout.trim());
        }
        m.shutdown().unwrap();
    });
}

/// Calls a list and a dict of the multiproc server at `argv[1]` (authkey
/// `argv[2]` in hex) and of a CPython manager it starts with scalars of
/// every type; prints the calls whose outcomes differ, and their count.
const SCALAR_CALLS: &str = r#"
import math, sys
from multiprocessing.managers import SyncManager

SCALARS = [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -129, -2**31, 2**31 - 1, 2**31,
           2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, 0.0, -0.0, float('nan'), float('inf'),
           float('-inf'), 1.5, 1.0, '', 'a', 'h\u00e9llo', '\U0001f600', 'x' * 255, 'x' * 256,
           b'', b'k', b'x' * 255, b'x' * 256, '7f3a', 'append']

def outcome(f):
    try:
        r = f()
    except Exception as e:
        return ('err', type(e).__name__)
    if hasattr(r, '_getvalue'):
        r = r._getvalue()
    return ('ok', type(r).__name__, repr(r), math.copysign(1, r) if isinstance(r, float) else None)

def run(m):
    out = []
    l = m.list()
    d = m.dict()
    for v in SCALARS:
        out.append(('append', v, outcome(lambda: l.append(v))))
    for v in SCALARS:
        out.append(('index', v, outcome(lambda: l.index(v))))
        out.append(('count', v, outcome(lambda: l.count(v))))
        out.append(('contains', v, outcome(lambda: v in l)))
        out.append(('getitem', v, outcome(lambda: l[v])))
        out.append(('setitem', v, outcome(lambda: l.__setitem__(v, v))))
        out.append(('pop', v, outcome(lambda: l.pop(v))))
        out.append(('insert', v, outcome(lambda: l.insert(v, v))))
        out.append(('dset', v, outcome(lambda: d.__setitem__(v, v))))
        out.append(('dget', v, outcome(lambda: d.get(v))))
        out.append(('dget2', v, outcome(lambda: d.get(v, v))))
        out.append(('dgetitem', v, outcome(lambda: d[v])))
        out.append(('dcontains', v, outcome(lambda: v in d)))
        out.append(('dsetdefault', v, outcome(lambda: d.setdefault(v, 'z'))))
        out.append(('eq', v, outcome(lambda: l.__eq__(v))))
        out.append(('lt', v, outcome(lambda: l.__lt__(v))))
        out.append(('mul', v, outcome(lambda: l.__mul__(v) if not isinstance(v, int) or abs(v) < 4 else 'skip')))
        out.append(('remove', v, outcome(lambda: l.remove(v))))
        out.append(('dpop', v, outcome(lambda: d.pop(v))))
        out.append(('dpop2', v, outcome(lambda: d.pop(v, v))))
        out.append(('list', v, outcome(lambda: l._getvalue())))
        out.append(('dict', v, outcome(lambda: d.copy())))
    for v in SCALARS:
        out.append(('dset', v, outcome(lambda: d.__setitem__(v, repr(v)))))
    out.append(('dict', 'end', outcome(lambda: d.copy())))
    out.append(('list', 'end', outcome(lambda: l._getvalue())))
    return out

if __name__ == '__main__':
    address, key = sys.argv[1], bytes.fromhex(sys.argv[2])
    theirs = SyncManager(address=address, authkey=key)
    theirs.connect()
    ours = SyncManager()
    ours.start()
    try:
        a = run(theirs)
        b = run(ours)
    finally:
        ours.shutdown()
    bad = 0
    for x, y in zip(a, b):
        if x != y:
            bad += 1
            print('DIFF', x[0], repr(x[1]), 'multiproc:', x[2], 'cpython:', y[2])
    print('compared', len(a), 'differ', bad)
    sys.exit(1 if bad else 0)
"#;

/// Forks from several threads at once, each through the crate's fork
/// handlers (whose guards wait in one static slot): processes started and
/// joined on two threads, raw `fork`s on a third, `std::process::Command`
/// (which may `vfork` or `clone` without the handlers) on a fourth, the
/// arena used meanwhile on a fifth, listeners bound and dropped on a sixth
/// (three slots in all). Every child runs, every bind succeeds, nothing
/// hangs.
#[test]
fn threads_that_fork_at_once_each_get_their_own_guards() {
    let _serial = serial();
    watchdog("forks at once", LIMIT, || {
        const ROUNDS: u32 = 20;
        let v = multiproc::Value::new(0u32).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        let v = v.clone();
                        let mut p = Process::new(move || {
                            let mut g = v.lock().unwrap();
                            *g += 1;
                        });
                        p.start().unwrap();
                        assert_eq!(join(&p, LIMIT), 0);
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    // SAFETY: the child only exits.
                    let pid = unsafe { libc::fork() };
                    assert!(pid >= 0);
                    if pid == 0 {
                        // SAFETY: no destructor, no handler, in the child.
                        unsafe { libc::_exit(0) };
                    }
                    let mut status = 0;
                    // SAFETY: our own child, reaped once.
                    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                    assert_eq!(status, 0);
                }
            });
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    let status = std::process::Command::new("true").status().unwrap();
                    assert!(status.success());
                }
            });
            s.spawn(|| {
                for i in 0..ROUNDS * 10 {
                    let w = multiproc::Value::new(i).unwrap();
                    assert_eq!(w.get().unwrap(), i);
                }
            });
            // Listeners made and dropped meanwhile: their marks are made
            // and closed under the lock every fork holds (a mark a child
            // kept would make the next bind at the path fail).
            s.spawn(|| {
                let dir = common::TempDir::new("forks-at-once");
                let address = multiproc::conn::Address::Unix(dir.0.join("s"));
                for _ in 0..ROUNDS * 5 {
                    drop(multiproc::conn::Listener::bind(&address, None).unwrap());
                }
            });
        });
        assert_eq!(v.get().unwrap(), 2 * ROUNDS);
    });
}

/// A fork that fails (`EAGAIN`: the user's process limit, which root
/// escapes, so in a child that gives up root first): the closure is kept,
/// its captured value not dropped; with the limit raised, the retry runs
/// it. (glibc runs the fork handlers' `parent` half after a failed fork
/// too, so the guards of its `prepare` are let go.)
#[test]
fn a_start_whose_fork_fails_can_be_retried() {
    let _serial = serial();
    watchdog("fork fails", LIMIT, || {
        let mut helper = Process::new(|| {
            // SAFETY: a plain call, on this process's credentials.
            assert_eq!(unsafe { libc::setgid(65534) }, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::setuid(65534) }, 0);
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit to write.
            let got = unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) };
            assert_eq!(got, 0);
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: a valid rlimit, read only.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &none) }, 0);
            let (c, drops) = Counted::new(false);
            let mut p = Process::new(move || {
                let _kept = &c;
            });
            let failed = p.start();
            assert!(
                matches!(&failed, Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EAGAIN)),
                "{failed:?}"
            );
            assert_eq!(drops.load(Ordering::SeqCst), 0);
            assert_eq!(p.pid(), None);
            let again = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &again) }, 0);
            p.start().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0));
        });
        helper.start().unwrap();
        assert_eq!(join(&helper, LIMIT), 0);
    });
}

fn exit_with(code: i32) {
    std::process::exit(code);
}

/// This process's children whose parent is this process, by pid (from
/// `/proc`).
fn children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`: the fields after the last ')'.
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            after.split_whitespace().nth(1) == Some(&me.to_string())
        })
        .collect()
}

/// The fork server dies between starts (killed, by its pid: this test
/// made it): a start while no new one can be made fails and keeps the
/// call; the next starts a new server, which runs it.
#[test]
fn a_forkserver_start_after_the_server_died_can_be_retried() {
    let _serial = serial();
    watchdog("forkserver dies", LIMIT, || {
        let before = children();
        let mut first = Process::forkserver(exit_with, 3);
        first.start().unwrap();
        assert_eq!(join(&first, LIMIT), 3);
        let servers: Vec<u32> = children()
            .into_iter()
            .filter(|pid| !before.contains(pid))
            .collect();
        if servers.len() != 1 {
            // The server was started by another test of this binary (none
            // does) or is not this process's child: nothing to kill.
            return eprintln!("skipped: fork servers {servers:?}");
        }
        // SAFETY: a plain call, on the fork server this test started.
        assert_eq!(unsafe { libc::kill(servers[0] as i32, libc::SIGKILL) }, 0);
        let mut p = Process::forkserver(exit_with, 5);
        io_error(common::with_no_new_descriptors(|| p.start()));
        assert_eq!(p.pid(), None);
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), 5);
    });
}
