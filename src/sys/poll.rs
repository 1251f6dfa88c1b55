//! Waiting for descriptors to become ready (`poll(2)`).

use std::io;
use std::os::fd::AsRawFd;

use super::{syscall, Deadline};

/// One descriptor and the events that [`poll`] waits for and reports.
pub(crate) type PollFd = libc::pollfd;

/// What a descriptor is waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ready {
    /// Something to read, end of file, or an error.
    Read,
    /// Room to write, a hang-up, or an error.
    Write,
}

/// A `pollfd` that waits for `fd` to be ready as `ready` says.
pub(crate) fn pollfd(fd: i32, ready: Ready) -> PollFd {
    pollfd_for(fd, ready == Ready::Read, ready == Ready::Write)
}

/// A `pollfd` that waits for `fd` to be readable, writable, both or
/// (neither) only for a hang-up or an error. A negative `fd` is skipped by
/// [`poll`].
pub(crate) fn pollfd_for(fd: i32, read: bool, write: bool) -> PollFd {
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

/// Whether anything happened to the entry's descriptor.
pub(crate) fn ready(p: &PollFd) -> bool {
    p.revents != 0
}

/// Whether [`poll`] found `p` readable: something to read, end of file, a
/// hang-up or an error (a read then tells which).
pub(crate) fn revents_readable(p: &PollFd) -> bool {
    p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

/// Whether [`poll`] found room to write on `p`.
pub(crate) fn revents_writable(p: &PollFd) -> bool {
    p.revents & libc::POLLOUT != 0
}

/// `poll(2)` until an event or `deadline`, retrying after signals and
/// early wake-ups with the time that is left; the events are in `revents`.
pub(crate) fn poll(pfds: &mut [PollFd], deadline: Deadline) -> io::Result<()> {
    loop {
        // SAFETY: a valid array of pollfds.
        let r = syscall(unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                deadline.poll_millis(),
            )
        });
        match r {
            Ok(ready) if ready > 0 || deadline.passed() => return Ok(()),
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
    }
}

/// Waits until any of `fds` is readable (or hung up) or `deadline` passes;
/// returns which are.
pub(crate) fn poll_readable(fds: &[i32], deadline: Deadline) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<PollFd> = fds.iter().map(|&fd| pollfd(fd, Ready::Read)).collect();
    poll(&mut pfds, deadline)?;
    Ok(pfds.iter().map(ready).collect())
}

/// Whether `fd` is ready as `wanted` says, without waiting.
pub(super) fn ready_now(fd: &impl AsRawFd, wanted: Ready) -> io::Result<bool> {
    let mut p = [pollfd(fd.as_raw_fd(), wanted)];
    poll(&mut p, Deadline::Now)?;
    Ok(ready(&p[0]))
}
