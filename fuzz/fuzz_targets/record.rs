//! Ring record decoding: a damaged record is an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::record::run(data));
