//! The manager server's reading of a fast-path area whose control words
//! and request bytes are arbitrary (what a hostile client could leave in
//! the shared memory it writes): the server takes a request (copied out,
//! its length bounded by the slot) or refuses it, serves what it took with
//! its object table, answers in the area or marks the answer for the
//! socket, and never panics or reads outside the area.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproc::manager::fast::fuzz_area(data);
});
