//! Arbitrary bytes sent to a real manager server over an authenticated
//! connection, as frames: whatever they decode to (or fail to), the server
//! never dies and keeps serving the next client.
#![no_main]

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use multiproc::conn::{connect, frame};
use multiproc::Manager;

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

/// Postcard's encoding of `Request::Shutdown` starts with its variant
/// index: a frame that starts so would stop the server, as it should.
const SHUTDOWN: u32 = 6;

/// The variant index a frame starts with: a varint, which postcard also
/// accepts in overlong forms (`0x86 0x00` is 6).
fn variant(message: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for (i, &b) in message.iter().take(5).enumerate() {
        value |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Whether any whole frame of `stream` asks for a shutdown.
fn asks_shutdown(stream: &[u8]) -> bool {
    frame::frames(stream).any(|message| variant(message) == Some(SHUTDOWN))
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
    if let Err(e) = m.number_of_objects() {
        panic!("the manager stopped serving: {e}");
    }
});
