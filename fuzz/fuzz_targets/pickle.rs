//! Arbitrary bytes as a pickle a client sent: decoding returns a value or
//! an error, never panics, allocates no more than the input and the
//! request's memory budget allow, and whatever it accepts encodes and
//! decodes back to the same pickle. Seeded with the frames CPython's
//! clients and servers send (captured in PYTHON-WIRE.md) and pickles of
//! many values with protocols 2 to 5.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproc::manager::pickle::fuzz(data);
});
