//! [iceoryx2](::iceoryx2) (zero-copy publish-subscribe in shared memory)
//! beside [`Queue`](multiproc::Queue) and [`Pipe`](fn@multiproc::conn::Pipe).
//!
//! Each process makes its own node and ports (iceoryx2's objects belong to
//! the process that made them), so these peers run their own two-process
//! workloads instead of going through the bench traits. The services are
//! lossless: safe overflow off and the publisher's backpressure strategy
//! `RetryUntilDelivered` (iceoryx2's defaults overwrite the oldest unread
//! sample when a subscriber falls behind). Whatever the settings, the
//! rates are counted by items delivered, and a lost item is reported.
//! iceoryx2's subscriber has no blocking receive: the receiving side polls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

/// How many unread samples a subscriber holds before the publisher waits.
const BUFFER: usize = 256;
/// How many unread 1 MiB samples a subscriber holds.
const PAYLOAD_BUFFER: usize = 8;

/// What a one-way peer run delivered.
#[derive(Clone, Copy, Debug)]
pub struct Delivered {
    /// Items (or bytes) per second, counting only what arrived.
    pub rate: f64,
    /// How many items arrived.
    pub delivered: u64,
    /// How many were sent.
    pub sent: u64,
}

impl Delivered {
    /// Whether every item sent arrived.
    pub fn lossless(&self) -> bool {
        self.delivered == self.sent
    }
}

/// iceoryx2's errors as `anyhow` errors (not all of them are `Sync`).
trait Ice<T> {
    fn ice(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Debug> Ice<T> for std::result::Result<T, E> {
    fn ice(self, what: &str) -> Result<T> {
        self.map_err(|e| anyhow!("iceoryx2 {what}: {e:?}"))
    }
}

/// A node of this process that leaves signals to the program.
fn new_node() -> Result<Node<ipc::Service>> {
    // Not its warning that no config file was found (it then uses its
    // defaults), which would break the bench's progress line.
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .ice("node")
}

/// A service name no other run uses.
fn unique_name(kind: &str) -> Result<ServiceName> {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "multiproc-bench/{}/{}/{kind}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    ServiceName::new(&name).ice("service name")
}

/// The lossless publish-subscribe service `name` of `payload`s, opened or
/// made (a macro: iceoryx2 opens services of sized and of slice payloads
/// through different methods).
macro_rules! lossless_service {
    ($node:expr, $name:expr, $payload:ty, $buffer:expr) => {
        $node
            .service_builder($name)
            .publish_subscribe::<$payload>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size($buffer)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
            .ice("service")
    };
}

/// The start of a one-way run, in shared memory: the publisher's process
/// says when its publisher exists ([`PUBLISHER_READY`]), the subscriber's
/// answers once it has connected to it ([`SUBSCRIBER_CONNECTED`]). Without
/// it the publisher could send before the subscriber connects, and
/// iceoryx2 drops what does not fit the buffer of a subscriber that has
/// not connected yet, whatever the backpressure strategy.
struct Handshake(multiproc::RawValue<u32>);

const PUBLISHER_READY: u32 = 1;
const SUBSCRIBER_CONNECTED: u32 = 2;

impl Handshake {
    fn new() -> Result<Self> {
        Ok(Handshake(multiproc::RawValue::new(0)?))
    }

    fn say(&self, state: u32) {
        self.0.atomic().store(state, Ordering::Release);
    }

    /// Waits (at most ten seconds) until the other side said `state`.
    fn wait_for(&self, state: u32) -> Result<()> {
        let t = Instant::now();
        while self.0.atomic().load(Ordering::Acquire) < state {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("iceoryx2 peer: the other process did not start");
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// Runs `child` in a forked process while `parent` runs here; fails if
/// either fails or the child does not end within a minute of `parent`.
fn with_child<T>(
    child: impl Fn() -> Result<()> + Sync,
    parent: impl FnOnce(&multiproc::Process<'_>) -> Result<T>,
) -> Result<T> {
    multiproc::scope(|s| {
        let mut p = s
            .process(|| {
                if let Err(e) = child() {
                    eprintln!("{e:#}");
                    std::process::exit(1);
                }
            })
            .daemon(true);
        p.start()?;
        let out = parent(&p);
        if out.is_err() {
            let _ = p.kill();
        }
        if p.join_timeout(Duration::from_secs(60))? != Some(0) {
            bail!("the iceoryx2 peer's other process failed or hung");
        }
        out
    })
}

/// Polls `receive` for the next sample; `None` once the other process
/// has ended (or ten seconds pass) with nothing more to read.
fn next<S>(
    mut receive: impl FnMut() -> Result<Option<S>>,
    other: &multiproc::Process<'_>,
) -> Result<Option<S>> {
    let mut idle = 0u32;
    let mut since: Option<Instant> = None;
    loop {
        if let Some(sample) = receive()? {
            return Ok(Some(sample));
        }
        idle = idle.wrapping_add(1);
        if idle % 1024 == 0 {
            let started = *since.get_or_insert_with(Instant::now);
            if !other.is_alive() || started.elapsed() > Duration::from_secs(10) {
                // One last look: what the other side sent before it ended.
                return receive();
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

/// `u64` items per second from a forked publisher to a subscriber here,
/// counted by items delivered (from the first item's arrival, so that
/// neither side's setup is counted).
///
/// # Errors
/// If iceoryx2 fails or the publisher's process fails.
pub fn iceoryx2_items_per_sec(n: u64) -> Result<Delivered> {
    let name = unique_name("items")?;
    let node = new_node()?;
    let service = lossless_service!(node, &name, u64, BUFFER)?;
    let subscriber = service
        .subscriber_builder()
        .buffer_size(BUFFER)
        .create()
        .ice("subscriber")?;
    let start = Handshake::new()?;
    with_child(
        || {
            let node = new_node()?;
            let service = lossless_service!(node, &name, u64, BUFFER)?;
            let publisher = service
                .publisher_builder()
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .ice("publisher")?;
            start.say(PUBLISHER_READY);
            start.wait_for(SUBSCRIBER_CONNECTED)?;
            for i in 0..n {
                publisher.send_copy(i).ice("send")?;
            }
            Ok(())
        },
        |child| {
            start.wait_for(PUBLISHER_READY)?;
            // A receive connects the subscriber to the new publisher.
            if subscriber.receive().ice("receive")?.is_some() {
                bail!("iceoryx2 peer: a sample before the start");
            }
            start.say(SUBSCRIBER_CONNECTED);
            let mut delivered: u64 = 0;
            let mut t = Instant::now();
            while let Some(sample) = next(|| subscriber.receive().ice("receive"), child)? {
                if delivered == 0 {
                    t = Instant::now();
                }
                std::hint::black_box(*sample.payload());
                delivered += 1;
            }
            let secs = t.elapsed().as_secs_f64();
            Ok(Delivered {
                rate: delivered.saturating_sub(1) as f64 / secs,
                delivered,
                sent: n,
            })
        },
    )
}

/// Reads every byte of `bytes` (a sum of its 8-byte words), as a consumer
/// that uses the payload does.
pub fn touch_every_byte(bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let rest = words.remainder();
    let mut sum = 0u64;
    for w in words {
        let w: [u8; 8] = w.try_into().unwrap_or_default();
        sum = sum.wrapping_add(u64::from_ne_bytes(w));
    }
    for &b in rest {
        sum = sum.wrapping_add(u64::from(b));
    }
    std::hint::black_box(sum)
}

/// Bytes per second of `n` payloads of `len` bytes from a forked publisher
/// (which copies each from its own buffer into the loaned sample) to a
/// subscriber here that reads every byte of each in place, counted by
/// payloads delivered (from the first one's arrival).
///
/// # Errors
/// If iceoryx2 fails or the publisher's process fails.
pub fn iceoryx2_payload_bytes_per_sec(n: u64, len: usize) -> Result<Delivered> {
    let name = unique_name("bytes")?;
    let node = new_node()?;
    let service = lossless_service!(node, &name, [u8], PAYLOAD_BUFFER)?;
    let subscriber = service
        .subscriber_builder()
        .buffer_size(PAYLOAD_BUFFER)
        .create()
        .ice("subscriber")?;
    let start = Handshake::new()?;
    with_child(
        || {
            let node = new_node()?;
            let service = lossless_service!(node, &name, [u8], PAYLOAD_BUFFER)?;
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(len)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .ice("publisher")?;
            start.say(PUBLISHER_READY);
            start.wait_for(SUBSCRIBER_CONNECTED)?;
            let mut msg = vec![0u8; len];
            for i in 0..n {
                crate::baseline::mark_payload(&mut msg, i);
                let sample = publisher.loan_slice_uninit(len).ice("loan")?;
                sample.write_from_slice(&msg).send().ice("send")?;
            }
            Ok(())
        },
        |child| {
            start.wait_for(PUBLISHER_READY)?;
            // A receive connects the subscriber to the new publisher.
            if subscriber.receive().ice("receive")?.is_some() {
                bail!("iceoryx2 peer: a sample before the start");
            }
            start.say(SUBSCRIBER_CONNECTED);
            let mut delivered: u64 = 0;
            let mut t = Instant::now();
            while let Some(sample) = next(|| subscriber.receive().ice("receive"), child)? {
                if delivered == 0 {
                    t = Instant::now();
                }
                let bytes = sample.payload();
                touch_every_byte(bytes);
                if bytes.len() != len {
                    bail!("a payload of {} bytes arrived", bytes.len());
                }
                delivered += 1;
            }
            let secs = t.elapsed().as_secs_f64();
            Ok(Delivered {
                rate: (delivered.saturating_sub(1) * len as u64) as f64 / secs,
                delivered,
                sent: n,
            })
        },
    )
}

/// Microseconds per round trip of a `u64` between this process and a
/// forked one, each side publishing on one service and polling its
/// subscriber of the other.
///
/// # Errors
/// If iceoryx2 fails or the other process fails.
pub fn iceoryx2_round_trip_us(n: u64) -> Result<f64> {
    let (ping, pong) = (unique_name("ping")?, unique_name("pong")?);
    let node = new_node()?;
    let ping_service = lossless_service!(node, &ping, u64, BUFFER)?;
    let pong_service = lossless_service!(node, &pong, u64, BUFFER)?;
    let pongs = pong_service
        .subscriber_builder()
        .create()
        .ice("subscriber")?;
    let pings = ping_service.publisher_builder().create().ice("publisher")?;
    with_child(
        || {
            let node = new_node()?;
            let ping_service = lossless_service!(node, &ping, u64, BUFFER)?;
            let pong_service = lossless_service!(node, &pong, u64, BUFFER)?;
            let pings = ping_service
                .subscriber_builder()
                .create()
                .ice("subscriber")?;
            let pongs = pong_service.publisher_builder().create().ice("publisher")?;
            // Ready: the parent sends its first ping once this arrives.
            pongs.send_copy(u64::MAX).ice("send")?;
            for _ in 0..n {
                let v = poll(&pings)?;
                pongs.send_copy(v).ice("send")?;
            }
            Ok(())
        },
        |_| {
            poll(&pongs)?;
            let t = Instant::now();
            for i in 0..n {
                send(&pings, i)?;
                if poll(&pongs)? != i {
                    bail!("iceoryx2 ping-pong out of step");
                }
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
        },
    )
}

fn send(publisher: &Publisher<ipc::Service, u64, ()>, v: u64) -> Result<()> {
    publisher.send_copy(v).ice("send").map(drop)
}

/// Spins on `subscriber` until a sample comes (at most ten seconds).
fn poll(subscriber: &Subscriber<ipc::Service, u64, ()>) -> Result<u64> {
    let t = Instant::now();
    loop {
        for _ in 0..1024 {
            if let Some(sample) = subscriber.receive().ice("receive")? {
                return Ok(*sample.payload());
            }
            std::hint::spin_loop();
        }
        // Two processes polling on a busy machine: let others run.
        std::thread::yield_now();
        if t.elapsed() > Duration::from_secs(10) {
            bail!("iceoryx2 ping-pong: no answer in 10 s");
        }
    }
}
