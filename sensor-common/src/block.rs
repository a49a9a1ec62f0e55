//! Blocking: the maps userspace fills (`BLOCKED`, `QUARANTINE`, `IFACE_ROLES`,
//! `ALLOW_V4/V6`), the per-address policy bits in the watch maps, the decision
//! for one packet, and the TCP RST the XDP program sends in a blocked packet's
//! place. Pure code over [`Parsed`]: the kernel and the unit tests run the same.
//!
//! Userspace inserts, expires and evicts every entry; the program also checks each
//! entry's deadline, so an expired one is ignored before userspace removes it.

use crate::parse::{Parsed, TCP_ACK};

/// `HashMap<FlowKey, BlockEntry>`: flows blocked after a finding.
pub const BLOCKED: &str = "BLOCKED";
pub const DEFAULT_BLOCKED_ENTRIES: u32 = 16_384;
/// `Array<u64>` of `watch::BITMAP_WORDS`: one bit per [`flow_bucket`], set while
/// a flow of the bucket is in `BLOCKED`. The program reads one inlined word
/// before it pays for the hash lookup, so blocking costs packets it does not
/// block next to nothing.
pub const BLOCK_BITS: &str = "BLOCK_BITS";
/// `HashMap<QuarantineKey, BlockEntry>`: (client, service) pairs whose new
/// cleartext TCP flows are refused.
pub const QUARANTINE: &str = "QUARANTINE";
pub const DEFAULT_QUARANTINE_ENTRIES: u32 = 16_384;
/// `HashMap<u32, u32>`: ifindex → [`ROLE_LAN`] (absent: WAN).
pub const IFACE_ROLES: &str = "IFACE_ROLES";
pub const MAX_IFACES: u32 = 64;
/// `LpmTrie<[u8; 4], u8>` / `LpmTrie<[u8; 16], u8>`: client prefixes never blocked.
pub const ALLOW_V4: &str = "ALLOW_V4";
pub const ALLOW_V6: &str = "ALLOW_V6";
pub const DEFAULT_ALLOW_ENTRIES: u32 = 1024;

/// Interface roles: only clients on a LAN interface can be blocked.
pub const ROLE_WAN: u32 = 0;
pub const ROLE_LAN: u32 = 1;

/// The [`BLOCK_BITS`] bucket of a flow: the ports and the first and last 32
/// bits of both addresses, folded to 16 bits.
#[inline(always)]
pub fn flow_bucket(k: &crate::flow::FlowKey) -> u32 {
    // Native-endian words: no byte swaps; kernel and userspace share the host's order.
    let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let h = w(&k.addr_a, 0)
        ^ w(&k.addr_a, 12)
        ^ w(&k.addr_b, 0).rotate_left(8)
        ^ w(&k.addr_b, 12).rotate_left(16)
        ^ (((k.port_a as u32) << 16) | k.port_b as u32);
    (h ^ (h >> 16)) & 0xffff
}

/// A watch-map value: service id in the low 24 bits, policy bits above.
pub const SERVICE_MASK: u32 = 0x00ff_ffff;
pub const POLICY_SHIFT: u32 = 24;
/// Policy bits of a watched address (a watch value's top byte).
pub mod policy {
    /// A client's first payload on a new TCP flow that is not TLS is dropped and
    /// the flow reset (`block-cleartext`).
    pub const BLOCK_CLEARTEXT: u8 = 1 << 0;
    /// Decide as `BLOCK_CLEARTEXT` would, pass, and flag the record.
    pub const DRY_RUN: u8 = 1 << 1;
}

/// The watch-map value of `service` with `policy` bits.
#[inline(always)]
pub const fn watch_value(service: u32, policy: u8) -> u32 {
    (service & SERVICE_MASK) | ((policy as u32) << POLICY_SHIFT)
}

/// Service id and policy bits of a watch-map value.
#[inline(always)]
pub const fn split_watch_value(v: u32) -> (u32, u8) {
    (v & SERVICE_MASK, (v >> POLICY_SHIFT) as u8)
}

/// Why a flow is blocked ([`BlockEntry::reason`]).
pub mod reason {
    /// A finding of a trigger kind and severity on this flow.
    pub const FINDING: u8 = 1;
    /// A quarantined client opened a cleartext flow to the service.
    pub const QUARANTINE: u8 = 2;
    /// Cleartext to an address with the `block-cleartext` policy.
    pub const CLEARTEXT: u8 = 3;
}

/// A blocked flow's client packets get an RST in their place at most this
/// often; the rest are dropped. The first after the block gets one at once,
/// and a retransmission after a lost RST (TCP waits ≥ 200 ms) gets another, so
/// the app never hangs on a black hole; a flood gets ten a second.
pub const RST_INTERVAL_NS: u64 = 100_000_000;

/// Value of `BLOCKED` and `QUARANTINE`. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// 0: CLOCK_MONOTONIC ns after which the entry no longer applies (the
    /// program compares it with the coarse clock: up to a tick late).
    pub deadline_ns: u64,
    /// 8: when the program last sent an RST for the flow (0: never); written
    /// by the program.
    pub last_rst_ns: u64,
    /// 16: the service id, for counting.
    pub service: u32,
    /// 20: [`reason`].
    pub reason: u8,
    /// 21: direction index (0/1, relative to the flow key) the client sends in;
    /// unused in `QUARANTINE`.
    pub client_dir: u8,
    /// 22: zero.
    pub _pad: [u8; 2],
}

impl BlockEntry {
    pub const fn new(deadline_ns: u64, service: u32, reason: u8, client_dir: u8) -> Self {
        Self {
            deadline_ns,
            last_rst_ns: 0,
            service,
            reason,
            client_dir,
            _pad: [0; 2],
        }
    }
}

/// Key of `QUARANTINE`: a client address and a service. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuarantineKey {
    /// 0: network order; IPv4 in the first 4 bytes, rest 0.
    pub client: [u8; 16],
    /// 16: service id.
    pub service: u32,
    /// 20: `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// 21: zero.
    pub _pad: [u8; 3],
}

impl QuarantineKey {
    pub const fn zeroed() -> Self {
        Self {
            client: [0; 16],
            service: 0,
            family: 0,
            _pad: [0; 3],
        }
    }
}

/// IPv4 + TCP or IPv6 + TCP headers without options: the largest RST.
pub const RST_MAX: usize = 60;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
/// TTL / hop limit of the RST.
pub const RST_TTL: u8 = 64;

/// Writes into `out` the IP and TCP headers of the RST answering `p` (a client
/// packet): from its destination to its source, RST without ACK, sequence =
/// `p`'s acknowledgment number (RFC 5961: the exact next sequence number the
/// client expects), no options, checksums filled. Returns the bytes written
/// (40 for IPv4, 60 for IPv6), or `None` when `p` carries no ACK: there is no
/// sequence number the client would accept.
#[inline(always)]
pub fn rst_headers(p: &Parsed, out: &mut [u8; RST_MAX]) -> Option<usize> {
    if !p.is_tcp() || p.tcp_flags & TCP_ACK == 0 {
        return None;
    }
    let v4 = p.family == crate::flow::FAMILY_V4;
    let ip = if v4 { IPV4_HLEN } else { IPV6_HLEN };
    *out = [0; RST_MAX];
    let mut pseudo: u32 = 0;
    if v4 {
        out[0] = 0x45;
        // total length 40; id 0; DF.
        out[3] = (IPV4_HLEN + TCP_HLEN) as u8;
        out[6] = 0x40;
        out[8] = RST_TTL;
        out[9] = crate::flow::IPPROTO_TCP;
        let mut i = 0;
        while i < 4 {
            out[12 + i] = p.dst[i];
            out[16 + i] = p.src[i];
            i += 1;
        }
        let c = fold(sum_words::<IPV4_HLEN>(out, 0));
        out[10] = (c >> 8) as u8;
        out[11] = c as u8;
        pseudo += sum_words::<8>(out, 12);
    } else {
        out[0] = 0x60;
        out[5] = TCP_HLEN as u8;
        out[6] = crate::flow::IPPROTO_TCP;
        out[7] = RST_TTL;
        let mut i = 0;
        while i < 16 {
            out[8 + i] = p.dst[i];
            out[24 + i] = p.src[i];
            i += 1;
        }
        pseudo += sum_words::<32>(out, 8);
    }
    pseudo += crate::flow::IPPROTO_TCP as u32 + TCP_HLEN as u32;
    let t = ip;
    let [s0, s1] = p.dport.to_be_bytes();
    let [d0, d1] = p.sport.to_be_bytes();
    let seq = p.tcp_ack.to_be_bytes();
    out[t] = s0;
    out[t + 1] = s1;
    out[t + 2] = d0;
    out[t + 3] = d1;
    out[t + 4] = seq[0];
    out[t + 5] = seq[1];
    out[t + 6] = seq[2];
    out[t + 7] = seq[3];
    out[t + 12] = ((TCP_HLEN / 4) as u8) << 4;
    out[t + 13] = crate::parse::TCP_RST;
    let c = fold(pseudo + sum_words::<TCP_HLEN>(out, t));
    out[t + 16] = (c >> 8) as u8;
    out[t + 17] = c as u8;
    Some(ip + TCP_HLEN)
}

/// Sum of the `N / 2` big-endian 16-bit words of `b` from `off`. Bounded loop,
/// indices checked against the fixed array (never out of range for the callers'
/// constant offsets).
#[inline(always)]
fn sum_words<const N: usize>(b: &[u8; RST_MAX], off: usize) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i < N {
        let j = off + i;
        if j + 1 < RST_MAX {
            s += u16::from_be_bytes([b[j], b[j + 1]]) as u32;
        }
        i += 2;
    }
    s
}

/// RFC 1071: fold the carries and complement.
#[inline(always)]
const fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP},
        parse::TCP_SYN,
    };

    fn pkt(family: u8) -> Parsed {
        let mut p = Parsed::zeroed();
        p.family = family;
        p.proto = IPPROTO_TCP;
        if family == FAMILY_V4 {
            p.src[..4].copy_from_slice(&[192, 0, 2, 10]);
            p.dst[..4].copy_from_slice(&[198, 51, 100, 2]);
        } else {
            p.src = [0x20, 1, 0xd, 0xb8, 0, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
            p.dst = [0x20, 1, 0xd, 0xb8, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        }
        p.sport = 40000;
        p.dport = 80;
        p.tcp_seq = 1000;
        p.tcp_ack = 0xdead_beef;
        p.tcp_flags = TCP_ACK | 0x08;
        p
    }

    /// Checksum verification the other way round: summing a correct header with
    /// its checksum gives 0xffff.
    fn verify(words: &[u8]) -> bool {
        let mut s: u32 = words
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s == 0xffff
    }

    #[test]
    fn ipv4_rst() {
        let mut out = [0xaa; RST_MAX];
        let n = rst_headers(&pkt(FAMILY_V4), &mut out).unwrap();
        assert_eq!(n, 40);
        assert!(verify(&out[..20]), "IPv4 header checksum");
        assert_eq!(&out[12..16], &[198, 51, 100, 2]);
        assert_eq!(&out[16..20], &[192, 0, 2, 10]);
        let t = &out[20..40];
        assert_eq!(u16::from_be_bytes([t[0], t[1]]), 80);
        assert_eq!(u16::from_be_bytes([t[2], t[3]]), 40000);
        assert_eq!(u32::from_be_bytes([t[4], t[5], t[6], t[7]]), 0xdead_beef);
        assert_eq!(&t[8..12], &[0; 4], "no acknowledgment number");
        assert_eq!((t[12], t[13]), (0x50, 0x04), "5 words, RST only");
        let mut pseudo = [0u8; 32];
        pseudo[..8].copy_from_slice(&out[12..20]);
        pseudo[8..12].copy_from_slice(&[0, 6, 0, 20]);
        pseudo[12..].copy_from_slice(t);
        assert!(verify(&pseudo), "TCP checksum");
    }

    #[test]
    fn ipv6_rst() {
        let mut out = [0; RST_MAX];
        let p = pkt(FAMILY_V6);
        assert_eq!(rst_headers(&p, &mut out), Some(60));
        assert_eq!(out[0] >> 4, 6);
        assert_eq!((out[4], out[5], out[6], out[7]), (0, 20, 6, 64));
        assert_eq!(&out[8..24], &p.dst);
        assert_eq!(&out[24..40], &p.src);
        let mut pseudo = [0u8; 60];
        pseudo[..32].copy_from_slice(&out[8..40]);
        pseudo[32..40].copy_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        pseudo[40..].copy_from_slice(&out[40..60]);
        assert!(verify(&pseudo), "TCP checksum");
    }

    #[test]
    fn no_rst_without_an_acknowledgment() {
        let mut p = pkt(FAMILY_V4);
        p.tcp_flags = TCP_SYN;
        assert_eq!(rst_headers(&p, &mut [0; RST_MAX]), None);
    }

    #[test]
    fn watch_values() {
        let v = watch_value(7, policy::BLOCK_CLEARTEXT);
        assert_eq!(split_watch_value(v), (7, policy::BLOCK_CLEARTEXT));
        assert_eq!(split_watch_value(9), (9, 0));
        assert_eq!(core::mem::size_of::<BlockEntry>(), 24);
        assert_eq!(core::mem::size_of::<QuarantineKey>(), 24);
    }
}
