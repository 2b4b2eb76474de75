#![no_main]
//! Fuzz target `model_formats`: see `cryptobucket::fuzzing::model_formats`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::model_formats(data);
});
