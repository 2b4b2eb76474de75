#![no_main]
//! Fuzz target `envelope`: see `cryptobucket::fuzzing::envelope`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::envelope(data);
});
