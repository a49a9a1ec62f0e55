//! The shared L2–L4 parser (the XDP program's, on a slice), and the XDP
//! program's fast path for plain IPv4 and IPv6 TCP and UDP, which must agree
//! with it.

use sensor_common::{parse::parse, quick::check_agreement, tunnel::VXLAN_PORT};

/// Runs the target on one input as libFuzzer hands it over.
pub fn run(data: &[u8]) {
    let frame = data;
    let parsed = parse(frame);
    if let Ok(p) = parsed {
        // Offsets the kernel reads at must lie inside the frame.
        assert!(
            p.payload_off as usize + p.payload_len as usize <= frame.len(),
            "payload past the frame"
        );
    }
    // The fast path answers only for frames the parser reads the same way
    // (otherwise the kernel would count a packet the full path treats
    // otherwise), and its fill of `Parsed` is the parser's, field for field.
    check_agreement(frame, VXLAN_PORT);
}
