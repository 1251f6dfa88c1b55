//! Attacks on the shared-memory queues, third round: cases the earlier
//! rounds (messaging, shared_attack, queue_batch, queue_bytes, sweep_kill,
//! async_attack) left out.

mod common;

use std::cell::RefCell;
use std::time::Duration;

use common::{join, static_child, watchdog};
use multiproc::queue::Bytes;
use multiproc::Queue;

const LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Queues used from a thread-local destructor.

/// Queues that a thread-local value uses when its thread ends.
struct Queues {
    items: Queue<Vec<u8>>,
    /// A ring of 100 bytes: a 60-byte frame after another one straddles
    /// its end.
    frames: Queue<Bytes>,
}

impl Queues {
    /// Puts and gets of small and large items, a batch each way, and byte
    /// frames whose second one straddles the ring's end: every buffer the
    /// queues keep per thread is used.
    fn exercise(&self) {
        let large = vec![2u8; 5000];
        self.items.put(vec![1u8; 10]).unwrap();
        self.items.put(large.clone()).unwrap();
        assert_eq!(self.items.get().unwrap(), vec![1u8; 10]);
        assert_eq!(self.items.get().unwrap(), large);
        self.items
            .put_many([vec![3u8; 100], vec![4u8; 100]])
            .unwrap();
        assert_eq!(
            self.items.get_many(10).unwrap(),
            [vec![3u8; 100], vec![4u8; 100]]
        );
        for fill in [5u8, 6] {
            self.frames.put_bytes(&[fill; 60]).unwrap();
            assert_eq!(self.frames.get_bytes().unwrap(), [fill; 60]);
        }
    }
}

/// Uses the queues again when dropped, then says so on `done`.
struct UsesQueuesOnDrop(Queues, Queue<u32>);

impl Drop for UsesQueuesOnDrop {
    fn drop(&mut self) {
        self.0.exercise();
        self.1.put(1).unwrap();
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<UsesQueuesOnDrop>> = const { RefCell::new(None) };
}

/// A thread-local value whose destructor puts and gets (a handle that
/// flushes its records when its thread ends) works whatever the order in
/// which the thread's values are destroyed: the queues' own per-thread
/// buffers may be gone by then, and the calls do without them instead of
/// panicking (a panic in a thread-local destructor aborts the process).
#[test]
fn queues_work_in_a_thread_local_destructor() {
    watchdog("queues in a thread-local destructor", LIMIT, || {
        let queues = Queues {
            items: Queue::new().unwrap(),
            frames: Queue::with_capacity(0, 100).unwrap(),
        };
        let done = Queue::<u32>::new().unwrap();
        let (items, frames, theirs) = (queues.items.clone(), queues.frames.clone(), done.clone());
        let p = static_child(move || {
            std::thread::spawn(move || {
                // Registered first, so destroyed after the buffers the
                // queues register below (in reverse order).
                ON_EXIT.with(|d| {
                    *d.borrow_mut() = Some(UsesQueuesOnDrop(Queues { items, frames }, theirs))
                });
                ON_EXIT.with(|d| d.borrow().as_ref().unwrap().0.exercise());
            })
            .join()
            .unwrap();
        });
        assert_eq!(join(&p, LIMIT), 0);
        assert_eq!(done.try_get().unwrap(), 1);
        assert!(queues.items.is_empty() && queues.frames.is_empty());
    });
}
