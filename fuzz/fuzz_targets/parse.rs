//! The shared L2–L4 parser (the XDP program's, on a slice), and the sampling
//! policy's view of what it parsed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::parse::run(data));
