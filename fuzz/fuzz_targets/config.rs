//! The admin's files: the config file and its rules, the canaries file and
//! the advisories file. Any text is a file or one clear error naming it; a
//! canaries error never repeats the text (it may hold a value).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::config::run(data));
