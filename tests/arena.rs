//! The arena: many small objects share few mappings, and no two processes
//! ever hand out the same bytes. In a file of its own because it counts the
//! mappings of the whole test process.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{child, join, wait_until, watchdog};
use multiproc::{RawValue, Value};

const LIMIT: Duration = Duration::from_secs(60);

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn a_hundred_thousand_values_do_not_mean_a_hundred_thousand_mappings() {
    let before = mappings();
    let values: Vec<Value<i64>> = (0..100_000).map(|i| Value::new(i).unwrap()).collect();
    let added = mappings().saturating_sub(before);
    assert!(added < 100, "{added} new mappings for 100 000 values");
    assert_eq!(values[99_999].get().unwrap(), 99_999);
    assert_eq!(values[12_345].get().unwrap(), 12_345);
}

#[test]
fn freed_blocks_are_reused_but_never_across_a_fork() {
    watchdog("arena fork safety", LIMIT, || {
        // Reuse within one process (no fork in between): same address. The
        // element type gives a size class no other test here allocates.
        type Big = [u64; 30];
        let a = Value::new([1u64; 30]).unwrap();
        let big_addr = |v: &Value<Big>| &*v.lock().unwrap() as *const Big as usize;
        let first = big_addr(&a);
        drop(a);
        let b = Value::new([2u64; 30]).unwrap();
        assert_eq!(big_addr(&b), first, "a freed block is reused");
        assert_eq!(b.get().unwrap(), [2; 30], "and initialised afresh");
        let addr = |v: &Value<u64>| &*v.lock().unwrap() as *const u64 as usize;

        // A block alive at a fork may still be used by the child: after the
        // parent frees it, it must not be handed out again.
        let old = Value::new(10u64).unwrap();
        let step = RawValue::new(0u32).unwrap();
        let in_child = old.clone();
        let step_child = step.clone();
        multiproc::scope(|s| {
            let c = child(s, move || {
                let step = step_child;
                assert!(wait_until(LIMIT, || step.atomic().load(SeqCst) == 1));
                in_child.set(999).unwrap();
                // Objects made in the child come from its own arena.
                let mine = Value::new(5u64).unwrap();
                assert_eq!(mine.get().unwrap(), 5);
                step.atomic().store(2, SeqCst);
            });
            let old_addr = addr(&old);
            drop(old);
            let fresh: Vec<Value<u64>> = (0..64).map(|i| Value::new(i).unwrap()).collect();
            assert!(fresh.iter().all(|v| addr(v) != old_addr));
            step.atomic().store(1, SeqCst);
            assert_eq!(join(&c, LIMIT), 0);
            for (i, v) in fresh.iter().enumerate() {
                assert_eq!(
                    v.get().unwrap(),
                    i as u64,
                    "the child's write landed in a new object"
                );
            }
        });
    });
}
