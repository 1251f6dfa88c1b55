//! Arbitrary bytes as a value found in a Redis key (another program may
//! have written it): decoding returns a value or an error, never panics,
//! and whatever it accepts encodes and decodes back to the same encoding,
//! with a dict field that does not depend on the key's form. Seeded with
//! each encoding's tag.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproc::manager::redis::codec::fuzz(data);
});
