#![no_main]
//! Fuzz target `integrity`: see `cryptobucket::fuzzing::integrity`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::integrity(data);
});
