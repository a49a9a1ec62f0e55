//! TCP reassembly fed arbitrary segment sequences: out of order, overlapping,
//! jumps, wrapping sequence numbers. Held bytes stay within the bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::reassembly::run(data));
