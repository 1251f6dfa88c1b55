//! Fourth-round attack on the soundness of the shared layer: what a named
//! segment's bytes (written by a broken or hostile process, or an older
//! build) can make the safe API hand out.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use common::{watchdog, TempName};
use multiproc::{segment, Array, LockError, RLock, Value};

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
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open the segment's file");
    file.seek(SeekFrom::Start(DATA_OFFSET)).unwrap();
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
