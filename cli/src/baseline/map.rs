//! The storage floors of the batched manager rows: what keeping the same
//! items costs a process that does nothing else, with no transport and no
//! decoding. A manager's dict keeps insertion order (as Python's does), so
//! each floor is an insertion-ordered hash map (`IndexMap`, foldhash: the
//! server's own map and hash): of `u64` to `u64` (16-byte items, no value
//! model), and the server's own dict of dynamic values (the value model
//! any item of a manager's dict is kept in, as Python's objects are).

use std::sync::atomic::Ordering;
use std::time::Instant;

use indexmap::IndexMap;
use multiproc::manager::bench::{bare_updates, BareDict, IntBatches};
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

/// What the floor's map keeps.
#[derive(Clone, Copy, Debug)]
pub enum Items {
    /// `u64` keys and values.
    U64,
    /// The server's dynamic values (its dict type, int keys and values).
    Values,
}

/// Items per second of `work` on `n` keys in batches of `batch`, kept as
/// `items`, done in a process forked for it, as a manager's server is: a
/// fresh process, whose map grows into memory it has never touched.
///
/// # Errors
/// If the process cannot be started or fails.
pub fn ordered_map_items_per_sec(
    work: MapWork,
    items: Items,
    n: u64,
    batch: u64,
) -> anyhow::Result<f64> {
    let nanos = RawValue::new(0u64)?;
    let mut child = multiproc::Process::new({
        let nanos = nanos.clone();
        move || {
            let batch = batch.max(1);
            let elapsed = match items {
                Items::U64 => timed(work, n, batch),
                Items::Values => timed_values(work, n, batch),
            };
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

/// Nanoseconds `work` takes in this process on the server's own dict.
fn timed_values(work: MapWork, n: u64, batch: u64) -> u64 {
    let batches = i64::try_from(n.div_ceil(batch)).unwrap_or(i64::MAX);
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let elapsed = match work {
        MapWork::Insert => {
            let items = IntBatches::of(n, batch);
            let t = Instant::now();
            let map = bare_updates(items);
            let elapsed = t.elapsed();
            drop(map);
            elapsed
        }
        MapWork::Lookup => {
            let map = BareDict::new(n);
            let t = Instant::now();
            for b in 0..batches {
                let found = map.lookups(b * batch..((b + 1) * batch).min(n));
                std::hint::black_box(found);
            }
            t.elapsed()
        }
    };
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}
