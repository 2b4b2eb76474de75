#![no_main]
//! Fuzz target `checkpoint`: see `cryptobucket::fuzzing::checkpoint`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::checkpoint(data);
});
