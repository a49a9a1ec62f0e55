//! WebSocket frames (masking, fragments, permessage-deflate with and without
//! context takeover).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakwatch_fuzz::targets::websocket::run(data));
