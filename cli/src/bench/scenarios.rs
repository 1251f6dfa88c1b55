//! The table of scenarios: what each one measures in multiproc, and which
//! OS baseline it measures beside it.

use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use multiproc::manager::Transport;
use multiproc::{Array, Lock, Process, RawValue, Semaphore, Value};
use multiproc_cli::baseline::peers::{RawSyncEventPair, RawSyncMutex};
use multiproc_cli::baseline::{
    fork_exit_wait, ordered_map_items_per_sec, AsyncEventPair, AsyncQueue, EventFdPingPong,
    EventPair, Items, MapWork, PipeBytes, PipePingPong, PipeSerdeVec, PosixSemaphore, RawAtomic,
    RawFutexPingPong, RawLockedArray, RawSocketPayload, RawSocketPingPong, RawSocketStream,
    RobustPthreadMutex, PAYLOAD_LEN,
};

use super::measure::{
    alternated, batched_items_per_sec, bytes_per_sec, items_per_sec, managed_rate_over, median,
    ms_per_process, ns_per_acquire, ns_per_lock, paired, raw_calls_per_sec, sums_per_sec,
    two_process_rate, us_per_round_trip, ManagerOp, Size, BATCH,
};
use super::redis::redis_managed;
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
        name: "queue_bytes_1mib",
        layer: Layer::Shared,
        unit: Unit::BytesPerSec,
        run: super::bytes::queue_bytes_1mib,
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
        name: "pipe_bytes_1mib",
        layer: Layer::Sockets,
        unit: Unit::BytesPerSec,
        run: pipe_bytes_1mib,
        python_n: None,
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
        name: "manager_dict_set_1client_socket",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed_over(s, ManagerOp::Set, 1, Transport::Socket),
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "manager_dict_set_4client",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed(s, ManagerOp::Set, 4),
        python_n: Some(|s| s.pick(20_000, 5_000)),
    },
    Scenario {
        name: "manager_dict_set_4client_socket",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed_over(s, ManagerOp::Set, 4, Transport::Socket),
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
        name: "manager_dict_get_batched",
        layer: Layer::Managed,
        unit: Unit::OpsPerSec,
        run: |s| managed(s, ManagerOp::GetBatched, 1),
        python_n: Some(|s| s.pick(200_000, 50_000)),
    },
    Scenario {
        name: "redis_dict_set_1client",
        layer: Layer::Redis,
        unit: Unit::OpsPerSec,
        run: |s| redis_managed(s, ManagerOp::Set, 1),
        python_n: None,
    },
    Scenario {
        name: "redis_dict_get_1client",
        layer: Layer::Redis,
        unit: Unit::OpsPerSec,
        run: |s| redis_managed(s, ManagerOp::Get, 1),
        python_n: None,
    },
    Scenario {
        name: "redis_dict_set_2client",
        layer: Layer::Redis,
        unit: Unit::OpsPerSec,
        run: |s| redis_managed(s, ManagerOp::Set, 2),
        python_n: None,
    },
    Scenario {
        name: "redis_dict_set_batched",
        layer: Layer::Redis,
        unit: Unit::OpsPerSec,
        run: |s| redis_managed(s, ManagerOp::SetBatched, 1),
        python_n: None,
    },
    Scenario {
        name: "redis_dict_get_batched",
        layer: Layer::Redis,
        unit: Unit::OpsPerSec,
        run: |s| redis_managed(s, ManagerOp::GetBatched, 1),
        python_n: None,
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
];

/// The peer crate's mutex, as the table names it.
const RAW_SYNC_MUTEX: &str = "raw_sync Mutex: pthread, not robust";

fn lock_uncontended(size: &Size) -> Result<Measured> {
    let n = size.pick(5_000_000, 1_000_000);
    let ours = Lock::new()?;
    let raw = RobustPthreadMutex::new()?;
    let peer = RawSyncMutex::new()?;
    let (a, b) = paired(size, || ns_per_lock(&ours, n), || ns_per_lock(&raw, n))?;
    let c = median(
        (0..size.repeats())
            .map(|_| ns_per_lock(&peer, n))
            .collect::<Result<_>>()?,
    );
    Ok((a, vec![("robust pthread mutex", b), (RAW_SYNC_MUTEX, c)]))
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
    // The peer crate raw_sync: its spinning event at the full count, its
    // condition-variable event (which sleeps every time) at the lower one.
    let busy = RawSyncEventPair::new(true)?;
    let condvar = RawSyncEventPair::new(false)?;
    let (e, f) = paired(
        size,
        || us_per_round_trip(&busy, n * 10),
        || us_per_round_trip(&condvar, n),
    )?;
    Ok((
        a,
        vec![
            ("futex word, same spin, wakes only a sleeper", b),
            ("futex wait/wake, no spin", c),
            ("eventfd", d),
            ("raw_sync BusyEvent: spins, never sleeps", e),
            ("raw_sync Event: pthread condition variable", f),
        ],
    ))
}

/// The event ping-pong with both sides awaiting (`wait_async`), beside the
/// OS baseline of the blocking ping-pong (a futex word with the same spin)
/// and the same futex without its spin (what sleeping every time costs),
/// all three alternately.
fn event_pingpong_async(size: &Size) -> Result<Measured> {
    let n = size.pick(5_000, 1_000);
    let ours = AsyncEventPair::new()?;
    let spinning = RawFutexPingPong::new(true)?;
    let futex = RawFutexPingPong::new(false)?;
    let [a, b, c] = alternated(
        size.repeats(),
        [
            &mut || us_per_round_trip(&ours, n),
            &mut || us_per_round_trip(&spinning, n),
            &mut || us_per_round_trip(&futex, n),
        ],
    )?;
    Ok((
        a,
        vec![
            ("futex word, same spin, wakes only a sleeper", b),
            ("futex wait/wake, no spin", c),
        ],
    ))
}

fn queue_items_2proc(size: &Size) -> Result<Measured> {
    let n = size.pick(2_000_000, 400_000);
    let ours = multiproc::Queue::<u64>::new()?;
    let raw = RawSocketStream::new()?;
    let (a, b) = paired(size, || items_per_sec(&ours, n), || items_per_sec(&raw, n))?;
    let batched = (0..size.repeats())
        .map(|_| batched_items_per_sec(&ours, n, 64))
        .collect::<Result<Vec<_>>>()?;
    #[allow(unused_mut)]
    let mut baselines = vec![
        ("Unix socket, one write per item", b),
        (
            "the same Queue, put_many/get_many of 64 items",
            median(batched),
        ),
    ];
    #[cfg(feature = "peers")]
    peers::items(size, n, &mut baselines)?;
    Ok((a, baselines))
}

/// The queue with both ends awaiting (`put_async`, `get_async`), beside
/// the OS baseline (a Unix socket, one write per item) and the blocking
/// queue, all three alternately.
fn queue_items_async(size: &Size) -> Result<Measured> {
    let n = size.pick(1_000_000, 200_000);
    let ours = AsyncQueue(multiproc::Queue::<u64>::new()?);
    let raw = RawSocketStream::new()?;
    let blocking = multiproc::Queue::<u64>::new()?;
    let [a, b, c] = alternated(
        size.repeats(),
        [
            &mut || items_per_sec(&ours, n),
            &mut || items_per_sec(&raw, n),
            &mut || items_per_sec(&blocking, n),
        ],
    )?;
    Ok((
        a,
        vec![
            ("Unix socket, one write per item", b),
            ("the same Queue, blocking put and get", c),
        ],
    ))
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
    #[allow(unused_mut)]
    let mut baselines = vec![("raw Unix socket ping-pong", b)];
    #[cfg(feature = "peers")]
    peers::ping_pong(size, n, &mut baselines)?;
    Ok((a, baselines))
}

fn value_locked_incr_2proc(size: &Size) -> Result<Measured> {
    let n = size.pick(2_000_000, 400_000);
    let ours = Value::new(0u64)?;
    let raw = RobustPthreadMutex::new()?;
    let peer = RawSyncMutex::new()?;
    let (a, b) = paired(
        size,
        || two_process_rate(&ours, n),
        || two_process_rate(&raw, n),
    )?;
    let c = median(
        (0..size.repeats())
            .map(|_| two_process_rate(&peer, n))
            .collect::<Result<_>>()?,
    );
    Ok((a, vec![("robust pthread mutex", b), (RAW_SYNC_MUTEX, c)]))
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
    // One untimed map first, as the Python side does.
    if pool.map(tiny, items.iter().copied())? != expected {
        bail!("pool map returned wrong results");
    }
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
    managed_over(size, op, clients, Transport::Auto)
}

/// A managed row whose clients' calls travel as `transport` says (through
/// shared memory by default; [`Transport::Socket`] for the row that shows
/// the socket path beside it).
fn managed_over(
    size: &Size,
    op: ManagerOp,
    clients: u64,
    transport: Transport,
) -> Result<Measured> {
    let n = match op {
        // As many items as Python's rows (`python_n`): the dict grows to
        // this size, and the cost of growing it depends on its size.
        ManagerOp::SetBatched | ManagerOp::GetBatched => size.pick(200_000, 50_000),
        _ => size.pick(20_000, 5_000),
    };
    let (mut cpu, mut raw_cpu) = (Vec::new(), Vec::new());
    let mut ours = || {
        let (rate, cpu_us) = managed_rate_over(op, clients, n, transport)?;
        cpu.push(cpu_us);
        Ok(rate)
    };
    let mut raw = || {
        let (rate, cpu_us) = raw_calls_per_sec(op, clients, n)?;
        raw_cpu.push(cpu_us);
        Ok(rate)
    };
    // The batched rows also stand beside their storage floor: the same
    // items kept by a fresh process that does nothing else.
    let floor = match op {
        ManagerOp::SetBatched => Some(MapWork::Insert),
        ManagerOp::GetBatched => Some(MapWork::Lookup),
        _ => None,
    };
    let (a, baselines) = match floor {
        None => {
            let (a, b) = paired(size, ours, raw)?;
            (a, vec![(raw_calls_name(op, clients), b)])
        }
        Some(work) => {
            let mut map = || ordered_map_items_per_sec(work, Items::U64, n, BATCH);
            let mut values = || ordered_map_items_per_sec(work, Items::Values, n, BATCH);
            let [a, b, c, d] =
                alternated(size.repeats(), [&mut ours, &mut raw, &mut map, &mut values])?;
            (
                a,
                vec![
                    (raw_calls_name(op, clients), b),
                    (MAP_FLOOR, c),
                    (VALUES_FLOOR, d),
                ],
            )
        }
    };
    eprint!(
        " (server CPU {:.2} us/op; the raw calls' answerer's {:.2})",
        median(cpu),
        median(raw_cpu)
    );
    Ok((a, baselines))
}

/// The batched rows' second baseline ([`ordered_map_items_per_sec`]).
const MAP_FLOOR: &str = "the storage floor: a fresh process keeping the same items in an \
     insertion-ordered map of u64 (IndexMap), no transport, no decoding";

/// The batched rows' third baseline: the second with the server's own
/// dict and values.
const VALUES_FLOOR: &str = "the value model's floor: the same, in the server's own dict \
     of dynamic values (what any item of a managed dict is kept as)";

/// What a managed row's OS baseline ([`raw_calls_per_sec`]) is, in words.
fn raw_calls_name(op: ManagerOp, clients: u64) -> &'static str {
    let batched = matches!(op, ManagerOp::SetBatched | ManagerOp::GetBatched);
    match (clients, batched) {
        (1, false) => "raw Unix socket round trips",
        (2, false) => "raw Unix socket round trips, 2 clients to one process",
        (4, false) => "raw Unix socket round trips, 4 clients to one process",
        (1, true) => "raw Unix socket round trips of 1000 keys, counted by key",
        _ => "raw Unix socket round trips, same clients and batches",
    }
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

/// 1 MiB messages through a [`Pipe`](multiproc::conn::Pipe)'s `send_bytes`
/// and `recv_bytes`, beside a raw Unix socket moving the same bytes, and
/// the same pipe's `send`/`recv` of a `Vec<u8>` (serde).
fn pipe_bytes_1mib(size: &Size) -> Result<Measured> {
    let n = size.pick(4_000, 1_000);
    let ours = PipeBytes::new()?;
    let raw = RawSocketPayload::new(PAYLOAD_LEN)?;
    let (a, b) = paired(
        size,
        || bytes_per_sec(&ours, n, PAYLOAD_LEN),
        || bytes_per_sec(&raw, n, PAYLOAD_LEN),
    )?;
    // Serde walks a `Vec<u8>` a byte at a time: far fewer messages suffice.
    let serde = PipeSerdeVec::new()?;
    let c = median(
        (0..size.repeats())
            .map(|_| bytes_per_sec(&serde, n / 20, PAYLOAD_LEN))
            .collect::<Result<_>>()?,
    );
    #[allow(unused_mut)]
    let mut baselines = vec![
        ("raw Unix socket, the same 1 MiB messages", b),
        ("the same Pipe, send/recv of a Vec<u8> (serde)", c),
    ];
    #[cfg(feature = "peers")]
    peers::payloads(size, n, &mut baselines)?;
    Ok((a, baselines))
}

/// The peer crates of the `peers` feature, measured after multiproc and
/// its OS baseline in the same run (medians of the same number of repeats)
/// and appended to a row's baselines (the table's "also" lines).
#[cfg(feature = "peers")]
pub(super) mod peers {
    use anyhow::{bail, Result};
    use multiproc_cli::baseline::peers::{
        iceoryx2_items_per_sec, iceoryx2_payload_bytes_per_sec, iceoryx2_round_trip_us, Delivered,
        IpcChannelBytes, IpcChannelPingPong, IpcChannelStream,
    };
    use multiproc_cli::baseline::PAYLOAD_LEN;

    use super::super::measure::{bytes_per_sec, items_per_sec, median, us_per_round_trip, Size};

    type Baselines = Vec<(&'static str, f64)>;

    fn medians(size: &Size, mut run: impl FnMut() -> Result<f64>) -> Result<f64> {
        Ok(median(
            (0..size.repeats()).map(|_| run()).collect::<Result<_>>()?,
        ))
    }

    /// The median rate of iceoryx2 runs, counted by items delivered, and
    /// whether every run delivered every item.
    fn delivered(size: &Size, mut run: impl FnMut() -> Result<Delivered>) -> Result<(f64, bool)> {
        let runs: Vec<Delivered> = (0..size.repeats()).map(|_| run()).collect::<Result<_>>()?;
        let lossless = runs.iter().all(Delivered::lossless);
        if !lossless {
            let lost: u64 = runs.iter().map(|r| r.sent - r.delivered).sum();
            eprint!(" (iceoryx2 lost {lost} items: counted by items delivered)");
        }
        if runs.iter().any(|r| r.delivered < 2) {
            bail!("iceoryx2 delivered (almost) nothing");
        }
        Ok((median(runs.iter().map(|r| r.rate).collect()), lossless))
    }

    pub(super) fn items(size: &Size, n: u64, out: &mut Baselines) -> Result<()> {
        let ipc = IpcChannelStream::new()?;
        out.push((
            "ipc-channel, one message per item",
            medians(size, || items_per_sec(&ipc, n))?,
        ));
        let (rate, lossless) = delivered(size, || iceoryx2_items_per_sec(n))?;
        out.push((
            if lossless {
                "iceoryx2 publish-subscribe, lossless, counted by items delivered, timed from the first (no setup)"
            } else {
                "iceoryx2 publish-subscribe, LOST ITEMS, counted by items delivered, timed from the first (no setup)"
            },
            rate,
        ));
        Ok(())
    }

    pub(super) fn ping_pong(size: &Size, n: u64, out: &mut Baselines) -> Result<()> {
        let ipc = IpcChannelPingPong::new()?;
        out.push((
            "ipc-channel ping-pong",
            medians(size, || us_per_round_trip(&ipc, n))?,
        ));
        out.push((
            "iceoryx2 publish-subscribe ping-pong, both sides polling",
            medians(size, || iceoryx2_round_trip_us(n))?,
        ));
        Ok(())
    }

    pub(in crate::bench) fn payloads(size: &Size, n: u64, out: &mut Baselines) -> Result<()> {
        let ipc = IpcChannelBytes::new()?;
        out.push((
            "ipc-channel bytes channel",
            medians(size, || bytes_per_sec(&ipc, n, PAYLOAD_LEN))?,
        ));
        let (rate, lossless) = delivered(size, || iceoryx2_payload_bytes_per_sec(n, PAYLOAD_LEN))?;
        out.push((
            if lossless {
                "iceoryx2, lossless, reader reads every byte in place, timed from the first payload (no setup)"
            } else {
                "iceoryx2, LOST PAYLOADS, reader reads every byte in place, counted by payloads delivered, timed from the first (no setup)"
            },
            rate,
        ));
        Ok(())
    }
}
