//! Decoding ring-buffer records into owned [`Record`]s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_common::{
    flow::{FAMILY_V4, FlowKey},
    parse::Parsed,
    record::{HEADER_LEN, RECORD_VERSION, RecordHeader, RecordKind, SNAPLEN},
};

/// What a record says about the flow besides the frame (see [`Record::build`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin {
    pub ifindex: u32,
    pub ts_ns: u64,
    pub service: u32,
    /// This direction's L3 bytes and packets so far.
    pub counts: (u64, u64),
}

/// Why a ring-buffer record was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    TooShort(usize),
    #[error("record format version {found}, this leakwatch reads version {RECORD_VERSION}")]
    Version { found: u8 },
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("record says {cap_len} frame bytes follow, {available} do (limit {SNAPLEN})")]
    CapLen { cap_len: u32, available: usize },
}

impl RecordError {
    /// Bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "too_short",
            Self::Version { .. } => "version",
            Self::Kind(_) => "kind",
            Self::CapLen { .. } => "cap_len",
        }
    }
}

/// One record: header plus the first `cap_len` bytes of the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub hdr: RecordHeader,
    pub kind: RecordKind,
    pub frame: Vec<u8>,
}

impl Record {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let hdr = RecordHeader::read_from(bytes).ok_or(RecordError::TooShort(bytes.len()))?;
        if hdr.version != RECORD_VERSION {
            return Err(RecordError::Version { found: hdr.version });
        }
        let kind = RecordKind::from_u8(hdr.kind).ok_or(RecordError::Kind(hdr.kind))?;
        let available = bytes.len() - HEADER_LEN;
        let cap = hdr.cap_len as usize;
        if cap > available || cap > SNAPLEN {
            return Err(RecordError::CapLen {
                cap_len: hdr.cap_len,
                available,
            });
        }
        Ok(Self {
            hdr,
            kind,
            frame: bytes[HEADER_LEN..HEADER_LEN + cap].to_vec(),
        })
    }

    /// The record the XDP program builds for `frame`
    /// ([`RecordHeader::of_packet`], with `o`'s interface, time, service and
    /// counts).
    pub fn build(
        kind: RecordKind,
        rflags: u16,
        p: &Parsed,
        key: &FlowKey,
        dir: u8,
        frame: &[u8],
        o: Origin,
    ) -> Self {
        let mut h = RecordHeader::of_packet(kind, rflags, p, key, dir, frame.len());
        h.ifindex = o.ifindex;
        h.ts_ns = o.ts_ns;
        h.service = o.service;
        h.dir_bytes = o.counts.0;
        h.dir_pkts = o.counts.1;
        Self {
            frame: frame[..h.cap_len as usize].to_vec(),
            hdr: h,
            kind,
        }
    }

    /// Whether a decision waits for this record (a direction's first
    /// payload, DNS, a probe, a refusal): what the program wakes the reader
    /// for, and what the reader and the pipeline pass on without waiting for
    /// a batch to fill.
    pub fn urgent(&self) -> bool {
        sensor_common::record::wakes_reader(self.kind, self.hdr.flags, || 0)
    }

    /// The captured part of the L4 payload.
    pub fn payload(&self) -> &[u8] {
        let start = (self.hdr.payload_off as usize).min(self.frame.len());
        let end = start
            .saturating_add(self.hdr.payload_len as usize)
            .min(self.frame.len());
        &self.frame[start..end]
    }

    /// Source address and port of the packet.
    pub fn src(&self) -> (IpAddr, u16) {
        let (a, p) = self.hdr.flow.src(self.hdr.direction);
        (addr(&self.hdr.flow, a), p)
    }

    /// Destination address and port of the packet.
    pub fn dst(&self) -> (IpAddr, u16) {
        let (a, p) = self.hdr.flow.dst(self.hdr.direction);
        (addr(&self.hdr.flow, a), p)
    }
}

fn addr(key: &FlowKey, a: &[u8; 16]) -> IpAddr {
    if key.family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::flow::IPPROTO_TCP;

    fn record(kind: u8, cap: u32, extra: usize) -> Vec<u8> {
        let mut h = RecordHeader::zeroed();
        h.version = RECORD_VERSION;
        h.kind = kind;
        h.cap_len = cap;
        h.payload_off = 2;
        h.payload_len = 3;
        let mut v = h.as_bytes().to_vec();
        v.extend((0..extra).map(|i| i as u8));
        v
    }

    #[test]
    fn decodes_and_slices_payload() {
        let r = Record::decode(&record(RecordKind::Sample as u8, 4, 4)).unwrap();
        assert_eq!(r.kind, RecordKind::Sample);
        assert_eq!(r.frame, [0, 1, 2, 3]);
        // payload_len 3 from offset 2, but only 2 bytes were captured
        assert_eq!(r.payload(), &[2, 3]);
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(Record::decode(&[0; 10]), Err(RecordError::TooShort(10)));
        let mut v = record(1, 0, 0);
        v[0] = 9;
        assert_eq!(Record::decode(&v), Err(RecordError::Version { found: 9 }));
        assert_eq!(
            Record::decode(&record(77, 0, 0)),
            Err(RecordError::Kind(77))
        );
        assert_eq!(
            Record::decode(&record(1, 8, 4)),
            Err(RecordError::CapLen {
                cap_len: 8,
                available: 4
            })
        );
    }

    #[test]
    fn endpoints_follow_direction() {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[198, 51, 100, 9]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[192, 0, 2, 1]);
        let (key, dir) = FlowKey::from_packet(FAMILY_V4, IPPROTO_TCP, &src, 80, &dst, 5555);
        let mut v = record(1, 0, 0);
        let mut h = RecordHeader::read_from(&v).unwrap();
        h.flow = key;
        h.direction = dir;
        v[..HEADER_LEN].copy_from_slice(h.as_bytes());
        let r = Record::decode(&v).unwrap();
        assert_eq!(r.src(), ("198.51.100.9".parse().unwrap(), 80));
        assert_eq!(r.dst(), ("192.0.2.1".parse().unwrap(), 5555));
    }
}
