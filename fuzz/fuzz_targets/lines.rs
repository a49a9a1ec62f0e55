//! The fallback dissector (text lines), and recognition by content: the same
//! conversation through `Dissection`, which picks whichever dissector its
//! first bytes name.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::lines::run(data));
