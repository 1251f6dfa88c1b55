//! Submitting tasks: [`Queue`], a handle on the scheduler's queue that
//! outlives the pool's (an `imap` iterator keeps one), and [`Feed`], an
//! input submitted a chunk at a time.

use std::sync::Arc;
use std::thread::ThreadId;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::result::{Callback, Chunk, Slot, TaskOutcome};
use super::scheduler::{Job, Shared, State};
use super::task::{self, Finish, Task};
use super::worker;
use crate::poison::locked;
use crate::process::code_origin::CodeOrigin;
use crate::sys;

/// A task's trampoline, as the scheduler sends it.
pub(super) struct Code {
    call: usize,
    /// The object that holds it, if the loader knows one.
    origin: Option<CodeOrigin>,
}

impl Code {
    pub(super) fn of<M, T: Task<M>, K: Finish<T::Output>>(task: T) -> Code {
        let call = worker::address(task::trampoline::<M, T, K>(task));
        Code {
            call,
            origin: CodeOrigin::of(call),
        }
    }
}

/// Where a pool's tasks are queued for its scheduler thread.
#[derive(Clone)]
pub(super) struct Queue {
    pub(super) shared: Arc<Shared>,
    /// The process that created the pool, the only one that can use it.
    pub(super) owner: u32,
    /// The pool's scheduler thread, which runs the callbacks.
    pub(super) scheduler: ThreadId,
}

impl Queue {
    /// Whether this is the process that created the pool (not a forked child).
    pub(super) fn is_owner(&self) -> bool {
        sys::getpid() == self.owner
    }

    /// Whether the calling thread is the pool's scheduler thread (in a
    /// callback).
    pub(super) fn on_scheduler_thread(&self) -> bool {
        std::thread::current().id() == self.scheduler
    }

    /// For an input that made no chunk: a chunk that fails at once (its
    /// callback from `callback`), if the pool takes no task now. A pool
    /// that takes none still says so when there is nothing to run
    /// (Python's `map(f, [])` raises "Pool not running").
    pub(super) fn refused<R: DeserializeOwned>(
        &self,
        callback: impl FnOnce() -> Option<Callback>,
    ) -> Option<Chunk<R>> {
        let refusal = if self.is_owner() {
            refusal(&locked(&self.shared.state))?
        } else {
            TaskOutcome::Foreign
        };
        let slot = Arc::new(Slot::new(self.owner, self.scheduler, callback()));
        slot.refuse(refusal);
        Some(Chunk::new(slot, 1))
    }

    /// Queues one chunk of calls of `code`.
    pub(super) fn submit_chunk<A: Serialize, R: DeserializeOwned>(
        &self,
        code: &Code,
        chunk: &[A],
        callback: Option<Callback>,
    ) -> Chunk<R> {
        let job = match (&code.origin, postcard::to_allocvec(chunk)) {
            (Some(origin), Ok(args)) => Ok((origin.clone(), args)),
            (None, _) => Err("the task's code is in no object the dynamic loader knows, \
                 so a worker cannot be given its address"
                .to_owned()),
            (_, Err(e)) => Err(format!("cannot serialize the arguments: {e}")),
        };
        Chunk::new(self.submit_one(code.call, job, callback), chunk.len())
    }

    /// Queues one chunk: the trampoline at `call` on `job`'s arguments, or
    /// has the scheduler thread fail it with `job`'s error.
    fn submit_one(
        &self,
        call: usize,
        job: std::result::Result<(CodeOrigin, Vec<u8>), String>,
        callback: Option<Callback>,
    ) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(self.owner, self.scheduler, callback));
        if !self.is_owner() {
            slot.refuse(TaskOutcome::Foreign);
            return slot;
        }
        let mut state = locked(&self.shared.state);
        if let Some(outcome) = refusal(&state) {
            drop(state);
            slot.refuse(outcome);
            return slot;
        }
        match job {
            Ok((origin, args)) => state.pending.push_back(Job {
                call,
                origin,
                args,
                slot: slot.clone(),
            }),
            // Failed by the scheduler thread, as a task that ran would
            // be: its callbacks run there, never on the caller's thread,
            // which may hold a lock they take.
            Err(e) => state.failed.push((slot.clone(), e)),
        }
        drop(state);
        self.shared.wake();
        slot
    }
}

/// Why a pool in `state` takes no task, if it does not.
pub(super) fn refusal(state: &State) -> Option<TaskOutcome> {
    if state.terminating {
        Some(TaskOutcome::Terminated)
    } else if state.closed {
        Some(TaskOutcome::Closed)
    } else {
        None
    }
}

/// An input (the argument lists of a task's calls) submitted a chunk at
/// a time.
pub(super) struct Feed<I> {
    queue: Queue,
    code: Code,
    items: I,
    /// Argument lists per chunk (at least 1).
    size: usize,
    /// Whether `items` has ended (it is not asked again: it may not be fused).
    ended: bool,
    /// Whether the reading stops once the pool takes no task.
    stop_when_refused: bool,
}

impl<I> Feed<I>
where
    I: Iterator,
    I::Item: Serialize,
{
    /// `items`, to be run by `code` in chunks of `size` (0 is taken as 1).
    pub(super) fn new(queue: Queue, code: Code, items: I, size: usize) -> Feed<I> {
        Feed {
            queue,
            code,
            items,
            size: size.max(1),
            ended: false,
            stop_when_refused: false,
        }
    }

    /// This feed, reading no more of its input once the pool takes no
    /// task (closed, terminated, or used from another process): its next
    /// chunk is then that refusal, and the last.
    pub(super) fn stopping_when_refused(self) -> Feed<I> {
        Feed {
            stop_when_refused: true,
            ..self
        }
    }

    pub(super) fn queue(&self) -> &Queue {
        &self.queue
    }

    /// This feed, read to its end, without its input: an iterator that
    /// holds it is `Send` whatever the input was.
    pub(super) fn drained(self) -> Feed<std::iter::Empty<I::Item>> {
        Feed {
            queue: self.queue,
            code: self.code,
            items: std::iter::empty(),
            size: self.size,
            ended: true,
            stop_when_refused: self.stop_when_refused,
        }
    }

    /// Submits the next chunk of the input, its callback from `callback`
    /// (given the chunk's number of items); `None` once the input has ended.
    pub(super) fn submit<R: DeserializeOwned>(
        &mut self,
        mut callback: impl FnMut(usize) -> Option<Callback>,
    ) -> Option<Chunk<R>> {
        if self.stop_when_refused && !self.ended {
            if let Some(refused) = self.queue.refused(|| callback(1)) {
                self.ended = true;
                return Some(refused);
            }
        }
        let chunk = self.take()?;
        Some(
            self.queue
                .submit_chunk(&self.code, &chunk, callback(chunk.len())),
        )
    }

    /// Reads the next chunk of the input without submitting it, where the
    /// pool takes no task; its number of items (1 for one that stands for
    /// the rest), if there was one.
    pub(super) fn skip(&mut self) -> Option<usize> {
        if self.stop_when_refused && !self.ended {
            // Called where the pool takes no task: one chunk stands for
            // the rest, unread.
            self.ended = true;
            return Some(1);
        }
        self.take().map(|chunk| chunk.len())
    }

    fn take(&mut self) -> Option<Vec<I::Item>> {
        if self.ended {
            return None;
        }
        let chunk: Vec<I::Item> = self.items.by_ref().take(self.size).collect();
        // A short chunk: the input said it has ended.
        self.ended = chunk.len() < self.size;
        (!chunk.is_empty()).then_some(chunk)
    }
}
