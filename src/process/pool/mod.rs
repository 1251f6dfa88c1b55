//! [`Pool`]: tasks run on a set of worker processes.
//!
//! One scheduler thread in the parent owns the workers. Each worker has a
//! pipe of its own and is given one task at a time, so the parent always
//! knows which task a worker holds: when a worker dies, that task fails
//! with [`Error::WorkerDied`] and a new worker takes its place. Nothing
//! waits for a worker that is gone (Python's `Pool` hangs there): the
//! scheduler reads results and sends orders without ever blocking on a
//! worker's socket, so a worker that dies half-way through either, its
//! socket still open in a process forked meanwhile, fails its task only.
//!
//! Every worker, first or replacement, is forked by the pool's own fork
//! server (see `forkserver`), which the scheduler thread forks before it
//! does anything else: a worker never inherits a lock that a thread of the
//! parent held when the worker started (only one held when the pool was
//! created). The workers are the server's children, reaped by it; the
//! scheduler learns each exit code on the worker's status socket, which
//! nothing else in the process reads, so no other reaper
//! (`active_children`, another `Process::start`) can make the pool lose a
//! worker.
//!
//! A pool belongs to the process that made it: used from a forked child it
//! is an error (the child has no scheduler thread), and it touches none of
//! its locks there, which a fork may have copied while held.
//!
//! The files: this one is the public API; `builder` the [`PoolBuilder`],
//! which starts the scheduler thread; `task` the [`Task`] trait and
//! the one trampoline through which a worker calls a task; `queue` the
//! submission of tasks; `imap` the iterators that submit their input as
//! their results are taken; `result` the handles on results;
//! `scheduler` the scheduler thread; `worker` the worker's loop.
//!
//! The lifecycle is logged at debug level with Python's words (`added
//! worker`, `closing pool`, `worker exiting after 3 tasks`, …), through the
//! `log` crate: see [`log_to_stderr`](crate::process::log_to_stderr).

mod builder;
mod imap;
mod queue;
#[cfg(feature = "redis")]
pub mod remote;
mod result;
mod scheduler;
pub(crate) mod task;
mod worker;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use self::builder::PoolBuilder;
use self::queue::{Code, Feed, Queue};
use self::result::{decode, foreign_error, Callback, Chunk, TaskOutcome};
pub use self::result::{AsyncResult, MapResult};
pub use self::task::Task;
use self::task::{Fallible, Finish, Plain};
use crate::error::{Error, Result};
use crate::poison::{self, locked};
use crate::process::logging;

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Tasks are functions of 0 to 6 arguments (see [`Task`]): function items
/// or closures that capture nothing, with serde arguments and results.
/// They run in workers forked by a fork server that the pool forks when it
/// is created (Python's `forkserver` start method), so the workers see
/// this process's memory as it was then, and no lock that another thread
/// takes later: create pools before starting threads that hold locks the
/// tasks need. A task that panics (or, run with
/// [`try_apply`](Pool::try_apply), returns `Err`) makes its result an
/// [`Error::TaskFailed`]; a worker that dies mid-task (killed, crashed, or
/// `exit` called) makes it [`Error::WorkerDied`], and is replaced.
///
/// Every method takes `&self`: a pool can be shared between threads (in an
/// `Arc`), and any of them may [`close`](Pool::close), [`terminate`](Pool::terminate)
/// or [`join`](Pool::join) it, as in Python. Dropping a pool terminates
/// it, as leaving Python's `with Pool() as p:` block does: call `close`
/// and `join` first to let queued tasks finish.
///
/// Processes that a task starts end with its worker (they are killed when
/// the worker exits), where Python forbids pool workers to have children.
///
/// # Example
/// ```
/// use multiproc::Pool;
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
/// fn answer() -> u64 {
///     42
/// }
/// let pool = Pool::new()?; // cpu_count() workers
/// assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
/// assert_eq!(pool.apply(add, (2, 3))?, 5);
/// assert_eq!(pool.apply(answer, ())?, 42);
/// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
/// assert_eq!(pool.map(|x: u64| x + 1, [1, 2])?, [2, 3]);
/// let r = pool.apply_async(square, 7);
/// assert_eq!(r.get()?, 49);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Pool {
    /// Where tasks go, and the scheduler thread, which runs the callbacks:
    /// one that joins or drops the pool there must not wait for that very
    /// thread.
    queue: Queue,
    /// Taken by the first `join` (or drop), which waits for the thread;
    /// other joiners wait on the lock meanwhile.
    scheduler: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
    /// Whether "finalizing pool" was logged.
    finalized: std::sync::atomic::AtomicBool,
}

impl Pool {
    /// A pool of [`cpu_count`](crate::process::cpu_count) workers (Python's `Pool()`).
    ///
    /// # Errors
    /// As for [`PoolBuilder::build`].
    pub fn new() -> Result<Pool> {
        Pool::builder().build()
    }

    /// A pool of `processes` workers (Python's `Pool(processes)`).
    ///
    /// # Errors
    /// As for [`PoolBuilder::build`].
    pub fn with_processes(processes: usize) -> Result<Pool> {
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

    /// Whether the calling thread is the pool's scheduler thread (in a
    /// callback).
    fn on_scheduler_thread(&self) -> bool {
        self.queue.on_scheduler_thread()
    }

    /// Whether this is the process that created the pool (not a forked child).
    fn is_owner(&self) -> bool {
        self.queue.is_owner()
    }

    /// `items` (argument lists of `task`), to be submitted in chunks of
    /// `size`, each run in a worker by one call of the trampoline.
    fn feed<M, T, K, I>(&self, task: T, items: I, size: usize) -> Feed<I::IntoIter>
    where
        T: Task<M>,
        K: Finish<T::Output>,
        I: IntoIterator<Item = T::Args>,
    {
        Feed::new(
            self.queue.clone(),
            Code::of::<M, T, K>(task),
            items.into_iter(),
            size,
        )
    }

    /// One call of `task` as a chunk of one.
    fn submit_call<M, T, K>(
        &self,
        task: T,
        args: T::Args,
        callback: Option<Callback>,
    ) -> AsyncResult<K::Value>
    where
        T: Task<M>,
        K: Finish<T::Output>,
        K::Value: DeserializeOwned,
    {
        let chunk = self
            .queue
            .submit_chunk(&Code::of::<M, T, K>(task), &[args], callback);
        AsyncResult { chunk }
    }

    /// Runs `f(args…)` in a worker and returns its result (blocking;
    /// Python's `apply`). `args` is `()` for a function of no argument, the
    /// argument itself for one, a tuple for several.
    ///
    /// # Errors
    /// As for [`AsyncResult::get`]; [`Error::PoolClosed`] after close.
    pub fn apply<M, T>(&self, f: T, args: T::Args) -> Result<T::Output>
    where
        T: Task<M>,
        T::Output: Serialize + DeserializeOwned,
    {
        self.apply_async(f, args).get()
    }

    /// Submits `f(args…)` and returns at once (Python's `apply_async`).
    pub fn apply_async<M, T>(&self, f: T, args: T::Args) -> AsyncResult<T::Output>
    where
        T: Task<M>,
        T::Output: Serialize + DeserializeOwned,
    {
        self.submit_call::<M, T, Plain>(f, args, None)
    }

    /// As [`apply_async`](Pool::apply_async), running `callback` with the
    /// result in this process (on the pool's scheduler thread) if the task
    /// succeeds (Python's `apply_async(f, args, callback=…)`); a failure
    /// is only in the returned result.
    ///
    /// # Example
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = multiproc::Pool::with_processes(1)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.apply_async_with(square, 3, move |r| tx.send(r).unwrap());
    /// assert_eq!(rx.recv().unwrap(), 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async_with<M, T>(
        &self,
        f: T,
        args: T::Args,
        callback: impl FnOnce(T::Output) + Send + 'static,
    ) -> AsyncResult<T::Output>
    where
        T: Task<M>,
        T::Output: Serialize + DeserializeOwned,
    {
        self.apply_async_with_error_callback(f, args, callback, |_| {})
    }

    /// As [`apply_async_with`](Pool::apply_async_with), also running
    /// `error_callback` with the error if the task fails (Python's
    /// `error_callback=…`). A submission the pool refuses (closed,
    /// terminated, or made from another process) runs neither callback and
    /// fails in its result, where Python's `apply_async` raises.
    pub fn apply_async_with_error_callback<M, T>(
        &self,
        f: T,
        args: T::Args,
        callback: impl FnOnce(T::Output) + Send + 'static,
        error_callback: impl FnOnce(Error) + Send + 'static,
    ) -> AsyncResult<T::Output>
    where
        T: Task<M>,
        T::Output: Serialize + DeserializeOwned,
    {
        let callback = Callback::user(move |o: &TaskOutcome| {
            // A `Deserialize` that panics fails the result: the panic,
            // caught by the scheduler thread, would lose it (neither
            // callback would run).
            let decoded = catch_unwind(AssertUnwindSafe(|| {
                decode::<T::Output>(o.clone()).and_then(result::only)
            }))
            .unwrap_or_else(|panic| {
                Err(Error::Deserialize(format!(
                    "decoding the result panicked: {}",
                    result::panic_text(panic)
                )))
            });
            match decoded {
                Ok(r) => callback(r),
                Err(e) => error_callback(e),
            }
        });
        self.submit_call::<M, T, Plain>(f, args, Some(callback))
    }

    /// Runs a fallible task: its `Err` fails it like a panic does
    /// ([`Error::TaskFailed`] with the error's text), blocking.
    ///
    /// # Errors
    /// As for [`AsyncResult::get`].
    pub fn try_apply<M, T, R, E>(&self, f: T, args: T::Args) -> Result<R>
    where
        T: Task<M, Output = std::result::Result<R, E>>,
        R: Serialize + DeserializeOwned,
        E: std::fmt::Display,
    {
        self.try_apply_async(f, args).get()
    }

    /// Submits a fallible task: its `Err` makes the result an
    /// [`Error::TaskFailed`] with the error's text.
    pub fn try_apply_async<M, T, R, E>(&self, f: T, args: T::Args) -> AsyncResult<R>
    where
        T: Task<M, Output = std::result::Result<R, E>>,
        R: Serialize + DeserializeOwned,
        E: std::fmt::Display,
    {
        self.submit_call::<M, T, Fallible>(f, args, None)
    }

    /// Python's default chunk size: ceil(n / (4 × workers)).
    fn chunksize(&self, n: usize) -> usize {
        n.div_ceil(4 * self.processes).max(1)
    }

    /// `f` over argument lists in chunks of `chunksize` (Python's default
    /// if `None`).
    fn map_chunks<M, T>(
        &self,
        f: T,
        items: Vec<T::Args>,
        chunksize: Option<usize>,
    ) -> MapResult<T::Output>
    where
        T: Task<M>,
        T::Output: Serialize + DeserializeOwned,
    {
        let size = chunksize.unwrap_or_else(|| self.chunksize(items.len()));
        let mut feed = self.feed::<M, T, Plain, _>(f, items, size);
        let mut chunks: Vec<Chunk<T::Output>> =
            std::iter::from_fn(|| feed.submit(|_| None)).collect();
        if chunks.is_empty() {
            chunks.extend(self.queue.refused(|| None));
        }
        MapResult { chunks }
    }

    /// Applies the one-argument function `f` to every item in worker
    /// processes and returns the results in order (blocking; Python's
    /// `map`). Items go in chunks of Python's default size.
    ///
    /// # Errors
    /// Once every chunk is done, the error of the one that failed first
    /// (in time, as Python's: not the first in order), as for
    /// [`AsyncResult::get`].
    pub fn map<A, R, T>(&self, f: T, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        T: Task<fn(A) -> R, Args = A, Output = R>,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunked(f, items, None)
    }

    /// As [`map`](Pool::map), with `chunksize` items per task.
    ///
    /// # Errors
    /// As for [`map`](Pool::map).
    pub fn map_chunked<A, R, T>(
        &self,
        f: T,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        T: Task<fn(A) -> R, Args = A, Output = R>,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunks(f, items.into_iter().collect(), chunksize)
            .get()
    }

    /// As [`map`](Pool::map), returning at once (Python's `map_async`).
    pub fn map_async<A, R, T>(&self, f: T, items: impl IntoIterator<Item = A>) -> MapResult<R>
    where
        T: Task<fn(A) -> R, Args = A, Output = R>,
        R: Serialize + DeserializeOwned,
    {
        self.map_chunks(f, items.into_iter().collect(), None)
    }

    /// Calls `f` with each item's arguments, as [`apply`](Pool::apply)
    /// takes them (a tuple for a function of several arguments, up to 6),
    /// and returns the results in order (Python's `starmap`).
    ///
    /// # Errors
    /// As for [`map`](Pool::map).
    pub fn starmap<M, T>(
        &self,
        f: T,
        items: impl IntoIterator<Item = T::Args>,
    ) -> Result<Vec<T::Output>>
    where
        T: Task<M>,
        T::Output: Serialize + DeserializeOwned,
    {
        self.starmap_async(f, items).get()
    }

    /// As [`starmap`](Pool::starmap), returning at once (Python's `starmap_async`).
    pub fn starmap_async<M, T>(
        &self,
        f: T,
        items: impl IntoIterator<Item = T::Args>,
    ) -> MapResult<T::Output>
    where
        T: Task<M>,
        T::Output: Serialize + DeserializeOwned,
    {
        self.map_chunks(f, items.into_iter().collect(), None)
    }

    /// Applies `f` to every item; the results come back lazily, in order, as
    /// an iterator (Python's `imap`, chunks of one by default). All chunks
    /// are submitted at once: the whole input is read before the call
    /// returns (for an endless or very long one, see
    /// [`imap_buffered`](Pool::imap_buffered)).
    ///
    /// There is one result per item: each item of a chunk that failed (a
    /// panic, a dead worker) is that chunk's error, and the iteration goes
    /// on (Python's ends at a failed chunk of more than one item).
    pub fn imap<A, R, T>(
        &self,
        f: T,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> impl Iterator<Item = Result<R>>
    where
        T: Task<fn(A) -> R, Args = A, Output = R>,
        A: Serialize,
        R: Serialize + DeserializeOwned,
    {
        let feed = self.feed::<fn(A) -> R, T, Plain, _>(f, items, chunksize.unwrap_or(1));
        imap::Ordered::submit_all(feed)
    }

    /// As [`imap`](Pool::imap), reading the input as the results are
    /// taken (Python 3.16's `imap(…, buffersize=…)`): at most `buffersize`
    /// chunks (at least one) are submitted and not taken yet, each chunk
    /// taken letting one more be read. An endless or very long input runs
    /// in bounded memory, and the first results come before it has been
    /// read. The input is read on the thread that iterates (Python's on a
    /// thread of the pool's), so one that waits holds up the next result.
    /// Once the pool is closed or terminated, the reading stops: the next
    /// chunk is that error ([`Error::PoolClosed`], [`Error::PoolTerminated`]),
    /// and the last. Dropping the iterator stops the reading too (the
    /// chunks submitted still run).
    ///
    /// # Example
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = multiproc::Pool::with_processes(2)?;
    /// let endless = pool.imap_buffered(square, 1.., None, 8);
    /// let first: Vec<u64> = endless.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_buffered<A, R, T>(
        &self,
        f: T,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        buffersize: usize,
    ) -> impl Iterator<Item = Result<R>>
    where
        T: Task<fn(A) -> R, Args = A, Output = R>,
        A: Serialize,
        R: Serialize + DeserializeOwned,
    {
        let feed = self.feed::<fn(A) -> R, T, Plain, _>(f, items, chunksize.unwrap_or(1));
        imap::Ordered::new(feed.stopping_when_refused(), buffersize.max(1))
    }

    /// As [`imap`](Pool::imap), yielding each result as soon as its chunk is
    /// done, in whatever order (Python's `imap_unordered`). Iterated in one
    /// of the same pool's callbacks (wherever the iterator was made), a
    /// chunk not done yet yields a [`Error::PoolState`] at once, as with
    /// `imap` (see [`AsyncResult::get`]);
    /// in a forked child that took the iterator, every chunk not yielded
    /// yet does (the results arrive in the pool's process only).
    pub fn imap_unordered<A, R, T>(
        &self,
        f: T,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> impl Iterator<Item = Result<R>>
    where
        T: Task<fn(A) -> R, Args = A, Output = R>,
        A: Serialize,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let feed = self.feed::<fn(A) -> R, T, Plain, _>(f, items, chunksize.unwrap_or(1));
        imap::Unordered::submit_all(feed)
    }

    /// As [`imap_unordered`](Pool::imap_unordered), reading the input as
    /// the results are taken, as [`imap_buffered`](Pool::imap_buffered) does.
    pub fn imap_unordered_buffered<A, R, T>(
        &self,
        f: T,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        buffersize: usize,
    ) -> impl Iterator<Item = Result<R>>
    where
        T: Task<fn(A) -> R, Args = A, Output = R>,
        A: Serialize,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let feed = self.feed::<fn(A) -> R, T, Plain, _>(f, items, chunksize.unwrap_or(1));
        imap::Unordered::new(feed.stopping_when_refused(), buffersize.max(1))
    }

    /// Accepts no more tasks; queued ones still run. Follow with
    /// [`join`](Pool::join). Does nothing in a process other than the pool's.
    pub fn close(&self) {
        logging::debug_record!("closing pool");
        if self.is_owner() {
            locked(&self.queue.shared.state).closed = true;
            self.queue.shared.wake();
        }
    }

    /// Stops the workers at once (`SIGKILL`); tasks not finished fail with
    /// [`Error::PoolTerminated`]. Does nothing in a process other than the pool's.
    pub fn terminate(&self) {
        logging::debug_record!("terminating pool");
        if self.is_owner() {
            locked(&self.queue.shared.state).terminating = true;
            self.queue.shared.wake();
        }
        self.finalize();
    }

    /// Logs Python's finalizer's first words, once (the scheduler thread,
    /// told to terminate, does the rest).
    fn finalize(&self) {
        if !self
            .finalized
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            logging::debug_record!("finalizing pool");
        }
    }

    /// Waits for the workers to exit: after [`close`](Pool::close), once every
    /// queued task has run; after [`terminate`](Pool::terminate), at once.
    /// Several threads may join at once; each returns when the workers are gone.
    ///
    /// # Errors
    /// [`Error::PoolState`] if the pool is neither closed nor terminated
    /// (Python's "Pool is still running"), in a process other than the
    /// pool's, or in one of the pool's callbacks (which run on the thread
    /// that join would wait for).
    pub fn join(&self) -> Result<()> {
        logging::debug_record!("joining pool");
        if !self.is_owner() {
            return Err(foreign_error());
        }
        {
            let state = locked(&self.queue.shared.state);
            if !state.closed && !state.terminating {
                return Err(Error::PoolState(
                    "still running: join needs close or terminate first",
                ));
            }
        }
        if self.on_scheduler_thread() {
            // Python's "cannot join current thread".
            return Err(Error::PoolState(
                "cannot join the pool from its own callback (the thread it would wait for)",
            ));
        }
        if let Some(scheduler) = locked(&self.scheduler).take() {
            let _ = scheduler.join();
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // No lock here: in a forked child one may have been copied held.
        let scheduler = poison::get_mut(&mut self.scheduler).take();
        if !self.is_owner() {
            // The scheduler thread is the parent's: there is nothing to join here.
            std::mem::forget(scheduler);
            return;
        }
        match scheduler {
            // The last handle, dropped by a callback on the scheduler
            // thread: that thread ends the pool once the callback returns.
            Some(_) if self.on_scheduler_thread() => self.terminate(),
            // Python's `with Pool()` exit: `terminate`.
            Some(scheduler) => {
                self.terminate();
                let _ = scheduler.join();
            }
            // Closed and joined: only the finalizer is left.
            None => self.finalize(),
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
