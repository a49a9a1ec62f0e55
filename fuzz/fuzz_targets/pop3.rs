//! The pop3 dissector, both sides of a conversation, gaps and ends anywhere.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::pop3::run(data));
