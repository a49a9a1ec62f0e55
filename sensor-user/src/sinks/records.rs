//! `--dump-records`: one JSON line per ring record, metadata only. Payload bytes
//! are never written (they may hold the very secrets the sensor looks for).

use std::net::IpAddr;

use sensor_common::{
    flow::IPPROTO_TCP,
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    record::flags,
};
use serde::Serialize;

use crate::capture::record::Record;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RecordLine<'a> {
    /// Packet time, CLOCK_MONOTONIC nanoseconds as the kernel stamped it.
    pub ts_mono_ns: u64,
    pub kind: &'static str,
    pub interface: &'a str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    pub proto: &'static str,
    /// Service id name, when the flow is watched.
    pub service: Option<&'a str>,
    pub tcp_flags: String,
    pub tcp_seq: u32,
    pub pkt_len: u32,
    pub cap_len: u32,
    pub payload_len: u32,
    pub dir_bytes: u64,
    pub dir_pkts: u64,
    pub flags: Vec<&'static str>,
}

const FLAG_NAMES: [(u16, &str); 7] = [
    (flags::TRUNCATED, "truncated"),
    (flags::TLS, "tls"),
    (flags::FROM_CLIENT, "from_client"),
    (flags::FIRST_PAYLOAD, "first_payload"),
    (flags::TAIL, "tail"),
    (flags::IP_FRAGMENT, "ip_fragment"),
    (flags::VLAN, "vlan"),
];

fn tcp_flags(f: u8) -> String {
    [
        (TCP_SYN, 'S'),
        (TCP_ACK, 'A'),
        (TCP_FIN, 'F'),
        (TCP_RST, 'R'),
        (0x08, 'P'),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

impl<'a> RecordLine<'a> {
    pub fn new(r: &Record, interface: &'a str, service: Option<&'a str>) -> Self {
        let (src_ip, src_port) = r.src();
        let (dest_ip, dest_port) = r.dst();
        let h = &r.hdr;
        Self {
            ts_mono_ns: h.ts_ns,
            kind: r.kind.name(),
            interface,
            src_ip,
            src_port,
            dest_ip,
            dest_port,
            proto: if h.flow.proto == IPPROTO_TCP {
                "tcp"
            } else {
                "udp"
            },
            service,
            tcp_flags: tcp_flags(h.tcp_flags),
            tcp_seq: h.tcp_seq,
            pkt_len: h.pkt_len,
            cap_len: h.cap_len,
            payload_len: h.payload_len,
            dir_bytes: h.dir_bytes,
            dir_pkts: h.dir_pkts,
            flags: FLAG_NAMES
                .iter()
                .filter(|(b, _)| h.flags & b != 0)
                .map(|(_, n)| *n)
                .collect(),
        }
    }
}

/// The `--dump-records` writer.
pub type RecordLog = super::jsonl::JsonLines;

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::{
        flow::{FAMILY_V4, FlowKey},
        record::{RECORD_VERSION, RecordHeader, RecordKind},
    };

    #[test]
    fn lines_carry_metadata_not_payload() {
        let mut h = RecordHeader::zeroed();
        h.version = RECORD_VERSION;
        h.kind = RecordKind::Sample as u8;
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[192, 0, 2, 1]);
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[198, 51, 100, 2]);
        let (k, d) = FlowKey::from_packet(FAMILY_V4, IPPROTO_TCP, &a, 40000, &b, 80);
        h.flow = k;
        h.direction = d;
        h.tcp_flags = TCP_ACK | 0x08;
        h.flags = flags::FROM_CLIENT | flags::FIRST_PAYLOAD;
        let secret = b"password=hunter2";
        h.cap_len = secret.len() as u32;
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(secret);
        let r = Record::decode(&bytes).unwrap();
        let mut buf = Vec::new();
        serde_json::to_writer(&mut buf, &RecordLine::new(&r, "eth0", Some("qobuz"))).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains(r#""src_ip":"192.0.2.1","src_port":40000"#),
            "{text}"
        );
        assert!(text.contains(r#""tcp_flags":"AP""#), "{text}");
        assert!(
            text.contains(r#""flags":["from_client","first_payload"]"#),
            "{text}"
        );
        assert!(!text.contains("hunter2"));
    }
}
