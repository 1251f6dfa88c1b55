//! Opening a segment whose content is arbitrary bytes: every typed open
//! either succeeds or returns an error; it never panics, crashes or reads
//! outside the mapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multiproc::segment::{SegmentInfo, Segment, PREFIX};
use multiproc::{Array, Lock, RawArray, RawValue, Value};

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
    let _ = Segment::open(&name);
    // Raw cells take no lock, so an opened one can be read in full.
    if let Ok(v) = RawValue::<u64>::open(&name) {
        let _ = v.get();
    }
    if let Ok(a) = RawArray::<u16>::open(&name) {
        let _ = a.read(..);
    }
    let _ = Segment::unlink(&name);
});
