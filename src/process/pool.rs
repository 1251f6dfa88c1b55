//! [`Pool`]: tasks run on a set of worker processes.
//!
//! One manager thread in the parent owns the workers. Each worker has a pipe
//! of its own and is given one task at a time, so the parent always knows
//! which task a worker holds: when a worker dies, that task fails with
//! [`Error::WorkerDied`] and a new worker takes its place. Nothing waits
//! for a worker that is gone (Python's `Pool` hangs there).
//!
//! Every worker, first or replacement, is forked by the pool's own fork
//! server (see `forkserver`), which the manager thread forks before it
//! does anything else: a worker never inherits a lock that a thread of the
//! parent held when the worker started (only one held when the pool was
//! created). The workers are the server's children, reaped by it; the
//! manager learns each exit code on the worker's status socket, which
//! nothing else in the process reads, so no other reaper
//! (`active_children`, another `Process::start`) can make the pool lose a
//! worker.
//!
//! A pool belongs to the process that made it: used from a forked child it
//! is an error (the child has no manager thread), and it touches none of
//! its locks there, which a fork may have copied while held.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::forkserver::{self, ForkServer};
use super::{cpu_count, next_child_path, path_name};
use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::sys::{self, Deadline};

/// Runs the task function at address `func` on encoded arguments; returns
/// the encoded result or the panic message. Monomorphised per task type.
type Trampoline = fn(usize, &[u8]) -> std::result::Result<Vec<u8>, String>;

/// What the parent sends a worker.
#[derive(Serialize, Deserialize)]
enum Request {
    /// Run `call(func, args)`. Both are addresses of functions in the
    /// parent's image, which a forked worker shares.
    Run {
        call: usize,
        func: usize,
        args: Vec<u8>,
    },
    Stop,
}

/// How a task ended, as the parent keeps it (cloneable, unlike [`Error`]).
#[derive(Clone, Debug)]
enum Outcome {
    Done(Vec<u8>),
    Panicked(String),
    WorkerDied(i32),
    Terminated,
    Closed,
    /// Used from a process other than the pool's.
    Foreign,
}

impl Outcome {
    fn into_result(self) -> Result<Vec<u8>> {
        match self {
            Outcome::Done(bytes) => Ok(bytes),
            Outcome::Panicked(msg) => Err(Error::TaskFailed(msg)),
            Outcome::WorkerDied(exitcode) => Err(Error::WorkerDied { exitcode }),
            Outcome::Terminated => Err(Error::PoolTerminated),
            Outcome::Closed => Err(Error::PoolClosed),
            Outcome::Foreign => Err(foreign_error()),
        }
    }
}

fn foreign_error() -> Error {
    Error::ProcessState {
        name: "Pool".into(),
        what: "used in a process other than the one that created it (a forked child): \
               its workers and results belong to that process",
    }
}

type Callback = Box<dyn FnOnce(&Outcome) + Send>;

/// Where a task's outcome lands.
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
    /// Tasks awaiting the outcome (registered while `outcome` is locked).
    wakers: Mutex<Vec<Waker>>,
    callback: Mutex<Option<Callback>>,
    /// The pool's process, the only one where the outcome can arrive.
    owner: u32,
}

impl Slot {
    fn new(owner: u32, callback: Option<Callback>) -> Slot {
        Slot {
            outcome: Mutex::new(None),
            ready: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            callback: Mutex::new(callback),
            owner,
        }
    }

    fn complete(&self, outcome: Outcome) {
        let callback = lock(&self.callback).take();
        if let Some(cb) = callback {
            // A panicking callback must not take the pool's manager down.
            let _ = catch_unwind(AssertUnwindSafe(|| cb(&outcome)));
        }
        *lock(&self.outcome) = Some(outcome);
        self.ready.notify_all();
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The outcome once it is there, without blocking the thread.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        if sys::getpid() != self.owner {
            return Poll::Ready(self.inspect(|o| o.cloned()).unwrap_or(Outcome::Foreign));
        }
        let known = lock(&self.outcome);
        if let Some(o) = &*known {
            return Poll::Ready(o.clone());
        }
        // Registered under the outcome's lock: `complete` sets the outcome
        // under it before it takes the wakers.
        let mut wakers = lock(&self.wakers);
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Runs `f` on the outcome, if there is one. In a forked child, where
    /// it can never arrive, without waiting for a lock that the fork may
    /// have copied while held, and on [`Outcome::Foreign`] if it is not there.
    fn inspect<T>(&self, f: impl FnOnce(Option<&Outcome>) -> T) -> T {
        if sys::getpid() == self.owner {
            return f(lock(&self.outcome).as_ref());
        }
        match self.outcome.try_lock() {
            Ok(known) if known.is_some() => f(known.as_ref()),
            _ => f(Some(&Outcome::Foreign)),
        }
    }

    fn wait(&self, deadline: Deadline) -> Option<Outcome> {
        if sys::getpid() != self.owner {
            return self.inspect(|o| o.cloned());
        }
        let mut g = lock(&self.outcome);
        loop {
            if let Some(o) = &*g {
                return Some(o.clone());
            }
            match deadline.remaining() {
                None => g = self.ready.wait(g).unwrap_or_else(PoisonError::into_inner),
                Some(left) => {
                    if left.is_zero() {
                        return None;
                    }
                    g = self
                        .ready
                        .wait_timeout(g, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Job {
    call: usize,
    func: usize,
    args: Vec<u8>,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Job>,
    closed: bool,
    terminating: bool,
}

struct Shared {
    state: Mutex<State>,
    /// An eventfd that wakes the manager thread.
    wake: OwnedFd,
}

impl Shared {
    fn wake(&self) {
        sys::eventfd_write(&self.wake);
    }
}

/// The result of a task submitted with [`Pool::apply_async`] (Python's
/// `AsyncResult`).
pub struct AsyncResult<R> {
    slot: Arc<Slot>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the task and returns its result.
    ///
    /// # Errors
    /// [`Error::TaskFailed`] if it panicked, [`Error::WorkerDied`] if its
    /// worker died, [`Error::PoolTerminated`], [`Error::Deserialize`].
    pub fn get(&self) -> Result<R> {
        self.get_until(Deadline::Never)
    }

    /// As [`get`](AsyncResult::get), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`], and those of [`get`](AsyncResult::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.get_until(Deadline::after(timeout))
    }

    fn get_until(&self, deadline: Deadline) -> Result<R> {
        decode(self.slot.wait(deadline).ok_or(Error::Timeout)?)
    }

    /// As [`get`](AsyncResult::get), without blocking the thread (for a
    /// task on an async runtime; any runtime will do). Dropping the future
    /// changes nothing: the task runs on, and `get` can still be called.
    ///
    /// # Errors
    /// As for [`get`](AsyncResult::get).
    pub async fn get_async(&self) -> Result<R> {
        decode(std::future::poll_fn(|cx| self.slot.poll(cx)).await)
    }

    /// Waits until the task has finished.
    pub fn wait(&self) {
        self.slot.wait(Deadline::Never);
    }

    /// Waits at most `timeout`; whether the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Deadline::after(timeout)).is_some()
    }

    /// Whether the task has finished.
    pub fn ready(&self) -> bool {
        self.slot.inspect(|o| o.is_some())
    }

    /// Whether the task finished without error; `None` while it runs.
    pub fn successful(&self) -> Option<bool> {
        self.slot
            .inspect(|o| o.map(|o| matches!(o, Outcome::Done(_))))
    }
}

/// A chunk's results one by one; a failed chunk is one error.
fn per_item<R>(chunk: Result<Vec<R>>) -> Vec<Result<R>> {
    match chunk {
        Ok(values) => values.into_iter().map(Ok).collect(),
        Err(e) => vec![Err(e)],
    }
}

fn decode<R: DeserializeOwned>(outcome: Outcome) -> Result<R> {
    let bytes = outcome.into_result()?;
    postcard::from_bytes(&bytes).map_err(|e| Error::Deserialize(e.to_string()))
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.slot.inspect(|o| o.is_some()))
            .finish()
    }
}

/// The results of [`Pool::map_async`], in order.
pub struct MapResult<R> {
    chunks: Vec<AsyncResult<Vec<R>>>,
}

impl<R: DeserializeOwned> MapResult<R> {
    /// Waits for every item and returns the results in order.
    ///
    /// # Errors
    /// The first error of any chunk, as for [`AsyncResult::get`].
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
        let mut out = Vec::new();
        for c in &self.chunks {
            out.extend(c.get_async().await?);
        }
        Ok(out)
    }

    fn get_until(&self, deadline: Deadline) -> Result<Vec<R>> {
        let mut out = Vec::new();
        for c in &self.chunks {
            out.extend(c.get_until(deadline)?);
        }
        Ok(out)
    }

    /// Whether every item is done.
    pub fn ready(&self) -> bool {
        self.chunks.iter().all(AsyncResult::ready)
    }

    /// Waits until every item is done.
    pub fn wait(&self) {
        self.chunks.iter().for_each(AsyncResult::wait);
    }

    /// Whether every item finished without error; `None` while any runs.
    pub fn successful(&self) -> Option<bool> {
        self.chunks
            .iter()
            .map(AsyncResult::successful)
            .try_fold(true, |all, s| s.map(|ok| all && ok))
    }
}

/// Configures a [`Pool`].
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<fn()>,
    max_tasks_per_child: Option<u64>,
}

impl PoolBuilder {
    /// The number of workers (default: [`cpu_count`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A function each worker runs once when it starts.
    pub fn initializer(mut self, f: fn()) -> Self {
        self.initializer = Some(f);
        self
    }

    /// Replace each worker after it has run `n` tasks (Python's `maxtasksperchild`).
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// `InvalidArgument` for 0 processes; if a worker cannot be started.
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(cpu_count);
        if processes == 0 {
            return Err(Error::InvalidArgument(
                "a pool needs at least one process".into(),
            ));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: sys::eventfd().map_err(|e| Error::io("eventfd", e))?,
        });
        let config = Config {
            initializer: self.initializer,
            max_tasks: self.max_tasks_per_child.unwrap_or(0),
        };
        // The manager thread forks the fork server first thing, and owns it:
        // the server ends when the manager is done, or with this process.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let manager_shared = shared.clone();
        let manager = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || {
                let start = Manager::start(manager_shared, config, processes);
                match start {
                    Ok(mut manager) => {
                        let _ = started_tx.send(Ok(()));
                        manager.run();
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::io("spawn the pool's manager thread", e))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Pool {
                shared,
                manager: Some(manager),
                processes,
                owner: sys::getpid(),
            }),
            Ok(Err(e)) => {
                let _ = manager.join();
                Err(e)
            }
            Err(_) => Err(Error::io(
                "pool manager",
                std::io::Error::other("exited early"),
            )),
        }
    }
}

#[derive(Clone, Copy)]
struct Config {
    initializer: Option<fn()>,
    max_tasks: u64,
}

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Tasks are plain functions (`fn(A) -> R`) with serde arguments and
/// results: a function's address is valid in the workers, which are forks
/// of a fork of this process, a closure is not. The workers are forked by
/// a fork server that the pool forks when it is created (Python's
/// `forkserver` start method), so they see this process's memory as it
/// was then, and no lock that another thread takes later: create pools
/// before starting threads that hold locks the tasks need. A task that
/// panics (or, run with [`try_apply`](Pool::try_apply), returns `Err`)
/// makes its result an
/// [`Error::TaskFailed`]; a worker that dies mid-task (killed, crashed, or
/// `exit` called) makes it [`Error::WorkerDied`], and is replaced.
///
/// Dropping a pool terminates it, as leaving Python's `with Pool() as p:`
/// block does: call [`close`](Pool::close) and [`join`](Pool::join) first
/// to let queued tasks finish.
///
/// # Example
/// ```
/// use multiproc::Pool;
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
/// let r = pool.apply_async(square, 7);
/// assert_eq!(r.get()?, 49);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    manager: Option<JoinHandle<()>>,
    processes: usize,
    /// The process that created the pool, the only one that can use it.
    owner: u32,
}

fn run_task<A: DeserializeOwned, R: Serialize>(
    func: usize,
    args: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    // SAFETY: `func` is the address of an `fn(A) -> R` taken in the parent
    // by `Pool::submit` with these same type parameters; a forked worker
    // shares the parent's image, so the address is valid here.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    let args: A =
        postcard::from_bytes(args).map_err(|e| format!("cannot deserialize the arguments: {e}"))?;
    postcard::to_allocvec(&f(args)).map_err(|e| format!("cannot serialize the result: {e}"))
}

fn run_fallible<A: DeserializeOwned, R: Serialize, E: std::fmt::Display>(
    func: usize,
    args: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    // SAFETY: as in `run_task`, for an `fn(A) -> Result<R, E>`.
    let f: fn(A) -> std::result::Result<R, E> =
        unsafe { std::mem::transmute::<usize, fn(A) -> std::result::Result<R, E>>(func) };
    let args: A =
        postcard::from_bytes(args).map_err(|e| format!("cannot deserialize the arguments: {e}"))?;
    let value = f(args).map_err(|e| e.to_string())?;
    postcard::to_allocvec(&value).map_err(|e| format!("cannot serialize the result: {e}"))
}

fn run_chunk<A: DeserializeOwned, R: Serialize>(
    func: usize,
    args: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    // SAFETY: as in `run_task`.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    let items: Vec<A> =
        postcard::from_bytes(args).map_err(|e| format!("cannot deserialize the arguments: {e}"))?;
    let out: Vec<R> = items.into_iter().map(f).collect();
    postcard::to_allocvec(&out).map_err(|e| format!("cannot serialize the result: {e}"))
}

impl Pool {
    /// A pool of `processes` workers.
    ///
    /// # Errors
    /// As for [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for a pool with an initializer or `max_tasks_per_child`.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.processes
    }

    fn submit(
        &self,
        call: Trampoline,
        func: usize,
        args: Result<Vec<u8>>,
        callback: Option<Callback>,
    ) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(self.owner, callback));
        if !self.is_owner() {
            slot.complete(Outcome::Foreign);
            return slot;
        }
        let args = match args {
            Ok(a) => a,
            Err(e) => {
                slot.complete(Outcome::Panicked(e.to_string()));
                return slot;
            }
        };
        let mut state = lock(&self.shared.state);
        if state.closed || state.terminating {
            let outcome = if state.terminating {
                Outcome::Terminated
            } else {
                Outcome::Closed
            };
            drop(state);
            slot.complete(outcome);
            return slot;
        }
        state.pending.push_back(Job {
            call: call as usize,
            func,
            args,
            slot: slot.clone(),
        });
        drop(state);
        self.shared.wake();
        slot
    }

    /// Whether this is the process that created the pool (not a forked child).
    fn is_owner(&self) -> bool {
        sys::getpid() == self.owner
    }

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
        postcard::to_allocvec(value).map_err(|e| Error::Serialize(e.to_string()))
    }

    /// Runs `f(args)` in a worker and returns its result (blocking).
    ///
    /// # Errors
    /// As for [`AsyncResult::get`]; [`Error::PoolClosed`] after close.
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(f, args).get()
    }

    /// Submits `f(args)` and returns at once.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let slot = self.submit(run_task::<A, R>, f as usize, Self::encode(&args), None);
        AsyncResult {
            slot,
            _result: PhantomData,
        }
    }

    /// As [`apply_async`](Pool::apply_async), running `on_success` with the
    /// result or `on_error` with the error in this process (on the pool's
    /// manager thread) when the task ends.
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        on_success: impl FnOnce(R) + Send + 'static,
        on_error: impl FnOnce(Error) + Send + 'static,
    ) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let callback: Callback = Box::new(move |o: &Outcome| match decode::<R>(o.clone()) {
            Ok(r) => on_success(r),
            Err(e) => on_error(e),
        });
        let slot = self.submit(
            run_task::<A, R>,
            f as usize,
            Self::encode(&args),
            Some(callback),
        );
        AsyncResult {
            slot,
            _result: PhantomData,
        }
    }

    /// Runs a fallible task: its `Err` fails it like a panic does
    /// ([`Error::TaskFailed`] with the error's text), blocking.
    ///
    /// # Errors
    /// As for [`AsyncResult::get`].
    pub fn try_apply<A, R, E>(&self, f: fn(A) -> std::result::Result<R, E>, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        E: std::fmt::Display,
    {
        self.try_apply_async(f, args).get()
    }

    /// Submits a fallible task: its `Err` makes the result an
    /// [`Error::TaskFailed`] with the error's text (and runs no success callback).
    pub fn try_apply_async<A, R, E>(
        &self,
        f: fn(A) -> std::result::Result<R, E>,
        args: A,
    ) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        E: std::fmt::Display,
    {
        let slot = self.submit(
            run_fallible::<A, R, E>,
            f as usize,
            Self::encode(&args),
            None,
        );
        AsyncResult {
            slot,
            _result: PhantomData,
        }
    }

    /// Python's default chunk size: ceil(n / (4 × workers)).
    fn chunksize(&self, n: usize) -> usize {
        n.div_ceil(4 * self.processes).max(1)
    }

    /// Submits `items` in chunks of `size`, each run in a worker by `call`
    /// on the function at `func`; `callback` gives each chunk's completion
    /// callback, if any.
    fn submit_chunks<T: Serialize, R>(
        &self,
        call: Trampoline,
        func: usize,
        items: Vec<T>,
        size: usize,
        mut callback: impl FnMut() -> Option<Callback>,
    ) -> MapResult<R> {
        let mut chunks = Vec::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<T> = items.by_ref().take(size.max(1)).collect();
            chunks.push(AsyncResult {
                slot: self.submit(call, func, Self::encode(&chunk), callback()),
                _result: PhantomData,
            });
        }
        MapResult { chunks }
    }

    /// `f` over `items` in chunks of `chunksize` (Python's default if `None`).
    fn map_chunks<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> MapResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let size = chunksize.unwrap_or_else(|| self.chunksize(items.len()));
        self.submit_chunks(run_chunk::<A, R>, f as usize, items, size, || None)
    }

    /// Applies `f` to every item in worker processes and returns the
    /// results in order (blocking). Items go in chunks of Python's default size.
    ///
    /// # Errors
    /// The first error of any chunk, as for [`AsyncResult::get`].
    pub fn map<A, R>(&self, f: fn(A) -> R, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunked(f, items, None)
    }

    /// As [`map`](Pool::map), with `chunksize` items per task.
    ///
    /// # Errors
    /// As for [`map`](Pool::map).
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunks(f, items, chunksize).get()
    }

    /// As [`map`](Pool::map), returning at once (Python's `map_async`).
    pub fn map_async<A, R>(&self, f: fn(A) -> R, items: impl IntoIterator<Item = A>) -> MapResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunks(f, items, None)
    }

    /// As [`map`](Pool::map) for functions of two arguments, applied to pairs
    /// (Python's `starmap`).
    ///
    /// # Errors
    /// As for [`map`](Pool::map).
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        // A pair-taking fn pointer cannot be made from `f` without a closure,
        // so the pairs travel with `f`'s address and are unpacked in the worker.
        fn run_pairs<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
            func: usize,
            args: &[u8],
        ) -> std::result::Result<Vec<u8>, String> {
            // SAFETY: as in `run_task`, for an `fn(A, B) -> R`.
            let f: fn(A, B) -> R = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(func) };
            let items: Vec<(A, B)> = postcard::from_bytes(args)
                .map_err(|e| format!("cannot deserialize the arguments: {e}"))?;
            let out: Vec<R> = items.into_iter().map(|(a, b)| f(a, b)).collect();
            postcard::to_allocvec(&out).map_err(|e| format!("cannot serialize the result: {e}"))
        }
        let items: Vec<(A, B)> = items.into_iter().collect();
        let size = self.chunksize(items.len());
        self.submit_chunks(run_pairs::<A, B, R>, f as usize, items, size, || None)
            .get()
    }

    /// Applies `f` to every item; the results come back lazily, in order, as
    /// an iterator (Python's `imap`). All chunks are submitted at once.
    pub fn imap<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> impl Iterator<Item = Result<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunks(f, items, chunksize.or(Some(1)))
            .chunks
            .into_iter()
            .flat_map(|chunk| per_item(chunk.get()))
    }

    /// As [`imap`](Pool::imap), yielding each result as soon as its chunk is
    /// done, in whatever order (Python's `imap_unordered`).
    pub fn imap_unordered<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> impl Iterator<Item = Result<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<R>>>();
        let items: Vec<A> = items.into_iter().collect();
        let each_chunk = || -> Option<Callback> {
            let tx = tx.clone();
            Some(Box::new(move |o: &Outcome| {
                let _ = tx.send(decode::<Vec<R>>(o.clone()));
            }))
        };
        // Results arrive through the callbacks, not the handles.
        let _: MapResult<R> = self.submit_chunks(
            run_chunk::<A, R>,
            f as usize,
            items,
            chunksize.unwrap_or(1),
            each_chunk,
        );
        drop(tx);
        rx.into_iter().flat_map(per_item)
    }

    /// Accepts no more tasks; queued ones still run. Follow with [`join`](Pool::join).
    /// Does nothing in a process other than the pool's.
    pub fn close(&self) {
        if self.is_owner() {
            lock(&self.shared.state).closed = true;
            self.shared.wake();
        }
    }

    /// Stops the workers at once (`SIGKILL`); tasks not finished fail with
    /// [`Error::PoolTerminated`]. Does nothing in a process other than the pool's.
    pub fn terminate(&self) {
        if self.is_owner() {
            lock(&self.shared.state).terminating = true;
            self.shared.wake();
        }
    }

    /// Waits for the workers to exit: after [`close`](Pool::close), once every
    /// queued task has run; after [`terminate`](Pool::terminate), at once.
    ///
    /// # Errors
    /// [`Error::ProcessState`] if the pool is neither closed nor terminated,
    /// or in a process other than the pool's.
    pub fn join(&mut self) -> Result<()> {
        if !self.is_owner() {
            return Err(foreign_error());
        }
        {
            let state = lock(&self.shared.state);
            if !state.closed && !state.terminating {
                return Err(Error::ProcessState {
                    name: "Pool".into(),
                    what: "join before close or terminate",
                });
            }
        }
        if let Some(m) = self.manager.take() {
            let _ = m.join();
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.is_owner() {
            // The manager thread is the parent's: there is nothing to join here.
            std::mem::forget(self.manager.take());
            return;
        }
        self.terminate();
        if let Some(m) = self.manager.take() {
            let _ = m.join();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The manager thread.

struct Worker {
    /// Names this worker only, even after it exits (for `SIGKILL`).
    pidfd: OwnedFd,
    /// Its fork server reports its exit code here; nothing else reads it.
    status: OwnedFd,
    conn: Connection,
    /// The task it runs, if any.
    busy: Option<Arc<Slot>>,
    /// Tasks given to it so far.
    given: u64,
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
                -libc::SIGKILL
            })
        })
    }

    fn kill(&self) {
        let _ = sys::pidfd_signal(&self.pidfd, libc::SIGKILL);
    }
}

struct Manager {
    shared: Arc<Shared>,
    config: Config,
    workers: Vec<Worker>,
    /// Forks the workers. Dropped after them (fields drop in order), which
    /// stops it.
    server: ForkServer,
}

impl Manager {
    /// Forks the pool's fork server, then has it start `processes` workers.
    fn start(shared: Arc<Shared>, config: Config, processes: usize) -> Result<Manager> {
        let server = ForkServer::start(
            "PoolForkServer",
            Box::new(move |_, fds| match fds.into_iter().next() {
                Some(fd) => {
                    worker_main(&mut Connection::from_socket(fd), config);
                    0
                }
                None => 1,
            }),
        )?;
        let mut manager = Manager {
            shared,
            config,
            workers: Vec::new(),
            server,
        };
        (0..processes).try_for_each(|_| manager.start_worker())?;
        Ok(manager)
    }

    fn start_worker(&mut self) -> Result<()> {
        let (ours, theirs) = sys::socketpair().map_err(|e| Error::io("socketpair", e))?;
        let path = next_child_path();
        let name = path_name("ForkServerPoolWorker", &path);
        let served = self
            .server
            .fork(&name, &path, Vec::new(), &[theirs.as_fd()])?;
        self.workers.push(Worker {
            pidfd: served.pidfd,
            status: served.status,
            conn: Connection::from_socket(ours),
            busy: None,
            given: 0,
            gone: false,
        });
        Ok(())
    }

    fn can_take_work(&self, w: &Worker) -> bool {
        w.busy.is_none()
            && !w.gone
            && (self.config.max_tasks == 0 || w.given < self.config.max_tasks)
    }

    fn run(&mut self) {
        loop {
            let (terminating, finished) = self.dispatch();
            if terminating {
                self.kill_all();
                return;
            }
            if finished {
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
        let mut state = lock(&shared.state);
        if state.terminating {
            for job in state.pending.drain(..) {
                job.slot.complete(Outcome::Terminated);
            }
            return (true, false);
        }
        for i in 0..self.workers.len() {
            if !self.can_take_work(&self.workers[i]) {
                continue;
            }
            let Some(job) = state.pending.pop_front() else {
                break;
            };
            let w = &mut self.workers[i];
            let sent = w.conn.send(&Request::Run {
                call: job.call,
                func: job.func,
                args: job.args,
            });
            w.given += 1;
            w.busy = Some(job.slot);
            if sent.is_err() {
                // The worker is gone; its death is handled with the others.
                w.gone = true;
            }
        }
        let idle = self.workers.iter().all(|w| w.busy.is_none());
        (false, state.closed && state.pending.is_empty() && idle)
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
        let Ok(ready) = sys::poll_readable(&fds, sys::Deadline::Never) else {
            return;
        };
        if ready[0] {
            sys::eventfd_read(&self.shared.wake);
        }
        let server_gone = ready[1];
        let mut exited = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            if ready[2 + 2 * i] {
                match w.conn.recv::<std::result::Result<Vec<u8>, String>>() {
                    Ok(r) => {
                        if let Some(slot) = w.busy.take() {
                            slot.complete(match r {
                                Ok(bytes) => Outcome::Done(bytes),
                                Err(msg) => Outcome::Panicked(msg),
                            });
                        }
                    }
                    Err(_) => w.gone = true,
                }
            }
            if let Some(code) = w.exit_code(ready[3 + 2 * i], server_gone) {
                exited.push((i, code));
            }
        }
        // Highest index first, so that the indexes stay valid while removing.
        for (i, code) in exited.into_iter().rev() {
            let w = self.workers.swap_remove(i);
            if let Some(slot) = w.busy {
                slot.complete(Outcome::WorkerDied(code));
            }
            if self.start_worker().is_err() {
                // Could not replace it (fork failed): fail what waits rather
                // than hang once no worker is left.
                if self.workers.is_empty() {
                    let mut state = lock(&self.shared.state);
                    state.terminating = true;
                }
            }
        }
    }

    fn stop_all(&mut self) {
        for w in &mut self.workers {
            let _ = w.conn.send(&Request::Stop);
        }
        for w in &self.workers {
            if w.join(&self.server, Deadline::after(Duration::from_secs(10)))
                .is_none()
            {
                w.kill();
                w.join(&self.server, Deadline::Never);
            }
        }
    }

    fn kill_all(&mut self) {
        for w in &self.workers {
            w.kill();
        }
        for w in &mut self.workers {
            w.join(&self.server, Deadline::Never);
            if let Some(slot) = w.busy.take() {
                slot.complete(Outcome::Terminated);
            }
        }
    }
}

/// A worker's life: run the initializer, then tasks until told to stop,
/// the pipe closes, or `max_tasks` are done.
fn worker_main(conn: &mut Connection, config: Config) {
    if let Some(init) = config.initializer {
        init();
    }
    let mut done = 0;
    while let Ok(Request::Run { call, func, args }) = conn.recv::<Request>() {
        // SAFETY: `call` is the address of a `Trampoline` taken in the parent
        // (`Pool::submit`), valid in this image: a fork of the fork server,
        // itself a fork of the parent.
        let call: Trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(call) };
        let result = catch_unwind(AssertUnwindSafe(|| call(func, &args))).unwrap_or_else(|panic| {
            Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic with a non-string payload".into()))
        });
        if conn.send(&result).is_err() {
            return;
        }
        done += 1;
        if config.max_tasks > 0 && done >= config.max_tasks {
            return;
        }
    }
}
