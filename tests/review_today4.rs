//! Review of 2026-12-02's changes: a robust mutex's last handle dropped
//! while a thread of this process holds it keeps its memory, but only when
//! the mutex was locked through that handle (a named object opened and
//! dropped over and over while another thread holds it, a normal loop,
//! must not keep a mapping each time); and a manager server's `update`
//! of a dict a hand-made pickle writes (keys set twice) against CPython's.

mod common;

use std::time::Duration;

use common::{join, static_child, watchdog, TempName};
use multiproc::{Condition, Lock, RLock, RawArray};

const LIMIT: Duration = Duration::from_secs(120);

/// The mappings of this process.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

/// A named lock, rlock or condition that a thread of this process holds
/// (or waits on) through one handle, opened through another and dropped,
/// over and over, as threads that each open the object for a job do: the
/// dropped handles held nothing, so their mappings must go. They were all
/// kept for the life of the process (the mutex was held by a thread of the
/// process), until opening failed for want of mappings.
#[test]
fn a_named_lock_opened_and_dropped_while_another_handle_holds_it_keeps_no_mapping() {
    watchdog("named lock reopened while held", LIMIT, || {
        let names = [
            TempName::new("reopen-held-lock"),
            TempName::new("reopen-held-rlock"),
            TempName::new("reopen-held-cond"),
        ];
        let theirs: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
        let user = static_child(move || {
            const TIMES: usize = 2000;
            let lock = Lock::create(&theirs[0]).unwrap();
            let rlock = RLock::create(&theirs[1]).unwrap();
            let cond = Condition::create(&theirs[2]).unwrap();
            let (go, release) = std::sync::mpsc::channel::<()>();
            let (held, is_held) = std::sync::mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                let g = lock.lock().unwrap();
                rlock.acquire().unwrap();
                held.send(()).unwrap();
                release.recv_timeout(LIMIT).unwrap();
                rlock.release().unwrap();
                drop(g);
            });
            is_held.recv_timeout(LIMIT).unwrap();
            let before = mappings();
            for _ in 0..TIMES {
                drop(Lock::open(&theirs[0]).unwrap());
                drop(RLock::open(&theirs[1]).unwrap());
            }
            let grown = mappings().saturating_sub(before);
            go.send(()).unwrap();
            holder.join().unwrap();
            assert!(
                grown < TIMES / 10,
                "{grown} mappings kept by {TIMES} handles that held nothing"
            );
            // A condition's places for its waiters are mutexes too: one held
            // by a waiter of this process.
            let waiting = cond.clone();
            let (woken, wake) = std::sync::mpsc::channel::<()>();
            let waiter = std::thread::spawn(move || {
                let mut g = waiting.lock().unwrap();
                woken.send(()).unwrap();
                g.wait_timeout(LIMIT).unwrap();
            });
            wake.recv_timeout(LIMIT).unwrap();
            // The waiter holds its place once it waits: it let the lock go.
            drop(cond.lock().unwrap());
            let before = mappings();
            for _ in 0..TIMES / 4 {
                drop(Condition::open(&theirs[2]).unwrap());
            }
            let grown = mappings().saturating_sub(before);
            cond.lock().unwrap().notify_all();
            waiter.join().unwrap();
            assert!(
                grown < TIMES / 40,
                "{grown} mappings kept by conditions that held nothing"
            );
        });
        assert_eq!(join(&user, LIMIT), 0);
        drop(names);
    });
}

/// A recursive mutex is linked into its holder's robust list through the
/// mapping its first acquire used, and unlinked only by the last release:
/// an `RLock` opened twice by name, acquired through the first opening,
/// again through the second, released once through the first, is still
/// linked through the first's mapping. Dropping that opening must keep
/// its mapping: the thread's next lock of a robust mutex writes through
/// it (into the cells of a `RawArray` made in its place, here).
#[test]
fn an_rlock_linked_through_one_opening_and_released_through_it_keeps_its_mapping() {
    watchdog("rlock linked through one opening", LIMIT, || {
        let name = TempName::new("linked-opening");
        let cells_name = TempName::new("linked-opening-cells");
        let (their_name, their_cells) = (name.0.clone(), cells_name.0.clone());
        let user = static_child(move || {
            let first = RLock::create(&their_name).unwrap();
            let second = RLock::open(&their_name).unwrap();
            first.acquire().unwrap();
            second.acquire().unwrap();
            first.release().unwrap();
            drop(first);
            // Likely at the address just unmapped.
            let cells = RawArray::create(&their_cells, &[7u64; 16]).unwrap();
            let lock = Lock::new().unwrap();
            drop(lock.lock().unwrap());
            second.release().unwrap();
            assert_eq!(cells.read(..).unwrap(), [7; 16], "nobody wrote the cells");
        });
        assert_eq!(join(&user, LIMIT), 0);
        drop((name, cells_name));
    });
}

/// Sends `update` calls whose dict a hand-made pickle writes (a key set
/// twice, equal keys of other types, NaN keys, proxies as values set
/// twice) straight on a proxy's connection, and prints what each left.
const UPDATE_PROGRAM: &str = r##"
import struct, sys
from multiprocessing.managers import SyncManager

m = SyncManager(address=sys.argv[1], authkey=sys.argv[2].encode())
m.connect()

def s(x):
    b = x.encode()
    return b"X" + struct.pack("<I", len(b)) + b
def i(n):
    return b"J" + struct.pack("<i", n)
def f(x):
    return b"G" + struct.pack(">d", x)
TRUE = b"\x88"
NAN = f(float("nan"))

def update(d, items):
    d._connect() if not hasattr(d._tls, "connection") else None
    conn = d._tls.connection
    body = b"}(" + b"".join(k + v for k, v in items) + b"u"
    req = b"\x80\x02(" + s(d._id) + s("update") + body + b"\x85}t."
    conn.send_bytes(req)
    kind, result = conn.recv()
    return kind if kind == "#RETURN" else kind + " " + str(result).strip().splitlines()[-1]

def case(name, start, items):
    d = m.dict(start)
    r = update(d, items)
    print("%s: %s %r" % (name, r, [(type(k).__name__, k, v) for k, v in d.items()]))

case("twice", {}, [(s("a"), i(1)), (s("b"), i(2)), (s("a"), i(3))])
case("kept-first", {"b": 0}, [(s("a"), i(1)), (s("b"), i(2)), (s("a"), i(3))])
case("mixed", {}, [(i(1), s("x")), (f(1.0), s("y")), (TRUE, s("z"))])
case("mixed-in-target", {1.0: 0}, [(TRUE, s("x")), (i(1), s("y"))])
case("nested", {}, [(s("n"), b"}(" + s("x") + i(1) + s("x") + i(2) + b"u"), (s("n"), b"}(" + s("y") + i(1) + s("y") + i(2) + b"u")])
case("nan-two", {}, [(NAN, i(1)), (NAN, i(2))])
case("bool-int-keys", {}, [(TRUE, i(1)), (i(1), i(2)), (TRUE, i(3)), (i(2), i(4))])

import gc, pickle
def proxy(p):
    return pickle.dumps(p, protocol=2)[2:-1]
base = m._number_of_objects()
d = m.dict()
p1, p2 = m.list([1]), m.list([2])
r = update(d, [(s("p"), proxy(p1)), (s("p"), proxy(p2))])
del p1, p2
gc.collect()
print("proxies-twice: %s %d" % (r, len(d)))
# CPython's server keeps no reference for a proxy stored in a value (a
# known difference); ours keeps the dict's and the value's.
print("objects: %d" % (m._number_of_objects() - base))
"##;

/// What `UPDATE_PROGRAM` prints against the server at `path`.
fn update_answers(python: &str, path: &std::path::Path) -> String {
    let mut command = std::process::Command::new(python);
    command
        .args(["-c", UPDATE_PROGRAM, path.to_str().unwrap(), KEY])
        .env_remove("PYTHONPATH");
    let (status, out, err) = common::run_with_deadline(&mut command, b"", LIMIT);
    assert!(status.success(), "{python}: {status}\n{out}\n{err}");
    out
}

const KEY: &str = "review today4 key";

/// The `objects:` line of `out`, and the other lines.
fn objects_line(out: &str) -> (String, Vec<&str>) {
    let (objects, rest): (Vec<&str>, Vec<&str>) =
        out.lines().partition(|l| l.starts_with("objects: "));
    (objects.concat(), rest)
}

/// An `update` whose dict a hand-made pickle writes (a key set twice,
/// equal keys of other types, NaNs, proxies as the values of a key set
/// twice) leaves the dict as CPython's own manager does, and the server
/// keeps a reference for the value kept only.
#[test]
fn an_update_of_a_hand_made_dict_ends_as_cpythons() {
    let Some((_, python)) = common::cpython::pyenv_pythons()
        .into_iter()
        .find(|(v, _)| *v >= 12)
    else {
        println!("no CPython 3.12+ under pyenv: nothing to compare with");
        return;
    };
    watchdog("update of a hand-made dict", LIMIT, || {
        let (server, ours, conn) = common::serve_manager("review4-update", KEY.as_bytes());
        drop(conn);
        let reference =
            common::cpython::CpythonServer::start(&python, KEY, "review4-update", LIMIT);
        let want = update_answers(&python, reference.path());
        drop(reference);
        let got = update_answers(&python, &ours);
        let mut m = multiproc::Manager::connect(
            multiproc::conn::Address::Unix(ours.clone()),
            KEY.as_bytes(),
        )
        .unwrap();
        m.shutdown().unwrap();
        server.join().unwrap();
        let _ = std::fs::remove_file(&ours);
        let (got_objects, got) = objects_line(&got);
        let (_, want) = objects_line(&want);
        assert_eq!(got, want);
        // The dict, and the list of the value set last: the other's
        // reference was given back with it.
        assert_eq!(got_objects, "objects: 2");
    });
}
