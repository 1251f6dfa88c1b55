//! `multiproc bench`: each scenario measured for this crate, for the OS
//! baseline and for Python's `multiprocessing`, in the same run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use multiproc::baseline::{
    fork_exit_wait, AsyncEventPair, AsyncQueue, BenchArray, BenchCounter, BenchMutex,
    BenchPingPong, BenchSemaphore, BenchStream, EventFdPingPong, EventPair, PipePingPong,
    PosixSemaphore, RawAtomic, RawFutexPingPong, RawLockedArray, RawRobustMutex, RawSocketPingPong,
    RawSocketStream,
};
use multiproc::{Array, Lock, Process, RawValue, Semaphore, Value};

/// Options of `multiproc bench`.
#[derive(Args)]
pub struct Options {
    /// Smaller workloads and fewer repeats: finishes in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// One JSON object per scenario and line, instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write an SVG chart of every scenario's cost per operation
    /// (log scale), multiproc beside the OS baseline and Python.
    #[arg(long, value_name = "FILE")]
    plot: Option<std::path::PathBuf>,
}

type Error = Box<dyn std::error::Error>;
type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    OpsPerSec,
    Ns,
    Us,
    Ms,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::OpsPerSec => "ops/s",
            Unit::Ns => "ns",
            Unit::Us => "us",
            Unit::Ms => "ms",
        }
    }

    /// Operations per second, whatever the unit: higher is faster.
    fn speed(self, v: f64) -> f64 {
        match self {
            Unit::OpsPerSec => v,
            Unit::Ns => 1e9 / v,
            Unit::Us => 1e6 / v,
            Unit::Ms => 1e3 / v,
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Unit::OpsPerSec if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
            Unit::OpsPerSec if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
            Unit::OpsPerSec => format!("{v:.0} /s"),
            Unit::Ns => format!("{v:.1} ns"),
            Unit::Us => format!("{v:.2} us"),
            Unit::Ms => format!("{v:.3} ms"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Layer {
    Shared,
    Sockets,
    Managed,
    Processes,
}

impl Layer {
    /// In table order.
    const ALL: [Layer; 4] = [
        Layer::Shared,
        Layer::Sockets,
        Layer::Managed,
        Layer::Processes,
    ];

    fn title(self) -> &'static str {
        match self {
            Layer::Shared => "-- shared layer (shared memory, no system call per operation)",
            Layer::Sockets => "-- connections (a system call per message)",
            Layer::Managed => {
                "-- managed layer (Manager server, one socket round trip per operation)"
            }
            Layer::Processes => "-- processes",
        }
    }
}

/// How big a run is.
struct Size {
    quick: bool,
}

impl Size {
    fn pick(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }
    fn repeats(&self) -> usize {
        if self.quick {
            3
        } else {
            5
        }
    }
}

/// multiproc's figure, and the OS baselines' names and figures (the first
/// is the one the table and the JSON compare against).
type Measured = (f64, Vec<(&'static str, f64)>);

/// What one scenario measured.
struct Measurement {
    multiproc: f64,
    baselines: Vec<(&'static str, f64)>,
    python: Option<f64>,
}

struct Scenario {
    name: &'static str,
    layer: Layer,
    unit: Unit,
    /// Measures multiproc and the baseline (alternating, median of repeats).
    run: fn(&Size) -> Result<Measured>,
    /// The workload size given to the Python script, if Python can do it.
    python_n: Option<fn(&Size) -> u64>,
}

const SCENARIOS: &[Scenario] = &[
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
];

pub fn run(options: &Options) -> multiproc::Result<()> {
    run_scenarios(options).map_err(|e| {
        let e = std::io::Error::other(e.to_string());
        multiproc::Error::Io {
            op: "bench".into(),
            source: e,
        }
    })
}

fn run_scenarios(options: &Options) -> Result<()> {
    for name in &options.only {
        if !SCENARIOS.iter().any(|s| s.name == name) {
            let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
            return Err(format!("unknown scenario {name:?}; known: {}", known.join(", ")).into());
        }
    }
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|n| n == s.name))
        .collect();
    let size = Size {
        quick: options.quick,
    };
    let python = python_available();
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, s) in chosen.iter().enumerate() {
        eprint!("[{}/{}] {:<28}", i + 1, chosen.len(), s.name);
        let _ = std::io::stderr().flush();
        let t = Instant::now();
        let (multiproc, baselines) = (s.run)(&size)?;
        let python = match (python, s.python_n) {
            (true, Some(n)) => run_python(s.name, n(&size))?,
            _ => None,
        };
        eprintln!(" {:.1} s", t.elapsed().as_secs_f64());
        let m = Measurement {
            multiproc,
            baselines,
            python,
        };
        if options.json {
            println!("{}", json_line(s, &m));
        }
        results.push((*s, m));
    }
    if !options.json {
        print_table(&results, python);
        eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    }
    if let Some(path) = &options.plot {
        std::fs::write(path, plot_svg(&results))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Measuring.

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures `ours` and `theirs` alternately, so that both see the same
/// machine noise, each going first in every other round (so that neither
/// always pays for a cold start), and returns the median of each.
fn paired(
    size: &Size,
    mut ours: impl FnMut() -> Result<f64>,
    mut theirs: impl FnMut() -> Result<f64>,
) -> Result<(f64, f64)> {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for round in 0..size.repeats() {
        if round % 2 == 0 {
            a.push(ours()?);
            b.push(theirs()?);
        } else {
            b.push(theirs()?);
            a.push(ours()?);
        }
    }
    Ok((median(a), median(b)))
}

/// Nanoseconds per uncontended lock+unlock.
fn ns_per_lock(m: &impl BenchMutex, n: u64) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        m.lock_unlock();
    }
    Ok(t.elapsed().as_nanos() as f64 / n as f64)
}

fn lock_uncontended(size: &Size) -> Result<Measured> {
    let n = size.pick(5_000_000, 1_000_000);
    let ours = Lock::new()?;
    let raw = RawRobustMutex::new()?;
    let (a, b) = paired(size, || ns_per_lock(&ours, n), || ns_per_lock(&raw, n))?;
    Ok((a, vec![("robust pthread mutex", b)]))
}

fn ns_per_acquire(sem: &impl BenchSemaphore, n: u64) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        sem.acquire_release();
    }
    Ok(t.elapsed().as_nanos() as f64 / n as f64)
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

/// Microseconds per round trip between this process and a forked answerer.
fn us_per_round_trip(pp: &impl BenchPingPong, n: u64) -> Result<f64> {
    const WARM_UP: u64 = 100;
    multiproc::scope(|s| {
        let mut answerer = s
            .process(|| {
                for _ in 0..WARM_UP + n {
                    pp.answer();
                }
            })
            .daemon(true);
        answerer.start()?;
        for _ in 0..WARM_UP {
            pp.ask();
        }
        let t = Instant::now();
        for _ in 0..n {
            pp.ask();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        if answerer.join_timeout(Duration::from_secs(60))? != Some(0) {
            return Err("ping-pong answerer failed or hung".into());
        }
        Ok(us)
    })
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

/// Items per second from a forked producer to this process.
fn items_per_sec(stream: &impl BenchStream, n: u64) -> Result<f64> {
    multiproc::scope(|s| {
        let mut producer = s
            .process(|| {
                for i in 0..n {
                    stream.produce(i);
                }
            })
            .daemon(true);
        let t = Instant::now();
        producer.start()?;
        for i in 0..n {
            let got = stream.consume();
            if got != i {
                return Err(format!("item {i} arrived as {got}").into());
            }
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        if producer.join_timeout(Duration::from_secs(60))? != Some(0) {
            return Err("producer failed".into());
        }
        Ok(rate)
    })
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

fn tiny(x: u32) -> u32 {
    x.wrapping_mul(2654435761)
}

/// Milliseconds per `Pool(2).map` over 10 000 tiny items (the pool already running).
fn pool_map_10k(size: &Size) -> Result<Measured> {
    let pool = multiproc::Pool::new(2)?;
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
                    return Err("pool map returned wrong results".into());
                }
                Ok(ms)
            })
            .collect::<Result<_>>()?,
    );
    Ok((ms, Vec::new()))
}

#[derive(Clone, Copy, PartialEq)]
enum ManagerOp {
    Set,
    Get,
    Append,
    /// `update` with 1000 items: one round trip per batch, as Python's
    /// `d.update(batch)`.
    SetBatched,
}

const BATCH: u64 = 1000;

/// Operations per second on a managed dict or list by `clients` processes
/// (this one, or forked ones released together), and the server's CPU time
/// per operation.
fn managed_rate(op: ManagerOp, clients: u64, n: u64) -> Result<(f64, f64)> {
    let manager = multiproc::manager::Manager::start()?;
    let dict = manager.dict::<u64, u64>()?;
    let list = manager.list::<u64>()?;
    if op == ManagerOp::Get {
        dict.set_many((0..n).map(|i| (i, i)))?;
    }
    let work = |client: u64| -> multiproc::Result<()> {
        let base = client * n;
        match op {
            ManagerOp::Set => (0..n).try_for_each(|i| dict.set(base + i, i)),
            ManagerOp::Get => (0..n).try_for_each(|i| dict.get(&i).map(drop)),
            ManagerOp::Append => (0..n).try_for_each(|i| list.append(i)),
            ManagerOp::SetBatched => (0..n / BATCH)
                .try_for_each(|b| dict.set_many((0..BATCH).map(|i| (base + b * BATCH + i, i)))),
        }
    };
    let server = manager
        .server_pid()
        .ok_or("the manager has no server process")?;
    let cpu_before = cpu_seconds(server)?;
    let t = Instant::now();
    if clients == 1 {
        work(0)?;
    } else {
        let go = RawValue::new(0u32)?;
        multiproc::scope(|s| -> Result<()> {
            let mut procs: Vec<Process> = (0..clients)
                .map(|c| {
                    let (go, work) = (&go, &work);
                    s.fallible(move || {
                        while go.atomic().load(Ordering::Acquire) == 0 {
                            std::hint::spin_loop();
                        }
                        work(c)
                    })
                    .daemon(true)
                })
                .collect();
            for p in &mut procs {
                p.start()?;
            }
            go.atomic().store(1, Ordering::Release);
            for p in &procs {
                if p.join_timeout(Duration::from_secs(300))? != Some(0) {
                    return Err("a manager client failed".into());
                }
            }
            Ok(())
        })?;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let ops = (clients * n) as f64;
    let cpu = cpu_seconds(server)? - cpu_before;
    Ok((ops / elapsed, cpu / ops * 1e6))
}

/// User + system CPU time of a process so far, in seconds, threads that
/// have exited included. Counted in clock ticks (10 ms): a full run's
/// second or so of server work makes that precise to about 1%.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("bad stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; counted after the name, 12 and 13.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Raw Unix-socket round trips per second, the floor of any managed operation.
/// Round trips per second over a raw socket pair, and the CPU time the
/// answering process spent per round trip in microseconds: the least any
/// socket server can spend per operation on this machine.
fn raw_round_trips_per_sec(n: u64) -> Result<(f64, f64)> {
    let raw = RawSocketPingPong::new()?;
    let before = reaped_children_cpu_seconds();
    let us = us_per_round_trip(&raw, n)?;
    // The answerer, reaped by now, is the only child that ended meanwhile.
    let cpu = reaped_children_cpu_seconds() - before;
    Ok((1e6 / us, cpu / n as f64 * 1e6))
}

/// User + system CPU time of this process's children that have been
/// waited for, in seconds.
fn reaped_children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
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

/// Two forked processes increment `counter` `n` times each, released
/// together; returns increments per second. Fails if any increment is lost.
fn two_process_rate(counter: &(impl BenchCounter + Sync), n: u64) -> Result<f64> {
    let go = RawValue::new(0u32)?;
    let before = counter.count();
    let work = || {
        while go.atomic().load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        for _ in 0..n {
            counter.incr();
        }
    };
    let elapsed = multiproc::scope(|s| -> Result<f64> {
        let mut procs = [s.process(work).daemon(true), s.process(work).daemon(true)];
        for p in &mut procs {
            p.start()?;
        }
        let t = Instant::now();
        go.atomic().store(1, Ordering::Release);
        for p in &procs {
            if p.join_timeout(Duration::from_secs(300))? != Some(0) {
                return Err(format!("{} failed or hung", p.name()).into());
            }
        }
        Ok(t.elapsed().as_secs_f64())
    })?;
    let done = counter.count() - before;
    if done != 2 * n {
        return Err(format!("lost updates: {done} of {} increments", 2 * n).into());
    }
    Ok(2.0 * n as f64 / elapsed)
}

fn value_locked_incr_2proc(size: &Size) -> Result<Measured> {
    let n = size.pick(2_000_000, 400_000);
    let ours = Value::new(0u64)?;
    let raw = RawRobustMutex::new()?;
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

/// Locked sums of a 1024-element array per second.
fn sums_per_sec(a: &impl BenchArray, n: u64) -> Result<f64> {
    let expected = (0..1024).map(f64::from).sum::<f64>();
    let t = Instant::now();
    for _ in 0..n {
        if std::hint::black_box(a.locked_sum()) != expected {
            return Err("array sum mismatch".into());
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn array_sum_locked(size: &Size) -> Result<Measured> {
    let n = size.pick(500_000, 100_000);
    let init: Vec<f64> = (0..1024).map(f64::from).collect();
    let ours = Array::from_slice(&init)?;
    let raw = RawLockedArray::new(1024)?;
    let (a, b) = paired(size, || sums_per_sec(&ours, n), || sums_per_sec(&raw, n))?;
    Ok((a, vec![("robust mutex + slice", b)]))
}

/// Milliseconds per start + join of a child that returns at once.
fn ms_per_process(n: u64, mut start_join: impl FnMut() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        start_join()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
}

fn process_start_join(size: &Size) -> Result<Measured> {
    let n = size.pick(500, 100);
    let ours = || -> Result<()> {
        let mut p = Process::new(|| {});
        p.start()?;
        match p.join()? {
            0 => Ok(()),
            code => Err(format!("child exited with {code}").into()),
        }
    };
    let raw = || fork_exit_wait().map_err(Error::from);
    let (a, b) = paired(size, || ms_per_process(n, ours), || ms_per_process(n, raw))?;
    Ok((a, vec![("fork + _exit + waitpid", b)]))
}

// ---------------------------------------------------------------------------
// Python.

const PYTHON_SCRIPT: &str = include_str!("../../../bench/python/bench.py");

fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import multiprocessing"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs one scenario of the Python script; `None` (with a warning) if it fails.
fn run_python(scenario: &str, n: u64) -> Result<Option<f64>> {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_SCRIPT, scenario, &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            eprint!(" (python timed out)");
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text.split_whitespace().map(str::parse::<f64>);
    // An optional second number is the Python server's CPU time per operation.
    if let Some(Ok(cpu)) = numbers.clone().nth(1) {
        eprint!(" (python server CPU {cpu:.2} us/op)");
    }
    match numbers.next() {
        Some(Ok(v)) if out.status.success() => Ok(Some(v)),
        _ => {
            eprint!(
                " (python failed: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------
// Output.

/// Nanoseconds per operation, whatever the unit.
fn ns_per_op(unit: Unit, v: f64) -> f64 {
    1e9 / unit.speed(v)
}

/// A horizontal bar chart, one group of bars per scenario, on a log scale of
/// nanoseconds per operation (shorter is faster).
fn plot_svg(results: &[(&Scenario, Measurement)]) -> String {
    const LEFT: f64 = 230.0;
    const WIDTH: f64 = 620.0;
    const ROW: f64 = 40.0;
    const TOP: f64 = 50.0;
    let series = |m: &Measurement| -> [(Option<f64>, &'static str, &'static str); 3] {
        [
            (Some(m.multiproc), "multiproc", "#2b6cb0"),
            (m.baselines.first().map(|b| b.1), "OS baseline", "#718096"),
            (m.python, "Python multiprocessing", "#dd6b20"),
        ]
    };
    let costs: Vec<f64> = results
        .iter()
        .flat_map(|(s, m)| {
            series(m)
                .into_iter()
                .filter_map(|(v, ..)| v.map(|v| ns_per_op(s.unit, v)))
        })
        .filter(|c| c.is_finite() && *c > 0.0)
        .collect();
    let lo = costs
        .iter()
        .copied()
        .fold(f64::MAX, f64::min)
        .log10()
        .floor();
    let hi = costs
        .iter()
        .copied()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x = |ns: f64| LEFT + (ns.log10() - lo) / (hi - lo) * WIDTH;
    let height = TOP + ROW * results.len() as f64 + 60.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\">multiproc bench: cost per operation (log scale, shorter is faster)</text>\n",
        w = LEFT + WIDTH + 30.0
    );
    for decade in lo as i32..=hi as i32 {
        let px = x(10f64.powi(decade));
        let label = match decade {
            d if d < 3 => format!("{} ns", 10f64.powi(d)),
            d if d < 6 => format!("{} us", 10f64.powi(d - 3)),
            d if d < 9 => format!("{} ms", 10f64.powi(d - 6)),
            d => format!("{} s", 10f64.powi(d - 9)),
        };
        svg += &format!(
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{y2:.1}\" stroke=\"#e2e8f0\"/>\n\
             <text x=\"{px:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" fill=\"#4a5568\">{label}</text>\n",
            y2 = height - 50.0,
            ty = height - 35.0
        );
    }
    for (row, (s, m)) in results.iter().enumerate() {
        let y = TOP + ROW * row as f64;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT - 8.0,
            y + 20.0,
            s.name
        );
        for (i, (v, _, color)) in series(m).into_iter().enumerate() {
            let Some(v) = v else { continue };
            let ns = ns_per_op(s.unit, v);
            if !ns.is_finite() || ns <= 0.0 {
                continue;
            }
            svg += &format!(
                "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\" fill=\"{color}\"><title>{}</title></rect>\n",
                y + 4.0 + 11.0 * i as f64,
                (x(ns) - LEFT).max(1.0),
                s.unit.format(v)
            );
        }
    }
    for (i, (_, name, color)) in series(&results[0].1).into_iter().enumerate() {
        let lx = LEFT + 200.0 * i as f64;
        svg += &format!(
            "<rect x=\"{lx}\" y=\"{ly:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\n\
             <text x=\"{tx}\" y=\"{ty:.1}\">{name}</text>\n",
            ly = height - 22.0,
            tx = lx + 18.0,
            ty = height - 12.0
        );
    }
    svg + "</svg>\n"
}

fn json_line(s: &Scenario, m: &Measurement) -> String {
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v}")
        } else {
            "null".into()
        }
    };
    let baseline = m.baselines.first().map_or("null".into(), |&(name, v)| {
        format!("{{\"name\": \"{name}\", \"value\": {}}}", num(v))
    });
    let python = m.python.map_or("null".into(), num);
    format!(
        "{{\"scenario\": \"{}\", \"unit\": \"{}\", \"multiproc\": {}, \"baseline\": {baseline}, \"python\": {python}}}",
        s.name,
        s.unit.name(),
        num(m.multiproc)
    )
}

/// The classic advice with numbers: how many shared-layer updates one
/// managed-layer update costs.
fn print_headline(results: &[(&Scenario, Measurement)]) {
    let find = |name: &str| results.iter().find(|(s, _)| s.name == name);
    match (find("manager_dict_set_1client"), find("lock_uncontended")) {
        (Some((ms, m)), Some((ls, l))) => {
            let managed_ns = 1e9 / ms.unit.speed(m.multiproc);
            let shared_ns = 1e9 / ls.unit.speed(l.multiproc);
            println!(
                "headline: a managed dict set costs {:.1} us, a shared locked update {:.1} ns: {:.0}x. \
                 Value/Array are fast; a Manager is flexible.",
                managed_ns / 1e3,
                shared_ns,
                managed_ns / shared_ns
            );
        }
        _ => println!("headline: run manager_dict_set_1client and lock_uncontended for the managed/shared ratio"),
    }
}

fn print_table(results: &[(&Scenario, Measurement)], python: bool) {
    let header = [
        "scenario",
        "multiproc",
        "OS baseline",
        "of OS speed",
        "python",
        "vs python",
    ];
    let mut rows: Vec<(Layer, [String; 6])> = Vec::new();
    for (s, m) in results {
        let speed = s.unit.speed(m.multiproc);
        let baseline = m.baselines.first().map_or("n/a".into(), |&(name, v)| {
            format!("{} ({name})", s.unit.format(v))
        });
        let of_os = m.baselines.first().map_or("n/a".into(), |&(_, v)| {
            format!("{:.0}%", 100.0 * speed / s.unit.speed(v))
        });
        let py = m.python.map_or("n/a".into(), |v| s.unit.format(v));
        let vs_py = m.python.map_or("n/a".into(), |v| {
            format!("{:.1}x faster", speed / s.unit.speed(v))
        });
        rows.push((
            s.layer,
            [
                s.name.into(),
                s.unit.format(m.multiproc),
                baseline,
                of_os,
                py,
                vs_py,
            ],
        ));
    }
    let mut widths = header.map(str::len);
    for (_, r) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (c, w) in cells.iter().zip(widths) {
            let _ = write!(out, "{c:<w$}  ");
        }
        println!("{}", out.trim_end());
    };
    println!();
    line(&header.map(String::from));
    for layer in Layer::ALL {
        if rows.iter().any(|(l, _)| *l == layer) {
            println!("{}", layer.title());
            for (_, r) in rows.iter().filter(|(l, _)| *l == layer) {
                line(r);
            }
        }
    }
    for (s, m) in results {
        for &(name, v) in m.baselines.iter().skip(1) {
            println!("   {}: also {} ({name})", s.name, s.unit.format(v));
        }
    }
    print_headline(results);
    if !python {
        println!("(python3 with multiprocessing not found: Python columns are n/a)");
    }
    println!(
        "\"of OS speed\": multiproc's speed as a share of the raw OS primitive's, measured \
         alternately in this run (100% = no overhead)."
    );
}
