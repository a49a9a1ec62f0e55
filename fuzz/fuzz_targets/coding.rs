//! Content codings (gzip, deflate, br, stacked): bounded output whatever the
//! input, bombs included.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::coding::run(data));
