//! A worker's life, in the worker process: run the initializer, then one
//! task at a time until told to stop, the pipe closes, or `max_tasks` are
//! done; its exit then ends the children its tasks left running.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::{Deserialize, Serialize};

use super::result::panic_text;
use super::scheduler::Config;
use super::task::Trampoline;
use crate::conn::Connection;
use crate::process::code_origin::CodeOrigin;
use crate::process::logging;
use crate::process::{children_die_with_this_process, panics_caught_by_caller};
use crate::sys;

/// What the scheduler sends a worker.
#[derive(Serialize, Deserialize)]
pub(super) enum WorkerOrder {
    /// Run the trampoline at address `call`, code of the object `origin`
    /// in the pool's process, on `args`.
    Run {
        call: usize,
        origin: CodeOrigin,
        args: Vec<u8>,
    },
    /// Exit (Python's sentinel).
    Stop,
}

/// The address to send for `call`.
pub(super) fn address(call: Trampoline) -> usize {
    call as usize
}

/// What a worker sends once its initializer has run, before any result
/// (a result's encoding is never empty): until then the scheduler gives
/// it nothing, so that an order it would not read for a while (a long
/// initializer) waits for another worker rather than for it.
pub(super) const READY: &[u8] = &[];

/// Runs tasks from `conn` (Python's `multiprocessing.pool.worker`).
pub(super) fn run(conn: &mut Connection, config: Config) {
    // The processes that tasks start end with this worker, when it exits
    // (rather than hold up its exit: Python's pool workers are daemonic
    // and may have no children at all) and when it is killed.
    children_die_with_this_process();
    let me = sys::getpid();
    if let Some(init) = config.initializer {
        init();
        end_if_forked_copy(me);
    }
    if conn.send_bytes(READY).is_err() {
        return;
    }
    let mut completed = 0u64;
    while config.max_tasks == 0 || completed < config.max_tasks {
        let (call, origin, args) = match conn.recv::<WorkerOrder>() {
            Ok(WorkerOrder::Run { call, origin, args }) => (call, origin, args),
            Ok(WorkerOrder::Stop) => {
                logging::debug_record!("worker got sentinel -- exiting");
                break;
            }
            Err(_) => {
                logging::debug_record!("worker got EOFError or OSError -- exiting");
                break;
            }
        };
        let result = match checked(call, &origin) {
            // The payload is leaked: its drop may panic again, and end
            // the worker.
            Some(call) => {
                panics_caught_by_caller(|| catch_unwind(AssertUnwindSafe(|| call(&args))))
                    .unwrap_or_else(|panic| Err(panic_text(panic)))
            }
            None => Err(format!(
                "the task's code ({}) was loaded after the pool was created: \
                 its workers do not have it",
                origin.path()
            )),
        };
        end_if_forked_copy(me);
        if conn.send(&result).is_err() {
            break;
        }
        completed += 1;
    }
    logging::debug_record!("worker exiting after {completed} tasks");
}

/// Ends this process if it is not the worker `me` but a copy of it that
/// the initializer or a task forked (`fork(2)`) and that returned from
/// it: the pool's socket is the worker's, and a word from here (a second
/// READY, a result, or a read that takes the worker's next order) would
/// be taken for the worker's. It ends, as a forked child does.
fn end_if_forked_copy(me: u32) {
    if sys::getpid() != me {
        sys::exit_now(0);
    }
}

/// The trampoline at `call`, if this process has the code the pool's
/// process had there (`origin`).
fn checked(call: usize, origin: &CodeOrigin) -> Option<Trampoline> {
    if !origin.holds(call) {
        return None;
    }
    // SAFETY: `call` came from `address` in the pool's process, applied to
    // a `Trampoline` made by `task::trampoline` (in `Pool::submit`), with
    // `origin`, the object that holds it there; it was sent on this
    // worker's private socket, which only the pool's scheduler writes.
    // This process is a fork of the pool's fork server, itself forked from
    // the pool's process when the pool was created, so where it has the
    // same object (the same file at the same load address, checked above)
    // it has the same code: the address names the same trampoline, a
    // function of this very type. Code the pool's process loaded since
    // (`dlopen`) fails the check and is never called.
    Some(unsafe { std::mem::transmute::<usize, Trampoline>(call) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::pool::task::{trampoline, Plain};

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn a_trampoline_is_called_only_where_its_code_is_the_same() {
        let call = address(trampoline::<fn(u32) -> u32, _, Plain>(double));
        let origin = CodeOrigin::of(call).expect("this test's code is in a loaded object");
        let run = checked(call, &origin).expect("same process, same code");
        let args = postcard::to_allocvec(&vec![21u32]).unwrap();
        let out: Vec<u32> = postcard::from_bytes(&run(&args).unwrap()).unwrap();
        assert_eq!(out, [42]);
        // Code that another process had in an object this one lacks (say,
        // one it loaded after forking the pool's server) is refused.
        let elsewhere: CodeOrigin = postcard::from_bytes(
            &postcard::to_allocvec(&(usize::MAX - 4095, b"/not/loaded.so".to_vec())).unwrap(),
        )
        .unwrap();
        assert!(checked(call, &elsewhere).is_none());
        // An address in no loaded object.
        assert!(CodeOrigin::of(16).is_none());
        assert!(checked(16, &origin).is_none());
    }
}
