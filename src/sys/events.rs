//! What an event loop (the manager server's) reads of a `poll` set, and
//! what a failed `accept` means to one.

use std::io;

/// Whether anything happened to the entry's descriptor.
pub(crate) fn ready(p: &super::PollFd) -> bool {
    p.revents != 0
}

/// What a failed `accept(2)` means to a loop that accepts until the queue
/// is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// No connection is queued (on a nonblocking listener).
    QueueEmpty,
    /// That one connection failed; the queue goes on.
    ThisConnection,
    /// Out of descriptors or memory (or worse): the queue must wait.
    Exhausted,
}

/// Classifies an error of `accept(2)`.
pub(crate) fn accept_failure(e: &io::Error) -> AcceptFailure {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => AcceptFailure::QueueEmpty,
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR) => {
            AcceptFailure::ThisConnection
        }
        _ => AcceptFailure::Exhausted,
    }
}
