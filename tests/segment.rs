//! Named and anonymous segments across real processes; bad segments give
//! errors that say what is wrong; a full /dev/shm is an error, not SIGBUS.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{child, join, watchdog, TempName};
use multiproc::segment::{self, Segment};
use multiproc::{Array, Error, Lock, RawValue, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// Held by the test that calls `segment::clean()` (which removes every
/// stale segment of the machine) and by the tests whose own segments are
/// stale for a moment on purpose (a creator that exits before an opener
/// opens), so that the tests of this binary, which run at once, never
/// clean each other's segments away.
static CLEANING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cleaning() -> std::sync::MutexGuard<'static, ()> {
    CLEANING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{}{name}", segment::PREFIX)
}

#[test]
fn named_bytes_are_shared_and_unlinked() {
    watchdog("named bytes", LIMIT, || {
        let name = TempName::new("bytes");
        let seg = Segment::create(&name, 1000).unwrap();
        assert!(matches!(
            Segment::create(&name, 10),
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(seg.name(), Some(&*name.0));
        multiproc::scope(|s| {
            let c = child(s, || {
                let mine = Segment::open(&name).unwrap();
                assert_eq!(mine.len(), 1000);
                let at = mine.as_ptr().wrapping_add(999);
                // SAFETY: `at` is in bounds of the 1000-byte mapping; the
                // parent only reads after this child exits.
                unsafe { at.write(7) };
            });
            assert_eq!(join(&c, LIMIT), 0);
            let at = seg.as_ptr().wrapping_add(999);
            // SAFETY: `at` is in bounds of the 1000-byte mapping; the writer
            // has exited.
            assert_eq!(unsafe { at.read() }, 7);
            // create_or_open keeps the existing size.
            assert_eq!(Segment::create_or_open(&name, 5).unwrap().len(), 1000);
            Segment::unlink(&name).unwrap();
            assert!(matches!(Segment::open(&name), Err(Error::NotFound(_))));
            assert!(matches!(Segment::unlink(&name), Err(Error::NotFound(_))));
            // The mapping outlives the name.
            // SAFETY: `at`, in bounds of the mapping, which outlives the name.
            assert_eq!(unsafe { at.read() }, 7);
        });
    });
}

#[test]
fn anonymous_segment_is_inherited_by_fork() {
    watchdog("anonymous", LIMIT, || {
        let seg = Segment::anonymous(4096).unwrap();
        assert_eq!(seg.name(), None);
        multiproc::scope(|s| {
            let c = child(s, || {
                // SAFETY: in bounds; the parent reads only after the child exits.
                unsafe { seg.as_ptr().write(0xAB) }
            });
            assert_eq!(join(&c, LIMIT), 0);
            // SAFETY: in bounds; the writer has exited.
            assert_eq!(unsafe { seg.as_ptr().read() }, 0xAB);
        });
    });
}

#[test]
fn opening_as_the_wrong_thing_names_the_mismatch() {
    let name = TempName::new("mismatch");
    let _a = Array::create(&name, &[1i32, 2, 3]).unwrap();
    let e = Array::<f64>::open(&name).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    assert!(msg.contains("i32") && msg.contains("f64"), "{msg}");
    let e = Value::<i32>::open(&name).unwrap_err();
    assert!(
        matches!(e, Error::KindMismatch { .. }) && e.to_string().contains("Array"),
        "{e}"
    );
    assert!(matches!(Lock::open(&name), Err(Error::KindMismatch { .. })));
    assert!(matches!(
        Segment::open(&name),
        Err(Error::KindMismatch { .. })
    ));
    assert_eq!(
        Array::<i32>::open(&name).unwrap().to_vec().unwrap(),
        [1, 2, 3]
    );
    for bad in ["", "a/b", "white space", "../x"] {
        assert!(
            matches!(Value::<u8>::create(bad, 0), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
}

/// Writes a copy of a real segment's file, altered by `damage`, under a new name.
fn damaged_copy(tag: &str, damage: impl FnOnce(&mut Vec<u8>)) -> TempName {
    let good = TempName::new(&format!("{tag}-src"));
    drop(Value::create(&good, 5u32).unwrap());
    let mut bytes = std::fs::read(shm_path(&good)).unwrap();
    damage(&mut bytes);
    let bad = TempName::new(tag);
    std::fs::write(shm_path(&bad), bytes).unwrap();
    bad
}

#[test]
fn damaged_segments_are_refused_with_a_reason() {
    let truncated = damaged_copy("truncated", |b| b.truncate(100));
    let e = Value::<u32>::open(&truncated).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");

    let short = damaged_copy("short", |b| b.truncate(b.len() - 8));
    assert!(matches!(
        Value::<u32>::open(&short),
        Err(Error::Truncated { .. })
    ));

    let foreign = damaged_copy("foreign", |b| b[..8].copy_from_slice(b"NOTOURS!"));
    let e = Value::<u32>::open(&foreign).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { .. }) && e.to_string().contains("magic"),
        "{e}"
    );

    let newer = damaged_copy("version", |b| b[8] = 99);
    assert!(matches!(
        Value::<u32>::open(&newer),
        Err(Error::VersionMismatch { found: 99, .. })
    ));
}

#[test]
fn a_segment_whose_creator_died_mid_init_fails_fast() {
    // A dead pid: a child that has exited.
    let dead = multiproc::scope(|s| {
        let c = child(s, || {});
        assert_eq!(join(&c, LIMIT), 0);
        c.pid().unwrap()
    });
    let half = damaged_copy("half-built", |b| {
        b[12..16].copy_from_slice(&0u32.to_ne_bytes()); // state: creating
        b[60..64].copy_from_slice(&dead.to_ne_bytes()); // creator pid
    });
    let t = Instant::now();
    let e = Value::<u32>::open(&half).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    match e {
        Error::NotInitialised {
            creator_pid,
            creator_alive,
            ..
        } => {
            assert_eq!(creator_pid, dead);
            assert!(!creator_alive);
        }
        e => panic!("expected NotInitialised, got {e}"),
    }
}

#[test]
fn list_and_clean_find_segments_whose_users_are_gone() {
    watchdog("shm clean", LIMIT, || {
        let _cleaning = cleaning();
        let stale = TempName::new("stale");
        let live = TempName::new("live");
        let _kept = Value::create(&live, 1u8).unwrap();
        multiproc::scope(|s| {
            let c = child(s, || drop(Value::create(&stale, 2u8).unwrap()));
            assert_eq!(join(&c, LIMIT), 0);
            // A half-built segment whose builder died.
            let tmp = format!("/dev/shm/{}~tmp-{}-0", segment::PREFIX, c.pid().unwrap());
            std::fs::write(&tmp, b"partial").unwrap();

            let listed = segment::list().unwrap();
            let find = |n: &str| listed.iter().find(|s| s.name == n);
            let s = find(&stale).expect("stale listed");
            assert!(!s.alive && s.is_stale());
            assert_eq!(s.info.as_ref().unwrap().creator_pid, c.pid().unwrap());
            let l = find(&live).expect("live listed");
            assert!(l.alive && !l.is_stale());

            let removed: Vec<String> = segment::clean()
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect();
            assert!(removed.contains(&stale.0), "{removed:?}");
            assert!(!removed.contains(&live.0));
            assert!(!std::path::Path::new(&tmp).exists());
            assert!(matches!(Value::<u8>::open(&stale), Err(Error::NotFound(_))));
            assert_eq!(Value::<u8>::open(&live).unwrap().get().unwrap(), 1);
        });
    });
}

#[test]
fn opener_registration_keeps_a_segment_alive_for_clean() {
    watchdog("attach", LIMIT, || {
        let _cleaning = cleaning();
        let name = TempName::new("attached");
        let go = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            // The creator exits; an opener that is still running keeps it in use.
            let c = child(s, || drop(Value::create(&name, 0u8).unwrap()));
            assert_eq!(join(&c, LIMIT), 0);
            let opener = child(s, || {
                let _v = Value::<u8>::open(&name).unwrap();
                go.atomic().store(1, SeqCst);
                assert!(common::wait_until(LIMIT, || go.atomic().load(SeqCst) == 2));
            });
            assert!(common::wait_until(LIMIT, || go.atomic().load(SeqCst) == 1));
            let entry = segment::list()
                .unwrap()
                .into_iter()
                .find(|s| s.name == name.0)
                .unwrap();
            assert!(entry.alive, "{entry:?}");
            assert_eq!(entry.info.unwrap().attached_pids, [opener.pid().unwrap()]);
            go.atomic().store(2, SeqCst);
            assert_eq!(join(&opener, LIMIT), 0);
            let entry = segment::list()
                .unwrap()
                .into_iter()
                .find(|s| s.name == name.0)
                .unwrap();
            assert!(
                entry.is_stale(),
                "the opener deregistered on drop: {entry:?}"
            );
        });
    });
}

/// With /dev/shm limited to 1 MiB (a private tmpfs in a mount namespace of
/// a child process), creating a 2 MiB segment is an error, not a SIGBUS.
#[test]
fn full_dev_shm_is_an_error() {
    watchdog("full /dev/shm", LIMIT, || {
        let status = RawValue::new(0u32).unwrap();
        multiproc::scope(|s| {
            let c = child(s, || {
                if !common::private_dev_shm(Some("1m")) {
                    status.atomic().store(2, SeqCst);
                    return;
                }
                let e = Segment::create("full-test", 2 << 20).unwrap_err();
                assert!(matches!(e, Error::NoSpace { .. }), "{e}");
                assert!(e.to_string().contains("/dev/shm"), "{e}");
                // Nothing is left behind, and small segments still fit.
                assert!(matches!(
                    Segment::open("full-test"),
                    Err(Error::NotFound(_))
                ));
                let v = Value::create("small-test", 1u64).unwrap();
                assert_eq!(v.get().unwrap(), 1);
                status.atomic().store(1, SeqCst);
            });
            assert_eq!(join(&c, LIMIT), 0);
            match status.atomic().load(SeqCst) {
            1 => {}
            2 => eprintln!("SKIPPED full_dev_shm_is_an_error: cannot mount a private tmpfs here (needs CAP_SYS_ADMIN)"),
            s => panic!("child ended in state {s}"),
        }
        });
    });
}

/// Out of address space (`RLIMIT_AS` just above what a child uses), mapping
/// a segment fails with `ENOMEM`: that is `NoSpace`, as documented, like a
/// full /dev/shm, not an I/O error.
#[test]
fn out_of_address_space_is_no_space() {
    watchdog("no address space", LIMIT, || {
        multiproc::scope(|s| {
            let c = child(s, || {
                let status = std::fs::read_to_string("/proc/self/status").unwrap();
                let kib: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmSize:"))
                    .and_then(|v| v.trim().strip_suffix("kB"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap();
                let limit = (kib + 2048) * 1024;
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: setrlimit reads a valid struct.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
                let e = Segment::anonymous(16 << 20).unwrap_err();
                assert!(
                    matches!(&e, Error::NoSpace { source, .. } if source.raw_os_error() == Some(libc::ENOMEM)),
                    "{e}"
                );
                // What fits still works.
                assert!(Segment::anonymous(4096).is_ok());
            });
            assert_eq!(join(&c, LIMIT), 0);
        })
    });
}

/// Sizes no machine here can give: an error at once (`NoSpace`), never an
/// attempt to reserve them (an anonymous segment's file has no size limit
/// of its own, so reserving it would run the machine out of memory).
#[test]
fn more_memory_than_the_machine_has_is_no_space() {
    watchdog("impossible sizes", LIMIT, || {
        for size in [1usize << 40, (1 << 43) + 8] {
            match Segment::anonymous(size) {
                Err(Error::NoSpace { .. }) => {}
                other => panic!("{size}: {:?}", other.map(|s| s.len())),
            }
        }
        for len in [(1usize << 40) + 1, usize::MAX / 16] {
            assert!(multiproc::RawArray::<u64>::new(len).is_err(), "{len}");
            assert!(multiproc::Array::<u64>::new(len).is_err(), "{len}");
        }
        for len in [usize::MAX, usize::MAX / 2] {
            assert!(multiproc::RawArray::<u64>::new(len).is_err(), "{len}");
        }
    });
}
