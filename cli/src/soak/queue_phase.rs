//! The queue observer phase: more busy processes than CPUs on a small ring,
//! producers and consumers at work while others call `len()` and
//! `is_full()`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use multiproc::{Error, Queue, RawArray, RawValue};

use super::{started, Shared, OP_TIMEOUT, SLACK};

/// Items one producer of the queue phase puts at most.
const PHASE_ITEMS: usize = 1 << 20;

/// Producers, consumers and processes that only look at `len()` and
/// `is_full()` on a small ring, beside processes that only burn CPU, so
/// that every reader is descheduled mid-read now and then. Nothing is
/// killed: a `Corrupt` error or an impossible length is a violation, and
/// every item put is delivered exactly once. Returns the items.
pub(super) fn queue_phase(shared: &Arc<Shared>, length: Duration) -> multiproc::Result<u64> {
    const PRODUCERS: usize = 4;
    let queue = Queue::<(u32, u32, Vec<u8>)>::with_capacity(0, 256)?;
    let stop = RawValue::new(0u32)?;
    let put = RawArray::<u32>::new(PRODUCERS)?;
    let seen = RawArray::<u8>::new(PRODUCERS * PHASE_ITEMS)?;
    let mut busy = Vec::new();
    for p in 0..PRODUCERS {
        let (s, queue, stop, put) = (shared.clone(), queue.clone(), stop.clone(), put.clone());
        busy.push(started(move || {
            let Ok(next) = put.atomic(p) else { return };
            while stop.get() == 0 && (next.load(Ordering::Relaxed) as usize) < PHASE_ITEMS {
                let seq = next.load(Ordering::Relaxed);
                match queue.put((p as u32, seq, vec![seq as u8; seq as usize % 48])) {
                    Ok(()) => next.store(seq + 1, Ordering::Relaxed),
                    Err(e) => return s.violation(format_args!("queue phase put: {e}")),
                }
            }
        })?);
    }
    let max_items = (queue.max_item_size() + 4) / 4;
    for _ in 0..2 {
        let (s, queue, stop) = (shared.clone(), queue.clone(), stop.clone());
        busy.push(started(move || {
            while stop.get() == 0 {
                let len = queue.len();
                if len > max_items {
                    s.violation(format_args!("a 256-byte queue said it held {len} items"));
                }
                std::hint::black_box(queue.is_full());
            }
        })?);
    }
    for _ in 0..4 {
        let stop = stop.clone();
        busy.push(started(move || {
            while stop.get() == 0 {
                std::hint::spin_loop();
            }
        })?);
    }
    let consumers = (0..3)
        .map(|_| {
            let (s, queue, seen) = (shared.clone(), queue.clone(), seen.clone());
            started(move || loop {
                // No wait: every get reads both ends without a lock first.
                match queue.get_timeout(Duration::ZERO) {
                    Ok((p, seq, _)) => {
                        let at = p as usize * PHASE_ITEMS + seq as usize;
                        if let Ok(n) = seen.atomic(at) {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(Error::Timeout) => {}
                    Err(Error::Closed) => return,
                    Err(e) => return s.violation(format_args!("queue phase get: {e}")),
                }
            })
        })
        .collect::<multiproc::Result<Vec<_>>>()?;
    std::thread::sleep(length);
    stop.set(1);
    for p in &busy {
        if p.join_timeout(OP_TIMEOUT + SLACK)? != Some(0) {
            shared.violation(format_args!("a queue phase process did not stop"));
            p.kill()?;
            p.join()?;
        }
    }
    queue.close_all()?;
    for p in &consumers {
        if p.join_timeout(OP_TIMEOUT + SLACK)? != Some(0) {
            shared.violation(format_args!("a queue phase consumer did not stop"));
            p.kill()?;
            p.join()?;
        }
    }
    let (put, seen) = (put.read(..)?, seen.read(..)?);
    let mut items = 0;
    for (p, &n) in put.iter().enumerate() {
        let mine = &seen[p * PHASE_ITEMS..(p + 1) * PHASE_ITEMS];
        let wrong = mine
            .iter()
            .enumerate()
            .filter(|&(seq, &got)| got != u8::from(seq < n as usize))
            .count();
        if wrong > 0 {
            shared.violation(format_args!(
                "queue phase: {wrong} of producer {p}'s items not delivered exactly once"
            ));
        }
        items += u64::from(n);
    }
    Ok(items)
}
