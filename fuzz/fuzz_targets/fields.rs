//! The field extractors: forms, JSON (strict and lenient), multipart, XML,
//! documents inside values, HTML user tables, text lines, heads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::fields::run(data));
