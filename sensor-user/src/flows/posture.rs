//! Flow posture: each watched flow's service and transport class (cleartext, TLS,
//! QUIC, unknown), its bytes per direction, and the TLS version and SNI of TLS
//! flows. Fed by Sample and Meta records; forgets flows on FIN/RST from both
//! sides, RST, or idleness.

use std::time::{Duration, Instant};

use sensor_common::{
    flow::{FlowKey, IPPROTO_UDP},
    parse::{TCP_FIN, TCP_RST},
    record::{RecordKind, flags},
};

use super::role::Role;
use crate::{
    capture::record::Record,
    proto::{
        self, Protocol,
        http::{self, RequestHead},
        tls,
    },
    shared::table::{Evictions, FlowTable},
};

/// A flow's transport class (`transport` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The client's first payload was not TLS (HTTP or another cleartext protocol).
    Cleartext,
    /// The client's first payload was a TLS record.
    Tls,
    /// UDP to port 443.
    Quic,
    /// Ended before the client sent payload.
    Unknown,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cleartext => "cleartext",
            Self::Tls => "tls",
            Self::Quic => "quic",
            Self::Unknown => "unknown",
        }
    }
}

/// What posture tells the sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A flow got its class and protocol (once per flow).
    Flow {
        service: u32,
        transport: Transport,
        protocol: Protocol,
    },
    /// Bytes (L3) attributed to a flow's class since the last report.
    Bytes {
        service: u32,
        transport: Transport,
        to_server: bool,
        bytes: u64,
    },
    /// A watched flow in cleartext (once per flow), with its first client record
    /// and the request head if it is HTTP.
    Cleartext {
        record: Box<Record>,
        http: Option<RequestHead>,
    },
    /// A TLS flow's hello was read.
    Tls {
        service: u32,
        version: &'static str,
        sni: Option<String>,
        /// The client, once a record showed which side it is; and the time of
        /// the flow's latest record (the app inventory attributes the flow).
        client: Option<std::net::IpAddr>,
        ts_ns: u64,
    },
}

#[derive(Debug)]
struct Flow {
    service: u32,
    transport: Option<Transport>,
    /// Direction index (of the flow key) the client sends in, once known.
    role: Role,
    /// Cumulative L3 bytes per key direction, as last reported by the kernel.
    seen: [u64; 2],
    /// Bytes not yet reported because the class was unknown, per key direction.
    pending: [u64; 2],
    fins: u8,
    /// The client's hello, while it spans records.
    hello: Vec<u8>,
    hello_done: bool,
    sni: Option<String>,
    /// Offered by the client, then as chosen by the server.
    tls_version: Option<u16>,
    tls_reported: bool,
    /// The server's first bytes, while the class is unknown: banners name
    /// protocols (FTP, SMTP, POP3, IMAP) before the client speaks.
    server_first: Vec<u8>,
    /// The client's address, once known, and the latest record's time.
    client: Option<std::net::IpAddr>,
    last_ts_ns: u64,
}

pub struct Posture {
    flows: FlowTable<FlowKey, Flow>,
    idle: Duration,
}

/// Server bytes kept for recognising a protocol by its banner.
const MAX_SERVER_FIRST: usize = 256;
/// Largest client hello kept while it spans records.
const MAX_HELLO: usize = 16 * 1024 + 5;

impl Posture {
    pub fn new(idle: Duration, cap: usize) -> Self {
        Self {
            flows: FlowTable::new("posture_flows", cap),
            idle,
        }
    }

    /// Draws the flows from the shared memory budget.
    pub fn set_budget(&mut self, budget: std::sync::Arc<crate::shared::budget::Budget>) {
        self.flows.set_budget(budget);
    }

    /// Flows forgotten to stay under the cap or for idleness.
    pub fn evictions(&self) -> (&'static str, Evictions) {
        (self.flows.name(), self.flows.evictions())
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Feeds one record of a watched flow (Sample or Meta); other kinds are ignored.
    pub fn on_record(&mut self, rec: &Record, now: Instant, out: &mut Vec<Output>) {
        if !matches!(rec.kind, RecordKind::Sample | RecordKind::Meta) || rec.hdr.service == 0 {
            return;
        }
        // DNS with a watched address (the host's resolver queries to a DNS
        // server inside a service's static prefix) is no traffic of the app's.
        let dns = sensor_common::policy::DNS_PORT;
        if rec.hdr.flow.port_a == dns || rec.hdr.flow.port_b == dns {
            return;
        }
        let h = &rec.hdr;
        // A bare SYN: a new connection on the flow's ports (`policy::restart`),
        // once the old one spoke (a retransmitted SYN is no new flow).
        if h.is_bare_syn()
            && self
                .flows
                .get(&h.flow)
                .is_some_and(|f| f.transport.is_some())
        {
            self.finish(h.flow, out);
        }
        if !self.flows.contains_key(&h.flow) {
            let new = Flow {
                service: h.service,
                transport: None,
                role: Role::default(),
                seen: [0; 2],
                pending: [0; 2],
                fins: 0,
                hello: Vec::new(),
                hello_done: false,
                sni: None,
                tls_version: None,
                tls_reported: false,
                server_first: Vec::new(),
                client: None,
                last_ts_ns: h.ts_ns,
            };
            if let Some((_, old)) = self.flows.insert(h.flow, new, now) {
                Self::report_end(old, out);
            }
            while let Some((_, old)) = self.flows.evict_over_budget() {
                Self::report_end(old, out);
            }
        }
        let Some(f) = self.flows.touch(&h.flow, now) else {
            return;
        };
        let dir = usize::from(h.direction & 1);
        let from_client = f.role.observe(h, rec.payload());
        f.last_ts_ns = h.ts_ns;
        if f.role.client_dir().is_some() {
            f.client = Some(if from_client {
                rec.src().0
            } else {
                rec.dst().0
            });
        }

        // Classify.
        if f.transport.is_none() && !from_client && f.server_first.len() < MAX_SERVER_FIRST {
            let room = MAX_SERVER_FIRST - f.server_first.len();
            let p = rec.payload();
            f.server_first.extend_from_slice(&p[..p.len().min(room)]);
        }
        if f.transport.is_none() {
            let t = if h.flow.proto == IPPROTO_UDP {
                let server_port = if from_client {
                    rec.dst().1
                } else {
                    rec.src().1
                };
                Some(if server_port == 443 {
                    Transport::Quic
                } else {
                    Transport::Cleartext
                })
            } else if from_client && h.payload_len > 0 {
                Some(if h.flags & flags::TLS != 0 {
                    Transport::Tls
                } else {
                    Transport::Cleartext
                })
            } else {
                None
            };
            if let Some(t) = t {
                f.transport = Some(t);
                let protocol = match t {
                    Transport::Tls | Transport::Quic => Protocol::Tls,
                    Transport::Cleartext if h.flow.proto != IPPROTO_UDP => {
                        proto::protocol_of(rec.payload(), &f.server_first)
                    }
                    Transport::Cleartext | Transport::Unknown => Protocol::Other,
                };
                f.server_first = Vec::new();
                out.push(Output::Flow {
                    service: f.service,
                    transport: t,
                    protocol,
                });
                if t == Transport::Cleartext {
                    let head = if from_client {
                        http::parse_request_head(rec.payload())
                    } else {
                        None
                    };
                    out.push(Output::Cleartext {
                        record: Box::new(rec.clone()),
                        http: head,
                    });
                }
            }
        }

        // STARTTLS: a cleartext flow whose client starts a TLS handshake is
        // TLS from then on (its later bytes count as TLS).
        if f.transport == Some(Transport::Cleartext)
            && from_client
            && rec.payload().starts_with(&[0x16, 0x03])
        {
            f.transport = Some(Transport::Tls);
        }

        // TLS hellos: the client's (SNI, offered version; possibly over several
        // records), then the server's (the version it chose).
        if f.transport == Some(Transport::Tls) && rec.kind == RecordKind::Sample && !f.tls_reported
        {
            if from_client && !f.hello_done {
                if f.hello.len() + rec.payload().len() <= MAX_HELLO {
                    f.hello.extend_from_slice(rec.payload());
                }
                match tls::parse_client_hello(&f.hello) {
                    Ok(ch) => {
                        f.hello_done = true;
                        f.hello = Vec::new();
                        f.sni = ch.sni;
                        f.tls_version = Some(ch.version);
                    }
                    Err(tls::TlsError::Incomplete { .. }) if f.hello.len() < MAX_HELLO => {}
                    Err(_) => {
                        f.hello_done = true;
                        f.hello = Vec::new();
                    }
                }
            } else if !from_client && h.flags & flags::FIRST_PAYLOAD != 0 {
                if let Ok(v) = tls::parse_server_hello(rec.payload()) {
                    f.tls_version = Some(v);
                }
                Self::report_tls(f, out);
            }
        }

        // Bytes: the kernel's cumulative count for this direction.
        let delta = h.dir_bytes.saturating_sub(f.seen[dir]);
        f.seen[dir] = f.seen[dir].max(h.dir_bytes);
        match f.transport {
            Some(t) => {
                let to_server = f.role.client_dir() == Some(h.direction & 1);
                let pending = std::mem::take(&mut f.pending);
                for (d, p) in pending.into_iter().enumerate() {
                    if p > 0 {
                        let ts = f.role.client_dir() == Some(d as u8);
                        out.push(Output::Bytes {
                            service: f.service,
                            transport: t,
                            to_server: ts,
                            bytes: p,
                        });
                    }
                }
                if delta > 0 {
                    out.push(Output::Bytes {
                        service: f.service,
                        transport: t,
                        to_server,
                        bytes: delta,
                    });
                }
            }
            None => f.pending[dir] += delta,
        }

        // Ends: RST, or FIN from both sides.
        if h.tcp_flags & TCP_FIN != 0 {
            f.fins |= 1 << dir;
        }
        if h.tcp_flags & TCP_RST != 0 || f.fins == 3 {
            let key = h.flow;
            self.finish(key, out);
        }
    }

    /// Reports a TLS flow's version and SNI, once.
    fn report_tls(f: &mut Flow, out: &mut Vec<Output>) {
        if f.tls_reported || f.transport != Some(Transport::Tls) {
            return;
        }
        if let Some(v) = f.tls_version {
            f.tls_reported = true;
            out.push(Output::Tls {
                service: f.service,
                version: tls::version_name(v),
                sni: f.sni.take(),
                client: f.client,
                ts_ns: f.last_ts_ns,
            });
        }
    }

    fn finish(&mut self, key: FlowKey, out: &mut Vec<Output>) {
        if let Some(f) = self.flows.remove(&key) {
            Self::report_end(f, out);
        }
    }

    /// What a flow leaving the table still owes the sinks.
    fn report_end(mut f: Flow, out: &mut Vec<Output>) {
        // No ServerHello seen: report what the client offered.
        Self::report_tls(&mut f, out);
        if f.transport.is_none() {
            out.push(Output::Flow {
                service: f.service,
                transport: Transport::Unknown,
                protocol: Protocol::Other,
            });
            for (d, p) in f.pending.into_iter().enumerate() {
                if p > 0 {
                    let to_server = f.role.client_dir().is_none_or(|c| c == d as u8);
                    out.push(Output::Bytes {
                        service: f.service,
                        transport: Transport::Unknown,
                        to_server,
                        bytes: p,
                    });
                }
            }
        }
    }

    /// Forgets flows idle for longer than the idle timeout (from the least
    /// recent; stops at the first live one).
    pub fn sweep(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(cutoff) = now.checked_sub(self.idle) else {
            return;
        };
        while let Some((_, f)) = self.flows.expire(cutoff) {
            Self::report_end(f, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{FrameBuilder, tls_client_hello};
    use sensor_common::parse::{TCP_ACK, TCP_RST, TCP_SYN};

    /// A record of service 1 whose direction has carried `dir_bytes` so far.
    fn rec(kind: RecordKind, rflags: u16, dir_bytes: u64, b: FrameBuilder) -> Record {
        let mut r = crate::fixtures::record(kind, rflags, &b.build());
        r.hdr.service = 1;
        r.hdr.dir_bytes = dir_bytes;
        r
    }

    const C: u16 = flags::FROM_CLIENT;
    const FP: u16 = flags::FIRST_PAYLOAD;

    fn up() -> FrameBuilder {
        FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 80)
    }

    fn down() -> FrameBuilder {
        FrameBuilder::tcp("198.51.100.2", 80, "192.0.2.10", 40000)
    }

    #[test]
    fn dns_with_a_watched_address_is_no_service_flow() {
        let mut p = Posture::new(Duration::from_mins(1), 100);
        let mut out = Vec::new();
        let q = FrameBuilder::udp("192.0.2.1", 33000, "198.51.100.2", 53).payload([0u8; 30]);
        p.on_record(
            &rec(RecordKind::Sample, C | FP, 58, q),
            Instant::now(),
            &mut out,
        );
        let a = FrameBuilder::tcp("198.51.100.2", 53, "192.0.2.1", 40001).payload([0u8; 40]);
        p.on_record(
            &rec(RecordKind::Sample, FP, 80, a),
            Instant::now(),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    /// A new connection on the ports of a flow that never ended here (reset
    /// by a block's RST, which the sensor sends itself) is a flow of its own.
    #[test]
    fn a_bare_syn_on_an_open_flow_counts_a_new_flow() {
        let mut p = Posture::new(Duration::from_mins(1), 100);
        let mut out = Vec::new();
        let now = Instant::now();
        let get = b"GET / HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n";
        for _ in 0..2 {
            // The second SYN of each a retransmission: no flow of its own.
            for _ in 0..2 {
                p.on_record(
                    &rec(RecordKind::Meta, C, 60, up().flags(TCP_SYN)),
                    now,
                    &mut out,
                );
            }
            p.on_record(
                &rec(RecordKind::Sample, C | FP, 200, up().payload(get)),
                now,
                &mut out,
            );
        }
        let flows = out
            .iter()
            .filter(|o| matches!(o, Output::Flow { .. }))
            .count();
        assert_eq!(flows, 2, "{out:?}");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn cleartext_http_flow() {
        let mut p = Posture::new(Duration::from_mins(1), 100);
        let mut out = Vec::new();
        let now = Instant::now();
        p.on_record(
            &rec(RecordKind::Meta, C, 60, up().flags(TCP_SYN)),
            now,
            &mut out,
        );
        assert!(out.is_empty(), "class unknown until the client speaks");
        let get = b"GET /api.json/0.2/user/login?email=x HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n";
        p.on_record(
            &rec(RecordKind::Sample, C | FP, 200, up().payload(get)),
            now,
            &mut out,
        );
        assert_eq!(
            out[0],
            Output::Flow {
                service: 1,
                transport: Transport::Cleartext,
                protocol: Protocol::Http,
            }
        );
        let Output::Cleartext {
            http: Some(head), ..
        } = &out[1]
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("GET", "/api.json/0.2/user/login")
        );
        // Bytes: the 60 bytes of the SYN (pending until the class was known), then 140.
        let bytes: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Bytes {
                    bytes, to_server, ..
                } => Some((*to_server, *bytes)),
                _ => None,
            })
            .collect();
        assert_eq!(bytes, [(true, 60), (true, 140)]);
        out.clear();
        p.on_record(
            &rec(
                RecordKind::Sample,
                FP,
                500,
                down().payload(b"HTTP/1.1 200 OK\r\n\r\n"),
            ),
            now,
            &mut out,
        );
        assert_eq!(
            out,
            [Output::Bytes {
                service: 1,
                transport: Transport::Cleartext,
                to_server: false,
                bytes: 500
            }]
        );
        out.clear();
        p.on_record(
            &rec(RecordKind::Meta, C, 260, up().flags(TCP_FIN | TCP_ACK)),
            now,
            &mut out,
        );
        p.on_record(
            &rec(RecordKind::Meta, 0, 560, down().flags(TCP_FIN | TCP_ACK)),
            now,
            &mut out,
        );
        assert!(p.is_empty(), "both FINs end the flow");
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Flow { .. } | Output::Cleartext { .. })),
            "once per flow"
        );
    }

    #[test]
    fn tls_flow_with_split_hello() {
        let mut p = Posture::new(Duration::from_mins(1), 100);
        let mut out = Vec::new();
        let now = Instant::now();
        let hello = tls_client_hello("api.qobuz.com", 1500);
        let (a, b) = hello.split_at(1000);
        let tls_up = || FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 443);
        p.on_record(
            &rec(
                RecordKind::Sample,
                C | FP | flags::TLS,
                1040,
                tls_up().payload(a),
            ),
            now,
            &mut out,
        );
        assert_eq!(
            out[0],
            Output::Flow {
                service: 1,
                transport: Transport::Tls,
                protocol: Protocol::Tls,
            }
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Cleartext { .. } | Output::Tls { .. }))
        );
        p.on_record(
            &rec(
                RecordKind::Sample,
                C | flags::TLS,
                2000,
                tls_up().payload(b),
            ),
            now,
            &mut out,
        );
        assert!(
            !out.iter().any(|o| matches!(o, Output::Tls { .. })),
            "waits for the server's choice"
        );
        // The ServerHello picks TLS 1.3 (supported_versions).
        let mut body = vec![0x03, 0x03];
        body.extend([0u8; 32]);
        body.extend([0, 0x13, 0x01, 0, 0, 6, 0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
        let mut sh = vec![
            0x16,
            3,
            3,
            0,
            body.len() as u8 + 4,
            2,
            0,
            0,
            body.len() as u8,
        ];
        sh.extend(body);
        let tls_down = FrameBuilder::tcp("198.51.100.2", 443, "192.0.2.10", 40000).payload(&sh);
        p.on_record(
            &rec(RecordKind::Sample, FP | flags::TLS, 300, tls_down),
            now,
            &mut out,
        );
        let tls: Vec<_> = out
            .iter()
            .filter(|o| matches!(o, Output::Tls { .. }))
            .collect();
        assert!(
            matches!(
                tls[..],
                [Output::Tls {
                    service: 1,
                    version: "1.3",
                    sni: Some(sni),
                    client: Some(_),
                    ..
                }] if sni == "api.qobuz.com"
            ),
            "{tls:?}"
        );
    }

    #[test]
    fn tls_without_a_server_hello_reports_the_offer_at_its_end() {
        let mut p = Posture::new(Duration::from_mins(1), 100);
        let mut out = Vec::new();
        let now = Instant::now();
        let up = FrameBuilder::tcp("192.0.2.10", 40000, "198.51.100.2", 443)
            .payload(tls_client_hello("www.tidal.com", 0));
        p.on_record(
            &rec(RecordKind::Sample, C | FP | flags::TLS, 300, up),
            now,
            &mut out,
        );
        let rst = FrameBuilder::tcp("198.51.100.2", 443, "192.0.2.10", 40000).flags(TCP_RST);
        p.on_record(&rec(RecordKind::Meta, flags::TLS, 40, rst), now, &mut out);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Tls {
                    service: 1,
                    version: "1.2",
                    sni: Some(sni),
                    ..
                } if sni == "www.tidal.com"
            )),
            "{out:?}"
        );
    }

    #[test]
    fn quic_and_unknown() {
        let mut p = Posture::new(Duration::from_secs(1), 100);
        let mut out = Vec::new();
        let t0 = Instant::now();
        let q = FrameBuilder::udp("192.0.2.10", 50000, "198.51.100.2", 443).payload([0xc3; 40]);
        p.on_record(&rec(RecordKind::Sample, C | FP, 68, q), t0, &mut out);
        assert_eq!(
            out[0],
            Output::Flow {
                service: 1,
                transport: Transport::Quic,
                protocol: Protocol::Tls,
            }
        );
        out.clear();
        // A flow that never sends payload: unknown, at its end (idle here).
        p.on_record(
            &rec(
                RecordKind::Meta,
                C,
                60,
                FrameBuilder::tcp("192.0.2.10", 40001, "198.51.100.2", 80).flags(TCP_SYN),
            ),
            t0,
            &mut out,
        );
        p.sweep(t0 + Duration::from_secs(2), &mut out);
        assert!(out.contains(&Output::Flow {
            service: 1,
            transport: Transport::Unknown,
            protocol: Protocol::Other,
        }));
        assert!(out.contains(&Output::Bytes {
            service: 1,
            transport: Transport::Unknown,
            to_server: true,
            bytes: 60
        }));
        assert!(p.is_empty());
    }

    #[test]
    fn cap_evicts_the_idlest() {
        let mut p = Posture::new(Duration::from_mins(1), 2);
        let mut out = Vec::new();
        let t0 = Instant::now();
        for (i, port) in [40001u16, 40002, 40003].iter().enumerate() {
            let b = FrameBuilder::tcp("192.0.2.10", *port, "198.51.100.2", 80)
                .payload(b"GET / HTTP/1.1\r\n\r\n");
            p.on_record(
                &rec(RecordKind::Sample, C | FP, 100, b),
                t0 + Duration::from_secs(i as u64),
                &mut out,
            );
        }
        assert_eq!((p.len(), p.evictions().1.cap), (2, 1));
    }
}
