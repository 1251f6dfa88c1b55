//! The pool's scheduler thread: it owns the fork server and the workers,
//! hands queued tasks to idle workers one at a time, collects results and
//! exit codes, and replaces workers that exit. It does what Python's three
//! pool threads (worker, task and result handler) do, and logs under the
//! worker handler's name.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::result::{Slot, TaskOutcome};
use super::worker::{self, WorkerOrder};
use crate::conn::{frame, Connection};
use crate::error::{Error, Result};
use crate::process::code_origin::CodeOrigin;
use crate::process::forkserver::{self, ForkServer};
use crate::process::logging;
use crate::process::{locked, next_child_path, path_name};
use crate::sys::{self, Deadline};

/// A chunk of calls waiting for a worker.
pub(super) struct Job {
    /// The address of the trampoline that runs it (see `task`).
    pub(super) call: usize,
    /// The object that holds the trampoline.
    pub(super) origin: CodeOrigin,
    pub(super) args: Vec<u8>,
    pub(super) slot: Arc<Slot>,
}

/// What the pool's handle and the scheduler share.
#[derive(Default)]
pub(super) struct State {
    pub(super) pending: VecDeque<Job>,
    /// Submissions that failed before they could run (arguments that
    /// cannot be encoded), each with its error: the scheduler thread
    /// completes them, so that their callbacks run where every other
    /// task's do.
    pub(super) failed: Vec<(Arc<Slot>, String)>,
    pub(super) closed: bool,
    pub(super) terminating: bool,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// An eventfd that wakes the scheduler thread.
    pub(super) wake: OwnedFd,
}

impl Shared {
    pub(super) fn wake(&self) {
        sys::eventfd_write(&self.wake);
    }
}

/// What every worker is started with.
#[derive(Clone, Copy)]
pub(super) struct Config {
    pub(super) initializer: Option<fn()>,
    /// Tasks per worker before it is replaced; 0 for no limit.
    pub(super) max_tasks: u64,
}

/// The scheduler's handle on one worker process.
struct Worker {
    /// Names this worker only, even after it exits (for `SIGKILL`).
    pidfd: OwnedFd,
    pid: u32,
    /// Its fork server reports its exit code here; nothing else reads it.
    status: OwnedFd,
    conn: Connection,
    /// The task it runs, if any.
    busy: Option<Arc<Slot>>,
    /// Tasks given to it so far.
    given: u64,
    /// It has said it is ready (see [`worker::READY`]).
    ready: bool,
    /// Its pipe reached end of file: it is exiting.
    gone: bool,
}

impl Worker {
    /// Waits until `deadline` for the worker to have exited and been
    /// reaped, or for its fork server (`server`) to be gone; its exit code.
    fn join(&self, server: &ForkServer, deadline: Deadline) -> Option<i32> {
        let fds = [self.status.as_raw_fd(), server.pidfd().as_raw_fd()];
        match sys::poll_readable(&fds, deadline) {
            Ok(ready) => self.exit_code(ready[0], ready[1]),
            Err(_) => None,
        }
    }

    /// The exit code, if the status socket is readable (`reported`) and
    /// brings it, or if the fork server is gone (`orphaned`): the worker
    /// dies with it (`SIGKILL`). The status socket alone is not enough: a
    /// fork by another thread while the worker was being started may hold
    /// a copy of the server's end, so that it never reads as closed.
    fn exit_code(&self, reported: bool, orphaned: bool) -> Option<i32> {
        let code = reported
            .then(|| forkserver::exit_code(&self.status))
            .flatten();
        code.or_else(|| {
            orphaned.then(|| {
                self.kill();
                -sys::SIGKILL
            })
        })
    }

    /// Sends the worker `SIGKILL`; `false` if this process may no longer
    /// signal it (it changed its credentials since the worker started, as
    /// a daemon that drops its privileges does): then only its fork server
    /// can kill it.
    fn kill(&self) -> bool {
        !matches!(
            sys::pidfd_signal(&self.pidfd, sys::SIGKILL),
            Err(e) if e.raw_os_error() == Some(sys::errno::EPERM)
        )
    }

    /// Sends `order` without ever waiting for a worker that has exited:
    /// `Err` if it has (or its fork server, `server`, is gone), if the pool
    /// is terminated meanwhile (`shared`), or the socket fails. A blocking
    /// send of an order larger than the socket holds, to a worker that
    /// died before reading it, could wait forever, if a process forked
    /// meanwhile holds a copy of the worker's end of the socket (it then
    /// neither takes more nor refuses it); one to a worker that is alive
    /// but frozen (`SIGSTOP`) waits until `terminate`.
    fn send(
        &self,
        order: &WorkerOrder,
        server: BorrowedFd<'_>,
        shared: &Shared,
    ) -> std::result::Result<(), ()> {
        let body = postcard::to_allocvec(order).map_err(drop)?;
        let header = frame::header(body.len()).map_err(drop)?;
        // One buffer: a small order goes in one system call.
        let message = [&header[..], &body[..]].concat();
        let fd = self.conn.as_raw_fd();
        let mut at = 0;
        while at < message.len() {
            match sys::send_nowait(&fd, &message[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut p = [
                        sys::pollfd(fd, sys::Ready::Write),
                        sys::pollfd(self.pidfd.as_raw_fd(), sys::Ready::Read),
                        sys::pollfd(server.as_raw_fd(), sys::Ready::Read),
                        sys::pollfd(shared.wake.as_raw_fd(), sys::Ready::Read),
                    ];
                    if sys::poll(&mut p, Deadline::Never).is_err()
                        || sys::ready(&p[1])
                        || sys::ready(&p[2])
                    {
                        return Err(());
                    }
                    if sys::ready(&p[3]) {
                        // Taken here: `dispatch` reads the state again
                        // after every send, so nothing it announced is missed.
                        sys::eventfd_read(&shared.wake);
                        if locked(&shared.state).terminating {
                            return Err(());
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    /// Reads what the worker has sent, without ever waiting: completes its
    /// task once the whole result is there, and marks it gone at the end
    /// of file. A blocking read could wait forever for the rest of a
    /// result whose worker died half-way through sending it, if a process
    /// forked meanwhile holds a copy of the worker's end of the socket
    /// (no end of file ever comes); the worker's exit is noticed on its
    /// status socket instead, and fails the task.
    fn collect(&mut self, readable: bool) {
        if self.gone {
            return;
        }
        let fd = [self.conn.as_raw_fd()];
        // One read at a time while more is there (`readable`: poll just
        // said so); the socket holds one message at most (a worker says
        // it is ready, then sends nothing until it is given a task, and
        // then nothing but its result until it is given another).
        let mut read = readable;
        loop {
            match self.conn.try_recv_frame(read) {
                Ok(Some(frame)) if !self.ready => {
                    if frame != worker::READY {
                        // Not what a worker sends first: it cannot be trusted.
                        self.gone = true;
                        self.kill();
                    }
                    self.ready = true;
                    return;
                }
                Ok(Some(frame)) => {
                    let outcome = match postcard::from_bytes(frame) {
                        Ok(Ok(bytes)) => TaskOutcome::Done(bytes),
                        Ok(Err(msg)) => TaskOutcome::Failed(msg),
                        Err(e) => {
                            // Not what a worker sends: it cannot be trusted with more.
                            self.gone = true;
                            self.kill();
                            TaskOutcome::Failed(format!("the worker sent a malformed result: {e}"))
                        }
                    };
                    if let Some(slot) = self.busy.take() {
                        slot.complete(outcome);
                    }
                    return;
                }
                Ok(None) => {}
                Err(_) => {
                    self.gone = true;
                    return;
                }
            }
            if !matches!(sys::poll_readable(&fd, Deadline::Now), Ok(r) if r[0]) {
                return;
            }
            read = true;
        }
    }
}

/// The scheduler thread's state.
pub(super) struct Scheduler {
    shared: Arc<Shared>,
    config: Config,
    workers: Vec<Worker>,
    /// How many workers the pool has, when all are started.
    processes: usize,
    /// Forks the workers. Dropped after them (fields drop in order), which
    /// stops it.
    server: ForkServer,
}

impl Scheduler {
    /// Forks the pool's fork server, then has it start `processes` workers.
    pub(super) fn start(
        shared: Arc<Shared>,
        config: Config,
        processes: usize,
    ) -> Result<Scheduler> {
        let server = ForkServer::start(
            "PoolForkServer",
            Box::new(move |_, fds| match fds.into_iter().next() {
                Some(fd) => match Connection::from_socket(fd) {
                    Ok(mut conn) => {
                        conn.set_max_message(usize::MAX);
                        worker::run(&mut conn, config);
                        0
                    }
                    Err(_) => 1,
                },
                None => 1,
            }),
        )?;
        let mut scheduler = Scheduler {
            shared,
            config,
            workers: Vec::new(),
            processes,
            server,
        };
        (0..processes).try_for_each(|_| scheduler.start_worker())?;
        Ok(scheduler)
    }

    fn start_worker(&mut self) -> Result<()> {
        let (ours, theirs) = sys::socketpair().map_err(|e| Error::io("socketpair", e))?;
        let path = next_child_path();
        let name = path_name("ForkServerPoolWorker", &path);
        let mut conn = Connection::from_socket(ours)?;
        let served = self
            .server
            .fork(&name, &path, Vec::new(), &[theirs.as_fd()])?;
        // Both ends are this pool's own processes: orders and results of
        // any size, as in Python (a connection's default limit is 64 MiB).
        conn.set_max_message(usize::MAX);
        self.workers.push(Worker {
            pidfd: served.pidfd,
            pid: served.pid,
            status: served.status,
            conn,
            busy: None,
            given: 0,
            ready: false,
            gone: false,
        });
        logging::debug_record!("added worker");
        Ok(())
    }

    fn can_take_work(&self, w: &Worker) -> bool {
        w.busy.is_none()
            && w.ready
            && !w.gone
            && (self.config.max_tasks == 0 || w.given < self.config.max_tasks)
    }

    /// The thread's body: until the pool is closed and idle, or terminated.
    pub(super) fn run(&mut self) {
        loop {
            let (terminating, finished) = self.dispatch();
            if terminating {
                logging::debug_record!("worker handler exiting");
                self.kill_all();
                return;
            }
            if finished {
                logging::debug_record!("worker handler exiting");
                self.stop_all();
                return;
            }
            self.wait_and_collect();
        }
    }

    /// Hands pending tasks to idle workers; says whether the pool is
    /// terminating, or closed with nothing left to do.
    fn dispatch(&mut self) -> (bool, bool) {
        let shared = self.shared.clone();
        // Taken first: the state's lock is not held while they fail.
        let failed = std::mem::take(&mut locked(&shared.state).failed);
        fail_all(failed);
        for i in 0..self.workers.len() {
            if !self.can_take_work(&self.workers[i]) {
                continue;
            }
            // The state's lock is not held while sending: a worker that
            // reads its order slowly (or is frozen) must not keep the
            // pool's handle from queueing tasks or terminating.
            let job = {
                let mut state = locked(&shared.state);
                if state.terminating {
                    break;
                }
                let Some(job) = state.pending.pop_front() else {
                    break;
                };
                job
            };
            let w = &mut self.workers[i];
            let sent = w.send(
                &WorkerOrder::Run {
                    call: job.call,
                    origin: job.origin,
                    args: job.args,
                },
                self.server.pidfd(),
                &shared,
            );
            w.given += 1;
            w.busy = Some(job.slot);
            if sent.is_err() {
                // The worker is gone (or, if the socket failed or the pool
                // is terminating, has half an order it would wait on
                // forever: killed); its death is handled with the others.
                w.gone = true;
                w.kill();
            }
        }
        let mut state = locked(&shared.state);
        if state.terminating {
            let pending = std::mem::take(&mut state.pending);
            let failed = std::mem::take(&mut state.failed);
            // Not under the state's lock: their callbacks may use the pool.
            drop(state);
            for job in pending {
                job.slot.complete(TaskOutcome::Terminated);
            }
            fail_all(failed);
            return (true, false);
        }
        let idle = self.workers.iter().all(|w| w.busy.is_none());
        let queued = !state.pending.is_empty() || !state.failed.is_empty();
        (false, state.closed && !queued && idle)
    }

    /// Waits for a result, a worker's exit or a wake-up, and handles them.
    fn wait_and_collect(&mut self) {
        let mut fds = vec![
            self.shared.wake.as_raw_fd(),
            self.server.pidfd().as_raw_fd(),
        ];
        for w in &self.workers {
            fds.push(if w.gone { -1 } else { w.conn.as_raw_fd() });
            fds.push(w.status.as_raw_fd());
        }
        let ready = match sys::poll_readable(&fds, sys::Deadline::Never) {
            Ok(ready) => ready,
            Err(e) if e.raw_os_error() == Some(sys::errno::EINVAL) => poll_in_groups(&fds),
            Err(_) => return,
        };
        if ready[0] {
            sys::eventfd_read(&self.shared.wake);
        }
        let server_gone = ready[1];
        let mut exited = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            let code = w.exit_code(ready[3 + 2 * i], server_gone);
            // After an exit too: a result sent just before it may be
            // there still, unread (a death is never noticed before the
            // result that came ahead of it).
            if ready[2 + 2 * i] || code.is_some() {
                w.collect(ready[2 + 2 * i]);
            }
            if let Some(code) = code {
                exited.push((i, code));
            }
        }
        // Highest index first, so that the indexes stay valid while removing
        // (and in Python's order: `_join_exited_workers` goes backwards,
        // then `_repopulate_pool` starts the replacements).
        let dead: Vec<(Worker, i32)> = exited
            .iter()
            .rev()
            .map(|&(i, code)| {
                logging::debug_record!("cleaning up worker {i}");
                (self.workers.swap_remove(i), code)
            })
            .collect();
        // Whether a worker that started well is left to run the tasks (if
        // busy, once its task is done; if it has done its share, its
        // replacement is started then).
        let served = self.workers.iter().any(|w| w.ready && !w.gone);
        for (w, code) in dead {
            // A worker that died before it was ready (its initializer
            // panicked or exited) takes the next task with it, as it
            // would have had it been given one, if no worker that started
            // well is left: an initializer that always fails then fails
            // the tasks, where Python's pool restarts its workers for ever
            // and its tasks wait for ever. One that fails now and then
            // fails none, as in Python.
            let died_with = w.busy.or_else(|| {
                (!w.ready && !served)
                    .then(|| locked(&self.shared.state).pending.pop_front())
                    .flatten()
                    .map(|job| job.slot)
            });
            if let Some(slot) = died_with {
                slot.complete(TaskOutcome::WorkerDied(code));
            }
        }
        self.repopulate();
    }

    /// Starts workers until the pool has its size again (Python's
    /// `_maintain_pool`): in place of those that exited, and of any that
    /// could not be started before (a fork, or a descriptor, refused for a
    /// moment), tried again at every turn, so that a pool does not run on
    /// one worker short for good.
    fn repopulate(&mut self) {
        while self.workers.len() < self.processes {
            if self.start_worker().is_err() {
                if self.workers.is_empty() {
                    // Could not start any: fail what waits rather than
                    // hang with no worker left.
                    locked(&self.shared.state).terminating = true;
                }
                return;
            }
        }
    }

    /// After `close`, with every task done: tells the workers to stop and
    /// waits for them, 10 s in all (then kills those left: one that
    /// never leaves its initializer would never read the order).
    fn stop_all(&mut self) {
        for w in &mut self.workers {
            let _ = w.send(&WorkerOrder::Stop, self.server.pidfd(), &self.shared);
        }
        // One deadline for all: 10 s for each in turn would make the join
        // of a pool stuck in its initializers last 10 s per worker.
        let deadline = Deadline::after(Duration::from_secs(10));
        // Silently, as Python's `join` joins its workers.
        for w in &self.workers {
            if w.join(&self.server, deadline).is_none() {
                if !w.kill() {
                    // It kills its children on the way out.
                    self.server.stop();
                }
                w.join(&self.server, Deadline::Never);
            }
        }
    }

    /// After `terminate` (or drop): kills the workers, fails their tasks.
    fn kill_all(&mut self) {
        logging::debug_record!("terminating workers");
        let refused = self
            .workers
            .iter()
            .fold(false, |refused, w| !w.kill() | refused);
        if refused {
            // A worker this process may no longer signal: its fork server
            // kills its children on the way out (a join would wait forever).
            self.server.stop();
        }
        logging::debug_record!("joining pool workers");
        for w in &mut self.workers {
            logging::debug_record!("cleaning up worker {}", w.pid);
            w.join(&self.server, Deadline::Never);
            if let Some(slot) = w.busy.take() {
                slot.complete(TaskOutcome::Terminated);
            }
        }
    }
}

/// Completes submissions that failed before they could run, each with
/// its error (not under the state's lock: their callbacks may use the pool).
fn fail_all(failed: Vec<(Arc<Slot>, String)>) {
    for (slot, e) in failed {
        slot.complete(TaskOutcome::Failed(e));
    }
}

/// How long [`poll_in_groups`] waits on its first group before it looks
/// at the others again.
const GROUP_WAIT: Duration = Duration::from_millis(10);

/// Waits until any of `fds` is readable when they are more than one
/// `poll` takes: more than the descriptor limit (`RLIMIT_NOFILE`, which
/// the program may lower below what the pool polls), for which it fails
/// with `EINVAL` (a failure each time, where the scheduler would spin
/// and read no result). Looks at them in groups that it can, without
/// waiting, then waits on the first group (the wake-up is `fds[0]`, so
/// orders and `terminate` come at once) at most [`GROUP_WAIT`], and
/// again. Which are readable, as [`sys::poll_readable`] says.
fn poll_in_groups(fds: &[i32]) -> Vec<bool> {
    let mut size = fds.len();
    loop {
        size = (size / 2).max(1);
        let mut ready = Vec::with_capacity(fds.len());
        for group in fds.chunks(size) {
            match sys::poll_readable(group, Deadline::Now) {
                Ok(r) => ready.extend(r),
                // Still too many at once (or another failure): smaller groups.
                Err(_) => break,
            }
        }
        if ready.len() < fds.len() {
            if size == 1 {
                // Not even one at a time: nothing is known to be readable.
                return vec![false; fds.len()];
            }
            continue;
        }
        if ready.iter().any(|&r| r) {
            return ready;
        }
        let _ = sys::poll_readable(&fds[..size], Deadline::after(GROUP_WAIT));
        // Looked at again in groups of the same size.
        size = (size * 2).min(fds.len());
    }
}
