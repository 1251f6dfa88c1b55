//! Measuring: both sides of a comparison run alternately on the same
//! workload, through the baselines' traits, and the median is kept.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use multiproc::manager::{DictProxy, ListProxy};
use multiproc::{Process, RawValue};
use multiproc_cli::baseline::{
    check_payload, mark_payload, BenchArray, BenchCounter, BenchMutex, BenchPayload, BenchPingPong,
    BenchSemaphore, BenchStream, RawCall,
};

use super::bytes::touch;

/// How big a run is.
pub(super) struct Size {
    pub(super) quick: bool,
    /// The Redis server the Redis rows run on (`--redis URL`), if any.
    pub(super) redis: Option<String>,
}

impl Size {
    pub(super) fn pick(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }
    pub(super) fn repeats(&self) -> usize {
        if self.quick {
            3
        } else {
            5
        }
    }
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures `ours` and `theirs` alternately, so that both see the same
/// machine noise, each going first in every other round (so that neither
/// always pays for a cold start), and returns the median of each.
pub(super) fn paired(
    size: &Size,
    mut ours: impl FnMut() -> Result<f64>,
    mut theirs: impl FnMut() -> Result<f64>,
) -> Result<(f64, f64)> {
    let [a, b] = alternated(size.repeats(), [&mut ours, &mut theirs])?;
    Ok((a, b))
}

/// Runs each of `runs` once per round for `rounds` rounds, round `r`
/// starting with run `r % K` (for two, each goes first every other
/// round), and returns the median of each.
pub(super) fn alternated<const K: usize>(
    rounds: usize,
    runs: [&mut dyn FnMut() -> Result<f64>; K],
) -> Result<[f64; K]> {
    let mut figures: [Vec<f64>; K] = std::array::from_fn(|_| Vec::new());
    for round in 0..rounds {
        for k in 0..K {
            let i = (round + k) % K;
            figures[i].push(runs[i]()?);
        }
    }
    Ok(figures.map(median))
}

/// Nanoseconds per uncontended lock+unlock.
pub(super) fn ns_per_lock(m: &impl BenchMutex, n: u64) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        m.lock_unlock();
    }
    Ok(t.elapsed().as_nanos() as f64 / n as f64)
}

pub(super) fn ns_per_acquire(sem: &impl BenchSemaphore, n: u64) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        sem.acquire_release();
    }
    Ok(t.elapsed().as_nanos() as f64 / n as f64)
}

/// The untimed round trips before a ping-pong's timed ones.
const WARM_UP: u64 = 100;

/// Microseconds per round trip between this process and a forked answerer
/// (after [`WARM_UP`] untimed ones).
pub(super) fn us_per_round_trip(pp: &impl BenchPingPong, n: u64) -> Result<f64> {
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
            bail!("ping-pong answerer failed or hung");
        }
        Ok(us)
    })
}

/// Items per second from a forked producer to this process.
pub(super) fn items_per_sec(stream: &impl BenchStream, n: u64) -> Result<f64> {
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
                bail!("item {i} arrived as {got}");
            }
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        if producer.join_timeout(Duration::from_secs(60))? != Some(0) {
            bail!("producer failed");
        }
        Ok(rate)
    })
}

/// Items per second from a forked producer to this process, moved in
/// batches of `batch` with `put_many` and `get_many`.
pub(super) fn batched_items_per_sec(q: &multiproc::Queue<u64>, n: u64, batch: u64) -> Result<f64> {
    multiproc::scope(|s| {
        let mut producer = s
            .process(|| {
                let mut i = 0;
                while i < n {
                    let end = (i + batch).min(n);
                    let _ = q.put_many(i..end);
                    i = end;
                }
            })
            .daemon(true);
        let t = Instant::now();
        producer.start()?;
        let mut i = 0;
        while i < n {
            for got in q.get_many(batch as usize)? {
                if got != i {
                    bail!("item {i} arrived as {got}");
                }
                i += 1;
            }
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        if producer.join_timeout(Duration::from_secs(60))? != Some(0) {
            bail!("producer failed");
        }
        Ok(rate)
    })
}

/// Bytes per second of `n` messages of `len` bytes from a forked producer
/// to this process (each message checked by its first and last bytes, and
/// every byte of it read, as a reader that uses the payload must).
pub(super) fn bytes_per_sec(payload: &impl BenchPayload, n: u64, len: usize) -> Result<f64> {
    multiproc::scope(|s| {
        let mut producer = s
            .process(|| {
                let mut msg = vec![0u8; len];
                for i in 0..n {
                    mark_payload(&mut msg, i);
                    payload.send_payload(&msg);
                }
            })
            .daemon(true);
        let t = Instant::now();
        producer.start()?;
        let mut sums = 0u64;
        for i in 0..n {
            let mut ok = false;
            if payload
                .recv_payload(&mut |m| {
                    ok = check_payload(m, i, len);
                    sums = sums.wrapping_add(touch(m));
                })
                .is_none()
            {
                bail!("message {i} did not arrive");
            }
            if !ok {
                bail!("message {i} arrived wrong");
            }
        }
        let rate = (n * len as u64) as f64 / t.elapsed().as_secs_f64();
        std::hint::black_box(sums);
        if producer.join_timeout(Duration::from_secs(60))? != Some(0) {
            bail!("producer failed");
        }
        Ok(rate)
    })
}

/// Two forked processes increment `counter` `n` times each, released
/// together; returns increments per second. Fails if any increment is lost.
pub(super) fn two_process_rate(counter: &(impl BenchCounter + Sync), n: u64) -> Result<f64> {
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
                bail!("{} failed or hung", p.name());
            }
        }
        Ok(t.elapsed().as_secs_f64())
    })?;
    let done = counter.count() - before;
    if done != 2 * n {
        bail!("lost updates: {done} of {} increments", 2 * n);
    }
    Ok(2.0 * n as f64 / elapsed)
}

/// Locked sums of a 1024-element array per second.
pub(super) fn sums_per_sec(a: &impl BenchArray, n: u64) -> Result<f64> {
    let expected = (0..1024).map(f64::from).sum::<f64>();
    let t = Instant::now();
    for _ in 0..n {
        if std::hint::black_box(a.locked_sum()) != expected {
            bail!("array sum mismatch");
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Milliseconds per start + join of a child that returns at once.
pub(super) fn ms_per_process(n: u64, mut start_join: impl FnMut() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        start_join()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum ManagerOp {
    Set,
    Get,
    Append,
    /// `update` with 1000 items: one round trip per batch, as Python's
    /// `d.update(batch)`.
    SetBatched,
    /// `get_many` of 1000 keys: one round trip per batch (Python has no
    /// batched lookup; its closest, one round trip for 1000 values, is
    /// `copy()` of a 1000-item dict).
    GetBatched,
}

pub(super) const BATCH: u64 = 1000;

/// Operations per second on a managed dict or list by `clients` processes
/// (this one, or forked ones released together), and the server's CPU time
/// per operation. The clients' calls travel as `transport` says (through shared memory,
/// or forced onto the socket).
pub(super) fn managed_rate_over(
    op: ManagerOp,
    clients: u64,
    n: u64,
    transport: multiproc::manager::Transport,
) -> Result<(f64, f64)> {
    let started = multiproc::manager::Manager::start()?;
    let manager = multiproc::manager::Manager::connect_with(
        started.address().clone(),
        started.authkey(),
        transport,
    )?;
    let dict = manager.dict::<u64, u64>()?;
    let list = manager.list::<u64>()?;
    prepare(&dict, op, n)?;
    let work = |client: u64| manager_work(&dict, &list, op, client, n);
    let server = started
        .server_pid()
        .context("the manager has no server process")?;
    let cpu_before = cpu_seconds(server)?;
    let t = Instant::now();
    run_clients(clients, work)?;
    let elapsed = t.elapsed().as_secs_f64();
    let ops = (clients * n) as f64;
    let cpu = cpu_seconds(server)? - cpu_before;
    Ok((ops / elapsed, cpu / ops * 1e6))
}

/// Fills `dict` with the keys a `Get` row reads (nothing for the others).
pub(super) fn prepare(dict: &DictProxy<u64, u64>, op: ManagerOp, n: u64) -> multiproc::Result<()> {
    if matches!(op, ManagerOp::Get | ManagerOp::GetBatched) {
        for b in 0..n.div_ceil(BATCH) {
            dict.set_many((b * BATCH..((b + 1) * BATCH).min(n)).map(|i| (i, i)))?;
        }
    }
    Ok(())
}

/// One client's work in a manager row: `n` operations of `op` (client
/// `client` sets keys of its own).
pub(super) fn manager_work(
    dict: &DictProxy<u64, u64>,
    list: &ListProxy<u64>,
    op: ManagerOp,
    client: u64,
    n: u64,
) -> multiproc::Result<()> {
    let base = client * n;
    match op {
        ManagerOp::Set => (0..n).try_for_each(|i| dict.set(base + i, i)),
        ManagerOp::Get => (0..n).try_for_each(|i| dict.get(&i).map(drop)),
        ManagerOp::Append => (0..n).try_for_each(|i| list.append(i)),
        ManagerOp::SetBatched => (0..n / BATCH)
            .try_for_each(|b| dict.set_many((0..BATCH).map(|i| (base + b * BATCH + i, i)))),
        ManagerOp::GetBatched => (0..n / BATCH).try_for_each(|b| {
            let keys: Vec<u64> = (0..BATCH).map(|i| b * BATCH + i).collect();
            dict.get_many(&keys).map(drop)
        }),
    }
}

/// Runs `work(0)` in this process when `clients` is 1; otherwise
/// `work(c)` for each client `c` in a forked process of its own, all
/// released together, and waits for them.
pub(super) fn run_clients<E: std::fmt::Debug>(
    clients: u64,
    work: impl Fn(u64) -> std::result::Result<(), E> + Sync,
) -> Result<()>
where
    anyhow::Error: From<E>,
{
    if clients == 1 {
        return Ok(work(0)?);
    }
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
                bail!("a client process failed");
            }
        }
        Ok(())
    })
}

/// User + system CPU time of a process so far, in seconds, threads that
/// have exited included.
fn cpu_seconds(pid: u32) -> Result<f64> {
    // The process's CPU clock, to the nanosecond, all its threads (exited
    // ones included): `/proc/<pid>/stat` counts 10 ms ticks, which is 50 ns
    // per item on a 200 000-item row.
    let mut clock: libc::clockid_t = 0;
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: `clock` is a valid, writable clock id for the call to fill.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    // SAFETY: `timespec` is a plain C struct of integers, valid when zeroed.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is a valid, writable struct for clock_gettime to fill.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9)
}

/// The sizes of one raw call standing for a manager call of `op`: its
/// request and answer in bytes (`u64` keys and values, 8 bytes each, no
/// encoding), and the operations it carries.
pub(super) fn raw_call_shape(op: ManagerOp) -> (usize, usize, u64) {
    let batch = BATCH as usize;
    match op {
        ManagerOp::Set => (16, 8, 1),
        ManagerOp::Get | ManagerOp::Append => (8, 8, 1),
        ManagerOp::SetBatched => (16 * batch, 8, BATCH),
        ManagerOp::GetBatched => (8 * batch, 8 * batch, BATCH),
    }
}

/// The OS baseline of a managed row: the same clients (this process, or
/// `clients` forked ones released together) making the same number of
/// round trips, each carrying the same operations' keys and values raw
/// ([`raw_call_shape`]), to one answering process (a thread per client)
/// over Unix sockets: what the same calls cost any socket server on this
/// machine. (The fast path's calls go through shared memory instead,
/// which is why those rows can pass 100% of it.) Returns operations per
/// second and the answering process's CPU time per operation in
/// microseconds.
pub(super) fn raw_calls_per_sec(op: ManagerOp, clients: u64, n: u64) -> Result<(f64, f64)> {
    raw_calls_by(op, clients, n, |_, channel, calls| {
        (0..calls).try_for_each(|_| channel.call())
    })
}

/// [`raw_calls_per_sec`], each client `c` making its `calls` on its
/// channel by `client(c, channel, calls)`.
fn raw_calls_by(
    op: ManagerOp,
    clients: u64,
    n: u64,
    client: impl Fn(u64, &RawCall, u64) -> std::io::Result<()> + Sync,
) -> Result<(f64, f64)> {
    let (request, answer, per_call) = raw_call_shape(op);
    let calls = n / per_call;
    let channels = (0..clients)
        .map(|_| RawCall::new(request, answer))
        .collect::<Result<Vec<_>>>()?;
    let done = RawValue::new(0u32)?;
    // Ends every channel (the answering threads and the clients see that
    // at once), and lets the answering process exit.
    let finish = || {
        channels.iter().for_each(RawCall::hang_up);
        done.atomic().store(1, Ordering::Release);
    };
    multiproc::scope(|s| -> Result<(f64, f64)> {
        let mut server = s
            .process(|| {
                std::thread::scope(|t| {
                    for c in &channels {
                        t.spawn(move || (0..calls).for_each(|_| c.answer()));
                    }
                });
                // Until the parent has read this process's CPU time.
                while done.atomic().load(Ordering::Acquire) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .daemon(true);
        server.start()?;
        let pid = server.pid().context("the answering process has no pid")?;
        let measured = std::thread::scope(|t| {
            // Should the answering process die, its clients are not left
            // waiting for answers (this process holds its ends too).
            let watch = t.spawn(|| {
                let code = server.join();
                finish();
                code
            });
            let measured = (|| {
                let cpu_before = cpu_seconds(pid)?;
                let t = Instant::now();
                run_clients(clients, |c| client(c, &channels[c as usize], calls))?;
                let elapsed = t.elapsed().as_secs_f64();
                Ok::<_, anyhow::Error>((elapsed, cpu_seconds(pid)? - cpu_before))
            })();
            // However the clients ended (one may have failed half way),
            // the answering threads are not left waiting for their calls.
            finish();
            match watch.join() {
                Ok(Ok(0)) => measured,
                _ => bail!("the raw calls' answering process failed"),
            }
        });
        let (elapsed, cpu) = measured.context("raw calls over Unix sockets")?;
        let ops = (clients * calls * per_call) as f64;
        Ok((ops / elapsed, cpu / ops * 1e6))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternated_rotates_who_goes_first_and_keeps_medians() {
        let order = std::cell::RefCell::new(Vec::new());
        let run = |k: usize, figures: [f64; 3]| {
            let order = &order;
            let mut calls = 0;
            move || {
                order.borrow_mut().push(k);
                calls += 1;
                Ok(figures[calls - 1])
            }
        };
        let (mut a, mut b, mut c) = (
            run(0, [5.0, 1.0, 3.0]),
            run(1, [2.0, 9.0, 4.0]),
            run(2, [7.0, 7.0, 0.5]),
        );
        let got = alternated(3, [&mut a, &mut b, &mut c]).unwrap();
        assert_eq!(got, [3.0, 4.0, 7.0]);
        assert_eq!(order.into_inner(), [0, 1, 2, 1, 2, 0, 2, 0, 1]);
    }

    #[test]
    fn paired_alternates_as_before() {
        let size = Size {
            quick: true,
            redis: None,
        };
        let order = std::cell::RefCell::new(Vec::new());
        let (a, b) = paired(
            &size,
            || {
                order.borrow_mut().push('a');
                Ok(1.0)
            },
            || {
                order.borrow_mut().push('b');
                Ok(2.0)
            },
        )
        .unwrap();
        assert_eq!((a, b), (1.0, 2.0));
        assert_eq!(order.into_inner(), ['a', 'b', 'b', 'a', 'a', 'b']);
    }

    #[test]
    fn raw_calls_carry_what_the_manager_calls_do() {
        // One key and value each way for a single call; a batch of 1000
        // keys and values, or 1000 keys and 1000 values back, for a batch.
        assert_eq!(raw_call_shape(ManagerOp::Set), (16, 8, 1));
        assert_eq!(raw_call_shape(ManagerOp::Get), (8, 8, 1));
        assert_eq!(raw_call_shape(ManagerOp::SetBatched), (16_000, 8, BATCH));
        assert_eq!(raw_call_shape(ManagerOp::GetBatched), (8_000, 8_000, BATCH));
    }

    /// Runs `f` on a thread of its own; fails if it takes over a minute
    /// (the thread is then left to the end of the test process).
    fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(60))
            .expect("hung for a minute")
    }

    #[test]
    fn clients_of_which_one_cannot_be_started_do_not_hang() {
        // In a child with few descriptors left, so that a client's start
        // fails after others started (each takes one, for its pidfd): the
        // started ones must not wait for ever to be released.
        for free in 2..12 {
            let mut child = Process::new(move || {
                let limit = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                // SAFETY: lowers this (forked) process's own limit.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
                let mut held = Vec::new();
                while let Ok(f) = std::fs::File::open("/dev/null") {
                    held.push(f);
                }
                held.truncate(held.len().saturating_sub(free));
                // An error (no start, or a later one failed), or Ok.
                let _ = run_clients(4, |_| Ok::<(), anyhow::Error>(()));
            })
            .daemon(true);
            child.start().unwrap();
            let code = child.join_timeout(Duration::from_secs(30)).unwrap();
            if code.is_none() {
                child.kill().unwrap();
            }
            assert_eq!(code, Some(0), "with {free} descriptors free");
        }
    }

    #[test]
    fn raw_calls_with_a_failed_client_fail_and_do_not_hang() {
        // Client 1 fails before its first call: its answering thread
        // waits for calls that never come.
        let got = within_a_minute(|| {
            raw_calls_by(ManagerOp::Get, 3, 1000, |c, channel, calls| {
                if c == 1 {
                    return Err(std::io::Error::other("client failed"));
                }
                (0..calls).try_for_each(|_| channel.call())
            })
        });
        assert!(got.is_err(), "{got:?}");
        let got = within_a_minute(|| raw_calls_per_sec(ManagerOp::Get, 2, 1000));
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
