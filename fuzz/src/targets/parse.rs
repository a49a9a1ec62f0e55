//! The shared L2–L4 parser (the XDP program's, on a slice), and the sampling
//! policy's view of what it parsed.

use sensor_common::parse::parse;

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let frame = data;

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
}
