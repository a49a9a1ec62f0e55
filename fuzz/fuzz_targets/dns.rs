//! DNS answers (compression pointers, CNAME chains, truncation).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|m: &[u8]| {
    if let Ok(r) = sensor_user::targets::dns::parse(m) {
        let _ = r.resolved();
    }
});
