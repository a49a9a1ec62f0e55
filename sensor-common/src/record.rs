//! Ring-buffer records: a fixed [`RecordHeader`] followed by `cap_len` bytes of
//! the frame, starting at its Ethernet header.

use crate::{flow::FlowKey, parse::Parsed};

/// Record format version; bump on any layout or meaning change.
pub const RECORD_VERSION: u8 = 1;

/// Most frame bytes copied into one record. A power of two: the XDP program clamps
/// copy lengths with `((n - 1) & (SNAPLEN - 1)) + 1`, which the verifier can bound.
/// 2048 covers a full 1500-byte MTU frame with two VLAN tags.
pub const SNAPLEN: usize = 2048;
const _: () = assert!(SNAPLEN.is_power_of_two());

/// Frame bytes reserved in a record for frames of at most this length; longer
/// frames get `SNAPLEN`. The XDP program reserves ring space in these constant
/// sizes (the verifier needs constants), so small packets (DNS answers, SYNs with
/// options) do not occupy a full-size slot. Bytes after `cap_len` are padding with
/// no meaning.
pub const SMALL_SNAPLEN: usize = 256;
const _: () = assert!(SMALL_SNAPLEN.is_power_of_two() && SMALL_SNAPLEN < SNAPLEN);

/// How often the ring reader looks for records no wake-up announced
/// ([`wakes_reader`]): the most such a record waits.
pub const RING_POLL_MS: i32 = 1;

/// Bytes waiting in the ring past which every record wakes the reader.
pub const WAKE_PENDING_BYTES: u64 = 64 * 1024;

/// Whether submitting a record should wake a ring reader that has caught up.
/// A wake-up per record costs the producer an irq_work and the reader a
/// context switch each (docs/performance.md); bulk records (samples and
/// metadata past a direction's first payload) wait for the reader's
/// [`RING_POLL_MS`] poll instead, unless `pending()` (bytes not yet read)
/// passed [`WAKE_PENDING_BYTES`]. What a decision waits for wakes at once: DNS
/// answers and probes (what becomes watched or followed), a direction's first
/// payload (where credentials are), a refusal.
#[inline(always)]
pub fn wakes_reader(kind: RecordKind, flags: u16, pending: impl FnOnce() -> u64) -> bool {
    matches!(kind, RecordKind::Dns | RecordKind::Probe)
        || flags & (flags::FIRST_PAYLOAD | flags::BLOCKED | flags::WOULD_BLOCK) != 0
        || pending() >= WAKE_PENDING_BYTES
}

/// Why a record was handed to userspace.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A packet of a watched flow, within the sampling policy, with frame bytes.
    Sample = 1,
    /// Header only (`cap_len == 0`): a watched flow's SYN/FIN/RST without sampled
    /// payload, or a TLS flow's 1-in-K metadata after its handshake.
    Meta = 2,
    /// A DNS answer (UDP or TCP from port 53), whatever the address.
    Dns = 3,
    /// The first client payload of a new TCP flow to a probe port whose address is
    /// not yet watched, so userspace can attribute it by SNI or Host.
    Probe = 4,
}

impl RecordKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Sample),
            2 => Some(Self::Meta),
            3 => Some(Self::Dns),
            4 => Some(Self::Probe),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Meta => "meta",
            Self::Dns => "dns",
            Self::Probe => "probe",
        }
    }
}

/// Bits of [`RecordHeader::flags`].
pub mod flags {
    /// The frame was longer than `SNAPLEN`; only the first `cap_len` bytes follow.
    pub const TRUNCATED: u16 = 1 << 0;
    /// The flow's first client payload was a TLS record.
    pub const TLS: u16 = 1 << 1;
    /// The packet travels from the flow's client to its server.
    pub const FROM_CLIENT: u16 = 1 << 2;
    /// The first payload packet seen in this direction of the flow.
    pub const FIRST_PAYLOAD: u16 = 1 << 3;
    /// Sampled by the 1-in-K rule after the head budget was spent.
    pub const TAIL: u16 = 1 << 4;
    /// First fragment of a fragmented IP datagram: the L4 payload is incomplete.
    pub const IP_FRAGMENT: u16 = 1 << 5;
    /// The frame carried at least one VLAN tag.
    pub const VLAN: u16 = 1 << 6;
    /// The packet was dropped by a blocking policy after it was sampled (its
    /// findings carry `"blocked":true`).
    pub const BLOCKED: u16 = 1 << 7;
    /// A `dry-run` policy would have dropped the packet; it passed.
    pub const WOULD_BLOCK: u16 = 1 << 8;
    /// A followed flow (`flow_flags::FOLLOWED`): an app's flow to a third-party
    /// host, under the app's service id.
    pub const FOLLOWED: u16 = 1 << 9;
}

/// Header of every ring-buffer record. Offsets in bytes; all integers in host order
/// except addresses inside [`FlowKey`] (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// 0: [`RECORD_VERSION`].
    pub version: u8,
    /// 1: [`RecordKind`] as u8.
    pub kind: u8,
    /// 2: [`flags`] bits.
    pub flags: u16,
    /// 4: ingress interface index.
    pub ifindex: u32,
    /// 8: `bpf_ktime_get_ns()` (CLOCK_MONOTONIC, ns) when the packet was seen;
    /// [`UNSTAMPED`] from the kernel for DNS answers, which the reader stamps.
    pub ts_ns: u64,
    /// 16: direction-normalised flow key (40 bytes).
    pub flow: FlowKey,
    /// 56: service id of the watched address (0: none, e.g. DNS and probe records).
    pub service: u32,
    /// 60: 0 when the packet goes from `flow.addr_a` to `flow.addr_b`, 1 otherwise.
    pub direction: u8,
    /// 61: TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10); 0 for UDP.
    pub tcp_flags: u8,
    /// 62: offset of the IP header in the frame bytes.
    pub l3_off: u16,
    /// 64: offset of the TCP/UDP header.
    pub l4_off: u16,
    /// 66: offset of the L4 payload.
    pub payload_off: u16,
    /// 68: TCP sequence number (0 for UDP).
    pub tcp_seq: u32,
    /// 72: TCP acknowledgement number (0 for UDP).
    pub tcp_ack: u32,
    /// 76: whole frame length, all XDP fragments included.
    pub pkt_len: u32,
    /// 80: frame bytes that follow this header (0 for [`RecordKind::Meta`]).
    pub cap_len: u32,
    /// 84: L4 payload length according to the IP and L4 headers.
    pub payload_len: u32,
    /// 88: L3 bytes seen in this direction of the flow, this packet included
    /// (watched flows only, else 0).
    pub dir_bytes: u64,
    /// 96: packets seen in this direction of the flow, this packet included.
    pub dir_pkts: u64,
}

/// [`RecordHeader::ts_ns`] of a record the program did not stamp: a DNS
/// answer, which only teaches addresses and TTLs. Reading a clock is a helper
/// call (the DNS path 118 → 103 ns without it, docs/performance.md); the ring
/// reader stamps the record when it reads it and hands it on before anything
/// it holds, as an answer precedes the flows it announces.
pub const UNSTAMPED: u64 = 0;

/// Size of [`RecordHeader`]; frame bytes start at this offset in a record.
pub const HEADER_LEN: usize = core::mem::size_of::<RecordHeader>();

impl RecordHeader {
    /// A SYN without ACK: on a known flow, a new connection on its ports
    /// (`policy::restart`).
    pub fn is_bare_syn(&self) -> bool {
        crate::admit::bare_syn(self.flow.proto, self.tcp_flags)
    }

    pub const fn zeroed() -> Self {
        Self {
            version: 0,
            kind: 0,
            flags: 0,
            ifindex: 0,
            ts_ns: 0,
            flow: FlowKey::zeroed(),
            service: 0,
            direction: 0,
            tcp_flags: 0,
            l3_off: 0,
            l4_off: 0,
            payload_off: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            pkt_len: 0,
            cap_len: 0,
            payload_len: 0,
            dir_bytes: 0,
            dir_pkts: 0,
        }
    }

    /// The header the XDP program writes (sensor-ebpf's `emit_n`) for a frame
    /// of `len` bytes parsed as `p`: VLAN and fragment flags from the parse,
    /// frame bytes capped at [`SNAPLEN`] (none for `Meta`), `TRUNCATED` when
    /// capped. Interface, time, service and the direction's counts are the
    /// caller's to fill. For userspace records (replay's sampler, fuzz seeds).
    pub fn of_packet(
        kind: RecordKind,
        mut rflags: u16,
        p: &Parsed,
        key: &FlowKey,
        dir: u8,
        len: usize,
    ) -> Self {
        if p.vlan {
            rflags |= flags::VLAN;
        }
        if p.first_fragment {
            rflags |= flags::IP_FRAGMENT;
        }
        let cap = if kind == RecordKind::Meta {
            0
        } else {
            len.min(SNAPLEN)
        };
        if kind != RecordKind::Meta && cap < len {
            rflags |= flags::TRUNCATED;
        }
        let mut h = Self::zeroed();
        h.version = RECORD_VERSION;
        h.kind = kind as u8;
        h.flags = rflags;
        h.flow = *key;
        h.direction = dir;
        h.tcp_flags = p.tcp_flags;
        h.l3_off = p.l3_off;
        h.l4_off = p.l4_off;
        h.payload_off = p.payload_off;
        h.tcp_seq = p.tcp_seq;
        h.tcp_ack = p.tcp_ack;
        h.pkt_len = len as u32;
        h.cap_len = cap as u32;
        h.payload_len = p.payload_len;
        h
    }

    /// Reads a header from the start of `bytes` (no alignment needed).
    pub fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_LEN {
            return None;
        }
        // SAFETY: length checked; RecordHeader is plain old data, every bit pattern valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The header's bytes, e.g. for building records in userspace.
    pub fn as_bytes(&self) -> &[u8; HEADER_LEN] {
        // SAFETY: repr(C) with no padding (asserted in tests), so every byte is initialised.
        unsafe { &*core::ptr::from_ref::<Self>(self).cast::<[u8; HEADER_LEN]>() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn header_layout_is_versioned() {
        assert_eq!(size_of::<RecordHeader>(), 104);
        assert_eq!(offset_of!(RecordHeader, ifindex), 4);
        assert_eq!(offset_of!(RecordHeader, ts_ns), 8);
        assert_eq!(offset_of!(RecordHeader, flow), 16);
        assert_eq!(offset_of!(RecordHeader, service), 56);
        assert_eq!(offset_of!(RecordHeader, direction), 60);
        assert_eq!(offset_of!(RecordHeader, tcp_flags), 61);
        assert_eq!(offset_of!(RecordHeader, l3_off), 62);
        assert_eq!(offset_of!(RecordHeader, payload_off), 66);
        assert_eq!(offset_of!(RecordHeader, tcp_seq), 68);
        assert_eq!(offset_of!(RecordHeader, pkt_len), 76);
        assert_eq!(offset_of!(RecordHeader, cap_len), 80);
        assert_eq!(offset_of!(RecordHeader, payload_len), 84);
        assert_eq!(offset_of!(RecordHeader, dir_bytes), 88);
        assert_eq!(offset_of!(RecordHeader, dir_pkts), 96);
        // 8-byte multiple: ring-buffer records and the scratch slot stay aligned.
        assert_eq!(HEADER_LEN % 8, 0);
    }

    #[test]
    fn header_round_trips_through_bytes() {
        let mut h = RecordHeader::zeroed();
        h.version = RECORD_VERSION;
        h.kind = RecordKind::Dns as u8;
        h.cap_len = 77;
        h.dir_pkts = 3;
        let bytes = *h.as_bytes();
        assert_eq!(RecordHeader::read_from(&bytes), Some(h));
        assert_eq!(RecordHeader::read_from(&bytes[..10]), None);
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            RecordKind::Sample,
            RecordKind::Meta,
            RecordKind::Dns,
            RecordKind::Probe,
        ] {
            assert_eq!(RecordKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(RecordKind::from_u8(0), None);
    }

    #[test]
    fn only_bulk_records_skip_the_wake_up() {
        let idle = || 0;
        assert!(wakes_reader(RecordKind::Dns, 0, idle));
        assert!(wakes_reader(RecordKind::Probe, 0, idle));
        assert!(wakes_reader(RecordKind::Sample, flags::FIRST_PAYLOAD, idle));
        assert!(wakes_reader(RecordKind::Sample, flags::BLOCKED, idle));
        assert!(!wakes_reader(RecordKind::Sample, flags::FROM_CLIENT, idle));
        assert!(!wakes_reader(
            RecordKind::Meta,
            flags::TLS | flags::TAIL,
            idle
        ));
        assert!(wakes_reader(RecordKind::Meta, 0, || WAKE_PENDING_BYTES));
    }
}
