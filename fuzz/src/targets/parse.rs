//! The shared L2–L4 parser (the XDP program's, on a slice), and the XDP
//! program's fast path for plain IPv4 and IPv6 TCP and UDP, which must agree
//! with it.

use sensor_common::{
    parse::{Parsed, parse},
    quick::{parse_plain_into, plain},
    tunnel::VXLAN_PORT,
};

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
    // The fast path answers only for frames the parser reads the same way:
    // otherwise the kernel would count a packet the full path treats otherwise.
    if let Some(q) = plain(frame, VXLAN_PORT) {
        let p = parsed.expect("the fast path took a frame the parser refuses");
        assert_eq!(
            (p.family, p.proto, p.tunnel, p.first_fragment),
            (q.family, q.proto, 0, false)
        );
        assert_eq!((&p.src[..4], &p.dst[..4]), (&q.src[..], &q.dst[..]));
        assert_eq!((p.sport, p.dport), (q.sport, q.dport));
        // The watched path's fill from the same bytes: the parser's, field for field.
        let mut filled = Parsed {
            family: 9,
            proto: 9,
            src: [0xee; 16],
            dst: [0xee; 16],
            sport: 1,
            dport: 1,
            l3_off: 1,
            l4_off: 1,
            payload_off: 1,
            l3_len: 1,
            payload_len: 1,
            tcp_flags: 1,
            tcp_seq: 1,
            tcp_ack: 1,
            vlan: true,
            first_fragment: true,
            tunnel: 1,
        };
        assert!(parse_plain_into(frame, VXLAN_PORT, &mut filled));
        assert_eq!(filled, p);
    }
}
