//! The table of scenarios: what each one measures in multiproc, and which
//! OS baseline it measures beside it.

use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use multiproc::{Array, Lock, Process, RawValue, Semaphore, Value};
use multiproc_cli::baseline::{
    fork_exit_wait, AsyncEventPair, AsyncQueue, EventFdPingPong, EventPair, PipePingPong,
    PosixSemaphore, RawAtomic, RawFutexPingPong, RawLockedArray, RawSocketPingPong,
    RawSocketStream, RobustPthreadMutex,
};

use super::measure::{
    items_per_sec, managed_rate, median, ms_per_process, ns_per_acquire, ns_per_lock, paired,
    raw_round_trips_per_sec, sums_per_sec, two_process_rate, us_per_round_trip, ManagerOp, Size,
};
use super::{Layer, Measured, Unit};

/// One row of the table.
pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) layer: Layer,
    pub(super) unit: Unit,
    /// Measures multiproc and the baseline (alternating, median of repeats).
    pub(super) run: fn(&Size) -> Result<Measured>,
    /// The workload size given to the Python script, if Python can do it.
    pub(super) python_n: Option<fn(&Size) -> u64>,
}

pub(super) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "lock_uncontended",
        layer: Layer::Shared,
        unit: Unit::Ns,
        run: lock_uncontended,
        python_n: Some(|s| s.pick(1_000_000, 200_000)),
    },
    Scenario {
        name: "value_locked_incr_2proc",
        layer: Layer::Shared,
        unit: Unit::OpsPerSec,
        run: value_locked_incr_2proc,
        python_n: Some(|s| s.pick(300_000, 50_000)),
    },
    Scenario {
        name: "semaphore_uncontended",
        layer: Layer::Shared,
        unit: Unit::Ns,
        run: semaphore_uncontended,
        python_n: Some(|s| s.pick(1_000_000, 200_000)),
    },
    Scenario {
        name: "event_pingpong",
        layer: Layer::Shared,
        unit: Unit::Us,
        run: event_pingpong,
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "event_pingpong_async",
        layer: Layer::Shared,
        unit: Unit::Us,
        run: event_pingpong_async,
        python_n: None,
    },
    Scenario {
        name: "queue_items_2proc",
        layer: Layer::Shared,
        unit: Unit::OpsPerSec,
        run: queue_items_2proc,
        python_n: Some(|s| s.pick(200_000, 50_000)),
    },
    Scenario {
        name: "queue_items_async",
        layer: Layer::Shared,
        unit: Unit::OpsPerSec,
        run: queue_items_async,
        python_n: None,
    },
    Scenario {
        name: "pipe_pingpong",
        layer: Layer::Sockets,
        unit: Unit::Us,
        run: pipe_pingpong,
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "value_atomic_incr_2proc",
        layer: Layer::Shared,
        unit: Unit::OpsPerSec,
        run: value_atomic_incr_2proc,
        python_n: None,
    },
    Scenario {
        name: "array_sum_locked",
        layer: Layer::Shared,
        unit: Unit::OpsPerSec,
        run: array_sum_locked,
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "manager_dict_set_1client",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed(s, ManagerOp::Set, 1),
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "manager_dict_get_1client",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed(s, ManagerOp::Get, 1),
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "manager_dict_set_2client",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed(s, ManagerOp::Set, 2),
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "manager_list_append_1client",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed(s, ManagerOp::Append, 1),
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "manager_dict_set_batched",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed(s, ManagerOp::SetBatched, 1),
        python_n: Some(|s| s.pick(200_000, 50_000)),
    },
    Scenario {
        name: "pool_map_10k",
        layer: Layer::Processes,
        unit: Unit::Ms,
        run: pool_map_10k,
        python_n: Some(|s| s.pick(20, 5)),
    },
    Scenario {
        name: "process_start_join",
        layer: Layer::Processes,
        unit: Unit::Ms,
        run: process_start_join,
        python_n: Some(|s| s.pick(200, 50)),
    },
    Scenario {
        name: "queue_bytes_1mib",
        layer: Layer::Shared,
        unit: Unit::BytesPerSec,
        run: super::bytes::queue_bytes_1mib,
        python_n: None,
    },
];

fn lock_uncontended(size: &Size) -> Result<Measured> {
    let n = size.pick(5_000_000, 1_000_000);
    let ours = Lock::new()?;
    let raw = RobustPthreadMutex::new()?;
    let (a, b) = paired(size, || ns_per_lock(&ours, n), || ns_per_lock(&raw, n))?;
    Ok((a, vec![("robust pthread mutex", b)]))
}

fn semaphore_uncontended(size: &Size) -> Result<Measured> {
    let n = size.pick(5_000_000, 1_000_000);
    let ours = Semaphore::new(1)?;
    let raw = PosixSemaphore::new(1)?;
    let (a, b) = paired(
        size,
        || ns_per_acquire(&ours, n),
        || ns_per_acquire(&raw, n),
    )?;
    Ok((a, vec![("POSIX sem_t, process-shared", b)]))
}

fn event_pingpong(size: &Size) -> Result<Measured> {
    let n = size.pick(50_000, 10_000);
    let ours = EventPair::new()?;
    let spinning = RawFutexPingPong::new(true)?;
    let (a, b) = paired(
        size,
        || us_per_round_trip(&ours, n),
        || us_per_round_trip(&spinning, n),
    )?;
    // What blocking in the kernel costs, for comparison: fewer rounds suffice.
    let n = n / 10;
    let futex = RawFutexPingPong::new(false)?;
    let eventfd = EventFdPingPong::new()?;
    let (c, d) = paired(
        size,
        || us_per_round_trip(&futex, n),
        || us_per_round_trip(&eventfd, n),
    )?;
    Ok((
        a,
        vec![
            ("futex word, same spin", b),
            ("futex wait/wake, no spin", c),
            ("eventfd", d),
        ],
    ))
}

/// The event ping-pong with both sides awaiting (`wait_async`), beside the
/// same blocking ping-pong without its spin: what the waiter thread costs.
fn event_pingpong_async(size: &Size) -> Result<Measured> {
    let n = size.pick(5_000, 1_000);
    let ours = AsyncEventPair::new()?;
    let futex = RawFutexPingPong::new(false)?;
    let (a, b) = paired(
        size,
        || us_per_round_trip(&ours, n),
        || us_per_round_trip(&futex, n),
    )?;
    Ok((a, vec![("futex wait/wake, no spin", b)]))
}

fn queue_items_2proc(size: &Size) -> Result<Measured> {
    let n = size.pick(2_000_000, 400_000);
    let ours = multiproc::Queue::<u64>::new()?;
    let raw = RawSocketStream::new()?;
    let (a, b) = paired(size, || items_per_sec(&ours, n), || items_per_sec(&raw, n))?;
    Ok((a, vec![("Unix socket, one write per item", b)]))
}

/// The queue with both ends awaiting (`put_async`, `get_async`), beside the
/// blocking queue in the same run.
fn queue_items_async(size: &Size) -> Result<Measured> {
    let n = size.pick(1_000_000, 200_000);
    let ours = AsyncQueue(multiproc::Queue::<u64>::new()?);
    let blocking = multiproc::Queue::<u64>::new()?;
    let (a, b) = paired(
        size,
        || items_per_sec(&ours, n),
        || items_per_sec(&blocking, n),
    )?;
    Ok((a, vec![("the same Queue, blocking put and get", b)]))
}

fn pipe_pingpong(size: &Size) -> Result<Measured> {
    let n = size.pick(20_000, 5_000);
    let ours = PipePingPong::new()?;
    let raw = RawSocketPingPong::new()?;
    let (a, b) = paired(
        size,
        || us_per_round_trip(&ours, n),
        || us_per_round_trip(&raw, n),
    )?;
    Ok((a, vec![("raw Unix socket ping-pong", b)]))
}

fn value_locked_incr_2proc(size: &Size) -> Result<Measured> {
    let n = size.pick(2_000_000, 400_000);
    let ours = Value::new(0u64)?;
    let raw = RobustPthreadMutex::new()?;
    let (a, b) = paired(
        size,
        || two_process_rate(&ours, n),
        || two_process_rate(&raw, n),
    )?;
    Ok((a, vec![("robust pthread mutex", b)]))
}

fn value_atomic_incr_2proc(size: &Size) -> Result<Measured> {
    let n = size.pick(20_000_000, 4_000_000);
    let ours = RawValue::new(0u64)?;
    let raw = RawAtomic::new()?;
    let (a, b) = paired(
        size,
        || two_process_rate(&ours, n),
        || two_process_rate(&raw, n),
    )?;
    Ok((a, vec![("AtomicU64 in shared memory", b)]))
}

fn array_sum_locked(size: &Size) -> Result<Measured> {
    let n = size.pick(500_000, 100_000);
    let init: Vec<f64> = (0..1024).map(f64::from).collect();
    let ours = Array::from_slice(&init)?;
    let raw = RawLockedArray::new(1024)?;
    let (a, b) = paired(size, || sums_per_sec(&ours, n), || sums_per_sec(&raw, n))?;
    Ok((a, vec![("robust mutex + slice", b)]))
}

fn tiny(x: u32) -> u32 {
    x.wrapping_mul(2654435761)
}

/// Milliseconds per `Pool(2).map` over 10 000 tiny items (the pool already running).
fn pool_map_10k(size: &Size) -> Result<Measured> {
    let pool = multiproc::Pool::with_processes(2)?;
    let rounds = size.pick(20, 5);
    let items: Vec<u32> = (0..10_000).collect();
    let expected: Vec<u32> = items.iter().map(|&x| tiny(x)).collect();
    let ms = median(
        (0..rounds)
            .map(|_| -> Result<f64> {
                let t = Instant::now();
                let out = pool.map(tiny, items.iter().copied())?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if out != expected {
                    bail!("pool map returned wrong results");
                }
                Ok(ms)
            })
            .collect::<Result<_>>()?,
    );
    Ok((ms, Vec::new()))
}

fn managed(size: &Size, op: ManagerOp, clients: u64) -> Result<Measured> {
    let n = match op {
        ManagerOp::SetBatched => size.pick(500_000, 100_000),
        _ => size.pick(20_000, 5_000),
    };
    let (mut cpu, mut raw_cpu) = (Vec::new(), Vec::new());
    let (a, b) = paired(
        size,
        || {
            let (rate, cpu_us) = managed_rate(op, clients, n)?;
            cpu.push(cpu_us);
            Ok(rate)
        },
        || {
            let (rate, cpu_us) = raw_round_trips_per_sec(size.pick(20_000, 5_000))?;
            raw_cpu.push(cpu_us);
            Ok(rate)
        },
    )?;
    eprint!(
        " (server CPU {:.2} us/op; a raw socket echo's {:.2})",
        median(cpu),
        median(raw_cpu)
    );
    Ok((a, vec![("raw Unix socket round trips", b)]))
}

fn process_start_join(size: &Size) -> Result<Measured> {
    let n = size.pick(500, 100);
    let ours = || -> Result<()> {
        let mut p = Process::new(|| {});
        p.start()?;
        match p.join()? {
            0 => Ok(()),
            code => Err(anyhow!("child exited with {code}")),
        }
    };
    let raw = || fork_exit_wait().map_err(anyhow::Error::from);
    let (a, b) = paired(size, || ms_per_process(n, ours), || ms_per_process(n, raw))?;
    Ok((a, vec![("fork + _exit + waitpid", b)]))
}
