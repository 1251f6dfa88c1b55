//! Processes step through phases in lockstep: nobody starts phase k + 1
//! before everyone has finished phase k. The barrier's action, run by one
//! process per pass, announces each phase.
//!
//! Run: `cargo run --example barrier`

use std::sync::atomic::Ordering;

use multiproc::{Barrier, Process, RawValue};

const WORKERS: u32 = 4;
const PHASES: u32 = 3;

fn main() -> multiproc::Result<()> {
    let phase = RawValue::new(0u32)?;
    let announcer = phase.clone();
    let barrier = Barrier::new(WORKERS)?.with_action(move || {
        let done = announcer.atomic().fetch_add(1, Ordering::SeqCst) + 1;
        println!("-- all {WORKERS} workers finished phase {done}");
    });
    let mut workers: Vec<Process> = (0..WORKERS)
        .map(|w| {
            let (barrier, phase) = (barrier.clone(), phase.clone());
            Process::fallible(move || -> multiproc::Result<()> {
                for p in 1..=PHASES {
                    // Nobody can be ahead: the previous phase is complete.
                    assert_eq!(phase.atomic().load(Ordering::SeqCst), p - 1);
                    println!("worker {w}: phase {p}");
                    barrier.wait()?;
                }
                Ok(())
            })
        })
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    for w in &workers {
        assert_eq!(w.join()?, 0, "{} failed", w.name());
    }
    println!("{PHASES} phases done in lockstep");
    Ok(())
}
