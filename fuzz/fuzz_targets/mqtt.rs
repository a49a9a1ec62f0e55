//! The mqtt dissector, both sides of a conversation, gaps and ends anywhere.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::mqtt::run(data));
