//! Fourth-round attack on named segments: what another local user (or
//! program) can put in `/dev/shm` under a name this crate will open.

mod common;

use std::ffi::CString;
use std::time::Duration;

use common::{watchdog, TempName};
use multiproc::segment::{self, Segment};
use multiproc::{Lock, Value};

const LIMIT: Duration = Duration::from_secs(30);

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{}{name}", segment::PREFIX)
}

/// A FIFO squatting a segment's name (`/dev/shm` is writable by every
/// user): opening, creating-or-opening and listing must not wait for a
/// writer that never comes. Python's `shm_open` does not wait either.
#[test]
fn a_fifo_under_a_segment_name_is_an_error_not_a_hang() {
    watchdog("a FIFO in /dev/shm", LIMIT, || {
        let name = TempName::new("fifo");
        let path = CString::new(shm_path(&name)).unwrap();
        // SAFETY: a NUL-terminated path; makes a FIFO, nothing else.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        assert!(Value::<u64>::open(&name).is_err());
        assert!(Value::create_or_open(&name, 1u64).is_err());
        assert!(Lock::create_or_open(&name).is_err());
        assert!(Segment::open(&name).is_err());
        let listed = segment::list().unwrap();
        let found = listed.iter().find(|s| s.name == name.0);
        assert!(found.is_none_or(|s| s.info.is_err() && !s.is_stale()));
    });
}

/// A symbolic link under a segment's name is not followed (glibc's
/// `shm_open`, and so Python's shared memory, opens with `O_NOFOLLOW`):
/// it could lead an opener to any file of its user's.
#[test]
fn a_symlink_under_a_segment_name_is_not_followed() {
    watchdog("a symlink in /dev/shm", LIMIT, || {
        let real = TempName::new("real");
        let link = TempName::new("link");
        let made = Value::create(&real, 5u64).unwrap();
        std::os::unix::fs::symlink(shm_path(&real), shm_path(&link)).unwrap();
        assert!(Value::<u64>::open(&link).is_err());
        assert!(Value::create_or_open(&link, 7u64).is_err());
        assert_eq!(made.get().unwrap(), 5);
    });
}

/// Another user can create files in `/dev/shm` under any free name,
/// including the temporary name a creator builds a segment under before
/// publishing it. Squatting the temporary names this process would use
/// (its pid is no secret) must not stop it from creating a segment under
/// a name nobody squats.
#[test]
fn squatted_temporary_names_do_not_stop_a_create() {
    watchdog("squatted temporary names", LIMIT, || {
        let squats: Vec<String> = (0..2000)
            .map(|seq| {
                format!(
                    "/dev/shm/{}~tmp-{}-{seq}",
                    segment::PREFIX,
                    std::process::id()
                )
            })
            .collect();
        for s in &squats {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(s);
        }
        let name = TempName::new("squatted-tmp");
        let made = Value::create(&name, 3u32);
        for s in &squats {
            let _ = std::fs::remove_file(s);
        }
        assert_eq!(made.unwrap().get().unwrap(), 3);
    });
}
