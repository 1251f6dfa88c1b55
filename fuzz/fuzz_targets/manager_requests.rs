//! Arbitrary bytes sent to a real manager server over an authenticated
//! connection, as frames: whatever they decode to (or fail to), the server
//! never dies and keeps serving the next client.
#![no_main]

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use multiproc::conn::connect;
use multiproc::manager::Manager;

fn manager() -> &'static Manager {
    static M: OnceLock<Manager> = OnceLock::new();
    M.get_or_init(|| {
        // libFuzzer's main, unlike Rust's, leaves SIGPIPE fatal; the raw
        // writes below may hit a connection the server has closed.
        // SAFETY: setting a signal's disposition to "ignore".
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        Manager::start().expect("start the manager")
    })
}

fuzz_target!(|data: &[u8]| {
    let m = manager();
    let conn = connect(m.address(), Some(m.authkey())).expect("the server accepts clients");
    // SAFETY: borrowing the connection's descriptor for raw writes; the
    // File is never dropped, so the descriptor stays the connection's.
    let mut raw = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(conn.as_raw_fd()) });
    // Length-prefixed frames around arbitrary content, and the raw bytes.
    let _ = raw.write_all(&(data.len() as u32).to_le_bytes());
    let _ = raw.write_all(data);
    let _ = raw.write_all(data);
    drop(conn);
    // The server still serves (a fresh client on a fresh connection).
    assert!(m.number_of_objects().is_ok(), "the manager stopped serving");
});
