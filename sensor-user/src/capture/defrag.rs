//! Replay only: the outer fragments of tunnelled packets (GRE over IPv4 or
//! IPv6, as a router's mirror or a switch's ERSPAN session sends them when
//! the copy outgrows the MTU) are put back together, so the inner packet is
//! parsed whole. The kernel holds no fragments: it counts them
//! (`tunnel_fragment`, `ipv4_fragment`, `ipv6_fragment`), so live and replay
//! differ here on purpose (docs/data-plane.md, "Tunnels"). Other fragments
//! pass untouched, as in the kernel.
//!
//! Bounded: at most [`MAX_DATAGRAMS`] datagrams in reassembly, each at most
//! 64 KiB, forgotten [`MAX_AGE_NS`] of capture time after their last
//! fragment; what is forgotten is counted (`replay_fragments` evictions, and
//! the replay summary).

use std::collections::BTreeMap;

use sensor_common::{
    parse::{ETH_P_IPV4, ETH_P_IPV6, network},
    tunnel::IPPROTO_GRE,
};

use crate::shared::table::{Evictions, FlowTable};

pub const MAX_DATAGRAMS: usize = 1024;
pub const MAX_AGE_NS: u64 = 30_000_000_000;
const MAX_DATAGRAM: usize = 65_535;
const IPV6_FRAGMENT: u8 = 44;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    v6: bool,
}

#[derive(Default)]
struct Partial {
    /// The frame up to the end of the first fragment's IP header (IPv6:
    /// without its fragment header), and where its IP header starts.
    head: Option<(Vec<u8>, usize)>,
    /// Fragment data by offset.
    parts: BTreeMap<usize, Vec<u8>>,
    /// The payload's length, once the last fragment was seen.
    total: Option<usize>,
}

/// What the replay summary says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DefragStats {
    pub fragments: u64,
    pub reassembled: u64,
    /// Datagrams given up: too big, or never completed (also counted as
    /// evictions of `replay_fragments`).
    pub dropped: u64,
}

/// A frame after reassembly.
pub enum Defragged<'a> {
    /// Not a fragment of a tunnel: as it came.
    Frame(&'a [u8]),
    /// A fragment kept until its datagram is whole.
    Held,
    /// The last missing fragment: the whole datagram, as one frame.
    Whole(Vec<u8>),
}

pub struct Defrag {
    table: FlowTable<Key, Partial, u64>,
    pub stats: DefragStats,
}

impl Default for Defrag {
    fn default() -> Self {
        Self {
            table: FlowTable::new("replay_fragments", MAX_DATAGRAMS),
            stats: DefragStats::default(),
        }
    }
}

/// One fragment of a GRE datagram.
struct Frag<'a> {
    key: Key,
    offset: usize,
    more: bool,
    data: &'a [u8],
    /// The frame's bytes before the payload (IPv6: before the fragment
    /// header), and where the IP header starts in them; copied from the
    /// first fragment only.
    head: &'a [u8],
    l3: usize,
}

impl Frag<'_> {
    /// The head of the whole datagram: no fragment fields (IPv4), the
    /// fragment header's next header in its place (IPv6).
    fn whole_head(&self) -> Vec<u8> {
        let mut h = self.head.to_vec();
        if self.key.v6 {
            h[self.l3 + 6] = IPPROTO_GRE;
        } else {
            h[self.l3 + 6] = 0;
            h[self.l3 + 7] = 0;
        }
        h
    }
}

fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

fn fragment(frame: &[u8]) -> Option<Frag<'_>> {
    let (ethertype, l3) = network(frame).ok()?;
    match ethertype {
        ETH_P_IPV4 => {
            let h = frame.get(l3..l3 + 20)?;
            let (ihl, total, field) =
                (usize::from(h[0] & 0x0f) * 4, be16(&h[2..4]), be16(&h[6..8]));
            let (more, offset) = (field & 0x2000 != 0, (field & 0x1fff) * 8);
            if (!more && offset == 0) || h[9] != IPPROTO_GRE || ihl < 20 || total < ihl {
                return None;
            }
            let mut key = Key {
                src: [0; 16],
                dst: [0; 16],
                id: be16(&h[4..6]) as u32,
                v6: false,
            };
            key.src[..4].copy_from_slice(&h[12..16]);
            key.dst[..4].copy_from_slice(&h[16..20]);
            Some(Frag {
                key,
                offset,
                more,
                data: frame.get(l3 + ihl..l3 + total)?,
                head: frame.get(..l3 + ihl)?,
                l3,
            })
        }
        ETH_P_IPV6 => {
            let h = frame.get(l3..l3 + 48)?;
            // Only a fragment header right after the fixed header (what
            // tunnel endpoints send).
            if h[6] != IPV6_FRAGMENT || h[40] != IPPROTO_GRE {
                return None;
            }
            let field = be16(&h[42..44]);
            let plen = be16(&h[4..6]);
            let data = frame.get(l3 + 48..l3 + 40 + plen)?;
            Some(Frag {
                key: Key {
                    src: h[8..24].try_into().ok()?,
                    dst: h[24..40].try_into().ok()?,
                    id: u32::from_be_bytes(h[44..48].try_into().ok()?),
                    v6: true,
                },
                offset: field & 0xfff8,
                more: field & 1 != 0,
                data,
                head: frame.get(..l3 + 40)?,
                l3,
            })
        }
        _ => None,
    }
}

impl Defrag {
    pub fn evictions(&self) -> (&'static str, Evictions) {
        (self.table.name(), self.table.evictions())
    }

    /// The end of the capture: datagrams still incomplete are dropped.
    pub fn finish(&mut self) {
        while self.table.expire(u64::MAX).is_some() {
            self.stats.dropped += 1;
        }
    }

    /// One frame of the capture, at capture time `ts_ns`.
    pub fn push<'a>(&mut self, frame: &'a [u8], ts_ns: u64) -> Defragged<'a> {
        let Some(f) = fragment(frame) else {
            return Defragged::Frame(frame);
        };
        self.stats.fragments += 1;
        while self
            .table
            .expire(ts_ns.saturating_sub(MAX_AGE_NS))
            .is_some()
        {
            self.stats.dropped += 1;
        }
        if f.offset + f.data.len() > MAX_DATAGRAM {
            if self.table.remove(&f.key).is_some() {
                self.stats.dropped += 1;
            }
            return Defragged::Held;
        }
        if self.table.touch(&f.key, ts_ns).is_none()
            && self
                .table
                .insert(f.key, Partial::default(), ts_ns)
                .is_some()
        {
            self.stats.dropped += 1;
        }
        let Some(p) = self.table.get_mut(&f.key) else {
            return Defragged::Held;
        };
        // A repeated or overlapping piece keeps what came first.
        p.parts.entry(f.offset).or_insert_with(|| f.data.to_vec());
        if f.offset == 0 && p.head.is_none() {
            p.head = Some((f.whole_head(), f.l3));
        }
        if !f.more {
            p.total = Some(f.offset + f.data.len());
        }
        let (Some(total), Some(_)) = (p.total, p.head.as_ref()) else {
            return Defragged::Held;
        };
        let mut end = 0;
        for (&off, data) in &p.parts {
            if off > end {
                return Defragged::Held;
            }
            end = end.max(off + data.len());
        }
        if end < total {
            return Defragged::Held;
        }
        let Some(p) = self.table.remove(&f.key) else {
            return Defragged::Held;
        };
        self.stats.reassembled += 1;
        Defragged::Whole(whole(p, total, f.key.v6))
    }
}

/// The datagram as one frame: the first fragment's head with its lengths set
/// and no fragment fields, then the payload in order.
fn whole(p: Partial, total: usize, v6: bool) -> Vec<u8> {
    let (mut out, l3) = p.head.unwrap_or_default();
    let mut payload = Vec::with_capacity(total);
    for (off, data) in p.parts {
        if off + data.len() > payload.len() {
            let from = payload.len() - off.min(payload.len());
            payload.extend_from_slice(&data[from.min(data.len())..]);
        }
    }
    payload.truncate(total);
    if v6 {
        out[l3 + 4..l3 + 6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        // The IPv4 header ends the head.
        let len = (out.len() - l3 + payload.len()) as u16;
        out[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::parse::parse;

    /// An Ethernet/IPv4/TCP login to 192.168.69.2:80 inside ERSPAN type I.
    fn inner() -> Vec<u8> {
        crate::fixtures::FrameBuilder::tcp("192.168.69.10", 49152, "192.168.69.2", 80)
            .payload(vec![b'a'; 1800])
            .build()
    }

    /// `payload` (GRE and what it carries) cut into IPv4 fragments of at most
    /// `mtu` payload bytes (a multiple of 8).
    fn fragments_v4(payload: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        payload
            .chunks(mtu)
            .enumerate()
            .map(|(i, c)| {
                let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
                let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 47, 0, 0];
                ip.extend_from_slice(&[10, 200, 0, 3, 10, 200, 0, 224]);
                ip[2..4].copy_from_slice(&((20 + c.len()) as u16).to_be_bytes());
                let more = (i + 1) * mtu < payload.len();
                let field = ((i * mtu / 8) as u16) | if more { 0x2000 } else { 0 };
                ip[6..8].copy_from_slice(&field.to_be_bytes());
                f.extend_from_slice(&ip);
                f.extend_from_slice(c);
                f
            })
            .collect()
    }

    fn fragments_v6(payload: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        payload
            .chunks(mtu)
            .enumerate()
            .map(|(i, c)| {
                let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
                let mut ip = vec![0x60, 0, 0, 0, 0, 0, IPV6_FRAGMENT, 64];
                ip[4..6].copy_from_slice(&((8 + c.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
                ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
                let more = (i + 1) * mtu < payload.len();
                let field = ((i * mtu) as u16) | u16::from(more);
                ip.extend_from_slice(&[IPPROTO_GRE, 0]);
                ip.extend_from_slice(&field.to_be_bytes());
                ip.extend_from_slice(&[0, 0, 0x56, 0x78]);
                f.extend_from_slice(&ip);
                f.extend_from_slice(c);
                f
            })
            .collect()
    }

    fn erspan1() -> Vec<u8> {
        let mut g = vec![0, 0, 0x88, 0xbe];
        g.extend_from_slice(&inner());
        g
    }

    fn check_whole(w: &[u8]) {
        let p = parse(w).unwrap();
        assert_eq!(p.tunnel, sensor_common::tunnel::kind::ERSPAN);
        assert_eq!((p.sport, p.dport, p.payload_len), (49152, 80, 1800));
        assert_eq!(&w[p.payload_off as usize..], &[b'a'; 1800][..]);
    }

    #[test]
    fn outer_ipv4_and_ipv6_fragments_in_any_order_make_the_inner_packet() {
        for frags in [
            fragments_v4(&erspan1(), 1480),
            fragments_v6(&erspan1(), 1232),
        ] {
            // Each fragment alone: the kernel's view.
            assert!(parse(&frags[0][..]).is_err());
            for order in [[0, 1], [1, 0]] {
                let mut d = Defrag::default();
                assert!(matches!(d.push(&frags[order[0]], 1), Defragged::Held));
                let Defragged::Whole(w) = d.push(&frags[order[1]], 2) else {
                    panic!("the second fragment completes it");
                };
                check_whole(&w);
                assert_eq!(
                    d.stats,
                    DefragStats {
                        fragments: 2,
                        reassembled: 1,
                        dropped: 0
                    }
                );
            }
        }
    }

    #[test]
    fn other_frames_pass_and_incomplete_datagrams_are_bounded() {
        let mut d = Defrag::default();
        let plain = inner();
        assert!(matches!(d.push(&plain, 1), Defragged::Frame(f) if f == plain));
        // A fragment that never completes is forgotten after MAX_AGE_NS.
        let frags = fragments_v4(&erspan1(), 1480);
        assert!(matches!(d.push(&frags[0], 1), Defragged::Held));
        let mut other = fragments_v4(&erspan1(), 1480);
        other[0][18] = 0x99; // another datagram id
        assert!(matches!(
            d.push(&other[0], MAX_AGE_NS + 10),
            Defragged::Held
        ));
        assert_eq!(d.stats.dropped, 1);
        assert_eq!(d.evictions().1.idle, 1);
        // No more than MAX_DATAGRAMS in reassembly.
        for id in 0..MAX_DATAGRAMS as u16 + 5 {
            let mut f = frags[0].clone();
            f[18..20].copy_from_slice(&id.to_be_bytes());
            d.push(&f, MAX_AGE_NS + 20);
        }
        assert!(d.stats.dropped >= 5);
    }
}
