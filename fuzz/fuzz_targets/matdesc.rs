#![no_main]
//! Fuzz target `matdesc`: see `cryptobucket::fuzzing::matdesc`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::matdesc(data);
});
