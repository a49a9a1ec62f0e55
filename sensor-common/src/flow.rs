//! Flow identity and the per-flow state the XDP program keeps.

/// IP protocol numbers the sensor tracks.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Address family tags in [`FlowKey::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Direction-normalised 5-tuple: `(addr_a, port_a) <= (addr_b, port_b)` compared
/// lexicographically (address bytes in network order, then port), so both
/// directions of a flow share one key. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// 0: lower endpoint's address, network order; IPv4 uses the first 4 bytes, rest 0.
    pub addr_a: [u8; 16],
    /// 16: higher endpoint's address.
    pub addr_b: [u8; 16],
    /// 32: lower endpoint's port (host order).
    pub port_a: u16,
    /// 34: higher endpoint's port.
    pub port_b: u16,
    /// 36: IP protocol ([`IPPROTO_TCP`] or [`IPPROTO_UDP`]).
    pub proto: u8,
    /// 37: [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// 38: zero; keeps hash keys fully initialised.
    pub _pad: [u8; 2],
}

/// Direction of a packet relative to its [`FlowKey`]: from `a` to `b`.
pub const DIR_A_TO_B: u8 = 0;
/// From `b` to `a`.
pub const DIR_B_TO_A: u8 = 1;

#[inline(always)]
fn be64(a: &[u8; 16], hi: bool) -> u64 {
    // Constant indices into a fixed array: no bounds check, nothing for the verifier.
    if hi {
        u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]])
    } else {
        u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]])
    }
}

/// `(x, px) <= (y, py)` in the order [`FlowKey`] uses.
#[inline(always)]
fn endpoint_le(x: &[u8; 16], px: u16, y: &[u8; 16], py: u16) -> bool {
    let (xh, yh) = (be64(x, true), be64(y, true));
    if xh != yh {
        return xh < yh;
    }
    let (xl, yl) = (be64(x, false), be64(y, false));
    if xl != yl {
        return xl < yl;
    }
    px <= py
}

impl FlowKey {
    pub const fn zeroed() -> Self {
        Self {
            addr_a: [0; 16],
            addr_b: [0; 16],
            port_a: 0,
            port_b: 0,
            proto: 0,
            family: 0,
            _pad: [0; 2],
        }
    }

    /// The key of the flow a packet `src:sport -> dst:dport` belongs to, and the
    /// packet's direction ([`DIR_A_TO_B`] or [`DIR_B_TO_A`]).
    pub fn from_packet(
        family: u8,
        proto: u8,
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
    ) -> (Self, u8) {
        let mut k = Self::zeroed();
        let dir = k.set_from_packet(family, proto, src, sport, dst, dport);
        (k, dir)
    }

    /// [`FlowKey::from_packet`] in place (the kernel builds keys in map memory).
    #[inline(always)]
    pub fn set_from_packet(
        &mut self,
        family: u8,
        proto: u8,
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
    ) -> u8 {
        self.proto = proto;
        self.family = family;
        self._pad = [0; 2];
        if endpoint_le(src, sport, dst, dport) {
            self.addr_a = *src;
            self.port_a = sport;
            self.addr_b = *dst;
            self.port_b = dport;
            DIR_A_TO_B
        } else {
            self.addr_a = *dst;
            self.port_a = dport;
            self.addr_b = *src;
            self.port_b = sport;
            DIR_B_TO_A
        }
    }

    /// Source endpoint of a packet travelling in `direction`.
    pub fn src(&self, direction: u8) -> (&[u8; 16], u16) {
        if direction == DIR_A_TO_B {
            (&self.addr_a, self.port_a)
        } else {
            (&self.addr_b, self.port_b)
        }
    }

    /// Destination endpoint of a packet travelling in `direction`.
    pub fn dst(&self, direction: u8) -> (&[u8; 16], u16) {
        self.src(direction ^ 1)
    }
}

/// Bits of [`FlowState::flags`].
pub mod flow_flags {
    /// The client's first payload was a TLS record: later payload is metadata only.
    pub const TLS: u8 = 1 << 0;
    /// A payload packet was seen from `a` to `b`.
    pub const PAYLOAD_SEEN_A: u8 = 1 << 1;
    /// A payload packet was seen from `b` to `a`.
    pub const PAYLOAD_SEEN_B: u8 = 1 << 2;
    /// The client's first payload was refused (cleartext policy or quarantine):
    /// its later packets on this flow are dropped.
    pub const REFUSED: u8 = 1 << 3;
    /// The flow was first seen at its handshake (SYN or SYN+ACK, not mid-stream):
    /// its first payload is the real one, and a cleartext refusal may act on it.
    pub const OPENED: u8 = 1 << 4;
    /// Userspace inserted the flow: an app's flow to an address nobody watches
    /// (`follow_apps`). Never refused or blocked: its address is not watched.
    pub const FOLLOWED: u8 = 1 << 5;
}

/// Value of the `FLOWS` LRU map. Counters are indexed by direction (0: a→b).
///
/// Updates are plain stores, not atomics: RSS steers one direction of a flow to one
/// receive queue, hence one CPU, and each direction owns its own counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// 0: L3 bytes per direction.
    pub bytes: [u64; 2],
    /// 16: packets per direction.
    pub pkts: [u64; 2],
    /// 32: payload bytes already handed to userspace in the head sample, per direction.
    pub sampled: [u32; 2],
    /// 40: head budget per direction, fixed at the direction's first payload: the
    /// configured head size, or for TLS flows the first TLS record (the hello).
    pub budget: [u32; 2],
    /// 48: first packet time (ns, CLOCK_MONOTONIC).
    pub first_ns: u64,
    /// 56: when a packet of the flow was last sampled (its record's time,
    /// read once the record's slot is reserved: not moved when the ring had
    /// no room); the first packet's until then. Not every packet's: a packet
    /// that is only counted reads no clock (docs/performance.md).
    pub last_ns: u64,
    /// 64: service id of the watched endpoint.
    pub service: u32,
    /// 68: direction index (0/1) in which the client sends.
    pub client_dir: u8,
    /// 69: [`flow_flags`] bits.
    pub flags: u8,
    /// 70: policy bits of the watched address (`block::policy`).
    pub policy: u8,
    /// 71: zero.
    pub _pad: u8,
    /// 72: which connection on this tuple the state counts: the kernel sets
    /// it to its epoch group's `HOT_EPOCHS` counter (`hot::epoch_slot`) when
    /// the flow starts ([`UNNUMBERED`] until its first packet's full path)
    /// and after a bare SYN starts it over (the counter bumped), so counts a
    /// `HOT` slot absorbed for an older connection, on any CPU, are told
    /// apart and dropped (`hot::around_decision`, docs/data-plane.md).
    /// Userspace leaves it 0.
    pub conn: u32,
    /// 76: zero.
    pub _pad2: u32,
}

/// [`FlowState::conn`] of a flow the kernel created but has not numbered yet
/// (its first packet's full path does).
pub const UNNUMBERED: u32 = u32::MAX;

impl FlowState {
    pub const fn new(service: u32, client_dir: u8, now_ns: u64) -> Self {
        Self {
            bytes: [0; 2],
            pkts: [0; 2],
            sampled: [0; 2],
            budget: [0; 2],
            first_ns: now_ns,
            last_ns: now_ns,
            service,
            client_dir,
            flags: 0,
            policy: 0,
            _pad: 0,
            conn: 0,
            _pad2: 0,
        }
    }

    /// Adds (bytes, packets) a `HOT` slot absorbed to direction `dir`.
    #[inline(always)]
    pub fn add_counts(&mut self, dir: u8, (bytes, pkts): (u64, u64)) {
        // Constant indices: no bounds-check branch that could reach a panic.
        if dir == 0 {
            self.bytes[0] += bytes;
            self.pkts[0] += pkts;
        } else {
            self.bytes[1] += bytes;
            self.pkts[1] += pkts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut o = [0; 16];
        o[..4].copy_from_slice(&a);
        o
    }

    #[test]
    fn layout() {
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(offset_of!(FlowKey, port_a), 32);
        assert_eq!(offset_of!(FlowKey, proto), 36);
        assert_eq!(size_of::<FlowState>(), 80);
        assert_eq!(offset_of!(FlowState, conn), 72);
        assert_eq!(offset_of!(FlowState, first_ns), 48);
        assert_eq!(offset_of!(FlowState, service), 64);
        assert_eq!(offset_of!(FlowState, flags), 69);
    }

    #[test]
    fn both_directions_share_a_key() {
        let c = v4([192, 0, 2, 1]);
        let s = v4([198, 51, 100, 7]);
        let (k1, d1) = FlowKey::from_packet(FAMILY_V4, IPPROTO_TCP, &c, 40000, &s, 80);
        let (k2, d2) = FlowKey::from_packet(FAMILY_V4, IPPROTO_TCP, &s, 80, &c, 40000);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert_eq!(k1.src(d1), (&c, 40000));
        assert_eq!(k1.dst(d1), (&s, 80));
        assert_eq!(k2.src(d2), (&s, 80));
    }

    #[test]
    fn same_address_orders_by_port() {
        let a = v4([203, 0, 113, 9]);
        let (k, d) = FlowKey::from_packet(FAMILY_V4, IPPROTO_UDP, &a, 5353, &a, 53);
        assert_eq!((k.port_a, k.port_b, d), (53, 5353, DIR_B_TO_A));
    }

    #[test]
    fn ipv6_orders_on_low_half_too() {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut y = x;
        x[15] = 2;
        y[15] = 1;
        let (k, d) = FlowKey::from_packet(FAMILY_V6, IPPROTO_TCP, &x, 1, &y, 2);
        assert_eq!(k.addr_a, y);
        assert_eq!(d, DIR_B_TO_A);
    }
}
