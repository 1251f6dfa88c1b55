//! What the OS allows without the `multiproc` library: the raw primitives
//! that `multiproc bench` and the criterion benches measure it against,
//! behind the same small traits as the library's own primitives, so that
//! both sides of a comparison run the same code path.
//!
//! Each baseline calls the OS (through `libc` or `std`) the way the library
//! does underneath, with nothing around it: the same robust, process-shared
//! pthread mutex, the same `FUTEX_WAIT_BITSET`, the same bounded spin. The
//! memory comes from the library's public
//! [`Segment::anonymous`](multiproc::segment::Segment::anonymous), so both
//! sides live in the same kind of shared mapping with the same alignment.

mod lock;
mod map;
mod payload;
pub mod peers;
mod ping_pong;
mod semaphore;
mod stream;

use std::io;

pub use lock::{
    BenchArray, BenchCounter, BenchMutex, RawAtomic, RawLockedArray, RobustPthreadMutex,
};
pub use map::{ordered_map_items_per_sec, Items, MapWork};
pub use payload::{
    check_payload, mark_payload, BenchPayload, PipeBytes, PipeSerdeVec, RawSocketPayload,
    PAYLOAD_LEN,
};
/// The iceoryx2 measurements the lead attaches to other rows (1 MiB
/// payloads read in place, `u64` items counted by items delivered).
#[cfg(feature = "peers")]
pub use peers::{iceoryx2_items_per_sec, iceoryx2_payload_bytes_per_sec, Delivered};
pub use ping_pong::{
    block_on, AsyncEventPair, BenchPingPong, EventFdPingPong, EventPair, PipePingPong, RawCall,
    RawFutexPingPong, RawSocketPingPong,
};
pub use semaphore::{BenchSemaphore, PosixSemaphore};
pub use stream::{AsyncQueue, BenchStream, RawSocketStream};

/// One raw `fork` of a child that `_exit`s at once, and its `waitpid`.
///
/// # Errors
/// If `fork` or `waitpid` fails.
pub fn fork_exit_wait() -> io::Result<()> {
    // SAFETY: the child calls only _exit, which is async-signal-safe.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: _exit has no preconditions.
        0 => unsafe { libc::_exit(0) },
        pid => loop {
            // SAFETY: a null status pointer is allowed.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) } >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        },
    }
}
