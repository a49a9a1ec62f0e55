//! Tunnel headers the shared parser looks through (one level): GRE (RFC 2784
//! and 2890: checksum, key and sequence fields) carrying IPv4, IPv6 or
//! Ethernet (transparent Ethernet bridging), ERSPAN type I, II and III inside
//! GRE, and VXLAN on its UDP port. A sensor fed a mirror of the traffic (a
//! switch's ERSPAN session, a router's GRE copy, a virtual network's VXLAN)
//! sees the inner flows as if it sat on the wire.

use crate::{
    counters::Counter,
    parse::{ETH_P_IPV4, ETH_P_IPV6, PacketBytes},
};

/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;
/// VXLAN's IANA port, the default of `Config::vxlan_port`.
pub const VXLAN_PORT: u16 = 4789;

/// GRE protocol types.
const ETH_P_TEB: u16 = 0x6558;
const ETH_P_ERSPAN: u16 = 0x88be;
const ETH_P_ERSPAN3: u16 = 0x22eb;

/// GRE flags: checksum, routing (RFC 1701, not followed), key, sequence; the
/// low three bits are the version (0).
const GRE_C: u16 = 0x8000;
const GRE_R: u16 = 0x4000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;

/// ERSPAN type II's header; type III's, and its optional platform sub-header.
const ERSPAN2_HLEN: usize = 8;
const ERSPAN3_HLEN: usize = 12;
const ERSPAN3_PLATFORM_HLEN: usize = 8;
const VXLAN_HLEN: usize = 8;
/// VXLAN flags: the VNI is valid.
const VXLAN_I: u8 = 0x08;

/// Which tunnel a packet came through (`Parsed::tunnel`; 0: none).
pub mod kind {
    pub const GRE: u8 = 1;
    pub const ERSPAN: u8 = 2;
    pub const VXLAN: u8 = 3;
}

/// Where the inner packet starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// An Ethernet frame at this offset.
    Ethernet(usize),
    /// An IP packet (this ethertype) at this offset.
    Ip(u16, usize),
}

/// An inner packet: where it starts and the tunnel's [`kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    pub start: Start,
    pub kind: u8,
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// The GRE header at `off` (the datagram ends at `end`). A GRE payload that is
/// not IP or Ethernet is `not_tcp_udp`, as any other protocol; a header that
/// does not fit or a version or routing field it cannot follow is `bad_tunnel`.
#[inline(always)]
pub fn gre<P: PacketBytes + ?Sized>(p: &P, off: usize, end: usize) -> Result<Inner, Counter> {
    let h: [u8; 4] = p.header(off).ok_or(Counter::BadTunnel)?;
    let flags = be16([h[0], h[1]]);
    if flags & (GRE_VERSION | GRE_R) != 0 {
        return Err(Counter::BadTunnel);
    }
    let mut o = off + 4;
    if flags & GRE_C != 0 {
        o += 4;
    }
    if flags & GRE_K != 0 {
        o += 4;
    }
    let seq = flags & GRE_S != 0;
    if seq {
        o += 4;
    }
    let (start, kind) = match be16([h[2], h[3]]) {
        ETH_P_IPV4 => (Start::Ip(ETH_P_IPV4, o), kind::GRE),
        ETH_P_IPV6 => (Start::Ip(ETH_P_IPV6, o), kind::GRE),
        ETH_P_TEB => (Start::Ethernet(o), kind::GRE),
        // Type I has no header of its own (and no sequence number); type II
        // has an 8-byte one.
        ETH_P_ERSPAN if seq => (Start::Ethernet(o + ERSPAN2_HLEN), kind::ERSPAN),
        ETH_P_ERSPAN => (Start::Ethernet(o), kind::ERSPAN),
        ETH_P_ERSPAN3 => {
            let e: [u8; ERSPAN3_HLEN] = p.header(o).ok_or(Counter::BadTunnel)?;
            let platform = if e[11] & 1 != 0 {
                ERSPAN3_PLATFORM_HLEN
            } else {
                0
            };
            (Start::Ethernet(o + ERSPAN3_HLEN + platform), kind::ERSPAN)
        }
        _ => return Err(Counter::NotTcpUdp),
    };
    let at = match start {
        Start::Ethernet(at) | Start::Ip(_, at) => at,
    };
    if at > end {
        return Err(Counter::BadTunnel);
    }
    Ok(Inner { start, kind })
}

/// The VXLAN header at `off` (after the UDP header). `None`: the I flag is not
/// set, so this is not VXLAN but a datagram to that port.
#[inline(always)]
pub fn vxlan<P: PacketBytes + ?Sized>(
    p: &P,
    off: usize,
    end: usize,
) -> Result<Option<Inner>, Counter> {
    let h: [u8; VXLAN_HLEN] = p.header(off).ok_or(Counter::BadTunnel)?;
    if h[0] & VXLAN_I == 0 {
        return Ok(None);
    }
    if off + VXLAN_HLEN > end {
        return Err(Counter::BadTunnel);
    }
    Ok(Some(Inner {
        start: Start::Ethernet(off + VXLAN_HLEN),
        kind: kind::VXLAN,
    }))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{
        flow::{FAMILY_V4, IPPROTO_TCP, IPPROTO_UDP},
        parse::{ETH_HLEN, parse, parse_with},
    };

    /// An inner Ethernet/IPv4/TCP frame from 192.168.69.10:49152 to
    /// 192.168.69.2:80 carrying `payload`.
    fn inner_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = std::vec![0u8; ETH_HLEN];
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        f.extend_from_slice(&inner_ip(payload));
        f
    }

    fn inner_ip(payload: &[u8]) -> Vec<u8> {
        let total = (40 + payload.len()) as u16;
        let mut ip = std::vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_TCP, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[192, 168, 69, 10, 192, 168, 69, 2]);
        ip.extend_from_slice(&49152u16.to_be_bytes());
        ip.extend_from_slice(&80u16.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        ip.extend_from_slice(payload);
        ip
    }

    /// Ethernet and an outer IPv4 header (10.200.0.3 → 10.200.0.224) of
    /// protocol `proto` around `l4`; `frag`: the flags/offset field.
    fn outer_v4(proto: u8, l4: &[u8], frag: u16) -> Vec<u8> {
        let mut f = std::vec![0u8; ETH_HLEN];
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        let total = (20 + l4.len()) as u16;
        let mut ip = std::vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&[10, 200, 0, 3, 10, 200, 0, 224]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }

    fn outer_v6(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = std::vec![0u8; ETH_HLEN];
        f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        let mut ip = std::vec![0x60, 0, 0, 0, 0, 0, proto, 64];
        ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }

    fn gre_hdr(flags: u16, proto: u16, fields: &[u8], body: &[u8]) -> Vec<u8> {
        let mut g = Vec::new();
        g.extend_from_slice(&flags.to_be_bytes());
        g.extend_from_slice(&proto.to_be_bytes());
        g.extend_from_slice(fields);
        g.extend_from_slice(body);
        g
    }

    fn udp(dport: u16, body: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&50000u16.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(body);
        u
    }

    /// The inner flow, as every encapsulation must show it.
    fn assert_inner(f: &[u8], kind: u8) {
        let p = parse(f).unwrap();
        assert_eq!(p.tunnel, kind);
        assert_eq!((p.family, p.proto), (FAMILY_V4, IPPROTO_TCP));
        assert_eq!(&p.src[..4], &[192, 168, 69, 10]);
        assert_eq!((p.sport, p.dport, p.tcp_seq), (49152, 80, 9));
        assert_eq!(p.payload_len, 4);
        assert_eq!(&f[p.payload_off as usize..], b"GET ");
    }

    #[test]
    fn gre_with_every_optional_field_and_each_payload() {
        let eth = inner_frame(b"GET ");
        let ip = inner_ip(b"GET ");
        for (flags, fields) in [
            (0u16, &[][..]),
            (GRE_C, &[0xab, 0xcd, 0, 0][..]),
            (GRE_K, &[0, 0, 0, 7][..]),
            (GRE_C | GRE_K | GRE_S, &[0; 12][..]),
        ] {
            let teb = gre_hdr(flags, ETH_P_TEB, fields, &eth);
            assert_inner(&outer_v4(IPPROTO_GRE, &teb, 0), kind::GRE);
            let raw = gre_hdr(flags, ETH_P_IPV4, fields, &ip);
            assert_inner(&outer_v4(IPPROTO_GRE, &raw, 0), kind::GRE);
            assert_inner(&outer_v6(IPPROTO_GRE, &raw), kind::GRE);
        }
    }

    #[test]
    fn erspan_types_one_two_and_three() {
        let eth = inner_frame(b"GET ");
        // Type I: no sequence number, no header.
        let t1 = gre_hdr(0, ETH_P_ERSPAN, &[], &eth);
        assert_inner(&outer_v4(IPPROTO_GRE, &t1, 0), kind::ERSPAN);
        // Type II: sequence number, then an 8-byte header.
        let mut fields = std::vec![0, 0, 0, 1];
        fields.extend_from_slice(&[0x10, 0x01, 0, 0, 0, 0, 0, 0]);
        let t2 = gre_hdr(GRE_S, ETH_P_ERSPAN, &fields, &eth);
        assert_inner(&outer_v4(IPPROTO_GRE, &t2, 0), kind::ERSPAN);
        // Type III: a 12-byte header, with and without the platform sub-header.
        let mut h3 = std::vec![0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let t3 = gre_hdr(
            GRE_S,
            ETH_P_ERSPAN3,
            &[&[0, 0, 0, 1][..], &h3].concat(),
            &eth,
        );
        assert_inner(&outer_v4(IPPROTO_GRE, &t3, 0), kind::ERSPAN);
        h3[11] = 1;
        h3.extend_from_slice(&[0; 8]);
        let t3p = gre_hdr(
            GRE_S,
            ETH_P_ERSPAN3,
            &[&[0, 0, 0, 1][..], &h3].concat(),
            &eth,
        );
        assert_inner(&outer_v4(IPPROTO_GRE, &t3p, 0), kind::ERSPAN);
    }

    #[test]
    fn vxlan_on_its_port_and_a_configured_one() {
        let mut body = std::vec![VXLAN_I, 0, 0, 0, 0, 0, 1, 0];
        body.extend_from_slice(&inner_frame(b"GET "));
        assert_inner(
            &outer_v4(IPPROTO_UDP, &udp(VXLAN_PORT, &body), 0),
            kind::VXLAN,
        );
        assert_inner(&outer_v6(IPPROTO_UDP, &udp(VXLAN_PORT, &body)), kind::VXLAN);
        let other = outer_v4(IPPROTO_UDP, &udp(8472, &body), 0);
        assert_eq!(parse(&other[..]).unwrap().tunnel, 0, "plain UDP elsewhere");
        assert_eq!(parse_with(&other[..], 8472).unwrap().tunnel, kind::VXLAN);
        let off = outer_v4(IPPROTO_UDP, &udp(VXLAN_PORT, &body), 0);
        let p = parse_with(&off[..], 0).unwrap();
        assert_eq!((p.tunnel, p.proto, p.dport), (0, IPPROTO_UDP, VXLAN_PORT));
        // Without the I flag it is a datagram to that port, not VXLAN.
        body[0] = 0;
        let p = parse(&outer_v4(IPPROTO_UDP, &udp(VXLAN_PORT, &body), 0)[..]).unwrap();
        assert_eq!((p.tunnel, p.proto), (0, IPPROTO_UDP));
    }

    #[test]
    fn one_level_fragments_and_bad_headers_are_counted() {
        let eth = inner_frame(b"GET ");
        let once = outer_v4(IPPROTO_GRE, &gre_hdr(0, ETH_P_TEB, &[], &eth), 0);
        let twice = outer_v4(IPPROTO_GRE, &gre_hdr(0, ETH_P_TEB, &[], &once), 0);
        assert_eq!(parse(&twice[..]), Err(Counter::TunnelTooDeep));
        // The first fragment of an outer datagram whose inner packet goes on.
        let mut cut = outer_v4(IPPROTO_GRE, &gre_hdr(0, ETH_P_TEB, &[], &eth), 0x2000);
        cut.truncate(cut.len() - 10);
        let total = (cut.len() - ETH_HLEN) as u16;
        cut[16..18].copy_from_slice(&total.to_be_bytes());
        assert_eq!(parse(&cut[..]), Err(Counter::TunnelFragment));
        // GRE version 1 (PPTP) and routing are not followed; other payloads
        // are not TCP/UDP; a header cut short is bad.
        let v1 = outer_v4(IPPROTO_GRE, &gre_hdr(1, ETH_P_TEB, &[], &eth), 0);
        assert_eq!(parse(&v1[..]), Err(Counter::BadTunnel));
        let ppp = outer_v4(IPPROTO_GRE, &gre_hdr(0, 0x880b, &[], &eth), 0);
        assert_eq!(parse(&ppp[..]), Err(Counter::NotTcpUdp));
        let short = outer_v4(IPPROTO_GRE, &[0, 0], 0);
        assert_eq!(parse(&short[..]), Err(Counter::BadTunnel));
        let keyless = outer_v4(IPPROTO_GRE, &gre_hdr(GRE_K, ETH_P_TEB, &[], &[]), 0);
        assert_eq!(parse(&keyless[..]), Err(Counter::BadTunnel));
    }
}
