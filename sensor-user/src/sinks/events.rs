//! `--events PATH|-`: one JSON object per line, in Suricata EVE style, flushed per
//! event. Field values never carry a secret in full.

use std::net::IpAddr;

use sensor_common::flow::IPPROTO_TCP;
use serde::Serialize;

use crate::{capture::record::Record, proto::http::RequestHead};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Http {
    pub hostname: Option<String>,
    pub method: String,
    /// Without the query string: parameter values may be secrets.
    pub path: String,
    pub user_agent: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Tls {
    pub sni: Option<String>,
    pub version: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FlowInfo {
    pub transport: &'static str,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Event {
    pub timestamp: String,
    pub event_type: &'static str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dest_ip: IpAddr,
    pub dest_port: u16,
    pub proto: &'static str,
    pub interface: String,
    pub service: String,
    pub flow: FlowInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

impl Event {
    /// `cleartext_flow`: a watched service reached in cleartext, from the client's
    /// first record (client → server orientation).
    pub fn cleartext_flow(
        rec: &Record,
        timestamp: String,
        interface: &str,
        service: &str,
        head: Option<&RequestHead>,
    ) -> Self {
        let (src_ip, src_port) = rec.src();
        let (dest_ip, dest_port) = rec.dst();
        Self {
            timestamp,
            event_type: "cleartext_flow",
            src_ip,
            src_port,
            dest_ip,
            dest_port,
            proto: if rec.hdr.flow.proto == IPPROTO_TCP {
                "TCP"
            } else {
                "UDP"
            },
            interface: interface.to_owned(),
            service: service.to_owned(),
            flow: FlowInfo {
                transport: "cleartext",
            },
            http: head.map(|h| Http {
                hostname: h.host.clone(),
                method: h.method.clone(),
                path: h.path.clone(),
                user_agent: h.user_agent.clone(),
            }),
            tls: None,
        }
    }
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
        let e = Event {
            timestamp: "2026-11-23T13:00:00.000001Z".into(),
            event_type: "cleartext_flow",
            src_ip: "192.0.2.10".parse().unwrap(),
            src_port: 40000,
            dest_ip: "198.51.100.2".parse().unwrap(),
            dest_port: 80,
            proto: "TCP",
            interface: "lan0".into(),
            service: "qobuz".into(),
            flow: FlowInfo {
                transport: "cleartext",
            },
            http: Some(Http {
                hostname: head.host,
                method: head.method,
                path: head.path,
                user_agent: None,
            }),
            tls: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event_type"], "cleartext_flow");
        assert_eq!(v["http"]["path"], "/login");
        assert!(v.get("tls").is_none());
        assert!(!serde_json::to_string(&e).unwrap().contains("hunter2"));
    }
}
