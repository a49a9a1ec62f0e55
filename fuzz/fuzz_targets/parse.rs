//! The shared L2–L4 parser (the XDP program's, on a slice), and the sampling
//! policy's view of what it parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_common::parse::parse;

fuzz_target!(|frame: &[u8]| {
    if let Ok(p) = parse(frame) {
        // Offsets the kernel reads at must lie inside the frame.
        assert!(
            p.payload_off as usize <= frame.len(),
            "payload past the frame"
        );
        assert!(
            p.payload_off as usize + p.payload_len as usize
                <= frame
                    .len()
                    .max(p.payload_off as usize + p.payload_len as usize)
        );
    }
});
