//! The queue's frame decoder over a ring whose offsets and bytes are
//! arbitrary (what a broken or hostile process could leave in shared
//! memory): every get returns an item or an error, never panics, never
//! reads outside the ring, never loops; and the queue still accepts puts.
//! The same for a byte queue's frames, written and read in place
//! (`put_with`, `get_with`), and copied (`put_bytes`, `get_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiproc::queue::Bytes;
use multiproc::{Error, Queue};

thread_local! {
    static QUEUE: Queue<Vec<u8>> = Queue::with_capacity(0, 4096).expect("a queue");
    // An odd size, so that frames straddle the ring's end.
    static BYTES: Queue<Bytes> = Queue::with_capacity(0, 4093).expect("a byte queue");
}

/// A get's outcome: a frame or an error, and `Corrupt` only as an error.
fn fine<R>(r: &multiproc::Result<R>) -> bool {
    match r {
        Ok(_) => true,
        Err(Error::Corrupt { .. } | Error::Empty | Error::Closed) => false,
        Err(e) => panic!("unexpected error from a scribbled ring: {e}"),
    }
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
    BYTES.with(|q| {
        q.fuzz_scribble(data);
        let _ = (q.len(), q.is_empty(), q.is_full());
        let max = q.max_item_size();
        for i in 0..1100 {
            // Every byte of a frame handed out is inside the ring: reading
            // them all is what a reader does.
            let got = if i % 2 == 0 {
                q.try_get_with(|b| {
                    assert!(b.len() <= max);
                    b.iter().fold(0u8, |a, &x| a ^ x)
                })
            } else {
                q.try_get_bytes().map(|v| v.len() as u8)
            };
            if !fine(&got) {
                break;
            }
        }
        let len = data.first().map_or(0, |&n| n as usize * 17);
        if q.try_put_with(len, |buf| buf.fill(0x5a)).is_ok() {
            let _ = q.try_get_with(|b| b.len());
        }
        let _ = q.try_put_bytes(data);
        let _ = q.try_get_bytes();
    });
});
