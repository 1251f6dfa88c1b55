//! Waiting for descriptors to become ready (`poll(2)`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// A wait on many descriptors for a loop that waits on nearly the same
/// ones every round (the manager server's), through one `epoll` instance:
/// a descriptor's interest reaches the kernel only when it changes, so a
/// round costs the kernel nothing for a descriptor that is not ready,
/// where `poll(2)` registers and unregisters each of them every time.
///
/// [`wait`](Poller::wait) takes the same entries as [`poll`] and reports
/// the same way (level-triggered: what is ready stays reported until it
/// is dealt with), with a key for each that names what the descriptor is
/// (a connection, not its number): a number closed and given to something
/// new between two rounds is registered again. The kernel drops a closed
/// descriptor's registration by itself only when no other descriptor
/// refers to its file, so every descriptor waited on must be the only one
/// open on its file, as the server's own sockets are. A round whose change
/// the kernel refuses (out of memory, or past `max_user_watches`) is
/// waited through [`poll`], and the registrations are made anew.
///
/// A descriptor may also be left [resting](Poller::rest): registered for
/// reading across rounds that do not list it, at no cost to them, its
/// readiness reported among the [`woken`](Poller::woken) keys, so that a
/// loop with many idle connections walks only the others each round.
#[derive(Default)]
pub(crate) struct Poller {
    /// The `epoll` instance; `None` after a refusal, until the next round.
    epoll: Option<OwnedFd>,
    /// By descriptor number: what is registered for it.
    registered: Vec<Option<Registered>>,
    /// The descriptors registered, to find those no longer waited on.
    fds: Vec<i32>,
    /// What `epoll_wait` reports.
    events: Vec<libc::epoll_event>,
    /// This round's number.
    round: u64,
    /// The keys of the resting descriptors found ready (or handed back),
    /// until [`woken`](Poller::woken) takes them.
    woken: Vec<u64>,
}

/// One registered descriptor.
#[derive(Clone, Copy)]
struct Registered {
    key: u64,
    events: u32,
    /// The last round that waited on it, and where its entry was then.
    round: u64,
    slot: usize,
    /// Resting: registered for reading until a round lists it again.
    resting: bool,
}

impl Poller {
    /// Waits until one of `pfds` is ready or `deadline` passes, as [`poll`]
    /// does; `keys[i]` names what `pfds[i]`'s descriptor is (distinct
    /// among the entries, never reused for another file). Negative
    /// descriptors are skipped.
    pub(crate) fn wait(
        &mut self,
        pfds: &mut [PollFd],
        keys: &[u64],
        deadline: Deadline,
    ) -> io::Result<()> {
        debug_assert_eq!(pfds.len(), keys.len());
        self.round += 1;
        let registered = self.register(pfds, keys);
        self.forget_unused();
        if registered.is_err() {
            // Made anew next round, from nothing; the resting descriptors
            // are handed back, to be listed again.
            let resting = self.registered.iter().flatten().filter(|r| r.resting);
            self.woken.extend(resting.map(|r| r.key));
            self.epoll = None;
            self.registered.clear();
            self.fds.clear();
            return poll(pfds, deadline);
        }
        let Some(epoll) = &self.epoll else {
            return poll(pfds, deadline);
        };
        let epoll = epoll.as_raw_fd();
        self.events.clear();
        self.events.reserve(self.fds.len().max(1));
        let capacity = self.events.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
        let ready = loop {
            // SAFETY: `events` has room for `capacity` entries, which the
            // kernel fills (the count it returns).
            let r = syscall(unsafe {
                libc::epoll_wait(
                    epoll,
                    self.events.as_mut_ptr(),
                    capacity,
                    deadline.poll_millis(),
                )
            });
            match r {
                Ok(ready) if ready > 0 || deadline.passed() => break ready as usize,
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
                _ => {}
            }
        };
        // SAFETY: the kernel wrote the first `ready` entries.
        unsafe { self.events.set_len(ready) };
        for event in &self.events {
            let fd = event.u64 as usize;
            match self.registered.get_mut(fd) {
                Some(Some(r)) if r.resting => {
                    // Left registered for this round only (see `woken`).
                    r.resting = false;
                    r.round = self.round;
                    self.woken.push(r.key);
                }
                // epoll's event bits are poll's.
                Some(Some(r)) => pfds[r.slot].revents = event.events as libc::c_short,
                _ => {}
            }
        }
        Ok(())
    }

    /// Leaves `fd` (named `key`, as in [`wait`](Poller::wait)) registered
    /// for reading in the rounds that do not list it, until one does: its
    /// readiness (something to read, a hang-up, an error) is then reported
    /// by [`woken`](Poller::woken). False if it cannot be (waits are
    /// through `poll(2)` now, or the kernel refused): list it instead.
    pub(crate) fn rest(&mut self, fd: i32, key: u64) -> bool {
        let Ok(n) = usize::try_from(fd) else {
            return false;
        };
        if self.epoll.is_none() {
            return false;
        }
        let events = libc::POLLIN as u16 as u32;
        let registered = match self.registered.get(n).copied().flatten() {
            Some(r) if r.key == key && r.events == events => Ok(()),
            Some(r) if r.key == key => self.control(libc::EPOLL_CTL_MOD, fd, events),
            // Another file's registration went with its closing (see
            // `register`).
            Some(_) => self.control(libc::EPOLL_CTL_ADD, fd, events),
            None => self.control(libc::EPOLL_CTL_ADD, fd, events).inspect(|()| {
                self.fds.push(fd);
            }),
        };
        if registered.is_err() {
            return false;
        }
        if n >= self.registered.len() {
            self.registered.resize(n + 1, None);
        }
        self.registered[n] = Some(Registered {
            key,
            events,
            round: 0,
            slot: 0,
            resting: true,
        });
        true
    }

    /// Takes the keys of the resting descriptors (see [`rest`](Poller::rest))
    /// that the rounds since the last call found ready, or that one handed
    /// back because it could not wait on them: each is no longer resting,
    /// and is waited on only if a round lists it. Each key is given once:
    /// the ones a caller did not take (a round that failed) are kept for
    /// the next call, never given again after it.
    pub(crate) fn woken(&mut self) -> std::vec::Drain<'_, u64> {
        self.woken.drain(..)
    }

    /// Tells the kernel what changed since the last round: each entry's
    /// descriptor registered (again, if its key changed) with the events
    /// it waits for. An error: a refusal, or two entries for one
    /// descriptor.
    fn register(&mut self, pfds: &mut [PollFd], keys: &[u64]) -> io::Result<()> {
        if self.epoll.is_none() {
            // SAFETY: no pointers; a new descriptor on success.
            let fd = syscall(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
            // SAFETY: a descriptor just made, owned by nothing else.
            self.epoll = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        for (slot, (p, &key)) in pfds.iter_mut().zip(keys).enumerate() {
            p.revents = 0;
            let Ok(n) = usize::try_from(p.fd) else {
                continue;
            };
            if n >= self.registered.len() {
                self.registered.resize(n + 1, None);
            }
            let events = p.events as u16 as u32;
            let wanted = Registered {
                key,
                events,
                round: self.round,
                slot,
                resting: false,
            };
            match self.registered[n] {
                Some(r) if r.round == self.round => {
                    return Err(io::Error::from(io::ErrorKind::InvalidInput));
                }
                Some(r) if r.key == key => {
                    if r.events != events {
                        self.control(libc::EPOLL_CTL_MOD, p.fd, events)?;
                    }
                }
                Some(_) => {
                    // Another file with the number: the old one's
                    // registration went with its closing (see above).
                    self.control(libc::EPOLL_CTL_ADD, p.fd, events)?;
                }
                None => {
                    self.control(libc::EPOLL_CTL_ADD, p.fd, events)?;
                    self.fds.push(p.fd);
                }
            }
            self.registered[n] = Some(wanted);
        }
        Ok(())
    }

    /// Unregisters the descriptors that this round did not wait on (one
    /// closed since is gone from the kernel's list already).
    fn forget_unused(&mut self) {
        let round = self.round;
        let mut i = 0;
        while i < self.fds.len() {
            let fd = self.fds[i];
            let n = fd as usize;
            if self.registered[n].is_some_and(|r| r.round == round || r.resting) {
                i += 1;
                continue;
            }
            if self.registered[n].is_some() {
                let _ = self.control(libc::EPOLL_CTL_DEL, fd, 0);
            }
            self.registered[n] = None;
            self.fds.swap_remove(i);
        }
    }

    /// `epoll_ctl(op)` for `fd`, with `events` and the descriptor as data.
    fn control(&self, op: libc::c_int, fd: i32, events: u32) -> io::Result<()> {
        let Some(epoll) = &self.epoll else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        let mut event = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: a valid event for the call to read.
        syscall(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn readable(poller: &mut Poller, fds: &[i32], keys: &[u64]) -> Vec<bool> {
        let mut pfds: Vec<PollFd> = fds.iter().map(|&fd| pollfd(fd, Ready::Read)).collect();
        let deadline = Deadline::after(Duration::from_millis(1));
        poller.wait(&mut pfds, keys, deadline).unwrap();
        pfds.iter().map(ready).collect()
    }

    fn woken(poller: &mut Poller) -> Vec<u64> {
        poller.woken().collect()
    }

    fn ring(fd: &OwnedFd) {
        super::super::send_nowait(fd, &[1]).unwrap();
    }

    #[test]
    fn a_number_given_to_another_file_is_waited_on_anew() {
        let mut poller = Poller::default();
        let (a, a_peer) = super::super::socketpair().unwrap();
        let fd = a.as_raw_fd();
        assert_eq!(readable(&mut poller, &[fd], &[1]), [false]);
        // Another file takes the number (its own closes): what a closed
        // descriptor's number and the next one opened do.
        let (b, b_peer) = super::super::socketpair().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(a);
        // SAFETY: both numbers are this test's own; `fd` is owned below.
        assert_eq!(unsafe { libc::dup2(b.as_raw_fd(), fd) }, fd);
        drop((b, a_peer));
        // SAFETY: the only descriptor of b's file now, owned by nothing else.
        let _b = unsafe { OwnedFd::from_raw_fd(fd) };
        ring(&b_peer);
        assert_eq!(readable(&mut poller, &[fd], &[2]), [true]);
    }

    #[test]
    fn a_resting_descriptor_is_reported_woken_then_waited_on_only_if_listed() {
        let mut poller = Poller::default();
        let (a, a_peer) = super::super::socketpair().unwrap();
        let (b, b_peer) = super::super::socketpair().unwrap();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        assert_eq!(readable(&mut poller, &fds, &[1, 2]), [false, false]);
        assert!(poller.rest(fds[0], 1));
        // Rounds that leave it out keep it, and report it once it is ready.
        assert_eq!(readable(&mut poller, &fds[1..], &[2]), [false]);
        assert!(woken(&mut poller).is_empty());
        ring(&a_peer);
        ring(&b_peer);
        assert_eq!(readable(&mut poller, &fds[1..], &[2]), [true]);
        assert_eq!(woken(&mut poller), [1]);
        // Woken, it rests no more: left out, it is not reported again.
        assert_eq!(readable(&mut poller, &fds[1..], &[2]), [true]);
        assert!(woken(&mut poller).is_empty());
        // Listed again, it is waited on as any other.
        assert_eq!(readable(&mut poller, &fds, &[1, 2]), [true, true]);
        // Put to rest while listed, then listed again before it wakes.
        assert!(poller.rest(fds[1], 2));
        assert_eq!(readable(&mut poller, &fds, &[1, 2]), [true, true]);
        assert!(woken(&mut poller).is_empty());
        // Not through poll(2), and not a descriptor: it cannot rest.
        assert!(!poller.rest(-1, 3));
        assert!(!Poller::default().rest(fds[0], 1));
    }

    #[test]
    fn changes_of_interest_and_descriptors_left_out_are_followed() {
        let mut poller = Poller::default();
        let (a, a_peer) = super::super::socketpair().unwrap();
        let (b, b_peer) = super::super::socketpair().unwrap();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        ring(&b_peer);
        assert_eq!(readable(&mut poller, &fds, &[1, 2]), [false, true]);
        // Waited on for writing only now: not reported readable.
        let mut pfds = [pollfd_for(fds[1], false, false)];
        let deadline = Deadline::after(Duration::from_millis(1));
        poller.wait(&mut pfds, &[2], deadline).unwrap();
        assert!(!ready(&pfds[0]));
        ring(&a_peer);
        assert_eq!(readable(&mut poller, &fds[..1], &[1]), [true]);
        assert_eq!(readable(&mut poller, &fds, &[1, 2]), [true, true]);
        // Skipped entries stay unreported.
        assert_eq!(readable(&mut poller, &[-1, fds[1]], &[1, 2]), [false, true]);
    }

    #[test]
    fn two_entries_for_one_descriptor_are_waited_on_through_poll() {
        let mut poller = Poller::default();
        let (a, a_peer) = super::super::socketpair().unwrap();
        ring(&a_peer);
        let fd = a.as_raw_fd();
        assert_eq!(readable(&mut poller, &[fd, fd], &[1, 2]), [true, true]);
        assert_eq!(readable(&mut poller, &[fd], &[1]), [true]);
        // A resting descriptor, not ready, is handed back by such a round
        // (whose registrations are made anew), to be listed again.
        let (b, _b_peer) = super::super::socketpair().unwrap();
        assert!(poller.rest(b.as_raw_fd(), 3));
        assert_eq!(readable(&mut poller, &[fd, fd], &[1, 2]), [true, true]);
        assert_eq!(woken(&mut poller), [3]);
    }

    #[test]
    fn woken_keys_are_given_once_and_kept_until_taken() {
        let mut poller = Poller::default();
        let (a, a_peer) = super::super::socketpair().unwrap();
        let (b, _b_peer) = super::super::socketpair().unwrap();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        assert_eq!(readable(&mut poller, &fds, &[1, 2]), [false, false]);
        assert!(poller.rest(fds[0], 1));
        ring(&a_peer);
        assert_eq!(readable(&mut poller, &fds[1..], &[2]), [false]);
        // Taken once: a second look finds nothing (it was handled).
        assert_eq!(woken(&mut poller), [1]);
        assert!(woken(&mut poller).is_empty());
        // A round whose keys the caller did not take (it failed, and the
        // loop went round): they come with the next round's, not lost.
        let (c, _c_peer) = super::super::socketpair().unwrap();
        assert!(poller.rest(c.as_raw_fd(), 3));
        let fd = fds[1];
        assert_eq!(readable(&mut poller, &[fd, fd], &[2, 4]), [false, false]);
        assert_eq!(readable(&mut poller, &fds, &[1, 2]), [true, false]);
        assert_eq!(woken(&mut poller), [3]);
        assert!(woken(&mut poller).is_empty());
    }
}
