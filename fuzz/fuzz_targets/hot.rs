//! The XDP program's per-CPU `HOT` slots against the full path alone: the
//! same outcomes, decisions and flow counts for any packets of two flows.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::hot::run(data));
