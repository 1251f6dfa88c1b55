//! The queue's frame decoder over a ring whose offsets and bytes are
//! arbitrary (what a broken or hostile process could leave in shared
//! memory): every get returns an item or an error, never panics, never
//! reads outside the ring, never loops; and the queue still accepts puts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiproc::Queue;

thread_local! {
    static QUEUE: Queue<Vec<u8>> = Queue::with_capacity(0, 4096).expect("a queue");
}

fuzz_target!(|data: &[u8]| {
    QUEUE.with(|q| {
        q.fuzz_scribble(data);
        let _ = (q.len(), q.is_empty(), q.is_full());
        // A ring of 4096 bytes holds at most 1024 frames.
        for _ in 0..1100 {
            if q.try_get().is_err() {
                break;
            }
        }
        let _ = q.try_put(vec![1, 2, 3]);
        let _ = q.try_get();
    });
});
