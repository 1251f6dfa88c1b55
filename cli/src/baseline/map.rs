//! The storage floor of the batched manager rows: what keeping the same
//! items costs a process that does nothing else, with no transport, no
//! decoding and no value model. A manager's dict keeps insertion order
//! (as Python's does), so the floor is an insertion-ordered hash map of
//! `u64` to `u64` (`IndexMap`, foldhash: the server's own map and hash
//! with 16-byte items instead of its dynamic values).

use std::sync::atomic::Ordering;
use std::time::Instant;

use indexmap::IndexMap;
use multiproc::RawValue;

type Ordered = IndexMap<u64, u64, foldhash::fast::RandomState>;

/// What the floor measures.
#[derive(Clone, Copy, Debug)]
pub enum MapWork {
    /// `n` new keys, inserted in batches (a batched set's server side).
    Insert,
    /// `n` lookups of present keys in batches, each batch's values
    /// collected (a batched get's server side); the map of `n` keys is
    /// made before the clock starts.
    Lookup,
}

/// Items per second of `work` on `n` keys in batches of `batch`, done in a
/// process forked for it, as a manager's server is: a fresh process, whose
/// map grows into memory it has never touched.
///
/// # Errors
/// If the process cannot be started or fails.
pub fn ordered_map_items_per_sec(work: MapWork, n: u64, batch: u64) -> anyhow::Result<f64> {
    let nanos = RawValue::new(0u64)?;
    let mut child = multiproc::Process::new({
        let nanos = nanos.clone();
        move || {
            let elapsed = timed(work, n, batch.max(1));
            nanos.atomic().store(elapsed.max(1), Ordering::Release);
        }
    });
    child.start()?;
    match child.join()? {
        0 => {}
        code => anyhow::bail!("the map floor's process exited with {code}"),
    }
    let nanos = nanos.atomic().load(Ordering::Acquire);
    Ok(n as f64 / (nanos as f64 * 1e-9))
}

/// Nanoseconds `work` takes in this process.
fn timed(work: MapWork, n: u64, batch: u64) -> u64 {
    let batches = n.div_ceil(batch);
    let keys = |b: u64| b * batch..((b + 1) * batch).min(n);
    let mut map = Ordered::default();
    let t = match work {
        MapWork::Insert => {
            // The items arrive in batches, as decoded requests do.
            let items: Vec<Vec<(u64, u64)>> = (0..batches)
                .map(|b| keys(b).map(|k| (k, k)).collect())
                .collect();
            let t = Instant::now();
            for batch in items {
                map.extend(batch);
            }
            t
        }
        MapWork::Lookup => {
            map.extend((0..n).map(|k| (k, k)));
            let t = Instant::now();
            for b in 0..batches {
                let found: Vec<Option<u64>> = keys(b).map(|k| map.get(&k).copied()).collect();
                std::hint::black_box(found);
            }
            t
        }
    };
    let elapsed = t.elapsed();
    std::hint::black_box(&map);
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}
