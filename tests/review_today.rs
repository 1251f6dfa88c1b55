//! Review of the day's changes outside the Manager: the listener's socket
//! file handed to a forked child, fork servers and Ctrl-C, the manager
//! server's signal handlers, barriers by pid and start time.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use multiproc::conn::{Address, Listener};
use multiproc::Process;

const LIMIT: Duration = Duration::from_secs(60);

/// A socket path unique to this test process, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> Self {
        TempPath(std::env::temp_dir().join(format!("mp-today-{tag}-{}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ------------------------------------------------- listener's socket file

/// Makes `pidfd_open` fail with ENOSYS in this process and its children
/// (a seccomp filter, as a container's may be): a fork succeeds, and the
/// start fails after it.
fn refuse_pidfd_open() {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    let filter = [
        // The syscall number, at offset 0 of seccomp_data.
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_pidfd_open as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with plain integer arguments for this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        0
    );
    // SAFETY: `prog` points at `filter`, both alive for the call; the
    // kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}

#[test]
fn a_listener_moved_into_a_child_that_fails_to_start_removes_its_file() {
    let path = TempPath::new("failed-start");
    let inner = path.0.clone();
    let p = common::static_child(move || {
        let listener = Listener::bind(&Address::Unix(inner.clone()), None).unwrap();
        assert!(inner.exists());
        refuse_pidfd_open();
        let mut child = Process::new(move || drop(listener));
        let err = child.start().unwrap_err();
        assert!(err.to_string().contains("pidfd_open"), "{err}");
        // The child never ran: the listener is still this process's.
        assert!(!inner.exists(), "socket file left behind by a failed start");
    });
    assert_eq!(common::join(&p, LIMIT), 0);
    assert!(!path.0.exists());
}

#[test]
fn a_permit_moved_into_a_child_that_fails_to_start_is_given_back() {
    let p = common::static_child(|| {
        let sem = multiproc::Semaphore::new(1).unwrap();
        refuse_pidfd_open();
        multiproc::scope(|s| {
            let permit = sem.permit();
            let mut child = s.process(move || drop(permit));
            let err = child.start().unwrap_err();
            assert!(err.to_string().contains("pidfd_open"), "{err}");
        });
        assert_eq!(sem.value(), 1, "permit lost by a failed start");
    });
    assert_eq!(common::join(&p, LIMIT), 0);
}
