//! A worker's life, in the worker process: run the initializer, then one
//! task at a time until told to stop, the pipe closes, or `max_tasks` are
//! done; then end the children its tasks left running.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::{Deserialize, Serialize};

use super::scheduler::Config;
use super::task::Trampoline;
use crate::conn::Connection;
use crate::process::{children, signal_state};

/// What the scheduler sends a worker.
#[derive(Serialize, Deserialize)]
pub(super) enum Request {
    /// Run the trampoline at address `call` on `args`.
    Run { call: usize, args: Vec<u8> },
    /// Exit (Python's sentinel).
    Stop,
}

/// The address to send for `call`.
pub(super) fn address(call: Trampoline) -> usize {
    call as usize
}

/// Runs tasks from `conn` (Python's `multiprocessing.pool.worker`).
pub(super) fn run(conn: &mut Connection, config: Config) {
    if let Some(init) = config.initializer {
        init();
    }
    let mut completed = 0u64;
    while config.max_tasks == 0 || completed < config.max_tasks {
        let call = match conn.recv::<Request>() {
            Ok(Request::Run { call, args }) => (call, args),
            Ok(Request::Stop) => {
                log::debug!("worker got sentinel -- exiting");
                break;
            }
            Err(_) => {
                log::debug!("worker got EOFError or OSError -- exiting");
                break;
            }
        };
        let (call, args) = call;
        // SAFETY: `call` comes from `address` in the pool's process, applied
        // to a `Trampoline` made by `task::trampoline` (in `Pool::submit`),
        // and was sent on this worker's private socket, which only the
        // pool's scheduler writes. The address is valid here and names the
        // same function: this process is a fork of the pool's fork server,
        // itself forked from the pool's process when the pool was created,
        // so it has the same executable and libraries mapped at the same
        // addresses, and every trampoline is code of one of them
        // (monomorphised where `Pool`'s methods are called).
        let call: Trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(call) };
        let result = catch_unwind(AssertUnwindSafe(|| call(&args))).unwrap_or_else(|panic| {
            Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic with a non-string payload".into()))
        });
        if conn.send(&result).is_err() {
            break;
        }
        completed += 1;
    }
    log::debug!("worker exiting after {completed} tasks");
    kill_children();
}

/// Kills the children that tasks started and left running, before the
/// worker's exit waits for them. Python's pool workers are daemonic and
/// may have no children at all; here a task may start processes, but they
/// end with the worker, as a daemon's would, so that a worker's exit
/// (recycled by `max_tasks_per_child`, or at `close`) never waits on one.
fn kill_children() {
    let running: Vec<_> = children().iter().map(|c| c.state.clone()).collect();
    for state in &running {
        let _ = signal_state(state, libc::SIGKILL);
    }
}
