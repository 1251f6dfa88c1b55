//! Readiness of many descriptors at once, for an event loop (the manager
//! server's), and what a failed `accept` means to one.

use std::io;

/// One descriptor's entry in a [`poll`](super::poll) set.
pub(crate) type PollFd = libc::pollfd;

/// An entry that waits for `fd` to be readable and/or writable (a
/// negative `fd`: an entry that `poll` skips).
pub(crate) fn pollfd_rw(fd: i32, read: bool, write: bool) -> PollFd {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    PollFd {
        fd,
        events,
        revents: 0,
    }
}

/// Whether the entry's descriptor has something to read, or hung up or
/// failed (a read then says which).
pub(crate) fn readable(p: &PollFd) -> bool {
    p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

/// Whether the entry's descriptor takes writes now.
pub(crate) fn writable(p: &PollFd) -> bool {
    p.revents & libc::POLLOUT != 0
}

/// Whether anything happened to the entry's descriptor.
pub(crate) fn ready(p: &PollFd) -> bool {
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
