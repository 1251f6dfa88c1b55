//! Opening a segment whose content is arbitrary bytes, as every kind of
//! object: each open either succeeds or returns an error; it never panics,
//! crashes or reads outside the mapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiproc::segment::{SegmentInfo, Segment, PREFIX};
use multiproc::{Array, Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Queue, RLock};
use multiproc::{RawArray, RawValue, Semaphore, Value};

fuzz_target!(|data: &[u8]| {
    let _ = SegmentInfo::parse("fuzz", data);

    // The real path: the bytes as a file in /dev/shm, opened by name.
    let name = format!("fuzz-{}", std::process::id());
    if std::fs::write(format!("/dev/shm/{PREFIX}{name}"), data).is_err() {
        return;
    }
    let _ = Value::<u64>::open(&name);
    let _ = Array::<u32>::open(&name);
    let _ = Lock::open(&name);
    let _ = RLock::open(&name);
    let _ = Segment::open(&name);
    let _ = Condition::open(&name);
    // Opening takes no lock; what needs none is read too.
    if let Ok(e) = Event::open(&name) {
        let _ = e.is_set();
    }
    if let Ok(s) = Semaphore::open(&name) {
        let _ = s.value();
    }
    if let Ok(s) = BoundedSemaphore::open(&name) {
        let _ = s.value();
    }
    if let Ok(b) = Barrier::open(&name) {
        let _ = b.parties();
    }
    if let Ok(q) = Queue::<u64>::open(&name) {
        let _ = (q.len(), q.is_full(), q.max_item_size());
    }
    if let Ok(q) = JoinableQueue::<String>::open(&name) {
        let _ = (q.len(), q.is_empty());
    }
    // Raw cells take no lock, so an opened one can be read in full.
    if let Ok(v) = RawValue::<u64>::open(&name) {
        let _ = v.get();
    }
    if let Ok(a) = RawArray::<u16>::open(&name) {
        let _ = a.read(..);
    }
    let _ = Segment::unlink(&name);
});
