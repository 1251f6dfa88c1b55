//! `multiproc bench`: each scenario measured for this crate, for the OS
//! baseline and for Python's `multiprocessing`, in the same run.
//!
//! [`scenarios`] is the table of what is compared; [`measure`] runs the
//! workloads (both sides alternately); [`python`] runs the same workload
//! in Python (for the managed scenarios, Python's client against Python's
//! server and against ours); [`table`], [`json`] and [`svg`] write the
//! figures out.

mod bytes;
mod json;
mod measure;
mod python;
mod redis;
mod scenarios;
mod svg;
mod table;

use std::io::Write as _;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use json::json_line;
use measure::{median, Size};
use python::{python_available, run_python, Answerer, Echo, OurServer, PythonFigure, RawEcho};
use scenarios::{Scenario, SCENARIOS};
use svg::plot_svg;
use table::print_table;

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
    /// Also run the managed rows on the Redis server at this URL
    /// (`redis://host:port/db`), beside raw Redis round trips measured in
    /// the same run. Without it, no Redis rows.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    OpsPerSec,
    /// Bytes per second (payload rows), shown in GB/s or MB/s.
    BytesPerSec,
    Ns,
    Us,
    Ms,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::OpsPerSec => "ops/s",
            Unit::BytesPerSec => "B/s",
            Unit::Ns => "ns",
            Unit::Us => "us",
            Unit::Ms => "ms",
        }
    }

    /// Operations per second, whatever the unit: higher is faster.
    fn speed(self, v: f64) -> f64 {
        match self {
            Unit::OpsPerSec | Unit::BytesPerSec => v,
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
            Unit::BytesPerSec if v >= 1e9 => format!("{:.2} GB/s", v / 1e9),
            Unit::BytesPerSec => format!("{:.0} MB/s", v / 1e6),
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
    /// The managed rows on Redis (`--redis URL`).
    Redis,
    Processes,
}

impl Layer {
    /// In table order.
    const ALL: [Layer; 5] = [
        Layer::Shared,
        Layer::Sockets,
        Layer::Managed,
        Layer::Redis,
        Layer::Processes,
    ];

    fn title(self) -> &'static str {
        match self {
            Layer::Shared => "-- shared layer (shared memory, no system call per operation)",
            Layer::Sockets => "-- connections (a system call per message)",
            Layer::Managed => {
                "-- managed layer (Manager server, one round trip per operation: shared memory, or the socket)"
            }
            Layer::Redis => {
                "-- managed layer on Redis (--redis URL: a network round trip per operation, one command or Lua script each)"
            }
            Layer::Processes => "-- processes",
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
    /// Python's `multiprocessing` (for the managed scenarios, its client
    /// against its own server).
    python: Option<PythonFigure>,
    /// For the managed scenarios: Python's client (the same work) against
    /// multiproc's server.
    python_client_our_server: Option<PythonFigure>,
    /// For the managed scenarios but the batched ones: the same client's
    /// calls answered by a raw socket echo, a thread per connection.
    python_client_raw_echo: Option<PythonFigure>,
    /// The same, answered by a raw socket echo of one thread, an event
    /// loop as multiproc's server is.
    python_client_loop_echo: Option<PythonFigure>,
}

/// Python's figure for scenario `s` (workload size `n`). For a managed
/// scenario, also Python's client against multiproc's server (a fresh one
/// for each run, stopped after it), with both servers' CPU time per
/// operation, and (but for the batched scenarios) the CPU time per call of
/// raw socket echoes answering the same clients' calls ([`RawEcho`]: a
/// thread per connection, and one thread for all, as [`Echo`] says). A
/// full run measures them in turn (each going first in its turn, as
/// [`measure::alternated`] does) and keeps the medians: a noisy machine
/// moves a single run of any by a factor of two. `--quick` runs each
/// once, to stay quick.
fn run_pythons(s: &Scenario, n: u64, size: &Size) -> Result<PythonFigures> {
    let mut figures = PythonFigures::default();
    if s.layer != Layer::Managed {
        figures.python = run_python(s.name, n, Answerer::Python)?;
        return Ok(figures);
    }
    let batched = s.name.ends_with("_batched");
    let mut runs: [Vec<PythonFigure>; 4] = Default::default();
    let rounds = if size.quick { 1 } else { size.repeats() };
    for round in 0..rounds {
        for k in 0..runs.len() {
            let which = (round + k) % runs.len();
            let echo = |how| -> Result<_> {
                match batched {
                    true => Ok(None),
                    false => run_python(s.name, n, Answerer::Raw(&RawEcho::start(how)?)),
                }
            };
            let figure = match which {
                0 => run_python(s.name, n, Answerer::Python)?,
                1 => run_python(s.name, n, Answerer::Ours(&OurServer::start()?))?,
                2 => echo(Echo::Threads)?,
                _ => echo(Echo::EventLoop)?,
            };
            runs[which].extend(figure);
        }
    }
    let [python, ours, raw, event_loop] = runs.map(median_figure);
    let cpu = |f: Option<PythonFigure>| {
        let Some(c) = f.and_then(|f| f.server_cpu_us) else {
            return "n/a".into();
        };
        match f.and_then(|f| f.server_user_system_us) {
            Some((user, system)) => format!("{c:.2} (user {user:.2}, system {system:.2})"),
            None => format!("{c:.2}"),
        }
    };
    eprint!(
        " (python client: server CPU {} us/op in python's server, {} in multiproc's, {} in a raw socket echo's, {} in a one-thread raw echo's)",
        cpu(python),
        cpu(ours),
        cpu(raw),
        cpu(event_loop)
    );
    Ok(PythonFigures {
        python,
        our_server: ours,
        raw_echo: raw,
        loop_echo: event_loop,
    })
}

/// What [`run_pythons`] measured.
#[derive(Default)]
struct PythonFigures {
    /// Python's `multiprocessing` (managed scenarios: its client and
    /// server).
    python: Option<PythonFigure>,
    /// Python's client against multiproc's server.
    our_server: Option<PythonFigure>,
    /// Python's client's calls answered by a raw socket echo, a thread
    /// per connection.
    raw_echo: Option<PythonFigure>,
    /// The same, by a raw socket echo of one thread (an event loop).
    loop_echo: Option<PythonFigure>,
}

/// The median figure and the median server CPU time (and its parts) of
/// some runs; `None` if none succeeded.
fn median_figure(runs: Vec<PythonFigure>) -> Option<PythonFigure> {
    if runs.is_empty() {
        return None;
    }
    let cpus: Vec<f64> = runs.iter().filter_map(|f| f.server_cpu_us).collect();
    let (users, systems): (Vec<f64>, Vec<f64>) =
        runs.iter().filter_map(|f| f.server_user_system_us).unzip();
    Some(PythonFigure {
        value: median(runs.iter().map(|f| f.value).collect()),
        server_cpu_us: (!cpus.is_empty()).then(|| median(cpus)),
        server_user_system_us: (!users.is_empty()).then(|| (median(users), median(systems))),
    })
}

/// Runs the chosen scenarios and prints their figures.
pub fn run(options: &Options) -> Result<()> {
    for name in &options.only {
        if !SCENARIOS.iter().any(|s| s.name == name) {
            let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
            bail!("unknown scenario {name:?}; known: {}", known.join(", "));
        }
    }
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            if options.only.is_empty() {
                s.layer != Layer::Redis || options.redis.is_some()
            } else {
                options.only.iter().any(|n| n == s.name)
            }
        })
        .collect();
    if options.redis.is_none() {
        if let Some(s) = chosen.iter().find(|s| s.layer == Layer::Redis) {
            bail!("scenario {:?} runs on Redis: give --redis URL", s.name);
        }
    }
    // A chart that cannot be written fails now, not after the whole run.
    if let Some(path) = &options.plot {
        check_writable(path)?;
    }
    let size = Size {
        quick: options.quick,
        redis: options.redis.clone(),
    };
    let python = python_available();
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, s) in chosen.iter().enumerate() {
        eprint!("[{}/{}] {:<28}", i + 1, chosen.len(), s.name);
        let _ = std::io::stderr().flush();
        let t = Instant::now();
        let (multiproc, baselines) = (s.run)(&size)?;
        let pythons = match (python, s.python_n) {
            (true, Some(n)) => run_pythons(s, n(&size), &size)?,
            _ => PythonFigures::default(),
        };
        eprintln!(" {:.1} s", t.elapsed().as_secs_f64());
        let m = Measurement {
            multiproc,
            baselines,
            python: pythons.python,
            python_client_our_server: pythons.our_server,
            python_client_raw_echo: pythons.raw_echo,
            python_client_loop_echo: pythons.loop_echo,
        };
        if options.json {
            println!("{}", json_line(s, &m)?);
        }
        results.push((*s, m));
    }
    if !options.json {
        print_table(&results, python);
        eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    }
    if let Some(path) = &options.plot {
        std::fs::write(path, plot_svg(&results))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// Fails if `path` cannot be written, leaving it as it was: a file that
/// was there is opened (not truncated), one that was not is made and
/// removed again.
fn check_writable(path: &std::path::Path) -> Result<()> {
    let existed = path.exists();
    std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {} for the chart", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
