//! Fourth-round attack on the soundness of the shared layer: what a named
//! segment's bytes (written by a broken or hostile process, or an older
//! build) can make the safe API hand out (a second guard, a frame lent
//! twice), what the copy of a guard that a forked descendant inherits can
//! release, where over-aligned cells are placed, and (ignored: a known
//! limit) a leaked guard's reference that a child keeps past the lock.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;
use std::time::Duration;

use common::{
    fork_as, join, squat_outcome, stage_in, static_child, wait_until, watchdog, TempName,
};
use multiproc::cell::ValueGuard;
use multiproc::queue::{Bytes, Queue};
use multiproc::sync::{Condition, ConditionGuard, LockGuard};
use multiproc::{segment, Array, Lock, LockError, RLock, RawValue, Value};

const LIMIT: Duration = Duration::from_secs(60);

/// Where the data area of a named segment begins in its file (the
/// header's size).
const DATA_OFFSET: u64 = 256;

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{}{name}", segment::PREFIX)
}

/// The bytes of the (free) mutex at the start of a named object's data.
fn mutex_bytes(name: &str) -> Vec<u8> {
    let mut file = std::fs::File::open(shm_path(name)).expect("open the segment's file");
    file.seek(SeekFrom::Start(DATA_OFFSET)).unwrap();
    let mut bytes = vec![0u8; std::mem::size_of::<libc::pthread_mutex_t>()];
    file.read_exact(&mut bytes).unwrap();
    bytes
}

/// Overwrites the mutex at the start of a named object's data.
fn write_mutex(name: &str, bytes: &[u8]) {
    write_mutex_at(name, 0, bytes);
}

/// Overwrites a mutex `offset` bytes into a named object's data.
fn write_mutex_at(name: &str, offset: u64, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open the segment's file");
    file.seek(SeekFrom::Start(DATA_OFFSET + offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// A named value whose lock's bytes say "recursive" (copied from a free
/// named `RLock`: another process's scribble, or a crafted file) must not
/// give one thread two guards, two `&mut` to the same cells: the second
/// lock of the thread is refused as for an error-checking lock.
#[test]
fn a_value_whose_lock_was_made_recursive_never_gives_two_guards() {
    watchdog("recursive value lock", LIMIT, || {
        let value_name = TempName::new("recval");
        let rlock_name = TempName::new("recrl");
        let value = Value::create(&value_name.0, 7u64).unwrap();
        let array_name = TempName::new("recarr");
        let array = Array::create(&array_name.0, &[1u8, 2, 3]).unwrap();
        let rlock = RLock::create(&rlock_name.0).unwrap();
        let recursive = mutex_bytes(&rlock_name.0);
        assert_ne!(
            recursive,
            mutex_bytes(&value_name.0),
            "another kind of mutex"
        );
        write_mutex(&value_name.0, &recursive);
        write_mutex(&array_name.0, &recursive);
        let opened = Value::<u64>::open(&value_name.0).unwrap();
        for v in [&value, &opened] {
            let mut first = v.lock().unwrap();
            let second = v.lock();
            assert!(
                matches!(second, Err(LockError::Deadlock)),
                "a second guard: {second:?}"
            );
            drop(second);
            *first += 1;
            drop(first);
            // Free again: the refused lock took nothing.
            assert!(v.try_lock().is_ok());
        }
        let first = array.lock().unwrap();
        assert!(matches!(array.try_lock(), Err(LockError::Deadlock)));
        assert!(matches!(array.get(0), Err(multiproc::Error::Deadlock)));
        drop(first);
        assert_eq!(array.get(0).unwrap(), 1);
        assert_eq!(value.get().unwrap(), 9);
        drop(rlock);
    });
}

/// A named byte queue whose two locks' bytes say "recursive" must not
/// let a closure that holds one end's lock take it again: a `put_with`
/// inside a `put_with` would lend a second `&mut` to the same free bytes
/// of the ring, a `get_with` inside a `get_with` the same frame twice
/// (and consume it twice).
#[test]
fn a_queue_whose_locks_were_made_recursive_never_lends_a_frame_twice() {
    watchdog("recursive queue locks", LIMIT, || {
        let queue_name = TempName::new("recq");
        let rlock_name = TempName::new("recqrl");
        let q = Queue::<Bytes>::create(&queue_name.0, 0, 4096).unwrap();
        let _rlock = RLock::create(&rlock_name.0).unwrap();
        let recursive = mutex_bytes(&rlock_name.0);
        // The producers' mutex, then the consumers' on the next 64 bytes.
        write_mutex_at(&queue_name.0, 0, &recursive);
        write_mutex_at(&queue_name.0, 64, &recursive);
        let mut inner_put = None;
        q.put_with(4, |outer| {
            inner_put = Some(q.put_with(4, |inner| inner.copy_from_slice(b"in!!")));
            outer.copy_from_slice(b"out!");
        })
        .unwrap();
        let inner_put = inner_put.unwrap();
        assert!(
            matches!(inner_put, Err(multiproc::Error::Deadlock)),
            "a put inside a put: {inner_put:?}"
        );
        q.put_bytes(b"next").unwrap();
        let mut inner_get = None;
        let outer = q
            .get_with(|frame| {
                inner_get = Some(q.get_with(|frame| frame.to_vec()));
                frame.to_vec()
            })
            .unwrap();
        assert_eq!(outer, b"out!");
        let inner_get = inner_get.unwrap();
        assert!(
            matches!(inner_get, Err(multiproc::Error::Deadlock)),
            "a get inside a get: {inner_get:?}"
        );
        assert_eq!(q.get_bytes().unwrap(), b"next");
        assert!(q.try_get_bytes().is_err());
    });
}

/// The tests take pids by writing `ns_last_pid`: one at a time.
static PIDS: Mutex<()> = Mutex::new(());

/// How long a forked helper waits for the next stage before it gives up.
const STAGE_WAIT: Duration = Duration::from_secs(60);

/// Stages of the reused-pid test, in a word every process sees.
const SQUAT: u32 = 1;
const KEPT: u32 = 2;
const TWO_GUARDS: u32 = 3;
const NO_PID: u32 = 4;
const OTHER: u32 = 5;

/// A guard of the lock that a value shares, of one of the three kinds.
#[allow(dead_code)]
enum Held<'a> {
    Cells(ValueGuard<'a, u64>),
    Lock(LockGuard<'a>),
    Condition(ConditionGuard<'a>),
}

/// A process holding the lock of a value (through the value's guard, the
/// lock's own, or a condition's over it) forks a copy of itself that
/// keeps the guard, releases the lock and dies. A descendant of the copy
/// that gets the dead process's pid (so the thread id the lock records)
/// locks the value, then drops the copy of the guard it inherited: that
/// must not release the lock it holds now, or its next lock of the value
/// is a second guard, a second `&mut` to the cells.
fn an_inherited_guard_never_releases_the_lock_of_a_reused_pid(
    kind: &str,
    take: for<'a> fn(&'a Value<u64>, &'a Lock, &'a Condition) -> Held<'a>,
) {
    let _one = PIDS.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(kind, Duration::from_secs(120), || {
        let lock = Lock::new().unwrap();
        let v = Value::with_lock(0u64, &lock).unwrap();
        let cond = Condition::with_lock(&lock).unwrap();
        let stage = RawValue::new(0u32).unwrap();
        let st = stage.clone();
        let holder = static_child(move || {
            let held = take(&v, &lock, &cond);
            let me = std::process::id();
            // SAFETY: the forked child runs the code below, then ends
            // without exit handlers.
            if unsafe { libc::fork() } == 0 {
                if stage_in(&st, &[SQUAT], STAGE_WAIT).is_some() {
                    let took = fork_as(me, || {
                        let outcome = match v.lock() {
                            Ok(mut mine) => {
                                drop(held);
                                let outcome = match v.try_lock() {
                                    Ok(_) => TWO_GUARDS,
                                    Err(LockError::Deadlock) => KEPT,
                                    Err(_) => OTHER,
                                };
                                *mine += 1;
                                outcome
                            }
                            Err(_) => OTHER,
                        };
                        st.atomic().store(outcome, SeqCst);
                    });
                    if !took {
                        st.atomic().store(NO_PID, SeqCst);
                    }
                }
                // SAFETY: ending the forked child.
                unsafe { libc::_exit(0) };
            }
            drop(held);
        });
        assert_eq!(join(&holder, Duration::from_secs(60)), 0);
        let Some(outcome) = squat_outcome(&stage, [SQUAT, NO_PID], "the holder's", STAGE_WAIT)
        else {
            return;
        };
        assert_eq!(outcome, KEPT, "{kind}: 3 is a second guard");
    });
}

#[test]
fn an_inherited_cell_guard_never_releases_the_lock_of_a_reused_pid() {
    an_inherited_guard_never_releases_the_lock_of_a_reused_pid("a cell guard", |v, _, _| {
        Held::Cells(v.lock().unwrap())
    });
}

#[test]
fn an_inherited_lock_guard_never_releases_the_lock_of_a_reused_pid() {
    an_inherited_guard_never_releases_the_lock_of_a_reused_pid("a lock guard", |_, l, _| {
        Held::Lock(l.lock().unwrap())
    });
}

#[test]
fn an_inherited_condition_guard_never_releases_the_lock_of_a_reused_pid() {
    an_inherited_guard_never_releases_the_lock_of_a_reused_pid("a condition guard", |_, _, c| {
        Held::Condition(c.lock().unwrap())
    });
}

/// An element aligned beyond a page.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(8192))]
struct TwoPages([[u8; 4096]; 2]);

/// Anonymous cells of an element aligned beyond the arena's blocks and
/// beyond a page are placed aligned (a `&T` to a misaligned one would be
/// undefined behaviour): with a lock of their own or another's, and raw.
#[test]
fn cells_aligned_beyond_a_page_are_placed_aligned() {
    let aligned = |p: *const TwoPages| p as usize % std::mem::align_of::<TwoPages>() == 0;
    let page = TwoPages([[7; 4096]; 2]);
    let lock = Lock::new().unwrap();
    let value = Value::new(page).unwrap();
    assert!(aligned(&*value.lock().unwrap()));
    let shared = Value::with_lock(page, &lock).unwrap();
    assert!(aligned(&*shared.lock().unwrap()));
    for array in [
        Array::from_slice(&[page; 3]).unwrap(),
        Array::from_slice_with_lock(&[page; 3], &lock).unwrap(),
    ] {
        let guard = array.lock().unwrap();
        assert!(guard.iter().all(|p| aligned(p) && p.0[1][4095] == 7));
    }
    let raw = multiproc::RawArray::from_slice(&[page; 2]).unwrap();
    assert_eq!(raw.get(1).unwrap().0[0][0], 7);
    assert_eq!(multiproc::RawValue::new(page).unwrap().get().0[1][0], 7);
}

/// Known limit, not fixed (see "Leaked guards" at `CellGuard`, and the
/// scope's "Not covered"): a reference taken through a leaked guard is
/// `'static`, so a `Process::new` closure may carry it into a child; the
/// process that holds the lock then ends without waiting for that child
/// (here `abort`, safe code; a kill does the same), the kernel releases
/// its robust lock, and the next locker's guard is a second `&mut` to
/// cells that the child still writes through its copy.
#[test]
#[ignore = "known limit: a leaked guard's reference in a child outlives the lock"]
fn a_leaked_guards_reference_in_a_child_dies_with_the_lock() {
    watchdog("a leaked guard's reference in a child", LIMIT, || {
        let v: &'static Value<u64> = Box::leak(Box::new(Value::new(0).unwrap()));
        let writer_pid = RawValue::new(0u32).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        let (theirs, st) = (writer_pid.clone(), stop.clone());
        let holder = static_child(move || {
            let guard: &'static mut ValueGuard<'static, u64> =
                Box::leak(Box::new(v.lock().unwrap()));
            let cells: &'static mut u64 = guard;
            let mut writer = multiproc::Process::new(move || {
                while st.atomic().load(SeqCst) == 0 {
                    *std::hint::black_box(&mut *cells) += 1;
                }
            });
            writer.start().unwrap();
            theirs.atomic().store(writer.pid().unwrap(), SeqCst);
            std::process::abort();
        });
        let _ = join(&holder, LIMIT);
        let guard = match v.lock_recovering_timeout(LIMIT) {
            Ok(g) => g,
            Err(multiproc::RecoverableLockError::OwnerDied(g)) => g,
            Err(e) => panic!("{e:?}"),
        };
        let seen = *guard;
        let changed = wait_until(Duration::from_secs(2), || {
            *std::hint::black_box(&*guard) != seen
        });
        stop.atomic().store(1, SeqCst);
        let pid = writer_pid.atomic().load(SeqCst);
        if pid != 0 {
            // SAFETY: signals the writer, an orphan of this test's child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        assert!(!changed, "another process wrote the cells under this guard");
    });
}
