//! The condition phase: waiters killed while they wait, and every
//! `notify(n)` waking exactly `min(n, live waiters)`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use multiproc::sync::{Condition, Semaphore};
use multiproc::{RawArray, RawValue};

use super::{now_ns, started, xorshift, Shared, OP_TIMEOUT, SLACK};

/// Waiters of one round of the condition phase.
const ROUND_WAITERS: u32 = 4;

/// Rounds on one condition: `ROUND_WAITERS` processes wait, some are
/// killed, then a `notify(n)` and a `notify_all`. Each waiter records
/// which of the two woke it (the generation the supervisor set under the
/// lock), and each must have woken exactly as many as were alive, up to n.
/// The dead of one round are still in the condition when the next begins.
/// Returns the rounds and the kills.
pub(super) fn condition_phase(
    shared: &Arc<Shared>,
    length: Duration,
) -> multiproc::Result<(u64, u64)> {
    let cond = Condition::new()?;
    let sleeping = Semaphore::new(0)?;
    let generation = RawValue::new(0u32)?;
    // Waiters of this round woken by [the notify(n), the notify_all].
    let woken = RawArray::<u32>::new(2)?;
    let began = Instant::now();
    let mut rng = xorshift(now_ns());
    let (mut rounds, mut kills) = (0, 0);
    while began.elapsed() < length {
        woken.atomic(0)?.store(0, Ordering::Relaxed);
        woken.atomic(1)?.store(0, Ordering::Relaxed);
        let waiters = (0..ROUND_WAITERS)
            .map(|_| {
                let (s, cond, sleeping) = (shared.clone(), cond.clone(), sleeping.clone());
                let (generation, woken) = (generation.clone(), woken.clone());
                started(move || {
                    let mut g = match cond.lock() {
                        Ok(g) => g,
                        Err(e) => return s.violation(format_args!("condition lock: {e}")),
                    };
                    if let Err(e) = sleeping.release() {
                        return s.violation(format_args!("semaphore release: {e}"));
                    }
                    match g.wait_timeout(OP_TIMEOUT + SLACK) {
                        Ok(true) => {
                            let gen = generation.get() as usize;
                            if let Ok(w) = woken.atomic(gen.min(1)) {
                                w.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(false) => {
                            s.violation(format_args!("a live condition waiter was never notified"))
                        }
                        Err(e) => s.violation(format_args!("condition wait: {e}")),
                    }
                })
            })
            .collect::<multiproc::Result<Vec<_>>>()?;
        for _ in 0..ROUND_WAITERS {
            if !sleeping.acquire_timeout(OP_TIMEOUT + SLACK) {
                shared.violation(format_args!("a condition waiter did not start"));
            }
        }
        // Once the lock is free again, every waiter is inside `wait`.
        drop(cond.lock_timeout(OP_TIMEOUT + SLACK)?);
        rng = xorshift(rng);
        let dead = (rng % u64::from(ROUND_WAITERS)) as usize;
        // Half the time the notify comes while the killed may still be
        // dying: a notification chosen for one of them must pass on.
        let dying = rng & (1 << 20) != 0;
        for p in &waiters[..dead] {
            p.kill()?;
            if !dying {
                p.join()?;
            }
        }
        kills += dead as u64;
        let live = ROUND_WAITERS - dead as u32;
        let n = 1 + ((rng >> 8) % u64::from(ROUND_WAITERS)) as u32;
        let expected = [n.min(live), live - n.min(live)];
        {
            let g = cond.lock_timeout(OP_TIMEOUT + SLACK)?;
            generation.set(0);
            g.notify(n);
        }
        if dying {
            for p in &waiters[..dead] {
                p.join()?;
            }
        }
        let deadline = Instant::now() + OP_TIMEOUT + SLACK;
        while woken.atomic(0)?.load(Ordering::Relaxed) < expected[0] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        {
            let g = cond.lock_timeout(OP_TIMEOUT + SLACK)?;
            generation.set(1);
            g.notify_all();
        }
        for p in &waiters[dead..] {
            match p.join_timeout(OP_TIMEOUT + SLACK)? {
                Some(0) => {}
                other => shared.violation(format_args!("a condition waiter ended with {other:?}")),
            }
        }
        let got = [woken.get(0)?, woken.get(1)?];
        if got != expected {
            shared.violation(format_args!(
                "notify({n}) with {live} live and {dead} killed waiters woke {} (then notify_all {}), expected {expected:?}",
                got[0], got[1]
            ));
        }
        rounds += 1;
    }
    Ok((rounds, kills))
}
