#![no_main]
//! Fuzz target `list_parts`: see `cryptobucket::fuzzing::list_parts_paging`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cryptobucket::fuzzing::list_parts_paging(data);
});
