//! Adversarial cases against the shared layer, fourth round: many more
//! processes than CPUs, named objects a second process misuses, and
//! Python's answers at the edges.

mod common;

use std::time::{Duration, Instant};

use common::{join, static_child, watchdog};
use multiproc::Barrier;

const LIMIT: Duration = Duration::from_secs(120);

/// Many processes (far more than CPUs) pass a barrier round after round,
/// one late party keeping the others waiting each time: a round takes
/// about as long as its late party, however many wait meanwhile. Each
/// sleeping party looked for dead ones on every wake-up, asking about every
/// other process: N² reads of `/proc` every 100 ms, under the barrier's
/// lock (150 processes: 25 s for what takes 1.5 s).
#[test]
fn a_barrier_of_many_processes_passes_at_the_pace_of_its_slowest() {
    const PARTIES: u32 = 150;
    const ROUNDS: u32 = 5;
    const LATE: Duration = Duration::from_millis(300);
    watchdog("many-party barrier", LIMIT, || {
        let barrier = Barrier::new(PARTIES).unwrap();
        let start = Instant::now();
        let children: Vec<_> = (0..PARTIES)
            .map(|i| {
                let barrier = barrier.clone();
                static_child(move || {
                    for round in 0..ROUNDS {
                        if i == round {
                            std::thread::sleep(LATE);
                        }
                        barrier.wait().unwrap();
                    }
                })
            })
            .collect();
        for c in &children {
            assert_eq!(join(c, LIMIT), 0);
        }
        let took = start.elapsed();
        assert!(
            took < LATE * ROUNDS + Duration::from_secs(8),
            "{PARTIES} parties, {ROUNDS} rounds: {took:?}"
        );
    });
}
