//! DNS answers (compression pointers, CNAME chains, truncation).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::dns::run(data));
