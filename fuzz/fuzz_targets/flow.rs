//! Whole TCP flows through the matcher's stream table: a handshake, then a
//! request cut into segments fed in any order, duplicated, overlapping, or
//! retransmitted with other bytes. Invariants: no panic, held bytes within the
//! flow buffer, and — when the bytes agree and the flow fits — the same
//! findings whatever the order.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::flow::run(data));
