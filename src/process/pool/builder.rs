//! [`PoolBuilder`]: a pool's size, initializer and worker lifetime; it
//! starts the scheduler thread.

use std::sync::{Arc, Mutex};

use super::queue::Queue;
use super::scheduler::{Config, Scheduler, Shared, State};
use super::Pool;
use crate::error::{Error, Result};
use crate::process::cpu_count;
use crate::sys;

/// Configures a [`Pool`] (Python's `Pool(processes, initializer,
/// maxtasksperchild)`).
///
/// # Example
/// ```
/// use multiproc::Pool;
/// fn setup() {}
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(setup)
///     .max_tasks_per_child(100)
///     .build()?;
/// assert_eq!(pool.processes(), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Default, Debug)]
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
    ///
    /// A worker is given no task before its initializer returns: a slow
    /// one holds up no task another worker is ready to run. One that
    /// panics or exits ends its worker, which the pool replaces (for ever,
    /// as Python's does, for one that always fails). While another worker
    /// that started well is there to run the tasks, such a death fails
    /// none, as in Python; while none is, each fails the next waiting task
    /// with [`Error::WorkerDied`] (Python's tasks wait for ever).
    pub fn initializer(mut self, f: fn()) -> Self {
        self.initializer = Some(f);
        self
    }

    /// Replace each worker after it has run `n` tasks (Python's
    /// `maxtasksperchild`); 0, the default, for never.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 processes; [`Error::Io`] (or
    /// another error of starting a process) if a worker cannot be started.
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
        // The scheduler thread forks the fork server first thing, and owns
        // it: the server ends when the scheduler is done, or with this process.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let scheduler_shared = shared.clone();
        let scheduler = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(
                move || match Scheduler::start(scheduler_shared, config, processes) {
                    Ok(mut scheduler) => {
                        let _ = started_tx.send(Ok(()));
                        scheduler.run();
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                },
            )
            .map_err(|e| Error::io("spawn the pool's scheduler thread", e))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Pool {
                queue: Queue {
                    shared,
                    owner: sys::getpid(),
                    scheduler: scheduler.thread().id(),
                },
                scheduler: Mutex::new(Some(scheduler)),
                processes,
                finalized: std::sync::atomic::AtomicBool::new(false),
            }),
            Ok(Err(e)) => {
                let _ = scheduler.join();
                Err(e)
            }
            Err(_) => Err(Error::io(
                "start the pool's scheduler thread",
                std::io::Error::other("it exited early"),
            )),
        }
    }
}
