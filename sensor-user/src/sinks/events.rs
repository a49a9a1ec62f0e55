//! `--events PATH|-`: one JSON object per line, in Suricata EVE style, flushed per
//! event. Field values never carry a secret in full.

use std::net::IpAddr;

use sensor_common::flow::IPPROTO_TCP;
use serde::Serialize;

use crate::{capture::record::Record, proto::http::RequestHead};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Http {
    pub hostname: Option<String>,
    pub method: String,
    /// Without the query string: parameter values may be secrets.
    pub path: String,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tls {
    pub sni: Option<String>,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowInfo {
    pub transport: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    pub timestamp: String,
    /// The sensor's name (EVE's `host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The same for every event of one flow (EVE's `flow_id`: below 2^51).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u64>,
    pub event_type: &'static str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    pub proto: &'static str,
    pub interface: String,
    pub service: String,
    /// Where a leak went (`leak`, `replay`): `service` (the service's own
    /// hosts) or `third_party` (a followed app's flow to another host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<&'static str>,
    /// The third party's host name (Host header), when `third_party`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowInfo>,
    /// Leak kind (`leak`, `replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<&'static str>,
    /// `leak`: `confirmed` for a registered canary's value, `pattern` for
    /// every other finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<&'static str>,
    /// `leak` of a canary: its label (never its value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Redacted per the evidence mode; never the value unless `full` was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Keyed hash of the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Where in the message: query, header, cookie, body, raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<&'static str>,
    /// `to_server` or `to_client`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// A login's verdict from the server: `accepted` or `rejected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// A challenge–response hash: whether its challenge was seen (crackable offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crackable: Option<bool>,
    /// The flow's application protocol, when not HTTP (`ftp`, `pop3`, `imap`, `smtp`, `mqtt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayInfo>,
    /// The app named by the User-Agent (name, version, platform).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<crate::proto::user_agent::App>,
    /// `leak`: found in a payload a blocking policy refused (it never left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
    /// `block` and `would_block`: what was (or would have been) blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockInfo>,
    /// `vulnerable_app`: the advisory the client's app version is named in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advisory: Option<AdvisoryInfo>,
}

/// An advisory a client's app version is named in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdvisoryInfo {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// A block decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlockInfo {
    /// For `leakwatch blocks lift ID`.
    pub id: u64,
    /// `flow` or `quarantine` (the client's new cleartext flows to the service).
    pub scope: &'static str,
    /// `finding`, `quarantine` or `cleartext`.
    pub reason: &'static str,
    /// The mode that decided it.
    pub mode: &'static str,
    /// When the block ends (RFC 3339); absent for a refused payload (its flow is
    /// reset at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// The first sighting a replay repeats.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReplayInfo {
    pub first_client_ip: IpAddr,
    pub seconds_since_first: u64,
}

impl Event {
    /// An event with the flow's endpoints (client → server) and nothing else set.
    #[expect(clippy::too_many_arguments, reason = "the EVE header fields")]
    pub fn new(
        event_type: &'static str,
        timestamp: String,
        (src_ip, src_port): (IpAddr, u16),
        (dest_ip, dest_port): (IpAddr, u16),
        tcp: bool,
        interface: &str,
        service: &str,
        head: Option<&RequestHead>,
    ) -> Self {
        Self {
            timestamp,
            host: None,
            flow_id: None,
            event_type,
            src_ip,
            src_port,
            dest_ip,
            dest_port,
            proto: if tcp { "TCP" } else { "UDP" },
            interface: interface.to_owned(),
            service: service.to_owned(),
            flow: None,
            kind: None,
            rule: None,
            severity: None,
            confidence: None,
            canary: None,
            evidence: None,
            fingerprint: None,
            context: None,
            direction: None,
            outcome: None,
            crackable: None,
            app_proto: None,
            http: head.map(Http::from),
            tls: None,
            replay: None,
            app: head
                .and_then(|h| h.user_agent.as_deref())
                .and_then(crate::proto::user_agent::parse),
            blocked: None,
            block: None,
            advisory: None,
            destination: None,
            destination_host: None,
        }
    }

    /// `cleartext_flow`: a watched service reached in cleartext, from the client's
    /// first record (client → server orientation).
    pub fn cleartext_flow(
        rec: &Record,
        timestamp: String,
        interface: &str,
        service: &str,
        head: Option<&RequestHead>,
    ) -> Self {
        let http = head.map(Http::from);
        let mut e = Self::new(
            "cleartext_flow",
            timestamp,
            rec.src(),
            rec.dst(),
            rec.hdr.flow.proto == IPPROTO_TCP,
            interface,
            service,
            None,
        );
        e.flow = Some(FlowInfo {
            transport: "cleartext",
        });
        e.http = http;
        e
    }
}

impl From<&RequestHead> for Http {
    fn from(h: &RequestHead) -> Self {
        Self {
            hostname: h.host.clone(),
            method: h.method.clone(),
            path: h.path.clone(),
            user_agent: h.user_agent.clone(),
        }
    }
}

/// A flow's `flow_id`: FNV-1a of its direction-normalised key, 51 bits (EVE
/// keeps flow ids below 2^51 so JSON readers hold them exactly).
pub fn flow_id(k: &sensor_common::flow::FlowKey) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&k.addr_a);
    eat(&k.addr_b);
    eat(&k.port_a.to_le_bytes());
    eat(&k.port_b.to_le_bytes());
    eat(&[k.proto, k.family]);
    h & ((1 << 51) - 1)
}

/// The sensor's name by default: the host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The `--events` writer.
pub type EventLog = super::jsonl::JsonLines;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request_head;

    #[test]
    fn cleartext_event_fields() {
        let head = parse_request_head(
            b"GET /login?password=hunter2 HTTP/1.1\r\nHost: www.qobuz.com\r\n\r\n",
        )
        .unwrap();
        let mut e = Event::new(
            "cleartext_flow",
            "2026-11-23T13:00:00.000001Z".into(),
            ("192.0.2.10".parse().unwrap(), 40000),
            ("198.51.100.2".parse().unwrap(), 80),
            true,
            "lan0",
            "qobuz",
            None,
        );
        e.flow = Some(FlowInfo {
            transport: "cleartext",
        });
        e.http = Some(Http {
            hostname: head.host,
            method: head.method,
            path: head.path,
            user_agent: None,
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event_type"], "cleartext_flow");
        assert_eq!(v["http"]["path"], "/login");
        assert!(v.get("tls").is_none());
        assert!(!serde_json::to_string(&e).unwrap().contains("hunter2"));
    }
}
