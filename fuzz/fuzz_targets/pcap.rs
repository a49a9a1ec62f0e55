//! pcap and pcapng reading: damaged files are errors with an offset, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::pcap::run(data));
