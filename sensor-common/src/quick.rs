//! The common case, read first: an untagged Ethernet frame carrying an
//! unfragmented IPv4 datagram without IP options, or an IPv6 packet without
//! extension headers, with TCP or UDP inside. Most of a gateway's packets look
//! like this and most are not watched; for them the XDP program reads the
//! addresses and ports straight from the frame, tests the watch bitmaps and
//! is done, before it touches its per-CPU scratch or writes a
//! [`Parsed`] (docs/performance.md).
//!
//! [`plain`] answers `Some` only for frames [`parse_with`](crate::parse::parse_with)
//! accepts with the same addresses, protocol and ports, no tunnel and no
//! fragment (checked by the tests below and the `parse` fuzz target); anything
//! else, malformed frames included, goes the full parser's way and keeps its
//! outcome. [`plain_tagged`] reads the same past one VLAN tag,
//! [`plain_two_tags`] past two, [`plain_pppoe`] inside a PPPoE session (a DSL
//! or fibre access link) behind at most one tag, for the unwatched test and
//! the `HOT` slots.

use crate::{
    config::{Config, config_flags},
    flow::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP},
    parse::{
        ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, ETH_P_PPPOE_SESSION, PPP_IPV4, PPP_IPV6, PPPOE_HLEN,
        PacketBytes, Parsed, VLAN_HLEN, is_vlan_tpid,
    },
    policy::DNS_PORT,
};

/// What the fast path needs of a plain packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plain {
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// The addresses' first four bytes: all of an IPv4 address; all the
    /// watch bitmap reads of an IPv6 one (`watch::bucket_ipv6`).
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    /// The IP datagram's length (header and payload).
    pub l3_len: u32,
    /// The transport header's length.
    pub l4_len: u16,
    /// TCP's flags, sequence and acknowledgment numbers (0 for UDP).
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
}

/// Ethernet, an IPv4 header of 20 bytes and a TCP header's fixed part (a
/// UDP frame shorter than that goes the full way).
const PLAIN_HLEN: usize = ETH_HLEN + 20 + 20;

/// Ethernet, the IPv6 header and a TCP header's fixed part.
const PLAIN6_HLEN: usize = ETH_HLEN + 40 + 20;

/// A plain frame's addresses, protocol and ports (see the module), or `None`
/// for anything the full parser must look at, UDP to `vxlan_port` (0: none)
/// included: the parser looks inside it.
#[inline(always)]
pub fn plain<P: PacketBytes + ?Sized>(p: &P, vxlan_port: u16) -> Option<Plain> {
    let q = match plain_ipv4(p) {
        Some(q) => q,
        None => plain_ipv6(p)?,
    };
    if q.proto == IPPROTO_UDP && vxlan_port != 0 && q.dport == vxlan_port {
        return None;
    }
    Some(q)
}

/// A frame read past its one VLAN tag: the same bytes from [`VLAN_HLEN`]
/// on, so the tag's own ethertype (what it carries) sits where an untagged
/// frame's does and [`plain`] and the rereads read the rest unchanged.
/// Bytes 0–11 are then the MAC addresses' tail, which they do not read.
pub struct PastTag<'a, P: ?Sized>(pub &'a P);

impl<P: PacketBytes + ?Sized> PacketBytes for PastTag<'_, P> {
    #[inline(always)]
    fn has_len(&self, len: usize) -> bool {
        self.0.has_len(len + VLAN_HLEN)
    }

    #[inline(always)]
    fn has_linear(&self, len: usize) -> bool {
        self.0.has_linear(len + VLAN_HLEN)
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.0.header(off + VLAN_HLEN)
    }
}

/// A PPPoE session frame read as the Ethernet frame it carries: the bytes
/// from [`PPPOE_HLEN`] on, so the PPP protocol sits where an untagged
/// frame's ethertype does, and is given as the ethertype it stands for
/// (IPv4, IPv6; 0 for any other protocol, which [`plain`] then refuses, as
/// the parser does). [`plain`] and the rereads read the rest unchanged.
pub struct PastPppoe<'a, P: ?Sized>(pub &'a P);

impl<P: PacketBytes + ?Sized> PacketBytes for PastPppoe<'_, P> {
    #[inline(always)]
    fn has_len(&self, len: usize) -> bool {
        self.0.has_len(len + PPPOE_HLEN)
    }

    #[inline(always)]
    fn has_linear(&self, len: usize) -> bool {
        self.0.has_linear(len + PPPOE_HLEN)
    }

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let mut h: [u8; N] = self.0.header(off + PPPOE_HLEN)?;
        // The readers' offsets are constants: this folds away but where a
        // read covers the protocol.
        if off <= 12 && off + N >= 14 {
            let at = 12 - off;
            let ethertype = match u16::from_be_bytes([h[at], h[at + 1]]) {
                PPP_IPV4 => ETH_P_IPV4,
                PPP_IPV6 => ETH_P_IPV6,
                _ => 0,
            };
            [h[at], h[at + 1]] = ethertype.to_be_bytes();
        }
        Some(h)
    }
}

/// [`plain`] for a frame with one 802.1Q or 802.1ad tag (a trunk, or a
/// mirror port's feed): for the unwatched test and the `HOT` slots
/// (`hot::cacheable` takes one or two tags), read through [`PastTag`]; the plain
/// fill knows untagged offsets only, so anything else of a tagged frame goes
/// the full way. `None` for an untagged frame, two tags and anything
/// `plain` refuses.
#[inline(always)]
pub fn plain_tagged<P: PacketBytes + ?Sized>(p: &P, vxlan_port: u16) -> Option<Plain> {
    let tpid: [u8; 2] = p.header(12)?;
    if !is_vlan_tpid(u16::from_be_bytes(tpid)) {
        return None;
    }
    plain(&PastTag(p), vxlan_port)
}

/// [`plain`] for a frame with two VLAN tags (QinQ: a provider's trunk or a
/// mirror of one, where every frame has them), as [`plain_tagged`] for one.
/// `None` for fewer tags, more (the parser counts those `vlan_too_deep`)
/// and anything `plain` refuses.
#[inline(always)]
pub fn plain_two_tags<P: PacketBytes + ?Sized>(p: &P, vxlan_port: u16) -> Option<Plain> {
    // The outer tag's TPID and TCI, then the inner tag's TPID.
    let h: [u8; 6] = p.header(12)?;
    if !is_vlan_tpid(u16::from_be_bytes([h[0], h[1]]))
        || !is_vlan_tpid(u16::from_be_bytes([h[4], h[5]]))
    {
        return None;
    }
    plain(&PastTag(&PastTag(p)), vxlan_port)
}

/// [`plain`] for a PPPoE session frame (a DSL or fibre access link, where
/// every frame of the uplink is one), untagged or behind one VLAN tag (as
/// some providers deliver it), as [`plain_tagged`] for a tag. Returns the
/// bytes before the Ethernet header it reads as plain (8 or 12). `None` for
/// any other frame, a PPP protocol other than IPv4 or IPv6, and anything
/// `plain` refuses.
#[inline(always)]
pub fn plain_pppoe<P: PacketBytes + ?Sized>(p: &P, vxlan_port: u16) -> Option<(Plain, usize)> {
    // The ethertype, or a tag's TPID, TCI and the ethertype behind it.
    let h: [u8; 6] = p.header(12)?;
    // The first field read twice: named once, LLVM lays the program out so
    // the verifier walks 15,000 more instructions.
    if u16::from_be_bytes([h[0], h[1]]) == ETH_P_PPPOE_SESSION {
        return Some((plain(&PastPppoe(p), vxlan_port)?, PPPOE_HLEN));
    }
    if is_vlan_tpid(u16::from_be_bytes([h[0], h[1]]))
        && u16::from_be_bytes([h[4], h[5]]) == ETH_P_PPPOE_SESSION
    {
        let q = plain(&PastPppoe(&PastTag(p)), vxlan_port)?;
        return Some((q, VLAN_HLEN + PPPOE_HLEN));
    }
    None
}

/// What the fast path tries once [`plain`] and [`plain_tagged`] have
/// failed, in its order: [`plain_two_tags`], then [`plain_pppoe`]; with the
/// bytes before the Ethernet header it reads as plain (8 or 12).
#[inline(always)]
pub fn plain_two_tags_or_pppoe<P: PacketBytes + ?Sized>(
    p: &P,
    vxlan_port: u16,
) -> Option<(Plain, usize)> {
    match plain_two_tags(p, vxlan_port) {
        Some(q) => Some((q, 2 * VLAN_HLEN)),
        None => plain_pppoe(p, vxlan_port),
    }
}

/// The transport header's length the full parser requires: TCP's data offset
/// (`doff_byte`'s top nibble, at least 20 bytes), UDP's 8; 0 for anything else.
#[inline(always)]
fn l4_hlen(proto: u8, doff_byte: u8) -> usize {
    let doff = ((doff_byte >> 4) as usize) * 4;
    match proto {
        IPPROTO_TCP if doff >= 20 => doff,
        IPPROTO_UDP => 8,
        _ => 0,
    }
}

/// A plain IPv4 frame (see the module), or `None`.
#[inline(always)]
pub fn plain_ipv4<P: PacketBytes + ?Sized>(p: &P) -> Option<Plain> {
    let h: [u8; PLAIN_HLEN] = p.header(0)?;
    let ip = ETH_HLEN;
    let l4 = ip + 20;
    // The fixed fields in one test (few branches: fewer paths for the
    // verifier to walk into the full parser): IPv4 ethertype, version 4 and
    // IHL 5, no fragment offset and no MF bit.
    let fixed = (h[12] ^ 0x08) | h[13] | (h[ip] ^ 0x45) | (h[ip + 6] & 0x3f) | h[ip + 7];
    let total = u16::from_be_bytes([h[ip + 2], h[ip + 3]]) as usize;
    let proto = h[ip + 9];
    let l4_len = l4_hlen(proto, h[l4 + 12]);
    // The full parser's checks: the transport header within the datagram,
    // the datagram within the frame (its linear part: a multi-buffer frame
    // goes the full way).
    if fixed != 0 || l4_len == 0 || 20 + l4_len > total || !p.has_linear(ip + total) {
        return None;
    }
    let (tcp_flags, tcp_seq, tcp_ack) = tcp_fields(proto, &h, l4);
    Some(Plain {
        family: FAMILY_V4,
        proto,
        src: [h[ip + 12], h[ip + 13], h[ip + 14], h[ip + 15]],
        dst: [h[ip + 16], h[ip + 17], h[ip + 18], h[ip + 19]],
        sport: u16::from_be_bytes([h[l4], h[l4 + 1]]),
        dport: u16::from_be_bytes([h[l4 + 2], h[l4 + 3]]),
        l3_len: total as u32,
        l4_len: l4_len as u16,
        tcp_flags,
        tcp_seq,
        tcp_ack,
    })
}

/// The fields of a frame [`plain_ipv4`] took, read again without its
/// checks (they held for these bytes already): for the XDP program, which
/// reads a watched packet's header a second time rather than keep it in
/// registers across the bitmap lookups (docs/performance.md). `None` only
/// when the frame is shorter than the header (it cannot be, after
/// `plain_ipv4`; the verifier wants the test).
#[inline(always)]
pub fn reread_ipv4<P: PacketBytes + ?Sized>(p: &P) -> Option<Plain> {
    let h: [u8; PLAIN_HLEN] = p.header(0)?;
    let ip = ETH_HLEN;
    let l4 = ip + 20;
    let proto = h[ip + 9];
    Some(Plain {
        family: FAMILY_V4,
        proto,
        src: [h[ip + 12], h[ip + 13], h[ip + 14], h[ip + 15]],
        dst: [h[ip + 16], h[ip + 17], h[ip + 18], h[ip + 19]],
        sport: u16::from_be_bytes([h[l4], h[l4 + 1]]),
        dport: u16::from_be_bytes([h[l4 + 2], h[l4 + 3]]),
        l3_len: u32::from(u16::from_be_bytes([h[ip + 2], h[ip + 3]])),
        l4_len: l4_hlen(proto, h[l4 + 12]) as u16,
        tcp_flags: if proto == IPPROTO_TCP { h[l4 + 13] } else { 0 },
        tcp_seq: 0,
        tcp_ack: 0,
    })
}

/// [`reread_ipv4`] for a frame [`plain_ipv6`] took, with the whole source
/// and destination address besides.
#[inline(always)]
pub fn reread_ipv6<P: PacketBytes + ?Sized>(p: &P) -> Option<(Plain, [u8; 16], [u8; 16])> {
    let h: [u8; PLAIN6_HLEN] = p.header(0)?;
    let ip = ETH_HLEN;
    let l4 = ip + 40;
    let proto = h[ip + 6];
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    src.copy_from_slice(&h[ip + 8..ip + 24]);
    dst.copy_from_slice(&h[ip + 24..ip + 40]);
    let q = Plain {
        family: FAMILY_V6,
        proto,
        src: [src[0], src[1], src[2], src[3]],
        dst: [dst[0], dst[1], dst[2], dst[3]],
        sport: u16::from_be_bytes([h[l4], h[l4 + 1]]),
        dport: u16::from_be_bytes([h[l4 + 2], h[l4 + 3]]),
        l3_len: 40 + u32::from(u16::from_be_bytes([h[ip + 4], h[ip + 5]])),
        l4_len: l4_hlen(proto, h[l4 + 12]) as u16,
        tcp_flags: if proto == IPPROTO_TCP { h[l4 + 13] } else { 0 },
        tcp_seq: 0,
        tcp_ack: 0,
    };
    Some((q, src, dst))
}

/// A plain IPv6 frame: TCP or UDP straight after the IPv6 header (no
/// extension header, so no fragment), or `None`.
#[inline(always)]
pub fn plain_ipv6<P: PacketBytes + ?Sized>(p: &P) -> Option<Plain> {
    let h: [u8; PLAIN6_HLEN] = p.header(0)?;
    let ip = ETH_HLEN;
    let l4 = ip + 40;
    let [t0, t1] = ETH_P_IPV6.to_be_bytes();
    // As for IPv4, in one test: IPv6 ethertype, version 6.
    let fixed = (h[12] ^ t0) | (h[13] ^ t1) | ((h[ip] >> 4) ^ 6);
    let plen = u16::from_be_bytes([h[ip + 4], h[ip + 5]]) as usize;
    let proto = h[ip + 6];
    let l4_len = l4_hlen(proto, h[l4 + 12]);
    // The full parser's checks: the payload length within the frame (its
    // linear part), the transport header within the payload length (0, a
    // jumbogram's, included).
    if fixed != 0 || l4_len == 0 || l4_len > plen || !p.has_linear(l4 + plen) {
        return None;
    }
    let (tcp_flags, tcp_seq, tcp_ack) = tcp_fields(proto, &h, l4);
    Some(Plain {
        family: FAMILY_V6,
        proto,
        src: [h[ip + 8], h[ip + 9], h[ip + 10], h[ip + 11]],
        dst: [h[ip + 24], h[ip + 25], h[ip + 26], h[ip + 27]],
        sport: u16::from_be_bytes([h[l4], h[l4 + 1]]),
        dport: u16::from_be_bytes([h[l4 + 2], h[l4 + 3]]),
        l3_len: (40 + plen) as u32,
        l4_len: l4_len as u16,
        tcp_flags,
        tcp_seq,
        tcp_ack,
    })
}

/// TCP's flags, sequence and acknowledgment numbers from the header at
/// `l4` of `h`; zeros for UDP (as the parser leaves them).
#[inline(always)]
fn tcp_fields<const N: usize>(proto: u8, h: &[u8; N], l4: usize) -> (u8, u32, u32) {
    if proto != IPPROTO_TCP {
        return (0, 0, 0);
    }
    (
        h[l4 + 13],
        u32::from_be_bytes([h[l4 + 4], h[l4 + 5], h[l4 + 6], h[l4 + 7]]),
        u32::from_be_bytes([h[l4 + 8], h[l4 + 9], h[l4 + 10], h[l4 + 11]]),
    )
}

/// [`parse_into`](crate::parse::parse_into) for a plain frame, from the
/// bytes [`plain`] reads: `out` filled as the parser fills it, and true;
/// false (and `out` untouched) for any other frame, which the parser must read.
#[inline(always)]
pub fn parse_plain_into<P: PacketBytes + ?Sized>(p: &P, vxlan_port: u16, out: &mut Parsed) -> bool {
    let Some(q) = plain(p, vxlan_port) else {
        return false;
    };
    let l3 = ETH_HLEN;
    let l4 = if q.family == FAMILY_V4 {
        out.src = [0; 16];
        out.dst = [0; 16];
        out.src[..4].copy_from_slice(&q.src);
        out.dst[..4].copy_from_slice(&q.dst);
        l3 + 20
    } else {
        // Within the bytes plain() read.
        let (Some(src), Some(dst)) = (p.header(l3 + 8), p.header(l3 + 24)) else {
            return false;
        };
        out.src = src;
        out.dst = dst;
        l3 + 40
    };
    let payload_off = l4 + q.l4_len as usize;
    out.family = q.family;
    out.proto = q.proto;
    out.sport = q.sport;
    out.dport = q.dport;
    out.l3_off = l3 as u16;
    out.l4_off = l4 as u16;
    out.payload_off = payload_off as u16;
    out.l3_len = q.l3_len;
    out.payload_len = (l3 + q.l3_len as usize - payload_off) as u32;
    out.tcp_flags = q.tcp_flags;
    out.tcp_seq = q.tcp_seq;
    out.tcp_ack = q.tcp_ack;
    out.vlan = false;
    out.first_fragment = false;
    out.tunnel = 0;
    true
}

/// Whether a plain packet neither of whose addresses is in the watch bitmaps
/// is done (`unwatched`) without the full path: not a DNS answer, not one to
/// probe and not one of a flow an app may be followed on. Only packets the
/// full path would count `unwatched` without a map lookup (a few of those
/// still go the full way: from port 53 without payload, say).
#[inline(always)]
pub fn plainly_unwatched(cfg: &Config, q: &Plain) -> bool {
    if cfg.flags & config_flags::DNS != 0 && q.sport == DNS_PORT {
        return false;
    }
    // Probes and followed apps are TCP only (`policy::may_be_followed`):
    // QUIC to a probe port stays on the fast path.
    if q.proto != IPPROTO_TCP {
        return true;
    }
    let probe = cfg.flags & config_flags::PROBE != 0;
    let follow = cfg.flags & config_flags::FOLLOW != 0;
    if (probe || follow) && cfg.is_probe_port(q.dport) {
        return false;
    }
    !(follow && cfg.is_probe_port(q.sport))
}

/// Checks, panicking on a difference, that [`plain`] takes `frame` only
/// where the full parser reads it the same way, and that
/// [`parse_plain_into`] then fills every field of a `Parsed` (starting from
/// [`stale_parsed`]) as the parser does; returns whether `plain` took it.
/// For the unit tests below and the `parse` fuzz target.
#[cfg(any(test, feature = "user"))]
pub fn check_agreement(frame: &[u8], vxlan_port: u16) -> bool {
    let Some(q) = plain(frame, vxlan_port) else {
        return check_encapsulated_agreement(frame, vxlan_port);
    };
    let Ok(p) = crate::parse::parse_with(frame, vxlan_port) else {
        panic!("the fast path took a frame the parser refuses");
    };
    assert_eq!(
        (p.family, p.proto, p.tunnel, p.first_fragment),
        (q.family, q.proto, 0, false)
    );
    assert_eq!((&p.src[..4], &p.dst[..4]), (&q.src[..], &q.dst[..]));
    assert_eq!((p.sport, p.dport), (q.sport, q.dport));
    let unsequenced = Plain {
        tcp_seq: 0,
        tcp_ack: 0,
        ..q
    };
    if q.family == FAMILY_V4 {
        assert_eq!(
            reread_ipv4(frame),
            Some(unsequenced),
            "the second read differs from the first"
        );
    } else {
        assert_eq!(
            reread_ipv6(frame),
            Some((unsequenced, p.src, p.dst)),
            "the second read differs from the first"
        );
    }
    let mut filled = stale_parsed();
    assert!(parse_plain_into(frame, vxlan_port, &mut filled));
    assert_eq!(filled, p, "the plain fill differs from the parser's");
    true
}

/// [`check_agreement`] for the readers past tags and PPPoE ([`plain_tagged`],
/// [`plain_two_tags`], [`plain_pppoe`]): at most one takes a frame, and what
/// it takes the parser reads with the same addresses, protocol and ports,
/// its IP header where the reader's shift puts it.
#[cfg(any(test, feature = "user"))]
fn check_encapsulated_agreement(frame: &[u8], vxlan_port: u16) -> bool {
    let mut taken = [
        plain_tagged(frame, vxlan_port).map(|q| (q, VLAN_HLEN, true)),
        plain_two_tags(frame, vxlan_port).map(|q| (q, 2 * VLAN_HLEN, true)),
        plain_pppoe(frame, vxlan_port).map(|(q, shift)| (q, shift, shift != PPPOE_HLEN)),
    ]
    .into_iter()
    .flatten();
    let Some((q, shift, vlan)) = taken.next() else {
        return false;
    };
    assert!(taken.next().is_none(), "two readers took one frame");
    let Ok(p) = crate::parse::parse_with(frame, vxlan_port) else {
        panic!("the fast path took an encapsulated frame the parser refuses");
    };
    assert_eq!(
        (p.vlan, p.family, p.proto, p.tunnel, p.first_fragment),
        (vlan, q.family, q.proto, 0, false)
    );
    assert_eq!((&p.src[..4], &p.dst[..4]), (&q.src[..], &q.dst[..]));
    assert_eq!((p.sport, p.dport), (q.sport, q.dport));
    assert_eq!(p.l3_off as usize, ETH_HLEN + shift);
    true
}

/// A `Parsed` with every field set to what no plain frame gives: a fill
/// that leaves one out shows.
#[cfg(any(test, feature = "user"))]
pub fn stale_parsed() -> Parsed {
    Parsed {
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
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{
        parse::{ETH_P_8021AD, ETH_P_8021Q, TCP_ACK},
        tunnel::VXLAN_PORT,
    };

    /// A plain frame with `payload` bytes, and its length.
    fn frame(payload: usize) -> ([u8; 1600], usize) {
        let mut f = [0u8; 1600];
        f[12] = 0x08;
        let ip = ETH_HLEN;
        f[ip] = 0x45;
        f[ip + 2..ip + 4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[ip + 6] = 0x40; // DF
        f[ip + 9] = IPPROTO_TCP;
        f[ip + 12..ip + 16].copy_from_slice(&[203, 0, 113, 5]);
        f[ip + 16..ip + 20].copy_from_slice(&[192, 0, 2, 10]);
        let t = ip + 20;
        f[t..t + 2].copy_from_slice(&443u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = TCP_ACK;
        (f, PLAIN_HLEN + payload)
    }

    /// A plain IPv6 frame with `payload` bytes, and its length.
    fn frame6(payload: usize) -> ([u8; 1600], usize) {
        let mut f = [0u8; 1600];
        f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        let ip = ETH_HLEN;
        f[ip] = 0x60;
        f[ip + 4..ip + 6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        f[ip + 6] = IPPROTO_TCP;
        f[ip + 7] = 64;
        f[ip + 8..ip + 12].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        f[ip + 23] = 5;
        f[ip + 24..ip + 28].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        f[ip + 26] = 0x00;
        f[ip + 27] = 0xb9;
        f[ip + 39] = 10;
        let t = ip + 40;
        f[t..t + 2].copy_from_slice(&443u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = TCP_ACK;
        (f, PLAIN6_HLEN + payload)
    }

    fn agrees(f: &[u8]) -> bool {
        check_agreement(f, VXLAN_PORT)
    }

    /// A frame of `frame`'s turned into UDP (its ports stay), its protocol
    /// byte at `at`.
    fn udp(
        frame: fn(usize) -> ([u8; 1600], usize),
        at: usize,
        payload: usize,
    ) -> ([u8; 1600], usize) {
        let (mut f, n) = frame(payload);
        f[at] = IPPROTO_UDP;
        (f, n)
    }

    #[test]
    fn plain_frames_agree_with_the_parser() {
        for (family, frame, proto_at) in [
            (FAMILY_V4, frame as fn(usize) -> _, 23),
            (FAMILY_V6, frame6, 20),
        ] {
            for proto in [IPPROTO_TCP, IPPROTO_UDP] {
                let frame = |payload| {
                    if proto == IPPROTO_TCP {
                        frame(payload)
                    } else {
                        udp(frame, proto_at, payload)
                    }
                };
                let (f, n) = frame(0);
                assert!(agrees(&f[..n]));
                let q = plain(&f[..n], VXLAN_PORT).unwrap();
                assert_eq!((q.family, q.proto), (family, proto));
                let (f, n) = frame(1400);
                assert!(agrees(&f[..n]));
                // Trailing Ethernet padding past the datagram is fine for both.
                let (f, n) = frame(0);
                assert!(agrees(&f[..n + 6]));
            }
        }
        // The IPv6 bucket's bytes: the addresses' first four.
        let (f, n) = frame6(0);
        let q = plain(&f[..n], VXLAN_PORT).unwrap();
        assert_eq!((q.src, q.dst), ([0x20, 1, 0xd, 0xb8], [0x20, 1, 0, 0xb9]));
    }

    #[test]
    fn anything_else_goes_the_full_way() {
        type Edit = fn(&mut [u8; 1600], &mut usize);
        let edits: [(&str, Edit); 12] = [
            ("VLAN tag", |f, _| f[12] = 0x81),
            ("IPv6 ethertype", |f, _| {
                f[12..14].copy_from_slice(&[0x86, 0xdd]);
            }),
            ("IP options", |f, _| f[14] = 0x46),
            ("ICMP", |f, _| f[23] = 1),
            ("more fragments", |f, _| f[20] |= 0x20),
            ("fragment offset", |f, _| f[21] = 1),
            ("short TCP header", |f, _| f[46] = 4 << 4),
            ("TCP options past the datagram", |f, _| f[46] = 15 << 4),
            ("datagram past the frame", |f, _| f[17] = 200),
            ("short frame", |_, n| *n = PLAIN_HLEN - 1),
            ("UDP to the VXLAN port", |f, _| {
                f[23] = IPPROTO_UDP;
                f[36..38].copy_from_slice(&VXLAN_PORT.to_be_bytes());
            }),
            ("UDP header past the datagram", |f, n| {
                f[23] = IPPROTO_UDP;
                f[16..18].copy_from_slice(&27u16.to_be_bytes());
                *n = PLAIN_HLEN;
            }),
        ];
        for (what, edit) in edits {
            let (mut f, mut n) = frame(10);
            edit(&mut f, &mut n);
            assert_eq!(plain(&f[..n], VXLAN_PORT), None, "{what}");
            let mut out = stale_parsed();
            assert!(!parse_plain_into(&f[..n], VXLAN_PORT, &mut out));
            assert_eq!(out, stale_parsed(), "{what}: left untouched");
        }
        let edits6: [(&str, Edit); 10] = [
            ("VLAN tag", |f, _| f[12] = 0x81),
            ("IPv4 ethertype", |f, _| {
                f[12..14].copy_from_slice(&[0x08, 0]);
            }),
            ("version 4", |f, _| f[14] = 0x40),
            ("hop-by-hop options", |f, _| f[20] = 0),
            ("fragment header", |f, _| f[20] = 44),
            ("ICMPv6", |f, _| f[20] = 58),
            ("short TCP header", |f, _| f[66] = 4 << 4),
            ("TCP header past the payload length", |f, _| f[19] = 19),
            ("payload length past the frame", |f, _| f[18] = 6),
            ("UDP header past the payload length", |f, _| {
                f[20] = IPPROTO_UDP;
                f[18..20].copy_from_slice(&7u16.to_be_bytes());
            }),
        ];
        for (what, edit) in edits6 {
            let (mut f, mut n) = frame6(10);
            edit(&mut f, &mut n);
            assert_eq!(plain(&f[..n], VXLAN_PORT), None, "IPv6: {what}");
        }
        let (f, n) = frame6(10);
        assert_eq!(
            plain(&f[..PLAIN6_HLEN - 1], VXLAN_PORT),
            None,
            "IPv6: short frame"
        );
        assert!(plain(&f[..n], VXLAN_PORT).is_some());
        // VXLAN looked into on another port, or not at all.
        let (mut f, n) = udp(frame, 23, 10);
        f[36..38].copy_from_slice(&VXLAN_PORT.to_be_bytes());
        assert_eq!(plain(&f[..n], 8472), plain(&f[..n], 0));
        assert!(plain(&f[..n], 0).is_some());
    }

    /// `f` with a VLAN tag of `tpid` (VID 100) inserted after the MAC addresses.
    fn tagged(f: &[u8], tpid: u16) -> Vec<u8> {
        let mut t = f[..12].to_vec();
        t.extend_from_slice(&tpid.to_be_bytes());
        t.extend_from_slice(&100u16.to_be_bytes());
        t.extend_from_slice(&f[12..]);
        t
    }

    #[test]
    fn tagged_frames_agree_with_the_parser() {
        type Read = fn(&[u8], u16) -> Option<Plain>;
        // One tag, and two (QinQ: 802.1ad outside, or 802.1Q twice).
        let stacks: [&[u16]; 4] = [
            &[ETH_P_8021Q],
            &[ETH_P_8021AD],
            &[ETH_P_8021AD, ETH_P_8021Q],
            &[ETH_P_8021Q, ETH_P_8021Q],
        ];
        for (frame, proto_at) in [(frame as fn(usize) -> _, 23), (frame6, 20)] {
            for stack in stacks {
                for udp_too in [false, true] {
                    let (f, n) = if udp_too {
                        udp(frame, proto_at, 100)
                    } else {
                        frame(100)
                    };
                    // The outer tag first: each inserted in front of the last.
                    let t = stack
                        .iter()
                        .rev()
                        .fold(f[..n].to_vec(), |t, &tpid| tagged(&t, tpid));
                    let (read, other): (Read, Read) = if stack.len() == 1 {
                        (plain_tagged, plain_two_tags)
                    } else {
                        (plain_two_tags, plain_tagged)
                    };
                    assert_eq!(plain(&t[..], VXLAN_PORT), None, "not plain");
                    assert_eq!(read(&t[..], VXLAN_PORT), plain(&f[..n], VXLAN_PORT));
                    assert_eq!(other(&t[..], VXLAN_PORT), None, "{stack:x?}");
                    assert!(agrees(&t));
                    assert!(!parse_plain_into(&t[..], VXLAN_PORT, &mut stale_parsed()));
                    // Each way the untagged frame goes the full way, the
                    // tagged one does too: short, the datagram past the frame.
                    assert_eq!(read(&t[..t.len() - 1], VXLAN_PORT), None);
                }
            }
        }
        // Three tags, an untagged frame, an unknown TPID: not taken.
        let (f, n) = frame(10);
        let two = tagged(&tagged(&f[..n], ETH_P_8021Q), ETH_P_8021AD);
        let three = tagged(&two, ETH_P_8021AD);
        assert!(agrees(&two));
        assert_eq!(plain_two_tags(&three[..], VXLAN_PORT), None);
        assert_eq!(plain_tagged(&three[..], VXLAN_PORT), None);
        assert!(!agrees(&three));
        assert_eq!(plain_tagged(&f[..n], VXLAN_PORT), None);
        assert_eq!(plain_two_tags(&f[..n], VXLAN_PORT), None);
        assert_eq!(plain_tagged(&tagged(&f[..n], 0x9100)[..], VXLAN_PORT), None);
        let odd_inner = tagged(&tagged(&f[..n], 0x9100), ETH_P_8021AD);
        assert_eq!(plain_two_tags(&odd_inner[..], VXLAN_PORT), None);
        // A tagged frame's VXLAN goes the full way too.
        let (mut f, n) = udp(frame, 23, 10);
        f[36..38].copy_from_slice(&VXLAN_PORT.to_be_bytes());
        let one = tagged(&f[..n], ETH_P_8021Q);
        assert_eq!(plain_tagged(&one[..], VXLAN_PORT), None);
        assert_eq!(
            plain_two_tags(&tagged(&one, ETH_P_8021AD)[..], VXLAN_PORT),
            None
        );
    }

    /// `f` carried in a PPPoE session (PPP protocol `proto`), as an access
    /// link delivers it: the ethertype becomes PPPoE's, its header and the
    /// protocol follow.
    fn pppoe(f: &[u8], proto: u16) -> Vec<u8> {
        let mut t = f[..12].to_vec();
        t.extend_from_slice(&ETH_P_PPPOE_SESSION.to_be_bytes());
        t.extend_from_slice(&[0x11, 0x00, 0x12, 0x34]);
        t.extend_from_slice(&((f.len() - ETH_HLEN + 2) as u16).to_be_bytes());
        t.extend_from_slice(&proto.to_be_bytes());
        t.extend_from_slice(&f[ETH_HLEN..]);
        t
    }

    #[test]
    fn pppoe_frames_agree_with_the_parser() {
        for (frame, proto_at, ppp) in [
            (frame as fn(usize) -> _, 23, PPP_IPV4),
            (frame6, 20, PPP_IPV6),
        ] {
            for tag in [None, Some(ETH_P_8021Q), Some(ETH_P_8021AD)] {
                for udp_too in [false, true] {
                    let (f, n) = if udp_too {
                        udp(frame, proto_at, 100)
                    } else {
                        frame(100)
                    };
                    let mut t = pppoe(&f[..n], ppp);
                    let mut shift = PPPOE_HLEN;
                    if let Some(tpid) = tag {
                        t = tagged(&t, tpid);
                        shift += VLAN_HLEN;
                    }
                    let want = plain(&f[..n], VXLAN_PORT).map(|q| (q, shift));
                    assert!(want.is_some());
                    assert_eq!(plain_pppoe(&t[..], VXLAN_PORT), want, "{tag:x?}");
                    assert_eq!(plain(&t[..], VXLAN_PORT), None);
                    assert_eq!(plain_tagged(&t[..], VXLAN_PORT), None);
                    assert_eq!(plain_two_tags(&t[..], VXLAN_PORT), None);
                    assert!(agrees(&t));
                    assert!(!parse_plain_into(&t[..], VXLAN_PORT, &mut stale_parsed()));
                    assert_eq!(plain_pppoe(&t[..t.len() - 1], VXLAN_PORT), None);
                    // The other family's PPP protocol: the parser reads the
                    // header as that family's and refuses it, as plain does.
                    let other = if ppp == PPP_IPV4 { PPP_IPV6 } else { PPP_IPV4 };
                    let mut wrong = pppoe(&f[..n], other);
                    if let Some(tpid) = tag {
                        wrong = tagged(&wrong, tpid);
                    }
                    assert!(crate::parse::parse_with(&wrong[..], VXLAN_PORT).is_err());
                    assert_eq!(plain_pppoe(&wrong[..], VXLAN_PORT), None);
                }
            }
        }
        let (f, n) = frame(10);
        // LCP, not IP; PPPoE discovery; behind two tags: the full way.
        for t in [
            pppoe(&f[..n], 0xc021),
            {
                let mut d = pppoe(&f[..n], PPP_IPV4);
                d[12..14].copy_from_slice(&0x8863u16.to_be_bytes());
                d
            },
            tagged(
                &tagged(&pppoe(&f[..n], PPP_IPV4), ETH_P_8021Q),
                ETH_P_8021AD,
            ),
        ] {
            assert_eq!(plain_pppoe(&t[..], VXLAN_PORT), None);
            assert!(!agrees(&t));
        }
        // VXLAN inside goes the full way too.
        let (mut f, n) = udp(frame, 23, 10);
        f[36..38].copy_from_slice(&VXLAN_PORT.to_be_bytes());
        assert_eq!(plain_pppoe(&pppoe(&f[..n], PPP_IPV4)[..], VXLAN_PORT), None);
    }

    #[test]
    fn only_packets_the_full_path_leaves_alone_are_done() {
        let mut cfg = Config::default();
        let q = |proto, sport, dport| Plain {
            family: FAMILY_V4,
            proto,
            src: [203, 0, 113, 5],
            dst: [192, 0, 2, 10],
            sport,
            dport,
            l3_len: 40,
            l4_len: 20,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
        };
        let tcp = |sport, dport| q(IPPROTO_TCP, sport, dport);
        let udp = |sport, dport| q(IPPROTO_UDP, sport, dport);
        assert!(plainly_unwatched(&cfg, &tcp(443, 40000)));
        assert!(!plainly_unwatched(&cfg, &tcp(53, 40000)), "DNS over TCP");
        assert!(!plainly_unwatched(&cfg, &udp(53, 40000)), "DNS");
        assert!(!plainly_unwatched(&cfg, &tcp(40000, 443)), "a probe port");
        assert!(plainly_unwatched(&cfg, &udp(40000, 443)), "QUIC: no probe");
        cfg.flags = config_flags::FOLLOW;
        assert!(!plainly_unwatched(&cfg, &tcp(443, 40000)), "followed reply");
        assert!(
            plainly_unwatched(&cfg, &udp(443, 40000)),
            "QUIC: not followed"
        );
        assert!(plainly_unwatched(&cfg, &tcp(53, 40000)), "DNS off");
        cfg.flags = 0;
        assert!(plainly_unwatched(&cfg, &tcp(40000, 443)));
    }
}
