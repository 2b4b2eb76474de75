#![no_main]
//! Fuzz target `keyring`: see `cryptobucket::fuzzing::keyring`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::keyring(data);
});
