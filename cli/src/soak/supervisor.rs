//! The supervisor: starts the workers, kills one at random every so
//! often and starts its replacement, then runs the targeted phases and
//! checks the totals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::Process;

use super::check::{check_counts, collect, total};
use super::condition_phase::condition_phase;
use super::queue_phase::queue_phase;
use super::worker::Worker;
use super::{now_ns, xorshift, Field, Options, Shared, OP_TIMEOUT, SLACK, WAITS};

/// The supervisor's record of one slot.
struct Slot {
    process: Process<'static>,
    incarnation: u64,
    stuck_reported: bool,
}

/// Runs the soak; an error if any invariant was broken.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let workers = options
        .workers
        .unwrap_or_else(|| (2 * multiproc::cpu_count()).max(4))
        .clamp(1, 64);
    let shared = Arc::new(Shared::new(workers)?);
    let next_incarnation = AtomicU64::new(0);
    let start = |slot: usize| -> multiproc::Result<Slot> {
        let incarnation = next_incarnation.fetch_add(1, Ordering::Relaxed);
        shared
            .slot(slot, Field::AckQueue)
            .store(0, Ordering::Relaxed);
        shared
            .slot(slot, Field::WaitSince)
            .store(0, Ordering::Relaxed);
        let s = shared.clone();
        let mut process = Process::new(move || {
            Worker {
                shared: &s,
                slot,
                incarnation,
                rng: xorshift(now_ns() ^ (incarnation << 20)),
                queue_seq: 0,
            }
            .run()
        })
        .with_name(format!("soak-{slot}"));
        process.start()?;
        Ok(Slot {
            process,
            incarnation,
            stuck_reported: false,
        })
    };
    // Each incarnation's accepted queue items, once it has ended.
    let mut acked_items: HashMap<u64, u64> = HashMap::new();
    let mut kills = 0u64;
    let mut slots = (0..workers)
        .map(&start)
        .collect::<multiproc::Result<Vec<_>>>()?;

    let delivered = Mutex::new(HashMap::<u64, u64>::new());
    let done = AtomicBool::new(false);
    let began = Instant::now();
    let run_for = Duration::from_secs(options.seconds);
    println!(
        "soak: {workers} workers for {} s, a kill every ~{} ms",
        options.seconds, options.kill_every_ms
    );
    let collected = std::thread::scope(|scope| -> multiproc::Result<()> {
        let collector = scope.spawn(|| collect(&shared, &delivered, &done));
        let mut rng = xorshift(now_ns());
        let mut shown = 0;
        while began.elapsed() < run_for {
            rng = xorshift(rng);
            // The chaos pace: jittered around the mean.
            std::thread::sleep(Duration::from_millis(rng % (2 * options.kill_every_ms + 1)));
            let victim = (rng >> 8) as usize % workers;
            let old = &slots[victim];
            old.process.kill()?;
            old.process.join()?;
            kills += 1;
            release_permit(&shared, victim)?;
            acked_items.insert(
                old.incarnation,
                shared.slot(victim, Field::AckQueue).load(Ordering::Acquire),
            );
            slots[victim] = start(victim)?;
            check_stuck(&shared, &mut slots);
            let secs = began.elapsed().as_secs();
            if secs >= shown + 5 {
                shown = secs;
                println!(
                    "  {secs:>4} s: {kills} kills, {} ops, {} violations",
                    total(&shared, Field::Ops),
                    shared.violations.get()
                );
            }
        }
        shared.stop.set(1);
        for (slot, s) in slots.iter().enumerate() {
            match s.process.join_timeout(OP_TIMEOUT + SLACK)? {
                Some(0) => {}
                Some(code) => shared.violation(format_args!("worker {slot} exited with {code}")),
                None => {
                    let what = shared.slot(slot, Field::WaitWhat).load(Ordering::Relaxed);
                    shared.violation(format_args!(
                        "worker {slot} did not stop (waiting on {})",
                        WAITS[what as usize % WAITS.len()]
                    ));
                    s.process.kill()?;
                    s.process.join()?;
                    kills += 1;
                }
            }
            acked_items.insert(
                s.incarnation,
                shared.slot(slot, Field::AckQueue).load(Ordering::Acquire),
            );
        }
        done.store(true, Ordering::Release);
        collector.join().expect("the collector does not panic")
    });
    collected?;
    let elapsed = began.elapsed();
    let phase = (run_for / 5).max(Duration::from_secs(1));
    let (rounds, condition_kills) = condition_phase(&shared, phase)?;
    kills += condition_kills;
    println!("condition phase: {rounds} rounds, {condition_kills} waiters killed");
    let items = queue_phase(&shared, phase)?;
    println!("queue observer phase: {items} items");
    check_counts(
        &shared,
        kills,
        &acked_items,
        &delivered.into_inner().unwrap_or_else(|p| p.into_inner()),
    )?;
    let ops = total(&shared, Field::Ops);
    println!(
        "operations: {ops} ({:.0}/s)",
        ops as f64 / elapsed.as_secs_f64()
    );
    println!("kills survived: {kills}");
    println!("owner-died recoveries: {}", shared.recoveries.get());
    let violations = shared.violations.get();
    println!("violations: {violations}");
    if violations > 0 {
        anyhow::bail!("{violations} invariant violations (see the VIOLATION lines above)");
    }
    Ok(())
}

/// Gives back the permit a killed worker held (if the kill came between
/// taking it and recording it, the permit is lost: never counted twice).
fn release_permit(shared: &Shared, slot: usize) -> multiproc::Result<()> {
    let bit = 1u64 << slot;
    if shared.permits.atomic().fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
        shared.semaphore.release()?;
    }
    Ok(())
}

/// Reports each worker that has waited past its deadline (once per wait).
fn check_stuck(shared: &Shared, slots: &mut [Slot]) {
    let now = now_ns();
    for (i, slot) in slots.iter_mut().enumerate() {
        let since = shared.slot(i, Field::WaitSince).load(Ordering::Acquire);
        let stuck =
            since != 0 && now.saturating_sub(since) > (OP_TIMEOUT + SLACK).as_nanos() as u64;
        if stuck && !slot.stuck_reported {
            let what = shared.slot(i, Field::WaitWhat).load(Ordering::Relaxed) as usize;
            shared.violation(format_args!(
                "worker {i} stuck for {:?} on {}",
                Duration::from_nanos(now - since),
                WAITS[what % WAITS.len()]
            ));
        }
        slot.stuck_reported = stuck;
    }
}
