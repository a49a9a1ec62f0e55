//! The record pipeline: one thread, records in order, every stage fed from here.
//!
//! Dns → targeting (learn addresses) · Probe → targeting (SNI/Host) ·
//! Sample/Meta → posture (service, transport, bytes) → metrics and events.

use std::{sync::Arc, time::Instant};

use crate::sinks::{
    events::ReplayInfo,
    metrics::{FindingLabels, ServiceLabels},
};
use crate::{
    capture::{
        clock::{Clock, mono_now_ns},
        ring::RecordResult,
    },
    flows::{
        posture::{Output, Posture},
        streams::{Located, StreamStats, StreamTable},
    },
    matcher::{
        engine::RuleSet,
        findings::{EvidenceMode, Fingerprinter, ReplayDetector, evidence},
    },
    sinks::{
        events::{Event, EventLog},
        metrics::{
            EventLabels, FamilyLabels, FlowBytesLabels, FlowLabels, KindLabels, Metrics,
            ReasonLabels, ResultLabels, TlsLabels, WatchedLabels,
        },
        records::{RecordLine, RecordLog},
    },
    targets::learning::{Targeting, WatchSink},
};
use sensor_common::record::RecordKind;

/// Leak matching: per-flow streams, the rules, and what findings need.
pub struct MatchStage {
    pub table: StreamTable,
    pub rules: Arc<RuleSet>,
    pub fingerprints: Fingerprinter,
    pub evidence: EvidenceMode,
    pub replay: ReplayDetector,
    /// Counters already exported (the table's are cumulative).
    exported: StreamStats,
}

impl MatchStage {
    pub fn new(
        table: StreamTable,
        rules: Arc<RuleSet>,
        fingerprints: Fingerprinter,
        evidence: EvidenceMode,
        replay: ReplayDetector,
    ) -> Self {
        Self {
            table,
            rules,
            fingerprints,
            evidence,
            replay,
            exported: StreamStats::default(),
        }
    }
}

pub struct Pipeline<W: WatchSink> {
    pub targeting: Targeting<W>,
    posture: Posture,
    metrics: Arc<Metrics>,
    events: Option<EventLog>,
    dump: Option<RecordLog>,
    ifaces: Vec<(u32, String)>,
    clock: Clock,
    evicted_seen: [u64; 2],
    out: Vec<Output>,
    matching: Option<MatchStage>,
}

impl<W: WatchSink> Pipeline<W> {
    pub fn new(
        targeting: Targeting<W>,
        posture: Posture,
        metrics: Arc<Metrics>,
        events: Option<EventLog>,
        dump: Option<RecordLog>,
        ifaces: Vec<(u32, String)>,
    ) -> Self {
        let p = Self {
            targeting,
            posture,
            metrics,
            events,
            dump,
            ifaces,
            clock: Clock::new(),
            evicted_seen: [0; 2],
            out: Vec::new(),
            matching: None,
        };
        p.publish_watched();
        p
    }

    /// Adds leak matching.
    pub fn with_matching(mut self, m: MatchStage) -> Self {
        self.metrics.set_rules_version(&m.rules.version);
        self.matching = Some(m);
        self
    }

    fn iface(&self, ifindex: u32) -> &str {
        self.ifaces
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map_or("unknown", |(_, n)| n.as_str())
    }

    fn service(&self, id: u32) -> String {
        self.targeting
            .ids()
            .name(id)
            .unwrap_or("unknown")
            .to_owned()
    }

    pub fn handle(&mut self, rec: RecordResult, now: Instant) {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                log::debug!("skipping ring record: {e}");
                self.metrics
                    .ring_invalid
                    .get_or_create(&ReasonLabels {
                        reason: e.reason().into(),
                    })
                    .inc();
                return;
            }
        };
        self.metrics
            .ring_records
            .get_or_create(&KindLabels {
                kind: rec.kind.name().into(),
            })
            .inc();
        if let Some(log) = self.dump.as_mut() {
            let iface = self
                .ifaces
                .iter()
                .find(|(i, _)| *i == rec.hdr.ifindex)
                .map_or("unknown", |(_, n)| n.as_str());
            let line = RecordLine::new(&rec, iface, self.targeting.ids().name(rec.hdr.service));
            if let Err(e) = log.write(&line) {
                log::error!("writing --dump-records: {e}; no more records are dumped");
                self.dump = None;
            }
        }
        match rec.kind {
            RecordKind::Dns => {
                let o = self.targeting.on_dns(&rec, now);
                self.metrics
                    .dns_answers
                    .get_or_create(&ResultLabels {
                        result: o.label().into(),
                    })
                    .inc();
                self.publish_watched();
            }
            RecordKind::Probe => {
                let o = self.targeting.on_probe(&rec, now);
                self.metrics
                    .probes
                    .get_or_create(&ResultLabels {
                        result: o.label().into(),
                    })
                    .inc();
                self.publish_watched();
            }
            RecordKind::Sample | RecordKind::Meta => {
                let mut out = std::mem::take(&mut self.out);
                self.posture.on_record(&rec, now, &mut out);
                self.emit(&mut out);
                self.out = out;
                if let Some(m) = self.matching.as_mut() {
                    let mut found = Vec::new();
                    m.table.on_record(&rec, now, &mut found);
                    self.findings(found, now);
                }
            }
        }
    }

    /// Turns confirmed hits into findings: filters, fingerprints, events, replays.
    fn findings(&mut self, found: Vec<Located>, now: Instant) {
        if found.is_empty() {
            return;
        }
        let Some(m) = self.matching.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        for loc in found {
            let rule = m.rules.rule(loc.hit.rule);
            let service = self
                .targeting
                .ids()
                .name(loc.service)
                .unwrap_or("unknown")
                .to_owned();
            if !rule.services.is_empty() && !rule.services.contains(&service) {
                continue;
            }
            if self.targeting.catalog().is_public(&service, &loc.hit.name) {
                continue;
            }
            let kind = loc.hit.kind;
            let fp = m.fingerprints.fingerprint(kind, &loc.hit.value);
            let labels = FindingLabels {
                service: service.clone(),
                kind: kind.name().into(),
                severity: rule.severity.name().into(),
            };
            self.metrics.findings.get_or_create(&labels).inc();
            let latency = mono_now_ns().saturating_sub(loc.ts_ns) as f64 / 1e9;
            self.metrics.detection_latency.observe(latency);
            // Client → server orientation, whichever way the value travelled.
            let (a, b) = (loc.key.src(loc.direction), loc.key.dst(loc.direction));
            let addr = |e: (&[u8; 16], u16)| {
                let ip = if loc.key.family == sensor_common::flow::FAMILY_V4 {
                    std::net::IpAddr::from([e.0[0], e.0[1], e.0[2], e.0[3]])
                } else {
                    std::net::IpAddr::from(*e.0)
                };
                (ip, e.1)
            };
            let (client, server) = if loc.from_client {
                (addr(a), addr(b))
            } else {
                (addr(b), addr(a))
            };
            let iface = self
                .ifaces
                .iter()
                .find(|(i, _)| *i == loc.ifindex)
                .map_or("unknown", |(_, n)| n.as_str())
                .to_owned();
            let tcp = loc.key.proto == sensor_common::flow::IPPROTO_TCP;
            let mut ev = Event::new(
                "leak",
                self.clock.rfc3339(loc.ts_ns),
                client,
                server,
                tcp,
                &iface,
                &service,
                loc.head.as_ref(),
            );
            ev.kind = Some(kind.name());
            ev.rule = Some(rule.id.clone());
            ev.severity = Some(rule.severity.name());
            ev.evidence = Some(evidence(&loc.hit.name, &loc.hit.value, m.evidence));
            ev.fingerprint = Some(fp.clone());
            ev.context = Some(loc.hit.ctx.name());
            ev.direction = Some(if loc.from_client {
                "to_server"
            } else {
                "to_client"
            });
            events.push(ev);
            if kind.is_replayable()
                && loc.from_client
                && let Some(r) = m.replay.observe(&fp, client.0, now)
            {
                self.metrics
                    .replays
                    .get_or_create(&ServiceLabels {
                        service: service.clone(),
                    })
                    .inc();
                let mut rev = Event::new(
                    "replay",
                    self.clock.rfc3339(loc.ts_ns),
                    client,
                    server,
                    tcp,
                    &iface,
                    &service,
                    loc.head.as_ref(),
                );
                rev.kind = Some(kind.name());
                rev.rule = Some(rule.id.clone());
                rev.severity = Some(rule.severity.name());
                rev.fingerprint = Some(fp);
                rev.replay = Some(ReplayInfo {
                    first_client_ip: r.first_client,
                    seconds_since_first: r.since.as_secs(),
                });
                events.push(rev);
            }
        }
        for ev in &events {
            self.write_event(ev);
        }
    }

    /// Exports the stream table's counters (cumulative) as deltas.
    fn export_stream_stats(&mut self) {
        let Some(m) = self.matching.as_mut() else {
            return;
        };
        let now = m.table.stats.clone();
        self.metrics
            .bytes_scanned
            .inc_by(now.bytes_scanned - m.exported.bytes_scanned);
        self.metrics
            .reassembly_gaps
            .inc_by(now.gaps - m.exported.gaps);
        for (reason, n) in &now.evicted {
            let before = m.exported.evicted.get(reason).copied().unwrap_or(0);
            if *n > before {
                self.metrics
                    .flows_evicted
                    .get_or_create(&ReasonLabels {
                        reason: (*reason).into(),
                    })
                    .inc_by(n - before);
            }
        }
        m.exported = now;
    }

    /// Once a second or so: expiries and idle flows.
    pub fn tick(&mut self, now: Instant) {
        if let Some(m) = self.matching.as_mut() {
            let mut found = Vec::new();
            m.table.sweep(now, &mut found);
            m.replay.sweep(now);
            self.findings(found, now);
        }
        self.export_stream_stats();
        self.targeting.sweep(now);
        self.publish_watched();
        let mut out = std::mem::take(&mut self.out);
        self.posture.sweep(now, &mut out);
        self.emit(&mut out);
        self.out = out;
    }

    fn publish_watched(&self) {
        for ((family, source), n) in self.targeting.watched_counts() {
            let l = WatchedLabels {
                family: family.into(),
                source: source.name().into(),
            };
            self.metrics
                .watched_addresses
                .get_or_create(&l)
                .set(n as i64);
        }
    }

    fn emit(&mut self, out: &mut Vec<Output>) {
        let evicted = self.targeting.evicted();
        for (i, fam) in ["ipv4", "ipv6"].into_iter().enumerate() {
            let d = evicted[i] - self.evicted_seen[i];
            if d > 0 {
                self.metrics
                    .learned_evicted
                    .get_or_create(&FamilyLabels { family: fam.into() })
                    .inc_by(d);
            }
        }
        self.evicted_seen = evicted;
        for o in out.drain(..) {
            match o {
                Output::Flow { service, transport } => {
                    let l = FlowLabels {
                        service: self.service(service),
                        transport: transport.name().into(),
                    };
                    self.metrics.flows.get_or_create(&l).inc();
                }
                Output::Bytes {
                    service,
                    transport,
                    to_server,
                    bytes,
                } => {
                    let l = FlowBytesLabels {
                        service: self.service(service),
                        transport: transport.name().into(),
                        direction: if to_server { "to_server" } else { "to_client" }.into(),
                    };
                    self.metrics.flow_bytes.get_or_create(&l).inc_by(bytes);
                }
                Output::Tls {
                    service,
                    version,
                    sni,
                } => {
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
                    let ev = Event::cleartext_flow(
                        &record,
                        self.clock.rfc3339(record.hdr.ts_ns),
                        self.iface(record.hdr.ifindex),
                        &self.service(record.hdr.service),
                        http.as_ref(),
                    );
                    self.write_event(&ev);
                }
            }
        }
    }

    fn write_event(&mut self, ev: &Event) {
        self.metrics
            .events
            .get_or_create(&EventLabels {
                event_type: ev.event_type.into(),
            })
            .inc();
        if let Some(log) = self.events.as_mut()
            && let Err(e) = log.write(ev)
        {
            log::error!("writing --events: {e}; no more events are written");
            self.events = None;
        }
    }
}
