//! The ftp dissector, both sides of a conversation, gaps and ends anywhere.
#![no_main]

use leakwatch_fuzz::{Step, converse, dissector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|steps: Vec<Step>| {
    converse(dissector("ftp").as_mut(), &steps);
});
