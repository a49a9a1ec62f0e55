//! TLS ClientHello (SNI, versions) and ServerHello.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::tls::run(data));
