//! Routing to the sinks: findings to metrics, `leak` and `replay` events;
//! posture outputs to flow metrics and `cleartext_flow` events.

use std::time::Instant;

use super::Pipeline;
use crate::{
    capture::clock::mono_now_ns,
    flows::posture::Output,
    matcher::{
        evidence::{EvidenceMode, evidence},
        finding::Finding,
    },
    sinks::{
        block::{self, Blocked},
        events::{Event, ReplayInfo},
        metrics::{
            EventLabels, FindingLabels, FlowBytesLabels, FlowLabels, ServiceLabels, TlsLabels,
        },
    },
    targets::learning::WatchSink,
};

impl<W: WatchSink> Pipeline<W> {
    /// Routes findings to the sinks: metrics, `leak` events with evidence and
    /// fingerprints, and `replay` events for a secret seen from a second client.
    /// Which hits are findings was decided by the matcher (`matcher::finding`).
    /// `found`: with their block decisions when a matcher worker made them.
    pub(super) fn findings(&mut self, found: Vec<(Finding, Option<Blocked>)>, now: Instant) {
        if found.is_empty() {
            return;
        }
        let Some(m) = self.matching.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        // For the app inventory, once `m` is no longer borrowed.
        let mut seen = Vec::new();
        for (f, blocked) in found {
            let service = self
                .targeting
                .ids()
                .name(f.service)
                .unwrap_or("unknown")
                .to_owned();
            let kind = f.hit.kind;
            let severity = f.severity.name();
            let fp = m.fingerprints.fingerprint(kind, &f.hit.value);
            let labels = FindingLabels {
                service: service.clone(),
                kind: kind.name().into(),
                severity: severity.into(),
            };
            self.metrics.findings.get_or_create(&labels).inc();
            let latency = mono_now_ns().saturating_sub(f.ts_ns) as f64 / 1e9;
            self.metrics.detection_latency.observe(latency);
            // Client → server orientation, whichever way the value travelled.
            let (a, b) = (f.key.src(f.direction), f.key.dst(f.direction));
            let addr = |e: (&[u8; 16], u16)| {
                let ip = if f.key.family == sensor_common::flow::FAMILY_V4 {
                    std::net::IpAddr::from([e.0[0], e.0[1], e.0[2], e.0[3]])
                } else {
                    std::net::IpAddr::from(*e.0)
                };
                (ip, e.1)
            };
            let (client, server) = if f.from_client {
                (addr(a), addr(b))
            } else {
                (addr(b), addr(a))
            };
            let iface = self
                .ifaces
                .iter()
                .find(|(i, _)| *i == f.ifindex)
                .map_or("unknown", |(_, n)| n.as_str())
                .to_owned();
            seen.push((
                f.head.clone(),
                kind.name(),
                f.ts_ns,
                service.clone(),
                client.0,
            ));
            let tcp = f.key.proto == sensor_common::flow::IPPROTO_TCP;
            let base = Event::new(
                "leak",
                self.clock.rfc3339(f.ts_ns),
                client,
                server,
                tcp,
                &iface,
                &service,
                f.head.as_ref(),
            );
            let mut base = base;
            base.host = Some(self.host.clone());
            base.flow_id = Some(crate::sinks::events::flow_id(&f.key));
            let mut ev = base.clone();
            ev.kind = Some(kind.name());
            ev.rule = Some(f.rule.clone());
            ev.severity = Some(severity);
            if let Some(c) = &f.hit.canary {
                // A canary's value never appears, whatever the mode; how it
                // travelled does.
                let shown = evidence(&f.hit.name, &f.hit.value, EvidenceMode::Fingerprint);
                ev.evidence = Some(format!("{shown} [{}]", c.form));
                ev.canary = Some(c.label.to_string());
                ev.confidence = Some("confirmed");
            } else {
                ev.evidence = Some(evidence(&f.hit.name, &f.hit.value, m.evidence));
                ev.confidence = Some("pattern");
            }
            ev.fingerprint = Some(fp.clone());
            ev.context = Some(f.hit.ctx.name());
            ev.outcome = f.outcome.map(crate::proto::Outcome::name);
            ev.crackable = f.crackable;
            ev.app_proto = f
                .protocol
                .filter(|p| *p != crate::proto::Protocol::Other)
                .map(crate::proto::Protocol::name);
            ev.direction = Some(if f.from_client {
                "to_server"
            } else {
                "to_client"
            });
            super::follow::destination(&self.metrics, &mut self.following, (&f, &service), &mut ev);
            if let Some(b) = self.blocker.as_deref() {
                if block::lock(b).refused(&f.key) {
                    ev.blocked = Some(true);
                }
                let blocks = super::blocking::finding_events(
                    b,
                    &self.metrics,
                    &self.clock,
                    (&f, blocked),
                    &service,
                    &ev,
                    now,
                );
                events.push(ev);
                events.extend(blocks);
            } else {
                events.push(ev);
            }
            if kind.is_replayable()
                && f.from_client
                && let Some(r) = m.replay.observe(&fp, client.0, now)
            {
                self.metrics
                    .replays
                    .get_or_create(&ServiceLabels {
                        service: service.clone(),
                    })
                    .inc();
                let mut rev = base;
                rev.event_type = "replay";
                rev.kind = Some(kind.name());
                rev.rule = Some(f.rule);
                rev.severity = Some(severity);
                rev.fingerprint = Some(fp);
                rev.replay = Some(ReplayInfo {
                    first_client_ip: r.first_client,
                    seconds_since_first: r.since.as_secs(),
                });
                events.push(rev);
            }
        }
        for (head, kind, ts_ns, service, client) in seen {
            self.app_finding(head.as_ref(), kind, ts_ns, &service, client);
        }
        for ev in &events {
            self.write_event(ev);
        }
        self.publish_blocks();
    }

    pub(super) fn emit(&mut self, out: &mut Vec<Output>) {
        // Learned addresses dropped at their family's cap (the ones closest
        // to expiry go first).
        let learned = self.targeting.learned_mut().evictions();
        for (table, e) in ["learned_ipv4", "learned_ipv6"].into_iter().zip(learned) {
            self.metrics.set_evictions(table, e);
        }
        for o in out.drain(..) {
            match o {
                Output::Flow {
                    service,
                    transport,
                    protocol,
                } => {
                    let l = FlowLabels {
                        service: self.service(service),
                        transport: transport.name().into(),
                        protocol: protocol.name().into(),
                    };
                    self.metrics.flows.get_or_create(&l).inc();
                }
                Output::Bytes {
                    service,
                    transport,
                    to_server,
                    bytes,
                } => {
                    let c = if let Some(c) = self.flow_bytes.get(&(service, transport, to_server)) {
                        c.clone()
                    } else {
                        let l = FlowBytesLabels {
                            service: self.service(service),
                            transport: transport.name().into(),
                            direction: if to_server { "to_server" } else { "to_client" }.into(),
                        };
                        let c = self.metrics.flow_bytes.get_or_create(&l).clone();
                        self.flow_bytes
                            .insert((service, transport, to_server), c.clone());
                        c
                    };
                    c.inc_by(bytes);
                }
                Output::Tls {
                    service,
                    version,
                    sni,
                    client,
                    ts_ns,
                } => {
                    self.app_tls(service, client, ts_ns);
                    log::debug!(
                        "TLS flow of {} ({version}, sni {sni:?})",
                        self.service(service)
                    );
                    let l = TlsLabels {
                        service: self.service(service),
                        version: version.into(),
                    };
                    self.metrics.tls_flows.get_or_create(&l).inc();
                }
                Output::Cleartext { record, http } => {
                    let iface = self.iface(record.hdr.ifindex).to_owned();
                    self.app_cleartext(&record, http.as_ref(), &iface);
                    let mut ev = Event::cleartext_flow(
                        &record,
                        self.clock.rfc3339(record.hdr.ts_ns),
                        self.iface(record.hdr.ifindex),
                        &self.service(record.hdr.service),
                        http.as_ref(),
                    );
                    ev.host = Some(self.host.clone());
                    ev.flow_id = Some(crate::sinks::events::flow_id(&record.hdr.flow));
                    self.write_event(&ev);
                }
            }
        }
    }

    pub(super) fn write_event(&mut self, ev: &Event) {
        self.metrics
            .events
            .get_or_create(&EventLabels {
                event_type: ev.event_type.into(),
            })
            .inc();
        // A failed write is counted and logged by the writer, which goes on.
        if let Some(log) = self.events.as_mut()
            && log.write(ev).is_err()
        {
            self.metrics.output_error("events");
        }
    }
}
