#![no_main]
//! Fuzz target `ranges`: see `cryptobucket::fuzzing::ranges`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::ranges(data);
});
