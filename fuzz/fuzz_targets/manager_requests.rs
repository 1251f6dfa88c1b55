//! Arbitrary bytes sent to a real manager server over an authenticated
//! connection, as frames (Python's framing, whose payloads the server
//! unpickles as requests): whatever they decode to (or fail to), the
//! server never dies and keeps serving the next client.
#![no_main]

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use multiproc::conn::{connect, frame};
use multiproc::Manager;

/// A manager server of this process's (`Manager::start`: it removes its
/// socket file when the fuzzer exits), spoken to over the raw wire as a
/// Python client speaks to it.
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

/// Whether the server answers `(None, 'number_of_objects', (), {})`.
fn serves(m: &Manager) -> Result<(), multiproc::Error> {
    let mut conn = connect(m.address(), Some(m.authkey()))?;
    conn.send_bytes(b"\x80\x02(NX\x11\x00\x00\x00number_of_objects)}t.")?;
    let reply = conn.recv_bytes()?;
    assert!(reply.windows(7).any(|w| w == b"#RETURN"), "{reply:?}");
    Ok(())
}

/// Whether a frame of `stream` might ask for a shutdown: a request
/// `(None, 'shutdown', (), {})` names the method as a string, however it is
/// pickled (any string opcode, memoized or not), so a frame that never
/// spells it cannot be one. (Those that do are skipped, a small price.)
fn asks_shutdown(stream: &[u8]) -> bool {
    stream.windows(8).any(|w| w == b"shutdown")
}

fuzz_target!(|data: &[u8]| {
    // A frame around arbitrary content, then the raw bytes.
    let mut stream = Vec::with_capacity(frame::HEADER_LEN + 2 * data.len());
    if frame::push(&mut stream, data).is_err() {
        return;
    }
    stream.extend_from_slice(data);
    if asks_shutdown(&stream) {
        return;
    }
    let m = manager();
    let conn = connect(m.address(), Some(m.authkey())).expect("the server accepts clients");
    // SAFETY: borrowing the connection's descriptor for raw writes; the
    // File is never dropped, so the descriptor stays the connection's.
    let mut raw =
        std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(conn.as_raw_fd()) });
    let _ = raw.write_all(&stream);
    // End the stream and wait until the server has closed its side: it has
    // then dealt with every frame, and a crash shows on this very input.
    // SAFETY: shutdown(2) on the connection's own descriptor.
    unsafe { libc::shutdown(conn.as_raw_fd(), libc::SHUT_WR) };
    let _ = std::io::copy(&mut *raw, &mut std::io::sink());
    drop(conn);
    // The server still serves (a fresh client on a fresh connection, and
    // the next input connects anew).
    if let Err(e) = serves(m) {
        panic!("the manager stopped serving: {e}");
    }
});
