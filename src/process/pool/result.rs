//! Where a task's outcome lands ([`Slot`]), and the handles that read it:
//! [`AsyncResult`] for one task, [`MapResult`] for the chunks of a map.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::poison::{self, locked};
use crate::sys::{self, Deadline};

/// How a task ended, as the parent keeps it (cloneable, unlike [`Error`]).
#[derive(Clone, Debug)]
pub(super) enum TaskOutcome {
    /// The encoded results of the chunk.
    Done(Vec<u8>),
    /// It panicked, returned `Err` (for a fallible task), or its arguments
    /// or results could not be encoded.
    Failed(String),
    WorkerDied(i32),
    Terminated,
    Closed,
    /// Used from a process other than the pool's.
    Foreign,
    /// Waited for, not there yet, on the pool's scheduler thread (in one
    /// of the pool's callbacks): the thread that would deliver it.
    OnScheduler,
}

impl TaskOutcome {
    fn into_result(self) -> Result<Vec<u8>> {
        match self {
            TaskOutcome::Done(bytes) => Ok(bytes),
            TaskOutcome::Failed(msg) => Err(Error::TaskFailed(msg)),
            TaskOutcome::WorkerDied(exitcode) => Err(Error::WorkerDied { exitcode }),
            TaskOutcome::Terminated => Err(Error::PoolTerminated),
            TaskOutcome::Closed => Err(Error::PoolClosed),
            TaskOutcome::Foreign => Err(foreign_error()),
            TaskOutcome::OnScheduler => Err(Error::PoolState(
                "waiting in one of the pool's callbacks for a result of the same pool, \
                 which that callback's thread would deliver: the wait would never end",
            )),
        }
    }
}

/// The error for a pool used in a process other than its own.
pub(super) fn foreign_error() -> Error {
    Error::PoolState(
        "used in a process other than the one that created it (a forked child): \
         its workers and results belong to that process",
    )
}

/// Run on the pool's scheduler thread when a task ends.
pub(super) struct Callback {
    run: Box<dyn FnOnce(&TaskOutcome) + Send>,
    /// Whether it runs for a submission the pool refused too: the crate's
    /// own (an iterator's delivery) does; a user's does not, as Python's
    /// `apply_async` raises then instead of calling back.
    on_refusal: bool,
}

impl Callback {
    /// A user's callback, not run for a refused submission.
    pub(super) fn user(run: impl FnOnce(&TaskOutcome) + Send + 'static) -> Callback {
        Callback {
            run: Box::new(run),
            on_refusal: false,
        }
    }

    /// The crate's delivery of every outcome, refusals included.
    pub(super) fn delivery(run: impl FnOnce(&TaskOutcome) + Send + 'static) -> Callback {
        Callback {
            run: Box::new(run),
            on_refusal: true,
        }
    }
}

/// The wakers of the tasks awaiting an outcome, each under its key.
#[derive(Default)]
struct Wakers {
    list: Vec<(u64, Waker)>,
    next: u64,
}

/// An async wait on a [`Slot`]: its waker leaves the slot when the wait is
/// dropped (a `select!` that lost, a timeout), not only when the outcome
/// comes, which could hold the task long after it stopped waiting.
struct Awaiting<'a> {
    slot: &'a Slot,
    key: Option<u64>,
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        // Registered only in the pool's process (a forked child's copy of
        // the lock may be held by a thread it does not have).
        if let Some(k) = self.key.filter(|_| sys::getpid() == self.slot.owner) {
            locked(&self.slot.wakers).list.retain(|(id, _)| *id != k);
        }
    }
}

/// Outcomes recorded so far in this process, of every pool: the place
/// of each in that sequence tells which of a map's failures came first.
static RECORDED: AtomicU64 = AtomicU64::new(0);

/// Where a task's outcome lands.
pub(super) struct Slot {
    outcome: Mutex<Option<TaskOutcome>>,
    /// The outcome's place among those recorded in this process (see
    /// [`RECORDED`]), set under `outcome`'s lock with it.
    recorded: AtomicU64,
    ready: Condvar,
    /// Tasks awaiting the outcome (registered while `outcome` is locked).
    wakers: Mutex<Wakers>,
    callback: Mutex<Option<Callback>>,
    /// The pool's process, the only one where the outcome can arrive.
    owner: u32,
    /// The pool's scheduler thread, the one that delivers the outcome
    /// (and runs the callbacks): a wait there would never end.
    scheduler: std::thread::ThreadId,
}

impl Slot {
    pub(super) fn new(
        owner: u32,
        scheduler: std::thread::ThreadId,
        callback: Option<Callback>,
    ) -> Slot {
        Slot {
            outcome: Mutex::new(None),
            recorded: AtomicU64::new(0),
            ready: Condvar::new(),
            wakers: Mutex::new(Wakers::default()),
            callback: Mutex::new(callback),
            owner,
            scheduler,
        }
    }

    /// The outcome's place among those recorded in this process (see
    /// [`RECORDED`]), once it is there.
    fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Whether the calling thread is the one that delivers the outcome.
    fn on_scheduler(&self) -> bool {
        std::thread::current().id() == self.scheduler
    }

    /// Completes a submission the pool refused (closed, terminated, or
    /// another process's) without running its callbacks, as Python's
    /// `apply_async` raises then instead: an error callback that submits
    /// again would otherwise run inside itself until the stack overflows.
    pub(super) fn refuse(&self, outcome: TaskOutcome) {
        let user = locked(&self.callback).take_if(|cb| !cb.on_refusal);
        drop(user);
        self.complete(outcome);
    }

    /// Records the outcome, after running the callback (as Python's
    /// `ApplyResult._set` does: a callback runs before the result is ready).
    pub(super) fn complete(&self, outcome: TaskOutcome) {
        let callback = locked(&self.callback).take();
        if let Some(cb) = callback {
            // A panicking callback must not take the pool's scheduler
            // down, nor its payload, whose drop may panic again: leaked.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (cb.run)(&outcome))) {
                std::mem::forget(payload);
            }
        }
        {
            let mut known = locked(&self.outcome);
            self.recorded
                .store(RECORDED.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
            *known = Some(outcome);
        }
        self.ready.notify_all();
        let wakers = std::mem::take(&mut locked(&self.wakers).list);
        for (_, waker) in wakers {
            // An executor's waker may panic (the async book's does once its
            // run queue is gone): that must not end the pool's scheduler
            // thread, which delivers every other outcome. Its payload is
            // leaked, as a callback's is.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| waker.wake())) {
                std::mem::forget(payload);
            }
        }
    }

    /// The outcome once it is there, without blocking the thread; else
    /// the task's waker registered under `key` (given one at the first
    /// registration; [`Awaiting`] removes it if the wait is dropped).
    fn poll(&self, cx: &mut Context<'_>, key: &mut Option<u64>) -> Poll<TaskOutcome> {
        if sys::getpid() != self.owner {
            return Poll::Ready(self.inspect(|o| o.cloned()).unwrap_or(TaskOutcome::Foreign));
        }
        let known = locked(&self.outcome);
        if let Some(o) = &*known {
            return Poll::Ready(o.clone());
        }
        if self.on_scheduler() {
            return Poll::Ready(TaskOutcome::OnScheduler);
        }
        // Registered under the outcome's lock: `complete` sets the outcome
        // under it before it takes the wakers.
        let mut wakers = locked(&self.wakers);
        let wakers = &mut *wakers;
        match key.and_then(|k| wakers.list.iter_mut().find(|(id, _)| *id == k)) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => {
                let k = wakers.next;
                wakers.next += 1;
                wakers.list.push((k, cx.waker().clone()));
                *key = Some(k);
            }
        }
        Poll::Pending
    }

    /// Runs `f` on the outcome, if there is one. In a forked child, where
    /// it can never arrive, without waiting for a lock that the fork may
    /// have copied while held, and on [`TaskOutcome::Foreign`] if it is not there.
    fn inspect<T>(&self, f: impl FnOnce(Option<&TaskOutcome>) -> T) -> T {
        if sys::getpid() == self.owner {
            return f(locked(&self.outcome).as_ref());
        }
        match self.outcome.try_lock() {
            Ok(known) if known.is_some() => f(known.as_ref()),
            _ => f(Some(&TaskOutcome::Foreign)),
        }
    }

    /// The outcome, waiting for it until `deadline` (`None` if it did not
    /// come); [`TaskOutcome::OnScheduler`] at once if it is not there and
    /// the calling thread is the one that would deliver it.
    fn wait(&self, deadline: Deadline) -> Option<TaskOutcome> {
        if sys::getpid() != self.owner {
            return self.inspect(|o| o.cloned());
        }
        let mut g = locked(&self.outcome);
        loop {
            if let Some(o) = &*g {
                return Some(o.clone());
            }
            if self.on_scheduler() {
                return Some(TaskOutcome::OnScheduler);
            }
            let left = deadline.remaining();
            if left.is_some_and(|t| t.is_zero()) {
                return None;
            }
            g = poison::wait(&self.ready, g, left);
        }
    }
}

/// The text of a panic's `payload`, which is leaked: its drop may panic
/// again.
pub(super) fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic with a non-string payload".into());
    std::mem::forget(payload);
    text
}

/// Decodes a chunk's results.
pub(super) fn decode<R: DeserializeOwned>(outcome: TaskOutcome) -> Result<Vec<R>> {
    let bytes = outcome.into_result()?;
    postcard::from_bytes(&bytes).map_err(|e| Error::Deserialize(e.to_string()))
}

/// The results of one submitted chunk (one task for `apply`).
pub(super) struct Chunk<R> {
    pub(super) slot: std::sync::Arc<Slot>,
    /// Its items (1 for a refusal, which stands for the rest of an input).
    pub(super) len: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Chunk<R> {
    pub(super) fn new(slot: std::sync::Arc<Slot>, len: usize) -> Chunk<R> {
        Chunk {
            slot,
            len,
            _result: PhantomData,
        }
    }

    pub(super) fn get_until(&self, deadline: Deadline) -> Result<Vec<R>> {
        decode(self.outcome_until(deadline)?)
    }

    /// The outcome, waiting for it until `deadline`.
    fn outcome_until(&self, deadline: Deadline) -> Result<TaskOutcome> {
        self.slot.wait(deadline).ok_or(Error::Timeout)
    }

    /// Its results one by one, once they are there (see [`per_item`]).
    pub(super) fn items(&self) -> Vec<Result<R>> {
        loop {
            // A wait without a deadline ends with the outcome.
            if let Some(outcome) = self.slot.wait(Deadline::Never) {
                return per_item(outcome, self.len);
            }
        }
    }

    async fn get_async(&self) -> Result<Vec<R>> {
        decode(self.outcome_async().await)
    }

    /// The outcome, without blocking the thread.
    async fn outcome_async(&self) -> TaskOutcome {
        let mut awaiting = Awaiting {
            slot: &self.slot,
            key: None,
        };
        std::future::poll_fn(|cx| awaiting.slot.poll(cx, &mut awaiting.key)).await
    }

    fn wait(&self, deadline: Deadline) -> bool {
        self.slot
            .wait(deadline)
            .is_some_and(|o| !matches!(o, TaskOutcome::OnScheduler))
    }

    fn ready(&self) -> bool {
        self.slot.inspect(|o| o.is_some())
    }

    fn successful(&self) -> Option<bool> {
        self.slot
            .inspect(|o| o.map(|o| matches!(o, TaskOutcome::Done(_))))
    }
}

/// The error of a map's wait that would never end, if the last of
/// `outcomes` says so (in one of the pool's callbacks, which deliver the
/// outcomes): the chunks after it are not waited for.
fn never_ends(outcomes: &[TaskOutcome]) -> Option<Error> {
    match outcomes.last() {
        Some(o @ TaskOutcome::OnScheduler) => o.clone().into_result().err(),
        _ => None,
    }
}

/// The one result of a chunk of one.
pub(super) fn only<R>(values: Vec<R>) -> Result<R> {
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (Some(r), None) => Ok(r),
        _ => Err(Error::Deserialize(
            "a task's result did not hold exactly one value".into(),
        )),
    }
}

/// The results of a chunk of `len` items, one by one. Each item of a
/// chunk that failed is that failure: the results stay one per item, so
/// that a consumer that pairs them with the input pairs each with its own.
pub(super) fn per_item<R: DeserializeOwned>(outcome: TaskOutcome, len: usize) -> Vec<Result<R>> {
    let undecodable = match outcome {
        TaskOutcome::Done(bytes) => match postcard::from_bytes::<Vec<R>>(&bytes) {
            Ok(values) if values.len() == len => return values.into_iter().map(Ok).collect(),
            Ok(values) => format!("a chunk of {len} items brought {} results", values.len()),
            Err(e) => e.to_string(),
        },
        failed => {
            return std::iter::repeat_with(|| failed.clone().into_result())
                .take(len)
                .filter_map(Result::err)
                .map(Err)
                .collect()
        }
    };
    (0..len)
        .map(|_| Err(Error::Deserialize(undecodable.clone())))
        .collect()
}

/// The result of a task submitted with [`Pool::apply_async`](super::Pool::apply_async)
/// (Python's `AsyncResult`).
pub struct AsyncResult<R> {
    pub(super) chunk: Chunk<R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the task and returns its result.
    ///
    /// # Errors
    /// [`Error::TaskFailed`] if it panicked, [`Error::WorkerDied`] if its
    /// worker died, [`Error::PoolTerminated`], [`Error::PoolClosed`] if it
    /// was submitted after `close`, [`Error::Deserialize`], and
    /// [`Error::PoolState`] in a process other than the pool's, or, for a
    /// task not finished yet, in one of the same pool's callbacks: they
    /// run on the thread that delivers the results, so the wait would
    /// never end (Python's result handler thread hangs there).
    pub fn get(&self) -> Result<R> {
        self.chunk.get_until(Deadline::Never).and_then(only)
    }

    /// As [`get`](AsyncResult::get), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get`](AsyncResult::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.chunk
            .get_until(Deadline::after(timeout))
            .and_then(only)
    }

    /// As [`get`](AsyncResult::get), without blocking the thread (for a
    /// task on an async runtime; any runtime will do). Dropping the future
    /// changes nothing: the task runs on, and `get` can still be called.
    ///
    /// # Errors
    /// As for [`get`](AsyncResult::get).
    pub async fn get_async(&self) -> Result<R> {
        self.chunk.get_async().await.and_then(only)
    }

    /// Waits until the task has finished (in one of the same pool's
    /// callbacks, which would wait for ever, returns at once: see
    /// [`get`](AsyncResult::get)).
    pub fn wait(&self) {
        self.chunk.wait(Deadline::Never);
    }

    /// Waits at most `timeout`; whether the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.chunk.wait(Deadline::after(timeout))
    }

    /// Whether the task has finished.
    pub fn ready(&self) -> bool {
        self.chunk.ready()
    }

    /// Whether the task finished without error; `None` while it runs.
    pub fn successful(&self) -> Option<bool> {
        self.chunk.successful()
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.chunk.slot.inspect(|o| o.is_some()))
            .finish()
    }
}

/// The results of [`Pool::map_async`](super::Pool::map_async), in order.
pub struct MapResult<R> {
    pub(super) chunks: Vec<Chunk<R>>,
}

impl<R: DeserializeOwned> MapResult<R> {
    /// Waits for every item and returns the results in order.
    ///
    /// # Errors
    /// Once every chunk is done, the error of the one that failed first
    /// (in time, as Python's: not the first in order), as for
    /// [`AsyncResult::get`].
    pub fn get(&self) -> Result<Vec<R>> {
        self.get_until(Deadline::Never)
    }

    /// As [`get`](MapResult::get), waiting at most `timeout` in all.
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get`](MapResult::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>> {
        self.get_until(Deadline::after(timeout))
    }

    /// As [`get`](MapResult::get), without blocking the thread;
    /// cancellation as for [`AsyncResult::get_async`].
    ///
    /// # Errors
    /// As for [`get`](MapResult::get).
    pub async fn get_async(&self) -> Result<Vec<R>> {
        let mut outcomes = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            outcomes.push(c.outcome_async().await);
            if let Some(never) = never_ends(&outcomes) {
                return Err(never);
            }
        }
        self.settle(outcomes)
    }

    fn get_until(&self, deadline: Deadline) -> Result<Vec<R>> {
        let mut outcomes = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            outcomes.push(c.outcome_until(deadline)?);
            if let Some(never) = never_ends(&outcomes) {
                return Err(never);
            }
        }
        self.settle(outcomes)
    }

    /// The results of every chunk, given their `outcomes` (one per
    /// chunk, in order); if any failed, the failure recorded first, as
    /// Python's `MapResult` keeps the first exception to arrive, whatever
    /// its chunk's place.
    fn settle(&self, outcomes: Vec<TaskOutcome>) -> Result<Vec<R>> {
        let first_failure = outcomes
            .iter()
            .zip(&self.chunks)
            .filter(|(o, _)| !matches!(o, TaskOutcome::Done(_)))
            .min_by_key(|(_, c)| c.slot.recorded());
        if let Some((failed, _)) = first_failure {
            return decode(failed.clone());
        }
        let mut out = Vec::new();
        for outcome in outcomes {
            out.extend(decode(outcome)?);
        }
        Ok(out)
    }

    /// Whether every item is done.
    pub fn ready(&self) -> bool {
        self.chunks.iter().all(Chunk::ready)
    }

    /// Waits until every item is done (in one of the same pool's
    /// callbacks, returns at once: see [`AsyncResult::get`]).
    pub fn wait(&self) {
        for c in &self.chunks {
            c.wait(Deadline::Never);
        }
    }

    /// Whether every item finished without error; `None` while any runs.
    pub fn successful(&self) -> Option<bool> {
        self.chunks
            .iter()
            .map(Chunk::successful)
            .try_fold(true, |all, s| s.map(|ok| all && ok))
    }
}

impl<R> std::fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapResult")
            .field("chunks", &self.chunks.len())
            .finish()
    }
}
