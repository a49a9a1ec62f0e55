//! Canary matching on hostile bytes: the prefilter check and the field scan
//! (escapes undone, base64 runs decoded around a match) never panic, and a
//! registered value placed in the bytes between separators is always found.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::canary::run(data));
