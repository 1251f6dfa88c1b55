//! A started child's state, for the process that started it: running (and
//! who reaps it) or exited, and the waits and signals on it.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::forkserver;
use crate::error::{Error, Result};
use crate::poison::locked;
use crate::sys::{self, Deadline};

pub(super) enum State {
    NotStarted,
    Running {
        pid: u32,
        /// Shared with the waits in progress, which need no descriptor of
        /// their own (a process out of descriptors can still join).
        pidfd: Arc<OwnedFd>,
        reaper: Reaper,
    },
    Exited {
        code: i32,
    },
}

/// Who reaps a running child.
pub(super) enum Reaper {
    /// This process (`waitpid`).
    Us,
    /// A fork server, which sends the exit code on this socket.
    ForkServer(Arc<OwnedFd>),
}

/// Sends `signal` to the child behind `state`; a no-op once it has exited.
pub(super) fn signal_state(state: &Mutex<State>, signal: i32) -> Result<()> {
    match &*locked(state) {
        State::NotStarted | State::Exited { .. } => Ok(()),
        // The pidfd names this child even if it has exited: never another process.
        State::Running { pidfd, .. } => match sys::pidfd_signal(pidfd, signal) {
            Err(e) if e.raw_os_error() != Some(sys::errno::ESRCH) => {
                Err(Error::io("signal child", e))
            }
            _ => Ok(()),
        },
    }
}

/// Waits until `deadline` for the child behind `state` to exit; its exit
/// code once reaped.
pub(super) fn wait_state(state: &Mutex<State>, deadline: Deadline) -> Result<Option<i32>> {
    let exited = match exit_descriptor(state) {
        Ok(fd) => fd,
        Err(code) => return Ok(code),
    };
    // Wait without holding the state lock, so other threads can poll.
    if !sys::pidfd_wait(&exited, deadline).map_err(|e| Error::io("wait for child", e))? {
        return Ok(None);
    }
    Ok(poll_state(state))
}

/// A descriptor that becomes readable once the child behind `state` has
/// exited (or, for a fork server's child, once it was reaped and its code
/// sent), or what is known already: its exit code, `None` if not started.
pub(super) fn exit_descriptor(
    state: &Mutex<State>,
) -> std::result::Result<Arc<OwnedFd>, Option<i32>> {
    match &*locked(state) {
        State::NotStarted => Err(None),
        State::Exited { code } => Err(Some(*code)),
        State::Running { pidfd, reaper, .. } => Ok(match reaper {
            Reaper::Us => pidfd.clone(),
            Reaper::ForkServer(status) => status.clone(),
        }),
    }
}

/// Returns once the child behind `state` has exited, whatever fails: a
/// scope's soundness rests on it.
pub(super) fn wait_until_exited(state: &Mutex<State>) {
    if wait_state(state, Deadline::Never).is_err() {
        // The poll failed (out of memory): block in waitpid instead
        // (ECHILD only once the child is gone).
        if let State::Running { pid, pidfd, .. } = &*locked(state) {
            let _ = reap(*pid, pidfd, true);
        }
    }
}

/// Reaps the child behind `state` if it has exited; its exit code if known.
pub(super) fn poll_state(state: &Mutex<State>) -> Option<i32> {
    let mut state = locked(state);
    match &*state {
        State::NotStarted => None,
        State::Exited { code, .. } => Some(*code),
        State::Running { pid, pidfd, reaper } => {
            let code = match reaper {
                // Not yet exited, or reaped elsewhere (ECHILD): nothing to tell.
                Reaper::Us => reap(*pid, pidfd, false),
                Reaper::ForkServer(status) => forkserver::exit_code(status),
            }?;
            *state = State::Exited { code };
            Some(code)
        }
    }
}

/// Reaps the child `pid`, named by `pidfd`, if it has exited (waiting for
/// it if `block`): its exit code; `None` if it runs still, or was reaped
/// elsewhere. Through its pidfd (see [`sys::waitid_pidfd`]); on a kernel
/// without that (Linux 5.3), by its pid.
fn reap(pid: u32, pidfd: &OwnedFd, block: bool) -> Option<i32> {
    match sys::waitid_pidfd(pidfd.as_fd(), block) {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            sys::waitpid(pid, block).ok().flatten()
        }
        r => r.ok().flatten(),
    }
}

/// Why a child that has exited has no exit code.
const UNREAPED: &str = "exited but could not be reaped (was SIGCHLD set to SIG_IGN, \
                        or does a handler reap every child?)";

pub(super) fn unreaped_error(name: &str) -> Error {
    Error::ProcessState {
        name: name.into(),
        what: UNREAPED,
    }
}

/// Whether `e` says that a child exited and its exit status was taken by
/// someone else (see [`unreaped_error`]): it is gone all the same.
pub(crate) fn is_unreaped(e: &Error) -> bool {
    matches!(e, Error::ProcessState { what, .. } if *what == UNREAPED)
}
