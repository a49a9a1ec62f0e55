//! L2–L4 header parser shared by the XDP program and userspace.
//!
//! Generic over [`PacketBytes`], so the kernel reads the frame through bounds-checked
//! packet pointers and userspace (pcap replay, tests) through a slice, with one
//! parsing logic. Every failure names the [`Counter`] the packet is counted under.

use crate::{
    counters::Counter,
    flow::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP},
    tunnel::{self, IPPROTO_GRE, Inner, Start, VXLAN_PORT},
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Whether an ethertype is a VLAN tag's TPID (802.1Q or 802.1ad).
#[inline(always)]
pub const fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}
pub const VLAN_HLEN: usize = 4;
/// PPPoE session stage: 6-byte PPPoE header + 2-byte PPP protocol.
pub const ETH_P_PPPOE_SESSION: u16 = 0x8864;
pub const PPPOE_HLEN: usize = 8;
/// PPP protocol numbers of IPv4 and IPv6.
pub const PPP_IPV4: u16 = 0x0021;
pub const PPP_IPV6: u16 = 0x0057;
pub const ETH_P_MPLS_UC: u16 = 0x8847;
pub const ETH_P_MPLS_MC: u16 = 0x8848;
/// MPLS labels followed before giving up.
pub const MAX_MPLS_LABELS: usize = 4;
/// VLAN tags followed (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before giving up.
pub const MAX_IPV6_EXT: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

/// Read access to a frame.
pub trait PacketBytes {
    /// Whether the frame holds at least `len` bytes (all fragments of a
    /// multi-buffer frame count).
    fn has_len(&self, len: usize) -> bool;
    /// Whether the first `len` bytes are all in the linear part: no helper
    /// call in the kernel (a slice is all linear).
    fn has_linear(&self, len: usize) -> bool {
        self.has_len(len)
    }
    /// `N` header bytes at `off`, or `None` if they are not all readable. The kernel
    /// reads only the linear part here: headers live there.
    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// `N` bytes at `off` anywhere in the frame (payload peeks; frags-aware).
    fn peek<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.header(off)
    }
}

impl PacketBytes for [u8] {
    fn has_len(&self, len: usize) -> bool {
        self.len() >= len
    }

    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        self.get(off..end)?.try_into().ok()
    }
}

/// What the parser learned about a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub family: u8,
    pub proto: u8,
    /// Addresses in network order; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub l3_off: u16,
    pub l4_off: u16,
    pub payload_off: u16,
    /// IP datagram length (header and payload) per the IP header.
    pub l3_len: u32,
    /// L4 payload length per the IP and L4 headers.
    pub payload_len: u32,
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// The frame had at least one VLAN tag.
    pub vlan: bool,
    /// First fragment of a fragmented datagram (more fragments follow).
    pub first_fragment: bool,
    /// The tunnel the packet came through (`tunnel::kind`; 0: none).
    pub tunnel: u8,
}

impl Parsed {
    pub fn is_tcp(&self) -> bool {
        self.proto == IPPROTO_TCP
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

impl Parsed {
    pub const fn zeroed() -> Self {
        Self {
            family: 0,
            proto: 0,
            src: [0; 16],
            dst: [0; 16],
            sport: 0,
            dport: 0,
            l3_off: 0,
            l4_off: 0,
            payload_off: 0,
            l3_len: 0,
            payload_len: 0,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            vlan: false,
            first_fragment: false,
            tunnel: 0,
        }
    }
}

/// Parses Ethernet, up to two VLAN tags, IPv4/IPv6, TCP/UDP, through one
/// level of tunnel (GRE, ERSPAN, VXLAN on its default port).
pub fn parse<P: PacketBytes + ?Sized>(p: &P) -> Result<Parsed, Counter> {
    parse_with(p, VXLAN_PORT)
}

/// [`parse`] with VXLAN on `vxlan_port` (0: not looked into).
pub fn parse_with<P: PacketBytes + ?Sized>(p: &P, vxlan_port: u16) -> Result<Parsed, Counter> {
    let mut out = Parsed::zeroed();
    parse_into(p, &mut out, vxlan_port)?;
    Ok(out)
}

/// [`parse_with`] writing into `out` (the kernel keeps it in a per-CPU slot: its
/// stack is 512 bytes). Every field of `out` is written on success; for a
/// tunnelled packet they describe the inner one and `tunnel` says which tunnel.
#[inline(always)]
pub fn parse_into<P: PacketBytes + ?Sized>(
    p: &P,
    out: &mut Parsed,
    vxlan_port: u16,
) -> Result<(), Counter> {
    out.vlan = false;
    out.tunnel = 0;
    let (ethertype, off) = link(p, 0, out)?;
    let Some(inner) = ip_l4(p, ethertype, off, out, vxlan_port)? else {
        return Ok(());
    };
    // One level: an inner tunnel is counted, not followed.
    let outer_fragment = out.first_fragment;
    let r = match inner.start {
        Start::Ethernet(o) => match link(p, inner_off(o)?, out) {
            Ok((ethertype, o)) => ip_l4(p, ethertype, o, out, vxlan_port),
            Err(c) => Err(c),
        },
        Start::Ip(ethertype, o) => ip_l4(p, ethertype, inner_off(o)?, out, vxlan_port),
    };
    match r {
        Ok(None) => {
            out.tunnel = inner.kind;
            Ok(())
        }
        Ok(Some(_)) => Err(Counter::TunnelTooDeep),
        // The outer datagram's first fragment holds only the start of the
        // inner packet; replay reassembles outer fragments, the kernel cannot.
        Err(_) if outer_fragment => Err(Counter::TunnelFragment),
        Err(c) => Err(c),
    }
}

/// A frame's network layer: its ethertype and offset (past Ethernet, VLAN
/// tags, PPPoE, MPLS).
pub fn network<P: PacketBytes + ?Sized>(p: &P) -> Result<(u16, usize), Counter> {
    link(p, 0, &mut Parsed::zeroed())
}

/// Inner packets start below this offset; a tunnel deeper in the frame is
/// `bad_tunnel`.
pub const MAX_INNER_OFF: usize = 1024;

/// `o`, checked to be below [`MAX_INNER_OFF`]. The mask changes nothing on
/// the way out; it makes the verifier see one range of offsets for every
/// outer path (tags, labels, options, extension headers), so it merges them
/// instead of walking each into the inner parse.
#[inline(always)]
fn inner_off(o: usize) -> Result<usize, Counter> {
    let m = o & (MAX_INNER_OFF - 1);
    if m != o {
        return Err(Counter::BadTunnel);
    }
    Ok(m)
}

/// The link layer at `off`: Ethernet, VLAN tags, PPPoE, MPLS. Returns the
/// network layer's ethertype and offset.
#[inline(always)]
fn link<P: PacketBytes + ?Sized>(
    p: &P,
    off: usize,
    out: &mut Parsed,
) -> Result<(u16, usize), Counter> {
    let eth: [u8; ETH_HLEN] = p.header(off).ok_or(Counter::ShortEthernet)?;
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = off + ETH_HLEN;
    // Bounded: at most MAX_VLAN_TAGS iterations.
    for _ in 0..MAX_VLAN_TAGS {
        // Not `is_vlan_tpid`: through it, LLVM lays the kernel's copy out so
        // the verifier walks 82,000 more instructions.
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: [u8; VLAN_HLEN] = p.header(off).ok_or(Counter::ShortEthernet)?;
        ethertype = be16([tag[2], tag[3]]);
        off += VLAN_HLEN;
        out.vlan = true;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Counter::VlanTooDeep);
    }
    // PPPoE session (DSL access links): IP inside PPP.
    if ethertype == ETH_P_PPPOE_SESSION {
        let h: [u8; PPPOE_HLEN] = p.header(off).ok_or(Counter::ShortEthernet)?;
        ethertype = match be16([h[6], h[7]]) {
            PPP_IPV4 => ETH_P_IPV4,
            PPP_IPV6 => ETH_P_IPV6,
            _ => return Err(Counter::NotIp),
        };
        off += PPPOE_HLEN;
    }
    // MPLS: follow the label stack (bounded) to its bottom; IP follows, its
    // version nibble says which.
    if ethertype == ETH_P_MPLS_UC || ethertype == ETH_P_MPLS_MC {
        let mut bottom = false;
        for _ in 0..MAX_MPLS_LABELS {
            let l: [u8; 4] = p.header(off).ok_or(Counter::ShortEthernet)?;
            off += 4;
            if l[2] & 1 != 0 {
                bottom = true;
                break;
            }
        }
        // Four bytes, not one: the verifier rejects the one-byte bounds check
        // LLVM emits at a variable (inner) offset; an IP header has twenty.
        let first: [u8; 4] = p.header(off).ok_or(Counter::ShortEthernet)?;
        ethertype = match (bottom, first[0] >> 4) {
            (true, 4) => ETH_P_IPV4,
            (true, 6) => ETH_P_IPV6,
            _ => return Err(Counter::NotIp),
        };
    }
    Ok((ethertype, off))
}

/// IP and TCP/UDP at `off`. `Some`: a tunnel whose inner packet is still to
/// parse (TCP, the common case, pays nothing for this; UDP one comparison).
#[inline(always)]
fn ip_l4<P: PacketBytes + ?Sized>(
    p: &P,
    ethertype: u16,
    off: usize,
    out: &mut Parsed,
    vxlan_port: u16,
) -> Result<Option<Inner>, Counter> {
    out.src = [0; 16];
    out.dst = [0; 16];
    out.sport = 0;
    out.dport = 0;
    out.tcp_flags = 0;
    out.tcp_seq = 0;
    out.tcp_ack = 0;
    out.first_fragment = false;
    out.l3_off = off as u16;
    // Offsets stay bounded: the link layer adds at most 46 bytes, IPv4 60,
    // IPv6 its bounded extension chain, a tunnel header 36, twice at most.
    let (l4_off, l3_end) = match ethertype {
        ETH_P_IPV4 => ipv4(p, off, out)?,
        ETH_P_IPV6 => ipv6(p, off, out)?,
        _ => return Err(Counter::NotIp),
    };
    out.l4_off = l4_off as u16;
    let l4_hlen = match out.proto {
        IPPROTO_TCP => {
            let t: [u8; 20] = p.header(l4_off).ok_or(Counter::BadL4)?;
            let doff = ((t[12] >> 4) as usize) * 4;
            if doff < 20 {
                return Err(Counter::BadL4);
            }
            out.sport = be16([t[0], t[1]]);
            out.dport = be16([t[2], t[3]]);
            out.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            out.tcp_ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            out.tcp_flags = t[13];
            doff
        }
        IPPROTO_UDP => {
            let u: [u8; 8] = p.header(l4_off).ok_or(Counter::BadL4)?;
            out.sport = be16([u[0], u[1]]);
            out.dport = be16([u[2], u[3]]);
            if out.dport == vxlan_port
                && vxlan_port != 0
                && let Some(inner) = tunnel::vxlan(p, l4_off + 8, l3_end)?
            {
                return Ok(Some(inner));
            }
            8
        }
        IPPROTO_GRE => return tunnel::gre(p, l4_off, l3_end).map(Some),
        _ => return Err(Counter::NotTcpUdp),
    };
    let payload_off = l4_off + l4_hlen;
    if payload_off > l3_end {
        return Err(Counter::BadL4);
    }
    out.payload_off = payload_off as u16;
    out.payload_len = (l3_end - payload_off) as u32;
    Ok(None)
}

/// Returns (L4 offset, end of the IP datagram).
#[inline(always)]
fn ipv4<P: PacketBytes + ?Sized>(
    p: &P,
    off: usize,
    out: &mut Parsed,
) -> Result<(usize, usize), Counter> {
    let h: [u8; 20] = p.header(off).ok_or(Counter::BadIpv4)?;
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let total = be16([h[2], h[3]]) as usize;
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || !p.has_len(off + total) {
        return Err(Counter::BadIpv4);
    }
    let frag = be16([h[6], h[7]]);
    if frag & 0x1fff != 0 {
        return Err(Counter::Ipv4Fragment);
    }
    out.first_fragment = frag & 0x2000 != 0;
    out.family = FAMILY_V4;
    out.proto = h[9];
    out.src[..4].copy_from_slice(&h[12..16]);
    out.dst[..4].copy_from_slice(&h[16..20]);
    out.l3_len = total as u32;
    Ok((off + ihl, off + total))
}

#[inline(always)]
fn ipv6<P: PacketBytes + ?Sized>(
    p: &P,
    off: usize,
    out: &mut Parsed,
) -> Result<(usize, usize), Counter> {
    // Read in pieces: the kernel's stack is 512 bytes.
    let h: [u8; 8] = p.header(off).ok_or(Counter::BadIpv6)?;
    let plen = be16([h[4], h[5]]) as usize;
    let end = off + 40 + plen;
    if h[0] >> 4 != 6 || !p.has_len(end) {
        return Err(Counter::BadIpv6);
    }
    out.family = FAMILY_V6;
    out.src = p.header(off + 8).ok_or(Counter::BadIpv6)?;
    out.dst = p.header(off + 24).ok_or(Counter::BadIpv6)?;
    out.l3_len = (40 + plen) as u32;
    let mut next = h[6];
    let mut cur = off + 40;
    // Bounded: at most MAX_IPV6_EXT headers, each at most 2 KiB, so `cur` stays
    // below 22 + 40 + 6·2048: a bounded offset for the verifier.
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let e: [u8; 2] = p.header(cur).ok_or(Counter::BadIpv6)?;
                next = e[0];
                cur += (e[1] as usize + 1) * 8;
            }
            IPV6_AH => {
                let e: [u8; 2] = p.header(cur).ok_or(Counter::BadIpv6)?;
                next = e[0];
                cur += (e[1] as usize + 2) * 4;
            }
            IPV6_FRAGMENT => {
                let e: [u8; 8] = p.header(cur).ok_or(Counter::BadIpv6)?;
                let fo = be16([e[2], e[3]]);
                if fo & 0xfff8 != 0 {
                    return Err(Counter::Ipv6Fragment);
                }
                out.first_fragment = fo & 1 != 0;
                next = e[0];
                cur += 8;
            }
            _ => {
                out.proto = next;
                if cur > end {
                    return Err(Counter::BadIpv6);
                }
                return Ok((cur, end));
            }
        }
    }
    Err(Counter::Ipv6ExtTooDeep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16) -> [u8; 64] {
        let mut f = [0u8; 64];
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4_tcp(options: usize, frag: u16, payload: &[u8]) -> ([u8; 256], usize) {
        let mut f = [0u8; 256];
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        let ihl = 20 + options;
        let total = ihl + 20 + payload.len();
        f[14] = 0x40 | (ihl / 4) as u8;
        f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[23] = IPPROTO_TCP;
        f[26..30].copy_from_slice(&[192, 0, 2, 1]);
        f[30..34].copy_from_slice(&[198, 51, 100, 2]);
        let t = 14 + ihl;
        f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&7u32.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = TCP_ACK;
        f[t + 20..t + 20 + payload.len()].copy_from_slice(payload);
        (f, 14 + total)
    }

    #[test]
    fn ipv4_tcp_with_and_without_options() {
        for opts in [0, 4, 40] {
            let (f, len) = ipv4_tcp(opts, 0, b"GET / HTTP/1.1\r\n");
            let p = parse(&f[..len]).unwrap();
            assert_eq!(p.family, FAMILY_V4);
            assert_eq!((p.sport, p.dport, p.tcp_seq), (40000, 80, 7));
            assert_eq!(p.l4_off as usize, 14 + 20 + opts);
            assert_eq!(p.payload_len, 16);
            assert_eq!(&p.src[..4], &[192, 0, 2, 1]);
            assert!(!p.first_fragment);
        }
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let (f, len) = ipv4_tcp(0, 0, b"");
        assert_eq!(parse(&f[..len + 6]).unwrap().payload_len, 0);
    }

    #[test]
    fn fragments() {
        let (f, len) = ipv4_tcp(0, 0x2000, b"x");
        assert!(parse(&f[..len]).unwrap().first_fragment);
        let (f, len) = ipv4_tcp(0, 0x0010, b"x");
        assert_eq!(parse(&f[..len]), Err(Counter::Ipv4Fragment));
    }

    #[test]
    fn truncated_and_garbage() {
        let (f, len) = ipv4_tcp(0, 0, b"abc");
        assert_eq!(parse(&f[..len - 1]), Err(Counter::BadIpv4));
        assert_eq!(parse(&f[..10]), Err(Counter::ShortEthernet));
        assert_eq!(parse(&f[..14 + 20 + 10]), Err(Counter::BadIpv4));
        let mut g = f;
        g[14 + 20 + 12] = 4 << 4; // TCP data offset 16 bytes
        assert_eq!(parse(&g[..len]), Err(Counter::BadL4));
        let mut g = f;
        g[14] = 0x44; // IHL 16
        assert_eq!(parse(&g[..len]), Err(Counter::BadIpv4));
        assert_eq!(parse(&eth(0x0806)[..]), Err(Counter::NotIp));
    }

    #[test]
    fn vlan_depth() {
        let (inner, len) = ipv4_tcp(0, 0, b"x");
        let tagged = |tags: &[u16]| {
            let mut f = [0u8; 300];
            let mut off = 12;
            for t in tags {
                f[off..off + 2].copy_from_slice(&t.to_be_bytes());
                f[off + 2..off + 4].copy_from_slice(&[0, 10]);
                off += 4;
            }
            f[off..off + len - 12].copy_from_slice(&inner[12..len]);
            (f, off + len - 12)
        };
        let (f, n) = tagged(&[ETH_P_8021Q]);
        let p = parse(&f[..n]).unwrap();
        assert!(p.vlan);
        assert_eq!(p.l3_off, 18);
        let (f, n) = tagged(&[ETH_P_8021AD, ETH_P_8021Q]);
        assert_eq!(parse(&f[..n]).unwrap().l3_off, 22);
        let (f, n) = tagged(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q]);
        assert_eq!(parse(&f[..n]), Err(Counter::VlanTooDeep));
    }

    #[test]
    fn ipv6_extension_headers() {
        let mut f = [0u8; 200];
        f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        f[14] = 0x60;
        // hop-by-hop (8) → fragment (8, first with M) → UDP (8) + 4 payload
        f[18..20].copy_from_slice(&28u16.to_be_bytes());
        f[20] = IPV6_HOPOPTS;
        f[22] = 0x20;
        f[54] = IPV6_FRAGMENT;
        f[62] = IPPROTO_UDP;
        f[64..66].copy_from_slice(&1u16.to_be_bytes());
        f[70..72].copy_from_slice(&53u16.to_be_bytes());
        let p = parse(&f[..54 + 28]).unwrap();
        assert_eq!((p.family, p.proto, p.sport), (FAMILY_V6, IPPROTO_UDP, 53));
        assert_eq!((p.l4_off, p.payload_len), (70, 4));
        assert!(p.first_fragment);
        f[64..66].copy_from_slice(&0x0008u16.to_be_bytes());
        assert_eq!(parse(&f[..54 + 28]), Err(Counter::Ipv6Fragment));
        // A chain longer than MAX_IPV6_EXT.
        let mut g = [0u8; 200];
        g[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        g[14] = 0x60;
        g[18..20].copy_from_slice(&64u16.to_be_bytes());
        g[20] = IPV6_DSTOPTS;
        for i in 0..8 {
            g[54 + i * 8] = IPV6_DSTOPTS;
        }
        assert_eq!(parse(&g[..54 + 64]), Err(Counter::Ipv6ExtTooDeep));
    }
}
